//! cargo-fuzz target: [`ftpnat_testkit::fuzz::control_request`] (the body and its invariants live in `testkit/src/fuzz/ops.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftpnat_testkit::fuzz::control_request(data));
