//! GRUB's environment block (`grub/grubenv` on the EFI partition): exactly
//! 1024 bytes, the header `# GRUB Environment Block\n`, `key=value\n`
//! lines, padded with `#`. Parsed and written here; written back in place
//! (same file, same clusters: GRUB's `save_env` writes the block's sectors
//! directly and refuses a file it cannot find contiguous blocks for).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The size GRUB requires.
pub const SIZE: usize = 1024;
/// The first line of every block.
pub const HEADER: &str = "# GRUB Environment Block\n";

/// Why a grubenv could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum GrubEnvError {
    /// Reading or writing the file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a GRUB environment block.
    #[error("{path} is not a GRUB environment block: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A variable cannot be stored (bad characters, or the block is full).
    #[error("cannot store {what} in {path}: {reason}")]
    Unstorable {
        /// The variable.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The variables of a block, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrubEnv {
    vars: Vec<(String, String)>,
}

impl GrubEnv {
    /// Parses a block read from `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<GrubEnv, GrubEnvError> {
        let invalid = |reason: String| GrubEnvError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() != SIZE {
            return Err(invalid(format!(
                "it is {} bytes, GRUB needs exactly {SIZE}",
                bytes.len()
            )));
        }
        let Some(body) = bytes.strip_prefix(HEADER.as_bytes()) else {
            return Err(invalid(format!("it does not start with {HEADER:?}")));
        };
        let text = std::str::from_utf8(body).map_err(|e| {
            invalid(format!(
                "not UTF-8 at byte {}",
                HEADER.len() + e.valid_up_to()
            ))
        })?;
        let mut vars: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            // Padding (`#` to the end) and comments carry no variable.
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(invalid(format!("line {line:?} has no '='")));
            };
            match vars.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => vars.push((k.to_string(), v.to_string())),
            }
        }
        Ok(GrubEnv { vars })
    }

    /// A variable's value; an empty value (GRUB's way of clearing
    /// `next_entry`) counts as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Sets `key` (kept in place if present, else appended).
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
    }

    /// Removes `key`.
    pub fn unset(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }

    /// The 1024-byte block (`path` is named in errors).
    pub fn encode(&self, path: &Path) -> Result<Vec<u8>, GrubEnvError> {
        let mut out = String::from(HEADER);
        for (k, v) in &self.vars {
            let bad = |c: char| c == '\n' || c == '\\' || c == '\0';
            if k.is_empty() || k.contains('=') || k.contains(bad) || k.starts_with('#') {
                return Err(GrubEnvError::Unstorable {
                    what: format!("variable name {k:?}"),
                    path: path.to_path_buf(),
                    reason: "names must be non-empty, without '=', '#' first, newline or backslash"
                        .into(),
                });
            }
            if v.contains(bad) {
                return Err(GrubEnvError::Unstorable {
                    what: format!("{k}={v:?}"),
                    path: path.to_path_buf(),
                    reason: "values must not contain a newline or backslash".into(),
                });
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        let mut bytes = out.into_bytes();
        if bytes.len() > SIZE {
            return Err(GrubEnvError::Unstorable {
                what: "the variables".into(),
                path: path.to_path_buf(),
                reason: format!("they take {} bytes, the block holds {SIZE}", bytes.len()),
            });
        }
        bytes.resize(SIZE, b'#');
        Ok(bytes)
    }
}

/// Reads and parses the block at `path`.
pub fn read(path: &Path) -> Result<GrubEnv, GrubEnvError> {
    let mut bytes = Vec::with_capacity(SIZE);
    std::fs::File::open(path)
        .and_then(|f| f.take(SIZE as u64 + 1).read_to_end(&mut bytes))
        .map_err(|source| GrubEnvError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    GrubEnv::parse(path, &bytes)
}

/// Reads the block at `path`, applies `change`, and writes it back in place
/// (no truncation, 1024 bytes at offset 0, fsync). The file must already be
/// a valid block: it is never created here. Returns the new content.
pub fn update(path: &Path, change: impl FnOnce(&mut GrubEnv)) -> Result<GrubEnv, GrubEnvError> {
    let mut env = read(path)?;
    change(&mut env);
    let bytes = env.encode(path)?;
    let io = |op: &'static str| {
        move |source| GrubEnvError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(io("opening"))?;
    f.write_all(&bytes).map_err(io("writing"))?;
    f.sync_all().map_err(io("fsync of"))?;
    tracing::info!(path = %path.display(), vars = ?env.vars, "grubenv updated");
    Ok(env)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn block(lines: &str) -> Vec<u8> {
        let mut b = format!("{HEADER}{lines}").into_bytes();
        b.resize(SIZE, b'#');
        b
    }

    #[test]
    fn reads_what_grub_editenv_writes_including_a_cleared_next_entry() {
        let env = GrubEnv::parse(Path::new("g"), &block("default=A\nnext_entry=\n")).unwrap();
        assert_eq!(env.get("default"), Some("A"));
        assert_eq!(env.get("next_entry"), None, "GRUB clears it to empty");
        assert_eq!(env.get("missing"), None);
    }

    #[test]
    fn refuses_a_wrong_size_or_a_missing_header_naming_the_file() {
        let mut short = block("default=A\n");
        short.truncate(1000);
        let e = GrubEnv::parse(Path::new("/efi/grub/grubenv"), &short).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/efi/grub/grubenv") && msg.contains("1000 bytes"),
            "{msg}"
        );
        let mut nohead = vec![b'#'; SIZE];
        nohead[..10].copy_from_slice(b"default=A\n");
        let msg = GrubEnv::parse(Path::new("/x/grubenv"), &nohead)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/x/grubenv") && msg.contains("GRUB Environment Block"),
            "{msg}"
        );
    }

    #[test]
    fn encoding_is_1024_bytes_padded_and_round_trips() {
        let mut env = GrubEnv::default();
        env.set("default", "A");
        env.set("next_entry", "B");
        env.set("default", "B");
        let bytes = env.encode(Path::new("g")).unwrap();
        assert_eq!(bytes.len(), SIZE);
        assert!(bytes.starts_with(b"# GRUB Environment Block\ndefault=B\nnext_entry=B\n#"));
        assert!(bytes.ends_with(b"####"));
        assert_eq!(GrubEnv::parse(Path::new("g"), &bytes).unwrap(), env);
        env.unset("next_entry");
        let again = GrubEnv::parse(Path::new("g"), &env.encode(Path::new("g")).unwrap()).unwrap();
        assert_eq!(again.get("next_entry"), None);
        assert_eq!(again.get("default"), Some("B"));
    }

    #[test]
    fn refuses_values_that_would_corrupt_or_overflow_the_block() {
        let mut env = GrubEnv::default();
        env.set("default", "A\nnext_entry=B");
        assert!(env.encode(Path::new("g")).is_err());
        let mut env = GrubEnv::default();
        env.set("big", &"x".repeat(SIZE));
        let msg = env.encode(Path::new("g")).unwrap_err().to_string();
        assert!(msg.contains("1024"), "{msg}");
    }

    #[test]
    fn update_rewrites_in_place_keeping_the_inode_and_size() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        std::fs::write(&path, block("default=A\n")).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        update(&path, |e| e.set("next_entry", "B")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.ino(), ino, "same file, not a replacement");
        assert_eq!(meta.len(), SIZE as u64);
        let env = read(&path).unwrap();
        assert_eq!(env.get("next_entry"), Some("B"));
        assert_eq!(env.get("default"), Some("A"));
    }

    #[test]
    fn update_never_creates_or_repairs_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        assert!(update(&path, |e| e.set("default", "B")).is_err());
        assert!(!path.exists());
        std::fs::write(&path, b"default=A\n").unwrap();
        assert!(update(&path, |e| e.set("default", "B")).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"default=A\n");
    }
}
