//! Checks of the `machine` section: hostname, install disk (a path the
//! installer can resolve, or a selector with well-formed fields), kernel modules
//! and arguments, sysctls, files, time, swap, trusted upgrade keys, API
//! certificates, and the prerequisites a config weakens.

use std::collections::{BTreeSet, HashMap};

use super::{pem, syntax, Checker};
use crate::install_disk::BY_ID_DIR;
use crate::prerequisites;
use crate::schema::{Certificates, DiskTarget, MachineConfig};

/// Files Keelson renders from other fields: writing them through `files`
/// would fight the renderer.
const RENDERED_FILES: &[(&str, &str)] = &[
    ("/etc/hostname", "machine.hostname"),
    ("/etc/hosts", "network.extraHosts"),
    (
        "/etc/resolv.conf",
        "network.nameservers and network.searchDomains",
    ),
    ("/etc/containerd/config.toml", "containerd.extraConfig"),
];

/// Kernel command-line arguments Keelson sets itself.
const OWNED_KERNEL_ARGS: &[&str] = &["keelson.", "root=", "init=", "rdinit="];

pub(super) fn check(cfg: &MachineConfig, c: &mut Checker) {
    let m = &cfg.machine;
    hostname(&m.hostname, c);
    if let Some(install) = &m.install {
        install_disk(&install.disk, c);
    }
    kernel(cfg, c);
    sysctls(cfg, c);
    files(cfg, c);
    for (i, server) in m.time.servers.iter().enumerate() {
        if let Err(e) = syntax::host_or_ip(server) {
            c.error(
                format!("machine.time.servers[{i}]"),
                format!("{server:?} {e}"),
            );
        }
    }
    if let Some(swap) = &m.swap {
        if swap.enabled {
            c.error(
                "machine.swap.enabled",
                "swap is never enabled on a Keelson node: kubelet 1.20 refuses to start \
                 with swap on (fail-swap-on), and memory limits of pods assume no swap",
            );
        }
    }
    trusted_keys(cfg, c);
    if let Some(certs) = &m.certificates {
        certificates(certs, c);
    }
    for (path, why) in prerequisites::weakened(cfg) {
        c.warn(
            path,
            format!("this turns off a Kubernetes node prerequisite: {why}"),
        );
    }
}

/// A device path the installer can resolve without udev, or a selector
/// with at least one well-formed field.
fn install_disk(disk: &DiskTarget, c: &mut Checker) {
    let path = "machine.install.disk";
    let sel = match disk {
        DiskTarget::Path(p) => {
            match syntax::absolute_path(p) {
                Err(e) => c.error(path, e),
                Ok(()) if !syntax::is_below(p, "/dev") => {
                    c.error(path, format!("{p:?} is not a device path under /dev"))
                }
                Ok(()) => {
                    let rest = p
                        .strip_prefix(BY_ID_DIR)
                        .or_else(|| p.strip_prefix("/dev/"))
                        .unwrap_or(p);
                    if rest.contains('/') {
                        c.error(
                            path,
                            format!(
                                "{p:?} cannot be resolved by the installer (a node has no udev): \
                                 write /dev/NAME (e.g. /dev/vda), {BY_ID_DIR}NAME, or a selector \
                                 (size, model, serial, byId)"
                            ),
                        );
                    }
                }
            }
            return;
        }
        DiskTarget::Selector(sel) => sel,
    };
    if sel.is_empty() {
        c.error(
            path,
            "a disk selector needs at least one of size, model, serial, byId",
        );
    }
    if let Some(size) = &sel.size {
        if !size.is_satisfiable() {
            c.error(
                format!("{path}.size"),
                format!("\"{size}\" matches no disk: every disk has at least one byte"),
            );
        }
    }
    for (field, value) in [("model", &sel.model), ("serial", &sel.serial)] {
        match value {
            Some(v) if v.trim().is_empty() => c.error(
                format!("{path}.{field}"),
                format!("{field} is empty: leave it out to accept any {field}"),
            ),
            Some(v) if v.chars().any(char::is_control) => c.error(
                format!("{path}.{field}"),
                format!("{v:?} contains control characters"),
            ),
            _ => {}
        }
    }
    if let Some(id) = &sel.by_id {
        let at = format!("{path}.byId");
        if id.is_empty() {
            c.error(
                at,
                "byId is empty: write a name under /dev/disk/by-id, e.g. virtio-keelson-root",
            );
        } else if let Some(name) = id.strip_prefix(BY_ID_DIR) {
            c.error(
                at,
                format!(
                    "{id:?} is a path: byId takes the name only ({name:?}), or write disk: {id}"
                ),
            );
        } else if id.contains('/') {
            c.error(
                at,
                format!("{id:?} contains '/': byId is one name under /dev/disk/by-id"),
            );
        } else if id == "."
            || id == ".."
            || id.chars().any(|ch| ch.is_control() || ch.is_whitespace())
        {
            c.error(
                at,
                format!("{id:?} is not a /dev/disk/by-id name (no spaces or control characters)"),
            );
        }
    }
}

fn hostname(name: &str, c: &mut Checker) {
    let path = "machine.hostname";
    if let Err(e) = syntax::dns_name(name) {
        c.error(path, format!("{name:?} is not a valid hostname: {e}"));
    } else if name.chars().any(|ch| ch.is_ascii_uppercase()) {
        c.error(
            path,
            format!(
                "{name:?} has uppercase letters: Kubernetes node names are lowercase \
                 (RFC 1123), write it in lowercase"
            ),
        );
    }
}

fn kernel(cfg: &MachineConfig, c: &mut Checker) {
    let k = &cfg.machine.kernel;
    let mut seen: HashMap<String, (usize, &str)> = HashMap::new();
    for (i, module) in k.modules.iter().enumerate() {
        let path = format!("machine.kernel.modules[{i}]");
        let name = module.name.as_str();
        // The kernel's MODULE_NAME_LEN is 56 bytes including the NUL.
        let bad_char = name
            .chars()
            .find(|ch| !(ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '-'));
        if name.is_empty() || name.len() > 55 {
            c.error(
                format!("{path}.name"),
                format!("{name:?} is not a module name (1 to 55 characters)"),
            );
        } else if let Some(ch) = bad_char {
            c.error(
                format!("{path}.name"),
                format!(
                    "{name:?} is not a module name: {ch:?} is not allowed (only letters, \
                     digits, '_' and '-')"
                ),
            );
        }
        // modprobe treats '-' and '_' alike.
        if let Some((j, other)) = seen.insert(name.replace('-', "_"), (i, name)) {
            let msg = if other == name {
                format!("module {name:?} is listed twice (also at modules[{j}])")
            } else {
                format!(
                    "module {name:?} is the same module as {other:?} at modules[{j}] \
                     ('-' and '_' are interchangeable)"
                )
            };
            c.error(format!("{path}.name"), msg);
        }
        for (param, value) in &module.parameters {
            let ppath = format!("{path}.parameters.{param}");
            let ok_name = !param.is_empty()
                && param
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                && !param.starts_with(|ch: char| ch.is_ascii_digit());
            if !ok_name {
                c.key_error(
                    ppath.clone(),
                    format!(
                        "{param:?} is not a module parameter name (letters, digits, '_' or \
                         '-', not starting with a digit)"
                    ),
                );
            }
            if value.is_empty()
                || value
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '"')
            {
                c.error(
                    ppath,
                    format!(
                        "{value:?} is not a usable parameter value: it must be non-empty, \
                         without whitespace or quotes (the kernel splits parameters on spaces)"
                    ),
                );
            }
        }
        if !module.enabled && !prerequisites::MODULES.iter().any(|(n, _)| *n == name) {
            c.warn(
                format!("{path}.enabled"),
                format!(
                    "{name:?} is not a built-in prerequisite, so `enabled: false` just means \
                     it is not loaded; remove the entry instead"
                ),
            );
        }
    }
    for (i, arg) in k.args.iter().enumerate() {
        let path = format!("machine.kernel.args[{i}]");
        if let Err(e) = syntax::token(arg) {
            c.error(
                path,
                format!("kernel argument {e}: write one argument per list entry"),
            );
        } else if let Some(owned) = OWNED_KERNEL_ARGS.iter().find(|o| arg.starts_with(**o)) {
            c.error(
                path,
                format!(
                    "{arg:?}: Keelson sets `{owned}` itself (slot selection and root), it \
                     cannot come from the config"
                ),
            );
        }
    }
}

fn sysctls(cfg: &MachineConfig, c: &mut Checker) {
    for (key, value) in &cfg.machine.sysctls {
        let path = format!("machine.sysctls.{key}");
        if let Err(e) = sysctl_key(key) {
            c.key_error(path.clone(), e);
        }
        if value.trim().is_empty() || value.chars().any(char::is_control) {
            c.error(
                path,
                format!("sysctl value {value:?} must be non-empty text on one line"),
            );
        }
    }
}

/// `a.b.c` form: at least two dot-separated segments of `[A-Za-z0-9_-]`,
/// no empty segment, no `/`.
fn sysctl_key(key: &str) -> Result<(), String> {
    if key.contains('/') {
        return Err(format!(
            "sysctl key {key:?} contains '/': write it in dotted form (net.ipv4.ip_forward), \
             never as a path"
        ));
    }
    if key.contains("..") || key.starts_with('.') || key.ends_with('.') {
        return Err(format!(
            "sysctl key {key:?} has an empty segment (\"..\" or a leading/trailing dot)"
        ));
    }
    let segments: Vec<&str> = key.split('.').collect();
    if segments.len() < 2 {
        return Err(format!(
            "sysctl key {key:?} is not in a.b.c form (e.g. net.ipv4.ip_forward)"
        ));
    }
    if let Some(ch) = key
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-')))
    {
        return Err(format!(
            "sysctl key {key:?} contains {ch:?} (only letters, digits, '_', '-' and dots)"
        ));
    }
    Ok(())
}

fn files(cfg: &MachineConfig, c: &mut Checker) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, file) in cfg.machine.files.iter().enumerate() {
        let path = format!("machine.files[{i}].path");
        let p = file.path.as_str();
        match syntax::absolute_path(p) {
            Err(e) => c.error(path.clone(), e),
            Ok(()) => {
                if !syntax::is_below(p, "/etc") && !syntax::is_below(p, "/var") {
                    c.error(
                        path.clone(),
                        format!(
                            "{p:?} is outside /etc and /var: the rest of the root \
                             filesystem is read-only"
                        ),
                    );
                }
                if let Some((_, field)) = RENDERED_FILES.iter().find(|(f, _)| *f == p) {
                    c.error(
                        path.clone(),
                        format!("Keelson writes {p} itself from {field}; set that instead"),
                    );
                }
            }
        }
        if let Some(first) = seen.insert(p, i) {
            c.error(
                path,
                format!("{p:?} is written twice (also by files[{first}])"),
            );
        }
        let mode = file.mode.0;
        let mpath = format!("machine.files[{i}].mode");
        if mode & 0o6000 != 0 {
            c.warn(
                mpath,
                format!(
                    "mode {} sets the setuid/setgid bit: {p} would run with its owner's \
                     privileges",
                    file.mode
                ),
            );
        } else if mode & 0o002 != 0 {
            c.warn(
                mpath,
                format!("mode {} makes {p} writable by every user", file.mode),
            );
        }
    }
}

fn trusted_keys(cfg: &MachineConfig, c: &mut Checker) {
    let mut seen = BTreeSet::new();
    for (i, key) in cfg.machine.trusted_upgrade_keys.iter().enumerate() {
        let path = format!("machine.trustedUpgradeKeys[{i}]");
        match pem::ed25519_public_key(key) {
            Err(e) => c.error(path, format!("not an ed25519 public key: {e}")),
            Ok(bytes) => {
                if !seen.insert(bytes) {
                    c.warn(path, "the same key is listed twice");
                }
            }
        }
    }
}

fn certificates(certs: &Certificates, c: &mut Checker) {
    let base = "machine.certificates";
    match pem::certificates(&certs.ca) {
        Err(e) => c.error(format!("{base}.ca"), e),
        Ok(infos) => {
            if infos.iter().any(|i| !i.is_ca) {
                c.error(
                    format!("{base}.ca"),
                    "the certificate is not a CA (basicConstraints CA:TRUE is missing): \
                     TLS clients refuse it as an issuer",
                );
            }
        }
    }
    if let Some(key) = &certs.ca_key {
        if let Err(e) = pem::private_key(key) {
            c.error(format!("{base}.caKey"), e);
        }
    }
    if let Some(cert) = &certs.cert {
        match pem::certificates(cert) {
            Err(e) => c.error(format!("{base}.cert"), e),
            Ok(infos) if infos.len() > 1 => c.warn(
                format!("{base}.cert"),
                "holds several certificates: the first is the node's, the rest its chain",
            ),
            Ok(_) => {}
        }
    }
    if let Some(key) = &certs.key {
        if let Err(e) = pem::private_key(key) {
            c.error(format!("{base}.key"), e);
        }
    }
    match (&certs.cert, &certs.key) {
        (Some(_), None) => c.error(
            format!("{base}.key"),
            "cert is given without its private key: give both cert and key",
        ),
        (None, Some(_)) => c.error(
            format!("{base}.cert"),
            "key is given without its certificate: give both cert and key",
        ),
        (None, None) if certs.ca_key.is_none() => c.error(
            format!("{base}.caKey"),
            "no node certificate (cert + key) and no caKey to generate one: the API \
             could not serve TLS; give cert and key, or caKey",
        ),
        _ => {}
    }
    for (i, name) in certs.alt_names.iter().enumerate() {
        if let Err(e) = syntax::host_or_ip(name) {
            c.error(format!("{base}.altNames[{i}]"), format!("{name:?} {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sysctl_key;

    #[test]
    fn sysctl_keys() {
        assert!(sysctl_key("net.ipv4.ip_forward").is_ok());
        assert!(sysctl_key("kernel.pid_max").is_ok());
        assert!(sysctl_key("net.ipv4.conf.eth0-1.rp_filter").is_ok());
        assert!(sysctl_key("vm").is_err());
        assert!(sysctl_key("net..ipv4").is_err());
        assert!(sysctl_key("net/ipv4/ip_forward").is_err());
        assert!(sysctl_key("net.ipv4.ip forward").is_err());
    }
}
