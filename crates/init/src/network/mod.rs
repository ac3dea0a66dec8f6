//! Network configuration of PID 1, through rtnetlink and a DHCPv4 client.
//!
//! [`apply`] brings `lo` up, then configures every interface of the
//! machine config concurrently: find the link by name or MAC (waiting a
//! bounded time while NIC drivers probe), set the MTU, set the link up, add
//! static addresses (IPv4 and IPv6; an address already present is fine) and
//! routes (replaced, so applying twice is harmless), and for `dhcp: true`
//! obtain a lease (address with the lease's prefix, default route via the
//! router at metric [`DHCP_ROUTE_METRIC`], MTU option unless the config sets
//! one). One failing interface never stops the others: its error is in its
//! [`IfaceState`]. [`NetworkError`] means nothing could be done at all.
//!
//! [`spawn_dhcp_renewal`] then keeps leases alive (RENEW at T1, REBIND at
//! T2, rediscovery after expiry) and publishes changes on watch channels;
//! [`down_all`] sets every non-loopback link down at shutdown.
//!
//! The `/etc/resolv.conf` and `/etc/hosts` content is rendered by
//! `machine_config::render`; this module only provides the facts
//! ([`NetworkState::nameservers`], [`NetworkState::search`],
//! [`NetworkState::first_address`]).
//!
//! Everything here acts on the network namespace of the calling thread, in
//! the current tokio runtime.

mod dhcp;
mod netlink;
mod renewal;
mod state;

#[cfg(test)]
mod tests;

use std::time::Duration;

use futures_util::future::join_all;
use machine_config::schema::{Interface, Network};

// The public API for stage 2 (main.rs), which wires it in.
#[allow(unused_imports)]
pub use dhcp::DHCP_ROUTE_METRIC;
#[allow(unused_imports)]
pub use renewal::{spawn_dhcp_renewal, DhcpRenewal, DnsFacts};
#[allow(unused_imports)]
pub use state::{IfaceState, LeaseInfo, NetworkState};

use dhcp::client::Client;
use netlink::{Netlink, Selector};
use state::{DhcpRuntime, LinkRef};

/// Bound on [`down_all`].
const DOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Nothing could be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The rtnetlink socket could not be opened.
    #[error("open the rtnetlink socket: {0}")]
    Netlink(#[source] std::io::Error),
    /// The kernel's link table could not be read.
    #[error("{0}")]
    Links(#[source] netlink::NlError),
    /// Setting links down did not finish in time.
    #[error("setting links down did not finish within {0:?}")]
    Timeout(Duration),
}

/// Bounds and test overrides of the network code. [`Timing::default`] is
/// what a node uses.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long to wait for a configured link to appear. Default 10 s.
    pub link_wait: Duration,
    /// How long [`apply`] (and each background discovery attempt) waits for
    /// a DHCP lease. Default 30 s.
    pub dhcp_boot: Duration,
    /// Longest pause between background discovery attempts (the pause
    /// doubles from 1 s). Default 60 s.
    pub dhcp_retry_max: Duration,
    /// Treat leases as lasting at most this long (T1/T2 scaled with it):
    /// renews earlier than the server requires, never later. Default none.
    pub max_lease: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            link_wait: Duration::from_secs(10),
            dhcp_boot: Duration::from_secs(30),
            dhcp_retry_max: Duration::from_secs(60),
            max_lease: None,
        }
    }
}

/// Applies `cfg` with the default [`Timing`]; see the module docs.
pub async fn apply(cfg: &Network) -> Result<NetworkState, NetworkError> {
    apply_with(cfg, &Timing::default()).await
}

/// Applies `cfg` with explicit bounds.
pub async fn apply_with(cfg: &Network, timing: &Timing) -> Result<NetworkState, NetworkError> {
    let nl = Netlink::connect().map_err(NetworkError::Netlink)?;
    let mut state = NetworkState::default();
    if let Err(err) = loopback_up(&nl).await {
        tracing::error!(iface = %"lo", error = %err, "loopback not up");
        let mut lo = IfaceState::new("lo".to_string());
        lo.add_error(err);
        state.interfaces.push(lo);
    }
    let configured = join_all(cfg.interfaces.iter().map(|i| configure(&nl, i, timing))).await;
    state.interfaces.extend(configured);
    state.refresh_dns();
    Ok(state)
}

async fn loopback_up(nl: &Netlink) -> Result<(), String> {
    let links = nl.links().await.map_err(|e| e.to_string())?;
    let lo = links
        .iter()
        .find(|l| l.loopback)
        .ok_or_else(|| "no loopback link".to_string())?;
    if !lo.up {
        nl.set_up(lo.index, &lo.name, true)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn selector(cfg: &Interface) -> Option<Selector> {
    match (&cfg.name, &cfg.mac) {
        (Some(name), _) => Some(Selector::Name(name.clone())),
        (None, Some(mac)) => Some(Selector::Mac(mac.clone())),
        (None, None) => None,
    }
}

/// Configures one interface; every failure is recorded in the result.
async fn configure(nl: &Netlink, cfg: &Interface, timing: &Timing) -> IfaceState {
    let Some(sel) = selector(cfg) else {
        let mut st = IfaceState::new(String::new());
        st.add_error("interface has neither name nor mac");
        return st;
    };
    let mut st = IfaceState::new(sel.to_string());
    let link = match nl.wait_for_link(&sel, timing.link_wait).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            st.add_error(format!(
                "no link {sel} appeared within {} s",
                timing.link_wait.as_secs_f32()
            ));
            tracing::error!(iface = %sel, error = st.error.as_deref().unwrap_or(""));
            return st;
        }
        Err(e) => {
            st.add_error(e);
            return st;
        }
    };
    st.name = link.name.clone();
    st.mac = Some(link.mac.clone());
    if let (Some(want), Selector::Name(_)) = (&cfg.mac, &sel) {
        if !want.eq_ignore_ascii_case(&link.mac) {
            st.add_error(format!(
                "{} has MAC {}, the config says {want}",
                link.name, link.mac
            ));
        }
    }
    let name = link.name.as_str();
    if let Some(mtu) = cfg.mtu {
        if link.mtu != Some(mtu) {
            if let Err(e) = nl.set_mtu(link.index, name, mtu).await {
                st.add_error(e);
            }
        }
    }
    if let Err(e) = nl.set_up(link.index, name, true).await {
        st.add_error(e);
    }
    for addr in &cfg.addresses {
        if let Err(e) = nl.add_address(link.index, name, addr).await {
            st.add_error(e);
        }
    }
    if cfg.dhcp {
        let mut rt = DhcpRuntime {
            link: LinkRef {
                index: link.index,
                name: link.name.clone(),
                mac: link.mac_bytes.clone(),
                static_mtu: cfg.mtu,
                static_routes: cfg.routes.clone(),
            },
            lease: None,
            renewals: 0,
            base_error: st.error.clone(),
        };
        match first_lease(nl, &rt.link, timing).await {
            Ok(lease) => {
                st.dhcp = Some(dhcp::lease_info(&lease, timing.max_lease, 0));
                rt.lease = Some(lease);
            }
            Err(e) => {
                tracing::error!(iface = %name, dhcp = %"no-lease", error = %e);
                st.add_error(e);
            }
        }
        st.runtime = Some(rt);
    }
    // After the lease: a gateway in the leased subnet is reachable only now
    // (the renewal task installs them again after each new lease).
    for route in &cfg.routes {
        if let Err(e) = nl
            .replace_route(link.index, name, &route.to, Some(route.via), route.metric)
            .await
        {
            st.add_error(e);
        }
    }
    match nl.global_addresses(link.index).await {
        Ok(addrs) => st.addresses = addrs,
        Err(e) => st.add_error(e),
    }
    let addrs = st
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    match &st.error {
        None => {
            tracing::info!(iface = %name, mac = %link.mac, addrs = %addrs, "interface configured")
        }
        Some(err) => {
            tracing::warn!(iface = %name, mac = %link.mac, addrs = %addrs, error = %err, "interface partly configured")
        }
    }
    st
}

/// Obtains and installs a first lease on `link`.
async fn first_lease(
    nl: &Netlink,
    link: &LinkRef,
    timing: &Timing,
) -> Result<dhcp::client::Lease, String> {
    let client = Client::new(&link.name, link.index, &link.mac).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timing.dhcp_boot;
    let lease = client
        .acquire(deadline, None)
        .await
        .map_err(|e| e.to_string())?;
    dhcp::install(nl, link, None, &lease)
        .await
        .map_err(|e| e.to_string())?;
    renewal::log_lease(&link.name, "bound", &lease);
    Ok(lease)
}

/// Ethernet interfaces (type 1) backed by a device, sorted: what
/// maintenance mode and a network boot run DHCP on.
pub fn ethernet_interfaces(sys_class_net: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(sys_class_net)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let p = e.path();
                    std::fs::read_to_string(p.join("type")).is_ok_and(|t| t.trim() == "1")
                        && p.join("device").exists()
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A network config that runs DHCP on each of `names` and nothing else
/// (maintenance mode, a network boot's stage 1).
pub fn dhcp_on(names: &[String]) -> Network {
    Network {
        interfaces: names
            .iter()
            .map(|n| Interface {
                name: Some(n.clone()),
                dhcp: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Gives back what [`apply`] set up for `state`'s DHCP interfaces: the
/// leased addresses are removed and the links set down (which drops their
/// routes), within 5 s. For stage 1, which fetched the network root and
/// leaves the network to stage 2. Failures are logged, not returned.
pub async fn release(state: &NetworkState) {
    let Ok(nl) = Netlink::connect() else {
        tracing::warn!("network release: no rtnetlink socket");
        return;
    };
    let work = async {
        for iface in &state.interfaces {
            let Some(rt) = &iface.runtime else { continue };
            if let Some(lease) = &iface.dhcp {
                if let Err(e) = nl
                    .del_address(rt.link.index, &rt.link.name, &lease.address)
                    .await
                {
                    tracing::warn!(iface = %rt.link.name, error = %e, "leased address not removed");
                }
            }
            if let Err(e) = nl.set_up(rt.link.index, &rt.link.name, false).await {
                tracing::warn!(iface = %rt.link.name, error = %e, "link not set down");
            }
        }
    };
    if tokio::time::timeout(DOWN_TIMEOUT, work).await.is_err() {
        tracing::warn!("network release did not finish within {DOWN_TIMEOUT:?}");
    }
}

/// Sets every non-loopback link that is up to down (for shutdown), within
/// 5 s. Returns the names of the links set down; a link that refuses is
/// logged and skipped.
pub async fn down_all() -> Result<Vec<String>, NetworkError> {
    let nl = Netlink::connect().map_err(NetworkError::Netlink)?;
    let work = async {
        let links = nl.links().await.map_err(NetworkError::Links)?;
        let mut downed = Vec::new();
        for link in links.iter().filter(|l| !l.loopback && l.up) {
            match nl.set_up(link.index, &link.name, false).await {
                Ok(()) => {
                    tracing::info!(iface = %link.name, link = %"down");
                    downed.push(link.name.clone());
                }
                Err(e) => tracing::warn!(iface = %link.name, error = %e, "link not set down"),
            }
        }
        Ok(downed)
    };
    tokio::time::timeout(DOWN_TIMEOUT, work)
        .await
        .map_err(|_| NetworkError::Timeout(DOWN_TIMEOUT))?
}
