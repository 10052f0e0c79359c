//! The one independent validity check of a packet the gateway emits: IPv4 header checksum and length,
//! transport header inside the datagram, TCP/UDP/ICMP checksums, all read and computed by etherparse
//! (an implementation independent of ftpnat's `wire`, so a checksum bug there cannot hide itself).
//! Must not: modify packets or know about flows.

use etherparse::{Icmpv4Slice, IpNumber, Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice};

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
    match ip.protocol() {
        IpNumber::TCP => {
            let tcp = TcpHeaderSlice::from_slice(payload).map_err(|e| format!("TCP header: {e}"))?;
            let data = &payload[tcp.slice().len()..];
            let want = tcp.calc_checksum_ipv4(&ip, data).map_err(|e| format!("TCP length: {e}"))?;
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
            // RFC 768: a zero checksum means "none computed".
            if udp.checksum() != 0 {
                let want = udp
                    .to_header()
                    .calc_checksum_ipv4(&header, &payload[8..])
                    .map_err(|e| format!("UDP length: {e}"))?;
                if want != udp.checksum() {
                    return Err(format!("UDP checksum {:#06x}, expected {want:#06x}", udp.checksum()));
                }
            }
        }
        IpNumber::ICMP => {
            let icmp = Icmpv4Slice::from_slice(payload).map_err(|e| format!("ICMP: {e}"))?;
            let want = icmp.icmp_type().calc_checksum(icmp.payload());
            if want != icmp.checksum() {
                return Err(format!("ICMP checksum {:#06x}, expected {want:#06x}", icmp.checksum()));
            }
        }
        _ => {}
    }
    Ok(())
}
