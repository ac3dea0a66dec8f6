//! The QEMU harness and the real test control plane used by Keelson's
//! end-to-end scenarios (under `tests/tests/`) and by the `demo` and
//! `bench` binaries.
//!
//! - [`qemu`]: boot a VM (TCG, OVMF, virtio, restricted user network),
//!   read its console line by line ([`console`]), press buttons ([`qmp`]).
//! - [`disk`]: a per-test copy of the image with the test's config in
//!   STATE; reading partitions after the VM stopped ([`gpt`]).
//! - [`control_plane`]: etcd + kube-apiserver + controller manager +
//!   scheduler on loopback with a generated PKI ([`pki`]).
//! - [`node_config`]: the machine config that joins a node to it.
//! - [`scenario`]: the pieces above put together (a node booted next to a
//!   control plane), shared by the boot test, `demo` and `bench`.
//! - [`nodectl`]: the operator's PKI and the real `nodectl` binary.
//! - [`artifacts`]: where `out/` and the host tools are.
//! - [`peer`]: the benchmark peer (Debian 12 + systemd), booted next to a
//!   control plane like a Keelson node.
//! - [`bundle_server`] (HTTPS, with faults and ranges) and [`http_server`]
//!   (plain HTTP, for network boot): file servers on 127.0.0.1 a guest
//!   reaches through a `guestfwd` relay.

pub mod artifacts;
pub mod bundle_server;
pub mod command;
pub mod console;
pub mod control_plane;
pub mod disk;
pub mod gpt;
mod http_common;
pub mod http_server;
pub mod node_config;
pub mod nodectl;
pub mod peer;
pub mod pki;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod scenario;

/// Logging for the harness's programs (`demo`, `bench`): tracing to
/// stderr, filtered by `RUST_LOG` (default: warnings and errors).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
