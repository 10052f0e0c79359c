//! The FTP ALG of RFC 6384 through the engine: an IPv6 client's control connection to an IPv4 server,
//! one test per rule, the bytes each side receives checked (etherparse parses every packet, with its
//! checksums, and each side's stream must stay contiguous in its own sequence space).
//!
//! Owns: these scenarios (the two-sided driver is `nat64_support/ctl.rs`). Must not: reach into the
//! engine's internals beyond its public API.

#[path = "nat64_support/ctl.rs"]
mod nat64_ctl;
#[path = "nat64_support/engine.rs"]
mod nat64_engine_support;

use ftpnat::{Config, Engine, Instant, RefusalReason, Side, Verdict};

use nat64_ctl::{Ctl, End};
use nat64_engine_support::*;

const CPORT: u16 = 50000;

/// A control connection from [`CLIENT6`] to the server through the engine, driven from both ends.
fn open(cfg: Config) -> Ctl {
    let mut e = Engine::new(cfg);
    let mut syn = tcp6(CLIENT6, server6(), CPORT, 21, 100, 0, TcpKind::Syn, b"", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut syn), Verdict::Forward(Side::Outside));
    let public = seen(&syn).sport;
    let mut sa = tcp4(SERVER4, PUBLIC, 21, public, 9000, 101, TcpKind::SynAck, b"", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut sa), Verdict::Forward(Side::Inside));
    let mut ack = tcp6(CLIENT6, server6(), CPORT, 21, 101, 9001, TcpKind::Ack, b"", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut ack), Verdict::Forward(Side::Outside));
    let client = End {
        side: Side::Inside,
        build: Box::new(|seq, ack, data| {
            tcp6(CLIENT6, server6(), CPORT, 21, seq, ack, TcpKind::Ack, data, 64)
        }),
        check: Box::new(|s| {
            assert!(s.v6 && s.dst == CLIENT6.to_string() && s.src == server6().to_string(), "{s:?}")
        }),
    };
    let server = End {
        side: Side::Outside,
        build: Box::new(move |seq, ack, data| {
            tcp4(SERVER4, PUBLIC, 21, public, seq, ack, TcpKind::Ack, data, 60)
        }),
        check: Box::new(|s| assert!(!s.v6 && s.src == PUBLIC.to_string() && s.dport == 21, "{s:?}")),
    };
    let mut c = Ctl { e, client, server, cseq: 101, crcv: 9001, sseq: 9001, srcv: 101 };
    assert_eq!(c.s2c(&[b"220 IPv4 server ready\r\n"]), b"220 IPv4 server ready\r\n");
    c
}

fn ctl() -> Ctl {
    open(config64())
}

fn port_of_port_line(l: &str) -> (String, u16) {
    let n: Vec<u16> =
        l.trim_end().strip_prefix("PORT ").unwrap().split(',').map(|x| x.parse().unwrap()).collect();
    (format!("{}.{}.{}.{}", n[0], n[1], n[2], n[3]), n[4] * 256 + n[5])
}

#[test]
fn epsv_becomes_pasv_and_the_227_a_229_rfc6384_section_6() {
    let mut c = ctl();
    let (srv, cli) = c.exchange("EPSV\r\n", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n");
    assert_eq!(srv, "PASV\r\n");
    assert_eq!(cli, "229 Entering Extended Passive Mode (|||50000|)\r\n");
    // The client's data connection to the port it was given reaches the server's PASV port.
    let mut syn = tcp6(CLIENT6, server6(), 50001, 50000, 1, 0, TcpKind::Syn, b"", 64);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Inside, &mut syn), Verdict::Forward(Side::Outside));
    assert_eq!(seen(&syn).dst, SERVER4.to_string());
    // EPSV 2 is the same; later commands keep flowing with their sequence numbers mapped.
    let (srv, cli) = c.exchange("EPSV 2\r\n", "227 Entering Passive Mode (10,9,9,9,4,1)\r\n");
    assert_eq!(srv, "PASV\r\n");
    assert_eq!(cli, "229 Entering Extended Passive Mode (|||1025|)\r\n", "the 227's address is not carried");
    assert_eq!(c.exchange("QUIT\r\n", "221 Bye\r\n"), ("QUIT\r\n".into(), "221 Bye\r\n".into()));
    assert_eq!((c.e.metrics().alg_nat64_epsv, c.e.metrics().alg_nat64_227), (2, 2));
}

#[test]
fn a_server_refusing_pasv_is_passed_on() {
    let mut c = ctl();
    let (srv, cli) = c.exchange("EPSV\r\n", "500 PASV not understood\r\n");
    assert_eq!((srv.as_str(), cli.as_str()), ("PASV\r\n", "500 PASV not understood\r\n"));
}

#[test]
fn eprt_becomes_port_with_the_mapping_allocated_first_rfc6384_section_7() {
    let mut c = ctl();
    let (srv, cli) = c.exchange("EPRT |2|2001:db8:64::2|40001|\r\n", "200 PORT command successful\r\n");
    let (addr, port) = port_of_port_line(&srv);
    assert_eq!(addr, PUBLIC.to_string());
    assert_eq!(cli, "200 PORT command successful\r\n");
    assert!(
        c.e.pinholes().get(ftpnat::flow::Endpoint::new(PUBLIC, port)).is_some(),
        "the pinhole for the server's connection is open"
    );
    // The server connects from port 20; the client gets it as IPv6 from the server's synthesised address.
    let mut syn = tcp4(SERVER4, PUBLIC, 20, port, 7, 0, TcpKind::Syn, b"", 60);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    let s = seen(&syn);
    assert_eq!(
        (s.src.as_str(), s.dst.as_str(), s.sport, s.dport),
        (server6().to_string().as_str(), CLIENT6.to_string().as_str(), 20, 40001)
    );
    assert_eq!(c.e.metrics().alg_nat64_eprt, 1);
}

#[test]
fn eprt_split_in_every_way_is_rewritten_the_same() {
    let line = b"EPRT |2|2001:db8:64::2|40001|\r\n";
    for cut in 1..line.len() {
        let mut c = ctl();
        let srv = c.c2s(&[&line[..cut], &line[cut..]]);
        let srv = String::from_utf8(srv).unwrap();
        assert!(srv.starts_with("PORT 198,51,100,1,") && srv.ends_with("\r\n"), "cut {cut}: {srv}");
    }
    // Byte by byte, pipelined with EPSV.
    let mut c = ctl();
    let both = b"EPRT |2|2001:db8:64::2|40002|\r\nEPSV\r\n";
    let pieces: Vec<&[u8]> = both.chunks(1).collect();
    let srv = String::from_utf8(c.c2s(&pieces)).unwrap();
    assert!(srv.starts_with("PORT 198,51,100,1,") && srv.ends_with("\r\nPASV\r\n"), "{srv}");
    let cli = c.s2c(&[b"200 PORT ok\r\n227 Entering Passive Mode (203,0,113,5,4,2)\r\n"]);
    assert_eq!(cli, b"200 PORT ok\r\n229 Entering Extended Passive Mode (|||1026|)\r\n");
}

#[test]
fn adversary_eprt_naming_another_ipv6_host_is_answered_501_and_never_reaches_the_server() {
    let mut c = ctl();
    for bad in [
        "EPRT |2|2001:db8:64::3|40001|\r\n",
        "EPRT |2|2001:db8:99::1|40001|\r\n",
        "EPRT |1|203.0.113.99|40001|\r\n",
        "EPRT |2|2001:db8:64::2|99999|\r\n",
        "EPRT |2|2001:db8:64::2|80|\r\n",
    ] {
        let (srv, cli) = c.exchange(bad, "200 NOOP ok\r\n");
        assert_eq!(srv, "NOOP\r\n", "{bad}");
        assert!(cli.starts_with("501 "), "{bad}: {cli}");
    }
    assert_eq!(c.e.pinholes().len(), 0, "no pinhole for any of them");
    assert_eq!(c.e.metrics().refused_of(RefusalReason::ThirdHost), 3, "two other IPv6 hosts and an IPv4 one");
    // The session goes on.
    assert_eq!(c.exchange("NOOP\r\n", "200 ok\r\n"), ("NOOP\r\n".into(), "200 ok\r\n".into()));
}

#[test]
fn epsv_all_and_other_families_are_answered_by_the_gateway() {
    let mut c = ctl();
    let (srv, cli) = c.exchange("EPSV ALL\r\n", "200 NOOP ok\r\n");
    assert_eq!(srv, "NOOP\r\n", "EPSV ALL never reaches the server");
    assert_eq!(cli, "504 Command not implemented for that parameter\r\n");
    let (srv, cli) = c.exchange("EPSV 1\r\n", "200 NOOP ok\r\n");
    assert_eq!((srv.as_str(), &cli[..4]), ("NOOP\r\n", "522 "));
    // A multi-line reply to the NOOP is replaced whole.
    let (srv, cli) = c.exchange("EPSV ALL\r\n", "200-first\r\n more\r\n200 last\r\n");
    assert_eq!(srv, "NOOP\r\n");
    assert_eq!(cli, "504 Command not implemented for that parameter\r\n");
    assert_eq!(c.e.metrics().alg_nat64_answered, 3);
}

#[test]
fn algs_status_enable_disable_rfc6384_section_11() {
    let mut c = ctl();
    let (srv, cli) = c.exchange("ALGS STATUS64\r\n", "200 NOOP ok\r\n");
    assert_eq!(srv, "NOOP\r\n");
    assert!(cli.starts_with("216 EPSVEPRT"), "{cli}");
    let (_, cli) = c.exchange("ALGS DISABLE64\r\n", "200 NOOP ok\r\n");
    assert!(cli.starts_with("216 NONE"), "{cli}");
    // Disabled: EPSV and EPRT pass unchanged.
    let (srv, cli) = c.exchange("EPSV\r\n", "229 Entering Extended Passive Mode (|||3000|)\r\n");
    assert_eq!(
        (srv.as_str(), cli.as_str()),
        ("EPSV\r\n", "229 Entering Extended Passive Mode (|||3000|)\r\n")
    );
    let (srv, _) = c.exchange("EPRT |2|2001:db8:64::2|40001|\r\n", "522 no\r\n");
    assert_eq!(srv, "EPRT |2|2001:db8:64::2|40001|\r\n");
    let (_, cli) = c.exchange("ALGS ENABLE64\r\n", "200 NOOP ok\r\n");
    assert!(cli.starts_with("216 EPSVEPRT"), "{cli}");
    assert_eq!(c.exchange("EPSV\r\n", "227 x (1,2,3,4,5,6)\r\n").0, "PASV\r\n");
    let (_, cli) = c.exchange("ALGS BOGUS\r\n", "200 NOOP ok\r\n");
    assert!(cli.starts_with("501 "), "{cli}");
}

#[test]
fn lprt_and_lpsv_rfc1639() {
    let mut c = ctl();
    let v6: Vec<String> = CLIENT6.octets().iter().map(|b| b.to_string()).collect();
    let lprt = format!("LPRT 6,16,{},2,156,65\r\n", v6.join(","));
    let (srv, _) = c.exchange(&lprt, "200 ok\r\n");
    assert!(srv.starts_with("PORT 198,51,100,1,"), "{srv}");
    let (srv, cli) = c.exchange("LPRT 4,4,203,0,113,9,2,156,65\r\n", "200 NOOP ok\r\n");
    assert_eq!((srv.as_str(), &cli[..4]), ("NOOP\r\n", "521 "));
    let (srv, cli) = c.exchange("LPSV\r\n", "227 Entering Passive Mode (203,0,113,5,4,3)\r\n");
    assert_eq!(srv, "PASV\r\n");
    let s6: Vec<String> = server6().octets().iter().map(|b| b.to_string()).collect();
    assert_eq!(cli, format!("228 Entering Long Passive Mode (6,16,{},2,4,3)\r\n", s6.join(",")));
}

#[test]
fn a_retransmitted_epsv_is_rebuilt_not_read_twice() {
    let mut c = ctl();
    let at = c.cseq;
    assert_eq!(c.c2s(&[b"EPSV\r\n"]), b"PASV\r\n");
    // The same segment again (the client did not see the ACK).
    let mut p = tcp6(CLIENT6, server6(), CPORT, 21, at, c.crcv, TcpKind::Ack, b"EPSV\r\n", 64);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Inside, &mut p), Verdict::Forward(Side::Outside));
    let s = seen(&p);
    assert_eq!(
        (s.payload.as_slice(), s.seq),
        (&b"PASV\r\n"[..], c.srcv - 6),
        "rebuilt byte-exact at the same place"
    );
    assert_eq!(
        c.s2c(&[b"227 P (203,0,113,5,4,4)\r\n"]),
        b"229 Entering Extended Passive Mode (|||1028|)\r\n"
    );
    assert_eq!(c.e.metrics().alg_nat64_227, 1, "one PASV pending, one 229");
}

#[test]
fn without_the_alg_eprt_goes_to_the_server_as_sent() {
    let mut cfg = config64();
    cfg.ftp.enabled = false;
    let mut c = open(cfg);
    let (srv, cli) =
        c.exchange("EPRT |2|2001:db8:64::2|40001|\r\n", "522 Network protocol not supported\r\n");
    assert_eq!(srv, "EPRT |2|2001:db8:64::2|40001|\r\n");
    assert!(cli.starts_with("522"));
    assert_eq!(c.e.pinholes().len(), 0);
}

#[test]
fn the_227_and_a_substituted_reply_split_in_every_way_come_out_the_same() {
    let reply = b"227 Entering Passive Mode (203,0,113,5,195,80).\r\n";
    for cut in 1..reply.len() {
        let mut c = ctl();
        assert_eq!(c.c2s(&[b"EPSV\r\n"]), b"PASV\r\n");
        let got = c.s2c(&[&reply[..cut], &reply[cut..]]);
        assert_eq!(got, b"229 Entering Extended Passive Mode (|||50000|)\r\n", "cut {cut}");
        // The stream goes on in step.
        assert_eq!(
            c.exchange("NOOP\r\n", "200 ok\r\n"),
            ("NOOP\r\n".into(), "200 ok\r\n".into()),
            "cut {cut}"
        );
    }
    let noop_reply = b"200-NOOP\r\n200 ok\r\n";
    for cut in 1..noop_reply.len() {
        let mut c = ctl();
        assert_eq!(c.c2s(&[b"EPSV ALL\r\n"]), b"NOOP\r\n");
        let got = c.s2c(&[&noop_reply[..cut], &noop_reply[cut..]]);
        assert_eq!(got, b"504 Command not implemented for that parameter\r\n", "cut {cut}");
    }
}

/// The engine saved and restored as `ftpnat run --state-file` does at a restart (issue 15).
fn restart(c: &mut Ctl) {
    let state = c.e.save_state();
    let (e, refused) = Engine::restore(config64(), &state).expect("the engine's own state is taken back");
    assert!(refused.is_empty());
    c.e = e;
}

/// Issue 15's hard case in RFC 6384 form: the EPRT sent on as a longer PORT (RFC 6384 §7) is not yet
/// acknowledged when the gateway restarts; the client retransmits it, and the restarted engine rebuilds
/// the same PORT, naming the same public port, at the same place in the server's sequence space. The
/// pinhole, the IPv6 host's stand-in and the sequence delta all came through: the server's data
/// connection reaches the client, and the next command and reply keep their numbers mapped.
#[test]
fn a_restart_between_an_eprt_and_its_acknowledgement_changes_nothing() {
    let mut c = ctl();
    let at = c.cseq;
    let eprt = b"EPRT |2|2001:db8:64::2|40001|\r\n";
    let first = String::from_utf8(c.c2s(&[eprt])).unwrap();
    restart(&mut c);
    let mut again = tcp6(CLIENT6, server6(), CPORT, 21, at, c.crcv, TcpKind::Ack, eprt, 64);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Inside, &mut again), Verdict::Forward(Side::Outside));
    let s = seen(&again);
    assert_eq!(
        (String::from_utf8(s.payload.clone()).unwrap(), s.seq),
        (first.clone(), c.srcv - first.len() as u32),
        "rebuilt byte-exact at the same place after the restart"
    );
    let (_, port) = port_of_port_line(&first);
    assert_eq!(c.s2c(&[b"200 PORT command successful\r\n"]), b"200 PORT command successful\r\n");
    restart(&mut c);
    let mut syn = tcp4(SERVER4, PUBLIC, 20, port, 7, 0, TcpKind::Syn, b"", 60);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    assert_eq!(seen(&syn).dst, CLIENT6.to_string(), "the pinhole outlived the restart");
    restart(&mut c);
    let (srv, cli) = c.exchange("EPSV\r\n", "227 Entering Passive Mode (203,0,113,5,195,80).\r\n");
    assert_eq!(
        (srv.as_str(), cli.as_str()),
        ("PASV\r\n", "229 Entering Extended Passive Mode (|||50000|)\r\n")
    );
    assert_eq!(c.exchange("QUIT\r\n", "221 Bye\r\n"), ("QUIT\r\n".into(), "221 Bye\r\n".into()));
    assert_eq!(c.e.metrics().alg_nat64_eprt, 1, "the retransmission was not read as a second EPRT");
}
