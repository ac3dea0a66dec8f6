//! Checks of the container runtime sections: `containerd` (extra TOML,
//! mirrors, preloaded images, sandbox image) and `cni` (directories, the
//! bridge network).

use std::collections::HashSet;

use super::{syntax, Checker};
use crate::render::{self, RenderError};
use crate::schema::MachineConfig;

/// Where the image's CNI plugins are (Debian's package).
const IMAGE_CNI_BIN_DIR: &str = "/usr/lib/cni";

pub(super) fn check(cfg: &MachineConfig, c: &mut Checker) {
    containerd(cfg, c);
    cni(cfg, c);
}

fn containerd(cfg: &MachineConfig, c: &mut Checker) {
    let ctr = &cfg.containerd;
    // The renderer is the one authority on what extraConfig may change: run
    // it (it is pure) and report its verdict, so the rules cannot drift.
    if !ctr.extra_config.trim().is_empty() {
        // Other render errors (mirror hosts) are checked below, where they
        // get their own paths.
        if let Err(
            e @ (RenderError::ContainerdExtraConfigSyntax { .. }
            | RenderError::ContainerdKeyOwned { .. }),
        ) = render::containerd::config_toml(cfg)
        {
            c.error(
                "containerd.extraConfig",
                e.to_string()
                    .trim_start_matches("containerd.extraConfig: ")
                    .to_string(),
            );
        }
    }
    for (registry, endpoints) in &ctr.registry_mirrors {
        let path = format!("containerd.registryMirrors.{registry}");
        if let Err(e) = syntax::host_port(registry) {
            c.key_error(
                path.clone(),
                format!("{registry:?} is not a registry host: {e}"),
            );
        }
        if endpoints.is_empty() {
            c.error(path.clone(), "no mirror endpoints given");
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            if let Err(e) = syntax::http_url(endpoint) {
                c.error(format!("{path}[{i}]"), e);
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, image) in ctr.preload_images.iter().enumerate() {
        let path = format!("containerd.preloadImages[{i}]");
        match syntax::absolute_path(image) {
            Err(e) => c.error(path.clone(), e),
            Ok(()) => {
                if !syntax::is_below(image, "/var")
                    && !syntax::is_below(image, "/usr/share/keelson/images")
                {
                    c.error(
                        path.clone(),
                        format!(
                            "{image:?} is neither under /var nor under \
                             /usr/share/keelson/images"
                        ),
                    );
                }
            }
        }
        if !seen.insert(image) {
            c.warn(path, format!("{image:?} is listed twice"));
        }
    }
    let sandbox = &ctr.sandbox_image;
    if let Err(e) = syntax::token(sandbox) {
        c.error(
            "containerd.sandboxImage",
            format!("the sandbox (pause) image reference {e}"),
        );
    } else if !sandbox.starts_with("keelson.local/") && ctr.preload_images.is_empty() {
        c.warn(
            "containerd.sandboxImage",
            format!(
                "{sandbox:?} is not built into the image and no preloadImages are given: \
                 pods cannot start unless a registry serving it is reachable"
            ),
        );
    }
}

/// Collects the dotted paths of keys Keelson owns anywhere in `table`.
fn cni(cfg: &MachineConfig, c: &mut Checker) {
    let cni = &cfg.cni;
    if let Err(e) = syntax::absolute_path(&cni.bin_dir) {
        c.error("cni.binDir", e);
    } else if cni.bin_dir != IMAGE_CNI_BIN_DIR {
        c.warn(
            "cni.binDir",
            format!(
                "the image installs its CNI plugins in {IMAGE_CNI_BIN_DIR}; with {:?} the \
                 node stays NotReady unless another installer puts plugins there",
                cni.bin_dir
            ),
        );
    }
    if let Err(e) = syntax::absolute_path(&cni.conf_dir) {
        c.error("cni.confDir", e);
    }
    if let Some(bridge) = &cni.bridge {
        if let Err(e) = syntax::interface_name(&bridge.name) {
            c.error("cni.bridge.name", e);
        }
        let subnet = bridge.subnet;
        if subnet.network() != subnet {
            c.error(
                "cni.bridge.subnet",
                format!(
                    "{subnet} has host bits set: the pod subnet is a network (did you mean {}?)",
                    subnet.network()
                ),
            );
        }
        if subnet.max_prefix().saturating_sub(subnet.prefix) < 2 {
            c.error(
                "cni.bridge.subnet",
                format!("{subnet} leaves no room for pod addresses"),
            );
        }
        for (i, iface) in cfg.network.interfaces.iter().enumerate() {
            for (j, addr) in iface.addresses.iter().enumerate() {
                if overlaps(&subnet, addr) {
                    c.error(
                        "cni.bridge.subnet",
                        format!(
                            "the pod subnet {subnet} overlaps {addr} of \
                             network.interfaces[{i}].addresses[{j}]: routing would break"
                        ),
                    );
                }
            }
        }
    }
}

/// True when two networks share any address.
fn overlaps(a: &crate::values::Cidr, b: &crate::values::Cidr) -> bool {
    let shorter = if a.prefix <= b.prefix { a } else { b };
    let other = if a.prefix <= b.prefix { b } else { a };
    shorter.contains(&other.addr)
}
