//! The `ftpnat` command line: flags and the config file to a validated [`Config`], the tracing
//! subscriber, exit codes, and the control-socket clients.
//!
//! Owns: subcommands and their flags; `--config FILE` (every `run` flag has a key of the same name,
//! flags override the file); turning them into a [`Config`] and the operations servers; log setup
//! (`RUST_LOG`, default `ftpnat=info`, to stderr through a rate limit per reason and a writer thread,
//! [`ftpnat::io::log`]; `--log-format json` for JSON lines); printing the
//! stop summary to stdout; `ftpnat show ...` and `ftpnat events`. Must not: look at packets or touch
//! devices beyond handing names to [`ftpnat::io`].
//!
//! Exit codes: 0 after SIGINT/SIGTERM, 1 when a device (or the control socket, metrics listener,
//! capture file) cannot be opened or a device fails while running, 2 for bad command-line or config
//! file input (clap's own errors exit 2 as well). Clients exit 1 when the server cannot be reached.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

use ftpnat::config::{parse_duration, parse_port_range, Config, Forward, PortQuota, Shard};
use ftpnat::engine::Engine;
use ftpnat::io::log::{LogPipe, RateLimit};
use ftpnat::io::runtime::Stop;
use ftpnat::io::state_file;
use ftpnat::io::tun;
use ftpnat::io::workers;
use ftpnat::nat::{Allocation, BlockPolicy, PoolSpec};
use ftpnat::nat64::Nat64Config;
use ftpnat::ops::capture::{Capture, CaptureOptions, DEFAULT_FILES, DEFAULT_MAX_BYTES};
use ftpnat::ops::config_file::{self, parse_size};
use ftpnat::ops::control::ControlServer;
use ftpnat::ops::metrics::MetricsServer;
use ftpnat::ops::natlog::{Export, IpfixTarget, SyslogTarget, Targets};
use ftpnat::ops::view::{Cmd, Filter, MappingTarget, ProtoName, Request};
use ftpnat::ops::{client, Ops, Reload};
use ftpnat::xlat::Nat64Prefix;
use ftpnat::Side;

mod generate;

/// `ftpnat --version`: the package version, the commit it was built from and the build profile
/// (`build.rs` finds them, from git or from a release tarball; `unknown` when neither says).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FTPNAT_COMMIT"),
    ", ",
    env!("FTPNAT_PROFILE"),
    " build)"
);

#[derive(Parser, Debug)]
#[command(
    name = "ftpnat",
    version = VERSION,
    about = "Userspace IPv4 NAT gateway on two TUN devices, with an FTP ALG",
    after_long_help = "Exit status: 0 after SIGINT/SIGTERM (run) or success; 1 when a device, the control \
socket, the metrics listener or a capture file cannot be opened, a device fails while running, or a \
client cannot reach the gateway; 2 for bad command-line or configuration input (the message names the \
flag or the file, line and key).\n\n\
Files: /etc/ftpnat/ftpnat.toml (the configuration of the ftpnat.service unit), \
/run/ftpnat/control.sock (the control socket `ftpnat show` and `ftpnat events` use by default).\n\n\
Environment: RUST_LOG filters the log lines on stderr (default ftpnat=info).\n\n\
See the README (/usr/share/doc/ftpnat/README.md when installed from the Debian package)."
)]
struct Cli {
    /// Log line format on stderr (the filter comes from RUST_LOG, default `ftpnat=info`) [default: text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Route and translate between a LAN and a WAN TUN device until SIGINT/SIGTERM (SIGHUP reloads
    /// the --config file).
    Run(Box<RunArgs>),
    /// Show a running gateway's flows, pinholes or counters (through its --control-socket).
    Show(ShowArgs),
    /// Follow a running gateway's events live, like `conntrack -E`: flows new/destroyed, ALG rewrites,
    /// pinholes created/used/expired, refusals.
    Events(ClientArgs),
    /// Replay a pcap/pcapng capture through the engine (stable interface, see README).
    Replay(ftpnat::replay::cli::ReplayArgs),
}

/// `ftpnat generate DIR`, for packaging: writes the man pages and shell completions (bash, zsh, fish)
/// generated from [`Cli`] into DIR/man and DIR/completions (the copies under `deploy/` are made this
/// way). Parsed apart from [`Cli`], so it appears in neither the help, the man pages nor completions.
#[derive(Parser, Debug)]
#[command(name = "ftpnat generate", bin_name = "ftpnat generate")]
struct GenerateCli {
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

/// `ftpnat run` settings. The same struct reads the `--config` file: every flag is a key of the same
/// name (without the `--`), and a flag given on the command line overrides the file.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct RunArgs {
    /// Read settings from this TOML file (keys are these flags' names; flags given here override it).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// TUN device facing the inside hosts; created if absent, else attached to as it is [required].
    #[arg(long, value_name = "NAME")]
    lan_tun: Option<String>,
    /// TUN device facing the outside; created if absent, else attached to as it is [required].
    #[arg(long, value_name = "NAME")]
    wan_tun: Option<String>,
    /// Inside prefix whose sources are translated (repeatable) [required].
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    #[serde(deserialize_with = "config_file::de_cidrs")]
    inside: Vec<Ipv4Net>,
    /// The gateway's public address: translated sources, destination of inbound traffic [required].
    /// Repeatable: every address given joins the pool (see --public-pool); the first is the gateway's
    /// own (forwards without an address, ICMP errors it sends outside).
    #[arg(long, value_name = "IP")]
    #[serde(deserialize_with = "config_file::de_addrs")]
    public_ip: Vec<Ipv4Addr>,
    /// Static port forward PROTO:[PUBLICIP:]PUBLICPORT=INSIDEIP:PORT, e.g. tcp:2121=10.0.0.2:21, on
    /// the first --public-ip unless it names a pool address (repeatable). With --nat64-prefix the inside
    /// host may be an --inside6 IPv6 host, bracketed: tcp:2121=[2001:db8::10]:21.
    #[arg(long, value_name = "SPEC", value_parser = |s: &str| s.parse::<Forward>())]
    #[serde(deserialize_with = "config_file::de_forwards")]
    forward: Vec<Forward>,
    /// The gateway's own LAN address, source of ICMP errors sent inside [default: first host of the
    /// first --inside prefix].
    #[arg(long, value_name = "IP")]
    lan_ip: Option<Ipv4Addr>,
    /// Outside ports for new mappings when the inside port is taken [default: 1024-65535].
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    #[serde(deserialize_with = "config_file::de_opt_port_range")]
    port_range: Option<RangeInclusive<u16>>,
    /// Connection table bound; new flows beyond it are refused and counted [default: 262144].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_flows: Option<usize>,
    /// Flows (table entries) one inside host may hold, whatever ports they use [default: 16384].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_flows_per_host: Option<usize>,
    /// Public ports (mappings) one inside host may hold per protocol: a number, or a share of
    /// --port-range like 25% [default: 6.25%, 1/16 of the range (4032 of 1024-65535), at least 64].
    #[arg(long, value_name = "N|P%", value_parser = |s: &str| s.parse::<PortQuota>(), allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_port_quota")]
    max_ports_per_host: Option<PortQuota>,
    /// Egress MTU towards the LAN (also set on a LAN device ftpnat creates) [default: 1500].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    lan_mtu: Option<u16>,
    /// Egress MTU towards the WAN (also set on a WAN device ftpnat creates) [default: 1500].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    wan_mtu: Option<u16>,
    /// Server port of FTP control connections (repeatable; replaces the default 21).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    ftp_port: Vec<u16>,
    /// Turn the FTP ALG off: FTP control traffic is translated like any TCP.
    #[arg(long)]
    no_ftp_alg: bool,
    /// How long an FTP data-connection pinhole waits for its connection [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    ftp_pinhole_timeout: Option<Duration>,
    /// Outstanding pinholes per FTP control connection [default: 8].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    ftp_max_pinholes: Option<usize>,
    /// Accept PORT/EPRT naming a port below 1024 (refused by default, RFC 2577 section 3).
    #[arg(long)]
    ftp_allow_low_ports: bool,
    /// Idle timeout of an established TCP connection [default: 7440s = 2 h 4 min, RFC 5382 REQ-5]. Every
    /// DUR is seconds or a number with a unit: 90, 1.5, 500ms, 2m, 1h.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    tcp_established_timeout: Option<Duration>,
    /// Idle timeout of an opening or closing TCP connection [default: 4m, RFC 5382 REQ-5].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    tcp_transitory_timeout: Option<Duration>,
    /// Idle timeout of a UDP mapping [default: 5m; RFC 4787 REQ-5 asks at least 2m].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    udp_timeout: Option<Duration>,
    /// Idle timeout of an ICMP echo mapping [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    icmp_timeout: Option<Duration>,
    /// Idle timeout of a TCP connection whose other side never answered (a SYN, a connection picked
    /// up mid-stream) [default: 60s]; the long timeouts start once both sides have spoken.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    tcp_unreplied_timeout: Option<Duration>,
    /// Idle timeout of a UDP mapping nobody answered [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    udp_unreplied_timeout: Option<Duration>,
    /// Route without translating (benchmark ceiling): addresses and ports are left alone.
    #[arg(long)]
    forward_only: bool,
    /// Plain TUN I/O, one packet per read/write, instead of segmentation offload (IFF_VNET_HDR with
    /// TSO/USO and checksum offload, used when the kernel has it).
    #[arg(long)]
    no_offload: bool,
    /// Worker threads, each with its own queue of both TUN devices (IFF_MULTI_QUEUE, steered by an
    /// eBPF program) and its own engine: table, slice of the port range, pinholes [default: the number
    /// of CPUs, or 1 when the configuration has what several workers do not run yet]. One worker,
    /// with a warning, when the devices or the kernel cannot do it; 1 is the single loop.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    workers: Option<u16>,
    /// Serve `ftpnat show`/`ftpnat events` on this Unix socket (created with mode 0600).
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Keep the state across a restart: at SIGTERM/SIGINT write every flow, mapping, pinhole and FTP
    /// rewrite in force to PATH (atomically); at start load PATH if it is there and matches the
    /// configuration, then delete it. A file that does not match or is damaged is set aside as
    /// PATH.rejected with a warning, and the start is empty (docs/STATE.md).
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at ADDR:PORT/metrics, e.g. 127.0.0.1:9810.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Write every packet ftpnat sends to this pcapng file (interface 0 = LAN, 1 = WAN).
    #[arg(long, value_name = "FILE")]
    capture: Option<PathBuf>,
    /// Rotate the capture file before it grows past this size (bytes, or 64K/100M/1G) [default: 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_size")]
    capture_max_bytes: Option<u64>,
    /// Capture files kept, the current one included: FILE, FILE.1, ... [default: 4].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    capture_files: Option<usize>,
    /// Config-file only: the log format, as the global --log-format flag (which overrides it).
    #[arg(skip)]
    log_format: Option<LogFormat>,
    /// Stateful NAT64 (RFC 6146): IPv6 LAN packets to an address in this prefix (RFC 6052: /32, /40,
    /// /48, /56, /64 or /96; 64:ff9b::/96 is the well-known one) leave the WAN as IPv4 from
    /// --public-ip [default: none, IPv6 is dropped]. Needs --inside6.
    #[arg(long, value_name = "PREFIX", value_parser = |s: &str| s.parse::<Nat64Prefix>())]
    #[serde(deserialize_with = "config_file::de_opt_nat64_prefix")]
    nat64_prefix: Option<Nat64Prefix>,
    /// IPv6 source prefix allowed to use --nat64-prefix (repeatable); the gateway's own IPv6 address is
    /// the first host of the first one.
    #[arg(long, value_name = "CIDR6", value_parser = parse_cidr6)]
    #[serde(deserialize_with = "config_file::de_cidrs6")]
    inside6: Vec<Ipv6Net>,
    /// More public addresses for the pool: a prefix (its host addresses) or FIRST-LAST (repeatable).
    /// Inside hosts are spread over the pool by a hash of their address; all of one host's
    /// connections, FTP data connections included, use one address (paired pooling).
    #[arg(long, value_name = "CIDR|FIRST-LAST", value_parser = |s: &str| s.parse::<PoolSpec>())]
    #[serde(deserialize_with = "config_file::de_pools")]
    public_pool: Vec<PoolSpec>,
    /// Port-block allocation: a host gets blocks of N public ports (on its first connection, and
    /// another when its blocks are full), logged once per block instead of once per connection.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    port_block_size: Option<u16>,
    /// Port blocks one inside host may hold at once [default: 8].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    port_blocks_per_host: Option<u16>,
    /// How long a block whose last connection ended stays with its host before it returns to the
    /// pool [default: 120s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    port_block_hold: Option<Duration>,
    /// Deterministic NAT (RFC 7422): each inside address owns a computed public address and port
    /// range (--port-block-size ports, default: as many as fit); `ftpnat show mapping` computes it.
    #[arg(long)]
    deterministic: bool,
    /// Send NAT allocation records (port blocks, exhaustion, quotas; sessions with
    /// --nat-log-sessions) as IPFIX (RFC 7011, RFC 8158 events) over UDP to this collector.
    #[arg(long, value_name = "IP:PORT")]
    ipfix_collector: Option<SocketAddr>,
    /// How often the IPFIX templates are sent again [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_negative_numbers = true)]
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    ipfix_template_refresh: Option<Duration>,
    /// Send the same NAT allocation records as RFC 5424 syslog to udp:IP:PORT or unix:/PATH.
    #[arg(long, value_name = "TARGET", value_parser = |s: &str| s.parse::<SyslogTarget>())]
    #[serde(deserialize_with = "config_file::de_opt_syslog")]
    syslog: Option<SyslogTarget>,
    /// Log one record per connection (NAT44 session create/delete) as well as the blocks.
    #[arg(long)]
    nat_log_sessions: bool,
}

/// What `ftpnat show` can list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ShowWhat {
    /// Connections, like `conntrack -L`, with ALG state and sequence deltas of FTP control connections.
    Flows,
    /// Outstanding FTP data-connection pinholes.
    Pinholes,
    /// Every counter and drop reason, and the device counters.
    Stats,
    /// The NAT allocation of an inside address (its public address, ports, port blocks, deterministic
    /// share) or of a public ADDRESS:PORT (who holds it, its block, its deterministic owner).
    Mapping,
}

#[derive(Args, Debug)]
struct ShowArgs {
    #[arg(value_enum)]
    what: ShowWhat,
    /// mapping: an inside IP, or a public IP:PORT.
    #[arg(value_name = "TARGET", value_parser = |s: &str| s.parse::<MappingTarget>())]
    target: Option<MappingTarget>,
    #[command(flatten)]
    client: ClientArgs,
    /// flows/pinholes: at most N entries, and where to go on when more may follow (without it the
    /// whole listing is shown, fetched 1000 at a time).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// flows/pinholes: start where a previous `--limit` listing said to go on.
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// The running gateway's control socket.
    #[arg(long, value_name = "PATH", default_value = client::DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// JSON instead of a table (`show`: one document; `events`: one object per line).
    #[arg(long)]
    json: bool,
    /// Only what involves this address (inside, public or remote).
    #[arg(long, value_name = "IP")]
    addr: Option<Ipv4Addr>,
    /// Only what involves this port (inside, public or remote).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    port: Option<u16>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
}

impl ClientArgs {
    fn filter(&self) -> Filter {
        Filter {
            addr: self.addr,
            port: self.port,
            proto: self.proto.map(|p| match p {
                ProtoArg::Tcp => ProtoName::Tcp,
                ProtoArg::Udp => ProtoName::Udp,
                ProtoArg::Icmp => ProtoName::Icmp,
            }),
        }
    }
}

fn parse_cidr6(s: &str) -> Result<Ipv6Net, String> {
    s.parse::<Ipv6Net>()
        .map(|n| n.trunc())
        .map_err(|_| format!("'{s}' is not an IPv6 prefix (e.g. 2001:db8:64::/64)"))
}

fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    s.parse::<Ipv4Net>()
        .map(|n| n.trunc())
        .map_err(|_| format!("'{s}' is not an IPv4 prefix (e.g. 10.0.0.0/24)"))
}

impl RunArgs {
    /// These flags laid over `file`: a flag given wins, a list given replaces the file's list, a switch
    /// is on if either turns it on. The destructuring is exhaustive: a new flag must be merged here.
    fn over(self, file: RunArgs) -> RunArgs {
        let RunArgs {
            config,
            lan_tun,
            wan_tun,
            inside,
            public_ip,
            forward,
            lan_ip,
            port_range,
            max_flows,
            max_flows_per_host,
            max_ports_per_host,
            lan_mtu,
            wan_mtu,
            ftp_port,
            no_ftp_alg,
            ftp_pinhole_timeout,
            ftp_max_pinholes,
            ftp_allow_low_ports,
            tcp_established_timeout,
            tcp_transitory_timeout,
            udp_timeout,
            icmp_timeout,
            tcp_unreplied_timeout,
            udp_unreplied_timeout,
            forward_only,
            no_offload,
            workers,
            control_socket,
            state_file,
            metrics_listen,
            capture,
            capture_max_bytes,
            capture_files,
            log_format,
            nat64_prefix,
            inside6,
            public_pool,
            port_block_size,
            port_blocks_per_host,
            port_block_hold,
            deterministic,
            ipfix_collector,
            ipfix_template_refresh,
            syslog,
            nat_log_sessions,
        } = self;
        let list = |a: Vec<_>, b: Vec<_>| if a.is_empty() { b } else { a };
        RunArgs {
            config,
            lan_tun: lan_tun.or(file.lan_tun),
            wan_tun: wan_tun.or(file.wan_tun),
            inside: list(inside, file.inside),
            public_ip: if public_ip.is_empty() { file.public_ip } else { public_ip },
            forward: if forward.is_empty() { file.forward } else { forward },
            lan_ip: lan_ip.or(file.lan_ip),
            port_range: port_range.or(file.port_range),
            max_flows: max_flows.or(file.max_flows),
            max_flows_per_host: max_flows_per_host.or(file.max_flows_per_host),
            max_ports_per_host: max_ports_per_host.or(file.max_ports_per_host),
            lan_mtu: lan_mtu.or(file.lan_mtu),
            wan_mtu: wan_mtu.or(file.wan_mtu),
            ftp_port: if ftp_port.is_empty() { file.ftp_port } else { ftp_port },
            no_ftp_alg: no_ftp_alg || file.no_ftp_alg,
            ftp_pinhole_timeout: ftp_pinhole_timeout.or(file.ftp_pinhole_timeout),
            ftp_max_pinholes: ftp_max_pinholes.or(file.ftp_max_pinholes),
            ftp_allow_low_ports: ftp_allow_low_ports || file.ftp_allow_low_ports,
            tcp_established_timeout: tcp_established_timeout.or(file.tcp_established_timeout),
            tcp_transitory_timeout: tcp_transitory_timeout.or(file.tcp_transitory_timeout),
            udp_timeout: udp_timeout.or(file.udp_timeout),
            icmp_timeout: icmp_timeout.or(file.icmp_timeout),
            tcp_unreplied_timeout: tcp_unreplied_timeout.or(file.tcp_unreplied_timeout),
            udp_unreplied_timeout: udp_unreplied_timeout.or(file.udp_unreplied_timeout),
            forward_only: forward_only || file.forward_only,
            no_offload: no_offload || file.no_offload,
            workers: workers.or(file.workers),
            control_socket: control_socket.or(file.control_socket),
            state_file: state_file.or(file.state_file),
            metrics_listen: metrics_listen.or(file.metrics_listen),
            capture: capture.or(file.capture),
            capture_max_bytes: capture_max_bytes.or(file.capture_max_bytes),
            capture_files: capture_files.or(file.capture_files),
            log_format: log_format.or(file.log_format),
            nat64_prefix: nat64_prefix.or(file.nat64_prefix),
            inside6: if inside6.is_empty() { file.inside6 } else { inside6 },
            public_pool: if public_pool.is_empty() { file.public_pool } else { public_pool },
            port_block_size: port_block_size.or(file.port_block_size),
            port_blocks_per_host: port_blocks_per_host.or(file.port_blocks_per_host),
            port_block_hold: port_block_hold.or(file.port_block_hold),
            deterministic: deterministic || file.deterministic,
            ipfix_collector: ipfix_collector.or(file.ipfix_collector),
            ipfix_template_refresh: ipfix_template_refresh.or(file.ipfix_template_refresh),
            syslog: syslog.or(file.syslog),
            nat_log_sessions: nat_log_sessions || file.nat_log_sessions,
        }
    }

    /// The flags merged with the `--config` file (if any) and the validated configuration. Errors name
    /// the flag, and the file's line when the file set it.
    fn resolve(&self) -> Result<(RunArgs, Config), String> {
        let Some(path) = &self.config else {
            let c = self.config()?;
            return Ok((self.clone(), c));
        };
        let loaded = config_file::load::<RunArgs>(path).map_err(|e| format!("--config {e}"))?;
        let merged = self.clone().over(loaded.value.clone());
        let c = merged.config().map_err(|e| loaded.locate(&e))?;
        Ok((merged, c))
    }

    fn required<'a, T>(v: &'a Option<T>, flag: &str) -> Result<&'a T, String> {
        v.as_ref()
            .ok_or_else(|| format!("--{flag}: required (give the flag, or `{flag}` in the --config file)"))
    }

    /// The validated configuration; the error names the flag at fault.
    fn config(&self) -> Result<Config, String> {
        let lan_tun = Self::required(&self.lan_tun, "lan-tun")?;
        let wan_tun = Self::required(&self.wan_tun, "wan-tun")?;
        let public_ip = *Self::required(&self.public_ip.first().copied(), "public-ip")?;
        if self.inside.is_empty() {
            return Err("--inside: required (give the flag, or `inside` in the --config file)".into());
        }
        tun::check_name(lan_tun).map_err(|e| format!("--lan-tun: {e}"))?;
        tun::check_name(wan_tun).map_err(|e| format!("--wan-tun: {e}"))?;
        if lan_tun == wan_tun {
            return Err(format!("--wan-tun: '{wan_tun}' is also the --lan-tun device"));
        }
        if self.capture_files == Some(0) {
            return Err("--capture-files: must be at least 1".into());
        }
        if self.capture_max_bytes.is_some_and(|b| b < 4096) {
            return Err("--capture-max-bytes: must be at least 4096 bytes".into());
        }
        let mut c = Config::new(self.inside.clone(), public_ip);
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
        if let Some(q) = self.max_ports_per_host {
            c.max_ports_per_host = q;
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
            (self.tcp_unreplied_timeout, &mut t.tcp_unreplied),
            (self.udp_unreplied_timeout, &mut t.udp_unreplied),
        ] {
            if let Some(d) = arg {
                *slot = d;
            }
        }
        c.translate = !self.forward_only;
        match (self.nat64_prefix, self.inside6.is_empty()) {
            (Some(p), _) => c.nat64 = Some(Nat64Config::new(p, self.inside6.clone())),
            (None, false) => {
                return Err("--inside6: given without --nat64-prefix (it has no use alone)".into())
            }
            (None, true) => {}
        }
        self.pool(&mut c)?;
        c.validate()?;
        self.natlog()?;
        if let Some(n) = self.workers {
            // Each worker's engine must be valid too (a port range with a port for each, say).
            c.for_shard(Shard { index: 0, count: n }).validate()?;
            // Every feature combines with several workers: pools and port blocks (each worker owns
            // its slice of every pool address's ports), NAT logs (one exporter fed by all), NAT64 (an
            // IPv6 host is its /64's worker's) and deterministic NAT (a host and its block are the
            // block's worker's): `steer`'s header.
        }
        Ok(c)
    }

    /// The worker count to run (issue 18): `--workers` (or the file's `workers`) as given; unset, one
    /// per CPU (at most [`Shard::MAX_COUNT`]), unless the configuration would be refused with that many
    /// (a port block larger than a worker's slice, a port range too small to slice): then 1, and the
    /// reason, for one log line. An explicit count that does not fit was refused by [`RunArgs::config`].
    fn workers(&self) -> (u16, Option<String>) {
        if let Some(n) = self.workers {
            return (n, None);
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = u16::try_from(cpus).unwrap_or(Shard::MAX_COUNT).min(Shard::MAX_COUNT);
        if n <= 1 {
            return (1, None);
        }
        let probe = RunArgs { workers: Some(n), ..self.clone() };
        match probe.config() {
            Ok(_) => (n, None),
            Err(e) => (1, Some(e)),
        }
    }

    /// A reload's settings against the `running` worker count (`--workers` itself needs a restart): a
    /// gateway running several workers, by default or as asked, refuses a file that brings what several
    /// workers refuse, whatever count the file now names (a start with that many would refuse it too;
    /// a restart runs it, on one worker).
    fn fits_running(&self, running: u16) -> Result<(), String> {
        if running <= 1 {
            return Ok(());
        }
        RunArgs { workers: Some(running), ..self.clone() }
            .config()
            .map(drop)
            .map_err(|e| format!("{e} (running {running} workers: a restart changes that)"))
    }

    /// The pool and allocation flags (issue 16) into `c`.
    fn pool(&self, c: &mut Config) -> Result<(), String> {
        c.pool.addresses = self.public_ip.clone();
        for spec in &self.public_pool {
            c.pool.addresses.extend_from_slice(spec.addresses());
        }
        let needs_size = |flag: &str| format!("{flag}: applies to port blocks; give --port-block-size too");
        c.pool.allocation = match (self.deterministic, self.port_block_size) {
            (true, size) => {
                if self.port_blocks_per_host.is_some() || self.port_block_hold.is_some() {
                    return Err(
                        "--deterministic: each host owns one fixed range; --port-blocks-per-host and \
                                --port-block-hold do not apply"
                            .into(),
                    );
                }
                Allocation::Deterministic { size }
            }
            (false, Some(size)) => Allocation::Blocks(BlockPolicy {
                size,
                per_host: self.port_blocks_per_host.unwrap_or(BlockPolicy::DEFAULT_PER_HOST),
                hold: self.port_block_hold.unwrap_or(BlockPolicy::DEFAULT_HOLD),
            }),
            (false, None) if self.port_blocks_per_host.is_some() => {
                return Err(needs_size("--port-blocks-per-host"))
            }
            (false, None) if self.port_block_hold.is_some() => return Err(needs_size("--port-block-hold")),
            (false, None) => Allocation::Dynamic,
        };
        c.pool.log_sessions = self.nat_log_sessions;
        Ok(())
    }

    /// The NAT log exporters the flags ask for; the error names the flag.
    fn natlog(&self) -> Result<Targets, String> {
        let mut t = Targets { ipfix: None, syslog: self.syslog.clone(), facility: 16 };
        if let Some(a) = self.ipfix_collector {
            let mut i = IpfixTarget::new(a);
            if let Some(d) = self.ipfix_template_refresh {
                i.template_refresh = d;
            }
            t.ipfix = Some(i);
        } else if self.ipfix_template_refresh.is_some() {
            return Err("--ipfix-template-refresh: give --ipfix-collector too".into());
        }
        if self.nat_log_sessions && !t.any() {
            return Err("--nat-log-sessions: give --ipfix-collector or --syslog too".into());
        }
        t.validate()?;
        Ok(t)
    }
}

/// The log's rate limiter and writer queue, kept for the end of `run`: what they suppressed and lost
/// goes into the stop summary, and what is queued is written before the process exits.
struct Logging {
    limit: RateLimit,
    pipe: Option<LogPipe>,
}

impl Logging {
    /// The live log counters, for `show stats` and the metrics.
    fn shared_counters(&self) -> Vec<(&'static str, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
        let mut v = vec![("log.lines_suppressed", self.limit.suppressed_counter())];
        if let Some(p) = &self.pipe {
            v.push(("log.lines_lost", p.lost_counter()));
        }
        v
    }

    /// Non-zero log counters for the stop summary.
    fn counters(&self) -> Vec<(String, u64)> {
        let lost = self.pipe.as_ref().map_or(0, LogPipe::lost);
        [("log.lines_suppressed", self.limit.suppressed()), ("log.lines_lost", lost)]
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// Logs the last suppressed counts and waits (at most a second: stderr may be blocked for good)
    /// for the queued lines to be written.
    fn finish(&self) {
        self.limit.log_suppressed(true);
        if let Some(p) = &self.pipe {
            p.flush(Duration::from_secs(1));
        }
    }
}

/// Logs go to stderr through a rate limit per reason and a writer thread with a bounded queue, so
/// neither a flood of refusals nor a blocked stderr can slow forwarding (`ftpnat::io::log`).
fn init_logging(format: LogFormat) -> Logging {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let (filter, bad) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(f) => (f, None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new("ftpnat=info"),
            std::env::var("RUST_LOG").ok().map(|v| (v, e)),
        ),
    };
    // Colour only for a person at a terminal: logs redirected to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let limit = RateLimit::default();
    let pipe = LogPipe::spawn(std::io::stderr()).ok();
    // systemd sets JOURNAL_STREAM when stderr is the journal, which stamps every line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let fmt = match (&pipe, format, journal) {
        (Some(p), LogFormat::Text, false) => fmt.with_writer(p.clone()).boxed(),
        (Some(p), LogFormat::Text, true) => fmt.without_time().with_writer(p.clone()).boxed(),
        (Some(p), LogFormat::Json, _) => fmt.json().with_writer(p.clone()).boxed(),
        // No thread for the writer: write in place rather than not at all.
        (None, LogFormat::Text, false) => fmt.with_writer(std::io::stderr).boxed(),
        (None, LogFormat::Text, true) => fmt.without_time().with_writer(std::io::stderr).boxed(),
        (None, LogFormat::Json, _) => fmt.json().with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(limit.clone()).with(fmt).init();
    if pipe.is_none() {
        tracing::warn!("cannot start the log writer thread; logging synchronously to stderr");
    }
    if let Err(e) = limit.spawn_ticker() {
        tracing::warn!(error = %e, "no log ticker thread; suppressed counts are logged at exit only");
    }
    if let Some((value, e)) = bad.filter(|(v, _)| !v.is_empty()) {
        tracing::warn!(RUST_LOG = value, error = %e, "ignoring unusable RUST_LOG; using ftpnat=info");
    }
    Logging { limit, pipe }
}

/// Settings outside the engine that a reload cannot change: one line per difference.
fn restart_notes(running: &RunArgs, new: &RunArgs) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |changed: bool, key: &str| {
        if changed {
            out.push(format!("--{key}: needs a restart"));
        }
    };
    cmp(running.lan_tun != new.lan_tun, "lan-tun");
    cmp(running.wan_tun != new.wan_tun, "wan-tun");
    cmp(running.no_offload != new.no_offload, "no-offload");
    cmp(running.workers != new.workers, "workers");
    cmp(running.control_socket != new.control_socket, "control-socket");
    cmp(running.state_file != new.state_file, "state-file");
    cmp(running.metrics_listen != new.metrics_listen, "metrics-listen");
    cmp(running.capture != new.capture, "capture");
    cmp(running.capture_max_bytes != new.capture_max_bytes, "capture-max-bytes");
    cmp(running.capture_files != new.capture_files, "capture-files");
    cmp(running.log_format != new.log_format, "log-format");
    cmp(running.ipfix_collector != new.ipfix_collector, "ipfix-collector");
    cmp(running.ipfix_template_refresh != new.ipfix_template_refresh, "ipfix-template-refresh");
    cmp(running.syslog != new.syslog, "syslog");
    out
}

/// The control socket, metrics listener and capture file the settings ask for. The error names the flag.
fn build_ops(s: &RunArgs, lan: &str, wan: &str) -> Result<Ops, String> {
    let mut ops = Ops::new();
    if let Some(p) = &s.control_socket {
        ops.control =
            Some(ControlServer::bind(p).map_err(|e| format!("--control-socket {}: {e}", p.display()))?);
    }
    if let Some(a) = s.metrics_listen {
        ops.metrics = Some(MetricsServer::bind(a).map_err(|e| format!("--metrics-listen {a}: {e}"))?);
    }
    if let Some(p) = &s.capture {
        let opts = CaptureOptions {
            path: p.clone(),
            max_bytes: s.capture_max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            files: s.capture_files.unwrap_or(DEFAULT_FILES),
        };
        ops.capture = Some(Capture::create(opts, [lan, wan])?);
    }
    Ok(ops)
}

fn run(args: RunArgs, cli_format: Option<LogFormat>) -> ExitCode {
    let (settings, config) = match args.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ftpnat: error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = cli_format.or(settings.log_format).unwrap_or(LogFormat::Text);
    let logging = init_logging(format);
    // Handlers go in before the devices exist: whoever waits for the devices may signal us at once.
    let stop = match Stop::on_signals() {
        Ok(s) => s,
        Err(e) => {
            logging.finish();
            eprintln!("ftpnat: error: cannot install SIGINT/SIGTERM handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let (workers, one_because) = settings.workers();
    let running = settings.clone();
    // How many workers run: set once the devices are open (one, if they cannot be multi-queue).
    let running_workers = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(workers));
    let ran = running_workers.clone();
    let loader = Box::new(move || {
        let (new, config) = args.resolve()?;
        new.fits_running(ran.load(std::sync::atomic::Ordering::Relaxed))?;
        Ok((config, restart_notes(&running, &new)))
    });
    let reload = match Reload::on_sighup(loader) {
        Ok(r) => r,
        Err(e) => {
            logging.finish();
            eprintln!("ftpnat: error: cannot install the SIGHUP handler: {e}");
            return ExitCode::from(1);
        }
    };
    // `resolve` checked that both names are there.
    let lan_name = settings.lan_tun.clone().unwrap_or_default();
    let wan_name = settings.wan_tun.clone().unwrap_or_default();
    let mut ops = match build_ops(&settings, &lan_name, &wan_name) {
        Ok(o) => o,
        Err(e) => {
            logging.finish();
            eprintln!("ftpnat: error: {e}");
            return ExitCode::from(1);
        }
    };
    ops.reload = Some(reload);
    ops.shared = logging.shared_counters();
    let offload = if settings.no_offload { tun::Offload::Off } else { tun::Offload::Auto };
    if let Some(why) = &one_because {
        tracing::info!(reason = %why, "one worker, not one per CPU (the default), for this configuration");
    }
    let asked = if settings.workers.is_some() { workers::Asked::Explicit } else { workers::Asked::Default };
    let pairs = match workers::open(&config, &lan_name, &wan_name, offload, workers, asked) {
        Ok(p) => p,
        Err(e) => {
            logging.finish();
            eprintln!("ftpnat: error: {e}");
            return ExitCode::from(1);
        }
    };
    running_workers
        .store(u16::try_from(pairs.len()).unwrap_or(u16::MAX), std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        lan = lan_name,
        wan = wan_name,
        inside = ?config.inside.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        public_ip = %config.public_ip,
        forwards = ?config.forwards.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        translate = config.translate,
        ftp_alg = config.ftp.enabled,
        config = %settings.config.as_ref().map_or("-".into(), |p| p.display().to_string()),
        control_socket = %ops.control.as_ref().map_or("-".into(), |c| c.path().display().to_string()),
        metrics = %ops.metrics.as_ref().map_or("-".into(), |m| m.local_addr().to_string()),
        capture = %ops.capture.as_ref().map_or("-".into(), |c| c.path().display().to_string()),
        workers = pairs.len(),
        version = VERSION,
        "ftpnat running"
    );
    // Issue 16: an undersized pool makes the block limit "first come" (RFC 6888 §3 REQ-4).
    if let Some(s) = ftpnat::nat::block_shortfall(&config.nat_setup()) {
        tracing::warn!(
            hosts = s.hosts,
            wanted = s.wanted,
            blocks_total = s.total,
            "the pool has {} port blocks, fewer than the {} the inside prefixes' {} hosts × --port-blocks-per-host could ask for: once they are gone, hosts without a block get no mapping",
            s.total,
            s.wanted,
            s.hosts
        );
    }
    // The NAT log exporters (issue 16), on their own thread: `resolve` checked the flags.
    let natlog = match settings.natlog().map(|t| (t.any(), t)) {
        Ok((true, t)) => match Export::start(&t) {
            Ok(x) => Some(x),
            Err(e) => {
                logging.finish();
                eprintln!("ftpnat: error: {e}");
                return ExitCode::from(1);
            }
        },
        Ok((false, _)) => None,
        Err(e) => {
            logging.finish();
            eprintln!("ftpnat: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(x) = &natlog {
        ops.shared.extend(x.counters().shared());
    }
    let restored = settings.state_file.as_deref().and_then(|p| load_state(p, &config, pairs.len(), &mut ops));
    let state = workers::State { restored, save: settings.state_file.clone() };
    let started = std::time::Instant::now();
    // Removes the control socket and flushes the capture (and the NAT log) before it returns.
    let (result, mut counters) = match workers::run_gateway(config, pairs, ops, natlog, &stop, state) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ftpnat: error: cannot start the operations thread or the workers: {e}");
            return ExitCode::from(1);
        }
    };
    let stopped_by = match &result {
        Ok(cause) => cause.to_string(),
        Err(_) => "device error".to_string(),
    };
    counters.extend(logging.counters());
    print_summary(&counters, &stopped_by, started.elapsed(), format);
    let code = match &result {
        Ok(cause) => {
            tracing::info!(%cause, "ftpnat stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "ftpnat stopped on a device error");
            ExitCode::from(1)
        }
    };
    logging.finish();
    if let Err(e) = result {
        eprintln!("ftpnat: error: {e}");
    }
    code
}

/// The engines `--state-file` holds for `workers` workers, or `None` for an empty start; says which in
/// the log (a file not used is a warning with its reason, never a failed start: issue 15) and in
/// `show stats` and the metrics (`state.restored_flows`, `state.restored_pinholes`, `state.rejected`).
fn load_state(path: &std::path::Path, config: &Config, workers: usize, ops: &mut Ops) -> Option<Vec<Engine>> {
    let workers = u16::try_from(workers).unwrap_or(u16::MAX);
    if let Err(e) = state_file::writable(path) {
        tracing::error!(path = %path.display(), error = %e,
            "the state file cannot be written: the state will not survive the next stop");
    }
    let loaded = state_file::load(path, config, workers);
    let (flows, pinholes, rejected) = match &loaded {
        state_file::Loaded::Engines { engines, .. } => (
            engines.iter().map(Engine::flow_count).sum::<usize>(),
            engines.iter().map(|e| e.pinholes().len()).sum::<usize>(),
            0,
        ),
        state_file::Loaded::Rejected { .. } => (0, 0, 1),
        state_file::Loaded::Missing => (0, 0, 0),
    };
    for (name, v) in [
        ("state.restored_flows", flows as u64),
        ("state.restored_pinholes", pinholes as u64),
        ("state.rejected", rejected),
    ] {
        ops.shared.push((name, std::sync::Arc::new(std::sync::atomic::AtomicU64::new(v))));
    }
    match loaded {
        state_file::Loaded::Missing => {
            tracing::info!(path = %path.display(), "no state file: an empty start");
            None
        }
        state_file::Loaded::Engines { engines, age_secs, refused } => {
            tracing::info!(path = %path.display(), flows, pinholes, age_secs, "state loaded");
            for r in refused {
                tracing::warn!("{r}");
            }
            Some(engines)
        }
        state_file::Loaded::Rejected { why, kept_as } => {
            let kept = match kept_as {
                Some(p) => format!("the file is kept as {}", p.display()),
                None => "the file could not be moved aside and stays where it is".to_string(),
            };
            tracing::warn!(path = %path.display(), reason = why.reason(), "state file ignored: {why}; starting empty ({kept})");
            None
        }
    }
}

fn show(a: ShowArgs) -> ExitCode {
    let cmd = match a.what {
        ShowWhat::Flows => Cmd::Flows,
        ShowWhat::Pinholes => Cmd::Pinholes,
        ShowWhat::Stats => Cmd::Stats,
        ShowWhat::Mapping => Cmd::Mapping,
    };
    if (cmd == Cmd::Mapping) != a.target.is_some() {
        eprintln!(
            "ftpnat: error: TARGET: `show mapping` takes an inside IP or a public IP:PORT, and only it does"
        );
        return ExitCode::from(2);
    }
    let mut req = Request::new(cmd, a.client.filter());
    if matches!(cmd, Cmd::Stats | Cmd::Mapping) && (a.limit.is_some() || a.cursor.is_some()) {
        eprintln!("ftpnat: error: --limit and --cursor apply to `show flows` and `show pinholes` only");
        return ExitCode::from(2);
    }
    req.limit = a.limit.map(|n| n as usize);
    req.cursor = a.cursor;
    req.target = a.target;
    if req.is_listing() {
        return match client::show_listing(
            &a.client.control_socket,
            &req,
            a.client.json,
            &mut std::io::stdout().lock(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ftpnat: error: {e}");
                ExitCode::from(1)
            }
        };
    }
    match client::query(&a.client.control_socket, &req) {
        Ok(v) => match client::print(cmd, &v, a.client.json) {
            Ok(()) => ExitCode::SUCCESS,
            // A closed pipe (`| head`) is not an error worth a message.
            Err(_) => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("ftpnat: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn events(a: ClientArgs) -> ExitCode {
    use std::io::Write;
    let req = Request::new(Cmd::Events, a.filter());
    let mut out = std::io::stdout();
    let r = client::follow(
        &a.control_socket,
        &req,
        || eprintln!("ftpnat: following events on {} (Ctrl-C to stop)", a.control_socket.display()),
        |v| {
            let line = if a.json { v.to_string() } else { client::render_event(v) };
            // Each event at once, even into a pipe; stop when the reader is gone.
            writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
        },
    );
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
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
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        return generate_main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Run(args) => run(*args, cli.log_format),
        Command::Show(a) => show(a),
        Command::Events(a) => events(a),
        Command::Replay(args) => ftpnat::replay::cli::cli_main(args),
    }
}

fn generate_main() -> ExitCode {
    use clap::CommandFactory;
    let args = match GenerateCli::try_parse_from(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => return usage_error(e),
    };
    match generate::write_all(Cli::command(), &args.dir) {
        Ok(files) => {
            files.iter().for_each(|f| println!("{}", f.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ftpnat: error: generate: {e}");
            ExitCode::from(1)
        }
    }
}

/// clap's errors in the program's one error style (`ftpnat: error: ...`, clap's own text starting with
/// `error: `), exit status 2; `--help` and `--version` print as usual.
fn usage_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    eprint!("ftpnat: {}", e.render());
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
            "--max-ports-per-host",
            "25%",
            "--tcp-unreplied-timeout",
            "20s",
            "--udp-unreplied-timeout",
            "10",
        ])
        .unwrap();
        assert_eq!(c.max_ports_per_host, PortQuota::Share(2500));
        assert_eq!(c.ports_per_host(), 2500, "a quarter of 20000-29999");
        assert_eq!(c.timeouts.tcp_unreplied, Duration::from_secs(20));
        assert_eq!(c.timeouts.udp_unreplied, Duration::from_secs(10));
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
            // NAT64 forwards (issue 14): an IPv6 host needs NAT64, inside an --inside6 prefix.
            (&["--forward", "tcp:21=[2001:db8::10]:21"][..], "--forward"),
            (&["--forward", "tcp:21=2001:db8::10:21"][..], "--forward"),
            (
                &[
                    "--nat64-prefix",
                    "64:ff9b:1::/96",
                    "--inside6",
                    "2001:db8::/64",
                    "--forward",
                    "tcp:21=[2001:db8:1::10]:21",
                ][..],
                "--forward",
            ),
            (
                &[
                    "--nat64-prefix",
                    "64:ff9b:1::/96",
                    "--inside6",
                    "2001:db8::/64",
                    "--forward",
                    "tcp:21=[2001:db8::1]:21",
                ][..],
                "--forward",
            ),
            (&["--port-range", "9-1"][..], "--port-range"),
            (&["--udp-timeout", "soon"][..], "--udp-timeout"),
            // A negative number is a value of the flag, not another flag.
            (&["--udp-timeout", "-5"][..], "--udp-timeout"),
            (&["--udp-timeout", "0"][..], "--udp-timeout"),
            (&["--icmp-timeout", "5ms"][..], "--icmp-timeout"),
            (&["--ftp-pinhole-timeout", "0"][..], "--ftp-pinhole-timeout"),
            (&["--max-flows", "-1"][..], "--max-flows"),
            (&["--wan-mtu", "100"][..], "--wan-mtu"),
            (&["--ftp-port", "990"][..], "--ftp-port"),
            (&["--max-ports-per-host", "0"][..], "--max-ports-per-host"),
            (&["--max-ports-per-host", "120%"][..], "--max-ports-per-host"),
            (&["--udp-unreplied-timeout", "later"][..], "--udp-unreplied-timeout"),
            (&["--inside", "10.0.0.0/33"][..], "--inside"),
            (&["--workers", "0"][..], "--workers"),
            (&["--workers", "65"][..], "--workers"),
            (&["--workers", "-2"][..], "--workers"),
            (&["--workers", "3", "--port-range", "5000-5001"][..], "--workers"),
            // A block must fit every worker's slice (77 ports over 2 workers: 38 and 39).
            (
                &["--workers", "2", "--port-range", "1024-1100", "--port-block-size", "39"][..],
                "--port-block-size",
            ),
            // One port forwarded on two addresses, to hosts of two workers (10.0.0.2: 0, 10.0.0.3: 1).
            (
                &[
                    "--workers",
                    "2",
                    "--public-ip",
                    "198.51.100.9",
                    "--forward",
                    "tcp:2121=10.0.0.2:21",
                    "--forward",
                    "tcp:198.51.100.9:2121=10.0.0.3:21",
                ][..],
                "--forward",
            ),
            (&["--nat64-prefix", "64:ff9b::/95", "--inside6", "2001:db8::/64"][..], "--nat64-prefix"),
            (&["--nat64-prefix", "64:ff9b::1/96", "--inside6", "2001:db8::/64"][..], "--nat64-prefix"),
            (&["--nat64-prefix", "64:ff9b::/96"][..], "--inside6"),
            (&["--inside6", "2001:db8::/64"][..], "--inside6"),
            (&["--nat64-prefix", "64:ff9b::/96", "--inside6", "10.0.0.0/8"][..], "--inside6"),
            (&["--nat64-prefix", "64:ff9b::/96", "--inside6", "64:ff9b::/64"][..], "--inside6"),
            (
                &["--nat64-prefix", "64:ff9b::/96", "--inside6", "2001:db8::/64", "--lan-mtu", "1000"][..],
                "--lan-mtu",
            ),
            // Issue 16: pools, blocks, logs; no flag that would do nothing is accepted.
            (&["--public-pool", "198.51.100.0/33"][..], "--public-pool"),
            (&["--public-pool", "10.0.0.5-10.0.0.9"][..], "--public-pool"),
            (&["--port-block-size", "0"][..], "--port-block-size"),
            (&["--port-blocks-per-host", "4"][..], "--port-blocks-per-host"),
            (&["--port-block-hold", "5s"][..], "--port-block-hold"),
            (&["--deterministic", "--port-block-size", "1000"][..], "--deterministic"),
            (&["--deterministic", "--port-block-hold", "5s"][..], "--deterministic"),
            (&["--nat-log-sessions"][..], "--nat-log-sessions"),
            (&["--ipfix-template-refresh", "5s"][..], "--ipfix-template-refresh"),
            (&["--ipfix-collector", "127.0.0.1:0"][..], "--ipfix-collector"),
            (&["--syslog", "unix:relative/path"][..], "--syslog"),
            (&["--forward", "tcp:203.0.113.9:21=10.0.0.2:21"][..], "--forward"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
        assert!(parse_devs("l0", "l0", &[]).unwrap_err().starts_with("--wan-tun"));
        assert!(parse_devs("a/b", "w0", &[]).unwrap_err().starts_with("--lan-tun"));
        assert!(parse_devs("l0", "sixteen-chars-xx", &[]).unwrap_err().starts_with("--wan-tun"));
    }

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["ftpnat", "run", "--lan-tun", "l0", "--wan-tun", "w0", "--inside", "10.0.0.0/24"];
        argv.extend_from_slice(&["--public-ip", "198.51.100.1"]);
        argv.extend_from_slice(extra);
        let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else { unreachable!() };
        *args
    }

    /// Issue 18: unset, one worker per CPU; a configuration several workers refuse runs one worker by
    /// default (with the reason to log) but is refused when the count is explicit.
    #[test]
    fn workers_default_to_the_cpus_and_fall_back_to_one_when_refused() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(64) as u16;
        assert_eq!(run_args(&[]).workers(), (cpus, None));
        assert_eq!(run_args(&["--workers", "1"]).workers(), (1, None));
        assert_eq!(run_args(&["--workers", "3"]).workers(), (3, None));
        // Blocks larger than a worker's slice of the port range: the misfit several workers refuse.
        let misfit = ["--port-range", "1024-1100", "--port-block-size", "60"];
        let blocks = run_args(&misfit);
        assert!(blocks.config().is_ok(), "default: runs");
        let (n, why) = blocks.workers();
        assert_eq!(n, 1);
        if cpus > 1 {
            assert!(why.unwrap().contains("--port-block-size"), "the log line says why");
        }
        // A port range too small to slice among the CPUs: one worker as well.
        let (n, _) = run_args(&["--port-range", "5000-5000"]).workers();
        assert_eq!(n, 1);
        // Explicit: refused as before.
        assert!(run_args(&[&["--workers", "2"][..], &misfit[..]].concat()).config().is_err());
        // A reload may not bring blocks to a gateway running two workers, even when the reloaded
        // settings name one worker (that needs a restart); to a gateway running one, it may.
        let e = blocks.fits_running(2).unwrap_err();
        assert!(e.contains("--port-block-size") && e.contains("restart"), "{e}");
        let e = run_args(&[&["--workers", "1"][..], &misfit[..]].concat()).fits_running(2).unwrap_err();
        assert!(e.contains("--port-block-size"), "{e}");
        assert!(blocks.fits_running(1).is_ok());
        assert!(run_args(&[]).fits_running(2).is_ok());
    }

    /// Issue 18: every feature runs across workers and is accepted with `--workers 2` (what does not
    /// fit several workers, a block larger than a slice or one forwarded port leading to two workers,
    /// is refused in `bad_input_names_the_flag`).
    #[test]
    fn workers_combine_with_what_runs_across_them() {
        for extra in [
            &["--workers", "2", "--syslog", "udp:127.0.0.1:514", "--nat-log-sessions"][..],
            &["--workers", "2", "--ipfix-collector", "127.0.0.1:4739"][..],
            &["--workers", "2", "--public-ip", "198.51.100.9", "--public-pool", "198.51.100.16/30"][..],
            &["--workers", "2", "--port-range", "1024-1100", "--port-block-size", "38"][..],
            &["--workers", "2", "--nat64-prefix", "64:ff9b:1::/96", "--inside6", "2001:db8::/64"][..],
            &["--workers", "2", "--deterministic", "--public-ip", "198.51.100.9"][..],
            &[
                "--workers",
                "2",
                "--public-ip",
                "198.51.100.9",
                "--port-block-size",
                "256",
                "--forward",
                "tcp:198.51.100.9:2121=10.0.0.2:21",
            ][..],
        ] {
            let c = parse(extra).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert!(c.translate, "{extra:?}");
        }
    }

    /// Generic over the `run` flags, so that a flag added later is held to the same rules: every flag
    /// with a numeric value takes `-5` as its value (refused by its parser, naming the flag) rather than
    /// as an unknown flag `-5`, and every `--*-timeout` has the one minimum ([`ftpnat::config::MIN_TIMEOUT`]).
    #[test]
    fn every_numeric_flag_takes_negatives_and_every_timeout_has_the_minimum() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd.find_subcommand("run").unwrap();
        let mut timeouts = 0;
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let numeric = arg
                .get_value_names()
                .unwrap_or_default()
                .iter()
                .any(|n| ["N", "DUR", "SIZE"].contains(&n.as_str()) || n.as_str().starts_with("N|"));
            if numeric {
                assert!(arg.is_allow_negative_numbers_set(), "--{long} would take -5 for a flag");
            }
            if long.ends_with("-timeout") {
                timeouts += 1;
                let flag = format!("--{long}");
                for v in ["0", "5ms", "999ms", "-5"] {
                    let e = parse(&[&flag, v]).unwrap_err();
                    assert!(e.contains(&flag), "{flag} {v}: {e}");
                }
                parse(&[&flag, "1"]).unwrap_or_else(|e| panic!("{flag} 1: {e}"));
            }
        }
        assert!(timeouts >= 5, "only {timeouts} timeout flags");
    }

    /// The man pages and completions under `deploy/` are exactly what `ftpnat generate` makes from this
    /// command line: a flag added, renamed or reworded without regenerating them fails here, so in CI.
    #[test]
    fn checked_in_man_pages_and_completions_match_the_cli() {
        use clap::CommandFactory;
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let files = generate::files(Cli::command()).unwrap();
        let mut stale: Vec<String> = Vec::new();
        for (rel, data) in &files {
            if std::fs::read(deploy.join(rel)).ok().as_ref() != Some(data) {
                stale.push(format!("{} differs or is missing", rel.display()));
            }
        }
        for dir in ["man", "completions"] {
            for entry in std::fs::read_dir(deploy.join(dir)).unwrap() {
                let rel = std::path::Path::new(dir).join(entry.unwrap().file_name());
                if !files.iter().any(|(r, _)| *r == rel) {
                    stale.push(format!("{} is not generated any more", rel.display()));
                }
            }
        }
        assert!(
            stale.is_empty(),
            "deploy/ is out of date with the command line; run `cargo run --release -- generate deploy` \
             (and remove files no longer generated): {stale:#?}"
        );
        let names: Vec<String> = files.iter().map(|(r, _)| r.display().to_string()).collect();
        for want in ["man/ftpnat.1", "man/ftpnat-run.1", "man/ftpnat-replay.1", "completions/ftpnat.bash"] {
            assert!(names.iter().any(|n| n == want), "{want} not generated: {names:?}");
        }
        assert!(
            files.iter().all(|(_, d)| !String::from_utf8_lossy(d).contains("generate")),
            "the packaging subcommand is in no page and no completion"
        );
    }

    #[test]
    fn version_names_the_commit_and_the_profile() {
        use clap::CommandFactory;
        let v = Cli::command().render_version();
        assert!(v.starts_with(&format!("ftpnat {} (commit ", env!("CARGO_PKG_VERSION"))), "{v}");
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        assert!(v.trim_end().ends_with(&format!(", {profile} build)")), "{v}");
        let commit = env!("FTPNAT_COMMIT");
        assert!(
            commit == "unknown"
                || commit.trim_end_matches("-dirty").chars().all(|c| c.is_ascii_hexdigit())
                    && commit.len() >= 7,
            "{commit}"
        );
    }

    fn example() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ftpnat.toml.example")
    }

    #[test]
    fn the_example_config_is_valid() {
        let l = config_file::load::<RunArgs>(&example()).unwrap();
        let c = l.value.config().unwrap();
        assert_eq!(c.forwards.len(), 1);
        assert_eq!(c.timeouts.udp, Duration::from_secs(300));
        assert_eq!(l.value.metrics_listen, Some("127.0.0.1:9810".parse().unwrap()));
    }

    /// Every `run` flag has a key of the same name, shown (maybe commented out) in the example, and
    /// the example's line for it parses on its own.
    #[test]
    fn every_flag_is_a_config_key() {
        use clap::CommandFactory;
        let text = std::fs::read_to_string(example()).unwrap();
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd.find_subcommand("run").unwrap();
        let mut seen = 0;
        for arg in run.get_arguments() {
            let Some(key) = arg.get_long() else { continue };
            if ["help", "config", "version"].contains(&key) {
                continue;
            }
            seen += 1;
            let line = text
                .lines()
                .map(|l| l.trim_start_matches('#').trim_start())
                .find(|l| l.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("the example config does not show `{key}`"));
            if line.contains('[') && !line.contains(']') {
                continue; // a multi-line array: the whole file is parsed above
            }
            let line = match line.find(" #") {
                Some(i) => &line[..i],
                None => line,
            };
            config_file::parse::<RunArgs>(std::path::Path::new("x.toml"), line)
                .unwrap_or_else(|e| panic!("`{line}`: {e}"));
        }
        assert!(seen >= 27, "only {seen} flags found");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("ftpnat-main-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f.toml");
        std::fs::write(
            &f,
            "lan-tun = \"a0\"\nwan-tun = \"b0\"\ninside = [\"10.0.0.0/24\"]\npublic-ip = \"198.51.100.1\"\n\
             udp-timeout = \"5m\"\nforward = [\"tcp:2121=10.0.0.2:21\"]\nftp-port = [21, 2121]\n\
             max-ports-per-host = 4096\ntcp-unreplied-timeout = \"45s\"\n",
        )
        .unwrap();
        let args = |extra: &[&str]| {
            let mut v = vec!["ftpnat", "run", "--config", f.to_str().unwrap()];
            v.extend_from_slice(extra);
            let Command::Run(a) = Cli::try_parse_from(v).unwrap().command else { panic!() };
            a.resolve()
        };
        let (s, c) = args(&["--udp-timeout", "7m", "--wan-tun", "w9"]).unwrap();
        assert_eq!(c.timeouts.udp, Duration::from_secs(420), "the flag wins");
        assert_eq!(s.wan_tun.as_deref(), Some("w9"));
        assert_eq!(s.lan_tun.as_deref(), Some("a0"), "the file fills in");
        assert_eq!(c.forwards.len(), 1);
        assert_eq!(c.ftp.ports, [21, 2121]);
        assert_eq!(
            (c.max_ports_per_host, c.timeouts.tcp_unreplied),
            (PortQuota::Ports(4096), Duration::from_secs(45))
        );
        let (_, c) = args(&["--max-ports-per-host", "12.5%"]).unwrap();
        assert_eq!(c.ports_per_host(), 8064, "the flag wins over the file's number");
        let (_, c) = args(&["--forward", "udp:53=10.0.0.3:53"]).unwrap();
        assert_eq!(c.forwards[0].to_string(), "udp:53=10.0.0.3:53", "a list flag replaces the file's list");
        let e = args(&["--public-ip", "10.0.0.9"]).unwrap_err();
        assert!(e.starts_with("--public-ip"), "{e}");
        std::fs::write(
            &f,
            "lan-tun = \"a0\"\nwan-tun = \"b0\"\ninside = [\"10.0.0.0/24\"]\npublic-ip = \"10.0.0.9\"\n",
        )
        .unwrap();
        let e = args(&[]).unwrap_err();
        assert!(e.ends_with(&format!("(set by `public-ip` at {} line 4)", f.display())), "{e}");
        std::fs::write(&f, "lan-tun = \"a0\"\nmax-ports-per-host = \"half\"\n").unwrap();
        let e = args(&[]).unwrap_err();
        assert!(e.contains("line 2: max-ports-per-host:"), "{e}");
        std::fs::write(&f, "lan-tun = \"a0\"\nbogus = 1\n").unwrap();
        let e = args(&[]).unwrap_err();
        assert!(e.contains("line 2: unknown key `bogus`"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
