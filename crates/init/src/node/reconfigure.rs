//! Carrying out a plan's live changes on the running node: hostname,
//! modules, sysctls (each read back), rendered files, and the restarts the
//! changes need (containerd for containerd/CNI settings, kubelet for its
//! own, apid for certificates and the API port). Returns what could not be
//! done, one line each; the rest is done regardless.

use std::collections::BTreeSet;
use std::time::Duration;

use machine_config::plan::{Apply, ChangeKind, Plan};
use machine_config::MachineConfig;

use super::NodeCtl;
use crate::bootstate::BootState;
use crate::{apply, services};

/// Bound on containerd answering again after a restart.
const CONTAINERD_READY: Duration = Duration::from_secs(90);

/// Applies the live part of `plan` (from `old` to `new`).
pub async fn live(
    node: &NodeCtl,
    old: &MachineConfig,
    new: &MachineConfig,
    plan: &Plan,
) -> Vec<String> {
    let kinds: BTreeSet<ChangeKind> = plan
        .changes
        .iter()
        .filter(|c| c.apply == Apply::Live)
        .map(|c| c.kind)
        .collect();
    let _ = old;
    let mut scratch = BootState::default();
    if kinds.contains(&ChangeKind::Hostname) {
        apply::hostname(&mut scratch, new);
    }
    if kinds.contains(&ChangeKind::Module) {
        apply::modules(&mut scratch, new);
    }
    if kinds.contains(&ChangeKind::Sysctl) {
        apply::sysctls(&mut scratch, new);
    }
    let mut problems: Vec<String> = Vec::new();
    for m in scratch.modules.iter().filter(|m| !m.verified) {
        problems.push(format!(
            "module {}: {}",
            m.name,
            m.error.as_deref().unwrap_or("not loaded")
        ));
    }
    for s in scratch.sysctls.iter().filter(|s| !s.verified) {
        problems.push(format!(
            "sysctl {}={}: {}",
            s.key,
            s.wanted,
            s.error.as_deref().unwrap_or("not set")
        ));
    }
    let verified = scratch.sysctls.iter().filter(|s| s.verified).count();
    if !scratch.sysctls.is_empty() {
        crate::console::marker(&format!(
            "config live sysctls={verified} verified of {}",
            scratch.sysctls.len()
        ));
    }
    {
        let mut st = node.state();
        if !scratch.modules.is_empty() {
            st.modules = scratch.modules.clone();
        }
        if !scratch.sysctls.is_empty() {
            st.sysctls = scratch.sysctls.clone();
        }
    }

    let rerender = [
        ChangeKind::Hostname,
        ChangeKind::File,
        ChangeKind::Containerd,
        ChangeKind::Cni,
        ChangeKind::Kubelet,
        ChangeKind::Network,
    ]
    .iter()
    .any(|k| kinds.contains(k));
    let mut kubelet_args = None;
    if rerender {
        let before = scratch.errors.len();
        kubelet_args = super::bring_up::render_files(new, &node.facts(), &mut scratch);
        problems.extend(scratch.errors.iter().skip(before).cloned());
    }

    let restart_containerd =
        kinds.contains(&ChangeKind::Containerd) || kinds.contains(&ChangeKind::Cni);
    if restart_containerd && running(node, "containerd") {
        match node.sup.restart("containerd").await {
            Ok(()) => {
                if let Err(e) = node.sup.wait_ready("containerd", CONTAINERD_READY).await {
                    problems.push(format!("containerd after restart: {e}"));
                }
            }
            Err(e) => problems.push(format!("restarting containerd: {e}")),
        }
    }
    if kinds.contains(&ChangeKind::Kubelet) && known(node, "kubelet") {
        let timeout = new.shutdown.kubelet.get();
        let _ = node.sup.stop("kubelet", timeout).await;
        match kubelet_args.filter(|_| new.kubelet.enabled) {
            Some(args) => {
                if let Err(e) = node.sup.start(services::kubelet_spec(new, args)) {
                    problems.push(format!("starting kubelet: {e}"));
                }
            }
            None if !new.kubelet.enabled => tracing::info!("kubelet disabled by the new config"),
            None => problems.push("kubelet not restarted: its flags could not be rendered".into()),
        }
    }
    if kinds.contains(&ChangeKind::Certificates) || kinds.contains(&ChangeKind::Api) {
        // After the response has gone back through the running apid.
        let node = node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            node.start_apid();
        });
    }
    for p in &problems {
        tracing::warn!("live apply: {p}");
    }
    problems
}

fn known(node: &NodeCtl, name: &str) -> bool {
    node.sup.status().iter().any(|s| s.name == name)
}

fn running(node: &NodeCtl, name: &str) -> bool {
    node.sup
        .status()
        .iter()
        .any(|s| s.name == name && s.state != crate::supervisor::ServiceState::Stopped)
}
