//! The packets of an edited stream: numbers mapped, decided bytes cut into segments.
//!
//! Owns: setting a segment's seq/ack/SACK numbers from the sequence maps (RFC 2018 §3 and RFC 2883
//! edges included), the urgent pointer of a rebuilt segment, how many bytes one rebuilt segment may
//! carry (the receiver's MSS, RFC 6691 §2, and the egress MTU), and writing a segment from a header
//! template. Must not: translate addresses or ports, or decide TTLs (the engine does), or know what the
//! bytes mean.

use super::SeqMap;
use crate::wire::{Ipv4Packet, SeqNum, TcpFlags};

/// RFC 9293 §3.7.1: the MSS a host may assume when its peer announced none.
pub const DEFAULT_MSS: usize = 536;

/// Longest IPv4 header (60) plus longest TCP header (60): what a header template can need.
pub const MAX_HEADERS: usize = 120;

/// A segment's IP and TCP headers, copied without allocating: what rebuilt and released segments
/// are written from.
#[derive(Clone, Copy)]
pub struct Template {
    bytes: [u8; MAX_HEADERS],
    ip_hl: usize,
    tcp_hl: usize,
}

impl Template {
    /// The headers of `pkt`, an IPv4 TCP segment (its TCP header must be readable).
    pub fn of(pkt: &[u8]) -> Template {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let ip_hl = ip.header_len();
        let tcp_hl = ip.tcp().map(|t| t.header_len()).unwrap_or(20);
        let len = (ip_hl + tcp_hl).min(pkt.len()).min(MAX_HEADERS);
        let mut bytes = [0; MAX_HEADERS];
        bytes[..len].copy_from_slice(&pkt[..len]);
        Template { bytes, ip_hl, tcp_hl: len - ip_hl.min(len) }
    }

    /// A template kept as bytes ([`super::StreamEdit::keep_template`]).
    pub fn from_header(header: &[u8]) -> Option<Template> {
        if header.len() < 40 || header.len() > MAX_HEADERS {
            return None;
        }
        let t = Template::of(header);
        (t.ip_hl + t.tcp_hl == header.len()).then_some(t)
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        &self.bytes[..self.ip_hl + self.tcp_hl]
    }

    pub fn ip_hl(&self) -> usize {
        self.ip_hl
    }

    pub fn tcp_hl(&self) -> usize {
        self.tcp_hl
    }

    /// How many payload bytes one segment built from this template may carry towards a receiver that
    /// announced `peer_mss`, over a link of `mtu`. RFC 6691 §2: the MSS counts data only, and a sender
    /// must shrink its data by the IP and TCP options it sends; the pieces carry this template's
    /// options.
    pub fn piece_limit(&self, peer_mss: Option<u16>, mtu: usize) -> usize {
        let headers = self.ip_hl + self.tcp_hl;
        let mtu_room = mtu.saturating_sub(headers);
        let options = headers.saturating_sub(40);
        peer_mss.map_or(DEFAULT_MSS, |m| m as usize).saturating_sub(options).min(mtu_room).max(1)
    }

    /// Writes into `p` a segment with these headers, sequence number `seq`, `flags` and `payload`. The
    /// urgent pointer is cleared and the TCP checksum left for the caller (the payload changed).
    pub fn write(&self, p: &mut Vec<u8>, seq: SeqNum, payload: &[u8], flags: TcpFlags) {
        p.clear();
        p.reserve(self.ip_hl + self.tcp_hl + payload.len());
        p.extend_from_slice(self.header());
        p.extend_from_slice(payload);
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_total_len(self.ip_hl + self.tcp_hl + payload.len());
        if let Ok(mut t) = ip.tcp_mut() {
            t.set_seq_number(seq);
            t.set_flags(flags);
            t.set_urgent_ptr(0);
        }
    }
}

/// Sets seq (when given), ack and SACK blocks of a segment; the wire setters keep the checksum right.
/// `ack_in` is the acknowledgement already mapped into the other direction's sender space;
/// `other_map` maps the SACK edges the same way.
pub fn rewrite_numbers(pkt: &mut [u8], seq: Option<SeqNum>, ack_in: SeqNum, other_map: &SeqMap) {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    let Ok(mut t) = ip.tcp_mut() else { return };
    if let Some(s) = seq {
        if t.seq_number() != s {
            t.set_seq_number(s);
        }
    }
    if t.flags().ack && t.ack_number() != ack_in {
        t.set_ack_number(ack_in);
    }
    if !other_map.is_identity() {
        // RFC 2018 §3 / RFC 2883: every SACK block edge, D-SACK included, is a sequence number of the
        // other direction.
        t.map_sack_blocks(|s| other_map.unmap(s));
    }
}

/// Sets the urgent pointer of a rebuilt segment starting at `at` when the sender's urgent byte (mapped:
/// `urgent_at`) falls after its start (RFC 9293 §3.8.5: the pointer is an offset from the segment's
/// sequence number).
pub fn set_urgent(pkt: &mut [u8], at: SeqNum, urgent_at: SeqNum, flags: TcpFlags) {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    if let Ok(mut t) = ip.tcp_mut() {
        let off = urgent_at.diff(at);
        if off > 0 && off <= u16::MAX as i32 {
            t.set_flags(TcpFlags { urg: true, ..flags });
            t.set_urgent_ptr(off as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::flags;

    fn segment(payload: &[u8]) -> Vec<u8> {
        crate::engine::testing::tcp(
            std::net::Ipv4Addr::new(10, 0, 0, 2),
            40000,
            std::net::Ipv4Addr::new(198, 51, 100, 7),
            21,
            101,
            512,
            flags::ACK,
            payload,
        )
    }

    #[test]
    fn a_segment_is_written_from_its_template() {
        let p = segment(b"NOOP\r\n");
        let t = Template::of(&p);
        assert_eq!(t.header().len(), 40);
        let mut s = Vec::new();
        t.write(&mut s, SeqNum::new(999), b"HELP\r\n", TcpFlags::from_byte(flags::ACK));
        Ipv4Packet::new_unchecked(&mut s[..]).fill_transport_checksum();
        let seen = crate::wire::etherparse_check::seen(&s);
        let tcp = etherparse::TcpSlice::from_slice(&seen.upper).unwrap();
        assert_eq!((tcp.payload(), tcp.sequence_number()), (&b"HELP\r\n"[..], 999));
        assert_eq!(Template::from_header(t.header()).map(|x| x.header().to_vec()), Some(t.header().to_vec()));
        assert!(Template::from_header(&p[..30]).is_none(), "a header cut short is no template");
    }

    #[test]
    fn pieces_fit_the_receivers_mss_less_options_and_the_mtu() {
        let t = Template::of(&segment(b"x"));
        assert_eq!(t.piece_limit(None, 1500), DEFAULT_MSS);
        assert_eq!(t.piece_limit(Some(1460), 1500), 1460);
        assert_eq!(t.piece_limit(Some(1460), 576), 536);
        assert_eq!(t.piece_limit(Some(0), 1500), 1, "never zero: a piece always carries a byte");
    }

    #[test]
    fn numbers_are_mapped_and_an_urgent_byte_before_the_piece_sets_no_pointer() {
        let mut p = segment(b"abc");
        let mut map = SeqMap::new();
        map.record(SeqNum::new(600), 2, b"xyz".to_vec());
        rewrite_numbers(&mut p, Some(SeqNum::new(7)), SeqNum::new(500), &map);
        let ip = Ipv4Packet::new_unchecked(&p[..]);
        let tcp = ip.tcp().unwrap();
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (SeqNum::new(7), SeqNum::new(500)));
        set_urgent(&mut p, SeqNum::new(10), SeqNum::new(9), TcpFlags::from_byte(flags::ACK));
        assert!(!Ipv4Packet::new_unchecked(&p[..]).tcp().unwrap().flags().urg);
        set_urgent(&mut p, SeqNum::new(10), SeqNum::new(12), TcpFlags::from_byte(flags::ACK));
        let ip = Ipv4Packet::new_unchecked(&p[..]);
        assert_eq!(ip.tcp().unwrap().urgent_ptr(), 2);
    }
}
