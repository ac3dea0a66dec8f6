//! Running the commands the command line describes: dispatch, the exit
//! status contract, and the helpers every command shares (reading inputs,
//! writing to standard output).
//!
//! Exit status: 0 success; 1 the input is invalid (a config with errors)
//! or a node refused or failed a call; 2 usage, I/O, connection or any
//! other error (printed to standard error by `main`).

pub mod completion;
pub mod config;
pub mod context;
pub mod gen;
pub mod remote;
pub mod upgrade;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command, ConfigCommand, GetCommand};
use crate::contexts::ContextsError;
use crate::files::WriteError;
use crate::output::OutputError;
use crate::secrets::SecretsError;

/// How a command that ran to its end went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything was fine: exit 0.
    Success,
    /// An input was invalid; its problems were printed: exit 1.
    Invalid,
    /// An input could not be read (or another error was printed): exit 2.
    Failed,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::Invalid => 1,
            Status::Failed => 2,
        }
    }

    /// The worse of two statuses (failed > invalid > success).
    pub fn worst(self, other: Status) -> Status {
        if self.code() >= other.code() {
            self
        } else {
            other
        }
    }
}

/// Why a command failed (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An input file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// Writing a file failed or was refused.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Generating or reading key material failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The contexts file could not be used.
    #[error(transparent)]
    Contexts(#[from] ContextsError),
    /// Printing a result failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Reading a config from git failed.
    #[error(transparent)]
    Git(#[from] machine_config::git::GitError),
    /// Writing to standard output failed.
    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] std::io::Error),
    /// A bug: something nodectl produced itself is wrong.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs the command `cli` describes.
pub fn run(cli: Cli) -> Result<Status, CliError> {
    let format = cli.output;
    let connect = &cli.connect;
    match cli.command {
        Command::Config(ConfigCommand::Confirm) => remote::confirm(connect, format),
        Command::Config(ConfigCommand::History) => remote::history(connect, format),
        Command::Config(ConfigCommand::Rollback(args)) => remote::rollback(connect, format, &args),
        Command::Config(cmd) => config::run(cmd, format),
        Command::Gen(cmd) => gen::run(cmd, format),
        Command::Completion(args) => completion::run(&args),
        Command::Context(cmd) => context::run(&cmd, connect, format),
        Command::ApplyConfig(args) => remote::apply_config(connect, format, &args),
        Command::Get(GetCommand::Config { generation }) => {
            remote::get_config(connect, format, generation)
        }
        Command::Services => remote::services(connect, format),
        Command::Service(cmd) => remote::service(connect, format, &cmd),
        Command::Logs(args) => remote::logs(connect, format, &args),
        Command::Dmesg(args) => remote::dmesg(connect, format, &args),
        Command::Read(args) => remote::read(connect, &args),
        Command::Stats => remote::stats(connect, format),
        Command::Mounts => remote::mounts(connect, format),
        Command::Version => remote::version(connect, format),
        Command::Health(args) => remote::health(connect, format, &args),
        Command::Events(args) => remote::events(connect, format, &args),
        Command::Reboot(args) => remote::power(connect, format, &args, true),
        Command::Shutdown(args) => remote::power(connect, format, &args, false),
        Command::LastShutdown => remote::last_shutdown(connect, format),
        Command::Upgrade(args) => upgrade::run(connect, format, &args),
        Command::Rollback(args) => upgrade::rollback(connect, format, &args),
    }
}

/// The bytes of `path`, or of standard input when `path` is `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    let read_err = |source| CliError::Read {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(read_err)?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(read_err)
    }
}

/// Refuses more than one `-` (standard input can be read only once).
pub fn check_stdin_once(paths: &[PathBuf]) -> Result<(), CliError> {
    if paths.iter().filter(|p| *p == Path::new("-")).count() > 1 {
        return Err(CliError::Usage(
            "standard input (`-`) can be given only once".into(),
        ));
    }
    Ok(())
}

/// Writes `text` to standard output. A closed pipe (`nodectl ... | head`)
/// is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::Stdout),
    }
}
