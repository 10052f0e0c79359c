//! What the engine reads of a packet once, on arrival: its flow key, flags and fragment position
//! ([`Head`]), and for TCP the numbers the window tracker needs ([`TcpFields`]).
//!
//! Owns: the one classifier, used by the per-packet path ([`Engine::process`]) and by the offload
//! aggregate check alike. Must not: look up or change connections, count anything but the drop it
//! returns, or write to the packet.

use super::{Engine, Verdict};

use crate::conntrack::Plain;
use crate::flow::{Endpoint, FlowKey, Proto};
use crate::metrics::DropReason;
use crate::wire::{icmp, ipv4, tcp, Ipv4Packet, SeqNum, TcpFlags, TcpSegment};

/// What a packet says about its flow, read once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub(super) key: FlowKey,
    /// The TCP flags byte as sent (0 for UDP and ICMP): decoded where needed, tested whole on the
    /// per-packet path.
    pub(super) tcp_flags: u8,
    pub(super) first_fragment: bool,
    pub(super) fragmented: bool,
    pub(super) icmp_request: bool,
}

impl Head {
    pub(super) fn flags(&self) -> TcpFlags {
        TcpFlags::from_byte(self.tcp_flags)
    }

    /// An ACK with no SYN, RST or FIN: the per-packet case.
    #[inline]
    pub(super) fn plain_ack(&self) -> bool {
        tcp::flags::plain_ack(self.tcp_flags)
    }
}

/// What the window tracker reads of an unfragmented TCP segment `head` accepted: read on the TCP path
/// only (kept out of [`Head`], which every packet carries).
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpFields {
    pub(super) seq: SeqNum,
    pub(super) ack: SeqNum,
    pub(super) win: u16,
    /// Payload bytes (SYN and FIN not counted).
    pub(super) payload: u32,
}

impl TcpFields {
    /// The fields of a datagram whose TCP header `Engine::head` checked (a shorter one reads as zeros).
    #[inline]
    pub(super) fn read(pkt: &[u8]) -> TcpFields {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let t = ip.payload();
        if t.len() < tcp::HEADER_LEN {
            return TcpFields { seq: SeqNum::new(0), ack: SeqNum::new(0), win: 0, payload: 0 };
        }
        // Over the whole segment: the header length (options included) is clamped to the view.
        let h = TcpSegment::new_unchecked(t);
        TcpFields {
            seq: h.seq_number(),
            ack: h.ack_number(),
            win: h.window(),
            payload: t.len().saturating_sub(h.header_len()) as u32,
        }
    }

    /// As the per-packet path takes them (for a segment with no SYN, RST or FIN).
    #[inline]
    pub(super) fn plain(&self) -> Plain {
        Plain { seq: self.seq, ack: self.ack, len: self.payload, win: self.win }
    }
}

impl Engine {
    /// Reads protocol, ports and flags. `Ok(None)` means an ICMP error (handled by its own path).
    // Inlined so the result stays in registers: returned through memory, its narrow stores were read
    // back by wide loads (a store-forwarding stall, a fifth of the established-flow path in perf).
    #[inline(always)]
    pub(super) fn head(&self, pkt: &[u8]) -> Result<Option<Head>, Verdict> {
        let ip = Ipv4Packet::new_unchecked(pkt);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let fragmented = ip.more_frags() || ip.frag_offset() > 0;
        let proto =
            Proto::from_number(ip.protocol()).ok_or(Verdict::Drop(DropReason::UnsupportedProtocol))?;
        let malformed = Verdict::Drop(DropReason::Malformed);
        let mut tcp_flags = 0;
        let mut icmp_request = false;
        let (sp, dp) = match proto {
            Proto::Tcp | Proto::Udp if fragmented => {
                // A first fragment holds the ports but not the whole datagram the length fields speak of.
                let p = ip.payload();
                let Some((sp, dp)) = ipv4::first_fragment_ports(p) else { return Err(malformed) };
                if proto == Proto::Tcp {
                    tcp_flags = p.get(tcp::FLAGS_AT).copied().unwrap_or(0);
                }
                (sp, dp)
            }
            Proto::Tcp => {
                let t = ip.tcp().map_err(|_| malformed)?;
                tcp_flags = t.flags_byte();
                (t.src_port(), t.dst_port())
            }
            Proto::Udp => {
                let u = ip.udp().map_err(|_| malformed)?;
                (u.src_port(), u.dst_port())
            }
            Proto::Icmp => {
                let i = ip.icmp().map_err(|_| malformed)?;
                if i.is_error() {
                    if fragmented {
                        return Err(Verdict::Drop(DropReason::IcmpUnsupported));
                    }
                    return Ok(None);
                }
                // RFC 5508 §3.1: query messages are translated by their identifier; echo is the one
                // in use (timestamp/information/mask queries are obsolete, RFC 6918).
                match i.msg_type() {
                    icmp::TYPE_ECHO_REQUEST => icmp_request = true,
                    icmp::TYPE_ECHO_REPLY => {}
                    _ => return Err(Verdict::Drop(DropReason::IcmpUnsupported)),
                }
                (i.echo_ident(), i.echo_ident())
            }
        };
        let key = FlowKey::new(proto, Endpoint::new(src, sp), Endpoint::new(dst, dp));
        Ok(Some(Head {
            key,
            tcp_flags,
            first_fragment: !fragmented || ip.frag_offset() == 0,
            fragmented,
            icmp_request,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{echo_request, engine, tcp, udp, HOST, REMOTE};
    use super::*;
    use crate::metrics::DropReason;
    use crate::wire::tcp::flags;

    #[test]
    fn a_tcp_segment_gives_its_key_and_flags() {
        let e = engine();
        let p = tcp(HOST, 40000, REMOTE, 80, 7, 9, flags::ACK | flags::PSH, b"data");
        let h = e.head(&p).unwrap().unwrap();
        assert_eq!(h.key, FlowKey::new(Proto::Tcp, Endpoint::new(HOST, 40000), Endpoint::new(REMOTE, 80)));
        assert!(h.plain_ack(), "ACK+PSH is the per-packet case");
        assert!(h.first_fragment && !h.fragmented && !h.icmp_request);
        let t = TcpFields::read(&p);
        assert_eq!((t.seq, t.ack, t.win, t.payload), (SeqNum::new(7), SeqNum::new(9), 64_000, 4));
    }

    #[test]
    fn syn_fin_and_rst_are_not_the_per_packet_case() {
        let e = engine();
        for f in [flags::SYN | flags::ACK, flags::FIN | flags::ACK, flags::RST | flags::ACK, 0] {
            let h = e.head(&tcp(HOST, 40000, REMOTE, 80, 7, 9, f, b"")).unwrap().unwrap();
            assert!(!h.plain_ack(), "flags {f:#04x}");
        }
    }

    #[test]
    fn udp_and_echo_requests_are_keyed_by_ports_and_identifier() {
        let e = engine();
        let h = e.head(&udp(HOST, 5353, REMOTE, 53, b"q")).unwrap().unwrap();
        assert_eq!(h.key.proto, Proto::Udp);
        assert_eq!((h.key.src.port, h.key.dst.port), (5353, 53));
        let h = e.head(&echo_request(HOST, REMOTE, 0x4242, 1)).unwrap().unwrap();
        assert!(h.icmp_request);
        assert_eq!((h.key.src.port, h.key.dst.port), (0x4242, 0x4242));
    }

    #[test]
    fn a_first_fragment_gives_its_ports_and_a_short_one_is_malformed() {
        let e = engine();
        let mut p = udp(HOST, 5353, REMOTE, 53, &[0u8; 64]);
        Ipv4Packet::new_unchecked(&mut p[..]).set_more_frags(true);
        let h = e.head(&p).unwrap().unwrap();
        assert!(h.fragmented && h.first_fragment);
        assert_eq!((h.key.src.port, h.key.dst.port), (5353, 53));
        // Seven bytes of payload cannot hold the ports (RFC 791: 8 at least in every fragment but the last).
        p.truncate(20 + 7);
        Ipv4Packet::new_unchecked(&mut p[..]).set_total_len(27);
        assert_eq!(e.head(&p).unwrap_err(), Verdict::Drop(DropReason::Malformed));
    }

    #[test]
    fn unknown_protocols_and_icmp_queries_other_than_echo_are_refused() {
        let e = engine();
        let mut p = udp(HOST, 1, REMOTE, 2, b"");
        p[9] = 47; // GRE
        assert_eq!(e.head(&p).unwrap_err(), Verdict::Drop(DropReason::UnsupportedProtocol));
        let mut p = echo_request(HOST, REMOTE, 1, 1);
        p[20] = 13; // timestamp request (RFC 6918: obsolete)
        assert_eq!(e.head(&p).unwrap_err(), Verdict::Drop(DropReason::IcmpUnsupported));
    }

    #[test]
    fn an_icmp_error_goes_to_its_own_path() {
        let e = engine();
        let quoted = udp(REMOTE, 53, HOST, 5353, b"a");
        let err = icmp::build_error(REMOTE, HOST, icmp::TYPE_DEST_UNREACHABLE, 3, 0, &quoted);
        assert!(e.head(&err).unwrap().is_none());
    }

    #[test]
    fn tcp_fields_count_the_payload_behind_the_options() {
        let mut p = Vec::new();
        etherparse::PacketBuilder::ipv4(HOST.octets(), REMOTE.octets(), 64)
            .tcp(1, 2, 5, 100)
            .ack(6)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap()
            .write(&mut p, b"abc")
            .unwrap();
        assert_eq!(TcpFields::read(&p).payload, 3);
    }

    #[test]
    fn tcp_fields_of_a_short_segment_read_as_zero() {
        let p = tcp(HOST, 1, REMOTE, 2, 5, 6, flags::ACK, b"");
        let t = TcpFields::read(&p[..30]);
        assert_eq!((t.seq, t.ack, t.win, t.payload), (SeqNum::new(0), SeqNum::new(0), 0, 0));
    }
}
