//! The rtnetlink side of networking: finding links (by name or MAC, waiting a
//! bounded time for them to appear), MTU, link state, addresses and routes.
//!
//! Every operation is idempotent where the kernel allows it: an address that
//! is already present is not an error, and routes are added with
//! `NLM_F_REPLACE` so applying the same config twice changes nothing.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use machine_config::Cidr;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use tokio::time::Instant;

/// How often the link table is re-read while waiting for a link to appear.
const LINK_POLL: Duration = Duration::from_millis(100);

/// A failed netlink operation, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct NlError {
    /// What was being done (`set MTU 9000 on eth0`).
    pub what: String,
    /// The kernel's or the library's error.
    #[source]
    pub source: rtnetlink::Error,
}

/// The kernel errno carried by a netlink error reply, if any (positive).
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Kernel name (`eth0`).
    pub name: String,
    /// Hardware address, lower-case `aa:bb:cc:dd:ee:ff` (empty for links
    /// without one).
    pub mac: String,
    /// Hardware address bytes.
    pub mac_bytes: Vec<u8>,
    /// Whether the link is administratively up.
    pub up: bool,
    /// Whether this is a loopback link.
    pub loopback: bool,
    /// Current MTU, when reported.
    pub mtu: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            mac_bytes: Vec::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            mtu: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(bytes) => {
                    link.mac = format_mac(bytes);
                    link.mac_bytes = bytes.clone();
                }
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                _ => {}
            }
        }
        link
    }
}

/// Formats hardware address bytes as lower-case, colon-separated hex.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How a configured interface is selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// By kernel name.
    Name(String),
    /// By MAC address (compared case-insensitively).
    Mac(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Name(n) => write!(f, "{n}"),
            Selector::Mac(m) => write!(f, "mac {m}"),
        }
    }
}

impl Selector {
    fn matches(&self, link: &Link) -> bool {
        match self {
            Selector::Name(name) => link.name == *name,
            Selector::Mac(mac) => !link.mac.is_empty() && link.mac.eq_ignore_ascii_case(mac),
        }
    }
}

/// A connected rtnetlink handle (its connection task runs on the current
/// tokio runtime and ends when the last handle is dropped).
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace
    /// and spawns its connection task.
    pub fn connect() -> std::io::Result<Netlink> {
        let (conn, handle, _messages) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NlError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NlError {
                what: "list links".to_string(),
                source,
            })?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Finds the link `sel` names, re-reading the link table until it
    /// appears or `wait` has passed (a NIC driver may still be probing).
    /// `Ok(None)` when it never appeared.
    pub async fn wait_for_link(
        &self,
        sel: &Selector,
        wait: Duration,
    ) -> Result<Option<Link>, NlError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(link) = self.links().await?.into_iter().find(|l| sel.matches(l)) {
                return Ok(Some(link));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(LINK_POLL).await;
        }
    }

    /// Sets the MTU of link `index` (named `name` in errors).
    pub async fn set_mtu(&self, index: u32, name: &str, mtu: u32) -> Result<(), NlError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| NlError {
                what: format!("set MTU {mtu} on {name}"),
                source,
            })
    }

    /// Sets link `index` administratively up or down.
    pub async fn set_up(&self, index: u32, name: &str, up: bool) -> Result<(), NlError> {
        let builder = LinkUnspec::new_with_index(index);
        let msg = if up { builder.up() } else { builder.down() }.build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| NlError {
                what: format!("set {name} {}", if up { "up" } else { "down" }),
                source,
            })
    }

    /// Adds `addr` to link `index`; an address already present is fine.
    pub async fn add_address(&self, index: u32, name: &str, addr: &Cidr) -> Result<(), NlError> {
        match self
            .handle
            .address()
            .add(index, addr.addr, addr.prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(NlError {
                what: format!("add address {addr} to {name}"),
                source,
            }),
        }
    }

    /// Removes `addr` from link `index`; an address already gone is fine.
    pub async fn del_address(&self, index: u32, name: &str, addr: &Cidr) -> Result<(), NlError> {
        let what = || format!("remove address {addr} from {name}");
        let msgs = self.address_messages(index).await?;
        for msg in msgs {
            if address_of(&msg).as_ref() == Some(addr) {
                return match self.handle.address().del(msg).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
                    Err(source) => Err(NlError {
                        what: what(),
                        source,
                    }),
                };
            }
        }
        Ok(())
    }

    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>, NlError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NlError {
                what: format!("list addresses of link {index}"),
                source,
            })
    }

    /// The global-scope addresses of link `index` (no link-local or host
    /// addresses), in kernel order.
    pub async fn global_addresses(&self, index: u32) -> Result<Vec<Cidr>, NlError> {
        let msgs = self.address_messages(index).await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.scope == AddressScope::Universe)
            .filter_map(address_of)
            .collect())
    }

    /// Adds (or replaces) the route to `to` via `via` (or on-link when
    /// `None`) out of link `index`, with an optional metric.
    pub async fn replace_route(
        &self,
        index: u32,
        name: &str,
        to: &Cidr,
        via: Option<IpAddr>,
        metric: Option<u32>,
    ) -> Result<(), NlError> {
        let what = || match via {
            Some(gw) => format!("add route {to} via {gw} dev {name}"),
            None => format!("add route {to} dev {name}"),
        };
        let net = to.network();
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.addr, net.prefix)
            .map_err(|e| invalid_route(what(), &e))?
            .output_interface(index);
        if let Some(gw) = via {
            builder = builder.gateway(gw).map_err(|e| invalid_route(what(), &e))?;
        }
        if let Some(metric) = metric {
            builder = builder.priority(metric);
        }
        self.handle
            .route()
            .add(builder.build())
            .replace()
            .execute()
            .await
            .map_err(|source| NlError {
                what: what(),
                source,
            })
    }

    /// Removes the route to `to` via `via` (with `metric`, when given) out
    /// of link `index`; a route already gone is fine.
    pub async fn del_route(
        &self,
        index: u32,
        name: &str,
        to: &Cidr,
        via: IpAddr,
        metric: Option<u32>,
    ) -> Result<(), NlError> {
        let what = || format!("remove route {to} via {via} dev {name}");
        let net = to.network();
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(net.addr, net.prefix)
            .map_err(|e| invalid_route(what(), &e))?
            .output_interface(index)
            .gateway(via)
            .map_err(|e| invalid_route(what(), &e))?;
        if let Some(metric) = metric {
            builder = builder.priority(metric);
        }
        let msg = builder.build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(source) => Err(NlError {
                what: what(),
                source,
            }),
        }
    }
}

fn invalid_route(what: String, err: &dyn std::fmt::Display) -> NlError {
    NlError {
        what,
        source: rtnetlink::Error::InvalidNla(err.to_string()),
    }
}

/// The address of an address message as a CIDR (`IFA_LOCAL` for IPv4, which
/// differs from `IFA_ADDRESS` on point-to-point links; `IFA_ADDRESS` else).
fn address_of(msg: &AddressMessage) -> Option<Cidr> {
    let mut address = None;
    let mut local = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            _ => {}
        }
    }
    local.or(address).map(|addr| Cidr {
        addr,
        prefix: msg.header.prefix_len,
    })
}
