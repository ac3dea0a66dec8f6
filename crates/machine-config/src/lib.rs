//! Keelson's machine config: the pure core of the OS.
//!
//! This crate owns the config schema ([`schema`]), parsing with line/column
//! errors ([`parse`]), validation that reports every problem with its path
//! ([`validate`]), the built-in Kubernetes prerequisites a config extends
//! ([`prerequisites`]), the plan from one config to the next ([`plan`]), the
//! renderers of files the node writes ([`render`]), the JSON Schema
//! ([`json_schema`]), choosing the install disk from facts the node
//! gathered ([`install_disk`]) and reading a config at a git ref ([`git`]).
//!
//! It performs no I/O except in [`git`]: everything else is a pure function
//! of its inputs, fast to test.

pub mod git;
pub mod install_disk;
pub mod json_schema;
pub mod parse;
pub mod plan;
pub mod prerequisites;
pub mod render;
pub mod schema;
pub mod validate;
pub mod values;

pub use json_schema::json_schema;
pub use parse::{parse, to_yaml, Document, Location, ParseError, ParseErrorKind, WriteError};
pub use schema::MachineConfig;
pub use validate::{validate, Problem, Report, Severity};
pub use values::{Cidr, Duration, FileMode, SizeError, SizeExpr, SizeOp};

/// A config that parsed and has no validation errors, with the warnings
/// validation found (each located in the source).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The config.
    pub config: MachineConfig,
    /// Problems that do not stop it from being applied.
    pub warnings: Vec<Problem>,
}

/// Why bytes could not be loaded as a config.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a machine config at all (syntax, types, limits, version).
    #[error("{0}")]
    Parse(ParseError),
    /// A well-formed config with validation errors (warnings included
    /// for completeness).
    #[error("{}", list_problems(.0))]
    Invalid(Report),
}

/// Every problem of a report, one per line, errors first.
fn list_problems(report: &Report) -> String {
    report.to_string().trim_end().to_string()
}

/// Parses and validates `bytes`: the one call a tool or the node needs.
pub fn load(bytes: &[u8]) -> Result<Loaded, LoadError> {
    let doc = parse(bytes).map_err(LoadError::Parse)?;
    let report = doc.validate();
    if !report.is_ok() {
        return Err(LoadError::Invalid(report));
    }
    Ok(Loaded {
        config: doc.config,
        warnings: report.warnings,
    })
}
