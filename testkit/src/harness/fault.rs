//! Seeded, deterministic fault injection on the virtual wire: loss, duplication, reordering, and a tap
//! that lets a test drop or replace chosen packets.
//!
//! Owns: the decision what happens to one packet at one stage (before or after the middlebox). Must not:
//! route packets, call the middlebox, or read the clock; [`super::net::Net`] does those.

use ftpnat::Side;

use super::pkt;
use super::SplitMix64;

/// Where on the path a packet is seen: on its way into the middlebox, or as it leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Sent by a host, not yet seen by the middlebox.
    Pre,
    /// Emitted by the middlebox, not yet delivered.
    Post,
}

impl Stage {
    pub const fn index(self) -> usize {
        match self {
            Stage::Pre => 0,
            Stage::Post => 1,
        }
    }
}

/// Which packets a rule applies to.
#[derive(Debug, Clone, Copy)]
pub enum Filter {
    Any,
    /// TCP with this source or destination port (e.g. 21: only the control connection).
    TcpPort(u16),
    /// Anything a plain function accepts.
    Fn(fn(&[u8]) -> bool),
}

impl Filter {
    pub fn matches(&self, pkt: &[u8]) -> bool {
        match self {
            Filter::Any => true,
            Filter::TcpPort(p) => pkt::has_tcp_port(pkt, *p),
            Filter::Fn(f) => f(pkt),
        }
    }
}

/// One fault rule. Probabilities are per packet, in `0.0..=1.0`.
#[derive(Debug, Clone, Copy)]
pub struct FaultRule {
    pub stage: Stage,
    /// The side the packet travels toward (`Some(Side::Outside)`: inside → outside only); `None`: both.
    pub toward: Option<Side>,
    pub filter: Filter,
    pub loss: f64,
    pub dup: f64,
    /// Hold the packet back and send it right after the next packet of the same stage and direction (or
    /// when the network falls idle).
    pub reorder: f64,
}

impl FaultRule {
    /// A rule before the middlebox, both directions, for packets matching `filter`.
    pub fn pre(filter: Filter, loss: f64, dup: f64, reorder: f64) -> FaultRule {
        FaultRule { stage: Stage::Pre, toward: None, filter, loss, dup, reorder }
    }
    /// The same after the middlebox.
    pub fn post(filter: Filter, loss: f64, dup: f64, reorder: f64) -> FaultRule {
        FaultRule { stage: Stage::Post, toward: None, filter, loss, dup, reorder }
    }
    pub fn toward(mut self, side: Side) -> FaultRule {
        self.toward = Some(side);
        self
    }
}

/// What a tap does with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapAction {
    Pass,
    Drop,
    /// Send these packets instead (none, one modified, several split...). Taps run before the fault rules.
    Replace(Vec<Vec<u8>>),
    /// (Before the middlebox only.) The packet takes another path: it reaches its receiver translated as
    /// the middlebox would have translated it ([`super::Middlebox::bypass`]), but the middlebox never
    /// sees it (an asymmetric route; a capture that lost it).
    Bypass,
    /// The packet continues as usual, and this one is sent to the middlebox right after it, from the
    /// same side, past the fault rules (a forged packet that must reach the middlebox to be judged).
    PassAndInject(Vec<u8>),
}

/// What a tap is told about the packet in front of it.
#[derive(Debug, Clone, Copy)]
pub struct TapInfo {
    pub stage: Stage,
    /// The side the packet travels toward.
    pub toward: Side,
    pub now_us: u64,
}

pub type Tap = Box<dyn FnMut(&TapInfo, &[u8]) -> TapAction>;

/// Counters of what the injector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub tap_dropped: u64,
    pub tap_replaced: u64,
    pub tap_bypassed: u64,
}

/// The injector: rules (first match wins), an optional tap, the RNG, and the held-back packets.
pub struct Faults {
    pub rules: Vec<FaultRule>,
    pub tap: Option<Tap>,
    pub stats: FaultStats,
    /// Packets the tap sent around the middlebox, for the network to deliver.
    pub bypassed: Vec<Vec<u8>>,
    /// Packets the tap injected, for the network to hand to the middlebox (no fault rule applies).
    pub injected: Vec<Vec<u8>>,
    rng: SplitMix64,
    /// `[stage][toward]`: a packet waiting for the next one to overtake it.
    held: [[Option<Vec<u8>>; 2]; 2],
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults {
            rules: Vec::new(),
            tap: None,
            stats: FaultStats::default(),
            bypassed: Vec::new(),
            injected: Vec::new(),
            rng: SplitMix64::new(seed),
            held: Default::default(),
        }
    }

    pub fn reseed(&mut self, seed: u64) {
        self.rng = SplitMix64::new(seed);
    }

    /// Passes one packet through the tap and the first matching rule; returns what continues, in order.
    pub fn apply(&mut self, info: TapInfo, pkt: Vec<u8>) -> Vec<Vec<u8>> {
        let pkts = match self.tap.as_mut().map(|t| t(&info, &pkt)) {
            None | Some(TapAction::Pass) => vec![pkt],
            Some(TapAction::Drop) => {
                self.stats.tap_dropped += 1;
                return Vec::new();
            }
            Some(TapAction::Replace(v)) => {
                self.stats.tap_replaced += 1;
                v
            }
            Some(TapAction::Bypass) => {
                self.stats.tap_bypassed += 1;
                self.bypassed.push(pkt);
                return Vec::new();
            }
            Some(TapAction::PassAndInject(forged)) => {
                self.injected.push(forged);
                vec![pkt]
            }
        };
        let mut out = Vec::new();
        for p in pkts {
            self.apply_rules(info, p, &mut out);
        }
        out
    }

    fn apply_rules(&mut self, info: TapInfo, pkt: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        let rule = self.rules.iter().find(|r| {
            r.stage == info.stage && r.toward.is_none_or(|s| s == info.toward) && r.filter.matches(&pkt)
        });
        let Some(rule) = rule.copied() else {
            out.push(pkt);
            self.release_held(info, out);
            return;
        };
        // Always three draws, so one packet's fate never shifts the random stream of the next.
        let (l, d, r) = (self.rng.next_f64(), self.rng.next_f64(), self.rng.next_f64());
        if l < rule.loss {
            self.stats.lost += 1;
            return;
        }
        let slot = &mut self.held[info.stage.index()][info.toward.index()];
        if r < rule.reorder && slot.is_none() {
            self.stats.reordered += 1;
            if d < rule.dup {
                // The copy goes now, the original later: a duplicate that is also reordered.
                self.stats.duplicated += 1;
                out.push(pkt.clone());
            }
            *slot = Some(pkt);
            return;
        }
        if d < rule.dup {
            self.stats.duplicated += 1;
            out.push(pkt.clone());
        }
        out.push(pkt);
        self.release_held(info, out);
    }

    fn release_held(&mut self, info: TapInfo, out: &mut Vec<Vec<u8>>) {
        if let Some(h) = self.held[info.stage.index()][info.toward.index()].take() {
            out.push(h);
        }
    }

    /// Takes every held packet of `stage` (for when the network falls idle), with the side it travels toward.
    pub fn take_held(&mut self, stage: Stage) -> Vec<(Side, Vec<u8>)> {
        let mut v = Vec::new();
        for side in [Side::Inside, Side::Outside] {
            if let Some(p) = self.held[stage.index()][side.index()].take() {
                v.push((side, p));
            }
        }
        v
    }

    pub fn has_held(&self) -> bool {
        self.held.iter().flatten().any(Option::is_some)
    }
}
