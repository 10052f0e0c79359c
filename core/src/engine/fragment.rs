//! Fragments after the first: they carry no ports, so they follow the flow their first fragment
//! belonged to (RFC 4787 §11 / RFC 5508's spirit for ICMP: translated like the datagram they are part of).
//!
//! Owns: remembering a first fragment's translation ([`Engine::remember_fragment`]) and applying it to
//! later fragments ([`Engine::later_fragment`]), holding those that arrive first. Must not: reassemble
//! (the gateway forwards fragments as fragments) or keep state beyond `crate::frag`'s shares.

use std::net::Ipv4Addr;

use super::{Engine, Transmit, Verdict};

use crate::flow::Side;
use crate::frag::{self, FragKey};
use crate::metrics::DropReason;
use crate::wire::Ipv4Packet;

impl Engine {
    pub(super) fn remember_fragment(&mut self, k: FragKey, src: Ipv4Addr, dst: Ipv4Addr, egress: Side) {
        let (evicted, overtaken) = self.frags.remember(self.now, k, src, dst, egress);
        self.metrics.fragment_states_evicted += evicted;
        // Later fragments that overtook this first one can go now.
        for mut w in overtaken {
            forward_later(&mut w.packet, src, dst);
            self.metrics.fragments_translated += 1;
            self.out.push_back(Transmit { side: egress, packet: w.packet });
        }
    }

    /// A non-first fragment: translated by the state its first fragment left (same src, dst, protocol
    /// and IP ident), or held until that first fragment comes.
    pub(super) fn later_fragment(&mut self, from: Side, pkt: &mut Vec<u8>) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let k = FragKey { src: ip.src_addr(), dst: ip.dst_addr(), proto: ip.protocol(), ident: ip.ident() };
        if let Some(s) = self.frags.get(&k) {
            forward_later(pkt, s.src, s.dst);
            self.metrics.fragments_translated += 1;
            return self.fit_mtu(pkt, s.egress);
        }
        match self.frags.hold(self.now, k, from, pkt) {
            Ok(()) => Verdict::Held,
            Err(frag::Refused::QueueFull) => Verdict::Drop(DropReason::FragmentQueueFull),
            Err(frag::Refused::SourceQuota) => Verdict::Drop(DropReason::FragmentSourceQuota),
        }
    }
}

/// A later fragment carries no ports: it takes its first fragment's addresses, and loses one TTL as any
/// forwarded datagram (the router checks ran when it arrived, so its TTL is above 1).
fn forward_later(pkt: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let mut ip = Ipv4Packet::new_unchecked(pkt);
    let ttl = ip.ttl();
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.set_ttl(ttl.saturating_sub(1));
}

#[cfg(test)]
mod tests {
    use super::super::testing::{engine, run, udp, HOST, PUBLIC, REMOTE};
    use super::*;
    use crate::wire::etherparse_check::seen;
    use crate::wire::ipv4;

    #[test]
    fn a_later_fragment_follows_its_first_even_when_it_overtook_it() {
        let mut e = engine();
        let frags = ipv4::fragment(&udp(HOST, 5000, REMOTE, 53, &[7u8; 3000]), 1500).unwrap();
        assert_eq!(frags.len(), 3);
        let (v, _, out) = run(&mut e, Side::Inside, &frags[2]);
        assert_eq!((v, out.len()), (Verdict::Held, 0), "held until its first fragment says where it goes");
        let (v, first, out) = run(&mut e, Side::Inside, &frags[0]);
        assert_eq!(v, Verdict::Forward(Side::Outside));
        assert_eq!(out.len(), 1, "the overtaking fragment leaves with it");
        let (v, middle, _) = run(&mut e, Side::Inside, &frags[1]);
        assert_eq!(v, Verdict::Forward(Side::Outside));
        for p in [&first, &middle, &out[0].packet] {
            let s = seen(p);
            assert_eq!((s.src, s.dst), (PUBLIC.octets().to_vec(), REMOTE.octets().to_vec()));
            assert_eq!(s.ttl, 63);
        }
        assert_eq!(e.metrics().fragments_translated, 2);
    }

    #[test]
    fn a_later_fragment_of_no_datagram_we_know_is_not_translated() {
        let mut e = engine();
        let frags = ipv4::fragment(&udp(HOST, 5000, REMOTE, 53, &[7u8; 3000]), 1500).unwrap();
        let (v, _, _) = run(&mut e, Side::Outside, &{
            // As if from outside to the public address: nothing first told us where it goes.
            let mut p = frags[1].clone();
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_src_addr(REMOTE);
            ip.set_dst_addr(PUBLIC);
            p
        });
        assert_eq!(v, Verdict::Held);
        assert_eq!(e.metrics().fragments_translated, 0);
    }
}
