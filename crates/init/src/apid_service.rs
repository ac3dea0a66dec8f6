//! apid as a supervised service: its TLS material written from the
//! config's `machine.certificates` into `/run/keelson/apid` (a tmpfs; the
//! key never touches a disk outside STATE), its command line (maintenance
//! mode when the node has no config), and its console banner (the
//! maintenance fingerprint) copied from its log to the console.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use machine_config::MachineConfig;
use thiserror::Error;

use crate::supervisor::{ServiceSpec, Supervisor};

/// The service's name.
pub const NAME: &str = "apid";
/// apid's binary in the image.
const BINARY: &str = "/usr/bin/apid";
/// Where its TLS material goes (apid's defaults).
const TLS_DIR: &str = "/run/keelson/apid";

/// Why apid's TLS material could not be written.
#[derive(Debug, Error)]
pub enum TlsFilesError {
    /// The config has no `machine.certificates`.
    #[error("machine.certificates is missing: the API cannot serve mTLS")]
    NoCertificates,
    /// The config gives a CA key but no node certificate and key.
    #[error("machine.certificates has no cert/key: give the node's certificate and key (`nodectl gen config --secrets` writes them); generating them on the node from caKey is not supported yet")]
    NoNodeCertificate,
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Writes `ca.crt`, `server.crt` and `server.key` (0600) for apid.
pub fn write_tls(cfg: &MachineConfig) -> Result<(), TlsFilesError> {
    write_tls_in(Path::new(TLS_DIR), cfg)
}

fn write_tls_in(dir: &Path, cfg: &MachineConfig) -> Result<(), TlsFilesError> {
    let certs = cfg
        .machine
        .certificates
        .as_ref()
        .ok_or(TlsFilesError::NoCertificates)?;
    let (Some(cert), Some(key)) = (&certs.cert, &certs.key) else {
        return Err(TlsFilesError::NoNodeCertificate);
    };
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsFilesError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, content, mode) in [
        ("ca.crt", certs.ca.as_str(), 0o644),
        ("server.crt", cert.as_str(), 0o644),
        ("server.key", key.as_str(), 0o600),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}

/// apid's service: mTLS with the config's port, or maintenance mode on the
/// default port when there is no config.
pub fn spec(cfg: Option<&MachineConfig>) -> ServiceSpec {
    let port = cfg.map_or(api::DEFAULT_PORT, |c| c.api.port);
    let mut argv = vec![
        BINARY.to_string(),
        "--listen".to_string(),
        format!("0.0.0.0:{port}"),
    ];
    if cfg.is_none() {
        argv.push("--maintenance".to_string());
    }
    let mut spec = ServiceSpec::new(NAME, argv);
    spec.env = vec![
        (
            "PATH".to_string(),
            crate::services::SERVICE_PATH.to_string(),
        ),
        ("RUST_LOG".to_string(), "info".to_string()),
    ];
    spec
}

/// Copies apid's `keelson: …` lines (its listening banner, the maintenance
/// fingerprint) to the console, for the life of the node.
pub async fn echo_banner(sup: Supervisor) {
    let Ok((past, mut rx)) = sup.follow_logs(NAME, 50) else {
        return;
    };
    let show = |text: &str| {
        if let Some(rest) = text.trim().strip_prefix("keelson: ") {
            crate::console::marker(rest);
        }
    };
    for line in past {
        show(&line.text);
    }
    loop {
        match rx.recv().await {
            Ok(line) => show(&line.text),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(certs: &str) -> MachineConfig {
        let yaml = format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n{certs}api:\n  port: 50123\n"
        );
        machine_config::load(yaml.as_bytes()).unwrap().config
    }

    #[test]
    fn tls_files_come_from_the_config_with_a_private_key_mode() {
        let example = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/node.yaml"
        ))
        .unwrap();
        let cfg = machine_config::load(&example).unwrap().config;
        let dir = tempfile::tempdir().unwrap();
        write_tls_in(dir.path(), &cfg).unwrap();
        let certs = cfg.machine.certificates.as_ref().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("server.key")).unwrap(),
            *certs.key.as_ref().unwrap()
        );
        let mode = std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            write_tls_in(dir.path(), &config("")),
            Err(TlsFilesError::NoCertificates)
        ));
    }

    #[test]
    fn maintenance_mode_without_a_config_and_the_configured_port_with_one() {
        let s = spec(None);
        assert_eq!(
            s.argv.join(" "),
            "/usr/bin/apid --listen 0.0.0.0:50000 --maintenance"
        );
        let s = spec(Some(&config("")));
        assert_eq!(s.argv.join(" "), "/usr/bin/apid --listen 0.0.0.0:50123");
    }
}
