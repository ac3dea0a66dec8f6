//! Plan lines for the machine itself: install disk, hostname, kernel
//! arguments, modules, sysctls, files, time, certificates and trusted
//! upgrade keys.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{list, Builder, ChangeKind};
use crate::prerequisites::{effective_modules, effective_sysctls};
use crate::schema::{KernelModule, MachineConfig};

pub(super) fn install(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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
                    i.disk.to_string()
                }
            },
        )
    };
    // Read only by a live node (booted from the ISO or the network) when
    // it installs: nothing to do on this node now, nor at its next boot.
    p.live(
        ChangeKind::Install,
        "machine.install",
        format!(
            "install disk: {} -> {} (used only when a live node installs)",
            show(before),
            show(after)
        ),
    );
}

pub(super) fn hostname(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

pub(super) fn kernel_args(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

pub(super) fn modules(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

pub(super) fn sysctls(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let before = old.map(effective_sysctls).unwrap_or_default();
    let after = effective_sysctls(new);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let path = format!("machine.sysctls.{key}");
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

pub(super) fn files(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

pub(super) fn time(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

pub(super) fn certificates(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
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

/// The raw 32 bytes of an ed25519 public key written as base64 of the raw
/// key or as a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo, whose last 32
/// bytes are the key); `None` when it is neither.
fn raw_key(k: &str) -> Option<Vec<u8>> {
    let body: String = k
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    match der.len() {
        32 => Some(der),
        44 => Some(der[12..].to_vec()),
        _ => None,
    }
}

/// A short, stable name for a key in a plan line, never the key itself:
/// `ed25519:` and the first 8 bytes of the SHA-256 of the raw key, so the
/// same key written as PEM or as base64 has the same name. A key that does
/// not decode (validation refuses it) is named by the hash of its text.
fn key_label(k: &str) -> String {
    match raw_key(k) {
        Some(raw) => format!("ed25519:{}", hex::encode(&Sha256::digest(&raw)[..8])),
        None => format!(
            "text:{}",
            hex::encode(&Sha256::digest(k.trim().as_bytes())[..8])
        ),
    }
}

pub(super) fn trusted_keys(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    // Compared by name, so rewriting a key as PEM instead of base64 is
    // no change.
    let labels = |cfg: &MachineConfig| -> BTreeSet<String> {
        cfg.machine
            .trusted_upgrade_keys
            .iter()
            .map(|k| key_label(k))
            .collect()
    };
    let before = old.map(labels).unwrap_or_default();
    let after = labels(new);
    let path = "machine.trustedUpgradeKeys";
    for k in before.difference(&after) {
        p.live(
            ChangeKind::TrustedKeys,
            path,
            format!("trusted upgrade key: - {k} (bundles signed only by it are refused)"),
        );
    }
    for k in after.difference(&before) {
        p.live(
            ChangeKind::TrustedKeys,
            path,
            format!("trusted upgrade key: + {k}"),
        );
    }
}
