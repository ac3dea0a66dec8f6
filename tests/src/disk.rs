//! Per-test disks and reading partitions after a VM stopped.
//!
//! A test never rebuilds the image to change its config. Instead
//! [`TestDisk::prepare`] makes a sparse raw copy of `out/keelson.raw` in the
//! test's temporary directory, rewrites the copy's `STATE` partition with a
//! fresh ext4 filesystem (label `STATE`) holding the test's config at
//! `config/current.yaml` (whatever else the image had in STATE is kept,
//! except `config/`, which is replaced), and puts a qcow2 overlay on top
//! with a larger virtual size so that VAR can grow. The STATE filesystem is
//! built with `mkfs.ext4 -d DIR -E offset=BYTES` straight into the copy at
//! the partition's offset (found from the GPT): no loop device, no mount.
//!
//! After the VM stops, [`TestDisk::export_raw`] flattens the overlay to a
//! raw image, and [`dumpe2fs_header`] / [`read_file`] read a partition of
//! it through e2fsprogs' `FILE?offset=BYTES` syntax.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{self, CommandError};
use crate::gpt::{self, GptError, Partition};

/// Virtual size of the overlay: room for VAR to grow at first boot.
pub const DEFAULT_DISK_SIZE: u64 = 8 << 30;

/// Preparing or reading a test disk failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The partition table could not be read.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// A host tool failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A file in the work directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// dumpe2fs printed something unexpected.
    #[error("cannot understand `dumpe2fs -h` of {image} partition {partition}: no {field} line")]
    Dumpe2fs {
        /// The image.
        image: PathBuf,
        /// The partition name.
        partition: String,
        /// The line that was missing.
        field: String,
    },
}

/// A disk made for one VM: a raw copy of the image (the overlay's backing
/// file) and a qcow2 overlay the VM writes to.
#[derive(Clone, Debug)]
pub struct TestDisk {
    /// The raw copy with the test's STATE.
    pub raw: PathBuf,
    /// The qcow2 overlay to boot (`VmSpec::disk`).
    pub overlay: PathBuf,
}

impl TestDisk {
    /// Copies `image` into `dir`, writes `config_yaml` (when given) as
    /// STATE's `config/current.yaml`, and creates the overlay of
    /// `virtual_size` bytes (at least the image's size).
    pub fn prepare(
        image: &Path,
        dir: &Path,
        config_yaml: Option<&str>,
        virtual_size: u64,
    ) -> Result<TestDisk, DiskError> {
        let raw = dir.join("disk.raw");
        command::run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(image)
                .arg(&raw),
        )?;
        if let Some(yaml) = config_yaml {
            write_state(&raw, dir, yaml)?;
        }
        let image_size = std::fs::metadata(&raw)
            .map_err(|source| DiskError::Io {
                path: raw.clone(),
                source,
            })?
            .len();
        let overlay = dir.join("overlay.qcow2");
        command::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&raw)
                .arg(&overlay)
                .arg(virtual_size.max(image_size).to_string()),
        )?;
        Ok(TestDisk { raw, overlay })
    }

    /// Flattens the overlay into a raw image at `dest` while the VM may
    /// still run (`qemu-img -U`): a possibly inconsistent snapshot, good
    /// enough to read logs for a failure message.
    pub fn snapshot_raw(&self, dest: &Path) -> Result<PathBuf, DiskError> {
        command::run(
            Command::new("qemu-img")
                .args(["convert", "-U", "-q", "-O", "raw"])
                .arg(&self.overlay)
                .arg(dest),
        )?;
        Ok(dest.to_path_buf())
    }

    /// Flattens the overlay (after the VM stopped) into a raw image at
    /// `dest`, which [`dumpe2fs_header`] and [`read_file`] can read.
    pub fn export_raw(&self, dest: &Path) -> Result<PathBuf, DiskError> {
        command::run(
            Command::new("qemu-img")
                .args(["convert", "-q", "-O", "raw"])
                .arg(&self.overlay)
                .arg(dest),
        )?;
        Ok(dest.to_path_buf())
    }
}

/// Replaces the STATE filesystem of the raw image `raw` with one holding
/// `yaml` at `config/current.yaml` (other content of the old STATE kept).
fn write_state(raw: &Path, work: &Path, yaml: &str) -> Result<(), DiskError> {
    let state = gpt::find_partition(raw, "STATE")?;
    let tree = work.join("state-tree");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiskError::Io { path, source }
    };
    std::fs::create_dir_all(&tree).map_err(io(&tree))?;
    // Keep what the image put in STATE. A STATE that is not ext4 (or empty)
    // has nothing to keep; debugfs then fails and the tree stays empty.
    let spec = partition_spec(raw, &state);
    if command::run(Command::new("debugfs").args(["-R", "stats"]).arg(&spec)).is_ok() {
        command::run(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump / {}", tree.display()))
                .arg(&spec),
        )?;
    }
    let _ = std::fs::remove_dir_all(tree.join("lost+found"));
    let config_dir = tree.join("config");
    let _ = std::fs::remove_dir_all(&config_dir);
    std::fs::create_dir_all(&config_dir).map_err(io(&config_dir))?;
    let current = config_dir.join("current.yaml");
    std::fs::write(&current, yaml).map_err(io(&current))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&current, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&current))?;
    }
    command::run(
        Command::new("mkfs.ext4")
            .args(["-F", "-q", "-L", "STATE", "-d"])
            .arg(&tree)
            .arg("-E")
            .arg(format!("offset={}", state.offset))
            .arg(raw)
            .arg(format!("{}k", state.size / 1024)),
    )?;
    Ok(())
}

/// The `FILE?offset=BYTES` name e2fsprogs tools accept for a partition.
pub fn partition_spec(image: &Path, part: &Partition) -> String {
    format!("{}?offset={}", image.display(), part.offset)
}

/// What `dumpe2fs -h` says about an ext4 filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Header {
    /// The `Filesystem state:` value (`clean`, `not clean`, …).
    pub state: String,
    /// The `Filesystem features:` list.
    pub features: Vec<String>,
}

impl Ext4Header {
    /// True when the journal still needs replaying: the honest sign of an
    /// unclean stop (`state` says `clean` even then, NOTES.md).
    pub fn needs_recovery(&self) -> bool {
        self.features.iter().any(|f| f == "needs_recovery")
    }
}

/// Runs `dumpe2fs -h` on the partition `name` of the raw image `image`.
pub fn dumpe2fs_header(image: &Path, name: &str) -> Result<Ext4Header, DiskError> {
    let part = gpt::find_partition(image, name)?;
    let out = command::run(
        Command::new("dumpe2fs")
            .arg("-h")
            .arg(partition_spec(image, &part)),
    )?;
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .ok_or_else(|| DiskError::Dumpe2fs {
                image: image.to_path_buf(),
                partition: name.to_string(),
                field: key.to_string(),
            })
    };
    Ok(Ext4Header {
        state: field("Filesystem state:")?,
        features: field("Filesystem features:")?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    })
}

/// Reads the file `path` (absolute inside the filesystem) from the ext4
/// partition `name` of the raw image `image`, with `debugfs`.
pub fn read_file(image: &Path, name: &str, path: &str) -> Result<Vec<u8>, DiskError> {
    let part = gpt::find_partition(image, name)?;
    let out = command::output(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(partition_spec(image, &part)),
    )?;
    // debugfs reports a missing file on stderr and exits 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr.lines().find(|l| l.contains("File not found")) {
        return Err(DiskError::Command(CommandError::Failed {
            command: format!("debugfs -R 'cat {path}' {}", partition_spec(image, &part)),
            status: out.status,
            stderr: line.trim().to_string(),
        }));
    }
    Ok(out.stdout)
}
