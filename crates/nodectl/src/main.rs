//! `nodectl`: the operator's CLI for Keelson nodes.
//!
//! This file only sets up logging (`NODECTL_LOG`, default `warn`, to
//! standard error), parses the command line and maps the result to the
//! exit status: 0 success, 1 invalid input, 2 usage or I/O error. The
//! commands live in the `nodectl` library (`src/lib.rs`).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use nodectl::{cli, commands};

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODECTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();

    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => {
            let mut text = format!("nodectl: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(&format!(": {cause_text}"));
                }
                source = cause.source();
            }
            eprintln!("{text}");
            ExitCode::from(commands::Status::Failed.code())
        }
    }
}
