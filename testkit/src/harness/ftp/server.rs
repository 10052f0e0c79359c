//! The scripted FTP server: one control session that behaves like vsftpd where it matters to an ALG
//! (RFC 959 replies, PASV/EPSV listeners, PORT/EPRT connects, transfers of deterministic files).
//!
//! Owns: the server's dialogue and its data connections. Must not: move packets or advance time.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};

use super::*;

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
    Active(IpAddr, u16),
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
    peer: Option<IpAddr>,
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
    pub data_peers: Vec<(IpAddr, u16)>,
    /// The control connection's peer, as the server saw it.
    pub ctrl_peer: Option<(IpAddr, u16)>,
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
                let parsed = if verb == "PORT" {
                    parse_host_port(&arg).map(|(a, p)| (IpAddr::V4(a), p))
                } else {
                    parse_eprt_any(&arg)
                };
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
                    let own = match cx.addr {
                        IpAddr::V4(a) => a,
                        IpAddr::V6(a) => panic!("the scripted server answers PASV on IPv4 only ({a})"),
                    };
                    let addr = self.cfg.pasv_addr.unwrap_or(own);
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
                if let Some(ep) = endpoint(s) {
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
            self.ctrl_peer = endpoint(s);
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
