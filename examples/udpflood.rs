//! A batched UDP packet-rate generator and counter for `netns-scripts/bench.sh`.
//!
//! Owns: sending small UDP datagrams with `sendmmsg(2)` (one syscall per batch, which is what lets a
//! single sender outrun a NAT; iperf3's one-`send`-per-datagram cannot), and counting them with
//! `recvmmsg(2)`. Must not: run unbounded: every mode stops at its count or its time limit, whichever
//! comes first. It sends only where it is told to (bench.sh points it into namespaces it created).
//!
//! ```text
//! udpflood send  DST:PORT [--size 64] [--secs 5] [--count N] [--batch 64] [--flows 1] [--sport P]
//! udpflood recv  BIND:PORT [--secs 10] [--idle 1]
//! ```
//! `--size` is the IPv4 datagram size (64 means 36 bytes of UDP payload). `--flows K` spreads the
//! datagrams over K distinct 5-tuples: destination ports DST_PORT.. (up to 60 000 of them) times as many
//! source sockets as needed, each flow getting one datagram per round; this is how bench.sh fills a
//! NAT's table. `send` prints `sent N secs S pps R`; `recv` prints `received N secs S pps R` over the
//! span from its first to its last datagram, and exits after `--idle` seconds without one.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const MAX_BATCH: usize = 1024;
/// Destination ports a `--flows` sender uses per source socket.
const PORTS_PER_SOCKET: u32 = 60_000;

struct Args {
    mode: String,
    addr: SocketAddrV4,
    size: usize,
    secs: f64,
    count: u64,
    batch: usize,
    flows: u32,
    sport: u16,
    idle: f64,
}

fn usage() -> ! {
    eprintln!(
        "usage: udpflood send DST:PORT [--size 64] [--secs 5] [--count N] [--batch 64] [--flows 1] [--sport P]\n       \
         udpflood recv BIND:PORT [--secs 10] [--idle 1]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let addr = it.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
    let mut a =
        Args { mode, addr, size: 64, secs: 5.0, count: u64::MAX, batch: 64, flows: 1, sport: 0, idle: 1.0 };
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--size" => a.size = v.parse().unwrap_or_else(|_| usage()),
            "--secs" => a.secs = v.parse().unwrap_or_else(|_| usage()),
            "--count" => a.count = v.parse().unwrap_or_else(|_| usage()),
            "--batch" => a.batch = v.parse().unwrap_or_else(|_| usage()),
            "--flows" => a.flows = v.parse().unwrap_or_else(|_| usage()),
            "--sport" => a.sport = v.parse().unwrap_or_else(|_| usage()),
            "--idle" => a.idle = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if !(28..=1500).contains(&a.size) || a.batch == 0 || a.batch > MAX_BATCH || a.flows == 0 {
        usage();
    }
    let secs_ok = a.secs > 0.0 && a.secs <= 3600.0;
    let idle_ok = a.idle > 0.0 && a.idle <= 60.0;
    if !secs_ok || !idle_ok {
        usage();
    }
    a
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn send(a: &Args) -> io::Result<()> {
    let payload = vec![0x5au8; a.size - 28];
    // Source sockets: one for a single flow, else enough that each covers PORTS_PER_SOCKET flows.
    let sockets = a.flows.div_ceil(PORTS_PER_SOCKET) as usize;
    let mut socks = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let sport = if a.sport == 0 { 0 } else { a.sport.wrapping_add(i as u16) };
        socks.push(UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport))?);
    }
    // Destinations of one socket's batch are explicit (msg_name), so one socket serves many flows.
    let dsts: Vec<libc::sockaddr_in> = (0..a.flows.min(PORTS_PER_SOCKET))
        .map(|i| sockaddr(SocketAddrV4::new(*a.addr.ip(), a.addr.port().wrapping_add(i as u16))))
        .collect();
    let batch = a.batch;
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    // SAFETY: mmsghdr is plain old data; the pointers set below stay valid for every call.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.secs);
    let (mut sent, mut next_flow, mut errors) = (0u64, 0u64, 0u64);
    let total_flows = a.flows as u64;
    'outer: while sent < a.count && start.elapsed() < limit {
        // One batch per socket in turn; each message names its flow's destination port.
        let flow0 = next_flow;
        let sock_i = ((flow0 % total_flows) / PORTS_PER_SOCKET as u64) as usize;
        let n = batch.min((a.count - sent) as usize);
        for (k, m) in msgs.iter_mut().take(n).enumerate() {
            let f = (flow0 + k as u64) % total_flows;
            let d = &dsts[(f % PORTS_PER_SOCKET as u64) as usize];
            m.msg_hdr.msg_name = d as *const libc::sockaddr_in as *mut libc::c_void;
        }
        // A batch must stay on one socket: cut it where the flow index crosses to the next socket.
        let room = PORTS_PER_SOCKET as u64 - (flow0 % total_flows) % PORTS_PER_SOCKET as u64;
        let room = room.min(total_flows - flow0 % total_flows);
        let n = n.min(room as usize);
        // SAFETY: msgs[..n] point at live iovec/sockaddr buffers; the fd is open.
        let r = unsafe { libc::sendmmsg(socks[sock_i].as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // A full queue or an ICMP error reported on the socket: keep going, count it.
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::ECONNREFUSED) | Some(libc::EINTR) => {
                    errors += 1;
                    if errors > 1_000_000 {
                        break 'outer;
                    }
                    continue;
                }
                _ => return Err(e),
            }
        }
        sent += r as u64;
        next_flow = next_flow.wrapping_add(r as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent {sent} secs {secs:.3} pps {:.0} errors {errors}", sent as f64 / secs);
    Ok(())
}

fn recv(a: &Args) -> io::Result<()> {
    let sock = UdpSocket::bind(a.addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let fd = sock.as_raw_fd();
    // A large receive buffer absorbs bursts while this process is descheduled.
    let rcvbuf: libc::c_int = 64 << 20;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from a live c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let batch = MAX_BATCH.min(256);
    let mut bufs = vec![[0u8; 2048]; batch];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: b.len() })
        .collect();
    // SAFETY: mmsghdr is plain old data; each points at its own live iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let limit = Duration::from_secs_f64(a.secs);
    let idle = Duration::from_secs_f64(a.idle);
    let (mut got, mut first, mut last) = (0u64, None::<Instant>, start);
    while start.elapsed() < limit && got < a.count {
        let mut timeout = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
        // SAFETY: msgs point at live buffers; fd is open; timeout is a live timespec.
        let r = unsafe {
            libc::recvmmsg(fd, msgs.as_mut_ptr(), batch as u32, libc::MSG_WAITFORONE, &mut timeout)
        };
        let now = Instant::now();
        if r > 0 {
            first.get_or_insert(now);
            last = now;
            got += r as u64;
        } else if first.is_some() && now - last > idle {
            break;
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let pps = if secs > 0.0 { got as f64 / secs } else { 0.0 };
    println!("received {got} secs {secs:.3} pps {pps:.0}");
    Ok(())
}

fn main() {
    let a = parse();
    let r = match a.mode.as_str() {
        "send" => send(&a),
        "recv" => recv(&a),
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("udpflood: {e}");
        std::process::exit(1);
    }
}
