//! A non-blocking connection with an input and an output buffer, for the run loop's small servers.
//!
//! Owns: reading what is there without blocking (bounded), queueing output and writing it as the socket
//! accepts it. Must not: interpret the bytes (the control and metrics servers do) or block, ever.

use std::io::{self, Read, Write};

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Nothing more to read now; the connection is open.
    Open,
    /// The peer closed its side.
    Eof,
}

/// One accepted connection.
#[derive(Debug)]
pub struct Peer<S> {
    pub sock: S,
    pub input: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    pub opened: std::time::Instant,
}

impl<S: Read + Write> Peer<S> {
    pub fn new(sock: S) -> Peer<S> {
        Peer { sock, input: Vec::new(), out: Vec::new(), out_at: 0, opened: std::time::Instant::now() }
    }

    /// Reads everything available. More than `max` buffered input bytes is an error (the peer is not
    /// speaking the protocol); so is any socket error but `WouldBlock`/`Interrupted`.
    pub fn read_available(&mut self, max: usize) -> io::Result<ReadState> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(ReadState::Eof),
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if self.input.len() > max {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "request too long"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadState::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn queue(&mut self, bytes: &[u8]) {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Writes as much as the socket takes now. `Ok(true)` when nothing is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_at < self.out.len() {
            match self.sock.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Large replies must not keep their memory once sent.
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.out_at = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reads_bounded_and_writes_without_blocking() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut p = Peer::new(a);
        assert_eq!(p.read_available(16).unwrap(), ReadState::Open);
        b.write_all(b"hello\n").unwrap();
        assert_eq!(p.read_available(16).unwrap(), ReadState::Open);
        assert_eq!(p.input, b"hello\n");
        b.write_all(&[b'x'; 32]).unwrap();
        assert!(p.read_available(16).is_err(), "over the bound");
        // Fill the socket until it pushes back: flush reports "not done" instead of blocking.
        let big = vec![7u8; 8 << 20];
        p.queue(&big);
        assert!(!p.flush().unwrap());
        assert!(p.pending() > 0);
        let mut sink = vec![0u8; 1 << 16];
        b.set_nonblocking(true).unwrap();
        let mut got = 0;
        while got < big.len() {
            match b.read(&mut sink) {
                Ok(n) => got += n,
                Err(_) => {
                    p.flush().unwrap();
                }
            }
        }
        assert!(p.flush().unwrap());
        assert_eq!(p.pending(), 0);
        drop(b);
        assert_eq!(p.read_available(16).unwrap(), ReadState::Eof);
    }
}
