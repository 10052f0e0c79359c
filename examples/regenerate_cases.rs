//! A tool, not a test: generates the synthetic capture cases under `tests/pcap/<case>/` (input
//! capture, replay arguments, expected summary, README) and refreshes the expected summary of the
//! recorded ones:
//!
//! ```text
//! cargo run --release --example regenerate_cases
//! ```
//!
//! Review the diff it leaves in `tests/pcap/` before committing: an input that changed means the
//! generator changed; an expected summary that changed means the replay's behaviour did.
//!
//! Every packet is built here byte by byte (IPv4/TCP headers, checksums, Ethernet/VLAN/SLL framing) from
//! scripted FTP sessions with consistent sequence and acknowledgement numbers, as a capture on a flat
//! network (no NAT) would show them. The expected summary is what `ftpnat replay` reports for the
//! input at generation time; `replay_cases` then checks it never drifts and checks properties 1–6
//! independently.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ftpnat_testkit::consts::PROTO_ICMP;
use ftpnat_testkit::csum::rfc1071;
use ftpnat_testkit::pkt::{Ip, Tcp};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};

use ftpnat_testkit::consts::{ACK, FIN, PSH, RST, SYN};

/// 2024-01-01T00:00:00Z: the generated captures' clock starts here.
const T0: u64 = 1_704_067_200_000_000;

#[derive(Clone, Copy)]
struct Host {
    ip: Ipv4Addr,
    mac: [u8; 6],
}

fn host(ip: [u8; 4], n: u8) -> Host {
    Host { ip: Ipv4Addr::from(ip), mac: [0x02, 0, 0, 0, 0, n] }
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Ethernet,
    Sll,
}

/// Frames being recorded.
struct Gen {
    frames: Vec<(u64, Vec<u8>)>,
    now: u64,
    link: Link,
    vlan: Option<u16>,
    fcs: bool,
    /// Frames from this address carry a wrong TCP checksum (checksum offload on the capturing host).
    offload_from: Option<Ipv4Addr>,
    /// Every frame is recorded twice (a mirrored switch port).
    duplicate: bool,
    ipid: std::collections::HashMap<Ipv4Addr, u16>,
}

impl Gen {
    fn new(link: Link) -> Gen {
        Gen {
            frames: Vec::new(),
            now: T0,
            link,
            vlan: None,
            fcs: false,
            offload_from: None,
            duplicate: false,
            ipid: Default::default(),
        }
    }

    fn wait(&mut self, us: u64) {
        self.now += us;
    }

    fn next_id(&mut self, ip: Ipv4Addr) -> u16 {
        let e = self.ipid.entry(ip).or_insert_with(|| u16::from_be_bytes([ip.octets()[3], 0x10]));
        *e = e.wrapping_add(1);
        *e
    }

    /// Frames an IP datagram travelling from `src` to `dst` (MACs by host) and records it.
    fn record(&mut self, src: Host, dst: Host, ip: Vec<u8>) {
        self.now += 150;
        let ethertype: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        let mut f = Vec::new();
        match self.link {
            Link::Ethernet => {
                f.extend_from_slice(&dst.mac);
                f.extend_from_slice(&src.mac);
                if let Some(v) = self.vlan {
                    f.extend_from_slice(&[0x81, 0x00]);
                    f.extend_from_slice(&v.to_be_bytes());
                }
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend_from_slice(&ip);
                if f.len() < 60 {
                    f.resize(60, 0);
                }
                if self.fcs {
                    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&f);
                    f.extend_from_slice(&crc.to_le_bytes());
                }
            }
            Link::Sll => {
                // Linux cooked v1: packet type (0 = to us, 4 = outgoing), ARPHRD_ETHER, address.
                let outgoing = u16::from(self.offload_from == Some(src.ip)) * 4;
                f.extend_from_slice(&outgoing.to_be_bytes());
                f.extend_from_slice(&[0, 1, 0, 6]);
                f.extend_from_slice(&src.mac);
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend_from_slice(&ip);
            }
        }
        self.frames.push((self.now, f.clone()));
        if self.duplicate {
            self.frames.push((self.now + 3, f));
        }
    }

    fn raw(&mut self, frame: Vec<u8>) {
        self.now += 150;
        self.frames.push((self.now, frame));
    }

    fn write_pcap(&self, path: &Path) {
        let lt = match self.link {
            Link::Ethernet => DataLink::ETHERNET,
            Link::Sll => DataLink::LINUX_SLL,
        };
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: 262_144,
            datalink: lt,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
        };
        let mut w = PcapWriter::with_header(fs::File::create(path).unwrap(), header).unwrap();
        for (ts, f) in &self.frames {
            w.write_packet(&PcapPacket::new(Duration::from_micros(*ts), f.len() as u32, f)).unwrap();
        }
    }

    fn write_pcapng(&self, path: &Path) {
        let lt = match self.link {
            Link::Ethernet => DataLink::ETHERNET,
            Link::Sll => DataLink::LINUX_SLL,
        };
        let mut w = PcapNgWriter::new(fs::File::create(path).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock { linktype: lt, snaplen: 262_144, options: vec![] })
            .unwrap();
        for (ts, f) in &self.frames {
            // pcap-file writes the duration's nanosecond count as the raw unit count, and the default
            // if_tsresol is microseconds.
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(*ts),
                original_len: f.len() as u32,
                data: f.as_slice().into(),
                options: vec![],
            })
            .unwrap();
        }
    }
}

/// An IPv4 datagram (DF set) carrying `l4` as it is (its checksum is the caller's).
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, ttl: u8, l4: &[u8]) -> Vec<u8> {
    Ip::new(src, dst).ident(id).ttl(ttl).datagram(proto, l4)
}

/// A TCP segment (window 64240) in a datagram (DF, TTL 64), checksums right.
#[allow(clippy::too_many_arguments)]
fn tcp_datagram(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let t = Tcp { window: 64240, opts, ..Tcp::new(sp, dp, seq, ack, flags, payload) };
    Ip::new(src, dst).ident(id).tcp(&t)
}

/// MSS 1460, SACK permitted, window scale 7 (what a Linux SYN carries, minus timestamps).
const SYN_OPTIONS: [u8; 12] = [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7];

/// One TCP connection between `a` (its opener) and `b`.
struct Conn {
    h: [Host; 2],
    p: [u16; 2],
    next: [u32; 2],
}

impl Conn {
    fn new(a: Host, ap: u16, b: Host, bp: u16, isn: [u32; 2]) -> Conn {
        Conn { h: [a, b], p: [ap, bp], next: isn }
    }

    /// Records a segment from side `from` with the given flags, at its current sequence number.
    fn seg(&mut self, g: &mut Gen, from: usize, flags: u8, payload: &[u8]) {
        let seq = self.next[from];
        self.seg_at(g, from, seq, flags, payload);
        self.next[from] =
            seq.wrapping_add(payload.len() as u32).wrapping_add(u32::from(flags & (SYN | FIN) != 0));
    }

    /// Records a segment with an explicit sequence number (retransmissions); state unchanged.
    fn seg_at(&mut self, g: &mut Gen, from: usize, seq: u32, flags: u8, payload: &[u8]) {
        let to = 1 - from;
        let (src, dst) = (self.h[from], self.h[to]);
        let ack = if flags & ACK != 0 { self.next[to] } else { 0 };
        let opts: &[u8] = if flags & SYN != 0 { &SYN_OPTIONS } else { &[] };
        let id = g.next_id(src.ip);
        let mut d =
            tcp_datagram(src.ip, dst.ip, id, self.p[from], self.p[to], seq, ack, flags, opts, payload);
        if g.offload_from == Some(src.ip) {
            // Offload: the capture shows the partial (pseudo-header) sum, not the final checksum.
            d[20 + 16] ^= 0x5a;
        }
        g.record(src, dst, d);
    }

    fn open(&mut self, g: &mut Gen) {
        self.seg(g, 0, SYN, b"");
        g.wait(400);
        self.seg(g, 1, SYN | ACK, b"");
        g.wait(400);
        self.seg(g, 0, ACK, b"");
    }

    /// `from` sends `data`; the other side acknowledges it.
    fn say(&mut self, g: &mut Gen, from: usize, data: &[u8]) {
        self.seg(g, from, PSH | ACK, data);
        g.wait(300);
        self.seg(g, 1 - from, ACK, b"");
        g.wait(700);
    }

    /// Bulk data from `from` in MSS-sized segments, acknowledged every second one.
    fn bulk(&mut self, g: &mut Gen, from: usize, data: &[u8], mss: usize) {
        for (i, chunk) in data.chunks(mss).enumerate() {
            self.seg(g, from, ACK | if (i + 1) * mss >= data.len() { PSH } else { 0 }, chunk);
            if i % 2 == 1 {
                self.seg(g, 1 - from, ACK, b"");
            }
        }
        self.seg(g, 1 - from, ACK, b"");
    }

    fn close(&mut self, g: &mut Gen, from: usize) {
        self.seg(g, from, FIN | ACK, b"");
        g.wait(200);
        self.seg(g, 1 - from, FIN | ACK, b"");
        g.wait(200);
        self.seg(g, from, ACK, b"");
    }
}

/// An FTP control connection, client is side 0.
struct Ftp {
    c: Conn,
}

impl Ftp {
    fn cmd(&mut self, g: &mut Gen, line: &str) {
        self.c.say(g, 0, format!("{line}\r\n").as_bytes());
    }
    fn reply(&mut self, g: &mut Gen, line: &str) {
        self.c.say(g, 1, format!("{line}\r\n").as_bytes());
    }
    /// QUIT, its reply, and the close started by `closer`.
    fn quit(&mut self, g: &mut Gen, closer: usize) {
        self.cmd(g, "QUIT");
        self.reply(g, "221 Goodbye.");
        self.c.close(g, closer);
    }
    fn login(&mut self, g: &mut Gen) {
        self.c.open(g);
        self.reply(g, "220 (vsFTPd 3.0.3)");
        self.cmd(g, "USER anonymous");
        self.reply(g, "331 Please specify the password.");
        self.cmd(g, "PASS guest@example.org");
        self.reply(g, "230 Login successful.");
    }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// A data connection opened by `opener` (side 0) towards `to`, carrying `bytes` from `sender_side`.
#[allow(clippy::too_many_arguments)]
fn transfer(
    g: &mut Gen,
    opener: Host,
    op: u16,
    to: Host,
    tp: u16,
    isn: [u32; 2],
    bytes: &[u8],
    sender_side: usize,
) {
    let mut d = Conn::new(opener, op, to, tp, isn);
    d.open(g);
    d.bulk(g, sender_side, bytes, 1448);
    d.close(g, sender_side);
}

// ---------------------------------------------------------------------------------------------------
// The cases

struct Case {
    name: &'static str,
    args: Vec<String>,
    readme: String,
    gen: Gen,
    pcapng: bool,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const CLIENT: [u8; 4] = [10, 0, 0, 2];
const SERVER_OUT: [u8; 4] = [198, 51, 100, 10];
const SERVER_IN: [u8; 4] = [10, 0, 0, 21];
const CLIENT_OUT: [u8; 4] = [198, 51, 100, 7];
/// The inside FTP server's forward.
const FORWARD_21: &str = "tcp:21=10.0.0.21:21";

fn case_port_client_inside() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    let mut f = Ftp { c: Conn::new(c, 40_312, s, 21, [0x1000_0000, 0x7000_0000]) };
    f.login(&mut g);
    f.cmd(&mut g, "TYPE I");
    f.reply(&mut g, "200 Switching to Binary mode.");
    // Same text length available: a length-preserving rewrite.
    f.cmd(&mut g, "PORT 10,0,0,2,156,64");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "RETR report.pdf");
    f.reply(&mut g, "150 Opening BINARY mode data connection for report.pdf (7000 bytes).");
    transfer(&mut g, s, 20, c, 40_000, [0x2000_0000, 0x3000_0000], &data(7000, 1), 0);
    f.reply(&mut g, "226 Transfer complete.");
    // A short port text: the rewritten line is longer, so every later sequence number shifts.
    f.cmd(&mut g, "PORT 10,0,0,2,4,1");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "STOR upload.bin");
    f.reply(&mut g, "150 Ok to send data.");
    transfer(&mut g, s, 20, c, 1025, [0x2100_0000, 0x3100_0000], &data(5000, 2), 1);
    f.reply(&mut g, "226 Transfer complete.");
    f.cmd(&mut g, "port 10,0,0,2,156,70");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "LIST");
    f.reply(&mut g, "150 Here comes the directory listing.");
    transfer(
        &mut g,
        s,
        20,
        c,
        40_006,
        [0x2200_0000, 0x3200_0000],
        b"-rw-r--r-- 1 ftp ftp 7000 Jan 01 report.pdf\r\n",
        0,
    );
    f.reply(&mut g, "226 Directory send OK.");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 1);
    Case {
        name: "port-client-inside",
        args: args(&["--inside", "10.0.0.0/24", "--public-ip", "203.0.113.1"]),
        readme: "Active-mode FTP with the client inside (10.0.0.2) and a server outside (198.51.100.10): \
three PORT commands (one length-preserving, one whose rewrite is longer so every later sequence number \
shifts, one lower-case `port`), each followed by a data connection the server opens from port 20 \
(RETR of 7000 bytes, STOR of 5000 bytes, LIST)."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_eprt_client_inside() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    let mut f = Ftp { c: Conn::new(c, 51_000, s, 21, [0xffff_ff00, 0x0000_1000]) };
    f.login(&mut g);
    f.cmd(&mut g, "EPRT |1|10.0.0.2|40100|");
    f.reply(&mut g, "200 EPRT command successful. Consider using EPSV.");
    f.cmd(&mut g, "RETR a.txt");
    f.reply(&mut g, "150 Opening BINARY mode data connection for a.txt (3000 bytes).");
    transfer(&mut g, s, 20, c, 40_100, [0x4000_0000, 0xffff_fff0], &data(3000, 3), 0);
    f.reply(&mut g, "226 Transfer complete.");
    // Another family than the connection's: refused, left as sent.
    f.cmd(&mut g, "EPRT |2|2001:db8::2|40101|");
    f.reply(&mut g, "522 Network protocol not supported, use (1)");
    f.cmd(&mut g, "eprt !1!10.0.0.2!40102!");
    f.reply(&mut g, "200 EPRT command successful. Consider using EPSV.");
    f.cmd(&mut g, "LIST");
    f.reply(&mut g, "150 Here comes the directory listing.");
    transfer(
        &mut g,
        s,
        20,
        c,
        40_102,
        [0x4100_0000, 0x5100_0000],
        b"-rw-r--r-- 1 ftp ftp 3000 Jan 01 a.txt\r\n",
        0,
    );
    f.reply(&mut g, "226 Directory send OK.");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 1);
    Case {
        name: "eprt-client-inside",
        args: args(&["--inside", "10.0.0.2/32", "--public-ip", "203.0.113.1"]),
        readme: "EPRT (RFC 2428) with the client inside: `EPRT |1|10.0.0.2|40100|` then RETR with a data \
connection; an `EPRT |2|...|` naming IPv6 on an IPv4 connection (refused: wrong family, server answers \
522); a lower-case `eprt` with `!` as delimiter then LIST. The control connection's client sequence \
numbers start just below 2^32 and wrap early in the session."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_pasv_server_inside() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT_OUT, 7), host(SERVER_IN, 21));
    let mut f = Ftp { c: Conn::new(c, 52_100, s, 21, [0x0100_0000, 0x0900_0000]) };
    f.c.open(&mut g);
    // A multi-line greeting whose text looks like an announcement.
    f.reply(&mut g, "220-Welcome. Data ports: 227 Entering Passive Mode (10,0,0,21,4,1)\r\n220 ready.");
    f.cmd(&mut g, "USER anonymous");
    f.reply(&mut g, "331 Please specify the password.");
    f.cmd(&mut g, "PASS guest@example.org");
    f.reply(&mut g, "230 Login successful.");
    f.cmd(&mut g, "PASV");
    f.reply(&mut g, "227 Entering Passive Mode (10,0,0,21,195,80).");
    f.cmd(&mut g, "RETR big.iso");
    transfer(&mut g, c, 52_101, s, 50_000, [0x0200_0000, 0x0a00_0000], &data(9000, 4), 1);
    f.reply(&mut g, "150 Opening BINARY mode data connection for big.iso (9000 bytes).");
    f.reply(&mut g, "226 Transfer complete.");
    f.cmd(&mut g, "EPSV");
    f.reply(&mut g, "229 Entering Extended Passive Mode (|||50001|)");
    f.cmd(&mut g, "LIST");
    transfer(
        &mut g,
        c,
        52_102,
        s,
        50_001,
        [0x0300_0000, 0x0b00_0000],
        b"drwxr-xr-x 2 ftp ftp 4096 Jan 01 pub\r\n",
        1,
    );
    f.reply(&mut g, "150 Here comes the directory listing.");
    f.reply(&mut g, "226 Directory send OK.");
    // A 227 nobody asked for: left as sent, and a connection to it is not let in.
    f.cmd(&mut g, "NOOP");
    f.reply(&mut g, "200 NOOP ok.");
    f.reply(&mut g, "227 Entering Passive Mode (10,0,0,21,195,82).");
    let mut probe = Conn::new(c, 52_103, s, 50_002, [0x0400_0000, 0x0c00_0000]);
    probe.seg(&mut g, 0, SYN, b"");
    g.wait(1_000_000);
    probe.seg_at(&mut g, 0, 0x0400_0000, SYN, b"");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 0);
    Case {
        name: "pasv-server-inside",
        args: args(&[
            "--inside",
            "10.0.0.0/24",
            "--public-ip",
            "203.0.113.1",
            "--forward",
            "tcp:21=10.0.0.21:21",
            "--ftp-port",
            "21",
        ]),
        readme: "Passive-mode FTP with the server inside (10.0.0.21, reached through `--forward \
tcp:21=10.0.0.21:21`) and the client outside (198.51.100.7): a multi-line 220 greeting whose text \
contains a 227-looking line (must not be touched), PASV/227 with a RETR data connection, EPSV/229 with a \
LIST data connection, then a 227 that answers no PASV (refused: unsolicited) and a SYN (plus its \
retransmission) from the client towards the endpoint it names, which must not reach the server."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_passive_client_inside() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    let mut f = Ftp { c: Conn::new(c, 40_500, s, 21, [0x5000_0000, 0x6000_0000]) };
    f.login(&mut g);
    f.cmd(&mut g, "PASV");
    f.reply(&mut g, "227 Entering Passive Mode (198,51,100,10,117,48).");
    f.cmd(&mut g, "RETR x");
    transfer(&mut g, c, 40_501, s, 30_000, [0x5100_0000, 0x6100_0000], &data(2000, 5), 1);
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    f.reply(&mut g, "226 Transfer complete.");
    f.cmd(&mut g, "EPSV");
    f.reply(&mut g, "229 Entering Extended Passive Mode (|||30001|)");
    f.cmd(&mut g, "RETR y");
    transfer(&mut g, c, 40_502, s, 30_001, [0x5200_0000, 0x6200_0000], &data(1000, 6), 1);
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    f.reply(&mut g, "226 Transfer complete.");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 0);
    Case {
        name: "passive-client-inside",
        args: args(&["--inside", "10.0.0.2/32", "--public-ip", "203.0.113.1"]),
        readme: "Passive mode with the client inside: PASV/227 and EPSV/229 answered by an outside server; \
the replies travel WAN→LAN and are never changed; the client opens both data connections outwards."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_bounce_refused() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s, third) = (host(CLIENT, 2), host(SERVER_OUT, 10), host([198, 51, 100, 99], 99));
    let mut f = Ftp { c: Conn::new(c, 40_600, s, 21, [0x7100_0000, 0x7200_0000]) };
    f.login(&mut g);
    // FTP bounce (RFC 2577): the announcement names a third host.
    f.cmd(&mut g, "PORT 198,51,100,99,0,25");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "RETR mail.txt");
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    // The server bounces to the third host: traffic the gateway never sees for the inside.
    transfer(&mut g, s, 20, third, 25, [0x7300_0000, 0x7400_0000], b"HELO x\r\n", 0);
    f.reply(&mut g, "226 Transfer complete.");
    // A privileged port of the client itself: refused, and the server's connection to it is dropped;
    // the client's SYN-ACK and RST (recorded) must open nothing.
    f.cmd(&mut g, "PORT 10,0,0,2,0,22");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "LIST");
    let mut d = Conn::new(s, 20, c, 22, [0x7500_0000, 0x7600_0000]);
    d.seg(&mut g, 0, SYN, b"");
    d.seg(&mut g, 1, SYN | ACK, b"");
    d.seg(&mut g, 0, ACK, b"");
    d.seg(&mut g, 0, PSH | ACK, b"listing\r\n");
    d.seg(&mut g, 1, RST | ACK, b"");
    f.reply(&mut g, "425 Failed to establish connection.");
    // Malformed (a value out of range) and 0,0,0,0 (means the client itself: rewritten).
    f.cmd(&mut g, "PORT 10,0,0,2,300,1");
    f.reply(&mut g, "500 Illegal PORT command.");
    f.cmd(&mut g, "PORT 0,0,0,0,156,90");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "NLST");
    f.reply(&mut g, "150 Here comes the directory listing.");
    transfer(&mut g, s, 20, c, 40_026, [0x7700_0000, 0x7800_0000], b"a.txt\r\n", 0);
    f.reply(&mut g, "226 Directory send OK.");
    // A PORT the server refuses: its pinhole goes, and a later connection to it is dropped.
    f.cmd(&mut g, "PORT 10,0,0,2,156,91");
    f.reply(&mut g, "500 Illegal PORT command.");
    let mut late = Conn::new(s, 20, c, 40_027, [0x7900_0000, 0x7a00_0000]);
    late.seg(&mut g, 0, SYN, b"");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 1);
    Case {
        name: "bounce-refused",
        args: args(&["--inside", "10.0.0.2/32", "--public-ip", "203.0.113.1"]),
        readme: "Policy refusals with the client inside: a bounce attempt (`PORT` naming the third host \
198.51.100.99, which the server then connects to, off the gateway's path); a PORT naming the client's \
own port 22 (below 1024) with the server's connection to it recorded together with the client's SYN-ACK \
and RST (none may pass or open a mapping); a malformed PORT (300 out of range); `PORT 0,0,0,0,...` \
(means the client itself: rewritten) with its data connection; a PORT the server refuses with 500 \
followed by a SYN towards it (its pinhole is gone)."
            .into(),
        gen: g,
        pcapng: false,
    }
}

/// A TLS record of `ty` carrying `body`.
fn tls(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![ty, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn case_auth_tls() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    let mut f = Ftp { c: Conn::new(c, 40_700, s, 21, [0x8100_0000, 0x8200_0000]) };
    f.c.open(&mut g);
    f.reply(&mut g, "220 (vsFTPd 3.0.3)");
    f.cmd(&mut g, "AUTH TLS");
    f.reply(&mut g, "234 Proceed with negotiation.");
    // Fake TLS: records whose bodies contain bytes that look like FTP lines; none may be touched.
    f.c.say(&mut g, 0, &tls(22, &data(300, 7)));
    f.c.say(&mut g, 1, &[tls(22, &data(900, 8)), tls(20, &[1]), tls(22, &data(40, 9))].concat());
    f.c.say(&mut g, 0, &[tls(20, &[1]), tls(22, &data(40, 10))].concat());
    f.c.say(&mut g, 0, &tls(23, b"PORT 10,0,0,2,156,64\r\n"));
    f.c.say(&mut g, 1, &tls(23, b"200 PORT command successful.\r\n"));
    // One record split across two segments, with the split inside its header.
    let rec = tls(23, b"PORT 10,0,0,2,156,65\r\nPORT 10,0,0,2,156,66\r\n");
    f.c.seg(&mut g, 0, ACK, &rec[..3]);
    f.c.seg(&mut g, 0, PSH | ACK, &rec[3..]);
    f.c.seg(&mut g, 1, ACK, b"");
    f.c.say(&mut g, 0, &tls(23, b"CCC\r\n"));
    f.c.say(&mut g, 1, &tls(23, b"200 Control connection now cleartext.\r\n"));
    // close_notify both ways, then cleartext FTP again (RFC 4217 section 11).
    f.c.say(&mut g, 0, &tls(21, &[1, 0]));
    f.c.say(&mut g, 1, &tls(21, &[1, 0]));
    f.cmd(&mut g, "PORT 10,0,0,2,156,67");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "RETR clear.txt");
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    transfer(&mut g, s, 20, c, 40_003, [0x8300_0000, 0x8400_0000], &data(1500, 11), 0);
    f.reply(&mut g, "226 Transfer complete.");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 1);
    Case {
        name: "auth-tls",
        args: args(&["--inside", "10.0.0.2/32", "--public-ip", "203.0.113.1"]),
        readme:
            "AUTH TLS (RFC 4217) with the client inside. After `234` the control connection carries fake \
TLS records (random handshake bodies, ChangeCipherSpec, application data whose plaintext bodies are \
`PORT 10,0,0,2,...` lines, one record split inside its 5-byte header across two segments, an \
encrypted CCC answered 200, close_notify alerts both ways); none of it may change. Then cleartext FTP \
resumes: a PORT that must be rewritten, and its data connection."
                .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_quirks_vlan_fcs() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    g.vlan = Some(100);
    g.fcs = true;
    g.offload_from = Some(Ipv4Addr::from(CLIENT));
    g.duplicate = true;
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    // ARP (not IP) first.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&c.mac);
    arp.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&c.mac);
    arp.extend_from_slice(&c.ip.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 0, 0, 1]);
    arp.resize(60, 0);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&arp);
    arp.extend_from_slice(&crc.to_le_bytes());
    g.raw(arp);
    let mut f = Ftp { c: Conn::new(c, 40_800, s, 21, [0x9100_0000, 0x9200_0000]) };
    f.login(&mut g);
    // The PORT line split in the middle of its numbers, then the same bytes retransmitted as one.
    let start = f.c.next[0];
    let line = b"PORT 10,0,0,2,156,64\r\n";
    f.c.seg(&mut g, 0, ACK, &line[..11]);
    f.c.seg(&mut g, 0, PSH | ACK, &line[11..]);
    g.wait(200_000);
    f.c.seg_at(&mut g, 0, start, PSH | ACK, line);
    f.c.seg(&mut g, 1, ACK, b"");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "STOR big.bin");
    f.reply(&mut g, "150 Ok to send data.");
    // A TSO capture: the client's side hands 3 x MSS to the NIC in one datagram.
    let mut d = Conn::new(s, 20, c, 40_000, [0x9300_0000, 0x9400_0000]);
    d.open(&mut g);
    d.seg(&mut g, 1, ACK, &data(4344, 12));
    d.seg(&mut g, 0, ACK, b"");
    d.seg(&mut g, 1, PSH | ACK, &data(700, 13));
    d.seg(&mut g, 0, ACK, b"");
    d.close(&mut g, 1);
    f.reply(&mut g, "226 Transfer complete.");
    // A ping through the gateway.
    let mut echo = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    echo.extend_from_slice(b"ping data");
    let cs = rfc1071(&echo);
    echo[2..4].copy_from_slice(&cs.to_be_bytes());
    let id = g.next_id(c.ip);
    g.record(c, s, ipv4(c.ip, s.ip, PROTO_ICMP, id, 64, &echo));
    echo[0] = 0;
    echo[2] = 0;
    echo[3] = 0;
    let cs = rfc1071(&echo);
    echo[2..4].copy_from_slice(&cs.to_be_bytes());
    let id = g.next_id(s.ip);
    g.record(s, c, ipv4(s.ip, c.ip, PROTO_ICMP, id, 57, &echo));
    // An IPv6 neighbour solicitation from the client (link-local): routed, hop limit - 1.
    // RFC 4861 §4.3: type 135, checksum, reserved, target address (the checksum is left 0, as an
    // offloading sender's capture shows it; the replay repairs it).
    let mut v6 = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1]);
    v6.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    g.record(c, s, v6);
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 1);
    Case {
        name: "quirks-vlan-fcs-offload",
        args: args(&[
            "--inside",
            "10.0.0.2/32",
            "--inside",
            "fe80::/64",
            "--public-ip",
            "203.0.113.1",
            "--keep-link-layer",
        ]),
        readme: "Capture oddities, replayed with `--keep-link-layer`: every frame 802.1Q-tagged (VLAN 100) \
with an Ethernet FCS and recorded twice (mirrored port); the client's frames carry wrong TCP checksums \
(offload on the capturing host); an ARP frame; a PORT line split inside its numbers across two \
segments and then retransmitted whole; an active-mode STOR whose first datagram is a 4344-byte TSO \
send; a ping through the gateway; an IPv6 neighbour solicitation from fe80::2 (routed, hop limit - 1)."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_pickup_sll() -> Case {
    let mut g = Gen::new(Link::Sll);
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    // The capture starts in the middle of an established session: no handshake, and the first client
    // segment starts in the middle of a line.
    let mut f = Ftp { c: Conn::new(c, 40_900, s, 21, [0xa100_0000, 0xa200_0000]) };
    f.c.seg(&mut g, 0, PSH | ACK, b"10,0,0,2,156,64\r\n");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "NOOP");
    f.reply(&mut g, "200 NOOP ok.");
    f.cmd(&mut g, "PORT 10,0,0,2,156,65");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "RETR after-pickup.txt");
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    transfer(&mut g, s, 20, c, 40_001, [0xa300_0000, 0xa400_0000], &data(2500, 14), 0);
    f.reply(&mut g, "226 Transfer complete.");
    // A gap in the recording: the capturing host lost the client's next command (the server's answer
    // acknowledges it). The gateway never sees those bytes; the server's acknowledgement shows they went
    // another way, so the framer jumps the gap and resynchronises at the next line end (issue 11): the
    // rest of the client's stream crosses, nothing stalls.
    g.wait(5_000_000);
    f.c.next[0] = f.c.next[0].wrapping_add(6);
    f.reply(&mut g, "200 NOOP ok.");
    f.cmd(&mut g, "QUIT");
    f.reply(&mut g, "221 Goodbye.");
    f.c.close(&mut g, 1);
    Case {
        name: "pickup-sll-pcapng",
        args: args(&["--inside", "10.0.0.0/8", "--public-ip", "203.0.113.1"]),
        readme: "A pcapng file with the Linux cooked (SLL) link type, recorded mid-session: no handshake, \
the first client segment starts in the middle of a PORT line (its tail must not be judged), then NOOP, a \
PORT that must be rewritten and its data connection; then the capture loses one client segment (`NOOP`, acknowledged by the server): the server's acknowledgement shows the bytes went another way, so the gateway jumps the gap (`alg.gaps`), leaves the line after it as sent (`alg.gap_lines`) and the rest of the session crosses."
            .into(),
        gen: g,
        pcapng: true,
    }
}

fn case_tcp_attacks() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT, 2), host(SERVER_OUT, 10));
    let mut f = Ftp { c: Conn::new(c, 41_000, s, 21, [0xb100_0000, 0xb200_0000]) };
    f.login(&mut g);
    // An off-path injector spoofing the server while a PORT awaits its reply: a blind "500" would take
    // the pinhole away, a blind RST or FIN would end the mapping, an ACK of bytes the client never sent
    // would move the ALG's horizon. All are beyond the window: dropped, nothing changes.
    f.cmd(&mut g, "PORT 10,0,0,2,160,10");
    let blind = f.c.next[1].wrapping_add(0x6000_0000);
    f.c.seg_at(&mut g, 1, blind, PSH | ACK, b"500 Illegal PORT command.\r\n");
    f.c.seg_at(&mut g, 1, blind.wrapping_add(29), RST | ACK, b"");
    f.c.seg_at(&mut g, 1, blind.wrapping_add(29), FIN | ACK, b"");
    let (sp, cp) = (f.c.p[1], f.c.p[0]);
    let beyond = f.c.next[0].wrapping_add(0x5000_0000);
    let id = g.next_id(s.ip);
    g.record(s, c, tcp_datagram(s.ip, c.ip, id, sp, cp, f.c.next[1], beyond, ACK, &[], b""));
    // An RST in the window but not at the client's next byte (RFC 5961 §3.2): passed on, ignored.
    f.c.seg_at(&mut g, 1, f.c.next[1].wrapping_add(100), RST | ACK, b"");
    f.reply(&mut g, "200 PORT command successful. Consider using PASV.");
    f.cmd(&mut g, "RETR after-attack.bin");
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    transfer(&mut g, s, 20, c, 40_970, [0xb300_0000, 0xb400_0000], &data(5000, 21), 0);
    f.reply(&mut g, "226 Transfer complete.");
    // The capture loses a server reply the client acknowledges: the gateway jumps the gap.
    f.cmd(&mut g, "NOOP");
    f.c.next[1] = f.c.next[1].wrapping_add(b"200 NOOP ok.\r\n".len() as u32);
    g.wait(300);
    f.cmd(&mut g, "PASV");
    f.reply(&mut g, "227 Entering Passive Mode (198,51,100,10,117,48).");
    f.cmd(&mut g, "LIST");
    transfer(&mut g, c, 41_001, s, 30_000, [0xb500_0000, 0xb600_0000], b"-rw-r--r-- 1 ftp ftp 5000 x\r\n", 1);
    f.reply(&mut g, "226 Directory send OK.");
    f.quit(&mut g, 1);
    // NAT slipstreaming: a page makes the client POST to an attacker's port 21; the body holds a PORT
    // line naming the client's port 8080 (31,144). Not FTP: no pinhole, and the attacker's SYN to it
    // is refused, the client's SYN-ACK to that (recorded) opens nothing.
    let evil = host([198, 51, 100, 66], 66);
    let mut h = Conn::new(c, 41_100, evil, 21, [0xb700_0000, 0xb800_0000]);
    h.open(&mut g);
    h.say(
        &mut g,
        0,
        b"POST /upload HTTP/1.1\r\nHost: 198.51.100.66:21\r\nContent-Length: 22\r\n\r\nPORT 10,0,0,2,31,144\r\n",
    );
    let mut probe = Conn::new(evil, 20, c, 8080, [0xb900_0000, 0xba00_0000]);
    probe.seg(&mut g, 0, SYN, b"");
    probe.seg(&mut g, 1, SYN | ACK, b"");
    h.close(&mut g, 0);
    Case {
        name: "tcp-attacks",
        args: args(&["--inside", "10.0.0.2/32", "--public-ip", "203.0.113.1"]),
        readme: "Attacks on TCP state and on the ALG's trust, client inside (issue 11). While a PORT awaits its reply, an off-path injector spoofing the server sends a `500` reply, an RST, a FIN (all at a blind sequence number) and an ACK of bytes the client never sent: beyond the window, dropped (`drops.tcp_out_of_window` 4), changing nothing, so the real `200` keeps the pinhole and the data connection crosses. An RST in the window but not exact is passed on and ignored (`tcp.rst_ignored` 1). The capture then loses a server reply the client acknowledges: the gateway jumps the gap (`alg.gaps`) and PASV/LIST still work. Last, NAT slipstreaming: an HTTP POST to an outside port 21 whose body holds `PORT 10,0,0,2,31,144` is not FTP (`alg.refused.not_ftp` 1, no pinhole); the attacker's SYN to port 8080 is refused (`no_mapping`) and the client's recorded SYN-ACK opens nothing (`refused_flow`)."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn case_forward_pickup() -> Case {
    let mut g = Gen::new(Link::Ethernet);
    let (c, s) = (host(CLIENT_OUT, 7), host(SERVER_IN, 21));
    // The capture starts mid-session (the gateway restarted): the outside client speaks first.
    let mut f = Ftp { c: Conn::new(c, 52_300, s, 21, [0xc100_0000, 0xc200_0000]) };
    f.cmd(&mut g, "NOOP");
    f.reply(&mut g, "200 NOOP ok.");
    f.cmd(&mut g, "PASV");
    f.reply(&mut g, "227 Entering Passive Mode (10,0,0,21,195,90).");
    f.cmd(&mut g, "RETR picked-up.bin");
    transfer(&mut g, c, 52_301, s, 50_010, [0xc300_0000, 0xc400_0000], &data(4000, 9), 1);
    f.reply(&mut g, "150 Opening BINARY mode data connection.");
    f.reply(&mut g, "226 Transfer complete.");
    f.quit(&mut g, 0);
    Case {
        name: "forward-pickup",
        args: args(&["--inside", "10.0.0.0/24", "--public-ip", "203.0.113.1", "--forward", FORWARD_21]),
        readme: "A forwarded inside FTP server (10.0.0.21 behind `--forward tcp:21=10.0.0.21:21`) recorded mid-session, the outside client speaking first (issue 11: forwards are picked up from either side, as Linux conntrack does). The control connection is picked up from the client's NOOP, the ALG starts at the next line start, and the PASV reply's 227 is rewritten with its pinhole used by the RETR data connection."
            .into(),
        gen: g,
        pcapng: false,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case_port_client_inside(),
        case_eprt_client_inside(),
        case_passive_client_inside(),
        case_pasv_server_inside(),
        case_bounce_refused(),
        case_auth_tls(),
        case_quirks_vlan_fcs(),
        case_pickup_sll(),
        case_tcp_attacks(),
        case_forward_pickup(),
    ]
}

/// Where the replays' outputs go (only the summary is kept, copied into the case).
fn scratch() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("replay-gen")
}

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("pcap").join(name)
}

fn main() {
    for case in cases() {
        let dir = case_dir(case.name);
        fs::create_dir_all(&dir).unwrap();
        let input = if case.pcapng { "input.pcapng" } else { "input.pcap" };
        if case.pcapng {
            case.gen.write_pcapng(&dir.join(input));
        } else {
            case.gen.write_pcap(&dir.join(input));
        }
        // Timestamps survive the round trip (pcapng resolution included).
        let mut r = ftpnat::io::pcap::CaptureReader::open(&dir.join(input)).unwrap();
        let first = r.next_frame().unwrap().unwrap();
        assert_eq!(first.ts_micros, case.gen.frames[0].0, "{}: timestamp round trip", case.name);
        let mut argv = vec![input.to_string()];
        argv.extend(case.args.iter().cloned());
        fs::write(dir.join("args"), argv.join("\n") + "\n").unwrap();
        // The expected summary: what the replay reports now (reviewed when regenerated).
        let tmp = scratch().join(case.name);
        fs::create_dir_all(&tmp).unwrap();
        let mut full = vec![dir.join(input).display().to_string()];
        full.extend(case.args.iter().cloned());
        for (flag, file) in
            [("--lan-out", "lan.pcap"), ("--wan-out", "wan.pcap"), ("--summary", "summary.json")]
        {
            full.push(flag.into());
            full.push(tmp.join(file).display().to_string());
        }
        let a = ftpnat::replay::cli::parse_args(&full).unwrap();
        ftpnat::replay::run(&a.options(), &a.files()).unwrap();
        fs::copy(tmp.join("summary.json"), dir.join("expected-summary.json")).unwrap();
        let readme = format!(
            "# {}\n\n{}\n\n## How this capture was made\n\nGenerated, not recorded: `cargo run --release --example \
regenerate_cases` runs `{}` in `examples/regenerate_cases.rs`, which builds every frame byte by byte \
(IPv4/TCP headers with consistent sequence and acknowledgement numbers, RFC 1071 checksums, {} framing) \
as a capture on a flat network without NAT would show the session. Timestamps start at \
2024-01-01T00:00:00Z. `expected-summary.json` is the replay's summary at generation time; `args` holds \
the replay arguments, one per line (the test adds `--lan-out`, `--wan-out` and `--summary`).\n",
            case.name,
            case.readme,
            fn_name(case.name),
            if case.gen.link == Link::Sll { "Linux cooked (SLL)" } else { "Ethernet" }
        );
        fs::write(dir.join("README.md"), readme).unwrap();
        println!("regenerated {} ({} frames)", case.name, case.gen.frames.len());
    }
    // Recorded cases (netns-scripts/capture.sh) keep their capture; only the expected summary is redone.
    let generated: Vec<&str> = cases().iter().map(|c| c.name).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("pcap");
    for e in fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if dir.join("args").exists() && !generated.contains(&name.as_str()) {
            expected_summary(&dir);
            println!("refreshed the expected summary of recorded case {name}");
        }
    }
}

/// Writes `expected-summary.json`: what the replay reports now for the case's input and `args`
/// (review the diff when regenerating).
fn expected_summary(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let list: Vec<String> = fs::read_to_string(dir.join("args"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let tmp = scratch().join(&name);
    fs::create_dir_all(&tmp).unwrap();
    let mut full = vec![dir.join(&list[0]).display().to_string()];
    full.extend(list[1..].iter().cloned());
    for (flag, file) in [("--lan-out", "lan.pcap"), ("--wan-out", "wan.pcap"), ("--summary", "summary.json")]
    {
        full.push(flag.into());
        full.push(tmp.join(file).display().to_string());
    }
    let a = ftpnat::replay::cli::parse_args(&full).unwrap();
    ftpnat::replay::run(&a.options(), &a.files()).unwrap();
    fs::copy(tmp.join("summary.json"), dir.join("expected-summary.json")).unwrap();
}

fn fn_name(case: &str) -> String {
    match case {
        "quirks-vlan-fcs-offload" => "case_quirks_vlan_fcs".into(),
        "pickup-sll-pcapng" => "case_pickup_sll".into(),
        other => format!("case_{}", other.replace('-', "_")),
    }
}
