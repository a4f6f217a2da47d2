//! netnat: container networks on Linux with in-kernel NAT.
pub mod conntrack;
pub mod link;
