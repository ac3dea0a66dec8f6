//! Growing VAR to the end of its disk on first boot. The image is smaller
//! than the disk it is written to, so the GPT's backup header sits in the
//! middle of the disk and VAR ends early. Growing is three steps, each safe
//! to repeat after a crash:
//! 1. rewrite the GPT: backup header to the disk's last sector, last usable
//!    LBA updated, VAR's last LBA moved to it (VAR must be the last
//!    partition), protective MBR size fixed;
//! 2. tell the kernel the partition's new size (BLKPG resize: works while
//!    other partitions of the disk are mounted, unlike BLKRRPART);
//! 3. `resize2fs` the filesystem (online, mounted at /var) when it is
//!    smaller than its partition.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors growing a partition.
#[derive(Debug, Error)]
pub enum GrowError {
    /// The disk could not be read or written.
    #[error("{what} {disk}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The disk.
        disk: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The GPT could not be read or written.
    #[error("GPT of {disk}: {source}")]
    Gpt {
        /// The disk.
        disk: PathBuf,
        /// The cause.
        source: gptman::Error,
    },
    /// No partition of that name.
    #[error("no partition named {name} in the GPT of {disk}")]
    NoPartition {
        /// The name looked for.
        name: String,
        /// The disk.
        disk: PathBuf,
    },
    /// Another partition lies after it: growing would overwrite it.
    #[error("partition {name} is not the last on {disk} (partition {after} follows it)")]
    NotLast {
        /// The partition to grow.
        name: String,
        /// The disk.
        disk: PathBuf,
        /// Name of a partition after it.
        after: String,
    },
}

/// What growing the table changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grown {
    /// The partition's number (1-based).
    pub number: u32,
    /// First sector.
    pub start_lba: u64,
    /// Last sector before.
    pub old_end_lba: u64,
    /// Last sector now.
    pub new_end_lba: u64,
    /// Sector size in bytes.
    pub sector_size: u64,
}

/// Step 1: moves the backup GPT to the end of `disk` (a block device or an
/// image file) and extends partition `name` to the last 1 MiB boundary
/// before the last usable sector.
/// `Ok(None)` when there is nothing to do.
pub fn grow_table(
    disk_path: &Path,
    name: &str,
    sector_size: u64,
) -> Result<Option<Grown>, GrowError> {
    let io = |what, source| GrowError::Io {
        what,
        disk: disk_path.to_path_buf(),
        source,
    };
    let gpt_err = |source| GrowError::Gpt {
        disk: disk_path.to_path_buf(),
        source,
    };
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk_path)
        .map_err(|e| io("opening", e))?;
    let mut gpt = gptman::GPT::read_from(&mut disk, sector_size).map_err(gpt_err)?;
    let (number, part) = gpt
        .iter()
        .find(|(_, p)| p.is_used() && p.partition_name.as_str() == name)
        .map(|(n, p)| (n, p.clone()))
        .ok_or_else(|| GrowError::NoPartition {
            name: name.to_string(),
            disk: disk_path.to_path_buf(),
        })?;
    if let Some((_, after)) = gpt
        .iter()
        .find(|(n, p)| *n != number && p.is_used() && p.starting_lba > part.ending_lba)
    {
        return Err(GrowError::NotLast {
            name: name.to_string(),
            disk: disk_path.to_path_buf(),
            after: after.partition_name.as_str().to_string(),
        });
    }
    let mut header = gpt.header.clone();
    header
        .update_from(&mut disk, sector_size)
        .map_err(gpt_err)?;
    let backup_moved = header.backup_lba != gpt.header.backup_lba;
    // End on a 1 MiB boundary, like partitioning tools do.
    let align = (1u64 << 20) / sector_size;
    let new_end = ((header.last_usable_lba + 1) / align * align).saturating_sub(1);
    if !backup_moved && part.ending_lba >= new_end {
        return Ok(None);
    }
    gpt.header = header;
    gpt[number].ending_lba = new_end.max(part.ending_lba);
    gpt.write_into(&mut disk).map_err(gpt_err)?;
    fix_protective_mbr(&mut disk, sector_size)
        .map_err(|e| io("writing the protective MBR of", e))?;
    disk.sync_all().map_err(|e| io("syncing", e))?;
    Ok(Some(Grown {
        number,
        start_lba: part.starting_lba,
        old_end_lba: part.ending_lba,
        new_end_lba: gpt[number].ending_lba,
        sector_size,
    }))
}

/// Sets the size of the protective MBR's 0xEE entry to cover the disk.
fn fix_protective_mbr(disk: &mut File, sector_size: u64) -> std::io::Result<()> {
    let total = disk.seek(SeekFrom::End(0))? / sector_size;
    let mut mbr = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut mbr)?;
    for entry in 0..4 {
        let at = 446 + entry * 16;
        if mbr[at + 4] == 0xEE {
            let size = u32::try_from(total.saturating_sub(1)).unwrap_or(u32::MAX);
            mbr[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
            disk.seek(SeekFrom::Start(0))?;
            disk.write_all(&mbr)?;
            break;
        }
    }
    Ok(())
}

/// `struct blkpg_partition` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `BLKPG_RESIZE_PARTITION`.
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `BLKPG` = `_IO(0x12, 105)` of <linux/fs.h>.
const BLKPG: libc::c_ulong = 0x1269;
nix::ioctl_write_ptr_bad!(blkpg, BLKPG, BlkpgIoctlArg);

/// Step 2: tells the kernel the partition's new extent (PID 1 only).
pub fn resize_in_kernel(disk_path: &Path, grown: &Grown) -> Result<(), GrowError> {
    let io = |source| GrowError::Io {
        what: "BLKPG resize on",
        disk: disk_path.to_path_buf(),
        source,
    };
    if !crate::sys::is_pid1() {
        return Err(io(std::io::Error::from_raw_os_error(libc::EPERM)));
    }
    let disk = File::open(disk_path).map_err(io)?;
    let ss = grown.sector_size as i64;
    let mut part = BlkpgPartition {
        start: grown.start_lba as i64 * ss,
        length: (grown.new_end_lba - grown.start_lba + 1) as i64 * ss,
        pno: grown.number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: BLKPG takes a pointer to a blkpg_ioctl_arg whose data points
    // to a blkpg_partition; both live on this stack frame for the call.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }.map_err(|e| io(e.into()))?;
    Ok(())
}

/// The size in bytes of a block device or file.
pub fn size_of(path: &Path) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::Command;

    fn sfdisk(img: &Path, script: &str) -> bool {
        let mut child = match Command::new("sfdisk")
            .arg("--quiet")
            .arg(img)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => return false,
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    }

    fn dump(img: &Path) -> String {
        let out = Command::new("sfdisk")
            .arg("--dump")
            .arg(img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn var_grows_to_the_end_of_a_bigger_disk_and_the_gpt_stays_valid() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.raw");
        File::create(&img).unwrap().set_len(16 << 20).unwrap();
        if !sfdisk(
            &img,
            "label: gpt\nstart=2048, size=4096, name=EFI\nstart=6144, size=4096, name=STATE\nstart=10240, name=VAR\n",
        ) {
            eprintln!("sfdisk not installed: skipped");
            return;
        }
        let before = dump(&img);
        assert!(before.contains("name=\"VAR\""), "{before}");
        // Nothing to do on the image as built.
        assert_eq!(grow_table(&img, "VAR", 512).unwrap(), None);

        // The image written to a 64 MiB disk.
        File::options()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let grown = grow_table(&img, "VAR", 512).unwrap().unwrap();
        assert_eq!(grown.number, 3);
        assert_eq!(grown.start_lba, 10240);
        let total = (64u64 << 20) / 512;
        let last_usable = total - 34; // 32 entry sectors + the backup header
        assert_eq!((grown.new_end_lba + 1) % 2048, 0, "ends on a MiB boundary");
        assert!(grown.new_end_lba <= last_usable && last_usable - grown.new_end_lba < 2048);
        assert!(grown.new_end_lba > grown.old_end_lba);

        // sfdisk reads it without complaint and sees the new size; running
        // again changes nothing.
        let verify = Command::new("sfdisk")
            .arg("--verify")
            .arg(&img)
            .output()
            .unwrap();
        let v = String::from_utf8_lossy(&verify.stdout).to_string()
            + &String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && !v.to_lowercase().contains("not at the end"),
            "{v}"
        );
        let after = dump(&img);
        let var_line = after.lines().find(|l| l.contains("name=\"VAR\"")).unwrap();
        let size: u64 = var_line
            .split(',')
            .find_map(|f| f.trim().strip_prefix("size="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(size, grown.new_end_lba - 10240 + 1, "{after}");
        assert_eq!(grow_table(&img, "VAR", 512).unwrap(), None);

        // STATE is not last: refused, nothing written.
        let err = grow_table(&img, "STATE", 512).unwrap_err().to_string();
        assert!(err.contains("STATE") && err.contains("VAR"), "{err}");
        assert!(grow_table(&img, "NOPE", 512)
            .unwrap_err()
            .to_string()
            .contains("NOPE"));
    }
}
