//! `nodectl config validate | plan | schema`, run as the real binary:
//! exit codes, every problem with file, path, line and column, plans with
//! live and reboot changes, and configs read from a real git repository.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn nodectl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(args)
        .current_dir(cwd)
        .env_remove("NODECTL_LOG")
        .output()
        .expect("run nodectl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const GOOD: &str = "\
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: node1
  sysctls:
    vm.max_map_count: \"262144\"
  kernel:
    args: [\"console=ttyS0\"]
";

/// Four errors of different kinds and one warning, at known places.
const BAD: &str = "\
apiVersion: keelson.dev/v1alpha1
kind: MachineConfig
machine:
  hostname: node1
  sysctls:
    net..ipv4: \"1\"
    net.ipv4.ip_forward: \"0\"
  files:
    - path: /usr/bin/evil
      content: \"x\"
network:
  interfaces:
    - name: eth0
      addresses: [\"10.0.0.5/24\"]
      routes:
        - to: 0.0.0.0/0
          via: 192.168.9.1
    - name: eth0
      dhcp: true
";

#[test]
fn validate_reports_every_problem_and_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("good.yaml"), GOOD).unwrap();
    std::fs::write(d.join("bad.yaml"), BAD).unwrap();
    std::fs::write(d.join("binary.yaml"), b"machine:\n  hostname: \xff\xfe\n").unwrap();

    // All valid: exit 0.
    let o = nodectl(&["config", "validate", "good.yaml"], d);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "good.yaml: valid\n");

    // Invalid: every error, each with the file, path, line and column; the
    // warning too; exit 1. The valid file next to it is still reported.
    let o = nodectl(&["config", "validate", "good.yaml", "bad.yaml"], d);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for expected in [
        "good.yaml: valid\n",
        "bad.yaml: machine.sysctls.net..ipv4: line 6 col 5: ",
        "bad.yaml: machine.files[0].path: line 9 col 13: ",
        "bad.yaml: network.interfaces[0].routes[0].via: line 17 col 16: ",
        "bad.yaml: network.interfaces[1].name: line 18 col 13: ",
        "bad.yaml: warning: machine.sysctls.net.ipv4.ip_forward: line 7 col ",
        "bad.yaml: invalid (4 errors, 1 warning)\n",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // Not UTF-8: an invalid config with a location, exit 1.
    let o = nodectl(&["config", "validate", "binary.yaml"], d);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("binary.yaml: (document): line 2 col 13: "),
        "{}",
        stdout(&o)
    );

    // Unreadable: exit 2 with the reason, and the other files still checked
    // (unreadable wins over invalid).
    let o = nodectl(&["config", "validate", "missing.yaml", "bad.yaml"], d);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("cannot read missing.yaml: No such file"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("bad.yaml: invalid (4 errors"),
        "{}",
        stdout(&o)
    );
    let o = nodectl(&["config", "validate", "."], d);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a directory is unreadable as a config"
    );

    // JSON carries the same problems with their locations.
    let o = nodectl(
        &["-o", "json", "config", "validate", "bad.yaml", "good.yaml"],
        d,
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["file"], "bad.yaml");
    assert_eq!(v[0]["status"], "invalid");
    assert_eq!(v[0]["errors"].as_array().unwrap().len(), 4);
    assert_eq!(v[0]["errors"][0]["path"], "machine.sysctls.net..ipv4");
    assert_eq!(v[0]["errors"][0]["line"], 6);
    assert_eq!(v[0]["errors"][0]["column"], 5);
    assert_eq!(v[0]["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(v[1]["status"], "valid");

    // Standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args(["config", "validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(BAD.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("<stdin>: network.interfaces[1].name: line 18 col 13: "));

    // Usage errors exit 2.
    let o = nodectl(&["config", "validate"], d);
    assert_eq!(o.status.code(), Some(2));
    let o = nodectl(&["config", "validate", "-", "-"], d);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn plan_marks_live_and_reboot_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("old.yaml"), GOOD).unwrap();
    // A changed sysctl only: live.
    let sysctl_only = GOOD.replace("\"262144\"", "\"524288\"");
    std::fs::write(d.join("sysctl.yaml"), &sysctl_only).unwrap();
    // A changed sysctl and a changed kernel argument: a reboot.
    let both = sysctl_only.replace("console=ttyS0", "console=ttyS1");
    std::fs::write(d.join("both.yaml"), &both).unwrap();
    std::fs::write(d.join("bad.yaml"), BAD).unwrap();

    let o = nodectl(&["config", "plan", "old.yaml", "sysctl.yaml"], d);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("live "), "{out}");
    assert!(
        lines[0].contains("vm.max_map_count") && lines[0].contains("524288"),
        "{out}"
    );
    assert_eq!(lines[1], "1 change, all live: no reboot needed");

    let o = nodectl(&["config", "plan", "old.yaml", "both.yaml"], d);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("reboot ") && l.contains("console=ttyS1")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("live ") && l.contains("vm.max_map_count")),
        "{out}"
    );
    assert!(
        // The kernel argument change is one line for the removed argument
        // and one for the added one.
        out.ends_with("3 changes (1 live, 2 at the next boot): a reboot is needed\n"),
        "{out}"
    );

    // JSON: each change with its apply mode, and the verdict.
    let o = nodectl(
        &["config", "plan", "-o", "json", "old.yaml", "both.yaml"],
        d,
    );
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["needsReboot"], true);
    let changes = v["changes"].as_array().unwrap();
    let apply_of = |kind: &str| {
        changes
            .iter()
            .find(|c| c["kind"] == kind)
            .map(|c| c["apply"].as_str().unwrap().to_owned())
    };
    assert_eq!(apply_of("kernelArgs").as_deref(), Some("reboot"));
    assert_eq!(apply_of("sysctl").as_deref(), Some("live"));

    // Same config: no changes.
    let o = nodectl(&["config", "plan", "old.yaml", "old.yaml"], d);
    assert_eq!(stdout(&o), "no changes\n");

    // A first config: everything is applied, no OLD.
    let o = nodectl(&["config", "plan", "--first", "old.yaml"], d);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("vm.max_map_count"), "{}", stdout(&o));

    // An invalid side: exit 1 with its problems, no plan printed.
    let o = nodectl(&["config", "plan", "old.yaml", "bad.yaml"], d);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("bad.yaml: network.interfaces[1].name: line 18 col 13: "),
        "{}",
        stderr(&o)
    );
    // Unreadable: exit 2. Wrong arity: exit 2.
    let o = nodectl(&["config", "plan", "old.yaml", "nope.yaml"], d);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.yaml"), "{}", stderr(&o));
    let o = nodectl(&["config", "plan", "old.yaml"], d);
    assert_eq!(o.status.code(), Some(2));
    let o = nodectl(&["config", "plan", "--first", "old.yaml", "both.yaml"], d);
    assert_eq!(o.status.code(), Some(2));
}

fn git(repo: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("run git");
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    stdout(&o).trim().to_owned()
}

#[test]
fn validate_reads_a_config_from_git_at_a_ref() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::create_dir(repo.join("nodes")).unwrap();
    std::fs::write(repo.join("nodes/node1.yaml"), GOOD).unwrap();
    git(&repo, &["add", "nodes/node1.yaml"]);
    git(&repo, &["commit", "-q", "-m", "good config"]);
    let good_commit = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "v1"]);
    std::fs::write(repo.join("nodes/node1.yaml"), BAD).unwrap();
    git(&repo, &["commit", "-q", "-a", "-m", "broken config"]);
    let bad_commit = git(&repo, &["rev-parse", "HEAD"]);
    // The work tree differs from every commit: what is validated is the
    // committed file, never the work tree.
    std::fs::write(repo.join("nodes/node1.yaml"), "garbage: [").unwrap();

    let d = dir.path();
    let o = nodectl(
        &[
            "config",
            "validate",
            "--git",
            "repo",
            "--ref",
            "v1",
            "--path",
            "nodes/node1.yaml",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("read repo@v1:nodes/node1.yaml (commit {good_commit})\nrepo@v1:nodes/node1.yaml: valid\n")
    );

    // The default ref is HEAD: the broken commit.
    let o = nodectl(
        &[
            "config",
            "validate",
            "--git",
            "repo",
            "--path",
            "nodes/node1.yaml",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "read repo@HEAD:nodes/node1.yaml (commit {bad_commit})\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("repo@HEAD:nodes/node1.yaml: network.interfaces[1].name: line 18 col 13: "),
        "{out}"
    );

    // JSON carries the source.
    let o = nodectl(
        &[
            "-o",
            "json",
            "config",
            "validate",
            "--git",
            "repo",
            "--ref",
            &good_commit[..10],
            "--path",
            "nodes/node1.yaml",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["git"]["commit"], good_commit.as_str());
    assert_eq!(v[0]["status"], "valid");

    // A missing path, ref or repository: exit 2, naming what failed.
    let o = nodectl(
        &[
            "config",
            "validate",
            "--git",
            "repo",
            "--path",
            "nodes/other.yaml",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nodes/other.yaml"), "{}", stderr(&o));
    let o = nodectl(
        &[
            "config",
            "validate",
            "--git",
            "repo",
            "--ref",
            "no-such-branch",
            "--path",
            "nodes/node1.yaml",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such-branch"), "{}", stderr(&o));
    let o = nodectl(
        &["config", "validate", "--git", "nowhere", "--path", "x.yaml"],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nowhere"), "{}", stderr(&o));
}

#[test]
fn schema_is_the_json_schema_and_completions_exist() {
    let dir = tempfile::tempdir().unwrap();
    let o = nodectl(&["config", "schema"], dir.path());
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert!(v["properties"]["machine"].is_object(), "{v}");
    assert!(stdout(&o).contains("\n  \""), "pretty-printed");

    for shell in ["bash", "zsh", "fish"] {
        let o = nodectl(&["completion", shell], dir.path());
        assert_eq!(o.status.code(), Some(0));
        assert!(
            stdout(&o).contains("validate"),
            "{shell} completion lacks commands"
        );
    }
    let o = nodectl(&["completion", "tcsh"], dir.path());
    assert_eq!(o.status.code(), Some(2));
}
