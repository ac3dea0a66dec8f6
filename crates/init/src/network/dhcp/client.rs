//! One interface's DHCPv4 exchanges: DISCOVER → OFFER → REQUEST → ACK with
//! retransmission, RENEW (unicast to the server), REBIND (broadcast) and
//! RELEASE. No netlink here: the caller installs what a lease says.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::message::{self, Offer, Reply, RequestKind};
use super::socket::{self, PacketSocket};

/// Retransmission intervals of DISCOVER, doubling up to the last value.
const DISCOVER_RETRANSMIT: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];
/// Retransmission intervals of the REQUEST answering an OFFER; after the
/// last one the client starts over with DISCOVER.
const SELECT_RETRANSMIT: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// Bounds of the RENEW/REBIND retransmission interval (RFC 2131 4.4.5: half
/// the time left, at least 60 s on real leases; short test leases need less).
const EXTEND_RETRANSMIT_MIN: Duration = Duration::from_millis(250);
const EXTEND_RETRANSMIT_MAX: Duration = Duration::from_secs(60);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// A socket could not be opened, or a send or receive failed.
    #[error("DHCP socket on {iface}: {source}")]
    Io {
        /// Interface name.
        iface: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A message could not be encoded.
    #[error(transparent)]
    Encode(#[from] message::EncodeError),
    /// No server answered in time.
    #[error("no DHCP lease on {iface} within {waited_s} s ({stage})")]
    Timeout {
        /// Interface name.
        iface: String,
        /// Seconds waited.
        waited_s: u64,
        /// The last stage reached (`no OFFER`, `OFFER from X but no ACK`).
        stage: String,
    },
    /// The server refused the request.
    #[error("DHCP server refused the lease on {iface} (NAK{})", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Nak {
        /// Interface name.
        iface: String,
        /// The server's explanation, if it sent one.
        message: Option<String>,
    },
}

/// A lease granted by an ACK, and when.
#[derive(Clone, Debug)]
pub struct Lease {
    /// What the server granted.
    pub offer: Offer,
    /// When the ACK arrived (monotonic).
    pub obtained: Instant,
    /// When the ACK arrived (wall clock, for reports).
    pub obtained_wall: SystemTime,
}

/// When a lease must be renewed, rebound and given up, relative to when it
/// was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    /// T1: start RENEW.
    pub renew: Duration,
    /// T2: start REBIND.
    pub rebind: Duration,
    /// End of the lease.
    pub expiry: Duration,
}

impl Lease {
    /// T1, T2 and expiry (`None` for an infinite lease). The server's T1/T2
    /// are used when sane, else 1/2 and 7/8 of the lease (RFC 2131 4.4.5).
    /// `cap` shortens the lease as seen by this client (never lengthens
    /// it), scaling T1 and T2 with it.
    pub fn times(&self, cap: Option<Duration>) -> Option<LeaseTimes> {
        let lease = self.offer.lease?;
        let mut renew = self.offer.renew.filter(|t| *t < lease).unwrap_or(lease / 2);
        let mut rebind = self
            .offer
            .rebind
            .filter(|t| *t < lease && *t > renew)
            .unwrap_or(lease.mul_f64(0.875).max(renew));
        let mut expiry = lease;
        if let Some(cap) = cap.filter(|c| *c < lease) {
            let scale = cap.as_secs_f64() / lease.as_secs_f64();
            renew = renew.mul_f64(scale);
            rebind = rebind.mul_f64(scale);
            expiry = cap;
        }
        Some(LeaseTimes {
            renew,
            rebind,
            expiry,
        })
    }
}

/// A DHCP client bound to one interface.
pub struct Client {
    iface: String,
    mac: Vec<u8>,
    sock: PacketSocket,
}

/// A fresh transaction id (std's randomly keyed hasher; no RNG crate needed).
fn new_xid() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    // Truncation to 32 bits is intended.
    h.finish() as u32
}

fn secs_since(start: Instant) -> u16 {
    u16::try_from(start.elapsed().as_secs()).unwrap_or(u16::MAX)
}

impl Client {
    /// Opens the client's packet socket on interface `iface` (`ifindex`)
    /// with hardware address `mac`.
    pub fn new(iface: &str, ifindex: u32, mac: &[u8]) -> Result<Client, DhcpError> {
        let sock = PacketSocket::open(ifindex).map_err(|source| DhcpError::Io {
            iface: iface.to_string(),
            source,
        })?;
        Ok(Client {
            iface: iface.to_string(),
            mac: mac.to_vec(),
            sock,
        })
    }

    fn io(&self, source: io::Error) -> DhcpError {
        DhcpError::Io {
            iface: self.iface.clone(),
            source,
        }
    }

    /// Waits until `until` for a reply to `xid` that `accept` takes.
    async fn await_reply(
        &self,
        xid: u32,
        until: Instant,
        accept: impl Fn(&Reply) -> bool,
    ) -> Result<Option<Reply>, DhcpError> {
        let wait = async {
            loop {
                let dgram = self.sock.recv().await?;
                if let Some(reply) =
                    message::parse_reply(&dgram.payload, dgram.source, xid, &self.mac)
                {
                    if accept(&reply) {
                        return Ok::<_, io::Error>(reply);
                    }
                }
            }
        };
        match tokio::time::timeout_at(until, wait).await {
            Ok(Ok(reply)) => Ok(Some(reply)),
            Ok(Err(e)) => Err(self.io(e)),
            Err(_elapsed) => Ok(None),
        }
    }

    /// Obtains a new lease (DISCOVER, OFFER, REQUEST, ACK), retransmitting
    /// until `deadline`. `previous` is offered to the server as a hint.
    pub async fn acquire(
        &self,
        deadline: Instant,
        previous: Option<Ipv4Addr>,
    ) -> Result<Lease, DhcpError> {
        let started = Instant::now();
        let mut stage = "no OFFER".to_string();
        self.sock.drain();
        while Instant::now() < deadline {
            let xid = new_xid();
            // DISCOVER until an OFFER arrives.
            let mut offer = None;
            for attempt in 0usize.. {
                let discover = message::build(
                    RequestKind::Discover { previous },
                    xid,
                    secs_since(started),
                    &self.mac,
                )?;
                self.sock
                    .send_broadcast(Ipv4Addr::UNSPECIFIED, &discover)
                    .map_err(|e| self.io(e))?;
                let wait = DISCOVER_RETRANSMIT[attempt.min(DISCOVER_RETRANSMIT.len() - 1)];
                let until = (Instant::now() + wait).min(deadline);
                if let Some(Reply::Offer(o)) = self
                    .await_reply(xid, until, |r| matches!(r, Reply::Offer(_)))
                    .await?
                {
                    offer = Some(o);
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            let Some(offer) = offer else { break };
            tracing::debug!(iface = %self.iface, dhcp = %"offer", addr = %offer.address, server = %offer.server);
            stage = format!(
                "OFFER of {} from {} but no ACK",
                offer.address, offer.server
            );
            // REQUEST the offered address until ACK or NAK.
            let request = message::build(
                RequestKind::Select {
                    offered: offer.address,
                    server: offer.server,
                },
                xid,
                secs_since(started),
                &self.mac,
            )?;
            for wait in SELECT_RETRANSMIT {
                self.sock
                    .send_broadcast(Ipv4Addr::UNSPECIFIED, &request)
                    .map_err(|e| self.io(e))?;
                let until = (Instant::now() + wait).min(deadline);
                let from_server = |r: &Reply| match r {
                    Reply::Ack(a) => a.server == offer.server,
                    Reply::Nak(_) => true,
                    Reply::Offer(_) => false,
                };
                match self.await_reply(xid, until, from_server).await? {
                    Some(Reply::Ack(ack)) => return Ok(self.lease(ack)),
                    Some(Reply::Nak(message)) => {
                        tracing::warn!(iface = %self.iface, dhcp = %"nak", server = %offer.server, message = %message.as_deref().unwrap_or(""));
                        break;
                    }
                    _ => {}
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        Err(DhcpError::Timeout {
            iface: self.iface.clone(),
            waited_s: started.elapsed().as_secs(),
            stage,
        })
    }

    fn lease(&self, offer: Offer) -> Lease {
        Lease {
            offer,
            obtained: Instant::now(),
            obtained_wall: SystemTime::now(),
        }
    }

    /// Extends `lease` until `until`: RENEW unicast to the granting server
    /// (`unicast`), or REBIND broadcast to any server. `Ok(Some)` on ACK,
    /// `Ok(None)` when no server answered in time, `Err(Nak)` when refused.
    pub async fn extend(
        &self,
        lease: &Lease,
        unicast: bool,
        until: Instant,
    ) -> Result<Option<Lease>, DhcpError> {
        let started = Instant::now();
        let xid = new_xid();
        let ciaddr = lease.offer.address;
        self.sock.drain();
        let udp = if unicast {
            Some(socket::unicast_socket(&self.iface).map_err(|e| self.io(e))?)
        } else {
            None
        };
        let server = SocketAddrV4::new(lease.offer.server, socket::SERVER_PORT);
        while Instant::now() < until {
            let request = message::build(
                RequestKind::Extend { ciaddr },
                xid,
                secs_since(started),
                &self.mac,
            )?;
            match &udp {
                Some(udp) => {
                    udp.send_to(&request, server)
                        .await
                        .map_err(|e| self.io(e))?;
                }
                None => self
                    .sock
                    .send_broadcast(ciaddr, &request)
                    .map_err(|e| self.io(e))?,
            }
            let left = until.saturating_duration_since(Instant::now());
            let wait = (left / 2).clamp(EXTEND_RETRANSMIT_MIN, EXTEND_RETRANSMIT_MAX);
            let next = (Instant::now() + wait).min(until);
            let granted = |r: &Reply| matches!(r, Reply::Ack(_) | Reply::Nak(_));
            match self.await_reply(xid, next, granted).await? {
                Some(Reply::Ack(ack)) => return Ok(Some(self.lease(ack))),
                Some(Reply::Nak(message)) => {
                    return Err(DhcpError::Nak {
                        iface: self.iface.clone(),
                        message,
                    })
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Tells the granting server that `lease` is no longer used (best effort:
    /// RELEASE has no answer).
    pub async fn release(&self, lease: &Lease) -> Result<(), DhcpError> {
        let msg = message::build(
            RequestKind::Release {
                ciaddr: lease.offer.address,
                server: lease.offer.server,
            },
            new_xid(),
            0,
            &self.mac,
        )?;
        let udp = socket::unicast_socket(&self.iface).map_err(|e| self.io(e))?;
        udp.send_to(
            &msg,
            SocketAddrV4::new(lease.offer.server, socket::SERVER_PORT),
        )
        .await
        .map_err(|e| self.io(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn lease(lease_s: Option<u64>, t1: Option<u64>, t2: Option<u64>) -> Lease {
        Lease {
            offer: Offer {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                server: Ipv4Addr::new(10, 0, 2, 2),
                router: None,
                nameservers: vec![],
                domain: None,
                search: vec![],
                mtu: None,
                lease: lease_s.map(Duration::from_secs),
                renew: t1.map(Duration::from_secs),
                rebind: t2.map(Duration::from_secs),
            },
            obtained: Instant::now(),
            obtained_wall: SystemTime::now(),
        }
    }

    #[test]
    fn lease_times_follow_the_server_or_rfc_defaults_and_the_cap_only_shortens() {
        let s = Duration::from_secs;
        let t = lease(Some(86400), None, None).times(None).unwrap();
        assert_eq!(
            (t.renew, t.rebind, t.expiry),
            (s(43200), s(75600), s(86400))
        );
        let t = lease(Some(120), Some(60), Some(105)).times(None).unwrap();
        assert_eq!((t.renew, t.rebind, t.expiry), (s(60), s(105), s(120)));
        // Nonsense T1/T2 from a server fall back to the defaults.
        let t = lease(Some(100), Some(500), Some(10)).times(None).unwrap();
        assert_eq!((t.renew, t.rebind), (s(50), Duration::from_millis(87500)));
        // A cap of 8 s on a 120 s lease scales T1/T2 with it.
        let t = lease(Some(120), Some(60), Some(105))
            .times(Some(s(8)))
            .unwrap();
        assert_eq!((t.renew, t.rebind, t.expiry), (s(4), s(7), s(8)));
        // A cap longer than the lease changes nothing; infinite leases never renew.
        let t = lease(Some(120), None, None).times(Some(s(600))).unwrap();
        assert_eq!(t.expiry, s(120));
        assert!(lease(None, None, None).times(Some(s(8))).is_none());
    }
}
