//! The sans-IO core. (Being written: API is stable, body is a pass-through for now.)
//!
//! Call order, per packet: [`Engine::handle_packet`]; on [`Verdict::Forward`] write the (possibly
//! modified) buffer to the named side; then drain [`Engine::poll_transmit`] and write each packet to its
//! side. Between packets, sleep until [`Engine::poll_timeout`] and call [`Engine::handle_timeout`] when
//! it passes (then drain `poll_transmit` again).

use std::collections::VecDeque;

use crate::config::Config;
use crate::flow::Side;
use crate::metrics::{DropReason, Metrics};
use crate::time::Instant;

/// What to do with the packet handed to [`Engine::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the (modified) buffer to this side.
    Forward(Side),
    /// Nothing leaves for this packet; the reason is already counted.
    Drop(DropReason),
    /// The ALG kept the packet's bytes (a candidate line split across segments); they leave later through
    /// [`Engine::poll_transmit`].
    Held,
}

/// A packet the engine originates or releases on its own: ICMP errors, split segments, released bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub side: Side,
    pub packet: Vec<u8>,
}

pub struct Engine {
    config: Config,
    metrics: Metrics,
    out: VecDeque<Transmit>,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine { config, metrics: Metrics::default(), out: VecDeque::new() }
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn flow_count(&self) -> usize {
        0
    }
    /// `packet` is one IPv4 datagram as it arrived on `from`. It may be modified, grown or shrunk.
    pub fn handle_packet(&mut self, _now: Instant, from: Side, packet: &mut Vec<u8>) -> Verdict {
        self.metrics.packets_in[from.index()] += 1;
        self.metrics.bytes_in[from.index()] += packet.len() as u64;
        Verdict::Forward(from.other())
    }
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    pub fn handle_timeout(&mut self, _now: Instant) {}
}
