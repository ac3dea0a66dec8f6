//! `nodectl`: the operator's CLI for Keelson nodes.

fn main() {}
