//! Generic TCP stream editing: the byte stream of a connection whose payload an ALG may change.
//!
//! Owns, per direction ([`Half`]): where the sender's bytes stand (the next byte expected in order,
//! the bytes held back, since when, the header they will leave with), the sequence map with its full
//! edit history ([`SeqMap`]), gaps (refused, or jumped when the receiver acknowledged past them), the
//! FIN's place, and the MSS each sender announced; and, in [`segment`], the packets that carry decided
//! bytes: seq/ack/SACK/urgent numbers mapped, resegmented to the receiver's MSS and the egress MTU,
//! checksums filled. Must not: know any application protocol. What a byte means is a [`Framer`]'s
//! business: it sees every new byte once, in order, and says through [`Emit`] whether it passes, is
//! held, or is spliced over.
//!
//! Framing is a property of the byte stream, not of segments: every byte is seen once, in order, at its
//! sequence number, so a line split across segments, pipelined lines, duplicates and repacketised
//! retransmissions all come out the same. Bytes already decided are never shown to the framer again: a
//! retransmission is rebuilt from the edit history, so it cannot open a second pinhole.
//!
//! Gaps: a segment past bytes the framer has not seen is refused (the sender retransmits what a
//! receiver did not get). When the receiver acknowledges bytes the framer never saw — they went another
//! way, or a recording lost them — waiting would stall the connection for good, so [`StreamEdit::on_ack`]
//! jumps over them and tells the framer ([`Framer::gap`]), which must not trust a boundary it did not see.
//!
//! The state is plain data (numbers, byte vectors, instants of our own clock): it can be copied out of
//! one engine and into another.

pub mod segment;
pub mod seqmap;

pub use seqmap::SeqMap;

use crate::flow::Dir;
use crate::metrics::{DropReason, Metrics, RefusalReason};
use crate::time::Instant;
use crate::wire::SeqNum;

/// Whether the gateway may change a direction's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Edit {
    /// Bytes may be held and spliced; the segments that carry them are rebuilt.
    Rewrite,
    /// Bytes are read (the framer sees them) but every segment leaves as it came.
    Observe,
}

/// How a direction's first byte was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the SYN: the first byte is the stream's first.
    Syn,
    /// Picked up mid-stream: the first byte seen may be in the middle of anything.
    Pickup,
}

/// Counters the stream layer and its framer keep while they handle one segment; the caller adds them to
/// its [`Metrics`] (the framer gets no `&mut Metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// A line (or other unit) started being held.
    pub lines_held: u64,
    /// A retransmission was rebuilt from the edit history.
    pub retransmits_rebuilt: u64,
    /// Gaps jumped.
    pub gaps: u64,
    /// Units left as sent because a gap cut them.
    pub gap_lines: u64,
    /// Held bytes released as they were (hold limit, or the sender closed).
    pub hold_timeouts: u64,
    /// Units longer than the framer reads, released as they were.
    pub overlong: u64,
}

impl Tally {
    /// Adds these counts to `m`.
    pub fn add_to(&self, m: &mut Metrics) {
        m.alg_lines_held += self.lines_held;
        m.alg_retransmits_rebuilt += self.retransmits_rebuilt;
        m.alg_gaps += self.gaps;
        m.alg_gap_lines += self.gap_lines;
        for _ in 0..self.hold_timeouts {
            m.refuse(RefusalReason::HoldTimeout);
        }
        for _ in 0..self.overlong {
            m.refuse(RefusalReason::Overlong);
        }
    }
}

/// What reads a connection's bytes: an ALG's framing (FTP's lines). It is handed every new byte once,
/// in order, per direction, and decides through [`Emit`].
pub trait Framer {
    /// Direction `dir`'s first byte is about to come.
    fn begin(&mut self, dir: Dir, start: Start);
    /// New in-order bytes of direction `dir`, the first at sender sequence number `at`. Every byte must
    /// be passed, held or spliced over through `emit` (bytes held from before come first).
    fn feed(&mut self, dir: Dir, at: SeqNum, data: &[u8], emit: &mut Emit<'_>);
    /// The receiver acknowledged bytes of `dir` the framer never saw: they are jumped. `cut`: the unit
    /// in progress was cut by the gap (bytes of it were held or seen). Held bytes are dropped (they
    /// reached the receiver the other way).
    fn gap(&mut self, dir: Dir, cut: bool, tally: &mut Tally);
    /// Bytes held in `dir` left as they were (hold limit, or the sender closed): the unit they began is
    /// no longer editable.
    fn released(&mut self, dir: Dir);
}

/// A framer's hands on one direction while it is fed: where each byte goes.
pub struct Emit<'a> {
    out: &'a mut Vec<u8>,
    held: &'a mut Vec<u8>,
    map: &'a mut SeqMap,
    edit: Edit,
    tally: &'a mut Tally,
}

impl Emit<'_> {
    /// Whether this direction's bytes may be held and spliced ([`Edit::Rewrite`]).
    #[inline]
    pub fn may_edit(&self) -> bool {
        self.edit == Edit::Rewrite
    }

    /// These bytes leave as they are, after whatever is already decided.
    #[inline]
    pub fn pass(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// One byte leaves as it is.
    #[inline]
    pub fn pass_byte(&mut self, byte: u8) {
        self.out.push(byte);
    }

    /// One byte is held back: it may yet be spliced over.
    #[inline]
    pub fn hold(&mut self, byte: u8) {
        self.held.push(byte);
    }

    /// The bytes held now (they start where the framer's current unit started, if it held all of it).
    #[inline]
    pub fn held(&self) -> &[u8] {
        self.held
    }

    /// The held bytes leave as they were.
    #[inline]
    pub fn release(&mut self) {
        self.out.append(self.held);
    }

    /// The held bytes leave with `span` (a range within them) replaced by `with`; `start` is the
    /// sender sequence number of the first held byte. The edit is recorded, so retransmissions of these
    /// bytes are rebuilt the same and the numbers behind them shift. A span outside the held bytes is
    /// not applied (they leave as they were): `false`.
    pub fn splice(&mut self, start: SeqNum, span: core::ops::Range<usize>, with: &[u8]) -> bool {
        if span.end > self.held.len() || span.start > span.end {
            self.release();
            return false;
        }
        self.out.extend_from_slice(&self.held[..span.start]);
        self.out.extend_from_slice(with);
        self.out.extend_from_slice(&self.held[span.end..]);
        self.map.record(start.add(span.start as u32), span.len() as u32, with.to_vec());
        self.held.clear();
        true
    }

    /// The counters of this segment.
    #[inline]
    pub fn tally(&mut self) -> &mut Tally {
        self.tally
    }
}

/// What the stream layer reads of one arriving TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The segment's sequence number (of the SYN, if it carries one).
    pub seq: SeqNum,
    pub syn: bool,
    pub fin: bool,
    pub payload: &'a [u8],
}

/// Output for one arriving segment of an edited direction.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SegmentOut {
    /// Receiver-space sequence number of the first payload byte (or of the FIN / pure ACK).
    pub seq: SeqNum,
    pub payload: Vec<u8>,
    /// Send the segment's FIN after `payload`.
    pub fin: bool,
}

/// Held bytes that leave as they were, with what is needed to send them.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Receiver-space sequence number of the first byte.
    pub seq: SeqNum,
    pub bytes: Vec<u8>,
    /// IP and TCP header of the last segment that brought held bytes, as it arrived.
    pub template: Vec<u8>,
}

/// When a command and its reply both go around the gateway, no acknowledgement of the command's bytes
/// ever crosses it, and waiting for one would stall the connection: the sender keeps retransmitting
/// its next segment, past the gap, and never the bytes before it (it holds them acknowledged). A loss
/// before the gateway looks alike, except that the receiver never got those bytes: the sender's
/// retransmissions start at or below the gap, and any segment at or below it resets the count; and
/// only the other path explains why the sender, in the same breath, acknowledges bytes of the other
/// direction the gateway never saw. So a gap is jumped only when both hold: this many refusals of the
/// same segment with nothing at or below the gap in between, spread over at least [`REFUSED_PATIENCE`]
/// (RTOs back off: 1 s, 2 s, 4 s...), and a gap jumped in the other direction.
pub const REFUSED_TIMES: u8 = 3;
pub const REFUSED_PATIENCE: core::time::Duration = core::time::Duration::from_secs(2);

/// One direction of an edited connection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Half {
    map: SeqMap,
    edit: Edit,
    started: bool,
    /// Next sender byte not yet received in order.
    next: SeqNum,
    /// Held bytes are `[next - held.len(), next)`.
    held: Vec<u8>,
    held_since: Option<Instant>,
    /// The header held bytes leave with when they are released later ([`StreamEdit::keep_template`]).
    template: Vec<u8>,
    fin_sent: bool,
    /// The last segment refused past a gap: where it started, how often it came, when first.
    refused: Option<(SeqNum, u8, Instant)>,
    /// The other direction jumped a gap: bytes of this connection travel a path around the gateway.
    other_path: bool,
    /// MSS this direction's sender announced in its SYN (RFC 9293 §3.7.1).
    mss: Option<u16>,
}

impl Half {
    fn new(edit: Edit) -> Half {
        Half {
            map: SeqMap::new(),
            edit,
            started: false,
            next: SeqNum::new(0),
            held: Vec::new(),
            held_since: None,
            template: Vec::new(),
            fin_sent: false,
            refused: None,
            other_path: false,
            mss: None,
        }
    }

    /// First sender byte whose output is not decided yet.
    fn emitted(&self) -> SeqNum {
        self.next.sub(self.held.len() as u32)
    }

    /// Where `seg`'s first payload byte sits; the direction starts there if nothing came before: from
    /// the SYN, or picked up mid-stream (then the framer knows no boundary yet).
    fn arrive(&mut self, dir: Dir, seg: Incoming<'_>, framer: &mut dyn Framer) -> SeqNum {
        let a = if seg.syn { seg.seq.add(1) } else { seg.seq };
        if !self.started {
            self.started = true;
            self.next = a;
            framer.begin(dir, if seg.syn { Start::Syn } else { Start::Pickup });
        }
        a
    }

    /// The FIN occupies one sequence number (RFC 9293 §3.4): what the sender numbers after it (its
    /// last ACKs) must map past it too.
    fn fin_consumed(&mut self) {
        if !self.fin_sent {
            self.fin_sent = true;
            self.next = self.next.add(1);
        }
    }

    /// Jumps the framer to `to` (see the module header). Returns whether there was a gap.
    fn gap(&mut self, dir: Dir, to: SeqNum, framer: &mut dyn Framer, tally: &mut Tally) -> bool {
        if !self.started || !to.gt(self.next) {
            return false;
        }
        tally.gaps += 1;
        tracing::info!(target: "ftpnat::alg", missed = to.diff(self.next), "peer acknowledged bytes the gateway never saw; framing resynchronises at the next line end");
        // What was held reached the receiver by the other way (it acknowledged past it): not sent again.
        let cut = !self.held.is_empty();
        self.held.clear();
        self.held_since = None;
        self.next = to;
        framer.gap(dir, cut, tally);
        true
    }

    /// A segment starting at `a`, past the bytes the framer has seen: refused (its sender retransmits
    /// what the receiver lacks), unless the same segment keeps coming back without the bytes before it
    /// (see [`REFUSED_TIMES`]); then the gap is jumped and `Ok` lets the segment be framed.
    fn past_gap(
        &mut self,
        dir: Dir,
        a: SeqNum,
        now: Instant,
        framer: &mut dyn Framer,
        tally: &mut Tally,
    ) -> Result<(), DropReason> {
        let (times, since) = match self.refused {
            Some((at, n, first)) if at == a => (n.saturating_add(1), first),
            _ => (1, now),
        };
        if times >= REFUSED_TIMES && now.saturating_since(since) >= REFUSED_PATIENCE && self.other_path {
            self.refused = None;
            self.gap(dir, a, framer, tally);
            return Ok(());
        }
        self.refused = Some((a, times, since));
        Err(DropReason::AlgOutOfOrder)
    }

    /// Feeds in-order new bytes to the framer; decided output is appended to `out`.
    fn push(
        &mut self,
        dir: Dir,
        data: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        framer: &mut dyn Framer,
        tally: &mut Tally,
    ) {
        let at = self.next;
        let mut emit =
            Emit { out, held: &mut self.held, map: &mut self.map, edit: self.edit, tally: &mut *tally };
        framer.feed(dir, at, data, &mut emit);
        self.next = self.next.add(data.len() as u32);
        if self.held.is_empty() {
            self.held_since = None;
        } else if self.held_since.is_none() {
            self.held_since = Some(now);
            tally.lines_held += 1;
        }
    }

    /// One segment of an edited direction. `seq` is the segment's sequence number (of the SYN if `syn`).
    fn segment(
        &mut self,
        dir: Dir,
        seg: Incoming<'_>,
        now: Instant,
        framer: &mut dyn Framer,
        tally: &mut Tally,
    ) -> Result<SegmentOut, DropReason> {
        let Incoming { fin, payload, .. } = seg;
        let mut a = self.arrive(dir, seg, framer);
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
            self.past_gap(dir, a, now, framer, tally)?;
        }
        let emitted = self.emitted();
        let mut out = Vec::new();
        let out_seq;
        if a.lt(emitted) {
            let end = if b.lt(emitted) { b } else { emitted };
            let n = end.diff(a) as usize;
            if self.map.overlaps(a, n as u32) {
                tally.retransmits_rebuilt += 1;
            }
            let (o, bytes) = self.map.rebuild(a, &payload[..n]);
            out_seq = o;
            out = bytes;
        } else {
            out_seq = self.map.map(emitted);
        }
        if b.gt(self.next) {
            let new = &payload[self.next.diff(a) as usize..];
            self.push(dir, new, now, &mut out, framer, tally);
        }
        let mut fin_out = false;
        if fin && b == self.next {
            if !self.held.is_empty() {
                // The sender closes in the middle of a held unit: nothing more will come, so it goes
                // out as sent.
                tally.hold_timeouts += 1;
                out.append(&mut self.held);
                self.held_since = None;
                framer.released(dir);
            }
            fin_out = true;
            self.fin_consumed();
        } else if fin && self.fin_sent && b.lt(self.next) {
            fin_out = true;
        }
        if let (Some(h), true, false) = (acked_part, out.is_empty(), fin_out) {
            // A retransmission of acknowledged bytes whose rest is still held (a unit not complete
            // yet): the same lost ACK as above, and nothing to send; the probe tells the sender again,
            // or it would retransmit these bytes until the hold timeout while the rest waits behind
            // them in its queue.
            return Ok(SegmentOut { seq: self.map.map(h).sub(1), payload: Vec::new(), fin: false });
        }
        Ok(SegmentOut { seq: out_seq, payload: out, fin: fin_out })
    }

    /// Follows a direction that is never edited, so the framer knows its units. Duplicated bytes are
    /// skipped. A segment past a gap is refused as in [`Half::segment`]: forwarded, its bytes would
    /// never be seen again (the receiver acknowledges them once the gap fills), and what they say — a
    /// PASV whose 227 must be rewritten — would be lost to the framer.
    fn observe(
        &mut self,
        dir: Dir,
        seg: Incoming<'_>,
        now: Instant,
        framer: &mut dyn Framer,
        tally: &mut Tally,
    ) -> Result<(), DropReason> {
        let Incoming { fin, payload, .. } = seg;
        let a = self.arrive(dir, seg, framer);
        let b = a.add(payload.len() as u32);
        if !payload.is_empty() {
            if a.gt(self.next) {
                self.past_gap(dir, a, now, framer, tally)?;
            } else {
                self.refused = None;
            }
            if b.gt(self.next) {
                let new = &payload[self.next.diff(a) as usize..];
                let mut sink = Vec::new();
                self.push(dir, new, now, &mut sink, framer, tally);
            }
        }
        if fin && b == self.next {
            // The FIN takes a sequence number too: its acknowledgement is no gap.
            self.fin_consumed();
        }
        Ok(())
    }
}

/// The stream-editing state of one connection: both directions, indexed by [`Dir::index`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StreamEdit {
    halves: [Half; 2],
}

impl StreamEdit {
    /// `edits`: whether each direction (by [`Dir::index`]) may be edited.
    pub fn new(edits: [Edit; 2]) -> StreamEdit {
        StreamEdit { halves: [Half::new(edits[0]), Half::new(edits[1])] }
    }

    /// The sequence edits of direction `dir` (numbers of its sender → its receiver's, and acks back).
    pub fn seq_map(&self, dir: Dir) -> &SeqMap {
        &self.halves[dir.index()].map
    }

    /// Whether direction `dir` may be edited.
    pub fn edit(&self, dir: Dir) -> Edit {
        self.halves[dir.index()].edit
    }

    /// Maps a sequence number of `dir`'s sender into its receiver's space.
    #[inline]
    pub fn map_seq(&self, dir: Dir, s: SeqNum) -> SeqNum {
        self.halves[dir.index()].map.map(s)
    }

    /// Maps an acknowledgement (or SACK edge) of `dir`'s bytes, as its receiver sent it, back into
    /// `dir`'s sender space.
    #[inline]
    pub fn unmap_ack(&self, dir: Dir, ack: SeqNum) -> SeqNum {
        self.halves[dir.index()].map.unmap(ack)
    }

    /// The MSS `dir`'s sender announced (RFC 9293 §3.7.1), if any.
    pub fn mss(&self, dir: Dir) -> Option<u16> {
        self.halves[dir.index()].mss
    }

    pub fn set_mss(&mut self, dir: Dir, mss: u16) {
        self.halves[dir.index()].mss = Some(mss);
    }

    /// Bytes of direction `dir` held back.
    pub fn held_len(&self, dir: Dir) -> usize {
        self.halves[dir.index()].held.len()
    }

    /// First sender byte of `dir` whose output is not decided yet.
    pub fn emitted(&self, dir: Dir) -> SeqNum {
        self.halves[dir.index()].emitted()
    }

    /// When the bytes held in direction `dir` must leave as they are, if any are held.
    pub fn hold_deadline(&self, dir: Dir, timeout: core::time::Duration) -> Option<Instant> {
        self.halves[dir.index()].held_since.map(|t| t + timeout)
    }

    /// Remembers the IP and TCP header of `pkt` (a segment of `dir` that left bytes held): held bytes
    /// released later leave with it.
    pub fn keep_template(&mut self, dir: Dir, header: &[u8]) {
        let t = &mut self.halves[dir.index()].template;
        t.clear();
        t.extend_from_slice(header);
    }

    /// One segment travelling in `dir`. An edited direction returns what to send instead; an observed
    /// one `Ok(None)`: forward it as it is.
    pub fn segment(
        &mut self,
        dir: Dir,
        seg: Incoming<'_>,
        now: Instant,
        framer: &mut dyn Framer,
        tally: &mut Tally,
    ) -> Result<Option<SegmentOut>, DropReason> {
        let half = &mut self.halves[dir.index()];
        match half.edit {
            Edit::Rewrite => half.segment(dir, seg, now, framer, tally).map(Some),
            Edit::Observe => half.observe(dir, seg, now, framer, tally).map(|()| None),
        }
    }

    /// The receiver of direction `dir` acknowledged `acked` (in `dir`'s sender space, checked against
    /// the window): edits it has are forgotten, and bytes the framer never saw are jumped over.
    /// Returns whether a gap was jumped (the other direction then knows bytes go around the gateway:
    /// see [`REFUSED_TIMES`]).
    pub fn on_ack(&mut self, dir: Dir, acked: SeqNum, framer: &mut dyn Framer, tally: &mut Tally) -> bool {
        let half = &mut self.halves[dir.index()];
        if !half.map.is_identity() {
            half.map.prune(acked);
        }
        let jumped = half.gap(dir, acked, framer, tally);
        if jumped {
            self.halves[dir.reverse().index()].other_path = true;
        }
        jumped
    }

    /// Marks that bytes of this connection go around the gateway, as a gap jumped in the other
    /// direction would (see [`REFUSED_TIMES`]).
    #[cfg(test)]
    pub(crate) fn other_path_seen(&mut self, dir: Dir) {
        self.halves[dir.index()].other_path = true;
    }

    /// Releases the bytes held in `dir` as they were (their hold limit passed).
    pub fn release_held(&mut self, dir: Dir, framer: &mut dyn Framer, tally: &mut Tally) -> Option<Released> {
        let half = &mut self.halves[dir.index()];
        if half.held.is_empty() {
            return None;
        }
        tally.hold_timeouts += 1;
        tracing::warn!(target: "ftpnat::alg", held = half.held.len(), "candidate line incomplete past the hold limit; released as sent");
        let seq = half.map.map(half.emitted());
        half.held_since = None;
        framer.released(dir);
        Some(Released {
            seq,
            bytes: std::mem::take(&mut half.held),
            template: std::mem::take(&mut half.template),
        })
    }
}

#[cfg(test)]
mod tests;
