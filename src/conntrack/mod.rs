//! Which connections exist, their protocol state and when they expire.
//!
//! Owns: the connection table (slab of [`Conn`] plus an index from each direction's [`FlowKey`]), the
//! table bound and per-inside-host counts, TCP state tracking and idle timeouts (RFC 5382 §5, RFC 4787
//! REQ-5), and the expiry queue driven by the caller's time. Must not: edit packets, allocate ports
//! (it only remembers which mapping a connection holds), or know about FTP beyond storing the ALG
//! state the engine attaches.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;

use crate::alg::ftp::FtpSession;
use crate::config::Timeouts;
use crate::flow::{ConnId, Dir, Endpoint, FlowKey, Proto, Side};
use crate::time::Instant;

/// TCP connection state, coarse like a NAT needs it (RFC 5382 §5 distinguishes established from
/// transitory; closing states shorten the timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynReceived,
    Established,
    /// A FIN went one way.
    FinWait,
    /// FINs went both ways, or an RST: the mapping goes soon.
    Closed,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynReceived => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::Closed => "CLOSE",
        }
    }
}

/// How a connection came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An inside host opened it (source NAT).
    Outbound,
    /// An outside host opened it through a static forward (destination NAT).
    Forward,
    /// An inside host reached a forward through the public address (both translated).
    Hairpin,
    /// An outside host opened it through an ALG pinhole (an FTP data connection).
    Pinhole { control: ConnId },
}

#[derive(Debug, Clone)]
pub struct Conn {
    pub proto: Proto,
    /// Keys as each direction's sender writes them (before translation), indexed by [`Dir::index`].
    pub keys: [FlowKey; 2],
    /// The device each direction's packets arrive on.
    pub sides: [Side; 2],
    pub origin: Origin,
    pub tcp: TcpState,
    fin_seen: [bool; 2],
    pub replied: bool,
    pub created: Instant,
    pub last_seen: Instant,
    pub expires: Instant,
    /// The inside endpoint whose mapping this connection holds a reference on.
    pub mapping: Option<Endpoint>,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The inside host this connection counts against.
    pub host: Option<Ipv4Addr>,
    pub ftp: Option<Box<FtpSession>>,
    generation: u32,
    /// Deadline of this connection's live entry in the expiry queue.
    queued: Instant,
}

impl Conn {
    /// A connection whose `orig` key arrived on `orig_side` and whose answers will come as `reply`.
    pub fn new(
        orig: FlowKey,
        orig_side: Side,
        reply: FlowKey,
        reply_side: Side,
        origin: Origin,
        now: Instant,
    ) -> Conn {
        Conn {
            proto: orig.proto,
            keys: [orig, reply],
            sides: [orig_side, reply_side],
            origin,
            tcp: TcpState::SynSent,
            fin_seen: [false; 2],
            replied: false,
            created: now,
            last_seen: now,
            expires: now,
            mapping: None,
            packets: [0; 2],
            bytes: [0; 2],
            host: None,
            ftp: None,
            generation: 0,
            queued: now,
        }
    }

    pub fn key(&self, d: Dir) -> FlowKey {
        self.keys[d.index()]
    }

    /// What a packet travelling in `d` looks like after translation: it leaves addressed like the
    /// reverse of the other direction's key.
    pub fn translated(&self, d: Dir) -> FlowKey {
        self.keys[d.reverse().index()].reversed()
    }

    /// The side a packet travelling in `d` leaves by.
    pub fn egress(&self, d: Dir) -> Side {
        self.sides[d.reverse().index()]
    }

    /// Updates TCP state for a segment in `d`.
    pub fn track_tcp(&mut self, d: Dir, syn: bool, ack: bool, fin: bool, rst: bool) {
        if rst {
            self.tcp = TcpState::Closed;
            return;
        }
        if fin {
            self.fin_seen[d.index()] = true;
        }
        self.tcp = match (self.tcp, d) {
            _ if self.fin_seen[0] && self.fin_seen[1] => TcpState::Closed,
            _ if fin => TcpState::FinWait,
            (TcpState::SynSent, Dir::Reply) if syn && ack => TcpState::SynReceived,
            (TcpState::SynReceived, Dir::Original) if ack && !syn => TcpState::Established,
            (s, _) => s,
        };
    }

    pub fn timeout(&self, t: &Timeouts) -> core::time::Duration {
        match self.proto {
            Proto::Tcp => match self.tcp {
                TcpState::Established => t.tcp_established,
                TcpState::Closed => t.tcp_closed,
                TcpState::SynSent | TcpState::SynReceived | TcpState::FinWait => t.tcp_transitory,
            },
            Proto::Udp => t.udp,
            Proto::Icmp => t.icmp,
        }
    }

    /// A TCP connection picked up mid-stream (Linux conntrack's "loose" pickup) is treated as
    /// established: the gateway restarted under it.
    pub fn mark_established(&mut self) {
        self.tcp = TcpState::Established;
        self.replied = true;
    }
}

/// Why a connection could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Table,
    Host,
}

/// The connection table.
pub struct Table {
    slots: Vec<Option<Conn>>,
    free: Vec<u32>,
    /// Hashed with foldhash (randomly seeded per table, "minimally DoS-resistant") rather than
    /// SipHash: the lookup runs for every packet and SipHash was a fifth of its cost.
    index: HashMap<FlowKey, (ConnId, Dir), foldhash::fast::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    per_host: HashMap<Ipv4Addr, u32>,
    max: usize,
    max_per_host: usize,
    next_generation: u32,
    len: usize,
}

impl Table {
    pub fn new(max: usize, max_per_host: usize) -> Table {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            timers: BinaryHeap::new(),
            per_host: HashMap::new(),
            max,
            max_per_host,
            next_generation: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.max
    }
    pub fn set_limits(&mut self, max: usize, max_per_host: usize) {
        self.max = max;
        self.max_per_host = max_per_host;
    }

    /// Finds the connection a packet with `key` belongs to, and the direction it travels.
    pub fn lookup(&self, key: &FlowKey) -> Option<(ConnId, Dir)> {
        self.index.get(key).copied()
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slots.get(id.0 as usize).and_then(|s| s.as_ref())
    }
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slots.get_mut(id.0 as usize).and_then(|s| s.as_mut())
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|c| (ConnId(i as u32), c)))
    }

    /// True if both keys are unused (a new connection would not shadow an existing one).
    pub fn keys_free(&self, a: &FlowKey, b: &FlowKey) -> bool {
        !self.index.contains_key(a) && !self.index.contains_key(b)
    }

    /// Checks the bounds for a new connection counted against `host`.
    pub fn admit(&self, host: Option<Ipv4Addr>) -> Result<(), Full> {
        if self.len >= self.max {
            return Err(Full::Table);
        }
        if let Some(h) = host {
            if self.per_host.get(&h).copied().unwrap_or(0) as usize >= self.max_per_host {
                return Err(Full::Host);
            }
        }
        Ok(())
    }

    /// Inserts a connection (call [`Table::admit`] first). Its expiry is `conn.expires`.
    pub fn insert(&mut self, mut conn: Conn) -> ConnId {
        self.next_generation = self.next_generation.wrapping_add(1);
        conn.generation = self.next_generation;
        let id = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(conn.keys[0], (ConnId(id), Dir::Original));
        self.index.insert(conn.keys[1], (ConnId(id), Dir::Reply));
        if let Some(h) = conn.host {
            *self.per_host.entry(h).or_default() += 1;
        }
        conn.queued = conn.expires;
        self.timers.push(Reverse((conn.expires, id, conn.generation)));
        self.slots[id as usize] = Some(conn);
        self.len += 1;
        ConnId(id)
    }

    /// Sets a connection's expiry. A later time is picked up lazily when the old deadline comes up; an
    /// earlier one (an RST, the last FIN) gets its own queue entry at once.
    pub fn set_expiry(&mut self, id: ConnId, at: Instant) {
        let Some(conn) = self.slots.get_mut(id.0 as usize).and_then(|s| s.as_mut()) else { return };
        conn.expires = at;
        if at < conn.queued {
            conn.queued = at;
            self.timers.push(Reverse((at, id.0, conn.generation)));
        }
    }

    /// Removes a connection and returns it (its mapping reference and ALG state are the caller's to
    /// release).
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.slots.get_mut(id.0 as usize)?.take()?;
        for k in &conn.keys {
            if self.index.get(k).is_some_and(|(i, _)| *i == id) {
                self.index.remove(k);
            }
        }
        if let Some(h) = conn.host {
            if let Some(n) = self.per_host.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    self.per_host.remove(&h);
                }
            }
        }
        self.free.push(id.0);
        self.len -= 1;
        Some(conn)
    }

    /// The earliest time something may expire (possibly early: a refreshed connection is re-queued
    /// when its old deadline comes up).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Pops the next connection whose idle timeout has passed at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<ConnId> {
        while let Some(&Reverse((t, id, generation))) = self.timers.peek() {
            if t > now {
                return None;
            }
            self.timers.pop();
            let Some(conn) = self.slots.get_mut(id as usize).and_then(|s| s.as_mut()) else { continue };
            if conn.generation != generation || conn.queued != t {
                continue;
            }
            if conn.expires > now {
                // Refreshed since this timer was queued: one live timer per connection, moved lazily.
                conn.queued = conn.expires;
                self.timers.push(Reverse((conn.expires, id, generation)));
                continue;
            }
            return Some(ConnId(id));
        }
        None
    }

    /// Connections per inside host (for exhaustion reporting).
    pub fn host_count(&self, h: Ipv4Addr) -> usize {
        self.per_host.get(&h).copied().unwrap_or(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn key(sp: u16) -> FlowKey {
        FlowKey::new(
            Proto::Udp,
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), sp),
            Endpoint::new(Ipv4Addr::new(198, 51, 100, 2), 53),
        )
    }

    fn conn(sp: u16, now: Instant, ttl: u64) -> Conn {
        let orig = key(sp);
        let reply = FlowKey::new(Proto::Udp, orig.dst, Endpoint::new(Ipv4Addr::new(198, 51, 100, 1), sp));
        let mut c = Conn::new(orig, Side::Inside, reply, Side::Outside, Origin::Outbound, now);
        c.expires = now + Duration::from_secs(ttl);
        c.host = Some(orig.src.addr);
        c
    }

    #[test]
    fn lookup_both_directions_and_translation() {
        let mut t = Table::new(10, 10);
        let id = t.insert(conn(1000, Instant::ZERO, 60));
        let c = t.get(id).unwrap();
        assert_eq!(t.lookup(&c.key(Dir::Original)), Some((id, Dir::Original)));
        assert_eq!(t.lookup(&c.key(Dir::Reply)), Some((id, Dir::Reply)));
        // Outbound leaves from the public address; the reply reaches the inside host.
        assert_eq!(c.translated(Dir::Original).src, Endpoint::new(Ipv4Addr::new(198, 51, 100, 1), 1000));
        assert_eq!(c.translated(Dir::Reply).dst, Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 1000));
        assert_eq!(c.egress(Dir::Original), Side::Outside);
        assert_eq!(c.egress(Dir::Reply), Side::Inside);
    }

    #[test]
    fn expiry_follows_virtual_time_and_refresh() {
        let mut t = Table::new(10, 10);
        let a = t.insert(conn(1, Instant::ZERO, 60));
        let b = t.insert(conn(2, Instant::ZERO, 120));
        assert_eq!(t.pop_expired(Instant::from_secs(59)), None);
        // Refresh a before it expires.
        t.set_expiry(a, Instant::from_secs(200));
        assert_eq!(t.pop_expired(Instant::from_secs(60)), None);
        assert_eq!(t.pop_expired(Instant::from_secs(120)), Some(b));
        t.remove(b);
        assert_eq!(t.pop_expired(Instant::from_secs(199)), None);
        assert_eq!(t.pop_expired(Instant::from_secs(200)), Some(a));
        // Shortening (an RST) takes effect before the old deadline.
        let c = t.insert(conn(3, Instant::ZERO, 7440));
        t.set_expiry(c, Instant::from_secs(210));
        assert_eq!(t.pop_expired(Instant::from_secs(210)), Some(c));
    }

    #[test]
    fn bounds_are_enforced() {
        let mut t = Table::new(2, 1);
        t.insert(conn(1, Instant::ZERO, 60));
        assert_eq!(t.admit(Some(Ipv4Addr::new(10, 0, 0, 2))), Err(Full::Host));
        assert_eq!(t.admit(Some(Ipv4Addr::new(10, 0, 0, 3))), Ok(()));
        t.insert(conn(2, Instant::ZERO, 60));
        assert_eq!(t.admit(None), Err(Full::Table));
        let id = t.lookup(&key(1)).unwrap().0;
        t.remove(id);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(&key(1)), None);
    }

    #[test]
    fn tcp_states() {
        let mut c = conn(1, Instant::ZERO, 1);
        c.proto = Proto::Tcp;
        c.track_tcp(Dir::Original, true, false, false, false);
        assert_eq!(c.tcp, TcpState::SynSent);
        c.track_tcp(Dir::Reply, true, true, false, false);
        assert_eq!(c.tcp, TcpState::SynReceived);
        c.track_tcp(Dir::Original, false, true, false, false);
        assert_eq!(c.tcp, TcpState::Established);
        let t = Timeouts::default();
        assert_eq!(c.timeout(&t), t.tcp_established);
        c.track_tcp(Dir::Original, false, true, true, false);
        assert_eq!(c.tcp, TcpState::FinWait);
        c.track_tcp(Dir::Reply, false, true, true, false);
        assert_eq!(c.tcp, TcpState::Closed);
        assert_eq!(c.timeout(&t), t.tcp_closed);
    }
}
