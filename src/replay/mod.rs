//! placeholder
pub mod link;
