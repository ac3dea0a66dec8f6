//! The secrets directory `nodectl gen secrets --out DIR` writes and
//! `nodectl gen config --secrets DIR` reads: its file names, modes and
//! contents.
//!
//! | file | mode | content |
//! |---|---|---|
//! | `ca.crt` / `ca.key` | 0644 / 0600 | the machine API's CA (ECDSA P-256), 10 years |
//! | `admin.crt` / `.key` | 0644 / 0600 | client cert, `O=os:admin`, `CN=admin`, 1 year |
//! | `operator.crt` / `.key` | 0644 / 0600 | client cert, `O=os:operator` |
//! | `reader.crt` / `.key` | 0644 / 0600 | client cert, `O=os:reader` |
//! | `node-template.yaml` | 0644 | how node certificates are issued ([`NodeTemplate`]) |
//! | `upgrade-signing.key` | 0600 | ed25519 private key, PKCS#8 PEM |
//! | `upgrade-signing.pub` | 0644 | base64 of the 32 raw public key bytes |
//! | `nodectl.yaml` | 0600 | contexts file with an `admin` context using the files above |
//!
//! The directory is created mode 0700. Nothing is overwritten unless forced,
//! and a refusal is decided before any file is written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::contexts::{Context, ContextsError, ContextsFile, PemSource};
use crate::files::{self, WriteError, PUBLIC_MODE, SECRET_MODE};
use crate::secrets::{
    CertificateAuthority, NodeTemplate, Role, SecretsError, UpgradeSigningKey, Validity,
    CA_VALIDITY_DAYS, CLIENT_VALIDITY_DAYS,
};

/// The CA certificate.
pub const CA_CERT: &str = "ca.crt";
/// The CA private key (never put on a node).
pub const CA_KEY: &str = "ca.key";
/// The node certificate template.
pub const NODE_TEMPLATE: &str = "node-template.yaml";
/// The upgrade-signing private key.
pub const UPGRADE_KEY: &str = "upgrade-signing.key";
/// The upgrade-signing public key.
pub const UPGRADE_PUB: &str = "upgrade-signing.pub";
/// The contexts file.
pub const CONTEXTS: &str = "nodectl.yaml";
/// The name of the context `gen secrets` writes.
pub const ADMIN_CONTEXT: &str = "admin";

/// Why a secrets directory could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsDirError {
    /// Generating key material failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Writing a file failed or was refused.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Writing the contexts file failed.
    #[error(transparent)]
    Contexts(#[from] ContextsError),
    /// A file of the directory could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the directory has the wrong content.
    #[error("{}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One file `gen secrets` wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WrittenFile {
    /// Its path.
    pub path: PathBuf,
    /// Its mode, octal text (`0600`).
    pub mode: String,
    /// What it holds.
    pub content: String,
}

/// Generates every file of a secrets directory in `dir`. `endpoints` go
/// into the admin context. Refuses (before writing anything) if any file
/// exists, unless `force`.
pub fn generate(
    dir: &Path,
    endpoints: &[String],
    force: bool,
) -> Result<Vec<WrittenFile>, SecretsDirError> {
    let mut planned: Vec<(String, Vec<u8>, u32, String)> = Vec::new();

    let ca = CertificateAuthority::generate(
        "keelson machine API CA",
        Validity::days_from_now(CA_VALIDITY_DAYS),
    )?;
    planned.push((
        CA_CERT.into(),
        ca.cert_pem().as_bytes().to_vec(),
        PUBLIC_MODE,
        "machine API CA certificate (ECDSA P-256)".into(),
    ));
    planned.push((
        CA_KEY.into(),
        ca.key_pem().as_bytes().to_vec(),
        SECRET_MODE,
        "machine API CA private key: keep offline, never on a node".into(),
    ));
    for role in Role::ALL {
        let issued = ca.issue_client(
            role,
            role.name(),
            Validity::days_from_now(CLIENT_VALIDITY_DAYS),
        )?;
        planned.push((
            format!("{}.crt", role.name()),
            issued.cert_pem.into_bytes(),
            PUBLIC_MODE,
            format!(
                "client certificate CN={} O={}",
                role.name(),
                role.organization()
            ),
        ));
        planned.push((
            format!("{}.key", role.name()),
            issued.key_pem.into_bytes(),
            SECRET_MODE,
            format!("private key of {}.crt", role.name()),
        ));
    }
    planned.push((
        NODE_TEMPLATE.into(),
        NodeTemplate::default().to_commented_yaml().into_bytes(),
        PUBLIC_MODE,
        "node certificate template (read by `gen config --secrets`)".into(),
    ));
    let upgrade = UpgradeSigningKey::generate()?;
    planned.push((
        UPGRADE_KEY.into(),
        upgrade.to_pkcs8_pem()?.into_bytes(),
        SECRET_MODE,
        "ed25519 upgrade-signing private key (PKCS#8 PEM)".into(),
    ));
    planned.push((
        UPGRADE_PUB.into(),
        format!("{}\n", upgrade.public_base64()).into_bytes(),
        PUBLIC_MODE,
        "upgrade-signing public key (base64, for machine.trustedUpgradeKeys)".into(),
    ));
    let contexts = admin_contexts(endpoints);
    planned.push((
        CONTEXTS.into(),
        contexts.to_yaml()?.into_bytes(),
        SECRET_MODE,
        format!(
            "contexts file, context {ADMIN_CONTEXT:?} (use with --contexts or $NODECTL_CONTEXTS)"
        ),
    ));

    let paths: Vec<PathBuf> = planned.iter().map(|(name, ..)| dir.join(name)).collect();
    files::check_absent(&paths, force)?;
    files::create_private_dir(dir)?;
    let mut written = Vec::new();
    for ((_, bytes, mode, content), path) in planned.into_iter().zip(paths) {
        files::write_file(&path, &bytes, mode, force)?;
        tracing::info!(path = %path.display(), mode = format!("{mode:04o}"), "wrote secrets file");
        written.push(WrittenFile {
            path,
            mode: format!("{mode:04o}"),
            content,
        });
    }
    Ok(written)
}

fn admin_contexts(endpoints: &[String]) -> ContextsFile {
    let role = Role::Admin.name();
    let mut contexts = BTreeMap::new();
    contexts.insert(
        ADMIN_CONTEXT.to_owned(),
        Context {
            endpoints: endpoints.to_vec(),
            ca: PemSource::File(CA_CERT.into()),
            cert: PemSource::File(format!("{role}.crt").into()),
            key: PemSource::File(format!("{role}.key").into()),
        },
    );
    ContextsFile {
        current: Some(ADMIN_CONTEXT.to_owned()),
        contexts,
    }
}

/// What `gen config --secrets DIR` needs from a secrets directory.
#[derive(Debug)]
pub struct NodeSecrets {
    /// The CA (with its key, to issue the node certificate).
    pub ca: CertificateAuthority,
    /// How node certificates are issued.
    pub template: NodeTemplate,
    /// The upgrade-signing public key, base64.
    pub upgrade_public_key: String,
}

/// Reads the CA, the node template and the upgrade public key of `dir`.
pub fn load_node_secrets(dir: &Path) -> Result<NodeSecrets, SecretsDirError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| SecretsDirError::Read { path, source })
    };
    let invalid = |name: &str, message: String| SecretsDirError::Invalid {
        path: dir.join(name),
        message,
    };
    let ca = CertificateAuthority::from_pem(&read(CA_CERT)?, &read(CA_KEY)?)
        .map_err(|e| invalid(CA_CERT, e.to_string()))?;
    let template: NodeTemplate = serde_saphyr::from_str(&read(NODE_TEMPLATE)?)
        .map_err(|e| invalid(NODE_TEMPLATE, e.to_string()))?;
    if template.validity_days == 0 {
        return Err(invalid(
            NODE_TEMPLATE,
            "validityDays: must be at least 1".into(),
        ));
    }
    let upgrade_public_key = read(UPGRADE_PUB)?.trim().to_owned();
    Ok(NodeSecrets {
        ca,
        template,
        upgrade_public_key,
    })
}
