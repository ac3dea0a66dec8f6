//! The machine config a scenario boots with: `examples/node.yaml` (or the
//! file named by `KEELSON_NODE_CONFIG`) when it exists, else a minimal
//! config built here, patched to join the test
//! control plane: hostname = the node name the control plane has a token
//! for, kubelet pointed at [`GUEST_API_SERVER`] with the test CA and that
//! token, `eth0` by DHCP (QEMU's user network gives 10.0.2.15), node status
//! posted every 2 s (as in the measurements of NOTES.md), no drain access
//! and no install target.

use std::path::{Path, PathBuf};

use machine_config::schema::{Interface, Machine};
use machine_config::{Duration, MachineConfig};

use crate::artifacts;
use crate::control_plane::GUEST_API_SERVER;

/// The config could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// The example could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The example does not parse.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: machine_config::parse::ParseError,
    },
    /// Serialization failed.
    #[error(transparent)]
    Write(#[from] machine_config::parse::WriteError),
}

/// How the node joins the test cluster.
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    /// The node name (also the hostname).
    pub node_name: String,
    /// PEM CA of the API server.
    pub ca_pem: String,
    /// The node's bearer token.
    pub token: String,
}

/// The base config: `$KEELSON_NODE_CONFIG` when set, else
/// `examples/node.yaml` in the repository.
pub fn example_path() -> PathBuf {
    match std::env::var_os("KEELSON_NODE_CONFIG") {
        Some(path) => PathBuf::from(path),
        None => artifacts::repo_root().join("examples/node.yaml"),
    }
}

/// The example config (or a minimal one when the example does not exist)
/// patched for `access`.
pub fn test_node_config(access: &ClusterAccess) -> Result<MachineConfig, NodeConfigError> {
    let example = example_path();
    // A path named explicitly must exist; the repository's example may not.
    let explicit = std::env::var_os("KEELSON_NODE_CONFIG").is_some();
    let base = if explicit || example.is_file() {
        load(&example)?
    } else {
        minimal()
    };
    Ok(patch(base, access))
}

fn load(path: &Path) -> Result<MachineConfig, NodeConfigError> {
    let bytes = std::fs::read(path).map_err(|source| NodeConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    machine_config::parse::parse(&bytes)
        .map(|doc| doc.config)
        .map_err(|source| NodeConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// A config with every default: what a node needs when no example exists.
fn minimal() -> MachineConfig {
    MachineConfig {
        api_version: machine_config::schema::API_VERSION.into(),
        kind: machine_config::schema::KIND.into(),
        machine: Machine::default(),
        network: Default::default(),
        containerd: Default::default(),
        cni: Default::default(),
        kubelet: Default::default(),
        kubernetes: None,
        shutdown: Default::default(),
        upgrade: Default::default(),
        api: Default::default(),
    }
}

fn patch(mut cfg: MachineConfig, access: &ClusterAccess) -> MachineConfig {
    let (ip, port) = GUEST_API_SERVER;
    cfg.machine.hostname = access.node_name.clone();
    cfg.machine.install = None;
    cfg.network.interfaces = vec![Interface {
        name: Some("eth0".into()),
        dhcp: true,
        ..Default::default()
    }];
    cfg.kubelet.enabled = true;
    cfg.kubelet.api_server = Some(format!("https://{ip}:{port}"));
    cfg.kubelet.ca_cert = Some(access.ca_pem.clone());
    cfg.kubelet.token = Some(access.token.clone());
    cfg.kubelet.kubeconfig = None;
    cfg.kubelet.node_ip = None;
    cfg.kubelet.node_status_update_frequency = Duration(std::time::Duration::from_secs(2));
    cfg.kubernetes = None;
    cfg
}

/// The config as YAML, as init reads it from STATE.
pub fn to_yaml(cfg: &MachineConfig) -> Result<String, NodeConfigError> {
    Ok(machine_config::parse::to_yaml(cfg)?)
}
