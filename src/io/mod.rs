//! placeholder
pub mod pcap;
