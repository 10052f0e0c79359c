//! Cross-checks `ftpnat::wire` against an independent parser (etherparse): packets built by etherparse,
//! edited through our checksum-maintaining setters, must still carry the checksums etherparse computes.
//!
//! Owns: nothing but these tests. Must not: use `wire` to compute the expected values.

use std::net::Ipv4Addr;

use etherparse::{
    Icmpv4Slice, Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, TcpOptionElement, UdpHeaderSlice,
};
use ftpnat::wire::{icmp, Ipv4Packet, SeqNum, TcpFlags, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use proptest::prelude::*;

/// Asserts with etherparse that the IPv4 header checksum and the transport checksum are right; returns
/// etherparse's view of (src, dst, protocol).
fn check(bytes: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8) {
    let ip = Ipv4HeaderSlice::from_slice(bytes).expect("etherparse parses the IPv4 header");
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum(), "IPv4 header checksum");
    let hl = ip.slice().len();
    let payload = &bytes[hl..ip.total_len() as usize];
    let proto = ip.protocol().0;
    let (src, dst) = (ip.source(), ip.destination());
    match proto {
        IPPROTO_TCP => {
            let tcp = TcpHeaderSlice::from_slice(payload).unwrap();
            let data = &payload[tcp.slice().len()..];
            assert_eq!(tcp.checksum(), tcp.calc_checksum_ipv4(&ip, data).unwrap(), "TCP checksum");
        }
        IPPROTO_UDP => {
            let udp = UdpHeaderSlice::from_slice(payload).unwrap();
            if udp.checksum() != 0 {
                let data = &payload[8..udp.length() as usize];
                let want = udp.to_header().calc_checksum_ipv4_raw(src, dst, data).unwrap();
                assert_eq!(udp.checksum(), want, "UDP checksum");
            }
        }
        IPPROTO_ICMP => {
            let s = Icmpv4Slice::from_slice(payload).unwrap();
            let mut h = s.header();
            h.update_checksum(s.payload());
            assert_eq!(s.checksum(), h.checksum, "ICMP checksum");
        }
        _ => {}
    }
    (ip.source_addr(), ip.destination_addr(), proto)
}

fn tcp_packet(opts: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4([192, 168, 1, 10], [93, 184, 216, 34], 64)
        .tcp(50000, 21, 0x1234_5678, 64240)
        .ack(0x0bad_cafe)
        .options(opts)
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp_packet(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 2], [8, 8, 8, 8], 64).udp(53000, 53).write(&mut v, payload).unwrap();
    v
}

fn echo_packet(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 2], [1, 1, 1, 1], 64)
        .icmpv4_echo_request(0x1234, 7)
        .write(&mut v, payload)
        .unwrap();
    v
}

#[test]
fn fixtures_agree_with_etherparse() {
    let syn = tcp_packet(
        &[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::WindowScale(7),
        ],
        &[],
    );
    check(&syn);
    let p = Ipv4Packet::new_checked(&syn[..]).unwrap();
    assert!(p.verify_header_checksum() && p.verify_transport_checksum());
    let t = p.tcp().unwrap();
    let e = TcpHeaderSlice::from_slice(p.payload()).unwrap();
    assert_eq!((t.src_port(), t.dst_port()), (e.source_port(), e.destination_port()));
    assert_eq!(t.seq_number(), SeqNum::new(e.sequence_number()));
    assert_eq!(t.ack_number(), SeqNum::new(e.acknowledgment_number()));
    assert_eq!(t.header_len(), e.slice().len());
    assert_eq!(t.mss_option(), Some(1460));
    assert_eq!(t.checksum(), e.checksum());

    let udp = udp_packet(b"hello");
    check(&udp);
    assert!(Ipv4Packet::new_checked(&udp[..]).unwrap().verify_transport_checksum());

    let echo = echo_packet(b"abcdefgh");
    check(&echo);
    let p = Ipv4Packet::new_checked(&echo[..]).unwrap();
    assert!(p.verify_transport_checksum());
    assert_eq!(p.icmp().unwrap().echo_ident(), 0x1234);

    let err = icmp::build_error(Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(10, 0, 0, 2), 3, 3, 0, &udp);
    check(&err);
    let p = Ipv4Packet::new_checked(&err[..]).unwrap();
    let q = icmp::parse_quoted(p.icmp().unwrap().payload()).unwrap();
    assert_eq!((q.src_port, q.dst_port), (Some(53000), Some(53)));
}

#[test]
fn fragments_parse_with_etherparse() {
    let big = udp_packet(&[0x42; 3000]);
    let frags = ftpnat::wire::ipv4::fragment(&big, 1500).unwrap();
    assert_eq!(frags.len(), 3);
    let mut data = Vec::new();
    for f in &frags {
        let ip = Ipv4HeaderSlice::from_slice(f).unwrap();
        assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
        assert!(f.len() <= 1500);
        assert_eq!(ip.fragments_offset().byte_offset() as usize, data.len());
        data.extend_from_slice(&f[20..]);
    }
    assert_eq!(&data[..], &big[20..]);
}

/// A TCP packet with an MSS option (value returned alongside) and maybe a SACK option.
fn arb_tcp() -> impl Strategy<Value = (Vec<u8>, u16)> {
    (proptest::collection::vec(any::<u8>(), 0..100), any::<u16>(), any::<[u32; 4]>(), any::<bool>()).prop_map(
        |(payload, mss, s, sack)| {
            let mut opts = vec![TcpOptionElement::MaximumSegmentSize(mss)];
            if sack {
                opts.push(TcpOptionElement::Noop);
                opts.push(TcpOptionElement::SelectiveAcknowledgement(
                    (s[0], s[1]),
                    [Some((s[2], s[3])), None, None],
                ));
            }
            (tcp_packet(&opts, &payload), mss)
        },
    )
}

proptest! {
    #[test]
    fn tcp_setters_keep_etherparse_checksums(
        pkt in arb_tcp(),
        src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
        seq in any::<u32>(), ack in any::<u32>(), fl in any::<u8>(), win in any::<u16>(), urg in any::<u16>(),
        mss in any::<u16>(), delta in any::<i32>(), ttl in any::<u8>(), id in any::<u16>(),
    ) {
        let (mut b, orig_mss) = pkt;
        check(&b);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::from(src));
        p.set_dst_addr(Ipv4Addr::from(dst));
        p.set_ttl(ttl);
        p.set_ident(id);
        {
            let mut t = p.tcp_mut().unwrap();
            t.set_src_port(sp);
            t.set_dst_port(dp);
            t.set_seq_number(SeqNum::new(seq));
            t.set_ack_number(SeqNum::new(ack));
            t.set_flags(TcpFlags::from_byte(fl));
            t.set_window(win);
            t.set_urgent_ptr(urg);
            t.clamp_mss(mss);
            t.map_sack_blocks(|x| x.add_signed(delta as i64));
        }
        let (s, d, proto) = check(&b);
        prop_assert_eq!((s, d, proto), (Ipv4Addr::from(src), Ipv4Addr::from(dst), IPPROTO_TCP));
        let ip = Ipv4HeaderSlice::from_slice(&b).unwrap();
        prop_assert_eq!((ip.ttl(), ip.identification()), (ttl, id));
        let tcp = TcpHeaderSlice::from_slice(&b[20..]).unwrap();
        prop_assert_eq!((tcp.source_port(), tcp.destination_port()), (sp, dp));
        prop_assert_eq!((tcp.sequence_number(), tcp.acknowledgment_number()), (seq, ack));
        let got = tcp.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        });
        prop_assert_eq!(got, Some(orig_mss.min(mss)));
        let ours: Vec<_> = Ipv4Packet::new_checked(&b[..]).unwrap().tcp().unwrap().sack_blocks().collect();
        let theirs: Vec<_> = tcp
            .options_iterator()
            .filter_map(|o| match o {
                Ok(TcpOptionElement::SelectiveAcknowledgement(first, rest)) => Some(
                    std::iter::once(first).chain(rest.into_iter().flatten()).collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .map(|(l, r)| (SeqNum::new(l), SeqNum::new(r)))
            .collect();
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn udp_setters_keep_etherparse_checksums(
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        zero in any::<bool>(), src in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
    ) {
        let mut b = udp_packet(&payload);
        if zero {
            b[26..28].fill(0);
        }
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::from(src));
        let mut u = p.udp_mut().unwrap();
        u.set_src_port(sp);
        u.set_dst_port(dp);
        prop_assert_eq!(u.checksum() == 0, zero, "UDP checksum 0 stays 0 and only 0 does");
        check(&b);
    }

    #[test]
    fn icmp_error_quote_edits_keep_etherparse_checksums(
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        addr in any::<u32>(), port in any::<u16>(), outer in any::<u32>(),
    ) {
        let orig = udp_packet(&payload);
        let mut e = icmp::build_error(Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(203, 0, 113, 5), 3, 3, 0, &orig);
        let mut p = Ipv4Packet::new_checked(&mut e[..]).unwrap();
        p.icmp_mut().unwrap().edit_payload(|q| icmp::quoted_set_src(q, Ipv4Addr::from(addr), Some(port)));
        p.set_dst_addr(Ipv4Addr::from(outer));
        check(&e);
        // The quote is the whole datagram here, so etherparse can check it as a packet of its own.
        check(&e[28..]);
        let q = icmp::parse_quoted(&e[28..]).unwrap();
        prop_assert_eq!((q.src, q.src_port), (Ipv4Addr::from(addr), Some(port)));
    }

    #[test]
    fn echo_setters_keep_etherparse_checksums(payload in proptest::collection::vec(any::<u8>(), 0..64), id in any::<u16>(), a in any::<u32>()) {
        let mut b = echo_packet(&payload);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::from(a));
        p.icmp_mut().unwrap().set_echo_ident(id);
        check(&b);
    }
}
