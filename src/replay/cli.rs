//! The `ftpnat replay` command line: a stable contract (other tools call it exactly as documented).
//!
//! Owns: [`ReplayArgs`] (flag names, value syntax, defaults) and [`cli_main`] (argument checks, the run,
//! messages, exit status). Must not: set up logging or parse the top-level command line (`main.rs` does
//! and wires `ftpnat replay` here), or contain replay logic (that is [`crate::replay`]).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;

use super::{run, ReplayError, ReplayFiles, ReplayOptions};
use crate::config::Forward;

/// `ftpnat replay INPUT --inside CIDR... --public-ip IPV4 --lan-out LAN.pcap --wan-out WAN.pcap ...`
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ReplayArgs {
    /// Capture to replay: pcap or pcapng (gzip-compressed is fine)
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// The inside network; repeat for several. IPv4 prefixes are translated, IPv6 prefixes only pick
    /// sides. A bare address means that one host
    #[arg(long = "inside", value_name = "CIDR", required = true, value_parser = parse_inside)]
    pub inside: Vec<IpNet>,
    /// The gateway's outside address
    #[arg(long = "public-ip", value_name = "IPV4")]
    pub public_ip: Ipv4Addr,
    /// Static port forward, e.g. tcp:21=10.0.0.2:21 for an inside FTP server; repeatable
    #[arg(long = "forward", value_name = "tcp:PUBLICPORT=INSIDEIP:PORT")]
    pub forward: Vec<Forward>,
    /// Port the FTP server listens on (for a forwarded inside server: its inside port); repeatable
    #[arg(long = "ftp-port", value_name = "N", default_value = "21")]
    pub ftp_port: Vec<u16>,
    /// Where the packets the gateway emits towards the LAN are written
    #[arg(long = "lan-out", value_name = "LAN.pcap")]
    pub lan_out: PathBuf,
    /// Where the packets the gateway emits towards the WAN are written
    #[arg(long = "wan-out", value_name = "WAN.pcap")]
    pub wan_out: PathBuf,
    /// Write the summary JSON here (default: standard output)
    #[arg(long = "summary", value_name = "SUMMARY.json")]
    pub summary: Option<PathBuf>,
    /// Keep the input's link-layer framing instead of writing raw IP (LINKTYPE_RAW)
    #[arg(long = "keep-link-layer")]
    pub keep_link_layer: bool,
    /// Feed input checksums as they are instead of repairing wrong ones
    #[arg(long = "trust-input-checksums")]
    pub trust_input_checksums: bool,
    /// NAT64 (README "NAT64"): IPv6 packets from an IPv6 --inside prefix to this RFC 6052 prefix go
    /// through the gateway's NAT64; recorded IPv6 answers are emulated as the IPv4 server's
    #[arg(long = "nat64-prefix", value_name = "PREFIX", value_parser = |s: &str| s.parse::<crate::xlat::Nat64Prefix>())]
    pub nat64_prefix: Option<crate::xlat::Nat64Prefix>,
    /// Replay with N engines on N threads, each packet to the engine the gateway's `--workers N` would
    /// give it (each engine hands out its own slice of the ports). The outputs depend on N only, never
    /// on the threads' timing; 1 (the default) is the one-engine replay
    #[arg(long = "workers", value_name = "N", default_value = "1", allow_negative_numbers = true)]
    pub workers: u16,
    /// A test of `ftpnat run --state-file`: every N frames, save the engine's state and continue with
    /// an engine restored from it. The outputs must not change
    #[arg(long = "restart-every", value_name = "N", hide = true)]
    pub restart_every: Option<u32>,
}

/// `10.0.0.0/24`, `2001:db8::/64`, or a bare address (a /32 or /128).
fn parse_inside(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    match s.parse::<IpAddr>() {
        Ok(a) => Ok(IpNet::from(a)),
        Err(_) => Err(format!("'{s}' is not a prefix (e.g. 10.0.0.0/24, 2001:db8::/64) or an address")),
    }
}

impl ReplayArgs {
    pub fn options(&self) -> ReplayOptions {
        ReplayOptions {
            inside: self.inside.clone(),
            public_ip: self.public_ip,
            forwards: self.forward.clone(),
            ftp_ports: self.ftp_port.clone(),
            keep_link_layer: self.keep_link_layer,
            trust_input_checksums: self.trust_input_checksums,
            nat64_prefix: self.nat64_prefix,
            restart_every: self.restart_every,
        }
    }

    pub fn files(&self) -> ReplayFiles {
        ReplayFiles {
            input: self.input.clone(),
            lan_out: self.lan_out.clone(),
            wan_out: self.wan_out.clone(),
            summary: self.summary.clone(),
        }
    }
}

/// Parses `ftpnat replay` arguments (without the program and subcommand names), for tests and tools
/// that keep argument lists in files.
pub fn parse_args<I, T>(args: I) -> Result<ReplayArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    #[derive(clap::Parser)]
    #[command(name = "ftpnat replay")]
    struct Wrapper {
        #[command(flatten)]
        args: ReplayArgs,
    }
    let argv = std::iter::once(OsString::from("ftpnat replay")).chain(args.into_iter().map(Into::into));
    <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.args)
}

/// Runs `ftpnat replay`. Exit status 0 when the replay ran (whatever the gateway dropped); 2 for a bad
/// argument, 1 when the input cannot be read (to its end: then the summary, marked incomplete, is still
/// written or printed) or an output cannot be written, with a message on stderr naming the problem.
pub fn cli_main(args: ReplayArgs) -> ExitCode {
    let result = match args.workers {
        1 => run(&args.options(), &args.files()),
        n => super::run_sharded(&args.options(), &args.files(), n, super::Schedule::Threads),
    };
    match result {
        Ok(summary) => {
            if args.summary.is_none() {
                let text = serde_json::to_string_pretty(&summary.to_json()).expect("JSON of integers");
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let (ReplayError::Incomplete { summary, .. }, None) = (&e, &args.summary) {
                let text = serde_json::to_string_pretty(&summary.to_json()).expect("JSON of integers");
                println!("{text}");
            }
            eprintln!("ftpnat: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_flags_parse() {
        let a = parse_args([
            "in.pcap",
            "--inside",
            "10.0.0.0/24",
            "--inside",
            "2001:db8::/64",
            "--inside",
            "10.1.0.7",
            "--public-ip",
            "203.0.113.1",
            "--forward",
            "tcp:2121=10.0.0.2:21",
            "--ftp-port",
            "21",
            "--ftp-port",
            "2121",
            "--lan-out",
            "lan.pcap",
            "--wan-out",
            "wan.pcap",
            "--summary",
            "s.json",
            "--keep-link-layer",
            "--trust-input-checksums",
        ])
        .unwrap();
        assert_eq!(a.inside.len(), 3);
        assert_eq!(a.inside[2], "10.1.0.7/32".parse::<IpNet>().unwrap());
        assert_eq!(a.ftp_port, vec![21, 2121]);
        assert!(a.keep_link_layer && a.trust_input_checksums);
        let o = a.options();
        assert_eq!(o.forwards[0].public_port, 2121);
        assert!(o.config().is_ok());
    }

    #[test]
    fn defaults_and_errors() {
        let base = ["in.pcap", "--inside", "10.0.0.0/24", "--public-ip", "203.0.113.1"];
        let mut ok = base.to_vec();
        ok.extend(["--lan-out", "l", "--wan-out", "w"]);
        let a = parse_args(ok.clone()).unwrap();
        assert_eq!(a.ftp_port, vec![21]);
        assert_eq!(a.workers, 1, "one engine unless asked");
        assert_eq!(a.summary, None);
        assert!(parse_args(base).is_err(), "outputs are required");
        let mut bad = ok.clone();
        bad.extend(["--inside", "10.0.0.0/33"]);
        assert!(parse_args(bad).is_err());
        let mut bad = ok.clone();
        bad.extend(["--forward", "tcp:21"]);
        assert!(parse_args(bad).is_err());
        // The public address inside the inside network is caught by validation, naming the flag.
        let mut clash = ok.clone();
        clash[4] = "10.0.0.9";
        let err = parse_args(clash).unwrap().options().config().unwrap_err();
        assert!(err.starts_with("--public-ip"), "{err}");
    }
}
