//! The lines of the FTP ALG for IPv6-to-IPv4 translation (RFC 6384): what an IPv6 client's EPSV, EPRT,
//! ALGS, LPRT and LPSV say, what the gateway sends the IPv4 server instead, and the replies it writes.
//!
//! Owns: the byte-level grammar and the decisions that follow from a line alone (which EPSV argument
//! becomes PASV, which is answered by the gateway and how). Pure functions, no state. Must not: know
//! about flows, sequence numbers, mappings or pinholes (the session and the engine's hook decide and
//! allocate; this formats what they decided).
//!
//! The gateway never invents a segment: when it must answer a command itself (EPSV ALL, EPSV with
//! another family, ALGS), the command is replaced by `NOOP` on its way to the server and the server's
//! reply to that NOOP is replaced by the gateway's answer (RFC 6384 §12). Both directions keep their
//! byte streams, so sequence numbers, retransmissions and ACKs stay the stream layer's ordinary edits.
//!
//! Decisions (RFC 6384 quoted where it decides):
//! - `EPSV` and `EPSV 2` become `PASV`; the server's `227` becomes `229 Entering Extended Passive Mode
//!   (|||port|)` (§6). The 227's address is not carried: the client connects to the address it
//!   already reaches the server at, so a server that names another host (or its own private address
//!   behind a NAT) cannot point an IPv6 client elsewhere.
//! - `EPSV 1` or any other family: answered `522 Network protocol not supported, use (2)` (RFC 2428
//!   §3's reply; the client has only IPv6). `EPSV ALL`: answered `504 Command not implemented for
//!   that parameter` and never passed on, since a server in EPSV-ALL mode would refuse the PASV the
//!   ALG sends it (RFC 2428 §4). A malformed EPSV argument is passed on unchanged (the server
//!   refuses it; the ALG has nothing to translate).
//! - `EPRT |2|addr|port|` naming the sender becomes `PORT` with the public address and a mapped port
//!   (§7); naming any other address, or `|1|` (an IPv6-only client has no IPv4 address to name), or
//!   malformed, or refused by the policy (low port, no public port): answered `501` by the gateway
//!   through the NOOP substitution, never passed on (an IPv4 server with another IPv6 path must not
//!   be made to connect to a third host).
//! - `ALGS STATUS64 | ENABLE64 | DISABLE64` (§11) are answered `216 <state>`, `<state>` being
//!   `EPSVEPRT` (both translated) or `NONE`; another ALGS argument: `501`. Disabling stops the EPSV
//!   and EPRT translations for the session (the lines then pass unchanged).
//! - `LPSV` (RFC 1639) becomes `PASV`, its `227` becomes `228 Entering Long Passive Mode (6,16,…,2,p1,p2)`
//!   naming the server's IPv6 address as the client sees it. `LPRT` family 6 naming the sender becomes
//!   `PORT` like EPRT; family 4 is answered `521 Supported address families are (6)` — not passed on:
//!   an IPv4 server would accept it and connect to an address that is not the client.
//!
//! The mirror case, an IPv4 client reaching an IPv6-only server through a forward (RFC 6146 §3.5):
//! RFC 6384 does not cover it, and an IPv6 server may refuse PASV and PORT outright (RFC 2428 §1
//! lets it; pyftpdlib does on IPv6), so the same rules run the other way:
//! - `PASV` becomes `EPSV`; the server's `229 (|||port|)` becomes `227 Entering Passive Mode
//!   (h1,…,h4,p1,p2)` naming the public address and the pinhole's public port (the IPv4 ALG's 229
//!   rule, formatted as the 227 the client asked for). `EPSV 1` becomes `EPSV` (the client's family
//!   is the gateway's business); any other EPSV passes and its 229 is the IPv4 ALG's.
//! - `PORT` and `EPRT |1|` naming the client itself become `EPRT |2|<the client's RFC 6052 address>|port|`:
//!   the server's data connection then leaves as any inside host's connection does. Naming another
//!   address (RFC 2577's bounce), `|2|` (an IPv4 client has no IPv6 address), a low port under the
//!   policy, or malformed: answered `501` through the NOOP substitution.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::parse::{self, Candidate, Kind, ParseError};

/// What an `EPSV` command asks (RFC 2428 §3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// No argument: the control connection's family.
    Default,
    /// A network protocol number (1 = IPv4, 2 = IPv6).
    Family(u32),
    /// `EPSV ALL`.
    All,
}

/// A reply the gateway writes in place of the server's reply to the NOOP it substituted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GatewayReply {
    /// `EPSV` with a family other than 2 (RFC 2428 §3).
    EpsvFamily,
    /// `EPSV ALL`.
    EpsvAll,
    /// `ALGS`: the state after the command (`true`: EPSV and EPRT are translated).
    Algs { enabled: bool },
    /// `ALGS` with an argument RFC 6384 does not define.
    AlgsUnknown,
    /// `LPRT` with a family other than 6.
    LprtFamily,
    /// `EPRT`/`LPRT` naming an address other than the client's own, or one the ALG cannot honour
    /// (malformed, a port the policy refuses, no public port free): the FTP bounce attack (RFC 2577
    /// §3) is not passed on for the server to judge.
    PortRefused,
}

impl GatewayReply {
    /// The reply line (with `eol`, the line end of the command it answers).
    pub fn line(self, eol: &[u8]) -> Vec<u8> {
        let text: &[u8] = match self {
            GatewayReply::EpsvFamily => b"522 Network protocol not supported, use (2)",
            GatewayReply::EpsvAll => b"504 Command not implemented for that parameter",
            GatewayReply::Algs { enabled: true } => {
                b"216 EPSVEPRT NAT64 FTP ALG translates EPSV to PASV and EPRT to PORT"
            }
            GatewayReply::Algs { enabled: false } => b"216 NONE NAT64 FTP ALG translation disabled",
            GatewayReply::AlgsUnknown => b"501 ALGS arguments are STATUS64, ENABLE64 and DISABLE64",
            GatewayReply::LprtFamily => b"521 Supported address families are (6)",
            GatewayReply::PortRefused => {
                b"501 Data address refused: it must be this connection's client address"
            }
        };
        [text, eol].concat()
    }
    /// The reply code.
    pub fn code(self) -> u16 {
        match self {
            GatewayReply::EpsvFamily => 522,
            GatewayReply::EpsvAll => 504,
            GatewayReply::Algs { .. } => 216,
            GatewayReply::AlgsUnknown => 501,
            GatewayReply::LprtFamily => 521,
            GatewayReply::PortRefused => 501,
        }
    }
}

/// What the ALG does with an EPSV command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvAction {
    /// Send `PASV`; rewrite the `227` to a `229`.
    ToPasv,
    /// Send `NOOP`; answer the client with this instead of the server's reply.
    Answer(GatewayReply),
    /// Pass the line unchanged.
    Pass,
}

/// The `ALGS` arguments (RFC 6384 §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algs {
    Status64,
    Enable64,
    Disable64,
}

/// The client commands this module knows, by verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command64 {
    Epsv,
    Eprt,
    Algs,
    Lprt,
    Lpsv,
    Other,
}

/// A parsed `EPRT` (RFC 2428 §2) or `LPRT` (RFC 1639) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAddr {
    pub addr: IpAddr,
    pub port: u16,
}

/// The line end of `line`: CRLF, a bare LF, or nothing for an unterminated line. Replacement lines
/// end the way the line they replace did.
pub fn line_end(line: &[u8]) -> &'static [u8] {
    if line.ends_with(b"\r\n") {
        b"\r\n"
    } else if line.ends_with(b"\n") {
        b"\n"
    } else {
        b""
    }
}

/// The line without its line end and trailing spaces.
fn body(line: &[u8]) -> &[u8] {
    let l = &line[..line.len() - line_end(line).len()];
    let n = l.iter().rev().take_while(|&&b| b == b' ').count();
    &l[..l.len() - n]
}

/// The verb and the argument (after exactly one SP, RFC 959 §5.3.1), if any.
fn verb_arg(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    let b = body(line);
    match b.iter().position(|&c| c == b' ') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    }
}

/// Classifies a client command by its verb (case-insensitive).
pub fn command64(line: &[u8]) -> Command64 {
    let (verb, _) = verb_arg(line);
    let is = |v: &[u8]| verb.eq_ignore_ascii_case(v);
    if is(b"EPSV") {
        Command64::Epsv
    } else if is(b"EPRT") {
        Command64::Eprt
    } else if is(b"ALGS") {
        Command64::Algs
    } else if is(b"LPRT") {
        Command64::Lprt
    } else if is(b"LPSV") {
        Command64::Lpsv
    } else {
        Command64::Other
    }
}

/// A decimal number of 1..=`digits` digits (leading zeros allowed, bounded so it cannot overflow).
fn number(d: &[u8], digits: usize) -> Result<u32, ParseError> {
    if d.is_empty() || d.len() > digits || !d.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::Malformed);
    }
    Ok(d.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')))
}

/// `EPSV`, `EPSV <n>` or `EPSV ALL`.
pub fn parse_epsv(line: &[u8]) -> Result<EpsvArg, ParseError> {
    let (verb, arg) = verb_arg(line);
    if !verb.eq_ignore_ascii_case(b"EPSV") {
        return Err(ParseError::NotThisKind);
    }
    match arg {
        None => Ok(EpsvArg::Default),
        Some(a) if a.eq_ignore_ascii_case(b"ALL") => Ok(EpsvArg::All),
        Some(a) => number(a, 5).map(EpsvArg::Family),
    }
}

/// RFC 6384 §6 and the module header's decisions for an EPSV line.
pub fn epsv_action(line: &[u8]) -> EpsvAction {
    match parse_epsv(line) {
        Ok(EpsvArg::Default | EpsvArg::Family(2)) => EpsvAction::ToPasv,
        Ok(EpsvArg::Family(_)) => EpsvAction::Answer(GatewayReply::EpsvFamily),
        Ok(EpsvArg::All) => EpsvAction::Answer(GatewayReply::EpsvAll),
        Err(_) => EpsvAction::Pass,
    }
}

/// `EPRT <d><af><d><addr><d><port><d>` for family 1 (dotted quad) or 2 (RFC 4291 text, no zone).
/// Other families: `WrongFamily`. The delimiter is ASCII 33..=126 and not a digit (as in `parse`).
pub fn parse_eprt(line: &[u8]) -> Result<DataAddr, ParseError> {
    let (verb, arg) = verb_arg(line);
    if !verb.eq_ignore_ascii_case(b"EPRT") {
        return Err(ParseError::NotThisKind);
    }
    let arg = arg.ok_or(ParseError::Malformed)?;
    let d = *arg.first().ok_or(ParseError::Malformed)?;
    if !(33..=126).contains(&d) || d.is_ascii_digit() {
        return Err(ParseError::Malformed);
    }
    let f: Vec<&[u8]> = arg.split(|&c| c == d).collect();
    // Exactly four delimiters bounding three fields.
    if f.len() != 5 || !f[0].is_empty() || !f[4].is_empty() {
        return Err(ParseError::Malformed);
    }
    let family = number(f[1], 5)?;
    let text = std::str::from_utf8(f[2]).map_err(|_| ParseError::Malformed)?;
    let addr = match family {
        1 => IpAddr::V4(text.parse::<Ipv4Addr>().map_err(|_| ParseError::Malformed)?),
        2 => IpAddr::V6(text.parse::<Ipv6Addr>().map_err(|_| ParseError::Malformed)?),
        _ => return Err(ParseError::WrongFamily),
    };
    let port = u16::try_from(number(f[3], 5)?).map_err(|_| ParseError::Malformed)?;
    Ok(DataAddr { addr, port })
}

/// `ALGS STATUS64 | ENABLE64 | DISABLE64` (case-insensitive). `Malformed` for another argument or
/// none; `NotThisKind` for another verb.
pub fn parse_algs(line: &[u8]) -> Result<Algs, ParseError> {
    let (verb, arg) = verb_arg(line);
    if !verb.eq_ignore_ascii_case(b"ALGS") {
        return Err(ParseError::NotThisKind);
    }
    let arg = arg.ok_or(ParseError::Malformed)?;
    let is = |v: &[u8]| arg.eq_ignore_ascii_case(v);
    if is(b"STATUS64") {
        Ok(Algs::Status64)
    } else if is(b"ENABLE64") {
        Ok(Algs::Enable64)
    } else if is(b"DISABLE64") {
        Ok(Algs::Disable64)
    } else {
        Err(ParseError::Malformed)
    }
}

/// RFC 6384 §11: the session's ALG state after an ALGS command (`enabled` before it), and the reply.
pub fn algs_answer(line: &[u8], enabled: bool) -> (bool, GatewayReply) {
    match parse_algs(line) {
        Ok(Algs::Status64) => (enabled, GatewayReply::Algs { enabled }),
        Ok(Algs::Enable64) => (true, GatewayReply::Algs { enabled: true }),
        Ok(Algs::Disable64) => (false, GatewayReply::Algs { enabled: false }),
        Err(_) => (enabled, GatewayReply::AlgsUnknown),
    }
}

/// `LPRT af,hal,h1,…,hn,pal,p1,p2` (RFC 1639 §2): family 4 with 4 address bytes or 6 with 16, and a
/// 2-byte port. Other families: `WrongFamily`.
pub fn parse_lprt(line: &[u8]) -> Result<DataAddr, ParseError> {
    let (verb, arg) = verb_arg(line);
    if !verb.eq_ignore_ascii_case(b"LPRT") {
        return Err(ParseError::NotThisKind);
    }
    let arg = arg.ok_or(ParseError::Malformed)?;
    let n: Vec<u8> = arg
        .split(|&c| c == b',')
        .map(|d| number(d, 3).and_then(|v| u8::try_from(v).map_err(|_| ParseError::Malformed)))
        .collect::<Result<_, _>>()?;
    let (af, hal) =
        (*n.first().ok_or(ParseError::Malformed)?, usize::from(*n.get(1).ok_or(ParseError::Malformed)?));
    let addr = match (af, hal) {
        (4, 4) if n.len() == 2 + 4 + 3 => IpAddr::V4(Ipv4Addr::new(n[2], n[3], n[4], n[5])),
        (6, 16) if n.len() == 2 + 16 + 3 => {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&n[2..18]).map_err(|_| ParseError::Malformed)?))
        }
        (4 | 6, _) => return Err(ParseError::Malformed),
        _ => return Err(ParseError::WrongFamily),
    };
    let p = &n[2 + hal..];
    if p[0] != 2 {
        return Err(ParseError::Malformed);
    }
    Ok(DataAddr { addr, port: u16::from_be_bytes([p[1], p[2]]) })
}

/// `PASV` with the line end of the command it replaces.
pub fn pasv_line(eol: &[u8]) -> Vec<u8> {
    [b"PASV", eol].concat()
}

/// `NOOP` with the line end of the command it replaces (RFC 6384 §12).
pub fn noop_line(eol: &[u8]) -> Vec<u8> {
    [b"NOOP", eol].concat()
}

/// `PORT h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2) for an EPRT or LPRT the gateway translated.
pub fn port_line(addr: Ipv4Addr, port: u16, eol: &[u8]) -> Vec<u8> {
    [&b"PORT "[..], &parse::format_span(Kind::Port, addr, port, 0), eol].concat()
}

/// `EPSV` with the line end of the `PASV` (or `EPSV 1`) it replaces.
pub fn epsv_line(eol: &[u8]) -> Vec<u8> {
    [b"EPSV", eol].concat()
}

/// `EPRT |2|addr|port|` (RFC 2428 §2) for an IPv4 client's PORT/EPRT to an IPv6 server.
pub fn eprt6_line(addr: Ipv6Addr, port: u16, eol: &[u8]) -> Vec<u8> {
    [format!("EPRT |2|{addr}|{port}|").as_bytes(), eol].concat()
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).` (RFC 959 §4.2) for an IPv6 server's 229.
pub fn reply_227(addr: Ipv4Addr, port: u16, eol: &[u8]) -> Vec<u8> {
    [&b"227 Entering Passive Mode ("[..], &parse::format_span(Kind::Pasv227, addr, port, 0), b").", eol]
        .concat()
}

/// `229 Entering Extended Passive Mode (|||port|)` (RFC 2428 §3) for the server's 227.
pub fn reply_229(port: u16, eol: &[u8]) -> Vec<u8> {
    format!("229 Entering Extended Passive Mode (|||{port}|)")
        .into_bytes()
        .into_iter()
        .chain(eol.iter().copied())
        .collect()
}

/// `228 Entering Long Passive Mode (6,16,a1,…,a16,2,p1,p2)` (RFC 1639 §2) for the server's 227.
pub fn reply_228(addr: Ipv6Addr, port: u16, eol: &[u8]) -> Vec<u8> {
    let mut s = String::from("228 Entering Long Passive Mode (6,16");
    for b in addr.octets().into_iter().chain([2]).chain(port.to_be_bytes()) {
        s.push(',');
        s.push_str(&b.to_string());
    }
    s.push(')');
    [s.as_bytes(), eol].concat()
}

/// The port of a `227` reply (RFC 959 / RFC 1123 §4.1.2.6, parsed as `parse::parse_227` does), and
/// the address it names.
pub fn parse_227(line: &[u8]) -> Result<(Ipv4Addr, u16), ParseError> {
    let a = parse::parse_227(line)?;
    Ok((a.addr.unwrap_or(Ipv4Addr::UNSPECIFIED), a.port))
}

/// Whether a line starting with `prefix` (possibly incomplete) may be one this module rewrites or
/// replaces, so that the framer holds it until it is complete. For replies, only the 227 (to become
/// a 229/228); a reply the gateway replaces whole (after a NOOP) is the session's to hold. `PASV` is
/// one for an IPv6 server (it becomes `EPSV`).
pub fn candidate(prefix: &[u8], from_client: bool) -> Candidate {
    let pats: &[&[u8]] =
        if from_client { &[b"EPSV", b"EPRT ", b"ALGS", b"LPRT ", b"LPSV", b"PASV"] } else { &[b"227 "] };
    parse::candidate_of(prefix, pats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn server_side_lines() {
        assert_eq!(epsv_line(b"\r\n"), b"EPSV\r\n");
        assert_eq!(
            eprt6_line("64:ff9b:1::cb00:7109".parse().unwrap(), 50123, b"\n"),
            b"EPRT |2|64:ff9b:1::cb00:7109|50123|\n"
        );
        let r = reply_227(Ipv4Addr::new(198, 51, 100, 1), 31000, b"\r\n");
        assert_eq!(r, b"227 Entering Passive Mode (198,51,100,1,121,24).\r\n");
        assert_eq!(parse_227(&r), Ok((Ipv4Addr::new(198, 51, 100, 1), 31000)));
        assert_eq!(candidate(b"PA", true), Candidate::Maybe);
    }

    #[test]
    fn epsv_variants_rfc6384_section_6() {
        for (line, want) in [
            (&b"EPSV\r\n"[..], EpsvAction::ToPasv),
            (b"epsv\r\n", EpsvAction::ToPasv),
            (b"EPSV 2\r\n", EpsvAction::ToPasv),
            (b"EPSV 02\r\n", EpsvAction::ToPasv),
            (b"EPSV 2  \r\n", EpsvAction::ToPasv),
            (b"EPSV\n", EpsvAction::ToPasv),
            (b"EPSV 1\r\n", EpsvAction::Answer(GatewayReply::EpsvFamily)),
            (b"EPSV 3\r\n", EpsvAction::Answer(GatewayReply::EpsvFamily)),
            (b"EPSV 0\r\n", EpsvAction::Answer(GatewayReply::EpsvFamily)),
            (b"EPSV ALL\r\n", EpsvAction::Answer(GatewayReply::EpsvAll)),
            (b"Epsv all\r\n", EpsvAction::Answer(GatewayReply::EpsvAll)),
            (b"EPSV foo\r\n", EpsvAction::Pass),
            (b"EPSV  2\r\n", EpsvAction::Pass),
            (b"EPSV 123456\r\n", EpsvAction::Pass),
            (b"EPSVX\r\n", EpsvAction::Pass),
        ] {
            assert_eq!(epsv_action(line), want, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(parse_epsv(b"PASV\r\n"), Err(ParseError::NotThisKind));
    }

    #[test]
    fn gateway_replies() {
        assert_eq!(
            GatewayReply::EpsvAll.line(b"\r\n"),
            b"504 Command not implemented for that parameter\r\n"
        );
        assert_eq!(GatewayReply::EpsvFamily.line(b"\n"), b"522 Network protocol not supported, use (2)\n");
        let on = GatewayReply::Algs { enabled: true }.line(b"\r\n");
        assert!(on.starts_with(b"216 EPSVEPRT ") && on.ends_with(b"\r\n"));
        assert!(GatewayReply::Algs { enabled: false }.line(b"\r\n").starts_with(b"216 NONE "));
        for r in [
            GatewayReply::EpsvFamily,
            GatewayReply::EpsvAll,
            GatewayReply::Algs { enabled: true },
            GatewayReply::AlgsUnknown,
            GatewayReply::LprtFamily,
            GatewayReply::PortRefused,
        ] {
            let l = r.line(b"\r\n");
            // Every reply is one final line whose code the reply parser reads back.
            assert_eq!(parse::reply_code(&l), Some((r.code(), false)), "{r:?}");
            assert!(l.is_ascii());
            assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
        }
    }

    #[test]
    fn algs_rfc6384_section_11() {
        assert_eq!(algs_answer(b"ALGS STATUS64\r\n", true), (true, GatewayReply::Algs { enabled: true }));
        assert_eq!(algs_answer(b"ALGS STATUS64\r\n", false), (false, GatewayReply::Algs { enabled: false }));
        assert_eq!(algs_answer(b"algs disable64\r\n", true), (false, GatewayReply::Algs { enabled: false }));
        assert_eq!(algs_answer(b"ALGS ENABLE64\r\n", false), (true, GatewayReply::Algs { enabled: true }));
        assert_eq!(algs_answer(b"ALGS FOO\r\n", true), (true, GatewayReply::AlgsUnknown));
        assert_eq!(algs_answer(b"ALGS\r\n", false), (false, GatewayReply::AlgsUnknown));
        assert_eq!(parse_algs(b"ALGSX STATUS64\r\n"), Err(ParseError::NotThisKind));
    }

    #[test]
    fn eprt_both_families() {
        let a = parse_eprt(b"EPRT |2|2001:db8::2|50000|\r\n").unwrap();
        assert_eq!(a, DataAddr { addr: "2001:db8::2".parse().unwrap(), port: 50000 });
        let a = parse_eprt(b"eprt !2!2001:DB8:0:0:0:0:0:2!05000!\n").unwrap();
        assert_eq!(a, DataAddr { addr: "2001:db8::2".parse().unwrap(), port: 5000 });
        let a = parse_eprt(b"EPRT |2|::ffff:10.0.0.1|21|").unwrap();
        assert_eq!(a.addr, IpAddr::V6("::ffff:10.0.0.1".parse().unwrap()));
        let a = parse_eprt(b"EPRT |1|192.0.2.1|6446|\r\n").unwrap();
        assert_eq!(a, DataAddr { addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), port: 6446 });
        for bad in [
            &b"EPRT |2|2001:db8::2|65536|\r\n"[..],
            b"EPRT |2|2001:db8::2%eth0|5000|\r\n",
            b"EPRT |2|2001:db8::g|5000|\r\n",
            b"EPRT |2|2001:db8::2|5000\r\n",
            b"EPRT |2|2001:db8::2||\r\n",
            b"EPRT 1|2|2001:db8::2|5000|\r\n",
            b"EPRT |2|2001:db8::2|5000|x|\r\n",
            b"EPRT\r\n",
            b"EPRT |1|10.0.0.300|21|\r\n",
            b"EPRT :2:2001:db8::2:5000:\r\n",
        ] {
            assert_eq!(parse_eprt(bad), Err(ParseError::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_eprt(b"EPRT |3|x|5|\r\n"), Err(ParseError::WrongFamily));
        assert_eq!(parse_eprt(b"PORT 1,2,3,4,5,6\r\n"), Err(ParseError::NotThisKind));
    }

    #[test]
    fn lprt_rfc1639() {
        let line = b"LPRT 6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,2,195,80\r\n";
        assert_eq!(parse_lprt(line).unwrap(), DataAddr { addr: "2001:db8::2".parse().unwrap(), port: 50000 });
        let line = b"lprt 4,4,192,0,2,1,2,0,21\r\n";
        assert_eq!(parse_lprt(line).unwrap(), DataAddr { addr: "192.0.2.1".parse().unwrap(), port: 21 });
        for bad in [
            &b"LPRT 6,4,1,2,3,4,2,0,21\r\n"[..],
            b"LPRT 4,4,192,0,2,1,3,0,0,21\r\n",
            b"LPRT 4,4,192,0,2,1,2,0\r\n",
            b"LPRT 4,4,192,0,2,256,2,0,21\r\n",
            b"LPRT 4,4,192,0,2,1,2,0,21,\r\n",
            b"LPRT\r\n",
        ] {
            assert_eq!(parse_lprt(bad), Err(ParseError::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_lprt(b"LPRT 5,4,1,2,3,4,2,0,21\r\n"), Err(ParseError::WrongFamily));
        assert_eq!(GatewayReply::LprtFamily.line(b"\r\n"), b"521 Supported address families are (6)\r\n");
    }

    #[test]
    fn formatted_lines() {
        assert_eq!(pasv_line(b"\r\n"), b"PASV\r\n");
        assert_eq!(noop_line(b"\n"), b"NOOP\n");
        assert_eq!(
            port_line(Ipv4Addr::new(198, 51, 100, 1), 40001, b"\r\n"),
            b"PORT 198,51,100,1,156,65\r\n"
        );
        assert_eq!(reply_229(40001, b"\r\n"), b"229 Entering Extended Passive Mode (|||40001|)\r\n");
        let l = reply_228("64:ff9b:1::c633:6402".parse().unwrap(), 2121, b"\r\n");
        assert_eq!(
            l,
            b"228 Entering Long Passive Mode (6,16,0,100,255,155,0,1,0,0,0,0,0,0,198,51,100,2,2,8,73)\r\n"
        );
        // What the gateway writes, the IPv4 ALG's parsers read back.
        let p = parse::parse_port(&port_line(Ipv4Addr::new(10, 1, 2, 3), 1025, b"\r\n")).unwrap();
        assert_eq!((p.addr, p.port), (Some(Ipv4Addr::new(10, 1, 2, 3)), 1025));
        let r = parse::parse_229(&reply_229(65535, b"\r\n")).unwrap();
        assert_eq!(r.port, 65535);
        assert_eq!(
            parse_227(b"227 Entering Passive Mode (198,51,100,2,8,73)\r\n"),
            Ok((Ipv4Addr::new(198, 51, 100, 2), 2121))
        );
        assert_eq!(
            (line_end(b"X\r\n"), line_end(b"X\n"), line_end(b"X\r")),
            (&b"\r\n"[..], &b"\n"[..], &b""[..])
        );
    }

    #[test]
    fn classification_and_candidates() {
        for (line, c) in [
            (&b"EPSV\r\n"[..], Command64::Epsv),
            (b"eprt |2|::1|1|\r\n", Command64::Eprt),
            (b"ALGS STATUS64\r\n", Command64::Algs),
            (b"LPRT 6,16\r\n", Command64::Lprt),
            (b"LPSV\r\n", Command64::Lpsv),
            (b"PASV\r\n", Command64::Other),
            (b"EPSVX\r\n", Command64::Other),
        ] {
            assert_eq!(command64(line), c, "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(candidate(b"EP", true), Candidate::Maybe);
        assert_eq!(candidate(b"al", true), Candidate::Maybe);
        assert_eq!(candidate(b"LPS", true), Candidate::Maybe);
        assert_eq!(candidate(b"RETR", true), Candidate::No);
        assert_eq!(candidate(b"22", false), Candidate::Maybe);
        assert_eq!(candidate(b"229 ", false), Candidate::No);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(line in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = (parse_epsv(&line), epsv_action(&line), parse_eprt(&line), parse_algs(&line));
            let _ = (parse_lprt(&line), command64(&line), candidate(&line, true), candidate(&line, false));
            let _ = (algs_answer(&line, true), line_end(&line), parse_227(&line));
        }

        #[test]
        fn eprt_round_trip(a in any::<u128>(), port in any::<u16>(), d in prop::sample::select(b"|!#$%&*+-/;=?@^_~".to_vec())) {
            let addr = Ipv6Addr::from(a);
            let line = format!("EPRT {0}2{0}{1}{0}{2}{0}\r\n", d as char, addr, port);
            prop_assert_eq!(parse_eprt(line.as_bytes()), Ok(DataAddr { addr: IpAddr::V6(addr), port }));
        }

        #[test]
        fn lprt_228_round_trip(a in any::<u128>(), port in any::<u16>()) {
            let addr = Ipv6Addr::from(a);
            let reply = reply_228(addr, port, b"\r\n");
            let tuple = &reply[reply.iter().position(|&b| b == b'(').unwrap() + 1..reply.len() - 3];
            let lprt = [&b"LPRT "[..], tuple, b"\r\n"].concat();
            prop_assert_eq!(parse_lprt(&lprt), Ok(DataAddr { addr: IpAddr::V6(addr), port }));
        }
    }
}
