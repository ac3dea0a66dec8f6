//! Connecting to a node's API (apid): TLS client configurations (mutual
//! TLS with a context's CA and client certificate, or maintenance mode with
//! a pinned self-signed certificate) and a gRPC channel over TCP + rustls
//! (ring provider, ALPN `h2`) with a bounded connect time.
//!
//! The server name checked against the node certificate is the endpoint's
//! host: an IP address is matched against the certificate's IP SANs, a
//! name against its DNS names.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::v1::machine_client::MachineClient;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::contexts::ResolvedContext;

/// How long connecting to one node (TCP, TLS, HTTP/2) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM value of the context holds nothing usable.
    #[error("context {context:?}: {field}: {reason}")]
    Pem {
        /// The context.
        context: String,
        /// `ca`, `cert` or `key`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// rustls refused the material.
    #[error("cannot build the TLS client configuration: {0}")]
    Rustls(String),
    /// `--fingerprint` is not a SHA-256 fingerprint.
    #[error("--fingerprint {given:?}: {reason}")]
    Fingerprint {
        /// The value given.
        given: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why connecting to a node failed (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect: {reason}")]
pub struct ConnectError {
    /// The endpoint (`host:port`).
    pub endpoint: String,
    /// What went wrong (the whole error chain).
    pub reason: String,
}

/// The crypto provider nodectl uses (ring: no cmake, no aws-lc).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A SHA-256 certificate fingerprint (of the certificate's DER).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parses `sha256:AB:CD…`, `AB:CD…`, `abcd…` (case-insensitive; colons,
    /// spaces and a `sha256:`/`sha256=` prefix are ignored).
    pub fn parse(text: &str) -> Result<Fingerprint, TlsSetupError> {
        let err = |reason| TlsSetupError::Fingerprint {
            given: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let body = lower
            .strip_prefix("sha256:")
            .or_else(|| lower.strip_prefix("sha256="))
            .unwrap_or(&lower);
        let hex_text: String = body
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&hex_text).map_err(|_| err("not hexadecimal"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| err("a SHA-256 fingerprint has 64 hex digits (32 bytes)"))?;
        Ok(Fingerprint(arr))
    }

    /// The fingerprint of a DER certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Mutual TLS with a context: trust its CA, present its client certificate.
pub fn mutual_config(ctx: &ResolvedContext) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let pem_err = |field: &'static str, reason: String| TlsSetupError::Pem {
        context: ctx.name.clone(),
        field,
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_slice_iter(ctx.ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("ca", e.to_string()))?;
    if cas.is_empty() {
        return Err(pem_err("ca", "no CERTIFICATE block".into()));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| pem_err("ca", format!("not a usable CA certificate: {e}")))?;
    }
    let chain = CertificateDer::pem_slice_iter(ctx.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("cert", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err("cert", "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(ctx.key_pem.as_bytes())
        .map_err(|e| pem_err("key", e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            TlsSetupError::Rustls(format!(
                "context {:?}: client certificate and key: {e}",
                ctx.name
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Maintenance mode: no client certificate; the server's certificate is not
/// checked against a CA but must have the fingerprint `pin` (any
/// certificate when `pin` is `None`). The handshake signature is still
/// verified, so the server holds the certificate's key.
pub fn insecure_config(pin: Option<Fingerprint>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let verifier = Arc::new(PinnedVerifier {
        pin,
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The server certificate check of `--insecure`: the fingerprint pin.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<Fingerprint>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let served = Fingerprint::of(end_entity.as_ref());
        match self.pin {
            Some(pin) if pin != served => Err(rustls::Error::General(format!(
                "the server's certificate fingerprint {served} does not match --fingerprint {pin}"
            ))),
            Some(_) => Ok(ServerCertVerified::assertion()),
            None => {
                tracing::info!(fingerprint = %served, "server certificate accepted without pinning");
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(endpoint: &str) -> &str {
    let host = match endpoint.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => endpoint,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The TLS server name of an endpoint: its IP address, or its DNS name.
pub fn server_name(endpoint: &str) -> Result<ServerName<'static>, ConnectError> {
    let host = host_of(endpoint);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(|e| ConnectError {
        endpoint: endpoint.to_owned(),
        reason: format!("{host:?} is not a valid DNS name or IP address: {e}"),
    })
}

/// Connects to `endpoint` (`host:port`) over TLS with `tls` and returns a
/// machine API client. TCP, TLS and the HTTP/2 handshake together may take
/// at most `timeout`.
pub async fn connect(
    endpoint: &str,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<MachineClient<Channel>, ConnectError> {
    let err = |reason: String| ConnectError {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let name = server_name(endpoint)?;
    // The URI is only the origin written into requests (`:authority`); the
    // connector below opens the real connection.
    let uri = format!("https://{endpoint}");
    let channel_endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| err(format!("not a valid address ({uri}): {e}")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let connector = TlsConnector::from(tls);
    let addr = endpoint.to_owned();
    let service = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        let name = name.clone();
        let addr = addr.clone();
        async move {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                // A refused pin is a rustls `General` error: its text alone
                // says it all (without "unexpected error").
                let reason = match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(rustls::Error::General(message)) => message.clone(),
                    _ => chain(&e),
                };
                std::io::Error::new(e.kind(), format!("TLS handshake failed: {reason}"))
            })?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    tracing::debug!(endpoint, "connecting");
    match tokio::time::timeout(timeout, channel_endpoint.connect_with_connector(service)).await {
        Ok(Ok(channel)) => Ok(MachineClient::new(channel)),
        // tonic's own "transport error" says nothing: start at its cause.
        Ok(Err(e)) => Err(err(match std::error::Error::source(&e) {
            Some(cause) => chain(cause),
            None => chain(&e),
        })),
        Err(_) => Err(err(format!(
            "no connection within {} s",
            timeout.as_secs_f64()
        ))),
    }
}

/// An error and its sources as one line, each distinct text once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_common_form() {
        let hex = "ab".repeat(32);
        let want = Fingerprint::parse(&hex).unwrap();
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(Fingerprint::parse(&colons).unwrap(), want);
        assert_eq!(
            Fingerprint::parse(&format!("sha256:{colons}")).unwrap(),
            want
        );
        assert_eq!(Fingerprint::parse(&format!("SHA256={hex}")).unwrap(), want);
        assert_eq!(want.to_string(), format!("sha256:{hex}"));
        assert!(Fingerprint::parse("abcd").is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn ip_hosts_are_checked_as_ip_addresses() {
        assert!(matches!(
            server_name("10.0.0.5:50000").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[fd00::1]:50000").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node1.example:50000").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
