//! The model: what the gateway must do, from the input alone (part of the replay checker, see `mod.rs`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Pass,
    Drop(&'static str),
    Either(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Port,
    Eprt,
    P227,
    P229,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Must be rewritten to the public address; a pinhole leads to `inside` for a SYN from `peer`.
    Rewrite { inside: (Ipv4Addr, u16), peer: Ipv4Addr },
    /// Must be left byte-identical, no pinhole.
    Refuse(&'static str),
    /// The model cannot tell (odd syntax, lost sync): either is accepted, but a rewrite must still be a
    /// correct one.
    Either(&'static str),
}

#[derive(Clone, Debug)]
pub struct Announcement {
    /// The control connection's LAN→WAN direction.
    pub flow: Flow,
    /// First payload sequence number of that direction (tells reused 4-tuples apart).
    pub isn: u32,
    /// Offset of the line's first byte in the recorded LAN→WAN stream.
    pub at: usize,
    pub line: Vec<u8>,
    /// Byte range within `line` the gateway may replace.
    pub span: Range<usize>,
    pub kind: Kind,
    pub judgement: Judgement,
    pub ts: u64,
    /// The server answered the PORT/EPRT with a non-2xx reply: its pinhole is gone.
    pub refused_by_server: bool,
}

#[derive(Clone, Debug)]
pub(super) struct ConnState {
    /// Sequence number of the SYN that opened it, if seen.
    pub(super) syn: Option<u32>,
    pub(super) last: u64,
    pub(super) closed: bool,
    pub(super) fins: [bool; 2],
    /// The flow of the packet that created it.
    pub(super) orig: Flow,
    /// Per direction (0: `orig`'s): the sequence number after the highest byte its sender used (SYN
    /// and FIN count), and the highest acknowledgement it sent, as far as the recording shows.
    pub(super) next: [Option<u32>; 2],
    pub(super) acked: [Option<u32>; 2],
}

/// The largest window TCP can advertise (RFC 7323 §2.3: 2^30 with the largest scale). A segment
/// starting further beyond what its receiver acknowledged, or acknowledging further beyond what the
/// other side sent, comes from no real sender: the gateway drops it, whatever the windows really were.
pub(super) const MAX_WINDOW: i64 = 1 << 30;

pub(super) fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl ConnState {
    /// Why the segment is beyond any window the connection can have (`None`: it may be in it).
    fn beyond(&self, d: usize, t: &Tcp) -> Option<&'static str> {
        if self.acked[1 - d].is_some_and(|a| seq_diff(t.seq, a) > MAX_WINDOW) {
            return Some("sequence number beyond any window (off-path injection)");
        }
        if t.ackf && !t.rst && self.next[1 - d].is_some_and(|n| seq_diff(t.ack, n) > MAX_WINDOW) {
            return Some("acknowledges bytes the other side never sent (off-path injection)");
        }
        None
    }

    /// An RST closes the connection only at a sequence number a real peer's RST carries (RFC 5961
    /// §3.2): the receiver's next expected byte or the sender's own next one. Unknown numbers: it may.
    fn rst_exact(&self, d: usize, t: &Tcp) -> bool {
        match (self.acked[1 - d], self.next[d]) {
            (None, _) | (_, None) => true,
            (Some(a), Some(n)) => t.seq == a || t.seq == n,
        }
    }

    /// Learns what an accepted segment shows of both directions' numbers.
    fn learn(&mut self, d: usize, t: &Tcp) {
        let end = t.seq.wrapping_add(t.payload.len() as u32 + u32::from(t.syn) + u32::from(t.fin));
        let later = |old: Option<u32>, new: u32| {
            Some(old.map_or(new, |o| if seq_diff(new, o) > 0 { new } else { o }))
        };
        if !t.rst {
            self.next[d] = later(self.next[d], end);
        }
        if t.ackf && !t.rst {
            self.acked[d] = later(self.acked[d], t.ack);
            // Acknowledged bytes the recording lacks went another way: the other side sent them.
            self.next[1 - d] = later(self.next[1 - d], t.ack);
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Pinhole {
    pub(super) inside: (Ipv4Addr, u16),
    pub(super) peer: Ipv4Addr,
    pub(super) expires: u64,
    pub(super) control: Flow,
}

#[derive(Clone, Debug, Default)]
pub(super) struct DirState {
    pub(super) isn: Option<u32>,
    pub(super) next: usize,
    pub(super) synced: bool,
    pub(super) line: Vec<u8>,
    pub(super) line_at: usize,
    /// TLS record walk: Some((header bytes seen, header, body bytes left)).
    pub(super) tls: Option<(usize, [u8; 5], usize)>,
    /// Stream offsets walked as TLS records since the last export.
    pub(super) opaque: Vec<Range<usize>>,
    /// A gap in a TLS record stream: the walk cannot find its place again; nothing is parsed.
    pub(super) dead: bool,
    /// The sender's FIN was counted (it takes one sequence number).
    pub(super) fin: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Control {
    /// Client→server flow.
    pub(super) c2s: Flow,
    /// The inside side announces (client inside: PORT/EPRT; server inside: 227/229).
    pub(super) client_inside: bool,
    pub(super) dirs: [DirState; 2],
    pub(super) pending: VecDeque<&'static str>,
    pub(super) multiline: Option<Vec<u8>>,
    /// Pinholes this connection opened (keys into the pinhole table), oldest first.
    pub(super) opened: VecDeque<(Ipv4Addr, u16)>,
    /// PORT/EPRT awaiting their reply: the pinhole they opened.
    pub(super) port_pending: VecDeque<Option<((Ipv4Addr, u16), usize)>>,
    /// The ALG is attached to this connection (created from a SYN or pickup matching the policy).
    pub(super) alg: bool,
    /// The server's greeting (RFC 959 §5.4) was seen, or the connection was picked up mid-stream.
    pub(super) greeted: bool,
    /// A line showed the connection is not FTP: nothing after it may be rewritten.
    pub(super) not_ftp: bool,
}

/// An inbound opening that was refused: the remote and the public port it was sent to, when last seen,
/// and whether the refusal was certain (a SYN the model judged `Either` may or may not have been).
#[derive(Clone, Copy, Debug)]
pub(super) struct Refusal {
    pub(super) last: u64,
    pub(super) certain: bool,
}

/// How long the gateway remembers a refused opening after its last packet (`conntrack::refused::HOLD`,
/// restated here: the model shares no code with the crate).
pub(super) const REFUSED_HOLD_US: u64 = 120_000_000;

pub struct Model {
    pub setup: Setup,
    /// Per input packet (index into the capture's `pkts`).
    pub expect: Vec<Expect>,
    pub announcements: Vec<Announcement>,
    /// Control connections (client→server flows) the ALG must watch.
    pub controls: Vec<Flow>,
    /// Per control direction (flow, first sequence number): stream ranges that were TLS records.
    pub opaque: HashMap<(Flow, u32), Vec<Range<usize>>>,
    /// Per control direction (flow, first sequence number): stream ranges the model framed in order,
    /// which the gateway must deliver (a gap never stalls what comes after it).
    pub framed: HashMap<(Flow, u32), Vec<Range<usize>>>,
    pub notes: Vec<String>,
}

pub(super) const PINHOLE_TIMEOUT_US: u64 = 60_000_000;
pub(super) const TRANSITORY_US: u64 = 240_000_000;
pub(super) const MAX_PINHOLES_PER_CONN: usize = 8;
pub(super) const MAX_LINE: usize = 500;

pub(super) fn canon(f: Flow) -> (Flow, usize) {
    if f.src <= f.dst {
        (f, 0)
    } else {
        (f.rev(), 1)
    }
}

impl Model {
    pub fn build(setup: &Setup, pkts: &[Pkt]) -> Model {
        let mut m = Model {
            setup: setup.clone(),
            expect: Vec::with_capacity(pkts.len()),
            announcements: Vec::new(),
            controls: Vec::new(),
            opaque: HashMap::new(),
            framed: HashMap::new(),
            notes: Vec::new(),
        };
        let mut conns: HashMap<Flow, ConnState> = HashMap::new();
        let mut pinholes: HashMap<(Ipv4Addr, u16), Pinhole> = HashMap::new();
        let mut controls: HashMap<Flow, Control> = HashMap::new();
        let mut refused: HashMap<((IpAddr, u16), u16), Refusal> = HashMap::new();
        for p in pkts {
            let mut e = m.judge_packet(p, &mut conns, &mut pinholes, &mut controls, &mut refused);
            m.note_refusal(p, &e, &mut refused);
            if p.tcp.is_some() && !p.v6 {
                if let Some(o) = m.feed_control(p, &e, &mut controls, &mut pinholes) {
                    e = o;
                }
            }
            m.expect.push(e);
        }
        m.controls = controls.keys().copied().collect();
        m
    }

    /// A refused inbound opening is remembered: the inside host's answers to it open nothing.
    fn note_refusal(&self, p: &Pkt, e: &Expect, refused: &mut HashMap<((IpAddr, u16), u16), Refusal>) {
        let syn = p.tcp.as_ref().is_some_and(|t| t.syn && !t.ackf);
        if p.v6 || self.setup.is_inside(p.src) || !syn {
            return;
        }
        let key = ((p.src, p.sport), p.dport);
        match e {
            Expect::Drop(_) => {
                refused.insert(key, Refusal { last: p.ts, certain: true });
            }
            Expect::Either(_) => {
                let certain = refused.get(&key).is_some_and(|r| r.certain);
                refused.insert(key, Refusal { last: p.ts, certain });
            }
            Expect::Pass => {}
        }
    }

    fn lookup(conns: &mut HashMap<Flow, ConnState>, f: Flow) -> Option<&mut ConnState> {
        let (k, _) = canon(f);
        conns.get_mut(&k)
    }

    fn judge_packet(
        &mut self,
        p: &Pkt,
        conns: &mut HashMap<Flow, ConnState>,
        pinholes: &mut HashMap<(Ipv4Addr, u16), Pinhole>,
        controls: &mut HashMap<Flow, Control>,
        refused: &mut HashMap<((IpAddr, u16), u16), Refusal>,
    ) -> Expect {
        if p.v6 {
            return if p.ttl <= 1 { Expect::Drop("hop limit") } else { Expect::Pass };
        }
        let lan = self.setup.is_inside(p.src);
        if p.ttl <= 1 {
            return Expect::Drop("ttl");
        }
        if p.fragment {
            return Expect::Either("fragment");
        }
        if !matches!(p.proto, 1 | 6 | 17) {
            return if lan { Expect::Either("protocol") } else { Expect::Drop("protocol") };
        }
        if p.proto == 1 && !matches!(p.icmp_type, Some(0 | 8)) {
            return Expect::Either("icmp error");
        }
        let f = p.key();
        let ts = p.ts;
        let tcp = p.tcp.clone().unwrap_or_default();
        let new_syn = p.proto == 6 && tcp.syn && !tcp.ackf;
        if new_syn && Self::lookup(conns, f).is_some_and(|c| c.syn.is_some_and(|s| s != tcp.seq) && c.closed)
        {
            // The 4-tuple is reused by a new connection (the old one closed).
            conns.remove(&canon(f).0);
            controls.remove(&f);
        }
        if let Some(c) = Self::lookup(conns, f) {
            let d = usize::from(f != c.orig);
            if p.proto == 6 && !c.closed {
                // Off-path injection: dropped, and it changes nothing (no close, no refresh).
                if let Some(why) = c.beyond(d, &tcp) {
                    return Expect::Drop(why);
                }
            }
            let stale = ts.saturating_sub(c.last) > TRANSITORY_US;
            let was_closed = c.closed;
            c.last = ts;
            if p.proto == 6 {
                if tcp.rst && c.rst_exact(d, &tcp) {
                    c.closed = true;
                }
                c.learn(d, &tcp);
                if tcp.fin {
                    let d = usize::from(f != c.orig);
                    c.fins[d] = true;
                    if c.fins[0] && c.fins[1] {
                        c.closed = true;
                    }
                }
            }
            if was_closed {
                return Expect::Either("closed connection");
            }
            if stale {
                return Expect::Either("idle connection");
            }
            return Expect::Pass;
        }
        let mut new = ConnState {
            syn: new_syn.then_some(tcp.seq),
            last: ts,
            closed: tcp.rst,
            fins: [tcp.fin, false],
            orig: f,
            next: [None; 2],
            acked: [None; 2],
        };
        if p.proto == 6 {
            new.learn(0, &tcp);
        }
        if lan {
            if p.proto == 6 {
                let key = ((f.dst.0, f.dst.1), f.src.1);
                if new_syn {
                    refused.remove(&key);
                } else if let Some(r) = refused.get_mut(&key) {
                    if ts.saturating_sub(r.last) <= REFUSED_HOLD_US {
                        r.last = ts;
                        return if r.certain {
                            Expect::Drop("answer to a refused inbound opening")
                        } else {
                            Expect::Either("answer to an inbound opening that may have been refused")
                        };
                    }
                    if ts.saturating_sub(r.last) < REFUSED_HOLD_US + 1_000_000 {
                        return Expect::Either("answer to a refused opening, around the end of its memory");
                    }
                }
            }
            if p.proto == 6 && tcp.rst {
                return Expect::Drop("inside RST creates no mapping");
            }
            if p.proto == 6 && tcp.syn && tcp.ackf {
                return Expect::Drop("inside SYN-ACK creates no mapping");
            }
            if p.proto == 1 && p.icmp_type != Some(8) {
                return Expect::Drop("echo reply without request");
            }
            if p.proto == 6 {
                let dport = f.dst.1;
                if self.setup.ftp_ports.contains(&dport) {
                    let mut c = Control::new(f, true, true);
                    // Picked up mid-stream: its greeting is long past.
                    c.greeted = !new_syn;
                    controls.insert(f, c);
                } else if self
                    .setup
                    .forwards
                    .iter()
                    .any(|(_, a, port)| IpAddr::V4(*a) == f.src.0 && *port == f.src.1)
                    && self.setup.ftp_ports.contains(&f.src.1)
                    && !tcp.syn
                {
                    // A forwarded server's connection picked up from its side (issue 11: forwards are
                    // picked up from either side, with the ALG; the greeting is long past).
                    self.notes
                        .push(format!("{}: forwarded server connection picked up mid-stream", p.describe()));
                    let mut c = Control::new(f.rev(), false, true);
                    c.greeted = true;
                    controls.insert(f.rev(), c);
                }
            }
            conns.insert(canon(f).0, new);
            return Expect::Pass;
        }
        // WAN side, no connection.
        if p.proto != 6 {
            return Expect::Drop("no mapping");
        }
        let Some(dst) = p.dst4() else { return Expect::Drop("no mapping") };
        let to_forward = self.setup.forwards.iter().any(|(_, a, port)| *a == dst && *port == p.dport);
        if to_forward && !tcp.syn && !tcp.rst {
            // Forwards are picked up from either side (a connection in progress when the gateway
            // started): never dropped mid-stream.
            if self.setup.ftp_ports.contains(&p.dport) {
                self.notes.push(format!(
                    "{}: forwarded connection picked up mid-stream from outside",
                    p.describe()
                ));
                let mut c = Control::new(f, false, true);
                c.greeted = true;
                controls.insert(f, c);
            }
            conns.insert(canon(f).0, new);
            return Expect::Pass;
        }
        if !tcp.syn || tcp.ackf {
            return Expect::Drop("no mapping (not a SYN)");
        }
        if to_forward {
            if self.setup.ftp_ports.contains(&p.dport) {
                controls.insert(f, Control::new(f, false, true));
            }
            conns.insert(canon(f).0, new);
            return Expect::Pass;
        }
        let src = p.src4().expect("v4");
        if let Some(ph) = pinholes.get(&(dst, p.dport)) {
            if ph.expires >= ts && ph.peer == src {
                pinholes.remove(&(dst, p.dport));
                conns.insert(canon(f).0, new);
                return Expect::Pass;
            }
            if ph.expires >= ts {
                return Expect::Drop("pinhole for another peer");
            }
            if ts - ph.expires < 1_000_000 {
                return Expect::Either("pinhole expiring");
            }
        }
        Expect::Drop("no mapping, forward or pinhole")
    }

    /// Feeds control-connection bytes in capture order and judges announcement lines.
    /// Feeds control-connection bytes in capture order and judges announcement lines. Returns a new
    /// expectation for the packet when the stream decides it (a segment past a gap the receiver has not
    /// yet acknowledged is refused by the gateway until the gap is shown to be permanent).
    fn feed_control(
        &mut self,
        p: &Pkt,
        e: &Expect,
        controls: &mut HashMap<Flow, Control>,
        pinholes: &mut HashMap<(Ipv4Addr, u16), Pinhole>,
    ) -> Option<Expect> {
        let f = p.key();
        let (c2s, dir) = if controls.contains_key(&f) {
            (f, 0)
        } else if controls.contains_key(&f.rev()) {
            (f.rev(), 1)
        } else {
            return None;
        };
        if matches!(e, Expect::Drop(_)) {
            return None;
        }
        let t = p.tcp.as_ref().expect("tcp");
        let mut ctl = controls.remove(&c2s).expect("present");
        let mut verdict = None;
        // The acknowledgement first: the receiver of the other direction says what it has. Bytes it
        // acknowledges that the framer never saw went another way (or the recording lost them): the
        // framer jumps over them and trusts no line start before the next line end.
        if t.ackf && !t.rst {
            let od = &mut ctl.dirs[1 - dir];
            if let Some(off) = od.isn.and_then(|isn| offset(isn, t.ack)) {
                if off > od.next && off < od.next + (1 << 24) {
                    self.notes.push(format!(
                        "{}: the peer acknowledges bytes {}..{} of the other direction that the recording lacks",
                        p.describe(),
                        od.next,
                        off
                    ));
                    od.next = off;
                    od.synced = false;
                    od.line.clear();
                    if od.tls.is_some() {
                        od.dead = true;
                    }
                    ctl.pending.clear();
                    ctl.multiline = None;
                    ctl.port_pending.clear();
                }
            }
        }
        let d = &mut ctl.dirs[dir];
        if t.syn && d.isn.is_none() {
            d.isn = Some(t.seq.wrapping_add(1));
            d.synced = true;
        }
        if d.isn.is_none() && !t.payload.is_empty() {
            d.isn = Some(t.seq);
            d.synced = false;
        }
        let mut lines: Vec<(usize, Vec<u8>, bool)> = Vec::new();
        if let (Some(isn), false) = (d.isn, t.payload.is_empty()) {
            let seq = if t.syn { t.seq.wrapping_add(1) } else { t.seq };
            if let Some(off) = offset(isn, seq) {
                if off > d.next {
                    // Past a gap: the gateway refuses it (its sender retransmits) until the receiver
                    // acknowledges past the gap; in a recording nothing is retransmitted.
                    verdict = Some(Expect::Either("past a gap the peer has not acknowledged yet"));
                } else if off + t.payload.len() > d.next {
                    let new = &t.payload[d.next - off..];
                    let start = d.next;
                    d.next += new.len();
                    let flow = if dir == 0 { c2s } else { c2s.rev() };
                    let framed = self.framed.entry((flow, isn)).or_default();
                    match framed.last_mut() {
                        Some(r) if r.end == start => r.end = start + new.len(),
                        _ => framed.push(start..start + new.len()),
                    }
                    ctl.push_bytes(dir, start, new, &mut lines);
                    let d = &mut ctl.dirs[dir];
                    let ranges = std::mem::take(&mut d.opaque);
                    self.opaque.entry((flow, isn)).or_default().extend(ranges);
                }
            }
        }
        // A FIN right at the end of what was framed takes a sequence number (its ACK is no gap).
        let d = &mut ctl.dirs[dir];
        if let (Some(isn), true, false) = (d.isn, t.fin, d.fin) {
            let seq = if t.syn { t.seq.wrapping_add(1) } else { t.seq };
            if offset(isn, seq).is_some_and(|off| off + t.payload.len() == d.next) {
                d.next += 1;
                d.fin = true;
            }
        }
        for (at, line, synced) in lines {
            self.on_line(&mut ctl, dir, at, line, synced, p, pinholes);
        }
        controls.insert(c2s, ctl);
        verdict
    }

    #[allow(clippy::too_many_arguments)]
    fn on_line(
        &mut self,
        ctl: &mut Control,
        dir: usize,
        at: usize,
        line: Vec<u8>,
        synced: bool,
        p: &Pkt,
        pinholes: &mut HashMap<(Ipv4Addr, u16), Pinhole>,
    ) {
        let from_client = dir == 0;
        let rewrite_dir = from_client == ctl.client_inside;
        let sender = p.src4().expect("v4");
        let peer = p.dst4().expect("v4");
        let lan_flow = if dir == 0 { ctl.c2s } else { ctl.c2s.rev() };
        let isn = ctl.dirs[dir].isn.unwrap_or(0);
        if ctl.not_ftp || ctl.dirs[dir].dead {
            // Not FTP: nothing in it is an announcement the gateway may act on; its lines pass as sent.
            self.opaque.entry((lan_flow, isn)).or_default().push(at..at + line.len());
            return;
        }
        if !synced && !from_client {
            // Possibly the tail of a reply: never a greeting either way.
            ctl.greeted = true;
        }
        if synced && ctl.alg && !ftp_like(from_client, ctl.greeted || ctl.multiline.is_some(), &line) {
            self.notes.push(format!(
                "{}: '{}' is not FTP: the connection is opaque from here on",
                p.describe(),
                String::from_utf8_lossy(body(&line))
            ));
            ctl.not_ftp = true;
            self.opaque.entry((lan_flow, isn)).or_default().push(at..at + line.len());
            return;
        }
        if from_client && !synced && !ftp_like(true, true, &line) {
            // The tail of something that is no command: it asks nothing.
            return;
        }
        if from_client && body(&line).iter().all(|&b| b == 0xff || (0xf0..=0xfe).contains(&b)) {
            // An empty line (or Telnet commands only) is no command and awaits no reply.
            return;
        }
        if from_client {
            let verb = verb_of(&line);
            let kind = match verb.as_str() {
                "PORT" => Some(Kind::Port),
                "EPRT" => Some(Kind::Eprt),
                _ => None,
            };
            if let Some(kind) = kind {
                let mut opened = None;
                if rewrite_dir {
                    let (span, mut j) = judge(kind, &line, sender, peer, synced && ctl.alg, true);
                    if ctl.alg && !ctl.greeted && !matches!(j, Judgement::Either(_)) {
                        j = Judgement::Refuse("before the server's greeting");
                    }
                    if let Judgement::Rewrite { inside, peer } = &j {
                        opened = Some(*inside);
                        ctl.open(*inside, *peer, p.ts, pinholes);
                    }
                    self.announcements.push(Announcement {
                        flow: lan_flow,
                        isn: ctl.dirs[dir].isn.unwrap_or(0),
                        at,
                        line: line.clone(),
                        span,
                        kind,
                        judgement: j,
                        ts: p.ts,
                        refused_by_server: false,
                    });
                }
                ctl.pending.push_back("port");
                ctl.port_pending.push_back(opened.map(|ep| (ep, self.announcements.len() - 1)));
                return;
            }
            let pend = match verb.as_str() {
                "PASV" => "pasv",
                "EPSV" => "epsv",
                "AUTH" => "auth",
                "CCC" => "ccc",
                _ => "other",
            };
            ctl.pending.push_back(pend);
            return;
        }
        // A reply line.
        let code = reply_code(&line);
        let final_code = match (&ctl.multiline, code) {
            (Some(ml), Some((c, false))) if ml == &c => {
                ctl.multiline = None;
                Some(c)
            }
            (Some(_), _) => None,
            (None, Some((c, true))) => {
                ctl.multiline = Some(c);
                None
            }
            (None, Some((c, false))) => Some(c),
            (None, None) => None,
        };
        let kind = match line.get(..4) {
            Some(b"227 ") => Some(Kind::P227),
            Some(b"229 ") => Some(Kind::P229),
            _ => None,
        };
        let is_final = final_code.as_ref().is_some_and(|c| c[0] >= b'2');
        if is_final && !ctl.greeted {
            // RFC 959 §5.4: the greeting answers no command; commands pipelined before it keep waiting.
            ctl.greeted = true;
            return;
        }
        let answered = if is_final { ctl.pending.pop_front() } else { None };
        if answered == Some("port") {
            let opened = ctl.port_pending.pop_front().flatten();
            if let (Some((ep, ann)), Some(c)) = (opened, &final_code) {
                if c[0] != b'2' {
                    if pinholes.get(&ep).is_some_and(|ph| ph.control == ctl.c2s) {
                        pinholes.remove(&ep);
                    }
                    self.announcements[ann].refused_by_server = true;
                }
            }
        }
        if rewrite_dir {
            if let Some(kind) = kind {
                let solicited = is_final
                    && matches!((kind, answered), (Kind::P227, Some("pasv")) | (Kind::P229, Some("epsv")));
                let (span, mut j) = judge(kind, &line, sender, peer, synced && ctl.alg, solicited);
                if !is_final && ctl.multiline.is_some() {
                    // Text inside a multi-line reply is not an announcement.
                    j = Judgement::Refuse("inside a multi-line reply");
                }
                if let Judgement::Rewrite { inside, peer } = &j {
                    ctl.open(*inside, *peer, p.ts, pinholes);
                }
                self.announcements.push(Announcement {
                    flow: lan_flow,
                    isn: ctl.dirs[dir].isn.unwrap_or(0),
                    at,
                    line: line.clone(),
                    span,
                    kind,
                    judgement: j,
                    ts: p.ts,
                    refused_by_server: false,
                });
            }
        }
        match (answered, final_code.as_deref()) {
            (Some("auth"), Some(b"234")) => {
                for d in ctl.dirs.iter_mut() {
                    d.tls = Some((0, [0; 5], 0));
                }
            }
            (Some("ccc"), Some(b"200")) => {
                for d in ctl.dirs.iter_mut() {
                    d.tls = None;
                }
            }
            _ => {}
        }
    }
}

impl Control {
    fn new(c2s: Flow, client_inside: bool, alg: bool) -> Control {
        Control {
            c2s,
            client_inside,
            dirs: [DirState::default(), DirState::default()],
            pending: VecDeque::new(),
            multiline: None,
            opened: VecDeque::new(),
            port_pending: VecDeque::new(),
            alg,
            greeted: false,
            not_ftp: false,
        }
    }

    fn open(
        &mut self,
        inside: (Ipv4Addr, u16),
        peer: Ipv4Addr,
        ts: u64,
        pinholes: &mut HashMap<(Ipv4Addr, u16), Pinhole>,
    ) {
        pinholes
            .insert(inside, Pinhole { inside, peer, expires: ts + PINHOLE_TIMEOUT_US, control: self.c2s });
        self.opened.retain(|e| *e != inside);
        self.opened.push_back(inside);
        while self.opened.len() > MAX_PINHOLES_PER_CONN {
            let old = self.opened.pop_front().expect("non-empty");
            if pinholes.get(&old).is_some_and(|p| p.control == self.c2s) {
                pinholes.remove(&old);
            }
        }
    }

    /// Splits new in-order bytes of direction `dir` into complete lines (TLS records skipped).
    fn push_bytes(&mut self, dir: usize, start: usize, bytes: &[u8], out: &mut Vec<(usize, Vec<u8>, bool)>) {
        let d = &mut self.dirs[dir];
        if d.dead {
            d.opaque.push(start..start + bytes.len());
            return;
        }
        for (i, &b) in bytes.iter().enumerate() {
            let at = start + i;
            if let Some((got, hdr, left)) = d.tls.as_mut() {
                match d.opaque.last_mut() {
                    Some(r) if r.end == at => r.end = at + 1,
                    _ => d.opaque.push(at..at + 1),
                }
                if *left > 0 {
                    *left -= 1;
                    continue;
                }
                if *got > 0 || (20..=24).contains(&b) {
                    hdr[*got] = b;
                    *got += 1;
                    if *got == 5 {
                        *left = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
                        *got = 0;
                    }
                    continue;
                }
                d.tls = None;
                d.line.clear();
                if let Some(r) = d.opaque.last_mut() {
                    if r.end == at + 1 {
                        r.end = at;
                    }
                }
            }
            if d.line.is_empty() {
                d.line_at = at;
            }
            d.line.push(b);
            if b == b'\n' {
                let line = std::mem::take(&mut d.line);
                // A line whose start was not seen (after a pickup or a gap) still answers or asks, for
                // pairing replies with commands; it is never judged.
                let synced = d.synced;
                d.synced = true;
                out.push((d.line_at, line, synced));
            }
        }
    }
}

/// Whether a line keeps the connection FTP, the model's own reading of RFC 959: a client line is a
/// command (Telnet IAC pairs skipped, a verb of letters, then SP/HTAB or the line end) and no HTTP
/// request line; the server's first reply is its greeting (120, 220 or 421, §5.4). `greeted`: the
/// greeting (or a multi-line reply in progress) is behind us.
pub(super) fn ftp_like(from_client: bool, greeted: bool, line: &[u8]) -> bool {
    let mut b = body(line);
    if from_client {
        while b.len() >= 2 && b[0] == 0xff && b[1] != 0xff {
            b = &b[2..];
        }
        if b.is_empty() {
            return true;
        }
        let n = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
        let http = b.len() >= 9 && {
            let t = &b[b.len() - 9..];
            t[..6].eq_ignore_ascii_case(b" HTTP/")
                && t[6].is_ascii_digit()
                && t[7] == b'.'
                && t[8].is_ascii_digit()
        };
        n > 0 && matches!(b.get(n), None | Some(b' ' | b'\t')) && !http
    } else {
        greeted
            || matches!(b.get(..3), Some(b"120" | b"220" | b"421"))
                && matches!(b.get(3), None | Some(b' ' | b'-'))
    }
}

pub(super) fn verb_of(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// (code, is a multi-line start)
pub(super) fn reply_code(line: &[u8]) -> Option<(Vec<u8>, bool)> {
    let c = line.get(..3)?;
    if !c.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match line.get(3) {
        Some(b'-') => Some((c.to_vec(), true)),
        Some(b' ') | Some(b'\r') | Some(b'\n') | None => Some((c.to_vec(), false)),
        _ => None,
    }
}

pub(super) fn body(line: &[u8]) -> &[u8] {
    let mut e = line.len();
    while e > 0 && (line[e - 1] == b'\n' || line[e - 1] == b'\r') {
        e -= 1;
    }
    &line[..e]
}

/// Parses `n1,n2,...` (decimal) starting at `at`; returns the numbers and where they end.
pub(super) fn numbers(b: &[u8], at: usize) -> (Vec<Option<u32>>, usize) {
    let mut v = Vec::new();
    let mut i = at;
    loop {
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = std::str::from_utf8(&b[s..i]).ok().and_then(|t| {
            if t.is_empty() || t.len() > 5 {
                None
            } else {
                t.parse().ok()
            }
        });
        v.push(n);
        if i < b.len() && b[i] == b',' {
            i += 1;
        } else {
            return (v, i);
        }
    }
}

pub(super) fn six(nums: &[Option<u32>]) -> Option<(Ipv4Addr, u16)> {
    if nums.len() != 6 || nums.iter().any(|n| n.is_none_or(|n| n > 255)) {
        return None;
    }
    let n: Vec<u8> = nums.iter().map(|n| n.unwrap() as u8).collect();
    Some((Ipv4Addr::new(n[0], n[1], n[2], n[3]), u16::from_be_bytes([n[4], n[5]])))
}

/// The model's own reading of an announcement line and the policy verdict on it.
pub(super) fn judge(
    kind: Kind,
    line: &[u8],
    sender: Ipv4Addr,
    peer: Ipv4Addr,
    synced: bool,
    solicited: bool,
) -> (Range<usize>, Judgement) {
    let b = body(line);
    let none = 0..0;
    if !synced {
        return (none, Judgement::Either("control stream not in sync"));
    }
    if line.len() > MAX_LINE {
        return (none, Judgement::Either("overlong line"));
    }
    let parsed: Result<(Range<usize>, Option<Ipv4Addr>, u16), &'static str> = match kind {
        Kind::Port => {
            if b.get(4) != Some(&b' ') || b.get(5).is_none_or(|c| !c.is_ascii_digit()) {
                Err("odd PORT syntax")
            } else {
                let (nums, end) = numbers(b, 5);
                let trailing_ok = b[end..].iter().all(|&c| c == b' ');
                match six(&nums) {
                    Some((a, port)) if end == b.len() => Ok((5..end, Some(a), port)),
                    Some(_) if trailing_ok => Err("odd PORT syntax"),
                    _ => Err("malformed"),
                }
            }
        }
        Kind::Eprt => {
            let arg = b.get(5..).unwrap_or(&[]);
            if b.get(4) != Some(&b' ') || arg.is_empty() {
                Err("odd EPRT syntax")
            } else {
                let d = arg[0];
                let fields: Vec<&[u8]> = arg.split(|&c| c == d).collect();
                if fields.len() != 5 || !fields[0].is_empty() || !fields[4].is_empty() {
                    Err("malformed")
                } else if fields[1] != b"1" {
                    if fields[1] == b"2" {
                        Err("wrong family")
                    } else {
                        Err("odd EPRT syntax")
                    }
                } else {
                    let a = std::str::from_utf8(fields[2]).ok().and_then(|s| s.parse::<Ipv4Addr>().ok());
                    let port = std::str::from_utf8(fields[3]).ok().and_then(|s| s.parse::<u16>().ok());
                    match (a, port) {
                        (Some(a), Some(port)) if !fields[3].starts_with(b"0") => {
                            Ok((5..b.len(), Some(a), port))
                        }
                        _ => Err("malformed"),
                    }
                }
            }
        }
        Kind::P227 => match b[4..].iter().position(u8::is_ascii_digit) {
            None => Err("malformed"),
            Some(p) => {
                let start = 4 + p;
                let (nums, end) = numbers(b, start);
                match six(&nums) {
                    Some((a, port)) => Ok((start..end, Some(a), port)),
                    None => Err("malformed"),
                }
            }
        },
        Kind::P229 => {
            let open = b[4..].iter().position(|&c| c == b'(').map(|p| p + 4);
            match open {
                Some(o) if b.len() > o + 4 && b[o + 1] == b'|' && &b[o + 2..o + 4] == b"||" => {
                    let s = o + 4;
                    let mut e = s;
                    while e < b.len() && b[e].is_ascii_digit() {
                        e += 1;
                    }
                    let port = std::str::from_utf8(&b[s..e]).ok().and_then(|t| t.parse::<u16>().ok());
                    match (port, b.get(e..e + 2)) {
                        (Some(port), Some(b"|)")) if e - s <= 5 => Ok((s..e, None, port)),
                        _ => Err("malformed"),
                    }
                }
                Some(_) => Err("odd 229 syntax"),
                None => Err("malformed"),
            }
        }
    };
    let (span, addr, port) = match parsed {
        Ok(x) => x,
        Err(r) if r.starts_with("odd") => return (none, Judgement::Either(r)),
        Err(r) => return (none, Judgement::Refuse(r)),
    };
    if matches!(kind, Kind::P227 | Kind::P229) && !solicited {
        return (span, Judgement::Refuse("unsolicited"));
    }
    let addr = match addr {
        Some(a) if a.is_unspecified() => sender,
        Some(a) => a,
        None => sender,
    };
    if addr != sender {
        return (span, Judgement::Refuse("third host"));
    }
    if port < 1024 {
        // PORT/EPRT and an inside server's 227/229 alike.
        return (span, Judgement::Refuse("low port"));
    }
    (span, Judgement::Rewrite { inside: (sender, port), peer })
}

/// Reads the address/port the gateway wrote into a rewritten span.
pub(super) fn read_rewritten(kind: Kind, text: &[u8]) -> Option<(Option<Ipv4Addr>, u16)> {
    match kind {
        Kind::Port | Kind::P227 => {
            let (nums, end) = numbers(text, 0);
            if end != text.len() {
                return None;
            }
            six(&nums).map(|(a, p)| (Some(a), p))
        }
        Kind::Eprt => {
            let s = std::str::from_utf8(text).ok()?;
            let d = s.chars().next()?;
            let f: Vec<&str> = s.split(d).collect();
            if f.len() != 5 || f[1] != "1" {
                return None;
            }
            Some((Some(f[2].parse().ok()?), f[3].parse().ok()?))
        }
        Kind::P229 => Some((None, std::str::from_utf8(text).ok()?.parse().ok()?)),
    }
}
