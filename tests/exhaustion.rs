//! Resource exhaustion: floods of new flows from one inside host and from many, SYN floods at a port
//! forward, outside port exhaustion, pinhole limits per host and per control connection, fragment
//! floods. Each asserts the bounds hold, the refusals are counted under their reason, and a flow that
//! existed before keeps working during and after. The flood prints its figures (offered, admitted,
//! refused, peak table size, resident memory per flow) for the closing note.
//!
//! Owns: nothing but these scenarios. Must not: sleep or depend on wall time for correctness (elapsed
//! time is only printed). Tests in this file run one at a time (the memory figures are per process).

mod engine_support;

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant as WallClock;

use engine_support::*;
use ftpnat::{Config, DropReason, Engine, Instant, RefusalReason, Side, Verdict};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident set size of this process in bytes (Linux /proc/self/statm, second field, in pages).
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A UDP flow that existed before the flood: one packet each way must still pass.
struct Witness {
    host: Ipv4Addr,
    port: u16,
    public_port: Option<u16>,
}

impl Witness {
    fn check(&mut self, e: &mut Engine, now: Instant) {
        let mut p = udp(self.host, self.port, REMOTE, 53, b"still here?");
        let v = e.handle_packet(now, Side::Inside, &mut p);
        assert_eq!(v, Verdict::Forward(Side::Outside), "the existing flow's packet was refused");
        let s = check(&p);
        assert_eq!(s.src, PUBLIC);
        if let Some(pp) = self.public_port {
            assert_eq!(s.sport, pp, "the existing flow kept its mapping");
        }
        self.public_port = Some(s.sport);
        let mut back = udp(REMOTE, 53, PUBLIC, s.sport, b"yes");
        let v = e.handle_packet(now, Side::Outside, &mut back);
        assert_eq!(v, Verdict::Forward(Side::Inside));
        assert_eq!((check(&back).dst, check(&back).dport), (self.host, self.port));
        while e.poll_transmit().is_some() {}
    }
}

#[derive(Default, Debug)]
struct Figures {
    offered: u64,
    forwarded: u64,
    peak: usize,
}

/// Offers one UDP packet; returns the verdict. Every 1000th output is checked by etherparse.
fn offer(e: &mut Engine, now: Instant, pkt: &mut Vec<u8>, f: &mut Figures) -> Verdict {
    f.offered += 1;
    let v = e.handle_packet(now, Side::Inside, pkt);
    if let Verdict::Forward(_) = v {
        f.forwarded += 1;
        if f.forwarded % 1000 == 1 {
            check(pkt);
        }
    }
    while e.poll_transmit().is_some() {}
    f.peak = f.peak.max(e.flow_count());
    v
}

/// Rewrites a UDP packet's addresses and ports in place with correct checksums (cheaper than building a
/// new one for each of a million packets).
fn retarget(pkt: &mut [u8], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) {
    let mut ip = ftpnat::wire::Ipv4Packet::new_checked(&mut pkt[..]).unwrap();
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    let mut u = ip.udp_mut().unwrap();
    u.set_src_port(sport);
    u.set_dst_port(dport);
}

#[test]
fn flood_of_new_udp_flows_from_one_host_and_from_many_stays_within_bounds() {
    let _g = serial();
    // A million packets in release builds; a fifth of that in debug builds (same shape, same asserts).
    let total: u64 = std::env::var("FTPNAT_FLOOD_PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 200_000 } else { 1_000_000 });
    let mut c = Config::new(vec!["10.0.0.0/16".parse().unwrap()], PUBLIC);
    c.max_flows = 100_000;
    c.max_flows_per_host = 10_000;
    c.validate().unwrap();
    let mut e = Engine::new(c);
    let now = Instant::from_secs(1000);
    let mut witness = Witness { host: Ipv4Addr::new(10, 0, 0, 2), port: 5353, public_port: None };
    witness.check(&mut e, now);
    let rss0 = rss_bytes();
    let t0 = WallClock::now();
    let mut f = Figures::default();
    // The engine edits the buffer it is handed (addresses, TTL): each packet starts from the template.
    let template = udp(LAN_HOST, 1, REMOTE, 1, b"flood");
    // Phase 1: 30% of the packets from one inside host, each to a new destination.
    let one_host = total * 3 / 10;
    for i in 0..one_host {
        let dst = Ipv4Addr::from(0x6440_0000u32 | (i as u32 & 0xffff)); // 100.64.x.y
        let mut pkt = template.clone();
        retarget(&mut pkt, Ipv4Addr::new(10, 0, 0, 3), 1024 + (i % 4000) as u16, dst, 1 + (i >> 16) as u16);
        offer(&mut e, now, &mut pkt, &mut f);
        if i % 50_000 == 0 {
            witness.check(&mut e, now);
        }
    }
    let m = e.metrics().clone();
    let host_refused = m.drops_of(DropReason::HostFlowLimit);
    assert_eq!(e.table().host_count(Ipv4Addr::new(10, 0, 0, 3)), 10_000, "one host holds exactly its limit");
    assert_eq!(host_refused, one_host - 10_000, "every flow past the host limit refused and counted");
    // Phase 2: the rest from 20,000 hosts in 10.0.1.0 .. 10.0.79.255, one source port each (the public
    // ports would run out first otherwise: one address has 64 K of them), each to many destinations.
    let many = total - one_host;
    for i in 0..many {
        let h = 256 + (i % 20_000) as u32;
        let src = Ipv4Addr::from(0x0a00_0000 | h);
        let dst = Ipv4Addr::from(0xcb00_0000u32 | ((i / 20_000) as u32 & 0xffff)); // 203.0.x.y
        let mut pkt = template.clone();
        retarget(&mut pkt, src, 2000, dst, 53);
        offer(&mut e, now, &mut pkt, &mut f);
        assert!(e.flow_count() <= 100_000);
        if i % 50_000 == 0 {
            witness.check(&mut e, now);
        }
    }
    let elapsed = t0.elapsed();
    witness.check(&mut e, now);
    let m = e.metrics().clone();
    let table_full = m.drops_of(DropReason::TableFull);
    let host_limit = m.drops_of(DropReason::HostFlowLimit);
    let ports = m.drops_of(DropReason::PortsExhausted);
    let admitted = m.flows_created;
    assert_eq!(f.peak, 100_000, "the table filled to its bound and no further");
    assert!(table_full > 0, "table_full counted");
    // Every offered packet is either forwarded on a flow or refused with a counted reason.
    assert_eq!(f.offered - f.forwarded, m.total_drops(), "no silent drop");
    assert_eq!(m.total_drops(), table_full + host_limit + ports, "refused for these reasons only");
    let rss1 = rss_bytes();
    let per_flow = match (rss0, rss1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) / admitted.max(1)),
        _ => None,
    };
    println!(
        "FLOOD offered={} admitted_flows={} forwarded={} refused: table_full={} host_flow_limit={} \
         ports_exhausted={} peak_table={} rss_before={:?} rss_after={:?} approx_bytes_per_flow={:?} \
         elapsed={:.2?} ({:.0} packets/s)",
        f.offered,
        admitted,
        f.forwarded,
        table_full,
        host_limit,
        ports,
        f.peak,
        rss0,
        rss1,
        per_flow,
        elapsed,
        f.offered as f64 / elapsed.as_secs_f64()
    );
    if let Some(b) = per_flow {
        // A flow is a few hundred bytes of table, index and timer; 4 KiB each would be a leak.
        assert!(b < 4096, "{b} bytes per flow");
    }
    // After the idle timeout everything goes, and the table takes new flows again.
    let later = now + core::time::Duration::from_secs(400);
    e.handle_timeout(later);
    assert_eq!(e.flow_count(), 0);
    assert_eq!(e.nat().mapping_count(), 0);
    witness.public_port = None;
    witness.check(&mut e, later);
}

#[test]
fn flood_while_every_outside_port_is_taken_is_refused_cheaply() {
    let _g = serial();
    let mut c = Config::new(vec!["10.0.0.0/16".parse().unwrap()], PUBLIC);
    c.max_flows = 200_000;
    c.validate().unwrap();
    let mut e = Engine::new(c);
    let now = Instant::from_secs(1000);
    let template = udp(LAN_HOST, 1, REMOTE, 53, b"x");
    let mut f = Figures::default();
    // 64,512 inside endpoints on distinct hosts, all wanting port 1024: the whole range 1024-65535.
    let range = 65535 - 1024 + 1;
    for i in 0..range as u32 {
        let mut pkt = template.clone();
        retarget(&mut pkt, Ipv4Addr::from(0x0a00_0100 + i), 1024, REMOTE, 53);
        assert!(matches!(offer(&mut e, now, &mut pkt, &mut f), Verdict::Forward(_)), "endpoint {i}");
    }
    assert_eq!(e.nat().ports_in_use(ftpnat::flow::Proto::Udp), range);
    // Then a flood of new endpoints: each refused as ports_exhausted, without scanning the range.
    let flood = if cfg!(debug_assertions) { 50_000 } else { 200_000 };
    let t0 = WallClock::now();
    for i in 0..flood {
        let mut pkt = template.clone();
        retarget(
            &mut pkt,
            Ipv4Addr::from(0x0a00_0100 + (i % 60_000)),
            2000 + (i / 60_000) as u16,
            REMOTE,
            53,
        );
        assert_eq!(offer(&mut e, now, &mut pkt, &mut f), Verdict::Drop(DropReason::PortsExhausted));
    }
    let elapsed = t0.elapsed();
    assert_eq!(e.metrics().drops_of(DropReason::PortsExhausted), flood as u64);
    println!(
        "PORTFLOOD ports_in_use={range} refused_ports_exhausted={flood} in {elapsed:.2?} ({:.0} refusals/s)",
        flood as f64 / elapsed.as_secs_f64()
    );
    // Existing flows still work.
    let mut back = udp(REMOTE, 53, PUBLIC, 1024, b"answer");
    assert!(matches!(e.handle_packet(now, Side::Outside, &mut back), Verdict::Forward(Side::Inside)));
}

#[test]
fn syn_flood_at_a_port_forward_is_bounded_by_the_inside_hosts_limit() {
    let _g = serial();
    let mut c = config();
    c.forwards.push("tcp:8080=10.0.0.5:80".parse().unwrap());
    c.max_flows = 5_000;
    c.max_flows_per_host = 1_000;
    let mut r = Rig::new(c);
    // An established outbound flow of another inside host.
    r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 443, 1, 0, SYN, b""));
    r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 40000, 9, 2, SYNACK, b""));
    let mut refused = 0;
    for i in 0..20_000u32 {
        let src = Ipv4Addr::from(0xcb00_7100u32 + (i % 200)); // 203.0.113.0/24, spoofed
        let (v, _) = r.send(Side::Outside, tcp(src, 1024 + (i / 200) as u16, PUBLIC, 8080, i, 0, SYN, b""));
        if v == Verdict::Drop(DropReason::HostFlowLimit) {
            refused += 1;
        }
        assert!(r.engine.flow_count() <= 1_001);
    }
    assert_eq!(r.engine.table().host_count(Ipv4Addr::new(10, 0, 0, 5)), 1_000);
    assert_eq!(refused, 19_000);
    assert_eq!(r.engine.metrics().drops_of(DropReason::HostFlowLimit), 19_000);
    // The other host's connection is untouched, and it can still open new ones.
    let (_, s) = r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 40000, 10, 2, PSHACK, b"data"));
    assert_eq!(s.dst, LAN_HOST);
    r.pass(Side::Inside, tcp(LAN_HOST, 40001, REMOTE, 443, 1, 0, SYN, b""));
    // Half-open flood flows go after the transitory timeout (RFC 5382: 4 minutes).
    r.advance(241);
    assert_eq!(r.engine.table().host_count(Ipv4Addr::new(10, 0, 0, 5)), 0);
    println!("SYNFLOOD offered=20000 admitted=1000 refused_host_flow_limit={refused}");
}

#[test]
fn outside_port_exhaustion_is_counted_and_logged_not_a_panic() {
    let _g = serial();
    let mut c = config();
    c.port_range = 1024..=1031;
    let mut r = Rig::new(c);
    // Inside source ports below the range are kept only if free; these collide on purpose (two hosts,
    // same ports), so the second host's mappings come from the 8-port range.
    for p in 0..8u16 {
        r.pass(Side::Inside, udp(LAN_HOST, 3000 + p, REMOTE, 53, b"a"));
    }
    let logs = capture_logs(|| {
        // The same ports from a second host clash: the 8-port range serves 8 of them, the next 8 keep
        // their own (free) port numbers.
        for p in 0..16u16 {
            r.pass(Side::Inside, udp(LAN_HOST2, 3000 + p, REMOTE, 53, b"b"));
        }
        // A third host clashes on all 16 with the range full: refused, plus 4 free ones kept.
        for p in 0..20u16 {
            r.send(Side::Inside, udp(Ipv4Addr::new(10, 0, 0, 4), 3000 + p, REMOTE, 53, b"c"));
        }
    });
    let exhausted = r.engine.metrics().drops_of(DropReason::PortsExhausted);
    assert_eq!(exhausted, 16, "ports_exhausted counted per refused flow");
    assert!(logs.contains("outside ports exhausted"), "logged: {logs}");
    // TCP is a separate pool, handled the same way.
    for p in 0..20u16 {
        r.pass(Side::Inside, tcp(LAN_HOST, 3000 + p, REMOTE, 80, 1, 0, SYN, b""));
        let (v, _) = r.send(Side::Inside, tcp(LAN_HOST2, 3000 + p, REMOTE, 80, 1, 0, SYN, b""));
        assert!(matches!(v, Verdict::Forward(_) | Verdict::Drop(DropReason::PortsExhausted)));
    }
    assert_eq!(r.engine.metrics().drops_of(DropReason::PortsExhausted), exhausted + 12);
    // The flows that were admitted keep working.
    r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 3000, b"to host 1"));
    // An FTP announcement that needs a port gets none: refused with its reason, line left as sent.
    let mut c = config();
    c.port_range = 1024..=1024;
    let mut r = Rig::new(c);
    r.pass(Side::Inside, tcp(LAN_HOST2, 5000, REMOTE, 80, 1, 0, SYN, b"")); // holds 5000
    r.pass(Side::Inside, tcp(LAN_HOST2, 1024, REMOTE, 80, 1, 0, SYN, b"")); // holds the whole range
    let s_next = ftp_open(&mut r, LAN_HOST, 40000);
    let line = b"PORT 10,0,0,2,19,136\r\n"; // 10.0.0.2:5000: its own number is taken, the range is full
    let (_, s) = r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 21, 2, s_next, PSHACK, line));
    assert_eq!(s.payload, line);
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::NoPort), 1);
    assert!(r.engine.pinholes().is_empty());
    // Existing flows keep working.
    let (_, s) = r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 5000, 7, 2, SYNACK, b""));
    assert_eq!(s.dst, LAN_HOST2);
    r.pass(Side::Inside, tcp(LAN_HOST2, 5000, REMOTE, 80, 2, 8, ACK, b"")); // established: stays 2 h
                                                                            // And when a mapping goes, its port is free again: after an RST, once the transitory timeout has
                                                                            // passed (RFC 7857 §2.2).
    let rst = Flags { rst: true, ack: true, ..Default::default() };
    r.pass(Side::Inside, tcp(LAN_HOST2, 1024, REMOTE, 80, 2, 8, rst, b""));
    r.advance(11);
    assert!(r
        .engine
        .nat()
        .lookup(ftpnat::flow::Proto::Tcp, ftpnat::flow::Endpoint::new(LAN_HOST2, 1024))
        .is_some());
    r.advance(240);
    let (_, s) =
        r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 21, 2 + line.len() as u32, s_next, PSHACK, line));
    assert!(s.payload.starts_with(b"PORT 198,51,100,1,4,0\r\n"), "{:?}", String::from_utf8_lossy(&s.payload));
    println!("PORTS range of 8: ports_exhausted={exhausted} (UDP), ftp no_port refusals=1");
}

#[test]
fn pinholes_are_limited_per_inside_host_and_per_control_connection() {
    let _g = serial();
    let mut c = config();
    c.ftp.max_pinholes_per_host = 4;
    c.ftp.max_pinholes_per_conn = 3;
    let mut r = Rig::new(c);
    let mut seqs = [2u32; 3];
    let mut port_line = |r: &mut Rig, conn: usize, host: Ipv4Addr, data_port: u16| {
        let o = host.octets();
        let line =
            format!("PORT {},{},{},{},{},{}\r\n", o[0], o[1], o[2], o[3], data_port >> 8, data_port & 0xff);
        let (_, s) = r.pass(
            Side::Inside,
            tcp(host, 40000 + conn as u16, REMOTE, 21, seqs[conn], 1, PSHACK, line.as_bytes()),
        );
        seqs[conn] += line.len() as u32;
        s.payload
    };
    for (conn, host) in [(0, LAN_HOST), (1, LAN_HOST), (2, LAN_HOST2)] {
        ftp_open(&mut r, host, 40000 + conn as u16);
    }
    // Per connection: the fourth announcement replaces the oldest.
    for p in 0..4 {
        port_line(&mut r, 0, LAN_HOST, 6000 + p);
    }
    assert_eq!(r.engine.pinholes().len(), 3);
    assert_eq!(r.engine.metrics().pinholes_replaced, 1);
    assert!(r.engine.pinholes().iter().all(|p| p.inside.port != 6000), "the oldest went");
    // Per host: the host's second connection gets one more, then refusals.
    assert!(port_line(&mut r, 1, LAN_HOST, 7000).starts_with(b"PORT 198,51,100,1,"));
    for p in 1..4 {
        let out = port_line(&mut r, 1, LAN_HOST, 7000 + p);
        assert!(out.starts_with(b"PORT 10,0,0,2,"), "left as sent");
    }
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::PinholeLimit), 3);
    let mine = r.engine.pinholes().iter().filter(|p| p.inside.addr == LAN_HOST).count();
    assert_eq!(mine, 4);
    // Another host is not affected.
    assert!(port_line(&mut r, 2, LAN_HOST2, 8000).starts_with(b"PORT 198,51,100,1,"));
    // Using a pinhole frees its slot.
    let used = r.engine.pinholes().iter().find(|p| p.inside.addr == LAN_HOST).unwrap().public_port;
    r.pass(Side::Outside, tcp(REMOTE, 20, PUBLIC, used, 1, 0, SYN, b""));
    assert!(port_line(&mut r, 1, LAN_HOST, 7100).starts_with(b"PORT 198,51,100,1,"));
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::PinholeLimit), 3);
}

#[test]
fn fragment_flood_is_bounded_and_counted() {
    let _g = serial();
    let mut r = Rig::new(config());
    let whole = udp(LAN_HOST, 9000, REMOTE, 9, &[0u8; 3000]);
    let frags = ftpnat::wire::ipv4::fragment(&whole, 1000).unwrap();
    let mut held = 0;
    for id in 0..5000u16 {
        let mut f = frags[1].clone();
        ftpnat::wire::Ipv4Packet::new_checked(&mut f[..]).unwrap().set_ident(id);
        match r.send(Side::Inside, f).0 {
            Verdict::Held => held += 1,
            Verdict::Drop(DropReason::FragmentQueueFull | DropReason::FragmentSourceQuota) => {}
            v => panic!("{v:?}"),
        }
    }
    // One source: its share of the waiting queue (tests/quota.rs has the other sources' side).
    let full = r.engine.metrics().drops_of(DropReason::FragmentQueueFull)
        + r.engine.metrics().drops_of(DropReason::FragmentSourceQuota);
    assert_eq!(held + full, 5000);
    assert!(held <= ftpnat::frag::WAITING_PER_SOURCE as u64, "held {held}");
    // Flows still work; the held fragments are dropped and counted when their wait ends.
    r.pass(Side::Inside, udp(LAN_HOST, 9001, REMOTE, 9, b"fine"));
    r.advance(3);
    assert_eq!(r.engine.metrics().drops_of(DropReason::FragmentNoState), held);
    println!("FRAGMENTS offered=5000 held={held} fragment_queue_full={full}");
}

/// Runs `f` with a tracing subscriber writing into a buffer; returns what was logged.
fn capture_logs(f: impl FnOnce()) -> String {
    use std::sync::Arc;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }
    let buf = Buf::default();
    let sub =
        tracing_subscriber::fmt().with_writer(buf.clone()).with_max_level(tracing::Level::WARN).finish();
    tracing::subscriber::with_default(sub, f);
    let v = buf.0.lock().unwrap().clone();
    String::from_utf8_lossy(&v).into_owned()
}
