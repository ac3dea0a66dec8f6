//! Running short host commands (qemu-img, mkfs.ext4, debugfs, dumpe2fs,
//! kubectl) to completion, with errors that name the command and carry its
//! stderr.

use std::process::{Command, Output};

/// A host command failed to start or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It exited with a failure status.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stderr (trimmed), or stdout when stderr is empty.
        stderr: String,
    },
}

/// The command line as text, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion and returns its stdout as text; a non-zero
/// exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<String, CommandError> {
    let output = output(cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` to completion and returns its whole output; a non-zero exit
/// is an error carrying stderr.
pub fn output(cmd: &mut Command) -> Result<Output, CommandError> {
    let command = describe(cmd);
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(output);
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    Err(CommandError::Failed {
        command,
        status: output.status,
        stderr,
    })
}
