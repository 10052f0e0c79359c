//! The sans-IO core: one packet in, translated packets out.
//!
//! Owns: the order in which a packet meets the router checks (RFC 1812), the connection table, the
//! NAT, the ALG and the sequence maps; the ICMP errors the gateway originates; translating fragments
//! (their state and its per-source shares are [`crate::frag`]'s).
//! Must not: read a clock, make a syscall or spawn a thread. Time enters as a parameter.
//!
//! Call order, per packet: [`Engine::handle_packet`]; on [`Verdict::Forward`] write the (possibly
//! modified) buffer to the named side; then drain [`Engine::poll_transmit`] and write each packet to its
//! side. Between packets, wait until [`Engine::poll_timeout`] and call [`Engine::handle_timeout`] when
//! it passes (then drain `poll_transmit` again). The same calls drive the TUN loop, `ftpnat replay` and
//! the in-memory tests.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use crate::alg::ftp::FtpSession;
use crate::alg::{AlgCtx, Pinholes};
use crate::config::Config;
use crate::conntrack::refused::Refused;
use crate::conntrack::{Conn, Full, Origin, Plain, Table, TcpSeg, TcpState, Window};
use crate::events::{DestroyReason, Event, Events};
use crate::flow::{ConnId, Dir, Endpoint, FlowKey, Proto, Side};
use crate::frag::{self, FragKey, Fragments};
use crate::metrics::{DropReason, Metrics};
use crate::nat::{self, Nat};
use crate::time::Instant;
use crate::wire::{icmp, ipv4, Ipv4Packet, SeqNum, TcpFlags};

#[path = "engine_nat64.rs"]
mod nat64_steps;

/// Whether an ALG segment's acknowledgement may move the ALG's state (prune the other direction's edit
/// history, jump a gap): only when the window tracker accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckUse {
    Act,
    Ignore,
}

/// What to do with the packet handed to [`Engine::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the (modified) buffer to this side.
    Forward(Side),
    /// Nothing leaves for this packet; the reason is already counted.
    Drop(DropReason),
    /// The engine kept the packet (a fragment waiting for its first fragment); it leaves later through
    /// [`Engine::poll_transmit`], or is counted as a drop when its wait ends.
    Held,
}

/// A packet the engine originates or releases on its own: ICMP errors, split segments, released bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub side: Side,
    pub packet: Vec<u8>,
}

/// RFC 1812 §4.3.2.8: a router must be able to limit the rate of ICMP errors it sends.
const ICMP_ERRORS_PER_SEC: u32 = 200;
/// RFC 9293 §3.7.1: the MSS a host may assume when its peer announced none.
const DEFAULT_MSS: usize = 536;

/// What a packet says about its flow, read once.
#[derive(Debug, Clone, Copy)]
struct Head {
    key: FlowKey,
    /// The TCP flags byte as sent (0 for UDP and ICMP): decoded where needed, tested whole on the
    /// per-packet path.
    tcp_flags: u8,
    first_fragment: bool,
    fragmented: bool,
    icmp_request: bool,
}

impl Head {
    fn flags(&self) -> TcpFlags {
        TcpFlags::from_byte(self.tcp_flags)
    }

    /// An ACK with no SYN, RST or FIN: the per-packet case.
    #[inline]
    fn plain_ack(&self) -> bool {
        const ACK: u8 = 0x10;
        self.tcp_flags & (ACK | 0x04 | 0x02 | 0x01) == ACK
    }
}

/// What the window tracker reads of an unfragmented TCP segment `head` accepted: read on the TCP path
/// only (kept out of [`Head`], which every packet carries).
#[derive(Debug, Clone, Copy)]
struct TcpFields {
    seq: SeqNum,
    ack: SeqNum,
    win: u16,
    /// Payload bytes (SYN and FIN not counted).
    payload: u32,
}

impl TcpFields {
    /// The fields of a datagram whose TCP header `Engine::head` checked (a shorter one reads as zeros).
    #[inline]
    fn read(pkt: &[u8]) -> TcpFields {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let t = ip.payload();
        let Some(h) = t.get(..20) else {
            return TcpFields { seq: SeqNum::new(0), ack: SeqNum::new(0), win: 0, payload: 0 };
        };
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        TcpFields {
            seq: SeqNum::new(word(4)),
            ack: SeqNum::new(word(8)),
            win: u16::from_be_bytes([h[14], h[15]]),
            payload: t.len().saturating_sub(usize::from(h[12] >> 4) * 4) as u32,
        }
    }

    /// As the per-packet path takes them (for a segment with no SYN, RST or FIN).
    #[inline]
    fn plain(&self) -> Plain {
        Plain { seq: self.seq, ack: self.ack, len: self.payload, win: self.win }
    }
}

pub struct Engine {
    config: Config,
    metrics: Metrics,
    out: VecDeque<Transmit>,
    table: Table,
    nat: Nat,
    pinholes: Pinholes,
    frags: Fragments,
    /// ALG connections holding bytes back, with the last header of that direction to send them with.
    held: HashMap<(ConnId, Dir), Vec<u8>>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    now: Instant,
    /// For `ftpnat events`; off unless [`Engine::set_events`] turns it on.
    events: Events,
    /// Set while [`Engine::handle_aggregate`] runs: the datagram is larger than the MTU on purpose.
    aggregate: bool,
    /// Inbound TCP openings refused lately: the inside host's answers to them open nothing.
    refused: Refused,
    /// NAT64 (`--nat64-prefix`): IPv6 LAN hosts and their IPv4 stand-ins (`engine_nat64.rs`).
    nat64: Option<crate::nat64::Nat64State>,
    /// Set while the IPv4 path handles a packet NAT64 translated from IPv6: its source is a stand-in.
    xlat_in: bool,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        // Issue 16: the pool, paired pooling and the allocation mode; one address and one port at a
        // time unless configured.
        let mut nat = Nat::with_setup(&config.nat_setup());
        for f in &config.forwards {
            for at in config.forward_reservations(f) {
                let _ = nat.reserve_public(f.proto, nat::PublicEndpoint::new(at, f.public_port));
            }
            nat.pin(f.inside_addr, config.forward_addr(f));
        }
        Engine {
            table: Table::new(config.max_flows, config.max_flows_per_host),
            nat,
            pinholes: Pinholes::default(),
            frags: Fragments::default(),
            held: HashMap::new(),
            metrics: Metrics::default(),
            out: VecDeque::new(),
            icmp_tokens: ICMP_ERRORS_PER_SEC,
            icmp_refill: Instant::ZERO,
            now: Instant::ZERO,
            events: Events::default(),
            aggregate: false,
            refused: Refused::default(),
            nat64: config.nat64.clone().map(crate::nat64::Nat64State::new),
            xlat_in: false,
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn flow_count(&self) -> usize {
        self.table.len()
    }
    pub fn table(&self) -> &Table {
        &self.table
    }
    pub fn pinholes(&self) -> &Pinholes {
        &self.pinholes
    }
    pub fn nat(&self) -> &Nat {
        &self.nat
    }
    /// The allocation records (port blocks, sessions, exhaustion) for the shell's exporters to drain.
    pub fn nat_log_mut(&mut self) -> &mut nat::Log {
        self.nat.log_mut()
    }
    /// Turns allocation records on (an exporter is configured): blocks and alarms, and one record per
    /// connection when `--nat-log-sessions` asked for it.
    pub fn set_nat_log(&mut self, on: bool) {
        let sessions = on && self.config.pool.log_sessions;
        self.nat.log_mut().set_policy(nat::LogPolicy { enabled: on, sessions });
    }
    /// The records the gateway's stop owes its collectors, stamped `now`: a session delete for every
    /// logged connection still open (with `--nat-log-sessions`), then a release for every port block
    /// still held. Nothing when logging is off. Returned rather than queued: the bounded log queue
    /// would drop some of a large table's.
    pub fn nat_stop_records(&self, now: Instant) -> Vec<nat::Record> {
        let policy = self.nat.log().policy();
        if !policy.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        if policy.sessions {
            for (_, conn) in self.table.iter() {
                let Some(ep) = conn.mapping() else { continue };
                out.push(nat::Record::SessionDeleted {
                    at: now,
                    since: conn.created(),
                    proto: conn.proto(),
                    inside: nat::InsideEndpoint::from_endpoint(ep),
                    inside6: self.nat.log().host6(ep.addr),
                    public: nat::PublicEndpoint::from_endpoint(public_endpoint(conn)),
                    remote: remote_endpoint(conn),
                });
            }
        }
        out.extend(self.nat.stop_records(now));
        out
    }
    pub fn fragments(&self) -> &Fragments {
        &self.frags
    }
    /// NAT64's IPv6 hosts and their stand-ins (`None` without `--nat64-prefix`).
    pub fn nat64(&self) -> Option<&crate::nat64::Nat64State> {
        self.nat64.as_ref()
    }

    /// Records [`Event`]s for [`Engine::poll_event`] (off by default; off again forgets the queue).
    pub fn set_events(&mut self, on: bool) {
        self.events.set_enabled(on);
        self.nat.log_mut().set_mirror(on);
    }
    /// The oldest recorded event not yet taken.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }
    /// Events lost because nobody took them in time (the queue is bounded).
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    /// Applies the part of `new` that can change under live flows (SIGHUP): idle timeouts (a flow takes
    /// its new timeout at its next packet), FTP ALG policy (new control connections; live ones keep
    /// their state), table limits and the per-host port share (existing flows and mappings stay) and
    /// forwards added or removed (flows through a removed forward stay). Addresses, port range, MTUs
    /// and translation keep their running values. Returns one line per forward it could not add.
    /// `new` must have passed [`Config::validate`].
    pub fn reconfigure(&mut self, new: &Config) -> Vec<String> {
        let mut refused = Vec::new();
        let mut cfg = self.config.clone();
        cfg.timeouts = new.timeouts;
        cfg.ftp = new.ftp.clone();
        (cfg.max_flows, cfg.max_flows_per_host) = (new.max_flows, new.max_flows_per_host);
        self.table.set_limits(new.max_flows, new.max_flows_per_host);
        cfg.max_ports_per_host = new.max_ports_per_host;
        // The share is of the running port range (a new range needs a restart).
        self.nat.set_host_quota(cfg.ports_per_host());
        for f in self.config.forwards.iter().filter(|f| !new.forwards.contains(f)) {
            cfg.forwards.retain(|g| g != f);
            // With several workers a forwarded port number is held on every address, for every forward
            // of that number: it goes back only with the last of them.
            let shared = |g: &crate::config::Forward| g.proto == f.proto && g.public_port == f.public_port;
            if self.config.shard.count > 1 && cfg.forwards.iter().any(shared) {
                continue;
            }
            for at in self.config.forward_reservations(f) {
                self.nat.unreserve_public(f.proto, nat::PublicEndpoint::new(at, f.public_port));
            }
        }
        for f in new.forwards.iter().filter(|f| !self.config.forwards.contains(f)) {
            let at = self.config.forward_addr(f);
            if !self.nat.is_public(at) {
                refused.push(format!(
                    "--forward {f}: {at} is not in the running pool (a new pool needs a restart); not added"
                ));
                continue;
            }
            let mut held = Vec::new();
            let mut busy = false;
            for a in self.config.forward_reservations(f) {
                let ep = nat::PublicEndpoint::new(a, f.public_port);
                match self.nat.reserve_public(f.proto, ep) {
                    Ok(()) => held.push(ep),
                    Err(nat::ReserveError::NotInPool) => {}
                    // Held by a live mapping; else by another forward of that number (several workers).
                    Err(nat::ReserveError::InUse) => busy |= self.nat.inside_of(f.proto, ep).is_some(),
                }
            }
            if busy {
                // A live mapping holds the port: reserving it now would hand it out twice later.
                for ep in held {
                    self.nat.unreserve_public(f.proto, ep);
                }
                refused.push(format!("--forward {f}: public port in use by a live mapping; not added"));
            } else {
                cfg.forwards.push(*f);
            }
        }
        self.nat.clear_pins();
        for f in &cfg.forwards {
            self.nat.pin(f.inside_addr, cfg.forward_addr(f));
        }
        self.config = cfg;
        refused
    }

    /// `packet` is one IPv4 datagram as it arrived on `from`. It may be modified, grown or shrunk.
    pub fn handle_packet(&mut self, now: Instant, from: Side, packet: &mut Vec<u8>) -> Verdict {
        self.now = self.now.max(now);
        self.metrics.packets_in[from.index()] += 1;
        self.metrics.bytes_in[from.index()] += packet.len() as u64;
        let v = if from == Side::Inside && self.nat64.is_some() && packet.first().is_some_and(|b| b >> 4 == 6)
        {
            self.nat64_in(packet)
        } else {
            self.process(from, packet)
        };
        let v = match v {
            Verdict::Forward(Side::Inside) if self.nat64.is_some() => match self.nat64_out(packet) {
                Ok(more) => {
                    self.out.extend(more.into_iter().map(|p| Transmit { side: Side::Inside, packet: p }));
                    v
                }
                Err(r) => Verdict::Drop(r),
            },
            v => v,
        };
        self.mirror_nat_events();
        match v {
            Verdict::Forward(side) => {
                self.metrics.packets_out[side.index()] += 1;
                self.metrics.bytes_out[side.index()] += packet.len() as u64;
            }
            Verdict::Drop(r) => {
                self.metrics.drop(r);
                tracing::debug!(target: "ftpnat::drop", reason = r.name(), side = %from, packet = %summary(packet), "drop");
            }
            Verdict::Held => {}
        }
        v
    }

    /// A TCP aggregate from a device with segmentation offload: one IPv4/TCP datagram, usually larger
    /// than the MTU, whose payload the device cuts into `seg`-byte segments on the wire (`segs` of them).
    /// It is translated whole, exactly as each of its segments would be, when its connection needs
    /// nothing per segment. Returns `None`, having changed and counted nothing, when the caller must
    /// hand the segments over one by one instead: a connection the FTP ALG watches (its line framing
    /// and sequence maps work per segment), a packet that opens or would be refused or answered with
    /// an ICMP error (those outcomes are per segment), or a segment size the egress MTU cannot carry.
    /// The aggregate's TCP checksum field is the device's business (it is completed per segment on
    /// the wire): it is updated like any other but must not be relied on.
    pub fn handle_aggregate(
        &mut self,
        now: Instant,
        from: Side,
        packet: &mut Vec<u8>,
        seg: usize,
        segs: u64,
    ) -> Option<Verdict> {
        if !self.aggregate_ok(from, packet, seg) {
            return None;
        }
        self.now = self.now.max(now);
        self.metrics.packets_in[from.index()] += segs;
        self.metrics.bytes_in[from.index()] += packet.len() as u64;
        self.aggregate = true;
        let v = self.process(from, packet);
        self.aggregate = false;
        match v {
            Verdict::Forward(side) => {
                self.metrics.packets_out[side.index()] += segs;
                self.metrics.bytes_out[side.index()] += packet.len() as u64;
            }
            Verdict::Drop(r) => self.metrics.drop(r),
            Verdict::Held => {}
        }
        Some(v)
    }

    /// Whether [`Engine::process`] would simply translate (or route) this aggregate: read-only.
    fn aggregate_ok(&self, from: Side, pkt: &[u8], seg: usize) -> bool {
        let Ok(ip) = Ipv4Packet::new_checked(pkt) else { return false };
        if ip.total_len() != pkt.len() || ip.protocol() != 6 || ip.more_frags() || ip.frag_offset() > 0 {
            return false;
        }
        if ip.ttl() <= 1 || (self.config.verify_ip_checksum && !ip.verify_header_checksum()) {
            return false;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let inside = self.config.is_inside(src);
        if inside != (from == Side::Inside) {
            return false;
        }
        if !self.config.translate {
            return true;
        }
        if (from == Side::Outside && !self.nat.is_public(dst)) || (inside && dst == self.config.lan_ip) {
            return false;
        }
        let Ok(tcp) = ip.tcp() else { return false };
        let f = tcp.flags();
        if f.syn || f.rst || f.fin {
            return false;
        }
        let key =
            FlowKey::new(Proto::Tcp, Endpoint::new(src, tcp.src_port()), Endpoint::new(dst, tcp.dst_port()));
        let Some((id, dir)) = self.table.lookup(&key) else { return false };
        let Some(conn) = self.table.get(id) else { return false };
        let headers = ip.header_len() + tcp.header_len();
        if conn.side(dir) != from
            || conn.ftp.is_some()
            || (self.nat64.is_some() && crate::nat64::is_alias(conn.translated(dir).dst.addr))
            || headers + seg > self.config.mtu[conn.egress(dir).index()] as usize
        {
            return false;
        }
        // In the window as a whole exactly when its first and its last segment are: anything else is
        // judged segment by segment.
        let total = tcp.payload().len() as u32;
        let last_at = (total.saturating_sub(1) / (seg.max(1) as u32)) * seg.max(1) as u32;
        let piece = |at: u32, len: u32| TcpSeg {
            seq: tcp.seq_number().add(at),
            ack: Some(tcp.ack_number()).filter(|_| f.ack),
            len,
            win: tcp.window(),
            syn: false,
            fin: false,
            rst: false,
            wscale: None,
        };
        let w = conn.window();
        w.check(dir, &piece(0, (seg as u32).min(total))) == Window::Accept
            && w.check(dir, &piece(last_at, total - last_at)) == Window::Accept
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let mut t = self.out.pop_front()?;
        while t.side == Side::Inside && self.nat64.is_some() {
            match self.nat64_out(&mut t.packet) {
                Ok(more) => {
                    for p in more.into_iter().rev() {
                        self.out.push_front(Transmit { side: Side::Inside, packet: p });
                    }
                    break;
                }
                Err(r) => {
                    self.metrics.drop(r);
                    t = self.out.pop_front()?;
                }
            }
        }
        self.metrics.packets_out[t.side.index()] += 1;
        self.metrics.bytes_out[t.side.index()] += t.packet.len() as u64;
        Some(t)
    }

    /// The earliest time [`Engine::handle_timeout`] has work to do (it may be early, never late).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.table.next_deadline();
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.pinholes.next_deadline());
        consider(self.frags.next_deadline());
        consider(self.nat.next_deadline());
        for &(id, dir) in self.held.keys() {
            let d = self
                .table
                .get(id)
                .and_then(|c| c.ftp.as_ref())
                .and_then(|s| s.streams[dir.index()].hold_deadline(self.config.ftp.hold_timeout));
            consider(d);
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        while let Some(id) = self.table.pop_expired(now) {
            self.metrics.flows_expired += 1;
            self.destroy(id, DestroyReason::Expired);
        }
        self.pinholes.expire(now, &mut self.nat, &mut self.metrics, &mut self.events);
        while let Some(w) = self.frags.pop_expired_waiting(now) {
            self.metrics.drop(DropReason::FragmentNoState);
            tracing::debug!(target: "ftpnat::drop", reason = "fragment_no_state", side = %w.from, packet = %summary(&w.packet), "drop");
        }
        self.frags.expire_states(now);
        self.nat.handle_timeout(now);
        self.mirror_nat_events();
        self.release_held(now);
    }

    /// Moves the allocator's block and alarm records to the events (only while they are followed).
    #[inline]
    fn mirror_nat_events(&mut self) {
        if self.events.enabled() {
            while let Some(r) = self.nat.log_mut().pop_mirrored() {
                self.events.push(|| Event::Nat(r));
            }
        }
    }

    fn destroy(&mut self, id: ConnId, why: DestroyReason) {
        let Some(mut conn) = self.table.remove(id) else { return };
        if let Some(ep) = conn.mapping() {
            let (now, public) = (self.now, public_endpoint(&conn));
            self.nat.log_mut().push_session(|| nat::Record::SessionDeleted {
                at: now,
                since: conn.created(),
                proto: conn.proto(),
                inside: nat::InsideEndpoint::from_endpoint(ep),
                inside6: None,
                public: nat::PublicEndpoint::from_endpoint(public),
                remote: remote_endpoint(&conn),
            });
            self.nat.release(conn.proto(), ep, self.now);
        }
        // After the record: a NAT64 stand-in given back here loses its name (`inside6`) with it.
        self.nat64_hold(&conn, false);
        if let Some(mut s) = conn.ftp.take() {
            let mut ctx = AlgCtx {
                nat: &mut self.nat,
                pinholes: &mut self.pinholes,
                metrics: &mut self.metrics,
                policy: &self.config.ftp,
                public_ip: public_endpoint(&conn).addr,
                now: self.now,
                control: id,
                events: &mut self.events,
            };
            s.close(&mut ctx);
            self.held.remove(&(id, Dir::Original));
            self.held.remove(&(id, Dir::Reply));
        }
        let (flow, packets) = (conn.key(Dir::Original), conn.packets());
        tracing::debug!(target: "ftpnat::flow", event = "destroy", id = %id, why = why.name(), flow = %flow,
            packets_orig = packets[0], packets_reply = packets[1], "flow destroyed");
        self.events.push(|| Event::FlowDestroy {
            id,
            orig: conn.key(Dir::Original),
            reply: conn.key(Dir::Reply),
            why,
            packets: conn.packets(),
            bytes: conn.bytes(),
        });
    }

    fn process(&mut self, from: Side, pkt: &mut Vec<u8>) -> Verdict {
        let total = match Ipv4Packet::new_checked(&pkt[..]) {
            Ok(ip) => ip.total_len(),
            Err(_) if pkt.first().is_some_and(|b| b >> 4 == 6) => return Verdict::Drop(DropReason::NotIpv4),
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        // Link-layer padding past the IP total length is not part of the datagram.
        pkt.truncate(total);
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        if self.config.verify_ip_checksum && !ip.verify_header_checksum() {
            return Verdict::Drop(DropReason::BadIpChecksum);
        }
        let (src, dst, ttl) = (ip.src_addr(), ip.dst_addr(), ip.ttl());
        if self.nat64.is_some()
            && !self.xlat_in
            && (crate::nat64::is_alias(src) || crate::nat64::is_alias(dst))
        {
            // 240.0.0.0/4 stands for IPv6 hosts and is never on either wire (see `nat64`).
            return Verdict::Drop(DropReason::Martian);
        }
        match from {
            Side::Inside if !self.config.is_inside(src) && !self.xlat_in => {
                return Verdict::Drop(DropReason::SpoofedSource)
            }
            Side::Outside if self.config.is_inside(src) => return Verdict::Drop(DropReason::Martian),
            _ => {}
        }
        if !self.config.translate {
            // Forward-only mode: the benchmark ceiling of the same I/O path, a router without NAT.
            if ttl <= 1 {
                self.icmp_error_to(from, pkt, 11, 0, 0);
                return Verdict::Drop(DropReason::TtlExceeded);
            }
            Ipv4Packet::new_unchecked(&mut pkt[..]).set_ttl(ttl - 1);
            return Verdict::Forward(from.other());
        }
        if from == Side::Outside && !self.nat.is_public(dst) {
            return Verdict::Drop(DropReason::Martian);
        }
        if from == Side::Inside && dst == self.config.lan_ip {
            return self.local(from, pkt);
        }
        // RFC 1812 §5.3.1: a router that would forward with TTL 0 discards and says so.
        if ttl <= 1 {
            self.icmp_error_to(from, pkt, 11, 0, 0);
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        if ip.frag_offset() > 0 {
            return self.later_fragment(from, pkt);
        }
        let head = match self.head(pkt) {
            Ok(h) => h,
            Err(v) => return v,
        };
        let head = match head {
            Some(h) => h,
            None => return self.icmp_error_in(from, pkt),
        };
        let mut found = self.table.lookup(&head.key);
        if let Some((id, Dir::Original)) = found {
            // RFC 9293 §3.10.7.4: a new SYN may reopen a connection whose ports were just closed (or
            // reset, RFC 7857 §2.2), or start over before its handshake completed (§3.10.7.2) with
            // another ISN. It is a new byte stream: the old one's window, sequence maps and line framing
            // must not apply to it (they would shift its SYN and refuse all its data as a gap).
            let reopen = head.flags().syn && !head.flags().ack;
            if reopen
                && self.table.get(id).is_some_and(|c| match c.tcp() {
                    TcpState::Closed | TcpState::Reset => true,
                    TcpState::SynSent => {
                        c.window().end(Dir::Original) != Some(TcpFields::read(pkt).seq.add(1))
                    }
                    _ => false,
                })
            {
                self.destroy(id, DestroyReason::Reopened);
                found = None;
            }
        }
        let (id, dir) = match found {
            Some(found) => found,
            None => match self.create(from, &head) {
                Ok(found) => found,
                Err(Verdict::Drop(DropReason::NoMapping)) if head.icmp_request && self.nat.is_public(dst) => {
                    return self.local(from, pkt);
                }
                Err(v) => {
                    if from == Side::Outside
                        && head.key.proto == Proto::Tcp
                        && head.flags().syn
                        && !head.flags().ack
                    {
                        // Refused means refused: whatever the inside host sends in answer opens nothing.
                        self.refused.refuse(head.key.src, head.key.dst.port, self.now);
                    }
                    return v;
                }
            },
        };
        let conn = self.table.get(id).expect("indexed connection exists");
        if conn.side(dir) != from {
            return Verdict::Drop(DropReason::Martian);
        }
        let egress = conn.egress(dir);
        let to = conn.translated(dir);
        let has_alg = conn.ftp.is_some();
        let mtu = self.nat64_mtu(egress, to.dst.addr);
        let dont_frag = Ipv4Packet::new_unchecked(&pkt[..]).dont_frag();
        if pkt.len() > mtu && dont_frag && !has_alg && !self.aggregate {
            // RFC 1191 §4: tell the sender the next-hop MTU so path-MTU discovery works through us.
            self.icmp_error_to(from, pkt, 3, 4, mtu as u32 & 0xffff);
            return Verdict::Drop(DropReason::FragNeeded);
        }
        if has_alg && head.fragmented {
            return Verdict::Drop(DropReason::FragmentedControl);
        }
        if head.key.proto == Proto::Tcp {
            match self.touch_tcp(id, dir, &head, pkt) {
                Window::Accept => {}
                Window::Beyond(why) => {
                    tracing::debug!(target: "ftpnat::tcp", id = %id, ?dir, why = why.name(), "segment beyond the window");
                    return Verdict::Drop(DropReason::TcpOutOfWindow);
                }
                Window::RstNotExact => {
                    // Passed on as it is (translated), changing nothing: the receiver judges it.
                    self.metrics.tcp_rst_ignored += 1;
                    if has_alg {
                        return self.alg_passthrough(id, dir, pkt);
                    }
                }
                Window::Behind(_) => {
                    // An old duplicate or a stale acknowledgement: passed on, changing no connection
                    // state. On an ALG connection its bytes still go through the stream (a range the
                    // ALG rewrote is rebuilt from the edit history, never sent as the sender wrote it
                    // a second time; new bytes are framed), but its ACK moves nothing: no prune of the
                    // edit history, no gap jumped.
                    self.metrics.tcp_window_ignored += 1;
                    if has_alg {
                        return self.alg(id, dir, pkt, AckUse::Ignore);
                    }
                }
            }
        } else {
            self.touch(id, dir, pkt.len());
        }
        if has_alg {
            return self.alg(id, dir, pkt, AckUse::Act);
        }
        translate(pkt, head.key.proto, &to, head.first_fragment);
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.set_ttl(ttl - 1);
        if head.fragmented {
            let k = FragKey { src, dst, proto: head.key.proto.number(), ident: ip.ident() };
            self.remember_fragment(k, to.src.addr, to.dst.addr, egress);
        }
        self.fit_mtu(pkt, egress)
    }

    /// Splits a datagram larger than the egress MTU (DF clear) into fragments (RFC 791 §3.2).
    fn fit_mtu(&mut self, pkt: &mut Vec<u8>, egress: Side) -> Verdict {
        let mtu = self.config.mtu[egress.index()] as usize;
        // An aggregate is cut to the MTU by the device (`aggregate_ok` checked its segment size).
        if pkt.len() <= mtu || self.aggregate {
            return Verdict::Forward(egress);
        }
        match ipv4::fragment(pkt, mtu) {
            Ok(mut frags) if !frags.is_empty() => {
                self.metrics.fragments_created += frags.len() as u64;
                *pkt = frags.remove(0);
                for f in frags {
                    self.out.push_back(Transmit { side: egress, packet: f });
                }
                Verdict::Forward(egress)
            }
            _ => Verdict::Drop(DropReason::Malformed),
        }
    }

    /// Reads protocol, ports and flags. `Ok(None)` means an ICMP error (handled by its own path).
    // Inlined so the result stays in registers: returned through memory, its narrow stores were read
    // back by wide loads (a store-forwarding stall, a fifth of the established-flow path in perf).
    #[inline(always)]
    fn head(&self, pkt: &[u8]) -> Result<Option<Head>, Verdict> {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let fragmented = ip.more_frags() || ip.frag_offset() > 0;
        let proto =
            Proto::from_number(ip.protocol()).ok_or(Verdict::Drop(DropReason::UnsupportedProtocol))?;
        let malformed = Verdict::Drop(DropReason::Malformed);
        let mut tcp_flags = 0;
        let mut icmp_request = false;
        let (sp, dp) = match proto {
            Proto::Tcp | Proto::Udp if fragmented => {
                // A first fragment holds the ports but not the whole datagram the length fields speak of.
                let p = ip.payload();
                if p.len() < 8 {
                    return Err(malformed);
                }
                if proto == Proto::Tcp {
                    tcp_flags = p.get(13).copied().unwrap_or(0);
                }
                (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]))
            }
            Proto::Tcp => {
                let t = ip.tcp().map_err(|_| malformed)?;
                tcp_flags = t.flags_byte();
                (t.src_port(), t.dst_port())
            }
            Proto::Udp => {
                let u = ip.udp().map_err(|_| malformed)?;
                (u.src_port(), u.dst_port())
            }
            Proto::Icmp => {
                let i = ip.icmp().map_err(|_| malformed)?;
                if i.is_error() {
                    if fragmented {
                        return Err(Verdict::Drop(DropReason::IcmpUnsupported));
                    }
                    return Ok(None);
                }
                // RFC 5508 §3.1: query messages are translated by their identifier; echo is the one
                // in use (timestamp/information/mask queries are obsolete, RFC 6918).
                match i.msg_type() {
                    8 => icmp_request = true,
                    0 => {}
                    _ => return Err(Verdict::Drop(DropReason::IcmpUnsupported)),
                }
                (i.echo_ident(), i.echo_ident())
            }
        };
        let key = FlowKey::new(proto, Endpoint::new(src, sp), Endpoint::new(dst, dp));
        Ok(Some(Head {
            key,
            tcp_flags,
            first_fragment: !fragmented || ip.frag_offset() == 0,
            fragmented,
            icmp_request,
        }))
    }

    /// Refreshes a UDP or ICMP connection for a packet travelling in `dir`.
    fn touch(&mut self, id: ConnId, dir: Dir, len: usize) {
        let now = self.now;
        let timeouts = &self.config.timeouts;
        let found = self.table.update(id, |conn| {
            conn.seen(dir, len, now);
            now + conn.timeout(timeouts)
        });
        debug_assert!(found, "touch of a connection that exists");
    }

    /// Tracks a TCP segment travelling in `dir` against its connection's window; only a segment in the
    /// window refreshes the connection and moves its state (see `conntrack::window`). A fragment cannot
    /// be judged (its length is the whole datagram's): it changes nothing. One slot access: the
    /// per-packet path.
    #[inline]
    fn touch_tcp(&mut self, id: ConnId, dir: Dir, head: &Head, pkt: &[u8]) -> Window {
        if head.fragmented {
            return Window::Behind(crate::conntrack::window::Why::Unsynchronised);
        }
        // The window scale option matters on a SYN only: the rest never walk the options.
        let wscale = if head.flags().syn {
            Ipv4Packet::new_unchecked(pkt).tcp().ok().and_then(|t| t.wscale_option())
        } else {
            None
        };
        let t = TcpFields::read(pkt);
        let (now, len) = (self.now, pkt.len());
        let timeouts = &self.config.timeouts;
        let metrics = &mut self.metrics;
        let mut verdict = Window::Beyond(crate::conntrack::window::Why::Unsynchronised);
        self.table.update(id, |conn| {
            // The per-packet case first: it opens or closes nothing, so it skips the state bookkeeping
            // below. A connection the ALG rewrites has its ACK mapped back first (see `tcp_seg`).
            if head.plain_ack() {
                let mut plain = t.plain();
                if let Some(s) = &conn.ftp {
                    plain.ack = s.streams[dir.reverse().index()].map.unmap(plain.ack);
                }
                if let Some(v) = conn.track_tcp_plain(dir, plain) {
                    verdict = v;
                    if v != Window::Accept {
                        return conn.expires();
                    }
                    conn.seen(dir, len, now);
                    return now + conn.timeout(timeouts);
                }
            }
            let before = conn.tcp();
            verdict = conn.track_tcp(dir, &tcp_seg(conn, dir, head.flags(), &t, wscale));
            if verdict != Window::Accept {
                return conn.expires();
            }
            conn.seen(dir, len, now);
            let closed = |s| matches!(s, TcpState::Closed | TcpState::Reset);
            if closed(conn.tcp()) && !closed(before) {
                metrics.flows_closed += 1;
            }
            now + conn.timeout(timeouts)
        });
        verdict
    }

    /// A packet with no connection: a new outbound flow, a forward, a pinhole, or a drop.
    fn create(&mut self, from: Side, head: &Head) -> Result<(ConnId, Dir), Verdict> {
        let key = head.key;
        let proto = key.proto;
        let f = head.flags();
        let now = self.now;
        if !head.first_fragment {
            return Err(Verdict::Drop(DropReason::FragmentNoState));
        }
        let mut pickup = false;
        if proto == Proto::Tcp {
            let opening = f.syn && !f.ack;
            if from == Side::Inside {
                if opening {
                    // The inside host opens a connection of its own: not an answer to a refused one.
                    self.refused.forget(key.dst, key.src.port);
                } else if self.refused.answered(key.dst, key.src.port, now) {
                    // Refused means refused: the inside host answering an inbound opening the gateway
                    // dropped (a recording, a second path) opens nothing, not even by mid-stream pickup.
                    return Err(Verdict::Drop(DropReason::RefusedFlow));
                }
            }
            if f.rst {
                return Err(Verdict::Drop(DropReason::NoMapping));
            }
            if !opening {
                if from == Side::Outside {
                    if !f.syn && self.forward(proto, key.dst).is_some() {
                        // Like Linux conntrack, pick up from either side: a forwarded connection in
                        // progress when the gateway (re)started survives, whichever end speaks first.
                        pickup = true;
                    } else {
                        // An inbound non-SYN may be a late packet of a closed flow, or a scan.
                        return Err(Verdict::Drop(
                            if self.pinholes.get(key.dst).is_some() || self.forward(proto, key.dst).is_some()
                            {
                                DropReason::NotSyn
                            } else {
                                DropReason::NoMapping
                            },
                        ));
                    }
                } else if f.syn {
                    // A SYN-ACK answers a SYN this gateway never passed (or refused): picking it up would
                    // open a mapping for a connection nobody asked for through us. Linux conntrack also
                    // treats a SYN-ACK without a connection as invalid.
                    return Err(Verdict::Drop(DropReason::NotSyn));
                } else {
                    // RFC 5382 leaves this open; like Linux conntrack, accept TCP picked up mid-stream
                    // from the inside so connections survive a gateway restart.
                    pickup = true;
                }
            }
        }
        if proto == Proto::Icmp && !head.icmp_request {
            return Err(Verdict::Drop(DropReason::NoMapping));
        }
        let conn = match from {
            Side::Inside if self.nat.is_public(key.dst.addr) => {
                // RFC 4787 REQ-9 / RFC 5382 REQ-8: hairpinning to a port forward.
                let fwd = self.forward(proto, key.dst).ok_or(Verdict::Drop(DropReason::NoMapping))?;
                self.admit(Some(key.src.addr))?;
                let mapped = self.acquire(proto, key.src)?;
                let target = Endpoint::new(fwd.inside_addr, fwd.inside_port);
                let reply = FlowKey::new(proto, target, mapped);
                Conn::new(key, reply, Origin::Hairpin, now)
            }
            Side::Inside if pickup && self.forward_target(proto, key.src).is_some() => {
                // A forwarded inside server's connection picked up mid-stream from the server's side:
                // it was opened from outside through the forward, so it keeps the forward's public port
                // and (for an FTP server) its ALG.
                let fwd = self.forward_target(proto, key.src).expect("checked");
                self.admit(Some(fwd.inside_addr))?;
                let at = self.config.forward_addr(&fwd);
                let orig = FlowKey::new(proto, key.dst, Endpoint::new(at, fwd.public_port));
                let mut c = Conn::new(orig, key, Origin::Forward, now);
                if proto == Proto::Tcp
                    && self.config.ftp.enabled
                    && self.config.ftp.ports.contains(&fwd.inside_port)
                {
                    c.ftp = Some(Box::new(
                        FtpSession::new(false, key.dst.addr, fwd.inside_addr, self.config.ftp.max_line)
                            .picked_up(),
                    ));
                }
                return self.insert(c, pickup).map(|(id, _)| (id, Dir::Reply));
            }
            Side::Inside => {
                self.admit(Some(key.src.addr))?;
                let mapped = self.acquire(proto, key.src)?;
                // ICMP echo: the reply carries the mapped identifier in both "ports" of its key.
                let remote =
                    if proto == Proto::Icmp { Endpoint::new(key.dst.addr, mapped.port) } else { key.dst };
                let reply = FlowKey::new(proto, remote, mapped);
                let mut c = Conn::new(key, reply, Origin::Outbound, now);
                if proto == Proto::Tcp
                    && self.config.ftp.enabled
                    && self.config.ftp.ports.contains(&key.dst.port)
                {
                    let s = FtpSession::new(true, key.src.addr, key.dst.addr, self.config.ftp.max_line);
                    let s = self.nat64_ftp(s, key.src.addr, key.dst.addr);
                    c.ftp = Some(Box::new(if pickup { s.picked_up() } else { s }));
                }
                c
            }
            Side::Outside => {
                let syn = f.syn && !f.ack;
                if proto == Proto::Tcp {
                    if let Some(taken) = self.pinholes.take(key.dst, key.src.addr, syn) {
                        let ph = taken.map_err(Verdict::Drop)?;
                        if let Err(v) = self.admit(Some(ph.inside.addr)) {
                            self.nat.release(Proto::Tcp, ph.inside, now);
                            return Err(v);
                        }
                        self.metrics.pinholes_used += 1;
                        tracing::debug!(target: "ftpnat::pinhole", event = "use", control = %ph.control,
                            public_port = ph.public_port, from = %key.src, inside = %ph.inside, "pinhole used");
                        self.events.push(|| Event::PinholeUse {
                            control: ph.control,
                            public_port: ph.public_port,
                            from: key.src,
                            inside: ph.inside,
                        });
                        let reply = FlowKey::new(proto, ph.inside, key.src);
                        let c = Conn::new(key, reply, Origin::Pinhole { control: ph.control }, now);
                        return self.insert(c, pickup);
                    }
                }
                let Some(fwd) = self.forward(proto, key.dst) else {
                    let mapped = self.nat.lookup_public(proto, key.dst).is_some();
                    // RFC 4787 REQ-8: address-and-port-dependent filtering by default.
                    return Err(Verdict::Drop(if mapped {
                        DropReason::Filtered
                    } else {
                        DropReason::NoMapping
                    }));
                };
                self.admit(Some(fwd.inside_addr))?;
                let target = Endpoint::new(fwd.inside_addr, fwd.inside_port);
                let reply = FlowKey::new(proto, target, key.src);
                let mut c = Conn::new(key, reply, Origin::Forward, now);
                if proto == Proto::Tcp
                    && self.config.ftp.enabled
                    && self.config.ftp.ports.contains(&fwd.inside_port)
                {
                    let s = FtpSession::new(false, key.src.addr, fwd.inside_addr, self.config.ftp.max_line);
                    c.ftp = Some(Box::new(if pickup { s.picked_up() } else { s }));
                }
                c
            }
        };
        self.insert(conn, pickup)
    }

    fn insert(&mut self, mut conn: Conn, pickup: bool) -> Result<(ConnId, Dir), Verdict> {
        if !self.table.keys_free(&conn.key(Dir::Original), &conn.key(Dir::Reply)) {
            if let Some(ep) = conn.mapping() {
                self.nat.release(conn.proto(), ep, self.now);
            }
            return Err(Verdict::Drop(DropReason::NoMapping));
        }
        if let Some(ep) = conn.mapping() {
            let now = self.now;
            self.nat.log_mut().push_session(|| nat::Record::SessionCreated {
                at: now,
                proto: conn.proto(),
                inside: nat::InsideEndpoint::from_endpoint(ep),
                inside6: None,
                public: nat::PublicEndpoint::from_endpoint(public_endpoint(&conn)),
                remote: remote_endpoint(&conn),
            });
        }
        if pickup {
            conn.mark_established();
        }
        conn.set_expires(self.now + conn.timeout(&self.config.timeouts));
        let (key, origin) = (conn.key(Dir::Original), conn.origin());
        if self.nat64.is_some() {
            self.nat64_hold(&conn, true);
        }
        let id = self.table.insert(conn);
        self.metrics.flows_created += 1;
        tracing::debug!(target: "ftpnat::flow", event = "new", id = %id, flow = %key, ?origin, pickup, "flow created");
        let reply = self.table.get(id).map_or(key, |c| c.key(Dir::Reply));
        self.events.push(|| Event::FlowNew { id, orig: key, reply, origin });
        self.nat64_event(id);
        Ok((id, Dir::Original))
    }

    fn admit(&mut self, host: Option<Ipv4Addr>) -> Result<(), Verdict> {
        self.table.admit(host).map_err(|full| {
            Verdict::Drop(match full {
                Full::Table => DropReason::TableFull,
                Full::Host => DropReason::HostFlowLimit,
            })
        })
    }

    fn acquire(&mut self, proto: Proto, inside: Endpoint) -> Result<Endpoint, Verdict> {
        let mapped = self.nat.acquire(proto, inside, None, self.now);
        mapped.map(|p| p.endpoint()).map_err(|e| match e {
            nat::Refused::Exhausted => {
                tracing::warn!(target: "ftpnat::nat", reason = "ports_exhausted", %proto, inside = %inside,
                    "outside ports exhausted; new flow refused");
                Verdict::Drop(DropReason::PortsExhausted)
            }
            // RFC 6888 REQ-4: this host has its share of the ports; only its own new mappings wait.
            nat::Refused::HostQuota => {
                tracing::warn!(target: "ftpnat::nat", reason = "host_port_quota", %proto, host = %inside.addr,
                    quota = self.config.ports_per_host(),
                    "inside host holds its share of public ports; its new flow refused");
                Verdict::Drop(DropReason::HostPortQuota)
            }
        })
    }

    fn forward_target(&self, proto: Proto, inside: Endpoint) -> Option<crate::config::Forward> {
        self.config
            .forwards
            .iter()
            .find(|f| f.proto == proto && f.inside_addr == inside.addr && f.inside_port == inside.port)
            .copied()
    }

    /// The forward listening on the public endpoint `public` (a pool address and port).
    fn forward(&self, proto: Proto, public: Endpoint) -> Option<crate::config::Forward> {
        self.config
            .forwards
            .iter()
            .find(|f| {
                f.proto == proto && f.public_port == public.port && self.config.forward_addr(f) == public.addr
            })
            .copied()
    }

    /// Packets addressed to the gateway itself: it answers pings, nothing else.
    fn local(&mut self, from: Side, pkt: &[u8]) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let is_echo = ip.protocol() == 1
            && !ip.is_fragment()
            && ip.icmp().is_ok_and(|i| i.msg_type() == 8 && i.code() == 0);
        if is_echo && !self.config.send_icmp_errors {
            self.metrics.generated_suppressed += 1;
        } else if is_echo {
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let mut reply = pkt.to_vec();
            let mut r = Ipv4Packet::new_unchecked(&mut reply[..]);
            r.set_src_addr(dst);
            r.set_dst_addr(src);
            r.set_ttl(64);
            if let Ok(mut i) = r.icmp_mut() {
                i.set_msg_type(0);
            }
            self.out.push_back(Transmit { side: from, packet: reply });
        }
        Verdict::Drop(DropReason::LocalDelivery)
    }

    /// Sends an ICMP error about `pkt` (as it arrived on `from`) back to its sender.
    fn icmp_error_to(&mut self, from: Side, pkt: &[u8], icmp_type: u8, code: u8, rest: u32) {
        if !self.config.send_icmp_errors {
            self.metrics.generated_suppressed += 1;
            return;
        }
        let ip = Ipv4Packet::new_unchecked(pkt);
        // RFC 1812 §4.3.2.7: never an error about an ICMP error, a non-first fragment, or a
        // broadcast/multicast.
        if ip.frag_offset() > 0
            || ip.src_addr().is_broadcast()
            || ip.src_addr().is_multicast()
            || ip.src_addr().is_unspecified()
        {
            return;
        }
        if ip.protocol() == 1 && ip.icmp().is_ok_and(|i| i.is_error()) {
            return;
        }
        if !self.take_icmp_token() {
            return;
        }
        // On the WAN side the error comes from the pool address the packet was sent to, which is its
        // flow's (RFC 6888 REQ-2, paired pooling): an outside host sees one address per inside host,
        // never the pool's first address for errors about a flow on another.
        let me = match from {
            Side::Inside => self.config.lan_ip,
            Side::Outside if self.nat.is_public(ip.dst_addr()) => ip.dst_addr(),
            Side::Outside => self.config.public_ip,
        };
        let err = icmp::build_error(me, ip.src_addr(), icmp_type, code, rest, pkt);
        self.metrics.icmp_errors_sent += 1;
        self.out.push_back(Transmit { side: from, packet: err });
    }

    /// One ICMP error's worth of the rate limit (RFC 1812 §4.3.2.8), if there is one left this second.
    fn take_icmp_token(&mut self) -> bool {
        let secs = self.now.saturating_since(self.icmp_refill).as_secs();
        if secs >= 1 {
            self.icmp_tokens = ICMP_ERRORS_PER_SEC;
            self.icmp_refill = self.now;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// An ICMP error travelling through: translate it with the packet it quotes (RFC 5508 §4.2).
    fn icmp_error_in(&mut self, from: Side, pkt: &mut [u8]) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let (outer_src, ttl) = (ip.src_addr(), ip.ttl());
        let Ok(icmp_view) = ip.icmp() else { return Verdict::Drop(DropReason::Malformed) };
        let Ok(q) = icmp::parse_quoted(icmp_view.payload()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let quoted = icmp_view.payload();
        let Some(proto) = Proto::from_number(q.protocol) else {
            return Verdict::Drop(DropReason::IcmpErrorNoMatch);
        };
        let (qs, qd) = match proto {
            Proto::Tcp | Proto::Udp => match (q.src_port, q.dst_port) {
                (Some(s), Some(d)) => (s, d),
                _ => return Verdict::Drop(DropReason::IcmpErrorNoMatch),
            },
            Proto::Icmp => {
                let at = q.header_len + 4;
                match quoted.get(at..at + 2) {
                    Some(b) => {
                        let id = u16::from_be_bytes([b[0], b[1]]);
                        (id, id)
                    }
                    None => return Verdict::Drop(DropReason::IcmpErrorNoMatch),
                }
            }
        };
        let qkey = FlowKey::new(proto, Endpoint::new(q.src, qs), Endpoint::new(q.dst, qd));
        // The quoted packet is one we emitted in some direction d'; its key is the reverse of the
        // other direction's key.
        let Some((id, d)) = self.table.lookup(&qkey.reversed()) else {
            return Verdict::Drop(DropReason::IcmpErrorNoMatch);
        };
        let conn = self.table.get(id).expect("exists");
        let dq = d.reverse();
        if conn.egress(dq) != from {
            return Verdict::Drop(DropReason::IcmpErrorNoMatch);
        }
        let orig = conn.key(dq);
        let back_to = conn.side(dq);
        let outer_new_src = if outer_src == q.dst {
            orig.dst.addr
        } else if from == Side::Inside {
            // An inside router's error leaves with the flow's public address: inside addresses never
            // leak, and the outside host hears from the address it talks to (issue 16, pools).
            orig.dst.addr
        } else {
            outer_src
        };
        let seq_unmap = match (&conn.ftp, proto) {
            (Some(s), Proto::Tcp) => Some(s.streams[dq.index()].map.clone()),
            _ => None,
        };
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.set_ttl(ttl - 1);
        ip.set_dst_addr(orig.src.addr);
        if outer_new_src != outer_src {
            ip.set_src_addr(outer_new_src);
        }
        let Ok(mut ic) = ip.icmp_mut() else { return Verdict::Drop(DropReason::Malformed) };
        ic.edit_payload(|p| {
            let ports = proto != Proto::Icmp;
            icmp::quoted_set_src(p, orig.src.addr, ports.then_some(orig.src.port));
            icmp::quoted_set_dst(p, orig.dst.addr, ports.then_some(orig.dst.port));
            if proto == Proto::Icmp {
                quoted_set_echo_ident(p, orig.src.port);
            }
            if let Some(map) = &seq_unmap {
                if let Some(s) = icmp::quoted_tcp_seq(p) {
                    icmp::quoted_set_tcp_seq(p, map.unmap(s));
                }
            }
        });
        self.metrics.icmp_errors_translated += 1;
        Verdict::Forward(back_to)
    }

    fn remember_fragment(&mut self, k: FragKey, src: Ipv4Addr, dst: Ipv4Addr, egress: Side) {
        let (evicted, overtaken) = self.frags.remember(self.now, k, src, dst, egress);
        self.metrics.fragment_states_evicted += evicted;
        // Later fragments that overtook this first one can go now.
        for mut w in overtaken {
            let mut ip = Ipv4Packet::new_unchecked(&mut w.packet[..]);
            let ttl = ip.ttl();
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.set_ttl(ttl.saturating_sub(1));
            self.metrics.fragments_translated += 1;
            self.out.push_back(Transmit { side: egress, packet: w.packet });
        }
    }

    /// A non-first fragment: translated by the state its first fragment left (same src, dst, protocol
    /// and IP ident), or held until that first fragment comes.
    fn later_fragment(&mut self, from: Side, pkt: &mut Vec<u8>) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let k = FragKey { src: ip.src_addr(), dst: ip.dst_addr(), proto: ip.protocol(), ident: ip.ident() };
        let ttl = ip.ttl();
        if let Some(s) = self.frags.get(&k) {
            let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
            ip.set_src_addr(s.src);
            ip.set_dst_addr(s.dst);
            ip.set_ttl(ttl - 1);
            self.metrics.fragments_translated += 1;
            return self.fit_mtu(pkt, s.egress);
        }
        match self.frags.hold(self.now, k, from, pkt) {
            Ok(()) => Verdict::Held,
            Err(frag::Refused::QueueFull) => Verdict::Drop(DropReason::FragmentQueueFull),
            Err(frag::Refused::SourceQuota) => Verdict::Drop(DropReason::FragmentSourceQuota),
        }
    }

    /// A segment of an FTP control connection.
    fn alg(&mut self, id: ConnId, dir: Dir, pkt: &mut Vec<u8>, ack_use: AckUse) -> Verdict {
        // The ALG reads this payload and may re-checksum it: corrupt bytes must not get a valid checksum
        // (nor become the edit history a good retransmission is rebuilt from).
        if !Ipv4Packet::new_unchecked(&pkt[..]).verify_transport_checksum() {
            return Verdict::Drop(DropReason::AlgBadChecksum);
        }
        let conn = self.table.get_mut(id).expect("exists");
        let to = conn.translated(dir);
        let egress = conn.egress(dir);
        let mut sess = conn.ftp.take().expect("ALG connection");
        // Held bytes leave later with this segment's headers, as the sender wrote them.
        let template = pkt_template(pkt);
        let v = self.alg_segment(id, dir, &mut sess, &to, egress, pkt, ack_use);
        if sess.streams[dir.index()].held_len() > 0 {
            self.held.insert((id, dir), template);
        } else {
            self.held.remove(&(id, dir));
        }
        if let Some(conn) = self.table.get_mut(id) {
            conn.ftp = Some(sess);
        }
        v
    }

    // The split of this function into the stream layer and the ALG hook is issue 13's.
    #[allow(clippy::too_many_arguments)]
    fn alg_segment(
        &mut self,
        id: ConnId,
        dir: Dir,
        sess: &mut FtpSession,
        to: &FlowKey,
        egress: Side,
        pkt: &mut Vec<u8>,
        ack_use: AckUse,
    ) -> Verdict {
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let Ok(tcp) = ip.tcp() else { return Verdict::Drop(DropReason::Malformed) };
        let (seq, ack, flags, urg) = (tcp.seq_number(), tcp.ack_number(), tcp.flags(), tcp.urgent_ptr());
        if flags.syn {
            if let Some(mss) = tcp.mss_option() {
                sess.mss[dir.index()] = Some(mss);
            }
        }
        let in_len = tcp.payload().len();
        let payload = tcp.payload().to_vec();
        let other = dir.reverse();
        // The ack and SACK blocks speak of the other direction's bytes as the receiver saw them.
        let ack_in = if flags.ack { sess.streams[other.index()].map.unmap(ack) } else { ack };
        if flags.ack && !flags.rst && ack_use == AckUse::Act {
            // The window tracker accepted this acknowledgement: nothing beyond what the other side could
            // have sent. Edits it covers are forgotten, and bytes the framer never saw are jumped over.
            let mut ctx = self.alg_ctx(id);
            sess.on_ack(other, ack_in, &mut ctx);
        }
        let other_map = sess.streams[other.index()].map.clone();
        let this_map_identity = sess.streams[dir.index()].map.is_identity();
        if flags.rst || (flags.syn && in_len == 0) {
            let s = sess.streams[dir.index()].map.map(seq);
            if flags.syn {
                let mut ctx = self.alg_ctx(id);
                let _ = sess.on_segment(dir, seq, true, false, &[], &mut ctx);
            }
            self.rewrite_numbers(pkt, (!this_map_identity).then_some(s), ack_in, &other_map);
            return self.finish_alg_packet(pkt, to, egress);
        }
        let out = {
            let mut ctx = self.alg_ctx(id);
            sess.on_segment(dir, seq, flags.syn, flags.fin, &payload, &mut ctx)
        };
        let out = match out {
            Err(r) => return Verdict::Drop(r),
            Ok(None) => {
                self.rewrite_numbers(pkt, None, ack_in, &other_map);
                return self.finish_alg_packet(pkt, to, egress);
            }
            Ok(Some(o)) => o,
        };
        if out.payload == payload && out.seq == seq && out.fin == flags.fin {
            // Nothing changed in this segment: numbers and addresses only, in place.
            self.rewrite_numbers(pkt, None, ack_in, &other_map);
            return self.finish_alg_packet(pkt, to, egress);
        }
        // Build the segment(s) that carry the decided bytes.
        let ip_hl = ip.header_len();
        let tcp_hl = tcp.header_len();
        let mtu_room = (self.config.mtu[egress.index()] as usize).saturating_sub(ip_hl + tcp_hl);
        let mss = sess.mss[other.index()].map_or(DEFAULT_MSS, |m| m as usize);
        // RFC 6691 §2: the MSS counts data only, and a sender must shrink its data by the IP and TCP
        // options it sends; the pieces carry this segment's options.
        let limit = mss.saturating_sub((ip_hl + tcp_hl).saturating_sub(40)).min(mtu_room).max(1);
        let chunk = if out.payload.len() > limit && out.payload.len() > in_len {
            self.metrics.alg_segments_split += 1;
            limit
        } else {
            out.payload.len().max(1)
        };
        let urgent_at = flags.urg.then(|| sess.streams[dir.index()].map.map(seq.add(urg as u32)));
        let template = pkt.clone();
        let mut packets = Vec::new();
        let pieces: Vec<&[u8]> =
            if out.payload.is_empty() { vec![&[][..]] } else { out.payload.chunks(chunk).collect() };
        let n = pieces.len();
        let mut at = out.seq;
        for (i, piece) in pieces.into_iter().enumerate() {
            let last = i + 1 == n;
            let f =
                TcpFlags { fin: out.fin && last, psh: flags.psh && last, syn: false, urg: false, ..flags };
            let mut p = build_segment(&template, ip_hl, tcp_hl, at, piece, f);
            {
                let mut ipm = Ipv4Packet::new_unchecked(&mut p[..]);
                if let Ok(mut t) = ipm.tcp_mut() {
                    if let Some(u) = urgent_at {
                        let off = u.diff(at);
                        if off > 0 && off <= u16::MAX as i32 {
                            t.set_flags(TcpFlags { urg: true, ..f });
                            t.set_urgent_ptr(off as u16);
                        }
                    }
                }
            }
            self.rewrite_numbers(&mut p, None, ack_in, &other_map);
            translate(&mut p, Proto::Tcp, to, true);
            let mut ipm = Ipv4Packet::new_unchecked(&mut p[..]);
            let ttl = ipm.ttl();
            ipm.set_ttl(ttl.saturating_sub(1));
            ipm.fill_transport_checksum();
            packets.push(p);
            at = at.add(piece.len() as u32);
        }
        let mut iter = packets.into_iter();
        *pkt = iter.next().expect("at least one piece");
        for p in iter {
            self.out.push_back(Transmit { side: egress, packet: p });
        }
        Verdict::Forward(egress)
    }

    /// A segment of a control connection that the window tracker ignored (behind the window, or an
    /// RST that is not exact): passed on with its numbers mapped into the receiver's space and its
    /// addresses translated, but the ALG neither reads it nor changes its state for it.
    fn alg_passthrough(&mut self, id: ConnId, dir: Dir, pkt: &mut [u8]) -> Verdict {
        let Some(conn) = self.table.get(id) else { return Verdict::Drop(DropReason::Malformed) };
        let (to, egress) = (conn.translated(dir), conn.egress(dir));
        let Some(sess) = conn.ftp.as_ref() else { return Verdict::Drop(DropReason::Malformed) };
        let ip = Ipv4Packet::new_unchecked(&pkt[..]);
        let Ok(tcp) = ip.tcp() else { return Verdict::Drop(DropReason::Malformed) };
        let (seq, ack, flags) = (tcp.seq_number(), tcp.ack_number(), tcp.flags());
        let this_map = &sess.streams[dir.index()].map;
        let other_map = sess.streams[dir.reverse().index()].map.clone();
        let seq_out = (!this_map.is_identity()).then(|| this_map.map(seq));
        let ack_in = if flags.ack { other_map.unmap(ack) } else { ack };
        self.rewrite_numbers(pkt, seq_out, ack_in, &other_map);
        self.finish_alg_packet(pkt, &to, egress)
    }

    fn alg_ctx(&mut self, id: ConnId) -> AlgCtx<'_> {
        // The control connection's public address: its data connections and their announcements
        // use it (issue 16, paired pooling).
        let public_ip = self.table.get(id).map_or(self.config.public_ip, |c| public_endpoint(c).addr);
        AlgCtx {
            nat: &mut self.nat,
            pinholes: &mut self.pinholes,
            metrics: &mut self.metrics,
            policy: &self.config.ftp,
            public_ip,
            now: self.now,
            control: id,
            events: &mut self.events,
        }
    }

    /// Sets seq (when given), ack and SACK blocks; the wire setters keep the checksum right.
    fn rewrite_numbers(
        &self,
        pkt: &mut [u8],
        seq: Option<SeqNum>,
        ack_in: SeqNum,
        other_map: &crate::seqadj::SeqMap,
    ) {
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        let Ok(mut t) = ip.tcp_mut() else { return };
        if let Some(s) = seq {
            if t.seq_number() != s {
                t.set_seq_number(s);
            }
        }
        if t.flags().ack && t.ack_number() != ack_in {
            t.set_ack_number(ack_in);
        }
        if !other_map.is_identity() {
            // RFC 2018 §3 / RFC 2883: every SACK block edge, D-SACK included, is a sequence number of
            // the other direction.
            t.map_sack_blocks(|s| other_map.unmap(s));
        }
    }

    fn finish_alg_packet(&mut self, pkt: &mut [u8], to: &FlowKey, egress: Side) -> Verdict {
        translate(pkt, Proto::Tcp, to, true);
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        let ttl = ip.ttl();
        ip.set_ttl(ttl.saturating_sub(1));
        Verdict::Forward(egress)
    }

    /// Sends bytes held past the hold limit as they were.
    fn release_held(&mut self, now: Instant) {
        let due: Vec<(ConnId, Dir)> = self
            .held
            .keys()
            .copied()
            .filter(|&(id, dir)| {
                self.table
                    .get(id)
                    .and_then(|c| c.ftp.as_ref())
                    .and_then(|s| s.streams[dir.index()].hold_deadline(self.config.ftp.hold_timeout))
                    .is_some_and(|d| d <= now)
            })
            .collect();
        for (id, dir) in due {
            let Some(template) = self.held.remove(&(id, dir)) else { continue };
            let Some(conn) = self.table.get_mut(id) else { continue };
            let to = conn.translated(dir);
            let egress = conn.egress(dir);
            let Some(sess) = conn.ftp.as_mut() else { continue };
            let Some((at, bytes)) = sess.streams[dir.index()].release_held(&mut self.metrics) else {
                continue;
            };
            let other_map = sess.streams[dir.reverse().index()].map.clone();
            let peer_mss = sess.mss[dir.reverse().index()];
            let ip = Ipv4Packet::new_unchecked(&template[..]);
            let Ok(tcp) = ip.tcp() else { continue };
            let (ip_hl, tcp_hl, ack) = (ip.header_len(), tcp.header_len(), tcp.ack_number());
            // Held bytes accumulate over several segments: like any segment we build, what leaves must
            // fit the receiver's MSS and the egress MTU.
            let mtu_room = (self.config.mtu[egress.index()] as usize).saturating_sub(ip_hl + tcp_hl);
            let options = (ip_hl + tcp_hl).saturating_sub(40);
            let limit =
                peer_mss.map_or(DEFAULT_MSS, |m| m as usize).saturating_sub(options).min(mtu_room).max(1);
            let mut at = at;
            for piece in bytes.chunks(limit) {
                let flags = TcpFlags { ack: true, psh: true, ..TcpFlags::default() };
                let mut p = build_segment(&template, ip_hl, tcp_hl, at, piece, flags);
                self.rewrite_numbers(&mut p, None, other_map.unmap(ack), &other_map);
                translate(&mut p, Proto::Tcp, &to, true);
                let mut ipm = Ipv4Packet::new_unchecked(&mut p[..]);
                let ttl = ipm.ttl();
                ipm.set_ttl(ttl.saturating_sub(1));
                ipm.fill_transport_checksum();
                self.out.push_back(Transmit { side: egress, packet: p });
                at = at.add(piece.len() as u32);
            }
        }
    }
}

/// What the window tracker needs of a TCP segment. The acknowledgement speaks of the other direction's
/// bytes as its receiver got them: for a connection whose other direction the ALG rewrites, it is mapped
/// back into that direction's sender space first (as Linux applies its NAT offset before
/// `tcp_in_window`).
#[inline]
/// The gateway's own (pool address, port) of a connection: the translated source of an outbound or
/// hairpinned flow, the destination an outside host used for a forward or a pinhole.
fn public_endpoint(conn: &Conn) -> Endpoint {
    match conn.origin() {
        Origin::Outbound | Origin::Hairpin => conn.key(Dir::Reply).dst,
        Origin::Forward | Origin::Pinhole { .. } => conn.key(Dir::Original).dst,
    }
}

/// The other end of a connection, as the inside host addresses it (for the session log).
fn remote_endpoint(conn: &Conn) -> Endpoint {
    match conn.origin() {
        Origin::Outbound | Origin::Hairpin => conn.key(Dir::Original).dst,
        Origin::Forward | Origin::Pinhole { .. } => conn.key(Dir::Original).src,
    }
}

fn tcp_seg(conn: &Conn, dir: Dir, f: TcpFlags, t: &TcpFields, wscale: Option<u8>) -> TcpSeg {
    // Broken stacks send RSTs with the ACK flag and a zero ACK field (Linux notes the same).
    let ack = (f.ack && !(f.rst && t.ack == SeqNum::new(0))).then(|| match &conn.ftp {
        Some(s) => s.streams[dir.reverse().index()].map.unmap(t.ack),
        None => t.ack,
    });
    TcpSeg {
        seq: t.seq,
        ack,
        len: t.payload + u32::from(f.syn) + u32::from(f.fin),
        win: t.win,
        syn: f.syn,
        fin: f.fin,
        rst: f.rst,
        wscale,
    }
}

/// The header to send released bytes with later: the packet as it arrived (addresses untranslated).
fn pkt_template(pkt: &[u8]) -> Vec<u8> {
    let ip = Ipv4Packet::new_unchecked(pkt);
    let hl = ip.header_len();
    let thl = ip.tcp().map(|t| t.header_len()).unwrap_or(20);
    pkt[..(hl + thl).min(pkt.len())].to_vec()
}

/// A TCP segment with the IP and TCP headers of `template`, the given sequence number, flags and payload.
/// The TCP checksum is left for the caller to fill (the payload changed).
fn build_segment(
    template: &[u8],
    ip_hl: usize,
    tcp_hl: usize,
    seq: SeqNum,
    payload: &[u8],
    flags: TcpFlags,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(ip_hl + tcp_hl + payload.len());
    p.extend_from_slice(&template[..ip_hl + tcp_hl]);
    p.extend_from_slice(payload);
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.set_total_len(ip_hl + tcp_hl + payload.len());
    if let Ok(mut t) = ip.tcp_mut() {
        t.set_seq_number(seq);
        t.set_flags(flags);
        t.set_urgent_ptr(0);
    }
    p
}

/// Rewrites addresses and ports to `to` in place; the wire setters update every checksum involved.
fn translate(pkt: &mut [u8], proto: Proto, to: &FlowKey, first_fragment: bool) {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    if ip.src_addr() != to.src.addr {
        ip.set_src_addr(to.src.addr);
    }
    if ip.dst_addr() != to.dst.addr {
        ip.set_dst_addr(to.dst.addr);
    }
    if !first_fragment {
        return;
    }
    if ip.more_frags() {
        set_ports_in_first_fragment(&mut ip, proto, to);
        return;
    }
    match proto {
        Proto::Tcp => {
            if let Ok(mut t) = ip.tcp_mut() {
                if t.src_port() != to.src.port {
                    t.set_src_port(to.src.port);
                }
                if t.dst_port() != to.dst.port {
                    t.set_dst_port(to.dst.port);
                }
            }
        }
        Proto::Udp => {
            if let Ok(mut u) = ip.udp_mut() {
                if u.src_port() != to.src.port {
                    u.set_src_port(to.src.port);
                }
                if u.dst_port() != to.dst.port {
                    u.set_dst_port(to.dst.port);
                }
            }
        }
        Proto::Icmp => {
            if let Ok(mut i) = ip.icmp_mut() {
                if i.echo_ident() != to.src.port {
                    i.set_echo_ident(to.src.port);
                }
            }
        }
    }
}

/// Ports of a first fragment, where the transport views refuse (their length fields speak of the whole
/// datagram). The transport checksum covers the whole datagram, so its incremental update is still right.
fn set_ports_in_first_fragment(ip: &mut Ipv4Packet<&mut [u8]>, proto: Proto, to: &FlowKey) {
    let csum_at = match proto {
        Proto::Tcp => 16,
        Proto::Udp => 6,
        Proto::Icmp => return,
    };
    let p = ip.payload_mut();
    if p.len() < csum_at + 2 {
        return;
    }
    let mut csum = u16::from_be_bytes([p[csum_at], p[csum_at + 1]]);
    for (at, new) in [(0usize, to.src.port), (2, to.dst.port)] {
        let old = u16::from_be_bytes([p[at], p[at + 1]]);
        if old != new {
            csum = crate::wire::checksum::update_u16(csum, old, new);
            p[at..at + 2].copy_from_slice(&new.to_be_bytes());
        }
    }
    // RFC 768: a UDP checksum of zero means none was computed, and stays so.
    let zero_udp = proto == Proto::Udp && u16::from_be_bytes([p[csum_at], p[csum_at + 1]]) == 0;
    if !zero_udp {
        let csum = if proto == Proto::Udp && csum == 0 { 0xffff } else { csum };
        p[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
    }
}

/// Sets the identifier of a quoted ICMP echo and keeps the quoted ICMP checksum right (RFC 5508 §4.2).
fn quoted_set_echo_ident(quoted: &mut [u8], ident: u16) {
    let hl = quoted.first().map_or(0, |b| ((b & 0x0f) as usize) * 4);
    let Some(h) = quoted.get_mut(hl..hl + 6) else { return };
    let old = u16::from_be_bytes([h[4], h[5]]);
    let csum = u16::from_be_bytes([h[2], h[3]]);
    let new_csum = crate::wire::checksum::update_u16(csum, old, ident);
    h[2..4].copy_from_slice(&new_csum.to_be_bytes());
    h[4..6].copy_from_slice(&ident.to_be_bytes());
}

/// A one-line description of a packet for debug logs (addresses, protocol, ports; never payload).
pub fn summary(pkt: &[u8]) -> String {
    match Ipv4Packet::new_checked(pkt) {
        Ok(ip) => {
            let ports = match ip.protocol() {
                6 => ip.tcp().map(|t| format!(" {}->{}", t.src_port(), t.dst_port())).unwrap_or_default(),
                17 => ip.udp().map(|u| format!(" {}->{}", u.src_port(), u.dst_port())).unwrap_or_default(),
                _ => String::new(),
            };
            format!(
                "{} -> {} proto {}{} len {}",
                ip.src_addr(),
                ip.dst_addr(),
                ip.protocol(),
                ports,
                ip.total_len()
            )
        }
        Err(_) if pkt.first().is_some_and(|b| b >> 4 == 6) => match crate::wire::Ipv6Packet::new_checked(pkt)
        {
            // NAT64: an IPv6 packet the engine refused before translating it.
            Ok(ip) => format!(
                "{} -> {} next-header {} len {}",
                ip.src_addr(),
                ip.dst_addr(),
                ip.next_header(),
                ip.total_len()
            ),
            Err(e) => format!("unparsable IPv6 ({e}, {} bytes)", pkt.len()),
        },
        Err(e) => format!("unparsable ({e}, {} bytes)", pkt.len()),
    }
}
