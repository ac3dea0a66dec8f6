//! The built-in pod network: a CNI network configuration list (CNI spec
//! 0.4.0, which Debian bookworm's plugins and containerd 1.6 both support)
//! with the `bridge` plugin (host-local IPAM on `cni.bridge.subnet`, a
//! default route through the bridge) and `portmap` for `hostPort`.

use std::net::IpAddr;

use serde::Serialize;

use super::{RenderedFile, CNI_BRIDGE_CONFLIST};
use crate::schema::MachineConfig;

/// The CNI network name (pods show it in their sandbox metadata).
pub const NETWORK_NAME: &str = "keelson";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList<'a> {
    cni_version: &'static str,
    name: &'static str,
    plugins: (Bridge<'a>, PortMap),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bridge<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    bridge: &'a str,
    is_gateway: bool,
    ip_masq: bool,
    hairpin_mode: bool,
    ipam: Ipam,
}

#[derive(Serialize)]
struct Ipam {
    #[serde(rename = "type")]
    kind: &'static str,
    ranges: [[Range; 1]; 1],
    routes: [Route; 1],
}

#[derive(Serialize)]
struct Range {
    subnet: String,
}

#[derive(Serialize)]
struct Route {
    dst: &'static str,
}

#[derive(Serialize)]
struct PortMap {
    #[serde(rename = "type")]
    kind: &'static str,
    capabilities: Capabilities,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Capabilities {
    port_mappings: bool,
}

/// `<cni.confDir>/10-keelson-bridge.conflist`, or `None` when
/// `cni.bridge` is null (another CNI writes its own config). The subnet is
/// written as its network address (`10.244.0.7/24` → `10.244.0.0/24`);
/// the default route is `0.0.0.0/0` or `::/0` to match its family.
pub fn bridge_conflist(cfg: &MachineConfig) -> Option<RenderedFile> {
    let bridge = cfg.cni.bridge.as_ref()?;
    let subnet = bridge.subnet.network();
    let default_route = match subnet.addr {
        IpAddr::V4(_) => "0.0.0.0/0",
        IpAddr::V6(_) => "::/0",
    };
    let list = ConfList {
        cni_version: "0.4.0",
        name: NETWORK_NAME,
        plugins: (
            Bridge {
                kind: "bridge",
                bridge: &bridge.name,
                is_gateway: true,
                ip_masq: bridge.ip_masq,
                hairpin_mode: true,
                ipam: Ipam {
                    kind: "host-local",
                    ranges: [[Range {
                        subnet: subnet.to_string(),
                    }]],
                    routes: [Route { dst: default_route }],
                },
            },
            PortMap {
                kind: "portmap",
                capabilities: Capabilities {
                    port_mappings: true,
                },
            },
        ),
    };
    // Plain structs of strings and booleans: serialization cannot fail.
    let mut content = serde_json::to_string_pretty(&list).unwrap_or_default();
    content.push('\n');
    Some(RenderedFile {
        path: format!(
            "{}/{CNI_BRIDGE_CONFLIST}",
            cfg.cni.conf_dir.trim_end_matches('/')
        ),
        content,
        mode: 0o644,
    })
}
