//! `image-build kubernetes`: kubelet and the control plane built from
//! Debian's `kubernetes` source package (1.20.2 with its vendored tree) with
//! Debian's Go, once, and cached under
//! `$KEELSON_CACHE/kubernetes/<key>/bin` where key is the SHA-256 of the
//! `.orig` tarball followed by [`RECIPE`].
//!
//! The source is fetched through a private deb-src list; the host's apt
//! configuration is never changed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest;
use crate::progress::Steps;
use crate::tools::{self, known};

/// The binaries built, in `bin/`.
pub const BINARIES: [&str; 5] = [
    "kubelet",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// The build recipe; part of the cache key, so changing how we build
/// rebuilds.
pub const RECIPE: &str = "keelson-kubernetes-recipe-v1: make WHAT=\"cmd/kubelet cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubectl\" KUBE_BUILD_PLATFORMS=linux/amd64 CGO_ENABLED=0";

/// Name of the manifest written next to `bin/` in the output directory.
pub const MANIFEST: &str = "kubernetes.json";

/// What was built, recorded in `OUT/kubernetes.json` (read by `disk`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KubeBuild {
    /// Debian source version, e.g. `1.20.5+really1.20.2-1.1+deb12u1`.
    pub debian_version: String,
    /// SHA-256 of the `.orig` tarball.
    pub orig_sha256: String,
    /// Cache key (SHA-256 of tarball + recipe).
    pub key: String,
}

/// Fetches, builds (unless cached) and places the binaries in `out/bin`.
pub fn build(cache: &Path, out: &Path) -> anyhow::Result<KubeBuild> {
    let mut steps = Steps::new(3);
    let kube_dir = cache.join("kubernetes");

    let step = steps.start("kubernetes source");
    let src_dir = kube_dir.join("src");
    let (orig, debian_version) = match find_orig(&src_dir)? {
        Some(found) => found,
        None => {
            fetch_source(&kube_dir, &src_dir)?;
            find_orig(&src_dir)?.with_context(|| {
                format!(
                    "apt-get source left no kubernetes_*.orig.tar.gz in {}",
                    src_dir.display()
                )
            })?
        }
    };
    let mut hasher = Sha256::new();
    digest::hash_file_into(&mut hasher, &orig)?;
    let orig_sha256 = hex::encode(hasher.clone().finalize());
    hasher.update(RECIPE.as_bytes());
    let key = hex::encode(hasher.finalize());
    step.finish(&format!(
        "{debian_version}, orig sha256 {}",
        &orig_sha256[..16]
    ));

    let step = steps.start("kubernetes build");
    let bin = kube_dir.join(&key).join("bin");
    if BINARIES.iter().all(|b| bin.join(b).is_file()) {
        step.finish(&format!("cached in {}", bin.display()));
    } else {
        compile(&kube_dir, &orig, &key, &cache.join("go"), &bin)?;
        step.finish(&format!("built into {}", bin.display()));
    }

    let step = steps.start("kubernetes output");
    let out_bin = out.join("bin");
    std::fs::create_dir_all(&out_bin)
        .with_context(|| format!("cannot create {}", out_bin.display()))?;
    for b in BINARIES {
        link_or_copy(&bin.join(b), &out_bin.join(b))?;
    }
    let build = KubeBuild {
        debian_version,
        orig_sha256,
        key,
    };
    let manifest = out.join(MANIFEST);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&build)?)
        .with_context(|| format!("cannot write {}", manifest.display()))?;
    step.finish(&format!("{}", out_bin.display()));
    Ok(build)
}

/// Reads `DIR/kubernetes.json` written by [`build`].
pub fn read_manifest(dir: &Path) -> anyhow::Result<KubeBuild> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (run `image-build kubernetes --out {}` first)",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))
}

/// The `.orig.tar.gz` in `dir` and the Debian version from the `.dsc`.
fn find_orig(dir: &Path) -> anyhow::Result<Option<(PathBuf, String)>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut orig = None;
    let mut version = None;
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("kubernetes_") && name.ends_with(".orig.tar.gz") {
            orig = Some(e.path());
        }
        if let Some(v) = name
            .strip_prefix("kubernetes_")
            .and_then(|n| n.strip_suffix(".dsc"))
        {
            version = Some(v.to_string());
        }
    }
    Ok(orig.zip(version))
}

/// `apt-get source --download-only kubernetes` through a private deb-src
/// list made from the host's deb sources.
fn fetch_source(kube_dir: &Path, src_dir: &Path) -> anyhow::Result<()> {
    let apt_dir = kube_dir.join("apt");
    let parts = apt_dir.join("sources.list.d");
    let lists = apt_dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))
        .with_context(|| format!("cannot create {}", lists.display()))?;
    std::fs::create_dir_all(&parts)
        .with_context(|| format!("cannot create {}", parts.display()))?;
    std::fs::create_dir_all(src_dir)
        .with_context(|| format!("cannot create {}", src_dir.display()))?;
    let host = Path::new("/etc/apt/sources.list.d/debian.sources");
    let text = std::fs::read_to_string(host).with_context(|| {
        format!(
            "cannot read {} (the host's Debian sources, used to make the private deb-src list)",
            host.display()
        )
    })?;
    let src: String = text
        .lines()
        .map(|l| {
            if l.trim() == "Types: deb" {
                "Types: deb-src".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if !src.contains("Types: deb-src") {
        bail!(
            "{} has no `Types: deb` stanza to derive a deb-src list from",
            host.display()
        );
    }
    std::fs::write(parts.join("keelson-src.sources"), src + "\n")
        .with_context(|| format!("cannot write into {}", parts.display()))?;
    let apt_opts = |cmd: &mut std::process::Command| {
        cmd.arg("-q")
            .arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceParts={}", parts.display()))
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", lists.display()));
    };
    let mut update = known::APT_GET.command()?;
    apt_opts(&mut update);
    update.arg("update");
    tools::run(&mut update)?;
    let mut source = known::APT_GET.command()?;
    apt_opts(&mut source);
    source
        .args(["source", "--download-only", "kubernetes"])
        .current_dir(src_dir);
    tools::run(&mut source)?;
    Ok(())
}

/// Unpacks the tarball and runs the Kubernetes make into `bin`.
fn compile(
    kube_dir: &Path,
    orig: &Path,
    key: &str,
    gocache: &Path,
    bin: &Path,
) -> anyhow::Result<()> {
    for t in [known::GO, known::MAKE, known::RSYNC, known::TAR] {
        t.path()?;
    }
    let work = kube_dir.join(format!("work-{key}"));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove the stale build tree {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    std::fs::create_dir_all(gocache)
        .with_context(|| format!("cannot create {}", gocache.display()))?;
    let mut untar = known::TAR.command()?;
    untar.arg("-xzf").arg(orig).arg("-C").arg(&work);
    tools::run(&mut untar)?;
    let tree = std::fs::read_dir(&work)
        .with_context(|| format!("cannot list {}", work.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("Makefile").is_file())
        .with_context(|| format!("no Kubernetes tree with a Makefile in {}", work.display()))?;
    let what = BINARIES
        .iter()
        .map(|b| format!("cmd/{b}"))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("building {what} with Go (several minutes on 2 cores) ...");
    let mut make = known::MAKE.command()?;
    make.arg(format!("WHAT={what}"))
        .arg("KUBE_BUILD_PLATFORMS=linux/amd64")
        .current_dir(&tree)
        .env("GOCACHE", gocache)
        .env("GOPATH", work.join("gopath"))
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("HOME", &work);
    tools::run_streaming(&mut make)?;
    let built = tree.join("_output/local/bin/linux/amd64");
    let tmp = bin.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for b in BINARIES {
        let from = built.join(b);
        std::fs::copy(&from, tmp.join(b))
            .with_context(|| format!("the build did not produce {}", from.display()))?;
    }
    std::fs::rename(&tmp, bin)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), bin.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    Ok(())
}

/// Hard-links `from` to `to` (replacing `to`), copying across filesystems.
pub fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() || to.is_symlink() {
        std::fs::remove_file(to).with_context(|| format!("cannot replace {}", to.display()))?;
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}
