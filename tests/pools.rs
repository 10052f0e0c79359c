//! Address pools, port blocks and deterministic NAT through the engine (issue 16), packet by packet,
//! every emitted packet checked by an independent parser: paired pooling (RFC 4787 REQ-2, RFC 6888
//! REQ-2) with FTP announcements and data connections on the control connection's public address,
//! forwards on a named pool address, port blocks with their limit and hold-down, the allocation
//! records, and RFC 7422's computed mapping against what the engine used for every flow. Hostile
//! hosts try to take more than their blocks or to reach mappings through the wrong pool address.

mod engine_support;
use engine_support::*;
use ftpnat::config::Config;
use ftpnat::nat::{Allocation, BlockPolicy, Deterministic, PortRange, Record};
use ftpnat::{DropReason, Side, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

const PUBLIC_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);

fn host(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn pooled(allocation: Allocation) -> Config {
    let mut c = config();
    c.pool.addresses = vec![PUBLIC, PUBLIC_B];
    c.pool.allocation = allocation;
    c
}

fn blocks(size: u16, per_host: u16, hold_secs: u64) -> Allocation {
    Allocation::Blocks(BlockPolicy { size, per_host, hold: Duration::from_secs(hold_secs) })
}

/// Every record the engine queued so far.
fn records(r: &mut Rig) -> Vec<Record> {
    std::iter::from_fn(|| r.engine.nat_log_mut().pop()).collect()
}

/// An inside host whose hashed pool address is `want`, among 10.0.0.2-254.
fn host_on(r: &mut Rig, want: Ipv4Addr) -> Ipv4Addr {
    for n in 2..=254 {
        let h = host(n);
        let (_, s) = r.pass(Side::Inside, udp(h, 7, REMOTE, 7, b"probe"));
        if s.src == want {
            return h;
        }
    }
    panic!("no host hashes to {want}");
}

#[test]
fn paired_pooling_spreads_hosts_and_keeps_every_flow_of_a_host_on_one_address() {
    let mut r = Rig::new(pooled(Allocation::Dynamic));
    let mut by_host: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for n in 2..34 {
        let h = host(n);
        for (i, remote) in [REMOTE, REMOTE2].into_iter().enumerate() {
            // Inside ports unique per host: port preservation keeps them, so the other address has
            // nothing on that port.
            let sport = 5000 + 2 * u16::from(n) + i as u16;
            let (_, u) = r.pass(Side::Inside, udp(h, sport, remote, 53, b"q"));
            let (_, t) = r.pass(Side::Inside, tcp(h, 40000 + i as u16, remote, 80, 1, 0, SYN, b""));
            let (_, p) = r.pass(Side::Inside, icmp_echo(h, remote, 300 + i as u16, 1, true));
            by_host.entry(h).or_default().extend([u.src, t.src, p.src]);
            // The answer to the address the host was given comes back; the other address knows nothing.
            let other = if u.src == PUBLIC { PUBLIC_B } else { PUBLIC };
            let (side, back) = r.pass(Side::Outside, udp(remote, 53, u.src, u.sport, b"a"));
            assert_eq!((side, back.dst, back.dport), (Side::Inside, h, sport));
            let (v, _) = r.send(Side::Outside, udp(remote, 53, other, u.sport, b"spoof"));
            assert_eq!(v, Verdict::Drop(DropReason::NoMapping), "{h}: a mapping leaks to {other}");
        }
    }
    for (h, addrs) in &by_host {
        assert_eq!(addrs.len(), 1, "{h} used {addrs:?}: paired pooling keeps one address per host");
        assert_eq!(r.engine.nat().paired(*h), addrs.iter().next().copied());
    }
    let used: BTreeSet<_> = by_host.values().flatten().collect();
    assert_eq!(used.len(), 2, "32 hosts spread over both addresses by hash, not filled in order");
    // Outside of the pool is not ours.
    let (v, _) = r.send(Side::Outside, udp(REMOTE, 53, Ipv4Addr::new(198, 51, 100, 12), 5000, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::Martian));
    // Both pool addresses answer pings (the gateway's own).
    let (v, out) = r.send(Side::Outside, icmp_echo(REMOTE, PUBLIC_B, 9, 1, true));
    assert_eq!(v, Verdict::Drop(DropReason::LocalDelivery));
    assert_eq!(check(&out[0].1).src, PUBLIC_B);
}

/// An FTP control connection from `client` to REMOTE:21 on public address `public`; returns the
/// server's next sequence number.
fn ftp_open_on(r: &mut Rig, client: Ipv4Addr, cport: u16, public: Ipv4Addr) -> u32 {
    let (_, syn) = r.pass(Side::Inside, tcp(client, cport, REMOTE, 21, 1, 0, SYN, b""));
    assert_eq!(syn.src, public, "the control connection's public address");
    r.pass(Side::Outside, tcp(REMOTE, 21, public, syn.sport, 100, 2, SYNACK, b""));
    r.pass(Side::Inside, tcp(client, cport, REMOTE, 21, 2, 101, ACK, b""));
    let hello = b"220 ready\r\n";
    r.pass(Side::Outside, tcp(REMOTE, 21, public, syn.sport, 101, 2, PSHACK, hello));
    101 + hello.len() as u32
}

fn announced(payload: &[u8]) -> (Ipv4Addr, u16) {
    let text = String::from_utf8_lossy(payload);
    // The six numbers: after the reply code or verb, the first run of digits and commas.
    let body = text.split_once(' ').map_or(&*text, |(_, b)| b);
    let start = body.find(|c: char| c.is_ascii_digit()).unwrap();
    let run: String = body[start..].chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    let nums: Vec<u16> = run.split(',').map(|n| n.parse().unwrap()).collect();
    (Ipv4Addr::new(nums[0] as u8, nums[1] as u8, nums[2] as u8, nums[3] as u8), nums[4] * 256 + nums[5])
}

#[test]
fn ftp_active_mode_announces_and_opens_on_the_control_connections_address() {
    for (want, block) in [(PUBLIC_B, None), (PUBLIC, None), (PUBLIC_B, Some(blocks(64, 4, 60)))] {
        let mut r = Rig::new(pooled(block.unwrap_or(Allocation::Dynamic)));
        let client = host_on(&mut r, want);
        let cport = 41000;
        let sseq = ftp_open_on(&mut r, client, cport, want);
        let line = format!("PORT 10,0,0,{},195,80\r\n", client.octets()[3]);
        let (_, out) = r.pass(Side::Inside, tcp(client, cport, REMOTE, 21, 2, sseq, PSHACK, line.as_bytes()));
        let (addr, port) = announced(&out.payload);
        assert_eq!(addr, want, "{block:?}: PORT names the control connection's public address");
        // The server connects from its data port to the announced endpoint: the pinhole is there only.
        let other = if want == PUBLIC { PUBLIC_B } else { PUBLIC };
        let (v, _) = r.send(Side::Outside, tcp(REMOTE, 20, other, port, 500, 0, SYN, b""));
        assert_ne!(v, Verdict::Forward(Side::Inside), "the pinhole must not open on {other}");
        let (side, syn) = r.pass(Side::Outside, tcp(REMOTE, 20, addr, port, 500, 0, SYN, b""));
        assert_eq!((side, syn.dst, syn.dport), (Side::Inside, client, 50000));
        if block.is_some() {
            let view = r.engine.nat().host_view(client);
            assert!(
                view.blocks.iter().any(|b| b.ports.contains(port)),
                "the data port comes from the host's block"
            );
        }
    }
}

#[test]
fn a_forward_on_a_named_pool_address_serves_passive_ftp_from_that_address() {
    let mut c = pooled(Allocation::Dynamic);
    let server = host(2);
    c.forwards = vec![format!("tcp:{PUBLIC_B}:21=10.0.0.2:21").parse().unwrap()];
    let mut r = Rig::new(c);
    // The same port on the other address is no forward.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 33000, PUBLIC, 21, 1, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    let (_, syn) = r.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC_B, 21, 1, 0, SYN, b""));
    assert_eq!((syn.dst, syn.dport), (server, 21));
    let (_, sa) = r.pass(Side::Inside, tcp(server, 21, REMOTE, 33000, 100, 2, SYNACK, b""));
    assert_eq!((sa.src, sa.sport), (PUBLIC_B, 21));
    r.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC_B, 21, 2, 101, ACK, b""));
    let hello = b"220 ready\r\n";
    r.pass(Side::Inside, tcp(server, 21, REMOTE, 33000, 101, 2, PSHACK, hello));
    let pasv = b"PASV\r\n";
    r.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC_B, 21, 2, 112, PSHACK, pasv));
    let reply = b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n";
    let (_, out) = r.pass(Side::Inside, tcp(server, 21, REMOTE, 33000, 112, 8, PSHACK, reply));
    let (addr, port) = announced(&out.payload);
    assert_eq!(addr, PUBLIC_B, "227 names the forward's address");
    let (_, data) = r.pass(Side::Outside, tcp(REMOTE, 33001, addr, port, 900, 0, SYN, b""));
    assert_eq!((data.dst, data.dport), (server, 30000));
    // The server's own outbound connections leave from its forward's address too (pinned).
    let (_, own) = r.pass(Side::Inside, udp(server, 123, REMOTE, 123, b"ntp"));
    assert_eq!(own.src, PUBLIC_B);
}

#[test]
fn port_blocks_bound_a_host_and_go_back_after_the_hold_down() {
    let mut r = Rig::new(pooled(blocks(100, 2, 30)));
    r.engine.set_nat_log(true);
    let hog = host(2);
    let mut ports = BTreeSet::new();
    let mut refused = 0;
    // A hostile host opens far more flows than two blocks hold.
    for i in 0..500u16 {
        let (v, out) = r.send(Side::Inside, udp(hog, 10000 + i, REMOTE, 53, b"q"));
        match v {
            Verdict::Forward(Side::Outside) => {
                ports.insert(check(&out[0].1).sport);
            }
            Verdict::Drop(DropReason::HostPortQuota) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ports.len(), refused), (200, 300), "two blocks of 100 ports, then refused");
    let view = r.engine.nat().host_view(hog);
    assert_eq!(view.blocks.len(), 2);
    for p in &ports {
        assert!(view.blocks.iter().any(|b| b.ports.contains(*p)), "port {p} outside the host's blocks");
    }
    // Another host is not starved by it.
    let (_, other) = r.pass(Side::Inside, udp(host(3), 10000, REMOTE, 53, b"q"));
    assert!(r.engine.nat().host_view(host(3)).blocks.iter().any(|b| b.ports.contains(other.sport)));
    let recs = records(&mut r);
    let allocated: Vec<_> = recs
        .iter()
        .filter_map(|x| match x {
            Record::BlockAllocated { inside, public, ports, .. } => Some((*inside, *public, *ports)),
            _ => None,
        })
        .collect();
    assert_eq!(allocated.len(), 3, "{recs:?}");
    assert!(recs.iter().any(|x| matches!(x, Record::QuotaExceeded { host, .. } if *host == hog)));
    // Every flow times out; the blocks wait out the hold-down, then go back, each logged once.
    r.advance(400);
    assert_eq!(r.engine.flow_count(), 0);
    assert_eq!(r.engine.nat().gauges().blocks_in_use, 3, "held during the hold-down");
    r.advance(31);
    assert_eq!(r.engine.nat().gauges().blocks_in_use, 0);
    let released: Vec<_> = records(&mut r)
        .into_iter()
        .filter_map(|x| match x {
            Record::BlockReleased { inside, public, ports, .. } => Some((inside, public, ports)),
            _ => None,
        })
        .collect();
    let mut a = allocated.clone();
    let mut b = released.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "every block allocated is released, as logged");
}

#[test]
fn session_records_name_the_translation_the_packets_carried() {
    let mut c = pooled(Allocation::Dynamic);
    c.pool.log_sessions = true;
    let mut r = Rig::new(c);
    r.engine.set_nat_log(true);
    let (_, s) = r.pass(Side::Inside, tcp(host(5), 42000, REMOTE, 80, 1, 0, SYN, b""));
    let created = records(&mut r);
    match created.as_slice() {
        [Record::SessionCreated { inside, public, remote, .. }] => {
            assert_eq!((inside.addr(), inside.port()), (host(5), 42000));
            assert_eq!((public.addr(), public.port()), (s.src, s.sport));
            assert_eq!((remote.addr, remote.port), (REMOTE, 80));
        }
        other => panic!("{other:?}"),
    }
    r.advance(3600);
    assert!(records(&mut r).iter().any(|x| matches!(x, Record::SessionDeleted { public, .. }
        if (public.addr(), public.port()) == (s.src, s.sport))));
}

#[test]
fn deterministic_mode_uses_exactly_the_computed_mapping_for_every_flow() {
    let mut c = pooled(Allocation::Deterministic { size: Some(200) });
    c.port_range = 1024..=65535;
    let det =
        Deterministic::new(&c.inside, &c.pool.addresses, PortRange::new(1024, 65535).unwrap(), Some(200))
            .unwrap();
    let mut r = Rig::new(c);
    let mut flows = 0;
    for n in [2u8, 3, 77, 128, 200, 254] {
        let h = host(n);
        let share = det.forward(h).unwrap();
        for i in 0..50u16 {
            for pkt in [
                udp(h, 20000 + i, REMOTE, 53, b"q"),
                tcp(h, 20000 + i, REMOTE2, 443, 1, 0, SYN, b""),
                icmp_echo(h, REMOTE, 900 + i, 1, true),
            ] {
                let (_, s) = r.pass(Side::Inside, pkt);
                assert_eq!(s.src, share.public, "{h}: the computed address");
                assert!(share.ports.contains(s.sport), "{h}: {} outside {}", s.sport, share.ports);
                assert_eq!(det.reverse(s.src, s.sport), Some(h), "reverse of {}:{}", s.src, s.sport);
                flows += 1;
            }
        }
        // A host that wants more than its range gets nothing more, and nobody else's ports.
        let mut refused = 0;
        for i in 0..300u16 {
            match r.send(Side::Inside, udp(h, 30000 + i, REMOTE, 53, b"q")).0 {
                Verdict::Forward(_) => {}
                Verdict::Drop(DropReason::HostPortQuota) => refused += 1,
                v => panic!("{v:?}"),
            }
        }
        assert!(refused >= 150, "{h}: {refused} refused of 300 beyond its 200-port range");
    }
    assert_eq!(flows, 6 * 150);
}

#[test]
fn ftpnat_events_show_blocks_and_quotas_without_any_exporter() {
    let mut r = Rig::new(pooled(blocks(16, 1, 5)));
    r.engine.set_events(true);
    for i in 0..20u16 {
        r.send(Side::Inside, udp(host(9), 20000 + i, REMOTE, 53, b"q"));
    }
    r.advance(400); // the flows expire: the block starts its 5-s hold-down
    r.advance(10);
    let nat: Vec<Record> = std::iter::from_fn(|| r.engine.poll_event())
        .filter_map(|e| match e {
            ftpnat::events::Event::Nat(rec) => Some(rec),
            _ => None,
        })
        .collect();
    let kinds: Vec<&str> = nat.iter().map(|x| x.kind()).collect();
    assert_eq!(kinds.first(), Some(&"block_allocated"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "quota_exceeded").count(), 4, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"block_released"), "{kinds:?}");
    assert!(records(&mut r).is_empty(), "no exporter: nothing queued for one");
}

/// RFC 6888 REQ-2 (paired pooling) for the gateway's own ICMP errors on the WAN side: a remote
/// host talking to an inside host on the pool's second address hears the errors about that flow
/// (TTL expiry, RFC 1812 §5.3.1; fragmentation needed, RFC 1191 §4) from that same address, never
/// from the pool's first one, which it has never talked to.
#[test]
fn icmp_errors_about_a_flow_come_from_its_pool_address() {
    let mut c = pooled(Allocation::Dynamic);
    c.mtu = [1000, 1500];
    let mut r = Rig::new(c);
    let h = host_on(&mut r, PUBLIC_B);
    let (_, out) = r.pass(Side::Inside, udp(h, 4000, REMOTE, 53, b"q"));
    assert_eq!(out.src, PUBLIC_B);
    let port = out.sport;

    let mut p = udp(REMOTE, 53, PUBLIC_B, port, b"a");
    ftpnat::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap().set_ttl(1);
    let (v, errs) = r.send(Side::Outside, p);
    assert_eq!(v, Verdict::Drop(DropReason::TtlExceeded));
    let e = check(&errs[0].1);
    assert_eq!((errs[0].0, e.src, e.dst, e.icmp_type), (Side::Outside, PUBLIC_B, REMOTE, Some(11)));
    let quoted = check(&e.payload);
    assert_eq!((quoted.src, quoted.dst, quoted.dport), (REMOTE, PUBLIC_B, port), "the packet as received");

    let mut p = udp(REMOTE, 53, PUBLIC_B, port, &[0x55; 1200]);
    ftpnat::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap().set_dont_frag(true);
    let (v, errs) = r.send(Side::Outside, p);
    assert_eq!(v, Verdict::Drop(DropReason::FragNeeded));
    let e = check(&errs[0].1);
    assert_eq!((errs[0].0, e.src, e.dst, e.icmp_type), (Side::Outside, PUBLIC_B, REMOTE, Some(3)));

    // The first address still speaks for itself: a packet sent to it hears from it.
    let mut p = udp(REMOTE, 53, PUBLIC, 9999, b"x");
    ftpnat::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap().set_ttl(1);
    let (_, errs) = r.send(Side::Outside, p);
    assert_eq!(check(&errs[0].1).src, PUBLIC);
}

/// The gateway's stop owes the collector an end for everything it logged as begun: a delete per open
/// session, then a release per held block, stamped with the stop time (the shell sends them before it
/// exits). Nothing already ended is ended twice, and nothing at all without an exporter.
#[test]
fn the_stop_ends_every_logged_session_and_held_block_once() {
    let mut c = pooled(blocks(64, 4, 600));
    c.pool.log_sessions = true;
    let mut r = Rig::new(c.clone());
    r.engine.set_nat_log(true);
    let (a, b) = (host(5), host(6));
    r.pass(Side::Inside, udp(a, 4000, REMOTE, 53, b"q"));
    r.pass(Side::Inside, tcp(a, 40000, REMOTE, 80, 1, 0, SYN, b""));
    r.pass(Side::Inside, udp(b, 4001, REMOTE2, 53, b"q"));
    let begun = records(&mut r);
    r.advance(5);
    let stop = r.engine.nat_stop_records(r.now);
    let created: BTreeSet<_> = begun
        .iter()
        .filter_map(|x| match x {
            Record::SessionCreated { proto, inside, public, remote, .. } => {
                Some((*proto, *inside, *public, *remote))
            }
            _ => None,
        })
        .collect();
    let deleted: BTreeSet<_> = stop
        .iter()
        .filter_map(|x| match x {
            Record::SessionDeleted { at, proto, inside, public, remote, .. } => {
                assert_eq!(*at, r.now, "stamped with the stop time");
                Some((*proto, *inside, *public, *remote))
            }
            _ => None,
        })
        .collect();
    assert_eq!((created.len(), created), (3, deleted));
    let allocated: BTreeSet<_> = begun
        .iter()
        .filter_map(|x| match x {
            Record::BlockAllocated { inside, public, ports, .. } => Some((*inside, *public, *ports)),
            _ => None,
        })
        .collect();
    let released: BTreeSet<_> = stop
        .iter()
        .filter_map(|x| match x {
            Record::BlockReleased { at, inside, public, ports, .. } => {
                assert_eq!(*at, r.now);
                Some((*inside, *public, *ports))
            }
            _ => None,
        })
        .collect();
    assert_eq!((allocated.len(), allocated), (2, released));
    assert_eq!(stop.len(), 5, "{stop:?}");

    // Without an exporter the stop owes nobody anything.
    let mut quiet = Rig::new(c);
    quiet.pass(Side::Inside, udp(a, 4000, REMOTE, 53, b"q"));
    assert!(quiet.engine.nat_stop_records(quiet.now).is_empty());
}
