//! Scripted FTP peers on smoltcp TCP sockets, as step-driven state machines (no threads): a server that
//! behaves like vsftpd where it matters to an ALG, and a client that behaves like a client behind NAT.
//!
//! Owns: the FTP dialogue (RFC 959, RFC 2428), data connections, deterministic file contents, and the
//! transcripts tests compare. Must not: move packets or advance time ([`super::net::Net`] polls these
//! apps), or know whether a NAT sits in between.
//!
//! Both peers record the raw bytes of every control line they sent and received, line ends included,
//! and the whole control stream in each direction. Control writes go through an outbox: each write can be
//! cut at chosen offsets ([`Splitter`]); the pieces leave one per step (or `chunk_gap_us` apart), so
//! with Nagle off each piece is its own segment.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::IpAddress;

use super::net::{App, AppCx};
use super::SplitMix64;

/// Given the bytes of one control write, the offsets to cut it at (out-of-range and duplicate offsets are
/// ignored).
pub type Splitter = Box<dyn FnMut(&[u8]) -> Vec<usize>>;

/// Splits every write that starts with `prefix` at `points`; other writes stay whole.
pub fn split_lines_starting(prefix: &'static [u8], points: Vec<usize>) -> Splitter {
    Box::new(move |w: &[u8]| if w.starts_with(prefix) { points.clone() } else { Vec::new() })
}

/// The deterministic content of file `name` (`len` bytes): both peers generate it to check transfers.
pub fn file_bytes(name: &str, len: usize) -> Vec<u8> {
    // FNV-1a of the name seeds the stream, so different files differ.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SplitMix64::new(h);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2, PORT argument and 227 text).
pub fn format_host_port(addr: Ipv4Addr, port: u16) -> String {
    let o = addr.octets();
    format!("{},{},{},{},{},{}", o[0], o[1], o[2], o[3], port >> 8, port & 0xff)
}

/// Parses `h1,h2,h3,h4,p1,p2` (spaces around numbers allowed).
pub fn parse_host_port(s: &str) -> Option<(Ipv4Addr, u16)> {
    let n: Vec<u8> = s.split(',').map(|x| x.trim().parse::<u8>()).collect::<Result<_, _>>().ok()?;
    if n.len() != 6 {
        return None;
    }
    Some((Ipv4Addr::new(n[0], n[1], n[2], n[3]), u16::from(n[4]) << 8 | u16::from(n[5])))
}

/// Parses an EPRT argument `<d>1<d>addr<d>port<d>` (RFC 2428 §2); only IPv4 (family 1).
pub fn parse_eprt_arg(s: &str) -> Option<(Ipv4Addr, u16)> {
    let d = s.chars().next()?;
    if !('!'..='~').contains(&d) {
        return None;
    }
    let parts: Vec<&str> = s.split(d).collect();
    if parts.len() != 5 || !parts[0].is_empty() || !parts[4].trim().is_empty() || parts[1] != "1" {
        return None;
    }
    Some((parts[2].parse().ok()?, parts[3].parse().ok()?))
}

/// Parses a 227 reply's text the way curl does: the first run of digits and commas after the code.
pub fn parse_227(line: &str) -> Option<(Ipv4Addr, u16)> {
    let rest = line.get(4..)?;
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let run: String = rest[start..].chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    parse_host_port(run.trim_end_matches(','))
}

/// Parses the port out of a 229 reply `(<d><d><d>port<d>)` (RFC 2428 §3).
pub fn parse_229(line: &str) -> Option<u16> {
    let open = line.find('(')?;
    let inner = &line[open + 1..];
    let d = inner.chars().next()?;
    let rest = inner.strip_prefix(d)?.strip_prefix(d)?.strip_prefix(d)?;
    let end = rest.find(d)?;
    rest[..end].parse().ok()
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn new_socket(buf: usize, nagle: bool) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; buf]), tcp::SocketBuffer::new(vec![0; buf]));
    s.set_nagle_enabled(nagle);
    s.set_ack_delay(None);
    s
}

const CTRL_BUF: usize = 16 * 1024;
const DATA_BUF: usize = 32 * 1024;

/// Splits a byte stream into lines ending in LF (a bare LF ends a line too); keeps the rest.
#[derive(Debug, Default)]
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            lines.push(self.buf.drain(..=i).collect());
        }
        lines
    }
}

/// Pending control writes, cut into pieces that leave one per poll.
struct Outbox {
    chunks: VecDeque<Vec<u8>>,
    split: Option<Splitter>,
    gap_us: u64,
    last_us: Option<u64>,
    /// The socket could not take the front piece at the last poll; packets will wake us.
    blocked: bool,
}

impl Outbox {
    fn new(split: Option<Splitter>, gap_us: u64) -> Outbox {
        Outbox { chunks: VecDeque::new(), split, gap_us, last_us: None, blocked: false }
    }

    fn push(&mut self, bytes: Vec<u8>) {
        let mut points = self.split.as_mut().map(|f| f(&bytes)).unwrap_or_default();
        points.retain(|&p| p > 0 && p < bytes.len());
        points.sort_unstable();
        points.dedup();
        let mut start = 0;
        for p in points {
            self.chunks.push_back(bytes[start..p].to_vec());
            start = p;
        }
        self.chunks.push_back(bytes[start..].to_vec());
    }

    fn due(&self, now: u64) -> u64 {
        self.last_us.map_or(now, |l| l + self.gap_us)
    }

    fn flush(&mut self, s: &mut tcp::Socket<'static>, now: u64, stream: &mut Vec<u8>) {
        self.blocked = false;
        let Some(c) = self.chunks.front() else { return };
        if self.last_us.is_some_and(|l| now < l + self.gap_us) {
            return;
        }
        if !s.may_send() || s.send_capacity() - s.send_queue() < c.len() {
            self.blocked = true;
            return;
        }
        let n = s.send_slice(c).unwrap_or(0);
        debug_assert_eq!(n, c.len());
        stream.extend_from_slice(c);
        self.chunks.pop_front();
        self.last_us = Some(now);
    }

    fn poll_at(&self, now_hint: u64) -> Option<u64> {
        if self.chunks.is_empty() || self.blocked {
            None
        } else {
            Some(self.due(now_hint))
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

fn read_all(s: &mut tcp::Socket<'static>, into: &mut Vec<u8>) -> usize {
    let mut n = 0;
    while s.can_recv() {
        let got = s
            .recv(|b| {
                into.extend_from_slice(b);
                (b.len(), b.len())
            })
            .unwrap_or(0);
        if got == 0 {
            break;
        }
        n += got;
    }
    n
}

fn endpoint_v4(s: &tcp::Socket<'static>) -> Option<(Ipv4Addr, u16)> {
    let ep = s.remote_endpoint()?;
    let IpAddress::Ipv4(a) = ep.addr;
    Some((a, ep.port))
}

fn is_connected(state: State) -> bool {
    !matches!(state, State::Closed | State::Listen | State::SynSent | State::SynReceived)
}

// ---------------------------------------------------------------------------------------------------------
// Server

/// How the scripted server behaves.
pub struct ServerConfig {
    /// Control port to listen on.
    pub port: u16,
    /// The k-th PASV/EPSV listens on `pasv_ports[k]` if given, else on `pasv_port_base + k`.
    pub pasv_ports: Vec<u16>,
    pub pasv_port_base: u16,
    /// The address named in 227 replies; default: the server's own address.
    pub pasv_addr: Option<Ipv4Addr>,
    /// Source port of active-mode data connections (RFC 959: L-1, i.e. 20).
    pub active_src_port: u16,
    /// Like vsftpd without `port_promiscuous`: refuse PORT/EPRT naming an address other than the control
    /// connection's peer, or a port below 1024, with `500 Illegal PORT command.`
    pub strict_port: bool,
    /// Sizes of files RETR can fetch. A name not listed but starting with digits is that many bytes long.
    pub files: BTreeMap<String, usize>,
    /// Raw replies for verbs (uppercase) that take precedence over the built-in handling, e.g.
    /// `("SITE", b"227 Entering Passive Mode (10,0,0,9,1,2).\r\n")` for an unsolicited 227.
    pub replies: Vec<(String, Vec<u8>)>,
    pub split: Option<Splitter>,
    pub chunk_gap_us: u64,
    pub nagle: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 21,
            pasv_ports: Vec::new(),
            pasv_port_base: 30000,
            pasv_addr: None,
            active_src_port: 20,
            strict_port: true,
            files: BTreeMap::new(),
            replies: Vec::new(),
            split: None,
            chunk_gap_us: 0,
            nagle: false,
        }
    }
}

impl ServerConfig {
    pub fn file(mut self, name: &str, size: usize) -> Self {
        self.files.insert(name.to_string(), size);
        self
    }
    pub fn reply(mut self, verb: &str, raw: &[u8]) -> Self {
        self.replies.push((verb.to_ascii_uppercase(), raw.to_vec()));
        self
    }
    pub fn split(mut self, f: Splitter) -> Self {
        self.split = Some(f);
        self
    }

    fn file_size(&self, name: &str) -> Option<usize> {
        if let Some(&n) = self.files.get(name) {
            return Some(n);
        }
        let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
}

enum DataSetup {
    None,
    Active(Ipv4Addr, u16),
    Passive(SocketHandle),
}

struct ServerXfer {
    sock: SocketHandle,
    retr: bool,
    name: String,
    data: Vec<u8>,
    off: usize,
    started: bool,
    closing: bool,
}

/// The scripted FTP server: one control session, then it is done.
pub struct FtpServer {
    cfg: ServerConfig,
    ctrl: Option<SocketHandle>,
    peer: Option<Ipv4Addr>,
    greeted: bool,
    reader: LineReader,
    pending: VecDeque<Vec<u8>>,
    out: Outbox,
    setup: DataSetup,
    xfer: Option<ServerXfer>,
    pasv_count: usize,
    zombies: Vec<SocketHandle>,
    quitting: bool,
    closed: bool,
    now_us: u64,
    /// Every control line received, raw, line end included.
    pub received_lines: Vec<Vec<u8>>,
    /// Every reply line written, raw.
    pub sent_lines: Vec<Vec<u8>>,
    /// The control stream as received / as written.
    pub received_stream: Vec<u8>,
    pub sent_stream: Vec<u8>,
    /// Files received by STOR.
    pub stored: BTreeMap<String, Vec<u8>>,
    /// Names served by a completed RETR.
    pub retrieved: Vec<String>,
    /// The remote endpoint of each data connection, as the server saw it.
    pub data_peers: Vec<(Ipv4Addr, u16)>,
    /// The control connection's peer, as the server saw it.
    pub ctrl_peer: Option<(Ipv4Addr, u16)>,
    /// PORT/EPRT lines refused with 500.
    pub refused: Vec<Vec<u8>>,
}

impl FtpServer {
    pub fn new(mut cfg: ServerConfig) -> FtpServer {
        let out = Outbox::new(cfg.split.take(), cfg.chunk_gap_us);
        FtpServer {
            cfg,
            ctrl: None,
            peer: None,
            greeted: false,
            reader: LineReader::default(),
            pending: VecDeque::new(),
            out,
            setup: DataSetup::None,
            xfer: None,
            pasv_count: 0,
            zombies: Vec::new(),
            quitting: false,
            closed: false,
            now_us: 0,
            received_lines: Vec::new(),
            sent_lines: Vec::new(),
            received_stream: Vec::new(),
            sent_stream: Vec::new(),
            stored: BTreeMap::new(),
            retrieved: Vec::new(),
            data_peers: Vec::new(),
            ctrl_peer: None,
            refused: Vec::new(),
        }
    }

    /// The session ended (QUIT answered and the control connection closed, or the peer went away).
    pub fn finished(&self) -> bool {
        self.closed
    }

    fn reply(&mut self, text: &str) {
        let line = format!("{text}\r\n").into_bytes();
        self.reply_raw(line);
    }

    fn reply_raw(&mut self, raw: Vec<u8>) {
        let mut r = LineReader::default();
        self.sent_lines.extend(r.push(&raw));
        if !r.buf.is_empty() {
            self.sent_lines.push(r.buf);
        }
        self.out.push(raw);
    }

    fn handle_line(&mut self, cx: &mut AppCx<'_>, raw: &[u8]) {
        let text = String::from_utf8_lossy(strip_eol(raw)).into_owned();
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
            None => (text.to_ascii_uppercase(), String::new()),
        };
        if let Some((_, r)) = self.cfg.replies.iter().find(|(v, _)| *v == verb) {
            let r = r.clone();
            self.reply_raw(r);
            return;
        }
        match verb.as_str() {
            "USER" => self.reply("331 Please specify the password."),
            "PASS" => self.reply("230 Login successful."),
            "TYPE" => self.reply("200 Switching to Binary mode."),
            "NOOP" => self.reply("200 NOOP ok."),
            "PORT" | "EPRT" => {
                let parsed = if verb == "PORT" { parse_host_port(&arg) } else { parse_eprt_arg(&arg) };
                let Some((addr, port)) = parsed else {
                    self.reply(if verb == "PORT" {
                        "500 Illegal PORT command."
                    } else {
                        "500 Bad EPRT command."
                    });
                    return;
                };
                if self.cfg.strict_port && (Some(addr) != self.peer || port < 1024) {
                    self.refused.push(raw.to_vec());
                    self.reply("500 Illegal PORT command.");
                    return;
                }
                self.drop_setup(cx);
                self.setup = DataSetup::Active(addr, port);
                self.reply(if verb == "PORT" {
                    "200 PORT command successful. Consider using PASV."
                } else {
                    "200 EPRT command successful. Consider using EPSV."
                });
            }
            "PASV" | "EPSV" => {
                self.drop_setup(cx);
                let k = self.pasv_count;
                self.pasv_count += 1;
                let port = self.cfg.pasv_ports.get(k).copied().unwrap_or(self.cfg.pasv_port_base + k as u16);
                let mut s = new_socket(DATA_BUF, self.cfg.nagle);
                if s.listen(port).is_err() {
                    self.reply("425 Could not listen.");
                    return;
                }
                self.setup = DataSetup::Passive(cx.sockets.add(s));
                if verb == "PASV" {
                    let addr = self.cfg.pasv_addr.unwrap_or(cx.addr);
                    self.reply(&format!("227 Entering Passive Mode ({}).", format_host_port(addr, port)));
                } else {
                    self.reply(&format!("229 Entering Extended Passive Mode (|||{port}|)"));
                }
            }
            "RETR" | "STOR" => {
                let retr = verb == "RETR";
                let data = if retr {
                    match self.cfg.file_size(&arg) {
                        Some(n) => file_bytes(&arg, n),
                        None => {
                            self.reply("550 Failed to open file.");
                            return;
                        }
                    }
                } else {
                    Vec::new()
                };
                let sock = match std::mem::replace(&mut self.setup, DataSetup::None) {
                    DataSetup::None => {
                        self.reply("425 Use PORT or PASV first.");
                        return;
                    }
                    DataSetup::Passive(h) => h,
                    DataSetup::Active(addr, port) => {
                        let mut s = new_socket(DATA_BUF, self.cfg.nagle);
                        if s.connect(cx.iface.context(), (addr, port), self.cfg.active_src_port).is_err() {
                            self.reply("425 Failed to establish connection.");
                            return;
                        }
                        cx.sockets.add(s)
                    }
                };
                self.xfer =
                    Some(ServerXfer { sock, retr, name: arg, data, off: 0, started: false, closing: false });
            }
            "QUIT" => {
                self.reply("221 Goodbye.");
                self.quitting = true;
            }
            _ => self.reply("502 Command not implemented."),
        }
    }

    fn drop_setup(&mut self, cx: &mut AppCx<'_>) {
        if let DataSetup::Passive(h) = std::mem::replace(&mut self.setup, DataSetup::None) {
            cx.sockets.get_mut::<tcp::Socket>(h).abort();
            self.zombies.push(h);
        }
    }

    fn progress_xfer(&mut self, cx: &mut AppCx<'_>) {
        let Some(x) = self.xfer.as_mut() else { return };
        let s = cx.sockets.get_mut::<tcp::Socket>(x.sock);
        if !x.started {
            if is_connected(s.state()) {
                x.started = true;
                if let Some(ep) = endpoint_v4(s) {
                    self.data_peers.push(ep);
                }
                let msg = if x.retr {
                    format!(
                        "150 Opening BINARY mode data connection for {} ({} bytes).",
                        x.name,
                        x.data.len()
                    )
                } else {
                    format!("150 Ok to send data for {}.", x.name)
                };
                self.reply(&msg);
            } else if s.state() == State::Closed {
                let sock = x.sock;
                self.xfer = None;
                self.zombies.push(sock);
                self.reply("425 Failed to establish connection.");
            }
            return;
        }
        let mut done: Option<&'static str> = None;
        if x.retr {
            while x.off < x.data.len() && s.can_send() {
                let n = s.send_slice(&x.data[x.off..]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                x.off += n;
            }
            if x.off == x.data.len() && !x.closing {
                s.close();
                x.closing = true;
            }
            if x.closing && s.send_queue() == 0 {
                done = Some("226 Transfer complete.");
                self.retrieved.push(x.name.clone());
            } else if s.state() == State::Closed {
                done = Some("426 Failure writing network stream.");
            }
        } else {
            read_all(s, &mut x.data);
            if !s.may_recv() {
                s.close();
                self.stored.insert(x.name.clone(), std::mem::take(&mut x.data));
                done = Some("226 Transfer complete.");
            }
        }
        if let Some(msg) = done {
            let sock = x.sock;
            self.xfer = None;
            self.zombies.push(sock);
            self.reply(msg);
        }
    }
}

impl App for FtpServer {
    fn poll(&mut self, cx: &mut AppCx<'_>) {
        self.now_us = cx.now_us;
        if self.closed {
            return;
        }
        let ctrl = match self.ctrl {
            Some(h) => h,
            None => {
                let mut s = new_socket(CTRL_BUF, self.cfg.nagle);
                s.listen(self.cfg.port).expect("listen on the control port");
                let h = cx.sockets.add(s);
                self.ctrl = Some(h);
                h
            }
        };
        let s = cx.sockets.get_mut::<tcp::Socket>(ctrl);
        if !self.greeted && is_connected(s.state()) {
            self.greeted = true;
            self.ctrl_peer = endpoint_v4(s);
            self.peer = self.ctrl_peer.map(|p| p.0);
            self.reply("220 ftpnat-test FTP server ready.");
        }
        let s = cx.sockets.get_mut::<tcp::Socket>(ctrl);
        let mut bytes = Vec::new();
        read_all(s, &mut bytes);
        let peer_gone = self.greeted && !s.may_recv();
        self.received_stream.extend_from_slice(&bytes);
        for line in self.reader.push(&bytes) {
            self.received_lines.push(line.clone());
            self.pending.push_back(line);
        }
        while self.xfer.is_none() && !self.quitting {
            let Some(line) = self.pending.pop_front() else { break };
            self.handle_line(cx, &line);
        }
        self.progress_xfer(cx);
        let s = cx.sockets.get_mut::<tcp::Socket>(ctrl);
        self.out.flush(s, cx.now_us, &mut self.sent_stream);
        if (self.quitting || peer_gone) && self.out.is_empty() && self.xfer.is_none() {
            s.close();
            self.closed = true;
        }
        self.zombies.retain(|&h| {
            let st = cx.sockets.get::<tcp::Socket>(h).state();
            if matches!(st, State::Closed | State::TimeWait) {
                cx.sockets.remove(h);
                false
            } else {
                true
            }
        });
    }

    fn poll_at(&self) -> Option<u64> {
        self.out.poll_at(self.now_us)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

// ---------------------------------------------------------------------------------------------------------
// Client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Port,
    Eprt,
    Pasv,
    Epsv,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Port, Mode::Eprt, Mode::Pasv, Mode::Epsv];
    pub fn is_active(self) -> bool {
        matches!(self, Mode::Port | Mode::Eprt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XferDir {
    Retr,
    Stor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub mode: Mode,
    pub dir: XferDir,
    pub name: String,
    pub size: usize,
    /// Local data port (active: listened on; passive: connected from). Default: `data_port_base + index`.
    pub data_port: Option<u16>,
    /// The address announced in PORT/EPRT; default: the client's own (what a client behind NAT sends).
    pub announce: Option<Ipv4Addr>,
}

impl Transfer {
    pub fn new(mode: Mode, dir: XferDir, name: &str, size: usize) -> Transfer {
        Transfer { mode, dir, name: name.to_string(), size, data_port: None, announce: None }
    }
    pub fn port(mut self, p: u16) -> Self {
        self.data_port = Some(p);
        self
    }
    pub fn announce(mut self, a: Ipv4Addr) -> Self {
        self.announce = Some(a);
        self
    }
}

/// One step of the client's script after login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Transfer(Transfer),
    /// A raw control line (line end included); waits for its final reply.
    Command(Vec<u8>),
}

/// The outcome of one [`Action::Transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferResult {
    /// Index into the action list.
    pub action: usize,
    pub mode: Mode,
    pub dir: XferDir,
    pub name: String,
    /// Final reply 2xx, data connection finished, and (RETR) the bytes equal the file.
    pub ok: bool,
    /// Bytes received (RETR) or sent (STOR).
    pub bytes: usize,
    /// The reply to PORT/EPRT/PASV/EPSV (last line, raw).
    pub setup_reply: Vec<u8>,
    /// The final reply to RETR/STOR (last line, raw), if any.
    pub final_reply: Vec<u8>,
    /// The data connection's remote endpoint as the client saw it.
    pub data_peer: Option<(Ipv4Addr, u16)>,
    pub error: Option<String>,
}

pub struct ClientConfig {
    pub server: Ipv4Addr,
    pub server_port: u16,
    /// Local port of the control connection.
    pub ctrl_port: u16,
    pub data_port_base: u16,
    pub user: String,
    pub pass: String,
    pub actions: Vec<Action>,
    /// Write USER+PASS+TYPE at once, and each run of consecutive active-mode transfers as one write
    /// (`PORT a`, `RETR x`, `PORT b`, `STOR y`, ...) before any reply.
    pub pipeline: bool,
    pub nagle: bool,
    pub split: Option<Splitter>,
    pub chunk_gap_us: u64,
    /// Send QUIT at the end (default true).
    pub quit: bool,
}

impl ClientConfig {
    pub fn new(server: Ipv4Addr, server_port: u16) -> ClientConfig {
        ClientConfig {
            server,
            server_port,
            ctrl_port: 40000,
            data_port_base: 41000,
            user: "ftpuser".into(),
            pass: "s3cret".into(),
            actions: Vec::new(),
            pipeline: false,
            nagle: false,
            split: None,
            chunk_gap_us: 0,
            quit: true,
        }
    }
    pub fn transfer(mut self, t: Transfer) -> Self {
        self.actions.push(Action::Transfer(t));
        self
    }
    pub fn command(mut self, line: &[u8]) -> Self {
        self.actions.push(Action::Command(line.to_vec()));
        self
    }
    pub fn split(mut self, f: Splitter) -> Self {
        self.split = Some(f);
        self
    }
    pub fn pipeline(mut self, on: bool) -> Self {
        self.pipeline = on;
        self
    }
    pub fn nagle(mut self, on: bool) -> Self {
        self.nagle = on;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Greeting,
    User,
    Pass,
    Type,
    Setup(usize),
    Xfer(usize),
    Raw(usize),
    Quit,
}

struct ClientXfer {
    action: usize,
    t: Transfer,
    sock: Option<SocketHandle>,
    connected: bool,
    data_done: bool,
    recv: Vec<u8>,
    /// STOR: the file's bytes, generated once.
    stor_data: Vec<u8>,
    sent: usize,
    prelim: bool,
    final_code: Option<u16>,
    setup_reply: Vec<u8>,
    final_reply: Vec<u8>,
    data_peer: Option<(Ipv4Addr, u16)>,
    error: Option<String>,
}

/// The scripted FTP client.
pub struct FtpClient {
    cfg: ClientConfig,
    ctrl: Option<SocketHandle>,
    reader: LineReader,
    /// Lines of a multi-line reply so far.
    multi: Option<Vec<u8>>,
    out: Outbox,
    expects: VecDeque<Cmd>,
    xfers: Vec<ClientXfer>,
    /// The next action to start once `expects` and `xfers` are empty.
    next_action: usize,
    started: bool,
    finished: bool,
    now_us: u64,
    pub sent_lines: Vec<Vec<u8>>,
    pub received_lines: Vec<Vec<u8>>,
    pub sent_stream: Vec<u8>,
    pub received_stream: Vec<u8>,
    pub transfers: Vec<TransferResult>,
    /// `(command, final reply)` of each [`Action::Command`].
    pub command_replies: Vec<(Vec<u8>, Vec<u8>)>,
    /// A protocol failure that ended the session early.
    pub error: Option<String>,
}

impl FtpClient {
    pub fn new(mut cfg: ClientConfig) -> FtpClient {
        let out = Outbox::new(cfg.split.take(), cfg.chunk_gap_us);
        FtpClient {
            cfg,
            ctrl: None,
            reader: LineReader::default(),
            multi: None,
            out,
            expects: VecDeque::from([Cmd::Greeting]),
            xfers: Vec::new(),
            next_action: 0,
            started: false,
            finished: false,
            now_us: 0,
            sent_lines: Vec::new(),
            received_lines: Vec::new(),
            sent_stream: Vec::new(),
            received_stream: Vec::new(),
            transfers: Vec::new(),
            command_replies: Vec::new(),
            error: None,
        }
    }

    /// The script ran to its end (or failed: see [`FtpClient::error`]).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Finished, no protocol error, and every transfer ok.
    pub fn all_ok(&self) -> bool {
        self.finished && self.error.is_none() && self.transfers.iter().all(|t| t.ok)
    }

    fn send(&mut self, lines: Vec<Vec<u8>>) {
        let mut batch = Vec::new();
        for l in lines {
            batch.extend_from_slice(&l);
            self.sent_lines.push(l);
        }
        self.out.push(batch);
    }

    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
        self.finished = true;
    }

    fn transfer_at(&self, i: usize) -> Option<&Transfer> {
        match self.cfg.actions.get(i) {
            Some(Action::Transfer(t)) => Some(t),
            _ => None,
        }
    }

    fn data_port(&self, i: usize, t: &Transfer) -> u16 {
        t.data_port.unwrap_or(self.cfg.data_port_base.wrapping_add(i as u16))
    }

    fn xfer_line(t: &Transfer) -> Vec<u8> {
        let verb = if t.dir == XferDir::Retr { "RETR" } else { "STOR" };
        format!("{verb} {}\r\n", t.name).into_bytes()
    }

    /// Starts the action at `next_action` (a batch of active transfers when pipelining), or QUIT.
    fn start_next(&mut self, cx: &mut AppCx<'_>) {
        let i = self.next_action;
        match self.cfg.actions.get(i).cloned() {
            None => {
                if self.cfg.quit {
                    self.expects.push_back(Cmd::Quit);
                    self.send(vec![b"QUIT\r\n".to_vec()]);
                } else {
                    self.finished = true;
                }
            }
            Some(Action::Command(line)) => {
                self.next_action = i + 1;
                self.expects.push_back(Cmd::Raw(i));
                self.send(vec![line]);
            }
            Some(Action::Transfer(t)) => {
                let mut end = i + 1;
                if self.cfg.pipeline && t.mode.is_active() {
                    while self.transfer_at(end).is_some_and(|t| t.mode.is_active()) {
                        end += 1;
                    }
                }
                self.next_action = end;
                let mut lines = Vec::new();
                for k in i..end {
                    let t = self.transfer_at(k).cloned().expect("a transfer");
                    lines.extend(self.begin_transfer(cx, k, t));
                }
                self.send(lines);
            }
        }
    }

    /// Sets up transfer `k`; returns the lines to write now.
    fn begin_transfer(&mut self, cx: &mut AppCx<'_>, k: usize, t: Transfer) -> Vec<Vec<u8>> {
        let port = self.data_port(k, &t);
        let mut x = ClientXfer {
            action: k,
            t: t.clone(),
            sock: None,
            connected: false,
            data_done: false,
            recv: Vec::new(),
            stor_data: if t.dir == XferDir::Stor { file_bytes(&t.name, t.size) } else { Vec::new() },
            sent: 0,
            prelim: false,
            final_code: None,
            setup_reply: Vec::new(),
            final_reply: Vec::new(),
            data_peer: None,
            error: None,
        };
        let setup = match t.mode {
            Mode::Port | Mode::Eprt => {
                let mut s = new_socket(DATA_BUF, self.cfg.nagle);
                s.listen(port).expect("listen on the data port");
                x.sock = Some(cx.sockets.add(s));
                let a = t.announce.unwrap_or(cx.addr);
                if t.mode == Mode::Port {
                    format!("PORT {}\r\n", format_host_port(a, port))
                } else {
                    format!("EPRT |1|{a}|{port}|\r\n")
                }
            }
            Mode::Pasv => "PASV\r\n".to_string(),
            Mode::Epsv => "EPSV\r\n".to_string(),
        };
        let mut lines = vec![setup.into_bytes()];
        self.expects.push_back(Cmd::Setup(k));
        if self.cfg.pipeline && t.mode.is_active() {
            lines.push(Self::xfer_line(&t));
            self.expects.push_back(Cmd::Xfer(k));
        }
        self.xfers.push(x);
        lines
    }

    fn xfer_mut(&mut self, k: usize) -> &mut ClientXfer {
        self.xfers.iter_mut().find(|x| x.action == k).expect("transfer in flight")
    }

    fn handle_reply(&mut self, cx: &mut AppCx<'_>, code: u16, last: &[u8]) {
        let Some(&cmd) = self.expects.front() else {
            self.fail(format!("unsolicited reply {}", String::from_utf8_lossy(last)));
            return;
        };
        let preliminary = (100..200).contains(&code);
        if !preliminary {
            self.expects.pop_front();
        }
        let text = String::from_utf8_lossy(strip_eol(last)).into_owned();
        let pipeline = self.cfg.pipeline;
        match cmd {
            Cmd::Greeting if code == 220 => {
                let user = format!("USER {}\r\n", self.cfg.user).into_bytes();
                if pipeline {
                    let pass = format!("PASS {}\r\n", self.cfg.pass).into_bytes();
                    self.expects.extend([Cmd::User, Cmd::Pass, Cmd::Type]);
                    self.send(vec![user, pass, b"TYPE I\r\n".to_vec()]);
                } else {
                    self.expects.push_back(Cmd::User);
                    self.send(vec![user]);
                }
            }
            Cmd::User if code == 331 => {
                if !pipeline {
                    self.expects.push_back(Cmd::Pass);
                    self.send(vec![format!("PASS {}\r\n", self.cfg.pass).into_bytes()]);
                }
            }
            Cmd::Pass if code == 230 => {
                if !pipeline {
                    self.expects.push_back(Cmd::Type);
                    self.send(vec![b"TYPE I\r\n".to_vec()]);
                }
            }
            Cmd::Type => self.start_next(cx),
            Cmd::Setup(k) => {
                let x = self.xfer_mut(k);
                x.setup_reply = last.to_vec();
                let (mode, t) = (x.t.mode, x.t.clone());
                let target = match mode {
                    _ if !(200..300).contains(&code) => Err(format!("setup refused: {text}")),
                    Mode::Port | Mode::Eprt => Ok(None),
                    Mode::Pasv => parse_227(&text).map(Some).ok_or_else(|| format!("bad 227: {text}")),
                    Mode::Epsv => parse_229(&text)
                        .map(|p| Some((self.cfg.server, p)))
                        .ok_or_else(|| format!("bad 229: {text}")),
                };
                match target {
                    Err(e) => {
                        // A pipelined RETR/STOR is still owed its (error) reply; otherwise finish now.
                        let owed = self.expects.contains(&Cmd::Xfer(k));
                        let x = self.xfer_mut(k);
                        x.error = Some(e);
                        if !owed {
                            x.final_code = Some(code);
                        }
                    }
                    Ok(target) => {
                        if let Some((addr, port)) = target {
                            let local = self.data_port(k, &t);
                            let mut s = new_socket(DATA_BUF, self.cfg.nagle);
                            if let Err(e) = s.connect(cx.iface.context(), (addr, port), local) {
                                self.xfer_mut(k).error = Some(format!("connect: {e:?}"));
                                self.xfer_mut(k).final_code = Some(0);
                                return;
                            }
                            self.xfer_mut(k).sock = Some(cx.sockets.add(s));
                        }
                        if !(pipeline && mode.is_active()) {
                            self.expects.push_back(Cmd::Xfer(k));
                            self.send(vec![Self::xfer_line(&t)]);
                        }
                    }
                }
            }
            Cmd::Xfer(k) => {
                let x = self.xfer_mut(k);
                if preliminary {
                    x.prelim = true;
                } else {
                    x.final_code = Some(code);
                    x.final_reply = last.to_vec();
                    if !(200..300).contains(&code) && x.error.is_none() {
                        x.error = Some(format!("transfer refused: {text}"));
                    }
                }
            }
            Cmd::Raw(i) => {
                if !preliminary {
                    let line = match &self.cfg.actions[i] {
                        Action::Command(l) => l.clone(),
                        Action::Transfer(_) => Vec::new(),
                    };
                    self.command_replies.push((line, last.to_vec()));
                    self.start_next(cx);
                }
            }
            Cmd::Quit => {
                if let Some(h) = self.ctrl {
                    cx.sockets.get_mut::<tcp::Socket>(h).close();
                }
                self.finished = true;
            }
            _ => self.fail(format!("unexpected reply to {cmd:?}: {text}")),
        }
    }

    fn progress_data(&mut self, cx: &mut AppCx<'_>) {
        for x in &mut self.xfers {
            let Some(h) = x.sock else { continue };
            let s = cx.sockets.get_mut::<tcp::Socket>(h);
            if !x.connected && is_connected(s.state()) {
                x.connected = true;
                x.data_peer = endpoint_v4(s);
            }
            if !x.connected || x.data_done {
                continue;
            }
            match x.t.dir {
                XferDir::Retr => {
                    read_all(s, &mut x.recv);
                    if !s.may_recv() {
                        s.close();
                        x.data_done = true;
                    }
                }
                XferDir::Stor => {
                    while x.sent < x.stor_data.len() && s.can_send() {
                        let n = s.send_slice(&x.stor_data[x.sent..]).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        x.sent += n;
                    }
                    if x.sent == x.stor_data.len() {
                        s.close();
                        x.data_done = true;
                    }
                }
            }
        }
    }

    /// Moves finished transfers to `transfers` (in action order) and frees their sockets.
    fn complete_transfers(&mut self, cx: &mut AppCx<'_>) {
        let mut i = 0;
        while i < self.xfers.len() {
            let x = &self.xfers[i];
            let finished = match x.final_code {
                Some(c) if (200..300).contains(&c) => x.data_done,
                Some(_) => true,
                None => false,
            };
            if !finished {
                i += 1;
                continue;
            }
            let x = self.xfers.remove(i);
            if let Some(h) = x.sock {
                let s = cx.sockets.get_mut::<tcp::Socket>(h);
                if !x.data_done || s.state() == State::Listen {
                    s.abort();
                }
                // Left in the set: it finishes its close; sockets are small.
            }
            let ok_code = x.final_code.is_some_and(|c| (200..300).contains(&c));
            let (bytes, content_ok) = match x.t.dir {
                XferDir::Retr => (x.recv.len(), x.recv == file_bytes(&x.t.name, x.t.size)),
                XferDir::Stor => (x.sent, x.sent == x.t.size),
            };
            let error = x.error.or_else(|| (!content_ok).then(|| "content differs".to_string()));
            self.transfers.push(TransferResult {
                action: x.action,
                mode: x.t.mode,
                dir: x.t.dir,
                name: x.t.name,
                ok: ok_code && x.data_done && content_ok && error.is_none(),
                bytes,
                setup_reply: x.setup_reply,
                final_reply: x.final_reply,
                data_peer: x.data_peer,
                error,
            });
        }
        self.transfers.sort_by_key(|t| t.action);
        if self.xfers.is_empty() && self.expects.is_empty() && !self.finished && self.started {
            self.start_next(cx);
        }
    }
}

impl App for FtpClient {
    fn poll(&mut self, cx: &mut AppCx<'_>) {
        self.now_us = cx.now_us;
        if self.finished {
            return;
        }
        let ctrl = match self.ctrl {
            Some(h) => h,
            None => {
                let mut s = new_socket(CTRL_BUF, self.cfg.nagle);
                let server = (self.cfg.server, self.cfg.server_port);
                if let Err(e) = s.connect(cx.iface.context(), server, self.cfg.ctrl_port) {
                    self.fail(format!("connect: {e:?}"));
                    return;
                }
                let h = cx.sockets.add(s);
                self.ctrl = Some(h);
                h
            }
        };
        let s = cx.sockets.get_mut::<tcp::Socket>(ctrl);
        let mut bytes = Vec::new();
        read_all(s, &mut bytes);
        let state = s.state();
        self.received_stream.extend_from_slice(&bytes);
        for line in self.reader.push(&bytes) {
            self.received_lines.push(line.clone());
            // RFC 959 §4.2: a multi-line reply starts "xyz-" and ends at a line starting "xyz ".
            let code =
                std::str::from_utf8(line.get(..3).unwrap_or(b"")).ok().and_then(|c| c.parse::<u16>().ok());
            let sep = line.get(3).copied();
            match (&self.multi, code, sep) {
                (None, Some(_), Some(b'-')) => self.multi = Some(line[..3].to_vec()),
                (Some(m), Some(_), Some(b' ')) if line.starts_with(m) => {
                    self.multi = None;
                    self.handle_reply(cx, code.unwrap_or(0), &line);
                }
                (Some(_), _, _) => {}
                (None, Some(c), _) => self.handle_reply(cx, c, &line),
                (None, None, _) => self.fail(format!("garbled reply {:?}", String::from_utf8_lossy(&line))),
            }
            if self.finished {
                return;
            }
        }
        self.started = self.started || !self.expects.contains(&Cmd::Greeting);
        self.progress_data(cx);
        self.complete_transfers(cx);
        let s = cx.sockets.get_mut::<tcp::Socket>(ctrl);
        self.out.flush(s, cx.now_us, &mut self.sent_stream);
        if !self.finished && (state == State::Closed || (is_connected(state) && !s.may_recv())) {
            self.fail(format!("control connection ended in state {state}"));
        }
    }

    fn poll_at(&self) -> Option<u64> {
        if self.finished {
            None
        } else {
            self.out.poll_at(self.now_us)
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
