//! The task that runs one service: start, readiness, restart with backoff,
//! stop on request. One task per service, driven by [`Control`] messages;
//! it owns the service's process and is the only one to signal it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::logs::{LogStream, ServiceLog};
use super::reaper::{Registry, Spawned};
use super::spec::{Readiness, ServiceSpec};
use super::status::{ExitInfo, ExitReason, ServiceState, ServiceStatus, StopKind, StopOutcome};

/// How long to wait for the exit after SIGKILL before reporting it unseen
/// (only a process stuck in uninterruptible sleep takes longer).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Pause between readiness attempts.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// A request to a service's task.
pub(crate) enum Control {
    /// Stop it (SIGTERM, `timeout`, SIGKILL) and keep it stopped.
    Stop {
        timeout: Duration,
        reply: oneshot::Sender<StopOutcome>,
    },
    /// Stop it if it runs and start it again now, with a fresh backoff and,
    /// if given, a new spec. Also starts a stopped service. `reply` is
    /// answered once the new start was attempted (Starting or Failed).
    Restart {
        spec: Option<Box<ServiceSpec>>,
        reply: oneshot::Sender<()>,
    },
}

/// What the supervisor keeps about a service; shared with its task.
pub(crate) struct ServiceEntry {
    pub name: String,
    pub status: watch::Sender<ServiceStatus>,
    pub log: Arc<ServiceLog>,
    pub control: mpsc::UnboundedSender<Control>,
}

/// How one run of the process ended.
enum RunEnd {
    /// It exited by itself, or was stopped because it never became ready:
    /// back off, then start again.
    Failed,
    /// Stopped on request.
    Stopped,
    /// Restarted on request: start again now.
    Restarted,
    /// The control channel is gone: the supervisor was dropped.
    Orphaned,
}

/// What ended a pause between runs.
enum Pause {
    Elapsed,
    Restart,
    Stop(oneshot::Sender<StopOutcome>, Instant),
    Orphaned,
}

/// One service's task.
pub(crate) struct Runner {
    pub entry: Arc<ServiceEntry>,
    pub spec: ServiceSpec,
    pub registry: Arc<Registry>,
    pub events: broadcast::Sender<ServiceStatus>,
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Restart requests answered once the next start has been attempted.
    pub restart_replies: Vec<oneshot::Sender<()>>,
}

impl Runner {
    /// Runs the service until the supervisor is dropped.
    pub async fn run(mut self) {
        let mut backoff = self.spec.restart.backoff_initial;
        let mut first_start = true;
        let mut wanted = true;
        loop {
            if !wanted {
                match self.control.recv().await {
                    None => return,
                    Some(Control::Stop { reply, .. }) => {
                        let _ = reply.send(self.not_running(Instant::now()));
                    }
                    Some(Control::Restart { spec, reply }) => {
                        self.replace_spec(spec);
                        self.restart_replies.push(reply);
                        backoff = self.spec.restart.backoff_initial;
                        wanted = true;
                    }
                }
                continue;
            }
            if !first_start {
                self.entry.status.send_modify(|s| s.restarts += 1);
            }
            first_start = false;

            self.entry.log.open_file();
            let cwd = self.spec.cwd.clone().unwrap_or_else(|| "/".into());
            let end = match self.registry.spawn(&self.spec.argv, &self.spec.env, &cwd) {
                Err(error) => {
                    let cause = format!("cannot start {}: {error}", self.program());
                    self.transition(ServiceState::Failed, None, |s| s.last_error = Some(cause));
                    self.answer_restarts();
                    // Retried at the capped backoff, forever: the binary may
                    // appear later (e.g. under /var once it is mounted).
                    match self.pause(self.spec.restart.backoff_max).await {
                        Pause::Elapsed => continue,
                        Pause::Restart => RunEnd::Restarted,
                        Pause::Stop(reply, asked) => {
                            self.transition(ServiceState::Stopped, None, |_| {});
                            let _ = reply.send(self.not_running(asked));
                            RunEnd::Stopped
                        }
                        Pause::Orphaned => RunEnd::Orphaned,
                    }
                }
                Ok(process) => {
                    let started = Instant::now();
                    let end = self.supervise(process).await;
                    if started.elapsed() >= self.spec.restart.reset_after {
                        backoff = self.spec.restart.backoff_initial;
                    }
                    end
                }
            };
            match end {
                RunEnd::Failed => {
                    let delay = backoff;
                    backoff = (backoff * 2).min(self.spec.restart.backoff_max);
                    self.transition(ServiceState::BackingOff, None, |_| {});
                    tracing::debug!(service = %self.entry.name, delay_ms = delay.as_millis() as u64, "restart delayed");
                    match self.pause(delay).await {
                        Pause::Elapsed => {}
                        Pause::Restart => backoff = self.spec.restart.backoff_initial,
                        Pause::Stop(reply, asked) => {
                            self.transition(ServiceState::Stopped, None, |_| {});
                            let _ = reply.send(self.not_running(asked));
                            wanted = false;
                        }
                        Pause::Orphaned => return,
                    }
                }
                RunEnd::Stopped => wanted = false,
                RunEnd::Restarted => backoff = self.spec.restart.backoff_initial,
                RunEnd::Orphaned => return,
            }
        }
    }

    /// Watches one running process until it exits or is stopped.
    async fn supervise(&mut self, process: Spawned) -> RunEnd {
        let Spawned {
            pid,
            stdout,
            stderr,
            mut exit,
        } = process;
        for (fd, stream) in [(stdout, LogStream::Stdout), (stderr, LogStream::Stderr)] {
            if let Some(fd) = fd {
                tokio::spawn(self.entry.log.clone().pump(fd, stream));
            }
        }
        self.transition(ServiceState::Starting, Some(pid), |_| {});
        self.answer_restarts();

        let mut ready_check = Box::pin(wait_until_ready(
            self.spec.readiness.clone(),
            self.spec.readiness_timeout,
        ));
        let mut ready = matches!(self.spec.readiness, Readiness::None);
        if ready {
            self.transition(ServiceState::Running, Some(pid), |s| s.last_error = None);
        }

        enum Event {
            Exited(Option<ExitReason>),
            Ready(Result<(), String>),
            Control(Option<Control>),
        }
        loop {
            let event = tokio::select! {
                reason = &mut exit => Event::Exited(reason.ok()),
                result = &mut ready_check, if !ready => Event::Ready(result),
                control = self.control.recv() => Event::Control(control),
            };
            match event {
                Event::Exited(reason) => {
                    kill_leftovers(&self.entry.name, pid);
                    // The exit is now the cause to show, not an older error.
                    self.entry.status.send_modify(|s| s.last_error = None);
                    self.record_exit(reason);
                    return RunEnd::Failed;
                }
                Event::Ready(Ok(())) => {
                    ready = true;
                    self.transition(ServiceState::Running, Some(pid), |s| s.last_error = None);
                }
                Event::Ready(Err(why)) => {
                    tracing::warn!(service = %self.entry.name, pid, cause = %why, "service not ready; restarting it");
                    self.entry
                        .status
                        .send_modify(|s| s.last_error = Some(why.clone()));
                    self.terminate(pid, exit, self.spec.stop_timeout).await;
                    return RunEnd::Failed;
                }
                Event::Control(None) => {
                    self.terminate(pid, exit, self.spec.stop_timeout).await;
                    return RunEnd::Orphaned;
                }
                Event::Control(Some(Control::Stop { timeout, reply })) => {
                    let outcome = self.terminate(pid, exit, timeout).await;
                    self.transition(ServiceState::Stopped, None, |_| {});
                    let _ = reply.send(outcome);
                    return RunEnd::Stopped;
                }
                Event::Control(Some(Control::Restart { spec, reply })) => {
                    self.terminate(pid, exit, self.spec.stop_timeout).await;
                    self.replace_spec(spec);
                    self.restart_replies.push(reply);
                    return RunEnd::Restarted;
                }
            }
        }
    }

    /// SIGTERM to the process group, bounded wait, SIGKILL; reaps via the
    /// reaper's channel and records the exit.
    async fn terminate(
        &mut self,
        pid: i32,
        mut exit: oneshot::Receiver<ExitReason>,
        timeout: Duration,
    ) -> StopOutcome {
        let asked = Instant::now();
        self.transition(ServiceState::Stopping, Some(pid), |_| {});
        signal_group(&self.entry.name, pid, Signal::SIGTERM);
        let (kind, reason) = match tokio::time::timeout(timeout, &mut exit).await {
            Ok(reason) => (StopKind::Graceful, reason.ok()),
            Err(_) => {
                tracing::warn!(service = %self.entry.name, pid, timeout_ms = timeout.as_millis() as u64,
                    "no exit after SIGTERM; sending SIGKILL");
                signal_group(&self.entry.name, pid, Signal::SIGKILL);
                match tokio::time::timeout(KILL_WAIT, exit).await {
                    Ok(reason) => (StopKind::Killed, reason.ok()),
                    Err(_) => {
                        tracing::error!(service = %self.entry.name, pid, "no exit even after SIGKILL");
                        (StopKind::Killed, None)
                    }
                }
            }
        };
        kill_leftovers(&self.entry.name, pid);
        self.record_exit(reason);
        StopOutcome {
            name: self.entry.name.clone(),
            kind,
            took: asked.elapsed(),
            exit: reason,
        }
    }

    fn record_exit(&self, reason: Option<ExitReason>) {
        if let Some(reason) = reason {
            self.entry.status.send_modify(|s| {
                s.last_exit = Some(ExitInfo {
                    reason,
                    at: SystemTime::now(),
                })
            });
        }
    }

    /// Waits `delay` unless a control message comes first.
    async fn pause(&mut self, delay: Duration) -> Pause {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Pause::Elapsed,
            control = self.control.recv() => match control {
                None => Pause::Orphaned,
                Some(Control::Stop { reply, .. }) => Pause::Stop(reply, Instant::now()),
                Some(Control::Restart { spec, reply }) => {
                    self.replace_spec(spec);
                    self.restart_replies.push(reply);
                    Pause::Restart
                }
            },
        }
    }

    /// Tells restart requesters that the new start was attempted.
    fn answer_restarts(&mut self) {
        for reply in self.restart_replies.drain(..) {
            let _ = reply.send(());
        }
    }

    fn replace_spec(&mut self, spec: Option<Box<ServiceSpec>>) {
        if let Some(spec) = spec {
            self.spec = *spec;
        }
    }

    fn not_running(&self, asked: Instant) -> StopOutcome {
        StopOutcome {
            name: self.entry.name.clone(),
            kind: StopKind::NotRunning,
            took: asked.elapsed(),
            exit: None,
        }
    }

    fn program(&self) -> &str {
        self.spec.argv.first().map(String::as_str).unwrap_or("")
    }

    /// Sets the state, logs one line, and publishes the new status.
    fn transition(
        &self,
        state: ServiceState,
        pid: Option<i32>,
        update: impl FnOnce(&mut ServiceStatus),
    ) {
        let mut snapshot = None;
        self.entry.status.send_modify(|s| {
            s.state = state;
            s.pid = pid.and_then(|p| u32::try_from(p).ok());
            s.since = SystemTime::now();
            update(s);
            snapshot = Some(s.clone());
        });
        let Some(status) = snapshot else { return };
        let exit = status.last_exit.map(|e| e.reason.to_string());
        match state {
            ServiceState::Failed => tracing::warn!(
                service = %status.name, state = %state, error = status.last_error.as_deref(),
                restarts = status.restarts, "service state"
            ),
            ServiceState::BackingOff => tracing::info!(
                service = %status.name, state = %state, exit = exit.as_deref(),
                error = status.last_error.as_deref(), restarts = status.restarts, "service state"
            ),
            _ => tracing::info!(
                service = %status.name, state = %state, pid = status.pid, "service state"
            ),
        }
        let _ = self.events.send(status);
    }
}

/// Sends `signal` to the process group `pgid` (the service runs in its own
/// session, so that is the service and what it spawned in its group).
fn signal_group(service: &str, pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(service, pgid, %signal, %error, "cannot signal the process group")
        }
    }
}

/// After the main process exited, SIGKILL whatever is left in its process
/// group, so a restart starts clean. (containerd's shims live in their own
/// process groups and are not touched.)
fn kill_leftovers(service: &str, pgid: i32) {
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) => tracing::debug!(service, pgid, "killed leftover processes of the group"),
        Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => tracing::warn!(service, pgid, %error, "cannot kill leftover processes"),
    }
}

/// Polls the readiness check until it passes or `timeout` passes.
async fn wait_until_ready(readiness: Readiness, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no attempt finished");
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            return Err(format!("not ready within {timeout:?}: {last}"));
        }
        let attempt = match &readiness {
            Readiness::None => return Ok(()),
            Readiness::UnixSocket(path) => tokio::time::timeout(remaining, connect(path)).await,
            Readiness::Custom(probe) => tokio::time::timeout(remaining, probe()).await,
        };
        match attempt {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => last = why,
            Err(_) => last = "the readiness check did not answer".into(),
        }
        tokio::time::sleep(READINESS_POLL.min(remaining)).await;
    }
}

async fn connect(path: &Path) -> Result<(), String> {
    tokio::net::UnixStream::connect(path)
        .await
        .map(drop)
        .map_err(|e| format!("connect {}: {e}", path.display()))
}
