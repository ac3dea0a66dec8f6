//! Writing an install (checked by [`super::prepare`]) to its disk, in an
//! order that survives a power cut: erase the disk's first and last MiB
//! (so nothing old is recognised), write slot A (the root the node runs
//! from, checked by hash as it is copied), blank slot B, make and fill the
//! EFI partition (mkfs.vfat, the media's ESP files), STATE (mke2fs, the
//! config as generation 1) and VAR (mke2fs), each through a loop device
//! over its region, and only then the partition table. Until that last
//! write the disk's start holds zeros: a cut install leaves a blank disk.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use disk_layout::{Extent, ALIGN, SECTOR};
use nix::mount::MsFlags;
use sha2::{Digest, Sha256};

use super::{io, InstallError, Target};
use crate::config_store::{ConfigStore, NewGeneration};
use crate::mounts;
use crate::supervisor::Supervisor;

/// Where the new partitions are mounted while they are filled.
const MOUNT_BASE: &str = "/run/keelson/install-target";
/// Copy buffer.
const CHUNK: usize = 4 * 1024 * 1024;
/// `BLKRRPART`: ask the kernel to read the new partition table.
const BLKRRPART: libc::c_ulong = 0x125F;
/// How long one mkfs may take.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);
/// PATH for the tools.
const TOOL_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Where an install is, for the console and `nodectl events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The phase (`wipe`, `system-a`, `system-b`, `esp`, `state`, `var`,
    /// `partition-table`).
    pub phase: &'static str,
    /// Payload bytes written so far (slot A and the ESP files).
    pub written: u64,
    /// Payload bytes in all.
    pub total: u64,
}

/// Reports progress; called from blocking threads.
pub type Report = Arc<dyn Fn(Progress) + Send + Sync>;

/// Runs a blocking step off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InstallError> + Send + 'static,
) -> Result<T, InstallError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InstallError::Step(format!("install step panicked or was cancelled: {e}")))?
}

/// The extent named `name` (the layout always has it).
fn extent<'a>(t: &'a Target, name: &str) -> Result<&'a Extent, InstallError> {
    t.extents
        .iter()
        .find(|e| e.spec.name == name)
        .ok_or_else(|| InstallError::Step(format!("the layout has no {name} partition")))
}

/// Writes the install: see the module doc. `config` is stored in STATE as
/// generation 1 with `meta`.
pub async fn run(
    t: &Target,
    sup: &Supervisor,
    config: &[u8],
    meta: NewGeneration,
    report: Report,
) -> Result<(), InstallError> {
    let esp_total: u64 = t.payload.manifest.esp.iter().map(|f| f.size).sum();
    let root_total = t.payload.manifest.root.size;
    let total = root_total + esp_total;
    let say = |phase, written| {
        report(Progress {
            phase,
            written,
            total,
        })
    };

    say("wipe", 0);
    let dev = t.disk.dev.clone();
    let size = t.disk.facts.size_bytes;
    blocking(move || {
        let f = open_rw(&dev)?;
        zero(&f, &dev, 0, ALIGN)?;
        zero(&f, &dev, size - ALIGN, ALIGN)?;
        f.sync_all().map_err(io("sync", &dev))
    })
    .await?;

    say("system-a", 0);
    {
        let a = *extent(t, "SYSTEM-A")?;
        let dev = t.disk.dev.clone();
        let root = t.payload.root.clone();
        let want = t.payload.manifest.root.clone();
        let report = Arc::clone(&report);
        blocking(move || {
            copy_root(&root, &dev, &a, &want, &|done| {
                report(Progress {
                    phase: "system-a",
                    written: done,
                    total,
                })
            })
        })
        .await?;
    }

    say("system-b", root_total);
    {
        let b = *extent(t, "SYSTEM-B")?;
        let dev = t.disk.dev.clone();
        blocking(move || {
            let f = open_rw(&dev)?;
            zero(&f, &dev, b.offset, ALIGN)?;
            f.sync_all().map_err(io("sync", &dev))
        })
        .await?;
    }

    say("esp", root_total);
    let volume_id = hex::encode(random_bytes::<4>()?);
    let fat_args = [
        "-F",
        "32",
        "-s",
        "1",
        "-n",
        disk_layout::ESP_LABEL,
        "-i",
        &volume_id,
    ];
    let window = format(t, sup, "EFI", "mkfs.fat", &fat_args).await?;
    for p in crate::upgrade::efi::load_fat_modules() {
        tracing::warn!("install: FAT module {p}");
    }
    let mnt = PathBuf::from(MOUNT_BASE).join("esp");
    {
        let dev = window.dev().to_path_buf();
        let files = t.payload.manifest.esp.clone();
        let from = t.payload.esp_dir.clone();
        let mnt = mnt.clone();
        let report = Arc::clone(&report);
        blocking(move || {
            with_mount(&dev, &mnt, "vfat", || {
                let mut done = root_total;
                std::fs::create_dir_all(mnt.join("B")).map_err(io("create", mnt.join("B")))?;
                for f in &files {
                    let to = mnt.join(&f.path);
                    if let Some(parent) = to.parent() {
                        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
                    }
                    std::fs::copy(from.join(&f.path), &to).map_err(io("copy to", &to))?;
                    File::open(&to)
                        .and_then(|h| h.sync_all())
                        .map_err(io("sync", &to))?;
                    done += f.size;
                    report(Progress {
                        phase: "esp",
                        written: done,
                        total,
                    });
                }
                Ok(())
            })
        })
        .await?;
    }
    drop(window);

    say("state", total);
    let window = format(t, sup, "STATE", "mke2fs", &ext4_args("STATE")).await?;
    {
        let dev = window.dev().to_path_buf();
        let mnt = PathBuf::from(MOUNT_BASE).join("state");
        let config = config.to_vec();
        blocking(move || {
            with_mount(&dev, &mnt, "ext4", || {
                let store = ConfigStore::open(&mnt.join("config"))
                    .map_err(|e| InstallError::Step(format!("config store in STATE: {e}")))?;
                store
                    .commit(&config, meta)
                    .map_err(|e| InstallError::Step(format!("storing the config in STATE: {e}")))?;
                Ok(())
            })
        })
        .await?;
    }
    drop(window);

    say("var", total);
    drop(format(t, sup, "VAR", "mke2fs", &ext4_args("VAR")).await?);

    say("partition-table", total);
    let dev = t.disk.dev.clone();
    let extents = t.extents.clone();
    blocking(move || write_table(&dev, &extents)).await?;
    Ok(())
}

/// Attaches partition `name`'s region to a loop device and makes a
/// filesystem on it with `tool args`; the window stays attached (to be
/// mounted) until dropped.
async fn format(
    t: &Target,
    sup: &Supervisor,
    name: &str,
    tool: &str,
    args: &[&str],
) -> Result<crate::loopdev::Window, InstallError> {
    let e = extent(t, name)?;
    let window = crate::loopdev::Window::attach(&t.disk.dev, e.offset, e.size)
        .map_err(|err| InstallError::Step(format!("{name} partition: {err}")))?;
    mkfs(sup, tool, args, window.dev()).await?;
    Ok(window)
}

/// mke2fs arguments for an ext4 filesystem labelled `label` (as the image
/// builder makes them).
fn ext4_args(label: &str) -> Vec<&str> {
    vec![
        "-t",
        "ext4",
        "-q",
        "-F",
        "-L",
        label,
        "-E",
        "root_owner=0:0,nodiscard",
    ]
}

/// Runs `tool args dev` (from the root's /usr/sbin or /sbin) through the
/// supervisor (its reaper owns every child).
async fn mkfs(sup: &Supervisor, tool: &str, args: &[&str], dev: &Path) -> Result<(), InstallError> {
    let Some(program) = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
    else {
        return Err(InstallError::Step(format!("{tool} is not in the image")));
    };
    let program = program.display().to_string();
    let dev = dev.display().to_string();
    let mut argv = vec![program.as_str()];
    argv.extend_from_slice(args);
    argv.push(&dev);
    let out = sup
        .run_oneshot(&argv, &[("PATH", TOOL_PATH)], MKFS_TIMEOUT)
        .await
        .map_err(|e| InstallError::Step(format!("{tool}: {e}")))?;
    if !out.success() {
        return Err(InstallError::Step(format!(
            "{} on {dev}: {}: {}",
            tool,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Mounts `dev` on `mnt`, runs `f`, unmounts (also after an error).
fn with_mount(
    dev: &Path,
    mnt: &Path,
    fstype: &str,
    f: impl FnOnce() -> Result<(), InstallError>,
) -> Result<(), InstallError> {
    std::fs::create_dir_all(mnt).map_err(io("create", mnt))?;
    mounts::mount(
        &dev.display().to_string(),
        mnt,
        fstype,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|e| InstallError::Step(e.to_string()))?;
    let result = f();
    let unmounted = mounts::unmount(mnt).map_err(|e| InstallError::Step(e.to_string()));
    result.and(unmounted)
}

fn open_rw(dev: &Path) -> Result<File, InstallError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io("open", dev))
}

/// Writes `len` zero bytes at `offset`.
fn zero(f: &File, dev: &Path, offset: u64, len: u64) -> Result<(), InstallError> {
    let buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u64);
        // n <= CHUNK: the slice is in bounds.
        f.write_all_at(&buf[..n as usize], offset + at)
            .map_err(io("write", dev))?;
        at += n;
    }
    Ok(())
}

/// Copies the live root (`root`, the loop device it runs from) into slot
/// A, hashing as it goes; refuses a root whose bytes are not the
/// manifest's.
fn copy_root(
    root: &Path,
    dev: &Path,
    a: &Extent,
    want: &crate::media::manifest::MediaFile,
    progress: &dyn Fn(u64),
) -> Result<(), InstallError> {
    if want.size > a.size {
        return Err(InstallError::Step(format!(
            "the root ({} bytes) does not fit slot A ({} bytes)",
            want.size, a.size
        )));
    }
    let mut src = File::open(root).map_err(io("open", root))?.take(want.size);
    let dst = open_rw(dev)?;
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io("read", root))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all_at(&buf[..n], a.offset + done)
            .map_err(io("write", dev))?;
        done += n as u64;
        progress(done);
    }
    let actual = hex::encode(hasher.finalize());
    if done != want.size || actual != want.sha256 {
        return Err(InstallError::Step(format!(
            "the root read back from {} is {done} bytes with SHA-256 {actual}, not the media's {} bytes with {}",
            root.display(),
            want.size,
            want.sha256
        )));
    }
    dst.sync_all().map_err(io("sync", dev))
}

/// `N` random bytes from the kernel.
fn random_bytes<const N: usize>() -> Result<[u8; N], InstallError> {
    let mut b = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io("read", "/dev/urandom"))?;
    Ok(b)
}

/// A random (version 4) GUID in GPT's byte order.
fn random_guid() -> Result<[u8; 16], InstallError> {
    let mut g = random_bytes::<16>()?;
    g[7] = (g[7] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    Ok(g)
}

/// Writes the GPT (primary, backup, protective MBR) for `extents`, then
/// asks the kernel to read it.
fn write_table(dev: &Path, extents: &[Extent]) -> Result<(), InstallError> {
    let gpt_err =
        |e: gptman::Error| InstallError::Step(format!("partition table on {}: {e}", dev.display()));
    let mut f = open_rw(dev)?;
    let mut gpt = gptman::GPT::new_from(&mut f, SECTOR, random_guid()?).map_err(gpt_err)?;
    for e in extents {
        let type_guid = disk_layout::guid_bytes(e.spec.type_guid).ok_or_else(|| {
            InstallError::Step(format!("bad type GUID {} in the layout", e.spec.type_guid))
        })?;
        gpt[e.number] = gptman::GPTPartitionEntry {
            partition_type_guid: type_guid,
            unique_partition_guid: random_guid()?,
            starting_lba: e.first_lba(),
            ending_lba: e.last_lba(),
            attribute_bits: 0,
            partition_name: e.spec.name.into(),
        };
    }
    gpt.write_into(&mut f).map_err(gpt_err)?;
    gptman::GPT::write_protective_mbr_into(&mut f, SECTOR).map_err(gpt_err)?;
    f.sync_all().map_err(io("sync", dev))?;
    // SAFETY: BLKRRPART takes no argument; the descriptor is open.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART) };
    if r < 0 {
        tracing::warn!(dev = %dev.display(), error = %std::io::Error::last_os_error(), "kernel did not re-read the partition table (it will at the next boot)");
    }
    Ok(())
}
