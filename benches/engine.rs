//! Per-packet cost of the engine: established flows, new flows, the FTP ALG, sequence adjustment and
//! the connection table at 1 M flows.
//!
//! Owns: timing only; scenarios come from the test kit (`ftpnat_testkit::scenario`). Must not: send traffic or read files.
//!
//! Every timed closure copies a packet template into a reused buffer before the engine sees it (the
//! engine edits packets in place); `baseline::copy_*` times that copy alone so it can be subtracted.
//! The global allocator is divan's `AllocProfiler`, so each row also shows allocations per iteration:
//! the established-flow rows must show none (`tests/no_alloc.rs` asserts it).
//!
//! Run: `cargo bench --bench engine` (add `-- FILTER` to pick rows).

use divan::counter::ItemsCount;
use divan::{black_box, AllocProfiler, Bencher};
use ftpnat::conntrack::{Conn, Origin, Table};
use ftpnat::flow::{Endpoint, FlowKey, Proto};
use ftpnat::wire::Ipv4Packet;
use ftpnat::{Side, Verdict};
use std::net::Ipv4Addr;

use ftpnat_testkit::scenario::{self, *};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

/// Payload that makes a 1500-byte TCP packet.
const TCP_PAYLOAD: usize = 1460;
/// Payload that makes a 64-byte UDP packet.
const UDP_PAYLOAD: usize = 36;

mod baseline {
    use super::*;

    #[divan::bench]
    fn copy_1500(b: Bencher) {
        let mut rig = Rig::new(config());
        let (out, _) = tcp_flow(&mut rig, TCP_PAYLOAD);
        let mut buf = Vec::with_capacity(2048);
        b.bench_local(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&out));
            black_box(&mut buf);
        });
    }

    #[divan::bench]
    fn copy_64(b: Bencher) {
        let mut rig = Rig::new(config());
        let (out, _) = udp_flow(&mut rig, UDP_PAYLOAD);
        let mut buf = Vec::with_capacity(2048);
        b.bench_local(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&out));
            black_box(&mut buf);
        });
    }
}

/// One packet of an established flow, each direction.
mod established {
    use super::*;

    fn run(b: Bencher, rig: &mut Rig, from: Side, tpl: &[u8]) {
        assert_eq!(rig.send(from, tpl), Verdict::Forward(from.other()));
        b.counter(ItemsCount::new(1u32)).bench_local(|| black_box(rig.send(from, black_box(tpl))));
    }

    #[divan::bench]
    fn tcp_out_1500(b: Bencher) {
        let mut rig = Rig::new(config());
        let (out, _) = tcp_flow(&mut rig, TCP_PAYLOAD);
        run(b, &mut rig, Side::Inside, &out);
    }

    #[divan::bench]
    fn tcp_in_1500(b: Bencher) {
        let mut rig = Rig::new(config());
        let (_, inb) = tcp_flow(&mut rig, TCP_PAYLOAD);
        run(b, &mut rig, Side::Outside, &inb);
    }

    #[divan::bench]
    fn udp_out_64(b: Bencher) {
        let mut rig = Rig::new(config());
        let (out, _) = udp_flow(&mut rig, UDP_PAYLOAD);
        run(b, &mut rig, Side::Inside, &out);
    }

    #[divan::bench]
    fn udp_in_64(b: Bencher) {
        let mut rig = Rig::new(config());
        let (_, inb) = udp_flow(&mut rig, UDP_PAYLOAD);
        run(b, &mut rig, Side::Outside, &inb);
    }

    #[divan::bench]
    fn icmp_request(b: Bencher) {
        let mut rig = Rig::new(config());
        let (req, _) = icmp_flow(&mut rig);
        run(b, &mut rig, Side::Inside, &req);
    }

    #[divan::bench]
    fn icmp_reply(b: Bencher) {
        let mut rig = Rig::new(config());
        let (_, rep) = icmp_flow(&mut rig);
        run(b, &mut rig, Side::Outside, &rep);
    }

    /// The same 64-byte UDP packet in forward-only mode (no translation): the engine's own ceiling.
    #[divan::bench]
    fn udp_64_forward_only(b: Bencher) {
        let mut c = config();
        c.translate = false;
        let mut rig = Rig::new(c);
        let pkt = udp(CLIENT, 5353, REMOTE, 53, &[0x17; UDP_PAYLOAD]);
        run(b, &mut rig, Side::Inside, &pkt);
    }
}

/// One packet of an established NAT64 flow (issue 14), beside `established`: an IPv6 client's packet
/// translated to IPv4 (RFC 7915) then through the IPv4 path, and the IPv4 reply back to IPv6. The UDP
/// rows carry the same 36-byte payload as `established::udp_*_64` (84 bytes as IPv6, 64 as IPv4); the
/// TCP rows 1440 bytes, the most an IPv6 client's MSS allows (a 1500-byte IPv6 segment, 1480 as IPv4).
mod nat64 {
    use super::*;
    use etherparse::PacketBuilder;
    use std::net::Ipv6Addr;

    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 2);

    fn rig() -> Rig {
        let mut c = config();
        c.nat64 = Some(ftpnat::nat64::Nat64Config::new(
            "64:ff9b:1::/96".parse().expect("prefix"),
            vec!["2001:db8:64::/64".parse().expect("prefix")],
        ));
        c.validate().expect("valid NAT64 bench config");
        Rig::new(c)
    }

    fn remote6() -> Ipv6Addr {
        let [a, b, c, d] = REMOTE.octets();
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
    }

    fn run(b: Bencher, rig: &mut Rig, from: Side, tpl: &[u8]) {
        assert_eq!(rig.send(from, tpl), Verdict::Forward(from.other()));
        b.counter(ItemsCount::new(1u32)).bench_local(|| black_box(rig.send(from, black_box(tpl))));
    }

    /// `(outbound IPv6, inbound IPv4)` templates of an established UDP flow.
    fn udp_flow6(rig: &mut Rig) -> (Vec<u8>, Vec<u8>) {
        let data = [0x17; UDP_PAYLOAD];
        let mut out = Vec::new();
        PacketBuilder::ipv6(CLIENT6.octets(), remote6().octets(), 64)
            .udp(5353, 53)
            .write(&mut out, &data)
            .unwrap();
        rig.pass(Side::Inside, &out);
        let inb = udp(REMOTE, 53, PUBLIC, 5353, &data);
        assert_eq!(rig.send(Side::Outside, &inb), Verdict::Forward(Side::Inside));
        (out, inb)
    }

    /// `(outbound IPv6, inbound IPv4)` templates of an established TCP connection.
    fn tcp_flow6(rig: &mut Rig) -> (Vec<u8>, Vec<u8>) {
        let seg = |seq: u32, ack: Option<u32>, syn: bool, data: &[u8]| {
            let mut v = Vec::new();
            let t = PacketBuilder::ipv6(CLIENT6.octets(), remote6().octets(), 64).tcp(40_000, 80, seq, 65535);
            let t = if syn { t.syn() } else { t };
            let t = match ack {
                Some(a) => t.ack(a),
                None => t,
            };
            t.write(&mut v, data).unwrap();
            v
        };
        rig.pass(Side::Inside, &seg(1000, None, true, &[]));
        let synack = tcp(REMOTE, 80, PUBLIC, 40_000, 5000, 1001, SYN | ACK, &[]);
        assert_eq!(rig.send(Side::Outside, &synack), Verdict::Forward(Side::Inside));
        rig.pass(Side::Inside, &seg(1001, Some(5001), false, &[]));
        let data = vec![0x42; TCP_PAYLOAD - 20];
        let out = seg(1001, Some(5001), false, &data);
        let inb = tcp(REMOTE, 80, PUBLIC, 40_000, 5001, 1001, ACK | PSH, &data);
        (out, inb)
    }

    #[divan::bench]
    fn udp_out_64(b: Bencher) {
        let mut rig = rig();
        let (out, _) = udp_flow6(&mut rig);
        run(b, &mut rig, Side::Inside, &out);
    }

    #[divan::bench]
    fn udp_in_64(b: Bencher) {
        let mut rig = rig();
        let (_, inb) = udp_flow6(&mut rig);
        run(b, &mut rig, Side::Outside, &inb);
    }

    #[divan::bench]
    fn tcp_out_1500(b: Bencher) {
        let mut rig = rig();
        let (out, _) = tcp_flow6(&mut rig);
        run(b, &mut rig, Side::Inside, &out);
    }

    #[divan::bench]
    fn tcp_in_1500(b: Bencher) {
        let mut rig = rig();
        let (_, inb) = tcp_flow6(&mut rig);
        run(b, &mut rig, Side::Outside, &inb);
    }
}

/// The first packet of a flow: table insert, mapping (port preserved), expiry queue.
mod new_flow {
    use super::*;

    // Bounded iterations: every iteration adds a flow and takes a public port (50 000 < 64 512).
    const SAMPLES: u32 = 100;
    const PER_SAMPLE: u32 = 500;

    fn run(b: Bencher, tpl: Vec<u8>) {
        let mut rig = Rig::new(config());
        let mut tpl = tpl;
        let mut i: u32 = 0;
        b.counter(ItemsCount::new(1u32)).bench_local(|| {
            // A new inside port and a new destination each time: a new mapping and a new connection.
            i += 1;
            let mut ip = Ipv4Packet::new_unchecked(&mut tpl[..]);
            ip.set_dst_addr(Ipv4Addr::from(0xcb00_0000 | i));
            let port = 1024 + (i % 64_000) as u16;
            if let Ok(mut t) = ip.tcp_mut() {
                t.set_src_port(port);
            } else if let Ok(mut u) = ip.udp_mut() {
                u.set_src_port(port);
            }
            black_box(rig.send(Side::Inside, &tpl))
        });
    }

    #[divan::bench(sample_count = SAMPLES, sample_size = PER_SAMPLE)]
    fn udp(b: Bencher) {
        run(b, scenario::udp(CLIENT, 1024, REMOTE, 53, &[0x17; UDP_PAYLOAD]));
    }

    #[divan::bench(sample_count = SAMPLES, sample_size = PER_SAMPLE)]
    fn tcp_syn(b: Bencher) {
        run(b, scenario::tcp(CLIENT, 1024, REMOTE, 80, 1000, 0, SYN, &[]));
    }
}

/// FTP control connections: a command and its `200` reply per iteration (two packets).
mod ftp {
    use super::*;

    fn rounds(b: Bencher, client: Ipv4Addr, ports: DataPorts, port: bool) {
        let mut rig = Rig::new(config());
        let mut f = Ftp::open(&mut rig, client, ports);
        let (v1, v2) = f.round(&mut rig, port);
        assert!(matches!((v1, v2), (Verdict::Forward(_), Verdict::Forward(_))), "{v1:?} {v2:?}");
        b.counter(ItemsCount::new(2u32)).bench_local(|| black_box(f.round(&mut rig, port)));
    }

    /// PORT rewritten with the same length: inside and public address texts are equally long and the
    /// data port is kept.
    #[divan::bench]
    fn port_round_zero_delta(b: Bencher) {
        rounds(b, CLIENT_SAME_LEN, DataPorts::ThreeDigits, true);
    }

    /// PORT whose longer public address is made up for by a public port with a shorter text: zero
    /// delta, but the port is searched for.
    #[divan::bench]
    fn port_round_compensated(b: Bencher) {
        rounds(b, CLIENT, DataPorts::ThreeDigits, true);
    }

    /// PORT rewritten 4 bytes longer (no port text is short enough to make up for it): a sequence
    /// edit recorded, then pruned by the reply's ack.
    #[divan::bench(sample_count = 20, sample_size = 10)]
    fn port_round_length_change(b: Bencher) {
        rounds(b, CLIENT, DataPorts::TwoDigits, true);
    }

    /// A command that is not rewritten, on a connection that never changed a length.
    #[divan::bench]
    fn noop_round_identity(b: Bencher) {
        rounds(b, CLIENT, DataPorts::TwoDigits, false);
    }
}

/// Segments on a control connection after a length-changing rewrite: numbers shifted by the delta.
mod seqadj {
    use super::*;

    /// A connection whose client stream carries +4 (one PORT rewritten longer and acknowledged).
    fn shifted() -> (Rig, Ftp) {
        let mut rig = Rig::new(config());
        let mut f = Ftp::open(&mut rig, CLIENT, DataPorts::TwoDigits);
        f.round(&mut rig, true);
        (rig, f)
    }

    #[divan::bench]
    fn noop_round_shifted(b: Bencher) {
        let (mut rig, mut f) = shifted();
        b.counter(ItemsCount::new(2u32)).bench_local(|| black_box(f.round(&mut rig, false)));
    }

    /// Client pure ACK: its seq moves by +4.
    #[divan::bench]
    fn client_ack_shifted(b: Bencher) {
        let (mut rig, f) = shifted();
        assert!(matches!(f.client_ack(&mut rig), Verdict::Forward(_)));
        b.counter(ItemsCount::new(1u32)).bench_local(|| black_box(f.client_ack(&mut rig)));
    }

    /// Server pure ACK: its ack moves by -4 into the client's space.
    #[divan::bench]
    fn server_ack_unmapped(b: Bencher) {
        let (mut rig, f) = shifted();
        assert!(matches!(f.server_ack(&mut rig), Verdict::Forward(_)));
        b.counter(ItemsCount::new(1u32)).bench_local(|| black_box(f.server_ack(&mut rig)));
    }

    /// The same client pure ACK on a connection without any length change, for comparison.
    #[divan::bench]
    fn client_ack_identity(b: Bencher) {
        let mut rig = Rig::new(config());
        let f = Ftp::open(&mut rig, CLIENT, DataPorts::TwoDigits);
        b.counter(ItemsCount::new(1u32)).bench_local(|| black_box(f.client_ack(&mut rig)));
    }
}

/// The connection table on its own, and the engine, with many flows in it.
mod table {
    use super::*;

    fn key(i: u32) -> FlowKey {
        let (host, sport, dst, dport) = udp_flow_tuple(i);
        FlowKey::new(Proto::Udp, Endpoint::new(host, sport), Endpoint::new(dst, dport))
    }

    fn table(n: u32) -> Table {
        let mut t = Table::new(n as usize, n as usize);
        for i in 0..n {
            let k = key(i);
            let reply = FlowKey::new(Proto::Udp, k.dst, Endpoint::new(PUBLIC, k.src.port));
            let mut c = Conn::new(k, reply, Origin::Outbound, NOW);
            c.set_expires(NOW + core::time::Duration::from_secs(300));
            t.insert(c);
        }
        t
    }

    fn lookups(b: Bencher, n: u32, hit: bool) {
        let t = table(n);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Keys drawn up front so the timed loop is the lookup alone.
        let keys: Vec<FlowKey> = (0..4096)
            .map(|_| {
                let i = (rng.next() % n as u64) as u32;
                if hit {
                    key(i)
                } else {
                    FlowKey::new(Proto::Udp, key(i).src, Endpoint::new(Ipv4Addr::new(192, 0, 2, 1), 9))
                }
            })
            .collect();
        let mut at = 0usize;
        b.counter(ItemsCount::new(1u32)).bench_local(|| {
            at = (at + 1) & 4095;
            black_box(t.lookup(black_box(&keys[at])))
        });
    }

    #[divan::bench]
    fn lookup_1k_hit(b: Bencher) {
        lookups(b, 1_000, true);
    }

    #[divan::bench]
    fn lookup_1m_hit(b: Bencher) {
        lookups(b, 1_000_000, true);
    }

    #[divan::bench]
    fn lookup_1m_miss(b: Bencher) {
        lookups(b, 1_000_000, false);
    }

    /// A 64-byte UDP packet of a random one of 1 M established flows, through the whole engine.
    #[divan::bench(sample_count = 50)]
    fn engine_udp_out_1m_random(b: Bencher) {
        let mut rig = Rig::new(config());
        let n = 1_000_000;
        assert_eq!(fill_udp_flows(&mut rig, n), n);
        let mut rng = Rng(7);
        let pkts: Vec<Vec<u8>> =
            (0..4096).map(|_| udp_flow_packet((rng.next() % n as u64) as u32, &[0; UDP_PAYLOAD])).collect();
        let mut at = 0usize;
        b.counter(ItemsCount::new(1u32)).bench_local(|| {
            at = (at + 1) & 4095;
            black_box(rig.send(Side::Inside, &pkts[at]))
        });
        black_box(rig.engine.flow_count());
    }

    /// Same, the reply direction.
    #[divan::bench(sample_count = 50)]
    fn engine_udp_in_1m_random(b: Bencher) {
        let mut rig = Rig::new(config());
        let n = 1_000_000;
        assert_eq!(fill_udp_flows(&mut rig, n), n);
        let mut rng = Rng(11);
        let pkts: Vec<Vec<u8>> =
            (0..4096).map(|_| udp_reply_packet((rng.next() % n as u64) as u32, &[0; UDP_PAYLOAD])).collect();
        let mut at = 0usize;
        b.counter(ItemsCount::new(1u32)).bench_local(|| {
            at = (at + 1) & 4095;
            black_box(rig.send(Side::Outside, &pkts[at]))
        });
    }
}
