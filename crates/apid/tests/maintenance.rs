//! The gateway in maintenance mode (no config yet): the real `apid` binary
//! with a self-signed certificate, clients without certificates, only
//! Version and ApplyConfiguration, and a fingerprint that matches what is
//! served and survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use api::v1::*;
use common::{Apid, Upstream};
use sha2::{Digest as _, Sha256};
use tonic::Code;

fn start(dir: &std::path::Path, log: &str) -> Apid {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    Apid::start(
        &[
            "--maintenance",
            "--maintenance-cert-dir",
            &p("maintenance"),
            "--upstream",
            &p("init.sock"),
        ],
        &dir.join(log),
    )
}

fn printed_fingerprint(apid: &Apid) -> String {
    let (_, rest) = apid.banner.split_once("sha256=").unwrap();
    rest.split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_mode_serves_only_version_and_apply_with_a_pinned_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::default();
    upstream.spawn(&dir.path().join("init.sock"));
    let mut apid = start(dir.path(), "apid.log");
    assert!(
        apid.banner
            .starts_with("keelson: maintenance mode: apid fingerprint sha256=")
            && apid
                .banner
                .ends_with(&format!(" port={}", apid.addr.port())),
        "{}",
        apid.banner
    );
    let printed = printed_fingerprint(&apid);
    assert_eq!(printed.len(), 64);

    let (config, verifier) = common::capturing_config();
    let mut c = common::client(apid.addr, config).await;
    let v = c
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.os_version, "test-upstream");
    let served = verifier.seen.lock().unwrap().clone().unwrap();
    assert_eq!(hex::encode(Sha256::digest(served.as_ref())), printed);

    assert!(c
        .apply_configuration(ApplyConfigurationRequest::default())
        .await
        .is_ok());
    let e = c
        .service_list(ServiceListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        "node is in maintenance mode: only Version and ApplyConfiguration are allowed until a config is applied"
    );
    let e = c.reboot(PowerRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let seen = upstream.seen();
    assert_eq!(
        seen.iter().map(|s| s.method).collect::<Vec<_>>(),
        ["Version", "ApplyConfiguration"]
    );
    assert!(seen.iter().all(
        |s| s.cn.as_deref() == Some("maintenance") && s.role.as_deref() == Some("maintenance")
    ));

    // A restarted apid (init restarts it after a crash) keeps the same
    // certificate, so a pinned fingerprint stays valid.
    drop(c);
    apid.terminate(std::time::Duration::from_secs(8));
    let again = start(dir.path(), "apid2.log");
    assert_eq!(printed_fingerprint(&again), printed);
    let (config, verifier) = common::capturing_config();
    let mut c = common::client(again.addr, config).await;
    c.version(VersionRequest::default()).await.unwrap();
    let served = verifier.seen.lock().unwrap().clone().unwrap();
    assert_eq!(hex::encode(Sha256::digest(served.as_ref())), printed);
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("maintenance/maintenance.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
}
