//! Unmounting at shutdown: which mounts go (everything under /var, the pod
//! mounts under /run/containerd and /run/netns that pin /var, the data
//! partitions), in which order (reverse mount order, deepest first), and
//! what to do with those that will not go: pseudo filesystems (nsfs, tmpfs,
//! overlay) are detached, block-device filesystems are remounted
//! read-only so their journal is clean at power-off. STATE is kept for the
//! report and closed last by [`super::state`].
//!
//! The system calls sit behind [`MountOps`], so the logic is tested with a
//! fake table; [`Kernel`] runs each call on its own thread with a bound.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MntFlags;

use super::bounded;
use super::report::Outcome;
use crate::mounts::{self, MountInfo};

/// Roots whose whole subtree is unmounted (besides every mounted block
/// device): container rootfs and sandbox mounts under /run/containerd,
/// network namespaces under /run/netns, kubelet volumes, /var itself.
pub(crate) const ROOTS: &[&str] = &["/run/containerd", "/run/netns", "/var/lib/kubelet", "/var"];
/// Longest wait for one mount operation.
const CALL_BOUND: Duration = Duration::from_secs(5);

/// How one mount operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpResult {
    /// Done.
    Done,
    /// The kernel refused (EBUSY, EINVAL, …) or this is not PID 1.
    Refused(String),
    /// The bound passed (the call may still be stuck in the kernel).
    TimedOut,
}

/// The mount system calls used at shutdown.
pub(crate) trait MountOps {
    /// The current mount table.
    fn table(&self) -> Vec<MountInfo>;
    /// umount(2).
    fn unmount(&self, target: &Path, bound: Duration) -> OpResult;
    /// umount2(2) with MNT_DETACH.
    fn detach(&self, target: &Path, bound: Duration) -> OpResult;
    /// mount(2) with MS_REMOUNT, read-only or read-write.
    fn remount(&self, target: &Path, read_only: bool, bound: Duration) -> OpResult;
    /// Lets go of init's own open files under `roots` (so they do not keep
    /// the filesystems busy); returns how many.
    fn release_files(&self, roots: &[PathBuf]) -> usize;
}

/// The real system calls, each bounded on its own thread. PID 1 only
/// (elsewhere every call is refused).
pub(crate) struct Kernel;

fn result<E: std::fmt::Display>(r: Option<Result<(), E>>) -> OpResult {
    match r {
        Some(Ok(())) => OpResult::Done,
        Some(Err(e)) => OpResult::Refused(e.to_string()),
        None => OpResult::TimedOut,
    }
}

impl MountOps for Kernel {
    fn table(&self) -> Vec<MountInfo> {
        mounts::current()
    }

    fn unmount(&self, target: &Path, bound: Duration) -> OpResult {
        if !crate::sys::is_pid1() {
            return OpResult::Refused("not PID 1".into());
        }
        let t = target.to_path_buf();
        result(bounded::blocking("umount", bound, move || {
            mounts::unmount(&t)
        }))
    }

    fn detach(&self, target: &Path, bound: Duration) -> OpResult {
        if !crate::sys::is_pid1() {
            return OpResult::Refused("not PID 1".into());
        }
        let t = target.to_path_buf();
        result(bounded::blocking("umount -l", bound, move || {
            nix::mount::umount2(&t, MntFlags::MNT_DETACH)
        }))
    }

    fn remount(&self, target: &Path, read_only: bool, bound: Duration) -> OpResult {
        if !crate::sys::is_pid1() {
            return OpResult::Refused("not PID 1".into());
        }
        let t = target.to_path_buf();
        result(bounded::blocking("remount", bound, move || {
            mounts::remount(&t, read_only)
        }))
    }

    fn release_files(&self, roots: &[PathBuf]) -> usize {
        if !crate::sys::is_pid1() {
            return 0;
        }
        release_own_files(roots)
    }
}

/// Points every descriptor of this process whose file lies under `roots`
/// at /dev/null instead. Used for the service log files the supervisor
/// keeps open under /var/log: without this, /var could neither be
/// unmounted nor remounted read-only (a file open for writing).
fn release_own_files(roots: &[PathBuf]) -> usize {
    use std::os::fd::AsRawFd;
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let fds: Vec<(i32, PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target))
        })
        .filter(|(_, target)| roots.iter().any(|r| target.starts_with(r)))
        .collect();
    if fds.is_empty() {
        return 0;
    }
    let null = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => f,
        Err(error) => {
            tracing::warn!(%error, "cannot open /dev/null; init's files under the data mounts stay open");
            return 0;
        }
    };
    let mut released = 0;
    for (fd, target) in fds {
        // SAFETY: dup2 replaces what `fd` refers to with /dev/null
        // atomically; `fd` stays a valid open descriptor, so whichever Rust
        // object owns it keeps a valid fd (its later writes go to
        // /dev/null, its close closes that).
        let r = unsafe { libc::dup2(null.as_raw_fd(), fd) };
        if r == fd {
            tracing::info!(fd, file = %target.display(), "released init's open file");
            released += 1;
        }
    }
    released
}

/// Whether a mount is backed by a block device (a data partition): those
/// get a read-only remount when they will not unmount.
fn on_block_device(m: &MountInfo) -> bool {
    m.source.starts_with("/dev/")
}

fn kept(path: &Path, keep: &[&Path]) -> bool {
    keep.iter().any(|k| path.starts_with(k))
}

/// The mounts to unmount, in order: everything at or under [`ROOTS`] and
/// under every block-device mount other than `/` and the read-only
/// squashfs images, except what is at or under `keep` (STATE).
pub(crate) fn plan(table: &[MountInfo], keep: &[&Path]) -> Vec<MountInfo> {
    let mut roots: Vec<PathBuf> = ROOTS.iter().map(PathBuf::from).collect();
    roots.extend(
        table
            .iter()
            .filter(|m| {
                on_block_device(m) && m.fstype != "squashfs" && m.mount_point != Path::new("/")
            })
            .map(|m| m.mount_point.clone()),
    );
    roots.retain(|r| !kept(r, keep));
    let refs: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    mounts::unmount_order(table, &refs)
        .into_iter()
        .filter(|m| !kept(&m.mount_point, keep))
        .collect()
}

/// What the unmount step did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Unmounted, in order.
    pub unmounted: Vec<PathBuf>,
    /// Block-device mounts remounted read-only instead.
    pub remounted_read_only: Vec<PathBuf>,
    /// Pseudo filesystems detached instead (MNT_DETACH).
    pub detached: Vec<PathBuf>,
    /// Neither unmounted nor made safe, with the kernel's answer.
    pub failed: Vec<(PathBuf, String)>,
    /// Calls that did not end within their bound.
    pub timed_out: Vec<PathBuf>,
    /// The step's deadline passed before everything was tried.
    pub out_of_time: bool,
    /// init's own open files let go of first.
    pub released_files: usize,
}

impl Summary {
    /// The step's outcome and a one-line detail.
    pub fn outcome(&self) -> (Outcome, String) {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut detail = format!("{} unmounted", self.unmounted.len());
        if self.released_files > 0 {
            detail.push_str(&format!(
                "; {} open file(s) of init released",
                self.released_files
            ));
        }
        if !self.remounted_read_only.is_empty() {
            detail.push_str(&format!(
                "; remounted read-only: {}",
                list(&self.remounted_read_only)
            ));
        }
        if !self.detached.is_empty() {
            detail.push_str(&format!("; detached: {}", list(&self.detached)));
        }
        if !self.timed_out.is_empty() {
            detail.push_str(&format!("; timed out: {}", list(&self.timed_out)));
        }
        for (p, why) in &self.failed {
            detail.push_str(&format!("; failed: {} ({why})", p.display()));
        }
        if self.out_of_time {
            detail.push_str("; deadline passed");
        }
        let outcome = if !self.timed_out.is_empty() || self.out_of_time {
            Outcome::TimedOut
        } else if !self.failed.is_empty() {
            Outcome::Failed
        } else if !self.remounted_read_only.is_empty() || !self.detached.is_empty() {
            Outcome::Forced
        } else {
            Outcome::Ok
        };
        (outcome, detail)
    }
}

/// Unmounts [`plan`]'s mounts by `deadline` (several passes while progress
/// is made); then detaches the pseudo filesystems left and remounts the
/// block-device ones read-only.
pub(crate) fn unmount_all(ops: &dyn MountOps, keep: &[&Path], deadline: Instant) -> Summary {
    let mut s = Summary::default();
    let bound = || {
        CALL_BOUND
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(100))
    };
    let mut hung: BTreeSet<PathBuf> = BTreeSet::new();
    let todo = |ops: &dyn MountOps, hung: &BTreeSet<PathBuf>| -> Vec<MountInfo> {
        plan(&ops.table(), keep)
            .into_iter()
            .filter(|m| !hung.contains(&m.mount_point))
            .collect()
    };
    let points: Vec<PathBuf> = todo(ops, &hung)
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    s.released_files = ops.release_files(&points);

    let mut refusals: Vec<(PathBuf, String)> = Vec::new();
    'passes: for _ in 0..3 {
        let list = todo(ops, &hung);
        if list.is_empty() {
            break;
        }
        let mut progress = false;
        refusals.clear();
        for m in list {
            if Instant::now() >= deadline {
                s.out_of_time = true;
                break 'passes;
            }
            match ops.unmount(&m.mount_point, bound()) {
                OpResult::Done => {
                    tracing::info!(mount = %m.mount_point.display(), "unmounted");
                    s.unmounted.push(m.mount_point);
                    progress = true;
                }
                OpResult::TimedOut => {
                    s.timed_out.push(m.mount_point.clone());
                    hung.insert(m.mount_point);
                }
                OpResult::Refused(why) => refusals.push((m.mount_point, why)),
            }
        }
        if !progress {
            break;
        }
    }
    if s.out_of_time {
        // Still make the data partitions safe below, but only them.
        tracing::warn!("unmount deadline passed; remounting the data partitions read-only");
    }

    // Pseudo filesystems that will not go: detach them (deepest first) so
    // they stop pinning what they sit on.
    if !s.out_of_time {
        for m in todo(ops, &hung).into_iter().filter(|m| !on_block_device(m)) {
            match ops.detach(&m.mount_point, bound()) {
                OpResult::Done => {
                    tracing::warn!(mount = %m.mount_point.display(), fstype = %m.fstype, "would not unmount; detached");
                    s.detached.push(m.mount_point);
                }
                OpResult::TimedOut => {
                    s.timed_out.push(m.mount_point.clone());
                    hung.insert(m.mount_point);
                }
                OpResult::Refused(why) => s.failed.push((m.mount_point, why)),
            }
        }
    }

    // Block devices: one more unmount try (detaching may have freed
    // them), else a read-only remount, which leaves a clean journal.
    for m in todo(ops, &hung).into_iter().filter(on_block_device) {
        let last_refusal = refusals
            .iter()
            .find(|(p, _)| *p == m.mount_point)
            .map(|(_, why)| why.clone());
        if !s.out_of_time && ops.unmount(&m.mount_point, bound()) == OpResult::Done {
            s.unmounted.push(m.mount_point);
            continue;
        }
        match ops.remount(&m.mount_point, true, bound()) {
            OpResult::Done => {
                tracing::warn!(mount = %m.mount_point.display(), why = %last_refusal.unwrap_or_default(),
                    "would not unmount; remounted read-only");
                s.remounted_read_only.push(m.mount_point);
            }
            OpResult::TimedOut => s.timed_out.push(m.mount_point),
            OpResult::Refused(why) => {
                tracing::error!(mount = %m.mount_point.display(), %why, "neither unmounted nor remounted read-only");
                s.failed.push((m.mount_point, why));
            }
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::cell::RefCell;

    /// A node with three pods, in mount order.
    pub(crate) const NODE: &str = "\
22 1 0:20 / / ro,relatime shared:1 - squashfs /dev/vda2 ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw
24 22 0:21 / /proc rw,nosuid,nodev,noexec shared:3 - proc proc rw
25 22 0:22 / /sys rw shared:4 - sysfs sysfs rw
26 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
30 22 254:5 / /var rw,relatime shared:10 - ext4 /dev/vda5 rw
31 22 254:4 / /system/state ro,relatime shared:11 - ext4 /dev/vda4 ro
40 26 0:4 net:[4026532300] /run/netns/cni-1111 rw shared:20 - nsfs nsfs rw
41 30 0:60 / /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/aaa/shm rw shared:21 - tmpfs shm rw
42 26 0:61 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs rw shared:22 - overlay overlay rw,lowerdir=/var/lib/containerd/x
43 30 0:62 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~projected/kube-api-access-1 rw shared:23 - tmpfs tmpfs rw
44 26 0:63 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/bbb/rootfs rw shared:24 - overlay overlay rw
45 26 0:4 net:[4026532400] /run/netns/cni-2222 rw shared:25 - nsfs nsfs rw
46 26 0:64 / /run/keelson rw shared:26 - tmpfs tmpfs rw
";

    fn points(v: &[MountInfo]) -> Vec<String> {
        v.iter()
            .map(|m| m.mount_point.display().to_string())
            .collect()
    }

    #[test]
    fn the_plan_takes_pod_mounts_under_run_and_keeps_state() {
        let table = mounts::parse_mountinfo(NODE);
        let order = points(&plan(&table, &[Path::new("/system/state")]));
        assert_eq!(order.len(), 7, "{order:?}");
        for gone in [
            "/run/netns/cni-1111",
            "/run/netns/cni-2222",
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs",
            "/run/containerd/io.containerd.runtime.v2.task/k8s.io/bbb/rootfs",
            "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~projected/kube-api-access-1",
            "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/aaa/shm",
            "/var",
        ] {
            assert!(order.iter().any(|p| p == gone), "{gone} missing: {order:?}");
        }
        for stays in [
            "/",
            "/run",
            "/proc",
            "/sys",
            "/dev",
            "/run/keelson",
            "/system/state",
        ] {
            assert!(
                !order.iter().any(|p| p == stays),
                "{stays} planned: {order:?}"
            );
        }
        // /var goes last: everything else pins it.
        assert_eq!(order.last().map(String::as_str), Some("/var"));
        // The later of two same-depth pod mounts goes first.
        let a = order
            .iter()
            .position(|p| p.contains("/aaa/rootfs"))
            .unwrap();
        let b = order
            .iter()
            .position(|p| p.contains("/bbb/rootfs"))
            .unwrap();
        assert!(b < a, "{order:?}");
    }

    #[test]
    fn other_data_partitions_are_planned_and_state_only_when_not_kept() {
        let mut text = NODE.to_string();
        text.push_str("50 22 8:17 / /mnt/data rw - xfs /dev/sdb1 rw\n");
        text.push_str("51 22 7:0 / /usr/lib/extra ro - squashfs /dev/loop0 ro\n");
        let table = mounts::parse_mountinfo(&text);
        let kept = points(&plan(&table, &[Path::new("/system/state")]));
        assert!(kept.contains(&"/mnt/data".to_string()), "{kept:?}");
        assert!(!kept.iter().any(|p| p == "/usr/lib/extra"), "{kept:?}");
        let all = points(&plan(&table, &[]));
        assert!(all.contains(&"/system/state".to_string()), "{all:?}");
        assert_eq!(all.len(), kept.len() + 1);
    }

    /// A mount table in memory; mount points in `busy` refuse umount(2)
    /// with EBUSY, those in `hang` never answer.
    pub(crate) struct Fake {
        pub table: RefCell<Vec<MountInfo>>,
        pub busy: Vec<&'static str>,
        pub hang: Vec<&'static str>,
        pub log: RefCell<Vec<String>>,
    }

    impl Fake {
        pub(crate) fn new(text: &str, busy: Vec<&'static str>, hang: Vec<&'static str>) -> Fake {
            Fake {
                table: RefCell::new(mounts::parse_mountinfo(text)),
                busy,
                hang,
                log: RefCell::new(Vec::new()),
            }
        }

        fn remove(&self, target: &Path) {
            let mut t = self.table.borrow_mut();
            if let Some(i) = t.iter().rposition(|m| m.mount_point == target) {
                t.remove(i);
            }
        }
    }

    impl MountOps for Fake {
        fn table(&self) -> Vec<MountInfo> {
            self.table.borrow().clone()
        }
        fn unmount(&self, target: &Path, _: Duration) -> OpResult {
            let p = target.display().to_string();
            self.log.borrow_mut().push(format!("umount {p}"));
            if self.hang.contains(&p.as_str()) {
                return OpResult::TimedOut;
            }
            if self.busy.contains(&p.as_str()) {
                return OpResult::Refused("Device or resource busy".into());
            }
            self.remove(target);
            OpResult::Done
        }
        fn detach(&self, target: &Path, _: Duration) -> OpResult {
            self.log
                .borrow_mut()
                .push(format!("detach {}", target.display()));
            self.remove(target);
            OpResult::Done
        }
        fn remount(&self, target: &Path, ro: bool, _: Duration) -> OpResult {
            self.log.borrow_mut().push(format!(
                "remount-{} {}",
                if ro { "ro" } else { "rw" },
                target.display()
            ));
            OpResult::Done
        }
        fn release_files(&self, roots: &[PathBuf]) -> usize {
            self.log
                .borrow_mut()
                .push(format!("release {}", roots.len()));
            0
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn everything_unmounts_in_order_when_nothing_is_busy() {
        let fake = Fake::new(NODE, vec![], vec![]);
        let s = unmount_all(&fake, &[Path::new("/system/state")], far());
        assert_eq!(s.unmounted.len(), 7);
        assert_eq!(s.unmounted.last().unwrap(), Path::new("/var"));
        assert_eq!(s.outcome().0, Outcome::Ok);
        let left = points(&fake.table());
        assert!(left.contains(&"/system/state".to_string()));
        assert!(!left
            .iter()
            .any(|p| p.starts_with("/var") || p.starts_with("/run/netns")));
        assert_eq!(fake.log.borrow()[0], "release 7");
    }

    #[test]
    fn a_busy_netns_is_detached_and_a_busy_var_remounted_read_only() {
        let fake = Fake::new(NODE, vec!["/run/netns/cni-2222", "/var"], vec![]);
        let s = unmount_all(&fake, &[Path::new("/system/state")], far());
        assert_eq!(s.detached, vec![PathBuf::from("/run/netns/cni-2222")]);
        assert_eq!(s.remounted_read_only, vec![PathBuf::from("/var")]);
        assert!(s.failed.is_empty() && s.timed_out.is_empty());
        let (outcome, detail) = s.outcome();
        assert_eq!(outcome, Outcome::Forced);
        assert!(detail.contains("remounted read-only: /var"), "{detail}");
        // STATE was never touched.
        assert!(!fake
            .log
            .borrow()
            .iter()
            .any(|l| l.contains("/system/state")));
    }

    #[test]
    fn a_hung_unmount_is_given_up_and_the_rest_still_handled() {
        let hung = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/bbb/rootfs";
        let fake = Fake::new(NODE, vec!["/var"], vec![hung]);
        let s = unmount_all(&fake, &[Path::new("/system/state")], far());
        assert_eq!(s.timed_out, vec![PathBuf::from(hung)]);
        // Tried once only.
        let tries = fake
            .log
            .borrow()
            .iter()
            .filter(|l| l.ends_with(hung))
            .count();
        assert_eq!(tries, 1);
        assert_eq!(s.remounted_read_only, vec![PathBuf::from("/var")]);
        assert_eq!(s.outcome().0, Outcome::TimedOut);
    }

    #[test]
    fn past_the_deadline_only_the_data_partitions_are_made_read_only() {
        let fake = Fake::new(NODE, vec![], vec![]);
        let s = unmount_all(&fake, &[Path::new("/system/state")], Instant::now());
        assert!(s.out_of_time);
        assert!(s.unmounted.is_empty());
        assert_eq!(s.remounted_read_only, vec![PathBuf::from("/var")]);
        assert_eq!(s.outcome().0, Outcome::TimedOut);
    }
}
