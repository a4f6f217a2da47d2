use super::{
    desired, desired_rules, fake, plan, plan_mapping_changes, Mapping, NftOp, TableAction, COUNT_ANY, MAP_ANY, ROUTED6,
    TABLE,
};
use crate::model::{Cidr, Counting, State};
use crate::nft::expr::{Expr, Verdict};
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
    // The map's elements count connections (`counter`).
    assert!(text.contains(
        &"add map inet netnat pub_any4 { type inet_proto . inet_service : ipv4_addr . inet_service; counter; }"
            .to_string()
    ));
    // Every chain before any rule (rules jump to later chains); no forward chain by default.
    let first_rule = text.iter().position(|t| t.starts_with("add rule")).unwrap();
    assert!(text[first_rule..].iter().all(|t| !t.starts_with("add chain")));
    assert!(!text.iter().any(|t| t.starts_with("add chain inet netnat forward")), "{text:#?}");
    assert!(text.iter().any(|t| t
        == r#"add rule inet netnat prerouting meta nfproto ipv4 ip daddr 172.16.0.0/16 iifname != "MyDocker0" ct status & dnat == 0 fib daddr type != local counter drop comment "MyDocker0: only published ports come in""#), "{text:#?}");
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
    assert_eq!(text, vec!["add element inet netnat pub_addr4 { 127.0.0.1 . udp . 5353 : 172.16.1.2 . 53 }"]);
    // With packet counting, its forward counting element too.
    st.counting = Counting::Packets;
    let mut live = fake::live_after(&desired(&st), 0, 0);
    live.elems.values_mut().for_each(|e| e.retain(|e| e.key[..4] != [127, 0, 0, 1]));
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
fn packet_counting_adds_and_removes_the_forward_chain_in_place() {
    let st = demo_state();
    let mut counted = st.clone();
    counted.counting = Counting::Packets;
    let live = fake::live_after(&desired(&st), 5, 300);
    let p = plan(&desired(&counted), Some(&live));
    // Not a rebuild: the NAT maps keep their elements and their connection counters.
    assert_eq!(p.table, TableAction::Keep);
    let text: Vec<String> = p.ops().iter().map(|o| o.to_string()).collect();
    assert!(text[0].starts_with("add chain inet netnat forward { type filter hook forward priority 0;"), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("ct mark . meta l4proto @fwd_any accept")), "{text:#?}");
    assert!(text.iter().any(|t| t.starts_with("add element inet netnat fwd_any")), "{text:#?}");
    assert!(!text.iter().any(|t| t.contains("pub_any4 {") && t.starts_with("delete")), "{text:#?}");
    // The DNAT rule for every address now marks the connection.
    assert!(text.iter().any(|t| t.contains("ct mark set")), "{text:#?}");
    // And back: the forward chain is flushed and deleted last, the counting elements go.
    let live = fake::live_after(&desired(&counted), 5, 300);
    let text: Vec<String> = plan(&desired(&st), Some(&live)).ops().iter().map(|o| o.to_string()).collect();
    let at = |t: &str| text.iter().position(|x| x == t).unwrap_or_else(|| panic!("no {t} in {text:#?}"));
    let last_rule = text.iter().rposition(|t| t.starts_with("add rule")).unwrap();
    assert!(at("flush chain inet netnat forward") < at("delete chain inet netnat forward"));
    assert!(last_rule < at("delete chain inet netnat forward"));
    assert!(text.iter().any(|t| t.starts_with("delete element inet netnat fwd_any")), "{text:#?}");
}

#[test]
fn an_internal_network_needs_the_forward_chain() {
    let mut st = demo_state();
    assert!(!desired(&st).chains.iter().any(|c| c.name == "forward"));
    let mut n = crate::model::fixtures::net("sealed", &["10.77.0.0/16"], &[]);
    n.internal = true;
    st.networks.insert(n.name.clone(), n);
    let d = desired(&st);
    assert!(d.chains.iter().any(|c| c.name == "forward"));
    let forward: Vec<&str> = d.rules.iter().filter(|r| r.chain == "forward").map(|r| r.comment.as_str()).collect();
    assert_eq!(forward, ["sealed: internal, nothing comes in", "sealed: internal, nothing goes out"]);
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
    let p = plan(&want, Some(&live));
    assert_eq!(p.table, TableAction::Keep);
    assert!(!p.changes_rules());
    let kinds: Vec<(&str, bool, bool)> = p.elems.iter().map(|e| (e.set, e.have.is_some(), e.want.is_some())).collect();
    assert_eq!(kinds, [(MAP_ANY, true, true), (MAP_ANY, true, false)]);
    assert_eq!(p.elems[0].key, key);
    assert_eq!(p.elems[1].key, extra.key);
    // With packet counting, a missing counting element is planned too.
    let mut counted = st.clone();
    counted.counting = Counting::Packets;
    let want = desired(&counted);
    let mut live = fake::live_after(&want, 0, 0);
    live.elems.get_mut(COUNT_ANY).unwrap().clear();
    let kinds: Vec<(&str, bool, bool)> =
        plan(&want, Some(&live)).elems.iter().map(|e| (e.set, e.have.is_some(), e.want.is_some())).collect();
    assert_eq!(kinds, [(COUNT_ANY, false, true)]);
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
    let text: Vec<String> = plan_mapping_changes(&after, &listed, &[new]).ops().iter().map(|o| o.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "add element inet netnat allow_any4 { tcp . 9090 . 255.255.0.0 . 10.9.0.0, tcp . 9090 . 255.255.255.255 . 192.168.1.7 }",
            "add element inet netnat deny_any4 { tcp . 9090 }",
            "add element inet netnat listed_any4 { tcp . 9090 }",
        ]
    );
    let mut fewer = listed.clone();
    fewer.set_allow(&new, cidrs(&["10.9.0.0/16"]));
    let text: Vec<String> = plan_mapping_changes(&listed, &fewer, &[new]).ops().iter().map(|o| o.to_string()).collect();
    assert_eq!(text, vec!["delete element inet netnat allow_any4 { tcp . 9090 . 255.255.255.255 . 192.168.1.7 }"]);
    // The rules of allow lists come with the first list (8 jumps to the check chains, the
    // /16 check and the drop), and do not grow with more lists, only with prefix lengths.
    let rules = |st: &State| desired_rules(st).len();
    assert_eq!(rules(&fewer), rules(&after) + 10);
    let mut many = fewer.clone();
    for p in 1..100u16 {
        let m: Mapping = format!("{}:172.16.1.2:80", 10000 + p).parse().unwrap();
        many.mappings.push(m);
        many.set_allow(&m, cidrs(&[&format!("10.{p}.0.0/16")]));
    }
    assert_eq!(rules(&many), rules(&fewer));
    let m: Mapping = "9999:172.16.1.2:80".parse().unwrap();
    many.mappings.push(m);
    many.set_allow(&m, cidrs(&["10.0.0.0/8"]));
    assert_eq!(rules(&many), rules(&fewer) + 1);
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
        chain: "postrouting".into(),
        handle: 99,
        exprs: vec![Expr::Verdict(Verdict::Drop)],
        comment: None,
    });
    let ops = plan(&want, Some(&live)).ops();
    assert_eq!(ops[0], NftOp::FlushChain("postrouting".into()));
    assert_eq!(ops.len(), 1 + want.rules.iter().filter(|r| r.chain == "postrouting").count());
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
    has("add map inet netnat pub_addr6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; counter; }");
    has("add element inet netnat pub_addr6 { 2001:db8:1::1 . tcp . 8080 : fd00:16::2 . 80 }");
    has("add element inet netnat pub_any6 { udp . 8080 : fd00:16::2 . 80 }");
    has(
        r#"add rule inet netnat prerouting meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub_addr6 comment "IPv6 ports published on one address""#,
    );
    has(
        r#"add rule inet netnat postrouting meta nfproto ipv6 ip6 saddr fd00:16::/64 oifname != "d" masquerade comment "d: egress (IPv6)""#,
    );
    has(
        r#"add rule inet netnat prerouting meta nfproto ipv6 ip6 daddr fd00:16::/64 iifname != "d" ct status & dnat == 0 fib daddr type != local counter drop comment "d: only published ports come in (IPv6)""#,
    );
    st.counting = Counting::Packets;
    let text: Vec<String> = plan(&desired(&st), None).ops().iter().map(|o| o.to_string()).collect();
    assert!(text.iter().any(|x| x
        == r#"add rule inet netnat published meta nfproto ipv6 ct original ip6 daddr . meta l4proto . ct original proto-dst @fwd_addr6 accept comment "IPv6 ports published on one address""#));
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

#[test]
fn a_large_element_operation_prints_as_its_first_element_and_a_count() {
    let mut st = demo_state();
    st.mappings = vec!["20000-20099:172.16.1.1:20000-20099".parse().unwrap()];
    let ops = plan(&desired(&st), None).ops();
    let add = ops.iter().find(|o| matches!(o, NftOp::AddElems { set, .. } if set == MAP_ANY)).unwrap();
    assert_eq!(
        super::op_summary(add, 20),
        "add element inet netnat pub_any4 { tcp . 20000 : 172.16.1.1 . 20000, ... } (100 elements)"
    );
    assert_eq!(super::op_summary(add, 100), add.to_string());
    assert_eq!(super::op_summary(&ops[0], 0), "add table inet netnat");
}
