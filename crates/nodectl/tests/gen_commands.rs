//! `nodectl gen secrets` and `nodectl gen config`, run as the real binary:
//! file modes, certificates parsed back and their signatures verified
//! against the generated CA (and refused against another CA), the contexts
//! file, and a generated config that validates and embeds the right
//! material (never the CA's private key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

fn nodectl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run nodectl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// DER of the first PEM block of `pem`.
fn der(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

/// Verifies `cert_der` up to the trust anchor `ca_der` the way rustls does
/// (rustls-webpki with ring), for `usage`.
fn webpki_verify(
    ca_der: &[u8],
    cert_der: &[u8],
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let ca = rustls_pki_types::CertificateDer::from(ca_der.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&ca)?.to_owned();
    let cert = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
    let ee = webpki::EndEntityCert::try_from(&cert)?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        rustls_pki_types::UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn organization(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_organization()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn gen_secrets_writes_a_signed_pki_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let o = nodectl(&["gen", "secrets", "--out", "pki"], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let dir = tmp.path().join("pki");
    assert_eq!(mode(&dir), 0o700);
    for secret in [
        "ca.key",
        "admin.key",
        "operator.key",
        "reader.key",
        "upgrade-signing.key",
        "nodectl.yaml",
    ] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }
    for public in [
        "ca.crt",
        "admin.crt",
        "operator.crt",
        "reader.crt",
        "upgrade-signing.pub",
        "node-template.yaml",
    ] {
        assert_eq!(mode(&dir.join(public)), 0o644, "{public}");
    }

    // The CA: self-signed, a CA, P-256.
    let ca_pem = fs::read_to_string(dir.join("ca.crt")).unwrap();
    let ca_der = der(&ca_pem);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    ca.verify_signature(None).unwrap();

    // A CA from another secrets directory, to prove verification can fail.
    let o = nodectl(&["gen", "secrets", "--out", "other"], tmp.path());
    assert_eq!(o.status.code(), Some(0));
    let other_der = der(&fs::read_to_string(tmp.path().join("other/ca.crt")).unwrap());
    let (_, other_ca) = X509Certificate::from_der(&other_der).unwrap();

    for (role, org) in [
        ("admin", "os:admin"),
        ("operator", "os:operator"),
        ("reader", "os:reader"),
    ] {
        let pem = fs::read_to_string(dir.join(format!("{role}.crt"))).unwrap();
        let d = der(&pem);
        let (_, cert) = X509Certificate::from_der(&d).unwrap();
        assert_eq!(organization(&cert), org);
        assert_eq!(common_name(&cert), role);
        assert_eq!(cert.issuer(), ca.subject());
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(
            eku.client_auth && !eku.server_auth,
            "{role}: clientAuth only"
        );
        assert!(cert.validity().is_valid());
        cert.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{role}.crt not signed by ca.crt: {e}"));
        assert!(
            cert.verify_signature(Some(other_ca.public_key())).is_err(),
            "{role}.crt must not verify against another CA"
        );
        // rustls' verifier accepts it as a client certificate of this CA,
        // refuses it as a server certificate, and refuses it from another CA.
        webpki_verify(&ca_der, &d, webpki::KeyUsage::client_auth())
            .unwrap_or_else(|e| panic!("webpki refuses {role}.crt: {e:?}"));
        assert!(webpki_verify(&ca_der, &d, webpki::KeyUsage::server_auth()).is_err());
        assert!(webpki_verify(&other_der, &d, webpki::KeyUsage::client_auth()).is_err());
        // The key file holds the certificate's key.
        let key =
            rcgen::KeyPair::from_pem(&fs::read_to_string(dir.join(format!("{role}.key"))).unwrap())
                .unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    // The upgrade key pair: PKCS#8 private key, base64 of 32 raw public bytes,
    // the same key.
    let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(
        &fs::read_to_string(dir.join("upgrade-signing.key")).unwrap(),
    )
    .unwrap();
    let public = fs::read_to_string(dir.join("upgrade-signing.pub")).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(public.trim())
        .unwrap();
    assert_eq!(raw, signing.verifying_key().to_bytes());

    // The contexts file: admin context, paths resolved against its directory
    // (the test's working directory is elsewhere).
    let ctx = nodectl::contexts::LoadedContexts::load(&dir.join("nodectl.yaml"))
        .unwrap()
        .resolve(None)
        .unwrap();
    assert_eq!(ctx.name, "admin");
    assert_eq!(ctx.endpoints, ["127.0.0.1:50000"]);
    assert_eq!(ctx.ca_pem, ca_pem);
    assert_eq!(
        ctx.cert_pem,
        fs::read_to_string(dir.join("admin.crt")).unwrap()
    );
    assert_eq!(
        ctx.key_pem,
        fs::read_to_string(dir.join("admin.key")).unwrap()
    );

    // Existing files are never overwritten without --force, and a refusal
    // changes nothing.
    let o = nodectl(&["gen", "secrets", "--out", "pki"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("refusing to overwrite"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(fs::read_to_string(dir.join("ca.crt")).unwrap(), ca_pem);
    let o = nodectl(&["gen", "secrets", "--out", "pki", "--force"], tmp.path());
    assert_eq!(o.status.code(), Some(0));
    assert_ne!(fs::read_to_string(dir.join("ca.crt")).unwrap(), ca_pem);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
}

#[test]
fn gen_config_validates_and_embeds_the_node_material() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // Without secrets: a valid, commented config in maintenance mode.
    let o = nodectl(&["gen", "config", "--name", "worker-1"], t);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let plain = text(&o.stdout);
    assert!(
        plain
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 30
    );
    fs::write(t.join("plain.yaml"), &plain).unwrap();
    let v = nodectl(&["config", "validate", "plain.yaml"], t);
    assert_eq!(
        text(&v.stdout),
        "plain.yaml: valid\n",
        "{}",
        text(&v.stderr)
    );
    let cfg = machine_config::load(plain.as_bytes()).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.config.machine.hostname, "worker-1");
    assert!(cfg.config.machine.certificates.is_none());
    assert!(cfg.config.network.interfaces[0].dhcp);
    // The values the template spells out are the crate's defaults, so its
    // comments do not drift from the schema.
    use machine_config::schema::{Api, Cni, Containerd, Kubelet, Shutdown, Upgrade};
    assert_eq!(cfg.config.containerd, Containerd::default());
    assert_eq!(cfg.config.cni, Cni::default());
    assert_eq!(cfg.config.kubelet, Kubelet::default());
    assert_eq!(cfg.config.shutdown, Shutdown::default());
    assert_eq!(cfg.config.upgrade, Upgrade::default());
    assert_eq!(cfg.config.api, Api::default());
    assert!(cfg.config.kubernetes.is_none());

    // With secrets, static addresses and a gateway.
    assert_eq!(
        nodectl(&["gen", "secrets", "--out", "pki"], t)
            .status
            .code(),
        Some(0)
    );
    fs::write(
        t.join("kube-ca.crt"),
        fs::read_to_string(t.join("pki/ca.crt")).unwrap(),
    )
    .unwrap();
    let o = nodectl(
        &[
            "gen",
            "config",
            "--name",
            "worker-1",
            "--secrets",
            "pki",
            "--address",
            "10.0.2.15/24",
            "--address",
            "fd00::15/64",
            "--gateway",
            "10.0.2.2",
            "--san",
            "worker-1.lan",
            "--api-server",
            "https://10.0.2.100:6443",
            "--kube-ca",
            "kube-ca.crt",
            "--token",
            "abcdef.0123456789abcdef",
            "--out",
            "node.yaml",
        ],
        t,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        mode(&t.join("node.yaml")),
        0o600,
        "the config holds a private key"
    );
    let v = nodectl(&["config", "validate", "node.yaml"], t);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    let yaml = fs::read_to_string(t.join("node.yaml")).unwrap();
    let cfg = machine_config::load(yaml.as_bytes()).unwrap().config;

    let ca_pem = fs::read_to_string(t.join("pki/ca.crt")).unwrap();
    let certs = cfg.machine.certificates.as_ref().unwrap();
    assert_eq!(certs.ca, ca_pem);
    assert!(certs.ca_key.is_none());
    // The CA's private key appears nowhere in the config.
    let ca_key = fs::read_to_string(t.join("pki/ca.key")).unwrap();
    for line in ca_key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !yaml.contains(line),
            "CA private key leaked into the config"
        );
    }
    assert_eq!(
        cfg.machine.trusted_upgrade_keys,
        [fs::read_to_string(t.join("pki/upgrade-signing.pub"))
            .unwrap()
            .trim()]
    );
    assert_eq!(
        cfg.kubelet.api_server.as_deref(),
        Some("https://10.0.2.100:6443")
    );
    assert_eq!(cfg.network.interfaces[0].addresses.len(), 2);

    // The node certificate: signed by the CA, for serverAuth, with the
    // promised names, and matching the embedded key.
    let ca_der = der(&ca_pem);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let cert_der = der(certs.cert.as_ref().unwrap());
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    webpki_verify(&ca_der, &cert_der, webpki::KeyUsage::server_auth()).unwrap();
    let ee_der = rustls_pki_types::CertificateDer::from(cert_der.clone());
    let ee = webpki::EndEntityCert::try_from(&ee_der).unwrap();
    for name in [
        "worker-1",
        "localhost",
        "127.0.0.1",
        "10.0.2.15",
        "worker-1.lan",
    ] {
        let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
        ee.verify_is_valid_for_subject_name(&server_name)
            .unwrap_or_else(|e| panic!("node certificate not valid for {name}: {e:?}"));
    }
    let other = rustls_pki_types::ServerName::try_from("worker-9").unwrap();
    assert!(ee.verify_is_valid_for_subject_name(&other).is_err());
    assert_eq!(common_name(&cert), "worker-1");
    assert_eq!(organization(&cert), "keelson");
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );
    let mut names = Vec::new();
    for n in &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match n {
            GeneralName::DNSName(d) => names.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string())
            }
            GeneralName::IPAddress(b) => {
                names.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string())
            }
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    assert_eq!(
        names,
        [
            "worker-1",
            "localhost",
            "127.0.0.1",
            "10.0.2.15",
            "fd00::15",
            "worker-1.lan"
        ]
    );
    let key = rcgen::KeyPair::from_pem(certs.key.as_ref().unwrap()).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );

    // The template is honoured: another organization and an extra name.
    fs::write(
        t.join("pki/node-template.yaml"),
        "organization: homelab\nvalidityDays: 30\naltNames: [\"k.lan\"]\n",
    )
    .unwrap();
    let o = nodectl(
        &["gen", "config", "--name", "worker-2", "--secrets", "pki"],
        t,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let cfg = machine_config::load(&o.stdout).unwrap().config;
    let cert_der = der(cfg.machine.certificates.unwrap().cert.as_ref().unwrap());
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    assert_eq!(organization(&cert), "homelab");
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(
        days, 30,
        "validity from the template (plus the 1 h clock-skew margin)"
    );

    // Flags that make an invalid config: every problem, exit 1, no config.
    let o = nodectl(
        &["gen", "config", "--name", "Bad_Name", "--secrets", "pki"],
        t,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        text(&o.stderr).contains("machine.hostname"),
        "{}",
        text(&o.stderr)
    );
    let o = nodectl(
        &[
            "gen",
            "config",
            "--name",
            "n",
            "--address",
            "10.0.0.5/24",
            "--gateway",
            "192.168.1.1",
        ],
        t,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("routes[0].via"),
        "{}",
        text(&o.stderr)
    );
    // Malformed flag values and a missing secrets dir are usage errors.
    let o = nodectl(
        &["gen", "config", "--name", "n", "--address", "10.0.0.300"],
        t,
    );
    assert_eq!(o.status.code(), Some(2));
    let o = nodectl(&["gen", "config", "--name", "n", "--secrets", "nowhere"], t);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("nowhere/ca.crt"),
        "{}",
        text(&o.stderr)
    );
    let o = nodectl(
        &[
            "gen",
            "config",
            "--name",
            "n",
            "--api-server",
            "https://x:6443",
        ],
        t,
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "--api-server needs --kube-ca and --token"
    );
}
