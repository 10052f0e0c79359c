//! Outside ports: allocation and endpoint-independent mappings.
//!
//! Owns: which public ports are in use per protocol, the endpoint-independent mapping from an inside
//! endpoint to its public port (RFC 4787 REQ-1, RFC 5382 REQ-1: the same public port whatever the
//! destination), reference counts on those mappings, the ports reserved for static forwards, and each
//! inside host's share of the ports (RFC 6888 REQ-4: mappings per host and protocol, bounded).
//! Must not: look at packets or decide filtering; connections (conntrack) hold references to mappings.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::config::Shard;
use crate::flow::{Endpoint, Proto};
use crate::steer;

const PROTOS: usize = 3;
/// Ports examined for a preferred (length-neutral) port before settling for any free one. Decimal
/// lengths change every few hundred ports, so a same-length port is nearly always within reach.
const PREFERENCE_SCAN: u32 = 4096;

fn proto_index(p: Proto) -> usize {
    match p {
        Proto::Icmp => 0,
        Proto::Tcp => 1,
        Proto::Udp => 2,
    }
}

/// A set of 65536 bits: which ports are taken.
#[derive(Clone)]
struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    fn new() -> Self {
        PortSet(Box::new([0; 1024]))
    }
    fn contains(&self, p: u16) -> bool {
        self.0[p as usize / 64] & (1 << (p % 64)) != 0
    }
    fn insert(&mut self, p: u16) {
        self.0[p as usize / 64] |= 1 << (p % 64);
    }
    fn remove(&mut self, p: u16) {
        self.0[p as usize / 64] &= !(1 << (p % 64));
    }
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    public_port: u16,
    refs: u32,
}

/// Why no public port could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every port is taken.
    Exhausted,
    /// The inside host already holds its share of the ports (`--max-ports-per-host`).
    HostQuota,
}

/// Port allocator plus the endpoint-independent mapping table.
pub struct Nat {
    /// The ports this NAT hands out: the configured range, or this engine's slice of it.
    range: RangeInclusive<u16>,
    /// The configured range and this engine's place among the gateway's engines (issue 18): only
    /// ports of its slice ([`steer::owns_port`]) are handed out, so inbound packets, steered by their
    /// public port, reach the engine that holds the mapping.
    full: RangeInclusive<u16>,
    shard: Shard,
    used: [PortSet; PROTOS],
    in_use: [usize; PROTOS],
    /// Ports of `range` in use, so a full range is known without scanning it (a flood of new flows
    /// while the range is exhausted would otherwise cost a 64 K-port scan per packet).
    in_range: [usize; PROTOS],
    cursor: [u32; PROTOS],
    mappings: HashMap<(Proto, Endpoint), Mapping>,
    by_public: HashMap<(Proto, u16), Endpoint>,
    /// Mappings (so ports) each inside host holds, per protocol; hosts holding none are absent.
    per_host: [HashMap<Ipv4Addr, u32>; PROTOS],
    /// Mappings one host may hold per protocol.
    host_quota: usize,
}

impl Nat {
    pub fn new(range: RangeInclusive<u16>) -> Nat {
        let start = *range.start() as u32;
        Nat {
            full: range.clone(),
            shard: Shard::ONE,
            range,
            used: [PortSet::new(), PortSet::new(), PortSet::new()],
            in_use: [0; PROTOS],
            in_range: [0; PROTOS],
            cursor: [start; PROTOS],
            mappings: HashMap::new(),
            by_public: HashMap::new(),
            per_host: Default::default(),
            host_quota: usize::MAX,
        }
    }

    /// Makes this the NAT of engine `shard.index` of `shard.count`: from now on it hands out only the
    /// ports of its slice of the range (an inside port outside the range is kept only if
    /// [`steer::owns_port`] gives it to this engine). Set before the first mapping (the engine does, at
    /// construction); reserved ports stay reserved whatever their slice.
    pub fn set_shard(&mut self, shard: Shard) {
        debug_assert!(self.mappings.is_empty(), "a NAT is sharded before it maps anything");
        self.shard = shard;
        self.range = steer::slice_range(&self.full, shard.count, shard.index);
        let start = u32::from(*self.range.start());
        self.cursor = [start; PROTOS];
        for i in 0..PROTOS {
            self.in_range[i] = self.range.clone().filter(|&p| self.used[i].contains(p)).count();
        }
    }

    /// Whether this NAT may hand out `port` (always, unless it is one engine of several).
    pub fn owns(&self, port: u16) -> bool {
        self.shard.count <= 1 || steer::owns_port(&self.full, self.shard, port)
    }

    /// Sets how many mappings one inside host may hold per protocol. Hosts above a lowered quota keep
    /// what they hold; their new mappings are refused until they are below it.
    pub fn set_host_quota(&mut self, ports: usize) {
        self.host_quota = ports;
    }

    /// Mappings (public ports) `host` holds for `proto`.
    pub fn host_ports(&self, proto: Proto, host: Ipv4Addr) -> usize {
        self.per_host[proto_index(proto)].get(&host).copied().unwrap_or(0) as usize
    }

    /// Takes a port out of the pool for good (a static port forward's public port).
    pub fn reserve(&mut self, proto: Proto, port: u16) {
        if self.is_free(proto, port) {
            self.mark(proto, port, true);
        }
    }

    /// Marks a port used or free and keeps the counts.
    fn mark(&mut self, proto: Proto, port: u16, used: bool) {
        let i = proto_index(proto);
        let in_range = usize::from(self.range.contains(&port));
        if used {
            self.used[i].insert(port);
            self.in_use[i] += 1;
            self.in_range[i] += in_range;
        } else {
            self.used[i].remove(port);
            self.in_use[i] -= 1;
            self.in_range[i] -= in_range;
        }
    }

    /// Returns a port reserved with [`Nat::reserve`] to the pool.
    pub fn unreserve(&mut self, proto: Proto, port: u16) {
        if !self.is_free(proto, port) && !self.by_public.contains_key(&(proto, port)) {
            self.mark(proto, port, false);
        }
    }

    pub fn is_free(&self, proto: Proto, port: u16) -> bool {
        !self.used[proto_index(proto)].contains(port)
    }

    /// The public port currently mapped to `inside`, if any.
    pub fn lookup(&self, proto: Proto, inside: Endpoint) -> Option<u16> {
        self.mappings.get(&(proto, inside)).map(|m| m.public_port)
    }

    /// The inside endpoint mapped to a public port, if any.
    pub fn lookup_public(&self, proto: Proto, public_port: u16) -> Option<Endpoint> {
        self.by_public.get(&(proto, public_port)).copied()
    }

    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }

    pub fn ports_in_use(&self, proto: Proto) -> usize {
        self.in_use[proto_index(proto)]
    }

    /// Takes a reference on the mapping of `inside`, creating it if needed. A new mapping keeps the inside
    /// port when it is free (RFC 4787 REQ-3 port preservation is "should"; keeping it also lets a TCP
    /// connection picked up after a restart keep its public port), otherwise `prefer` ranks free ports in
    /// the configured range: the first port for which it returns true wins, else any free port.
    /// A new mapping is refused when the inside host holds its quota of them already; an existing one
    /// is shared whatever the quota (it costs no port).
    pub fn acquire(
        &mut self,
        proto: Proto,
        inside: Endpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
    ) -> Result<u16, Refused> {
        if let Some(m) = self.mappings.get_mut(&(proto, inside)) {
            m.refs += 1;
            return Ok(m.public_port);
        }
        if self.host_ports(proto, inside.addr) >= self.host_quota {
            return Err(Refused::HostQuota);
        }
        let keep = inside.port != 0 && self.is_free(proto, inside.port) && self.owns(inside.port);
        let port = match prefer {
            Some(pref) if !(keep && pref(inside.port)) => self
                .find_within(proto, pref, PREFERENCE_SCAN)
                .or_else(|| keep.then_some(inside.port))
                .or_else(|| self.find(proto, &|_| true)),
            _ if keep => Some(inside.port),
            _ => self.find(proto, &|_| true),
        }
        .ok_or(Refused::Exhausted)?;
        self.mark(proto, port, true);
        self.mappings.insert((proto, inside), Mapping { public_port: port, refs: 1 });
        self.by_public.insert((proto, port), inside);
        *self.per_host[proto_index(proto)].entry(inside.addr).or_default() += 1;
        Ok(port)
    }

    /// Adds a reference to an existing mapping (a pinhole handing its reference to a connection keeps
    /// the count as it is; this is for a second holder).
    pub fn add_ref(&mut self, proto: Proto, inside: Endpoint) {
        if let Some(m) = self.mappings.get_mut(&(proto, inside)) {
            m.refs += 1;
        }
    }

    /// Drops one reference; the mapping and its port go when none is left.
    pub fn release(&mut self, proto: Proto, inside: Endpoint) {
        let Some(m) = self.mappings.get_mut(&(proto, inside)) else { return };
        m.refs -= 1;
        if m.refs == 0 {
            let port = m.public_port;
            self.mappings.remove(&(proto, inside));
            self.by_public.remove(&(proto, port));
            self.mark(proto, port, false);
            let hosts = &mut self.per_host[proto_index(proto)];
            if let Some(n) = hosts.get_mut(&inside.addr) {
                *n -= 1;
                if *n == 0 {
                    hosts.remove(&inside.addr);
                }
            }
        }
    }

    /// Scans the range from a moving cursor for a free port accepted by `pred`. Bounded: one pass.
    fn find(&mut self, proto: Proto, pred: &dyn Fn(u16) -> bool) -> Option<u16> {
        self.find_within(proto, pred, u32::MAX)
    }

    /// Like [`Nat::find`], looking at no more than `limit` ports: a preference is worth a bounded
    /// search, not a scan of the whole range for every announcement.
    fn find_within(&mut self, proto: Proto, pred: &dyn Fn(u16) -> bool, limit: u32) -> Option<u16> {
        let i = proto_index(proto);
        let (lo, hi) = (*self.range.start() as u32, *self.range.end() as u32);
        let n = hi - lo + 1;
        if self.in_range[i] as u32 >= n {
            return None;
        }
        let start = self.cursor[i].clamp(lo, hi);
        for k in 0..n.min(limit) {
            let p = lo + (start - lo + k) % n;
            let port = p as u16;
            if !self.used[i].contains(port) && pred(port) {
                // Sequential with a stride keeps allocation O(1) amortised while not handing out the
                // same port right after it was freed (late packets of the old flow).
                self.cursor[i] = lo + (p - lo + 1) % n;
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::new(10, 0, 0, last), port)
    }

    /// One engine of several hands out only its slice's ports: a kept inside port too, so inbound
    /// packets (steered by their public port) reach the engine that holds the mapping (issue 18).
    #[test]
    fn a_sharded_nat_hands_out_only_its_slice() {
        let range = 1024..=65535u16;
        for index in 0..3u16 {
            let shard = Shard { index, count: 3 };
            let mut nat = Nat::new(range.clone());
            nat.reserve(Proto::Tcp, 2121);
            nat.set_shard(shard);
            let slice = steer::slice_range(&range, 3, index);
            for i in 0..2000u16 {
                let inside = ep((i % 200) as u8, 30000 + i);
                let p = nat.acquire(Proto::Tcp, inside, None).unwrap();
                assert!(steer::owns_port(&range, shard, p), "shard {index}: port {p}");
                if slice.contains(&inside.port) {
                    assert_eq!(p, inside.port, "an inside port in the slice is kept");
                } else {
                    assert!(slice.contains(&p), "shard {index}: {p} outside {slice:?}");
                }
            }
            // Below the range: kept only if `port % 3` names this shard.
            let low = nat.acquire(Proto::Udp, ep(1, 999), None).unwrap();
            assert_eq!(low == 999, 999 % 3 == index, "shard {index}: {low}");
            assert!(!nat.is_free(Proto::Tcp, 2121), "reservations hold in every shard");
        }
    }

    #[test]
    fn a_sharded_nat_is_exhausted_by_its_slice() {
        let mut nat = Nat::new(20000..=20009);
        nat.set_shard(Shard { index: 1, count: 2 });
        // Inside port 2 is outside the range and not this shard's (2 % 2 = 0): never kept.
        let got: Vec<u16> = (0..5).map(|i| nat.acquire(Proto::Udp, ep(i, 2), None).unwrap()).collect();
        assert_eq!(got, [20005, 20006, 20007, 20008, 20009]);
        assert_eq!(nat.acquire(Proto::Udp, ep(9, 2), None), Err(Refused::Exhausted));
        nat.release(Proto::Udp, ep(0, 2));
        assert_eq!(nat.acquire(Proto::Udp, ep(9, 2), None), Ok(20005));
    }

    #[test]
    fn keeps_port_when_free_and_is_endpoint_independent() {
        let mut nat = Nat::new(1024..=65535);
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 40000), None), Ok(40000));
        // Same inside endpoint, another destination: same mapping (EIM).
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 40000), None), Ok(40000));
        // Another host wants the same port: gets another one.
        let other = nat.acquire(Proto::Tcp, ep(3, 40000), None).unwrap();
        assert_ne!(other, 40000);
        // Protocols are separate spaces.
        assert_eq!(nat.acquire(Proto::Udp, ep(3, 40000), None), Ok(40000));
        nat.release(Proto::Tcp, ep(2, 40000));
        assert_eq!(nat.lookup(Proto::Tcp, ep(2, 40000)), Some(40000));
        nat.release(Proto::Tcp, ep(2, 40000));
        assert_eq!(nat.lookup(Proto::Tcp, ep(2, 40000)), None);
        assert!(nat.is_free(Proto::Tcp, 40000));
    }

    #[test]
    fn reserved_ports_are_never_handed_out_and_exhaustion_is_reported() {
        let mut nat = Nat::new(2000..=2003);
        nat.reserve(Proto::Tcp, 2001);
        let mut got = Vec::new();
        // Every host wants the reserved port, so each gets one from the range instead.
        for host in 2..5 {
            got.push(nat.acquire(Proto::Tcp, ep(host, 2001), None).unwrap());
        }
        got.sort();
        assert_eq!(got, vec![2000, 2002, 2003]);
        assert_eq!(nat.acquire(Proto::Tcp, ep(5, 2001), None), Err(Refused::Exhausted));
        assert_eq!(nat.ports_in_use(Proto::Tcp), 4);
    }

    #[test]
    fn a_full_range_is_known_without_a_scan_and_frees_up_again() {
        let mut nat = Nat::new(2000..=2001);
        // Kept ports outside the range do not count against it.
        assert_eq!(nat.acquire(Proto::Udp, ep(2, 5000), None), Ok(5000));
        assert_eq!(nat.acquire(Proto::Udp, ep(3, 5000), None), Ok(2000));
        assert_eq!(nat.acquire(Proto::Udp, ep(4, 5000), None), Ok(2001));
        assert_eq!(nat.acquire(Proto::Udp, ep(5, 5000), None), Err(Refused::Exhausted));
        assert_eq!(nat.in_range[proto_index(Proto::Udp)], 2);
        nat.release(Proto::Udp, ep(3, 5000));
        assert_eq!(nat.acquire(Proto::Udp, ep(5, 5000), None), Ok(2000));
        assert_eq!(nat.acquire(Proto::Udp, ep(6, 5000), None), Err(Refused::Exhausted));
        // A reserved port inside the range counts as used.
        let mut nat = Nat::new(2000..=2000);
        nat.reserve(Proto::Tcp, 2000);
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 2000), None), Err(Refused::Exhausted));
        nat.unreserve(Proto::Tcp, 2000);
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 2000), None), Ok(2000));
    }

    #[test]
    fn a_host_holds_at_most_its_quota_of_ports_and_gets_them_back() {
        let mut nat = Nat::new(1024..=65535);
        nat.set_host_quota(3);
        for p in 0..3 {
            assert_eq!(nat.acquire(Proto::Tcp, ep(2, 5000 + p), None), Ok(5000 + p));
        }
        // A fourth endpoint of the same host needs a fourth port: refused, the others are not.
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 5003), None), Err(Refused::HostQuota));
        assert_eq!(nat.acquire(Proto::Tcp, ep(3, 5003), None), Ok(5003));
        // Sharing an existing mapping costs no port (endpoint-independent mapping, a pinhole on a
        // connected endpoint): allowed at the quota.
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 5000), None), Ok(5000));
        // Protocols have their own pools and their own quotas.
        assert_eq!(nat.acquire(Proto::Udp, ep(2, 5003), None), Ok(5003));
        assert_eq!(nat.host_ports(Proto::Tcp, ep(2, 0).addr), 3);
        assert_eq!(nat.host_ports(Proto::Udp, ep(2, 0).addr), 1);
        // A port is counted until its last reference goes.
        nat.release(Proto::Tcp, ep(2, 5000));
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 5003), None), Err(Refused::HostQuota));
        nat.release(Proto::Tcp, ep(2, 5000));
        assert_eq!(nat.host_ports(Proto::Tcp, ep(2, 0).addr), 2);
        // (5003 itself is host 3's now: a port from the range.)
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 5003), None), Ok(1024));
        for p in 1..4 {
            nat.release(Proto::Tcp, ep(2, 5000 + p));
        }
        assert_eq!(nat.lookup(Proto::Tcp, ep(2, 5003)), None);
        assert_eq!(nat.host_ports(Proto::Tcp, ep(2, 0).addr), 0);
        assert!(!nat.per_host[proto_index(Proto::Tcp)].contains_key(&ep(2, 0).addr), "no empty entries");
    }

    #[test]
    fn preference_picks_matching_port() {
        let mut nat = Nat::new(1024..=65535);
        let p = nat.acquire(Proto::Tcp, ep(2, 5000), Some(&|p| p % 7 == 3)).unwrap();
        assert_eq!(p % 7, 3);
        // A preference nothing within the bounded search satisfies falls back to keeping the port.
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 6000), Some(&|p| p == 65000)), Ok(6000));
        // The inside port itself wins when it satisfies the preference.
        assert_eq!(nat.acquire(Proto::Tcp, ep(2, 20000), Some(&|p| p >= 10000)), Ok(20000));
    }
}
