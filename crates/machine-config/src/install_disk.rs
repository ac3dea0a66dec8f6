//! Choosing the install disk (`machine.install.disk`) from facts the node
//! gathered about its disks.
//!
//! This module owns the decision, not the gathering: the installer reads
//! each disk's name, size, model, serial and flags from sysfs, names its
//! `/dev/disk/by-id` links with [`by_id_names`] (a node has no udev, so
//! there are no such links to read), and calls [`select`]. Everything
//! here is pure, so every rule is tested without a disk.
//!
//! The rules:
//! - a path `/dev/NAME` matches the disk named `NAME` (`vda`, `nvme0n1`);
//!   `/dev/disk/by-id/NAME` matches the disk with that by-id name; no
//!   other path can match;
//! - a selector matches a disk when every field it gives matches: `size`
//!   by its comparison, `model` and `serial` equal after trimming spaces
//!   on both sides, `byId` one of the disk's by-id names;
//! - a read-only disk never matches (the error says so when that is why
//!   nothing did);
//! - exactly one disk must match: none or several is an error that lists
//!   what the node saw, so the operator can fix the config.

use crate::schema::{DiskSelector, DiskTarget};

/// Where by-id links live; a path below it names a by-id name.
pub const BY_ID_DIR: &str = "/dev/disk/by-id/";

/// What the node knows about one whole disk (not a partition).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskFacts {
    /// Kernel name, without `/dev/` (`vda`, `sda`, `nvme0n1`).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Model as the kernel reports it (may carry padding spaces).
    pub model: Option<String>,
    /// Serial number as the kernel reports it.
    pub serial: Option<String>,
    /// Names of its `/dev/disk/by-id` links, without the directory
    /// (`virtio-keelson-root`); see [`by_id_names`].
    pub by_id: Vec<String>,
    /// A removable medium (USB stick, card reader).
    pub removable: bool,
    /// Read-only (`/sys/block/NAME/ro`): never chosen.
    pub read_only: bool,
}

/// Why no single disk was chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// No writable disk matches.
    #[error("{}", no_match_message(wanted, candidates, read_only))]
    NoMatch {
        /// The target, as written (`/dev/vdb`, `size >= 8GiB`).
        wanted: String,
        /// Every disk seen, described by [`describe`].
        candidates: Vec<String>,
        /// Names of read-only disks that would match otherwise.
        read_only: Vec<String>,
    },
    /// More than one writable disk matches.
    #[error(
        "install disk {wanted} matches {} disks: {}; narrow the selector",
        matches.len(),
        matches.join(", ")
    )]
    Ambiguous {
        /// The target, as written.
        wanted: String,
        /// Names of the matching disks (`vdb`, `vdc`).
        matches: Vec<String>,
    },
}

fn no_match_message(wanted: &str, candidates: &[String], read_only: &[String]) -> String {
    let mut msg = format!("no writable disk matches install disk {wanted}");
    match read_only {
        [] => {}
        [one] => msg.push_str(&format!(" ({one} matches but is read-only)")),
        many => msg.push_str(&format!(" ({} match but are read-only)", many.join(", "))),
    }
    if candidates.is_empty() {
        msg.push_str("; the node sees no disk at all");
    } else {
        msg.push_str("; disks seen: ");
        msg.push_str(&candidates.join("; "));
    }
    msg
}

/// One line about a disk for an operator: name, size (binary units, one
/// decimal), then model, serial and by-id names when known, and flags:
/// `vda 20.0 GiB model "QEMU" serial "x" by-id virtio-x`.
pub fn describe(d: &DiskFacts) -> String {
    let mut out = format!("{} {}", d.name, human_size(d.size_bytes));
    if let Some(model) = &d.model {
        out.push_str(&format!(" model {:?}", model.trim()));
    }
    if let Some(serial) = &d.serial {
        out.push_str(&format!(" serial {:?}", serial.trim()));
    }
    if !d.by_id.is_empty() {
        out.push_str(&format!(" by-id {}", d.by_id.join(",")));
    }
    if d.removable {
        out.push_str(" removable");
    }
    if d.read_only {
        out.push_str(" read-only");
    }
    out
}

/// `20.0 GiB`, `512.0 MiB`, `1.5 TiB`, `100 B`: rounded to one decimal.
fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, factor) in UNITS {
        if bytes >= factor {
            let f = u128::from(factor);
            let tenths = (u128::from(bytes) * 10 + f / 2) / f;
            return format!("{}.{} {unit}", tenths / 10, tenths % 10);
        }
    }
    format!("{bytes} B")
}

/// Whether `d` has what `target` asks for (read-only or not).
fn wanted_by(target: &DiskTarget, d: &DiskFacts) -> bool {
    match target {
        DiskTarget::Path(path) => match path.strip_prefix(BY_ID_DIR) {
            Some(id) => d.by_id.iter().any(|b| b == id),
            None => path
                .strip_prefix("/dev/")
                .is_some_and(|name| !name.contains('/') && name == d.name),
        },
        DiskTarget::Selector(sel) => selector_matches(sel, d),
    }
}

fn selector_matches(sel: &DiskSelector, d: &DiskFacts) -> bool {
    let same = |want: &Option<String>, have: &Option<String>| match want {
        None => true,
        Some(w) => have.as_deref().is_some_and(|h| h.trim() == w.trim()),
    };
    sel.size.is_none_or(|s| s.matches(d.size_bytes))
        && same(&sel.model, &d.model)
        && same(&sel.serial, &d.serial)
        && sel
            .by_id
            .as_ref()
            .is_none_or(|id| d.by_id.iter().any(|b| b == id))
}

/// The one writable disk of `disks` that `target` names or selects.
pub fn select<'a>(
    target: &DiskTarget,
    disks: &'a [DiskFacts],
) -> Result<&'a DiskFacts, SelectError> {
    let (writable, read_only): (Vec<&DiskFacts>, Vec<&DiskFacts>) = disks
        .iter()
        .filter(|d| wanted_by(target, d))
        .partition(|d| !d.read_only);
    match writable.as_slice() {
        [one] => Ok(one),
        [] => Err(SelectError::NoMatch {
            wanted: target.to_string(),
            candidates: disks.iter().map(describe).collect(),
            read_only: read_only.iter().map(|d| d.name.clone()).collect(),
        }),
        many => Err(SelectError::Ambiguous {
            wanted: target.to_string(),
            matches: many.iter().map(|d| d.name.clone()).collect(),
        }),
    }
}

/// The bus a disk hangs on, which decides its by-id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskBus {
    /// virtio-blk (`vda`).
    Virtio,
    /// SATA/PATA (`sda` through libata).
    Ata,
    /// NVMe (`nvme0n1`).
    Nvme,
    /// SCSI, SAS, virtio-scsi (`sda`).
    Scsi,
    /// USB mass storage.
    Usb,
    /// Anything else (MMC, loop, md...): only a `wwn-` name.
    Other,
}

/// udev's cleaning of one identifier: surrounding whitespace trimmed, each
/// run of inner whitespace made one `_`, then every character outside
/// udev's safe set (`A-Z a-z 0-9 # + - . : = @ _`, and non-ASCII
/// characters, which udev keeps) made `_`.
fn udev_clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        let safe = c.is_ascii_alphanumeric()
            || "#+-.:=@_".contains(c)
            || !(c.is_ascii() || c.is_control());
        out.push(if safe { c } else { '_' });
    }
    out
}

/// The `/dev/disk/by-id` names udev's persistent-storage rules would give
/// a disk (without the directory), which the installer computes since a
/// node has no udev:
/// - virtio: `virtio-<serial>` (the serial as the kernel reports it,
///   already cut to 20 characters by virtio-blk);
/// - ata: `ata-<model>_<serial>`; nvme: `nvme-<model>_<serial>`;
///   usb: `usb-<model>_<serial>` (either part alone when the other is
///   unknown);
/// - scsi: `scsi-<serial>` when there is a serial (the caller passes the
///   full SCSI serial; udev's vendor/model prefixing is not guessed);
/// - any bus: `wwn-<wwid>` when a world-wide id is given (`0x5000c500...`).
///
/// Each part is cleaned as udev does: trimmed, inner whitespace runs made
/// one `_`, characters outside `A-Z a-z 0-9 # + - . : = @ _` made `_`.
/// Parts that are empty after cleaning are left out.
pub fn by_id_names(
    bus: DiskBus,
    model: Option<&str>,
    serial: Option<&str>,
    wwid: Option<&str>,
) -> Vec<String> {
    let clean = |s: Option<&str>| s.map(udev_clean).filter(|s| !s.is_empty());
    let model = clean(model);
    let serial = clean(serial);
    let model_serial = || -> Option<String> {
        match (&model, &serial) {
            (Some(m), Some(s)) => Some(format!("{m}_{s}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        }
    };
    let mut names = Vec::new();
    let main = match bus {
        DiskBus::Virtio => serial.as_ref().map(|s| format!("virtio-{s}")),
        DiskBus::Scsi => serial.as_ref().map(|s| format!("scsi-{s}")),
        DiskBus::Ata => model_serial().map(|ms| format!("ata-{ms}")),
        DiskBus::Nvme => model_serial().map(|ms| format!("nvme-{ms}")),
        DiskBus::Usb => model_serial().map(|ms| format!("usb-{ms}")),
        DiskBus::Other => None,
    };
    names.extend(main);
    // The kernel's wwid carries the designator type (`naa.5000c500...`,
    // `eui.0025...`, `t10.ATA ...`): udev names an NAA identifier
    // `wwn-0x<hex>` and an NVMe EUI `nvme-eui.<hex>`; anything else keeps
    // the kernel's text.
    if let Some(w) = clean(wwid) {
        let w = w.to_ascii_lowercase();
        if let Some(hex) = w.strip_prefix("naa.") {
            names.push(format!("wwn-0x{hex}"));
        } else if let (Some(_), DiskBus::Nvme) = (w.strip_prefix("eui."), bus) {
            names.push(format!("nvme-{w}"));
        } else {
            names.push(format!("wwn-{w}"));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn wwids_are_named_as_udev_names_them() {
        let scsi = by_id_names(
            DiskBus::Scsi,
            None,
            Some("Z1"),
            Some("naa.5000C500A1B2C3D4"),
        );
        assert_eq!(scsi, ["scsi-Z1", "wwn-0x5000c500a1b2c3d4"]);
        let nvme = by_id_names(
            DiskBus::Nvme,
            Some("Samsung SSD"),
            Some("S4"),
            Some("eui.0025385b71b0a1b2"),
        );
        assert_eq!(nvme, ["nvme-Samsung_SSD_S4", "nvme-eui.0025385b71b0a1b2"]);
    }

    fn disk(name: &str, gib: u64) -> DiskFacts {
        DiskFacts {
            name: name.into(),
            size_bytes: gib * GIB,
            model: Some("QEMU HARDDISK   ".into()),
            serial: Some(format!("serial-{name}")),
            by_id: vec![format!("virtio-{name}")],
            removable: false,
            read_only: false,
        }
    }

    fn selector(yaml: &str) -> DiskTarget {
        let sel: DiskSelector = serde_saphyr::from_str(yaml).unwrap();
        DiskTarget::Selector(sel)
    }

    fn path(p: &str) -> DiskTarget {
        DiskTarget::Path(p.into())
    }

    #[test]
    fn paths_match_the_kernel_name_or_a_by_id_name() {
        let disks = [disk("vda", 20), disk("vdb", 40)];
        assert_eq!(select(&path("/dev/vdb"), &disks).unwrap().name, "vdb");
        assert_eq!(
            select(&path("/dev/disk/by-id/virtio-vda"), &disks)
                .unwrap()
                .name,
            "vda"
        );
        for miss in [
            "/dev/vdc",
            "/dev/disk/by-id/virtio-vdc",
            "/dev/disk/by-path/vda",
            "/dev/x/vda",
            "vda",
        ] {
            assert!(
                matches!(
                    select(&path(miss), &disks),
                    Err(SelectError::NoMatch { .. })
                ),
                "{miss}"
            );
        }
    }

    #[test]
    fn selectors_need_every_field_to_match() {
        let mut disks = vec![disk("vda", 8), disk("vdb", 40), disk("vdc", 100)];
        disks[2].model = Some("Other".into());
        assert_eq!(
            select(&selector("size: '>= 30GiB'\nmodel: QEMU HARDDISK"), &disks)
                .unwrap()
                .name,
            "vdb"
        );
        assert_eq!(
            select(&selector("serial: '  serial-vdc '"), &disks)
                .unwrap()
                .name,
            "vdc"
        );
        assert_eq!(
            select(&selector("byId: virtio-vda"), &disks).unwrap().name,
            "vda"
        );
        assert_eq!(
            select(&selector("size: 100GiB"), &disks).unwrap().name,
            "vdc"
        );
        // A disk without a serial never matches a serial.
        disks[0].serial = None;
        assert!(select(&selector("serial: serial-vda"), &disks).is_err());
    }

    #[test]
    fn no_match_lists_every_disk_seen() {
        let mut disks = vec![disk("vda", 20), disk("sr0", 1)];
        disks[1].model = None;
        disks[1].serial = None;
        disks[1].by_id.clear();
        disks[1].removable = true;
        disks[1].read_only = true;
        let err = select(&selector("size: '>= 100GiB'"), &disks).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no writable disk matches install disk size >= 100GiB; disks seen: \
             vda 20.0 GiB model \"QEMU HARDDISK\" serial \"serial-vda\" by-id virtio-vda; \
             sr0 1.0 GiB removable read-only"
        );
        let err = select(&path("/dev/vda"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no writable disk matches install disk /dev/vda; the node sees no disk at all"
        );
    }

    #[test]
    fn read_only_disks_never_match_and_the_error_says_so() {
        let mut disks = vec![disk("vda", 20), disk("vdb", 20)];
        disks[1].read_only = true;
        let err = select(&path("/dev/vdb"), &disks).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no writable disk matches install disk /dev/vdb (vdb matches but is read-only); disks seen: "),
            "{err}"
        );
        // The writable one is chosen when both would match.
        assert_eq!(
            select(&selector("size: 20GiB"), &disks).unwrap().name,
            "vda"
        );
    }

    #[test]
    fn several_matches_are_ambiguous() {
        let disks = [disk("vda", 8), disk("vdb", 40), disk("vdc", 40)];
        let err = select(&selector("size: '>= 20GiB'"), &disks).unwrap_err();
        assert_eq!(
            err,
            SelectError::Ambiguous {
                wanted: "size >= 20GiB".into(),
                matches: vec!["vdb".into(), "vdc".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "install disk size >= 20GiB matches 2 disks: vdb, vdc; narrow the selector"
        );
    }

    #[test]
    fn describe_rounds_to_one_decimal() {
        let mut d = disk("nvme0n1", 0);
        d.size_bytes = 1_500_000_000_000;
        d.by_id = vec!["nvme-a".into(), "wwn-0x1".into()];
        assert_eq!(
            describe(&d),
            "nvme0n1 1.4 TiB model \"QEMU HARDDISK\" serial \"serial-nvme0n1\" by-id nvme-a,wwn-0x1"
        );
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(20 * GIB), "20.0 GiB");
    }

    #[test]
    fn by_id_names_follow_udev() {
        assert_eq!(
            by_id_names(DiskBus::Virtio, None, Some("keelson-root"), None),
            ["virtio-keelson-root"]
        );
        assert!(by_id_names(DiskBus::Virtio, Some("m"), None, None).is_empty());
        assert_eq!(
            by_id_names(
                DiskBus::Ata,
                Some("QEMU HARDDISK"),
                Some("QM00001"),
                Some("0x5000c500a1b2c3d4")
            ),
            ["ata-QEMU_HARDDISK_QM00001", "wwn-0x5000c500a1b2c3d4"]
        );
        assert_eq!(
            by_id_names(
                DiskBus::Nvme,
                Some("Samsung SSD 970 EVO Plus 1TB    "),
                Some("  S4EWNX0R123456  "),
                None
            ),
            ["nvme-Samsung_SSD_970_EVO_Plus_1TB_S4EWNX0R123456"]
        );
        assert_eq!(
            by_id_names(DiskBus::Usb, Some("Cruzer  Blade"), Some("4C53/0001"), None),
            ["usb-Cruzer_Blade_4C53_0001"]
        );
        assert_eq!(
            by_id_names(DiskBus::Scsi, Some("QEMU"), Some("drive-scsi0"), None),
            ["scsi-drive-scsi0"]
        );
        assert!(by_id_names(DiskBus::Scsi, Some("QEMU"), None, None).is_empty());
        assert_eq!(
            by_id_names(DiskBus::Ata, Some("WDC WD10"), None, None),
            ["ata-WDC_WD10"]
        );
        assert_eq!(
            by_id_names(DiskBus::Other, Some("x"), Some("y"), Some("eui.0025")),
            ["wwn-eui.0025"]
        );
        assert!(by_id_names(DiskBus::Nvme, Some("   "), Some(""), None).is_empty());
        // udev's safe set keeps # + : = @ and replaces the rest.
        assert_eq!(udev_clean("a#b+c:d=e@f"), "a#b+c:d=e@f");
        assert_eq!(udev_clean("a\tb \n c$d%e"), "a_b_c_d_e");
    }
}
