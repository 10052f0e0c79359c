//! `--workers N`: N run loops side by side, one per queue pair of the two multi-queue TUN devices, each
//! with its own engine (issue 18).
//!
//! Owns: opening the devices for N workers ([`open`]: N queues of each, the steering program attached
//! to each device, and the fall back to one worker when either is impossible: a warning when the count
//! was asked for, an information line when it is the default, [`Asked`]), starting
//! the loops ([`run_gateway`]: one engine per worker, its configuration's shard; one thread each, the
//! caller's thread runs worker 0, which polls the process's stop signal), stopping them all when one
//! stops (a signal, or a device failing under any of them), and the stop summary of the whole (each
//! counter summed over the workers, plus the per-worker packet counts). Must not: decide anything about
//! packets (the core's `steer` rule and the loops do).
//!
//! No lock on the packet path: each loop owns its engine, its two queues and its handoff endpoint; the
//! loops share nothing but the handoff queues ([`super::handoff`]), the operations thread's channels,
//! the capture writer's queue and the NAT log exporter's queue (each loop holds an end of the one
//! exporter: `ops::natlog`; worker 0's started its thread and reports its counters).
//!
//! Why one worker when the steering program cannot be attached: without it the kernel picks queues by
//! its own flow hash and moves a flow to the queue it was last written on; packets of one flow would be
//! read by two workers and could overtake each other in the handoff. One worker never reorders.

use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::config::{Config, Shard};
use crate::engine::Engine;
use crate::flow::Side;
use crate::ops::link::Link;
use crate::ops::natlog::Export;
use crate::ops::Ops;
use crate::steer::Steering;

use super::device::{Device, MemDevice, MemPeer};
use super::handoff::{self, Worker};
use super::runtime::{End, RunError, Runtime, Stop, StopCause, StopHandle};
use super::tun::{Offload, OpenError, TunDevice};

/// Opens the LAN and WAN devices for `workers` workers: one (LAN queue, WAN queue) pair per worker,
/// the steering program ([`super::bpf`]) attached to both devices so that each packet is read from
/// its owner's queue. When `workers` is 1, or the devices cannot be multi-queue (an existing device
/// created without `multi_queue`, a kernel without it), or the program cannot be loaded or attached
/// (no `bpf(2)` for this process, no `TUNSETSTEERINGEBPF`), it warns and returns one pair: one worker,
/// today's behaviour. The error is the plain open's (the devices cannot be opened at all). `asked`:
/// whether the operator gave the count (a warning when it cannot be had) or it is the default, one per
/// CPU (then the fall back to one worker is logged as information: nothing was asked that failed).
pub fn open(
    config: &Config,
    lan: &str,
    wan: &str,
    offload: Offload,
    workers: u16,
    asked: Asked,
) -> Result<Vec<(TunDevice, TunDevice)>, OpenError> {
    let mtu = |side: Side| config.mtu[side.index()];
    let one = || -> Result<Vec<(TunDevice, TunDevice)>, OpenError> {
        let l = TunDevice::open("--lan-tun", lan, mtu(Side::Inside), offload)?;
        let w = TunDevice::open("--wan-tun", wan, mtu(Side::Outside), offload)?;
        Ok(vec![(l, w)])
    };
    if workers <= 1 {
        return one();
    }
    let queues =
        TunDevice::open_queues("--lan-tun", lan, mtu(Side::Inside), offload, workers).and_then(|l| {
            TunDevice::open_queues("--wan-tun", wan, mtu(Side::Outside), offload, workers).map(|w| (l, w))
        });
    let (l, w) = match queues {
        Ok(q) => q,
        Err(e) => {
            // The queues opened so far are closed (a device ftpnat created goes with them) before the
            // plain open creates it again.
            match asked {
                Asked::Explicit => {
                    tracing::warn!(error = %e, workers, "cannot open a queue per worker; running one worker")
                }
                Asked::Default => tracing::info!(error = %e, workers,
                    "cannot open a queue per worker (the default, one per CPU); running one worker"),
            }
            return one();
        }
    };
    let steering = Steering::new(config, workers);
    let attached = [(&l[0], Side::Inside), (&w[0], Side::Outside)].into_iter().try_for_each(|(dev, side)| {
        super::bpf::steer(dev.raw_fd(), &steering, side).map(drop).map_err(|e| (dev.name().to_string(), e))
    });
    if let Err((device, e)) = attached {
        match asked {
            Asked::Explicit => tracing::warn!(device, error = %e, workers,
                "cannot attach the queue-steering eBPF program (TUNSETSTEERINGEBPF); running one worker"),
            Asked::Default => tracing::info!(device, error = %e, workers,
                "cannot attach the queue-steering eBPF program (TUNSETSTEERINGEBPF) for the default, one worker per CPU; running one worker"),
        }
        // One queue of each device left open: the kernel then reads every packet into it.
        let (l0, w0) = (l.into_iter().next(), w.into_iter().next());
        return Ok(l0.zip(w0).into_iter().collect());
    }
    tracing::info!(workers, lan, wan, "one queue of each device per worker, steered by eBPF");
    Ok(l.into_iter().zip(w).collect())
}

/// Where [`open`]'s worker count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `--workers N` / `workers = N`.
    Explicit,
    /// Unset: one per CPU.
    Default,
}

/// Runs the gateway over `pairs` (from [`open`]) until `stop` fires or a device fails: one engine and
/// run loop per pair, each engine with its shard of `config` ([`Config::for_shard`]); with one pair,
/// exactly the one-loop gateway. Fails only when a thread, a socket pair or an eventfd cannot be made.
pub fn run_gateway(
    config: Config,
    pairs: Vec<(TunDevice, TunDevice)>,
    ops: Ops,
    natlog: Option<Export>,
    stop: &Stop,
    state: State,
) -> io::Result<Outcome> {
    let n = u16::try_from(pairs.len()).map_err(|_| io::Error::other("too many workers"))?;
    let end = state.end();
    let mut restored = state.restored.map(Vec::into_iter);
    let mut engine_for =
        |config: Config| restored.as_mut().and_then(Iterator::next).unwrap_or_else(|| Engine::new(config));
    if n <= 1 {
        let Some((lan, wan)) = pairs.into_iter().next() else { return Err(io::Error::other("no devices")) };
        let mut engine = engine_for(config);
        engine.set_nat_log(natlog.is_some());
        let mut rt = Runtime::new(engine, lan, wan).with_natlog(natlog).with_ops(ops)?;
        let r = rt.run(stop);
        rt.drain_natlog(end);
        let summary = rt.summary();
        let saved = state
            .save
            .map(|path| save_states(&path, vec![(rt.engine().save_state(), rt.engine().flow_count())]));
        // Removes the control socket and flushes the capture.
        drop(rt);
        return Ok((r, with_saved(summary, saved)));
    }
    let mut meshed = handoff::mesh(&Steering::new(&config, n))?.into_iter();
    let mut links = ops.start_workers(Steering::new(&config, n))?.into_iter();
    let mut ends = exporter_ends(natlog, n).into_iter();
    let parts = pairs
        .into_iter()
        .zip(Shard::all(n))
        .map(|((lan, wan), shard)| {
            let natlog = ends.next().flatten();
            let mut engine = engine_for(config.for_shard(shard));
            engine.set_nat_log(natlog.is_some());
            Parts {
                engine,
                lan,
                wan,
                worker: meshed.next().expect("one handoff endpoint per worker"),
                link: links.next(),
                natlog,
            }
        })
        .collect();
    run(parts, stop, state.save)
}

/// The state a gateway starts from and where it leaves it (`--state-file`, issue 15).
#[derive(Default)]
pub struct State {
    /// Engines restored from the state file, one per worker in worker order (`state_file::load`).
    pub restored: Option<Vec<Engine>>,
    /// Where the engines' state goes when the gateway stops.
    pub save: Option<PathBuf>,
}

impl State {
    fn end(&self) -> End {
        if self.save.is_some() {
            End::HandedOn
        } else {
            End::Final
        }
    }
}

/// Writes the engines' states (worker order) to `path`, logging the outcome: (bytes, flows) or
/// the error's text.
fn save_states(path: &Path, states: Vec<(Vec<u8>, usize)>) -> Result<(u64, usize), String> {
    let started = std::time::Instant::now();
    let flows = states.iter().map(|s| s.1).sum::<usize>();
    let bytes: Vec<Vec<u8>> = states.into_iter().map(|s| s.0).collect();
    match crate::io::state_file::save(path, &bytes) {
        Ok(n) => {
            tracing::info!(
                path = %path.display(),
                flows,
                bytes = n,
                ms = started.elapsed().as_millis() as u64,
                "state saved"
            );
            Ok((n, flows))
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot save the state: the next start is empty");
            Err(e.to_string())
        }
    }
}

/// The stop summary with the save's lines.
fn with_saved(
    mut summary: Vec<(String, u64)>,
    saved: Option<Result<(u64, usize), String>>,
) -> Vec<(String, u64)> {
    match saved {
        Some(Ok((bytes, flows))) => {
            summary.push(("state.saved_bytes".into(), bytes));
            summary.push(("state.saved_flows".into(), flows as u64));
        }
        Some(Err(_)) => summary.push(("state.save_failed".into(), 1)),
        None => {}
    }
    summary
}

/// One NAT log end per worker (all `None` without an exporter): worker 0's is the end that started
/// the exporter's thread, the others more ends of it.
fn exporter_ends(natlog: Option<Export>, workers: u16) -> Vec<Option<Export>> {
    let Some(first) = natlog else { return (0..workers).map(|_| None).collect() };
    let more: Vec<Option<Export>> = (1..workers).map(|_| Some(first.another())).collect();
    std::iter::once(Some(first)).chain(more).collect()
}

/// One worker's parts.
pub struct Parts<D> {
    pub engine: Engine,
    pub lan: D,
    pub wan: D,
    pub worker: Worker,
    pub link: Option<Link>,
    /// Its end of the NAT log exporter (worker 0's started the thread: [`Export::another`]).
    pub natlog: Option<Export>,
}

/// What [`run`] returns: how the gateway stopped (the first device failure of any worker, else worker
/// 0's stop cause) and the stop summary.
pub type Outcome = (Result<StopCause, RunError>, Vec<(String, u64)>);

/// A worker thread's end: how it stopped, its summary, its pool addresses in use
/// ([`crate::ops::view::pool_in_use`]) and, when the state is saved, its engine's.
type Finished = (Result<StopCause, RunError>, Vec<(String, u64)>, Vec<u64>, Option<(Vec<u8>, usize)>);

/// Runs every worker until `stop` fires or one of them fails; worker 0 runs on this thread.
pub fn run<D: Device + Send + 'static>(
    parts: Vec<Parts<D>>,
    stop: &Stop,
    save: Option<PathBuf>,
) -> io::Result<Outcome> {
    let end = if save.is_some() { End::HandedOn } else { End::Final };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else { return Err(io::Error::other("no workers")) };
    let workers = parts.len() + 1;
    let mut threads: Vec<(StopHandle, JoinHandle<Finished>)> = Vec::new();
    for p in parts {
        let (own, handle) = Stop::manual()?;
        // A worker that ends (a device failed under it) stops worker 0, which then stops the rest.
        let main = stop.handle()?;
        let i = p.worker.index();
        let t = std::thread::Builder::new().name(format!("ftpnat-w{i}")).spawn(move || {
            let mut rt = runtime(p);
            let r = rt.run(&own);
            let _ = main.stop();
            // Its records still queued and its stop records (blocks and sessions held) go out.
            rt.drain_natlog(end);
            let summary = rt.summary();
            let per = per_worker(i, &rt);
            let in_use = crate::ops::view::pool_in_use(rt.engine().nat());
            let state = (end == End::HandedOn).then(|| (rt.engine().save_state(), rt.engine().flow_count()));
            drop(rt);
            (r, merge(summary, per), in_use, state)
        })?;
        threads.push((handle, t));
    }
    let i = first.worker.index();
    let mut rt = runtime(first);
    let mut result = rt.run(stop);
    for (h, _) in &threads {
        let _ = h.stop();
    }
    let mut counters = Vec::new();
    let mut in_use = Vec::new();
    let mut states = Vec::new();
    for (_, t) in threads {
        match t.join() {
            Ok((r, c, u, s)) => {
                states.extend(s);
                if let (Ok(_), Err(e)) = (&result, r) {
                    result = Err(e);
                }
                counters = merge(counters, c);
                crate::ops::view::union_in_use(&mut in_use, &u);
            }
            Err(_) => {
                if result.is_ok() {
                    result = Err(RunError {
                        side: None,
                        device: "worker".into(),
                        what: "a worker thread panicked".into(),
                    });
                }
            }
        }
    }
    // Worker 0's summary last: its NAT log end reports the exporter's counters, complete once every
    // worker has handed over its stop records. Its loop (and with it the last link: the operations
    // thread, the capture, the NAT log exporter's thread) goes last.
    rt.drain_natlog(end);
    let mut counters = merge(merge(rt.summary(), per_worker(i, &rt)), counters);
    // The pool is every worker's: its size is one worker's, its addresses in use their union.
    let nat = rt.engine().nat();
    let in_use = crate::ops::view::union_in_use(&mut in_use, &crate::ops::view::pool_in_use(nat));
    for (k, v) in [("nat.pool.addresses", nat.pool().len() as u64), ("nat.pool.addresses_in_use", in_use)] {
        match counters.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v,
            None if v != 0 => counters.push((k.to_string(), v)),
            None => {}
        }
    }
    let saved = save.map(|path| {
        if states.len() != workers - 1 {
            // A worker that panicked left no state: a file without it would not match the workers.
            tracing::error!(path = %path.display(), "a worker ended without its state: none is saved");
            return Err("a worker's state is missing".to_string());
        }
        let first = (rt.engine().save_state(), rt.engine().flow_count());
        save_states(&path, std::iter::once(first).chain(states).collect())
    });
    drop(rt);
    Ok((result, with_saved(counters, saved)))
}

fn runtime<D: Device>(p: Parts<D>) -> Runtime<D> {
    let rt = Runtime::new(p.engine, p.lan, p.wan).with_worker(p.worker).with_natlog(p.natlog);
    match p.link {
        Some(l) => rt.with_link(l),
        None => rt,
    }
}

/// The per-worker lines of the summary: how the packets spread.
fn per_worker<D: Device>(i: u16, rt: &Runtime<D>) -> Vec<(String, u64)> {
    let rx = [Side::Inside, Side::Outside].iter().map(|s| rt.device_stats(*s).rx_packets).sum::<u64>();
    vec![(format!("workers.{i}.rx_packets"), rx)]
}

/// Sums `b` into `a` by name, keeping `a`'s order and appending names `a` lacks.
pub fn merge(mut a: Vec<(String, u64)>, b: Vec<(String, u64)>) -> Vec<(String, u64)> {
    for (k, v) in b {
        match a.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 += v,
            None => a.push((k, v)),
        }
    }
    a
}

/// For tests: `workers` run loops over in-memory devices ([`MemDevice`]), each queue pair a socket
/// pair the test writes and reads: what it injects into queue `i` is what worker `i` reads, as if the
/// kernel's steering had chosen it. `natlog`: the exporter, its first end to worker 0.
pub struct MemGateway {
    pub lans: Vec<MemPeer>,
    pub wans: Vec<MemPeer>,
    pub stop: StopHandle,
    pub done: JoinHandle<io::Result<Outcome>>,
}

impl MemGateway {
    pub fn start(config: &Config, workers: u16, natlog: Option<Export>) -> io::Result<MemGateway> {
        let mut handoff = handoff::mesh(&Steering::new(config, workers))?.into_iter();
        let mut ends = exporter_ends(natlog, workers).into_iter();
        let (mut lans, mut wans, mut parts) = (Vec::new(), Vec::new(), Vec::new());
        for shard in Shard::all(workers) {
            let (lan, lp) = MemDevice::pair("memlan")?;
            let (wan, wp) = MemDevice::pair("memwan")?;
            lans.push(lp);
            wans.push(wp);
            let natlog = ends.next().flatten();
            let mut engine = Engine::new(config.for_shard(shard));
            engine.set_nat_log(natlog.is_some());
            let worker = handoff.next().ok_or_else(|| io::Error::other("no handoff endpoint"))?;
            parts.push(Parts { engine, lan, wan, worker, link: None, natlog });
        }
        let (stop, handle) = Stop::manual()?;
        let done = std::thread::spawn(move || run(parts, &stop, None));
        Ok(MemGateway { lans, wans, stop: handle, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::{slice_range, Steering};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn config() -> Config {
        Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1))
    }

    /// A UDP datagram with valid checksums.
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u8) -> Vec<u8> {
        let payload = [seq; 4];
        let len = 28 + payload.len();
        let mut p = vec![0x45, 0, 0, len as u8, 0, seq, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let c = crate::wire::checksum::checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&payload);
        let mut ip = crate::wire::ipv4::Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_transport_checksum();
        p
    }

    type Rig = MemGateway;

    fn rig() -> Rig {
        MemGateway::start(&config(), 2, None).unwrap()
    }

    /// A host whose worker is `w`.
    fn host_of(w: u16) -> [u8; 4] {
        (2..=254u8)
            .map(|i| [10, 0, 0, i])
            .find(|a| crate::steer::host_worker(Ipv4Addr::from(*a), 2) == w)
            .unwrap()
    }

    /// Packets read by the wrong worker reach their owner's engine, in order, and leave on the
    /// owner's queue; the reply comes back through the owner's slice; counters sum over workers.
    #[test]
    fn a_flow_read_by_the_wrong_worker_is_handed_to_its_owner_in_order() {
        let r = rig();
        let host = host_of(1);
        // Read by worker 0 (its "queue"), owned by worker 1.
        for seq in 0..20u8 {
            r.lans[0].inject(&udp(host, 40000, [203, 0, 113, 9], 53, seq)).unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let p = r.wans[1]
                .take_within(Duration::from_secs(5))
                .unwrap()
                .expect("translated on worker 1's queue");
            seen.push(p[5]);
        }
        assert_eq!(seen, (0..20).collect::<Vec<u8>>(), "in the order they were read");
        assert!(r.wans[0].take().unwrap().is_none(), "nothing leaves on worker 0's queue");
        r.stop.stop().unwrap();
        let (result, counters) = r.done.join().unwrap().unwrap();
        assert_eq!(result.unwrap(), StopCause::Requested);
        let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        assert_eq!(get("workers.handoff.sent"), 20, "{counters:?}");
        assert_eq!(get("workers.handoff.received"), 20);
        assert_eq!(get("flows.created"), 1);
        assert_eq!(get("workers.0.rx_packets"), 20);
        assert_eq!(get("flows.active"), 1);
    }

    #[test]
    fn both_directions_meet_in_the_owner() {
        let r = rig();
        let host = host_of(0);
        r.lans[0].inject(&udp(host, 40000, [203, 0, 113, 9], 53, 1)).unwrap();
        let out = r.wans[0].take_within(Duration::from_secs(5)).unwrap().expect("out on worker 0's queue");
        let public = u16::from_be_bytes([out[20], out[21]]);
        assert!(
            slice_range(&config().port_range, 2, 0).contains(&public) || public == 40000 && 40000 % 2 == 0
        );
        // The reply, read (wrongly) by worker 1, is handed to worker 0 and reaches the host.
        r.wans[1].inject(&udp([203, 0, 113, 9], 53, [198, 51, 100, 1], public, 2)).unwrap();
        let back =
            r.lans[0].take_within(Duration::from_secs(5)).unwrap().expect("back on worker 0's LAN queue");
        assert_eq!(&back[16..20], &host);
        r.stop.stop().unwrap();
        let (result, counters) = r.done.join().unwrap().unwrap();
        assert!(result.is_ok());
        let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        assert_eq!(get("drops.no_mapping"), 0, "{counters:?}");
    }

    /// A device that goes away under any worker stops the whole gateway, naming it.
    #[test]
    fn a_failing_worker_stops_them_all() {
        let r = rig();
        let Rig { lans, mut wans, done, stop: _stop } = r;
        wans.remove(1).close();
        let (result, _) = done.join().unwrap().unwrap();
        let e = result.unwrap_err();
        assert_eq!(e.side, Some(Side::Outside));
        drop(lans);
    }

    /// A flood read by one worker does not hold up the other: worker 1's flow gets through while
    /// worker 0's queue is kept full (the flood stops only once it has, or after a bound).
    #[test]
    fn a_flood_on_one_queue_does_not_stall_the_other_worker() {
        let r = rig();
        let (flooder, victim) = (host_of(0), host_of(1));
        let through = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let flood = s.spawn(|| {
                let start = std::time::Instant::now();
                let mut sent = 0u64;
                while !through.load(std::sync::atomic::Ordering::Acquire)
                    && start.elapsed() < Duration::from_secs(30)
                {
                    let p = udp(flooder, 1000 + (sent % 20000) as u16, [203, 0, 113, 7], 9, sent as u8);
                    if r.lans[0].inject(&p).is_ok() {
                        sent += 1;
                    }
                    // Drain worker 0's output now and then, as a network would.
                    if sent % 64 == 0 {
                        while let Ok(Some(_)) = r.wans[0].take() {}
                    }
                }
                sent
            });
            let mut got = Vec::new();
            for seq in 0..50u8 {
                r.lans[1].inject(&udp(victim, 40000, [203, 0, 113, 9], 53, seq)).unwrap();
                let p = r.wans[1].take_within(Duration::from_secs(10)).unwrap().expect("worker 1 forwards");
                got.push(p[5]);
            }
            through.store(true, std::sync::atomic::Ordering::Release);
            assert_eq!(got, (0..50).collect::<Vec<u8>>());
            assert!(flood.join().unwrap() > 0);
        });
        r.stop.stop().unwrap();
        let (result, counters) = r.done.join().unwrap().unwrap();
        assert!(result.is_ok());
        let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        assert_eq!(get("workers.handoff.sent"), 0, "each flow was read by its owner: {counters:?}");
    }

    /// Packets to public ports nobody mapped, in either worker's slice, read by worker 0: the ones of
    /// worker 1's slice are handed to it, and neither engine creates anything for them.
    #[test]
    fn forged_public_ports_are_handed_to_their_slice_and_create_nothing() {
        let r = rig();
        // One real flow per worker, to answer behind the forged packets: each answer, handed (or
        // read) after them, arriving proves its worker handled them all.
        let mut public = Vec::new();
        for w in 0..2usize {
            r.lans[w].inject(&udp(host_of(w as u16), 40000, [203, 0, 113, 9], 53, 1)).unwrap();
            let out = r.wans[w].take_within(Duration::from_secs(5)).unwrap().expect("forwarded");
            public.push(u16::from_be_bytes([out[20], out[21]]));
        }
        let range = config().port_range;
        let mut ports: Vec<u16> = Vec::new();
        for w in 0..2u16 {
            let slice = slice_range(&range, 2, w);
            ports.extend([*slice.start(), *slice.start() + 7, *slice.end()]);
        }
        ports.retain(|p| !public.contains(p));
        let forged = ports.len();
        for (i, p) in ports.iter().enumerate() {
            r.wans[0].inject(&udp([203, 0, 113, 66], 53, [198, 51, 100, 1], *p, i as u8)).unwrap();
        }
        for (w, p) in public.iter().enumerate() {
            r.wans[0].inject(&udp([203, 0, 113, 9], 53, [198, 51, 100, 1], *p, 2)).unwrap();
            let back = r.lans[w].take_within(Duration::from_secs(5)).unwrap().expect("the answer arrives");
            assert_eq!(&back[16..20], &host_of(w as u16));
        }
        for l in &r.lans {
            let p = l.take().unwrap();
            assert!(p.is_none(), "nothing else reached the inside: {p:?}");
        }
        r.stop.stop().unwrap();
        let (result, counters) = r.done.join().unwrap().unwrap();
        assert!(result.is_ok());
        let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        let theirs = ports.iter().filter(|p| slice_range(&range, 2, 1).contains(p)).count() as u64;
        assert_eq!(
            get("workers.handoff.sent"),
            theirs + 1,
            "worker 1's slice went to worker 1: {counters:?}"
        );
        assert_eq!(get("flows.created"), 2, "only the two real flows: {counters:?}");
        assert_eq!(get("drops.no_mapping"), forged as u64, "{counters:?}");
    }

    /// With an address pool (issue 16): a host's mapping is on one pool address and its worker's slice;
    /// forged packets to the same port on the pool's other address, and to ports of both slices on
    /// both addresses, all read by worker 0, are handed to their port's worker and create nothing; the
    /// genuine reply, read by the wrong worker too, still reaches the host.
    #[test]
    fn forged_ports_on_every_pool_address_create_nothing() {
        let mut c = config();
        let b = Ipv4Addr::new(198, 51, 100, 11);
        c.pool.addresses.push(b);
        let r = MemGateway::start(&c, 2, None).unwrap();
        let host = host_of(1);
        r.lans[1].inject(&udp(host, 40000, [203, 0, 113, 9], 53, 1)).unwrap();
        let out = r.wans[1].take_within(Duration::from_secs(5)).unwrap().expect("forwarded by worker 1");
        let (public, port) =
            (Ipv4Addr::new(out[12], out[13], out[14], out[15]), u16::from_be_bytes([out[20], out[21]]));
        assert!(c.pool.addresses.contains(&public));
        assert!(slice_range(&c.port_range, 2, 1).contains(&port), "{port}");
        let other = if public == b { c.public_ip } else { b };
        let mut forged = vec![(other, port)];
        for a in [c.public_ip, b] {
            for w in 0..2 {
                let p = *slice_range(&c.port_range, 2, w).start() + 11;
                forged.push((a, p));
            }
        }
        for (i, (a, p)) in forged.iter().enumerate() {
            r.wans[0].inject(&udp([203, 0, 113, 9], 53, a.octets(), *p, i as u8)).unwrap();
        }
        r.wans[0].inject(&udp([203, 0, 113, 9], 53, public.octets(), port, 99)).unwrap();
        let back =
            r.lans[1].take_within(Duration::from_secs(5)).unwrap().expect("the reply reaches the host");
        assert_eq!((&back[16..20], back[5]), (&host[..], 99), "only the genuine reply");
        assert!(r.lans[0].take().unwrap().is_none() && r.lans[1].take().unwrap().is_none());
        r.stop.stop().unwrap();
        let (result, counters) = r.done.join().unwrap().unwrap();
        assert!(result.is_ok());
        let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        assert_eq!(get("flows.created"), 1, "{counters:?}");
        assert_eq!(get("drops.no_mapping"), forged.len() as u64, "{counters:?}");
        assert_eq!(get("nat.pool.addresses"), 2, "the pool counted once: {counters:?}");
        assert_eq!(get("nat.pool.addresses_in_use"), 1, "{counters:?}");
    }

    /// Deterministic NAT (RFC 7422) over two workers: a host of each worker (its block's) leaves with
    /// exactly its computed address and a port of its computed range, even when its packets are read
    /// by the other worker; the replies, read by the wrong worker, reach it.
    #[test]
    fn deterministic_hosts_use_their_computed_range_on_their_blocks_worker() {
        let mut c = config();
        c.pool.addresses.push(Ipv4Addr::new(198, 51, 100, 11));
        c.pool.allocation = crate::nat::Allocation::Deterministic { size: None };
        c.for_shard(Shard { index: 0, count: 2 }).validate().unwrap();
        let layout = crate::nat::Deterministic::new(
            &c.inside,
            &c.pool.addresses,
            crate::nat::PortRange::try_from(&c.port_range).unwrap(),
            None,
        )
        .unwrap();
        let s = Steering::new(&c, 2);
        let r = MemGateway::start(&c, 2, None).unwrap();
        for w in 0..2u16 {
            let host =
                (2..=254u8).map(|i| Ipv4Addr::new(10, 0, 0, i)).find(|h| s.host_worker(*h) == w).unwrap();
            let share = layout.forward(host).unwrap();
            let wrong = usize::from(1 - w);
            for (i, sport) in [40000u16, 40001].into_iter().enumerate() {
                // The first read by its own worker, the second by the other.
                let q = if i == 0 { usize::from(w) } else { wrong };
                r.lans[q].inject(&udp(host.octets(), sport, [203, 0, 113, 9], 53, i as u8)).unwrap();
                let out = r.wans[usize::from(w)].take_within(Duration::from_secs(5)).unwrap().expect("out");
                let public = Ipv4Addr::new(out[12], out[13], out[14], out[15]);
                let port = u16::from_be_bytes([out[20], out[21]]);
                assert_eq!(public, share.public, "{host}");
                assert!(share.ports.contains(port), "{host}: {port} outside {}", share.ports);
                r.wans[wrong].inject(&udp([203, 0, 113, 9], 53, public.octets(), port, 9)).unwrap();
                let back = r.lans[usize::from(w)].take_within(Duration::from_secs(5)).unwrap().expect("back");
                assert_eq!(&back[16..20], &host.octets());
            }
        }
        r.stop.stop().unwrap();
        let (result, counters) = r.done.join().unwrap().unwrap();
        assert!(result.is_ok());
        let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        assert_eq!(get("flows.created"), 4, "{counters:?}");
        assert_eq!(get("drops.no_mapping"), 0, "{counters:?}");
        assert_eq!(get("workers.handoff.sent"), 6, "one outbound and two replies per host: {counters:?}");
    }

    #[test]
    fn summaries_sum_by_name() {
        let a = vec![("x".to_string(), 1), ("y".to_string(), 2)];
        let b = vec![("y".to_string(), 3), ("z".to_string(), 4)];
        assert_eq!(merge(a, b), [("x".to_string(), 1), ("y".to_string(), 5), ("z".to_string(), 4)]);
    }
}
