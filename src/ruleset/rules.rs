//! The rules of netnat's table: built from a `State` by `desired_rules`, constant in number
//! whatever the ports (they are map elements).

use super::{counting_set, family_spec, FamilySpec, CHAINS, COUNT_ANY, FAMILIES, ROUTED6};
use crate::model::{Counting, Family, Network, State};
use crate::nft::expr::{
    load_ct_original, load_ct_original_daddr, load_daddr, load_meta, load_saddr, load_th_dport, match_ct_bits,
    match_ct_bits_clear, match_daddr_local, match_daddr_not_local, match_ifname, match_nfproto, match_prefix,
    prefix_mask_bytes, reg_at, CmpOp, Expr, Verdict, CT_MARK, CT_PROTO_DST, CT_STATUS, CT_STATUS_DNAT, META_IIFNAME,
    META_L4PROTO, META_OIFNAME, NAT_DNAT, REG_1,
};
use crate::nft::spec::RuleSpec;
use std::net::IpAddr;

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
/// With `mark` (packet counting, every local address), the connection is also marked (`ct mark
/// set th dport & 0xffff ^ TAG`, see `FamilySpec::any_mark`) so that the forward chain counts its
/// packets with one lookup of the mark.
fn dnat_via_map(f: &FamilySpec, by_addr: bool, mark: bool) -> Vec<Expr> {
    let map = if by_addr { f.map_addr } else { f.map_any };
    let mut v = load_key(f, by_addr, |r| load_daddr(f.nfproto, r), load_th_dport);
    v.push(Expr::Lookup { sreg: REG_1, set: map.into(), dreg: Some(REG_1), flags: 0 });
    if mark && !by_addr {
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
/// before the DNAT rules. A new connection to a port with a list (`listed_*`, one hash lookup
/// that an unlisted port misses) jumps to its check chain, which returns if the source is on the
/// port's list (one exact lookup per prefix length in use) and otherwise counts the packet in
/// the port's deny element and drops it. In number, they grow with the prefix lengths in use,
/// not with the lists.
fn allow_rules(state: &State) -> Vec<RuleSpec> {
    if state.allow.is_empty() {
        return vec![];
    }
    let mut rules = vec![];
    for (chain, from_host) in [("prerouting", ""), ("output", ", from the host")] {
        for f in &FAMILIES {
            let fam = f.family.name();
            let mut addr =
                vec![match_nfproto(f.nfproto), load_key(f, true, |r| load_daddr(f.nfproto, r), load_th_dport)];
            addr.push(vec![
                Expr::Lookup { sreg: REG_1, set: f.listed_addr.into(), dreg: None, flags: 0 },
                Expr::Verdict(Verdict::Jump(f.check_addr.into())),
            ]);
            rules.push(rule(
                chain,
                format!("{fam} ports with an allow list, published on one address{from_host}"),
                addr,
            ));
            let mut any =
                vec![match_nfproto(f.nfproto), load_key(f, false, |r| load_daddr(f.nfproto, r), load_th_dport)];
            any.push(vec![Expr::Lookup { sreg: REG_1, set: f.listed_any.into(), dreg: None, flags: 0 }]);
            any.push(match_daddr_local());
            any.push(vec![Expr::Verdict(Verdict::Jump(f.check_any.into()))]);
            rules.push(rule(
                chain,
                format!("{fam} ports with an allow list, published on every local address{from_host}"),
                any,
            ));
        }
    }
    for f in &FAMILIES {
        for by_addr in [true, false] {
            rules.extend(check_rules(state, f, by_addr));
        }
    }
    rules
}

/// The check chain of one family's listed ports (on one address, or on every address): per
/// prefix length that their lists use, longest first, `[ip daddr .] meta l4proto . th dport .
/// MASK . ip saddr & MASK @allow_* return`; then `[ip daddr .] meta l4proto . th dport @deny_*
/// counter drop` (only a dropped packet reaches, and bumps, the deny element's counter).
fn check_rules(state: &State, f: &FamilySpec, by_addr: bool) -> Vec<RuleSpec> {
    let (chain, allow, deny) =
        if by_addr { (f.check_addr, f.allow_addr, f.deny_addr) } else { (f.check_any, f.allow_any, f.deny_any) };
    let lens: std::collections::BTreeSet<u8> = state
        .allow
        .iter()
        .filter(|a| a.mapping.family() == f.family && a.mapping.host_ip.is_some() == by_addr)
        .flat_map(|a| a.from.iter().map(|c| c.0.prefix))
        .collect();
    if lens.is_empty() {
        return vec![];
    }
    let fam = f.family.name();
    let key = || load_key(f, by_addr, |r| load_daddr(f.nfproto, r), load_th_dport);
    let mask_slot = if by_addr { f.addr_slots() } else { 0 } + 2;
    let saddr_slot = mask_slot + f.addr_slots();
    let addr_len = if f.family == Family::V6 { 16 } else { 4 };
    let mut rules = vec![];
    for len in lens.into_iter().rev() {
        let mut v = key();
        let mask = prefix_mask_bytes(len, addr_len);
        v.push(Expr::Immediate { dreg: reg_at(mask_slot), data: mask.clone() });
        v.push(load_saddr(f.nfproto, reg_at(saddr_slot)));
        if len < addr_len as u8 * 8 {
            v.push(Expr::Bitwise { sreg: reg_at(saddr_slot), dreg: reg_at(saddr_slot), mask, xor: vec![0; addr_len] });
        }
        v.push(Expr::Lookup { sreg: REG_1, set: allow.into(), dreg: None, flags: 0 });
        v.push(Expr::Verdict(Verdict::Return));
        rules.push(rule(chain, format!("{fam} sources allowed by a /{len} of the port's list"), vec![v]));
    }
    let mut v = key();
    v.push(Expr::Lookup { sreg: REG_1, set: deny.into(), dreg: None, flags: 0 });
    v.extend(verdict(Verdict::Drop));
    rules.push(rule(chain, format!("{fam} sources not on the port's list"), vec![v]));
    rules
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

/// " (IPv4)" on a dual-stack network's rules, nothing on a single-family one.
fn pool_suffix(n: &Network, f: &FamilySpec) -> String {
    if n.pools.len() > 1 {
        format!(" ({})", f.family.name())
    } else {
        String::new()
    }
}

/// `meta nfproto F ip[6] daddr SUBNET iifname != BR ct status & dnat == 0 fib daddr type !=
/// local counter drop`: a connection's first packet that arrives from outside the bridge for a
/// container's address and was not DNAT'd (a neighbour routing the subnet through this host,
/// another network's container) is dropped, in the NAT chain, so no established packet pays for
/// the check. The bridge's own gateway address is the host's: left to the host's input rules.
fn only_published(f: &FamilySpec, n: &Network) -> Vec<Expr> {
    let pool = n.pool(f.family).expect("called for the network's families");
    let mut v = match_nfproto(f.nfproto);
    v.extend(match_prefix(load_daddr(f.nfproto, REG_1), pool.subnet.addr, pool.subnet.prefix));
    v.extend(match_ifname(META_IIFNAME, CmpOp::Neq, &n.bridge));
    v.extend(match_ct_bits_clear(CT_STATUS, CT_STATUS_DNAT));
    v.extend(match_daddr_not_local());
    v.extend(verdict(Verdict::Drop));
    v
}

/// `meta nfproto F ip[6] saddr SUBNET`.
fn from_subnet(f: &FamilySpec, n: &Network) -> Vec<Expr> {
    let pool = n.pool(f.family).expect("called for the network's families");
    let mut v = match_nfproto(f.nfproto);
    v.extend(match_prefix(load_saddr(f.nfproto, REG_1), pool.subnet.addr, pool.subnet.prefix));
    v
}

/// The rules one family has whatever the networks: guard, DNAT in prerouting and output, and
/// with packet counting the counting rules of `published`.
fn family_rules(f: &FamilySpec, counting: Counting) -> Vec<RuleSpec> {
    let mark = counting == Counting::Packets;
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
            vec![nf(), dnat_via_map(f, true, false)],
        ));
        rules.push(rule(
            chain,
            format!("{fam} ports published on every local address{from_host}"),
            vec![nf(), match_daddr_local(), dnat_via_map(f, false, mark)],
        ));
    }
    rules.push(rule(
        "prerouting",
        format!("{fam} ports published on one interface"),
        vec![nf(), match_daddr_local(), dnat_via_if_map(f)],
    ));
    if !mark {
        return rules;
    }
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
    let mut rules: Vec<RuleSpec> = allow_rules(state);
    rules.extend(FAMILIES.iter().flat_map(|f| family_rules(f, state.counting)));
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
    if state.counting == Counting::Packets {
        rules.extend(packet_counting_rules());
    }
    // What prerouting did not DNAT (a connection's first packet only): published ports of
    // IPv6-routed networks come in at the container's own address, counted once per connection.
    rules.push(rule(
        "prerouting",
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

/// The forward chain's rules with `Counting::Packets`: every packet of a published connection
/// counted and accepted, by the mark its DNAT rule set (one lookup) or, for ports published on
/// one address or interface and DNAT by other tables, in `published` by `ct original` fields.
fn packet_counting_rules() -> Vec<RuleSpec> {
    vec![
        rule(
            "forward",
            "ports published on every address: count and accept",
            vec![vec![
                Expr::Ct { key: CT_MARK, dreg: REG_1, dir: None },
                load_meta(META_L4PROTO, reg_at(1)),
                Expr::Lookup { sreg: REG_1, set: COUNT_ANY.into(), dreg: None, flags: 0 },
                Expr::Verdict(Verdict::Accept),
            ]],
        ),
        rule(
            "forward",
            "other published ports: count and accept",
            vec![match_ct_bits(CT_STATUS, CT_STATUS_DNAT), vec![Expr::Verdict(Verdict::Jump("published".into()))]],
        ),
        rule("published", "DNAT'd by another table", vec![vec![Expr::Verdict(Verdict::Accept)]]),
    ]
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
    for p in &n.pools {
        let f = family_spec(p.family());
        if !n.internal {
            rules.push(rule(
                "prerouting",
                format!("{}: only published ports come in{}", n.name, pool_suffix(n, f)),
                vec![only_published(f, n)],
            ));
        }
        // A routed IPv6 subnet is reachable as it is: nothing to translate.
        let nat = !(p.family() == Family::V6 && n.routed_v6());
        let fam = pool_suffix(n, f);
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
