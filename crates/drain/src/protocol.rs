//! What init and `keelson-drain` say to each other: the request init writes
//! (the node's name and its Kubernetes access) and the progress lines the
//! drain prints on stdout, one JSON object per line, the last one being the
//! report. Pure data: init links this module without the Kubernetes client.

use serde::{Deserialize, Serialize};

/// The annotation `keelson-drain` puts on a node it cordoned, so that only
/// a cordon it made itself is undone after the next boot.
pub const CORDON_ANNOTATION: &str = "keelson.dev/cordoned-by";

/// The value of [`CORDON_ANNOTATION`].
pub const CORDON_OWNER: &str = "keelson-drain";

/// The uncordon's reason when the node was schedulable already (someone
/// uncordoned it): nothing left to undo.
pub const ALREADY_SCHEDULABLE: &str = "already schedulable";

/// The uncordon's reason when the node is cordoned without Keelson's
/// annotation: not Keelson's cordon to undo.
pub const NOT_KEELSONS_CORDON: &str =
    "cordoned by someone else (no keelson annotation): left cordoned";

/// The request init hands `keelson-drain` (a 0600 file on /run): which node,
/// and how to reach and authenticate to its API server. Either a kubeconfig,
/// or an endpoint with a CA and a bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// The node object's name (the node's hostname).
    pub node: String,
    /// A kubeconfig (YAML); when set, the fields below are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// `https://host:port` of the API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// PEM CA bundle that signed the API server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Bearer token of the drain identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Display for Request {
    /// Names the access without printing secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.kubeconfig, &self.endpoint) {
            (Some(_), _) => write!(f, "node {} via its kubeconfig", self.node),
            (None, Some(e)) => write!(f, "node {} at {e}", self.node),
            (None, None) => write!(f, "node {} (no endpoint)", self.node),
        }
    }
}

/// One line of `keelson-drain` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// The node is now unschedulable. `by_us` is false when it already was
    /// (an operator's cordon, which the next boot must leave alone).
    Cordoned {
        /// True when this drain set `unschedulable` (and the annotation).
        by_us: bool,
    },
    /// The pods found on the node: those to evict and those left alone.
    Pods {
        /// `namespace/name` of every pod to evict.
        to_evict: Vec<String>,
        /// Pods not evicted, with why.
        skipped: Vec<PodNote>,
    },
    /// The API server accepted the eviction of a pod.
    Evicted {
        /// `namespace/name`.
        pod: String,
    },
    /// The API server refused an eviction (a PodDisruptionBudget, usually);
    /// it is retried until the deadline. Printed when the reason changes.
    Refused {
        /// `namespace/name`.
        pod: String,
        /// The API server's message.
        reason: String,
    },
    /// Evicted pods still on the node, or pods still to evict.
    Waiting {
        /// How many pods are not gone yet.
        left: usize,
    },
    /// The node became schedulable again (after a boot).
    Uncordoned,
    /// The end: the report of the whole run.
    Done(Report),
}

/// A pod and a reason (skipped, or still there at the deadline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNote {
    /// `namespace/name`.
    pub pod: String,
    /// Why.
    pub reason: String,
}

/// How a drain or an uncordon ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every pod to evict is gone (drain), or the node is schedulable again
    /// (uncordon).
    Done,
    /// The deadline passed with pods left.
    TimedOut,
    /// Nothing was done: API unreachable, credentials refused, no node
    /// object, or (uncordon) the cordon was not ours.
    Skipped,
}

impl Outcome {
    /// The word the shutdown report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::TimedOut => "timed-out",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The last line of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was skipped or what it left, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when this run cordoned the node (init records it in STATE).
    #[serde(default)]
    pub cordoned_by_us: bool,
    /// Pods whose eviction the API server accepted.
    #[serde(default)]
    pub evicted: Vec<String>,
    /// Pods still on the node at the end, with why.
    #[serde(default)]
    pub left: Vec<PodNote>,
    /// Pods never evicted on purpose (DaemonSet, mirror, finished).
    #[serde(default)]
    pub skipped: Vec<PodNote>,
    /// Wall time of the run.
    pub took_ms: u64,
}

impl Report {
    /// A report of a run that did nothing, for `reason`.
    pub fn skipped(reason: impl Into<String>, took_ms: u64) -> Report {
        Report {
            outcome: Outcome::Skipped,
            reason: Some(reason.into()),
            cordoned_by_us: false,
            evicted: Vec::new(),
            left: Vec::new(),
            skipped: Vec::new(),
            took_ms,
        }
    }

    /// One line for the console and the shutdown report's step detail.
    pub fn summary(&self) -> String {
        let mut s = match self.outcome {
            Outcome::Skipped => format!(
                "skipped: {}",
                self.reason.as_deref().unwrap_or("no reason given")
            ),
            _ => format!("evicted {}", self.evicted.len()),
        };
        if !self.left.is_empty() {
            let left: Vec<String> = self
                .left
                .iter()
                .map(|p| format!("{} ({})", p.pod, p.reason))
                .collect();
            s.push_str(&format!("; left {}: {}", self.left.len(), left.join(", ")));
        }
        if self.outcome != Outcome::Skipped && self.cordoned_by_us {
            s.push_str("; cordoned by keelson");
        }
        s
    }
}

/// Parses one output line; `None` for a line that is not a progress object
/// (a stray print must not break the shutdown).
pub fn parse_line(line: &str) -> Option<Progress> {
    serde_json::from_str(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn progress_lines_round_trip_and_name_their_event() {
        let lines = [
            Progress::Cordoned { by_us: true },
            Progress::Refused {
                pod: "db/db-0".into(),
                reason: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            },
            Progress::Done(Report {
                outcome: Outcome::TimedOut,
                reason: Some("1 pod left at the deadline".into()),
                cordoned_by_us: true,
                evicted: vec!["default/web-1".into()],
                left: vec![PodNote {
                    pod: "db/db-0".into(),
                    reason: "disruption budget".into(),
                }],
                skipped: vec![],
                took_ms: 12,
            }),
        ];
        for p in lines {
            let line = serde_json::to_string(&p).unwrap();
            assert!(line.starts_with("{\"event\":"), "{line}");
            assert_eq!(parse_line(&line), Some(p));
        }
        assert_eq!(parse_line("panicked at ..."), None);
    }

    #[test]
    fn summary_names_what_was_left_and_why_it_skipped() {
        let r = Report {
            outcome: Outcome::TimedOut,
            reason: None,
            cordoned_by_us: true,
            evicted: vec!["a/b".into(), "a/c".into()],
            left: vec![PodNote {
                pod: "db/db-0".into(),
                reason: "budget".into(),
            }],
            skipped: vec![],
            took_ms: 1,
        };
        assert_eq!(
            r.summary(),
            "evicted 2; left 1: db/db-0 (budget); cordoned by keelson"
        );
        assert_eq!(
            Report::skipped("API server unreachable", 3).summary(),
            "skipped: API server unreachable"
        );
    }

    #[test]
    fn request_display_hides_the_token() {
        let r = Request {
            node: "n1".into(),
            kubeconfig: None,
            endpoint: Some("https://10.0.2.2:6443".into()),
            ca_cert: Some("PEM".into()),
            token: Some("s3cret".into()),
        };
        assert!(!r.to_string().contains("s3cret"));
    }
}
