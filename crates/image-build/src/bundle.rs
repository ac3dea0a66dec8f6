//! `image-build bundle` and `image-build verify`: sign the three payloads
//! `image-build disk` leaves in `OUT/boot` into an upgrade bundle, and check
//! a bundle offline against trusted public keys. The format and its checks
//! live in the `bundle` crate; this module is the command-line side (paths,
//! key files, `version.json` cross-checks, the summary printed).

use std::fmt::Write as _;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// File names of the payloads in the boot directory, in bundle order.
pub const PAYLOAD_FILES: [&str; 3] = ["vmlinuz", "initramfs.img", "rootfs.squashfs"];
/// The names `version.json` gives the same files in its `artifacts`.
const ARTIFACT_NAMES: [&str; 3] = ["vmlinuz", "initramfs.img", "system.squashfs"];

/// What `image-build bundle` was asked for.
#[derive(Debug)]
pub struct BundleRequest {
    /// PKCS#8 PEM ed25519 private key.
    pub key: PathBuf,
    /// OS version of the payloads.
    pub version: String,
    /// Directory holding vmlinuz, initramfs.img and rootfs.squashfs.
    pub boot: PathBuf,
    /// Oldest version the bundle may upgrade.
    pub min_upgrade_from: Option<String>,
    /// Free-form creation time recorded in the manifest.
    pub created: Option<String>,
    /// Bundle file to write.
    pub out: PathBuf,
}

/// Writes the bundle; returns its manifest.
///
/// When `BOOT/../version.json` exists (as `image-build disk` writes it), its
/// version must equal `--version` (the root filesystem reports that version
/// once booted) and its artifact hashes must match the files (a stale boot
/// directory is refused); the build id is taken from it. Otherwise the build
/// id is a hash of the payload hashes.
pub fn bundle(req: &BundleRequest) -> anyhow::Result<::bundle::Manifest> {
    ::bundle::Version::parse("--version", &req.version)?;
    if let Some(min) = &req.min_upgrade_from {
        ::bundle::Version::parse("--min-upgrade-from", min)?;
    }
    let key = ::bundle::SigningKey::from_file(&req.key)?;
    let paths = crate::bootdir::payload_paths(&req.boot)?;
    let prepared = ::bundle::prepare(&paths[0], &paths[1], &paths[2])?;
    let version_json = req
        .boot
        .parent()
        .map(|d| d.join("version.json"))
        .filter(|p| p.is_file());
    let build_id = match &version_json {
        Some(vj) => check_version_json(vj, &req.version, &prepared)?,
        None => {
            tracing::info!(
                boot = %req.boot.display(),
                "no version.json next to the boot directory: build id from the payload hashes"
            );
            prepared.digest_build_id()
        }
    };
    let meta = ::bundle::BundleMeta {
        os_version: req.version.clone(),
        build_id,
        created: req.created.clone(),
        min_upgrade_from: req.min_upgrade_from.clone(),
    };
    // Write next to the target and rename: a half-written bundle never has
    // the final name.
    let tmp = tmp_path(&req.out);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = prepared.write(&mut out, &key, &meta);
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, &req.out)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), req.out.display()))?;
    tracing::info!(
        out = %req.out.display(),
        version = %manifest.os_version,
        build_id = %manifest.build_id,
        key_id = %key.key_id(),
        "bundle written"
    );
    Ok(manifest)
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Checks `version.json` against the request and the files; returns its
/// build id.
fn check_version_json(
    vj: &Path,
    version: &str,
    prepared: &::bundle::Prepared,
) -> anyhow::Result<String> {
    let text = std::fs::read(vj).with_context(|| format!("cannot read {}", vj.display()))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", vj.display()))?;
    let built = doc.get("version").and_then(|v| v.as_str()).unwrap_or("");
    if built != version {
        bail!(
            "{} says the image is version {built:?}, but --version is {version:?}: \
             the root filesystem would report {built:?} after the upgrade. Rebuild with \
             `make image VERSION={version}` (or `image-build disk --version {version}`)",
            vj.display()
        );
    }
    let hashes: Vec<String> = prepared.payloads().iter().map(|p| p.sha256_hex()).collect();
    check_artifacts(vj, &doc, &hashes)?;
    doc.get("build_id")
        .and_then(|b| b.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no build_id", vj.display()))
}

/// Checks the SHA-256s of the payloads (hex, in [`PAYLOAD_FILES`] order)
/// against the `artifacts` of `doc`, the parsed `version.json` at `vj`: a
/// payload that differs from what the disk build recorded means a stale
/// boot directory. Artifacts `doc` does not list are not checked.
pub fn check_artifacts(
    vj: &Path,
    doc: &serde_json::Value,
    hashes: &[String],
) -> anyhow::Result<()> {
    let Some(artifacts) = doc.get("artifacts").and_then(|a| a.as_array()) else {
        return Ok(());
    };
    for (hash, (file, artifact)) in hashes.iter().zip(PAYLOAD_FILES.iter().zip(ARTIFACT_NAMES)) {
        let listed = artifacts
            .iter()
            .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(artifact))
            .and_then(|a| a.get("sha256"))
            .and_then(|h| h.as_str());
        if let Some(listed) = listed {
            if listed != hash {
                bail!(
                    "{file} (sha256 {hash}) is not the {artifact} {} describes (sha256 {listed}): \
                     the boot directory is stale; rebuild the image",
                    vj.display()
                );
            }
        }
    }
    Ok(())
}

/// Reads `--pubkey` values: a base64 public key, a PEM `PUBLIC KEY`, or a
/// file holding either, or the PKCS#8 PEM private key file itself.
pub fn trusted_keys(args: &[String]) -> anyhow::Result<::bundle::TrustedKeys> {
    let mut keys = Vec::with_capacity(args.len());
    for arg in args {
        let path = Path::new(arg);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --pubkey {}", path.display()))?;
            if text.contains("PRIVATE KEY") {
                keys.push(::bundle::SigningKey::from_file(path)?.public_base64());
            } else {
                keys.push(text.trim().to_owned());
            }
        } else {
            let key = arg.trim().to_owned();
            ::bundle::TrustedKeys::from_base64(std::slice::from_ref(&key))
                .with_context(|| format!("--pubkey {arg:?} is neither a file nor a public key"))?;
            keys.push(key);
        }
    }
    Ok(::bundle::TrustedKeys::from_base64(&keys)?)
}

/// Verifies `path` against `keys` (and, with `running`, that a node on that
/// version may take it); returns the summary to print.
pub fn verify(path: &Path, keys: &[String], running: Option<&str>) -> anyhow::Result<String> {
    if keys.is_empty() {
        bail!("no --pubkey given: a bundle can only be verified against a trusted key");
    }
    let trusted = trusted_keys(keys)?;
    let ids = trusted.ids();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let manifest = ::bundle::verify_reader(file, trusted, ::bundle::Limits::default())
        .with_context(|| format!("{} is refused", path.display()))?;
    if let Some(running) = running {
        manifest
            .check_upgrade_from(running)
            .with_context(|| format!("{} cannot upgrade a node on {running}", path.display()))?;
    }
    Ok(summary(path, &manifest, &ids))
}

fn summary(path: &Path, m: &::bundle::Manifest, ids: &[String]) -> String {
    let mut s = String::new();
    let signer = if ids.len() == 1 {
        format!("key {}", ids[0])
    } else {
        format!("one of the keys {}", ids.join(", "))
    };
    let _ = writeln!(
        &mut s,
        "{}: valid bundle, signed by {signer}",
        path.display()
    );
    let _ = writeln!(&mut s, "  os version        {}", m.os_version);
    let _ = writeln!(&mut s, "  build id          {}", m.build_id);
    let _ = writeln!(
        &mut s,
        "  created           {}",
        m.created.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        &mut s,
        "  min upgrade from  {}",
        m.min_upgrade_from.as_deref().unwrap_or("any version")
    );
    for p in &m.payloads {
        let _ = writeln!(
            &mut s,
            "  {:<9} {:>12} bytes  sha256 {}",
            p.name.as_str(),
            p.size,
            p.sha256_hex()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// An ed25519 key as `openssl genpkey -algorithm ed25519` writes it
    /// (the same PKCS#8 v1 PEM form `nodectl gen secrets` writes).
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIH2wIYtOtp2NsB+xHsPRp6KIsYjFMkrvXLD++Bw7u7yX\n\
        -----END PRIVATE KEY-----\n";

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let boot = dir.path().join("out/boot");
            std::fs::create_dir_all(&boot).unwrap();
            for (i, f) in PAYLOAD_FILES.iter().enumerate() {
                let data: Vec<u8> = (0..(1000 * (i + 1))).map(|j| (j * (i + 3)) as u8).collect();
                std::fs::write(boot.join(f), data).unwrap();
            }
            std::fs::write(dir.path().join("signing.key"), OPENSSL_KEY).unwrap();
            Fixture { dir }
        }
        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }
        fn request(&self, version: &str) -> BundleRequest {
            BundleRequest {
                key: self.path("signing.key"),
                version: version.into(),
                boot: self.path("out/boot"),
                min_upgrade_from: Some("1.0".into()),
                created: None,
                out: self.path(&format!("out/keelson-{version}.bundle")),
            }
        }
        fn public(&self) -> String {
            ::bundle::SigningKey::from_pkcs8_pem(OPENSSL_KEY)
                .unwrap()
                .public_base64()
        }
    }

    #[test]
    fn a_bundle_verifies_with_the_public_key_in_every_accepted_form() {
        let f = Fixture::new();
        let req = f.request("2.0.0");
        let m = bundle(&req).unwrap();
        assert_eq!(m.os_version, "2.0.0");
        assert!(!f.path("out/keelson-2.0.0.bundle.partial").exists());
        std::fs::write(f.path("pub.txt"), format!("{}\n", f.public())).unwrap();
        for key in [
            f.public(),
            f.path("pub.txt").display().to_string(),
            f.path("signing.key").display().to_string(),
        ] {
            let s = verify(&req.out, std::slice::from_ref(&key), None).unwrap();
            assert!(s.contains("valid bundle"), "{key}: {s}");
            assert!(s.contains("os version        2.0.0"), "{s}");
            assert!(s.contains(&m.build_id), "{s}");
        }
        // Without version.json the build id is the hash of the payload hashes.
        let p = ::bundle::prepare(
            &req.boot.join(PAYLOAD_FILES[0]),
            &req.boot.join(PAYLOAD_FILES[1]),
            &req.boot.join(PAYLOAD_FILES[2]),
        )
        .unwrap();
        assert_eq!(m.build_id, p.digest_build_id());
        // Upgrade-from check.
        let e = verify(&req.out, &[f.public()], Some("0.9")).unwrap_err();
        assert!(
            format!("{e:#}").contains("upgrades from version 1.0 or later"),
            "{e:#}"
        );
        assert!(verify(&req.out, &[f.public()], Some("1.0.1")).is_ok());
    }

    #[test]
    fn a_wrong_key_or_a_flipped_byte_is_refused_with_the_reason() {
        let f = Fixture::new();
        let req = f.request("2.0.0");
        bundle(&req).unwrap();
        let other = ::bundle::SigningKey::from_seed([9; 32]).public_base64();
        let e = verify(&req.out, &[other], None).unwrap_err();
        assert!(format!("{e:#}").contains("which is not trusted"), "{e:#}");

        let mut bytes = std::fs::read(&req.out).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;
        std::fs::write(&req.out, &bytes).unwrap();
        let e = verify(&req.out, &[f.public()], None).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("the rootfs payload") && msg.contains("sha256"),
            "{msg}"
        );
        assert!(verify(&req.out, &[], None).is_err());
        let e = verify(
            &req.out,
            &[f.path("no-such.pub").display().to_string()],
            None,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("neither a file nor a public key"),
            "{e:#}"
        );
    }

    #[test]
    fn version_json_must_agree_with_the_request_and_the_files() {
        let f = Fixture::new();
        let p = ::bundle::prepare(
            &f.path("out/boot/vmlinuz"),
            &f.path("out/boot/initramfs.img"),
            &f.path("out/boot/rootfs.squashfs"),
        )
        .unwrap();
        let hashes: Vec<String> = p.payloads().iter().map(|i| i.sha256_hex()).collect();
        let write_vj = |version: &str, rootfs_hash: &str| {
            let doc = serde_json::json!({
                "version": version,
                "build_id": "feedface",
                "artifacts": [
                    {"name": "vmlinuz", "bytes": 1, "sha256": hashes[0]},
                    {"name": "initramfs.img", "bytes": 1, "sha256": hashes[1]},
                    {"name": "system.squashfs", "bytes": 1, "sha256": rootfs_hash},
                ],
            });
            std::fs::write(f.path("out/version.json"), doc.to_string()).unwrap();
        };
        write_vj("2.0.0", &hashes[2]);
        assert_eq!(bundle(&f.request("2.0.0")).unwrap().build_id, "feedface");
        let e = bundle(&f.request("3.0.0")).unwrap_err();
        assert!(
            format!("{e:#}").contains("make image VERSION=3.0.0"),
            "{e:#}"
        );
        assert!(!f.path("out/keelson-3.0.0.bundle").exists());
        write_vj("2.0.0", &"0".repeat(64));
        let e = bundle(&f.request("2.0.0")).unwrap_err();
        assert!(format!("{e:#}").contains("stale"), "{e:#}");
        // A version the format cannot compare is refused up front.
        assert!(bundle(&f.request("v2")).is_err());
    }
}
