//! Key and certificate material of a Keelson cluster: the machine API's
//! certificate authority, the client certificates whose Organization carries
//! the caller's role, node (server) certificates, and the ed25519 key that
//! signs upgrade bundles.
//!
//! Everything here is pure generation and parsing (no file I/O), so later
//! code (apid tests, `nodectl` API commands, image tooling) can reuse it.
//! Keys are ECDSA P-256 with SHA-256: rustls 0.23 with the ring provider
//! accepts it for server and client authentication, and it is the most
//! widely supported choice. Serial numbers are 128 random bits.

use std::net::IpAddr;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Why key material could not be generated or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// rcgen refused to build or sign a certificate or key.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated (e.g. `the admin client certificate`).
        what: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM certificate or key given to us could not be used.
    #[error("cannot use {what}: {reason}")]
    Invalid {
        /// What was being read (e.g. `CA key ca.key`).
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("{0:?} is not a valid DNS name or IP address for a certificate")]
    BadName(String),
}

/// A client role of the machine API, carried in the certificate's
/// Organization (`O=os:admin` ...). apid grants calls by this field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Reboot, shutdown, service control, upgrade, and everything `Reader` may.
    Operator,
    /// Read-only calls.
    Reader,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Reader];

    /// The Organization value apid checks (`os:admin`, ...).
    pub fn organization(self) -> &'static str {
        match self {
            Role::Admin => "os:admin",
            Role::Operator => "os:operator",
            Role::Reader => "os:reader",
        }
    }

    /// The short name used for the common name and file names (`admin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Reader => "reader",
        }
    }
}

/// The period a certificate is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: OffsetDateTime,
    /// Last instant the certificate is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from one hour ago (tolerates clocks slightly behind ours) for
    /// `days` days from now.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(i64::from(days)),
        }
    }
}

/// Validity of a generated CA: ten years.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Validity of generated client certificates: one year.
pub const CLIENT_VALIDITY_DAYS: u32 = 365;

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate, PEM `CERTIFICATE`.
    pub cert_pem: String,
    /// Its private key, PEM PKCS#8 `PRIVATE KEY`.
    pub key_pem: String,
}

/// How node (API server) certificates are issued: the part of a node
/// certificate that is the same for every node. Stored as
/// `node-template.yaml` in a secrets directory so an operator can change it
/// before `nodectl gen config --secrets` issues certificates from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Organization of the subject. Default: `keelson`.
    #[serde(default = "default_node_organization")]
    pub organization: String,
    /// Days a node certificate is valid from its issue. Default: 365.
    #[serde(default = "default_node_validity_days")]
    pub validity_days: u32,
    /// Subject alternative names added to every node certificate, besides
    /// the node name, `localhost`, `127.0.0.1` and the node's addresses.
    /// Default: none.
    #[serde(default)]
    pub alt_names: Vec<String>,
}

impl Default for NodeTemplate {
    fn default() -> Self {
        NodeTemplate {
            organization: default_node_organization(),
            validity_days: default_node_validity_days(),
            alt_names: Vec::new(),
        }
    }
}

fn default_node_organization() -> String {
    "keelson".into()
}

fn default_node_validity_days() -> u32 {
    365
}

impl NodeTemplate {
    /// The template as the commented YAML written to `node-template.yaml`.
    pub fn to_commented_yaml(&self) -> String {
        let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let mut out = String::new();
        out.push_str(
            "# Node certificate template: how `nodectl gen config --secrets DIR` issues\n\
             # the certificate a node's API server presents. Each node certificate is\n\
             # signed by ca.crt, has the node name as its common name, and carries the\n\
             # subject alternative names: the node name, localhost, 127.0.0.1, every\n\
             # --address/--san given to `gen config`, and altNames below.\n\
             # Key usage: digitalSignature; extended key usage: serverAuth.\n",
        );
        out.push_str(&format!(
            "# Organization of the certificate's subject.\norganization: {}\n",
            quote(&self.organization)
        ));
        out.push_str(&format!(
            "# Days a node certificate stays valid after it is issued.\nvalidityDays: {}\n",
            self.validity_days
        ));
        out.push_str("# Extra DNS names or IP addresses for every node certificate.\n");
        if self.alt_names.is_empty() {
            out.push_str("altNames: []\n");
        } else {
            out.push_str("altNames:\n");
            for name in &self.alt_names {
                out.push_str(&format!("  - {}\n", quote(name)));
            }
        }
        out
    }
}

/// The certificate authority of the machine API: signs client and node
/// certificates. Holds the CA's private key.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA with a fresh P-256 key.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, SecretsError> {
        let what = || "the certificate authority".to_string();
        let key = new_key(&what())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, "keelson");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|source| SecretsError::Generate {
                what: what(),
                source,
            })?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA read back from its PEM certificate and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, SecretsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| SecretsError::Invalid {
            what: "the CA private key".into(),
            reason: e.to_string(),
        })?;
        if !public_key_matches(cert_pem, &key) {
            return Err(SecretsError::Invalid {
                what: "the CA certificate".into(),
                reason: "it does not belong to the CA private key (the public keys differ)".into(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| SecretsError::Invalid {
                what: "the CA certificate".into(),
                reason: e.to_string(),
            })?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM PKCS#8. Keep it off nodes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A client certificate for `role`: common name `common_name`,
    /// Organization the role's, extended key usage clientAuth.
    pub fn issue_client(
        &self,
        role: Role,
        common_name: &str,
        validity: Validity,
    ) -> Result<CertifiedKey, SecretsError> {
        let what = format!("the {} client certificate", role.name());
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, role.organization());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity, &what)
    }

    /// A node (API server) certificate for `node_name` following `template`:
    /// SANs are the node name, `localhost`, `127.0.0.1`, `extra_names` and
    /// the template's `altNames`, without duplicates.
    pub fn issue_node(
        &self,
        template: &NodeTemplate,
        node_name: &str,
        extra_names: &[String],
    ) -> Result<CertifiedKey, SecretsError> {
        let what = format!("the node certificate for {node_name}");
        let mut names: Vec<String> = Vec::new();
        let wanted = [node_name, "localhost", "127.0.0.1"]
            .into_iter()
            .map(str::to_owned)
            .chain(extra_names.iter().cloned())
            .chain(template.alt_names.iter().cloned());
        for n in wanted {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name(node_name, &template.organization);
        params.subject_alt_names = names
            .iter()
            .map(|n| san(n))
            .collect::<Result<Vec<_>, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(
            params,
            Validity::days_from_now(template.validity_days),
            &what,
        )
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        validity: Validity,
        what: &str,
    ) -> Result<CertifiedKey, SecretsError> {
        let key = new_key(what)?;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert =
            params
                .signed_by(&key, &self.issuer)
                .map_err(|source| SecretsError::Generate {
                    what: what.to_owned(),
                    source,
                })?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The ed25519 key pair that signs upgrade bundles.
pub struct UpgradeSigningKey {
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for UpgradeSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("UpgradeSigningKey")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl UpgradeSigningKey {
    /// A fresh key from the system's random number generator.
    pub fn generate() -> Result<Self, SecretsError> {
        let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| SecretsError::Random)?;
        Ok(UpgradeSigningKey {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a key written by [`UpgradeSigningKey::to_pkcs8_pem`].
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SecretsError> {
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| SecretsError::Invalid {
                what: "the upgrade signing key".into(),
                reason: format!("not an ed25519 PKCS#8 PEM private key: {e}"),
            })?;
        Ok(UpgradeSigningKey { key })
    }

    /// The private key, PEM PKCS#8 v1 (`-----BEGIN PRIVATE KEY-----`,
    /// RFC 8410, without the optional public key: the form OpenSSL 3.0 and
    /// every other tool read).
    pub fn to_pkcs8_pem(&self) -> Result<String, SecretsError> {
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        let pem = bytes
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| SecretsError::Invalid {
                what: "the upgrade signing key".into(),
                reason: format!("cannot encode as PKCS#8: {e}"),
            })?;
        Ok(pem.as_str().to_owned())
    }

    /// The public key as base64 of its 32 raw bytes: the form
    /// `machine.trustedUpgradeKeys` accepts.
    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.verifying_key().to_bytes())
    }

    /// The underlying signing key, to sign bundles.
    pub fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }
}

fn new_key(what: &str) -> Result<KeyPair, SecretsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| SecretsError::Generate {
        what: format!("the key of {what}"),
        source,
    })
}

fn name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

fn random_serial() -> Result<SerialNumber, SecretsError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretsError::Random)?;
    // Positive and without a leading zero byte, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn san(name: &str) -> Result<SanType, SecretsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid_dns {
        return Err(SecretsError::BadName(name.to_owned()));
    }
    let dns = name
        .to_owned()
        .try_into()
        .map_err(|_| SecretsError::BadName(name.to_owned()))?;
    Ok(SanType::DnsName(dns))
}

/// True when the PEM certificate `cert_pem` carries `key`'s public key.
fn public_key_matches(cert_pem: &str, key: &KeyPair) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_ca_read_back_from_pem_issues_and_a_foreign_key_is_refused() {
        let ca = CertificateAuthority::generate("test CA", Validity::days_from_now(1)).unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let node = again
            .issue_node(&NodeTemplate::default(), "node1", &["10.0.0.5".into()])
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(node.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());

        let other = CertificateAuthority::generate("other", Validity::days_from_now(1)).unwrap();
        let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
        assert!(err.to_string().contains("public keys differ"), "{err}");
        assert!(CertificateAuthority::from_pem("junk", ca.key_pem()).is_err());
        assert!(CertificateAuthority::from_pem(ca.cert_pem(), "junk").is_err());
    }

    #[test]
    fn bad_names_and_upgrade_keys_round_trip() {
        let ca = CertificateAuthority::generate("test CA", Validity::days_from_now(1)).unwrap();
        let err = ca
            .issue_node(&NodeTemplate::default(), "node1", &["not a name".into()])
            .unwrap_err();
        assert!(
            matches!(err, SecretsError::BadName(ref n) if n == "not a name"),
            "{err}"
        );

        let key = UpgradeSigningKey::generate().unwrap();
        let back = UpgradeSigningKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(back.public_base64(), key.public_base64());
        assert!(!format!("{key:?}").contains("PRIVATE"));
        assert!(
            UpgradeSigningKey::from_pkcs8_pem(ca.key_pem()).is_err(),
            "a P-256 key is not ed25519"
        );
    }
}
