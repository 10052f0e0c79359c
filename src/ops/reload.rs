//! SIGHUP: re-reading the configuration and saying, in the log, what changed and what needs a restart.
//!
//! Owns: the self-pipe the operations thread polls for SIGHUP, calling the loader there (main.rs: the
//! `--config` file under the original flags, read by [`super::config_file::load`]: a regular file of
//! bounded size, so nothing about the file can hold up packets), and, on the run loop, applying the
//! result ([`apply`]): the comparison of the running and the new [`Config`] field by field (named by
//! their flags) and the lines the operations thread logs. Must not: change the engine other than
//! through [`Engine::reconfigure`], which decides what can change under live flows.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::config::Config;
use crate::engine::Engine;

/// What a reload produces: the new engine configuration, and lines about settings outside the engine
/// that changed but need a restart (devices, sockets, capture).
pub type Reloaded = (Config, Vec<String>);

/// Re-reads the configuration (file and the original flags) on SIGHUP.
pub type Loader = Box<dyn FnMut() -> Result<Reloaded, String> + Send>;

/// SIGHUP: a self-pipe the loop polls, and the loader to call when it fires.
pub struct Reload {
    rx: UnixStream,
    load: Loader,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload").finish_non_exhaustive()
    }
}

impl Reload {
    /// Installs the SIGHUP handler (it only writes a byte to a socket: async-signal-safe).
    pub fn on_sighup(load: Loader) -> io::Result<Reload> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(libc::SIGHUP, tx)?;
        Ok(Reload { rx, load })
    }

    /// A reload triggered by hand (tests): write a byte to the returned stream.
    pub fn manual(load: Loader) -> io::Result<(Reload, UnixStream)> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        Ok((Reload { rx, load }, tx))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Takes the SIGHUP and runs the loader (on the operations thread). `None` after logging why when
    /// the configuration cannot be used; the running one is then unchanged.
    pub fn load(&mut self) -> Option<Reloaded> {
        let mut sink = [0u8; 64];
        while matches!((&self.rx).read(&mut sink), Ok(n) if n > 0) {}
        match (self.load)() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(target: "ftpnat::ops", error = %e, "reload failed; the running configuration is unchanged");
                None
            }
        }
    }
}

/// Applies a reloaded configuration to the engine (on the run loop: a comparison and
/// [`Engine::reconfigure`], no I/O). Returns the changes applied and those that were not (they need a
/// restart, or a forward's port is taken), one line each, for the log.
pub fn apply(engine: &mut Engine, (config, restart): &Reloaded) -> (Vec<String>, Vec<String>) {
    let (mut applied, mut not_applied) = describe(engine.config(), config);
    let before = engine.config().forwards.clone();
    not_applied.extend(engine.reconfigure(config));
    let after = &engine.config().forwards;
    for f in before.iter().filter(|f| !after.contains(f)) {
        applied.push(format!("--forward {f} removed (its live flows stay)"));
    }
    for f in after.iter().filter(|f| !before.contains(f)) {
        applied.push(format!("--forward {f} added"));
    }
    not_applied.extend(restart.iter().cloned());
    (applied, not_applied)
}

fn d(x: core::time::Duration) -> String {
    format!("{x:?}")
}

/// The differences between the running and the new configuration, named by flag, apart from the
/// forwards: (what [`Engine::reconfigure`] applies, what needs a restart).
pub fn describe(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let (t0, t1, f0, f1) = (&old.timeouts, &new.timeouts, &old.ftp, &new.ftp);
    let onoff = |b: bool| (if b { "on" } else { "off" }).to_string();
    let low = |refuse: bool| (if refuse { "refused" } else { "allowed" }).to_string();
    let applied: Vec<(bool, &str, String, String)> = vec![
        (
            t0.tcp_established != t1.tcp_established,
            "--tcp-established-timeout",
            d(t0.tcp_established),
            d(t1.tcp_established),
        ),
        (
            t0.tcp_transitory != t1.tcp_transitory,
            "--tcp-transitory-timeout",
            d(t0.tcp_transitory),
            d(t1.tcp_transitory),
        ),
        (t0.tcp_closed != t1.tcp_closed, "closed-TCP timeout", d(t0.tcp_closed), d(t1.tcp_closed)),
        (t0.udp != t1.udp, "--udp-timeout", d(t0.udp), d(t1.udp)),
        (t0.icmp != t1.icmp, "--icmp-timeout", d(t0.icmp), d(t1.icmp)),
        (
            t0.tcp_unreplied != t1.tcp_unreplied,
            "--tcp-unreplied-timeout",
            d(t0.tcp_unreplied),
            d(t1.tcp_unreplied),
        ),
        (
            t0.udp_unreplied != t1.udp_unreplied,
            "--udp-unreplied-timeout",
            d(t0.udp_unreplied),
            d(t1.udp_unreplied),
        ),
        (f0.enabled != f1.enabled, "FTP ALG (--no-ftp-alg)", onoff(f0.enabled), onoff(f1.enabled)),
        (f0.ports != f1.ports, "--ftp-port", format!("{:?}", f0.ports), format!("{:?}", f1.ports)),
        (
            f0.pinhole_timeout != f1.pinhole_timeout,
            "--ftp-pinhole-timeout",
            d(f0.pinhole_timeout),
            d(f1.pinhole_timeout),
        ),
        (
            f0.max_pinholes_per_conn != f1.max_pinholes_per_conn,
            "--ftp-max-pinholes",
            f0.max_pinholes_per_conn.to_string(),
            f1.max_pinholes_per_conn.to_string(),
        ),
        (
            f0.refuse_low_ports != f1.refuse_low_ports,
            "low ports (--ftp-allow-low-ports)",
            low(f0.refuse_low_ports),
            low(f1.refuse_low_ports),
        ),
        (
            f0.max_pinholes_per_host != f1.max_pinholes_per_host,
            "pinholes per host",
            f0.max_pinholes_per_host.to_string(),
            f1.max_pinholes_per_host.to_string(),
        ),
        (f0.hold_timeout != f1.hold_timeout, "ALG hold timeout", d(f0.hold_timeout), d(f1.hold_timeout)),
        (f0.max_line != f1.max_line, "ALG maximum line", f0.max_line.to_string(), f1.max_line.to_string()),
        (old.max_flows != new.max_flows, "--max-flows", old.max_flows.to_string(), new.max_flows.to_string()),
        (
            old.max_flows_per_host != new.max_flows_per_host,
            "--max-flows-per-host",
            old.max_flows_per_host.to_string(),
            new.max_flows_per_host.to_string(),
        ),
        (
            old.max_ports_per_host != new.max_ports_per_host,
            "--max-ports-per-host",
            old.max_ports_per_host.to_string(),
            new.max_ports_per_host.to_string(),
        ),
    ];
    let nets = |v: &[ipnet::Ipv4Net]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let range = |r: &std::ops::RangeInclusive<u16>| format!("{}-{}", r.start(), r.end());
    let restart: Vec<(bool, &str, String)> = vec![
        (new.inside != old.inside, "--inside", nets(&old.inside)),
        (new.public_ip != old.public_ip, "--public-ip", old.public_ip.to_string()),
        (new.lan_ip != old.lan_ip, "--lan-ip", old.lan_ip.to_string()),
        (new.port_range != old.port_range, "--port-range", range(&old.port_range)),
        (new.mtu[0] != old.mtu[0], "--lan-mtu", old.mtu[0].to_string()),
        (new.mtu[1] != old.mtu[1], "--wan-mtu", old.mtu[1].to_string()),
        (new.translate != old.translate, "--forward-only", (!old.translate).to_string()),
        (
            new.pool != old.pool,
            "--public-ip/--public-pool/--port-block-*/--deterministic/--nat-log-sessions",
            format!("{} address(es), {} allocation", old.pool.addresses.len(), old.pool.allocation.name()),
        ),
    ];
    (
        applied.into_iter().filter(|c| c.0).map(|(_, what, a, b)| format!("{what}: {a} -> {b}")).collect(),
        restart
            .into_iter()
            .filter(|c| c.0)
            .map(|(_, what, keeps)| format!("{what}: needs a restart (keeps {keeps})"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn differences_are_named_by_flag() {
        let old = Config::new(vec!["10.0.0.0/24".parse().unwrap()], "198.51.100.1".parse().unwrap());
        assert_eq!(describe(&old, &old), (vec![], vec![]));
        let mut new = old.clone();
        new.timeouts.udp = Duration::from_secs(600);
        new.ftp.ports = vec![21, 2121];
        new.port_range = 20000..=29999;
        new.public_ip = "198.51.100.9".parse().unwrap();
        let (applied, restart) = describe(&old, &new);
        assert_eq!(applied, ["--udp-timeout: 300s -> 600s", "--ftp-port: [21] -> [21, 2121]"]);
        assert_eq!(
            restart,
            [
                "--public-ip: needs a restart (keeps 198.51.100.1)",
                "--port-range: needs a restart (keeps 1024-65535)"
            ]
        );
    }

    #[test]
    fn the_engine_keeps_what_needs_a_restart() {
        let old = Config::new(vec!["10.0.0.0/24".parse().unwrap()], "198.51.100.1".parse().unwrap());
        let mut e = Engine::new(old.clone());
        let mut new = old.clone();
        new.public_ip = "198.51.100.9".parse().unwrap();
        new.timeouts.udp = Duration::from_secs(600);
        new.forwards.push("tcp:2121=10.0.0.2:21".parse().unwrap());
        assert!(e.reconfigure(&new).is_empty());
        assert_eq!(e.config().public_ip, old.public_ip);
        assert_eq!(e.config().timeouts.udp, Duration::from_secs(600));
        assert_eq!(e.config().forwards, new.forwards);
        assert!(
            !e.nat().public_free(
                crate::flow::Proto::Tcp,
                crate::nat::PublicEndpoint::new(e.config().public_ip, 2121)
            ),
            "the forward's port is reserved"
        );
        new.forwards.clear();
        e.reconfigure(&new);
        assert!(
            e.nat().public_free(
                crate::flow::Proto::Tcp,
                crate::nat::PublicEndpoint::new(e.config().public_ip, 2121)
            ),
            "and released"
        );
    }
}
