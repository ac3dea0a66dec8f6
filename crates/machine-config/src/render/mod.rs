//! Renderers of the files a node writes under `/etc` from its machine
//! config: containerd's `config.toml` and registry `hosts.toml` files, the
//! CNI bridge network, kubelet's configuration, kubeconfig and command line,
//! `resolv.conf`, `hosts`, `hostname`, and the config's own
//! `machine.files`.
//!
//! Every renderer is a pure function of the config (and, where the node
//! learns something at run time such as a DHCP address, of [`NodeFacts`]):
//! the same input always gives the same bytes, so golden tests pin them and
//! the plan can compare what two configs would write.

pub mod cni;
pub mod containerd;
mod etc;
pub mod kubelet;

use std::net::IpAddr;

pub use etc::{hostname, hosts, resolv_conf};

use crate::schema::MachineConfig;

/// containerd's configuration file.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// Directory of containerd's per-registry `hosts.toml` files
/// (`<dir>/<registry host>/hosts.toml`), containerd's `config_path`.
pub const CONTAINERD_CERTS_DIR: &str = "/etc/containerd/certs.d";
/// containerd's CRI socket, which kubelet talks to.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// containerd's persistent root directory.
pub const CONTAINERD_ROOT: &str = "/var/lib/containerd";
/// containerd's state directory (tmpfs).
pub const CONTAINERD_STATE: &str = "/run/containerd";
/// The runc binary in the image (Debian's path).
pub const RUNC_BINARY: &str = "/usr/sbin/runc";
/// File name of the built-in bridge network inside `cni.confDir`.
pub const CNI_BRIDGE_CONFLIST: &str = "10-keelson-bridge.conflist";
/// kubelet's configuration file (a `KubeletConfiguration`).
pub const KUBELET_CONFIG: &str = "/etc/kubernetes/kubelet.yaml";
/// kubelet's kubeconfig (rendered or the user's, verbatim).
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.kubeconfig";
/// The CA that signs the API server's certificate; kubelet also trusts it
/// for client certificates presented to its own API.
pub const KUBERNETES_CA: &str = "/etc/kubernetes/pki/ca.crt";
/// kubelet's root directory.
pub const KUBELET_ROOT_DIR: &str = "/var/lib/kubelet";
/// Where kubelet keeps its serving certificate.
pub const KUBELET_CERT_DIR: &str = "/var/lib/kubelet/pki";
/// The resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The static host table.
pub const HOSTS: &str = "/etc/hosts";
/// The hostname file.
pub const HOSTNAME: &str = "/etc/hostname";

/// One file to write: absolute path, full content and permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the node.
    pub path: String,
    /// The whole content.
    pub content: String,
    /// Permission bits (`0o644`, `0o600` for secrets).
    pub mode: u32,
}

impl RenderedFile {
    fn new(path: impl Into<String>, content: impl Into<String>, mode: u32) -> Self {
        RenderedFile {
            path: path.into(),
            content: content.into(),
            mode,
        }
    }
}

/// What the node learned at run time that the renderers need: the config
/// alone does not say which address DHCP gave or which DNS servers it
/// offered. [`Default`] is "nothing learned yet" (hostname empty, which
/// renderers replace by `machine.hostname`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The hostname in effect (normally `machine.hostname`; empty means
    /// use the config's).
    pub hostname: String,
    /// The address DHCP gave the node's primary interface, if any.
    pub node_ip: Option<IpAddr>,
    /// Nameservers offered by DHCP, in the order offered.
    pub dhcp_nameservers: Vec<IpAddr>,
    /// Search domains offered by DHCP, in the order offered.
    pub dhcp_search: Vec<String>,
}

/// Why a config cannot be rendered. Each names the config path at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `containerd.extraConfig` is not valid TOML.
    #[error("containerd.extraConfig: not valid TOML: {message}")]
    ContainerdExtraConfigSyntax {
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// `containerd.extraConfig` sets a key Keelson must own.
    #[error("containerd.extraConfig: {key} cannot be changed ({ours}): {why}")]
    ContainerdKeyOwned {
        /// The dotted TOML key.
        key: String,
        /// What Keelson renders there (`Keelson sets "/usr/lib/cni"`).
        ours: String,
        /// What would break.
        why: &'static str,
    },
    /// A `containerd.registryMirrors` key is not a registry host name.
    #[error("containerd.registryMirrors: {host:?} is not a registry host (HOST or HOST:PORT of letters, digits, '.', '-', '_')")]
    RegistryHost {
        /// The offending key.
        host: String,
    },
    /// A kubelet extra arg would override a flag Keelson sets.
    #[error("kubelet.extraArgs.{flag}: --{flag} is set by Keelson ({why})")]
    KubeletFlagOwned {
        /// The flag without `--`.
        flag: String,
        /// Where its value comes from instead.
        why: &'static str,
    },
    /// `kubelet.apiServer` is set without credentials.
    #[error("kubelet.apiServer: {api_server} is set but kubelet.token is missing (or give kubelet.kubeconfig instead)")]
    KubeletMissingToken {
        /// The configured URL.
        api_server: String,
    },
    /// `kubelet.kubeconfig` carries a CA that is not valid base64.
    #[error("kubelet.kubeconfig: clusters[0].cluster.certificate-authority-data is not valid base64: {message}")]
    KubeconfigCa {
        /// The decoder's message.
        message: String,
    },
    /// A serializer failed on a value built here (a bug, reported rather
    /// than panicking).
    #[error("rendering {what}: {message}")]
    Serialize {
        /// The file being rendered.
        what: &'static str,
        /// The serializer's message.
        message: String,
    },
    /// A `machine.files` entry would overwrite a file Keelson renders.
    #[error(
        "machine.files[{index}].path: {path} is rendered by Keelson from {from}; set that instead"
    )]
    FileConflict {
        /// Index in `machine.files`.
        index: usize,
        /// The path.
        path: String,
        /// The config section it is rendered from.
        from: String,
    },
    /// Two `machine.files` entries name the same path.
    #[error("machine.files[{index}].path: {path} is already written by machine.files[{first}]")]
    DuplicateFile {
        /// Index of the later entry.
        index: usize,
        /// Index of the first entry.
        first: usize,
        /// The path.
        path: String,
    },
}

/// The node IP kubelet registers, following `kubelet.nodeIp`:
/// - `address`: that address;
/// - `subnet`: the first static interface address inside it, else the
///   DHCP address if it lies inside it, else none;
/// - absent: the first address of the first interface that has one
///   (static addresses first, the DHCP address for a `dhcp: true`
///   interface), else the DHCP address, else none.
pub fn node_ip(cfg: &MachineConfig, facts: &NodeFacts) -> Option<IpAddr> {
    let interfaces = &cfg.network.interfaces;
    if let Some(sel) = &cfg.kubelet.node_ip {
        if let Some(addr) = sel.address {
            return Some(addr);
        }
        if let Some(net) = sel.subnet {
            let static_hit = interfaces
                .iter()
                .flat_map(|i| i.addresses.iter())
                .map(|c| c.addr)
                .find(|a| net.contains(a));
            return static_hit.or(facts.node_ip.filter(|a| net.contains(a)));
        }
    }
    for iface in interfaces {
        if let Some(first) = iface.addresses.first() {
            return Some(first.addr);
        }
        if iface.dhcp {
            if let Some(ip) = facts.node_ip {
                return Some(ip);
            }
        }
    }
    facts.node_ip
}

/// Every file the node writes from its config (under `/etc`, plus
/// `machine.files` which may also be under `/var`), in a fixed order: hostname,
/// hosts, resolv.conf, containerd's config and registry hosts, the CNI
/// bridge (when enabled), kubelet's files (when kubelet is enabled), then
/// `machine.files` in config order. A `machine.files` entry may not replace
/// a rendered file (that would bypass the checks made here).
pub fn all(cfg: &MachineConfig, facts: &NodeFacts) -> Result<Vec<RenderedFile>, RenderError> {
    let mut out = vec![
        RenderedFile::new(HOSTNAME, hostname(cfg), 0o644),
        RenderedFile::new(HOSTS, hosts(cfg, facts), 0o644),
        RenderedFile::new(RESOLV_CONF, resolv_conf(cfg, facts), 0o644),
        RenderedFile::new(CONTAINERD_CONFIG, containerd::config_toml(cfg)?, 0o644),
    ];
    out.extend(containerd::registry_hosts(cfg));
    out.extend(cni::bridge_conflist(cfg));
    if cfg.kubelet.enabled {
        out.extend(kubelet::render(cfg, facts)?.files);
    }
    // Compared in normal form, so `/etc//hosts` or `/etc/./hosts` cannot
    // slip past the check.
    let rendered: Vec<(String, &str)> = out
        .iter()
        .map(|f| (normal(&f.path), f.path.as_str()))
        .collect();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (index, file) in cfg.machine.files.iter().enumerate() {
        let path = normal(&file.path);
        if let Some((_, own)) = rendered.iter().find(|(p, _)| *p == path) {
            return Err(RenderError::FileConflict {
                index,
                path: file.path.clone(),
                from: rendered_from(own).to_string(),
            });
        }
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == path) {
            return Err(RenderError::DuplicateFile {
                index,
                first: *first,
                path: file.path.clone(),
            });
        }
        seen.push((path, index));
    }
    out.extend(
        cfg.machine
            .files
            .iter()
            .map(|f| RenderedFile::new(f.path.clone(), f.content.clone(), f.mode.0)),
    );
    Ok(out)
}

/// A path with empty and `.` components dropped (`/etc//./hosts` →
/// `/etc/hosts`), for comparison only.
fn normal(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The config section a rendered path comes from, for error messages.
fn rendered_from(path: &str) -> &'static str {
    match path {
        HOSTNAME => "machine.hostname",
        HOSTS => "network.extraHosts",
        RESOLV_CONF => "network.nameservers and network.searchDomains",
        CONTAINERD_CONFIG => "containerd.extraConfig",
        KUBELET_CONFIG | KUBELET_KUBECONFIG | KUBERNETES_CA => "kubelet",
        p if p.starts_with(CONTAINERD_CERTS_DIR) => "containerd.registryMirrors",
        _ => "cni.bridge",
    }
}
