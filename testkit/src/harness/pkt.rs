//! Packet inspection for the harness: the independent validity check of every packet that leaves the
//! middlebox, one-line summaries for the packet log, and small header readers tests use to pick packets.
//!
//! Owns: reading IPv4/IPv6/TCP/UDP/ICMP bytes with etherparse (an implementation independent of
//! ftpnat's `wire` module, so a checksum bug there cannot hide itself). Must not: modify packets or
//! know about the network's topology.

use std::fmt::Write as _;
use std::net::IpAddr;

use etherparse::{Icmpv4Slice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice, UdpHeaderSlice};

/// The kit's independent validity check of one IPv4 or IPv6 datagram (`crate::check`).
pub use crate::check::check_packet_any as check_packet;

/// The IP layer of a datagram as far as the harness reads it: addresses, the transport protocol, the
/// header length, the datagram length the header states, and whether it is a fragment.
struct IpView {
    src: IpAddr,
    dst: IpAddr,
    proto: IpNumber,
    header_len: usize,
    total_len: usize,
    fragment: bool,
}

/// IPv4 with its options, or IPv6 without extension headers (the harness's hosts send none; a
/// fragment header shows as protocol 44).
fn ip_view(pkt: &[u8]) -> Option<IpView> {
    match pkt.first()? >> 4 {
        4 => {
            let ip = Ipv4HeaderSlice::from_slice(pkt).ok()?;
            Some(IpView {
                src: ip.source_addr().into(),
                dst: ip.destination_addr().into(),
                proto: ip.protocol(),
                header_len: ip.slice().len(),
                total_len: usize::from(ip.total_len()),
                fragment: ip.is_fragmenting_payload(),
            })
        }
        6 => {
            let ip = Ipv6HeaderSlice::from_slice(pkt).ok()?;
            Some(IpView {
                src: ip.source_addr().into(),
                dst: ip.destination_addr().into(),
                proto: ip.next_header(),
                header_len: 40,
                total_len: 40 + usize::from(ip.payload_length()),
                fragment: ip.next_header() == IpNumber::IPV6_FRAGMENTATION_HEADER,
            })
        }
        _ => None,
    }
}

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
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// The ACK flag (`ack` means something only with it).
    pub has_ack: bool,
    /// The edges of the SACK blocks (RFC 2018), in order.
    pub sack: Vec<(u32, u32)>,
    pub payload: Vec<u8>,
}

/// `Some` for an unfragmented, well-formed IPv4 or IPv6 TCP segment.
pub fn tcp_info(pkt: &[u8]) -> Option<TcpInfo> {
    let ip = ip_view(pkt)?;
    if ip.proto != IpNumber::TCP || ip.fragment {
        return None;
    }
    let end = ip.total_len.min(pkt.len());
    let payload = pkt.get(ip.header_len..end)?;
    let tcp = TcpHeaderSlice::from_slice(payload).ok()?;
    Some(TcpInfo {
        src: ip.src,
        dst: ip.dst,
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        has_ack: tcp.ack(),
        sack: tcp
            .options_iterator()
            .filter_map(Result::ok)
            .flat_map(|o| match o {
                etherparse::TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                    std::iter::once(first).chain(rest.into_iter().flatten()).collect()
                }
                _ => Vec::new(),
            })
            .collect(),
        payload: payload[tcp.slice().len()..].to_vec(),
    })
}

/// The destination address of an IPv4 or IPv6 datagram, if it has a readable header.
pub fn dst_addr(pkt: &[u8]) -> Option<IpAddr> {
    ip_view(pkt).map(|ip| ip.dst)
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
    let Some(ip) = ip_view(pkt) else {
        return format!("non-IP ({} bytes)", pkt.len());
    };
    let (src, dst) = (ip.src, ip.dst);
    let ip_len = ip.header_len;
    let rest = &pkt[ip_len.min(pkt.len())..];
    let frag = if ip.fragment { " (fragment)" } else { "" };
    match ip.proto {
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
                let len = ip.total_len.saturating_sub(ip_len + hl);
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
        IpNumber::IPV6_ICMP => match etherparse::Icmpv6Slice::from_slice(rest) {
            Ok(i) => format!("icmp6 {src} > {dst} type={} code={}", i.type_u8(), i.code_u8()),
            Err(_) => format!("icmp6 {src} > {dst} (truncated)"),
        },
        p => format!("ip proto {} {src} > {dst} len={}{frag}", p.0, ip.total_len),
    }
}
