//! The gateway as a router (RFC 1812) in ICMP: packets for the gateway itself, the ICMP errors it originates
//! (rate limited, RFC 1812 §4.3.2.8), and ICMP errors in transit with the packet they quote
//! (RFC 5508 §4.2: the quote translated like its flow, in reverse).
//!
//! Owns: [`Engine::local`], [`Engine::icmp_error_to`], [`Engine::icmp_error_in`], the error token
//! bucket. Must not: create connections for an error (RFC 5508 REQ-2: errors follow existing state only).

use super::{Engine, Transmit, Verdict};

use crate::flow::{Endpoint, FlowKey, Proto, Side};
use crate::metrics::DropReason;
use crate::wire::{icmp, Ipv4Packet, IPPROTO_ICMP};

/// RFC 1812 §4.3.2.8: a router must be able to limit the rate of ICMP errors it sends.
pub(super) const ICMP_ERRORS_PER_SEC: u32 = 200;

/// The ICMP errors the gateway originates as a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RouterError {
    /// RFC 1812 §5.3.1: the TTL ran out here.
    TtlExceeded,
    /// RFC 1191 §4: the datagram (DF set) does not fit the next hop's MTU, named in the error.
    FragNeeded { mtu: u16 },
}

impl RouterError {
    /// Type, code and the rest-of-header word (RFC 792; RFC 1191 puts the next-hop MTU in its low half).
    fn fields(self) -> (u8, u8, u32) {
        match self {
            RouterError::TtlExceeded => (icmp::TYPE_TIME_EXCEEDED, 0, 0),
            RouterError::FragNeeded { mtu } => {
                (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, u32::from(mtu))
            }
        }
    }
}

impl Engine {
    /// Packets addressed to the gateway itself: it answers pings, nothing else.
    pub(super) fn local(&mut self, from: Side, pkt: &[u8]) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let is_echo = ip.protocol() == IPPROTO_ICMP
            && !ip.is_fragment()
            && ip.icmp().is_ok_and(|i| i.msg_type() == icmp::TYPE_ECHO_REQUEST && i.code() == 0);
        if is_echo && !self.config.send_icmp_errors {
            self.metrics.generated_suppressed += 1;
        } else if is_echo {
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let mut reply = pkt.to_vec();
            let mut r = Ipv4Packet::new_unchecked(&mut reply[..]);
            r.set_src_addr(dst);
            r.set_dst_addr(src);
            r.set_ttl(64);
            if let Ok(mut i) = r.icmp_mut() {
                i.set_msg_type(icmp::TYPE_ECHO_REPLY);
            }
            self.out.push_back(Transmit { side: from, packet: reply });
        }
        Verdict::Drop(DropReason::LocalDelivery)
    }

    /// Sends an ICMP error about `pkt` (as it arrived on `from`) back to its sender.
    pub(super) fn icmp_error_to(&mut self, from: Side, pkt: &[u8], error: RouterError) {
        let (icmp_type, code, rest) = error.fields();
        if !self.config.send_icmp_errors {
            self.metrics.generated_suppressed += 1;
            return;
        }
        let ip = Ipv4Packet::new_unchecked(pkt);
        // RFC 1812 §4.3.2.7: never an error about an ICMP error, a non-first fragment, or a
        // broadcast/multicast.
        if ip.frag_offset() > 0
            || ip.src_addr().is_broadcast()
            || ip.src_addr().is_multicast()
            || ip.src_addr().is_unspecified()
        {
            return;
        }
        if ip.protocol() == IPPROTO_ICMP && ip.icmp().is_ok_and(|i| i.is_error()) {
            return;
        }
        if !self.take_icmp_token() {
            return;
        }
        // On the WAN side the error comes from the pool address the packet was sent to, which is its
        // flow's (RFC 6888 REQ-2, paired pooling): an outside host sees one address per inside host,
        // never the pool's first address for errors about a flow on another.
        let me = match from {
            Side::Inside => self.config.lan_ip,
            Side::Outside if self.nat.is_public(ip.dst_addr()) => ip.dst_addr(),
            Side::Outside => self.config.public_ip,
        };
        let err = icmp::build_error(me, ip.src_addr(), icmp_type, code, rest, pkt);
        self.metrics.icmp_errors_sent += 1;
        self.out.push_back(Transmit { side: from, packet: err });
    }

    /// One ICMP error's worth of the rate limit (RFC 1812 §4.3.2.8), if there is one left this second.
    pub(super) fn take_icmp_token(&mut self) -> bool {
        let secs = self.now.saturating_since(self.icmp_refill).as_secs();
        if secs >= 1 {
            self.icmp_tokens = ICMP_ERRORS_PER_SEC;
            self.icmp_refill = self.now;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// An ICMP error travelling through: translate it with the packet it quotes (RFC 5508 §4.2).
    pub(super) fn icmp_error_in(&mut self, from: Side, pkt: &mut [u8]) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let (outer_src, ttl) = (ip.src_addr(), ip.ttl());
        let Ok(icmp_view) = ip.icmp() else { return Verdict::Drop(DropReason::Malformed) };
        let Ok(q) = icmp::parse_quoted(icmp_view.payload()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let quoted = icmp_view.payload();
        let Some(proto) = Proto::from_number(q.protocol) else {
            return Verdict::Drop(DropReason::IcmpErrorNoMatch);
        };
        let (qs, qd) = match proto {
            Proto::Tcp | Proto::Udp => match (q.src_port, q.dst_port) {
                (Some(s), Some(d)) => (s, d),
                _ => return Verdict::Drop(DropReason::IcmpErrorNoMatch),
            },
            Proto::Icmp => match icmp::quoted_echo_ident(quoted) {
                Some(id) => (id, id),
                None => return Verdict::Drop(DropReason::IcmpErrorNoMatch),
            },
        };
        let qkey = FlowKey::new(proto, Endpoint::new(q.src, qs), Endpoint::new(q.dst, qd));
        // The quoted packet is one we emitted in some direction d'; its key is the reverse of the
        // other direction's key.
        let Some((id, d)) = self.table.lookup(&qkey.reversed()) else {
            return Verdict::Drop(DropReason::IcmpErrorNoMatch);
        };
        let conn = self.table.get(id).expect("exists");
        let dq = d.reverse();
        if conn.egress(dq) != from {
            return Verdict::Drop(DropReason::IcmpErrorNoMatch);
        }
        let orig = conn.key(dq);
        let back_to = conn.side(dq);
        let outer_new_src = if outer_src == q.dst {
            orig.dst.addr
        } else if from == Side::Inside {
            // An inside router's error leaves with the flow's public address: inside addresses never
            // leak, and the outside host hears from the address it talks to (issue 16, pools).
            orig.dst.addr
        } else {
            outer_src
        };
        let seq_unmap = match (&conn.alg, proto) {
            (Some(a), Proto::Tcp) => Some(a.stream.seq_map(dq).clone()),
            _ => None,
        };
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.set_ttl(ttl - 1);
        ip.set_dst_addr(orig.src.addr);
        if outer_new_src != outer_src {
            ip.set_src_addr(outer_new_src);
        }
        let Ok(mut ic) = ip.icmp_mut() else { return Verdict::Drop(DropReason::Malformed) };
        ic.edit_payload(|p| {
            let ports = proto != Proto::Icmp;
            icmp::quoted_set_src(p, orig.src.addr, ports.then_some(orig.src.port));
            icmp::quoted_set_dst(p, orig.dst.addr, ports.then_some(orig.dst.port));
            if proto == Proto::Icmp {
                icmp::quoted_set_echo_ident(p, orig.src.port);
            }
            if let Some(map) = &seq_unmap {
                if let Some(s) = icmp::quoted_tcp_seq(p) {
                    icmp::quoted_set_tcp_seq(p, map.unmap(s));
                }
            }
        });
        self.metrics.icmp_errors_translated += 1;
        Verdict::Forward(back_to)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        echo_request, engine, open_tcp, run, tcp, udp, with_ttl, HOST, LAN_IP, PUBLIC, REMOTE,
    };
    use super::*;
    use crate::wire::etherparse_check::seen;
    use crate::wire::tcp::flags;

    #[test]
    fn a_ping_to_the_gateway_is_answered_from_its_address() {
        let mut e = engine();
        let (v, _, out) = run(&mut e, Side::Inside, &echo_request(HOST, LAN_IP, 9, 1));
        assert_eq!(v, Verdict::Drop(DropReason::LocalDelivery));
        assert_eq!(out.len(), 1);
        let s = seen(&out[0].packet);
        assert_eq!((s.src, s.dst), (LAN_IP.octets().to_vec(), HOST.octets().to_vec()));
        assert_eq!(s.upper[0], icmp::TYPE_ECHO_REPLY);
    }

    #[test]
    fn an_expiring_ttl_is_reported_from_the_side_it_came_from() {
        let mut e = engine();
        let p = with_ttl(udp(HOST, 5000, REMOTE, 53, b"q"), 1);
        let (v, _, out) = run(&mut e, Side::Inside, &p);
        assert_eq!(v, Verdict::Drop(DropReason::TtlExceeded));
        let s = seen(&out[0].packet);
        assert_eq!(out[0].side, Side::Inside);
        assert_eq!((s.src, s.upper[0]), (LAN_IP.octets().to_vec(), icmp::TYPE_TIME_EXCEEDED));
        // RFC 1812 §4.3.2.7: no error about an error.
        let err = icmp::build_error(
            HOST,
            REMOTE,
            icmp::TYPE_DEST_UNREACHABLE,
            3,
            0,
            &udp(REMOTE, 53, HOST, 5000, b""),
        );
        let (_, _, out) = run(&mut e, Side::Inside, &with_ttl(err, 1));
        assert!(out.is_empty());
    }

    #[test]
    fn errors_are_rate_limited() {
        let mut e = engine();
        let p = with_ttl(udp(HOST, 5000, REMOTE, 53, b"q"), 1);
        let sent: usize =
            (0..ICMP_ERRORS_PER_SEC as usize + 50).map(|_| run(&mut e, Side::Inside, &p).2.len()).sum();
        assert_eq!(sent, ICMP_ERRORS_PER_SEC as usize, "RFC 1812 §4.3.2.8: at most the bucket in one second");
    }

    #[test]
    fn an_error_in_transit_is_translated_with_the_packet_it_quotes() {
        let mut e = engine();
        let public_port = open_tcp(&mut e, 40000, 80);
        // The remote's router reports on the segment as it left the gateway.
        let quoted = tcp(PUBLIC, public_port, REMOTE, 80, 101, 501, flags::ACK, b"x");
        let err = icmp::build_error(
            REMOTE,
            PUBLIC,
            icmp::TYPE_DEST_UNREACHABLE,
            icmp::CODE_FRAG_NEEDED,
            1400,
            &quoted,
        );
        let (v, out, _) = run(&mut e, Side::Outside, &err);
        assert_eq!(v, Verdict::Forward(Side::Inside));
        let s = seen(&out);
        assert_eq!(s.dst, HOST.octets().to_vec());
        // RFC 5508 §4.2: the quote is the packet as the inside host sent it.
        let q = icmp::parse_quoted(&s.upper[8..]).unwrap();
        assert_eq!((q.src, q.src_port), (HOST, Some(40000)));
        assert_eq!((q.dst, q.dst_port), (REMOTE, Some(80)));
    }

    #[test]
    fn an_error_about_no_flow_of_ours_is_dropped() {
        let mut e = engine();
        let quoted = udp(PUBLIC, 61000, REMOTE, 53, b"x");
        let err = icmp::build_error(REMOTE, PUBLIC, icmp::TYPE_DEST_UNREACHABLE, 3, 0, &quoted);
        let (v, _, out) = run(&mut e, Side::Outside, &err);
        assert_eq!(v, Verdict::Drop(DropReason::IcmpErrorNoMatch));
        assert!(out.is_empty());
    }

    #[test]
    fn fields_of_the_errors_the_router_makes() {
        assert_eq!(RouterError::TtlExceeded.fields(), (icmp::TYPE_TIME_EXCEEDED, 0, 0));
        assert_eq!(
            RouterError::FragNeeded { mtu: 1280 }.fields(),
            (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, 1280)
        );
    }
}
