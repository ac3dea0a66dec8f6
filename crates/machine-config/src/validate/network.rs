//! Checks of the `network` section: interface selection, duplicates,
//! addresses, routes and their gateways, MTU, DNS and hosts entries.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{syntax, Checker};
use crate::schema::{Interface, MachineConfig};
use crate::values::Cidr;

/// Smallest MTU the kernel accepts for IPv4.
const MIN_MTU: u32 = 68;
/// Smallest MTU IPv6 works with (RFC 8200).
const MIN_MTU_V6: u32 = 1280;

pub(super) fn check(cfg: &MachineConfig, c: &mut Checker) {
    let net = &cfg.network;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut macs: HashMap<String, usize> = HashMap::new();
    let mut addresses: HashMap<IpAddr, String> = HashMap::new();
    let mut routes: HashMap<(Cidr, u32), String> = HashMap::new();
    for (i, iface) in net.interfaces.iter().enumerate() {
        let path = format!("network.interfaces[{i}]");
        selector(iface, &path, i, &mut names, &mut macs, c);
        for (j, addr) in iface.addresses.iter().enumerate() {
            let apath = format!("{path}.addresses[{j}]");
            if let Some(other) = addresses.insert(addr.addr, apath.clone()) {
                c.error(
                    apath.clone(),
                    format!("address {} is also assigned at {other}", addr.addr),
                );
            }
            if is_network_address(addr) {
                c.warn(
                    apath,
                    format!(
                        "{addr} is the network address of its subnet, not a host address \
                         (did you mean a host inside {}?)",
                        addr.network()
                    ),
                );
            }
        }
        if !iface.dhcp && iface.addresses.is_empty() {
            // A warning, not an error: a link without addresses is legitimate
            // (a bridge port, a link brought up for a CNI to use), but it is
            // more often a forgotten `dhcp: true`.
            c.warn(
                path.clone(),
                "neither dhcp nor addresses: the link is brought up without any address",
            );
        }
        if let Some(mtu) = iface.mtu {
            let has_v6 = iface.addresses.iter().any(|a| a.addr.is_ipv6());
            if !(MIN_MTU..=65535).contains(&mtu) {
                c.error(
                    format!("{path}.mtu"),
                    format!("MTU {mtu} is outside {MIN_MTU}..=65535"),
                );
            } else if has_v6 && mtu < MIN_MTU_V6 {
                c.error(
                    format!("{path}.mtu"),
                    format!(
                        "MTU {mtu} is below {MIN_MTU_V6}, the minimum for IPv6, and this \
                         interface has IPv6 addresses"
                    ),
                );
            }
        }
        for (j, route) in iface.routes.iter().enumerate() {
            let rpath = format!("{path}.routes[{j}]");
            if route.to.addr.is_ipv4() != route.via.is_ipv4() {
                c.error(
                    format!("{rpath}.via"),
                    format!(
                        "gateway {} and destination {} are of different IP families",
                        route.via, route.to
                    ),
                );
                continue;
            }
            if route.to.network() != route.to {
                c.error(
                    format!("{rpath}.to"),
                    format!(
                        "{} has host bits set: a route destination is a network (did you \
                         mean {}?)",
                        route.to,
                        route.to.network()
                    ),
                );
            }
            if !gateway_reachable(iface, &route.via) {
                c.error(
                    format!("{rpath}.via"),
                    format!(
                        "gateway {} is not inside any static address of this interface ({}): \
                         the kernel cannot reach it",
                        route.via,
                        describe_addresses(iface)
                    ),
                );
            }
            let key = (route.to.network(), route.metric.unwrap_or(0));
            if let Some(other) = routes.insert(key, rpath.clone()) {
                c.error(
                    format!("{rpath}.to"),
                    format!(
                        "a route to {} with metric {} is already defined at {other}: the \
                         kernel refuses the second one",
                        key.0, key.1
                    ),
                );
            }
        }
    }
    dns(cfg, c);
}

/// Name/MAC selection: exactly one, well-formed, not used twice.
fn selector<'a>(
    iface: &'a Interface,
    path: &str,
    i: usize,
    names: &mut HashMap<&'a str, usize>,
    macs: &mut HashMap<String, usize>,
    c: &mut Checker,
) {
    match (&iface.name, &iface.mac) {
        (None, None) => c.error(path, "selects no interface: give either name or mac"),
        (Some(_), Some(_)) => c.error(
            path,
            "gives both name and mac: select the interface by exactly one of them",
        ),
        _ => {}
    }
    if let Some(name) = &iface.name {
        if let Err(e) = syntax::interface_name(name) {
            c.error(format!("{path}.name"), e);
        }
        if name == "lo" {
            c.error(
                format!("{path}.name"),
                "the loopback is always configured by Keelson",
            );
        }
        if let Some(first) = names.insert(name.as_str(), i) {
            c.error(
                format!("{path}.name"),
                format!("interface {name:?} is already configured at network.interfaces[{first}]"),
            );
        }
    }
    if let Some(mac) = &iface.mac {
        if let Err(e) = syntax::mac(mac) {
            c.error(format!("{path}.mac"), e);
        }
        if let Some(first) = macs.insert(syntax::mac_key(mac), i) {
            c.error(
                format!("{path}.mac"),
                format!("MAC {mac} is already configured at network.interfaces[{first}]"),
            );
        }
    }
}

/// True when `via` can be reached on this interface: inside one of its
/// static networks, an IPv6 link-local address (always on-link), or an
/// IPv4 gateway on a DHCP interface. The DHCP case cannot be checked here:
/// the subnet is only known once a lease is obtained, so the gateway is
/// accepted and the node reports the route failure at apply time.
fn gateway_reachable(iface: &Interface, via: &IpAddr) -> bool {
    if iface.addresses.iter().any(|a| a.contains(via)) {
        return true;
    }
    match via {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => iface.dhcp,
    }
}

fn describe_addresses(iface: &Interface) -> String {
    if iface.addresses.is_empty() {
        return "it has none".to_string();
    }
    iface
        .addresses
        .iter()
        .map(|a| a.network().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An IPv4 address with all host bits zero on a prefix shorter than /31.
fn is_network_address(addr: &Cidr) -> bool {
    addr.addr.is_ipv4() && addr.prefix < 31 && addr.network().addr == addr.addr
}

fn dns(cfg: &MachineConfig, c: &mut Checker) {
    let net = &cfg.network;
    if net.nameservers.len() > 3 {
        c.warn(
            "network.nameservers[3]",
            format!(
                "{} nameservers given: the C library uses only the first 3",
                net.nameservers.len()
            ),
        );
    }
    let mut seen = HashMap::new();
    for (i, ns) in net.nameservers.iter().enumerate() {
        if let Some(first) = seen.insert(ns, i) {
            c.warn(
                format!("network.nameservers[{i}]"),
                format!("{ns} is listed twice (also nameservers[{first}])"),
            );
        }
    }
    for (i, domain) in net.search_domains.iter().enumerate() {
        if let Err(e) = syntax::dns_name(domain) {
            c.error(
                format!("network.searchDomains[{i}]"),
                format!("{domain:?} is not a domain name: {e}"),
            );
        }
    }
    for (i, entry) in net.extra_hosts.iter().enumerate() {
        let path = format!("network.extraHosts[{i}]");
        if entry.hostnames.is_empty() {
            c.error(
                format!("{path}.hostnames"),
                "at least one host name is needed",
            );
        }
        for (j, name) in entry.hostnames.iter().enumerate() {
            if let Err(e) = syntax::dns_name(name) {
                c.error(
                    format!("{path}.hostnames[{j}]"),
                    format!("{name:?} is not a host name: {e}"),
                );
            }
        }
    }
}
