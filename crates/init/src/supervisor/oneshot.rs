//! One-shot commands (e2fsck, resize2fs, ctr import, …): started through
//! the same registry as services, so their exits come from the one reaper.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedSender;

use super::error::OneshotError;
use super::reaper::{Registry, Spawned};
use super::status::ExitReason;

/// Output kept per stream; the rest is read and dropped.
const CAPTURE_MAX: usize = 4 * 1024 * 1024;
/// After the exit, how long to wait for the pipes to close (a daemonized
/// grandchild could hold them open forever).
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the exit after SIGKILL on timeout.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a finished one-shot command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code or signal.
    pub status: ExitReason,
    /// Captured stdout (at most 4 MiB).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most 4 MiB).
    pub stderr: Vec<u8>,
}

impl Output {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `argv` with exactly `env`, cwd `/`, stdin from /dev/null, in its own
/// process group; returns its status and output, or kills the group after
/// `timeout`.
/// With `lines`, every complete stdout line is also sent there as it comes.
pub(crate) async fn run(
    registry: &Registry,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
    lines: Option<UnboundedSender<String>>,
) -> Result<Output, OneshotError> {
    let program = argv.first().ok_or(OneshotError::EmptyArgv)?.clone();
    let Spawned {
        pid,
        stdout,
        stderr,
        mut exit,
    } = registry
        .spawn(argv, env, std::path::Path::new("/"))
        .map_err(|source| OneshotError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stdout = Capture::start(stdout, lines);
    let stderr = Capture::start(stderr, None);

    let status = match tokio::time::timeout(timeout, &mut exit).await {
        Ok(Ok(status)) => status,
        Ok(Err(_)) => return Err(OneshotError::ExitLost { program }),
        Err(_) => {
            match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(error) => tracing::warn!(program, pid, %error, "cannot kill timed-out command"),
            }
            if tokio::time::timeout(KILL_WAIT, exit).await.is_err() {
                tracing::error!(program, pid, "timed-out command did not exit after SIGKILL");
            }
            tracing::warn!(
                program,
                pid,
                timeout_ms = timeout.as_millis() as u64,
                "command timed out; killed"
            );
            return Err(OneshotError::TimedOut { program, timeout });
        }
    };
    let output = Output {
        status,
        stdout: stdout.finish().await,
        stderr: stderr.finish().await,
    };
    tracing::debug!(program, pid, status = %status, "command finished");
    Ok(output)
}

/// A task reading one pipe into a bounded buffer.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start(fd: Option<OwnedFd>, lines: Option<UnboundedSender<String>>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = fd.map(|fd| tokio::spawn(read_into(fd, buf.clone(), lines)));
        Self { buf, task }
    }

    async fn finish(self) -> Vec<u8> {
        if let Some(mut task) = self.task {
            if tokio::time::timeout(PIPE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

async fn read_into(fd: OwnedFd, buf: Arc<Mutex<Vec<u8>>>, lines: Option<UnboundedSender<String>>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut chunk = vec![0u8; 16 * 1024];
    // The unfinished last line, for `lines` (bounded like the capture).
    let mut partial: Vec<u8> = Vec::new();
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => {
                {
                    let mut buf = buf.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = CAPTURE_MAX.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
                if let Some(tx) = &lines {
                    for &b in &chunk[..n] {
                        if b == b'\n' {
                            let _ = tx.send(String::from_utf8_lossy(&partial).into_owned());
                            partial.clear();
                        } else if partial.len() < CAPTURE_MAX {
                            partial.push(b);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
