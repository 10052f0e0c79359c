//! The NAT log collector as tests drive it: `netns-scripts/natlog-collector.py` (IPFIX and syslog
//! decoders written from RFC 7011/8158/5424, independent of ftpnat's encoders) on loopback, its
//! decoded records read back as JSON lines. Killed (by its own pid) and its files removed on drop
//! (`FTPNAT_KEEP=1` keeps them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use serde_json::Value;

#[allow(dead_code)] // each test that includes this module reads some of the fields
pub struct Collector {
    child: Child,
    pub out: PathBuf,
    /// Every IPFIX datagram, for tshark.
    pub pcap: PathBuf,
    pub ipfix: u16,
    pub syslog: u16,
    /// Its Unix syslog socket.
    pub unix: PathBuf,
    /// Its own directory (free for the test's other files).
    pub dir: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // FTPNAT_KEEP=1 keeps the decoded lines and the pcap for a look with tshark -V.
        if std::env::var_os("FTPNAT_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts a collector named for the test (its directory is unique per process and name).
pub fn collector(name: &str) -> Collector {
    let dir = std::env::temp_dir().join(format!("ftpnat-natlog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (out, pcap, unix) = (dir.join("out.jsonl"), dir.join("ipfix.pcap"), dir.join("syslog.sock"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("netns-scripts/natlog-collector.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--ipfix-port", "0", "--syslog-port", "0", "--seconds", "300"])
        .arg("--unix")
        .arg(&unix)
        .arg("--out")
        .arg(&out)
        .arg("--pcap")
        .arg(&pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the collector");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let ports: Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("collector said {first:?}: {e}"));
    Collector {
        child,
        out,
        pcap,
        ipfix: ports["ipfix"].as_u64().unwrap() as u16,
        syslog: ports["syslog"].as_u64().unwrap() as u16,
        unix,
        dir,
    }
}

impl Collector {
    /// Every line decoded so far.
    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) until `n` lines of `kind` arrived.
    #[allow(dead_code)] // not every test that includes this module waits by count
    pub fn wait(&self, kind: &str, n: usize) -> Vec<Value> {
        let deadline = StdInstant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Value> = self.lines().into_iter().filter(|v| v["type"] == kind).collect();
            if got.len() >= n || StdInstant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
