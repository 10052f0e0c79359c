//! New TCP connections per second, for `netns-scripts/bench.sh`.
//!
//! Owns: a server that accepts and closes at once, and a client whose threads each connect, wait
//! for the server's close and close in turn (so TIME_WAIT stays on the server side and the client's
//! ports are free again at once). Must not: run unbounded: both stop at their time limit, the client
//! also at its count.
//!
//! ```text
//! connrate serve BIND:PORT [--secs 30]
//! connrate connect DST:PORT [--secs 3] [--count 20000] [--threads 4]
//! ```
//! `connect` prints `connections N secs S rate R failed F`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: connrate serve BIND:PORT [--secs 30]\n       connrate connect DST:PORT [--secs 3] [--count 20000] [--threads 4]"
    );
    std::process::exit(2)
}

fn main() {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let addr: SocketAddr = it.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
    let (mut secs, mut count, mut threads) = (if mode == "serve" { 30.0 } else { 3.0 }, 20_000u64, 4usize);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--secs" => secs = v.parse().unwrap_or_else(|_| usage()),
            "--count" => count = v.parse().unwrap_or_else(|_| usage()),
            "--threads" => threads = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if !(secs > 0.0 && secs <= 3600.0) || threads == 0 || threads > 64 {
        usage();
    }
    let limit = Duration::from_secs_f64(secs);
    match mode.as_str() {
        "serve" => serve(addr, limit),
        "connect" => connect(addr, limit, count, threads),
        _ => usage(),
    }
}

fn serve(addr: SocketAddr, limit: Duration) {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("connrate: bind {addr}: {e}");
        std::process::exit(1)
    });
    l.set_nonblocking(true).expect("nonblocking listener");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < limit {
        match l.accept() {
            // Dropping the stream closes it: the server sends the first FIN.
            Ok((s, _)) => {
                drop(s);
                n += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => {}
        }
    }
    println!("accepted {n}");
}

fn connect(addr: SocketAddr, limit: Duration, count: u64, threads: usize) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                while !stop.load(Relaxed) && start.elapsed() < limit {
                    if done.fetch_add(1, Relaxed) >= count {
                        done.fetch_sub(1, Relaxed);
                        stop.store(true, Relaxed);
                        break;
                    }
                    let ok = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                        .and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(1)))?;
                            // Wait for the server's FIN: the connection really went through.
                            while s.read(&mut buf)? > 0 {}
                            Ok(())
                        })
                        .is_ok();
                    if !ok {
                        done.fetch_sub(1, Relaxed);
                        failed.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Relaxed);
    println!("connections {n} secs {secs:.3} rate {:.0} failed {}", n as f64 / secs, failed.load(Relaxed));
}
