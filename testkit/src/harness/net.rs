//! The virtual network: smoltcp hosts on an inside and an outside segment, a middlebox between them, a
//! virtual clock, packet movement with fault injection, the packet log, and the apps (FTP peers) that run
//! on the hosts. A host is IPv4 or IPv6 (an IPv6-only inside host reaches IPv4 outside hosts through a
//! NAT64 middlebox at their [`nat64_addr`]).
//!
//! Owns: hosts (`Interface` + queue-backed `phy::Device` + sockets), delivery by destination address on
//! the side a packet leaves on, time (µs, jumps to the next deadline when idle), the check of every packet
//! leaving the middlebox. Must not: interpret FTP (that is [`super::ftp`]) or decide faults (that is
//! [`super::fault`]).

use std::any::Any;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ftpnat::Side;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::fault::{Faults, Stage, TapInfo};
use super::ftp::{ClientConfig, FtpClient, FtpServer, ServerConfig};
use super::{pkt, Middlebox, SplitMix64};

pub const INSIDE_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const INSIDE_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const INSIDE_HOST2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
/// The outside gateway address, which is also the NAT's public address.
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const OUTSIDE_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const THIRD_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// The inside IPv6 segment (a NAT64 `--inside6` prefix): the gateway's LAN address and a host.
pub const INSIDE6_NET: &str = "2001:db8:64::/64";
pub const INSIDE6_GW: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 1);
pub const INSIDE6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 2);
/// The NAT64 prefix (RFC 6052 /96, network-specific: the well-known one carries only global IPv4, and
/// the outside hosts here are documentation addresses).
pub const NAT64_PREFIX: &str = "64:ff9b:1::/96";

/// An IPv4 address as an IPv6 host reaches it under [`NAT64_PREFIX`] (RFC 6052 §2.2, /96).
pub fn nat64_addr(v4: Ipv4Addr) -> Ipv6Addr {
    let o = v4.octets();
    Ipv6Addr::new(
        0x64,
        0xff9b,
        1,
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    )
}

/// A `phy::Device` backed by two queues: `rx` is filled by the network, `tx` drained by it.
#[derive(Debug)]
pub struct QueueDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    pub mtu: usize,
}

impl Device for QueueDevice {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _t: SmolInstant) -> Option<(RxTok, TxTok<'_>)> {
        let buf = self.rx.pop_front()?;
        Some((RxTok(buf), TxTok(&mut self.tx)))
    }
    fn transmit(&mut self, _t: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // smoltcp's default MTU is 0, with which it sends nothing at all.
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

pub struct RxTok(Vec<u8>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

pub struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

/// One smoltcp host.
pub struct Host {
    pub side: Side,
    pub addr: IpAddr,
    pub iface: Interface,
    pub dev: QueueDevice,
    pub sockets: SocketSet<'static>,
}

/// What an app gets each step: the clock, its host's address, interface (for `connect`) and sockets.
pub struct AppCx<'a> {
    pub now_us: u64,
    pub addr: IpAddr,
    pub iface: &'a mut Interface,
    pub sockets: &'a mut SocketSet<'static>,
}

/// A program on a host, polled once per step between the interface's ingress and egress.
pub trait App: Any {
    fn poll(&mut self, cx: &mut AppCx<'_>);
    /// `Some(t)`: wants a poll at virtual time `t` even if no packet arrives (`t <= now`: right away).
    fn poll_at(&self) -> Option<u64> {
        None
    }
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Typed handle of an app added to a [`Net`].
pub struct AppId<T> {
    idx: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for AppId<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for AppId<T> {}

/// Where the packet log entry was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A host sent it (toward the middlebox).
    Sent,
    /// The middlebox emitted it on this side.
    Emitted,
    /// The middlebox emitted nothing for a packet (dropped or held).
    Absorbed,
    /// Delivered to a host.
    Delivered,
    /// Left the middlebox toward an address no host owns.
    Unknown,
    /// Fault injection or the tap removed it.
    Faulted,
    /// Went around the middlebox (the tap's `Bypass`), delivered translated on this side.
    Bypassed,
}

/// One packet-log entry. Only the packet's head is kept and summarised on demand, so logging stays
/// cheap enough for thousands of seeded sessions.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub t_us: u64,
    pub side: Side,
    pub event: Event,
    /// The first [`LOG_HEAD`] bytes of the packet.
    pub head: Vec<u8>,
}

/// Bytes of each packet kept in the log: the largest IPv4 + TCP headers and a 48-byte payload preview.
pub const LOG_HEAD: usize = 60 + 60 + 48;

impl LogEntry {
    pub fn summary(&self) -> String {
        pkt::summary(&self.head)
    }
}

/// How [`Net::run_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Done,
    /// Virtual time ran past the limit.
    TimedOut,
    /// Nothing is in flight and no timer is pending: the condition can never become true.
    Stalled,
    /// The hard step bound was hit (a livelock).
    StepLimit,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub steps: u64,
    pub sent: u64,
    pub emitted: u64,
    pub delivered: u64,
    pub unknown_dst: u64,
    /// Packets for which the middlebox emitted nothing.
    pub absorbed: u64,
}

struct InFlight {
    at: u64,
    host: usize,
    pkt: Vec<u8>,
}

pub struct Net {
    now_us: u64,
    hosts: Vec<Host>,
    apps: Vec<(usize, Box<dyn App>)>,
    mb: Box<dyn Middlebox>,
    pub faults: Faults,
    in_flight: VecDeque<InFlight>,
    /// One-way delay from the middlebox to the receiving host (µs); applies to packets emitted later.
    pub link_delay_us: u64,
    /// MTU of hosts added after it is set (smoltcp reads it once, when the interface is created).
    pub mtu: usize,
    /// Hard bound on steps, across all runs of this `Net`.
    pub max_steps: u64,
    /// Every packet the middlebox emits must pass [`pkt::check_packet`] (on by default).
    pub check_packets: bool,
    pub stats: NetStats,
    log: VecDeque<LogEntry>,
    /// Entries kept; older ones are forgotten.
    pub log_cap: usize,
    /// Entries printed when a test panics while this `Net` is alive.
    pub log_print_on_panic: usize,
    seeds: SplitMix64,
}

impl Net {
    /// The standard topology: [`INSIDE_HOST`] and [`OUTSIDE_HOST`], seed 1.
    pub fn new(mb: Box<dyn Middlebox>) -> Net {
        Net::with_seed(mb, 1)
    }

    /// Same, with `seed` driving the smoltcp random seeds (ISNs) and the fault injector.
    pub fn with_seed(mb: Box<dyn Middlebox>, seed: u64) -> Net {
        let mut net = Net::empty(mb, seed);
        net.add_host(Side::Inside, INSIDE_HOST);
        net.add_host(Side::Outside, OUTSIDE_HOST);
        net
    }

    /// No hosts yet: set [`Net::mtu`] (smoltcp derives its MSS from it) and then [`Net::add_host`].
    pub fn empty(mb: Box<dyn Middlebox>, seed: u64) -> Net {
        let mut seeds = SplitMix64::new(seed);
        let faults = Faults::new(seeds.next_u64());
        Net {
            now_us: 0,
            hosts: Vec::new(),
            apps: Vec::new(),
            mb,
            faults,
            in_flight: VecDeque::new(),
            link_delay_us: 1000,
            mtu: 1500,
            max_steps: 2_000_000,
            check_packets: true,
            stats: NetStats::default(),
            log: VecDeque::new(),
            log_cap: 100_000,
            log_print_on_panic: 300,
            seeds,
        }
    }

    /// Adds a host on `side` with address `addr` and a default route via the side's gateway: IPv4 in a
    /// /24, IPv6 (inside only: the IPv6 LAN of a NAT64) in a /64 with [`INSIDE6_GW`] as its router.
    pub fn add_host(&mut self, side: Side, addr: impl Into<IpAddr>) {
        let addr = addr.into();
        assert!(self.host_index(side, addr).is_none(), "host {addr} on {side} exists");
        let mut dev = QueueDevice { rx: VecDeque::new(), tx: VecDeque::new(), mtu: self.mtu };
        let mut config = IfaceConfig::new(HardwareAddress::Ip);
        config.random_seed = self.seeds.next_u64();
        let mut iface = Interface::new(config, &mut dev, SmolInstant::from_micros(self.now_us as i64));
        let prefix_len = if addr.is_ipv4() { 24 } else { 64 };
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::from(addr), prefix_len)).expect("one address fits");
        });
        let routes = iface.routes_mut();
        match (addr, side) {
            (IpAddr::V4(_), Side::Inside) => routes.add_default_ipv4_route(INSIDE_GW),
            (IpAddr::V4(_), Side::Outside) => routes.add_default_ipv4_route(PUBLIC_IP),
            (IpAddr::V6(_), Side::Inside) => routes.add_default_ipv6_route(INSIDE6_GW),
            (IpAddr::V6(_), Side::Outside) => panic!("the outside is IPv4 only ({addr})"),
        }
        .expect("route table has room");
        self.hosts.push(Host { side, addr, iface, dev, sockets: SocketSet::new(Vec::new()) });
    }

    fn host_index(&self, side: Side, addr: IpAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.side == side && h.addr == addr)
    }

    fn host_by_addr(&self, addr: IpAddr) -> usize {
        self.hosts.iter().position(|h| h.addr == addr).unwrap_or_else(|| panic!("no host {addr}"))
    }

    pub fn host(&mut self, addr: impl Into<IpAddr>) -> &mut Host {
        let i = self.host_by_addr(addr.into());
        &mut self.hosts[i]
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Runs `app` on the host with address `addr`.
    pub fn add_app<T: App>(&mut self, addr: impl Into<IpAddr>, app: T) -> AppId<T> {
        let host = self.host_by_addr(addr.into());
        self.apps.push((host, Box::new(app)));
        AppId { idx: self.apps.len() - 1, _t: PhantomData }
    }

    pub fn app<T: App>(&self, id: AppId<T>) -> &T {
        self.apps[id.idx].1.as_any().downcast_ref().expect("AppId type matches")
    }

    pub fn app_mut<T: App>(&mut self, id: AppId<T>) -> &mut T {
        self.apps[id.idx].1.as_any_mut().downcast_mut().expect("AppId type matches")
    }

    pub fn ftp_server(&mut self, addr: impl Into<IpAddr>, config: ServerConfig) -> AppId<FtpServer> {
        self.add_app(addr, FtpServer::new(config))
    }

    pub fn ftp_client(&mut self, addr: impl Into<IpAddr>, config: ClientConfig) -> AppId<FtpClient> {
        self.add_app(addr, FtpClient::new(config))
    }

    /// The middlebox, downcast (e.g. `let e: &ftpnat::Engine = net.middlebox();`).
    pub fn middlebox<T: Middlebox>(&self) -> &T {
        self.mb.as_any().downcast_ref().expect("middlebox type matches")
    }

    pub fn middlebox_mut<T: Middlebox>(&mut self) -> &mut T {
        self.mb.as_any_mut().downcast_mut().expect("middlebox type matches")
    }

    pub fn log(&self) -> impl Iterator<Item = &LogEntry> {
        self.log.iter()
    }

    /// The last `n` log entries, one a line.
    pub fn log_tail(&self, n: usize) -> String {
        let skip = self.log.len().saturating_sub(n);
        let mut s = String::new();
        for e in self.log.iter().skip(skip) {
            s.push_str(&format!(
                "{:>10.3}ms {:<3} {:<9} {}\n",
                e.t_us as f64 / 1000.0,
                e.side.name(),
                format!("{:?}", e.event),
                e.summary()
            ));
        }
        s
    }

    fn record(&mut self, side: Side, event: Event, pkt: &[u8]) {
        if self.log_cap == 0 {
            return;
        }
        if self.log.len() >= self.log_cap {
            self.log.pop_front();
        }
        let head = pkt[..pkt.len().min(LOG_HEAD)].to_vec();
        self.log.push_back(LogEntry { t_us: self.now_us, side, event, head });
    }

    /// One step at the current time: deliver due packets, poll every interface, run the apps, poll again,
    /// move what the hosts sent through the faults and the middlebox, fire a due middlebox timer.
    /// Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        self.stats.steps += 1;
        let now = self.now_us;
        let t = SmolInstant::from_micros(now as i64);
        let mut active = false;
        while self.in_flight.front().is_some_and(|f| f.at <= now) {
            let f = self.in_flight.pop_front().expect("front exists");
            self.stats.delivered += 1;
            let side = self.hosts[f.host].side;
            self.record(side, Event::Delivered, &f.pkt);
            self.hosts[f.host].dev.rx.push_back(f.pkt);
            active = true;
        }
        for h in &mut self.hosts {
            h.iface.poll(t, &mut h.dev, &mut h.sockets);
        }
        for (hi, app) in &mut self.apps {
            let h = &mut self.hosts[*hi];
            let mut cx = AppCx { now_us: now, addr: h.addr, iface: &mut h.iface, sockets: &mut h.sockets };
            app.poll(&mut cx);
        }
        for h in &mut self.hosts {
            h.iface.poll(t, &mut h.dev, &mut h.sockets);
        }
        for hi in 0..self.hosts.len() {
            while let Some(p) = self.hosts[hi].dev.tx.pop_front() {
                active = true;
                self.on_host_sent(self.hosts[hi].side, p);
            }
        }
        if self.mb.poll_timeout().is_some_and(|d| d <= now) {
            for (side, p) in self.mb.timeout(now) {
                active = true;
                self.on_emitted(side, p);
            }
        }
        active
    }

    fn on_host_sent(&mut self, from: Side, p: Vec<u8>) {
        self.stats.sent += 1;
        self.record(from, Event::Sent, &p);
        let info = TapInfo { stage: Stage::Pre, toward: from.other(), now_us: self.now_us };
        let before = self.faults.stats;
        let pass = self.faults.apply(info, p.clone());
        if pass.is_empty() && self.faults.stats != before {
            self.record(from, Event::Faulted, &p);
        }
        for q in pass {
            self.pass_middlebox(from, q);
        }
        for q in std::mem::take(&mut self.faults.injected) {
            self.record(from, Event::Sent, &q);
            self.pass_middlebox(from, q);
        }
        for q in std::mem::take(&mut self.faults.bypassed) {
            // Around the middlebox: delivered as it would have translated it, unseen by it.
            if let Some((side, out)) = self.mb.bypass(from, &q) {
                self.record(side, Event::Bypassed, &out);
                self.route(side, out);
            }
        }
    }

    fn pass_middlebox(&mut self, from: Side, p: Vec<u8>) {
        let out = self.mb.packet(self.now_us, from, p.clone());
        if out.is_empty() {
            self.stats.absorbed += 1;
            self.record(from, Event::Absorbed, &p);
        }
        for (side, q) in out {
            self.on_emitted(side, q);
        }
    }

    fn on_emitted(&mut self, side: Side, p: Vec<u8>) {
        self.stats.emitted += 1;
        self.record(side, Event::Emitted, &p);
        if self.check_packets {
            if let Err(e) = pkt::check_packet(&p) {
                panic!(
                    "middlebox emitted a bad packet on {side}: {e}\n{}\n{}",
                    pkt::summary(&p),
                    pkt::hex(&p)
                );
            }
        }
        let info = TapInfo { stage: Stage::Post, toward: side, now_us: self.now_us };
        let before = self.faults.stats;
        let pass = self.faults.apply(info, p.clone());
        if pass.is_empty() && self.faults.stats != before {
            self.record(side, Event::Faulted, &p);
        }
        for q in pass {
            self.route(side, q);
        }
    }

    fn route(&mut self, side: Side, p: Vec<u8>) {
        match pkt::dst_addr(&p).and_then(|a| self.host_index(side, a)) {
            Some(host) => {
                self.in_flight.push_back(InFlight { at: self.now_us + self.link_delay_us, host, pkt: p })
            }
            None => {
                self.stats.unknown_dst += 1;
                self.record(side, Event::Unknown, &p);
            }
        }
    }

    /// Releases packets the reorder fault is holding back; returns whether there were any.
    fn flush_held(&mut self) -> bool {
        let pre = self.faults.take_held(Stage::Pre);
        let post = self.faults.take_held(Stage::Post);
        let any = !pre.is_empty() || !post.is_empty();
        for (toward, p) in pre {
            self.pass_middlebox(toward.other(), p);
        }
        for (toward, p) in post {
            self.route(toward, p);
        }
        any
    }

    fn wants_now(&self) -> bool {
        self.in_flight.front().is_some_and(|f| f.at <= self.now_us)
            || self.apps.iter().any(|(_, a)| a.poll_at().is_some_and(|t| t <= self.now_us))
    }

    /// The earliest pending deadline of anything: in-flight packets, smoltcp timers, apps, the middlebox.
    fn next_event(&mut self) -> Option<u64> {
        let now = SmolInstant::from_micros(self.now_us as i64);
        let mut next = self.in_flight.front().map(|f| f.at);
        let mut take = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for h in &mut self.hosts {
            take(h.iface.poll_at(now, &h.sockets).map(|i| i.total_micros().max(0) as u64));
        }
        for (_, a) in &self.apps {
            take(a.poll_at());
        }
        take(self.mb.poll_timeout());
        next
    }

    /// Steps until `cond` holds, advancing virtual time to the next deadline whenever the network is idle,
    /// for at most `max_us` of virtual time and [`Net::max_steps`] steps.
    pub fn run_until<F: FnMut(&Net) -> bool>(&mut self, mut cond: F, max_us: u64) -> RunOutcome {
        let deadline = self.now_us.saturating_add(max_us);
        loop {
            if cond(self) {
                return RunOutcome::Done;
            }
            if self.stats.steps >= self.max_steps {
                return RunOutcome::StepLimit;
            }
            if self.step() || self.wants_now() {
                continue;
            }
            if self.flush_held() {
                continue;
            }
            if cond(self) {
                return RunOutcome::Done;
            }
            let Some(next) = self.next_event() else {
                return RunOutcome::Stalled;
            };
            // A deadline that is already due but produced nothing must not spin at the same instant.
            let next = next.max(self.now_us + 1);
            if next > deadline {
                self.now_us = deadline;
                return RunOutcome::TimedOut;
            }
            self.now_us = next;
        }
    }

    /// [`Net::run_until`], panicking unless the condition became true.
    pub fn run<F: FnMut(&Net) -> bool>(&mut self, cond: F, max_us: u64) {
        let outcome = self.run_until(cond, max_us);
        assert_eq!(outcome, RunOutcome::Done, "at t={}us after {} steps", self.now_us, self.stats.steps);
    }

    /// Advances virtual time by `us`, stepping through everything that happens meanwhile.
    pub fn advance(&mut self, us: u64) {
        let end = self.now_us.saturating_add(us);
        let outcome = self.run_until(|n| n.now_us >= end, us);
        if matches!(outcome, RunOutcome::Stalled | RunOutcome::TimedOut) {
            self.now_us = end;
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log_print_on_panic > 0 {
            eprintln!(
                "--- packet log (last {} of {} kept; {:?}; {:?}) ---\n{}",
                self.log_print_on_panic.min(self.log.len()),
                self.log.len(),
                self.stats,
                self.faults.stats,
                self.log_tail(self.log_print_on_panic)
            );
        }
    }
}
