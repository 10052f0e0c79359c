//! Scripted FTP peers on smoltcp TCP sockets, as step-driven state machines (no threads): a server that
//! behaves like vsftpd where it matters to an ALG, and a client that behaves like a client behind NAT.
//!
//! Split by concept: this file holds what both peers share (the text of announcements, deterministic
//! file contents, write splitting, line reading, socket helpers); [`server`] the scripted server,
//! [`client`] the scripted client.
//!
//! Owns: the FTP dialogue (RFC 959, RFC 2428), data connections, deterministic file contents, and the
//! transcripts tests compare. Must not: move packets or advance time ([`super::net::Net`] polls these
//! apps), or know whether a NAT sits in between.
//!
//! Both peers record the raw bytes of every control line they sent and received, line ends included,
//! and the whole control stream in each direction. Control writes go through an outbox: each write can be
//! cut at chosen offsets ([`Splitter`]); the pieces leave one per step (or `chunk_gap_us` apart), so
//! with Nagle off each piece is its own segment.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};

use smoltcp::socket::tcp::{self, State};

use super::net::{App, AppCx};
use super::SplitMix64;

mod client;
mod server;
pub use client::*;
pub use server::*;

/// Given the bytes of one control write, the offsets to cut it at (out-of-range and duplicate offsets are
/// ignored).
pub type Splitter = Box<dyn FnMut(&[u8]) -> Vec<usize>>;

/// Splits every write that starts with `prefix` at `points`; other writes stay whole.
pub fn split_lines_starting(prefix: &'static [u8], points: Vec<usize>) -> Splitter {
    Box::new(move |w: &[u8]| if w.starts_with(prefix) { points.clone() } else { Vec::new() })
}

/// The deterministic content of file `name` (`len` bytes): both peers generate it to check transfers.
pub fn file_bytes(name: &str, len: usize) -> Vec<u8> {
    // FNV-1a of the name seeds the stream, so different files differ.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SplitMix64::new(h);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2, PORT argument and 227 text).
pub fn format_host_port(addr: Ipv4Addr, port: u16) -> String {
    let o = addr.octets();
    format!("{},{},{},{},{},{}", o[0], o[1], o[2], o[3], port >> 8, port & 0xff)
}

/// Parses `h1,h2,h3,h4,p1,p2` (spaces around numbers allowed).
pub fn parse_host_port(s: &str) -> Option<(Ipv4Addr, u16)> {
    let n: Vec<u8> = s.split(',').map(|x| x.trim().parse::<u8>()).collect::<Result<_, _>>().ok()?;
    if n.len() != 6 {
        return None;
    }
    Some((Ipv4Addr::new(n[0], n[1], n[2], n[3]), u16::from(n[4]) << 8 | u16::from(n[5])))
}

/// Parses an EPRT argument `<d>1<d>addr<d>port<d>` (RFC 2428 §2); only IPv4 (family 1).
pub fn parse_eprt_arg(s: &str) -> Option<(Ipv4Addr, u16)> {
    match parse_eprt_any(s)? {
        (IpAddr::V4(a), p) => Some((a, p)),
        (IpAddr::V6(_), _) => None,
    }
}

/// Parses an EPRT argument of family 1 (IPv4) or 2 (IPv6), the family matching the address.
pub fn parse_eprt_any(s: &str) -> Option<(IpAddr, u16)> {
    let d = s.chars().next()?;
    if !('!'..='~').contains(&d) {
        return None;
    }
    let parts: Vec<&str> = s.split(d).collect();
    if parts.len() != 5 || !parts[0].is_empty() || !parts[4].trim().is_empty() {
        return None;
    }
    let addr: IpAddr = match parts[1] {
        "1" => IpAddr::V4(parts[2].parse().ok()?),
        "2" => IpAddr::V6(parts[2].parse().ok()?),
        _ => return None,
    };
    Some((addr, parts[3].parse().ok()?))
}

/// The EPRT argument naming `addr` (RFC 2428 §2: family 1 for IPv4, 2 for IPv6), `|` delimited.
pub fn format_eprt_arg(addr: IpAddr, port: u16) -> String {
    let family = if addr.is_ipv4() { 1 } else { 2 };
    format!("|{family}|{addr}|{port}|")
}

/// Parses a 227 reply's text the way curl does: the first run of digits and commas after the code.
pub fn parse_227(line: &str) -> Option<(Ipv4Addr, u16)> {
    let rest = line.get(4..)?;
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let run: String = rest[start..].chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    parse_host_port(run.trim_end_matches(','))
}

/// Parses the port out of a 229 reply `(<d><d><d>port<d>)` (RFC 2428 §3).
pub fn parse_229(line: &str) -> Option<u16> {
    let open = line.find('(')?;
    let inner = &line[open + 1..];
    let d = inner.chars().next()?;
    let rest = inner.strip_prefix(d)?.strip_prefix(d)?.strip_prefix(d)?;
    let end = rest.find(d)?;
    rest[..end].parse().ok()
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn new_socket(buf: usize, nagle: bool) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buf]), tcp::SocketBuffer::new(vec![0; buf]));
    s.set_nagle_enabled(nagle);
    s.set_ack_delay(None);
    s
}

const CTRL_BUF: usize = 16 * 1024;
const DATA_BUF: usize = 32 * 1024;

/// Splits a byte stream into lines ending in LF (a bare LF ends a line too); keeps the rest.
#[derive(Debug, Default)]
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            lines.push(self.buf.drain(..=i).collect());
        }
        lines
    }
}

/// Pending control writes, cut into pieces that leave one per poll.
struct Outbox {
    chunks: VecDeque<Vec<u8>>,
    split: Option<Splitter>,
    gap_us: u64,
    last_us: Option<u64>,
    /// The socket could not take the front piece at the last poll; packets will wake us.
    blocked: bool,
}

impl Outbox {
    fn new(split: Option<Splitter>, gap_us: u64) -> Outbox {
        Outbox { chunks: VecDeque::new(), split, gap_us, last_us: None, blocked: false }
    }

    fn push(&mut self, bytes: Vec<u8>) {
        let mut points = self.split.as_mut().map(|f| f(&bytes)).unwrap_or_default();
        points.retain(|&p| p > 0 && p < bytes.len());
        points.sort_unstable();
        points.dedup();
        let mut start = 0;
        for p in points {
            self.chunks.push_back(bytes[start..p].to_vec());
            start = p;
        }
        self.chunks.push_back(bytes[start..].to_vec());
    }

    fn due(&self, now: u64) -> u64 {
        self.last_us.map_or(now, |l| l + self.gap_us)
    }

    fn flush(&mut self, s: &mut tcp::Socket<'static>, now: u64, stream: &mut Vec<u8>) {
        self.blocked = false;
        let Some(c) = self.chunks.front() else { return };
        if self.last_us.is_some_and(|l| now < l + self.gap_us) {
            return;
        }
        if !s.may_send() || s.send_capacity() - s.send_queue() < c.len() {
            self.blocked = true;
            return;
        }
        let n = s.send_slice(c).unwrap_or(0);
        debug_assert_eq!(n, c.len());
        stream.extend_from_slice(c);
        self.chunks.pop_front();
        self.last_us = Some(now);
    }

    fn poll_at(&self, now_hint: u64) -> Option<u64> {
        if self.chunks.is_empty() || self.blocked {
            None
        } else {
            Some(self.due(now_hint))
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

fn read_all(s: &mut tcp::Socket<'static>, into: &mut Vec<u8>) -> usize {
    let mut n = 0;
    while s.can_recv() {
        let got = s
            .recv(|b| {
                into.extend_from_slice(b);
                (b.len(), b.len())
            })
            .unwrap_or(0);
        if got == 0 {
            break;
        }
        n += got;
    }
    n
}

fn endpoint(s: &tcp::Socket<'static>) -> Option<(IpAddr, u16)> {
    let ep = s.remote_endpoint()?;
    Some((IpAddr::from(ep.addr), ep.port))
}

fn is_connected(state: State) -> bool {
    !matches!(state, State::Closed | State::Listen | State::SynSent | State::SynReceived)
}
