//! The material `gen secrets` + `gen config --secrets` produce works for
//! the machine API's mutual TLS as apid will do it (rustls 0.23, ring
//! provider): a node certificate from the config serves, a role
//! certificate from the secrets directory is accepted and carries its role,
//! and a client certificate of another CA is refused in the handshake.
//! The handshake runs in memory: no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer as _, X509Certificate};

fn nodectl(args: &[&str], cwd: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run nodectl");
    assert!(
        o.status.success(),
        "nodectl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Runs a handshake to completion (or the first error) between the two.
fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn generated_certificates_make_a_mutual_tls_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    nodectl(&["gen", "secrets", "--out", "pki"], t);
    nodectl(&["gen", "secrets", "--out", "foreign"], t);
    nodectl(
        &[
            "gen",
            "config",
            "--name",
            "node1",
            "--secrets",
            "pki",
            "--out",
            "node.yaml",
        ],
        t,
    );
    let cfg = machine_config::load(&fs::read(t.join("node.yaml")).unwrap())
        .unwrap()
        .config;
    let node = cfg.machine.certificates.unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The node trusts the CA of its config for clients.
    let mut client_roots = RootCertStore::empty();
    for c in certs(&node.ca) {
        client_roots.add(c).unwrap();
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
            .build()
            .unwrap();
    let server_config = Arc::new(
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certs(node.cert.as_ref().unwrap()),
                key(node.key.as_ref().unwrap()),
            )
            .unwrap(),
    );

    let client_for = |dir: &str, role: &str| {
        let mut roots = RootCertStore::empty();
        for c in certs(&fs::read_to_string(t.join("pki/ca.crt")).unwrap()) {
            roots.add(c).unwrap();
        }
        let cert = fs::read_to_string(t.join(format!("{dir}/{role}.crt"))).unwrap();
        let k = fs::read_to_string(t.join(format!("{dir}/{role}.key"))).unwrap();
        Arc::new(
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(certs(&cert), key(&k))
                .unwrap(),
        )
    };

    for (name, server_name) in [
        ("node1", "node1"),
        ("localhost", "localhost"),
        ("loopback", "127.0.0.1"),
    ] {
        let mut client = ClientConnection::new(
            client_for("pki", "admin"),
            ServerName::try_from(server_name).unwrap(),
        )
        .unwrap();
        let mut server = ServerConnection::new(server_config.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The server sees the admin certificate, role in the Organization.
        let peer = server.peer_certificates().unwrap();
        let (_, cert) = X509Certificate::from_der(peer[0].as_ref()).unwrap();
        let org = cert
            .subject()
            .iter_organization()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(org, "os:admin");
    }

    // A reader certificate of the same CA connects too (roles are checked
    // per call, not in the handshake).
    let mut client = ClientConnection::new(
        client_for("pki", "reader"),
        ServerName::try_from("node1").unwrap(),
    )
    .unwrap();
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    handshake(&mut client, &mut server).unwrap();

    // A client certificate from another CA: the handshake fails.
    let mut client = ClientConnection::new(
        client_for("foreign", "admin"),
        ServerName::try_from("node1").unwrap(),
    )
    .unwrap();
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    let err = handshake(&mut client, &mut server).unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "expected a refused certificate, got {err:?}"
    );

    // A name the node certificate does not carry: the client refuses.
    let mut client = ClientConnection::new(
        client_for("pki", "admin"),
        ServerName::try_from("node2").unwrap(),
    )
    .unwrap();
    let mut server = ServerConnection::new(server_config).unwrap();
    assert!(handshake(&mut client, &mut server).is_err());
}
