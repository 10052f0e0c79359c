//! In-memory test harness: smoltcp TCP/IP stacks as real FTP peers on a virtual network, with a
//! middlebox (the ftpnat [`Engine`], or the pass-through [`Router`]) between the inside and the outside.
//!
//! Owns: everything under `testkit/src/harness/`. Must not: reach into the engine's internals (it only sees
//! [`Middlebox`]), open real sockets, read a clock or sleep. Time is virtual and advanced by [`net::Net`].
//!
//! Layout: [`net`] (hosts, virtual clock, packet movement, the packet log), [`fault`] (seeded loss,
//! duplication, reordering, taps), [`ftp`] (scripted FTP client and server as step-driven state machines),
//! [`pkt`] (etherparse-based checks and summaries).
//!
//! # Writing an engine test
//!
//! ```ignore
//! use ftpnat_testkit::harness as common;
//! use common::ftp::{ClientConfig, Mode, ServerConfig, Transfer, XferDir};
//! use common::net::{Net, INSIDE_HOST, OUTSIDE_HOST, PUBLIC_IP};
//!
//! let cfg = ftpnat::Config::new(vec!["10.0.0.0/24".parse().unwrap()], PUBLIC_IP);
//! let mut net = Net::new(Box::new(ftpnat::Engine::new(cfg)));
//! // net.faults.rules.push(FaultRule::pre(Filter::TcpPort(21), 0.1, 0.05, 0.1));  // optional
//! let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
//! let client = net.ftp_client(
//!     INSIDE_HOST,
//!     ClientConfig::new(OUTSIDE_HOST, 21)
//!         .transfer(Transfer::new(Mode::Port, XferDir::Retr, "a.bin", 10_000))
//!         .transfer(Transfer::new(Mode::Epsv, XferDir::Stor, "b.bin", 5_000)),
//! );
//! net.run(|n| n.app(client).finished(), 60_000_000); // panics (and prints the packet log) on timeout
//! let (c, s) = (net.app(client), net.app(server));
//! assert!(c.transfers.iter().all(|t| t.ok), "{:?}", c.transfers);
//! assert_eq!(s.received_lines[4], b"PORT 198,51,100,1,...\r\n"); // what the ALG made of the line
//! let engine: &ftpnat::Engine = net.middlebox();                   // metrics, flow count
//! ```
//!
//! The outside-client / inside-server topology is the same with the hosts swapped and the client
//! connecting to [`net::PUBLIC_IP`] (a port forward in the engine's config). Extra hosts:
//! `net.add_host(Side::Outside, THIRD_HOST)`. NAT64: an IPv6-only inside host
//! (`net.add_host(Side::Inside, INSIDE6_HOST)`, a /64 routed via [`net::INSIDE6_GW`]) with an engine
//! configured for [`net::NAT64_PREFIX`] and [`net::INSIDE6_NET`]; its client connects to
//! `nat64_addr(OUTSIDE_HOST)` and uses EPRT/EPSV (PORT cannot name it). Segmentation control: [`ftp::ClientConfig::split`] (split
//! points of each write; chunks leave one per step, or `chunk_gap_us` apart), `pipeline`, `nagle`.
//! Every packet the middlebox emits is checked ([`pkt::check_packet`]); a bad one panics with its hex.
//! On any panic while a [`net::Net`] is alive, the tail of its packet log is printed.
#![allow(dead_code)]

pub mod fault;
pub mod ftp;
pub mod net;
pub mod pkt;

use std::any::Any;

use ftpnat::{Engine, Instant, Side, Verdict};

/// The box between the inside and the outside network.
pub trait Middlebox: Any {
    /// A packet arrives from `from`; return the packets that leave, each with the side it leaves on.
    fn packet(&mut self, now_us: u64, from: Side, pkt: Vec<u8>) -> Vec<(Side, Vec<u8>)>;
    /// When [`Middlebox::timeout`] wants to be called next.
    fn poll_timeout(&self) -> Option<u64>;
    fn timeout(&mut self, now_us: u64) -> Vec<(Side, Vec<u8>)>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// What this middlebox would emit for a packet arriving from `from`, without seeing it (its state
    /// unchanged): the packet as it reaches its receiver by a path around the middlebox. `None` when
    /// the middlebox could not have translated it.
    fn bypass(&self, _from: Side, _pkt: &[u8]) -> Option<(Side, Vec<u8>)> {
        None
    }
}

impl Middlebox for Engine {
    fn packet(&mut self, now_us: u64, from: Side, mut pkt: Vec<u8>) -> Vec<(Side, Vec<u8>)> {
        let mut out = Vec::new();
        // Engine call order: the forwarded buffer first, then whatever poll_transmit releases.
        match self.handle_packet(Instant::from_micros(now_us), from, &mut pkt) {
            Verdict::Forward(side) => out.push((side, pkt)),
            Verdict::Drop(_) | Verdict::Held => {}
        }
        while let Some(t) = self.poll_transmit() {
            out.push((t.side, t.packet));
        }
        out
    }
    fn poll_timeout(&self) -> Option<u64> {
        Engine::poll_timeout(self).map(Instant::as_micros)
    }
    fn timeout(&mut self, now_us: u64) -> Vec<(Side, Vec<u8>)> {
        self.handle_timeout(Instant::from_micros(now_us));
        let mut out = Vec::new();
        while let Some(t) = self.poll_transmit() {
            out.push((t.side, t.packet));
        }
        out
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    /// Translated from the engine's public state (its connection's translated key, the ALG's sequence
    /// maps), exactly as the engine translates an in-order segment of an established connection. A
    /// NAT64 connection's segment goes through the engine's own RFC 7915 translator on the IPv6 side
    /// (the header translation is not what a gap tests; the stream maps are).
    fn bypass(&self, from: Side, pkt: &[u8]) -> Option<(Side, Vec<u8>)> {
        use ftpnat::xlat::{v4_to_v6, v6_to_v4, Params};
        let Some(n) = self.nat64() else { return bypass4(self, pkt) };
        let map = n.map(self.config().lan_ip);
        let mtu = self.config().mtu;
        let params = Params { mtu4: mtu[Side::Outside.index()], mtu6: mtu[Side::Inside.index()], ident: 0 };
        let mut v4 = pkt.to_vec();
        if from == Side::Inside && pkt.first().is_some_and(|b| b >> 4 == 6) {
            v6_to_v4(&mut v4, &map, &params).ok()?;
        }
        let (side, mut out) = bypass4(self, &v4)?;
        let dst = ftpnat::wire::Ipv4Packet::new_checked(&out[..]).ok()?.dst_addr();
        if side == Side::Inside && ftpnat::nat64::is_alias(dst) {
            v4_to_v6(&mut out, &map, &params).ok()?;
        }
        Some((side, out))
    }
}

/// [`Middlebox::bypass`] of an IPv4 segment.
fn bypass4(e: &Engine, pkt: &[u8]) -> Option<(Side, Vec<u8>)> {
    use ftpnat::flow::{Endpoint, FlowKey, Proto};
    use ftpnat::wire::Ipv4Packet;
    let ip = Ipv4Packet::new_checked(pkt).ok()?;
    let t = ip.tcp().ok()?;
    let key = FlowKey::new(
        Proto::Tcp,
        Endpoint::new(ip.src_addr(), t.src_port()),
        Endpoint::new(ip.dst_addr(), t.dst_port()),
    );
    let (id, dir) = e.table().lookup(&key)?;
    let conn = e.table().get(id)?;
    let to = conn.translated(dir);
    let (mut seq, mut ack) = (t.seq_number(), t.ack_number());
    if let Some(a) = &conn.alg {
        seq = a.stream.map_seq(dir, seq);
        if t.flags().ack {
            ack = a.stream.unmap_ack(dir.reverse(), ack);
        }
    }
    let mut out = pkt.to_vec();
    let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
    ip.set_src_addr(to.src.addr);
    ip.set_dst_addr(to.dst.addr);
    let ttl = ip.ttl();
    ip.set_ttl(ttl.saturating_sub(1));
    let mut t = ip.tcp_mut().ok()?;
    t.set_src_port(to.src.port);
    t.set_dst_port(to.dst.port);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    Some((conn.egress(dir), out))
}

/// A plain router: every packet leaves unchanged on the other side. Outside hosts reach 10.0.0.2 directly.
#[derive(Debug, Default)]
pub struct Router {
    pub forwarded: u64,
}

impl Middlebox for Router {
    fn packet(&mut self, _now_us: u64, from: Side, pkt: Vec<u8>) -> Vec<(Side, Vec<u8>)> {
        self.forwarded += 1;
        vec![(from.other(), pkt)]
    }
    fn poll_timeout(&self) -> Option<u64> {
        None
    }
    fn timeout(&mut self, _now_us: u64) -> Vec<(Side, Vec<u8>)> {
        Vec::new()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough to drive test faults.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[0, n)`; `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
