//! DHCPv4 messages (RFC 2131/2132) as this client sends and reads them,
//! encoded and decoded with `dhcproto`.
//!
//! Every request carries the broadcast flag (while the client has no
//! address), the client identifier (hardware type 1 + MAC) and the parameter
//! request list 1, 3, 6, 15, 26, 51, 54, 58, 59, 119: what QEMU's slirp,
//! dnsmasq and ISC servers all answer to.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

/// The options asked for in every request.
const PARAMETERS: [OptionCode; 10] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::ServerIdentifier,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::DomainSearch,
];

/// Largest DHCP message this client accepts (option 57).
const MAX_MESSAGE_SIZE: u16 = 1500;

/// Lease time assumed when an ACK carries none (RFC 2131 requires one; be
/// lenient but short).
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

/// Why a message could not be built.
#[derive(Debug, thiserror::Error)]
#[error("encode DHCP {kind}: {source}")]
pub struct EncodeError {
    kind: &'static str,
    #[source]
    source: dhcproto::error::EncodeError,
}

/// What a request is for; decides ciaddr, options 50/54 and the flags.
#[derive(Clone, Copy, Debug)]
pub enum RequestKind {
    /// DISCOVER, optionally asking for a previous address.
    Discover {
        /// Option 50, a hint for the server.
        previous: Option<Ipv4Addr>,
    },
    /// REQUEST answering an OFFER (options 50 and 54, ciaddr 0).
    Select {
        /// The offered address.
        offered: Ipv4Addr,
        /// The offering server.
        server: Ipv4Addr,
    },
    /// REQUEST extending a lease (ciaddr set, no 50/54): unicast while
    /// renewing, broadcast while rebinding.
    Extend {
        /// The leased address.
        ciaddr: Ipv4Addr,
    },
    /// RELEASE of a lease (ciaddr set, option 54).
    Release {
        /// The leased address.
        ciaddr: Ipv4Addr,
        /// The server that granted it.
        server: Ipv4Addr,
    },
}

/// Encodes a client message of `kind` with transaction id `xid`, `secs`
/// seconds since the exchange began, from hardware address `mac`.
pub fn build(kind: RequestKind, xid: u32, secs: u16, mac: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let chaddr = &mac[..mac.len().min(16)];
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_secs(secs)
        .set_chaddr(chaddr);
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(mac);
    let (name, msg_type) = match kind {
        RequestKind::Discover { .. } => ("DISCOVER", MessageType::Discover),
        RequestKind::Select { .. } | RequestKind::Extend { .. } => {
            ("REQUEST", MessageType::Request)
        }
        RequestKind::Release { .. } => ("RELEASE", MessageType::Release),
    };
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type));
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    match kind {
        RequestKind::Discover { previous } => {
            if let Some(prev) = previous {
                opts.insert(DhcpOption::RequestedIpAddress(prev));
            }
        }
        RequestKind::Select { offered, server } => {
            opts.insert(DhcpOption::RequestedIpAddress(offered));
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
        RequestKind::Extend { .. } => {}
        RequestKind::Release { server, .. } => {
            opts.insert(DhcpOption::ServerIdentifier(server));
        }
    }
    if !matches!(kind, RequestKind::Release { .. }) {
        opts.insert(DhcpOption::ParameterRequestList(PARAMETERS.to_vec()));
        opts.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
    }
    match kind {
        RequestKind::Discover { .. } | RequestKind::Select { .. } => {
            msg.set_flags(Flags::default().set_broadcast());
        }
        RequestKind::Extend { ciaddr } | RequestKind::Release { ciaddr, .. } => {
            msg.set_ciaddr(ciaddr);
        }
    }
    msg.to_vec()
        .map_err(|source| EncodeError { kind: name, source })
}

/// The parameters of an OFFER or ACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The address offered (yiaddr).
    pub address: Ipv4Addr,
    /// Prefix length from option 1 (classful default when absent).
    pub prefix: u8,
    /// Option 54, or the packet's source when absent.
    pub server: Ipv4Addr,
    /// First router of option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub nameservers: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 119, without trailing dots.
    pub search: Vec<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 51 (`None`: infinite lease).
    pub lease: Option<Duration>,
    /// Option 58.
    pub renew: Option<Duration>,
    /// Option 59.
    pub rebind: Option<Duration>,
}

/// A server reply that belongs to this client's transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// DHCPOFFER.
    Offer(Offer),
    /// DHCPACK.
    Ack(Offer),
    /// DHCPNAK, with the server's message when given.
    Nak(Option<String>),
}

/// Decodes `bytes` from `source`; `None` unless it is a BOOTREPLY for
/// transaction `xid` and hardware address `mac` with a message type this
/// client handles and sane contents.
pub fn parse_reply(bytes: &[u8], source: Ipv4Addr, xid: u32, mac: &[u8]) -> Option<Reply> {
    let msg = Message::from_bytes(bytes).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid {
        return None;
    }
    let chaddr = msg.chaddr();
    if chaddr.len() < mac.len() || chaddr[..mac.len()] != *mac {
        return None;
    }
    let opts = msg.opts();
    match opts.msg_type()? {
        MessageType::Nak => {
            let text = match opts.get(OptionCode::Message) {
                Some(DhcpOption::Message(m)) => Some(m.clone()),
                _ => None,
            };
            Some(Reply::Nak(text))
        }
        MessageType::Offer => offer_of(&msg, source).map(Reply::Offer),
        MessageType::Ack => offer_of(&msg, source).map(Reply::Ack),
        _ => None,
    }
}

fn offer_of(msg: &Message, source: Ipv4Addr) -> Option<Offer> {
    let address = msg.yiaddr();
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return None;
    }
    let opts = msg.opts();
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => mask_prefix(*mask)?,
        _ => classful_prefix(address),
    };
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => source,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.iter().copied().find(|r| !r.is_unspecified()),
        _ => None,
    };
    let nameservers = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(ns)) => ns.clone(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => {
            Some(d.trim_end_matches('.').to_string()).filter(|d| !d.is_empty())
        }
        _ => None,
    };
    let search = match opts.get(OptionCode::DomainSearch) {
        Some(DhcpOption::DomainSearch(names)) => names
            .iter()
            .map(|n| n.to_utf8().trim_end_matches('.').to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
        _ => None,
    };
    let secs = |code| match opts.get(code) {
        Some(DhcpOption::AddressLeaseTime(s))
        | Some(DhcpOption::Renewal(s))
        | Some(DhcpOption::Rebinding(s)) => Some(*s),
        _ => None,
    };
    let lease = match secs(OptionCode::AddressLeaseTime) {
        Some(u32::MAX) => None,
        Some(s) => Some(Duration::from_secs(u64::from(s.max(1)))),
        None => Some(DEFAULT_LEASE),
    };
    Some(Offer {
        address,
        prefix,
        server,
        router,
        nameservers,
        domain,
        search,
        mtu,
        lease,
        renew: secs(OptionCode::Renewal).map(|s| Duration::from_secs(u64::from(s))),
        rebind: secs(OptionCode::Rebinding).map(|s| Duration::from_secs(u64::from(s))),
    })
}

/// Prefix length of a contiguous netmask; `None` for a non-contiguous one.
fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return None;
    }
    // At most 32.
    Some(ones as u8)
}

/// The pre-CIDR class prefix of an address, for servers that send no mask.
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A reply shaped like QEMU slirp's ACK (mask, router, DNS, lease, server id).
    fn slirp_ack(xid: u32) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(xid)
            .set_chaddr(&MAC)
            .set_yiaddr(Ipv4Addr::new(10, 0, 2, 15));
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        m.to_vec().unwrap()
    }

    #[test]
    fn requests_carry_what_servers_need_and_replies_are_matched_to_them() {
        let d = Message::from_bytes(
            &build(RequestKind::Discover { previous: None }, 7, 0, &MAC).unwrap(),
        )
        .unwrap();
        assert!(d.flags().broadcast());
        assert_eq!(d.chaddr(), &MAC);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        let Some(DhcpOption::ClientIdentifier(id)) = d.opts().get(OptionCode::ClientIdentifier)
        else {
            panic!("no client id")
        };
        assert_eq!(id[..], [1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let Some(DhcpOption::ParameterRequestList(prl)) =
            d.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no PRL")
        };
        let codes: Vec<u8> = prl.iter().map(|c| u8::from(*c)).collect();
        for want in [1, 3, 6, 15, 26, 51, 54] {
            assert!(codes.contains(&want), "PRL lacks {want}: {codes:?}");
        }

        let server = Ipv4Addr::new(10, 0, 2, 2);
        let sel = Message::from_bytes(
            &build(
                RequestKind::Select {
                    offered: Ipv4Addr::new(10, 0, 2, 15),
                    server,
                },
                7,
                1,
                &MAC,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            sel.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(server))
        );
        assert_eq!(sel.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let renew = Message::from_bytes(
            &build(
                RequestKind::Extend {
                    ciaddr: Ipv4Addr::new(10, 0, 2, 15),
                },
                8,
                0,
                &MAC,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(renew.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(!renew.flags().broadcast());

        let ack = parse_reply(&slirp_ack(7), server, 7, &MAC).unwrap();
        let Reply::Ack(lease) = ack else {
            panic!("not an ack: {ack:?}")
        };
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.router, Some(server));
        assert_eq!(lease.nameservers, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.lease, Some(Duration::from_secs(86400)));
        // Another transaction or another client's reply is not ours.
        assert!(parse_reply(&slirp_ack(8), server, 7, &MAC).is_none());
        assert!(parse_reply(&slirp_ack(7), server, 7, &[0x52, 0x54, 0, 0, 0, 1]).is_none());
        assert!(parse_reply(b"garbage", server, 7, &MAC).is_none());
    }

    #[test]
    fn netmasks_become_prefixes_and_bad_masks_are_refused() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(classful_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
        assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 1, 3)), 24);
    }
}
