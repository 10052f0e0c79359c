//! RFC 4217 (FTP over TLS) through the ALG: after `AUTH TLS` is answered `234` the control connection is
//! opaque — nothing parsed, nothing dropped, no pinholes — until the TLS record stream ends and cleartext
//! FTP lines follow (the client's `CCC` travels inside TLS, where the ALG cannot read it).

mod engine_support;
use engine_support::*;
use ftpnat::{Config, Side};

struct Ctl {
    rig: Rig,
    c_seq: u32,
    s_seq: u32,
}

const CPORT: u16 = 40100;

impl Ctl {
    fn new(config: Config) -> Ctl {
        let mut rig = Rig::new(config);
        rig.pass(Side::Inside, tcp(LAN_HOST, CPORT, REMOTE, 21, 1000, 0, SYN, b""));
        rig.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, CPORT, 5000, 1001, SYNACK, b""));
        rig.pass(Side::Inside, tcp(LAN_HOST, CPORT, REMOTE, 21, 1001, 5001, ACK, b""));
        Ctl { rig, c_seq: 1001, s_seq: 5001 }
    }
    /// Client sends bytes; returns what the server receives.
    fn client(&mut self, data: &[u8]) -> Vec<u8> {
        let (v, out) = self
            .rig
            .send(Side::Inside, tcp(LAN_HOST, CPORT, REMOTE, 21, self.c_seq, self.s_seq, PSHACK, data));
        assert!(matches!(v, ftpnat::Verdict::Forward(Side::Outside)), "{v:?}");
        self.c_seq += data.len() as u32;
        out.iter().flat_map(|(_, p)| check(p).payload).collect()
    }
    fn server(&mut self, data: &[u8]) -> Vec<u8> {
        let (_, out) = self
            .rig
            .send(Side::Outside, tcp(REMOTE, 21, PUBLIC, CPORT, self.s_seq, self.c_seq, PSHACK, data));
        self.s_seq += data.len() as u32;
        out.iter().flat_map(|(_, p)| check(p).payload).collect()
    }
}

fn tls_record(body: &[u8]) -> Vec<u8> {
    let mut r = vec![23, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

#[test]
fn auth_tls_makes_the_control_connection_opaque_until_cleartext_returns() {
    let mut c = Ctl::new(config());
    c.server(b"220 ready\r\n");
    c.client(b"AUTH TLS\r\n");
    c.server(b"234 AUTH TLS successful\r\n");
    // Inside TLS: bytes that look like PORT lines, at a record's start and mid-record, pass untouched.
    let rec = tls_record(b"PORT 10,0,0,2,4,1\r\nPORT 10,0,0,2,4,2\r\n");
    assert_eq!(c.client(&rec), rec);
    let rec2 = tls_record(b"227 Entering Passive Mode (10,0,0,2,4,3)\r\n");
    assert_eq!(c.server(&rec2), rec2);
    let m = c.rig.engine.metrics();
    assert_eq!((m.alg_rewrites(), m.pinholes_created, m.alg_tls_opaque), (0, 0, 1));
    // After the client's (encrypted) CCC and the end of its records, cleartext FTP is parsed again.
    let out = c.client(b"PORT 10,0,0,2,4,4\r\n");
    assert!(out.starts_with(b"PORT 198,51,100,1,"), "{}", String::from_utf8_lossy(&out));
    assert_eq!(c.rig.engine.metrics().pinholes_created, 1);
}

#[test]
fn auth_refused_keeps_parsing() {
    let mut c = Ctl::new(config());
    c.server(b"220 ready\r\n");
    c.client(b"AUTH TLS\r\n");
    c.server(b"502 not implemented\r\n");
    let out = c.client(b"PORT 10,0,0,2,4,4\r\n");
    assert!(out.starts_with(b"PORT 198,51,100,1,"));
}

#[test]
fn implicit_ftps_port_990_is_never_parsed() {
    let mut cfg = config();
    cfg.ftp.ports.push(990);
    let err = cfg.validate().unwrap_err();
    assert!(err.contains("--ftp-port") && err.contains("990"), "{err}");
    // A connection to 990 with the default ports is plain NAT: bytes untouched, no pinhole.
    let mut rig = Rig::new(config());
    rig.pass(Side::Inside, tcp(LAN_HOST, 40200, REMOTE, 990, 1, 0, SYN, b""));
    let (_, s) =
        rig.pass(Side::Inside, tcp(LAN_HOST, 40200, REMOTE, 990, 2, 1, PSHACK, b"PORT 10,0,0,2,4,4\r\n"));
    assert_eq!(s.payload, b"PORT 10,0,0,2,4,4\r\n");
    assert_eq!(rig.engine.metrics().pinholes_created, 0);
}

#[test]
fn unsolicited_227_from_an_inside_server_is_left_alone() {
    let mut cfg = config();
    cfg.forwards.push("tcp:21=10.0.0.2:21".parse().unwrap());
    let mut rig = Rig::new(cfg);
    rig.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC, 21, 100, 0, SYN, b""));
    rig.pass(Side::Inside, tcp(LAN_HOST, 21, REMOTE, 33000, 900, 101, SYNACK, b""));
    rig.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC, 21, 101, 901, ACK, b""));
    let hello = b"220 ready\r\n";
    rig.pass(Side::Inside, tcp(LAN_HOST, 21, REMOTE, 33000, 901, 101, PSHACK, hello));
    let s0 = 901 + hello.len() as u32;
    let line = b"227 Entering Passive Mode (10,0,0,2,200,10).\r\n";
    let (_, s) = rig.pass(Side::Inside, tcp(LAN_HOST, 21, REMOTE, 33000, s0, 101, PSHACK, line));
    assert_eq!(s.payload, line, "no PASV pending: byte-identical");
    let m = rig.engine.metrics();
    assert_eq!((m.refused_of(ftpnat::RefusalReason::Unsolicited), m.pinholes_created), (1, 0));
    // After a real PASV the same reply is rewritten.
    rig.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC, 21, 101, s0 + line.len() as u32, PSHACK, b"PASV\r\n"));
    let (_, s) =
        rig.pass(Side::Inside, tcp(LAN_HOST, 21, REMOTE, 33000, s0 + line.len() as u32, 107, PSHACK, line));
    assert!(
        s.payload.starts_with(b"227 Entering Passive Mode (198,51,100,1,"),
        "{}",
        String::from_utf8_lossy(&s.payload)
    );
}
