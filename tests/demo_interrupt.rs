//! `netns-scripts/demo.sh` interrupted as a person at a terminal does it: Ctrl-C sends SIGINT to the
//! whole foreground process group (the script, the check it is running and the ftpnat it started).
//! The demo must stop at once, mid-row, tear everything down and exit 130; before the fix ftpnat
//! stopped, the script went on, reported every later row as FAIL and exited 1.
//!
//! Needs root, vsftpd and the demo's other tools (netns-scripts/deps.sh): without root the test prints
//! `SKIP (needs root + netns)` locally and fails under `CI=true`.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns_support::*;

#[test]
fn ctrl_c_stops_the_demo_at_once_with_130() {
    let test = "ctrl_c_stops_the_demo_at_once_with_130";
    if !netns_available(test) {
        return;
    }
    let (pid, n) = (std::process::id(), 0);
    let ns_lan = format!("ftpnat-d{pid}-{n}-lan");
    let ns_wan = format!("ftpnat-d{pid}-{n}-wan");
    let state = std::env::temp_dir().join(format!("ftpnat-demo-int-{pid}"));
    let env = [
        ("FTPNAT_NS_LAN", ns_lan.clone()),
        ("FTPNAT_NS_WAN", ns_wan.clone()),
        ("FTPNAT_LAN_TUN", format!("fd{pid}x{n}l")),
        ("FTPNAT_WAN_TUN", format!("fd{pid}x{n}w")),
        ("FTPNAT_BIN", env!("CARGO_BIN_EXE_ftpnat").to_string()),
        ("FTPNAT_STATE_DIR", state.display().to_string()),
        ("FTPNAT_SKIP_BUILD", "1".to_string()),
    ];
    // Only ever this test's topology, even when it fails.
    let kill_all = |group: i32| {
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = Command::new("timeout")
            .args(["30"])
            .arg(script("down.sh"))
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .output();
    };
    let mut child = Command::new("bash")
        .arg(script("demo.sh"))
        .envs(env.iter().cloned())
        .env_remove("FTPNAT_FORWARDS")
        .env_remove("FTPNAT_EXTRA_ARGS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, as a terminal's foreground job has: Ctrl-C signals the whole group.
        .process_group(0)
        .spawn()
        .expect("bash demo.sh");
    let group = child.id() as i32;
    let (tx, rx) = mpsc::channel::<String>();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut output = Vec::new();
    // Eight rows done: the FTP rows (RETR and STOR of 50 MiB each through the ALG) are running when
    // Ctrl-C comes, 1.5 s into them (FTPNAT_TEST_INT_DELAY_MS): the old script ran on for minutes then.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut started = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let first_row = line.contains("inbound --forward udp:2053");
                output.push(line);
                if first_row {
                    started = true;
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if !started {
        kill_all(group);
        let _ = child.wait();
        panic!("the demo did not reach its checks:\n{}", output.join("\n"));
    }
    // Into the transfer, not at its first connection.
    std::thread::sleep(Duration::from_millis(
        std::env::var("FTPNAT_TEST_INT_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500),
    ));
    let sent = Instant::now();
    unsafe { libc::kill(-group, libc::SIGINT) };
    // Teardown (down.sh) takes a few seconds; a demo that runs on takes minutes. Bounded either way.
    let status = wait_child(&mut child, Duration::from_secs(60));
    let took = sent.elapsed();
    output.extend(rx.try_iter());
    let out = output.join("\n");
    let Some(status) = status else {
        kill_all(group);
        panic!("demo.sh still running 60 s after SIGINT:\n{out}");
    };
    assert_eq!(status.code(), Some(130), "exit status after SIGINT ({}):\n{out}", describe(&status));
    assert!(!out.contains("FAIL"), "rows reported after the interrupt:\n{out}");
    assert!(!out.contains("rows OK") && !out.contains(" # "), "the demo ran on to its table:\n{out}");
    let rows = out.lines().filter(|l| l.starts_with("  OK ")).count();
    assert!((8..15).contains(&rows), "{rows} rows done:\n{out}");
    assert!(out.contains(&format!("interrupted by SIGINT after {rows} row(s)")), "{out}");
    // Everything torn down: both namespaces gone, ftpnat stopped.
    let list = text(&run_bounded(Duration::from_secs(10), "ip", &["netns", "list"]).stdout);
    assert!(!list.contains(&ns_lan) && !list.contains(&ns_wan), "namespaces left: {list}");
    let status_file = std::fs::read_to_string(state.join("ftpnat.status")).unwrap_or_default();
    assert!(!status_file.is_empty(), "ftpnat's exit was not recorded:\n{out}");
    eprintln!("demo.sh exited 130 {:.1} s after SIGINT", took.as_secs_f64());
    let _ = std::fs::remove_dir_all(&state);
}
