//! `init`: Keelson's PID 1. Stage 1 runs from the initramfs (storage
//! modules, partitions by GPT label, fsck, mount the slot's squashfs, switch
//! root); stage 2 runs from the read-only root (early mounts, apply the
//! machine config, supervise services, ordered shutdown). It never panics
//! out and never exits.

#[allow(dead_code)]
mod network;
#[allow(dead_code)]
mod supervisor;

fn main() {}
