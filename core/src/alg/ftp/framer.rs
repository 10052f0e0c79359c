//! FTP's framing of one direction of a control connection: where lines start and end.
//!
//! Owns: the line being read (its bytes up to the maximum line length, its start in the sender's
//! sequence space), whether it is a candidate the ALG may rewrite (and so held by the stream layer),
//! whether a line start can be trusted (after a pickup or a gap it cannot until a line end passed), the
//! TLS record walk while the connection is opaque (RFC 4217 §4), and "not FTP" (every later byte passes
//! as it is). Must not: decide what a line means (the session does, through the `on_line` callback), or
//! keep bytes, sequence maps or packet headers (the generic stream layer, [`crate::stream`], does:
//! this framer only tells it, through [`Emit`], what each byte is).
//!
//! Gaps ([`LineFramer::gap`]): the line cut by a gap is left as sent (its held bytes were delivered by
//! the other path), and no line start is trusted until a line end after the gap has been seen, so a gap
//! can never make a line start out of the middle of a line (nor a pinhole out of half an announcement).
//!
//! Not FTP: when the session finds a line that is not FTP ([`LineAction::Dead`]), the framer stops
//! parsing at once, mid-segment if need be, and passes every later byte as it is.

use crate::flow::Dir;
use crate::metrics::DropReason;
use crate::stream::{Edit, Emit, Framer, Incoming, Released, SegmentOut, SeqMap, Start, StreamEdit, Tally};
use crate::time::Instant;
use crate::wire::SeqNum;

use super::parse::{candidate, Candidate};
pub use crate::alg::finding::{Line, LineAction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Who sends a direction's lines: the client's commands or the server's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Client,
    Server,
}

/// The line framing of one direction.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LineFramer {
    line: Vec<u8>,
    line_start: SeqNum,
    line_len: usize,
    at_line_start: bool,
    candidate: bool,
    /// False after a pickup or a gap until the next line end: a line start is only trusted when seen.
    synced: bool,
    from_client: bool,
    tls: Tls,
    max_line: usize,
    /// Not FTP: every byte passes as it is, nothing is parsed again.
    dead: bool,
    /// A gap was jumped and no line end seen since: the line now completing straddles it.
    after_gap: bool,
    /// A NAT64 control connection (RFC 6384): the client's EPSV/EPRT/ALGS/LPRT/LPSV are candidates
    /// too, and every server reply is held until complete (the gateway may replace any of them: the
    /// reply to a NOOP it substituted, a 227 it turns into 229/228).
    nat64: bool,
}

impl LineFramer {
    pub fn new(speaker: Speaker, max_line: usize) -> LineFramer {
        LineFramer {
            line: Vec::new(),
            line_start: SeqNum::new(0),
            line_len: 0,
            at_line_start: true,
            candidate: false,
            synced: true,
            from_client: speaker == Speaker::Client,
            tls: Tls::Clear,
            max_line,
            dead: false,
            after_gap: false,
            nat64: false,
        }
    }

    /// This direction belongs to a NAT64 control connection (see the `nat64` field).
    pub fn enable_nat64(&mut self) {
        self.nat64 = true;
    }

    /// Whether the line so far may still be one the session rewrites.
    fn is_candidate(&self) -> bool {
        candidate(&self.line, self.from_client) == Candidate::Maybe
            || (self.nat64
                && (!self.from_client || super::rfc6384::candidate(&self.line, true) == Candidate::Maybe))
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

    /// From the next byte on, the stream is a TLS record stream (after `AUTH TLS` answered 234).
    pub fn go_opaque(&mut self) {
        if !self.at_line_start {
            // A line still open when TLS starts never ends where we can see it: the first cleartext
            // byte after the record stream is not known to start a line (else a sender that wrote
            // "AUTH TLS\r\nxxxx" could get its next segment, "PORT ...", taken for a line start: NAT
            // Slipstreaming through the mode switch).
            self.synced = false;
        }
        // A candidate held now will not be rewritten; `feed` sends it ahead of the next byte.
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

    /// The direction's first byte is about to come: from the SYN a line starts there; picked up
    /// mid-stream, the first line start is not known until a line end passes.
    pub fn begin(&mut self, start: Start) {
        self.synced = start == Start::Syn;
        self.at_line_start = true;
    }

    /// Bytes the framer never saw were jumped (`crate::stream`'s module header). `cut`: bytes of the
    /// line in progress were held.
    pub fn gap(&mut self, cut: bool, tally: &mut Tally) {
        if !self.at_line_start || cut {
            // The line the gap cuts is neither parsed nor rewritten.
            tally.gap_lines += 1;
        }
        self.candidate = false;
        self.at_line_start = true;
        self.synced = false;
        self.after_gap = true;
        if self.is_opaque() {
            // A TLS record walk cannot find its place again in the middle of a record stream.
            self.go_dead();
        }
    }

    /// The held start of the current line left as it was: the line is no longer a candidate.
    pub fn released(&mut self) {
        self.candidate = false;
    }

    /// Frames in-order new bytes starting at `at`, handing each complete line to `on_line`.
    pub fn feed(
        &mut self,
        at: SeqNum,
        data: &[u8],
        emit: &mut Emit<'_>,
        on_line: &mut dyn FnMut(&Line<'_>) -> LineAction,
    ) {
        if !self.candidate {
            // Bytes held for a line that stopped being a candidate (TLS started under it, or the
            // connection turned out not to be FTP) go first: every byte leaves once, in order.
            emit.release();
        }
        if self.dead {
            emit.pass(data);
            return;
        }
        for (i, &byte) in data.iter().enumerate() {
            if let Tls::Opaque { ref mut hdr, ref mut got, ref mut remaining } = self.tls {
                if *remaining > 0 {
                    *remaining -= 1;
                    emit.pass_byte(byte);
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
                    emit.pass_byte(byte);
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
                self.line_start = at.add(i as u32);
                self.candidate = emit.may_edit() && self.synced;
            }
            self.line_len += 1;
            if self.line.len() < self.max_line {
                self.line.push(byte);
            }
            if self.candidate {
                emit.hold(byte);
                if byte != b'\n' {
                    let still = self.is_candidate();
                    let overlong = self.line_len >= self.max_line;
                    if !still || overlong {
                        if overlong {
                            emit.tally().overlong += 1;
                        }
                        emit.release();
                        self.candidate = false;
                    }
                }
            } else {
                emit.pass_byte(byte);
            }
            if byte == b'\n' {
                self.at_line_start = true;
                if !self.synced {
                    self.synced = true;
                    if std::mem::take(&mut self.after_gap) {
                        // The first line after a gap may have begun in it: left as sent.
                        emit.tally().gap_lines += 1;
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
                if matches!(action, LineAction::Dead) {
                    // Nothing after this line is read: the rest of the segment goes as it is.
                    emit.release();
                    self.candidate = false;
                    self.dead = true;
                    emit.pass(&data[i + 1..]);
                    break;
                }
                if self.candidate {
                    self.candidate = false;
                    match action {
                        LineAction::Replace(span, with) => {
                            emit.splice(self.line_start, span, &with);
                        }
                        _ => emit.release(),
                    }
                }
            }
        }
    }
}

/// One direction of a stream (`Dir::Original` of a [`StreamEdit`]) framed by a [`LineFramer`] alone,
/// its lines handed to a closure given with each call: what unit tests, the fuzz harness and tools
/// drive without a session. Counters add up in `tally`.
pub struct OneWay {
    pub edit: StreamEdit,
    pub framer: LineFramer,
    pub tally: Tally,
}

/// A [`LineFramer`] lent to the stream layer with a closure for its lines.
struct Lent<'a> {
    framer: &'a mut LineFramer,
    on_line: &'a mut dyn FnMut(&Line<'_>) -> LineAction,
}

impl Framer for Lent<'_> {
    fn begin(&mut self, _: Dir, start: Start) {
        self.framer.begin(start);
    }
    fn feed(&mut self, _: Dir, at: SeqNum, data: &[u8], emit: &mut Emit<'_>) {
        self.framer.feed(at, data, emit, self.on_line);
    }
    fn gap(&mut self, _: Dir, cut: bool, tally: &mut Tally) {
        self.framer.gap(cut, tally);
    }
    fn released(&mut self, _: Dir) {
        self.framer.released();
    }
}

const ONE: Dir = Dir::Original;

impl OneWay {
    pub fn new(edit: Edit, speaker: Speaker, max_line: usize) -> OneWay {
        OneWay {
            edit: StreamEdit::new([edit, Edit::Observe]),
            framer: LineFramer::new(speaker, max_line),
            tally: Tally::default(),
        }
    }

    /// One segment: see [`StreamEdit::segment`] (`None` for an observed direction).
    pub fn segment(
        &mut self,
        seg: Incoming<'_>,
        now: Instant,
        on_line: &mut dyn FnMut(&Line<'_>) -> LineAction,
    ) -> Result<Option<SegmentOut>, DropReason> {
        let mut lent = Lent { framer: &mut self.framer, on_line };
        self.edit.segment(ONE, seg, now, &mut lent, &mut self.tally)
    }

    /// The receiver acknowledged `acked` (sender space): see [`StreamEdit::on_ack`].
    pub fn ack(&mut self, acked: SeqNum) -> bool {
        let mut keep = |_: &Line<'_>| LineAction::Keep;
        let mut lent = Lent { framer: &mut self.framer, on_line: &mut keep };
        self.edit.on_ack(ONE, acked, &mut lent, &mut self.tally)
    }

    /// Held bytes leave as they were: see [`StreamEdit::release_held`].
    pub fn release_held(&mut self) -> Option<Released> {
        let mut keep = |_: &Line<'_>| LineAction::Keep;
        let mut lent = Lent { framer: &mut self.framer, on_line: &mut keep };
        self.edit.release_held(ONE, &mut lent, &mut self.tally)
    }

    pub fn map(&self) -> &SeqMap {
        self.edit.seq_map(ONE)
    }

    pub fn emitted(&self) -> SeqNum {
        self.edit.emitted(ONE)
    }

    pub fn held_len(&self) -> usize {
        self.edit.held_len(ONE)
    }

    pub fn hold_deadline(&self, limit: core::time::Duration) -> Option<Instant> {
        self.edit.hold_deadline(ONE, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `s`, spelt flat as the cases below read.
    #[allow(clippy::too_many_arguments)]
    fn seg(
        s: &mut OneWay,
        seq: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
        now: Instant,
        on_line: &mut dyn FnMut(&Line<'_>) -> LineAction,
    ) -> Result<SegmentOut, DropReason> {
        // An observed direction sends nothing of its own: an empty output stands for "as it came".
        s.segment(Incoming { seq: SeqNum::new(seq), syn, fin, payload }, now, on_line)
            .map(Option::unwrap_or_default)
    }

    /// Rewrites "PORT x" lines to "PORT yy" (growing by one byte).
    fn grow(line: &Line<'_>) -> LineAction {
        if line.held && line.bytes.starts_with(b"PORT x") {
            LineAction::Replace(5..6, b"yy".to_vec())
        } else {
            LineAction::Keep
        }
    }

    fn run(stream: &mut OneWay, segs: &[(u32, &[u8])]) -> Vec<(u32, Vec<u8>)> {
        let mut outs = Vec::new();
        for &(seq, data) in segs {
            let o = stream
                .segment(
                    Incoming { seq: SeqNum::new(seq), syn: false, fin: false, payload: data },
                    Instant::ZERO,
                    &mut grow,
                )
                .map(Option::unwrap_or_default)
                .unwrap();
            outs.push((o.seq.get(), o.payload));
        }
        outs
    }

    fn fresh() -> OneWay {
        let mut s = OneWay::new(Edit::Rewrite, Speaker::Client, 512);
        seg(&mut s, 99, true, false, b"", Instant::ZERO, &mut grow).unwrap();
        s
    }

    #[test]
    fn whole_line_in_one_segment() {
        let mut s = fresh();
        let o = run(&mut s, &[(100, b"USER a\r\nPORT x\r\nNOOP\r\n")]);
        assert_eq!(o, vec![(100, b"USER a\r\nPORT yy\r\nNOOP\r\n".to_vec())]);
        assert_eq!(s.map().map(SeqNum::new(123)), SeqNum::new(124));
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
        assert_eq!(
            seg(&mut s, 150, false, false, b"X", Instant::ZERO, &mut grow),
            Err(DropReason::AlgOutOfOrder)
        );
        let mut p = OneWay::new(Edit::Rewrite, Speaker::Client, 512);
        // Picked up mid-line: "PORT x" after a partial line is not at a known line start.
        let o = run(&mut p, &[(5000, b"ORT x\r\nPORT x\r\n")]);
        assert_eq!(o, vec![(5000, b"ORT x\r\nPORT yy\r\n".to_vec())]);
    }

    #[test]
    fn retransmission_of_acknowledged_bytes_draws_an_ack() {
        let mut s = fresh();
        run(&mut s, &[(100, b"PORT x\r\nNOOP\r\n")]);
        s.ack(SeqNum::new(114));
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
        // "PORT x" is rewritten (+1) and "NOOP" goes out; the next "PORT" is held until its line ends.
        let o = run(&mut s, &[(100, b"PORT x\r\nNOOP\r\nPORT")]);
        assert_eq!(o, vec![(100, b"PORT yy\r\nNOOP\r\n".to_vec())]);
        s.ack(SeqNum::new(114));
        // The receiver's ACK of 115 (114 for the sender) was lost after the gateway: the sender
        // retransmits from 100, and the segment brings nothing new. An empty segment at the receiver's
        // next byte (115) would draw nothing from it; one below it draws an ACK.
        let o = run(&mut s, &[(100, b"PORT x\r\nNOOP\r\nPORT")]);
        assert_eq!(o, vec![(114, Vec::new())]);
        // The rest of the line completes it as usual.
        let o = run(&mut s, &[(118, b" x\r\n")]);
        assert_eq!(o, vec![(115, b"PORT yy\r\n".to_vec())]);
    }

    #[test]
    fn a_gap_the_receiver_acknowledged_is_jumped_and_framing_waits_for_a_line_end() {
        let mut s = fresh();
        run(&mut s, &[(100, b"NOOP\r\n")]);
        // The receiver acknowledges 120: bytes 106..120 went another way.
        assert!(s.ack(SeqNum::new(120)));
        assert!(!s.ack(SeqNum::new(110)), "nothing behind the framer is a gap");
        assert_eq!((s.tally.gaps, s.tally.gap_lines), (1, 0));
        // The first line after the gap may have begun inside it: left as sent, counted; the next one is
        // framed again.
        let o = run(&mut s, &[(120, b"PORT x\r\nPORT x\r\n")]);
        assert_eq!(o, vec![(120, b"PORT x\r\nPORT yy\r\n".to_vec())]);
        seg(&mut s, 136, false, false, b"", Instant::ZERO, &mut grow).unwrap();
        assert_eq!(s.map().edits_in_flight(), 1);
    }

    #[test]
    fn a_gap_inside_a_held_announcement_is_never_repaired_into_a_rewrite() {
        let mut s = fresh();
        // "PORT " is held (a candidate); the rest of the line and more went another way.
        let o = run(&mut s, &[(100, b"PORT ")]);
        assert_eq!(o, vec![(100, Vec::new())]);
        assert!(s.ack(SeqNum::new(110)));
        assert_eq!((s.held_len(), s.tally.gap_lines), (0, 1), "the cut line is not sent again");
        // Bytes after the gap that complete a line that looks like an announcement: not rewritten.
        let o = run(&mut s, &[(110, b"x\r\n")]);
        assert_eq!(o, vec![(110, b"x\r\n".to_vec())]);
        assert!(s.map().is_identity());
    }

    #[test]
    fn a_segment_retransmitted_past_a_gap_without_the_bytes_before_it_jumps_the_gap() {
        let mut s = fresh();
        let at = |secs| Instant::from_secs(secs);
        let send = |s: &mut OneWay, t| seg(s, 110, false, false, b"NOOP\r\n", at(t), &mut grow);
        // Without a gap in the other direction, never: a loss before the gateway looks alike.
        for t in [0, 1, 3, 7] {
            assert_eq!(send(&mut s, t), Err(DropReason::AlgOutOfOrder));
        }
        let mut s = fresh();
        s.edit.other_path_seen(Dir::Original);
        // Reordering or a loss before the gateway: refused, the sender fills the hole first.
        assert_eq!(send(&mut s, 0), Err(DropReason::AlgOutOfOrder));
        // Duplicates right away do not count as patience.
        assert_eq!(send(&mut s, 0), Err(DropReason::AlgOutOfOrder));
        assert_eq!(send(&mut s, 1), Err(DropReason::AlgOutOfOrder));
        // The same segment again, 2 s after the first, and the bytes before it never came: the sender
        // holds them acknowledged. Jumped; the line is framed from the next line end on.
        let o = send(&mut s, 2).unwrap();
        assert_eq!(o.payload, b"NOOP\r\n".to_vec());
        assert_eq!(s.tally.gaps, 1);
        // Go-back-N after a loss before the gateway: the retransmissions start below the gap (and are
        // seen), so the count starts over each time and the gap is never jumped.
        let mut s = fresh();
        s.edit.other_path_seen(Dir::Original);
        seg(&mut s, 100, false, false, b"PORT ", at(0), &mut grow).unwrap();
        for t in [0, 1, 3, 7, 15] {
            seg(&mut s, 100, false, false, b"PORT ", at(t), &mut grow).unwrap();
            let r = seg(&mut s, 120, false, false, b"x", at(t), &mut grow);
            assert_eq!(r, Err(DropReason::AlgOutOfOrder), "at {t} s");
        }
        assert_eq!(s.tally.gaps, 0);
        // Another segment past a (new) gap starts its own count.
        let mut s = fresh();
        for (seq, t) in [(110, 0), (120, 2), (110, 3)] {
            let r = seg(&mut s, seq, false, false, b"x", at(t), &mut grow);
            assert_eq!(r, Err(DropReason::AlgOutOfOrder));
        }
    }

    #[test]
    fn a_gap_in_a_tls_record_stream_leaves_it_opaque_for_good() {
        let mut s = fresh();
        s.framer.go_opaque();
        assert!(s.ack(SeqNum::new(200)));
        assert!(s.framer.is_dead());
        let o = run(&mut s, &[(200, b"PORT x\r\n")]);
        assert_eq!(o, vec![(200, b"PORT x\r\n".to_vec())]);
    }

    #[test]
    fn not_ftp_stops_parsing_in_the_middle_of_a_segment() {
        let mut s = fresh();
        let mut judge = |l: &Line<'_>| {
            if l.bytes.starts_with(b"POST ") {
                LineAction::Dead
            } else {
                grow(l)
            }
        };
        let body = b"POST / HTTP/1.1\r\nHost: x\r\n\r\nPORT x\r\n";
        let o = seg(&mut s, 100, false, false, body, Instant::ZERO, &mut judge).unwrap();
        assert_eq!(o.payload, body.to_vec(), "the PORT line after it is not read");
        assert!(s.framer.is_dead() && s.map().is_identity());
        let o = seg(&mut s, 100 + body.len() as u32, false, false, b"PORT x\r\n", Instant::ZERO, &mut judge)
            .unwrap();
        assert_eq!(o.payload, b"PORT x\r\n".to_vec());
    }

    #[test]
    fn observed_direction_refuses_a_gap_and_sees_every_line_once() {
        let mut s = OneWay::new(Edit::Observe, Speaker::Client, 512);
        let mut seen = Vec::new();
        let mut log = |l: &Line<'_>| {
            seen.push(l.bytes.to_vec());
            LineAction::Keep
        };
        seg(&mut s, 99, true, false, b"", Instant::ZERO, &mut log).unwrap();
        // "E" is overtaken by "PSV\r\n": refused, so the sender retransmits both.
        let r = seg(&mut s, 101, false, false, b"PSV\r\n", Instant::ZERO, &mut log);
        assert_eq!(r, Err(DropReason::AlgOutOfOrder));
        seg(&mut s, 100, false, false, b"E", Instant::ZERO, &mut log).unwrap();
        seg(&mut s, 100, false, false, b"EPSV\r\nNOOP\r\n", Instant::ZERO, &mut log).unwrap();
        seg(&mut s, 100, false, false, b"EPSV\r\n", Instant::ZERO, &mut log).unwrap();
        // The FIN's acknowledgement is not a gap.
        seg(&mut s, 112, false, true, b"", Instant::ZERO, &mut log).unwrap();
        assert!(!s.ack(SeqNum::new(113)));
        assert_eq!(seen, vec![b"EPSV\r\n".to_vec(), b"NOOP\r\n".to_vec()]);
    }

    #[test]
    fn tls_records_are_opaque_until_cleartext_returns() {
        let mut s = fresh();
        s.framer.go_opaque();
        // A record of 3 bytes containing "PORT"-looking bytes, then cleartext.
        let mut data = vec![23, 3, 3, 0, 3];
        data.extend_from_slice(b"P\no");
        data.extend_from_slice(b"PORT x\r\n");
        let o = run(&mut s, &[(100, &data)]);
        let mut want = data[..8].to_vec();
        want.extend_from_slice(b"PORT yy\r\n");
        assert_eq!(o, vec![(100, want)]);
        assert!(!s.framer.is_opaque());
    }

    #[test]
    fn fin_in_the_middle_of_a_candidate_releases_it() {
        let mut s = fresh();
        let o = seg(&mut s, 100, false, true, b"PORT x", Instant::ZERO, &mut grow).unwrap();
        assert_eq!(o, SegmentOut { seq: SeqNum::new(100), payload: b"PORT x".to_vec(), fin: true });
        assert_eq!(s.tally.hold_timeouts, 1);
    }

    #[test]
    fn acks_after_the_senders_fin_are_numbered_past_it() {
        let mut s = fresh();
        run(&mut s, &[(100, b"PORT x\r\n")]);
        let o = seg(&mut s, 108, false, true, b"", Instant::ZERO, &mut grow).unwrap();
        assert_eq!((o.seq, o.fin), (SeqNum::new(109), true));
        // The sender's final ACK carries seq FIN+1, mapped through the +1 edit.
        let o = seg(&mut s, 109, false, false, b"", Instant::ZERO, &mut grow).unwrap();
        assert_eq!((o.seq, o.fin), (SeqNum::new(110), false));
        // A retransmitted FIN keeps its number.
        let o = seg(&mut s, 108, false, true, b"", Instant::ZERO, &mut grow).unwrap();
        assert_eq!((o.seq, o.fin), (SeqNum::new(109), true));
    }
}
