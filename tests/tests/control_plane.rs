//! The test control plane on its own: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler 1.20.2 start on loopback with
//! a generated PKI; the admin and a node token authenticate with the right
//! identities; every process is gone after drop.
//!
//! Ignored by default (`make test` runs it): it needs `out/kubernetes/bin/`
//! from `make kube` and fails, not skips, when that is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use keelson_tests::command::CommandError;
use keelson_tests::control_plane::ControlPlane;
use keelson_tests::process::is_alive;

const NODE: &str = "cp-test-node";

fn node_object(name: &str) -> String {
    format!("{{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{{\"name\":\"{name}\"}}}}")
}

#[test]
#[ignore = "needs out/kubernetes/bin (make kube); run by make test"]
fn control_plane_serves_admin_and_node_identities_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut cp = ControlPlane::start(dir.path(), &[NODE]).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("control plane ready in {:?}", started.elapsed());
    let pids = cp.pids();
    assert_eq!(
        pids.len(),
        4,
        "etcd, apiserver, controller manager, scheduler"
    );

    // The admin (client certificate, system:masters) sees the namespaces.
    let ns = cp.kubectl(&["get", "ns", "-o", "name"]).unwrap();
    for wanted in ["namespace/default", "namespace/kube-system"] {
        assert!(ns.lines().any(|l| l == wanted), "{wanted} missing in {ns}");
    }

    // The node's token is system:node:NODE in system:nodes.
    let token = cp.node_token(NODE).unwrap().to_string();
    let can = |verb_resource: &[&str]| {
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(verb_resource);
        // `yes` (exit 0) or `no[ - reason]` (exit 1): the first word.
        let answer = match cp.kubectl_as_token(&token, &args) {
            Ok(out) => out,
            Err(CommandError::Failed { stderr, .. }) => stderr,
            Err(e) => panic!("{e}"),
        };
        answer
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(can(&["get", "nodes"]), "yes");
    assert_eq!(
        can(&["list", "secrets", "--namespace", "kube-system"]),
        "no"
    );
    // NodeRestriction: it may register itself and no other node.
    let own = dir.path().join("own-node.json");
    std::fs::write(&own, node_object(NODE)).unwrap();
    cp.kubectl_as_token(&token, &["create", "-f", &own.to_string_lossy()])
        .unwrap();
    let other = dir.path().join("other-node.json");
    std::fs::write(&other, node_object("someone-else")).unwrap();
    let err = cp
        .kubectl_as_token(&token, &["create", "-f", &other.to_string_lossy()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    assert!(cp.node(NODE).unwrap().is_some());
    assert!(
        !cp.node_ready(NODE).unwrap(),
        "no kubelet posts status: not Ready"
    );

    // A wrong token is refused.
    let err = cp
        .kubectl_as_token(
            "0123456789abcdef0123456789abcdef",
            &["get", "--raw", "/api"],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("Unauthorized"), "{err}");

    // The scheduler works: an unpinned pod gets a scheduling decision
    // (no Ready node: FailedScheduling).
    cp.create(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unpinned\n  namespace: default\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: keelson.local/busybox:1\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = cp.events_for("unpinned");
        if events.contains("FailedScheduling") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduling event; events: {events}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(cp.pod("unpinned").unwrap().phase, "Pending");

    // Stopping leaves nothing running.
    cp.stop();
    for pid in &pids {
        assert!(!is_alive(*pid), "process {pid} still running after stop");
    }
    drop(cp);
}

#[test]
#[ignore = "needs out/kubernetes/bin (make kube); run by make test"]
fn dropping_the_control_plane_on_panic_stops_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let pids = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let cp = ControlPlane::start(dir.path(), &[NODE]).unwrap_or_else(|e| panic!("{e}"));
        *pids.lock().unwrap() = cp.pids();
        panic!("a failing scenario");
    });
    assert!(result.is_err());
    let pids = pids.into_inner().unwrap();
    assert_eq!(pids.len(), 4);
    for pid in &pids {
        assert!(!is_alive(*pid), "process {pid} survived the panic");
    }
}
