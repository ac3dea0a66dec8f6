//! Checks of the `kubelet` section (API server access, node IP, labels,
//! taints, flags Keelson owns) and of the `kubernetes` drain access.

use super::{pem, syntax, Checker};
use crate::render::kubelet::OWNED_FLAGS;
use crate::schema::MachineConfig;

/// Label prefixes in the Kubernetes namespaces that kubelet may set.
const ALLOWED_K8S_PREFIXES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];
/// Individual labels in the Kubernetes namespaces that kubelet may set.
const ALLOWED_K8S_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

pub(super) fn check(cfg: &MachineConfig, c: &mut Checker) {
    let k = &cfg.kubelet;
    if let Err(e) = syntax::absolute_path(&k.binary) {
        c.error("kubelet.binary", e);
    }
    if let Some(url) = &k.api_server {
        if let Err(e) = syntax::https_url(url) {
            c.error("kubelet.apiServer", e);
        }
        if k.ca_cert.is_none() {
            c.error(
                "kubelet.caCert",
                "required with apiServer: kubelet must verify the API server's certificate",
            );
        }
        match (&k.token, &k.kubeconfig) {
            (None, None) => c.error(
                "kubelet.token",
                "apiServer is set but no credentials: give token or kubeconfig",
            ),
            (Some(_), Some(_)) => c.error(
                "kubelet.kubeconfig",
                "both token and kubeconfig are given: give exactly one",
            ),
            _ => {}
        }
    } else if k.token.is_some() {
        c.error(
            "kubelet.apiServer",
            "a token is given but no apiServer to present it to",
        );
    }
    if let Some(ca) = &k.ca_cert {
        if let Err(e) = pem::certificates(ca) {
            c.error("kubelet.caCert", e);
        }
    }
    if let Some(token) = &k.token {
        if let Err(e) = syntax::token(token) {
            c.error("kubelet.token", format!("the token {e}"));
        }
    }
    if let Some(kc) = &k.kubeconfig {
        if kc.trim().is_empty() {
            c.error("kubelet.kubeconfig", "is empty");
        }
    }
    if let Some(node_ip) = &k.node_ip {
        match (&node_ip.address, &node_ip.subnet) {
            (None, None) | (Some(_), Some(_)) => {
                c.error("kubelet.nodeIp", "give exactly one of address or subnet")
            }
            _ => {}
        }
    }
    for (key, value) in &k.labels {
        let path = format!("kubelet.labels.{key}");
        if let Err(e) = syntax::qualified_name(key) {
            c.key_error(path.clone(), format!("label key {key:?}: {e}"));
        } else if let Some(why) = restricted_label(key) {
            c.key_error(path.clone(), why);
        }
        if let Err(e) = syntax::label_value(value) {
            c.error(path, format!("label value {value:?} {e}"));
        }
    }
    let mut taints = Vec::new();
    for (i, taint) in k.taints.iter().enumerate() {
        let path = format!("kubelet.taints[{i}]");
        if let Err(e) = syntax::qualified_name(&taint.key) {
            c.error(
                format!("{path}.key"),
                format!("taint key {:?}: {e}", taint.key),
            );
        }
        if let Err(e) = syntax::label_value(&taint.value) {
            c.error(
                format!("{path}.value"),
                format!("taint value {:?} {e}", taint.value),
            );
        }
        let id = (taint.key.as_str(), taint.effect);
        if taints.contains(&id) {
            c.error(
                path,
                format!(
                    "taint {} with effect {:?} is given twice",
                    taint.key, taint.effect
                ),
            );
        }
        taints.push(id);
    }
    if let Err(e) = syntax::dns_name(&k.cluster_domain) {
        c.error(
            "kubelet.clusterDomain",
            format!("{:?} {e}", k.cluster_domain),
        );
    }
    if k.node_status_update_frequency.get().is_zero() {
        c.error(
            "kubelet.nodeStatusUpdateFrequency",
            "must be longer than 0s",
        );
    }
    for (flag, value) in &k.extra_args {
        let path = format!("kubelet.extraArgs.{flag}");
        let bare = flag.trim_start_matches('-');
        if bare != flag {
            c.key_error(
                path.clone(),
                format!("write the flag without the leading dashes: {bare:?}"),
            );
        } else if bare.is_empty()
            || !bare
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        {
            c.key_error(
                path.clone(),
                format!("{flag:?} is not a kubelet flag name (lowercase letters, digits, '-')"),
            );
        }
        if let Some((_, why)) = OWNED_FLAGS.iter().find(|(f, _)| *f == bare) {
            c.key_error(
                path.clone(),
                format!("--{bare} is set by Keelson and cannot be overridden: {why}"),
            );
        }
        if value.chars().any(char::is_control) {
            c.error(path, "the value must be one line of text");
        }
    }
    drain_access(cfg, c);
}

/// Why kubelet would refuse to register `key`, if it would: kubelet 1.20
/// exits at start-up on labels in the kubernetes.io / k8s.io namespaces
/// other than a short allow-list.
fn restricted_label(key: &str) -> Option<String> {
    let (prefix, _) = key.split_once('/')?;
    let k8s = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")));
    if !k8s || ALLOWED_K8S_PREFIXES.contains(&prefix) || ALLOWED_K8S_LABELS.contains(&key) {
        return None;
    }
    Some(format!(
        "kubelet refuses to start with label {key:?}: labels in the kubernetes.io and k8s.io \
         namespaces are reserved (allowed: prefixes {ALLOWED_K8S_PREFIXES:?} and a few \
         well-known keys); set node roles from the cluster side instead"
    ))
}

/// The `kubernetes` section: what the node needs to cordon and drain itself.
fn drain_access(cfg: &MachineConfig, c: &mut Checker) {
    let Some(kube) = &cfg.kubernetes else {
        return;
    };
    if kube.drain_timeout.get().is_zero() {
        return; // draining disabled: credentials are not used.
    }
    if kube.kubeconfig.is_some() {
        if kube.token.is_some() {
            c.error(
                "kubernetes.kubeconfig",
                "both token and kubeconfig are given: give exactly one",
            );
        }
        return;
    }
    match kube.endpoint.as_ref().or(cfg.kubelet.api_server.as_ref()) {
        None => c.error(
            "kubernetes.endpoint",
            "draining needs the API server: set endpoint (or kubelet.apiServer), or a \
             kubeconfig, or drainTimeout: 0s to disable draining",
        ),
        Some(url) => {
            if kube.endpoint.is_some() {
                if let Err(e) = syntax::https_url(url) {
                    c.error("kubernetes.endpoint", e);
                }
            }
        }
    }
    match (&kube.ca_cert, &cfg.kubelet.ca_cert) {
        (Some(ca), _) => {
            if let Err(e) = pem::certificates(ca) {
                c.error("kubernetes.caCert", e);
            }
        }
        (None, Some(_)) => {}
        (None, None) => c.error(
            "kubernetes.caCert",
            "draining needs the API server's CA: set caCert (or kubelet.caCert)",
        ),
    }
    match &kube.token {
        None => c.error(
            "kubernetes.token",
            "draining needs credentials: set token (a role that may patch its node and \
             evict pods) or kubeconfig",
        ),
        Some(token) => {
            if let Err(e) = syntax::token(token) {
                c.error("kubernetes.token", format!("the token {e}"));
            }
        }
    }
}
