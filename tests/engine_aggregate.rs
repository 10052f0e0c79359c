//! TCP aggregates (segmentation offload) through the engine: translated whole exactly as each of their
//! segments would be, or handed back untouched when something about them is per segment.

mod engine_support;
use engine_support::*;
use ftpnat::{Side, Verdict};

const SEG: usize = 1448;

/// An established outbound TCP connection 10.0.0.2:40000 -> REMOTE:port.
fn established(r: &mut Rig, port: u16) {
    r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, port, 1, 0, SYN, b""));
    r.pass(Side::Outside, tcp(REMOTE, port, PUBLIC, 40000, 500, 2, SYNACK, b""));
    r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, port, 2, 501, ACK, b""));
}

fn aggregate(r: &mut Rig, from: Side, pkt: &mut Vec<u8>, seg: usize) -> Option<Verdict> {
    let segs = (pkt.len() - 40).div_ceil(seg) as u64;
    r.engine.handle_aggregate(r.now, from, pkt, seg, segs)
}

#[test]
fn an_established_flow_aggregate_is_translated_whole_and_counted_per_segment() {
    let mut r = Rig::new(config());
    established(&mut r, 80);
    let before = r.engine.metrics().packets_in;
    let payload = vec![7u8; 20 * SEG + 100];
    let mut p = tcp(LAN_HOST, 40000, REMOTE, 80, 2, 501, ACK, &payload);
    assert!(p.len() > 1500, "larger than the MTU on purpose");
    assert_eq!(aggregate(&mut r, Side::Inside, &mut p, SEG), Some(Verdict::Forward(Side::Outside)));
    let s = check(&p);
    assert_eq!((s.src, s.sport, s.dst, s.dport, s.ttl), (PUBLIC, 40000, REMOTE, 80, 63));
    assert_eq!(r.engine.metrics().packets_in[0] - before[0], 21, "21 segments on the wire");
    // The answering direction too.
    let mut back = tcp(REMOTE, 80, PUBLIC, 40000, 501, 2 + payload.len() as u32, ACK, &payload);
    assert_eq!(aggregate(&mut r, Side::Outside, &mut back, SEG), Some(Verdict::Forward(Side::Inside)));
    let s = check(&back);
    assert_eq!((s.dst, s.dport), (LAN_HOST, 40000));
}

#[test]
fn per_segment_cases_are_handed_back_untouched() {
    let mut r = Rig::new(config());
    let payload = vec![1u8; 4 * SEG];
    // No connection yet: creating one is per packet.
    let mut p = tcp(LAN_HOST, 40000, REMOTE, 80, 2, 501, ACK, &payload);
    let orig = p.clone();
    assert_eq!(aggregate(&mut r, Side::Inside, &mut p, SEG), None);
    assert_eq!(p, orig);
    assert_eq!(r.engine.flow_count(), 0);
    established(&mut r, 80);
    let counted = r.engine.metrics().packets_in;
    // A segment size the egress MTU (1500) cannot carry: the frag-needed answer is per segment.
    assert_eq!(aggregate(&mut r, Side::Inside, &mut p, 1461), None);
    // FIN on the last segment: state tracking is per segment.
    let mut fin = tcp(LAN_HOST, 40000, REMOTE, 80, 2, 501, Flags { fin: true, ..ACK }, &payload);
    assert_eq!(aggregate(&mut r, Side::Inside, &mut fin, SEG), None);
    // A spoofed source.
    let mut spoof = tcp(REMOTE2, 40000, REMOTE, 80, 2, 501, ACK, &payload);
    assert_eq!(aggregate(&mut r, Side::Inside, &mut spoof, SEG), None);
    assert_eq!(p, orig, "nothing changed");
    assert_eq!(r.engine.metrics().packets_in, counted, "nothing counted");
}

#[test]
fn ftp_control_connections_are_split_for_the_alg() {
    let mut r = Rig::new(config());
    established(&mut r, 21);
    let mut p = tcp(LAN_HOST, 40000, REMOTE, 21, 2, 501, ACK, &b"NOOP\r\n".repeat(600));
    let orig = p.clone();
    assert_eq!(aggregate(&mut r, Side::Inside, &mut p, 536), None, "the ALG frames lines per segment");
    assert_eq!(p, orig);
    // Each segment then goes the ordinary way.
    let (v, _) = r.send(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 21, 2, 501, ACK, b"NOOP\r\n"));
    assert_eq!(v, Verdict::Forward(Side::Outside));
}

#[test]
fn forward_only_routes_aggregates_whole() {
    let mut c = config();
    c.translate = false;
    let mut r = Rig::new(c);
    let mut p = tcp(LAN_HOST, 40000, REMOTE, 80, 2, 501, ACK, &vec![0u8; 10 * SEG]);
    assert_eq!(aggregate(&mut r, Side::Inside, &mut p, SEG), Some(Verdict::Forward(Side::Outside)));
    let s = check(&p);
    assert_eq!((s.src, s.ttl), (LAN_HOST, 63));
}
