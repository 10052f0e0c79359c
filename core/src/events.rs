//! Notable things the engine did, as values, for `ftpnat events` (a live stream like `conntrack -E`).
//!
//! Owns: the [`Event`] vocabulary and [`Events`], the bounded queue the engine pushes to and the run loop
//! drains through [`crate::engine::Engine::poll_event`]. Must not: format output, do I/O or carry packet
//! payload (a refused line is stored redacted, as logged; `PASS`/`ACCT` arguments never get here).
//!
//! Off by default: a disabled queue ignores pushes before building the event, so replay and tests pay
//! one branch per site. When the reader falls behind, the oldest events go and are counted.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::conntrack::Origin;
use crate::flow::{ConnId, Endpoint, FlowKey};
use crate::metrics::RefusalReason;

/// Events kept for the reader before the oldest are dropped.
pub const CAPACITY: usize = 4096;

/// What the ALG rewrote: a data endpoint it announced (RFC 959 `PORT` and `227`, RFC 2428 `EPRT` and
/// `229`), or a whole line NAT64's ALG translated (RFC 6384: `EPSV`→`PASV`, `LPSV`, an answer the
/// gateway gave in place of the server's; `PASV`→`EPSV` for an IPv6 server behind a forward). Its name is what logs, events and `show pinholes` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RewriteKind {
    Port,
    Eprt,
    Pasv227,
    Epsv229,
    Epsv,
    Pasv,
    Lpsv,
    Answer,
}

impl RewriteKind {
    pub const fn name(self) -> &'static str {
        match self {
            RewriteKind::Port => "port",
            RewriteKind::Eprt => "eprt",
            RewriteKind::Pasv227 => "227",
            RewriteKind::Epsv229 => "229",
            RewriteKind::Epsv => "epsv",
            RewriteKind::Pasv => "pasv",
            RewriteKind::Lpsv => "lpsv",
            RewriteKind::Answer => "answer",
        }
    }
}

impl std::fmt::Display for RewriteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One notable thing, in the order the engine did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection entered the table. `orig`/`reply` are the keys as each direction's sender writes them.
    FlowNew { id: ConnId, orig: FlowKey, reply: FlowKey, origin: Origin },
    /// A connection left the table, and why, with its totals per direction.
    FlowDestroy {
        id: ConnId,
        orig: FlowKey,
        reply: FlowKey,
        why: DestroyReason,
        packets: [u64; 2],
        bytes: [u64; 2],
    },
    /// The FTP ALG rewrote an announcement or a line; `old`/`new` are the address/port text only (the
    /// whole line, redacted, for a line NAT64 translated).
    Rewrite {
        control: ConnId,
        kind: RewriteKind,
        old: String,
        new: String,
        delta: i64,
        inside: Endpoint,
        public_port: u16,
    },
    /// A data-connection pinhole opened: a SYN from `peer` to `public_port` will reach `inside`.
    PinholeCreate { control: ConnId, public_port: u16, peer: Ipv4Addr, inside: Endpoint, kind: RewriteKind },
    /// A pinhole was used by a SYN from `from`.
    PinholeUse { control: ConnId, public_port: u16, from: Endpoint, inside: Endpoint },
    /// A pinhole expired unused.
    PinholeExpire { control: ConnId, public_port: u16, inside: Endpoint },
    /// The ALG left a line as sent and opened nothing; `line` is redacted like the log line.
    Refusal { control: ConnId, reason: RefusalReason, line: String },
    /// The connection `id` just created (its `flow_new` came before) is a NAT64 flow: its IPv6 host's
    /// endpoint and the remote's synthesised one (`orig` is its key with the host's stand-in).
    Nat64Flow { id: ConnId, orig: FlowKey, inside6: std::net::SocketAddrV6, remote6: std::net::SocketAddrV6 },
    /// The address pool or port blocks (issue 16): a block allocated or released, addresses or ports
    /// exhausted, a host quota reached; the same record the NAT log exports.
    Nat(crate::nat::Record),
}

/// Why a connection left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyReason {
    /// Its idle timeout passed.
    Expired,
    /// A new connection reused its keys (a SYN on a closed TCP connection's tuple).
    Reopened,
    /// Closed, and given up early for a new connection of its host, which held its share of public
    /// ports (`conntrack::closing`).
    Reclaimed,
}

impl DestroyReason {
    /// Stable lowercase name, as logs and `ftpnat events` print it.
    pub const fn name(self) -> &'static str {
        match self {
            DestroyReason::Expired => "expired",
            DestroyReason::Reopened => "reopened",
            DestroyReason::Reclaimed => "reclaimed",
        }
    }
}

impl Event {
    /// Stable snake_case kind, as `ftpnat events --json` prints it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::FlowNew { .. } => "flow_new",
            Event::FlowDestroy { .. } => "flow_destroy",
            Event::Rewrite { .. } => "rewrite",
            Event::PinholeCreate { .. } => "pinhole_create",
            Event::PinholeUse { .. } => "pinhole_use",
            Event::PinholeExpire { .. } => "pinhole_expire",
            Event::Refusal { .. } => "refusal",
            Event::Nat64Flow { .. } => "nat64_flow",
            Event::Nat(_) => "nat",
        }
    }
}

/// The bounded, switchable event queue.
#[derive(Debug, Default)]
pub struct Events {
    on: bool,
    queue: VecDeque<Event>,
    dropped: u64,
}

impl Events {
    /// Turns recording on or off; turning it off forgets what was queued.
    pub fn set_enabled(&mut self, on: bool) {
        self.on = on;
        if !on {
            self.queue.clear();
        }
    }

    pub fn enabled(&self) -> bool {
        self.on
    }

    /// Records the event `make` builds, only when recording is on (so a disabled queue allocates nothing).
    #[inline]
    pub fn push(&mut self, make: impl FnOnce() -> Event) {
        if !self.on {
            return;
        }
        if self.queue.len() >= CAPACITY {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(make());
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// Events lost because the reader fell more than [`CAPACITY`] behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expire(port: u16) -> Event {
        Event::PinholeExpire {
            control: ConnId::new(1, 0),
            public_port: port,
            inside: Endpoint::new(Ipv4Addr::LOCALHOST, 1),
        }
    }

    #[test]
    fn off_by_default_and_bounded_when_on() {
        let mut e = Events::default();
        let mut built = false;
        e.push(|| {
            built = true;
            expire(1)
        });
        assert!(!built, "a disabled queue must not build the event");
        assert_eq!(e.pop(), None);
        e.set_enabled(true);
        for p in 0..(CAPACITY as u16 + 3) {
            e.push(|| expire(p));
        }
        assert_eq!(e.dropped(), 3);
        assert_eq!(e.pop(), Some(expire(3)), "the oldest went first");
        e.set_enabled(false);
        assert_eq!(e.pop(), None);
        assert_eq!(expire(1).kind(), "pinhole_expire");
    }
}
