//! The sockets a DHCPv4 client needs before and after it has an address.
//!
//! [`PacketSocket`] is an `AF_PACKET` datagram socket bound to one interface
//! with a kernel filter for UDP to port 68. It receives every reply (OFFER,
//! ACK, NAK), broadcast or unicast, even while the interface has no IPv4
//! address: replies never pass the IP stack's checks (reverse-path filter,
//! "no address on this interface") that can drop them for a plain UDP socket.
//! It also sends the broadcast messages (DISCOVER, REQUEST while selecting or
//! rebinding) with hand-built IPv4 and UDP headers from 0.0.0.0 or the
//! leased address.
//!
//! [`unicast_socket`] is a UDP socket on port 68 bound to the interface, used
//! to send RENEW and RELEASE to the server once the interface has its
//! address; its replies are read from the packet socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// DHCP server port.
pub const SERVER_PORT: u16 = 67;

/// `SO_ATTACH_FILTER` (asm-generic/socket.h); not exported by `libc` for
/// every Linux target.
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `PACKET_OUTGOING` (linux/if_packet.h): a frame this host sent.
const PACKET_OUTGOING: u8 = 4;
/// Largest IP packet read; DHCP messages fit well inside an Ethernet frame.
const RECV_BUF: usize = 4096;

/// Classic BPF program run by the kernel on each IPv4 packet of the
/// interface (offset 0 is the IP header on a `SOCK_DGRAM` packet socket):
/// keep unfragmented UDP packets to port 68, drop everything else.
const FILTER: [(u16, u8, u8, u32); 9] = [
    (0x30, 0, 0, 9),       // ldb [9]            ; IP protocol
    (0x15, 0, 6, 17),      // jeq #17 (UDP), else drop
    (0x28, 0, 0, 6),       // ldh [6]            ; flags + fragment offset
    (0x45, 4, 0, 0x1fff),  // jset #0x1fff -> drop (a later fragment)
    (0xb1, 0, 0, 0),       // ldxb 4*([0]&0xf)   ; IP header length
    (0x48, 0, 0, 2),       // ldh [x+2]          ; UDP destination port
    (0x15, 0, 1, 68),      // jeq #68, else drop
    (0x06, 0, 0, 0x40000), // ret: accept
    (0x06, 0, 0, 0),       // ret: drop
];

/// A received UDP datagram addressed to the client port.
#[derive(Debug)]
pub struct Datagram {
    /// IP source address (the server or a relay).
    pub source: Ipv4Addr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// An `AF_PACKET` socket on one interface, carrying IPv4.
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: i32,
}

fn eth_p_ip_be() -> u16 {
    // ETH_P_IP is 0x0800; it fits u16 by definition of an EtherType.
    (libc::ETH_P_IP as u16).to_be()
}

fn last_os_error(what: &str) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

impl PacketSocket {
    /// Opens the socket on interface `ifindex` with the port-68 filter.
    /// Must run inside a tokio runtime (the fd is registered with it).
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
        })?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(eth_p_ip_be()),
            )
        };
        if raw < 0 {
            return Err(last_os_error("open AF_PACKET socket"));
        }
        // SAFETY: `raw` is a freshly created, valid descriptor owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let program: Vec<libc::sock_filter> = FILTER
            .iter()
            .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
            .collect();
        let fprog = libc::sock_fprog {
            // FILTER has 9 instructions.
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points to `program`, which outlives the call; the
        // kernel copies the program.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os_error("attach the DHCP packet filter"));
        }

        let mut sll = sockaddr_ll(ifindex);
        sll.sll_protocol = eth_p_ip_be();
        // SAFETY: `sll` is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os_error("bind the packet socket to the interface"));
        }
        // SAFETY: `fd` is an open descriptor owned by the AsyncFd from here
        // on; OwnedFd always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| io::Error::other(format!("register the packet socket with tokio: {e}")))?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Broadcasts `payload` as UDP 68 → 67 to 255.255.255.255 in an
    /// Ethernet broadcast frame, from `source` (0.0.0.0 before a lease).
    pub fn send_broadcast(&self, source: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let packet = ipv4_udp_packet(source, Ipv4Addr::BROADCAST, payload)?;
        let mut sll = sockaddr_ll(self.ifindex);
        sll.sll_protocol = eth_p_ip_be();
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: buffer and address are valid for the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os_error("send a broadcast DHCP packet"));
        }
        Ok(())
    }

    /// Discards every queued packet: between exchanges the socket keeps
    /// receiving (other clients' broadcast replies on a busy segment), and a
    /// full queue would drop the reply to the next request.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` is valid for its length; MSG_DONTWAIT never blocks.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                return; // EAGAIN (empty) or an error the next recv reports
            }
        }
    }

    /// Waits for the next UDP datagram to port 68 arriving on the interface
    /// (frames this host sent are skipped, as are malformed packets).
    pub async fn recv(&self) -> io::Result<Datagram> {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: an all-zero sockaddr_ll is a valid value.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buffer and address storage are valid for the given lengths.
                let n = unsafe {
                    libc::recvfrom(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut from_len,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                // n >= 0 was just checked.
                Ok((n as usize, from.sll_pkttype))
            });
            match result {
                Ok(Ok((n, pkttype))) => {
                    if pkttype == PACKET_OUTGOING {
                        continue;
                    }
                    if let Some(dgram) = parse_ipv4_udp(&buf[..n]) {
                        return Ok(dgram);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn sockaddr_ll(ifindex: i32) -> libc::sockaddr_ll {
    // SAFETY: an all-zero sockaddr_ll is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    // AF_PACKET is 17.
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex;
    sll
}

/// A UDP socket on `0.0.0.0:68` bound to interface `ifname`, for unicast
/// to the server once the interface has its leased address.
pub fn unicast_socket(ifname: &str) -> io::Result<tokio::net::UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io::Error::other(format!("open UDP socket: {e}")))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .map_err(|e| io::Error::other(format!("SO_REUSEADDR: {e}")))?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )
    .map_err(|e| io::Error::other(format!("SO_BINDTODEVICE {ifname}: {e}")))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| {
        io::Error::other(format!("bind UDP 0.0.0.0:{CLIENT_PORT} on {ifname}: {e}"))
    })?;
    let std_sock = std::net::UdpSocket::from(fd);
    tokio::net::UdpSocket::from_std(std_sock)
}

/// The Internet checksum (RFC 1071) of `data`, continuing from `sum`.
fn ones_complement_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold_checksum(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // `sum` fits in 16 bits after folding.
    !(sum as u16)
}

/// An IPv4 packet carrying `payload` in UDP from port 68 to port 67.
pub fn ipv4_udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "DHCP message too large"))?;
    let total_len = udp_len
        .checked_add(20)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "DHCP message too large"))?;
    let mut pkt = Vec::with_capacity(usize::from(total_len));
    // IPv4 header: version 4, IHL 5, TOS 0x10 (low delay, as DHCP clients do).
    pkt.extend_from_slice(&[0x45, 0x10]);
    pkt.extend_from_slice(&total_len.to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0, 0]); // identification, flags, fragment offset
    pkt.extend_from_slice(&[64, 17, 0, 0]); // TTL, protocol UDP, checksum placeholder
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
    let ip_sum = fold_checksum(ones_complement_sum(0, &pkt[..20]));
    pkt[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // UDP header.
    pkt.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    pkt.extend_from_slice(&SERVER_PORT.to_be_bytes());
    pkt.extend_from_slice(&udp_len.to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    // Pseudo-header: source, destination, zero + protocol, UDP length.
    let mut sum = ones_complement_sum(0, &src.octets());
    sum = ones_complement_sum(sum, &dst.octets());
    sum += 17 + u32::from(udp_len);
    sum = ones_complement_sum(sum, &pkt[20..]);
    let mut udp_sum = fold_checksum(sum);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    pkt[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    Ok(pkt)
}

/// The UDP datagram inside an IPv4 packet, when it is a well-formed,
/// unfragmented UDP packet to port 68. The UDP checksum is not verified:
/// on virtual links (veth, virtio with offload) packet sockets see it
/// before the stack fills it in; the DHCP layer checks xid and MAC.
pub fn parse_ipv4_udp(pkt: &[u8]) -> Option<Datagram> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
    if ihl < 20 || total < ihl + 8 || total > pkt.len() || *pkt.get(9)? != 17 {
        return None;
    }
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x3fff != 0 {
        return None; // a fragment (MF set or offset non-zero)
    }
    let source = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let udp = &pkt[ihl..total];
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if dst_port != CLIENT_PORT || udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    Some(Datagram {
        source,
        payload: udp[8..udp_len].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn built_packets_parse_back_and_carry_valid_checksums() {
        let payload: Vec<u8> = (0u8..=250).collect(); // odd length
        let src = Ipv4Addr::new(10, 0, 2, 15);
        let pkt = ipv4_udp_packet(src, Ipv4Addr::BROADCAST, &payload).unwrap();
        // A correct IPv4 header sums to 0xffff (checksum 0 after folding).
        assert_eq!(fold_checksum(ones_complement_sum(0, &pkt[..20])), 0);
        // Same for UDP with its pseudo-header.
        let mut sum = ones_complement_sum(0, &src.octets());
        sum = ones_complement_sum(sum, &Ipv4Addr::BROADCAST.octets());
        sum += 17 + (pkt.len() as u32 - 20);
        assert_eq!(fold_checksum(ones_complement_sum(sum, &pkt[20..])), 0);
        // The parser only accepts packets to port 68; rewrite the ports to
        // look like a server reply.
        let mut reply = pkt.clone();
        reply[20..22].copy_from_slice(&67u16.to_be_bytes());
        reply[22..24].copy_from_slice(&68u16.to_be_bytes());
        let d = parse_ipv4_udp(&reply).unwrap();
        assert_eq!(d.source, src);
        assert_eq!(d.payload, payload);
        // The request itself (to port 67), a truncated packet and a fragment are refused.
        assert!(parse_ipv4_udp(&pkt).is_none());
        assert!(parse_ipv4_udp(&reply[..reply.len() - 1]).is_none());
        let mut frag = reply.clone();
        frag[6] = 0x20; // MF
        assert!(parse_ipv4_udp(&frag).is_none());
    }
}
