//! The one reaper of PID 1 and the registry of processes waiting for their
//! exit status.
//!
//! Everything that starts a process in init goes through
//! [`Registry::spawn`], which forks *while holding the registry lock* and
//! records the new pid before releasing it. The reaper takes the same lock
//! before every `waitpid(-1, WNOHANG)` sweep and keeps it while it hands the
//! statuses out. So an exit can never be reaped before its pid is registered,
//! and a pid can never be reused (the kernel only reuses a pid after it was
//! reaped, which happens under the lock, together with the dispatch) while a
//! stale registration still names it. See the module doc of `supervisor`.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

use super::status::ExitReason;

/// How often the reaper sweeps even without a SIGCHLD: a safety net that
/// bounds how long a zombie could live if a wake-up were ever lost. It never
/// causes a lost exit either way.
const SAFETY_SWEEP: Duration = Duration::from_secs(5);

/// Pids waiting for their exit status, each with the channel to hand it to.
#[derive(Default)]
pub(crate) struct Registry {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitReason>>>,
}

/// A process started through the registry: its pid (which is also its
/// process group id, it runs in its own session), the read ends of its
/// stdout/stderr pipes, and the channel its exit status arrives on.
pub(crate) struct Spawned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub exit: oneshot::Receiver<ExitReason>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitReason>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert or remove), so a poisoned lock
        // is still safe to use.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `argv` in its own session (so its pid is its process group id)
    /// with stdin from /dev/null and stdout/stderr on pipes, and registers
    /// its pid before any sweep of the reaper can run.
    ///
    /// The environment is exactly `env`: nothing is inherited from PID 1.
    pub fn spawn(
        &self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &std::path::Path,
    ) -> io::Result<Spawned> {
        let Some((program, args)) = argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setsid(2), which is async-signal-safe; it touches no lock or
        // allocation of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                nix::unistd::setsid().map_err(io::Error::from)?;
                Ok(())
            });
        }

        // Hold the lock across fork+exec and the insert: the reaper cannot
        // sweep in between. This also keeps std's own wait on a child whose
        // exec failed (std reaps it to report the errno) from racing the
        // reaper.
        let mut waiters = self.lock();
        let mut child = command.spawn()?;
        let pid = i32::try_from(child.id())
            .map_err(|_| io::Error::other(format!("pid {} out of range", child.id())))?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        drop(waiters);

        // The `Child` is dropped without waiting: the reaper owns the exit.
        Ok(Spawned {
            pid,
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
            exit: rx,
        })
    }

    /// Reaps every child that has exited, registered or not, and hands each
    /// registered one its status. Returns how many processes were reaped.
    pub fn sweep(&self) -> usize {
        let mut waiters = self.lock();
        let mut reaped = 0;
        loop {
            let mut raw_status: libc::c_int = 0;
            // SAFETY: waitpid with a valid out-pointer to a local c_int.
            let pid = unsafe { libc::waitpid(-1, &mut raw_status, libc::WNOHANG | libc::__WALL) };
            if pid == 0 {
                break; // children exist, none has exited
            }
            if pid < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => break, // no children at all
                    _ => {
                        tracing::warn!(error = %err, "waitpid(-1) failed");
                        break;
                    }
                }
            }
            let reason = if libc::WIFEXITED(raw_status) {
                ExitReason::Code(libc::WEXITSTATUS(raw_status))
            } else if libc::WIFSIGNALED(raw_status) {
                ExitReason::Signal(libc::WTERMSIG(raw_status))
            } else {
                continue; // stopped/continued: not an exit
            };
            reaped += 1;
            match waiters.remove(&pid) {
                // The waiter may have given up (dropped its receiver).
                Some(tx) => {
                    let _ = tx.send(reason);
                }
                None => tracing::debug!(pid, exit = %reason, "reaped orphan"),
            }
        }
        reaped
    }

    /// Number of registered processes that have not been reaped yet.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.lock().len()
    }
}

/// The reaper task: sweeps on every SIGCHLD (and every few seconds as a
/// safety net). Spawn [`Reaper::run`] on the runtime right after
/// `Supervisor::new`; nothing is ever reaped without it.
pub struct Reaper {
    registry: Arc<Registry>,
    sigchld: Signal,
}

impl Reaper {
    pub(crate) fn new(registry: Arc<Registry>) -> io::Result<Self> {
        let sigchld = signal(SignalKind::child())?;
        Ok(Self { registry, sigchld })
    }

    /// Reaps children forever. Children that exited before this started
    /// are reaped by the first sweep.
    pub async fn run(mut self) {
        let mut safety = tokio::time::interval(SAFETY_SWEEP);
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut signals_open = true;
        loop {
            self.registry.sweep();
            tokio::select! {
                received = self.sigchld.recv(), if signals_open => {
                    if received.is_none() {
                        tracing::warn!("SIGCHLD stream closed; reaping on a timer only");
                        signals_open = false;
                    }
                }
                _ = safety.tick() => {}
            }
        }
    }
}
