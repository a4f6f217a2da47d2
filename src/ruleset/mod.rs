//! netnat's nftables layout (pure): what table `inet netnat` should contain for a `State`
//! (here: names, sets, elements; `rules`: the rules), how that differs from what the kernel has
//! (`plan`), and how both print in nft syntax (`render`).
//!
//! Layout (see docs/nft-layout.md for the why). Each family (IPv4, IPv6) has the same rules and
//! maps, built by the same functions from a `FamilySpec`. Everything decided once per connection
//! is decided in the NAT chains, which the kernel runs only for a connection's first packet; an
//! established packet meets no rule of netnat's unless packet counting is on or an internal
//! network exists (then the forward chain).
//! - `guard`       nat, prerouting, -110: drop loopback addresses arriving from outside (before DNAT).
//! - `prerouting`  nat, prerouting, dstnat (-100): allow lists, DNAT through the port maps (each
//!   element counts the connections it translated), then what was not DNAT'd: published ports of
//!   IPv6-routed networks accepted (`routed6`), anything else entering a bridge from outside it
//!   dropped (direct routing, and traffic between networks).
//! - `output`      nat, output, dstnat (-100): the same DNAT for connections made by the host itself.
//! - `forward`     filter, forward, filter (0), only when needed: internal networks sealed; with
//!   `Counting::Packets`, packets of connections marked at DNAT counted by one lookup
//!   (`fwd_any`), other DNAT'd packets counted in `published`.
//! - `published`   regular chain: counts DNAT'd packets of ports published on one address or
//!   interface (`fwd_addr*`, `fwd_if*`), accepts.
//! - `check_*`     regular chains: a listed port's allowed sources (`allow_*`), else counted drop.
//! - `postrouting` nat, postrouting, srcnat (100): egress masquerade, hairpin and localhost SNAT.
//! - maps `pub_any4|6` (`meta l4proto . th dport`) and `pub_addr4|6` (`ip[6] daddr . meta l4proto
//!   . th dport`) → `ipv4|6_addr . inet_service`: one element per published port, so rules never
//!   change when ports are published and per-packet cost does not grow with their number.

#[cfg(test)]
pub(crate) mod fake;
mod plan;
mod render;
mod rules;
#[cfg(test)]
mod tests;

pub use plan::{plan, plan_mapping_changes, ChainAction, ChainChange, ElemChange, Plan, TableAction};
pub use render::{op_summary, render_rule, render_table};
pub use rules::desired_rules;

use crate::model::{Cidr, Counting, Family, Mapping, State};
use crate::nft::expr::{ip_bytes, prefix_mask_bytes, NFPROTO_IPV4, NFPROTO_IPV6};
pub use crate::nft::spec::{
    render_concat, ChainKind, ChainSpec, Field, Hook, NftOp, RuleSpec, SetSpec, FAMILY_NAME, PRIO_DSTNAT, TABLE,
};
use crate::nft::spec::{BaseSpec, PRIO_FILTER, PRIO_SRCNAT};
use std::collections::BTreeMap;

pub const MAP_ANY: &str = "pub_any4";
pub const MAP_ADDR: &str = "pub_addr4";
/// Packet and byte counters per published port (`Counting::Packets` only; connections are counted
/// by the NAT maps' own elements): the forward chain looks every DNAT'd packet up in these sets.
/// Ports published on every address (both families) are counted by the connection mark their
/// DNAT rule sets (`any_mark`): `ct mark . meta l4proto`, one lookup, the forward chain's first
/// rule. Ports published on one address or interface are counted by `ct original` fields (same
/// keys as their maps), in the chain `published`.
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

/// Every chain netnat's table can have; `forward` only when `needs_forward` (see `chains`).
pub const CHAINS: [ChainSpec; 10] = [
    base("guard", Hook::Prerouting, ChainKind::Nat, PRIO_GUARD),
    base("prerouting", Hook::Prerouting, ChainKind::Nat, PRIO_DSTNAT),
    base("output", Hook::Output, ChainKind::Nat, PRIO_DSTNAT),
    base("forward", Hook::Forward, ChainKind::Filter, PRIO_FILTER),
    base("postrouting", Hook::Postrouting, ChainKind::Nat, PRIO_SRCNAT),
    // Reached from `forward` by DNAT'd packets only (packet counting): counts them per port, then accepts.
    ChainSpec { name: "published", base: None },
    // Reached from the NAT chains by a new connection to a port with an allow list.
    ChainSpec { name: "check_any4", base: None },
    ChainSpec { name: "check_addr4", base: None },
    ChainSpec { name: "check_any6", base: None },
    ChainSpec { name: "check_addr6", base: None },
];

/// Whether the table needs a forward chain: every packet forwarded meets a base chain there, so
/// it exists only when there is something to do per packet (count packets, seal an internal
/// network).
pub fn needs_forward(state: &State) -> bool {
    state.counting == Counting::Packets || state.networks.values().any(|n| n.internal)
}

/// The chains the table has for `state`, in `CHAINS` order.
pub fn chains(state: &State) -> Vec<ChainSpec> {
    let forward = needs_forward(state);
    CHAINS.iter().filter(|c| forward || c.name != "forward").cloned().collect()
}

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
    /// Allow lists, every address and one address: the ports that have a list (`listed_*`,
    /// looked up first, so an unlisted port pays one hash miss), the sources each allows (hash
    /// sets keyed by port, prefix length and masked source), and the ports again with a counter
    /// that counts what the list dropped (`deny_*`); the chains that check a listed port.
    pub listed_any: &'static str,
    pub listed_addr: &'static str,
    pub allow_any: &'static str,
    pub allow_addr: &'static str,
    pub deny_any: &'static str,
    pub deny_addr: &'static str,
    pub check_any: &'static str,
    pub check_addr: &'static str,
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
        listed_any: "listed_any4",
        listed_addr: "listed_addr4",
        allow_any: "allow_any4",
        allow_addr: "allow_addr4",
        deny_any: "deny_any4",
        deny_addr: "deny_addr4",
        check_any: "check_any4",
        check_addr: "check_addr4",
        loopback: Some(("127.0.0.0", 8)),
    },
    FamilySpec {
        family: Family::V6,
        nfproto: NFPROTO_IPV6,
        addr: Field::Ipv6Addr,
        map_any: "pub_any6",
        map_addr: "pub_addr6",
        map_if: "pub_if6",
        listed_any: "listed_any6",
        listed_addr: "listed_addr6",
        allow_any: "allow_any6",
        allow_addr: "allow_addr6",
        deny_any: "deny_any6",
        deny_addr: "deny_addr6",
        check_any: "check_any6",
        check_addr: "check_addr6",
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
    // The NAT maps only see a connection's first packet: their counters count connections (the
    // lookup that translates bumps the element's counter), at no cost per packet. Packets and
    // bytes are counted, when asked, by the forward sets (`counted_in`).
    SetSpec { name, key, data, counter: true, interval: false, counted_in: Some(counted_in) }
}
const fn counting(name: &'static str, key: &'static [Field]) -> SetSpec {
    SetSpec { name, key, data: &[], counter: true, interval: false, counted_in: None }
}

/// Allowed sources: `[daddr .] proto . port . mask . source & mask` (a hash set; one exact
/// lookup per prefix length in use, whatever the number of lists). The mask is part of the key
/// so that 10.0.0.0/16 is not taken for 10.0.0.0/8 (an address type, so `nft` can print it).
const PROTO_PORT_LEN_V4: &[Field] = &[Field::InetProto, Field::InetService, Field::Ipv4Addr, Field::Ipv4Addr];
const PROTO_PORT_LEN_V6: &[Field] = &[Field::InetProto, Field::InetService, Field::Ipv6Addr, Field::Ipv6Addr];
const IF_PROTO_PORT: &[Field] = &[Field::Ifname, Field::InetProto, Field::InetService];
const V4_PROTO_PORT_LEN_V4: &[Field] =
    &[Field::Ipv4Addr, Field::InetProto, Field::InetService, Field::Ipv4Addr, Field::Ipv4Addr];
const V6_PROTO_PORT_LEN_V6: &[Field] =
    &[Field::Ipv6Addr, Field::InetProto, Field::InetService, Field::Ipv6Addr, Field::Ipv6Addr];

pub const SETS: [SetSpec; 26] = [
    nat_map(MAP_ANY, PROTO_PORT, V4_PORT, COUNT_ANY),
    nat_map(MAP_ADDR, V4_PROTO_PORT, V4_PORT, COUNT_ADDR),
    counting(COUNT_ANY, MARK_PROTO),
    counting(COUNT_ADDR, V4_PROTO_PORT),
    nat_map("pub_any6", PROTO_PORT, V6_PORT, COUNT_ANY),
    nat_map("pub_addr6", V6_PROTO_PORT, V6_PORT, "fwd_addr6"),
    counting("fwd_addr6", V6_PROTO_PORT),
    counting(ROUTED6, V6_PROTO_PORT),
    plain("listed_any4", PROTO_PORT),
    plain("listed_addr4", V4_PROTO_PORT),
    plain("allow_any4", PROTO_PORT_LEN_V4),
    plain("allow_addr4", V4_PROTO_PORT_LEN_V4),
    counting("deny_any4", PROTO_PORT),
    counting("deny_addr4", V4_PROTO_PORT),
    plain("listed_any6", PROTO_PORT),
    plain("listed_addr6", V6_PROTO_PORT),
    plain("allow_any6", PROTO_PORT_LEN_V6),
    plain("allow_addr6", V6_PROTO_PORT_LEN_V6),
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
    /// The chains, in `CHAINS` order (`chains`).
    pub chains: Vec<ChainSpec>,
    pub rules: Vec<RuleSpec>,
    pub elems: BTreeMap<&'static str, Elems>,
}

impl Desired {
    /// The chains and rules of `state` without elements: what a change of a few elements checks
    /// the live layout against.
    pub fn rules_only(state: &State) -> Desired {
        Desired { chains: chains(state), rules: desired_rules(state), elems: BTreeMap::new() }
    }
}

fn pad4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[..b.len()].copy_from_slice(b);
    out
}

/// One element of one set: (set, key, data), data empty for a plain set.
pub type Elem = (&'static str, Vec<u8>, Vec<u8>);

/// The elements of one mapping, for each port of its range: the NAT map element (which counts
/// its connections) and, with `Counting::Packets`, its counting set element; for a mapping to an IPv6-routed network (`routed`), only the
/// container's address and port in `routed6` (no NAT). With an allow list (`allow`), also its
/// sources (one range element per source, over the whole port range) and the ports' deny
/// elements.
pub fn mapping_elems(m: &Mapping, routed: bool, allow: &[Cidr], counting: Counting) -> Vec<Elem> {
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
        if counting == Counting::Packets {
            out.push((counting_set(map), count_key, vec![]));
        }
        // Allow lists are refused for interface-bound ports (`validate`).
        if !allow.is_empty() && m.host_if.is_none() {
            let (listed, set) =
                if m.host_ip.is_some() { (f.listed_addr, f.allow_addr) } else { (f.listed_any, f.allow_any) };
            out.push((listed, key.clone(), vec![]));
            out.push((deny, key.clone(), vec![]));
            for c in allow {
                let mut k = key.clone();
                k.extend(prefix_mask_bytes(c.0.prefix, ip_bytes(c.0.addr).len()));
                k.extend(ip_bytes(c.0.addr));
                out.push((set, k, vec![]));
            }
        }
        out.push((map, key, data));
    }
    out
}

/// The elements of a mapping whose counters count its connections: its NAT map elements (or,
/// routed, its `routed6` elements), bumped once per connection by the lookup that translates it.
pub fn connection_elems(m: &Mapping, routed: bool) -> impl Iterator<Item = Elem> {
    mapping_elems(m, routed, &[], Counting::Connections)
        .into_iter()
        .filter(|(s, _, _)| s.starts_with("pub_") || *s == ROUTED6)
}

/// The elements of a mapping whose counters count its packets and bytes (`Counting::Packets`).
pub fn packet_elems(m: &Mapping) -> impl Iterator<Item = Elem> {
    mapping_elems(m, false, &[], Counting::Packets).into_iter().filter(|(s, _, _)| s.starts_with("fwd_"))
}

/// The elements whose counters count the packets an allow list dropped.
pub fn denied_elems(m: &Mapping, allow: &[Cidr]) -> impl Iterator<Item = Elem> {
    mapping_elems(m, false, allow, Counting::Connections).into_iter().filter(|(s, _, _)| s.starts_with("deny_"))
}

/// The whole desired table for a state. Rules are static per network; ports are elements.
pub fn desired(state: &State) -> Desired {
    let mut elems: BTreeMap<&'static str, Elems> = SETS.iter().map(|s| (s.name, Elems::new())).collect();
    for m in &state.mappings {
        for (set, k, d) in mapping_elems(m, state.is_routed(m), state.allow_of(m), state.counting) {
            elems.entry(set).or_default().insert(k, d);
        }
    }
    for ((set, k), d) in hairpin_elems(state) {
        elems.entry(set).or_default().insert(k, d);
    }
    Desired { chains: chains(state), rules: desired_rules(state), elems }
}
