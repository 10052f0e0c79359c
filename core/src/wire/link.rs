//! Link-layer framing of captured frames: where the IP datagram sits inside a frame, and how to put a
//! (possibly rewritten) datagram back into the original frame's link-layer framing.
//!
//! Owns: the L2 headers of the link types captures use and `ftpnat replay` accepts (Ethernet with stacked VLAN tags, padding and an
//! optional FCS; raw IP; Linux cooked SLL/SLL2; BSD loopback NULL/LOOP), and the Ethernet FCS.
//! Must not touch: IP semantics beyond the IPv4 total length / IPv6 payload length (used only to find where
//! padding or an FCS starts); files and I/O (the shell's `io::pcap` reads and writes capture files).
//! Bytes in, bytes out; never panics on any input.

use std::fmt;

/// A pcap/pcapng link-layer header type (LINKTYPE_* value, <https://www.tcpdump.org/linktypes.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II / 802.3 (DLT_EN10MB).
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP, version taken from the first nibble. DLT_RAW is also 12 (most BSDs) or 14 (OpenBSD).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux cooked capture v1 (16-byte header).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4 only.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6 only.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux cooked capture v2 (20-byte header).
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// Whether [`decode`] understands this link type.
    pub fn is_supported(self) -> bool {
        matches!(self.0, 0 | 1 | 12 | 14 | 101 | 108 | 113 | 228 | 229 | 276)
    }

    /// A short human-readable name, for messages.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NULL",
            1 => "EN10MB",
            12 | 14 | 101 => "RAW",
            108 => "LOOP",
            113 => "LINUX_SLL",
            228 => "IPV4",
            229 => "IPV6",
            276 => "LINUX_SLL2",
            _ => "unsupported",
        }
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// The network-layer protocol carried by a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    /// Not IP. For Ethernet and SLL/SLL2 the value is the ethertype (e.g. ARP 0x0806; an 802.3 length field
    /// for LLC frames); it is 0 where the link type has no ethertype (raw IP with a version nibble other
    /// than 4/6, NULL/LOOP with an unknown address family).
    Other(u16),
}

/// Where the network-layer packet sits inside a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub l3: L3,
    /// Byte offset of the IP header in the frame.
    pub l3_start: usize,
    /// End of the IP datagram (from the IP total length / IPv6 payload length, clamped to the frame); bytes
    /// after it are padding and/or FCS. A length field of 0 (TSO/GRO captures, IPv6 jumbograms) means "up to
    /// the end of the frame". For [`L3::Other`] this is the frame end (minus a valid FCS).
    pub l3_end: usize,
    /// True when the frame is Ethernet and its last 4 bytes are a valid CRC-32/ISO-HDLC FCS over the rest.
    pub has_fcs: bool,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    UnsupportedLinkType(u32),
    /// The frame ends inside the link-layer header or the fixed IP header.
    Truncated,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::UnsupportedLinkType(t) => write!(f, "unsupported link type {t}"),
            LinkError::Truncated => f.write_str("frame truncated inside the link-layer or IP header"),
        }
    }
}

impl std::error::Error for LinkError {}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// 802.1Q C-tag, 802.1ad S-tag, and the pre-standard QinQ tag still emitted by some switches.
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88A8, 0x9100];

const ETH_HEADER_LEN: usize = 14;
/// Minimum Ethernet frame without FCS (IEEE 802.3 clause 3.2.8: 64 bytes with FCS).
const ETH_MIN_FRAME: usize = 60;
const FCS_LEN: usize = 4;
const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
const NULL_HEADER_LEN: usize = 4;

const AF_INET: u32 = 2;
/// AF_INET6 differs per BSD (NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30); readers accept all three.
const AF_INET6_VALUES: [u32; 3] = [24, 28, 30];
/// What we write when a NULL/LOOP frame changes from IPv4 to IPv6.
const AF_INET6_WRITE: u32 = 24;

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;

/// Slice-by-16 tables: every padded Ethernet frame is checked for an FCS, and the byte-at-a-time table
/// made that check a quarter of a replay of such a capture.
static CRC32: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

/// The Ethernet FCS (CRC-32/ISO-HDLC) of `data`. On the wire and in captures it is stored little-endian.
pub fn fcs(data: &[u8]) -> u32 {
    CRC32.checksum(data)
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    let b = frame.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_at(frame: &[u8], at: usize) -> Option<[u8; 4]> {
    let b = frame.get(at..at.checked_add(4)?)?;
    Some([b[0], b[1], b[2], b[3]])
}

/// Follows an ethertype at `et_at` through any stack of VLAN tags. Returns the final ethertype and the
/// offset of the byte after it (where the payload starts).
fn ethertype_chain(frame: &[u8], et_at: usize) -> Result<(u16, usize), LinkError> {
    let mut at = et_at;
    loop {
        let et = be16(frame, at).ok_or(LinkError::Truncated)?;
        if VLAN_TPIDS.contains(&et) {
            // 802.1Q tag: TPID(2) TCI(2), then the next ethertype.
            at += 4;
        } else {
            return Ok((et, at + 2));
        }
    }
}

fn l3_from_ethertype(et: u16) -> L3 {
    match et {
        ETHERTYPE_IPV4 => L3::Ipv4,
        ETHERTYPE_IPV6 => L3::Ipv6,
        other => L3::Other(other),
    }
}

fn l3_from_version(frame: &[u8], at: usize) -> Result<L3, LinkError> {
    match frame.get(at).ok_or(LinkError::Truncated)? >> 4 {
        4 => Ok(L3::Ipv4),
        6 => Ok(L3::Ipv6),
        _ => Ok(L3::Other(0)),
    }
}

fn l3_from_af(af: u32) -> L3 {
    if af == AF_INET {
        L3::Ipv4
    } else if AF_INET6_VALUES.contains(&af) {
        L3::Ipv6
    } else {
        L3::Other(0)
    }
}

/// NULL stores the family in the capturing host's byte order; families are small, so a value with any of
/// the high 16 bits set was written by a host of the other endianness (the heuristic libpcap/Wireshark use).
fn null_af(raw: [u8; 4]) -> (u32, bool) {
    let le = u32::from_le_bytes(raw);
    if le & 0xFFFF_0000 != 0 {
        (u32::from_be_bytes(raw), false)
    } else {
        (le, true)
    }
}

/// End of the datagram starting at `start` according to its length field, clamped to the frame.
fn datagram_end(l3: L3, frame: &[u8], start: usize) -> Result<usize, LinkError> {
    let avail = frame.len().saturating_sub(start);
    let declared = match l3 {
        L3::Ipv4 => {
            if avail < IPV4_MIN_HEADER {
                return Err(LinkError::Truncated);
            }
            // RFC 791 §3.1 Total Length: header and data.
            usize::from(be16(frame, start + 2).ok_or(LinkError::Truncated)?)
        }
        L3::Ipv6 => {
            if avail < IPV6_HEADER {
                return Err(LinkError::Truncated);
            }
            // RFC 8200 §3 Payload Length: everything after the fixed 40-byte header.
            match be16(frame, start + 4).ok_or(LinkError::Truncated)? {
                0 => 0,
                n => IPV6_HEADER + usize::from(n),
            }
        }
        L3::Other(_) => 0,
    };
    // A zero length is what TSO/GRO captures (and IPv6 jumbograms, RFC 2675) carry: the datagram is the rest
    // of the frame.
    if declared == 0 {
        Ok(frame.len())
    } else {
        Ok(start.saturating_add(declared).min(frame.len()))
    }
}

fn fcs_valid(frame: &[u8]) -> bool {
    match frame.len().checked_sub(FCS_LEN) {
        Some(body) => u32_at(frame, body).map(u32::from_le_bytes) == Some(fcs(&frame[..body])),
        None => false,
    }
}

/// Finds the network-layer packet inside `frame`.
pub fn decode(linktype: LinkType, frame: &[u8]) -> Result<Decoded, LinkError> {
    let (l3, l3_start) = match linktype.0 {
        1 => {
            let (et, start) = ethertype_chain(frame, ETH_HEADER_LEN - 2)?;
            (l3_from_ethertype(et), start)
        }
        12 | 14 | 101 => (l3_from_version(frame, 0)?, 0),
        228 => (L3::Ipv4, 0),
        229 => (L3::Ipv6, 0),
        0 => {
            let raw = u32_at(frame, 0).ok_or(LinkError::Truncated)?;
            (l3_from_af(null_af(raw).0), NULL_HEADER_LEN)
        }
        108 => {
            let raw = u32_at(frame, 0).ok_or(LinkError::Truncated)?;
            (l3_from_af(u32::from_be_bytes(raw)), NULL_HEADER_LEN)
        }
        113 => {
            // SLL: packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2). libpcap re-inserts VLAN tags
            // after the protocol field exactly as on Ethernet.
            let (et, start) = ethertype_chain(frame, SLL_HEADER_LEN - 2)?;
            (l3_from_ethertype(et), start)
        }
        276 => {
            // SLL2: protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1) addr len(1) addr(8).
            if frame.len() < SLL2_HEADER_LEN {
                return Err(LinkError::Truncated);
            }
            (l3_from_ethertype(be16(frame, 0).ok_or(LinkError::Truncated)?), SLL2_HEADER_LEN)
        }
        other => return Err(LinkError::UnsupportedLinkType(other)),
    };
    if l3_start > frame.len() {
        return Err(LinkError::Truncated);
    }
    let mut l3_end = datagram_end(l3, frame, l3_start)?;
    let mut has_fcs = false;
    if linktype == LinkType::ETHERNET {
        let trailer = frame.len() - l3_end;
        let room_for_fcs = match l3 {
            L3::Other(_) => frame.len() - l3_start >= FCS_LEN,
            _ => trailer >= FCS_LEN,
        };
        if room_for_fcs && fcs_valid(frame) {
            has_fcs = true;
            l3_end = l3_end.min(frame.len() - FCS_LEN);
        }
    }
    Ok(Decoded { l3, l3_start, l3_end, has_fcs })
}

/// Builds the output frame for `new_l3` using the original frame's L2 header (everything before l3_start).
///
/// * Ethernet: when `new_l3` has the original datagram's length, the original trailer (padding, whatever
///   its bytes) is kept, so an unchanged datagram gives back the original frame byte for byte; otherwise
///   zero padding up to the 60-byte minimum is applied if the original was padded. The FCS is recomputed
///   when the original had one.
/// * SLL/SLL2/NULL/LOOP/Ethernet: when the new packet's IP version (first nibble) differs from the original
///   datagram's, the protocol/ethertype/address-family field is set to match.
/// * Raw link types: the output is `new_l3` (plus the original trailer when the length is unchanged).
///
/// Never panics, even when `decoded` does not describe `original`.
pub fn encode(linktype: LinkType, original: &[u8], decoded: &Decoded, new_l3: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, linktype, original, decoded, new_l3);
    out
}

/// [`encode`] into `out` (cleared first), so that a caller framing many packets reuses one buffer.
pub fn encode_into(out: &mut Vec<u8>, linktype: LinkType, original: &[u8], decoded: &Decoded, new_l3: &[u8]) {
    out.clear();
    let l3_start = decoded.l3_start.min(original.len());
    let l3_end = decoded.l3_end.clamp(l3_start, original.len());
    let body_end =
        if decoded.has_fcs { original.len().saturating_sub(FCS_LEN).max(l3_end) } else { original.len() };
    let trailer = &original[l3_end..body_end];

    out.reserve(l3_start + new_l3.len() + trailer.len() + FCS_LEN);
    out.extend_from_slice(&original[..l3_start]);
    set_protocol_for_version(linktype, out, original.get(l3_start).map(|b| b >> 4), new_l3);
    out.extend_from_slice(new_l3);

    if new_l3.len() == l3_end - l3_start {
        out.extend_from_slice(trailer);
    } else if linktype == LinkType::ETHERNET && !trailer.is_empty() && out.len() < ETH_MIN_FRAME {
        out.resize(ETH_MIN_FRAME, 0);
    }
    if linktype == LinkType::ETHERNET && decoded.has_fcs {
        let crc = fcs(out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// Rewrites the L2 protocol field in `hdr` (the copied link header) when the IP version changes.
fn set_protocol_for_version(linktype: LinkType, hdr: &mut [u8], old_version: Option<u8>, new_l3: &[u8]) {
    let Some(new_version) = new_l3.first().map(|b| b >> 4) else { return };
    if old_version == Some(new_version) || !(new_version == 4 || new_version == 6) {
        return;
    }
    let v6 = new_version == 6;
    let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }.to_be_bytes();
    let len = hdr.len();
    let field = match linktype.0 {
        // The last ethertype of the (possibly VLAN-tagged) chain sits just before the payload.
        1 | 113 if len >= 2 => &mut hdr[len - 2..],
        276 if len >= 2 => &mut hdr[..2],
        0 | 108 if len >= NULL_HEADER_LEN => {
            let raw = [hdr[0], hdr[1], hdr[2], hdr[3]];
            let af = if v6 { AF_INET6_WRITE } else { AF_INET };
            let bytes =
                if linktype.0 == 108 || !null_af(raw).1 { af.to_be_bytes() } else { af.to_le_bytes() };
            hdr[..NULL_HEADER_LEN].copy_from_slice(&bytes);
            return;
        }
        _ => return,
    };
    field.copy_from_slice(&ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC_PAIR: [u8; 12] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];

    /// A minimal IPv4 header + `payload` with a correct total length (checksum irrelevant here).
    fn ipv4(payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn ipv6(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        p
    }

    fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = MAC_PAIR.to_vec();
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn roundtrip(lt: LinkType, frame: &[u8]) -> Decoded {
        let d = decode(lt, frame).expect("decodes");
        assert_eq!(encode(lt, frame, &d, &frame[d.l3_start..d.l3_end]), frame, "round trip");
        d
    }

    #[test]
    fn fcs_known_answer() {
        // CRC-32/ISO-HDLC check value from the CRC catalogue.
        assert_eq!(fcs(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn ethernet_ipv4_exact() {
        let ip = ipv4(&[0xAA; 40]);
        let f = eth(0x0800, &ip);
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv4, l3_start: 14, l3_end: 74, has_fcs: false });
    }

    #[test]
    fn ethernet_ipv4_padding() {
        let ip = ipv4(&[1, 2, 3, 4]); // 24 bytes: frame of 38, padded to 60 with non-zero junk
        let mut f = eth(0x0800, &ip);
        f.resize(60, 0x5A);
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv4, l3_start: 14, l3_end: 38, has_fcs: false });

        // A shorter datagram is re-padded (with zeros) to the minimum; a longer one is not padded.
        let shorter = ipv4(&[9]);
        let out = encode(LinkType::ETHERNET, &f, &d, &shorter);
        assert_eq!(out.len(), 60);
        assert_eq!(&out[14..35], &shorter[..]);
        assert!(out[35..].iter().all(|&b| b == 0));
        let longer = ipv4(&[7; 100]);
        let out = encode(LinkType::ETHERNET, &f, &d, &longer);
        assert_eq!(out, eth(0x0800, &longer));
    }

    #[test]
    fn ethernet_unpadded_short_frame_stays_short() {
        // Frames captured on the sending host are not padded; we do not invent padding for them.
        let f = eth(0x0800, &ipv4(&[1, 2, 3, 4]));
        let d = roundtrip(LinkType::ETHERNET, &f);
        let out = encode(LinkType::ETHERNET, &f, &d, &ipv4(&[1]));
        assert_eq!(out.len(), 14 + 21);
    }

    #[test]
    fn ethernet_fcs() {
        let ip = ipv4(&[0x11; 30]);
        let mut f = eth(0x0800, &ip);
        let crc = fcs(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv4, l3_start: 14, l3_end: 64, has_fcs: true });

        // A changed datagram gets a fresh, valid FCS.
        let new = ipv4(&[0x22; 31]);
        let out = encode(LinkType::ETHERNET, &f, &d, &new);
        assert_eq!(out.len(), 14 + 51 + 4);
        assert!(fcs_valid(&out));
        assert_eq!(decode(LinkType::ETHERNET, &out).unwrap().l3_end, 65);
    }

    #[test]
    fn ethernet_padding_and_fcs() {
        let ip = ipv4(&[]); // 20 bytes: 34-byte frame, padded to 60, then FCS -> 64
        let mut f = eth(0x0800, &ip);
        f.resize(60, 0);
        let crc = fcs(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv4, l3_start: 14, l3_end: 34, has_fcs: true });
        let out = encode(LinkType::ETHERNET, &f, &d, &ipv4(&[1, 2]));
        assert_eq!(out.len(), 64);
        assert!(fcs_valid(&out));
    }

    #[test]
    fn trailer_without_valid_crc_is_padding() {
        let mut f = eth(0x0800, &ipv4(&[0; 50]));
        f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert!(!d.has_fcs);
        assert_eq!(d.l3_end, 84);
    }

    #[test]
    fn vlan_8021q_and_qinq() {
        let ip = ipv4(&[3; 10]);
        let mut f = MAC_PAIR.to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        f.extend_from_slice(&ip);
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!((d.l3, d.l3_start, d.l3_end), (L3::Ipv4, 18, 48));

        for outer in [0x88A8u16, 0x9100] {
            let ip6 = ipv6(&[4; 8]);
            let mut f = MAC_PAIR.to_vec();
            f.extend_from_slice(&outer.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x86, 0xdd]);
            f.extend_from_slice(&ip6);
            let d = roundtrip(LinkType::ETHERNET, &f);
            assert_eq!((d.l3, d.l3_start, d.l3_end), (L3::Ipv6, 22, 22 + 48));
            // Version change rewrites the innermost ethertype only.
            let out = encode(LinkType::ETHERNET, &f, &d, &ipv4(&[]));
            assert_eq!(
                &out[12..22],
                &[&outer.to_be_bytes()[..], &[0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]].concat()[..]
            );
        }
    }

    #[test]
    fn arp_is_other() {
        let arp = [0u8; 28];
        let mut f = eth(0x0806, &arp);
        f.resize(60, 0);
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!(d, Decoded { l3: L3::Other(0x0806), l3_start: 14, l3_end: 60, has_fcs: false });
    }

    #[test]
    fn linux_sll() {
        let ip = ipv4(&[5; 6]);
        let mut f = vec![0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        f.extend_from_slice(&ip);
        let d = roundtrip(LinkType::LINUX_SLL, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv4, l3_start: 16, l3_end: 42, has_fcs: false });
        let out = encode(LinkType::LINUX_SLL, &f, &d, &ipv6(&[]));
        assert_eq!(&out[14..16], &[0x86, 0xdd]);
        assert_eq!(decode(LinkType::LINUX_SLL, &out).unwrap().l3, L3::Ipv6);
    }

    #[test]
    fn linux_sll2() {
        let ip = ipv6(&[6; 12]);
        let mut f = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 0x02, 0, 0, 0, 0, 1, 0, 0];
        f.extend_from_slice(&ip);
        let d = roundtrip(LinkType::LINUX_SLL2, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv6, l3_start: 20, l3_end: 72, has_fcs: false });
        let out = encode(LinkType::LINUX_SLL2, &f, &d, &ipv4(&[]));
        assert_eq!(&out[..2], &[0x08, 0x00]);
        assert_eq!(&out[2..20], &f[2..20]);
    }

    #[test]
    fn null_and_loop() {
        let v4 = ipv4(&[1; 4]);
        let v6 = ipv6(&[2; 4]);
        let mut f = vec![2, 0, 0, 0];
        f.extend_from_slice(&v4);
        let d = roundtrip(LinkType::NULL, &f);
        assert_eq!(d, Decoded { l3: L3::Ipv4, l3_start: 4, l3_end: 28, has_fcs: false });
        // Little-endian host turning the packet into IPv6 writes AF_INET6 little-endian.
        let out = encode(LinkType::NULL, &f, &d, &v6);
        assert_eq!(&out[..4], &[24, 0, 0, 0]);

        for af in [24u32, 28, 30] {
            for hdr in [af.to_le_bytes(), af.to_be_bytes()] {
                let mut f = hdr.to_vec();
                f.extend_from_slice(&v6);
                let d = roundtrip(LinkType::NULL, &f);
                assert_eq!((d.l3, d.l3_start, d.l3_end), (L3::Ipv6, 4, 48));
            }
        }
        // Big-endian NULL header keeps its byte order on a version change.
        let mut f = 30u32.to_be_bytes().to_vec();
        f.extend_from_slice(&v6);
        let d = decode(LinkType::NULL, &f).unwrap();
        assert_eq!(&encode(LinkType::NULL, &f, &d, &v4)[..4], &[0, 0, 0, 2]);

        let mut f = vec![0, 0, 0, 2];
        f.extend_from_slice(&v4);
        let d = roundtrip(LinkType::LOOP, &f);
        assert_eq!(d.l3, L3::Ipv4);
        assert_eq!(&encode(LinkType::LOOP, &f, &d, &v6)[..4], &[0, 0, 0, 24]);

        let mut f = vec![7, 0, 0, 0];
        f.extend_from_slice(&v4);
        assert_eq!(decode(LinkType::NULL, &f).unwrap().l3, L3::Other(0));
    }

    #[test]
    fn raw_types() {
        let v4 = ipv4(&[9; 3]);
        let v6 = ipv6(&[8; 3]);
        for lt in [LinkType::RAW, LinkType(12), LinkType(14)] {
            assert_eq!(roundtrip(lt, &v4), Decoded { l3: L3::Ipv4, l3_start: 0, l3_end: 23, has_fcs: false });
            assert_eq!(roundtrip(lt, &v6), Decoded { l3: L3::Ipv6, l3_start: 0, l3_end: 43, has_fcs: false });
            assert_eq!(decode(lt, &[0x10; 30]).unwrap().l3, L3::Other(0));
        }
        assert_eq!(roundtrip(LinkType::IPV4, &v4).l3, L3::Ipv4);
        assert_eq!(roundtrip(LinkType::IPV6, &v6).l3, L3::Ipv6);
        // Trailing bytes after the datagram are not part of it.
        let mut padded = v4.clone();
        padded.extend_from_slice(&[0; 5]);
        assert_eq!(roundtrip(LinkType::RAW, &padded).l3_end, 23);
    }

    #[test]
    fn tso_zero_length_means_rest_of_frame() {
        let mut ip = ipv4(&[0x33; 3000]);
        ip[2..4].copy_from_slice(&[0, 0]);
        let f = eth(0x0800, &ip);
        assert_eq!(roundtrip(LinkType::ETHERNET, &f).l3_end, f.len());
        // Oversize datagram with a correct length is fine too.
        let f = eth(0x0800, &ipv4(&[0x44; 11000]));
        assert_eq!(roundtrip(LinkType::ETHERNET, &f).l3_end, f.len());
    }

    #[test]
    fn length_field_beyond_frame_is_clamped() {
        let mut f = eth(0x0800, &ipv4(&[0; 20]));
        f.truncate(50);
        let d = roundtrip(LinkType::ETHERNET, &f);
        assert_eq!(d.l3_end, 50);
    }

    #[test]
    fn truncated_frames_are_errors() {
        let full = eth(0x0800, &ipv4(&[0; 8]));
        for n in 0..(14 + 20) {
            assert_eq!(decode(LinkType::ETHERNET, &full[..n]), Err(LinkError::Truncated), "len {n}");
        }
        let mut tagged = MAC_PAIR.to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(decode(LinkType::ETHERNET, &tagged), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType::RAW, &[]), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType::IPV6, &ipv6(&[])[..39]), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType::NULL, &[2, 0, 0]), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType::LOOP, &[0, 0, 0, 2, 0x45]), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType::LINUX_SLL, &[0; 15]), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType::LINUX_SLL2, &[0x08, 0, 0, 0]), Err(LinkError::Truncated));
        assert_eq!(decode(LinkType(147), &full), Err(LinkError::UnsupportedLinkType(147)));
    }

    #[test]
    fn encode_tolerates_inconsistent_decoded() {
        let d = Decoded { l3: L3::Ipv4, l3_start: 100, l3_end: 5, has_fcs: true };
        // Version nibble 0 is neither 4 nor 6, so the copied header stays as it is.
        let out = encode(LinkType::ETHERNET, &[1, 2, 3], &d, &[0x05]);
        assert_eq!(&out[..4], &[1, 2, 3, 0x05]);
    }

    const LINKTYPES: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

    proptest! {
        #[test]
        fn decode_never_panics(lt in proptest::sample::select(LINKTYPES.to_vec()),
                               frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(d) = decode(LinkType(lt), &frame) {
                prop_assert!(d.l3_start <= d.l3_end && d.l3_end <= frame.len());
            }
        }

        /// Frames steered towards the interesting paths: a valid-looking link header, an IP datagram whose
        /// length field is usually right, arbitrary trailing bytes, sometimes a valid FCS.
        #[test]
        fn encode_decode_round_trip(
            lt in proptest::sample::select(LINKTYPES.to_vec()),
            et in proptest::sample::select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]),
            version in proptest::sample::select(vec![0x45u8, 0x60, 0x00]),
            rest in proptest::collection::vec(any::<u8>(), 0..120),
            fix_length in any::<bool>(),
            pad in proptest::collection::vec(any::<u8>(), 0..24),
            add_fcs in any::<bool>(),
        ) {
            let mut frame = match lt {
                1 => { let mut f = MAC_PAIR.to_vec(); f.extend_from_slice(&et.to_be_bytes()); f }
                113 => { let mut f = vec![0u8; 14]; f.extend_from_slice(&et.to_be_bytes()); f }
                276 => { let mut f = et.to_be_bytes().to_vec(); f.extend_from_slice(&[0; 18]); f }
                0 => vec![2, 0, 0, 0],
                108 => vec![0, 0, 0, 30],
                _ => vec![],
            };
            let mut l3 = vec![version];
            l3.extend_from_slice(&rest);
            if fix_length && version == 0x45 && l3.len() >= 20 {
                let n = l3.len() as u16;
                l3[2..4].copy_from_slice(&n.to_be_bytes());
            } else if fix_length && version == 0x60 && l3.len() >= 40 {
                let n = (l3.len() - 40) as u16;
                l3[4..6].copy_from_slice(&n.to_be_bytes());
            }
            frame.extend_from_slice(&l3);
            frame.extend_from_slice(&pad);
            if add_fcs {
                let crc = fcs(&frame);
                frame.extend_from_slice(&crc.to_le_bytes());
            }
            if let Ok(d) = decode(LinkType(lt), &frame) {
                let l3 = frame[d.l3_start..d.l3_end].to_vec();
                prop_assert_eq!(encode(LinkType(lt), &frame, &d, &l3), frame);
            }
        }

        #[test]
        fn round_trip_arbitrary(lt in proptest::sample::select(LINKTYPES.to_vec()),
                                frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(d) = decode(LinkType(lt), &frame) {
                let l3 = frame[d.l3_start..d.l3_end].to_vec();
                prop_assert_eq!(encode(LinkType(lt), &frame, &d, &l3), frame);
            }
        }

        #[test]
        fn encode_never_panics(lt in proptest::sample::select(LINKTYPES.to_vec()),
                               original in proptest::collection::vec(any::<u8>(), 0..80),
                               start in 0usize..100, end in 0usize..100, has_fcs in any::<bool>(),
                               new_l3 in proptest::collection::vec(any::<u8>(), 0..80)) {
            let d = Decoded { l3: L3::Ipv4, l3_start: start, l3_end: end, has_fcs };
            let _ = encode(LinkType(lt), &original, &d, &new_l3);
        }
    }
}
