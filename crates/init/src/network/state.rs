//! What the network looks like after [`super::apply`]: per interface, the
//! addresses the kernel holds, the DHCP lease and any error; plus the DNS
//! facts leased by DHCP. Serializable for the machine API.

use std::net::{IpAddr, Ipv4Addr};

use machine_config::Cidr;
use serde::Serialize;

use super::dhcp::client::Lease;

/// The network as applied.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NetworkState {
    /// One entry per configured interface, in config order (plus `lo` when
    /// bringing the loopback up failed).
    pub interfaces: Vec<IfaceState>,
    /// Nameservers leased by DHCP, in interface order, without duplicates.
    /// The config's own `nameservers` are not repeated here.
    pub nameservers: Vec<IpAddr>,
    /// Search domains leased by DHCP (option 119, else option 15), without
    /// duplicates.
    pub search: Vec<String>,
}

/// One configured interface.
#[derive(Clone, Debug, Serialize)]
pub struct IfaceState {
    /// Kernel name when the link was found; else how the config selects it
    /// (`eth0` or `mac 52:54:00:12:34:56`).
    pub name: String,
    /// Hardware address (lower case), when the link was found.
    pub mac: Option<String>,
    /// Global-scope addresses the kernel holds on the link after applying
    /// (static and leased; no link-local ones).
    pub addresses: Vec<Cidr>,
    /// The current DHCP lease, for `dhcp: true` interfaces that have one.
    pub dhcp: Option<LeaseInfo>,
    /// What failed on this interface (the rest may still be applied), e.g.
    /// `add route 10.1.0.0/16 via 10.0.0.1 dev eth0: Network unreachable`.
    pub error: Option<String>,
    /// What the DHCP renewal task needs (link, current lease).
    #[serde(skip)]
    pub(crate) runtime: Option<DhcpRuntime>,
}

/// A DHCP lease as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// Leased address with the lease's prefix.
    pub address: Cidr,
    /// The granting server.
    pub server: Ipv4Addr,
    /// Default gateway (installed as the default route, metric
    /// [`super::DHCP_ROUTE_METRIC`]).
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub nameservers: Vec<Ipv4Addr>,
    /// Option 119 (or option 15 when 119 is absent).
    pub search: Vec<String>,
    /// Option 26, when the server sent one.
    pub mtu: Option<u16>,
    /// Lease length in seconds as the server granted it (`None`: infinite).
    pub lease_s: Option<u64>,
    /// Seconds after `obtained_unix_s` when renewal starts (T1, as used).
    pub renew_s: Option<u64>,
    /// Seconds after `obtained_unix_s` when rebinding starts (T2, as used).
    pub rebind_s: Option<u64>,
    /// Seconds after `obtained_unix_s` when the lease is given up, as used.
    pub expires_s: Option<u64>,
    /// When the last ACK arrived (Unix seconds).
    pub obtained_unix_s: u64,
    /// ACKs received after the first one (renewals and rebinds) since the
    /// address was last (re)acquired.
    pub renewals: u32,
}

/// The link and lease of a `dhcp: true` interface, kept for renewal.
#[derive(Clone, Debug)]
pub(crate) struct DhcpRuntime {
    pub link: LinkRef,
    pub lease: Option<Lease>,
    pub renewals: u32,
    /// Errors of the static part of the interface (kept when DHCP
    /// republishes the interface's error).
    pub base_error: Option<String>,
}

/// The identity of a configured link, as resolved.
#[derive(Clone, Debug)]
pub(crate) struct LinkRef {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    /// The MTU from the config; a DHCP MTU option never overrides it.
    pub static_mtu: Option<u32>,
    /// The config's routes on this link, (re)installed after each lease:
    /// a gateway in the leased subnet is only reachable once it is there.
    pub static_routes: Vec<machine_config::schema::Route>,
}

impl NetworkState {
    /// The address to use as the node IP: the first global IPv4 address in
    /// interface order, else the first global IPv6 one.
    pub fn first_address(&self) -> Option<IpAddr> {
        let all = || {
            self.interfaces
                .iter()
                .flat_map(|i| i.addresses.iter().map(|c| c.addr))
        };
        all().find(IpAddr::is_ipv4).or_else(|| all().next())
    }

    /// The interface named `name`, if configured.
    pub fn interface(&self, name: &str) -> Option<&IfaceState> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Recomputes `nameservers` and `search` from the interfaces' leases.
    pub(crate) fn refresh_dns(&mut self) {
        let mut nameservers: Vec<IpAddr> = Vec::new();
        let mut search: Vec<String> = Vec::new();
        for lease in self.interfaces.iter().filter_map(|i| i.dhcp.as_ref()) {
            for ns in &lease.nameservers {
                let ns = IpAddr::V4(*ns);
                if !nameservers.contains(&ns) {
                    nameservers.push(ns);
                }
            }
            for s in &lease.search {
                if !search.contains(s) {
                    search.push(s.clone());
                }
            }
        }
        self.nameservers = nameservers;
        self.search = search;
    }
}

impl IfaceState {
    pub(crate) fn new(name: String) -> IfaceState {
        IfaceState {
            name,
            mac: None,
            addresses: Vec::new(),
            dhcp: None,
            error: None,
            runtime: None,
        }
    }

    /// Records an error; later errors are appended (`; `-separated) so
    /// none is lost.
    pub(crate) fn add_error(&mut self, err: impl std::fmt::Display) {
        let err = err.to_string();
        self.error = Some(match self.error.take() {
            Some(prev) => format!("{prev}; {err}"),
            None => err,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn node_ip_prefers_ipv4_in_interface_order() {
        let mut a = IfaceState::new("eth0".into());
        a.addresses = vec!["fd00::5/64".parse().unwrap()];
        let mut b = IfaceState::new("eth1".into());
        b.addresses = vec![
            "192.168.1.5/24".parse().unwrap(),
            "10.0.0.5/8".parse().unwrap(),
        ];
        let mut st = NetworkState {
            interfaces: vec![a, b],
            ..Default::default()
        };
        assert_eq!(st.first_address(), Some("192.168.1.5".parse().unwrap()));
        st.interfaces[1].addresses.clear();
        assert_eq!(st.first_address(), Some("fd00::5".parse().unwrap()));
        st.interfaces.clear();
        assert_eq!(st.first_address(), None);
    }

    #[test]
    fn state_serializes_for_the_api_without_runtime_details() {
        let mut a = IfaceState::new("eth0".into());
        a.mac = Some("52:54:00:12:34:56".into());
        a.addresses = vec!["10.0.2.15/24".parse().unwrap()];
        a.error =
            Some("add route 10.1.0.0/16 via 10.9.9.9 dev eth0: Network is unreachable".into());
        a.runtime = Some(DhcpRuntime {
            link: LinkRef {
                index: 2,
                name: "eth0".into(),
                mac: vec![0x52, 0x54, 0, 0x12, 0x34, 0x56],
                static_mtu: None,
                static_routes: vec![],
            },
            lease: None,
            renewals: 0,
            base_error: None,
        });
        let st = NetworkState {
            interfaces: vec![a],
            nameservers: vec!["10.0.2.3".parse().unwrap()],
            search: vec!["lab.test".into()],
        };
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "interfaces": [{
                    "name": "eth0",
                    "mac": "52:54:00:12:34:56",
                    "addresses": ["10.0.2.15/24"],
                    "dhcp": null,
                    "error": "add route 10.1.0.0/16 via 10.9.9.9 dev eth0: Network is unreachable"
                }],
                "nameservers": ["10.0.2.3"],
                "search": ["lab.test"]
            })
        );
    }
}
