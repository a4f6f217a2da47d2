//! nf_tables tracing: the chains `netnat trace` adds to netnat's table (their layout, and how a
//! live table is read without them) and the kernel's trace events (NFT_MSG_TRACE on
//! NFNLGRP_NFTRACE) decoded.

use super::netlink::{attrs, be32, be64, c_str, message, msg_kind, ne32, NFGENMSG_LEN, NLMSG_HDRLEN};
use super::spec::{BaseSpec, ChainKind, ChainSpec, Hook, PRIO_RAW};
use super::LiveTable;

/// Every chain `netnat trace` adds is named `trace-...`; netnat's layout has none.
pub const CHAIN_PREFIX: &str = "trace-";
/// Before every other chain on its hook: netnat's guard and iptables' raw table run at -300.
pub const PRIO_TRACE: i32 = PRIO_RAW - 50;
/// Just after conntrack (NF_IP_PRI_CONNTRACK, -200): replies are told apart by their connection.
pub const PRIO_TRACE_REPLY: i32 = -199;

const fn chain(name: &'static str, hook: Hook, priority: i32) -> ChainSpec {
    ChainSpec { name, base: Some(BaseSpec { hook, kind: ChainKind::Filter, priority }) }
}

pub const TRACE_CHAINS: [ChainSpec; 4] = [
    chain("trace-pre", Hook::Prerouting, PRIO_TRACE),
    chain("trace-out", Hook::Output, PRIO_TRACE),
    chain("trace-pre-reply", Hook::Prerouting, PRIO_TRACE_REPLY),
    chain("trace-out-reply", Hook::Output, PRIO_TRACE_REPLY),
];

pub fn is_trace_chain(name: &str) -> bool {
    name.starts_with(CHAIN_PREFIX)
}

/// The live table without the chains (and their rules) of a running or killed `netnat trace`,
/// or None when nothing else is left (a table `netnat trace` made for itself).
pub fn without_trace(live: &LiveTable) -> Option<LiveTable> {
    let mut t = live.clone();
    t.chains.retain(|c| !is_trace_chain(&c.name));
    t.rules.retain(|r| !is_trace_chain(&r.chain));
    (!t.chains.is_empty() || !t.sets.is_empty()).then_some(t)
}

/// The names of the trace chains a table holds.
pub fn trace_chains_in(live: &LiveTable) -> Vec<String> {
    live.chains.iter().filter(|c| is_trace_chain(&c.name)).map(|c| c.name.clone()).collect()
}

const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nlmsg_type of a trace event: (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE.
pub const TRACE_MSG_TYPE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_TRACE as u16;

// enum nft_trace_attributes (linux/netfilter/nf_tables.h); the NFTA_TRACE_CT_* ones since Linux 6.14.
pub(crate) const NFTA_TRACE_TABLE: u16 = 1;
pub(crate) const NFTA_TRACE_CHAIN: u16 = 2;
pub(crate) const NFTA_TRACE_RULE_HANDLE: u16 = 3;
pub(crate) const NFTA_TRACE_TYPE: u16 = 4;
pub(crate) const NFTA_TRACE_VERDICT: u16 = 5;
pub(crate) const NFTA_TRACE_ID: u16 = 6;
pub(crate) const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
pub(crate) const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
pub(crate) const NFTA_TRACE_IIF: u16 = 10;
pub(crate) const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
pub(crate) const NFTA_TRACE_NFPROTO: u16 = 15;
pub(crate) const NFTA_TRACE_POLICY: u16 = 16;
pub(crate) const NFTA_TRACE_CT_ID: u16 = 18;
pub(crate) const NFTA_TRACE_CT_DIRECTION: u16 = 19;
const NFTA_TRACE_CT_STATUS: u16 = 20;
pub(crate) const NFTA_TRACE_CT_STATE: u16 = 21;
// enum nft_verdict_attributes
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;

/// What an event reports (enum nft_trace_types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A rule matched; its verdict follows.
    Rule,
    /// The end of a regular chain was reached (an implicit return).
    Return,
    /// The end of a base chain was reached: its policy decides.
    Policy,
    Other(u32),
}

/// The connection a packet belongs to, as the kernel reports it (Linux 6.14 and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtInfo {
    pub state: Option<u32>,
    pub direction: Option<u8>,
    pub id: Option<u32>,
    pub status: Option<u32>,
}

/// One trace event: one rule that matched, one return, or one policy, for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The kernel's id for the packet (a hash of the skb: reused, so packets are told apart
    /// by netnat's marking rule, which is every traced packet's first event).
    pub id: u32,
    /// Netfilter family of the table (NFPROTO_*: 1 inet, 2 ip, 10 ip6, 7 bridge, ...).
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub kind: EventKind,
    pub handle: Option<u64>,
    /// Verdict code and, for jump and goto, the target chain.
    pub verdict: Option<(i32, Option<String>)>,
    pub policy: Option<u32>,
    pub nfproto: Option<u32>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub mark: Option<u32>,
    /// Only in the first event of each base chain a packet enters.
    pub network: Option<Vec<u8>>,
    pub transport: Option<Vec<u8>>,
    pub ct: Option<CtInfo>,
}

/// Decodes one netlink message: Ok(None) when it is not a trace event, an error when it is one
/// that does not hold together (a truncated message, an event without table or chain).
pub fn parse_event(msg: &[u8]) -> Result<Option<Event>, String> {
    if msg.len() < NLMSG_HDRLEN + NFGENMSG_LEN {
        return Err(format!("a netlink message of {} bytes", msg.len()));
    }
    if msg_kind(msg) != Some(TRACE_MSG_TYPE) {
        return Ok(None);
    }
    let m = match message(msg) {
        Ok(m) if m.payload.len() >= NFGENMSG_LEN => m,
        Ok(m) => return Err(format!("a trace event that says it has {} bytes in {}", m.whole.len(), msg.len())),
        Err(e) => return Err(format!("a trace event that says it has {} bytes in {}", e.len, msg.len())),
    };
    let mut ev = Event {
        id: 0,
        family: m.payload[0],
        table: String::new(),
        chain: String::new(),
        kind: EventKind::Other(0),
        handle: None,
        verdict: None,
        policy: None,
        nfproto: None,
        iif: None,
        oif: None,
        mark: None,
        network: None,
        transport: None,
        ct: None,
    };
    for (t, v) in attrs(&m.payload[NFGENMSG_LEN..]) {
        match t {
            NFTA_TRACE_TABLE => ev.table = c_str(v),
            NFTA_TRACE_CHAIN => ev.chain = c_str(v),
            NFTA_TRACE_RULE_HANDLE => ev.handle = be64(v),
            NFTA_TRACE_TYPE => {
                ev.kind = match be32(v) {
                    Some(3) => EventKind::Rule,
                    Some(2) => EventKind::Return,
                    Some(1) => EventKind::Policy,
                    other => EventKind::Other(other.unwrap_or(0)),
                }
            }
            NFTA_TRACE_VERDICT => {
                let mut code = None;
                let mut target = None;
                for (vt, vv) in attrs(v) {
                    match vt {
                        NFTA_VERDICT_CODE => code = be32(vv).map(|c| c as i32),
                        NFTA_VERDICT_CHAIN => target = Some(c_str(vv)),
                        _ => {}
                    }
                }
                ev.verdict = code.map(|c| (c, target));
            }
            // Host order in newer kernels, big-endian in older ones: only compared for equality.
            NFTA_TRACE_ID => ev.id = ne32(v).unwrap_or(0),
            NFTA_TRACE_NETWORK_HEADER => ev.network = Some(v.to_vec()),
            NFTA_TRACE_TRANSPORT_HEADER => ev.transport = Some(v.to_vec()),
            NFTA_TRACE_IIF => ev.iif = be32(v),
            NFTA_TRACE_OIF => ev.oif = be32(v),
            NFTA_TRACE_MARK => ev.mark = be32(v),
            NFTA_TRACE_NFPROTO => ev.nfproto = be32(v),
            NFTA_TRACE_POLICY => ev.policy = be32(v),
            // The kernel puts the id as it is (no byte swap): an opaque number.
            NFTA_TRACE_CT_ID => ev.ct.get_or_insert_default().id = ne32(v),
            NFTA_TRACE_CT_DIRECTION => ev.ct.get_or_insert_default().direction = v.first().copied(),
            NFTA_TRACE_CT_STATUS => ev.ct.get_or_insert_default().status = be32(v),
            NFTA_TRACE_CT_STATE => ev.ct.get_or_insert_default().state = be32(v),
            _ => {}
        }
    }
    if ev.table.is_empty() || ev.chain.is_empty() {
        return Err("a trace event without its table or chain".into());
    }
    Ok(Some(ev))
}

/// A verdict as nft prints it. NF_* codes keep flags in their upper bits (a queue number, an
/// errno with drop), the verdict in the low byte.
pub fn verdict_text(code: i32, target: Option<&str>) -> String {
    let t = target.unwrap_or("?");
    match code {
        -1 => "continue".into(),
        -2 => "break".into(),
        -3 => format!("jump {t}"),
        -4 => format!("goto {t}"),
        -5 => "return".into(),
        c if c >= 0 => match c & 0xff {
            0 => "drop".into(),
            1 => "accept".into(),
            2 => "stolen".into(),
            3 => "queue".into(),
            4 => "repeat".into(),
            v => format!("verdict {v}"),
        },
        c => format!("verdict {c}"),
    }
}

pub(crate) fn terminal(code: i32) -> bool {
    code >= 0 && matches!(code & 0xff, 0..=3)
}
