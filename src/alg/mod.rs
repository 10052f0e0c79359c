//! The ALG boundary: application-level gateways look at control-connection payload.
//!
//! Owns: nothing yet but the FTP ALG. Must not: touch packet headers or sequence numbers directly.
pub mod ftp;
