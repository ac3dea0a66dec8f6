//! Reads the ext4 superblock directly, to learn before e2fsck runs whether
//! the journal still needs replay (`needs_recovery`): the honest sign that
//! the previous shutdown was not clean (`dumpe2fs` says "clean" anyway).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Byte offset of the primary superblock.
const SUPERBLOCK_OFFSET: u64 = 1024;
/// Offset of `s_magic` inside the superblock.
const MAGIC_OFFSET: usize = 0x38;
/// Offset of `s_state`.
const STATE_OFFSET: usize = 0x3A;
/// Offset of `s_feature_compat`.
const COMPAT_OFFSET: usize = 0x5C;
/// Offset of `s_feature_incompat`.
const INCOMPAT_OFFSET: usize = 0x60;
/// The ext2/3/4 magic number.
const EXT4_MAGIC: u16 = 0xEF53;
/// `EXT3_FEATURE_COMPAT_HAS_JOURNAL`.
const COMPAT_HAS_JOURNAL: u32 = 0x4;
/// `EXT3_FEATURE_INCOMPAT_RECOVER` (`needs_recovery`).
const INCOMPAT_RECOVER: u32 = 0x4;
/// `EXT4_FEATURE_INCOMPAT_64BIT`.
const INCOMPAT_64BIT: u32 = 0x80;
/// `EXT2_ERROR_FS` bit of `s_state`.
const STATE_ERRORS: u16 = 0x2;

/// Errors reading a superblock.
#[derive(Debug, Error)]
pub enum SuperblockError {
    /// The device could not be read.
    #[error("reading the ext4 superblock of {path}: {source}")]
    Io {
        /// Device or image.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No ext2/3/4 magic where it must be.
    #[error("{path} holds no ext4 filesystem (magic {found:#06x}, want 0xef53)")]
    NotExt4 {
        /// Device or image.
        path: PathBuf,
        /// The value found.
        found: u16,
    },
}

/// What the superblock says about the filesystem's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// The journal holds transactions not yet replayed: the filesystem was
    /// not unmounted cleanly.
    pub needs_recovery: bool,
    /// The filesystem has a journal at all.
    pub has_journal: bool,
    /// The kernel recorded errors on it (`s_state` error bit).
    pub errors_recorded: bool,
    /// Size of the filesystem in bytes (blocks count × block size).
    pub size_bytes: u64,
}

/// Reads the superblock of the ext4 filesystem at byte `offset` of `path`
/// (0 for a partition device).
pub fn read_health(path: &Path, offset: u64) -> Result<Health, SuperblockError> {
    let io = |source| SuperblockError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset + SUPERBLOCK_OFFSET))
        .map_err(io)?;
    let mut sb = [0u8; 1024];
    f.read_exact(&mut sb).map_err(io)?;
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let magic = u16_at(MAGIC_OFFSET);
    if magic != EXT4_MAGIC {
        return Err(SuperblockError::NotExt4 {
            path: path.to_path_buf(),
            found: magic,
        });
    }
    let incompat = u32_at(INCOMPAT_OFFSET);
    let mut blocks = u64::from(u32_at(0x04));
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    let block_size = 1024u64 << (u32_at(0x18) & 0x1f);
    Ok(Health {
        size_bytes: blocks * block_size,
        needs_recovery: u32_at(INCOMPAT_OFFSET) & INCOMPAT_RECOVER != 0,
        has_journal: u32_at(COMPAT_OFFSET) & COMPAT_HAS_JOURNAL != 0,
        errors_recorded: u16_at(STATE_OFFSET) & STATE_ERRORS != 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;
    use std::process::Command;

    /// Makes a real ext4 image with mkfs.ext4 (skips when it is missing).
    fn mkfs(dir: &Path) -> Option<PathBuf> {
        let img = dir.join("fs.img");
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "VAR"])
            .arg(&img)
            .arg("8M")
            .status()
            .ok()?
            .success();
        ok.then_some(img)
    }

    #[test]
    fn a_journal_that_needs_replay_is_seen_and_e2fsck_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let Some(img) = mkfs(dir.path()) else {
            eprintln!("mkfs.ext4 not installed: skipped");
            return;
        };
        let clean = read_health(&img, 0).unwrap();
        assert!(clean.has_journal);
        assert!(!clean.needs_recovery);
        assert!(!clean.errors_recorded);
        assert_eq!(clean.size_bytes, 8 << 20);

        // What a power cut leaves behind: the RECOVER incompat bit set.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&img)
            .unwrap();
        f.seek(SeekFrom::Start(SUPERBLOCK_OFFSET + INCOMPAT_OFFSET as u64))
            .unwrap();
        let mut b = [0u8; 4];
        f.read_exact(&mut b).unwrap();
        let v = u32::from_le_bytes(b) | INCOMPAT_RECOVER;
        f.seek(SeekFrom::Start(SUPERBLOCK_OFFSET + INCOMPAT_OFFSET as u64))
            .unwrap();
        f.write_all(&v.to_le_bytes()).unwrap();
        drop(f);
        assert!(read_health(&img, 0).unwrap().needs_recovery);

        // The same image inside a disk, at an offset.
        let disk = dir.path().join("disk.img");
        let mut content = vec![0u8; 4096];
        content.extend(std::fs::read(&img).unwrap());
        std::fs::write(&disk, content).unwrap();
        assert!(read_health(&disk, 4096).unwrap().needs_recovery);
    }

    #[test]
    fn something_else_than_ext4_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zeros");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let err = read_health(&p, 0).unwrap_err().to_string();
        assert!(err.contains("zeros") && err.contains("no ext4"), "{err}");
        let short = dir.path().join("short");
        std::fs::write(&short, b"x").unwrap();
        assert!(read_health(&short, 0)
            .unwrap_err()
            .to_string()
            .contains("short"));
    }
}
