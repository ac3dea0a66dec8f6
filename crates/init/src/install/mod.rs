//! The installer: a live node (booted from the ISO or the network,
//! running from RAM)
//! given a config with `machine.install` writes itself to a disk and
//! reboots into it. [`prepare`] does every check first (the disk chosen by
//! the selector, not the media itself, blank or `wipe: true`, large enough,
//! the install payload present): a refusal changes nothing. [`write::run`]
//! then lays out the disk exactly like the raw image (DESIGN.md's GPT: EFI,
//! SYSTEM-A, SYSTEM-B, STATE, VAR; VAR taking the rest of the disk), fills
//! slot A and the EFI partition from what the node booted, stores the
//! config in STATE and writes the partition table last: a power cut at
//! any point before that leaves a disk with no partition table and no
//! signature at its start, which the next install takes without `wipe`.

pub mod disks;
mod probe;
pub mod write;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use disk_layout::{Extent, TooSmall};
use machine_config::install_disk::{self, SelectError};
use machine_config::schema::Install;

use crate::bootstate::BootState;
use crate::media::manifest::{self, MediaManifest};
use crate::media::{INSTALL_PAYLOAD, PAYLOAD_MANIFEST};

/// A node running live, from RAM, that may install: booted from the ISO
/// or from the network.
#[derive(Clone, Debug)]
pub struct LiveBoot {
    /// Where it booted from, for messages (`media KEELSON_0_1_0`,
    /// `http://...`).
    pub from: String,
    /// The boot media's block device, never an install target.
    pub source: Option<String>,
    /// The loop device the root runs from.
    pub root_device: PathBuf,
    /// Whether stage 1 got the install payload.
    pub install_payload: bool,
}

impl LiveBoot {
    /// The live boot this boot state describes, if it is one.
    pub fn of(st: &BootState) -> Option<LiveBoot> {
        if let Some(m) = &st.media {
            return Some(LiveBoot {
                from: format!("media {}", m.volume_id),
                source: Some(m.source.clone()),
                root_device: PathBuf::from(&m.device),
                install_payload: m.install_payload,
            });
        }
        st.net_root.as_ref().map(|r| LiveBoot {
            from: r.url.clone(),
            source: None,
            root_device: PathBuf::from(&r.device),
            install_payload: r.install_payload,
        })
    }
}

/// Why the node will not install (nothing was written), or why an install
/// stopped.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The node has nothing to install from.
    #[error("this node cannot install: {0}")]
    NoPayload(String),
    /// The selector matched no disk, or several.
    #[error("machine.install.disk: {0}")]
    Select(#[from] SelectError),
    /// The selector chose the media the node runs from.
    #[error(
        "machine.install.disk: {disk} is the boot media this node runs from; choose another disk"
    )]
    BootMedia {
        /// The disk.
        disk: String,
    },
    /// The disk (or one of its partitions) is mounted: the node uses it.
    #[error("machine.install.disk: {disk} is in use: {mounts}; nothing was written (a node that runs from this disk cannot install onto it)")]
    InUse {
        /// The disk, described.
        disk: String,
        /// What is mounted where.
        mounts: String,
    },
    /// The disk holds data and `wipe` is not set.
    #[error("machine.install.disk: {disk} holds {found}; nothing was written (set machine.install.wipe: true to erase it)")]
    NotEmpty {
        /// The disk, described.
        disk: String,
        /// What it holds.
        found: String,
    },
    /// The disk is smaller than the layout.
    #[error("machine.install.disk: {disk}: {source}")]
    TooSmall {
        /// The disk.
        disk: String,
        /// Sizes.
        source: TooSmall,
    },
    /// A read, write or system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The file or device.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A step failed (a tool's exit, a mount, a hash).
    #[error("{0}")]
    Step(String),
}

/// An `Io` error builder for `map_err`.
pub(crate) fn io(
    what: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.as_ref().display().to_string();
    move |source| InstallError::Io { what, path, source }
}

/// What the node installs from: the media's manifest, the ESP files stage
/// 1 copied, and the loop device the root runs from.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The media's manifest (the root's size and hash, the ESP files).
    pub manifest: MediaManifest,
    /// The ESP files (`INSTALL_PAYLOAD/esp`).
    pub esp_dir: PathBuf,
    /// The root squashfs (the loop device the live root is mounted from).
    pub root: PathBuf,
}

/// An install, checked and ready to write.
#[derive(Clone, Debug)]
pub struct Target {
    /// The disk.
    pub disk: disks::Disk,
    /// The partitions as they will be.
    pub extents: Vec<Extent>,
    /// What the disk held (erased because `wipe` is set).
    pub erases: Vec<String>,
    /// What is written.
    pub payload: Payload,
}

impl Target {
    /// One line naming the disk for messages.
    pub fn describe(&self) -> String {
        describe(&self.disk)
    }
}

/// `/dev/vdb (vdb 4.0 GiB ... by-id virtio-x)`: a disk named in messages.
fn describe(disk: &disks::Disk) -> String {
    format!(
        "{} ({})",
        disk.dev.display(),
        install_disk::describe(&disk.facts)
    )
}

/// The install payload stage 1 got.
fn payload(live: &LiveBoot) -> Result<Payload, InstallError> {
    if !live.install_payload {
        return Err(InstallError::NoPayload(format!(
            "stage 1 got no install payload from {} (see the boot console; a network boot needs keelson.media_sha256= from `make netboot`)",
            live.from
        )));
    }
    let dir = Path::new(INSTALL_PAYLOAD);
    let path = dir.join(PAYLOAD_MANIFEST);
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let manifest = manifest::parse(&bytes).map_err(|e| InstallError::NoPayload(e.to_string()))?;
    Ok(Payload {
        manifest,
        esp_dir: dir.join("esp"),
        root: live.root_device.clone(),
    })
}

/// The disk's first bytes, for [`probe::contents`].
fn head(dev: &Path) -> Result<Vec<u8>, InstallError> {
    let f = File::open(dev).map_err(io("open", dev))?;
    let mut buf = vec![0u8; probe::HEAD_LEN];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(io("read", dev)(e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The mounts (`/dev/vda4 on /var`) of `disk` or its partitions.
fn in_use(disk: &disks::Disk, table: &[crate::mounts::MountInfo]) -> Vec<String> {
    let dev = disk.dev.display().to_string();
    let mut names: Vec<String> = vec![dev.clone()];
    if let Some(dir) = disk.dev.parent() {
        names.extend(
            disk.partitions
                .iter()
                .map(|p| dir.join(p).display().to_string()),
        );
    }
    table
        .iter()
        .filter(|m| names.contains(&m.source))
        .map(|m| format!("{} on {}", m.source, m.mount_point.display()))
        .collect()
}

/// Every check of an install, with nothing written: the payload, the disk
/// the selector names (under `sys_block`/`dev_dir`), that it is not the
/// boot media, blank unless `wipe`, and large enough.
pub fn prepare(
    install: &Install,
    live: &LiveBoot,
    sys_block: &Path,
    dev_dir: &Path,
) -> Result<Target, InstallError> {
    let payload = payload(live)?;
    let all = disks::scan(sys_block, dev_dir);
    let facts: Vec<_> = all.iter().map(|d| d.facts.clone()).collect();
    let chosen = install_disk::select(&install.disk, &facts)?;
    let Some(disk) = all.iter().find(|d| d.facts.name == chosen.name).cloned() else {
        return Err(InstallError::Step(format!(
            "disk {} vanished while it was chosen",
            chosen.name
        )));
    };
    let described = describe(&disk);
    if live.source.as_deref() == Some(&*disk.dev.display().to_string()) {
        return Err(InstallError::BootMedia { disk: described });
    }
    let in_use = in_use(&disk, &crate::mounts::current());
    if !in_use.is_empty() {
        return Err(InstallError::InUse {
            disk: described,
            mounts: in_use.join(", "),
        });
    }
    let extents = disk_layout::plan(disk.facts.size_bytes, true).map_err(|source| {
        InstallError::TooSmall {
            disk: described.clone(),
            source,
        }
    })?;
    let mut found = probe::contents(&head(&disk.dev)?);
    if !disk.partitions.is_empty() {
        found.push(format!("partitions {}", disk.partitions.join(", ")));
    }
    if !found.is_empty() && !install.wipe {
        return Err(InstallError::NotEmpty {
            disk: described,
            found: found.join(" and "),
        });
    }
    Ok(Target {
        disk,
        extents,
        erases: found,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine_config::install_disk::DiskFacts;

    #[test]
    fn a_disk_with_a_mounted_partition_is_in_use() {
        let disk = disks::Disk {
            facts: DiskFacts {
                name: "vda".into(),
                ..Default::default()
            },
            dev: PathBuf::from("/dev/vda"),
            partitions: vec!["vda4".into(), "vda5".into()],
        };
        let table = crate::mounts::parse_mountinfo(
            "22 1 254:5 / /var rw,relatime shared:1 - ext4 /dev/vda5 rw\n\
             23 1 0:21 / /run rw - tmpfs tmpfs rw\n",
        );
        assert_eq!(in_use(&disk, &table), ["/dev/vda5 on /var"]);
        let other = disks::Disk {
            dev: PathBuf::from("/dev/vdb"),
            partitions: Vec::new(),
            ..disk
        };
        assert!(in_use(&other, &table).is_empty());
    }
}
