//! `netnat trace` (pure): the rules that mark packets for nftables tracing, the kernel's trace
//! events (NFT_MSG_TRACE messages on nfnetlink's NFNLGRP_NFTRACE group) decoded, and how events
//! become packets (every table and chain each one met, the rules that matched, NAT, the verdict)
//! and one line per connection. The kernel side (adding and removing the chains, listening) is
//! `engine::trace`; this module does no I/O, so all of it is unit-tested with hand-made events.
//!
//! Marking. `meta nftrace set 1` makes the kernel report a packet's way through every chain of
//! every table from then on (iptables-nft's included). netnat adds four base chains to its own
//! table while a trace runs, and removes them when it ends (`TRACE_CHAINS`, all named `trace-*`,
//! never part of netnat's layout: with no trace running, none exists and tracing costs nothing):
//! - `trace-pre` and `trace-out` (prerouting and output, priority -350, before netnat's guard and
//!   iptables' raw table at -300) mark requests by their headers: destination address (or any
//!   local one), protocol, destination port, optionally the source;
//! - `trace-pre-reply` and `trace-out-reply` (priority -199, just after conntrack at -200) mark
//!   replies by their connection: `ct direction reply` and the original destination port. A reply
//!   carries the container's address and port, which a header match on the host port cannot see,
//!   and conntrack is the one place that knows the connection both ways. Chains that run before
//!   conntrack on prerouting (raw, -300) are therefore not shown for replies.

mod catalog;
mod connections;
mod headers;
mod packets;
mod render;
mod spec;

pub use crate::nft::trace::{
    is_trace_chain, parse_event, trace_chains_in, verdict_text, without_trace, CtInfo, Event, EventKind, CHAIN_PREFIX,
    PRIO_TRACE, PRIO_TRACE_REPLY, TRACE_CHAINS, TRACE_MSG_TYPE,
};
pub use catalog::Catalog;
pub use connections::{connections, ConnectionReport};
pub use headers::Headers;
pub use packets::{Collector, Fate, NatStep, PacketReport, RuleHit, Visit};
pub use render::render_packet;
pub use spec::{Direction, TraceSpec};

#[cfg(test)]
mod tests;
