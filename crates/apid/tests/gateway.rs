//! The gateway in normal (mutual TLS) mode, end to end over loopback: the
//! real `apid` binary between a tonic client with role certificates minted
//! by `nodectl::secrets` and a minimal upstream on a unix socket (a test
//! double of init, see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use api::v1::*;
use common::{Apid, Pki, Upstream};
use nodectl::secrets::{Role, Validity};
use tonic::Code;

struct Setup {
    pki: Pki,
    upstream: Upstream,
    apid: Apid,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test-ca");
    pki.write_server_files(dir.path());
    let socket = dir.path().join("init.sock");
    let upstream = Upstream::default();
    upstream.spawn(&socket);
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let apid = Apid::start(
        &[
            "--ca",
            &p("ca.crt"),
            "--cert",
            &p("server.crt"),
            "--key",
            &p("server.key"),
            "--upstream",
            &p("init.sock"),
        ],
        &dir.path().join("apid.log"),
    );
    assert!(apid.banner.contains("mode=mtls"), "{}", apid.banner);
    Setup {
        pki,
        upstream,
        apid,
        _dir: dir,
    }
}

async fn client_for(
    s: &Setup,
    role: Role,
    cn: &str,
) -> api::v1::machine_client::MachineClient<tonic::transport::Channel> {
    let cert = s.pki.client(role, cn);
    common::client(
        s.apid.addr,
        common::mtls_config(s.pki.ca.cert_pem(), Some(&cert)),
    )
    .await
}

/// Calls every method of the API once; returns (method, result code).
async fn call_everything(
    c: &mut api::v1::machine_client::MachineClient<tonic::transport::Channel>,
) -> Vec<(&'static str, Code)> {
    fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
        match r {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }
    vec![
        ("Version", code(c.version(VersionRequest::default()).await)),
        ("Health", code(c.health(HealthRequest::default()).await)),
        ("Events", code(c.events(EventsRequest::default()).await)),
        (
            "ApplyConfiguration",
            code(
                c.apply_configuration(ApplyConfigurationRequest::default())
                    .await,
            ),
        ),
        (
            "ConfirmConfiguration",
            code(
                c.confirm_configuration(ConfirmConfigurationRequest::default())
                    .await,
            ),
        ),
        (
            "GetConfiguration",
            code(
                c.get_configuration(GetConfigurationRequest::default())
                    .await,
            ),
        ),
        (
            "ConfigHistory",
            code(c.config_history(ConfigHistoryRequest::default()).await),
        ),
        (
            "RollbackConfiguration",
            code(
                c.rollback_configuration(RollbackConfigurationRequest::default())
                    .await,
            ),
        ),
        (
            "ServiceList",
            code(c.service_list(ServiceListRequest::default()).await),
        ),
        (
            "ServiceStart",
            code(c.service_start(ServiceRequest::default()).await),
        ),
        (
            "ServiceStop",
            code(c.service_stop(ServiceRequest::default()).await),
        ),
        (
            "ServiceRestart",
            code(c.service_restart(ServiceRequest::default()).await),
        ),
        (
            "ServiceKill",
            code(c.service_kill(ServiceKillRequest::default()).await),
        ),
        ("Logs", code(c.logs(LogsRequest::default()).await)),
        ("Dmesg", code(c.dmesg(DmesgRequest::default()).await)),
        ("Read", code(c.read(ReadRequest::default()).await)),
        ("Stats", code(c.stats(StatsRequest::default()).await)),
        ("Mounts", code(c.mounts(MountsRequest::default()).await)),
        ("Reboot", code(c.reboot(PowerRequest::default()).await)),
        ("Shutdown", code(c.shutdown(PowerRequest::default()).await)),
        (
            "LastShutdown",
            code(c.last_shutdown(LastShutdownRequest::default()).await),
        ),
        (
            "Upgrade",
            code(
                c.upgrade(tokio_stream::iter(vec![
                    UpgradeRequest {
                        options: Some(UpgradeOptions::default()),
                        chunk: Vec::new(),
                    },
                    UpgradeRequest {
                        options: None,
                        chunk: vec![7; 1000],
                    },
                ]))
                .await,
            ),
        ),
        (
            "UpgradeFromUrl",
            // apid answers this one itself: an empty URL is refused as
            // invalid, which only happens once the role check has passed.
            match code(c.upgrade_from_url(UpgradeFromUrlRequest::default()).await) {
                Code::InvalidArgument => Code::Ok,
                other => other,
            },
        ),
        (
            "Rollback",
            code(c.rollback(RollbackRequest::default()).await),
        ),
        (
            "UpgradeStatus",
            code(c.upgrade_status(UpgradeStatusRequest::default()).await),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_decide_every_call_and_each_call_is_audited_and_forwarded_with_the_identity() {
    let s = setup().await;

    // Each role against every method: allowed exactly when the role table says so.
    for (role, cn) in [
        (Role::Admin, "admin"),
        (Role::Operator, "ops"),
        (Role::Reader, "reader"),
    ] {
        let mut c = client_for(&s, role, cn).await;
        let results = call_everything(&mut c).await;
        assert_eq!(
            results.len(),
            api::roles::TABLE.len(),
            "the test calls every method"
        );
        let held = api::roles::Role::from_organization(role.organization()).unwrap();
        for (method, code) in results {
            let needed = api::roles::TABLE
                .iter()
                .find(|r| r.method == method)
                .unwrap()
                .role;
            let want = if held >= needed {
                Code::Ok
            } else {
                Code::PermissionDenied
            };
            assert_eq!(code, want, "{cn} calling {method}");
        }
    }

    // The refusal names the needed and the held role.
    let mut reader = client_for(&s, Role::Reader, "reader").await;
    let e = reader
        .apply_configuration(ApplyConfigurationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.message(),
        r#"ApplyConfiguration needs os:admin; client "reader" has os:reader"#
    );
    let mut operator = client_for(&s, Role::Operator, "ops").await;
    assert!(operator.reboot(PowerRequest::default()).await.is_ok());
    let e = operator
        .apply_configuration(ApplyConfigurationRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        r#"ApplyConfiguration needs os:admin; client "ops" has os:operator"#
    );

    // Refused calls never reach the upstream; allowed ones carry the identity.
    let seen = s.upstream.seen();
    assert!(seen
        .iter()
        .all(|c| !(c.method == "ApplyConfiguration" && c.cn.as_deref() != Some("admin"))));
    let reboot_by_ops = seen
        .iter()
        .find(|c| c.method == "Reboot" && c.cn.as_deref() == Some("ops"))
        .unwrap();
    assert_eq!(reboot_by_ops.role.as_deref(), Some("os:operator"));

    // A client cannot pretend to be someone else through the metadata.
    let mut req = tonic::Request::new(VersionRequest::default());
    req.metadata_mut()
        .insert("x-keelson-client-cn", "admin".parse().unwrap());
    req.metadata_mut()
        .insert("x-keelson-client-role", "os:admin".parse().unwrap());
    let before = s.upstream.seen().len();
    let v = reader.version(req).await.unwrap().into_inner();
    assert_eq!(v.os_version, "test-upstream");
    let last = s.upstream.seen()[before..].to_vec();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].cn.as_deref(), Some("reader"));
    assert_eq!(last[0].role.as_deref(), Some("os:reader"));

    // A server stream passes through message by message.
    let mut admin = client_for(&s, Role::Admin, "admin").await;
    let mut stream = admin
        .logs(LogsRequest {
            service: "kubelet".into(),
            follow: false,
            tail: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(line) = stream.message().await.unwrap() {
        lines.push(line.line);
    }
    assert_eq!(
        lines,
        (0..common::LOG_LINES)
            .map(|i| format!("kubelet line {i}"))
            .collect::<Vec<_>>()
    );

    // One audit line per call, with the outcome.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.apid.log_text();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains(" audit ")).collect();
    assert!(
        audit.iter().any(|l| l.contains(
            "audit method=ApplyConfiguration client_cn=reader role=os:reader peer=127.0.0.1:"
        ) && l.contains("outcome=denied code=PermissionDenied took_ms=")),
        "{log}"
    );
    assert!(
        audit.iter().any(
            |l| l.contains("audit method=Logs client_cn=admin role=os:admin")
                && l.contains("outcome=ok code=Ok")
        ),
        "{log}"
    );
    // 3 roles × 19 methods + 4 single calls + Logs.
    assert_eq!(audit.len(), 3 * api::roles::TABLE.len() + 5, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_from_another_ca_expired_or_absent_fail_the_handshake() {
    let s = setup().await;
    let good = s.pki.client(Role::Admin, "admin");
    assert_eq!(
        common::handshake_error(
            s.apid.addr,
            common::mtls_config(s.pki.ca.cert_pem(), Some(&good))
        )
        .await,
        None,
        "a valid certificate must connect"
    );

    let other = Pki::new("other-ca").client(Role::Admin, "admin");
    let expired = s
        .pki
        .ca
        .issue_client(
            Role::Admin,
            "admin",
            Validity {
                not_before: time::OffsetDateTime::now_utc() - time::Duration::days(10),
                not_after: time::OffsetDateTime::now_utc() - time::Duration::days(1),
            },
        )
        .unwrap();
    for (what, cert, alert) in [
        ("another CA", Some(&other), "UnknownCA"),
        ("expired", Some(&expired), "CertificateExpired"),
        ("no certificate", None, "CertificateRequired"),
    ] {
        let err =
            common::handshake_error(s.apid.addr, common::mtls_config(s.pki.ca.cert_pem(), cert))
                .await
                .unwrap_or_else(|| panic!("{what}: connected"));
        assert!(err.contains(alert), "{what}: {err}");
        // And no call gets through on such a connection.
        let mut c =
            common::client_lazy(s.apid.addr, common::mtls_config(s.pki.ca.cert_pem(), cert));
        let e = c.version(VersionRequest::default()).await.unwrap_err();
        assert_ne!(e.code(), Code::Ok, "{what}");
    }
    assert!(s.upstream.seen().is_empty(), "nothing reached the upstream");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.apid.log_text().contains("TLS handshake refused"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_unavailable_and_recovers_when_init_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test-ca");
    pki.write_server_files(dir.path());
    let socket = dir.path().join("init.sock");
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let mut apid = Apid::start(
        &[
            "--ca",
            &p("ca.crt"),
            "--cert",
            &p("server.crt"),
            "--key",
            &p("server.key"),
            "--upstream",
            &p("init.sock"),
        ],
        &dir.path().join("apid.log"),
    );
    let admin = pki.client(Role::Admin, "admin");
    let mut c = common::client(
        apid.addr,
        common::mtls_config(pki.ca.cert_pem(), Some(&admin)),
    )
    .await;
    let e = c.version(VersionRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().starts_with(&format!(
            "init's API socket {} is not answering",
            socket.display()
        )),
        "{}",
        e.message()
    );
    // apid is still alive, and serves as soon as init listens.
    assert!(apid.child.try_wait().unwrap().is_none());
    let upstream = Upstream::default();
    upstream.spawn(&socket);
    let mut ok = false;
    for _ in 0..50 {
        if c.version(VersionRequest::default()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "apid did not reach the upstream once it was up");

    // SIGTERM: a clean, quick exit.
    let status = apid.terminate(Duration::from_secs(8));
    assert!(status.success(), "{status:?}");
    let log = apid.log_text();
    assert!(
        log.contains("stop requested") && log.contains("apid stopped"),
        "{log}"
    );
}
