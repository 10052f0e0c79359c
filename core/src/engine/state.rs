//! The engine's state as bytes: what a restart (`ftpnat run --state-file`) carries over (issue 15).
//!
//! Owns: which parts of [`Engine`] are state (they outlive a packet and a restart must keep them) and
//! which are derived or transient; the configuration key a state must match ([`StateKey`]); encoding
//! and decoding (postcard, field order = the order below); rebuilding an engine from a state under a
//! new configuration ([`Engine::restore`]). Must not: read or write files, know the file's header,
//! checksum or version (the shell's `io::state_file` does), or read a clock: time is the engine's own
//! (`Engine::now`), which the shell's clock continues from, so every deadline keeps the time it had
//! left when the state was saved.
//!
//! In the state: the connection table (each connection in its slot: TCP tracking, the ALG's stream
//! editing with sequence deltas and held bytes, the FTP control state), the NAT allocator (mappings,
//! port sets, blocks, per-host counts, timers), pinholes, fragment state and fragments waiting,
//! recently refused openings, each host's closed connections in order, NAT64's host table, the ICMP error budget, the counters, the forwards
//! as running (a reload may have changed them since the start). Not in it: packets queued for
//! transmission (the shell drains them first), events, the NAT log's queue (drained to its exporters
//! first) and the log policy, derived indexes (rebuilt).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::alg::Pinholes;
use crate::config::{Config, Forward};
use crate::conntrack::closing::Closing;
use crate::conntrack::refused::Refused;
use crate::conntrack::{Table, TableState, TableStateRef};
use crate::flow::{ConnId, Dir};
use crate::frag::Fragments;
use crate::metrics::Metrics;
use crate::nat::{Allocation, Nat};
use crate::nat64::Hosts;
use crate::time::Instant;

/// The configuration a state is only valid under: what decides which addresses and ports the state's
/// mappings, pinholes and flows may hold. Everything else (timeouts, ALG policy, limits, forwards,
/// MTUs) may differ: the restored engine takes the new values as a reload would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateKey {
    pub inside: Vec<Ipv4Net>,
    pub pool: Vec<Ipv4Addr>,
    pub port_range: (u16, u16),
    pub allocation: Allocation,
    /// `--workers`: the engine's index and the count (each holds a slice of the ports).
    pub shard: (u16, u16),
    /// NAT64's prefix and `--inside6`, as text.
    pub nat64: Option<(String, Vec<String>)>,
}

impl StateKey {
    pub fn of(c: &Config) -> StateKey {
        StateKey {
            inside: c.inside.clone(),
            pool: c.pool.addresses.clone(),
            port_range: (*c.port_range.start(), *c.port_range.end()),
            allocation: c.pool.allocation,
            shard: (c.shard.index, c.shard.count),
            nat64: c
                .nat64
                .as_ref()
                .map(|n| (n.prefix.to_string(), n.inside6.iter().map(|p| p.to_string()).collect())),
        }
    }

    /// The first difference from `other`, for the operator: which setting, the file's value, ours.
    pub fn difference(&self, other: &StateKey) -> Option<String> {
        let d = |what: &str, a: String, b: String| Some(format!("{what}: {a} in the state, {b} configured"));
        if self.pool != other.pool {
            return d("public addresses", fmt_list(&self.pool), fmt_list(&other.pool));
        }
        if self.inside != other.inside {
            return d("--inside", fmt_list(&self.inside), fmt_list(&other.inside));
        }
        if self.port_range != other.port_range {
            let r = |p: (u16, u16)| format!("{}-{}", p.0, p.1);
            return d("--port-range", r(self.port_range), r(other.port_range));
        }
        if self.allocation != other.allocation {
            return d("port allocation", format!("{:?}", self.allocation), format!("{:?}", other.allocation));
        }
        if self.shard != other.shard {
            return d("--workers", self.shard.1.to_string(), other.shard.1.to_string());
        }
        if self.nat64 != other.nat64 {
            let n = |v: &Option<(String, Vec<String>)>| {
                v.as_ref().map_or("none".to_string(), |(p, i)| format!("{p} for {}", i.join(",")))
            };
            return d("NAT64", n(&self.nat64), n(&other.nat64));
        }
        None
    }
}

fn fmt_list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// Why a state was not restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// The bytes do not decode, or decode to a state no engine could have had.
    Corrupt(String),
    /// Saved under another configuration ([`StateKey::difference`]).
    Mismatch(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Corrupt(why) => write!(f, "corrupt state: {why}"),
            RestoreError::Mismatch(why) => write!(f, "saved under another configuration: {why}"),
        }
    }
}

/// The state, borrowed from a running engine (what [`Engine::save_state`] encodes).
#[derive(Serialize)]
struct StateRef<'a> {
    key: StateKey,
    now: Instant,
    forwards: &'a [Forward],
    table: TableStateRef<'a>,
    nat: &'a Nat,
    pinholes: &'a Pinholes,
    frags: &'a Fragments,
    held: &'a BTreeSet<(ConnId, Dir)>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    refused: &'a Refused,
    closing: &'a Closing,
    metrics: &'a Metrics,
    nat64: Option<(&'a Hosts, u16)>,
}

/// The same fields, owned, as decoded.
#[derive(Deserialize)]
struct State {
    key: StateKey,
    now: Instant,
    forwards: Vec<Forward>,
    table: TableState,
    nat: Nat,
    pinholes: Pinholes,
    frags: Fragments,
    held: BTreeSet<(ConnId, Dir)>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    refused: Refused,
    closing: Closing,
    metrics: Metrics,
    nat64: Option<(Hosts, u16)>,
}

impl Engine {
    /// The engine's time: the last `now` it was given.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The engine's whole state, encoded (see the module header for what is in it). Call it once the
    /// shell has drained [`Engine::poll_transmit`] and the NAT log.
    pub fn save_state(&self) -> Vec<u8> {
        let s = StateRef {
            key: StateKey::of(&self.config),
            now: self.now,
            forwards: &self.config.forwards,
            table: self.table.state(),
            nat: &self.nat,
            pinholes: &self.pinholes,
            frags: &self.frags,
            held: &self.held,
            icmp_tokens: self.icmp_tokens,
            icmp_refill: self.icmp_refill,
            refused: &self.refused,
            closing: &self.closing,
            metrics: &self.metrics,
            nat64: self.nat64.as_ref().map(|n| (&n.hosts, n.ident())),
        };
        // Encoding plain data into a Vec cannot fail: postcard fails only on a full buffer or a
        // sequence of unknown length, and every sequence here knows its length.
        postcard::to_stdvec(&s).unwrap_or_default()
    }

    /// The engine `config` describes, holding `state` (from [`Engine::save_state`], of an engine of
    /// this shard): its connections, mappings and pinholes as they were, its clock at the saved
    /// `now` (the caller's clock must continue from [`Engine::now`]). What a reload may change
    /// (timeouts, ALG policy, limits, forwards) is taken from `config` as [`Engine::reconfigure`]
    /// takes it; what it may not (addresses, inside prefixes, port range, allocation, workers, NAT64)
    /// must be the state's, else [`RestoreError::Mismatch`]. Returns the engine and the reconfigure's
    /// refusals (forwards it could not add).
    pub fn restore(config: Config, state: &[u8]) -> Result<(Engine, Vec<String>), RestoreError> {
        let s: State = postcard::from_bytes(state).map_err(|e| RestoreError::Corrupt(e.to_string()))?;
        if let Some(diff) = s.key.difference(&StateKey::of(&config)) {
            return Err(RestoreError::Mismatch(diff));
        }
        let mut running = config.clone();
        running.forwards = s.forwards;
        let mut e = Engine::new(running.clone());
        // `Engine::new` may have dropped a forward it could not resolve: the state's list stands.
        e.config.forwards = running.forwards;
        e.table = Table::restore(config.max_flows, config.max_flows_per_host, s.table)
            .map_err(RestoreError::Corrupt)?;
        // The log policy is the shell's to set again; the allocator is the state's.
        let policy = e.nat.log().policy();
        e.nat = s.nat;
        e.nat.log_mut().set_policy(policy);
        e.pinholes = s.pinholes;
        e.frags = s.frags;
        e.held = s.held;
        e.icmp_tokens = s.icmp_tokens;
        e.icmp_refill = s.icmp_refill;
        e.refused = s.refused;
        e.closing = s.closing;
        e.metrics = s.metrics;
        e.now = s.now;
        match (&mut e.nat64, s.nat64) {
            (Some(n), Some((hosts, ident))) => n.restore(hosts, ident),
            (None, None) => {}
            _ => return Err(RestoreError::Mismatch("NAT64 on one side only".into())),
        }
        if let Some(bad) = e.dangling() {
            return Err(RestoreError::Corrupt(bad));
        }
        let refused = e.reconfigure(&config);
        Ok((e, refused))
    }

    /// A reference in the restored state to a connection it does not hold: a state no engine had.
    fn dangling(&self) -> Option<String> {
        if let Some((id, _)) = self.held.iter().find(|(id, _)| self.table.get(*id).is_none()) {
            return Some(format!("held bytes of {id:?}, which is not in the table"));
        }
        None
    }
}
