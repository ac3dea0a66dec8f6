//! The node's services, started in order through the supervisor:
//! containerd (ready when it answers a CRI `Version` call), then the
//! preloaded images imported into its `k8s.io` namespace, then kubelet with
//! the rendered flags. Prints the `keelson: node ready` marker once
//! containerd answers and kubelet has kept running for a few seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use machine_config::MachineConfig;

use crate::cri;
use crate::supervisor::{Readiness, ServiceSpec, ServiceState, Supervisor};

/// PATH of every service (containerd finds `containerd-shim-runc-v2` in
/// /usr/bin and runc in /usr/sbin through it).
pub const SERVICE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Directory of the image's preloaded OCI archives.
pub const IMAGES_DIR: &str = "/usr/share/keelson/images";
/// How long kubelet must keep running before the node counts as ready.
const KUBELET_SETTLE: Duration = Duration::from_secs(6);
/// Bound on containerd answering CRI after its start.
const CONTAINERD_READY: Duration = Duration::from_secs(90);
/// Bound on one image import.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

fn env() -> Vec<(String, String)> {
    vec![
        ("PATH".to_string(), SERVICE_PATH.to_string()),
        ("HOME".to_string(), "/".to_string()),
    ]
}

/// The containerd service.
pub fn containerd_spec() -> ServiceSpec {
    let mut spec = ServiceSpec::new(
        "containerd",
        vec![
            "/usr/bin/containerd".to_string(),
            "--config".to_string(),
            machine_config::render::CONTAINERD_CONFIG.to_string(),
        ],
    );
    spec.env = env();
    spec.readiness = Readiness::custom(|| async {
        cri::version(Path::new(cri::CONTAINERD_SOCKET), Duration::from_secs(3))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    spec.readiness_timeout = CONTAINERD_READY;
    spec
}

/// The kubelet service with the flags rendered from the config.
pub fn kubelet_spec(cfg: &MachineConfig, args: Vec<String>) -> ServiceSpec {
    let mut argv = vec![cfg.kubelet.binary.clone()];
    argv.extend(args);
    let mut spec = ServiceSpec::new("kubelet", argv);
    spec.env = env();
    spec
}

/// The OCI archives to import: every `*.tar` of the image's directory
/// (sorted), then the config's `containerd.preloadImages` in order,
/// without duplicates.
pub fn preload_list(images_dir: &Path, cfg: Option<&MachineConfig>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(images_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    for extra in cfg
        .map(|c| c.containerd.preload_images.as_slice())
        .unwrap_or_default()
    {
        let p = PathBuf::from(extra);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The `ctr` command line importing one archive.
pub fn import_argv(archive: &Path) -> Vec<String> {
    [
        "/usr/bin/ctr",
        "-a",
        cri::CONTAINERD_SOCKET,
        "-n",
        "k8s.io",
        "images",
        "import",
        "--all-platforms",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(archive.display().to_string()))
    .collect()
}

/// Imports every preloaded archive; returns how many succeeded. Failures
/// are logged with ctr's own message.
pub async fn import_images(sup: &Supervisor, archives: &[PathBuf]) -> usize {
    let mut ok = 0;
    for archive in archives {
        let argv = import_argv(archive);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let t = std::time::Instant::now();
        match sup
            .run_oneshot(&argv, &[("PATH", SERVICE_PATH)], IMPORT_TIMEOUT)
            .await
        {
            Ok(out) if out.success() => {
                ok += 1;
                tracing::info!(
                    archive = %archive.display(),
                    took_ms = t.elapsed().as_millis() as u64,
                    "image imported"
                );
            }
            Ok(out) => tracing::error!(
                archive = %archive.display(),
                status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "image import failed"
            ),
            Err(e) => {
                tracing::error!(archive = %archive.display(), error = %e, "image import failed")
            }
        }
    }
    ok
}

/// Waits until kubelet has been Running for [`KUBELET_SETTLE`] in one go.
/// Returns false if it never does within `timeout`.
pub async fn kubelet_settled(sup: &Supervisor, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut running_since: Option<tokio::time::Instant> = None;
    while tokio::time::Instant::now() < deadline {
        let running = sup
            .status()
            .iter()
            .any(|s| s.name == "kubelet" && s.state == ServiceState::Running);
        match (running, running_since) {
            (true, None) => running_since = Some(tokio::time::Instant::now()),
            (true, Some(t)) if t.elapsed() >= KUBELET_SETTLE => return true,
            (false, _) => running_since = None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn image_archives_and_config_preloads_are_imported_once_each() {
        let t = tempfile::tempdir().unwrap();
        for f in ["pause.tar", "busybox.tar", "README"] {
            std::fs::write(t.path().join(f), b"x").unwrap();
        }
        let yaml =
            "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\n";
        let mut cfg = machine_config::load(yaml.as_bytes()).unwrap().config;
        cfg.containerd.preload_images = vec![
            "/var/images/app.tar".to_string(),
            t.path().join("pause.tar").display().to_string(),
        ];
        let list = preload_list(t.path(), Some(&cfg));
        let names: Vec<String> = list
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["busybox.tar", "pause.tar", "app.tar"]);
        assert!(preload_list(&t.path().join("missing"), None).is_empty());
        let argv = import_argv(Path::new("/usr/share/keelson/images/pause.tar"));
        assert_eq!(
            argv.join(" "),
            "/usr/bin/ctr -a /run/containerd/containerd.sock -n k8s.io images import --all-platforms /usr/share/keelson/images/pause.tar"
        );
    }
}
