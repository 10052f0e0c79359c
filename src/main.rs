//! The `ftpnat` command line: flags to a validated [`Config`], the tracing subscriber, exit codes.
//!
//! Owns: subcommands and their flags, turning them into a [`Config`], log setup (`RUST_LOG`, default
//! `ftpnat=info`, to stderr; `--log-format json` for JSON lines), printing the stop summary to stdout.
//! Must not: look at packets or touch devices beyond handing names to [`ftpnat::io`].
//!
//! Exit codes: 0 after SIGINT/SIGTERM, 1 when a device cannot be opened or fails while running, 2 for
//! bad command-line input (clap's own errors exit 2 as well).

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::Ipv4Net;

use ftpnat::config::{parse_duration, parse_port_range, Config, Forward};
use ftpnat::engine::Engine;
use ftpnat::io::runtime::{Runtime, Stop};
use ftpnat::io::tun::{self, TunDevice};
use ftpnat::Side;

#[derive(Parser, Debug)]
#[command(name = "ftpnat", version, about = "Userspace IPv4 NAT gateway on two TUN devices, with an FTP ALG")]
struct Cli {
    /// Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Route and translate between a LAN and a WAN TUN device until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Replay a pcap/pcapng capture through the engine (stable interface, see README).
    Replay(ftpnat::replay::cli::ReplayArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// TUN device facing the inside hosts; created if absent, else attached to as it is.
    #[arg(long, value_name = "NAME")]
    lan_tun: String,
    /// TUN device facing the outside; created if absent, else attached to as it is.
    #[arg(long, value_name = "NAME")]
    wan_tun: String,
    /// Inside prefix whose sources are translated (repeatable).
    #[arg(long, value_name = "CIDR", required = true, value_parser = parse_cidr)]
    inside: Vec<Ipv4Net>,
    /// The gateway's public address: translated sources, destination of inbound traffic.
    #[arg(long, value_name = "IP")]
    public_ip: Ipv4Addr,
    /// Static port forward PROTO:PUBLICPORT=INSIDEIP:PORT, e.g. tcp:2121=10.0.0.2:21 (repeatable).
    #[arg(long, value_name = "SPEC", value_parser = |s: &str| s.parse::<Forward>())]
    forward: Vec<Forward>,
    /// The gateway's own LAN address, source of ICMP errors sent inside [default: first host of the
    /// first --inside prefix].
    #[arg(long, value_name = "IP")]
    lan_ip: Option<Ipv4Addr>,
    /// Outside ports for new mappings when the inside port is taken [default: 1024-65535].
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    port_range: Option<RangeInclusive<u16>>,
    /// Connection table bound; new flows beyond it are refused and counted [default: 262144].
    #[arg(long, value_name = "N")]
    max_flows: Option<usize>,
    /// Flows one inside host may hold [default: 65536].
    #[arg(long, value_name = "N")]
    max_flows_per_host: Option<usize>,
    /// Egress MTU towards the LAN (also set on a LAN device ftpnat creates) [default: 1500].
    #[arg(long, value_name = "N")]
    lan_mtu: Option<u16>,
    /// Egress MTU towards the WAN (also set on a WAN device ftpnat creates) [default: 1500].
    #[arg(long, value_name = "N")]
    wan_mtu: Option<u16>,
    /// Server port of FTP control connections (repeatable; replaces the default 21).
    #[arg(long, value_name = "N")]
    ftp_port: Vec<u16>,
    /// Turn the FTP ALG off: FTP control traffic is translated like any TCP.
    #[arg(long)]
    no_ftp_alg: bool,
    /// How long an FTP data-connection pinhole waits for its connection [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    ftp_pinhole_timeout: Option<Duration>,
    /// Outstanding pinholes per FTP control connection [default: 8].
    #[arg(long, value_name = "N")]
    ftp_max_pinholes: Option<usize>,
    /// Accept PORT/EPRT naming a port below 1024 (refused by default, RFC 2577 section 3).
    #[arg(long)]
    ftp_allow_low_ports: bool,
    /// Idle timeout of an established TCP connection [default: 7440s = 2 h 4 min, RFC 5382 REQ-5]. Every
    /// DUR is seconds or a number with a unit: 90, 1.5, 500ms, 2m, 1h.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    tcp_established_timeout: Option<Duration>,
    /// Idle timeout of an opening or closing TCP connection [default: 4m, RFC 5382 REQ-5].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    tcp_transitory_timeout: Option<Duration>,
    /// Idle timeout of a UDP mapping [default: 5m; RFC 4787 REQ-5 asks at least 2m].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    udp_timeout: Option<Duration>,
    /// Idle timeout of an ICMP echo mapping [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    icmp_timeout: Option<Duration>,
    /// Route without translating (benchmark ceiling): addresses and ports are left alone.
    #[arg(long)]
    forward_only: bool,
}

fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    s.parse::<Ipv4Net>()
        .map(|n| n.trunc())
        .map_err(|_| format!("'{s}' is not an IPv4 prefix (e.g. 10.0.0.0/24)"))
}

impl RunArgs {
    /// The validated configuration; the error names the flag at fault.
    fn config(&self) -> Result<Config, String> {
        tun::check_name(&self.lan_tun).map_err(|e| format!("--lan-tun: {e}"))?;
        tun::check_name(&self.wan_tun).map_err(|e| format!("--wan-tun: {e}"))?;
        if self.lan_tun == self.wan_tun {
            return Err(format!("--wan-tun: '{}' is also the --lan-tun device", self.wan_tun));
        }
        let mut c = Config::new(self.inside.clone(), self.public_ip);
        c.forwards = self.forward.clone();
        if let Some(ip) = self.lan_ip {
            c.lan_ip = ip;
        }
        if let Some(r) = &self.port_range {
            c.port_range = r.clone();
        }
        if let Some(n) = self.max_flows {
            c.max_flows = n;
        }
        if let Some(n) = self.max_flows_per_host {
            c.max_flows_per_host = n;
        }
        if let Some(m) = self.lan_mtu {
            c.mtu[Side::Inside.index()] = m;
        }
        if let Some(m) = self.wan_mtu {
            c.mtu[Side::Outside.index()] = m;
        }
        if !self.ftp_port.is_empty() {
            c.ftp.ports = self.ftp_port.clone();
        }
        c.ftp.enabled = !self.no_ftp_alg;
        if let Some(d) = self.ftp_pinhole_timeout {
            c.ftp.pinhole_timeout = d;
        }
        if let Some(n) = self.ftp_max_pinholes {
            c.ftp.max_pinholes_per_conn = n;
        }
        c.ftp.refuse_low_ports = !self.ftp_allow_low_ports;
        let t = &mut c.timeouts;
        for (arg, slot) in [
            (self.tcp_established_timeout, &mut t.tcp_established),
            (self.tcp_transitory_timeout, &mut t.tcp_transitory),
            (self.udp_timeout, &mut t.udp),
            (self.icmp_timeout, &mut t.icmp),
        ] {
            if let Some(d) = arg {
                *slot = d;
            }
        }
        c.translate = !self.forward_only;
        c.validate()?;
        Ok(c)
    }
}

fn init_logging(format: LogFormat) {
    let (filter, bad) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(f) => (f, None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new("ftpnat=info"),
            std::env::var("RUST_LOG").ok().map(|v| (v, e)),
        ),
    };
    // Colour only for a person at a terminal: logs redirected to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some((value, e)) = bad.filter(|(v, _)| !v.is_empty()) {
        tracing::warn!(RUST_LOG = value, error = %e, "ignoring unusable RUST_LOG; using ftpnat=info");
    }
}

fn run(args: RunArgs, format: LogFormat) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ftpnat: error: {e}");
            return ExitCode::from(2);
        }
    };
    // Handlers go in before the devices exist: whoever waits for the devices may signal us at once.
    let stop = match Stop::on_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ftpnat: error: cannot install SIGINT/SIGTERM handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let open = |flag, name: &str, side: Side| TunDevice::open(flag, name, config.mtu[side.index()]);
    let (lan, wan) = match (
        open("--lan-tun", &args.lan_tun, Side::Inside),
        open("--wan-tun", &args.wan_tun, Side::Outside),
    ) {
        (Ok(l), Ok(w)) => (l, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ftpnat: error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        lan = args.lan_tun,
        wan = args.wan_tun,
        inside = ?config.inside.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        public_ip = %config.public_ip,
        forwards = ?config.forwards.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        translate = config.translate,
        ftp_alg = config.ftp.enabled,
        "ftpnat running"
    );
    let started = std::time::Instant::now();
    let mut rt = Runtime::new(Engine::new(config), lan, wan);
    let result = rt.run(&stop);
    let stopped_by = match &result {
        Ok(cause) => cause.to_string(),
        Err(_) => "device error".to_string(),
    };
    print_summary(&rt.summary(), &stopped_by, started.elapsed(), format);
    match result {
        Ok(cause) => {
            tracing::info!(%cause, "ftpnat stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "ftpnat stopped on a device error");
            eprintln!("ftpnat: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The stop summary on stdout: aligned `name value` lines, or one JSON object with `--log-format json`.
fn print_summary(counters: &[(String, u64)], stopped_by: &str, uptime: Duration, format: LogFormat) {
    print!("{}", format_summary(counters, stopped_by, uptime, format));
}

fn format_summary(
    counters: &[(String, u64)],
    stopped_by: &str,
    uptime: Duration,
    format: LogFormat,
) -> String {
    match format {
        LogFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                counters.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(*v))).collect();
            let doc = serde_json::json!({
                "summary": { "stopped_by": stopped_by, "uptime_s": uptime.as_secs_f64(), "counters": map }
            });
            format!("{doc}\n")
        }
        LogFormat::Text => {
            let mut out = format!("ftpnat: stopped by {stopped_by} after {:.1} s\n", uptime.as_secs_f64());
            let width = counters.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in counters {
                out.push_str(&format!("  {k:<width$}  {v}\n"));
            }
            out
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run(args) => run(args, cli.log_format),
        Command::Replay(args) => ftpnat::replay::cli::cli_main(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        parse_devs("l0", "w0", extra)
    }

    fn parse_devs(lan: &str, wan: &str, extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec![
            "ftpnat",
            "run",
            "--lan-tun",
            lan,
            "--wan-tun",
            wan,
            "--inside",
            "10.0.0.0/24",
            "--public-ip",
            "198.51.100.1",
        ];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Run(args) = cli.command else { return Err("not a run command".into()) };
        args.config()
    }

    #[test]
    fn flags_reach_the_config() {
        let c = parse(&[
            "--forward",
            "tcp:2121=10.0.0.2:21",
            "--port-range",
            "20000-29999",
            "--ftp-port",
            "21",
            "--ftp-port",
            "2121",
            "--udp-timeout",
            "3m",
            "--wan-mtu",
            "1400",
            "--forward-only",
            "--no-ftp-alg",
            "--ftp-allow-low-ports",
        ])
        .unwrap();
        assert_eq!(c.forwards.len(), 1);
        assert_eq!(c.port_range, 20000..=29999);
        assert_eq!(c.ftp.ports, [21, 2121]);
        assert_eq!(c.timeouts.udp, Duration::from_secs(180));
        assert_eq!(c.mtu, [1500, 1400]);
        assert!(!c.translate && !c.ftp.enabled && !c.ftp.refuse_low_ports);
        assert_eq!(c.lan_ip, Ipv4Addr::new(10, 0, 0, 1));
        let d = parse(&[]).unwrap();
        assert!(d.translate && d.ftp.enabled && d.ftp.refuse_low_ports);
    }

    #[test]
    fn summaries_read_as_text_and_parse_as_json() {
        let c = [("flows.active".to_string(), 2), ("drops.no_mapping".to_string(), 17)];
        let t = format_summary(&c, "SIGTERM", Duration::from_millis(1500), LogFormat::Text);
        assert_eq!(
            t,
            "ftpnat: stopped by SIGTERM after 1.5 s\n  flows.active      2\n  drops.no_mapping  17\n"
        );
        let j = format_summary(&c, "SIGINT", Duration::from_secs(3), LogFormat::Json);
        assert_eq!(j.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["summary"]["stopped_by"], "SIGINT");
        assert_eq!(v["summary"]["counters"]["drops.no_mapping"], 17);
    }

    #[test]
    fn bad_input_names_the_flag() {
        for (extra, flag) in [
            (&["--public-ip", "10.0.0.9"][..], "--public-ip"),
            (&["--forward", "tcp:21=172.16.0.1:21"][..], "--forward"),
            (&["--forward", "tcp:21"][..], "--forward"),
            (&["--port-range", "9-1"][..], "--port-range"),
            (&["--udp-timeout", "soon"][..], "--udp-timeout"),
            (&["--wan-mtu", "100"][..], "--wan-mtu"),
            (&["--ftp-port", "990"][..], "--ftp-port"),
            (&["--inside", "10.0.0.0/33"][..], "--inside"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
        assert!(parse_devs("l0", "l0", &[]).unwrap_err().starts_with("--wan-tun"));
        assert!(parse_devs("a/b", "w0", &[]).unwrap_err().starts_with("--lan-tun"));
        assert!(parse_devs("l0", "sixteen-chars-xx", &[]).unwrap_err().starts_with("--wan-tun"));
    }
}
