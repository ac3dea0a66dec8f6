//! Crash-safe file operations for the config store: every file is written
//! to a temporary name in its final directory, fsynced, renamed over the
//! target and the directory fsynced, so a crash leaves either the old or
//! the new file, never a torn one. Temporary names start with `.` and end
//! in `.tmp`; listings skip them and [`clean_temps`] removes leftovers.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Suffix of temporary files (the name is `.<final name>.tmp`).
const TEMP_SUFFIX: &str = ".tmp";

/// Machine configs carry secrets (join tokens, keys): files are root-only.
const FILE_MODE: u32 = 0o600;

/// Whether a directory entry name is one of our temporary files.
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// Writes `bytes` to `path` atomically: temp file in the same directory,
/// fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(|e| StoreError::io("creating", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| StoreError::io("writing", &tmp, e))?;
    file.sync_all()
        .map_err(|e| StoreError::io("syncing", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io("renaming into place", path, e))?;
    sync_dir(dir)
}

/// Removes `path` if it exists (no directory sync; call [`sync_dir`] once
/// after a batch). Returns whether a file was removed.
pub fn remove(path: &Path) -> Result<bool, StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("removing", path, e)),
    }
}

/// Removes `path` and makes the removal durable.
pub fn remove_durable(path: &Path) -> Result<(), StoreError> {
    if remove(path)? {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// fsyncs a directory so renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

/// Creates `dir` (and missing parents) if needed; a newly created
/// directory is made durable by syncing its parent.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("creating directory", dir, e))?;
    sync_dir(parent(dir))
}

/// Removes temporary files a crash left in `dir`; returns the removed paths.
pub fn clean_temps(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(StoreError::io("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        if is_temp(&entry.file_name().to_string_lossy()) {
            let path = entry.path();
            if remove(&path)? {
                removed.push(path);
            }
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Reads a whole file; `Ok(None)` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("reading", path, e)),
    }
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
