//! Rewriting a packet's addresses and ports to its flow's translation, checksums kept right by the
//! wire setters (RFC 1624 incremental updates).
//!
//! Owns: [`translate`]. Must not: decide the translation (the connection's keys do).

use crate::flow::{FlowKey, Proto};
use crate::wire::Ipv4Packet;

/// Rewrites addresses and ports to `to` in place; the wire setters update every checksum involved.
pub(super) fn translate(pkt: &mut [u8], proto: Proto, to: &FlowKey, first_fragment: bool) {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    if ip.src_addr() != to.src.addr {
        ip.set_src_addr(to.src.addr);
    }
    if ip.dst_addr() != to.dst.addr {
        ip.set_dst_addr(to.dst.addr);
    }
    if !first_fragment {
        return;
    }
    if ip.more_frags() {
        set_ports_in_first_fragment(&mut ip, proto, to);
        return;
    }
    match proto {
        Proto::Tcp => {
            if let Ok(mut t) = ip.tcp_mut() {
                if t.src_port() != to.src.port {
                    t.set_src_port(to.src.port);
                }
                if t.dst_port() != to.dst.port {
                    t.set_dst_port(to.dst.port);
                }
            }
        }
        Proto::Udp => {
            if let Ok(mut u) = ip.udp_mut() {
                if u.src_port() != to.src.port {
                    u.set_src_port(to.src.port);
                }
                if u.dst_port() != to.dst.port {
                    u.set_dst_port(to.dst.port);
                }
            }
        }
        Proto::Icmp => {
            if let Ok(mut i) = ip.icmp_mut() {
                if i.echo_ident() != to.src.port {
                    i.set_echo_ident(to.src.port);
                }
            }
        }
    }
}

/// Ports of a first fragment, where the transport views refuse (their length fields speak of the whole
/// datagram). The transport checksum covers the whole datagram, so its incremental update is still right.
pub(super) fn set_ports_in_first_fragment(ip: &mut Ipv4Packet<&mut [u8]>, proto: Proto, to: &FlowKey) {
    let csum_at = match proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
        Proto::Icmp => return,
    };
    let p = ip.payload_mut();
    if p.len() < csum_at + 2 {
        return;
    }
    let mut csum = u16::from_be_bytes([p[csum_at], p[csum_at + 1]]);
    for (at, new) in [(0usize, to.src.port), (2, to.dst.port)] {
        let old = u16::from_be_bytes([p[at], p[at + 1]]);
        if old != new {
            csum = crate::wire::checksum::update_u16(csum, old, new);
            p[at..at + 2].copy_from_slice(&new.to_be_bytes());
        }
    }
    // RFC 768: a UDP checksum of zero means none was computed, and stays so.
    let zero_udp = proto == Proto::Udp && u16::from_be_bytes([p[csum_at], p[csum_at + 1]]) == 0;
    if !zero_udp {
        let csum = if proto == Proto::Udp && csum == 0 { 0xffff } else { csum };
        p[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
    }
}
