//! The scripted FTP client: logs in, runs a script of transfers in active (PORT/EPRT) or passive
//! (PASV/EPSV) mode, and records what it saw, as a client behind NAT does.
//!
//! Owns: the client's dialogue, its data connections and the transfer results. Must not: move packets
//! or advance time.

use std::any::Any;
use std::collections::VecDeque;
use std::net::IpAddr;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};

use super::*;

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
    pub announce: Option<IpAddr>,
}

impl Transfer {
    pub fn new(mode: Mode, dir: XferDir, name: &str, size: usize) -> Transfer {
        Transfer { mode, dir, name: name.to_string(), size, data_port: None, announce: None }
    }
    pub fn port(mut self, p: u16) -> Self {
        self.data_port = Some(p);
        self
    }
    pub fn announce(mut self, a: impl Into<IpAddr>) -> Self {
        self.announce = Some(a.into());
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
    pub data_peer: Option<(IpAddr, u16)>,
    pub error: Option<String>,
}

pub struct ClientConfig {
    /// The server's address as the client reaches it (for an IPv6 client behind NAT64, the IPv4
    /// server's address under the NAT64 prefix).
    pub server: IpAddr,
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
    pub fn new(server: impl Into<IpAddr>, server_port: u16) -> ClientConfig {
        ClientConfig {
            server: server.into(),
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
    data_peer: Option<(IpAddr, u16)>,
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
                match (t.mode, a) {
                    (Mode::Port, IpAddr::V4(a)) => format!("PORT {}\r\n", format_host_port(a, port)),
                    (Mode::Port, IpAddr::V6(_)) => panic!("PORT cannot name an IPv6 address ({a})"),
                    _ => format!("EPRT {}\r\n", format_eprt_arg(a, port)),
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
                    Mode::Pasv => parse_227(&text)
                        .map(|(a, p)| Some((IpAddr::V4(a), p)))
                        .ok_or_else(|| format!("bad 227: {text}")),
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
                x.data_peer = endpoint(s);
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
