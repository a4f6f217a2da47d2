//! netnat's nftables layout (pure): what table `inet netnat` should contain for a `State`, how
//! that differs from what the kernel has (`plan`), and how both print in nft syntax.
//!
//! Layout (see docs/nft-layout.md for the why). Each family (IPv4, IPv6) has the same rules and
//! maps, built by the same functions from a `FamilySpec`:
//! - `guard`       filter, prerouting, priority raw (-300): drop loopback addresses arriving from outside.
//! - `prerouting`  nat, prerouting, dstnat (-100): DNAT through the two port maps of each family.
//! - `output`      nat, output, dstnat (-100): the same for connections made by the host itself.
//! - `forward`     filter, forward, filter (0): internal networks sealed first; DNAT'd packets jump
//!   to `published`; then only established traffic, and published ports of IPv6-routed networks
//!   (`routed6`), enter a bridge.
//! - `published`   regular chain: counts each DNAT'd packet per port (`fwd_*`), accepts.
//! - `postrouting` nat, postrouting, srcnat (100): egress masquerade, hairpin and localhost SNAT.
//! - maps `pub_any4|6` (`meta l4proto . th dport`) and `pub_addr4|6` (`ip[6] daddr . meta l4proto
//!   . th dport`) → `ipv4|6_addr . inet_service`: one element per published port, so rules never
//!   change when ports are published and per-packet cost does not grow with their number.

use crate::model::{Cidr, Family, Mapping, Network, State};
use crate::nft::expr::{self, CmpOp, Expr, Verdict, *};
pub use crate::nft::spec::*;
use crate::nft::{LiveElem, LiveRule, LiveTable};
use crate::trace;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub const MAP_ANY: &str = "pub_any4";
pub const MAP_ADDR: &str = "pub_addr4";
/// Traffic counters per published port: the NAT maps only see a connection's first packet, so
/// the forward chain looks every DNAT'd packet up in these sets. Ports published on every
/// address (both families) are counted by the connection mark their DNAT rule sets
/// (`any_mark`): `ct mark . meta l4proto`, one lookup, the forward chain's first rule. Ports
/// published on one address or interface are counted by `ct original` fields (same keys as
/// their maps), in the chain `published`.
pub const COUNT_ANY: &str = "fwd_any";
pub const COUNT_ADDR: &str = "fwd_addr4";
/// The connection mark of a connection DNAT'd to a port published on every address:
/// `th dport` in its first two bytes (network order, as the register holds it), then
/// `MARK_TAG` and the family's number (4 or 6). Host byte order does not matter: the mark is
/// written from and read back into a register byte for byte.
const MARK_TAG: u8 = 0x4e;
/// Published container ports of IPv6-routed networks: `ip6 daddr . meta l4proto . th dport`,
/// the container's own address and port (no DNAT), with a counter each.
pub const ROUTED6: &str = "routed6";

const fn base(name: &'static str, hook: Hook, kind: ChainKind, priority: i32) -> ChainSpec {
    ChainSpec { name, base: Some(BaseSpec { hook, kind, priority }) }
}

/// The guard runs just before the DNAT chain, in the NAT hook: only a connection's first packet
/// meets it (conntrack attaches every packet that could open a connection, so each such packet
/// meets it), and it drops before DNAT could send the packet elsewhere.
pub const PRIO_GUARD: i32 = PRIO_DSTNAT - 10;

pub const CHAINS: [ChainSpec; 6] = [
    base("guard", Hook::Prerouting, ChainKind::Nat, PRIO_GUARD),
    base("prerouting", Hook::Prerouting, ChainKind::Nat, PRIO_DSTNAT),
    base("output", Hook::Output, ChainKind::Nat, PRIO_DSTNAT),
    base("forward", Hook::Forward, ChainKind::Filter, PRIO_FILTER),
    base("postrouting", Hook::Postrouting, ChainKind::Nat, PRIO_SRCNAT),
    // Reached from `forward` by DNAT'd packets only: counts them per port, then accepts.
    ChainSpec { name: "published", base: None },
];

/// Everything that differs between the two families in netnat's table.
pub struct FamilySpec {
    pub family: Family,
    pub nfproto: u8,
    pub addr: Field,
    /// The NAT maps: every local address, one address (each names its counting set).
    pub map_any: &'static str,
    pub map_addr: &'static str,
    /// The NAT map of ports bound to an interface (`iifname . meta l4proto . th dport`).
    pub map_if: &'static str,
    /// Allow lists: sources allowed per published port (ranges), and the published ports that
    /// have a list (their element counters count the packets dropped); every address, one address.
    pub allow_any: &'static str,
    pub allow_addr: &'static str,
    pub deny_any: &'static str,
    pub deny_addr: &'static str,
    /// What the guard drops when it arrives from outside. None for IPv6: the kernel itself drops
    /// a packet for ::1 that arrives on another device than lo (ip6_rcv_core), before any hook.
    pub loopback: Option<(&'static str, u8)>,
}

pub const FAMILIES: [FamilySpec; 2] = [
    FamilySpec {
        family: Family::V4,
        nfproto: NFPROTO_IPV4,
        addr: Field::Ipv4Addr,
        map_any: MAP_ANY,
        map_addr: MAP_ADDR,
        map_if: "pub_if4",
        allow_any: "allow_any4",
        allow_addr: "allow_addr4",
        deny_any: "deny_any4",
        deny_addr: "deny_addr4",
        loopback: Some(("127.0.0.0", 8)),
    },
    FamilySpec {
        family: Family::V6,
        nfproto: NFPROTO_IPV6,
        addr: Field::Ipv6Addr,
        map_any: "pub_any6",
        map_addr: "pub_addr6",
        map_if: "pub_if6",
        allow_any: "allow_any6",
        allow_addr: "allow_addr6",
        deny_any: "deny_any6",
        deny_addr: "deny_addr6",
        loopback: None,
    },
];

pub fn family_spec(f: Family) -> &'static FamilySpec {
    &FAMILIES[f as usize]
}

impl FamilySpec {
    /// The connection mark of a connection DNAT'd to `port` published on every address.
    pub fn any_mark(&self, port: u16) -> [u8; 4] {
        let [hi, lo] = port.to_be_bytes();
        [hi, lo, MARK_TAG, if self.family == Family::V6 { 6 } else { 4 }]
    }

    /// 32-bit register slots an address takes (1 or 4).
    fn addr_slots(&self) -> u32 {
        if self.family == Family::V6 {
            4
        } else {
            1
        }
    }
}

const PROTO_PORT: &[Field] = &[Field::InetProto, Field::InetService];
const V4_PROTO_PORT: &[Field] = &[Field::Ipv4Addr, Field::InetProto, Field::InetService];
const V6_PROTO_PORT: &[Field] = &[Field::Ipv6Addr, Field::InetProto, Field::InetService];
const V4_PORT: &[Field] = &[Field::Ipv4Addr, Field::InetService];
const V6_PORT: &[Field] = &[Field::Ipv6Addr, Field::InetService];
const MARK_PROTO: &[Field] = &[Field::Mark, Field::InetProto];

const fn nat_map(
    name: &'static str,
    key: &'static [Field],
    data: &'static [Field],
    counted_in: &'static str,
) -> SetSpec {
    // The NAT maps only see a connection's first packet: their counters would count connections
    // at a cost on every insert and dump, so traffic is counted by the forward sets instead.
    SetSpec { name, key, data, counter: false, interval: false, counted_in: Some(counted_in) }
}
const fn counting(name: &'static str, key: &'static [Field]) -> SetSpec {
    SetSpec { name, key, data: &[], counter: true, interval: false, counted_in: None }
}
/// Ranges of `key`: a published port (range) and the sources allowed to reach it.
const fn ranges(name: &'static str, key: &'static [Field]) -> SetSpec {
    SetSpec { name, key, data: &[], counter: false, interval: true, counted_in: None }
}

const PROTO_PORT_V4: &[Field] = &[Field::InetProto, Field::InetService, Field::Ipv4Addr];
const PROTO_PORT_V6: &[Field] = &[Field::InetProto, Field::InetService, Field::Ipv6Addr];
const IF_PROTO_PORT: &[Field] = &[Field::Ifname, Field::InetProto, Field::InetService];
const V4_PROTO_PORT_V4: &[Field] = &[Field::Ipv4Addr, Field::InetProto, Field::InetService, Field::Ipv4Addr];
const V6_PROTO_PORT_V6: &[Field] = &[Field::Ipv6Addr, Field::InetProto, Field::InetService, Field::Ipv6Addr];

pub const SETS: [SetSpec; 22] = [
    nat_map(MAP_ANY, PROTO_PORT, V4_PORT, COUNT_ANY),
    nat_map(MAP_ADDR, V4_PROTO_PORT, V4_PORT, COUNT_ADDR),
    counting(COUNT_ANY, MARK_PROTO),
    counting(COUNT_ADDR, V4_PROTO_PORT),
    nat_map("pub_any6", PROTO_PORT, V6_PORT, COUNT_ANY),
    nat_map("pub_addr6", V6_PROTO_PORT, V6_PORT, "fwd_addr6"),
    counting("fwd_addr6", V6_PROTO_PORT),
    counting(ROUTED6, V6_PROTO_PORT),
    ranges("allow_any4", PROTO_PORT_V4),
    ranges("allow_addr4", V4_PROTO_PORT_V4),
    counting("deny_any4", PROTO_PORT),
    counting("deny_addr4", V4_PROTO_PORT),
    ranges("allow_any6", PROTO_PORT_V6),
    ranges("allow_addr6", V6_PROTO_PORT_V6),
    counting("deny_any6", PROTO_PORT),
    counting("deny_addr6", V6_PROTO_PORT),
    nat_map("pub_if4", IF_PROTO_PORT, V4_PORT, "fwd_if4"),
    counting("fwd_if4", IF_PROTO_PORT),
    nat_map("pub_if6", IF_PROTO_PORT, V6_PORT, "fwd_if6"),
    counting("fwd_if6", IF_PROTO_PORT),
    plain("hairpin4", V4_V4),
    plain("hairpin6", V6_V6),
];

/// `saddr . daddr` of a container reaching its own published port on a bridge netnat did not
/// make (a CNI container): masqueraded, so its own replies come back through the host.
const V4_V4: &[Field] = &[Field::Ipv4Addr, Field::Ipv4Addr];
const V6_V6: &[Field] = &[Field::Ipv6Addr, Field::Ipv6Addr];
const fn plain(name: &'static str, key: &'static [Field]) -> SetSpec {
    SetSpec { name, key, data: &[], counter: false, interval: false, counted_in: None }
}

/// The hairpin elements of a state: `C . C` for the address C of each container that a CNI
/// attachment publishes and that is in no netnat network (netnat's own networks masquerade
/// hairpin traffic per subnet).
pub fn hairpin_elems(state: &State) -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    for a in state.attachments.values() {
        for m in a.mappings.iter().filter(|m| state.network_of(m.container_ip).is_none()) {
            let set = if m.family() == Family::V6 { "hairpin6" } else { "hairpin4" };
            let key = [ip_bytes(m.container_ip), ip_bytes(m.container_ip)].concat();
            out.insert((set, key), vec![]);
        }
    }
    out
}

/// The counting set a NAT map names in its spec.
fn counting_set(map: &str) -> &'static str {
    set_spec(map).and_then(|s| s.counted_in).expect("every NAT map names its counting set")
}

pub fn set_spec(name: &str) -> Option<&'static SetSpec> {
    SETS.iter().find(|s| s.name == name)
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

/// One element of one set: (set, key, data), data empty for a plain set.
pub type Elem = (&'static str, Vec<u8>, Vec<u8>);

/// The elements of one mapping, for each port of its range: the NAT map element and its
/// counting set element; for a mapping to an IPv6-routed network (`routed`), only the
/// container's address and port in `routed6` (no NAT). With an allow list (`allow`), also its
/// sources (one range element per source, over the whole port range) and the ports' deny
/// elements.
pub fn mapping_elems(m: &Mapping, routed: bool, allow: &[Cidr]) -> Vec<Elem> {
    let f = family_spec(m.family());
    let mut out = Vec::with_capacity(m.len() as usize * 2);
    let host_key = |port: u16| {
        let mut key = Vec::with_capacity(24);
        if let Some(i) = m.host_if {
            key.extend(i.bytes());
        }
        if let Some(ip) = m.host_ip {
            key.extend(ip_bytes(ip));
        }
        key.extend(pad4(&[m.protocol.number()]));
        key.extend(pad4(&port.to_be_bytes()));
        key
    };
    for (hp, cp) in m.ports() {
        if routed {
            let mut key = ip_bytes(m.container_ip);
            key.extend(pad4(&[m.protocol.number()]));
            key.extend(pad4(&cp.to_be_bytes()));
            out.push((ROUTED6, key, vec![]));
            continue;
        }
        let key = host_key(hp);
        let mut data = ip_bytes(m.container_ip);
        data.extend(pad4(&cp.to_be_bytes()));
        let (map, deny) = match (m.host_if, m.host_ip) {
            (Some(_), _) => (f.map_if, ""),
            (None, Some(_)) => (f.map_addr, f.deny_addr),
            (None, None) => (f.map_any, f.deny_any),
        };
        let count_key = match map == f.map_any {
            true => [f.any_mark(hp).to_vec(), pad4(&[m.protocol.number()]).to_vec()].concat(),
            false => key.clone(),
        };
        out.push((counting_set(map), count_key, vec![]));
        if !allow.is_empty() {
            out.push((deny, key.clone(), vec![]));
        }
        out.push((map, key, data));
    }
    // Allow lists are refused for interface-bound ports (`validate`).
    if !routed && m.host_if.is_none() {
        let set = if m.host_ip.is_some() { f.allow_addr } else { f.allow_any };
        for c in allow {
            let (lo, hi) = c.bounds();
            let (mut start, mut end) = (host_key(m.host_port), host_key(m.host_port_end));
            start.extend(ip_bytes(lo));
            end.extend(ip_bytes(hi));
            // An interval set's data is the element's key end.
            out.push((set, start, end));
        }
    }
    out
}

/// The elements of a mapping whose counters count its traffic.
pub fn counted_elems(m: &Mapping, routed: bool) -> impl Iterator<Item = Elem> {
    mapping_elems(m, routed, &[]).into_iter().filter(|(s, _, _)| set_spec(s).is_some_and(|s| s.counter))
}

/// The elements whose counters count the packets an allow list dropped.
pub fn denied_elems(m: &Mapping, allow: &[Cidr]) -> impl Iterator<Item = Elem> {
    mapping_elems(m, false, allow).into_iter().filter(|(s, _, _)| s.starts_with("deny_"))
}

fn rule(chain: &'static str, comment: impl Into<String>, parts: Vec<Vec<Expr>>) -> RuleSpec {
    RuleSpec { chain, exprs: parts.concat(), comment: comment.into() }
}

fn verdict(v: Verdict) -> Vec<Expr> {
    vec![Expr::Counter, Expr::Verdict(v)]
}

/// `[ip[6] daddr .] meta l4proto . th dport` into registers from slot 0, as a concatenated
/// lookup wants it; returns the loads.
fn load_key(
    f: &FamilySpec,
    by_addr: bool,
    load_addr: impl Fn(u32) -> Expr,
    load_port: impl Fn(u32) -> Expr,
) -> Vec<Expr> {
    let mut v = vec![];
    let mut slot = 0;
    if by_addr {
        v.push(load_addr(REG_1));
        slot = f.addr_slots();
    }
    v.push(load_meta(META_L4PROTO, reg_at(slot)));
    v.push(load_port(reg_at(slot + 1)));
    v
}

/// DNAT through a map: `dnat ip[6] to KEY map @MAP`; `by_addr` adds the daddr in front of the key.
/// Without it (every local address), the connection is also marked (`ct mark set th dport &
/// 0xffff ^ TAG`, see `FamilySpec::any_mark`) so that the forward chain counts its packets with
/// one lookup of the mark.
fn dnat_via_map(f: &FamilySpec, by_addr: bool) -> Vec<Expr> {
    let map = if by_addr { f.map_addr } else { f.map_any };
    let mut v = load_key(f, by_addr, |r| load_daddr(f.nfproto, r), load_th_dport);
    v.push(Expr::Lookup { sreg: REG_1, set: map.into(), dreg: Some(REG_1), flags: 0 });
    if !by_addr {
        // A register past the map's data (an IPv6 address and a port take slots 0-4).
        let r = reg_at(8);
        let tag = f.any_mark(0);
        v.push(load_th_dport(r));
        v.push(Expr::Bitwise { sreg: r, dreg: r, mask: vec![0xff, 0xff, 0, 0], xor: vec![0, 0, tag[2], tag[3]] });
        v.push(Expr::CtSet { key: CT_MARK, sreg: r });
    }
    // The map's data is `addr . port`: the port follows the address's slots.
    let port = reg_at(f.addr_slots());
    v.push(Expr::Nat { kind: NAT_DNAT, family: f.nfproto as u32, addr: Some(REG_1), proto: Some(port) });
    v
}

/// `iifname . meta l4proto . th dport` into registers: the name takes four 32-bit slots.
fn load_if_key(ifname_key: u32, load_port: impl Fn(u32) -> Expr) -> Vec<Expr> {
    vec![load_meta(ifname_key, REG_1), load_meta(META_L4PROTO, reg_at(4)), load_port(reg_at(5))]
}

/// `dnat ip[6] to iifname . meta l4proto . th dport map @pub_if*`.
fn dnat_via_if_map(f: &FamilySpec) -> Vec<Expr> {
    let mut v = load_if_key(META_IIFNAME, load_th_dport);
    v.push(Expr::Lookup { sreg: REG_1, set: f.map_if.into(), dreg: Some(REG_1), flags: 0 });
    v.push(Expr::Nat {
        kind: NAT_DNAT,
        family: f.nfproto as u32,
        addr: Some(REG_1),
        proto: Some(reg_at(f.addr_slots())),
    });
    v
}

/// `meta nfproto F i|oifname . meta l4proto . ct original proto-dst @fwd_if* accept`.
fn count_and_accept_if(f: &FamilySpec, ifname_key: u32) -> Vec<Expr> {
    let mut v = match_nfproto(f.nfproto);
    v.extend(load_if_key(ifname_key, |r| load_ct_original(CT_PROTO_DST, r)));
    v.push(Expr::Lookup { sreg: REG_1, set: counting_set(f.map_if).into(), dreg: None, flags: 0 });
    v.push(Expr::Verdict(Verdict::Accept));
    v
}

/// `ct original ip[6] daddr . meta l4proto . ct original proto-dst @SET accept`: the lookup
/// bumps the matching element's counter (every packet of a connection to a port published on
/// one address, both directions; `ct original` is the connection before DNAT), and the packet
/// is accepted.
fn count_and_accept_addr(f: &FamilySpec) -> Vec<Expr> {
    let set = counting_set(f.map_addr);
    let mut v = match_nfproto(f.nfproto);
    v.extend(load_key(f, true, |r| load_ct_original_daddr(f.nfproto, r), |r| load_ct_original(CT_PROTO_DST, r)));
    v.push(Expr::Lookup { sreg: REG_1, set: set.into(), dreg: None, flags: 0 });
    v.push(Expr::Verdict(Verdict::Accept));
    v
}

/// The rules of allow lists, in the NAT chains (which see only a connection's first packet),
/// before the DNAT rules: a new connection to a port with a list, from a source not on it, is
/// counted in the port's deny element and dropped. Constant in number whatever the lists.
fn allow_rules() -> Vec<RuleSpec> {
    let mut rules = vec![];
    for (chain, from_host) in [("prerouting", ""), ("output", ", from the host")] {
        for f in &FAMILIES {
            let fam = f.family.name();
            rules.push(rule(
                chain,
                format!("{fam} ports with an allow list, published on one address{from_host}"),
                vec![match_nfproto(f.nfproto), drop_unlisted(f, true)],
            ));
            rules.push(rule(
                chain,
                format!("{fam} ports with an allow list, published on every local address{from_host}"),
                vec![match_nfproto(f.nfproto), match_daddr_local(), drop_unlisted(f, false)],
            ));
        }
    }
    rules
}

/// `[ip daddr .] meta l4proto . th dport . ip saddr != @allow_* [ip daddr .] meta l4proto .
/// th dport @deny_* counter drop`: the deny set's key is the first fields of the allow set's, so
/// both lookups read the same registers; only a dropped packet reaches (and bumps) the deny
/// element's counter.
fn drop_unlisted(f: &FamilySpec, by_addr: bool) -> Vec<Expr> {
    let (allow, deny) = if by_addr { (f.allow_addr, f.deny_addr) } else { (f.allow_any, f.deny_any) };
    let mut v = load_key(f, by_addr, |r| load_daddr(f.nfproto, r), load_th_dport);
    let saddr_slot = if by_addr { f.addr_slots() } else { 0 } + 2;
    v.push(load_saddr(f.nfproto, reg_at(saddr_slot)));
    v.push(Expr::Lookup { sreg: REG_1, set: allow.into(), dreg: None, flags: LOOKUP_F_INV });
    v.push(Expr::Lookup { sreg: REG_1, set: deny.into(), dreg: None, flags: 0 });
    v.extend(verdict(Verdict::Drop));
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

/// `meta nfproto F ip[6] saddr SUBNET`.
fn from_subnet(f: &FamilySpec, n: &Network) -> Vec<Expr> {
    let pool = n.pool(f.family).expect("called for the network's families");
    let mut v = match_nfproto(f.nfproto);
    v.extend(match_prefix(load_saddr(f.nfproto, REG_1), pool.subnet.addr, pool.subnet.prefix));
    v
}

/// The whole desired table for a state. Rules are static per network; ports are elements.
pub fn desired(state: &State) -> Desired {
    let mut elems: BTreeMap<&'static str, Elems> = SETS.iter().map(|s| (s.name, Elems::new())).collect();
    for m in &state.mappings {
        for (set, k, d) in mapping_elems(m, state.is_routed(m), state.allow_of(m)) {
            elems.entry(set).or_default().insert(k, d);
        }
    }
    for ((set, k), d) in hairpin_elems(state) {
        elems.entry(set).or_default().insert(k, d);
    }
    Desired { rules: desired_rules(state), elems }
}

/// The rules one family has whatever the networks: guard, DNAT in prerouting and output, counting.
fn family_rules(f: &FamilySpec) -> Vec<RuleSpec> {
    let fam = f.family.name();
    let nf = || match_nfproto(f.nfproto);
    let mut rules = vec![];
    if let Some((lo, lo_prefix)) = f.loopback {
        let lo: IpAddr = lo.parse().expect("a constant address");
        rules.push(rule(
            "guard",
            format!("drop {lo}/{lo_prefix} from outside (CVE-2020-8558)"),
            vec![
                nf(),
                match_prefix(load_daddr(f.nfproto, REG_1), lo, lo_prefix),
                match_ifname(META_IIFNAME, CmpOp::Neq, "lo"),
                verdict(Verdict::Drop),
            ],
        ));
    }
    for (chain, from_host) in [("prerouting", ""), ("output", ", from the host")] {
        rules.push(rule(
            chain,
            format!("{fam} ports published on one address{from_host}"),
            vec![nf(), dnat_via_map(f, true)],
        ));
        rules.push(rule(
            chain,
            format!("{fam} ports published on every local address{from_host}"),
            vec![nf(), match_daddr_local(), dnat_via_map(f, false)],
        ));
    }
    rules.push(rule(
        "prerouting",
        format!("{fam} ports published on one interface"),
        vec![nf(), match_daddr_local(), dnat_via_if_map(f)],
    ));
    rules.push(rule("published", format!("{fam} ports published on one address"), vec![count_and_accept_addr(f)]));
    // Both directions: the client's packets arrive on the interface, the replies leave by it.
    for (key, way) in [(META_IIFNAME, "in"), (META_OIFNAME, "out")] {
        rules.push(rule(
            "published",
            format!("{fam} ports published on one interface ({way})"),
            vec![count_and_accept_if(f, key)],
        ));
    }
    rules
}

/// The rules of the desired table, in chain order. They depend on the networks only.
pub fn desired_rules(state: &State) -> Vec<RuleSpec> {
    let v4 = family_spec(Family::V4);
    let v6 = family_spec(Family::V6);
    // Allow lists first: they drop before the DNAT rules of the same chains.
    let mut rules: Vec<RuleSpec> = if state.allow.is_empty() { vec![] } else { allow_rules() };
    rules.extend(FAMILIES.iter().flat_map(family_rules));
    // Internal networks first: nothing crosses their bridge, not even published or related traffic.
    for n in state.networks.values().filter(|n| n.internal) {
        rules.push(rule(
            "forward",
            format!("{}: internal, nothing comes in", n.name),
            drop_crossing(&n.bridge, Crossing::In),
        ));
        rules.push(rule(
            "forward",
            format!("{}: internal, nothing goes out", n.name),
            drop_crossing(&n.bridge, Crossing::Out),
        ));
    }
    // The one rule a packet of a connection to a port published on every address meets (new or
    // established, both ways): the mark its DNAT rule set, one lookup, counted and accepted.
    rules.push(rule(
        "forward",
        "ports published on every address: count and accept",
        vec![vec![
            Expr::Ct { key: CT_MARK, dreg: REG_1, dir: None },
            load_meta(META_L4PROTO, reg_at(1)),
            Expr::Lookup { sreg: REG_1, set: COUNT_ANY.into(), dreg: None, flags: 0 },
            Expr::Verdict(Verdict::Accept),
        ]],
    ));
    // Ports published on one address or interface, and DNAT by other tables: counted (by `ct
    // original` fields) and accepted in `published`.
    rules.push(rule(
        "forward",
        "other published ports: count and accept",
        vec![match_ct_bits(CT_STATUS, CT_STATUS_DNAT), vec![Expr::Verdict(Verdict::Jump("published".into()))]],
    ));
    rules.push(rule(
        "forward",
        "replies and related traffic",
        vec![match_ct_bits(CT_STATE, CT_STATE_ESTABLISHED | CT_STATE_RELATED), vec![Expr::Verdict(Verdict::Accept)]],
    ));
    rules.push(rule(
        "forward",
        "published ports of IPv6-routed networks, at the container's address",
        vec![
            match_nfproto(v6.nfproto),
            load_key(v6, true, |r| load_daddr(v6.nfproto, r), load_th_dport),
            vec![
                Expr::Lookup { sreg: REG_1, set: ROUTED6.into(), dreg: None, flags: 0 },
                Expr::Verdict(Verdict::Accept),
            ],
        ],
    ));
    rules.push(rule("published", "DNAT'd by another table", vec![vec![Expr::Verdict(Verdict::Accept)]]));
    if !state.attachments.is_empty() {
        rules.extend(FAMILIES.iter().map(cni_hairpin_rule));
    }
    rules.push(rule(
        "postrouting",
        "localhost to a published port",
        vec![
            match_nfproto(v4.nfproto),
            match_prefix(load_saddr(v4.nfproto, REG_1), "127.0.0.0".parse().expect("constant"), 8),
            match_ct_bits(CT_STATUS, CT_STATUS_DNAT),
            vec![Expr::Masquerade],
        ],
    ));
    for n in state.networks.values() {
        rules.extend(network_rules(n));
    }
    // Keep rules of a chain together, in the order above: the chain's rules are compared as a list.
    let order = |c: &str| CHAINS.iter().position(|s| s.name == c).unwrap_or(usize::MAX);
    rules.sort_by_key(|r| order(r.chain));
    rules
}

/// `ct status dnat ip saddr . ip daddr @hairpin4 masquerade`: a CNI container reaching its own
/// published port (see `hairpin_elems`).
fn cni_hairpin_rule(f: &FamilySpec) -> RuleSpec {
    let (set, slots) = if f.family == Family::V6 { ("hairpin6", 4) } else { ("hairpin4", 1) };
    rule(
        "postrouting",
        format!("CNI containers to their own published ports ({})", f.family.name()),
        vec![
            match_nfproto(f.nfproto),
            match_ct_bits(CT_STATUS, CT_STATUS_DNAT),
            vec![load_saddr(f.nfproto, REG_1), load_daddr(f.nfproto, reg_at(slots))],
            vec![Expr::Lookup { sreg: REG_1, set: set.into(), dreg: None, flags: 0 }, Expr::Masquerade],
        ],
    )
}

/// The rules of one network: only published ports come in (unless internal), hairpin and egress
/// masquerade per family (none for a routed IPv6 subnet).
fn network_rules(n: &Network) -> Vec<RuleSpec> {
    let mut rules = vec![];
    let br = n.bridge.as_str();
    if !n.internal {
        rules.push(rule(
            "forward",
            format!("{}: only published ports come in", n.name),
            drop_crossing(br, Crossing::In),
        ));
    }
    for p in &n.pools {
        let f = family_spec(p.family());
        // A routed IPv6 subnet is reachable as it is: nothing to translate.
        let nat = !(p.family() == Family::V6 && n.routed_v6());
        let fam = if n.pools.len() > 1 { format!(" ({})", f.family.name()) } else { String::new() };
        if nat {
            rules.push(rule(
                "postrouting",
                format!("{}: hairpin to a published port{fam}", n.name),
                vec![
                    from_subnet(f, n),
                    match_ct_bits(CT_STATUS, CT_STATUS_DNAT),
                    match_ifname(META_OIFNAME, CmpOp::Eq, br),
                    vec![Expr::Masquerade],
                ],
            ));
        }
        if nat && n.masquerade && !n.internal {
            rules.push(rule(
                "postrouting",
                format!("{}: egress{fam}", n.name),
                vec![from_subnet(f, n), match_ifname(META_OIFNAME, CmpOp::Neq, br), vec![Expr::Masquerade]],
            ));
        }
    }
    rules
}

/// What happens to the table as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableAction {
    /// The table has netnat's layout: only the chains and elements listed change.
    Keep,
    /// There is no table: it is made from scratch.
    Create,
    /// The table has chains or maps of another shape: it is deleted and made again.
    Rebuild,
}

/// A chain whose rules differ: it is flushed and refilled with `want`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainChange {
    pub chain: &'static str,
    pub want: Vec<RuleSpec>,
    /// Live rules netnat would not program (for the audit).
    pub extra: Vec<LiveRule>,
    /// Rules netnat would program that are not live (for the audit).
    pub missing: Vec<RuleSpec>,
}

/// One element that changes: missing (`have` None), extra (`want` None) or pointing elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElemChange {
    pub set: &'static str,
    pub key: Vec<u8>,
    pub have: Option<Vec<u8>>,
    pub want: Option<Vec<u8>>,
}

/// The difference between what table `inet netnat` holds and what it should hold. `apply` turns
/// it into one transaction (`ops`); the audit reports the same value as drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub table: TableAction,
    /// With `Create` or `Rebuild`: every chain, filled.
    pub chains: Vec<ChainChange>,
    /// With `Create` or `Rebuild`: every desired element, as missing.
    pub elems: Vec<ElemChange>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.table == TableAction::Keep && self.chains.is_empty() && self.elems.is_empty()
    }

    /// Whether the rules (or the layout) change, not only elements.
    pub fn changes_rules(&self) -> bool {
        self.table != TableAction::Keep || !self.chains.is_empty()
    }

    /// The plan as one transaction's operations: the table and its layout first, then the
    /// chains' rules, then element deletes before adds (a changed element is delete + add).
    pub fn ops(&self) -> Vec<NftOp> {
        let mut ops = vec![];
        if self.table == TableAction::Rebuild {
            // Add first so the delete cannot fail on a table removed meanwhile.
            ops.extend([NftOp::AddTable, NftOp::DelTable]);
        }
        if self.table != TableAction::Keep {
            ops.push(NftOp::AddTable);
            ops.extend(CHAINS.iter().cloned().map(NftOp::AddChain));
            ops.extend(SETS.iter().cloned().map(NftOp::AddSet));
        }
        for c in &self.chains {
            if self.table == TableAction::Keep {
                ops.push(NftOp::FlushChain(c.chain.into()));
            }
            ops.extend(c.want.iter().cloned().map(NftOp::AddRule));
        }
        // Per set, in name order: its deletes, then its adds.
        let mut per_set: BTreeMap<&'static str, (ElemList, ElemList)> = BTreeMap::new();
        for e in &self.elems {
            let (dels, adds) = per_set.entry(e.set).or_default();
            if let Some(d) = &e.have {
                dels.push((e.key.clone(), d.clone()));
            }
            if let Some(d) = &e.want {
                adds.push((e.key.clone(), d.clone()));
            }
        }
        for (set, (dels, adds)) in per_set {
            let interval = set_spec(set).is_some_and(|s| s.interval);
            if !dels.is_empty() {
                ops.push(match interval {
                    // A range is deleted by its key and its end.
                    true => NftOp::DelRanges { set: set.into(), ranges: dels },
                    false => NftOp::DelElems { set: set.into(), keys: dels.into_iter().map(|(k, _)| k).collect() },
                });
            }
            if !adds.is_empty() {
                ops.push(match interval {
                    true => NftOp::AddRanges { set: set.into(), ranges: adds },
                    false => NftOp::AddElems { set: set.into(), elems: adds },
                });
            }
        }
        ops
    }
}

/// The element changes of the mappings `touched` (published, unpublished, or with a new allow
/// list) from state `before` to `after`, planned without reading the live elements: the caller
/// knows the table has netnat's layout and rules. An element both states have stays, so its
/// counter keeps counting.
pub fn plan_mapping_changes(before: &State, after: &State, touched: &[Mapping]) -> Plan {
    let elems_in = |st: &State| -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
        touched
            .iter()
            .filter(|m| st.mappings.contains(m))
            .flat_map(|m| mapping_elems(m, st.is_routed(m), st.allow_of(m)))
            .map(|(set, k, d)| ((set, k), d))
            .collect()
    };
    // Hairpin elements are per container, shared by its mappings: compared whole (a few).
    let with_hairpin = |st: &State| {
        let mut e = elems_in(st);
        e.extend(hairpin_elems(st));
        e
    };
    let (old, new) = (with_hairpin(before), with_hairpin(after));
    let mut elems = vec![];
    for ((set, key), d) in &old {
        match new.get(&(*set, key.clone())) {
            Some(n) if n == d => {}
            n => elems.push(ElemChange { set, key: key.clone(), have: Some(d.clone()), want: n.cloned() }),
        }
    }
    for ((set, key), d) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
        elems.push(ElemChange { set, key: key.clone(), have: None, want: Some(d.clone()) });
    }
    Plan { table: TableAction::Keep, chains: vec![], elems }
}

/// The changes that turn `live` (None: no table) into `want`.
/// Rules are compared chain by chain; a chain that differs is flushed and refilled in the same
/// transaction. Elements are compared one by one, so an unchanged mapping keeps its counters.
pub fn plan(want: &Desired, live: Option<&LiveTable>) -> Plan {
    // The chains of a running (or killed) `netnat trace` are not netnat's layout: never planned
    // (the engine removes a killed trace's; see crate::trace).
    let stripped = live.filter(|l| !trace::trace_chains_in(l).is_empty()).map(trace::without_trace);
    let live = match &stripped {
        Some(s) => s.as_ref(),
        None => live,
    };
    let Some(live) = live.filter(|l| layout_matches(l)) else {
        // No table, or chains/maps of another shape: build the whole table from scratch.
        let table = if live.is_some() { TableAction::Rebuild } else { TableAction::Create };
        let chains = CHAINS
            .iter()
            .map(|c| ChainChange { chain: c.name, want: rules_of(want, c.name), extra: vec![], missing: vec![] })
            .filter(|c| !c.want.is_empty())
            .collect();
        let elems = want
            .elems
            .iter()
            .flat_map(|(set, es)| {
                es.iter().map(|(k, d)| ElemChange { set, key: k.clone(), have: None, want: Some(d.clone()) })
            })
            .collect();
        return Plan { table, chains, elems };
    };
    Plan { table: TableAction::Keep, chains: plan_chains(want, live), elems: plan_elems(want, live) }
}

fn rules_of(want: &Desired, chain: &str) -> Vec<RuleSpec> {
    want.rules.iter().filter(|r| r.chain == chain).cloned().collect()
}

fn plan_chains(want: &Desired, live: &LiveTable) -> Vec<ChainChange> {
    let same = |l: &LiveRule, n: &RuleSpec| l.exprs == n.exprs && l.comment.as_deref() == Some(n.comment.as_str());
    let mut out = vec![];
    for c in &CHAINS {
        let have: Vec<&LiveRule> = live.rules.iter().filter(|r| r.chain == c.name).collect();
        let need = rules_of(want, c.name);
        if have.len() == need.len() && have.iter().zip(&need).all(|(l, n)| same(l, n)) {
            continue;
        }
        let extra = have.iter().filter(|l| !need.iter().any(|n| same(l, n))).map(|l| (*l).clone()).collect();
        let missing = need.iter().filter(|n| !have.iter().any(|l| same(l, n))).cloned().collect();
        out.push(ChainChange { chain: c.name, want: need, extra, missing });
    }
    out
}

fn plan_elems(want: &Desired, live: &LiveTable) -> Vec<ElemChange> {
    let mut out = vec![];
    for (set, need) in &want.elems {
        let have: BTreeMap<&[u8], &[u8]> = live
            .elems
            .get(*set)
            .map(|v| v.iter().map(|e: &LiveElem| (e.key.as_slice(), e.data.as_slice())).collect())
            .unwrap_or_default();
        for (k, d) in &have {
            match need.get(*k) {
                Some(n) if n.as_slice() == *d => {}
                n => out.push(ElemChange { set, key: k.to_vec(), have: Some(d.to_vec()), want: n.cloned() }),
            }
        }
        for (k, d) in need.iter().filter(|(k, _)| !have.contains_key(k.as_slice())) {
            out.push(ElemChange { set, key: k.clone(), have: None, want: Some(d.clone()) });
        }
    }
    out
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

/// NFT_SET_INTERVAL.
const INTERVAL_FLAG: u32 = 0x4;

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

/// A range element as nft prints it: each field whose start and end differ as `a-b`, an
/// address range that is a prefix as `addr/len`.
fn range_elem_text(set: &str, key: &[u8], end: &[u8]) -> String {
    let Some(spec) = set_spec(set) else { return format!("{}-{}", expr::hex(key), expr::hex(end)) };
    let (a, b) = (render_concat(spec.key, key), render_concat(spec.key, end));
    let parts: Vec<String> = a
        .split(" . ")
        .zip(b.split(" . "))
        .map(|(x, y)| match (x.parse::<IpAddr>(), y.parse::<IpAddr>()) {
            _ if x == y => x.to_string(),
            (Ok(lo), Ok(hi)) => prefix_text(lo, hi).unwrap_or(format!("{x}-{y}")),
            _ => format!("{x}-{y}"),
        })
        .collect();
    parts.join(" . ")
}

/// `lo/len` when lo..=hi is exactly one prefix.
fn prefix_text(lo: IpAddr, hi: IpAddr) -> Option<String> {
    let fam = Family::of(lo);
    let span = crate::model::ip_bits(hi) ^ crate::model::ip_bits(lo);
    let host_bits = 128 - span.leading_zeros();
    let len = fam.bits().checked_sub(host_bits)?;
    let net: Cidr = format!("{lo}/{len}").parse().ok()?;
    (net.bounds().1 == hi).then(|| net.to_string())
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
            NftOp::AddRanges { set, ranges } | NftOp::DelRanges { set, ranges } => {
                let verb = if matches!(self, NftOp::AddRanges { .. }) { "add" } else { "delete" };
                let items: Vec<String> = ranges.iter().map(|(k, end)| range_elem_text(set, k, end)).collect();
                write!(f, "{verb} element {t} {set} {{ {} }}", items.join(", "))
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
        if s.flags & INTERVAL_FLAG != 0 {
            out += "\t\tflags interval\n";
        }
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
                    } else if s.flags & INTERVAL_FLAG != 0 {
                        // An interval set's element: its data is the key end.
                        format!("{}{c}", range_elem_text(&s.name, &e.key, &e.data))
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
            let hook = Hook::ALL
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

    /// The element operations of `ops` done on `live`, as the kernel would (rules are not
    /// touched: the callers plan elements only).
    pub(crate) fn apply_elems(live: &mut LiveTable, ops: &[NftOp]) {
        let elem = |key: &Vec<u8>, data: &Vec<u8>| LiveElem {
            key: key.clone(),
            data: data.clone(),
            packets: Some(0),
            bytes: Some(0),
        };
        for op in ops {
            match op {
                NftOp::DelElems { set, keys } => {
                    live.elems.entry(set.clone()).or_default().retain(|e| !keys.contains(&e.key))
                }
                NftOp::DelRanges { set, ranges } => {
                    live.elems.entry(set.clone()).or_default().retain(|e| !ranges.iter().any(|(k, _)| *k == e.key))
                }
                NftOp::AddElems { set, elems } | NftOp::AddRanges { set, ranges: elems } => {
                    let v = live.elems.entry(set.clone()).or_default();
                    for (k, d) in elems {
                        assert!(!v.iter().any(|e| e.key == *k), "{set}: an element added twice (EEXIST)");
                        v.push(elem(k, d));
                    }
                }
                other => panic!("not an element operation: {other}"),
            }
        }
    }
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
    use crate::model::State;
    use crate::nft::LiveRule;

    fn demo_state() -> State {
        let mut s = State::default();
        let n = crate::model::fixtures::net("MyDocker0", &["172.16.0.0/16"], &["172.16.1.254"]);
        s.networks.insert(n.name.clone(), n);
        s.mappings.push("9090:172.16.1.1:8080".parse().unwrap());
        s
    }

    #[test]
    fn empty_kernel_gets_whole_table_in_one_plan() {
        let ops = plan(&desired(&demo_state()), None).ops();
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
        assert!(plan(&want, Some(&fake::live_after(&want, 0, 0))).is_empty());
    }

    #[test]
    fn one_new_port_sends_its_elements_and_no_rules() {
        let mut st = demo_state();
        let live = fake::live_after(&desired(&st), 0, 0);
        st.mappings.push("127.0.0.1:5353:172.16.1.2:53/udp".parse().unwrap());
        let text: Vec<String> = plan(&desired(&st), Some(&live)).ops().iter().map(|o| o.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "add element inet netnat fwd_addr4 { 127.0.0.1 . udp . 5353 }",
                "add element inet netnat pub_addr4 { 127.0.0.1 . udp . 5353 : 172.16.1.2 . 53 }"
            ]
        );
    }

    #[test]
    fn plan_says_what_changes_and_ops_follow_from_it() {
        let st = demo_state();
        let want = desired(&st);
        // A table of another shape is rebuilt in the same transaction.
        let mut odd = fake::live_after(&want, 0, 0);
        odd.sets.retain(|s| s.name != MAP_ANY);
        let p = plan(&want, Some(&odd));
        assert_eq!(p.table, TableAction::Rebuild);
        assert!(p.changes_rules());
        assert_eq!(p.ops()[..3], [NftOp::AddTable, NftOp::DelTable, NftOp::AddTable]);
        assert_eq!(plan(&want, None).table, TableAction::Create);
        // Elements: one missing, one extra, one pointing elsewhere; the rules are netnat's.
        let mut live = fake::live_after(&want, 0, 0);
        let elems = live.elems.get_mut(MAP_ANY).unwrap();
        let key = elems[0].key.clone();
        elems[0].data = vec![10, 0, 0, 9, 0x1f, 0x90, 0, 0];
        let mut extra = elems[0].clone();
        extra.key[4] = 0x99;
        elems.push(extra.clone());
        live.elems.get_mut(COUNT_ANY).unwrap().clear();
        let p = plan(&want, Some(&live));
        assert_eq!(p.table, TableAction::Keep);
        assert!(!p.changes_rules());
        let kinds: Vec<(&str, bool, bool)> =
            p.elems.iter().map(|e| (e.set, e.have.is_some(), e.want.is_some())).collect();
        assert_eq!(kinds, [(COUNT_ANY, false, true), (MAP_ANY, true, true), (MAP_ANY, true, false)]);
        assert_eq!(p.elems[1].key, key);
        assert_eq!(p.elems[2].key, extra.key);
    }

    #[test]
    fn mapping_changes_touch_only_their_elements() {
        let before = demo_state();
        let old = before.mappings[0];
        let new: Mapping = "9090:172.16.1.2:8080".parse().unwrap();
        let mut after = before.clone();
        after.mappings = vec![new];
        let text: Vec<String> =
            plan_mapping_changes(&before, &after, &[old, new]).ops().iter().map(|o| o.to_string()).collect();
        // The counting element is the same (same host port): it stays, and keeps counting.
        assert_eq!(
            text,
            vec![
                "delete element inet netnat pub_any4 { tcp . 9090 }",
                "add element inet netnat pub_any4 { tcp . 9090 : 172.16.1.2 . 8080 }",
            ]
        );
        // A new allow list: its ranges and the port's deny element; then one source less.
        let cidrs = |l: &[&str]| l.iter().map(|c| c.parse().unwrap()).collect::<Vec<Cidr>>();
        let mut listed = after.clone();
        listed.set_allow(&new, cidrs(&["10.9.0.0/16", "192.168.1.7"]));
        let text: Vec<String> =
            plan_mapping_changes(&after, &listed, &[new]).ops().iter().map(|o| o.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "add element inet netnat allow_any4 { tcp . 9090 . 10.9.0.0/16, tcp . 9090 . 192.168.1.7 }",
                "add element inet netnat deny_any4 { tcp . 9090 }",
            ]
        );
        let mut fewer = listed.clone();
        fewer.set_allow(&new, cidrs(&["10.9.0.0/16"]));
        let text: Vec<String> =
            plan_mapping_changes(&listed, &fewer, &[new]).ops().iter().map(|o| o.to_string()).collect();
        assert_eq!(text, vec!["delete element inet netnat allow_any4 { tcp . 9090 . 192.168.1.7 }"]);
        // The rules of allow lists come with the first list, and do not grow with more.
        let rules = |st: &State| desired_rules(st).len();
        assert_eq!(rules(&fewer), rules(&after) + 8);
        let mut many = fewer.clone();
        for p in 1..100u16 {
            let m: Mapping = format!("{}:172.16.1.2:80", 10000 + p).parse().unwrap();
            many.mappings.push(m);
            many.set_allow(&m, cidrs(&["10.0.0.0/8"]));
        }
        assert_eq!(rules(&many), rules(&fewer));
    }

    #[test]
    fn changed_target_is_delete_then_add() {
        let mut st = demo_state();
        let live = fake::live_after(&desired(&st), 0, 0);
        st.mappings[0].container_ip = "172.16.1.2".parse().unwrap();
        let text: Vec<String> = plan(&desired(&st), Some(&live)).ops().iter().map(|o| o.to_string()).collect();
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
        let ops = plan(&want, Some(&live)).ops();
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
    fn ipv6_network_gets_its_rules_and_elements() {
        let mut st = State::default();
        let n = crate::model::fixtures::net("d", &["172.16.0.0/16", "fd00:16::/64"], &[]);
        st.networks.insert(n.name.clone(), n);
        st.mappings.push("[2001:db8:1::1]:8080:[fd00:16::2]:80".parse().unwrap());
        st.mappings.push("8080:[fd00:16::2]:80/udp".parse().unwrap());
        let text: Vec<String> = plan(&desired(&st), None).ops().iter().map(|o| o.to_string()).collect();
        let has = |t: &str| assert!(text.iter().any(|x| x == t), "missing {t} in\n{}", text.join("\n"));
        has("add map inet netnat pub_addr6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }");
        has("add element inet netnat pub_addr6 { 2001:db8:1::1 . tcp . 8080 : fd00:16::2 . 80 }");
        has("add element inet netnat pub_any6 { udp . 8080 : fd00:16::2 . 80 }");
        has(
            r#"add rule inet netnat prerouting meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub_addr6 comment "IPv6 ports published on one address""#,
        );
        has(
            r#"add rule inet netnat postrouting meta nfproto ipv6 ip6 saddr fd00:16::/64 oifname != "d" masquerade comment "d: egress (IPv6)""#,
        );
        has(
            r#"add rule inet netnat published meta nfproto ipv6 ct original ip6 daddr . meta l4proto . ct original proto-dst @fwd_addr6 accept comment "IPv6 ports published on one address""#,
        );
    }

    #[test]
    fn routed_ipv6_is_neither_masqueraded_nor_dnatted() {
        let mut st = State::default();
        let mut n = crate::model::fixtures::net("r", &["172.16.0.0/16", "2001:db8:2::/64"], &[]);
        n.ipv6_mode = crate::model::Ipv6Mode::Routed;
        st.networks.insert(n.name.clone(), n);
        st.mappings.push("8080:[2001:db8:2::2]:80".parse().unwrap());
        st.mappings.push("8080:172.16.0.2:80".parse().unwrap());
        let d = desired(&st);
        assert!(d.elems["pub_any6"].is_empty());
        assert_eq!(d.elems[MAP_ANY].len(), 1);
        assert_eq!(d.elems[ROUTED6].len(), 1);
        let text: Vec<String> = plan(&d, None).ops().iter().map(|o| o.to_string()).collect();
        assert!(text.contains(&"add element inet netnat routed6 { 2001:db8:2::2 . tcp . 80 }".to_string()));
        assert!(!text.iter().any(|t| t.contains("ip6 saddr 2001:db8:2::/64")), "no IPv6 masquerade: {text:?}");
        assert!(text.iter().any(|t| t.contains("ip saddr 172.16.0.0/16") && t.contains("egress")));
        assert!(text.iter().any(|t| t.contains("ip6 daddr . meta l4proto . th dport @routed6 accept")), "{text:?}");
    }

    #[test]
    fn rules_are_the_same_in_number_for_either_family() {
        let mut st = demo_state();
        let before = desired(&st).rules.len();
        st.mappings.push("10000-10999:[fd00::2]:10000-10999".parse().unwrap());
        assert_eq!(desired(&st).rules.len(), before);
    }
}
