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
        ip.set_first_fragment_ports(Some(to.src.port), Some(to.dst.port));
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

#[cfg(test)]
mod tests {
    use super::super::testing::{tcp, udp, HOST, PUBLIC, REMOTE};
    use super::*;
    use crate::flow::Endpoint;
    use crate::wire::etherparse_check::seen;
    use crate::wire::{ipv4, tcp::flags};

    fn to(sp: u16) -> FlowKey {
        FlowKey::new(Proto::Tcp, Endpoint::new(PUBLIC, sp), Endpoint::new(REMOTE, 80))
    }

    #[test]
    fn addresses_ports_and_every_checksum_follow_the_translation() {
        let mut p = tcp(HOST, 40000, REMOTE, 80, 1, 2, flags::ACK, b"hello");
        translate(&mut p, Proto::Tcp, &to(61000), true);
        let s = seen(&p); // asserts the IPv4 and TCP checksums
        assert_eq!((s.src, s.dst), (PUBLIC.octets().to_vec(), REMOTE.octets().to_vec()));
        assert_eq!(&s.upper[..4], &[0xee, 0x48, 0, 80]);
    }

    #[test]
    fn a_first_fragment_gets_its_ports_and_a_checksum_right_for_the_whole_datagram() {
        let dg = udp(HOST, 5000, REMOTE, 53, &[7u8; 3000]);
        let mut frags = ipv4::fragment(&dg, 1500).unwrap();
        let to = FlowKey::new(Proto::Udp, Endpoint::new(PUBLIC, 62000), Endpoint::new(REMOTE, 53));
        translate(&mut frags[0], Proto::Udp, &to, true);
        for f in &mut frags[1..] {
            translate(f, Proto::Udp, &to, false);
        }
        // Reassembled, the datagram must be the one the translation would give unfragmented.
        let mut whole = dg.clone();
        translate(&mut whole, Proto::Udp, &to, true);
        let s = seen(&whole);
        let mut upper = Vec::new();
        for f in &frags {
            upper.extend_from_slice(&seen(f).upper);
        }
        assert_eq!(upper, s.upper);
    }

    #[test]
    fn a_udp_checksum_of_zero_stays_zero_in_a_first_fragment() {
        let dg = udp(HOST, 5000, REMOTE, 53, &[7u8; 3000]);
        let mut frags = ipv4::fragment(&dg, 1500).unwrap();
        frags[0][26..28].fill(0); // RFC 768: no checksum computed
        let to = FlowKey::new(Proto::Udp, Endpoint::new(PUBLIC, 62000), Endpoint::new(REMOTE, 53));
        translate(&mut frags[0], Proto::Udp, &to, true);
        assert_eq!(&frags[0][20..22], &62000u16.to_be_bytes());
        assert_eq!(&frags[0][26..28], &[0, 0]);
    }
}
