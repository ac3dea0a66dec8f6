//! `keelson/media.json` on the boot ISO (written by `image-build iso`):
//! the root squashfs and the files of the EFI System Partition an install
//! writes, each with its size and SHA-256. Its own SHA-256 is on the
//! kernel command line (`keelson.media_sha256=`), so every byte stage 1
//! takes from the media is checked.

use serde::{Deserialize, Serialize};

/// A file on the media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaFile {
    /// Path relative to its base (the ISO's root for `root`, `keelson/esp`
    /// for `esp` entries).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// The manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaManifest {
    /// OS version on the media.
    pub version: String,
    /// The ISO 9660 volume id.
    pub volume_id: String,
    /// The root squashfs.
    pub root: MediaFile,
    /// The EFI System Partition's files, relative to `keelson/esp`.
    pub esp: Vec<MediaFile>,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not the JSON expected.
    #[error("keelson/media.json: {0}")]
    Json(#[from] serde_json::Error),
    /// A path that could leave its base directory.
    #[error("keelson/media.json: unsafe path {0:?}")]
    UnsafePath(String),
    /// A hash that is not 64 hex digits.
    #[error("keelson/media.json: {path}: sha256 {sha256:?} is not 64 hex digits")]
    BadHash {
        /// The file.
        path: String,
        /// Its hash as written.
        sha256: String,
    },
}

/// Whether `path` stays below its base: relative, no `..`, no empty or
/// `.` components.
fn safe(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Parses and checks a manifest.
pub fn parse(bytes: &[u8]) -> Result<MediaManifest, ManifestError> {
    let m: MediaManifest = serde_json::from_slice(bytes)?;
    for f in std::iter::once(&m.root).chain(&m.esp) {
        if !safe(&f.path) {
            return Err(ManifestError::UnsafePath(f.path.clone()));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ManifestError::BadHash {
                path: f.path.clone(),
                sha256: f.sha256.clone(),
            });
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn manifest(esp_path: &str) -> String {
        format!(
            r#"{{"version":"0.1.0","volumeId":"KEELSON_0_1_0",
               "root":{{"path":"keelson/rootfs.squashfs","size":10,"sha256":"{SHA}"}},
               "esp":[{{"path":"{esp_path}","size":1,"sha256":"{SHA}"}}]}}"#
        )
    }

    #[test]
    fn reads_the_iso_s_manifest_and_refuses_paths_that_escape() {
        let m = parse(manifest("EFI/BOOT/BOOTX64.EFI").as_bytes()).unwrap();
        assert_eq!(m.root.size, 10);
        assert_eq!(m.esp[0].path, "EFI/BOOT/BOOTX64.EFI");
        for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", ""] {
            let e = parse(manifest(bad).as_bytes()).unwrap_err();
            assert!(e.to_string().contains("unsafe path"), "{bad}: {e}");
        }
        let e = parse(b"{}").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("keelson/media.json: missing field"));
    }
}
