//! One FTP control connection: what was asked, what was answered, what the ALG may rewrite.
//!
//! Owns: the queue of commands waiting for their final reply (RFC 959 §4.2: one final reply per
//! command, 1xx are preliminary), multi-line reply tracking, the policy checks on PORT/EPRT/227/229,
//! the pinholes this connection opened, the switch to opaque after `AUTH TLS` (RFC 4217 §4), and
//! whether the connection is FTP at all. Must not: touch packets, bytes held or sequence numbers; it
//! sees lines through its [`LineFramer`]s, fed by the generic stream layer ([`crate::stream`]) through
//! [`FtpSession::framer`], and answers with [`Action`]s.
//!
//! Trusted only while it looks like FTP (NAT Slipstreaming: an HTTP request to port 21 whose body holds
//! a `PORT` line): the server's first reply must be its greeting (RFC 959 §5.4: 120, 220 or 421), no
//! announcement is honoured before the greeting, and every client line must be a command (RFC 959
//! §5.3.1: a verb of letters, then SP or the line end; Telnet IAC sequences in front are skipped,
//! RFC 959 §4.1.3). The first line that is not (an HTTP request line, a `Host:` header, a banner that is
//! no FTP reply) makes the connection opaque for good, counted `alg.refused.not_ftp`. Commands a client
//! pipelines before the greeting are queued as usual; the greeting answers none of them.
//!
//! After a gap in either direction ([`FtpSession::forget_pending`], when the stream layer jumped one) the queue of commands awaiting
//! replies is forgotten: replies may have been lost with it, and pairing a later 227 with the wrong
//! command would honour an unsolicited announcement. A 227/229 before the next PASV/EPSV is then
//! refused (fail closed).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::framer::{Action, Line, LineFramer, Speaker};
use super::parse::{self, Command, Kind};
use super::rfc6384::{self, Command64, EpsvAction, GatewayReply};
use crate::alg::{AlgCtx, Pinholes};
use crate::events::{Event, RewriteKind};
use crate::flow::{Dir, Endpoint, Side};
use crate::metrics::RefusalReason;
use crate::stream::{Edit, Emit, Framer, Start, StreamEdit, Tally};
use crate::wire::SeqNum;

/// A command waiting for its final reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// PORT/EPRT, with the public port of the pinhole it opened.
    Port(Option<u16>),
    Pasv,
    Epsv,
    Auth,
    Ccc,
    Other,
    /// NAT64: an EPSV sent as PASV; its 227 becomes a 229 (RFC 6384 §6).
    Epsv64,
    /// NAT64: an LPSV sent as PASV; its 227 becomes a 228.
    Lpsv64,
    /// NAT64: a command sent as NOOP; the server's reply is replaced by this one (RFC 6384 §12).
    Answer(GatewayReply),
    /// NAT64 with an IPv6 server: a PASV sent as EPSV; its 229 becomes a 227.
    Pasv64,
}

/// Which end of a NAT64 control connection is the IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V6End {
    /// An IPv6 inside client, an IPv4 server (RFC 6384).
    Client,
    /// An IPv4 client reaching an IPv6 inside server through a forward (RFC 6146 §3.5).
    Server,
}

/// What a NAT64 control connection knows of its IPv6 side (RFC 6384).
#[derive(Debug, Clone, Copy)]
struct Nat64Ftp {
    /// The IPv6 end.
    v6: V6End,
    /// The client's IPv6 address: its own (its stand-in is `State::client`), or for an IPv4 client
    /// the RFC 6052 address the IPv6 server sees it at.
    client6: Ipv6Addr,
    /// The server's address as the client sees it (under the NAT64 prefix), or an IPv6 server's own.
    server6: Ipv6Addr,
    /// `ALGS ENABLE64/DISABLE64` (RFC 6384 §11): EPSV and EPRT translated or passed unchanged.
    enabled: bool,
}

const MAX_PENDING: usize = 64;

#[derive(Debug, Clone)]
struct State {
    client_inside: bool,
    /// The client's own address (inside address when the client is inside).
    client: Ipv4Addr,
    /// The server's own address (inside address when the server is inside).
    server: Ipv4Addr,
    pending: VecDeque<Pending>,
    multiline: Option<u16>,
    /// Public ports of the pinholes this connection opened and that may still be outstanding.
    pinholes: VecDeque<u16>,
    opaque_now: bool,
    clear_now: bool,
    /// The server's greeting (RFC 959 §5.4) has been seen (or the connection was picked up mid-stream).
    greeted: bool,
    /// A line showed this is not FTP: both streams go opaque for good.
    not_ftp_now: bool,
    /// A NAT64 control connection: an IPv6 client (behind its stand-in) and an IPv4 server, or an
    /// IPv4 client and an IPv6 server (behind its stand-in) reached through a forward.
    nat64: Option<Nat64Ftp>,
}

/// ALG state of one control connection.
#[derive(Debug, Clone)]
pub struct FtpSession {
    /// Indexed by [`Dir::index`]: `Original` carries commands (the client always opens the control
    /// connection), `Reply` carries replies.
    framers: [LineFramer; 2],
    st: State,
}

impl FtpSession {
    /// `client_side`: where the client is. On the LAN its PORT/EPRT are rewritten; otherwise the server
    /// is inside and its 227/229 are. Only lines travelling LAN→WAN are ever changed.
    pub fn new(client_side: Side, client: Ipv4Addr, server: Ipv4Addr, max_line: usize) -> FtpSession {
        let client_inside = client_side == Side::Inside;
        FtpSession {
            framers: [LineFramer::new(Speaker::Client, max_line), LineFramer::new(Speaker::Server, max_line)],
            st: State {
                client_inside,
                client,
                server,
                pending: VecDeque::new(),
                multiline: None,
                pinholes: VecDeque::new(),
                opaque_now: false,
                clear_now: false,
                greeted: false,
                not_ftp_now: false,
                nat64: None,
            },
        }
    }

    /// A NAT64 control connection (RFC 6384): the client is the IPv6 host `client6` (the session's
    /// client address is its IPv4 stand-in), and reaches the server at `server6`. Both directions may
    /// be rewritten: EPSV/EPRT/ALGS/LPRT/LPSV towards the server, 227 and the replies to substituted
    /// NOOPs towards the client.
    pub fn nat64(mut self, client6: Ipv6Addr, server6: Ipv6Addr) -> FtpSession {
        self.st.nat64 = Some(Nat64Ftp { v6: V6End::Client, client6, server6, enabled: true });
        for f in &mut self.framers {
            f.enable_nat64();
        }
        self
    }

    /// A control connection from an IPv4 client (`State::client`, seen by the server as `client6`)
    /// to the IPv6 server `server6` behind its stand-in (`State::server`), through a forward: PASV and
    /// PORT/EPRT towards the server, 229 towards the client are rewritten (`rfc6384`'s header).
    pub fn nat64_server(mut self, client6: Ipv6Addr, server6: Ipv6Addr) -> FtpSession {
        self.st.nat64 = Some(Nat64Ftp { v6: V6End::Server, client6, server6, enabled: true });
        for f in &mut self.framers {
            f.enable_nat64();
        }
        self
    }

    /// Whether this is a NAT64 control connection.
    pub fn is_nat64(&self) -> bool {
        self.st.nat64.is_some()
    }

    /// A connection picked up mid-stream: its greeting is long past.
    pub fn picked_up(mut self) -> FtpSession {
        self.st.greeted = true;
        self
    }

    /// Whether the stream layer may edit each direction (by [`Dir::index`]): only lines travelling
    /// LAN→WAN are rewritten — the client's commands when it is inside, else the server's replies — and
    /// on a NAT64 control connection both directions (RFC 6384: EPSV→PASV one way, 227→229 the other).
    pub fn edits(&self) -> [Edit; 2] {
        if self.st.nat64.is_some() {
            [Edit::Rewrite, Edit::Rewrite]
        } else if self.st.client_inside {
            [Edit::Rewrite, Edit::Observe]
        } else {
            [Edit::Observe, Edit::Rewrite]
        }
    }

    /// The stream layer jumped a gap: replies may have been lost with it, and pairing a later 227 with
    /// the wrong command would honour an unsolicited announcement (module header).
    pub fn forget_pending(&mut self) {
        self.st.pending.clear();
        self.st.multiline = None;
    }

    /// This session as the stream layer's [`Framer`] while one segment (or acknowledgement, or release)
    /// is handled: its lines are judged with `ctx`.
    pub fn framer<'s, 'c>(&'s mut self, ctx: &'s mut AlgCtx<'c>) -> Live<'s, 'c> {
        Live { framers: &mut self.framers, st: &mut self.st, ctx }
    }

    pub fn client_inside(&self) -> bool {
        self.st.client_inside
    }

    /// Pinholes this connection opened that may still be outstanding.
    pub fn pinholes(&self) -> impl Iterator<Item = u16> + '_ {
        self.st.pinholes.iter().copied()
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
            self.st.pending.len(),
            stream.seq_map(Dir::Original).current_delta(),
            stream.seq_map(Dir::Reply).current_delta(),
            self.st.pinholes.len()
        )
    }

    /// The control connection is gone: so are the pinholes it opened (that no data connection used).
    pub fn close(&mut self, ctx: &mut AlgCtx<'_>) {
        for port in self.st.pinholes.drain(..) {
            if ctx.pinholes.get(Endpoint::new(ctx.public_ip, port)).is_some_and(|p| p.control == ctx.control)
            {
                ctx.pinholes.remove(ctx.nat, Endpoint::new(ctx.public_ip, port), ctx.now);
                ctx.metrics.pinholes_closed_with_control += 1;
            }
        }
    }
}

/// RFC 6384 §12: `line` goes to the server as `NOOP`, and the reply to it is replaced by `r`.
fn gateway_answers(line: &Line<'_>, r: GatewayReply) -> (Pending, Action) {
    (
        Pending::Answer(r),
        Action::Replace(0..line.bytes.len(), rfc6384::noop_line(rfc6384::line_end(line.bytes))),
    )
}

/// A session fed by the stream layer (see [`FtpSession::framer`]).
pub struct Live<'s, 'c> {
    framers: &'s mut [LineFramer; 2],
    st: &'s mut State,
    ctx: &'s mut AlgCtx<'c>,
}

impl Framer for Live<'_, '_> {
    fn begin(&mut self, dir: Dir, start: Start) {
        self.framers[dir.index()].begin(start);
    }

    fn feed(&mut self, dir: Dir, at: SeqNum, data: &[u8], emit: &mut Emit<'_>) {
        let Live { framers, st, ctx } = self;
        framers[dir.index()].feed(at, data, emit, &mut |line: &Line<'_>| match dir {
            Dir::Original => st.on_command(line, ctx),
            Dir::Reply => st.on_reply(line, ctx),
        });
        // A line of this segment switched the connection's mode: both directions follow from their
        // next byte on.
        if std::mem::take(&mut st.opaque_now) {
            ctx.metrics.alg_tls_opaque += 1;
            tracing::info!(target: "ftpnat::alg", control = %ctx.control, "AUTH TLS accepted: control connection is opaque");
            framers.iter_mut().for_each(LineFramer::go_opaque);
        }
        if std::mem::take(&mut st.clear_now) {
            framers.iter_mut().for_each(LineFramer::go_clear);
        }
        if std::mem::take(&mut st.not_ftp_now) {
            tracing::info!(target: "ftpnat::alg", control = %ctx.control, "not FTP: control connection is opaque for good");
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

impl State {
    fn push_pending(&mut self, p: Pending) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }

    fn on_command(&mut self, line: &Line<'_>, ctx: &mut AlgCtx<'_>) -> Action {
        tracing::trace!(target: "ftpnat::alg", control = %ctx.control, line = %parse::redacted(line.bytes), "command");
        if line.straddling {
            // Possibly the tail of a line: if it reads as a command, its reply will come; nothing else.
            if parse::client_line(line.bytes) == parse::ClientLine::Command {
                let p = match parse::classify_command(line.bytes) {
                    Command::Port | Command::Eprt => Pending::Port(None),
                    Command::Pasv => Pending::Pasv,
                    Command::Epsv => Pending::Epsv,
                    Command::Auth => Pending::Auth,
                    Command::Ccc => Pending::Ccc,
                    _ => Pending::Other,
                };
                self.push_pending(p);
            }
            return Action::Keep;
        }
        match parse::client_line(line.bytes) {
            parse::ClientLine::Command => {}
            parse::ClientLine::Empty => return Action::Keep,
            parse::ClientLine::NotFtp => return self.not_ftp(line, ctx),
        }
        if let Some(n) = self.nat64 {
            if line.held {
                let mirrored = match n.v6 {
                    V6End::Client => self.on_command64(n, line, ctx),
                    V6End::Server => self.on_command64_server(n, line, ctx),
                };
                if let Some((pending, action)) = mirrored {
                    self.push_pending(pending);
                    return action;
                }
            }
        }
        let cmd = parse::classify_command(line.bytes);
        let (pending, action) = match cmd {
            Command::Port | Command::Eprt if line.held && !self.greeted => {
                // No greeting yet: nothing has shown this is an FTP server (NAT Slipstreaming would
                // send its PORT first). Left as sent.
                self.refuse(RefusalReason::NotFtp, line, ctx);
                (Pending::Port(None), Action::Keep)
            }
            Command::Port | Command::Eprt if line.held => {
                let kind = if cmd == Command::Port { Kind::Port } else { Kind::Eprt };
                match self.announce(kind, line, ctx) {
                    Ok((port, action)) => (Pending::Port(Some(port)), action),
                    Err(()) => (Pending::Port(None), Action::Keep),
                }
            }
            Command::Port | Command::Eprt => (Pending::Port(None), Action::Keep),
            Command::Pasv => (Pending::Pasv, Action::Keep),
            Command::Epsv => (Pending::Epsv, Action::Keep),
            Command::Auth => (Pending::Auth, Action::Keep),
            Command::Ccc => (Pending::Ccc, Action::Keep),
            _ => (Pending::Other, Action::Keep),
        };
        self.push_pending(pending);
        action
    }

    /// The line shows the connection is not FTP: counted once, then opaque for good.
    fn not_ftp(&mut self, line: &Line<'_>, ctx: &mut AlgCtx<'_>) -> Action {
        self.refuse(RefusalReason::NotFtp, line, ctx);
        self.not_ftp_now = true;
        Action::NotFtp
    }

    fn on_reply(&mut self, line: &Line<'_>, ctx: &mut AlgCtx<'_>) -> Action {
        let code = parse::reply_code(line.bytes);
        if line.straddling {
            // Possibly the tail of a line (module header): it still answers its command, and is
            // never an announcement nor a greeting.
            self.greeted = true;
        }
        if !self.greeted && self.multiline.is_none() && !matches!(code, Some((120 | 220 | 421, _))) {
            // RFC 959 §5.4: an FTP server opens with 120, 220 or 421. Anything else (an HTTP status
            // line, an SSH banner) is another protocol on an FTP port.
            return self.not_ftp(line, ctx);
        }
        let final_code = match (self.multiline, code) {
            // RFC 959 §4.2: a multi-line reply ends at a line that starts with the same code and a
            // space; any other line in between is text, whatever it looks like.
            (Some(ml), Some((c, false))) if c == ml => {
                self.multiline = None;
                c
            }
            (Some(_), _) => return self.interim(line, ctx),
            (None, Some((c, true))) => {
                self.multiline = Some(c);
                return self.interim(line, ctx);
            }
            (None, Some((c, false))) => c,
            (None, None) => return self.unsolicited(line, ctx),
        };
        if final_code < 200 {
            return self.interim(line, ctx);
        }
        if !self.greeted {
            // The greeting answers no command: commands pipelined before it wait for the replies after.
            self.greeted = true;
            return self.unsolicited(line, ctx);
        }
        let answered = self.pending.pop_front();
        let whole = 0..line.bytes.len();
        let eol = rfc6384::line_end(line.bytes);
        match (answered, final_code) {
            // RFC 6384 §12: the reply to the NOOP the gateway sent in place of a command it answers.
            (Some(Pending::Answer(r)), _) if line.held => {
                ctx.metrics.alg_nat64_answered += 1;
                self.rewrite_event(ctx, RewriteKind::Answer, line, &r.line(eol));
                Action::Replace(whole, r.line(eol))
            }
            (Some(p @ (Pending::Epsv64 | Pending::Lpsv64)), 227) if line.held => {
                let Ok((_, port)) = rfc6384::parse_227(line.bytes) else {
                    self.refuse(RefusalReason::Malformed, line, ctx);
                    return Action::Keep;
                };
                // RFC 6384 §6: the client connects to the address it reaches the server at; the
                // 227's address is not carried (a server naming another host, or its own private
                // address, cannot point the IPv6 client elsewhere).
                let with = match (p, self.nat64) {
                    (Pending::Lpsv64, Some(n)) => rfc6384::reply_228(n.server6, port, eol),
                    _ => rfc6384::reply_229(port, eol),
                };
                ctx.metrics.alg_nat64_227 += 1;
                self.rewrite_event(ctx, RewriteKind::Pasv227, line, &with);
                Action::Replace(whole, with)
            }
            (Some(Pending::Pasv64), 229) if line.held => {
                // The IPv4 ALG's 229 rule (policy, pinhole for the client, public port), then the
                // reply the client asked for: a 227 naming the public address.
                let Ok((public_port, _)) = self.announce(Kind::Epsv229, line, ctx) else {
                    return Action::Keep;
                };
                let with = rfc6384::reply_227(ctx.public_ip, public_port, eol);
                ctx.metrics.alg_nat64_227 += 1;
                self.rewrite_event(ctx, RewriteKind::Epsv229, line, &with);
                Action::Replace(whole, with)
            }
            (Some(Pending::Pasv), 227) if line.held && !self.client_inside => {
                self.announce(Kind::Pasv227, line, ctx).map_or(Action::Keep, |r| r.1)
            }
            (Some(Pending::Epsv), 229) if line.held && !self.client_inside => {
                self.announce(Kind::Epsv229, line, ctx).map_or(Action::Keep, |r| r.1)
            }
            // A client-side connection (NAT64 holds its replies) leaves the server's 227/229 as sent.
            (Some(Pending::Pasv), 227) | (Some(Pending::Epsv), 229) => Action::Keep,
            (Some(Pending::Port(Some(port))), c) if !(200..300).contains(&c) => {
                // The server refused the PORT/EPRT: nothing will connect, so the pinhole goes now.
                if ctx
                    .pinholes
                    .get(Endpoint::new(ctx.public_ip, port))
                    .is_some_and(|p| p.control == ctx.control)
                {
                    ctx.pinholes.remove(ctx.nat, Endpoint::new(ctx.public_ip, port), ctx.now);
                    ctx.metrics.pinholes_refused_by_server += 1;
                    tracing::debug!(target: "ftpnat::pinhole", event = "refused", control = %ctx.control, public_port = port,
                        reply = c, "server refused the announcement; pinhole removed");
                }
                self.pinholes.retain(|&p| p != port);
                Action::Keep
            }
            (Some(Pending::Auth), 234) => {
                self.opaque_now = true;
                Action::Keep
            }
            (Some(Pending::Ccc), 200) => {
                self.clear_now = true;
                Action::Keep
            }
            _ => self.unsolicited(line, ctx),
        }
    }

    /// A reply line that is not the final one (a 1xx, a line of a multi-line reply). When it answers
    /// a NOOP the gateway substituted, the gateway's one-line answer replaces the whole reply: the
    /// line goes (RFC 6384 §12).
    fn interim(&mut self, line: &Line<'_>, ctx: &mut AlgCtx<'_>) -> Action {
        if line.held && matches!(self.pending.front(), Some(Pending::Answer(_))) {
            return Action::Replace(0..line.bytes.len(), Vec::new());
        }
        self.unsolicited(line, ctx)
    }

    /// A held 227/229 that answers no PASV/EPSV is left alone and counted (a NAT64 connection holds
    /// every reply: only a 227/229 counts).
    fn unsolicited(&mut self, line: &Line<'_>, ctx: &mut AlgCtx<'_>) -> Action {
        if line.held && parse::candidate(line.bytes, false) == parse::Candidate::Maybe {
            ctx.metrics.refuse(RefusalReason::Unsolicited);
            tracing::warn!(target: "ftpnat::alg", control = %ctx.control, reason = "unsolicited",
                line = %parse::redacted(line.bytes), "227/229 answers no pending PASV/EPSV; left as sent");
            let control = ctx.control;
            ctx.events.push(|| Event::Refusal {
                control,
                reason: RefusalReason::Unsolicited,
                line: parse::redacted(line.bytes),
            });
        }
        Action::Keep
    }

    /// RFC 6384 for a complete, held client line of a NAT64 connection. `None`: not one of its
    /// commands (or translation is disabled for it): the IPv4 rules apply.
    fn on_command64(
        &mut self,
        n: Nat64Ftp,
        line: &Line<'_>,
        ctx: &mut AlgCtx<'_>,
    ) -> Option<(Pending, Action)> {
        let whole = 0..line.bytes.len();
        let eol = rfc6384::line_end(line.bytes);
        let noop = |r: GatewayReply| Some(gateway_answers(line, r));
        match rfc6384::command64(line.bytes) {
            Command64::Algs => {
                // RFC 6384 §11.
                let (enabled, reply) = rfc6384::algs_answer(line.bytes, n.enabled);
                if let Some(m) = self.nat64.as_mut() {
                    m.enabled = enabled;
                }
                noop(reply)
            }
            Command64::Other => None,
            _ if !n.enabled => None,
            Command64::Epsv => match rfc6384::epsv_action(line.bytes) {
                EpsvAction::ToPasv => {
                    ctx.metrics.alg_nat64_epsv += 1;
                    let with = rfc6384::pasv_line(eol);
                    self.rewrite_event(ctx, RewriteKind::Epsv, line, &with);
                    Some((Pending::Epsv64, Action::Replace(whole, with)))
                }
                EpsvAction::Answer(r) => noop(r),
                EpsvAction::Pass => None,
            },
            Command64::Lpsv => {
                ctx.metrics.alg_nat64_epsv += 1;
                let with = rfc6384::pasv_line(eol);
                self.rewrite_event(ctx, RewriteKind::Lpsv, line, &with);
                Some((Pending::Lpsv64, Action::Replace(whole, with)))
            }
            Command64::Eprt | Command64::Lprt => {
                let lprt = rfc6384::command64(line.bytes) == Command64::Lprt;
                let parsed =
                    if lprt { rfc6384::parse_lprt(line.bytes) } else { rfc6384::parse_eprt(line.bytes) };
                let port = match parsed {
                    Ok(rfc6384::DataAddr { addr: IpAddr::V6(a), port }) if a == n.client6 => port,
                    Ok(rfc6384::DataAddr { addr: IpAddr::V4(_), .. }) if lprt => {
                        return noop(GatewayReply::LprtFamily);
                    }
                    Ok(_) => {
                        // RFC 2577 §3: a data address other than the client's own is the bounce attack.
                        self.refuse(RefusalReason::ThirdHost, line, ctx);
                        return noop(GatewayReply::PortRefused);
                    }
                    Err(parse::ParseError::WrongFamily) => {
                        self.refuse(RefusalReason::WrongFamily, line, ctx);
                        return noop(if lprt { GatewayReply::LprtFamily } else { GatewayReply::PortRefused });
                    }
                    Err(_) => {
                        self.refuse(RefusalReason::Malformed, line, ctx);
                        return noop(GatewayReply::PortRefused);
                    }
                };
                if !self.greeted {
                    // As for PORT: nothing has shown this is an FTP server yet.
                    self.refuse(RefusalReason::NotFtp, line, ctx);
                    return noop(GatewayReply::PortRefused);
                }
                // RFC 6384 §7: the PORT the IPv4 server gets names the public address and a mapped
                // port; it is the IPv4 ALG's PORT rule (policy, pinhole, mapping allocated first)
                // applied to the stand-in's PORT.
                let stand_in = rfc6384::port_line(self.client, port, eol);
                let synthetic = Line {
                    bytes: &stand_in,
                    start: line.start,
                    held: true,
                    truncated: false,
                    straddling: false,
                };
                match self.announce(Kind::Port, &synthetic, ctx) {
                    Ok((public_port, Action::Replace(span, with))) => {
                        let mut out = stand_in[..span.start].to_vec();
                        out.extend_from_slice(&with);
                        out.extend_from_slice(&stand_in[span.end..]);
                        ctx.metrics.alg_nat64_eprt += 1;
                        Some((Pending::Port(Some(public_port)), Action::Replace(whole, out)))
                    }
                    _ => noop(GatewayReply::PortRefused),
                }
            }
        }
    }

    /// The mirror of [`Self::on_command64`] for an IPv4 client of an IPv6 server (`rfc6384`'s header).
    /// `None`: the IPv4 rules apply (EPSV and its 229, everything else).
    fn on_command64_server(
        &mut self,
        n: Nat64Ftp,
        line: &Line<'_>,
        ctx: &mut AlgCtx<'_>,
    ) -> Option<(Pending, Action)> {
        let (whole, eol) = (0..line.bytes.len(), rfc6384::line_end(line.bytes));
        let cmd = parse::classify_command(line.bytes);
        match cmd {
            Command::Pasv => {
                ctx.metrics.alg_nat64_epsv += 1;
                let with = rfc6384::epsv_line(eol);
                self.rewrite_event(ctx, RewriteKind::Pasv, line, &with);
                Some((Pending::Pasv64, Action::Replace(whole, with)))
            }
            Command::Epsv if rfc6384::parse_epsv(line.bytes) == Ok(rfc6384::EpsvArg::Family(1)) => {
                let with = rfc6384::epsv_line(eol);
                self.rewrite_event(ctx, RewriteKind::Epsv, line, &with);
                Some((Pending::Epsv, Action::Replace(whole, with)))
            }
            Command::Port | Command::Eprt => {
                let parsed = if cmd == Command::Port {
                    parse::parse_port(line.bytes)
                } else {
                    parse::parse_eprt(line.bytes)
                };
                let reason = match &parsed {
                    _ if line.truncated => Some(RefusalReason::Overlong),
                    // Nothing has shown this is an FTP server yet (NAT Slipstreaming).
                    _ if !self.greeted => Some(RefusalReason::NotFtp),
                    Ok(a) if a.addr.is_some_and(|x| !x.is_unspecified() && x != self.client) => {
                        // RFC 2577 §3: a data address other than the client's own is the bounce attack.
                        Some(RefusalReason::ThirdHost)
                    }
                    Ok(a) if a.port < 1024 && ctx.policy.refuse_low_ports => Some(RefusalReason::LowPort),
                    Ok(_) => None,
                    Err(parse::ParseError::WrongFamily) => Some(RefusalReason::WrongFamily),
                    Err(_) => Some(RefusalReason::Malformed),
                };
                if let Some(r) = reason {
                    self.refuse(r, line, ctx);
                    return Some(gateway_answers(line, GatewayReply::PortRefused));
                }
                let port = parsed.map_or(0, |a| a.port);
                // The server's data connection to the client's RFC 6052 address leaves as any inside
                // host's connection does (a mapping of its own): no pinhole is needed.
                let with = rfc6384::eprt6_line(n.client6, port, eol);
                ctx.metrics.alg_nat64_eprt += 1;
                self.rewrite_event(
                    ctx,
                    if cmd == Command::Port { RewriteKind::Port } else { RewriteKind::Eprt },
                    line,
                    &with,
                );
                Some((Pending::Port(None), Action::Replace(whole, with)))
            }
            _ => None,
        }
    }

    /// Logs and records an RFC 6384 rewrite of a whole line.
    fn rewrite_event(&self, ctx: &mut AlgCtx<'_>, kind: RewriteKind, line: &Line<'_>, with: &[u8]) {
        let old = parse::redacted(line.bytes);
        let new = parse::redacted(with);
        tracing::info!(target: "ftpnat::alg", control = %ctx.control, kind = kind.name(), %old, %new, "nat64 rewrite");
        let control = ctx.control;
        let delta = with.len() as i64 - line.bytes.len() as i64;
        ctx.events.push(|| Event::Rewrite {
            control,
            kind,
            old,
            new,
            delta,
            inside: Endpoint::new(if self.client_inside { self.client } else { self.server }, 0),
            public_port: 0,
        });
    }

    fn refuse(&self, reason: RefusalReason, line: &Line<'_>, ctx: &mut AlgCtx<'_>) {
        ctx.metrics.refuse(reason);
        tracing::warn!(target: "ftpnat::alg", control = %ctx.control, reason = reason.name(),
            line = %parse::redacted(line.bytes), "ALG refused line; left as sent, no pinhole");
        let control = ctx.control;
        ctx.events.push(|| Event::Refusal { control, reason, line: parse::redacted(line.bytes) });
    }

    /// Checks an announcement against policy, opens its pinhole and formats the replacement.
    fn announce(&mut self, kind: Kind, line: &Line<'_>, ctx: &mut AlgCtx<'_>) -> Result<(u16, Action), ()> {
        if line.truncated {
            self.refuse(RefusalReason::Overlong, line, ctx);
            return Err(());
        }
        let parsed = match kind {
            Kind::Port => parse::parse_port(line.bytes),
            Kind::Eprt => parse::parse_eprt(line.bytes),
            Kind::Pasv227 => parse::parse_227(line.bytes),
            Kind::Epsv229 => parse::parse_229(line.bytes),
        };
        let ann = match parsed {
            Ok(a) => a,
            Err(parse::ParseError::WrongFamily) => {
                self.refuse(RefusalReason::WrongFamily, line, ctx);
                return Err(());
            }
            Err(_) => {
                self.refuse(RefusalReason::Malformed, line, ctx);
                return Err(());
            }
        };
        // The announcing side's own address; its data endpoint must be on the same host.
        let (sender, peer) = match kind {
            Kind::Port | Kind::Eprt => (self.client, self.server),
            Kind::Pasv227 | Kind::Epsv229 => (self.server, self.client),
        };
        let addr = match ann.addr {
            // "0,0,0,0" is the common shorthand for "the address of this control connection".
            Some(a) if a.is_unspecified() => sender,
            Some(a) => a,
            None => sender,
        };
        if addr != sender {
            // RFC 2577 §3: an announcement naming another host is the FTP bounce attack.
            self.refuse(RefusalReason::ThirdHost, line, ctx);
            return Err(());
        }
        if ann.port < 1024 && ctx.policy.refuse_low_ports {
            // RFC 2577 §3: servers should refuse data ports below 1024; so does the gateway, and the same
            // for a 227/229 of an inside server (a pinhole to a privileged port of it).
            self.refuse(RefusalReason::LowPort, line, ctx);
            return Err(());
        }
        let public_ip = ctx.public_ip;
        let span_len = ann.span.len();
        let prefer = move |p: u16| parse::formatted_len(kind, public_ip, p) == span_len;
        let kind_name = match kind {
            Kind::Port => RewriteKind::Port,
            Kind::Eprt => RewriteKind::Eprt,
            Kind::Pasv227 => RewriteKind::Pasv227,
            Kind::Epsv229 => RewriteKind::Epsv229,
        };
        let port = match Pinholes::open(ctx, peer, Endpoint::new(sender, ann.port), kind_name, &prefer) {
            Ok(p) => p,
            Err(reason) => {
                self.refuse(reason, line, ctx);
                return Err(());
            }
        };
        // The same data endpoint announced again is one pinhole, not two: trimming a duplicate entry
        // must not close the live one.
        self.pinholes.retain(|&p| p != port);
        self.pinholes.push_back(port);
        while self.pinholes.len() > ctx.policy.max_pinholes_per_conn {
            // Clients may pipeline several PORT+RETR pairs; the oldest announcement goes first.
            if let Some(old) = self.pinholes.pop_front() {
                if ctx
                    .pinholes
                    .get(Endpoint::new(ctx.public_ip, old))
                    .is_some_and(|p| p.control == ctx.control)
                {
                    ctx.pinholes.remove(ctx.nat, Endpoint::new(ctx.public_ip, old), ctx.now);
                    ctx.metrics.pinholes_replaced += 1;
                }
            }
        }
        let with = parse::format_span(kind, public_ip, port, ann.delim);
        let m = &mut *ctx.metrics;
        match kind {
            Kind::Port => m.alg_rewrites_port += 1,
            Kind::Eprt => m.alg_rewrites_eprt += 1,
            Kind::Pasv227 => m.alg_rewrites_227 += 1,
            Kind::Epsv229 => m.alg_rewrites_229 += 1,
        }
        if with.len() == span_len {
            m.alg_rewrites_zero_delta += 1;
        }
        tracing::info!(target: "ftpnat::alg", control = %ctx.control, kind = kind_name.name(),
            old = %String::from_utf8_lossy(&line.bytes[ann.span.clone()]),
            new = %String::from_utf8_lossy(&with),
            delta = with.len() as i64 - span_len as i64,
            inside = %Endpoint::new(sender, ann.port), public_port = port, "rewrite");
        let control = ctx.control;
        ctx.events.push(|| Event::Rewrite {
            control,
            kind: kind_name,
            old: String::from_utf8_lossy(&line.bytes[ann.span.clone()]).into_owned(),
            new: String::from_utf8_lossy(&with).into_owned(),
            delta: with.len() as i64 - span_len as i64,
            inside: Endpoint::new(sender, ann.port),
            public_port: port,
        });
        Ok((port, Action::Replace(ann.span, with)))
    }
}
