//! The sans-IO core: one packet in, translated packets out.
//!
//! Owns: the engine's API and the dispatch of one packet through the router checks (RFC 1812) to the
//! step that handles it ([`Engine::process`]), the connection table and its timers, destroying
//! connections, fitting packets to the egress MTU. Each step lives in a child module, one concept each:
//!
//! | module | concept |
//! |---|---|
//! | `classify` | what a packet says about its flow, read once (the one classifier) |
//! | `aggregate` | the offload fast path: an aggregate translated whole, or handed back |
//! | `admit` | admission of new flows: outbound, forwards, pinholes, hairpins, pickup, limits |
//! | `track` | refreshing connections: UDP/ICMP timers, the TCP window tracker |
//! | `rewrite` | rewriting addresses and ports to a flow's translation |
//! | `router` | ICMP: packets for the gateway, errors it originates, errors in transit |
//! | `fragment` | later fragments, translated by their first fragment's flow |
//! | `alg_hook` | segments of ALG connections: given to the ALG, rebuilt, renumbered |
//! | `nat64` | NAT64's two steps around the IPv4 path (issue 14) |
//! | `state` | the engine's state as bytes, and an engine rebuilt from them (issue 15) |
//!
//! Must not: read a clock, make a syscall or spawn a thread. Time enters as a parameter.
//!
//! Call order, per packet: [`Engine::handle_packet`]; on [`Verdict::Forward`] write the (possibly
//! modified) buffer to the named side; then drain [`Engine::poll_transmit`] and write each packet to its
//! side. Between packets, wait until [`Engine::poll_timeout`] and call [`Engine::handle_timeout`] when
//! it passes (then drain `poll_transmit` again). The same calls drive the TUN loop, `ftpnat replay` and
//! the in-memory tests.

use std::collections::{BTreeSet, VecDeque};

use crate::alg::{AlgCtx, Pinholes};
use crate::config::Config;
use crate::conntrack::closing::Closing;
use crate::conntrack::refused::Refused;
use crate::conntrack::{Table, TcpState, Window};
use crate::events::{DestroyReason, Event, Events};
use crate::flow::{ConnId, Dir, Proto, Side};
use crate::frag::{FragKey, Fragments};
use crate::metrics::{DropReason, Metrics};
use crate::nat::{self, Nat};
use crate::time::Instant;
use crate::wire::{ipv4, Ipv4Packet, IPPROTO_TCP, IPPROTO_UDP};

mod admit;
mod aggregate;
mod alg_hook;
mod classify;
mod fragment;
mod nat64;
mod rewrite;
mod router;
mod state;
#[cfg(test)]
pub(crate) mod testing;
mod track;

use admit::{public_endpoint, remote_endpoint};
use classify::{Head, TcpFields};
use rewrite::translate;
use router::{RouterError, ICMP_ERRORS_PER_SEC};
pub use state::{RestoreError, StateKey};

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

pub struct Engine {
    config: Config,
    metrics: Metrics,
    out: VecDeque<Transmit>,
    table: Table,
    nat: Nat,
    pinholes: Pinholes,
    frags: Fragments,
    /// ALG connections holding bytes back (the bytes and the header to send them with are in the
    /// connection's stream layer): the hold timers to look at.
    held: BTreeSet<(ConnId, Dir)>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    now: Instant,
    /// For `ftpnat events`; off unless [`Engine::set_events`] turns it on.
    events: Events,
    /// Set while [`Engine::handle_aggregate`] runs: the datagram is larger than the MTU on purpose.
    aggregate: bool,
    /// Inbound TCP openings refused lately: the inside host's answers to them open nothing.
    refused: Refused,
    /// Each host's closed TCP connections, oldest first: given up for its new ones at its port share.
    closing: Closing,
    /// NAT64 (`--nat64-prefix`): IPv6 LAN hosts and their IPv4 stand-ins (the `nat64` child module).
    nat64: Option<crate::nat64::Nat64State>,
    /// Set while the IPv4 path handles a packet NAT64 translated from IPv6: its source is a stand-in.
    xlat_in: bool,
}

impl Engine {
    pub fn new(mut config: Config) -> Engine {
        // Issue 16: the pool, paired pooling and the allocation mode; one address and one port at a
        // time unless configured.
        let mut nat = Nat::with_setup(&config.nat_setup());
        let mut nat64 = config.nat64.clone().map(crate::nat64::Nat64State::new);
        // Forwards to IPv6 hosts take their stand-ins; `Config::validate` made sure they can (a
        // config that did not pass it loses the forward, logged, rather than forwarding to 0.0.0.0).
        config.forwards.retain_mut(|f| match Self::nat64_resolve(nat64.as_mut(), &mut nat, f) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(target: "ftpnat::nat64", "{e}");
                false
            }
        });
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
            held: BTreeSet::new(),
            metrics: Metrics::default(),
            out: VecDeque::new(),
            icmp_tokens: ICMP_ERRORS_PER_SEC,
            icmp_refill: Instant::ZERO,
            now: Instant::ZERO,
            events: Events::default(),
            aggregate: false,
            refused: Refused::default(),
            closing: Closing::default(),
            nat64,
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
        let gone: Vec<_> =
            self.config.forwards.iter().filter(|f| !new.forwards.contains(f)).copied().collect();
        for f in &gone {
            cfg.forwards.retain(|g| g != f);
            self.nat64_unresolve(f);
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
                continue;
            }
            // A forward to an IPv6 host takes its stand-in (issue 14); none left: not added.
            let mut f = *f;
            match Self::nat64_resolve(self.nat64.as_mut(), &mut self.nat, &mut f) {
                Ok(()) => cfg.forwards.push(f),
                Err(e) => {
                    for ep in held {
                        self.nat.unreserve_public(f.proto, ep);
                    }
                    refused.push(e);
                }
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
        for &(id, dir) in &self.held {
            let d = self
                .table
                .get(id)
                .and_then(|c| c.alg.as_ref())
                .and_then(|a| a.stream.hold_deadline(dir, self.config.ftp.hold_timeout));
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
        if matches!(conn.tcp(), TcpState::Closed | TcpState::Reset) {
            self.closing.forget(conn.host(), &self.table);
        }
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
        if let Some(mut a) = conn.alg.take() {
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
            a.close(&mut ctx);
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
                self.icmp_error_to(from, pkt, RouterError::TtlExceeded);
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
            self.icmp_error_to(from, pkt, RouterError::TtlExceeded);
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
        let has_alg = conn.alg.is_some();
        let mtu = self.nat64_mtu(egress, to.dst.addr);
        let dont_frag = Ipv4Packet::new_unchecked(&pkt[..]).dont_frag();
        if pkt.len() > mtu && dont_frag && !has_alg && !self.aggregate {
            // RFC 1191 §4: tell the sender the next-hop MTU so path-MTU discovery works through us.
            self.icmp_error_to(from, pkt, RouterError::FragNeeded { mtu: mtu as u16 });
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
}

/// A one-line description of a packet for debug logs (addresses, protocol, ports; never payload).
pub fn summary(pkt: &[u8]) -> String {
    match Ipv4Packet::new_checked(pkt) {
        Ok(ip) => {
            let ports = match ip.protocol() {
                IPPROTO_TCP => {
                    ip.tcp().map(|t| format!(" {}->{}", t.src_port(), t.dst_port())).unwrap_or_default()
                }
                IPPROTO_UDP => {
                    ip.udp().map(|u| format!(" {}->{}", u.src_port(), u.dst_port())).unwrap_or_default()
                }
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

#[cfg(test)]
mod tests {
    use super::testing::{config, engine, run, udp, HOST, PUBLIC, REMOTE};
    use super::*;
    use crate::wire::etherparse_check::seen;

    #[test]
    fn a_forwarded_packet_loses_one_ttl_and_keeps_right_checksums() {
        let mut e = engine();
        let (v, out, _) = run(&mut e, Side::Inside, &udp(HOST, 5000, REMOTE, 53, b"q"));
        assert_eq!(v, Verdict::Forward(Side::Outside));
        let s = seen(&out);
        assert_eq!((s.ttl, s.src), (63, PUBLIC.octets().to_vec()));
    }

    #[test]
    fn a_source_outside_the_inside_prefixes_is_spoofed() {
        let mut e = engine();
        let (v, _, _) = run(&mut e, Side::Inside, &udp(REMOTE, 5000, PUBLIC, 53, b"q"));
        assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
        let (v, _, _) = run(&mut e, Side::Outside, &udp(HOST, 5000, PUBLIC, 53, b"q"));
        assert_eq!(v, Verdict::Drop(DropReason::Martian));
    }

    #[test]
    fn too_big_for_the_next_hop_is_fragmented_or_reported() {
        let mut c = config();
        c.mtu[Side::Outside.index()] = 576;
        let mut e = Engine::new(c);
        let mut big = udp(HOST, 5000, REMOTE, 53, &[1u8; 1000]);
        // DF set (etherparse's default): RFC 1191, the sender learns the MTU.
        let (v, _, out) = run(&mut e, Side::Inside, &big);
        assert_eq!(v, Verdict::Drop(DropReason::FragNeeded));
        let s = seen(&out[0].packet);
        assert_eq!((s.upper[0], s.upper[1]), (3, 4));
        assert_eq!(&s.upper[6..8], &576u16.to_be_bytes());
        // DF clear: RFC 791 §3.2, the gateway fragments.
        Ipv4Packet::new_unchecked(&mut big[..]).set_dont_frag(false);
        let (v, first, out) = run(&mut e, Side::Inside, &big);
        assert_eq!(v, Verdict::Forward(Side::Outside));
        assert!(first.len() <= 576 && !out.is_empty());
        assert_eq!(e.metrics().fragments_created, 1 + out.len() as u64);
    }

    #[test]
    fn a_summary_names_addresses_and_ports_never_payload() {
        let s = summary(&udp(HOST, 5000, REMOTE, 53, b"secret"));
        assert_eq!(s, "10.0.0.2 -> 198.51.100.7 proto 17 5000->53 len 34");
        assert!(summary(&[0x45, 0]).starts_with("unparsable"));
    }
}
