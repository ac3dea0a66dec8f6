//! `nodectl completion SHELL`: prints a completion script generated from
//! the clap definition, so it always matches the commands.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionArgs};
use crate::commands::{emit, CliError, Status};

/// Prints the completion script for `args.shell`.
pub fn run(args: &CompletionArgs) -> Result<Status, CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "nodectl", &mut script);
    let text = String::from_utf8(script)
        .map_err(|e| CliError::Internal(format!("completion script is not UTF-8: {e}")))?;
    emit(&text)?;
    Ok(Status::Success)
}
