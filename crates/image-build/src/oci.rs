//! OCI image archives (what `ctr images import` reads): `oci-layout`,
//! `index.json` with the `io.containerd.image.name` annotation, and
//! `blobs/sha256/` holding the manifest, the config and one uncompressed
//! layer tar. Everything is deterministic: sorted entries, uid/gid 0, one
//! mtime. Also builds the two images every node preloads: the pause image
//! (our own C program, static) and a busybox test image.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::json;

use crate::cpio::{Archive, Kind};
use crate::digest::bytes_sha256;
use crate::tools::{self, known};

/// The sandbox image containerd's CRI plugin is configured with.
pub const PAUSE_IMAGE: &str = "keelson.local/pause:1";
/// The small test image.
pub const BUSYBOX_IMAGE: &str = "keelson.local/busybox:1";

/// busybox applets linked in the test image.
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "echo", "cat", "date", "ls", "sync", "true", "false", "env", "wc",
    "head", "tail", "mkdir", "rm", "touch", "id", "hostname", "uname", "dd", "grep", "sed", "awk",
    "test", "[", "printf", "seq", "yes", "ps", "kill", "ip", "nc", "wget", "nslookup", "df", "du",
    "mount", "free", "top", "vi",
];

/// An image to write: name, file tree and process defaults.
#[derive(Debug)]
pub struct Image {
    /// Reference, e.g. `keelson.local/pause:1`.
    pub name: String,
    /// The layer's files.
    pub tree: Archive,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
}

fn layer_tar(tree: &Archive, mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in tree.entries() {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_mode(e.perm);
        let data: &[u8] = match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                &[]
            }
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                d
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(t)
                    .with_context(|| format!("symlink target of {path} too long"))?;
                &[]
            }
            Kind::CharDev(..) => bail!("{path}: device nodes are not allowed in image layers"),
        };
        let name = if matches!(e.kind, Kind::Dir) {
            format!("{path}/")
        } else {
            path.clone()
        };
        b.append_data(&mut h, &name, data)
            .with_context(|| format!("cannot add {path} to a layer"))?;
    }
    b.into_inner().context("cannot finish a layer tar")
}

/// Writes the OCI archive of `img` as bytes.
pub fn archive(img: &Image, mtime: u64) -> anyhow::Result<Vec<u8>> {
    let layer = layer_tar(&img.tree, mtime)?;
    let layer_digest = format!("sha256:{}", bytes_sha256(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
            "Entrypoint": img.entrypoint,
            "Cmd": img.cmd,
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "keelson image-build" }],
    }))?;
    let config_digest = format!("sha256:{}", bytes_sha256(&config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = format!("sha256:{}", bytes_sha256(&manifest));
    let tag = img
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": img.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let mut outer = Archive::new();
    outer.add(
        "oci-layout",
        0o644,
        Kind::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    outer.add("index.json", 0o644, Kind::File(index));
    for (digest, bytes) in [
        (&layer_digest, layer),
        (&config_digest, config),
        (&manifest_digest, manifest),
    ] {
        let hex = digest.trim_start_matches("sha256:");
        outer.add(&format!("blobs/sha256/{hex}"), 0o644, Kind::File(bytes));
    }
    layer_tar(&outer, mtime)
}

/// Compiles the pause program (static, `gcc -static -Os -s`) in `work`.
pub fn build_pause(work: &Path) -> anyhow::Result<Vec<u8>> {
    let src = work.join("pause.c");
    let bin = work.join("pause");
    std::fs::write(&src, include_str!("pause.c"))
        .with_context(|| format!("cannot write {}", src.display()))?;
    let mut cmd = known::GCC.command()?;
    cmd.args(["-static", "-Os", "-s", "-o"]).arg(&bin).arg(&src);
    tools::run(&mut cmd).context("cannot compile the pause program (needs gcc and libc6-dev)")?;
    std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))
}

fn base_dirs(tree: &mut Archive) {
    for d in ["dev", "proc", "sys", "etc", "tmp"] {
        tree.add(d, 0o755, Kind::Dir);
    }
}

/// The pause image around the compiled program.
pub fn pause_image(pause: Vec<u8>) -> Image {
    let mut tree = Archive::new();
    base_dirs(&mut tree);
    tree.add("pause", 0o755, Kind::File(pause));
    Image {
        name: PAUSE_IMAGE.to_string(),
        tree,
        entrypoint: vec!["/pause".into()],
        cmd: vec![],
    }
}

/// The busybox test image from Debian's busybox-static binary.
pub fn busybox_image(busybox: Vec<u8>) -> Image {
    let mut tree = Archive::new();
    base_dirs(&mut tree);
    tree.add("bin/busybox", 0o755, Kind::File(busybox));
    for a in BUSYBOX_APPLETS {
        tree.add(&format!("bin/{a}"), 0o777, Kind::Symlink("busybox".into()));
    }
    Image {
        name: BUSYBOX_IMAGE.to_string(),
        tree,
        entrypoint: vec![],
        cmd: vec!["sh".into()],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Read;

    fn read_tar(bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let ty = e.header().entry_type();
                assert_eq!(e.header().uid().unwrap(), 0);
                assert_eq!(e.header().mtime().unwrap(), 1234);
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, ty, data)
            })
            .collect()
    }

    #[test]
    fn archive_is_a_consistent_oci_layout_and_reproducible() {
        let img = || busybox_image(b"\x7fELF fake busybox".to_vec());
        let bytes = archive(&img(), 1234).unwrap();
        assert_eq!(bytes, archive(&img(), 1234).unwrap());

        let entries = read_tar(&bytes);
        let get = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name)
                .map(|e| e.2.clone())
                .unwrap()
        };
        let layout: serde_json::Value = serde_json::from_slice(&get("oci-layout")).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let index: serde_json::Value = serde_json::from_slice(&get("index.json")).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["annotations"]["io.containerd.image.name"], BUSYBOX_IMAGE);
        let mdigest = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let manifest_bytes = get(&format!("blobs/sha256/{mdigest}"));
        assert_eq!(bytes_sha256(&manifest_bytes), mdigest);
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let ldigest = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let layer = get(&format!("blobs/sha256/{ldigest}"));
        assert_eq!(bytes_sha256(&layer), ldigest);
        let cdigest = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let config: serde_json::Value =
            serde_json::from_slice(&get(&format!("blobs/sha256/{cdigest}"))).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{ldigest}"));
        assert_eq!(config["config"]["Cmd"][0], "sh");

        let files = read_tar(&layer);
        let sh = files.iter().find(|e| e.0 == "bin/sh").unwrap();
        assert_eq!(sh.1, tar::EntryType::Symlink);
        let bb = files.iter().find(|e| e.0 == "bin/busybox").unwrap();
        assert_eq!(bb.2, b"\x7fELF fake busybox");
    }

    #[test]
    fn pause_program_compiles_static() {
        let dir = tempfile::tempdir().unwrap();
        let bin = build_pause(dir.path()).unwrap();
        assert!(bin.starts_with(b"\x7fELF"));
        std::fs::write(dir.path().join("p"), &bin).unwrap();
        let needs = crate::elf_deps::needs_of(&dir.path().join("p"))
            .unwrap()
            .unwrap();
        assert_eq!(needs, crate::elf_deps::Needs::default());
    }
}
