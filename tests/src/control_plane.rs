//! A real Kubernetes control plane on loopback for the scenarios: Debian's
//! `etcd`, and kube-apiserver, kube-controller-manager and kube-scheduler
//! 1.20.2 from `out/kubernetes/bin/`, with a PKI generated per start
//! ([`crate::pki`]). Everything lives in one work directory (certificates,
//! kubeconfigs, the static token file, etcd's data, one log per
//! component); every port is a free loopback port picked at start.
//!
//! Nodes authenticate with static tokens (user `system:node:<name>`, group
//! `system:nodes`) and are authorized by the Node authorizer. A guest VM
//! reaches the API server through QEMU's `guestfwd` and `keelson-relay`
//! at [`GUEST_API_SERVER`]; the serving certificate carries that address.
//!
//! [`ControlPlane::start`] returns once the API server is ready, the
//! controller manager has created the `default` ServiceAccount and the
//! scheduler holds its lease. Dropping the value stops every process
//! (scheduler first, etcd last); none is ever left running.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::artifacts::{self, MissingArtifact};
use crate::command::{self, CommandError};
use crate::pki::{self, Ca, PkiError};
use crate::process::{ManagedChild, ProcessError};

/// The address and port a guest uses for the API server (through
/// `guestfwd`).
pub const GUEST_API_SERVER: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 2, 100), 6443);

/// The service network; its first address is the `kubernetes` service.
const SERVICE_CIDR: &str = "10.96.0.0/16";

/// Starting or querying the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// A binary is missing.
    #[error(transparent)]
    Missing(#[from] MissingArtifact),
    /// Certificates could not be generated.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A component could not be started.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// kubectl failed.
    #[error(transparent)]
    Kubectl(#[from] CommandError),
    /// A file in the work directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No free loopback port.
    #[error("cannot pick a free loopback port: {0}")]
    Port(std::io::Error),
    /// A component exited or did not become healthy in time.
    #[error("{component} is not healthy after {waited:?}: {reason}; its log {log}:\n{tail}")]
    Unhealthy {
        /// The component.
        component: String,
        /// How long it was given.
        waited: Duration,
        /// What was checked and what was seen.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The cluster did not reach an expected state in time.
    #[error("{what} not reached within {waited:?}; last state: {last}")]
    Timeout {
        /// The state waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// What was seen last.
        last: String,
    },
    /// kubectl printed JSON this module cannot read.
    #[error("cannot read kubectl's JSON for {what}: {reason}")]
    Json {
        /// The object.
        what: String,
        /// The cause.
        reason: String,
    },
}

/// What the API server says about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `status.addresses` of type `InternalIP`.
    pub internal_ip: Option<String>,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// `status.nodeInfo.osImage`.
    pub os_image: String,
    /// `status.nodeInfo.containerRuntimeVersion`.
    pub container_runtime: String,
}

/// What the API server says about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// `status.phase` (`Pending`, `Running`, …).
    pub phase: String,
    /// `status.podIP`.
    pub pod_ip: Option<String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// A one-line summary of the container states (for messages).
    pub containers: String,
}

/// A running test control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    kubectl: PathBuf,
    admin_kubeconfig: PathBuf,
    api_port: u16,
    ca_pem: String,
    node_tokens: BTreeMap<String, String>,
    /// Started components in start order; stopped in reverse.
    components: Vec<ManagedChild>,
}

impl ControlPlane {
    /// Generates the PKI and tokens for `node_names` in `dir`, starts etcd,
    /// the API server, the controller manager and the scheduler, and waits
    /// until all are working (bounded; a failure carries the component's
    /// log tail).
    pub fn start(dir: &Path, node_names: &[&str]) -> Result<ControlPlane, ControlPlaneError> {
        let apiserver_bin = artifacts::kubernetes_binary("kube-apiserver")?;
        let kcm_bin = artifacts::kubernetes_binary("kube-controller-manager")?;
        let scheduler_bin = artifacts::kubernetes_binary("kube-scheduler")?;
        let kubectl = artifacts::kubectl()?;
        let etcd_bin = artifacts::host_tool("/usr/bin/etcd", "etcd-server")?;

        let write = |name: &str, text: &str| -> Result<PathBuf, ControlPlaneError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| ControlPlaneError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };

        // PKI.
        let ca = Ca::new("keelson-test-ca")?;
        let ca_pem = ca.cert_pem();
        let ca_crt = write("ca.crt", &ca_pem)?;
        let ca_key = write("ca.key", ca.key_pem())?;
        let guest_ip = GUEST_API_SERVER.0.to_string();
        let serving = ca.issue(
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                &guest_ip,
                "10.96.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            false,
        )?;
        let apiserver_crt = write("apiserver.crt", &serving.cert_pem)?;
        let apiserver_key = write("apiserver.key", &serving.key_pem)?;
        let (sa_private, sa_public) = pki::service_account_key()?;
        let sa_key = write("service-account.key", &sa_private)?;
        let sa_pub = write("service-account.pub", &sa_public)?;

        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let client_kubeconfig = |name: &str, user: &str, group: Option<&str>| {
            let pair = ca.issue(user, group, &[], true)?;
            let crt = write(&format!("{name}.crt"), &pair.cert_pem)?;
            let key = write(&format!("{name}.key"), &pair.key_pem)?;
            write(
                &format!("{name}.kubeconfig"),
                &kubeconfig(&server, &ca_crt, &crt, &key),
            )
        };
        let admin_kubeconfig = client_kubeconfig("admin", "keelson-admin", Some("system:masters"))?;
        let kcm_kubeconfig =
            client_kubeconfig("controller-manager", "system:kube-controller-manager", None)?;
        let scheduler_kubeconfig = client_kubeconfig("scheduler", "system:kube-scheduler", None)?;

        // Node tokens.
        let mut node_tokens = BTreeMap::new();
        let mut csv = String::new();
        for name in node_names {
            let token = random_token()?;
            csv.push_str(&format!(
                "{token},system:node:{name},system:node:{name},\"system:nodes\"\n"
            ));
            node_tokens.insert(name.to_string(), token);
        }
        let token_file = write("tokens.csv", &csv)?;

        let mut cp = ControlPlane {
            dir: dir.to_path_buf(),
            kubectl,
            admin_kubeconfig: admin_kubeconfig.clone(),
            api_port,
            ca_pem,
            node_tokens,
            components: Vec::new(),
        };

        // etcd.
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(etcd_bin);
        etcd.arg("--name=keelson-test")
            .arg(format!("--data-dir={}", dir.join("etcd-data").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=keelson-test={peer_url}"))
            .arg("--log-level=warn");
        cp.spawn("etcd", etcd)?;
        cp.wait_healthy("etcd", Duration::from_secs(30), |_| etcd_health(etcd_port))?;

        // API server.
        let mut apiserver = Command::new(apiserver_bin);
        apiserver
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--advertise-address={guest_ip}"))
            .arg(format!("--secure-port={api_port}"))
            .arg(format!(
                "--cert-dir={}",
                dir.join("apiserver-certs").display()
            ))
            .arg(path_flag("--tls-cert-file", &apiserver_crt))
            .arg(path_flag("--tls-private-key-file", &apiserver_key))
            .arg(path_flag("--client-ca-file", &ca_crt))
            .arg(path_flag("--token-auth-file", &token_file))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(path_flag("--service-account-key-file", &sa_pub))
            .arg(path_flag("--service-account-signing-key-file", &sa_key))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg("--allow-privileged=true")
            .arg("--profiling=false");
        cp.spawn("kube-apiserver", apiserver)?;
        cp.wait_healthy("kube-apiserver", Duration::from_secs(180), |cp| {
            cp.kubectl(&["get", "--raw", "/readyz"])
                .map_err(|e| e.to_string())
                .and_then(|out| if out.trim() == "ok" { Ok(()) } else { Err(out) })
        })?;

        // Controller manager and scheduler.
        let mut kcm = Command::new(kcm_bin);
        kcm.arg(path_flag("--kubeconfig", &kcm_kubeconfig))
            .arg("--bind-address=127.0.0.1")
            .arg("--port=0")
            .arg("--secure-port=0")
            .arg(path_flag("--service-account-private-key-file", &sa_key))
            .arg(path_flag("--root-ca-file", &ca_crt))
            .arg(path_flag("--cluster-signing-cert-file", &ca_crt))
            .arg(path_flag("--cluster-signing-key-file", &ca_key))
            .arg("--use-service-account-credentials=true")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--profiling=false");
        cp.spawn("kube-controller-manager", kcm)?;
        let mut scheduler = Command::new(scheduler_bin);
        scheduler
            .arg(path_flag("--kubeconfig", &scheduler_kubeconfig))
            .arg("--bind-address=127.0.0.1")
            .arg("--port=0")
            .arg("--secure-port=0")
            .arg("--profiling=false");
        cp.spawn("kube-scheduler", scheduler)?;

        cp.wait_healthy("kube-controller-manager", Duration::from_secs(120), |cp| {
            cp.kubectl(&[
                "-n",
                "default",
                "get",
                "serviceaccount",
                "default",
                "-o",
                "name",
            ])
            .map(|_| ())
            .map_err(|e| format!("no default ServiceAccount yet ({e})"))
        })?;
        cp.wait_healthy("kube-scheduler", Duration::from_secs(120), |cp| {
            let holder = cp
                .kubectl(&[
                    "-n",
                    "kube-system",
                    "get",
                    "lease",
                    "kube-scheduler",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ])
                .map_err(|e| format!("no kube-scheduler lease yet ({e})"))?;
            if holder.trim().is_empty() {
                Err("the kube-scheduler lease has no holder".into())
            } else {
                Ok(())
            }
        })?;
        tracing::info!(api_port, dir = %dir.display(), "control plane ready");
        Ok(cp)
    }

    fn spawn(&mut self, name: &str, cmd: Command) -> Result<(), ControlPlaneError> {
        let log = self.dir.join(format!("{name}.log"));
        self.components.push(ManagedChild::spawn(name, cmd, &log)?);
        Ok(())
    }

    /// Polls `check` every 500 ms until it passes, the component exits or
    /// `timeout` passes.
    fn wait_healthy(
        &mut self,
        component: &str,
        timeout: Duration,
        check: impl Fn(&ControlPlane) -> Result<(), String>,
    ) -> Result<(), ControlPlaneError> {
        let start = Instant::now();
        loop {
            let last = match check(self) {
                Ok(()) => {
                    tracing::info!(
                        component,
                        took_ms = start.elapsed().as_millis() as u64,
                        "healthy"
                    );
                    return Ok(());
                }
                Err(reason) => reason,
            };
            let child = self.components.iter_mut().find(|c| c.name() == component);
            if let Some(child) = child {
                if let Some(status) = child.try_exit()? {
                    return Err(ControlPlaneError::Unhealthy {
                        component: component.to_string(),
                        waited: start.elapsed(),
                        reason: format!("exited ({status}); last check: {last}"),
                        log: child.log_path().to_path_buf(),
                        tail: child.log_tail(30),
                    });
                }
            }
            if start.elapsed() >= timeout {
                let (log, tail) = self
                    .components
                    .iter()
                    .find(|c| c.name() == component)
                    .map(|c| (c.log_path().to_path_buf(), c.log_tail(30)))
                    .unwrap_or_default();
                return Err(ControlPlaneError::Unhealthy {
                    component: component.to_string(),
                    waited: start.elapsed(),
                    reason: last,
                    log,
                    tail,
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The work directory (certificates, kubeconfigs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server's port on 127.0.0.1.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The PEM CA certificate that signs the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token of node `name` (one of the names given to
    /// [`ControlPlane::start`]).
    pub fn node_token(&self, name: &str) -> Option<&str> {
        self.node_tokens.get(name).map(String::as_str)
    }

    /// The admin kubeconfig (group `system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The process ids of the running components (etcd first).
    pub fn pids(&self) -> Vec<u32> {
        self.components.iter().map(ManagedChild::pid).collect()
    }

    /// Runs kubectl as the admin and returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, CommandError> {
        command::run(
            Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.admin_kubeconfig)
                .arg("--request-timeout=20s")
                .args(args),
        )
    }

    /// Runs kubectl with only a bearer token (no client certificate), as a
    /// node or other token user would.
    pub fn kubectl_as_token(&self, token: &str, args: &[&str]) -> Result<String, CommandError> {
        command::run(
            Command::new(&self.kubectl)
                .arg(format!("--server=https://127.0.0.1:{}", self.api_port))
                .arg(format!(
                    "--certificate-authority={}",
                    self.dir.join("ca.crt").display()
                ))
                .arg(format!("--token={token}"))
                .arg("--kubeconfig=/dev/null")
                .arg("--request-timeout=20s")
                .args(args),
        )
    }

    /// The node `name` as the API server sees it; `None` if it has not
    /// registered.
    pub fn node(&self, name: &str) -> Result<Option<NodeInfo>, ControlPlaneError> {
        let out = match self.kubectl(&["get", "node", name, "-o", "json"]) {
            Ok(out) => out,
            Err(CommandError::Failed { stderr, .. }) if stderr.contains("NotFound") => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let v = parse_json(&format!("node {name}"), &out)?;
        let status = &v["status"];
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let internal_ip = status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .map(str::to_string);
        let info = &status["nodeInfo"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(Some(NodeInfo {
            ready,
            internal_ip,
            kubelet_version: text(&info["kubeletVersion"]),
            os_image: text(&info["osImage"]),
            container_runtime: text(&info["containerRuntimeVersion"]),
        }))
    }

    /// Whether node `name` is registered and `Ready`.
    pub fn node_ready(&self, name: &str) -> Result<bool, ControlPlaneError> {
        Ok(self.node(name)?.is_some_and(|n| n.ready))
    }

    /// Waits until node `name` is `Ready`; returns what the API server says
    /// about it.
    pub fn wait_node_ready(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<NodeInfo, ControlPlaneError> {
        let start = Instant::now();
        loop {
            let last = match self.node(name) {
                Ok(Some(node)) if node.ready => return Ok(node),
                Ok(Some(node)) => format!("registered, not Ready: {node:?}"),
                Ok(None) => "not registered".to_string(),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= timeout {
                return Err(ControlPlaneError::Timeout {
                    what: format!("node {name} Ready"),
                    waited: start.elapsed(),
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates the objects in `yaml` (`kubectl create -f`).
    pub fn create(&self, yaml: &str) -> Result<String, ControlPlaneError> {
        let path = self.dir.join(format!("object-{}.yaml", random_token()?));
        std::fs::write(&path, yaml).map_err(|source| ControlPlaneError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(self.kubectl(&["create", "-f", &path.to_string_lossy()])?)
    }

    /// The pod `name` in namespace `default`.
    pub fn pod(&self, name: &str) -> Result<PodInfo, ControlPlaneError> {
        let out = self.kubectl(&["-n", "default", "get", "pod", name, "-o", "json"])?;
        let v = parse_json(&format!("pod {name}"), &out)?;
        let containers = v["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{}: {}", c["name"].as_str().unwrap_or("?"), c["state"]))
            .collect::<Vec<_>>()
            .join("; ");
        Ok(PodInfo {
            phase: v["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            pod_ip: v["status"]["podIP"].as_str().map(str::to_string),
            node_name: v["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            containers,
        })
    }

    /// Waits until pod `name` (namespace `default`) is `Running`; fails at
    /// once if it ends `Failed` or `Succeeded`. Timeouts include the pod's
    /// events.
    pub fn wait_pod_running(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<PodInfo, ControlPlaneError> {
        let start = Instant::now();
        loop {
            let pod = self.pod(name)?;
            match pod.phase.as_str() {
                "Running" => return Ok(pod),
                "Failed" | "Succeeded" => {
                    return Err(ControlPlaneError::Timeout {
                        what: format!("pod {name} Running"),
                        waited: start.elapsed(),
                        last: format!("{pod:?}; events: {}", self.events_for(name)),
                    })
                }
                _ => {}
            }
            if start.elapsed() >= timeout {
                return Err(ControlPlaneError::Timeout {
                    what: format!("pod {name} Running"),
                    waited: start.elapsed(),
                    last: format!("{pod:?}; events: {}", self.events_for(name)),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The events about object `name` in `default`, one per line (for
    /// messages; empty when they cannot be read).
    pub fn events_for(&self, name: &str) -> String {
        self.kubectl(&[
            "-n",
            "default",
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
            "--no-headers",
        ])
        .unwrap_or_default()
    }

    /// Stops every component (scheduler first, etcd last).
    /// The token the token controller put in the ServiceAccount token
    /// Secret `namespace/name` (decoded), waiting up to `timeout` for it.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<String, ControlPlaneError> {
        use base64::Engine as _;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let data = self
                .kubectl(&[
                    "-n",
                    namespace,
                    "get",
                    "secret",
                    name,
                    "-o",
                    "jsonpath={.data.token}",
                ])
                .unwrap_or_default();
            if !data.trim().is_empty() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| ControlPlaneError::Json {
                        what: format!("secret {namespace}/{name}"),
                        reason: e.to_string(),
                    })?;
                return Ok(String::from_utf8_lossy(&bytes).into_owned());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ControlPlaneError::Timeout {
                    what: format!("a token in secret {namespace}/{name}"),
                    waited: timeout,
                    last: "no token yet".into(),
                });
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Stops one component (`kube-apiserver`, ...), leaving the others
    /// running: a scenario's way to make the API server unreachable.
    pub fn stop_component(&mut self, name: &str) -> bool {
        match self.components.iter().position(|c| c.name() == name) {
            Some(i) => {
                let mut child = self.components.remove(i);
                child.stop(Duration::from_secs(10));
                true
            }
            None => false,
        }
    }

    pub fn stop(&mut self) {
        while let Some(mut child) = self.components.pop() {
            child.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path_flag(flag: &str, path: &Path) -> String {
    format!("{flag}={}", path.display())
}

/// A kubeconfig for a client-certificate user of the test cluster.
fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson-test\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: keelson-test\n  context:\n    cluster: keelson-test\n    user: user\ncurrent-context: keelson-test\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// A free TCP port on 127.0.0.1 for a server this process starts: a random
/// one below the kernel's ephemeral range (20000-32767), checked by binding
/// it, never one this process handed out before. Two scenarios start their
/// control planes at the same moment in two lanes: asking the kernel for
/// port 0 in both gave them the same port once (etcd: "address already in
/// use"); random picks from a range the kernel does not hand out make that
/// unlikely.
pub fn free_port() -> Result<u16, ControlPlaneError> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..256 {
        let mut b = [0u8; 2];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(ControlPlaneError::Port)?;
        let port = 20000 + u16::from_le_bytes(b) % 12768;
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return Ok(port);
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(ControlPlaneError::Port)?;
    Ok(listener
        .local_addr()
        .map_err(ControlPlaneError::Port)?
        .port())
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> Result<String, ControlPlaneError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| ControlPlaneError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// etcd's `/health` over plain HTTP on loopback.
fn etcd_health(port: u16) -> Result<(), String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    if reply.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!(
            "/health said {:?}",
            reply.lines().last().unwrap_or_default()
        ))
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, ControlPlaneError> {
    serde_json::from_str(text).map_err(|e| ControlPlaneError::Json {
        what: what.to_string(),
        reason: e.to_string(),
    })
}
