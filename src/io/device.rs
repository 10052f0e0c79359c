//! The packet device boundary: what the run loop needs from a device, and an in-memory pair for tests.
//!
//! Owns: the [`Device`] trait (one IPv4 datagram per `recv`/`send`, non-blocking, pollable fd) and
//! [`MemDevice`], a device backed by a datagram socket pair so the real `poll(2)` loop can be driven by a
//! test. Must not: know about TUN ioctls (that is `tun.rs`), the engine, or the run loop's policy.

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
