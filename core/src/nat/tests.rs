//! The allocator's unit and property tests: the single-address interface the engine uses today, pools
//! and pairing, port blocks and their hold-down, deterministic mode, tokens, slices and the log.

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap as Map, HashSet};

fn ep(last: u8, port: u16) -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 0, 0, last), port)
}
fn ins(host: u32, port: u16) -> InsideEndpoint {
    InsideEndpoint::new(Ipv4Addr::from(0x6440_0000 + host), port)
}
fn public(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, n)
}
fn range(a: u16, b: u16) -> PortRange {
    PortRange::new(a, b).unwrap()
}
fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn setup(addrs: u8, allocation: Allocation) -> Setup {
    Setup {
        pool: (1..=addrs).map(public).collect(),
        range: range(1024, 65535),
        slice: None,
        allocation,
        inside: vec!["100.64.0.0/16".parse().unwrap()],
        host_quota: usize::MAX,
    }
}

fn blocks(size: u16, per_host: u16, hold: u64) -> Allocation {
    Allocation::Blocks(BlockPolicy { size, per_host, hold: Duration::from_secs(hold) })
}

fn logged(nat: &mut Nat) -> Vec<Record> {
    std::iter::from_fn(|| nat.log_mut().pop()).collect()
}

fn on(nat: &mut Nat) {
    nat.log_mut().set_policy(LogPolicy { enabled: true, sessions: true });
}

// ----- the parked-reference interface, on one address -------------------------------------------

/// A one-address allocator seen through port numbers, as these tests were first written.
struct One(Nat);

impl One {
    fn new(range: RangeInclusive<u16>) -> One {
        One(Nat::new(range))
    }
    fn primary(&self, port: u16) -> PublicEndpoint {
        PublicEndpoint::new(Ipv4Addr::UNSPECIFIED, port)
    }
    fn acquire(
        &mut self,
        proto: Proto,
        inside: Endpoint,
        prefer: Option<&dyn Fn(u16) -> bool>,
    ) -> Result<u16, Refused> {
        self.0.acquire(proto, inside, prefer, Instant::ZERO).map(|p| p.port())
    }
    fn release(&mut self, proto: Proto, inside: Endpoint) {
        self.0.release(proto, inside, Instant::ZERO)
    }
    fn lookup(&self, proto: Proto, inside: Endpoint) -> Option<u16> {
        self.0.lookup(proto, inside).map(|p| p.port())
    }
    fn reserve(&mut self, proto: Proto, port: u16) {
        let _ = self.0.reserve_public(proto, self.primary(port));
    }
    fn unreserve(&mut self, proto: Proto, port: u16) {
        self.0.unreserve_public(proto, self.primary(port));
    }
    fn is_free(&self, proto: Proto, port: u16) -> bool {
        self.0.public_free(proto, self.primary(port))
    }
}

impl std::ops::Deref for One {
    type Target = Nat;
    fn deref(&self) -> &Nat {
        &self.0
    }
}
impl std::ops::DerefMut for One {
    fn deref_mut(&mut self) -> &mut Nat {
        &mut self.0
    }
}

#[test]
fn keeps_port_when_free_and_is_endpoint_independent() {
    let mut nat = One::new(1024..=65535);
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
    // Releasing what is gone is a no-op, not a second free of someone else's port.
    nat.release(Proto::Tcp, ep(2, 40000));
    assert_eq!(nat.stats().bad_releases, 0);
}

#[test]
fn reserved_ports_are_never_handed_out_and_exhaustion_is_reported() {
    let mut nat = One::new(2000..=2003);
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
    let mut nat = One::new(2000..=2001);
    // Kept ports outside the range do not count against it.
    assert_eq!(nat.acquire(Proto::Udp, ep(2, 5000), None), Ok(5000));
    assert_eq!(nat.acquire(Proto::Udp, ep(3, 5000), None), Ok(2000));
    assert_eq!(nat.acquire(Proto::Udp, ep(4, 5000), None), Ok(2001));
    assert_eq!(nat.acquire(Proto::Udp, ep(5, 5000), None), Err(Refused::Exhausted));
    assert_eq!(nat.space(0).unwrap().in_range[proto_index(Proto::Udp)], 2);
    nat.release(Proto::Udp, ep(3, 5000));
    assert_eq!(nat.acquire(Proto::Udp, ep(5, 5000), None), Ok(2000));
    assert_eq!(nat.acquire(Proto::Udp, ep(6, 5000), None), Err(Refused::Exhausted));
    // A reserved port inside the range counts as used.
    let mut nat = One::new(2000..=2000);
    nat.reserve(Proto::Tcp, 2000);
    assert_eq!(nat.acquire(Proto::Tcp, ep(2, 2000), None), Err(Refused::Exhausted));
    nat.unreserve(Proto::Tcp, 2000);
    assert_eq!(nat.acquire(Proto::Tcp, ep(2, 2000), None), Ok(2000));
}

#[test]
fn a_host_holds_at_most_its_quota_of_ports_and_gets_them_back() {
    let mut nat = One::new(1024..=65535);
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
    nat.release(Proto::Udp, ep(2, 5003));
    assert_eq!(nat.lookup(Proto::Tcp, ep(2, 5003)), None);
    assert_eq!(nat.host_ports(Proto::Tcp, ep(2, 0).addr), 0);
    assert!(!nat.hosts.contains_key(&ep(2, 0).addr), "no empty entries");
}

#[test]
fn preference_picks_matching_port() {
    let mut nat = One::new(1024..=65535);
    let p = nat.acquire(Proto::Tcp, ep(2, 5000), Some(&|p| p % 7 == 3)).unwrap();
    assert_eq!(p % 7, 3);
    // A preference nothing within the bounded search satisfies falls back to keeping the port.
    assert_eq!(nat.acquire(Proto::Tcp, ep(2, 6000), Some(&|p| p == 65000)), Ok(6000));
    // The inside port itself wins when it satisfies the preference.
    assert_eq!(nat.acquire(Proto::Tcp, ep(2, 20000), Some(&|p| p >= 10000)), Ok(20000));
}

// ----- tokens ------------------------------------------------------------------------------------

#[test]
fn a_mapping_lives_as_long_as_its_tokens() {
    let mut nat = Nat::with_setup(&setup(2, Allocation::Dynamic));
    let m = nat.map(Proto::Tcp, ins(7, 40000), None, secs(1)).unwrap();
    assert!(m.created);
    let second = nat.share(&m.token);
    let again = nat.map(Proto::Tcp, ins(7, 40000), None, secs(1)).unwrap();
    assert!(!again.created);
    assert_eq!(again.public, m.public);
    assert_eq!(nat.inside_of(Proto::Tcp, m.public), Some(ins(7, 40000)));
    nat.unmap(m.token, secs(2));
    nat.unmap(again.token, secs(2));
    assert_eq!(nat.public_of(Proto::Tcp, ins(7, 40000)), Some(m.public), "one holder left");
    nat.unmap(second, secs(2));
    assert_eq!(nat.public_of(Proto::Tcp, ins(7, 40000)), None);
    assert!(nat.public_free(Proto::Tcp, m.public));
    assert_eq!(nat.paired(ins(7, 0).addr()), None, "a host holding nothing is not paired");
    // A token forged for a mapping that does not exist is counted, and frees nobody's port.
    let other = nat.map(Proto::Tcp, ins(8, 40000), None, secs(3)).unwrap();
    nat.unmap(MappingRef::unpark(Proto::Tcp, ins(7, 40000)), secs(3));
    assert_eq!(nat.stats().bad_releases, 1);
    assert_eq!(nat.public_of(Proto::Tcp, ins(8, 40000)), Some(other.public));
    nat.unmap(other.token, secs(3));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "dropped without Nat::unmap")]
fn dropping_a_token_is_caught_in_tests() {
    let mut nat = Nat::with_setup(&setup(1, Allocation::Dynamic));
    let m = nat.map(Proto::Udp, ins(1, 53), None, secs(1)).unwrap();
    drop(m);
}

// ----- pools and pairing -------------------------------------------------------------------------

#[test]
fn a_hosts_mappings_all_use_one_address_and_hosts_spread() {
    let mut nat = Nat::with_setup(&setup(4, Allocation::Dynamic));
    let mut tokens = Vec::new();
    let mut per_addr = Map::new();
    for host in 0..400 {
        let mut addrs = HashSet::new();
        for (i, proto) in [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Tcp].into_iter().enumerate() {
            let m = nat.map(proto, ins(host, 30000 + i as u16), None, secs(1)).unwrap();
            addrs.insert(m.public.addr());
            tokens.push(m.token);
        }
        assert_eq!(addrs.len(), 1, "RFC 4787 REQ-2: host {host} on {addrs:?}");
        let a = *addrs.iter().next().unwrap();
        assert_eq!(nat.paired(ins(host, 0).addr()), Some(a));
        *per_addr.entry(a).or_insert(0) += 1;
    }
    assert_eq!(per_addr.len(), 4);
    assert!(per_addr.values().all(|&n| (70..=130).contains(&n)), "spread, not filled in order: {per_addr:?}");
    let views = nat.addresses();
    assert_eq!(views.iter().map(|v| v.hosts).sum::<u32>(), 400);
    for t in tokens {
        nat.unmap(t, secs(2));
    }
    assert_eq!(nat.gauges(), Gauges { blocks_total: 0, ..Gauges::default() });
    assert!(nat.addresses().iter().all(|v| v.hosts == 0 && v.ports == [0; 3]));
}

#[test]
fn a_new_host_goes_elsewhere_when_its_address_is_full_but_a_paired_host_never_moves() {
    let mut s = setup(2, Allocation::Dynamic);
    s.range = range(2000, 2001);
    // A slice: inside ports are kept only within it, so every mapping below comes from 2000-2001.
    s.slice = Some(range(2000, 2001));
    let mut nat = Nat::with_setup(&s);
    on(&mut nat);
    // Find two hosts hashed onto the same address.
    let first = nat.pool().preferred(ins(0, 0).addr());
    let same: Vec<u32> =
        (1..100).filter(|&h| nat.pool().preferred(ins(h, 0).addr()) == first).take(2).collect();
    let a = nat.map(Proto::Udp, ins(0, 2000), None, secs(1)).unwrap();
    let b = nat.map(Proto::Udp, ins(0, 2001), None, secs(1)).unwrap();
    assert_eq!(a.public.addr(), b.public.addr());
    // Host 0's address is full: host 0 itself cannot move (paired), another host goes to the other address.
    assert_eq!(nat.map(Proto::Udp, ins(0, 3000), None, secs(1)).map(|m| m.public), Err(Refused::Exhausted));
    let c = nat.map(Proto::Udp, ins(same[0], 4000), None, secs(1)).unwrap();
    assert_ne!(c.public.addr(), a.public.addr(), "fell back to the address with room");
    let d = nat.map(Proto::Udp, ins(same[1], 4000), None, secs(1)).unwrap();
    assert_eq!(d.public.addr(), c.public.addr());
    // Everything full now.
    assert_eq!(nat.map(Proto::Udp, ins(200, 1), None, secs(1)).map(|m| m.public), Err(Refused::Exhausted));
    let log = logged(&mut nat);
    assert!(log.contains(&Record::PortsExhausted {
        at: secs(1),
        proto: Proto::Udp,
        public: a.public.addr()
    }));
    assert!(log.contains(&Record::AddressesExhausted { at: secs(1), proto: Proto::Udp }));
    assert_eq!((nat.stats().ports_exhausted, nat.stats().addresses_exhausted), (1, 1));
    for t in [a.token, b.token, c.token, d.token] {
        nat.unmap(t, secs(2));
    }
}

#[test]
fn forwards_name_their_address() {
    let mut nat = Nat::with_setup(&setup(2, Allocation::Dynamic));
    let fwd = PublicEndpoint::new(public(2), 8080);
    assert_eq!(nat.reserve_public(Proto::Tcp, fwd), Ok(()));
    assert_eq!(nat.reserve_public(Proto::Tcp, fwd), Err(ReserveError::InUse));
    assert_eq!(
        nat.reserve_public(Proto::Tcp, PublicEndpoint::new(public(9), 80)),
        Err(ReserveError::NotInPool)
    );
    assert!(!nat.public_free(Proto::Tcp, fwd));
    assert!(
        nat.public_free(Proto::Tcp, PublicEndpoint::new(public(1), 8080)),
        "the other address keeps its port"
    );
    assert_eq!(nat.owner_of(public(2), 8080).reserved, vec![Proto::Tcp]);
    nat.unreserve_public(Proto::Tcp, fwd);
    assert!(nat.public_free(Proto::Tcp, fwd));
}

// ----- port blocks -------------------------------------------------------------------------------

#[test]
fn a_host_gets_a_block_on_its_first_flow_and_more_as_they_fill() {
    let mut nat = Nat::with_setup(&setup(2, blocks(4, 2, 60)));
    on(&mut nat);
    let host = ins(5, 0).addr();
    let mut tokens = Vec::new();
    for i in 0..8u16 {
        let proto = Proto::Tcp;
        let m = nat.map(proto, ins(5, 40000 + i), None, secs(1)).unwrap();
        tokens.push(m.token);
    }
    let view = nat.host_view(host);
    assert_eq!(view.blocks.len(), 2);
    let addr = view.public.unwrap();
    let in_blocks = |p: u16| view.blocks.iter().any(|b| b.ports.contains(p));
    for t in &tokens {
        let p = nat.public_of(Proto::Tcp, t.inside()).unwrap();
        assert_eq!(p.addr(), addr);
        assert!(in_blocks(p.port()), "{p} outside the host's blocks");
    }
    // UDP and ICMP use the same blocks (a block is for every protocol): no third block.
    let u = nat.map(Proto::Udp, ins(5, 53), None, secs(1)).unwrap();
    assert!(in_blocks(u.public.port()));
    // Both blocks full for TCP, and the limit reached: refused as a quota, logged as one.
    assert_eq!(nat.map(Proto::Tcp, ins(5, 50000), None, secs(2)).map(|m| m.public), Err(Refused::HostQuota));
    let log = logged(&mut nat);
    let allocs: Vec<_> = log.iter().filter(|r| matches!(r, Record::BlockAllocated { .. })).collect();
    assert_eq!(allocs.len(), 2);
    assert!(log.contains(&Record::QuotaExceeded {
        at: secs(2),
        proto: Proto::Tcp,
        host,
        quota: Quota::BlocksPerHost,
        limit: 8
    }));
    nat.unmap(u.token, secs(3));
    for t in tokens {
        nat.unmap(t, secs(3));
    }
}

#[test]
fn blocks_return_after_the_hold_down_and_not_before() {
    let mut nat = Nat::with_setup(&setup(1, blocks(16, 4, 60)));
    on(&mut nat);
    let host = ins(1, 0).addr();
    let m = nat.map(Proto::Tcp, ins(1, 1000), None, secs(10)).unwrap();
    let block = nat.host_view(host).blocks[0].clone();
    nat.unmap(m.token, secs(20));
    assert_eq!(nat.next_deadline(), Some(secs(80)));
    nat.handle_timeout(secs(79));
    assert_eq!(nat.host_view(host).blocks.len(), 1, "held down: still the host's");
    assert_eq!(nat.paired(host), Some(block.public), "and the host keeps its address meanwhile");
    // Another host cannot get it meanwhile.
    let other = nat.map(Proto::Tcp, ins(2, 1000), None, secs(30)).unwrap();
    assert!(!block.ports.contains(other.public.port()));
    // The host comes back within the hold-down: same block, no new record.
    let again = nat.map(Proto::Tcp, ins(1, 1001), None, secs(70)).unwrap();
    assert!(block.ports.contains(again.public.port()));
    nat.unmap(again.token, secs(75));
    nat.handle_timeout(secs(80));
    assert_eq!(nat.host_view(host).blocks.len(), 1, "idle since 75 only");
    assert_eq!(nat.next_deadline(), Some(secs(135)), "the timer moved to the later idle time");
    nat.handle_timeout(secs(135));
    assert!(nat.host_view(host).blocks.is_empty());
    assert_eq!(nat.paired(host), None);
    let log = logged(&mut nat);
    let released: Vec<_> = log.iter().filter(|r| matches!(r, Record::BlockReleased { .. })).collect();
    assert_eq!(
        released,
        vec![&Record::BlockReleased {
            at: secs(135),
            since: secs(10),
            inside: host,
            inside6: None,
            public: block.public,
            ports: block.ports
        }]
    );
    assert_eq!(nat.stats().blocks_allocated, 2);
    assert_eq!(nat.stats().blocks_released, 1);
    // Freed blocks queue behind the never-used ones: the released block is the last to be handed out.
    let order: Vec<PortRange> = (10..13)
        .map(|h| {
            let m = nat.map(Proto::Tcp, ins(h, 1), None, secs(200)).unwrap();
            let b = nat.host_view(ins(h, 0).addr()).blocks[0].ports;
            nat.unmap(m.token, secs(200));
            b
        })
        .collect();
    assert!(!order.contains(&block.ports));
    nat.unmap(other.token, secs(300));
}

#[test]
fn the_ftp_port_preference_works_within_the_hosts_blocks() {
    let mut nat = Nat::with_setup(&setup(1, blocks(512, 4, 60)));
    let control = nat.map(Proto::Tcp, ins(3, 40000), None, secs(1)).unwrap();
    let block = nat.host_view(ins(3, 0).addr()).blocks[0].ports;
    // A 5-digit port is wanted (the PORT line had one): the block is 1024-1535, all 4 digits, so
    // the preference cannot be met inside it and no new block is taken for it.
    let five = |p: u16| p >= 10000;
    let data = nat.map(Proto::Tcp, ins(3, 40001), Some(&five), secs(1)).unwrap();
    assert!(block.contains(data.public.port()));
    assert_eq!(nat.host_view(ins(3, 0).addr()).blocks.len(), 1);
    // A preference the block can meet is met.
    let odd = |p: u16| p % 2 == 1 && p > 1100;
    let data2 = nat.map(Proto::Tcp, ins(3, 40002), Some(&odd), secs(1)).unwrap();
    assert!(block.contains(data2.public.port()) && odd(data2.public.port()));
    for t in [control.token, data.token, data2.token] {
        nat.unmap(t, secs(2));
    }
}

#[test]
fn block_exhaustion_on_the_hosts_address_is_reported() {
    let mut s = setup(1, blocks(32000, 2, 60));
    s.range = range(1024, 65535);
    let mut nat = Nat::with_setup(&s);
    on(&mut nat);
    assert_eq!(nat.gauges().blocks_total, 2);
    let a = nat.map(Proto::Tcp, ins(1, 1), None, secs(1)).unwrap();
    let b = nat.map(Proto::Tcp, ins(2, 1), None, secs(1)).unwrap();
    assert_eq!(nat.map(Proto::Tcp, ins(3, 1), None, secs(1)).map(|m| m.public), Err(Refused::Exhausted));
    assert_eq!(nat.stats().addresses_exhausted, 1);
    nat.unmap(a.token, secs(2));
    nat.unmap(b.token, secs(2));
    nat.handle_timeout(secs(100));
    assert_eq!(nat.gauges().blocks_in_use, 0);
    let c = nat.map(Proto::Tcp, ins(3, 1), None, secs(101)).unwrap();
    nat.unmap(c.token, secs(102));
}

#[test]
fn a_reserved_port_inside_a_block_is_skipped() {
    let mut nat = Nat::with_setup(&setup(1, blocks(2, 1, 60)));
    nat.reserve_public(Proto::Tcp, PublicEndpoint::new(public(1), 1024)).unwrap();
    nat.reserve_public(Proto::Tcp, PublicEndpoint::new(public(1), 1025)).unwrap();
    on(&mut nat);
    // The first block (1024-1025) is all reserved for TCP: the host gets nothing from it, the block
    // idles out, and the next host's next try gets the next block.
    assert_eq!(nat.map(Proto::Tcp, ins(1, 1), None, secs(1)).map(|m| m.public), Err(Refused::Exhausted));
    let u = nat.map(Proto::Udp, ins(1, 1), None, secs(1)).unwrap();
    assert_eq!(u.public.port(), 1024, "UDP has the block's ports");
    nat.unmap(u.token, secs(1));
    nat.handle_timeout(secs(61));
    assert_eq!(nat.gauges().blocks_in_use, 0);
    let t = nat.map(Proto::Tcp, ins(2, 1), None, secs(62)).unwrap();
    assert_eq!(t.public.port(), 1026);
    nat.unmap(t.token, secs(63));
}

// ----- deterministic -----------------------------------------------------------------------------

#[test]
fn deterministic_mappings_stay_in_the_computed_range() {
    let mut s = setup(2, Allocation::Deterministic { size: Some(100) });
    s.inside = vec!["100.64.0.0/24".parse().unwrap()];
    let mut nat = Nat::with_setup(&s);
    on(&mut nat);
    let det = nat.deterministic().unwrap().clone();
    let host = ins(7, 0).addr();
    let share = det.forward(host).unwrap();
    let mut tokens = Vec::new();
    for i in 0..100u16 {
        let m = nat.map(Proto::Tcp, ins(7, 20000 + i), None, secs(1)).unwrap();
        assert_eq!(m.public.addr(), share.public);
        assert!(share.ports.contains(m.public.port()));
        assert_eq!(det.reverse(m.public.addr(), m.public.port()), Some(host));
        tokens.push(m.token);
    }
    assert_eq!(nat.map(Proto::Tcp, ins(7, 1), None, secs(2)).map(|m| m.public), Err(Refused::HostQuota));
    assert!(
        logged(&mut nat)
            .iter()
            .all(|r| matches!(r, Record::QuotaExceeded { quota: Quota::DeterministicRange, .. })),
        "deterministic mode logs no allocation"
    );
    let view = nat.host_view(host);
    assert_eq!(view.share, Some(share));
    assert_eq!(nat.owner_of(share.public, share.ports.first()).deterministic, Some(host));
    for t in tokens {
        nat.unmap(t, secs(3));
    }
}

// ----- worker slices -----------------------------------------------------------------------------

#[test]
fn workers_with_disjoint_slices_never_collide() {
    for allocation in [Allocation::Dynamic, blocks(64, 4, 60)] {
        let mk = |slice| {
            let mut s = setup(1, allocation);
            s.slice = Some(slice);
            Nat::with_setup(&s)
        };
        let (s0, s1) = (range(1024, 33279), range(33280, 65535));
        let (mut w0, mut w1) = (mk(s0), mk(s1));
        let mut seen = HashSet::new();
        let mut tokens = Vec::new();
        for h in 0..50 {
            // Inside port 40000 lies in worker 1's slice: worker 0 must not keep it.
            let m0 = w0.map(Proto::Tcp, ins(h, 40000), None, secs(1)).unwrap();
            let m1 = w1.map(Proto::Tcp, ins(h + 1000, 40000), None, secs(1)).unwrap();
            assert!(s0.contains(m0.public.port()) && s1.contains(m1.public.port()));
            assert!(seen.insert(m0.public) && seen.insert(m1.public));
            tokens.push((m0.token, m1.token));
        }
        for (a, b) in tokens {
            w0.unmap(a, secs(2));
            w1.unmap(b, secs(2));
        }
    }
}

/// A pool with port blocks over three workers (issue 18): each worker's hosts (by the steering rule)
/// get blocks cut from that worker's slice only, on every pool address, never overlapping another
/// worker's; each host keeps one address (paired pooling) for every mapping; the hosts of each worker
/// spread over both addresses, and the blocks each worker's log records name its own slice.
#[test]
fn pooled_blocks_over_three_workers_stay_in_their_slices_and_keep_pairing() {
    const N: u16 = 3;
    let full = 1024..=65535u16;
    let mut workers: Vec<Nat> = (0..N)
        .map(|i| {
            let mut s = setup(2, blocks(100, 2, 60));
            s.slice = PortRange::try_from(&crate::steer::slice_range(&full, N, i)).ok();
            let mut n = Nat::with_setup(&s);
            on(&mut n);
            n
        })
        .collect();
    let mut taken: HashSet<(Ipv4Addr, u16)> = HashSet::new();
    let mut addrs_per_worker = vec![HashSet::new(); usize::from(N)];
    let mut tokens = Vec::new();
    for h in 0..60u32 {
        let inside = ins(h, 5000);
        let w = crate::steer::host_worker(inside.addr(), N);
        let slice = crate::steer::slice_range(&full, N, w);
        let nat = &mut workers[usize::from(w)];
        let mut mine = HashSet::new();
        for port in 0..150u16 {
            let m = nat.map(Proto::Udp, ins(h, 5000 + port), None, secs(1)).unwrap();
            assert!(slice.contains(&m.public.port()), "host {h} of worker {w}: {}", m.public);
            assert!(taken.insert((m.public.addr(), m.public.port())), "{} handed out twice", m.public);
            mine.insert(m.public.addr());
            tokens.push((w, m.token));
        }
        assert_eq!(mine.len(), 1, "host {h}: paired pooling within its worker");
        addrs_per_worker[usize::from(w)].extend(mine);
        for b in nat.host_view(inside.addr()).blocks {
            assert!(slice.contains(&b.ports.first()) && slice.contains(&b.ports.last()), "{b:?}");
        }
    }
    for (w, a) in addrs_per_worker.iter().enumerate() {
        assert_eq!(a.len(), 2, "worker {w}'s hosts spread over both addresses");
    }
    for (w, nat) in workers.iter_mut().enumerate() {
        let slice = crate::steer::slice_range(&full, N, w as u16);
        for r in logged(nat) {
            if let Record::BlockAllocated { ports, .. } = r {
                assert!(
                    slice.contains(&ports.first()) && slice.contains(&ports.last()),
                    "worker {w}: {ports}"
                );
            }
        }
    }
    for (w, t) in tokens {
        workers[usize::from(w)].unmap(t, secs(2));
    }
}

// ----- the adversary: a hostile host, random churn -----------------------------------------------

#[test]
fn a_host_flooding_new_mappings_cannot_take_more_than_its_blocks_or_flood_the_log() {
    let mut nat = Nat::with_setup(&setup(1, blocks(64, 2, 60)));
    on(&mut nat);
    let mut tokens = Vec::new();
    let mut refused = 0;
    for i in 0..10_000u32 {
        match nat.map(Proto::Udp, ins(66, (i % 60000) as u16 + 1), None, secs(5)) {
            Ok(m) => tokens.push(m.token),
            Err(r) => {
                assert_eq!(r, Refused::HostQuota);
                refused += 1;
            }
        }
    }
    assert_eq!(tokens.len(), 128, "two blocks of 64");
    assert_eq!(refused, 10_000 - 128);
    // A neighbour is unaffected.
    let n = nat.map(Proto::Udp, ins(67, 1), None, secs(5)).unwrap();
    let log = logged(&mut nat);
    assert!(log.len() <= 3 + log::ALARMS_PER_SEC as usize, "{} records", log.len());
    assert_eq!(nat.log().alarms_suppressed() as usize, refused - log::ALARMS_PER_SEC as usize);
    nat.unmap(n.token, secs(6));
    for t in tokens {
        nat.unmap(t, secs(6));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Map { host: u32, port: u16, proto: u8, prefer: bool },
    Unmap(usize),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..12, 1u16..40, 0u8..3, any::<bool>()).prop_map(|(host, port, proto, prefer)| Op::Map { host, port, proto, prefer }),
        3 => (0usize..1000).prop_map(Op::Unmap),
        1 => (1u64..90).prop_map(Op::Wait),
    ]
}

/// Checks every invariant of a live allocator against the tokens the test holds.
fn check(
    nat: &Nat,
    held: &[MappingRef],
    open: &Map<(Ipv4Addr, PortRange), Instant>,
) -> Result<(), TestCaseError> {
    let mut by_public = Map::new();
    let mut host_addr: Map<Ipv4Addr, Ipv4Addr> = Map::new();
    for t in held {
        let p = nat.public_of(t.proto(), t.inside()).expect("a held token's mapping exists");
        let prev = by_public.insert((t.proto(), p), t.inside());
        // No two inside endpoints ever share a public endpoint (shared tokens name the same inside one).
        prop_assert!(prev.is_none_or(|i| i == t.inside()), "{p} given to {prev:?} and {}", t.inside());
        let a = *host_addr.entry(t.inside().addr()).or_insert(p.addr());
        prop_assert_eq!(a, p.addr(), "host {} on two addresses", t.inside().addr());
        match nat.allocation() {
            Allocation::Blocks(b) => {
                let v = nat.host_view(t.inside().addr());
                prop_assert!(v.blocks.len() <= usize::from(b.per_host));
                prop_assert!(
                    v.blocks.iter().any(|blk| blk.public == p.addr() && blk.ports.contains(p.port())),
                    "{p} not in a block of {}",
                    t.inside().addr()
                );
            }
            Allocation::Deterministic { .. } => {
                let s = nat.deterministic().unwrap().forward(t.inside().addr()).unwrap();
                prop_assert!(s.public == p.addr() && s.ports.contains(p.port()));
            }
            Allocation::Dynamic => {}
        }
    }
    // The blocks the log says are allocated are exactly the blocks held.
    let held_blocks: HashSet<(Ipv4Addr, PortRange)> =
        nat.blocks().iter().map(|b| (b.public, b.ports)).collect();
    let logged: HashSet<(Ipv4Addr, PortRange)> = open.keys().copied().collect();
    prop_assert_eq!(held_blocks, logged);
    Ok(())
}

fn churn(allocation: Allocation, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut s = setup(3, allocation);
    s.range = range(1024, 1024 + 200);
    s.inside = vec!["100.64.0.0/28".parse().unwrap()];
    let mut nat = Nat::with_setup(&s);
    on(&mut nat);
    let mut now = secs(1);
    let mut held: Vec<MappingRef> = Vec::new();
    // Open blocks from the log: (public, ports) -> allocated at.
    let mut open: Map<(Ipv4Addr, PortRange), Instant> = Map::new();
    let mut last_use: Map<(Ipv4Addr, PortRange), Instant> = Map::new();
    let drain = |nat: &mut Nat,
                 open: &mut Map<(Ipv4Addr, PortRange), Instant>,
                 last_use: &Map<(Ipv4Addr, PortRange), Instant>|
     -> Result<(), TestCaseError> {
        while let Some(r) = nat.log_mut().pop() {
            match r {
                Record::BlockAllocated { at, public, ports, .. } => {
                    prop_assert!(open.insert((public, ports), at).is_none(), "allocated twice");
                }
                Record::BlockReleased { at, since, public, ports, .. } => {
                    prop_assert_eq!(open.remove(&(public, ports)), Some(since));
                    let BlockPolicy { hold, .. } = match nat.allocation() {
                        Allocation::Blocks(b) => b,
                        _ => unreachable!(),
                    };
                    // The hold-down: released no sooner than `hold` after the last mapping in it ended.
                    if let Some(&u) = last_use.get(&(public, ports)) {
                        prop_assert!(at >= u + hold, "released at {at:?}, last used {u:?}");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    for o in ops {
        match o {
            Op::Map { host, port, proto, prefer } => {
                let proto = ALL_PROTOS[proto as usize];
                let pref = |p: u16| p % 3 == 0;
                let prefer: Option<&dyn Fn(u16) -> bool> = if prefer { Some(&pref) } else { None };
                if let Ok(m) = nat.map(proto, ins(host, port), prefer, now) {
                    held.push(m.token);
                }
            }
            Op::Unmap(i) if !held.is_empty() => {
                let t = held.swap_remove(i % held.len());
                let p = nat.public_of(t.proto(), t.inside()).unwrap();
                nat.unmap(t, now);
                if let Some(b) =
                    nat.blocks().iter().find(|b| b.public == p.addr() && b.ports.contains(p.port()))
                {
                    last_use.insert((b.public, b.ports), now);
                }
            }
            Op::Unmap(_) => {}
            Op::Wait(s) => {
                now = now + Duration::from_secs(s);
                nat.handle_timeout(now);
            }
        }
        drain(&mut nat, &mut open, &last_use)?;
        check(&nat, &held, &open)?;
    }
    for t in held.drain(..) {
        nat.unmap(t, now);
    }
    now = now + Duration::from_secs(1000);
    nat.handle_timeout(now);
    drain(&mut nat, &mut open, &last_use)?;
    // Everything back: no mapping, no host, no block, and every allocation logged was released.
    prop_assert_eq!(nat.gauges().mappings, 0);
    prop_assert_eq!(nat.gauges().hosts, 0);
    prop_assert_eq!(nat.gauges().blocks_in_use, 0);
    prop_assert!(open.is_empty());
    prop_assert_eq!(nat.stats().blocks_allocated, nat.stats().blocks_released);
    prop_assert!(ALL_PROTOS.iter().all(|&p| nat.taken(p) == 0));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn churn_keeps_every_invariant_dynamic(ops in proptest::collection::vec(op(), 1..300)) {
        churn(Allocation::Dynamic, ops)?;
    }

    #[test]
    fn churn_keeps_every_invariant_blocks(ops in proptest::collection::vec(op(), 1..300), size in 4u16..40, per_host in 1u16..4) {
        churn(blocks(size, per_host, 30), ops)?;
    }

    #[test]
    fn churn_keeps_every_invariant_deterministic(ops in proptest::collection::vec(op(), 1..300)) {
        churn(Allocation::Deterministic { size: None }, ops)?;
    }
}

#[test]
fn the_stop_releases_in_the_log_exactly_the_blocks_still_held() {
    let mut nat = Nat::with_setup(&setup(2, blocks(64, 4, 60)));
    on(&mut nat);
    let kept = nat.map(Proto::Tcp, ins(1, 1000), None, secs(10)).unwrap();
    let gone = nat.map(Proto::Udp, ins(2, 1000), None, secs(11)).unwrap();
    nat.unmap(gone.token, secs(12));
    nat.handle_timeout(secs(72));
    let allocated: Vec<_> = logged(&mut nat)
        .into_iter()
        .filter_map(|r| match r {
            Record::BlockAllocated { inside, public, ports, at, .. } => Some((at, inside, public, ports)),
            _ => None,
        })
        .collect();
    assert_eq!(allocated.len(), 2);
    let held = nat.host_view(ins(1, 0).addr()).blocks;
    assert_eq!(held.len(), 1);
    assert_eq!(
        nat.stop_records(secs(500)),
        vec![Record::BlockReleased {
            at: secs(500),
            since: secs(10),
            inside: ins(1, 0).addr(),
            inside6: None,
            public: kept.public.addr(),
            ports: allocated[0].3,
        }],
        "host 2's block went back at 72 s and is not released twice"
    );
    // The mapping token is given back like any holder's (a dropped one panics in debug builds).
    nat.unmap(kept.token, secs(501));
    let dynamic = Nat::with_setup(&setup(2, Allocation::Dynamic));
    assert!(dynamic.stop_records(secs(500)).is_empty());
}

#[test]
fn a_pool_too_small_for_every_hosts_block_limit_is_measured() {
    // 64,512 ports / 64 = 1,008 blocks per address, 2,016 in all; a /16 at 4 blocks asks 262,144.
    let s = setup(2, blocks(64, 4, 60));
    assert_eq!(block_shortfall(&s), Some(BlockShortfall { hosts: 65536, wanted: 262_144, total: 2016 }));
    let small = Setup { inside: vec!["100.64.0.0/24".parse().unwrap()], ..s.clone() };
    assert_eq!(block_shortfall(&small), None, "256 hosts × 4 fit in 2,016");
    assert_eq!(block_shortfall(&setup(2, Allocation::Dynamic)), None);
}
