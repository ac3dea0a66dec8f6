//! Reading a GUID partition table from a raw disk image: partition names,
//! byte offsets and sizes. Only what the harness needs to find `STATE` or
//! `VAR` inside `keelson.raw`; it checks the header signature and its CRC
//! is not needed for reading (the image was written by our own builder).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;

/// One partition of a GPT disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The partition name (GPT label), e.g. `STATE`.
    pub name: String,
    /// Offset of the first byte in the disk image.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Why the partition table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// The image could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The image has no GPT header at LBA 1.
    #[error("{path} has no GPT (no \"EFI PART\" signature at byte 512)")]
    NoGpt {
        /// The image.
        path: PathBuf,
    },
    /// The header's partition entry fields are out of range.
    #[error("{path}: GPT header is malformed: {reason}")]
    Malformed {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No partition has the requested name.
    #[error("{path} has no partition named {name:?} (partitions: {present})")]
    NotFound {
        /// The image.
        path: PathBuf,
        /// The name looked for.
        name: String,
        /// The names that exist.
        present: String,
    },
}

/// Reads every used partition entry of the GPT in a raw disk image.
pub fn read_partitions(image: &Path) -> Result<Vec<Partition>, GptError> {
    let io = |source| GptError::Io {
        path: image.to_path_buf(),
        source,
    };
    let malformed = |reason: String| GptError::Malformed {
        path: image.to_path_buf(),
        reason,
    };
    let mut f = File::open(image).map_err(io)?;
    let mut header = [0u8; 92];
    f.seek(SeekFrom::Start(SECTOR)).map_err(io)?;
    f.read_exact(&mut header).map_err(io)?;
    if &header[0..8] != b"EFI PART" {
        return Err(GptError::NoGpt {
            path: image.to_path_buf(),
        });
    }
    let entries_lba = le_u64(&header[72..80]);
    let count = le_u32(&header[80..84]);
    let entry_size = le_u32(&header[84..88]);
    if !(128..=4096).contains(&entry_size) || count > 1024 {
        return Err(malformed(format!("{count} entries of {entry_size} bytes")));
    }
    let table_len = usize::try_from(u64::from(count) * u64::from(entry_size))
        .map_err(|_| malformed("partition table too large".into()))?;
    let mut table = vec![0u8; table_len];
    let table_offset = entries_lba
        .checked_mul(SECTOR)
        .ok_or_else(|| malformed(format!("entry table LBA {entries_lba} out of range")))?;
    f.seek(SeekFrom::Start(table_offset)).map_err(io)?;
    f.read_exact(&mut table).map_err(io)?;

    let mut parts = Vec::new();
    for entry in table.chunks_exact(entry_size as usize) {
        if entry[0..16].iter().all(|b| *b == 0) {
            continue; // unused entry: zero type GUID
        }
        let first = le_u64(&entry[32..40]);
        let last = le_u64(&entry[40..48]);
        if last < first {
            return Err(malformed(format!(
                "entry ends (LBA {last}) before it starts (LBA {first})"
            )));
        }
        let units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        parts.push(Partition {
            name: String::from_utf16_lossy(&units),
            offset: first * SECTOR,
            size: (last - first + 1) * SECTOR,
        });
    }
    Ok(parts)
}

/// Finds the partition called `name` in a raw disk image.
pub fn find_partition(image: &Path, name: &str) -> Result<Partition, GptError> {
    let parts = read_partitions(image)?;
    let present = parts
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    parts
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| GptError::NotFound {
            path: image.to_path_buf(),
            name: name.to_string(),
            present,
        })
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}
