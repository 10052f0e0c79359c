//! Which worker owns a packet, when a gateway runs several engines side by side (`--workers N`, issue 18).
//!
//! Owns: the one rule that says which engine handles a packet, written once here and obeyed by the
//! shell's steering program (the eBPF program the TUN devices run to pick a queue, generated from
//! [`Steering`] in `src/io/bpf.rs` and checked against [`Steering::owner`] in the kernel), by the
//! shell's handoff between workers, and by a sharded `ftpnat replay`. Its parts: [`host_worker`] (an
//! inside address's worker), [`slice_of`] / [`slice_range`] (the public ports each worker's NAT hands
//! out), [`host6_worker`] (an IPv6 inside host's, by its /64), [`DetRule`] (deterministic NAT's
//! layout: a host and its block are the block's worker's), [`Steering::port_worker`] (a public port's
//! worker: its slice's or block's, or the worker of the inside host a port forward leads to),
//! [`Steering::owner`] (the rule applied to a packet as it arrives on a
//! side) and [`FragSteer`] (the owner of a later fragment, which carries no ports, is its first
//! fragment's). Must not: look at flows, mappings or any engine state, or allocate on the packet path.
//!
//! The rule, so that every packet of a flow, both directions, and the FTP data connections of a control
//! connection meet in one engine without any engine asking another:
//! - **LAN side**: by the inside source address ([`host_worker`]), so one host's flows, mappings,
//!   pinholes and per-host limits all live in one engine and the limits hold as with one engine. An
//!   ICMP error is steered by the address its quoted packet went to (an inside router may report on a
//!   host's flow). A packet to a public address, any of the pool's (hairpinning), is steered like an
//!   inbound one by its destination port, unless that port is forwarded (then it opens a hairpin flow
//!   from its source).
//! - **WAN side**: by the destination port's slice ([`slice_of`]): each engine's NAT allocates only
//!   ports of its own slice (`nat`), the inside port kept only when it lies in the slice (so port
//!   preservation, a "should" of RFC 4787 REQ-3, holds for about 1/N of the flows). The slice is of the
//!   port alone, whatever the public address: with an address pool (issue 16) each worker owns its
//!   slice of every address's ports (its port blocks are cut from it), so a host's paired address and
//!   its blocks are its worker's business only. A forwarded port goes to the worker of the host it
//!   forwards to, by its number alone: with several workers each engine keeps a forwarded port off
//!   every pool address (`Engine::new`), and one port forwarded on two addresses to hosts of two
//!   workers is refused (`Config::validate`). An ICMP error goes by the source port (or echo
//!   identifier) of the packet it quotes, which is the public port of the flow it reports on; an echo
//!   reply by its identifier.
//! - **Deterministic NAT** (RFC 7422, `--deterministic`): a host owns a fixed port range (a block of
//!   its pool address, `nat::deterministic`), so the host and its ports are steered by its block:
//!   block `b` is worker `b mod N`'s ([`DetRule`]), computed from the inside address on the LAN side
//!   and from the public port on the WAN side, and that worker's NAT hands out the host's whole range
//!   (no slice). Addresses outside the inside prefixes and ports outside the layout's blocks follow
//!   the rules above.
//! - **Fragments** on the WAN side (and hairpinned ones) carry ports only in their first fragment:
//!   they are steered as a datagram to [`frag_worker`] (a hash of source, destination and
//!   identification, so all fragments of a datagram meet), which learns the owner from the first
//!   fragment ([`FragSteer`]) and hands the datagram on. LAN-side fragments need no ports.
//! - **IPv6 on the LAN side** (NAT64, issue 14): by the inside source address's /64 ([`host6_worker`]),
//!   so an IPv6 host's stand-in address, its flows, mappings and the per-/64 share of stand-ins all
//!   live in one engine (the share holds as with one engine). An ICMPv6 error (RFC 4443 types below
//!   128, read when it directly follows the fixed header) goes by the /64 its quoted packet was sent
//!   to. The WAN side of a NAT64 flow is IPv4 and follows the rules above: its public port comes from
//!   the IPv6 host's worker's slice.
//! - Any other packet that is not IPv4, or one too short for a field the rule reads, goes to worker 0
//!   (exactly what the eBPF program does: a load past the end of the packet ends it with 0).
//!
//! FTP: a control connection's data connections come out right by themselves. An inside client's
//! passive data connection leaves from the same host (same worker); an active one arrives at a
//! pinhole port drawn from the control connection's engine's slice (same worker). A forwarded inside
//! server's data connections likewise: its own address outbound, its engine's slice inbound.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::config::{Config, Shard};
use crate::flow::Side;
use crate::frag::FragKey;
use crate::time::Instant;

/// Fibonacci hashing's multiplier (2^32 / golden ratio): spreads consecutive addresses (a LAN's hosts)
/// over the high bits, which [`reduce`] keeps.
pub const HASH_MULTIPLIER: u32 = 0x9E37_79B1;

/// IP protocol numbers the rule reads.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// `workers` buckets from a 32-bit value: the top 16 bits of its Fibonacci hash, scaled (Lemire's
/// multiply-shift, no division). All arithmetic is 32-bit, as in the eBPF program.
#[inline]
pub fn reduce(x: u32, workers: u16) -> u16 {
    let h = x.wrapping_mul(HASH_MULTIPLIER) >> 16;
    ((h * u32::from(workers)) >> 16) as u16
}

/// The worker of an inside host: everything it sends out, and its per-host state.
#[inline]
pub fn host_worker(addr: Ipv4Addr, workers: u16) -> u16 {
    reduce(u32::from(addr), workers)
}

/// The worker of an IPv6 inside host (NAT64): a hash of its /64, the two upper words of the address
/// folded into one, so that every address of a /64 (the unit of NAT64's per-prefix share) is one
/// worker's.
#[inline]
pub fn host6_worker(addr: std::net::Ipv6Addr, workers: u16) -> u16 {
    let o = addr.octets();
    let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    reduce(w(0) ^ w(4), workers)
}

/// IPv6's next-header number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// The worker a datagram's fragments meet at (WAN side): a hash of its RFC 791 identity less the
/// protocol (the same for each fragment).
#[inline]
pub fn frag_worker(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, workers: u16) -> u16 {
    reduce(u32::from(src) ^ u32::from(dst) ^ u32::from(ident), workers)
}

/// The worker whose NAT may hand out public port `port`: the port range is cut into `workers`
/// contiguous slices in order (worker `i` gets offsets `[ceil(i*len/N), ceil((i+1)*len/N))`); a port
/// outside the range (an inside port kept as it is) belongs to `port % workers`.
#[inline]
pub fn slice_of(range: &RangeInclusive<u16>, workers: u16, port: u16) -> u16 {
    let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
    let p = u32::from(port);
    if workers <= 1 {
        0
    } else if p < lo || p > hi {
        (p % u32::from(workers)) as u16
    } else {
        ((p - lo) * u32::from(workers) / (hi - lo + 1)) as u16
    }
}

/// The ports of `range` in slice `index` of `workers` (empty, `1..=0`, only when the range has fewer
/// ports than workers, which [`Config::validate`] refuses).
pub fn slice_range(range: &RangeInclusive<u16>, workers: u16, index: u16) -> RangeInclusive<u16> {
    let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
    if workers <= 1 {
        return range.clone();
    }
    let (len, n, i) = (hi - lo + 1, u32::from(workers), u32::from(index));
    let first = (i * len).div_ceil(n);
    let end = ((i + 1) * len).div_ceil(n);
    if first >= end {
        #[allow(clippy::reversed_empty_ranges)] // the empty inclusive range, on purpose
        return 1..=0;
    }
    (lo + first) as u16..=(lo + end - 1) as u16
}

/// Whether `shard`'s NAT may hand out `port` (in its slice, or outside the range and its by `port % N`).
#[inline]
pub fn owns_port(range: &RangeInclusive<u16>, shard: Shard, port: u16) -> bool {
    slice_of(range, shard.count, port) == shard.index
}

/// Who handles a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Worker(u16),
    /// A fragment whose owner only its datagram's first fragment tells: it goes to
    /// [`Owner::frag_worker`], which routes it with a [`FragSteer`].
    Fragment {
        key: FragKey,
        first: bool,
        frag_worker: u16,
    },
}

/// A forward as the rule sees it: protocol number, public port, and the worker of its inside host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteeredForward {
    pub proto: u8,
    pub public_port: u16,
    pub worker: u16,
}

/// The rule for one gateway's configuration and worker count. Cheap to apply: a few loads and
/// multiplications, a scan of the (few) forwards for a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steering {
    workers: u16,
    range: RangeInclusive<u16>,
    /// Deterministic NAT's layout as the rule reads it (`--deterministic`), else `None`.
    det: Option<DetRule>,
    public_ip: Ipv4Addr,
    /// The pool's addresses as sorted, disjoint, non-adjacent inclusive ranges (a `--public-pool`
    /// prefix is one range, which the eBPF program tests in two comparisons).
    pool: Vec<(u32, u32)>,
    forwards: Vec<SteeredForward>,
}

/// Deterministic NAT (RFC 7422, `nat::deterministic`) as the rule reads it: inside address number `i`
/// owns block `i / addrs` of its address, ports `lo + block·size ..`, so a host and its ports meet at
/// worker `block mod N` ([`DetRule::block_worker`]): the LAN side computes the block from the inside
/// address, the WAN side from the port (the address does not matter: a block number is the same on
/// every pool address). Blocks are dealt round-robin, so the workers share the hosts evenly however
/// much of the layout the inside space fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetRule {
    /// Each inside prefix as (first address, last address, number of its first address).
    pub prefixes: Vec<(u32, u32, u32)>,
    /// Pool addresses.
    pub addrs: u32,
    /// Ports per host.
    pub size: u32,
    /// The first port of the range, and the last port of the last whole block.
    pub lo: u32,
    pub last: u32,
}

impl DetRule {
    fn new(config: &Config) -> Option<DetRule> {
        let crate::nat::Allocation::Deterministic { size } = config.pool.allocation else { return None };
        let range = crate::nat::PortRange::try_from(&config.port_range).ok()?;
        let layout =
            crate::nat::Deterministic::new(&config.inside, &config.pool.addresses, range, size).ok()?;
        let size = u32::from(layout.size());
        let mut at = 0u32;
        let mut prefixes = Vec::new();
        for n in &config.inside {
            let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
            prefixes.push((first, last, at));
            at = at.wrapping_add(last - first + 1);
        }
        let lo = u32::from(range.first());
        let blocks = range.len() / size;
        Some(DetRule {
            prefixes,
            addrs: config.pool.addresses.len() as u32,
            size,
            lo,
            last: lo + blocks * size - 1,
        })
    }

    /// The worker of inside address `a`, if it is in an inside prefix.
    fn host(&self, a: u32, workers: u16) -> Option<u16> {
        let &(first, _, start) = self.prefixes.iter().find(|&&(f, l, _)| (f..=l).contains(&a))?;
        Some(self.block_worker((a - first + start) / self.addrs, workers))
    }

    /// The worker of public port `p`, if it lies in a block of the layout.
    fn port(&self, p: u32, workers: u16) -> Option<u16> {
        (self.lo..=self.last).contains(&p).then(|| self.block_worker((p - self.lo) / self.size, workers))
    }

    /// The worker of block number `b` (on every address).
    pub fn block_worker(&self, b: u32, workers: u16) -> u16 {
        (b % u32::from(workers.max(1))) as u16
    }
}

/// The bytes of a packet as the eBPF program reads them: big-endian loads that fail past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn b(&self, at: usize) -> Option<u32> {
        self.0.get(at).map(|&b| u32::from(b))
    }
    fn h(&self, at: usize) -> Option<u32> {
        Some(u32::from(u16::from_be_bytes(self.0.get(at..at + 2)?.try_into().ok()?)))
    }
    fn w(&self, at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(self.0.get(at..at + 4)?.try_into().ok()?))
    }
}

/// ICMP types whose body quotes the datagram they report on (RFC 792).
#[inline]
pub fn icmp_is_error(t: u32) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

impl Steering {
    /// The rule for `config` run by `workers` engines (`config.shard` is not read: every engine's
    /// configuration gives the same rule).
    pub fn new(config: &Config, workers: u16) -> Steering {
        let workers = workers.max(1);
        let det = DetRule::new(config);
        let mut addrs: Vec<u32> =
            config.pool.addresses.iter().chain([&config.public_ip]).map(|&a| u32::from(a)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let mut pool: Vec<(u32, u32)> = Vec::new();
        for a in addrs {
            match pool.last_mut() {
                Some((_, hi)) if hi.checked_add(1) == Some(a) => *hi = a,
                _ => pool.push((a, a)),
            }
        }
        let mut s = Steering {
            workers,
            range: config.port_range.clone(),
            det,
            public_ip: config.public_ip,
            pool,
            forwards: Vec::new(),
        };
        // Each forward's worker by the same rule as its host's own packets ([`Steering::forward_worker`]).
        s.forwards = config
            .forwards
            .iter()
            .map(|f| SteeredForward {
                proto: f.proto.number(),
                public_port: f.public_port,
                worker: s.forward_worker(f),
            })
            .collect();
        s
    }

    /// The rule of a gateway with one engine (every packet is worker 0's).
    pub fn single() -> Steering {
        Steering {
            workers: 1,
            range: 1024..=65535,
            det: None,
            public_ip: Ipv4Addr::UNSPECIFIED,
            pool: Vec::new(),
            forwards: Vec::new(),
        }
    }

    pub fn workers(&self) -> u16 {
        self.workers
    }
    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }
    /// The pool's addresses as sorted, disjoint inclusive ranges.
    pub fn pool(&self) -> &[(u32, u32)] {
        &self.pool
    }
    /// Whether `addr` is one of the pool's public addresses.
    pub fn is_public(&self, addr: u32) -> bool {
        self.pool.iter().any(|&(lo, hi)| (lo..=hi).contains(&addr))
    }
    pub fn forwards(&self) -> &[SteeredForward] {
        &self.forwards
    }

    /// Deterministic NAT's layout as the rule reads it.
    pub fn det(&self) -> Option<&DetRule> {
        self.det.as_ref()
    }

    /// The worker of an inside host: a hash of its address ([`host_worker`]), or in deterministic
    /// mode its block's worker ([`DetRule`]).
    pub fn host_worker(&self, addr: Ipv4Addr) -> u16 {
        self.host_of(u32::from(addr))
    }

    /// The worker of the host a port forward leads to: its IPv6 host's /64's (NAT64: its `inside_addr` is
    /// a stand-in, unknown until the engine resolves it), else its inside address's.
    pub fn forward_worker(&self, f: &crate::config::Forward) -> u16 {
        f.inside6.map_or_else(|| self.host_worker(f.inside_addr), |a| host6_worker(a, self.workers))
    }

    fn host_of(&self, a: u32) -> u16 {
        match self.det.as_ref().and_then(|d| d.host(a, self.workers)) {
            Some(w) => w,
            None => reduce(a, self.workers),
        }
    }

    /// The worker whose NAT hands out public port `port` (a forward aside): its slice's, or in
    /// deterministic mode its block's.
    pub fn slice_worker(&self, port: u16) -> u16 {
        match self.det.as_ref().and_then(|d| d.port(u32::from(port), self.workers)) {
            Some(w) => w,
            None => slice_of(&self.range, self.workers, port),
        }
    }

    fn forward(&self, proto: u32, port: u32) -> Option<&SteeredForward> {
        self.forwards.iter().find(|f| u32::from(f.proto) == proto && u32::from(f.public_port) == port)
    }

    /// The worker of public port `port` of protocol `proto` (an IP protocol number): a forward's inside
    /// host's, else its slice's.
    pub fn port_worker(&self, proto: u8, port: u16) -> u16 {
        match self.forward(u32::from(proto), u32::from(port)) {
            Some(f) => f.worker,
            None => self.slice_worker(port),
        }
    }

    /// Who handles `pkt`, arriving on `side` (see the module header for the rule). With one worker,
    /// always worker 0, without reading the packet.
    pub fn owner(&self, side: Side, pkt: &[u8]) -> Owner {
        if self.workers <= 1 {
            return Owner::Worker(0);
        }
        let p = Bytes(pkt);
        match self.classify(side, &p, true) {
            Some(o) => o,
            None => Owner::Worker(0),
        }
    }

    /// The owner of a fragmented datagram as its first fragment `pkt` tells it (the rule applied as if
    /// it were not fragmented).
    pub fn first_fragment_owner(&self, side: Side, pkt: &[u8]) -> u16 {
        match self.classify(side, &Bytes(pkt), false) {
            Some(Owner::Worker(w)) => w,
            _ => 0,
        }
    }

    /// The rule, reading the packet in the order the eBPF program does (so that a read past the end,
    /// which stops the program with 0, is `None` here at the same point). `fragments`: whether a
    /// fragment is steered as one ([`Owner::Fragment`]) or by its ports.
    fn classify(&self, side: Side, p: &Bytes<'_>, fragments: bool) -> Option<Owner> {
        let n = self.workers;
        let b0 = p.b(0)?;
        if b0 >> 4 == 6 && side == Side::Inside {
            // IPv6 from the LAN (NAT64): by the /64 of the inside host (the fixed header is 40 bytes:
            // next header at 6, source at 8, destination at 24; an ICMPv6 error's quoted packet's
            // destination at 40 + 8 + 24).
            let at = if p.b(6)? == u32::from(PROTO_ICMPV6) && p.b(40)? < 128 { 72 } else { 8 };
            let hi = p.w(at)?;
            return Some(Owner::Worker(reduce(hi ^ p.w(at + 4)?, n)));
        }
        if b0 >> 4 != 4 {
            return Some(Owner::Worker(0));
        }
        let ihl = ((b0 & 0xf) << 2) as usize;
        if ihl < 20 {
            return Some(Owner::Worker(0));
        }
        let proto = p.b(9)?;
        let src = p.w(12)?;
        let dst = p.w(16)?;
        let frag = p.h(6)? & 0x3fff;
        let host = |a: u32| Some(Owner::Worker(self.host_of(a)));
        let by_port = |proto: u32, port: u32| {
            Some(Owner::Worker(match self.forward(proto, port) {
                Some(f) => f.worker,
                None => self.slice_worker(port as u16),
            }))
        };
        let fragment = || {
            let ident = p.h(4)?;
            Some(Owner::Fragment {
                key: FragKey {
                    src: Ipv4Addr::from(src),
                    dst: Ipv4Addr::from(dst),
                    proto: proto as u8,
                    ident: ident as u16,
                },
                first: frag & 0x1fff == 0,
                frag_worker: reduce(src ^ dst ^ ident, n),
            })
        };
        match side {
            Side::Inside => {
                if self.is_public(dst) {
                    if fragments && frag != 0 {
                        return fragment();
                    }
                    if proto == u32::from(PROTO_TCP) || proto == u32::from(PROTO_UDP) {
                        let port = p.h(ihl + 2)?;
                        // A forwarded port opens a hairpin flow, which belongs to its client; any other
                        // port is a hairpin flow's reply, which belongs where its public port does.
                        return match self.forward(proto, port) {
                            Some(_) => host(src),
                            None => by_port(proto, port),
                        };
                    }
                    return host(src);
                }
                if proto == u32::from(PROTO_ICMP) && icmp_is_error(p.b(ihl)?) {
                    // The quoted datagram went to the inside host whose flow this reports on.
                    return host(p.w(ihl + 8 + 16)?);
                }
                host(src)
            }
            Side::Outside => {
                if fragments && frag != 0 {
                    return fragment();
                }
                if proto == u32::from(PROTO_TCP) || proto == u32::from(PROTO_UDP) {
                    return by_port(proto, p.h(ihl + 2)?);
                }
                if proto != u32::from(PROTO_ICMP) {
                    return Some(Owner::Worker(0));
                }
                let t = p.b(ihl)?;
                if t == 0 || t == 8 {
                    // Echo reply (or request): the identifier is the "port" of an ICMP mapping.
                    return by_port(proto, p.h(ihl + 4)?);
                }
                if !icmp_is_error(t) {
                    return Some(Owner::Worker(0));
                }
                // The quoted datagram left from the public endpoint of the flow reported on.
                let q = ihl + 8;
                let qihl = ((p.b(q)? & 0xf) << 2) as usize;
                let qproto = p.b(q + 9)?;
                if qproto == u32::from(PROTO_TCP) || qproto == u32::from(PROTO_UDP) {
                    return by_port(qproto, p.h(q + qihl)?);
                }
                if qproto == u32::from(PROTO_ICMP) {
                    return by_port(qproto, p.h(q + qihl + 4)?);
                }
                Some(Owner::Worker(0))
            }
        }
    }
}

/// How long a first fragment's owner is remembered for its datagram's later fragments (Linux
/// `ipfrag_time`, as the engine's own fragment state: [`crate::frag::STATE_TIMEOUT`]).
pub const OWNER_TIMEOUT: core::time::Duration = crate::frag::STATE_TIMEOUT;
/// Datagrams whose owner is remembered at most; beyond it the oldest is forgotten.
pub const MAX_OWNERS: usize = crate::frag::MAX_STATES;
/// How long a later fragment waits here for its first fragment before it is given to the local engine
/// (which holds it as long again, and counts it if its first fragment never comes).
pub const HOLD: core::time::Duration = crate::frag::WAIT;
/// Later fragments held here at most (each holds its packet); beyond it they go to the local engine.
pub const MAX_HELD: usize = crate::frag::MAX_WAITING;

/// A later fragment held until its first fragment tells its owner.
#[derive(Debug)]
pub struct Held {
    pub key: FragKey,
    pub side: Side,
    pub packet: Vec<u8>,
    until: Instant,
}

/// Where a fragment goes, by [`FragSteer::route`].
#[derive(Debug, PartialEq, Eq)]
pub enum FragRoute {
    /// To this worker (the owner its first fragment named).
    To(u16),
    /// Not known yet: [`FragSteer::hold`] it.
    Unknown,
}

/// The fragment side of the rule, kept by the worker fragments of a datagram meet at
/// ([`Owner::Fragment`]): the owner each first fragment named, and the later fragments that came
/// before their first. Bounded ([`MAX_OWNERS`], [`MAX_HELD`]) and timed by the caller's clock.
#[derive(Debug, Default)]
pub struct FragSteer {
    owners: HashMap<FragKey, (u16, Instant)>,
    /// Keys in the order they were remembered (so also the order they expire): `(key, expiry)`; an
    /// entry whose expiry differs from the map's is stale (the key was remembered again).
    order: VecDeque<(FragKey, Instant)>,
    held: VecDeque<Held>,
}

impl FragSteer {
    /// Routes a fragment of `key`: a first fragment names its owner (`first_owner`, computed only
    /// then) and is remembered; a later one goes where its first fragment's went, if that came.
    pub fn route(&mut self, now: Instant, key: FragKey, first: Option<u16>) -> FragRoute {
        self.expire(now);
        if let Some(w) = first {
            let until = now + OWNER_TIMEOUT;
            if self.owners.insert(key, (w, until)).is_none() && self.owners.len() > MAX_OWNERS {
                self.forget_oldest();
            }
            self.order.push_back((key, until));
            return FragRoute::To(w);
        }
        match self.owners.get(&key) {
            Some(&(w, _)) => FragRoute::To(w),
            None => FragRoute::Unknown,
        }
    }

    fn forget_oldest(&mut self) {
        while let Some((k, until)) = self.order.pop_front() {
            if self.owners.get(&k).is_some_and(|&(_, u)| u == until) {
                self.owners.remove(&k);
                return;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(k, until)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            if self.owners.get(&k).is_some_and(|&(_, u)| u == until) {
                self.owners.remove(&k);
            }
        }
    }

    /// Holds a later fragment whose first fragment has not come; gives it back when [`MAX_HELD`] are
    /// held already (the caller hands it to its own engine, which has queues of its own).
    pub fn hold(&mut self, now: Instant, key: FragKey, side: Side, packet: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.held.len() >= MAX_HELD {
            return Err(packet);
        }
        self.held.push_back(Held { key, side, packet, until: now + HOLD });
        Ok(())
    }

    /// The later fragments held for `key`, in the order they came (after its first fragment was routed).
    pub fn release(&mut self, key: &FragKey) -> Vec<Held> {
        if !self.held.iter().any(|h| h.key == *key) {
            return Vec::new();
        }
        let (out, keep): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(|h| h.key == *key);
        self.held = keep.into();
        out
    }

    /// The held fragments whose wait is over at `now`, oldest first.
    pub fn expired(&mut self, now: Instant) -> Vec<Held> {
        let mut out = Vec::new();
        while self.held.front().is_some_and(|h| h.until <= now) {
            out.extend(self.held.pop_front());
        }
        out
    }

    /// When the oldest held fragment's wait ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.front().map(|h| h.until)
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
    pub fn owners(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Forward;
    use crate::flow::Proto;
    use proptest::prelude::*;

    fn config() -> Config {
        let mut c = Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1));
        c.forwards.push("tcp:2121=10.0.0.7:21".parse::<Forward>().unwrap());
        c
    }

    #[test]
    fn slices_cut_the_range_in_order_and_cover_every_port_once() {
        for (range, n) in [(1024..=65535u16, 2u16), (1024..=65535, 3), (20000..=20009, 4), (1..=65535, 64)] {
            let mut next = *range.start();
            for i in 0..n {
                let s = slice_range(&range, n, i);
                assert_eq!(*s.start(), next, "{range:?}/{n}: slice {i} starts where {} ended", i.max(1) - 1);
                assert!(!s.is_empty(), "{range:?}/{n}: slice {i} empty");
                for p in [*s.start(), *s.end(), (*s.start() / 2 + *s.end() / 2)] {
                    assert_eq!(slice_of(&range, n, p), i, "{range:?}/{n}: port {p}");
                }
                next = s.end().wrapping_add(1);
            }
            assert_eq!(next, range.end().wrapping_add(1), "{range:?}/{n}: the last slice ends the range");
            let len = usize::from(*range.end() - *range.start()) + 1;
            let sizes: Vec<usize> = (0..n).map(|i| slice_range(&range, n, i).count()).collect();
            assert!(
                sizes.iter().all(|&s| s == len / n as usize || s == len.div_ceil(n as usize)),
                "{sizes:?}"
            );
        }
        assert_eq!(slice_of(&(1024..=65535), 2, 80), 0, "outside the range: port % N");
        assert_eq!(slice_of(&(1024..=65535), 2, 81), 1);
        assert_eq!(slice_range(&(1024..=65535), 1, 0), 1024..=65535);
        assert!(owns_port(&(1024..=65535), Shard::ONE, 5));
    }

    #[test]
    fn hosts_spread_over_the_workers() {
        for n in [2u16, 3, 4] {
            let mut counts = vec![0usize; n as usize];
            for i in 0..=255u8 {
                counts[host_worker(Ipv4Addr::new(10, 0, 0, i), n) as usize] += 1;
            }
            let fair = 256 / n as usize;
            assert!(
                counts.iter().all(|&c| c > fair * 3 / 4 && c < fair * 5 / 4),
                "a /24 over {n}: {counts:?}"
            );
        }
        assert_eq!(host_worker(Ipv4Addr::new(10, 0, 0, 2), 1), 0);
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let len = 20 + l4.len();
        let mut p = vec![0x45, 0, (len >> 8) as u8, len as u8, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn ports(sport: u16, dport: u16) -> Vec<u8> {
        let mut l4 = sport.to_be_bytes().to_vec();
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&[0; 16]);
        l4
    }

    const IN: [u8; 4] = [10, 0, 0, 2];
    const PUB: [u8; 4] = [198, 51, 100, 1];
    const REM: [u8; 4] = [203, 0, 113, 9];

    #[test]
    fn one_worker_owns_everything_unread() {
        let s = Steering::new(&config(), 1);
        assert_eq!(s.owner(Side::Outside, &[]), Owner::Worker(0));
    }

    /// Both directions of a flow, the quoted packets of ICMP errors about it and an echo exchange meet
    /// at the worker of the inside host, given the public port its engine would hand out.
    #[test]
    fn a_flow_and_its_errors_meet_in_one_worker() {
        let s = Steering::new(&config(), 2);
        let host = s.host_worker(Ipv4Addr::from(IN));
        let public = slice_range(s.range(), 2, host).start() + 7;
        let out = ipv4(PROTO_TCP, IN, REM, &ports(40000, 80));
        assert_eq!(s.owner(Side::Inside, &out), Owner::Worker(host));
        let back = ipv4(PROTO_TCP, REM, PUB, &ports(80, public));
        assert_eq!(s.owner(Side::Outside, &back), Owner::Worker(host));
        // A router on the way reports on the translated outbound packet.
        let sent = ipv4(PROTO_TCP, PUB, REM, &ports(public, 80));
        let mut icmp = vec![11, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&sent[..28]);
        assert_eq!(
            s.owner(Side::Outside, &ipv4(PROTO_ICMP, [192, 0, 2, 1], PUB, &icmp)),
            Owner::Worker(host)
        );
        // An inside router reports on the translated inbound packet.
        let delivered = ipv4(PROTO_TCP, REM, IN, &ports(80, 40000));
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&delivered[..28]);
        assert_eq!(
            s.owner(Side::Inside, &ipv4(PROTO_ICMP, [10, 0, 0, 254], [10, 0, 0, 1], &icmp)),
            Owner::Worker(host)
        );
        // Echo: the reply's identifier is the public one.
        let reply = ipv4(PROTO_ICMP, REM, PUB, &[0, 0, 0, 0, (public >> 8) as u8, public as u8, 0, 1]);
        assert_eq!(s.owner(Side::Outside, &reply), Owner::Worker(host));
        // A quoted echo request.
        let echo = ipv4(PROTO_ICMP, PUB, REM, &[8, 0, 0, 0, (public >> 8) as u8, public as u8, 0, 1]);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&echo);
        assert_eq!(s.owner(Side::Outside, &ipv4(PROTO_ICMP, REM, PUB, &icmp)), Owner::Worker(host));
    }

    #[test]
    fn a_forward_and_hairpinning_follow_the_inside_hosts() {
        let s = Steering::new(&config(), 2);
        let server = s.host_worker(Ipv4Addr::new(10, 0, 0, 7));
        let inbound = ipv4(PROTO_TCP, REM, PUB, &ports(50000, 2121));
        assert_eq!(s.owner(Side::Outside, &inbound), Owner::Worker(server));
        assert_eq!(s.port_worker(PROTO_UDP, 2121), slice_of(s.range(), 2, 2121), "the forward is TCP only");
        // Hairpin: a client opens a flow to the forwarded port (its own worker); the server's reply goes
        // to the client's public port (the same worker, by its slice).
        let client = s.host_worker(Ipv4Addr::from(IN));
        let open = ipv4(PROTO_TCP, IN, PUB, &ports(40000, 2121));
        assert_eq!(s.owner(Side::Inside, &open), Owner::Worker(client));
        let public = *slice_range(s.range(), 2, client).end();
        let reply = ipv4(PROTO_TCP, [10, 0, 0, 7], PUB, &ports(21, public));
        assert_eq!(s.owner(Side::Inside, &reply), Owner::Worker(client));
    }

    /// A forward to an IPv6 host (NAT64, issue 14): inbound connections go to the worker of the host's
    /// /64, where NAT64 steers its own packets and keeps its stand-in, not to the worker of the
    /// not-yet-resolved stand-in address.
    #[test]
    fn a_forward_to_an_ipv6_host_goes_to_its_64s_worker() {
        let mut c = config();
        let host6: std::net::Ipv6Addr = "2001:db8:64::10".parse().unwrap();
        c.forwards.push("tcp:2222=[2001:db8:64::10]:21".parse::<Forward>().unwrap());
        for workers in [2, 3, 4] {
            let s = Steering::new(&c, workers);
            let f = c.forwards.last().unwrap();
            assert_eq!(s.forward_worker(f), host6_worker(host6, workers));
            assert_eq!(s.port_worker(PROTO_TCP, 2222), host6_worker(host6, workers), "{workers} workers");
        }
    }

    /// An address pool (issue 16): a host's flows on any pool address meet at its worker, inbound by
    /// the port's slice whatever the address; hairpinning to any pool address is recognised.
    #[test]
    fn every_pool_address_is_public_and_steered_by_the_port_alone() {
        let mut c = config();
        let (b, r0, r3) = ([198, 51, 100, 11], [198, 51, 100, 20], [198, 51, 100, 23]);
        c.pool.addresses.extend([b, r0, [198, 51, 100, 21], [198, 51, 100, 22], r3].map(Ipv4Addr::from));
        c.forwards.push("tcp:198.51.100.11:8080=10.0.0.9:80".parse::<Forward>().unwrap());
        let s = Steering::new(&c, 2);
        assert_eq!(
            s.pool(),
            [
                (u32::from_be_bytes(PUB), u32::from_be_bytes(PUB)),
                (u32::from_be_bytes(b), u32::from_be_bytes(b)),
                (u32::from_be_bytes(r0), u32::from_be_bytes(r3))
            ]
        );
        assert!(!s.is_public(u32::from_be_bytes([198, 51, 100, 24])));
        let client = s.host_worker(Ipv4Addr::from(IN));
        let public = *slice_range(s.range(), 2, client).start();
        for addr in [PUB, b, r0, r3] {
            let back = ipv4(PROTO_TCP, REM, addr, &ports(80, public));
            assert_eq!(s.owner(Side::Outside, &back), Owner::Worker(client), "{addr:?}");
            // A hairpin flow's reply from another inside host, to the client's public endpoint.
            let reply = ipv4(PROTO_TCP, [10, 0, 0, 9], addr, &ports(80, public));
            assert_eq!(s.owner(Side::Inside, &reply), Owner::Worker(client), "{addr:?}");
        }
        // The forward on the second address opens a hairpin flow from its client.
        let open = ipv4(PROTO_TCP, IN, b, &ports(40000, 8080));
        assert_eq!(s.owner(Side::Inside, &open), Owner::Worker(client));
        let inbound = ipv4(PROTO_TCP, REM, b, &ports(50000, 8080));
        assert_eq!(
            s.owner(Side::Outside, &inbound),
            Owner::Worker(s.host_worker(Ipv4Addr::new(10, 0, 0, 9)))
        );
        // An address just outside the pool is a remote one: by the source host.
        let out = ipv4(PROTO_TCP, [10, 0, 0, 9], [198, 51, 100, 24], &ports(80, public));
        assert_eq!(s.owner(Side::Inside, &out), Owner::Worker(s.host_worker(Ipv4Addr::new(10, 0, 0, 9))));
    }

    #[test]
    fn fragments_meet_where_their_datagram_hashes() {
        let s = Steering::new(&config(), 2);
        let mut first = ipv4(PROTO_UDP, REM, PUB, &ports(53, 40000));
        first[6] = 0x20; // MF, offset 0
        let mut later = ipv4(PROTO_UDP, REM, PUB, &[0; 16]);
        later[6] = 0x00;
        later[7] = 0x03; // offset 24, last
        let (
            Owner::Fragment { key: k1, first: f1, frag_worker: w1 },
            Owner::Fragment { key: k2, first: f2, frag_worker: w2 },
        ) = (s.owner(Side::Outside, &first), s.owner(Side::Outside, &later))
        else {
            panic!("fragments are steered as fragments")
        };
        assert_eq!((k1, w1), (k2, w2));
        assert!(f1 && !f2);
        assert_eq!(s.first_fragment_owner(Side::Outside, &first), slice_of(s.range(), 2, 40000));
        // On the LAN side fragments need no ports.
        let mut out = ipv4(PROTO_UDP, IN, REM, &[0; 16]);
        out[7] = 3;
        assert_eq!(s.owner(Side::Inside, &out), Owner::Worker(s.host_worker(Ipv4Addr::from(IN))));
    }

    #[test]
    fn what_cannot_be_read_goes_to_worker_0() {
        let s = Steering::new(&config(), 4);
        let tcp = ipv4(PROTO_TCP, REM, PUB, &ports(80, 65535));
        assert_ne!(s.owner(Side::Outside, &tcp), Owner::Worker(0), "the port's slice");
        for cut in [0, 1, 9, 15, 19, 21] {
            assert_eq!(s.owner(Side::Outside, &tcp[..cut]), Owner::Worker(0), "cut at {cut}");
        }
        let mut v6 = tcp.clone();
        v6[0] = 0x60;
        assert_eq!(s.owner(Side::Outside, &v6), Owner::Worker(0));
        let mut short_ihl = tcp.clone();
        short_ihl[0] = 0x44;
        assert_eq!(s.owner(Side::Outside, &short_ihl), Owner::Worker(0));
        let gre = ipv4(47, REM, PUB, &[0; 8]);
        assert_eq!(s.owner(Side::Outside, &gre), Owner::Worker(0));
    }

    fn ipv6(next: u8, src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, l4.len() as u8, next, 64];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(l4);
        p
    }

    /// NAT64 (issue 14): an IPv6 host's packets from the LAN meet at its /64's worker, whatever the
    /// interface identifier, and an ICMPv6 error from an inside router about a packet sent to the host
    /// goes there too; the WAN side of its flows is IPv4 (its worker's slice). /64s spread over the
    /// workers; a short IPv6 packet, or IPv6 on the WAN side, goes to worker 0.
    #[test]
    fn ipv6_hosts_are_steered_by_their_64() {
        let a6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        let s = Steering::new(&config(), 2);
        let remote = a6("64:ff9b::cb00:7109");
        let mut seen = [0usize; 2];
        for net in 0..64u16 {
            let host = a6(&format!("2001:db8:0:{net:x}::2"));
            let other = a6(&format!("2001:db8:0:{net:x}:a:b:c:d"));
            let w = host6_worker(host, 2);
            seen[usize::from(w)] += 1;
            assert_eq!(host6_worker(other, 2), w, "one /64, one worker");
            let udp = ipv6(PROTO_UDP, host, remote, &ports(40000, 53));
            assert_eq!(s.owner(Side::Inside, &udp), Owner::Worker(w));
            assert_eq!(
                s.owner(Side::Inside, &ipv6(PROTO_TCP, other, remote, &ports(1, 2))),
                Owner::Worker(w)
            );
            // An inside router reports on a packet sent to the host.
            let delivered = ipv6(PROTO_UDP, remote, other, &ports(53, 40000));
            let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&delivered);
            let router = a6(&format!("2001:db8:ffff:{net:x}::1"));
            assert_eq!(
                s.owner(Side::Inside, &ipv6(PROTO_ICMPV6, router, a6("2001:db8::1"), &icmp)),
                Owner::Worker(w)
            );
            // An echo request is not an error: by its source.
            let echo = ipv6(PROTO_ICMPV6, host, remote, &[128, 0, 0, 0, 0, 1, 0, 1]);
            assert_eq!(s.owner(Side::Inside, &echo), Owner::Worker(w));
            for cut in [0, 6, 11, 15] {
                assert_eq!(s.owner(Side::Inside, &udp[..cut]), Owner::Worker(0), "cut at {cut}");
            }
            assert_eq!(s.owner(Side::Outside, &udp), Owner::Worker(0));
        }
        assert!(seen.iter().all(|&c| c > 16), "64 /64s over 2 workers: {seen:?}");
        // A truncated ICMPv6 error (no quoted destination) is not read past its end.
        let short = ipv6(PROTO_ICMPV6, a6("2001:db8::2"), remote, &[1, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.owner(Side::Inside, &short), Owner::Worker(0));
    }

    /// Deterministic NAT (RFC 7422): every inside host, its flows out, the replies to every port of
    /// its computed range on its computed address and ICMP errors about them meet at one worker (its
    /// block's), and the hosts spread evenly over the workers.
    #[test]
    fn deterministic_hosts_and_their_ranges_meet_at_their_blocks_worker() {
        use crate::nat::{Allocation, Deterministic, PortRange};
        let mut c = Config::new(
            vec!["10.0.0.0/24".parse().unwrap(), "10.0.2.0/25".parse().unwrap()],
            Ipv4Addr::from(PUB),
        );
        c.pool.addresses.push(Ipv4Addr::new(198, 51, 100, 11));
        c.pool.allocation = Allocation::Deterministic { size: Some(200) };
        let layout =
            Deterministic::new(&c.inside, &c.pool.addresses, PortRange::new(1024, 65535).unwrap(), Some(200))
                .unwrap();
        for n in [2u16, 3] {
            let s = Steering::new(&c, n);
            assert!(s.det().is_some());
            let mut per = vec![0usize; usize::from(n)];
            for host in c.inside.iter().flat_map(|p| p.hosts()) {
                let w = s.host_worker(host);
                per[usize::from(w)] += 1;
                let out = ipv4(PROTO_UDP, host.octets(), REM, &ports(40000, 53));
                assert_eq!(s.owner(Side::Inside, &out), Owner::Worker(w), "{host}");
                let share = layout.forward(host).unwrap();
                let (first, last) = (share.ports.first(), share.ports.last());
                for port in [first, last, first / 2 + last / 2] {
                    let back = ipv4(PROTO_UDP, REM, share.public.octets(), &ports(53, port));
                    assert_eq!(
                        s.owner(Side::Outside, &back),
                        Owner::Worker(w),
                        "{host}: {} {port}",
                        share.public
                    );
                    assert_eq!(s.slice_worker(port), w);
                }
                let delivered = ipv4(PROTO_UDP, REM, host.octets(), &ports(53, 40000));
                let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
                icmp.extend_from_slice(&delivered[..28]);
                let err = ipv4(PROTO_ICMP, [10, 0, 0, 254], [10, 0, 0, 1], &icmp);
                assert_eq!(s.owner(Side::Inside, &err), Owner::Worker(w));
            }
            let total: usize = per.iter().sum();
            assert!(per.iter().all(|&k| k >= total / usize::from(n) - 1), "{n} workers: {per:?}");
            // Outside the inside prefixes, the hash as ever.
            assert_eq!(s.host_worker(Ipv4Addr::new(10, 9, 9, 9)), host_worker(Ipv4Addr::new(10, 9, 9, 9), n));
        }
    }

    fn key(ident: u16) -> FragKey {
        FragKey { src: Ipv4Addr::from(REM), dst: Ipv4Addr::from(PUB), proto: PROTO_UDP, ident }
    }

    #[test]
    fn a_later_fragment_waits_for_its_first_and_follows_it() {
        let mut f = FragSteer::default();
        let t0 = Instant::from_secs(100);
        assert_eq!(f.route(t0, key(1), None), FragRoute::Unknown);
        f.hold(t0, key(1), Side::Outside, vec![1]).unwrap();
        f.hold(t0, key(2), Side::Outside, vec![2]).unwrap();
        f.hold(t0, key(1), Side::Outside, vec![3]).unwrap();
        assert_eq!(f.route(t0, key(1), Some(1)), FragRoute::To(1));
        let r = f.release(&key(1));
        assert_eq!(r.iter().map(|h| h.packet[0]).collect::<Vec<_>>(), [1, 3], "in arrival order");
        assert_eq!(f.route(t0, key(1), None), FragRoute::To(1), "later ones follow the first");
        assert!(f.expired(t0 + HOLD - core::time::Duration::from_millis(1)).is_empty());
        assert_eq!(f.next_deadline(), Some(t0 + HOLD));
        let gone = f.expired(t0 + HOLD);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].key, key(2));
        assert_eq!(
            f.route(t0 + OWNER_TIMEOUT, key(1), None),
            FragRoute::Unknown,
            "owners are forgotten in time"
        );
        assert_eq!(f.owners(), 0);
    }

    /// An off-path flood of fragments cannot grow the table: held fragments and remembered owners are
    /// bounded, and a flood of first fragments only pushes out the oldest owners.
    #[test]
    fn a_fragment_flood_stays_bounded() {
        let mut f = FragSteer::default();
        let t0 = Instant::from_secs(1);
        for i in 0..(MAX_HELD + 10) {
            let r = f.hold(t0, key(i as u16), Side::Outside, vec![0; 8]);
            assert_eq!(r.is_ok(), i < MAX_HELD);
        }
        for i in 0..(MAX_OWNERS as u32 + 100) {
            let k = FragKey { src: Ipv4Addr::from(i), ..key(0) };
            f.route(t0, k, Some(1));
        }
        assert_eq!(f.owners(), MAX_OWNERS);
        assert!(f.order.len() <= MAX_OWNERS + 100);
    }

    fn any_packet() -> impl Strategy<Value = (bool, Vec<u8>)> {
        let addr = prop_oneof![Just(IN), Just(PUB), Just(REM), any::<[u8; 4]>()];
        (
            any::<bool>(),
            prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()],
            addr.clone(),
            addr,
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u16>(),
            0..4u8,
        )
            .prop_map(|(lan, proto, src, dst, l4, flags, ihl_extra)| {
                let mut p = ipv4(proto, src, dst, &l4);
                // A third of them fragments (MF and/or an offset), the rest whole.
                let frag = if flags % 3 == 0 { flags & 0x3fff } else { flags & 0x4000 };
                p[6..8].copy_from_slice(&frag.to_be_bytes());
                p[0] = 0x45 + ihl_extra;
                (lan, p)
            })
    }

    proptest! {
        /// Whatever the bytes, the rule names a worker that exists, and never panics.
        #[test]
        fn every_packet_has_an_owner_that_exists(n in 1u16..9, (lan, pkt) in any_packet()) {
            let s = Steering::new(&config(), n);
            let side = if lan { Side::Inside } else { Side::Outside };
            match s.owner(side, &pkt) {
                Owner::Worker(w) => prop_assert!(w < n),
                Owner::Fragment { frag_worker, .. } => {
                    prop_assert!(frag_worker < n);
                    prop_assert!(s.first_fragment_owner(side, &pkt) < n);
                }
            }
        }

        /// Outbound by the inside address, inbound by the public port: with the port drawn from the
        /// host worker's slice (as its engine's NAT does), every TCP/UDP flow's two directions meet.
        #[test]
        fn both_directions_of_a_flow_meet(n in 2u16..9, host in any::<[u8; 4]>(), remote in any::<[u8; 4]>(), sport: u16, dport: u16, pick: u16, udp: bool) {
            let mut c = config();
            c.forwards.clear();
            let s = Steering::new(&c, n);
            let proto = if udp { PROTO_UDP } else { PROTO_TCP };
            prop_assume!(Ipv4Addr::from(remote) != s.public_ip() && Ipv4Addr::from(host) != s.public_ip());
            let w = s.host_worker(Ipv4Addr::from(host));
            let slice = slice_range(s.range(), n, w);
            let public = slice.start() + pick % (slice.end() - slice.start() + 1);
            let out = ipv4(proto, host, remote, &ports(sport, dport));
            let back = ipv4(proto, remote, PUB, &ports(dport, public));
            prop_assert_eq!(s.owner(Side::Inside, &out), Owner::Worker(w));
            prop_assert_eq!(s.owner(Side::Outside, &back), Owner::Worker(w));
            prop_assert_eq!(s.port_worker(proto, public), w);
            prop_assert_eq!(Proto::from_number(proto).is_some(), true);
        }
    }
}
