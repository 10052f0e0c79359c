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
use crate::wire::{Ipv4Packet, SeqNum, TcpFlags};

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
        const ACK: u8 = 0x10;
        self.tcp_flags & (ACK | 0x04 | 0x02 | 0x01) == ACK
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
        let Some(h) = t.get(..20) else {
            return TcpFields { seq: SeqNum::new(0), ack: SeqNum::new(0), win: 0, payload: 0 };
        };
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        TcpFields {
            seq: SeqNum::new(word(4)),
            ack: SeqNum::new(word(8)),
            win: u16::from_be_bytes([h[14], h[15]]),
            payload: t.len().saturating_sub(usize::from(h[12] >> 4) * 4) as u32,
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
                if p.len() < 8 {
                    return Err(malformed);
                }
                if proto == Proto::Tcp {
                    tcp_flags = p.get(13).copied().unwrap_or(0);
                }
                (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]))
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
                    8 => icmp_request = true,
                    0 => {}
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
