//! Loop devices: a file attached read-only so the squashfs stage 1 copied
//! into RAM (network or boot media) mounts like a partition, and a region
//! of a disk attached read-write so the installer can make and fill
//! filesystems before the disk has a partition table.

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
/// `LOOP_CLR_FD`: detach the backing file.
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
/// `LOOP_SET_STATUS64`: offset and size limit of the window.
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
/// How long the device node may take to appear in devtmpfs.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// `struct loop_info64` of linux/loop.h (the libc crate does not have it).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// Why no loop device could be attached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// `/dev/loop-control` is missing (the loop driver is not loaded).
    #[error("open /dev/loop-control (is the loop driver loaded?): {0}")]
    Control(#[source] std::io::Error),
    /// The kernel found no free device.
    #[error("no free loop device: {0}")]
    NoFree(#[source] std::io::Error),
    /// The device or the file could not be opened, attached or windowed.
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

fn attach_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LoopError {
    let path = path.to_path_buf();
    move |source| LoopError::Attach { what, path, source }
}

/// A free loop device's node, opened read-write when `writable` (the
/// kernel makes a device attached through a read-only descriptor
/// read-only).
fn free_device(writable: bool) -> Result<(PathBuf, File), LoopError> {
    let control = File::open("/dev/loop-control").map_err(LoopError::Control)?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index or -1;
    // the descriptor is open for the duration of the call.
    let index = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if index < 0 {
        return Err(LoopError::NoFree(std::io::Error::last_os_error()));
    }
    let dev = PathBuf::from(format!("/dev/loop{index}"));
    let deadline = Instant::now() + NODE_WAIT;
    while !dev.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let device = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&dev)
        .map_err(attach_err("open", &dev))?;
    Ok((dev, device))
}

fn set_fd(dev: &Path, device: &File, backing: &File) -> Result<(), LoopError> {
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value; both
    // descriptors are open for the duration of the call.
    let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
    if r < 0 {
        return Err(attach_err("attach to", dev)(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Attaches `file` to a free loop device, read-only; returns the device
/// (`/dev/loopN`). The device keeps the file alive after it is closed and
/// unlinked, and stays attached for the life of the system.
pub fn attach_read_only(file: &Path) -> Result<PathBuf, LoopError> {
    let (dev, device) = free_device(false)?;
    let backing = File::open(file).map_err(attach_err("open", file))?;
    set_fd(&dev, &device, &backing)?;
    Ok(dev)
}

/// A loop device over a window of a file or disk, detached when dropped
/// (after whatever was mounted from it is unmounted).
#[derive(Debug)]
pub struct Window {
    dev: PathBuf,
    device: File,
}

impl Window {
    /// Attaches bytes `offset .. offset + size` of `file`, read-write.
    pub fn attach(file: &Path, offset: u64, size: u64) -> Result<Window, LoopError> {
        let (dev, device) = free_device(true)?;
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .map_err(attach_err("open", file))?;
        set_fd(&dev, &device, &backing)?;
        let window = Window { dev, device };
        let info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which
        // `LoopInfo64` lays out exactly (repr(C)); it lives across the call.
        let r = unsafe {
            libc::ioctl(
                window.device.as_raw_fd(),
                LOOP_SET_STATUS64,
                &info as *const LoopInfo64,
            )
        };
        if r < 0 {
            return Err(attach_err("set the window of", &window.dev)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(window)
    }

    /// The device node (`/dev/loopN`).
    pub fn dev(&self) -> &Path {
        &self.dev
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is open.
        let r = unsafe { libc::ioctl(self.device.as_raw_fd(), LOOP_CLR_FD) };
        if r < 0 {
            tracing::warn!(dev = %self.dev.display(), error = %std::io::Error::last_os_error(), "loop device not detached");
        }
    }
}
