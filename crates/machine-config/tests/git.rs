//! Reading a config at a ref of a real repository made with the `git` CLI:
//! by branch, lightweight and annotated tag, full and short commit id and
//! HEAD, from a work tree and a bare clone; and every failure names the
//! repository, the ref and the path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use machine_config::git::{read_at_ref, GitError};

/// Runs git in `dir` isolated from the host's configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn commit_file(dir: &Path, path: &str, content: &str, message: &str) -> String {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
    git(dir, &["add", path]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// main: v1 (tag v1, lightweight) then v2 (tag v2.0, annotated);
/// branch `next` from v2 with v3.
struct Fixture {
    _tmp: tempfile::TempDir,
    repo: std::path::PathBuf,
    c1: String,
    c2: String,
    c3: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("configs");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let c1 = commit_file(&repo, "nodes/worker-1.yaml", "hostname: v1\n", "v1");
    git(&repo, &["tag", "v1"]);
    let c2 = commit_file(&repo, "nodes/worker-1.yaml", "hostname: v2\n", "v2");
    git(&repo, &["tag", "-a", "v2.0", "-m", "release 2"]);
    git(&repo, &["checkout", "-q", "-b", "next"]);
    let c3 = commit_file(&repo, "nodes/worker-1.yaml", "hostname: v3\n", "v3");
    git(&repo, &["checkout", "-q", "main"]);
    Fixture {
        _tmp: tmp,
        repo,
        c1,
        c2,
        c3,
    }
}

#[test]
fn reads_the_file_at_every_kind_of_ref() {
    let f = fixture();
    let short_c1 = &f.c1[..7];
    let cases: [(&str, &str, &str); 9] = [
        ("main", "hostname: v2\n", &f.c2),
        ("HEAD", "hostname: v2\n", &f.c2),
        ("next", "hostname: v3\n", &f.c3),
        ("refs/heads/next", "hostname: v3\n", &f.c3),
        ("v1", "hostname: v1\n", &f.c1),
        // Annotated: the commit, not the tag object.
        ("v2.0", "hostname: v2\n", &f.c2),
        (short_c1, "hostname: v1\n", &f.c1),
        (&f.c3, "hostname: v3\n", &f.c3),
        (&f.c2[..12], "hostname: v2\n", &f.c2),
    ];
    for (git_ref, content, commit) in cases {
        let (bytes, source) = read_at_ref(&f.repo, git_ref, "nodes/worker-1.yaml")
            .unwrap_or_else(|e| panic!("{git_ref}: {e}"));
        assert_eq!(String::from_utf8(bytes).unwrap(), content, "at {git_ref}");
        assert_eq!(source.commit, commit, "at {git_ref}");
        assert_eq!(source.commit.len(), 40);
        assert_eq!(source.git_ref, git_ref);
        assert_eq!(source.path, "nodes/worker-1.yaml");
        assert_eq!(source.repo, f.repo.display().to_string());
    }
    // The annotated tag's own id differs from the commit it tags.
    assert_ne!(git(&f.repo, &["rev-parse", "v2.0"]), f.c2);

    // Leading ./ or / are the same path.
    let (_, source) = read_at_ref(&f.repo, "main", "./nodes/worker-1.yaml").unwrap();
    assert_eq!(source.path, "nodes/worker-1.yaml");

    // Serialized with `ref`, as recorded in the config history.
    let json = serde_json::to_value(&source).unwrap();
    assert_eq!(json["ref"], "main");
    assert_eq!(json["commit"], f.c2.as_str());

    // A bare clone reads the same.
    let bare = f.repo.parent().unwrap().join("configs.git");
    git(
        f.repo.parent().unwrap(),
        &["clone", "-q", "--bare", "configs", "configs.git"],
    );
    let (bytes, source) = read_at_ref(&bare, "v1", "nodes/worker-1.yaml").unwrap();
    assert_eq!(bytes, b"hostname: v1\n");
    assert_eq!(source.commit, f.c1);

    // Objects packed by gc are still found (by short id too).
    git(&f.repo, &["gc", "-q"]);
    let (bytes, _) = read_at_ref(&f.repo, short_c1, "nodes/worker-1.yaml").unwrap();
    assert_eq!(bytes, b"hostname: v1\n");
}

#[test]
fn every_failure_names_repo_ref_and_path() {
    let f = fixture();
    let repo = f.repo.display().to_string();
    let p = "nodes/worker-1.yaml";

    let missing = f.repo.join("nope");
    let err = read_at_ref(&missing, "main", p).unwrap_err();
    assert!(matches!(err, GitError::RepoNotFound { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!(
        "git repository {}: cannot open",
        missing.display()
    )));

    let plain = f.repo.join("nodes");
    let err = read_at_ref(&plain, "main", p).unwrap_err();
    assert!(matches!(err, GitError::RepoNotFound { .. }), "{err}");

    let err = read_at_ref(&f.repo, "release-9", p).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "git repository {repo}: ref \"release-9\" not found (no such branch, tag or commit id)"
        )
    );
    let err = read_at_ref(&f.repo, "deadbeef", p).unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    let err = read_at_ref(&f.repo, "", p).unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");

    let err = read_at_ref(&f.repo, "v1", "nodes/worker-2.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "git repository {repo}: nodes/worker-2.yaml not found at v1 (commit {})",
            f.c1
        )
    );
    let err = read_at_ref(&f.repo, "main", "nodes").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "git repository {repo}: nodes is a directory at main (commit {}), not a file",
            f.c2
        )
    );
    let err = read_at_ref(&f.repo, "main", "nodes/worker-1.yaml/x").unwrap_err();
    assert!(matches!(err, GitError::PathNotInTree { .. }), "{err}");
    for bad in [
        "",
        "/",
        "../configs/nodes/worker-1.yaml",
        "nodes/../nodes/worker-1.yaml",
    ] {
        let err = read_at_ref(&f.repo, "main", bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("git repository {repo}: path {bad:?} is not a relative path inside the tree")
        );
    }
}

#[test]
fn a_tag_of_a_tree_is_not_a_commit_and_links_are_not_files() {
    let f = fixture();
    let tree = git(&f.repo, &["rev-parse", "main^{tree}"]);
    git(&f.repo, &["tag", "just-a-tree", &tree]);
    let err = read_at_ref(&f.repo, "just-a-tree", "nodes/worker-1.yaml").unwrap_err();
    assert!(matches!(err, GitError::NotACommit { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("\"just-a-tree\" does not point to a commit"));

    std::os::unix::fs::symlink("nodes/worker-1.yaml", f.repo.join("current.yaml")).unwrap();
    git(&f.repo, &["add", "current.yaml"]);
    git(&f.repo, &["commit", "-q", "-m", "link"]);
    let err = read_at_ref(&f.repo, "main", "current.yaml").unwrap_err();
    assert!(
        err.to_string()
            .contains("current.yaml is a symbolic link at main"),
        "{err}"
    );
}

#[test]
fn an_ambiguous_short_id_is_refused_not_guessed() {
    let f = fixture();
    // Enough blobs that two ids share their first 4 hex digits.
    let dir = f.repo.join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..1500 {
        std::fs::write(dir.join(format!("{i}")), format!("{i}\n")).unwrap();
    }
    git(&f.repo, &["add", "many"]);
    git(&f.repo, &["commit", "-q", "-m", "many"]);
    let ids = git(&f.repo, &["rev-list", "--objects", "--all"]);
    let mut seen = std::collections::HashMap::new();
    let prefix = ids
        .lines()
        .map(|l| l[..4].to_string())
        .find(|p| seen.insert(p.clone(), ()).is_some())
        .expect("1500 objects share a 4-digit prefix");
    let err = read_at_ref(&f.repo, &prefix, "nodes/worker-1.yaml").unwrap_err();
    assert!(matches!(err, GitError::AmbiguousRef { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("is an ambiguous abbreviated id (give more hex digits)"));
}
