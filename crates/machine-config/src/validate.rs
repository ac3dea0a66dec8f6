//! Semantic validation of a machine config: every problem, not just the
//! first.
//!
//! Parsing ([`crate::parse`]) guarantees types and syntax of scalar values
//! (CIDRs, durations, modes, disk sizes). This module checks everything that needs
//! judgement or more than one field: names, paths, duplicates, reachability
//! of gateways, PEM material, kubelet flags Keelson owns, timeouts that must
//! fit inside a total, and prerequisites a config weakens. Errors make a
//! config unusable; warnings are applied but point at something that will
//! probably hurt. [`Document::validate`] adds the line and column of each
//! problem.

mod kubelet;
mod lifecycle;
mod machine;
mod network;
mod pem;
mod runtime;
mod syntax;

use std::fmt;

use crate::parse::{Document, Location};
use crate::schema::MachineConfig;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The config cannot be applied.
    Error,
    /// The config can be applied, but something will probably break.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found in a config, at a config path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted/indexed path (`network.interfaces[1].routes[0].via`).
    pub path: String,
    /// Where it was written, when validated from a [`Document`] and the
    /// value (or its nearest written parent) appears in the source.
    pub location: Option<Location>,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, and why it matters.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `PATH: line L col C: MESSAGE`, or `PATH: MESSAGE` when unlocated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(loc) => write!(f, "{}: {loc}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// All problems of a config, errors and warnings apart, each list in the
/// order of the config's sections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Problems that make the config unusable.
    pub errors: Vec<Problem>,
    /// Problems that do not stop the config from being applied.
    pub warnings: Vec<Problem>,
}

impl Report {
    /// True when there are no errors (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Report {
    /// One problem per line, errors first, each prefixed by its severity.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.errors.iter().chain(&self.warnings) {
            writeln!(f, "{}: {p}", p.severity)?;
        }
        Ok(())
    }
}

/// Checks `cfg` and returns every problem found, without source locations.
pub fn validate(cfg: &MachineConfig) -> Report {
    report(check(cfg), |_| None)
}

impl Document {
    /// Checks the config and returns every problem, each located at the
    /// line and column of the value (or key) it is about; a problem about a
    /// value that was not written (a missing field) points at its nearest
    /// written parent.
    pub fn validate(&self) -> Report {
        report(check(&self.config), |found| {
            let mut path = found.problem.path.as_str();
            loop {
                let here = if found.at_key {
                    self.key_location_of(path)
                } else {
                    self.location_of(path)
                };
                if here.is_some() {
                    return here;
                }
                path = parent_path(path)?;
            }
        })
    }
}

/// The path one level up (`a.b[2]` → `a.b`, `a.b` → `a`), `None` at the top.
fn parent_path(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

fn report(found: Vec<Found>, locate: impl Fn(&Found) -> Option<Location>) -> Report {
    let mut out = Report::default();
    for f in found {
        let location = locate(&f);
        let problem = Problem {
            location,
            ..f.problem
        };
        match problem.severity {
            Severity::Error => out.errors.push(problem),
            Severity::Warning => out.warnings.push(problem),
        }
    }
    out
}

/// Runs every check, in the order of the config's sections.
fn check(cfg: &MachineConfig) -> Vec<Found> {
    let mut c = Checker::default();
    machine::check(cfg, &mut c);
    network::check(cfg, &mut c);
    runtime::check(cfg, &mut c);
    kubelet::check(cfg, &mut c);
    lifecycle::check(cfg, &mut c);
    c.found
}

/// A problem and whether it is about a mapping key rather than a value.
struct Found {
    problem: Problem,
    at_key: bool,
}

/// Collects problems while the checks run.
#[derive(Default)]
struct Checker {
    found: Vec<Found>,
}

impl Checker {
    fn push(&mut self, path: String, severity: Severity, message: String, at_key: bool) {
        self.found.push(Found {
            problem: Problem {
                path,
                location: None,
                severity,
                message,
            },
            at_key,
        });
    }

    /// An error about the value at `path`.
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path.into(), Severity::Error, message.into(), false);
    }

    /// A warning about the value at `path`.
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path.into(), Severity::Warning, message.into(), false);
    }

    /// An error about the mapping key of the entry at `path`.
    fn key_error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(path.into(), Severity::Error, message.into(), true);
    }
}
