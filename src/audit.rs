//! `netnat audit` (pure): what the kernel has, compared with what netnat recorded and would
//! program, and with everything else on the host that can change what happens to its packets.
//!
//! [`Observed`] is plain data gathered elsewhere (`engine::observe_audit`); [`audit`] turns it
//! into [`Finding`]s with stable ids, so every check is unit-tested with hand-built values.
//! The text parsers for /proc files live here too, for the same reason.

use crate::host::{self, BR_NF_CALL_IPTABLES, CT_COUNT, CT_MAX, IP_FORWARD};
use crate::hostfw;
use crate::model::{Cidr, Family, Mapping, State, Subnet};
use crate::nft::expr::{self, CmpOp, Expr, Verdict, *};
use crate::nft::{LiveChain, LiveRule, LiveTable};
use crate::ruleset::{
    self, counted_elems, denied_elems, render_concat, render_rule, set_spec, TableAction, PRIO_DSTNAT, TABLE,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

// Netfilter families (NFPROTO_*).
pub const FAMILY_INET: u32 = 1;
pub const FAMILY_IPV4: u32 = 2;
pub const FAMILY_IPV6: u32 = 10;
const HOOK_PREROUTING: u32 = 0;
const HOOK_FORWARD: u32 = 2;
const HOOK_OUTPUT: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub message: String,
    pub objects: Vec<String>,
}

fn finding(id: &'static str, severity: Severity, message: impl Into<String>, objects: Vec<String>) -> Finding {
    Finding { id, severity, message: message.into(), objects }
}

/// A link as the audit needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    pub name: String,
    pub kind: Option<String>,
    /// For a veth: whether its peer still exists (IFLA_LINK present).
    pub has_peer: bool,
}

/// A socket waiting for connections (TCP LISTEN) or datagrams (unconnected UDP).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub protocol: crate::model::Proto,
    /// 0.0.0.0 (also for an IPv6 wildcard socket): every address.
    pub addr: Ipv4Addr,
    pub port: u16,
    /// The socket's inode (to find the process that holds it).
    pub inode: u64,
    /// The name (comm) of a process holding the socket, when it could be found.
    pub process: Option<String>,
}

/// Everything the audit looks at, gathered from the kernel and the record.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// netnat's record.
    pub state: State,
    /// Table `inet netnat`, None when it does not exist.
    pub table: Option<LiveTable>,
    /// Chains and rules of every table and family (netnat's own are ignored here).
    pub chains: Vec<LiveChain>,
    pub rules: Vec<LiveRule>,
    pub links: Vec<ObservedLink>,
    /// sysctl key (as under /proc/sys) → value; absent keys do not exist on this kernel.
    pub sysctls: BTreeMap<String, String>,
    pub listeners: Vec<Listener>,
    /// Tables listed in /proc/net/ip_tables_names (legacy iptables, invisible to netlink).
    pub legacy_tables: Vec<String>,
    /// Live conntrack entries per mapping, same order as `state.mappings` (empty: unknown).
    pub connections: Vec<usize>,
    /// Names under /run/netns.
    pub netns: Vec<String>,
    /// Links with an IPv6 route learned from a router advertisement.
    pub ra_links: Vec<String>,
    /// The state a configuration file describes (`--config`), to compare with the record.
    pub config: Option<State>,
    /// Set when netnat's record could not be used (its path and why); `state` is then what the
    /// kernel holds, rebuilt by `recover`.
    pub record_unreadable: Option<String>,
    /// Chains of a `netnat trace` that is not running any more (killed), in table inet netnat.
    pub trace_leftover: Vec<String>,
    /// What the host firewalls running hold for netnat (None: not looked at).
    pub host_firewall: Option<hostfw::Observed>,
}

/// How far a published port reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every local address of the host.
    Any,
    /// One (non-loopback) address.
    Address,
    /// 127.0.0.1 or another loopback address: the host itself only.
    Loopback,
    /// Packets arriving on one interface, to any local address.
    Interface,
}

impl Scope {
    pub fn of(m: &Mapping) -> Scope {
        if m.host_if.is_some() {
            return Scope::Interface;
        }
        match m.host_ip {
            None => Scope::Any,
            Some(ip) if ip.is_loopback() => Scope::Loopback,
            Some(_) => Scope::Address,
        }
    }
    pub fn text(self) -> &'static str {
        match self {
            Scope::Any => "any local address",
            Scope::Address => "one address",
            Scope::Loopback => "loopback only",
            Scope::Interface => "one interface",
        }
    }
}

/// One published mapping with its traffic, as `audit --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingReport {
    #[serde(skip)]
    pub mapping: Mapping,
    pub protocol: String,
    /// None: every local address (of the container address's family).
    pub host_ip: Option<IpAddr>,
    /// Bound to this interface (then `host_ip` is null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_if: Option<String>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub container_port_end: u16,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    pub scope: Scope,
    /// Sources allowed to connect; empty: every source.
    pub allow: Vec<Cidr>,
    /// New connections from sources not on `allow`, dropped.
    pub denied_packets: u64,
    /// Who can reach it from outside the host, in words (any source, the allowed sources, the
    /// host itself only, or nobody and which chain drops it).
    pub reach: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub mappings: Vec<MappingReport>,
}

impl Report {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// The whole audit: findings sorted by severity (worst first), then id, then message.
pub fn audit(o: &Observed) -> Report {
    let mappings = mapping_reports(o);
    let mut f = vec![];
    if let Some(why) = &o.record_unreadable {
        f.push(finding(
            "state.unreadable",
            Severity::Error,
            format!(
                "netnat's record {why}; the kernel is audited against what it holds; `netnat recover` rebuilds the \
                 record, and commands that change things refuse until then"
            ),
            vec![why.split(": ").next().unwrap_or(why).to_string()],
        ));
    }
    inventory(o, &mappings, &mut f);
    bypassed_input_firewalls(o, &mappings, &mut f);
    drift(o, &mut f);
    drift_config(o, &mut f);
    conflicts(o, &mut f);
    host(o, &mut f);
    host_firewalls(o, &mut f);
    leftovers(o, &mut f);
    foreign_nat(o, &mut f);
    f.sort_by(|a, b| (b.severity, a.id, &a.message).cmp(&(a.severity, b.id, &b.message)));
    Report { findings: f, mappings }
}

// ---- inventory ----

/// One published mapping with its traffic, as `ls --json` prints it.
#[derive(Serialize)]
pub struct MappingView {
    #[serde(flatten)]
    pub mapping: Mapping,
    pub network: Option<String>,
    pub packets: u64,
    pub bytes: u64,
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

/// Mappings with the traffic counted for them in the forward chain (summed over a range):
/// packets and bytes in both directions of every connection through the mapping, and the
/// packets their allow list dropped.
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
            let (packets, bytes) = sum(&mut counted_elems(m, state.is_routed(m)));
            let (denied_packets, _) = sum(&mut denied_elems(m, allow));
            let owner = state.owner_of(m);
            MappingView {
                mapping: *m,
                network: match owner {
                    Some(a) => Some(a.network.clone()),
                    None => state.network_of(m.container_ip).map(|n| n.name.clone()),
                },
                container_id: owner.map(|a| a.container_id.clone()),
                packets,
                bytes,
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

fn mapping_reports(o: &Observed) -> Vec<MappingReport> {
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
fn bypassed_input_firewalls(o: &Observed, reports: &[MappingReport], out: &mut Vec<Finding>) {
    const HOOK_INPUT: u32 = 1;
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

fn inventory(o: &Observed, reports: &[MappingReport], out: &mut Vec<Finding>) {
    for r in reports {
        let m = r.mapping;
        let net = o.state.network_of(m.container_ip).map(|n| format!(" (network {})", n.name)).unwrap_or_default();
        out.push(finding(
            "inventory.mapping",
            Severity::Info,
            format!(
                "{m}{net}: published on {}, reachable by {}, {} packets, {} bytes, {} live connections",
                r.scope.text(),
                r.reach,
                r.packets,
                r.bytes,
                r.connections
            ),
            vec![m.to_string()],
        ));
    }
}

// ---- drift: table inet netnat against what netnat would program ----

fn own_table(table: &str, family: u32) -> bool {
    table == TABLE && family == FAMILY_INET
}

fn drift(o: &Observed, out: &mut Vec<Finding>) {
    let st = &o.state;
    let plan = ruleset::plan(&ruleset::desired(st), o.table.as_ref());
    match (plan.table, &o.table) {
        (TableAction::Create, _) => {
            if !st.networks.is_empty() || !st.mappings.is_empty() {
                out.push(finding(
                    "drift.table-missing",
                    Severity::Error,
                    format!(
                        "table inet {TABLE} does not exist, but netnat records {} network(s) and {} mapping(s): \
                         no published port works and no network is isolated",
                        st.networks.len(),
                        st.mappings.len()
                    ),
                    vec![format!("inet {TABLE}")],
                ));
            }
        }
        (TableAction::Rebuild, Some(live)) => {
            let chains: Vec<String> = live.chains.iter().map(|c| c.name.clone()).collect();
            let sets: Vec<String> = live.sets.iter().map(|s| s.name.clone()).collect();
            out.push(finding(
                "drift.layout",
                Severity::Error,
                format!(
                    "table inet {TABLE} has chains or maps of another shape than netnat makes \
                     (chains: {}; maps: {}); netnat would rebuild it",
                    chains.join(", "),
                    sets.join(", ")
                ),
                vec![format!("inet {TABLE}")],
            ));
        }
        _ => {
            drift_rules(&plan.chains, out);
            drift_elems(&plan.elems, out);
        }
    }
    drift_links(st, o, out);
}

/// Chains whose rules differ from what netnat would program.
fn drift_rules(chains: &[ruleset::ChainChange], out: &mut Vec<Finding>) {
    for c in chains {
        let mut lines = vec![];
        for l in &c.extra {
            lines.push(format!("foreign rule (handle {}): {}", l.handle, render_rule(&l.exprs, l.comment.as_deref())));
        }
        for n in &c.missing {
            lines.push(format!("missing rule: {}", render_rule(&n.exprs, Some(&n.comment))));
        }
        if lines.is_empty() {
            lines.push("the rules are in another order than netnat programs them".into());
        }
        out.push(finding(
            "drift.rule",
            Severity::Error,
            format!("chain inet {TABLE} {} differs from what netnat would program:\n{}", c.chain, lines.join("\n")),
            vec![format!("inet {TABLE} {}", c.chain)],
        ));
    }
}

/// Map and set elements that are missing, extra or point elsewhere.
fn drift_elems(elems: &[ruleset::ElemChange], out: &mut Vec<Finding>) {
    for e in elems {
        let Some(spec) = set_spec(e.set) else { continue };
        let set = e.set;
        let key = render_concat(spec.key, &e.key);
        let data = |d: &[u8]| render_concat(spec.data, d);
        let objects = vec![format!("inet {TABLE} {set}"), key.clone()];
        let (id, message) = match (&e.have, &e.want) {
            (None, Some(d)) => {
                ("drift.element-missing", format!("map inet {TABLE} {set} lacks element {key} : {}", data(d)))
            }
            (Some(h), Some(d)) => (
                "drift.element-changed",
                format!("map inet {TABLE} {set} element {key} points to {}, netnat records {}", data(h), data(d)),
            ),
            (Some(h), None) => (
                "drift.element-extra",
                format!("map inet {TABLE} {set} has element {key} : {} that netnat does not record", data(h)),
            ),
            (None, None) => continue,
        };
        out.push(finding(id, Severity::Error, message, objects));
    }
}

/// Links netnat records but the kernel no longer has.
fn drift_links(st: &State, o: &Observed, out: &mut Vec<Finding>) {
    let links: BTreeSet<&str> = o.links.iter().map(|l| l.name.as_str()).collect();
    for n in st.networks.values() {
        if !links.contains(n.bridge.as_str()) {
            out.push(finding(
                "drift.link-missing",
                Severity::Error,
                format!("bridge {} of network {} does not exist", n.bridge, n.name),
                vec![n.bridge.clone()],
            ));
        }
    }
    for s in st.sandboxes.values() {
        for e in &s.endpoints {
            if !links.contains(e.host_ifname.as_str()) {
                out.push(finding(
                    "drift.link-missing",
                    Severity::Error,
                    format!("veth {} of sandbox {} on network {} does not exist", e.host_ifname, s.name, e.network),
                    vec![e.host_ifname.clone(), s.name.clone()],
                ));
            }
        }
    }
}

/// The record against the state a configuration file describes.
fn drift_config(o: &Observed, out: &mut Vec<Finding>) {
    let Some(cfg) = &o.config else { return };
    let st = &o.state;
    let mut diff = |what: String, obj: String| {
        out.push(finding("drift.config", Severity::Warning, what, vec![obj]));
    };
    for (name, n) in &cfg.networks {
        match st.networks.get(name) {
            None => diff(format!("network {name} is in the configuration but not set up"), name.clone()),
            Some(have) if have != n => diff(format!("network {name} differs from the configuration"), name.clone()),
            Some(_) => {}
        }
    }
    for name in st.networks.keys().filter(|k| !cfg.networks.contains_key(*k)) {
        diff(format!("network {name} is set up but not in the configuration"), name.clone());
    }
    for (name, s) in &cfg.sandboxes {
        match st.sandboxes.get(name) {
            None => diff(format!("sandbox {name} is in the configuration but not set up"), name.clone()),
            Some(have) if have.endpoints != s.endpoints => {
                diff(format!("sandbox {name} has other endpoints than the configuration"), name.clone())
            }
            Some(_) => {}
        }
    }
    for name in st.sandboxes.keys().filter(|k| !cfg.sandboxes.contains_key(*k)) {
        diff(format!("sandbox {name} is set up but not in the configuration"), name.clone());
    }
    for m in cfg.mappings.iter().filter(|m| !st.mappings.contains(m)) {
        diff(format!("port {m} is in the configuration but not published"), m.to_string());
    }
    for m in st.mappings.iter().filter(|m| !cfg.mappings.contains(m)) {
        diff(format!("port {m} is published but not in the configuration"), m.to_string());
    }
}

// ---- what a foreign rule matches: a small symbolic reading of its expressions ----

#[derive(Debug, Clone, PartialEq)]
enum Src {
    Meta(u32),
    Payload(u32, u32, u32),
    Masked(Box<Src>, u8),
    Other,
}

/// The simple matches of one rule (only those the checks below need).
#[derive(Debug, Default)]
struct RuleMatches {
    /// (iifname/oifname key, op, name, is a prefix `name*`).
    ifnames: Vec<(u32, CmpOp, String, bool)>,
    /// (is daddr, op, subnet).
    prefixes: Vec<(bool, CmpOp, Subnet)>,
    l4proto: Option<u8>,
    /// Inclusive port bounds from `th dport` comparisons.
    dport_lo: Option<u16>,
    dport_hi: Option<u16>,
    drop: bool,
    dnat: bool,
    /// The one address family the rule's own expressions restrict it to: `meta nfproto`, or the
    /// family of its nat statement (`dnat ip6 to ...` acts on IPv6 packets only, even in inet).
    family: Option<Family>,
}

fn read_matches(exprs: &[Expr]) -> RuleMatches {
    let mut regs: BTreeMap<u32, Src> = BTreeMap::new();
    let mut m = RuleMatches::default();
    for e in exprs {
        match e {
            Expr::Meta { key, dreg } => {
                regs.insert(*dreg, Src::Meta(*key));
            }
            Expr::Payload { base, offset, len, dreg } => {
                regs.insert(*dreg, Src::Payload(*base, *offset, *len));
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                let src = regs.get(sreg).cloned().unwrap_or(Src::Other);
                // A contiguous network mask of an IPv4 or IPv6 address: its prefix length.
                let wide = match mask.len() {
                    4 => Some((u32::from_be_bytes(mask[..4].try_into().unwrap()) as u128) << 96),
                    16 => Some(u128::from_be_bytes(mask[..16].try_into().unwrap())),
                    _ => None,
                };
                let prefix = wide
                    .filter(|_| xor.iter().all(|b| *b == 0))
                    .filter(|m| m.checked_shl(m.leading_ones()).unwrap_or(0) == 0)
                    .map(|m| m.leading_ones() as u8);
                let s = match prefix {
                    Some(p) => Src::Masked(Box::new(src), p),
                    None => Src::Other,
                };
                regs.insert(*dreg, s);
            }
            Expr::Cmp { sreg, op, data } => {
                let src = regs.get(sreg).cloned().unwrap_or(Src::Other);
                read_cmp(&mut m, &src, *op, data);
            }
            Expr::Verdict(Verdict::Drop) => m.drop = true,
            Expr::Nat { kind, family, .. } => {
                m.dnat |= *kind == NAT_DNAT;
                m.family = m.family.or(nfproto_family(*family));
            }
            Expr::Xt { target: true, name, .. } => match name.as_str() {
                "DNAT" | "REDIRECT" => m.dnat = true,
                "DROP" | "REJECT" => m.drop = true,
                _ => {}
            },
            Expr::Lookup { dreg: Some(d), .. } | Expr::Immediate { dreg: d, .. } => {
                regs.insert(*d, Src::Other);
            }
            Expr::Ct { dreg, .. } | Expr::Fib { dreg, .. } => {
                regs.insert(*dreg, Src::Other);
            }
            _ => {}
        }
    }
    m
}

fn read_cmp(m: &mut RuleMatches, src: &Src, op: CmpOp, data: &[u8]) {
    let ip_of = |d: &[u8]| match d.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(d).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(d).ok()?)),
        _ => None,
    };
    // IPv4 saddr/daddr at 12/16, IPv6 at 8/24: (is daddr).
    let addr_field = |off: u32, len: u32| match (off, len) {
        (12, 4) | (8, 16) => Some(false),
        (16, 4) | (24, 16) => Some(true),
        _ => None,
    };
    match src {
        Src::Meta(k) if *k == META_IIFNAME || *k == META_OIFNAME => {
            let end = data.iter().position(|b| *b == 0);
            let name = String::from_utf8_lossy(&data[..end.unwrap_or(data.len())]).into_owned();
            m.ifnames.push((*k, op, name, end.is_none() && data.len() < 16));
        }
        Src::Meta(k) if *k == META_L4PROTO && data.len() == 1 && op == CmpOp::Eq => m.l4proto = Some(data[0]),
        Src::Meta(k) if *k == META_NFPROTO && data.len() == 1 && op == CmpOp::Eq => {
            m.family = nfproto_family(data[0] as u32)
        }
        Src::Payload(PAYLOAD_NETWORK, 9, 1) if data.len() == 1 && op == CmpOp::Eq => m.l4proto = Some(data[0]),
        Src::Payload(PAYLOAD_NETWORK, off, len) if addr_field(*off, *len).is_some() => {
            if let Some(ip) = ip_of(data) {
                let full = if ip.is_ipv6() { 128 } else { 32 };
                m.prefixes.push((addr_field(*off, *len) == Some(true), op, Subnet { addr: ip, prefix: full }));
            }
        }
        Src::Masked(inner, p) => {
            if let (Src::Payload(PAYLOAD_NETWORK, off, len), Some(ip)) = (inner.as_ref(), ip_of(data)) {
                if let Some(daddr) = addr_field(*off, *len) {
                    m.prefixes.push((daddr, op, Subnet { addr: ip, prefix: *p }));
                }
            }
        }
        Src::Payload(PAYLOAD_TRANSPORT, 2, 2) if data.len() == 2 => {
            let p = u16::from_be_bytes([data[0], data[1]]);
            match op {
                CmpOp::Eq => {
                    m.dport_lo = Some(p);
                    m.dport_hi = Some(p);
                }
                CmpOp::Gte => m.dport_lo = Some(p),
                CmpOp::Gt => m.dport_lo = Some(p.saturating_add(1)),
                CmpOp::Lte => m.dport_hi = Some(p),
                CmpOp::Lt => m.dport_hi = Some(p.saturating_sub(1)),
                CmpOp::Neq => {}
            }
        }
        _ => {}
    }
}

fn family_name(f: u32) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "family?",
    }
}

fn chain_label(family: u32, table: &str, chain: &str) -> String {
    format!("{} {table} {chain}", family_name(family))
}

fn hook_name(h: u32) -> String {
    ["prerouting", "input", "forward", "output", "postrouting"]
        .get(h as usize)
        .map(|s| s.to_string())
        .unwrap_or(h.to_string())
}

/// The address family of netfilter family (NFPROTO_*) `nfproto`, if it is one of IPv4, IPv6.
fn nfproto_family(nfproto: u32) -> Option<Family> {
    match nfproto {
        FAMILY_IPV4 => Some(Family::V4),
        FAMILY_IPV6 => Some(Family::V6),
        _ => None,
    }
}

/// The address families whose routed packets the chains of netfilter family `nfproto` see:
/// ip → IPv4, ip6 → IPv6, inet → both; arp, bridge and netdev chains neither.
fn families_of(nfproto: u32) -> &'static [Family] {
    match nfproto {
        FAMILY_INET => &Family::ALL,
        FAMILY_IPV4 => &[Family::V4],
        FAMILY_IPV6 => &[Family::V6],
        _ => &[],
    }
}

/// Whether a chain of another table than netnat's, in netfilter family `nfproto`, sees packets
/// of family `fam`.
fn foreign_sees(c_table: &str, nfproto: u32, fam: Family) -> bool {
    !own_table(c_table, nfproto) && families_of(nfproto).contains(&fam)
}

/// Whether foreign rule `r` (whose matches are `m`) can act on packets of family `fam`: its
/// chain sees them and its own matches do not leave them out.
fn rule_sees(r: &LiveRule, m: &RuleMatches, fam: Family) -> bool {
    foreign_sees(&r.table, r.family, fam) && m.family.is_none_or(|f| f == fam)
}

/// The one address family rule `r` acts on, if its table's family or its own matches fix it.
fn rule_family(r: &LiveRule, m: &RuleMatches) -> Option<Family> {
    let mut fams = families_of(r.family).iter().filter(|f| m.family.is_none_or(|x| x == **f));
    match (fams.next(), fams.next()) {
        (Some(f), None) => Some(*f),
        _ => None,
    }
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

/// A rule of another table in nft syntax, iptables-nft NAT targets decoded.
pub fn render_foreign(r: &LiveRule) -> String {
    // Set key lengths of foreign tables are unknown here: lookups print their first component.
    let mut text = expr::render(&without_nat_targets(&r.exprs), &|_| None);
    // An xt NAT target's address width follows the family of the rule (ip or ip6 table).
    let family = rule_family(r, &read_matches(&r.exprs));
    for e in &r.exprs {
        if let Expr::Xt { target: true, name, info } = e {
            if is_xt_nat(name) {
                if !text.is_empty() {
                    text.push(' ');
                }
                text += &xt_nat_text(name, info, family);
            }
        }
    }
    text
}

fn is_xt_nat(name: &str) -> bool {
    matches!(name, "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP")
}

fn without_nat_targets(exprs: &[Expr]) -> Vec<Expr> {
    exprs.iter().filter(|e| !matches!(e, Expr::Xt { target: true, name, .. } if is_xt_nat(name))).cloned().collect()
}

// ---- conflicts with other tables and programs ----

fn conflicts(o: &Observed, out: &mut Vec<Finding>) {
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

/// Forward chains of other tables that would drop netnat's container traffic: the audit's
/// `conflict.forward-drop`, also checked by `publish` and `network create` so the operator hears
/// of it when it matters.
pub fn forward_blockers(state: &State, chains: Vec<LiveChain>, rules: Vec<LiveRule>) -> Vec<Finding> {
    let o = Observed { state: state.clone(), chains, rules, ..Default::default() };
    let mut out = vec![];
    forward_drop(&o, &mut out);
    out
}

fn forward_drop(o: &Observed, out: &mut Vec<Finding>) {
    // Which rule really decides each kind of container traffic: see `hostfw::verdict`.
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

/// netnat's openings in host firewalls: each one (info), the record's that are missing or
/// incomplete (warning, with the fix), and a firewall that runs but cannot be asked.
fn host_firewalls(o: &Observed, out: &mut Vec<Finding>) {
    let Some(h) = &o.host_firewall else { return };
    for (kind, bridge, network, what, complete) in &h.held {
        let (id, sev, msg) = if *complete {
            (
                "host.firewall-open",
                Severity::Info,
                format!("{kind} lets network {network} (bridge {bridge}) through: {what}"),
            )
        } else {
            (
                "host.firewall-damaged",
                Severity::Warning,
                format!("{kind}: netnat's opening for network {network} (bridge {bridge}) is incomplete ({what} expected); `netnat reload` adds it again"),
            )
        };
        out.push(finding(id, sev, msg, vec![kind.to_string(), bridge.clone()]));
    }
    for n in o.state.networks.values().filter(|n| n.host_firewall == crate::model::HostFirewallMode::Auto) {
        for kind in &h.running {
            if h.held.iter().any(|(k, b, ..)| k == kind && *b == n.bridge) {
                continue;
            }
            out.push(finding(
                "host.firewall-missing",
                Severity::Warning,
                format!(
                    "{kind} runs, and netnat's opening for network {} (bridge {}) is not there (removed, or {kind} \
                     started after the network was made): `netnat reload` adds it, or by hand: {}",
                    n.name,
                    n.bridge,
                    hostfw::fix(*kind, &n.bridge)
                ),
                vec![kind.to_string(), n.bridge.clone()],
            ));
        }
    }
    for (kind, why) in &h.unreachable {
        out.push(finding(
            "host.firewall-unreachable",
            Severity::Warning,
            format!("{kind}: {why}"),
            vec![kind.to_string()],
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
                let hook = hook_name(b.hook);
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

// ---- the host's own settings ----

fn host(o: &Observed, out: &mut Vec<Finding>) {
    let get = |k: &str| o.sysctls.get(k).map(|v| v.trim());
    let v6_forward = host::IP6_FORWARD;
    if o.state.has_v6() && get(v6_forward) == Some("0") {
        out.push(finding(
            "host.forwarding-off",
            Severity::Error,
            "net.ipv6.conf.all.forwarding is 0 while a network has an IPv6 subnet: no IPv6 traffic is routed between containers and the outside",
            vec![v6_forward.replace('/', ".")],
        ));
    }
    if get(v6_forward) == Some("1") {
        for l in &o.ra_links {
            let key = host::accept_ra_key(l);
            if get(&key) == Some("1") {
                out.push(finding(
                    "host.ra-ignored",
                    Severity::Warning,
                    format!(
                        "{l} learns IPv6 routes from router advertisements (accept_ra=1), but IPv6 forwarding is on, so the kernel ignores them and the routes will expire; set net.ipv6.conf.{l}.accept_ra=2"
                    ),
                    vec![key.replace('/', ".")],
                ));
            }
        }
    }
    if !o.state.networks.is_empty() && get(IP_FORWARD) == Some("0") {
        out.push(finding(
            "host.forwarding-off",
            Severity::Error,
            "net.ipv4.ip_forward is 0: nothing is routed between containers and the outside, published ports included",
            vec![IP_FORWARD.replace('/', ".")],
        ));
    }
    let guard = ruleset::desired(&State::default()).rules.into_iter().find(|r| r.chain == "guard");
    let guarded = match (&o.table, &guard) {
        (Some(t), Some(g)) => t.rules.iter().any(|r| r.chain == "guard" && r.exprs == g.exprs),
        _ => false,
    };
    if !guarded {
        let on: Vec<String> = o
            .sysctls
            .iter()
            .filter(|(k, v)| v.trim() == "1" && k.starts_with("net/ipv4/conf/") && k.ends_with("/route_localnet"))
            .map(|(k, _)| k.trim_start_matches("net/ipv4/conf/").trim_end_matches("/route_localnet").to_string())
            .filter(|i| i != "default")
            .collect();
        if !on.is_empty() {
            out.push(finding(
                "host.route-localnet-unguarded",
                Severity::Error,
                format!(
                    "route_localnet is 1 on {} but netnat's guard rule (drop 127.0.0.0/8 from outside) is absent: \
                     hosts on that link can reach services bound to 127.0.0.1 (CVE-2020-8558)",
                    on.join(", ")
                ),
                on,
            ));
        }
    }
    if get(BR_NF_CALL_IPTABLES) == Some("1") {
        out.push(finding(
            "host.br-netfilter",
            Severity::Info,
            "br_netfilter is loaded and bridge-nf-call-iptables is 1: traffic between containers on one bridge \
             also passes the IPv4 forward hooks (netnat's rules allow it)",
            vec![BR_NF_CALL_IPTABLES.replace('/', ".")],
        ));
    }
    if let (Some(Ok(count)), Some(Ok(max))) = (get(CT_COUNT).map(str::parse::<u64>), get(CT_MAX).map(str::parse::<u64>))
    {
        if max > 0 && count * 10 > max * 8 {
            out.push(finding(
                "host.conntrack-full",
                Severity::Warning,
                format!("the conntrack table holds {count} of at most {max} entries (over 80%): new connections may be dropped"),
                vec![CT_COUNT.replace('/', ".")],
            ));
        }
    }
}

// ---- things netnat made and lost track of ----

/// `nn` + 8 lowercase hex digits: the shape of netnat's host-side veth names.
pub fn is_netnat_veth_name(name: &str) -> bool {
    name.len() == 10
        && name.starts_with("nn")
        && name[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn leftovers(o: &Observed, out: &mut Vec<Finding>) {
    let st = &o.state;
    let recorded: BTreeMap<&str, &str> = st
        .sandboxes
        .values()
        .flat_map(|s| s.endpoints.iter().map(move |e| (e.host_ifname.as_str(), s.name.as_str())))
        .collect();
    for l in o.links.iter().filter(|l| l.kind.as_deref() == Some("veth") && is_netnat_veth_name(&l.name)) {
        let why = match recorded.get(l.name.as_str()) {
            None => Some("is named like netnat's veths but is not in its record".to_string()),
            Some(_) if !l.has_peer => Some("is in netnat's record but its peer is gone".to_string()),
            Some(sb) if !o.netns.iter().any(|n| n == sb) && st.sandboxes[*sb].created => {
                Some(format!("belongs to sandbox {sb}, whose namespace /run/netns/{sb} is gone"))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            out.push(finding(
                "leftover.veth",
                Severity::Warning,
                format!("veth {} {why}", l.name),
                vec![l.name.clone()],
            ));
        }
    }
    for s in st.sandboxes.values().filter(|s| s.created && s.endpoints.is_empty()) {
        let what = if o.netns.contains(&s.name) { "exists" } else { "is recorded" };
        out.push(finding(
            "leftover.netns",
            Severity::Warning,
            format!(
                "namespace {} was created by netnat and {what} but has no endpoint (connect it, or remove it with \
                 `netnat sandbox rm {}`)",
                s.name, s.name
            ),
            vec![s.name.clone()],
        ));
    }
    if !o.trace_leftover.is_empty() {
        out.push(finding(
            "trace.leftover",
            Severity::Warning,
            format!(
                "table inet {TABLE} still has the chains of a `netnat trace` that did not end (killed): {}; they \
                 mark matching packets for tracing, which costs on every packet; the next netnat command that \
                 changes something removes them (e.g. `netnat reload`)",
                o.trace_leftover.join(", ")
            ),
            o.trace_leftover.iter().map(|c| format!("inet {TABLE} {c}")).collect(),
        ));
    }
    // A CNI container's address is on the runtime's bridge, not in a netnat network.
    for m in st.mappings.iter().filter(|m| st.network_of(m.container_ip).is_none() && st.owner_of(m).is_none()) {
        out.push(finding(
            "leftover.mapping-target",
            Severity::Warning,
            format!("mapping {m} points to {}, which is in no netnat network", m.container_ip),
            vec![m.to_string()],
        ));
    }
}

// ---- NAT of other tables ----

fn foreign_nat(o: &Observed, out: &mut Vec<Finding>) {
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

// NF_NAT_RANGE_* flags (linux/netfilter/nf_nat.h).
const NAT_RANGE_MAP_IPS: u32 = 1;
const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const NAT_RANGE_PROTO_RANDOM: u32 = 4;
const NAT_RANGE_PERSISTENT: u32 = 8;
const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 16;

/// An iptables NAT target's range, decoded from its info blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XtRange {
    pub flags: u32,
    pub min_ip: IpAddr,
    pub max_ip: IpAddr,
    pub min_port: u16,
    pub max_port: u16,
}

/// Decodes the info blob of an iptables-nft or ip6tables-nft DNAT/SNAT/MASQUERADE/REDIRECT
/// target of a rule of address family `family`, told apart by size (the kernel dumps it padded to
/// 8 bytes, XT_ALIGN):
/// - 24: revision 0 in IPv4, `struct nf_nat_ipv4_multi_range_compat` (rangesize u32, then flags
///   u32, min_ip, max_ip be32, min/max port be16);
/// - 40: `struct nf_nat_range` (flags u32, min/max `union nf_inet_addr` of 16 bytes, min/max port
///   be16): revision 1 of DNAT/SNAT, and MASQUERADE/REDIRECT in IPv6; 48: revision 2,
///   `struct nf_nat_range2` (the same, plus a base port). An IPv4 address fills the first 4
///   bytes of a `nf_inet_addr`, an IPv6 address all 16.
///
/// None for anything else (an unknown layout, or the compat layout in IPv6, where it does not exist).
pub fn decode_xt_nat(info: &[u8], family: Family) -> Option<XtRange> {
    let u32_at = |o: usize| info.get(o..o + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
    let ip_at = |o: usize| match family {
        Family::V4 => info.get(o..o + 4).map(|b| IpAddr::from(<[u8; 4]>::try_from(b).unwrap())),
        Family::V6 => info.get(o..o + 16).map(|b| IpAddr::from(<[u8; 16]>::try_from(b).unwrap())),
    };
    let port_at = |o: usize| info.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match info.len() {
        20 | 24 if family == Family::V4 => {
            if u32_at(0)? != 1 {
                return None; // rangesize: iptables always writes exactly one range
            }
            Some(XtRange {
                flags: u32_at(4)?,
                min_ip: ip_at(8)?,
                max_ip: ip_at(12)?,
                min_port: port_at(16)?,
                max_port: port_at(18)?,
            })
        }
        40 | 48 => Some(XtRange {
            flags: u32_at(0)?,
            min_ip: ip_at(4)?,
            max_ip: ip_at(20)?,
            min_port: port_at(36)?,
            max_port: port_at(38)?,
        }),
        _ => None,
    }
}

/// `dnat to 10.1.2.3:80`, `dnat to [fd00::2]:80` and the like, as iptables-save would put it,
/// or a note that the blob could not be decoded. `family`: the rule's address family, None when
/// it cannot be told (then the address width is unknown).
pub fn xt_nat_text(name: &str, info: &[u8], family: Option<Family>) -> String {
    let verb = match name {
        "DNAT" => "dnat to",
        "SNAT" => "snat to",
        "MASQUERADE" => "masquerade to",
        "REDIRECT" => "redirect to",
        other => return format!("xt target {other} (not decoded: {} bytes of target data)", info.len()),
    };
    let Some(r) = family.and_then(|f| decode_xt_nat(info, f)) else {
        return format!("xt target {name} (not decoded: {} bytes of target data)", info.len());
    };
    let ports = r.flags & NAT_RANGE_PROTO_SPECIFIED != 0;
    // An IPv6 address followed by a port goes in brackets, as iptables and nft print it.
    let addr = |ip: IpAddr| if ports && ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let mut s = String::new();
    if r.flags & NAT_RANGE_MAP_IPS != 0 {
        s += &addr(r.min_ip);
        if r.max_ip != r.min_ip {
            s += &format!("-{}", addr(r.max_ip));
        }
    }
    if ports {
        s += &format!(":{}", r.min_port);
        if r.max_port != r.min_port {
            s += &format!("-{}", r.max_port);
        }
    }
    let mut words = if s.is_empty() { verb.split(' ').next().unwrap().to_string() } else { format!("{verb} {s}") };
    for (bit, w) in [
        (NAT_RANGE_PROTO_RANDOM, "random"),
        (NAT_RANGE_PROTO_RANDOM_FULLY, "fully-random"),
        (NAT_RANGE_PERSISTENT, "persistent"),
    ] {
        if r.flags & bit != 0 {
            words += &format!(" {w}");
        }
    }
    let tool = if family == Some(Family::V6) { "ip6tables" } else { "iptables" };
    format!("{words} ({tool} {name})")
}

// ---- /proc parsers ----

/// Parses /proc/net/{tcp,udp,tcp6,udp6}: TCP sockets in LISTEN (state 0A), unconnected UDP
/// sockets (remote address zero). IPv6 sockets count when bound to `::` (every address, also
/// IPv4 unless v6only) or to an IPv4-mapped address.
pub fn parse_proc_net(text: &str, protocol: crate::model::Proto) -> Vec<Listener> {
    let mut out = vec![];
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (local, remote, state) = (f[1], f[2], f[3]);
        let wanted = match protocol {
            crate::model::Proto::Tcp => state == "0A",
            _ => remote.split(':').next().is_some_and(|a| a.bytes().all(|b| b == b'0')),
        };
        if !wanted {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(port, 16) else { continue };
        let addr = match addr.len() {
            8 => u32::from_str_radix(addr, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes())),
            32 => {
                // Four 32-bit words, each printed as a host-order number.
                let words: Option<Vec<[u8; 4]>> = (0..4)
                    .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok().map(|v| v.to_ne_bytes()))
                    .collect();
                words.and_then(|w| {
                    let b: Vec<u8> = w.concat();
                    if b.iter().all(|x| *x == 0) {
                        Some(Ipv4Addr::UNSPECIFIED)
                    } else if b[..10].iter().all(|x| *x == 0) && b[10] == 0xff && b[11] == 0xff {
                        Some(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
                    } else {
                        None
                    }
                })
            }
            _ => None,
        };
        let inode = f.get(9).and_then(|i| i.parse().ok()).unwrap_or(0);
        if let Some(addr) = addr {
            out.push(Listener { protocol, addr, port, inode, process: None });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Parses /proc/net/ip_tables_names: one table name per line.
pub fn parse_table_names(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

// ---- human output ----

/// A readable report grouped by severity, worst first.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    for sev in [Severity::Error, Severity::Warning, Severity::Info] {
        let fs: Vec<&Finding> = r.findings.iter().filter(|f| f.severity == sev).collect();
        if fs.is_empty() {
            continue;
        }
        let title = match sev {
            Severity::Error => "ERRORS",
            Severity::Warning => "WARNINGS",
            Severity::Info => "INFO",
        };
        out += &format!("{title} ({})\n", fs.len());
        let width = fs.iter().map(|f| f.id.len()).max().unwrap_or(0);
        for f in fs {
            let mut lines = f.message.lines();
            out += &format!("  {:<width$}  {}\n", f.id, lines.next().unwrap_or(""));
            for l in lines {
                out += &format!("  {:<width$}    {l}\n", "");
            }
        }
        out += "\n";
    }
    let count = |s| r.findings.iter().filter(|f| f.severity == s).count();
    out += &format!(
        "{} error(s), {} warning(s), {} info\n",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Proto, Sandbox};
    use crate::nft::BaseChain;

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
        assert_eq!((any.scope, any.packets, any.bytes, any.connections), (Scope::Any, 3, 180, 2));
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
            chain: "forward".into(),
            handle: 99,
            exprs: vec![Expr::Counter],
            comment: None,
        });
        let f = has(&o, "drift.rule");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.contains("chain inet netnat forward"), "{}", f[0].message);
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
        o.rules.push(foreign_rule(
            FAMILY_INET,
            "firewalld",
            "filter_INPUT",
            vec![Expr::Other { name: "reject".into() }],
        ));
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
        for (prio, says) in
            [(-150, "the foreign DNAT wins"), (-50, "netnat's mapping wins"), (-100, "registered first")]
        {
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
        o.rules.push(foreign_rule(
            FAMILY_IPV4,
            "nat",
            "PREROUTING",
            vec![Expr::Verdict(Verdict::Jump("DOCKER".into()))],
        ));
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
        o.state
            .sandboxes
            .insert("adopted".into(), Sandbox { name: "adopted".into(), created: false, endpoints: vec![] });
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
        let tcp6 = "header\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n\
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
}
