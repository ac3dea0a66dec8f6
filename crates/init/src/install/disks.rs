//! The disks of this machine as the installer sees them, read from sysfs
//! (`/sys/block`): size, model, serial, WWID, bus, the `/dev/disk/by-id`
//! names udev would give them (the node has no udev), and the partitions
//! the kernel sees on each.

use std::path::{Path, PathBuf};

use machine_config::install_disk::{by_id_names, DiskBus, DiskFacts};

/// A disk and where it is.
#[derive(Clone, Debug)]
pub struct Disk {
    /// What the selector is matched against.
    pub facts: DiskFacts,
    /// Its device node (`/dev/vdb`).
    pub dev: PathBuf,
    /// Partitions the kernel sees on it (`vdb1`, ...).
    pub partitions: Vec<String>,
}

/// Kernel names that are never install targets.
const NOT_DISKS: &[&str] = &["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd"];

fn read(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The unit serial number of a SCSI (or libata) disk: VPD page 0x80, a
/// 4-byte header then the serial.
fn vpd_serial(dir: &Path) -> Option<String> {
    let b = std::fs::read(dir.join("device/vpd_pg80")).ok()?;
    let len = usize::from(*b.get(3)?);
    let s = String::from_utf8_lossy(b.get(4..4 + len)?)
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Every disk under `sys_block` (normally `/sys/block`), device nodes under
/// `dev_dir`, sorted by name.
pub fn scan(sys_block: &Path, dev_dir: &Path) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if NOT_DISKS.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let dir = e.path();
        let sectors: u64 = read(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let real = std::fs::canonicalize(&dir)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let bus = if name.starts_with("vd") {
            DiskBus::Virtio
        } else if name.starts_with("nvme") {
            DiskBus::Nvme
        } else if real.contains("/usb") {
            DiskBus::Usb
        } else if real.contains("/ata") {
            DiskBus::Ata
        } else if name.starts_with("sd") {
            DiskBus::Scsi
        } else {
            DiskBus::Other
        };
        let model = read(&dir.join("device/model"));
        let serial = read(&dir.join("serial"))
            .or_else(|| read(&dir.join("device/serial")))
            .or_else(|| vpd_serial(&dir));
        let wwid = read(&dir.join("wwid")).or_else(|| read(&dir.join("device/wwid")));
        let by_id = by_id_names(bus, model.as_deref(), serial.as_deref(), wwid.as_deref());
        let mut partitions: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|p| p.path().join("partition").exists())
                    .map(|p| p.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        partitions.sort();
        out.push(Disk {
            facts: DiskFacts {
                name: name.clone(),
                size_bytes: sectors * 512,
                model,
                serial,
                by_id,
                removable: read(&dir.join("removable")).as_deref() == Some("1"),
                read_only: read(&dir.join("ro")).as_deref() == Some("1"),
            },
            dev: dev_dir.join(&name),
            partitions,
        });
    }
    out.sort_by(|a, b| a.facts.name.cmp(&b.facts.name));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_virtio_disks_with_serial_and_partitions_and_skips_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        write(sys, "vdb/size", "8388608\n");
        write(sys, "vdb/serial", "keelson-target\n");
        write(sys, "vdb/ro", "0\n");
        write(sys, "vdc/size", "8388608\n");
        write(sys, "vdc/vdc1/partition", "1\n");
        write(sys, "loop0/size", "100\n");
        write(sys, "sr0/size", "100\n");
        let disks = scan(sys, Path::new("/dev"));
        let names: Vec<_> = disks.iter().map(|d| d.facts.name.as_str()).collect();
        assert_eq!(names, ["vdb", "vdc"]);
        assert_eq!(disks[0].facts.size_bytes, 4 << 30);
        assert_eq!(disks[0].facts.serial.as_deref(), Some("keelson-target"));
        assert_eq!(disks[0].facts.by_id, ["virtio-keelson-target"]);
        assert_eq!(disks[0].dev, PathBuf::from("/dev/vdb"));
        assert!(disks[0].partitions.is_empty());
        assert_eq!(disks[1].partitions, ["vdc1"]);
    }
}
