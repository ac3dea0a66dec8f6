//! Applying a machine config to the running node: hostname, kernel modules
//! (with parameters), sysctls — each read back from `/sys/module` and
//! `/proc/sys` — and the rendered files under `/etc` and `/var`. A module
//! that will not load or a sysctl the kernel rejects is logged with its
//! cause and recorded in the boot state; the boot continues.

use std::path::{Component, Path, PathBuf};

use machine_config::prerequisites::{effective_modules, effective_sysctls};
use machine_config::render::RenderedFile;
use machine_config::MachineConfig;
use thiserror::Error;

use crate::bootstate::{BootState, ModuleResult};
use crate::kmod::{self, ModuleIndex};

/// A rendered file that could not be written.
#[derive(Debug, Error)]
pub enum FileError {
    /// The path is outside `/etc` and `/var`, relative, or has `..`.
    #[error(
        "refusing to write {0}: only absolute paths under /etc or /var, without '..', are written"
    )]
    Forbidden(String),
    /// Creating, writing or chmod failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Sets the hostname (PID 1 only).
pub fn hostname(state: &mut BootState, cfg: &MachineConfig) {
    let name = machine_config::render::hostname(cfg);
    let name = name.trim();
    if !crate::sys::is_pid1() {
        return;
    }
    match nix::unistd::sethostname(name) {
        Ok(()) => tracing::info!(hostname = name, "hostname set"),
        Err(e) => state.error(format!("sethostname {name:?}: {e}")),
    }
}

/// Loads the config's modules (prerequisites included), then reads each
/// back from `/sys/module`.
pub fn modules(state: &mut BootState, cfg: &MachineConfig) {
    let wanted = effective_modules(cfg);
    let index = ModuleIndex::running_kernel();
    for m in &wanted {
        let mut result = ModuleResult {
            name: m.name.clone(),
            verified: false,
            error: None,
        };
        match &index {
            Ok(idx) => match idx.load(&m.name, &m.parameters) {
                Ok(report) => {
                    for f in report.soft_failures {
                        tracing::debug!(module = %m.name, "soft dependency: {f}");
                    }
                }
                Err(e) => result.error = Some(e.to_string()),
            },
            Err(e) => result.error = Some(e.to_string()),
        }
        result.verified = kmod::is_loaded(&m.name);
        if result.verified {
            // Loaded by someone else or built in: the error no longer
            // matters.
            result.error = None;
        } else if result.error.is_none() {
            result.error = Some(format!(
                "/sys/module/{} missing after load",
                kmod::normalize(&m.name)
            ));
        }
        state.modules.push(result);
    }
}

/// Sets the config's sysctls (prerequisites included) and reads each back.
pub fn sysctls(state: &mut BootState, cfg: &MachineConfig) {
    for (key, value) in effective_sysctls(cfg) {
        state
            .sysctls
            .push(crate::sysctl::apply(Path::new("/proc/sys"), &key, &value));
    }
}

/// The summary line and one line per failure, as printed after
/// `keelson: ` by [`report`].
pub fn summary_lines(state: &BootState) -> Vec<String> {
    let modules_ok = state.modules.iter().filter(|m| m.verified).count();
    let sysctls_ok = state.sysctls.iter().filter(|s| s.verified).count();
    let mut lines = vec![format!(
        "applied modules={modules_ok} verified sysctls={sysctls_ok} verified"
    )];
    for m in state.modules.iter().filter(|m| !m.verified) {
        lines.push(format!(
            "apply failed module={} error={}",
            m.name,
            m.error.as_deref().unwrap_or("unknown")
        ));
    }
    for s in state.sysctls.iter().filter(|s| !s.verified) {
        lines.push(format!(
            "apply failed sysctl={} wanted={} error={}",
            s.key,
            s.wanted,
            s.error.as_deref().unwrap_or("unknown")
        ));
    }
    lines
}

/// Prints the summary line and one line per failure to the console.
pub fn report(state: &BootState) {
    for line in summary_lines(state) {
        crate::console::marker(&line);
    }
}

/// Where a node path lands under `root` (`/` on a node), if it may be
/// written: absolute, under `/etc` or `/var`, no `..`.
pub fn allowed_target(root: &Path, path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return None;
    }
    let rel = p.strip_prefix("/").ok()?;
    let top = rel.components().next()?;
    if !(top == Component::Normal("etc".as_ref()) || top == Component::Normal("var".as_ref())) {
        return None;
    }
    if rel.components().count() < 2 {
        return None;
    }
    Some(root.join(rel))
}

/// Writes one rendered file under `root`: parent directories created, the
/// content written to a temporary file, its mode set, then renamed over
/// the target.
pub fn write_file(root: &Path, file: &RenderedFile) -> Result<PathBuf, FileError> {
    use std::os::unix::fs::PermissionsExt;
    let target =
        allowed_target(root, &file.path).ok_or_else(|| FileError::Forbidden(file.path.clone()))?;
    let io = |source| FileError::Io {
        path: file.path.clone(),
        source,
    };
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = target.clone().into_os_string();
    tmp.push(".keelson-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, file.content.as_bytes()).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file.mode & 0o7777))
        .map_err(io)?;
    std::fs::rename(&tmp, &target).map_err(io)?;
    Ok(target)
}

/// Writes every rendered file; failures are recorded, the rest written.
pub fn files(state: &mut BootState, root: &Path, rendered: &[RenderedFile]) -> usize {
    let mut written = 0;
    for f in rendered {
        match write_file(root, f) {
            Ok(_) => written += 1,
            Err(e) => state.error(e.to_string()),
        }
    }
    written
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rf(path: &str, content: &str, mode: u32) -> RenderedFile {
        RenderedFile {
            path: path.into(),
            content: content.into(),
            mode,
        }
    }

    #[test]
    fn files_land_under_etc_and_var_only_with_their_mode() {
        let t = tempfile::tempdir().unwrap();
        let mut state = BootState::default();
        let n = files(
            &mut state,
            t.path(),
            &[
                rf("/etc/containerd/config.toml", "version = 2\n", 0o644),
                rf("/etc/kubernetes/kubelet.kubeconfig", "secret", 0o600),
                rf("/var/lib/app/x", "x", 0o640),
                rf("/usr/bin/evil", "no", 0o755),
                rf("/etc/../usr/evil", "no", 0o644),
                rf("etc/relative", "no", 0o644),
                rf("/etc", "no", 0o644),
            ],
        );
        assert_eq!(n, 3);
        assert_eq!(state.errors.len(), 4, "{:?}", state.errors);
        assert!(state.errors[0].contains("/usr/bin/evil"));
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/containerd/config.toml")).unwrap(),
            "version = 2\n"
        );
        let mode = |p: &str| {
            std::fs::metadata(t.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("etc/kubernetes/kubelet.kubeconfig"), 0o600);
        assert_eq!(mode("var/lib/app/x"), 0o640);
        assert!(!t.path().join("usr").exists());
        // Rewriting replaces the content (no leftovers).
        files(
            &mut state,
            t.path(),
            &[rf("/etc/containerd/config.toml", "v3\n", 0o644)],
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/containerd/config.toml")).unwrap(),
            "v3\n"
        );
        assert!(!t
            .path()
            .join("etc/containerd/config.toml.keelson-tmp")
            .exists());
    }

    #[test]
    fn the_summary_counts_only_read_back_results_and_names_failures() {
        let mut state = BootState::default();
        state.modules.push(ModuleResult {
            name: "overlay".into(),
            verified: true,
            error: None,
        });
        state.modules.push(ModuleResult {
            name: "nope".into(),
            verified: false,
            error: Some("module \"nope\" is not in modules.dep".into()),
        });
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("vm")).unwrap();
        std::fs::write(t.path().join("vm/swappiness"), "60").unwrap();
        state
            .sysctls
            .push(crate::sysctl::apply(t.path(), "vm.swappiness", "10"));
        state
            .sysctls
            .push(crate::sysctl::apply(t.path(), "net.nope", "1"));
        let lines = summary_lines(&state);
        assert_eq!(lines[0], "applied modules=1 verified sysctls=1 verified");
        assert!(
            lines[1].starts_with("apply failed module=nope error=")
                && lines[1].contains("modules.dep")
        );
        assert!(lines[2].starts_with("apply failed sysctl=net.nope wanted=1 error=writing"));
        assert_eq!(lines.len(), 3);
    }
}
