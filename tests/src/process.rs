//! Child processes the harness owns (QEMU, etcd, the Kubernetes control
//! plane): started in their own process group with output captured to a log
//! file, tied to the harness with `PR_SET_PDEATHSIG` so that a killed test
//! never leaves them running, and stopped (TERM, then KILL) on drop.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Why a child process could not be started or inspected.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("cannot create log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The program could not be executed.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Waiting on the child failed.
    #[error("cannot wait for {name}: {source}")]
    Wait {
        /// The child's name.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running child process with its output in a log file. Dropping it stops
/// the whole process group: SIGTERM, up to 5 s, then SIGKILL.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl ManagedChild {
    /// Starts `cmd` with stdout and stderr appended to `log`, stdin closed,
    /// in a new process group, killed by the kernel if the harness dies.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, ProcessError> {
        let out = File::create(log).map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            program: format!("{} ({:?})", name, cmd.get_program()),
            source,
        })?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started child");
        Ok(ManagedChild {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exit: None,
        })
    }

    /// The child's name as given to [`ManagedChild::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the child has exited, without blocking.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(|source| ProcessError::Wait {
                name: self.name.clone(),
                source,
            })?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of the child's log (for error messages).
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log, n)
    }

    /// Stops the process group: SIGTERM, up to `grace`, then SIGKILL; waits
    /// for the child. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.try_exit(), Ok(Some(_))) {
            self.kill_group(libc::SIGKILL);
            return;
        }
        self.kill_group(libc::SIGTERM);
        if !matches!(self.wait_timeout(grace), Ok(Some(_))) {
            self.kill_group(libc::SIGKILL);
            match self.child.wait() {
                Ok(status) => self.exit = Some(status),
                Err(e) => tracing::warn!(name = %self.name, error = %e, "cannot reap child"),
            }
        }
        // Anything the child left behind in its group goes too.
        self.kill_group(libc::SIGKILL);
    }

    fn kill_group(&self, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the process group the
        // child leads (it was started with process_group(0)); no memory is
        // shared with the callee.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Puts the command in its own process group and asks the kernel to SIGKILL
/// it when the thread that spawned it dies (a killed harness leaves nothing).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The last `n` lines of a text file (at most its last 64 KiB are read);
/// empty when it cannot be read.
pub fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name in parentheses.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(
                state.and_then(|s| s.chars().next()),
                Some('Z') | Some('X') | None
            )
        }
        Err(_) => false,
    }
}
