//! FTP control-line parsing and formatting: PORT / EPRT commands, 227 / 229 replies, command and reply
//! classification, log redaction, and the framer's "might this line need rewriting" check.
//!
//! Owns: the byte-level grammar of one line. Pure functions, no state, no allocation except in the
//! formatters. Must not: know about flows, sessions, sequence numbers or packets; the ALG decides what to
//! do with a parse result.
//!
//! Rewrite policy: a parse returns the byte range (`span`) of exactly the address/port text, so the ALG
//! replaces only that and keeps every other byte as sent. `format_span` produces canonical text for a span
//! and is the exact inverse of the parsers for canonical input (no leading zeros).
//!
//! Decisions the caller should know:
//! - 227: following RFC 1123 §4.1.2.6 literally, the *first digit* after "227 " must begin a valid
//!   six-number tuple, otherwise the line is `Malformed` (not rewritten). We do not keep scanning like
//!   curl or Python's ftplib do: if the first digit run is not a tuple, clients disagree on what the line
//!   means, and refusing to rewrite fails closed rather than rewriting a tuple some client ignores.
//! - 229: likewise the first '(' after "229 " must open the `(<d><d><d>port<d>)` form.
//! - Delimiters (EPRT, 229) are ASCII 33..=126 (RFC 2428 §2) but never a digit: a digit delimiter is
//!   ambiguous with the numbers and a re-formatted port could contain it. An EPRT delimited by '.' is
//!   `Malformed` too (its dotted quad splits into the wrong field count).
//! - Leading zeros are accepted in numbers (bounded digit counts: 3 for octets, 5 for ports) and the
//!   formatter emits canonical decimal. Port 0 parses; rejecting it is the ALG's policy.
//! - Verbs are the bytes up to the first SP; "PORT\t..." is therefore not a PORT line.

use std::net::Ipv4Addr;
use std::ops::Range;

/// Which kind of announcement a line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Port,
    Eprt,
    Pasv227,
    Epsv229,
}

/// A parsed announcement: where the span is and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub kind: Kind,
    /// Byte range within the line of the text to replace:
    ///  PORT: the six numbers "h1,h2,h3,h4,p1,p2" (not the verb, not trailing spaces/CRLF);
    ///  227:  the six numbers (parentheses and text kept);
    ///  EPRT: from the first delimiter to the last one inclusive, "|1|10.0.0.2|5000|";
    ///  229:  the port digits only.
    pub span: Range<usize>,
    /// None for 229 (it carries no address).
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
    /// The EPRT delimiter (b'|' usually); for other kinds unused (0).
    pub delim: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not this kind of line at all (wrong verb / reply code).
    NotThisKind,
    /// Wrong field count, a non-digit, an empty field, a number out of range, an overlong digit string.
    Malformed,
    /// EPRT with protocol other than 1 (IPv6 = 2 or anything else).
    WrongFamily,
}

/// Client command classes the ALG's state machine cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Port,
    Eprt,
    Pasv,
    Epsv,
    /// AUTH TLS / SSL / TLS-C / TLS-P (RFC 4217, RFC 2228).
    Auth,
    Ccc,
    Pass,
    Acct,
    Other,
}

/// Whether the framer should hold a line start until the line is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    No,
    Maybe,
}

/// The line without its line end (CRLF or bare LF); a line without one is returned whole. A lone
/// trailing CR is not a line end and stays.
fn strip_eol(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
        None => line,
    }
}

/// Trailing SP bytes removed (RFC 959 allows none, real clients send some).
fn trim_spaces_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| b == b' ').count();
    &s[..s.len() - n]
}

/// The verb (bytes up to the first SP) and the index just after that SP, if any.
fn verb_of(body: &[u8]) -> (&[u8], Option<usize>) {
    match body.iter().position(|&b| b == b' ') {
        Some(i) => (&body[..i], Some(i + 1)),
        None => (body, None),
    }
}

fn digit_run(s: &[u8], from: usize) -> usize {
    s.get(from..).map_or(0, |t| t.iter().take_while(|b| b.is_ascii_digit()).count())
}

/// A decimal number of 1..=`max_len` digits with value <= `max`. The length bound comes first, so no
/// digit string can overflow.
fn bounded_num(d: &[u8], max_len: usize, max: u32) -> Result<u32, ParseError> {
    if d.is_empty() || d.len() > max_len || !d.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Malformed);
    }
    let v = d.iter().fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
    if v > max {
        return Err(ParseError::Malformed);
    }
    Ok(v)
}

fn octet(d: &[u8]) -> Result<u8, ParseError> {
    bounded_num(d, 3, 255).map(|v| v as u8)
}

fn port_num(d: &[u8]) -> Result<u16, ParseError> {
    bounded_num(d, 5, 65535).map(|v| v as u16)
}

/// RFC 959 §4.1.2 host-port: six comma-separated octets starting at `start`; returns the end index.
fn six_tuple(s: &[u8], start: usize) -> Result<(usize, Ipv4Addr, u16), ParseError> {
    let mut v = [0u8; 6];
    let mut i = start;
    for (k, slot) in v.iter_mut().enumerate() {
        if k > 0 {
            if s.get(i) != Some(&b',') {
                return Err(ParseError::Malformed);
            }
            i += 1;
        }
        let n = digit_run(s, i);
        *slot = octet(&s[i..i + n])?;
        i += n;
    }
    Ok((i, Ipv4Addr::new(v[0], v[1], v[2], v[3]), u16::from(v[4]) << 8 | u16::from(v[5])))
}

/// Dotted-quad IPv4 (RFC 2428 §2, net-prt 1), consuming all of `s`.
fn dotted_quad(s: &[u8]) -> Result<Ipv4Addr, ParseError> {
    let mut o = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for slot in o.iter_mut() {
        *slot = octet(parts.next().ok_or(ParseError::Malformed)?)?;
    }
    if parts.next().is_some() {
        return Err(ParseError::Malformed);
    }
    Ok(Ipv4Addr::from(o))
}

/// RFC 2428 §2: a delimiter is ASCII 33..=126; we also refuse digits (see module doc).
fn valid_delim(d: u8) -> bool {
    (33..=126).contains(&d) && !d.is_ascii_digit()
}

/// For a command line: checks the verb and returns (body without trailing spaces/line end, argument start).
fn command_arg<'a>(line: &'a [u8], verb: &[u8]) -> Result<(&'a [u8], usize), ParseError> {
    let body = strip_eol(line);
    let (v, arg) = verb_of(body);
    if !v.eq_ignore_ascii_case(verb) {
        return Err(ParseError::NotThisKind);
    }
    let body = trim_spaces_end(body);
    match arg {
        // RFC 959 §5.3.1: <verb> <SP> <argument>; a second SP makes the argument start with SP,
        // which the grammar below rejects.
        Some(start) if start < body.len() => Ok((body, start)),
        _ => Err(ParseError::Malformed),
    }
}

/// `PORT h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2), verb case-insensitive.
pub fn parse_port(line: &[u8]) -> Result<Announce, ParseError> {
    let (body, start) = command_arg(line, b"PORT")?;
    let (end, addr, port) = six_tuple(body, start)?;
    if end != body.len() {
        return Err(ParseError::Malformed);
    }
    Ok(Announce { kind: Kind::Port, span: start..end, addr: Some(addr), port, delim: 0 })
}

/// `EPRT <d>1<d>a.b.c.d<d>port<d>` (RFC 2428 §2), verb case-insensitive.
pub fn parse_eprt(line: &[u8]) -> Result<Announce, ParseError> {
    let (body, start) = command_arg(line, b"EPRT")?;
    let arg = &body[start..];
    let d = arg[0];
    if !valid_delim(d) {
        return Err(ParseError::Malformed);
    }
    // The protocol is judged before the rest so an IPv6 EPRT is reported as such whatever its
    // address looks like.
    let proto_len = arg[1..].iter().position(|&b| b == d).ok_or(ParseError::Malformed)?;
    let proto = &arg[1..1 + proto_len];
    if proto.is_empty() || !proto.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Malformed);
    }
    let significant = &proto[proto.iter().take_while(|&&b| b == b'0').count()..];
    if significant != b"1" {
        return Err(ParseError::WrongFamily);
    }
    let mut fields = arg.split(|&b| b == d);
    let mut f = [&arg[..0]; 5];
    for slot in f.iter_mut() {
        *slot = fields.next().ok_or(ParseError::Malformed)?;
    }
    // Exactly four delimiters, the first and last ones bounding the argument.
    if fields.next().is_some() || !f[0].is_empty() || !f[4].is_empty() {
        return Err(ParseError::Malformed);
    }
    let addr = dotted_quad(f[2])?;
    let port = port_num(f[3])?;
    Ok(Announce { kind: Kind::Eprt, span: start..body.len(), addr: Some(addr), port, delim: d })
}

/// The body of a final reply with the given code ("227 " prefix), or why not.
fn reply_text<'a>(line: &'a [u8], code: &[u8; 3]) -> Result<&'a [u8], ParseError> {
    let body = strip_eol(line);
    if body == code {
        // A final reply of the right code with no text: nothing to parse.
        return Err(ParseError::Malformed);
    }
    match body.strip_prefix(code.as_slice()) {
        Some([b' ', ..]) => Ok(body),
        _ => Err(ParseError::NotThisKind),
    }
}

/// `227 <text>h1,h2,h3,h4,p1,p2<text>`: the first digit after "227 " must start the tuple
/// (RFC 1123 §4.1.2.6; see the module doc for why we do not keep scanning).
pub fn parse_227(line: &[u8]) -> Result<Announce, ParseError> {
    let body = reply_text(line, b"227")?;
    let start = 4 + body[4..].iter().position(u8::is_ascii_digit).ok_or(ParseError::Malformed)?;
    let (end, addr, port) = six_tuple(body, start)?;
    // "1,2,3,4,5,6,7" is not a six-tuple.
    if matches!(body.get(end), Some(b',') | Some(b'0'..=b'9')) {
        return Err(ParseError::Malformed);
    }
    Ok(Announce { kind: Kind::Pasv227, span: start..end, addr: Some(addr), port, delim: 0 })
}

/// `229 <text>(<d><d><d>port<d>)<text>` (RFC 2428 §3): the first '(' after "229 " must open it.
pub fn parse_229(line: &[u8]) -> Result<Announce, ParseError> {
    let body = reply_text(line, b"229")?;
    let open = 4 + body[4..].iter().position(|&b| b == b'(').ok_or(ParseError::Malformed)?;
    let d = *body.get(open + 1).ok_or(ParseError::Malformed)?;
    if !valid_delim(d) || body.get(open + 2) != Some(&d) || body.get(open + 3) != Some(&d) {
        return Err(ParseError::Malformed);
    }
    let start = open + 4;
    let n = digit_run(body, start);
    let port = port_num(&body[start..start + n])?;
    let end = start + n;
    if body.get(end) != Some(&d) || body.get(end + 1) != Some(&b')') {
        return Err(ParseError::Malformed);
    }
    Ok(Announce { kind: Kind::Epsv229, span: start..end, addr: None, port, delim: 0 })
}

fn dec_len(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

fn push_dec(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// The replacement text for a span (canonical decimal, no leading zeros). For 229, `addr` is ignored;
/// `delim` is used for EPRT only.
pub fn format_span(kind: Kind, addr: Ipv4Addr, port: u16, delim: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(formatted_len(kind, addr, port));
    let o = addr.octets();
    match kind {
        Kind::Port | Kind::Pasv227 => {
            for (i, n) in o.iter().copied().chain(port.to_be_bytes()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_dec(&mut out, n.into());
            }
        }
        Kind::Eprt => {
            out.extend_from_slice(&[delim, b'1', delim]);
            for (i, n) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_dec(&mut out, (*n).into());
            }
            out.push(delim);
            push_dec(&mut out, port.into());
            out.push(delim);
        }
        Kind::Epsv229 => push_dec(&mut out, port.into()),
    }
    out
}

/// Length in bytes of what `format_span` would produce, without allocating.
pub fn formatted_len(kind: Kind, addr: Ipv4Addr, port: u16) -> usize {
    let quad: usize = addr.octets().iter().map(|&n| dec_len(n.into())).sum();
    match kind {
        Kind::Port | Kind::Pasv227 => {
            quad + port.to_be_bytes().iter().map(|&n| dec_len(n.into())).sum::<usize>() + 5
        }
        // <d>1<d> + quad with 3 dots + <d>port<d>
        Kind::Eprt => 3 + quad + 3 + 1 + dec_len(port.into()) + 1,
        Kind::Epsv229 => dec_len(port.into()),
    }
}

/// Classifies a client command line by its verb (bytes up to SP or line end, case-insensitive).
pub fn classify_command(line: &[u8]) -> Command {
    let body = strip_eol(line);
    let (verb, arg) = verb_of(body);
    let is = |v: &[u8]| verb.eq_ignore_ascii_case(v);
    if is(b"PORT") {
        Command::Port
    } else if is(b"EPRT") {
        Command::Eprt
    } else if is(b"PASV") {
        Command::Pasv
    } else if is(b"EPSV") {
        // "EPSV ALL" (RFC 2428 §4) is still EPSV: the session stays in extended passive mode.
        Command::Epsv
    } else if is(b"AUTH") {
        // RFC 4217 §4 / RFC 2228: only the TLS mechanisms make the control channel opaque to us.
        let mech = trim_spaces_end(arg.map_or(&[][..], |a| &body[a..]));
        let tls = [&b"TLS"[..], b"SSL", b"TLS-C", b"TLS-P"];
        if tls.iter().any(|m| mech.eq_ignore_ascii_case(m)) {
            Command::Auth
        } else {
            Command::Other
        }
    } else if is(b"CCC") {
        Command::Ccc
    } else if is(b"PASS") {
        Command::Pass
    } else if is(b"ACCT") {
        Command::Acct
    } else {
        Command::Other
    }
}

/// What a client line says about the stream being FTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLine {
    /// RFC 959 §5.3.1: a verb of letters, then SP (HTAB tolerated) and arguments, or the line end.
    Command,
    /// Nothing but a line end (and Telnet commands): says nothing either way.
    Empty,
    /// Anything else: a header line (`Host: x`), a binary blob, an HTTP request line.
    NotFtp,
}

/// Classifies a client line (see [`ClientLine`]). Telnet IAC sequences before the verb are skipped
/// (RFC 959 §4.1.3: ABOR follows Telnet IP and Synch). An HTTP request line (`METHOD SP target SP
/// HTTP/x.y`, RFC 9112 §3) has a verb of letters too, and is told apart by its version.
pub fn client_line(line: &[u8]) -> ClientLine {
    let mut b = strip_eol(line);
    while let [0xff, cmd, rest @ ..] = b {
        if *cmd == 0xff {
            // IAC IAC is a data byte 255: not a letter.
            return ClientLine::NotFtp;
        }
        b = rest;
    }
    if b.is_empty() {
        return ClientLine::Empty;
    }
    let verb = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    match b.get(verb) {
        _ if verb == 0 => ClientLine::NotFtp,
        None => ClientLine::Command,
        Some(b' ' | b'\t') if !is_http_request(b) => ClientLine::Command,
        Some(_) => ClientLine::NotFtp,
    }
}

/// Whether a line ends with ` HTTP/<digit>.<digit>`, as an HTTP/1.x request line (and the HTTP/2
/// preface, `PRI * HTTP/2.0`) does.
fn is_http_request(body: &[u8]) -> bool {
    let Some(tail) = body.len().checked_sub(9).map(|at| &body[at..]) else { return false };
    tail[..6].eq_ignore_ascii_case(b" HTTP/")
        && tail[6].is_ascii_digit()
        && tail[7] == b'.'
        && tail[8].is_ascii_digit()
}

/// A reply line's code and whether it opens/continues a multi-line reply (RFC 959 §4.2): three digits,
/// the first 1..=5, followed by SP (final), '-' (multi-line), or the line end (final).
pub fn reply_code(line: &[u8]) -> Option<(u16, bool)> {
    let body = strip_eol(line);
    let (code, rest) = body.split_first_chunk::<3>()?;
    if !code.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&code[0]) {
        return None;
    }
    let multi = match rest.first() {
        None | Some(b' ') => false,
        Some(b'-') => true,
        Some(_) => return None,
    };
    let n = code.iter().fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
    Some((n, multi))
}

/// Where the secret argument starts if this line is a PASS or ACCT command. Deliberately broader than
/// `classify_command`: leading non-letters (SP, Telnet IAC bytes) are skipped and the verb ends at the
/// first non-letter, so "PASS\tsecret" or "\xff\xf4PASS secret" are redacted too.
fn secret_start(body: &[u8]) -> Option<usize> {
    let vstart = body.iter().position(u8::is_ascii_alphabetic)?;
    let vlen = body[vstart..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let verb = &body[vstart..vstart + vlen];
    if verb.eq_ignore_ascii_case(b"PASS") || verb.eq_ignore_ascii_case(b"ACCT") {
        Some(vstart + vlen)
    } else {
        None
    }
}

fn escape_into(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// For logging: the line without its line end, the argument of PASS/ACCT replaced by "****", control
/// and invalid UTF-8 bytes escaped as `\xNN` and `\` as `\\` so a log entry stays one unambiguous line.
pub fn redacted(line: &[u8]) -> String {
    let body = strip_eol(line);
    let mut out = String::with_capacity(body.len());
    match secret_start(body) {
        Some(s) => {
            escape_into(&mut out, &body[..s]);
            // Any argument at all, even empty after the separator, becomes "****": its length is secret too.
            if s < body.len() {
                out.push_str(" ****");
            }
        }
        None => escape_into(&mut out, body),
    }
    out
}

/// Whether a line starting with `prefix` (possibly incomplete) could be a PORT/EPRT command
/// (`from_client`) or a 227/229 reply, so that the framer holds it until complete.
pub fn candidate(prefix: &[u8], from_client: bool) -> Candidate {
    let pats: [&[u8]; 2] = if from_client { [b"PORT ", b"EPRT "] } else { [b"227 ", b"229 "] };
    candidate_of(prefix, &pats)
}

/// Whether a line starting with `prefix` (possibly incomplete) may still begin with one of `pats`
/// (ASCII case-insensitive).
pub fn candidate_of(prefix: &[u8], pats: &[&[u8]]) -> Candidate {
    let hit = pats.iter().any(|p| {
        let n = prefix.len().min(p.len());
        prefix[..n].eq_ignore_ascii_case(&p[..n])
    });
    if hit {
        Candidate::Maybe
    } else {
        Candidate::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ParseError::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Parses, checks the span text, and returns the announcement.
    fn ok(r: Result<Announce, ParseError>, line: &str, span_text: &str) -> Announce {
        let an = r.unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        assert_eq!(&line.as_bytes()[an.span.clone()], span_text.as_bytes(), "{line:?}");
        an
    }

    #[test]
    fn port_forms() {
        for line in ["PORT 192,168,1,2,19,137\r\n", "port 192,168,1,2,19,137\n", "Port 192,168,1,2,19,137"] {
            let an = ok(parse_port(line.as_bytes()), line, "192,168,1,2,19,137");
            assert_eq!((an.kind, an.addr, an.port), (Kind::Port, Some(a("192.168.1.2")), 19 * 256 + 137));
        }
        let line = "PORT 10,0,0,2,0,21   \r\n";
        let an = ok(parse_port(line.as_bytes()), line, "10,0,0,2,0,21");
        assert_eq!(an.port, 21);
        // Leading zeros parse; the formatter is canonical.
        let line = "PORT 010,000,0,2,000,021\r\n";
        let an = ok(parse_port(line.as_bytes()), line, "010,000,0,2,000,021");
        assert_eq!((an.addr, an.port), (Some(a("10.0.0.2")), 21));
        assert_eq!(format_span(Kind::Port, a("10.0.0.2"), 21, 0), b"10,0,0,2,0,21");
    }

    #[test]
    fn port_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"PORTS 1,2,3,4,5,6\r\n", NotThisKind),
            (b"PASV\r\n", NotThisKind),
            (b"EPRT |1|1.2.3.4|5|\r\n", NotThisKind),
            (b" PORT 1,2,3,4,5,6\r\n", NotThisKind),
            (b"PORT\t1,2,3,4,5,6\r\n", NotThisKind),
            (b"PORT\r\n", Malformed),
            (b"PORT \r\n", Malformed),
            (b"PORT    \r\n", Malformed),
            (b"PORT  1,2,3,4,5,6\r\n", Malformed),
            (b"PORT 1,2,3,4,5\r\n", Malformed),
            (b"PORT 1,2,3,4,5,6,7\r\n", Malformed),
            (b"PORT 1,2,3,4,5,\r\n", Malformed),
            (b"PORT 1,2,,4,5,6\r\n", Malformed),
            (b"PORT 1,2,3,4,5,256\r\n", Malformed),
            (b"PORT 256,2,3,4,5,6\r\n", Malformed),
            (b"PORT 1,2,3,4,5,0006\r\n", Malformed),
            (b"PORT 1,2,3,4,5,99999999999999999999\r\n", Malformed),
            (b"PORT 1,2,3,4,5,6x\r\n", Malformed),
            (b"PORT 1,2,3,4,5,6 x\r\n", Malformed),
            (b"PORT 1, 2,3,4,5,6\r\n", Malformed),
            (b"PORT -1,2,3,4,5,6\r\n", Malformed),
            (b"PORT 1,2,3,4,5,6\r\r\n", Malformed),
            (b"PORT 1,2,3,4,5,6\0\r\n", Malformed),
            (b"PORT 1,2,3,4,5,\xd9\xa1\r\n", Malformed), // Arabic-Indic digit one is not a digit
        ];
        for (line, e) in cases {
            assert_eq!(parse_port(line), Err(*e), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn eprt_forms() {
        let line = "EPRT |1|10.0.0.2|5000|\r\n";
        let an = ok(parse_eprt(line.as_bytes()), line, "|1|10.0.0.2|5000|");
        assert_eq!((an.kind, an.addr, an.port, an.delim), (Kind::Eprt, Some(a("10.0.0.2")), 5000, b'|'));
        let line = "eprt !1!132.235.1.2!6275!  \n";
        let an = ok(parse_eprt(line.as_bytes()), line, "!1!132.235.1.2!6275!");
        assert_eq!((an.addr, an.port, an.delim), (Some(a("132.235.1.2")), 6275, b'!'));
        let line = "EPRT |01|10.0.0.2|65535|";
        assert_eq!(ok(parse_eprt(line.as_bytes()), line, "|01|10.0.0.2|65535|").port, 65535);
        assert_eq!(format_span(Kind::Eprt, a("10.0.0.2"), 5000, b'!'), b"!1!10.0.0.2!5000!");
    }

    #[test]
    fn eprt_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"PORT 1,2,3,4,5,6\r\n", NotThisKind),
            (b"EPRTX |1|1.2.3.4|5|\r\n", NotThisKind),
            (b"EPRT |2|::1|5282|\r\n", WrongFamily),
            (b"EPRT |2|1.2.3.4|5282|\r\n", WrongFamily),
            (b"EPRT |3|x|y|\r\n", WrongFamily),
            (b"EPRT |99999999999999999999|1.2.3.4|5|\r\n", WrongFamily),
            (b"EPRT :2:::1:5282:\r\n", WrongFamily),
            (b"EPRT ||1.2.3.4|5|\r\n", Malformed),
            (b"EPRT |x|1.2.3.4|5|\r\n", Malformed),
            (b"EPRT\r\n", Malformed),
            (b"EPRT \r\n", Malformed),
            (b"EPRT  |1|1.2.3.4|5|\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|65536|\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|99999999999999999999|\r\n", Malformed),
            (b"EPRT |1|1.2.3.4||\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|5\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|5||\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|5|x\r\n", Malformed),
            (b"EPRT |1|1.2.3|5|\r\n", Malformed),
            (b"EPRT |1|1.2.3.4.5|5|\r\n", Malformed),
            (b"EPRT |1|1.2.3.256|5|\r\n", Malformed),
            (b"EPRT |1|1..3.4|5|\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|5!\r\n", Malformed),
            (b"EPRT .1.1.2.3.4.5.\r\n", Malformed),
            (b"EPRT 515152.3.4565000\r\n", Malformed), // digit delimiter
            (b"EPRT  1 1.2.3.4 5 \r\n", Malformed),    // SP is not a delimiter
            (b"EPRT \x7f1\x7f1.2.3.4\x7f5\x7f\r\n", Malformed),
            (b"EPRT \xff1\xff1.2.3.4\xff5\xff\r\n", Malformed),
            (b"EPRT |1|1.2.3.4|5\0|\r\n", Malformed),
        ];
        for (line, e) in cases {
            assert_eq!(parse_eprt(line), Err(*e), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn pasv_227_real_world() {
        let cases = [
            ("227 Entering Passive Mode (192,168,1,2,19,137).\r\n", "192,168,1,2,19,137"),
            ("227 Entering Passive Mode 192,168,1,2,19,137\r\n", "192,168,1,2,19,137"),
            ("227 =192,168,1,2,19,137\r\n", "192,168,1,2,19,137"),
            ("227 Entering Passive Mode (192,168,1,2,19,137)\n", "192,168,1,2,19,137"),
            ("227 Data transfer will passively listen to 192,168,1,2,19,137", "192,168,1,2,19,137"),
            ("227 Entering passive mode. 192,168,1,2,19,137 \u{e9}t\u{e9}\r\n", "192,168,1,2,19,137"),
            ("227 Entering Passive Mode (192,168,001,002,019,137)\r\n", "192,168,001,002,019,137"),
        ];
        for (line, span) in cases {
            let an = ok(parse_227(line.as_bytes()), line, span);
            assert_eq!((an.kind, an.addr, an.port), (Kind::Pasv227, Some(a("192.168.1.2")), 19 * 256 + 137));
        }
    }

    #[test]
    fn pasv_227_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"227-Entering Passive Mode (1,2,3,4,5,6)\r\n", NotThisKind),
            (b"228 Entering Long Passive Mode (1,2,3,4,5,6)\r\n", NotThisKind),
            (b"2270 (1,2,3,4,5,6)\r\n", NotThisKind),
            (b" 227 (1,2,3,4,5,6)\r\n", NotThisKind),
            (b"227\r\n", Malformed),
            (b"227 \r\n", Malformed),
            (b"227 Entering Passive Mode\r\n", Malformed),
            (b"227 Entering Passive Mode (1,2,3,4,5)\r\n", Malformed),
            (b"227 Entering Passive Mode (1,2,3,4,5,6,7)\r\n", Malformed),
            (b"227 Entering Passive Mode (1,2,3,4,5,256)\r\n", Malformed),
            (b"227 Entering Passive Mode (1,2,3,4,5,1000)\r\n", Malformed),
            (b"227 Entering Passive Mode (1,2,3,4,5,99999999999999999999)\r\n", Malformed),
            (b"227 Entering Passive Mode (1, 2,3,4,5,6)\r\n", Malformed),
            // Documented choice: the first digit decides (RFC 1123 §4.1.2.6); no further scanning.
            (b"227 Mode 2 (1,2,3,4,5,6)\r\n", Malformed),
        ];
        for (line, e) in cases {
            assert_eq!(parse_227(line), Err(*e), "{:?}", String::from_utf8_lossy(line));
        }
        // NUL after the tuple is just text.
        assert!(parse_227(b"227 Entering Passive Mode (1,2,3,4,5,6\0)\r\n").is_ok());
        assert!(parse_227(b"227 \0\xff(1,2,3,4,5,6)\r\n").is_ok());
    }

    #[test]
    fn epsv_229_real_world() {
        let cases = [
            "229 Entering Extended Passive Mode (|||6446|)\r\n", // vsftpd
            "229 Entering extended passive mode (|||6446|).\r\n", // pyftpdlib
            "229 Entering Extended Passive Mode (|||6446|)\n",   // ProFTPD, bare LF
            "229 EPSV ok (!!!6446!)",
            "229 (|||06446|)",
        ];
        for line in cases {
            let an = parse_229(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
            assert_eq!((an.kind, an.addr, an.port), (Kind::Epsv229, None, 6446), "{line:?}");
            assert!(line[an.span.clone()].ends_with("6446"));
            assert_eq!(line.as_bytes()[an.span.end], line.as_bytes()[an.span.start - 1]);
        }
        assert_eq!(format_span(Kind::Epsv229, a("1.2.3.4"), 6446, b'|'), b"6446");
    }

    #[test]
    fn epsv_229_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"229-Entering Extended Passive Mode (|||6446|)\r\n", NotThisKind),
            (b"227 Entering Extended Passive Mode (|||6446|)\r\n", NotThisKind),
            (b"229\r\n", Malformed),
            (b"229 Entering Extended Passive Mode\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|||65536|)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|||99999999999999999999|)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|||)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (||6446|)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|!|6446|)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|||6446!)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|||6446|\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (   6446 )\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (1116446)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (\xff\xff\xff6446\xff)\r\n", Malformed),
            (b"229 Entering (v2) Extended Passive Mode (|||6446|)\r\n", Malformed),
            (b"229 Entering Extended Passive Mode (|||6446|", Malformed),
            (b"229 Entering Extended Passive Mode (", Malformed),
        ];
        for (line, e) in cases {
            assert_eq!(parse_229(line), Err(*e), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn client_lines_are_ftp_commands_or_not() {
        use ClientLine::*;
        for (line, want) in [
            (&b"USER alice\r\n"[..], Command),
            (b"NOOP\r\n", Command),
            (b"noop\n", Command),
            (b"PASS\tsecret\r\n", Command),
            (b"PORTAL\r\n", Command),
            (b"\xff\xf4\xff\xf2ABOR\r\n", Command),
            (b"RETR file HTTP 1.1.txt\r\n", Command),
            (b"\r\n", Empty),
            (b"\xff\xf1\r\n", Empty),
            (b"POST / HTTP/1.1\r\n", NotFtp),
            (b"GET /index.html HTTP/1.0\r\n", NotFtp),
            (b"PRI * HTTP/2.0\r\n", NotFtp),
            (b"Host: example.com\r\n", NotFtp),
            (b"Content-Length: 12\r\n", NotFtp),
            (b" NOOP\r\n", NotFtp),
            (b"\0PORT 10,0,0,2,4,1\r\n", NotFtp),
            (b"P\0RT 10,0,0,2,4,1\r\n", NotFtp),
            (b"\xefPORT 10,0,0,2,4,1\r\n", NotFtp),
            (b"\xff\xffPORT\r\n", NotFtp),
            (b"SSH-2.0-OpenSSH_9.6\r\n", NotFtp),
        ] {
            assert_eq!(client_line(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn classify() {
        let cases: &[(&[u8], Command)] = &[
            (b"PORT 1,2,3,4,5,6\r\n", Command::Port),
            (b"port 1,2,3,4,5,6\r\n", Command::Port),
            (b"EPRT |1|1.2.3.4|5|\r\n", Command::Eprt),
            (b"PASV\r\n", Command::Pasv),
            (b"pasv\n", Command::Pasv),
            (b"PASV", Command::Pasv),
            (b"EPSV\r\n", Command::Epsv),
            (b"EPSV ALL\r\n", Command::Epsv),
            (b"EPSV 1\r\n", Command::Epsv),
            (b"AUTH TLS\r\n", Command::Auth),
            (b"auth tls\r\n", Command::Auth),
            (b"AUTH SSL\r\n", Command::Auth),
            (b"AUTH TLS-C\r\n", Command::Auth),
            (b"AUTH tls-p \r\n", Command::Auth),
            (b"AUTH GSSAPI\r\n", Command::Other),
            (b"AUTH\r\n", Command::Other),
            (b"AUTH TLSX\r\n", Command::Other),
            (b"CCC\r\n", Command::Ccc),
            (b"PASS hunter2\r\n", Command::Pass),
            (b"pass\r\n", Command::Pass),
            (b"ACCT x\r\n", Command::Acct),
            (b"PASSX\r\n", Command::Other),
            (b"USER anonymous\r\n", Command::Other),
            (b"\r\n", Command::Other),
            (b"", Command::Other),
            (b"\0\xff", Command::Other),
        ];
        for (line, c) in cases {
            assert_eq!(classify_command(line), *c, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn reply_codes() {
        type Case = (&'static [u8], Option<(u16, bool)>);
        let cases: &[Case] = &[
            (b"227 x\r\n", Some((227, false))),
            (b"211-x\r\n", Some((211, true))),
            (b"220\r\n", Some((220, false))),
            (b"220\n", Some((220, false))),
            (b"220", Some((220, false))),
            (b"550 \r\n", Some((550, false))),
            (b"100 x", Some((100, false))),
            (b"600 x\r\n", None),
            (b"099 x\r\n", None),
            (b"22 x\r\n", None),
            (b"2270 x\r\n", None),
            (b"227x\r\n", None),
            (b"227\r", None),
            (b" 227 x\r\n", None),
            (b"x", None),
            (b"", None),
            (b"  Indented continuation text\r\n", None),
        ];
        for (line, r) in cases {
            assert_eq!(reply_code(line), *r, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn redaction() {
        let cases: &[(&[u8], &str)] = &[
            (b"PASS hunter2\r\n", "PASS ****"),
            (b"pass hunter2\n", "pass ****"),
            (b"PASS\r\n", "PASS"),
            (b"PASS \r\n", "PASS ****"),
            (b"ACCT secret stuff\r\n", "ACCT ****"),
            (b"PASS\thunter2\r\n", "PASS ****"),
            (b"\xff\xf4PASS hunter2\r\n", "\\xff\\xf4PASS ****"),
            (b"  PASS hunter2", "  PASS ****"),
            (b"PASSWORD x\r\n", "PASSWORD x"),
            (b"USER bob\r\n", "USER bob"),
            (b"331 Password required\r\n", "331 Password required"),
            (b"CWD a\\b\0c\x1b[31m\r\n", "CWD a\\\\b\\x00c\\x1b[31m"),
            (b"CWD \xc3\xa9t\xc3\xa9\r\n", "CWD \u{e9}t\u{e9}"),
            (b"CWD \xc3\r\n", "CWD \\xc3"),
            (b"CWD a\rb\nc\r\n", "CWD a\\x0db\\x0ac"),
            (b"CWD \xc2\x85x", "CWD \\xc2\\x85x"), // NEL is a line break in some viewers
        ];
        for (line, want) in cases {
            assert_eq!(redacted(line), *want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn candidates() {
        use Candidate::*;
        let client: &[(&[u8], Candidate)] = &[
            (b"", Maybe),
            (b"P", Maybe),
            (b"po", Maybe),
            (b"PORT", Maybe),
            (b"PORT ", Maybe),
            (b"port 1,2,3", Maybe),
            (b"E", Maybe),
            (b"EpRt |1|", Maybe),
            (b"PA", No),
            (b"PORTS", No),
            (b"PORT\r", No),
            (b"227 ", No),
            (b"USER x", No),
        ];
        for (p, c) in client {
            assert_eq!(candidate(p, true), *c, "{:?}", String::from_utf8_lossy(p));
        }
        let server: &[(&[u8], Candidate)] = &[
            (b"", Maybe),
            (b"2", Maybe),
            (b"22", Maybe),
            (b"227", Maybe),
            (b"229 Entering", Maybe),
            (b"227-", No),
            (b"220 ", No),
            (b"23", No),
            (b"PORT ", No),
        ];
        for (p, c) in server {
            assert_eq!(candidate(p, false), *c, "{:?}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn formatted_len_extremes() {
        for (addr, port) in [("0.0.0.0", 0), ("255.255.255.255", 65535), ("10.0.0.100", 9999)] {
            for k in [Kind::Port, Kind::Pasv227, Kind::Eprt, Kind::Epsv229] {
                assert_eq!(formatted_len(k, a(addr), port), format_span(k, a(addr), port, b'|').len());
            }
        }
        assert_eq!(format_span(Kind::Pasv227, a("255.255.255.255"), 65535, 0), b"255,255,255,255,255,255");
    }

    /// Printable ASCII without digits, '(' and ','; used as free text around spans.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ !\"#$%&')*+./:;<=>?@A-Za-z\\[\\]^_`{|}~-]{0,20}").unwrap()
    }

    fn eol() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("\r\n"), Just("\n"), Just("")]
    }

    fn delim() -> impl Strategy<Value = u8> {
        (33u8..=126).prop_filter("not a digit", |d| !d.is_ascii_digit())
    }

    fn any_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![Just(Kind::Port), Just(Kind::Eprt), Just(Kind::Pasv227), Just(Kind::Epsv229)]
    }

    /// Applies `span` := `format_span(...)` to the line.
    fn rebuild(line: &[u8], an: &Announce) -> Vec<u8> {
        let addr = an.addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut out = line[..an.span.start].to_vec();
        out.extend(format_span(an.kind, addr, an.port, an.delim));
        out.extend_from_slice(&line[an.span.end..]);
        out
    }

    proptest! {
        #[test]
        fn roundtrip(
            kind in any_kind(), ip in any::<u32>(), port in any::<u16>(), d in delim(),
            upper in any::<[bool; 4]>(), pre in text(), post in text(), spaces in 0usize..3, eol in eol(),
        ) {
            // '.' cannot delimit a dotted quad; parse_eprt rejects it (tested in eprt_errors).
            let d = if kind == Kind::Eprt && d == b'.' { b'|' } else { d };
            let addr = Ipv4Addr::from(ip);
            let span = format_span(kind, addr, port, d);
            let mut line = Vec::new();
            let verb = |v: &str| -> Vec<u8> {
                v.bytes().zip(upper).map(|(b, u)| if u { b } else { b.to_ascii_lowercase() }).collect()
            };
            match kind {
                Kind::Port | Kind::Eprt => {
                    line.extend(verb(if kind == Kind::Port { "PORT" } else { "EPRT" }));
                    line.push(b' ');
                    line.extend(&span);
                    line.extend(std::iter::repeat_n(b' ', spaces));
                }
                Kind::Pasv227 => {
                    line.extend(b"227 ");
                    line.extend(pre.as_bytes());
                    line.extend(&span);
                    line.extend(post.as_bytes());
                }
                Kind::Epsv229 => {
                    line.extend(b"229 ");
                    line.extend(pre.as_bytes());
                    line.extend([b'(', d, d, d]);
                    line.extend(&span);
                    line.extend([d, b')']);
                    line.extend(post.as_bytes());
                }
            }
            line.extend(eol.as_bytes());
            let parse = match kind {
                Kind::Port => parse_port,
                Kind::Eprt => parse_eprt,
                Kind::Pasv227 => parse_227,
                Kind::Epsv229 => parse_229,
            };
            let an = parse(&line).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(an.kind, kind);
            prop_assert_eq!(an.port, port);
            prop_assert_eq!(an.addr, if kind == Kind::Epsv229 { None } else { Some(addr) });
            prop_assert_eq!(&line[an.span.clone()], &span[..]);
            prop_assert_eq!(rebuild(&line, &an), line);
        }

        #[test]
        fn len_matches(kind in any_kind(), ip in any::<u32>(), port in any::<u16>(), d in delim()) {
            let addr = Ipv4Addr::from(ip);
            prop_assert_eq!(formatted_len(kind, addr, port), format_span(kind, addr, port, d).len());
        }

        #[test]
        fn no_panic_random(bytes in proptest::collection::vec(any::<u8>(), 0..64), client in any::<bool>()) {
            let all = [parse_port(&bytes), parse_eprt(&bytes), parse_227(&bytes), parse_229(&bytes)];
            for an in all.into_iter().flatten() {
                prop_assert!(an.span.start <= an.span.end && an.span.end <= bytes.len());
            }
            classify_command(&bytes);
            reply_code(&bytes);
            candidate(&bytes, client);
            let r = redacted(&bytes);
            prop_assert!(!r.contains('\n') && !r.contains('\r'));
        }

        /// Random bytes after a plausible prefix reach deeper into the grammars than pure noise.
        #[test]
        fn no_panic_structured(
            pre in prop_oneof![Just("PORT "), Just("EPRT "), Just("227 "), Just("229 ("), Just("EPRT |1|")],
            tail in proptest::collection::vec(
                prop_oneof![Just(b'|'), Just(b','), Just(b'.'), Just(b')'), b'0'..=b'9', any::<u8>()], 0..40),
        ) {
            let mut line = pre.as_bytes().to_vec();
            line.extend(tail);
            let all = [parse_port(&line), parse_eprt(&line), parse_227(&line), parse_229(&line)];
            for an in all.into_iter().flatten() {
                // Whatever parses must survive the rewrite and parse back to the same values.
                let again = rebuild(&line, &an);
                let p = match an.kind {
                    Kind::Port => parse_port,
                    Kind::Eprt => parse_eprt,
                    Kind::Pasv227 => parse_227,
                    Kind::Epsv229 => parse_229,
                };
                let an2 = p(&again).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!((an2.addr, an2.port, an2.delim), (an.addr, an.port, an.delim));
            }
        }
    }
}
