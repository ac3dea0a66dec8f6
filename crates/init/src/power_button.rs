//! The ACPI power button: the kernel's `button` driver exposes it as an
//! input device named "Power Button" (with `evdev`, as /dev/input/eventN);
//! a press (EV_KEY, KEY_POWER, value 1) is a request to power off. QEMU's
//! `system_powerdown` presses it.
//!
//! Discovery reads `<sys>/class/input/event*/device/name`; reading uses the
//! device's file descriptor in non-blocking mode under tokio's reactor, so
//! [`wait_pressed`] is cancel-safe and can sit in a `select!` next to the
//! signal streams.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The name the ACPI button driver gives the power button.
pub const DEVICE_NAME: &str = "Power Button";
/// `struct input_event` on x86_64: timeval (16), type (2), code (2), value (4).
pub const EVENT_SIZE: usize = 24;
/// `EV_KEY`.
pub const EV_KEY: u16 = 1;
/// `KEY_POWER`.
pub const KEY_POWER: u16 = 116;

/// Why the power button cannot be watched.
#[derive(Debug, Error)]
pub enum PowerButtonError {
    /// No input device is named "Power Button" (the `button` or `evdev`
    /// module is not loaded, or the machine has no ACPI power button).
    #[error("no input device named {DEVICE_NAME:?} under {0}")]
    NoDevice(PathBuf),
    /// The device node could not be opened or registered.
    #[error("opening {path}: {source}")]
    Open {
        /// The device node.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading failed on every device.
    #[error("reading {path}: {source}")]
    Read {
        /// The device node.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One `struct input_event`, without its timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEvent {
    /// Event type (`EV_KEY`, `EV_SYN`, …).
    pub kind: u16,
    /// Event code (`KEY_POWER`, …).
    pub code: u16,
    /// 1 press, 0 release, 2 autorepeat (for keys).
    pub value: i32,
}

impl InputEvent {
    /// Whether this is the power key going down.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Parses whole `input_event` records (native byte order); a trailing
/// partial record is ignored.
pub fn parse_events(buf: &[u8]) -> Vec<InputEvent> {
    buf.chunks_exact(EVENT_SIZE)
        .map(|r| InputEvent {
            kind: u16::from_ne_bytes([r[16], r[17]]),
            code: u16::from_ne_bytes([r[18], r[19]]),
            value: i32::from_ne_bytes([r[20], r[21], r[22], r[23]]),
        })
        .collect()
}

/// The device nodes (`<dev>/input/eventN`) of every input device named
/// "Power Button" under `<sys>/class/input`, sorted.
pub fn find_devices(sys: &Path, dev: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys.join("class/input")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !name.starts_with("event") {
                return None;
            }
            let device_name = std::fs::read_to_string(e.path().join("device/name")).ok()?;
            (device_name.trim() == DEVICE_NAME).then(|| dev.join("input").join(name))
        })
        .collect();
    out.sort();
    out
}

/// Waits until the power button is pressed. Errors when there is no such
/// device (then nothing will ever come: the caller should stop selecting
/// on it) or when no device can be read.
pub async fn wait_pressed() -> Result<(), PowerButtonError> {
    let devices = find_devices(Path::new("/sys"), Path::new("/dev"));
    if devices.is_empty() {
        return Err(PowerButtonError::NoDevice(PathBuf::from(
            "/sys/class/input",
        )));
    }
    let mut files = Vec::new();
    for path in devices {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| PowerButtonError::Open {
                path: path.clone(),
                source,
            })?;
        tracing::info!(device = %path.display(), "watching the power button");
        files.push((path, file));
    }
    wait_on(files).await
}

/// Waits for a power key press on any of `files` (opened non-blocking).
pub async fn wait_on(files: Vec<(PathBuf, File)>) -> Result<(), PowerButtonError> {
    let mut watchers = Vec::new();
    for (path, file) in files {
        // SAFETY: the `File` owns its descriptor, which stays open and the
        // same for as long as the `AsyncFd` owns the `File`.
        let fd =
            unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }.map_err(|e| {
                PowerButtonError::Open {
                    path: path.clone(),
                    source: e.into(),
                }
            })?;
        watchers.push(Box::pin(watch(path, fd)));
    }
    let mut last_err = None;
    while !watchers.is_empty() {
        let (r, _, rest) = futures_util::future::select_all(watchers).await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "power button device lost");
                last_err = Some(e);
                watchers = rest;
            }
        }
    }
    Err(last_err.unwrap_or(PowerButtonError::NoDevice(PathBuf::from(
        "/sys/class/input",
    ))))
}

async fn watch(path: PathBuf, fd: AsyncFd<File>) -> Result<(), PowerButtonError> {
    let mut buf = [0u8; EVENT_SIZE * 16];
    // Bytes of a record cut between two reads (evdev returns whole records,
    // a pipe in tests may not).
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let mut guard = fd
            .readable()
            .await
            .map_err(|source| PowerButtonError::Read {
                path: path.clone(),
                source,
            })?;
        let n = match guard.try_io(|inner| inner.get_ref().read(&mut buf)) {
            Ok(Ok(0)) => {
                return Err(PowerButtonError::Read {
                    path,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(Err(source)) => return Err(PowerButtonError::Read { path, source }),
            Err(_would_block) => continue,
        };
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() - pending.len() % EVENT_SIZE;
        let pressed = parse_events(&pending[..whole])
            .iter()
            .any(InputEvent::is_power_press);
        pending.drain(..whole);
        if pressed {
            tracing::info!(device = %path.display(), "power button pressed");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn record(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut r = vec![0u8; 16]; // timeval
        r[0] = 7;
        r.extend_from_slice(&kind.to_ne_bytes());
        r.extend_from_slice(&code.to_ne_bytes());
        r.extend_from_slice(&value.to_ne_bytes());
        r
    }

    #[test]
    fn records_are_parsed_and_only_a_power_press_counts() {
        let mut buf = record(EV_KEY, KEY_POWER, 1);
        buf.extend(record(0, 0, 0)); // EV_SYN
        buf.extend(record(EV_KEY, KEY_POWER, 0));
        buf.extend([1, 2, 3]); // partial record
        let events = parse_events(&buf);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            InputEvent {
                kind: EV_KEY,
                code: KEY_POWER,
                value: 1
            }
        );
        assert!(events[0].is_power_press());
        assert!(!events[1].is_power_press());
        assert!(!events[2].is_power_press(), "a release is no press");
        assert!(!record_is_press(EV_KEY, 115, 1), "another key");
    }

    fn record_is_press(kind: u16, code: u16, value: i32) -> bool {
        parse_events(&record(kind, code, value))[0].is_power_press()
    }

    #[test]
    fn the_power_button_is_found_by_name_in_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        for (ev, name) in [
            ("event0", "AT Translated Set 2 keyboard"),
            ("event1", "Power Button"),
            ("event3", "Power Button\n"),
        ] {
            let d = sys.join("class/input").join(ev).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), name).unwrap();
        }
        // input1 (not an event node) with the same name is ignored.
        let d = sys.join("class/input/input1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), "Power Button").unwrap();
        let found = find_devices(sys, Path::new("/dev"));
        assert_eq!(
            found,
            vec![
                PathBuf::from("/dev/input/event1"),
                PathBuf::from("/dev/input/event3")
            ]
        );
        assert!(find_devices(&sys.join("nothing"), Path::new("/dev")).is_empty());
    }

    fn nonblocking_pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let r = File::from(r);
        nix::fcntl::fcntl(
            &r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        (r, File::from(w))
    }

    #[tokio::test]
    async fn a_press_ends_the_wait_other_events_do_not() {
        let (r, mut w) = nonblocking_pipe();
        let wait = tokio::spawn(wait_on(vec![(PathBuf::from("pipe"), r)]));
        // A release and another key, the press record cut in two writes.
        w.write_all(&record(EV_KEY, KEY_POWER, 0)).unwrap();
        w.write_all(&record(EV_KEY, 30, 1)).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!wait.is_finished(), "no press yet");
        let press = record(EV_KEY, KEY_POWER, 1);
        w.write_all(&press[..10]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!wait.is_finished(), "half a record is no press");
        w.write_all(&press[10..]).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn a_closed_device_is_an_error_not_a_press() {
        let (r, w) = nonblocking_pipe();
        drop(w);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            wait_on(vec![(PathBuf::from("pipe"), r)]),
        )
        .await
        .unwrap();
        assert!(matches!(r, Err(PowerButtonError::Read { .. })), "{r:?}");
    }
}
