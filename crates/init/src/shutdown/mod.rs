//! The ordered shutdown of the node (reboot is the same, ending
//! differently). Every step is bounded, and the whole sequence by
//! [`Deadlines::total`]; no step can hang the node (blocking calls such as
//! umount and sync run on their own threads and are abandoned at their
//! bound). The sequence, as [`run`] does it:
//!
//! 1. (the caller refuses new mutating calls) the cause is recorded;
//! 2. `drain`: cordon and drain through the Kubernetes API (`keelson-drain`,
//!    see [`drain`]), bounded by its own timeout (the config's
//!    `kubernetes.drainTimeout` or the caller's); the total deadline starts
//!    after it;
//! 3. `kubelet`: SIGTERM, bounded wait, SIGKILL (through the supervisor);
//! 4. `pods`: every running container (graceful, in parallel) and every
//!    pod sandbox (CNI teardown) through CRI while the network is up;
//! 5. `containerd`, then `shims`: containerd through the supervisor, then
//!    SIGKILL to leftover `containerd-shim*` and the processes under them;
//!    `services`: any other supervised service;
//! 6. `processes`: SIGTERM to every process, bounded wait, SIGKILL;
//! 7. `network`: the caller's hook (stop DHCP renewal), then links down;
//! 8. `unmount` (everything under /var, /run/containerd, /run/netns and
//!    the data partitions but STATE, deepest and latest first; pseudo
//!    filesystems that will not go are detached, block devices remounted
//!    read-only) and `sync`;
//! 9. `report`: STATE remounted read-write, the [`ShutdownReport`] written
//!    to `<STATE>/shutdown/last.json`, STATE unmounted;
//! 10. return: the caller calls reboot(2).
//!
//! With `force`, the waits are skipped: SIGKILL at once, no CRI calls.
//!
//! Console markers (exact, for tests): `keelson: shutdown begins cause=<c>
//! ending=<e> force=<bool>`, one `keelson: shutdown step=<name>
//! outcome=<ok|forced|timed-out|failed|skipped> took_ms=<n>` per step as it
//! ends (the last one is `step=report`), and finally `keelson: shutdown
//! done took_ms=<n> forced=<bool>`.

mod bounded;
pub mod drain;
mod pods;
mod processes;
pub mod report;
mod state;
mod unmount;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::reboot::RebootMode;
use serde::{Deserialize, Serialize};

pub use drain::{DrainOverride, DrainStep};
pub use report::{Outcome, ShutdownReport, StepRecord};

use crate::events::EventBus;

use crate::stage2::STATE_MOUNT;
use crate::supervisor::{StopKind, Supervisor, SupervisorError};

/// What ends the machine after the shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Power off (SIGTERM, SIGPWR, SIGUSR2, the power button).
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

    /// `power-off` or `reboot`, as in the report and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::PowerOff => "power-off",
            Ending::Reboot => "reboot",
        }
    }
}

/// Deadlines of the steps (from the config's `shutdown` section when there
/// is one).
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// kubelet after SIGTERM.
    pub kubelet: Duration,
    /// Stopping every container and pod sandbox through CRI.
    pub pods: Duration,
    /// containerd (and other services) after SIGTERM.
    pub containerd: Duration,
    /// All remaining processes after SIGTERM.
    pub processes: Duration,
    /// Unmounting (read-only remounts included).
    pub unmount: Duration,
    /// The whole sequence.
    pub total: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            kubelet: Duration::from_secs(20),
            pods: Duration::from_secs(30),
            containerd: Duration::from_secs(10),
            processes: Duration::from_secs(10),
            unmount: Duration::from_secs(15),
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
            pods: s.pods.get(),
            containerd: s.containerd.get(),
            processes: s.processes.get(),
            unmount: s.unmount.get(),
            total: s.total.get(),
        }
    }
}

/// A future run before the links go down (stopping DHCP renewal).
pub type Hook = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What to shut down and how.
pub struct Plan {
    /// What started it (`api:shutdown`, `SIGTERM`, `power-button`, …).
    pub cause: String,
    /// Power off or restart.
    pub ending: Ending,
    /// Skip the waits: SIGKILL at once, no CRI calls.
    pub force: bool,
    /// Step bounds.
    pub deadlines: Deadlines,
    /// Run (bounded) just before the links go down: stop DHCP renewal.
    pub before_links_down: Option<Hook>,
    /// Where STATE is mounted (the report goes there).
    pub state_mount: PathBuf,
    /// containerd's CRI socket.
    pub cri_socket: PathBuf,
    /// The image version recorded in the report.
    pub version: String,
    /// Step 2: drain, or why not.
    pub drain: DrainStep,
    /// Where drain progress is published (`nodectl events`).
    pub events: Option<EventBus>,
}

impl Plan {
    /// A plan with the node's paths and the image's version.
    pub fn new(cause: impl Into<String>, ending: Ending, deadlines: Deadlines) -> Plan {
        Plan {
            cause: cause.into(),
            ending,
            force: false,
            deadlines,
            before_links_down: None,
            state_mount: PathBuf::from(STATE_MOUNT),
            cri_socket: PathBuf::from(crate::cri::CONTAINERD_SOCKET),
            version: crate::stage2::version(),
            drain: DrainStep::Skip("no Kubernetes access configured".into()),
            events: None,
        }
    }

    /// Sets step 2 and where its progress is published.
    pub fn drain(mut self, step: DrainStep, events: Option<EventBus>) -> Plan {
        self.drain = step;
        self.events = events;
        self
    }

    /// Sets `force`.
    #[allow(dead_code)] // API Shutdown/Reboot with --force (integrator)
    pub fn force(mut self, force: bool) -> Plan {
        self.force = force;
        self
    }

    /// Sets the hook run before the links go down.
    #[allow(dead_code)] // DHCP renewal stop (integrator)
    pub fn before_links_down(mut self, hook: Hook) -> Plan {
        self.before_links_down = Some(hook);
        self
    }
}

/// Margin after a SIGKILL for the supervisor to see the exit (its own
/// wait after SIGKILL is 5 s).
const STOP_MARGIN: Duration = Duration::from_secs(6);
/// Bound of the shim step.
const SHIMS_BOUND: Duration = Duration::from_secs(5);
/// Bound of the network step's hook, and of the whole network step.
const HOOK_BOUND: Duration = Duration::from_secs(5);
const NETWORK_BOUND: Duration = Duration::from_secs(11);
/// Bound of sync.
const SYNC_BOUND: Duration = Duration::from_secs(5);
/// Bound of each STATE call (remount, write, unmount).
const STATE_BOUND: Duration = Duration::from_secs(5);
/// The unmount step gets at least this, even late.
const MIN_UNMOUNT: Duration = Duration::from_secs(3);

/// The steps so far; prints each step's marker as it is recorded.
#[derive(Default)]
struct Recorder {
    steps: Vec<StepRecord>,
}

impl Recorder {
    fn push(&mut self, name: &str, took: Duration, outcome: Outcome, detail: String) {
        let took_ms = took.as_millis() as u64;
        print_step(name, took_ms, outcome, &detail);
        self.steps.push(StepRecord {
            name: name.to_string(),
            took_ms,
            outcome,
            detail,
        });
    }

    fn skip(&mut self, name: &str, detail: &str) {
        self.push(name, Duration::ZERO, Outcome::Skipped, detail.to_string());
    }

    /// Runs one step, bounded.
    async fn step<F>(&mut self, name: &str, bound: Duration, work: F)
    where
        F: Future<Output = (Outcome, String)>,
    {
        let t = Instant::now();
        let (outcome, detail) = match tokio::time::timeout(bound, work).await {
            Ok(r) => r,
            Err(_) => (
                Outcome::TimedOut,
                format!("no end within {bound:?}; going on"),
            ),
        };
        self.push(name, t.elapsed(), outcome, detail);
    }
}

fn print_step(name: &str, took_ms: u64, outcome: Outcome, detail: &str) {
    crate::console::marker(&format!(
        "shutdown step={name} outcome={outcome} took_ms={took_ms}"
    ));
    tracing::info!(step = name, %outcome, took_ms, detail, "shutdown step");
}

/// The fixed facts of one shutdown, carried into the blocking tail.
#[derive(Clone)]
struct Meta {
    cause: String,
    ending: Ending,
    force: bool,
    started_unix_ms: u64,
    start: Instant,
    version: String,
    state_mount: PathBuf,
    drain: Option<::drain::protocol::Report>,
}

impl Meta {
    fn new(cause: &str, ending: Ending, force: bool, version: String, state: &Path) -> Meta {
        let started_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        crate::console::marker(&format!(
            "shutdown begins cause={cause} ending={} force={force}",
            ending.as_str()
        ));
        Meta {
            cause: cause.to_string(),
            ending,
            force,
            started_unix_ms,
            start: Instant::now(),
            version,
            state_mount: state.to_path_buf(),
            drain: None,
        }
    }

    fn report(&self, steps: Vec<StepRecord>, remounted: Vec<String>) -> ShutdownReport {
        ShutdownReport {
            cause: self.cause.clone(),
            ending: self.ending,
            started_unix_ms: self.started_unix_ms,
            took_ms: self.start.elapsed().as_millis() as u64,
            forced: ShutdownReport::anything_forced(self.force, &steps),
            steps,
            remounted_read_only: remounted,
            force: self.force,
            version: self.version.clone(),
            boot_id: report::boot_id(),
            drain: self.drain.clone(),
        }
    }
}

/// Runs the ordered shutdown with services still supervised and returns its
/// report once it is safe to call reboot(2) (`plan.ending`'s mode).
pub async fn run(supervisor: Option<&Supervisor>, plan: Plan) -> ShutdownReport {
    let Plan {
        cause,
        ending,
        force,
        deadlines: d,
        before_links_down,
        state_mount,
        cri_socket,
        version,
        drain,
        events,
    } = plan;
    let mut meta = Meta::new(&cause, ending, force, version, &state_mount);
    let mut rec = Recorder::default();

    // Step 2 has its own bound; the total deadline covers what follows.
    match (force, drain, supervisor) {
        (true, _, _) => rec.skip("drain", "force: no cordon, no eviction"),
        (false, DrainStep::Skip(why), _) => rec.skip("drain", &why),
        (false, DrainStep::Run { .. }, None) => rec.skip("drain", "no supervisor to run it"),
        (false, DrainStep::Run { request, timeout }, Some(sup)) => {
            let t = Instant::now();
            let r = drain::run(sup, events.as_ref(), &request, timeout).await;
            rec.push("drain", t.elapsed(), r.outcome, r.detail);
            meta.drain = r.report;
        }
    }

    let end = Instant::now() + d.total;
    // Time kept for the network, unmount, sync and report steps.
    let tail = (NETWORK_BOUND + d.unmount + SYNC_BOUND + STATE_BOUND).min(d.total / 2);
    let soft_end = end - tail;
    let soft_left = || soft_end.saturating_duration_since(Instant::now());
    let wait = |configured: Duration| {
        if force {
            Duration::ZERO
        } else {
            configured.min(soft_left())
        }
    };

    let w = wait(d.kubelet);
    rec.step(
        "kubelet",
        w + STOP_MARGIN,
        stop_service(supervisor, "kubelet", w),
    )
    .await;

    if force {
        rec.skip("pods", "force: containers are killed with every process");
    } else {
        let budget = d.pods.min(soft_left());
        rec.step(
            "pods",
            budget + Duration::from_secs(1),
            pods::stop_all(&cri_socket, budget),
        )
        .await;
    }

    let w = wait(d.containerd);
    rec.step(
        "containerd",
        w + STOP_MARGIN,
        stop_service(supervisor, "containerd", w),
    )
    .await;
    rec.step("shims", SHIMS_BOUND, processes::kill_shims())
        .await;
    let w = wait(d.containerd);
    rec.step(
        "services",
        soft_left().max(w) + STOP_MARGIN,
        stop_other_services(supervisor, w),
    )
    .await;

    let w = wait(d.processes);
    rec.step(
        "processes",
        w + STOP_MARGIN,
        processes::kill_remaining(w, force),
    )
    .await;

    rec.step("network", NETWORK_BOUND, links_down(before_links_down))
        .await;

    // Unmount, sync, report: blocking calls, on the blocking pool (the
    // runtime may be single-threaded), each bounded inside.
    let hard_left = end.saturating_duration_since(Instant::now());
    let unmount_budget = d
        .unmount
        .min(hard_left.saturating_sub(SYNC_BOUND + STATE_BOUND))
        .max(MIN_UNMOUNT);
    let unmount_deadline = Instant::now() + unmount_budget;
    let steps_so_far = rec.steps.clone();
    let meta_kept = meta.clone();
    let tail_work = tokio::task::spawn_blocking(move || finish(rec, &meta, unmount_deadline));
    let outer = unmount_budget + SYNC_BOUND + 3 * STATE_BOUND + Duration::from_secs(10);
    match tokio::time::timeout(outer, tail_work).await {
        Ok(Ok(report)) => report,
        other => {
            let why = match other {
                Ok(Err(e)) => format!("the unmount/report task failed: {e}"),
                _ => format!("the unmount/report task did not end within {outer:?}"),
            };
            tracing::error!(%why, "shutdown tail");
            let mut steps = steps_so_far;
            steps.push(StepRecord {
                name: "unmount".into(),
                took_ms: 0,
                outcome: Outcome::Failed,
                detail: why,
            });
            let report = meta_kept.report(steps, Vec::new());
            print_done(meta_kept.start, report.forced);
            report
        }
    }
}

/// Unmount, sync, write the report and close STATE (blocking; each call
/// bounded). Shared by [`run`] and [`emergency`].
fn finish(mut rec: Recorder, meta: &Meta, unmount_deadline: Instant) -> ShutdownReport {
    let t = Instant::now();
    let keep = [meta.state_mount.as_path()];
    let summary = unmount::unmount_all(&unmount::Kernel, &keep, unmount_deadline);
    let (outcome, detail) = summary.outcome();
    rec.push("unmount", t.elapsed(), outcome, detail);

    let t = Instant::now();
    let synced = crate::sys::is_pid1()
        .then(|| bounded::blocking("sync", SYNC_BOUND, nix::unistd::sync).is_some());
    let (outcome, detail) = match synced {
        Some(true) => (Outcome::Ok, "synced".to_string()),
        Some(false) => (Outcome::TimedOut, format!("no end within {SYNC_BOUND:?}")),
        None => (Outcome::Skipped, "not PID 1".to_string()),
    };
    rec.push("sync", t.elapsed(), outcome, detail);

    let remounted = summary
        .remounted_read_only
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let report = meta.report(rec.steps, remounted);
    let t = Instant::now();
    let (outcome, detail) =
        state::write_and_close(&unmount::Kernel, &meta.state_mount, &report, STATE_BOUND);
    print_step("report", t.elapsed().as_millis() as u64, outcome, &detail);
    print_done(meta.start, report.forced);
    report
}

fn print_done(start: Instant, forced: bool) {
    let took_ms = start.elapsed().as_millis() as u64;
    crate::console::marker(&format!("shutdown done took_ms={took_ms} forced={forced}"));
    tracing::info!(took_ms, forced, "shutdown done");
}

/// Stops one supervised service (SIGTERM, `wait`, SIGKILL).
async fn stop_service(sup: Option<&Supervisor>, name: &str, wait: Duration) -> (Outcome, String) {
    let Some(sup) = sup else {
        return (Outcome::Skipped, "no supervisor".into());
    };
    match sup.stop(name, wait).await {
        Ok(o) => match o.kind {
            StopKind::Graceful => (
                Outcome::Ok,
                format!("exited {} ms after SIGTERM", o.took.as_millis()),
            ),
            StopKind::Killed => {
                let mut detail = if wait.is_zero() {
                    "SIGKILL at once".to_string()
                } else {
                    format!("no exit within {wait:?} of SIGTERM: SIGKILL")
                };
                if o.exit.is_none() {
                    detail.push_str("; its exit was not seen");
                }
                (Outcome::Forced, detail)
            }
            StopKind::NotRunning => (Outcome::Ok, "was not running".into()),
        },
        Err(SupervisorError::UnknownService(_)) => {
            (Outcome::Skipped, format!("{name} is not supervised"))
        }
        Err(e) => (Outcome::Failed, e.to_string()),
    }
}

/// Stops every other supervised service, each with `wait`.
async fn stop_other_services(sup: Option<&Supervisor>, wait: Duration) -> (Outcome, String) {
    let Some(sup) = sup else {
        return (Outcome::Skipped, "no supervisor".into());
    };
    let outcomes = sup.stop_all(&[], wait).await;
    let stopped: Vec<String> = outcomes
        .iter()
        .filter(|o| o.kind != StopKind::NotRunning)
        .map(|o| format!("{}:{}", o.name, o.kind))
        .collect();
    let killed = outcomes.iter().any(|o| o.kind == StopKind::Killed);
    let detail = if stopped.is_empty() {
        "none running".to_string()
    } else {
        stopped.join(" ")
    };
    (if killed { Outcome::Forced } else { Outcome::Ok }, detail)
}

/// The caller's hook (bounded), then every link down. PID 1 only.
async fn links_down(hook: Option<Hook>) -> (Outcome, String) {
    let mut detail = String::new();
    if let Some(hook) = hook {
        match tokio::time::timeout(HOOK_BOUND, hook).await {
            Ok(()) => detail.push_str("DHCP stopped; "),
            Err(_) => detail.push_str(&format!("DHCP stop: no end within {HOOK_BOUND:?}; ")),
        }
    }
    if !crate::sys::is_pid1() {
        detail.push_str("not PID 1: links left up");
        return (Outcome::Skipped, detail);
    }
    match crate::network::down_all().await {
        Ok(links) if links.is_empty() => {
            detail.push_str("no link was up");
            (Outcome::Ok, detail)
        }
        Ok(links) => {
            detail.push_str(&format!("links down: {}", links.join(" ")));
            (Outcome::Ok, detail)
        }
        Err(e) => {
            detail.push_str(&e.to_string());
            (Outcome::Failed, detail)
        }
    }
}

/// The shutdown after a panic or a fatal error, without a runtime: TERM
/// and KILL everything (reaping here: no reaper runs any more), unmount,
/// sync, write a report with cause `emergency`, close STATE. Bounded
/// (about 40 s at most). PID 1 only.
pub fn emergency() {
    if !crate::sys::is_pid1() {
        return;
    }
    let meta = Meta::new(
        "emergency",
        Ending::Reboot,
        false,
        crate::stage2::version(),
        Path::new(STATE_MOUNT),
    );
    let mut rec = Recorder::default();
    let t = Instant::now();
    let forced = processes::kill_remaining_blocking(Duration::from_secs(5));
    let (outcome, detail) = if forced {
        (Outcome::Forced, "SIGKILL after 5s of SIGTERM".to_string())
    } else {
        (Outcome::Ok, "every process ended after SIGTERM".to_string())
    };
    rec.push("processes", t.elapsed(), outcome, detail);
    finish(rec, &meta, Instant::now() + Duration::from_secs(15));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn endings_map_to_reboot_modes_and_words() {
        assert_eq!(Ending::PowerOff.mode(), RebootMode::RB_POWER_OFF);
        assert_eq!(Ending::Reboot.mode(), RebootMode::RB_AUTOBOOT);
        assert_eq!(
            serde_json::to_string(&Ending::PowerOff).unwrap(),
            "\"power-off\""
        );
    }

    /// Off PID 1 the sequence touches nothing on the host, runs every step
    /// in order, and still reports each one within the bound.
    #[tokio::test]
    async fn off_pid1_every_step_is_recorded_in_order_and_nothing_is_touched() {
        let t = tempfile::tempdir().unwrap();
        let mut plan = Plan::new("test", Ending::PowerOff, Deadlines::default());
        plan.state_mount = t.path().join("state");
        plan.cri_socket = t.path().join("containerd.sock");
        let hook_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = hook_ran.clone();
        let plan = plan.before_links_down(Box::pin(async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        let started = Instant::now();
        let report = run(None, plan).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "drain",
                "kubelet",
                "pods",
                "containerd",
                "shims",
                "services",
                "processes",
                "network",
                "unmount",
                "sync"
            ]
        );
        assert!(hook_ran.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!report.forced);
        assert_eq!(report.cause, "test");
        assert!(!t.path().join("state/shutdown").exists());
    }

    /// The real system calls, run as PID 1 of private pid, mount and
    /// network namespaces, so nothing outside them is touched:
    ///
    /// `unshare --pid --fork --mount --net --mount-proc <init test binary>
    /// --ignored --exact shutdown::tests::as_pid1_of_private_namespaces`
    ///
    /// A process ignoring SIGTERM, pod-like mounts under a fresh /var and
    /// /run, a log file init holds open under /var/log, and a busy STATE.
    #[tokio::test]
    #[ignore = "needs to be PID 1 of private namespaces (see the doc comment)"]
    async fn as_pid1_of_private_namespaces() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        use std::io::Write;
        assert!(
            crate::sys::is_pid1(),
            "run it inside unshare, see the doc comment"
        );
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
        // Nothing backed by a block device may be planned but what this
        // test mounts: a read-only remount would reach the host's disk.
        for m in crate::mounts::current() {
            if m.source.starts_with("/dev/") && m.mount_point != Path::new("/") {
                umount2(&m.mount_point, MntFlags::MNT_DETACH).unwrap();
            }
        }
        assert!(!crate::mounts::current()
            .iter()
            .any(|m| m.source.starts_with("/dev/") && m.mount_point != Path::new("/")));
        let tmpfs = |target: &Path, flags: MsFlags| {
            std::fs::create_dir_all(target).unwrap();
            mount(Some("tmpfs"), target, Some("tmpfs"), flags, none).unwrap();
        };
        tmpfs(Path::new("/var"), MsFlags::empty());
        tmpfs(Path::new("/run"), MsFlags::empty());
        tmpfs(
            Path::new("/var/lib/kubelet/pods/p1/volumes/kubernetes.io~empty-dir/v"),
            MsFlags::empty(),
        );
        let snapshot = Path::new("/var/lib/containerd/snapshots/1/fs");
        std::fs::create_dir_all(snapshot).unwrap();
        let rootfs = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs");
        std::fs::create_dir_all(rootfs).unwrap();
        mount(Some(snapshot), rootfs, none, MsFlags::MS_BIND, none).unwrap();
        std::fs::create_dir_all("/run/netns").unwrap();
        std::fs::write("/run/netns/cni-1", b"").unwrap();
        mount(
            Some("/proc/self/ns/net"),
            "/run/netns/cni-1",
            none,
            MsFlags::MS_BIND,
            none,
        )
        .unwrap();
        std::fs::create_dir_all("/var/log").unwrap();
        let mut log = std::fs::File::create("/var/log/kubelet.log").unwrap();
        log.write_all(b"held open by init\n").unwrap();
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        tmpfs(&state, MsFlags::MS_RDONLY);
        let _busy_state = std::fs::File::open(&state).unwrap();
        // It says when SIGTERM is ignored, so the test does not race it.
        let ready = t.path().join("ready");
        let mut stubborn = std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' TERM; : > \"$0\"; while :; do sleep 1; done",
                ready.to_str().unwrap(),
            ])
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !ready.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ready.exists());

        let d = Deadlines {
            kubelet: Duration::from_secs(1),
            pods: Duration::from_secs(1),
            containerd: Duration::from_secs(1),
            processes: Duration::from_secs(2),
            unmount: Duration::from_secs(5),
            total: Duration::from_secs(40),
        };
        let mut plan = Plan::new("test:pid1", Ending::PowerOff, d);
        plan.state_mount = state.clone();
        let started = Instant::now();
        let report = run(None, plan).await;
        let took = started.elapsed();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());

        assert!(took < Duration::from_secs(15), "{took:?}");
        let step = |name: &str| report.steps.iter().find(|s| s.name == name).unwrap();
        assert_eq!(step("processes").outcome, Outcome::Forced);
        assert_eq!(
            step("unmount").outcome,
            Outcome::Ok,
            "{}",
            step("unmount").detail
        );
        assert!(step("unmount")
            .detail
            .contains("1 open file(s) of init released"));
        assert!(report.forced);
        let st = std::fs::read_to_string(format!("/proc/{}/stat", stubborn.id()))
            .ok()
            .and_then(|t| processes::parse_stat(&t));
        assert!(st.as_ref().is_none_or(|s| s.state == 'Z'), "{st:?}");
        let table = crate::mounts::current();
        for gone in ["/var", "/run/netns/cni-1"] {
            assert!(
                !crate::mounts::is_mounted(&table, Path::new(gone)),
                "{gone} still mounted"
            );
        }
        assert!(!crate::mounts::is_mounted(&table, rootfs));
        // STATE was busy: remounted read-only, with the report on it.
        let st = table.iter().find(|m| m.mount_point == state).unwrap();
        assert!(st.read_only());
        let written: ShutdownReport =
            serde_json::from_slice(&std::fs::read(state.join("shutdown/last.json")).unwrap())
                .unwrap();
        assert_eq!(written.cause, "test:pid1");
        assert_eq!(written.steps.len(), report.steps.len());
        drop(log);
        let _ = stubborn.wait();
    }
}
