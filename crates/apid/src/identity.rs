//! Who is calling: the client certificate's common name and the Keelson
//! role carried in its Organization, read once per TLS connection from the
//! verified leaf certificate (x509-parser).

use api::roles::Role;
use rustls_pki_types::CertificateDer;

/// The caller of a connection, as apid passes it to init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client with a verified certificate (mutual TLS).
    Client {
        /// Subject common name (`""` if the certificate has none).
        cn: String,
        /// The highest Keelson role in the subject's Organization values.
        role: Option<Role>,
        /// Every Organization value, for the refusal message.
        organizations: Vec<String>,
    },
    /// Maintenance mode: no client certificate is asked for.
    Maintenance,
}

/// The value of `x-keelson-client-cn` and `x-keelson-client-role` for
/// maintenance-mode callers.
pub const MAINTENANCE: &str = "maintenance";

impl Caller {
    /// The caller of a connection whose verified leaf certificate is `leaf`.
    /// A certificate x509-parser cannot read (rustls already verified it, so
    /// this is not expected) yields a caller with no role: every call is
    /// refused.
    pub fn from_certificate(leaf: &CertificateDer<'_>) -> Caller {
        match x509_parser::parse_x509_certificate(leaf.as_ref()) {
            Ok((_, cert)) => {
                let subject = cert.subject();
                let cn = subject
                    .iter_common_name()
                    .find_map(|a| a.as_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let organizations: Vec<String> = subject
                    .iter_organization()
                    .filter_map(|a| a.as_str().ok())
                    .map(str::to_owned)
                    .collect();
                let role = Role::highest(organizations.iter().map(String::as_str));
                Caller::Client {
                    cn,
                    role,
                    organizations,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot parse a verified client certificate");
                Caller::Client {
                    cn: String::new(),
                    role: None,
                    organizations: Vec::new(),
                }
            }
        }
    }

    /// The common name passed to init and written in audit lines.
    pub fn cn(&self) -> &str {
        match self {
            Caller::Client { cn, .. } => cn,
            Caller::Maintenance => MAINTENANCE,
        }
    }

    /// The role passed to init and written in audit lines (`none` when the
    /// certificate carries no Keelson role).
    pub fn role_label(&self) -> &'static str {
        match self {
            Caller::Client { role: Some(r), .. } => r.organization(),
            Caller::Client { role: None, .. } => "none",
            Caller::Maintenance => MAINTENANCE,
        }
    }
}
