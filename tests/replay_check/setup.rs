//! The replay's setup, as the checker knows it (part of the replay checker, see `mod.rs`).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

#[derive(Clone, Debug)]
pub struct Setup {
    pub inside: Vec<IpNet>,
    pub public_ip: Ipv4Addr,
    /// (public port, inside address, inside port), TCP.
    pub forwards: Vec<(u16, Ipv4Addr, u16)>,
    pub ftp_ports: Vec<u16>,
}

impl Setup {
    pub fn is_inside(&self, a: IpAddr) -> bool {
        self.inside.iter().any(|n| n.contains(&a))
    }
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for n in &self.inside {
            v.push("--inside".into());
            v.push(n.to_string());
        }
        v.push("--public-ip".into());
        v.push(self.public_ip.to_string());
        for (pp, a, p) in &self.forwards {
            v.push("--forward".into());
            v.push(format!("tcp:{pp}={a}:{p}"));
        }
        for p in &self.ftp_ports {
            v.push("--ftp-port".into());
            v.push(p.to_string());
        }
        v
    }
    /// Reads the setup back from replay arguments (the `args` file of a case).
    pub fn from_args(args: &[String]) -> Setup {
        let mut s =
            Setup { inside: vec![], public_ip: Ipv4Addr::UNSPECIFIED, forwards: vec![], ftp_ports: vec![] };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().unwrap_or_default();
            match a.as_str() {
                "--inside" => {
                    let v = val();
                    let n = v
                        .parse::<IpNet>()
                        .unwrap_or_else(|_| IpNet::from(v.parse::<IpAddr>().expect("inside")));
                    s.inside.push(n);
                }
                "--public-ip" => s.public_ip = val().parse().expect("public ip"),
                "--forward" => {
                    let v = val();
                    let rest = v.strip_prefix("tcp:").expect("tcp forward");
                    let (pp, inside) = rest.split_once('=').expect("forward");
                    let (a, p) = inside.rsplit_once(':').expect("forward");
                    s.forwards.push((pp.parse().unwrap(), a.parse().unwrap(), p.parse().unwrap()));
                }
                "--ftp-port" => s.ftp_ports.push(val().parse().expect("ftp port")),
                _ => {}
            }
        }
        if s.ftp_ports.is_empty() {
            s.ftp_ports.push(21);
        }
        s
    }
}
