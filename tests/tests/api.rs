//! The machine API end to end: a node booted with no config waits in
//! maintenance mode; `nodectl apply-config --insecure` (pinned to the
//! fingerprint printed on the console) gives it the config from a git
//! repository; from then on only mTLS with the config's CA works, roles
//! decide, configs are stored as generations with their git commit, a live
//! sysctl change is visible through `nodectl read`, a `try` reverts by
//! itself, an invalid config changes nothing, apid comes back after a
//! restart and after SIGKILL, and `nodectl shutdown` leaves every ext4
//! partition clean.
//!
//! Everything is driven through the real `nodectl` binary (the static one
//! built for the image) against the real apid and init in QEMU.
//!
//! Ignored by default; `make test` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keelson_tests::nodectl::{json, strings, Nodectl, Operator};
use keelson_tests::scenario::{markers, test_pod_yaml, writer_pod_yaml, Cluster};
use regex::Regex;

const NODE: &str = "keelson-api-0";
const SYSCTL: &str = "net.core.somaxconn";
const SYSCTL_PATH: &str = "/proc/sys/net/core/somaxconn";

fn read_sysctl(n: &Nodectl, contexts: &Path) -> String {
    n.ok(contexts, &["read", SYSCTL_PATH]).trim().to_string()
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@keelson.invalid",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits `yaml` as node.yaml; returns the commit id.
fn commit_config(repo: &Path, yaml: &str, message: &str) -> String {
    std::fs::write(repo.join("node.yaml"), yaml).unwrap();
    git(repo, &["add", "node.yaml"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The config's YAML with `SYSCTL` set to `value`.
fn with_sysctl(cfg: &machine_config::MachineConfig, value: &str) -> String {
    let mut c = cfg.clone();
    c.machine.sysctls.insert(SYSCTL.into(), value.into());
    keelson_tests::node_config::to_yaml(&c).unwrap()
}

#[test]
#[ignore = "boots the image in QEMU (minutes); run by make test"]
fn maintenance_then_mtls_apply_config_generations_roles_and_apid_restarts() {
    let relay = Path::new(env!("CARGO_BIN_EXE_keelson-relay"));
    let host = tempfile::tempdir().unwrap();
    // The operator's PKI, made by nodectl itself; a second one plays a
    // stranger whose CA the node does not trust.
    let op = Operator::new(&host.path().join("secrets")).unwrap_or_else(|e| panic!("{e}"));
    let stranger = Operator::new(&host.path().join("stranger")).unwrap_or_else(|e| panic!("{e}"));
    let certificates = op.node_certificates(NODE).unwrap_or_else(|e| panic!("{e}"));

    let mut cluster = Cluster::start_unconfigured(NODE, relay, |cfg| {
        cfg.machine.certificates = Some(certificates.clone());
        cfg.machine.sysctls.insert(SYSCTL.into(), "1111".into());
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("work directory: {}", cluster.work_dir().display());
    let endpoint = format!("127.0.0.1:{}", cluster.machine_api_port);
    let nodectl = Nodectl {
        bin: op.bin.clone(),
        endpoint: endpoint.clone(),
    };
    let admin = op
        .contexts(host.path(), "admin", "admin", &endpoint)
        .unwrap();
    let reader = op
        .contexts(host.path(), "reader", "reader", &endpoint)
        .unwrap();
    let outsider = stranger
        .contexts(host.path(), "stranger", "admin", &endpoint)
        .unwrap();

    // 1. Maintenance mode: the fingerprint is on the console.
    let line = cluster
        .vm
        .wait_for_line(markers::MAINTENANCE, Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", line.at.as_secs_f64(), line.text);
    let fingerprint = Regex::new(markers::MAINTENANCE)
        .unwrap()
        .captures(&line.text)
        .unwrap()[1]
        .to_string();

    // In maintenance mode only Version and ApplyConfiguration are open.
    let v = nodectl.eventually(
        &admin,
        &[
            "--insecure",
            "--fingerprint",
            &fingerprint,
            "version",
            "-o",
            "json",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        json(&v)["maintenance"],
        serde_json::Value::Bool(true),
        "{v}"
    );
    let wrong_pin = "00".repeat(32);
    let r = nodectl.run(
        None,
        &["--insecure", "--fingerprint", &wrong_pin, "version"],
    );
    assert_eq!(r.code, 2, "a wrong fingerprint must not connect: {r:?}");
    let r = nodectl.run(
        None,
        &["--insecure", "--fingerprint", &fingerprint, "services"],
    );
    assert_eq!(r.code, 1, "services are closed in maintenance mode: {r:?}");

    // 2. The first config, from a git repository.
    let repo = host.path().join("configs");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let yaml1 = keelson_tests::node_config::to_yaml(&cluster.config).unwrap();
    let commit1 = commit_config(&repo, &yaml1, "node: first config");
    let repo_s = repo.display().to_string();
    let r = nodectl.run(
        None,
        &[
            "--insecure",
            "--fingerprint",
            &fingerprint,
            "apply-config",
            "--git",
            &repo_s,
            "--ref",
            "main",
            "--path",
            "node.yaml",
        ],
    );
    assert_eq!(r.code, 0, "first apply-config: {r:?}");
    let ready = cluster
        .vm
        .wait_for_line(markers::NODE_READY, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{:>6.1}s] {}", ready.at.as_secs_f64(), ready.text);

    // 3. mTLS with the config's CA; maintenance is over for good.
    let v = nodectl.eventually(&admin, &["version", "-o", "json"], Duration::from_secs(60));
    assert_eq!(
        json(&v)["maintenance"],
        serde_json::Value::Bool(false),
        "{v}"
    );
    let r = nodectl.run(
        None,
        &["--insecure", "--fingerprint", &fingerprint, "version"],
    );
    assert_ne!(r.code, 0, "the maintenance certificate is gone: {r:?}");
    let services = nodectl.ok(&admin, &["services", "-o", "json"]);
    for name in ["apid", "containerd", "kubelet"] {
        assert!(services.contains(name), "{name} missing from {services}");
    }
    let health = nodectl.ok(&admin, &["health", "--wait", "-o", "json"]);
    assert!(health.contains("kubelet"), "{health}");
    assert_eq!(read_sysctl(&nodectl, &admin), "1111");

    // 4. A live sysctl change in no-reboot mode, stored as generation 2.
    let commit2 = commit_config(
        &repo,
        &with_sysctl(&cluster.config, "2222"),
        "somaxconn 2222",
    );
    nodectl.ok(
        &admin,
        &[
            "apply-config",
            "--git",
            &repo_s,
            "--ref",
            "main",
            "--path",
            "node.yaml",
            "--mode",
            "no-reboot",
        ],
    );
    assert_eq!(read_sysctl(&nodectl, &admin), "2222");
    let history = json(&nodectl.ok(&admin, &["config", "history", "-o", "json"]));
    let text = strings(&history);
    assert!(
        text.contains(&commit1) && text.contains(&commit2),
        "history lacks the commits: {history}"
    );

    // 5. A reader may read but not apply; a stranger's CA cannot connect.
    let r = nodectl.run(
        Some(&reader),
        &[
            "apply-config",
            "--git",
            &repo_s,
            "--ref",
            "main",
            "--path",
            "node.yaml",
        ],
    );
    assert_eq!(r.code, 1, "reader apply-config: {r:?}");
    assert!(
        r.stderr.contains("os:admin"),
        "the refusal names the role needed: {r:?}"
    );
    nodectl.ok(&reader, &["version"]);
    let r = nodectl.run(Some(&outsider), &["version"]);
    assert_eq!(
        r.code, 2,
        "a certificate from another CA must not connect: {r:?}"
    );

    // 6. try without confirm: live at once, reverted by itself.
    let trial = host.path().join("trial.yaml");
    std::fs::write(&trial, with_sysctl(&cluster.config, "3333")).unwrap();
    let t = trial.display().to_string();
    nodectl.ok(
        &admin,
        &[
            "apply-config",
            "-f",
            &t,
            "--mode",
            "try",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(read_sysctl(&nodectl, &admin), "3333");
    cluster
        .vm
        .wait_for_line(
            r"keelson: config generation \d+ reverted",
            Duration::from_secs(90),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read_sysctl(&nodectl, &admin),
        "2222",
        "the trial was reverted"
    );
    let history = nodectl.ok(&admin, &["config", "history", "-o", "json"]);
    assert!(history.contains("reverted"), "{history}");

    // 7. An invalid config is refused with its problems; nothing changes.
    let bad = host.path().join("bad.yaml");
    std::fs::write(
        &bad,
        yaml1.replace(&format!("hostname: {NODE}"), "hostname: Not_A_Hostname!"),
    )
    .unwrap();
    let b = bad.display().to_string();
    let r = nodectl.run(Some(&admin), &["apply-config", "-f", &b]);
    assert_eq!(r.code, 1, "invalid config: {r:?}");
    assert!(
        r.stderr.contains("hostname") || r.stdout.contains("hostname"),
        "{r:?}"
    );
    assert_eq!(read_sysctl(&nodectl, &admin), "2222");
    let after = nodectl.ok(&admin, &["config", "history", "-o", "json"]);
    assert_eq!(after, history, "an invalid config adds no generation");

    // 8. apid restarted, then killed: the node serves again within seconds.
    nodectl.ok(&admin, &["service", "restart", "apid"]);
    std::thread::sleep(Duration::from_secs(2));
    nodectl.eventually(&admin, &["version"], Duration::from_secs(30));
    nodectl.ok(&admin, &["service", "kill", "apid", "--signal", "KILL"]);
    std::thread::sleep(Duration::from_secs(1));
    nodectl.eventually(&admin, &["version"], Duration::from_secs(45));
    let services = json(&nodectl.ok(&admin, &["services", "-o", "json"]));
    eprintln!("services after the kill: {services}");

    // 9. Three pods (one writing and syncing to a hostPath under /var),
    // then the ordered shutdown through the API: every ext4 partition is
    // clean and the writer's synced lines are on disk.
    cluster.cp.create(&writer_pod_yaml("writer", NODE)).unwrap();
    cluster.cp.create(&test_pod_yaml("one", NODE)).unwrap();
    cluster.cp.create(&test_pod_yaml("two", NODE)).unwrap();
    for pod in ["writer", "one", "two"] {
        cluster
            .cp
            .wait_pod_running(pod, Duration::from_secs(240))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let count = |text: &str| text.lines().filter(|l| l.starts_with("line ")).count();
    let synced = count(&nodectl.eventually(
        &admin,
        &["read", "/var/log/keelson-writer/writer"],
        Duration::from_secs(60),
    ));
    nodectl.ok(&admin, &["shutdown"]);
    let exited = cluster.vm.wait_exit(Duration::from_secs(180)).unwrap();
    assert!(
        exited.is_some(),
        "the node did not power off: {}",
        cluster.vm.console_tail(40)
    );
    let (raw, parts) = cluster.data_partitions_after_exit().unwrap();
    for (part, h) in parts {
        assert!(
            !h.needs_recovery(),
            "{part} needs recovery after shutdown: {h:?}"
        );
    }
    let on_disk =
        keelson_tests::disk::read_file(&raw, "VAR", "/log/keelson-writer/writer").unwrap();
    let on_disk = String::from_utf8_lossy(&on_disk);
    assert!(on_disk.ends_with('\n'), "the last line is whole");
    assert!(
        count(&on_disk) >= synced,
        "lines synced before the shutdown are on disk: {} < {synced}",
        count(&on_disk)
    );
}
