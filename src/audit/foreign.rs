//! Other tables: rules and chains of other programs that drop, redirect or NAT the packets of
//! netnat's mappings, and the legacy iptables tables.

use super::{chain_label, finding, own_table, Finding, Listener, Observed, Severity};
use crate::hostfw;
use crate::model::{Family, Subnet};
use crate::nft::expr::{CmpOp, Expr, Verdict};
use crate::nft::family::{families_of, family_name, hook_name, HOOK_OUTPUT, HOOK_PREROUTING};
use crate::nft::foreign::{is_xt_nat, read_matches, render_foreign, RuleMatches};
use crate::nft::{LiveChain, LiveRule};
use crate::ruleset::PRIO_DSTNAT;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Whether a chain of another table than netnat's, in netfilter family `nfproto`, sees packets
/// of family `fam`.
pub(super) fn foreign_sees(c_table: &str, nfproto: u32, fam: Family) -> bool {
    !own_table(c_table, nfproto) && families_of(nfproto).contains(&fam)
}

/// Whether foreign rule `r` (whose matches are `m`) can act on packets of family `fam`: its
/// chain sees them and its own matches do not leave them out.
fn rule_sees(r: &LiveRule, m: &RuleMatches, fam: Family) -> bool {
    foreign_sees(&r.table, r.family, fam) && m.family.is_none_or(|f| f == fam)
}

/// The base chains (hook, priority, name) from which a chain is reached through jumps and gotos
/// (itself if it is a base chain).
fn entry_points<'a>(o: &'a Observed, family: u32, table: &str, chain: &str) -> Vec<&'a LiveChain> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo = vec![chain.to_string()];
    let mut out = vec![];
    while let Some(c) = todo.pop() {
        if !seen.insert(c.clone()) {
            continue;
        }
        if let Some(lc) = o.chains.iter().find(|x| x.family == family && x.table == table && x.name == c) {
            if lc.base.is_some() {
                out.push(lc);
            }
        }
        for r in o.rules.iter().filter(|r| r.family == family && r.table == table) {
            let jumps =
                r.exprs.iter().any(|e| matches!(e, Expr::Verdict(Verdict::Jump(t) | Verdict::Goto(t)) if *t == c));
            if jumps {
                todo.push(r.chain.clone());
            }
        }
    }
    out
}

pub(super) fn conflicts(o: &Observed, out: &mut Vec<Finding>) {
    forward_drop(o, out);
    foreign_dnat(o, out);
    if !o.legacy_tables.is_empty() {
        out.push(finding(
            "conflict.legacy-iptables",
            Severity::Warning,
            format!(
                "legacy iptables tables are loaded ({}): their rules are invisible to netlink, so this audit \
                 cannot check them; list them with iptables-legacy-save",
                o.legacy_tables.join(", ")
            ),
            o.legacy_tables.clone(),
        ));
    }
    for m in &o.state.mappings {
        // Podman's conmon holds every host port it publishes open, as a reservation: for a
        // mapping a CNI container owns, that is not a competing listener.
        let reservation = |l: &Listener| o.state.owner_of(m).is_some() && l.process.as_deref() == Some("conmon");
        for l in o.listeners.iter().filter(|l| !reservation(l)) {
            let proto_ok = l.protocol == m.protocol;
            let port_ok = (m.host_port..=m.host_port_end).contains(&l.port);
            // Listeners are read as IPv4 (an IPv6 wildcard socket shows as 0.0.0.0).
            let addr_ok = l.addr.is_unspecified()
                || (m.family() == crate::model::Family::V4 && m.host_ip.is_none_or(|h| h == IpAddr::V4(l.addr)));
            if proto_ok && port_ok && addr_ok {
                out.push(finding(
                    "conflict.local-listener",
                    Severity::Warning,
                    format!(
                        "a local process listens on {}:{}/{} which netnat publishes as {m}: external clients reach \
                         the container, but connections made on this host may reach the local process",
                        l.addr, l.port, l.protocol
                    ),
                    vec![m.to_string(), format!("{}:{}/{}", l.addr, l.port, l.protocol)],
                ));
            }
        }
    }
}

/// Forward chains of other tables that drop netnat's container traffic: the rule that really
/// decides each kind of it (see `hostfw::verdict`), with that firewall's own fix.
pub(super) fn forward_drop(o: &Observed, out: &mut Vec<Finding>) {
    for b in hostfw::blockers(&o.state, &o.chains, &o.rules) {
        let mut objects = vec![b.base.clone()];
        if let Some(h) = b.rule.split("rule handle ").nth(1).and_then(|t| t.split(':').next()) {
            objects.push(format!("handle {h}"));
        }
        out.push(finding(
            "conflict.forward-drop",
            Severity::Warning,
            hostfw::blocker_message(&b, &hostfw::owner(&b, &o.chains)),
            objects,
        ));
    }
}

fn foreign_dnat(o: &Observed, out: &mut Vec<Finding>) {
    if o.state.mappings.is_empty() {
        return;
    }
    for r in o.rules.iter().filter(|r| !own_table(&r.table, r.family)) {
        let m = read_matches(&r.exprs);
        if !m.dnat {
            continue;
        }
        let (Some(lo), Some(hi)) = (m.dport_lo, m.dport_hi) else { continue };
        let daddrs: Vec<Subnet> =
            m.prefixes.iter().filter(|(d, op, _)| *d && *op == CmpOp::Eq).map(|(_, _, s)| *s).collect();
        let entries: Vec<&LiveChain> = entry_points(o, r.family, &r.table, &r.chain)
            .into_iter()
            .filter(|c| c.base.as_ref().is_some_and(|b| b.hook == HOOK_PREROUTING || b.hook == HOOK_OUTPUT))
            .collect();
        if entries.is_empty() {
            continue;
        }
        let label = chain_label(r.family, &r.table, &r.chain);
        // A routed IPv6 mapping has no host port to take over: netnat DNATs nothing for it.
        for mp in o.state.mappings.iter().filter(|mp| rule_sees(r, &m, mp.family()) && !o.state.is_routed(mp)) {
            let proto_ok = m.l4proto.is_none_or(|p| p == mp.protocol.number());
            let port_ok = lo <= mp.host_port_end && mp.host_port <= hi;
            let addr_ok =
                daddrs.is_empty() || mp.host_ip.is_none() || daddrs.iter().any(|s| s.contains(mp.host_ip.unwrap()));
            if !(proto_ok && port_ok && addr_ok) {
                continue;
            }
            let mut verdicts = vec![];
            for c in &entries {
                let b = c.base.as_ref().unwrap();
                let hook = hook_name(c.family, b.hook);
                let who = chain_label(c.family, &c.table, &c.name);
                verdicts.push(match b.priority.cmp(&PRIO_DSTNAT) {
                    std::cmp::Ordering::Less => format!(
                        "on {hook}, {who} (priority {}) runs before netnat (priority {PRIO_DSTNAT}): the foreign DNAT wins",
                        b.priority
                    ),
                    std::cmp::Ordering::Greater => format!(
                        "on {hook}, netnat (priority {PRIO_DSTNAT}) runs before {who} (priority {}): netnat's mapping wins",
                        b.priority
                    ),
                    std::cmp::Ordering::Equal => format!(
                        "on {hook}, {who} has netnat's priority {PRIO_DSTNAT}: whichever chain was registered first wins"
                    ),
                });
            }
            out.push(finding(
                "conflict.dnat",
                Severity::Warning,
                format!(
                    "chain {label} translates a port netnat publishes as {mp} (handle {}: {}); {}",
                    r.handle,
                    render_foreign(r),
                    verdicts.join("; ")
                ),
                vec![mp.to_string(), label.clone(), format!("handle {}", r.handle)],
            ));
        }
    }
}

pub(super) fn foreign_nat(o: &Observed, out: &mut Vec<Finding>) {
    for r in o.rules.iter().filter(|r| !own_table(&r.table, r.family)) {
        let is_nat = r.exprs.iter().any(|e| match e {
            Expr::Nat { .. } | Expr::Masquerade => true,
            Expr::Xt { target: true, name, .. } => is_xt_nat(name),
            Expr::Other { name } => matches!(name.as_str(), "masq" | "redir" | "nat"),
            _ => false,
        });
        if !is_nat {
            continue;
        }
        let label = chain_label(r.family, &r.table, &r.chain);
        out.push(finding(
            "foreign.nat",
            Severity::Info,
            format!("{label} (handle {}): {}", r.handle, render_foreign(r)),
            vec![format!("{} {}", family_name(r.family), r.table), label, format!("handle {}", r.handle)],
        ));
    }
}
