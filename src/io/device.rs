//! The packet device boundary: what the run loop needs from a device, and an in-memory pair for tests.
//!
//! Owns: the [`Device`] trait (one IPv4 datagram per `recv`/`send`, non-blocking, pollable fd, plus
//! batched [`Device::recv_batch`]/[`Device::send_batch`] with one-packet defaults), the batch buffers
//! ([`RxBatch`], [`TxBatch`]) and [`MemDevice`], a device backed by a datagram socket pair so the real
//! `poll(2)` loop can be driven by a test. Must not: know about TUN ioctls or offload framing (that is
//! `tun.rs` and `offload.rs`), the engine, or the run loop's policy.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// A packet device. Every call is non-blocking: `recv` returns [`io::ErrorKind::WouldBlock`] when no
/// packet is queued, and the run loop waits on [`Device::raw_fd`] with `poll(2)` for `POLLIN`.
pub trait Device {
    /// The device's name, used in every log line and error about it.
    fn name(&self) -> &str;
    /// Reads one packet into `buf`, returning its length. A packet longer than `buf` is truncated by
    /// the kernel, so `buf` must be at least as long as the largest packet the device can carry.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet.
    fn send(&mut self, pkt: &[u8]) -> io::Result<usize>;
    /// The descriptor `poll(2)` waits on.
    fn raw_fd(&self) -> RawFd;

    /// Reads one packet into `buf`, replacing its contents and reusing its capacity (at most `max`
    /// bytes). The default zero-fills the buffer first; a backend that can read into spare capacity
    /// overrides this to skip that fill on the packet path.
    fn recv_vec(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.resize(max, 0);
        match self.recv(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                Ok(n)
            }
            Err(e) => {
                buf.clear();
                Err(e)
            }
        }
    }

    /// Reads what one system call yields into `rx` (one datagram here; a backend with segmentation
    /// offload may split one large read into many packets) and returns how many packets `rx` now holds.
    /// End of file is [`io::ErrorKind::UnexpectedEof`]. `Ok(0)` means a read succeeded but yielded no
    /// packet (the backend dropped and counted something it could not frame, see
    /// [`Device::rx_errors`]); the caller simply reads again.
    fn recv_batch(&mut self, rx: &mut RxBatch) -> io::Result<usize> {
        rx.len = 0;
        let buf = rx.slot(0);
        match self.recv_vec(buf, RECV_SIZE) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                rx.len = 1;
                Ok(1)
            }
            Err(e) => Err(e),
        }
    }

    /// Bytes [`TxBatch`] must leave in front of every packet for this backend's own framing.
    fn tx_headroom(&self) -> usize {
        0
    }

    /// The capacity each [`TxBatch`] buffer should have (a backend that coalesces packets into the
    /// first buffer of a run needs room for a whole aggregate; 0: just the packet).
    fn tx_capacity(&self) -> usize {
        0
    }

    /// Writes every packet in `tx` (each after [`Device::tx_headroom`] bytes) and empties it. The
    /// default writes them one by one.
    fn send_batch(&mut self, tx: &mut TxBatch) -> Sent {
        tx.send_each(|p| self.send(p))
    }

    /// Packets this backend read but could not frame (dropped and counted here; 0 for plain devices).
    fn rx_errors(&self) -> u64 {
        0
    }

    /// Splits the aggregate `recv_batch` left in `rx` (see [`RxBatch::aggregate`]) into its segments
    /// and returns how many `rx` now holds (0: it could not be split; dropped and counted).
    fn split_aggregate(&mut self, rx: &mut RxBatch) -> usize {
        rx.len()
    }

    /// Whether [`TxBatch::push_aggregate`] packets may be queued for this device (it segments them).
    fn tx_aggregates(&self) -> bool {
        false
    }
}

/// Receive buffer size: the largest IPv4 datagram (65535) fits, so no read is ever truncated.
pub const RECV_SIZE: usize = 65536;

/// What a [`Device::send_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// Packets the device refused or cut short.
    pub errors: u64,
    /// The last error's description, for the log.
    pub error: Option<String>,
}

impl Sent {
    /// Accounts for `packets` the device refused.
    pub fn fail(&mut self, packets: u64, what: String) {
        self.errors += packets;
        self.error = Some(what);
    }
    /// Accounts for one single-packet write of `len` bytes.
    pub fn record(&mut self, len: usize, r: io::Result<usize>) {
        match r {
            Ok(n) if n == len => {
                self.packets += 1;
                self.bytes += n as u64;
            }
            Ok(n) => {
                self.errors += 1;
                self.error = Some(format!("short write: {n} of {len} bytes"));
            }
            Err(e) => {
                self.errors += 1;
                self.error = Some(e.to_string());
            }
        }
    }
}

/// Packets read in one batch. Buffers are kept between batches so the packet path does not allocate;
/// each is a `Vec` the engine may rewrite in place (an ALG rewrite can change its length).
#[derive(Debug, Default)]
pub struct RxBatch {
    bufs: Vec<Vec<u8>>,
    /// Index of the batch's first packet in `bufs` (1 after an aggregate in `bufs[0]` was split).
    first: usize,
    len: usize,
    aggregate: Option<Aggregate>,
}

/// A TCP aggregate read whole: one datagram the device cuts into `segs` segments of `seg` payload
/// bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    pub seg: usize,
    pub segs: u64,
}

impl RxBatch {
    /// Empties the batch (buffers are kept).
    pub fn reset(&mut self) {
        self.first = 0;
        self.len = 0;
        self.aggregate = None;
    }
    /// Marks the batch as holding one aggregate in buffer 0.
    pub fn set_aggregate(&mut self, a: Aggregate) {
        self.reset();
        self.len = 1;
        self.aggregate = Some(a);
    }
    /// The aggregate this batch holds as its only packet, if it is one.
    pub fn aggregate(&self) -> Option<Aggregate> {
        self.aggregate
    }
    /// Buffer 0 (holding an aggregate) and `n` more buffers of `size` bytes to split it into; the
    /// caller then sets the split packets with [`RxBatch::set_split`].
    pub fn split_slots(&mut self, n: usize, size: usize) -> (&mut Vec<u8>, &mut [Vec<u8>]) {
        self.slot(n);
        for b in &mut self.bufs[1..=n] {
            if b.len() != size {
                b.resize(size, 0);
            }
        }
        let (a, rest) = self.bufs.split_at_mut(1);
        (&mut a[0], &mut rest[..n])
    }
    /// The batch is now the `n` packets after buffer 0.
    pub fn set_split(&mut self, n: usize) {
        self.first = 1;
        self.len = n.min(self.bufs.len() - 1);
        self.aggregate = None;
    }
    /// The `i`th buffer, created on first use.
    pub fn slot(&mut self, i: usize) -> &mut Vec<u8> {
        if self.bufs.len() <= i {
            self.bufs.resize_with(i + 1, Vec::new);
        }
        &mut self.bufs[i]
    }
    /// The first `n` buffers, created on first use, each resized to `size` bytes (for a backend that
    /// reads into slices); the caller sets the batch length with [`RxBatch::set_len`].
    pub fn slots(&mut self, n: usize, size: usize) -> &mut [Vec<u8>] {
        self.slot(n.saturating_sub(1));
        for b in &mut self.bufs[..n] {
            if b.len() != size {
                b.resize(size, 0);
            }
        }
        &mut self.bufs[..n]
    }
    pub fn set_len(&mut self, n: usize) {
        self.first = 0;
        self.aggregate = None;
        self.len = n.min(self.bufs.len());
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Packet `i` of the batch (`i < len()`).
    pub fn packet_mut(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.bufs[self.first + i]
    }
}

/// Packets waiting to be written to one device, each preceded by the backend's headroom. Buffers are
/// reused between batches.
#[derive(Debug, Default)]
pub struct TxBatch {
    headroom: usize,
    capacity: usize,
    bufs: Vec<Vec<u8>>,
    /// Per packet: the segment payload size of an aggregate, 0 for an ordinary packet.
    seg: Vec<u16>,
    len: usize,
}

impl TxBatch {
    /// Buffers with `headroom` bytes before each packet and at least `capacity` bytes of room (memory
    /// is reserved, not touched, until a packet or an aggregate fills it).
    pub fn new(headroom: usize, capacity: usize) -> TxBatch {
        TxBatch { headroom, capacity, bufs: Vec::new(), seg: Vec::new(), len: 0 }
    }
    /// Queues a copy of `pkt`.
    pub fn push(&mut self, pkt: &[u8]) {
        self.push_seg(pkt, 0);
    }
    /// Queues a copy of an aggregate the device is to cut into `seg`-byte segments (only for a device
    /// whose [`Device::tx_aggregates`] is true).
    pub fn push_aggregate(&mut self, pkt: &[u8], seg: usize) {
        self.push_seg(pkt, u16::try_from(seg).unwrap_or(u16::MAX).max(1));
    }
    fn push_seg(&mut self, pkt: &[u8], seg: u16) {
        if self.bufs.len() == self.len {
            self.bufs.push(Vec::with_capacity(self.capacity.max(self.headroom + pkt.len().max(2048))));
            self.seg.push(0);
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.resize(self.headroom, 0);
        b.extend_from_slice(pkt);
        self.seg[self.len] = seg;
        self.len += 1;
    }
    /// The segment size of packet `i` if it is an aggregate.
    pub fn aggregate_seg(&self, i: usize) -> Option<usize> {
        Some(usize::from(self.seg[i])).filter(|&s| s > 0)
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn headroom(&self) -> usize {
        self.headroom
    }
    /// Packet `i` without the headroom.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][self.headroom..]
    }
    /// The queued buffers, headroom included, for a backend that frames them itself.
    pub fn buffers_mut(&mut self) -> &mut [Vec<u8>] {
        &mut self.bufs[..self.len]
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Writes the packets one by one with `send` (a plain `write(2)` each), accounts for them and
    /// empties the batch.
    pub fn send_each(&mut self, mut send: impl FnMut(&[u8]) -> io::Result<usize>) -> Sent {
        let mut sent = Sent::default();
        for i in 0..self.len {
            let pkt = self.packet(i);
            sent.record(pkt.len(), send(pkt));
        }
        self.clear();
        sent
    }
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).recv(buf)
    }
    fn send(&mut self, pkt: &[u8]) -> io::Result<usize> {
        (**self).send(pkt)
    }
    fn raw_fd(&self) -> RawFd {
        (**self).raw_fd()
    }
    fn recv_vec(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        (**self).recv_vec(buf, max)
    }
    fn recv_batch(&mut self, rx: &mut RxBatch) -> io::Result<usize> {
        (**self).recv_batch(rx)
    }
    fn tx_headroom(&self) -> usize {
        (**self).tx_headroom()
    }
    fn tx_capacity(&self) -> usize {
        (**self).tx_capacity()
    }
    fn send_batch(&mut self, tx: &mut TxBatch) -> Sent {
        (**self).send_batch(tx)
    }
    fn rx_errors(&self) -> u64 {
        (**self).rx_errors()
    }
    fn split_aggregate(&mut self, rx: &mut RxBatch) -> usize {
        (**self).split_aggregate(rx)
    }
    fn tx_aggregates(&self) -> bool {
        (**self).tx_aggregates()
    }
}

/// One end of an in-memory link: a `SOCK_SEQPACKET` Unix socket pair keeps packet boundaries, gives the
/// run loop a real descriptor to poll, and (unlike `SOCK_DGRAM`) reports the peer's close as end-of-file,
/// which stands in for a device that went away. [`MemDevice::pair`] returns the device (handed to the run loop)
/// and the [`MemPeer`] (held by the test, standing for the network behind the device).
#[derive(Debug)]
pub struct MemDevice {
    name: String,
    sock: UnixDatagram,
}

/// The test's end of a [`MemDevice`]: what it sends, the device receives, and vice versa.
#[derive(Debug)]
pub struct MemPeer {
    sock: UnixDatagram,
}

impl MemDevice {
    /// A connected device/peer pair; both ends are non-blocking.
    pub fn pair(name: &str) -> io::Result<(MemDevice, MemPeer)> {
        let mut fds = [0 as libc::c_int; 2];
        let ty = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: `fds` has room for the two descriptors socketpair(2) writes.
        if unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // `UnixDatagram`'s send/recv are plain send(2)/recv(2), which is all a seqpacket socket needs.
        let (a, b) = (UnixDatagram::from(a), UnixDatagram::from(b));
        Ok((MemDevice { name: name.to_string(), sock: a }, MemPeer { sock: b }))
    }
}

impl Device for MemDevice {
    fn name(&self) -> &str {
        &self.name
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }
    fn send(&mut self, pkt: &[u8]) -> io::Result<usize> {
        self.sock.send(pkt)
    }
    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl MemPeer {
    /// Injects a packet as if it arrived on the device from the network.
    pub fn inject(&self, pkt: &[u8]) -> io::Result<usize> {
        self.sock.send(pkt)
    }
    /// Takes one packet the run loop wrote to the device, if any (non-blocking).
    pub fn take(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 65536];
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Waits up to `timeout` for a packet the run loop wrote to the device.
    pub fn take_within(&self, timeout: std::time::Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.take()? {
                return Ok(Some(p));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    /// Closes the peer end: the device then reads end-of-file (0 bytes), which stands in for a device
    /// that went away.
    pub fn close(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_batch_keeps_headroom_order_and_reuses_buffers() {
        let mut tx = TxBatch::new(10, 4096);
        tx.push(&[1, 2, 3]);
        tx.push(&[4]);
        assert_eq!((tx.len(), tx.packet(0), tx.packet(1)), (2, &[1u8, 2, 3][..], &[4u8][..]));
        assert!(tx.buffers_mut().iter().all(|b| b.capacity() >= 4096 && b[..10] == [0; 10]));
        let first = tx.buffers_mut()[0].as_ptr();
        tx.clear();
        assert!(tx.is_empty());
        tx.push(&[9; 100]);
        assert_eq!(tx.packet(0), &[9; 100][..]);
        assert_eq!(tx.buffers_mut()[0].as_ptr(), first, "the buffer is reused, not reallocated");
    }

    #[test]
    fn default_batches_are_one_packet_and_eof_is_an_error() {
        let (mut dev, peer) = MemDevice::pair("mem1").unwrap();
        let mut rx = RxBatch::default();
        assert_eq!(dev.recv_batch(&mut rx).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        peer.inject(&[7, 7]).unwrap();
        peer.inject(&[8]).unwrap();
        assert_eq!(dev.recv_batch(&mut rx).unwrap(), 1);
        assert_eq!(rx.packet_mut(0), &vec![7, 7]);
        assert_eq!(dev.recv_batch(&mut rx).unwrap(), 1);
        assert_eq!(rx.packet_mut(0), &vec![8]);
        let mut tx = TxBatch::new(dev.tx_headroom(), dev.tx_capacity());
        tx.push(&[1]);
        tx.push(&[2, 2]);
        let sent = dev.send_batch(&mut tx);
        assert_eq!((sent.packets, sent.bytes, sent.errors), (2, 3, 0));
        assert!(tx.is_empty());
        assert_eq!(peer.take().unwrap(), Some(vec![1]));
        assert_eq!(peer.take().unwrap(), Some(vec![2, 2]));
        peer.close();
        assert_eq!(dev.recv_batch(&mut rx).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn rx_slots_are_sized_for_slice_reads() {
        let mut rx = RxBatch::default();
        let bufs = rx.slots(4, 1500);
        assert_eq!(bufs.len(), 4);
        bufs[1].truncate(60);
        rx.set_len(2);
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.packet_mut(1).len(), 60);
        assert!(rx.slots(4, 1500).iter().all(|b| b.len() == 1500), "restored before the next read");
        rx.set_len(99);
        assert_eq!(rx.len(), 4, "never longer than the buffers");
    }

    #[test]
    fn mem_pair_keeps_packet_boundaries_and_never_blocks() {
        let (mut dev, peer) = MemDevice::pair("mem0").unwrap();
        assert_eq!(dev.name(), "mem0");
        let mut buf = vec![0u8; 100];
        assert_eq!(dev.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        peer.inject(&[1, 2, 3]).unwrap();
        peer.inject(&[4, 5]).unwrap();
        let mut v = Vec::with_capacity(10);
        assert_eq!(dev.recv_vec(&mut v, 10).unwrap(), 3);
        assert_eq!(v, [1, 2, 3]);
        assert_eq!(dev.recv_vec(&mut v, 10).unwrap(), 2);
        assert_eq!(v, [4, 5]);
        assert!(dev.recv_vec(&mut v, 10).is_err());
        assert!(v.is_empty());
        dev.send(&[9, 9, 9, 9]).unwrap();
        assert_eq!(peer.take().unwrap(), Some(vec![9, 9, 9, 9]));
        assert_eq!(peer.take().unwrap(), None);
        peer.close();
        assert_eq!(dev.recv(&mut buf).unwrap(), 0, "a closed peer reads as end-of-file");
    }
}
