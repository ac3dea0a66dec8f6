//! The writer: hashes the three payload files (first pass), signs the
//! manifest, then streams header and payloads to the output (second pass,
//! re-hashing to catch a file that changed in between). Memory use is one
//! 1 MiB buffer, whatever the payload sizes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::keys::SigningKey;
use crate::manifest::{Limits, Manifest, PayloadInfo, PayloadName};
use crate::{FORMAT_VERSION, MAGIC, MAX_MANIFEST_LEN, SIGNATURE_CONTEXT};

const BUF: usize = 1 << 20;

/// The manifest fields that do not come from the payloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleMeta {
    /// OS version the bundle installs.
    pub os_version: String,
    /// Build identifier.
    pub build_id: String,
    /// Free-form creation time (informational).
    pub created: Option<String>,
    /// Oldest version the bundle may upgrade.
    pub min_upgrade_from: Option<String>,
}

/// Payload files hashed by the first pass, ready to be written.
#[derive(Clone, Debug)]
pub struct Prepared {
    paths: [PathBuf; 3],
    payloads: [PayloadInfo; 3],
}

/// First pass: sizes and SHA-256 of the kernel, initramfs and rootfs files.
pub fn prepare(kernel: &Path, initramfs: &Path, rootfs: &Path) -> Result<Prepared, BundleError> {
    let paths = [kernel, initramfs, rootfs];
    let mut payloads = Vec::with_capacity(3);
    for (name, path) in PayloadName::ALL.into_iter().zip(paths) {
        let mut f = open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF];
        let mut size = 0u64;
        loop {
            let n = read(&mut f, &mut buf, path)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        payloads.push(PayloadInfo {
            name,
            size,
            sha256: hasher.finalize().into(),
        });
    }
    let payloads: [PayloadInfo; 3] = match payloads.try_into() {
        Ok(p) => p,
        // Three names zipped with three paths.
        Err(_) => unreachable!("three payloads"),
    };
    Ok(Prepared {
        paths: paths.map(Path::to_path_buf),
        payloads,
    })
}

impl Prepared {
    /// Sizes and hashes, kernel first.
    pub fn payloads(&self) -> &[PayloadInfo; 3] {
        &self.payloads
    }

    /// A build id derived from the payloads: hex SHA-256 of the three hex
    /// hashes joined by newlines (kernel, initramfs, rootfs).
    pub fn digest_build_id(&self) -> String {
        let joined: Vec<String> = self.payloads.iter().map(|p| p.sha256_hex()).collect();
        hex::encode(Sha256::digest(joined.join("\n").as_bytes()))
    }

    /// The manifest these payloads and `meta` make, validated against the
    /// default [`Limits`] (a bundle the default reader would refuse is not
    /// written).
    pub fn manifest(&self, meta: &BundleMeta) -> Result<Manifest, BundleError> {
        let m = Manifest {
            format_version: FORMAT_VERSION,
            os_version: meta.os_version.clone(),
            build_id: meta.build_id.clone(),
            created: meta.created.clone(),
            min_upgrade_from: meta.min_upgrade_from.clone(),
            payloads: self.payloads.clone(),
        };
        m.validate(&Limits::default())?;
        Ok(m)
    }

    /// Second pass: writes the signed header and the payloads to `out`,
    /// checking each file still has the size and hash of the first pass.
    /// Returns the manifest written.
    pub fn write(
        &self,
        mut out: impl Write,
        key: &SigningKey,
        meta: &BundleMeta,
    ) -> Result<Manifest, BundleError> {
        let manifest = self.manifest(meta)?;
        let header = encode_header(key, &manifest.to_canonical_json())?;
        out.write_all(&header).map_err(write_err)?;
        let mut buf = vec![0u8; BUF];
        for (info, path) in self.payloads.iter().zip(&self.paths) {
            let mut f = open(path)?;
            let mut hasher = Sha256::new();
            let mut left = info.size;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(BUF).min(BUF);
                let n = read(&mut f, &mut buf[..want], path)?;
                if n == 0 {
                    return Err(changed(path, format!("{left} bytes shorter")));
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(write_err)?;
                left -= n as u64;
            }
            if read(&mut f, &mut buf[..1], path)? != 0 {
                return Err(changed(path, "it grew".into()));
            }
            let actual: [u8; 32] = hasher.finalize().into();
            if actual != info.sha256 {
                return Err(changed(path, "its sha256 differs".into()));
            }
        }
        out.flush().map_err(write_err)?;
        Ok(manifest)
    }
}

/// Writes a bundle of the three payload files to `out`, signed by `key`:
/// [`prepare`] then [`Prepared::write`].
pub fn write_bundle(
    out: impl Write,
    key: &SigningKey,
    meta: &BundleMeta,
    kernel: &Path,
    initramfs: &Path,
    rootfs: &Path,
) -> Result<Manifest, BundleError> {
    prepare(kernel, initramfs, rootfs)?.write(out, key, meta)
}

/// Everything before the payloads, for `manifest_json` signed by `key`:
/// magic, format version, manifest length, the manifest bytes as given,
/// the signer's public key and the signature. Low level: the bytes are not
/// checked to be a valid manifest (tests and fuzzing sign invalid ones).
pub fn encode_header(key: &SigningKey, manifest_json: &[u8]) -> Result<Vec<u8>, BundleError> {
    let len = u32::try_from(manifest_json.len())
        .ok()
        .filter(|l| (1..=MAX_MANIFEST_LEN).contains(l))
        .ok_or(BundleError::ManifestLength {
            len: u32::try_from(manifest_json.len()).unwrap_or(u32::MAX),
            max: MAX_MANIFEST_LEN,
        })?;
    let mut head = Vec::with_capacity(16 + manifest_json.len() + 96);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&len.to_le_bytes());
    head.extend_from_slice(manifest_json);
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + head.len());
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.extend_from_slice(&head);
    let signature = key.sign(&message);
    head.extend_from_slice(&key.public_bytes());
    head.extend_from_slice(&signature);
    Ok(head)
}

fn open(path: &Path) -> Result<File, BundleError> {
    File::open(path).map_err(|source| BundleError::Io {
        what: format!("cannot open {}", path.display()),
        source,
    })
}

fn read(f: &mut File, buf: &mut [u8], path: &Path) -> Result<usize, BundleError> {
    loop {
        match f.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(BundleError::Io {
                    what: format!("cannot read {}", path.display()),
                    source,
                })
            }
        }
    }
}

fn write_err(source: std::io::Error) -> BundleError {
    BundleError::Io {
        what: "cannot write the bundle".into(),
        source,
    }
}

fn changed(path: &Path, reason: String) -> BundleError {
    BundleError::PayloadChanged {
        path: path.display().to_string(),
        reason,
    }
}
