//! Keelson's disk layout: the GPT partitions every Keelson disk has, in
//! order, with their type GUIDs and sizes, and [`plan`], which places them
//! on a disk of a given size (1 MiB aligned, VAR taking the rest). Shared
//! by the image builder (the raw image) and the installer (a real disk) so
//! both make the same disk.

use std::fmt;

/// Bytes in a MiB.
pub const MIB: u64 = 1024 * 1024;
/// Logical sector size the layout is written for.
pub const SECTOR: u64 = 512;
/// Every partition starts and ends on this boundary.
pub const ALIGN: u64 = MIB;
/// Space kept free at the end of the disk for the backup GPT (33 sectors
/// needed; a whole aligned MiB kept).
pub const TAIL: u64 = MIB;

/// GPT type of the EFI System Partition.
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type "Linux filesystem data".
pub const TYPE_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The FAT volume label of the EFI System Partition.
pub const ESP_LABEL: &str = "EFI";

/// One partition of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition name (stage 1 finds partitions by it).
    pub name: &'static str,
    /// GPT partition type GUID (text form).
    pub type_guid: &'static str,
    /// Size in bytes; for the last partition (VAR) the minimum: on a real
    /// disk it takes the rest.
    pub size: u64,
}

/// The partitions in disk order. The raw image uses exactly these sizes;
/// an installed disk gives VAR the rest of the disk.
pub const PARTITIONS: &[PartitionSpec] = &[
    PartitionSpec {
        name: "EFI",
        type_guid: TYPE_ESP,
        size: 128 * MIB,
    },
    PartitionSpec {
        name: "SYSTEM-A",
        type_guid: TYPE_LINUX,
        size: 512 * MIB,
    },
    PartitionSpec {
        name: "SYSTEM-B",
        type_guid: TYPE_LINUX,
        size: 512 * MIB,
    },
    PartitionSpec {
        name: "STATE",
        type_guid: TYPE_LINUX,
        size: 64 * MIB,
    },
    PartitionSpec {
        name: "VAR",
        type_guid: TYPE_LINUX,
        size: 1024 * MIB,
    },
];

/// A partition placed on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The partition.
    pub spec: PartitionSpec,
    /// 1-based GPT entry number.
    pub number: u32,
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Extent {
    /// First sector.
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }

    /// Last sector (inclusive, as GPT stores it).
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// The disk is too small for the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the disk holds {} but the layout needs at least {}", Size(*.have), Size(*.need))]
pub struct TooSmall {
    /// The disk's size in bytes.
    pub have: u64,
    /// The smallest disk the layout fits.
    pub need: u64,
}

/// The smallest disk the layout fits: the leading MiB (protective MBR and
/// primary GPT), every partition at its size, and the tail.
pub fn min_disk_bytes() -> u64 {
    ALIGN + PARTITIONS.iter().map(|p| p.size).sum::<u64>() + TAIL
}

/// Places the layout on a disk of `disk_bytes`: the partitions back to
/// back from 1 MiB, every one aligned, the last (VAR) growing to the last
/// whole MiB before the tail. `fill_last: false` keeps VAR at its own size
/// (the raw image, grown on first boot).
pub fn plan(disk_bytes: u64, fill_last: bool) -> Result<Vec<Extent>, TooSmall> {
    let need = min_disk_bytes();
    if disk_bytes < need {
        return Err(TooSmall {
            have: disk_bytes,
            need,
        });
    }
    let end = (disk_bytes - TAIL) / ALIGN * ALIGN;
    let mut out = Vec::with_capacity(PARTITIONS.len());
    let mut offset = ALIGN;
    for (i, spec) in PARTITIONS.iter().enumerate() {
        let last = i + 1 == PARTITIONS.len();
        let size = if last && fill_last {
            end - offset
        } else {
            spec.size
        };
        out.push(Extent {
            spec: *spec,
            // At most five partitions: the index always fits.
            number: u32::try_from(i + 1).unwrap_or(u32::MAX),
            offset,
            size,
        });
        offset += size;
    }
    Ok(out)
}

/// A GUID's 16 bytes as GPT stores them (the first three fields little
/// endian), from its text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let dashes = text.chars().filter(|c| *c == '-').count();
    if hex.len() != 32 || dashes != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// A byte count shown in binary units (`1.5 GiB`).
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_raw_image_layout_is_the_design_s() {
        let p = plan(min_disk_bytes(), false).unwrap();
        let names: Vec<_> = p.iter().map(|e| e.spec.name).collect();
        assert_eq!(names, ["EFI", "SYSTEM-A", "SYSTEM-B", "STATE", "VAR"]);
        assert_eq!(p[0].offset, MIB);
        assert_eq!(p[4].size, 1024 * MIB);
        assert_eq!(p[0].first_lba(), 2048);
    }

    #[test]
    fn a_small_disk_is_refused_with_both_sizes() {
        let e = plan(2 * 1024 * MIB, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the disk holds 2.0 GiB but the layout needs at least 2.2 GiB"
        );
    }

    #[test]
    fn guid_bytes_are_mixed_endian() {
        let b = guid_bytes(TYPE_ESP).unwrap();
        assert_eq!(&b[..4], &[0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(&b[8..], &[0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
        assert!(guid_bytes("not-a-guid").is_none());
    }

    proptest! {
        #[test]
        fn every_plan_is_aligned_ordered_and_inside_the_disk(
            extra in 0u64..(1u64 << 44), fill in any::<bool>()
        ) {
            let disk = min_disk_bytes() + extra;
            let p = plan(disk, fill).unwrap();
            let mut end = ALIGN;
            for e in &p {
                prop_assert_eq!(e.offset % ALIGN, 0);
                prop_assert_eq!(e.size % ALIGN, 0);
                prop_assert_eq!(e.offset, end);
                prop_assert!(e.size >= e.spec.size);
                end = e.offset + e.size;
            }
            prop_assert!(end + TAIL <= disk);
            if fill {
                prop_assert!(disk - TAIL - end < ALIGN);
            }
        }
    }
}
