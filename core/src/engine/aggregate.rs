//! The offload fast path: a TCP aggregate (one datagram standing for many wire segments, from a
//! device with segmentation offload) translated whole when its connection needs nothing per segment.
//!
//! Owns: the decision whether an aggregate may go whole ([`Engine::handle_aggregate`]), read-only,
//! with the same classifier and window check as single packets. Must not: translate anything itself
//! (it hands the aggregate to [`Engine::process`]) or accept what a segment-by-segment pass would
//! treat differently (ALG connections, openings, anything answered with an ICMP error).

use super::{Engine, Verdict};

use crate::conntrack::{TcpSeg, Window};
use crate::flow::{Endpoint, FlowKey, Proto, Side};
use crate::time::Instant;
use crate::wire::Ipv4Packet;

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
        if ip.total_len() != pkt.len() || ip.protocol() != 6 || ip.more_frags() || ip.frag_offset() > 0 {
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
        let Ok(tcp) = ip.tcp() else { return false };
        let f = tcp.flags();
        if f.syn || f.rst || f.fin {
            return false;
        }
        let key =
            FlowKey::new(Proto::Tcp, Endpoint::new(src, tcp.src_port()), Endpoint::new(dst, tcp.dst_port()));
        let Some((id, dir)) = self.table.lookup(&key) else { return false };
        let Some(conn) = self.table.get(id) else { return false };
        let headers = ip.header_len() + tcp.header_len();
        if conn.side(dir) != from
            || conn.ftp.is_some()
            || (self.nat64.is_some() && crate::nat64::is_alias(conn.translated(dir).dst.addr))
            || headers + seg > self.config.mtu[conn.egress(dir).index()] as usize
        {
            return false;
        }
        // In the window as a whole exactly when its first and its last segment are: anything else is
        // judged segment by segment.
        let total = tcp.payload().len() as u32;
        let last_at = (total.saturating_sub(1) / (seg.max(1) as u32)) * seg.max(1) as u32;
        let piece = |at: u32, len: u32| TcpSeg {
            seq: tcp.seq_number().add(at),
            ack: Some(tcp.ack_number()).filter(|_| f.ack),
            len,
            win: tcp.window(),
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
