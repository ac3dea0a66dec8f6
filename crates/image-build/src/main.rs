//! `image-build`: assembles Keelson from Debian packages and our binaries,
//! without root, loop devices or mounts.
//!
//! - `image-build kubernetes --out DIR` builds kubelet and the control plane
//!   from Debian's `kubernetes` source package (cached).
//! - `image-build disk --out DIR ...` makes the GPT raw disk image
//!   `DIR/keelson.raw`, `DIR/version.json` and
//!   `DIR/boot/{vmlinuz,initramfs.img,rootfs.squashfs}`.
//! - `image-build bundle --key K --version V --boot DIR --out FILE` signs
//!   those three payloads into an upgrade bundle.
//! - `image-build verify BUNDLE --pubkey KEY` checks a bundle offline.
//! - `image-build netboot --boot DIR --base-url URL --out DIR` makes a
//!   network-boot directory of those three payloads: an iPXE script
//!   `keelson.ipxe` (the root's URL and SHA-256 on the kernel command
//!   line) and `netboot.json`, to serve over TFTP or HTTP.
//! - `image-build iso --boot DIR --out-dir OUT` makes the boot ISO
//!   `OUT/keelson-VERSION.iso` (BIOS and UEFI, CD and USB stick): the live
//!   system in maintenance mode, with what an installer writes to a disk.

mod bootdir;
mod bundle;
mod cache;
mod cpio;
mod debs;
mod digest;
mod disk;
mod elf_deps;
mod esp;
mod ext4;
mod gpt;
mod initramfs;
mod iso;
mod kubernetes;
mod manifest;
mod media;
mod modules;
mod netboot;
mod oci;
mod progress;
mod rootfs;
mod squashfs;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Builds Keelson's kubelet and its disk image.
#[derive(Debug, Parser)]
#[command(name = "image-build", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build kubelet, kube-apiserver, kube-controller-manager, kube-scheduler
    /// and kubectl from Debian's kubernetes source package (cached in
    /// $KEELSON_CACHE/kubernetes) into DIR/bin.
    Kubernetes {
        /// Output directory (gets bin/ and kubernetes.json).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the GPT raw disk image DIR/keelson.raw, DIR/version.json and
    /// DIR/boot/{vmlinuz,initramfs.img,rootfs.squashfs}.
    Disk {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Directory holding the static init, apid and nodectl.
        #[arg(long)]
        node_bin: PathBuf,
        /// Output directory of `image-build kubernetes` (bin/kubelet,
        /// kubernetes.json).
        #[arg(long)]
        kubernetes: PathBuf,
        /// Machine config to bake into STATE as config/current.yaml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Ship this kubelet instead of the one built from Debian's source.
        #[arg(long)]
        kubelet: Option<PathBuf>,
        /// Extra OCI image archive to preload into containerd (repeatable).
        #[arg(long)]
        preload: Vec<PathBuf>,
        /// Image version recorded in version.json.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        /// Seed of every partition, disk and filesystem UUID.
        #[arg(long, default_value = "keelson")]
        seed: String,
        /// Timestamp of every file in the image (seconds since 1970).
        #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = DEFAULT_EPOCH)]
        source_date_epoch: u64,
    },
    /// Sign DIR/{vmlinuz,initramfs.img,rootfs.squashfs} into an upgrade
    /// bundle. DIR/../version.json, when present, must be of the same
    /// version and files; its build id is used.
    Bundle {
        /// ed25519 private key, PKCS#8 PEM (`nodectl gen secrets` writes
        /// upgrade-signing.key).
        #[arg(long)]
        key: PathBuf,
        /// OS version of the payloads (digits and dots, optional -suffix).
        #[arg(long)]
        version: String,
        /// Directory holding vmlinuz, initramfs.img and rootfs.squashfs.
        #[arg(long)]
        boot: PathBuf,
        /// Refuse to upgrade nodes running an older version than this.
        #[arg(long)]
        min_upgrade_from: Option<String>,
        /// Creation time recorded in the manifest (free text, e.g. an
        /// RFC 3339 date). Default: none, so bundles are reproducible.
        #[arg(long)]
        created: Option<String>,
        /// Bundle file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle offline: signature, manifest, every payload hash.
    /// Prints the manifest; exits non-zero with the reason if refused.
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        /// Trusted public key: base64 of its 32 bytes, a PEM PUBLIC KEY, a
        /// file holding either, or the PKCS#8 PEM private key file
        /// (repeatable).
        #[arg(long, required = true)]
        pubkey: Vec<String>,
        /// Also check that a node running this version may take the bundle.
        #[arg(long)]
        from: Option<String>,
    },
    /// Make the network-boot directory OUT: the three payloads of BOOT
    /// (hard links, or copies), the iPXE script keelson.ipxe and
    /// netboot.json. Serve OUT over TFTP or HTTP for iPXE, and over HTTP at
    /// --base-url for stage 1, which fetches the root from there.
    Netboot {
        /// Directory holding vmlinuz, initramfs.img and rootfs.squashfs
        /// (`image-build disk` writes OUT/boot); its ../version.json, when
        /// present, gives the version.
        #[arg(long)]
        boot: PathBuf,
        /// Where OUT is served over HTTP, e.g. http://10.0.2.100:8080 (plain
        /// http://: the root's SHA-256 on the kernel command line protects
        /// it).
        #[arg(long)]
        base_url: String,
        /// Where stage 1 fetches the first machine config from (plain
        /// http://, keelson.config= on the kernel command line).
        #[arg(long)]
        config_url: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the boot ISO OUT/keelson-VERSION.iso of BOOT's payloads
    /// (VERSION from BOOT/../version.json): boots the node live in
    /// maintenance mode from a CD or USB stick, BIOS or UEFI, and carries
    /// the root and the disk's ESP tree for installing.
    Iso {
        /// Directory holding vmlinuz, initramfs.img and rootfs.squashfs
        /// (`image-build disk` writes OUT/boot and OUT/version.json).
        #[arg(long)]
        boot: PathBuf,
        /// Directory the ISO is written to.
        #[arg(long)]
        out_dir: PathBuf,
        /// Timestamp of every file and of the volume (seconds since 1970).
        #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = DEFAULT_EPOCH)]
        source_date_epoch: u64,
    },
}

/// 2024-01-01T00:00:00Z: the default timestamp of every file in an image.
const DEFAULT_EPOCH: u64 = 1_704_067_200;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-build: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bundle {
            key,
            version,
            boot,
            min_upgrade_from,
            created,
            out,
        } => {
            let started = std::time::Instant::now();
            let m = bundle::bundle(&bundle::BundleRequest {
                key,
                version,
                boot,
                min_upgrade_from,
                created,
                out: out.clone(),
            })?;
            eprintln!(
                "image-build: {} ready in {:.1} s (version {}, build {}, {} payload bytes)",
                out.display(),
                started.elapsed().as_secs_f64(),
                m.os_version,
                m.build_id,
                m.payload_bytes()
            );
            Ok(())
        }
        Command::Verify {
            bundle: file,
            pubkey,
            from,
        } => {
            print!("{}", bundle::verify(&file, &pubkey, from.as_deref())?);
            Ok(())
        }
        Command::Netboot {
            boot,
            base_url,
            config_url,
            out,
        } => {
            let m = netboot::netboot(&netboot::Request {
                boot,
                base_url,
                config_url,
                out: out.clone(),
            })?;
            eprintln!(
                "image-build: {} ready (version {}): {} boots with root {}",
                out.display(),
                m.version.as_deref().unwrap_or("unknown"),
                netboot::SCRIPT,
                m.root_url
            );
            Ok(())
        }
        Command::Iso {
            boot,
            out_dir,
            source_date_epoch,
        } => {
            let started = std::time::Instant::now();
            let b = iso::build(&iso::Request {
                boot,
                out_dir,
                epoch: source_date_epoch,
            })?;
            eprintln!(
                "image-build: {} ready in {:.1} s (version {}, volume {}, {:.1} MiB, media.json sha256 {})",
                b.path.display(),
                started.elapsed().as_secs_f64(),
                b.version,
                b.volume_id,
                b.size as f64 / f64::from(1u32 << 20),
                b.media_sha256
            );
            Ok(())
        }
        Command::Kubernetes { out } => {
            let cache = cache::root()?;
            kubernetes::build(&cache, &out)?;
            Ok(())
        }
        Command::Disk {
            out,
            node_bin,
            kubernetes,
            config,
            kubelet,
            preload,
            version,
            seed,
            source_date_epoch,
        } => {
            let cache = cache::root()?;
            let started = std::time::Instant::now();
            let m = disk::build(&disk::Request {
                out: out.clone(),
                node_bin,
                kubernetes,
                config,
                kubelet,
                preload,
                version,
                seed,
                epoch: source_date_epoch,
                cache,
            })?;
            eprintln!(
                "image-build: {} ready in {:.1} s (version {}, build {})",
                out.join("keelson.raw").display(),
                started.elapsed().as_secs_f64(),
                m.version,
                &m.build_id[..16]
            );
            Ok(())
        }
    }
}
