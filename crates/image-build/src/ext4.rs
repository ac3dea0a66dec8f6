//! ext4 partition images (STATE, VAR) made with `mkfs.ext4` on a plain file,
//! deterministic: UUID and directory hash seed from the build seed, times
//! from `E2FSPROGS_FAKE_TIME`, and files written with `debugfs` (which
//! honours the fake time; `mkfs.ext4 -d` would copy the host's ctimes).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};

use crate::gpt::Guid;
use crate::tools::{self, known};

/// A file to place in the filesystem.
#[derive(Debug)]
pub struct FileSpec<'a> {
    /// Path inside the filesystem, e.g. `config/current.yaml`.
    pub path: &'a str,
    /// Host file holding the contents.
    pub source: &'a Path,
    /// Permission bits.
    pub mode: u32,
}

/// Makes an ext4 image of `size` bytes at `out` with `label`, holding `files`.
pub fn make(
    out: &Path,
    label: &str,
    uuid: &Guid,
    size: u64,
    epoch: u64,
    files: &[FileSpec<'_>],
) -> anyhow::Result<()> {
    if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(size)
        .with_context(|| format!("cannot size {}", out.display()))?;
    drop(f);
    let mut mkfs = known::MKFS_EXT4.command()?;
    mkfs.args(["-q", "-F", "-L", label, "-U"])
        .arg(uuid.lower())
        .arg("-E")
        .arg(format!(
            "root_owner=0:0,hash_seed={},nodiscard",
            uuid.lower()
        ))
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    tools::run(&mut mkfs)?;
    if files.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        if f.path.contains(['"', '\n', ' '])
            || f.source.to_string_lossy().contains(['"', '\n', ' '])
        {
            bail!(
                "unsupported characters in {} or {}",
                f.path,
                f.source.display()
            );
        }
        let mut parent = Path::new(f.path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                script.push_str(&format!("mkdir {d}\n"));
            }
        }
        script.push_str(&format!("write {} {}\n", f.source.display(), f.path));
        script.push_str(&format!(
            "set_inode_field {} mode 0{:o}\n",
            f.path,
            0o100000 | f.mode
        ));
        script.push_str(&format!(
            "set_inode_field {} uid 0\nset_inode_field {} gid 0\n",
            f.path, f.path
        ));
    }
    let mut debugfs = known::DEBUGFS.command()?;
    debugfs
        .arg("-w")
        .arg("-f")
        .arg("-")
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = tools::describe(&debugfs);
    let mut child = debugfs
        .spawn()
        .with_context(|| format!("cannot run {command}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .with_context(|| format!("cannot feed {command}"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("cannot run {command}"))?;
    // debugfs exits 0 even when a request fails; its complaints go to stderr
    // after the echoed request lines.
    let err = String::from_utf8_lossy(&output.stderr);
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !output.status.success() || !complaints.is_empty() {
        bail!(
            "debugfs could not write files into {}: {}",
            out.display(),
            complaints.join("; ")
        );
    }
    Ok(())
}
