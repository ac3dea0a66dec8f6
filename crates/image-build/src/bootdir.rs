//! The boot directory `image-build disk` leaves in `OUT/boot` (kernel,
//! initramfs, root squashfs) as the commands that package it (`bundle`,
//! `netboot`, `iso`) read it: the payloads' paths, the version recorded in
//! `OUT/version.json` next to it, and placing a payload into another
//! directory without copying it when the file system allows.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::bundle::{check_artifacts, PAYLOAD_FILES};

/// Paths of the three payloads of `boot`, in [`PAYLOAD_FILES`] order, after
/// checking each is a file (the error says how to make them).
pub fn payload_paths(boot: &Path) -> anyhow::Result<[PathBuf; 3]> {
    let paths = PAYLOAD_FILES.map(|f| boot.join(f));
    for p in &paths {
        if !p.is_file() {
            bail!(
                "{} is missing: build the image first (`make image`, which writes {}/{{{}}})",
                p.display(),
                boot.display(),
                PAYLOAD_FILES.join(",")
            );
        }
    }
    Ok(paths)
}

/// What `BOOT/../version.json` says about the payloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// Image version (`version`).
    pub version: Option<String>,
    /// Build id (`build_id`).
    pub build_id: Option<String>,
}

/// Version and build id from `BOOT/../version.json`, when the disk build
/// wrote one, after checking it describes these payloads (`hashes`, hex,
/// in [`PAYLOAD_FILES`] order): a stale boot directory is refused. No file
/// gives an empty [`BuildInfo`].
pub fn version_of(boot: &Path, hashes: &[String]) -> anyhow::Result<BuildInfo> {
    let Some(vj) = boot
        .parent()
        .map(|d| d.join("version.json"))
        .filter(|p| p.is_file())
    else {
        return Ok(BuildInfo::default());
    };
    let text = std::fs::read(&vj).with_context(|| format!("cannot read {}", vj.display()))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", vj.display()))?;
    check_artifacts(&vj, &doc, hashes)?;
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(BuildInfo {
        version: field("version"),
        build_id: field("build_id"),
    })
}

/// The image version [`version_of`] found (`version`), checked as an OS
/// version (it names files and is recorded on installed disks). Without
/// one, an error saying `BOOT/../version.json` is missing and what `needs`
/// it.
pub fn required_version(
    boot: &Path,
    version: Option<String>,
    needs: &str,
) -> anyhow::Result<String> {
    let Some(version) = version else {
        bail!(
            "{} has no version.json with a `version` next to it (`make image` writes \
             out/version.json): {needs}",
            boot.display()
        );
    };
    ::bundle::Version::parse("version.json field version", &version)?;
    Ok(version)
}

/// How a payload got into another directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// A hard link to the boot directory's file.
    Linked,
    /// A copy (hard links are impossible there, e.g. another file system).
    Copied,
    /// It already was the boot directory's file (same inode).
    AlreadyThere,
}

/// Makes `dst` the file `src`: a hard link if possible, else a copy.
/// An existing `dst` that is another file is replaced.
pub fn link_or_copy(src: &Path, dst: &Path) -> anyhow::Result<Placed> {
    let from = std::fs::metadata(src).with_context(|| format!("cannot stat {}", src.display()))?;
    if let Ok(to) = std::fs::symlink_metadata(dst) {
        if to.dev() == from.dev() && to.ino() == from.ino() {
            return Ok(Placed::AlreadyThere);
        }
        std::fs::remove_file(dst).with_context(|| format!("cannot remove {}", dst.display()))?;
    }
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(Placed::Linked),
        Err(e) => {
            tracing::debug!(src = %src.display(), error = %e, "no hard link, copying");
            std::fs::copy(src, dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
            Ok(Placed::Copied)
        }
    }
}
