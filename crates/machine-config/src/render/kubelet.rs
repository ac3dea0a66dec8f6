//! kubelet's files and command line (kubelet 1.20): a
//! `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`), its kubeconfig
//! and the API server's CA, and the flags that must stay on the command
//! line in 1.20 (runtime endpoints, node identity, directories).
//!
//! The cgroup driver is always `cgroupfs` (containerd's runc runs with
//! `SystemdCgroup = false`: there is no systemd on a node) and swap is
//! never allowed. With no `kubelet.apiServer` and no `kubelet.kubeconfig`
//! kubelet runs standalone: no kubeconfig, and since webhook
//! authentication and authorization need an API server, its API accepts no
//! one (anonymous off, no authenticator).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{
    node_ip, NodeFacts, RenderError, RenderedFile, CONTAINERD_SOCKET, KUBELET_CERT_DIR,
    KUBELET_CONFIG, KUBELET_KUBECONFIG, KUBELET_ROOT_DIR, KUBERNETES_CA, RESOLV_CONF,
};
use crate::schema::{Kubelet, MachineConfig, TaintEffect};

/// kubelet's files (config, kubeconfig and CA when connected) and its
/// command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletFiles {
    /// Files to write before starting kubelet.
    pub files: Vec<RenderedFile>,
    /// The full command line after the binary (`kubelet.binary`).
    pub args: Vec<String>,
}

/// Flags Keelson sets or rules out itself, which `kubelet.extraArgs` may
/// not repeat, each with why (or which config field to use instead). The
/// renderer refuses them and validation reports them from this one table.
pub const OWNED_FLAGS: &[(&str, &str)] = &[
    ("config", "Keelson renders kubelet's config file itself"),
    (
        "kubeconfig",
        "set kubelet.kubeconfig, or kubelet.apiServer with a token",
    ),
    (
        "bootstrap-kubeconfig",
        "set kubelet.kubeconfig, or kubelet.apiServer with a token",
    ),
    (
        "container-runtime",
        "Keelson always runs kubelet against its containerd",
    ),
    (
        "container-runtime-endpoint",
        "Keelson always runs kubelet against its containerd socket",
    ),
    (
        "image-service-endpoint",
        "Keelson always runs kubelet against its containerd socket",
    ),
    (
        "cgroup-driver",
        "the cgroup driver is always cgroupfs, matching containerd",
    ),
    ("fail-swap-on", "swap is never enabled on a Keelson node"),
    ("hostname-override", "set machine.hostname"),
    ("node-ip", "set kubelet.nodeIp"),
    (
        "root-dir",
        "kubelet's state lives in /var/lib/kubelet on the VAR partition",
    ),
    (
        "cert-dir",
        "Keelson places kubelet's certificates in /var/lib/kubelet/pki",
    ),
    ("node-labels", "set kubelet.labels"),
    ("register-with-taints", "set kubelet.taints"),
    ("cluster-dns", "set kubelet.clusterDns"),
    ("cluster-domain", "set kubelet.clusterDomain"),
    (
        "node-status-update-frequency",
        "set kubelet.nodeStatusUpdateFrequency",
    ),
    (
        "resolv-conf",
        "Keelson writes /etc/resolv.conf from the network section",
    ),
    (
        "pod-infra-container-image",
        "set containerd.sandboxImage (containerd's setting is the one that counts)",
    ),
    ("network-plugin", "Keelson always uses CNI"),
    ("cni-bin-dir", "set cni.binDir"),
    ("cni-conf-dir", "set cni.confDir"),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: &'static str,
    kind: &'static str,
    cgroup_driver: &'static str,
    fail_swap_on: bool,
    #[serde(rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    cluster_dns: Vec<String>,
    cluster_domain: String,
    node_status_update_frequency: String,
    resolv_conf: &'static str,
    read_only_port: u16,
    authentication: Authentication,
    authorization: Authorization,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authentication {
    anonymous: Enabled,
    webhook: Enabled,
    #[serde(skip_serializing_if = "Option::is_none")]
    x509: Option<X509>,
}

#[derive(Serialize)]
struct Enabled {
    enabled: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct X509 {
    #[serde(rename = "clientCAFile")]
    client_ca_file: String,
}

#[derive(Serialize)]
struct Authorization {
    mode: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<ClusterEntry<'a>>; 1],
    users: [Named<UserEntry<'a>>; 1],
    contexts: [Named<ContextEntry>; 1],
    current_context: &'static str,
}

#[derive(Serialize)]
struct Named<T> {
    name: &'static str,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry<'a> {
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<&'static str>,
}

#[derive(Serialize)]
struct UserEntry<'a> {
    user: User<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct ContextEntry {
    context: Context,
}

#[derive(Serialize)]
struct Context {
    cluster: &'static str,
    user: &'static str,
}

/// The part of a user's kubeconfig read to find the API server's CA.
#[derive(Deserialize)]
struct ForeignKubeconfig {
    #[serde(default)]
    clusters: Vec<ForeignClusterEntry>,
}

#[derive(Deserialize)]
struct ForeignClusterEntry {
    cluster: ForeignCluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ForeignCluster {
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
}

/// How kubelet reaches the API server, decided from the config.
enum Connection<'a> {
    /// No API server: kubelet runs standalone.
    Standalone,
    /// A kubeconfig we write, and the CA file kubelet also trusts for
    /// client certificates (if any).
    Connected {
        kubeconfig: RenderedFile,
        ca: Option<CaSource<'a>>,
    },
}

/// Where the API server's CA comes from.
enum CaSource<'a> {
    /// PEM text we write to `/etc/kubernetes/pki/ca.crt`.
    Pem(std::borrow::Cow<'a, str>),
    /// A path the user's kubeconfig refers to.
    Path(String),
}

/// Renders kubelet's files and command line. Errors: an `extraArgs` flag
/// Keelson owns ([`OWNED_FLAGS`]), `apiServer` without `token`, or a
/// kubeconfig whose embedded CA is not base64.
pub fn render(cfg: &MachineConfig, facts: &NodeFacts) -> Result<KubeletFiles, RenderError> {
    let k = &cfg.kubelet;
    for flag in k.extra_args.keys() {
        let bare = flag.trim_start_matches('-');
        if let Some((_, why)) = OWNED_FLAGS.iter().find(|(f, _)| *f == bare) {
            return Err(RenderError::KubeletFlagOwned {
                flag: flag.clone(),
                why,
            });
        }
    }
    let connection = connection(k)?;
    let mut files = Vec::new();
    let mut client_ca = None;
    let connected = matches!(connection, Connection::Connected { .. });
    if let Connection::Connected { kubeconfig, ca } = connection {
        match ca {
            Some(CaSource::Pem(pem)) => {
                files.push(RenderedFile::new(KUBERNETES_CA, with_newline(&pem), 0o644));
                client_ca = Some(KUBERNETES_CA.to_string());
            }
            Some(CaSource::Path(path)) => client_ca = Some(path),
            None => {}
        }
        files.push(kubeconfig);
    }
    let config = KubeletConfiguration {
        api_version: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        cgroup_driver: "cgroupfs",
        fail_swap_on: true,
        cluster_dns: k.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
        cluster_domain: k.cluster_domain.clone(),
        node_status_update_frequency: k.node_status_update_frequency.to_string(),
        resolv_conf: RESOLV_CONF,
        read_only_port: 0,
        authentication: Authentication {
            anonymous: Enabled { enabled: false },
            webhook: Enabled { enabled: connected },
            x509: client_ca.map(|client_ca_file| X509 { client_ca_file }),
        },
        authorization: Authorization {
            mode: if connected { "Webhook" } else { "AlwaysAllow" },
        },
    };
    let config_yaml = yaml("kubelet.yaml", &config)?;
    files.insert(0, RenderedFile::new(KUBELET_CONFIG, config_yaml, 0o644));
    Ok(KubeletFiles {
        files,
        args: args(cfg, facts, connected),
    })
}

fn connection(k: &Kubelet) -> Result<Connection<'_>, RenderError> {
    if let Some(user) = &k.kubeconfig {
        let ca = match &k.ca_cert {
            Some(pem) => Some(CaSource::Pem(pem.as_str().into())),
            None => foreign_ca(user)?,
        };
        return Ok(Connection::Connected {
            kubeconfig: RenderedFile::new(KUBELET_KUBECONFIG, with_newline(user), 0o600),
            ca,
        });
    }
    let Some(server) = &k.api_server else {
        return Ok(Connection::Standalone);
    };
    let Some(token) = &k.token else {
        return Err(RenderError::KubeletMissingToken {
            api_server: server.clone(),
        });
    };
    let doc = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: "keelson",
            body: ClusterEntry {
                cluster: Cluster {
                    server,
                    certificate_authority: k.ca_cert.as_ref().map(|_| KUBERNETES_CA),
                },
            },
        }],
        users: [Named {
            name: "kubelet",
            body: UserEntry {
                user: User { token },
            },
        }],
        contexts: [Named {
            name: "keelson",
            body: ContextEntry {
                context: Context {
                    cluster: "keelson",
                    user: "kubelet",
                },
            },
        }],
        current_context: "keelson",
    };
    Ok(Connection::Connected {
        kubeconfig: RenderedFile::new(KUBELET_KUBECONFIG, yaml("kubeconfig", &doc)?, 0o600),
        ca: k
            .ca_cert
            .as_ref()
            .map(|pem| CaSource::Pem(pem.as_str().into())),
    })
}

/// The CA of the first cluster of a user's kubeconfig: embedded data
/// (decoded), or the file it names. A kubeconfig that does not parse is
/// kubelet's to report; it simply yields no CA here.
fn foreign_ca(text: &str) -> Result<Option<CaSource<'static>>, RenderError> {
    let Ok(doc) = serde_saphyr::from_str::<ForeignKubeconfig>(text) else {
        return Ok(None);
    };
    let Some(first) = doc.clusters.into_iter().next() else {
        return Ok(None);
    };
    if let Some(data) = first.cluster.certificate_authority_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| RenderError::KubeconfigCa {
                message: e.to_string(),
            })?;
        let pem = String::from_utf8(bytes).map_err(|_| RenderError::KubeconfigCa {
            message: "decoded bytes are not PEM text".into(),
        })?;
        return Ok(Some(CaSource::Pem(pem.into())));
    }
    Ok(first.cluster.certificate_authority.map(CaSource::Path))
}

/// The node object's name: the hostname the network gave, else the
/// config's (kubelet's `--hostname-override`, and what a drain cordons).
pub fn node_name<'a>(cfg: &'a MachineConfig, facts: &'a NodeFacts) -> &'a str {
    if facts.hostname.is_empty() {
        &cfg.machine.hostname
    } else {
        &facts.hostname
    }
}

/// The command line, in this order: config, kubeconfig (when connected),
/// runtime endpoints, identity (hostname, node IP when known),
/// directories, labels, taints, then `extraArgs` sorted by flag.
fn args(cfg: &MachineConfig, facts: &NodeFacts, connected: bool) -> Vec<String> {
    let k = &cfg.kubelet;
    let endpoint = format!("unix://{CONTAINERD_SOCKET}");
    let mut out = vec![format!("--config={KUBELET_CONFIG}")];
    if connected {
        out.push(format!("--kubeconfig={KUBELET_KUBECONFIG}"));
    }
    out.push("--container-runtime=remote".into());
    out.push(format!("--container-runtime-endpoint={endpoint}"));
    out.push(format!("--image-service-endpoint={endpoint}"));
    out.push(format!("--hostname-override={}", node_name(cfg, facts)));
    if let Some(ip) = node_ip(cfg, facts) {
        out.push(format!("--node-ip={ip}"));
    }
    out.push(format!("--root-dir={KUBELET_ROOT_DIR}"));
    out.push(format!("--cert-dir={KUBELET_CERT_DIR}"));
    if !k.labels.is_empty() {
        let labels: Vec<String> = k.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(format!("--node-labels={}", labels.join(",")));
    }
    if !k.taints.is_empty() {
        let taints: Vec<String> = k
            .taints
            .iter()
            .map(|t| {
                let effect = match t.effect {
                    TaintEffect::NoSchedule => "NoSchedule",
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                    TaintEffect::NoExecute => "NoExecute",
                };
                if t.value.is_empty() {
                    format!("{}:{effect}", t.key)
                } else {
                    format!("{}={}:{effect}", t.key, t.value)
                }
            })
            .collect();
        out.push(format!("--register-with-taints={}", taints.join(",")));
    }
    for (flag, value) in &k.extra_args {
        out.push(format!("--{}={value}", flag.trim_start_matches('-')));
    }
    out
}

fn yaml<T: Serialize>(what: &'static str, value: &T) -> Result<String, RenderError> {
    serde_saphyr::to_string(value).map_err(|e| RenderError::Serialize {
        what,
        message: e.to_string(),
    })
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}
