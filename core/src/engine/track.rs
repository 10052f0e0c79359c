//! Refreshing connections as their packets pass: UDP/ICMP idle timers, the TCP window tracker.
//!
//! Owns: feeding a packet to its connection's tracker and timer ([`Engine::touch`],
//! [`Engine::touch_tcp`]) and what the tracker is given ([`tcp_seg`], with the acknowledgement mapped
//! back through the ALG's sequence edits). Must not: create or destroy connections (admission and
//! [`Engine::destroy`] do), or rewrite packets.

use super::{Engine, Head, TcpFields};

use crate::conntrack::{Conn, Origin, TcpSeg, TcpState, Window};
use crate::flow::{ConnId, Dir};
use crate::wire::{Ipv4Packet, SeqNum, TcpFlags};

impl Engine {
    /// Refreshes a UDP or ICMP connection for a packet travelling in `dir`.
    pub(super) fn touch(&mut self, id: ConnId, dir: Dir, len: usize) {
        let now = self.now;
        let timeouts = &self.config.timeouts;
        let found = self.table.update(id, |conn| {
            conn.seen(dir, len, now);
            now + conn.timeout(timeouts)
        });
        debug_assert!(found, "touch of a connection that exists");
    }

    /// Tracks a TCP segment travelling in `dir` against its connection's window; only a segment in the
    /// window refreshes the connection and moves its state (see `conntrack::window`). A fragment cannot
    /// be judged (its length is the whole datagram's): it changes nothing. One slot access: the
    /// per-packet path.
    #[inline]
    pub(super) fn touch_tcp(&mut self, id: ConnId, dir: Dir, head: &Head, pkt: &[u8]) -> Window {
        if head.fragmented {
            return Window::Behind(crate::conntrack::window::Why::Unsynchronised);
        }
        // The window scale option matters on a SYN only: the rest never walk the options.
        let wscale = if head.flags().syn {
            Ipv4Packet::new_unchecked(pkt).tcp().ok().and_then(|t| t.wscale_option())
        } else {
            None
        };
        let t = TcpFields::read(pkt);
        let (now, len) = (self.now, pkt.len());
        let timeouts = &self.config.timeouts;
        let metrics = &mut self.metrics;
        let mut verdict = Window::Beyond(crate::conntrack::window::Why::Unsynchronised);
        let mut closed_now = None;
        self.table.update(id, |conn| {
            // The per-packet case first: it opens or closes nothing, so it skips the state bookkeeping
            // below. A connection the ALG rewrites has its ACK mapped back first (see `tcp_seg`).
            if head.plain_ack() {
                let mut plain = t.plain();
                if let Some(a) = &conn.alg {
                    plain.ack = a.stream.unmap_ack(dir.reverse(), plain.ack);
                }
                if let Some(v) = conn.track_tcp_plain(dir, plain) {
                    verdict = v;
                    if v != Window::Accept {
                        return conn.expires();
                    }
                    conn.seen(dir, len, now);
                    return now + conn.timeout(timeouts);
                }
            }
            let before = conn.tcp();
            verdict = conn.track_tcp(dir, &tcp_seg(conn, dir, head.flags(), &t, wscale));
            if verdict != Window::Accept {
                return conn.expires();
            }
            conn.seen(dir, len, now);
            let closed = |s| matches!(s, TcpState::Closed | TcpState::Reset);
            if closed(conn.tcp()) && !closed(before) {
                metrics.flows_closed += 1;
                // Only a connection holding its host's mapping frees a port when it goes early.
                if conn.origin() == Origin::Outbound {
                    closed_now = Some(conn.host());
                }
            }
            now + conn.timeout(timeouts)
        });
        if let Some(host) = closed_now {
            self.closing.push(host, id);
        }
        verdict
    }
}

/// What the window tracker needs of a TCP segment. The acknowledgement speaks of the other direction's
/// bytes as its receiver got them: for a connection whose other direction the ALG rewrites, it is mapped
/// back into that direction's sender space first (as Linux applies its NAT offset before
/// `tcp_in_window`).
#[inline]
pub(super) fn tcp_seg(conn: &Conn, dir: Dir, f: TcpFlags, t: &TcpFields, wscale: Option<u8>) -> TcpSeg {
    // Broken stacks send RSTs with the ACK flag and a zero ACK field (Linux notes the same).
    let ack = (f.ack && !(f.rst && t.ack == SeqNum::new(0))).then(|| match &conn.alg {
        Some(a) => a.stream.unmap_ack(dir.reverse(), t.ack),
        None => t.ack,
    });
    TcpSeg {
        seq: t.seq,
        ack,
        len: t.payload + u32::from(f.syn) + u32::from(f.fin),
        win: t.win,
        syn: f.syn,
        fin: f.fin,
        rst: f.rst,
        wscale,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{engine, open_tcp, run, tcp, HOST, PUBLIC, REMOTE};
    use super::*;
    use crate::conntrack::TcpState;
    use crate::engine::Verdict;
    use crate::flow::{Endpoint, FlowKey, Proto, Side};
    use crate::metrics::DropReason;
    use crate::wire::tcp::flags;

    fn state(e: &Engine) -> TcpState {
        let key = FlowKey::new(Proto::Tcp, Endpoint::new(HOST, 40000), Endpoint::new(REMOTE, 80));
        e.table().get(e.table().lookup(&key).unwrap().0).unwrap().tcp()
    }

    #[test]
    fn a_blind_segment_outside_the_window_changes_nothing() {
        let mut e = engine();
        let port = open_tcp(&mut e, 40000, 80);
        let before = state(&e);
        for f in [flags::RST, flags::ACK | flags::FIN, flags::ACK] {
            let blind = tcp(REMOTE, 80, PUBLIC, port, 501 + (1 << 31), 101, f, b"");
            let (v, _, _) = run(&mut e, Side::Outside, &blind);
            assert_eq!(v, Verdict::Drop(DropReason::TcpOutOfWindow), "flags {f:#04x}");
        }
        assert_eq!(state(&e), before);
    }

    #[test]
    fn the_exact_reset_ends_the_connection() {
        let mut e = engine();
        let port = open_tcp(&mut e, 40000, 80);
        // RFC 5961 §3.2: a RST whose sequence number is exactly the next expected one is acted upon.
        let (v, _, _) = run(&mut e, Side::Outside, &tcp(REMOTE, 80, PUBLIC, port, 501, 0, flags::RST, b""));
        assert_eq!(v, Verdict::Forward(Side::Inside));
        assert_eq!(state(&e), TcpState::Reset);
    }

    #[test]
    fn a_reset_with_a_zero_acknowledgement_is_read_without_one() {
        let mut e = engine();
        open_tcp(&mut e, 40000, 80);
        let key = FlowKey::new(Proto::Tcp, Endpoint::new(HOST, 40000), Endpoint::new(REMOTE, 80));
        let conn = e.table().get(e.table().lookup(&key).unwrap().0).unwrap();
        let p = tcp(HOST, 40000, REMOTE, 80, 101, 0, flags::RST | flags::ACK, b"");
        let t = TcpFields::read(&p);
        let seg = tcp_seg(conn, Dir::Original, TcpFlags::from_byte(flags::RST | flags::ACK), &t, None);
        assert_eq!(seg.ack, None);
        let p = tcp(HOST, 40000, REMOTE, 80, 101, 501, flags::ACK, b"abc");
        let seg = tcp_seg(conn, Dir::Original, TcpFlags::from_byte(flags::ACK), &TcpFields::read(&p), None);
        assert_eq!((seg.ack, seg.len), (Some(SeqNum::new(501)), 3));
    }
}
