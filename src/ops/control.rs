//! The control socket: a Unix stream socket (owner-only) served by the run loop without blocking it.
//!
//! Owns: binding the socket (refusing to steal one a live process serves, replacing a stale one),
//! accepting clients, reading one request line, queueing the reply, streaming events to subscribers
//! (bounded per subscriber: a slow reader loses events and is told how many), and removing the socket
//! file on drop. Must not: block, change the engine beyond switching event recording, or format for
//! people (replies are JSON; see [`super::view`] for the data model and [`super::client`] for the
//! client).
//!
//! Protocol: the client sends one JSON [`Request`] line. For `flows`/`pinholes`/`stats` the server
//! answers one JSON line and closes; for `events` it answers `{"subscribed":true}` and then one JSON
//! line per event until the client hangs up. Errors are `{"error":"..."}`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::peer::{Peer, ReadState};
use super::view::{self, Cmd, Filter, Request};
use super::{pollfd, LoopState};
use crate::events::Event;

/// Clients served at once; more are turned away with an error line.
const MAX_CLIENTS: usize = 32;
/// A request line longer than this is not one.
const MAX_REQUEST: usize = 4096;
/// A client must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Event bytes queued per subscriber before further events are counted as lost instead.
const MAX_BACKLOG: usize = 1 << 20;

enum Phase {
    Request,
    /// The reply is queued; close once it is written.
    Reply,
    Events {
        filter: Filter,
        lost: u64,
    },
}

struct Client {
    peer: Peer<UnixStream>,
    phase: Phase,
}

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl ControlServer {
    /// Binds `path` with mode 0600. A socket file nobody answers on is replaced; one a live process
    /// serves, or a file that is not a socket, is an error.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is served by another running process", path.display()),
                    ))
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        // Owner-only. A client that connected in the moment before the chmod is still refused at
        // accept: only our own user and root are served (SO_PEERCRED). No umask games: it is
        // process-wide, and other threads may be creating files.
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer { listener, path: path.to_path_buf(), clients: Vec::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clients currently subscribed to events.
    pub fn subscribers(&self) -> usize {
        self.clients.iter().filter(|c| matches!(c.phase, Phase::Events { .. })).count()
    }

    /// Appends the descriptors to poll: the listener, then each client (reading, or writing when
    /// output is pending). Returns how many it appended.
    pub fn register(&self, fds: &mut Vec<libc::pollfd>) -> usize {
        fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
        for c in &self.clients {
            let out = if c.peer.pending() > 0 { libc::POLLOUT } else { 0 };
            // Not POLLIN while a reply is written: a client that half-closed would wake us forever.
            let ev = match c.phase {
                Phase::Reply => libc::POLLOUT,
                Phase::Request | Phase::Events { .. } => libc::POLLIN | out,
            };
            fds.push(pollfd(c.peer.sock.as_raw_fd(), ev));
        }
        1 + self.clients.len()
    }

    /// Serves what `fds` (the slice [`ControlServer::register`] appended, after `poll`) reports ready.
    pub fn handle(&mut self, fds: &[libc::pollfd], st: &mut LoopState<'_>) {
        let mut drop_idx = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let revents = fds.get(i + 1).map_or(0, |f| f.revents);
            if revents == 0 {
                continue;
            }
            if !serve(c, revents, st) {
                drop_idx.push(i);
            }
        }
        for i in drop_idx.into_iter().rev() {
            self.clients.swap_remove(i);
        }
        if fds.first().is_some_and(|f| f.revents & libc::POLLIN != 0) {
            self.accept();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut peer = Peer::new(sock);
                    if !allowed(&peer.sock) {
                        peer.queue(b"{\"error\":\"permission denied\"}\n");
                        let _ = peer.flush();
                        continue;
                    }
                    if self.clients.len() >= MAX_CLIENTS {
                        peer.queue(b"{\"error\":\"too many control clients\"}\n");
                        let _ = peer.flush();
                        continue;
                    }
                    self.clients.push(Client { peer, phase: Phase::Request });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(target: "ftpnat::ops", socket = %self.path.display(), error = %e, "control socket accept failed");
                    return;
                }
            }
        }
    }

    /// When the oldest client still owing its request must be dropped.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.clients
            .iter()
            .filter(|c| matches!(c.phase, Phase::Request))
            .map(|c| c.peer.opened + REQUEST_TIMEOUT)
            .min()
    }

    /// Drops clients that did not send their request in time.
    pub fn expire(&mut self, now: std::time::Instant) {
        self.clients.retain(|c| !matches!(c.phase, Phase::Request) || now < c.peer.opened + REQUEST_TIMEOUT);
    }

    /// Sends an event to every subscriber whose filter takes it.
    pub fn publish(&mut self, e: &Event, ts: f64) {
        let mut gone = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let Phase::Events { filter, lost } = &mut c.phase else { continue };
            let Some(v) = view::event(e, ts, filter) else { continue };
            if c.peer.pending() > MAX_BACKLOG {
                *lost += 1;
                continue;
            }
            if *lost > 0 {
                c.peer.queue(format!("{}\n", json!({ "lost": *lost })).as_bytes());
                *lost = 0;
            }
            c.peer.queue(format!("{v}\n").as_bytes());
            if c.peer.flush().is_err() {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.clients.swap_remove(i);
        }
    }
}

/// Only the user ftpnat runs as, and root, may use the control socket.
fn allowed(s: &UnixStream) -> bool {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid(2) cannot fail.
    rc == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::geteuid() })
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Handles one client's readiness; false when it is done with (closed, failed, finished).
fn serve(c: &mut Client, revents: libc::c_short, st: &mut LoopState<'_>) -> bool {
    if revents & libc::POLLNVAL != 0 {
        return false;
    }
    if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
        let state = match c.peer.read_available(MAX_REQUEST) {
            Ok(s) => s,
            Err(e) => {
                if matches!(c.phase, Phase::Request) {
                    c.peer.queue(format!("{}\n", json!({ "error": e.to_string() })).as_bytes());
                    let _ = c.peer.flush();
                }
                return false;
            }
        };
        match c.phase {
            Phase::Request => match c.peer.input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line = c.peer.input[..end].to_vec();
                    c.peer.input.clear();
                    answer(c, &line, st);
                }
                // Closed before completing its request.
                None if state == ReadState::Eof => return false,
                None => {}
            },
            // A subscriber that hangs up is done; anything else it sends is ignored.
            Phase::Events { .. } if state == ReadState::Eof => return false,
            // A client may half-close after its request: its reply is still written.
            Phase::Events { .. } | Phase::Reply => c.peer.input.clear(),
        }
    }
    match c.peer.flush() {
        Err(_) => false,
        Ok(done) => !(done && matches!(c.phase, Phase::Reply)),
    }
}

fn answer(c: &mut Client, line: &[u8], st: &mut LoopState<'_>) {
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            c.peer.queue(format!("{}\n", json!({ "error": format!("bad request: {e}") })).as_bytes());
            c.phase = Phase::Reply;
            return;
        }
    };
    let reply: Value = match req.cmd {
        Cmd::Flows => view::flows(st.engine, st.now, &req.filter),
        Cmd::Pinholes => view::pinholes(st.engine, st.now, &req.filter),
        Cmd::Stats => view::stats(st.engine, &st.extra_counters()),
        Cmd::Events => {
            c.phase = Phase::Events { filter: req.filter, lost: 0 };
            c.peer.queue(b"{\"subscribed\":true}\n");
            return;
        }
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"error\":\"cannot encode\"}".to_vec());
    bytes.push(b'\n');
    c.peer.queue(&bytes);
    c.phase = Phase::Reply;
}
