//! The state file's figures (issue 15): bytes per flow on disk, and the time to save and load a large
//! table. Fills an engine with N UDP flows and F FTP control connections (each with length-changing
//! PORT rewrites in its edit history and a pinhole), then times `Engine::save_state` + writing the
//! file (`io::state_file::save`: encode, fsync, rename) and reading it back (`state_file::load`:
//! checksum, decode, rebuilding the index and the expiry queue). Checks that the loaded engine holds
//! every flow.
//!
//! Owns: nothing the crate uses. Must not: send traffic (packets only go through the in-memory engine).
//!
//! Run: `cargo run --release --example state_size -- [FLOWS] [FTP_SESSIONS] [DIR]` (defaults 250 000,
//! 1 000, the system's temporary directory).

use std::time::Instant as Clock;

use ftpnat::io::state_file::{self, Loaded};
use ftpnat_testkit::scenario::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(250_000, |s| s.parse().expect("FLOWS is a number"));
    let ftp: u32 = args.next().map_or(1_000, |s| s.parse().expect("FTP_SESSIONS is a number"));
    let dir = args.next().map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let mut config = config();
    config.max_flows = (n + ftp) as usize + 1;
    let mut rig = Rig::new(config.clone());
    assert_eq!(fill_udp_flows(&mut rig, n), n, "every UDP flow was created");
    for i in 0..ftp {
        let client = std::net::Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 2) as u8);
        let mut s = Ftp::open_from(&mut rig, client, 20_000 + i as u16, DataPorts::TwoDigits);
        s.round(&mut rig, true);
        s.round(&mut rig, false);
    }
    let m = rig.engine.metrics();
    assert_eq!(m.alg_rewrites_port, u64::from(ftp), "every session's PORT was rewritten");
    let flows = rig.engine.flow_count();
    let pinholes = rig.engine.pinholes().len();
    println!("flows: {flows} ({n} UDP, {ftp} FTP control connections), pinholes: {pinholes}");

    let t = Clock::now();
    let state = rig.engine.save_state();
    let encode = t.elapsed();
    let path = dir.join(format!("ftpnat-state-size-{}.state", std::process::id()));
    let t = Clock::now();
    let bytes = state_file::save(&path, &[state]).expect("the state file is written");
    let write = t.elapsed();
    println!(
        "save: encode {:.1} ms + write/fsync/rename {:.1} ms = {:.1} ms; {bytes} bytes, {:.1} B/flow",
        encode.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3,
        (encode + write).as_secs_f64() * 1e3,
        bytes as f64 / flows as f64
    );
    let t = Clock::now();
    let loaded = state_file::load(&path, &config, 1);
    let load = t.elapsed();
    match loaded {
        Loaded::Engines { engines, .. } => {
            assert_eq!(engines[0].flow_count(), flows, "every flow came back");
            assert_eq!(engines[0].pinholes().len(), pinholes, "every pinhole came back");
            println!("load: read, check, decode and rebuild {:.1} ms", load.as_secs_f64() * 1e3);
        }
        Loaded::Missing => panic!("the file is gone"),
        Loaded::Rejected { why, .. } => panic!("refused: {why}"),
    }
    let _ = std::fs::remove_file(&path);
}
