//! cgroup v2: mount the unified hierarchy at `/sys/fs/cgroup` and enable
//! every available controller for the root's children (containerd and
//! kubelet create their cgroups below it; NOTES.md: needed for containerd).

use std::path::Path;

/// The outcome of enabling controllers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Controllers {
    /// Controllers now enabled in `cgroup.subtree_control`.
    pub enabled: Vec<String>,
    /// Controllers the kernel refused, with why.
    pub refused: Vec<String>,
}

/// Enables every controller listed in `<root>/cgroup.controllers` in
/// `<root>/cgroup.subtree_control`, one at a time (one refusal does not
/// block the others), then reads `subtree_control` back.
pub fn enable_all(root: &Path) -> std::io::Result<Controllers> {
    let available = std::fs::read_to_string(root.join("cgroup.controllers"))?;
    let control = root.join("cgroup.subtree_control");
    let mut out = Controllers::default();
    for c in available.split_whitespace() {
        if let Err(e) = std::fs::write(&control, format!("+{c}")) {
            out.refused.push(format!("{c}: {e}"));
        }
    }
    out.enabled = std::fs::read_to_string(&control)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_available_controller_is_requested() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        // A plain file keeps only the last write: what matters is that the
        // writes happen one controller at a time, ending with the last one.
        let r = enable_all(t.path()).unwrap();
        assert_eq!(r.enabled, vec!["+pids".to_string()]);
        assert!(r.refused.is_empty());
        assert!(enable_all(&t.path().join("nope")).is_err());
    }
}
