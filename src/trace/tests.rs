use super::*;
use crate::model::Family;
use crate::nft::expr::{set_nftrace, Expr, Verdict};
use crate::nft::trace::{
    NFTA_TRACE_CHAIN, NFTA_TRACE_CT_DIRECTION, NFTA_TRACE_CT_ID, NFTA_TRACE_CT_STATE, NFTA_TRACE_ID, NFTA_TRACE_IIF,
    NFTA_TRACE_NETWORK_HEADER, NFTA_TRACE_NFPROTO, NFTA_TRACE_OIF, NFTA_TRACE_POLICY, NFTA_TRACE_RULE_HANDLE,
    NFTA_TRACE_TABLE, NFTA_TRACE_TRANSPORT_HEADER, NFTA_TRACE_TYPE, NFTA_TRACE_VERDICT, NFTA_VERDICT_CHAIN,
    NFTA_VERDICT_CODE,
};
use crate::nft::{BaseChain, LiveChain, LiveRule, LiveTable};
use crate::ruleset::RuleSpec;

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
    let rule = |family: u32, table: &str, chain: &str, handle: u64, exprs: Vec<Expr>, comment: Option<&str>| LiveRule {
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
        .find(|r| r.chain == "prerouting" && r.comment.contains("every local address") && r.comment.contains("IPv4"))
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
    assert!(text.contains("prerouting -100  inet netnat prerouting: rule 7: meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pub_any4 \"IPv4 ports published on every local address\" -> accept"), "{text}");
    assert!(text.contains("dnat: 198.51.100.1:9090 -> 172.16.1.1:8080 (by inet netnat prerouting rule 7)"), "{text}");
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
    let e =
        |chain, kind, pkt| Ev { id: 6, family: 1, table: "netnat", chain, kind, pkt, iif: Some(3), ..Ev::default() };
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
