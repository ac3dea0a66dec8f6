//! What the supervisor reports about a service: its state, its last exit,
//! and the outcome of stopping it.

use std::fmt;
use std::time::{Duration, SystemTime};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It exited by itself with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl ExitReason {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == ExitReason::Code(0)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitReason::Code(code) => write!(f, "exit code {code}"),
            ExitReason::Signal(signo) => match nix::sys::signal::Signal::try_from(signo) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {signo}"),
            },
        }
    }
}

/// A service's last exit: how and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code or signal.
    pub reason: ExitReason,
    /// When the reaper collected it.
    pub at: SystemTime,
}

/// Where a service is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceState {
    /// Started, readiness check not passed yet.
    Starting,
    /// Readiness check passed (or there is none) and the process runs.
    Running,
    /// Exited (or never became ready); waiting before the next start.
    BackingOff,
    /// Being stopped on request (SIGTERM sent, waiting for the exit).
    Stopping,
    /// Stopped on request; not restarted until asked to.
    Stopped,
    /// Could not be started (e.g. missing binary); retried at the capped
    /// backoff, the cause is in [`ServiceStatus::last_error`].
    Failed,
}

impl ServiceState {
    /// Lower-case name used in logs and over the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::BackingOff => "backing-off",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one service. The event stream carries one of these for
/// every state transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service name (also its log file name).
    pub name: String,
    /// Current state.
    pub state: ServiceState,
    /// Pid of the running process (Starting, Running, Stopping).
    pub pid: Option<u32>,
    /// How many times the service was started again after its first start.
    pub restarts: u32,
    /// The last exit of its process, if it ever exited.
    pub last_exit: Option<ExitInfo>,
    /// Why it is Failed or BackingOff when that is not an exit: spawn
    /// error (e.g. "No such file or directory (os error 2)") or readiness
    /// timeout. Cleared when it becomes Running.
    pub last_error: Option<String>,
    /// When it entered the current state.
    pub since: SystemTime,
}

/// How a stop request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// The process exited after SIGTERM, within the timeout.
    Graceful,
    /// The timeout passed; the process group got SIGKILL.
    Killed,
    /// No process was running (backing off, failed or already stopped).
    NotRunning,
}

impl fmt::Display for StopKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopKind::Graceful => "graceful",
            StopKind::Killed => "killed",
            StopKind::NotRunning => "not-running",
        })
    }
}

/// The outcome of stopping one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOutcome {
    /// Service name.
    pub name: String,
    /// Graceful, killed or nothing to stop.
    pub kind: StopKind,
    /// Time from the request to the observed exit.
    pub took: Duration,
    /// The exit of the stopped process; `None` if nothing ran or the exit
    /// was not observed even after SIGKILL (process stuck in the kernel).
    pub exit: Option<ExitReason>,
}
