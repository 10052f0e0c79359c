//! An independent judge of `ftpnat replay` outputs: properties 1–6 of issue 5, made as strict as issue
//! 11's cases: an inside host's answer to a refused inbound opening never crosses (nor opens anything),
//! connections through a forward are picked up from either side and never dropped mid-stream, a gap in
//! a recorded control stream does not stall it (every byte the model frames in order after it must
//! reach the other side), and a control connection is only trusted while it looks like FTP. A segment
//! beyond any window the connection can have (more than 2^30 past what its receiver acknowledged, or
//! acknowledging more than 2^30 past what the other side sent) must be dropped and change nothing; an
//! RST closes the model's connection only at a sequence number a real peer's RST carries, so everything
//! after a spoofed one must still cross.
//!
//! Owns: reading captures with etherparse (link layer included), its own TCP stream reassembly, and its
//! own model of what the gateway must do — which WAN packets have a mapping, a forward or a pinhole,
//! which PORT/EPRT/227/229 lines must be rewritten and which refused — built from the input capture and
//! the replay arguments alone. Must not: ask the engine or the replayer anything. Only the summary JSON
//! (the replay's published output) is read, for its drop counts.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::Path;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use ipnet::IpNet;

use ftpnat::io::pcap::CaptureReader;

// ---------------------------------------------------------------------------------------------------
// Packets

#[derive(Clone, Debug, Default)]
pub struct Tcp {
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ackf: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
}

/// One IP datagram of a capture, as etherparse reads it.
#[derive(Clone, Debug)]
pub struct Pkt {
    /// Position of the frame in its file.
    pub frame: usize,
    pub ts: u64,
    pub bytes: Vec<u8>,
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub proto: u8,
    pub fragment: bool,
    pub sport: u16,
    pub dport: u16,
    pub tcp: Option<Tcp>,
    pub icmp_type: Option<u8>,
    /// Where the transport header starts in `bytes` (None when etherparse found none).
    pub l4: Option<usize>,
}

impl Pkt {
    pub fn key(&self) -> Flow {
        Flow { src: (self.src, self.sport), dst: (self.dst, self.dport), proto: self.proto }
    }
    fn v4(&self, a: IpAddr) -> Option<Ipv4Addr> {
        match a {
            IpAddr::V4(a) => Some(a),
            _ => None,
        }
    }
    pub fn src4(&self) -> Option<Ipv4Addr> {
        self.v4(self.src)
    }
    pub fn dst4(&self) -> Option<Ipv4Addr> {
        self.v4(self.dst)
    }
    pub fn describe(&self) -> String {
        let mut s = format!(
            "frame {} {}:{} > {}:{} proto {}",
            self.frame + 1,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.proto
        );
        if let Some(t) = &self.tcp {
            let _ = write!(
                s,
                " [{}{}{}{}] seq {} ack {} len {}",
                if t.syn { "S" } else { "" },
                if t.fin { "F" } else { "" },
                if t.rst { "R" } else { "" },
                if t.ackf { "." } else { "" },
                t.seq,
                t.ack,
                t.payload.len()
            );
        }
        s
    }
}

/// A flow as one packet carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub proto: u8,
}

impl Flow {
    pub fn rev(self) -> Flow {
        Flow { src: self.dst, dst: self.src, proto: self.proto }
    }
}

/// Parses an IP datagram (the capture's TSO "length 0" is taken as the buffer length).
pub fn parse_ip(frame: usize, ts: u64, mut bytes: Vec<u8>) -> Option<Pkt> {
    if bytes.len() >= 20 && bytes[0] >> 4 == 4 && bytes[2] == 0 && bytes[3] == 0 && bytes.len() <= 65535 {
        let n = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&n.to_be_bytes());
        bytes[10] = 0;
        bytes[11] = 0;
        let c = rfc1071(&bytes[..((bytes[0] & 15) as usize) * 4]);
        bytes[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let sliced = LaxSlicedPacket::from_ip(&bytes).ok()?;
    let (v6, src, dst, ttl, proto, fragment, payload_at) = match sliced.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => {
            let h = s.header();
            (
                false,
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.ttl(),
                s.payload().ip_number.0,
                s.is_payload_fragmented(),
                s.payload().payload.as_ptr() as usize - bytes.as_ptr() as usize,
            )
        }
        LaxNetSlice::Ipv6(s) => {
            let h = s.header();
            (
                true,
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.hop_limit(),
                s.payload().ip_number.0,
                s.is_payload_fragmented(),
                s.payload().payload.as_ptr() as usize - bytes.as_ptr() as usize,
            )
        }
        LaxNetSlice::Arp(_) => return None,
    };
    let (mut sport, mut dport, mut tcp, mut icmp_type) = (0, 0, None, None);
    let mut l4 = None;
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            sport = t.source_port();
            dport = t.destination_port();
            tcp = Some(Tcp {
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                syn: t.syn(),
                ackf: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                payload: t.payload().to_vec(),
            });
            l4 = Some(payload_at);
        }
        Some(TransportSlice::Udp(u)) => {
            sport = u.source_port();
            dport = u.destination_port();
            l4 = Some(payload_at);
        }
        Some(TransportSlice::Icmpv4(i)) => {
            icmp_type = Some(i.type_u8());
            if matches!(i.type_u8(), 0 | 8) {
                let id = u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]);
                sport = id;
                dport = id;
            }
            l4 = Some(payload_at);
        }
        Some(TransportSlice::Icmpv6(i)) => {
            icmp_type = Some(i.type_u8());
            l4 = Some(payload_at);
        }
        _ => {}
    }
    drop(sliced);
    Some(Pkt { frame, ts, bytes, v6, src, dst, ttl, proto, fragment, sport, dport, tcp, icmp_type, l4 })
}

/// RFC 1071: the kit's, written from the RFC, so the checker shares no code with the crate.
pub use ftpnat_testkit::csum::rfc1071;

/// The IP datagram inside a captured frame, located by etherparse.
fn l3_of(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    let base = frame.as_ptr() as usize;
    let sliced = match linktype {
        1 => LaxSlicedPacket::from_ethernet(frame).ok()?,
        12 | 14 | 101 | 228 | 229 => LaxSlicedPacket::from_ip(frame).ok()?,
        113 => {
            let et = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
            LaxSlicedPacket::from_ether_type(EtherType(et), frame.get(16..)?)
        }
        276 => {
            let et = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
            LaxSlicedPacket::from_ether_type(EtherType(et), frame.get(20..)?)
        }
        0 | 108 => LaxSlicedPacket::from_ip(frame.get(4..)?).ok()?,
        other => panic!("checker: link type {other} not supported"),
    };
    let (start, end) = match sliced.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => {
            let p = &s.payload().payload;
            (s.header().slice().as_ptr() as usize - base, p.as_ptr() as usize - base + p.len())
        }
        LaxNetSlice::Ipv6(s) => {
            let p = &s.payload().payload;
            (s.header().slice().as_ptr() as usize - base, p.as_ptr() as usize - base + p.len())
        }
        LaxNetSlice::Arp(_) => return None,
    };
    frame.get(start..end)
}

/// A capture read for checking.
pub struct Capture {
    pub pkts: Vec<Pkt>,
    pub frames: usize,
    pub non_ip: usize,
}

pub fn read_capture(path: &Path) -> Capture {
    let mut r = CaptureReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut c = Capture { pkts: Vec::new(), frames: 0, non_ip: 0 };
    while let Some(f) = r.next_frame().unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let i = c.frames;
        c.frames += 1;
        match l3_of(f.linktype.0, &f.data).and_then(|l3| parse_ip(i, f.ts_micros, l3.to_vec())) {
            Some(p) => c.pkts.push(p),
            None => c.non_ip += 1,
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------------
// Property 1: checksums

/// Checks the IPv4 header checksum and the TCP/UDP/ICMP checksum with etherparse's calculators.
pub fn checksum_errors(p: &Pkt) -> Vec<String> {
    let mut errs = Vec::new();
    let sliced = match etherparse::SlicedPacket::from_ip(&p.bytes) {
        Ok(s) => s,
        Err(e) => return vec![format!("{}: etherparse cannot parse it: {e:?}", p.describe())],
    };
    let (src4, dst4, src6, dst6) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(s)) => {
            let h = s.header().to_header();
            if h.calc_header_checksum() != h.header_checksum {
                errs.push(format!("{}: bad IPv4 header checksum", p.describe()));
            }
            if s.is_payload_fragmented() {
                return errs;
            }
            (Some(h.source), Some(h.destination), None, None)
        }
        Some(etherparse::NetSlice::Ipv6(s)) => {
            if s.is_payload_fragmented() {
                return errs;
            }
            let h = s.header();
            (None, None, Some(h.source()), Some(h.destination()))
        }
        _ => return errs,
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = match (src4, dst4, src6, dst6) {
                (Some(s), Some(d), _, _) => t.calc_checksum_ipv4(s, d).ok(),
                (_, _, Some(s), Some(d)) => t.calc_checksum_ipv6(s, d).ok(),
                _ => None,
            };
            if want != Some(t.checksum()) {
                errs.push(format!("{}: bad TCP checksum", p.describe()));
            }
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let want = match (src4, dst4, src6, dst6) {
                (Some(s), Some(d), _, _) if h.checksum != 0 => {
                    h.calc_checksum_ipv4_raw(s, d, u.payload()).ok()
                }
                (Some(_), _, _, _) => Some(0),
                (_, _, Some(s), Some(d)) => h.calc_checksum_ipv6_raw(s, d, u.payload()).ok(),
                _ => None,
            };
            if want != Some(h.checksum) {
                errs.push(format!("{}: bad UDP checksum", p.describe()));
            }
        }
        Some(TransportSlice::Icmpv4(i)) if rfc1071(i.slice()) != 0 => {
            errs.push(format!("{}: bad ICMP checksum", p.describe()));
        }
        _ => {}
    }
    errs
}

// ---------------------------------------------------------------------------------------------------
// Normalised comparison (property 3 and packet-level property 4)

/// The datagram with TTL/hop limit and every checksum zeroed (and, for `strip_src`, the source address
/// and port too: what NAT may change on a LAN→WAN packet).
pub fn normalise(p: &Pkt, strip_src: bool) -> Vec<u8> {
    let mut b = p.bytes.clone();
    if !p.v6 {
        b[8] = 0;
        b[10] = 0;
        b[11] = 0;
        if strip_src {
            b[12..16].fill(0);
        }
    } else {
        b[7] = 0;
        if strip_src {
            b[8..24].fill(0);
        }
    }
    if let (Some(l4), false) = (p.l4, p.fragment) {
        let csum_at = match p.proto {
            6 => Some(l4 + 16),
            17 => Some(l4 + 6),
            1 | 58 => Some(l4 + 2),
            _ => None,
        };
        if let Some(c) = csum_at.filter(|c| c + 2 <= b.len()) {
            b[c] = 0;
            b[c + 1] = 0;
        }
        if strip_src && l4 + 2 <= b.len() && matches!(p.proto, 6 | 17) {
            b[l4] = 0;
            b[l4 + 1] = 0;
        }
        if strip_src && p.proto == 1 && matches!(p.icmp_type, Some(0 | 8)) && l4 + 6 <= b.len() {
            b[l4 + 4] = 0;
            b[l4 + 5] = 0;
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------------
// TCP stream reassembly (first copy of each byte wins)

#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub data: Vec<u8>,
    pub have: Vec<bool>,
}

impl Stream {
    pub fn add(&mut self, off: usize, bytes: &[u8]) {
        let end = off + bytes.len();
        if end > self.data.len() {
            self.data.resize(end, 0);
            self.have.resize(end, false);
        }
        for (i, &b) in bytes.iter().enumerate() {
            if !self.have[off + i] {
                self.have[off + i] = true;
                self.data[off + i] = b;
            }
        }
    }
    /// Contiguous runs of received bytes: (start, end).
    pub fn runs(&self) -> Vec<Range<usize>> {
        let mut v = Vec::new();
        let mut i = 0;
        while i < self.have.len() {
            if self.have[i] {
                let s = i;
                while i < self.have.len() && self.have[i] {
                    i += 1;
                }
                v.push(s..i);
            } else {
                i += 1;
            }
        }
        v
    }
    /// Bytes from offset 0 up to the first hole.
    pub fn prefix(&self) -> &[u8] {
        let n = self.have.iter().position(|h| !h).unwrap_or(self.have.len());
        &self.data[..n]
    }
}

/// Offset of `seq` in a stream whose first byte is `isn` (None when before it or absurdly far).
fn offset(isn: u32, seq: u32) -> Option<usize> {
    let d = seq.wrapping_sub(isn);
    (d < 0x8000_0000).then_some(d as usize)
}

/// The first payload sequence number of the direction `flow` in `pkts`: after its SYN, or the first
/// segment seen.
pub fn isn_of(pkts: &[&Pkt]) -> Option<u32> {
    for p in pkts {
        if let Some(t) = &p.tcp {
            if t.syn {
                return Some(t.seq.wrapping_add(1));
            }
        }
    }
    pkts.iter().find_map(|p| p.tcp.as_ref().map(|t| t.seq))
}

pub fn reassemble(pkts: &[&Pkt], isn: u32) -> Stream {
    let mut s = Stream::default();
    for p in pkts {
        let Some(t) = &p.tcp else { continue };
        if t.payload.is_empty() {
            continue;
        }
        let seq = if t.syn { t.seq.wrapping_add(1) } else { t.seq };
        if let Some(off) = offset(isn, seq) {
            if off < 1 << 28 {
                s.add(off, &t.payload);
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------------
// The replay's setup, as the checker knows it

#[derive(Clone, Debug)]
pub struct Setup {
    pub inside: Vec<IpNet>,
    pub public_ip: Ipv4Addr,
    /// (public port, inside address, inside port), TCP.
    pub forwards: Vec<(u16, Ipv4Addr, u16)>,
    pub ftp_ports: Vec<u16>,
}

impl Setup {
    pub fn is_inside(&self, a: IpAddr) -> bool {
        self.inside.iter().any(|n| n.contains(&a))
    }
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for n in &self.inside {
            v.push("--inside".into());
            v.push(n.to_string());
        }
        v.push("--public-ip".into());
        v.push(self.public_ip.to_string());
        for (pp, a, p) in &self.forwards {
            v.push("--forward".into());
            v.push(format!("tcp:{pp}={a}:{p}"));
        }
        for p in &self.ftp_ports {
            v.push("--ftp-port".into());
            v.push(p.to_string());
        }
        v
    }
    /// Reads the setup back from replay arguments (the `args` file of a case).
    pub fn from_args(args: &[String]) -> Setup {
        let mut s =
            Setup { inside: vec![], public_ip: Ipv4Addr::UNSPECIFIED, forwards: vec![], ftp_ports: vec![] };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().unwrap_or_default();
            match a.as_str() {
                "--inside" => {
                    let v = val();
                    let n = v
                        .parse::<IpNet>()
                        .unwrap_or_else(|_| IpNet::from(v.parse::<IpAddr>().expect("inside")));
                    s.inside.push(n);
                }
                "--public-ip" => s.public_ip = val().parse().expect("public ip"),
                "--forward" => {
                    let v = val();
                    let rest = v.strip_prefix("tcp:").expect("tcp forward");
                    let (pp, inside) = rest.split_once('=').expect("forward");
                    let (a, p) = inside.rsplit_once(':').expect("forward");
                    s.forwards.push((pp.parse().unwrap(), a.parse().unwrap(), p.parse().unwrap()));
                }
                "--ftp-port" => s.ftp_ports.push(val().parse().expect("ftp port")),
                _ => {}
            }
        }
        if s.ftp_ports.is_empty() {
            s.ftp_ports.push(21);
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------------
// The model: what the gateway must do, from the input alone

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
struct ConnState {
    /// Sequence number of the SYN that opened it, if seen.
    syn: Option<u32>,
    last: u64,
    closed: bool,
    fins: [bool; 2],
    /// The flow of the packet that created it.
    orig: Flow,
    /// Per direction (0: `orig`'s): the sequence number after the highest byte its sender used (SYN
    /// and FIN count), and the highest acknowledgement it sent, as far as the recording shows.
    next: [Option<u32>; 2],
    acked: [Option<u32>; 2],
}

/// The largest window TCP can advertise (RFC 7323 §2.3: 2^30 with the largest scale). A segment
/// starting further beyond what its receiver acknowledged, or acknowledging further beyond what the
/// other side sent, comes from no real sender: the gateway drops it, whatever the windows really were.
const MAX_WINDOW: i64 = 1 << 30;

fn seq_diff(a: u32, b: u32) -> i64 {
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
struct Pinhole {
    inside: (Ipv4Addr, u16),
    peer: Ipv4Addr,
    expires: u64,
    control: Flow,
}

#[derive(Clone, Debug, Default)]
struct DirState {
    isn: Option<u32>,
    next: usize,
    synced: bool,
    line: Vec<u8>,
    line_at: usize,
    /// TLS record walk: Some((header bytes seen, header, body bytes left)).
    tls: Option<(usize, [u8; 5], usize)>,
    /// Stream offsets walked as TLS records since the last export.
    opaque: Vec<Range<usize>>,
    /// A gap in a TLS record stream: the walk cannot find its place again; nothing is parsed.
    dead: bool,
    /// The sender's FIN was counted (it takes one sequence number).
    fin: bool,
}

#[derive(Clone, Debug)]
struct Control {
    /// Client→server flow.
    c2s: Flow,
    /// The inside side announces (client inside: PORT/EPRT; server inside: 227/229).
    client_inside: bool,
    dirs: [DirState; 2],
    pending: VecDeque<&'static str>,
    multiline: Option<Vec<u8>>,
    /// Pinholes this connection opened (keys into the pinhole table), oldest first.
    opened: VecDeque<(Ipv4Addr, u16)>,
    /// PORT/EPRT awaiting their reply: the pinhole they opened.
    port_pending: VecDeque<Option<((Ipv4Addr, u16), usize)>>,
    /// The ALG is attached to this connection (created from a SYN or pickup matching the policy).
    alg: bool,
    /// The server's greeting (RFC 959 §5.4) was seen, or the connection was picked up mid-stream.
    greeted: bool,
    /// A line showed the connection is not FTP: nothing after it may be rewritten.
    not_ftp: bool,
}

/// An inbound opening that was refused: the remote and the public port it was sent to, when last seen,
/// and whether the refusal was certain (a SYN the model judged `Either` may or may not have been).
#[derive(Clone, Copy, Debug)]
struct Refusal {
    last: u64,
    certain: bool,
}

/// How long the gateway remembers a refused opening after its last packet (`conntrack::refused::HOLD`,
/// restated here: the model shares no code with the crate).
const REFUSED_HOLD_US: u64 = 120_000_000;

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

const PINHOLE_TIMEOUT_US: u64 = 60_000_000;
const TRANSITORY_US: u64 = 240_000_000;
const MAX_PINHOLES_PER_CONN: usize = 8;
const MAX_LINE: usize = 500;

fn canon(f: Flow) -> (Flow, usize) {
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
fn ftp_like(from_client: bool, greeted: bool, line: &[u8]) -> bool {
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

fn verb_of(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// (code, is a multi-line start)
fn reply_code(line: &[u8]) -> Option<(Vec<u8>, bool)> {
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

fn body(line: &[u8]) -> &[u8] {
    let mut e = line.len();
    while e > 0 && (line[e - 1] == b'\n' || line[e - 1] == b'\r') {
        e -= 1;
    }
    &line[..e]
}

/// Parses `n1,n2,...` (decimal) starting at `at`; returns the numbers and where they end.
fn numbers(b: &[u8], at: usize) -> (Vec<Option<u32>>, usize) {
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

fn six(nums: &[Option<u32>]) -> Option<(Ipv4Addr, u16)> {
    if nums.len() != 6 || nums.iter().any(|n| n.is_none_or(|n| n > 255)) {
        return None;
    }
    let n: Vec<u8> = nums.iter().map(|n| n.unwrap() as u8).collect();
    Some((Ipv4Addr::new(n[0], n[1], n[2], n[3]), u16::from_be_bytes([n[4], n[5]])))
}

/// The model's own reading of an announcement line and the policy verdict on it.
fn judge(
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
fn read_rewritten(kind: Kind, text: &[u8]) -> Option<(Option<Ipv4Addr>, u16)> {
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

// ---------------------------------------------------------------------------------------------------
// The verdict

/// Outcome of checking one replay.
#[derive(Debug, Default)]
pub struct Report {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub data_conns_checked: usize,
    pub rewrites_seen: usize,
}

impl Report {
    fn fail(&mut self, s: String) {
        if self.failures.len() < 40 {
            self.failures.push(s);
        } else if self.failures.len() == 40 {
            self.failures.push("... (more failures)".into());
        }
    }
}

/// Flattens the summary JSON into dotted keys.
pub fn flatten(v: &serde_json::Value) -> HashMap<String, u64> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut HashMap<String, u64>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, v, out);
                }
            }
            serde_json::Value::Number(n) => {
                out.insert(prefix.to_string(), n.as_u64().expect("summary values are non-negative integers"));
            }
            other => panic!("summary key {prefix}: not an integer or object: {other}"),
        }
    }
    let mut out = HashMap::new();
    walk("", v, &mut out);
    out
}

/// Checks properties 1–6 for one replay: `input` replayed with `setup` gave `lan_out`/`wan_out` and
/// `summary` (flattened).
pub fn check(
    setup: &Setup,
    input: &Capture,
    lan_out: &[Pkt],
    wan_out: &[Pkt],
    summary: &HashMap<String, u64>,
) -> Report {
    let mut r = Report::default();
    let model = Model::build(setup, &input.pkts);
    r.notes.extend(model.notes.iter().cloned());
    let public = IpAddr::V4(setup.public_ip);
    let drops_total: u64 = summary.iter().filter(|(k, _)| k.starts_with("drops.")).map(|(_, v)| v).sum();

    // Property 1: every output packet's checksums.
    for p in lan_out.iter().chain(wan_out) {
        for e in checksum_errors(p) {
            r.fail(format!("P1 {e}"));
        }
    }

    // Property 2 (headers): no inside address on the WAN side.
    for p in wan_out {
        if (setup.is_inside(p.src) || setup.is_inside(p.dst)) && !p.v6 {
            r.fail(format!("P2 WAN packet carries an inside address: {}", p.describe()));
        }
        if !p.v6 && p.src != public {
            r.fail(format!("P2 WAN packet not from the public address: {}", p.describe()));
        }
    }

    // IPv6: routed with hop limit - 1, nothing else changed (and the input checksums repaired).
    let v6_in: Vec<&Pkt> = input.pkts.iter().filter(|p| p.v6).collect();
    for (side_out, from_lan) in [(lan_out, false), (wan_out, true)] {
        let want: Vec<&Pkt> =
            v6_in.iter().copied().filter(|p| setup.is_inside(p.src) == from_lan && p.ttl > 1).collect();
        let got: Vec<&Pkt> = side_out.iter().filter(|p| p.v6).collect();
        if want.len() != got.len() {
            r.fail(format!(
                "IPv6: {} packets expected on the {} output, {} found",
                want.len(),
                if from_lan { "WAN" } else { "LAN" },
                got.len()
            ));
        }
        for (w, g) in want.iter().zip(&got) {
            if normalise(w, false) != normalise(g, false) || g.ttl + 1 != w.ttl {
                r.fail(format!("IPv6 packet changed beyond the hop limit: {}", w.describe()));
            }
        }
    }

    // Property 3 and 6: LAN output = recorded WAN-originated IPv4 packets minus drops, in order.
    let wan_in: Vec<(usize, &Pkt)> =
        input.pkts.iter().enumerate().filter(|(_, p)| !p.v6 && !setup.is_inside(p.src)).collect();
    let lan_v4: Vec<&Pkt> = lan_out.iter().filter(|p| !p.v6).collect();
    let mut j = 0;
    let mut missing = 0u64;
    for (i, p) in &wan_in {
        let n = normalise(p, false);
        let matched = j < lan_v4.len() && normalise(lan_v4[j], false) == n;
        if matched {
            if lan_v4[j].ttl + 1 != p.ttl {
                r.fail(format!("P3 TTL not decremented by one: {}", p.describe()));
            }
            j += 1;
        } else {
            missing += 1;
        }
        match (&model.expect[*i], matched) {
            (Expect::Pass, false) => {
                r.fail(format!("P3 recorded WAN packet missing from the LAN output: {}", p.describe()))
            }
            (Expect::Drop(why), true) => {
                r.fail(format!("P6 WAN packet reached the LAN ({why}): {}", p.describe()))
            }
            _ => {}
        }
    }
    if j < lan_v4.len() {
        r.fail(format!(
            "P3 LAN output has {} packet(s) the recording's WAN side does not, first: {}",
            lan_v4.len() - j,
            lan_v4[j].describe()
        ));
    }
    if missing > drops_total {
        r.fail(format!(
            "P3 {missing} WAN packets missing from the LAN output but only {drops_total} drops counted"
        ));
    }

    // LAN-originated IPv4 packets outside control connections, packet by packet (NAT changes only the
    // source address and port).
    let is_control = |p: &Pkt| {
        let f = p.key();
        model.controls.contains(&f) || model.controls.contains(&f.rev())
    };
    let lan_in: Vec<(usize, &Pkt)> = input
        .pkts
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.v6 && setup.is_inside(p.src) && !is_control(p))
        .collect();
    let wan_v4: Vec<&Pkt> = wan_out.iter().filter(|p| !p.v6 && !is_control_out(p, &model, setup)).collect();
    let mut j = 0;
    for (i, p) in &lan_in {
        let n = normalise(p, true);
        let matched = j < wan_v4.len() && normalise(wan_v4[j], true) == n;
        if matched {
            j += 1;
        }
        match (&model.expect[*i], matched) {
            (Expect::Pass, false) => {
                r.fail(format!("P4 recorded LAN packet missing from the WAN output: {}", p.describe()))
            }
            (Expect::Drop(why), true) => {
                r.fail(format!("P6 LAN packet left for the WAN ({why}): {}", p.describe()))
            }
            _ => {}
        }
    }
    if j < wan_v4.len() {
        r.fail(format!(
            "P4 WAN output has {} packet(s) outside control connections the recording's LAN side does not, first: {}",
            wan_v4.len() - j,
            wan_v4[j].describe()
        ));
    }

    // Property 4 (and 2 for lines): each control connection's LAN→WAN stream.
    check_control_streams(setup, input, wan_out, &model, summary, &mut r);

    // Property 5: data connections of rewritten announcements cross the gateway.
    for a in &model.announcements {
        let Judgement::Rewrite { inside, peer } = a.judgement else { continue };
        if a.refused_by_server {
            continue;
        }
        // The data connection: the first SYN from the peer to the announced endpoint after the line.
        let syn = input.pkts.iter().find(|p| {
            p.ts >= a.ts
                && p.ts <= a.ts + PINHOLE_TIMEOUT_US
                && p.src4() == Some(peer)
                && p.dst4() == Some(inside.0)
                && p.dport == inside.1
                && p.tcp.as_ref().is_some_and(|t| t.syn && !t.ackf)
        });
        let Some(syn) = syn else { continue };
        r.data_conns_checked += 1;
        let f = syn.key();
        let syn_seq = syn.tcp.as_ref().unwrap().seq;
        let syn_out =
            lan_out.iter().any(|p| p.key() == f && p.tcp.as_ref().is_some_and(|t| t.syn && t.seq == syn_seq));
        let back =
            wan_out.iter().any(|p| p.dst == f.src.0 && p.dport == f.src.1 && p.src == public && p.proto == 6);
        if !syn_out || !back {
            r.fail(format!(
                "P5 data connection {} -> {}:{} (announced at {}s) did not cross: SYN on LAN {syn_out}, answer on WAN {back}",
                f.src.0,
                inside.0,
                inside.1,
                a.ts / 1_000_000
            ));
        }
    }
    r
}

/// Whether a WAN output packet belongs to a control connection (its destination is a control
/// connection's outside end with the same port).
fn is_control_out(p: &Pkt, model: &Model, setup: &Setup) -> bool {
    model.controls.iter().any(|c| {
        let lan = if setup.is_inside(c.src.0) { *c } else { c.rev() };
        p.proto == 6 && p.dst == lan.dst.0 && p.dport == lan.dst.1
    })
}

fn check_control_streams(
    setup: &Setup,
    input: &Capture,
    wan_out: &[Pkt],
    model: &Model,
    summary: &HashMap<String, u64>,
    r: &mut Report,
) {
    let alg_drops = summary.get("drops.alg_out_of_order").copied().unwrap_or(0)
        + summary.get("drops.alg_stale").copied().unwrap_or(0);
    let mut seen = std::collections::HashSet::new();
    for c in &model.controls {
        let lan = if setup.is_inside(c.src.0) { *c } else { c.rev() };
        if !seen.insert(lan) {
            continue;
        }
        let all: Vec<&Pkt> = input.pkts.iter().filter(|p| p.key() == lan).collect();
        for rec in instances(&all) {
            check_control_instance(setup, input, wan_out, model, alg_drops, lan, &rec, r);
        }
    }
}

/// Splits one direction's packets into connections: a SYN with a new sequence number starts one.
fn instances<'a>(pkts: &[&'a Pkt]) -> Vec<Vec<&'a Pkt>> {
    let mut out: Vec<Vec<&Pkt>> = Vec::new();
    let mut syn: Option<u32> = None;
    for p in pkts {
        let t = p.tcp.as_ref();
        let is_syn = t.is_some_and(|t| t.syn);
        let seq = t.map_or(0, |t| t.seq);
        if out.is_empty()
            || (is_syn && syn.is_some_and(|s| s != seq))
            || (is_syn && syn.is_none() && out.last().is_some_and(|v| !v.is_empty()))
        {
            out.push(Vec::new());
        }
        if is_syn {
            syn = Some(seq);
        }
        out.last_mut().expect("pushed").push(*p);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn check_control_instance(
    setup: &Setup,
    input: &Capture,
    wan_out: &[Pkt],
    model: &Model,
    alg_drops: u64,
    lan: Flow,
    rec: &[&Pkt],
    r: &mut Report,
) {
    let Some(isn) = isn_of(rec) else { return };
    let recorded = reassemble(rec, isn);
    let (t0, t1) = (rec.first().unwrap().ts, rec.last().unwrap().ts + 10_000_000);
    // The gateway's side of this connection: to the same outside endpoint, in the same time span,
    // from the public port whose packets carry the most of this connection's input timestamps.
    let times: std::collections::HashSet<u64> = rec.iter().map(|p| p.ts).collect();
    let cands: Vec<&Pkt> = wan_out
        .iter()
        .filter(|p| p.proto == 6 && p.dst == lan.dst.0 && p.dport == lan.dst.1 && p.ts >= t0 && p.ts <= t1)
        .collect();
    let mut score: HashMap<u16, usize> = HashMap::new();
    for p in &cands {
        *score.entry(p.sport).or_default() += usize::from(times.contains(&p.ts));
    }
    let best = score.iter().max_by_key(|(port, n)| (**n, u16::MAX - **port)).map(|(p, _)| *p);
    let out: Vec<&Pkt> = cands.into_iter().filter(|p| Some(p.sport) == best).collect();
    if out.is_empty() {
        let pass = rec.iter().any(|p| {
            let i = input.pkts.iter().position(|q| std::ptr::eq(q, *p)).unwrap();
            model.expect[i] == Expect::Pass
        });
        if pass {
            r.fail(format!("P4 control connection {:?} has no WAN output", lan));
        }
        return;
    }
    let emitted = reassemble(&out, isn);
    let framed = model.framed.get(&(lan, isn)).cloned().unwrap_or_default();
    let must = |k: usize| framed.iter().any(|f| f.contains(&k));
    let mut anns: Vec<&Announcement> =
        model.announcements.iter().filter(|a| a.flow == lan && a.isn == isn).collect();
    anns.sort_by_key(|a| a.at);
    // Walk the recorded stream and the emitted one together. Bytes outside announcement lines keep
    // their value; an announcement line may change its length, which shifts everything after it
    // (`delta`). `literal` maps output offsets of unchanged stretches back to recorded offsets (for P2).
    // A recorded byte the model framed in order must be emitted (a gap does not stall the stream); a
    // byte the recording lacks can never be emitted.
    let mut literal: Vec<(usize, usize, usize)> = Vec::new();
    let mut delta: i64 = 0;
    let mut pos = 0usize;
    let mut stalled = 0usize;
    let mut failed = false;
    let rec_len = recorded.data.len();
    let plain = |from: usize,
                 to: usize,
                 delta: i64,
                 r: &mut Report,
                 stalled: &mut usize,
                 failed: &mut bool| {
        for k in from..to {
            let Some(e) = usize::try_from(k as i64 + delta).ok() else { continue };
            let have_rec = recorded.have.get(k).copied().unwrap_or(false);
            let have_out = emitted.have.get(e).copied().unwrap_or(false);
            if have_out && !have_rec {
                if !*failed {
                    r.fail(format!("P4 control stream {lan:?}: byte {e} emitted where the recording has none (offset {k})"));
                }
                *failed = true;
            } else if have_out && emitted.data[e] != recorded.data[k] {
                if !*failed {
                    r.fail(format!("P4 control stream {lan:?} differs at recorded offset {k}"));
                }
                *failed = true;
            } else if !have_out && have_rec && must(k) {
                *stalled += 1;
            }
        }
    };
    for a in &anns {
        if a.at < pos || a.at > rec_len {
            continue;
        }
        plain(pos, a.at, delta, r, &mut stalled, &mut failed);
        literal.push(((pos as i64 + delta) as usize, pos, a.at - pos));
        let o = (a.at as i64 + delta) as usize;
        let rec_line = &a.line;
        pos = a.at + rec_line.len();
        // The line as it left: contiguous emitted bytes from its start to its line end.
        let mut end = o;
        while emitted.have.get(end).copied().unwrap_or(false) && emitted.data[end] != b'\n' {
            end += 1;
        }
        if !emitted.have.get(end).copied().unwrap_or(false) {
            if (a.at..pos).any(&must) {
                stalled += 1;
            }
            // Not emitted (whole): its length in the output is unknown; assume unchanged.
            continue;
        }
        let out_line = &emitted.data[o..=end];
        let identical = out_line == rec_line.as_slice();
        // A 229 keeps its text when the gateway kept the port: a rewrite may be byte-identical.
        let rewritten = {
            let pre = &rec_line[..a.span.start];
            let post = &rec_line[a.span.end..];
            out_line.len() >= pre.len() + post.len()
                && out_line.starts_with(pre)
                && out_line.ends_with(post)
                && read_rewritten(a.kind, &out_line[pre.len()..out_line.len() - post.len()])
                    .is_some_and(|(addr, port)| addr.is_none_or(|x| x == setup.public_ip) && port != 0)
        };
        let shown = String::from_utf8_lossy(body(rec_line)).to_string();
        let got_shown = String::from_utf8_lossy(body(out_line)).to_string();
        match &a.judgement {
            Judgement::Rewrite { .. } if !rewritten => r.fail(format!(
                "P4 line '{shown}' must be rewritten to the public address; WAN shows '{got_shown}'"
            )),
            Judgement::Refuse(why) if !identical => r.fail(format!(
                "P4 line '{shown}' must be left byte-identical ({why}); WAN shows '{got_shown}'"
            )),
            Judgement::Either(_) if !identical && !rewritten => {
                r.fail(format!("P4 line '{shown}' changed into something that is no rewrite: '{got_shown}'"))
            }
            _ => {}
        }
        if rewritten {
            r.rewrites_seen += 1;
        }
        delta += out_line.len() as i64 - rec_line.len() as i64;
    }
    plain(pos, rec_len, delta, r, &mut stalled, &mut failed);
    literal.push(((pos as i64 + delta).max(0) as usize, pos, rec_len.saturating_sub(pos)));
    let beyond = (rec_len as i64 + delta).max(0) as usize;
    if emitted.have.iter().skip(beyond).any(|&h| h) {
        r.fail(format!("P4 control stream {lan:?}: bytes emitted past the recorded stream's end"));
    }
    if stalled > 0 {
        if alg_drops == 0 {
            r.fail(format!(
                "P4 control stream {lan:?}: {stalled} recorded bytes framed in order never reached the WAN side"
            ));
        } else {
            r.notes
                .push(format!("control stream {lan:?}: {stalled} framed bytes missing (ALG drops counted)"));
        }
    }
    let gaps = recorded.runs().len().saturating_sub(1);
    if gaps > 0 {
        r.notes.push(format!(
            "control stream {lan:?}: {gaps} gap(s) in the recording, emission resumed after each"
        ));
    }
    // Property 2 for lines of this stream: any announcement with an inside address must be a line the
    // model judged refusable, or bytes it found opaque (TLS records, a stream that is not FTP).
    let opaque = model.opaque.get(&(lan, isn)).cloned().unwrap_or_default();
    for run in emitted.runs() {
        let mut at = run.start;
        for line in emitted.data[run.clone()].split(|&b| b == b'\n') {
            let start = at;
            at += line.len() + 1;
            let rec_at = literal
                .iter()
                .find(|(o, _, n)| start >= *o && start < o + n)
                .map(|(o, i, _)| i + (start - o));
            if rec_at.is_some_and(|x| opaque.iter().any(|r| r.contains(&x))) {
                continue;
            }
            if let Some(a) = inside_announcement(setup, line) {
                let ok = anns.iter().any(|x| {
                    body(&x.line) == body(line)
                        && matches!(x.judgement, Judgement::Refuse(_) | Judgement::Either(_))
                });
                if !ok {
                    r.fail(format!(
                        "P2 WAN control stream carries inside address {a} in '{}'",
                        String::from_utf8_lossy(body(line))
                    ));
                }
            }
        }
    }
}

fn same(a: &[u8], b: Option<&[u8]>) -> bool {
    b == Some(a)
}

/// An inside address named by a PORT/EPRT/227 line, if any.
fn inside_announcement(setup: &Setup, line: &[u8]) -> Option<Ipv4Addr> {
    let b = body(line);
    let verb = verb_of(b);
    let addr = if verb == "PORT" {
        let (nums, _) = numbers(b, 5.min(b.len()));
        six(&nums).map(|x| x.0)
    } else if verb == "EPRT" {
        let s = String::from_utf8_lossy(b.get(5..)?).to_string();
        let d = s.chars().next()?;
        let f: Vec<&str> = s.split(d).collect();
        f.get(2).and_then(|a| a.parse().ok())
    } else if b.starts_with(b"227 ") {
        let p = b[4..].iter().position(u8::is_ascii_digit)? + 4;
        six(&numbers(b, p).0).map(|x| x.0)
    } else {
        None
    }?;
    setup.is_inside(IpAddr::V4(addr)).then_some(addr)
}

/// tshark's expert analysis of a capture with checksum validation on: the lines that report a
/// malformed packet or a bad checksum. `None` when tshark is not installed.
pub fn tshark_problems(path: &Path) -> Option<Vec<String>> {
    std::process::Command::new("tshark").arg("--version").output().ok()?;
    let o = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ])
        .args(["-z", "expert,warn", "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let mut bad: Vec<String> = text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("malformed")
                || l.contains("bad checksum")
                || l.contains("checksum_bad")
                || l.contains("incorrect")
        })
        .map(String::from)
        .collect();
    if !o.status.success() {
        bad.push(format!("tshark failed: {text}"));
    }
    Some(bad)
}
