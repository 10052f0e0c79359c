//! TUN I/O with segmentation offload (`IFF_VNET_HDR` + `TUNSETOFFLOAD`), through the `tun-rs` crate.
//!
//! Owns: opening a TUN device with a virtio-net header and TCP (and, where the kernel has it, UDP)
//! segmentation offload, splitting what the kernel hands over (64 KB GSO aggregates with a partial
//! checksum) into ordinary MTU-sized IPv4 packets with complete checksums, and coalescing what the run
//! loop writes back into GSO aggregates (GRO) before the write. Must not: decide anything about packets,
//! set addresses or routes, or let a virtio header or a partial checksum reach the engine: the engine
//! sees exactly the packets a plain TUN device would give it, so translation, the FTP ALG's framing
//! and sequence adjustment, MTU checks and checksums work unchanged.
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

use tun_rs::{DeviceBuilder, GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use super::device::{RxBatch, Sent, TxBatch};

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
    /// One raw read: virtio-net header plus the largest aggregate.
    raw: Vec<u8>,
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
        if !dev.tcp_gso() {
            return Err(io::Error::other("the kernel refused IFF_VNET_HDR/TUNSETOFFLOAD"));
        }
        dev.set_nonblocking(true)?;
        let udp_gso = dev.udp_gso();
        Ok(OffloadIo {
            dev,
            raw: vec![0; VIRTIO_NET_HDR_LEN + 65535],
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

    /// One read, split into packets in `rx`.
    pub fn recv_batch(&mut self, rx: &mut RxBatch) -> io::Result<usize> {
        let bufs = rx.slots(RX_BATCH, self.slot);
        match self.dev.recv_multiple(&mut self.raw, bufs, &mut self.sizes, 0) {
            Ok(n) => {
                for (b, &len) in bufs.iter_mut().zip(&self.sizes[..n]) {
                    b.truncate(len);
                }
                rx.set_len(n);
                Ok(n)
            }
            // An error from read(2) itself carries an errno; anything else is tun-rs refusing the
            // framing of a packet that was read, which is that packet's problem, not the device's.
            Err(e) if e.raw_os_error().is_some() => {
                rx.set_len(0);
                Err(e)
            }
            Err(e) => {
                rx.set_len(0);
                self.rx_errors += 1;
                tracing::debug!(error = %e, "offload: dropped a packet that could not be split");
                Ok(0)
            }
        }
    }

    /// Coalesces and writes every packet of `tx` (each after [`HEADROOM`] bytes), then empties it.
    pub fn send_batch(&mut self, tx: &mut TxBatch) -> Sent {
        debug_assert_eq!(tx.headroom(), HEADROOM);
        let n = tx.len() as u64;
        let bytes: u64 = (0..tx.len()).map(|i| tx.packet(i).len() as u64).sum();
        let r = self.dev.send_multiple(&mut self.gro, tx.buffers_mut(), HEADROOM);
        tx.clear();
        match r {
            Ok(_) => Sent { packets: n, bytes, errors: 0, error: None },
            Err(e) => Sent { packets: 0, bytes: 0, errors: n, error: Some(format!("batch write: {e}")) },
        }
    }
}
