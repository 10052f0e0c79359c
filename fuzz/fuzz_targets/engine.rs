//! cargo-fuzz target: [`ftpnat_fuzz::engine`] (the body and its invariants live in `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftpnat_fuzz::engine(data));
