//! Sysctls through `/proc/sys`: set a dotted key, then read it back. The
//! kernel may refuse a value (EINVAL) or normalise it; only the read-back
//! value counts as applied.

use std::path::{Path, PathBuf};

use crate::bootstate::SysctlResult;

/// The `/proc/sys` file of a dotted key (`net.ipv4.ip_forward` →
/// `<root>/net/ipv4/ip_forward`). Keys with `/` already are taken as is.
/// `None` for keys that would escape the tree.
pub fn path_of(root: &Path, key: &str) -> Option<PathBuf> {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "..") {
        return None;
    }
    Some(root.join(rel))
}

/// Whitespace-insensitive comparison (the kernel prints tabs between the
/// fields of multi-value sysctls like `net.ipv4.ip_local_port_range`).
fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Sets `key` to `value` under `root` (normally `/proc/sys`) and reads it
/// back.
pub fn apply(root: &Path, key: &str, value: &str) -> SysctlResult {
    let mut r = SysctlResult {
        key: key.to_string(),
        wanted: value.to_string(),
        read_back: None,
        verified: false,
        error: None,
    };
    let Some(path) = path_of(root, key) else {
        r.error = Some(format!("sysctl key {key:?} is not a valid name"));
        return r;
    };
    if let Err(e) = std::fs::write(&path, value) {
        r.error = Some(format!("writing {}: {e}", path.display()));
    }
    match std::fs::read_to_string(&path) {
        Ok(v) => {
            let v = v.trim_end().to_string();
            r.verified = same_value(&v, value);
            if !r.verified && r.error.is_none() {
                r.error = Some(format!("kernel kept {v:?} after writing {value:?}"));
            }
            r.read_back = Some(v);
        }
        Err(e) if r.error.is_none() => {
            r.error = Some(format!("reading back {}: {e}", path.display()))
        }
        Err(_) => {}
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn values_are_written_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("net/ipv4")).unwrap();
        std::fs::write(t.path().join("net/ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(t.path().join("net/ipv4/ip_local_port_range"), "").unwrap();
        let r = apply(t.path(), "net.ipv4.ip_forward", "1");
        assert!(r.verified, "{r:?}");
        assert_eq!(r.read_back.as_deref(), Some("1"));
        assert_eq!(
            std::fs::read_to_string(t.path().join("net/ipv4/ip_forward")).unwrap(),
            "1"
        );
        assert!(apply(t.path(), "net.ipv4.ip_local_port_range", "1024\t65000").verified);

        let missing = apply(t.path(), "net.bridge.bridge-nf-call-iptables", "1");
        assert!(!missing.verified);
        assert!(missing
            .error
            .unwrap()
            .contains("net/bridge/bridge-nf-call-iptables"));

        let escape = apply(t.path(), "net/../../etc/passwd", "x");
        assert!(!escape.verified && escape.error.unwrap().contains("not a valid name"));
        assert_eq!(
            path_of(Path::new("/proc/sys"), "vm.max_map_count").unwrap(),
            Path::new("/proc/sys/vm/max_map_count")
        );
    }

    #[test]
    fn a_value_the_kernel_rejects_is_reported_with_its_cause() {
        // /proc/sys is read-only for files like this one without root, and
        // rejects garbage with root: either way it is not "verified".
        let r = apply(Path::new("/proc/sys"), "kernel.osrelease", "not-a-release");
        assert!(!r.verified);
        assert!(r.error.unwrap().contains("kernel/osrelease"));
        assert!(r.read_back.is_some());
    }
}
