//! `--config ftpnat.toml`: reading the file, and errors that name the key and the line.
//!
//! Owns: reading the file safely ([`read_text`]: a regular file only, opened without waiting (a FIFO
//! put in its place is refused at once, not waited on), at most [`MAX_BYTES`], UTF-8), loading a flat
//! TOML document into the caller's `Deserialize` type (which denies unknown
//! fields), turning the toml crate's spanned errors into `FILE line N: key: message`, the line of each
//! key (so a later validation error about a key read from the file can point at its line), and the
//! `deserialize_with` helpers for values that are strings on the command line (durations, prefixes,
//! forwards, port ranges, sizes). Must not: know which keys exist (the caller's type does) or merge
//! with flags (main.rs does: flags override the file).

use std::collections::HashMap;
use std::fmt::Display;
use std::io::Read;
use std::ops::RangeInclusive;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::config::{parse_duration, parse_port_range, Forward, PortQuota};

/// A parsed configuration file and where each key was written.
#[derive(Debug)]
pub struct Loaded<T> {
    pub value: T,
    pub path: PathBuf,
    lines: HashMap<String, usize>,
}

impl<T> Loaded<T> {
    /// The 1-based line where `key` is set, if the file sets it.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    /// Points a validation error that starts with a flag (`--udp-timeout: ...`) at the file's line when
    /// the file set that key; other messages are returned as they are.
    pub fn locate(&self, msg: &str) -> String {
        let flag = msg.strip_prefix("--").and_then(|m| m.split([':', ' ']).next()).unwrap_or("");
        match self.line_of(flag) {
            Some(n) => format!("{msg} (set by `{flag}` at {} line {n})", self.path.display()),
            None => msg.to_string(),
        }
    }
}

/// The largest configuration file read. A real one is a few kilobytes; this only stops a mistake (a
/// capture or a log given as `--config`) from being read into memory whole.
pub const MAX_BYTES: u64 = 1 << 20;

/// Reads and parses `path`. The error names the file, the line and the key at fault.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Loaded<T>, String> {
    let text = read_text(path, MAX_BYTES)?;
    parse(path, &text)
}

/// The contents of `path`, which must be a regular file of at most `max` bytes of UTF-8. Opened
/// non-blocking, so a FIFO or a device put in its place is refused at once instead of waited on (a
/// symbolic link to a regular file is fine: configuration is often linked into /etc). The error names
/// the file.
pub fn read_text(path: &Path, max: u64) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(format!("{shown}: is {what}, not a regular file; refusing to read it"));
    }
    let too_big = || format!("{shown}: larger than {max} bytes; refusing to read it as a configuration file");
    if meta.len() > max {
        return Err(too_big());
    }
    // The size can change after the check (and /proc files report 0): the read itself is bounded.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    String::from_utf8(bytes)
        .map_err(|e| format!("{shown}: not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Parses `text` as the contents of `path` (see [`load`]).
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<Loaded<T>, String> {
    let value = toml::from_str::<T>(text).map_err(|e| describe(path, text, &e))?;
    Ok(Loaded { value, path: path.to_path_buf(), lines: key_lines(text) })
}

fn describe(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let Some(span) = e.span() else { return format!("{}: {msg}", path.display()) };
    let at = span.start.min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let msg = match msg.strip_prefix("unknown field `") {
        // serde lists every known field; the example config is a better guide than that list.
        Some(rest) => {
            let key = rest.split('`').next().unwrap_or("");
            let hint = match suggest(key, &known_keys(rest)) {
                Some(k) => format!(" (did you mean `{k}`?)"),
                None => String::new(),
            };
            format!("unknown key `{key}`{hint}; keys are the `ftpnat run` flags without their leading --")
        }
        None => match key_at(text, at) {
            Some(key) => format!("{key}: {msg}"),
            None => msg.to_string(),
        },
    };
    format!("{} line {line}: {msg}", path.display())
}

/// The keys serde lists after the unknown one: "unknown field `x`, expected `a`" or "..., expected one
/// of `a`, `b`, ...".
fn known_keys(rest: &str) -> Vec<&str> {
    let Some((_, list)) = rest.split_once(", expected") else { return Vec::new() };
    list.split('`').skip(1).step_by(2).collect()
}

/// The known key an unknown one was probably meant to be: the same with `-` for `_` and in lower case,
/// else the one closest in spelling (at most two edits, and fewer than half the key). Only keys that
/// exist are ever suggested.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let normal = key.replace('_', "-").to_ascii_lowercase();
    if let Some(k) = known.iter().find(|k| **k == normal) {
        return Some(k);
    }
    let limit = 2.min(normal.len().saturating_sub(1) / 2);
    known
        .iter()
        .map(|k| (edit_distance(&normal, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (keys are short ASCII words, so bytes are characters).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The key of the `key = value` on the line holding byte `at`, or on the nearest line above it (a value
/// spread over several lines, such as an array).
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    text[..line_end].lines().rev().find_map(key_of_line)
}

fn key_of_line(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .then(|| key.to_string())
}

fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(k) = key_of_line(line) {
            out.entry(k).or_insert(i + 1);
        }
    }
    out
}

/// A value given as a string on the command line; in TOML a string (or, where noted, a number).
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Int(i64),
    Float(f64),
}

fn from_str_via<'de, D, T, E>(d: D, parse: impl Fn(&str) -> Result<T, E>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: Display,
{
    let s = String::deserialize(d)?;
    parse(&s).map_err(D::Error::custom)
}

/// `udp-timeout = "5m"` or `udp-timeout = 300` (seconds).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = StrOrNum::deserialize(d)
        .map_err(|_| D::Error::custom("expected a duration: seconds or a string like \"500ms\", \"2m\""))?;
    let s = match v {
        StrOrNum::Str(s) => s,
        StrOrNum::Int(i) => i.to_string(),
        StrOrNum::Float(f) => f.to_string(),
    };
    parse_duration(&s).map(Some).map_err(D::Error::custom)
}

/// `port-range = "20000-29999"`.
pub fn de_opt_port_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RangeInclusive<u16>>, D::Error> {
    from_str_via(d, parse_port_range).map(Some)
}

/// `inside = ["10.0.0.0/24"]` (a single string is accepted too).
pub fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Net>, D::Error> {
    one_or_many(d, |s| {
        s.parse::<Ipv4Net>()
            .map(|n| n.trunc())
            .map_err(|_| format!("'{s}' is not an IPv4 prefix (e.g. 10.0.0.0/24)"))
    })
}

/// `inside6 = ["2001:db8:64::/64"]` (a single string is accepted too).
pub fn de_cidrs6<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::Ipv6Net>, D::Error> {
    one_or_many(d, |s| {
        s.parse::<ipnet::Ipv6Net>()
            .map(|n| n.trunc())
            .map_err(|_| format!("'{s}' is not an IPv6 prefix (e.g. 2001:db8:64::/64)"))
    })
}

/// `nat64-prefix = "64:ff9b::/96"`.
pub fn de_opt_nat64_prefix<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::xlat::Nat64Prefix>, D::Error> {
    from_str_via(d, |s| s.parse::<crate::xlat::Nat64Prefix>()).map(Some)
}

/// `forward = ["tcp:2121=10.0.0.2:21"]` (a single string is accepted too).
pub fn de_forwards<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Forward>, D::Error> {
    one_or_many(d, Forward::from_str)
}

/// `public-ip = "198.51.100.1"` or a list of addresses.
pub fn de_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<std::net::Ipv4Addr>, D::Error> {
    one_or_many(d, |s| s.parse::<std::net::Ipv4Addr>().map_err(|_| format!("'{s}' is not an IPv4 address")))
}

/// `public-pool = ["198.51.100.0/28", "203.0.113.5-203.0.113.9"]` (a single string is accepted too).
pub fn de_pools<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::nat::PoolSpec>, D::Error> {
    one_or_many(d, str::parse::<crate::nat::PoolSpec>)
}

/// `syslog = "udp:192.0.2.9:514"` or `"unix:/dev/log"`.
pub fn de_opt_syslog<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::ops::natlog::SyslogTarget>, D::Error> {
    from_str_via(d, str::parse).map(Some)
}

fn one_or_many<'de, D, T, E>(d: D, parse: impl Fn(&str) -> Result<T, E>) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    E: Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)
        .map_err(|_| D::Error::custom("expected a string or an array of strings"))?
    {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    items.iter().map(|s| parse(s).map_err(D::Error::custom)).collect()
}

/// `max-ports-per-host = 4096` or `"6.25%"` (a share of the port range).
pub fn de_opt_port_quota<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PortQuota>, D::Error> {
    let v = StrOrNum::deserialize(d)
        .map_err(|_| D::Error::custom("expected a number of ports or a string like \"6.25%\""))?;
    let s = match v {
        StrOrNum::Str(s) => s,
        StrOrNum::Int(i) => i.to_string(),
        StrOrNum::Float(_) => {
            return Err(D::Error::custom("a number of ports is whole; a share is a string like \"6.25%\""))
        }
    };
    s.parse::<PortQuota>().map(Some).map_err(D::Error::custom)
}

/// `capture-max-bytes = 100000000` or `"100M"` (K, M, G: powers of 1024; KB, MB, GB: of 1000).
pub fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = StrOrNum::deserialize(d)
        .map_err(|_| D::Error::custom("expected a size: bytes, or a string like \"64M\""))?;
    match v {
        StrOrNum::Str(s) => parse_size(&s).map(Some).map_err(D::Error::custom),
        StrOrNum::Int(i) => {
            u64::try_from(i).map(Some).map_err(|_| D::Error::custom("a size cannot be negative"))
        }
        StrOrNum::Float(_) => Err(D::Error::custom("a size is a whole number of bytes")),
    }
}

/// Parses a byte count: `1000000`, `64K`, `100M`, `1G` (powers of 1024), `100MB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("'{s}' is not a size (e.g. 1000000, 64M, 1G)")),
    };
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 1000000, 64M, 1G)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct T {
        #[serde(default, deserialize_with = "de_opt_duration")]
        udp_timeout: Option<Duration>,
        #[serde(default, deserialize_with = "de_cidrs")]
        inside: Vec<Ipv4Net>,
        #[serde(default, deserialize_with = "de_forwards")]
        forward: Vec<Forward>,
        #[serde(default)]
        max_flows: Option<usize>,
        #[serde(default, deserialize_with = "de_opt_size")]
        capture_max_bytes: Option<u64>,
    }

    fn parse_t(text: &str) -> Result<Loaded<T>, String> {
        parse(Path::new("f.toml"), text)
    }

    #[test]
    fn values_and_lines() {
        let l = parse_t("# c\nudp-timeout = \"2m\"\ninside = \"10.0.0.1/24\"\n\nforward = [\n  \"tcp:1=10.0.0.2:2\",\n]\ncapture-max-bytes = \"1M\"\n").unwrap();
        assert_eq!(l.value.udp_timeout, Some(Duration::from_secs(120)));
        assert_eq!(l.value.inside, ["10.0.0.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(l.value.forward.len(), 1);
        assert_eq!(l.value.capture_max_bytes, Some(1 << 20));
        assert_eq!(l.line_of("forward"), Some(5));
        assert_eq!(l.line_of("udp-timeout"), Some(2));
        assert_eq!(
            l.locate("--forward tcp:1=10.0.0.2:2: bad"),
            "--forward tcp:1=10.0.0.2:2: bad (set by `forward` at f.toml line 5)"
        );
        assert_eq!(l.locate("--max-flows: x"), "--max-flows: x");
        assert_eq!(parse_t("udp-timeout = 90").unwrap().value.udp_timeout, Some(Duration::from_secs(90)));
        assert_eq!(parse_t("max-flows = 3").unwrap().value.max_flows, Some(3));
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = parse_t("max-flows = 3\n\nudp-timeout = \"soon\"\n").unwrap_err();
        assert!(e.starts_with("f.toml line 3: udp-timeout: "), "{e}");
        assert!(e.contains("'soon' is not a duration"), "{e}");
        let e = parse_t("max-flows = \"many\"\n").unwrap_err();
        assert!(e.starts_with("f.toml line 1: max-flows: "), "{e}");
        let e = parse_t("\nmax_flows = 3\n").unwrap_err();
        assert!(e.starts_with("f.toml line 2: unknown key `max_flows` (did you mean `max-flows`?)"), "{e}");
        // Only keys that exist are suggested: `no-such-key` is not one.
        let e = parse_t("no_such_key = 1\n").unwrap_err();
        assert!(e.starts_with("f.toml line 1: unknown key `no_such_key`; keys are"), "{e}");
        let e = parse_t("udp_timout = \"2m\"\n").unwrap_err();
        assert!(e.contains("unknown key `udp_timout` (did you mean `udp-timeout`?)"), "{e}");
        let e = parse_t("Max-Flows = 3\n").unwrap_err();
        assert!(e.contains("(did you mean `max-flows`?)"), "{e}");
        let e = parse_t("xy = 3\n").unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
        let e = parse_t("forward = [\n \"tcp:1=10.0.0.2:2\",\n \"tcp:x\",\n]\n").unwrap_err();
        assert!(e.contains("forward: "), "{e}");
        assert!(e.contains("'tcp:x'"), "{e}");
        let e = parse_t("inside = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(e.starts_with("f.toml line 1: inside: '10.0.0.0/33' is not an IPv4 prefix"), "{e}");
        let e = parse_t("max-flows = 3\nmax-flows = 4\n").unwrap_err();
        assert!(e.starts_with("f.toml line 2"), "{e}");
        let e = parse_t("capture-max-bytes = \"lots\"").unwrap_err();
        assert!(e.contains("capture-max-bytes: 'lots' is not a size"), "{e}");
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = std::env::temp_dir().join(format!("ftpnat-cfgread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ok.toml");
        std::fs::write(&f, "max-flows = 3\n").unwrap();
        assert_eq!(read_text(&f, 100).unwrap(), "max-flows = 3\n");
        let link = dir.join("link.toml");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_text(&link, 100).is_ok(), "a link to a regular file is read");
        let e = read_text(&f, 5).unwrap_err();
        assert!(e.contains("ok.toml: larger than 5 bytes"), "{e}");
        // A FIFO nobody writes to: refused at once (a blocking open would wait here forever).
        let fifo = dir.join("fifo.toml");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_text(&fifo, MAX_BYTES).unwrap_err();
        assert!(e.contains("fifo.toml: is a FIFO, not a regular file"), "{e}");
        let e = read_text(&dir, MAX_BYTES).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let e = read_text(Path::new("/dev/zero"), MAX_BYTES).unwrap_err();
        assert!(e.contains("/dev/zero: is a device"), "{e}");
        std::fs::write(&f, b"a = \"\xff\"\n").unwrap();
        assert!(read_text(&f, 100).unwrap_err().contains("not UTF-8 text (byte 5)"));
        let e = read_text(&dir.join("missing.toml"), 100).unwrap_err();
        assert!(e.contains("missing.toml: cannot read: "), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn suggestions_come_from_the_known_keys() {
        let known = known_keys("x`, expected one of `udp-timeout`, `max-flows`, `inside`");
        assert_eq!(known, ["udp-timeout", "max-flows", "inside"]);
        assert_eq!(known_keys("x`, expected `a-b`"), ["a-b"]);
        assert!(known_keys("x`, there are no fields").is_empty());
        assert_eq!(suggest("udp_timeout", &known), Some("udp-timeout"));
        assert_eq!(suggest("insde", &known), Some("inside"));
        assert_eq!(suggest("no_such_key", &known), None);
        assert_eq!(suggest("a", &["b"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
