//! Which pods a drain evicts: everything on the node except DaemonSet pods
//! (their controller would put them straight back), mirror pods (kubelet's
//! static pods: the API server cannot evict them) and pods that have
//! already finished.

use k8s_openapi::api::core::v1::Pod;

use crate::protocol::PodNote;

/// The annotation kubelet puts on the API copy of a static pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// `namespace/name` of a pod.
pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Why `pod` is left alone, or `None` when it is to be evicted.
pub fn skip_reason(pod: &Pod) -> Option<&'static str> {
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
    {
        return Some("mirror pod of a static pod");
    }
    if meta.owner_references.as_ref().is_some_and(|owners| {
        owners
            .iter()
            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    }) {
        return Some("managed by a DaemonSet");
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") | Some("Failed") => Some("already finished"),
        _ => None,
    }
}

/// Splits `pods` into (to evict, left alone with why), each sorted by key.
pub fn classify(pods: &[Pod]) -> (Vec<&Pod>, Vec<PodNote>) {
    let mut evict = Vec::new();
    let mut skipped = Vec::new();
    for p in pods {
        match skip_reason(p) {
            Some(why) => skipped.push(PodNote {
                pod: key(p),
                reason: why.to_string(),
            }),
            None => evict.push(p),
        }
    }
    evict.sort_by_key(|p| key(p));
    skipped.sort_by(|a, b| a.pod.cmp(&b.pod));
    (evict, skipped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_are_skipped_the_rest_evicted() {
        let pods = vec![
            pod(
                serde_json::json!({"metadata": {"name": "web-1", "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                     "uid": "1", "controller": true}]}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "proxy-x", "namespace": "kube-system",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "proxy",
                                     "uid": "2", "controller": true}]}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "etcd-n1", "namespace": "kube-system",
                "annotations": {"kubernetes.io/config.mirror": "abc"}}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "job-1", "namespace": "default"},
                "status": {"phase": "Succeeded"}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "bare", "namespace": "default"},
                "status": {"phase": "Running"}}),
            ),
        ];
        let (evict, skipped) = classify(&pods);
        let evict: Vec<String> = evict.iter().map(|p| key(p)).collect();
        assert_eq!(evict, vec!["default/bare", "default/web-1"]);
        let skipped: Vec<(String, String)> =
            skipped.into_iter().map(|n| (n.pod, n.reason)).collect();
        assert_eq!(
            skipped,
            vec![
                ("default/job-1".into(), "already finished".into()),
                (
                    "kube-system/etcd-n1".into(),
                    "mirror pod of a static pod".into()
                ),
                (
                    "kube-system/proxy-x".into(),
                    "managed by a DaemonSet".into()
                ),
            ]
        );
    }

    #[test]
    fn a_daemonset_that_is_only_an_owner_not_the_controller_does_not_protect_a_pod() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "x", "namespace": "a",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d",
                                 "uid": "3"}]}}),
        );
        assert_eq!(skip_reason(&p), None);
    }
}
