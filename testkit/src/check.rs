//! The one independent validity check of a packet the gateway emits: IPv4 header checksum and length,
//! transport header inside the datagram, TCP/UDP/ICMP checksums, all read and computed by etherparse
//! (an implementation independent of ftpnat's `wire`, so a checksum bug there cannot hide itself);
//! for an IPv6 datagram (what NAT64 emits towards the LAN) its payload length and the TCP/UDP/ICMPv6
//! checksums over the IPv6 pseudo-header. Must not: modify packets or know about flows.

use etherparse::{
    Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv4Header, Ipv4HeaderSlice, Ipv6Header, Ipv6HeaderSlice,
    TcpHeaderSlice, UdpHeaderSlice,
};

/// [`check_packet`] or [`check_packet6`], by the datagram's version nibble.
pub fn check_packet_any(pkt: &[u8]) -> Result<(), String> {
    match pkt.first().map(|b| b >> 4) {
        Some(6) => check_packet6(pkt),
        _ => check_packet(pkt),
    }
}

/// Checks one IPv6 datagram without extension headers: payload length equal to the buffer, transport
/// header inside it, and the TCP/UDP/ICMPv6 checksum computed by etherparse over the IPv6
/// pseudo-header (RFC 8200 §8.1: a zero UDP checksum is an error in IPv6). A fragment header (or any
/// other extension header) ends the checks after the length.
pub fn check_packet6(pkt: &[u8]) -> Result<(), String> {
    let ip = Ipv6HeaderSlice::from_slice(pkt).map_err(|e| format!("IPv6 header: {e}"))?;
    if usize::from(ip.payload_length()) + 40 != pkt.len() {
        return Err(format!(
            "IPv6 payload length {} but the datagram is {} bytes",
            ip.payload_length(),
            pkt.len()
        ));
    }
    let payload = &pkt[40..];
    if ip.next_header() == IpNumber::IPV6_ICMP {
        let icmp = Icmpv6Slice::from_slice(payload).map_err(|e| format!("ICMPv6: {e}"))?;
        if !icmp.is_checksum_valid(ip.source(), ip.destination()) {
            return Err(format!("ICMPv6 checksum {:#06x} does not verify", icmp.checksum()));
        }
    }
    check_tcp_udp(ip.next_header(), payload, Pseudo::V6(&ip.to_header()))
}

/// The IP header a transport checksum covers (its pseudo-header, RFC 9293 §3.1, RFC 8200 §8.1).
#[derive(Clone, Copy)]
enum Pseudo<'a> {
    V4(&'a Ipv4Header),
    V6(&'a Ipv6Header),
}

/// A TCP or UDP header inside `payload` (the IP payload), the UDP length, and the checksum computed by
/// etherparse; nothing for another protocol.
fn check_tcp_udp(proto: IpNumber, payload: &[u8], ip: Pseudo<'_>) -> Result<(), String> {
    match proto {
        IpNumber::TCP => {
            let tcp = TcpHeaderSlice::from_slice(payload).map_err(|e| format!("TCP header: {e}"))?;
            let data = &payload[tcp.slice().len()..];
            let h = tcp.to_header();
            let want = match ip {
                Pseudo::V4(ip) => h.calc_checksum_ipv4(ip, data),
                Pseudo::V6(ip) => h.calc_checksum_ipv6(ip, data),
            }
            .map_err(|e| format!("TCP length: {e}"))?;
            if want != tcp.checksum() {
                return Err(format!("TCP checksum {:#06x}, expected {want:#06x}", tcp.checksum()));
            }
        }
        IpNumber::UDP => {
            let udp = UdpHeaderSlice::from_slice(payload).map_err(|e| format!("UDP header: {e}"))?;
            if usize::from(udp.length()) != payload.len() {
                return Err(format!(
                    "UDP length {} but the IP payload is {} bytes",
                    udp.length(),
                    payload.len()
                ));
            }
            // RFC 768: a zero checksum means "none computed" (IPv4 only).
            if udp.checksum() == 0 && matches!(ip, Pseudo::V4(_)) {
                return Ok(());
            }
            let h = udp.to_header();
            let want = match ip {
                Pseudo::V4(ip) => h.calc_checksum_ipv4(ip, &payload[8..]),
                Pseudo::V6(ip) => h.calc_checksum_ipv6(ip, &payload[8..]),
            }
            .map_err(|e| format!("UDP length: {e}"))?;
            if want != udp.checksum() {
                return Err(format!("UDP checksum {:#06x}, expected {want:#06x}", udp.checksum()));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks one IPv4 datagram: header checksum, total length equal to the buffer, transport header inside the
/// datagram, and the TCP/UDP/ICMP checksum computed by etherparse. Fragments get only the IP checks.
pub fn check_packet(pkt: &[u8]) -> Result<(), String> {
    let ip = Ipv4HeaderSlice::from_slice(pkt).map_err(|e| format!("IPv4 header: {e}"))?;
    let header = ip.to_header();
    if usize::from(ip.total_len()) != pkt.len() {
        return Err(format!("IPv4 total length {} but the datagram is {} bytes", ip.total_len(), pkt.len()));
    }
    let want = header.calc_header_checksum();
    if want != ip.header_checksum() {
        return Err(format!("IPv4 header checksum {:#06x}, expected {want:#06x}", ip.header_checksum()));
    }
    if ip.is_fragmenting_payload() {
        return Ok(());
    }
    let payload = &pkt[ip.slice().len()..];
    if ip.protocol() == IpNumber::ICMP {
        let icmp = Icmpv4Slice::from_slice(payload).map_err(|e| format!("ICMP: {e}"))?;
        let want = icmp.icmp_type().calc_checksum(icmp.payload());
        if want != icmp.checksum() {
            return Err(format!("ICMP checksum {:#06x}, expected {want:#06x}", icmp.checksum()));
        }
    }
    check_tcp_udp(ip.protocol(), payload, Pseudo::V4(&header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn v6_tcp(payload: &[u8]) -> Vec<u8> {
        let (src, dst) = ([0x20, 1, 0xd, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], [0x64; 16]);
        let mut v = Vec::new();
        PacketBuilder::ipv6(src, dst, 64).tcp(40000, 21, 7, 1000).ack(9).write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn an_ipv6_segment_is_checked_over_its_pseudo_header() {
        let good = v6_tcp(b"PASV\r\n");
        assert_eq!(check_packet_any(&good), Ok(()));
        // One payload byte changed (what a rewrite without a checksum update leaves).
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(check_packet_any(&bad).unwrap_err().contains("TCP checksum"));
        // An address byte changed: the pseudo-header is covered.
        let mut moved = good.clone();
        moved[23] ^= 1;
        assert!(check_packet6(&moved).unwrap_err().contains("TCP checksum"));
        // The payload length disagreeing with the buffer.
        let mut short = good;
        short.pop();
        assert!(check_packet6(&short).unwrap_err().contains("payload length"));
    }
}
