//! Linux TUN devices (layer 3, no packet-info header) as a [`Device`].
//!
//! Owns: opening a TUN device by name, either plain through the `tun-tap` crate (one packet per
//! `read`/`write`) or with segmentation offload through [`super::offload`] (the default; falls back to
//! plain with a warning when the kernel refuses it), or as several queues of a multi-queue device
//! (`IFF_MULTI_QUEUE`, one per worker: [`TunDevice::open_queues`], through `tun-rs`), telling a device ftpnat creates from a
//! persistent one an operator made beforehand (`ip tuntap add dev NAME mode tun`), the few interface
//! ioctls that policy needs, and error messages that name the flag and the device. Must not: assign
//! addresses or routes, or touch any interface other than the one it opened.
//!
//! Policy, so operators know what ftpnat does to their interfaces:
//! - A device ftpnat **creates** lives exactly as long as the process (the kernel removes a
//!   non-persistent TUN device when its last descriptor closes). ftpnat sets its MTU to the configured
//!   `--lan-mtu`/`--wan-mtu` and brings it up, so routes can point at it at once. Addresses and routes
//!   are the operator's (or `netns-scripts/up.sh`'s) business. Such a device may be moved to another
//!   network namespace (`ip link set NAME netns NS`) while ftpnat keeps reading and writing it: the
//!   descriptor stays attached to the device, not to the namespace.
//! - A **persistent** device that already exists is attached to as it is: ftpnat changes nothing on it,
//!   not even its up/down state or MTU, because the operator may already have addressed and routed it.
//!   It only warns when the device is down or its MTU differs from the configured one.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tun_rs::{DeviceBuilder, SyncDevice};
use tun_tap::{Iface, Mode};

use super::device::{Device, RxBatch, Sent, TxBatch};
use super::offload::{self, OffloadIo};

/// Linux `IFNAMSIZ` less the terminating NUL.
const MAX_NAME: usize = 15;

/// Whether the device existed before ftpnat opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// ftpnat created it; it goes away when ftpnat exits.
    Created,
    /// It existed (persistent, `ip tuntap add`); ftpnat attached to it and left its settings alone.
    Attached,
}

/// A TUN device in non-blocking mode.
#[derive(Debug)]
pub struct TunDevice {
    io: Io,
    name: String,
    origin: Origin,
}

/// How packets cross the descriptor.
enum Io {
    /// One IPv4 datagram per `read`/`write`.
    Plain(Iface),
    /// virtio-net header, GSO split on read, GRO on write.
    Offload(Box<OffloadIo>),
    /// One queue of a multi-queue device, plain: one datagram per `read`/`write`.
    Queue(SyncDevice),
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Io::Plain(i) => f.debug_tuple("Plain").field(i).finish(),
            Io::Offload(o) => f.debug_tuple("Offload").field(o).finish(),
            Io::Queue(q) => f.debug_tuple("Queue").field(&q.as_raw_fd()).finish(),
        }
    }
}

/// Whether to ask the kernel for segmentation offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Offload if the kernel supports it (`IFF_VNET_HDR` + `TUNSETOFFLOAD`), plain otherwise.
    Auto,
    /// Plain reads and writes (`--no-offload`).
    Off,
}

/// Why a TUN device could not be opened. `Display` gives the whole operator-facing sentence.
#[derive(Debug)]
pub struct OpenError {
    /// The command-line flag that named the device (`--lan-tun`).
    pub flag: &'static str,
    pub name: String,
    pub what: String,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.flag, self.name, self.what)
    }
}

impl std::error::Error for OpenError {}

/// Checks a device name the way the kernel will use it: 1 to 15 bytes, no `/`, whitespace or `%`
/// (a `%d` pattern would let the kernel pick a name we then could not route to).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the device name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("'{name}' is longer than the kernel's limit of {MAX_NAME} bytes"));
    }
    if name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == '%' || c == ':' || c.is_whitespace())
    {
        return Err(format!("'{name}' is not a valid interface name (no '/', ':', '%' or spaces)"));
    }
    Ok(())
}

/// Explains an errno from opening or attaching a TUN device in operator terms (`multi`: as several
/// queues).
fn explain_queues(e: &io::Error, existed: bool, multi: bool) -> String {
    if multi && existed && e.raw_os_error() == Some(libc::EINVAL) {
        return format!(
            "cannot open TUN device: {e} (an interface of this name exists but is not a multi-queue TUN \
             device: created without `multi_queue`, TAP, or not tun at all)"
        );
    }
    explain(e, existed)
}

/// Explains an errno from opening or attaching a TUN device in operator terms.
fn explain(e: &io::Error, existed: bool) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN, or the device's owner/group)",
        // open(2) of the clone device itself was refused: its file mode, not a capability.
        Some(libc::EACCES) => {
            " (/dev/net/tun must be readable and writable by this user: udev makes it mode 0666; \
             or run as the persistent device's owner/group)"
        }
        Some(libc::EBUSY) => " (another process holds this single-queue device: is another ftpnat running?)",
        Some(libc::EINVAL) if existed => {
            " (an interface of this name exists but is not a single-queue TUN device: TAP, multi-queue or \
             not tun at all)"
        }
        Some(libc::ENOENT) | Some(libc::ENODEV) => " (/dev/net/tun missing: load the tun module)",
        _ => "",
    };
    format!("cannot open TUN device: {e}{hint}")
}

impl TunDevice {
    /// Opens (creating if needed) the TUN device `name`. `flag` is the command-line flag that named it,
    /// used in errors. `mtu` is applied only to a device ftpnat creates.
    pub fn open(flag: &'static str, name: &str, mtu: u16, offload: Offload) -> Result<TunDevice, OpenError> {
        let err = |what: String| OpenError { flag, name: name.to_string(), what };
        check_name(name).map_err(&err)?;
        let existed = ifindex(name).is_some();
        let io = match offload {
            Offload::Auto => {
                // A split packet is at most the device's MTU; the larger of the configured and the
                // current MTU covers a device created now and one attached as it is.
                match OffloadIo::open(name, slot_size(name, mtu, existed)) {
                    Ok(o) => Some(Io::Offload(Box::new(o))),
                    // Refusals that a plain open would meet too are reported as such.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EPERM | libc::EACCES | libc::EBUSY | libc::ENOENT | libc::ENODEV)
                        ) =>
                    {
                        return Err(err(explain(&e, existed)))
                    }
                    Err(e) => {
                        tracing::warn!(device = name, flag, error = %e, "segmentation offload unavailable; plain TUN I/O");
                        None
                    }
                }
            }
            Offload::Off => None,
        };
        let io = match io {
            Some(io) => io,
            None => {
                let iface =
                    Iface::without_packet_info(name, Mode::Tun).map_err(|e| err(explain(&e, existed)))?;
                if iface.name() != name {
                    return Err(err(format!("the kernel named the device '{}' instead", iface.name())));
                }
                set_nonblocking(iface.as_raw_fd())
                    .map_err(|e| err(format!("cannot set non-blocking mode: {e}")))?;
                Io::Plain(iface)
            }
        };
        let origin = if existed { Origin::Attached } else { Origin::Created };
        let offloaded = matches!(io, Io::Offload(_));
        let dev = TunDevice { io, name: name.to_string(), origin };
        tracing::info!(device = name, flag, offload = offloaded, "TUN I/O");
        settle(flag, name, mtu, origin).map_err(err)?;
        Ok(dev)
    }

    /// Opens (creating if needed) `queues` queues of the multi-queue TUN device `name`
    /// (`IFF_MULTI_QUEUE`), each with segmentation offload unless `offload` is off or the kernel
    /// refuses it (then all plain). Queue `i` of the result is the device's queue `i`: the kernel
    /// numbers queues in the order they attach, which is what a steering program's return value
    /// names. An existing device must be multi-queue itself (a single-queue one refuses with EINVAL,
    /// which the caller answers by running one worker).
    pub fn open_queues(
        flag: &'static str,
        name: &str,
        mtu: u16,
        offload: Offload,
        queues: u16,
    ) -> Result<Vec<TunDevice>, OpenError> {
        let err = |what: String| OpenError { flag, name: name.to_string(), what };
        check_name(name).map_err(&err)?;
        let existed = ifindex(name).is_some();
        let explain = |e: &io::Error| explain_queues(e, existed, true);
        let slot = slot_size(name, mtu, existed);
        let build = |offload: bool| {
            DeviceBuilder::default().name(name).multi_queue(true).offload(offload).build_sync()
        };
        let first = match offload {
            Offload::Auto => match build(true) {
                Ok(d) if d.tcp_gso() => Some(d),
                Ok(_) => None,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM | libc::EACCES | libc::EBUSY | libc::EINVAL)
                    ) =>
                {
                    return Err(err(explain(&e)))
                }
                Err(e) => {
                    tracing::warn!(device = name, flag, error = %e, "segmentation offload unavailable; plain TUN I/O");
                    None
                }
            },
            Offload::Off => None,
        };
        let first = match first {
            Some(d) => d,
            None => build(false).map_err(|e| err(explain(&e)))?,
        };
        let mut devs = Vec::with_capacity(usize::from(queues));
        for i in 0..queues {
            let d = if i == 0 {
                None
            } else {
                Some(first.try_clone().map_err(|e| err(format!("cannot open queue {i}: {e}")))?)
            };
            devs.push(d);
        }
        let offloaded = first.tcp_gso();
        devs[0] = Some(first);
        let mut out = Vec::with_capacity(devs.len());
        for d in devs.into_iter().flatten() {
            d.set_nonblocking(true).map_err(|e| err(format!("cannot set non-blocking mode: {e}")))?;
            let io = if offloaded {
                Io::Offload(Box::new(OffloadIo::from_device(d, slot).map_err(|e| err(explain(&e)))?))
            } else {
                Io::Queue(d)
            };
            out.push(TunDevice { io, name: name.to_string(), origin: Origin::Created });
        }
        let origin = if existed { Origin::Attached } else { Origin::Created };
        for d in &mut out {
            d.origin = origin;
        }
        tracing::info!(device = name, flag, offload = offloaded, queues, "TUN I/O, multi-queue");
        settle(flag, name, mtu, origin).map_err(err)?;
        Ok(out)
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether segmentation offload is on for this device.
    pub fn offloaded(&self) -> bool {
        matches!(self.io, Io::Offload(_))
    }
}

/// The largest packet a split can yield on `name`: the larger of the configured and (for a device that
/// exists) the current MTU, at least 1500.
fn slot_size(name: &str, mtu: u16, existed: bool) -> usize {
    let dev_mtu = if existed { get_mtu(name).ok().and_then(|m| usize::try_from(m).ok()) } else { None };
    usize::from(mtu).max(dev_mtu.unwrap_or(0)).max(1500)
}

/// What ftpnat does to a device after opening it: a device it created gets the configured MTU and is
/// brought up; an attached one is left as it is, with warnings for what differs (see the header).
fn settle(flag: &'static str, name: &str, mtu: u16, origin: Origin) -> Result<(), String> {
    match origin {
        Origin::Created => {
            set_mtu(name, mtu).map_err(|e| format!("cannot set MTU {mtu}: {e}"))?;
            set_up(name).map_err(|e| format!("cannot bring the device up: {e}"))?;
            tracing::info!(device = name, flag, mtu, "created TUN device");
        }
        Origin::Attached => {
            let up = flags(name).map(|f| f & libc::IFF_UP != 0).unwrap_or(true);
            let dev_mtu = get_mtu(name).ok();
            tracing::info!(device = name, flag, up, mtu = dev_mtu, "attached to existing TUN device");
            if !up {
                tracing::warn!(device = name, flag, "device is down; ftpnat leaves that to the operator");
            }
            if let Some(m) = dev_mtu.filter(|&m| m != i32::from(mtu)) {
                tracing::warn!(
                    device = name,
                    flag,
                    device_mtu = m,
                    configured_mtu = mtu,
                    "device MTU differs from the configured MTU; ftpnat does not change it"
                );
            }
        }
    }
    Ok(())
}

impl Device for TunDevice {
    fn name(&self) -> &str {
        &self.name
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Plain(i) => i.recv(buf),
            Io::Queue(q) => q.recv(buf),
            // Single-packet reads are for tests and tools; the run loop uses `recv_batch`.
            Io::Offload(o) => {
                let mut rx = RxBatch::default();
                let mut n = o.recv_batch(&mut rx)?;
                if rx.aggregate().is_some() {
                    n = o.split(&mut rx);
                }
                match n {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    _ => {
                        let p = rx.packet_mut(0);
                        let n = p.len().min(buf.len());
                        buf[..n].copy_from_slice(&p[..n]);
                        Ok(n)
                    }
                }
            }
        }
    }
    fn send(&mut self, pkt: &[u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Plain(i) => i.send(pkt),
            Io::Queue(q) => q.send(pkt),
            Io::Offload(o) => {
                let mut tx = TxBatch::new(offload::HEADROOM, 0);
                tx.push(pkt);
                match o.send_batch(&mut tx) {
                    Sent { error: Some(e), .. } => Err(io::Error::other(e)),
                    _ => Ok(pkt.len()),
                }
            }
        }
    }
    fn raw_fd(&self) -> RawFd {
        match &self.io {
            Io::Plain(i) => i.as_raw_fd(),
            Io::Queue(q) => q.as_raw_fd(),
            Io::Offload(o) => o.raw_fd(),
        }
    }
    /// Reads straight into the vector's spare capacity: zero-filling a 64 KiB buffer for every packet
    /// would cost more than the NAT itself.
    fn recv_vec(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        if let Io::Offload(_) = self.io {
            buf.resize(max, 0);
            let n = self.recv(buf)?;
            buf.truncate(n);
            return Ok(n);
        }
        buf.clear();
        buf.reserve(max);
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(max);
        // SAFETY: the pointer and length describe writable memory owned by `buf`; read(2) writes at
        // most `len` bytes there.
        let n = unsafe { libc::read(self.raw_fd(), spare.as_mut_ptr().cast(), len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: read(2) initialised the first `n <= len <= capacity` bytes.
        unsafe { buf.set_len(n) };
        Ok(n)
    }
    fn recv_batch(&mut self, rx: &mut RxBatch) -> io::Result<usize> {
        match &mut self.io {
            Io::Offload(o) => o.recv_batch(rx),
            Io::Plain(_) | Io::Queue(_) => {
                rx.set_len(0);
                let n = self.recv_vec(rx.slot(0), super::device::RECV_SIZE)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                rx.set_len(1);
                Ok(1)
            }
        }
    }
    fn tx_headroom(&self) -> usize {
        match self.io {
            Io::Plain(_) | Io::Queue(_) => 0,
            Io::Offload(_) => offload::HEADROOM,
        }
    }
    fn tx_capacity(&self) -> usize {
        match self.io {
            Io::Plain(_) | Io::Queue(_) => 0,
            Io::Offload(_) => offload::TX_CAPACITY,
        }
    }
    fn send_batch(&mut self, tx: &mut TxBatch) -> Sent {
        match &mut self.io {
            Io::Offload(o) => o.send_batch(tx),
            Io::Plain(i) => tx.send_each(|p| i.send(p)),
            Io::Queue(q) => tx.send_each(|p| q.send(p)),
        }
    }
    fn rx_errors(&self) -> u64 {
        match &self.io {
            Io::Plain(_) | Io::Queue(_) => 0,
            Io::Offload(o) => o.rx_errors(),
        }
    }
    fn split_aggregate(&mut self, rx: &mut RxBatch) -> usize {
        match &mut self.io {
            Io::Plain(_) | Io::Queue(_) => rx.len(),
            Io::Offload(o) => o.split(rx),
        }
    }
    fn tx_aggregates(&self) -> bool {
        matches!(self.io, Io::Offload(_))
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The interface index of `name` in this network namespace, if such an interface exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Runs one `SIOC*IF*` ioctl for `name` on a throwaway socket.
fn ifreq_ioctl(
    name: &str,
    req: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
) -> io::Result<libc::ifreq> {
    // SAFETY: an all-zero ifreq is a valid value (plain integers, arrays and a union of such).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME)) {
        *d = s as libc::c_char;
    }
    fill(&mut ifr);
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifr` is a valid ifreq for this request and outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ifr)
}

fn flags(name: &str) -> io::Result<libc::c_int> {
    let r = ifreq_ioctl(name, libc::SIOCGIFFLAGS, |_| {})?;
    // SAFETY: SIOCGIFFLAGS fills the `ifru_flags` member.
    Ok(libc::c_int::from(unsafe { r.ifr_ifru.ifru_flags }))
}

fn set_up(name: &str) -> io::Result<()> {
    let f = flags(name)?;
    let f = (f | libc::IFF_UP) as libc::c_short;
    ifreq_ioctl(name, libc::SIOCSIFFLAGS, |r| r.ifr_ifru.ifru_flags = f).map(drop)
}

fn get_mtu(name: &str) -> io::Result<i32> {
    let r = ifreq_ioctl(name, libc::SIOCGIFMTU, |_| {})?;
    // SAFETY: SIOCGIFMTU fills the `ifru_mtu` member.
    Ok(unsafe { r.ifr_ifru.ifru_mtu })
}

fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    ifreq_ioctl(name, libc::SIOCSIFMTU, |r| r.ifr_ifru.ifru_mtu = i32::from(mtu)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_the_kernel_sees_them() {
        assert!(check_name("ftpnat-lan").is_ok());
        assert!(check_name("abcdefghijklmno").is_ok());
        assert!(check_name("abcdefghijklmnop").unwrap_err().contains("15"));
        for bad in ["", "a/b", "tun%d", "a b", "eth0:1", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn open_errors_name_the_flag_and_device() {
        let e = TunDevice::open("--lan-tun", "tun%d", 1500, Offload::Auto).unwrap_err();
        assert!(e.to_string().starts_with("--lan-tun tun%d: "), "{e}");
        let perm = explain(&io::Error::from_raw_os_error(libc::EPERM), false);
        assert!(perm.contains("Operation not permitted") && perm.contains("CAP_NET_ADMIN"), "{perm}");
        assert!(explain(&io::Error::from_raw_os_error(libc::EBUSY), true).contains("another"));
        let acc = explain(&io::Error::from_raw_os_error(libc::EACCES), true);
        assert!(acc.contains("Permission denied") && acc.contains("0666"), "{acc}");
    }

    #[test]
    fn loopback_has_an_index_and_nonsense_has_none() {
        assert!(ifindex("lo").is_some());
        assert_eq!(ifindex("no-such-if-x"), None);
        assert_eq!(ifindex("nul\0byte"), None);
    }
}
