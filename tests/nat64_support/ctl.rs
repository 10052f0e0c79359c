//! A two-sided driver for one FTP control connection through the engine: each end sends its bytes as
//! consecutive segments, and what reaches the other end is parsed by etherparse ([`seen`]), checked
//! against that end's expectations, and must stay contiguous in the receiver's own sequence space.
//!
//! Owns: the driver. Must not: open the connection (each test file's handshake does, then builds a
//! [`Ctl`]) or know what a test checks beyond each end's addresses.
//!
//! Use next to `nat64_support/engine.rs` (its module must be named `nat64_engine_support`).

use ftpnat::{Engine, Instant, Side, Verdict};

use crate::nat64_engine_support::{seen, Seen};

/// Builds one data segment of an end from (seq, ack, payload).
pub type Build = Box<dyn Fn(u32, u32, &[u8]) -> Vec<u8>>;

/// One end of the connection.
pub struct End {
    /// Where it sits.
    pub side: Side,
    /// Builds one of its data segments from (seq, ack, payload).
    pub build: Build,
    /// Checks a packet that reached it (family, addresses, ports).
    pub check: Box<dyn Fn(&Seen)>,
}

pub struct Ctl {
    pub e: Engine,
    pub client: End,
    pub server: End,
    /// The client's next sequence number and what it has received of the server (its own space).
    pub cseq: u32,
    pub crcv: u32,
    /// The server's next sequence number and what it has received of the client (its space).
    pub sseq: u32,
    pub srcv: u32,
}

impl Ctl {
    pub fn drain(&mut self, side: Side, out: &mut Vec<Vec<u8>>) {
        while let Some(t) = self.e.poll_transmit() {
            assert_eq!(t.side, side, "everything goes one way");
            out.push(t.packet);
        }
    }

    /// The client sends `pieces`; returns the bytes the server received.
    pub fn c2s(&mut self, pieces: &[&[u8]]) -> Vec<u8> {
        self.send(true, pieces)
    }

    /// The server sends `pieces`; returns the bytes the client received.
    pub fn s2c(&mut self, pieces: &[&[u8]]) -> Vec<u8> {
        self.send(false, pieces)
    }

    /// One command and its reply: what the server got, what the client got.
    pub fn exchange(&mut self, cmd: &str, reply: &str) -> (String, String) {
        let s = self.c2s(&[cmd.as_bytes()]);
        let c = self.s2c(&[reply.as_bytes()]);
        (String::from_utf8(s).unwrap(), String::from_utf8(c).unwrap())
    }

    fn send(&mut self, from_client: bool, pieces: &[&[u8]]) -> Vec<u8> {
        let mut got = Vec::new();
        let (from, to) = if from_client {
            (self.client.side, self.server.side)
        } else {
            (self.server.side, self.client.side)
        };
        for piece in pieces {
            let mut p = if from_client {
                let p = (self.client.build)(self.cseq, self.crcv, piece);
                self.cseq = self.cseq.wrapping_add(piece.len() as u32);
                p
            } else {
                let p = (self.server.build)(self.sseq, self.srcv, piece);
                self.sseq = self.sseq.wrapping_add(piece.len() as u32);
                p
            };
            let mut pkts = Vec::new();
            match self.e.handle_packet(Instant::ZERO, from, &mut p) {
                Verdict::Forward(s) if s == to => pkts.push(p),
                Verdict::Held => {}
                v => panic!("{v:?}"),
            }
            self.drain(to, &mut pkts);
            for p in pkts {
                let s = seen(&p);
                let (check, rcv) = if from_client {
                    (&self.server.check, &mut self.srcv)
                } else {
                    (&self.client.check, &mut self.crcv)
                };
                check(&s);
                if !s.payload.is_empty() {
                    assert_eq!(s.seq, *rcv, "the receiver's stream is contiguous");
                    *rcv = rcv.wrapping_add(s.payload.len() as u32);
                }
                got.extend_from_slice(&s.payload);
            }
        }
        got
    }
}
