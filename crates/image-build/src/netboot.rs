//! `image-build netboot`: a directory a PXE machine boots from. It holds the
//! three payloads `image-build disk` leaves in `OUT/boot` (kernel,
//! initramfs, root squashfs; hard links when the file system allows, copies
//! otherwise), the install payload the boot ISO carries too (`esp/`, the
//! installed disk's ESP tree, and `media.json` describing it and the root,
//! see [`media`]), an iPXE script `keelson.ipxe` and `netboot.json`
//! (version, names, sizes and SHA-256s).
//!
//! The script loads `vmlinuz` and `initramfs.img` by relative paths, which
//! iPXE resolves against the script's own URL: the same directory works
//! served over TFTP or HTTP. Stage 1 then fetches the root from
//! `BASE_URL/rootfs.squashfs` over plain HTTP and uses it only if its
//! SHA-256 is the one on the kernel command line: the hash, not TLS,
//! protects the root (stage 1 has no clock or CA store for TLS). To
//! install, it fetches `BASE_URL/media.json`, checked against
//! `keelson.media_sha256=` on the same command line, then each
//! `BASE_URL/esp/PATH` it lists, checked against its hash there.
//!
//! Files in the output are hard links to the boot directory's when
//! possible: replace one by renaming a new file over it, never by writing
//! into it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::bootdir::{self, link_or_copy};
use crate::bundle::PAYLOAD_FILES;
use crate::digest;
use crate::esp;
use crate::manifest::Artifact;
use crate::media::{self, Media, MediaFile};

/// The iPXE script's file name in the output directory.
pub const SCRIPT: &str = "keelson.ipxe";

/// The manifest's file name in the output directory.
pub const MANIFEST: &str = "netboot.json";

/// The root squashfs's file name (the last of [`PAYLOAD_FILES`]).
const ROOT_FILE: &str = PAYLOAD_FILES[2];

/// The ESP tree's directory in the output ([`esp::stage`]; the ISO's
/// `keelson/esp`).
pub const ESP_DIR: &str = "esp";

/// A `--base-url` or `--config-url` value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {value:?}: {why}")]
pub struct BadUrl {
    /// The command-line flag that carried it.
    pub flag: String,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Checks what every URL on the kernel command line must be: plain
/// `http://HOST[:PORT]...` (what stage 1 accepts), one word, nothing iPXE
/// would expand. Returns it without trailing `/`.
fn checked<'a>(flag: &str, value: &'a str) -> Result<&'a str, BadUrl> {
    let bad = |why: &'static str| BadUrl {
        flag: flag.to_string(),
        value: value.to_string(),
        why,
    };
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "contains whitespace or control characters (the kernel command line is split on spaces)",
        ));
    }
    let Some(rest) = value.strip_prefix("http://") else {
        return Err(bad(
            "must start with http:// (stage 1 fetches over plain HTTP; the SHA-256 on the \
             kernel command line, not TLS, protects the root)",
        ));
    };
    if value.contains('$') {
        return Err(bad("contains `$`, which iPXE would expand as a setting"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("has no host (expected http://HOST[:PORT]/...)"));
    }
    if authority.contains('@') {
        return Err(bad("has user information (`@`), which stage 1 refuses"));
    }
    if let Some((host, port)) = authority.rsplit_once(':') {
        if !authority.starts_with('[') {
            if host.is_empty() {
                return Err(bad("has no host (expected http://HOST[:PORT]/...)"));
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad("the port is not a number from 1 to 65535"));
            }
        }
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => h,
        _ => authority,
    };
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_err()
    {
        return Err(bad(
            "the host must be an IP address (stage 1 has no DNS resolver)",
        ));
    }
    Ok(value.trim_end_matches('/'))
}

/// Validates `--base-url` (given as `flag`): the URL the output directory
/// is served at over HTTP, to which file names are appended. Returns it
/// without trailing `/`.
pub fn base_url(flag: &str, value: &str) -> Result<String, BadUrl> {
    let url = checked(flag, value)?;
    if url.contains(['?', '#']) {
        return Err(BadUrl {
            flag: flag.to_string(),
            value: value.to_string(),
            why: "has a query or fragment, but file names are appended to it",
        });
    }
    Ok(url.to_string())
}

/// Validates a URL naming one file, like `--config-url` (given as `flag`):
/// as [`base_url`], and it must have a path. Returns it without trailing
/// `/`.
pub fn file_url(flag: &str, value: &str) -> Result<String, BadUrl> {
    let url = checked(flag, value)?;
    let after_host = url["http://".len()..].trim_start_matches(|c| !matches!(c, '/' | '?' | '#'));
    if !after_host.starts_with('/') || after_host.len() < 2 {
        return Err(BadUrl {
            flag: flag.to_string(),
            value: value.to_string(),
            why: "has no path to a file (expected http://HOST[:PORT]/PATH)",
        });
    }
    Ok(url.to_string())
}

/// Kernel command line of a network boot: the console and panic settings
/// of a disk boot ([`esp::cmdline`]), the root's URL and SHA-256 (hex), the
/// SHA-256 of the install payload's `media.json` (beside the root) and,
/// optionally, where stage 1 fetches the first config from.
pub fn cmdline(
    root_url: &str,
    root_sha256: &str,
    media_sha256: &str,
    config_url: Option<&str>,
) -> String {
    let mut line = format!(
        "{} {} keelson.root={root_url} keelson.root_sha256={root_sha256} \
         keelson.media_sha256={media_sha256}",
        esp::CONSOLE,
        esp::PANIC
    );
    if let Some(url) = config_url {
        line.push_str(" keelson.config=");
        line.push_str(url);
    }
    line
}

/// The iPXE script booting the kernel next to it with `cmdline`.
pub fn ipxe_script(cmdline: &str) -> String {
    format!(
        "#!ipxe\nkernel {} {cmdline}\ninitrd {}\nboot\n",
        PAYLOAD_FILES[0], PAYLOAD_FILES[1]
    )
}

/// What `image-build netboot` is asked to do.
#[derive(Debug)]
pub struct Request {
    /// Directory holding vmlinuz, initramfs.img and rootfs.squashfs.
    pub boot: PathBuf,
    /// `--base-url` as given.
    pub base_url: String,
    /// `--config-url` as given.
    pub config_url: Option<String>,
    /// Output directory.
    pub out: PathBuf,
}

/// `netboot.json`: what the directory holds.
#[derive(Debug, Serialize)]
pub struct NetbootManifest {
    /// Image version, from the disk build's `version.json` (required: the
    /// install payload's `media.json` records it; always present).
    pub version: Option<String>,
    /// Build id, from the same `version.json`.
    pub build_id: Option<String>,
    /// Where the directory is served over HTTP (no trailing `/`).
    pub base_url: String,
    /// The URL the root is fetched from.
    pub root_url: String,
    /// The first config's URL, if any.
    pub config_url: Option<String>,
    /// The iPXE script's file name.
    pub script: String,
    /// The kernel command line the script boots with.
    pub cmdline: String,
    /// The payloads, the ESP tree's files (`esp/...`, sorted), `media.json`,
    /// then the script: name (path in the directory), size, SHA-256.
    pub files: Vec<Artifact>,
}

/// Fills the output directory; returns what `netboot.json` says.
pub fn netboot(req: &Request) -> anyhow::Result<NetbootManifest> {
    // Everything given is checked before the output is touched.
    let base = base_url("--base-url", &req.base_url)?;
    let config = req
        .config_url
        .as_deref()
        .map(|u| file_url("--config-url", u))
        .transpose()?;
    let sources = bootdir::payload_paths(&req.boot)?;
    let mut files = sources
        .iter()
        .zip(PAYLOAD_FILES)
        .map(|(src, name)| artifact(name, src))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let hashes: Vec<String> = files.iter().map(|a| a.sha256.clone()).collect();
    let bootdir::BuildInfo { version, build_id } = bootdir::version_of(&req.boot, &hashes)?;
    let version = bootdir::required_version(
        &req.boot,
        version,
        "the install payload's media.json needs the image version",
    )?;
    std::fs::create_dir_all(&req.out)
        .with_context(|| format!("cannot create {}", req.out.display()))?;
    let placed: Vec<PathBuf> = PAYLOAD_FILES.iter().map(|n| req.out.join(n)).collect();
    for ((src, dst), name) in sources.iter().zip(&placed).zip(PAYLOAD_FILES) {
        let how = link_or_copy(src, dst)?;
        tracing::info!(file = name, placed = ?how, "payload placed");
    }

    // The install payload, as on the ISO: the ESP tree (its kernel and
    // initramfs links to the ones just placed) and media.json.
    let esp_dir = req.out.join(ESP_DIR);
    let esp_tree = esp::stage(
        &esp_dir,
        &placed[0],
        &placed[1],
        crate::DEFAULT_EPOCH,
        esp::Payloads::Link,
    )?;
    let root = MediaFile {
        path: ROOT_FILE.to_string(),
        size: files[2].bytes,
        sha256: hashes[2].clone(),
    };
    let media = Media::describe(&version, root, &esp_dir, &esp_tree)?;
    files.extend(media.esp.iter().map(|f| Artifact {
        name: format!("{ESP_DIR}/{}", f.path),
        bytes: f.size,
        sha256: f.sha256.clone(),
    }));
    let media_bytes = media.to_bytes()?;
    let media_sha256 = digest::bytes_sha256(&media_bytes);
    let media_path = req.out.join(media::FILE_NAME);
    std::fs::write(&media_path, &media_bytes)
        .with_context(|| format!("cannot write {}", media_path.display()))?;
    files.push(Artifact {
        name: media::FILE_NAME.to_string(),
        bytes: media_bytes.len() as u64,
        sha256: media_sha256.clone(),
    });

    let root_url = format!("{base}/{ROOT_FILE}");
    let line = cmdline(&root_url, &hashes[2], &media_sha256, config.as_deref());
    let script = req.out.join(SCRIPT);
    std::fs::write(&script, ipxe_script(&line))
        .with_context(|| format!("cannot write {}", script.display()))?;
    files.push(artifact(SCRIPT, &script)?);
    let manifest = NetbootManifest {
        version: Some(version),
        build_id,
        base_url: base,
        root_url,
        config_url: config,
        script: SCRIPT.to_string(),
        cmdline: line,
        files,
    };
    let path = req.out.join(MANIFEST);
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(manifest)
}

fn artifact(name: &str, path: &Path) -> anyhow::Result<Artifact> {
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    Ok(Artifact {
        name: name.to_string(),
        bytes,
        sha256: digest::file_sha256(path)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::bootdir::Placed;

    const HEX: &str = "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";

    #[test]
    fn the_script_boots_the_kernel_next_to_it_with_the_root_url_and_hashes() {
        let media = "ab".repeat(32);
        let line = cmdline("http://10.0.2.100:8080/rootfs.squashfs", HEX, &media, None);
        assert_eq!(
            ipxe_script(&line),
            format!(
                "#!ipxe\n\
                 kernel vmlinuz console=ttyS0,115200 panic=10 \
                 keelson.root=http://10.0.2.100:8080/rootfs.squashfs keelson.root_sha256={HEX} \
                 keelson.media_sha256={media}\n\
                 initrd initramfs.img\n\
                 boot\n"
            )
        );
        let with_config = cmdline(
            "http://10.0.0.1/rootfs.squashfs",
            HEX,
            &media,
            Some("http://10.0.0.1/node.yaml"),
        );
        assert!(
            with_config.ends_with(&format!(
                "keelson.root_sha256={HEX} keelson.media_sha256={media} \
                 keelson.config=http://10.0.0.1/node.yaml"
            )),
            "{with_config}"
        );
    }

    #[test]
    fn the_command_line_has_the_console_and_panic_of_a_disk_boot() {
        let disk: Vec<String> = esp::cmdline("A")
            .split(' ')
            .filter(|w| !w.starts_with("keelson."))
            .map(str::to_owned)
            .collect();
        let net = cmdline("http://10.0.0.1/rootfs.squashfs", HEX, HEX, None);
        let net: Vec<&str> = net
            .split(' ')
            .filter(|w| !w.starts_with("keelson."))
            .collect();
        assert_eq!(disk, net);
    }

    #[test]
    fn urls_must_be_plain_http_in_one_word_and_lose_their_trailing_slash() {
        for (given, want) in [
            ("http://10.0.2.100:8080", "http://10.0.2.100:8080"),
            ("http://10.0.2.100:8080/", "http://10.0.2.100:8080"),
            ("http://10.0.0.1/keelson//", "http://10.0.0.1/keelson"),
            ("http://[fd00::1]:80/k", "http://[fd00::1]:80/k"),
        ] {
            assert_eq!(base_url("--base-url", given).unwrap(), want, "{given}");
        }
        for (given, why) in [
            ("https://h/k", "must start with http://"),
            ("ftp://h/k", "must start with http://"),
            ("10.0.2.100:8080", "must start with http://"),
            ("", "must start with http://"),
            ("http://10.0.0.1/a b", "whitespace"),
            ("http://10.0.0.1/a\tb", "whitespace"),
            ("http://10.0.0.1/k\n", "whitespace"),
            ("http://", "no host"),
            ("http:///k", "no host"),
            ("http://:80/k", "no host"),
            ("http://10.0.0.1:0/k", "port"),
            ("http://10.0.0.1:99999/k", "port"),
            ("http://10.0.0.1:x/k", "port"),
            ("http://u@h/k", "user information"),
            ("http://10.0.0.1/${net0/ip}", "iPXE"),
            ("http://10.0.0.1/k?x=1", "query"),
            ("http://boot.example/k", "IP address"),
        ] {
            let err = base_url("--base-url", given).unwrap_err().to_string();
            assert!(err.starts_with("--base-url "), "{given}: {err}");
            assert!(err.contains(why), "{given}: {err}");
        }
    }

    #[test]
    fn a_config_url_must_name_a_file() {
        assert_eq!(
            file_url("--config-url", "http://10.0.2.100:8080/node.yaml").unwrap(),
            "http://10.0.2.100:8080/node.yaml"
        );
        assert_eq!(
            file_url("--config-url", "http://10.0.0.1/c?node=1").unwrap(),
            "http://10.0.0.1/c?node=1"
        );
        for bad in [
            "http://10.0.0.1",
            "http://10.0.0.1/",
            "http://10.0.0.1:8080//",
            "http://10.0.0.1?x",
        ] {
            let err = file_url("--config-url", bad).unwrap_err().to_string();
            assert!(err.starts_with("--config-url "), "{bad}: {err}");
            assert!(err.contains("no path"), "{bad}: {err}");
        }
        let err = file_url("--config-url", "https://h/node.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://"), "{err}");
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        /// `out/boot/` with three small payloads, `out/version.json` with
        /// version 0.1.0 (no artifacts).
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let boot = dir.path().join("out/boot");
            std::fs::create_dir_all(&boot).unwrap();
            for name in PAYLOAD_FILES {
                std::fs::write(boot.join(name), format!("{name} bytes")).unwrap();
            }
            std::fs::write(
                dir.path().join("out/version.json"),
                serde_json::json!({"version": "0.1.0", "build_id": "b"}).to_string(),
            )
            .unwrap();
            Fixture { dir }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        fn request(&self, config_url: Option<&str>) -> Request {
            Request {
                boot: self.path("out/boot"),
                base_url: "http://10.0.2.100:8080/".into(),
                config_url: config_url.map(str::to_owned),
                out: self.path("out/netboot"),
            }
        }
    }

    #[test]
    fn netboot_links_the_payloads_and_writes_the_install_payload_script_and_manifest() {
        let f = Fixture::new();
        let m = netboot(&f.request(Some("http://10.0.2.100:8080/node.yaml"))).unwrap();
        let out = f.path("out/netboot");
        let root_hash = digest::bytes_sha256(b"rootfs.squashfs bytes");

        // media.json: the ISO's format, the root beside it, the ESP under
        // esp/; its hash is the script's.
        let media_bytes = std::fs::read(out.join("media.json")).unwrap();
        let media_hash = digest::bytes_sha256(&media_bytes);
        let media: Media = serde_json::from_slice(&media_bytes).unwrap();
        assert_eq!(media.to_bytes().unwrap(), media_bytes);
        assert_eq!(media.version, "0.1.0");
        assert_eq!(media.volume_id, crate::iso::volume_id("0.1.0"));
        assert_eq!(
            media.root,
            MediaFile {
                path: "rootfs.squashfs".into(),
                size: 21,
                sha256: root_hash.clone(),
            }
        );
        let esp_paths: Vec<&str> = media.esp.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            esp_paths,
            [
                "A/initramfs.img",
                "A/vmlinuz",
                "EFI/BOOT/BOOTX64.EFI",
                "grub/grub.cfg",
                "grub/grubenv"
            ]
        );
        for e in std::iter::once(&media.root).chain(&media.esp) {
            let p = match e.path.as_str() {
                "rootfs.squashfs" => out.join(&e.path),
                esp_path => out.join("esp").join(esp_path),
            };
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(bytes.len() as u64, e.size, "{}", e.path);
            assert_eq!(digest::bytes_sha256(&bytes), e.sha256, "{}", e.path);
        }
        assert_eq!(
            std::fs::read_to_string(out.join("esp/grub/grub.cfg")).unwrap(),
            esp::grub_cfg()
        );
        assert!(out.join("esp/B").is_dir());
        assert_eq!(std::fs::read_dir(out.join("esp/B")).unwrap().count(), 0);

        let script = std::fs::read_to_string(out.join("keelson.ipxe")).unwrap();
        assert_eq!(
            script,
            format!(
                "#!ipxe\nkernel vmlinuz console=ttyS0,115200 panic=10 \
                 keelson.root=http://10.0.2.100:8080/rootfs.squashfs \
                 keelson.root_sha256={root_hash} keelson.media_sha256={media_hash} \
                 keelson.config=http://10.0.2.100:8080/node.yaml\n\
                 initrd initramfs.img\nboot\n"
            )
        );
        // The payloads and the ESP's kernel and initramfs are links to the
        // boot directory's files.
        for (name, placed) in [
            ("vmlinuz", "vmlinuz"),
            ("initramfs.img", "initramfs.img"),
            ("rootfs.squashfs", "rootfs.squashfs"),
            ("vmlinuz", "esp/A/vmlinuz"),
            ("initramfs.img", "esp/A/initramfs.img"),
        ] {
            let a = std::fs::metadata(f.path("out/boot").join(name)).unwrap();
            let b = std::fs::metadata(out.join(placed)).unwrap();
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "{placed} is linked");
        }
        assert_eq!(m.version.as_deref(), Some("0.1.0"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("netboot.json")).unwrap()).unwrap();
        assert_eq!(json["base_url"], "http://10.0.2.100:8080");
        assert_eq!(json["version"], "0.1.0");
        let names: Vec<&str> = json["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "vmlinuz",
                "initramfs.img",
                "rootfs.squashfs",
                "esp/A/initramfs.img",
                "esp/A/vmlinuz",
                "esp/EFI/BOOT/BOOTX64.EFI",
                "esp/grub/grub.cfg",
                "esp/grub/grubenv",
                "media.json",
                "keelson.ipxe"
            ]
        );
        // Every listed file is there with its size and hash.
        for a in json["files"].as_array().unwrap() {
            let name = a["name"].as_str().unwrap();
            let bytes = std::fs::read(out.join(name)).unwrap();
            assert_eq!(a["bytes"], bytes.len(), "{name}");
            assert_eq!(a["sha256"], digest::bytes_sha256(&bytes).as_str(), "{name}");
        }
        assert_eq!(json["files"][2]["sha256"], root_hash.as_str());
        assert_eq!(json["files"][2]["bytes"], 21);
        assert_eq!(json["files"][8]["sha256"], media_hash.as_str());

        // Same inputs, same bytes: in another directory, and again over
        // this one (the links are already there).
        let mut elsewhere = f.request(Some("http://10.0.2.100:8080/node.yaml"));
        elsewhere.out = f.path("elsewhere");
        netboot(&elsewhere).unwrap();
        for name in &names {
            assert_eq!(
                std::fs::read(out.join(name)).unwrap(),
                std::fs::read(f.path("elsewhere").join(name)).unwrap(),
                "{name}"
            );
        }
        assert_eq!(
            std::fs::read(out.join("netboot.json")).unwrap(),
            std::fs::read(f.path("elsewhere/netboot.json")).unwrap()
        );
        assert_eq!(
            link_or_copy(&f.path("out/boot/vmlinuz"), &out.join("vmlinuz")).unwrap(),
            Placed::AlreadyThere
        );
        netboot(&f.request(None)).unwrap();
        let script = std::fs::read_to_string(out.join("keelson.ipxe")).unwrap();
        assert!(!script.contains("keelson.config"), "{script}");
        assert!(
            script.contains(&format!("keelson.media_sha256={media_hash}\n")),
            "{script}"
        );
        assert_eq!(std::fs::read(out.join("media.json")).unwrap(), media_bytes);
    }

    #[test]
    fn the_version_comes_from_a_version_json_that_describes_the_payloads() {
        let f = Fixture::new();
        let root_hash = digest::bytes_sha256(b"rootfs.squashfs bytes");
        let doc = |sqfs: &str| {
            serde_json::json!({
                "version": "1.2.3",
                "build_id": "abc",
                "artifacts": [{"name": "system.squashfs", "bytes": 21, "sha256": sqfs}],
            })
            .to_string()
        };
        std::fs::write(f.path("out/version.json"), doc(&root_hash)).unwrap();
        let m = netboot(&f.request(None)).unwrap();
        assert_eq!(m.version.as_deref(), Some("1.2.3"));
        assert_eq!(m.build_id.as_deref(), Some("abc"));
        std::fs::write(f.path("out/version.json"), doc(&"0".repeat(64))).unwrap();
        let mut req = f.request(None);
        req.out = f.path("elsewhere");
        let err = netboot(&req).unwrap_err().to_string();
        assert!(err.contains("stale"), "{err}");
        assert!(!f.path("elsewhere").exists());
    }

    #[test]
    fn bad_input_is_refused_before_the_output_is_made() {
        let f = Fixture::new();
        let mut req = f.request(None);
        req.base_url = "https://10.0.2.100".into();
        let err = format!("{:#}", netboot(&req).unwrap_err());
        assert!(err.contains("--base-url"), "{err}");
        let mut req = f.request(Some("http://10.0.0.1"));
        req.out = f.path("elsewhere");
        let err = format!("{:#}", netboot(&req).unwrap_err());
        assert!(err.contains("--config-url"), "{err}");
        // The install payload's media.json needs the version.
        std::fs::remove_file(f.path("out/version.json")).unwrap();
        let err = format!("{:#}", netboot(&f.request(None)).unwrap_err());
        assert!(err.contains("version.json"), "{err}");
        assert!(err.contains("media.json"), "{err}");
        std::fs::write(f.path("out/version.json"), r#"{"version":"1.0/../x"}"#).unwrap();
        let err = format!("{:#}", netboot(&f.request(None)).unwrap_err());
        assert!(err.contains("version.json field version"), "{err}");
        std::fs::remove_file(f.path("out/boot/rootfs.squashfs")).unwrap();
        let err = format!("{:#}", netboot(&f.request(None)).unwrap_err());
        assert!(err.contains("rootfs.squashfs is missing"), "{err}");
        assert!(!f.path("out/netboot").exists());
        assert!(!f.path("elsewhere").exists());
    }
}
