//! The drain: cordon, evict every evictable pod through the Eviction API
//! (retrying refusals, which is how PodDisruptionBudgets say "not yet"),
//! and wait until the evicted pods are gone from the node, all within one
//! deadline. Whatever happens, it ends with a [`Report`]: the shutdown
//! goes on either way.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams};
use tokio::time::Instant;

use crate::error::DrainError;
use crate::protocol::{
    Outcome, PodNote, Progress, Report, Request, ALREADY_SCHEDULABLE, NOT_KEELSONS_CORDON,
};
use crate::{access, node, pods};

/// Bounds of a drain.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The whole drain, cordon to last pod gone.
    pub timeout: Duration,
    /// How long an unreachable API server (or a missing node object) is
    /// waited for before the drain is skipped.
    pub api_wait: Duration,
    /// Pause between two evictions of a pod the API server refused.
    pub retry_every: Duration,
    /// Pause between two looks at the pods left on the node.
    pub poll_every: Duration,
}

impl Options {
    /// The defaults for `timeout`: API wait 15 s (or the timeout when
    /// shorter), refusals retried every 5 s, pods polled every second.
    pub fn with_timeout(timeout: Duration) -> Options {
        Options {
            timeout,
            api_wait: Duration::from_secs(15).min(timeout),
            retry_every: Duration::from_secs(5),
            poll_every: Duration::from_secs(1),
        }
    }
}

/// A pod the drain is responsible for.
struct Pending {
    namespace: String,
    name: String,
    uid: Option<String>,
    evicted: bool,
    last_try: Option<Instant>,
    reason: Option<String>,
}

/// Drains `request.node`, reporting progress through `out`.
pub async fn drain(request: &Request, opts: Options, out: &mut impl FnMut(&Progress)) -> Report {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let took = || started.elapsed().as_millis() as u64;
    let client = match access::client(request).await {
        Ok(c) => c,
        Err(e) => return Report::skipped(e.to_string(), took()),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let current = match node::get(&nodes, &request.node, started + opts.api_wait).await {
        Ok(n) => n,
        Err(e) => return Report::skipped(e.to_string(), took()),
    };

    // Cordon, unless it already is: an operator's cordon stays theirs.
    let by_us = if node::is_cordoned(&current) {
        node::cordoned_by_keelson(&current)
    } else {
        match node::cordon(&nodes, &request.node).await {
            Ok(()) => true,
            Err(e) => return Report::skipped(e.to_string(), took()),
        }
    };
    tracing::info!(node = %request.node, by_us, "node cordoned");
    out(&Progress::Cordoned { by_us });

    let all_pods: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={}", request.node));
    let listed = match list(&all_pods, &on_node, deadline).await {
        Ok(p) => p,
        Err(e) => {
            let mut r = Report::skipped(e.to_string(), took());
            r.cordoned_by_us = by_us;
            return r;
        }
    };
    let (to_evict, skipped) = pods::classify(&listed);
    out(&Progress::Pods {
        to_evict: to_evict.iter().map(|p| pods::key(p)).collect(),
        skipped: skipped.clone(),
    });
    let mut pending: BTreeMap<String, Pending> = to_evict
        .iter()
        .map(|p| {
            (
                pods::key(p),
                Pending {
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    name: p.metadata.name.clone().unwrap_or_default(),
                    uid: p.metadata.uid.clone(),
                    evicted: false,
                    last_try: None,
                    reason: None,
                },
            )
        })
        .collect();
    let mut evicted = Vec::new();
    let mut last_left = usize::MAX;

    loop {
        // Evict what is due.
        for (key, p) in pending.iter_mut() {
            if p.evicted || p.last_try.is_some_and(|t| t.elapsed() < opts.retry_every) {
                continue;
            }
            p.last_try = Some(Instant::now());
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
            match api.evict(&p.name, &EvictParams::default()).await {
                Ok(_) => {
                    p.evicted = true;
                    p.reason = Some("evicted; still terminating".into());
                    evicted.push(key.clone());
                    tracing::info!(pod = %key, "pod evicted");
                    out(&Progress::Evicted { pod: key.clone() });
                }
                Err(e) => {
                    let e = DrainError::from_kube(format!("evict {key}"), e);
                    if e.code() == Some(404) {
                        // Gone on its own: nothing left to wait for.
                        p.evicted = true;
                        continue;
                    }
                    let reason = match &e {
                        DrainError::Api { message, .. } if !message.is_empty() => message.clone(),
                        other => other.to_string(),
                    };
                    if p.reason.as_deref() != Some(reason.as_str()) {
                        tracing::info!(pod = %key, %reason, "eviction refused; will retry");
                        out(&Progress::Refused {
                            pod: key.clone(),
                            reason: reason.clone(),
                        });
                        p.reason = Some(reason);
                    }
                }
            }
        }

        // Forget pods that are gone (a replacement has another uid).
        if let Ok(now) = all_pods.list(&on_node).await {
            let present: BTreeMap<String, Option<String>> = now
                .items
                .iter()
                .map(|p| (pods::key(p), p.metadata.uid.clone()))
                .collect();
            pending.retain(|key, p| present.get(key).is_some_and(|uid| *uid == p.uid));
        }
        if pending.is_empty() {
            tracing::info!(node = %request.node, evicted = evicted.len(), "drain done");
            return Report {
                outcome: Outcome::Done,
                reason: None,
                cordoned_by_us: by_us,
                evicted,
                left: Vec::new(),
                skipped,
                took_ms: took(),
            };
        }
        if pending.len() != last_left {
            last_left = pending.len();
            out(&Progress::Waiting { left: last_left });
        }
        let now = Instant::now();
        if now >= deadline {
            let left: Vec<PodNote> = pending
                .into_iter()
                .map(|(pod, p)| PodNote {
                    pod,
                    reason: p.reason.unwrap_or_else(|| "not evicted yet".into()),
                })
                .collect();
            tracing::warn!(node = %request.node, left = left.len(), "drain deadline passed");
            return Report {
                outcome: Outcome::TimedOut,
                reason: Some(format!(
                    "{} pod(s) still on the node after {} s",
                    left.len(),
                    opts.timeout.as_secs()
                )),
                cordoned_by_us: by_us,
                evicted,
                left,
                skipped,
                took_ms: took(),
            };
        }
        tokio::time::sleep(opts.poll_every.min(deadline - now)).await;
    }
}

/// Lists the pods on the node, retrying transient failures until `until`.
async fn list(api: &Api<Pod>, lp: &ListParams, until: Instant) -> Result<Vec<Pod>, DrainError> {
    loop {
        let e = match api.list(lp).await {
            Ok(l) => return Ok(l.items),
            Err(e) => DrainError::from_kube("list the node's pods", e),
        };
        if !e.is_transient() || Instant::now() + Duration::from_secs(1) >= until {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// After a boot: waits (up to `wait`) for the node to be Ready, then undoes
/// Keelson's own cordon. A node cordoned by anyone else is left alone.
pub async fn uncordon(
    request: &Request,
    wait: Duration,
    out: &mut impl FnMut(&Progress),
) -> Report {
    let started = Instant::now();
    let deadline = started + wait;
    let took = || started.elapsed().as_millis() as u64;
    let client = match access::client(request).await {
        Ok(c) => c,
        Err(e) => return Report::skipped(e.to_string(), took()),
    };
    let nodes: Api<Node> = Api::all(client);
    loop {
        let last = match node::get(&nodes, &request.node, deadline).await {
            Ok(n) if node::is_ready(&n) => {
                let (outcome, reason) = if !node::is_cordoned(&n) {
                    (Outcome::Done, Some(ALREADY_SCHEDULABLE.to_string()))
                } else if !node::cordoned_by_keelson(&n) {
                    (Outcome::Skipped, Some(NOT_KEELSONS_CORDON.to_string()))
                } else {
                    match node::uncordon(&nodes, &request.node).await {
                        Ok(()) => {
                            tracing::info!(node = %request.node, "node uncordoned");
                            out(&Progress::Uncordoned);
                            (Outcome::Done, None)
                        }
                        Err(e) => (Outcome::Skipped, Some(e.to_string())),
                    }
                };
                return Report {
                    outcome,
                    reason,
                    cordoned_by_us: false,
                    evicted: Vec::new(),
                    left: Vec::new(),
                    skipped: Vec::new(),
                    took_ms: took(),
                };
            }
            Ok(_) => "the node is not Ready yet".to_string(),
            Err(e) if e.code() == Some(404) => format!("{e} (kubelet has not registered it yet)"),
            Err(e) => e.to_string(),
        };
        if Instant::now() + Duration::from_secs(2) >= deadline {
            return Report::skipped(
                format!("gave up after {} s: {last}", wait.as_secs()),
                took(),
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
