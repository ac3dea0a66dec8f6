//! The node object: reading it (with a bounded wait for an API server that
//! is not answering yet), cordoning it with Keelson's annotation, and
//! undoing only a cordon that carries that annotation.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tokio::time::Instant;

use crate::error::DrainError;
use crate::protocol::{CORDON_ANNOTATION, CORDON_OWNER};

/// Pause between attempts while the API server is unreachable.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Gets node `name`, retrying transient failures until `until`.
pub async fn get(nodes: &Api<Node>, name: &str, until: Instant) -> Result<Node, DrainError> {
    loop {
        let e = match nodes.get(name).await {
            Ok(n) => return Ok(n),
            Err(e) => DrainError::from_kube(format!("get node {name}"), e),
        };
        if !e.is_transient() || Instant::now() + RETRY_PAUSE >= until {
            return Err(e);
        }
        tracing::debug!(node = name, error = %e, "API server not answering yet; retrying");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// True when the node is unschedulable.
pub fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// True when the cordon carries Keelson's annotation.
pub fn cordoned_by_keelson(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CORDON_ANNOTATION))
        .is_some_and(|v| v == CORDON_OWNER)
}

/// True when the node's `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Marks the node unschedulable and annotates it as Keelson's cordon.
pub async fn cordon(nodes: &Api<Node>, name: &str) -> Result<(), DrainError> {
    let patch = serde_json::json!({
        "metadata": { "annotations": { CORDON_ANNOTATION: CORDON_OWNER } },
        "spec": { "unschedulable": true },
    });
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| DrainError::from_kube(format!("cordon node {name}"), e))
}

/// Makes the node schedulable and removes Keelson's annotation.
pub async fn uncordon(nodes: &Api<Node>, name: &str) -> Result<(), DrainError> {
    let patch = serde_json::json!({
        "metadata": { "annotations": { CORDON_ANNOTATION: null } },
        "spec": { "unschedulable": null },
    });
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| DrainError::from_kube(format!("uncordon node {name}"), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_an_annotated_cordon_is_keelsons() {
        let by_hand =
            node(serde_json::json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        assert!(is_cordoned(&by_hand));
        assert!(!cordoned_by_keelson(&by_hand));
        let ours = node(serde_json::json!({"metadata": {"name": "n",
            "annotations": {"keelson.dev/cordoned-by": "keelson-drain"}},
            "spec": {"unschedulable": true}}));
        assert!(cordoned_by_keelson(&ours));
        let free = node(serde_json::json!({"metadata": {"name": "n"}}));
        assert!(!is_cordoned(&free));
    }

    #[test]
    fn ready_means_the_ready_condition_is_true() {
        let n = node(
            serde_json::json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]}}),
        );
        assert!(is_ready(&n));
        let n = node(
            serde_json::json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "Unknown"}]}}),
        );
        assert!(!is_ready(&n));
    }
}
