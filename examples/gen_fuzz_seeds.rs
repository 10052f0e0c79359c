//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/seed-*`) from the project's own
//! tools: real FTP sessions between two smoltcp stacks through the engine (the in-memory harness of
//! `ftpnat_testkit::harness`), recorded packet by packet, plus hand-built lines and segment sequences.
//!
//! Owns: the encoding of those sessions into the byte programs the harness decoders in `testkit/src/fuzz/`
//! read. Must not: write anywhere but `fuzz/corpus/`. Deterministic: running it twice gives the same
//! files. Run with `cargo run --example gen_fuzz_seeds`.

use ftpnat_testkit::harness as common;

use std::any::Any;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use common::ftp::{ClientConfig, Mode, ServerConfig, Transfer, XferDir};
use common::net::{Net, INSIDE_HOST, OUTSIDE_HOST, PUBLIC_IP};
use common::Middlebox;
use ftpnat::{Config, Engine, Side};

/// The engine with every packet it was handed recorded (time, side, bytes).
struct Recorder {
    engine: Engine,
    log: Vec<(u64, Side, Vec<u8>)>,
}

impl Middlebox for Recorder {
    fn packet(&mut self, now_us: u64, from: Side, pkt: Vec<u8>) -> Vec<(Side, Vec<u8>)> {
        self.log.push((now_us, from, pkt.clone()));
        self.engine.packet(now_us, from, pkt)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Middlebox::poll_timeout(&self.engine)
    }
    fn timeout(&mut self, now_us: u64) -> Vec<(Side, Vec<u8>)> {
        self.engine.timeout(now_us)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

fn config(server_inside: bool) -> Config {
    let mut c = Config::new(vec!["10.0.0.0/24".parse().unwrap()], PUBLIC_IP);
    if server_inside {
        c.forwards.push("tcp:21=10.0.0.2:21".parse().unwrap());
    }
    c
}

/// Runs one FTP session in the in-memory network and returns what the engine was handed.
fn session(server_inside: bool, modes: &[Mode], size: usize) -> Vec<(u64, Side, Vec<u8>)> {
    let rec = Recorder { engine: Engine::new(config(server_inside)), log: Vec::new() };
    let mut net = Net::new(Box::new(rec));
    let (srv_addr, cli_addr, target) = if server_inside {
        (INSIDE_HOST, OUTSIDE_HOST, PUBLIC_IP)
    } else {
        (OUTSIDE_HOST, INSIDE_HOST, OUTSIDE_HOST)
    };
    let _server = net.ftp_server(srv_addr, ServerConfig::default());
    let mut cc = ClientConfig::new(target, 21);
    for (i, &m) in modes.iter().enumerate() {
        let dir = if i % 2 == 0 { XferDir::Retr } else { XferDir::Stor };
        cc = cc.transfer(Transfer::new(m, dir, &format!("f{i}.bin"), size + i));
    }
    let client = net.ftp_client(cli_addr, cc);
    net.run(|n| n.app(client).finished(), 300_000_000);
    let rec = net.middlebox::<Recorder>();
    rec.log.clone()
}

/// The packets of one session as an `engine` program: the default-ish configuration byte block, then
/// for each packet a time step and a raw-datagram op. Payload-heavy data segments are left out past
/// `max_data` bytes per packet so the seeds stay small.
fn engine_program(log: &[(u64, Side, Vec<u8>)], server_inside: bool) -> Vec<u8> {
    // World::new: config byte (bit 1: forward tcp:21 to 10.0.0.2, the
    // session server in the server-inside seeds), then
    // max_flows, max_flows_per_host, max_pinholes_per_host, max_pinholes_per_conn.
    let mut p = vec![if server_inside { 0x02 } else { 0x00 }, 47, 23, 7, 3];
    let mut last = log.first().map_or(0, |e| e.0);
    for (t, side, pkt) in log {
        let dt_ms = ((t - last) / 1000) as u32;
        last = *t;
        if dt_ms > 0 {
            p.extend_from_slice(&[0, 7]);
            p.extend_from_slice(&dt_ms.to_be_bytes());
        }
        // Data segments of the transfers are cut to their headers plus a little: the control
        // connection is what matters to the ALG, and the seeds stay small.
        let mut pkt = pkt.clone();
        if pkt.len() > 400 {
            continue;
        }
        p.push(14);
        p.push(if *side == Side::Outside { 1 } else { 0 });
        p.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
        p.append(&mut pkt);
    }
    p
}

/// The payloads of the TCP segments of one direction of the control connection, in arrival order.
fn control_segments(
    log: &[(u64, Side, Vec<u8>)],
    from_client_side: Side,
    server_port: u16,
) -> Vec<(u32, Vec<u8>, u8)> {
    let mut v = Vec::new();
    for (_, side, pkt) in log {
        if *side != from_client_side || pkt.len() < 40 || pkt[9] != 6 {
            continue;
        }
        let hl = ((pkt[0] & 15) as usize) * 4;
        let t = &pkt[hl..];
        let dp = u16::from_be_bytes([t[2], t[3]]);
        let sp = u16::from_be_bytes([t[0], t[1]]);
        if dp != server_port && sp != server_port {
            continue;
        }
        let thl = ((t[12] >> 4) as usize) * 4;
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        v.push((seq, t[thl..].to_vec(), t[13]));
    }
    v
}

/// A `stream` program replaying one direction's segments: each segment's new bytes appended raw and
/// sent; every other segment followed by an acknowledgement; one retransmission of an earlier range.
fn stream_program(segs: &[(u32, Vec<u8>, u8)], from_client: bool) -> Vec<u8> {
    let isn = segs.iter().find(|s| s.2 & 0x02 != 0).map_or(1000, |s| s.0);
    let mut p = vec![if from_client { 0 } else { 2 }, 224];
    p.extend_from_slice(&isn.to_be_bytes());
    // The SYN.
    p.push(0x00);
    p.push(0);
    let mut sent = 0usize;
    for (i, (_, payload, _)) in segs.iter().enumerate() {
        if payload.is_empty() {
            continue;
        }
        for chunk in payload.chunks(255) {
            // op 0x10: append, then send everything not yet sent; pick 5 = raw bytes.
            p.extend_from_slice(&[0x10, 5, chunk.len() as u8]);
            p.extend_from_slice(chunk);
            p.push(1); // no FIN
            sent += chunk.len();
        }
        if i % 2 == 1 {
            p.extend_from_slice(&[4, 0]);
        }
        if i == 3 && sent > 4 {
            // op 0x60: retransmit a range: offset, length.
            p.extend_from_slice(&[0x60, 0, 0, 0, (sent - 1).min(255) as u8, 1]);
        }
    }
    p
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let cases: [(&str, bool, &[Mode]); 4] = [
        ("snat-port-eprt", false, &[Mode::Port, Mode::Eprt]),
        ("snat-pasv-epsv", false, &[Mode::Pasv, Mode::Epsv]),
        ("dnat-pasv-epsv", true, &[Mode::Pasv, Mode::Epsv]),
        ("dnat-port-eprt", true, &[Mode::Port, Mode::Eprt]),
    ];
    for (name, server_inside, modes) in cases {
        let log = session(server_inside, modes, 1500);
        write(&root.join("engine"), name, &engine_program(&log, server_inside));
        let client_side = if server_inside { Side::Outside } else { Side::Inside };
        let c2s = control_segments(&log, client_side, 21);
        let s2c = control_segments(&log, client_side.other(), 21);
        write(&root.join("stream"), &format!("{name}-c2s"), &stream_program(&c2s, true));
        write(&root.join("stream"), &format!("{name}-s2c"), &stream_program(&s2c, false));
        for (_, payload, _) in c2s.iter().chain(s2c.iter()) {
            for l in payload.split_inclusive(|&b| b == b'\n') {
                if !lines.contains(&l.to_vec()) {
                    lines.push(l.to_vec());
                }
            }
        }
    }
    // Hand-built lines: the edges of every grammar.
    for l in [
        &b"PORT 010,000,0,2,000,021\r\n"[..],
        b"EPRT !1!132.235.1.2!6275!  \n",
        b"EPRT |2|::1|5282|\r\n",
        b"227 Data transfer will passively listen to 192,168,1,2,19,137",
        b"227 =192,168,1,2,19,137\r\n",
        b"229 EPSV ok (!!!6446!)",
        b"PORT 1,2,3,4,5,99999999999999999999\r\n",
        b"PASS hunter2\r\n",
        b"\xff\xf4PASS hunter2\r\n",
        b"ACCT secret stuff\r\n",
        b"AUTH TLS\r\n",
        b"211-PORT 1,2,3,4,5,6\r\n",
        b"RETR PORT 1,2,3,4,5,6\r\n",
        b"PORT 1,2,3,4,5,6\0\r\n",
    ] {
        lines.push(l.to_vec());
    }
    for (i, l) in lines.iter().enumerate() {
        let mut v = vec![0u8];
        v.extend_from_slice(l);
        write(&root.join("ftp_parse"), &format!("{i:03}"), &v);
    }
    // A structured engine program: an inside client's control connection with PORT, the server's
    // answer, the data SYN at the pinhole, then a repeat of the SYN (one-shot), then time passing.
    let mut p = vec![0x00, 47, 23, 7, 3];
    p.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x20, 0, 0, 0, 0]); // new conn 10.0.0.2 -> .2:21
    p.extend_from_slice(&[3, 0, 1, 0x00, 0]); // server SYN-ACK
    p.extend_from_slice(&[3, 0, 0, 0x00, 0]); // client ACK
    p.extend_from_slice(&[3, 0, 1, 0x08, 0, 0, 0]); // server: 220
    p.extend_from_slice(&[3, 0, 0, 0x08, 0, 2, 0]); // client: PORT
    p.extend_from_slice(&[3, 0, 1, 0x08, 0, 3, 0]); // server: 200
    p.extend_from_slice(&[9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // SYN at the pinhole
    p.extend_from_slice(&[9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // and again
    p.extend_from_slice(&[0, 5]); // 61 s
    write(&root.join("engine"), "structured-port", &p);
    println!("seeds written under {}", root.display());
    let _ = Ipv4Addr::UNSPECIFIED;
}
