//! The EFI partition, mounted read-write (vfat) at a private mount point
//! only for the length of one upgrade operation. One session at a time
//! (a process-wide lock): every change to grubenv and to the upgrade
//! record happens inside a session, so they never interleave.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::mount::MsFlags;

/// Where the EFI partition is mounted during an operation.
pub const EFI_MOUNT: &str = "/run/keelson/upgrade-efi";
/// GPT name of the EFI partition.
pub const EFI_PARTITION: &str = "EFI";
/// grubenv inside the EFI partition (GRUB's prefix is `/grub`).
pub const GRUBENV: &str = "grub/grubenv";

/// Modules the mount may need (FAT and its code pages); those built in or
/// absent are not an error by themselves.
const FAT_MODULES: &[&str] = &["vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1"];

static SESSION: Mutex<()> = Mutex::new(());

/// Why the EFI partition could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum EfiError {
    /// Another operation holds the partition.
    #[error("the EFI partition is in use by another upgrade operation")]
    Busy,
    /// No partition named EFI.
    #[error("partition {EFI_PARTITION} not found (by GPT name in /sys/class/block)")]
    NotFound,
    /// mount(2) failed.
    #[error("mounting the EFI partition {dev} (vfat) on {EFI_MOUNT}: {cause}{modules}")]
    Mount {
        /// The device.
        dev: String,
        /// The mount error.
        cause: String,
        /// Module loading problems met before, if any.
        modules: String,
    },
}

/// A mounted EFI partition; unmounted when dropped.
pub struct EfiSession {
    root: PathBuf,
    mounted: bool,
    _one: MutexGuard<'static, ()>,
}

impl EfiSession {
    /// The partition's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// grubenv's path.
    pub fn grubenv(&self) -> PathBuf {
        self.root.join(GRUBENV)
    }

    /// A session over a directory that stands in for the partition (tests):
    /// nothing is mounted.
    #[cfg(test)]
    pub fn at(dir: &Path) -> EfiSession {
        EfiSession {
            root: dir.to_path_buf(),
            mounted: false,
            _one: exclusive(),
        }
    }
}

impl Drop for EfiSession {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        nix::unistd::sync();
        if let Err(e) = crate::mounts::unmount(&self.root) {
            tracing::warn!(error = %e, "EFI partition busy: detaching it");
            let _ = nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Holds the session lock without mounting (for record-only changes).
pub fn exclusive() -> MutexGuard<'static, ()> {
    SESSION.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mounts the EFI partition read-write for one operation (blocking: waits
/// for another session to end).
pub fn mount() -> Result<EfiSession, EfiError> {
    mount_with(exclusive())
}

/// Like [`mount`], but [`EfiError::Busy`] at once while another session
/// (an upload, for one) holds the partition.
pub fn try_mount() -> Result<EfiSession, EfiError> {
    match SESSION.try_lock() {
        Ok(g) => mount_with(g),
        Err(std::sync::TryLockError::Poisoned(p)) => mount_with(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(EfiError::Busy),
    }
}

/// Loads the FAT filesystem modules (vfat and its code pages); returns
/// the problems, empty when all loaded.
pub fn load_fat_modules() -> Vec<String> {
    let mut problems = Vec::new();
    match crate::kmod::ModuleIndex::running_kernel() {
        Ok(idx) => {
            for m in FAT_MODULES {
                if let Err(e) = idx.load(m, &Default::default()) {
                    problems.push(format!("{m}: {e}"));
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

fn mount_with(one: MutexGuard<'static, ()>) -> Result<EfiSession, EfiError> {
    let part = crate::partitions::find(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        EFI_PARTITION,
    )
    .ok_or(EfiError::NotFound)?;
    let problems = load_fat_modules();
    let root = PathBuf::from(EFI_MOUNT);
    let dev = part.dev.to_string_lossy().into_owned();
    crate::mounts::mount(
        &dev,
        &root,
        "vfat",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|e| EfiError::Mount {
        dev: dev.clone(),
        cause: e.to_string(),
        modules: if problems.is_empty() {
            String::new()
        } else {
            format!(" (modules: {})", problems.join("; "))
        },
    })?;
    tracing::info!(dev = %dev, at = EFI_MOUNT, "EFI partition mounted read-write");
    Ok(EfiSession {
        root,
        mounted: true,
        _one: one,
    })
}
