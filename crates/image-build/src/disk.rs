//! `image-build disk`: the whole pipeline from Debian packages and our
//! binaries to `OUT/keelson.raw` (GPT: EFI, SYSTEM-A, SYSTEM-B, STATE,
//! VAR), `OUT/version.json` and `OUT/boot/{vmlinuz,initramfs.img,rootfs.squashfs}`
//! (the three payloads of an upgrade bundle, see `image-build bundle`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::debs::{self, Pinned};
use crate::digest;
use crate::esp;
use crate::ext4;
use crate::gpt::{Guid, Partition, Table, SECTOR};
use crate::initramfs;
use crate::kubernetes;
use crate::manifest::{Artifact, KubeletSource, Manifest};
use crate::modules;
use crate::oci;
use crate::progress::{mib, Steps};
use crate::rootfs::{self, Rootfs};
use crate::squashfs;
use crate::tools::known;

const MIB: u64 = 1024 * 1024;

/// The static node binaries (`make node-binaries`) and where each lands in
/// the root: PID 1, the API gateway, the CLI, and the drain client init
/// runs on shutdown (a separate process so PID 1 parses no network input).
pub const NODE_BINARIES: &[(&str, &str)] = &[
    ("init", "usr/sbin/init"),
    ("apid", "usr/bin/apid"),
    ("nodectl", "usr/bin/nodectl"),
    ("keelson-drain", "usr/bin/keelson-drain"),
];

/// Partitions in disk order (the shared layout, see the disk-layout
/// crate): the raw image gives each its own size; VAR grows on first boot.
pub const LAYOUT: &[disk_layout::PartitionSpec] = disk_layout::PARTITIONS;

/// Debian packages the image is made from (besides the kernel image).
pub const PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "containernetworking-plugins",
    "e2fsprogs",
    "e2fsck-static",
    "libext2fs2",
    "libcom-err2",
    "libss2",
    "iptables",
    "libip4tc2",
    "libip6tc2",
    "libxtables12",
    "libnftnl11",
    "libnfnetlink0",
    "libnetfilter-conntrack3",
    "libmnl0",
    "mount",
    "util-linux",
    "libmount1",
    "libblkid1",
    "libuuid1",
    "libsmartcols1",
    "libselinux1",
    "libpcre2-8-0",
    "libseccomp2",
    "libudev1",
    "coreutils",
    "ca-certificates",
    "libc6",
    "busybox-static",
    // mkfs.fat: the installer makes the EFI partition of the disk it
    // installs to (as `disk` does for the raw image).
    "dosfstools",
];

/// What `disk` is asked to build.
#[derive(Debug)]
pub struct Request {
    /// Output directory.
    pub out: PathBuf,
    /// Directory with the static node binaries ([`NODE_BINARIES`]).
    pub node_bin: PathBuf,
    /// Output of `image-build kubernetes`.
    pub kubernetes: PathBuf,
    /// Machine config baked into STATE.
    pub config: Option<PathBuf>,
    /// A user's kubelet instead of the built one.
    pub kubelet: Option<PathBuf>,
    /// Extra OCI archives to preload.
    pub preload: Vec<PathBuf>,
    /// Image version.
    pub version: String,
    /// Seed of every UUID.
    pub seed: String,
    /// Timestamp of every file.
    pub epoch: u64,
    /// Cache root.
    pub cache: PathBuf,
}

/// Builds the image; returns the manifest written to `out/version.json`.
pub fn build(req: &Request) -> anyhow::Result<Manifest> {
    let mut steps = Steps::new(9);
    for t in [
        known::APT_GET,
        known::APT_CACHE,
        known::DPKG_DEB,
        known::DEPMOD,
        known::MKSQUASHFS,
        known::MKFS_VFAT,
        known::MCOPY,
        known::MMD,
        known::GRUB_MKIMAGE,
        known::GRUB_EDITENV,
        known::MKFS_EXT4,
        known::DEBUGFS,
        known::GCC,
    ] {
        t.path()?;
    }

    // [1] inputs: validate before anything long runs.
    let step = steps.start("inputs");
    let node_bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = req.node_bin.join(name);
        if !p.is_file() {
            bail!(
                "{} is missing: build the node binaries first (make node-binaries)",
                p.display()
            );
        }
        Ok(p)
    };
    let node_bins: Vec<(PathBuf, &str)> = NODE_BINARIES
        .iter()
        .map(|(name, dest)| Ok((node_bin(name)?, *dest)))
        .collect::<anyhow::Result<_>>()?;
    // NODE_BINARIES starts with init, checked just above to exist.
    let init = node_bins[0].0.clone();
    for (p, _) in &node_bins {
        if let Some(needs) = crate::elf_deps::needs_of(p)? {
            if needs.interpreter.is_some() || !needs.libraries.is_empty() {
                bail!(
                    "{} is dynamically linked; node binaries must be static (RUSTFLAGS='-C target-feature=+crt-static', make node-binaries)",
                    p.display()
                );
            }
        } else {
            bail!("{} is not an ELF program", p.display());
        }
    }
    let (kubelet_path, kubelet_source) = kubelet_input(req)?;
    let config_modules = match &req.config {
        Some(c) => validate_config(c)?,
        None => Vec::new(),
    };
    for p in &req.preload {
        check_oci_archive(p)?;
    }
    step.finish(&format!(
        "kubelet {}, config {}, {} extra image(s)",
        match &kubelet_source {
            KubeletSource::DebianSource { version, .. } => format!("from Debian source {version}"),
            KubeletSource::UserSupplied { path, .. } => format!("user-supplied {path}"),
        },
        req.config
            .as_ref()
            .map(|c| c.display().to_string())
            .unwrap_or_else(|| "none".into()),
        req.preload.len()
    ));

    // Inputs are good: only now touch the output directory.
    std::fs::create_dir_all(&req.out)
        .with_context(|| format!("cannot create {}", req.out.display()))?;
    let work = req.out.join(".image-build");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    // [2] Debian packages.
    let step = steps.start("debian packages");
    let mut names: Vec<String> = PACKAGES.iter().map(|s| s.to_string()).collect();
    names.push(debs::kernel_image_package()?);
    let pkgs = debs::fetch(&req.cache.join("debs"), &names)?;
    let tree = debs::unpack(&req.cache.join("staging"), &pkgs)?;
    step.finish(&format!(
        "{} packages unpacked in {}",
        pkgs.len(),
        tree.display()
    ));

    let mut id_inputs: Vec<&Path> = node_bins.iter().map(|(p, _)| p.as_path()).collect();
    id_inputs.push(&kubelet_path);
    let build_id = build_id(req, &pkgs, &id_inputs)?;

    // [3] kernel modules.
    let step = steps.start("kernel modules");
    let kver = modules::kernel_version(&tree)?;
    let idx = modules::index(&tree, &kver)?;
    let stage1_wanted: Vec<&str> = modules::STORAGE
        .iter()
        .chain(modules::WATCHDOG)
        .chain(modules::NETBOOT)
        .chain(modules::MEDIA)
        .copied()
        .collect();
    let stage1_mods = idx.closure(&stage1_wanted)?;
    let mut node_wanted: Vec<String> = modules::STORAGE
        .iter()
        .chain(modules::WATCHDOG)
        .chain(modules::NETBOOT)
        .chain(modules::MEDIA)
        .chain(modules::NODE)
        .map(|s| s.to_string())
        .collect();
    node_wanted.extend(
        machine_config::prerequisites::MODULES
            .iter()
            .map(|(n, _)| n.to_string()),
    );
    for m in &config_modules {
        if idx.closure(&[m]).is_ok() {
            node_wanted.push(m.clone());
        } else {
            eprintln!("warning: the config's kernel module {m} is not in kernel {kver}; the node will report it");
        }
    }
    let node_mods = idx.closure(&node_wanted)?;
    step.finish(&format!(
        "kernel {kver}: {} stage 1 (storage, watchdog, network boot), {} node modules",
        stage1_mods.len(),
        node_mods.len()
    ));

    // [4] initramfs.
    let step = steps.start("initramfs");
    let initramfs_mods = work.join("initramfs-modules");
    modules::install(&idx, &tree, &kver, &stage1_mods, &initramfs_mods)?;
    let e2fsck_static = tree.join("sbin/e2fsck.static");
    let (initramfs, raw_len) = initramfs::build(
        &initramfs::Inputs {
            init: &init,
            e2fsck_static: &e2fsck_static,
            modules_tree: &initramfs_mods,
        },
        u32::try_from(req.epoch).context("SOURCE_DATE_EPOCH does not fit in 32 bits")?,
    )?;
    let boot = req.out.join("boot");
    std::fs::create_dir_all(&boot).with_context(|| format!("cannot create {}", boot.display()))?;
    let initramfs_path = boot.join("initramfs.img");
    std::fs::write(&initramfs_path, &initramfs)
        .with_context(|| format!("cannot write {}", initramfs_path.display()))?;
    let vmlinuz = boot.join("vmlinuz");
    std::fs::copy(tree.join(format!("boot/vmlinuz-{kver}")), &vmlinuz)
        .with_context(|| format!("the kernel package has no boot/vmlinuz-{kver}"))?;
    step.finish(&format!(
        "{} -> {}",
        mib(raw_len as u64),
        mib(initramfs.len() as u64)
    ));

    // [5] root tree.
    let step = steps.start("root tree");
    let images = build_images(req, &tree, &work)?;
    let mut manifest = Manifest {
        version: req.version.clone(),
        build_id,
        kernel: kver.clone(),
        kubelet: kubelet_source,
        packages: pkgs.clone(),
        images: images.iter().map(|(n, _)| n.clone()).collect(),
        config_baked: req.config.is_some(),
        source_date_epoch: req.epoch,
        seed: req.seed.clone(),
        artifacts: Vec::new(),
    };
    let root_dir = work.join("root");
    let libs = build_root(
        &root_dir,
        &tree,
        &kver,
        &idx,
        &node_mods,
        &node_bins,
        &kubelet_path,
        &images,
        &manifest,
    )?;
    let root_bytes = rootfs::tree_size(&root_dir);
    step.finish(&format!(
        "{} in files, {libs} shared libraries",
        mib(root_bytes)
    ));

    // [6] squashfs.
    let step = steps.start("squashfs");
    let sqfs = work.join("system.sqfs");
    squashfs::make(&root_dir, &sqfs, req.epoch)?;
    let sqfs_len = len(&sqfs)?;
    if sqfs_len > LAYOUT[1].size {
        bail!(
            "the system squashfs is {}, larger than SYSTEM-A ({})",
            mib(sqfs_len),
            mib(LAYOUT[1].size)
        );
    }
    step.finish(&format!("{} -> {}", mib(root_bytes), mib(sqfs_len)));

    // [7] ESP.
    let step = steps.start("EFI partition");
    let esp_img = work.join("esp.img");
    let vol = Guid::derive(&req.seed, "EFI-volume").to_bytes();
    esp::make(
        &esp_img,
        LAYOUT[0].size,
        &esp::Inputs {
            vmlinuz: &vmlinuz,
            initramfs: &initramfs_path,
            volume_id: u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
            epoch: req.epoch,
            work: &work.join("esp"),
        },
    )?;
    step.finish("GRUB, grubenv, A/vmlinuz, A/initramfs.img");

    // [8] STATE and VAR.
    let step = steps.start("STATE and VAR");
    let state_img = work.join("state.img");
    let mut files = Vec::new();
    if let Some(c) = &req.config {
        files.push(ext4::FileSpec {
            path: "config/current.yaml",
            source: c,
            mode: 0o600,
        });
    }
    ext4::make(
        &state_img,
        "STATE",
        &Guid::derive(&req.seed, "STATE-fs"),
        LAYOUT[3].size,
        req.epoch,
        &files,
    )?;
    let var_img = work.join("var.img");
    ext4::make(
        &var_img,
        "VAR",
        &Guid::derive(&req.seed, "VAR-fs"),
        LAYOUT[4].size,
        req.epoch,
        &[],
    )?;
    step.finish(if req.config.is_some() {
        "config baked into STATE"
    } else {
        "no config (maintenance mode)"
    });

    // [9] disk.
    let step = steps.start("disk image");
    let raw = req.out.join("keelson.raw");
    let images_by_part: [Option<&Path>; 5] = [
        Some(&esp_img),
        Some(&sqfs),
        None,
        Some(&state_img),
        Some(&var_img),
    ];
    assemble(&raw, &req.seed, &images_by_part)?;
    let raw_len = len(&raw)?;
    manifest.artifacts = vec![
        artifact("keelson.raw", &raw)?,
        artifact("system.squashfs", &sqfs)?,
        artifact("initramfs.img", &initramfs_path)?,
        artifact("vmlinuz", &vmlinuz)?,
    ];
    // Keep the root squashfs next to the kernel and initramfs: the three
    // payloads `image-build bundle` signs.
    let rootfs_out = boot.join("rootfs.squashfs");
    std::fs::rename(&sqfs, &rootfs_out)
        .with_context(|| format!("cannot move {} to {}", sqfs.display(), rootfs_out.display()))?;
    let vj = req.out.join("version.json");
    std::fs::write(&vj, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", vj.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    step.finish(&format!("{} ({} allocated)", raw.display(), mib(raw_len)));
    Ok(manifest)
}

fn len(p: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("cannot stat {}", p.display()))?
        .len())
}

fn artifact(name: &str, p: &Path) -> anyhow::Result<Artifact> {
    Ok(Artifact {
        name: name.into(),
        bytes: len(p)?,
        sha256: digest::file_sha256(p)?,
    })
}

fn kubelet_input(req: &Request) -> anyhow::Result<(PathBuf, KubeletSource)> {
    if let Some(k) = &req.kubelet {
        if !k.is_file() {
            bail!("--kubelet {}: no such file", k.display());
        }
        let sha256 = digest::file_sha256(k)?;
        return Ok((
            k.clone(),
            KubeletSource::UserSupplied {
                path: k.display().to_string(),
                sha256,
            },
        ));
    }
    let k = req.kubernetes.join("bin/kubelet");
    if !k.is_file() {
        bail!(
            "{} is missing: build it first with `image-build kubernetes --out {}` (make kube), or pass --kubelet PATH",
            k.display(),
            req.kubernetes.display()
        );
    }
    let m = kubernetes::read_manifest(&req.kubernetes)?;
    let sha256 = digest::file_sha256(&k)?;
    Ok((
        k,
        KubeletSource::DebianSource {
            version: m.debian_version,
            orig_sha256: m.orig_sha256,
            sha256,
        },
    ))
}

/// Parses the config with machine-config (errors with line and column) and
/// returns the kernel modules it asks for.
fn validate_config(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the config {}", path.display()))?;
    let doc = machine_config::parse::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(
        machine_config::prerequisites::effective_modules(&doc.config)
            .into_iter()
            .map(|m| m.name)
            .collect(),
    )
}

fn check_oci_archive(p: &Path) -> anyhow::Result<()> {
    let f = File::open(p).with_context(|| format!("--preload {}: cannot open", p.display()))?;
    let mut a = tar::Archive::new(f);
    let mut has_index = false;
    for e in a
        .entries()
        .with_context(|| format!("--preload {}: not a tar archive", p.display()))?
    {
        let e = e.with_context(|| format!("--preload {}: not a tar archive", p.display()))?;
        let path = e
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_string())
            .unwrap_or_default();
        if path == "index.json" {
            has_index = true;
        }
    }
    if !has_index {
        bail!(
            "--preload {}: not an OCI image archive (no index.json)",
            p.display()
        );
    }
    Ok(())
}

fn build_images(req: &Request, tree: &Path, work: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let pause_dir = work.join("pause");
    std::fs::create_dir_all(&pause_dir)
        .with_context(|| format!("cannot create {}", pause_dir.display()))?;
    let pause = oci::build_pause(&pause_dir)?;
    let busybox =
        std::fs::read(tree.join("bin/busybox")).context("busybox-static has no bin/busybox")?;
    let mut out = vec![
        (
            "pause.tar".to_string(),
            oci::archive(&oci::pause_image(pause), req.epoch)?,
        ),
        (
            "busybox.tar".to_string(),
            oci::archive(&oci::busybox_image(busybox), req.epoch)?,
        ),
    ];
    for p in &req.preload {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if out.iter().any(|(n, _)| *n == name) {
            bail!(
                "--preload {}: an image archive named {name} is already included",
                p.display()
            );
        }
        out.push((
            name,
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        ));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn build_root(
    dest: &Path,
    tree: &Path,
    kver: &str,
    idx: &modules::ModuleIndex,
    mods: &std::collections::BTreeSet<String>,
    node_bins: &[(PathBuf, &str)],
    kubelet: &Path,
    images: &[(String, Vec<u8>)],
    manifest: &Manifest,
) -> anyhow::Result<usize> {
    let mut r = Rootfs::create(dest, tree)?;
    let mut elf_inputs: Vec<PathBuf> = Vec::new();
    for p in rootfs::PROGRAMS {
        r.install_from_tree(Path::new(p))?;
        elf_inputs.push(tree.join(crate::elf_deps::resolve_in_tree(tree, Path::new(p))?));
    }
    for d in rootfs::DIRECTORIES {
        for p in r.install_dir_from_tree(d)? {
            elf_inputs.push(tree.join(p));
        }
    }
    // Every iptables front end Debian ships as a link to the multi binaries.
    let mut sbin: Vec<String> = std::fs::read_dir(tree.join("usr/sbin"))
        .context("the packages have no usr/sbin")?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tables") && !n.contains("apply"))
        .collect();
    sbin.sort();
    for n in sbin {
        r.install_from_tree(&Path::new("usr/sbin").join(n))?;
    }
    for (name, target) in rootfs::IPTABLES_ALTERNATIVES {
        r.link(&format!("usr/sbin/{name}"), target)?;
    }
    for (bin, dest) in node_bins {
        r.install_host_file(bin, dest, 0o755)?;
    }
    r.install_host_file(kubelet, "usr/bin/kubelet", 0o755)?;
    elf_inputs.push(kubelet.to_path_buf());
    let libs = r.install_libraries(&elf_inputs)?;
    modules::install(idx, tree, kver, mods, dest)?;
    for (name, body) in rootfs::ETC_FILES {
        r.write(
            &format!("{}/{name}", rootfs::ETC_DIR),
            body.as_bytes(),
            0o644,
        )?;
    }
    r.write(
        &format!("{}/ssl/certs/ca-certificates.crt", rootfs::ETC_DIR),
        &rootfs::ca_bundle(tree)?,
        0o644,
    )?;
    let mke2fs_conf =
        std::fs::read(tree.join("etc/mke2fs.conf")).context("e2fsprogs has no etc/mke2fs.conf")?;
    r.write(
        &format!("{}/mke2fs.conf", rootfs::ETC_DIR),
        &mke2fs_conf,
        0o644,
    )?;
    for (name, bytes) in images {
        r.write(&format!("usr/share/keelson/images/{name}"), bytes, 0o644)?;
    }
    r.write(
        "usr/lib/keelson/version.json",
        &serde_json::to_vec_pretty(manifest)?,
        0o644,
    )?;
    Ok(libs)
}

fn build_id(req: &Request, pkgs: &[Pinned], bins: &[&Path]) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    h.update(format!(
        "image-build {}\0{}\0{}\0{}\0",
        env!("CARGO_PKG_VERSION"),
        req.version,
        req.seed,
        req.epoch
    ));
    for p in pkgs {
        h.update(format!("{} {} {}\0", p.name, p.version, p.sha256));
    }
    for b in bins {
        h.update(digest::file_sha256(b)?);
    }
    if let Some(c) = &req.config {
        h.update(digest::file_sha256(c)?);
    }
    for p in &req.preload {
        h.update(digest::file_sha256(p)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes the GPT and copies each partition image (sparse: zero blocks are
/// skipped) at its offset.
fn assemble(raw: &Path, seed: &str, images: &[Option<&Path>; 5]) -> anyhow::Result<()> {
    let total_bytes = disk_layout::min_disk_bytes();
    let mut partitions = Vec::new();
    for e in disk_layout::plan(total_bytes, false)? {
        partitions.push(Partition {
            name: e.spec.name.to_string(),
            type_guid: Guid::parse(e.spec.type_guid)?,
            guid: Guid::derive(seed, e.spec.name),
            first_lba: e.first_lba(),
            last_lba: e.last_lba(),
        });
    }
    let table = Table {
        disk_guid: Guid::derive(seed, "disk"),
        partitions,
        total_sectors: total_bytes / SECTOR,
    };
    if raw.exists() {
        std::fs::remove_file(raw).with_context(|| format!("cannot remove {}", raw.display()))?;
    }
    let f = File::create(raw).with_context(|| format!("cannot create {}", raw.display()))?;
    f.set_len(total_bytes)
        .with_context(|| format!("cannot size {}", raw.display()))?;
    table.write(&f)?;
    for (img, part) in images.iter().zip(&table.partitions) {
        let Some(img) = img else { continue };
        let size = len(img)?;
        let cap = (part.last_lba - part.first_lba + 1) * SECTOR;
        if size > cap {
            bail!(
                "{} ({}) does not fit partition {} ({})",
                img.display(),
                mib(size),
                part.name,
                mib(cap)
            );
        }
        let mut src = File::open(img).with_context(|| format!("cannot open {}", img.display()))?;
        let mut buf = vec![0u8; MIB as usize];
        let mut off = 0u64;
        loop {
            let n = read_full(&mut src, &mut buf)
                .with_context(|| format!("cannot read {}", img.display()))?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|b| *b != 0) {
                f.write_all_at(&buf[..n], part.first_lba * SECTOR + off)
                    .with_context(|| {
                        format!("cannot write {} into {}", part.name, raw.display())
                    })?;
            }
            off += n as u64;
        }
    }
    f.sync_all()
        .with_context(|| format!("cannot sync {}", raw.display()))?;
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}
