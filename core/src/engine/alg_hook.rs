//! The ALG hook: a TCP segment of a connection an ALG watches, handed to the connection's stream layer
//! and rebuilt from what it decides.
//!
//! Owns: giving the stream layer ([`crate::stream`], through the connection's [`AlgConn`]) a segment's
//! payload read in place, with the context its ALG judges lines in ([`Engine::alg`]); writing the decided
//! bytes back as one or more segments — the first into the arriving packet's own buffer, the rest
//! behind it — translated like any packet of the connection; the index of connections holding bytes
//! and releasing them when their wait ends ([`Engine::release_held`]). Must not: parse or format FTP
//! (`alg::ftp`), decide policy about announced endpoints (`alg`), or map numbers or keep held bytes
//! itself (the stream layer does).

use super::{public_endpoint, translate, AckUse, Engine, Transmit, Verdict};

use crate::alg::AlgCtx;
use crate::conntrack::AlgConn;
use crate::flow::{ConnId, Dir, FlowKey, Proto, Side};
use crate::metrics::DropReason;
use crate::stream::segment::{rewrite_numbers, set_urgent, Template};
use crate::stream::{Incoming, Tally};
use crate::time::Instant;
use crate::wire::{Ipv4Packet, TcpFlags};

impl Engine {
    /// A segment of a connection an ALG watches.
    pub(super) fn alg(&mut self, id: ConnId, dir: Dir, pkt: &mut Vec<u8>, ack_use: AckUse) -> Verdict {
        // The ALG reads this payload and may re-checksum it: corrupt bytes must not get a valid checksum
        // (nor become the edit history a good retransmission is rebuilt from).
        if !Ipv4Packet::new_unchecked(&pkt[..]).verify_transport_checksum() {
            return Verdict::Drop(DropReason::AlgBadChecksum);
        }
        let mtu = self.config.mtu;
        // Held bytes leave later with this segment's headers, as the sender wrote them.
        let template = Template::of(pkt);
        let mut extra = Vec::new();
        let Some((alg, mut ctx, to, egress)) = self.alg_parts(id, dir) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let mut hook = Hook {
            alg,
            tally: Tally::default(),
            template,
            to,
            egress,
            mtu: mtu[egress.index()] as usize,
            split: false,
        };
        let v = hook.segment(dir, pkt, ack_use, &mut ctx, &mut extra);
        let Hook { alg, tally, split, .. } = hook;
        let held = alg.stream.held_len(dir) > 0;
        if held {
            alg.stream.keep_template(dir, template.header());
        }
        tally.add_to(&mut self.metrics);
        if split {
            self.metrics.alg_segments_split += 1;
        }
        self.out.extend(extra.into_iter().map(|packet| Transmit { side: egress, packet }));
        if held {
            self.held.insert((id, dir));
        } else {
            self.held.remove(&(id, dir));
        }
        v
    }

    /// The ALG state of connection `id` and the context its ALG judges lines in (the NAT, pinholes,
    /// counters and events: other parts of the engine, so both can be lent at once), with where `dir`'s
    /// packets go.
    fn alg_parts(&mut self, id: ConnId, dir: Dir) -> Option<(&mut AlgConn, AlgCtx<'_>, FlowKey, Side)> {
        let conn = self.table.get_mut(id)?;
        let (to, egress) = (conn.translated(dir), conn.egress(dir));
        // The control connection's public address: its data connections and their announcements use
        // it (issue 16, paired pooling).
        let public_ip = public_endpoint(conn).addr;
        let alg = conn.alg.as_deref_mut()?;
        let ctx = AlgCtx {
            nat: &mut self.nat,
            pinholes: &mut self.pinholes,
            metrics: &mut self.metrics,
            policy: &self.config.ftp,
            public_ip,
            now: self.now,
            control: id,
            events: &mut self.events,
        };
        Some((alg, ctx, to, egress))
    }

    /// A segment of a connection that the window tracker ignored (behind the window, or an RST that is
    /// not exact): passed on with its numbers mapped into the receiver's space and its addresses
    /// translated, but the ALG neither reads it nor changes its state for it.
    pub(super) fn alg_passthrough(&mut self, id: ConnId, dir: Dir, pkt: &mut [u8]) -> Verdict {
        let Some(conn) = self.table.get(id) else { return Verdict::Drop(DropReason::Malformed) };
        let (to, egress) = (conn.translated(dir), conn.egress(dir));
        let Some(alg) = conn.alg.as_ref() else { return Verdict::Drop(DropReason::Malformed) };
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let Ok(tcp) = ip.tcp() else { return Verdict::Drop(DropReason::Malformed) };
        let (seq, ack, flags) = (tcp.seq_number(), tcp.ack_number(), tcp.flags());
        let this_map = alg.stream.seq_map(dir);
        let other_map = alg.stream.seq_map(dir.reverse());
        let seq_out = (!this_map.is_identity()).then(|| this_map.map(seq));
        let ack_in = if flags.ack { other_map.unmap(ack) } else { ack };
        rewrite_numbers(pkt, seq_out, ack_in, other_map);
        finish_alg_packet(pkt, &to, egress)
    }

    /// Sends bytes held past the hold limit as they were.
    pub(super) fn release_held(&mut self, now: Instant) {
        let timeout = self.config.ftp.hold_timeout;
        let due: Vec<(ConnId, Dir)> = self
            .held
            .iter()
            .copied()
            .filter(|&(id, dir)| {
                self.table
                    .get(id)
                    .and_then(|c| c.alg.as_ref())
                    .and_then(|a| a.stream.hold_deadline(dir, timeout))
                    .is_some_and(|d| d <= now)
            })
            .collect();
        let mtu = self.config.mtu;
        for (id, dir) in due {
            self.held.remove(&(id, dir));
            let (mut tally, mut pieces) = (Tally::default(), Vec::new());
            let Some((alg, mut ctx, to, egress)) = self.alg_parts(id, dir) else { continue };
            if let Some(r) = alg.release_held(dir, &mut ctx, &mut tally) {
                released_pieces(alg, dir, r, &to, mtu[egress.index()] as usize, &mut pieces);
            }
            tally.add_to(&mut self.metrics);
            self.out.extend(pieces.into_iter().map(|packet| Transmit { side: egress, packet }));
        }
    }
}

/// The segments that carry bytes released from a hold (`r`), each within the receiver's MSS and the
/// egress MTU, numbered and translated like the connection's other segments.
fn released_pieces(
    alg: &AlgConn,
    dir: Dir,
    r: crate::stream::Released,
    to: &FlowKey,
    mtu: usize,
    pieces: &mut Vec<Vec<u8>>,
) {
    let Some(template) = Template::from_header(&r.template) else { return };
    let Ok(ack) = Ipv4Packet::new_unchecked(template.header()).tcp().map(|t| t.ack_number()) else {
        return;
    };
    let other_map = alg.stream.seq_map(dir.reverse());
    // Held bytes accumulate over several segments: like any segment we build, what leaves must fit the
    // receiver's MSS and the egress MTU.
    let limit = template.piece_limit(alg.stream.mss(dir.reverse()), mtu);
    let mut at = r.seq;
    for piece in r.bytes.chunks(limit) {
        let flags = TcpFlags { ack: true, psh: true, ..TcpFlags::default() };
        let mut p = Vec::new();
        template.write(&mut p, at, piece, flags);
        rewrite_numbers(&mut p, None, other_map.unmap(ack), other_map);
        finish_rebuilt(&mut p, to);
        pieces.push(p);
        at = at.add(piece.len() as u32);
    }
}

/// One segment of an ALG connection on its way through: what it needs besides the engine's context.
struct Hook<'a> {
    alg: &'a mut AlgConn,
    tally: Tally,
    /// The arriving segment's headers, untouched.
    template: Template,
    to: FlowKey,
    egress: Side,
    mtu: usize,
    /// The decided bytes did not fit one segment.
    split: bool,
}

impl Hook<'_> {
    fn segment(
        &mut self,
        dir: Dir,
        pkt: &mut Vec<u8>,
        ack_use: AckUse,
        ctx: &mut AlgCtx<'_>,
        extra: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let Ok(tcp) = ip.tcp() else { return Verdict::Drop(DropReason::Malformed) };
        let (seq, ack, flags, urg) = (tcp.seq_number(), tcp.ack_number(), tcp.flags(), tcp.urgent_ptr());
        if flags.syn {
            if let Some(mss) = tcp.mss_option() {
                self.alg.stream.set_mss(dir, mss);
            }
        }
        let at = ip.header_len() + tcp.header_len();
        let in_len = tcp.payload().len();
        let other = dir.reverse();
        // The ack and SACK blocks speak of the other direction's bytes as the receiver saw them.
        let ack_in = if flags.ack { self.alg.stream.unmap_ack(other, ack) } else { ack };
        if flags.ack && !flags.rst && ack_use == AckUse::Act {
            // The window tracker accepted this acknowledgement: nothing beyond what the other side could
            // have sent. Edits it covers are forgotten, and bytes the framer never saw are jumped over.
            self.alg.on_ack(other, ack_in, ctx, &mut self.tally);
        }
        if flags.rst || (flags.syn && in_len == 0) {
            let s = (!self.alg.stream.seq_map(dir).is_identity()).then(|| self.alg.stream.map_seq(dir, seq));
            if flags.syn {
                let syn = Incoming { seq, syn: true, fin: false, payload: &[] };
                let _ = self.alg.segment(dir, syn, ctx, &mut self.tally);
            }
            rewrite_numbers(pkt, s, ack_in, self.alg.stream.seq_map(other));
            return finish_alg_packet(pkt, &self.to, self.egress);
        }
        // The payload is read where it lies: the stream layer writes what it decides into its own buffer.
        let payload = &pkt[at..at + in_len];
        let seg = Incoming { seq, syn: flags.syn, fin: flags.fin, payload };
        let out = match self.alg.segment(dir, seg, ctx, &mut self.tally) {
            Err(r) => return Verdict::Drop(r),
            Ok(None) => None,
            Ok(Some(o)) if o.payload == payload && o.seq == seq && o.fin == flags.fin => None,
            Ok(Some(o)) => Some(o),
        };
        let other_map = self.alg.stream.seq_map(other);
        let Some(out) = out else {
            // Nothing changed in this segment: numbers and addresses only, in place.
            rewrite_numbers(pkt, None, ack_in, other_map);
            return finish_alg_packet(pkt, &self.to, self.egress);
        };
        let limit = self.template.piece_limit(self.alg.stream.mss(other), self.mtu);
        let chunk = if out.payload.len() > limit && out.payload.len() > in_len {
            self.split = true;
            limit
        } else {
            out.payload.len().max(1)
        };
        let urgent_at = flags.urg.then(|| self.alg.stream.map_seq(dir, seq.add(urg as u32)));
        let pieces = out.payload.len().div_ceil(chunk).max(1);
        let mut at = out.seq;
        for i in 0..pieces {
            let piece =
                &out.payload[(i * chunk).min(out.payload.len())..((i + 1) * chunk).min(out.payload.len())];
            let last = i + 1 == pieces;
            let f =
                TcpFlags { fin: out.fin && last, psh: flags.psh && last, syn: false, urg: false, ..flags };
            // The first piece goes in the arriving packet's buffer, the others behind it.
            let mut spare = Vec::new();
            let p = if i == 0 { &mut *pkt } else { &mut spare };
            self.template.write(p, at, piece, f);
            if let Some(u) = urgent_at {
                set_urgent(p, at, u, f);
            }
            rewrite_numbers(p, None, ack_in, other_map);
            finish_rebuilt(p, &self.to);
            if i > 0 {
                extra.push(spare);
            }
            at = at.add(piece.len() as u32);
        }
        Verdict::Forward(self.egress)
    }
}

/// Addresses translated and TTL decremented: the rest of what every forwarded packet gets.
fn finish_alg_packet(pkt: &mut [u8], to: &FlowKey, egress: Side) -> Verdict {
    translate(pkt, Proto::Tcp, to, true);
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    let ttl = ip.ttl();
    ip.set_ttl(ttl.saturating_sub(1));
    Verdict::Forward(egress)
}

/// A segment written from a template: finished like any forwarded one, then its TCP checksum computed
/// whole (its payload is new).
fn finish_rebuilt(p: &mut [u8], to: &FlowKey) {
    finish_alg_packet(p, to, Side::Outside);
    Ipv4Packet::new_unchecked(&mut p[..]).fill_transport_checksum();
}

#[cfg(test)]
mod tests {
    use super::super::testing::{engine, open_tcp, run, tcp, HOST, PUBLIC, REMOTE};
    use super::*;
    use crate::wire::etherparse_check::seen;
    use crate::wire::tcp::flags;

    /// The TCP payload and sequence number of a packet, read by etherparse.
    fn payload_and_seq(p: &[u8]) -> (Vec<u8>, u32) {
        let s = seen(p);
        let t = etherparse::TcpSlice::from_slice(&s.upper).unwrap();
        (t.payload().to_vec(), t.sequence_number())
    }

    /// An FTP control connection HOST:40000 → REMOTE:21 past the greeting; returns its public port and
    /// the client's next sequence number (101) and the server's (512).
    fn control(e: &mut Engine) -> u16 {
        let port = open_tcp(e, 40000, 21);
        let greet = tcp(REMOTE, 21, PUBLIC, port, 501, 101, flags::ACK | flags::PSH, b"220 ready\r\n");
        assert_eq!(run(e, Side::Outside, &greet).0, Verdict::Forward(Side::Inside));
        port
    }

    #[test]
    fn a_port_command_is_rewritten_and_the_numbers_behind_it_shift_both_ways() {
        let mut e = engine();
        let port = control(&mut e);
        let cmd = b"PORT 10,0,0,2,156,65\r\n";
        let (v, out, _) = run(&mut e, Side::Inside, &tcp(HOST, 40000, REMOTE, 21, 101, 512, flags::ACK, cmd));
        assert_eq!(v, Verdict::Forward(Side::Outside));
        let (line, seq) = payload_and_seq(&out);
        assert_eq!(seq, 101);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.starts_with("PORT 192,0,2,1,") && text.ends_with("\r\n"), "{text:?}");
        let delta = line.len() as u32 - cmd.len() as u32;
        // RFC 959's next command leaves shifted by the length change...
        let (_, out, _) =
            run(&mut e, Side::Inside, &tcp(HOST, 40000, REMOTE, 21, 123, 512, flags::ACK, b"LIST\r\n"));
        assert_eq!(payload_and_seq(&out).1, 123 + delta);
        // ...and the server's acknowledgement of it comes back in the client's numbers.
        let ack = tcp(REMOTE, 21, PUBLIC, port, 512, 129 + delta, flags::ACK, b"");
        let (v, back, _) = run(&mut e, Side::Outside, &ack);
        assert_eq!(v, Verdict::Forward(Side::Inside));
        let upper = seen(&back).upper;
        let t = etherparse::TcpSlice::from_slice(&upper).unwrap();
        assert_eq!(t.acknowledgment_number(), 129);
        // The pinhole lets the server's data connection in, to the port the client named.
        let nums: Vec<u16> = text.trim_end()[5..].split(',').map(|n| n.parse().unwrap()).collect();
        let public_data = nums[4] * 256 + nums[5];
        let (v, syn, _) =
            run(&mut e, Side::Outside, &tcp(REMOTE, 20, PUBLIC, public_data, 7, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Forward(Side::Inside));
        assert_eq!(&syn[16..20], &HOST.octets());
        assert_eq!(&syn[22..24], &(156u16 * 256 + 65).to_be_bytes());
    }

    #[test]
    fn a_retransmitted_command_is_rebuilt_byte_for_byte() {
        let mut e = engine();
        control(&mut e);
        let seg = tcp(HOST, 40000, REMOTE, 21, 101, 512, flags::ACK, b"PORT 10,0,0,2,156,65\r\n");
        let (_, first, _) = run(&mut e, Side::Inside, &seg);
        let (v, again, _) = run(&mut e, Side::Inside, &seg);
        assert_eq!(v, Verdict::Forward(Side::Outside));
        assert_eq!(payload_and_seq(&again), payload_and_seq(&first));
        assert_eq!(e.metrics().alg_rewrites_port, 1, "one rewrite, not two");
    }

    #[test]
    fn a_command_naming_another_host_is_not_rewritten_into_a_pinhole() {
        let mut e = engine();
        control(&mut e);
        // RFC 2577 §3: a PORT naming a third party (bounce) must not open anything.
        let cmd = b"PORT 10,0,0,9,156,65\r\n";
        run(&mut e, Side::Inside, &tcp(HOST, 40000, REMOTE, 21, 101, 512, flags::ACK, cmd));
        assert_eq!(e.metrics().pinholes_created, 0);
    }
}
