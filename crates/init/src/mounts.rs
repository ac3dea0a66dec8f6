//! Mounting and unmounting: thin, logged wrappers over mount(2) (PID 1
//! only), `/proc/self/mountinfo` parsing, and the unmount order used at
//! shutdown (deepest and latest first).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use thiserror::Error;

/// A mount(2) or umount(2) that failed.
#[derive(Debug, Error)]
pub enum MountError {
    /// mount(2) failed.
    #[error("mount {fstype} {device} on {target}: {errno}")]
    Mount {
        /// Filesystem type.
        fstype: String,
        /// Source device or pseudo name.
        device: String,
        /// Mount point.
        target: PathBuf,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// Refused because this process is not PID 1.
    #[error("not PID 1: refusing to mount {target}")]
    NotPid1 {
        /// Mount point.
        target: PathBuf,
    },
    /// umount(2) failed.
    #[error("unmount {target}: {errno}")]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
}

/// Mounts `source` (of type `fstype`) on `target`, creating the directory
/// first. PID 1 only.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    if !crate::sys::is_pid1() {
        return Err(MountError::NotPid1 {
            target: target.to_path_buf(),
        });
    }
    let _ = std::fs::create_dir_all(target);
    nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(|errno| {
        MountError::Mount {
            fstype: fstype.to_string(),
            device: source.to_string(),
            target: target.to_path_buf(),
            errno,
        }
    })
}

/// Moves the mount at `from` to `to` (`mount --move`). PID 1 only.
pub fn move_mount(from: &Path, to: &Path) -> Result<(), MountError> {
    if !crate::sys::is_pid1() {
        return Err(MountError::NotPid1 {
            target: to.to_path_buf(),
        });
    }
    let _ = std::fs::create_dir_all(to);
    nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(
        |errno| MountError::Mount {
            fstype: "move".into(),
            device: from.display().to_string(),
            target: to.to_path_buf(),
            errno,
        },
    )
}

/// Remounts a mounted filesystem read-only or read-write. PID 1 only.
pub fn remount(target: &Path, read_only: bool) -> Result<(), MountError> {
    if !crate::sys::is_pid1() {
        return Err(MountError::NotPid1 {
            target: target.to_path_buf(),
        });
    }
    let mut flags = MsFlags::MS_REMOUNT;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|errno| {
        MountError::Mount {
            fstype: "remount".into(),
            device: if read_only { "ro" } else { "rw" }.into(),
            target: target.to_path_buf(),
            errno,
        }
    })
}

/// Unmounts `target`. PID 1 only.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    if !crate::sys::is_pid1() {
        return Err(MountError::NotPid1 {
            target: target.to_path_buf(),
        });
    }
    nix::mount::umount2(target, MntFlags::empty()).map_err(|errno| MountError::Unmount {
        target: target.to_path_buf(),
        errno,
    })
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent: u32,
    /// Mount point (unescaped).
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Filesystem type.
    pub fstype: String,
    /// Source (`/dev/vda5`, `tmpfs`).
    pub source: String,
}

impl MountInfo {
    /// Whether the mount is read-only.
    #[allow(dead_code)] // read by the machine API (mounts listing)
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo`; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            Some(MountInfo {
                id: l[0].parse().ok()?,
                parent: l[1].parse().ok()?,
                mount_point: PathBuf::from(unescape(l[4])),
                options: l[5].to_string(),
                fstype: r[0].to_string(),
                source: unescape(r[1]),
            })
        })
        .collect()
}

/// The current mount table (empty when /proc is not mounted).
pub fn current() -> Vec<MountInfo> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Whether something is mounted exactly at `target`.
pub fn is_mounted(table: &[MountInfo], target: &Path) -> bool {
    table.iter().any(|m| m.mount_point == target)
}

/// The mounts at or under any of `roots`, in the order to unmount them:
/// reverse mount order (children were mounted after their parents), with
/// deeper paths first on ties.
pub fn unmount_order(table: &[MountInfo], roots: &[&Path]) -> Vec<MountInfo> {
    let mut picked: Vec<(usize, MountInfo)> = table
        .iter()
        .enumerate()
        .filter(|(_, m)| roots.iter().any(|r| m.mount_point.starts_with(r)))
        .map(|(i, m)| (i, m.clone()))
        .collect();
    picked.sort_by(|(ia, a), (ib, b)| {
        let depth = |m: &MountInfo| m.mount_point.components().count();
        // Deeper first, then later first.
        depth(b).cmp(&depth(a)).then(ib.cmp(ia))
    });
    picked.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SAMPLE: &str = "\
22 1 0:20 / / ro,relatime shared:1 - squashfs /dev/vda2 ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=1000k
24 22 0:21 / /proc rw,nosuid,nodev,noexec shared:3 - proc proc rw
30 22 254:5 / /var rw,relatime shared:10 - ext4 /dev/vda5 rw
31 22 254:4 / /system/state ro,relatime shared:11 - ext4 /dev/vda4 ro
40 30 0:50 / /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs rw shared:20 - overlay overlay rw
41 30 0:51 / /var/lib/kubelet/pods/abc/volumes/kubernetes.io~empty\\040dir/x rw shared:21 - tmpfs tmpfs rw
42 30 0:52 / /var/run rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_flags() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.len(), 8);
        assert_eq!(t[0].mount_point, Path::new("/"));
        assert!(t[0].read_only());
        assert_eq!(t[3].source, "/dev/vda5");
        assert!(!t[3].read_only());
        assert!(t[4].read_only());
        assert_eq!(
            t[6].mount_point,
            Path::new("/var/lib/kubelet/pods/abc/volumes/kubernetes.io~empty dir/x")
        );
        assert!(is_mounted(&t, Path::new("/proc")));
        assert!(!is_mounted(&t, Path::new("/sys")));
    }

    #[test]
    fn data_partitions_unmount_last_and_children_first() {
        let t = parse_mountinfo(SAMPLE);
        let order: Vec<String> =
            unmount_order(&t, &[Path::new("/var"), Path::new("/system/state")])
                .iter()
                .map(|m| m.mount_point.display().to_string())
                .collect();
        assert_eq!(order.len(), 5);
        assert!(
            order[..3].iter().all(|p| p.starts_with("/var/")),
            "{order:?}"
        );
        let var = order.iter().position(|p| p == "/var").unwrap();
        let state = order.iter().position(|p| p == "/system/state").unwrap();
        assert!(var >= 3 && state >= 3, "{order:?}");
        // /varx is not under /var.
        let t2 = parse_mountinfo("50 1 0:1 / /varx rw - tmpfs tmpfs rw\n");
        assert!(unmount_order(&t2, &[Path::new("/var")]).is_empty());
    }

    #[test]
    fn mounting_outside_pid1_is_refused() {
        let err = mount(
            "tmpfs",
            Path::new("/nonexistent-keelson-test"),
            "tmpfs",
            MsFlags::empty(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, MountError::NotPid1 { .. }));
        assert!(!Path::new("/nonexistent-keelson-test").exists());
    }
}
