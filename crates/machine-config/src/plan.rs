//! The plan from one config to the next: every change, in a fixed order,
//! each marked `live` (applied on the running node) or `reboot` (takes
//! effect at the next boot), with the line an operator reads.
//!
//! What is live and what needs a reboot:
//! - live: hostname, loading a module, sysctls, files, network, time,
//!   certificates (apid restarts), trusted upgrade keys, containerd and
//!   CNI settings (containerd restarts; running containers keep running),
//!   kubelet settings (kubelet restarts), drain, shutdown, upgrade and API
//!   settings, and the install disk (read only when a live node, booted
//!   from the ISO or the network, installs: nothing changes on this node).
//! - reboot: kernel command-line arguments, unloading a
//!   module, and new parameters for a module that is already loaded (a
//!   loaded module is never removed from a running kernel: other modules,
//!   devices or netfilter rules may hold it, and its parameters are read
//!   when it loads).
//!
//! Modules and sysctls are compared in their effective form (the built-in
//! prerequisites merged with the config, see [`crate::prerequisites`]), so
//! dropping a prerequisite shows up and re-stating one does not.
//!
//! A sysctl the new config no longer sets is a `live` change that does
//! nothing now: the kernel keeps the value last written until the next
//! boot, when the kernel's default applies. The summary says so.
//!
//! With no old config (the first config a node receives), every setting is
//! listed as applied.
//!
//! `machine.swap` is never planned: validation refuses any config that
//! asks for swap.

mod machine;
mod network;
mod services;

use std::fmt;

use serde::Serialize;

use crate::schema::MachineConfig;

/// When a change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Apply {
    /// Applied on the running node.
    Live,
    /// Takes effect at the next boot.
    Reboot,
}

impl fmt::Display for Apply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Apply::Live => "live",
            Apply::Reboot => "reboot",
        })
    }
}

/// What a change touches (serialized in camelCase: `kernelArgs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// `machine.hostname`.
    Hostname,
    /// `machine.sysctls` (effective).
    Sysctl,
    /// `machine.kernel.modules` (effective).
    Module,
    /// `machine.kernel.args`.
    KernelArgs,
    /// `machine.files`.
    File,
    /// `network`.
    Network,
    /// `machine.time`.
    Time,
    /// `containerd`.
    Containerd,
    /// `cni`.
    Cni,
    /// `kubelet`.
    Kubelet,
    /// `machine.certificates`.
    Certificates,
    /// `machine.trustedUpgradeKeys`.
    TrustedKeys,
    /// `machine.install`.
    Install,
    /// `kubernetes` (drain access).
    Kubernetes,
    /// `shutdown`.
    Shutdown,
    /// `upgrade`.
    Upgrade,
    /// `api`.
    Api,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What it touches.
    pub kind: ChangeKind,
    /// The config path it comes from: map keys after a dot, as in
    /// validation messages (`machine.sysctls.net.core.somaxconn`); list
    /// items by their name in brackets, since a removed or built-in item
    /// has no index in the new config (`machine.kernel.modules[overlay]`,
    /// `machine.files[/etc/motd]`, `network.interfaces[eth0]`).
    pub path: String,
    /// When it takes effect.
    pub apply: Apply,
    /// The human line (`sysctl net.core.somaxconn: 4096 -> 8192`).
    pub summary: String,
}

/// The ordered list of changes from one config to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The changes, in a fixed order: install, hostname, kernel args,
    /// modules, sysctls, files, network, time, certificates, trusted keys,
    /// containerd, CNI, kubelet, kubernetes, shutdown, upgrade, API; by
    /// name within each.
    pub changes: Vec<Change>,
}

impl Plan {
    /// True when any change takes effect only at the next boot.
    pub fn needs_reboot(&self) -> bool {
        self.changes.iter().any(|c| c.apply == Apply::Reboot)
    }

    /// True when the configs are equivalent.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    /// One line per change: `live    sysctl net.core.somaxconn: 4096 -> 8192`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            writeln!(f, "{:<8}{}", c.apply.to_string(), c.summary)?;
        }
        Ok(())
    }
}

/// The plan from `old` (None: the node has no config yet) to `new`.
pub fn plan(old: Option<&MachineConfig>, new: &MachineConfig) -> Plan {
    let mut p = Builder::default();
    machine::install(&mut p, old, new);
    machine::hostname(&mut p, old, new);
    machine::kernel_args(&mut p, old, new);
    machine::modules(&mut p, old, new);
    machine::sysctls(&mut p, old, new);
    machine::files(&mut p, old, new);
    network::network(&mut p, old, new);
    machine::time(&mut p, old, new);
    machine::certificates(&mut p, old, new);
    machine::trusted_keys(&mut p, old, new);
    services::containerd(&mut p, old, new);
    services::cni(&mut p, old, new);
    services::kubelet(&mut p, old, new);
    services::kubernetes(&mut p, old, new);
    services::shutdown(&mut p, old, new);
    services::upgrade(&mut p, old, new);
    services::api(&mut p, old, new);
    Plan { changes: p.changes }
}

/// Collects changes in the order the section functions emit them.
#[derive(Default)]
struct Builder {
    changes: Vec<Change>,
}

impl Builder {
    fn push(&mut self, kind: ChangeKind, path: impl Into<String>, apply: Apply, summary: String) {
        self.changes.push(Change {
            kind,
            path: path.into(),
            apply,
            summary,
        });
    }
    fn live(&mut self, kind: ChangeKind, path: impl Into<String>, summary: String) {
        self.push(kind, path, Apply::Live, summary);
    }
    fn reboot(&mut self, kind: ChangeKind, path: impl Into<String>, summary: String) {
        self.push(kind, path, Apply::Reboot, summary);
    }
}

/// `a, b` or `(none)`.
pub(super) fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The value or `(none)`.
fn opt<T: fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "(none)".to_string(), |v| v.to_string())
}
