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
pub fn changed<A: Alg>(alg: &A, ctx: &mut AlgCtx<'_>, change: StateChange) {
    // One log call site each: the log's rate limit keeps a window per call site.
    match change {
        StateChange::Opaque => {
            ctx.metrics.alg_tls_opaque += 1;
            tracing::info!(target: "ftpnat::alg", control = %ctx.control, "{}", alg.change_message(change));
        }
        StateChange::Clear => {}
        StateChange::NotProtocol => {
            tracing::info!(target: "ftpnat::alg", control = %ctx.control, "{}", alg.change_message(change));
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

#[cfg(test)]
mod tests {
    //! The generic half from the adversary's side, with an ALG that announces whatever it is told:
    //! whatever an ALG hands over, the policy holds.

    use std::collections::VecDeque;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::FtpPolicy;
    use crate::events::Events;
    use crate::flow::ConnId;
    use crate::metrics::Metrics;
    use crate::nat::{Allocation, Nat, PortRange, Setup};
    use crate::time::Instant;

    const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
    const LINE: &[u8] = b"ANNOUNCE 5000\r\n";

    /// An ALG whose announcements the test writes; it formats a port as its decimal digits.
    #[derive(Default)]
    struct Fake {
        ports: VecDeque<u16>,
        placed: Vec<Option<Placed>>,
    }

    impl Alg for Fake {
        type Format = ();
        fn on_line(&mut self, _: Dir, _: &crate::alg::ftp::framer::Line<'_>) -> Outcome<()> {
            Outcome { notes: Vec::new(), verdict: Verdict::Line(LineAction::Keep) }
        }
        fn announced(&mut self, _line: &[u8], placed: Option<Placed>) -> Outcome<()> {
            let action = match &placed {
                Some(Placed::Opened { span, with, .. }) => LineAction::Replace(span.clone(), with.clone()),
                _ => LineAction::Keep,
            };
            self.placed.push(placed);
            Outcome { notes: Vec::new(), verdict: Verdict::Line(action) }
        }
        fn format(&self, _: &(), public: Endpoint) -> Vec<u8> {
            public.port.to_string().into_bytes()
        }
        fn formatted_len(&self, f: &(), public: Endpoint) -> usize {
            self.format(f, public).len()
        }
        fn redact(&self, line: &[u8]) -> String {
            String::from_utf8_lossy(line).into_owned()
        }
        fn change_message(&self, _: StateChange) -> &'static str {
            "changed"
        }
        fn pinhole_ports(&mut self) -> &mut VecDeque<u16> {
            &mut self.ports
        }
    }

    struct Gateway {
        nat: Nat,
        pinholes: Pinholes,
        metrics: Metrics,
        policy: FtpPolicy,
        events: Events,
    }

    impl Gateway {
        fn new() -> Gateway {
            let mut events = Events::default();
            events.set_enabled(true);
            Gateway {
                nat: Nat::with_setup(&Setup {
                    pool: vec![PUBLIC],
                    range: PortRange::new(1024, 65535).expect("valid"),
                    slice: None,
                    allocation: Allocation::Dynamic,
                    inside: Vec::new(),
                    host_quota: usize::MAX,
                }),
                pinholes: Pinholes::default(),
                metrics: Metrics::default(),
                policy: FtpPolicy::default(),
                events,
            }
        }

        /// `alg` of control connection `control` announces `ann` in [`LINE`].
        fn announce(&mut self, alg: &mut Fake, control: ConnId, ann: Announcement<()>) -> LineAction {
            self.run(alg, control, Outcome { notes: Vec::new(), verdict: Verdict::Announce(ann) })
        }

        fn run(&mut self, alg: &mut Fake, control: ConnId, found: Outcome<()>) -> LineAction {
            line(alg, Dir::Original, LINE, found, &mut self.ctx(control), &mut Changes::default())
        }

        fn ctx(&mut self, control: ConnId) -> AlgCtx<'_> {
            AlgCtx {
                nat: &mut self.nat,
                pinholes: &mut self.pinholes,
                metrics: &mut self.metrics,
                policy: &self.policy,
                public_ip: PUBLIC,
                now: Instant::from_secs(1),
                control,
                events: &mut self.events,
            }
        }

        fn refusals(&mut self) -> Vec<RefusalReason> {
            std::iter::from_fn(|| self.events.pop())
                .filter_map(|e| match e {
                    Event::Refusal { reason, .. } => Some(reason),
                    _ => None,
                })
                .collect()
        }
    }

    /// A client announcing its own port 5000 (the span is "5000" in [`LINE`]).
    fn port(addr: Ipv4Addr, port: u16) -> Announcement<()> {
        Announcement {
            kind: RewriteKind::Port,
            span: 9..13,
            endpoint: Endpoint::new(addr, port),
            sender: CLIENT,
            peer: SERVER,
            pinhole: true,
            format: (),
            subject: None,
        }
    }

    const A: ConnId = ConnId::new(1, 0);
    const B: ConnId = ConnId::new(2, 0);

    #[test]
    fn an_announcement_of_another_host_opens_nothing() {
        let (mut gw, mut alg) = (Gateway::new(), Fake::default());
        let action = gw.announce(&mut alg, A, port(Ipv4Addr::new(10, 0, 0, 99), 5000));
        assert_eq!(action, LineAction::Keep);
        assert!(gw.pinholes.is_empty());
        assert!(alg.ports.is_empty());
        assert_eq!(alg.placed, vec![None]);
        assert_eq!(gw.metrics.refused_of(RefusalReason::ThirdHost), 1);
        assert_eq!(gw.refusals(), vec![RefusalReason::ThirdHost]);
        // Nor does a check-only announcement (no pinhole) pass for another host.
        let ann = Announcement { pinhole: false, ..port(SERVER, 5000) };
        assert_eq!(gw.announce(&mut alg, A, ann), LineAction::Keep);
        assert_eq!(alg.placed[1], None);
    }

    #[test]
    fn a_low_port_is_refused_while_the_policy_says_so() {
        let (mut gw, mut alg) = (Gateway::new(), Fake::default());
        assert_eq!(gw.announce(&mut alg, A, port(CLIENT, 22)), LineAction::Keep);
        assert!(gw.pinholes.is_empty());
        assert_eq!(gw.refusals(), vec![RefusalReason::LowPort]);
        assert_eq!(gw.metrics.refused_of(RefusalReason::LowPort), 1);
        gw.policy.refuse_low_ports = false;
        let action = gw.announce(&mut alg, A, port(CLIENT, 22));
        let LineAction::Replace(span, with) = action else { panic!("not rewritten: {action:?}") };
        assert_eq!(span, 9..13);
        let public: u16 = String::from_utf8(with).unwrap().parse().unwrap();
        let p = gw.pinholes.get(Endpoint::new(PUBLIC, public)).expect("opened");
        assert_eq!((p.inside, p.peer, p.control), (Endpoint::new(CLIENT, 22), SERVER, A));
        assert_eq!(gw.metrics.alg_rewrites_port, 1);
    }

    #[test]
    fn trimming_closes_only_this_connections_oldest() {
        let mut gw = Gateway::new();
        gw.policy.max_pinholes_per_conn = 2;
        let (mut a, mut b) = (Fake::default(), Fake::default());
        gw.announce(&mut b, B, port(CLIENT, 6000));
        let bs = b.ports[0];
        // A stale entry of A's naming a port B's pinhole holds now (A's was used, the port reused).
        a.ports.push_back(bs);
        for p in [5001, 5002, 5003] {
            gw.announce(&mut a, A, port(CLIENT, p));
        }
        assert_eq!(a.ports.len(), 2);
        assert!(gw.pinholes.get(Endpoint::new(PUBLIC, bs)).is_some_and(|p| p.control == B), "B's survives");
        let mut live: Vec<u16> =
            gw.pinholes.iter().filter(|p| p.control == A).map(|p| p.inside.port).collect();
        live.sort();
        assert_eq!(live, vec![5002, 5003], "A's oldest went");
        assert_eq!(gw.metrics.pinholes_replaced, 1, "only the pinhole closed counts");
    }

    #[test]
    fn a_span_outside_the_line_is_not_applied() {
        let (mut gw, mut alg) = (Gateway::new(), Fake::default());
        for span in [9..99, Range { start: 12, end: 10 }] {
            let ann = Announcement { span, ..port(CLIENT, 5000) };
            assert_eq!(gw.announce(&mut alg, A, ann), LineAction::Keep);
        }
        assert!(gw.pinholes.is_empty(), "nothing opened for a span that is not there");
        assert_eq!(gw.metrics.refused_of(RefusalReason::Malformed), 2);
        // Nor is an action outside the line.
        let found = Outcome { notes: Vec::new(), verdict: Verdict::Line(LineAction::Replace(0..99, vec![])) };
        assert_eq!(gw.run(&mut alg, A, found), LineAction::Keep);
    }

    #[test]
    fn closing_a_connection_leaves_the_pinholes_of_others() {
        let mut gw = Gateway::new();
        let (mut a, mut b) = (Fake::default(), Fake::default());
        gw.announce(&mut a, A, port(CLIENT, 5001));
        gw.announce(&mut b, B, port(CLIENT, 6001));
        // A's list names B's port too (as a stale entry would).
        close(&mut gw.ctx(A), a.ports.iter().copied().chain(b.ports.iter().copied()));
        assert_eq!(gw.pinholes.iter().map(|p| p.control).collect::<Vec<_>>(), vec![B]);
        assert_eq!(gw.metrics.pinholes_closed_with_control, 1);
    }
}
