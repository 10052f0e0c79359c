//! The gateway as a router (RFC 1812) in ICMP: packets for the gateway itself, the ICMP errors it originates
//! (rate limited, RFC 1812 §4.3.2.8), and ICMP errors in transit with the packet they quote
//! (RFC 5508 §4.2: the quote translated like its flow, in reverse).
//!
//! Owns: [`Engine::local`], [`Engine::icmp_error_to`], [`Engine::icmp_error_in`], the error token
//! bucket. Must not: create connections for an error (RFC 5508 REQ-2: errors follow existing state only).

use super::{Engine, Transmit, Verdict, ICMP_ERRORS_PER_SEC};

use crate::flow::{Endpoint, FlowKey, Proto, Side};
use crate::metrics::DropReason;
use crate::wire::{icmp, Ipv4Packet};

impl Engine {
    /// Packets addressed to the gateway itself: it answers pings, nothing else.
    pub(super) fn local(&mut self, from: Side, pkt: &[u8]) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let is_echo = ip.protocol() == 1
            && !ip.is_fragment()
            && ip.icmp().is_ok_and(|i| i.msg_type() == 8 && i.code() == 0);
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
                i.set_msg_type(0);
            }
            self.out.push_back(Transmit { side: from, packet: reply });
        }
        Verdict::Drop(DropReason::LocalDelivery)
    }

    /// Sends an ICMP error about `pkt` (as it arrived on `from`) back to its sender.
    pub(super) fn icmp_error_to(&mut self, from: Side, pkt: &[u8], icmp_type: u8, code: u8, rest: u32) {
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
        if ip.protocol() == 1 && ip.icmp().is_ok_and(|i| i.is_error()) {
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
            Proto::Icmp => {
                let at = q.header_len + 4;
                match quoted.get(at..at + 2) {
                    Some(b) => {
                        let id = u16::from_be_bytes([b[0], b[1]]);
                        (id, id)
                    }
                    None => return Verdict::Drop(DropReason::IcmpErrorNoMatch),
                }
            }
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
        let seq_unmap = match (&conn.ftp, proto) {
            (Some(s), Proto::Tcp) => Some(s.streams[dq.index()].map.clone()),
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
                quoted_set_echo_ident(p, orig.src.port);
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

/// Sets the identifier of a quoted ICMP echo and keeps the quoted ICMP checksum right (RFC 5508 §4.2).
pub(super) fn quoted_set_echo_ident(quoted: &mut [u8], ident: u16) {
    let hl = quoted.first().map_or(0, |b| ((b & 0x0f) as usize) * 4);
    let Some(h) = quoted.get_mut(hl..hl + 6) else { return };
    let old = u16::from_be_bytes([h[4], h[5]]);
    let csum = u16::from_be_bytes([h[2], h[3]]);
    let new_csum = crate::wire::checksum::update_u16(csum, old, ident);
    h[2..4].copy_from_slice(&new_csum.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
}
