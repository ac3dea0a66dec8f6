//! The test cluster's PKI, generated fresh for every control plane with
//! rcgen (ECDSA P-256 keys): a CA, serving certificates and client
//! certificates whose Organization is the Kubernetes group.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate the certificate {what}: {source}")]
pub struct PkiError {
    /// Which certificate.
    pub what: String,
    /// The cause.
    pub source: rcgen::Error,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The cluster CA.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Ca, PkiError> {
        let err = |source| PkiError {
            what: format!("CA {common_name}"),
            source,
        };
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(err)?;
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(err)?;
        Ok(Ca { issuer, key_pem })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for `common_name` with Organization
    /// `organization` (a Kubernetes group for client certificates),
    /// subject alternative names `sans` (DNS names or IPs; any makes it a
    /// serving certificate) and client authentication when `client`.
    pub fn issue(
        &self,
        common_name: &str,
        organization: Option<&str>,
        sans: &[&str],
        client: bool,
    ) -> Result<CertPair, PkiError> {
        let err = |source| PkiError {
            what: common_name.to_string(),
            source,
        };
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if !sans.is_empty() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new key pair for signing service-account tokens: (private key PEM
/// PKCS#8, public key PEM). The API server reads only public keys (or
/// PKCS#1/SEC1 private keys) from `--service-account-key-file`.
pub fn service_account_key() -> Result<(String, String), PkiError> {
    KeyPair::generate()
        .map(|k| (k.serialize_pem(), k.public_key_pem()))
        .map_err(|source| PkiError {
            what: "service-account signing key".into(),
            source,
        })
}
