//! containerd's `config.toml` (the version 2 layout read by containerd
//! 1.6) and its per-registry `hosts.toml` mirror files.
//!
//! The config is built as a TOML table in code, then
//! `containerd.extraConfig` is merged over it (tables merge recursively,
//! other values replace). The merged result must still hold the values the
//! rest of the node depends on (see [`OWNED_KEYS`]): a mismatch there does
//! not fail loudly on the node, it leaves it NotReady for ever.

use toml::{Table, Value};

use super::{
    RenderError, RenderedFile, CONTAINERD_CERTS_DIR, CONTAINERD_ROOT, CONTAINERD_SOCKET,
    CONTAINERD_STATE, RUNC_BINARY,
};
use crate::schema::MachineConfig;

/// The CRI plugin's table name.
const CRI: &str = "io.containerd.grpc.v1.cri";

/// A key of `config.toml` the merged config must keep at Keelson's value,
/// and what breaks otherwise.
pub struct OwnedKey {
    /// The key's path from the top-level table.
    pub path: &'static [&'static str],
    /// What breaks when it differs (and where to set it instead).
    pub why: &'static str,
}

/// Keys `containerd.extraConfig` may not change. Setting one to the very
/// value Keelson renders is accepted.
pub const OWNED_KEYS: &[OwnedKey] = &[
    OwnedKey {
        path: &["version"],
        why: "every key below is written in the version 2 layout",
    },
    OwnedKey {
        path: &["grpc", "address"],
        why: "kubelet connects to this socket; another address leaves it without a container runtime",
    },
    OwnedKey {
        path: &["plugins", CRI, "sandbox_image"],
        why: "set containerd.sandboxImage instead (it must name an image the node preloads)",
    },
    OwnedKey {
        path: &["plugins", CRI, "cni", "bin_dir"],
        why: "set cni.binDir instead: containerd must look where the plugins are installed, or the node stays NotReady for ever",
    },
    OwnedKey {
        path: &["plugins", CRI, "cni", "conf_dir"],
        why: "set cni.confDir instead: containerd must read the directory the network config is written to, or the node stays NotReady for ever",
    },
    OwnedKey {
        path: &["plugins", CRI, "containerd", "runtimes", "runc", "options", "SystemdCgroup"],
        why: "kubelet uses the cgroupfs driver (there is no systemd on a node); a mismatch makes every pod fail to start",
    },
    OwnedKey {
        path: &["plugins", CRI, "containerd", "runtimes", "runc", "options", "BinaryName"],
        why: "the image ships runc at /usr/sbin/runc; add another runtime under containerd.runtimes instead",
    },
    OwnedKey {
        path: &["plugins", CRI, "registry", "config_path"],
        why: "set containerd.registryMirrors instead; Keelson writes them under /etc/containerd/certs.d",
    },
    OwnedKey {
        path: &["plugins", CRI, "registry", "mirrors"],
        why: "containerd refuses registry.mirrors together with registry.config_path; set containerd.registryMirrors instead",
    },
];

/// Renders `/etc/containerd/config.toml`: root `/var/lib/containerd`, state
/// `/run/containerd`, the CRI socket, the CRI plugin with
/// `containerd.sandboxImage`, the overlayfs snapshotter, runc v2 with the
/// cgroupfs driver and Debian's runc, the CNI directories from `cni`, and
/// registry hosts read from `/etc/containerd/certs.d` (always set, so a
/// `hosts.toml` written through `machine.files` is honoured too). Then
/// `containerd.extraConfig` is merged in.
///
/// Errors: `containerd.extraConfig` is not TOML (message with line and
/// column), or changes an [`OWNED_KEYS`] key, or a registry mirror host is
/// not a host name (it becomes a directory name).
pub fn config_toml(cfg: &MachineConfig) -> Result<String, RenderError> {
    for host in cfg.containerd.registry_mirrors.keys() {
        if !is_registry_host(host) {
            return Err(RenderError::RegistryHost { host: host.clone() });
        }
    }
    let ours = base_table(cfg);
    let mut merged = ours.clone();
    if !cfg.containerd.extra_config.trim().is_empty() {
        let extra = parse_extra(&cfg.containerd.extra_config)?;
        merge(&mut merged, extra);
    }
    check_owned(&ours, &merged)?;
    let body = toml::to_string(&merged).map_err(|e| RenderError::Serialize {
        what: "containerd config.toml",
        message: e.to_string(),
    })?;
    Ok(format!(
        "# Written by Keelson from the machine config (containerd, cni); do not edit.\n{body}"
    ))
}

/// One `hosts.toml` per `containerd.registryMirrors` entry, at
/// `/etc/containerd/certs.d/<registry host>/hosts.toml`: the upstream
/// server (`https://registry-1.docker.io` for `docker.io`, else
/// `https://<host>`) and each mirror, in order, for pull and resolve.
/// containerd reads these on every pull: no restart is needed. Hosts that
/// are not host names are skipped here ([`config_toml`] refuses them).
pub fn registry_hosts(cfg: &MachineConfig) -> Vec<RenderedFile> {
    cfg.containerd
        .registry_mirrors
        .iter()
        .filter(|(host, _)| is_registry_host(host))
        .map(|(host, mirrors)| {
            let server = if host == "docker.io" {
                "https://registry-1.docker.io".to_string()
            } else {
                format!("https://{host}")
            };
            let mut mirror_tables = Table::new();
            for m in mirrors {
                let mut t = Table::new();
                t.insert(
                    "capabilities".into(),
                    Value::Array(vec!["pull".into(), "resolve".into()]),
                );
                mirror_tables.insert(m.clone(), Value::Table(t));
            }
            let mut doc = Table::new();
            doc.insert("server".into(), Value::String(server));
            doc.insert("host".into(), Value::Table(mirror_tables));
            // A table of strings and string arrays always serializes; the
            // fallback keeps the server line should that ever change.
            let body = toml::to_string(&doc).unwrap_or_default();
            RenderedFile {
                path: format!("{CONTAINERD_CERTS_DIR}/{host}/hosts.toml"),
                content: format!(
                    "# Written by Keelson from containerd.registryMirrors.{host:?}; do not edit.\n{body}"
                ),
                mode: 0o644,
            }
        })
        .collect()
}

/// A registry key becomes a directory name: `host` or `host:port`, made of
/// letters, digits, `.`, `-` and `_`, not `.` or `..`.
fn is_registry_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// The generated configuration, before `extraConfig`.
fn base_table(cfg: &MachineConfig) -> Table {
    let runc_options = table([
        ("SystemdCgroup", Value::Boolean(false)),
        ("BinaryName", RUNC_BINARY.into()),
    ]);
    let runc = table([
        ("runtime_type", "io.containerd.runc.v2".into()),
        ("options", Value::Table(runc_options)),
    ]);
    let cri_containerd = table([
        ("snapshotter", "overlayfs".into()),
        ("default_runtime_name", "runc".into()),
        (
            "runtimes",
            Value::Table(table([("runc", Value::Table(runc))])),
        ),
    ]);
    let cni = table([
        ("bin_dir", cfg.cni.bin_dir.as_str().into()),
        ("conf_dir", cfg.cni.conf_dir.as_str().into()),
    ]);
    let registry = table([("config_path", CONTAINERD_CERTS_DIR.into())]);
    let cri = table([
        (
            "sandbox_image",
            cfg.containerd.sandbox_image.as_str().into(),
        ),
        ("containerd", Value::Table(cri_containerd)),
        ("cni", Value::Table(cni)),
        ("registry", Value::Table(registry)),
    ]);
    table([
        ("version", Value::Integer(2)),
        ("root", CONTAINERD_ROOT.into()),
        ("state", CONTAINERD_STATE.into()),
        (
            "grpc",
            Value::Table(table([("address", CONTAINERD_SOCKET.into())])),
        ),
        ("plugins", Value::Table(table([(CRI, Value::Table(cri))]))),
    ])
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Parses `extraConfig`, turning the TOML error into one line with the
/// line and column inside `extraConfig`.
fn parse_extra(text: &str) -> Result<Table, RenderError> {
    text.parse::<Table>().map_err(|e| {
        let message = e.message().trim().to_string();
        let message = match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("line {line} col {col}: {message}")
            }
            None => message,
        };
        RenderError::ContainerdExtraConfigSyntax { message }
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Merges `extra` into `base`: tables merge key by key, recursively; any
/// other value (or a table meeting a non-table) replaces.
fn merge(base: &mut Table, extra: Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(e)) => merge(b, e),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Every owned key must hold the same value after the merge as before
/// (absent stays absent).
fn check_owned(ours: &Table, merged: &Table) -> Result<(), RenderError> {
    for owned in OWNED_KEYS {
        let before = lookup(ours, owned.path);
        let after = lookup(merged, owned.path);
        if before != after {
            return Err(RenderError::ContainerdKeyOwned {
                key: dotted(owned.path),
                ours: before.map_or_else(
                    || "Keelson leaves it unset".to_string(),
                    |v| format!("Keelson sets {v}"),
                ),
                why: owned.why,
            });
        }
    }
    Ok(())
}

fn lookup<'a>(t: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = t;
    for p in parents {
        cur = cur.get(*p)?.as_table()?;
    }
    cur.get(*last)
}

/// `plugins."io.containerd.grpc.v1.cri".cni.bin_dir`: TOML's own dotted
/// form, quoting segments that need it.
fn dotted(path: &[&str]) -> String {
    path.iter()
        .map(|seg| {
            if seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                (*seg).to_string()
            } else {
                format!("{seg:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}
