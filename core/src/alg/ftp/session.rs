//! One FTP control connection: its two byte streams and the FTP ALG reading their lines.
//!
//! Owns: the two [`Stream`]s (framing, holding, splicing, TLS opacity per direction) and the seam
//! between them and the ALG: each complete line goes to [`Control`] (what it means: pure findings),
//! the findings to [`apply`] (policy, pinholes, counters, logs, events; the line's action), and the
//! state changes found in a segment's lines (opaque after `AUTH TLS`, clear after `CCC`, not FTP) to
//! both streams once the segment is done. After a gap in either direction ([`FtpSession::on_ack`]
//! finding one) the ALG forgets the commands awaiting replies ([`Control::gap`]).
//! Must not: touch packets, parse FTP (`control`, `parse`, `rfc6384` do) or decide policy (`apply`
//! does); it sees lines through [`Stream`] and answers with [`Action`]s.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::control::Control;
use super::stream::{Action, Edit, Line, SegmentOut, Speaker, Stream};
use crate::alg::apply::{self, Changes};
use crate::alg::finding::{Alg, LineAction, StateChange};
use crate::alg::AlgCtx;
use crate::flow::{Dir, Side};
use crate::metrics::{DropReason, Metrics};
use crate::seqadj::SeqMap;
use crate::time::Instant;
use crate::wire::SeqNum;

/// ALG state of one control connection.
#[derive(Debug, Clone)]
pub struct FtpSession {
    /// Indexed by [`Dir::index`]: `Original` carries commands (the client always opens the control
    /// connection), `Reply` carries replies. Private: the engine, the replay's peer emulation and the
    /// operations views read the sequence edits and held bytes through the methods below, never the
    /// framer itself.
    streams: [Stream; 2],
    /// MSS each direction's sender announced in its SYN (RFC 9293 §3.7.1), indexed by [`Dir::index`].
    pub mss: [Option<u16>; 2],
    st: Control,
}

impl FtpSession {
    /// The sequence edits of direction `dir` (seq numbers of its sender → its receiver's, and acks back).
    pub fn seq_map(&self, dir: Dir) -> &SeqMap {
        &self.streams[dir.index()].map
    }

    /// Bytes of direction `dir` held back (the start of a line the ALG may still rewrite).
    pub fn held_len(&self, dir: Dir) -> usize {
        self.streams[dir.index()].held_len()
    }

    /// When the bytes held in direction `dir` must leave as they are, if any are held.
    pub fn hold_deadline(&self, dir: Dir, timeout: core::time::Duration) -> Option<Instant> {
        self.streams[dir.index()].hold_deadline(timeout)
    }

    /// Releases the bytes held in direction `dir` as they were (their hold limit passed): the
    /// receiver-space sequence number of the first and the bytes.
    pub fn release_held(&mut self, dir: Dir, metrics: &mut Metrics) -> Option<(SeqNum, Vec<u8>)> {
        self.streams[dir.index()].release_held(metrics)
    }

    /// `client_side`: where the client is. On the LAN its PORT/EPRT are rewritten; otherwise the server
    /// is inside and its 227/229 are. Only lines travelling LAN→WAN are ever changed.
    pub fn new(client_side: Side, client: Ipv4Addr, server: Ipv4Addr, max_line: usize) -> FtpSession {
        let client_inside = client_side == Side::Inside;
        let (commands, replies) =
            if client_inside { (Edit::Rewrite, Edit::Observe) } else { (Edit::Observe, Edit::Rewrite) };
        FtpSession {
            streams: [
                Stream::new(commands, Speaker::Client, max_line),
                Stream::new(replies, Speaker::Server, max_line),
            ],
            mss: [None; 2],
            st: Control::new(client_inside, client, server),
        }
    }

    /// A NAT64 control connection (RFC 6384): the client is the IPv6 host `client6` (the session's
    /// client address is its IPv4 stand-in), and reaches the server at `server6`. Both directions may
    /// be rewritten: EPSV/EPRT/ALGS/LPRT/LPSV towards the server, 227 and the replies to substituted
    /// NOOPs towards the client.
    pub fn nat64(mut self, client6: Ipv6Addr, server6: Ipv6Addr) -> FtpSession {
        self.st.nat64_client(client6, server6);
        for s in &mut self.streams {
            s.enable_nat64();
        }
        self
    }

    /// A control connection from an IPv4 client (`Control`'s client, seen by the server as `client6`)
    /// to the IPv6 server `server6` behind its stand-in (`Control`'s server), through a forward: PASV and
    /// PORT/EPRT towards the server, 229 towards the client are rewritten (`rfc6384`'s header).
    pub fn nat64_server(mut self, client6: Ipv6Addr, server6: Ipv6Addr) -> FtpSession {
        self.st.nat64_server(client6, server6);
        for s in &mut self.streams {
            s.enable_nat64();
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

    /// The receiver of direction `dir` acknowledged `acked` (in that direction's sender space, checked
    /// against the window): edits it has are forgotten, and bytes the framer never saw are jumped over
    /// ([`Stream::gap`]). After a gap, the commands awaiting replies are forgotten (module header).
    pub fn on_ack(&mut self, dir: Dir, acked: SeqNum, ctx: &mut AlgCtx<'_>) {
        let stream = &mut self.streams[dir.index()];
        if !stream.map.is_identity() {
            stream.map.prune(acked);
        }
        if stream.gap(acked, ctx.metrics) {
            self.st.gap();
            // This connection's bytes travel a path around the gateway: see `stream::REFUSED_TIMES`.
            self.streams[dir.reverse().index()].other_path_seen();
        }
    }

    pub fn client_inside(&self) -> bool {
        self.st.client_inside()
    }

    /// Pinholes this connection opened that may still be outstanding.
    pub fn pinholes(&self) -> impl Iterator<Item = u16> + '_ {
        self.st.pinholes().iter().copied()
    }

    pub fn is_opaque(&self) -> bool {
        self.streams[0].is_opaque() || self.streams[1].is_opaque()
    }

    /// Not FTP: passed through untouched for good.
    pub fn is_dead(&self) -> bool {
        self.streams[0].is_dead() && self.streams[1].is_dead()
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

    /// A human summary of the ALG state, for `show flows`.
    pub fn describe(&self) -> String {
        let state = self.state_name();
        format!(
            "{state} pending={} delta_c2s={} delta_s2c={} pinholes={}",
            self.st.pending_len(),
            self.streams[0].map.current_delta(),
            self.streams[1].map.current_delta(),
            self.st.pinholes().len()
        )
    }

    /// Handles a segment travelling in `dir`. For the direction that may be rewritten, returns what to
    /// send instead; for the other, `Ok(None)`: forward it as it is.
    #[allow(clippy::too_many_arguments)]
    pub fn on_segment(
        &mut self,
        dir: Dir,
        seq: SeqNum,
        syn: bool,
        fin: bool,
        payload: &[u8],
        ctx: &mut AlgCtx<'_>,
    ) -> Result<Option<SegmentOut>, DropReason> {
        let FtpSession { streams, st, .. } = self;
        let stream = &mut streams[dir.index()];
        let now = ctx.now;
        let mut changes = Changes::default();
        let result = {
            let mut on_line = |line: &Line<'_>| -> Action {
                let found = st.on_line(dir, line);
                match apply::line(st, dir, line.bytes, found, ctx, &mut changes) {
                    LineAction::Keep => Action::Keep,
                    LineAction::Replace(span, with) => Action::Replace(span, with),
                    LineAction::Dead => Action::NotFtp,
                }
            };
            if stream.rewrites() {
                // `ctx.metrics` is borrowed by the closure; count into a scratch set and merge.
                let mut scratch = crate::metrics::Metrics::default();
                let r = stream.segment(seq, syn, fin, payload, now, &mut scratch, &mut on_line).map(Some);
                merge_stream_counters(ctx.metrics, &scratch);
                r
            } else {
                let mut scratch = crate::metrics::Metrics::default();
                let r =
                    stream.observe(seq, syn, fin, payload, now, &mut scratch, &mut on_line).map(|()| None);
                merge_stream_counters(ctx.metrics, &scratch);
                r
            }
        };
        if changes.opaque {
            apply::changed(st, ctx, StateChange::Opaque);
            for s in streams.iter_mut() {
                s.go_opaque();
            }
        }
        if changes.clear {
            apply::changed(st, ctx, StateChange::Clear);
            for s in streams.iter_mut() {
                s.go_clear();
            }
        }
        if changes.dead {
            apply::changed(st, ctx, StateChange::NotProtocol);
            for s in streams.iter_mut() {
                s.go_dead();
            }
        }
        result
    }

    /// The control connection is gone: so are the pinholes it opened (that no data connection used).
    pub fn close(&mut self, ctx: &mut AlgCtx<'_>) {
        apply::close(ctx, self.st.pinhole_ports().drain(..));
    }
}

fn merge_stream_counters(into: &mut crate::metrics::Metrics, from: &crate::metrics::Metrics) {
    for (a, b) in into.alg_refused.iter_mut().zip(from.alg_refused.iter()) {
        *a += b;
    }
    into.alg_lines_held += from.alg_lines_held;
    into.alg_retransmits_rebuilt += from.alg_retransmits_rebuilt;
    into.alg_gaps += from.alg_gaps;
    into.alg_gap_lines += from.alg_gap_lines;
}
