//! Ending processes at shutdown: the containerd shims (and the container
//! processes under them) that outlive containerd, then every remaining
//! process (SIGTERM to all, bounded wait, SIGKILL). Reading the process
//! table is pure and tested; signalling happens only as PID 1.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::report::Outcome;

/// Prefix of the shims' names (`containerd-shim`, `containerd-shim-runc-v2`;
/// `comm` is cut at 15 characters, which is exactly this).
const SHIM_PREFIX: &str = "containerd-shim";
/// How long killed processes get to disappear (be reaped).
const KILL_WAIT: Duration = Duration::from_secs(3);

/// `PF_KTHREAD` in the flags of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// One process, from `/proc/<pid>/stat` and `cmdline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// `comm` (at most 15 characters).
    pub comm: String,
    /// State letter (`R`, `S`, `D`, `Z`, …).
    pub state: char,
    /// A kernel thread (never signalled, never waited for).
    pub kernel: bool,
    /// The program of argv[0] (basename), empty for kernel threads.
    pub program: String,
}

impl ProcInfo {
    fn is_shim(&self) -> bool {
        !self.kernel
            && (self.comm.starts_with(SHIM_PREFIX) || self.program.starts_with(SHIM_PREFIX))
    }

    /// A user process that has not exited (zombies hold no files).
    fn alive_user(&self) -> bool {
        !self.kernel && self.state != 'Z'
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Process id.
    pub pid: i32,
    /// `comm`.
    pub comm: String,
    /// State letter.
    pub state: char,
    /// Parent process id.
    pub ppid: i32,
    /// `PF_*` flags.
    pub flags: u64,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session tty_nr
/// tpgid flags …`; `comm` may hold spaces and parentheses, so it ends at
/// the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let flags = rest.get(6)?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        flags,
    })
}

/// Whether `pid` is still a live user process (gone or a zombie: false).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
        .is_some_and(|s| s.state != 'Z')
}

/// The process table under `proc` (`/proc`); unreadable entries (a process
/// that just exited) are skipped.
pub(crate) fn read_table(proc: &Path) -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(st) = parse_stat(&stat) else {
            continue;
        };
        let program = std::fs::read(entry.path().join("cmdline"))
            .ok()
            .and_then(|c| {
                let argv0 = c.split(|b| *b == 0).next()?.to_vec();
                let argv0 = String::from_utf8_lossy(&argv0).into_owned();
                argv0.rsplit('/').next().map(str::to_string)
            })
            .unwrap_or_default();
        out.push(ProcInfo {
            pid: st.pid,
            ppid: st.ppid,
            kernel: st.flags & PF_KTHREAD != 0 || st.pid == 2 || st.ppid == 2,
            comm: st.comm,
            state: st.state,
            program,
        });
    }
    out
}

/// The shims in `table` and every descendant of them (container processes,
/// reparented to their shim), never `protect` (init itself) nor kernel
/// threads. Returns (shims, descendants), each sorted.
pub(crate) fn shim_targets(table: &[ProcInfo], protect: i32) -> (Vec<i32>, Vec<i32>) {
    let shims: BTreeSet<i32> = table
        .iter()
        .filter(|p| p.is_shim() && p.pid != protect && p.pid != 1)
        .map(|p| p.pid)
        .collect();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in table.iter().filter(|p| !p.kernel) {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut below = BTreeSet::new();
    let mut todo: Vec<i32> = shims.iter().copied().collect();
    while let Some(pid) = todo.pop() {
        for &c in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if c != protect && c != 1 && !shims.contains(&c) && below.insert(c) {
                todo.push(c);
            }
        }
    }
    (shims.into_iter().collect(), below.into_iter().collect())
}

/// SIGKILLs the leftover shims and their descendants (descendants first),
/// then waits briefly for them to be gone. PID 1 only.
pub(crate) async fn kill_shims() -> (Outcome, String) {
    if !crate::sys::is_pid1() {
        return (Outcome::Skipped, "not PID 1".into());
    }
    let (shims, below) = shim_targets(&read_table(Path::new("/proc")), std::process::id() as i32);
    if shims.is_empty() {
        return (Outcome::Ok, "no shim left".into());
    }
    for &pid in below.iter().chain(shims.iter()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + KILL_WAIT;
    let mut left: Vec<i32> = below.iter().chain(shims.iter()).copied().collect();
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left.retain(|&p| running(p));
    }
    tracing::warn!(
        shims = shims.len(),
        processes = below.len(),
        left = left.len(),
        "leftover shims killed"
    );
    let mut detail = format!(
        "SIGKILL to {} shim(s) and {} process(es) under them",
        shims.len(),
        below.len()
    );
    if !left.is_empty() {
        detail.push_str(&format!("; {} not gone after {KILL_WAIT:?}", left.len()));
    }
    (Outcome::Forced, detail)
}

/// Number of live user processes other than init. (Not `kill(-1, 0)`:
/// it also reaches kernel threads, so it never says "none left".)
fn user_processes() -> usize {
    let me = std::process::id() as i32;
    read_table(Path::new("/proc"))
        .iter()
        .filter(|p| p.pid != me && p.pid != 1 && p.alive_user())
        .count()
}

/// Whether any live user process other than init is left.
fn any_process_left() -> bool {
    user_processes() > 0
}

/// SIGTERM to every process but PID 1, up to `wait` for them to go (the
/// supervisor's reaper collects them), then SIGKILL. With `force` (or a zero
/// `wait`), SIGKILL at once. PID 1 only.
pub(crate) async fn kill_remaining(wait: Duration, force: bool) -> (Outcome, String) {
    if !crate::sys::is_pid1() {
        return (Outcome::Skipped, "not PID 1".into());
    }
    let before = user_processes();
    if !any_process_left() {
        return (Outcome::Ok, "no process left".into());
    }
    if !force && !wait.is_zero() {
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && any_process_left() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !any_process_left() {
            return (
                Outcome::Ok,
                format!("{before} process(es) ended after SIGTERM"),
            );
        }
    }
    let stubborn = user_processes();
    tracing::warn!(processes = stubborn, "processes left: SIGKILL");
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let deadline = Instant::now() + KILL_WAIT;
    while Instant::now() < deadline && any_process_left() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut detail = if force || wait.is_zero() {
        format!("SIGKILL at once to {stubborn} process(es)")
    } else {
        format!(
            "{before} process(es) got SIGTERM; SIGKILL to {stubborn} still there after {wait:?}"
        )
    };
    if any_process_left() {
        detail.push_str(&format!("; {} left after SIGKILL", user_processes()));
    }
    (Outcome::Forced, detail)
}

/// The emergency variant, without a runtime and without a reaper: TERM,
/// up to `wait`, KILL, reaping here. PID 1 only. Returns whether SIGKILL
/// was needed.
pub(crate) fn kill_remaining_blocking(wait: Duration) -> bool {
    if !crate::sys::is_pid1() {
        return false;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && any_process_left() {
        reap_all();
        std::thread::sleep(Duration::from_millis(50));
    }
    let forced = any_process_left();
    if forced {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        let deadline = Instant::now() + KILL_WAIT;
        while Instant::now() < deadline && any_process_left() {
            reap_all();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    forced
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn p(pid: i32, ppid: i32, comm: &str, program: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            comm: comm.into(),
            state: 'S',
            kernel: pid == 2 || ppid == 2,
            program: program.into(),
        }
    }

    #[test]
    fn stat_lines_with_odd_names_are_parsed() {
        let s = parse_stat("4242 (containerd-shim) S 1 4242 4242 0 -1 4194560 9 0").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.ppid, s.flags),
            (4242, "containerd-shim", 'S', 1, 4194560)
        );
        let s = parse_stat("77 (a (b) c) Z 76 77 0 0 -1 2097216 0").unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.ppid), ("a (b) c", 'Z', 76));
        assert_ne!(s.flags & PF_KTHREAD, 0);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("5 (short) S 1"), None);
    }

    #[test]
    fn shims_and_the_containers_under_them_are_targets_nothing_else() {
        let table = vec![
            p(1, 0, "init", "init"),
            p(2, 0, "kthreadd", ""),
            p(30, 2, "kworker/0:1", ""),
            p(100, 1, "containerd", "containerd"),
            // A shim found by comm, one by argv[0] only (renamed comm).
            p(200, 1, "containerd-shim", "containerd-shim-runc-v2"),
            p(300, 1, "shim-renamed", "containerd-shim-runc-v2"),
            // Containers and their children under the shims.
            p(201, 200, "pause", "pause"),
            p(202, 200, "sh", "sh"),
            p(203, 202, "writer", "writer"),
            p(301, 300, "nginx", "nginx"),
            // Unrelated processes stay.
            p(400, 1, "kubelet", "kubelet"),
            p(401, 400, "mount", "mount"),
        ];
        let (shims, below) = shim_targets(&table, 1);
        assert_eq!(shims, vec![200, 300]);
        assert_eq!(below, vec![201, 202, 203, 301]);
        assert!(shim_targets(&table[..4], 1).0.is_empty());
    }

    #[test]
    fn the_real_process_table_is_readable() {
        let me = std::process::id() as i32;
        let table = read_table(Path::new("/proc"));
        let mine = table.iter().find(|p| p.pid == me).unwrap();
        assert_eq!(mine.ppid, nix::unistd::getppid().as_raw());
        assert!(!mine.program.is_empty());
        assert!(mine.alive_user());
        // kthreadd, when this /proc shows it, is a kernel thread.
        if let Some(k) = table.iter().find(|p| p.pid == 2 && p.comm == "kthreadd") {
            assert!(k.kernel && !k.alive_user());
        }
    }
}
