//! Stage 1, run from the initramfs: mount the kernel filesystems, load the
//! storage modules, find the partitions by GPT name, check STATE and VAR,
//! mount the slot's squashfs read-only (or, on a network boot, the squashfs
//! fetched over HTTP and checked by hash, see [`crate::netroot`]), hand the
//! boot state over in `/run`, free the initramfs and switch root (MS_MOVE +
//! chroot: an initramfs cannot be pivot_root'ed), then exec stage 2
//! (`/sbin/init`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;
use thiserror::Error;

use crate::bootstate::{timed, BootState, STAGE1_STATE};
use crate::cmdline;
use crate::kmod::ModuleIndex;
use crate::mounts::{self, MountError};
use crate::partitions::{self, Partition};
use crate::watchdog::{self, Stage1Petter};
use crate::{console, fsck, media, netroot};

/// The file whose presence in `/` makes init run stage 1.
pub const MARKER: &str = "/.keelson-stage1";
/// Where the slot's root filesystem is mounted before the switch.
const NEWROOT: &str = "/newroot";
/// e2fsck in the initramfs (Debian's e2fsck.static).
const E2FSCK: &str = "/sbin/e2fsck";
/// How long to wait for the disk's partitions to appear.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(30);
/// Filesystem modules stage 1 always needs (when not built in); the disk
/// controller drivers are found by coldplug from the devices present.
pub const FILESYSTEM_MODULES: &[&str] = &["squashfs", "ext4"];
/// Modules a media boot needs beyond coldplug: the loop driver, ISO 9660,
/// CD drives and USB sticks (their controllers come by coldplug).
const MEDIA_MODULES: &[&str] = &[
    "loop",
    "isofs",
    "sr_mod",
    "cdrom",
    "sd_mod",
    "usb_storage",
    "uas",
];
/// On a network boot, a disk with STATE and VAR is used if present: how
/// long to look for one (drivers are loaded by then).
const NETBOOT_DISK_WAIT: Duration = Duration::from_secs(3);

/// Why stage 1 could not finish (each is fatal: the machine reboots).
#[derive(Debug, Error)]
pub enum Stage1Error {
    /// The slot's root partition never appeared.
    #[error("partition {0} not found within {1:?} (is the disk attached and its driver in the initramfs?)")]
    NoRoot(String, Duration),
    /// A mount of stage 1 failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The switch to the new root failed.
    #[error("switch root: {0}")]
    Switch(String),
    /// The kernel command line asks for a network root it does not
    /// describe well enough to fetch.
    #[error("{0}")]
    NetRoot(String),
    /// The kernel command line asks for a boot media root it does not
    /// describe well enough to find and check.
    #[error("{0}")]
    Media(String),
}

/// Runs stage 1. Returns only on failure (on success it execs stage 2).
pub fn run() -> Stage1Error {
    let mut state = BootState::default();
    let kernel_filesystems = |_: &mut BootState| mount_kernel_filesystems();
    let early = timed(&mut state, "early-mounts", kernel_filesystems);
    console::init(true);
    if let Err(e) = early {
        state.error(format!("early mounts: {e}"));
    }
    tracing::info!(
        since_kernel_ms = crate::sys::since_kernel_ms(),
        "keelson stage 1"
    );

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmd = cmdline::parse(&cmdline);
    for w in &cmd.warnings {
        tracing::warn!("{w}");
    }
    state.slot = cmd.slot.to_string();
    state.cmdline_warnings = cmd.warnings.clone();

    let extra: &[&str] = if cmd.network_boot() {
        &["loop"]
    } else if cmd.media_boot() {
        MEDIA_MODULES
    } else {
        &[]
    };
    timed(&mut state, "storage-modules", |st| {
        load_storage_modules(st, extra)
    });
    // The watchdog's driver came with the storage drivers (coldplug).
    let petter = arm_watchdog(&mut state, &cmdline);
    let progress = || {
        if let Some(p) = &petter {
            p.progress();
        }
    };

    let slot = cmd.slot;
    let found = if cmd.network_boot() {
        network_root(&mut state, &cmd, &progress)
    } else if cmd.media_boot() {
        media_root(&mut state, &cmd, &progress)
    } else {
        disk_root(&mut state, slot)
    };
    let (root, found) = match found {
        Ok(r) => r,
        Err(e) => return e,
    };
    for name in ["STATE", "VAR"] {
        if let Some(p) = found.get(name) {
            tracing::info!(partition = name, dev = %p.dev.display(), "data partition found");
        }
    }

    progress();
    timed(&mut state, "fsck", |st| match &petter {
        // e2fsck of a large filesystem may take long: that is progress.
        Some(p) => p.while_child(|| check_filesystems(st, &found)),
        None => check_filesystems(st, &found),
    });

    let what = match (&state.net_root, &state.media) {
        (Some(r), _) => r.url.clone(),
        (None, Some(m)) => format!("media {}", m.volume_id),
        (None, None) => format!("slot {slot}"),
    };
    if let Err(e) = timed(&mut state, "mount-root", |_| mount_root(&what, &root)) {
        return e;
    }
    progress();
    match timed(&mut state, "switch-root", prepare_switch) {
        Ok(()) => {}
        Err(e) => return e,
    }
    progress();
    exec_stage2(state.watchdog.as_ref())
}

/// The data partitions found, by GPT name.
type Found = BTreeMap<String, Partition>;

/// A network boot: the root fetched and checked (see [`netroot`]), on a
/// loop device; STATE and VAR if a disk has them (else stage 2 keeps them
/// in RAM, as a diskless machine should).
fn network_root(
    state: &mut BootState,
    cmd: &cmdline::Cmdline,
    progress: &(dyn Fn() + Sync),
) -> Result<(PathBuf, Found), Stage1Error> {
    let Some(net_root) = &cmd.net_root else {
        return Err(Stage1Error::NetRoot(
            cmd.net_root_error.clone().unwrap_or_default(),
        ));
    };
    let (device, record) = timed(state, "network-root", |_| {
        netroot::bring_up(net_root, progress)
    })
    .map_err(Stage1Error::NetRoot)?;
    state.slot = "network".to_string();
    state.net_root = Some(record);
    let found = timed(state, "find-partitions", |_| {
        partitions::wait_for(
            Path::new("/sys/class/block"),
            Path::new("/dev"),
            &[],
            &["STATE", "VAR"],
            NETBOOT_DISK_WAIT,
        )
    });
    Ok((device, found))
}

/// A boot media (ISO) boot: the root and the install payload copied from
/// the media into RAM (see [`media`]). Disks are not looked at: a live node
/// keeps STATE and VAR in RAM, whatever the disks hold, until it installs.
fn media_root(
    state: &mut BootState,
    cmd: &cmdline::Cmdline,
    progress: &(dyn Fn() + Sync),
) -> Result<(PathBuf, Found), Stage1Error> {
    let Some(root) = &cmd.media else {
        return Err(Stage1Error::Media(
            cmd.media_error.clone().unwrap_or_default(),
        ));
    };
    let (device, record) = timed(state, "media-root", |_| media::bring_up(root, progress));
    state.slot = "media".to_string();
    state.media = Some(record);
    Ok((device, Found::new()))
}

/// A disk boot: the slot's partition, STATE and VAR (a missing one is a
/// boot problem; stage 2 keeps it in RAM).
fn disk_root(state: &mut BootState, slot: cmdline::Slot) -> Result<(PathBuf, Found), Stage1Error> {
    let found = timed(state, "find-partitions", |_| {
        partitions::wait_for(
            Path::new("/sys/class/block"),
            Path::new("/dev"),
            &[slot.partition()],
            &["STATE", "VAR"],
            PARTITION_TIMEOUT,
        )
    });
    let Some(root) = found.get(slot.partition()).cloned() else {
        log_partitions();
        return Err(Stage1Error::NoRoot(
            slot.partition().to_string(),
            PARTITION_TIMEOUT,
        ));
    };
    for name in ["STATE", "VAR"] {
        if !found.contains_key(name) {
            state.error(format!(
                "partition {name} not found: stage 2 keeps it in RAM"
            ));
        }
    }
    Ok((root.dev, found))
}

/// Arms the hardware watchdog as the kernel command line says
/// (`keelson.watchdog=off|SECONDS`, default 60 s) and starts stage 1's
/// petting. No device is not an error: not every machine has one.
fn arm_watchdog(state: &mut BootState, cmdline: &str) -> Option<Stage1Petter> {
    let (setting, warning) = watchdog::parse_setting(cmdline);
    if let Some(w) = warning {
        tracing::warn!("{w}");
        state.cmdline_warnings.push(w);
    }
    let watchdog::Setting::Timeout(timeout_s) = setting else {
        console::marker("watchdog off (keelson.watchdog=off)");
        return None;
    };
    match watchdog::arm(timeout_s) {
        Ok((file, armed)) => {
            console::marker(&format!(
                "watchdog armed device={} identity={:?} timeout_s={}",
                armed.device, armed.identity, armed.timeout_s
            ));
            let petter = Stage1Petter::start(file, armed.timeout_s);
            state.watchdog = Some(armed);
            Some(petter)
        }
        Err(watchdog::WatchdogError::Absent) => {
            tracing::info!("no hardware watchdog on this machine: not armed");
            None
        }
        Err(e) => {
            state.error(format!("watchdog not armed: {e}"));
            None
        }
    }
}

/// Mounts /proc, /sys and /dev (devtmpfs).
fn mount_kernel_filesystems() -> Result<(), MountError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mounts::mount("proc", Path::new("/proc"), "proc", nosuid, None)?;
    mounts::mount("sysfs", Path::new("/sys"), "sysfs", nosuid, None)?;
    mounts::mount(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
}

/// Loads the drivers of the disk controllers (and NICs) present (coldplug
/// from device modaliases: only what the machine has, since every module
/// costs a signature check), the filesystem modules, and `extra` (on a
/// network or media boot the loop driver the root is mounted through, and
/// the CD and USB drivers the media is read through).
fn load_storage_modules(state: &mut BootState, extra: &[&str]) {
    let index = match ModuleIndex::running_kernel() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "no module index: relying on built-in drivers");
            return;
        }
    };
    let (mut loaded, failed) = index.coldplug(Path::new("/sys"));
    for f in failed {
        tracing::warn!("storage driver: {f}");
    }
    let wanted = FILESYSTEM_MODULES.iter().chain(extra);
    for name in wanted {
        if !index.knows(name) {
            tracing::debug!(module = name, "not in the initramfs");
            continue;
        }
        match index.load(name, &BTreeMap::new()) {
            Ok(r) => {
                loaded.extend(r.loaded);
                for f in r.soft_failures {
                    tracing::debug!(module = name, "soft dependency: {f}");
                }
            }
            Err(e) => state.error(format!("filesystem module {name}: {e}")),
        }
    }
    tracing::info!(loaded = %loaded.join(" "), "storage modules loaded");
}

/// Logs every named partition seen (for a "root not found" diagnosis).
fn log_partitions() {
    let seen = partitions::scan(Path::new("/sys/class/block"), Path::new("/dev"));
    if seen.is_empty() {
        tracing::error!("no GPT partitions visible in /sys/class/block");
    }
    for p in seen {
        tracing::error!(name = %p.name, dev = %p.dev.display(), "partition seen");
    }
}

/// Superblock check and e2fsck for STATE and VAR.
fn check_filesystems(state: &mut BootState, found: &BTreeMap<String, Partition>) {
    for name in ["STATE", "VAR"] {
        let Some(p) = found.get(name) else { continue };
        let report = fsck::check(Path::new(E2FSCK), name, &p.dev);
        if report.journal_needed_recovery {
            crate::console::marker(&format!(
                "fsck partition={name} journal_recovered=true outcome={:?}",
                report.outcome
            ));
        }
        if !report.outcome.mountable() {
            state.error(format!(
                "fsck of {name} ({}) left it unmountable: exit {:?}{}",
                p.dev.display(),
                report.exit_code,
                report
                    .error
                    .as_deref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            ));
        }
        state.fsck.push(report);
    }
}

/// Mounts the root squashfs (`what`: the slot or the URL it came from)
/// read-only at /newroot.
fn mount_root(what: &str, root: &Path) -> Result<(), Stage1Error> {
    let dev = root.to_string_lossy();
    tracing::info!(root = %what, dev = %dev, "mounting root");
    mounts::mount(
        &dev,
        Path::new(NEWROOT),
        "squashfs",
        MsFlags::MS_RDONLY,
        None,
    )?;
    Ok(())
}

/// Saves the boot state into a fresh /run, moves /dev /proc /sys /run into
/// the new root and frees the initramfs.
fn prepare_switch(state: &mut BootState) -> Result<(), Stage1Error> {
    mounts::mount(
        "tmpfs",
        Path::new("/run"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    // The switch-root phase is recorded in stage 2's copy by stage 2's own
    // clock; save what we have now.
    if let Err(e) = state.save(Path::new(STAGE1_STATE)) {
        tracing::warn!(error = %e, "cannot save stage 1 state for stage 2");
    }
    // Looked up while /proc is still here.
    let payload = Path::new(media::STAGE1_PAYLOAD);
    let payload_mounted = mounts::is_mounted(&mounts::current(), payload);
    for dir in ["/dev", "/proc", "/sys", "/run"] {
        let target = Path::new(NEWROOT).join(&dir[1..]);
        mounts::move_mount(Path::new(dir), &target)?;
    }
    // A media boot's install payload goes along, into the new root's /run.
    if payload_mounted {
        let target = Path::new(NEWROOT).join(&media::INSTALL_PAYLOAD[1..]);
        std::fs::create_dir_all(&target)
            .map_err(|e| Stage1Error::Switch(format!("create {}: {e}", target.display())))?;
        mounts::move_mount(payload, &target)?;
    }
    free_initramfs();
    Ok(())
}

/// Deletes the initramfs' files (they live in RAM) except the new root.
fn free_initramfs() {
    let Ok(root_dev) = std::fs::symlink_metadata("/").map(|m| m.dev()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/") else {
        return;
    };
    let mut freed = 0usize;
    for e in entries.flatten() {
        let path = e.path();
        if path == Path::new(NEWROOT) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.dev() != root_dev {
            continue;
        }
        let r = if md.is_dir() {
            remove_same_device(&path, root_dev)
        } else {
            std::fs::remove_file(&path)
        };
        if r.is_ok() {
            freed += 1;
        }
    }
    tracing::debug!(freed, "initramfs freed");
}

/// Removes a directory tree without crossing into other filesystems.
fn remove_same_device(dir: &Path, dev: u64) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let md = std::fs::symlink_metadata(&p)?;
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            remove_same_device(&p, dev)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    std::fs::remove_dir(dir)
}

/// chdir /newroot, move it onto /, chroot, exec /sbin/init.
fn exec_stage2(watchdog: Option<&watchdog::Armed>) -> Stage1Error {
    let step =
        |what: &str, r: nix::Result<()>| r.map_err(|e| Stage1Error::Switch(format!("{what}: {e}")));
    let switched = step("chdir /newroot", nix::unistd::chdir(NEWROOT))
        .and_then(|()| {
            step(
                "move /newroot to /",
                nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>),
            )
        })
        .and_then(|()| step("chroot", nix::unistd::chroot(".")))
        .and_then(|()| step("chdir /", nix::unistd::chdir("/")));
    if let Err(e) = switched {
        return e;
    }
    tracing::info!("exec /sbin/init (stage 2)");
    let prog = CString::from(c"/sbin/init");
    let mut env = vec![CString::from(c"PATH=/usr/sbin:/usr/bin:/sbin:/bin")];
    // The open watchdog goes on to stage 2, which must take it over within
    // its timeout.
    if let Some(handover) = watchdog
        .and_then(|w| serde_json::to_string(w).ok())
        .and_then(|json| CString::new(format!("{}={json}", watchdog::HANDOVER_ENV)).ok())
    {
        env.push(handover);
    }
    match nix::unistd::execve(&prog, std::slice::from_ref(&prog), &env) {
        Ok(never) => match never {},
        Err(e) => Stage1Error::Switch(format!("exec /sbin/init: {e}")),
    }
}
