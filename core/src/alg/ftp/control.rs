//! The FTP ALG proper: what the lines of one control connection mean.
//!
//! Owns: the queue of commands waiting for their final reply (RFC 959 §4.2: one final reply per
//! command, 1xx are preliminary), multi-line reply tracking, FTP's checks of PORT/EPRT/227/229 (the
//! syntax, the greeting first), the public ports of the pinholes this connection opened (plain data),
//! the switch to opaque after `AUTH TLS` (RFC 4217 §4), whether the connection is FTP at all, and
//! NAT64's RFC 6384 translations. It reads complete lines and answers with findings
//! ([`crate::alg::finding`]): announcements, refusals, rewrites, state changes.
//! Must not: touch packets or streams, hold the NAT, the metrics or the event queue, open or close
//! pinholes, count or log — [`crate::alg::apply`] does all of that from the findings.
//!
//! Trusted only while it looks like FTP (NAT Slipstreaming: an HTTP request to port 21 whose body holds
//! a `PORT` line): the server's first reply must be its greeting (RFC 959 §5.4: 120, 220 or 421), no
//! announcement is honoured before the greeting, and every client line must be a command (RFC 959
//! §5.3.1: a verb of letters, then SP or the line end; Telnet IAC sequences in front are skipped,
//! RFC 959 §4.1.3). The first line that is not (an HTTP request line, a `Host:` header, a banner that is
//! no FTP reply) makes the connection opaque for good, counted `alg.refused.not_ftp`. Commands a client
//! pipelines before the greeting are queued as usual; the greeting answers none of them.
//!
//! After a gap in either direction ([`Control::gap`]) the queue of commands awaiting replies is
//! forgotten: replies may have been lost with it, and pairing a later 227 with the wrong command would
//! honour an unsolicited announcement. A 227/229 before the next PASV/EPSV is then refused (fail
//! closed).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::framer::Line;
use super::parse::{self, Command, Kind};
use super::rfc6384::{self, Command64, EpsvAction, GatewayReply};
use crate::alg::finding::{
    Alg, Announcement, Count, LineAction, LineRewrite, Note, Outcome, Placed, Refusal, StateChange, Verdict,
    REFUSED,
};
use crate::events::RewriteKind;
use crate::flow::{Dir, Endpoint};
use crate::metrics::RefusalReason;

/// A command waiting for its final reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum V6End {
    /// An IPv6 inside client, an IPv4 server (RFC 6384).
    Client,
    /// An IPv4 client reaching an IPv6 inside server through a forward (RFC 6146 §3.5).
    Server,
}

/// What a NAT64 control connection knows of its IPv6 side (RFC 6384).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Nat64Ftp {
    /// The IPv6 end.
    v6: V6End,
    /// The client's IPv6 address: its own (its stand-in is `Control::client`), or for an IPv4 client
    /// the RFC 6052 address the IPv6 server sees it at.
    client6: Ipv6Addr,
    /// The server's address as the client sees it (under the NAT64 prefix), or an IPv6 server's own.
    server6: Ipv6Addr,
    /// `ALGS ENABLE64/DISABLE64` (RFC 6384 §11): EPSV and EPRT translated or passed unchanged.
    enabled: bool,
}

const MAX_PENDING: usize = 64;

/// How to format an announced endpoint again: the syntax of its line and, for EPRT, its delimiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Format {
    kind: Kind,
    delim: u8,
}

/// What the announcement handed to the generic code is for ([`Control::announced`] finishes it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Awaiting {
    /// A PORT/EPRT of an inside client: its reply may close the pinhole.
    Port,
    /// A 227/229 of an inside server.
    Passive,
    /// NAT64, IPv6 client: an EPRT/LPRT sent as its stand-in's PORT, `stand_in` (RFC 6384 §7).
    Eprt64 { stand_in: Vec<u8> },
    /// NAT64, IPv6 server: the 229 answering a PASV sent as EPSV, sent on as a 227.
    Pasv64,
    /// NAT64, IPv6 server: an IPv4 client's PORT/EPRT, sent on as an EPRT naming its RFC 6052 address.
    Eprt6 { kind: RewriteKind, client6: Ipv6Addr, port: u16 },
}

/// A command's line handled: its pending entry and the action, or an announcement to place first.
enum Step {
    Done(Pending, LineAction),
    Ask(Awaiting, Announcement<Format>),
}

/// The FTP ALG's state of one control connection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Control {
    client_inside: bool,
    /// The client's own address (inside address when the client is inside).
    client: Ipv4Addr,
    /// The server's own address (inside address when the server is inside).
    server: Ipv4Addr,
    pending: VecDeque<Pending>,
    multiline: Option<u16>,
    /// Public ports of the pinholes this connection opened and that may still be outstanding.
    pinholes: VecDeque<u16>,
    /// The server's greeting (RFC 959 §5.4) has been seen (or the connection was picked up mid-stream).
    greeted: bool,
    /// A NAT64 control connection: an IPv6 client (behind its stand-in) and an IPv4 server, or an
    /// IPv4 client and an IPv6 server (behind its stand-in) reached through a forward.
    nat64: Option<Nat64Ftp>,
    /// The announcement handed out and not yet placed.
    awaiting: Option<Awaiting>,
    /// Findings of the line being handled, returned with its verdict.
    #[serde(skip)]
    notes: Vec<Note>,
}

/// RFC 6384 §12: `line` goes to the server as `NOOP`, and the reply to it is replaced by `r`.
fn gateway_answers(line: &[u8], r: GatewayReply) -> (Pending, LineAction) {
    (Pending::Answer(r), LineAction::Replace(0..line.len(), rfc6384::noop_line(rfc6384::line_end(line))))
}

impl Control {
    /// `client_inside`: on the LAN the client's PORT/EPRT are rewritten; otherwise the server is
    /// inside and its 227/229 are.
    pub fn new(client_inside: bool, client: Ipv4Addr, server: Ipv4Addr) -> Control {
        Control {
            client_inside,
            client,
            server,
            pending: VecDeque::new(),
            multiline: None,
            pinholes: VecDeque::new(),
            greeted: false,
            nat64: None,
            awaiting: None,
            notes: Vec::new(),
        }
    }

    /// NAT64 with an IPv6 client `client6` reaching the server at `server6` (RFC 6384).
    pub fn nat64_client(&mut self, client6: Ipv6Addr, server6: Ipv6Addr) {
        self.nat64 = Some(Nat64Ftp { v6: V6End::Client, client6, server6, enabled: true });
    }

    /// NAT64 with an IPv4 client (seen as `client6`) of the IPv6 server `server6`.
    pub fn nat64_server(&mut self, client6: Ipv6Addr, server6: Ipv6Addr) {
        self.nat64 = Some(Nat64Ftp { v6: V6End::Server, client6, server6, enabled: true });
    }

    pub fn is_nat64(&self) -> bool {
        self.nat64.is_some()
    }

    /// The greeting is long past (a connection picked up mid-stream).
    pub fn greeted(&mut self) {
        self.greeted = true;
    }

    pub fn client_inside(&self) -> bool {
        self.client_inside
    }

    /// Commands waiting for their final reply.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Public ports of the pinholes this connection opened that may still be outstanding.
    pub fn pinholes(&self) -> &VecDeque<u16> {
        &self.pinholes
    }

    /// Bytes of one direction were lost (module header): forget which commands await replies.
    pub fn gap(&mut self) {
        self.pending.clear();
        self.multiline = None;
    }

    fn push_pending(&mut self, p: Pending) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }

    /// The findings so far, with the verdict.
    fn outcome(&mut self, verdict: Verdict<Format>) -> Outcome<Format> {
        Outcome { notes: std::mem::take(&mut self.notes), verdict }
    }

    /// A step's pending command is queued now, or when its announcement is placed.
    fn step(&mut self, s: Step) -> Verdict<Format> {
        match s {
            Step::Done(pending, action) => {
                self.push_pending(pending);
                Verdict::Line(action)
            }
            Step::Ask(awaiting, ann) => {
                self.awaiting = Some(awaiting);
                Verdict::Announce(ann)
            }
        }
    }

    fn command(&mut self, line: &Line<'_>) -> Verdict<Format> {
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
            return Verdict::Line(LineAction::Keep);
        }
        match parse::client_line(line.bytes) {
            parse::ClientLine::Command => {}
            parse::ClientLine::Empty => return Verdict::Line(LineAction::Keep),
            parse::ClientLine::NotFtp => return Verdict::Line(self.not_ftp(line)),
        }
        if let Some(n) = self.nat64 {
            if line.held {
                let mirrored = match n.v6 {
                    V6End::Client => self.on_command64(n, line),
                    V6End::Server => self.on_command64_server(n, line),
                };
                if let Some(s) = mirrored {
                    return self.step(s);
                }
            }
        }
        let cmd = parse::classify_command(line.bytes);
        let s = match cmd {
            Command::Port | Command::Eprt if line.held && !self.greeted => {
                // No greeting yet: nothing has shown this is an FTP server (NAT Slipstreaming would
                // send its PORT first). Left as sent.
                self.refuse(RefusalReason::NotFtp, line.bytes);
                Step::Done(Pending::Port(None), LineAction::Keep)
            }
            Command::Port | Command::Eprt if line.held => {
                let kind = if cmd == Command::Port { Kind::Port } else { Kind::Eprt };
                match self.announce(kind, line) {
                    Some(ann) => Step::Ask(Awaiting::Port, ann),
                    None => Step::Done(Pending::Port(None), LineAction::Keep),
                }
            }
            Command::Port | Command::Eprt => Step::Done(Pending::Port(None), LineAction::Keep),
            Command::Pasv => Step::Done(Pending::Pasv, LineAction::Keep),
            Command::Epsv => Step::Done(Pending::Epsv, LineAction::Keep),
            Command::Auth => Step::Done(Pending::Auth, LineAction::Keep),
            Command::Ccc => Step::Done(Pending::Ccc, LineAction::Keep),
            _ => Step::Done(Pending::Other, LineAction::Keep),
        };
        self.step(s)
    }

    /// The line shows the connection is not FTP: counted once, then opaque for good.
    fn not_ftp(&mut self, line: &Line<'_>) -> LineAction {
        self.refuse(RefusalReason::NotFtp, line.bytes);
        self.notes.push(Note::State(StateChange::NotProtocol));
        LineAction::Dead
    }

    fn reply(&mut self, line: &Line<'_>) -> Verdict<Format> {
        let code = parse::reply_code(line.bytes);
        if line.straddling {
            // Possibly the tail of a line (module header): it still answers its command, and is
            // never an announcement nor a greeting.
            self.greeted = true;
        }
        if !self.greeted && self.multiline.is_none() && !matches!(code, Some((120 | 220 | 421, _))) {
            // RFC 959 §5.4: an FTP server opens with 120, 220 or 421. Anything else (an HTTP status
            // line, an SSH banner) is another protocol on an FTP port.
            return Verdict::Line(self.not_ftp(line));
        }
        let final_code = match (self.multiline, code) {
            // RFC 959 §4.2: a multi-line reply ends at a line that starts with the same code and a
            // space; any other line in between is text, whatever it looks like.
            (Some(ml), Some((c, false))) if c == ml => {
                self.multiline = None;
                c
            }
            (Some(_), _) => return Verdict::Line(self.interim(line)),
            (None, Some((c, true))) => {
                self.multiline = Some(c);
                return Verdict::Line(self.interim(line));
            }
            (None, Some((c, false))) => c,
            (None, None) => return Verdict::Line(self.unsolicited(line)),
        };
        if final_code < 200 {
            return Verdict::Line(self.interim(line));
        }
        if !self.greeted {
            // The greeting answers no command: commands pipelined before it wait for the replies after.
            self.greeted = true;
            return Verdict::Line(self.unsolicited(line));
        }
        let answered = self.pending.pop_front();
        let whole = 0..line.bytes.len();
        let eol = rfc6384::line_end(line.bytes);
        let action = match (answered, final_code) {
            // RFC 6384 §12: the reply to the NOOP the gateway sent in place of a command it answers.
            (Some(Pending::Answer(r)), _) if line.held => {
                self.notes.push(Note::Count(Count::Nat64Answered));
                self.rewrite_note(RewriteKind::Answer, line.bytes, &r.line(eol));
                LineAction::Replace(whole, r.line(eol))
            }
            (Some(p @ (Pending::Epsv64 | Pending::Lpsv64)), 227) if line.held => {
                let Ok((_, port)) = rfc6384::parse_227(line.bytes) else {
                    self.refuse(RefusalReason::Malformed, line.bytes);
                    return Verdict::Line(LineAction::Keep);
                };
                // RFC 6384 §6: the client connects to the address it reaches the server at; the
                // 227's address is not carried (a server naming another host, or its own private
                // address, cannot point the IPv6 client elsewhere).
                let with = match (p, self.nat64) {
                    (Pending::Lpsv64, Some(n)) => rfc6384::reply_228(n.server6, port, eol),
                    _ => rfc6384::reply_229(port, eol),
                };
                self.notes.push(Note::Count(Count::Nat64Reply));
                self.rewrite_note(RewriteKind::Pasv227, line.bytes, &with);
                LineAction::Replace(whole, with)
            }
            (Some(Pending::Pasv64), 229) if line.held => {
                // The IPv4 ALG's 229 rule (policy, pinhole for the client, public port), then the
                // reply the client asked for: a 227 naming the public address (`announced`).
                return self.ask(Awaiting::Pasv64, Kind::Epsv229, line);
            }
            (Some(Pending::Pasv), 227) if line.held && !self.client_inside => {
                return self.ask(Awaiting::Passive, Kind::Pasv227, line);
            }
            (Some(Pending::Epsv), 229) if line.held && !self.client_inside => {
                return self.ask(Awaiting::Passive, Kind::Epsv229, line);
            }
            // A client-side connection (NAT64 holds its replies) leaves the server's 227/229 as sent.
            (Some(Pending::Pasv), 227) | (Some(Pending::Epsv), 229) => LineAction::Keep,
            (Some(Pending::Port(Some(port))), c) if !(200..300).contains(&c) => {
                // The server refused the PORT/EPRT: nothing will connect, so the pinhole goes now.
                self.notes.push(Note::Completion { public_port: port, reply: c });
                self.pinholes.retain(|&p| p != port);
                LineAction::Keep
            }
            (Some(Pending::Auth), 234) => {
                self.notes.push(Note::State(StateChange::Opaque));
                LineAction::Keep
            }
            (Some(Pending::Ccc), 200) => {
                self.notes.push(Note::State(StateChange::Clear));
                LineAction::Keep
            }
            _ => self.unsolicited(line),
        };
        Verdict::Line(action)
    }

    /// A reply announcing an endpoint: handed out for placing (its action comes from `announced`), or
    /// refused here and kept.
    fn ask(&mut self, awaiting: Awaiting, kind: Kind, line: &Line<'_>) -> Verdict<Format> {
        match self.announce(kind, line) {
            Some(ann) => {
                self.awaiting = Some(awaiting);
                Verdict::Announce(ann)
            }
            None => Verdict::Line(LineAction::Keep),
        }
    }

    /// A reply line that is not the final one (a 1xx, a line of a multi-line reply). When it answers
    /// a NOOP the gateway substituted, the gateway's one-line answer replaces the whole reply: the
    /// line goes (RFC 6384 §12).
    fn interim(&mut self, line: &Line<'_>) -> LineAction {
        if line.held && matches!(self.pending.front(), Some(Pending::Answer(_))) {
            return LineAction::Replace(0..line.bytes.len(), Vec::new());
        }
        self.unsolicited(line)
    }

    /// A held 227/229 that answers no PASV/EPSV is left alone and counted (a NAT64 connection holds
    /// every reply: only a 227/229 counts).
    fn unsolicited(&mut self, line: &Line<'_>) -> LineAction {
        if line.held && parse::candidate(line.bytes, false) == parse::Candidate::Maybe {
            self.notes.push(Note::Refusal(Refusal {
                reason: RefusalReason::Unsolicited,
                line: parse::redacted(line.bytes),
                message: "227/229 answers no pending PASV/EPSV; left as sent",
            }));
        }
        LineAction::Keep
    }

    /// RFC 6384 for a complete, held client line of a NAT64 connection. `None`: not one of its
    /// commands (or translation is disabled for it): the IPv4 rules apply.
    fn on_command64(&mut self, n: Nat64Ftp, line: &Line<'_>) -> Option<Step> {
        let whole = 0..line.bytes.len();
        let eol = rfc6384::line_end(line.bytes);
        let noop = |r: GatewayReply| {
            let (p, a) = gateway_answers(line.bytes, r);
            Some(Step::Done(p, a))
        };
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
                    self.notes.push(Note::Count(Count::Nat64Epsv));
                    let with = rfc6384::pasv_line(eol);
                    self.rewrite_note(RewriteKind::Epsv, line.bytes, &with);
                    Some(Step::Done(Pending::Epsv64, LineAction::Replace(whole, with)))
                }
                EpsvAction::Answer(r) => noop(r),
                EpsvAction::Pass => None,
            },
            Command64::Lpsv => {
                self.notes.push(Note::Count(Count::Nat64Epsv));
                let with = rfc6384::pasv_line(eol);
                self.rewrite_note(RewriteKind::Lpsv, line.bytes, &with);
                Some(Step::Done(Pending::Lpsv64, LineAction::Replace(whole, with)))
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
                        self.refuse(RefusalReason::ThirdHost, line.bytes);
                        return noop(GatewayReply::PortRefused);
                    }
                    Err(parse::ParseError::WrongFamily) => {
                        self.refuse(RefusalReason::WrongFamily, line.bytes);
                        return noop(if lprt { GatewayReply::LprtFamily } else { GatewayReply::PortRefused });
                    }
                    Err(_) => {
                        self.refuse(RefusalReason::Malformed, line.bytes);
                        return noop(GatewayReply::PortRefused);
                    }
                };
                if !self.greeted {
                    // As for PORT: nothing has shown this is an FTP server yet.
                    self.refuse(RefusalReason::NotFtp, line.bytes);
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
                match self.announce(Kind::Port, &synthetic) {
                    Some(mut ann) => {
                        ann.subject = Some(stand_in.clone());
                        Some(Step::Ask(Awaiting::Eprt64 { stand_in }, ann))
                    }
                    None => noop(GatewayReply::PortRefused),
                }
            }
        }
    }

    /// The mirror of [`Self::on_command64`] for an IPv4 client of an IPv6 server (`rfc6384`'s header).
    /// `None`: the IPv4 rules apply (EPSV and its 229, everything else).
    fn on_command64_server(&mut self, n: Nat64Ftp, line: &Line<'_>) -> Option<Step> {
        let (whole, eol) = (0..line.bytes.len(), rfc6384::line_end(line.bytes));
        let cmd = parse::classify_command(line.bytes);
        match cmd {
            Command::Pasv => {
                self.notes.push(Note::Count(Count::Nat64Epsv));
                let with = rfc6384::epsv_line(eol);
                self.rewrite_note(RewriteKind::Pasv, line.bytes, &with);
                Some(Step::Done(Pending::Pasv64, LineAction::Replace(whole, with)))
            }
            Command::Epsv if rfc6384::parse_epsv(line.bytes) == Ok(rfc6384::EpsvArg::Family(1)) => {
                let with = rfc6384::epsv_line(eol);
                self.rewrite_note(RewriteKind::Epsv, line.bytes, &with);
                Some(Step::Done(Pending::Epsv, LineAction::Replace(whole, with)))
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
                    // Another host (RFC 2577 §3) and low ports are the generic checks of the
                    // announcement below.
                    Ok(_) => None,
                    Err(parse::ParseError::WrongFamily) => Some(RefusalReason::WrongFamily),
                    Err(_) => Some(RefusalReason::Malformed),
                };
                if let Some(r) = reason {
                    self.refuse(r, line.bytes);
                    let (p, a) = gateway_answers(line.bytes, GatewayReply::PortRefused);
                    return Some(Step::Done(p, a));
                }
                let a = parsed.ok()?;
                let kind = if cmd == Command::Port { RewriteKind::Port } else { RewriteKind::Eprt };
                // The server's data connection to the client's RFC 6052 address leaves as any inside
                // host's connection does (a mapping of its own): no pinhole is needed.
                let ann = Announcement {
                    kind,
                    span: a.span.clone(),
                    endpoint: Endpoint::new(self.resolve(a.addr, self.client), a.port),
                    sender: self.client,
                    peer: self.server,
                    pinhole: false,
                    format: Format { kind: a.kind, delim: a.delim },
                    subject: None,
                };
                Some(Step::Ask(Awaiting::Eprt6 { kind, client6: n.client6, port: a.port }, ann))
            }
            _ => None,
        }
    }

    /// "0,0,0,0" is the common shorthand for "the address of this control connection".
    fn resolve(&self, addr: Option<Ipv4Addr>, sender: Ipv4Addr) -> Ipv4Addr {
        match addr {
            Some(a) if a.is_unspecified() => sender,
            Some(a) => a,
            None => sender,
        }
    }

    /// Notes an RFC 6384 rewrite of a whole line.
    fn rewrite_note(&mut self, kind: RewriteKind, line: &[u8], with: &[u8]) {
        self.notes.push(Note::Rewrite(LineRewrite {
            kind,
            old: parse::redacted(line),
            new: parse::redacted(with),
            delta: with.len() as i64 - line.len() as i64,
            inside: Endpoint::new(if self.client_inside { self.client } else { self.server }, 0),
        }));
    }

    fn refuse(&mut self, reason: RefusalReason, line: &[u8]) {
        self.notes.push(Note::Refusal(Refusal { reason, line: parse::redacted(line), message: REFUSED }));
    }

    /// Checks an announcement's FTP syntax: the announcement to place, or `None` (refused).
    fn announce(&mut self, kind: Kind, line: &Line<'_>) -> Option<Announcement<Format>> {
        if line.truncated {
            self.refuse(RefusalReason::Overlong, line.bytes);
            return None;
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
                self.refuse(RefusalReason::WrongFamily, line.bytes);
                return None;
            }
            Err(_) => {
                self.refuse(RefusalReason::Malformed, line.bytes);
                return None;
            }
        };
        // The announcing side's own address; its data endpoint must be on the same host (checked,
        // with the low-port policy, where the pinhole is opened).
        let (sender, peer) = match kind {
            Kind::Port | Kind::Eprt => (self.client, self.server),
            Kind::Pasv227 | Kind::Epsv229 => (self.server, self.client),
        };
        let rewrite_kind = match kind {
            Kind::Port => RewriteKind::Port,
            Kind::Eprt => RewriteKind::Eprt,
            Kind::Pasv227 => RewriteKind::Pasv227,
            Kind::Epsv229 => RewriteKind::Epsv229,
        };
        Some(Announcement {
            kind: rewrite_kind,
            span: ann.span,
            endpoint: Endpoint::new(self.resolve(ann.addr, sender), ann.port),
            sender,
            peer,
            pinhole: true,
            format: Format { kind, delim: ann.delim },
            subject: None,
        })
    }
}

impl Alg for Control {
    type Format = Format;

    /// The client always opens the control connection: `Original` carries commands, `Reply` replies.
    fn on_line(&mut self, dir: Dir, line: &Line<'_>) -> Outcome<Format> {
        let v = match dir {
            Dir::Original => self.command(line),
            Dir::Reply => self.reply(line),
        };
        self.outcome(v)
    }

    fn announced(&mut self, line: &[u8], placed: Option<Placed>) -> Outcome<Format> {
        let whole = 0..line.len();
        let eol = rfc6384::line_end(line);
        let action = match (self.awaiting.take(), placed) {
            (Some(Awaiting::Port), Some(Placed::Opened { public, span, with })) => {
                self.push_pending(Pending::Port(Some(public.port)));
                LineAction::Replace(span, with)
            }
            (Some(Awaiting::Port), _) => {
                self.push_pending(Pending::Port(None));
                LineAction::Keep
            }
            (Some(Awaiting::Passive), Some(Placed::Opened { span, with, .. })) => {
                LineAction::Replace(span, with)
            }
            (Some(Awaiting::Eprt64 { stand_in }), Some(Placed::Opened { public, span, with })) => {
                let mut out = stand_in[..span.start].to_vec();
                out.extend_from_slice(&with);
                out.extend_from_slice(&stand_in[span.end..]);
                self.notes.push(Note::Count(Count::Nat64Eprt));
                self.push_pending(Pending::Port(Some(public.port)));
                LineAction::Replace(whole, out)
            }
            (Some(Awaiting::Eprt64 { .. }), _) | (Some(Awaiting::Eprt6 { .. }), None) => {
                let (p, a) = gateway_answers(line, GatewayReply::PortRefused);
                self.push_pending(p);
                a
            }
            (Some(Awaiting::Pasv64), Some(Placed::Opened { public, .. })) => {
                let with = rfc6384::reply_227(public.addr, public.port, eol);
                self.notes.push(Note::Count(Count::Nat64Reply));
                self.rewrite_note(RewriteKind::Epsv229, line, &with);
                LineAction::Replace(whole, with)
            }
            (Some(Awaiting::Eprt6 { kind, client6, port }), Some(_)) => {
                let with = rfc6384::eprt6_line(client6, port, eol);
                self.notes.push(Note::Count(Count::Nat64Eprt));
                self.rewrite_note(kind, line, &with);
                self.push_pending(Pending::Port(None));
                LineAction::Replace(whole, with)
            }
            // Refused, or nothing was asked: the line goes as sent.
            _ => LineAction::Keep,
        };
        self.outcome(Verdict::Line(action))
    }

    fn format(&self, format: &Format, public: Endpoint) -> Vec<u8> {
        parse::format_span(format.kind, public.addr, public.port, format.delim)
    }

    fn formatted_len(&self, format: &Format, public: Endpoint) -> usize {
        parse::formatted_len(format.kind, public.addr, public.port)
    }

    fn redact(&self, line: &[u8]) -> String {
        parse::redacted(line)
    }

    fn change_message(&self, change: StateChange) -> &'static str {
        match change {
            StateChange::Opaque => "AUTH TLS accepted: control connection is opaque",
            StateChange::Clear => "CCC accepted: control connection is cleartext",
            StateChange::NotProtocol => "not FTP: control connection is opaque for good",
        }
    }

    fn pinhole_ports(&mut self) -> &mut VecDeque<u16> {
        &mut self.pinholes
    }
}

#[cfg(test)]
mod tests {
    //! Lines in, findings out: no gateway state is needed to test the ALG.

    use super::*;
    use crate::wire::SeqNum;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

    fn held(bytes: &[u8]) -> Line<'_> {
        Line { bytes, start: SeqNum::new(0), held: true, truncated: false, straddling: false }
    }

    fn client(c: &mut Control, bytes: &[u8]) -> Outcome<Format> {
        c.on_line(Dir::Original, &held(bytes))
    }

    fn server(c: &mut Control, bytes: &[u8]) -> Outcome<Format> {
        c.on_line(Dir::Reply, &held(bytes))
    }

    /// A control connection of an inside client, past the greeting.
    fn greeted() -> Control {
        let mut c = Control::new(true, CLIENT, SERVER);
        c.greeted();
        c
    }

    fn keep() -> Verdict<Format> {
        Verdict::Line(LineAction::Keep)
    }

    fn refused(o: &Outcome<Format>) -> Vec<RefusalReason> {
        o.notes
            .iter()
            .filter_map(|n| match n {
                Note::Refusal(r) => Some(r.reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_port_is_an_announcement_and_a_refused_port_a_completion() {
        let mut c = Control::new(true, CLIENT, SERVER);
        // Before the greeting nothing shows this is FTP (NAT Slipstreaming).
        let o = client(&mut c, b"PORT 10,0,0,2,19,136\r\n");
        assert_eq!((refused(&o), o.verdict), (vec![RefusalReason::NotFtp], keep()));
        assert_eq!(server(&mut c, b"220 ready\r\n").verdict, keep());
        let o = client(&mut c, b"PORT 10,0,0,2,19,136\r\n");
        let Verdict::Announce(ann) = o.verdict else { panic!("no announcement: {o:?}") };
        assert!(o.notes.is_empty());
        assert_eq!((ann.kind, ann.span.clone()), (RewriteKind::Port, 5..20));
        assert_eq!((ann.endpoint, ann.sender, ann.peer), (Endpoint::new(CLIENT, 5000), CLIENT, SERVER));
        assert!(ann.pinhole);
        // The generic code placed it on port 40000 and formatted it.
        let public = Endpoint::new(Ipv4Addr::new(198, 51, 100, 1), 40000);
        let with = c.format(&ann.format, public);
        assert_eq!(with, b"198,51,100,1,156,64");
        c.pinhole_ports().push_back(40000);
        let o = c.announced(b"PORT 10,0,0,2,19,136\r\n", Some(Placed::Opened { public, span: 5..20, with }));
        assert_eq!(o.verdict, Verdict::Line(LineAction::Replace(5..20, b"198,51,100,1,156,64".to_vec())));
        // The first PORT's reply (pipelined before the greeting, it waited): no pinhole to close.
        assert!(server(&mut c, b"500 Illegal PORT command.\r\n").notes.is_empty());
        // The server refuses the second: nothing will connect.
        let o = server(&mut c, b"500 Illegal PORT command.\r\n");
        assert_eq!(o.notes, vec![Note::Completion { public_port: 40000, reply: 500 }]);
        assert!(c.pinholes().is_empty());
    }

    #[test]
    fn another_hosts_endpoint_is_reported_as_announced_for_the_generic_check() {
        let mut c = greeted();
        let o = client(&mut c, b"PORT 192,0,2,9,0,21\r\n");
        let Verdict::Announce(ann) = o.verdict else { panic!("no announcement: {o:?}") };
        assert_eq!((ann.endpoint, ann.sender), (Endpoint::new(Ipv4Addr::new(192, 0, 2, 9), 21), CLIENT));
        // "0,0,0,0" stands for the sender.
        let o = client(&mut c, b"PORT 0,0,0,0,19,136\r\n");
        let Verdict::Announce(ann) = o.verdict else { panic!("no announcement: {o:?}") };
        assert_eq!(ann.endpoint, Endpoint::new(CLIENT, 5000));
        // Refused by the generic code: the PORT's reply then answers a PORT with no pinhole.
        assert_eq!(c.announced(b"PORT 0,0,0,0,19,136\r\n", None).verdict, keep());
        assert!(server(&mut c, b"200 ok\r\n").notes.is_empty());
    }

    #[test]
    fn auth_tls_ccc_and_not_ftp_are_state_changes() {
        let mut c = greeted();
        client(&mut c, b"AUTH TLS\r\n");
        assert_eq!(server(&mut c, b"234 go\r\n").notes, vec![Note::State(StateChange::Opaque)]);
        client(&mut c, b"CCC\r\n");
        assert_eq!(server(&mut c, b"200 clear\r\n").notes, vec![Note::State(StateChange::Clear)]);
        let o = client(&mut c, b"GET / HTTP/1.1\r\n");
        assert_eq!(refused(&o), vec![RefusalReason::NotFtp]);
        assert_eq!(o.notes.last(), Some(&Note::State(StateChange::NotProtocol)));
        assert_eq!(o.verdict, Verdict::Line(LineAction::Dead));
    }
}
