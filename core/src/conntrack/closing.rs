//! Closed TCP connections per inside host, oldest first: what a host that holds its share of public
//! ports gives up first when it opens another connection (issue 18's connection rate).
//!
//! A TCP connection whose FINs or RST were seen keeps its mapping for `tcp_closed` (10 s by default)
//! to absorb a retransmitted last FIN or ACK. A host opening short connections one after the other
//! (a crawler, a test client) thereby holds its share of ports (RFC 6888 REQ-4) with connections that
//! are over, and its new ones were refused; the kernel's NAT has no share and never refuses. Giving up
//! the host's own oldest closed connection instead costs at most that connection's straggling last ACK,
//! and only ever the host's own: no host's connections make room for another's (issue 17's
//! "nobody starves anybody" stands).
//!
//! Owns: the per-host queues of closed connections. Must not: remove connections (the engine does,
//! through `Engine::destroy`) or decide when.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use super::{Table, TcpState};
use crate::flow::ConnId;

/// See the module header. Entries of connections gone since are dropped as they come to the front:
/// every removal of one of the host's connections looks ([`Closing::forget`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Closing {
    by_host: HashMap<Ipv4Addr, VecDeque<ConnId>, foldhash::fast::RandomState>,
}

fn closed(table: &Table, id: ConnId) -> bool {
    table.get(id).is_some_and(|c| matches!(c.tcp(), TcpState::Closed | TcpState::Reset))
}

impl Closing {
    /// `id`, a connection of `host` holding its own mapping, has just closed.
    pub fn push(&mut self, host: Ipv4Addr, id: ConnId) {
        self.by_host.entry(host).or_default().push_back(id);
    }

    /// The oldest of `host`'s connections that is still closed in `table`.
    pub fn oldest(&mut self, host: Ipv4Addr, table: &Table) -> Option<ConnId> {
        self.forget(host, table);
        self.by_host.get(&host).and_then(|q| q.front().copied())
    }

    /// Drops the entries at the front of `host`'s queue whose connection is gone (or was reopened),
    /// and the queue once empty.
    pub fn forget(&mut self, host: Ipv4Addr, table: &Table) {
        let Some(q) = self.by_host.get_mut(&host) else { return };
        while q.front().is_some_and(|&id| !closed(table, id)) {
            q.pop_front();
        }
        if q.is_empty() {
            self.by_host.remove(&host);
        }
    }

    /// Entries held, live or not yet dropped (bounded by the connections that closed and are not yet
    /// at the front of their host's queue).
    pub fn len(&self) -> usize {
        self.by_host.values().map(VecDeque::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}
