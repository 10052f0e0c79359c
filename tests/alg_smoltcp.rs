//! FTP through the engine with two smoltcp TCP/IP stacks as real peers (RFC 959 PORT/PASV, RFC 2428
//! EPRT/EPSV), in both topologies, on a virtual clock. The scripted server refuses a PORT/EPRT whose
//! address differs from the control connection's peer, like vsftpd: a strict check of the ALG.

use ftpnat_testkit::harness as common;

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;

use common::fault::{FaultRule, Filter, Stage, TapAction};
use common::ftp::{
    parse_227, parse_eprt_arg, parse_host_port, split_lines_starting, ClientConfig, ServerConfig,
};
use common::ftp::{FtpClient, FtpServer, Mode, Transfer, XferDir};
use common::net::{AppId, Net, INSIDE_HOST, OUTSIDE_HOST, PUBLIC_IP};
use ftpnat::{Config, Engine, RefusalReason, Side};

const MINUTE: u64 = 60_000_000;

fn config() -> Config {
    Config::new(vec!["10.0.0.0/24".parse().unwrap()], PUBLIC_IP)
}

fn server_inside_config() -> Config {
    let mut c = config();
    c.forwards.push("tcp:21=10.0.0.2:21".parse().unwrap());
    c
}

fn all_modes(server: Ipv4Addr, size: usize) -> ClientConfig {
    let mut c = ClientConfig::new(server, 21);
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        c = c.transfer(Transfer::new(mode, XferDir::Retr, &format!("{}-{i}.bin", size + i), size + i));
        c = c.transfer(Transfer::new(mode, XferDir::Stor, &format!("up-{i}.bin"), size + 7 + i));
    }
    c
}

/// The address an announcement line carries (None for 229, which carries only a port).
fn announced(line: &[u8]) -> Option<(Option<Ipv4Addr>, u16)> {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    let upper = s.to_ascii_uppercase();
    if let Some(arg) = upper.strip_prefix("PORT ") {
        return parse_host_port(arg).map(|(a, p)| (Some(a), p));
    }
    if upper.starts_with("EPRT ") {
        return parse_eprt_arg(&s[5..]).map(|(a, p)| (Some(a), p));
    }
    if upper.starts_with("227 ") {
        return parse_227(s).map(|(a, p)| (Some(a), p));
    }
    if upper.starts_with("229 ") {
        return common::ftp::parse_229(s).map(|p| (None, p));
    }
    None
}

/// The receiver got the sender's lines, except that announcement lines name `public` (or, for 229,
/// only the port may differ) and keep every byte outside their address/port.
fn assert_substituted(sent: &[Vec<u8>], received: &[Vec<u8>], public: Ipv4Addr) -> usize {
    assert_eq!(sent.len(), received.len(), "line count differs:\nsent {sent:?}\nreceived {received:?}");
    let mut rewritten = 0;
    for (a, b) in sent.iter().zip(received) {
        if a == b {
            continue;
        }
        let (Some(_), Some((addr, _))) = (announced(a), announced(b)) else {
            panic!(
                "a non-announcement line changed: {:?} -> {:?}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        };
        if let Some(addr) = addr {
            assert_eq!(addr, public, "rewritten line names {addr}");
        }
        assert_eq!(&a[..4], &b[..4], "verb/code kept");
        rewritten += 1;
    }
    rewritten
}

fn run_session(net: &mut Net, client: AppId<FtpClient>, server: AppId<FtpServer>) {
    net.run(|n| n.app(client).finished() && n.app(server).finished(), 5 * MINUTE);
    let c = net.app(client);
    assert!(
        c.all_ok(),
        "error {:?}\ntransfers {:#?}\nserver refused {:?}",
        c.error,
        c.transfers,
        net.app(server).refused
    );
}

#[test]
fn client_inside_all_four_modes_through_snat() {
    let mut net = Net::new(Box::new(Engine::new(config())));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(INSIDE_HOST, all_modes(OUTSIDE_HOST, 30_000));
    run_session(&mut net, client, server);
    let (c, s) = (net.app(client), net.app(server));
    // PORT/EPRT were rewritten to the public address; the server's replies reached the client unchanged.
    assert_eq!(assert_substituted(&c.sent_lines, &s.received_lines, PUBLIC_IP), 4);
    assert_eq!(s.sent_stream, c.received_stream);
    assert!(s.data_peers.iter().all(|p| p.0 == PUBLIC_IP), "server saw {:?}", s.data_peers);
    assert!(s.refused.is_empty());
    let m = net.middlebox::<Engine>().metrics();
    assert_eq!(
        (m.alg_rewrites_port, m.alg_rewrites_eprt, m.alg_rewrites_227, m.alg_rewrites_229),
        (2, 2, 0, 0)
    );
    assert_eq!((m.pinholes_created, m.pinholes_used), (4, 4));
    assert_eq!(m.total_drops(), 0, "{:?}", m.drops);
}

#[test]
fn server_inside_all_four_modes_through_a_port_forward() {
    let mut net = Net::new(Box::new(Engine::new(server_inside_config())));
    let server = net.ftp_server(INSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(OUTSIDE_HOST, all_modes(PUBLIC_IP, 25_000));
    // The outside client's PORT names its own real address, which the server also sees as its peer
    // (DNAT keeps the source): nothing to rewrite, the server connects out through SNAT.
    run_session(&mut net, client, server);
    let (c, s) = (net.app(client), net.app(server));
    // Both 227s change (their address); a 229 names only a port, and the gateway keeps that port when
    // it is free, so those lines may pass unchanged.
    assert!(assert_substituted(&s.sent_lines, &c.received_lines, PUBLIC_IP) >= 2);
    assert_eq!(c.sent_stream, s.received_stream);
    let m = net.middlebox::<Engine>().metrics();
    assert_eq!((m.alg_rewrites_227, m.alg_rewrites_229, m.alg_rewrites_port), (2, 2, 0));
    // Passive data connections reached the client through the public address.
    for t in c.transfers.iter().filter(|t| !t.mode.is_active()) {
        assert_eq!(t.data_peer.map(|p| p.0), Some(PUBLIC_IP.into()));
    }
}

#[test]
fn rewrites_that_lengthen_and_that_shorten_the_line_keep_sequence_numbers_consistent() {
    // Lengthen: 10,0,0,2 -> 198,51,100,1 with a one-port range that cannot compensate.
    let mut c = config();
    c.port_range = 1024..=1024;
    let mut net = Net::new(Box::new(Engine::new(c)));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let mut cc = all_modes(OUTSIDE_HOST, 9_000);
    cc.data_port_base = 1100;
    let client = net.ftp_client(INSIDE_HOST, cc);
    run_session(&mut net, client, server);
    let m = net.middlebox::<Engine>().metrics();
    assert!(m.alg_rewrites_zero_delta < m.alg_rewrites(), "some rewrite changed the length");
    let (c, s) = (net.app(client), net.app(server));
    assert!(s.received_lines.iter().zip(&c.sent_lines).any(|(r, o)| r.len() > o.len()));

    // Shorten: a public address with shorter text than the inside one.
    let short = Ipv4Addr::new(9, 9, 9, 9);
    let mut c = Config::new(vec!["10.0.0.0/24".parse().unwrap()], short);
    c.port_range = 1024..=1024;
    let mut net = Net::new(Box::new(Engine::new(c)));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let mut cc = ClientConfig::new(OUTSIDE_HOST, 21);
    cc.data_port_base = 1100;
    for i in 0..3 {
        cc = cc.transfer(Transfer::new(Mode::Port, XferDir::Retr, &format!("{}.bin", 5000 + i), 5000 + i));
    }
    let client = net.ftp_client(INSIDE_HOST, cc);
    run_session(&mut net, client, server);
    let (c, s) = (net.app(client), net.app(server));
    assert_eq!(assert_substituted(&c.sent_lines, &s.received_lines, short), 3);
    assert!(s.received_lines.iter().zip(&c.sent_lines).any(|(r, o)| r.len() < o.len()));
}

#[test]
fn dropped_and_retransmitted_rewritten_segment_gives_the_same_bytes_and_one_pinhole() {
    let mut net = Net::new(Box::new(Engine::new(config())));
    let dropped = Rc::new(RefCell::new(Vec::<Vec<u8>>::new()));
    let seen = dropped.clone();
    // Drop the first rewritten PORT segment on its way to the server (after the gateway), once.
    net.faults.tap = Some(Box::new(move |info, pkt| {
        let text = String::from_utf8_lossy(pkt);
        if info.stage == Stage::Post
            && info.toward == Side::Outside
            && text.contains("PORT ")
            && seen.borrow().is_empty()
        {
            seen.borrow_mut().push(pkt.to_vec());
            return TapAction::Drop;
        }
        TapAction::Pass
    }));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(
        INSIDE_HOST,
        ClientConfig::new(OUTSIDE_HOST, 21).transfer(Transfer::new(
            Mode::Port,
            XferDir::Retr,
            "20000.bin",
            20_000,
        )),
    );
    run_session(&mut net, client, server);
    assert_eq!(dropped.borrow().len(), 1);
    let first = dropped.borrow()[0].clone();
    let s = net.app(server);
    let port_line = s.received_lines.iter().find(|l| l.starts_with(b"PORT ")).unwrap().clone();
    // The retransmission carried exactly the bytes of the dropped first transmission.
    let first_payload = &first[40..];
    assert!(first_payload.windows(port_line.len()).any(|w| w == &port_line[..]));
    let m = net.middlebox::<Engine>().metrics();
    assert_eq!(m.pinholes_created, 1, "retransmission must not open a second pinhole");
    assert_eq!(m.pinholes_used, 1);
    assert!(m.alg_retransmits_rebuilt >= 1);
}

#[test]
fn split_port_line_and_nagle_sender_waiting_for_ack() {
    for nagle in [false, true] {
        for cut in [1usize, 5, 8, 12, 20] {
            let mut net = Net::new(Box::new(Engine::new(config())));
            let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
            let cc = ClientConfig::new(OUTSIDE_HOST, 21)
                .transfer(Transfer::new(Mode::Port, XferDir::Retr, "3000.bin", 3000))
                .transfer(Transfer::new(Mode::Eprt, XferDir::Stor, "x.bin", 3000))
                .split(split_lines_starting(b"", vec![cut]))
                .nagle(nagle);
            let client = net.ftp_client(INSIDE_HOST, cc);
            run_session(&mut net, client, server);
            let (c, s) = (net.app(client), net.app(server));
            assert_eq!(
                assert_substituted(&c.sent_lines, &s.received_lines, PUBLIC_IP),
                2,
                "cut {cut} nagle {nagle}"
            );
        }
    }
}

#[test]
fn pipelined_port_commands_in_one_segment() {
    let mut net = Net::new(Box::new(Engine::new(config())));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let mut cc = ClientConfig::new(OUTSIDE_HOST, 21).pipeline(true);
    for i in 0..4 {
        let mode = if i % 2 == 0 { Mode::Port } else { Mode::Eprt };
        cc = cc.transfer(Transfer::new(mode, XferDir::Retr, &format!("{}.bin", 1000 + i), 1000 + i));
    }
    let client = net.ftp_client(INSIDE_HOST, cc);
    run_session(&mut net, client, server);
    let (c, s) = (net.app(client), net.app(server));
    assert_eq!(assert_substituted(&c.sent_lines, &s.received_lines, PUBLIC_IP), 4);
}

#[test]
fn lossy_duplicating_reordering_control_connection_still_works() {
    for seed in 1..=6u64 {
        let mut net = Net::with_seed(Box::new(Engine::new(config())), seed);
        net.faults.rules.push(FaultRule::pre(Filter::TcpPort(21), 0.15, 0.15, 0.15));
        net.faults.rules.push(FaultRule::post(Filter::TcpPort(21), 0.10, 0.10, 0.10));
        let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
        let client = net.ftp_client(INSIDE_HOST, all_modes(OUTSIDE_HOST, 4_000));
        run_session(&mut net, client, server);
        let (c, s) = (net.app(client), net.app(server));
        assert_eq!(assert_substituted(&c.sent_lines, &s.received_lines, PUBLIC_IP), 4, "seed {seed}");
        let m = net.middlebox::<Engine>().metrics();
        assert_eq!(m.pinholes_created, 4, "seed {seed}: one pinhole per announcement");
    }
}

#[test]
fn without_the_alg_active_mode_fails() {
    let mut c = config();
    c.ftp.enabled = false;
    let mut net = Net::new(Box::new(Engine::new(c)));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(
        INSIDE_HOST,
        ClientConfig::new(OUTSIDE_HOST, 21).transfer(Transfer::new(
            Mode::Port,
            XferDir::Retr,
            "100.bin",
            100,
        )),
    );
    net.run(|n| n.app(client).finished(), 5 * MINUTE);
    assert!(!net.app(client).all_ok());
    assert!(!net.app(server).refused.is_empty(), "the strict server refused the inside address");
}

#[test]
fn bounce_and_low_port_are_refused_and_left_byte_identical() {
    let mut net = Net::new(Box::new(Engine::new(config())));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig { strict_port: true, ..Default::default() });
    let cc = ClientConfig::new(OUTSIDE_HOST, 21)
        .command(b"PORT 198,51,100,3,31,144\r\n")
        .command(b"PORT 10,0,0,3,31,144\r\n")
        .command(b"PORT 10,0,0,2,0,80\r\n")
        .command(b"EPRT |1|198.51.100.3|8080|\r\n")
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "100.bin", 100));
    let client = net.ftp_client(INSIDE_HOST, cc);
    net.run(|n| n.app(client).finished(), 5 * MINUTE);
    let (c, s) = (net.app(client), net.app(server));
    for bad in [
        &b"PORT 198,51,100,3,31,144\r\n"[..],
        b"PORT 10,0,0,3,31,144\r\n",
        b"PORT 10,0,0,2,0,80\r\n",
        b"EPRT |1|198.51.100.3|8080|\r\n",
    ] {
        assert!(
            s.received_lines.iter().any(|l| l == bad),
            "{:?} must arrive byte-identical",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(c.transfers.iter().all(|t| t.ok), "the good transfer after the refusals still works");
    let m = net.middlebox::<Engine>().metrics();
    assert_eq!(m.refused_of(RefusalReason::ThirdHost), 3);
    assert_eq!(m.refused_of(RefusalReason::LowPort), 1);
    assert_eq!(m.pinholes_created, 1);
}

#[test]
fn zero_address_in_port_means_the_control_connection_address() {
    let mut net = Net::new(Box::new(Engine::new(config())));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig { strict_port: false, ..Default::default() });
    let cc = ClientConfig::new(OUTSIDE_HOST, 21)
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "700.bin", 700).announce(Ipv4Addr::UNSPECIFIED));
    let client = net.ftp_client(INSIDE_HOST, cc);
    run_session(&mut net, client, server);
    let s = net.app(server);
    let line = s.received_lines.iter().find(|l| l.starts_with(b"PORT")).unwrap();
    assert!(line.starts_with(b"PORT 198,51,100,1,"), "{}", String::from_utf8_lossy(line));
}
