//! Which rule of another table really decides a container's packet (pure).
//!
//! A packet of one traffic class (container egress, container to container, a published port's
//! connection) is walked through every base chain of another table on the forward hook, rule by
//! rule, with jumps, gotos and returns, as the kernel would. What the packet is known to be
//! (interfaces, connection state `new`, `ct status dnat` for published ports, its family) decides
//! a match; anything not known (ports, addresses, sets, rate limits) makes a rule conditional:
//! a conditional accept is not relied on and a conditional drop is not blamed. So firewalld's
//! `ct state invalid drop` never counts (a new connection is not invalid), its final `reject`
//! does; Docker's FORWARD policy drop does unless `DOCKER-USER` accepts the bridge first.

use crate::model::Family;
use crate::nft::expr::{self, CmpOp, Expr, Verdict};
use crate::nft::{LiveChain, LiveRule};
use std::collections::BTreeMap;

const HOOK_FORWARD: u32 = 2;
/// NF_CT_STATE_BIT(IP_CT_NEW).
const CT_STATE_NEW: u32 = 1 << 3;
/// How deep jumps are followed (the kernel allows 16).
const MAX_DEPTH: usize = 16;

/// A packet netnat forwards, as far as another table's rules can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub family: Family,
    /// The input and output interface, when they are a netnat bridge (None: some other one).
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// The first packet of a connection DNAT'd to a published port (`ct status dnat`).
    pub dnat: bool,
}

/// Where a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// Dropped or rejected by this rule (None: the chain's policy).
    Dropped {
        chain: String,
        rule: Option<LiveRule>,
    },
}

/// What one base chain does with a flow: the outcome, and the drops on the way that hit the flow
/// for some protocols or ports only (`tcp dport 22 drop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub chain: &'a LiveChain,
    pub outcome: Outcome,
    pub partial: Vec<LiveRule>,
}

/// What a rule's matches say about the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Yes,
    No,
    /// Only for some protocols or ports.
    Port,
    Maybe,
}

enum Step {
    Accept,
    Drop(LiveRule),
    Return,
    /// Fell off the end of the chain.
    End,
}

/// The base chains of other tables than `own` (inet) on the forward hook that see `flow`'s family,
/// and what each does with it. A packet passes only if every one accepts it.
pub fn decide<'a>(chains: &'a [LiveChain], rules: &[LiveRule], own: &str, flow: &Flow) -> Vec<Decision<'a>> {
    let by_chain = index(rules);
    let mut out = vec![];
    for c in chains {
        let Some(b) = &c.base else { continue };
        if b.hook != HOOK_FORWARD || (c.table == own && c.family == 1) || !sees(c.family, flow.family) {
            continue;
        }
        let w = Walker { by_chain: &by_chain, family: c.family, table: &c.table, flow, partial: Default::default() };
        let outcome = match w.walk(&c.name, 0) {
            Step::Accept => Outcome::Accepted,
            Step::Drop(r) => Outcome::Dropped { chain: r.chain.clone(), rule: Some(r) },
            Step::Return | Step::End if b.policy == 0 => Outcome::Dropped { chain: c.name.clone(), rule: None },
            Step::Return | Step::End => Outcome::Accepted,
        };
        out.push(Decision { chain: c, outcome, partial: w.partial.into_inner() });
    }
    out
}

type Index<'a> = BTreeMap<(u32, &'a str, &'a str), Vec<&'a LiveRule>>;

fn index(rules: &[LiveRule]) -> Index<'_> {
    let mut m: Index = BTreeMap::new();
    for r in rules {
        m.entry((r.family, r.table.as_str(), r.chain.as_str())).or_default().push(r);
    }
    m
}

fn sees(nfproto: u32, f: Family) -> bool {
    match nfproto {
        1 => true,
        2 => f == Family::V4,
        10 => f == Family::V6,
        _ => false,
    }
}

struct Walker<'a> {
    by_chain: &'a Index<'a>,
    family: u32,
    table: &'a str,
    flow: &'a Flow,
    partial: std::cell::RefCell<Vec<LiveRule>>,
}

impl Walker<'_> {
    fn walk(&self, chain: &str, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Step::End;
        }
        let Some(rules) = self.by_chain.get(&(self.family, self.table, chain)) else { return Step::End };
        for r in rules {
            let (m, verdict) = self.eval(&r.exprs);
            if m == Match::No {
                continue;
            }
            let definite = m == Match::Yes;
            if m == Match::Port && verdict == Some(Verdict::Drop) {
                self.partial.borrow_mut().push((*r).clone());
            }
            match verdict {
                Some(Verdict::Accept) if definite => return Step::Accept,
                Some(Verdict::Drop) if definite => return Step::Drop((*r).clone()),
                Some(Verdict::Return) if definite => return Step::Return,
                Some(Verdict::Jump(t)) if definite => match self.walk(&t, depth + 1) {
                    Step::Return | Step::End => {}
                    s => return s,
                },
                Some(Verdict::Goto(t)) if definite => {
                    return match self.walk(&t, depth + 1) {
                        Step::Return | Step::End => Step::Return,
                        s => s,
                    }
                }
                _ => {}
            }
        }
        Step::End
    }

    /// The rule's matches against the flow, and its verdict (None: it has none, or one that
    /// lets the packet go on).
    fn eval(&self, exprs: &[Expr]) -> (Match, Option<Verdict>) {
        // None: not known; Some(None): not known, but only a protocol or port.
        let mut regs: BTreeMap<u32, Reg> = BTreeMap::new();
        let mut m = Match::Yes;
        for e in exprs {
            match e {
                Expr::Meta { key, dreg } => {
                    regs.insert(*dreg, self.meta(*key));
                }
                Expr::Ct { key, dreg, dir: None } if *key == expr::CT_STATE => {
                    regs.insert(*dreg, Reg::Known(CT_STATE_NEW.to_ne_bytes().to_vec()));
                }
                Expr::Ct { key, dreg, dir: None } if *key == expr::CT_STATUS => {
                    let bits = if self.flow.dnat { expr::CT_STATUS_DNAT } else { 0 };
                    regs.insert(*dreg, Reg::Known(bits.to_ne_bytes().to_vec()));
                }
                Expr::Immediate { dreg, data } => {
                    regs.insert(*dreg, Reg::Known(data.clone()));
                }
                Expr::Bitwise { sreg, dreg, mask, xor } => {
                    let v = match regs.get(sreg) {
                        Some(Reg::Known(v)) => Reg::Known(
                            v.iter()
                                .enumerate()
                                .map(|(i, b)| (b & mask.get(i).unwrap_or(&0)) ^ xor.get(i).unwrap_or(&0))
                                .collect(),
                        ),
                        Some(Reg::Port) => Reg::Port,
                        _ => Reg::Unknown,
                    };
                    regs.insert(*dreg, v);
                }
                Expr::Payload { dreg, base, offset, .. } => {
                    // The transport header, or the IPv4 protocol / IPv6 next header byte.
                    let port = *base == expr::PAYLOAD_TRANSPORT
                        || (*base == expr::PAYLOAD_NETWORK
                            && *offset == if self.flow.family == Family::V4 { 9 } else { 6 });
                    regs.insert(*dreg, if port { Reg::Port } else { Reg::Unknown });
                }
                Expr::Fib { dreg, .. } | Expr::Ct { dreg, .. } => {
                    regs.insert(*dreg, Reg::Unknown);
                }
                Expr::Lookup { sreg, dreg, .. } => {
                    let kind = if matches!(regs.get(sreg), Some(Reg::Port)) { Match::Port } else { Match::Maybe };
                    if let Some(d) = dreg {
                        regs.insert(*d, Reg::Unknown);
                    }
                    m = and(m, kind);
                }
                Expr::Cmp { sreg, op, data } => m = and(m, compare(regs.get(sreg), *op, data)),
                Expr::Verdict(v) => return (m, Some(v.clone())),
                Expr::Xt { target: false, name, .. } if name == "comment" => {}
                Expr::Xt { target: false, name, .. } => {
                    let port = matches!(name.as_str(), "tcp" | "udp" | "multiport" | "icmp" | "icmp6" | "sctp");
                    m = and(m, if port { Match::Port } else { Match::Maybe })
                }
                Expr::Xt { target: true, name, .. } => match name.as_str() {
                    "REJECT" | "DROP" => return (m, Some(Verdict::Drop)),
                    "ACCEPT" => return (m, Some(Verdict::Accept)),
                    _ => {} // LOG, MARK, ...: the packet goes on
                },
                Expr::Other { name } if name == "reject" => return (m, Some(Verdict::Drop)),
                Expr::Other { name } if matches!(name.as_str(), "log" | "counter" | "notrack" | "objref") => {}
                Expr::Other { .. } => m = and(m, Match::Maybe),
                Expr::Counter | Expr::MetaSet { .. } | Expr::CtSet { .. } | Expr::Nat { .. } | Expr::Masquerade => {}
            }
            if m == Match::No {
                return (m, None);
            }
        }
        (m, None)
    }

    fn meta(&self, key: u32) -> Reg {
        let name = |n: &Option<String>| n.as_ref().map(|n| Reg::Known(expr::ifname_bytes(n))).unwrap_or(Reg::Unknown);
        match key {
            expr::META_IIFNAME => name(&self.flow.iif),
            expr::META_OIFNAME => name(&self.flow.oif),
            expr::META_NFPROTO => Reg::Known(vec![if self.flow.family == Family::V4 { 2 } else { 10 }]),
            expr::META_L4PROTO => Reg::Port,
            _ => Reg::Unknown,
        }
    }
}

/// What a register holds, as far as the flow tells.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reg {
    Known(Vec<u8>),
    /// A protocol or port: not known, and a rule on it hits the flow for some ports.
    Port,
    Unknown,
}

fn and(a: Match, b: Match) -> Match {
    match (a, b) {
        (Match::No, _) | (_, Match::No) => Match::No,
        (Match::Maybe, _) | (_, Match::Maybe) => Match::Maybe,
        (Match::Port, _) | (_, Match::Port) => Match::Port,
        _ => Match::Yes,
    }
}

/// A comparison of a register with what the flow tells of it.
fn compare(reg: Option<&Reg>, op: CmpOp, data: &[u8]) -> Match {
    let v = match reg {
        Some(Reg::Known(v)) => v,
        Some(Reg::Port) => return Match::Port,
        _ => return Match::Maybe,
    };
    let Some(got) = v.get(..data.len()) else { return Match::Maybe };
    let yes = match op {
        CmpOp::Eq => got == data,
        CmpOp::Neq => got != data,
        _ => return Match::Maybe,
    };
    if yes {
        Match::Yes
    } else {
        Match::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::expr::{
        cmp, load_ip_daddr, load_meta, load_th_dport, match_ct_bits, match_ifname, CmpOp, Expr, Verdict, CT_STATE,
        CT_STATE_ESTABLISHED, CT_STATE_RELATED, CT_STATUS, CT_STATUS_DNAT, META_IIFNAME, META_NFPROTO, META_OIFNAME,
        REG_1,
    };
    use crate::nft::BaseChain;

    fn chain(family: u32, table: &str, name: &str, policy: Option<u32>) -> LiveChain {
        let base = policy.map(|policy| BaseChain { hook: HOOK_FORWARD, priority: 0, kind: "filter".into(), policy });
        LiveChain { table: table.into(), family, name: name.into(), base }
    }
    fn rule(family: u32, table: &str, chain: &str, handle: u64, exprs: Vec<Expr>) -> LiveRule {
        LiveRule { table: table.into(), family, chain: chain.into(), handle, exprs, comment: None }
    }
    fn with(mut m: Vec<Expr>, v: Verdict) -> Vec<Expr> {
        m.push(Expr::Verdict(v));
        m
    }
    fn egress() -> Flow {
        Flow { family: Family::V4, iif: Some("br0".into()), oif: None, dnat: false }
    }
    fn published() -> Flow {
        Flow { family: Family::V4, iif: None, oif: Some("br0".into()), dnat: true }
    }

    /// firewalld 1.3's filter_FORWARD, as its nftables backend writes it.
    fn firewalld(zone_for_br0: bool) -> (Vec<LiveChain>, Vec<LiveRule>) {
        let t = "firewalld";
        let chains = vec![
            chain(1, t, "filter_FORWARD", Some(1)),
            chain(1, t, "filter_FORWARD_ZONES", None),
            chain(1, t, "filter_FWD_public", None),
            chain(1, t, "filter_FWD_netnat", None),
        ];
        let est = with(match_ct_bits(CT_STATE, CT_STATE_ESTABLISHED | CT_STATE_RELATED), Verdict::Accept);
        let dnat = with(match_ct_bits(CT_STATUS, CT_STATUS_DNAT), Verdict::Accept);
        let invalid = with(match_ct_bits(CT_STATE, 1), Verdict::Drop);
        let v6 = vec![
            load_meta(META_NFPROTO, REG_1),
            cmp(REG_1, CmpOp::Eq, [10]),
            load_ip_daddr(REG_1),
            Expr::Lookup { sreg: REG_1, set: "__set0".into(), dreg: None, flags: 0 },
            Expr::Other { name: "reject".into() },
        ];
        let mut rules = vec![
            rule(1, t, "filter_FORWARD", 1, est),
            rule(1, t, "filter_FORWARD", 2, dnat),
            rule(1, t, "filter_FORWARD", 3, invalid),
            rule(1, t, "filter_FORWARD", 4, v6),
            rule(1, t, "filter_FORWARD", 5, vec![Expr::Verdict(Verdict::Jump("filter_FORWARD_ZONES".into()))]),
            rule(1, t, "filter_FORWARD", 6, vec![Expr::Other { name: "reject".into() }]),
        ];
        if zone_for_br0 {
            let m = match_ifname(META_IIFNAME, CmpOp::Eq, "br0");
            rules.push(rule(1, t, "filter_FORWARD_ZONES", 7, with(m, Verdict::Goto("filter_FWD_netnat".into()))));
            rules.push(rule(1, t, "filter_FWD_netnat", 8, vec![Expr::Verdict(Verdict::Accept)]));
        }
        rules.push(rule(
            1,
            t,
            "filter_FORWARD_ZONES",
            9,
            vec![Expr::Verdict(Verdict::Goto("filter_FWD_public".into()))],
        ));
        (chains, rules)
    }

    #[test]
    fn firewalld_rejects_egress_by_its_last_rule_not_the_invalid_drop() {
        let (c, r) = firewalld(false);
        let d = decide(&c, &r, "netnat", &egress());
        assert_eq!(d.len(), 1);
        let Outcome::Dropped { rule: Some(rule), .. } = &d[0].outcome else { panic!("{d:?}") };
        assert_eq!(rule.handle, 6, "the final reject, not `ct state invalid drop`");
        assert!(d[0].partial.is_empty(), "an address-set reject is no port-conditional drop");
        // Published ports arrive: `ct status dnat accept`.
        assert_eq!(decide(&c, &r, "netnat", &published())[0].outcome, Outcome::Accepted);
        // With the bridge in an ACCEPT zone, egress passes.
        let (c, r) = firewalld(true);
        assert_eq!(decide(&c, &r, "netnat", &egress())[0].outcome, Outcome::Accepted);
    }

    #[test]
    fn docker_policy_drop_unless_docker_user_accepts() {
        let chains = vec![chain(2, "filter", "FORWARD", Some(0)), chain(2, "filter", "DOCKER-USER", None)];
        let mut rules = vec![
            rule(2, "filter", "FORWARD", 1, vec![Expr::Verdict(Verdict::Jump("DOCKER-USER".into()))]),
            rule(2, "filter", "FORWARD", 2, with(match_ifname(META_OIFNAME, CmpOp::Eq, "docker0"), Verdict::Accept)),
            rule(2, "filter", "DOCKER-USER", 3, vec![Expr::Counter, Expr::Verdict(Verdict::Return)]),
        ];
        let d = decide(&chains, &rules, "netnat", &published());
        assert_eq!(d[0].outcome, Outcome::Dropped { chain: "FORWARD".into(), rule: None });
        // iptables-nft's `-o br0` compares the name with its NUL only.
        let accept = crate::nft::hook::iptables_accept(false, "br0", "netnat network n").unwrap();
        rules.insert(2, rule(2, "filter", "DOCKER-USER", 4, accept));
        assert_eq!(decide(&chains, &rules, "netnat", &published())[0].outcome, Outcome::Accepted);
        // Another bridge's accept does not help, and a prefix `br+` does.
        let d = decide(&chains, &rules, "netnat", &Flow { oif: Some("other".into()), ..published() });
        assert!(matches!(d[0].outcome, Outcome::Dropped { .. }));
        // IPv6 flows are not seen by an ip table.
        assert!(decide(&chains, &rules, "netnat", &Flow { family: Family::V6, ..published() }).is_empty());
    }

    #[test]
    fn conditional_rules_neither_accept_nor_drop() {
        let chains = vec![chain(1, "fw", "fwd", Some(1))];
        let port = vec![load_th_dport(REG_1), cmp(REG_1, CmpOp::Eq, 22u16.to_be_bytes()), Expr::Verdict(Verdict::Drop)];
        let rules = vec![rule(1, "fw", "fwd", 1, port)];
        let d = decide(&chains, &rules, "netnat", &egress());
        assert_eq!(d[0].outcome, Outcome::Accepted);
        assert_eq!(d[0].partial.len(), 1, "it drops the flow's port-22 connections");
        // netnat's own table is not judged here.
        let own = vec![chain(1, "netnat", "forward", Some(0))];
        assert!(decide(&own, &[], "netnat", &egress()).is_empty());
    }
}
