//! Engine scenarios shared by the microbenchmarks (`benches/engine.rs`), the no-allocation test
//! (`tests/no_alloc.rs`) and the memory example (`examples/flow_memory.rs`).
//!
//! Owns: engines with flows already set up, the packets of those flows (built with [`crate::pkt`]),
//! and the replay of a packet template through a reused buffer. Must not: time anything or count
//! allocations; the users do that.

use std::net::Ipv4Addr;

use ftpnat_core::wire::{Ipv4Packet, SeqNum};
use ftpnat_core::{config::Config, engine::Engine, engine::Verdict, flow::Side, time::Instant};

pub use crate::consts::{ACK, FIN, PSH, PUBLIC, REMOTE, SYN};
use crate::pkt::{Ip, Tcp};

/// An inside client whose address text is 4 bytes shorter than the public one in a PORT line
/// ("10,0,0,2" vs "198,51,100,1"): its PORT rewrite changes the length.
pub const CLIENT: Ipv4Addr = crate::consts::LAN_HOST;
/// An inside client whose address text has the public address's length ("10,100,200,2"): a zero-delta
/// rewrite.
pub const CLIENT_SAME_LEN: Ipv4Addr = Ipv4Addr::new(10, 100, 200, 2);

/// The time every scenario runs at: expiry never fires, so only the packet path is measured.
pub const NOW: Instant = Instant::from_secs(1_000);

pub fn config() -> Config {
    let mut c = Config::new(vec!["10.0.0.0/8".parse().expect("prefix")], PUBLIC);
    // The table's index is sized for the bound at start: 2^20 is the largest table a scenario fills
    // (the 1 M-flow lookup rows and `flow_memory`), so they measure a table sized as an operator would.
    c.max_flows = 1 << 20;
    c.max_flows_per_host = 1 << 20;
    // One client opens every new flow here: the per-host share of ports (1/16 by default) would turn
    // the new-flow rows into refusals.
    c.max_ports_per_host = ftpnat_core::config::PortQuota::Ports(65_536);
    c.validate().expect("valid bench config");
    c
}

/// A TCP segment (no options, window 64000) in a datagram with DF set, TTL 64.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    Ip::new(src, dst).tcp(&Tcp::new(sp, dp, seq, ack, flags, payload))
}

pub fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    Ip::new(src, dst).udp(sp, dp, payload, false)
}

/// An echo request or reply with 56 bytes of body (what `ping` sends).
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16, request: bool) -> Vec<u8> {
    Ip::new(src, dst).icmp_echo(ident, seq, request, &[0x5a; 56])
}

/// Sets seq and ack of a TCP template copy; the wire setters keep the checksum right.
pub fn set_seq_ack(p: &mut [u8], seq: u32, ack: u32) {
    let mut ip = Ipv4Packet::new_unchecked(p);
    if let Ok(mut t) = ip.tcp_mut() {
        t.set_seq_number(SeqNum::new(seq));
        t.set_ack_number(SeqNum::new(ack));
    }
}

/// The sequence number just past the payload of a TCP packet (what its receiver acknowledges).
pub fn tcp_end(p: &[u8]) -> u32 {
    let ip = Ipv4Packet::new_unchecked(p);
    let t = ip.tcp().expect("a TCP packet");
    t.seq_number().add(t.payload().len() as u32).get()
}

/// Drives one engine at [`NOW`] through a buffer that is reused (no allocation per packet).
pub struct Rig {
    pub engine: Engine,
    pub buf: Vec<u8>,
}

impl Rig {
    pub fn new(config: Config) -> Rig {
        Rig { engine: Engine::new(config), buf: Vec::with_capacity(65_536) }
    }

    /// Copies `tpl` into the reused buffer, hands it to the engine and drains whatever else it emits.
    #[inline]
    pub fn send(&mut self, from: Side, tpl: &[u8]) -> Verdict {
        self.buf.clear();
        self.buf.extend_from_slice(tpl);
        let v = self.engine.handle_packet(NOW, from, &mut self.buf);
        while self.engine.poll_transmit().is_some() {}
        v
    }

    /// Like [`Rig::send`] but sets seq/ack in the copy first.
    #[inline]
    pub fn send_tcp(&mut self, from: Side, tpl: &[u8], seq: u32, ack: u32) -> Verdict {
        self.buf.clear();
        self.buf.extend_from_slice(tpl);
        set_seq_ack(&mut self.buf, seq, ack);
        let v = self.engine.handle_packet(NOW, from, &mut self.buf);
        while self.engine.poll_transmit().is_some() {}
        v
    }

    /// Sends a packet that must be forwarded; panics (scenario setup only) otherwise.
    pub fn pass(&mut self, from: Side, pkt: &[u8]) -> Vec<u8> {
        let v = self.send(from, pkt);
        assert_eq!(v, Verdict::Forward(from.other()), "setup packet not forwarded");
        self.buf.clone()
    }
}

/// An established TCP flow 10.0.0.2:40000 -> REMOTE:80 with 1400-byte segment templates each way:
/// `(outbound as the inside host sends it, inbound as the remote sends it to the public address)`.
pub fn tcp_flow(rig: &mut Rig, payload_len: usize) -> (Vec<u8>, Vec<u8>) {
    let (c, s) = (Endpoint(CLIENT, 40_000), Endpoint(REMOTE, 80));
    rig.pass(Side::Inside, &tcp(c.0, c.1, s.0, s.1, 1000, 0, SYN, &[]));
    let synack = rig.pass(Side::Outside, &tcp(s.0, s.1, PUBLIC, 40_000, 5000, 1001, SYN | ACK, &[]));
    let _ = synack;
    rig.pass(Side::Inside, &tcp(c.0, c.1, s.0, s.1, 1001, 5001, ACK, &[]));
    let data = vec![0x42; payload_len];
    let out = tcp(c.0, c.1, s.0, s.1, 1001, 5001, ACK | PSH, &data);
    let inb = tcp(s.0, s.1, PUBLIC, 40_000, 5001, 1001, ACK | PSH, &data);
    (out, inb)
}

/// An established UDP flow 10.0.0.2:5353 -> REMOTE:53: `(outbound, inbound)` templates.
pub fn udp_flow(rig: &mut Rig, payload_len: usize) -> (Vec<u8>, Vec<u8>) {
    let data = vec![0x17; payload_len];
    let out = udp(CLIENT, 5353, REMOTE, 53, &data);
    rig.pass(Side::Inside, &out);
    let inb = udp(REMOTE, 53, PUBLIC, 5353, &data);
    rig.pass(Side::Outside, &inb);
    (out, inb)
}

/// An ICMP echo session with identifier 0x0777: `(request, reply)` templates.
pub fn icmp_flow(rig: &mut Rig) -> (Vec<u8>, Vec<u8>) {
    let req = icmp_echo(CLIENT, REMOTE, 0x0777, 1, true);
    rig.pass(Side::Inside, &req);
    let rep = icmp_echo(REMOTE, PUBLIC, 0x0777, 1, false);
    rig.pass(Side::Outside, &rep);
    (req, rep)
}

struct Endpoint(Ipv4Addr, u16);

/// An FTP control connection from an inside client to REMOTE:21, handshake and banner done, with
/// the sequence numbers of both sides tracked so commands and replies can follow.
pub struct Ftp {
    pub client: Ipv4Addr,
    /// Client's next sequence number (its own space).
    pub cseq: u32,
    /// Server's next sequence number (client and server spaces agree: replies are not rewritten).
    pub sseq: u32,
    /// The client's bytes as the server has seen them (the server's ack), in the server's space.
    pub s_ack: u32,
    cmd_tpl: Vec<u8>,
    reply_tpl: Vec<u8>,
    port_tpl: Vec<u8>,
    /// Offset of the data port text in `port_tpl`, and how many PORTs were sent.
    port_text_at: usize,
    ports: DataPorts,
    ports_sent: u32,
    pub client_ack_tpl: Vec<u8>,
    pub server_ack_tpl: Vec<u8>,
}

pub const CLIENT_PORT: u16 = 40_000;

/// How the data ports named in PORT lines are written. Each PORT names a new port, as clients do,
/// with a constant text length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DataPorts {
    /// "1xx,1xx" (ports 25700-51199).
    ThreeDigits,
    /// "xx,xx" (ports 2570-25443): too short for the gateway to pick a public port whose text
    /// makes up for a longer public address, so the rewrite changes the line length.
    TwoDigits,
}

impl Ftp {
    pub fn open(rig: &mut Rig, client: Ipv4Addr, ports: DataPorts) -> Ftp {
        Ftp::open_from(rig, client, CLIENT_PORT, ports)
    }

    /// [`Ftp::open`] from the client's port `cp`, which must be free on the public address too (the
    /// server answers to `PUBLIC:cp`): several sessions side by side each need their own.
    pub fn open_from(rig: &mut Rig, client: Ipv4Addr, cp: u16, ports: DataPorts) -> Ftp {
        rig.pass(Side::Inside, &tcp(client, cp, REMOTE, 21, 1000, 0, SYN, &[]));
        rig.pass(Side::Outside, &tcp(REMOTE, 21, PUBLIC, cp, 9000, 1001, SYN | ACK, &[]));
        rig.pass(Side::Inside, &tcp(client, cp, REMOTE, 21, 1001, 9001, ACK, &[]));
        let banner = b"220 bench server ready\r\n";
        rig.pass(Side::Outside, &tcp(REMOTE, 21, PUBLIC, cp, 9001, 1001, ACK | PSH, banner));
        let sseq = 9001 + banner.len() as u32;
        let o = client.octets();
        let text = match ports {
            DataPorts::ThreeDigits => "100,100",
            DataPorts::TwoDigits => "10,10",
        };
        let port_line = format!("PORT {},{},{},{},{text}\r\n", o[0], o[1], o[2], o[3]);
        Ftp {
            client,
            cseq: 1001,
            sseq,
            s_ack: 1001,
            cmd_tpl: tcp(client, cp, REMOTE, 21, 0, 0, ACK | PSH, b"NOOP\r\n"),
            reply_tpl: tcp(REMOTE, 21, PUBLIC, cp, 0, 0, ACK | PSH, b"200 Command okay.\r\n"),
            port_tpl: tcp(client, cp, REMOTE, 21, 0, 0, ACK | PSH, port_line.as_bytes()),
            port_text_at: 40 + port_line.len() - 2 - text.len(),
            ports,
            ports_sent: 0,
            client_ack_tpl: tcp(client, cp, REMOTE, 21, 0, 0, ACK, &[]),
            server_ack_tpl: tcp(REMOTE, 21, PUBLIC, cp, 0, 0, ACK, &[]),
        }
    }

    fn payload_len(tpl: &[u8]) -> u32 {
        (tpl.len() - 40) as u32
    }

    /// Writes the next data port into the PORT template.
    fn next_port(&mut self) {
        let i = self.ports_sent;
        self.ports_sent = self.ports_sent.wrapping_add(1);
        let at = self.port_text_at;
        match self.ports {
            DataPorts::ThreeDigits => {
                let t = &mut self.port_tpl[at..at + 7];
                t[..3].copy_from_slice(&digits3(100 + (i / 100) % 100));
                t[4..].copy_from_slice(&digits3(100 + i % 100));
            }
            DataPorts::TwoDigits => {
                let t = &mut self.port_tpl[at..at + 5];
                t[..2].copy_from_slice(&digits3(10 + (i / 90) % 90)[1..]);
                t[3..].copy_from_slice(&digits3(10 + i % 90)[1..]);
            }
        }
        Ipv4Packet::new_unchecked(&mut self.port_tpl[..]).fill_transport_checksum();
    }

    /// One command (PORT naming a new data port when `port`, else NOOP) and the server's `200` reply
    /// acknowledging it. Returns the verdicts of both.
    #[inline]
    pub fn round(&mut self, rig: &mut Rig, port: bool) -> (Verdict, Verdict) {
        if port {
            self.next_port();
        }
        let tpl = if port { &self.port_tpl } else { &self.cmd_tpl };
        let len = Self::payload_len(tpl);
        let v1 = rig.send_tcp(Side::Inside, tpl, self.cseq, self.sseq);
        if matches!(v1, Verdict::Forward(_)) {
            self.s_ack = tcp_end(&rig.buf);
        }
        self.cseq = self.cseq.wrapping_add(len);
        let rlen = Self::payload_len(&self.reply_tpl);
        let v2 = rig.send_tcp(Side::Outside, &self.reply_tpl, self.sseq, self.s_ack);
        self.sseq = self.sseq.wrapping_add(rlen);
        (v1, v2)
    }

    /// A pure ACK from the client: its seq is mapped by the client stream's delta.
    #[inline]
    pub fn client_ack(&self, rig: &mut Rig) -> Verdict {
        rig.send_tcp(Side::Inside, &self.client_ack_tpl, self.cseq, self.sseq)
    }

    /// A pure ACK from the server: its ack is unmapped into the client's space.
    #[inline]
    pub fn server_ack(&self, rig: &mut Rig) -> Verdict {
        rig.send_tcp(Side::Outside, &self.server_ack_tpl, self.sseq, self.s_ack)
    }
}

/// Three decimal digits of `n` (< 1000), leading zeros kept.
fn digits3(n: u32) -> [u8; 3] {
    [b'0' + (n / 100 % 10) as u8, b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]
}

/// A small deterministic generator (xorshift64*), so scenarios need no `rand`.
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The UDP packet of flow `i` of [`fill_udp_flows`]: inside host 10.(i/64k).x.y sends from port
/// 10000 + (i % 16) to a remote whose address and port spread the flows (EIM keeps one public port per
/// inside endpoint, so 1 M flows need no more public ports than inside endpoints).
pub fn udp_flow_packet(i: u32, payload: &[u8]) -> Vec<u8> {
    let (host, sport, dst, dport) = udp_flow_tuple(i);
    udp(host, sport, dst, dport, payload)
}

pub fn udp_flow_tuple(i: u32) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    // 4096 inside endpoints (256 hosts x 16 ports), each talking to i / 4096 distinct remotes.
    let ep = i % 4096;
    let host = Ipv4Addr::new(10, 1, (ep / 16) as u8, 2);
    let sport = 10_000 + (ep % 16) as u16;
    let r = i / 4096;
    let dst = Ipv4Addr::new(203, 0, (r >> 8) as u8, r as u8);
    (host, sport, dst, 443)
}

/// The reply a remote sends to flow `i` (the public port is the inside port: port preservation).
pub fn udp_reply_packet(i: u32, payload: &[u8]) -> Vec<u8> {
    let (_, sport, dst, dport) = udp_flow_tuple(i);
    udp(dst, dport, PUBLIC, sport, payload)
}

/// Creates `n` UDP flows through the engine (each one packet out). Returns how many were forwarded.
pub fn fill_udp_flows(rig: &mut Rig, n: u32) -> u32 {
    let mut ok = 0;
    let mut tpl = udp_flow_packet(0, &[0; 16]);
    for i in 0..n {
        let (host, sport, dst, dport) = udp_flow_tuple(i);
        let mut ip = Ipv4Packet::new_unchecked(&mut tpl[..]);
        ip.set_src_addr(host);
        ip.set_dst_addr(dst);
        if let Ok(mut u) = ip.udp_mut() {
            u.set_src_port(sport);
            u.set_dst_port(dport);
        }
        if rig.send(Side::Inside, &tpl) == Verdict::Forward(Side::Outside) {
            ok += 1;
        }
    }
    ok
}
