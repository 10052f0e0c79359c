//! Allocation records for the operator's log collector (RFC 6888 §4 REQ-12/13: who used which public
//! address and ports when), as values.
//!
//! Owns: the [`Record`] vocabulary (port-block allocation and release, NAT44 session create and
//! delete, address and port exhaustion, quota exceeded: the RFC 8158 events ftpnat has) and [`Log`],
//! the bounded queue the allocator and the engine push to and the shell drains into its IPFIX and
//! syslog exporters, and the names of NAT64 stand-ins it writes into them (`inside6`). Must not: encode, send or timestamp with a wall clock (records carry the core's
//! [`Instant`]; the shell converts it when it exports).
//!
//! Unlike `ftpnat events`, this queue is meant to be complete: it is on whenever an exporter is
//! configured, and sized so the run loop (which drains it every turn) never lets it fill. If it ever
//! does, the newest records are refused and counted (`dropped`), so what did reach the collector is an
//! unbroken prefix and the loss is visible in metrics.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::ports::PortRange;
use super::{InsideEndpoint, PublicEndpoint};
use crate::flow::{Endpoint, Proto};
use crate::time::Instant;

/// Records held for the shell before new ones are refused.
pub const CAPACITY: usize = 1 << 16;
/// Records copied for the events between two engine calls, at most (the engine moves them on after
/// every packet and timeout; the event queue has its own bound).
pub const MIRROR_CAPACITY: usize = 1024;

/// Which limit a host ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    /// `--max-ports-per-host`: mappings (public ports) per protocol.
    PortsPerHost,
    /// The per-host port-block limit.
    BlocksPerHost,
    /// The host's deterministic port range is full.
    DeterministicRange,
}

impl Quota {
    pub const fn name(self) -> &'static str {
        match self {
            Quota::PortsPerHost => "ports_per_host",
            Quota::BlocksPerHost => "blocks_per_host",
            Quota::DeterministicRange => "deterministic_range",
        }
    }
}

/// One allocation event. Times are the core's [`Instant`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `inside` was given `ports` on `public`, for every protocol (RFC 8158 natEvent 16).
    /// `inside6`, in this and the session records: the IPv6 subscriber a NAT64 stand-in (`inside`,
    /// in 240.0.0.0/4) names, filled in by [`Log`] from [`Log::name_host6`] — whoever builds the
    /// record leaves it `None`.
    BlockAllocated {
        at: Instant,
        inside: Ipv4Addr,
        inside6: Option<Ipv6Addr>,
        public: Ipv4Addr,
        ports: PortRange,
    },
    /// The block given at `since` went back to the pool (natEvent 17): no mapping used it for the
    /// hold-down time, or the host's mapping table was cleared.
    BlockReleased {
        at: Instant,
        since: Instant,
        inside: Ipv4Addr,
        inside6: Option<Ipv6Addr>,
        public: Ipv4Addr,
        ports: PortRange,
    },
    /// A connection was translated `inside` → `public`, talking to `remote` (natEvent 4).
    SessionCreated {
        at: Instant,
        proto: Proto,
        inside: InsideEndpoint,
        inside6: Option<Ipv6Addr>,
        public: PublicEndpoint,
        remote: Endpoint,
    },
    /// That connection ended (natEvent 5).
    SessionDeleted {
        at: Instant,
        since: Instant,
        proto: Proto,
        inside: InsideEndpoint,
        inside6: Option<Ipv6Addr>,
        public: PublicEndpoint,
        remote: Endpoint,
    },
    /// No public address had room for a new host (natEvent 3).
    AddressesExhausted { at: Instant, proto: Proto },
    /// `public` has no free port (dynamic) or block (port blocks) for `proto` (natEvent 12).
    PortsExhausted { at: Instant, proto: Proto, public: Ipv4Addr },
    /// `host` holds `limit` of what `quota` counts and asked for more (natEvent 13).
    QuotaExceeded { at: Instant, proto: Proto, host: Ipv4Addr, quota: Quota, limit: u32 },
}

impl Record {
    /// Stable snake_case kind, as the syslog exporter and `ftpnat events --json` name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::BlockAllocated { .. } => "block_allocated",
            Record::BlockReleased { .. } => "block_released",
            Record::SessionCreated { .. } => "session_created",
            Record::SessionDeleted { .. } => "session_deleted",
            Record::AddressesExhausted { .. } => "addresses_exhausted",
            Record::PortsExhausted { .. } => "ports_exhausted",
            Record::QuotaExceeded { .. } => "quota_exceeded",
        }
    }

    /// The inside host's address as the operator knows it: the IPv6 subscriber of a NAT64 stand-in.
    pub fn inside6(&self) -> Option<Ipv6Addr> {
        match *self {
            Record::BlockAllocated { inside6, .. }
            | Record::BlockReleased { inside6, .. }
            | Record::SessionCreated { inside6, .. }
            | Record::SessionDeleted { inside6, .. } => inside6,
            _ => None,
        }
    }

    /// Fills `inside6` from the names of NAT64 stand-ins.
    fn stamp(&mut self, names: &HashMap<Ipv4Addr, Host6>) {
        if names.is_empty() {
            return;
        }
        let (inside, slot) = match self {
            Record::BlockAllocated { inside, inside6, .. }
            | Record::BlockReleased { inside, inside6, .. } => (*inside, inside6),
            Record::SessionCreated { inside, inside6, .. }
            | Record::SessionDeleted { inside, inside6, .. } => (inside.addr(), inside6),
            _ => return,
        };
        if let Some(h) = names.get(&inside) {
            *slot = Some(h.v6);
        }
    }

    /// When it happened.
    pub fn at(&self) -> Instant {
        match *self {
            Record::BlockAllocated { at, .. }
            | Record::BlockReleased { at, .. }
            | Record::SessionCreated { at, .. }
            | Record::SessionDeleted { at, .. }
            | Record::AddressesExhausted { at, .. }
            | Record::PortsExhausted { at, .. }
            | Record::QuotaExceeded { at, .. } => at,
        }
    }
}

/// What the operator asked to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LogPolicy {
    /// Anything at all (an exporter is configured).
    pub enabled: bool,
    /// One record per connection as well (`SessionCreated`/`SessionDeleted`): RFC 6888 §4 notes its
    /// volume; port blocks exist so that it is not needed.
    pub sessions: bool,
}

/// Exhaustion and quota records per second, at most, whatever the offered load: a host hammering its
/// quota would otherwise write one record per refused packet.
pub const ALARMS_PER_SEC: u32 = 100;

/// The bounded record queue.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Log {
    // Not in the state file: the policy is the running gateway's settings, and the shell drains the
    // queue to its exporters before it saves (as records, not state).
    #[serde(skip)]
    policy: LogPolicy,
    #[serde(skip)]
    queue: VecDeque<Record>,
    /// Block and alarm records copied for `ftpnat events` while someone follows them (bounded by
    /// [`MIRROR_CAPACITY`]; the engine moves them to its event queue after each packet or timeout).
    #[serde(skip)]
    mirror: bool,
    #[serde(skip)]
    mirrored: VecDeque<Record>,
    dropped: u64,
    /// Alarm (exhaustion, quota) records allowed in the current second, and that second.
    alarm_budget: u32,
    alarm_second: Option<u64>,
    alarms_suppressed: u64,
    /// The IPv6 subscriber of each NAT64 stand-in (RFC 8158 §4 names NAT64 records by
    /// sourceIPv6Address): an operator must trace a public port to the IPv6 host, not to a 240/4
    /// address it never sees. Kept while the stand-in is assigned or holds a port block (whose release
    /// record comes after the host's last connection), then dropped: bounded by the live hosts.
    names: HashMap<Ipv4Addr, Host6>,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Host6 {
    v6: Ipv6Addr,
    assigned: bool,
    blocks: u32,
}

impl Log {
    pub fn set_policy(&mut self, p: LogPolicy) {
        self.policy = p;
        if !p.enabled {
            self.queue.clear();
        }
    }

    pub fn policy(&self) -> LogPolicy {
        self.policy
    }

    /// Copies block and alarm records for `ftpnat events` (on while someone follows them).
    pub fn set_mirror(&mut self, on: bool) {
        self.mirror = on;
        if !on {
            self.mirrored.clear();
        }
    }

    /// NAT64: the stand-in `alias` now names `v6` (the engine calls this when it assigns one).
    pub fn name_host6(&mut self, alias: Ipv4Addr, v6: Ipv6Addr) {
        let h = self.names.entry(alias).or_insert(Host6 { v6, assigned: true, blocks: 0 });
        if h.v6 != v6 {
            // A recycled stand-in whose old block is still held: the new host inherits it (the
            // allocator knows hosts by address), and the records say so from here on.
            h.v6 = v6;
        }
        h.assigned = true;
    }

    /// NAT64: the stand-in `alias` was given back; its name stays while it holds a port block.
    pub fn unname_host6(&mut self, alias: Ipv4Addr) {
        if let Some(h) = self.names.get_mut(&alias) {
            h.assigned = false;
            if h.blocks == 0 {
                self.names.remove(&alias);
            }
        }
    }

    /// The IPv6 subscriber `alias` names (while assigned or holding a port block).
    pub fn host6(&self, alias: Ipv4Addr) -> Option<Ipv6Addr> {
        self.names.get(&alias).map(|h| h.v6)
    }

    /// Stand-ins named at present (bounded by the live NAT64 hosts and their held blocks).
    pub fn host6_names(&self) -> usize {
        self.names.len()
    }

    /// Port blocks of named stand-ins are counted here so a name outlives its host until the
    /// release record has been written.
    fn track_blocks(&mut self, r: &Record) {
        match *r {
            Record::BlockAllocated { inside, .. } => {
                if let Some(h) = self.names.get_mut(&inside) {
                    h.blocks += 1;
                }
            }
            Record::BlockReleased { inside, .. } => {
                if let Some(h) = self.names.get_mut(&inside) {
                    h.blocks = h.blocks.saturating_sub(1);
                    if h.blocks == 0 && !h.assigned {
                        self.names.remove(&inside);
                    }
                }
            }
            _ => {}
        }
    }

    /// The oldest record copied for the events, if any.
    pub fn pop_mirrored(&mut self) -> Option<Record> {
        self.mirrored.pop_front()
    }

    /// Queues an allocation record (blocks) built by `make`, when logging is on, and copies it for
    /// the events when they are followed.
    #[inline]
    pub fn push(&mut self, make: impl FnOnce() -> Record) {
        if !self.policy.enabled && !self.mirror {
            return;
        }
        let mut r = make();
        r.stamp(&self.names);
        self.track_blocks(&r);
        if self.mirror && self.mirrored.len() < MIRROR_CAPACITY {
            self.mirrored.push_back(r.clone());
        }
        self.enqueue(r);
    }

    fn enqueue(&mut self, r: Record) {
        if !self.policy.enabled {
            return;
        }
        if self.queue.len() >= CAPACITY {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(r);
    }

    /// Queues a session record when per-session logging was asked for (the events have the flows
    /// already: not copied there).
    #[inline]
    pub fn push_session(&mut self, make: impl FnOnce() -> Record) {
        if self.policy.sessions && self.policy.enabled {
            let mut r = make();
            r.stamp(&self.names);
            self.enqueue(r);
        }
    }

    /// Queues an exhaustion or quota record, within [`ALARMS_PER_SEC`].
    pub fn push_alarm(&mut self, now: Instant, make: impl FnOnce() -> Record) {
        if !self.policy.enabled && !self.mirror {
            return;
        }
        let second = now.as_micros() / 1_000_000;
        if self.alarm_second != Some(second) {
            (self.alarm_second, self.alarm_budget) = (Some(second), ALARMS_PER_SEC);
        }
        if self.alarm_budget == 0 {
            self.alarms_suppressed += 1;
            return;
        }
        self.alarm_budget -= 1;
        self.push(make);
    }

    pub fn pop(&mut self) -> Option<Record> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records refused because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Alarm records left out by the rate limit.
    pub fn alarms_suppressed(&self) -> u64 {
        self.alarms_suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(n: u64) -> Record {
        Record::AddressesExhausted { at: Instant::from_micros(n), proto: Proto::Tcp }
    }

    #[test]
    fn off_until_enabled_and_full_queue_refuses_the_newest() {
        let mut l = Log::default();
        let mut built = false;
        l.push(|| {
            built = true;
            alarm(0)
        });
        assert!(!built && l.is_empty(), "a disabled log builds nothing");
        l.set_policy(LogPolicy { enabled: true, sessions: false });
        l.push_session(|| alarm(1));
        assert!(l.is_empty(), "sessions only when asked");
        for i in 0..CAPACITY as u64 + 5 {
            l.push(|| alarm(i));
        }
        assert_eq!((l.len(), l.dropped()), (CAPACITY, 5));
        assert_eq!(l.pop(), Some(alarm(0)), "what was queued stays an unbroken prefix");
    }

    fn block(alloc: bool, inside: Ipv4Addr) -> Record {
        let ports = PortRange::new(1024, 1087).unwrap();
        let public = Ipv4Addr::new(198, 51, 100, 1);
        let at = Instant::ZERO;
        if alloc {
            Record::BlockAllocated { at, inside, inside6: None, public, ports }
        } else {
            Record::BlockReleased { at, since: at, inside, inside6: None, public, ports }
        }
    }

    #[test]
    fn nat64_stand_ins_are_named_until_their_block_is_released() {
        let mut l = Log::default();
        l.set_policy(LogPolicy { enabled: true, sessions: true });
        let (alias, other) = (Ipv4Addr::new(240, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let v6: Ipv6Addr = "2001:db8:64::2".parse().unwrap();
        l.name_host6(alias, v6);
        l.push(|| block(true, alias));
        l.push(|| block(true, other));
        // The host's last connection ends before its block's hold-down does.
        l.unname_host6(alias);
        assert_eq!(l.host6_names(), 1, "kept for the release record");
        l.push(|| block(false, alias));
        assert_eq!(l.host6_names(), 0, "and gone after it: bounded by the live hosts");
        let got: Vec<_> = std::iter::from_fn(|| l.pop()).map(|r| r.inside6()).collect();
        assert_eq!(got, [Some(v6), None, Some(v6)], "an IPv4 host is never given a name");
        // A stand-in given back without a block is forgotten at once.
        l.name_host6(alias, v6);
        l.unname_host6(alias);
        l.push(|| block(false, alias));
        assert_eq!((l.host6_names(), l.pop().and_then(|r| r.inside6())), (0, None));
    }

    #[test]
    fn alarms_are_rate_limited_per_second() {
        let mut l = Log::default();
        l.set_policy(LogPolicy { enabled: true, sessions: true });
        for i in 0..ALARMS_PER_SEC as u64 + 10 {
            l.push_alarm(Instant::from_millis(500), || alarm(i));
        }
        assert_eq!((l.len(), l.alarms_suppressed()), (ALARMS_PER_SEC as usize, 10));
        l.push_alarm(Instant::from_millis(1500), || alarm(0));
        assert_eq!(l.len(), ALARMS_PER_SEC as usize + 1, "a new second, a new budget");
    }
}
