//! Where the built artifacts are: the repository's `out/` directory (or
//! `$KEELSON_OUT`), the disk image, the Kubernetes binaries, OVMF and the
//! host tools. A missing artifact is an error that says which `make` target
//! builds it: scenarios fail, they never skip.

use std::path::{Path, PathBuf};

/// A build output or host tool the harness needs is missing.
#[derive(Debug, thiserror::Error)]
#[error("{what} not found at {path}: {hint}")]
pub struct MissingArtifact {
    /// What is missing.
    pub what: String,
    /// Where it was looked for.
    pub path: PathBuf,
    /// How to get it.
    pub hint: String,
}

/// The repository's root directory (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The build output directory: `$KEELSON_OUT`, else `<repo>/out`.
pub fn out_dir() -> PathBuf {
    match std::env::var_os("KEELSON_OUT") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("out"),
    }
}

fn require(what: &str, path: PathBuf, hint: &str) -> Result<PathBuf, MissingArtifact> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingArtifact {
            what: what.to_string(),
            path,
            hint: hint.to_string(),
        })
    }
}

/// `out/keelson.raw`, the bootable disk image.
pub fn disk_image() -> Result<PathBuf, MissingArtifact> {
    require(
        "the Keelson disk image",
        out_dir().join("keelson.raw"),
        "run `make image` first",
    )
}

/// `out/v2/boot/`: kernel, initramfs and root squashfs of the upgrade
/// scenario's second image (`make image-v2`), and its `out/v2/version.json`.
pub fn v2_boot_dir() -> Result<PathBuf, MissingArtifact> {
    require(
        "the second image's boot payloads",
        out_dir().join("v2/boot/rootfs.squashfs"),
        "run `make image-v2` first",
    )
    .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// `out/netboot/`: kernel, initramfs, root squashfs and iPXE script of a
/// network boot (`make netboot`), the root expected at
/// `http://10.0.2.100:8080/`.
pub fn netboot_dir() -> Result<PathBuf, MissingArtifact> {
    require(
        "the network boot files",
        out_dir().join("netboot/keelson.ipxe"),
        "run `make netboot` first",
    )
    .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The boot ISO `make iso` wrote: `out/keelson-VERSION.iso`, VERSION from
/// `out/version.json`.
pub fn iso_image() -> Result<PathBuf, MissingArtifact> {
    let version = std::fs::read(out_dir().join("version.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "VERSION".into());
    require(
        "the boot ISO",
        out_dir().join(format!("keelson-{version}.iso")),
        "run `make iso` first",
    )
}

/// `out/version.json`, the image's version manifest.
pub fn version_manifest() -> Result<PathBuf, MissingArtifact> {
    require(
        "the image's version manifest",
        out_dir().join("version.json"),
        "run `make image` first",
    )
}

/// A Kubernetes binary from `out/kubernetes/bin/` (`kube-apiserver`, …).
pub fn kubernetes_binary(name: &str) -> Result<PathBuf, MissingArtifact> {
    require(
        name,
        out_dir().join("kubernetes/bin").join(name),
        "run `make kube` (or `make image`) first",
    )
}

/// kubectl: `out/kubernetes/bin/kubectl`, else Debian's `/usr/bin/kubectl`
/// (package `kubernetes-client`, the same 1.20).
pub fn kubectl() -> Result<PathBuf, MissingArtifact> {
    let built = out_dir().join("kubernetes/bin/kubectl");
    if built.is_file() {
        return Ok(built);
    }
    require(
        "kubectl",
        PathBuf::from("/usr/bin/kubectl"),
        "run `make image` or `make deps` (package kubernetes-client)",
    )
}

/// A host program from a Debian package, by absolute path.
pub fn host_tool(path: &str, package: &str) -> Result<PathBuf, MissingArtifact> {
    require(
        path,
        PathBuf::from(path),
        &format!("install Debian's `{package}` (`make deps`)"),
    )
}

/// A node binary (`init`, `apid`, `nodectl`) as `make node-binaries`
/// builds it: static, release, under
/// `target/x86_64-unknown-linux-gnu/release/` (or `$CARGO_TARGET_DIR`).
pub fn node_binary(name: &str) -> Result<PathBuf, MissingArtifact> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    require(
        name,
        target.join("x86_64-unknown-linux-gnu/release").join(name),
        "run `make node-binaries` (or `make image`) first",
    )
}

/// The OVMF firmware image (Debian's `ovmf`), a single flash image used with
/// `-bios`.
pub fn ovmf() -> Result<PathBuf, MissingArtifact> {
    for candidate in ["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"] {
        if Path::new(candidate).is_file() {
            return Ok(PathBuf::from(candidate));
        }
    }
    host_tool("/usr/share/ovmf/OVMF.fd", "ovmf")
}

/// The `keelson-relay` binary (guestfwd relay) next to the running
/// executable: `target/<profile>/` for the binaries, its parent for test
/// executables under `target/<profile>/deps/`.
pub fn relay_binary() -> Result<PathBuf, MissingArtifact> {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..2 {
        let candidate = dir.join("keelson-relay");
        if candidate.is_file() {
            return Ok(candidate);
        }
        match dir.parent() {
            Some(parent) => dir = parent.to_path_buf(),
            None => break,
        }
    }
    Err(MissingArtifact {
        what: "keelson-relay".into(),
        path: exe.parent().unwrap_or(Path::new(".")).join("keelson-relay"),
        hint: "build it with `cargo build -p keelson-tests` (same profile)".into(),
    })
}
