//! The Kubernetes node prerequisites every config gets: built-in defaults a
//! config extends and never loses by omission.
//!
//! A config can only drop a prerequisite explicitly (a module entry with
//! `enabled: false`, or a sysctl set to another value); validation then warns
//! what will break. The effective module list and sysctl map computed here are
//! what the node applies, the plan compares and the renderers read.

use std::collections::BTreeMap;

use crate::schema::{KernelModule, MachineConfig};

/// Modules loaded on every node before the config's own, and why.
pub const MODULES: &[(&str, &str)] = &[
    (
        "overlay",
        "containerd's overlayfs snapshotter cannot mount container root filesystems",
    ),
    (
        "br_netfilter",
        "bridged pod traffic bypasses iptables, so Services and NetworkPolicies break",
    ),
    // A node has no modprobe for the kernel to load netfilter pieces on
    // demand, so everything kubelet's and the CNI plugins' iptables rules
    // use is loaded at boot.
    ("iptable_filter", "kubelet cannot create its firewall chains (iptables filter table)"),
    ("iptable_nat", "the CNI bridge cannot masquerade pods and hostPorts fail (iptables nat table): pods never start"),
    ("ip6table_filter", "kubelet cannot create its IPv6 firewall chains"),
    ("ip6table_nat", "IPv6 pod masquerade and hostPorts fail"),
    ("xt_MASQUERADE", "pod traffic leaving the node cannot be masqueraded"),
    ("xt_comment", "iptables refuses the commented rules kubelet and the CNI plugins write"),
    ("xt_mark", "kubelet cannot mark packets to drop or masquerade"),
    ("xt_addrtype", "hostPort rules (portmap) cannot match local addresses"),
    ("xt_conntrack", "rules matching connection state are refused"),
    ("xt_multiport", "rules matching several ports at once are refused"),
    ("xt_nat", "DNAT and SNAT rules (hostPorts) are refused"),
];

/// Sysctls set on every node before the config's own, with their value and
/// what breaks without them.
pub const SYSCTLS: &[(&str, &str, &str)] = &[
    (
        "net.ipv4.ip_forward",
        "1",
        "pods cannot reach anything beyond the node",
    ),
    (
        "net.bridge.bridge-nf-call-iptables",
        "1",
        "IPv4 Service traffic between pods on the bridge is not NATed",
    ),
    (
        "net.bridge.bridge-nf-call-ip6tables",
        "1",
        "IPv6 Service traffic between pods on the bridge is not NATed",
    ),
];

/// The modules to load, in order: the prerequisites (unless the config
/// disabled them by name), then the config's enabled modules. A config entry
/// naming a prerequisite replaces it in place (to add parameters) rather than
/// loading it twice.
pub fn effective_modules(cfg: &MachineConfig) -> Vec<KernelModule> {
    let own = &cfg.machine.kernel.modules;
    let mut out: Vec<KernelModule> = MODULES
        .iter()
        .map(|(name, _)| {
            own.iter()
                .find(|m| m.name == *name)
                .cloned()
                .unwrap_or(KernelModule {
                    name: (*name).to_string(),
                    parameters: BTreeMap::new(),
                    enabled: true,
                })
        })
        .collect();
    for m in own {
        if !MODULES.iter().any(|(name, _)| *name == m.name) {
            out.push(m.clone());
        }
    }
    out.retain(|m| m.enabled);
    out
}

/// The sysctls to set: the prerequisites overlaid with the config's own
/// (the config wins, and validation warns when it weakens a prerequisite).
pub fn effective_sysctls(cfg: &MachineConfig) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = SYSCTLS
        .iter()
        .map(|(k, v, _)| ((*k).to_string(), (*v).to_string()))
        .collect();
    out.extend(
        cfg.machine
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}

/// Prerequisites this config switches off, each with what will break:
/// `(config path, consequence)`.
pub fn weakened(cfg: &MachineConfig) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (i, m) in cfg.machine.kernel.modules.iter().enumerate() {
        if let Some((_, why)) = MODULES.iter().find(|(n, _)| *n == m.name) {
            if !m.enabled {
                out.push((format!("machine.kernel.modules[{i}]"), *why));
            }
        }
    }
    for (key, want, why) in SYSCTLS {
        if let Some(v) = cfg.machine.sysctls.get(*key) {
            if v.trim() != *want {
                out.push((format!("machine.sysctls.{key}"), *why));
            }
        }
    }
    out
}
