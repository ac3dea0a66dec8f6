//! A GPT writer for plain image files: protective MBR, primary header and
//! entry array at LBA 1–33, backup array and header at the end, CRC32s.
//! GUIDs are derived from a seed so the same inputs give the same bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// Sector size used throughout.
pub const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by one entry array (128 × 128 bytes).
const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// A GUID in its text (RFC 4122) form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guid(pub String);

impl Guid {
    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
    pub fn parse(s: &str) -> anyhow::Result<Guid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || s.len() != 36 {
            bail!("{s:?} is not a GUID");
        }
        Ok(Guid(s.to_ascii_uppercase()))
    }

    /// A version-4-shaped GUID derived from `seed` and `label`.
    pub fn derive(seed: &str, label: &str) -> Guid {
        let h = Sha256::digest(format!("keelson-guid\0{seed}\0{label}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x = hex::encode_upper(b);
        Guid(format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        ))
    }

    /// On-disk (mixed-endian) bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let hex: String = self.0.chars().filter(|c| *c != '-').collect();
        let mut rfc = [0u8; 16];
        for (i, byte) in rfc.iter_mut().enumerate() {
            // Invariant: parse/derive guarantee 32 hex digits.
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        let mut b = rfc;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    /// Lower-case text, as mkfs tools want it.
    pub fn lower(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// One partition.
#[derive(Clone, Debug)]
pub struct Partition {
    /// GPT partition name (e.g. `SYSTEM-A`).
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
}

/// A whole partition table.
#[derive(Clone, Debug)]
pub struct Table {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Partitions in order.
    pub partitions: Vec<Partition>,
    /// Disk size in sectors.
    pub total_sectors: u64,
}

impl Table {
    /// First usable sector.
    pub fn first_usable(&self) -> u64 {
        2 + ARRAY_SECTORS
    }

    /// Last usable sector.
    pub fn last_usable(&self) -> u64 {
        self.total_sectors - 2 - ARRAY_SECTORS
    }

    fn entry_array(&self) -> anyhow::Result<Vec<u8>> {
        if self.partitions.len() as u64 > ENTRIES {
            bail!("too many partitions");
        }
        let mut arr = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            if p.first_lba < self.first_usable()
                || p.last_lba > self.last_usable()
                || p.first_lba > p.last_lba
            {
                bail!(
                    "partition {} ({}..{}) is outside the usable sectors {}..{}",
                    p.name,
                    p.first_lba,
                    p.last_lba,
                    self.first_usable(),
                    self.last_usable()
                );
            }
            let e = &mut arr[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.to_bytes());
            e[16..32].copy_from_slice(&p.guid.to_bytes());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            let name: Vec<u16> = p.name.encode_utf16().collect();
            if name.len() > 36 {
                bail!("partition name {} is longer than 36 UTF-16 units", p.name);
            }
            for (j, u) in name.iter().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        Ok(arr)
    }

    fn header(&self, my_lba: u64, alternate: u64, entries_lba: u64, array_crc: u32) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> [u8; 512] {
        let mut m = [0u8; 512];
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.total_sectors - 1).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes MBR, both headers and both entry arrays into `file` (which
    /// must already be `total_sectors` long).
    pub fn write(&self, file: &File) -> anyhow::Result<()> {
        let arr = self.entry_array()?;
        let crc = crc32fast::hash(&arr);
        let last = self.total_sectors - 1;
        let backup_array = last - ARRAY_SECTORS;
        let writes: [(u64, &[u8]); 5] = [
            (0, &self.protective_mbr()),
            (1, &self.header(1, last, 2, crc)),
            (2, &arr),
            (backup_array, &arr),
            (last, &self.header(last, 1, backup_array, crc)),
        ];
        for (lba, bytes) in writes {
            file.write_all_at(bytes, lba * SECTOR)
                .with_context(|| format!("cannot write the GPT at sector {lba}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use disk_layout::{TYPE_ESP, TYPE_LINUX};

    #[test]
    fn table_reads_back_with_gptman_and_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let total = 64 * 1024 * 1024 / SECTOR;
        let f = File::create(&path).unwrap();
        f.set_len(total * SECTOR).unwrap();
        let part = |name: &str, t: &str, first: u64, last: u64| Partition {
            name: name.into(),
            type_guid: Guid::parse(t).unwrap(),
            guid: Guid::derive("seed", name),
            first_lba: first,
            last_lba: last,
        };
        let table = Table {
            disk_guid: Guid::derive("seed", "disk"),
            partitions: vec![
                part("EFI", TYPE_ESP, 2048, 4095),
                part("SYSTEM-A", TYPE_LINUX, 4096, 8191),
                part("VAR", TYPE_LINUX, 8192, total - 34),
            ],
            total_sectors: total,
        };
        table.write(&f).unwrap();
        drop(f);

        let mut f = File::open(&path).unwrap();
        let g = gptman::GPT::find_from(&mut f).unwrap();
        assert_eq!(g.header.disk_guid, table.disk_guid.to_bytes());
        let names: Vec<String> = g
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(_, p)| p.partition_name.as_str().to_string())
            .collect();
        assert_eq!(names, ["EFI", "SYSTEM-A", "VAR"]);
        assert_eq!(g[2].starting_lba, 4096);
        assert_eq!(g[2].ending_lba, 8191);

        let out = std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let pt = &j["partitiontable"];
        assert_eq!(pt["label"], "gpt");
        assert_eq!(pt["id"], table.disk_guid.0);
        assert_eq!(pt["partitions"][0]["type"], TYPE_ESP);
        assert_eq!(pt["partitions"][0]["name"], "EFI");
        assert_eq!(
            pt["partitions"][1]["uuid"],
            Guid::derive("seed", "SYSTEM-A").0
        );
        assert_eq!(pt["partitions"][2]["size"], total - 34 - 8192 + 1);
        // Warnings (e.g. a bad backup header) go to stderr.
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn derived_guids_are_stable_and_distinct() {
        let a = Guid::derive("s", "EFI");
        assert_eq!(a, Guid::derive("s", "EFI"));
        assert_ne!(a, Guid::derive("s", "VAR"));
        assert_ne!(a, Guid::derive("t", "EFI"));
        assert_eq!(&a.0[14..15], "4");
        assert!(Guid::parse("nope").is_err());
    }
}
