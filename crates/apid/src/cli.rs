//! The command line of `apid` and the startup that turns it into a running
//! gateway (TLS material, maintenance certificate, listener).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tokio::net::TcpListener;

use crate::forward::Upstream;
use crate::maintenance::{self, MaintenanceCert, MaintenanceError};
use crate::server::{Gateway, Mode};
use crate::tls::{self, TlsError};

/// Where init writes apid's TLS material from `machine.certificates`.
pub const DEFAULT_DIR: &str = "/run/keelson/apid";

/// `apid` command line.
#[derive(Debug, Parser)]
#[command(
    name = "apid",
    version,
    about = "Keelson machine API gateway (mTLS → init)"
)]
pub struct Args {
    /// Address to listen on (init passes the config's `api.port`).
    #[arg(long, default_value = "0.0.0.0:50000")]
    pub listen: SocketAddr,
    /// PEM certificate(s) of the API CA that signs client certificates.
    #[arg(long, default_value = "/run/keelson/apid/ca.crt")]
    pub ca: PathBuf,
    /// PEM certificate (chain) of this node's API server.
    #[arg(long, default_value = "/run/keelson/apid/server.crt")]
    pub cert: PathBuf,
    /// PEM private key of `--cert`.
    #[arg(long, default_value = "/run/keelson/apid/server.key")]
    pub key: PathBuf,
    /// Maintenance mode: self-signed certificate, no client certificates,
    /// only Version and ApplyConfiguration (`--ca/--cert/--key` unused).
    #[arg(long)]
    pub maintenance: bool,
    /// Where the maintenance certificate is kept so its fingerprint survives
    /// apid restarts (created if missing).
    #[arg(long, default_value = "/run/keelson/apid/maintenance")]
    pub maintenance_cert_dir: PathBuf,
    /// init's API socket.
    #[arg(long, default_value = api::INIT_SOCKET)]
    pub upstream: PathBuf,
    /// The CA bundle `UpgradeFromUrl` trusts when the caller pins no CA.
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    pub system_cas: PathBuf,
}

/// Why apid could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The maintenance certificate could not be made or loaded.
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A gateway ready to serve: the bound listener and its configuration.
pub struct Started {
    /// The bound listener.
    pub listener: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub local_addr: SocketAddr,
    /// TLS, mode and upstream.
    pub gateway: Gateway,
    /// The line to print on stdout (init puts it on the console).
    pub banner: String,
}

/// Loads the TLS material, binds the listener and prepares the gateway.
pub async fn start(args: &Args) -> Result<Started, StartError> {
    let (tls, mode, fingerprint) = if args.maintenance {
        let cert = MaintenanceCert::load_or_generate(Some(&args.maintenance_cert_dir))?;
        let fingerprint = cert.fingerprint();
        (
            tls::maintenance(cert.cert, cert.key)?,
            Mode::Maintenance,
            Some(fingerprint),
        )
    } else {
        let ca = tls::read_certs("the API CA certificate", &args.ca)?;
        let chain = tls::read_certs("the server certificate", &args.cert)?;
        let key = tls::read_key("the server private key", &args.key)?;
        (tls::mutual(ca, chain, key)?, Mode::Mutual, None)
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: args.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: args.listen,
        source,
    })?;
    let banner = match &fingerprint {
        Some(fp) => maintenance::console_line(fp, local_addr.port()),
        None => format!("keelson: apid listening addr={local_addr} mode=mtls"),
    };
    let gateway = Gateway {
        tls,
        mode,
        upstream: Upstream::new(&args.upstream),
        system_cas: args.system_cas.clone(),
    };
    Ok(Started {
        listener,
        local_addr,
        gateway,
        banner,
    })
}
