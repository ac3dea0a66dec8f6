//! Step 2 of the ordered shutdown: cordon and drain the node through the
//! Kubernetes API, and the memory of that cordon in STATE so the next boot
//! undoes it (and only it).
//!
//! PID 1 parses no network input: the work is done by `keelson-drain` (the
//! `drain` crate), run as a bounded one-shot through the supervisor's
//! reaper. Init writes its request (node name, access; secrets) to a 0600
//! file on /run, shows each progress line on the console and in the event
//! log as it comes, and records in STATE the moment the node is cordoned by
//! Keelson, before any eviction, so a drain cut short still gets undone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drain::protocol::{self, Progress, Request};
use machine_config::MachineConfig;
use serde::{Deserialize, Serialize};

use super::report::Outcome;
use crate::events::EventBus;
use crate::stage2::STATE_MOUNT;
use crate::supervisor::Supervisor;

/// The drain client on the node's root.
pub const DRAIN_BINARY: &str = "/usr/bin/keelson-drain";
/// Where the request is written for the client (tmpfs, root only).
const REQUEST_FILE: &str = "/run/keelson/drain-request.json";
/// The marker of a cordon Keelson made, relative to STATE.
const MARKER: &str = "drain/cordoned.json";
/// Time beyond the drain's own timeout before its process group is killed
/// (connects and the last report line).
const CLIENT_MARGIN: Duration = Duration::from_secs(15);

/// What step 2 does in one shutdown.
#[derive(Clone, Debug)]
pub enum DrainStep {
    /// Drain with this access, bounded by `timeout`.
    Run {
        /// The node and its access.
        request: Request,
        /// The drain's deadline.
        timeout: Duration,
    },
    /// Not run, for this reason (shown in the report).
    Skip(String),
}

/// The caller's say over the drain (`nodectl shutdown|reboot --no-drain`,
/// `--drain-timeout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainOverride {
    /// Skip the drain.
    pub no_drain: bool,
    /// Use this bound instead of the config's (`0` disables).
    pub timeout: Option<Duration>,
}

impl DrainStep {
    /// What the config, the node's name and the caller's overrides ask for.
    pub fn decide(cfg: Option<&MachineConfig>, node: &str, over: DrainOverride) -> DrainStep {
        let Some(cfg) = cfg else {
            return DrainStep::Skip("no machine config".into());
        };
        let Some(k) = &cfg.kubernetes else {
            return DrainStep::Skip(
                "no Kubernetes access in the config (the kubernetes section)".into(),
            );
        };
        if over.no_drain {
            return DrainStep::Skip("asked not to drain (--no-drain)".into());
        }
        let timeout = over.timeout.unwrap_or_else(|| k.drain_timeout.get());
        if timeout.is_zero() {
            return DrainStep::Skip(match over.timeout {
                Some(_) => "drain timeout 0s for this call".into(),
                None => "drainTimeout is 0s in the config".into(),
            });
        }
        match access(cfg, node) {
            Some(request) => DrainStep::Run { request, timeout },
            None => DrainStep::Skip("no Kubernetes access in the config".into()),
        }
    }
}

/// The node's drain access from the config's `kubernetes` section, with
/// kubelet's API server and CA as defaults; `None` without the section.
pub fn access(cfg: &MachineConfig, node: &str) -> Option<Request> {
    let k = cfg.kubernetes.as_ref()?;
    Some(Request {
        node: node.to_string(),
        kubeconfig: k.kubeconfig.clone(),
        endpoint: k
            .endpoint
            .clone()
            .or_else(|| cfg.kubelet.api_server.clone()),
        ca_cert: k.ca_cert.clone().or_else(|| cfg.kubelet.ca_cert.clone()),
        token: k.token.clone(),
    })
}

/// What the drain step hands the report.
pub struct DrainResult {
    /// The step's outcome.
    pub outcome: Outcome,
    /// The step's one-line detail.
    pub detail: String,
    /// The client's report, when it printed one.
    pub report: Option<protocol::Report>,
}

/// Runs the drain client with `request` and reports progress as it comes.
pub async fn run(
    sup: &Supervisor,
    events: Option<&EventBus>,
    request: &Request,
    timeout: Duration,
) -> DrainResult {
    let secs = format!("{}s", timeout.as_secs().max(1));
    crate::console::marker(&format!(
        "drain begins node={} timeout={secs}",
        request.node
    ));
    run_client(
        sup,
        events,
        request,
        &["drain", "--timeout", &secs],
        timeout,
    )
    .await
}

/// Runs the client to undo Keelson's cordon once the node is Ready,
/// waiting at most `wait` for that.
pub async fn uncordon(
    sup: &Supervisor,
    events: Option<&EventBus>,
    request: &Request,
    wait: Duration,
) -> DrainResult {
    let secs = format!("{}s", wait.as_secs().max(1));
    run_client(sup, events, request, &["uncordon", "--wait", &secs], wait).await
}

async fn run_client(
    sup: &Supervisor,
    events: Option<&EventBus>,
    request: &Request,
    command: &[&str],
    timeout: Duration,
) -> DrainResult {
    let failed = |detail: String| DrainResult {
        outcome: Outcome::Failed,
        detail,
        report: None,
    };
    if let Err(e) = write_request(Path::new(REQUEST_FILE), request) {
        return failed(format!("cannot write {REQUEST_FILE}: {e}"));
    }
    let mut argv = vec![DRAIN_BINARY, "--request", REQUEST_FILE];
    argv.extend_from_slice(command);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = sup.run_oneshot_streaming(&argv, timeout + CLIENT_MARGIN, tx);
    tokio::pin!(client);
    let mut report = None;
    let finished = loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => report = take(&line, &request.node, events).await.or(report),
                None => break client.await,
            },
            r = &mut client => {
                // Lines still buffered were sent before the exit.
                while let Ok(line) = rx.try_recv() {
                    report = take(&line, &request.node, events).await.or(report);
                }
                break r;
            }
        }
    };
    let _ = std::fs::remove_file(REQUEST_FILE);
    match (report, finished) {
        (Some(r), _) => DrainResult {
            outcome: match r.outcome {
                protocol::Outcome::Done => Outcome::Ok,
                protocol::Outcome::TimedOut => Outcome::TimedOut,
                protocol::Outcome::Skipped => Outcome::Skipped,
            },
            detail: r.summary(),
            report: Some(r),
        },
        (None, Ok(out)) => failed(format!(
            "{DRAIN_BINARY} ended ({}) without a report: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        (None, Err(e)) => DrainResult {
            outcome: Outcome::TimedOut,
            detail: format!("{e}"),
            report: None,
        },
    }
}

/// Shows one output line (a stray non-progress line is ignored); the
/// report when it is the last one.
async fn take(line: &str, node: &str, events: Option<&EventBus>) -> Option<protocol::Report> {
    let p = protocol::parse_line(line)?;
    show(&p, node, events).await;
    match p {
        Progress::Done(r) => Some(r),
        _ => None,
    }
}

/// Console, event log and STATE for one progress line.
async fn show(p: &Progress, node: &str, events: Option<&EventBus>) {
    let (line, fields): (String, Vec<(&str, String)>) = match p {
        Progress::Cordoned { by_us } => {
            if *by_us {
                let node = node.to_string();
                let recorded = tokio::task::spawn_blocking(move || record_cordon(&node)).await;
                if !matches!(recorded, Ok(Ok(()))) {
                    tracing::warn!(?recorded, "cannot record the cordon in STATE");
                }
            }
            (
                format!("drain cordoned by_us={by_us}"),
                vec![("byUs", by_us.to_string())],
            )
        }
        Progress::Pods { to_evict, skipped } => (
            format!(
                "drain pods to_evict={} skipped={}",
                to_evict.len(),
                skipped.len()
            ),
            vec![("toEvict", to_evict.join(","))],
        ),
        Progress::Evicted { pod } => (
            format!("drain evicted pod={pod}"),
            vec![("pod", pod.clone())],
        ),
        Progress::Refused { pod, reason } => (
            format!("drain refused pod={pod} reason={reason:?}"),
            vec![("pod", pod.clone()), ("reason", reason.clone())],
        ),
        Progress::Waiting { left } => (
            format!("drain waiting left={left}"),
            vec![("left", left.to_string())],
        ),
        Progress::Uncordoned => ("drain uncordoned".into(), vec![]),
        Progress::Done(r) => (
            format!("drain done outcome={} {}", r.outcome.as_str(), r.summary()),
            vec![("outcome", r.outcome.as_str().to_string())],
        ),
    };
    crate::console::marker(&line);
    if let Some(ev) = events {
        ev.emit("drain", line, &fields);
    }
}

fn write_request(path: &Path, request: &Request) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&serde_json::to_vec(request).map_err(std::io::Error::other)?)
}

/// Keelson's cordon as recorded in STATE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CordonMarker {
    /// The node object cordoned.
    pub node: String,
    /// When, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

fn marker_path(state: &Path) -> PathBuf {
    state.join(MARKER)
}

/// Records that Keelson cordoned `node` (STATE made writable for it).
pub fn record_cordon(node: &str) -> Result<(), String> {
    let marker = CordonMarker {
        node: node.to_string(),
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let bytes = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
    let path = marker_path(Path::new(STATE_MOUNT));
    crate::stage2::with_state_writable(|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        super::report::write_atomic(&path, &bytes).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?
}

/// The cordon a previous shutdown recorded, if any.
pub fn pending_cordon(state: &Path) -> Option<CordonMarker> {
    let bytes = std::fs::read(marker_path(state)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Forgets the recorded cordon (after the uncordon, or when it was not ours
/// any more).
pub fn clear_cordon() -> Result<(), String> {
    let path = marker_path(Path::new(STATE_MOUNT));
    crate::stage2::with_state_writable(|| match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(extra: &str) -> MachineConfig {
        let yaml = format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: MachineConfig\nmachine:\n  hostname: n1\nkubelet:\n  apiServer: https://10.0.2.2:6443\n  caCert: |\n    PEM\n  token: kubelet-token\n{extra}"
        );
        // Parsed, not validated: the CA placeholder is not a certificate.
        machine_config::parse(yaml.as_bytes()).unwrap().config
    }

    #[test]
    fn the_drain_runs_with_the_config_access_and_kubelet_defaults() {
        let cfg = config("kubernetes:\n  token: drain-token\n  drainTimeout: 90s\n");
        match DrainStep::decide(Some(&cfg), "n1", DrainOverride::default()) {
            DrainStep::Run { request, timeout } => {
                assert_eq!(timeout, Duration::from_secs(90));
                assert_eq!(request.node, "n1");
                assert_eq!(request.endpoint.as_deref(), Some("https://10.0.2.2:6443"));
                assert_eq!(request.token.as_deref(), Some("drain-token"));
                assert!(request.ca_cert.is_some());
            }
            other => panic!("{other:?}"),
        }
        let over = DrainOverride {
            no_drain: false,
            timeout: Some(Duration::from_secs(7)),
        };
        assert!(matches!(
            DrainStep::decide(Some(&cfg), "n1", over),
            DrainStep::Run { timeout, .. } if timeout == Duration::from_secs(7)
        ));
    }

    #[test]
    fn every_reason_not_to_drain_is_named() {
        let reason = |cfg: Option<&MachineConfig>, over| match DrainStep::decide(cfg, "n1", over) {
            DrainStep::Skip(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(reason(None, DrainOverride::default()).contains("no machine config"));
        let no_access = config("");
        assert!(reason(Some(&no_access), DrainOverride::default()).contains("kubernetes section"));
        let zero = config("kubernetes:\n  token: t\n  drainTimeout: 0s\n");
        assert!(reason(Some(&zero), DrainOverride::default()).contains("drainTimeout is 0s"));
        let cfg = config("kubernetes:\n  token: t\n");
        let no = DrainOverride {
            no_drain: true,
            timeout: None,
        };
        assert!(reason(Some(&cfg), no).contains("--no-drain"));
    }

    #[test]
    fn the_request_file_is_private_and_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/req.json");
        let req = Request {
            node: "n1".into(),
            kubeconfig: None,
            endpoint: None,
            ca_cert: None,
            token: Some("t".into()),
        };
        write_request(&path, &req).unwrap();
        write_request(&path, &req).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back: Request = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, req);
    }
}
