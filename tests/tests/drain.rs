//! `keelson-drain` (the static binary the image ships) against the real
//! test control plane, without a VM: the RBAC `nodectl gen drain-role`
//! prints is enough for cordon and eviction; the drain ends at its
//! deadline with what it left; a node cordoned by hand is not claimed;
//! wrong credentials and an unreachable API server end in a bounded,
//! explained skip. With no kubelet here, pods never run, so evicted pods
//! stay terminating (the report must say so) and PodDisruptionBudgets do
//! not apply (the API server lets a pod that is not running be evicted
//! whatever its budget). The VM scenario (boot.rs) proves budgets, the
//! uncordon and the rest with a real kubelet.
//!
//! Ignored by default (`make test` runs it): it needs `out/kubernetes/bin/`
//! and the node binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use drain::protocol::{Outcome, Progress, Report, Request};
use keelson_tests::artifacts;
use keelson_tests::control_plane::ControlPlane;

const NODE: &str = "drain-test-node";
const OTHER: &str = "hand-cordoned-node";

/// Runs `keelson-drain ARGS` with `request`; returns every progress line
/// and the exit code.
fn run_drain(dir: &Path, request: &Request, args: &[&str]) -> (Vec<Progress>, Report, i32) {
    let path = dir.join("drain-request.json");
    std::fs::write(&path, serde_json::to_vec(request).unwrap()).unwrap();
    let out = Command::new(artifacts::node_binary("keelson-drain").unwrap())
        .arg("--request")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "keelson-drain {args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Progress> = stdout
        .lines()
        .map(|l| drain::protocol::parse_line(l).unwrap_or_else(|| panic!("not progress: {l}")))
        .collect();
    let report = match lines.last() {
        Some(Progress::Done(r)) => r.clone(),
        other => panic!("last line is not the report: {other:?}"),
    };
    (lines, report, out.status.code().unwrap_or(-1))
}

fn apply(cp: &ControlPlane, dir: &Path, name: &str, yaml: &str) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    cp.kubectl(&["apply", "-f", path.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}"));
}

fn pod(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}}}\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: c\n    image: keelson.local/busybox:1\n"
    )
}

#[test]
#[ignore = "needs out/kubernetes/bin and the node binaries; run by make test"]
fn drain_cordons_evicts_within_budgets_and_skips_cleanly_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[NODE]).unwrap_or_else(|e| panic!("{e}"));
    for n in [NODE, OTHER] {
        apply(
            &cp,
            dir.path(),
            &format!("{n}.yaml"),
            &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n"),
        );
    }

    // The identity from `nodectl gen drain-role`, restricted to two nodes.
    let role = Command::new(artifacts::node_binary("nodectl").unwrap())
        .args(["gen", "drain-role", "--node", NODE, "--node", OTHER])
        .output()
        .unwrap();
    assert!(role.status.success());
    apply(
        &cp,
        dir.path(),
        "role.yaml",
        &String::from_utf8(role.stdout).unwrap(),
    );
    let token = cp
        .service_account_token(
            "kube-system",
            "keelson-drain-token",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"));

    // Two pods bound to the node, and a finished one the drain leaves be.
    apply(&cp, dir.path(), "web-1.yaml", &pod("web-1", "web"));
    apply(&cp, dir.path(), "web-2.yaml", &pod("web-2", "web"));

    let request = Request {
        node: NODE.into(),
        kubeconfig: None,
        endpoint: Some(format!("https://127.0.0.1:{}", cp.api_port())),
        ca_cert: Some(cp.ca_pem().to_string()),
        token: Some(token.clone()),
    };
    let started = Instant::now();
    let (lines, report, code) = run_drain(dir.path(), &request, &["drain", "--timeout", "20s"]);
    let took = started.elapsed();
    assert_eq!(code, 1, "a drain that leaves pods exits 1");
    assert!(
        took < Duration::from_secs(40),
        "the drain outlived its deadline: {took:?}"
    );
    assert_eq!(lines.first(), Some(&Progress::Cordoned { by_us: true }));
    assert_eq!(report.outcome, Outcome::TimedOut);
    assert!(report.cordoned_by_us);
    assert_eq!(report.evicted, vec!["default/web-1", "default/web-2"]);
    let left: Vec<(&str, &str)> = report
        .left
        .iter()
        .map(|p| (p.pod.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(
        left,
        [
            ("default/web-1", "evicted; still terminating"),
            ("default/web-2", "evicted; still terminating")
        ]
    );
    assert!(lines.iter().any(|l| matches!(l,
        Progress::Pods { to_evict, .. } if to_evict.len() == 2)));
    let node = cp
        .kubectl(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.spec.unschedulable} {.metadata.annotations.keelson\\.dev/cordoned-by}",
        ])
        .unwrap();
    assert_eq!(node.trim(), "true keelson-drain");
    let web = cp
        .kubectl(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .unwrap();
    assert!(!web.trim().is_empty(), "web-1 is being deleted: {web}");

    // A node an operator cordoned is drained but not claimed.
    cp.kubectl(&["cordon", OTHER]).unwrap();
    let other = Request {
        node: OTHER.into(),
        ..request.clone()
    };
    let (_, report, code) = run_drain(dir.path(), &other, &["drain", "--timeout", "10s"]);
    assert_eq!((code, report.outcome), (0, Outcome::Done), "{report:?}");
    assert!(!report.cordoned_by_us);

    // Uncordon waits for Ready; with no kubelet the node never is: it gives
    // up within its bound and leaves the cordon.
    let (_, report, code) = run_drain(dir.path(), &request, &["uncordon", "--wait", "5s"]);
    assert_eq!((code, report.outcome), (1, Outcome::Skipped));
    assert!(
        report.reason.as_deref().unwrap_or("").contains("not Ready"),
        "{report:?}"
    );

    // Wrong credentials: skipped at once, saying so, nothing changed.
    let wrong = Request {
        token: Some("not-a-token".into()),
        ..other.clone()
    };
    let (lines, report, code) = run_drain(dir.path(), &wrong, &["drain", "--timeout", "30s"]);
    assert_eq!(
        (code, report.outcome, lines.len()),
        (1, Outcome::Skipped, 1)
    );
    assert!(
        report.reason.as_deref().unwrap_or("").contains("401"),
        "{report:?}"
    );

    // An API server that does not answer: skipped after the API wait.
    let unreachable = Request {
        endpoint: Some("https://127.0.0.1:9".into()),
        ..request.clone()
    };
    let started = Instant::now();
    let (_, report, _) = run_drain(
        dir.path(),
        &unreachable,
        &["drain", "--timeout", "60s", "--api-wait", "3s"],
    );
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("unreachable"),
        "{report:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the skip took {:?}",
        started.elapsed()
    );
}
