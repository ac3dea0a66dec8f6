//! A Keelson node booted next to a test control plane: the pieces of this
//! crate put together, shared by the boot scenario, `demo` and `bench`.
//!
//! [`Cluster::start`] makes a work directory (removed on drop unless
//! `KEELSON_KEEP_WORK=1`), starts the [`ControlPlane`] with a token for the
//! node, writes the node's config ([`crate::node_config`]) into a copy of
//! `out/keelson.raw` ([`TestDisk`]) and boots it with the API server
//! reachable from the guest at [`GUEST_API_SERVER`] through `keelson-relay`
//! and the machine API (port 50000) forwarded to a free host port. The VM is
//! dropped before the control plane.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use machine_config::MachineConfig;

use crate::artifacts::{self, MissingArtifact};
use crate::control_plane::{free_port, ControlPlane, ControlPlaneError, GUEST_API_SERVER};
use crate::disk::{DiskError, TestDisk, DEFAULT_DISK_SIZE};
use crate::node_config::{self, ClusterAccess, NodeConfigError};
use crate::nodectl::Nodectl;
use crate::qemu::{ExtraDisk, Firmware, GuestFwd, Tftp, Vm, VmError, VmSpec};

/// Console markers printed by init (docs/architecture.md).
pub mod markers {
    /// `keelson: phase=<name> took_ms=<n>`.
    pub const PHASE: &str = r"keelson: phase=(\S+) took_ms=(\d+)";
    /// `keelson: applied modules=<n> verified sysctls=<m> verified`.
    pub const APPLIED: &str = r"keelson: applied modules=(\d+) verified sysctls=(\d+) verified";
    /// `keelson: apply failed …` (one per module or sysctl that failed).
    pub const APPLY_FAILED: &str = r"keelson: apply failed (.*)";
    /// `keelson: node ready slot=<s> version=<v> since_kernel_ms=<n>`.
    pub const NODE_READY: &str =
        r"keelson: node ready slot=(\S+) version=(\S+) since_kernel_ms=(\d+)";
    /// `keelson: init rss_kib=<n>`.
    pub const INIT_RSS: &str = r"keelson: init rss_kib=(\d+)";
    /// `keelson: maintenance mode: apid fingerprint sha256=<hex> port=<p>`.
    pub const MAINTENANCE: &str =
        r"keelson: maintenance mode: apid fingerprint sha256=([0-9a-f]{64}) port=(\d+)";
}

/// The guest port of the machine API (apid).
pub const MACHINE_API_PORT: u16 = 50000;

/// Setting up the scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// An artifact is missing.
    #[error(transparent)]
    Missing(#[from] MissingArtifact),
    /// The work directory could not be made.
    #[error("cannot create a work directory: {0}")]
    WorkDir(std::io::Error),
    /// The control plane failed.
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    /// The node config failed.
    #[error(transparent)]
    NodeConfig(#[from] NodeConfigError),
    /// The disk could not be prepared.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A disk was asked of a node booted without one.
    #[error("the node was booted from the network without a disk")]
    Diskless,
    /// A nodectl command the scenario needs failed.
    #[error("nodectl {command} failed (exit {code}): {stderr}")]
    Nodectl {
        /// The command (its arguments).
        command: String,
        /// Its exit code.
        code: i32,
        /// What it said.
        stderr: String,
    },
}

/// A node booted next to a control plane. Field order is drop order: the
/// VM goes first, then the control plane, then the work directory.
#[derive(Debug)]
pub struct Cluster {
    /// The booted node.
    pub vm: Vm,
    /// The control plane.
    pub cp: ControlPlane,
    /// The node's disk (`None`: a diskless network boot).
    pub disk: Option<TestDisk>,
    /// The node name (hostname).
    pub node_name: String,
    /// The config the node booted with.
    pub config: MachineConfig,
    /// Host port forwarded to the node's machine API.
    pub machine_api_port: u16,
    /// When QEMU was started.
    pub booted_at: Instant,
    work: WorkDir,
}

impl Cluster {
    /// Starts a control plane in a new work directory, then boots
    /// `out/keelson.raw` joined to it as node `node_name`; `relay` is the
    /// `keelson-relay` binary. Returns once QEMU runs.
    pub fn start(node_name: &str, relay: &Path) -> Result<Cluster, ScenarioError> {
        Cluster::start_with(node_name, relay, |_| {})
    }

    /// [`Cluster::start`], with `customize` changing the node's config
    /// after it was patched for the control plane.
    pub fn start_with(
        node_name: &str,
        relay: &Path,
        customize: impl FnOnce(&mut MachineConfig),
    ) -> Result<Cluster, ScenarioError> {
        Cluster::start_inner(node_name, relay, customize, true, Vec::new())
    }

    /// [`Cluster::start_with`], with more guest-to-host forwards (e.g. a
    /// bundle mirror the node downloads from).
    pub fn start_with_forwards(
        node_name: &str,
        relay: &Path,
        forwards: Vec<GuestFwd>,
        customize: impl FnOnce(&mut MachineConfig),
    ) -> Result<Cluster, ScenarioError> {
        Cluster::start_inner(node_name, relay, customize, true, forwards)
    }

    /// Like [`Cluster::start_with`], but the node boots with no config in
    /// STATE (maintenance mode); [`Cluster::config`] is the config made for
    /// it, for the test to apply through the API.
    pub fn start_unconfigured(
        node_name: &str,
        relay: &Path,
        customize: impl FnOnce(&mut MachineConfig),
    ) -> Result<Cluster, ScenarioError> {
        Cluster::start_inner(node_name, relay, customize, false, Vec::new())
    }

    /// A node booted from the network (`disks`: none, or disks without
    /// Keelson's partitions): SeaBIOS' iPXE loads
    /// `tftp.bootfile` from QEMU's TFTP server, `forwards` reach the HTTP
    /// server the root comes from. The node starts in maintenance mode;
    /// [`Cluster::config`] is the config made for it.
    pub fn start_netboot(
        node_name: &str,
        relay: &Path,
        tftp: Tftp,
        forwards: Vec<GuestFwd>,
        disks: Vec<ExtraDisk>,
        customize: impl FnOnce(&mut MachineConfig),
    ) -> Result<Cluster, ScenarioError> {
        Cluster::start_on(
            node_name,
            relay,
            customize,
            Boot::Network { tftp, disks },
            forwards,
        )
    }

    /// A node booted from the boot ISO (`make iso`) in its CD drive (UEFI),
    /// with `disks` attached; it starts live, in maintenance mode.
    /// [`Cluster::config`] is the config made for it.
    pub fn start_media(
        node_name: &str,
        relay: &Path,
        iso: &Path,
        disks: Vec<ExtraDisk>,
        customize: impl FnOnce(&mut MachineConfig),
    ) -> Result<Cluster, ScenarioError> {
        Cluster::start_on(
            node_name,
            relay,
            customize,
            Boot::Media {
                iso: iso.to_path_buf(),
                disks,
            },
            Vec::new(),
        )
    }

    fn start_inner(
        node_name: &str,
        relay: &Path,
        customize: impl FnOnce(&mut MachineConfig),
        bake_config: bool,
        forwards: Vec<GuestFwd>,
    ) -> Result<Cluster, ScenarioError> {
        Cluster::start_on(
            node_name,
            relay,
            customize,
            Boot::Disk { bake_config },
            forwards,
        )
    }

    fn start_on(
        node_name: &str,
        relay: &Path,
        customize: impl FnOnce(&mut MachineConfig),
        boot: Boot,
        forwards: Vec<GuestFwd>,
    ) -> Result<Cluster, ScenarioError> {
        let work = WorkDir::new()?;
        let cp_dir = work.path().join("control-plane");
        let vm_dir = work.path().join("vm");
        for dir in [&cp_dir, &vm_dir] {
            std::fs::create_dir_all(dir).map_err(ScenarioError::WorkDir)?;
        }
        tracing::info!(work = %work.path().display(), "starting the control plane");
        let cp = ControlPlane::start(&cp_dir, &[node_name])?;
        let access = ClusterAccess {
            node_name: node_name.to_string(),
            ca_pem: cp.ca_pem().to_string(),
            // start() made a token for every name it was given.
            token: cp.node_token(node_name).unwrap_or_default().to_string(),
        };
        let mut config = node_config::test_node_config(&access)?;
        customize(&mut config);
        let yaml = node_config::to_yaml(&config)?;
        let mut spec = VmSpec::new(None, &vm_dir);
        let disk = match boot {
            Boot::Disk { bake_config } => {
                let image = artifacts::disk_image()?;
                tracing::info!(image = %image.display(), "preparing the node's disk");
                let baked = bake_config.then_some(yaml.as_str());
                let disk = TestDisk::prepare(&image, &vm_dir, baked, DEFAULT_DISK_SIZE)?;
                spec.disk = Some(disk.overlay.clone());
                Some(disk)
            }
            Boot::Network { tftp, disks } => {
                spec.firmware = Firmware::SeaBios;
                spec.tftp = Some(tftp);
                spec.extra_disks = disks;
                None
            }
            Boot::Media { iso, disks } => {
                spec.cdrom = Some(iso);
                spec.extra_disks = disks;
                None
            }
        };

        let machine_api_port = free_port()?;
        spec.hostfwd.push((machine_api_port, MACHINE_API_PORT));
        spec.guestfwd.push(GuestFwd {
            guest_ip: GUEST_API_SERVER.0,
            guest_port: GUEST_API_SERVER.1,
            command: format!("{} {}", relay.display(), cp.api_port()),
        });
        spec.guestfwd.extend(forwards);
        let vm = Vm::boot(&spec)?;
        let booted_at = vm.started();
        Ok(Cluster {
            vm,
            cp,
            disk,
            node_name: node_name.to_string(),
            config,
            machine_api_port,
            booted_at,
            work,
        })
    }

    /// The work directory (control plane and VM files, logs).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The last `n` lines of `/var/log/<service>.log` on the node, read
    /// from a snapshot of its disk (the VM keeps running). For failure
    /// messages: never fails, says what went wrong instead.
    pub fn node_log_tail(&self, service: &str, n: usize) -> String {
        let Some(disk) = &self.disk else {
            return format!("(no /var/log/{service}.log: the node has no disk)");
        };
        let snapshot = self.work.path().join("snapshot.raw");
        let text = disk
            .snapshot_raw(&snapshot)
            .and_then(|raw| crate::disk::read_file(&raw, "VAR", &format!("/log/{service}.log")))
            .map(|bytes| {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            })
            .unwrap_or_else(|e| format!("(cannot read /var/log/{service}.log: {e})"));
        let _ = std::fs::remove_file(&snapshot);
        text
    }

    /// After the VM has exited: its disk flattened to `<work>/after.raw`
    /// and the `dumpe2fs -h` header of each ext4 data partition (STATE,
    /// VAR), to check that the shutdown left no journal to recover.
    pub fn data_partitions_after_exit(
        &self,
    ) -> Result<(PathBuf, Vec<PartitionHeader>), ScenarioError> {
        let Some(disk) = &self.disk else {
            return Err(ScenarioError::Diskless);
        };
        let raw = disk.export_raw(&self.work.path().join("after.raw"))?;
        let mut out = Vec::new();
        for part in ["STATE", "VAR"] {
            out.push((part, crate::disk::dumpe2fs_header(&raw, part)?));
        }
        Ok((raw, out))
    }

    /// Presses the power button and waits up to `grace` for the guest to
    /// power off; if it does not, stops QEMU with QMP `quit`. Returns
    /// whether the guest powered off by itself and how long it took.
    pub fn power_off(&mut self, grace: Duration) -> Result<(bool, Duration), ScenarioError> {
        let start = Instant::now();
        self.vm.power_button()?;
        let clean = self.vm.wait_exit(grace)?.is_some();
        if !clean {
            self.vm.quit()?;
        }
        Ok((clean, start.elapsed()))
    }
}

/// How a [`Cluster`]'s node boots.
enum Boot {
    /// From a copy of `out/keelson.raw`, with the config baked into STATE
    /// or not (maintenance mode).
    Disk { bake_config: bool },
    /// From the network, with these (blank or data) disks.
    Network {
        /// The TFTP directory and boot file.
        tftp: Tftp,
        /// The disks.
        disks: Vec<ExtraDisk>,
    },
    /// From a boot ISO in the CD drive, with these disks.
    Media {
        /// The ISO.
        iso: PathBuf,
        /// The disks.
        disks: Vec<ExtraDisk>,
    },
}

/// A data partition's name and its ext4 header.
pub type PartitionHeader = (&'static str, crate::disk::Ext4Header);

/// A temporary directory, kept (and its path logged) when
/// `KEELSON_KEEP_WORK=1`.
#[derive(Debug)]
struct WorkDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    fn new() -> Result<WorkDir, ScenarioError> {
        let dir = tempfile::Builder::new()
            .prefix("keelson-test-")
            .tempdir()
            .map_err(ScenarioError::WorkDir)?;
        let path = dir.path().to_path_buf();
        Ok(WorkDir {
            dir: Some(dir),
            path,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Kept when asked, and when a test fails (its logs explain it).
        if std::thread::panicking() || std::env::var("KEELSON_KEEP_WORK").is_ok_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("keeping work directory {}", kept.display());
            }
        }
    }
}

/// A host directory mounted into a pod.
struct HostMount<'a> {
    /// The directory on the node (created if missing).
    host_path: &'a str,
    /// Where the container sees it.
    mount_path: &'a str,
}

/// A pod pinned to `node` running `script` with `/bin/sh -c` on the
/// preloaded busybox image, never pulled, without a service-account token.
/// `script` is written inside a double-quoted YAML string.
fn busybox_pod_yaml(
    name: &str,
    node: &str,
    restart_policy: &str,
    grace_s: u32,
    mount: Option<HostMount<'_>>,
    script: &str,
) -> String {
    let (volumes, volume_mounts) = match mount {
        Some(m) => (
            format!(
                "  volumes:\n  - name: host\n    hostPath:\n      path: {}\n      type: DirectoryOrCreate\n",
                m.host_path
            ),
            format!(
                "    volumeMounts:\n    - name: host\n      mountPath: {}\n",
                m.mount_path
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels:
    app: {name}
spec:
  nodeName: {node}
  automountServiceAccountToken: false
  restartPolicy: {restart_policy}
  terminationGracePeriodSeconds: {grace_s}
{volumes}  containers:
  - name: main
    image: keelson.local/busybox:1
    imagePullPolicy: Never
{volume_mounts}    command: ["/bin/sh", "-c", "{script}"]
"#
    )
}

/// Gives the cluster a drain identity for `node` the way an operator does:
/// creates the RBAC `nodectl gen drain-role --node NODE` prints and returns
/// the service account token the token controller makes for it.
pub fn drain_identity_token(
    nodectl: &Nodectl,
    cp: &ControlPlane,
    node: &str,
) -> Result<String, ScenarioError> {
    let role = nodectl.run(None, &["gen", "drain-role", "--node", node]);
    if role.code != 0 {
        return Err(ScenarioError::Nodectl {
            command: format!("gen drain-role --node {node}"),
            code: role.code,
            stderr: role.stderr,
        });
    }
    cp.create(&role.stdout)?;
    Ok(cp.service_account_token(
        "kube-system",
        "keelson-drain-token",
        Duration::from_secs(60),
    )?)
}

/// `config` with the drain's Kubernetes access: the in-cluster defaults
/// (the node's own API server and CA) and `token`, drains bounded by
/// `drain_timeout`.
pub fn with_drain_access(
    config: &MachineConfig,
    token: String,
    drain_timeout: Duration,
) -> MachineConfig {
    let mut c = config.clone();
    c.kubernetes = Some(machine_config::schema::Kubernetes {
        endpoint: None,
        ca_cert: None,
        token: Some(token),
        kubeconfig: None,
        drain_timeout: machine_config::Duration(drain_timeout),
    });
    c
}

/// A pod pinned to `node` running the preloaded test image: it writes a
/// line and sleeps, and exits on SIGTERM (a shell as PID 1 of its
/// namespace would otherwise ignore it). No service-account token is
/// mounted.
pub fn test_pod_yaml(name: &str, node: &str) -> String {
    busybox_pod_yaml(
        name,
        node,
        "Never",
        5,
        None,
        "trap 'exit 0' TERM; echo keelson-pod-started; while true; do sleep 1; done",
    )
}

/// A Deployment of `replicas` busybox pods labelled `app: NAME` that exit
/// on SIGTERM, placed by the scheduler (so a cordoned node gets none), with
/// a PodDisruptionBudget keeping `min_available` of them. The pods tolerate
/// the taint of the test node's config (examples/node.yaml's
/// `example.com/dedicated`), not `node.kubernetes.io/unschedulable`.
pub fn deployment_with_budget_yaml(name: &str, replicas: u32, min_available: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 5
      tolerations:
      - key: example.com/dedicated
        operator: Exists
      containers:
      - name: main
        image: keelson.local/busybox:1
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
---
apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata:
  name: {name}
  namespace: default
spec:
  minAvailable: {min_available}
  selector:
    matchLabels:
      app: {name}
"#
    )
}

/// A PodDisruptionBudget that allows no eviction of the pods labelled
/// `app: NAME` (the pod builders here label each pod with its name).
pub fn no_disruption_budget_yaml(name: &str) -> String {
    format!(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  maxUnavailable: 0\n  selector:\n    matchLabels:\n      app: {name}\n"
    )
}

/// A pod pinned to `node` as a service would run: it handles SIGTERM at
/// once and has Kubernetes' default 30 s grace; restarted after a reboot.
pub fn service_pod_yaml(name: &str, node: &str) -> String {
    busybox_pod_yaml(
        name,
        node,
        "Always",
        30,
        None,
        "trap 'exit 0' TERM; echo started; while true; do sleep 1; done",
    )
}

/// A pod pinned to `node` that appends a numbered line to
/// `/var/log/keelson-writer/<name>` on the node (a hostPath) five times a
/// second, syncing each time, for ever (restarted after a reboot).
pub fn writer_pod_yaml(name: &str, node: &str) -> String {
    busybox_pod_yaml(
        name,
        node,
        "Always",
        5,
        Some(HostMount {
            host_path: "/var/log/keelson-writer",
            mount_path: "/host",
        }),
        &format!(
            r#"trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo \"line $i\" >> /host/{name}; sync; sleep 0.2; done"#
        ),
    )
}

/// A pod pinned to `node` whose process ignores SIGTERM and asks for an
/// hour of grace: only a forced kill ends it.
pub fn stubborn_pod_yaml(name: &str, node: &str) -> String {
    busybox_pod_yaml(
        name,
        node,
        "Always",
        3600,
        None,
        "trap '' TERM INT; echo stubborn; while true; do sleep 1; done",
    )
}
