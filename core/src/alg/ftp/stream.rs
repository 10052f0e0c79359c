//! One direction of an FTP control connection, framed by stream offset.
//!
//! Owns: where lines start and end in the sender's sequence space (from the SYN, or from pickup),
//! which bytes are held back because they may belong to a line the ALG rewrites, the splice of a
//! rewrite into the output, the TLS record walk while the connection is opaque, and the sequence map
//! ([`SeqMap`]) of this direction. Must not: decide what a line means (the session does, through the
//! callback) or touch packet headers.
//!
//! Framing is a property of the byte stream, not of segments: every byte is seen once, in order, at its
//! sequence number, so a line split across segments, pipelined lines, duplicates and repacketised
//! retransmissions all come out the same. Bytes already decided are never re-parsed: a retransmission
//! is rebuilt from the edit history, so it cannot open a second pinhole.
//!
//! Gaps: a segment past bytes the framer has not seen is refused (the sender retransmits what a
//! receiver did not get). When the receiver acknowledges bytes the framer never saw — they went another
//! way, or a recording lost them — waiting would stall the connection for good, so [`Stream::gap`]
//! jumps over them: the line cut by the gap is left as sent (its held bytes were delivered by the other
//! path), and the framer trusts no line start until it has seen a line end after the gap, so a gap can
//! never make a line start out of the middle of a line (nor a pinhole out of half an announcement).
//!
//! Not FTP: when the session finds a line that is not FTP ([`Action::NotFtp`]), the stream stops
//! parsing at once, mid-segment if need be, and passes every later byte as it is.

use crate::metrics::{DropReason, Metrics, RefusalReason};
use crate::seqadj::SeqMap;
use crate::time::Instant;
use crate::wire::SeqNum;

use super::parse::{candidate, Candidate};

/// A complete line handed to the session.
pub struct Line<'a> {
    /// The line's bytes including its LF (truncated to the maximum line length if longer).
    pub bytes: &'a [u8],
    /// Sequence number of its first byte.
    pub start: SeqNum,
    /// The line was held back, so it may still be rewritten.
    pub held: bool,
    /// The line was longer than `bytes`.
    pub truncated: bool,
    /// The line's start was not seen (the first line after a pickup or a gap): it may be the tail of a
    /// line. It is handed over for bookkeeping only (a reply still answers its command); nothing in it
    /// is rewritten or judged.
    pub straddling: bool,
}

/// What the session wants done with a held line.
pub enum Action {
    Keep,
    /// Replace `span` (byte range within the line) with these bytes.
    Replace(std::ops::Range<usize>, Vec<u8>),
    /// The line shows the connection is not FTP: keep it, and parse nothing after it.
    NotFtp,
}

/// Output for one arriving segment of the rewritten direction.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SegmentOut {
    /// Receiver-space sequence number of the first payload byte (or of the FIN / pure ACK).
    pub seq: SeqNum,
    pub payload: Vec<u8>,
    /// Send the segment's FIN after `payload`.
    pub fin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Clear,
    /// Inside a TLS record stream: `got` header bytes of the next record seen, `remaining` body bytes
    /// of the current record left.
    Opaque {
        hdr: [u8; 5],
        got: u8,
        remaining: u32,
    },
}

/// Whether the gateway may change a direction's bytes: only lines travelling LAN→WAN are rewritten
/// (and, on a NAT64 control connection, either way: see [`Stream::enable_nat64`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Rewrite,
    Observe,
}

/// Who sends a direction's lines: the client's commands or the server's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Client,
    Server,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub map: SeqMap,
    started: bool,
    /// Next sender byte not yet received in order.
    next: SeqNum,
    /// Held bytes are `[next - held.len(), next)`.
    held: Vec<u8>,
    held_since: Option<Instant>,
    line: Vec<u8>,
    line_start: SeqNum,
    line_len: usize,
    at_line_start: bool,
    candidate: bool,
    /// False after a pickup or a gap until the next line end: a line start is only trusted when seen.
    synced: bool,
    /// This direction travels LAN→WAN and may be rewritten.
    rewrite: bool,
    from_client: bool,
    tls: Tls,
    max_line: usize,
    fin_sent: bool,
    /// Not FTP: every byte passes as it is, nothing is parsed again.
    dead: bool,
    /// A gap was jumped and no line end seen since: the line now completing straddles it.
    after_gap: bool,
    /// The last segment refused past a gap: where it started, how often it came, when first.
    refused: Option<(SeqNum, u8, Instant)>,
    /// The other direction jumped a gap: bytes of this connection travel a path around the gateway.
    other_path: bool,
    /// A NAT64 control connection (RFC 6384): the client's EPSV/EPRT/ALGS/LPRT/LPSV are candidates
    /// too, and every server reply is held until complete (the gateway may replace any of them: the
    /// reply to a NOOP it substituted, a 227 it turns into 229/228).
    nat64: bool,
}

/// When a command and its reply both go around the gateway, no acknowledgement of the command's bytes
/// ever crosses it, and waiting for one would stall the connection: the sender keeps retransmitting
/// its next segment, past the gap, and never the bytes before it (it holds them acknowledged). A loss
/// before the gateway looks alike, except that the receiver never got those bytes: the sender's
/// retransmissions start at or below the gap, and any segment at or below it resets the count; and
/// only the other path explains why the sender, in the same breath, acknowledges bytes of the other
/// direction the gateway never saw. So the framer jumps such a gap only when both hold: this many
/// refusals of the same segment with nothing at or below the gap in between, spread over at least
/// [`REFUSED_PATIENCE`] (RTOs back off: 1 s, 2 s, 4 s...), and a gap jumped in the other direction.
const REFUSED_TIMES: u8 = 3;
const REFUSED_PATIENCE: core::time::Duration = core::time::Duration::from_secs(2);

impl Stream {
    pub fn new(edit: Edit, speaker: Speaker, max_line: usize) -> Stream {
        let rewrite = edit == Edit::Rewrite;
        let from_client = speaker == Speaker::Client;
        Stream {
            map: SeqMap::new(),
            started: false,
            next: SeqNum::new(0),
            held: Vec::new(),
            held_since: None,
            line: Vec::new(),
            line_start: SeqNum::new(0),
            line_len: 0,
            at_line_start: true,
            candidate: false,
            synced: true,
            rewrite,
            from_client,
            tls: Tls::Clear,
            max_line,
            fin_sent: false,
            dead: false,
            after_gap: false,
            refused: None,
            other_path: false,
            nat64: false,
        }
    }

    /// This direction belongs to a NAT64 control connection (see the `nat64` field): it may be
    /// rewritten, in either direction.
    pub fn enable_nat64(&mut self) {
        self.nat64 = true;
        self.rewrite = true;
    }

    /// Whether the line so far may still be one the session rewrites.
    fn is_candidate(&self) -> bool {
        candidate(&self.line, self.from_client) == Candidate::Maybe
            || (self.nat64
                && (!self.from_client || super::rfc6384::candidate(&self.line, true) == Candidate::Maybe))
    }

    pub fn rewrites(&self) -> bool {
        self.rewrite
    }

    /// First sender byte whose output is not decided yet.
    pub fn emitted(&self) -> SeqNum {
        self.next.sub(self.held.len() as u32)
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    pub fn hold_deadline(&self, timeout: core::time::Duration) -> Option<Instant> {
        self.held_since.map(|t| t + timeout)
    }

    pub fn is_opaque(&self) -> bool {
        matches!(self.tls, Tls::Opaque { .. })
    }

    /// The stream was found not to be FTP: it is passed through untouched for good.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// From the next byte on, nothing is parsed, held or rewritten. Bytes held now leave ahead of the
    /// next ones, as they were.
    pub fn go_dead(&mut self) {
        self.dead = true;
        self.candidate = false;
    }

    /// The other direction of this connection jumped a gap (see `REFUSED_TIMES`).
    pub fn other_path_seen(&mut self) {
        self.other_path = true;
    }

    /// The receiver acknowledged the sender's bytes up to `to` (sender space), past what the framer has
    /// seen: those bytes reached it without the gateway seeing them. Jumps the framer to `to` (see the
    /// module header). Returns whether there was a gap.
    pub fn gap(&mut self, to: SeqNum, metrics: &mut Metrics) -> bool {
        if !self.started || !to.gt(self.next) {
            return false;
        }
        metrics.alg_gaps += 1;
        tracing::info!(target: "ftpnat::alg", missed = to.diff(self.next), "peer acknowledged bytes the gateway never saw; framing resynchronises at the next line end");
        if !self.at_line_start || !self.held.is_empty() {
            // The line the gap cuts: what was held of it reached the receiver by the other way (it
            // acknowledged past it), so it is not sent again; it is neither parsed nor rewritten.
            metrics.alg_gap_lines += 1;
        }
        self.held.clear();
        self.held_since = None;
        self.candidate = false;
        self.next = to;
        self.at_line_start = true;
        self.synced = false;
        self.after_gap = true;
        if self.is_opaque() {
            // A TLS record walk cannot find its place again in the middle of a record stream.
            self.go_dead();
        }
        true
    }

    /// From the next byte on, the stream is a TLS record stream (after `AUTH TLS` answered 234).
    pub fn go_opaque(&mut self) {
        if !self.at_line_start {
            // A line still open when TLS starts never ends where we can see it: the first cleartext
            // byte after the record stream is not known to start a line (else a sender that wrote
            // "AUTH TLS\r\nxxxx" could get its next segment, "PORT ...", taken for a line start: NAT
            // Slipstreaming through the mode switch).
            self.synced = false;
        }
        // A candidate held now will not be rewritten; `push` sends it ahead of the next byte.
        self.candidate = false;
        self.tls = Tls::Opaque { hdr: [0; 5], got: 0, remaining: 0 };
    }

    /// Back to cleartext (a `CCC` answered 200). A stream already in the clear keeps its framing: the
    /// answer does not move where the sender's lines start.
    pub fn go_clear(&mut self) {
        if self.is_opaque() {
            self.tls = Tls::Clear;
            self.at_line_start = true;
            // Mid-record or not, nothing says the next byte starts a line.
            self.synced = false;
        }
    }

    fn start(&mut self, at: SeqNum, synced: bool) {
        self.started = true;
        self.next = at;
        self.synced = synced;
        self.at_line_start = true;
    }

    /// A segment starting at `a`, past the bytes the framer has seen: refused (its sender retransmits
    /// what the receiver lacks), unless the same segment keeps coming back without the bytes before it
    /// (see [`REFUSED_TIMES`]); then the gap is jumped and `Ok` lets the segment be framed.
    fn past_gap(&mut self, a: SeqNum, now: Instant, metrics: &mut Metrics) -> Result<(), DropReason> {
        let (times, since) = match self.refused {
            Some((at, n, first)) if at == a => (n.saturating_add(1), first),
            _ => (1, now),
        };
        if times >= REFUSED_TIMES && now.saturating_since(since) >= REFUSED_PATIENCE && self.other_path {
            self.refused = None;
            self.gap(a, metrics);
            return Ok(());
        }
        self.refused = Some((a, times, since));
        Err(DropReason::AlgOutOfOrder)
    }

    /// Handles one segment of the direction that may be rewritten. `seq` is the segment's sequence
    /// number (of the SYN if `syn`).
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        seq: SeqNum,
        syn: bool,
        fin: bool,
        payload: &[u8],
        now: Instant,
        metrics: &mut Metrics,
        on_line: &mut dyn FnMut(&Line<'_>) -> Action,
    ) -> Result<SegmentOut, DropReason> {
        let mut a = if syn { seq.add(1) } else { seq };
        if syn && !self.started {
            self.start(a, true);
        } else if !self.started {
            // Picked up mid-stream: the first line start is not known until a line end passes.
            self.start(a, false);
        }
        if !payload.is_empty() && !a.gt(self.next) {
            // Sent from at or below the gap: the sender does not hold the gap acknowledged.
            self.refused = None;
        }
        let mut payload = payload;
        // The part of this segment the receiver acknowledged, if any: `Some(horizon)`.
        let mut acked_part = None;
        // Bytes the receiver already acknowledged are not sent again; what history was needed to
        // rebuild them is gone.
        if let Some(h) = self.map.horizon() {
            if a.lt(h) {
                acked_part = Some(h);
                let had_payload = !payload.is_empty();
                let cut = (h.diff(a) as usize).min(payload.len());
                payload = &payload[cut..];
                a = a.add(cut as u32);
                if payload.is_empty() && had_payload && !fin {
                    // The sender retransmits bytes the receiver acknowledged: that ACK was lost after
                    // us. An empty segment at the receiver's next byte would draw no answer, so the
                    // sender would retransmit forever; one just below it is unacceptable and is
                    // answered with an ACK (RFC 9293 §3.10.7.4, the keep-alive probe of §3.8.4),
                    // which tells the sender again.
                    return Ok(SegmentOut { seq: self.map.map(h).sub(1), payload: Vec::new(), fin: false });
                }
                if payload.is_empty() && a.lt(h) && !fin {
                    return Ok(SegmentOut { seq: self.map.map(h), payload: Vec::new(), fin: false });
                }
            }
        }
        let b = a.add(payload.len() as u32);
        if payload.is_empty() {
            let emitted = self.emitted();
            let at = if a.ge(emitted) { emitted } else { a };
            let fin_now = fin && a == self.next && self.held.is_empty() && !self.fin_sent;
            if fin_now {
                self.fin_consumed();
            }
            let fin_out = fin_now || (fin && self.fin_sent && a.lt(self.next));
            return Ok(SegmentOut { seq: self.map.map(at), payload: Vec::new(), fin: fin_out });
        }
        if a.gt(self.next) {
            // A gap: framing needs every byte in order. The sender retransmits what we drop.
            self.past_gap(a, now, metrics)?;
        }
        let emitted = self.emitted();
        let mut out = Vec::new();
        let out_seq;
        if a.lt(emitted) {
            let end = if b.lt(emitted) { b } else { emitted };
            let n = end.diff(a) as usize;
            if self.map.overlaps(a, n as u32) {
                metrics.alg_retransmits_rebuilt += 1;
            }
            let (o, bytes) = self.map.rebuild(a, &payload[..n]);
            out_seq = o;
            out = bytes;
        } else {
            out_seq = self.map.map(emitted);
        }
        if b.gt(self.next) {
            let new = &payload[self.next.diff(a) as usize..];
            self.push(new, now, metrics, &mut out, on_line);
        }
        let mut fin_out = false;
        if fin && b == self.next {
            if !self.held.is_empty() {
                // The sender closes in the middle of a candidate line: nothing more will come, so the
                // line goes out as sent.
                metrics.refuse(RefusalReason::HoldTimeout);
                out.append(&mut self.held);
                self.candidate = false;
                self.held_since = None;
            }
            fin_out = true;
            self.fin_consumed();
        } else if fin && self.fin_sent && b.lt(self.next) {
            fin_out = true;
        }
        if let (Some(h), true, false) = (acked_part, out.is_empty(), fin_out) {
            // A retransmission of acknowledged bytes whose rest is still held (a line not complete
            // yet): the same lost ACK as above, and nothing to send; the probe tells the sender again,
            // or it would retransmit these bytes until the hold timeout while the rest of the line
            // waits behind them in its queue.
            return Ok(SegmentOut { seq: self.map.map(h).sub(1), payload: Vec::new(), fin: false });
        }
        Ok(SegmentOut { seq: out_seq, payload: out, fin: fin_out })
    }

    /// The FIN occupies one sequence number (RFC 9293 §3.4): what the sender numbers after it (its
    /// last ACKs) must map past it too.
    fn fin_consumed(&mut self) {
        if !self.fin_sent {
            self.fin_sent = true;
            self.next = self.next.add(1);
        }
    }

    /// Follows a direction that is never rewritten, to know its lines. Duplicated bytes are skipped.
    /// A segment past a gap is refused like in [`Stream::segment`]: forwarded, its bytes would never be
    /// seen again (the receiver acknowledges them once the gap fills), and the commands in them — a
    /// PASV whose 227 must be rewritten — would be lost to the session.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        seq: SeqNum,
        syn: bool,
        fin: bool,
        payload: &[u8],
        now: Instant,
        metrics: &mut Metrics,
        on_line: &mut dyn FnMut(&Line<'_>) -> Action,
    ) -> Result<(), DropReason> {
        let a = if syn { seq.add(1) } else { seq };
        if !self.started {
            // From the SYN, or picked up mid-stream (then no line start is trusted before a line end).
            self.start(a, syn);
        }
        let b = a.add(payload.len() as u32);
        if !payload.is_empty() {
            if a.gt(self.next) {
                self.past_gap(a, now, metrics)?;
            } else {
                self.refused = None;
            }
            if b.gt(self.next) {
                let new = &payload[self.next.diff(a) as usize..];
                let mut sink = Vec::new();
                self.push(new, now, metrics, &mut sink, on_line);
            }
        }
        if fin && b == self.next {
            // The FIN takes a sequence number too: its acknowledgement is no gap.
            self.fin_consumed();
        }
        Ok(())
    }

    /// Releases held bytes as they were (hold timeout). Returns the receiver-space sequence number and
    /// the bytes to send.
    pub fn release_held(&mut self, metrics: &mut Metrics) -> Option<(SeqNum, Vec<u8>)> {
        if self.held.is_empty() {
            return None;
        }
        metrics.refuse(RefusalReason::HoldTimeout);
        tracing::warn!(target: "ftpnat::alg", held = self.held.len(), "candidate line incomplete past the hold limit; released as sent");
        let at = self.map.map(self.emitted());
        self.candidate = false;
        self.held_since = None;
        Some((at, std::mem::take(&mut self.held)))
    }

    /// Feeds in-order new bytes. Decided output is appended to `out`.
    fn push(
        &mut self,
        data: &[u8],
        now: Instant,
        metrics: &mut Metrics,
        out: &mut Vec<u8>,
        on_line: &mut dyn FnMut(&Line<'_>) -> Action,
    ) {
        if !self.candidate {
            // Bytes held for a line that stopped being a candidate (TLS started under it, or the
            // connection turned out not to be FTP) go first: every byte leaves once, in order.
            out.append(&mut self.held);
        }
        if self.dead {
            out.extend_from_slice(data);
            self.next = self.next.add(data.len() as u32);
            self.held_since = None;
            return;
        }
        for (i, &byte) in data.iter().enumerate() {
            let at = self.next.add(i as u32);
            if let Tls::Opaque { ref mut hdr, ref mut got, ref mut remaining } = self.tls {
                if *remaining > 0 {
                    *remaining -= 1;
                    out.push(byte);
                    continue;
                }
                // At a record boundary: a TLS content type (RFC 8446 §5.1: 20..=24) continues the
                // record stream; anything else is cleartext FTP again (after CCC, RFC 4217 §11).
                if *got > 0 || (20..=24).contains(&byte) {
                    hdr[*got as usize] = byte;
                    *got += 1;
                    if *got == 5 {
                        *remaining = u16::from_be_bytes([hdr[3], hdr[4]]) as u32;
                        *got = 0;
                    }
                    out.push(byte);
                    continue;
                }
                tracing::info!(target: "ftpnat::alg", "TLS record stream ended; control connection is cleartext again");
                self.tls = Tls::Clear;
                self.at_line_start = true;
            }
            if self.at_line_start {
                self.at_line_start = false;
                self.line.clear();
                self.line_len = 0;
                self.line_start = at;
                self.candidate = self.rewrite && self.synced;
            }
            self.line_len += 1;
            if self.line.len() < self.max_line {
                self.line.push(byte);
            }
            if self.candidate {
                self.held.push(byte);
                if byte != b'\n' {
                    let still = self.is_candidate();
                    let overlong = self.line_len >= self.max_line;
                    if !still || overlong {
                        if overlong {
                            metrics.refuse(RefusalReason::Overlong);
                        }
                        out.append(&mut self.held);
                        self.candidate = false;
                    }
                }
            } else {
                out.push(byte);
            }
            if byte == b'\n' {
                self.at_line_start = true;
                if !self.synced {
                    self.synced = true;
                    if std::mem::take(&mut self.after_gap) {
                        // The first line after a gap may have begun in it: left as sent.
                        metrics.alg_gap_lines += 1;
                    }
                    let line = Line {
                        bytes: &self.line,
                        start: self.line_start,
                        held: false,
                        truncated: self.line_len > self.line.len(),
                        straddling: true,
                    };
                    let _ = on_line(&line);
                    continue;
                }
                let line = Line {
                    bytes: &self.line,
                    start: self.line_start,
                    held: self.candidate,
                    truncated: self.line_len > self.line.len(),
                    straddling: false,
                };
                let action = on_line(&line);
                if matches!(action, Action::NotFtp) {
                    // Nothing after this line is read: the rest of the segment goes as it is.
                    out.append(&mut self.held);
                    self.candidate = false;
                    self.dead = true;
                    out.extend_from_slice(&data[i + 1..]);
                    break;
                }
                if self.candidate {
                    self.candidate = false;
                    match action {
                        Action::Replace(span, with)
                            if span.end <= self.held.len() && span.start <= span.end =>
                        {
                            out.extend_from_slice(&self.held[..span.start]);
                            out.extend_from_slice(&with);
                            out.extend_from_slice(&self.held[span.end..]);
                            self.map.record(self.line_start.add(span.start as u32), span.len() as u32, with);
                            self.held.clear();
                        }
                        _ => out.append(&mut self.held),
                    }
                }
            }
        }
        self.next = self.next.add(data.len() as u32);
        if self.held.is_empty() {
            self.held_since = None;
        } else if self.held_since.is_none() {
            self.held_since = Some(now);
            metrics.alg_lines_held += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites "PORT x" lines to "PORT yy" (growing by one byte).
    fn grow(line: &Line<'_>) -> Action {
        if line.held && line.bytes.starts_with(b"PORT x") {
            Action::Replace(5..6, b"yy".to_vec())
        } else {
            Action::Keep
        }
    }

    fn run(stream: &mut Stream, segs: &[(u32, &[u8])]) -> Vec<(u32, Vec<u8>)> {
        let mut m = Metrics::default();
        let mut outs = Vec::new();
        for &(seq, data) in segs {
            let o = stream
                .segment(SeqNum::new(seq), false, false, data, Instant::ZERO, &mut m, &mut grow)
                .unwrap();
            outs.push((o.seq.get(), o.payload));
        }
        outs
    }

    fn fresh() -> Stream {
        let mut s = Stream::new(Edit::Rewrite, Speaker::Client, 512);
        let mut m = Metrics::default();
        s.segment(SeqNum::new(99), true, false, b"", Instant::ZERO, &mut m, &mut grow).unwrap();
        s
    }

    #[test]
    fn whole_line_in_one_segment() {
        let mut s = fresh();
        let o = run(&mut s, &[(100, b"USER a\r\nPORT x\r\nNOOP\r\n")]);
        assert_eq!(o, vec![(100, b"USER a\r\nPORT yy\r\nNOOP\r\n".to_vec())]);
        assert_eq!(s.map.map(SeqNum::new(123)), SeqNum::new(124));
    }

    #[test]
    fn split_line_is_held_then_rewritten() {
        let mut s = fresh();
        let o = run(&mut s, &[(100, b"NOOP\r\nPO"), (108, b"RT x\r"), (113, b"\nQUIT\r\n")]);
        assert_eq!(
            o,
            vec![(100, b"NOOP\r\n".to_vec()), (106, Vec::new()), (106, b"PORT yy\r\nQUIT\r\n".to_vec())]
        );
    }

    #[test]
    fn non_candidate_prefix_is_released_at_once() {
        let mut s = fresh();
        let o = run(&mut s, &[(100, b"PA"), (102, b"SV\r\n")]);
        // "PA" might be "PASS"? No: only PORT/EPRT lines are held, and "PA" already is not one.
        assert_eq!(o, vec![(100, b"PA".to_vec()), (102, b"SV\r\n".to_vec())]);
    }

    #[test]
    fn retransmission_merged_with_next_command_is_rebuilt() {
        let mut s = fresh();
        run(&mut s, &[(100, b"PORT x\r\n")]);
        // The sender retransmits the PORT line merged with the next command.
        let o = run(&mut s, &[(100, b"PORT x\r\nRETR f\r\n")]);
        assert_eq!(o, vec![(100, b"PORT yy\r\nRETR f\r\n".to_vec())]);
        // A retransmission starting mid-line is widened to the whole replacement.
        let o = run(&mut s, &[(105, b"x\r\nRE")]);
        assert_eq!(o, vec![(105, b"yy\r\nRE".to_vec())]);
    }

    #[test]
    fn gap_is_refused_and_pickup_waits_for_a_line_end() {
        let mut s = fresh();
        let mut m = Metrics::default();
        assert_eq!(
            s.segment(SeqNum::new(150), false, false, b"X", Instant::ZERO, &mut m, &mut grow),
            Err(DropReason::AlgOutOfOrder)
        );
        let mut p = Stream::new(Edit::Rewrite, Speaker::Client, 512);
        // Picked up mid-line: "PORT x" after a partial line is not at a known line start.
        let o = run(&mut p, &[(5000, b"ORT x\r\nPORT x\r\n")]);
        assert_eq!(o, vec![(5000, b"ORT x\r\nPORT yy\r\n".to_vec())]);
    }

    #[test]
    fn retransmission_of_acknowledged_bytes_draws_an_ack() {
        let mut s = fresh();
        run(&mut s, &[(100, b"PORT x\r\nNOOP\r\n")]);
        s.map.prune(SeqNum::new(114));
        // The receiver's ACK was lost on its way to the sender, which retransmits: the receiver gets a
        // probe one below its next byte (115 in its space), not a segment it would ignore silently.
        let o = run(&mut s, &[(100, b"PORT x\r\nNOOP\r\n")]);
        assert_eq!(o, vec![(114, Vec::new())]);
        let o = run(&mut s, &[(108, b"NOOP\r\n")]);
        assert_eq!(o, vec![(114, Vec::new())]);
    }

    #[test]
    fn retransmission_of_acknowledged_bytes_and_a_held_line_start_draws_an_ack() {
        let mut s = fresh();
        // "NOOP" goes out; "PORT" is held until its line ends.
        let o = run(&mut s, &[(100, b"NOOP\r\nPORT")]);
        assert_eq!(o, vec![(100, b"NOOP\r\n".to_vec())]);
        s.map.prune(SeqNum::new(106));
        // The receiver's ACK of 106 was lost after the gateway: the sender retransmits from 100, and
        // the segment brings nothing new. An empty segment at 106 would draw nothing from the receiver.
        let o = run(&mut s, &[(100, b"NOOP\r\nPORT")]);
        assert_eq!(o, vec![(105, Vec::new())]);
        // The rest of the line completes it as usual.
        let o = run(&mut s, &[(110, b" x\r\n")]);
        assert_eq!(o, vec![(106, b"PORT yy\r\n".to_vec())]);
    }

    #[test]
    fn a_gap_the_receiver_acknowledged_is_jumped_and_framing_waits_for_a_line_end() {
        let mut s = fresh();
        let mut m = Metrics::default();
        run(&mut s, &[(100, b"NOOP\r\n")]);
        // The receiver acknowledges 120: bytes 106..120 went another way.
        assert!(s.gap(SeqNum::new(120), &mut m));
        assert!(!s.gap(SeqNum::new(110), &mut m), "nothing behind the framer is a gap");
        assert_eq!((m.alg_gaps, m.alg_gap_lines), (1, 0));
        // The first line after the gap may have begun inside it: left as sent, counted; the next one is
        // framed again.
        let o = run(&mut s, &[(120, b"PORT x\r\nPORT x\r\n")]);
        assert_eq!(o, vec![(120, b"PORT x\r\nPORT yy\r\n".to_vec())]);
        let mut m2 = Metrics::default();
        s.segment(SeqNum::new(136), false, false, b"", Instant::ZERO, &mut m2, &mut grow).unwrap();
        assert_eq!(s.map.edits_in_flight(), 1);
    }

    #[test]
    fn a_gap_inside_a_held_announcement_is_never_repaired_into_a_rewrite() {
        let mut s = fresh();
        let mut m = Metrics::default();
        // "PORT " is held (a candidate); the rest of the line and more went another way.
        let o = run(&mut s, &[(100, b"PORT ")]);
        assert_eq!(o, vec![(100, Vec::new())]);
        assert!(s.gap(SeqNum::new(110), &mut m));
        assert_eq!((s.held_len(), m.alg_gap_lines), (0, 1), "the cut line is not sent again");
        // Bytes after the gap that complete a line that looks like an announcement: not rewritten.
        let o = run(&mut s, &[(110, b"x\r\n")]);
        assert_eq!(o, vec![(110, b"x\r\n".to_vec())]);
        assert!(s.map.is_identity());
    }

    #[test]
    fn a_segment_retransmitted_past_a_gap_without_the_bytes_before_it_jumps_the_gap() {
        let mut s = fresh();
        let mut m = Metrics::default();
        let at = |secs| Instant::from_secs(secs);
        let mut send = |s: &mut Stream, t| {
            s.segment(SeqNum::new(110), false, false, b"NOOP\r\n", at(t), &mut m, &mut grow)
        };
        // Without a gap in the other direction, never: a loss before the gateway looks alike.
        for t in [0, 1, 3, 7] {
            assert_eq!(send(&mut s, t), Err(DropReason::AlgOutOfOrder));
        }
        let mut s = fresh();
        s.other_path_seen();
        // Reordering or a loss before the gateway: refused, the sender fills the hole first.
        assert_eq!(send(&mut s, 0), Err(DropReason::AlgOutOfOrder));
        // Duplicates right away do not count as patience.
        assert_eq!(send(&mut s, 0), Err(DropReason::AlgOutOfOrder));
        assert_eq!(send(&mut s, 1), Err(DropReason::AlgOutOfOrder));
        // The same segment again, 2 s after the first, and the bytes before it never came: the sender
        // holds them acknowledged. Jumped; the line is framed from the next line end on.
        let o = send(&mut s, 2).unwrap();
        assert_eq!(o.payload, b"NOOP\r\n".to_vec());
        assert_eq!(m.alg_gaps, 1);
        // Go-back-N after a loss before the gateway: the retransmissions start below the gap (and are
        // seen), so the count starts over each time and the gap is never jumped.
        let mut s = fresh();
        s.other_path_seen();
        let mut m = Metrics::default();
        s.segment(SeqNum::new(100), false, false, b"PORT ", at(0), &mut m, &mut grow).unwrap();
        for t in [0, 1, 3, 7, 15] {
            s.segment(SeqNum::new(100), false, false, b"PORT ", at(t), &mut m, &mut grow).unwrap();
            let r = s.segment(SeqNum::new(120), false, false, b"x", at(t), &mut m, &mut grow);
            assert_eq!(r, Err(DropReason::AlgOutOfOrder), "at {t} s");
        }
        assert_eq!(m.alg_gaps, 0);
        // Another segment past a (new) gap starts its own count.
        let mut s = fresh();
        let mut m = Metrics::default();
        for (seq, t) in [(110, 0), (120, 2), (110, 3)] {
            let r = s.segment(SeqNum::new(seq), false, false, b"x", at(t), &mut m, &mut grow);
            assert_eq!(r, Err(DropReason::AlgOutOfOrder));
        }
    }

    #[test]
    fn a_gap_in_a_tls_record_stream_leaves_it_opaque_for_good() {
        let mut s = fresh();
        let mut m = Metrics::default();
        s.go_opaque();
        assert!(s.gap(SeqNum::new(200), &mut m));
        assert!(s.is_dead());
        let o = run(&mut s, &[(200, b"PORT x\r\n")]);
        assert_eq!(o, vec![(200, b"PORT x\r\n".to_vec())]);
    }

    #[test]
    fn not_ftp_stops_parsing_in_the_middle_of_a_segment() {
        let mut s = fresh();
        let mut m = Metrics::default();
        let mut judge = |l: &Line<'_>| {
            if l.bytes.starts_with(b"POST ") {
                Action::NotFtp
            } else {
                grow(l)
            }
        };
        let body = b"POST / HTTP/1.1\r\nHost: x\r\n\r\nPORT x\r\n";
        let o = s.segment(SeqNum::new(100), false, false, body, Instant::ZERO, &mut m, &mut judge).unwrap();
        assert_eq!(o.payload, body.to_vec(), "the PORT line after it is not read");
        assert!(s.is_dead() && s.map.is_identity());
        let o = s
            .segment(
                SeqNum::new(100 + body.len() as u32),
                false,
                false,
                b"PORT x\r\n",
                Instant::ZERO,
                &mut m,
                &mut judge,
            )
            .unwrap();
        assert_eq!(o.payload, b"PORT x\r\n".to_vec());
    }

    #[test]
    fn observed_direction_refuses_a_gap_and_sees_every_line_once() {
        let mut s = Stream::new(Edit::Observe, Speaker::Client, 512);
        let mut m = Metrics::default();
        let mut seen = Vec::new();
        let mut log = |l: &Line<'_>| {
            seen.push(l.bytes.to_vec());
            Action::Keep
        };
        s.observe(SeqNum::new(99), true, false, b"", Instant::ZERO, &mut m, &mut log).unwrap();
        // "E" is overtaken by "PSV\r\n": refused, so the sender retransmits both.
        let r = s.observe(SeqNum::new(101), false, false, b"PSV\r\n", Instant::ZERO, &mut m, &mut log);
        assert_eq!(r, Err(DropReason::AlgOutOfOrder));
        s.observe(SeqNum::new(100), false, false, b"E", Instant::ZERO, &mut m, &mut log).unwrap();
        s.observe(SeqNum::new(100), false, false, b"EPSV\r\nNOOP\r\n", Instant::ZERO, &mut m, &mut log)
            .unwrap();
        s.observe(SeqNum::new(100), false, false, b"EPSV\r\n", Instant::ZERO, &mut m, &mut log).unwrap();
        // The FIN's acknowledgement is not a gap.
        s.observe(SeqNum::new(112), false, true, b"", Instant::ZERO, &mut m, &mut log).unwrap();
        assert!(!s.gap(SeqNum::new(113), &mut m));
        assert_eq!(seen, vec![b"EPSV\r\n".to_vec(), b"NOOP\r\n".to_vec()]);
    }

    #[test]
    fn tls_records_are_opaque_until_cleartext_returns() {
        let mut s = fresh();
        s.go_opaque();
        // A record of 3 bytes containing "PORT"-looking bytes, then cleartext.
        let mut data = vec![23, 3, 3, 0, 3];
        data.extend_from_slice(b"P\no");
        data.extend_from_slice(b"PORT x\r\n");
        let o = run(&mut s, &[(100, &data)]);
        let mut want = data[..8].to_vec();
        want.extend_from_slice(b"PORT yy\r\n");
        assert_eq!(o, vec![(100, want)]);
        assert!(!s.is_opaque());
    }

    #[test]
    fn fin_in_the_middle_of_a_candidate_releases_it() {
        let mut s = fresh();
        let mut m = Metrics::default();
        let o =
            s.segment(SeqNum::new(100), false, true, b"PORT x", Instant::ZERO, &mut m, &mut grow).unwrap();
        assert_eq!(o, SegmentOut { seq: SeqNum::new(100), payload: b"PORT x".to_vec(), fin: true });
        assert_eq!(m.refused_of(RefusalReason::HoldTimeout), 1);
    }

    #[test]
    fn acks_after_the_senders_fin_are_numbered_past_it() {
        let mut s = fresh();
        let mut m = Metrics::default();
        run(&mut s, &[(100, b"PORT x\r\n")]);
        let o = s.segment(SeqNum::new(108), false, true, b"", Instant::ZERO, &mut m, &mut grow).unwrap();
        assert_eq!((o.seq, o.fin), (SeqNum::new(109), true));
        // The sender's final ACK carries seq FIN+1, mapped through the +1 edit.
        let o = s.segment(SeqNum::new(109), false, false, b"", Instant::ZERO, &mut m, &mut grow).unwrap();
        assert_eq!((o.seq, o.fin), (SeqNum::new(110), false));
        // A retransmitted FIN keeps its number.
        let o = s.segment(SeqNum::new(108), false, true, b"", Instant::ZERO, &mut m, &mut grow).unwrap();
        assert_eq!((o.seq, o.fin), (SeqNum::new(109), true));
    }
}
