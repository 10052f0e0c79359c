//! The FTP ALG.
pub mod parse;
