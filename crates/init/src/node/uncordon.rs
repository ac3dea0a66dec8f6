//! After a boot that follows Keelson's own cordon (recorded in STATE by the
//! shutdown's drain step): once kubelet runs, wait for the node to be Ready
//! and make it schedulable again. A cordon someone else made is left alone;
//! an API server that cannot be reached leaves the record for the next
//! boot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::drain::protocol;
use machine_config::MachineConfig;

use super::NodeCtl;
use crate::shutdown::drain;
use crate::shutdown::Outcome;
use crate::stage2::STATE_MOUNT;

/// How long the node may take to become Ready before the uncordon gives up
/// for this boot.
const READY_WAIT: Duration = Duration::from_secs(600);

/// Undoes the recorded cordon, if there is one.
pub async fn after_boot(node: NodeCtl, cfg: Arc<MachineConfig>) {
    let Some(marker) = drain::pending_cordon(Path::new(STATE_MOUNT)) else {
        return;
    };
    let facts = node.facts();
    let name = machine_config::render::kubelet::node_name(&cfg, &facts).to_string();
    let Some(request) = drain::access(&cfg, &name) else {
        node.state().error(format!(
            "node {} was cordoned by Keelson before the last shutdown, but the config has no Kubernetes access to uncordon it",
            marker.node
        ));
        return;
    };
    crate::console::marker(&format!("uncordon begins node={name}"));
    let r = drain::uncordon(&node.sup, Some(&node.events), &request, READY_WAIT).await;
    let detail = r
        .report
        .as_ref()
        .and_then(|r| r.reason.clone())
        .unwrap_or_else(|| r.detail.clone());
    // Done, or a cordon that is not ours any more: the record has served.
    let reason = r.report.as_ref().and_then(|r| r.reason.as_deref());
    let settled = r.outcome == Outcome::Ok
        || matches!(
            reason,
            Some(protocol::ALREADY_SCHEDULABLE | protocol::NOT_KEELSONS_CORDON)
        );
    crate::console::marker(&format!(
        "uncordon done outcome={} settled={settled} detail={detail:?}",
        r.outcome
    ));
    node.events.emit(
        "uncordon",
        format!("uncordon {}: {detail}", r.outcome),
        &[("outcome", r.outcome.to_string()), ("node", name)],
    );
    if settled {
        if let Err(e) = tokio::task::spawn_blocking(drain::clear_cordon)
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        {
            node.state()
                .error(format!("uncordon: cannot clear the record in STATE: {e}"));
        }
    } else {
        node.state().error(format!(
            "node still cordoned by Keelson's last shutdown: {detail} (retried at next boot)"
        ));
    }
}
