//! Errors of the supervisor's API, each naming the service or program.

use std::io;
use std::time::Duration;

use super::status::ServiceState;

/// What went wrong with a supervisor request.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The spec is unusable; nothing was started.
    #[error("service {name:?}: {field} {problem}")]
    InvalidSpec {
        /// Service name as given.
        name: String,
        /// Field at fault.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `start` on a name that is already supervised and not stopped.
    #[error("service {name:?} is already supervised (state {state})")]
    AlreadySupervised {
        /// Service name.
        name: String,
        /// Its current state.
        state: ServiceState,
    },
    /// No service has this name.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// `wait_ready` gave up.
    #[error("service {name:?} not ready after {waited:?}: state {state}{}", cause.as_ref().map(|c| format!(", {c}")).unwrap_or_default())]
    NotReady {
        /// Service name.
        name: String,
        /// State when giving up.
        state: ServiceState,
        /// Last error or exit, if any.
        cause: Option<String>,
        /// How long it waited.
        waited: Duration,
    },
    /// The service's task is gone (the runtime is shutting down).
    #[error("service {0:?} is no longer supervised (its task ended)")]
    TaskGone(String),
    /// Registering for SIGCHLD failed (no tokio runtime with signals?).
    #[error("cannot listen for SIGCHLD: {0}")]
    Signal(#[source] io::Error),
}

/// What went wrong with a one-shot command.
#[derive(Debug, thiserror::Error)]
pub enum OneshotError {
    /// argv was empty.
    #[error("one-shot command has an empty argv")]
    EmptyArgv,
    /// fork/exec failed (e.g. the program does not exist).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// Program that failed to start.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It did not exit in time; its process group was SIGKILLed and reaped.
    #[error("{program:?} did not finish within {timeout:?}; killed")]
    TimedOut {
        /// Program that hung.
        program: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// Its exit status never arrived (the reaper is not running).
    #[error("exit status of {program:?} was lost: is the reaper task running?")]
    ExitLost {
        /// Program whose exit was lost.
        program: String,
    },
}
