//! cargo-fuzz target: [`ftpnat_testkit::fuzz::engine_restart`] (the body and its invariants live in `testkit/src/fuzz/mod.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftpnat_testkit::fuzz::engine_restart(data));
