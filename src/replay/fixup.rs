//! Input normalisation before a captured datagram meets the engine: capture artefacts undone, wrong
//! checksums repaired, IPv6 routed.
//!
//! Owns: the TSO/GRO "total length 0" fix, the repair of wrong IPv4 header and TCP/UDP/ICMP(v6) checksums
//! found in a capture (checksum offload on the capturing host leaves them wrong), and the one change
//! IPv6 routing makes (hop limit − 1). Must not: translate anything or look at flows; that is the
//! engine's (and, for WAN-side packets, `replay::peer`'s).

use std::net::Ipv4Addr;

use crate::wire::{checksum, Ipv4Packet};

const IPV6_HEADER: usize = 40;

/// Fixes what the capture did to an IPv4 datagram and, when `repair`, its wrong checksums. Returns how
/// many checksums were repaired. `pkt` must be the datagram as the link layer delimited it.
pub fn ipv4(pkt: &mut Vec<u8>, repair: bool) -> u64 {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return 0;
    }
    let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    if total == 0 && pkt.len() <= u16::MAX as usize {
        // A datagram captured before segmentation offload: the NIC fills in the length later.
        let n = pkt.len();
        Ipv4Packet::new_unchecked(&mut pkt[..]).set_total_len(n);
    } else if total >= 20 && total < pkt.len() {
        pkt.truncate(total);
    }
    if !repair {
        return 0;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut pkt[..]) else { return 0 };
    let mut repaired = 0;
    if !ip.verify_header_checksum() {
        ip.fill_header_checksum();
        repaired += 1;
    }
    if ip.protocol() == 6 && !ip.is_fragment() {
        // What `verify_transport_checksum` computes, without parsing the segment first (a segment that
        // does not parse is left alone, as below).
        if !tcp_checksum_right(&ip) && ip.tcp().is_ok() {
            ip.fill_transport_checksum();
            repaired += 1;
        }
        return repaired;
    }
    let parses = match ip.protocol() {
        1 => ip.icmp().is_ok(),
        6 => ip.tcp().is_ok(),
        17 => ip.udp().is_ok(),
        _ => false,
    };
    if parses && !ip.is_fragment() && !ip.verify_transport_checksum() {
        ip.fill_transport_checksum();
        repaired += 1;
    }
    repaired
}

/// Whether the TCP checksum of an unfragmented TCP datagram verifies: one sum over pseudo-header and
/// segment, as `TcpSegment::verify_checksum` computes it.
fn tcp_checksum_right(ip: &Ipv4Packet<&mut [u8]>) -> bool {
    // new_checked: 20 <= header length <= total length <= buffer length, and the total fits 16 bits.
    let segment = ip.payload();
    let pseudo = checksum::pseudo_header(ip.src_addr(), ip.dst_addr(), 6, segment.len() as u16);
    checksum::finish(checksum::sum(segment, pseudo)) == 0
}

/// Where the upper-layer header of an IPv6 packet starts and which it is, past the extension headers a
/// checksum repair can see through (hop-by-hop, destination options). `None` for a fragment, a routing
/// header (the pseudo-header would use the final destination) or anything unparsable.
fn ipv6_upper(pkt: &[u8]) -> Option<(usize, u8)> {
    let mut next = *pkt.get(6)?;
    let mut at = IPV6_HEADER;
    loop {
        match next {
            6 | 17 | 58 => return Some((at, next)),
            // RFC 8200 §4.3 / §4.6: hop-by-hop and destination options, length in 8-octet units.
            0 | 60 => {
                let h = pkt.get(at..at + 2)?;
                next = h[0];
                at += (h[1] as usize + 1) * 8;
            }
            _ => return None,
        }
    }
}

/// RFC 8200 §8.1: the upper-layer checksum over the IPv6 pseudo-header and `upper`.
fn ipv6_sum(pkt: &[u8], proto: u8, upper: &[u8]) -> u32 {
    let len = upper.len() as u32;
    let mut s = checksum::sum(&pkt[8..40], 0);
    s = checksum::sum(&len.to_be_bytes(), s);
    s = checksum::sum(&[0, 0, 0, proto], s);
    checksum::sum(upper, s)
}

/// Routes an IPv6 packet: hop limit − 1 and, when `repair`, wrong TCP/UDP/ICMPv6 checksums repaired
/// (counted in the second value). The first value is false when the hop limit is exhausted (RFC 8200
/// §3: a router discards it; the ICMPv6 time-exceeded it would send is suppressed in replay).
pub fn ipv6(pkt: &mut Vec<u8>, repair: bool) -> (bool, u64) {
    if pkt.len() < IPV6_HEADER {
        return (false, 0);
    }
    let payload_len = u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
    if payload_len != 0 && IPV6_HEADER + payload_len < pkt.len() {
        pkt.truncate(IPV6_HEADER + payload_len);
    }
    if pkt[7] <= 1 {
        return (false, 0);
    }
    pkt[7] -= 1;
    let mut repaired = 0;
    if repair && payload_len != 0 && IPV6_HEADER + payload_len == pkt.len() {
        if let Some((at, proto)) = ipv6_upper(pkt) {
            let csum_at = at
                + if proto == 17 {
                    6
                } else if proto == 6 {
                    16
                } else {
                    2
                };
            let min = if proto == 6 { 20 } else { 8 };
            if pkt.len() >= at + min {
                let verify = checksum::finish(ipv6_sum(pkt, proto, &pkt[at..]));
                // RFC 8200 §8.1: a UDP checksum of 0 is not allowed over IPv6; it is wrong too.
                let zero_udp = proto == 17 && pkt[csum_at] == 0 && pkt[csum_at + 1] == 0;
                if verify != 0 || zero_udp {
                    pkt[csum_at..csum_at + 2].fill(0);
                    let mut c = checksum::finish(ipv6_sum(pkt, proto, &pkt[at..]));
                    if proto == 17 && c == 0 {
                        c = 0xFFFF;
                    }
                    pkt[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
                    repaired += 1;
                }
            }
        }
    }
    (true, repaired)
}

/// The IPv6 source address, if the header is complete.
pub fn ipv6_src(pkt: &[u8]) -> Option<std::net::Ipv6Addr> {
    let b: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
    Some(b.into())
}

/// The IPv4 source address, if the header is complete.
pub fn ipv4_src(pkt: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    Some(b.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 + TCP with a payload, correct checksums.
    fn tcp4() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 192, 0, 2, 1];
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&21u16.to_be_bytes());
        t[12] = 0x50;
        t[13] = 0x18;
        p.extend_from_slice(&t);
        p.extend_from_slice(b"NOOP\r\n");
        let n = p.len() as u16;
        p[2..4].copy_from_slice(&n.to_be_bytes());
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_header_checksum();
        ip.fill_transport_checksum();
        p
    }

    #[test]
    fn repairs_wrong_checksums_and_counts_them() {
        let good = tcp4();
        let mut p = good.clone();
        assert_eq!(ipv4(&mut p, true), 0);
        assert_eq!(p, good);
        p[36] ^= 0x55; // TCP checksum
        p[10] ^= 0x01; // IP header checksum
        let mut trusted = p.clone();
        assert_eq!(ipv4(&mut trusted, false), 0);
        assert_eq!(trusted, p);
        assert_eq!(ipv4(&mut p, true), 2);
        assert_eq!(p, good);
    }

    #[test]
    fn unparsable_or_fragmented_segments_keep_their_checksum() {
        let good = tcp4();
        // Data offset 15 (60 bytes) in a 26-byte segment: not a TCP segment the views accept.
        let mut p = good.clone();
        p[32] = 0xF0;
        p[36] ^= 0x55;
        let before = p.clone();
        assert_eq!(ipv4(&mut p, true), 0);
        assert_eq!(p, before);
        // A first fragment (MF): its checksum covers bytes not here.
        let mut f = good.clone();
        f[6] |= 0x20;
        Ipv4Packet::new_unchecked(&mut f[..]).fill_header_checksum();
        f[36] ^= 0x55;
        let before = f.clone();
        assert_eq!(ipv4(&mut f, true), 0);
        assert_eq!(f, before);
    }

    #[test]
    fn tso_zero_length_and_padding() {
        let good = tcp4();
        let mut p = good.clone();
        p[2] = 0;
        p[3] = 0;
        ipv4(&mut p, true);
        assert_eq!(p, good);
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(ipv4(&mut padded, true), 0);
        assert_eq!(padded, good);
        // Garbage never panics.
        for n in 0..good.len() {
            let mut q = good[..n].to_vec();
            ipv4(&mut q, true);
        }
    }

    fn udp6(hops: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 12, 17, hops];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 12, 0, 0, b'a', b'b', b'c', b'd']);
        p
    }

    #[test]
    fn ipv6_hop_limit_and_checksum() {
        let mut p = udp6(64);
        let (ok, fixed) = ipv6(&mut p, true);
        assert!(ok);
        assert_eq!(fixed, 1, "a zero UDP checksum is invalid over IPv6");
        assert_eq!(p[7], 63);
        let c = u16::from_be_bytes([p[46], p[47]]);
        assert_ne!(c, 0);
        assert_eq!(checksum::finish(ipv6_sum(&p, 17, &p[40..])), 0);
        // A second pass finds nothing to repair.
        let (_, fixed) = ipv6(&mut p, true);
        assert_eq!(fixed, 0);
        assert_eq!(ipv6(&mut udp6(1), true), (false, 0));
        for n in 0..52 {
            let mut q = udp6(9)[..n].to_vec();
            ipv6(&mut q, true);
        }
    }
}
