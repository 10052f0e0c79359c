//! TUN I/O with segmentation offload (`IFF_VNET_HDR` + `TUNSETOFFLOAD`), through the `tun-rs` crate.
//!
//! Owns: opening a TUN device with a virtio-net header and TCP (and, where the kernel has it, UDP)
//! segmentation offload; reading: an IPv4 TCP aggregate (up to 64 KB, partial checksum) is offered
//! whole (the run loop asks [`crate::engine::Engine::handle_aggregate`], which takes it when its
//! connection needs nothing per segment), anything else is split into ordinary MTU-sized packets with
//! complete checksums (`tun-rs`'s GSO split); writing: aggregates leave whole with a TSO header, runs
//! of ordinary packets are coalesced by `tun-rs`'s GRO. Must not: decide anything about packets, set
//! addresses or routes, or let a virtio header reach the engine. The engine sees either exactly the
//! packets a plain TUN device would give it (so the FTP ALG's framing and sequence adjustment, MTU checks
//! and checksums work unchanged) or an aggregate through the one call that knows it is one.
//!
//! Why: with one plain `read`/`write` per 1500-byte packet the system-call and TUN queue cost per
//! packet caps a single TCP stream far below what the kernel's own NAT moves. With offload one `read`
//! yields up to 64 KB (dozens of segments) and one `write` puts a coalesced aggregate back, which the
//! kernel carries through veth as one unit and segments (or hands to the receiver whole) at the end.
//!
//! Policy: an aggregate `tun-rs` cannot split (a malformed virtio header, a segment larger than the
//! receive slot) is dropped and counted in [`crate::io::device::Device::rx_errors`], never a panic and
//! never a stop of the loop. A batch write that fails counts every packet of the batch as a write error
//! (the kernel reports one error for the batch, not which packets it refused).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{
    gso_split, DeviceBuilder, GROTable, SyncDevice, VirtioNetHdr, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN,
};

use super::device::{Aggregate, RxBatch, Sent, TxBatch};
use crate::wire::checksum;

/// virtio-net header flags and GSO type bits (`linux/virtio_net.h`) that `tun-rs` does not export.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Headroom every written packet needs for its virtio-net header.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Room each write buffer needs so GRO can coalesce a whole 64 KB aggregate into it: `tun-rs` refuses
/// to coalesce into a buffer that would have to grow (twice the headroom plus the aggregate).
pub const TX_CAPACITY: usize = 2 * HEADROOM + 65535;
/// Packets one read may split into: a 64 KB aggregate of 536-byte segments is 123.
pub const RX_BATCH: usize = IDEAL_BATCH_SIZE;

/// An open TUN descriptor with offload on.
pub struct OffloadIo {
    dev: SyncDevice,
    /// The virtio-net header of the last read.
    hdr: [u8; VIRTIO_NET_HDR_LEN],
    /// The header of an aggregate left whole in the batch, kept for [`OffloadIo::split`].
    pending: Option<VirtioNetHdr>,
    sizes: Vec<usize>,
    gro: GROTable,
    /// Each split packet's buffer size: at least the device MTU.
    slot: usize,
    udp_gso: bool,
    rx_errors: u64,
}

impl std::fmt::Debug for OffloadIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadIo")
            .field("fd", &self.dev.as_raw_fd())
            .field("slot", &self.slot)
            .field("udp_gso", &self.udp_gso)
            .finish()
    }
}

impl OffloadIo {
    /// Opens (creating if needed) TUN device `name` with offload. Changes nothing else on the device
    /// (no MTU, no up/down: `tun.rs` decides that). `slot` is the largest packet a split can yield.
    pub fn open(name: &str, slot: usize) -> io::Result<OffloadIo> {
        // `default()`, not `new()`: `new()` brings the device up, which an attached persistent device's
        // operator may not want.
        let dev = DeviceBuilder::default().name(name).offload(true).build_sync()?;
        OffloadIo::from_device(dev, slot)
    }

    /// Wraps a descriptor `tun-rs` opened with offload (one queue of a multi-queue device, say).
    pub fn from_device(dev: SyncDevice, slot: usize) -> io::Result<OffloadIo> {
        if !dev.tcp_gso() {
            return Err(io::Error::other("the kernel refused IFF_VNET_HDR/TUNSETOFFLOAD"));
        }
        dev.set_nonblocking(true)?;
        let udp_gso = dev.udp_gso();
        Ok(OffloadIo {
            dev,
            hdr: [0; VIRTIO_NET_HDR_LEN],
            pending: None,
            sizes: vec![0; RX_BATCH],
            gro: GROTable::new(),
            slot,
            udp_gso,
            rx_errors: 0,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    /// Whether the kernel also offloads UDP segmentation (USO, Linux 6.2+).
    pub fn udp_gso(&self) -> bool {
        self.udp_gso
    }

    pub fn rx_errors(&self) -> u64 {
        self.rx_errors
    }

    fn framing_error(&mut self, rx: &mut RxBatch, what: &dyn std::fmt::Display) -> usize {
        rx.reset();
        self.rx_errors += 1;
        tracing::debug!(error = %what, "offload: dropped a packet that could not be framed");
        0
    }

    /// One read. An ordinary packet (its checksum completed if the kernel left it partial) is the
    /// batch's one packet; an IPv4 TCP aggregate is left whole as [`RxBatch::aggregate`] for the run
    /// loop to translate whole or [`OffloadIo::split`]; any other aggregate is split at once.
    pub fn recv_batch(&mut self, rx: &mut RxBatch) -> io::Result<usize> {
        rx.reset();
        let buf = rx.slot(0);
        buf.clear();
        buf.reserve(65535);
        let spare = buf.spare_capacity_mut();
        let iov = [
            libc::iovec { iov_base: self.hdr.as_mut_ptr().cast(), iov_len: VIRTIO_NET_HDR_LEN },
            libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() },
        ];
        // SAFETY: both iovecs describe writable memory we own for the duration of the call.
        let n = unsafe { libc::readv(self.dev.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n <= VIRTIO_NET_HDR_LEN {
            return Ok(self.framing_error(rx, &format_args!("read of {n} bytes: no packet after the header")));
        }
        // SAFETY: readv(2) initialised `n - VIRTIO_NET_HDR_LEN <= spare.len()` bytes of the spare capacity.
        unsafe { buf.set_len(n - VIRTIO_NET_HDR_LEN) };
        let hdr = match VirtioNetHdr::decode(&self.hdr) {
            Ok(h) => h,
            Err(e) => return Ok(self.framing_error(rx, &e)),
        };
        if hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE {
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                // CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the rest is ours to add.
                let at = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
                if hdr.csum_offset > 16 || at + 2 > buf.len() {
                    return Ok(self.framing_error(rx, &"checksum offset outside the packet"));
                }
                complete_checksum(buf, usize::from(hdr.csum_start), at);
            }
            rx.set_len(1);
            return Ok(1);
        }
        self.pending = Some(hdr);
        let tcp4 = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_TCPV4;
        if tcp4 && hdr.gso_size > 0 && buf.first().is_some_and(|b| b >> 4 == 4) {
            let ip_hl = usize::from(buf[0] & 0x0f) * 4;
            let tcp_hl = buf.get(ip_hl + 12).map_or(0, |b| usize::from(b >> 4) * 4);
            let payload = buf.len().saturating_sub(ip_hl + tcp_hl);
            if tcp_hl >= 20 && payload > 0 {
                let seg = usize::from(hdr.gso_size);
                rx.set_aggregate(Aggregate { seg, segs: payload.div_ceil(seg) as u64 });
                return Ok(1);
            }
        }
        Ok(self.split(rx))
    }

    /// Splits the aggregate the last [`OffloadIo::recv_batch`] read into MTU-sized packets with
    /// complete checksums (`tun-rs`'s GSO split), after the header checks `tun-rs` makes on its own
    /// read path: the kernel's `hdr_len` is not trusted on the forwarding path, so it is derived from
    /// the transport header.
    pub fn split(&mut self, rx: &mut RxBatch) -> usize {
        let Some(mut hdr) = self.pending.take() else { return rx.len() };
        let (input, outs) = rx.split_slots(RX_BATCH, self.slot);
        let is_v6 = input.first().is_some_and(|b| b >> 4 == 6);
        let start = usize::from(hdr.csum_start);
        let udp = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_UDP_L4;
        let th_len = if udp { Some(8) } else { input.get(start + 12).map(|b| u16::from(b >> 4) * 4) };
        let Some(th_len) = th_len.filter(|l| (8..=60).contains(l)) else {
            return self.framing_error(rx, &"transport header length invalid");
        };
        hdr.hdr_len = hdr.csum_start.saturating_add(th_len);
        if input.len() < usize::from(hdr.hdr_len) || start + usize::from(hdr.csum_offset) + 2 > input.len() {
            return self.framing_error(rx, &"aggregate shorter than its headers");
        }
        match gso_split(input, hdr, outs, &mut self.sizes, 0, is_v6) {
            Ok(n) => {
                for (b, &len) in outs.iter_mut().zip(&self.sizes[..n]) {
                    b.truncate(len);
                }
                rx.set_split(n);
                n
            }
            Err(e) => self.framing_error(rx, &e),
        }
    }

    /// Writes every packet of `tx` (each after [`HEADROOM`] bytes), then empties it: runs of ordinary
    /// packets coalesced by `tun-rs`'s GRO, aggregates with a TSO header of their own. Order is kept.
    pub fn send_batch(&mut self, tx: &mut TxBatch) -> Sent {
        debug_assert_eq!(tx.headroom(), HEADROOM);
        let mut sent = Sent::default();
        let n = tx.len();
        let mut i = 0;
        while i < n {
            if let Some(seg) = tx.aggregate_seg(i) {
                let buf = &mut tx.buffers_mut()[i];
                let segs = frame_aggregate(buf, seg);
                let len = buf.len() - HEADROOM;
                match self.dev.send(buf) {
                    Ok(w) if w == buf.len() => {
                        sent.packets += segs;
                        sent.bytes += len as u64;
                    }
                    Ok(w) => sent.fail(segs, format!("short write: {w} of {} bytes", buf.len())),
                    Err(e) => sent.fail(segs, e.to_string()),
                }
                i += 1;
                continue;
            }
            let end = (i..n).find(|&j| tx.aggregate_seg(j).is_some()).unwrap_or(n);
            let packets = (end - i) as u64;
            let bytes: u64 = (i..end).map(|j| tx.packet(j).len() as u64).sum();
            match self.dev.send_multiple(&mut self.gro, &mut tx.buffers_mut()[i..end], HEADROOM) {
                Ok(_) => {
                    sent.packets += packets;
                    sent.bytes += bytes;
                }
                Err(e) => sent.fail(packets, format!("batch write: {e}")),
            }
            i = end;
        }
        tx.clear();
        sent
    }
}

/// Completes a `CHECKSUM_PARTIAL` packet's transport checksum: the field at `at` holds the folded
/// pseudo-header sum; the bytes from `start` on are added to it and the complement stored.
fn complete_checksum(pkt: &mut [u8], start: usize, at: usize) {
    let initial = u32::from(u16::from_be_bytes([pkt[at], pkt[at + 1]]));
    pkt[at..at + 2].fill(0);
    let mut c = checksum::finish(checksum::sum(&pkt[start..], initial));
    // RFC 768: a computed UDP checksum of zero is sent as all ones (zero means "none").
    if c == 0 && at == start + 6 {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Writes the virtio-net header for a TCP aggregate that leaves whole (the kernel segments it at
/// `seg` payload bytes and completes each segment's checksum from the pseudo-header sum left in the
/// TCP checksum field, as for any `CHECKSUM_PARTIAL` packet). Returns the number of segments.
fn frame_aggregate(buf: &mut [u8], seg: usize) -> u64 {
    let (head, pkt) = buf.split_at_mut(HEADROOM);
    let ip_hl = usize::from(pkt[0] & 0x0f) * 4;
    let tcp_hl = usize::from(pkt[ip_hl + 12] >> 4) * 4;
    let tcp_len = pkt.len() - ip_hl;
    let src = std::net::Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = std::net::Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let sum = checksum::pseudo_header(src, dst, 6, tcp_len as u16);
    // The folded sum, not its complement: what the kernel's own CHECKSUM_PARTIAL packets carry.
    pkt[ip_hl + 16..ip_hl + 18].copy_from_slice(&(!checksum::finish(sum)).to_be_bytes());
    let cwr = pkt[ip_hl + 13] & 0x80 != 0;
    let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        // RFC 3168 §6.1.2: CWR belongs to the first segment only; the ECN type tells the kernel so.
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | if cwr { VIRTIO_NET_HDR_GSO_ECN } else { 0 },
        hdr_len: (ip_hl + tcp_hl) as u16,
        gso_size: seg as u16,
        csum_start: ip_hl as u16,
        csum_offset: 16,
    };
    // `encode` only fails for a buffer shorter than the header, which `HEADROOM` rules out.
    let _ = hdr.encode(head);
    (tcp_len - tcp_hl).div_ceil(seg) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-byte IPv4 header + 20-byte TCP header + `payload`, TCP checksum left as garbage.
    fn tcp_packet(payload: usize, flags: u8) -> Vec<u8> {
        let total = 40 + payload;
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            6,
            0,
            0,
            10,
            0,
            0,
            2,
            198,
            51,
            100,
            2,
        ];
        let c = checksum::checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0xde, 0xad, 0, 0,
        ]);
        p.extend((0..payload).map(|i| i as u8));
        p
    }

    fn tcp_checksum_ok(p: &[u8]) -> bool {
        let src = std::net::Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let s = checksum::sum(&p[20..], checksum::pseudo_header(src, dst, 6, (p.len() - 20) as u16));
        checksum::finish(s) == 0
    }

    #[test]
    fn an_aggregate_leaves_with_a_tso_header_and_the_pseudo_header_sum() {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend(tcp_packet(3000, 0x10));
        assert_eq!(frame_aggregate(&mut buf, 1448), 3, "3000 bytes in 1448-byte segments");
        let hdr = VirtioNetHdr::decode(&buf[..HEADROOM]).unwrap();
        assert_eq!(
            (hdr.flags, hdr.gso_type, hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset),
            (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 40, 1448, 20, 16)
        );
        // What the kernel does with CHECKSUM_PARTIAL: sum from csum_start on, complement, store.
        let mut pkt = buf[HEADROOM..].to_vec();
        complete_checksum(&mut pkt, 20, 36);
        assert!(tcp_checksum_ok(&pkt), "completing the partial sum gives a valid checksum");
        // CWR set: the kernel must know to clear it after the first segment.
        let mut buf = vec![0u8; HEADROOM];
        buf.extend(tcp_packet(2000, 0x90));
        frame_aggregate(&mut buf, 1000);
        assert_eq!(VirtioNetHdr::decode(&buf[..HEADROOM]).unwrap().gso_type, VIRTIO_NET_HDR_GSO_TCPV4 | 0x80);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut p = tcp_packet(101, 0x18);
        let src = std::net::Ipv4Addr::new(10, 0, 0, 2);
        let dst = std::net::Ipv4Addr::new(198, 51, 100, 2);
        let partial = !checksum::finish(checksum::pseudo_header(src, dst, 6, 121));
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        complete_checksum(&mut p, 20, 36);
        assert!(tcp_checksum_ok(&p));
    }
}
