//! The FTP ALG (RFC 959, RFC 1123 §4.1.2.6, RFC 2428).
//!
//! Owns: FTP's meaning — [`parse`] (lines ↔ address/port spans), [`rfc6384`] (the NAT64 lines of
//! RFC 6384: EPSV→PASV, 227→229, EPRT→PORT, ALGS, LPRT/LPSV), [`framer`] (where lines start and
//! end, which ones are candidates, TLS record walks), [`session`] (commands waiting for replies, policy,
//! TLS opacity). Holding, splicing and sequence numbers are the generic stream layer's
//! ([`crate::stream`]).
//! Must not: edit packet headers or allocate ports itself (it asks [`crate::alg::Pinholes`]).

pub mod framer;
pub mod parse;
pub mod rfc6384;
pub mod session;

pub use session::FtpSession;
