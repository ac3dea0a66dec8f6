//! The service supervisor of PID 1: it starts services and one-shot
//! commands, reaps every child of the process, restarts services with
//! backoff, checks their readiness, keeps their logs, and stops them.
//!
//! # Reaping: one owner
//!
//! As PID 1, init is the parent of its services, of its one-shot helpers
//! (e2fsck, resize2fs, ctr) and of every orphan in the system. Exactly one
//! piece of code calls `wait*`: the [`Reaper`] task. On every SIGCHLD (and
//! every 5 s as a safety net) it calls `waitpid(-1, WNOHANG)` until nothing is
//! left, looks each pid up in a registry and sends the exit status down that
//! pid's channel; a pid nobody registered is an orphan, reaped and logged at
//! debug level. A second waiter would race it and steal exits, so:
//!
//! - `tokio::process` is never used (its own SIGCHLD waiter calls `waitpid`
//!   on its children), and neither is `std::process::Child::wait`/`output`/
//!   `status`. **All of init must start processes through this supervisor**
//!   ([`Supervisor::start`] or [`Supervisor::run_oneshot`]); a process started
//!   any other way gets reaped here as an "orphan" and its own waiter sees
//!   `ECHILD`.
//! - Processes are forked with `std::process::Command::spawn` *while the
//!   registry lock is held*, and the pid is registered before the lock is
//!   released. The reaper holds the same lock for its whole sweep (the
//!   `waitpid` calls and the dispatch). So (1) an exit cannot be reaped before
//!   its pid is registered — there is no "exit before registration" window to
//!   buffer; (2) a pid cannot be reused for a new registration while an old
//!   one still names it, because a pid is only freed by a reap and reaps
//!   dispatch under the lock; (3) when `exec` fails, std's internal wait for
//!   the failed child (it reaps it to report the errno) cannot race the
//!   reaper either.
//! - Exits are delivered through `tokio::sync::oneshot` channels: a service's
//!   task or a one-shot caller awaits its own receiver; a dropped receiver
//!   just discards the status.
//!
//! Outside PID 1 (tests), orphans only come to this process if it is a child
//! subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`); the caller decides that.
//!
//! # Services
//!
//! Each service runs in its own session (`setsid`, so its pid is its process
//! group id) with stdin on /dev/null, stdout/stderr on pipes and exactly the
//! environment of its [`ServiceSpec`]. A task per service moves it through
//! [`ServiceState`]s: `Starting` until its [`Readiness`] check passes (a
//! bounded timeout, then it is stopped and restarted), `Running`, and on an
//! exit `BackingOff` for the current delay (1 s doubling to 30 s by default,
//! reset after a stable run) before starting again. A spawn failure (missing
//! binary) is `Failed` with the cause in `last_error` and is retried at the
//! capped delay forever, since the binary may appear later. Whatever is left
//! in a service's process group when its main process exits is SIGKILLed.
//! Stop sends SIGTERM to the group, waits the bounded timeout (`Stopping`),
//! then SIGKILL; a stopped service stays `Stopped` until
//! [`Supervisor::restart`] (or `start` with a new spec). Every transition is
//! one tracing line (`service=containerd state=running pid=123`) and one
//! event on [`Supervisor::events`].
//!
//! # Logs
//!
//! stdout and stderr are read from the pipes with tokio, split into lines
//! (overlong ones truncated with a marker), kept in a bounded ring per
//! service ([`LogLimits`]), broadcast to followers, and appended to
//! `<log_dir>/<service>.log` with size-based rotation. When the directory is
//! not writable the ring is kept alone, with one warning; the file is tried
//! again at the service's next start.

mod error;
mod logs;
mod oneshot;
mod reaper;
mod service;
mod spec;
mod status;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};

// The public API: init itself may not use every item, its API server will.
#[allow(unused_imports)]
pub use error::{OneshotError, SupervisorError};
#[allow(unused_imports)]
pub use logs::{LogLimits, LogLine, LogStream};
#[allow(unused_imports)]
pub use oneshot::Output;
#[allow(unused_imports)]
pub use reaper::Reaper;
#[allow(unused_imports)]
pub use spec::{Readiness, ReadinessProbe, RestartPolicy, ServiceSpec};
#[allow(unused_imports)]
pub use status::{ExitInfo, ExitReason, ServiceState, ServiceStatus, StopKind, StopOutcome};

use logs::ServiceLog;
use reaper::Registry;
use service::{Control, Runner, ServiceEntry};

/// Capacity of the state-change event stream; a slower subscriber gets
/// `RecvError::Lagged` and should re-read [`Supervisor::status`].
const EVENTS_CAPACITY: usize = 256;

/// Handle to the supervisor; cheap to clone, all clones share the services.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    /// In start order.
    services: Mutex<Vec<Arc<ServiceEntry>>>,
    events: broadcast::Sender<ServiceStatus>,
    log_dir: PathBuf,
    limits: LogLimits,
}

/// A started service: its name and a live view of its status.
#[derive(Debug)]
pub struct ServiceHandle {
    name: String,
    status: watch::Receiver<ServiceStatus>,
}

impl ServiceHandle {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its current status.
    pub fn status(&self) -> ServiceStatus {
        self.status.borrow().clone()
    }

    /// Waits until it is Running; see [`Supervisor::wait_ready`].
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), SupervisorError> {
        wait_ready(self.status.clone(), timeout).await
    }
}

impl Supervisor {
    /// A supervisor writing service logs under `log_dir` with the default
    /// [`LogLimits`], and its reaper, which the caller must spawn right away
    /// (`tokio::spawn(reaper.run())`). Must be called inside a tokio runtime
    /// (it registers for SIGCHLD).
    pub fn new(log_dir: PathBuf) -> Result<(Supervisor, Reaper), SupervisorError> {
        Self::with_log_limits(log_dir, LogLimits::default())
    }

    /// Like [`Supervisor::new`] with explicit log limits.
    pub fn with_log_limits(
        log_dir: PathBuf,
        limits: LogLimits,
    ) -> Result<(Supervisor, Reaper), SupervisorError> {
        let registry = Arc::new(Registry::default());
        let reaper = Reaper::new(registry.clone()).map_err(SupervisorError::Signal)?;
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let inner = Inner {
            registry,
            services: Mutex::new(Vec::new()),
            events,
            log_dir,
            limits,
        };
        Ok((
            Supervisor {
                inner: Arc::new(inner),
            },
            reaper,
        ))
    }

    fn services(&self) -> MutexGuard<'_, Vec<Arc<ServiceEntry>>> {
        // Only pushes and reads happen under this lock; poisoning is harmless.
        self.inner
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn entry(&self, name: &str) -> Result<Arc<ServiceEntry>, SupervisorError> {
        self.services()
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or_else(|| SupervisorError::UnknownService(name.to_string()))
    }

    /// Starts supervising `spec` (returns at once; the service is Starting
    /// or Failed). Must be called within the tokio runtime. A name that is already supervised is refused unless that
    /// service is Stopped, in which case it starts again with the new spec
    /// (its log ring is kept).
    pub fn start(&self, spec: ServiceSpec) -> Result<ServiceHandle, SupervisorError> {
        spec.validate()?;
        let mut services = self.services();
        if let Some(entry) = services.iter().find(|e| e.name == spec.name) {
            let state = entry.status.borrow().state;
            if state != ServiceState::Stopped {
                return Err(SupervisorError::AlreadySupervised {
                    name: spec.name,
                    state,
                });
            }
            let (reply, _) = tokio::sync::oneshot::channel();
            let name = spec.name.clone();
            // Seen at once by the handle and `wait_ready`; the task sets it
            // again, with the pid, when the process is started.
            entry.status.send_modify(|s| {
                s.state = ServiceState::Starting;
                s.since = SystemTime::now();
            });
            entry
                .control
                .send(Control::Restart {
                    spec: Some(Box::new(spec)),
                    reply,
                })
                .map_err(|_| SupervisorError::TaskGone(name.clone()))?;
            return Ok(ServiceHandle {
                name,
                status: entry.status.subscribe(),
            });
        }

        let (status, status_rx) = watch::channel(ServiceStatus {
            name: spec.name.clone(),
            state: ServiceState::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
            last_error: None,
            since: SystemTime::now(),
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let entry = Arc::new(ServiceEntry {
            name: spec.name.clone(),
            status,
            log: ServiceLog::new(&spec.name, self.inner.log_dir.clone(), self.inner.limits),
            control,
        });
        services.push(entry.clone());
        drop(services);
        let handle = ServiceHandle {
            name: spec.name.clone(),
            status: status_rx,
        };
        let runner = Runner {
            entry,
            spec,
            registry: self.inner.registry.clone(),
            events: self.inner.events.clone(),
            control: control_rx,
            restart_replies: Vec::new(),
        };
        tokio::spawn(runner.run());
        Ok(handle)
    }

    /// Stops a service: SIGTERM to its process group, up to `timeout` for
    /// the exit, then SIGKILL. It is not restarted afterwards.
    pub async fn stop(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<StopOutcome, SupervisorError> {
        let entry = self.entry(name)?;
        let (reply, outcome) = tokio::sync::oneshot::channel();
        entry
            .control
            .send(Control::Stop { timeout, reply })
            .map_err(|_| SupervisorError::TaskGone(name.to_string()))?;
        outcome
            .await
            .map_err(|_| SupervisorError::TaskGone(name.to_string()))
    }

    /// Restarts a service now (stopping it first with its `stop_timeout` if
    /// it runs), with a fresh backoff; also starts a Stopped service.
    /// Returns once the old process is gone and the new one was started
    /// (state Starting, or Running without a readiness check) or failed to
    /// start (Failed).
    pub async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        let entry = self.entry(name)?;
        let (reply, done) = tokio::sync::oneshot::channel();
        entry
            .control
            .send(Control::Restart { spec: None, reply })
            .map_err(|_| SupervisorError::TaskGone(name.to_string()))?;
        done.await
            .map_err(|_| SupervisorError::TaskGone(name.to_string()))
    }

    /// Stops services one after the other: first those named in `order`
    /// (unknown names are skipped with a warning), then every other one in
    /// reverse start order. Each gets `per_service_timeout` after SIGTERM.
    pub async fn stop_all(
        &self,
        order: &[&str],
        per_service_timeout: Duration,
    ) -> Vec<StopOutcome> {
        let started = Instant::now();
        let all: Vec<String> = self.services().iter().map(|e| e.name.clone()).collect();
        let mut seen = HashSet::new();
        let mut sequence = Vec::new();
        for name in order {
            if !all.iter().any(|n| n == name) {
                tracing::warn!(service = name, "stop_all: no such service; skipped");
            } else if seen.insert(name.to_string()) {
                sequence.push(name.to_string());
            }
        }
        for name in all.iter().rev() {
            if seen.insert(name.clone()) {
                sequence.push(name.clone());
            }
        }
        let mut outcomes = Vec::new();
        for name in sequence {
            match self.stop(&name, per_service_timeout).await {
                Ok(outcome) => {
                    tracing::info!(service = %name, outcome = %outcome.kind,
                        took_ms = outcome.took.as_millis() as u64, "service stopped");
                    outcomes.push(outcome);
                }
                Err(error) => tracing::warn!(service = %name, %error, "stop failed"),
            }
        }
        tracing::info!(
            services = outcomes.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "all services stopped"
        );
        outcomes
    }

    /// Every service's status, in start order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.services()
            .iter()
            .map(|e| e.status.borrow().clone())
            .collect()
    }

    /// Waits until `name` is Running. Fails at `timeout` (naming the state
    /// and the last error or exit) or as soon as the service is Stopped.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> Result<(), SupervisorError> {
        let entry = self.entry(name)?;
        wait_ready(entry.status.subscribe(), timeout).await
    }

    /// A stream of every service's status after each state transition.
    pub fn events(&self) -> broadcast::Receiver<ServiceStatus> {
        self.inner.events.subscribe()
    }

    /// The last `tail` lines of a service's output (both streams, in order).
    pub fn logs(&self, name: &str, tail: usize) -> Result<Vec<LogLine>, SupervisorError> {
        Ok(self.entry(name)?.log.tail(tail))
    }

    /// The last `tail` lines and a receiver of every later line, with no gap
    /// or duplicate between them (for `logs --follow`). The receiver buffers
    /// 1024 lines; a follower slower than that gets `RecvError::Lagged`.
    pub fn follow_logs(
        &self,
        name: &str,
        tail: usize,
    ) -> Result<(Vec<LogLine>, broadcast::Receiver<LogLine>), SupervisorError> {
        Ok(self.entry(name)?.log.follow(tail))
    }

    /// Runs a command to completion (reaped by the one reaper): exactly
    /// `env`, cwd `/`, stdin /dev/null, stdout and stderr captured; its
    /// process group is SIGKILLed after `timeout`.
    pub async fn run_oneshot(
        &self,
        argv: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Output, OneshotError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        oneshot::run(&self.inner.registry, &argv, &env, timeout, None).await
    }

    /// Like [`Supervisor::run_oneshot`], and every stdout line is also sent
    /// to `lines` as it is printed (for progress a caller shows live).
    pub async fn run_oneshot_streaming(
        &self,
        argv: &[&str],
        timeout: Duration,
        lines: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Output, OneshotError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        oneshot::run(&self.inner.registry, &argv, &[], timeout, Some(lines)).await
    }
}

async fn wait_ready(
    mut status: watch::Receiver<ServiceStatus>,
    timeout: Duration,
) -> Result<(), SupervisorError> {
    let started = Instant::now();
    // The guard `wait_for` returns is dropped at the end of this statement,
    // before `borrow` below takes the lock again.
    let reached = matches!(
        tokio::time::timeout(
            timeout,
            status.wait_for(|s| matches!(s.state, ServiceState::Running | ServiceState::Stopped)),
        )
        .await,
        Ok(Ok(_))
    );
    let current = status.borrow().clone();
    if reached && current.state == ServiceState::Running {
        return Ok(());
    }
    let cause = current
        .last_error
        .clone()
        .or_else(|| current.last_exit.map(|e| format!("last {}", e.reason)));
    Err(SupervisorError::NotReady {
        name: current.name,
        state: current.state,
        cause,
        waited: started.elapsed(),
    })
}
