//! TCP stream reassembly (first copy of each byte wins) (part of the replay checker, see `mod.rs`).

use std::ops::Range;

use super::*;

#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub data: Vec<u8>,
    pub have: Vec<bool>,
}

impl Stream {
    pub fn add(&mut self, off: usize, bytes: &[u8]) {
        let end = off + bytes.len();
        if end > self.data.len() {
            self.data.resize(end, 0);
            self.have.resize(end, false);
        }
        for (i, &b) in bytes.iter().enumerate() {
            if !self.have[off + i] {
                self.have[off + i] = true;
                self.data[off + i] = b;
            }
        }
    }
    /// Contiguous runs of received bytes: (start, end).
    pub fn runs(&self) -> Vec<Range<usize>> {
        let mut v = Vec::new();
        let mut i = 0;
        while i < self.have.len() {
            if self.have[i] {
                let s = i;
                while i < self.have.len() && self.have[i] {
                    i += 1;
                }
                v.push(s..i);
            } else {
                i += 1;
            }
        }
        v
    }
    /// Bytes from offset 0 up to the first hole.
    pub fn prefix(&self) -> &[u8] {
        let n = self.have.iter().position(|h| !h).unwrap_or(self.have.len());
        &self.data[..n]
    }
}

/// Offset of `seq` in a stream whose first byte is `isn` (None when before it or absurdly far).
pub(super) fn offset(isn: u32, seq: u32) -> Option<usize> {
    let d = seq.wrapping_sub(isn);
    (d < 0x8000_0000).then_some(d as usize)
}

/// The first payload sequence number of the direction `flow` in `pkts`: after its SYN, or the first
/// segment seen.
pub fn isn_of(pkts: &[&Pkt]) -> Option<u32> {
    for p in pkts {
        if let Some(t) = &p.tcp {
            if t.syn {
                return Some(t.seq.wrapping_add(1));
            }
        }
    }
    pkts.iter().find_map(|p| p.tcp.as_ref().map(|t| t.seq))
}

pub fn reassemble(pkts: &[&Pkt], isn: u32) -> Stream {
    let mut s = Stream::default();
    for p in pkts {
        let Some(t) = &p.tcp else { continue };
        if t.payload.is_empty() {
            continue;
        }
        let seq = if t.syn { t.seq.wrapping_add(1) } else { t.seq };
        if let Some(off) = offset(isn, seq) {
            if off < 1 << 28 {
                s.add(off, &t.payload);
            }
        }
    }
    s
}
