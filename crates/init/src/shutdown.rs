//! Ordered shutdown (issue 4 scope: stop services, kill the rest, unmount,
//! power off or restart). Every step is bounded; the whole sequence too.
//!
//! 1. stop kubelet, then containerd, then any other service (SIGTERM,
//!    bounded wait, SIGKILL) through the supervisor;
//! 2. SIGTERM every remaining process, bounded wait, SIGKILL;
//! 3. unmount everything under /var and /system/state in reverse mount
//!    order, remounting read-only what will not unmount; sync;
//! 4. reboot(2).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::mounts;
use crate::supervisor::Supervisor;

/// What ends the machine after the shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Power off (SIGTERM, SIGPWR, SIGUSR2).
    PowerOff,
    /// Restart (SIGINT, ctrl-alt-del, a panic).
    Reboot,
}

impl Ending {
    /// The reboot(2) mode.
    pub fn mode(self) -> RebootMode {
        match self {
            Ending::PowerOff => RebootMode::RB_POWER_OFF,
            Ending::Reboot => RebootMode::RB_AUTOBOOT,
        }
    }
}

/// Deadlines of the steps (from the config's `shutdown` section when there
/// is one).
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// kubelet after SIGTERM.
    pub kubelet: Duration,
    /// containerd (and other services) after SIGTERM.
    pub containerd: Duration,
    /// All remaining processes after SIGTERM.
    pub processes: Duration,
    /// The whole sequence.
    pub total: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            kubelet: Duration::from_secs(20),
            containerd: Duration::from_secs(10),
            processes: Duration::from_secs(10),
            total: Duration::from_secs(120),
        }
    }
}

impl Deadlines {
    /// The deadlines of a config.
    pub fn from_config(cfg: &machine_config::MachineConfig) -> Deadlines {
        let s = &cfg.shutdown;
        Deadlines {
            kubelet: s.kubelet.get(),
            containerd: s.containerd.get(),
            processes: s.processes.get(),
            total: s.total.get(),
        }
    }
}

/// The data mounts unmounted at shutdown (everything at or under them).
const DATA_MOUNTS: &[&str] = &["/var", "/system/state"];

/// Runs the ordered shutdown with services still supervised. Returns when
/// it is safe to call reboot(2).
pub async fn ordered(supervisor: Option<&Supervisor>, deadlines: Deadlines, cause: &str) {
    let start = Instant::now();
    crate::console::marker(&format!("shutdown begins cause={cause}"));
    let services = async {
        if let Some(sup) = supervisor {
            let t = Instant::now();
            let _ = sup.stop("kubelet", deadlines.kubelet).await;
            let rest = sup.stop_all(&["containerd"], deadlines.containerd).await;
            for o in rest {
                tracing::info!(service = %o.name, outcome = %o.kind, "stopped");
            }
            tracing::info!(took_ms = t.elapsed().as_millis() as u64, "services stopped");
        }
    };
    let bound = deadlines.total.saturating_sub(Duration::from_secs(15));
    if tokio::time::timeout(bound, services).await.is_err() {
        tracing::warn!("stopping services exceeded {bound:?}; going on");
    }
    kill_remaining(deadlines.processes).await;
    unmount_data();
    tracing::info!(
        took_ms = start.elapsed().as_millis() as u64,
        "shutdown done"
    );
}

/// SIGTERM to every process but PID 1, wait (the supervisor's reaper, or
/// [`reap_all`] when there is none, collects them), then SIGKILL.
async fn kill_remaining(wait: Duration) {
    if !crate::sys::is_pid1() {
        return;
    }
    let t = Instant::now();
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && any_process_left() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forced = any_process_left();
    if forced {
        tracing::warn!("processes left after {wait:?}: SIGKILL");
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && any_process_left() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tracing::info!(
        forced,
        took_ms = t.elapsed().as_millis() as u64,
        "remaining processes ended"
    );
}

/// Whether any user process other than PID 1 is still alive (zombies not
/// yet reaped count: kill(-1, 0) still finds them).
fn any_process_left() -> bool {
    kill(Pid::from_raw(-1), None).is_ok()
}

/// Unmounts the data partitions in reverse order; remounts read-only what
/// will not unmount; syncs.
pub fn unmount_data() {
    nix::unistd::sync();
    let roots: Vec<&Path> = DATA_MOUNTS.iter().map(Path::new).collect();
    for m in mounts::unmount_order(&mounts::current(), &roots) {
        match mounts::unmount(&m.mount_point) {
            Ok(()) => tracing::info!(mount = %m.mount_point.display(), "unmounted"),
            Err(e) => {
                let ro = mounts::remount(&m.mount_point, true);
                tracing::warn!(error = %e, read_only = ro.is_ok(), "could not unmount; remounted read-only");
            }
        }
    }
    nix::unistd::sync();
}

/// The shutdown after a panic or a fatal error, without a runtime: TERM
/// and KILL everything (reaping here: no reaper runs any more), unmount,
/// sync.
pub fn emergency() {
    if !crate::sys::is_pid1() {
        return;
    }
    crate::console::marker("shutdown begins cause=emergency");
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && any_process_left() {
        reap_all();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && any_process_left() {
        reap_all();
        std::thread::sleep(Duration::from_millis(50));
    }
    unmount_data();
}

/// Reaps every exited child (only when no supervisor reaper runs).
fn reap_all() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
