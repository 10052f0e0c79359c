//! TCP window tracking of one connection, per direction: what each side may send and acknowledge.
//!
//! Owns: [`TcpWindow`], the per-direction bounds of a connection in the manner of van Rooij's "Real
//! Stateful TCP Packet Filtering in IP Filter" and Linux `nf_conntrack_proto_tcp` (read for facts; our
//! own formulation), and the classification of a segment against them ([`Window`]). Must not: know the
//! coarse connection state machine or timeouts ([`super::Conn`] does), touch packets, or know about the
//! ALG's sequence maps (the caller hands in acknowledgements already mapped back into the sender's
//! space, as Linux does with its NAT offset).
//!
//! Per direction `d` (its sender `s`, receiver `r`) the tracker keeps:
//! - `end[s]`: the highest sequence number `s` has used plus one (SYN and FIN count, RFC 9293 §3.4);
//! - `ack[s]`: the highest acknowledgement `s` has sent: its RCV.NXT as far as the gateway knows;
//! - `win[s]`: the largest window `s` has advertised, scaled (RFC 7323 §2.3; the window of a SYN is
//!   never scaled); kept in 16 bits, rounded up (`WinSize`);
//! - `scale[s]`: the shift from `s`'s SYN, used only when both SYNs carried the option (RFC 7323 §1.3).
//!
//! A segment from `s` is **in the window** when
//! 1. `seq <= ack[r] + win[r]`: it starts inside what `r` has allowed (Linux: "SEQ is over upper
//!    bound"). `ack[r] + win[r]` is at least Linux's `td_maxend`: the largest window with the highest
//!    ack, not the window that came with it; a little more liberal, never less;
//! 2. `seq + len >= end[s] - win[r]`: it is not older than one receive window ("SEQ is under lower
//!    bound": an old retransmission);
//! 3. `ack <= max(end[r], ack[s] + win[s])`: it acknowledges nothing `r` cannot have sent. Up to
//!    `end[r]` is what the gateway saw; beyond it, up to what `s` itself allowed `r` to send, are bytes
//!    that reached `s` by a path the gateway does not see (an asymmetric route, a capture with gaps).
//!    Linux calls the latter invalid ("ACK is over upper bound"), which stalls such connections; here
//!    they are accepted and `end[r]` learns them, so the ALG can resynchronise after the gap;
//! 4. `ack >= end[r] - max(win[s], 66000)`: not an overly delayed acknowledgement (Linux's
//!    `MAXACKWINDOW`).
//!
//! What fails 1 or 3 is [`Window::Beyond`]: no TCP sender produces it; the engine drops it. What fails 2
//! or 4 is [`Window::Behind`]: an old duplicate or a long-delayed ACK, which Linux "ignores" (passes it
//! translated, updates nothing); the engine does the same. Either changes no state.
//!
//! RST (RFC 5961 §3): accepted only in the window (1 and 2 on its sequence number, any ACK ignored) and
//! only when its sequence number is exactly the receiver's RCV.NXT as the gateway saw it acknowledged
//! (`ack[r]`) or the sender's own next sequence number (`end[s]`: what a real sender's RST carries; the
//! receiver's RCV.NXT once the data in flight arrives; Linux accepts the same, "aligned with a previous
//! packet in the same direction"), [`Window::Accept`]; in the window but neither is
//! [`Window::RstNotExact`] (passed on unchanged, so the receiver's challenge ACK draws a second, exact
//! RST from a real sender); outside the window it is [`Window::Beyond`]. A blind attacker has to hit one
//! of two numbers out of 2^32. Before `r` has acknowledged anything (an RST answering a SYN) it must
//! acknowledge `r`'s SYN exactly (RFC 9293 §3.10.7.3).
//!
//! Picked up mid-stream ("loose", like Linux's `nf_conntrack_tcp_loose`): the SYNs, and so the window
//! scale, were never seen. Each side's first segment sets its numbers, and windows are learned from
//! what the connection shows: an advertised window is taken at a shift of 8 (what common stacks use;
//! Linux announces 7, Windows 8), and a receiver's window is at least four times the most data the
//! gateway has seen in flight towards it (a sender in slow start doubles its flight per round trip), up
//! to 2^30. That keeps a bound a blind attacker has to guess into (a 64 KB raw window allows 16 MB, not
//! the 1 GB the largest shift would) while a real flight, which grows from what was seen, stays inside.
//! Linux instead gives up window checks on such connections altogether (`BE_LIBERAL`).

use crate::flow::Dir;
use crate::wire::SeqNum;

/// Linux's `MAXACKWINCONST`: the least slack behind `end` an acknowledgement may have.
const MIN_ACK_WINDOW: u32 = 66_000;
/// RFC 7323 §2.3: the largest shift.
const MAX_SHIFT: u32 = 14;
/// The shift assumed for the windows of a connection picked up mid-stream (module header).
const LOOSE_SHIFT: u32 = 8;
/// A picked-up connection's receive window is at least this many times the flight seen towards it.
const LOOSE_FLIGHT_FACTOR: u32 = 4;
/// RFC 7323 §2.3: no window exceeds 2^30.
const MAX_WINDOW: u32 = 1 << 30;

/// What the tracker needs of one segment. `ack` is `None` without the ACK flag (and for an RST whose
/// ACK field is zero, which broken stacks send); for a connection whose other direction the ALG
/// rewrites it must already be mapped back into that direction's sender space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSeg {
    pub seq: SeqNum,
    pub ack: Option<SeqNum>,
    /// Payload length plus one for a SYN and one for a FIN.
    pub len: u32,
    /// The window field as sent (unscaled).
    pub win: u16,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// The window scale option's shift, on a SYN.
    pub wscale: Option<u8>,
}

impl TcpSeg {
    fn end(&self) -> SeqNum {
        self.seq.add(self.len)
    }
}

/// How a segment relates to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Window {
    /// In the window; for an RST, exact. The caller may change state.
    Accept,
    /// An RST in the window whose sequence number is not the receiver's next expected one
    /// (RFC 5961 §3.2): passed on, changes nothing.
    RstNotExact,
    /// Older than the window (a stale duplicate, a long-delayed ACK) or a SYN of a synchronised
    /// connection: passed on, changes nothing.
    Behind(Why),
    /// Beyond the window or not acceptable at all: no TCP sender sends it. Changes nothing.
    Beyond(Why),
}

/// Why a segment is outside the window, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Why {
    SeqAbove,
    SeqBelow,
    AckAbove,
    AckBelow,
    /// A SYN-ACK that does not acknowledge the SYN, or an RST answering a SYN that does not.
    Handshake,
    /// A SYN in a synchronised connection, or a segment from a side that has not opened.
    Unsynchronised,
}

impl Why {
    pub fn name(self) -> &'static str {
        match self {
            Why::SeqAbove => "seq_above_window",
            Why::SeqBelow => "seq_below_window",
            Why::AckAbove => "ack_above_sent",
            Why::AckBelow => "ack_below_window",
            Why::Handshake => "handshake_mismatch",
            Why::Unsynchronised => "unsynchronised",
        }
    }
}

/// Bits of [`TcpWindow::meta`], per direction.
mod meta {
    /// The window scale shift (0..=14).
    pub(super) const SCALE: u8 = 0x0f;
    /// The side has sent a segment the tracker accepted: `end` is valid.
    pub(super) const SEEN: u8 = 0x10;
    /// The side has sent an ACK: `ack` is valid.
    pub(super) const ACKED: u8 = 0x20;
    /// The side's SYN carried a window scale option.
    pub(super) const WSCALE_OPT: u8 = 0x40;
    /// (Original direction's byte only.) Picked up mid-stream: the shift is unknown.
    pub(super) const LOOSE: u8 = 0x80;
}

/// A window size in 16 bits: an 11-bit mantissa and a 5-bit shift, rounded up, so a stored window is
/// never smaller than the one advertised (at most 1/1024 larger), up to 2^30 (RFC 7323 §2.3: no window
/// is larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
struct WinSize(u16);

impl WinSize {
    const MANTISSA_BITS: u32 = 11;

    fn new(v: u32) -> WinSize {
        let v = v.min(MAX_WINDOW);
        let bits = 32 - v.leading_zeros();
        if bits <= Self::MANTISSA_BITS {
            return WinSize(v as u16);
        }
        let mut shift = bits - Self::MANTISSA_BITS;
        let mut m = v.div_ceil(1 << shift);
        if m >> Self::MANTISSA_BITS != 0 {
            m >>= 1;
            shift += 1;
        }
        WinSize((shift << Self::MANTISSA_BITS) as u16 | m as u16)
    }

    #[inline]
    fn get(self) -> u32 {
        // `new` keeps values to 2^30, so the shift is at most 20 and `m << shift` fits.
        let shift = u32::from(self.0 >> Self::MANTISSA_BITS) & 31;
        let m = u32::from(self.0) & ((1 << Self::MANTISSA_BITS) - 1);
        m.wrapping_shl(shift)
    }
}

/// An ordinary segment, the per-packet case ([`TcpWindow::track_established`]): no SYN, no RST, an
/// ACK. `len` counts its payload and FIN.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Plain {
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub len: u32,
    pub win: u16,
}

/// The window state of one TCP connection, both directions: 22 bytes of fields, 24 with alignment (see
/// the module header).
#[derive(Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpWindow {
    end: [SeqNum; 2],
    ack: [SeqNum; 2],
    win: [WinSize; 2],
    meta: [u8; 2],
}

impl TcpWindow {
    /// A connection picked up mid-stream: no SYN was seen, the window scale is unknown.
    pub fn loose() -> TcpWindow {
        let mut w = TcpWindow::default();
        w.meta[0] |= meta::LOOSE;
        w
    }

    pub fn is_loose(&self) -> bool {
        self.meta[0] & meta::LOOSE != 0
    }

    fn has(&self, i: usize, bit: u8) -> bool {
        self.meta[i] & bit != 0
    }

    /// The next sequence number direction `d`'s sender will use, as far as the gateway knows.
    pub fn end(&self, d: Dir) -> Option<SeqNum> {
        self.has(d.index(), meta::SEEN).then_some(self.end[d.index()])
    }

    /// The highest acknowledgement direction `d`'s sender has sent (its RCV.NXT).
    pub fn acked(&self, d: Dir) -> Option<SeqNum> {
        self.has(d.index(), meta::ACKED).then_some(self.ack[d.index()])
    }

    /// The largest window direction `d`'s sender has advertised (learned, when picked up), as the
    /// bounds use it.
    #[inline]
    pub fn max_window(&self, d: Dir) -> u32 {
        self.win[d.index()].get().clamp(1, MAX_WINDOW)
    }

    /// The shift of direction `i`'s window fields (when picked up: assumed, see the module header).
    fn scale(&self, i: usize) -> u32 {
        if self.is_loose() {
            LOOSE_SHIFT
        } else {
            u32::from(self.meta[i] & meta::SCALE)
        }
    }

    /// Classifies a segment travelling in `d`, read-only.
    #[inline]
    pub fn check(&self, d: Dir, seg: &TcpSeg) -> Window {
        let (s, r) = (d.index(), d.reverse().index());
        if seg.syn {
            return self.check_syn(d, s, r, seg);
        }
        if !self.has(s, meta::SEEN) {
            if seg.rst {
                // RFC 9293 §3.10.7.3: an RST answering a SYN is acceptable if it acknowledges the SYN;
                // otherwise RFC 5961 §3.2, the receiver's RCV.NXT if the gateway knows it.
                let exact = (self.has(r, meta::SEEN) && seg.ack == Some(self.end[r]))
                    || (self.has(r, meta::ACKED) && seg.seq == self.ack[r]);
                return if exact {
                    Window::Accept
                } else if self.is_loose() {
                    Window::RstNotExact
                } else {
                    Window::Beyond(Why::Handshake)
                };
            }
            // A side picked up mid-stream opens with whatever it sends; a side of a connection whose SYN
            // was seen must answer it with a SYN-ACK first (Linux ignores such segments too).
            return if self.is_loose() { Window::Accept } else { Window::Behind(Why::Unsynchronised) };
        }
        if !self.has(r, meta::SEEN) {
            // Only this side has spoken (a SYN not yet answered, or a pickup from one side): nothing to
            // bound it by but its own numbers.
            if seg.rst {
                return if seg.seq == self.end[s] { Window::Accept } else { Window::RstNotExact };
            }
            return Window::Accept;
        }
        let win_r = self.max_window(d.reverse());
        let win_s = self.max_window(d);
        // 1. and 2.: the sequence number against what the receiver allows.
        let base = if self.has(r, meta::ACKED) { self.ack[r] } else { self.end[s] };
        if seg.seq.gt(base.add(win_r)) {
            return Window::Beyond(Why::SeqAbove);
        }
        if seg.end().lt(self.end[s].sub(win_r)) {
            // RFC 5961 §3.2: an RST outside the window is discarded, whichever side of it.
            return if seg.rst { Window::Beyond(Why::SeqBelow) } else { Window::Behind(Why::SeqBelow) };
        }
        if seg.rst {
            // RFC 5961 §3.2: only RCV.NXT resets (module header: or the sender's own next number).
            let exact = seg.seq == self.end[s] || (self.has(r, meta::ACKED) && seg.seq == self.ack[r]);
            return if exact { Window::Accept } else { Window::RstNotExact };
        }
        // 3. and 4.: the acknowledgement against what the other side sent (or could have).
        if let Some(ack) = seg.ack {
            let allowed = if self.has(s, meta::ACKED) { self.ack[s] } else { self.end[r] };
            let upper = self.end[r].max(allowed.add(win_s));
            if ack.gt(upper) {
                return Window::Beyond(Why::AckAbove);
            }
            if ack.lt(self.end[r].sub(win_s.max(MIN_ACK_WINDOW))) {
                return Window::Behind(Why::AckBelow);
            }
        }
        Window::Accept
    }

    fn check_syn(&self, d: Dir, s: usize, r: usize, seg: &TcpSeg) -> Window {
        // Synchronised: this side has acknowledged something, so its handshake is behind it.
        let synchronised = self.has(s, meta::ACKED);
        match seg.ack {
            // A retransmission of the SYN.
            None if self.has(s, meta::SEEN) && seg.end() == self.end[s] => Window::Accept,
            // A SYN in a synchronised connection is ignored: RFC 5961 §4 has the receiver answer it with
            // a challenge ACK. So is a SYN with another ISN once the other side has answered the first
            // (it acknowledged that ISN): taking it would let a blind SYN during the handshake replace
            // the real one. Before any answer it starts over (RFC 9293 §3.10.7.2), as Linux does.
            None if synchronised || self.has(r, meta::ACKED) => Window::Behind(Why::Unsynchronised),
            None => Window::Accept,
            // A SYN-ACK must acknowledge exactly the SYN it answers (RFC 9293 §3.10.7.3).
            Some(ack) if !synchronised => {
                if self.has(r, meta::SEEN) && ack == self.end[r] {
                    Window::Accept
                } else {
                    Window::Beyond(Why::Handshake)
                }
            }
            // A retransmitted SYN-ACK: an ordinary segment of the synchronised connection.
            Some(_) => self.check(d, &TcpSeg { syn: false, ..*seg }),
        }
    }

    /// Records an accepted segment travelling in `d` (call only after [`TcpWindow::check`] gave
    /// [`Window::Accept`]).
    #[inline]
    pub fn update(&mut self, d: Dir, seg: &TcpSeg) {
        let (s, r) = (d.index(), d.reverse().index());
        let end = seg.end();
        if seg.syn && seg.ack.is_none() {
            // (Re)opening: this side starts over (RFC 9293 §3.10.7.2: a new ISN before the handshake).
            let loose = self.meta[0] & meta::LOOSE;
            let mut m = meta::SEEN;
            if let Some(shift) = seg.wscale {
                m |= meta::WSCALE_OPT | (shift.min(MAX_SHIFT as u8) & meta::SCALE);
            }
            self.meta[s] = m | if s == 0 { loose } else { 0 };
            self.end[s] = end;
            // The window of a SYN is never scaled (RFC 7323 §2.2).
            self.win[s] = WinSize::new(u32::from(seg.win));
            return;
        }
        if seg.syn {
            // The SYN-ACK: RFC 7323 §1.3, the shifts apply only if both SYNs carried the option.
            let both = seg.wscale.is_some() && self.has(r, meta::WSCALE_OPT);
            let keep = self.meta[s] & meta::LOOSE;
            let mut m = meta::SEEN | keep;
            if both {
                m |= meta::WSCALE_OPT | (seg.wscale.unwrap_or(0).min(MAX_SHIFT as u8) & meta::SCALE);
            } else {
                self.meta[r] &= !meta::SCALE;
            }
            self.meta[s] = m;
            if !self.has(s, meta::ACKED) || end.gt(self.end[s]) {
                self.end[s] = end;
            }
            self.win[s] = WinSize::new(self.win[s].get().max(u32::from(seg.win)));
        } else if !self.has(s, meta::SEEN) {
            self.meta[s] |= meta::SEEN;
            self.end[s] = end;
        } else if end.gt(self.end[s]) {
            self.end[s] = end;
        }
        if !seg.syn {
            let w = u32::from(seg.win) << self.scale(s);
            if w > self.win[s].get() {
                self.win[s] = WinSize::new(w);
            }
        }
        if let Some(ack) = seg.ack {
            if !self.has(s, meta::ACKED) || ack.gt(self.ack[s]) {
                self.ack[s] = ack;
            }
            self.meta[s] |= meta::ACKED;
            if self.has(r, meta::SEEN) && ack.gt(self.end[r]) {
                // The receiver has bytes the gateway never saw (check 3 allowed them): learn them.
                self.end[r] = ack;
            }
        }
        if self.is_loose() && self.has(r, meta::ACKED) {
            // Picked up: the receiver's window is at least what it has let the sender have in flight.
            let flight = self.end[s].diff(self.ack[r]).max(0) as u32;
            let w = flight.saturating_mul(LOOSE_FLIGHT_FACTOR).min(MAX_WINDOW);
            if w > self.win[r].get() {
                self.win[r] = WinSize::new(w);
            }
        }
    }

    /// [`TcpWindow::check`], and on [`Window::Accept`] [`TcpWindow::update`].
    #[inline]
    pub fn track(&mut self, d: Dir, seg: &TcpSeg) -> Window {
        if let (false, false, Some(ack)) = (seg.syn, seg.rst, seg.ack) {
            let p = Plain { seq: seg.seq, ack, len: seg.len, win: seg.win };
            if let Some(v) = self.track_established(d, p) {
                return v;
            }
        }
        let v = self.check(d, seg);
        if v == Window::Accept {
            self.update(d, seg);
        }
        v
    }

    /// The per-packet path: an ordinary segment (no SYN, no RST, with an ACK; `len` counts its payload
    /// and FIN) of a connection whose two sides have both spoken and acknowledged, not picked up. The
    /// same checks and updates as [`TcpWindow::check`] and [`TcpWindow::update`], each window decoded
    /// once. `None`: not such a connection, take the general path.
    #[inline(always)]
    pub fn track_established(&mut self, d: Dir, p: Plain) -> Option<Window> {
        let Plain { seq, ack, len, win } = p;
        const BOTH: u16 = (meta::SEEN | meta::ACKED) as u16;
        // Both sides seen and acknowledging, not picked up (LOOSE lives in the first byte): one compare.
        const MASK: u16 = BOTH | BOTH << 8 | meta::LOOSE as u16;
        if u16::from_le_bytes(self.meta) & MASK != BOTH | BOTH << 8 {
            return None;
        }
        let (s, r) = (d.index(), d.reverse().index());
        let (win_r, win_s) = (self.win[r].get().max(1), self.win[s].get().max(1));
        let end = seq.add(len);
        if seq.gt(self.ack[r].add(win_r)) {
            return Some(Window::Beyond(Why::SeqAbove));
        }
        if end.lt(self.end[s].sub(win_r)) {
            return Some(Window::Behind(Why::SeqBelow));
        }
        if ack.gt(self.end[r].max(self.ack[s].add(win_s))) {
            return Some(Window::Beyond(Why::AckAbove));
        }
        if ack.lt(self.end[r].sub(win_s.max(MIN_ACK_WINDOW))) {
            return Some(Window::Behind(Why::AckBelow));
        }
        if end.gt(self.end[s]) {
            self.end[s] = end;
        }
        if ack.gt(self.ack[s]) {
            self.ack[s] = ack;
            if ack.gt(self.end[r]) {
                // The receiver has bytes the gateway never saw (check 3 allowed them): learn them.
                self.end[r] = ack;
            }
        }
        let w = u32::from(win) << (self.meta[s] & meta::SCALE);
        if w > win_s {
            self.win[s] = WinSize::new(w);
        }
        Some(Window::Accept)
    }
}

impl core::fmt::Debug for TcpWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let side = |i: usize| {
            format!(
                "end={:?} ack={:?} win={} scale={}",
                self.has(i, meta::SEEN).then_some(self.end[i].get()),
                self.has(i, meta::ACKED).then_some(self.ack[i].get()),
                self.win[i].get(),
                self.meta[i] & meta::SCALE
            )
        };
        f.debug_struct("TcpWindow")
            .field("loose", &self.is_loose())
            .field("orig", &side(0))
            .field("reply", &side(1))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const O: Dir = Dir::Original;
    const R: Dir = Dir::Reply;

    fn seg(seq: u32, ack: Option<u32>, len: u32, win: u16) -> TcpSeg {
        TcpSeg {
            seq: SeqNum::new(seq),
            ack: ack.map(SeqNum::new),
            len,
            win,
            syn: false,
            fin: false,
            rst: false,
            wscale: None,
        }
    }

    fn syn(seq: u32, ack: Option<u32>, win: u16, wscale: Option<u8>) -> TcpSeg {
        TcpSeg { syn: true, len: 1, wscale, ..seg(seq, ack, 0, win) }
    }

    fn rst(seq: u32, ack: Option<u32>) -> TcpSeg {
        TcpSeg { rst: true, ..seg(seq, ack, 0, 0) }
    }

    /// Client ISN 1000 (wscale 7), server ISN 5000 (wscale 8), handshake done: client next 1001, server
    /// next 5001; windows 502 << 7 = 64256 (client) and 256 << 8 = 65536 (server).
    fn established() -> TcpWindow {
        let mut w = TcpWindow::default();
        assert_eq!(w.track(O, &syn(1000, None, 64240, Some(7))), Window::Accept);
        assert_eq!(w.track(R, &syn(5000, Some(1001), 65160, Some(8))), Window::Accept);
        assert_eq!(w.track(O, &seg(1001, Some(5001), 0, 502)), Window::Accept);
        assert_eq!(w.track(R, &seg(5001, Some(1001), 0, 256)), Window::Accept);
        w
    }

    #[test]
    fn win_size_rounds_up_and_round_trips_small_values() {
        for v in [0u32, 1, 2047, 2048, 2049, 64_240, 65_535, 1 << 20, (65_535 << 14) - 7, 1 << 30] {
            let got = WinSize::new(v).get();
            assert!(got >= v, "{v} -> {got}");
            assert!(u64::from(got) <= u64::from(v) + u64::from(v) / 1024 + 1, "{v} -> {got}");
        }
        assert_eq!(WinSize::new(2047).get(), 2047);
        assert_eq!(WinSize::new(u32::MAX).get(), MAX_WINDOW, "clamped to the largest window");
    }

    #[test]
    fn scale_applies_only_when_both_syns_carry_it() {
        let w = established();
        assert_eq!(w.max_window(O), 64_256);
        assert_eq!(w.max_window(R), 65_536);
        let mut w = TcpWindow::default();
        w.track(O, &syn(1000, None, 64240, Some(7)));
        w.track(R, &syn(5000, Some(1001), 65160, None));
        w.track(O, &seg(1001, Some(5001), 0, 502));
        assert_eq!(
            w.max_window(O),
            WinSize::new(64_240).get(),
            "the SYN's own window; 502 unscaled is smaller"
        );
    }

    #[test]
    fn data_in_the_window_is_accepted_and_moves_end() {
        let mut w = established();
        assert_eq!(w.track(O, &seg(1001, Some(5001), 1400, 502)), Window::Accept);
        assert_eq!(w.end(O), Some(SeqNum::new(2401)));
        // A retransmission of it, and of older data within a window: still accepted.
        assert_eq!(w.track(O, &seg(1001, Some(5001), 1400, 502)), Window::Accept);
        // A keepalive (RFC 9293 §3.8.4: one below SND.NXT).
        assert_eq!(w.track(O, &seg(2400, Some(5001), 0, 502)), Window::Accept);
    }

    #[test]
    fn blind_sequence_numbers_are_outside() {
        let w = established();
        // Beyond what the server allows: ack 1001 + 65536.
        assert_eq!(w.check(O, &seg(1001 + 65_537, Some(5001), 10, 502)), Window::Beyond(Why::SeqAbove));
        assert_eq!(w.check(O, &seg(1001 + 65_536, Some(5001), 10, 502)), Window::Accept);
        // Older than a window: passed on, ignored.
        assert_eq!(
            w.check(O, &seg(1001u32.wrapping_sub(70_000), Some(5001), 10, 502)),
            Window::Behind(Why::SeqBelow)
        );
        // Half the sequence space away.
        assert!(matches!(
            w.check(O, &seg(1001 + (1 << 31), Some(5001), 0, 502)),
            Window::Beyond(_) | Window::Behind(_)
        ));
    }

    #[test]
    fn acks_beyond_what_the_other_side_could_send_are_outside() {
        let mut w = established();
        // The server has sent 5001 (nothing after the SYN). The client allowed it 64256 bytes.
        assert_eq!(w.check(O, &seg(1001, Some(5001 + 100_000_000), 0, 502)), Window::Beyond(Why::AckAbove));
        assert_eq!(w.check(O, &seg(1001, Some(5001 + 64_257), 0, 502)), Window::Beyond(Why::AckAbove));
        // Acknowledging bytes the gateway never saw but the server may have sent: accepted, learned.
        assert_eq!(w.track(O, &seg(1001, Some(5001 + 1000), 0, 502)), Window::Accept);
        assert_eq!(w.end(R), Some(SeqNum::new(6001)));
        // An ACK older than the slack (66000) behind what the server sent: ignored.
        w.track(R, &seg(6001, Some(1001), 200_000, 256));
        assert_eq!(w.check(O, &seg(1001, Some(6001), 0, 502)), Window::Behind(Why::AckBelow));
    }

    #[test]
    fn rst_must_be_exact_and_in_the_window() {
        let mut w = established();
        w.track(R, &seg(5001, Some(1001), 100, 256));
        w.track(O, &seg(1001, Some(5101), 0, 502));
        // RCV.NXT of the client is 5101.
        assert_eq!(w.check(R, &rst(5101, None)), Window::Accept);
        assert_eq!(w.check(R, &rst(5102, None)), Window::RstNotExact);
        assert_eq!(w.check(R, &rst(5101 + 64_256, None)), Window::RstNotExact);
        assert_eq!(w.check(R, &rst(5101 + 64_257, None)), Window::Beyond(Why::SeqAbove));
        assert_eq!(w.check(R, &rst(5101u32.wrapping_sub(70_000), None)), Window::Beyond(Why::SeqBelow));
        // An RST with a sequence number but a wild ACK: the ACK does not matter (RFC 5961 §3).
        assert_eq!(w.check(R, &rst(5101, Some(7))), Window::Accept);
    }

    #[test]
    fn rst_answering_a_syn_must_acknowledge_it() {
        let mut w = TcpWindow::default();
        w.track(O, &syn(1000, None, 64240, None));
        assert_eq!(w.check(R, &rst(0, Some(1001))), Window::Accept);
        assert_eq!(w.check(R, &rst(0, Some(1002))), Window::Beyond(Why::Handshake));
        assert_eq!(w.check(R, &rst(0, None)), Window::Beyond(Why::Handshake));
        // The opener aborting its own SYN: its next sequence number.
        assert_eq!(w.check(O, &rst(1001, None)), Window::Accept);
        assert_eq!(w.check(O, &rst(77, None)), Window::RstNotExact);
    }

    #[test]
    fn syn_ack_must_acknowledge_the_syn_and_a_late_syn_is_ignored() {
        let mut w = TcpWindow::default();
        w.track(O, &syn(1000, None, 64240, Some(7)));
        assert_eq!(w.check(R, &syn(5000, Some(1002), 65160, Some(8))), Window::Beyond(Why::Handshake));
        // A new SYN with another ISN before the answer: starts over (RFC 9293 §3.10.7.2).
        assert_eq!(w.track(O, &syn(9000, None, 64240, Some(7))), Window::Accept);
        assert_eq!(w.check(R, &syn(5000, Some(1001), 65160, Some(8))), Window::Beyond(Why::Handshake));
        assert_eq!(w.track(R, &syn(5000, Some(9001), 65160, Some(8))), Window::Accept);
        // Once answered, a SYN with yet another ISN (blind, during the handshake) changes nothing; the
        // retransmission of the answered one is fine.
        assert_eq!(w.check(O, &syn(77, None, 64240, Some(7))), Window::Behind(Why::Unsynchronised));
        assert_eq!(w.check(O, &syn(9000, None, 64240, Some(7))), Window::Accept);
        let w = established();
        assert_eq!(w.check(O, &syn(1, None, 64240, None)), Window::Behind(Why::Unsynchronised));
        // The SYN-ACK retransmitted after the handshake: fine.
        assert_eq!(w.check(R, &syn(5000, Some(1001), 65160, Some(8))), Window::Accept);
    }

    #[test]
    fn a_reply_side_that_never_answered_the_syn_opens_nothing() {
        let mut w = TcpWindow::default();
        w.track(O, &syn(1000, None, 64240, None));
        assert_eq!(w.check(R, &seg(5001, Some(1001), 10, 100)), Window::Behind(Why::Unsynchronised));
    }

    #[test]
    fn picked_up_connections_learn_from_each_side() {
        let mut w = TcpWindow::loose();
        // The first segment seen, from the inside: data with a 502 window (really << 7).
        assert_eq!(w.track(O, &seg(70_000, Some(900_000), 100, 502)), Window::Accept);
        // The other side's first segment sets its numbers.
        assert_eq!(w.track(R, &seg(900_000, Some(70_100), 1400, 501)), Window::Accept);
        // With the shift unknown, 502 << 8 bounds the window at first: a real flight fits, and the
        // window grows with the flight the gateway sees (four times it).
        assert_eq!(w.track(R, &seg(900_000 + 60_000, Some(70_100), 1400, 501)), Window::Accept);
        assert_eq!(w.max_window(O), WinSize::new(4 * 61_400).get());
        let beyond = |seq: u32| w.check(R, &seg(seq, Some(70_100), 10, 501));
        assert_eq!(beyond(900_000 + 4 * 61_400 + 200), Window::Beyond(Why::SeqAbove));
        assert_eq!(beyond(900_000 + 10_000_000), Window::Beyond(Why::SeqAbove));
        // RSTs are still judged exactly: at the receiver's last acknowledgement or the sender's next.
        assert_eq!(w.check(O, &rst(70_099, None)), Window::RstNotExact);
        assert_eq!(w.check(O, &rst(70_100, None)), Window::Accept);
        assert_eq!(w.check(R, &rst(961_399, None)), Window::RstNotExact);
        assert_eq!(w.check(R, &rst(961_400, None)), Window::Accept, "the server's next byte");
        assert_eq!(w.check(R, &rst(900_000, None)), Window::Accept, "the client's last acknowledgement");
    }

    #[test]
    fn zero_window_probe_is_in_the_window() {
        let mut w = established();
        w.track(R, &seg(5001, Some(1001), 0, 0));
        assert_eq!(w.check(O, &seg(1001, Some(5001), 1, 502)), Window::Accept);
    }

    proptest! {
        /// A real sender never leaves the window: a random flight of segments (retransmissions, out of
        /// order, pure ACKs) within each side's advertised window is always accepted.
        #[test]
        fn real_flights_stay_inside(isn_c in any::<u32>(), isn_s in any::<u32>(),
                                   ops in proptest::collection::vec((any::<bool>(), 0u32..3000, 0u32..1460, any::<bool>()), 1..200)) {
            let mut w = TcpWindow::default();
            prop_assert_eq!(w.track(O, &syn(isn_c, None, 64240, Some(7))), Window::Accept);
            prop_assert_eq!(w.track(R, &syn(isn_s, Some(isn_c.wrapping_add(1)), 65160, Some(7))), Window::Accept);
            // Per side: the next byte it sends, and the highest ack it has sent (what it received).
            let mut snd = [isn_c.wrapping_add(1), isn_s.wrapping_add(1)];
            let mut rcv = [isn_s.wrapping_add(1), isn_c.wrapping_add(1)];
            prop_assert_eq!(w.track(O, &seg(snd[0], Some(rcv[0]), 0, 502)), Window::Accept);
            for (from_server, back, len, acknowledge) in ops {
                let (d, s, r) = if from_server { (R, 1, 0) } else { (O, 0, 1) };
                // Stay within 64000 bytes of what the peer acknowledged (its window is 502 << 7).
                let inflight = snd[s].wrapping_sub(rcv[r]);
                let len = if inflight + len > 64_000 { 0 } else { len };
                // New data, or a retransmission from up to `back` bytes behind, never below the peer's ack.
                let from = snd[s].wrapping_sub(back.min(inflight));
                let seq_len = if from == snd[s] { len } else { snd[s].wrapping_sub(from).min(1460) };
                let v = w.track(d, &seg(from, Some(rcv[s]), seq_len, 502));
                prop_assert_eq!(v, Window::Accept, "{:?}", w);
                if from == snd[s] {
                    snd[s] = snd[s].wrapping_add(len);
                }
                if acknowledge {
                    // The receiver acknowledges everything with a pure ACK.
                    rcv[r] = snd[s];
                    let back_d = if from_server { O } else { R };
                    prop_assert_eq!(w.track(back_d, &seg(snd[r], Some(rcv[r]), 0, 502)), Window::Accept, "{:?}", w);
                }
            }
        }

        /// The per-packet path is the general one, written once more for speed: for any segment
        /// (in, behind or beyond the window, blind or wrapped), on an established or a picked-up
        /// connection, it gives the same verdict and leaves the same state as `check` then `update`.
        #[test]
        fn fast_path_equals_check_and_update(loose in any::<bool>(), warm in proptest::collection::vec((any::<bool>(), -70_000i64..140_000, -70_000i64..140_000, 0u32..3000, any::<u16>()), 0..8),
                                             from_server in any::<bool>(), dseq in any::<i64>(), dack in any::<i64>(),
                                             near in any::<bool>(), len in 0u32..70_000, win in any::<u16>()) {
            let mut w = if loose { TcpWindow::loose() } else { established() };
            // Some traffic first (any verdict), so the state is not always the fixture's.
            let (c, sv) = (1001u32, 5001u32);
            for (srv, ds, da, l, wn) in warm {
                let (d, base_s, base_a) = if srv { (R, sv, c) } else { (O, c, sv) };
                let _ = w.track(d, &seg(base_s.wrapping_add(ds as u32), Some(base_a.wrapping_add(da as u32)), l, wn));
            }
            let (d, base_s, base_a) = if from_server { (R, sv, c) } else { (O, c, sv) };
            // Near the window half of the time, anywhere in the sequence space otherwise.
            let (seq, ack) = if near {
                (base_s.wrapping_add((dseq % 200_000) as u32), base_a.wrapping_add((dack % 200_000) as u32))
            } else {
                (dseq as u32, dack as u32)
            };
            let mut fast = w;
            let mut general = w;
            if let Some(v) = fast.track_established(d, Plain { seq: SeqNum::new(seq), ack: SeqNum::new(ack), len, win }) {
                let s = seg(seq, Some(ack), len, win);
                let v2 = general.check(d, &s);
                if v2 == Window::Accept {
                    general.update(d, &s);
                }
                prop_assert_eq!(v, v2);
                prop_assert_eq!(fast, general, "{:?}", w);
            } else {
                prop_assert_eq!(fast, w, "a declined fast path changes nothing");
            }
        }
    }
}
