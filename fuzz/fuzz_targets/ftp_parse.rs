//! cargo-fuzz target: [`ftpnat_testkit::fuzz::ftp_parse`] (the body and its invariants live in `testkit/src/fuzz/`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftpnat_testkit::fuzz::ftp_parse(data));
