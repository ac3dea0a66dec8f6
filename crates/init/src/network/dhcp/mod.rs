//! The DHCPv4 client: messages ([`message`]), sockets ([`socket`]), the
//! exchanges ([`client`]), and installing a lease on its link (address with
//! the lease's prefix, default route via the router, MTU).

pub mod client;
pub mod message;
pub mod socket;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use machine_config::Cidr;

use super::netlink::{Netlink, NlError};
use super::state::{LeaseInfo, LinkRef};
use client::Lease;

/// Metric of default routes learnt by DHCP; static routes (metric 0 unless
/// set) take precedence over them.
pub const DHCP_ROUTE_METRIC: u32 = 1024;

const DEFAULT_ROUTE: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    prefix: 0,
};

fn cidr(lease: &Lease) -> Cidr {
    Cidr {
        addr: IpAddr::V4(lease.offer.address),
        prefix: lease.offer.prefix,
    }
}

/// Installs `new` on `link`, first removing what `old` installed and `new`
/// no longer has (another address or router).
pub async fn install(
    nl: &Netlink,
    link: &LinkRef,
    old: Option<&Lease>,
    new: &Lease,
) -> Result<(), NlError> {
    if let Some(old) = old {
        if old.offer.router.is_some() && old.offer.router != new.offer.router {
            remove_route(nl, link, old).await?;
        }
        if cidr(old) != cidr(new) {
            nl.del_address(link.index, &link.name, &cidr(old)).await?;
        }
    }
    if let (None, Some(mtu)) = (link.static_mtu, new.offer.mtu) {
        nl.set_mtu(link.index, &link.name, u32::from(mtu)).await?;
    }
    nl.add_address(link.index, &link.name, &cidr(new)).await?;
    if let Some(router) = new.offer.router {
        nl.replace_route(
            link.index,
            &link.name,
            &DEFAULT_ROUTE,
            Some(IpAddr::V4(router)),
            Some(DHCP_ROUTE_METRIC),
        )
        .await?;
    }
    Ok(())
}

/// (Re)installs the config's routes of `link` (after a lease: a gateway in
/// the leased subnet is reachable only then, and losing the address took
/// them away). Returns every failure.
pub async fn install_static_routes(nl: &Netlink, link: &LinkRef) -> Vec<NlError> {
    let mut errors = Vec::new();
    for route in &link.static_routes {
        if let Err(e) = nl
            .replace_route(
                link.index,
                &link.name,
                &route.to,
                Some(route.via),
                route.metric,
            )
            .await
        {
            errors.push(e);
        }
    }
    errors
}

async fn remove_route(nl: &Netlink, link: &LinkRef, lease: &Lease) -> Result<(), NlError> {
    match lease.offer.router {
        Some(router) => {
            nl.del_route(
                link.index,
                &link.name,
                &DEFAULT_ROUTE,
                IpAddr::V4(router),
                Some(DHCP_ROUTE_METRIC),
            )
            .await
        }
        None => Ok(()),
    }
}

/// Removes what `lease` installed on `link` (its default route and address).
pub async fn uninstall(nl: &Netlink, link: &LinkRef, lease: &Lease) -> Result<(), NlError> {
    remove_route(nl, link, lease).await?;
    nl.del_address(link.index, &link.name, &cidr(lease)).await
}

/// The reportable view of `lease` with the timing this client applies
/// (`cap`, see [`Lease::times`]).
pub fn lease_info(lease: &Lease, cap: Option<Duration>, renewals: u32) -> LeaseInfo {
    let times = lease.times(cap);
    let offer = &lease.offer;
    let search = if offer.search.is_empty() {
        offer.domain.iter().cloned().collect()
    } else {
        offer.search.clone()
    };
    LeaseInfo {
        address: cidr(lease),
        server: offer.server,
        router: offer.router,
        nameservers: offer.nameservers.clone(),
        search,
        mtu: offer.mtu,
        lease_s: offer.lease.map(|d| d.as_secs()),
        renew_s: times.map(|t| t.renew.as_secs()),
        rebind_s: times.map(|t| t.rebind.as_secs()),
        expires_s: times.map(|t| t.expiry.as_secs()),
        obtained_unix_s: lease
            .obtained_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        renewals,
    }
}
