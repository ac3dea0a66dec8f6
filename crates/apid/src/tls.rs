//! TLS server configurations of apid: mutual TLS against the API CA (normal
//! mode) and server-only TLS with a self-signed certificate (maintenance
//! mode). rustls 0.23 with the ring provider, TLS 1.3 and 1.2, ALPN `h2`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// What the file should hold (`the API CA certificate`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// rustls refused the material (a key not matching its certificate, a
    /// CA that is not a valid trust anchor, ...).
    #[error("cannot build the TLS server configuration: {0}")]
    Rustls(String),
}

/// The crypto provider apid uses everywhere (ring: no cmake needed).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (at least one).
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn base(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Mutual TLS: the server presents `cert_chain`/`key`; a client must present
/// a certificate that chains to one of `ca` and is valid now, else the
/// handshake fails.
pub fn mutual(
    ca: Vec<CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert).map_err(|e| {
            TlsError::Rustls(format!(
                "the API CA certificate is not a usable trust anchor: {e}"
            ))
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Rustls(format!("client certificate verifier: {e}")))?;
    let config = base(provider)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)
        .map_err(|e| TlsError::Rustls(format!("server certificate and key: {e}")))?;
    Ok(finish(config))
}

/// Maintenance mode: server-only TLS with the given (self-signed)
/// certificate; clients present no certificate.
pub fn maintenance(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = base(provider())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| TlsError::Rustls(format!("maintenance certificate and key: {e}")))?;
    Ok(finish(config))
}
