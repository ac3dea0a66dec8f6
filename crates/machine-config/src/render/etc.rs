//! The small plain-text files of `/etc`: `hostname`, `hosts` and
//! `resolv.conf`.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{node_ip, NodeFacts};
use crate::schema::MachineConfig;

/// The C library reads at most this many `nameserver` lines.
const MAX_NAMESERVERS: usize = 3;

/// `/etc/hostname`: the name and a newline.
pub fn hostname(cfg: &MachineConfig) -> String {
    format!("{}\n", cfg.machine.hostname)
}

/// The hostname in effect: the facts' when init learned one, else the
/// config's.
fn effective_hostname<'a>(cfg: &'a MachineConfig, facts: &'a NodeFacts) -> &'a str {
    if facts.hostname.is_empty() {
        &cfg.machine.hostname
    } else {
        &facts.hostname
    }
}

/// `/etc/hosts`: the loopback names, the node's own name on its node IP
/// (see [`node_ip`]; `127.0.1.1` while no address is known, so the name
/// always resolves), then `network.extraHosts` in config order. A dotted
/// hostname is listed with its short form too.
pub fn hosts(cfg: &MachineConfig, facts: &NodeFacts) -> String {
    let mut out = String::from("# Written by Keelson from the machine config; do not edit.\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("ff02::1\tip6-allnodes\n");
    out.push_str("ff02::2\tip6-allrouters\n");
    let name = effective_hostname(cfg, facts);
    if !name.is_empty() {
        let own = node_ip(cfg, facts)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "127.0.1.1".to_string());
        match name.split_once('.') {
            Some((short, _)) if !short.is_empty() => {
                let _ = writeln!(out, "{own}\t{name} {short}");
            }
            _ => {
                let _ = writeln!(out, "{own}\t{name}");
            }
        }
    }
    for entry in &cfg.network.extra_hosts {
        if entry.hostnames.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{}\t{}", entry.ip, entry.hostnames.join(" "));
    }
    out
}

/// `/etc/resolv.conf`: `network.nameservers` first, then the DHCP ones,
/// duplicates removed, at most 3 (a comment names the ones dropped: the C
/// library would ignore them); search domains from `network.searchDomains`
/// then DHCP, duplicates removed. With no nameserver at all a comment says
/// so (the C library then tries 127.0.0.1).
pub fn resolv_conf(cfg: &MachineConfig, facts: &NodeFacts) -> String {
    let mut out = String::from(
        "# Written by Keelson from network.nameservers, network.searchDomains and DHCP.\n",
    );
    let servers: Vec<IpAddr> = dedup(
        cfg.network
            .nameservers
            .iter()
            .chain(facts.dhcp_nameservers.iter())
            .copied(),
    );
    if servers.is_empty() {
        out.push_str("# No nameservers configured or offered by DHCP.\n");
    }
    for s in servers.iter().take(MAX_NAMESERVERS) {
        let _ = writeln!(out, "nameserver {s}");
    }
    if servers.len() > MAX_NAMESERVERS {
        let dropped: Vec<String> = servers[MAX_NAMESERVERS..]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let _ = writeln!(
            out,
            "# Dropped (the C library reads at most {MAX_NAMESERVERS} nameservers): {}",
            dropped.join(" ")
        );
    }
    let search: Vec<&str> = dedup(
        cfg.network
            .search_domains
            .iter()
            .chain(facts.dhcp_search.iter())
            .map(|s| s.trim_end_matches('.'))
            .filter(|s| !s.is_empty()),
    );
    if !search.is_empty() {
        let _ = writeln!(out, "search {}", search.join(" "));
    }
    out
}

/// Keeps the first occurrence of each item, in order.
fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
