//! One tracked connection, packed: what it is (keys, origin), its TCP state, its times and counters.
//!
//! Owns: the [`Conn`] record and its compact encodings. A gateway tracks a million of these, so each
//! byte counts (issue 7 budget: 128 B per flow, index and expiry queue included); what can be derived
//! from the keys and the origin (protocol, sides, the mapping held, the host counted against) is
//! derived, not stored. Must not: know about the table it sits in (the expiry queue's bookkeeping is
//! the table's) or edit packets.
//!
//! Precision: `created` and `expires` are exact (µs), so timeouts behave exactly as configured
//! (RFC 5382 REQ-5, RFC 4787 REQ-5). `last_seen` only feeds the `show flows` view: it is exact for the
//! first 17.9 minutes of a connection's life, then to the millisecond (12.4 days), then to the second
//! ([`Span`]). Counters saturate at 2^40 packets and 2^56 bytes per direction ([`Counts`]).

use std::net::Ipv4Addr;

use super::window::{Plain, TcpSeg, TcpWindow, Window};
use super::AlgConn;
use crate::config::Timeouts;
use crate::flow::{ConnId, Dir, Endpoint, FlowKey, Proto, Side};
use crate::time::Instant;

/// TCP connection state, coarse like a NAT needs it (RFC 5382 §5 distinguishes established from
/// transitory; closing states shorten the timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TcpState {
    SynSent,
    SynReceived,
    Established,
    /// A FIN went one way.
    FinWait,
    /// FINs went both ways: the mapping goes soon.
    Closed,
    /// An exact, in-window RST (RFC 5961 §3.2). RFC 7857 §2.2: the mapping stays for the transitory
    /// timeout (4 min) after the last packet, so its port is not handed to someone else at once; a new
    /// SYN on the same ports still reopens it (RFC 9293 §3.10.7.4).
    Reset,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynReceived => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::Closed => "CLOSE",
            TcpState::Reset => "RESET",
        }
    }
    const fn bits(self) -> u8 {
        self as u8
    }
    const fn from_bits(b: u8) -> TcpState {
        // A table rather than a match: read several times per TCP segment, this is one load.
        const BY_BITS: [TcpState; 8] = [
            TcpState::SynSent,
            TcpState::SynReceived,
            TcpState::Established,
            TcpState::FinWait,
            TcpState::Closed,
            TcpState::Reset,
            TcpState::Closed,
            TcpState::Closed,
        ];
        BY_BITS[(b & 0b111) as usize]
    }
}

/// How a connection came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Origin {
    /// An inside host opened it (source NAT).
    Outbound,
    /// An outside host opened it through a static forward (destination NAT).
    Forward,
    /// An inside host reached a forward through the public address (both translated).
    Hairpin,
    /// An outside host opened it through an ALG pinhole (an FTP data connection).
    Pinhole { control: ConnId },
}

impl Origin {
    const fn bits(self) -> u8 {
        match self {
            Origin::Outbound => 0,
            Origin::Forward => 1,
            Origin::Hairpin => 2,
            Origin::Pinhole { .. } => 3,
        }
    }

    /// The devices each direction's packets arrive on, indexed by [`Dir::index`]: fixed by how the
    /// connection was opened.
    const fn sides(self) -> [Side; 2] {
        match self {
            Origin::Outbound => [Side::Inside, Side::Outside],
            Origin::Hairpin => [Side::Inside, Side::Inside],
            Origin::Forward | Origin::Pinhole { .. } => [Side::Outside, Side::Inside],
        }
    }

    /// Stable lowercase name of the kind, as `show flows`, logs and `ftpnat events` print it.
    pub const fn name(self) -> &'static str {
        match self {
            Origin::Outbound => "outbound",
            Origin::Forward => "forward",
            Origin::Hairpin => "hairpin",
            Origin::Pinhole { .. } => "pinhole",
        }
    }

    /// The direction whose sender is the inside endpoint the connection belongs to: the opener of an
    /// outbound or hairpin connection, the answering server of a forwarded or pinholed one.
    const fn inside_dir(self) -> Dir {
        match self {
            Origin::Outbound | Origin::Hairpin => Dir::Original,
            Origin::Forward | Origin::Pinhole { .. } => Dir::Reply,
        }
    }
}

/// Bit layout of the low byte of `Conn.state`.
mod bits {
    /// TcpState, 3 bits.
    pub(super) const TCP: u64 = 0b111;
    /// A FIN seen in the original direction; the reply direction's is the next bit.
    pub(super) const FIN0: u64 = 1 << 3;
    pub(super) const REPLIED: u64 = 1 << 5;
    /// Origin kind, 2 bits.
    pub(super) const ORIGIN_SHIFT: u32 = 6;
    /// Creation time (µs) above the low byte: 56 bits, exact until 2^56 µs (year 2284 of a Unix-epoch
    /// clock; pcap timestamps are such a clock).
    pub(super) const CREATED_MAX: u64 = (1 << 56) - 1;
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Conn {
    /// Keys as each direction's sender writes them (before translation), indexed by [`Dir::index`].
    keys: [FlowKey; 2],
    /// The ALG's state and the stream editing it needs, for a connection an ALG watches.
    pub alg: Option<Box<AlgConn>>,
    expires: Instant,
    /// Creation time in µs (high 56 bits) and the small state in the low byte (see `bits`): TCP
    /// state, FINs seen, replied, origin kind. One word rather than two keeps `Conn` at 88 bytes.
    state: u64,
    /// `last_seen - created`.
    last_seen: Span,
    /// The control connection of a pinholed connection (`Origin::Pinhole`); slot 0 generation 0
    /// otherwise. With its generation: the control connection may end and its slot be reused first.
    control: ConnId,
    /// The generation of this connection's handle ([`ConnId::generation`]), given by the table.
    pub(super) generation: u32,
    /// Marks this connection's live entry in the table's expiry queue (the low 32 bits of its
    /// deadline in µs); written by the table only.
    pub(super) queued: u32,
    counts: Counts,
    /// TCP window tracking (issue 11); unused by UDP and ICMP.
    window: TcpWindow,
}

// The memory budget (issue 7, then issue 11's window tracking: 88 B + 24 B for `TcpWindow`, then issue 13's
// generational handles: the own generation and the control connection's, 4 B each). A regression shows at
// compile time, not in a benchmark.
const _: () = assert!(size_of::<TcpWindow>() <= 24);
const _: () = assert!(size_of::<Conn>() <= 120);
const _: () = assert!(size_of::<Option<Conn>>() <= 120);

impl Conn {
    /// A connection whose `orig` key opened it and whose answers will come as `reply`. The devices each
    /// direction arrives on, the inside endpoint whose mapping it holds and the host it counts against
    /// all follow from `origin` and the keys.
    pub fn new(orig: FlowKey, reply: FlowKey, origin: Origin, now: Instant) -> Conn {
        let control = match origin {
            Origin::Pinhole { control } => control,
            _ => ConnId::new(0, 0),
        };
        let created = now.as_micros().min(bits::CREATED_MAX);
        Conn {
            keys: [orig, reply],
            alg: None,
            expires: now,
            state: created << 8
                | u64::from(origin.bits()) << bits::ORIGIN_SHIFT
                | u64::from(TcpState::SynSent.bits()),
            last_seen: Span::ZERO,
            control,
            generation: 0,
            queued: 0,
            counts: Counts::default(),
            window: TcpWindow::default(),
        }
    }

    pub fn keys(&self) -> &[FlowKey; 2] {
        &self.keys
    }

    pub fn key(&self, d: Dir) -> FlowKey {
        self.keys[d.index()]
    }

    /// Both keys carry the same protocol.
    pub fn proto(&self) -> Proto {
        self.keys[0].proto
    }

    /// [`Origin::bits`] of the origin.
    fn kind(&self) -> usize {
        ((self.state >> bits::ORIGIN_SHIFT) & 0b11) as usize
    }

    pub fn origin(&self) -> Origin {
        match self.kind() {
            0 => Origin::Outbound,
            1 => Origin::Forward,
            2 => Origin::Hairpin,
            _ => Origin::Pinhole { control: self.control },
        }
    }

    /// What a packet travelling in `d` looks like after translation: it leaves addressed like the
    /// reverse of the other direction's key.
    pub fn translated(&self, d: Dir) -> FlowKey {
        self.keys[d.reverse().index()].reversed()
    }

    /// The side a packet travelling in `d` arrives on.
    pub fn side(&self, d: Dir) -> Side {
        // By origin kind, without building the `Origin` (this runs for every packet).
        const SIDES: [[Side; 2]; 4] = [
            Origin::Outbound.sides(),
            Origin::Forward.sides(),
            Origin::Hairpin.sides(),
            Origin::Pinhole { control: ConnId::new(0, 0) }.sides(),
        ];
        SIDES[self.kind()][d.index()]
    }

    /// The side a packet travelling in `d` leaves by.
    pub fn egress(&self, d: Dir) -> Side {
        self.side(d.reverse())
    }

    /// The inside endpoint whose mapping (outside port) this connection holds a reference on: the
    /// source NAT'd opener, or the inside end of a pinhole. A forward's port is reserved by
    /// configuration, so forwarded connections hold none.
    pub fn mapping(&self) -> Option<Endpoint> {
        match self.origin() {
            Origin::Forward => None,
            o => Some(self.keys[o.inside_dir().index()].src),
        }
    }

    /// The inside host this connection counts against (per-host limit).
    pub fn host(&self) -> Ipv4Addr {
        self.keys[self.origin().inside_dir().index()].src.addr
    }

    pub fn tcp(&self) -> TcpState {
        TcpState::from_bits((self.state & bits::TCP) as u8)
    }

    fn set_tcp(&mut self, s: TcpState) {
        self.state = (self.state & !bits::TCP) | u64::from(s.bits());
    }

    fn fin_seen(&self, d: Dir) -> bool {
        self.state & (bits::FIN0 << d.index()) != 0
    }

    /// True once a packet went in the reply direction.
    pub fn replied(&self) -> bool {
        self.state & bits::REPLIED != 0
    }

    pub fn created(&self) -> Instant {
        Instant::from_micros(self.state >> 8)
    }

    /// When the last packet went either way (see the module header for its precision).
    pub fn last_seen(&self) -> Instant {
        self.created() + self.last_seen.get()
    }

    pub fn expires(&self) -> Instant {
        self.expires
    }

    /// Sets the expiry of a connection not yet in a table; once inserted, [`super::Table::set_expiry`]
    /// moves it (the table's expiry queue must see an earlier deadline).
    pub fn set_expires(&mut self, at: Instant) {
        self.expires = at;
    }

    /// Packets each way, indexed by [`Dir::index`] (saturating at 2^40).
    pub fn packets(&self) -> [u64; 2] {
        [0, 1].map(|d| self.counts.packets(d))
    }

    /// Bytes each way, indexed by [`Dir::index`] (saturating at 2^56).
    pub fn bytes(&self) -> [u64; 2] {
        [0, 1].map(|d| self.counts.bytes(d))
    }

    /// Records a packet of `len` bytes travelling in `d` at `now`.
    #[inline]
    pub fn seen(&mut self, d: Dir, len: usize, now: Instant) {
        self.last_seen = Span::from_micros(now.as_micros().saturating_sub(self.state >> 8));
        self.counts.add(d.index(), len);
        if d == Dir::Reply {
            self.state |= bits::REPLIED;
        }
    }

    /// Tracks a TCP segment travelling in `d`: its window check first ([`TcpWindow`]); only a segment in
    /// the window (for an RST: exact) changes the state. Returns the window's verdict.
    #[inline]
    pub fn track_tcp(&mut self, d: Dir, seg: &TcpSeg) -> Window {
        let v = self.window.track(d, seg);
        if v != Window::Accept {
            return v;
        }
        if !(seg.fin || seg.syn || seg.rst) && self.tcp() == TcpState::Established {
            // The per-packet case: nothing moves.
            return v;
        }
        if seg.rst {
            if self.tcp() != TcpState::Closed {
                self.set_tcp(TcpState::Reset);
            }
            return v;
        }
        if seg.fin {
            self.state |= bits::FIN0 << d.index();
        }
        let (syn, ack) = (seg.syn, seg.ack.is_some());
        let next = match (self.tcp(), d) {
            _ if self.fin_seen(Dir::Original) && self.fin_seen(Dir::Reply) => TcpState::Closed,
            _ if seg.fin => TcpState::FinWait,
            (TcpState::SynSent, Dir::Reply) if syn && ack => TcpState::SynReceived,
            (TcpState::SynReceived, Dir::Original) if ack && !syn => TcpState::Established,
            (s, _) => s,
        };
        self.set_tcp(next);
        v
    }

    /// [`Conn::track_tcp`] for the per-packet case: a segment with ACK and no SYN, RST or FIN (`len`:
    /// its payload) of an established connection (or one whose handshake this ACK completes). `None`
    /// when that does not apply: call [`Conn::track_tcp`].
    #[inline(always)]
    pub fn track_tcp_plain(&mut self, d: Dir, p: Plain) -> Option<Window> {
        let state = self.tcp();
        if !matches!(state, TcpState::Established | TcpState::SynReceived) {
            return None;
        }
        let v = self.window.track_established(d, p)?;
        if v == Window::Accept && state == TcpState::SynReceived && d == Dir::Original {
            self.set_tcp(TcpState::Established);
        }
        Some(v)
    }

    /// The window state (read-only: what a segment would be judged, without tracking it).
    pub fn window(&self) -> &TcpWindow {
        &self.window
    }

    /// True once both sides have spoken: a packet went each way. (The original direction is nearly
    /// always first; a connection picked up from an inside server's side starts with a reply.)
    #[inline]
    pub fn answered(&self) -> bool {
        self.replied() && self.counts.packets(Dir::Original.index()) != 0
    }

    /// The idle timeout for the connection's state. Until both sides have spoken, a flow holds its
    /// mapping only for the short `*_unreplied` timeout (never longer than its state's own): unanswered
    /// SYNs, bare ACKs picked up from the inside and datagrams nobody answers give their public ports
    /// back within a minute (issue 12; Linux conntrack: 30 s unreplied UDP, 120 s SYN_SENT).
    pub fn timeout(&self, t: &Timeouts) -> core::time::Duration {
        match self.proto() {
            Proto::Tcp => {
                let d = match self.tcp() {
                    TcpState::Established => t.tcp_established,
                    TcpState::Closed => t.tcp_closed,
                    // RFC 7857 §2.2: after an RST, about 4 minutes.
                    TcpState::Reset => t.tcp_transitory,
                    TcpState::SynSent | TcpState::SynReceived | TcpState::FinWait => t.tcp_transitory,
                };
                if self.answered() {
                    d
                } else {
                    d.min(t.tcp_unreplied)
                }
            }
            Proto::Udp if self.answered() => t.udp,
            Proto::Udp => t.udp.min(t.udp_unreplied),
            Proto::Icmp => t.icmp,
        }
    }

    /// A TCP connection picked up mid-stream (Linux conntrack's "loose" pickup) is treated as
    /// established: the gateway restarted under it. Its window is learned from what each side sends.
    /// It is not answered yet: until the other side speaks it keeps the short unreplied timeout (a bare
    /// ACK from inside must not hold a port for two hours).
    pub fn mark_established(&mut self) {
        self.set_tcp(TcpState::Established);
        self.window = TcpWindow::loose();
    }
}

/// The decoded fields, not the packed words.
impl core::fmt::Debug for Conn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Conn")
            .field("keys", &self.keys)
            .field("origin", &self.origin())
            .field("tcp", &self.tcp())
            .field("fin_seen", &[self.fin_seen(Dir::Original), self.fin_seen(Dir::Reply)])
            .field("replied", &self.replied())
            .field("created", &self.created())
            .field("last_seen", &self.last_seen())
            .field("expires", &self.expires)
            .field("packets", &self.packets())
            .field("bytes", &self.bytes())
            .field("window", &self.window)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A duration in 32 bits, rounded down: µs below 2^30 µs (17.9 min), ms below 2^30 ms (12.4 days),
/// whole seconds beyond (saturating at 2^30 s, 34 years). The top two bits say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Span(u32);

impl Span {
    const ZERO: Span = Span(0);
    const MANTISSA: u64 = (1 << 30) - 1;
    const UNIT_US: [u64; 3] = [1, 1_000, 1_000_000];

    #[inline]
    fn from_micros(us: u64) -> Span {
        if us <= Self::MANTISSA {
            // Every packet of a connection's first 17.9 minutes: no division.
            return Span(us as u32);
        }
        let unit = Self::UNIT_US.iter().position(|u| us / u <= Self::MANTISSA).unwrap_or(2);
        Span((unit as u32) << 30 | (us / Self::UNIT_US[unit]).min(Self::MANTISSA) as u32)
    }

    fn get(self) -> core::time::Duration {
        let unit = Self::UNIT_US[(self.0 >> 30).min(2) as usize];
        core::time::Duration::from_micros((u64::from(self.0) & Self::MANTISSA) * unit)
    }
}

/// Packet and byte counts of both directions in 24 bytes, both saturating: 40-bit packets (12.7 days
/// of one flow at 1 Mpps) and 56-bit bytes (18 years at 1 Gbit/s). Each direction's word holds its
/// bytes below its packets' high 8 bits, so a packet costs one increment and one add, no carries
/// between words except once per 2^32 packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Counts {
    packets_lo: [u32; 2],
    wide: [u64; 2],
}

impl Counts {
    #[cfg(test)]
    const PACKETS_MAX: u64 = (1 << 40) - 1;
    const BYTES_MAX: u64 = (1 << 56) - 1;

    fn packets(&self, d: usize) -> u64 {
        (self.wide[d] >> 56) << 32 | u64::from(self.packets_lo[d])
    }

    fn bytes(&self, d: usize) -> u64 {
        self.wide[d] & Self::BYTES_MAX
    }

    #[inline]
    fn add(&mut self, d: usize, len: usize) {
        let w = &mut self.wide[d];
        match self.packets_lo[d].checked_add(1) {
            Some(p) => self.packets_lo[d] = p,
            // Carry into the high byte, unless that is full too: then stay at the maximum.
            None if *w >> 56 != 0xff => {
                *w += 1 << 56;
                self.packets_lo[d] = 0;
            }
            None => {}
        }
        let b = (*w & Self::BYTES_MAX).saturating_add(len as u64).min(Self::BYTES_MAX);
        *w = (*w & !Self::BYTES_MAX) | b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SeqNum;
    use core::time::Duration;

    const LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    fn ep(a: Ipv4Addr, p: u16) -> Endpoint {
        Endpoint::new(a, p)
    }

    #[test]
    fn derived_fields_are_what_the_engine_used_to_store() {
        let k = |s, d| FlowKey::new(Proto::Tcp, s, d);
        // Outbound: the opener's endpoint is mapped and counted.
        let c = Conn::new(
            k(ep(LAN, 1000), ep(REMOTE, 80)),
            k(ep(REMOTE, 80), ep(PUBLIC, 1000)),
            Origin::Outbound,
            Instant::ZERO,
        );
        assert_eq!((c.mapping(), c.host()), (Some(ep(LAN, 1000)), LAN));
        assert_eq!([c.side(Dir::Original), c.side(Dir::Reply)], [Side::Inside, Side::Outside]);
        // Forward: the server counts, no mapping (the forward's port is reserved by configuration).
        let c = Conn::new(
            k(ep(REMOTE, 5), ep(PUBLIC, 2121)),
            k(ep(LAN, 21), ep(REMOTE, 5)),
            Origin::Forward,
            Instant::ZERO,
        );
        assert_eq!((c.mapping(), c.host()), (None, LAN));
        assert_eq!([c.side(Dir::Original), c.side(Dir::Reply)], [Side::Outside, Side::Inside]);
        // Hairpin: the inside client is mapped and counted, both directions arrive inside.
        let other = Ipv4Addr::new(10, 0, 0, 5);
        let c = Conn::new(
            k(ep(LAN, 7), ep(PUBLIC, 2121)),
            k(ep(other, 21), ep(PUBLIC, 7)),
            Origin::Hairpin,
            Instant::ZERO,
        );
        assert_eq!((c.mapping(), c.host()), (Some(ep(LAN, 7)), LAN));
        assert_eq!([c.side(Dir::Original), c.side(Dir::Reply)], [Side::Inside, Side::Inside]);
        // Pinhole: the inside end of the data connection holds the pinhole's mapping.
        let pin = Origin::Pinhole { control: ConnId::new(42, 7) };
        let c = Conn::new(
            k(ep(REMOTE, 20), ep(PUBLIC, 50000)),
            k(ep(LAN, 40000), ep(REMOTE, 20)),
            pin,
            Instant::ZERO,
        );
        assert_eq!((c.mapping(), c.host()), (Some(ep(LAN, 40000)), LAN));
        assert_eq!(c.origin(), pin);
        assert_eq!([c.egress(Dir::Original), c.egress(Dir::Reply)], [Side::Inside, Side::Outside]);
        assert_eq!(c.proto(), Proto::Tcp);
    }

    #[test]
    fn state_bits_do_not_disturb_each_other() {
        let k = FlowKey::new(Proto::Tcp, ep(LAN, 1), ep(REMOTE, 2));
        let t0 = Instant::from_secs(1_700_000_000); // a pcap-like Unix time
        let mut c =
            Conn::new(k, k.reversed(), Origin::Pinhole { control: ConnId::new(u32::MAX, u32::MAX) }, t0);
        c.mark_established();
        c.state &= !bits::REPLIED;
        let fin = |seq, ack| TcpSeg {
            seq: SeqNum::new(seq),
            ack: Some(SeqNum::new(ack)),
            len: 1,
            win: 1000,
            syn: false,
            fin: true,
            rst: false,
            wscale: None,
        };
        c.track_tcp(Dir::Original, &fin(10, 50));
        assert_eq!((c.tcp(), c.replied()), (TcpState::FinWait, false));
        c.seen(Dir::Reply, 40, t0 + Duration::from_micros(3));
        c.track_tcp(Dir::Reply, &fin(50, 11));
        assert_eq!((c.tcp(), c.replied()), (TcpState::Closed, true));
        assert_eq!(c.origin(), Origin::Pinhole { control: ConnId::new(u32::MAX, u32::MAX) });
        assert_eq!((c.created(), c.last_seen()), (t0, t0 + Duration::from_micros(3)));
    }

    #[test]
    fn last_seen_is_exact_then_coarser_never_wrapping() {
        let t0 = Instant::from_micros(12_345);
        let k = FlowKey::new(Proto::Udp, ep(LAN, 1), ep(REMOTE, 2));
        let mut c = Conn::new(k, k.reversed(), Origin::Outbound, t0);
        let at = |c: &mut Conn, d: Duration| {
            c.seen(Dir::Original, 1, t0 + d);
            c.last_seen().saturating_since(t0)
        };
        // Exact to the µs for the first 2^30 µs (17.9 min).
        let d = Duration::from_micros((1 << 30) - 1);
        assert_eq!(at(&mut c, d), d);
        // Then to the ms (rounded down, so idle time never reads short), up to 2^30 ms (12.4 days).
        assert_eq!(at(&mut c, Duration::from_micros(1_073_743_999)), Duration::from_millis(1_073_743));
        assert_eq!(
            at(&mut c, Duration::from_secs(7440) + Duration::from_micros(5)),
            Duration::from_secs(7440)
        );
        // Then to the second; far beyond 34 years it saturates instead of wrapping to a young age.
        assert_eq!(at(&mut c, Duration::from_millis(1_073_743_324)), Duration::from_secs(1_073_743));
        assert_eq!(at(&mut c, Duration::from_secs(1 << 40)), Duration::from_secs((1 << 30) - 1));
        c.seen(Dir::Original, 1, Instant::MAX);
        assert!(c.last_seen() >= t0 + Duration::from_secs((1 << 30) - 1));
        // A clock that went backwards reads as "just now", not as a huge age.
        c.seen(Dir::Original, 1, Instant::ZERO);
        assert_eq!(c.last_seen(), t0);
    }

    #[test]
    fn creation_time_saturates_past_2_pow_56_us() {
        let k = FlowKey::new(Proto::Udp, ep(LAN, 1), ep(REMOTE, 2));
        let c = Conn::new(k, k.reversed(), Origin::Hairpin, Instant::MAX);
        assert_eq!(c.created(), Instant::from_micros((1 << 56) - 1));
        assert_eq!((c.origin(), c.tcp(), c.replied()), (Origin::Hairpin, TcpState::SynSent, false));
    }

    #[test]
    fn the_long_timeout_waits_until_both_sides_have_spoken() {
        let t = Timeouts::default();
        let (a, b) = (ep(LAN, 5000), ep(REMOTE, 53));
        // UDP: unanswered datagrams keep the mapping 30 s, an answer gives the 5 minutes.
        let k = FlowKey::new(Proto::Udp, a, b);
        let mut c = Conn::new(k, k.reversed(), Origin::Outbound, Instant::ZERO);
        c.seen(Dir::Original, 60, Instant::ZERO);
        assert_eq!(c.timeout(&t), Duration::from_secs(30));
        c.seen(Dir::Original, 60, Instant::from_secs(1));
        assert_eq!(c.timeout(&t), Duration::from_secs(30), "however many the inside host sends");
        c.seen(Dir::Reply, 60, Instant::from_secs(2));
        assert_eq!(c.timeout(&t), t.udp);
        // Never longer than the answered timeout, whatever the operator set.
        let short = Timeouts { udp: Duration::from_secs(10), ..t };
        let mut c = Conn::new(k, k.reversed(), Origin::Outbound, Instant::ZERO);
        c.seen(Dir::Original, 60, Instant::ZERO);
        assert_eq!(c.timeout(&short), Duration::from_secs(10));
        // TCP picked up from a bare ACK: established, but short until the remote answers.
        let k = FlowKey::new(Proto::Tcp, a, b);
        let mut c = Conn::new(k, k.reversed(), Origin::Outbound, Instant::ZERO);
        c.mark_established();
        c.seen(Dir::Original, 40, Instant::ZERO);
        assert_eq!((c.tcp(), c.timeout(&t)), (TcpState::Established, t.tcp_unreplied));
        c.seen(Dir::Reply, 40, Instant::ZERO);
        assert_eq!(c.timeout(&t), t.tcp_established);
        // A connection picked up from a forwarded inside server's side: the server spoke first (the
        // reply direction); the outside client has not yet.
        let k = FlowKey::new(Proto::Tcp, b, ep(PUBLIC, 2121));
        let mut c = Conn::new(k, FlowKey::new(Proto::Tcp, a, b), Origin::Forward, Instant::ZERO);
        c.mark_established();
        c.seen(Dir::Reply, 40, Instant::ZERO);
        assert!(c.replied() && !c.answered());
        assert_eq!(c.timeout(&t), t.tcp_unreplied);
        c.seen(Dir::Original, 40, Instant::ZERO);
        assert_eq!(c.timeout(&t), t.tcp_established);
        // A closed connection keeps its short closing timeout either way.
        let mut c = Conn::new(FlowKey::new(Proto::Tcp, a, b), k, Origin::Outbound, Instant::ZERO);
        c.seen(Dir::Original, 40, Instant::ZERO);
        c.set_tcp(TcpState::Closed);
        assert_eq!(c.timeout(&t), t.tcp_closed);
    }

    #[test]
    fn counters_saturate() {
        let mut n = Counts::default();
        n.add(0, 1500);
        n.add(0, 40);
        n.add(1, 7);
        assert_eq!((n.packets(0), n.bytes(0), n.packets(1), n.bytes(1)), (2, 1540, 1, 7));
        // Carries across the 32-bit packet word; bytes do not spill into the packets' byte.
        let mut n = Counts { packets_lo: [u32::MAX, 0], wide: [Counts::BYTES_MAX - 10, 0] };
        n.add(0, 100);
        assert_eq!((n.packets(0), n.bytes(0)), (1 << 32, Counts::BYTES_MAX));
        // At the top they stay put.
        let mut n = Counts { packets_lo: [u32::MAX; 2], wide: [u64::MAX; 2] };
        assert_eq!((n.packets(1), n.bytes(1)), (Counts::PACKETS_MAX, Counts::BYTES_MAX));
        n.add(1, usize::MAX);
        assert_eq!((n.packets(1), n.bytes(1)), (Counts::PACKETS_MAX, Counts::BYTES_MAX));
        assert_eq!((n.packets(0), n.bytes(0)), (Counts::PACKETS_MAX, Counts::BYTES_MAX));
    }
}
