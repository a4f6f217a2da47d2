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

use crate::model::{ip_bits, ip_from_bits, range_text, Family, HostPorts, InputError, Mapping, Proto, Subnet};
use crate::nft::expr::{self, CmpOp, Expr, *};
use crate::nft::spec::{BaseSpec, ChainKind, ChainSpec, Hook, RuleSpec, PRIO_RAW};
use crate::nft::{LiveChain, LiveRule, LiveTable};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

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

/// Which way a packet goes in its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the client to the port (the request).
    Original,
    /// From the server back to the client.
    Reply,
}

impl Direction {
    /// The direction a trace chain marks.
    fn of_chain(name: &str) -> Direction {
        if name.ends_with("-reply") {
            Direction::Reply
        } else {
            Direction::Original
        }
    }
}

// ---- what to trace ----

/// What `netnat trace [HOSTIP:]HOSTPORT[-END][/PROTO] [--from CIDR]` marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpec {
    pub protocol: Proto,
    /// One destination address; None: every local address.
    pub host_ip: Option<IpAddr>,
    /// The one family traced (from the address, `0.0.0.0`/`[::]`, or `--from`); None: both.
    pub family: Option<Family>,
    pub port: u16,
    pub port_end: u16,
    pub from: Option<Subnet>,
}

impl TraceSpec {
    /// Parses the target and `--from`; bad input is an `InputError` naming the value.
    pub fn parse(target: &str, from: Option<&str>) -> Result<TraceSpec, InputError> {
        let h: HostPorts = target.parse()?;
        let from = from.map(parse_source).transpose()?;
        let mut family = h.host_ip.map(Family::of);
        let host_ip = h.host_ip.filter(|ip| !ip.is_unspecified());
        if let Some(s) = &from {
            if family.is_some_and(|f| f != s.family()) {
                return Err(InputError(format!(
                    "--from {s} is {} but {target} is {}: a connection has one address family",
                    s.family(),
                    family.map(Family::name).unwrap_or_default()
                )));
            }
            family = Some(s.family());
        }
        Ok(TraceSpec { protocol: h.protocol, host_ip, family, port: h.host_port, port_end: h.host_port_end, from })
    }

    /// `tcp port 9090 on every local address`, `udp ports 5000-5010 on 198.51.100.1 from 10.0.0.0/8`.
    pub fn describe(&self) -> String {
        let ports = if self.port == self.port_end { "port" } else { "ports" };
        let on = match (self.host_ip, self.family) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(f)) => format!("every local {f} address"),
            (None, None) => "every local address".into(),
        };
        let from = self.from.map(|s| format!(" from {s}")).unwrap_or_default();
        format!("{} {ports} {} on {on}{from}", self.protocol, range_text(self.port, self.port_end))
    }

    /// Whether a published mapping is on the traced port (for saying what is published there).
    pub fn covers(&self, m: &Mapping) -> bool {
        m.protocol == self.protocol
            && m.host_port <= self.port_end
            && self.port <= m.host_port_end
            && self.family.is_none_or(|f| f == m.family())
            && match (self.host_ip, m.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    fn nfprotos(&self) -> Option<u8> {
        self.family.map(|f| if f == Family::V6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 })
    }

    /// `th dport P` or `th dport >= A th dport <= B` (big-endian bytes compare as numbers).
    fn match_ports(&self, load: Expr) -> Vec<Expr> {
        let (a, b) = (self.port.to_be_bytes(), self.port_end.to_be_bytes());
        if self.port == self.port_end {
            vec![load, cmp(REG_1, CmpOp::Eq, a)]
        } else {
            vec![load, cmp(REG_1, CmpOp::Gte, a), cmp(REG_1, CmpOp::Lte, b)]
        }
    }

    /// Requests, by their headers: `[meta nfproto F] (ip daddr A | fib daddr type local)
    /// [ip saddr S] meta l4proto P th dport N meta nftrace set 1`.
    fn request_rule(&self, chain: &'static str) -> RuleSpec {
        let mut v = vec![];
        let nf = self.nfprotos();
        if let Some(n) = nf {
            v.extend(match_nfproto(n));
        }
        match self.host_ip {
            Some(ip) => v.extend(match_prefix(load_daddr(nfproto_of(ip), REG_1), ip, full_prefix(ip))),
            None => v.extend(match_daddr_local()),
        }
        if let Some(s) = self.from {
            v.extend(match_prefix(load_saddr(nfproto_of(s.addr), REG_1), s.addr, s.prefix));
        }
        v.extend([load_meta(META_L4PROTO, REG_1), cmp(REG_1, CmpOp::Eq, [self.protocol.number()])]);
        v.extend(self.match_ports(load_th_dport(REG_1)));
        v.extend(set_nftrace());
        RuleSpec { chain, exprs: v, comment: format!("netnat trace: {}", self.describe()) }
    }

    /// Replies, by their connection: `ct direction reply (ct original ip daddr A | ct status
    /// dnat) [ct original ip saddr S] ct original protocol P ct original proto-dst N meta nftrace
    /// set 1`. Without an address, a reply arriving from outside (prerouting) belongs to a DNAT'd
    /// connection (the host's own connections out to port N are left alone); one sent by the
    /// host (output) answers a connection to a local port.
    fn reply_rule(&self, chain: &'static str, from_outside: bool) -> RuleSpec {
        let mut v = vec![Expr::Ct { key: CT_DIRECTION, dreg: REG_1, dir: None }, cmp(REG_1, CmpOp::Eq, [CT_DIR_REPLY])];
        match self.host_ip {
            Some(ip) => v.extend(match_prefix(load_ct_original_addr(nfproto_of(ip), true, REG_1), ip, full_prefix(ip))),
            None if from_outside => v.extend(match_ct_bits(CT_STATUS, CT_STATUS_DNAT)),
            None => {}
        }
        if let Some(s) = self.from {
            v.extend(match_prefix(load_ct_original_addr(nfproto_of(s.addr), false, REG_1), s.addr, s.prefix));
        }
        v.extend([load_ct_original(CT_PROTOCOL, REG_1), cmp(REG_1, CmpOp::Eq, [self.protocol.number()])]);
        v.extend(self.match_ports(load_ct_original(CT_PROTO_DST, REG_1)));
        v.extend(set_nftrace());
        RuleSpec { chain, exprs: v, comment: format!("netnat trace: replies, {}", self.describe()) }
    }

    /// One rule per trace chain, in `TRACE_CHAINS` order.
    pub fn rules(&self) -> Vec<RuleSpec> {
        let [pre, out, pre_reply, out_reply] = TRACE_CHAINS.map(|c| c.name);
        vec![
            self.request_rule(pre),
            self.request_rule(out),
            self.reply_rule(pre_reply, true),
            self.reply_rule(out_reply, false),
        ]
    }
}

fn nfproto_of(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        NFPROTO_IPV6
    } else {
        NFPROTO_IPV4
    }
}

fn full_prefix(ip: IpAddr) -> u8 {
    Family::of(ip).bits() as u8
}

/// `--from`: an address or ADDRESS/PREFIX of any length (a whole network, or one host).
fn parse_source(s: &str) -> Result<Subnet, InputError> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let Ok(addr) = a.parse::<IpAddr>() else {
        return Err(InputError(format!("--from '{s}': '{a}' is not an IPv4 or IPv6 address (CIDR: ADDRESS/PREFIX)")));
    };
    let bits = Family::of(addr).bits();
    let prefix = match p {
        "" => bits,
        p => match p.parse::<u32>() {
            Ok(v) if v <= bits => v,
            _ => {
                return Err(InputError(format!("--from '{s}': prefix length '{p}' must be a number from 0 to {bits}")))
            }
        },
    };
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) >> (128 - bits) };
    let masked = ip_from_bits(Family::of(addr), ip_bits(addr) & mask);
    if masked != addr {
        return Err(InputError(format!("--from '{s}' has host bits set: did you mean {masked}/{prefix}?")));
    }
    Ok(Subnet { addr, prefix: prefix as u8 })
}

// ---- the kernel's trace events ----

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nlmsg_type of a trace event: (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE.
pub const TRACE_MSG_TYPE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_TRACE as u16;

// enum nft_trace_attributes (linux/netfilter/nf_tables.h); the NFTA_TRACE_CT_* ones since Linux 6.14.
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_TRACE_CT_ID: u16 = 18;
const NFTA_TRACE_CT_DIRECTION: u16 = 19;
const NFTA_TRACE_CT_STATUS: u16 = 20;
const NFTA_TRACE_CT_STATE: u16 = 21;
// enum nft_verdict_attributes
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

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

/// Netlink attributes of `buf`: (type without flag bits, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Decodes one netlink message: Ok(None) when it is not a trace event, an error when it is one
/// that does not hold together (a truncated message, an event without table or chain).
pub fn parse_event(msg: &[u8]) -> Result<Option<Event>, String> {
    if msg.len() < NLMSG_HDRLEN + NFGENMSG_LEN {
        return Err(format!("a netlink message of {} bytes", msg.len()));
    }
    let len = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes")) as usize;
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind != TRACE_MSG_TYPE {
        return Ok(None);
    }
    if len > msg.len() || len < NLMSG_HDRLEN + NFGENMSG_LEN {
        return Err(format!("a trace event that says it has {len} bytes in {}", msg.len()));
    }
    let mut ev = Event {
        id: 0,
        family: msg[NLMSG_HDRLEN],
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
    for (t, v) in attrs(&msg[NLMSG_HDRLEN + NFGENMSG_LEN..len]) {
        match t {
            NFTA_TRACE_TABLE => ev.table = c_str(v),
            NFTA_TRACE_CHAIN => ev.chain = c_str(v),
            NFTA_TRACE_RULE_HANDLE => ev.handle = v.get(..8).map(|b| u64::from_be_bytes(b.try_into().unwrap())),
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
            NFTA_TRACE_ID => ev.id = v.get(..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0),
            NFTA_TRACE_NETWORK_HEADER => ev.network = Some(v.to_vec()),
            NFTA_TRACE_TRANSPORT_HEADER => ev.transport = Some(v.to_vec()),
            NFTA_TRACE_IIF => ev.iif = be32(v),
            NFTA_TRACE_OIF => ev.oif = be32(v),
            NFTA_TRACE_MARK => ev.mark = be32(v),
            NFTA_TRACE_NFPROTO => ev.nfproto = be32(v),
            NFTA_TRACE_POLICY => ev.policy = be32(v),
            // The kernel puts the id as it is (no byte swap): an opaque number.
            NFTA_TRACE_CT_ID => {
                ev.ct.get_or_insert_default().id = v.get(..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
            }
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

// ---- packet headers ----

/// A packet's addresses and ports as one chain saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Headers {
    /// Transport protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flags (SYN 0x02, ACK 0x10, FIN 0x01, RST 0x04, PSH 0x08).
    pub tcp_flags: Option<u8>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Headers {
    /// Decodes an IPv4 or IPv6 header and the transport header after it.
    pub fn decode(network: &[u8], transport: Option<&[u8]>) -> Option<Headers> {
        let (protocol, src, dst) = match network.first()? >> 4 {
            4 if network.len() >= 20 => (
                network[9],
                IpAddr::from(<[u8; 4]>::try_from(&network[12..16]).ok()?),
                IpAddr::from(<[u8; 4]>::try_from(&network[16..20]).ok()?),
            ),
            6 if network.len() >= 40 => (
                network[6],
                IpAddr::from(<[u8; 16]>::try_from(&network[8..24]).ok()?),
                IpAddr::from(<[u8; 16]>::try_from(&network[24..40]).ok()?),
            ),
            _ => return None,
        };
        let th = transport.unwrap_or(&[]);
        let port = |at: usize| th.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let ported = matches!(protocol, 6 | 17 | 33 | 132 | 136);
        Some(Headers {
            protocol,
            src,
            dst,
            sport: if ported { port(0) } else { None },
            dport: if ported { port(2) } else { None },
            tcp_flags: if protocol == 6 { th.get(13).copied() } else { None },
            icmp: if matches!(protocol, 1 | 58) { th.get(..2).map(|b| (b[0], b[1])) } else { None },
        })
    }

    fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
        match port {
            Some(p) => SocketAddr::new(ip, p).to_string(),
            None => ip.to_string(),
        }
    }
    pub fn source(&self) -> String {
        Self::endpoint(self.src, self.sport)
    }
    pub fn destination(&self) -> String {
        Self::endpoint(self.dst, self.dport)
    }
}

impl fmt::Display for Headers {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {} > {}", expr::proto_name(self.protocol), self.source(), self.destination())?;
        if let Some(fl) = self.tcp_flags {
            let names: Vec<&str> = [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")]
                .iter()
                .filter(|(b, _)| fl & b != 0)
                .map(|(_, n)| *n)
                .collect();
            write!(f, " [{}]", names.join(","))?;
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " [type {t} code {c}]")?;
        }
        Ok(())
    }
}

// ---- what netnat knows of the tables ----

/// Every chain and rule of every table (`Nft::read_all`) and the interface names, read when a
/// trace starts (and again when an event names a rule added since), to name each chain's hook
/// and priority and print each rule.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub chains: Vec<LiveChain>,
    pub rules: Vec<LiveRule>,
    pub ifnames: BTreeMap<u32, String>,
}

impl Catalog {
    fn chain(&self, family: u8, table: &str, name: &str) -> Option<&LiveChain> {
        self.chains.iter().find(|c| c.family == family as u32 && c.table == table && c.name == name)
    }
    fn rule(&self, family: u8, table: &str, chain: &str, handle: u64) -> Option<&LiveRule> {
        self.rules
            .iter()
            .find(|r| r.family == family as u32 && r.table == table && r.chain == chain && r.handle == handle)
    }
    /// Whether the event names a rule or interface read after the catalog was.
    pub fn is_stale_for(&self, ev: &Event) -> bool {
        let rule = ev.handle.is_some_and(|h| self.rule(ev.family, &ev.table, &ev.chain, h).is_none());
        let link = [ev.iif, ev.oif].into_iter().flatten().any(|i| !self.ifnames.contains_key(&i));
        rule || link
    }
    fn ifname(&self, index: u32) -> String {
        self.ifnames.get(&index).cloned().unwrap_or_else(|| format!("if{index}"))
    }
    /// A rule in nft syntax: netnat's own with their map keys in full, others' as the audit
    /// decodes them (iptables-nft NAT targets included).
    fn rule_text(&self, family: u8, table: &str, chain: &str, handle: u64) -> (Option<String>, Option<String>) {
        let Some(r) = self.rule(family, table, chain, handle) else { return (None, None) };
        let text = if table == crate::ruleset::TABLE && family as u32 == crate::audit::FAMILY_INET {
            crate::ruleset::render_rule(&r.exprs, None)
        } else {
            crate::audit::render_foreign(r)
        };
        (Some(text), r.comment.clone())
    }
    fn is_nat_rule(&self, family: u8, table: &str, chain: &str, handle: u64) -> bool {
        self.rule(family, table, chain, handle).is_some_and(|r| {
            r.exprs.iter().any(|e| match e {
                Expr::Nat { .. } | Expr::Masquerade => true,
                Expr::Xt { target: true, name, .. } => {
                    matches!(name.as_str(), "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP")
                }
                Expr::Other { name } => matches!(name.as_str(), "masq" | "redir" | "nat"),
                _ => false,
            })
        })
    }
}

pub fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "family?",
    }
}

fn hook_name(family: u8, h: u32) -> String {
    // netdev chains have one hook, ingress (0) or egress (1); the others the five IP hooks.
    let names: &[&str] =
        if family == 5 { &["ingress", "egress"] } else { &["prerouting", "input", "forward", "output", "postrouting"] };
    names.get(h as usize).map(|s| s.to_string()).unwrap_or(format!("hook {h}"))
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

fn terminal(code: i32) -> bool {
    code >= 0 && matches!(code & 0xff, 0..=3)
}

// ---- events into packets ----

/// Events per packet, in the order the packets were marked.
#[derive(Debug, Default)]
pub struct Collector {
    limit: usize,
    packets: Vec<Building>,
    /// The packet each trace id is being collected for.
    current: HashMap<u32, usize>,
    /// Events of packets netnat did not mark (another tracer's) or beyond `limit`.
    pub ignored: u64,
    /// Ids of packets marked beyond `limit`, whose events are left out.
    beyond: std::collections::HashSet<u32>,
}

#[derive(Debug)]
struct Building {
    events: Vec<Event>,
    direction: Direction,
    last_ms: u64,
    done: bool,
    /// The connection's conntrack id, once an event said it.
    ct_id: Option<u32>,
    /// Where the packet was last seen: (hook rank, priority) of its latest base chain.
    at: Option<(u8, i32)>,
}

impl Building {
    fn add(&mut self, ev: Event, cat: &Catalog) {
        if let Some(id) = ev.ct.and_then(|c| c.id) {
            self.ct_id = Some(id);
        }
        if ev.network.is_some() {
            self.at = place(&ev, cat).or(self.at);
        }
        self.events.push(ev);
    }
}

/// Where an event's base chain runs: the order of its hook on a packet's way (prerouting and
/// output first, then input or forward, then postrouting) and its priority.
fn place(ev: &Event, cat: &Catalog) -> Option<(u8, i32)> {
    let b = cat.chain(ev.family, &ev.table, &ev.chain)?.base.as_ref()?;
    let rank = match (ev.family, b.hook) {
        (5, _) => 0, // netdev: ingress, before everything
        (_, 0 | 3) => 1,
        (_, 1 | 2) => 2,
        _ => 3,
    };
    Some((rank, b.priority))
}

impl Collector {
    pub fn new(limit: usize) -> Collector {
        Collector { limit, ..Collector::default() }
    }

    /// netnat's marking rule matched: every traced packet's first event.
    fn is_mark(ev: &Event) -> bool {
        ev.kind == EventKind::Rule
            && ev.handle.is_some()
            && is_trace_chain(&ev.chain)
            && ev.table == crate::ruleset::TABLE
            && ev.family as u32 == crate::audit::FAMILY_INET
            && ev.verdict.as_ref().is_some_and(|(c, _)| *c == -1)
    }

    /// Takes one event that arrived at `now_ms`.
    pub fn push(&mut self, ev: Event, now_ms: u64, cat: &Catalog) {
        if Self::is_mark(&ev) {
            if self.packets.len() >= self.limit {
                // A later packet can reuse an earlier one's id: none of its events go to that one.
                self.current.remove(&ev.id);
                self.beyond.insert(ev.id);
                self.ignored += 1;
                return;
            }
            self.beyond.remove(&ev.id);
            self.current.insert(ev.id, self.packets.len());
            let direction = Direction::of_chain(&ev.chain);
            let mut p = Building { events: vec![], direction, last_ms: now_ms, done: false, ct_id: None, at: None };
            p.add(ev, cat);
            self.packets.push(p);
            return;
        }
        let known = self.current.get(&ev.id).copied();
        let found = match known {
            Some(i) => Some(i),
            None if self.beyond.contains(&ev.id) => None,
            None => self.adopt(&ev, now_ms, cat),
        };
        match found {
            Some(i) => {
                self.current.insert(ev.id, i);
                let p = &mut self.packets[i];
                p.add(ev, cat);
                p.last_ms = now_ms;
            }
            None => self.ignored += 1,
        }
    }

    /// The packet an event with an unknown id continues, if any. The kernel's id hashes the
    /// skb's input interface, which a bridged packet changes between its bridge port and the
    /// bridge (br_netfilter): the same packet then shows with a new id from one hook to the
    /// next. It is the open packet, most recent first, of the same connection and direction
    /// (when the kernel says), the same protocol, source and TCP flags (nothing changes those
    /// before postrouting), that has not reached this hook yet.
    fn adopt(&self, ev: &Event, now_ms: u64, cat: &Catalog) -> Option<usize> {
        let h = Headers::decode(ev.network.as_deref()?, ev.transport.as_deref())?;
        let at = place(ev, cat)?;
        self.packets.iter().enumerate().rev().find_map(|(i, p)| {
            let last = p.events.iter().rev().find_map(|e| e.network.as_deref().map(|n| (n, e.transport.as_deref())));
            let seen = last.and_then(|(n, t)| Headers::decode(n, t))?;
            let ct = ev.ct.unwrap_or_default();
            let fits = !p.done
                && now_ms.saturating_sub(p.last_ms) < 1000
                && ct.id.is_none_or(|id| p.ct_id.is_none_or(|x| x == id))
                && ct.direction.is_none_or(|d| d == (p.direction == Direction::Reply) as u8)
                && (seen.protocol, seen.src, seen.sport, seen.tcp_flags, seen.icmp)
                    == (h.protocol, h.src, h.sport, h.tcp_flags, h.icmp)
                && p.at.is_none_or(|before| at > before);
            fits.then_some(i)
        })
    }

    /// Packets that saw no event for `quiet_ms` are complete: their indexes, in order.
    pub fn settle(&mut self, now_ms: u64, quiet_ms: u64) -> Vec<usize> {
        let mut out = vec![];
        for (i, p) in self.packets.iter_mut().enumerate() {
            if !p.done && now_ms.saturating_sub(p.last_ms) >= quiet_ms {
                p.done = true;
                out.push(i);
            }
        }
        out
    }

    /// Every packet not reported yet.
    pub fn finish(&mut self) -> Vec<usize> {
        self.settle(u64::MAX, 0)
    }

    /// `limit` packets were marked and all of them are complete.
    pub fn full(&self) -> bool {
        self.packets.len() >= self.limit && self.packets.iter().all(|p| p.done)
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Whether any event so far carried conntrack information (Linux 6.14 and later).
    pub fn has_conntrack_info(&self) -> bool {
        self.packets.iter().flat_map(|p| &p.events).any(|e| e.ct.is_some())
    }

    /// Packet `i`, decoded against the catalog.
    pub fn report(&self, i: usize, cat: &Catalog) -> PacketReport {
        packet_report(i + 1, &self.packets[i].events, self.packets[i].direction, cat)
    }
}

/// One rule a packet matched (or the end of a regular chain it returned from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    pub chain: String,
    pub handle: Option<u64>,
    /// The rule in nft syntax, when netnat could read it.
    pub rule: Option<String>,
    pub comment: Option<String>,
    pub verdict: String,
}

/// One base chain a packet went through, with what happened there (rules of the regular
/// chains it jumped to included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visit {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: Option<String>,
    pub priority: Option<i32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// The packet as this chain saw it (after any NAT before it).
    pub headers: Option<Headers>,
    pub rules: Vec<RuleHit>,
    /// How the chain ended: `policy accept`, `policy drop`, `accept`, `drop`, ...; None when
    /// the events stop before the chain's end.
    pub end: Option<String>,
    /// One of netnat trace's own marking chains.
    pub trace_chain: bool,
    /// Where the chain ended with a terminal verdict: the rule's chain and handle.
    #[serde(skip)]
    ended_by: Option<(String, Option<u64>, Option<String>)>,
}

/// An address or port change between two chains: NAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatStep {
    /// `dnat`, `snat`; for a reply, `dnat reversed` (the reply's source goes back to the
    /// address the client used) or `snat reversed`.
    pub kind: String,
    pub from: String,
    pub to: String,
    /// The rule that did it (`inet netnat prerouting rule 7`), or conntrack for the later
    /// packets of a translated connection (NAT chains see only a connection's first packet).
    pub by: Option<String>,
    /// Index of the first visit that saw the new address.
    pub visit: usize,
}

/// What became of a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fate {
    /// `accepted`, `dropped`, `queued`, `stolen` or `unknown`.
    pub verdict: String,
    /// For a drop: `table ip filter chain FORWARD: policy drop` or `...: rule handle 7 (text)`.
    pub by: Option<String>,
    /// One sentence: `dropped by table ip filter chain FORWARD: policy drop`, `accepted,
    /// forwarded out MyDocker0`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketReport {
    pub number: usize,
    pub trace_id: u32,
    pub direction: Direction,
    /// The packet when netnat marked it.
    pub headers: Option<Headers>,
    pub iif: Option<String>,
    pub visits: Vec<Visit>,
    pub nat: Vec<NatStep>,
    pub fate: Fate,
    /// The kernel's conntrack id of its connection, when the kernel reports it.
    pub conntrack_id: Option<u32>,
}

fn packet_report(number: usize, events: &[Event], direction: Direction, cat: &Catalog) -> PacketReport {
    let mut visits: Vec<Visit> = vec![];
    let mut conntrack_id = None;
    for ev in events {
        if let Some(id) = ev.ct.and_then(|c| c.id) {
            conntrack_id = Some(id);
        }
        // A packet's first event in each base chain carries its headers and devices.
        if ev.network.is_some() || visits.is_empty() {
            let base = cat.chain(ev.family, &ev.table, &ev.chain).and_then(|c| c.base.clone());
            visits.push(Visit {
                family: family_name(ev.family).into(),
                table: ev.table.clone(),
                chain: ev.chain.clone(),
                hook: base.as_ref().map(|b| hook_name(ev.family, b.hook)),
                priority: base.as_ref().map(|b| b.priority),
                iif: ev.iif.map(|i| cat.ifname(i)),
                oif: ev.oif.map(|i| cat.ifname(i)),
                headers: ev.network.as_deref().and_then(|n| Headers::decode(n, ev.transport.as_deref())),
                rules: vec![],
                end: None,
                trace_chain: is_trace_chain(&ev.chain) && ev.table == crate::ruleset::TABLE,
                ended_by: None,
            });
        }
        let v = visits.last_mut().expect("pushed above");
        let (code, target) = match &ev.verdict {
            Some((c, t)) => (*c, t.as_deref()),
            None => (-1, None),
        };
        match ev.kind {
            EventKind::Policy => {
                let p = if ev.policy.unwrap_or(1) == 0 { "drop" } else { "accept" };
                v.end = Some(format!("policy {p}"));
                v.ended_by = Some((ev.chain.clone(), None, None));
            }
            // The end of a base chain's rules (no handle), just before its policy event.
            EventKind::Rule if ev.handle.is_none() && code == -1 => {}
            EventKind::Rule | EventKind::Return => {
                let (rule, comment) = match ev.handle {
                    Some(h) => cat.rule_text(ev.family, &ev.table, &ev.chain, h),
                    None => (None, None),
                };
                let verdict = verdict_text(code, target);
                if terminal(code) {
                    v.end = Some(verdict.clone());
                    v.ended_by = Some((ev.chain.clone(), ev.handle, rule.clone()));
                }
                v.rules.push(RuleHit { chain: ev.chain.clone(), handle: ev.handle, rule, comment, verdict });
            }
            EventKind::Other(_) => {}
        }
    }
    let nat = nat_steps(&visits, events, direction, cat);
    let fate = fate_of(&visits);
    let first = visits.first();
    PacketReport {
        number,
        trace_id: events.first().map(|e| e.id).unwrap_or(0),
        direction,
        headers: first.and_then(|v| v.headers),
        iif: first.and_then(|v| v.iif.clone()),
        visits,
        nat,
        fate,
        conntrack_id,
    }
}

/// Address and port changes from one chain to the next, with the translating rule seen between.
fn nat_steps(visits: &[Visit], events: &[Event], dir: Direction, cat: &Catalog) -> Vec<NatStep> {
    // The NAT rules each visit matched, as `FAMILY TABLE CHAIN rule HANDLE`.
    let mut nat_rules: Vec<Vec<String>> = vec![vec![]; visits.len()];
    let mut at = 0usize;
    for (k, ev) in events.iter().enumerate() {
        if k > 0 && ev.network.is_some() {
            at += 1;
        }
        if let (Some(h), EventKind::Rule) = (ev.handle, ev.kind) {
            if cat.is_nat_rule(ev.family, &ev.table, &ev.chain, h) {
                if let Some(list) = nat_rules.get_mut(at) {
                    list.push(format!("{} {} {} rule {h}", family_name(ev.family), ev.table, ev.chain));
                }
            }
        }
    }
    let mut out = vec![];
    let mut prev: Option<(usize, Headers)> = None;
    for (i, v) in visits.iter().enumerate() {
        let Some(h) = v.headers else { continue };
        if let Some((j, p)) = prev {
            // No rule translated it here: conntrack did, as it did the connection's first packet.
            let by = || {
                let rule = nat_rules[j..i].iter().flatten().next_back().cloned();
                Some(rule.unwrap_or("conntrack, as for the connection's first packet".into()))
            };
            if (p.dst, p.dport) != (h.dst, h.dport) {
                let kind = if dir == Direction::Original { "dnat" } else { "snat reversed" };
                out.push(NatStep { kind: kind.into(), from: p.destination(), to: h.destination(), by: by(), visit: i });
            }
            if (p.src, p.sport) != (h.src, h.sport) {
                let kind = if dir == Direction::Original { "snat" } else { "dnat reversed" };
                out.push(NatStep { kind: kind.into(), from: p.source(), to: h.source(), by: by(), visit: i });
            }
        }
        prev = Some((i, h));
    }
    out
}

fn fate_of(visits: &[Visit]) -> Fate {
    for v in visits {
        let Some(end) = v.end.as_deref() else { continue };
        let (chain, handle, rule) = v.ended_by.clone().unwrap_or((v.chain.clone(), None, None));
        let place = format!("table {} {} chain {chain}", v.family, v.table);
        let how = match (handle, &rule) {
            (Some(h), Some(r)) => format!("rule handle {h} ({r})"),
            (Some(h), None) => format!("rule handle {h}"),
            (None, _) => end.to_string(),
        };
        let by = format!("{place}: {how}");
        let verdict = match end {
            "drop" | "policy drop" => "dropped",
            "queue" => "queued",
            "stolen" => "stolen",
            _ => continue,
        };
        let text = match verdict {
            "dropped" => format!("dropped by {by}"),
            "queued" => format!("queued to user space by {by}"),
            _ => format!("taken over (stolen) by {by}"),
        };
        return Fate { verdict: verdict.into(), by: Some(by), text };
    }
    let Some(last) = visits.iter().rev().find(|v| v.end.is_some() || !v.rules.is_empty()) else {
        return Fate { verdict: "unknown".into(), by: None, text: "no chain reported a verdict".into() };
    };
    let out = visits.iter().rev().find_map(|v| v.oif.clone());
    let text = match last.hook.as_deref() {
        Some("forward" | "postrouting") => match out {
            Some(o) => format!("accepted, forwarded out {o}"),
            None => "accepted, forwarded".into(),
        },
        Some("input") => "accepted, delivered to this host".into(),
        Some("output") => match out {
            Some(o) => format!("accepted, sent by this host out {o}"),
            None => "accepted, sent by this host".into(),
        },
        Some("prerouting") => "accepted at prerouting; no chain of a later hook saw it (no table has one there, or \
                               routing dropped it: no route, rp_filter, a martian address)"
            .into(),
        _ => "accepted".into(),
    };
    Fate { verdict: "accepted".into(), by: None, text }
}

// ---- one line per connection ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionReport {
    pub protocol: String,
    /// The client, as it sent the first packet seen.
    pub client: String,
    /// The address and port the client asked for.
    pub server: String,
    /// Where DNAT sent it, if anywhere.
    pub dnat_to: Option<String>,
    /// `arrived` (answered, or forwarded/delivered with no answer seen), `dropped`, `unknown`.
    pub outcome: String,
    pub answered: bool,
    pub dropped_by: Option<String>,
    pub packets: usize,
    pub original: usize,
    pub reply: usize,
    pub conntrack_id: Option<u32>,
    /// Numbers of its packets.
    pub packet_numbers: Vec<usize>,
    /// The whole line, as printed.
    pub summary: String,
}

/// The connection a packet belongs to: the kernel's conntrack id when any of its events had
/// one, else its 5-tuple as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ConnKey {
    Ct(u32),
    Tuple(u8, String, String),
}

fn tuple_key(p: &PacketReport) -> Option<ConnKey> {
    let h = p.headers?;
    Some(match p.direction {
        Direction::Original => ConnKey::Tuple(h.protocol, h.source(), h.destination()),
        Direction::Reply => ConnKey::Tuple(h.protocol, h.destination(), h.source()),
    })
}

/// Groups packets into connections, in order of their first packet.
pub fn connections(packets: &[PacketReport]) -> Vec<ConnectionReport> {
    let mut order: Vec<ConnKey> = vec![];
    let mut groups: HashMap<ConnKey, Vec<&PacketReport>> = HashMap::new();
    // A packet dropped before conntrack has no id: it joins the connection with its tuple.
    let mut ct_of_tuple: HashMap<ConnKey, ConnKey> = HashMap::new();
    for p in packets {
        if let (Some(id), Some(t)) = (p.conntrack_id, tuple_key(p)) {
            ct_of_tuple.entry(t).or_insert(ConnKey::Ct(id));
        }
    }
    for p in packets {
        let key = match (p.conntrack_id, tuple_key(p)) {
            (Some(id), _) => ConnKey::Ct(id),
            (None, Some(t)) => ct_of_tuple.get(&t).cloned().unwrap_or(t),
            (None, None) => ConnKey::Tuple(0, format!("packet {}", p.number), String::new()),
        };
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(p);
    }
    order.iter().map(|k| connection_report(&groups[k])).collect()
}

fn connection_report(ps: &[&PacketReport]) -> ConnectionReport {
    let first_orig = ps.iter().find(|p| p.direction == Direction::Original && p.headers.is_some());
    let (protocol, client, server) = match (first_orig, ps.iter().find_map(|p| p.headers)) {
        (Some(p), _) => {
            let h = p.headers.expect("filtered");
            (expr::proto_name(h.protocol), h.source(), h.destination())
        }
        // Only replies were seen: the reply's destination is the client.
        (None, Some(h)) => (expr::proto_name(h.protocol), h.destination(), h.source()),
        (None, None) => ("?".into(), "?".into(), "?".into()),
    };
    let dnat_to =
        ps.iter().filter(|p| p.direction == Direction::Original).flat_map(|p| &p.nat).find(|n| n.kind == "dnat");
    let dnat_to = dnat_to.map(|n| n.to.clone());
    let original = ps.iter().filter(|p| p.direction == Direction::Original).count();
    let reply = ps.len() - original;
    let dropped = ps.iter().find(|p| p.fate.verdict == "dropped");
    let delivered = ps.iter().any(|p| p.direction == Direction::Original && p.fate.verdict == "accepted");
    let answered = ps.iter().any(|p| p.direction == Direction::Reply && p.fate.verdict == "accepted");
    let target = dnat_to.clone().unwrap_or(server.clone());
    let (outcome, what) = match (dropped, answered, delivered) {
        (Some(p), _, _) => ("dropped", p.fate.text.clone()),
        (None, true, _) => ("arrived", format!("arrived at {target} and was answered")),
        (None, false, true) => ("arrived", format!("arrived at {target}; no answer seen")),
        (None, false, false) => ("unknown", "no verdict seen".into()),
    };
    let nat = match (&dnat_to, first_orig) {
        (Some(to), _) => format!("DNAT to {to}"),
        (None, Some(_)) => "not translated (no table DNATs it)".into(),
        (None, None) => "translation not seen".into(),
    };
    let summary = format!(
        "{protocol} {client} > {server}: {nat}; {what} ({} packet{}: {original} original, {reply} reply)",
        ps.len(),
        if ps.len() == 1 { "" } else { "s" }
    );
    ConnectionReport {
        protocol,
        client,
        server,
        dnat_to,
        outcome: outcome.into(),
        answered,
        dropped_by: dropped.and_then(|p| p.fate.by.clone()),
        packets: ps.len(),
        original,
        reply,
        conntrack_id: ps.iter().find_map(|p| p.conntrack_id),
        packet_numbers: ps.iter().map(|p| p.number).collect(),
        summary,
    }
}

// ---- text ----

/// A packet as `netnat trace` prints it: a header line, one line per chain (netnat trace's own
/// marking chains left out), NAT where it shows, and the fate.
pub fn render_packet(p: &PacketReport) -> String {
    let what = p.headers.map(|h| h.to_string()).unwrap_or("(headers not reported)".into());
    let dir = match p.direction {
        Direction::Original => "original",
        Direction::Reply => "reply",
    };
    let iif = p.iif.as_ref().map(|i| format!(" in {i}")).unwrap_or_default();
    let mut out = format!("packet {} ({dir}): {what}{iif}\n", p.number);
    for (i, v) in p.visits.iter().enumerate() {
        for n in p.nat.iter().filter(|n| n.visit == i) {
            let by = n.by.as_ref().map(|b| format!(" (by {b})")).unwrap_or_default();
            out += &format!("  {:<16} {}: {} -> {}{by}\n", "", n.kind, n.from, n.to);
        }
        if v.trace_chain {
            continue;
        }
        let place = match (&v.hook, v.priority) {
            (Some(h), Some(p)) => format!("{h} {p}"),
            (Some(h), None) => h.clone(),
            _ => String::new(),
        };
        let chain = format!("{} {} {}", v.family, v.table, v.chain);
        let mut first = true;
        let mut line = |text: String, out: &mut String| {
            let lead = if first { place.as_str() } else { "" };
            first = false;
            *out += &format!("  {lead:<16} {text}\n");
        };
        for r in &v.rules {
            let rc = if r.chain == v.chain { chain.clone() } else { format!("{} {} {}", v.family, v.table, r.chain) };
            let body = match (r.handle, &r.rule) {
                (Some(h), Some(t)) => format!("rule {h}: {t}"),
                (Some(h), None) => format!("rule {h}"),
                (None, _) => "end of chain".into(),
            };
            let comment = r.comment.as_ref().map(|c| format!(" \"{c}\"")).unwrap_or_default();
            // `rule 4: return`, not `rule 4: return -> return`.
            let verdict = if body.ends_with(&r.verdict) && comment.is_empty() {
                String::new()
            } else {
                format!(" -> {}", r.verdict)
            };
            line(format!("{rc}: {body}{comment}{verdict}"), &mut out);
        }
        if let Some(end) = v.end.as_deref().filter(|e| e.starts_with("policy")) {
            line(format!("{chain}: {end}"), &mut out);
        } else if v.end.is_none() && v.rules.is_empty() {
            line(format!("{chain}: (no verdict reported)"), &mut out);
        }
    }
    out += &format!("  => {}\n", p.fate.text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::BaseChain;

    fn spec(t: &str, from: Option<&str>) -> TraceSpec {
        TraceSpec::parse(t, from).unwrap()
    }

    fn render(r: &RuleSpec) -> String {
        crate::ruleset::render_rule(&r.exprs, None)
    }

    #[test]
    fn marking_rules_for_each_kind_of_target() {
        let r = spec("9090", None).rules();
        assert_eq!(r.iter().map(|r| r.chain).collect::<Vec<_>>(), TRACE_CHAINS.map(|c| c.name).to_vec());
        assert_eq!(render(&r[0]), "fib daddr type local meta l4proto tcp th dport 9090 meta nftrace set 1");
        assert_eq!(r[0].exprs, r[1].exprs, "requests from outside and from the host alike");
        assert_eq!(
            render(&r[2]),
            "ct direction reply ct status dnat ct original protocol tcp ct original proto-dst 9090 meta nftrace set 1"
        );
        assert_eq!(
            render(&r[3]),
            "ct direction reply ct original protocol tcp ct original proto-dst 9090 meta nftrace set 1"
        );
        let r = spec("127.0.0.1:6060/udp", Some("198.51.100.0/24")).rules();
        assert_eq!(
            render(&r[0]),
            "meta nfproto ipv4 ip daddr 127.0.0.1 ip saddr 198.51.100.0/24 meta l4proto udp th dport 6060 meta nftrace set 1"
        );
        assert_eq!(
            render(&r[2]),
            "ct direction reply ct original ip daddr 127.0.0.1 ct original ip saddr 198.51.100.0/24 ct original \
             protocol udp ct original proto-dst 6060 meta nftrace set 1"
        );
        let r = spec("[2001:db8::1]:8000-8010", None).rules();
        assert_eq!(
            render(&r[0]),
            "meta nfproto ipv6 ip6 daddr 2001:db8::1 meta l4proto tcp th dport >= 8000 th dport <= 8010 meta nftrace set 1"
        );
        assert!(r[0].comment.contains("tcp ports 8000-8010 on 2001:db8::1"), "{}", r[0].comment);
        // 0.0.0.0 is every local address of one family.
        let s = spec("0.0.0.0:53/udp", None);
        assert_eq!((s.host_ip, s.family), (None, Some(Family::V4)));
        assert_eq!(s.describe(), "udp port 53 on every local IPv4 address");
        assert!(render(&s.rules()[0]).starts_with("meta nfproto ipv4 fib daddr type local"));
    }

    #[test]
    fn bad_targets_name_the_value() {
        let e = |t: &str, f: Option<&str>| TraceSpec::parse(t, f).unwrap_err().0;
        assert!(e("70000", None).contains("70000"));
        assert!(e("9090/icmp", None).contains("icmp"));
        assert!(e("9090", Some("10.0.0.1/8")).contains("did you mean 10.0.0.0/8"));
        assert!(e("9090", Some("nope")).contains("nope"));
        assert!(e("9090", Some("10.0.0.0/33")).contains("33"));
        assert!(e("[2001:db8::1]:80", Some("10.0.0.0/8")).contains("one address family"));
        assert_eq!(spec("80", Some("198.51.100.2")).from.unwrap().prefix, 32);
    }

    // ---- hand-made trace events, as the kernel sends them ----

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend(t.to_ne_bytes());
        a.extend(v);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn s(text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[derive(Default, Clone)]
    struct Ev {
        id: u32,
        family: u8,
        table: &'static str,
        chain: &'static str,
        kind: u32,
        handle: Option<u64>,
        verdict: Option<(i32, Option<&'static str>)>,
        policy: Option<u32>,
        pkt: Option<(Vec<u8>, Vec<u8>)>,
        iif: Option<u32>,
        oif: Option<u32>,
        ct_id: Option<u32>,
    }

    fn message(e: &Ev) -> Vec<u8> {
        let mut body = vec![e.family, 0, 0, 0];
        body.extend(attr(NFTA_TRACE_NFPROTO, &2u32.to_be_bytes()));
        body.extend(attr(NFTA_TRACE_TYPE, &e.kind.to_be_bytes()));
        body.extend(attr(NFTA_TRACE_ID, &e.id.to_ne_bytes()));
        body.extend(attr(NFTA_TRACE_CHAIN, &s(e.chain)));
        body.extend(attr(NFTA_TRACE_TABLE, &s(e.table)));
        if let Some(h) = e.handle {
            body.extend(attr(NFTA_TRACE_RULE_HANDLE, &h.to_be_bytes()));
        }
        if let Some((c, t)) = e.verdict {
            let mut v = attr(NFTA_VERDICT_CODE, &c.to_be_bytes());
            if let Some(t) = t {
                v.extend(attr(NFTA_VERDICT_CHAIN, &s(t)));
            }
            body.extend(attr(NFTA_TRACE_VERDICT | 0x8000, &v));
        }
        if let Some(p) = e.policy {
            body.extend(attr(NFTA_TRACE_POLICY, &p.to_be_bytes()));
        }
        if let Some(i) = e.iif {
            body.extend(attr(NFTA_TRACE_IIF, &i.to_be_bytes()));
        }
        if let Some(i) = e.oif {
            body.extend(attr(NFTA_TRACE_OIF, &i.to_be_bytes()));
        }
        if let Some((n, t)) = &e.pkt {
            body.extend(attr(NFTA_TRACE_NETWORK_HEADER, n));
            body.extend(attr(NFTA_TRACE_TRANSPORT_HEADER, t));
        }
        if let Some(id) = e.ct_id {
            body.extend(attr(NFTA_TRACE_CT_ID, &id.to_ne_bytes()));
            body.extend(attr(NFTA_TRACE_CT_DIRECTION, &[0]));
            body.extend(attr(NFTA_TRACE_CT_STATE, &8u32.to_be_bytes()));
        }
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(TRACE_MSG_TYPE.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m
    }

    /// An IPv4 TCP packet's headers.
    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> (Vec<u8>, Vec<u8>) {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend(src);
        ip.extend(dst);
        let mut th = sport.to_be_bytes().to_vec();
        th.extend(dport.to_be_bytes());
        th.extend([0; 9]);
        th.push(flags);
        th.extend([0; 6]);
        (ip, th)
    }

    const EXT: [u8; 4] = [198, 51, 100, 2];
    const HOST: [u8; 4] = [198, 51, 100, 1];
    const CTR: [u8; 4] = [172, 16, 1, 1];

    fn base(family: u32, table: &str, name: &str, hook: u32, priority: i32, policy: u32) -> LiveChain {
        let kind = if name == "prerouting" { "nat" } else { "filter" };
        let base = Some(BaseChain { hook, priority, kind: kind.into(), policy });
        LiveChain { table: table.into(), family, name: name.into(), base }
    }

    fn catalog() -> Catalog {
        let rule =
            |family: u32, table: &str, chain: &str, handle: u64, exprs: Vec<Expr>, comment: Option<&str>| LiveRule {
                table: table.into(),
                family,
                chain: chain.into(),
                handle,
                exprs,
                comment: comment.map(String::from),
            };
        let dnat = crate::ruleset::desired(&crate::model::State::default())
            .rules
            .into_iter()
            .find(|r| {
                r.chain == "prerouting" && r.comment.contains("every local address") && r.comment.contains("IPv4")
            })
            .unwrap();
        let chains = vec![
            base(1, "netnat", "trace-pre", 0, -350, 1),
            base(1, "netnat", "guard", 0, -300, 1),
            base(1, "netnat", "prerouting", 0, -100, 1),
            base(1, "netnat", "forward", 2, 0, 1),
            base(2, "filter", "FORWARD", 2, 0, 0),
            LiveChain { table: "filter".into(), family: 2, name: "DOCKER-USER".into(), base: None },
        ];
        let rules = vec![
            rule(1, "netnat", "prerouting", 7, dnat.exprs, Some(&dnat.comment)),
            rule(1, "netnat", "forward", 10, vec![Expr::Verdict(Verdict::Accept)], None),
            rule(2, "filter", "FORWARD", 3, vec![Expr::Verdict(Verdict::Jump("DOCKER-USER".into()))], None),
            rule(2, "filter", "DOCKER-USER", 4, vec![Expr::Verdict(Verdict::Return)], None),
        ];
        let ifnames = [(2, "veth-ext".to_string()), (3, "MyDocker0".to_string())].into_iter().collect();
        Catalog { chains, rules, ifnames }
    }

    /// The events of one request through a published port, dropped by a Docker-style FORWARD
    /// policy (`forward_drops`) or accepted.
    fn request(id: u32, forward_drops: bool) -> Vec<Ev> {
        let before = tcp(EXT, 40000, HOST, 9090, 0x02);
        let after = tcp(EXT, 40000, CTR, 8080, 0x02);
        let e = |chain, kind, pkt: Option<(Vec<u8>, Vec<u8>)>| Ev {
            id,
            family: 1,
            table: "netnat",
            chain,
            kind,
            pkt,
            iif: Some(2),
            ..Ev::default()
        };
        let mut v = vec![
            Ev { handle: Some(20), verdict: Some((-1, None)), ..e("trace-pre", 3, Some(before.clone())) },
            Ev { policy: Some(1), ..e("guard", 1, Some(before.clone())) },
            Ev { handle: Some(7), verdict: Some((1, None)), ..e("prerouting", 3, Some(before)) },
            Ev {
                handle: Some(10),
                verdict: Some((1, None)),
                oif: Some(3),
                ct_id: Some(77),
                ..e("forward", 3, Some(after.clone()))
            },
        ];
        let f = |kind, handle, verdict, pkt| Ev {
            id,
            family: 2,
            table: "filter",
            chain: "FORWARD",
            kind,
            handle,
            verdict,
            pkt,
            iif: Some(2),
            oif: Some(3),
            ..Ev::default()
        };
        v.push(f(3, Some(3), Some((-3, Some("DOCKER-USER"))), Some(after)));
        v.push(Ev { chain: "DOCKER-USER", ..f(3, Some(4), Some((-5, None)), None) });
        if forward_drops {
            v.push(Ev { policy: Some(0), ..f(1, None, None, None) });
        } else {
            v.push(Ev { policy: Some(1), ..f(1, None, None, None) });
        }
        v
    }

    fn collect(evs: &[Ev], limit: usize) -> (Collector, Vec<PacketReport>) {
        let mut c = Collector::new(limit);
        for (i, e) in evs.iter().enumerate() {
            let ev = parse_event(&message(e)).unwrap().expect("a trace event");
            c.push(ev, i as u64, &catalog());
        }
        c.finish();
        let reports = (0..c.len()).map(|i| c.report(i, &catalog())).collect();
        (c, reports)
    }

    #[test]
    fn events_parse_back() {
        let evs = request(5, true);
        let ev = parse_event(&message(&evs[3])).unwrap().unwrap();
        assert_eq!((ev.id, ev.family, ev.table.as_str(), ev.chain.as_str()), (5, 1, "netnat", "forward"));
        assert_eq!((ev.kind, ev.handle, ev.verdict.clone()), (EventKind::Rule, Some(10), Some((1, None))));
        assert_eq!((ev.iif, ev.oif, ev.ct.and_then(|c| c.id)), (Some(2), Some(3), Some(77)));
        let h = Headers::decode(ev.network.as_deref().unwrap(), ev.transport.as_deref()).unwrap();
        assert_eq!(h.to_string(), "tcp 198.51.100.2:40000 > 172.16.1.1:8080 [SYN]");
        let jump = parse_event(&message(&evs[4])).unwrap().unwrap();
        assert_eq!(jump.verdict, Some((-3, Some("DOCKER-USER".into()))));
        // Not a trace event; a cut one.
        let mut other = message(&evs[0]);
        other[4] = 0;
        assert_eq!(parse_event(&other), Ok(None));
        let m = message(&evs[0]);
        assert!(parse_event(&m[..10]).is_err());
        let mut short = m.clone();
        short[..4].copy_from_slice(&((m.len() + 8) as u32).to_ne_bytes());
        assert!(parse_event(&short).is_err());
    }

    #[test]
    fn a_dropped_request_names_the_chain_and_the_nat() {
        let (_, ps) = collect(&request(5, true), 10);
        assert_eq!(ps.len(), 1);
        let p = &ps[0];
        assert_eq!(p.direction, Direction::Original);
        assert_eq!(p.fate.verdict, "dropped");
        assert_eq!(p.fate.text, "dropped by table ip filter chain FORWARD: policy drop");
        assert_eq!(p.nat.len(), 1);
        assert_eq!(
            (p.nat[0].kind.as_str(), p.nat[0].from.as_str(), p.nat[0].to.as_str()),
            ("dnat", "198.51.100.1:9090", "172.16.1.1:8080")
        );
        assert_eq!(p.nat[0].by.as_deref(), Some("inet netnat prerouting rule 7"));
        let text = render_packet(p);
        assert!(text.starts_with("packet 1 (original): tcp 198.51.100.2:40000 > 198.51.100.1:9090 [SYN] in veth-ext\n"));
        assert!(!text.contains("trace-pre"), "netnat trace's own chain is not shown:\n{text}");
        assert!(text.contains("prerouting -100  inet netnat prerouting: rule 7: meta nfproto ipv4 fib daddr type local ct mark set th dport & 0xffff0000 ^ 0x00004e04 dnat ip to meta l4proto . th dport map @pub_any4 \"IPv4 ports published on every local address\" -> accept"), "{text}");
        assert!(
            text.contains("dnat: 198.51.100.1:9090 -> 172.16.1.1:8080 (by inet netnat prerouting rule 7)"),
            "{text}"
        );
        assert!(text.contains("                   ip filter DOCKER-USER: rule 4: return\n"), "{text}");
        assert!(text.contains("  forward 0        ip filter FORWARD: rule 3: jump DOCKER-USER\n"), "{text}");
        assert!(
            text.contains("ip filter FORWARD: policy drop\n  => dropped by table ip filter chain FORWARD: policy drop"),
            "{text}"
        );
        let c = connections(&ps);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].summary,
            "tcp 198.51.100.2:40000 > 198.51.100.1:9090: DNAT to 172.16.1.1:8080; dropped by table ip filter chain \
             FORWARD: policy drop (1 packet: 1 original, 0 reply)"
        );
    }

    #[test]
    fn reused_ids_limits_and_foreign_events() {
        // Two packets with the same kernel id: netnat's mark starts each.
        let mut evs = request(5, false);
        evs.extend(request(5, false));
        // Events of a packet nobody here marked.
        evs.push(Ev { id: 9, family: 1, table: "netnat", chain: "guard", kind: 1, policy: Some(1), ..Ev::default() });
        let (c, ps) = collect(&evs, 10);
        assert_eq!(ps.len(), 2);
        assert_eq!(c.ignored, 1);
        assert!(ps.iter().all(|p| p.visits.len() == 5 && p.fate.text == "accepted, forwarded out MyDocker0"));
        assert!(c.has_conntrack_info());
        // Same conntrack id: one connection; not answered, since no reply was seen.
        let conn = connections(&ps);
        assert_eq!(conn.len(), 1);
        assert_eq!((conn[0].packets, conn[0].outcome.as_str(), conn[0].answered), (2, "arrived", false));
        assert!(conn[0].summary.contains("arrived at 172.16.1.1:8080; no answer seen"), "{}", conn[0].summary);
        // A limit of one: the second packet and everything after it is left out.
        let (c, ps) = collect(&evs, 1);
        assert_eq!(ps.len(), 1);
        assert_eq!(c.ignored, 7 + 1, "the second packet's 7 events and the foreign one");
        assert!(c.full());
    }

    #[test]
    fn packets_settle_after_a_quiet_time() {
        let mut c = Collector::new(3);
        for (i, e) in request(5, false).iter().enumerate() {
            c.push(parse_event(&message(e)).unwrap().unwrap(), 100 + i as u64, &catalog());
        }
        assert!(c.settle(150, 100).is_empty());
        assert_eq!(c.settle(206, 100), vec![0]);
        assert!(!c.full(), "1 of 3 packets");
        assert!(c.settle(10_000, 100).is_empty());
    }

    #[test]
    fn a_reply_answers_the_connection() {
        let mut evs = request(5, false);
        let reply = tcp(CTR, 8080, EXT, 40000, 0x12);
        let e = |chain, kind, pkt| Ev {
            id: 6,
            family: 1,
            table: "netnat",
            chain,
            kind,
            pkt,
            iif: Some(3),
            ..Ev::default()
        };
        evs.push(Ev {
            handle: Some(21),
            verdict: Some((-1, None)),
            ct_id: Some(77),
            ..e("trace-pre-reply", 3, Some(reply.clone()))
        });
        evs.push(Ev {
            handle: Some(10),
            verdict: Some((1, None)),
            oif: Some(2),
            ct_id: Some(77),
            ..e("forward", 3, Some(reply))
        });
        let (_, ps) = collect(&evs, 10);
        assert_eq!(ps[1].direction, Direction::Reply);
        assert_eq!(ps[1].fate.text, "accepted, forwarded out veth-ext");
        let conn = connections(&ps);
        assert_eq!(conn.len(), 1);
        assert_eq!(
            conn[0].summary,
            "tcp 198.51.100.2:40000 > 198.51.100.1:9090: DNAT to 172.16.1.1:8080; arrived at 172.16.1.1:8080 and was \
             answered (2 packets: 1 original, 1 reply)"
        );
    }

    #[test]
    fn a_local_delivery_without_nat_says_nothing_translates_it() {
        let pkt = tcp(EXT, 40000, HOST, 22, 0x02);
        let evs = vec![
            Ev {
                id: 1,
                family: 1,
                table: "netnat",
                chain: "trace-pre",
                kind: 3,
                handle: Some(20),
                verdict: Some((-1, None)),
                pkt: Some(pkt.clone()),
                ..Ev::default()
            },
            Ev {
                id: 1,
                family: 2,
                table: "filter",
                chain: "INPUT",
                kind: 1,
                policy: Some(1),
                pkt: Some(pkt),
                ..Ev::default()
            },
        ];
        let mut cat = catalog();
        cat.chains.push(base(2, "filter", "INPUT", 1, 0, 1));
        let mut c = Collector::new(5);
        for e in &evs {
            c.push(parse_event(&message(e)).unwrap().unwrap(), 0, &cat);
        }
        c.finish();
        let p = c.report(0, &cat);
        assert_eq!(p.fate.text, "accepted, delivered to this host");
        let conn = connections(&[p]);
        assert!(
            conn[0].summary.contains("not translated (no table DNATs it); arrived at 198.51.100.1:22"),
            "{}",
            conn[0].summary
        );
    }

    #[test]
    fn trace_chains_are_not_netnat_layout() {
        let st = crate::model::State::default();
        let want = crate::ruleset::desired(&st);
        let mut live = crate::ruleset::fake::live_after(&want, 0, 0);
        assert!(trace_chains_in(&live).is_empty());
        live.chains.push(LiveChain { table: "netnat".into(), family: 1, name: "trace-pre".into(), base: None });
        live.rules.push(LiveRule {
            table: "netnat".into(),
            family: 1,
            chain: "trace-pre".into(),
            handle: 99,
            exprs: set_nftrace(),
            comment: None,
        });
        assert_eq!(trace_chains_in(&live), ["trace-pre"]);
        assert!(crate::ruleset::plan(&want, Some(&live)).is_empty(), "a trace's chain is not drift");
        let only = LiveTable { chains: live.chains[live.chains.len() - 1..].to_vec(), ..LiveTable::default() };
        assert_eq!(without_trace(&only), None);
    }
}
