//! Attaching a file to a free loop device, read-only, so the squashfs
//! fetched into RAM can be mounted like a partition.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `LOOP_CTL_GET_FREE` (linux/loop.h): the index of a free loop device,
/// created if needed.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_SET_FD` (linux/loop.h): back the device with an open file (an
/// O_RDONLY file makes a read-only device).
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
/// How long the device node may take to appear in devtmpfs.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// Why no loop device could be attached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// `/dev/loop-control` is missing (the loop driver is not loaded).
    #[error("open /dev/loop-control (is the loop driver in the initramfs?): {0}")]
    Control(#[source] std::io::Error),
    /// The kernel found no free device.
    #[error("no free loop device: {0}")]
    NoFree(#[source] std::io::Error),
    /// The device or the file could not be opened, or attached.
    #[error("{what} {path}: {source}")]
    Attach {
        /// The step.
        what: &'static str,
        /// The device or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Attaches `file` to a free loop device, read-only; returns the device
/// (`/dev/loopN`). The device keeps the file alive after it is closed and
/// unlinked.
pub fn attach_read_only(file: &Path) -> Result<PathBuf, LoopError> {
    let control = File::open("/dev/loop-control").map_err(LoopError::Control)?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index or -1;
    // the descriptor is open for the duration of the call.
    let index = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if index < 0 {
        return Err(LoopError::NoFree(std::io::Error::last_os_error()));
    }
    let dev = PathBuf::from(format!("/dev/loop{index}"));
    fn attach(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LoopError {
        let path = path.to_path_buf();
        move |source| LoopError::Attach { what, path, source }
    }
    let deadline = Instant::now() + NODE_WAIT;
    while !dev.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let device = OpenOptions::new()
        .read(true)
        .open(&dev)
        .map_err(attach("open", &dev))?;
    let backing = File::open(file).map_err(attach("open", file))?;
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value; both
    // descriptors are open for the duration of the call.
    let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
    if r < 0 {
        return Err(attach("attach to", &dev)(std::io::Error::last_os_error()));
    }
    Ok(dev)
}
