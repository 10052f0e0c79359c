//! The control socket: a Unix stream socket (owner-only) served by the operations thread.
//!
//! Owns: binding the socket (refusing to steal one a live process serves, replacing a stale one),
//! accepting clients (only our own user and root), reading one request line, producing the reply (a
//! listing is produced slice by slice as the client reads it: the next slice is asked of the run loop
//! only once less than [`LOW_WATER`] bytes wait for the client), streaming events to subscribers
//! (bounded per subscriber: a slow reader loses events and is told how many), cutting off clients that
//! do not send their request, stop reading, or hold a slot another client needs (see
//! [`super::peer::Conns`]), and removing the socket file on drop. Must not: touch the engine (it asks
//! the run loop through [`Backend`]), block, or format for people (replies are JSON; see
//! [`super::view`] for the data model and [`super::client`] for the client).
//!
//! Protocol: the client sends one JSON [`super::view::Request`] line. For `flows`/`pinholes` the server
//! answers one JSON line (`{"flows":[...]}`; with `limit`, `{"flows":[...],"next_cursor":N}` when more
//! may follow) and closes; for `stats` one line; for `events` it answers `{"subscribed":true}` and then
//! one JSON line per event until the client hangs up. Errors are `{"error":"..."}`.
//!
//! Memory per client is bounded: a request line of at most 4 KiB, a listing's output of at most
//! [`LOW_WATER`] plus one slice of [`SLICE_ROWS`] rows, an event backlog of at most 1 MiB.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use super::link::{Backend, Job, Server, Tag};
use super::peer::{Conn, Conns, Limits, Phase as _, ReadState};
use super::pollfd;
use super::view::{self, Cmd, Counters, Filter};
use crate::events::Event;

/// A request line longer than this is not one.
const MAX_REQUEST: usize = 4096;
/// Event bytes queued per subscriber before further events are counted as lost instead.
const MAX_BACKLOG: usize = 1 << 20;
/// A listing's next slice is asked for once less than this waits to be read by the client.
pub const LOW_WATER: usize = 64 << 10;
/// Rows per listing slice.
pub const SLICE_ROWS: usize = 256;
/// Event subscribers at once, by default: a slot for `show` is always left.
pub const MAX_SUBSCRIBERS: usize = 16;

/// A listing being produced.
#[derive(Debug)]
struct Listing {
    cmd: Cmd,
    filter: Filter,
    /// Where the next slice starts; `None` once the end was reached.
    next: Option<u32>,
    /// Rows still allowed by the request's `limit`.
    left: Option<usize>,
    sent: usize,
    /// A slice was asked for and has not come back.
    waiting: bool,
}

#[derive(Debug)]
enum Phase {
    Request,
    Listing(Listing),
    /// Waiting for the counters `stats` shows.
    Stats,
    /// Subscribed; confirmed once the run loop records events (so nothing after the confirmation is
    /// missed).
    Subscribing {
        filter: Filter,
    },
    /// The reply is queued; close once it is written.
    Reply,
    Events {
        filter: Filter,
        lost: u64,
    },
}

impl super::peer::Phase for Phase {
    fn owes_request(&self) -> bool {
        matches!(self, Phase::Request)
    }
}

type Client = Conn<UnixStream, Phase>;

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    conns: Conns<UnixStream, Phase>,
    max_subscribers: usize,
    /// The run loop records events (acknowledged).
    recording: bool,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("clients", &self.conns.list.len())
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
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            conns: Conns::new(Limits::default()),
            max_subscribers: MAX_SUBSCRIBERS,
            recording: false,
        })
    }

    /// Applies other limits than the defaults (tests use short timeouts): `max_subscribers` of the
    /// `limits.max_clients` slots may follow events.
    pub fn with_limits(mut self, limits: Limits, max_subscribers: usize) -> ControlServer {
        self.conns.limits = limits;
        self.max_subscribers = max_subscribers;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clients currently subscribed to events (confirmed or waiting for the run loop to record).
    pub fn subscribers(&self) -> usize {
        self.conns
            .live()
            .filter(|c| matches!(c.phase, Phase::Events { .. } | Phase::Subscribing { .. }))
            .count()
    }

    /// Whether the run loop records events (as it acknowledged). Turning it on confirms every waiting
    /// subscription.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
        if !on {
            return;
        }
        for c in self.conns.list.iter_mut().filter(|c| c.cut.is_none()) {
            if let Phase::Subscribing { filter } = &mut c.phase {
                let filter = std::mem::take(filter);
                c.phase = Phase::Events { filter, lost: 0 };
                c.peer.queue(b"{\"subscribed\":true}\n");
                finish_write(c);
            }
        }
    }

    /// Clients cut off or turned away so far, as `ops.control.cut_off.*` counters.
    pub fn counters(&self, out: &mut Vec<(String, u64)>) {
        self.conns.counts.counters("control", out);
    }

    /// Appends the descriptors to poll: the listener, then each client (reading, or writing when
    /// output is pending). Returns how many it appended.
    pub fn register(&self, fds: &mut Vec<libc::pollfd>) -> usize {
        fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
        for c in &self.conns.list {
            let out = if c.peer.pending() > 0 { libc::POLLOUT } else { 0 };
            // Not POLLIN while a reply is produced: a client that half-closed would wake us forever.
            let ev = match c.phase {
                Phase::Request | Phase::Subscribing { .. } | Phase::Events { .. } => libc::POLLIN | out,
                Phase::Listing(_) | Phase::Stats | Phase::Reply => out,
            };
            fds.push(pollfd(c.peer.sock.as_raw_fd(), ev));
        }
        1 + self.conns.list.len()
    }

    /// Serves what `fds` (the slice [`ControlServer::register`] appended, after `poll`) reports ready,
    /// then accepts new clients.
    pub fn handle(&mut self, fds: &[libc::pollfd], backend: &mut Backend) {
        let mut room =
            Room { subscribers: self.subscribers(), max: self.max_subscribers, recording: self.recording };
        for (c, f) in self.conns.list.iter_mut().zip(fds.iter().skip(1)) {
            if f.revents != 0 && c.cut.is_none() {
                serve(c, f.revents, backend, &mut room);
            }
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
                    if !allowed(&sock) {
                        let mut peer = super::peer::Peer::new(sock);
                        peer.queue(b"{\"error\":\"permission denied\"}\n");
                        let _ = peer.flush();
                        continue;
                    }
                    let refusal = b"{\"error\":\"too many control clients\"}\n";
                    self.conns.admit(sock, Phase::Request, refusal);
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

    /// Asks the run loop for the next slice of every listing whose client has read enough of the last
    /// one, and finishes the listings that are complete.
    pub fn pump(&mut self, backend: &mut Backend) {
        for c in self.conns.list.iter_mut().filter(|c| c.cut.is_none()) {
            let Phase::Listing(l) = &mut c.phase else { continue };
            if l.waiting || c.peer.pending() >= LOW_WATER {
                continue;
            }
            match l.next {
                Some(from) if l.left != Some(0) => {
                    let max_rows = l.left.map_or(SLICE_ROWS, |n| n.min(SLICE_ROWS));
                    let tag = Tag { server: Server::Control, client: c.id };
                    let filter = l.filter.clone();
                    backend.submit(match l.cmd {
                        Cmd::Pinholes => Job::Pinholes { tag, filter, from, max_rows },
                        _ => Job::Flows { tag, filter, from, max_rows },
                    });
                    l.waiting = true;
                }
                next => {
                    // Complete: with a limit that was reached, say where to go on.
                    let tail = match (l.left, next) {
                        (Some(0), Some(n)) => format!("],\"next_cursor\":{n}}}\n"),
                        _ => "]}\n".to_string(),
                    };
                    c.peer.queue(tail.as_bytes());
                    c.phase = Phase::Reply;
                    finish_write(c);
                }
            }
        }
    }

    /// A slice of a listing came back from the run loop.
    pub fn on_rows<T: Serialize>(&mut self, id: u64, rows: &[T], next: Option<u32>) {
        let Some(c) = self.conns.get_mut(id) else { return };
        let Phase::Listing(l) = &mut c.phase else { return };
        let out = c.peer.output();
        for r in rows {
            if l.sent > 0 {
                out.push(b',');
            }
            // Writing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, r);
            l.sent += 1;
        }
        l.left = l.left.map(|n| n.saturating_sub(rows.len()));
        l.next = next;
        l.waiting = false;
        finish_write(c);
    }

    /// The counters a `stats` client waits for came back.
    pub fn on_counters(&mut self, id: u64, counters: &Counters) {
        let Some(c) = self.conns.get_mut(id) else { return };
        if !matches!(c.phase, Phase::Stats) {
            return;
        }
        let mut bytes = view::stats(counters).to_string().into_bytes();
        bytes.push(b'\n');
        c.peer.queue(&bytes);
        c.phase = Phase::Reply;
        finish_write(c);
    }

    /// The answer a `mapping` client waits for came back.
    pub fn on_value(&mut self, id: u64, value: &serde_json::Value) {
        let Some(c) = self.conns.get_mut(id) else { return };
        if !matches!(c.phase, Phase::Stats) {
            return;
        }
        let mut bytes = value.to_string().into_bytes();
        bytes.push(b'\n');
        c.peer.queue(&bytes);
        c.phase = Phase::Reply;
        finish_write(c);
    }

    /// When the next client may have to be cut off (for the poll timeout).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.conns.deadline()
    }

    /// Cuts off clients past their deadlines, then closes every client that is done.
    pub fn expire(&mut self, now: std::time::Instant) {
        self.conns.expire(now);
        self.conns.sweep();
    }

    /// Sends events to every subscriber whose filter takes them; `ts` is when they were taken.
    pub fn publish(&mut self, events: &[Event], ts: f64) {
        for c in self.conns.list.iter_mut().filter(|c| c.cut.is_none()) {
            let Phase::Events { filter, lost } = &mut c.phase else { continue };
            for e in events {
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
            }
            if c.peer.flush().is_err() {
                c.cut = Some(super::peer::Cut::Done);
            }
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

/// Writes what the socket takes; a reply completely written, or a write error, ends the client.
fn finish_write(c: &mut Client) {
    let last = matches!(c.phase, Phase::Reply);
    c.write_out(last);
}

/// Event subscribers now and at most, and whether events are recorded yet.
struct Room {
    subscribers: usize,
    max: usize,
    recording: bool,
}

/// Handles one client's readiness.
fn serve(c: &mut Client, revents: libc::c_short, backend: &mut Backend, room: &mut Room) {
    if revents & libc::POLLNVAL != 0 {
        c.cut = Some(super::peer::Cut::Done);
        return;
    }
    if matches!(c.phase, Phase::Request | Phase::Subscribing { .. } | Phase::Events { .. })
        && revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    {
        let state = match c.peer.read_available(MAX_REQUEST) {
            Ok(s) => s,
            Err(e) => {
                if c.phase.owes_request() {
                    c.peer.queue(format!("{}\n", json!({ "error": e.to_string() })).as_bytes());
                    let _ = c.peer.flush();
                }
                c.cut = Some(super::peer::Cut::Done);
                return;
            }
        };
        match c.phase {
            Phase::Request => match c.peer.input.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line = c.peer.input[..end].to_vec();
                    c.peer.input.clear();
                    answer(c, &line, backend, room);
                }
                // Closed before completing its request.
                None if state == ReadState::Eof => {
                    c.cut = Some(super::peer::Cut::Done);
                    return;
                }
                None => {}
            },
            // A subscriber that hangs up is done; anything else it sends is ignored.
            _ if state == ReadState::Eof => {
                c.cut = Some(super::peer::Cut::Done);
                return;
            }
            _ => c.peer.input.clear(),
        }
    } else if revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        // Gone both ways (a half-close only reads as end of input): nobody to write the rest to.
        c.cut = Some(super::peer::Cut::Done);
        return;
    }
    finish_write(c);
}

fn answer(c: &mut Client, line: &[u8], backend: &mut Backend, room: &mut Room) {
    let req = match view::parse_request(line) {
        Ok(r) => r,
        Err(e) => {
            c.peer.queue(format!("{}\n", json!({ "error": e })).as_bytes());
            c.phase = Phase::Reply;
            return;
        }
    };
    c.phase = match req.cmd {
        Cmd::Flows | Cmd::Pinholes => {
            c.peer.queue(if req.cmd == Cmd::Flows { b"{\"flows\":[" } else { b"{\"pinholes\":[" });
            Phase::Listing(Listing {
                cmd: req.cmd,
                filter: req.filter,
                next: Some(req.cursor.unwrap_or(0)),
                left: req.limit,
                sent: 0,
                waiting: false,
            })
        }
        Cmd::Stats => {
            backend.submit(Job::Counters { tag: Tag { server: Server::Control, client: c.id } });
            Phase::Stats
        }
        // One JSON answer computed on the run loop, like the counters (`parse_request` saw the target).
        Cmd::Mapping => match req.target {
            Some(target) => {
                backend.submit(Job::Mapping { tag: Tag { server: Server::Control, client: c.id }, target });
                Phase::Stats
            }
            None => Phase::Reply,
        },
        Cmd::Events if room.subscribers >= room.max => {
            let e = format!("too many event subscribers ({} at most); try again later", room.max);
            c.peer.queue(format!("{}\n", json!({ "error": e })).as_bytes());
            Phase::Reply
        }
        Cmd::Events if room.recording => {
            room.subscribers += 1;
            c.peer.queue(b"{\"subscribed\":true}\n");
            Phase::Events { filter: req.filter, lost: 0 }
        }
        Cmd::Events => {
            room.subscribers += 1;
            Phase::Subscribing { filter: req.filter }
        }
    };
}
