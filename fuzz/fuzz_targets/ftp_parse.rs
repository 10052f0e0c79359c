//! cargo-fuzz target: [`ftpnat_fuzz::ftp_parse`] (the body and its invariants live in `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftpnat_fuzz::ftp_parse(data));
