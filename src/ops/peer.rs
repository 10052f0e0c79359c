//! Non-blocking connections with an input and an output buffer, for the operations thread's small
//! servers, and the connection slots both servers keep.
//!
//! Owns: reading what is there without blocking (bounded), queueing output and writing it as the socket
//! accepts it, noticing a peer that stopped reading ([`Peer::stalled_since`]), and [`Conns`]: a bounded
//! set of connections with the cut-off policy both servers apply ([`Limits`]: a request deadline, a
//! stall deadline, eviction of the oldest client still owing its request when every slot is taken) and
//! its accounting ([`CutCounts`]). Must not: interpret the bytes (the control and metrics servers do)
//! or block, ever.

use std::io::{self, Read, Write};
use std::time::Duration;

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
    /// When the peer last took bytes, or when output started waiting for it.
    progressed: std::time::Instant,
}

/// Bytes already written that the output buffer keeps before moving the rest to its front: a slow
/// reader of a long reply must not make the buffer hold everything sent so far.
const COMPACT_AT: usize = 64 << 10;

impl<S: Read + Write> Peer<S> {
    pub fn new(sock: S) -> Peer<S> {
        let now = std::time::Instant::now();
        Peer { sock, input: Vec::new(), out: Vec::new(), out_at: 0, opened: now, progressed: now }
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
        self.output().extend_from_slice(bytes);
    }

    /// The output buffer, to append to (what is already in it stays queued).
    pub fn output(&mut self) -> &mut Vec<u8> {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
            // Nothing was waiting: the peer's time to read starts now.
            self.progressed = std::time::Instant::now();
        } else if self.out_at >= COMPACT_AT && self.out_at * 2 >= self.out.len() {
            self.out.drain(..self.out_at);
            self.out_at = 0;
        }
        &mut self.out
    }

    /// Since when queued output has been waiting for the peer to read any of it (`None`: nothing waits).
    pub fn stalled_since(&self) -> Option<std::time::Instant> {
        (self.pending() > 0).then_some(self.progressed)
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
                Ok(n) => {
                    self.out_at += n;
                    self.progressed = std::time::Instant::now();
                }
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

/// The limits a server applies to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_clients: usize,
    /// A client must have sent its whole request within this time of connecting.
    pub request_timeout: Duration,
    /// A client with output waiting that reads none of it for this long is cut off.
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 64,
            request_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Served, or the client went away, or it broke the protocol (it was answered first).
    Done,
    /// No complete request within [`Limits::request_timeout`].
    RequestTimeout,
    /// Output waiting, none of it read for [`Limits::stall_timeout`].
    Stalled,
    /// Every slot was taken and this was the oldest client still owing its request.
    Evicted,
}

/// Connections a server cut off, by reason (served ones are not counted), and those it turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutCounts {
    pub request_timeout: u64,
    pub stalled: u64,
    pub evicted: u64,
    /// Turned away at once: every slot busy with a client that owes nothing (or a subscriber limit).
    pub refused: u64,
}

impl CutCounts {
    /// `ops.<server>.cut_off.<reason>` counters for `show stats` and the metrics.
    pub fn counters(&self, server: &str, out: &mut Vec<(String, u64)>) {
        for (reason, n) in [
            ("request_timeout", self.request_timeout),
            ("stalled", self.stalled),
            ("evicted", self.evicted),
            ("refused", self.refused),
        ] {
            out.push((format!("ops.{server}.cut_off.{reason}"), n));
        }
    }
}

/// What [`Conns`] needs to know of a connection's protocol state.
pub trait Phase {
    /// Still waiting for the client's request (subject to the request deadline, and evictable).
    fn owes_request(&self) -> bool;
}

/// One connection of a server: its id (stable while it lives, for replies that come back later), the
/// socket and buffers, the server's protocol state, and whether it is to be closed.
#[derive(Debug)]
pub struct Conn<S, P> {
    pub id: u64,
    pub peer: Peer<S>,
    pub phase: P,
    pub cut: Option<Cut>,
}

impl<S: Read + Write, P> Conn<S, P> {
    /// Writes what the socket takes now. A write error ends the connection; so does having written
    /// everything when this was the `last` of its output.
    pub fn write_out(&mut self, last: bool) {
        match self.peer.flush() {
            Err(_) => self.cut = Some(Cut::Done),
            Ok(true) if last => self.cut = Some(Cut::Done),
            Ok(_) => {}
        }
    }
}

/// A server's connections. A connection marked with [`Conn::cut`] keeps its place (the server's poll
/// descriptors are indexed by it) until [`Conns::sweep`].
#[derive(Debug)]
pub struct Conns<S, P> {
    pub list: Vec<Conn<S, P>>,
    pub limits: Limits,
    pub counts: CutCounts,
    next_id: u64,
}

impl<S: Read + Write, P: Phase> Conns<S, P> {
    pub fn new(limits: Limits) -> Conns<S, P> {
        Conns { list: Vec::new(), limits, counts: CutCounts::default(), next_id: 0 }
    }

    /// Connections not marked to be closed.
    pub fn live(&self) -> impl Iterator<Item = &Conn<S, P>> {
        self.list.iter().filter(|c| c.cut.is_none())
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Conn<S, P>> {
        self.list.iter_mut().find(|c| c.id == id && c.cut.is_none())
    }

    /// Takes a new connection in `phase`. When every slot is taken, the oldest client still owing its
    /// request is cut off to make room (a slow or idle client cannot keep others out for longer than
    /// it takes `max_clients` newer connections to arrive); when none owes its request, the newcomer
    /// is sent `refusal` and turned away. Returns the new connection's id.
    pub fn admit(&mut self, sock: S, phase: P, refusal: &[u8]) -> Option<u64> {
        if self.live().count() >= self.limits.max_clients {
            let oldest = self
                .list
                .iter_mut()
                .filter(|c| c.cut.is_none() && c.phase.owes_request())
                .min_by_key(|c| c.peer.opened);
            match oldest {
                Some(c) => {
                    c.cut = Some(Cut::Evicted);
                    self.counts.evicted += 1;
                }
                None => {
                    let mut peer = Peer::new(sock);
                    peer.queue(refusal);
                    let _ = peer.flush();
                    self.counts.refused += 1;
                    return None;
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.list.push(Conn { id, peer: Peer::new(sock), phase, cut: None });
        Some(id)
    }

    /// Marks the clients past their request or stall deadline at `now`.
    pub fn expire(&mut self, now: std::time::Instant) {
        let l = self.limits;
        for c in self.list.iter_mut().filter(|c| c.cut.is_none()) {
            if c.phase.owes_request() && now >= c.peer.opened + l.request_timeout {
                c.cut = Some(Cut::RequestTimeout);
                self.counts.request_timeout += 1;
            } else if c.peer.stalled_since().is_some_and(|t| now >= t + l.stall_timeout) {
                c.cut = Some(Cut::Stalled);
                self.counts.stalled += 1;
            }
        }
    }

    /// The next time [`Conns::expire`] may cut someone off.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        let l = self.limits;
        self.live()
            .filter_map(|c| {
                let req = c.phase.owes_request().then(|| c.peer.opened + l.request_timeout);
                let stall = c.peer.stalled_since().map(|t| t + l.stall_timeout);
                req.into_iter().chain(stall).min()
            })
            .min()
    }

    /// Closes the connections marked to be closed.
    pub fn sweep(&mut self) {
        self.list.retain(|c| c.cut.is_none());
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
