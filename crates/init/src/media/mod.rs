//! Stage 1's boot media root (`keelson.media=VOLUME_ID
//! keelson.media_sha256=HEX`, set by the ISO's GRUB): find the ISO 9660
//! volume on a CD drive or a USB stick, check its `keelson/media.json`
//! against the command line's hash, copy the root squashfs into RAM and the
//! install payload (the EFI System Partition's files) into a tmpfs, every
//! file checked by the manifest's hash, unmount the media and attach the
//! root to a read-only loop device. The node then runs from RAM: the media
//! can be removed. A missing medium or a bad file is a console line and a
//! retry with backoff, never a panic or a reboot loop.

pub mod iso9660;
pub mod manifest;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cmdline::MediaRoot;
use crate::console;
use crate::mounts;
use manifest::{MediaFile, MediaManifest};

/// Where the root squashfs is copied: the initramfs' own RAM filesystem
/// (the loop device keeps it after stage 1 frees the initramfs).
const ROOT_FILE: &str = "/rootfs.squashfs";
/// Where the media is mounted while stage 1 reads it.
const MEDIA_MOUNT: &str = "/media";
/// Stage 1's tmpfs with the install payload; moved to
/// [`INSTALL_PAYLOAD`] in the new root at the switch.
pub const STAGE1_PAYLOAD: &str = "/install-payload";
/// The install payload as stage 2 sees it: `media.json` and `esp/`.
pub const INSTALL_PAYLOAD: &str = "/run/keelson/install";
/// The manifest's name in the payload directory.
pub const PAYLOAD_MANIFEST: &str = "media.json";
/// The manifest inside the media.
const MANIFEST: &str = "keelson/media.json";
/// The ESP files' base inside the media.
const ESP_BASE: &str = "keelson/esp";
/// Largest manifest read.
const MANIFEST_LIMIT: u64 = 1024 * 1024;
/// First pause after a failed attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Copy buffer.
const CHUNK: usize = 1024 * 1024;

/// What the media boot did, kept in the boot state (and shown by
/// `nodectl health`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The volume id.
    pub volume_id: String,
    /// The block device it was read from.
    pub source: String,
    /// The OS version the media carries.
    pub version: String,
    /// The root's SHA-256, as checked.
    pub sha256: String,
    /// The root's size.
    pub bytes: u64,
    /// The loop device the root is mounted from.
    pub device: String,
    /// Whether the install payload was copied (the node can install).
    pub install_payload: bool,
}

/// Why an attempt failed (printed, then retried).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// No block device carries the volume.
    #[error("no medium with volume id {wanted} (seen: {seen})")]
    NotFound {
        /// The volume id looked for.
        wanted: String,
        /// What was seen, `dev=volume id` or just the device names.
        seen: String,
    },
    /// Reading or copying failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The file or device.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The media could not be mounted.
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    /// The manifest is not the one the command line names.
    #[error("{path}: SHA-256 {actual} but the kernel command line says {expected} (a different or damaged medium)")]
    ManifestHash {
        /// The manifest on the device.
        path: String,
        /// keelson.media_sha256.
        expected: String,
        /// What it hashed to.
        actual: String,
    },
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// A file's bytes are not the manifest's.
    #[error("{path}: {got} (the manifest says {want}): the medium is damaged")]
    FileMismatch {
        /// The file.
        path: String,
        /// What was read.
        got: String,
        /// What the manifest says.
        want: String,
    },
    /// The loop device could not be set up.
    #[error("loop device: {0}")]
    Loop(#[from] crate::loopdev::LoopError),
    /// The install payload's directory could not be made.
    #[error("install payload: {0}")]
    Payload(String),
}

fn io(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> AttemptError {
    let path = path.as_ref().display().to_string();
    move |source| AttemptError::Io { what, path, source }
}

/// Finds the media and attaches the root, retrying until it works;
/// `progress` is called whenever something moved (the watchdog counts
/// it). Returns the loop device to mount and the record.
pub fn bring_up(media: &MediaRoot, progress: &dyn Fn()) -> (PathBuf, MediaRecord) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        progress();
        let started = Instant::now();
        match one_attempt(media, progress) {
            Ok(record) => {
                console::marker(&format!(
                    "media root ok volume={} source={} bytes={} sha256={} install_payload={} attempt={attempt} took_ms={} device={}",
                    record.volume_id,
                    record.source,
                    record.bytes,
                    record.sha256,
                    record.install_payload,
                    started.elapsed().as_millis(),
                    record.device
                ));
                return (PathBuf::from(&record.device), record);
            }
            Err(e) => {
                console::marker(&format!(
                    "media root failed attempt={attempt} error=\"{e}\" retry_in_s={}",
                    backoff.as_secs()
                ));
                let _ = mounts::unmount(Path::new(MEDIA_MOUNT));
                let _ = std::fs::remove_file(ROOT_FILE);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Whole block devices (no partitions, no loop or RAM disks) under
/// `/sys/class/block`, sorted.
fn whole_devices() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The ISO 9660 volume id of `/dev/NAME`, if it has one.
fn volume_of(name: &str) -> Option<String> {
    let f = File::open(Path::new("/dev").join(name)).ok()?;
    let mut buf = vec![0u8; iso9660::PVD_LEN];
    f.read_exact_at(&mut buf, iso9660::PVD_OFFSET).ok()?;
    iso9660::volume_id(&buf)
}

fn one_attempt(media: &MediaRoot, progress: &dyn Fn()) -> Result<MediaRecord, AttemptError> {
    let mut seen = Vec::new();
    let mut source = None;
    for name in whole_devices() {
        match volume_of(&name) {
            Some(v) if v == media.volume_id => {
                source = Some(name);
                break;
            }
            Some(v) => seen.push(format!("{name}={v}")),
            None => seen.push(name),
        }
    }
    let Some(source) = source else {
        return Err(AttemptError::NotFound {
            wanted: media.volume_id.clone(),
            seen: if seen.is_empty() {
                "no block devices".into()
            } else {
                seen.join(", ")
            },
        });
    };
    let dev = format!("/dev/{source}");
    std::fs::create_dir_all(MEDIA_MOUNT).map_err(io("create", MEDIA_MOUNT))?;
    mounts::mount(
        &dev,
        Path::new(MEDIA_MOUNT),
        "iso9660",
        MsFlags::MS_RDONLY,
        None,
    )?;
    let copied = copy_from_media(media, &source, progress);
    let unmounted = mounts::unmount(Path::new(MEDIA_MOUNT));
    let record = copied?;
    unmounted?;
    let device = crate::loopdev::attach_read_only(Path::new(ROOT_FILE))?;
    Ok(MediaRecord {
        device: device.display().to_string(),
        ..record
    })
}

/// Reads and checks the manifest, copies the root and the install payload.
fn copy_from_media(
    media: &MediaRoot,
    source: &str,
    progress: &dyn Fn(),
) -> Result<MediaRecord, AttemptError> {
    let base = Path::new(MEDIA_MOUNT);
    let manifest_path = base.join(MANIFEST);
    let mut bytes = Vec::new();
    File::open(&manifest_path)
        .map_err(io("open", &manifest_path))?
        .take(MANIFEST_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(io("read", &manifest_path))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != media.manifest_sha256 {
        return Err(AttemptError::ManifestHash {
            path: format!("/dev/{source}:{MANIFEST}"),
            expected: media.manifest_sha256.clone(),
            actual,
        });
    }
    let m: MediaManifest = manifest::parse(&bytes)?;
    console::marker(&format!(
        "media found source=/dev/{source} version={} root_bytes={} esp_files={}",
        m.version,
        m.root.size,
        m.esp.len()
    ));
    copy_checked(
        &base.join(&m.root.path),
        Path::new(ROOT_FILE),
        &m.root,
        progress,
    )?;

    // The install payload: a failure here costs the ability to install,
    // not the boot (the node still runs live).
    let install_payload = match copy_payload(&m, &bytes, progress) {
        Ok(()) => true,
        Err(e) => {
            console::marker(&format!(
                "media install payload missing error=\"{e}\": this node can run live but not install"
            ));
            false
        }
    };
    Ok(MediaRecord {
        volume_id: media.volume_id.clone(),
        source: format!("/dev/{source}"),
        version: m.version.clone(),
        sha256: m.root.sha256.clone(),
        bytes: m.root.size,
        device: String::new(),
        install_payload,
    })
}

/// Stage 1's payload directory ([`STAGE1_PAYLOAD`]), a tmpfs mounted on
/// first use (it moves into the new root's `/run` at the switch).
pub fn payload_dir() -> Result<PathBuf, String> {
    let dir = Path::new(STAGE1_PAYLOAD);
    std::fs::create_dir_all(dir).map_err(|e| format!("create {STAGE1_PAYLOAD}: {e}"))?;
    if !mounts::is_mounted(&mounts::current(), dir) {
        mounts::mount(
            "tmpfs",
            dir,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(dir.to_path_buf())
}

/// Where, in the payload directory, the ESP file `path` goes (its parent
/// directories created).
pub fn payload_esp_file(dir: &Path, path: &str) -> Result<PathBuf, String> {
    let to = dir.join("esp").join(path);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    Ok(to)
}

/// Copies the ESP files and the manifest into a fresh tmpfs at
/// [`STAGE1_PAYLOAD`].
fn copy_payload(
    m: &MediaManifest,
    manifest_bytes: &[u8],
    progress: &dyn Fn(),
) -> Result<(), AttemptError> {
    let dir = payload_dir().map_err(AttemptError::Payload)?;
    let dir = dir.as_path();
    let base = Path::new(MEDIA_MOUNT).join(ESP_BASE);
    for f in &m.esp {
        let to = payload_esp_file(dir, &f.path).map_err(AttemptError::Payload)?;
        copy_checked(&base.join(&f.path), &to, f, progress)?;
    }
    let to = dir.join(PAYLOAD_MANIFEST);
    std::fs::write(&to, manifest_bytes).map_err(io("write", &to))?;
    Ok(())
}

/// Copies `from` to `to`, hashing as it goes; refuses (and removes `to`)
/// when the size or hash is not the manifest's.
fn copy_checked(
    from: &Path,
    to: &Path,
    want: &MediaFile,
    progress: &dyn Fn(),
) -> Result<(), AttemptError> {
    let mut src = File::open(from).map_err(io("open", from))?;
    let mut dst = File::create(to).map_err(io("create", to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io("read", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io("write", to))?;
        total += n as u64;
        if total % (64 * CHUNK as u64) < n as u64 {
            progress();
        }
    }
    let actual = hex::encode(hasher.finalize());
    let mismatch = if total != want.size {
        Some((format!("{total} bytes"), format!("{} bytes", want.size)))
    } else if actual != want.sha256 {
        Some((
            format!("SHA-256 {actual}"),
            format!("SHA-256 {}", want.sha256),
        ))
    } else {
        None
    };
    if let Some((got, want)) = mismatch {
        drop(dst);
        let _ = std::fs::remove_file(to);
        return Err(AttemptError::FileMismatch {
            path: from.display().to_string(),
            got,
            want,
        });
    }
    Ok(())
}
