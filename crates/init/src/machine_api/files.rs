//! `Read`: which files may be read through the API (under /proc, /sys,
//! /etc and /var/log, after resolving symlinks, so a link cannot lead
//! outside), and reading one in chunks up to a size cap.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

/// The trees `Read` serves.
pub const ALLOWED: &[&str] = &["/proc", "/sys", "/etc", "/var/log"];
/// The most bytes one `Read` returns.
pub const CAP: usize = 16 << 20;
/// Bytes per streamed chunk.
pub const CHUNK: usize = 64 << 10;

/// Why a path is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Not absolute, or with `..`.
    #[error("{0:?}: give an absolute path without '..'")]
    NotAbsolute(String),
    /// Outside the allowed trees (after resolving links).
    #[error("{path:?} is outside /proc, /sys, /etc and /var/log{resolved}")]
    Outside {
        /// What was asked.
        path: String,
        /// Where it leads, when that differs.
        resolved: String,
    },
    /// It does not exist or cannot be resolved.
    #[error("{path:?}: {error}")]
    Missing {
        /// What was asked.
        path: String,
        /// The cause.
        error: String,
    },
}

/// The real path of `path` if `Read` may serve it.
pub fn allowed(path: &str) -> Result<PathBuf, PathError> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::NotAbsolute(path.to_string()));
    }
    let inside = |p: &Path| ALLOWED.iter().any(|root| p.starts_with(root));
    if !inside(p) {
        return Err(PathError::Outside {
            path: path.to_string(),
            resolved: String::new(),
        });
    }
    let real = std::fs::canonicalize(p).map_err(|e| PathError::Missing {
        path: path.to_string(),
        error: e.to_string(),
    })?;
    // /proc/self and /proc/<pid>/... resolve inside /proc; anything that
    // leaves the trees is refused.
    if !inside(&real) {
        return Err(PathError::Outside {
            path: path.to_string(),
            resolved: format!(" (it leads to {})", real.display()),
        });
    }
    Ok(real)
}

/// Reads up to [`CAP`] bytes of `path` in [`CHUNK`]-sized pieces; the bool
/// says whether the file was cut.
pub fn read_chunks(path: &Path) -> std::io::Result<(Vec<Vec<u8>>, bool)> {
    let mut f = std::fs::File::open(path)?;
    let mut chunks = Vec::new();
    let mut total = 0usize;
    loop {
        let mut buf = vec![0u8; CHUNK.min(CAP - total)];
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((chunks, false));
        }
        buf.truncate(n);
        total += n;
        chunks.push(buf);
        if total >= CAP {
            let mut probe = [0u8; 1];
            let more = f.read(&mut probe)? > 0;
            return Ok((chunks, more));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_the_four_trees_are_served_and_links_cannot_escape() {
        assert!(allowed("/proc/self/status").is_ok());
        assert!(allowed("/proc/sys/kernel/hostname").is_ok());
        assert!(matches!(
            allowed("proc/cpuinfo"),
            Err(PathError::NotAbsolute(_))
        ));
        assert!(matches!(
            allowed("/etc/../root/.ssh/id_rsa"),
            Err(PathError::NotAbsolute(_))
        ));
        assert!(matches!(allowed("/root/x"), Err(PathError::Outside { .. })));
        assert!(matches!(
            allowed("/var/log/does-not-exist-keelson"),
            Err(PathError::Missing { .. })
        ));
        // /proc/self/root is a link to "/": it leads outside.
        let e = allowed("/proc/self/root").unwrap_err();
        assert!(e.to_string().contains("it leads to /"), "{e}");
    }

    #[test]
    fn proc_files_of_size_zero_are_read_whole() {
        let (chunks, cut) = read_chunks(Path::new("/proc/self/status")).unwrap();
        let text = String::from_utf8(chunks.concat()).unwrap();
        assert!(text.contains("VmRSS"));
        assert!(!cut);
    }
}
