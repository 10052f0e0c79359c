//! The offload fast path: a TCP aggregate (one datagram standing for many wire segments, from a
//! device with segmentation offload) translated whole when its connection needs nothing per segment.
//!
//! Owns: the decision whether an aggregate may go whole ([`Engine::handle_aggregate`]), read-only,
//! with the same classifier and window check as single packets. Must not: translate anything itself
//! (it hands the aggregate to [`Engine::process`]) or accept what a segment-by-segment pass would
//! treat differently (ALG connections, openings, anything answered with an ICMP error).

use super::{Engine, TcpFields, Verdict};

use crate::conntrack::{TcpSeg, Window};
use crate::flow::Side;
use crate::time::Instant;
use crate::wire::{Ipv4Packet, IPPROTO_TCP};

impl Engine {
    /// A TCP aggregate from a device with segmentation offload: one IPv4/TCP datagram, usually larger
    /// than the MTU, whose payload the device cuts into `seg`-byte segments on the wire (`segs` of them).
    /// It is translated whole, exactly as each of its segments would be, when its connection needs
    /// nothing per segment. Returns `None`, having changed and counted nothing, when the caller must
    /// hand the segments over one by one instead: a connection the FTP ALG watches (its line framing
    /// and sequence maps work per segment), a packet that opens or would be refused or answered with
    /// an ICMP error (those outcomes are per segment), or a segment size the egress MTU cannot carry.
    /// The aggregate's TCP checksum field is the device's business (it is completed per segment on
    /// the wire): it is updated like any other but must not be relied on.
    pub fn handle_aggregate(
        &mut self,
        now: Instant,
        from: Side,
        packet: &mut Vec<u8>,
        seg: usize,
        segs: u64,
    ) -> Option<Verdict> {
        if !self.aggregate_ok(from, packet, seg) {
            return None;
        }
        self.now = self.now.max(now);
        self.metrics.packets_in[from.index()] += segs;
        self.metrics.bytes_in[from.index()] += packet.len() as u64;
        self.aggregate = true;
        let v = self.process(from, packet);
        self.aggregate = false;
        match v {
            Verdict::Forward(side) => {
                self.metrics.packets_out[side.index()] += segs;
                self.metrics.bytes_out[side.index()] += packet.len() as u64;
            }
            Verdict::Drop(r) => self.metrics.drop(r),
            Verdict::Held => {}
        }
        Some(v)
    }

    /// Whether [`Engine::process`] would simply translate (or route) this aggregate: read-only.
    pub(super) fn aggregate_ok(&self, from: Side, pkt: &[u8], seg: usize) -> bool {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else { return false };
        if ip.total_len() != pkt.len() || ip.protocol() != IPPROTO_TCP || ip.is_fragment() {
            return false;
        }
        if ip.ttl() <= 1 || (self.config.verify_ip_checksum && !ip.verify_header_checksum()) {
            return false;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let inside = self.config.is_inside(src);
        if inside != (from == Side::Inside) {
            return false;
        }
        if !self.config.translate {
            return true;
        }
        if (from == Side::Outside && !self.nat.is_public(dst)) || (inside && dst == self.config.lan_ip) {
            return false;
        }
        // What the per-packet path would read of it: the one classifier, not a second copy of it.
        let Ok(Some(head)) = self.head(pkt) else { return false };
        let f = head.flags();
        if f.syn || f.rst || f.fin {
            return false;
        }
        let Some((id, dir)) = self.table.lookup(&head.key) else { return false };
        let Some(conn) = self.table.get(id) else { return false };
        let t = TcpFields::read(pkt);
        let headers = pkt.len() - t.payload as usize;
        if conn.side(dir) != from
            || conn.alg.is_some()
            || (self.nat64.is_some() && crate::nat64::is_alias(conn.translated(dir).dst.addr))
            || headers + seg > self.config.mtu[conn.egress(dir).index()] as usize
        {
            return false;
        }
        // In the window as a whole exactly when its first and its last segment are: anything else is
        // judged segment by segment.
        let total = t.payload;
        let last_at = (total.saturating_sub(1) / (seg.max(1) as u32)) * seg.max(1) as u32;
        let piece = |at: u32, len: u32| TcpSeg {
            seq: t.seq.add(at),
            ack: Some(t.ack).filter(|_| f.ack),
            len,
            win: t.win,
            syn: false,
            fin: false,
            rst: false,
            wscale: None,
        };
        let w = conn.window();
        w.check(dir, &piece(0, (seg as u32).min(total))) == Window::Accept
            && w.check(dir, &piece(last_at, total - last_at)) == Window::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{engine, open_tcp, run, tcp, HOST, NOW, PUBLIC, REMOTE};
    use super::*;
    use crate::wire::etherparse_check::seen;
    use crate::wire::tcp::flags;

    const SEG: usize = 1448;

    /// An aggregate of `n` full segments from the inside host on 40000 → REMOTE:80, as a device with
    /// segmentation offload hands it over (DF set, larger than the MTU).
    fn aggregate(n: usize) -> Vec<u8> {
        tcp(HOST, 40000, REMOTE, 80, 101, 501, flags::ACK, &vec![0x61; SEG * n])
    }

    #[test]
    fn an_established_flow_goes_whole_and_exactly_as_one_segment_would() {
        let mut e = engine();
        let public_port = open_tcp(&mut e, 40000, 80);
        let mut agg = aggregate(8);
        assert_eq!(
            e.handle_aggregate(NOW, Side::Inside, &mut agg, SEG, 8),
            Some(Verdict::Forward(Side::Outside))
        );
        let s = seen(&agg);
        assert_eq!(s.src, PUBLIC.octets().to_vec());
        assert_eq!(&s.upper[..2], &public_port.to_be_bytes());
        assert_eq!(e.metrics().packets_out[Side::Outside.index()], 2 + 8, "counted per wire segment");
        // The same bytes one segment at a time come out the same (but for the IPv4 length fields).
        let one = tcp(HOST, 40000, REMOTE, 80, 101 + 8 * SEG as u32, 501, flags::ACK, &[0x61; SEG]);
        let (v, out, _) = run(&mut e, Side::Inside, &one);
        assert_eq!(v, Verdict::Forward(Side::Outside));
        assert_eq!(&seen(&out).upper[..4], &s.upper[..4]);
    }

    #[test]
    fn what_must_be_judged_per_segment_is_handed_back_untouched() {
        let mut e = engine();
        // No connection yet: an opening is per segment.
        let mut agg = aggregate(4);
        let before = agg.clone();
        assert_eq!(e.handle_aggregate(NOW, Side::Inside, &mut agg, SEG, 4), None);
        assert_eq!(agg, before);
        open_tcp(&mut e, 40000, 80);
        // A FIN, a segment size the WAN MTU cannot carry, and a window the tracker would not accept.
        let mut fin = tcp(HOST, 40000, REMOTE, 80, 101, 501, flags::ACK | flags::FIN, &vec![0x61; SEG * 2]);
        assert_eq!(e.handle_aggregate(NOW, Side::Inside, &mut fin, SEG, 2), None);
        assert_eq!(e.handle_aggregate(NOW, Side::Inside, &mut aggregate(2), 1481, 2), None);
        let mut far = tcp(HOST, 40000, REMOTE, 80, 101 + (1 << 30), 501, flags::ACK, &vec![0x61; SEG * 2]);
        assert_eq!(e.handle_aggregate(NOW, Side::Inside, &mut far, SEG, 2), None);
        assert_eq!(
            e.metrics().packets_in[Side::Inside.index()],
            2,
            "the handshake only: nothing counted for a refusal"
        );
    }

    #[test]
    fn an_ftp_control_connection_is_never_aggregated() {
        let mut e = engine();
        open_tcp(&mut e, 40000, 21);
        let mut agg = tcp(HOST, 40000, REMOTE, 21, 101, 501, flags::ACK, &vec![b'A'; SEG * 2]);
        assert_eq!(e.handle_aggregate(NOW, Side::Inside, &mut agg, SEG, 2), None);
    }
}
