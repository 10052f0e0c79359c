//! The state file of `ftpnat run --state-file PATH` (issue 15): the engines' state written at the stop
//! and read back at the next start, so that a restart keeps every flow, mapping, pinhole and FTP
//! rewrite in force.
//!
//! Owns: the file's layout (header, one section per engine, checksum; `docs/STATE.md` documents it),
//! writing it atomically (a temporary file in the same directory, fsync, rename, fsync of the
//! directory), reading and classifying a bad one ([`Rejected`]), and what happens to the file after a
//! start (deleted once loaded; a rejected one kept aside as `PATH.rejected`). Must not: decide what
//! an engine's state holds or whether it matches the configuration (the core's
//! [`Engine::save_state`] and [`Engine::restore`] do), or log (the caller does, with the reason).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::{Config, Shard};
use crate::engine::{Engine, RestoreError};

/// The first eight bytes of every state file.
pub const MAGIC: &[u8; 8] = b"FTPNATSF";
/// The layout of the sections (the engine state's encoding): bumped whenever an encoded type
/// changes, so that a file of another version is refused rather than misread.
pub const VERSION: u16 = 1;
/// Magic, version, flags, header length, total length, saved-at, engine count.
const HEADER: usize = 8 + 2 + 2 + 4 + 8 + 8 + 4;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Why a state file was not used. Every one means an empty start, never a failed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// It exists but cannot be read (permissions, I/O error).
    Unreadable(String),
    /// Not a state file (another magic).
    Foreign,
    /// A state file of another format version.
    Version(u16),
    /// Shorter than its header says: the write or a copy was cut.
    Truncated { have: u64, want: u64 },
    /// The checksum or the decoding failed.
    Corrupt(String),
    /// Saved under another configuration (addresses, prefixes, port range, workers...).
    Mismatch(String),
}

impl Rejected {
    /// The `reason` field of the log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Unreadable(_) => "unreadable",
            Rejected::Foreign => "foreign",
            Rejected::Version(_) => "version",
            Rejected::Truncated { .. } => "truncated",
            Rejected::Corrupt(_) => "corrupt",
            Rejected::Mismatch(_) => "mismatch",
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Unreadable(e) => write!(f, "cannot read it: {e}"),
            Rejected::Foreign => write!(f, "not an ftpnat state file (no {:?} magic)", "FTPNATSF"),
            Rejected::Version(v) => write!(f, "format version {v}; this ftpnat reads version {VERSION}"),
            Rejected::Truncated { have, want } => write!(f, "truncated: {have} bytes of {want}"),
            Rejected::Corrupt(e) => write!(f, "corrupt: {e}"),
            Rejected::Mismatch(e) => write!(f, "saved under another configuration: {e}"),
        }
    }
}

/// What a start found at the state file's path.
pub enum Loaded {
    /// No file: an empty start.
    Missing,
    /// One engine per worker, in worker order; `age_secs`: since the save (wall clock, for the log);
    /// `refused`: forwards the new configuration adds that could not be taken.
    Engines { engines: Vec<Engine>, age_secs: f64, refused: Vec<String> },
    /// A file that was not used; `kept_as`: where it was moved aside (`PATH.rejected`), `None` when it
    /// could not be moved (it stays where it is).
    Rejected { why: Rejected, kept_as: Option<PathBuf> },
}

/// The file's bytes for these engine states (worker order).
pub fn encode(states: &[Vec<u8>], saved_at_us: u64) -> Vec<u8> {
    let total = HEADER + states.iter().map(|s| 8 + s.len()).sum::<usize>() + 4;
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(HEADER as u32).to_le_bytes());
    b.extend_from_slice(&(total as u64).to_le_bytes());
    b.extend_from_slice(&saved_at_us.to_le_bytes());
    b.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for s in states {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s);
    }
    let crc = CRC.checksum(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// The engine sections of a file's bytes and its save time, or why not.
pub fn decode(b: &[u8]) -> Result<(Vec<&[u8]>, u64), Rejected> {
    // A prefix of the magic (nothing at all included) is a cut state file; other bytes are not ours.
    if b.len() < 8 {
        return Err(if MAGIC.starts_with(b) {
            Rejected::Truncated { have: b.len() as u64, want: HEADER as u64 }
        } else {
            Rejected::Foreign
        });
    }
    if &b[..8] != MAGIC {
        return Err(Rejected::Foreign);
    }
    if b.len() < 10 {
        return Err(Rejected::Truncated { have: b.len() as u64, want: HEADER as u64 });
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != VERSION {
        return Err(Rejected::Version(version));
    }
    if b.len() < HEADER {
        return Err(Rejected::Truncated { have: b.len() as u64, want: HEADER as u64 });
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let header = u32_at(12) as usize;
    let total = u64_at(16);
    if (b.len() as u64) < total {
        return Err(Rejected::Truncated { have: b.len() as u64, want: total });
    }
    if (b.len() as u64) > total || header < HEADER || total < (header + 4) as u64 {
        return Err(Rejected::Corrupt(format!("{} bytes where the header says {total}", b.len())));
    }
    let body = &b[..b.len() - 4];
    let crc = u32::from_le_bytes(b[b.len() - 4..].try_into().expect("4 bytes"));
    if CRC.checksum(body) != crc {
        return Err(Rejected::Corrupt("checksum mismatch".into()));
    }
    let saved_at = u64_at(24);
    let count = u32_at(32) as usize;
    let mut at = header;
    let mut out = Vec::new();
    for i in 0..count {
        let len = body
            .get(at..at + 8)
            .map(|l| u64::from_le_bytes(l.try_into().expect("8 bytes")))
            .ok_or_else(|| Rejected::Corrupt(format!("engine {i}: no length")))?;
        let end = usize::try_from(len).ok().and_then(|l| (at + 8).checked_add(l));
        let section = end
            .and_then(|e| body.get(at + 8..e))
            .ok_or_else(|| Rejected::Corrupt(format!("engine {i}: {len} bytes past the end")))?;
        out.push(section);
        at += 8 + section.len();
    }
    if at != body.len() {
        return Err(Rejected::Corrupt(format!("{} bytes after the last engine", body.len() - at)));
    }
    Ok((out, saved_at))
}

/// Writes `states` to `path` atomically: whatever happens, `path` holds the old file or the new one.
pub fn save(path: &Path, states: &[Vec<u8>]) -> io::Result<u64> {
    let bytes = encode(states, wall_us());
    let tmp = sibling(path, ".tmp");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is.
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(bytes.len() as u64)
}

/// Whether the stop will be able to write `path`: its temporary file is created and removed. Checked
/// at the start, so that a state directory that is missing or read-only is reported while the
/// operator is watching, not discovered at the stop.
pub fn writable(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Err(io::Error::other("it is a directory"));
    }
    let tmp = sibling(path, ".tmp");
    fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    fs::remove_file(&tmp)
}

/// Reads `path` for a gateway of `workers` engines under `config`. A file that was used is deleted
/// (a crash after this start must not bring back this state); one that was not is moved aside to
/// `PATH.rejected` for the operator to look at.
pub fn load(path: &Path, config: &Config, workers: u16) -> Loaded {
    let r = match fs::read(path) {
        Ok(bytes) => restore(&bytes, config, workers),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => Err(Rejected::Unreadable(e.to_string())),
    };
    match r {
        Ok((engines, saved_at, refused)) => {
            let _ = fs::remove_file(path);
            let age_secs = wall_us().saturating_sub(saved_at) as f64 / 1e6;
            Loaded::Engines { engines, age_secs, refused }
        }
        Err(why) => {
            // Out of the way of the next save (a directory there would make it fail), if it can be.
            let aside = sibling(path, ".rejected");
            let kept_as = fs::rename(path, &aside).ok().map(|_| aside);
            Loaded::Rejected { why, kept_as }
        }
    }
}

/// The engines of a file's bytes, one per worker.
pub fn restore(
    bytes: &[u8],
    config: &Config,
    workers: u16,
) -> Result<(Vec<Engine>, u64, Vec<String>), Rejected> {
    let (sections, saved_at) = decode(bytes)?;
    if sections.len() != usize::from(workers.max(1)) {
        return Err(Rejected::Mismatch(format!(
            "--workers: {} in the state, {} running",
            sections.len(),
            workers.max(1)
        )));
    }
    let shards: Vec<Config> = if sections.len() == 1 {
        vec![config.clone()]
    } else {
        Shard::all(workers).map(|s| config.for_shard(s)).collect()
    };
    let mut engines = Vec::new();
    let mut refused = Vec::new();
    for (section, cfg) in sections.into_iter().zip(shards) {
        match Engine::restore(cfg, section) {
            Ok((e, r)) => {
                engines.push(e);
                if refused.is_empty() {
                    refused = r;
                }
            }
            Err(RestoreError::Corrupt(e)) => return Err(Rejected::Corrupt(e)),
            Err(RestoreError::Mismatch(e)) => return Err(Rejected::Mismatch(e)),
        }
    }
    Ok((engines, saved_at, refused))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(vec!["10.0.0.0/24".parse().unwrap()], "198.51.100.1".parse().unwrap())
    }

    #[test]
    fn a_missing_directory_is_reported_before_the_stop() {
        let dir = tempdir("writable");
        assert!(writable(&dir.join("state")).is_ok());
        assert!(!dir.join("state.tmp").exists(), "the probe leaves nothing");
        assert!(writable(&dir.join("missing/state")).is_err());
    }

    #[test]
    fn a_saved_file_loads_back_and_is_deleted() {
        let dir = tempdir("load");
        let path = dir.join("state");
        let engines = [Engine::new(config())];
        let states: Vec<Vec<u8>> = engines.iter().map(Engine::save_state).collect();
        save(&path, &states).unwrap();
        assert!(!sibling(&path, ".tmp").exists(), "the temporary file is renamed");
        match load(&path, &config(), 1) {
            Loaded::Engines { engines, refused, .. } => {
                assert_eq!(engines.len(), 1);
                assert!(refused.is_empty());
            }
            _ => panic!("not loaded"),
        }
        assert!(!path.exists(), "a loaded file is deleted");
        assert!(matches!(load(&path, &config(), 1), Loaded::Missing));
    }

    /// Each kind of bad file is named by its reason, moved aside, and means an empty start.
    #[test]
    fn bad_files_are_refused_by_reason() {
        let good = encode(&[Engine::new(config()).save_state()], 1);
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        let mut version = good.clone();
        version[8..10].copy_from_slice(&0xffffu16.to_le_bytes());
        let other = Config::new(vec!["10.0.0.0/24".parse().unwrap()], "198.51.100.9".parse().unwrap());
        let cases: Vec<(&str, Vec<u8>, Config, u16)> = vec![
            ("corrupt", flipped, config(), 1),
            ("truncated", good[..good.len() / 2].to_vec(), config(), 1),
            ("truncated", good[..5].to_vec(), config(), 1),
            ("foreign", b"#!/bin/sh\necho not a state file\n".to_vec(), config(), 1),
            ("truncated", Vec::new(), config(), 1),
            ("version", version, config(), 1),
            ("mismatch", good.clone(), other, 1),
            ("mismatch", good.clone(), config(), 2),
        ];
        let dir = tempdir("bad");
        for (i, (reason, bytes, cfg, workers)) in cases.into_iter().enumerate() {
            let path = dir.join(format!("state{i}"));
            fs::write(&path, &bytes).unwrap();
            match load(&path, &cfg, workers) {
                Loaded::Rejected { why, kept_as } => {
                    assert_eq!(why.reason(), reason, "case {i}: {why}");
                    assert_eq!(kept_as, Some(sibling(&path, ".rejected")), "case {i}");
                }
                _ => panic!("case {i} ({reason}) was not rejected"),
            }
            assert!(!path.exists() && sibling(&path, ".rejected").exists(), "case {i} moved aside");
        }
        // A directory where the file should be: unreadable, moved aside, and the next save succeeds.
        let path = dir.join("a-directory");
        fs::create_dir(&path).unwrap();
        assert!(writable(&path).is_err(), "a directory cannot be saved over");
        match load(&path, &config(), 1) {
            Loaded::Rejected { why, kept_as } => {
                assert_eq!(why.reason(), "unreadable");
                assert!(kept_as.is_some_and(|k| k.is_dir()));
            }
            _ => panic!("a directory was not rejected"),
        }
        save(&path, &[Engine::new(config()).save_state()]).expect("saved once the directory is aside");
    }

    /// No cut and no single flipped byte of a real file loads, or panics.
    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let good = encode(&[Engine::new(config()).save_state()], 1);
        for cut in 0..good.len() {
            assert!(restore(&good[..cut], &config(), 1).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert!(restore(&b, &config(), 1).is_err(), "byte {i} flipped");
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ftpnat-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
