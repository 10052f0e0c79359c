//! TCP segment view (RFC 9293 §3.1) with checksum-maintaining setters.
//!
//! Owns: the bytes of one TCP header and its options. Must not: decide what the new values are (NAT and
//! the stream layer do), or re-emit a segment from a representation (that would drop unknown options and reserved bits).
//!
//! Every setter updates the TCP checksum incrementally (RFC 1624); the pseudo-header part is the IPv4
//! view's business ([`super::Ipv4Packet::set_src_addr`]). Option walking stops at EOL, at an option whose
//! length is below 2 or runs past the header, so garbage options never panic.

use std::net::Ipv4Addr;

use super::checksum;
use super::seq::SeqNum;
use super::{get_u16, get_u32, WireError, IPPROTO_TCP};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const ACK: usize = 8;
    /// Data offset (high nibble), reserved bits, NS; the flags byte follows.
    pub(super) const OFF_FLAGS: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const URGENT: usize = 18;
    pub(super) const OPTIONS: usize = 20;
}

pub const HEADER_LEN: usize = 20;

/// Offsets within the TCP header of the fields read without a view (RFC 9293 §3.1): the per-packet path
/// reads them straight from the datagram, and a first fragment's header cannot be viewed.
pub const SEQ_AT: usize = field::SEQ;
pub const ACK_AT: usize = field::ACK;
pub const OFF_FLAGS_AT: usize = field::OFF_FLAGS;
pub const FLAGS_AT: usize = field::FLAGS;
pub const WINDOW_AT: usize = field::WINDOW;
pub const CHECKSUM_AT: usize = field::CHECKSUM;

/// The bits of the flags byte ([`FLAGS_AT`]).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// An ACK with no SYN, RST or FIN: the per-packet case of an established connection.
    #[inline]
    pub const fn plain_ack(b: u8) -> bool {
        b & (ACK | RST | SYN | FIN) == ACK
    }
}

pub const OPT_EOL: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WSCALE: u8 = 3;
pub const OPT_SACK: u8 = 5;
/// RFC 7323 §2.3: a larger shift is taken as 14.
pub const MAX_WSCALE: u8 = 14;

/// The eight flag bits of byte 13 (RFC 9293 §3.1, RFC 3168 for ECE/CWR). NS (byte 12 bit 0, historic) is
/// not modelled and is preserved by [`TcpSegment::set_flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    pub fin: bool,
    pub syn: bool,
    pub rst: bool,
    pub psh: bool,
    pub ack: bool,
    pub urg: bool,
    pub ece: bool,
    pub cwr: bool,
}

impl TcpFlags {
    pub fn from_byte(b: u8) -> TcpFlags {
        TcpFlags {
            fin: b & flags::FIN != 0,
            syn: b & flags::SYN != 0,
            rst: b & flags::RST != 0,
            psh: b & flags::PSH != 0,
            ack: b & flags::ACK != 0,
            urg: b & flags::URG != 0,
            ece: b & flags::ECE != 0,
            cwr: b & flags::CWR != 0,
        }
    }
    pub fn to_byte(self) -> u8 {
        (self.fin as u8)
            | (self.syn as u8) << 1
            | (self.rst as u8) << 2
            | (self.psh as u8) << 3
            | (self.ack as u8) << 4
            | (self.urg as u8) << 5
            | (self.ece as u8) << 6
            | (self.cwr as u8) << 7
    }
}

/// One option found in the option area: kind, offset of its kind byte within the segment, total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Opt {
    kind: u8,
    at: usize,
    len: usize,
}

/// Walks options in `hdr[20..]` (hdr is the whole TCP header). Stops on EOL or on a malformed length.
fn walk_options(hdr: &[u8]) -> impl Iterator<Item = Opt> + '_ {
    let mut at = field::OPTIONS;
    core::iter::from_fn(move || loop {
        let kind = *hdr.get(at)?;
        match kind {
            OPT_EOL => return None,
            OPT_NOP => at += 1,
            _ => {
                let len = *hdr.get(at + 1)? as usize;
                if len < 2 || at + len > hdr.len() {
                    return None;
                }
                let o = Opt { kind, at, len };
                at += len;
                return Some(o);
            }
        }
    })
}

/// A view over a TCP segment (header + payload). The buffer is exactly the segment: for a segment inside an
/// IPv4 datagram, the IPv4 payload bounded by the total length.
#[derive(Debug, Clone)]
pub struct TcpSegment<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps without checks; getters may panic on a short buffer. For buffers the caller built.
    pub fn new_unchecked(buf: T) -> Self {
        TcpSegment { buf }
    }

    /// Checks len >= 20, data offset >= 5 and header length <= buffer length. After this no accessor panics.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = ((b[field::OFF_FLAGS] >> 4) as usize) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(TcpSegment { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn u16_at(&self, at: usize) -> u16 {
        get_u16(self.buf.as_ref(), at).unwrap_or(0)
    }
    fn u32_at(&self, at: usize) -> u32 {
        get_u32(self.buf.as_ref(), at).unwrap_or(0)
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }
    pub fn seq_number(&self) -> SeqNum {
        SeqNum::new(self.u32_at(field::SEQ))
    }
    pub fn ack_number(&self) -> SeqNum {
        SeqNum::new(self.u32_at(field::ACK))
    }
    /// Header length in bytes (data offset * 4), clamped to the buffer.
    pub fn header_len(&self) -> usize {
        let b = self.buf.as_ref();
        let hl = b.get(field::OFF_FLAGS).map_or(0, |x| ((x >> 4) as usize) * 4);
        hl.min(b.len())
    }
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_byte(self.flags_byte())
    }
    /// The flags byte as sent (CWR..FIN; the reserved bits are in the byte before).
    pub fn flags_byte(&self) -> u8 {
        self.buf.as_ref().get(field::FLAGS).copied().unwrap_or(0)
    }
    pub fn window(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn urgent_ptr(&self) -> u16 {
        self.u16_at(field::URGENT)
    }
    /// The raw option bytes (header bytes 20..header_len).
    pub fn options(&self) -> &[u8] {
        let hl = self.header_len();
        self.buf.as_ref().get(field::OPTIONS..hl).unwrap_or(&[])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// Segment length in sequence space: payload + SYN + FIN.
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.payload().len() as u32 + f.syn as u32 + f.fin as u32
    }

    fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }

    /// The MSS option value (RFC 9293 §3.7.1), if a well-formed one is present.
    pub fn mss_option(&self) -> Option<u16> {
        let h = self.header();
        walk_options(h).find(|o| o.kind == OPT_MSS && o.len == 4).and_then(|o| get_u16(h, o.at + 2))
    }

    /// The window scale option's shift (RFC 7323 §2.2), clamped to 14 (§2.3), if a well-formed one is
    /// present. Only meaningful on a SYN.
    pub fn wscale_option(&self) -> Option<u8> {
        let h = self.header();
        walk_options(h)
            .find(|o| o.kind == OPT_WSCALE && o.len == 3)
            .and_then(|o| h.get(o.at + 2).map(|&s| s.min(MAX_WSCALE)))
    }

    /// SACK blocks (RFC 2018), in option order: (left, right), of every SACK option in the header.
    pub fn sack_blocks(&self) -> impl Iterator<Item = (SeqNum, SeqNum)> + '_ {
        let h = self.header();
        sack_block_offsets(h).map(move |at| {
            (SeqNum::new(get_u32(h, at).unwrap_or(0)), SeqNum::new(get_u32(h, at + 4).unwrap_or(0)))
        })
    }

    /// Verifies the checksum over the pseudo-header and the whole buffer.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buf.as_ref();
        if b.len() > u16::MAX as usize {
            return false;
        }
        let ph = checksum::pseudo_header(src, dst, IPPROTO_TCP, b.len() as u16);
        checksum::finish(checksum::sum(b, ph)) == 0
    }
}

/// Offsets of each SACK block's left edge, in every SACK option of the header (RFC 2018 §3 describes one
/// option of length 2 + 8n; a sender may still put two, and a receiver that reads blocks from both must
/// find every edge in the receiver's space). A SACK option whose length is not 2 + 8n is ignored.
fn sack_block_offsets(h: &[u8]) -> impl Iterator<Item = usize> + '_ {
    walk_options(h)
        .filter(|o| o.kind == OPT_SACK && o.len >= 10 && (o.len - 2) % 8 == 0)
        .flat_map(|o| (0..(o.len - 2) / 8).map(move |i| o.at + 2 + 8 * i))
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    /// Overwrites bytes at `at` with `new` and updates the checksum for the change (any alignment).
    /// Does nothing if the range is outside the buffer.
    fn patch(&mut self, at: usize, new: &[u8]) {
        let b = self.buf.as_mut();
        let Some(end) = at.checked_add(new.len()) else { return };
        if end > b.len() || b.len() < field::CHECKSUM + 2 {
            return;
        }
        let old_csum = u16::from_be_bytes([b[field::CHECKSUM], b[field::CHECKSUM + 1]]);
        let mut old = [0u8; 8];
        let n = new.len().min(8);
        old[..n].copy_from_slice(&b[at..at + n]);
        b[at..at + n].copy_from_slice(&new[..n]);
        let c = checksum::update_bytes(old_csum, at % 2 == 1, &old[..n], &new[..n]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    pub fn set_src_port(&mut self, p: u16) {
        self.patch(field::SRC_PORT, &p.to_be_bytes());
    }
    pub fn set_dst_port(&mut self, p: u16) {
        self.patch(field::DST_PORT, &p.to_be_bytes());
    }
    pub fn set_seq_number(&mut self, s: SeqNum) {
        self.patch(field::SEQ, &s.get().to_be_bytes());
    }
    pub fn set_ack_number(&mut self, a: SeqNum) {
        self.patch(field::ACK, &a.get().to_be_bytes());
    }
    pub fn set_urgent_ptr(&mut self, u: u16) {
        self.patch(field::URGENT, &u.to_be_bytes());
    }
    /// Sets the flag byte; data offset, reserved bits and NS are preserved.
    pub fn set_flags(&mut self, f: TcpFlags) {
        self.patch(field::FLAGS, &[f.to_byte()]);
    }
    pub fn set_window(&mut self, w: u16) {
        self.patch(field::WINDOW, &w.to_be_bytes());
    }

    /// Rewrites every SACK block through `f` (left and right edges separately), updating the checksum.
    pub fn map_sack_blocks(&mut self, mut f: impl FnMut(SeqNum) -> SeqNum) {
        // At most 40 option bytes hold at most 4 blocks: no allocation on this path.
        let mut offsets = [0usize; 5];
        let mut n = 0;
        for at in sack_block_offsets(self.header()).take(offsets.len()) {
            offsets[n] = at;
            n += 1;
        }
        for &at in &offsets[..n] {
            for edge in [at, at + 4] {
                let old = SeqNum::new(self.u32_at(edge));
                let new = f(old);
                if new != old {
                    self.patch(edge, &new.get().to_be_bytes());
                }
            }
        }
    }

    /// Lowers an MSS option to `max` if present and larger (RFC 4459-style clamping); returns whether the
    /// segment changed. Never adds an option.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let at = walk_options(self.header()).find(|o| o.kind == OPT_MSS && o.len == 4).map(|o| o.at + 2);
        match at {
            Some(at) if self.u16_at(at) > max => {
                self.patch(at, &max.to_be_bytes());
                true
            }
            _ => false,
        }
    }

    /// Recomputes the checksum from scratch over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let b = self.buf.as_mut();
        if b.len() < field::CHECKSUM + 2 {
            return;
        }
        b[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let ph = checksum::pseudo_header(src, dst, IPPROTO_TCP, b.len() as u16);
        let c = checksum::finish(checksum::sum(b, ph));
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// The payload for rewriting; the caller must then call [`Self::fill_checksum`] (or the IPv4 view's
    /// `fill_transport_checksum`).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    /// A Linux SYN (40-byte header): MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
    /// Checksum filled for SRC -> DST.
    fn syn() -> Vec<u8> {
        let mut s = vec![
            0xc3, 0x50, 0x00, 0x15, // 50000 -> 21
            0x12, 0x34, 0x56, 0x78, // seq
            0x00, 0x00, 0x00, 0x00, // ack
            0xa0, 0x02, 0xfa, 0xf0, // doff 10, SYN, window 64240
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
            0x02, 0x04, 0x05, 0xb4, // MSS 1460
            0x04, 0x02, 0x08, 0x0a, // SACK-permitted, TS kind/len
            0x00, 0x01, 0x02, 0x03, // TSval
            0x00, 0x00, 0x00, 0x00, // TSecr
            0x01, 0x03, 0x03, 0x07, // NOP, wscale 7
        ];
        TcpSegment::new_unchecked(&mut s[..]).fill_checksum(SRC, DST);
        s
    }

    fn recomputed(b: &[u8]) -> u16 {
        let mut c = b.to_vec();
        let mut seg = TcpSegment::new_unchecked(&mut c[..]);
        seg.fill_checksum(SRC, DST);
        seg.checksum()
    }

    #[test]
    fn syn_fixture_fields() {
        let b = syn();
        let s = TcpSegment::new_checked(&b[..]).unwrap();
        assert_eq!((s.src_port(), s.dst_port()), (50000, 21));
        assert_eq!(s.seq_number(), SeqNum::new(0x1234_5678));
        assert_eq!(s.header_len(), 40);
        assert_eq!(s.flags(), TcpFlags { syn: true, ..Default::default() });
        assert_eq!(s.window(), 64240);
        assert_eq!(s.mss_option(), Some(1460));
        assert_eq!(s.seq_len(), 1);
        assert_eq!(s.options().len(), 20);
        assert!(s.payload().is_empty());
        assert_eq!(s.sack_blocks().count(), 0);
        assert!(s.verify_checksum(SRC, DST));
        assert!(!s.verify_checksum(SRC, Ipv4Addr::new(93, 184, 216, 35)));
    }

    #[test]
    fn every_setter_matches_recompute() {
        let mut b = syn();
        let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
        s.set_src_port(1024);
        s.set_dst_port(2121);
        s.set_seq_number(SeqNum::new(0xffff_fff0));
        s.set_ack_number(SeqNum::new(7));
        s.set_urgent_ptr(3);
        s.set_flags(TcpFlags { syn: true, ack: true, ece: true, ..Default::default() });
        s.set_window(1);
        assert!(s.clamp_mss(1400));
        assert!(!s.clamp_mss(1500));
        assert_eq!(s.mss_option(), Some(1400));
        assert_eq!(s.src_port(), 1024);
        assert_eq!(s.flags().to_byte(), 0x52);
        assert_eq!(s.header_len(), 40, "set_flags must keep the data offset");
        let c = s.checksum();
        assert_eq!(c, recomputed(&b));
    }

    #[test]
    fn sack_blocks_rewritten() {
        // ACK with NOP NOP SACK(2 blocks), then a lone NOP so the option after sits at an odd offset.
        let mut b = vec![0u8; 20];
        b[12] = 0x80; // doff 8 -> 32 bytes; fix below
        b[13] = 0x10;
        let opts =
            [1, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 40, 1, 2, 4, 0x05, 0xb4, 0, 0, 0];
        b.extend_from_slice(&opts);
        b[12] = ((b.len() / 4) as u8) << 4;
        b.extend_from_slice(b"payload");
        TcpSegment::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
        let blocks: Vec<_> = s.sack_blocks().collect();
        assert_eq!(blocks, vec![(SeqNum::new(10), SeqNum::new(20)), (SeqNum::new(30), SeqNum::new(40))]);
        assert_eq!(s.mss_option(), Some(1460));
        s.map_sack_blocks(|x| x.add_signed(-15));
        // MSS at odd offset 41: checks update_bytes' odd path through clamp_mss.
        assert!(s.clamp_mss(536));
        let blocks: Vec<_> = s.sack_blocks().collect();
        assert_eq!(
            blocks,
            vec![(SeqNum::new(u32::MAX - 4), SeqNum::new(5)), (SeqNum::new(15), SeqNum::new(25))]
        );
        assert_eq!(s.mss_option(), Some(536));
        assert_eq!(s.payload(), b"payload");
        assert!(s.verify_checksum(SRC, DST));
    }

    #[test]
    fn every_sack_option_is_rewritten_and_wscale_read() {
        // Two SACK options of one block each (a sender may split them), then window scale 9.
        let mut b = vec![0u8; 20];
        b[13] = 0x10;
        let opts = [5, 10, 0, 0, 0, 10, 0, 0, 0, 20, 5, 10, 0, 0, 0, 30, 0, 0, 0, 40, 1, 3, 3, 9];
        b.extend_from_slice(&opts);
        b[12] = ((b.len() / 4) as u8) << 4;
        TcpSegment::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
        let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
        assert_eq!(s.wscale_option(), Some(9));
        s.map_sack_blocks(|x| x.add(1000));
        let blocks: Vec<_> = s.sack_blocks().collect();
        assert_eq!(
            blocks,
            vec![(SeqNum::new(1010), SeqNum::new(1020)), (SeqNum::new(1030), SeqNum::new(1040))],
            "the second option's block too"
        );
        assert!(s.verify_checksum(SRC, DST));
        // A shift above 14 is read as 14 (RFC 7323 §2.3).
        let mut b = vec![0u8; 20];
        b[13] = 0x02;
        b.extend_from_slice(&[3, 3, 200, 0]);
        b[12] = ((b.len() / 4) as u8) << 4;
        assert_eq!(TcpSegment::new_checked(&b[..]).unwrap().wscale_option(), Some(14));
    }

    #[test]
    fn checked_constructor_refusals() {
        assert_eq!(TcpSegment::new_checked(&[0u8; 19][..]).err(), Some(WireError::Truncated));
        let mut b = [0u8; 20];
        b[12] = 0x40;
        assert_eq!(TcpSegment::new_checked(&b[..]).err(), Some(WireError::BadHeaderLen));
        b[12] = 0x60;
        assert_eq!(TcpSegment::new_checked(&b[..]).err(), Some(WireError::Truncated));
        b[12] = 0x50;
        assert!(TcpSegment::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn garbage_options_stop_parsing() {
        // kind 2 with length 1 (too short), then an option running past the header.
        let mut b = [0u8; 28];
        b[12] = 0x70;
        b[20..24].copy_from_slice(&[2, 1, 5, 0]);
        let s = TcpSegment::new_checked(&b[..]).unwrap();
        assert_eq!(s.mss_option(), None);
        b[20..24].copy_from_slice(&[1, 5, 200, 0]);
        let s = TcpSegment::new_checked(&b[..]).unwrap();
        assert_eq!(s.sack_blocks().count(), 0);
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(mut b in proptest::collection::vec(any::<u8>(), 0..80), x in any::<u32>()) {
            if let Ok(s) = TcpSegment::new_checked(&b[..]) {
                let _ = (s.src_port(), s.dst_port(), s.seq_number(), s.ack_number(), s.flags(), s.window());
                let _ = (s.checksum(), s.urgent_ptr(), s.options(), s.payload(), s.seq_len(), s.mss_option());
                let _ = s.sack_blocks().count();
                let _ = s.verify_checksum(SRC, DST);
            }
            if let Ok(mut s) = TcpSegment::new_checked(&mut b[..]) {
                s.map_sack_blocks(|v| v.add(x));
                s.clamp_mss(x as u16);
                s.set_flags(TcpFlags::from_byte(x as u8));
                s.fill_checksum(SRC, DST);
                let _ = s.payload_mut();
            }
        }

        #[test]
        fn incremental_equals_recompute(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
            fl in any::<u8>(), win in any::<u16>(), urg in any::<u16>(), mss in any::<u16>(), d in any::<u32>(),
        ) {
            let mut b = syn();
            // Put a SACK option where the timestamps were so map_sack_blocks is exercised too.
            b[24..36].copy_from_slice(&[1, 1, 5, 10, 0, 0, 1, 0, 0, 0, 2, 0]);
            b.extend_from_slice(&payload);
            TcpSegment::new_unchecked(&mut b[..]).fill_checksum(SRC, DST);
            let mut s = TcpSegment::new_checked(&mut b[..]).unwrap();
            s.set_src_port(sp);
            s.set_dst_port(dp);
            s.set_seq_number(SeqNum::new(seq));
            s.set_ack_number(SeqNum::new(ack));
            s.set_flags(TcpFlags::from_byte(fl));
            s.set_window(win);
            s.set_urgent_ptr(urg);
            s.clamp_mss(mss);
            s.map_sack_blocks(|v| v.add(d));
            let c = s.checksum();
            prop_assert!(s.verify_checksum(SRC, DST));
            prop_assert_eq!(c, recomputed(&b));
        }
    }
}
