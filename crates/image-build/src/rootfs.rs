//! The root filesystem tree (what becomes the SYSTEM squashfs), assembled
//! from the unpacked Debian packages and our binaries on a merged-/usr
//! layout (`/bin`, `/sbin`, `/lib`, `/lib64` are symlinks into `/usr`):
//! programs with their shared-library closure, kernel modules with depmod
//! output, static /etc content, preloaded images and the version manifest.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::elf_deps;

/// Programs taken from the unpacked packages (tree-relative paths).
pub const PROGRAMS: &[&str] = &[
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/bin/ctr",
    "usr/sbin/runc",
    "usr/sbin/xtables-legacy-multi",
    "usr/sbin/xtables-nft-multi",
    "bin/mount",
    "bin/umount",
    "bin/findmnt",
    "usr/bin/nsenter",
    "usr/bin/du",
    "sbin/e2fsck",
    "sbin/fsck.ext4",
    "sbin/resize2fs",
    "sbin/mke2fs",
    "sbin/mkfs.ext4",
    "sbin/tune2fs",
    "sbin/dumpe2fs",
    // The installer makes the EFI partition of the disk it installs to.
    "sbin/mkfs.fat",
];

/// Directories whose every entry is taken (CNI plugins, xtables extensions).
pub const DIRECTORIES: &[&str] = &["usr/lib/cni", "usr/lib/x86_64-linux-gnu/xtables"];

/// The iptables front ends Debian sets up with update-alternatives; we pick
/// the legacy backend (kubelet 1.20 and the CNI plugins drive `iptables`).
pub const IPTABLES_ALTERNATIVES: &[(&str, &str)] = &[
    ("iptables", "xtables-legacy-multi"),
    ("iptables-save", "xtables-legacy-multi"),
    ("iptables-restore", "xtables-legacy-multi"),
    ("ip6tables", "xtables-legacy-multi"),
    ("ip6tables-save", "xtables-legacy-multi"),
    ("ip6tables-restore", "xtables-legacy-multi"),
];

/// Mount points created empty.
pub const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "etc",
    "var",
    "root",
    "system/state",
    "system/efi",
];

/// Static `/etc` content the init copies into the `/etc` tmpfs.
pub const ETC_DIR: &str = "usr/lib/keelson/etc";

/// Maps a package path onto the merged-/usr layout.
pub fn merged(rel: &Path) -> PathBuf {
    let mut comps = rel.components();
    match comps
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
    {
        Some(first) if ["bin", "sbin", "lib", "lib64"].contains(&first.as_str()) => {
            Path::new("usr").join(first).join(comps.as_path())
        }
        _ => rel.to_path_buf(),
    }
}

/// A root tree being assembled at `dest` from the package tree `tree`.
#[derive(Debug)]
pub struct Rootfs {
    /// Destination directory.
    pub dest: PathBuf,
    /// Unpacked packages.
    pub tree: PathBuf,
    installed: BTreeSet<PathBuf>,
}

impl Rootfs {
    /// Creates `dest` with the merged-/usr symlinks and mount points.
    pub fn create(dest: &Path, tree: &Path) -> anyhow::Result<Self> {
        if dest.exists() {
            std::fs::remove_dir_all(dest)
                .with_context(|| format!("cannot remove {}", dest.display()))?;
        }
        for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
            mkdir(&dest.join(d))?;
        }
        for d in ["bin", "sbin", "lib", "lib64"] {
            symlink(format!("usr/{d}"), dest.join(d))
                .with_context(|| format!("cannot link /{d} in {}", dest.display()))?;
        }
        for d in MOUNT_POINTS {
            mkdir(&dest.join(d))?;
        }
        Ok(Rootfs {
            dest: dest.to_path_buf(),
            tree: tree.to_path_buf(),
            installed: BTreeSet::new(),
        })
    }

    /// Installs a package path (file or symlink chain) at its merged path.
    pub fn install_from_tree(&mut self, rel: &Path) -> anyhow::Result<()> {
        let rel = elf_deps::normalize(rel);
        if !self.installed.insert(rel.clone()) {
            return Ok(());
        }
        let src = self.tree.join(&rel);
        let meta = std::fs::symlink_metadata(&src).with_context(|| {
            format!(
                "{} is not in the unpacked packages ({})",
                rel.display(),
                self.tree.display()
            )
        })?;
        let dst = self.dest.join(merged(&rel));
        if let Some(parent) = dst.parent() {
            mkdir(parent)?;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src)
                .with_context(|| format!("cannot read link {}", src.display()))?;
            if !dst.is_symlink() {
                symlink(&target, &dst)
                    .with_context(|| format!("cannot create link {}", dst.display()))?;
            }
            let next = if target.is_absolute() {
                target.clone()
            } else {
                rel.parent().unwrap_or(Path::new("")).join(&target)
            };
            self.install_from_tree(&next)
        } else if meta.is_dir() {
            mkdir(&dst)
        } else {
            copy_file(&src, &dst, meta.permissions().mode() & 0o7777)
        }
    }

    /// Installs every entry of a package directory.
    pub fn install_dir_from_tree(&mut self, rel: &str) -> anyhow::Result<Vec<PathBuf>> {
        let dir = self.tree.join(rel);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{rel} is not in the unpacked packages"))?
            .filter_map(Result::ok)
            .map(|e| Path::new(rel).join(e.file_name()))
            .collect();
        names.sort();
        for n in &names {
            self.install_from_tree(n)?;
        }
        Ok(names)
    }

    /// Installs a host file (our binaries, a user's kubelet) at `to`.
    pub fn install_host_file(&mut self, from: &Path, to: &str, mode: u32) -> anyhow::Result<()> {
        let dst = self.dest.join(to);
        if let Some(parent) = dst.parent() {
            mkdir(parent)?;
        }
        copy_file(from, &dst, mode)
    }

    /// Writes bytes at `to`.
    pub fn write(&mut self, to: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
        let dst = self.dest.join(to);
        if let Some(parent) = dst.parent() {
            mkdir(parent)?;
        }
        std::fs::write(&dst, bytes).with_context(|| format!("cannot write {}", dst.display()))?;
        set_mode(&dst, mode)
    }

    /// Creates a symlink `at` → `target`.
    pub fn link(&mut self, at: &str, target: &str) -> anyhow::Result<()> {
        let dst = self.dest.join(at);
        if dst.is_symlink() || dst.exists() {
            bail!("{} already exists", dst.display());
        }
        symlink(target, &dst).with_context(|| format!("cannot create link {}", dst.display()))
    }

    /// Installs the shared-library closure of `programs` (host paths).
    pub fn install_libraries(&mut self, programs: &[PathBuf]) -> anyhow::Result<usize> {
        let libs = elf_deps::closure(&self.tree, programs)?;
        for l in &libs {
            self.install_from_tree(l)?;
        }
        Ok(libs.len())
    }
}

/// The CA bundle: every certificate of the ca-certificates package,
/// concatenated in path order (what update-ca-certificates would produce).
pub fn ca_bundle(tree: &Path) -> anyhow::Result<Vec<u8>> {
    let root = tree.join("usr/share/ca-certificates");
    let mut certs = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                certs.push(p);
            }
        }
    }
    certs.sort();
    if certs.is_empty() {
        bail!("no certificates in {}", root.display());
    }
    let mut out = Vec::new();
    for c in certs {
        let mut b = std::fs::read(&c).with_context(|| format!("cannot read {}", c.display()))?;
        if !b.ends_with(b"\n") {
            b.push(b'\n');
        }
        out.extend(b);
    }
    Ok(out)
}

/// Static /etc files: passwd, group, nsswitch.conf, hosts.
pub const ETC_FILES: &[(&str, &str)] = &[
    ("passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
    ("group", "root:x:0:\nnogroup:x:65534:\n"),
    ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"),
    ("hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"),
];

fn mkdir(p: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", p.display()))
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

/// Total size in bytes of regular files under `dir`.
pub fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn package_paths_map_onto_merged_usr() {
        assert_eq!(
            merged(Path::new("lib/x86_64-linux-gnu/libc.so.6")),
            Path::new("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            merged(Path::new("sbin/e2fsck")),
            Path::new("usr/sbin/e2fsck")
        );
        assert_eq!(merged(Path::new("usr/bin/du")), Path::new("usr/bin/du"));
        assert_eq!(merged(Path::new("libexec/x")), Path::new("libexec/x"));
    }
}
