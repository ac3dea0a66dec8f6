//! `image-build`: assembles Keelson from Debian packages and our binaries,
//! without root, loop devices or mounts.
//!
//! - `image-build kubernetes --out DIR` builds kubelet and the control plane
//!   from Debian's `kubernetes` source package (cached).
//! - `image-build disk --out DIR ...` makes the GPT raw disk image
//!   `DIR/keelson.raw`, `DIR/version.json` and `DIR/boot/{vmlinuz,initramfs.img}`.

mod cache;
mod cpio;
mod debs;
mod elf_deps;
mod gpt;
mod initramfs;
mod modules;
mod oci;
mod digest;
mod kubernetes;
mod progress;
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
}

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
    let cache = cache::root()?;
    match cli.command {
        Command::Kubernetes { out } => {
            kubernetes::build(&cache, &out)?;
            Ok(())
        }
    }
}
