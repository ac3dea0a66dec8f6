//! Finding partitions by GPT partition name through sysfs: every block
//! device's `uevent` (`/sys/class/block/<dev>/uevent`) carries `DEVNAME=`
//! and, for partitions, `PARTNAME=` and `PARTN=`. No udev, no blkid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A partition found in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition name (`STATE`).
    pub name: String,
    /// Kernel device name (`vda4`).
    pub devname: String,
    /// Device node (`/dev/vda4`).
    pub dev: PathBuf,
    /// Partition number on its disk (1-based).
    pub number: u32,
    /// Kernel name of the whole disk (`vda`), if sysfs shows it.
    pub disk: Option<String>,
}

/// Reads `KEY=VALUE` lines of a uevent file.
fn read_uevent(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every named partition visible under `class_block` (normally
/// `/sys/class/block`), device nodes under `dev_dir` (normally `/dev`).
pub fn scan(class_block: &Path, dev_dir: &Path) -> Vec<Partition> {
    let Ok(entries) = std::fs::read_dir(class_block) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let ev = read_uevent(&dir.join("uevent"));
        if ev.get("DEVTYPE").map(String::as_str) != Some("partition") {
            continue;
        }
        let (Some(name), Some(devname)) = (ev.get("PARTNAME"), ev.get("DEVNAME")) else {
            continue;
        };
        // The disk is the parent directory of the partition's real sysfs
        // directory (…/block/vda/vda4).
        let disk = std::fs::canonicalize(&dir).ok().and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        });
        out.push(Partition {
            name: name.clone(),
            devname: devname.clone(),
            dev: dev_dir.join(devname),
            number: ev.get("PARTN").and_then(|n| n.parse().ok()).unwrap_or(0),
            disk,
        });
    }
    out.sort_by(|a, b| a.devname.cmp(&b.devname));
    out
}

/// Finds the first partition with this GPT name.
pub fn find(class_block: &Path, dev_dir: &Path, name: &str) -> Option<Partition> {
    scan(class_block, dev_dir)
        .into_iter()
        .find(|p| p.name == name)
}

/// How long optional partitions may lag behind the required ones.
const OPTIONAL_GRACE: Duration = Duration::from_secs(1);

/// Waits up to `timeout` (polling) until every `required` name is present
/// with its device node, then at most [`OPTIONAL_GRACE`] more for the
/// `optional` ones (partitions of one disk appear together). Returns what
/// was found; missing names are absent and the caller decides what that
/// means.
pub fn wait_for(
    class_block: &Path,
    dev_dir: &Path,
    required: &[&str],
    optional: &[&str],
    timeout: Duration,
) -> BTreeMap<String, Partition> {
    let deadline = Instant::now() + timeout;
    let mut required_since: Option<Instant> = None;
    loop {
        let mut found = BTreeMap::new();
        for p in scan(class_block, dev_dir) {
            let name = p.name.as_str();
            let wanted = required.contains(&name) || optional.contains(&name);
            if wanted && p.dev.exists() && !found.contains_key(name) {
                found.insert(p.name.clone(), p);
            }
        }
        let now = Instant::now();
        if required.iter().all(|n| found.contains_key(*n)) {
            let since = *required_since.get_or_insert(now);
            if optional.iter().all(|n| found.contains_key(*n)) || now >= since + OPTIONAL_GRACE {
                return found;
            }
        }
        if now >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A fake sysfs: devices/…/block/vda/vdaN with class/block symlinks.
    fn fake(root: &Path, parts: &[(&str, u32, &str)]) {
        let class = root.join("sys/class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        let disk = root.join("sys/devices/pci0000:00/virtio1/block/vda");
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::write(
            disk.join("uevent"),
            "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(&disk, class.join("vda")).unwrap();
        for (devname, n, name) in parts {
            let d = disk.join(devname);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("uevent"),
                format!("MAJOR=254\nMINOR={n}\nDEVNAME={devname}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME={name}\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(&d, class.join(devname)).unwrap();
            std::fs::write(root.join("dev").join(devname), b"").unwrap();
        }
    }

    #[test]
    fn partitions_are_found_by_gpt_name_with_their_disk() {
        let t = tempfile::tempdir().unwrap();
        fake(
            t.path(),
            &[
                ("vda1", 1, "EFI"),
                ("vda2", 2, "SYSTEM-A"),
                ("vda3", 3, "SYSTEM-B"),
                ("vda4", 4, "STATE"),
                ("vda5", 5, "VAR"),
            ],
        );
        let class = t.path().join("sys/class/block");
        let dev = t.path().join("dev");
        let var = find(&class, &dev, "VAR").unwrap();
        assert_eq!(var.devname, "vda5");
        assert_eq!(var.dev, dev.join("vda5"));
        assert_eq!(var.number, 5);
        assert_eq!(var.disk.as_deref(), Some("vda"));
        assert!(find(&class, &dev, "SYSTEM").is_none());
        assert_eq!(
            scan(&class, &dev).len(),
            5,
            "the whole disk is not a partition"
        );

        let found = wait_for(
            &class,
            &dev,
            &["SYSTEM-B", "STATE"],
            &["VAR"],
            Duration::from_secs(5),
        );
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["STATE", "SYSTEM-B", "VAR"]
        );
    }

    #[test]
    fn waiting_is_bounded_and_returns_what_appeared() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path(), &[("vda2", 2, "SYSTEM-A")]);
        let class = t.path().join("sys/class/block");
        let dev = t.path().join("dev");
        // A partition whose device node never appears does not count.
        std::fs::remove_file(dev.join("vda2")).unwrap();
        let start = Instant::now();
        let found = wait_for(&class, &dev, &["SYSTEM-A"], &[], Duration::from_millis(300));
        assert!(found.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
