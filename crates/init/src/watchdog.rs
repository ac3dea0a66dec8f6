//! The hardware watchdog (`/dev/watchdog0`: the `i6300esb` of a virtual
//! machine, the chipset's TCO timer on metal): armed by stage 1 as soon as
//! its driver is loaded, so a boot that hangs before init is up resets the
//! machine, and GRUB's fallback brings the previous slot back after an
//! upgrade.
//!
//! Who keeps it alive:
//! - stage 1: a thread, for as long as stage 1 makes progress (each phase
//!   marks progress; a running e2fsck counts as progress however long it
//!   takes). It ends with stage 1's exec of stage 2, which inherits the
//!   open device (its number travels in the boot state).
//! - stage 2 (PID 1): a thread that pets the device; once init's runtime
//!   runs (after the boot's synchronous phases, which may legitimately take
//!   long: growing VAR on a big disk) it pets only while the runtime's
//!   heartbeat is fresh: a PID 1 wedged for [`STALL_FACTOR`] timeouts stops
//!   petting and the machine resets.
//!
//! A stage 2 that never takes the device over (an init that hangs at
//! start, or is not Keelson's) leaves it unpetted: the machine resets one
//! timeout after stage 1's exec. The device is never disarmed: a reboot
//! resets it and a powered-off machine does not run it.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The watchdog device nodes tried, in order.
const DEVICES: &[&str] = &["/dev/watchdog0", "/dev/watchdog"];

/// Timeout when the kernel command line does not set one.
pub const DEFAULT_TIMEOUT_S: u32 = 60;
/// Bounds of `keelson.watchdog=SECONDS`.
pub const TIMEOUT_RANGE_S: std::ops::RangeInclusive<u32> = 5..=600;
/// A PID 1 whose runtime has not beaten for this many timeouts is wedged:
/// petting stops.
pub const STALL_FACTOR: u32 = 3;
/// Stage 1 without progress for this long is hung (a running e2fsck is
/// progress).
const STAGE1_STALL: Duration = Duration::from_secs(300);

/// The environment variable stage 1 hands the armed watchdog to stage 2 in
/// (JSON of [`Armed`]); stage 2 removes it, and services get a clean
/// environment anyway.
pub const HANDOVER_ENV: &str = "KEELSON_WATCHDOG";

// The Linux watchdog API (include/uapi/linux/watchdog.h).
#[repr(C)]
#[allow(dead_code)] // filled in by the kernel; only `identity` is read
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}
nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, std::os::raw::c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, std::os::raw::c_int);

/// What the kernel command line asks for (`keelson.watchdog=off|SECONDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Do not arm the watchdog.
    Off,
    /// Arm it with this timeout.
    Timeout(u32),
}

impl Default for Setting {
    fn default() -> Self {
        Setting::Timeout(DEFAULT_TIMEOUT_S)
    }
}

/// An armed watchdog, as stage 1 hands it to stage 2 (in the boot state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    /// The open device's descriptor number (kept open across the exec).
    pub fd: i32,
    /// The device node.
    pub device: String,
    /// The driver's identity (`i6300ESB timer`, `iTCO_wdt`, ...).
    pub identity: String,
    /// The timeout the driver accepted, seconds.
    pub timeout_s: u32,
}

/// Why the watchdog was not armed (none of these stops the boot).
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// No watchdog device exists (no driver for this machine).
    #[error("no watchdog device ({})", DEVICES.join(", "))]
    Absent,
    /// The device could not be opened.
    #[error("opening {device}: {source}")]
    Open {
        /// The device node.
        device: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The driver refused the timeout.
    #[error("{device}: setting the timeout to {timeout_s}s: {source}")]
    Timeout {
        /// The device node.
        device: String,
        /// The timeout asked for.
        timeout_s: u32,
        /// The cause.
        source: nix::Error,
    },
    /// The descriptor handed over by stage 1 is not a watchdog.
    #[error("descriptor {0} from stage 1 is not an open watchdog device")]
    NotAWatchdog(i32),
}

/// Opens the first watchdog device and sets its timeout; the device runs
/// from the moment it is opened. The descriptor stays open across exec.
pub fn arm(timeout_s: u32) -> Result<(File, Armed), WatchdogError> {
    let device = DEVICES
        .iter()
        .find(|d| std::path::Path::new(d).exists())
        .ok_or(WatchdogError::Absent)?;
    let file = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|source| WatchdogError::Open {
            device: device.to_string(),
            source,
        })?;
    let mut t = std::os::raw::c_int::try_from(timeout_s).unwrap_or(i32::MAX);
    // SAFETY: the descriptor is open for the whole call and `t` is a valid
    // int the driver reads and overwrites with the timeout it set.
    unsafe { wdioc_settimeout(file.as_raw_fd(), &mut t) }.map_err(|source| {
        WatchdogError::Timeout {
            device: device.to_string(),
            timeout_s,
            source,
        }
    })?;
    let mut info = WatchdogInfo {
        options: 0,
        firmware_version: 0,
        identity: [0; 32],
    };
    // SAFETY: as above; the driver fills `info`, a repr(C) copy of the
    // kernel's struct watchdog_info.
    let identity = match unsafe { wdioc_getsupport(file.as_raw_fd(), &mut info) } {
        Ok(_) => {
            let end = info.identity.iter().position(|b| *b == 0).unwrap_or(32);
            String::from_utf8_lossy(&info.identity[..end]).into_owned()
        }
        Err(_) => "unknown".to_string(),
    };
    // Rust opens files close-on-exec; this one must reach stage 2.
    let fd = file.as_raw_fd();
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| WatchdogError::Open {
        device: device.to_string(),
        source: std::io::Error::from(e),
    })?;
    let armed = Armed {
        fd,
        device: device.to_string(),
        identity,
        timeout_s: u32::try_from(t).unwrap_or(timeout_s),
    };
    Ok((file, armed))
}

/// Tells the device the machine is alive.
fn keepalive(fd: RawFd) -> nix::Result<()> {
    let mut dummy: std::os::raw::c_int = 0;
    // SAFETY: `fd` is the watchdog descriptor this module owns for the
    // life of the process; `dummy` is a valid int (the kernel ignores it).
    unsafe { wdioc_keepalive(fd, &mut dummy) }.map(|_| ())
}

/// Milliseconds since `origin`, for the atomics below.
fn ms_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Stage 1's petting: a thread that pets while stage 1 makes progress.
/// It dies with the exec of stage 2.
#[derive(Clone, Debug)]
pub struct Stage1Petter {
    origin: Instant,
    last_progress_ms: Arc<AtomicU64>,
    child_running: Arc<AtomicBool>,
}

impl Stage1Petter {
    /// Starts petting `file` (kept open by the thread, and so across the
    /// exec).
    pub fn start(file: File, timeout_s: u32) -> Stage1Petter {
        let petter = Stage1Petter {
            origin: Instant::now(),
            last_progress_ms: Arc::new(AtomicU64::new(0)),
            child_running: Arc::new(AtomicBool::new(false)),
        };
        let p = petter.clone();
        let period = pet_period(timeout_s);
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                let idle =
                    ms_since(p.origin).saturating_sub(p.last_progress_ms.load(Ordering::Relaxed));
                let stalled = idle > u64::try_from(STAGE1_STALL.as_millis()).unwrap_or(u64::MAX);
                if !stalled || p.child_running.load(Ordering::Relaxed) {
                    let _ = keepalive(file.as_raw_fd());
                }
                std::thread::sleep(period);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "watchdog thread not started: the machine will reset");
        }
        petter
    }

    /// Stage 1 moved on (a phase started or ended).
    pub fn progress(&self) {
        self.last_progress_ms
            .store(ms_since(self.origin), Ordering::Relaxed);
    }

    /// Runs `f` (which waits for a child process, e.g. e2fsck) counting it
    /// as progress however long it takes.
    pub fn while_child<T>(&self, f: impl FnOnce() -> T) -> T {
        self.child_running.store(true, Ordering::Relaxed);
        let out = f();
        self.child_running.store(false, Ordering::Relaxed);
        self.progress();
        out
    }
}

/// [`Heartbeat`]'s value before the runtime's first beat.
const NOT_BEATING: u64 = u64::MAX;

/// Stage 2's side: the heartbeat the runtime gives and the thread that pets
/// the device while it is fresh (or before the first beat).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    /// The runtime is alive now.
    pub fn beat(&self) {
        self.last_ms.store(ms_since(self.origin), Ordering::Relaxed);
    }
}

/// Takes over the watchdog stage 1 armed (`armed.fd`, inherited across the
/// exec): the descriptor becomes close-on-exec (no service inherits it)
/// and a thread pets it while the returned heartbeat is fresh.
pub fn adopt(armed: &Armed) -> Result<Heartbeat, WatchdogError> {
    // SAFETY: stage 1 left this descriptor open for stage 2 and nothing
    // else in this process has claimed it; fstat checks it is a character
    // device before it is used.
    let file = unsafe { File::from_raw_fd(armed.fd) };
    let is_char_device = file
        .metadata()
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false);
    if !is_char_device {
        // Not ours to close: give the number back untouched.
        let _ = file.into_raw_fd();
        return Err(WatchdogError::NotAWatchdog(armed.fd));
    }
    let _ = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let beat = Heartbeat {
        origin: Instant::now(),
        last_ms: Arc::new(AtomicU64::new(NOT_BEATING)),
    };
    let b = beat.clone();
    let period = pet_period(armed.timeout_s);
    let stall_ms = u64::from(armed.timeout_s) * u64::from(STALL_FACTOR) * 1000;
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut stalled = false;
            loop {
                let last = b.last_ms.load(Ordering::Relaxed);
                let idle = match last {
                    NOT_BEATING => 0,
                    last => ms_since(b.origin).saturating_sub(last),
                };
                if idle <= stall_ms {
                    if let Err(e) = keepalive(file.as_raw_fd()) {
                        tracing::warn!(error = %e, "watchdog keepalive failed");
                    }
                    stalled = false;
                } else if !stalled {
                    stalled = true;
                    tracing::error!(
                        idle_s = idle / 1000,
                        "init's runtime has not run for too long: no longer petting the watchdog"
                    );
                }
                std::thread::sleep(period);
            }
        })
        .map_err(|source| WatchdogError::Open {
            device: armed.device.clone(),
            source,
        })?;
    Ok(beat)
}

/// How often to pet for a timeout: four times per period, at least 1 s.
fn pet_period(timeout_s: u32) -> Duration {
    Duration::from_millis((u64::from(timeout_s) * 1000 / 4).max(1000))
}

/// Parses `keelson.watchdog=` from the kernel command line words: `off`
/// (or `0`) disables it, `N` (seconds, within [`TIMEOUT_RANGE_S`]) sets
/// the timeout. A bad value keeps the default and is reported.
pub fn parse_setting(text: &str) -> (Setting, Option<String>) {
    let Some(value) = text
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("keelson.watchdog="))
        .next_back()
    else {
        return (Setting::default(), None);
    };
    match value {
        "off" | "0" => (Setting::Off, None),
        v => match v.parse::<u32>() {
            Ok(s) if TIMEOUT_RANGE_S.contains(&s) => (Setting::Timeout(s), None),
            _ => (
                Setting::default(),
                Some(format!(
                    "kernel command line: keelson.watchdog={v:?} is not off or {}..={} seconds; using {DEFAULT_TIMEOUT_S}s",
                    TIMEOUT_RANGE_S.start(),
                    TIMEOUT_RANGE_S.end()
                )),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_command_line_sets_or_disables_the_timeout_and_bad_values_keep_the_default() {
        assert_eq!(
            parse_setting("keelson.slot=A"),
            (Setting::Timeout(60), None)
        );
        assert_eq!(parse_setting("keelson.watchdog=off").0, Setting::Off);
        assert_eq!(parse_setting("keelson.watchdog=0").0, Setting::Off);
        assert_eq!(
            parse_setting("keelson.watchdog=5 keelson.watchdog=30").0,
            Setting::Timeout(30)
        );
        for bad in [
            "keelson.watchdog=4",
            "keelson.watchdog=601",
            "keelson.watchdog=soon",
        ] {
            let (setting, warning) = parse_setting(bad);
            assert_eq!(setting, Setting::Timeout(60), "{bad}");
            let warning = warning.unwrap_or_default();
            assert!(warning.contains("keelson.watchdog="), "{warning}");
        }
    }

    #[test]
    fn petting_is_four_times_a_timeout_and_never_busy() {
        assert_eq!(pet_period(60), Duration::from_secs(15));
        assert_eq!(pet_period(1), Duration::from_secs(1));
    }

    #[test]
    fn a_descriptor_that_is_not_a_device_is_refused_and_left_open() {
        let f = tempfile::tempfile().unwrap();
        let fd = f.as_raw_fd();
        let armed = Armed {
            fd,
            device: "/dev/watchdog0".into(),
            identity: "test".into(),
            timeout_s: 60,
        };
        assert!(matches!(adopt(&armed), Err(WatchdogError::NotAWatchdog(n)) if n == fd));
        // Still open: the File above can use it.
        assert!(f.metadata().is_ok());
    }
}
