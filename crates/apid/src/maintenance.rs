//! The maintenance identity of apid: a self-signed server certificate made
//! with rcgen, optionally persisted in a directory so its fingerprint stays
//! the same across apid restarts, and the console line that announces it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// File name of the persisted maintenance certificate (PEM).
pub const CERT_FILE: &str = "maintenance.crt";
/// File name of the persisted maintenance key (PEM PKCS#8, mode 0600).
pub const KEY_FILE: &str = "maintenance.key";

/// Why the maintenance certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// rcgen failed to generate the certificate.
    #[error("cannot generate the maintenance certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A persisted file could not be read, parsed or written.
    #[error("maintenance certificate file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The self-signed certificate apid serves in maintenance mode.
pub struct MaintenanceCert {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

impl MaintenanceCert {
    /// Loads the certificate persisted in `dir`, or generates one and
    /// persists it there (the directory is created). With `dir` = `None`
    /// a fresh certificate is generated and kept in memory only. A present
    /// but unreadable pair is an error: it is never silently replaced.
    pub fn load_or_generate(dir: Option<&Path>) -> Result<MaintenanceCert, MaintenanceError> {
        let Some(dir) = dir else {
            return generate().map(|(cert, _, _)| cert);
        };
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return load(&cert_path, &key_path);
        }
        let (cert, cert_pem, key_pem) = generate()?;
        let io = |path: &Path, e: std::io::Error| MaintenanceError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        write_atomic(&key_path, key_pem.as_bytes(), 0o600).map_err(|e| io(&key_path, e))?;
        write_atomic(&cert_path, cert_pem.as_bytes(), 0o644).map_err(|e| io(&cert_path, e))?;
        Ok(cert)
    }

    /// SHA-256 of the certificate's DER, lowercase hex: what nodectl pins
    /// with `--fingerprint`.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// The console line announcing maintenance mode (init forwards apid's
/// output to the console log).
pub fn console_line(fingerprint: &str, port: u16) -> String {
    format!("keelson: maintenance mode: apid fingerprint sha256={fingerprint} port={port}")
}

fn generate() -> Result<(MaintenanceCert, String, String), MaintenanceError> {
    let names = vec![
        "keelson-maintenance".to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
    let key_der = PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    Ok((
        MaintenanceCert {
            cert: cert.der().clone(),
            key: key_der,
        },
        cert.pem(),
        signing_key.serialize_pem(),
    ))
}

fn load(cert_path: &Path, key_path: &Path) -> Result<MaintenanceCert, MaintenanceError> {
    let cert = CertificateDer::from_pem_file(cert_path).map_err(|e| MaintenanceError::File {
        path: cert_path.to_owned(),
        reason: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| MaintenanceError::File {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(MaintenanceCert { cert, key })
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
