//! Stage 2, PID 1 on the slot's read-only root: early mounts, VAR grown
//! and mounted, STATE mounted read-only, the config loaded and applied
//! (hostname, modules, sysctls, network, files), then containerd, the
//! preloaded images and kubelet under the supervisor, until a signal asks
//! for a shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use machine_config::MachineConfig;
use nix::mount::MsFlags;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};

use crate::bootstate::{timed, BootState, STAGE1_STATE};
use crate::config_store::ConfigStore;
use crate::events::EventBus;
use crate::mounts::{self, MountError};
use crate::node::{self, NodeCtl, ShutdownRequest};
use crate::partitions;
use crate::shutdown::{self, Deadlines, Ending};
use crate::supervisor::Supervisor;
use crate::watchdog;
use crate::{apply, cgroup, console, etc, ext4, grow, machine_api, power_button};

/// Where STATE is mounted (read-only except while written).
pub const STATE_MOUNT: &str = "/system/state";
/// The config store (generations) inside STATE.
const CONFIG_DIR: &str = "/system/state/config";
/// The active config inside STATE.
pub const CONFIG_PATH: &str = "/system/state/config/current.yaml";
/// The image's static /etc content.
const STATIC_ETC: &str = "/usr/lib/keelson/etc";
/// The image's version manifest.
const VERSION_JSON: &str = "/usr/lib/keelson/version.json";
/// Where service logs go.
const LOG_DIR: &str = "/var/log";

/// Modules the power button needs (see [`coldplug`]).
const POWER_BUTTON_MODULES: &[&str] = &["button", "evdev"];

/// What makes stage 2 give up (followed by an emergency reboot).
#[derive(Debug, Error)]
pub enum Stage2Error {
    /// The async runtime could not be built.
    #[error("building the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The supervisor could not start.
    #[error("starting the supervisor: {0}")]
    Supervisor(String),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs stage 2 until a shutdown has been carried out; returns how the
/// machine should end.
pub fn run() -> Result<Ending, Stage2Error> {
    let kernel = ensure_kernel_mounts();
    console::init(true);
    let mut state = match BootState::load(Path::new(STAGE1_STATE)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no stage 1 state (booted without the initramfs?)");
            BootState::default()
        }
    };
    if state.slot.is_empty() {
        let cmd =
            crate::cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
        state.slot = cmd.slot.to_string();
        state.cmdline_warnings = cmd.warnings;
    }
    if let Err(e) = kernel {
        state.error(format!("kernel filesystems: {e}"));
    }
    tracing::info!(slot = %state.slot, since_kernel_ms = crate::sys::since_kernel_ms(), "keelson stage 2");
    crate::sys::disable_cad();
    // First: stage 1's watchdog runs unpetted since its exec.
    let heartbeat = adopt_watchdog(&mut state);

    timed(&mut state, "early-mounts", early_mounts);
    timed(&mut state, "coldplug", coldplug);
    let var = partitions::find(Path::new("/sys/class/block"), Path::new("/dev"), "VAR");
    timed(&mut state, "mount-var", |st| match &var {
        Some(p) => mount_data(st, p, Path::new("/var"), false),
        None => in_ram(st, "VAR", Path::new("/var"), false),
    });
    if let Some(p) = &var {
        timed(&mut state, "grow-var", |st| grow_var(st, p));
    }
    if let Err(e) = std::fs::create_dir_all(LOG_DIR) {
        state.error(format!("creating {LOG_DIR}: {e}"));
    }
    timed(&mut state, "mount-state", |st| {
        match partitions::find(Path::new("/sys/class/block"), Path::new("/dev"), "STATE") {
            Some(p) => mount_data(st, &p, Path::new(STATE_MOUNT), true),
            None => in_ram(st, "STATE", Path::new(STATE_MOUNT), true),
        }
    });
    if !state.in_ram.is_empty() {
        state.in_ram.sort();
        console::marker(&format!(
            "storage in RAM: {} (no such partition): what is written there is lost at power-off",
            state.in_ram.join(" ")
        ));
    }
    let last_shutdown = timed(&mut state, "shutdown-report", consume_shutdown_report);
    timed(&mut state, "config-store", settle_config_store);
    let config = timed(&mut state, "load-config", load_config);
    state.maintenance = config.is_none();
    if let Some(cfg) = &config {
        timed(&mut state, "apply-kernel", |st| {
            apply::hostname(st, cfg);
            apply::modules(st, cfg);
            apply::sysctls(st, cfg);
        });
        apply::report(&state);
    }
    let config = config.map(Arc::new);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Stage2Error::Runtime)?;
    runtime.block_on(async move {
        if let Some(beat) = heartbeat {
            // The watchdog thread pets only while this task runs: a wedged
            // runtime stops it.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    beat.beat();
                }
            });
        }
        serve(state, config, last_shutdown).await
    })
}

/// Takes over the watchdog stage 1 armed and handed over in the
/// environment; says so on the console.
fn adopt_watchdog(state: &mut BootState) -> Option<watchdog::Heartbeat> {
    // Stage 1's record says what it armed; it stands only once adopted.
    let from_stage1 = state.watchdog.take();
    let Ok(handover) = std::env::var(watchdog::HANDOVER_ENV) else {
        if let Some(w) = from_stage1 {
            state.error(format!(
                "stage 1 armed the watchdog {} but handed over no descriptor: it will reset the machine",
                w.device
            ));
        }
        return None;
    };
    // Only PID 1's own environment had it; no service would anyway.
    std::env::remove_var(watchdog::HANDOVER_ENV);
    let armed: watchdog::Armed = match serde_json::from_str(&handover) {
        Ok(a) => a,
        Err(e) => {
            state.error(format!(
                "watchdog handover from stage 1 unreadable ({e}): it is not petted and will reset the machine"
            ));
            return None;
        }
    };
    match watchdog::adopt(&armed) {
        Ok(beat) => {
            console::marker(&format!(
                "watchdog adopted device={} timeout_s={}",
                armed.device, armed.timeout_s
            ));
            state.watchdog = Some(armed);
            Some(beat)
        }
        Err(e) => {
            state.error(format!("watchdog: {e}"));
            None
        }
    }
}

/// Mounts /proc, /sys and /dev when stage 1 did not hand them over.
fn ensure_kernel_mounts() -> Result<(), MountError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    if !Path::new("/proc/self").exists() {
        mounts::mount("proc", Path::new("/proc"), "proc", nosuid, None)?;
    }
    let table = mounts::current();
    if !mounts::is_mounted(&table, Path::new("/sys")) {
        mounts::mount("sysfs", Path::new("/sys"), "sysfs", nosuid, None)?;
    }
    if !mounts::is_mounted(&table, Path::new("/dev")) {
        mounts::mount(
            "devtmpfs",
            Path::new("/dev"),
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )?;
    }
    Ok(())
}

/// /dev/pts, /dev/shm, /run, /tmp, /etc (filled from the image), cgroup2,
/// and `/` made a shared mount (mount propagation for kubelet).
fn early_mounts(state: &mut BootState) {
    let table = mounts::current();
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut wanted: Vec<(&str, &str, &str, MsFlags, &str)> = vec![
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "mode=0620,ptmxmode=0666,gid=5",
        ),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
        ("tmpfs", "/etc", "tmpfs", nosuid_nodev, "mode=0755"),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            "nsdelegate",
        ),
    ];
    if !mounts::is_mounted(&table, Path::new("/run")) {
        wanted.insert(0, ("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"));
    }
    for (source, target, fstype, flags, data) in wanted {
        if mounts::is_mounted(&table, Path::new(target)) {
            continue;
        }
        if let Err(e) = mounts::mount(source, Path::new(target), fstype, flags, Some(data)) {
            state.error(e.to_string());
        }
    }
    if crate::sys::is_pid1() {
        if let Err(e) = nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SHARED,
            None::<&str>,
        ) {
            state.error(format!("making / a shared mount: {e}"));
        }
        match etc::copy_tree(Path::new(STATIC_ETC), Path::new("/etc")) {
            Ok(n) => tracing::info!(files = n, "static /etc copied"),
            Err(e) => state.error(format!("copying {STATIC_ETC} to /etc: {e}")),
        }
        if !Path::new("/etc/mtab").exists() {
            let _ = std::os::unix::fs::symlink("/proc/self/mounts", "/etc/mtab");
        }
        match cgroup::enable_all(Path::new("/sys/fs/cgroup")) {
            Ok(c) => {
                tracing::info!(controllers = %c.enabled.join(" "), "cgroup2 controllers enabled");
                for r in c.refused {
                    state.error(format!("cgroup controller refused: {r}"));
                }
            }
            Err(e) => state.error(format!("cgroup2 controllers: {e}")),
        }
    }
}

/// Loads the drivers of the hardware present (NICs above all: nothing
/// else would load virtio_net or e1000).
fn coldplug(state: &mut BootState) {
    match crate::kmod::ModuleIndex::running_kernel() {
        Ok(idx) => {
            // The ACPI power button reaches init as input events: the
            // button driver and evdev, whether or not coldplug matched them.
            if crate::sys::is_pid1() {
                for m in POWER_BUTTON_MODULES {
                    if let Err(e) = idx.load(m, &Default::default()) {
                        state.error(format!("module {m} (power button): {e}"));
                    }
                }
            }
            let (loaded, failed) = idx.coldplug(Path::new("/sys"));
            tracing::info!(loaded = %loaded.join(" "), "hardware drivers loaded");
            for f in failed {
                state.error(format!("coldplug: {f}"));
            }
        }
        Err(e) => state.error(format!("coldplug: {e}")),
    }
}

/// Mounts a tmpfs where a missing data partition would go (read-only for
/// STATE, which is remounted writable while written, as on disk), so a
/// diskless node runs all the same.
fn in_ram(state: &mut BootState, name: &str, target: &Path, read_only: bool) {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    match mounts::mount("tmpfs", target, "tmpfs", flags, Some("mode=0755")) {
        Ok(()) => {
            tracing::info!(partition = name, target = %target.display(), "no partition: kept in RAM");
            state.in_ram.push(name.to_string());
        }
        Err(e) => state.error(format!(
            "partition {name} not found, and no tmpfs for it: {e}"
        )),
    }
}

/// Mounts an ext4 data partition (read-only for STATE).
fn mount_data(state: &mut BootState, p: &partitions::Partition, target: &Path, read_only: bool) {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    match mounts::mount(&p.dev.to_string_lossy(), target, "ext4", flags, None) {
        Ok(()) => {
            tracing::info!(partition = %p.name, dev = %p.dev.display(), target = %target.display(), read_only, "mounted")
        }
        Err(e) => state.error(e.to_string()),
    }
}

/// Grows VAR's partition to the end of its disk and its filesystem to the
/// partition (online, mounted at /var). Safe to repeat.
fn grow_var(state: &mut BootState, p: &partitions::Partition) {
    let Some(disk) = &p.disk else {
        state.error(format!("grow VAR: no disk found for {}", p.devname));
        return;
    };
    let disk_dev = PathBuf::from("/dev").join(disk);
    match grow::grow_table(&disk_dev, &p.name, 512) {
        Ok(Some(g)) => {
            tracing::info!(disk = %disk_dev.display(), old_end = g.old_end_lba, new_end = g.new_end_lba, "VAR partition grown");
            if let Err(e) = grow::resize_in_kernel(&disk_dev, &g) {
                state.error(format!("grow VAR: {e}"));
                return;
            }
        }
        Ok(None) => {}
        Err(e) => {
            state.error(format!("grow VAR: {e}"));
            return;
        }
    }
    let part_size = grow::size_of(&p.dev).unwrap_or(0);
    let fs_size = ext4::read_health(&p.dev, 0)
        .map(|h| h.size_bytes)
        .unwrap_or(part_size);
    if part_size.saturating_sub(fs_size) < (1 << 20) {
        return;
    }
    let Some(resize2fs) = ["/usr/sbin/resize2fs", "/sbin/resize2fs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        state.error("grow VAR: resize2fs not in the image");
        return;
    };
    tracing::info!(
        fs_bytes = fs_size,
        partition_bytes = part_size,
        "resizing /var online"
    );
    // No supervisor (and so no reaper) runs yet: a plain wait is safe.
    match std::process::Command::new(resize2fs).arg(&p.dev).status() {
        Ok(s) if s.success() => tracing::info!(dev = %p.dev.display(), "VAR filesystem grown"),
        Ok(s) => state.error(format!("resize2fs {}: {s}", p.dev.display())),
        Err(e) => state.error(format!("running {resize2fs}: {e}")),
    }
}

/// Reads and validates the config in STATE; `None` (maintenance mode)
/// when there is none or it is invalid.
fn load_config(state: &mut BootState) -> Option<MachineConfig> {
    let bytes = match std::fs::read(CONFIG_PATH) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            console::marker("maintenance mode: no config in STATE");
            return None;
        }
        Err(e) => {
            state.error(format!("reading {CONFIG_PATH}: {e}"));
            console::marker("maintenance mode: config in STATE unreadable");
            return None;
        }
    };
    match machine_config::load(&bytes) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("config: {w}");
            }
            tracing::info!(hostname = %loaded.config.machine.hostname, "config loaded");
            Some(loaded.config)
        }
        Err(e) => {
            state.error(format!("{CONFIG_PATH} is not a valid config:\n{e}"));
            console::marker("maintenance mode: config in STATE is invalid");
            None
        }
    }
}

/// Remounts STATE read-write for `f`, then read-only again. Callers on
/// different tasks (config store, drain record, shutdown report) are
/// serialised, so one never remounts read-only under another's write.
pub fn with_state_writable<T>(f: impl FnOnce() -> T) -> Result<T, MountError> {
    static STATE_WRITERS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STATE_WRITERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    mounts::remount(Path::new(STATE_MOUNT), false)?;
    let out = f();
    nix::unistd::sync();
    mounts::remount(Path::new(STATE_MOUNT), true)?;
    Ok(out)
}

/// The signal that started a shutdown, and how the machine ends.
async fn wait_for_shutdown_signal() -> Result<(&'static str, Ending), Stage2Error> {
    let mut term = signal(SignalKind::terminate()).map_err(Stage2Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Stage2Error::Signals)?;
    let mut pwr = signal(SignalKind::from_raw(libc::SIGPWR)).map_err(Stage2Error::Signals)?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(Stage2Error::Signals)?;
    Ok(tokio::select! {
        _ = term.recv() => ("SIGTERM", Ending::PowerOff),
        _ = pwr.recv() => ("SIGPWR", Ending::PowerOff),
        _ = usr2.recv() => ("SIGUSR2", Ending::PowerOff),
        _ = int.recv() => ("SIGINT", Ending::Reboot),
    })
}

/// The async life of the node: the API, apid, the services, then waiting
/// for a shutdown request (signal or API) and carrying it out.
async fn serve(
    state: BootState,
    config: Option<Arc<MachineConfig>>,
    last_shutdown: api::v1::LastShutdownResponse,
) -> Result<Ending, Stage2Error> {
    // Signal streams first, so a SIGTERM during boot is never lost.
    let signal = wait_for_shutdown_signal();
    tokio::pin!(signal);
    let (sup, reaper) = Supervisor::new(PathBuf::from(LOG_DIR))
        .map_err(|e| Stage2Error::Supervisor(e.to_string()))?;
    tokio::spawn(reaper.run());

    let events = EventBus::default();
    for p in &state.phases {
        events.emit(
            "boot-phase",
            format!("{} took {} ms", p.name, p.took_ms),
            &[
                ("phase", p.name.clone()),
                ("took_ms", p.took_ms.to_string()),
            ],
        );
    }
    let (node, mut requests) = NodeCtl::new(
        state,
        config.clone(),
        sup.clone(),
        events,
        PathBuf::from(CONFIG_DIR),
    );
    node.forward_service_events();
    node.events.emit(
        "last-shutdown",
        if last_shutdown.previous_clean {
            "previous shutdown was clean".to_string()
        } else {
            "previous shutdown was not clean".to_string()
        },
        &[
            ("previous_clean", last_shutdown.previous_clean.to_string()),
            (
                "cause",
                last_shutdown
                    .report
                    .as_ref()
                    .map(|r| r.cause.clone())
                    .unwrap_or_default(),
            ),
        ],
    );
    node.set_last_shutdown(last_shutdown);
    if let Err(e) = machine_api::serve(node.clone(), Path::new(api::INIT_SOCKET)) {
        node.state().error(format!("machine API: {e}"));
    }
    node.start_apid();
    match config {
        Some(cfg) => {
            let n = node.clone();
            tokio::spawn(async move { node::start_services(&n, cfg).await });
        }
        None => {
            tracing::info!("maintenance mode: waiting for a config from the API");
            let n = node.clone();
            tokio::spawn(async move { node::maintenance_network(&n).await });
        }
    }

    let button = async {
        match power_button::wait_pressed().await {
            Ok(()) => crate::console::marker("power button pressed"),
            Err(e) => {
                tracing::warn!(error = %e, "no ACPI power button to watch");
                std::future::pending::<()>().await;
            }
        }
    };
    let req = tokio::select! {
        () = button => {
            node.mark_shutting_down();
            ShutdownRequest { cause: "power-button".to_string(), ending: Ending::PowerOff, force: false, drain: Default::default() }
        }
        s = &mut signal => {
            let (cause, ending) = s?;
            node.mark_shutting_down();
            ShutdownRequest { cause: cause.to_string(), ending, force: false, drain: Default::default() }
        }
        r = requests.recv() => r.unwrap_or(ShutdownRequest {
            cause: "shutdown channel closed".to_string(),
            ending: Ending::Reboot,
            force: false,
            drain: Default::default(),
        }),
    };
    let config = node.config();
    let deadlines = config
        .as_deref()
        .map(Deadlines::from_config)
        .unwrap_or_default();
    let drain = match config.as_deref() {
        Some(cfg) => {
            let name = machine_config::render::kubelet::node_name(cfg, &node.facts()).to_string();
            shutdown::DrainStep::decide(Some(cfg), &name, req.drain)
        }
        None => shutdown::DrainStep::decide(None, "", req.drain),
    };
    let mut plan = shutdown::Plan::new(req.cause.clone(), req.ending, deadlines)
        .force(req.force)
        .drain(drain, Some(node.events.clone()));
    if let Some(hook) = node.network_stop_hook() {
        plan = plan.before_links_down(hook);
    }
    let report = shutdown::run(Some(&sup), plan).await;
    tracing::info!(
        took_ms = report.took_ms,
        forced = report.forced,
        "shutdown report written"
    );
    Ok(req.ending)
}

/// Takes the previous boot's shutdown report out of STATE (its absence
/// means that boot ended without an ordered shutdown) and combines it with
/// this boot's filesystem checks into the `LastShutdown` answer.
fn consume_shutdown_report(state: &mut BootState) -> api::v1::LastShutdownResponse {
    use crate::shutdown::report;
    let dir = Path::new(STATE_MOUNT);
    let boot_id = report::boot_id();
    let previous = match with_state_writable(|| report::consume(dir, &boot_id)) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            state.error(format!("shutdown report: {e}"));
            report::Previous::Missing {
                boot_id: String::new(),
                unreadable: Some(e.to_string()),
            }
        }
        Err(e) => {
            state.error(format!("shutdown report: making STATE writable: {e}"));
            report::Previous::Missing {
                boot_id: String::new(),
                unreadable: Some(e.to_string()),
            }
        }
    };
    let answer = report::previous_shutdown(&previous, &state.fsck);
    if !answer.previous_clean {
        console::marker("previous shutdown was not clean");
        for f in &answer.boot_findings {
            tracing::warn!("{f}");
        }
    }
    answer
}

/// Settles the config store before the config is loaded: a `try` left
/// unconfirmed by the previous boot is reverted (its generation never
/// became current), a staged config becomes current.
fn settle_config_store(state: &mut BootState) {
    let dir = PathBuf::from(CONFIG_DIR);
    let store = match ConfigStore::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            state.error(format!("config store: {e}"));
            return;
        }
    };
    let trial = store.pending_try();
    let staged = store.pending_stage();
    let (trial, staged) = match (trial, staged) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(e), _) | (_, Err(e)) => {
            state.error(format!("config store: {e}"));
            return;
        }
    };
    if trial.is_none() && staged.is_none() {
        return;
    }
    let done = with_state_writable(|| -> Result<Vec<String>, crate::config_store::StoreError> {
        let mut notes = Vec::new();
        if trial.is_some() {
            let r = store.revert_try()?;
            notes.push(format!(
                "config generation {} reverted at boot: it was on trial and not confirmed",
                r.generation
            ));
        }
        if staged.is_some() {
            if let Some(r) = store.take_staged()? {
                notes.push(format!(
                    "config generation {} (staged) is now current",
                    r.generation
                ));
            }
        }
        Ok(notes)
    });
    match done {
        Ok(Ok(notes)) => {
            for n in notes {
                console::marker(&n);
            }
        }
        Ok(Err(e)) => state.error(format!("config store: {e}")),
        Err(e) => state.error(format!("config store: making STATE writable: {e}")),
    }
}

/// The image's version manifest (`null` if unreadable).
pub fn version_manifest() -> serde_json::Value {
    std::fs::read(VERSION_JSON)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The image's version from its manifest (`unknown` if unreadable).
pub fn version() -> String {
    version_manifest()
        .get("version")
        .and_then(|s| s.as_str())
        .map_or_else(|| "unknown".to_string(), str::to_string)
}

/// init's resident set size in KiB (`VmRSS` of /proc/self/status).
pub fn rss_kib() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        assert_eq!(
            parse_vm_rss("Name:\tinit\nVmRSS:\t    4321 kB\nThreads: 1\n"),
            Some(4321)
        );
        assert_eq!(parse_vm_rss("Name:\tinit\n"), None);
        // This test process has a resident set.
        assert!(rss_kib().unwrap() > 0);
    }
}
