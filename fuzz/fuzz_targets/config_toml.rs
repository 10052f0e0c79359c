//! cargo-fuzz target: [`ftpnat_fuzz::config_toml`] (the body and its invariants live in `fuzz/src/ops.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftpnat_fuzz::config_toml(data));
