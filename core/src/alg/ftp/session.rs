//! One FTP control connection: its two line framers and the FTP ALG reading their lines.
//!
//! Owns: the two [`LineFramer`]s (where lines start and end, TLS opacity, per direction) and the seam
//! between them and the ALG: each complete line goes to [`Control`] (what it means: pure findings),
//! the findings to [`apply`] (policy, pinholes, counters, logs, events; the line's action), and the
//! state changes found in a segment's lines (opaque after `AUTH TLS`, clear after `CCC`, not FTP) to
//! both framers once the segment is done. The bytes, holds and sequence numbers are the generic stream
//! layer's ([`crate::stream`]): it feeds the framers through [`FtpSession::framer`]. After a gap in
//! either direction (the stream layer jumped one, [`FtpSession::forget_pending`]) the ALG forgets the
//! commands awaiting replies ([`Control::gap`]).
//! Must not: touch packets or bytes held, parse FTP (`control`, `parse`, `rfc6384` do) or decide policy
//! (`apply` does); it answers the framers with [`crate::alg::finding::LineAction`]s.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::control::Control;
use super::framer::{Line, LineFramer, Speaker};
use crate::alg::apply::{self, Changes};
use crate::alg::finding::{Alg, StateChange};
use crate::alg::AlgCtx;
use crate::flow::{Dir, Side};
use crate::stream::{Edit, Emit, Framer, Start, StreamEdit, Tally};
use crate::wire::SeqNum;

/// ALG state of one control connection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FtpSession {
    /// Indexed by [`Dir::index`]: `Original` carries commands (the client always opens the control
    /// connection), `Reply` carries replies.
    framers: [LineFramer; 2],
    st: Control,
}

impl FtpSession {
    /// `client_side`: where the client is. On the LAN its PORT/EPRT are rewritten; otherwise the server
    /// is inside and its 227/229 are. Only lines travelling LAN→WAN are ever changed.
    pub fn new(client_side: Side, client: Ipv4Addr, server: Ipv4Addr, max_line: usize) -> FtpSession {
        let client_inside = client_side == Side::Inside;
        FtpSession {
            framers: [LineFramer::new(Speaker::Client, max_line), LineFramer::new(Speaker::Server, max_line)],
            st: Control::new(client_inside, client, server),
        }
    }

    /// A NAT64 control connection (RFC 6384): the client is the IPv6 host `client6` (the session's
    /// client address is its IPv4 stand-in), and reaches the server at `server6`. Both directions may
    /// be rewritten: EPSV/EPRT/ALGS/LPRT/LPSV towards the server, 227 and the replies to substituted
    /// NOOPs towards the client.
    pub fn nat64(mut self, client6: Ipv6Addr, server6: Ipv6Addr) -> FtpSession {
        self.st.nat64_client(client6, server6);
        for f in &mut self.framers {
            f.enable_nat64();
        }
        self
    }

    /// A control connection from an IPv4 client (`Control`'s client, seen by the server as `client6`)
    /// to the IPv6 server `server6` behind its stand-in (`Control`'s server), through a forward: PASV and
    /// PORT/EPRT towards the server, 229 towards the client are rewritten (`rfc6384`'s header).
    pub fn nat64_server(mut self, client6: Ipv6Addr, server6: Ipv6Addr) -> FtpSession {
        self.st.nat64_server(client6, server6);
        for f in &mut self.framers {
            f.enable_nat64();
        }
        self
    }

    /// Whether this is a NAT64 control connection.
    pub fn is_nat64(&self) -> bool {
        self.st.is_nat64()
    }

    /// A connection picked up mid-stream: its greeting is long past.
    pub fn picked_up(mut self) -> FtpSession {
        self.st.greeted();
        self
    }

    /// Whether the stream layer may edit each direction (by [`Dir::index`]): only lines travelling
    /// LAN→WAN are rewritten — the client's commands when it is inside, else the server's replies — and
    /// on a NAT64 control connection both directions (RFC 6384: EPSV→PASV one way, 227→229 the other).
    pub fn edits(&self) -> [Edit; 2] {
        if self.st.is_nat64() {
            [Edit::Rewrite, Edit::Rewrite]
        } else if self.st.client_inside() {
            [Edit::Rewrite, Edit::Observe]
        } else {
            [Edit::Observe, Edit::Rewrite]
        }
    }

    /// The stream layer jumped a gap: replies may have been lost with it, and pairing a later 227 with
    /// the wrong command would honour an unsolicited announcement (module header).
    pub fn forget_pending(&mut self) {
        self.st.gap();
    }

    /// This session as the stream layer's [`Framer`] while one segment (or acknowledgement, or release)
    /// is handled: its lines are judged with `ctx`.
    pub fn framer<'s, 'c>(&'s mut self, ctx: &'s mut AlgCtx<'c>) -> Live<'s, 'c> {
        Live { framers: &mut self.framers, st: &mut self.st, ctx }
    }

    pub fn client_inside(&self) -> bool {
        self.st.client_inside()
    }

    /// Pinholes this connection opened that may still be outstanding.
    pub fn pinholes(&self) -> impl Iterator<Item = u16> + '_ {
        self.st.pinholes().iter().copied()
    }

    pub fn is_opaque(&self) -> bool {
        self.framers[0].is_opaque() || self.framers[1].is_opaque()
    }

    /// Not FTP: passed through untouched for good.
    pub fn is_dead(&self) -> bool {
        self.framers[0].is_dead() && self.framers[1].is_dead()
    }

    /// `clear`, `tls` (walking TLS records after AUTH TLS) or `not-ftp` (opaque for good).
    pub fn state_name(&self) -> &'static str {
        if self.is_dead() {
            "not-ftp"
        } else if self.is_opaque() {
            "tls"
        } else {
            "clear"
        }
    }

    /// A human summary of the ALG state, for `show flows`; `stream` is the connection's stream layer.
    pub fn describe(&self, stream: &StreamEdit) -> String {
        let state = self.state_name();
        format!(
            "{state} pending={} delta_c2s={} delta_s2c={} pinholes={}",
            self.st.pending_len(),
            stream.seq_map(Dir::Original).current_delta(),
            stream.seq_map(Dir::Reply).current_delta(),
            self.st.pinholes().len()
        )
    }

    /// The control connection is gone: so are the pinholes it opened (that no data connection used).
    pub fn close(&mut self, ctx: &mut AlgCtx<'_>) {
        apply::close(ctx, self.st.pinhole_ports().drain(..));
    }
}

/// A session fed by the stream layer (see [`FtpSession::framer`]).
pub struct Live<'s, 'c> {
    framers: &'s mut [LineFramer; 2],
    st: &'s mut Control,
    ctx: &'s mut AlgCtx<'c>,
}

impl Framer for Live<'_, '_> {
    fn begin(&mut self, dir: Dir, start: Start) {
        self.framers[dir.index()].begin(start);
    }

    fn feed(&mut self, dir: Dir, at: SeqNum, data: &[u8], emit: &mut Emit<'_>) {
        let Live { framers, st, ctx } = self;
        let mut changes = Changes::default();
        framers[dir.index()].feed(at, data, emit, &mut |line: &Line<'_>| {
            let found = st.on_line(dir, line);
            apply::line(&mut **st, dir, line.bytes, found, ctx, &mut changes)
        });
        // A line of this segment switched the connection's mode: both directions follow from their
        // next byte on.
        if changes.opaque {
            apply::changed(&**st, ctx, StateChange::Opaque);
            framers.iter_mut().for_each(LineFramer::go_opaque);
        }
        if changes.clear {
            apply::changed(&**st, ctx, StateChange::Clear);
            framers.iter_mut().for_each(LineFramer::go_clear);
        }
        if changes.dead {
            apply::changed(&**st, ctx, StateChange::NotProtocol);
            framers.iter_mut().for_each(LineFramer::go_dead);
        }
    }

    fn gap(&mut self, dir: Dir, cut: bool, tally: &mut Tally) {
        self.framers[dir.index()].gap(cut, tally);
    }

    fn released(&mut self, dir: Dir) {
        self.framers[dir.index()].released();
    }
}
