//! The ALG hook: a TCP segment of a connection the FTP ALG watches, taken apart into what the ALG sees
//! and rebuilt from what it returns.
//!
//! Owns: giving the ALG a segment's payload ([`Engine::alg`]), re-emitting the edited payload as one or
//! more segments within the MSS/MTU, sequence/ack/SACK/urgent numbers mapped through the stream's
//! edit history ([`Engine::rewrite_numbers`]), held bytes released when their wait ends
//! ([`Engine::release_held`]) with the header template kept for them. Must not: parse or format FTP
//! (`alg::ftp`), or decide policy about announced endpoints (the ALG's session does).

use super::{public_endpoint, translate, AckUse, Engine, Transmit, Verdict};

use crate::alg::ftp::FtpSession;
use crate::alg::AlgCtx;
use crate::flow::{ConnId, Dir, FlowKey, Proto, Side};
use crate::metrics::DropReason;
use crate::time::Instant;
use crate::wire::{Ipv4Packet, SeqNum, TcpFlags};

/// RFC 9293 §3.7.1: the MSS a host may assume when its peer announced none.
const DEFAULT_MSS: usize = 536;

impl Engine {
    /// A segment of an FTP control connection.
    pub(super) fn alg(&mut self, id: ConnId, dir: Dir, pkt: &mut Vec<u8>, ack_use: AckUse) -> Verdict {
        // The ALG reads this payload and may re-checksum it: corrupt bytes must not get a valid checksum
        // (nor become the edit history a good retransmission is rebuilt from).
        if !Ipv4Packet::new_unchecked(&pkt[..]).verify_transport_checksum() {
            return Verdict::Drop(DropReason::AlgBadChecksum);
        }
        let conn = self.table.get_mut(id).expect("exists");
        let to = conn.translated(dir);
        let egress = conn.egress(dir);
        let mut sess = conn.ftp.take().expect("ALG connection");
        // Held bytes leave later with this segment's headers, as the sender wrote them.
        let template = pkt_template(pkt);
        let v = self.alg_segment(id, dir, &mut sess, &to, egress, pkt, ack_use);
        if sess.held_len(dir) > 0 {
            self.held.insert((id, dir), template);
        } else {
            self.held.remove(&(id, dir));
        }
        if let Some(conn) = self.table.get_mut(id) {
            conn.ftp = Some(sess);
        }
        v
    }

    // The split of this function into the stream layer and the ALG hook is issue 13's.

    #[allow(clippy::too_many_arguments)]
    pub(super) fn alg_segment(
        &mut self,
        id: ConnId,
        dir: Dir,
        sess: &mut FtpSession,
        to: &FlowKey,
        egress: Side,
        pkt: &mut Vec<u8>,
        ack_use: AckUse,
    ) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let Ok(tcp) = ip.tcp() else { return Verdict::Drop(DropReason::Malformed) };
        let (seq, ack, flags, urg) = (tcp.seq_number(), tcp.ack_number(), tcp.flags(), tcp.urgent_ptr());
        if flags.syn {
            if let Some(mss) = tcp.mss_option() {
                sess.mss[dir.index()] = Some(mss);
            }
        }
        let in_len = tcp.payload().len();
        let payload = tcp.payload().to_vec();
        let other = dir.reverse();
        // The ack and SACK blocks speak of the other direction's bytes as the receiver saw them.
        let ack_in = if flags.ack { sess.seq_map(other).unmap(ack) } else { ack };
        if flags.ack && !flags.rst && ack_use == AckUse::Act {
            // The window tracker accepted this acknowledgement: nothing beyond what the other side could
            // have sent. Edits it covers are forgotten, and bytes the framer never saw are jumped over.
            let mut ctx = self.alg_ctx(id);
            sess.on_ack(other, ack_in, &mut ctx);
        }
        let other_map = sess.seq_map(other).clone();
        let this_map_identity = sess.seq_map(dir).is_identity();
        if flags.rst || (flags.syn && in_len == 0) {
            let s = sess.seq_map(dir).map(seq);
            if flags.syn {
                let mut ctx = self.alg_ctx(id);
                let _ = sess.on_segment(dir, seq, true, false, &[], &mut ctx);
            }
            self.rewrite_numbers(pkt, (!this_map_identity).then_some(s), ack_in, &other_map);
            return self.finish_alg_packet(pkt, to, egress);
        }
        let out = {
            let mut ctx = self.alg_ctx(id);
            sess.on_segment(dir, seq, flags.syn, flags.fin, &payload, &mut ctx)
        };
        let out = match out {
            Err(r) => return Verdict::Drop(r),
            Ok(None) => {
                self.rewrite_numbers(pkt, None, ack_in, &other_map);
                return self.finish_alg_packet(pkt, to, egress);
            }
            Ok(Some(o)) => o,
        };
        if out.payload == payload && out.seq == seq && out.fin == flags.fin {
            // Nothing changed in this segment: numbers and addresses only, in place.
            self.rewrite_numbers(pkt, None, ack_in, &other_map);
            return self.finish_alg_packet(pkt, to, egress);
        }
        // Build the segment(s) that carry the decided bytes.
        let ip_hl = ip.header_len();
        let tcp_hl = tcp.header_len();
        let mtu_room = (self.config.mtu[egress.index()] as usize).saturating_sub(ip_hl + tcp_hl);
        let mss = sess.mss[other.index()].map_or(DEFAULT_MSS, |m| m as usize);
        // RFC 6691 §2: the MSS counts data only, and a sender must shrink its data by the IP and TCP
        // options it sends; the pieces carry this segment's options.
        let limit = mss.saturating_sub((ip_hl + tcp_hl).saturating_sub(40)).min(mtu_room).max(1);
        let chunk = if out.payload.len() > limit && out.payload.len() > in_len {
            self.metrics.alg_segments_split += 1;
            limit
        } else {
            out.payload.len().max(1)
        };
        let urgent_at = flags.urg.then(|| sess.seq_map(dir).map(seq.add(urg as u32)));
        let template = pkt.clone();
        let mut packets = Vec::new();
        let pieces: Vec<&[u8]> =
            if out.payload.is_empty() { vec![&[][..]] } else { out.payload.chunks(chunk).collect() };
        let n = pieces.len();
        let mut at = out.seq;
        for (i, piece) in pieces.into_iter().enumerate() {
            let last = i + 1 == n;
            let f =
                TcpFlags { fin: out.fin && last, psh: flags.psh && last, syn: false, urg: false, ..flags };
            let mut p = build_segment(&template, ip_hl, tcp_hl, at, piece, f);
            {
                let mut ipm = Ipv4Packet::new_unchecked(&mut p[..]);
                if let Ok(mut t) = ipm.tcp_mut() {
                    if let Some(u) = urgent_at {
                        let off = u.diff(at);
                        if off > 0 && off <= u16::MAX as i32 {
                            t.set_flags(TcpFlags { urg: true, ..f });
                            t.set_urgent_ptr(off as u16);
                        }
                    }
                }
            }
            self.rewrite_numbers(&mut p, None, ack_in, &other_map);
            translate(&mut p, Proto::Tcp, to, true);
            let mut ipm = Ipv4Packet::new_unchecked(&mut p[..]);
            let ttl = ipm.ttl();
            ipm.set_ttl(ttl.saturating_sub(1));
            ipm.fill_transport_checksum();
            packets.push(p);
            at = at.add(piece.len() as u32);
        }
        let mut iter = packets.into_iter();
        *pkt = iter.next().expect("at least one piece");
        for p in iter {
            self.out.push_back(Transmit { side: egress, packet: p });
        }
        Verdict::Forward(egress)
    }

    /// A segment of a control connection that the window tracker ignored (behind the window, or an
    /// RST that is not exact): passed on with its numbers mapped into the receiver's space and its
    /// addresses translated, but the ALG neither reads it nor changes its state for it.
    pub(super) fn alg_passthrough(&mut self, id: ConnId, dir: Dir, pkt: &mut [u8]) -> Verdict {
        let Some(conn) = self.table.get(id) else { return Verdict::Drop(DropReason::Malformed) };
        let (to, egress) = (conn.translated(dir), conn.egress(dir));
        let Some(sess) = conn.ftp.as_ref() else { return Verdict::Drop(DropReason::Malformed) };
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let Ok(tcp) = ip.tcp() else { return Verdict::Drop(DropReason::Malformed) };
        let (seq, ack, flags) = (tcp.seq_number(), tcp.ack_number(), tcp.flags());
        let this_map = &sess.seq_map(dir);
        let other_map = sess.seq_map(dir.reverse()).clone();
        let seq_out = (!this_map.is_identity()).then(|| this_map.map(seq));
        let ack_in = if flags.ack { other_map.unmap(ack) } else { ack };
        self.rewrite_numbers(pkt, seq_out, ack_in, &other_map);
        self.finish_alg_packet(pkt, &to, egress)
    }

    pub(super) fn alg_ctx(&mut self, id: ConnId) -> AlgCtx<'_> {
        // The control connection's public address: its data connections and their announcements
        // use it (issue 16, paired pooling).
        let public_ip = self.table.get(id).map_or(self.config.public_ip, |c| public_endpoint(c).addr);
        AlgCtx {
            nat: &mut self.nat,
            pinholes: &mut self.pinholes,
            metrics: &mut self.metrics,
            policy: &self.config.ftp,
            public_ip,
            now: self.now,
            control: id,
            events: &mut self.events,
        }
    }

    /// Sets seq (when given), ack and SACK blocks; the wire setters keep the checksum right.
    pub(super) fn rewrite_numbers(
        &self,
        pkt: &mut [u8],
        seq: Option<SeqNum>,
        ack_in: SeqNum,
        other_map: &crate::seqadj::SeqMap,
    ) {
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        let Ok(mut t) = ip.tcp_mut() else { return };
        if let Some(s) = seq {
            if t.seq_number() != s {
                t.set_seq_number(s);
            }
        }
        if t.flags().ack && t.ack_number() != ack_in {
            t.set_ack_number(ack_in);
        }
        if !other_map.is_identity() {
            // RFC 2018 §3 / RFC 2883: every SACK block edge, D-SACK included, is a sequence number of
            // the other direction.
            t.map_sack_blocks(|s| other_map.unmap(s));
        }
    }

    pub(super) fn finish_alg_packet(&mut self, pkt: &mut [u8], to: &FlowKey, egress: Side) -> Verdict {
        translate(pkt, Proto::Tcp, to, true);
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        let ttl = ip.ttl();
        ip.set_ttl(ttl.saturating_sub(1));
        Verdict::Forward(egress)
    }

    /// Sends bytes held past the hold limit as they were.
    pub(super) fn release_held(&mut self, now: Instant) {
        let due: Vec<(ConnId, Dir)> = self
            .held
            .keys()
            .copied()
            .filter(|&(id, dir)| {
                self.table
                    .get(id)
                    .and_then(|c| c.ftp.as_ref())
                    .and_then(|s| s.hold_deadline(dir, self.config.ftp.hold_timeout))
                    .is_some_and(|d| d <= now)
            })
            .collect();
        for (id, dir) in due {
            let Some(template) = self.held.remove(&(id, dir)) else { continue };
            let Some(conn) = self.table.get_mut(id) else { continue };
            let to = conn.translated(dir);
            let egress = conn.egress(dir);
            let Some(sess) = conn.ftp.as_mut() else { continue };
            let Some((at, bytes)) = sess.release_held(dir, &mut self.metrics) else {
                continue;
            };
            let other_map = sess.seq_map(dir.reverse()).clone();
            let peer_mss = sess.mss[dir.reverse().index()];
            let ip = Ipv4Packet::new_unchecked(&template[..]);
            let Ok(tcp) = ip.tcp() else { continue };
            let (ip_hl, tcp_hl, ack) = (ip.header_len(), tcp.header_len(), tcp.ack_number());
            // Held bytes accumulate over several segments: like any segment we build, what leaves must
            // fit the receiver's MSS and the egress MTU.
            let mtu_room = (self.config.mtu[egress.index()] as usize).saturating_sub(ip_hl + tcp_hl);
            let options = (ip_hl + tcp_hl).saturating_sub(40);
            let limit =
                peer_mss.map_or(DEFAULT_MSS, |m| m as usize).saturating_sub(options).min(mtu_room).max(1);
            let mut at = at;
            for piece in bytes.chunks(limit) {
                let flags = TcpFlags { ack: true, psh: true, ..TcpFlags::default() };
                let mut p = build_segment(&template, ip_hl, tcp_hl, at, piece, flags);
                self.rewrite_numbers(&mut p, None, other_map.unmap(ack), &other_map);
                translate(&mut p, Proto::Tcp, &to, true);
                let mut ipm = Ipv4Packet::new_unchecked(&mut p[..]);
                let ttl = ipm.ttl();
                ipm.set_ttl(ttl.saturating_sub(1));
                ipm.fill_transport_checksum();
                self.out.push_back(Transmit { side: egress, packet: p });
                at = at.add(piece.len() as u32);
            }
        }
    }
}

/// The header to send released bytes with later: the packet as it arrived (addresses untranslated).
pub(super) fn pkt_template(pkt: &[u8]) -> Vec<u8> {
    let ip = Ipv4Packet::new_unchecked(pkt);
    let hl = ip.header_len();
    let thl = ip.tcp().map(|t| t.header_len()).unwrap_or(20);
    pkt[..(hl + thl).min(pkt.len())].to_vec()
}

/// A TCP segment with the IP and TCP headers of `template`, the given sequence number, flags and payload.
/// The TCP checksum is left for the caller to fill (the payload changed).
pub(super) fn build_segment(
    template: &[u8],
    ip_hl: usize,
    tcp_hl: usize,
    seq: SeqNum,
    payload: &[u8],
    flags: TcpFlags,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(ip_hl + tcp_hl + payload.len());
    p.extend_from_slice(&template[..ip_hl + tcp_hl]);
    p.extend_from_slice(payload);
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.set_total_len(ip_hl + tcp_hl + payload.len());
    if let Ok(mut t) = ip.tcp_mut() {
        t.set_seq_number(seq);
        t.set_flags(flags);
        t.set_urgent_ptr(0);
    }
    p
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

    #[test]
    fn a_segment_is_rebuilt_from_its_template() {
        let p = tcp(HOST, 40000, REMOTE, 21, 101, 512, flags::ACK, b"NOOP\r\n");
        let t = pkt_template(&p);
        assert_eq!(t.len(), 40);
        let mut s = build_segment(&t, 20, 20, SeqNum::new(999), b"HELP\r\n", TcpFlags::from_byte(flags::ACK));
        Ipv4Packet::new_unchecked(&mut s[..]).fill_transport_checksum();
        let (payload, seq) = payload_and_seq(&s);
        assert_eq!((payload.as_slice(), seq), (&b"HELP\r\n"[..], 999));
    }
}
