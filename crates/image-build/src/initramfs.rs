//! The initramfs (stage 1): `/init` (our static init), the `/.keelson-stage1`
//! marker, `/sbin/e2fsck` (Debian's e2fsck.static), the storage modules with
//! their depmod output, `/dev/console`, and empty `/proc /sys /dev
//! /newroot`; written as deterministic cpio newc and gzip.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use flate2::{Compression, GzBuilder};

use crate::cpio::{Archive, Kind};

/// Inputs of the initramfs.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Our static init binary.
    pub init: &'a Path,
    /// Debian's statically linked e2fsck.
    pub e2fsck_static: &'a Path,
    /// A tree holding `lib/modules/<kver>/…` with the storage modules and
    /// depmod output.
    pub modules_tree: &'a Path,
}

/// Builds the gzip-compressed cpio; returns (compressed bytes, uncompressed
/// size).
pub fn build(inputs: &Inputs<'_>, mtime: u32) -> anyhow::Result<(Vec<u8>, usize)> {
    let mut a = Archive::new();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    a.add("init", 0o755, Kind::File(read(inputs.init)?));
    a.add(".keelson-stage1", 0o644, Kind::File(Vec::new()));
    a.add(
        "sbin/e2fsck",
        0o755,
        Kind::File(read(inputs.e2fsck_static)?),
    );
    a.add_tree(&inputs.modules_tree.join("lib"), "lib")?;
    for d in ["proc", "sys", "dev", "newroot", "run", "tmp"] {
        a.add(d, 0o755, Kind::Dir);
    }
    // The kernel opens /dev/console for PID 1's stdio before /init runs.
    a.add("dev/console", 0o600, Kind::CharDev(5, 1));
    a.add("dev/null", 0o666, Kind::CharDev(1, 3));
    let mut raw = Vec::new();
    a.write(&mut raw, mtime)
        .context("cannot write the initramfs cpio")?;
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), Compression::best());
    gz.write_all(&raw)
        .context("cannot compress the initramfs")?;
    let out = gz.finish().context("cannot compress the initramfs")?;
    Ok((out, raw.len()))
}
