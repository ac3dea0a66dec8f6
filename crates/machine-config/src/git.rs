//! Reading a config file at a ref of a local git repository, in pure Rust
//! (`gix`, no network, no worktree, no index): the only I/O of this crate.
//!
//! A ref is resolved the way `git rev-parse` does for the common cases:
//! `HEAD`, a branch or tag name (short like `main` or `v1`, or full like
//! `refs/heads/main`; annotated tags are peeled to their commit), or a
//! commit id, full or abbreviated (at least 4 hex digits, unambiguous).
//! A name that is both a ref and a hex prefix resolves as the ref, as in
//! git. Revision expressions (`main~1`, `v1^{tree}`) are not refs and are
//! reported as not found. The repository's and the user's git configuration do not change
//! the result: the repository is opened isolated from the environment.

use std::path::Path;

use serde::Serialize;

/// Where a config came from: recorded with every applied config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// The repository path as given.
    pub repo: String,
    /// The ref as given (`main`, `v1.2`, `3f2a9c1`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The file's path inside the tree.
    pub path: String,
    /// The full id of the commit the file was read from.
    pub commit: String,
}

/// Why a file could not be read at a ref. Every variant names the
/// repository, and the ref and path when they are known.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The directory does not exist or is not a git repository.
    #[error("git repository {repo}: cannot open: {message}")]
    RepoNotFound {
        /// The repository path.
        repo: String,
        /// gix's reason.
        message: String,
    },
    /// No branch, tag or commit has this name.
    #[error("git repository {repo}: ref {git_ref:?} not found (no such branch, tag or commit id)")]
    RefNotFound {
        /// The repository path.
        repo: String,
        /// The ref.
        git_ref: String,
    },
    /// An abbreviated commit id matches several objects.
    #[error("git repository {repo}: ref {git_ref:?} is an ambiguous abbreviated id (give more hex digits)")]
    AmbiguousRef {
        /// The repository path.
        repo: String,
        /// The ref.
        git_ref: String,
    },
    /// The ref names an object that is not a commit (or a tag of one).
    #[error("git repository {repo}: ref {git_ref:?} does not point to a commit")]
    NotACommit {
        /// The repository path.
        repo: String,
        /// The ref.
        git_ref: String,
    },
    /// The path is empty or escapes the tree (`..`).
    #[error("git repository {repo}: path {path:?} is not a relative path inside the tree")]
    BadPath {
        /// The repository path.
        repo: String,
        /// The path.
        path: String,
    },
    /// The commit's tree has nothing at this path.
    #[error("git repository {repo}: {path} not found at {git_ref} (commit {commit})")]
    PathNotInTree {
        /// The repository path.
        repo: String,
        /// The ref.
        git_ref: String,
        /// The resolved commit.
        commit: String,
        /// The path.
        path: String,
    },
    /// The path is a directory, not a file.
    #[error(
        "git repository {repo}: {path} is a directory at {git_ref} (commit {commit}), not a file"
    )]
    PathIsDirectory {
        /// The repository path.
        repo: String,
        /// The ref.
        git_ref: String,
        /// The resolved commit.
        commit: String,
        /// The path.
        path: String,
    },
    /// The path is a symbolic link or a submodule, not a regular file.
    #[error("git repository {repo}: {path} is a {kind} at {git_ref} (commit {commit}), not a regular file")]
    PathNotAFile {
        /// The repository path.
        repo: String,
        /// The ref.
        git_ref: String,
        /// The resolved commit.
        commit: String,
        /// The path.
        path: String,
        /// `symbolic link` or `submodule`.
        kind: &'static str,
    },
    /// Reading the object database failed (corrupt or unreadable repo).
    #[error("git repository {repo}: reading {what} failed: {message}")]
    Read {
        /// The repository path.
        repo: String,
        /// What was being read (`ref main`, `tree of 3f2a…`).
        what: String,
        /// gix's reason.
        message: String,
    },
}

/// Reads `path` at `git_ref` in the repository at `repo` (a work tree or a
/// bare repository). Returns the file's bytes and where they came from,
/// with the full commit id.
pub fn read_at_ref(
    repo: &Path,
    git_ref: &str,
    path: &str,
) -> Result<(Vec<u8>, GitSource), GitError> {
    let repo_name = repo.display().to_string();
    let read_err = |what: String| {
        let repo = repo_name.clone();
        move |e: gix::Error| GitError::Read {
            repo,
            what,
            message: e.to_string(),
        }
    };
    let components = tree_path(path).ok_or_else(|| GitError::BadPath {
        repo: repo_name.clone(),
        path: path.to_string(),
    })?;
    let handle = gix::open_opts(repo, gix::open::Options::isolated()).map_err(|e| {
        GitError::RepoNotFound {
            repo: repo_name.clone(),
            message: e.to_string(),
        }
    })?;
    let commit_id = resolve(&handle, &repo_name, git_ref)?;
    let commit_hex = commit_id.to_string();
    let commit = handle
        .find_commit(commit_id)
        .map_err(read_err(format!("commit {commit_hex}")))?;
    let tree = commit
        .tree()
        .map_err(read_err(format!("tree of commit {commit_hex}")))?;
    let entry = tree
        .lookup_entry(components.iter().map(|c| c.as_bytes()))
        .map_err(read_err(format!("{path} at commit {commit_hex}")))?;
    let located = |kind: Option<&'static str>| -> GitError {
        let (repo, git_ref, commit, path) = (
            repo_name.clone(),
            git_ref.to_string(),
            commit_hex.clone(),
            path.to_string(),
        );
        match kind {
            None => GitError::PathNotInTree {
                repo,
                git_ref,
                commit,
                path,
            },
            Some("directory") => GitError::PathIsDirectory {
                repo,
                git_ref,
                commit,
                path,
            },
            Some(kind) => GitError::PathNotAFile {
                repo,
                git_ref,
                commit,
                path,
                kind,
            },
        }
    };
    let entry = entry.ok_or_else(|| located(None))?;
    let mode = entry.mode();
    if mode.is_tree() {
        return Err(located(Some("directory")));
    }
    if mode.is_link() {
        return Err(located(Some("symbolic link")));
    }
    if mode.is_commit() {
        return Err(located(Some("submodule")));
    }
    let blob = entry
        .object()
        .map_err(read_err(format!("{path} at commit {commit_hex}")))?;
    let source = GitSource {
        repo: repo_name,
        git_ref: git_ref.to_string(),
        path: components.join("/"),
        commit: commit_hex,
    };
    Ok((blob.detach().data, source))
}

/// The path's components inside the tree: `./a/b.yaml` and `/a/b.yaml`
/// are `a/b.yaml`; empty paths and `..` are refused.
fn tree_path(path: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    if parts.is_empty() || parts.iter().any(|c| c == "..") {
        return None;
    }
    Some(parts)
}

/// The commit `git_ref` names: HEAD, a ref (peeled through annotated
/// tags), else a full or abbreviated commit id.
fn resolve(
    repo: &gix::Repository,
    repo_name: &str,
    git_ref: &str,
) -> Result<gix::ObjectId, GitError> {
    let not_found = || GitError::RefNotFound {
        repo: repo_name.to_string(),
        git_ref: git_ref.to_string(),
    };
    let not_commit = || GitError::NotACommit {
        repo: repo_name.to_string(),
        git_ref: git_ref.to_string(),
    };
    let read_err = |e: gix::Error| GitError::Read {
        repo: repo_name.to_string(),
        what: format!("ref {git_ref}"),
        message: e.to_string(),
    };
    if git_ref.is_empty() {
        return Err(not_found());
    }
    // A name that is not a valid ref name is simply not a ref: fall through
    // to the commit-id forms.
    let found = match <&gix::refs::PartialNameRef>::try_from(git_ref) {
        Ok(name) => repo.try_find_reference(name).map_err(read_err)?,
        Err(_) => None,
    };
    if let Some(mut reference) = found {
        let object = reference
            .peel_to_kind(gix::object::Kind::Commit)
            .map_err(|_| not_commit())?;
        return Ok(object.id);
    }
    let id = if git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        let id = gix::ObjectId::from_hex(git_ref.as_bytes()).map_err(|_| not_found())?;
        if !repo.has_object(id) {
            return Err(not_found());
        }
        id
    } else if (4..40).contains(&git_ref.len()) && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        let prefix = gix::hash::Prefix::from_hex(git_ref).map_err(|_| not_found())?;
        match repo.objects.lookup_prefix(prefix, None) {
            Ok(Some(Ok(id))) => id,
            Ok(Some(Err(()))) => {
                return Err(GitError::AmbiguousRef {
                    repo: repo_name.to_string(),
                    git_ref: git_ref.to_string(),
                })
            }
            Ok(None) => return Err(not_found()),
            Err(e) => {
                return Err(GitError::Read {
                    repo: repo_name.to_string(),
                    what: format!("objects matching {git_ref}"),
                    message: e.to_string(),
                })
            }
        }
    } else {
        return Err(not_found());
    };
    let object = repo
        .find_object(id)
        .map_err(read_err)?
        .peel_to_kind(gix::object::Kind::Commit)
        .map_err(|_| not_commit())?;
    Ok(object.id)
}
