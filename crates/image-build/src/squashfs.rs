//! The SYSTEM squashfs: `mksquashfs` over the root tree with every owner
//! root, every time SOURCE_DATE_EPOCH, no xattrs, zstd compression
//! (decompresses faster than xz under TCG), reproducible output.

use std::path::Path;

use crate::tools::{self, known};

/// Compression used (see the crate README for the xz/zstd measurements).
pub const COMPRESSION: &[&str] = &["-comp", "zstd", "-Xcompression-level", "15"];

/// Makes `out` from `root`.
pub fn make(root: &Path, out: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut cmd = known::MKSQUASHFS.command()?;
    cmd.arg(root)
        .arg(out)
        .args([
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-reproducible",
            "-no-progress",
            "-quiet",
        ])
        .arg("-mkfs-time")
        .arg(epoch.to_string())
        .arg("-all-time")
        .arg(epoch.to_string())
        .args(COMPRESSION);
    tools::run(&mut cmd)?;
    Ok(())
}
