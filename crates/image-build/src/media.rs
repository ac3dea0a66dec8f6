//! `keelson/media.json` on the boot ISO: what the medium carries, for the
//! node booted from it (stage 1 finds the medium by its volume id,
//! `keelson.media=`) and for its installer, which writes a disk from it.
//! A network-boot directory (`netboot.rs`) has the same file as
//! `media.json`, beside the root it names, for a network-booted node's
//! installer.
//!
//! Shape (UTF-8 JSON, one line, then a newline):
//!
//! ```json
//! {"version":"0.1.0","volumeId":"KEELSON_0_1_0",
//!  "root":{"path":"keelson/rootfs.squashfs","size":99758080,"sha256":"..."},
//!  "esp":[{"path":"A/initramfs.img","size":10419930,"sha256":"..."}, ...]}
//! ```
//!
//! - `root.path` is relative to the ISO's root (to the network-boot
//!   directory in its copy there);
//! - `esp` lists every file of the installed disk's EFI System Partition,
//!   as they are under `keelson/esp/` on the ISO (`esp/` in a network-boot
//!   directory), paths relative to that directory, sorted by path (byte
//!   order). The ESP also has an empty `B/` directory, which the list (of
//!   files) does not name;
//! - `volumeId` is the ISO's of `version` ([`iso::volume_id`]) in both
//!   (a network boot has no volume; stage 1 ignores it there).
//!
//! The SHA-256 of the file's exact bytes is on the kernel command line
//! (`keelson.media_sha256=`), so the sizes and hashes in it can be trusted
//! as far as the command line is.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{digest, esp, iso};

/// The file name of the manifest on the ISO.
pub const PATH: &str = "keelson/media.json";

/// The manifest's file name in a network-boot directory.
pub const FILE_NAME: &str = "media.json";

/// One file on the medium.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaFile {
    /// Path, `/`-separated, relative to the ISO's root (`root`) or to
    /// `keelson/esp` (`esp`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of its contents, lower-case hex.
    pub sha256: String,
}

impl MediaFile {
    /// The file `file` (its size and SHA-256) as `path`.
    pub fn of(path: &str, file: &Path) -> anyhow::Result<MediaFile> {
        Ok(MediaFile {
            path: path.to_string(),
            size: std::fs::metadata(file)
                .with_context(|| format!("cannot stat {}", file.display()))?
                .len(),
            sha256: digest::file_sha256(file)?,
        })
    }
}

/// `keelson/media.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Media {
    /// Image version (from `version.json`).
    pub version: String,
    /// The ISO 9660 volume id (`keelson.media=` on the kernel command line).
    pub volume_id: String,
    /// The root squashfs.
    pub root: MediaFile,
    /// Every file of the installed disk's ESP, sorted by path.
    pub esp: Vec<MediaFile>,
}

impl Media {
    /// The manifest of a medium of image `version` carrying the root
    /// `root` and the ESP tree `tree` staged in `esp_dir` by [`esp::stage`]
    /// (each file's size and SHA-256 read there, listed sorted by path);
    /// `volumeId` is the ISO's of `version` ([`iso::volume_id`]). The ISO
    /// and the network-boot directory both describe their payload with it.
    pub fn describe(
        version: &str,
        root: MediaFile,
        esp_dir: &Path,
        tree: &esp::Tree,
    ) -> anyhow::Result<Media> {
        let mut files = tree
            .files
            .iter()
            .map(|f| MediaFile::of(f, &esp_dir.join(f)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Media {
            version: version.to_string(),
            volume_id: iso::volume_id(version),
            root,
            esp: files,
        })
    }

    /// The file's bytes: compact JSON and a newline.
    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_json_has_the_documented_shape() {
        let f = |path: &str| MediaFile {
            path: path.into(),
            size: 3,
            sha256: "ab".into(),
        };
        let m = Media {
            version: "0.1.0".into(),
            volume_id: "KEELSON_0_1_0".into(),
            root: f("keelson/rootfs.squashfs"),
            esp: vec![f("A/vmlinuz")],
        };
        let bytes = m.to_bytes().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "{\"version\":\"0.1.0\",\"volumeId\":\"KEELSON_0_1_0\",\
             \"root\":{\"path\":\"keelson/rootfs.squashfs\",\"size\":3,\"sha256\":\"ab\"},\
             \"esp\":[{\"path\":\"A/vmlinuz\",\"size\":3,\"sha256\":\"ab\"}]}\n"
        );
        let back: Media = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
