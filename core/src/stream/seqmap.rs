//! Per-direction sequence maps: the only code that decides how sequence numbers move (part of the
//! generic stream layer, `crate::stream`).
//!
//! Owns: the full history of payload edits in one direction of a TCP connection (where each edit sits
//! in the sender's sequence space, how long the original span was, the bytes that replaced it), the
//! mapping of sender sequence numbers into the receiver's space and of the receiver's acknowledgements
//! back, and the rebuilding of a retransmitted range into exactly the bytes first sent.
//! Must not: parse FTP, touch packets or allocate ports.
//!
//! Unlike a single correction point (Linux `nf_conntrack_seqadj` keeps one offset pair per direction),
//! every edit still unacknowledged is kept, so a retransmission of any earlier range — including one the
//! sender repacketised, merged or split — maps to the same output. History is folded into a base offset
//! once the receiver has acknowledged past it.

use std::collections::VecDeque;

use crate::wire::SeqNum;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Edit {
    in_start: SeqNum,
    in_len: u32,
    out: Box<[u8]>,
}

impl Edit {
    fn in_end(&self) -> SeqNum {
        self.in_start.add(self.in_len)
    }
    fn delta(&self) -> u32 {
        (self.out.len() as u32).wrapping_sub(self.in_len)
    }
}

/// The edit history of one direction. `out = in + delta(in)`, all arithmetic modulo 2^32.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SeqMap {
    /// Offset for everything before the first retained edit.
    base: u32,
    edits: VecDeque<Edit>,
    /// Sender sequence number below which history was dropped (the receiver acknowledged it).
    horizon: Option<SeqNum>,
}

impl SeqMap {
    pub fn new() -> Self {
        SeqMap::default()
    }

    /// No edit ever changed a length and none is retained: numbers pass unchanged.
    pub fn is_identity(&self) -> bool {
        self.base == 0 && self.edits.is_empty()
    }

    /// Number of edits still remembered.
    pub fn edits_in_flight(&self) -> usize {
        self.edits.len()
    }

    /// The offset that applies after every edit recorded so far (for display: signed).
    pub fn current_delta(&self) -> i32 {
        self.edits.iter().fold(self.base, |d, e| d.wrapping_add(e.delta())) as i32
    }

    pub fn horizon(&self) -> Option<SeqNum> {
        self.horizon
    }

    /// Records that the sender's bytes `[in_start, in_start + in_len)` leave as `out`. Edits are recorded
    /// in stream order and never overlap: the framer only edits complete lines it has not emitted yet.
    pub fn record(&mut self, in_start: SeqNum, in_len: u32, out: Vec<u8>) {
        debug_assert!(self.edits.back().is_none_or(|e| e.in_end().le(in_start)));
        self.edits.push_back(Edit { in_start, in_len, out: out.into_boxed_slice() });
    }

    /// Maps a sender sequence number into the receiver's space. A number inside an edited span maps to
    /// where the replacement starts.
    pub fn map(&self, s: SeqNum) -> SeqNum {
        self.map_inner(s, false)
    }

    /// Like [`SeqMap::map`], but a number inside an edited span maps to where the replacement ends.
    pub fn map_hi(&self, s: SeqNum) -> SeqNum {
        self.map_inner(s, true)
    }

    fn map_inner(&self, s: SeqNum, hi: bool) -> SeqNum {
        let mut delta = self.base;
        for e in &self.edits {
            if s.le(e.in_start) {
                break;
            }
            if s.lt(e.in_end()) {
                let start = e.in_start.add(delta);
                return if hi { start.add(e.out.len() as u32) } else { start };
            }
            delta = delta.wrapping_add(e.delta());
        }
        s.add(delta)
    }

    /// Maps a receiver acknowledgement (or SACK edge) back into the sender's space. An acknowledgement
    /// that ends `k` bytes into a replacement maps `k` bytes into the original span, but never to its
    /// end: the sender keeps at least the span's last byte, so what the receiver still lacks of the
    /// replacement is retransmitted, and [`SeqMap::rebuild`] widens any retransmission that touches the
    /// span to the whole replacement again. Distinct acknowledgements inside a replacement stay
    /// distinct where the original span is long enough, so [`SeqMap::map_ack`] can undo this one.
    pub fn unmap(&self, out: SeqNum) -> SeqNum {
        let mut delta = self.base;
        for e in &self.edits {
            let out_start = e.in_start.add(delta);
            // An acknowledgement at a deletion (an empty replacement) covers the deleted bytes too: the
            // receiver will never get more of them, and mapping it to the deletion's start would keep
            // the sender retransmitting them for ever if nothing follows.
            if out.lt(out_start) || (out == out_start && !e.out.is_empty()) {
                break;
            }
            if out.lt(out_start.add(e.out.len() as u32)) {
                let k = out.diff(out_start) as u32;
                return e.in_start.add(k.min(e.in_len.saturating_sub(1)));
            }
            delta = delta.wrapping_add(e.delta());
        }
        out.sub(delta)
    }

    /// The receiver-space acknowledgement that [`SeqMap::unmap`] turns back into `s`: what a receiver
    /// that got the rewritten stream sends where the sender's own peer acknowledged `s` (the replay's
    /// peer emulation). Exact unless `s` lies inside a span whose replacement is shorter than the
    /// number of bytes `s` is into it; then the largest acknowledgement that does not claim more than `s`.
    pub fn map_ack(&self, s: SeqNum) -> SeqNum {
        let mut delta = self.base;
        for e in &self.edits {
            if s.le(e.in_start) {
                break;
            }
            if s.lt(e.in_end()) {
                let out_start = e.in_start.add(delta);
                let j = s.diff(e.in_start) as u32;
                return out_start.add(j.min((e.out.len() as u32).saturating_sub(1)));
            }
            delta = delta.wrapping_add(e.delta());
        }
        s.add(delta)
    }

    /// Forgets edits the receiver has acknowledged in full (`acked` is in the sender's space).
    pub fn prune(&mut self, acked: SeqNum) {
        while let Some(e) = self.edits.front() {
            // An insertion (empty original span) at `acked` may or may not have reached the receiver:
            // both acknowledgements map back to the same sender number, so it stays until one passes it.
            let done = if e.in_len == 0 { e.in_end().lt(acked) } else { e.in_end().le(acked) };
            if done {
                self.base = self.base.wrapping_add(e.delta());
                self.edits.pop_front();
            } else {
                break;
            }
        }
        self.horizon = Some(match self.horizon {
            Some(h) => h.max(acked),
            None => acked,
        });
    }

    /// True if any retained edit overlaps `[a, a + len)`.
    pub fn overlaps(&self, a: SeqNum, len: u32) -> bool {
        let b = a.add(len);
        self.edits.iter().any(|e| e.in_start.lt(b) && a.lt(e.in_end()))
    }

    /// The bytes the receiver gets for the sender's range starting at `a` with `payload`, and the
    /// receiver-space sequence number of the first of them. A range that starts or ends inside an
    /// edited span is widened to the whole replacement, so every rebuild of any range is a slice of the
    /// one output stream.
    pub fn rebuild(&self, a: SeqNum, payload: &[u8]) -> (SeqNum, Vec<u8>) {
        let b = a.add(payload.len() as u32);
        let out_start = self.map(a);
        let mut out = Vec::with_capacity(payload.len() + 16);
        let mut cursor = a;
        for e in &self.edits {
            // An insertion at `a` belongs with byte `a` (it was sent right before it); an edit of a span
            // that ends at `a` does not.
            let before = if e.in_len == 0 { e.in_end().lt(a) } else { e.in_end().le(a) };
            if before {
                continue;
            }
            if b.le(e.in_start) {
                break;
            }
            if cursor.lt(e.in_start) {
                let (from, to) = (cursor.diff(a) as usize, e.in_start.diff(a) as usize);
                out.extend_from_slice(&payload[from..to]);
            }
            out.extend_from_slice(&e.out);
            cursor = e.in_end();
        }
        if cursor.lt(b) {
            out.extend_from_slice(&payload[cursor.diff(a) as usize..]);
        }
        (out_start, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(n: u32) -> SeqNum {
        SeqNum::new(n)
    }

    #[test]
    fn identity_until_an_edit() {
        let m = SeqMap::new();
        assert!(m.is_identity());
        assert_eq!(m.map(s(5)), s(5));
        assert_eq!(m.unmap(s(5)), s(5));
    }

    #[test]
    fn one_growing_edit() {
        // Sender bytes 100..110 become 14 bytes.
        let mut m = SeqMap::new();
        m.record(s(100), 10, b"ABCDEFGHIJKLMN".to_vec());
        assert_eq!(m.map(s(100)), s(100));
        assert_eq!(m.map(s(105)), s(100));
        assert_eq!(m.map_hi(s(105)), s(114));
        assert_eq!(m.map(s(110)), s(114));
        assert_eq!(m.unmap(s(114)), s(110));
        // Inside the replacement: as far into the original span, never its end.
        assert_eq!(m.unmap(s(107)), s(107));
        assert_eq!(m.unmap(s(112)), s(109));
        assert_eq!(m.unmap(s(100)), s(100));
        for x in 95..=115 {
            assert_eq!(m.unmap(m.map_ack(s(x))), s(x), "ack {x}");
        }
        assert_eq!(m.current_delta(), 4);
        m.prune(s(110));
        assert_eq!(m.edits_in_flight(), 0);
        assert_eq!(m.map(s(200)), s(204));
        assert_eq!(m.unmap(s(204)), s(200));
    }

    #[test]
    fn rebuild_of_any_range_is_a_slice_of_the_output_stream() {
        let input: Vec<u8> = (0u8..60).collect();
        let mut m = SeqMap::new();
        // Two edits: 10..15 -> 8 bytes, 30..40 -> 2 bytes.
        m.record(s(1010), 5, vec![0xA0; 8]);
        m.record(s(1030), 10, vec![0xB0; 2]);
        let (o0, full) = m.rebuild(s(1000), &input);
        assert_eq!(o0, s(1000));
        assert_eq!(full.len(), 60 + 3 - 8);
        for a in 0..60usize {
            for b in a + 1..=60 {
                let (o, bytes) = m.rebuild(s(1000 + a as u32), &input[a..b]);
                let off = o.diff(o0) as usize;
                assert_eq!(&full[off..off + bytes.len()], &bytes[..], "range {a}..{b}");
            }
        }
    }

    #[test]
    fn an_insertion_is_rebuilt_with_the_byte_it_precedes_and_kept_until_acked_past() {
        let input: Vec<u8> = (0u8..20).collect();
        let mut m = SeqMap::new();
        m.record(s(105), 0, b"INS".to_vec());
        let (o0, full) = m.rebuild(s(100), &input);
        assert_eq!(&full[..8], &[0, 1, 2, 3, 4, b'I', b'N', b'S']);
        for a in 0..20usize {
            for b in a + 1..=20 {
                let (o, bytes) = m.rebuild(s(100 + a as u32), &input[a..b]);
                let off = o.diff(o0) as usize;
                assert_eq!(&full[off..off + bytes.len()], &bytes[..], "range {a}..{b}");
            }
        }
        // An acknowledgement of everything before the insertion does not forget it.
        m.prune(s(105));
        assert_eq!(m.edits_in_flight(), 1);
        m.prune(s(106));
        assert_eq!(m.edits_in_flight(), 0);
        assert_eq!(m.map(s(106)), s(109));
    }

    #[test]
    fn wraps_around_zero() {
        let mut m = SeqMap::new();
        m.record(s(u32::MAX - 2), 6, vec![1; 3]);
        assert_eq!(m.map(s(3)), s(0));
        assert_eq!(m.unmap(s(0)), s(3));
    }

    proptest! {
        #[test]
        fn unmap_inverts_map_outside_edits(start in any::<u32>(), lens in proptest::collection::vec((1u32..20, 0usize..30, 1u32..50), 1..6), probe in 0u32..2000) {
            let mut m = SeqMap::new();
            let mut at = start;
            let mut spans = Vec::new();
            let mut outs = Vec::new();
            for (gap, out_len, in_len) in lens {
                at = at.wrapping_add(gap);
                m.record(s(at), in_len, vec![7; out_len]);
                spans.push((at, in_len));
                outs.push(out_len);
                at = at.wrapping_add(in_len);
            }
            let p = s(start.wrapping_add(probe));
            // Inside an edit, or on the first byte of a deletion (a deleted byte has no image: it maps to
            // where the next kept byte goes, and that is what comes back).
            let inside = spans.iter().zip(&outs).any(|(&(a, l), &o)| {
                (s(a).lt(p) && p.lt(s(a).add(l))) || (o == 0 && p == s(a))
            });
            if !inside {
                prop_assert_eq!(m.unmap(m.map(p)), p);
            }
            // Acknowledgements round-trip exactly, except past the end of a shorter replacement, where
            // the acknowledgement comes back short. (Deletions, which the FTP ALG never makes, are left
            // out: an acknowledgement at one covers the deleted bytes by design.)
            let deletion = spans.iter().zip(&outs).any(|(&(a, l), &o)| o == 0 && s(a).le(p) && p.le(s(a).add(l)));
            if !deletion {
                let back = m.unmap(m.map_ack(p));
                prop_assert!(back.le(p));
                let short = spans.iter().zip(&outs).any(|(&(a, l), &o)| {
                    s(a).lt(p) && p.lt(s(a).add(l)) && p.diff(s(a)) as usize >= o
                });
                if !short {
                    prop_assert_eq!(back, p);
                }
            }
        }
    }
}
