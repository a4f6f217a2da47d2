//! netnat's nftables layout (pure): what table `inet netnat` should contain for a `State`, how
//! that differs from what the kernel has (`plan`), and how both print in nft syntax.
//!
//! Layout (see docs/nft-layout.md for the why):
//! - `guard`       filter, prerouting, priority raw (-300): drop 127.0.0.0/8 arriving from outside.
//! - `prerouting`  nat, prerouting, dstnat (-100): DNAT through the two port maps.
//! - `output`      nat, output, dstnat (-100): the same for connections made by the host itself.
//! - `forward`     filter, forward, filter (0): internal networks sealed first; DNAT'd packets jump
//!   to `published`; then only established traffic enters a bridge.
//! - `published`   regular chain: counts each DNAT'd packet per port (`fwd_any4`/`fwd_addr4`), accepts.
//! - `postrouting` nat, postrouting, srcnat (100): egress masquerade, hairpin and localhost SNAT.
//! - maps `pub_any4` (`meta l4proto . th dport`) and `pub_addr4` (`ip daddr . meta l4proto . th
//!   dport`) → `ipv4_addr . inet_service`: one element per published port, so rules never change
//!   when ports are published and per-packet cost does not grow with their number.

use crate::model::{Mapping, Network, State};
use crate::nft::expr::{self, CmpOp, Expr, Verdict, *};
use crate::nft::{LiveElem, LiveTable};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

pub const TABLE: &str = "netnat";
pub const FAMILY_NAME: &str = "inet";
pub const MAP_ANY: &str = "pub_any4";
pub const MAP_ADDR: &str = "pub_addr4";
/// Traffic counters per published port: the NAT maps only see a connection's first packet, so
/// the forward chain looks every DNAT'd packet up in these sets (same keys as the maps).
pub const COUNT_ANY: &str = "fwd_any4";
pub const COUNT_ADDR: &str = "fwd_addr4";

// Hook priorities from the nftables wiki ("Netfilter hooks"): NF_IP_PRI_RAW, _NAT_DST, _FILTER, _NAT_SRC.
pub const PRIO_RAW: i32 = -300;
pub const PRIO_DSTNAT: i32 = -100;
pub const PRIO_FILTER: i32 = 0;
pub const PRIO_SRCNAT: i32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }
    pub fn name(self) -> &'static str {
        ["prerouting", "input", "forward", "output", "postrouting"][self.number() as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

impl ChainKind {
    pub fn name(self) -> &'static str {
        match self {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    pub name: &'static str,
    /// None for a regular chain, reached only by a jump.
    pub base: Option<BaseSpec>,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    pub hook: Hook,
    pub kind: ChainKind,
    pub priority: i32,
}

const fn base(name: &'static str, hook: Hook, kind: ChainKind, priority: i32) -> ChainSpec {
    ChainSpec { name, base: Some(BaseSpec { hook, kind, priority }) }
}

pub const CHAINS: [ChainSpec; 6] = [
    base("guard", Hook::Prerouting, ChainKind::Filter, PRIO_RAW),
    base("prerouting", Hook::Prerouting, ChainKind::Nat, PRIO_DSTNAT),
    base("output", Hook::Output, ChainKind::Nat, PRIO_DSTNAT),
    base("forward", Hook::Forward, ChainKind::Filter, PRIO_FILTER),
    base("postrouting", Hook::Postrouting, ChainKind::Nat, PRIO_SRCNAT),
    // Reached from `forward` by DNAT'd packets only: counts them per port, then accepts.
    ChainSpec { name: "published", base: None },
];

/// One component of a set key or map value, as nft names its data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ipv4Addr,
    InetProto,
    InetService,
}

impl Field {
    fn type_id(self) -> u32 {
        match self {
            Field::Ipv4Addr => 7,
            Field::InetProto => 12,
            Field::InetService => 13,
        }
    }
    fn from_type_id(t: u32) -> Option<Field> {
        [Field::Ipv4Addr, Field::InetProto, Field::InetService].into_iter().find(|f| f.type_id() == t)
    }
    fn name(self) -> &'static str {
        match self {
            Field::Ipv4Addr => "ipv4_addr",
            Field::InetProto => "inet_proto",
            Field::InetService => "inet_service",
        }
    }
    /// Bytes in a register: every component of a concatenation is padded to 4.
    fn len(self) -> usize {
        match self {
            Field::Ipv4Addr => 4,
            Field::InetProto => 1,
            Field::InetService => 2,
        }
    }
    fn render(self, b: &[u8]) -> String {
        match self {
            Field::Ipv4Addr => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
            Field::InetProto => expr::proto_name(b[0]),
            Field::InetService => u16::from_be_bytes([b[0], b[1]]).to_string(),
        }
    }
}

/// Concatenated type id, as nft builds it: 6 bits per component.
fn concat_type(fields: &[Field]) -> u32 {
    fields.iter().fold(0, |acc, f| (acc << 6) | f.type_id())
}
fn concat_len(fields: &[Field]) -> u32 {
    (fields.len() * 4) as u32
}
/// Splits a concatenated type id back into fields (None if a component is not one of ours).
pub fn fields_of(type_id: u32, len: u32) -> Option<Vec<Field>> {
    let n = (len as usize).div_ceil(4);
    let mut out: Vec<Field> = (0..n).map(|i| Field::from_type_id((type_id >> (6 * i)) & 63)).collect::<Option<_>>()?;
    out.reverse();
    (concat_type(&out) == type_id).then_some(out)
}

/// Renders concatenated bytes as `a . b . c`.
pub fn render_concat(fields: &[Field], bytes: &[u8]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| match bytes.get(i * 4..i * 4 + f.len()) {
            Some(b) => f.render(b),
            None => "?".into(),
        })
        .collect();
    parts.join(" . ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: &'static str,
    pub key: &'static [Field],
    /// Empty for a plain set.
    pub data: &'static [Field],
    /// A counter on every element.
    pub counter: bool,
}

impl SetSpec {
    /// (data type, data length) for a map, None for a plain set.
    pub fn data_desc(&self) -> Option<(u32, u32)> {
        (!self.data.is_empty()).then(|| (self.data_type(), self.data_len()))
    }
    pub fn key_type(&self) -> u32 {
        concat_type(self.key)
    }
    pub fn key_len(&self) -> u32 {
        concat_len(self.key)
    }
    pub fn data_type(&self) -> u32 {
        concat_type(self.data)
    }
    pub fn data_len(&self) -> u32 {
        concat_len(self.data)
    }
    fn type_text(fields: &[Field]) -> String {
        fields.iter().map(|f| f.name()).collect::<Vec<_>>().join(" . ")
    }
}

pub const SETS: [SetSpec; 4] = [
    // The NAT maps only see a connection's first packet: their counters would count connections
    // at a cost on every insert and dump, so traffic is counted by the forward sets instead.
    SetSpec {
        name: MAP_ANY,
        key: &[Field::InetProto, Field::InetService],
        data: &[Field::Ipv4Addr, Field::InetService],
        counter: false,
    },
    SetSpec {
        name: MAP_ADDR,
        key: &[Field::Ipv4Addr, Field::InetProto, Field::InetService],
        data: &[Field::Ipv4Addr, Field::InetService],
        counter: false,
    },
    SetSpec { name: COUNT_ANY, key: &[Field::InetProto, Field::InetService], data: &[], counter: true },
    SetSpec {
        name: COUNT_ADDR,
        key: &[Field::Ipv4Addr, Field::InetProto, Field::InetService],
        data: &[],
        counter: true,
    },
];

/// The counting set that goes with a NAT map.
pub fn counter_set_of(map: &str) -> &'static str {
    if map == MAP_ADDR {
        COUNT_ADDR
    } else {
        COUNT_ANY
    }
}

pub fn set_spec(name: &str) -> Option<&'static SetSpec> {
    SETS.iter().find(|s| s.name == name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub chain: &'static str,
    pub exprs: Vec<Expr>,
    pub comment: String,
}

/// Element bytes: key → data.
pub type Elems = BTreeMap<Vec<u8>, Vec<u8>>;
/// Elements to add, per set: (key, data) with empty data for a plain set.
type ElemList = Vec<(Vec<u8>, Vec<u8>)>;

/// What the table should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub rules: Vec<RuleSpec>,
    pub elems: BTreeMap<&'static str, Elems>,
}

fn pad4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[..b.len()].copy_from_slice(b);
    out
}

/// The map element(s) of one mapping: (map name, key, data) for each port of its range.
pub fn mapping_elems(m: &Mapping) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    m.ports()
        .map(|(hp, cp)| {
            let mut key = Vec::with_capacity(12);
            if let Some(ip) = m.host_ip {
                key.extend(ip.octets());
            }
            key.extend(pad4(&[m.protocol.number()]));
            key.extend(pad4(&hp.to_be_bytes()));
            let mut data = m.container_ip.octets().to_vec();
            data.extend(pad4(&cp.to_be_bytes()));
            (if m.host_ip.is_some() { MAP_ADDR } else { MAP_ANY }, key, data)
        })
        .collect()
}

fn rule(chain: &'static str, comment: impl Into<String>, parts: Vec<Vec<Expr>>) -> RuleSpec {
    RuleSpec { chain, exprs: parts.concat(), comment: comment.into() }
}

fn verdict(v: Verdict) -> Vec<Expr> {
    vec![Expr::Counter, Expr::Verdict(v)]
}

/// DNAT through a map: `dnat ip to KEY map @MAP`; `by_addr` adds `ip daddr` in front of the key.
fn dnat_via_map(by_addr: bool) -> Vec<Expr> {
    let (map, proto_reg, port_reg) = if by_addr { (MAP_ADDR, REG32_01, REG32_02) } else { (MAP_ANY, REG_1, REG32_01) };
    let mut v = vec![];
    if by_addr {
        v.push(load_ip_daddr(REG_1));
    }
    v.push(load_meta(META_L4PROTO, proto_reg));
    v.push(load_th_dport(port_reg));
    v.push(Expr::Lookup { sreg: REG_1, set: map.into(), dreg: Some(REG_1), flags: 0 });
    v.push(Expr::Nat { kind: NAT_DNAT, family: NFPROTO_IPV4 as u32, addr: Some(REG_1), proto: Some(REG32_01) });
    v
}

/// `[ct original ip daddr .] meta l4proto . ct original proto-dst @SET accept`: the lookup bumps the
/// matching element's counter (every packet of a published connection, both directions; `ct
/// original` is the connection before DNAT), and the packet is accepted.
fn count_and_accept(by_addr: bool) -> Vec<Expr> {
    let (set, proto_reg, port_reg) =
        if by_addr { (COUNT_ADDR, REG32_01, REG32_02) } else { (COUNT_ANY, REG_1, REG32_01) };
    let mut v = vec![];
    if by_addr {
        v.push(load_ct_original(CT_DST_IP, REG_1));
    }
    v.push(load_meta(META_L4PROTO, proto_reg));
    v.push(load_ct_original(CT_PROTO_DST, port_reg));
    v.push(Expr::Lookup { sreg: REG_1, set: set.into(), dreg: None, flags: 0 });
    v.push(Expr::Verdict(Verdict::Accept));
    v
}

/// Which way traffic crosses a bridge's boundary.
#[derive(Clone, Copy)]
enum Crossing {
    /// From another interface into the bridge.
    In,
    /// From the bridge out to another interface.
    Out,
}

/// `oifname BR iifname != BR counter drop` (into) or its mirror (out of).
fn drop_crossing(bridge: &str, way: Crossing) -> Vec<Vec<Expr>> {
    let (inside, outside) = match way {
        Crossing::In => (META_OIFNAME, META_IIFNAME),
        Crossing::Out => (META_IIFNAME, META_OIFNAME),
    };
    vec![match_ifname(inside, CmpOp::Eq, bridge), match_ifname(outside, CmpOp::Neq, bridge), verdict(Verdict::Drop)]
}

fn subnet_of(n: &Network) -> Vec<Expr> {
    match_ip_prefix(load_ip_saddr(REG_1), n.subnet.addr, n.subnet.prefix)
}

/// The whole desired table for a state. Rules are static per network; ports are elements.
pub fn desired(state: &State) -> Desired {
    let mut elems: BTreeMap<&'static str, Elems> = SETS.iter().map(|s| (s.name, Elems::new())).collect();
    for m in &state.mappings {
        for (map, k, d) in mapping_elems(m) {
            elems.entry(counter_set_of(map)).or_default().insert(k.clone(), vec![]);
            elems.entry(map).or_default().insert(k, d);
        }
    }
    Desired { rules: desired_rules(state), elems }
}

/// The rules of the desired table, in chain order. They depend on the networks only.
pub fn desired_rules(state: &State) -> Vec<RuleSpec> {
    let mut rules = vec![
        rule(
            "guard",
            "drop 127.0.0.0/8 from outside (CVE-2020-8558)",
            vec![
                match_ipv4(),
                match_ip_prefix(load_ip_daddr(REG_1), Ipv4Addr::new(127, 0, 0, 0), 8),
                match_ifname(META_IIFNAME, CmpOp::Neq, "lo"),
                verdict(Verdict::Drop),
            ],
        ),
        rule("prerouting", "ports published on one address", vec![match_ipv4(), dnat_via_map(true)]),
        rule(
            "prerouting",
            "ports published on every local address",
            vec![match_ipv4(), match_daddr_local(), dnat_via_map(false)],
        ),
        rule("output", "ports published on one address, from the host", vec![match_ipv4(), dnat_via_map(true)]),
        rule(
            "output",
            "ports published on every local address, from the host",
            vec![match_ipv4(), match_daddr_local(), dnat_via_map(false)],
        ),
        // One check for every forwarded packet; the DNAT'd ones are counted and accepted in
        // `published`, so the per-packet cost stays one ct test for everything else.
        rule(
            "forward",
            "published ports: count and accept",
            vec![match_ct_bits(CT_STATUS, CT_STATUS_DNAT), vec![Expr::Verdict(Verdict::Jump("published".into()))]],
        ),
        rule(
            "forward",
            "replies and related traffic",
            vec![
                match_ct_bits(CT_STATE, CT_STATE_ESTABLISHED | CT_STATE_RELATED),
                vec![Expr::Verdict(Verdict::Accept)],
            ],
        ),
        rule("published", "ports published on every address", vec![count_and_accept(false)]),
        rule("published", "ports published on one address", vec![count_and_accept(true)]),
        rule("published", "DNAT'd by another table", vec![vec![Expr::Verdict(Verdict::Accept)]]),
        rule(
            "postrouting",
            "localhost to a published port",
            vec![
                match_ipv4(),
                match_ip_prefix(load_ip_saddr(REG_1), Ipv4Addr::new(127, 0, 0, 0), 8),
                match_ct_bits(CT_STATUS, CT_STATUS_DNAT),
                vec![Expr::Masquerade],
            ],
        ),
    ];
    // Internal networks first: nothing crosses their bridge, not even published or related traffic.
    let internal: Vec<RuleSpec> = state
        .networks
        .values()
        .filter(|n| n.internal)
        .flat_map(|n| {
            [
                rule(
                    "forward",
                    format!("{}: internal, nothing comes in", n.name),
                    drop_crossing(&n.bridge, Crossing::In),
                ),
                rule(
                    "forward",
                    format!("{}: internal, nothing goes out", n.name),
                    drop_crossing(&n.bridge, Crossing::Out),
                ),
            ]
        })
        .collect();
    let first_forward = rules.iter().position(|r| r.chain == "forward").expect("forward rules exist");
    rules.splice(first_forward..first_forward, internal);
    for n in state.networks.values() {
        let br = n.bridge.as_str();
        if !n.internal {
            rules.push(rule(
                "forward",
                format!("{}: only published ports come in", n.name),
                drop_crossing(br, Crossing::In),
            ));
        }
        rules.push(rule(
            "postrouting",
            format!("{}: hairpin to a published port", n.name),
            vec![
                match_ipv4(),
                match_ct_bits(CT_STATUS, CT_STATUS_DNAT),
                subnet_of(n),
                match_ifname(META_OIFNAME, CmpOp::Eq, br),
                vec![Expr::Masquerade],
            ],
        ));
        if n.masquerade && !n.internal {
            rules.push(rule(
                "postrouting",
                format!("{}: egress", n.name),
                vec![match_ipv4(), subnet_of(n), match_ifname(META_OIFNAME, CmpOp::Neq, br), vec![Expr::Masquerade]],
            ));
        }
    }
    // Keep rules of a chain together, in the order above: the chain's rules are compared as a list.
    let order = |c: &str| CHAINS.iter().position(|s| s.name == c).unwrap_or(usize::MAX);
    rules.sort_by_key(|r| order(r.chain));
    rules
}

/// The element changes for mappings added and removed (NAT map and traffic counter), as one
/// transaction's worth of ops: deletes first, so a changed mapping is delete + add.
pub fn plan_mapping_changes(added: &[Mapping], removed: &[Mapping]) -> Vec<NftOp> {
    let mut dels: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut adds: BTreeMap<&'static str, ElemList> = BTreeMap::new();
    for m in removed {
        for (map, k, _) in mapping_elems(m) {
            dels.entry(counter_set_of(map)).or_default().push(k.clone());
            dels.entry(map).or_default().push(k);
        }
    }
    for m in added {
        for (map, k, d) in mapping_elems(m) {
            adds.entry(counter_set_of(map)).or_default().push((k.clone(), vec![]));
            adds.entry(map).or_default().push((k, d));
        }
    }
    let dels = dels.into_iter().map(|(set, keys)| NftOp::DelElems { set: set.into(), keys });
    let adds = adds.into_iter().map(|(set, elems)| NftOp::AddElems { set: set.into(), elems });
    dels.chain(adds).collect()
}

/// One change to table `inet netnat`. A list of them goes to the kernel as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftOp {
    AddTable,
    DelTable,
    AddChain(ChainSpec),
    DelChain(String),
    FlushChain(String),
    AddRule(RuleSpec),
    AddSet(SetSpec),
    DelSet(String),
    FlushSet(String),
    AddElems { set: String, elems: Vec<(Vec<u8>, Vec<u8>)> },
    DelElems { set: String, keys: Vec<Vec<u8>> },
}

/// The changes that turn `live` (None: no table) into `want`.
/// Rules are compared chain by chain; a chain that differs is flushed and refilled in the same
/// transaction. Elements are compared one by one, so an unchanged mapping keeps its counters.
pub fn plan(want: &Desired, live: Option<&LiveTable>) -> Vec<NftOp> {
    let Some(live) = live.filter(|l| layout_matches(l)) else {
        // No table, or chains/maps of another shape: build the whole table from scratch.
        let mut ops = vec![];
        if live.is_some() {
            ops.extend([NftOp::AddTable, NftOp::DelTable]);
        }
        ops.push(NftOp::AddTable);
        ops.extend(CHAINS.iter().cloned().map(NftOp::AddChain));
        ops.extend(SETS.iter().cloned().map(NftOp::AddSet));
        ops.extend(want.rules.iter().cloned().map(NftOp::AddRule));
        for (set, elems) in &want.elems {
            if !elems.is_empty() {
                let elems = elems.iter().map(|(k, d)| (k.clone(), d.clone())).collect();
                ops.push(NftOp::AddElems { set: set.to_string(), elems });
            }
        }
        return ops;
    };
    let mut ops = vec![];
    for c in &CHAINS {
        let have: Vec<(&[Expr], Option<&str>)> = live
            .rules
            .iter()
            .filter(|r| r.chain == c.name)
            .map(|r| (r.exprs.as_slice(), r.comment.as_deref()))
            .collect();
        let need: Vec<(&[Expr], Option<&str>)> = want
            .rules
            .iter()
            .filter(|r| r.chain == c.name)
            .map(|r| (r.exprs.as_slice(), Some(r.comment.as_str())))
            .collect();
        if have != need {
            ops.push(NftOp::FlushChain(c.name.into()));
            ops.extend(want.rules.iter().filter(|r| r.chain == c.name).cloned().map(NftOp::AddRule));
        }
    }
    for (set, need) in &want.elems {
        let have: BTreeMap<&[u8], &[u8]> = live
            .elems
            .get(*set)
            .map(|v| v.iter().map(|e: &LiveElem| (e.key.as_slice(), e.data.as_slice())).collect())
            .unwrap_or_default();
        let keys: Vec<Vec<u8>> = have
            .iter()
            .filter(|(k, d)| need.get(**k).map(|n| n.as_slice()) != Some(**d))
            .map(|(k, _)| k.to_vec())
            .collect();
        let elems: Vec<(Vec<u8>, Vec<u8>)> = need
            .iter()
            .filter(|(k, d)| have.get(k.as_slice()) != Some(&d.as_slice()))
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        if !keys.is_empty() {
            ops.push(NftOp::DelElems { set: set.to_string(), keys });
        }
        if !elems.is_empty() {
            ops.push(NftOp::AddElems { set: set.to_string(), elems });
        }
    }
    ops
}

/// The live table has exactly netnat's chains (same hooks) and maps (same types).
fn layout_matches(live: &LiveTable) -> bool {
    let chains_ok = live.chains.len() == CHAINS.len()
        && CHAINS.iter().all(|c| {
            live.chains.iter().any(|l| {
                l.name == c.name
                    && match (&l.base, &c.base) {
                        (Some(l), Some(c)) => {
                            l.hook == c.hook.number() && l.priority == c.priority && l.kind == c.kind.name()
                        }
                        (None, None) => true,
                        _ => false,
                    }
            })
        });
    let sets_ok = live.sets.len() == SETS.len()
        && SETS.iter().all(|s| {
            live.sets.iter().any(|l| {
                l.name == s.name && l.key_type == s.key_type() && l.data == s.data_desc() && l.counter == s.counter
            })
        });
    chains_ok && sets_ok
}

// ---- nft syntax ----

fn key_len_of(set: &str) -> Option<u32> {
    set_spec(set).map(|s| s.key_len())
}

pub fn render_rule(exprs: &[Expr], comment: Option<&str>) -> String {
    let body = expr::render(exprs, &key_len_of);
    match comment {
        Some(c) => format!("{body} comment \"{c}\""),
        None => body,
    }
}

fn chain_header(c: &ChainSpec) -> String {
    match &c.base {
        Some(b) => format!(" type {} hook {} priority {}; policy accept; ", b.kind.name(), b.hook.name(), b.priority),
        None => " ".into(),
    }
}

fn elem_text(set: &str, key: &[u8], data: Option<&[u8]>) -> String {
    match set_spec(set) {
        Some(s) => match data.filter(|d| !d.is_empty()) {
            Some(d) => format!("{} : {}", render_concat(s.key, key), render_concat(s.data, d)),
            None => render_concat(s.key, key),
        },
        None => expr::hex(key),
    }
}

impl fmt::Display for NftOp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let t = format!("{FAMILY_NAME} {TABLE}");
        match self {
            NftOp::AddTable => write!(f, "add table {t}"),
            NftOp::DelTable => write!(f, "delete table {t}"),
            NftOp::AddChain(c) => write!(f, "add chain {t} {} {{{}}}", c.name, chain_header(c)),
            NftOp::DelChain(c) => write!(f, "delete chain {t} {c}"),
            NftOp::FlushChain(c) => write!(f, "flush chain {t} {c}"),
            NftOp::AddRule(r) => write!(f, "add rule {t} {} {}", r.chain, render_rule(&r.exprs, Some(&r.comment))),
            NftOp::AddSet(s) => {
                let counter = if s.counter { " counter;" } else { "" };
                match s.data {
                    [] => write!(f, "add set {t} {} {{ type {};{counter} }}", s.name, SetSpec::type_text(s.key)),
                    data => write!(
                        f,
                        "add map {t} {} {{ type {} : {};{counter} }}",
                        s.name,
                        SetSpec::type_text(s.key),
                        SetSpec::type_text(data)
                    ),
                }
            }
            NftOp::DelSet(s) => write!(f, "delete map {t} {s}"),
            NftOp::FlushSet(s) => write!(f, "flush map {t} {s}"),
            NftOp::AddElems { set, elems } => {
                let items: Vec<String> = elems.iter().map(|(k, d)| elem_text(set, k, Some(d))).collect();
                write!(f, "add element {t} {set} {{ {} }}", items.join(", "))
            }
            NftOp::DelElems { set, keys } => {
                let items: Vec<String> = keys.iter().map(|k| elem_text(set, k, None)).collect();
                write!(f, "delete element {t} {set} {{ {} }}", items.join(", "))
            }
        }
    }
}

/// The live table in nft syntax, deterministic (elements sorted, no handles or counters unless
/// asked), so two outputs can be diffed.
pub fn render_table(live: &LiveTable, counters: bool) -> String {
    let mut out = format!("table {FAMILY_NAME} {TABLE} {{\n");
    let mut sets = live.sets.clone();
    sets.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &sets {
        let key = fields_of(s.key_type, s.key_len);
        let data = s.data.and_then(|(t, l)| fields_of(t, l));
        let kind = if s.data.is_some() { "map" } else { "set" };
        let ty = match (&key, &data) {
            (Some(k), Some(d)) => format!("{} : {}", SetSpec::type_text(k), SetSpec::type_text(d)),
            (Some(k), None) => SetSpec::type_text(k),
            _ => format!("0x{:x}", s.key_type),
        };
        out += &format!("\t{kind} {} {{\n\t\ttype {ty}\n", s.name);
        if s.counter {
            out += "\t\tcounter\n";
        }
        let mut elems: Vec<&LiveElem> = live.elems.get(&s.name).map(|v| v.iter().collect()).unwrap_or_default();
        elems.sort_by(|a, b| (&a.key, &a.data).cmp(&(&b.key, &b.data)));
        if !elems.is_empty() {
            let items: Vec<String> = elems
                .iter()
                .map(|e| {
                    let k = key.as_ref().map(|k| render_concat(k, &e.key)).unwrap_or(expr::hex(&e.key));
                    let d = data.as_ref().map(|d| render_concat(d, &e.data)).unwrap_or(expr::hex(&e.data));
                    let c = match (counters, e.packets, e.bytes) {
                        (true, Some(p), Some(b)) => format!(" counter packets {p} bytes {b}"),
                        _ => String::new(),
                    };
                    if s.data.is_some() {
                        format!("{k}{c} : {d}")
                    } else {
                        format!("{k}{c}")
                    }
                })
                .collect();
            out += &format!("\t\telements = {{ {} }}\n", items.join(",\n\t\t\t     "));
        }
        out += "\t}\n\n";
    }
    let mut chains = live.chains.clone();
    let order = |n: &str| CHAINS.iter().position(|c| c.name == n).unwrap_or(usize::MAX);
    chains.sort_by(|a, b| (order(&a.name), &a.name).cmp(&(order(&b.name), &b.name)));
    for (i, c) in chains.iter().enumerate() {
        out += &format!("\tchain {} {{\n", c.name);
        if let Some(b) = &c.base {
            let hook = [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting]
                .into_iter()
                .find(|h| h.number() == b.hook)
                .map(|h| h.name().to_string())
                .unwrap_or(b.hook.to_string());
            let policy = if b.policy == 0 { "drop" } else { "accept" };
            out += &format!("\t\ttype {} hook {hook} priority {}; policy {policy};\n", b.kind, b.priority);
        }
        for r in live.rules.iter().filter(|r| r.chain == c.name) {
            out += &format!("\t\t{}\n", render_rule(&r.exprs, r.comment.as_deref()));
        }
        out += "\t}\n";
        if i + 1 < chains.len() {
            out += "\n";
        }
    }
    out += "}\n";
    out
}

/// Test support shared by the planner's and the audit's unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use crate::nft::{BaseChain, LiveChain, LiveRule, LiveSet};

    /// What the kernel would report after applying `want` (the fake backend: knftables style),
    /// every element having seen `packets` and `bytes`.
    pub(crate) fn live_after(want: &Desired, packets: u64, bytes: u64) -> LiveTable {
        let chains = CHAINS
            .iter()
            .map(|c| LiveChain {
                table: TABLE.into(),
                family: 1,
                name: c.name.into(),
                base: c.base.as_ref().map(|b| BaseChain {
                    hook: b.hook.number(),
                    priority: b.priority,
                    kind: b.kind.name().into(),
                    policy: 1,
                }),
            })
            .collect();
        let rules = want
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| LiveRule {
                table: TABLE.into(),
                family: 1,
                chain: r.chain.into(),
                handle: i as u64,
                exprs: r.exprs.clone(),
                comment: Some(r.comment.clone()),
            })
            .collect();
        let sets = SETS
            .iter()
            .map(|s| LiveSet {
                table: TABLE.into(),
                family: 1,
                name: s.name.into(),
                flags: 8,
                key_type: s.key_type(),
                key_len: s.key_len(),
                data: s.data_desc(),
                counter: s.counter,
            })
            .collect();
        let elems = want
            .elems
            .iter()
            .map(|(s, e)| {
                let v = e
                    .iter()
                    .map(|(k, d)| LiveElem {
                        key: k.clone(),
                        data: d.clone(),
                        packets: Some(packets),
                        bytes: Some(bytes),
                    })
                    .collect();
                (s.to_string(), v)
            })
            .collect();
        LiveTable { chains, rules, sets, elems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Network, State};
    use crate::nft::LiveRule;

    fn demo_state() -> State {
        let mut s = State::default();
        let n =
            Network::new("MyDocker0", "172.16.0.0/16".parse().unwrap(), Some("172.16.1.254".parse().unwrap()), None)
                .unwrap();
        s.networks.insert(n.name.clone(), n);
        s.mappings.push("9090:172.16.1.1:8080".parse().unwrap());
        s
    }

    #[test]
    fn empty_kernel_gets_whole_table_in_one_plan() {
        let ops = plan(&desired(&demo_state()), None);
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        assert_eq!(text[0], "add table inet netnat");
        assert!(text.contains(
            &"add map inet netnat pub_any4 { type inet_proto . inet_service : ipv4_addr . inet_service; }".to_string()
        ));
        assert!(text.contains(&"add element inet netnat pub_any4 { tcp . 9090 : 172.16.1.1 . 8080 }".to_string()));
        assert!(text.iter().any(|t| t
            == r#"add rule inet netnat postrouting meta nfproto ipv4 ip saddr 172.16.0.0/16 oifname != "MyDocker0" masquerade comment "MyDocker0: egress""#));
    }

    #[test]
    fn applied_state_plans_nothing() {
        let want = desired(&demo_state());
        assert_eq!(plan(&want, Some(&fake::live_after(&want, 0, 0))), vec![]);
    }

    #[test]
    fn one_new_port_sends_its_elements_and_no_rules() {
        let mut st = demo_state();
        let live = fake::live_after(&desired(&st), 0, 0);
        st.mappings.push("127.0.0.1:5353:172.16.1.2:53/udp".parse().unwrap());
        let text: Vec<String> = plan(&desired(&st), Some(&live)).iter().map(|o| o.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "add element inet netnat fwd_addr4 { 127.0.0.1 . udp . 5353 }",
                "add element inet netnat pub_addr4 { 127.0.0.1 . udp . 5353 : 172.16.1.2 . 53 }"
            ]
        );
    }

    #[test]
    fn mapping_changes_touch_only_their_elements() {
        let old: Mapping = "9090:172.16.1.1:8080".parse().unwrap();
        let new: Mapping = "9090:172.16.1.2:8080".parse().unwrap();
        let text: Vec<String> = plan_mapping_changes(&[new], &[old]).iter().map(|o| o.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "delete element inet netnat fwd_any4 { tcp . 9090 }",
                "delete element inet netnat pub_any4 { tcp . 9090 }",
                "add element inet netnat fwd_any4 { tcp . 9090 }",
                "add element inet netnat pub_any4 { tcp . 9090 : 172.16.1.2 . 8080 }",
            ]
        );
    }

    #[test]
    fn changed_target_is_delete_then_add() {
        let mut st = demo_state();
        let live = fake::live_after(&desired(&st), 0, 0);
        st.mappings[0].container_ip = "172.16.1.2".parse().unwrap();
        let text: Vec<String> = plan(&desired(&st), Some(&live)).iter().map(|o| o.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "delete element inet netnat pub_any4 { tcp . 9090 }",
                "add element inet netnat pub_any4 { tcp . 9090 : 172.16.1.2 . 8080 }"
            ]
        );
    }

    #[test]
    fn hand_edited_chain_is_flushed_and_refilled() {
        let want = desired(&demo_state());
        let mut live = fake::live_after(&want, 0, 0);
        live.rules.push(LiveRule {
            table: TABLE.into(),
            family: 1,
            chain: "forward".into(),
            handle: 99,
            exprs: vec![Expr::Verdict(Verdict::Drop)],
            comment: None,
        });
        let ops = plan(&want, Some(&live));
        assert_eq!(ops[0], NftOp::FlushChain("forward".into()));
        assert_eq!(ops.len(), 1 + want.rules.iter().filter(|r| r.chain == "forward").count());
    }

    #[test]
    fn rules_do_not_grow_with_ports() {
        let mut st = demo_state();
        let before = desired(&st).rules.len();
        st.mappings.push("10000-10999:172.16.1.1:10000-10999".parse().unwrap());
        let d = desired(&st);
        assert_eq!(d.rules.len(), before);
        assert_eq!(d.elems[MAP_ANY].len(), 1001);
    }

    #[test]
    fn concat_types_round_trip() {
        for s in &SETS {
            assert_eq!(fields_of(s.key_type(), s.key_len()).unwrap(), s.key.to_vec());
        }
        assert_eq!(SETS[0].key_type(), 781); // inet_proto . inet_service, as nft computes it
    }
}
