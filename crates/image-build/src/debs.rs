//! Debian packages: pin each to the host apt's candidate version, download
//! it with `apt-get download` into `$KEELSON_CACHE/debs`, and unpack a set of
//! them with `dpkg-deb -x` into one staging tree (cached by the set's hash).
//! Nothing is installed on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::digest;
use crate::tools::{self, known};

/// One downloaded package at an exact version.
#[derive(Clone, Debug, Serialize)]
pub struct Pinned {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// The .deb in the cache.
    #[serde(skip)]
    pub file: PathBuf,
    /// SHA-256 of the .deb.
    pub sha256: String,
}

/// The candidate versions apt would install, from one `apt-cache policy`
/// call; a package without a candidate is an error naming it.
pub fn candidate_versions(names: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut cmd = known::APT_CACHE.command()?;
    cmd.arg("policy").args(names);
    let out = tools::run(&mut cmd)?;
    let found = parse_policy(&String::from_utf8_lossy(&out.stdout));
    let mut versions = BTreeMap::new();
    for n in names {
        match found.get(n) {
            Some(v) => {
                versions.insert(n.clone(), v.clone());
            }
            None => anyhow::bail!(
                "Debian package {n} has no installable candidate (is it in the host's apt lists? run apt-get update)"
            ),
        }
    }
    Ok(versions)
}

/// Package → candidate version from `apt-cache policy` output.
fn parse_policy(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let name = line.trim_end_matches(':');
            current = Some(name.split(':').next().unwrap_or(name).to_string());
        } else if let Some(v) = line.trim().strip_prefix("Candidate:").map(str::trim) {
            if let Some(name) = current.take().filter(|_| v != "(none)") {
                out.insert(name, v.to_string());
            }
        }
    }
    out
}

/// The versioned kernel image package `linux-image-amd64` depends on, e.g.
/// `linux-image-6.1.0-56-amd64`.
pub fn kernel_image_package() -> anyhow::Result<String> {
    let mut cmd = known::APT_CACHE.command()?;
    cmd.args(["depends", "linux-image-amd64"]);
    let out = tools::run(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:").map(str::trim))
        .find(|d| d.starts_with("linux-image-") && !d.starts_with("linux-image-amd64"))
        .map(str::to_string)
        .context("linux-image-amd64 does not depend on a linux-image-<version> package")
}

fn deb_file_prefix(name: &str, version: &str) -> String {
    format!("{name}_{}_", version.replace(':', "%3a"))
}

fn find_deb(dir: &Path, name: &str, version: &str) -> Option<PathBuf> {
    let prefix = deb_file_prefix(name, version);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".deb")
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Pins every package to its candidate version and downloads the missing
/// ones into `dir`. Returns them sorted by name.
pub fn fetch(dir: &Path, names: &[String]) -> anyhow::Result<Vec<Pinned>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let versions = candidate_versions(names)?;
    let missing: Vec<String> = versions
        .iter()
        .filter(|(n, v)| find_deb(dir, n, v).is_none())
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !missing.is_empty() {
        tracing::info!(count = missing.len(), "downloading Debian packages");
        let mut cmd = known::APT_GET.command()?;
        cmd.arg("-q")
            .arg("download")
            .args(&missing)
            .current_dir(dir);
        tools::run(&mut cmd)
            .context("apt-get download failed (are the host's apt lists current?)")?;
    }
    let mut out = Vec::new();
    for (name, version) in versions {
        let file = find_deb(dir, &name, &version).with_context(|| {
            format!(
                "apt-get download left no {name} {version} .deb in {}",
                dir.display()
            )
        })?;
        let sha256 = digest::file_sha256(&file)?;
        out.push(Pinned {
            name,
            version,
            file,
            sha256,
        });
    }
    Ok(out)
}

/// Unpacks every package into one staging tree under `staging_root`, named by
/// the hash of the package set; reused when it is already complete.
pub fn unpack(staging_root: &Path, pkgs: &[Pinned]) -> anyhow::Result<PathBuf> {
    let mut hasher = Sha256::new();
    for p in pkgs {
        hasher.update(p.sha256.as_bytes());
        hasher.update(b"\n");
    }
    let key = hex::encode(hasher.finalize());
    let dir = staging_root.join(&key[..32]);
    let marker = dir.join(".keelson-complete");
    if marker.is_file() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for p in pkgs {
        let mut cmd = known::DPKG_DEB.command()?;
        cmd.arg("-x").arg(&p.file).arg(&dir);
        tools::run(&mut cmd).with_context(|| format!("cannot unpack {} {}", p.name, p.version))?;
    }
    std::fs::write(&marker, b"").with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn policy_output_gives_each_candidate() {
        let text = "containerd:\n  Installed: (none)\n  Candidate: 1.6.20~ds1-1+deb12u3\n  Version table:\n     1.6.20~ds1-1+deb12u3 500\n\
                    libc6:amd64:\n  Installed: 2.36-9\n  Candidate: 2.36-9+deb12u14\n\
                    ghost:\n  Installed: (none)\n  Candidate: (none)\n";
        let got = parse_policy(text);
        assert_eq!(got.get("containerd").unwrap(), "1.6.20~ds1-1+deb12u3");
        assert_eq!(got.get("libc6").unwrap(), "2.36-9+deb12u14");
        assert!(!got.contains_key("ghost"));
        assert_eq!(
            deb_file_prefix("busybox-static", "1:1.35.0-4"),
            "busybox-static_1%3a1.35.0-4_"
        );
    }
}
