//! Keelson's machine config: the pure core of the OS.
//!
//! This crate owns the config schema ([`schema`]), parsing with line/column
//! errors ([`parse`]), validation that reports every problem with its path
//! ([`validate`]), the built-in Kubernetes prerequisites a config extends
//! ([`prerequisites`]), the plan from one config to the next ([`plan`]), the
//! renderers of files the node writes ([`render`]), the JSON Schema
//! ([`json_schema`]) and reading a config at a git ref ([`git`]).
//!
//! It performs no I/O except in [`git`]: everything else is a pure function
//! of its inputs, fast to test.

pub mod git;
pub mod json_schema;
pub mod parse;
pub mod plan;
pub mod prerequisites;
pub mod render;
pub mod schema;
pub mod validate;
pub mod values;

pub use schema::MachineConfig;
pub use values::{Cidr, Duration, FileMode};
