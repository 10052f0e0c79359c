//! Public addresses and ports: the pool, paired pooling, port blocks, deterministic NAT, and the
//! endpoint-independent mappings held by tokens.
//!
//! Owns: which public (address, port) is in use per protocol, the endpoint-independent mapping from an
//! inside endpoint to its public endpoint (RFC 4787 REQ-1, RFC 5382 REQ-1: the same public endpoint
//! whatever the destination) and its holders ([`MappingRef`] tokens), the public address each inside
//! host is paired with (RFC 4787 REQ-2, RFC 6888 REQ-2: all of a host's mappings on one address while
//! it has any), port blocks (a host's mappings come from the blocks it holds; blocks go back after a
//! hold-down once their last mapping ends), the deterministic layout of RFC 7422 ([`deterministic`]),
//! each host's share of the ports (RFC 6888 REQ-4), the ports reserved for static forwards, and the
//! allocation records for the operator's collector ([`log`]). Must not: look at packets, decide
//! filtering, or know about connections: connections (conntrack) and pinholes hold [`MappingRef`]s.
//!
//! Three ways to hand out ports ([`Allocation`]): one at a time from the host's paired address
//! (`Dynamic`, the default); from port blocks the host is given on its first mapping and when its
//! blocks fill (`Blocks`: one log record per block instead of one per connection); or from the range
//! RFC 7422's layout gives the host (`Deterministic`: no allocation log at all). In every mode the
//! allocator works inside [`Setup::ports`], which may be a worker's slice of `--port-range`.

pub mod deterministic;
pub mod log;
pub mod pool;
pub mod ports;

use core::fmt;
use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

use crate::flow::{Endpoint, Proto};
use crate::time::Instant;
pub use deterministic::{Deterministic, Share};
pub use log::{Log, LogPolicy, Quota, Record};
pub use pool::{Pool, PoolSpec};
pub use ports::PortRange;
use ports::PortSet;

const PROTOS: usize = 3;
/// Ports examined for a preferred (length-neutral) port before settling for any free one. Decimal
/// lengths change every few hundred ports, so a same-length port is nearly always within reach.
const PREFERENCE_SCAN: u32 = 4096;
/// "No block" in a block list.
const NO_BLOCK: u32 = u32::MAX;

fn proto_index(p: Proto) -> usize {
    match p {
        Proto::Icmp => 0,
        Proto::Tcp => 1,
        Proto::Udp => 2,
    }
}

const ALL_PROTOS: [Proto; PROTOS] = [Proto::Icmp, Proto::Tcp, Proto::Udp];

/// An inside host's endpoint, as the host sends from it (before translation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct InsideEndpoint(Endpoint);

/// A public endpoint of the gateway: one of the pool's addresses and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PublicEndpoint(Endpoint);

macro_rules! endpoint_type {
    ($t:ident) => {
        impl $t {
            pub const fn new(addr: Ipv4Addr, port: u16) -> $t {
                $t(Endpoint::new(addr, port))
            }
            /// The endpoint a packet carries, for code that must say which side it names.
            pub const fn from_endpoint(e: Endpoint) -> $t {
                $t(e)
            }
            pub const fn endpoint(self) -> Endpoint {
                self.0
            }
            pub const fn addr(self) -> Ipv4Addr {
                self.0.addr
            }
            pub const fn port(self) -> u16 {
                self.0.port
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
endpoint_type!(InsideEndpoint);
endpoint_type!(PublicEndpoint);

/// One hold on an endpoint-independent mapping. Whoever holds a mapping (a connection, a pinhole)
/// holds one of these; the mapping and its public port go when the last one is given back to
/// [`Nat::unmap`]. It cannot be copied, so a reference cannot be released twice, and (in builds with
/// debug assertions) dropping one instead of giving it back panics, so a leaked port shows in tests.
#[must_use = "a mapping reference must be given back to Nat::unmap, or its public port leaks"]
#[derive(Debug, PartialEq, Eq)]
pub struct MappingRef {
    proto: Proto,
    inside: InsideEndpoint,
}

impl MappingRef {
    pub fn proto(&self) -> Proto {
        self.proto
    }
    pub fn inside(&self) -> InsideEndpoint {
        self.inside
    }

    /// Takes the token apart for good.
    fn consume(self) -> (Proto, InsideEndpoint) {
        let parts = (self.proto, self.inside);
        std::mem::forget(self);
        parts
    }

    /// Stores the reference in its holder's own fields: a connection keeps the protocol and inside
    /// endpoint in its keys anyway (and has no room for more), so it marks that it holds a reference
    /// and gives it back through [`MappingRef::unpark`]. Only the holder that parked a token may
    /// unpark it, once.
    pub fn park(self) {
        self.consume();
    }

    /// The token a holder parked with [`MappingRef::park`].
    pub fn unpark(proto: Proto, inside: InsideEndpoint) -> MappingRef {
        MappingRef { proto, inside }
    }
}

impl Drop for MappingRef {
    fn drop(&mut self) {
        if cfg!(debug_assertions) && !std::thread::panicking() {
            panic!(
                "MappingRef {} {} dropped without Nat::unmap: its public port leaks",
                self.proto, self.inside
            );
        }
    }
}

/// Why no public port could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No port on the host's address (or no address with room, for a host without one).
    Exhausted,
    /// The inside host holds its share already (`--max-ports-per-host`, its block limit, or its
    /// deterministic range is full).
    HostQuota,
}

/// Why a forward's public endpoint could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveError {
    /// The address is not one of the pool's.
    NotInPool,
    /// A live mapping holds the port.
    InUse,
}

/// Port-block allocation: `--port-block-size`, the per-host block limit and the hold-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockPolicy {
    /// Ports per block.
    pub size: u16,
    /// Blocks one host may hold at once.
    pub per_host: u16,
    /// How long a block whose last mapping ended stays with its host before it returns to the pool
    /// (the host may use it again meanwhile; nobody else can).
    pub hold: Duration,
}

impl BlockPolicy {
    pub const DEFAULT_PER_HOST: u16 = 8;
    pub const DEFAULT_HOLD: Duration = Duration::from_secs(120);
}

/// How mappings get their public ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Allocation {
    /// One port at a time from the host's paired address.
    #[default]
    Dynamic,
    /// From port blocks the host holds.
    Blocks(BlockPolicy),
    /// From the range RFC 7422's layout gives the host; `size` ports each (`None`: as many as fit).
    Deterministic { size: Option<u16> },
}

impl Allocation {
    pub const fn name(self) -> &'static str {
        match self {
            Allocation::Dynamic => "dynamic",
            Allocation::Blocks(_) => "blocks",
            Allocation::Deterministic { .. } => "deterministic",
        }
    }
}

/// What a [`Nat`] is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The public addresses, in order.
    pub pool: Vec<Ipv4Addr>,
    /// `--port-range`: where new public ports come from.
    pub range: PortRange,
    /// A worker's share of `range` (multi-queue): this allocator hands out ports only there, and keeps
    /// an inside port only there, so workers sharing the pool never collide. `None`: all of `range`.
    pub slice: Option<PortRange>,
    pub allocation: Allocation,
    /// The inside prefixes (deterministic mode lays them out).
    pub inside: Vec<Ipv4Net>,
    /// Mappings one host may hold per protocol.
    pub host_quota: usize,
}

/// The mapping of one inside endpoint.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Mapping {
    public: PublicEndpoint,
    refs: u32,
}

/// What [`Nat::map`] gives: the public endpoint and a reference on its mapping.
#[derive(Debug)]
pub struct Mapped {
    pub public: PublicEndpoint,
    pub token: MappingRef,
    /// The mapping is new (else an existing one was shared).
    pub created: bool,
}

/// One port block on one public address.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Block {
    owner: Option<Ipv4Addr>,
    /// Mappings of every protocol in it.
    used: u32,
    /// The owner's next block ([`NO_BLOCK`] at the end).
    next: u32,
    since: Instant,
    /// Since when no mapping uses it (it goes back to the pool `hold` later).
    idle_since: Option<Instant>,
    /// A hold-down timer for it is queued (at most one is).
    armed: bool,
    /// Per protocol: where the next port search in it starts.
    cursor: [u16; PROTOS],
}

/// What one public address has in use.
#[derive(serde::Serialize, serde::Deserialize)]
struct Space {
    used: [PortSet; PROTOS],
    /// Ports of the allocator's range taken (mappings and reservations), per protocol: a full range is
    /// known without a scan (a flood of new flows at exhaustion would otherwise cost a scan each).
    in_range: [u32; PROTOS],
    cursor: [u16; PROTOS],
    /// Hosts paired with this address.
    hosts: u32,
    blocks: Vec<Block>,
    /// Blocks ready to hand out, the longest-free first.
    free: VecDeque<u32>,
}

impl Space {
    fn new(blocks: u32, range: PortRange) -> Space {
        let block = Block {
            owner: None,
            used: 0,
            next: NO_BLOCK,
            since: Instant::ZERO,
            idle_since: None,
            armed: false,
            cursor: [0; PROTOS],
        };
        Space {
            used: Default::default(),
            in_range: [0; PROTOS],
            cursor: [range.first(); PROTOS],
            hosts: 0,
            blocks: vec![block; blocks as usize],
            free: (0..blocks).collect(),
        }
    }
}

/// One inside host holding mappings or blocks.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Host {
    /// Its paired address (pool index).
    addr: u16,
    /// Blocks held, and the first of them.
    blocks: u16,
    first: u32,
    /// Mappings held, per protocol.
    ports: [u32; PROTOS],
    /// Deterministic mode: where the next port search in its range starts.
    cursor: [u16; PROTOS],
}

/// Allocation counters (gauges are computed by [`Nat::gauges`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub mappings_created: u64,
    pub blocks_allocated: u64,
    pub blocks_released: u64,
    /// New mappings refused because no address had room for a new host.
    pub addresses_exhausted: u64,
    /// New mappings refused because the host's address had no port or block left.
    pub ports_exhausted: u64,
    /// New mappings refused by a host quota (ports, blocks, deterministic range).
    pub quota_exceeded: u64,
    /// Releases of a mapping that does not exist (a holder's bug; counted, not fatal).
    pub bad_releases: u64,
}

/// Present state in numbers, for metrics and `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub mappings: usize,
    pub hosts: usize,
    pub blocks_in_use: usize,
    /// Blocks whose last mapping ended, waiting out their hold-down.
    pub blocks_idle: usize,
    pub blocks_total: usize,
    /// Addresses with at least one paired host.
    pub addresses_in_use: usize,
}

/// One public address in numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressView {
    pub addr: Ipv4Addr,
    pub hosts: u32,
    /// Ports taken per protocol (ICMP, TCP, UDP), reservations included.
    pub ports: [u32; PROTOS],
    pub blocks_in_use: u32,
    pub blocks_total: u32,
}

/// One block as `show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    pub public: Ipv4Addr,
    pub ports: PortRange,
    pub owner: Ipv4Addr,
    pub since: Instant,
    /// Mappings in it (all protocols).
    pub used: u32,
    pub idle_since: Option<Instant>,
}

/// One inside host as `show mapping IP` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub host: Ipv4Addr,
    /// The address its mappings use (`None`: it holds nothing now).
    pub public: Option<Ipv4Addr>,
    /// Mappings per protocol (ICMP, TCP, UDP).
    pub ports: [u32; PROTOS],
    pub blocks: Vec<BlockView>,
    /// Deterministic mode: its computed share (whether or not it holds anything).
    pub share: Option<Share>,
}

/// Who holds one public (address, port), as `show mapping PUBLIC:PORT` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortOwner {
    /// Live mappings on it, per protocol.
    pub mappings: Vec<(Proto, InsideEndpoint)>,
    /// The block holding it and its owner.
    pub block: Option<BlockView>,
    /// Deterministic mode: the inside address the layout gives it to.
    pub deterministic: Option<Ipv4Addr>,
    /// Taken for a forward or another reservation, per protocol.
    pub reserved: Vec<Proto>,
}

/// The allocator: pool, hosts, blocks, mappings and their log.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Nat {
    pool: Pool,
    /// Where new public ports come from: the range or a worker's slice of it.
    range: PortRange,
    /// Where an inside port may be kept as the public port: anywhere, or only in the slice.
    keep: PortRange,
    allocation: Allocation,
    det: Option<Deterministic>,
    /// Blocks per address (block mode).
    blocks_per_addr: u32,
    spaces: Vec<Option<Box<Space>>>,
    hosts: HashMap<Ipv4Addr, Host, foldhash::fast::RandomState>,
    mappings: HashMap<(Proto, InsideEndpoint), Mapping, foldhash::fast::RandomState>,
    by_public: HashMap<(Proto, PublicEndpoint), InsideEndpoint, foldhash::fast::RandomState>,
    host_quota: u32,
    /// Hosts pinned to an address (forwards' inside servers): pool index.
    pins: HashMap<Ipv4Addr, u16, foldhash::fast::RandomState>,
    /// Hold-down deadlines of idle blocks: (deadline, block id), at most one per block.
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    log: Log,
    stats: Stats,
}

/// More port blocks than the pool has, asked for when every inside host holds its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShortfall {
    /// Inside addresses the prefixes hold (overlaps counted once per prefix).
    pub hosts: u64,
    /// `hosts` × `--port-blocks-per-host`.
    pub wanted: u64,
    /// Blocks in the pool: addresses × blocks per address.
    pub total: u64,
}

/// In block mode, whether the pool could run out of blocks before every host reached its limit (a
/// provider sizes the pool from this: RFC 6888 §3 REQ-4 puts the quota in the operator's hands, and
/// an undersized pool turns it into "first come"). `None` when the pool covers every host's limit.
pub fn block_shortfall(setup: &Setup) -> Option<BlockShortfall> {
    let Allocation::Blocks(b) = setup.allocation else { return None };
    let per_addr = u64::from((setup.range.len() / u32::from(b.size.max(1))).min(0xffff));
    let total = per_addr * setup.pool.len() as u64;
    let hosts: u64 = setup.inside.iter().map(|n| 1u64 << (32 - u32::from(n.prefix_len()))).sum();
    let wanted = hosts * u64::from(b.per_host);
    (wanted > total).then_some(BlockShortfall { hosts, wanted, total })
}

/// A block's id: its address's pool index and its number there.
fn block_id(addr: usize, n: u32) -> u32 {
    (addr as u32) << 16 | n
}
fn split_id(id: u32) -> (usize, u32) {
    ((id >> 16) as usize, id & 0xffff)
}

impl Nat {
    /// The allocator `setup` describes. A deterministic layout that does not fit (configuration
    /// validation refuses those) falls back to dynamic allocation rather than panic.
    pub fn with_setup(setup: &Setup) -> Nat {
        let pool = Pool::new(&setup.pool);
        let range = setup.slice.and_then(|s| s.intersect(setup.range)).unwrap_or(setup.range);
        let keep = if setup.slice.is_some() { range } else { PortRange::new(1, 65535).expect("valid") };
        let (mut allocation, mut det, mut blocks_per_addr) = (setup.allocation, None, 0);
        match setup.allocation {
            Allocation::Dynamic => {}
            Allocation::Blocks(b) => {
                blocks_per_addr = (range.len() / u32::from(b.size.max(1))).min(0xffff);
                if blocks_per_addr == 0 {
                    allocation = Allocation::Dynamic;
                }
            }
            Allocation::Deterministic { size } => {
                match Deterministic::new(&setup.inside, pool.addresses(), setup.range, size) {
                    Ok(d) => det = Some(d),
                    Err(_) => allocation = Allocation::Dynamic,
                }
            }
        }
        Nat {
            spaces: (0..pool.len()).map(|_| None).collect(),
            pool,
            range,
            keep,
            allocation,
            det,
            blocks_per_addr,
            hosts: HashMap::default(),
            mappings: HashMap::default(),
            by_public: HashMap::default(),
            host_quota: u32::try_from(setup.host_quota).unwrap_or(u32::MAX),
            pins: HashMap::default(),
            timers: BinaryHeap::new(),
            log: Log::default(),
            stats: Stats::default(),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// The RFC 7422 layout, in deterministic mode.
    pub fn deterministic(&self) -> Option<&Deterministic> {
        self.det.as_ref()
    }

    /// The range new ports come from (a worker's slice when there is one).
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Sets how many mappings one inside host may hold per protocol. Hosts above a lowered quota keep
    /// what they hold; their new mappings are refused until they are below it.
    pub fn set_host_quota(&mut self, ports: usize) {
        self.host_quota = u32::try_from(ports).unwrap_or(u32::MAX);
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The record queue: the shell drains it; the engine adds session records to it.
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn space(&self, a: usize) -> Option<&Space> {
        self.spaces.get(a).and_then(|s| s.as_deref())
    }

    fn space_mut(&mut self, a: usize) -> &mut Space {
        let (blocks, range) = (self.blocks_per_addr, self.range);
        self.spaces[a].get_or_insert_with(|| Box::new(Space::new(blocks, range)))
    }

    fn block_range(&self, n: u32) -> PortRange {
        let Allocation::Blocks(b) = self.allocation else { unreachable!("blocks only in block mode") };
        let first = u32::from(self.range.first()) + n * u32::from(b.size);
        PortRange::new(first as u16, (first + u32::from(b.size) - 1) as u16)
            .expect("a block lies in the range")
    }

    /// The block number holding `port`, in block mode.
    fn block_of(&self, port: u16) -> Option<u32> {
        let Allocation::Blocks(b) = self.allocation else { return None };
        if !self.range.contains(port) {
            return None;
        }
        let n = u32::from(port - self.range.first()) / u32::from(b.size);
        (n < self.blocks_per_addr).then_some(n)
    }

    // ----- mappings -------------------------------------------------------------------------

    /// Takes a reference on the mapping of `inside`, creating it if needed (then `created`).
    ///
    /// A new mapping's public address is the one the host is paired with while it holds anything
    /// (RFC 4787 REQ-2 "paired"); a host holding nothing gets the address its inside address hashes
    /// to, or, when that one is full, the next one with room. Its port: in dynamic mode the inside
    /// port when it is free (RFC 4787 REQ-3 port preservation is a "should"; keeping it also lets a TCP
    /// connection picked up after a restart keep its public port), else `prefer` ranks free ports of
    /// the range (the first it accepts wins, else any free one); in block mode a port of the host's
    /// blocks (a new block when they are full, up to its limit), `prefer` ranking within them; in
    /// deterministic mode a port of the host's computed range. A new mapping is refused when the host
    /// holds its quota of them already; an existing one is shared whatever the quota (it costs no port).
    pub fn map(
        &mut self,
        proto: Proto,
        inside: InsideEndpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
        now: Instant,
    ) -> Result<Mapped, Refused> {
        if let Some(m) = self.mappings.get_mut(&(proto, inside)) {
            m.refs += 1;
            return Ok(Mapped { public: m.public, token: MappingRef { proto, inside }, created: false });
        }
        let host = inside.addr();
        let pi = proto_index(proto);
        let held = self.hosts.get(&host).map_or(0, |h| h.ports[pi]);
        if held >= self.host_quota {
            // RFC 6888 REQ-4: this host has its share of the ports; only its own new mappings wait.
            return Err(self.quota(now, proto, host, Quota::PortsPerHost, self.host_quota));
        }
        let (addr, port) = match self.allocation {
            Allocation::Dynamic => self.pick_dynamic(proto, inside, prefer, now)?,
            Allocation::Blocks(b) => self.pick_block(proto, inside, prefer, b, now)?,
            Allocation::Deterministic { .. } => self.pick_deterministic(proto, inside, prefer, now)?,
        };
        let in_range = u32::from(self.range.contains(port));
        let s = self.space_mut(addr);
        s.used[pi].insert(port);
        s.in_range[pi] += in_range;
        let public = PublicEndpoint::new(self.pool.get(addr), port);
        if let Some(n) = self.block_of(port) {
            let b = &mut self.space_mut(addr).blocks[n as usize];
            b.used += 1;
            b.idle_since = None;
        }
        self.pair(host, addr).ports[pi] += 1;
        self.mappings.insert((proto, inside), Mapping { public, refs: 1 });
        self.by_public.insert((proto, public), inside);
        self.stats.mappings_created += 1;
        Ok(Mapped { public, token: MappingRef { proto, inside }, created: true })
    }

    /// A second reference on the mapping `r` holds (a pinhole whose connection also holds one).
    pub fn share(&mut self, r: &MappingRef) -> MappingRef {
        if let Some(m) = self.mappings.get_mut(&(r.proto, r.inside)) {
            m.refs += 1;
        }
        MappingRef { proto: r.proto, inside: r.inside }
    }

    /// Gives a reference back; the mapping and its port go when none is left. In block mode a block
    /// whose last mapping this was starts its hold-down.
    pub fn unmap(&mut self, r: MappingRef, now: Instant) {
        let (proto, inside) = r.consume();
        let Some(m) = self.mappings.get_mut(&(proto, inside)) else {
            self.stats.bad_releases += 1;
            return;
        };
        m.refs -= 1;
        if m.refs > 0 {
            return;
        }
        let public = m.public;
        self.mappings.remove(&(proto, inside));
        self.by_public.remove(&(proto, public));
        let pi = proto_index(proto);
        let Some(a) = self.pool.index_of(public.addr()) else { return };
        let in_range = u32::from(self.range.contains(public.port()));
        let block = self.block_of(public.port());
        let s = self.space_mut(a);
        s.used[pi].remove(public.port());
        s.in_range[pi] -= in_range;
        if let Some(n) = block {
            let b = &mut s.blocks[n as usize];
            b.used -= 1;
            if b.used == 0 {
                b.idle_since = Some(now);
                self.arm(block_id(a, n), now);
            }
        }
        if let Some(h) = self.hosts.get_mut(&inside.addr()) {
            h.ports[pi] -= 1;
        }
        self.forget_if_empty(inside.addr());
    }

    /// Pairs `host` with address `addr` (the caller chose it), creating its entry.
    fn pair(&mut self, host: Ipv4Addr, addr: usize) -> &mut Host {
        if !self.hosts.contains_key(&host) {
            self.space_mut(addr).hosts += 1;
        }
        self.hosts.entry(host).or_insert(Host {
            addr: addr as u16,
            blocks: 0,
            first: NO_BLOCK,
            ports: [0; PROTOS],
            cursor: [0; PROTOS],
        })
    }

    /// Drops a host that holds no mapping and no block: its pairing ends (RFC 4787 REQ-2 pairs only
    /// while it has mappings).
    fn forget_if_empty(&mut self, host: Ipv4Addr) {
        let Some(h) = self.hosts.get(&host) else { return };
        if h.blocks == 0 && h.ports == [0; PROTOS] {
            let a = usize::from(h.addr);
            self.hosts.remove(&host);
            if let Some(s) = self.spaces[a].as_deref_mut() {
                s.hosts -= 1;
            }
        }
    }

    /// The address for a host that holds nothing yet: its hashed one, else the next with `room`.
    fn choose_address(
        &mut self,
        host: Ipv4Addr,
        proto: Proto,
        now: Instant,
        room: impl Fn(&Nat, usize) -> bool,
    ) -> Result<usize, Refused> {
        let n = self.pool.len();
        if let Some(&a) = self.pins.get(&host) {
            // A pinned host has one address: elsewhere its forwarded clients would not know it.
            if room(self, usize::from(a)) {
                return Ok(usize::from(a));
            }
            return Err(self.ports_exhausted(now, proto, usize::from(a)));
        }
        let first = self.pool.preferred(host);
        if let Some(a) = (0..n).map(|k| (first + k) % n).find(|&a| room(self, a)) {
            return Ok(a);
        }
        self.stats.addresses_exhausted += 1;
        tracing::debug!(target: "ftpnat::nat", reason = "addresses_exhausted", %proto, host = %host,
            "no public address has room for a new host; new flow refused");
        self.log.push_alarm(now, || Record::AddressesExhausted { at: now, proto });
        Err(Refused::Exhausted)
    }

    fn ports_exhausted(&mut self, now: Instant, proto: Proto, addr: usize) -> Refused {
        self.stats.ports_exhausted += 1;
        let public = self.pool.get(addr);
        tracing::debug!(target: "ftpnat::nat", reason = "ports_exhausted", %proto, public = %public,
            "public ports exhausted on the host's address; new flow refused");
        self.log.push_alarm(now, || Record::PortsExhausted { at: now, proto, public });
        Refused::Exhausted
    }

    fn quota(&mut self, now: Instant, proto: Proto, host: Ipv4Addr, quota: Quota, limit: u32) -> Refused {
        self.stats.quota_exceeded += 1;
        tracing::debug!(target: "ftpnat::nat", reason = "host_quota", %proto, host = %host, quota = quota.name(),
            limit, "inside host holds its share; its new flow refused");
        self.log.push_alarm(now, || Record::QuotaExceeded { at: now, proto, host, quota, limit });
        Refused::HostQuota
    }

    fn pick_dynamic(
        &mut self,
        proto: Proto,
        inside: InsideEndpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
        now: Instant,
    ) -> Result<(usize, u16), Refused> {
        let pi = proto_index(proto);
        let len = self.range.len();
        let a = match self.hosts.get(&inside.addr()) {
            Some(h) => usize::from(h.addr),
            None => {
                let keep_range = self.keep;
                let keepable = |s: &Space| {
                    let p = inside.port();
                    p != 0 && keep_range.contains(p) && !s.used[pi].contains(p)
                };
                self.choose_address(inside.addr(), proto, now, |nat, a| {
                    nat.space(a).is_none_or(|s| s.in_range[pi] < len || keepable(s))
                })?
            }
        };
        let (range, keep_range) = (self.range, self.keep);
        let s = self.space_mut(a);
        let keep =
            inside.port() != 0 && keep_range.contains(inside.port()) && !s.used[pi].contains(inside.port());
        let full = s.in_range[pi] >= len;
        let search = |s: &Space, pref: Option<&dyn Fn(u16) -> bool>| match (full, pref) {
            (true, _) => None,
            (false, Some(pref)) => s.used[pi].next_free_where(range, s.cursor[pi], PREFERENCE_SCAN, pref),
            (false, None) => s.used[pi].next_free(range, s.cursor[pi]),
        };
        let found = match prefer {
            Some(pref) if !(keep && pref(inside.port())) => match search(s, Some(pref)) {
                Some(p) => Some(p),
                None if keep => return Ok((a, inside.port())),
                None => search(s, None),
            },
            _ if keep => return Ok((a, inside.port())),
            _ => search(s, None),
        };
        let Some(port) = found else { return Err(self.ports_exhausted(now, proto, a)) };
        // Sequential with a stride keeps allocation O(1) amortised while not handing out the same
        // port right after it was freed (late packets of the old flow).
        s.cursor[pi] = range.after(port);
        Ok((a, port))
    }

    fn pick_deterministic(
        &mut self,
        proto: Proto,
        inside: InsideEndpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
        now: Instant,
    ) -> Result<(usize, u16), Refused> {
        let pi = proto_index(proto);
        let share = self.det.as_ref().and_then(|d| d.forward(inside.addr()));
        let Some(share) = share else { return Err(Refused::Exhausted) };
        let Some(a) = self.pool.index_of(share.public) else { return Err(Refused::Exhausted) };
        // Within the allocator's range (all of it: with several workers a host's whole range is its
        // worker's, `steer::DetRule`).
        let Some(range) = share.ports.intersect(self.range) else {
            return Err(self.quota(now, proto, inside.addr(), Quota::DeterministicRange, 0));
        };
        let from = self.hosts.get(&inside.addr()).map_or(range.first(), |h| h.cursor[pi]);
        let s = self.space_mut(a);
        let port = prefer
            .and_then(|pref| s.used[pi].next_free_where(range, from, PREFERENCE_SCAN, pref))
            .or_else(|| s.used[pi].next_free(range, from));
        let Some(port) = port else {
            return Err(self.quota(now, proto, inside.addr(), Quota::DeterministicRange, range.len()));
        };
        self.pair(inside.addr(), a).cursor[pi] = range.after(port);
        Ok((a, port))
    }

    /// The host's blocks, those in use first (an idle block is used only when the others are full, so
    /// it can go back to the pool).
    fn host_blocks(&self, host: &Host) -> Vec<u32> {
        let mut out = Vec::with_capacity(usize::from(host.blocks));
        let mut id = host.first;
        while id != NO_BLOCK {
            out.push(id);
            let (a, n) = split_id(id);
            id = self.space(a).map_or(NO_BLOCK, |s| s.blocks[n as usize].next);
        }
        out.sort_by_key(|&id| {
            let (a, n) = split_id(id);
            self.space(a).is_none_or(|s| s.blocks[n as usize].used == 0)
        });
        out
    }

    /// A free port of block `id` for `pi`, `pref` first when given; moves the block's cursor on.
    fn port_in_block(
        &mut self,
        id: u32,
        pi: usize,
        pref: Option<&dyn Fn(u16) -> bool>,
        budget: &mut u32,
    ) -> Option<u16> {
        let (a, n) = split_id(id);
        let range = self.block_range(n);
        let s = self.space_mut(a);
        let b = &mut s.blocks[n as usize];
        let from = range.first().saturating_add(b.cursor[pi]).min(range.last());
        let port = match pref {
            Some(pref) => {
                let look = (*budget).min(range.len());
                *budget -= look;
                s.used[pi].next_free_where(range, from, look, pref)
            }
            None => s.used[pi].next_free(range, from),
        }?;
        let next = port - range.first() + 1;
        b.cursor[pi] = if u32::from(next) >= range.len() { 0 } else { next };
        Some(port)
    }

    fn pick_block(
        &mut self,
        proto: Proto,
        inside: InsideEndpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
        policy: BlockPolicy,
        now: Instant,
    ) -> Result<(usize, u16), Refused> {
        let pi = proto_index(proto);
        let host = inside.addr();
        let held = self.hosts.get(&host).copied();
        if let Some(h) = held {
            let blocks = self.host_blocks(&h);
            let mut budget = PREFERENCE_SCAN;
            if let Some(pref) = prefer {
                for &id in &blocks {
                    if let Some(p) = self.port_in_block(id, pi, Some(pref), &mut budget) {
                        return Ok((split_id(id).0, p));
                    }
                }
            }
            for &id in &blocks {
                if let Some(p) = self.port_in_block(id, pi, None, &mut budget) {
                    return Ok((split_id(id).0, p));
                }
            }
            if h.blocks >= policy.per_host {
                let limit = u32::from(policy.per_host) * u32::from(policy.size);
                return Err(self.quota(now, proto, host, Quota::BlocksPerHost, limit));
            }
        }
        let a = match held {
            Some(h) => usize::from(h.addr),
            None => self
                .choose_address(host, proto, now, |nat, a| nat.space(a).is_none_or(|s| !s.free.is_empty()))?,
        };
        let Some(n) = self.space_mut(a).free.pop_front() else {
            return Err(self.ports_exhausted(now, proto, a));
        };
        let id = block_id(a, n);
        let ports = self.block_range(n);
        let first = self.pair(host, a).first;
        let b = &mut self.space_mut(a).blocks[n as usize];
        *b = Block {
            owner: Some(host),
            used: 0,
            next: first,
            since: now,
            idle_since: Some(now),
            armed: b.armed,
            cursor: [0; PROTOS],
        };
        let h = self.hosts.get_mut(&host).expect("paired above");
        h.first = id;
        h.blocks += 1;
        self.stats.blocks_allocated += 1;
        let public = self.pool.get(a);
        tracing::debug!(target: "ftpnat::nat", event = "block_allocated", host = %host, %public, %ports, "port block allocated");
        self.log.push(|| Record::BlockAllocated { at: now, inside: host, inside6: None, public, ports });
        let mut budget = PREFERENCE_SCAN;
        let port = prefer
            .and_then(|pref| self.port_in_block(id, pi, Some(pref), &mut budget))
            .or_else(|| self.port_in_block(id, pi, None, &mut budget));
        match port {
            Some(p) => Ok((a, p)),
            None => {
                // Every port of the fresh block is reserved for this protocol (forwards): it idles out.
                self.arm(id, now);
                Err(self.ports_exhausted(now, proto, a))
            }
        }
    }

    /// Queues the hold-down timer of block `id` (idle since `now`) unless one is queued already; a
    /// queued one that fires early re-queues itself for the block's later idle time.
    fn arm(&mut self, id: u32, now: Instant) {
        let Allocation::Blocks(p) = self.allocation else { return };
        let (a, n) = split_id(id);
        let b = &mut self.space_mut(a).blocks[n as usize];
        if !b.armed {
            b.armed = true;
            self.timers.push(Reverse((now + p.hold, id)));
        }
    }

    /// When the next idle block's hold-down ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Returns to the pool every block idle for the hold-down time; a host left with nothing loses its
    /// pairing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Allocation::Blocks(p) = self.allocation else { return };
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let (a, n) = split_id(id);
            let b = &mut self.space_mut(a).blocks[n as usize];
            b.armed = false;
            match (b.owner, b.used, b.idle_since) {
                (Some(owner), 0, Some(idle)) if idle + p.hold <= now => self.release_block(owner, id, now),
                (Some(_), 0, Some(idle)) => {
                    // Used and idle again since this timer was queued: wait out the later idle time.
                    b.armed = true;
                    self.timers.push(Reverse((idle + p.hold, id)));
                }
                _ => {}
            }
        }
    }

    fn release_block(&mut self, owner: Ipv4Addr, id: u32, now: Instant) {
        let (a, n) = split_id(id);
        let ports = self.block_range(n);
        let Some(mut h) = self.hosts.get(&owner).copied() else { return };
        // Unlink it from the owner's list.
        let next = self.space_mut(a).blocks[n as usize].next;
        if h.first == id {
            h.first = next;
        } else {
            let mut cur = h.first;
            while cur != NO_BLOCK {
                let (ca, cn) = split_id(cur);
                let c = &mut self.space_mut(ca).blocks[cn as usize];
                if c.next == id {
                    c.next = next;
                    break;
                }
                cur = c.next;
            }
        }
        h.blocks -= 1;
        self.hosts.insert(owner, h);
        let s = self.space_mut(a);
        let b = &mut s.blocks[n as usize];
        let since = b.since;
        (b.owner, b.next, b.idle_since) = (None, NO_BLOCK, None);
        s.free.push_back(n);
        self.stats.blocks_released += 1;
        let public = self.pool.get(a);
        tracing::debug!(target: "ftpnat::nat", event = "block_released", host = %owner, %public, %ports, "port block released");
        self.log.push(|| Record::BlockReleased {
            at: now,
            since,
            inside: owner,
            inside6: None,
            public,
            ports,
        });
        self.forget_if_empty(owner);
    }

    /// A release record for every block still held, stamped `now`, for the gateway's stop: the
    /// collector then sees every block it was told about go back (RFC 6888 §4 asks the log to let an
    /// operator tell who held a port when; a block with no end would read as held forever). The
    /// allocator itself is left as it is: nothing runs after the stop.
    pub fn stop_records(&self, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        for (a, s) in self.spaces.iter().enumerate() {
            let Some(s) = s.as_deref() else { continue };
            for (n, b) in s.blocks.iter().enumerate() {
                if let Some(inside) = b.owner {
                    let n = n as u32;
                    let (public, ports) = (self.pool.get(a), self.block_range(n));
                    // A NAT64 stand-in's block is released in the name of its IPv6 subscriber, as
                    // every other record of it is.
                    let inside6 = self.log.host6(inside);
                    out.push(Record::BlockReleased {
                        at: now,
                        since: b.since,
                        inside,
                        inside6,
                        public,
                        ports,
                    });
                }
            }
        }
        out
    }

    // ----- lookups ----------------------------------------------------------------------------

    /// The public endpoint currently mapped to `inside`, if any.
    pub fn public_of(&self, proto: Proto, inside: InsideEndpoint) -> Option<PublicEndpoint> {
        self.mappings.get(&(proto, inside)).map(|m| m.public)
    }

    /// The inside endpoint mapped to a public endpoint, if any.
    pub fn inside_of(&self, proto: Proto, public: PublicEndpoint) -> Option<InsideEndpoint> {
        self.by_public.get(&(proto, public)).copied()
    }

    /// The address `host`'s mappings use now (`None` while it holds nothing).
    pub fn paired(&self, host: Ipv4Addr) -> Option<Ipv4Addr> {
        self.hosts.get(&host).map(|h| self.pool.get(usize::from(h.addr)))
    }

    /// True if `addr` is one of the pool's addresses.
    pub fn is_public(&self, addr: Ipv4Addr) -> bool {
        self.pool.contains(addr)
    }

    /// Mappings `host` holds for `proto`.
    pub fn host_mappings(&self, proto: Proto, host: Ipv4Addr) -> usize {
        self.hosts.get(&host).map_or(0, |h| h.ports[proto_index(proto)] as usize)
    }

    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }

    /// Public ports taken for `proto` on every address, reservations included.
    pub fn taken(&self, proto: Proto) -> usize {
        self.spaces.iter().flatten().map(|s| s.used[proto_index(proto)].count_all() as usize).sum()
    }

    // ----- reservations (static forwards) -----------------------------------------------------

    /// Takes a public endpoint out of the pool for good (a static forward's).
    pub fn reserve_public(&mut self, proto: Proto, public: PublicEndpoint) -> Result<(), ReserveError> {
        let a = self.pool.index_of(public.addr()).ok_or(ReserveError::NotInPool)?;
        let pi = proto_index(proto);
        let in_range = u32::from(self.range.contains(public.port()));
        let s = self.space_mut(a);
        if s.used[pi].contains(public.port()) {
            return Err(ReserveError::InUse);
        }
        s.used[pi].insert(public.port());
        s.in_range[pi] += in_range;
        Ok(())
    }

    /// Returns a reserved endpoint to the pool (not one a live mapping holds).
    pub fn unreserve_public(&mut self, proto: Proto, public: PublicEndpoint) {
        let Some(a) = self.pool.index_of(public.addr()) else { return };
        if self.by_public.contains_key(&(proto, public)) {
            return;
        }
        let pi = proto_index(proto);
        let in_range = u32::from(self.range.contains(public.port()));
        let s = self.space_mut(a);
        if s.used[pi].contains(public.port()) {
            s.used[pi].remove(public.port());
            s.in_range[pi] -= in_range;
        }
    }

    /// True if nothing (mapping or reservation) holds the public endpoint.
    pub fn public_free(&self, proto: Proto, public: PublicEndpoint) -> bool {
        match self.pool.index_of(public.addr()) {
            Some(a) => self.space(a).is_none_or(|s| !s.used[proto_index(proto)].contains(public.port())),
            None => false,
        }
    }

    // ----- views ------------------------------------------------------------------------------

    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges { mappings: self.mappings.len(), hosts: self.hosts.len(), ..Gauges::default() };
        for s in self.spaces.iter().flatten() {
            g.addresses_in_use += usize::from(s.hosts > 0);
            for b in &s.blocks {
                g.blocks_in_use += usize::from(b.owner.is_some());
                g.blocks_idle += usize::from(b.owner.is_some() && b.used == 0);
            }
        }
        g.blocks_total = self.blocks_per_addr as usize * self.pool.len();
        g
    }

    /// Every public address in numbers.
    pub fn addresses(&self) -> Vec<AddressView> {
        (0..self.pool.len())
            .map(|a| {
                let s = self.space(a);
                AddressView {
                    addr: self.pool.get(a),
                    hosts: s.map_or(0, |s| s.hosts),
                    ports: ALL_PROTOS.map(|p| s.map_or(0, |s| s.used[proto_index(p)].count_all())),
                    blocks_in_use: s
                        .map_or(0, |s| s.blocks.iter().filter(|b| b.owner.is_some()).count() as u32),
                    blocks_total: self.blocks_per_addr,
                }
            })
            .collect()
    }

    fn block_view(&self, id: u32) -> Option<BlockView> {
        let (a, n) = split_id(id);
        let b = self.space(a)?.blocks.get(n as usize)?;
        Some(BlockView {
            public: self.pool.get(a),
            ports: self.block_range(n),
            owner: b.owner?,
            since: b.since,
            used: b.used,
            idle_since: b.idle_since,
        })
    }

    /// Every block held, by address and block number.
    pub fn blocks(&self) -> Vec<BlockView> {
        let mut out = Vec::new();
        for (a, s) in self.spaces.iter().enumerate() {
            let Some(s) = s else { continue };
            for (n, b) in s.blocks.iter().enumerate() {
                if b.owner.is_some() {
                    out.extend(self.block_view(block_id(a, n as u32)));
                }
            }
        }
        out
    }

    /// What `host` holds (`show mapping IP`).
    pub fn host_view(&self, host: Ipv4Addr) -> HostView {
        let h = self.hosts.get(&host);
        HostView {
            host,
            public: h.map(|h| self.pool.get(usize::from(h.addr))),
            ports: h.map_or([0; PROTOS], |h| h.ports),
            blocks: h.map_or_else(Vec::new, |h| {
                let mut ids = self.host_blocks(h);
                ids.sort_unstable();
                ids.into_iter().filter_map(|id| self.block_view(id)).collect()
            }),
            share: self.det.as_ref().and_then(|d| d.forward(host)),
        }
    }

    /// Who holds `port` on `public` (`show mapping PUBLIC:PORT`).
    pub fn owner_of(&self, public: Ipv4Addr, port: u16) -> PortOwner {
        let mut o = PortOwner::default();
        let Some(a) = self.pool.index_of(public) else { return o };
        let ep = PublicEndpoint::new(public, port);
        for p in ALL_PROTOS {
            match self.by_public.get(&(p, ep)) {
                Some(&inside) => o.mappings.push((p, inside)),
                None if !self.public_free(p, ep) => o.reserved.push(p),
                None => {}
            }
        }
        o.block = self.block_of(port).and_then(|n| self.block_view(block_id(a, n)));
        o.deterministic = self.det.as_ref().and_then(|d| d.reverse(public, port));
        o
    }

    /// Hosts holding anything, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.hosts.keys().copied()
    }

    // ----- the parked-reference interface the engine uses until it holds tokens -------------
    //
    // Issue 16 phase 1: connections and pinholes still name their mapping by (protocol, inside
    // endpoint) and park their reference (see [`MappingRef::park`]); these take and give back parked
    // references with the engine's time, so port blocks start their hold-down when they should.

    /// A dynamic allocator on one unnamed address, allocating from `range`.
    pub fn new(range: RangeInclusive<u16>) -> Nat {
        let range = PortRange::try_from(&range).unwrap_or(PortRange::new(1024, 65535).expect("valid"));
        Nat::with_setup(&Setup {
            pool: vec![Ipv4Addr::UNSPECIFIED],
            range,
            slice: None,
            allocation: Allocation::Dynamic,
            inside: Vec::new(),
            host_quota: usize::MAX,
        })
    }

    /// Pins `host` to the pool address `addr` (a forward's inside server, so its own connections and
    /// the FTP data connections of its forwarded control connections leave from the address its
    /// clients know): whenever the host is paired anew, it is paired with `addr`. Ignored for an
    /// address outside the pool, and in deterministic mode (the layout decides there).
    pub fn pin(&mut self, host: Ipv4Addr, addr: Ipv4Addr) {
        if let Some(a) = self.pool.index_of(addr) {
            self.pins.insert(host, a as u16);
        }
    }

    /// Forgets every pin (a reload re-pins the forwards it keeps).
    pub fn clear_pins(&mut self) {
        self.pins.clear();
    }

    /// [`Nat::map`], the reference parked with the caller.
    pub fn acquire(
        &mut self,
        proto: Proto,
        inside: Endpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
        now: Instant,
    ) -> Result<PublicEndpoint, Refused> {
        let m = self.map(proto, InsideEndpoint(inside), prefer, now)?;
        m.token.park();
        Ok(m.public)
    }

    /// A second parked reference on an existing mapping.
    pub fn add_ref(&mut self, proto: Proto, inside: Endpoint) {
        if let Some(m) = self.mappings.get_mut(&(proto, InsideEndpoint(inside))) {
            m.refs += 1;
        }
    }

    /// Gives back a parked reference.
    pub fn release(&mut self, proto: Proto, inside: Endpoint, now: Instant) {
        if self.mappings.contains_key(&(proto, InsideEndpoint(inside))) {
            self.unmap(MappingRef::unpark(proto, InsideEndpoint(inside)), now);
        }
    }

    /// The public endpoint currently mapped to `inside`, if any.
    pub fn lookup(&self, proto: Proto, inside: Endpoint) -> Option<PublicEndpoint> {
        self.public_of(proto, InsideEndpoint(inside))
    }

    /// The inside endpoint mapped to a public endpoint, if any.
    pub fn lookup_public(&self, proto: Proto, public: Endpoint) -> Option<Endpoint> {
        self.inside_of(proto, PublicEndpoint(public)).map(|i| i.endpoint())
    }

    /// Mappings (public ports) `host` holds for `proto`.
    pub fn host_ports(&self, proto: Proto, host: Ipv4Addr) -> usize {
        self.host_mappings(proto, host)
    }

    pub fn ports_in_use(&self, proto: Proto) -> usize {
        self.taken(proto)
    }
}

#[cfg(test)]
mod tests;
