//! Shared-library closure of ELF programs, resolved only inside an unpacked
//! package tree (never against the host's libraries): reads `PT_INTERP` and
//! `DT_NEEDED` with goblin and searches the multiarch library directories.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

/// Library directories searched, relative to the tree, in order.
pub const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];

/// Errors from the dependency walk.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a valid ELF object.
    #[error("{path} is not a valid ELF file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// goblin's message.
        message: String,
    },
    /// A needed library is in none of the library directories.
    #[error("library {library} needed by {needed_by} is not in the unpacked packages ({tree}); add the Debian package that ships it")]
    Missing {
        /// The DT_NEEDED name.
        library: String,
        /// Who needs it.
        needed_by: String,
        /// The tree searched.
        tree: PathBuf,
    },
    /// A symlink chain inside the tree does not end in a file.
    #[error("symlink {path} in {tree} is broken or loops")]
    BrokenLink {
        /// Tree-relative path.
        path: PathBuf,
        /// The tree.
        tree: PathBuf,
    },
}

/// What one ELF file asks of the dynamic loader.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2` (None when static).
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names.
    pub libraries: Vec<String>,
}

/// Reads the interpreter and needed libraries of an ELF file; `None` for a
/// file that is not ELF (a script, data).
pub fn needs_of(path: &Path) -> Result<Option<Needs>, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|e| ElfError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Some(Needs {
        interpreter: elf.interpreter.map(str::to_string),
        libraries: elf.libraries.iter().map(|s| s.to_string()).collect(),
    }))
}

/// Follows symlinks of a tree-relative path inside `tree` (absolute link
/// targets are taken relative to the tree) to the final tree-relative path.
pub fn resolve_in_tree(tree: &Path, rel: &Path) -> Result<PathBuf, ElfError> {
    let mut current = normalize(rel);
    for _ in 0..40 {
        let full = tree.join(&current);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&full).map_err(|source| ElfError::Read {
                    path: full.clone(),
                    source,
                })?;
                current = if target.is_absolute() {
                    normalize(&target)
                } else {
                    normalize(&current.parent().unwrap_or(Path::new("")).join(target))
                };
            }
            Ok(_) => return Ok(current),
            Err(_) => break,
        }
    }
    Err(ElfError::BrokenLink {
        path: rel.to_path_buf(),
        tree: tree.to_path_buf(),
    })
}

/// Lexically normalizes a path to a tree-relative one (drops `/`, `.`,
/// resolves `..`).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn find_library(tree: &Path, name: &str) -> Option<PathBuf> {
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|rel| std::fs::symlink_metadata(tree.join(rel)).is_ok())
}

/// The tree-relative paths (as named, possibly symlinks) of every library
/// and interpreter the `programs` need, transitively. `programs` are host
/// paths (inside the tree or not, e.g. a user's kubelet).
pub fn closure(tree: &Path, programs: &[PathBuf]) -> Result<BTreeSet<PathBuf>, ElfError> {
    let mut found = BTreeSet::new();
    let mut queue: VecDeque<(PathBuf, String)> = programs
        .iter()
        .map(|p| (p.clone(), p.display().to_string()))
        .collect();
    let mut parsed = BTreeSet::new();
    while let Some((file, label)) = queue.pop_front() {
        if !parsed.insert(file.clone()) {
            continue;
        }
        let Some(needs) = needs_of(&file)? else {
            continue;
        };
        let mut wanted: Vec<(PathBuf, String)> = Vec::new();
        if let Some(interp) = needs.interpreter {
            let rel = normalize(Path::new(&interp));
            if std::fs::symlink_metadata(tree.join(&rel)).is_err() {
                return Err(ElfError::Missing {
                    library: interp,
                    needed_by: label,
                    tree: tree.to_path_buf(),
                });
            }
            wanted.push((rel, interp));
        }
        for lib in needs.libraries {
            let rel = find_library(tree, &lib).ok_or_else(|| ElfError::Missing {
                library: lib.clone(),
                needed_by: label.clone(),
                tree: tree.to_path_buf(),
            })?;
            wanted.push((rel, lib));
        }
        for (rel, name) in wanted {
            let real = resolve_in_tree(tree, &rel)?;
            found.insert(rel);
            queue.push_back((tree.join(real), name));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Copies a host library into the fake tree's multiarch dir.
    fn put(tree: &Path, dir: &str, host: &str) {
        let d = tree.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let name = Path::new(host).file_name().unwrap();
        std::fs::copy(host, d.join(name)).unwrap();
    }

    #[test]
    fn closure_of_a_real_program_is_resolved_inside_the_tree_only() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        // /usr/bin/nsenter needs libselinux, which needs libpcre2-8, plus libc.
        let prog = t.join("usr/bin/nsenter");
        std::fs::create_dir_all(prog.parent().unwrap()).unwrap();
        std::fs::copy("/usr/bin/nsenter", &prog).unwrap();
        let ma = "lib/x86_64-linux-gnu";
        put(t, ma, "/lib/x86_64-linux-gnu/libc.so.6");
        put(t, ma, "/lib/x86_64-linux-gnu/libselinux.so.1");
        put(t, ma, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        std::fs::create_dir_all(t.join("lib64")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            t.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();

        // libpcre2-8 is missing: the error names it and who needs it.
        let err = closure(t, std::slice::from_ref(&prog))
            .unwrap_err()
            .to_string();
        assert!(err.contains("libpcre2-8.so.0"), "{err}");
        assert!(err.contains("libselinux.so.1"), "{err}");

        // Through a symlink, as Debian ships it.
        let real = std::fs::canonicalize("/lib/x86_64-linux-gnu/libpcre2-8.so.0").unwrap();
        put(t, "usr/lib/x86_64-linux-gnu", real.to_str().unwrap());
        std::os::unix::fs::symlink(
            real.file_name().unwrap(),
            t.join("usr/lib/x86_64-linux-gnu/libpcre2-8.so.0"),
        )
        .unwrap();
        let got: Vec<String> = closure(t, &[prog])
            .unwrap()
            .into_iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                // libc.so.6 itself needs the loader by its file name.
                "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "lib/x86_64-linux-gnu/libc.so.6",
                "lib/x86_64-linux-gnu/libselinux.so.1",
                "lib64/ld-linux-x86-64.so.2",
                "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
            ]
        );
        assert_eq!(
            resolve_in_tree(t, Path::new("lib64/ld-linux-x86-64.so.2")).unwrap(),
            PathBuf::from("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
    }

    #[test]
    fn a_static_program_needs_nothing() {
        let needs = needs_of(Path::new("/bin/busybox")).unwrap().unwrap();
        assert_eq!(needs, Needs::default());
        assert!(needs_of(Path::new("/etc/hostname")).unwrap().is_none());
    }
}
