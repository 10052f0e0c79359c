//! Packet inspection for the harness: the independent validity check of every packet that leaves the
//! middlebox, one-line summaries for the packet log, and small header readers tests use to pick packets.
//!
//! Owns: reading IPv4/TCP/UDP/ICMP bytes with etherparse (an implementation independent of ftpnat's
//! `wire` module, so a checksum bug there cannot hide itself). Must not: modify packets or know about
//! the network's topology.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use etherparse::{Icmpv4Slice, IpNumber, Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice};

/// The kit's independent validity check of one IPv4 datagram (`ftpnat_testkit::check`).
pub use ftpnat_testkit::check::check_packet;

/// Lowercase hex, 32 bytes a line, for failure messages.
pub fn hex(pkt: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in pkt.chunks(32).enumerate() {
        let _ = write!(s, "{:04x}: ", i * 32);
        for b in chunk {
            let _ = write!(s, "{b:02x}");
        }
        s.push('\n');
    }
    s
}

/// The parts of a TCP segment tests usually look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpInfo {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
}

/// `Some` for an unfragmented, well-formed IPv4 TCP segment.
pub fn tcp_info(pkt: &[u8]) -> Option<TcpInfo> {
    let ip = Ipv4HeaderSlice::from_slice(pkt).ok()?;
    if ip.protocol() != IpNumber::TCP || ip.is_fragmenting_payload() {
        return None;
    }
    let end = usize::from(ip.total_len()).min(pkt.len());
    let payload = pkt.get(ip.slice().len()..end)?;
    let tcp = TcpHeaderSlice::from_slice(payload).ok()?;
    Some(TcpInfo {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: payload[tcp.slice().len()..].to_vec(),
    })
}

/// The destination address of an IPv4 datagram, if it has a readable header.
pub fn dst_addr(pkt: &[u8]) -> Option<Ipv4Addr> {
    Ipv4HeaderSlice::from_slice(pkt).ok().map(|ip| ip.destination_addr())
}

/// `true` when the packet is TCP and either port equals `port`.
pub fn has_tcp_port(pkt: &[u8], port: u16) -> bool {
    tcp_info(pkt).is_some_and(|t| t.sport == port || t.dport == port)
}

/// Escapes payload bytes for a log line: printable ASCII as is, CR/LF as `\r`/`\n`, others as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// One line describing a packet: addresses, ports, flags, seq/ack, payload length and a payload preview.
/// Works on a packet's head too: lengths come from the IP header, the preview from the bytes present.
pub fn summary(pkt: &[u8]) -> String {
    let Ok(ip) = Ipv4HeaderSlice::from_slice(pkt) else {
        return format!("non-IPv4 ({} bytes)", pkt.len());
    };
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let ip_len = ip.slice().len();
    let rest = &pkt[ip_len..];
    let frag = if ip.is_fragmenting_payload() { " (fragment)" } else { "" };
    match ip.protocol() {
        IpNumber::TCP if frag.is_empty() => match TcpHeaderSlice::from_slice(rest) {
            Ok(h) => {
                let mut flags = String::new();
                for (on, c) in
                    [(h.syn(), 'S'), (h.fin(), 'F'), (h.rst(), 'R'), (h.psh(), 'P'), (h.ack(), '.')]
                {
                    if on {
                        flags.push(c);
                    }
                }
                let hl = h.slice().len();
                let len = usize::from(ip.total_len()).saturating_sub(ip_len + hl);
                let avail = &rest[hl..];
                let preview = &avail[..avail.len().min(len).min(48)];
                let more = if len > preview.len() { "…" } else { "" };
                let text = if len == 0 { String::new() } else { format!(" \"{}{more}\"", escape(preview)) };
                format!(
                    "tcp {src}:{} > {dst}:{} [{flags}] seq={} ack={} len={len}{text}",
                    h.source_port(),
                    h.destination_port(),
                    h.sequence_number(),
                    h.acknowledgment_number(),
                )
            }
            Err(_) => format!("tcp {src} > {dst} (truncated)"),
        },
        IpNumber::UDP if frag.is_empty() => match UdpHeaderSlice::from_slice(rest) {
            Ok(u) => {
                format!("udp {src}:{} > {dst}:{} len={}", u.source_port(), u.destination_port(), u.length())
            }
            Err(_) => format!("udp {src} > {dst} (truncated)"),
        },
        IpNumber::ICMP if frag.is_empty() => match Icmpv4Slice::from_slice(rest) {
            Ok(i) => format!("icmp {src} > {dst} type={} code={}", i.type_u8(), i.code_u8()),
            Err(_) => format!("icmp {src} > {dst} (truncated)"),
        },
        p => format!("ip proto {} {src} > {dst} len={}{frag}", p.0, ip.total_len()),
    }
}
