//! What a disk already holds, read from its first bytes: partition tables
//! and filesystem or volume signatures, each described so the installer
//! can say what it refuses to overwrite. Pure: the caller reads the bytes.

/// How many bytes from the start of the disk [`contents`] looks at.
pub const HEAD_LEN: usize = 128 * 1024;

/// `(offset, magic, what)` of signatures found at a fixed offset.
const MAGICS: &[(usize, &[u8], &str)] = &[
    (0, b"hsqs", "a squashfs filesystem"),
    (0, b"XFSB", "an XFS filesystem"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (512, b"LABELONE", "an LVM physical volume"),
    (4086, b"SWAPSPACE2", "a swap area"),
    (0x8001, b"CD001", "an ISO 9660 filesystem"),
    (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
    (0x1000, b"\xfc\x4e\x2b\xa9", "a Linux RAID member"),
];

/// Descriptions of what `head` (the disk's first bytes, up to
/// [`HEAD_LEN`]) holds; empty for a blank disk.
pub fn contents(head: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let at = |off: usize, len: usize| head.get(off..off + len);
    if at(512, 8) == Some(b"EFI PART") {
        found.push("a GPT partition table".to_string());
    } else if at(510, 2) == Some(&[0x55, 0xAA]) && mbr_has_partitions(head) {
        found.push("an MBR partition table".to_string());
    }
    // ext2/3/4: magic 0xEF53 at 1024 + 56, volume name at 1024 + 120.
    if at(1080, 2) == Some(&[0x53, 0xEF]) {
        let label = at(1144, 16)
            .map(|b| {
                String::from_utf8_lossy(b)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default();
        found.push(if label.is_empty() {
            "an ext4 filesystem".to_string()
        } else {
            format!("an ext4 filesystem labelled {label:?}")
        });
    }
    if at(510, 2) == Some(&[0x55, 0xAA])
        && (at(82, 5) == Some(b"FAT32") || at(54, 3) == Some(b"FAT"))
    {
        found.push("a FAT filesystem".to_string());
    }
    for (off, magic, what) in MAGICS {
        if at(*off, magic.len()) == Some(*magic) {
            found.push((*what).to_string());
        }
    }
    found
}

/// Whether an MBR's four entries hold any partition (a FAT boot sector
/// also ends in 0x55AA; its "entries" are code and data, so a partition
/// counts only with a type and a non-zero size).
fn mbr_has_partitions(head: &[u8]) -> bool {
    (0..4).any(|i| {
        let e = 446 + 16 * i;
        let Some(entry) = head.get(e..e + 16) else {
            return false;
        };
        let kind = entry[4];
        let sectors = u32::from_le_bytes([entry[12], entry[13], entry[14], entry[15]]);
        kind != 0 && sectors != 0 && (entry[0] == 0 || entry[0] == 0x80)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; HEAD_LEN]
    }

    #[test]
    fn a_blank_disk_holds_nothing() {
        assert!(contents(&blank()).is_empty());
        assert!(contents(&[]).is_empty());
    }

    #[test]
    fn names_an_ext4_filesystem_with_its_label() {
        let mut d = blank();
        d[1080] = 0x53;
        d[1081] = 0xEF;
        assert_eq!(contents(&d), ["an ext4 filesystem"]);
        d[1144..1148].copy_from_slice(b"data");
        assert_eq!(contents(&d), ["an ext4 filesystem labelled \"data\""]);
    }

    #[test]
    fn names_partition_tables() {
        let mut gpt = blank();
        gpt[510] = 0x55;
        gpt[511] = 0xAA;
        gpt[446 + 4] = 0xEE;
        gpt[446 + 12] = 1;
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(contents(&gpt), ["a GPT partition table"]);
        gpt[512..520].fill(0);
        assert_eq!(contents(&gpt), ["an MBR partition table"]);
        // A boot signature with empty entries is not a partition table.
        gpt[446 + 4] = 0;
        assert!(contents(&gpt).is_empty());
    }

    #[test]
    fn names_other_signatures() {
        let mut d = blank();
        d[0x8001..0x8006].copy_from_slice(b"CD001");
        d[0..4].copy_from_slice(b"XFSB");
        assert_eq!(
            contents(&d),
            ["an XFS filesystem", "an ISO 9660 filesystem"]
        );
    }
}
