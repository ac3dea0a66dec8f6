//! A deterministic cpio "newc" writer (the initramfs format): entries sorted
//! by path, uid/gid 0, one fixed mtime, inode numbers assigned in order, and
//! device nodes written without root (e.g. `/dev/console`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symlink to this target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// One archive entry: path relative to the archive root and permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (e.g. 0o755).
    pub perm: u32,
    /// What it is.
    pub kind: Kind,
}

/// An archive being assembled: path → entry, written sorted.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Archive::default()
    }

    /// Adds (or replaces) an entry and any missing parent directories.
    pub fn add(&mut self, path: &str, perm: u32, kind: Kind) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry {
                    perm: 0o755,
                    kind: Kind::Dir,
                });
            parent = p.parent();
        }
        self.entries.insert(path, Entry { perm, kind });
    }

    /// Adds a host directory tree under `prefix` (files, dirs, symlinks;
    /// permission bits kept, owners and times dropped).
    pub fn add_tree(&mut self, host: &Path, prefix: &str) -> anyhow::Result<()> {
        let mut stack: Vec<PathBuf> = vec![host.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in
                std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
            {
                let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
                let p = e.path();
                let rel = p.strip_prefix(host).unwrap_or(&p);
                let name = Path::new(prefix).join(rel).to_string_lossy().into_owned();
                let meta = std::fs::symlink_metadata(&p)
                    .with_context(|| format!("cannot stat {}", p.display()))?;
                let perm = meta.permissions().mode() & 0o7777;
                if meta.file_type().is_symlink() {
                    let t = std::fs::read_link(&p)
                        .with_context(|| format!("cannot read link {}", p.display()))?;
                    self.add(
                        &name,
                        0o777,
                        Kind::Symlink(t.to_string_lossy().into_owned()),
                    );
                } else if meta.is_dir() {
                    self.add(&name, perm, Kind::Dir);
                    stack.push(p);
                } else {
                    let data = std::fs::read(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    self.add(&name, perm, Kind::File(data));
                }
            }
        }
        Ok(())
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Writes the archive in newc format with every mtime set to `mtime`.
    pub fn write<W: Write>(&self, out: &mut W, mtime: u32) -> io::Result<()> {
        for (ino, (path, e)) in (1u32..).zip(self.entries.iter()) {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (0o040000 | e.perm, 2, &[], (0, 0)),
                Kind::File(d) => (0o100000 | e.perm, 1, d.as_slice(), (0, 0)),
                Kind::Symlink(t) => (0o120000 | 0o777, 1, t.as_bytes(), (0, 0)),
                Kind::CharDev(ma, mi) => (0o020000 | e.perm, 1, &[], (*ma, *mi)),
            };
            write_header(out, ino, mode, nlink, mtime, data.len(), rdev, path)?;
            out.write_all(data)?;
            pad(out, data.len())?;
        }
        write_header(out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!")
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header<W: Write>(
    out: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let size = u32::try_from(size).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} is larger than 4 GiB"),
        )
    })?;
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{mtime:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, 0, rdev.0, rdev.1, 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, header.len() + namesize)
}

fn pad<W: Write>(out: &mut W, len: usize) -> io::Result<()> {
    let rem = len % 4;
    if rem != 0 {
        out.write_all(&[0u8; 4][..4 - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::Command;

    #[test]
    fn host_cpio_reads_back_what_we_wrote_and_output_is_deterministic() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("lib/modules/x")).unwrap();
        std::fs::write(src.path().join("lib/modules/x/a.ko"), b"module bytes").unwrap();
        std::fs::write(src.path().join("init"), b"#!init").unwrap();
        std::fs::set_permissions(
            src.path().join("init"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("init", src.path().join("linuxrc")).unwrap();

        let mut a = Archive::new();
        a.add_tree(src.path(), "").unwrap();
        a.add("dev/console", 0o600, Kind::CharDev(5, 1));
        a.add("newroot", 0o755, Kind::Dir);
        let mut first = Vec::new();
        a.write(&mut first, 1_700_000_000).unwrap();

        // Same tree, touched later: same bytes.
        std::fs::write(src.path().join("lib/modules/x/a.ko"), b"module bytes").unwrap();
        let mut b = Archive::new();
        b.add_tree(src.path(), "").unwrap();
        b.add("newroot", 0o755, Kind::Dir);
        b.add("dev/console", 0o600, Kind::CharDev(5, 1));
        let mut second = Vec::new();
        b.write(&mut second, 1_700_000_000).unwrap();
        assert_eq!(first, second);

        let file = src.path().join("out.cpio");
        std::fs::write(&file, &first).unwrap();
        let listing = Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let text = String::from_utf8(listing.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/x",
                "lib/modules/x/a.ko",
                "init",
                "newroot"
            ],
            "{text}"
        );
        let console = lines.iter().find(|l| l.contains("dev/console")).unwrap();
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(console.contains("5,"), "{console}");
        let link = lines.iter().find(|l| l.contains("linuxrc")).unwrap();
        assert!(link.starts_with("lrwxrwxrwx"), "{link}");

        let out = tempfile::tempdir().unwrap();
        let st = Command::new("cpio")
            .args([
                "-i",
                "-d",
                "--quiet",
                "--no-absolute-filenames",
                "-f",
                "dev/console",
            ])
            .stdin(std::fs::File::open(&file).unwrap())
            .current_dir(out.path())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read(out.path().join("lib/modules/x/a.ko")).unwrap(),
            b"module bytes"
        );
    }
}
