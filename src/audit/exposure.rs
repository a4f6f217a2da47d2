//! Exposure: what each recorded mapping reaches and what stands in its way (forward policies,
//! input firewalls a published port bypasses), and the inventory of what netnat holds.

use super::foreign::foreign_sees;
use super::{chain_label, finding, own_table, Finding, MappingReport, Observed, Scope, Severity};
use crate::model::{Cidr, Counting, Family, Mapping, State};
use crate::nft::expr::{Expr, Verdict};
use crate::nft::family::{HOOK_FORWARD, HOOK_INPUT};
use crate::nft::foreign::read_matches;
use crate::nft::{LiveRule, LiveTable};
use crate::ruleset;
use crate::ruleset::{connection_elems, denied_elems, packet_elems};
use serde::Serialize;

/// One published mapping with its traffic, as `ls --json` prints it.
#[derive(Serialize)]
pub struct MappingView {
    #[serde(flatten)]
    pub mapping: Mapping,
    pub network: Option<String>,
    /// Connections the mapping translated (counted by its NAT map element, once per connection).
    pub connections_total: u64,
    /// Packets and bytes of those connections, both directions: only with `counting = packets`
    /// (null otherwise).
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// Sources allowed to connect; empty: every source.
    pub allow: Vec<Cidr>,
    /// New connections from other sources, dropped (with an allow list).
    pub denied_packets: u64,
    /// For a port a CNI container published: its container ID (`network` is then the CNI
    /// network's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// A CNI mapping on standby: the same container holds the host port from another network,
    /// and this one takes over when that attachment is deleted (not in the kernel meanwhile).
    pub standby: bool,
}

/// Mappings with the traffic counted for them (summed over a range): the connections their NAT
/// map elements translated; with packet counting, the packets and bytes in both directions of
/// every connection through the mapping (the forward sets); and the packets their allow list
/// dropped.
pub fn mapping_views(state: &State, live: Option<&LiveTable>) -> Vec<MappingView> {
    let counters: std::collections::HashMap<(&str, &[u8]), (u64, u64)> = live
        .map(|l| {
            l.elems
                .iter()
                .flat_map(|(set, es)| {
                    es.iter().map(move |e| {
                        ((set.as_str(), e.key.as_slice()), (e.packets.unwrap_or(0), e.bytes.unwrap_or(0)))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let sum = |elems: &mut dyn Iterator<Item = ruleset::Elem>| {
        elems
            .filter_map(|(set, k, _)| counters.get(&(set, k.as_slice())).copied())
            .fold((0, 0), |(p, b), (p2, b2)| (p + p2, b + b2))
    };
    let mut views: Vec<MappingView> = state
        .mappings
        .iter()
        .map(|m| {
            let allow = state.allow_of(m);
            let (connections_total, _) = sum(&mut connection_elems(m, state.is_routed(m)));
            // A routed mapping has no forward element: its routed6 element counts connections only.
            let traffic =
                (state.counting == Counting::Packets && !state.is_routed(m)).then(|| sum(&mut packet_elems(m)));
            let (denied_packets, _) = sum(&mut denied_elems(m, allow));
            let owner = state.owner_of(m);
            MappingView {
                mapping: *m,
                network: match owner {
                    Some(a) => Some(a.network.clone()),
                    None => state.network_of(m.container_ip).map(|n| n.name.clone()),
                },
                container_id: owner.map(|a| a.container_id.clone()),
                connections_total,
                packets: traffic.map(|t| t.0),
                bytes: traffic.map(|t| t.1),
                allow: allow.to_vec(),
                denied_packets,
                standby: false,
            }
        })
        .collect();
    views.sort_by_key(|v| {
        let m = &v.mapping;
        (m.protocol, m.host_port, m.family(), m.host_ip.unwrap_or(m.family().unspecified()))
    });
    views
}

pub(super) fn mapping_reports(o: &Observed) -> Vec<MappingReport> {
    let views = mapping_views(&o.state, o.table.as_ref());
    // `connections` is in record order: an index, not a search per mapping (10,000 of them).
    let index: std::collections::HashMap<&Mapping, usize> =
        o.state.mappings.iter().enumerate().map(|(i, m)| (m, i)).collect();
    let dropping = forward_policy_drops(o);
    views
        .iter()
        .map(|v| {
            let m = v.mapping;
            let idx = index.get(&m).copied();
            let connections = idx.and_then(|i| o.connections.get(i)).copied().unwrap_or(0) as u64;
            MappingReport {
                mapping: m,
                protocol: m.protocol.to_string(),
                host_ip: m.host_ip,
                host_if: m.host_if.map(|i| i.to_string()),
                host_port: m.host_port,
                host_port_end: m.host_port_end,
                container_ip: m.container_ip,
                container_port: m.container_port,
                container_port_end: m.container_port_end,
                connections_total: v.connections_total,
                packets: v.packets,
                bytes: v.bytes,
                connections,
                scope: Scope::of(&m),
                reach: reach(o, &m, &v.allow, &dropping),
                allow: v.allow.clone(),
                denied_packets: v.denied_packets,
            }
        })
        .collect()
}

/// Forward-hook chains of other tables with policy drop that say nothing of the bridge of a
/// network (so they drop its DNAT'd traffic): (the families they see, chain label, bridges they
/// name).
fn forward_policy_drops(o: &Observed) -> Vec<(Vec<Family>, String, Vec<String>)> {
    let mut out = vec![];
    for c in &o.chains {
        let Some(b) = &c.base else { continue };
        if b.hook != HOOK_FORWARD || b.policy != 0 || own_table(&c.table, c.family) {
            continue;
        }
        let fams: Vec<Family> = Family::ALL.into_iter().filter(|f| foreign_sees(&c.table, c.family, *f)).collect();
        let named: Vec<String> = o
            .rules
            .iter()
            .filter(|r| r.family == c.family && r.table == c.table && r.chain == c.name)
            .flat_map(|r| read_matches(&r.exprs).ifnames.into_iter().map(|(_, _, name, _)| name))
            .collect();
        out.push((fams, chain_label(c.family, &c.table, &c.name), named));
    }
    out
}

/// Who can reach `m` from outside the host.
fn reach(o: &Observed, m: &Mapping, allow: &[Cidr], dropping: &[(Vec<Family>, String, Vec<String>)]) -> String {
    if Scope::of(m) == Scope::Loopback {
        return "the host itself only (loopback)".into();
    }
    let bridge = o.state.network_of(m.container_ip).map(|n| n.bridge.clone());
    let blocked = dropping.iter().find(|(fams, _, named)| {
        fams.contains(&m.family()) && !bridge.as_ref().is_some_and(|b| named.iter().any(|n| n == b))
    });
    if let Some((_, label, _)) = blocked {
        return format!("nobody from outside: chain {label} drops forwarded packets (policy drop)");
    }
    if let Some(i) = m.host_if {
        return format!("any source whose packets arrive on {i}");
    }
    match allow {
        [] => "any source".into(),
        list => format!("sources in {}", list.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

/// A firewall on the input hook (policy drop, or a final unconditional drop or reject: ufw,
/// firewalld, a hand-written `inet filter` input chain) does not see published ports: DNAT'd
/// packets are forwarded, never delivered locally. Each such chain is named with the mappings
/// that are still reachable from any source.
pub(super) fn bypassed_input_firewalls(o: &Observed, reports: &[MappingReport], out: &mut Vec<Finding>) {
    let unconditional = |r: &LiveRule| {
        r.exprs.iter().all(|e| matches!(e, Expr::Counter | Expr::Verdict(_) | Expr::Other { .. } | Expr::Xt { .. }))
            && r.exprs.iter().any(|e| match e {
                Expr::Verdict(Verdict::Drop) => true,
                Expr::Other { name } => name == "reject",
                Expr::Xt { target: true, name, .. } => name == "DROP" || name == "REJECT",
                _ => false,
            })
    };
    for c in &o.chains {
        let Some(b) = &c.base else { continue };
        if b.hook != HOOK_INPUT || own_table(&c.table, c.family) {
            continue;
        }
        let rules: Vec<&LiveRule> =
            o.rules.iter().filter(|r| r.family == c.family && r.table == c.table && r.chain == c.name).collect();
        let how = if b.policy == 0 {
            "has policy drop"
        } else if rules.last().is_some_and(|r| unconditional(r)) {
            "ends with a rule that drops or rejects everything else"
        } else {
            continue;
        };
        let open: Vec<&MappingReport> = reports
            .iter()
            .filter(|r| r.reach == "any source" && foreign_sees(&c.table, c.family, r.mapping.family()))
            .collect();
        if open.is_empty() {
            continue;
        }
        let label = chain_label(c.family, &c.table, &c.name);
        let names: Vec<String> = open.iter().map(|r| r.mapping.to_string()).collect();
        let shown = if names.len() > 5 {
            format!("{} and {} more", names[..5].join(", "), names.len() - 5)
        } else {
            names.join(", ")
        };
        let example = &open[0].mapping;
        out.push(finding(
            "exposure.bypasses-input-firewall",
            Severity::Warning,
            format!(
                "chain {label} (input hook) {how}, but published port(s) {shown} are reachable from any source: \
                 DNAT'd packets are forwarded and never meet input rules. Restrict a port to the sources that \
                 need it with `netnat publish {example} --allow CIDR`"
            ),
            std::iter::once(label.clone()).chain(names).collect(),
        ));
    }
}

pub(super) fn inventory(o: &Observed, reports: &[MappingReport], out: &mut Vec<Finding>) {
    for r in reports {
        let m = r.mapping;
        let net = o.state.network_of(m.container_ip).map(|n| format!(" (network {})", n.name)).unwrap_or_default();
        out.push(finding(
            "inventory.mapping",
            Severity::Info,
            format!(
                "{m}{net}: published on {}, reachable by {}, {} connections{}, {} live connections",
                r.scope.text(),
                r.reach,
                r.connections_total,
                match (r.packets, r.bytes) {
                    (Some(p), Some(b)) => format!(" ({p} packets, {b} bytes)"),
                    _ => String::new(),
                },
                r.connections
            ),
            vec![m.to_string()],
        ));
    }
}
