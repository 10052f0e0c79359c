//! What an ALG reports about one line, and the trait the generic code ([`super::apply`]) drives it by.
//!
//! Owns: the vocabulary between a protocol's ALG and the gateway — an [`Announcement`] of a data
//! endpoint (what to check, where its text is, how to format it again), a [`Refusal`], a whole-line
//! [`LineRewrite`] (NAT64's RFC 6384 translations), a [`StateChange`] (opaque after AUTH TLS, clear
//! after CCC, not the protocol at all), a completion (the peer refused an announcement: its pinhole
//! goes), [`Count`]s to bump, and the [`LineAction`] for the line. All plain data: an ALG returns these
//! and never holds `&mut Nat`, `&mut Metrics` or the event queue, so it can be tested with lines in
//! and findings out, and a second ALG plugs in beside FTP without touching the engine.
//! Must not: decide policy (low ports, pinhole limits), open or close pinholes, count, log or record
//! events — [`super::apply`] does all of that, the same way for every ALG.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::ops::Range;

// The stream layer's line (today in `alg::ftp::stream`, the framing every line-based ALG shares).
use crate::events::RewriteKind;
use crate::flow::{Dir, Endpoint};
use crate::metrics::RefusalReason;
use crate::wire::SeqNum;

/// A data endpoint announced in a line, for [`super::apply`] to check, open a pinhole for and have
/// formatted again with the public endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement<F> {
    /// What announced it (`port`, `eprt`, `227`, `229`): logs, events, the pinhole's kind, counters.
    pub kind: RewriteKind,
    /// The bytes of the announced endpoint within the line ([`Announcement::subject`] if set).
    pub span: Range<usize>,
    /// The endpoint as announced, an address the protocol lets stand for "this connection's" (FTP's
    /// 0,0,0,0 or none at all) already resolved to [`Announcement::sender`].
    pub endpoint: Endpoint,
    /// The announcing host's own address: a data endpoint elsewhere is refused (RFC 2577 §3).
    pub sender: Ipv4Addr,
    /// The only host whose connection the pinhole admits (the other end of the control connection).
    pub peer: Ipv4Addr,
    /// Open a pinhole and rewrite the span; `false`: only check the endpoint (NAT64 towards an IPv6
    /// server: the data connection leaves through a mapping of its own).
    pub pinhole: bool,
    /// What the ALG needs to format the span again ([`Alg::format`]).
    pub format: F,
    /// The line the span is in when it is not the line received (NAT64: a PORT the ALG built).
    pub subject: Option<Vec<u8>>,
}

/// A line the gateway leaves as sent (no pinhole, no rewrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// The line, redacted for logs and events.
    pub line: String,
    /// The log line's message.
    pub message: &'static str,
}

/// The message of a refusal that leaves the line as sent with no pinhole.
pub const REFUSED: &str = "ALG refused line; left as sent, no pinhole";

/// A whole line replaced by another (NAT64's RFC 6384 translations): logged and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRewrite {
    pub kind: RewriteKind,
    /// The line before and after, redacted.
    pub old: String,
    pub new: String,
    /// Length change of the line.
    pub delta: i64,
    /// The inside host the connection belongs to (port 0: no pinhole).
    pub inside: Endpoint,
}

/// A counter an ALG asks to bump (the generic ones — rewrites by kind, refusals, pinholes — are
/// counted by [`super::apply`] from the findings themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// An EPSV, LPSV or PASV translated (`alg_nat64_epsv`).
    Nat64Epsv,
    /// An EPRT, LPRT or PORT translated (`alg_nat64_eprt`).
    Nat64Eprt,
    /// A passive reply translated (`alg_nat64_227`).
    Nat64Reply,
    /// A reply the gateway answered in the server's place (`alg_nat64_answered`).
    Nat64Answered,
}

/// A change of the whole connection, taken once the segment carrying its line is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    /// Encrypted from now on (AUTH TLS accepted, RFC 4217 §4): both directions opaque.
    Opaque,
    /// Clear again (CCC accepted, RFC 4217 §11).
    Clear,
    /// Not the ALG's protocol: opaque for good.
    NotProtocol,
}

/// Something found in a line, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Refusal(Refusal),
    Rewrite(LineRewrite),
    Count(Count),
    State(StateChange),
    /// The peer refused the announcement whose pinhole is on `public_port` (reply `reply`): nothing
    /// will connect, so the pinhole goes now.
    Completion {
        public_port: u16,
        reply: u16,
    },
}

/// A complete line of an ALG's protocol, as its framer hands it over.
pub struct Line<'a> {
    /// The line's bytes including its LF (truncated to the maximum line length if longer).
    pub bytes: &'a [u8],
    /// Sequence number of its first byte.
    pub start: SeqNum,
    /// The line was held back, so it may still be rewritten.
    pub held: bool,
    /// The line was longer than `bytes`.
    pub truncated: bool,
    /// The line's start was not seen (the first line after a pickup or a gap): it may be the tail of a
    /// line. It is handed over for bookkeeping only (a reply still answers its command); nothing in it
    /// is rewritten or judged.
    pub straddling: bool,
}

/// What to do with the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineAction {
    Keep,
    /// Replace this byte range of the line with these bytes.
    Replace(Range<usize>, Vec<u8>),
    /// Keep it, and parse nothing after it ([`StateChange::NotProtocol`]).
    Dead,
}

/// The line's verdict: an action, or an announcement the generic code must place first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<F> {
    Line(LineAction),
    /// Check it, open its pinhole, then call [`Alg::announced`] for the action.
    Announce(Announcement<F>),
}

/// An ALG's findings for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<F> {
    pub notes: Vec<Note>,
    pub verdict: Verdict<F>,
}

/// An announcement the generic code accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// A pinhole is open on `public`; `with` replaces `span` of the announcement's subject.
    Opened { public: Endpoint, span: Range<usize>, with: Vec<u8> },
    /// Checked and allowed; no pinhole ([`Announcement::pinhole`] was `false`).
    Allowed,
}

/// An ALG as the generic code sees it: complete lines in, findings out, and the formatting of a
/// placed announcement. It keeps its per-connection state as plain data and holds nothing of the
/// gateway's.
pub trait Alg {
    /// What the ALG keeps of an announcement to format it again (FTP: the syntax and delimiter).
    type Format;

    /// What the ALG finds in a complete line travelling in `dir` (`Original`: from the side that
    /// opened the connection).
    fn on_line(&mut self, dir: Dir, line: &Line<'_>) -> Outcome<Self::Format>;

    /// The announcement of the last [`Verdict::Announce`] was placed (`Some`) or refused (`None`,
    /// already logged and counted): the ALG's findings for the rest of `line`.
    fn announced(&mut self, line: &[u8], placed: Option<Placed>) -> Outcome<Self::Format>;

    /// The text replacing an announcement's span, naming `public`.
    fn format(&self, format: &Self::Format, public: Endpoint) -> Vec<u8>;

    /// `format(..).len()` without allocating: the port allocator prefers ports that keep the length.
    fn formatted_len(&self, format: &Self::Format, public: Endpoint) -> usize;

    /// A line as logs and events may show it (credentials hidden).
    fn redact(&self, line: &[u8]) -> String;

    /// The log line's message for a state change of the connection.
    fn change_message(&self, change: StateChange) -> &'static str;

    /// Public ports of the pinholes this connection opened, oldest first: plain data the ALG keeps,
    /// trimmed here to the policy's limit.
    fn pinhole_ports(&mut self) -> &mut VecDeque<u16>;
}
