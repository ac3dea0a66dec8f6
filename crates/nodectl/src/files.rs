//! Writing files the operator's secrets live in: private directories
//! (0700), files with an exact mode (0600 for secrets), never overwriting an
//! existing file unless asked, and never leaving a half-written file behind
//! (write to a temporary file in the same directory, fsync, rename).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of files holding a private key or credentials.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of public material (certificates, public keys, templates).
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of a directory holding secrets.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The files exist and overwriting was not allowed.
    #[error("refusing to overwrite existing {}: pass --force to replace", list(.0))]
    Exists(Vec<PathBuf>),
    /// An I/O call failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done (`create directory`, `write`, ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `dir` (and its parents) if needed; a directory we create gets
/// mode 0700. An existing directory keeps its mode, with a warning when
/// others than its owner may enter it.
pub fn create_private_dir(dir: &Path) -> Result<(), WriteError> {
    if let Ok(meta) = fs::metadata(dir) {
        if meta.is_dir() {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:04o}"),
                    "secrets directory is accessible to other users; consider chmod 700"
                );
            }
            return Ok(());
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|source| WriteError::Io {
            action: "create directory",
            path: dir.to_owned(),
            source,
        })
}

/// Fails with [`WriteError::Exists`] naming every path that already exists,
/// unless `force`. Call it before writing a set of files, so that a refusal
/// changes nothing.
pub fn check_absent(paths: &[PathBuf], force: bool) -> Result<(), WriteError> {
    if force {
        return Ok(());
    }
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .cloned()
        .collect();
    if existing.is_empty() {
        Ok(())
    } else {
        Err(WriteError::Exists(existing))
    }
}

/// Writes `contents` to `path` with exactly `mode`, atomically: a temporary
/// file next to it is written, synced and renamed over `path`. Refuses an
/// existing `path` unless `force`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), WriteError> {
    check_absent(&[path.to_owned()], force)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let io = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| WriteError::Io {
            action,
            path: p,
            source,
        }
    };
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        // The umask may have removed bits from `mode`: set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("set permissions of", &tmp))?;
        file.write_all(contents).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        if let Ok(d) = fs::File::open(&dir) {
            // Best effort: make the rename durable.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    tracing::debug!(path = %path.display(), mode = format!("{mode:o}"), ok = result.is_ok(), "write file");
    result
}
