//! The FTP ALG (RFC 959, RFC 1123 §4.1.2.6, RFC 2428).
//!
//! Owns: FTP's meaning — [`parse`] (lines ↔ address/port spans), [`rfc6384`] (the NAT64 lines of
//! RFC 6384: EPSV→PASV, 227→229, EPRT→PORT, ALGS, LPRT/LPSV), [`control`] (the ALG proper: commands
//! waiting for replies, FTP's checks, TLS opacity; pure, it returns findings), [`framer`] (where lines
//! start and end, which ones are candidates, TLS record walks), [`session`] (the framers and the ALG of
//! one connection). Holding, splicing and sequence numbers are the generic stream layer's
//! ([`crate::stream`]).
//! Must not: edit packet headers, allocate ports, open pinholes, count or log its findings itself
//! ([`crate::alg::apply`] does, from [`crate::alg::finding`]s).

pub mod control;
pub mod framer;
pub mod parse;
pub mod rfc6384;
pub mod session;

pub use session::FtpSession;

#[cfg(test)]
mod boundary {
    /// The ALG proper is pure (issue 13): no NAT, metrics, event queue or pinhole table reaches it.
    #[test]
    fn the_alg_proper_holds_no_gateway_state() {
        let files = [
            ("control.rs", include_str!("control.rs")),
            ("parse.rs", include_str!("parse.rs")),
            ("rfc6384.rs", include_str!("rfc6384.rs")),
        ];
        let banned = ["crate::nat", "metrics::Metrics", "events::Events", "Pinholes", "AlgCtx", "tracing::"];
        for (name, src) in files {
            for b in banned {
                assert!(!src.contains(b), "{name} uses {b}");
            }
        }
    }
}
