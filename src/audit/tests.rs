use super::*;
use crate::host::{BR_NF_CALL_IPTABLES, CT_COUNT, CT_MAX, IP_FORWARD};
use crate::model::{Family, Proto, Sandbox, State};
use crate::nft::expr::{
    cmp, ip_bytes, load_ip_daddr, load_meta, load_th_dport, match_ifname, match_ip_prefix, match_nfproto, CmpOp, Expr,
    Verdict, META_IIFNAME, META_L4PROTO, META_OIFNAME, NAT_DNAT, REG_1,
};
use crate::nft::family::{
    FAMILY_INET, FAMILY_IPV4, FAMILY_IPV6, HOOK_FORWARD, HOOK_PREROUTING, NFPROTO_IPV4, NFPROTO_IPV6,
};
use crate::nft::foreign::{decode_xt_nat, xt_nat_text};
use crate::nft::{BaseChain, LiveChain, LiveRule, LiveTable};
use crate::ruleset::{render_rule, TABLE};
use crate::{host, ruleset};
use std::net::{IpAddr, Ipv4Addr};

fn seed_state() -> State {
    let mut st = crate::model::fixtures::seed_state(&crate::model::host_ifname("ns1", "MyDocker0"));
    st.mappings.push("9090:172.16.1.1:8080".parse().unwrap());
    st.mappings.push("127.0.0.1:5353:172.16.1.1:53/udp".parse().unwrap());
    st
}

/// The table exactly as netnat would program it for `st`, each element having counted
/// 3 packets and 180 bytes.
fn table_for(st: &State) -> LiveTable {
    ruleset::fake::live_after(&ruleset::desired(st), 3, 180)
}

fn clean() -> Observed {
    let st = seed_state();
    let mut o = Observed { table: Some(table_for(&st)), ..Default::default() };
    o.links = vec![
        ObservedLink { name: "lo".into(), kind: None, has_peer: false },
        ObservedLink { name: "MyDocker0".into(), kind: Some("bridge".into()), has_peer: false },
        ObservedLink {
            name: st.sandboxes["ns1"].endpoints[0].host_ifname.clone(),
            kind: Some("veth".into()),
            has_peer: true,
        },
    ];
    o.netns = vec!["ns1".into()];
    o.sysctls.insert(IP_FORWARD.into(), "1".into());
    o.sysctls.insert(host::route_localnet_key("MyDocker0"), "1".into());
    o.sysctls.insert(BR_NF_CALL_IPTABLES.into(), "1".into());
    o.sysctls.insert(CT_COUNT.into(), "10".into());
    o.sysctls.insert(CT_MAX.into(), "1000".into());
    o.connections = vec![2, 0];
    o.state = st;
    o
}

fn ids(o: &Observed) -> Vec<(&'static str, Severity)> {
    audit(o).findings.iter().map(|f| (f.id, f.severity)).collect()
}

fn has(o: &Observed, id: &str) -> Vec<Finding> {
    audit(o).findings.into_iter().filter(|f| f.id == id).collect()
}

fn foreign_chain(family: u32, table: &str, name: &str, hook: u32, prio: i32, kind: &str, policy: u32) -> LiveChain {
    LiveChain {
        table: table.into(),
        family,
        name: name.into(),
        base: Some(BaseChain { hook, priority: prio, kind: kind.into(), policy }),
    }
}

fn foreign_rule(family: u32, table: &str, chain: &str, exprs: Vec<Expr>) -> LiveRule {
    LiveRule { table: table.into(), family, chain: chain.into(), handle: 7, exprs, comment: None }
}

#[test]
fn clean_setup_has_only_info() {
    let o = clean();
    let r = audit(&o);
    assert!(r.findings.iter().all(|f| f.severity == Severity::Info), "{:#?}", r.findings);
    assert_eq!(
        ids(&o),
        vec![
            ("host.br-netfilter", Severity::Info),
            ("inventory.mapping", Severity::Info),
            ("inventory.mapping", Severity::Info)
        ]
    );
    let any = r.mappings.iter().find(|m| m.host_port == 9090).unwrap();
    // Connections are counted by the NAT map's element; packets and bytes only with packet counting.
    assert_eq!(
        (any.scope, any.connections_total, any.packets, any.bytes, any.connections),
        (Scope::Any, 3, None, None, 2)
    );
    let mut counted = clean();
    counted.state.counting = crate::model::Counting::Packets;
    counted.table = Some(table_for(&counted.state));
    let r2 = audit(&counted);
    let any = r2.mappings.iter().find(|m| m.host_port == 9090).unwrap();
    assert_eq!((any.connections_total, any.packets, any.bytes), (3, Some(3), Some(180)));
    let lo = r.mappings.iter().find(|m| m.host_port == 5353).unwrap();
    assert_eq!((lo.scope, lo.protocol.as_str()), (Scope::Loopback, "udp"));
    assert!(render_text(&r).contains("0 error(s), 0 warning(s), 3 info"));
}

#[test]
fn hand_added_rule_is_drift_naming_chain_and_rule() {
    let mut o = clean();
    let t = o.table.as_mut().unwrap();
    t.rules.push(LiveRule {
        table: TABLE.into(),
        family: FAMILY_INET,
        chain: "postrouting".into(),
        handle: 99,
        exprs: vec![Expr::Counter],
        comment: None,
    });
    let f = has(&o, "drift.rule");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Error);
    assert!(f[0].message.contains("chain inet netnat postrouting"), "{}", f[0].message);
    assert!(f[0].message.contains("foreign rule (handle 99): counter"), "{}", f[0].message);
}

#[test]
fn missing_table_and_layout() {
    let mut o = clean();
    o.table = None;
    assert_eq!(has(&o, "drift.table-missing").len(), 1);
    // The guard is gone with the table: the bridge's route_localnet is now unguarded.
    assert_eq!(has(&o, "host.route-localnet-unguarded").len(), 1);
    let mut o = clean();
    o.table.as_mut().unwrap().chains.pop();
    assert_eq!(has(&o, "drift.layout").len(), 1);
    // Nothing recorded, no table: nothing to say.
    let o = Observed::default();
    assert!(audit(&o).findings.is_empty());
}

#[test]
fn element_drift() {
    let mut o = clean();
    let t = o.table.as_mut().unwrap();
    let any = t.elems.get_mut(ruleset::MAP_ANY).unwrap();
    let removed = any.remove(0);
    let mut extra = removed.clone();
    extra.key[4..6].copy_from_slice(&7777u16.to_be_bytes());
    any.push(extra);
    let addr = t.elems.get_mut(ruleset::MAP_ADDR).unwrap();
    addr[0].data[0] = 10;
    let f = audit(&o).findings;
    let get = |id| f.iter().find(|x| x.id == id).unwrap_or_else(|| panic!("no {id} in {f:#?}"));
    assert!(get("drift.element-missing").message.contains("tcp . 9090 : 172.16.1.1 . 8080"));
    assert!(get("drift.element-extra").message.contains("tcp . 7777"));
    assert!(get("drift.element-changed").message.contains("127.0.0.1 . udp . 5353"));
}

#[test]
fn exposure_says_who_can_reach_and_what_bypasses_an_input_firewall() {
    let mut o = clean();
    assert_eq!(audit(&o).mappings[0].reach, "any source");
    assert!(has(&o, "exposure.bypasses-input-firewall").is_empty(), "no input firewall");
    // firewalld's way: policy accept, a final reject of everything else.
    o.chains.push(foreign_chain(FAMILY_INET, "firewalld", "filter_INPUT", 1, 10, "filter", 1));
    o.rules.push(foreign_rule(FAMILY_INET, "firewalld", "filter_INPUT", vec![Expr::Other { name: "reject".into() }]));
    let f = has(&o, "exposure.bypasses-input-firewall");
    assert_eq!(f.len(), 1);
    assert!(
        f[0].message.contains("chain inet firewalld filter_INPUT (input hook) ends with a rule"),
        "{}",
        f[0].message
    );
    // A conditional drop is not a firewall that closes the host.
    let mut o2 = clean();
    o2.chains.push(foreign_chain(FAMILY_INET, "fw", "in", 1, 0, "filter", 1));
    let mut cond = match_ifname(META_IIFNAME, CmpOp::Eq, "eth9");
    cond.push(Expr::Verdict(Verdict::Drop));
    o2.rules.push(foreign_rule(FAMILY_INET, "fw", "in", cond));
    assert!(has(&o2, "exposure.bypasses-input-firewall").is_empty());
    // An allow list restricts the mapping: the finding leaves it out.
    let m = o.state.mappings[0];
    o.state.set_allow(&m, vec!["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(audit(&o).mappings[0].reach, "sources in 10.0.0.0/8");
    assert!(has(&o, "exposure.bypasses-input-firewall").is_empty());
    // A forward chain with policy drop that does not name the bridge: nobody gets in.
    o.chains.push(foreign_chain(FAMILY_IPV4, "filter", "FORWARD", HOOK_FORWARD, 0, "filter", 0));
    assert!(audit(&o).mappings[0].reach.starts_with("nobody from outside: chain ip filter FORWARD"));
}

#[test]
fn forward_drop_policy_and_rules() {
    let mut o = clean();
    o.chains.push(foreign_chain(FAMILY_IPV4, "filter", "FORWARD", HOOK_FORWARD, 0, "filter", 0));
    let f = has(&o, "conflict.forward-drop");
    assert_eq!(f.len(), 1);
    assert!(f[0].message.contains("ip filter FORWARD") && f[0].message.contains("policy drop"));
    // A drop rule on another interface cannot hit; one without an interface match can.
    let mut o = clean();
    o.chains.push(foreign_chain(FAMILY_INET, "fw", "fwd", HOOK_FORWARD, 0, "filter", 1));
    let mut other_if = match_ifname(META_IIFNAME, CmpOp::Eq, "eth9");
    other_if.push(Expr::Verdict(Verdict::Drop));
    o.rules.push(foreign_rule(FAMILY_INET, "fw", "fwd", other_if));
    assert!(has(&o, "conflict.forward-drop").is_empty());
    let mut on_bridge = match_ifname(META_OIFNAME, CmpOp::Eq, "MyDocker0");
    on_bridge.push(Expr::Verdict(Verdict::Drop));
    o.rules.push(foreign_rule(FAMILY_INET, "fw", "fwd", on_bridge));
    let mut other_net = match_ip_prefix(load_ip_daddr(REG_1), "10.0.0.0".parse().unwrap(), 8);
    other_net.push(Expr::Verdict(Verdict::Drop));
    o.rules.push(foreign_rule(FAMILY_INET, "fw", "fwd", other_net));
    let f = has(&o, "conflict.forward-drop");
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].message.contains(r#"oifname "MyDocker0" drop"#), "{}", f[0].message);
    // ip6 tables never see netnat's IPv4 traffic.
    let mut o = clean();
    o.chains.push(foreign_chain(10, "filter", "FORWARD", HOOK_FORWARD, 0, "filter", 0));
    assert!(has(&o, "conflict.forward-drop").is_empty());
}

fn dnat_rule(port: u16) -> Vec<Expr> {
    dnat_rule_to(port, "10.9.9.9")
}

/// `tcp dport PORT dnat ip[6] to ADDR`, the nat statement's family that of `to`.
fn dnat_rule_to(port: u16, to: &str) -> Vec<Expr> {
    let to: IpAddr = to.parse().unwrap();
    let family = if to.is_ipv6() { FAMILY_IPV6 } else { FAMILY_IPV4 };
    vec![
        load_meta(META_L4PROTO, REG_1),
        cmp(REG_1, CmpOp::Eq, [6u8]),
        load_th_dport(REG_1),
        cmp(REG_1, CmpOp::Eq, port.to_be_bytes()),
        Expr::Immediate { dreg: REG_1, data: ip_bytes(to) },
        Expr::Nat { kind: NAT_DNAT, family, addr: Some(REG_1), proto: None },
    ]
}

/// `clean()` made dual stack: MyDocker0 also has fd00:16::/64, ns1 fd00:16::2, and 9090 is
/// published over both families.
fn clean_dual() -> Observed {
    let mut o = clean();
    let n = crate::model::fixtures::net("MyDocker0", &["172.16.0.0/16", "fd00:16::/64"], &["172.16.1.254"]);
    o.state.networks.insert(n.name.clone(), n);
    o.state.sandboxes.get_mut("ns1").unwrap().endpoints[0].ips.push("fd00:16::2".parse().unwrap());
    o.state.mappings.push("9090:[fd00:16::2]:8080".parse().unwrap());
    o.connections.push(0);
    o.table = Some(table_for(&o.state));
    o.sysctls.insert(host::IP6_FORWARD.into(), "1".into());
    o
}

/// The objects[0] (the mapping) of every conflict.dnat finding.
fn dnat_conflicts(o: &Observed) -> Vec<String> {
    has(o, "conflict.dnat").into_iter().map(|f| f.objects[0].clone()).collect()
}

const V4_9090: &str = "9090:172.16.1.1:8080/tcp";
const V6_9090: &str = "9090:[fd00:16::2]:8080/tcp";

/// `struct nf_nat_range` (40 bytes) or `nf_nat_range2` (48, as the kernel dumps its 44 bytes
/// padded to 8) holding one IPv6 range.
fn nat_range6(flags: u32, min: &str, max: &str, ports: (u16, u16), rev2: bool) -> Vec<u8> {
    let mut b = flags.to_ne_bytes().to_vec();
    b.extend(min.parse::<std::net::Ipv6Addr>().unwrap().octets());
    b.extend(max.parse::<std::net::Ipv6Addr>().unwrap().octets());
    b.extend(ports.0.to_be_bytes());
    b.extend(ports.1.to_be_bytes());
    if rev2 {
        b.extend([0; 8]); // base port, then padding
    }
    b
}

#[test]
fn foreign_dnat_says_who_wins() {
    for (prio, says) in [(-150, "the foreign DNAT wins"), (-50, "netnat's mapping wins"), (-100, "registered first")] {
        let mut o = clean();
        o.chains.push(foreign_chain(FAMILY_IPV4, "other", "pre", HOOK_PREROUTING, prio, "nat", 1));
        o.rules.push(foreign_rule(FAMILY_IPV4, "other", "pre", dnat_rule(9090)));
        let f = has(&o, "conflict.dnat");
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(f[0].message.contains(says), "{}", f[0].message);
        assert!(f[0].message.contains("dnat ip to 10.9.9.9"), "{}", f[0].message);
        assert_eq!(f[0].severity, Severity::Warning);
        // And it is listed among the foreign NAT rules.
        assert!(has(&o, "foreign.nat")[0].message.contains("ip other pre"));
    }
    // Another port, or udp, is no conflict.
    let mut o = clean();
    o.chains.push(foreign_chain(FAMILY_IPV4, "other", "pre", HOOK_PREROUTING, -150, "nat", 1));
    o.rules.push(foreign_rule(FAMILY_IPV4, "other", "pre", dnat_rule(9091)));
    assert!(has(&o, "conflict.dnat").is_empty());
    // Through a regular chain jumped to from the base chain (Docker's layout).
    let mut o = clean();
    o.chains.push(foreign_chain(FAMILY_IPV4, "nat", "PREROUTING", HOOK_PREROUTING, -100, "nat", 1));
    o.chains.push(LiveChain { table: "nat".into(), family: FAMILY_IPV4, name: "DOCKER".into(), base: None });
    o.rules.push(foreign_rule(FAMILY_IPV4, "nat", "PREROUTING", vec![Expr::Verdict(Verdict::Jump("DOCKER".into()))]));
    o.rules.push(foreign_rule(FAMILY_IPV4, "nat", "DOCKER", dnat_rule(9090)));
    let f = has(&o, "conflict.dnat");
    assert_eq!(f.len(), 1);
    assert!(f[0].message.contains("ip nat PREROUTING has netnat's priority"), "{}", f[0].message);
}

#[test]
fn decodes_iptables_nat_targets() {
    // Revision 0: rangesize, flags, min_ip, max_ip, min port, max port (+ 4 bytes padding).
    let mut rev0 = 1u32.to_ne_bytes().to_vec();
    rev0.extend(3u32.to_ne_bytes());
    rev0.extend([10, 1, 2, 3, 10, 1, 2, 3]);
    rev0.extend(80u16.to_be_bytes());
    rev0.extend(80u16.to_be_bytes());
    rev0.extend([0; 4]);
    assert_eq!(xt_nat_text("DNAT", &rev0, Some(Family::V4)), "dnat to 10.1.2.3:80 (iptables DNAT)");
    // Revision 2: flags, min addr (16), max addr (16), min port, max port, base port.
    let mut rev2 = 1u32.to_ne_bytes().to_vec();
    rev2.extend([192, 0, 2, 1]);
    rev2.extend([0; 12]);
    rev2.extend([192, 0, 2, 9]);
    rev2.extend([0; 12]);
    rev2.extend([0; 4 + 2 + 6]);
    assert_eq!(rev2.len(), 48);
    assert_eq!(xt_nat_text("SNAT", &rev2, Some(Family::V4)), "snat to 192.0.2.1-192.0.2.9 (iptables SNAT)");
    let mut masq = 1u32.to_ne_bytes().to_vec();
    masq.extend([0; 20]);
    assert_eq!(xt_nat_text("MASQUERADE", &masq, Some(Family::V4)), "masquerade (iptables MASQUERADE)");
    assert!(xt_nat_text("DNAT", &[1, 2, 3], Some(Family::V4)).contains("not decoded: 3 bytes"));
    assert!(xt_nat_text("NETMAP", &rev0, Some(Family::V4)).contains("not decoded"));
    // In a rule: listed, never skipped.
    let mut o = clean();
    o.chains.push(foreign_chain(FAMILY_IPV4, "nat", "PREROUTING", HOOK_PREROUTING, -100, "nat", 1));
    let mut e = dnat_rule(9191);
    e.truncate(4);
    e.push(Expr::Counter);
    e.push(Expr::Xt { target: true, name: "DNAT".into(), info: rev0 });
    o.rules.push(foreign_rule(FAMILY_IPV4, "nat", "PREROUTING", e));
    let mut weird = vec![Expr::Xt { target: true, name: "DNAT".into(), info: vec![0; 7] }];
    weird.insert(0, Expr::Counter);
    o.rules.push(foreign_rule(FAMILY_IPV4, "nat", "PREROUTING", weird));
    let f = has(&o, "foreign.nat");
    assert_eq!(f.len(), 2);
    assert!(f.iter().any(|x| x.message.contains("th dport 9191 counter dnat to 10.1.2.3:80")), "{f:#?}");
    assert!(f.iter().any(|x| x.message.contains("not decoded: 7 bytes")), "{f:#?}");
}

#[test]
fn decodes_ip6tables_nat_targets() {
    // `ip6tables-nft -t nat -A PREROUTING -j DNAT --to-destination [fd00:16::2]:80` (revision 2):
    // flags MAP_IPS|PROTO_SPECIFIED, min and max address, min and max port, base port, padding.
    let mut dnat = 3u32.to_ne_bytes().to_vec();
    let fd00_16_2 = [0xfd, 0, 0, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    dnat.extend(fd00_16_2);
    dnat.extend(fd00_16_2);
    dnat.extend([0, 80, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(dnat.len(), 48);
    let r = decode_xt_nat(&dnat, Family::V6).unwrap();
    assert_eq!((r.min_ip, r.max_ip, r.min_port), ("fd00:16::2".parse().unwrap(), r.min_ip, 80));
    assert_eq!(xt_nat_text("DNAT", &dnat, Some(Family::V6)), "dnat to [fd00:16::2]:80 (ip6tables DNAT)");
    // The same blob read as IPv4 would be a wrong address: the family decides the width.
    assert_eq!(decode_xt_nat(&dnat, Family::V4).unwrap().min_ip, "253.0.0.22".parse::<IpAddr>().unwrap());
    // Revision 1 (`nf_nat_range`, 40 bytes): an address range without ports.
    let snat = nat_range6(1, "fd00::1", "fd00::9", (0, 0), false);
    assert_eq!(snat.len(), 40);
    assert_eq!(xt_nat_text("SNAT", &snat, Some(Family::V6)), "snat to fd00::1-fd00::9 (ip6tables SNAT)");
    let both = nat_range6(3, "2001:db8::1", "2001:db8::2", (8080, 8081), true);
    assert_eq!(
        xt_nat_text("DNAT", &both, Some(Family::V6)),
        "dnat to [2001:db8::1]-[2001:db8::2]:8080-8081 (ip6tables DNAT)"
    );
    // IPv6 MASQUERADE and REDIRECT also use `nf_nat_range`.
    assert_eq!(
        xt_nat_text("MASQUERADE", &nat_range6(0, "::", "::", (0, 0), false), Some(Family::V6)),
        "masquerade (ip6tables MASQUERADE)"
    );
    let redirect = nat_range6(2 | 16, "::", "::", (8080, 8080), false);
    assert_eq!(
        xt_nat_text("REDIRECT", &redirect, Some(Family::V6)),
        "redirect to :8080 fully-random (ip6tables REDIRECT)"
    );
    // The IPv4-only compat layout does not exist in IPv6; without a family nothing is guessed.
    let mut compat = 1u32.to_ne_bytes().to_vec();
    compat.extend([0; 20]);
    assert_eq!(decode_xt_nat(&compat, Family::V6), None);
    assert!(xt_nat_text("DNAT", &dnat, None).contains("not decoded: 48 bytes"));
    // In an ip6 table's rule, the listed text uses the IPv6 layout.
    let mut o = clean_dual();
    o.chains.push(foreign_chain(FAMILY_IPV6, "nat", "PREROUTING", HOOK_PREROUTING, -100, "nat", 1));
    let mut e = dnat_rule(9191);
    e.truncate(4);
    e.push(Expr::Counter);
    e.push(Expr::Xt { target: true, name: "DNAT".into(), info: dnat.clone() });
    o.rules.push(foreign_rule(FAMILY_IPV6, "nat", "PREROUTING", e));
    let f = has(&o, "foreign.nat");
    assert_eq!(f.len(), 1);
    assert!(f[0].message.starts_with("ip6 nat PREROUTING (handle 7): "), "{}", f[0].message);
    assert!(f[0].message.contains("th dport 9191 counter dnat to [fd00:16::2]:80 (ip6tables DNAT)"), "{f:#?}");
}

#[test]
fn foreign_dnat_conflicts_only_within_its_family() {
    let pre = |family| foreign_chain(family, "other", "pre", HOOK_PREROUTING, -150, "nat", 1);
    // A native `dnat to` in an ip6 table: only the IPv6 mapping of 9090 is taken over.
    let mut o = clean_dual();
    o.chains.push(pre(FAMILY_IPV6));
    o.rules.push(foreign_rule(FAMILY_IPV6, "other", "pre", dnat_rule_to(9090, "fd00:16::9")));
    assert_eq!(dnat_conflicts(&o), vec![V6_9090]);
    let f = &has(&o, "conflict.dnat")[0];
    assert!(f.message.contains("chain ip6 other pre translates"), "{}", f.message);
    assert!(f.message.contains("dnat ip6 to [fd00:16::9]"), "{}", f.message);
    assert!(f.message.contains("the foreign DNAT wins"), "{}", f.message);
    assert!(has(&o, "foreign.nat")[0].message.contains("ip6 other pre"));
    // With no IPv6 mapping, the same rule conflicts with nothing (but is still listed).
    let mut o = clean();
    o.chains.push(pre(FAMILY_IPV6));
    o.rules.push(foreign_rule(FAMILY_IPV6, "other", "pre", dnat_rule_to(9090, "fd00:16::9")));
    assert!(dnat_conflicts(&o).is_empty());
    assert_eq!(has(&o, "foreign.nat").len(), 1);
    // An ip table takes over the IPv4 mapping only.
    let mut o = clean_dual();
    o.chains.push(pre(FAMILY_IPV4));
    o.rules.push(foreign_rule(FAMILY_IPV4, "other", "pre", dnat_rule(9090)));
    assert_eq!(dnat_conflicts(&o), vec![V4_9090]);
    // In an inet table, `meta nfproto` or the nat statement's family decides; with neither,
    // (an xt target, say) both families.
    for (exprs, want) in [
        ([match_nfproto(NFPROTO_IPV6), dnat_rule(9090)].concat(), vec![V6_9090]),
        (dnat_rule_to(9090, "fd00:16::9"), vec![V6_9090]),
        ([match_nfproto(NFPROTO_IPV4), dnat_rule(9090)].concat(), vec![V4_9090]),
        (
            [&dnat_rule(9090)[..4], &[Expr::Xt { target: true, name: "DNAT".into(), info: vec![0; 48] }]].concat(),
            vec![V4_9090, V6_9090],
        ),
    ] {
        let mut o = clean_dual();
        o.chains.push(pre(FAMILY_INET));
        o.rules.push(foreign_rule(FAMILY_INET, "other", "pre", exprs.clone()));
        let mut got = dnat_conflicts(&o);
        got.sort();
        assert_eq!(got, want, "{}", render_rule(&exprs, None));
    }
    // ip6tables-nft's DNAT target on 9090.
    let mut o = clean_dual();
    o.chains.push(pre(FAMILY_IPV6));
    let mut e = dnat_rule(9090);
    e.truncate(4);
    e.push(Expr::Xt {
        target: true,
        name: "DNAT".into(),
        info: nat_range6(3, "fd00:16::9", "fd00:16::9", (80, 80), true),
    });
    o.rules.push(foreign_rule(FAMILY_IPV6, "other", "pre", e));
    assert_eq!(dnat_conflicts(&o), vec![V6_9090]);
    assert!(has(&o, "conflict.dnat")[0].message.contains("dnat to [fd00:16::9]:80 (ip6tables DNAT)"));
    // A routed IPv6 network publishes no host port: nothing to take over.
    o.state.networks.get_mut("MyDocker0").unwrap().ipv6_mode = crate::model::Ipv6Mode::Routed;
    assert!(dnat_conflicts(&o).is_empty());
}

#[test]
fn ipv6_forward_drop_matters_once_a_network_has_ipv6() {
    let mut o = clean_dual();
    o.chains.push(foreign_chain(FAMILY_IPV6, "filter", "FORWARD", HOOK_FORWARD, 0, "filter", 0));
    let f = has(&o, "conflict.forward-drop");
    assert_eq!(f.len(), 1);
    assert!(f[0].message.contains("ip6 filter FORWARD") && f[0].message.contains("policy drop"));
    // A drop rule restricted to the other family of an inet table is none of an IPv4-only host's business.
    let mut o = clean();
    o.chains.push(foreign_chain(FAMILY_INET, "fw", "fwd", HOOK_FORWARD, 0, "filter", 1));
    let v6_drop = [match_nfproto(NFPROTO_IPV6), vec![Expr::Verdict(Verdict::Drop)]].concat();
    o.rules.push(foreign_rule(FAMILY_INET, "fw", "fwd", v6_drop.clone()));
    assert!(has(&o, "conflict.forward-drop").is_empty());
    let mut o = clean_dual();
    o.chains.push(foreign_chain(FAMILY_INET, "fw", "fwd", HOOK_FORWARD, 0, "filter", 1));
    o.rules.push(foreign_rule(FAMILY_INET, "fw", "fwd", v6_drop));
    assert_eq!(has(&o, "conflict.forward-drop").len(), 1);
}

#[test]
fn host_settings() {
    let mut o = clean();
    o.sysctls.insert(IP_FORWARD.into(), "0".into());
    o.sysctls.insert(CT_COUNT.into(), "900".into());
    o.sysctls.insert(BR_NF_CALL_IPTABLES.into(), "0".into());
    let got = ids(&o);
    assert!(got.contains(&("host.forwarding-off", Severity::Error)));
    assert!(got.contains(&("host.conntrack-full", Severity::Warning)));
    assert!(!got.iter().any(|(i, _)| *i == "host.br-netfilter"));
    // Guard gone while route_localnet is on.
    let mut o = clean();
    o.table.as_mut().unwrap().rules.retain(|r| r.chain != "guard");
    let f = has(&o, "host.route-localnet-unguarded");
    assert_eq!(f[0].objects, vec!["MyDocker0".to_string()]);
    assert_eq!(has(&o, "drift.rule").len(), 1);
}

fn listener(protocol: Proto, addr: Ipv4Addr, port: u16) -> Listener {
    Listener { protocol, addr, port, inode: 0, process: None }
}

#[test]
fn listeners_on_published_ports() {
    let mut o = clean();
    o.listeners = vec![
        listener(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 9090),
        listener(Proto::Udp, "127.0.0.2".parse().unwrap(), 5353),
        listener(Proto::Udp, "127.0.0.1".parse().unwrap(), 9090),
    ];
    let f = has(&o, "conflict.local-listener");
    assert_eq!(f.len(), 1, "{f:#?}");
    // conmon's reservation of a port a CNI container owns is not a competing listener; the
    // same socket on a port of the CLI is.
    o.listeners[0].process = Some("conmon".into());
    assert_eq!(has(&o, "conflict.local-listener").len(), 1);
    let m = o.state.mappings[0];
    let a = crate::model::Attachment {
        network: "podman".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        mappings: vec![m],
        standby: vec![],
    };
    o.state.attachments.insert(a.id().key(), a);
    assert!(has(&o, "conflict.local-listener").is_empty());
    assert!(f[0].message.contains("0.0.0.0:9090/tcp"));
}

#[test]
fn leftovers_found() {
    let mut o = clean();
    o.links.push(ObservedLink { name: "nn12345678".into(), kind: Some("veth".into()), has_peer: true });
    o.links.push(ObservedLink { name: "nnotmine".into(), kind: Some("veth".into()), has_peer: true });
    o.state.sandboxes.insert("empty".into(), Sandbox { name: "empty".into(), created: true, endpoints: vec![] });
    o.state.sandboxes.insert("adopted".into(), Sandbox { name: "adopted".into(), created: false, endpoints: vec![] });
    o.state.mappings.push("8080:10.200.0.5:80".parse().unwrap());
    o.connections.push(0);
    let f = audit(&o).findings;
    let of = |id| f.iter().filter(|x| x.id == id).map(|x| x.objects[0].clone()).collect::<Vec<_>>();
    assert_eq!(of("leftover.veth"), vec!["nn12345678"]);
    assert_eq!(of("leftover.netns"), vec!["empty"]);
    assert_eq!(of("leftover.mapping-target"), vec!["8080:10.200.0.5:80/tcp"]);
    // A recorded veth whose sandbox namespace is gone.
    let mut o = clean();
    o.netns.clear();
    assert!(has(&o, "leftover.veth")[0].message.contains("namespace /run/netns/ns1 is gone"));
}

#[test]
fn legacy_and_config_drift() {
    let mut o = clean();
    o.legacy_tables = vec!["nat".into(), "filter".into()];
    assert_eq!(has(&o, "conflict.legacy-iptables")[0].objects, vec!["nat", "filter"]);
    let mut cfg = o.state.clone();
    cfg.mappings.pop();
    cfg.mappings.push("9191:172.16.1.1:80".parse().unwrap());
    o.config = Some(cfg);
    let f = has(&o, "drift.config");
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f.iter().all(|x| x.severity == Severity::Warning));
}

#[test]
fn unreadable_record_is_an_error_naming_the_file() {
    let mut o = clean();
    assert!(audit(&o).findings.iter().all(|f| f.id != "state.unreadable"));
    o.record_unreadable = Some("/run/netnat/state.json: the file is empty".into());
    let r = audit(&o);
    let f = &r.findings[0];
    assert_eq!((f.id, f.severity), ("state.unreadable", Severity::Error));
    assert_eq!(f.objects, vec!["/run/netnat/state.json".to_string()]);
    assert!(f.message.contains("the file is empty") && f.message.contains("netnat recover"), "{}", f.message);
}

#[test]
fn findings_sorted_worst_first() {
    let mut o = clean();
    o.table = None;
    let sev: Vec<Severity> = audit(&o).findings.iter().map(|f| f.severity).collect();
    let mut sorted = sev.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(sev, sorted);
}

#[test]
fn parses_proc_net() {
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:9C40 0100007F:2382 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
    let l = parse_proc_net(tcp, Proto::Tcp);
    assert_eq!(
        l,
        vec![
            Listener { inode: 1, ..listener(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 9090) },
            Listener { inode: 2, ..listener(Proto::Tcp, Ipv4Addr::LOCALHOST, 53) },
        ]
    );
    let tcp6 =
        "header\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n\
   1: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n\
   2: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n";
    let l = parse_proc_net(tcp6, Proto::Tcp);
    assert_eq!(l.len(), 2);
    let at = |l: &[Listener]| l.iter().map(|l| (l.addr, l.port)).collect::<Vec<_>>();
    assert!(at(&l).contains(&(Ipv4Addr::UNSPECIFIED, 8080)));
    assert!(at(&l).contains(&(Ipv4Addr::LOCALHOST, 80)));
    let udp = "header\n   7: 00000000:14E9 00000000:0000 07 0 0 0\n   8: 0100007F:14EA 0200007F:0035 01 0 0 0\n";
    assert_eq!(parse_proc_net(udp, Proto::Udp), vec![listener(Proto::Udp, Ipv4Addr::UNSPECIFIED, 5353)]);
    assert_eq!(parse_table_names("nat\nfilter\n\n"), vec!["nat", "filter"]);
}

#[test]
fn netnat_veth_names() {
    assert!(is_netnat_veth_name(&crate::model::host_ifname("a", "b")));
    assert!(is_netnat_veth_name("nn12345678"));
    assert!(!is_netnat_veth_name("nn1234567"));
    assert!(!is_netnat_veth_name("nn1234567g"));
    assert!(!is_netnat_veth_name("veth-ext"));
}

#[test]
fn host_firewall_openings_missing_and_damaged() {
    use crate::model::{HostFirewallKind, HostFirewallMode};
    let mut o = clean();
    assert!(has(&o, "host.firewall-open").is_empty(), "not looked at: nothing said");
    let opened = |complete| crate::hostfw::Observed {
        held: vec![(HostFirewallKind::Docker, "MyDocker0".into(), "MyDocker0".into(), "rules".into(), complete)],
        running: vec![HostFirewallKind::Docker],
        unreachable: vec![],
    };
    o.host_firewall = Some(opened(true));
    assert_eq!(has(&o, "host.firewall-open")[0].severity, Severity::Info);
    assert!(has(&o, "host.firewall-missing").is_empty() && has(&o, "host.firewall-damaged").is_empty());
    o.host_firewall = Some(opened(false));
    assert_eq!(has(&o, "host.firewall-damaged")[0].severity, Severity::Warning);
    // Running without netnat's opening: the warning gives `netnat reload` and Docker's own fix.
    o.host_firewall = Some(crate::hostfw::Observed { held: vec![], ..opened(true) });
    let f = has(&o, "host.firewall-missing");
    assert!(f[0].message.contains("netnat reload") && f[0].message.contains("iptables -I DOCKER-USER -i MyDocker0"));
    // A network with the integration off is the operator's business.
    o.state.networks.get_mut("MyDocker0").unwrap().host_firewall = HostFirewallMode::Off;
    assert!(has(&o, "host.firewall-missing").is_empty());
    o.host_firewall = Some(crate::hostfw::Observed {
        unreachable: vec![(HostFirewallKind::Firewalld, "does not answer".into())],
        ..Default::default()
    });
    assert_eq!(has(&o, "host.firewall-unreachable")[0].severity, Severity::Warning);
}
