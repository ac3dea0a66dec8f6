//! The manifest: what a bundle carries (OS version, build id, payload sizes
//! and hashes, the oldest version it upgrades from), its canonical JSON
//! form, its validation against [`Limits`], and the version comparison rule.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{BundleError, PayloadListProblem};
use crate::FORMAT_VERSION;

/// One of the three payloads, in bundle order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadName {
    /// The kernel image (`vmlinuz`).
    Kernel,
    /// The initramfs (`initramfs.img`).
    Initramfs,
    /// The root filesystem squashfs (`rootfs.squashfs`).
    Rootfs,
}

impl PayloadName {
    /// Every payload, in the order the bundle carries them.
    pub const ALL: [PayloadName; 3] = [
        PayloadName::Kernel,
        PayloadName::Initramfs,
        PayloadName::Rootfs,
    ];

    /// The name in the manifest (`kernel`, `initramfs`, `rootfs`).
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadName::Kernel => "kernel",
            PayloadName::Initramfs => "initramfs",
            PayloadName::Rootfs => "rootfs",
        }
    }

    /// The payload a manifest name stands for.
    pub fn from_name(name: &str) -> Option<PayloadName> {
        PayloadName::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for PayloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size and hash of one payload, as the manifest declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadInfo {
    /// Which payload.
    pub name: PayloadName,
    /// Its exact size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

impl PayloadInfo {
    /// The SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// A verified bundle's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Bundle format version (always [`FORMAT_VERSION`] once verified).
    pub format_version: u32,
    /// The OS version the bundle installs (follows [`Version`]'s rule).
    pub os_version: String,
    /// Build identifier (`[A-Za-z0-9._-]`, at most 128 characters).
    pub build_id: String,
    /// Free-form creation time, informational (printable ASCII, at most 64).
    pub created: Option<String>,
    /// The oldest OS version this bundle may upgrade; `None`: any.
    pub min_upgrade_from: Option<String>,
    /// Kernel, initramfs, rootfs, in that order.
    pub payloads: [PayloadInfo; 3],
}

/// Bounds the reader enforces on declared payload sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest kernel accepted, bytes.
    pub kernel: u64,
    /// Largest initramfs accepted, bytes.
    pub initramfs: u64,
    /// Largest root squashfs accepted, bytes (a node should pass the size
    /// of its inactive SYSTEM partition).
    pub rootfs: u64,
}

impl Default for Limits {
    /// kernel 64 MiB, initramfs 512 MiB, rootfs 4 GiB.
    fn default() -> Self {
        Limits {
            kernel: 64 << 20,
            initramfs: 512 << 20,
            rootfs: 4 << 30,
        }
    }
}

impl Limits {
    /// The bound for one payload.
    pub fn max(&self, part: PayloadName) -> u64 {
        match part {
            PayloadName::Kernel => self.kernel,
            PayloadName::Initramfs => self.initramfs,
            PayloadName::Rootfs => self.rootfs,
        }
    }
}

/// The manifest as it is on the wire. Field order here is the canonical
/// order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireManifest {
    pub format_version: u32,
    pub os_version: String,
    pub build_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_upgrade_from: Option<String>,
    pub payloads: Vec<WirePayload>,
}

/// One payload entry on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WirePayload {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// The canonical JSON bytes: compact, fields in format order, absent
    /// optional fields omitted. The signature covers exactly these bytes.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let wire = WireManifest {
            format_version: self.format_version,
            os_version: self.os_version.clone(),
            build_id: self.build_id.clone(),
            created: self.created.clone(),
            min_upgrade_from: self.min_upgrade_from.clone(),
            payloads: self
                .payloads
                .iter()
                .map(|p| WirePayload {
                    name: p.name.as_str().to_owned(),
                    size: p.size,
                    sha256: p.sha256_hex(),
                })
                .collect(),
        };
        // Serializing a struct of strings and integers into a Vec cannot
        // fail (no maps with non-string keys, no I/O).
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Parses and validates manifest bytes: JSON of the manifest's shape
    /// (unknown fields refused), canonical form, field values, payload list
    /// and sizes within `limits`.
    pub fn from_json(bytes: &[u8], limits: &Limits) -> Result<Manifest, BundleError> {
        let wire: WireManifest =
            serde_json::from_slice(bytes).map_err(|e| BundleError::ManifestJson {
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            })?;
        let manifest = Manifest::from_wire(wire, limits)?;
        if manifest.to_canonical_json() != bytes {
            return Err(BundleError::ManifestNotCanonical);
        }
        Ok(manifest)
    }

    fn from_wire(wire: WireManifest, limits: &Limits) -> Result<Manifest, BundleError> {
        if wire.format_version != FORMAT_VERSION {
            return Err(invalid(
                "format_version",
                format!(
                    "is {}, but the header says {FORMAT_VERSION}",
                    wire.format_version
                ),
            ));
        }
        Version::parse("manifest field os_version", &wire.os_version)?;
        check_build_id(&wire.build_id)?;
        if let Some(created) = &wire.created {
            if created.is_empty()
                || created.len() > 64
                || !created.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(invalid(
                    "created",
                    "must be 1 to 64 printable ASCII characters",
                ));
            }
        }
        if let Some(min) = &wire.min_upgrade_from {
            Version::parse("manifest field min_upgrade_from", min)?;
        }
        let payloads = check_payloads(&wire.payloads, limits)?;
        Ok(Manifest {
            format_version: wire.format_version,
            os_version: wire.os_version,
            build_id: wire.build_id,
            created: wire.created,
            min_upgrade_from: wire.min_upgrade_from,
            payloads,
        })
    }

    /// Checks the manifest's values as [`Manifest::from_json`] would (used
    /// by the writer before signing).
    pub fn validate(&self, limits: &Limits) -> Result<(), BundleError> {
        let json = self.to_canonical_json();
        Manifest::from_json(&json, limits).map(|_| ())
    }

    /// The payload entry for `part`.
    pub fn payload(&self, part: PayloadName) -> &PayloadInfo {
        // `payloads` is indexed in `PayloadName::ALL` order (checked when
        // the manifest was built).
        &self.payloads[part as usize]
    }

    /// Sum of the payload sizes.
    pub fn payload_bytes(&self) -> u64 {
        self.payloads.iter().map(|p| p.size).sum()
    }

    /// Refuses an upgrade of a node running `running_version` when it is
    /// older than `min_upgrade_from` (see [`Version`] for the rule).
    pub fn check_upgrade_from(&self, running_version: &str) -> Result<(), BundleError> {
        let Some(min) = &self.min_upgrade_from else {
            return Ok(());
        };
        let running = Version::parse("the running version", running_version)?;
        let min_v = Version::parse("manifest field min_upgrade_from", min)?;
        if running < min_v {
            return Err(BundleError::UpgradeFromTooOld {
                running: running_version.to_owned(),
                min: min.clone(),
            });
        }
        Ok(())
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> BundleError {
    BundleError::ManifestInvalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn check_build_id(id: &str) -> Result<(), BundleError> {
    if id.is_empty() || id.len() > 128 {
        return Err(invalid("build_id", "must be 1 to 128 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            "build_id",
            format!("character {c:?} is not allowed (only A-Z a-z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

fn check_payloads(list: &[WirePayload], limits: &Limits) -> Result<[PayloadInfo; 3], BundleError> {
    let mut out: Vec<PayloadInfo> = Vec::with_capacity(3);
    for (index, entry) in list.iter().enumerate() {
        let Some(name) = PayloadName::from_name(&entry.name) else {
            return Err(BundleError::PayloadList(PayloadListProblem::Unknown {
                index,
                name: entry.name.clone(),
            }));
        };
        if out.iter().any(|p| p.name == name) {
            return Err(BundleError::PayloadList(PayloadListProblem::Duplicate {
                index,
                name: entry.name.clone(),
            }));
        }
        // Known, not a duplicate, and every earlier slot is filled in order:
        // so index < 3 and a wrong name is out of order.
        let expected = PayloadName::ALL[index];
        if name != expected {
            return Err(BundleError::PayloadList(PayloadListProblem::OutOfOrder {
                index,
                name: entry.name.clone(),
                expected,
            }));
        }
        let sha256 = parse_sha256(&entry.sha256)
            .map_err(|reason| invalid(&format!("payloads[{index}].sha256"), reason))?;
        if entry.size == 0 {
            return Err(invalid(
                &format!("payloads[{index}].size"),
                format!("the {name} payload is empty"),
            ));
        }
        let max = limits.max(name);
        if entry.size > max {
            return Err(BundleError::PayloadTooLarge {
                part: name,
                size: entry.size,
                max,
            });
        }
        out.push(PayloadInfo {
            name,
            size: entry.size,
            sha256,
        });
    }
    let missing: Vec<PayloadName> = PayloadName::ALL[out.len().min(3)..].to_vec();
    out.try_into()
        .map_err(|_| BundleError::PayloadList(PayloadListProblem::Missing { names: missing }))
}

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "{s:?} is not a sha256 (64 lowercase hex characters)"
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A version as bundles compare them.
///
/// Syntax: one or more decimal numbers separated by dots (`1`, `1.2`,
/// `1.2.3.4`), optionally followed by `-` and a suffix of ASCII letters,
/// digits, dots and dashes (`1.2.0-rc1`). At most 128 characters.
///
/// Order: the numbers are compared left to right, a missing number counting
/// as 0 (`1.2` equals `1.2.0`, `1.10` is above `1.9`). With equal numbers, a
/// version without suffix is above one with a suffix (`1.2.0-rc1` is below
/// `1.2.0`), and two suffixes compare as byte strings (`-rc1` below `-rc2`,
/// but `-rc10` also below `-rc2`).
#[derive(Clone, Debug)]
pub struct Version {
    numbers: Vec<u64>,
    suffix: Option<String>,
}

impl Version {
    /// Parses `value`; `what` names it in the error.
    pub fn parse(what: &str, value: &str) -> Result<Version, BundleError> {
        let bad = |reason: &str| BundleError::BadVersion {
            what: what.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if value.is_empty() || value.len() > 128 {
            return Err(bad("must be 1 to 128 characters"));
        }
        let (nums, suffix) = match value.split_once('-') {
            Some((n, s)) => (n, Some(s)),
            None => (value, None),
        };
        let mut numbers = Vec::new();
        for part in nums.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{part:?} is not a decimal number")));
            }
            numbers.push(
                part.parse::<u64>()
                    .map_err(|_| bad(&format!("{part} is too large")))?,
            );
        }
        if let Some(s) = suffix {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(bad(
                    "the suffix after '-' must be ASCII letters, digits, '.' or '-'",
                ));
            }
        }
        Ok(Version {
            numbers,
            suffix: suffix.map(str::to_owned),
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.numbers.len().max(other.numbers.len());
        for i in 0..n {
            let a = self.numbers.get(i).copied().unwrap_or(0);
            let b = other.numbers.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.suffix, &other.suffix) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse("test", s).unwrap()
    }

    #[test]
    fn version_order_follows_the_documented_rule() {
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("1.2.0-rc1") < v("1.2.0"));
        assert!(v("1.2.0-rc1") < v("1.2.0-rc2"));
        assert!(v("1.2.0-rc2") > v("1.1.9"));
        assert!(v("2") > v("1.99.99"));
        assert!(v("0.1.0") < v("0.1.1"));
    }

    #[test]
    fn malformed_versions_are_refused_with_the_reason() {
        for bad in [
            "", "v1.2", "1..2", "1.2-", "1.2-rc_1", "1.2 ", "-rc1", "1.x",
        ] {
            let e = Version::parse("the running version", bad).unwrap_err();
            assert!(
                matches!(e, BundleError::BadVersion { ref value, .. } if value == bad),
                "{bad:?}: {e}"
            );
        }
        let long = "1".repeat(129);
        assert!(Version::parse("x", &long).is_err());
        assert!(Version::parse("x", "99999999999999999999999").is_err());
    }

    fn manifest(min: Option<&str>) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            os_version: "2.0.0".into(),
            build_id: "abc".into(),
            created: None,
            min_upgrade_from: min.map(str::to_owned),
            payloads: PayloadName::ALL.map(|name| PayloadInfo {
                name,
                size: 1,
                sha256: [0; 32],
            }),
        }
    }

    #[test]
    fn upgrade_from_an_older_version_than_allowed_is_refused() {
        let m = manifest(Some("1.5"));
        assert!(m.check_upgrade_from("1.5.0").is_ok());
        assert!(m.check_upgrade_from("1.6").is_ok());
        let e = m.check_upgrade_from("1.4.9").unwrap_err();
        assert!(
            matches!(e, BundleError::UpgradeFromTooOld { ref running, ref min } if running == "1.4.9" && min == "1.5"),
            "{e}"
        );
        assert!(matches!(
            m.check_upgrade_from("1.5-rc1").unwrap_err(),
            BundleError::UpgradeFromTooOld { .. }
        ));
        assert!(matches!(
            m.check_upgrade_from("garbage").unwrap_err(),
            BundleError::BadVersion { .. }
        ));
        assert!(manifest(None).check_upgrade_from("0.0.1").is_ok());
    }

    #[test]
    fn canonical_json_parses_back_to_the_same_manifest() {
        let m = manifest(Some("1.0"));
        let json = m.to_canonical_json();
        assert_eq!(Manifest::from_json(&json, &Limits::default()).unwrap(), m);
        // Pretty-printed is the same content but not canonical.
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert!(matches!(
            Manifest::from_json(&pretty, &Limits::default()).unwrap_err(),
            BundleError::ManifestNotCanonical
        ));
    }
}
