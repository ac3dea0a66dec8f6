//! Plan lines for the services and their settings: containerd, CNI,
//! kubelet, the drain access, shutdown deadlines, the upgrade health gate
//! and the API port.

use std::collections::{BTreeMap, BTreeSet};

use super::{list, opt, Builder, ChangeKind};
use crate::schema::MachineConfig;

pub(super) fn containerd(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let c = &new.containerd;
    let Some(o) = old.map(|o| &o.containerd) else {
        p.live(
            ChangeKind::Containerd,
            "containerd",
            format!(
                "containerd: start (sandbox image {}, {} registry mirrors, {} preload images)",
                c.sandbox_image,
                c.registry_mirrors.len(),
                c.preload_images.len()
            ),
        );
        return;
    };
    if o.sandbox_image != c.sandbox_image {
        p.live(
            ChangeKind::Containerd,
            "containerd.sandboxImage",
            format!(
                "containerd sandbox image: {} -> {} (containerd restarts; running containers keep running)",
                o.sandbox_image, c.sandbox_image
            ),
        );
    }
    if o.extra_config != c.extra_config {
        p.live(
            ChangeKind::Containerd,
            "containerd.extraConfig",
            "containerd extraConfig changed (containerd restarts; running containers keep running)"
                .to_string(),
        );
    }
    let hosts: BTreeSet<&String> = o
        .registry_mirrors
        .keys()
        .chain(c.registry_mirrors.keys())
        .collect();
    for host in hosts {
        let before = o.registry_mirrors.get(host);
        let after = c.registry_mirrors.get(host);
        if before != after {
            p.live(
                ChangeKind::Containerd,
                format!("containerd.registryMirrors.{host}"),
                format!(
                    "containerd mirrors for {host}: {} -> {} (read at the next pull, no restart)",
                    list(before.map_or(&[][..], |v| v.as_slice())),
                    list(after.map_or(&[][..], |v| v.as_slice()))
                ),
            );
        }
    }
    for img in c
        .preload_images
        .iter()
        .filter(|i| !o.preload_images.contains(i))
    {
        p.live(
            ChangeKind::Containerd,
            "containerd.preloadImages",
            format!("containerd preload image: + {img} (imported now)"),
        );
    }
    for img in o
        .preload_images
        .iter()
        .filter(|i| !c.preload_images.contains(i))
    {
        p.live(
            ChangeKind::Containerd,
            "containerd.preloadImages",
            format!("containerd preload image: - {img} (no longer imported; images already in containerd stay)"),
        );
    }
}

pub(super) fn cni(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let c = &new.cni;
    let show_bridge = |b: Option<&crate::schema::CniBridge>| {
        b.map_or_else(
            || "none".to_string(),
            |b| {
                format!(
                    "{} on {}{}",
                    b.name,
                    b.subnet.network(),
                    if b.ip_masq { " with masquerade" } else { "" }
                )
            },
        )
    };
    let Some(o) = old.map(|o| &o.cni) else {
        p.live(
            ChangeKind::Cni,
            "cni",
            format!(
                "cni: bridge {} (plugins in {}, configs in {})",
                show_bridge(c.bridge.as_ref()),
                c.bin_dir,
                c.conf_dir
            ),
        );
        return;
    };
    if o.bin_dir != c.bin_dir {
        p.live(
            ChangeKind::Cni,
            "cni.binDir",
            format!(
                "cni binDir: {} -> {} (containerd restarts)",
                o.bin_dir, c.bin_dir
            ),
        );
    }
    if o.conf_dir != c.conf_dir {
        p.live(
            ChangeKind::Cni,
            "cni.confDir",
            format!(
                "cni confDir: {} -> {} (containerd restarts)",
                o.conf_dir, c.conf_dir
            ),
        );
    }
    if o.bridge != c.bridge {
        p.live(
            ChangeKind::Cni,
            "cni.bridge",
            format!(
                "cni bridge: {} -> {} (new pods only; running pods keep their addresses)",
                show_bridge(o.bridge.as_ref()),
                show_bridge(c.bridge.as_ref())
            ),
        );
    }
}

pub(super) fn kubelet(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let k = &new.kubelet;
    let Some(o) = old.map(|o| &o.kubelet) else {
        let summary = if !k.enabled {
            "kubelet: disabled".to_string()
        } else if k.kubeconfig.is_some() {
            "kubelet: start (with the given kubeconfig)".to_string()
        } else if let Some(server) = &k.api_server {
            format!("kubelet: start (API server {server})")
        } else {
            "kubelet: start standalone (no API server)".to_string()
        };
        p.live(ChangeKind::Kubelet, "kubelet", summary);
        return;
    };
    if o.enabled != k.enabled {
        let summary = if k.enabled {
            "kubelet: enabled (starts)"
        } else {
            "kubelet: disabled (stops; its pods are stopped)"
        };
        p.live(ChangeKind::Kubelet, "kubelet.enabled", summary.to_string());
    }
    const RESTART: &str = "kubelet restarts";
    let mut line = |field: &str, summary: String| {
        p.live(
            ChangeKind::Kubelet,
            format!("kubelet.{field}"),
            format!("kubelet {summary} ({RESTART})"),
        );
    };
    if o.binary != k.binary {
        line("binary", format!("binary: {} -> {}", o.binary, k.binary));
    }
    if o.api_server != k.api_server {
        line(
            "apiServer",
            format!(
                "apiServer: {} -> {}",
                opt(o.api_server.as_ref()),
                opt(k.api_server.as_ref())
            ),
        );
    }
    for (field, changed) in [
        ("caCert", o.ca_cert != k.ca_cert),
        ("token", o.token != k.token),
        ("kubeconfig", o.kubeconfig != k.kubeconfig),
    ] {
        if changed {
            line(field, format!("{field} changed"));
        }
    }
    if o.node_ip != k.node_ip {
        let show = |n: Option<&crate::schema::NodeIp>| match n {
            None => "first interface address".to_string(),
            Some(n) => match (n.address, n.subnet) {
                (Some(a), _) => a.to_string(),
                (None, Some(s)) => format!("first address in {s}"),
                (None, None) => "first interface address".to_string(),
            },
        };
        line(
            "nodeIp",
            format!(
                "nodeIp: {} -> {}",
                show(o.node_ip.as_ref()),
                show(k.node_ip.as_ref())
            ),
        );
    }
    if o.labels != k.labels {
        let diff = map_diff(&o.labels, &k.labels);
        p.live(
            ChangeKind::Kubelet,
            "kubelet.labels",
            format!(
                "kubelet labels: {diff} ({RESTART}; a Node already registered keeps its labels, change them with kubectl)"
            ),
        );
    }
    if o.taints != k.taints {
        let show = |k: &crate::schema::Kubelet| {
            k.taints
                .iter()
                .map(|t| format!("{}={}:{:?}", t.key, t.value, t.effect))
                .collect::<Vec<_>>()
        };
        p.live(
            ChangeKind::Kubelet,
            "kubelet.taints",
            format!(
                "kubelet taints: {} -> {} ({RESTART}; a Node already registered keeps its taints, change them with kubectl)",
                list(&show(o)),
                list(&show(k))
            ),
        );
    }
    let mut line = |field: &str, summary: String| {
        p.live(
            ChangeKind::Kubelet,
            format!("kubelet.{field}"),
            format!("kubelet {summary} ({RESTART})"),
        );
    };
    if o.cluster_dns != k.cluster_dns {
        line(
            "clusterDns",
            format!(
                "clusterDns: {} -> {}",
                list(&o.cluster_dns),
                list(&k.cluster_dns)
            ),
        );
    }
    if o.cluster_domain != k.cluster_domain {
        line(
            "clusterDomain",
            format!(
                "clusterDomain: {} -> {}",
                o.cluster_domain, k.cluster_domain
            ),
        );
    }
    if o.node_status_update_frequency != k.node_status_update_frequency {
        line(
            "nodeStatusUpdateFrequency",
            format!(
                "nodeStatusUpdateFrequency: {} -> {}",
                o.node_status_update_frequency, k.node_status_update_frequency
            ),
        );
    }
    if o.extra_args != k.extra_args {
        line(
            "extraArgs",
            format!("extraArgs: {}", map_diff(&o.extra_args, &k.extra_args)),
        );
    }
}

/// `+ a=1, - b, c: 1 -> 2` for two string maps.
fn map_diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| match (before.get(k), after.get(k)) {
            (None, Some(v)) => Some(format!("+ {k}={v}")),
            (Some(_), None) => Some(format!("- {k}")),
            (Some(b), Some(a)) if b != a => Some(format!("{k}: {b} -> {a}")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn kubernetes(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old.and_then(|o| o.kubernetes.as_ref());
    let after = new.kubernetes.as_ref();
    let path = "kubernetes";
    match (before, after) {
        (None, None) => {}
        (None, Some(k)) if k.drain_timeout.get().is_zero() => p.live(
            ChangeKind::Kubernetes,
            path,
            "kubernetes: access set, drain on shutdown off (drainTimeout 0s)".to_string(),
        ),
        (None, Some(k)) => p.live(
            ChangeKind::Kubernetes,
            path,
            format!(
                "kubernetes: drain on shutdown enabled (timeout {})",
                k.drain_timeout
            ),
        ),
        (Some(_), None) => p.live(
            ChangeKind::Kubernetes,
            path,
            "kubernetes: drain on shutdown disabled".to_string(),
        ),
        (Some(b), Some(a)) if b != a => {
            let mut what = Vec::new();
            if b.drain_timeout != a.drain_timeout {
                what.push(format!(
                    "drainTimeout {} -> {}",
                    b.drain_timeout, a.drain_timeout
                ));
            }
            if b.endpoint != a.endpoint {
                what.push(format!(
                    "endpoint {} -> {}",
                    opt(b.endpoint.as_ref()),
                    opt(a.endpoint.as_ref())
                ));
            }
            if b.ca_cert != a.ca_cert || b.token != a.token || b.kubeconfig != a.kubeconfig {
                what.push("credentials changed".to_string());
            }
            p.live(
                ChangeKind::Kubernetes,
                path,
                format!("kubernetes: {}", what.join(", ")),
            );
        }
        _ => {}
    }
}

pub(super) fn shutdown(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let s = &new.shutdown;
    let Some(o) = old.map(|o| &o.shutdown) else {
        p.live(
            ChangeKind::Shutdown,
            "shutdown",
            format!(
                "shutdown deadlines: kubelet {}, pods {}, containerd {}, processes {}, unmount {}, total {}",
                s.kubelet, s.pods, s.containerd, s.processes, s.unmount, s.total
            ),
        );
        return;
    };
    for (field, b, a) in [
        ("kubelet", o.kubelet, s.kubelet),
        ("pods", o.pods, s.pods),
        ("containerd", o.containerd, s.containerd),
        ("processes", o.processes, s.processes),
        ("unmount", o.unmount, s.unmount),
        ("total", o.total, s.total),
    ] {
        if b != a {
            p.live(
                ChangeKind::Shutdown,
                format!("shutdown.{field}"),
                format!("shutdown {field} deadline: {b} -> {a}"),
            );
        }
    }
}

pub(super) fn upgrade(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let u = &new.upgrade;
    let Some(o) = old.map(|o| &o.upgrade) else {
        p.live(
            ChangeKind::Upgrade,
            "upgrade",
            format!(
                "upgrade health gate: healthy after {}, give up after {}",
                u.healthy_after, u.health_timeout
            ),
        );
        return;
    };
    if o.healthy_after != u.healthy_after {
        p.live(
            ChangeKind::Upgrade,
            "upgrade.healthyAfter",
            format!(
                "upgrade healthyAfter: {} -> {}",
                o.healthy_after, u.healthy_after
            ),
        );
    }
    if o.health_timeout != u.health_timeout {
        p.live(
            ChangeKind::Upgrade,
            "upgrade.healthTimeout",
            format!(
                "upgrade healthTimeout: {} -> {}",
                o.health_timeout, u.health_timeout
            ),
        );
    }
}

pub(super) fn api(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let port = new.api.port;
    match old.map(|o| o.api.port) {
        None => p.live(
            ChangeKind::Api,
            "api.port",
            format!("api: listen on port {port}"),
        ),
        Some(before) if before != port => p.live(
            ChangeKind::Api,
            "api.port",
            format!("api port: {before} -> {port} (apid restarts; clients must use the new port)"),
        ),
        _ => {}
    }
}
