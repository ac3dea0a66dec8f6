//! The plan from one config to the next: every change, in a fixed order,
//! each marked `live` (applied on the running node) or `reboot` (takes
//! effect at the next boot), with the line an operator reads.
//!
//! What is live and what needs a reboot:
//! - live: hostname, loading a module, sysctls, files, network, time,
//!   certificates (apid restarts), trusted upgrade keys, containerd and
//!   CNI settings (containerd restarts; running containers keep running),
//!   kubelet settings (kubelet restarts), drain, shutdown, upgrade and API
//!   settings.
//! - reboot: the install disk, kernel command-line arguments, unloading a
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::prerequisites::{effective_modules, effective_sysctls};
use crate::schema::{Interface, KernelModule, MachineConfig};

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
    /// The config path (`machine.sysctls[net.core.somaxconn]`).
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
    install(&mut p, old, new);
    hostname(&mut p, old, new);
    kernel_args(&mut p, old, new);
    modules(&mut p, old, new);
    sysctls(&mut p, old, new);
    files(&mut p, old, new);
    network(&mut p, old, new);
    time(&mut p, old, new);
    certificates(&mut p, old, new);
    trusted_keys(&mut p, old, new);
    containerd(&mut p, old, new);
    cni(&mut p, old, new);
    kubelet(&mut p, old, new);
    kubernetes(&mut p, old, new);
    shutdown(&mut p, old, new);
    upgrade(&mut p, old, new);
    api(&mut p, old, new);
    Plan { changes: p.changes }
}

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
fn list<T: fmt::Display>(items: &[T]) -> String {
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

fn opt<T: fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "(none)".to_string(), |v| v.to_string())
}

fn install(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old.and_then(|o| o.machine.install.as_ref());
    let after = new.machine.install.as_ref();
    if before == after {
        return;
    }
    let show = |i: Option<&crate::schema::Install>| {
        i.map_or_else(
            || "(none)".to_string(),
            |i| {
                if i.wipe {
                    format!("{} (wipe)", i.disk)
                } else {
                    i.disk.clone()
                }
            },
        )
    };
    p.reboot(
        ChangeKind::Install,
        "machine.install",
        format!(
            "install disk: {} -> {} (used when the node next installs)",
            show(before),
            show(after)
        ),
    );
}

fn hostname(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let name = &new.machine.hostname;
    match old.map(|o| &o.machine.hostname) {
        Some(before) if before == name => {}
        Some(before) => p.live(
            ChangeKind::Hostname,
            "machine.hostname",
            format!("hostname: {before} -> {name}"),
        ),
        None => p.live(
            ChangeKind::Hostname,
            "machine.hostname",
            format!("hostname: set to {name}"),
        ),
    }
}

fn kernel_args(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let empty = Vec::new();
    let before = old.map_or(&empty, |o| &o.machine.kernel.args);
    let after = &new.machine.kernel.args;
    if before == after {
        return;
    }
    let path = "machine.kernel.args";
    let mut any = false;
    for a in before.iter().filter(|a| !after.contains(a)) {
        any = true;
        p.reboot(ChangeKind::KernelArgs, path, format!("kernel args: - {a}"));
    }
    for a in after.iter().filter(|a| !before.contains(a)) {
        any = true;
        p.reboot(ChangeKind::KernelArgs, path, format!("kernel args: + {a}"));
    }
    if !any {
        p.reboot(
            ChangeKind::KernelArgs,
            path,
            format!(
                "kernel args: reordered {} -> {}",
                before.join(" "),
                after.join(" ")
            ),
        );
    }
}

fn params(m: &KernelModule) -> String {
    m.parameters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn modules(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before: BTreeMap<String, KernelModule> = old
        .map(effective_modules)
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    let after: BTreeMap<String, KernelModule> = effective_modules(new)
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        let path = format!("machine.kernel.modules[{name}]");
        match (before.get(name), after.get(name)) {
            (None, Some(m)) => {
                let with = if m.parameters.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", params(m))
                };
                p.live(ChangeKind::Module, path, format!("module {name}: load{with}"));
            }
            (Some(_), None) => p.reboot(
                ChangeKind::Module,
                path,
                format!(
                    "module {name}: no longer loaded, from the next boot (a loaded module is not unloaded from a running kernel)"
                ),
            ),
            (Some(b), Some(a)) if b.parameters != a.parameters => p.reboot(
                ChangeKind::Module,
                path,
                format!(
                    "module {name}: parameters {} -> {} (read when the module loads; it is already loaded)",
                    none_if_empty(params(b)),
                    none_if_empty(params(a))
                ),
            ),
            _ => {}
        }
    }
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() {
        "(none)".to_string()
    } else {
        s
    }
}

fn sysctls(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old.map(effective_sysctls).unwrap_or_default();
    let after = effective_sysctls(new);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let path = format!("machine.sysctls[{key}]");
        match (before.get(key), after.get(key)) {
            (None, Some(v)) => p.live(ChangeKind::Sysctl, path, format!("sysctl {key}: set to {v}")),
            (Some(v), None) => p.live(
                ChangeKind::Sysctl,
                path,
                format!(
                    "sysctl {key}: no longer set (the kernel keeps {v} until the next boot, then its default)"
                ),
            ),
            (Some(b), Some(a)) if b != a => {
                p.live(ChangeKind::Sysctl, path, format!("sysctl {key}: {b} -> {a}"))
            }
            _ => {}
        }
    }
}

fn files(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let index = |cfg: &MachineConfig| -> BTreeMap<String, (String, u32)> {
        cfg.machine
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.content.clone(), f.mode.0)))
            .collect()
    };
    let before = old.map(index).unwrap_or_default();
    let after = index(new);
    let paths: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for path in paths {
        let cfg_path = format!("machine.files[{path}]");
        match (before.get(path), after.get(path)) {
            (None, Some((content, mode))) => p.live(
                ChangeKind::File,
                cfg_path,
                format!(
                    "file {path}: create ({} bytes, mode {mode:04o})",
                    content.len()
                ),
            ),
            (Some(_), None) => p.live(ChangeKind::File, cfg_path, format!("file {path}: remove")),
            (Some((bc, bm)), Some((ac, am))) => {
                let mut what = Vec::new();
                if bc != ac {
                    what.push(format!(
                        "content changed ({} -> {} bytes)",
                        bc.len(),
                        ac.len()
                    ));
                }
                if bm != am {
                    what.push(format!("mode {bm:04o} -> {am:04o}"));
                }
                if !what.is_empty() {
                    p.live(
                        ChangeKind::File,
                        cfg_path,
                        format!("file {path}: {}", what.join(", ")),
                    );
                }
            }
            (None, None) => {}
        }
    }
}

/// How an interface is named in the plan: its name, else its MAC.
fn iface_key(i: &Interface) -> String {
    i.name
        .clone()
        .or_else(|| i.mac.as_ref().map(|m| m.to_ascii_lowercase()))
        .unwrap_or_default()
}

fn describe_iface(i: &Interface) -> String {
    let mut parts = Vec::new();
    if i.dhcp {
        parts.push("dhcp".to_string());
    }
    if !i.addresses.is_empty() {
        parts.push(format!("addresses {}", list(&i.addresses)));
    }
    if !i.routes.is_empty() {
        parts.push(format!("{} routes", i.routes.len()));
    }
    if let Some(mtu) = i.mtu {
        parts.push(format!("mtu {mtu}"));
    }
    if parts.is_empty() {
        "up, no addresses".to_string()
    } else {
        parts.join(", ")
    }
}

fn network(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let index = |cfg: &MachineConfig| -> BTreeMap<String, Interface> {
        cfg.network
            .interfaces
            .iter()
            .map(|i| (iface_key(i), i.clone()))
            .collect()
    };
    let before = old.map(index).unwrap_or_default();
    let after = index(new);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let path = format!("network.interfaces[{key}]");
        match (before.get(key), after.get(key)) {
            (None, Some(a)) => p.live(
                ChangeKind::Network,
                path,
                format!("network interface {key}: configure ({})", describe_iface(a)),
            ),
            (Some(_), None) => p.live(
                ChangeKind::Network,
                path,
                format!("network interface {key}: no longer configured (its addresses and routes are removed)"),
            ),
            (Some(b), Some(a)) if b != a => {
                let mut what = Vec::new();
                if b.dhcp != a.dhcp {
                    what.push(format!("dhcp {} -> {}", onoff(b.dhcp), onoff(a.dhcp)));
                }
                if b.addresses != a.addresses {
                    what.push(format!("addresses {} -> {}", list(&b.addresses), list(&a.addresses)));
                }
                if b.routes != a.routes {
                    let show = |i: &Interface| {
                        i.routes
                            .iter()
                            .map(|r| match r.metric {
                                Some(m) => format!("{} via {} metric {m}", r.to, r.via),
                                None => format!("{} via {}", r.to, r.via),
                            })
                            .collect::<Vec<_>>()
                    };
                    what.push(format!("routes {} -> {}", list(&show(b)), list(&show(a))));
                }
                if b.mtu != a.mtu {
                    what.push(format!("mtu {} -> {}", opt(b.mtu.as_ref()), opt(a.mtu.as_ref())));
                }
                if what.is_empty() {
                    // Only the selector spelling changed (name and MAC both set).
                    what.push("selector changed".to_string());
                }
                p.live(
                    ChangeKind::Network,
                    path,
                    format!("network interface {key}: {}", what.join(", ")),
                );
            }
            _ => {}
        }
    }
    let n_old = old.map(|o| &o.network);
    let n = &new.network;
    let before_ns = n_old.map(|o| o.nameservers.clone()).unwrap_or_default();
    if before_ns != n.nameservers {
        p.live(
            ChangeKind::Network,
            "network.nameservers",
            format!(
                "nameservers: {} -> {} (resolv.conf rewritten)",
                list(&before_ns),
                list(&n.nameservers)
            ),
        );
    }
    let before_search = n_old.map(|o| o.search_domains.clone()).unwrap_or_default();
    if before_search != n.search_domains {
        p.live(
            ChangeKind::Network,
            "network.searchDomains",
            format!(
                "search domains: {} -> {} (resolv.conf rewritten)",
                list(&before_search),
                list(&n.search_domains)
            ),
        );
    }
    let before_hosts = n_old.map(|o| o.extra_hosts.clone()).unwrap_or_default();
    if before_hosts != n.extra_hosts {
        let show = |hs: &[crate::schema::HostEntry]| {
            hs.iter()
                .map(|h| format!("{} {}", h.ip, h.hostnames.join(" ")))
                .collect::<Vec<_>>()
        };
        p.live(
            ChangeKind::Network,
            "network.extraHosts",
            format!(
                "extra hosts: {} -> {} (/etc/hosts rewritten)",
                list(&show(&before_hosts)),
                list(&show(&n.extra_hosts))
            ),
        );
    }
}

fn onoff(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn time(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old
        .map(|o| o.machine.time.servers.clone())
        .unwrap_or_default();
    let after = &new.machine.time.servers;
    if &before != after {
        p.live(
            ChangeKind::Time,
            "machine.time.servers",
            format!("time servers: {} -> {}", list(&before), list(after)),
        );
    }
}

fn certificates(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old.and_then(|o| o.machine.certificates.as_ref());
    let after = new.machine.certificates.as_ref();
    let path = "machine.certificates";
    match (before, after) {
        (None, None) => {}
        (None, Some(c)) => {
            let cert = if c.cert.is_some() {
                "given node certificate"
            } else {
                "generated node certificate"
            };
            p.live(
                ChangeKind::Certificates,
                path,
                format!("certificates: set ({cert}); apid restarts with mTLS and leaves maintenance mode"),
            );
        }
        (Some(_), None) => p.live(
            ChangeKind::Certificates,
            path,
            "certificates: removed; apid restarts in maintenance mode (self-signed, apply-config only)"
                .to_string(),
        ),
        (Some(b), Some(a)) if b != a => {
            let mut what = Vec::new();
            if b.ca != a.ca {
                what.push("ca");
            }
            if b.ca_key != a.ca_key {
                what.push("caKey");
            }
            if b.cert != a.cert {
                what.push("cert");
            }
            if b.key != a.key {
                what.push("key");
            }
            if b.alt_names != a.alt_names {
                what.push("altNames");
            }
            p.live(
                ChangeKind::Certificates,
                path,
                format!("certificates: {} changed; apid restarts", what.join(", ")),
            );
        }
        _ => {}
    }
}

/// A short, stable name for a key in a plan line: its first 12 characters
/// after any PEM header, never the whole key.
fn key_label(k: &str) -> String {
    let body: String = k
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(12)
        .collect();
    format!("{body}…")
}

fn trusted_keys(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let empty = Vec::new();
    let before = old.map_or(&empty, |o| &o.machine.trusted_upgrade_keys);
    let after = &new.machine.trusted_upgrade_keys;
    let path = "machine.trustedUpgradeKeys";
    for k in before.iter().filter(|k| !after.contains(k)) {
        p.live(
            ChangeKind::TrustedKeys,
            path,
            format!(
                "trusted upgrade key: - {} (bundles it signed are refused)",
                key_label(k)
            ),
        );
    }
    for k in after.iter().filter(|k| !before.contains(k)) {
        p.live(
            ChangeKind::TrustedKeys,
            path,
            format!("trusted upgrade key: + {}", key_label(k)),
        );
    }
}

fn containerd(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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
                format!("containerd.registryMirrors[{host}]"),
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

fn cni(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

fn kubelet(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

fn kubernetes(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old.and_then(|o| o.kubernetes.as_ref());
    let after = new.kubernetes.as_ref();
    let path = "kubernetes";
    match (before, after) {
        (None, None) => {}
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

fn shutdown(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

fn upgrade(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

fn api(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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
