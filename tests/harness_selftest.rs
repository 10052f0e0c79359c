//! Self-tests of the in-memory harness (`ftpnat_testkit::harness`), through the pass-through [`Router`]: no NAT, so
//! each side's transcript must equal the other side's byte for byte.
//!
//! Owns: evidence that the harness itself is sound before engine tests rely on it. Must not: test the
//! engine.

use ftpnat_testkit::harness as common;

use std::cell::RefCell;
use std::rc::Rc;

use common::fault::{FaultRule, Filter, Stage, TapAction};
use common::ftp::{file_bytes, split_lines_starting, ClientConfig, FtpClient, FtpServer, ServerConfig};
use common::ftp::{Mode, Transfer, XferDir};
use common::net::{AppId, Net, RunOutcome, INSIDE_HOST, INSIDE_HOST2, OUTSIDE_HOST, THIRD_HOST};
use common::{pkt, Middlebox, Router};
use ftpnat::Side;

const MINUTE: u64 = 60_000_000;

fn all_modes(size: usize) -> ClientConfig {
    let mut c = ClientConfig::new(OUTSIDE_HOST, 21);
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        c = c.transfer(Transfer::new(mode, XferDir::Retr, &format!("{}-{i}.bin", size + i), size + i));
        c = c.transfer(Transfer::new(mode, XferDir::Stor, &format!("up-{i}.bin"), size + 100 + i));
    }
    c
}

/// The peers saw exactly what the other sent, and every transfer's bytes are right on both ends.
fn assert_clean_session(net: &Net, client: AppId<FtpClient>, server: AppId<FtpServer>) {
    let (c, s) = (net.app(client), net.app(server));
    assert!(c.all_ok(), "error {:?}, transfers {:#?}", c.error, c.transfers);
    assert!(s.finished(), "server did not see the session end");
    assert_eq!(c.sent_stream, s.received_stream, "client→server control stream altered");
    assert_eq!(s.sent_stream, c.received_stream, "server→client control stream altered");
    assert_eq!(c.sent_lines, s.received_lines);
    assert_eq!(s.sent_lines, c.received_lines);
    let stors: Vec<_> = c.transfers.iter().filter(|t| t.dir == XferDir::Stor).collect();
    assert_eq!(s.stored.len(), stors.len());
    for t in stors {
        let size = t.bytes;
        assert_eq!(s.stored.get(&t.name), Some(&file_bytes(&t.name, size)), "stored {}", t.name);
    }
    assert_eq!(net.stats.unknown_dst, 0);
}

#[test]
fn full_session_all_modes_retr_and_stor() {
    let mut net = Net::new(Box::new(Router::default()));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(INSIDE_HOST, all_modes(20_000));
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);

    let (c, s) = (net.app(client), net.app(server));
    assert_eq!(c.transfers.len(), 8);
    let modes: Vec<Mode> = c.transfers.iter().map(|t| t.mode).collect();
    assert_eq!(
        modes,
        [Mode::Port, Mode::Port, Mode::Eprt, Mode::Eprt, Mode::Pasv, Mode::Pasv, Mode::Epsv, Mode::Epsv]
    );
    assert!(c.transfers.iter().filter(|t| t.dir == XferDir::Retr).all(|t| t.bytes >= 20_000));
    // No NAT: the client announces its own address and the server sees it as the data peer.
    assert!(c.sent_lines.contains(&b"PORT 10,0,0,2,160,40\r\n".to_vec()), "{:?}", c.sent_lines);
    assert!(c.sent_lines.contains(&b"EPRT |1|10.0.0.2|41002|\r\n".to_vec()));
    assert!(s.sent_lines.contains(&b"227 Entering Passive Mode (198,51,100,2,117,48).\r\n".to_vec()));
    assert!(s.sent_lines.contains(&b"229 Entering Extended Passive Mode (|||30003|)\r\n".to_vec()));
    assert_eq!(s.data_peers.len(), 8);
    assert!(s.data_peers.iter().all(|p| p.0 == INSIDE_HOST));
    // Active mode really came from port 20; passive really went to the announced port.
    assert!(c.transfers[..4].iter().all(|t| t.data_peer == Some((OUTSIDE_HOST.into(), 20))));
    assert_eq!(c.transfers[4].data_peer, Some((OUTSIDE_HOST.into(), 30000)));
    assert_eq!(c.transfers[7].data_peer, Some((OUTSIDE_HOST.into(), 30003)));
    assert_eq!(s.retrieved.len(), 4);
}

fn lossy_run(seed: u64) -> (Net, AppId<FtpClient>, AppId<FtpServer>) {
    let mut net = Net::with_seed(Box::new(Router::default()), seed);
    net.faults.rules.push(FaultRule::pre(Filter::Any, 0.10, 0.10, 0.10));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(INSIDE_HOST, all_modes(8_000));
    net.run(|n| n.app(client).finished() && n.app(server).finished(), 10 * MINUTE);
    (net, client, server)
}

#[test]
fn session_under_loss_duplication_and_reordering_completes() {
    let (net, client, server) = lossy_run(7);
    assert_clean_session(&net, client, server);
    let f = net.faults.stats;
    assert!(f.lost > 10 && f.duplicated > 10 && f.reordered > 10, "faults were not exercised: {f:?}");

    // Deterministic given the seed: the same run produces the same packet log, a different seed does not.
    let (again, _, _) = lossy_run(7);
    let (other, _, _) = lossy_run(8);
    let log = |n: &Net| n.log().map(|e| (e.t_us, e.event, e.head.clone())).collect::<Vec<_>>();
    assert_eq!(log(&net), log(&again));
    assert_ne!(log(&net), log(&other));
}

#[test]
fn control_line_written_in_three_chunks_arrives_intact() {
    let mut net = Net::new(Box::new(Router::default()));
    let segments = Rc::new(RefCell::new(Vec::new()));
    let seen = segments.clone();
    net.faults.tap = Some(Box::new(move |info, p| {
        if let Some(t) = pkt::tcp_info(p) {
            if info.stage == Stage::Pre && t.dport == 21 && !t.payload.is_empty() {
                seen.borrow_mut().push(t.payload);
            }
        }
        TapAction::Pass
    }));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let cfg = ClientConfig::new(OUTSIDE_HOST, 21)
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "3000.bin", 3000))
        .split(split_lines_starting(b"PORT", vec![5, 12]));
    let client = net.ftp_client(INSIDE_HOST, cfg);
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);

    let line = b"PORT 10,0,0,2,160,40\r\n";
    let segs = segments.borrow();
    let at = segs.iter().position(|s| s.as_slice() == &line[..5]).expect("first chunk alone in a segment");
    assert_eq!(segs[at + 1], &line[5..12]);
    assert_eq!(segs[at + 2], &line[12..]);
    assert!(net.app(server).received_lines.contains(&line.to_vec()));
}

#[test]
fn pipelined_active_transfers_leave_in_one_segment() {
    let mut net = Net::new(Box::new(Router::default()));
    let segments = Rc::new(RefCell::new(Vec::new()));
    let seen = segments.clone();
    net.faults.tap = Some(Box::new(move |info, p| {
        if let Some(t) = pkt::tcp_info(p) {
            if info.stage == Stage::Pre && t.dport == 21 && !t.payload.is_empty() {
                seen.borrow_mut().push(t.payload);
            }
        }
        TapAction::Pass
    }));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let cfg = ClientConfig::new(OUTSIDE_HOST, 21)
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "1000.bin", 1000))
        .transfer(Transfer::new(Mode::Eprt, XferDir::Stor, "b.bin", 2000))
        .transfer(Transfer::new(Mode::Pasv, XferDir::Retr, "500.bin", 500))
        .pipeline(true);
    let client = net.ftp_client(INSIDE_HOST, cfg);
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);
    let segs = segments.borrow();
    assert_eq!(segs[0], b"USER ftpuser\r\nPASS s3cret\r\nTYPE I\r\n");
    assert_eq!(
        segs[1],
        b"PORT 10,0,0,2,160,40\r\nRETR 1000.bin\r\nEPRT |1|10.0.0.2|41001|\r\nSTOR b.bin\r\n"
    );
    assert_eq!(segs[2], b"PASV\r\n");
}

#[test]
fn strict_server_refuses_a_foreign_port_address() {
    let mut net = Net::new(Box::new(Router::default()));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let cfg = ClientConfig::new(OUTSIDE_HOST, 21)
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "100.bin", 100).announce(THIRD_HOST))
        .transfer(Transfer::new(Mode::Eprt, XferDir::Retr, "100.bin", 100).port(80))
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "100.bin", 100));
    let client = net.ftp_client(INSIDE_HOST, cfg);
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    let (c, s) = (net.app(client), net.app(server));
    assert!(c.finished() && c.error.is_none());
    let ok: Vec<bool> = c.transfers.iter().map(|t| t.ok).collect();
    assert_eq!(ok, [false, false, true]);
    assert_eq!(c.transfers[0].setup_reply, b"500 Illegal PORT command.\r\n");
    assert_eq!(s.refused, [b"PORT 198,51,100,3,160,40\r\n".to_vec(), b"EPRT |1|10.0.0.2|80|\r\n".to_vec()]);
}

#[test]
fn nagle_holds_the_second_chunk_until_the_first_is_acked() {
    let mut net = Net::new(Box::new(Router::default()));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let cfg = ClientConfig::new(OUTSIDE_HOST, 21)
        .transfer(Transfer::new(Mode::Port, XferDir::Retr, "10.bin", 10))
        .split(split_lines_starting(b"PORT", vec![9]))
        .nagle(true);
    let client = net.ftp_client(INSIDE_HOST, cfg);
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);
    // Between the two pieces, the server's ACK of the first reached the client.
    let log: Vec<_> = net.log().filter(|e| e.event == common::net::Event::Sent).collect();
    let first = log.iter().position(|e| e.summary().ends_with("\"PORT 10,0\"")).expect("first piece");
    let second =
        log.iter().position(|e| e.summary().contains("\",0,2,160,40\\r\\n\"")).expect("second piece");
    assert!(second > first);
    let between = &log[first + 1..second];
    assert!(between.iter().any(|e| e.side == Side::Outside && e.summary().contains("> 10.0.0.2:40000")));
    assert!(log[second].t_us > log[first].t_us, "the second piece waited for a round trip");
}

#[test]
fn extra_hosts_run_independent_sessions() {
    let mut net = Net::new(Box::new(Router::default()));
    net.add_host(Side::Outside, THIRD_HOST);
    net.add_host(Side::Inside, INSIDE_HOST2);
    let s1 = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let s2 = net.ftp_server(THIRD_HOST, ServerConfig::default());
    let c1 = net.ftp_client(
        INSIDE_HOST,
        ClientConfig::new(OUTSIDE_HOST, 21).transfer(Transfer::new(
            Mode::Epsv,
            XferDir::Retr,
            "700.bin",
            700,
        )),
    );
    let c2 = net.ftp_client(
        INSIDE_HOST2,
        ClientConfig::new(THIRD_HOST, 21).transfer(Transfer::new(Mode::Port, XferDir::Stor, "x", 900)),
    );
    net.run(|n| [c1, c2].iter().all(|&c| n.app(c).finished()), MINUTE);
    assert_clean_session(&net, c1, s1);
    assert_clean_session(&net, c2, s2);
    assert_eq!(net.app(s2).ctrl_peer, Some((INSIDE_HOST2.into(), 40000)));
}

#[test]
fn unroutable_destination_is_counted_and_the_run_times_out() {
    let mut net = Net::new(Box::new(Router::default()));
    let client = net.ftp_client(
        INSIDE_HOST,
        ClientConfig::new("198.51.100.99".parse::<std::net::Ipv4Addr>().unwrap(), 21),
    );
    let outcome = net.run_until(|n| n.app(client).finished(), 10 * MINUTE);
    // smoltcp retransmits the SYN (with backoff, no limit); nothing ever answers.
    assert_eq!(outcome, RunOutcome::TimedOut);
    assert_eq!(net.now_us(), 10 * MINUTE);
    assert!(net.stats.unknown_dst >= 5, "{:?}", net.stats);
    assert_eq!(net.stats.unknown_dst, net.stats.emitted);
    assert!(net.app(client).received_lines.is_empty());
}

#[test]
fn packet_check_rejects_a_corrupted_segment() {
    let mut net = Net::new(Box::new(Router::default()));
    let captured = Rc::new(RefCell::new(Vec::new()));
    let cap = captured.clone();
    net.faults.tap = Some(Box::new(move |info, p| {
        if info.stage == Stage::Post {
            cap.borrow_mut().push(p.to_vec());
        }
        TapAction::Pass
    }));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(INSIDE_HOST, ClientConfig::new(OUTSIDE_HOST, 21));
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    let pkts = captured.borrow();
    let data = pkts
        .iter()
        .find(|p| pkt::tcp_info(p).is_some_and(|t| !t.payload.is_empty()))
        .expect("a data segment");
    assert_eq!(pkt::check_packet(data), Ok(()));
    let mut bad = data.clone();
    *bad.last_mut().unwrap() ^= 0x20;
    assert!(pkt::check_packet(&bad).unwrap_err().contains("TCP checksum"));
    let mut bad = data.clone();
    bad[8] ^= 1; // TTL: the IP header checksum no longer matches
    assert!(pkt::check_packet(&bad).unwrap_err().contains("header checksum"));
    let mut bad = data.clone();
    bad.push(0);
    assert!(pkt::check_packet(&bad).unwrap_err().contains("total length"));
}

/// Flips a payload byte without fixing the checksum: the harness must fail the test.
struct Corrupter;

impl Middlebox for Corrupter {
    fn packet(&mut self, _now: u64, from: Side, mut p: Vec<u8>) -> Vec<(Side, Vec<u8>)> {
        if pkt::tcp_info(&p).is_some_and(|t| !t.payload.is_empty()) {
            *p.last_mut().unwrap() ^= 0x01;
        }
        vec![(from.other(), p)]
    }
    fn poll_timeout(&self) -> Option<u64> {
        None
    }
    fn timeout(&mut self, _now: u64) -> Vec<(Side, Vec<u8>)> {
        Vec::new()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
#[should_panic(expected = "middlebox emitted a bad packet")]
fn a_middlebox_that_breaks_a_checksum_fails_the_test() {
    let mut net = Net::new(Box::new(Corrupter));
    net.log_print_on_panic = 0;
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(INSIDE_HOST, ClientConfig::new(OUTSIDE_HOST, 21));
    let _ = net.run_until(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
}

#[test]
fn engine_adapter_forwards_like_the_stub() {
    // Today's engine is a pass-through stub; once it translates, engine suites take over.
    let cfg = ftpnat::Config::new(vec!["10.0.0.0/24".parse().unwrap()], common::net::PUBLIC_IP);
    let mut net = Net::new(Box::new(ftpnat::Engine::new(cfg)));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(
        INSIDE_HOST,
        ClientConfig::new(OUTSIDE_HOST, 21).transfer(Transfer::new(
            Mode::Pasv,
            XferDir::Retr,
            "2000.bin",
            2000,
        )),
    );
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    let engine: &ftpnat::Engine = net.middlebox();
    assert!(engine.metrics().packets_in[Side::Inside.index()] > 0);
    assert!(net.app(client).all_ok(), "{:?}", net.app(client).transfers);
}

#[test]
fn reverse_topology_outside_client_inside_server() {
    let mut net = Net::new(Box::new(Router::default()));
    let server = net.ftp_server(INSIDE_HOST, ServerConfig::default());
    let mut cfg = all_modes(5_000);
    cfg.server = INSIDE_HOST.into();
    let client = net.ftp_client(OUTSIDE_HOST, cfg);
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);
    let s = net.app(server);
    assert!(s.sent_lines.contains(&b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n".to_vec()));
    assert!(s.data_peers.iter().all(|p| p.0 == OUTSIDE_HOST));
}

#[test]
fn a_dropped_control_segment_is_retransmitted_by_smoltcp() {
    let mut net = Net::new(Box::new(Router::default()));
    let seen = Rc::new(RefCell::new(0u32));
    let count = seen.clone();
    let mut dropped = false;
    net.faults.tap = Some(Box::new(move |info, p| {
        let is_port = pkt::tcp_info(p).is_some_and(|t| t.payload.starts_with(b"PORT "));
        if info.stage == Stage::Pre && is_port {
            *count.borrow_mut() += 1;
            if !dropped {
                dropped = true;
                return TapAction::Drop;
            }
        }
        TapAction::Pass
    }));
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let cfg =
        ClientConfig::new(OUTSIDE_HOST, 21).transfer(Transfer::new(Mode::Port, XferDir::Stor, "s", 4000));
    let client = net.ftp_client(INSIDE_HOST, cfg);
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);
    assert_eq!(*seen.borrow(), 2, "the PORT segment went once, was dropped, and was retransmitted once");
    assert_eq!(net.faults.stats.tap_dropped, 1);
    // The retransmission waited for smoltcp's RTO (at least 1 s of virtual time).
    assert!(net.now_us() > 1_000_000);
}

#[test]
fn ftp_text_helpers_parse_what_peers_send() {
    use common::ftp::{format_host_port, parse_227, parse_229, parse_eprt_arg, parse_host_port};
    let a: std::net::Ipv4Addr = "10.0.0.2".parse().unwrap();
    assert_eq!(format_host_port(a, 41000), "10,0,0,2,160,40");
    assert_eq!(parse_host_port("10,0,0,2,160,40"), Some((a, 41000)));
    assert_eq!(parse_host_port("10,0,0,2,160"), None);
    assert_eq!(parse_host_port("10,0,0,256,1,1"), None);
    assert_eq!(parse_227("227 Entering Passive Mode (10,0,0,2,160,40)."), Some((a, 41000)));
    assert_eq!(parse_227("227 =10,0,0,2,160,40"), Some((a, 41000)));
    assert_eq!(parse_229("229 Entering Extended Passive Mode (|||30003|)"), Some(30003));
    assert_eq!(parse_229("229 ok (!!!21!)"), Some(21));
    assert_eq!(parse_229("229 ok (||30003|)"), None);
    assert_eq!(parse_eprt_arg("|1|10.0.0.2|41000|"), Some((a, 41000)));
    assert_eq!(parse_eprt_arg("!1!10.0.0.2!41000!"), Some((a, 41000)));
    assert_eq!(parse_eprt_arg("|2|::1|41000|"), None);
    assert_eq!(file_bytes("a", 100), file_bytes("a", 100));
    assert_ne!(file_bytes("a", 100), file_bytes("b", 100));
    assert_eq!(file_bytes("a", 13).len(), 13);
}

#[test]
fn a_small_mtu_makes_smoltcp_send_small_segments() {
    let mut net = Net::empty(Box::new(Router::default()), 3);
    net.mtu = 576;
    net.add_host(Side::Inside, INSIDE_HOST);
    net.add_host(Side::Outside, OUTSIDE_HOST);
    let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
    let client = net.ftp_client(
        INSIDE_HOST,
        ClientConfig::new(OUTSIDE_HOST, 21).transfer(Transfer::new(
            Mode::Epsv,
            XferDir::Retr,
            "5000.bin",
            5000,
        )),
    );
    net.run(|n| n.app(client).finished() && n.app(server).finished(), MINUTE);
    assert_clean_session(&net, client, server);
    let biggest = net.log().map(|e| usize::from(u16::from_be_bytes([e.head[2], e.head[3]]))).max();
    assert_eq!(biggest, Some(576));
}
