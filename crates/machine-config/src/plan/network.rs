//! Plan lines for the network: interfaces (by name, else MAC),
//! nameservers, search domains and extra hosts entries.

use std::collections::{BTreeMap, BTreeSet};

use super::{list, opt, Builder, ChangeKind};
use crate::schema::{Interface, MachineConfig};

/// How an interface is named in the plan: its name, else its MAC.
fn iface_key(i: &Interface) -> String {
    i.name
        .clone()
        .or_else(|| i.mac.as_ref().map(|m| m.to_ascii_lowercase()))
        .unwrap_or_default()
}

fn describe_iface(i: &Interface) -> String {
    let mut parts = Vec::new();
    if i.dhcp {
        parts.push("dhcp".to_string());
    }
    if !i.addresses.is_empty() {
        parts.push(format!("addresses {}", list(&i.addresses)));
    }
    if !i.routes.is_empty() {
        parts.push(format!("{} routes", i.routes.len()));
    }
    if let Some(mtu) = i.mtu {
        parts.push(format!("mtu {mtu}"));
    }
    if parts.is_empty() {
        "up, no addresses".to_string()
    } else {
        parts.join(", ")
    }
}

pub(super) fn network(p: &mut Builder, old: Option<&MachineConfig>, new: &MachineConfig) {
    let index = |cfg: &MachineConfig| -> BTreeMap<String, Interface> {
        cfg.network
            .interfaces
            .iter()
            .map(|i| (iface_key(i), i.clone()))
            .collect()
    };
    let before = old.map(index).unwrap_or_default();
    let after = index(new);
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let path = format!("network.interfaces[{key}]");
        match (before.get(key), after.get(key)) {
            (None, Some(a)) => p.live(
                ChangeKind::Network,
                path,
                format!("network interface {key}: configure ({})", describe_iface(a)),
            ),
            (Some(_), None) => p.live(
                ChangeKind::Network,
                path,
                format!("network interface {key}: no longer configured (its addresses and routes are removed)"),
            ),
            (Some(b), Some(a)) if b != a => {
                let mut what = Vec::new();
                if b.dhcp != a.dhcp {
                    what.push(format!("dhcp {} -> {}", onoff(b.dhcp), onoff(a.dhcp)));
                }
                if b.addresses != a.addresses {
                    what.push(format!("addresses {} -> {}", list(&b.addresses), list(&a.addresses)));
                }
                if b.routes != a.routes {
                    let show = |i: &Interface| {
                        i.routes
                            .iter()
                            .map(|r| match r.metric {
                                Some(m) => format!("{} via {} metric {m}", r.to, r.via),
                                None => format!("{} via {}", r.to, r.via),
                            })
                            .collect::<Vec<_>>()
                    };
                    what.push(format!("routes {} -> {}", list(&show(b)), list(&show(a))));
                }
                if b.mtu != a.mtu {
                    what.push(format!("mtu {} -> {}", opt(b.mtu.as_ref()), opt(a.mtu.as_ref())));
                }
                if what.is_empty() {
                    // Only the selector spelling changed (name and MAC both set).
                    what.push("selector changed".to_string());
                }
                p.live(
                    ChangeKind::Network,
                    path,
                    format!("network interface {key}: {}", what.join(", ")),
                );
            }
            _ => {}
        }
    }
    let n_old = old.map(|o| &o.network);
    let n = &new.network;
    let before_ns = n_old.map(|o| o.nameservers.clone()).unwrap_or_default();
    if before_ns != n.nameservers {
        p.live(
            ChangeKind::Network,
            "network.nameservers",
            format!(
                "nameservers: {} -> {} (resolv.conf rewritten)",
                list(&before_ns),
                list(&n.nameservers)
            ),
        );
    }
    let before_search = n_old.map(|o| o.search_domains.clone()).unwrap_or_default();
    if before_search != n.search_domains {
        p.live(
            ChangeKind::Network,
            "network.searchDomains",
            format!(
                "search domains: {} -> {} (resolv.conf rewritten)",
                list(&before_search),
                list(&n.search_domains)
            ),
        );
    }
    let before_hosts = n_old.map(|o| o.extra_hosts.clone()).unwrap_or_default();
    if before_hosts != n.extra_hosts {
        let show = |hs: &[crate::schema::HostEntry]| {
            hs.iter()
                .map(|h| format!("{} {}", h.ip, h.hostnames.join(" ")))
                .collect::<Vec<_>>()
        };
        p.live(
            ChangeKind::Network,
            "network.extraHosts",
            format!(
                "extra hosts: {} -> {} (/etc/hosts rewritten)",
                list(&show(&before_hosts)),
                list(&show(&n.extra_hosts))
            ),
        );
    }
}

fn onoff(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
