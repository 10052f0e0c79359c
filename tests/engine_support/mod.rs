//! Packet builders and an independent checker (etherparse) for engine scenario tests.
#![allow(dead_code)]

use etherparse::{IpNumber, Ipv4HeaderSlice, SlicedPacket, TransportSlice};
use ftpnat::{Config, Engine, Instant, Side, Verdict};
use ftpnat_testkit::consts;
use ftpnat_testkit::pkt::{Ip, Tcp};
use std::net::Ipv4Addr;

pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const LAN_HOST2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const REMOTE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

pub fn config() -> Config {
    Config::new(vec!["10.0.0.0/24".parse().unwrap()], PUBLIC)
}

/// The kit's builder with etherparse's header choices (identification 0, DF, TTL 64): the bytes these
/// tests were written against (testkit/src/pkt.rs checks the two agree).
fn ip(src: Ipv4Addr, dst: Ipv4Addr) -> Ip {
    Ip::new(src, dst).ident(0)
}

pub fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    ip(src, dst).udp(sp, dp, payload, false)
}

#[derive(Clone, Copy, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

pub const SYN: Flags = Flags { syn: true, ack: false, fin: false, rst: false, psh: false };
pub const SYNACK: Flags = Flags { syn: true, ack: true, fin: false, rst: false, psh: false };
pub const ACK: Flags = Flags { syn: false, ack: true, fin: false, rst: false, psh: false };
pub const PSHACK: Flags = Flags { syn: false, ack: true, fin: false, rst: false, psh: true };

#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    f: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let bits = [
        (f.syn, consts::SYN),
        (f.ack, consts::ACK),
        (f.fin, consts::FIN),
        (f.rst, consts::RST),
        (f.psh, consts::PSH),
    ];
    let flags = bits.iter().filter(|(on, _)| *on).fold(0, |a, (_, b)| a | b);
    let ack = if f.ack { ack } else { 0 };
    ip(src, dst).tcp(&Tcp::new(sp, dp, seq, ack, flags, payload))
}

pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, request: bool) -> Vec<u8> {
    ip(src, dst).icmp_echo(id, seq, request, b"ping")
}

/// What an independent parser sees in a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub fin: bool,
    pub payload: Vec<u8>,
    pub icmp_type: Option<u8>,
}

/// Asserts the packet passes the kit's independent check (IPv4 header checksum and length, TCP/UDP/ICMP
/// headers and checksums: `ftpnat_testkit::check`), then reads what the tests look at with etherparse.
pub fn check(pkt: &[u8]) -> Seen {
    if let Err(e) = ftpnat_testkit::check::check_packet(pkt) {
        panic!("bad packet: {e}: {pkt:02x?}");
    }
    let ip = Ipv4HeaderSlice::from_slice(pkt).unwrap_or_else(|e| panic!("bad IPv4 header {e:?}: {pkt:02x?}"));
    let hdr = ip.to_header();
    let sliced = SlicedPacket::from_ip(pkt).unwrap();
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let mut s = Seen {
        src,
        dst,
        ttl: ip.ttl(),
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        syn: false,
        fin: false,
        payload: vec![],
        icmp_type: None,
    };
    let is_fragment = hdr.is_fragmenting_payload();
    match sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let payload = t.payload();
            s.sport = t.source_port();
            s.dport = t.destination_port();
            s.seq = t.sequence_number();
            s.ack = t.acknowledgment_number();
            s.syn = t.syn();
            s.fin = t.fin();
            s.payload = payload.to_vec();
        }
        Some(TransportSlice::Udp(u)) => {
            s.sport = u.source_port();
            s.dport = u.destination_port();
            s.payload = u.payload().to_vec();
        }
        Some(TransportSlice::Icmpv4(i)) => {
            s.icmp_type = Some(i.type_u8());
            s.payload = i.payload().to_vec();
            let h = i.bytes5to8();
            s.sport = u16::from_be_bytes([h[0], h[1]]);
            s.dport = s.sport;
        }
        _ => assert!(is_fragment || hdr.protocol != IpNumber::TCP, "unparsable transport"),
    }
    s
}

/// The RFC 1071 sum folded and complemented: 0 for data that includes a valid checksum (the kit's).
#[allow(unused_imports)]
pub use ftpnat_testkit::csum::rfc1071;

/// Drives an engine and collects everything it emits, each checked.
pub struct Rig {
    pub engine: Engine,
    pub now: Instant,
}

impl Rig {
    pub fn new(config: Config) -> Rig {
        config.validate().unwrap();
        Rig { engine: Engine::new(config), now: Instant::from_secs(1000) }
    }

    /// Sends one packet; returns (verdict, every packet that left with its side).
    pub fn send(&mut self, from: Side, pkt: Vec<u8>) -> (Verdict, Vec<(Side, Vec<u8>)>) {
        let mut p = pkt;
        let v = self.engine.handle_packet(self.now, from, &mut p);
        let mut out = Vec::new();
        if let Verdict::Forward(side) = v {
            out.push((side, p));
        }
        while let Some(t) = self.engine.poll_transmit() {
            out.push((t.side, t.packet));
        }
        for (_, p) in &out {
            check(p);
        }
        (v, out)
    }

    /// Sends a packet that must come out as exactly one packet; returns what the checker saw.
    pub fn pass(&mut self, from: Side, pkt: Vec<u8>) -> (Side, Seen) {
        let (v, out) = self.send(from, pkt);
        assert!(matches!(v, Verdict::Forward(_)), "expected forward, got {v:?}");
        assert_eq!(out.len(), 1, "expected exactly one packet out");
        (out[0].0, check(&out[0].1))
    }

    pub fn advance(&mut self, secs: u64) {
        self.now = self.now + core::time::Duration::from_secs(secs);
        self.engine.handle_timeout(self.now);
    }
}

/// Opens an FTP control connection from `client:cport` to `REMOTE:21` the way a real one opens: SYN
/// (ISN 1), SYN-ACK (ISN 100), ACK, and the server's `220` greeting (the ALG honours no announcement
/// before it). The client's next sequence number is 2; returns the server's next one.
pub fn ftp_open(r: &mut Rig, client: Ipv4Addr, cport: u16) -> u32 {
    let (_, syn) = r.pass(Side::Inside, tcp(client, cport, REMOTE, 21, 1, 0, SYN, b""));
    r.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, syn.sport, 100, 2, SYNACK, b""));
    r.pass(Side::Inside, tcp(client, cport, REMOTE, 21, 2, 101, ACK, b""));
    let hello = b"220 ready\r\n";
    r.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, syn.sport, 101, 2, PSHACK, hello));
    101 + hello.len() as u32
}

/// A writer that keeps what is written in shared memory (a log sink for tests).
#[derive(Clone, Default)]
pub struct SharedBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
