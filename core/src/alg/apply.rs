//! Applying an ALG's findings: the deciding half of every ALG.
//!
//! Owns: what the gateway does with what an ALG found in a line ([`super::finding`]) — the policy
//! checks that are not protocol syntax (an endpoint on another host, low ports, pinholes per
//! connection), opening the pinhole ([`Pinholes::open`], preferring ports whose text keeps the line's
//! length), closing the pinholes a refused announcement or a closed connection leaves, counting,
//! logging (targets `ftpnat::alg` and `ftpnat::pinhole`) and recording events, then asking the ALG
//! ([`Alg`]) to format the replacement.
//! Must not: parse or format a protocol (the ALG does, through the trait), touch packets or streams
//! (the stream layer does), or keep per-connection state (the ALG keeps it, as plain data).

use std::ops::Range;

use super::finding::{
    Alg, Announcement, Count, LineAction, LineRewrite, Note, Outcome, Placed, Refusal, StateChange, Verdict,
    REFUSED,
};
use super::{AlgCtx, Pinholes};
use crate::events::{Event, RewriteKind};
use crate::flow::{Dir, Endpoint};
use crate::metrics::RefusalReason;

/// State changes found in the lines of one segment: taken when the segment is done, each once, in
/// this order whatever order the lines came in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub opaque: bool,
    pub clear: bool,
    pub dead: bool,
}

/// Applies `found`, what `alg` found in `line` (travelling in `dir`), and returns what to do with the
/// line. State changes go to `changes`, for after the segment.
pub fn line<A: Alg>(
    alg: &mut A,
    dir: Dir,
    line: &[u8],
    found: Outcome<A::Format>,
    ctx: &mut AlgCtx<'_>,
    changes: &mut Changes,
) -> LineAction {
    if dir == Dir::Original {
        // The connection's opener speaks commands (a client always opens the control connection).
        tracing::trace!(target: "ftpnat::alg", control = %ctx.control, line = %alg.redact(line), "command");
    }
    let mut found = found;
    loop {
        for n in found.notes.drain(..) {
            note(n, ctx, changes);
        }
        match found.verdict {
            Verdict::Line(action) => return within(action, line.len()),
            Verdict::Announce(ann) => {
                let placed = announce(alg, line, ann, ctx);
                found = alg.announced(line, placed);
            }
        }
    }
}

/// An action whose range lies outside the line is not applied: the line goes as sent.
fn within(action: LineAction, len: usize) -> LineAction {
    match action {
        LineAction::Replace(r, _) if !fits(&r, len) => LineAction::Keep,
        a => a,
    }
}

fn fits(r: &Range<usize>, len: usize) -> bool {
    r.start <= r.end && r.end <= len
}

fn note(n: Note, ctx: &mut AlgCtx<'_>, changes: &mut Changes) {
    match n {
        Note::Refusal(r) => refuse(ctx, r),
        Note::Rewrite(r) => rewritten(ctx, r),
        Note::Count(c) => {
            let m = &mut *ctx.metrics;
            match c {
                Count::Nat64Epsv => m.alg_nat64_epsv += 1,
                Count::Nat64Eprt => m.alg_nat64_eprt += 1,
                Count::Nat64Reply => m.alg_nat64_227 += 1,
                Count::Nat64Answered => m.alg_nat64_answered += 1,
            }
        }
        Note::State(StateChange::Opaque) => changes.opaque = true,
        Note::State(StateChange::Clear) => changes.clear = true,
        Note::State(StateChange::NotProtocol) => changes.dead = true,
        Note::Completion { public_port, reply } => {
            let public = Endpoint::new(ctx.public_ip, public_port);
            if ctx.pinholes.get(public).is_some_and(|p| p.control == ctx.control) {
                ctx.pinholes.remove(ctx.nat, public, ctx.now);
                ctx.metrics.pinholes_refused_by_server += 1;
                tracing::debug!(target: "ftpnat::pinhole", event = "refused", control = %ctx.control, public_port,
                    reply, "server refused the announcement; pinhole removed");
            }
        }
    }
}

/// Counts and logs a state change of the connection (when the segment that carried it is done).
pub fn changed(ctx: &mut AlgCtx<'_>, change: StateChange) {
    match change {
        StateChange::Opaque => {
            ctx.metrics.alg_tls_opaque += 1;
            tracing::info!(target: "ftpnat::alg", control = %ctx.control, "AUTH TLS accepted: control connection is opaque");
        }
        StateChange::Clear => {}
        StateChange::NotProtocol => {
            tracing::info!(target: "ftpnat::alg", control = %ctx.control, "not FTP: control connection is opaque for good");
        }
    }
}

fn refuse(ctx: &mut AlgCtx<'_>, r: Refusal) {
    let Refusal { reason, line, message } = r;
    ctx.metrics.refuse(reason);
    tracing::warn!(target: "ftpnat::alg", control = %ctx.control, reason = reason.name(), line = %line, "{}", message);
    let control = ctx.control;
    ctx.events.push(|| Event::Refusal { control, reason, line });
}

fn refuse_line<A: Alg>(alg: &A, ctx: &mut AlgCtx<'_>, reason: RefusalReason, line: &[u8]) {
    refuse(ctx, Refusal { reason, line: alg.redact(line), message: REFUSED });
}

/// Logs and records a whole-line rewrite.
fn rewritten(ctx: &mut AlgCtx<'_>, r: LineRewrite) {
    let LineRewrite { kind, old, new, delta, inside } = r;
    tracing::info!(target: "ftpnat::alg", control = %ctx.control, kind = kind.name(), %old, %new, "nat64 rewrite");
    let control = ctx.control;
    ctx.events.push(|| Event::Rewrite { control, kind, old, new, delta, inside, public_port: 0 });
}

/// Checks an announcement against policy, opens its pinhole and has the ALG format the replacement.
/// `None`: refused (logged and counted), nothing opened.
fn announce<A: Alg>(
    alg: &mut A,
    line: &[u8],
    ann: Announcement<A::Format>,
    ctx: &mut AlgCtx<'_>,
) -> Option<Placed> {
    let subject = ann.subject.as_deref().unwrap_or(line);
    if ann.endpoint.addr != ann.sender {
        // RFC 2577 §3: an announcement naming another host is the FTP bounce attack.
        refuse_line(alg, ctx, RefusalReason::ThirdHost, subject);
        return None;
    }
    if ann.endpoint.port < 1024 && ctx.policy.refuse_low_ports {
        // RFC 2577 §3: servers should refuse data ports below 1024; so does the gateway, and the same
        // for a 227/229 of an inside server (a pinhole to a privileged port of it).
        refuse_line(alg, ctx, RefusalReason::LowPort, subject);
        return None;
    }
    if !ann.pinhole {
        return Some(Placed::Allowed);
    }
    if !fits(&ann.span, subject.len()) {
        // An ALG's span outside its line: nothing to rewrite, so nothing is opened (fail closed).
        refuse_line(alg, ctx, RefusalReason::Malformed, subject);
        return None;
    }
    let public_ip = ctx.public_ip;
    let span_len = ann.span.len();
    let inside = Endpoint::new(ann.sender, ann.endpoint.port);
    let opened = {
        let alg = &*alg;
        let prefer = |p: u16| alg.formatted_len(&ann.format, Endpoint::new(public_ip, p)) == span_len;
        Pinholes::open(ctx, ann.peer, inside, ann.kind, &prefer)
    };
    let port = match opened {
        Ok(p) => p,
        Err(reason) => {
            refuse_line(alg, ctx, reason, subject);
            return None;
        }
    };
    let ports = alg.pinhole_ports();
    // The same data endpoint announced again is one pinhole, not two: trimming a duplicate entry
    // must not close the live one.
    ports.retain(|&p| p != port);
    ports.push_back(port);
    while ports.len() > ctx.policy.max_pinholes_per_conn {
        // Clients may pipeline several PORT+RETR pairs; the oldest announcement goes first.
        if let Some(old) = ports.pop_front() {
            let public = Endpoint::new(ctx.public_ip, old);
            if ctx.pinholes.get(public).is_some_and(|p| p.control == ctx.control) {
                ctx.pinholes.remove(ctx.nat, public, ctx.now);
                ctx.metrics.pinholes_replaced += 1;
            }
        }
    }
    let public = Endpoint::new(public_ip, port);
    let with = alg.format(&ann.format, public);
    let m = &mut *ctx.metrics;
    match ann.kind {
        RewriteKind::Port => m.alg_rewrites_port += 1,
        RewriteKind::Eprt => m.alg_rewrites_eprt += 1,
        RewriteKind::Pasv227 => m.alg_rewrites_227 += 1,
        RewriteKind::Epsv229 => m.alg_rewrites_229 += 1,
        // Whole-line kinds are never announcements with a pinhole.
        _ => {}
    }
    if with.len() == span_len {
        m.alg_rewrites_zero_delta += 1;
    }
    let old = &subject[ann.span.clone()];
    tracing::info!(target: "ftpnat::alg", control = %ctx.control, kind = ann.kind.name(),
        old = %String::from_utf8_lossy(old),
        new = %String::from_utf8_lossy(&with),
        delta = with.len() as i64 - span_len as i64,
        inside = %inside, public_port = port, "rewrite");
    let control = ctx.control;
    ctx.events.push(|| Event::Rewrite {
        control,
        kind: ann.kind,
        old: String::from_utf8_lossy(old).into_owned(),
        new: String::from_utf8_lossy(&with).into_owned(),
        delta: with.len() as i64 - span_len as i64,
        inside,
        public_port: port,
    });
    Some(Placed::Opened { public, span: ann.span, with })
}

/// The control connection is gone: so are the pinholes it opened that no data connection used.
pub fn close(ctx: &mut AlgCtx<'_>, ports: impl IntoIterator<Item = u16>) {
    for port in ports {
        let public = Endpoint::new(ctx.public_ip, port);
        if ctx.pinholes.get(public).is_some_and(|p| p.control == ctx.control) {
            ctx.pinholes.remove(ctx.nat, public, ctx.now);
            ctx.metrics.pinholes_closed_with_control += 1;
        }
    }
}

