//! The machine config schema: `apiVersion: keelson.dev/v1alpha1`,
//! `kind: MachineConfig`.
//!
//! These types are the contract between the operator's `node.yaml`, the node
//! (init applies them) and every tool. Parsing is strict: every struct denies
//! unknown fields. Every default is written in the doc comment of the field
//! it applies to, and is what [`Default`] returns. Semantic checks that need
//! more than one field (duplicates, reachability, totals) live in
//! [`crate::validate`], not here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::{Cidr, Duration, FileMode, SizeExpr};

/// The only `apiVersion` this crate reads.
pub const API_VERSION: &str = "keelson.dev/v1alpha1";
/// The only `kind` this crate reads.
pub const KIND: &str = "MachineConfig";

/// A whole machine config: one node's desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineConfig {
    /// Must be `keelson.dev/v1alpha1`.
    pub api_version: String,
    /// Must be `MachineConfig`.
    pub kind: String,
    /// Identity, disk, kernel, files and trust of the machine itself.
    pub machine: Machine,
    /// Network interfaces, DNS and hosts entries. Default: no interfaces
    /// configured (none brought up), no nameservers.
    #[serde(default)]
    pub network: Network,
    /// containerd settings. Default: see [`Containerd`].
    #[serde(default)]
    pub containerd: Containerd,
    /// The pod network (CNI) the node sets up. Default: see [`Cni`].
    #[serde(default)]
    pub cni: Cni,
    /// kubelet settings. Default: see [`Kubelet`].
    #[serde(default)]
    pub kubelet: Kubelet,
    /// Access the node uses to cordon and drain itself on shutdown.
    /// Default: absent (no drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    /// Ordered-shutdown deadlines. Default: see [`Shutdown`].
    #[serde(default)]
    pub shutdown: Shutdown,
    /// A/B upgrade health gate. Default: see [`Upgrade`].
    #[serde(default)]
    pub upgrade: Upgrade,
    /// The machine API listener. Default: see [`Api`].
    #[serde(default)]
    pub api: Api,
}

/// The machine itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// The node's hostname (RFC 1123 label or dotted name, at most 253
    /// characters). Required.
    pub hostname: String,
    /// Where to install when booted from the ISO or the network (changing
    /// it on an installed node changes nothing until it installs again).
    /// Default: absent (the node runs from the disk it booted from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Install>,
    /// Kernel modules and kernel command-line additions. Default: none
    /// beyond the built-in prerequisites (`overlay`, `br_netfilter`).
    #[serde(default)]
    pub kernel: Kernel,
    /// Sysctls, `key: value`, keys in dotted form (`net.ipv4.ip_forward`).
    /// Merged over the built-in prerequisites (`net.ipv4.ip_forward=1`,
    /// `net.bridge.bridge-nf-call-iptables=1`, `...-ip6tables=1`).
    /// Default: empty.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Files written at boot, under `/etc` or `/var` only. Default: none.
    #[serde(default)]
    pub files: Vec<File>,
    /// Time synchronisation. Default: no NTP servers.
    #[serde(default)]
    pub time: Time,
    /// Swap. Present only so that a config asking for it is refused with
    /// the reason: Keelson never enables swap (kubelet 1.20 refuses to run
    /// with swap on). Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Swap>,
    /// ed25519 public keys trusted to sign upgrade bundles, each base64 of
    /// the 32 raw key bytes or a PEM `PUBLIC KEY` block. Default: none (no
    /// upgrade is accepted).
    #[serde(default)]
    pub trusted_upgrade_keys: Vec<String>,
    /// Certificates of the machine API. Default: absent (the node stays in
    /// maintenance mode, serving a self-signed certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Certificates>,
}

/// Install target: used only when a node booted from the ISO or the
/// network installs itself onto a disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Install {
    /// The disk: a device path (`/dev/vda`, `/dev/disk/by-id/NAME`) or a
    /// selector (`size`, `model`, `serial`, `byId`) that exactly one
    /// writable disk must match. Required.
    pub disk: DiskTarget,
    /// Whether a disk that already holds partitions or a filesystem may be
    /// overwritten. Default: `false`.
    #[serde(default)]
    pub wipe: bool,
}

/// The install disk, named by its device path or chosen by its properties
/// (see [`crate::install_disk::select`]). In YAML a string is a
/// [`DiskTarget::Path`] and a mapping a [`DiskTarget::Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskTarget {
    /// A device path: `/dev/NAME` (`/dev/vda`, `/dev/nvme0n1`) or
    /// `/dev/disk/by-id/NAME`.
    Path(String),
    /// Every given property must match, and exactly one disk must.
    Selector(DiskSelector),
}

impl Default for DiskTarget {
    /// An empty path (refused by validation).
    fn default() -> Self {
        DiskTarget::Path(String::new())
    }
}

impl fmt::Display for DiskTarget {
    /// The path, or the selector's fields (`size >= 8GiB, model "QEMU"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskTarget::Path(p) => f.write_str(p),
            DiskTarget::Selector(s) => s.fmt(f),
        }
    }
}

impl Serialize for DiskTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DiskTarget::Path(p) => s.serialize_str(p),
            DiskTarget::Selector(sel) => sel.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for DiskTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DiskTargetVisitor)
    }
}

/// A string is a path, a mapping a selector (its own errors, unknown
/// fields included, keep their path and location).
struct DiskTargetVisitor;

impl<'de> serde::de::Visitor<'de> for DiskTargetVisitor {
    type Value = DiskTarget;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a device path (/dev/vda, /dev/disk/by-id/NAME) or a disk selector \
             (a mapping of size, model, serial, byId)",
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DiskTarget, E> {
        Ok(DiskTarget::Path(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<DiskTarget, E> {
        Ok(DiskTarget::Path(v))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<DiskTarget, A::Error> {
        DiskSelector::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(DiskTarget::Selector)
    }
}

impl JsonSchema for DiskTarget {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DiskTarget".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let selector = generator.subschema_for::<DiskSelector>();
        schemars::json_schema!({
            "description": "The install disk: a device path (/dev/vda, /dev/disk/by-id/NAME) \
                            or a selector that exactly one writable disk must match.",
            "anyOf": [
                {
                    "type": "string",
                    "description": "A device path: /dev/NAME or /dev/disk/by-id/NAME."
                },
                selector
            ]
        })
    }
}

/// Chooses the install disk by its properties: every given field must
/// match, at least one field must be given, and exactly one writable disk
/// must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct DiskSelector {
    /// The disk's size compared with a number and unit: `">= 8GiB"`,
    /// `"< 2TB"`, `"1.5TB"` (no operator: exactly). Default: any size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeExpr>,
    /// The disk's model as the kernel reports it (`QEMU HARDDISK`),
    /// compared exactly after trimming spaces. Default: any model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The disk's serial number, compared exactly after trimming spaces.
    /// Default: any serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// A name under `/dev/disk/by-id` (`virtio-keelson-root`,
    /// `nvme-Samsung_SSD_970_EVO_S4EWNX0R123456`, `wwn-0x5000c500a1b2c3d4`),
    /// without the directory. Default: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_id: Option<String>,
}

impl DiskSelector {
    /// True when no field is given (refused by validation).
    pub fn is_empty(&self) -> bool {
        self.size.is_none() && self.model.is_none() && self.serial.is_none() && self.by_id.is_none()
    }
}

impl fmt::Display for DiskSelector {
    /// The given fields, comma-separated:
    /// `size >= 8GiB, model "QEMU HARDDISK", serial "x", byId virtio-x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(size) = &self.size {
            parts.push(format!("size {size}"));
        }
        if let Some(model) = &self.model {
            parts.push(format!("model {model:?}"));
        }
        if let Some(serial) = &self.serial {
            parts.push(format!("serial {serial:?}"));
        }
        if let Some(by_id) = &self.by_id {
            parts.push(format!("byId {by_id}"));
        }
        if parts.is_empty() {
            f.write_str("an empty selector")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Kernel modules and arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kernel {
    /// Modules to load at boot, in order, after the built-in prerequisites.
    #[serde(default)]
    pub modules: Vec<KernelModule>,
    /// Extra kernel command-line arguments (take effect on the next boot).
    #[serde(default)]
    pub args: Vec<String>,
}

/// One kernel module to load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KernelModule {
    /// Module name as `modprobe` knows it (`[A-Za-z0-9_-]`).
    pub name: String,
    /// Module parameters, `name: value`. Default: none.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Set to `false` to drop a module from the built-in prerequisites
    /// (validation warns what will break). Default: `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

/// A file written at boot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    /// Absolute path under `/etc` or `/var`, without `..` components.
    pub path: String,
    /// The file's content, as UTF-8 text.
    pub content: String,
    /// Permission bits. Default: `"0644"`.
    #[serde(default)]
    pub mode: FileMode,
}

/// Time synchronisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Time {
    /// NTP servers (host names or addresses). Default: none.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// A swap request (always refused by validation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Swap {
    /// Whether swap is wanted.
    #[serde(default)]
    pub enabled: bool,
    /// Requested size, free text (e.g. `2G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Certificates of the machine API (mTLS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Certificates {
    /// PEM certificate of the CA that signs client (and node) certificates.
    pub ca: String,
    /// PEM private key of that CA. Needed only when the node must generate
    /// its own certificate (no `cert`/`key` given). Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
    /// PEM certificate of the node's API server. Default: absent (generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// PEM private key matching `cert`. Default: absent (generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Extra subject alternative names (DNS names or IPs) for a generated
    /// node certificate; the hostname and node addresses are always
    /// included. Default: none.
    #[serde(default)]
    pub alt_names: Vec<String>,
}

/// Networking.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// Interfaces to configure; the loopback is always up.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// DNS servers written to `/etc/resolv.conf`, in order (at most 3 are
    /// used by the C library). Default: none, or what DHCP offers.
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    /// DNS search domains. Default: none.
    #[serde(default)]
    pub search_domains: Vec<String>,
    /// Extra `/etc/hosts` entries. Default: none.
    #[serde(default)]
    pub extra_hosts: Vec<HostEntry>,
}

/// One network interface, selected by name or by MAC address (exactly one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interface {
    /// Kernel interface name (`eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// MAC address (`52:54:00:12:34:56`), case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Obtain an IPv4 address by DHCP (with lease renewal). Default: `false`.
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses with prefix length. Default: none.
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    /// Static routes via this interface. Default: none.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// MTU in bytes (68..=65535). Default: absent (kernel/DHCP default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A static route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Destination network; `0.0.0.0/0` or `::/0` for a default route.
    pub to: Cidr,
    /// Gateway; must lie inside one of the interface's static networks.
    pub via: IpAddr,
    /// Route metric. Default: absent (kernel default, 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// One `/etc/hosts` line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostEntry {
    /// The address.
    pub ip: IpAddr,
    /// Names for it.
    pub hostnames: Vec<String>,
}

/// containerd settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Containerd {
    /// TOML merged over the generated `config.toml` (tables merge
    /// recursively, values replace). The cgroup driver and CNI directories
    /// cannot be overridden here. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extra_config: String,
    /// Registry mirrors: registry host (`docker.io`) → mirror endpoints
    /// (`https://mirror.lan:5000`), tried in order. Default: none.
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// OCI/Docker image tarballs imported into containerd's `k8s.io`
    /// namespace before kubelet starts: absolute paths under `/var` or
    /// `/usr/share/keelson/images`. Every tarball shipped in the image's
    /// `/usr/share/keelson/images` is imported as well. Default: none.
    #[serde(default)]
    pub preload_images: Vec<String>,
    /// The pod sandbox (pause) image. Must be an image the node has
    /// preloaded: no registry is assumed reachable. Default:
    /// `keelson.local/pause:1`, built into every image.
    #[serde(default = "default_sandbox_image")]
    pub sandbox_image: String,
}

impl Default for Containerd {
    fn default() -> Self {
        Containerd {
            extra_config: String::new(),
            registry_mirrors: BTreeMap::new(),
            preload_images: Vec::new(),
            sandbox_image: default_sandbox_image(),
        }
    }
}

/// The pod network (CNI).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cni {
    /// Where the CNI plugin binaries are. Default: `/usr/lib/cni`, where
    /// the image installs Debian's plugins (not `/opt/cni/bin`).
    #[serde(default = "default_cni_bin_dir")]
    pub bin_dir: String,
    /// Where CNI network configs are read from. Default: `/etc/cni/net.d`.
    #[serde(default = "default_cni_conf_dir")]
    pub conf_dir: String,
    /// The built-in bridge network (bridge + host-local + portmap). Set to
    /// `null` when another CNI (a DaemonSet) writes its own config into
    /// `confDir`. Default: a bridge `cni0` on `10.244.0.0/24` with IP
    /// masquerade.
    #[serde(default = "default_bridge")]
    pub bridge: Option<CniBridge>,
}

impl Default for Cni {
    fn default() -> Self {
        Cni {
            bin_dir: default_cni_bin_dir(),
            conf_dir: default_cni_conf_dir(),
            bridge: default_bridge(),
        }
    }
}

/// The built-in bridge pod network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CniBridge {
    /// Bridge device name. Default: `cni0`.
    #[serde(default = "default_bridge_name")]
    pub name: String,
    /// Pod subnet this node allocates from. Default: `10.244.0.0/24`.
    #[serde(default = "default_pod_subnet")]
    pub subnet: Cidr,
    /// Masquerade pod traffic leaving the node. Default: `true`.
    #[serde(default = "yes")]
    pub ip_masq: bool,
}

/// kubelet settings. The cgroup driver is not a setting: it is always
/// `cgroupfs`, matching containerd (there is no systemd on a node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubelet {
    /// Run kubelet at all. Default: `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The kubelet binary. Default: `/usr/bin/kubelet` (the image's).
    #[serde(default = "default_kubelet_binary")]
    pub binary: String,
    /// The API server URL (`https://host:6443`). Default: absent (kubelet
    /// runs standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// PEM CA bundle that signs the API server's certificate. Required with
    /// `apiServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Credentials for the API server: a bearer token (e.g. a bootstrap
    /// token `abcdef.0123456789abcdef`) or a full kubeconfig. Exactly one
    /// with `apiServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A complete kubeconfig (YAML text) used instead of `apiServer` +
    /// `token`. Default: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// How the node IP is chosen. Default: the first address of the first
    /// configured interface (static, else DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<NodeIp>,
    /// Node labels registered with the node. Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints registered with the node. Default: none.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Cluster DNS server addresses. Default: none.
    #[serde(default)]
    pub cluster_dns: Vec<IpAddr>,
    /// Cluster domain. Default: `cluster.local`.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// How often kubelet posts node status. Default: `10s`.
    #[serde(default = "default_node_status_update_frequency")]
    pub node_status_update_frequency: Duration,
    /// Extra command-line flags, `flag: value` without the leading `--`.
    /// Flags Keelson owns (cgroup driver, runtime endpoints, swap) are
    /// refused. Default: none.
    #[serde(default)]
    pub extra_args: BTreeMap<String, String>,
}

impl Default for Kubelet {
    fn default() -> Self {
        Kubelet {
            enabled: true,
            binary: default_kubelet_binary(),
            api_server: None,
            ca_cert: None,
            token: None,
            kubeconfig: None,
            node_ip: None,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cluster_dns: Vec::new(),
            cluster_domain: default_cluster_domain(),
            node_status_update_frequency: default_node_status_update_frequency(),
            extra_args: BTreeMap::new(),
        }
    }
}

/// How kubelet's `--node-ip` is chosen: exactly one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeIp {
    /// This exact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The first node address inside this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Cidr>,
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value. Default: empty.
    #[serde(default)]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// The effect of a taint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    /// Do not schedule new pods.
    NoSchedule,
    /// Avoid scheduling new pods.
    PreferNoSchedule,
    /// Evict running pods that do not tolerate it.
    NoExecute,
}

/// The node's own access to the Kubernetes API for cordon/drain on
/// shutdown (not kubelet's identity: kubelet may not evict pods).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubernetes {
    /// API server URL. Default: kubelet's `apiServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// PEM CA of the API server. Default: kubelet's `caCert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Bearer token of a role that may get/patch its node, list its pods
    /// and create evictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A kubeconfig used instead of `endpoint`/`token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Bound on the drain step; `0s` disables draining. Default: `5m`.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Duration,
}

/// Ordered-shutdown deadlines. Each step is bounded by its own timeout and
/// the sequence by `total`: the sum of the step timeouts must fit inside
/// `total`. The drain (when `kubernetes` is configured) runs first and is
/// bounded separately by `kubernetes.drainTimeout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Shutdown {
    /// Wait for kubelet after SIGTERM before SIGKILL. Default: `20s`.
    #[serde(default = "default_kubelet_stop")]
    pub kubelet: Duration,
    /// Stopping all pod sandboxes and containers. Default: `30s`.
    #[serde(default = "default_pods_stop")]
    pub pods: Duration,
    /// Wait for containerd after SIGTERM before SIGKILL. Default: `10s`.
    #[serde(default = "default_containerd_stop")]
    pub containerd: Duration,
    /// Wait for all remaining processes after SIGTERM. Default: `10s`.
    #[serde(default = "default_processes_stop")]
    pub processes: Duration,
    /// Unmounting (then read-only remounts) and sync. Default: `15s`.
    #[serde(default = "default_unmount")]
    pub unmount: Duration,
    /// The whole sequence, after which the node powers off regardless.
    /// Default: `2m`.
    #[serde(default = "default_total")]
    pub total: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            kubelet: default_kubelet_stop(),
            pods: default_pods_stop(),
            containerd: default_containerd_stop(),
            processes: default_processes_stop(),
            unmount: default_unmount(),
            total: default_total(),
        }
    }
}

/// The health gate of an A/B upgrade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upgrade {
    /// How long init, apid, containerd and kubelet must stay running on a
    /// new slot before it becomes the default. Default: `60s`.
    #[serde(default = "default_healthy_after")]
    pub healthy_after: Duration,
    /// If the new slot is not healthy by then, reboot into the old one.
    /// Must exceed `healthyAfter`. Default: `5m`.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: Duration,
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade {
            healthy_after: default_healthy_after(),
            health_timeout: default_health_timeout(),
        }
    }
}

/// The machine API listener (served by apid).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Api {
    /// TCP port. Default: `50000`.
    #[serde(default = "default_api_port")]
    pub port: u16,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            port: default_api_port(),
        }
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_sandbox_image() -> String {
    "keelson.local/pause:1".into()
}
fn default_cni_bin_dir() -> String {
    "/usr/lib/cni".into()
}
fn default_cni_conf_dir() -> String {
    "/etc/cni/net.d".into()
}
fn default_bridge() -> Option<CniBridge> {
    Some(CniBridge {
        name: default_bridge_name(),
        subnet: default_pod_subnet(),
        ip_masq: true,
    })
}
fn default_bridge_name() -> String {
    "cni0".into()
}
fn default_pod_subnet() -> Cidr {
    Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(10, 244, 0, 0)),
        prefix: 24,
    }
}
fn default_kubelet_binary() -> String {
    "/usr/bin/kubelet".into()
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}
fn default_node_status_update_frequency() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_kubelet_stop() -> Duration {
    Duration::from_secs(20)
}
fn default_pods_stop() -> Duration {
    Duration::from_secs(30)
}
fn default_containerd_stop() -> Duration {
    Duration::from_secs(10)
}
fn default_processes_stop() -> Duration {
    Duration::from_secs(10)
}
fn default_unmount() -> Duration {
    Duration::from_secs(15)
}
fn default_total() -> Duration {
    Duration::from_secs(120)
}
fn default_healthy_after() -> Duration {
    Duration::from_secs(60)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_api_port() -> u16 {
    50000
}
