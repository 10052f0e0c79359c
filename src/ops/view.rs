//! What a running engine looks like from outside: flows, pinholes, counters and events, the filters that
//! select them, and the control protocol's request. This is the control socket's data model.
//!
//! Owns: the request type of the control protocol ([`Request`], [`Filter`], [`parse_request`]), the rows a
//! listing is made of ([`FlowRow`], [`PinholeRow`]: plain data, taken on the run loop and turned into JSON
//! on the operations thread), taking them in bounded slices ([`flows_slice`], [`pinholes_slice`]), the
//! counter snapshot ([`Counters`]) and the JSON documents the server sends ([`stats`], [`event`]). Must
//! not: do I/O, change the engine, or format for people (the client does, from the same JSON).
//!
//! Every value is read through the engine's public introspection (`table()`, `pinholes()`, `metrics()`);
//! times are relative to the `now` the caller passes, in milliseconds. Rows serialize with their fields in
//! name order, which is the order a `serde_json::Value` map prints them in: the bytes are what
//! `ftpnat show --json` always printed.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};

use super::loop_stats::LoopTimes;
use crate::conntrack::{Conn, Origin};
use crate::engine::Engine;
use crate::events::Event;
use crate::flow::{ConnId, Dir, Endpoint, FlowKey, Proto};
use crate::metrics::Metrics;
use crate::time::Instant;

/// What a client asks for: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: Cmd,
    #[serde(default)]
    pub filter: Filter,
    /// `flows`/`pinholes`: at most this many entries; the reply then carries `next_cursor` when more
    /// may follow. Without it the whole listing is sent (produced in slices as the client reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `flows`/`pinholes`: resume where a previous reply's `next_cursor` said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u32>,
    /// `mapping`: an inside address, or a public `ADDRESS:PORT` (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<MappingTarget>,
}

impl Request {
    /// A request for the whole of `cmd`'s listing (or its counters, or its events).
    pub fn new(cmd: Cmd, filter: Filter) -> Request {
        Request { cmd, filter, limit: None, cursor: None, target: None }
    }

    /// Whether `cmd` is a listing, the only kind that takes `limit` and `cursor`.
    pub fn is_listing(&self) -> bool {
        matches!(self.cmd, Cmd::Flows | Cmd::Pinholes)
    }
}

/// The end of a pinhole listing's cursor space: one past the last port.
pub const PINHOLE_CURSOR_END: u32 = 1 << 16;

/// With several workers (`--workers N`), connection ids and flow cursors carry the worker in their
/// top bits: worker `w`'s connection `id` is shown as `w << WORKER_SHIFT | id` (a table holds at most
/// 2^24 connections, `MAX_FLOWS_LIMIT`). With one worker ids are the engine's own.
pub const WORKER_SHIFT: u32 = 24;

/// The id an operator sees for connection `id` of `worker` (`None`: the only worker).
pub fn global_id(worker: Option<u16>, id: u32) -> u32 {
    match worker {
        Some(w) => (u32::from(w) << WORKER_SHIFT) | id,
        None => id,
    }
}

/// The worker and its own cursor (or id) a global flow cursor names; a worker beyond the last is the
/// end of the listing (`None`).
pub fn split_cursor(cursor: u32, workers: u16) -> Option<(u16, u32)> {
    if workers <= 1 {
        return Some((0, cursor));
    }
    let w = cursor >> WORKER_SHIFT;
    (w < u32::from(workers)).then_some((w as u16, cursor & ((1 << WORKER_SHIFT) - 1)))
}

/// Parses one request line (without its newline): JSON, known fields only, and `limit`/`cursor` only
/// where they mean something. The error is the text sent back to the client.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    if !req.is_listing() && (req.limit.is_some() || req.cursor.is_some()) {
        return Err("bad request: limit and cursor apply to flows and pinholes only".into());
    }
    if req.limit == Some(0) {
        return Err("bad request: limit must be at least 1".into());
    }
    if req.cmd == Cmd::Pinholes && req.cursor.is_some_and(|c| c > PINHOLE_CURSOR_END) {
        return Err("bad request: a pinhole cursor is at most 65536".into());
    }
    if (req.cmd == Cmd::Mapping) != req.target.is_some() {
        return Err(
            "bad request: mapping takes a target (an inside IP or a public IP:PORT), nothing else does"
                .into(),
        );
    }
    Ok(req)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    Flows,
    Pinholes,
    Stats,
    /// A stream of event lines until the client hangs up.
    Events,
    /// What one inside host holds, or who holds one public port (issue 16).
    Mapping,
}

/// What `show mapping` asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingTarget {
    /// An inside host: its public address, ports, blocks, deterministic share.
    Inside(Ipv4Addr),
    /// A public endpoint: the mappings, block, deterministic owner and reservations on it.
    Public(std::net::SocketAddrV4),
}

impl std::str::FromStr for MappingTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Ok(MappingTarget::Inside(a));
        }
        match s.parse::<std::net::SocketAddrV4>() {
            Ok(e) => Ok(MappingTarget::Public(e)),
            Err(_) => Err(format!("'{s}': expected an inside IPv4 address or a public IPV4:PORT")),
        }
    }
}

/// An inside host as the operator knows it: a NAT64 stand-in (240.0.0.0/4) by its IPv6 subscriber.
fn host_name(engine: &Engine, a: Ipv4Addr) -> Option<std::net::Ipv6Addr> {
    if !crate::nat64::is_alias(a) {
        return None;
    }
    engine.nat64().and_then(|n| n.hosts.host(a)).or_else(|| engine.nat().log().host6(a))
}

/// `show mapping`: what the allocator says about `target` now, as JSON. NAT64 hosts are named by
/// their IPv6 address (`[v6]:port`), never by their stand-in.
pub fn mapping(engine: &Engine, now: Instant, target: MappingTarget) -> Value {
    let nat = engine.nat();
    let host = |a: Ipv4Addr| host_name(engine, a).map_or_else(|| a.to_string(), |v6| v6.to_string());
    let inside = |e: Endpoint| {
        host_name(engine, e.addr).map_or_else(|| e.to_string(), |v6| format!("[{v6}]:{}", e.port))
    };
    let range = |r: crate::nat::PortRange| format!("{}-{}", r.first(), r.last());
    let block = |b: &crate::nat::BlockView| {
        json!({
            "public": b.public.to_string(), "ports": range(b.ports), "owner": host(b.owner),
            "age_ms": ms(now.saturating_since(b.since)), "mappings": b.used,
            "idle_ms": b.idle_since.map(|t| ms(now.saturating_since(t))),
        })
    };
    let allocation = nat.allocation().name();
    match target {
        MappingTarget::Inside(host) => {
            let v = nat.host_view(host);
            json!({
                "allocation": allocation,
                "inside": host.to_string(),
                "public": v.public.map(|a| a.to_string()),
                "mappings": { "icmp": v.ports[0], "tcp": v.ports[1], "udp": v.ports[2] },
                "blocks": v.blocks.iter().map(block).collect::<Vec<_>>(),
                "deterministic": v.share.map(|s| json!({ "public": s.public.to_string(), "ports": range(s.ports) })),
            })
        }
        MappingTarget::Public(sa) => {
            let ep = Endpoint::new(*sa.ip(), sa.port());
            let o = nat.owner_of(ep.addr, ep.port);
            json!({
                "allocation": allocation,
                "public": ep.to_string(),
                "in_pool": nat.is_public(ep.addr),
                "mappings": o.mappings.iter().map(|(p, i)| json!({ "proto": p.name(), "inside": inside(i.endpoint()) })).collect::<Vec<_>>(),
                "block": o.block.as_ref().map(block),
                "deterministic": o.deterministic.map(|a| a.to_string()),
                "reserved": o.reserved.iter().map(|p| p.name()).collect::<Vec<_>>(),
            })
        }
    }
}

/// Selects flows, pinholes and events: every given criterion must hold. `addr`/`port` match any
/// endpoint involved (inside, public or remote).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<ProtoName>,
}

/// A protocol name as given to `--proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoName {
    Tcp,
    Udp,
    Icmp,
}

impl ProtoName {
    pub fn proto(self) -> Proto {
        match self {
            ProtoName::Tcp => Proto::Tcp,
            ProtoName::Udp => Proto::Udp,
            ProtoName::Icmp => Proto::Icmp,
        }
    }
}

impl Filter {
    /// True if a thing of protocol `proto` (None: not protocol-specific) involving `endpoints` passes.
    pub fn matches(&self, proto: Option<Proto>, endpoints: &[Endpoint]) -> bool {
        if let Some(p) = self.proto {
            if proto.is_some_and(|q| q != p.proto()) {
                return false;
            }
        }
        if let Some(a) = self.addr {
            if !endpoints.iter().any(|e| e.addr == a) {
                return false;
            }
        }
        if let Some(port) = self.port {
            // An ICMP "port" is the echo identifier: never matched by --port.
            if proto == Some(Proto::Icmp) || !endpoints.iter().any(|e| e.port == port) {
                return false;
            }
        }
        true
    }

    fn matches_keys(&self, keys: &[FlowKey; 2]) -> bool {
        // An array, not a Vec: this runs for every flow of a listing, on the run loop.
        let eps = [keys[0].src, keys[0].dst, keys[1].src, keys[1].dst];
        self.matches(Some(keys[0].proto), &eps)
    }
}

fn ms(d: core::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The inside endpoint, the public endpoint and the remote endpoint of a connection.
pub fn roles(c: &Conn) -> (Endpoint, Endpoint, Endpoint) {
    let [o, r] = *c.keys();
    match c.origin() {
        Origin::Outbound => (o.src, r.dst, o.dst),
        Origin::Forward | Origin::Pinhole { .. } => (r.src, o.dst, o.src),
        // Both ends are inside: the client, its public mapping, and the forward's target.
        Origin::Hairpin => (o.src, r.dst, r.src),
    }
}

fn key_json(k: &FlowKey) -> Value {
    json!({ "src": k.src.to_string(), "dst": k.dst.to_string() })
}

/// Serializes with `Display` (endpoints and addresses print as `a.b.c.d:port` / `a.b.c.d`).
fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A count each way: original direction, reply direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OrigReply {
    pub orig: u64,
    pub reply: u64,
}

/// One direction's tuple as its sender writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyRow {
    #[serde(serialize_with = "display")]
    pub dst: Endpoint,
    #[serde(serialize_with = "display")]
    pub src: Endpoint,
}

impl From<FlowKey> for KeyRow {
    fn from(k: FlowKey) -> KeyRow {
        KeyRow { dst: k.dst, src: k.src }
    }
}

/// The FTP ALG state of a control connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlgRow {
    /// `inside` or `outside`: where the FTP client is.
    pub client: &'static str,
    /// The delta in force for new bytes each way: what sequence numbers are shifted by.
    pub delta_orig: i32,
    pub delta_reply: i32,
    pub edits_in_flight: usize,
    /// The pinholes this session announced that are still open.
    pub pinholes: Vec<u16>,
    pub proto: &'static str,
    /// `clear`, `tls`, or `not-ftp` (the stream stopped looking like FTP: opaque for good).
    pub state: &'static str,
}

/// The IPv6 side of a NAT64 flow: the inside host's endpoint and the remote's synthesised one
/// (`[addr]:port`); `inside`/`remote` of the row are their IPv4 forms (the stand-in and the server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nat64Row {
    pub inside6: String,
    pub remote6: String,
}

/// One connection of `show flows`, as taken on the run loop. Fields are in name order (see the module
/// header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    pub age_ms: u64,
    pub alg: Option<AlgRow>,
    pub bytes: OrigReply,
    /// The control connection of an FTP data connection (a pinhole's flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<u32>,
    pub expires_in_ms: u64,
    pub id: u32,
    pub idle_ms: u64,
    #[serde(serialize_with = "display")]
    pub inside: Endpoint,
    /// A NAT64 flow: its IPv6 endpoints (absent for IPv4 flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat64: Option<Nat64Row>,
    pub orig: KeyRow,
    pub origin: &'static str,
    #[serde(serialize_with = "display")]
    pub outside: Endpoint,
    pub packets: OrigReply,
    pub proto: &'static str,
    #[serde(serialize_with = "display")]
    pub remote: Endpoint,
    pub replied: bool,
    pub reply: KeyRow,
    pub state: &'static str,
    /// Which worker's engine holds it (only with several workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<u16>,
}

impl FlowRow {
    /// The row as the operator sees it when it came from `worker` of several: ids made global, the
    /// worker named.
    pub fn of_worker(mut self, worker: Option<u16>) -> FlowRow {
        self.id = global_id(worker, self.id);
        self.control = self.control.map(|c| global_id(worker, c));
        self.worker = worker;
        self
    }
}

/// The row of connection `id` at `now`.
pub fn flow_row(engine: &Engine, id: ConnId, c: &Conn, now: Instant) -> FlowRow {
    let (inside, outside, remote) = roles(c);
    let state = match c.proto() {
        Proto::Tcp => c.tcp().name(),
        _ if c.replied() => "REPLIED",
        _ => "UNREPLIED",
    };
    let alg = c.alg.as_ref().and_then(|a| Some((a.ftp()?, &a.stream))).map(|(s, st)| AlgRow {
        client: if s.client_inside() { "inside" } else { "outside" },
        delta_orig: st.seq_map(Dir::Original).current_delta(),
        delta_reply: st.seq_map(Dir::Reply).current_delta(),
        edits_in_flight: st.seq_map(Dir::Original).edits_in_flight()
            + st.seq_map(Dir::Reply).edits_in_flight(),
        // The session remembers what it announced; only what is still open is of interest.
        pinholes: s
            .pinholes()
            .filter(|&p| {
                // On the control connection's public address (issue 16: pools).
                let at = match c.origin() {
                    Origin::Outbound | Origin::Hairpin => c.key(Dir::Reply).dst.addr,
                    Origin::Forward | Origin::Pinhole { .. } => c.key(Dir::Original).dst.addr,
                };
                engine.pinholes().get(Endpoint::new(at, p)).is_some_and(|ph| ph.control == id)
            })
            .collect(),
        proto: "ftp",
        state: if s.is_opaque() { "tls" } else { "clear" },
    });
    let [packets, bytes] = [c.packets(), c.bytes()].map(|v| OrigReply { orig: v[0], reply: v[1] });
    FlowRow {
        age_ms: ms(now.saturating_since(c.created())),
        alg,
        bytes,
        control: match c.origin() {
            Origin::Pinhole { control } => Some(control.slot()),
            _ => None,
        },
        expires_in_ms: ms(c.expires().saturating_since(now)),
        id: id.slot(),
        idle_ms: ms(now.saturating_since(c.last_seen())),
        inside,
        nat64: engine.nat64().and_then(|n| {
            let host = n.hosts.host(inside.addr)?;
            let remote6 = n.cfg.prefix.embed(remote.addr);
            Some(Nat64Row {
                inside6: std::net::SocketAddrV6::new(host, inside.port, 0, 0).to_string(),
                remote6: std::net::SocketAddrV6::new(remote6, remote.port, 0, 0).to_string(),
            })
        }),
        orig: c.key(Dir::Original).into(),
        origin: c.origin().name(),
        outside,
        packets,
        proto: c.proto().name(),
        remote,
        replied: c.replied(),
        reply: c.key(Dir::Reply).into(),
        state,
        worker: None,
    }
}

/// Table slots visited between two budget checks: a row costs well under a microsecond and an empty
/// slot a few nanoseconds, so this bounds the overshoot.
const SLOTS_PER_CHECK: usize = 16;

/// Appends to `out` the rows of the connections from `from` on that pass `filter`, until `out` holds
/// `max_rows` rows or `over_budget()` says the run loop must get back to its packets (asked every few
/// rows). Returns where to resume: `None` when the end of the table was reached. A connection keeps
/// its id while it lives, so a listing taken in slices shows every connection that lived through it
/// exactly once (one created or removed meanwhile may or may not appear).
pub fn flows_slice(
    engine: &Engine,
    now: Instant,
    filter: &Filter,
    from: u32,
    max_rows: usize,
    out: &mut Vec<FlowRow>,
    mut over_budget: impl FnMut() -> bool,
) -> Option<u32> {
    for (n, (slot, conn)) in engine.table().slots_from(from).enumerate() {
        if out.len() >= max_rows || (n > 0 && n % SLOTS_PER_CHECK == 0 && over_budget()) {
            return Some(slot);
        }
        if let Some((id, c)) = conn.filter(|(_, c)| filter.matches_keys(c.keys())) {
            out.push(flow_row(engine, id, c, now));
        }
    }
    None
}

/// One pinhole of `show pinholes`: expected peer, public endpoint, inside endpoint, time left, owning
/// control connection. Fields in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinholeRow {
    pub age_ms: u64,
    pub control: u32,
    pub expires_in_ms: u64,
    #[serde(serialize_with = "display")]
    pub inside: Endpoint,
    pub kind: &'static str,
    #[serde(serialize_with = "display")]
    pub peer: Ipv4Addr,
    #[serde(serialize_with = "display")]
    pub public: Endpoint,
    pub public_port: u16,
    /// Which worker's engine holds it (only with several workers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<u16>,
}

impl PinholeRow {
    /// See [`FlowRow::of_worker`].
    pub fn of_worker(mut self, worker: Option<u16>) -> PinholeRow {
        self.control = global_id(worker, self.control);
        self.worker = worker;
        self
    }
}

/// Pinholes a listing slice visits at most by port before checking its budget.
const PORTS_PER_CHECK: u32 = 1024;

/// [`flows_slice`] for pinholes, in public-port order; the cursor is the next port to look at
/// ([`PINHOLE_CURSOR_END`] and beyond: nothing left).
pub fn pinholes_slice(
    engine: &Engine,
    now: Instant,
    filter: &Filter,
    from: u32,
    max_rows: usize,
    out: &mut Vec<PinholeRow>,
    mut over_budget: impl FnMut() -> bool,
) -> Option<u32> {
    let row = |p: &crate::alg::Pinhole| {
        let public = p.public_addr;
        let eps = [Endpoint::new(p.peer, 0), Endpoint::new(public, p.public_port), p.inside];
        // The peer's source port is not known yet (0 here): --port matches the public or inside port.
        filter.matches(Some(Proto::Tcp), &eps).then(|| PinholeRow {
            age_ms: ms(now.saturating_since(p.created)),
            control: p.control.slot(),
            expires_in_ms: ms(p.expires.saturating_since(now)),
            inside: p.inside,
            kind: p.kind.name(),
            peer: p.peer,
            public: Endpoint::new(public, p.public_port),
            public_port: p.public_port,
            worker: None,
        })
    };
    let pinholes = engine.pinholes();
    let mut port = from;
    while port < PINHOLE_CURSOR_END {
        if out.len() >= max_rows {
            return Some(port);
        }
        if port > from && (port - from) % PORTS_PER_CHECK == 0 && over_budget() {
            return Some(port);
        }
        // Every pool address's pinhole on this port, in pool order.
        for &a in engine.nat().pool().addresses() {
            if let Some(r) = pinholes.get(Endpoint::new(a, port as u16)).and_then(row) {
                out.push(r);
            }
        }
        port += 1;
    }
    None
}

/// Everything `show stats` and the metrics endpoint report, copied off the run loop in one go (a few
/// hundred integers) and rendered elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// The engine's counters; one per worker (summed when shown).
    pub metrics: Vec<Metrics>,
    pub flows_active: u64,
    pub flows_max: u64,
    pub pinholes_active: u64,
    pub nat_mappings: u64,
    /// Public ports taken, per protocol: TCP, UDP, ICMP.
    pub ports_in_use: [u64; 3],
    pub events_dropped: u64,
    /// Counters kept outside the engine, by dotted name (`device.lan.rx_packets`, `capture.dropped`,
    /// `ops.control.cut_off.stalled`, ...).
    pub extra: Vec<(String, u64)>,
    /// How long the run loop's turns take.
    pub times: LoopTimes,
    /// Which pool addresses have a host paired, one bit per address in pool order: several workers'
    /// engines pair hosts with the same addresses, so `nat.pool.addresses_in_use` is their union.
    pub pool_in_use: Vec<u64>,
}

impl Counters {
    /// The engine's counters and gauges now, plus `extra` and the loop's `times`.
    pub fn take(engine: &Engine, mut extra: Vec<(String, u64)>, times: &LoopTimes) -> Counters {
        let nat = engine.nat();
        if let Some(n) = engine.nat64() {
            // NAT64: IPv6 hosts holding a stand-in address (absent without --nat64-prefix).
            extra.push(("nat64.hosts".to_string(), n.hosts.len() as u64));
        }
        extra.extend(nat_counters(nat));
        Counters {
            metrics: vec![engine.metrics().clone()],
            flows_active: engine.flow_count() as u64,
            flows_max: engine.table().capacity() as u64,
            pinholes_active: engine.pinholes().len() as u64,
            nat_mappings: nat.mapping_count() as u64,
            ports_in_use: [Proto::Tcp, Proto::Udp, Proto::Icmp].map(|p| nat.ports_in_use(p) as u64),
            events_dropped: engine.events_dropped(),
            extra,
            times: times.clone(),
            pool_in_use: pool_in_use(nat),
        }
    }
}

/// One bit per pool address (in pool order): set when a host is paired with it.
pub fn pool_in_use(nat: &crate::nat::Nat) -> Vec<u64> {
    let mut bits = vec![0u64; nat.pool().len().div_ceil(64)];
    for (i, a) in nat.addresses().iter().enumerate() {
        if a.hosts > 0 {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

/// `a |= b`, bit by bit, and the number of bits set in the result.
pub fn union_in_use(a: &mut Vec<u64>, b: &[u64]) -> u64 {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x |= y;
    }
    a.iter().map(|w| u64::from(w.count_ones())).sum()
}

impl Counters {
    /// Visits every engine counter ([`Metrics::for_each`]'s names and order), summed over the workers.
    pub fn for_each_metric(&self, mut f: impl FnMut(&str, u64)) {
        match self.metrics.as_slice() {
            [] => {}
            [one] => one.for_each(f),
            [first, rest @ ..] => {
                let mut sums: Vec<(String, u64)> = Vec::new();
                first.for_each(|k, v| sums.push((k.to_string(), v)));
                for m in rest {
                    let mut i = 0;
                    m.for_each(|_, v| {
                        sums[i].1 += v;
                        i += 1;
                    });
                }
                for (k, v) in &sums {
                    f(k, *v);
                }
            }
        }
    }

    /// Adds another worker's snapshot to this one: counters and gauges summed (the table bound too:
    /// each worker's table has its own), the loop times of every worker's loop together.
    pub fn merge(&mut self, other: Counters) {
        self.metrics.extend(other.metrics);
        self.flows_active += other.flows_active;
        self.flows_max += other.flows_max;
        self.pinholes_active += other.pinholes_active;
        self.nat_mappings += other.nat_mappings;
        for (a, b) in self.ports_in_use.iter_mut().zip(other.ports_in_use) {
            *a += b;
        }
        self.events_dropped += other.events_dropped;
        for (k, v) in other.extra {
            match self.extra.iter_mut().find(|(n, _)| *n == k) {
                // Every worker's NAT has the whole pool: its size is not a sum (each worker's blocks
                // are cut from its own slice of the ports, so theirs is).
                Some(slot) if k == "nat.pool.addresses" => slot.1 = slot.1.max(v),
                Some(slot) => slot.1 += v,
                None => self.extra.push((k, v)),
            }
        }
        // An address is in use if any worker paired a host with it.
        let in_use = union_in_use(&mut self.pool_in_use, &other.pool_in_use);
        if let Some(slot) = self.extra.iter_mut().find(|(n, _)| n == "nat.pool.addresses_in_use") {
            slot.1 = in_use;
        }
        for (a, b) in [
            (&mut self.times.turn, &other.times.turn),
            (&mut self.times.ops, &other.times.ops),
            (&mut self.times.ops_cpu, &other.times.ops_cpu),
        ] {
            a.merge(b);
        }
    }
}

/// The address pool's and port blocks' gauges and counters (issue 16), by dotted name.
pub fn nat_counters(nat: &crate::nat::Nat) -> Vec<(String, u64)> {
    let (g, st, log) = (nat.gauges(), nat.stats(), nat.log());
    [
        ("nat.pool.addresses", nat.pool().len() as u64),
        ("nat.pool.addresses_in_use", g.addresses_in_use as u64),
        ("nat.pool.hosts", g.hosts as u64),
        ("nat.blocks.in_use", g.blocks_in_use as u64),
        ("nat.blocks.idle", g.blocks_idle as u64),
        ("nat.blocks.total", g.blocks_total as u64),
        ("nat.blocks.allocated", st.blocks_allocated),
        ("nat.blocks.released", st.blocks_released),
        ("nat.exhausted.addresses", st.addresses_exhausted),
        ("nat.exhausted.ports", st.ports_exhausted),
        ("nat.exhausted.host_quota", st.quota_exceeded),
        ("nat.log.dropped", log.dropped()),
        ("nat.log.alarms_suppressed", log.alarms_suppressed()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `show stats`: every engine counter (drop reasons included, zeros too) and the gauges, as one flat
/// object of dotted names, plus the counters kept outside the engine (devices, capture, operations) and
/// the run loop's slowest turns in microseconds.
pub fn stats(c: &Counters) -> Value {
    let mut m = Map::new();
    m.insert("flows.active".into(), json!(c.flows_active));
    m.insert("flows.max".into(), json!(c.flows_max));
    m.insert("pinholes.active".into(), json!(c.pinholes_active));
    m.insert("nat.mappings".into(), json!(c.nat_mappings));
    for (p, n) in [Proto::Tcp, Proto::Udp, Proto::Icmp].iter().zip(c.ports_in_use) {
        m.insert(format!("nat.ports_in_use.{}", p.name()), json!(n));
    }
    m.insert("events.dropped".into(), json!(c.events_dropped));
    c.for_each_metric(|k, v| {
        m.insert(k.to_string(), json!(v));
    });
    for (k, v) in &c.extra {
        m.insert(k.clone(), json!(v));
    }
    m.insert("loop.turns".into(), json!(c.times.turn.count));
    m.insert("loop.turn_max_us".into(), json!(c.times.turn.max_ns / 1000));
    m.insert("loop.ops_max_us".into(), json!(c.times.ops.max_ns / 1000));
    m.insert("loop.ops_cpu_max_us".into(), json!(c.times.ops_cpu.max_ns / 1000));
    json!({ "stats": m })
}

/// A pool or block record as an event: its protocol (`None`: a block serves every protocol), the
/// endpoints a filter matches on, and its fields.
fn nat_event(r: &crate::nat::Record) -> (Option<Proto>, Vec<Endpoint>, Value) {
    use crate::nat::Record as R;
    let range = |p: crate::nat::PortRange| format!("{}-{}", p.first(), p.last());
    let host = |a: Ipv4Addr| Endpoint::new(a, 0);
    let (proto, eps, mut v) = match r {
        R::BlockAllocated { inside, public, ports, .. } | R::BlockReleased { inside, public, ports, .. } => (
            None,
            vec![host(*inside), Endpoint::new(*public, ports.first()), Endpoint::new(*public, ports.last())],
            json!({ "inside": inside.to_string(), "public": public.to_string(), "ports": range(*ports) }),
        ),
        R::SessionCreated { proto, inside, public, remote, .. }
        | R::SessionDeleted { proto, inside, public, remote, .. } => (
            Some(*proto),
            vec![inside.endpoint(), public.endpoint(), *remote],
            json!({ "proto": proto.name(), "inside": inside.to_string(), "public": public.to_string(),
                    "remote": remote.to_string() }),
        ),
        R::AddressesExhausted { proto, .. } => (Some(*proto), vec![], json!({ "proto": proto.name() })),
        R::PortsExhausted { proto, public, .. } => (
            Some(*proto),
            vec![host(*public)],
            json!({ "proto": proto.name(), "public": public.to_string() }),
        ),
        R::QuotaExceeded { proto, host: h, quota, limit, .. } => (
            Some(*proto),
            vec![host(*h)],
            json!({ "proto": proto.name(), "inside": h.to_string(), "quota": quota.name(), "limit": limit }),
        ),
    };
    v["kind"] = json!(r.kind());
    if let Some(v6) = r.inside6() {
        // A NAT64 host's block: the IPv6 subscriber, as the NAT log names it.
        v["inside6"] = json!(v6.to_string());
    }
    (proto, eps, v)
}

/// One event line for `ftpnat events`, or `None` when `filter` rejects it. `ts` is seconds since the
/// Unix epoch, stamped by the caller when it took the event.
pub fn event(e: &Event, ts: f64, filter: &Filter, worker: Option<u16>) -> Option<Value> {
    let gid = |c: &ConnId| global_id(worker, c.slot());
    let (proto, eps, mut v): (Option<Proto>, Vec<Endpoint>, Value) = match e {
        Event::FlowNew { id, orig, reply, origin } => (
            Some(orig.proto),
            vec![orig.src, orig.dst, reply.src, reply.dst],
            json!({ "id": gid(id), "proto": orig.proto.name(), "origin": origin.name(),
                    "orig": key_json(orig), "reply": key_json(reply) }),
        ),
        Event::Nat64Flow { id, orig, inside6, remote6 } => (
            Some(orig.proto),
            vec![orig.src, orig.dst],
            json!({ "id": id.slot(), "proto": orig.proto.name(), "orig": key_json(orig),
                    "inside6": inside6.to_string(), "remote6": remote6.to_string() }),
        ),
        Event::FlowDestroy { id, orig, reply, why, packets, bytes } => (
            Some(orig.proto),
            vec![orig.src, orig.dst, reply.src, reply.dst],
            json!({ "id": gid(id), "proto": orig.proto.name(), "why": why.name(),
                    "orig": key_json(orig), "reply": key_json(reply),
                    "packets": { "orig": packets[0], "reply": packets[1] },
                    "bytes": { "orig": bytes[0], "reply": bytes[1] } }),
        ),
        Event::Rewrite { control, kind, old, new, delta, inside, public_port } => (
            Some(Proto::Tcp),
            vec![*inside, Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": gid(control), "kind": kind.name(), "old": old, "new": new, "delta": delta,
                    "inside": inside.to_string(), "public_port": public_port }),
        ),
        Event::PinholeCreate { control, public_port, peer, inside, kind } => (
            Some(Proto::Tcp),
            vec![*inside, Endpoint::new(*peer, 0), Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": gid(control), "public_port": public_port, "peer": peer.to_string(),
                    "inside": inside.to_string(), "kind": kind.name() }),
        ),
        Event::PinholeUse { control, public_port, from, inside } => (
            Some(Proto::Tcp),
            vec![*inside, *from, Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": gid(control), "public_port": public_port, "from": from.to_string(),
                    "inside": inside.to_string() }),
        ),
        Event::PinholeExpire { control, public_port, inside } => (
            Some(Proto::Tcp),
            vec![*inside, Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": gid(control), "public_port": public_port, "inside": inside.to_string() }),
        ),
        Event::Refusal { control, reason, line } => (
            Some(Proto::Tcp),
            vec![],
            json!({ "control": gid(control), "reason": reason.name(), "line": line }),
        ),
        Event::Nat(r) => nat_event(r),
    };
    // A refusal names no endpoint of its own: it passes an address/port filter only if unfiltered.
    if !filter.matches(proto, &eps) {
        return None;
    }
    v["event"] = json!(e.kind());
    v["ts"] = json!((ts * 1000.0).round() / 1000.0);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::ConnId;

    fn ep(a: [u8; 4], p: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::from(a), p)
    }

    #[test]
    fn filters_need_every_criterion() {
        let eps = [ep([10, 0, 0, 2], 40000), ep([198, 51, 100, 2], 21)];
        let f = |addr: Option<[u8; 4]>, port, proto| Filter { addr: addr.map(Ipv4Addr::from), port, proto };
        assert!(f(None, None, None).matches(Some(Proto::Tcp), &eps));
        assert!(f(Some([10, 0, 0, 2]), Some(21), Some(ProtoName::Tcp)).matches(Some(Proto::Tcp), &eps));
        assert!(!f(Some([10, 0, 0, 3]), None, None).matches(Some(Proto::Tcp), &eps));
        assert!(!f(None, Some(22), None).matches(Some(Proto::Tcp), &eps));
        assert!(!f(None, None, Some(ProtoName::Udp)).matches(Some(Proto::Tcp), &eps));
        assert!(!f(None, Some(21), None).matches(Some(Proto::Icmp), &eps), "--port never matches ICMP");
    }

    #[test]
    fn requests_parse_strictly() {
        let r = parse_request(br#"{"cmd":"flows","filter":{"addr":"10.0.0.2","proto":"tcp"}}"#).unwrap();
        assert_eq!(r.cmd, Cmd::Flows);
        assert_eq!(r.filter.proto, Some(ProtoName::Tcp));
        assert_eq!((r.limit, r.cursor), (None, None), "no limit: the whole listing");
        let back = parse_request(serde_json::to_string(&r).unwrap().as_bytes()).unwrap();
        assert_eq!(back, r);
        let paged = parse_request(br#"{"cmd":"pinholes","limit":10,"cursor":65536}"#).unwrap();
        assert_eq!((paged.limit, paged.cursor), (Some(10), Some(PINHOLE_CURSOR_END)));
        for (bad, why) in [
            (&br#"{"cmd":"reboot"}"#[..], "bad request: unknown variant"),
            (br#"{"cmd":"flows","x":1}"#, "bad request: unknown field"),
            (br#"{"cmd":"flows","limit":0}"#, "limit must be at least 1"),
            (br#"{"cmd":"stats","limit":5}"#, "flows and pinholes only"),
            (br#"{"cmd":"events","cursor":5}"#, "flows and pinholes only"),
            (br#"{"cmd":"pinholes","cursor":70000}"#, "at most 65536"),
            (br#"{"cmd":"flows","limit":-1}"#, "bad request"),
            (b"\xff\xfe", "bad request"),
            (b"", "bad request"),
        ] {
            let e = parse_request(bad).unwrap_err();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(bad));
        }
    }

    fn row() -> FlowRow {
        let k = FlowKey::new(Proto::Tcp, ep([10, 0, 0, 2], 40000), ep([198, 51, 100, 2], 21));
        FlowRow {
            age_ms: 1,
            alg: Some(AlgRow {
                client: "inside",
                delta_orig: 4,
                delta_reply: -2,
                edits_in_flight: 1,
                pinholes: vec![40001],
                proto: "ftp",
                state: "clear",
            }),
            bytes: OrigReply { orig: 3, reply: 4 },
            control: Some(7),
            expires_in_ms: 5,
            id: 9,
            idle_ms: 6,
            inside: k.src,
            nat64: None,
            orig: k.into(),
            origin: "pinhole",
            outside: ep([198, 51, 100, 1], 40000),
            packets: OrigReply { orig: 1, reply: 2 },
            proto: "tcp",
            remote: k.dst,
            replied: true,
            reply: k.reversed().into(),
            state: "ESTABLISHED",
            worker: None,
        }
    }

    /// A row's fields come out in name order, as a `serde_json::Value` (a sorted map) prints them: the
    /// bytes `show flows --json` printed before rows existed, so nobody's parser sees a change.
    #[test]
    fn rows_print_like_a_sorted_json_object() {
        let six =
            Nat64Row { inside6: "[2001:db8::2]:40000".into(), remote6: "[64:ff9b::c633:6402]:21".into() };
        for r in [row(), FlowRow { alg: None, control: None, ..row() }, FlowRow { nat64: Some(six), ..row() }]
        {
            let direct = serde_json::to_string(&r).unwrap();
            let via_value = serde_json::to_string(&serde_json::from_str::<Value>(&direct).unwrap()).unwrap();
            assert_eq!(direct, via_value);
        }
        let v: Value = serde_json::to_value(row()).unwrap();
        assert_eq!(v["inside"], "10.0.0.2:40000");
        assert_eq!(v["orig"], json!({"dst": "198.51.100.2:21", "src": "10.0.0.2:40000"}));
        assert_eq!(v["alg"]["delta_reply"], -2);
        let p = PinholeRow {
            age_ms: 1,
            control: 2,
            expires_in_ms: 3,
            inside: ep([10, 0, 0, 2], 40001),
            kind: "port",
            peer: Ipv4Addr::new(198, 51, 100, 2),
            public: ep([198, 51, 100, 1], 40001),
            public_port: 40001,
            worker: None,
        };
        let direct = serde_json::to_string(&p).unwrap();
        let via_value = serde_json::to_string(&serde_json::from_str::<Value>(&direct).unwrap()).unwrap();
        assert_eq!(direct, via_value);
        assert!(direct.contains(r#""peer":"198.51.100.2""#), "{direct}");
    }

    #[test]
    fn events_render_and_filter() {
        let e = Event::PinholeCreate {
            control: ConnId::new(4, 0),
            public_port: 40001,
            peer: Ipv4Addr::new(198, 51, 100, 2),
            inside: ep([10, 0, 0, 2], 40001),
            kind: ftpnat_core::events::RewriteKind::Port,
        };
        let v = event(&e, 1.23456, &Filter::default(), None).unwrap();
        assert_eq!(v["event"], "pinhole_create");
        assert_eq!(v["ts"], 1.235);
        assert_eq!(v["inside"], "10.0.0.2:40001");
        let other = Filter { addr: Some(Ipv4Addr::new(10, 0, 0, 9)), ..Filter::default() };
        assert!(event(&e, 0.0, &other, None).is_none());
        let udp = Filter { proto: Some(ProtoName::Udp), ..Filter::default() };
        assert!(event(&e, 0.0, &udp, None).is_none());
        assert_eq!(event(&e, 0.0, &Filter::default(), Some(1)).unwrap()["control"], (1 << WORKER_SHIFT) + 4);
    }
}
