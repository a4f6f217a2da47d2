//! Host firewalls next to netnat (issue 22): firewalld, ufw and Docker, each opened for netnat's
//! bridges through its own documented hook, and a warning naming the rule that really blocks
//! when there is no hook (or the integration is off).
//!
//! In nftables an accept in netnat's table cannot overrule a drop in another table's base chain,
//! so the only ways through are the other firewall's own configuration or a rule in the chain it
//! reserves for others. Each firewall is a [`Driver`]; what netnat added is marked as netnat's
//! (a zone description, a rule comment naming netnat and the network), recorded in the record's
//! `host_firewall` list ([`HostOpening`]), follows the networks ([`sync`]: `network create`,
//! `network rm`, `apply`, `reload`) and is removed exactly by `netnat reset` ([`remove_all`]).
//! Only netnat's bridges are opened, and only in the other firewall: netnat's own forward chain
//! still limits forwarding into a bridge to published ports.
//!
//! Detection reads what runs and what is in the kernel: firewalld answering on the system bus,
//! ufw's chains (`ufw-user-forward`), Docker's `DOCKER-USER` chain. [`verdict`] decides which
//! rule of any other table would drop a container's packet.

mod docker;
mod firewalld;
mod ufw;
pub mod verdict;

use crate::model::{Family, HostFirewallKind, HostFirewallMode, HostOpening, Network, State};
use crate::nft::hook::ForeignOp;
use crate::nft::{LiveChain, LiveRule, Nft};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use verdict::{Flow, Outcome};

/// The mark on everything netnat adds to another firewall: `netnat network NAME`.
pub fn mark(network: &str) -> String {
    format!("netnat network {network}")
}

/// The network a mark names, if it is netnat's.
pub fn marked_network(text: &str) -> Option<&str> {
    text.strip_prefix("netnat network ").filter(|n| !n.is_empty())
}

/// What a firewall holds for one bridge, by entries marked as netnat's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub network: String,
    /// Every entry the opening needs is there (false: some were removed by hand, say).
    pub complete: bool,
}

/// The nftables tables of other programs as the drivers read and change them (Docker's
/// DOCKER-USER, the chains detection looks for): nf_tables over netlink (`Nft`), or the
/// engine's fake firewall in unit tests. The engine hands its own (`engine::seam::Firewall::foreign`).
pub trait Tables {
    /// The chains and rules of every table.
    fn read_all(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)>;
    /// The chains of every table (one dump instead of two).
    fn read_chains(&mut self) -> Result<Vec<LiveChain>> {
        Ok(self.read_all()?.0)
    }
    /// The rules of every table (one dump instead of two).
    fn read_rules(&mut self) -> Result<Vec<LiveRule>> {
        Ok(self.read_all()?.1)
    }
    /// Changes rules of other tables, all in one transaction.
    fn change_foreign(&mut self, ops: &[ForeignOp]) -> Result<()>;
}

impl Tables for Nft {
    fn read_all(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)> {
        Nft::read_all(self)
    }
    fn read_chains(&mut self) -> Result<Vec<LiveChain>> {
        Nft::read_chains(self)
    }
    fn read_rules(&mut self) -> Result<Vec<LiveRule>> {
        Nft::read_rules(self)
    }
    fn change_foreign(&mut self, ops: &[ForeignOp]) -> Result<()> {
        Nft::change_foreign(self, ops)
    }
}

/// One host firewall, opened for netnat's bridges through its own supported interface. The
/// drivers that keep their entries in nftables (Docker's) read and change them through `Tables`.
pub trait Driver {
    fn kind(&self) -> HostFirewallKind;
    /// Bridges this firewall lets through by entries marked as netnat's.
    fn opened(&mut self, t: &mut dyn Tables) -> Result<BTreeMap<String, Held>>;
    /// Adds what is missing for network `net`'s bridge (idempotent).
    fn open(&mut self, t: &mut dyn Tables, net: &Network) -> Result<()>;
    /// Removes netnat's entries for `bridge`.
    fn close(&mut self, t: &mut dyn Tables, bridge: &str) -> Result<()>;
    /// Once nothing is open any more: removes what held the openings (firewalld's zone).
    fn tidy(&mut self) -> Result<()> {
        Ok(())
    }
    /// What netnat's entries are, in this firewall's words, for `bridge` (docs, audit, output).
    fn describe(&self, bridge: &str) -> String;
}

/// The firewall's own commands that let `bridge` through (the advice when netnat does not).
pub fn fix(kind: HostFirewallKind, bridge: &str) -> String {
    match kind {
        HostFirewallKind::Firewalld => format!(
            "firewall-cmd --permanent --zone=trusted --add-interface={bridge} && firewall-cmd --zone=trusted --add-interface={bridge}"
        ),
        HostFirewallKind::Ufw => format!("ufw route allow in on {bridge} && ufw route allow out on {bridge}"),
        HostFirewallKind::Docker => {
            format!("iptables -I DOCKER-USER -i {bridge} -j ACCEPT && iptables -I DOCKER-USER -o {bridge} -j ACCEPT")
        }
    }
}

/// Every other table's chains and rules (netnat's own are left out by the callers).
pub struct Kernel {
    pub chains: Vec<LiveChain>,
    pub rules: Vec<LiveRule>,
}

impl Kernel {
    pub fn read(t: &mut dyn Tables) -> Result<Kernel> {
        let (chains, rules) = t.read_all()?;
        Ok(Kernel { chains, rules })
    }
    fn has_chain(&self, family: u32, table: &str, name: &str) -> bool {
        self.chains.iter().any(|c| c.family == family && c.table == table && c.name == name)
    }
}

/// The host firewalls running now, each with its driver (an error: one that runs but cannot be
/// talked to, e.g. firewalld's table is there but it does not answer on D-Bus).
pub fn detect(k: &Kernel) -> Vec<Result<Box<dyn Driver>, (HostFirewallKind, String)>> {
    let mut out: Vec<Result<Box<dyn Driver>, (HostFirewallKind, String)>> = vec![];
    match firewalld::Firewalld::connect() {
        Ok(Some(f)) => out.push(Ok(Box::new(f))),
        Ok(None) if k.has_chain(1, "firewalld", "filter_FORWARD") => out.push(Err((
            HostFirewallKind::Firewalld,
            "table inet firewalld is there, but firewalld does not answer on the system D-Bus".into(),
        ))),
        Ok(None) => {}
        Err(e) => out.push(Err((HostFirewallKind::Firewalld, format!("{e:#}")))),
    }
    if [2, 10].iter().any(|f| k.has_chain(*f, "filter", "ufw-user-forward")) {
        out.push(Ok(Box::new(ufw::Ufw::new())));
    }
    let docker: Vec<u32> = [2, 10].into_iter().filter(|f| k.has_chain(*f, "filter", "DOCKER-USER")).collect();
    if !docker.is_empty() {
        out.push(Ok(Box::new(docker::Docker::new(docker))));
    }
    out
}

/// Makes every running host firewall let exactly the bridges of the networks with
/// `host_firewall = auto` through, removes netnat's entries for other bridges, and records what
/// is open in `state.host_firewall`. Returns warnings (a firewall that refused, and the rules
/// that still block container traffic, with their fix). Never fails the operation: netnat's own
/// table is in place whatever another firewall says.
pub fn sync(state: &mut State, t: &mut dyn Tables) -> Synced {
    let Ok(k) = Kernel::read(t) else { return Synced::default() };
    let want: BTreeMap<&str, &Network> = state
        .networks
        .values()
        .filter(|n| n.host_firewall == HostFirewallMode::Auto)
        .map(|n| (n.bridge.as_str(), n))
        .collect();
    let mut warnings = vec![];
    let mut steps = vec![];
    let mut open: Vec<HostOpening> = vec![];
    let mut seen: BTreeSet<HostFirewallKind> = BTreeSet::new();
    for d in detect(&k) {
        let mut d = match d {
            Ok(d) => d,
            Err((kind, why)) => {
                seen.insert(kind);
                // Keep what was recorded: it is still in that firewall's configuration.
                open.extend(state.host_firewall.iter().filter(|o| o.firewall == kind).cloned());
                if !want.is_empty() {
                    warnings.push(format!("{kind}: {why}; netnat cannot open it for its bridges"));
                }
                continue;
            }
        };
        seen.insert(d.kind());
        match sync_one(d.as_mut(), t, &want, &mut steps) {
            Ok(o) => open.extend(o),
            Err(e) => warnings.push(format!("{}: {e:#}", d.kind())),
        }
    }
    // A firewall that is not running now (stopped, uninstalled) keeps its record entries: its
    // saved configuration may still hold them, and a later sync or reset finds them.
    open.extend(state.host_firewall.iter().filter(|o| !seen.contains(&o.firewall)).cloned());
    open.sort();
    open.dedup();
    state.host_firewall = open;
    // Read again when something was opened or closed: it no longer blocks.
    let k = if steps.is_empty() { k } else { Kernel::read(t).unwrap_or(k) };
    warnings.extend(blocking_warnings(state, &k));
    Synced { steps, warnings }
}

/// What `sync` did, and what still blocks netnat's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub steps: Vec<String>,
    pub warnings: Vec<String>,
}

fn sync_one(
    d: &mut dyn Driver,
    t: &mut dyn Tables,
    want: &BTreeMap<&str, &Network>,
    steps: &mut Vec<String>,
) -> Result<Vec<HostOpening>> {
    let held = d.opened(t)?;
    for (bridge, net) in want {
        if !held.get(*bridge).is_some_and(|h| h.complete && h.network == net.name) {
            d.open(t, net)?;
            steps.push(format!("{}: opened for network {} ({})", d.kind(), net.name, d.describe(bridge)));
        }
    }
    for bridge in held.keys().filter(|b| !want.contains_key(b.as_str())) {
        d.close(t, bridge)?;
        steps.push(format!("{}: closed bridge {bridge} (removed {})", d.kind(), d.describe(bridge)));
    }
    if want.is_empty() {
        d.tidy()?;
    }
    let kind = d.kind();
    Ok(want
        .values()
        .map(|n| HostOpening { firewall: kind, network: n.name.clone(), bridge: n.bridge.clone() })
        .collect())
}

/// `netnat reset`: removes every entry netnat added to a host firewall (recorded, or found by
/// its mark), and what held them. Returns what could not be removed.
pub fn remove_all(state: &mut State, t: &mut dyn Tables) -> Vec<String> {
    let Ok(k) = Kernel::read(t) else { return vec![] };
    let mut failures = vec![];
    let mut seen = BTreeSet::new();
    for d in detect(&k) {
        let mut d = match d {
            Ok(d) => d,
            Err((kind, why)) => {
                if state.host_firewall.iter().any(|o| o.firewall == kind) {
                    failures.push(format!("{kind}: {why}: its entries for netnat's bridges are left"));
                }
                continue;
            }
        };
        seen.insert(d.kind());
        let r = d.opened(t).and_then(|held| {
            let recorded = state.host_firewall.iter().filter(|o| o.firewall == d.kind()).map(|o| o.bridge.clone());
            let all: BTreeSet<String> = held.into_keys().chain(recorded).collect();
            for b in &all {
                d.close(t, b)?;
            }
            d.tidy()
        });
        if let Err(e) = r {
            failures.push(format!("{}: {e:#}", d.kind()));
        }
    }
    for o in state.host_firewall.iter().filter(|o| !seen.contains(&o.firewall)) {
        failures.push(format!(
            "{} is not running: its entry for bridge {} (network {}) could not be removed",
            o.firewall, o.bridge, o.network
        ));
    }
    state.host_firewall.clear();
    failures
}

/// The traffic of one network another table can drop, named for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Egress,
    Internal,
    Published,
}

impl Class {
    pub fn text(self) -> &'static str {
        match self {
            Class::Egress => "container egress",
            Class::Internal => "traffic between its containers",
            Class::Published => "connections to its published ports",
        }
    }
    fn flow(self, family: Family, bridge: &str) -> Flow {
        let b = Some(bridge.to_string());
        match self {
            Class::Egress => Flow { family, iif: b, oif: None, dnat: false },
            Class::Internal => Flow { family, iif: b.clone(), oif: b, dnat: false },
            Class::Published => Flow { family, iif: None, oif: b, dnat: true },
        }
    }
}

/// A base chain of another table that drops some of a network's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// `family table chain` of the base chain, and its priority.
    pub base: String,
    pub priority: i32,
    /// The rule that drops (`chain: rule handle N: text`), or the base chain's policy.
    pub rule: String,
    /// `table` of the chain, and its netfilter family (to tell whose it is).
    pub table: String,
    pub family: u32,
    pub network: String,
    pub bridge: String,
    pub classes: Vec<Class>,
    /// The rule drops the traffic for some protocols or ports only (`tcp dport 22 drop`).
    pub partial: bool,
}

/// Every base chain of another table on the forward hook that drops traffic of netnat's
/// networks, grouped per network and dropping rule.
pub fn blockers(state: &State, chains: &[LiveChain], rules: &[LiveRule]) -> Vec<Blocker> {
    let mut out: Vec<Blocker> = vec![];
    for n in state.networks.values() {
        let classes: &[Class] =
            if n.internal { &[Class::Internal] } else { &[Class::Egress, Class::Internal, Class::Published] };
        for fam in n.families() {
            for class in classes {
                for d in verdict::decide(chains, rules, crate::ruleset::TABLE, &class.flow(fam, &n.bridge)) {
                    let c = d.chain;
                    let base = format!("{} {} {}", family_name(c.family), c.table, c.name);
                    let mut dropping: Vec<(String, bool)> =
                        d.partial.iter().map(|r| (rule_text(r, &r.chain), true)).collect();
                    match d.outcome {
                        Outcome::Dropped { chain, rule: Some(r) } => dropping.push((rule_text(&r, &chain), false)),
                        Outcome::Dropped { rule: None, .. } => dropping.push((format!("{base}: policy drop"), false)),
                        Outcome::Accepted => {}
                    }
                    let priority = c.base.as_ref().map(|b| b.priority).unwrap_or(0);
                    for (rule, partial) in dropping {
                        match out.iter_mut().find(|b| b.network == n.name && b.rule == rule) {
                            Some(b) if !b.classes.contains(class) => b.classes.push(*class),
                            Some(_) => {}
                            None => out.push(Blocker {
                                base: base.clone(),
                                priority,
                                rule,
                                table: c.table.clone(),
                                family: c.family,
                                network: n.name.clone(),
                                bridge: n.bridge.clone(),
                                classes: vec![*class],
                                partial,
                            }),
                        }
                    }
                }
            }
        }
    }
    out
}

fn rule_text(r: &LiveRule, chain: &str) -> String {
    // The renderer prints expressions it does not model as `# NAME`; a reject is a verdict here.
    let text = crate::nft::expr::render(&r.exprs, &|_| None).replace("# reject", "reject");
    format!("{} {} {chain}: rule handle {}: {text}", family_name(r.family), r.table, r.handle)
}

fn family_name(f: u32) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        10 => "ip6",
        _ => "family?",
    }
}

/// Whose chain a blocker is: the firewall whose own fix applies to it.
pub fn owner(b: &Blocker, chains: &[LiveChain]) -> Vec<HostFirewallKind> {
    let k = |family: u32, table: &str, name: &str| {
        chains.iter().any(|c| c.family == family && c.table == table && c.name == name)
    };
    let mut v = vec![];
    if b.table == "firewalld" && b.family == 1 {
        v.push(HostFirewallKind::Firewalld);
    }
    if b.table == "filter" && k(b.family, "filter", "ufw-user-forward") {
        v.push(HostFirewallKind::Ufw);
    }
    if b.table == "filter" && k(b.family, "filter", "DOCKER-USER") {
        v.push(HostFirewallKind::Docker);
    }
    v
}

/// One message per blocking rule, with that firewall's own fix (or, for a table no supported
/// firewall owns, the rule to add there).
pub fn blocker_message(b: &Blocker, owners: &[HostFirewallKind]) -> String {
    let classes: Vec<&str> = b.classes.iter().map(|c| c.text()).collect();
    let mut m = format!(
        "chain {} (forward hook, priority {}) drops {}{} of network {} (bridge {}): {}",
        b.base,
        b.priority,
        if b.partial { "some protocols or ports of " } else { "" },
        classes.join(", "),
        b.network,
        b.bridge,
        b.rule
    );
    if owners.is_empty() {
        let chain = &b.base;
        m += &format!(
            "; netnat does not edit that table, let the bridge through there, e.g. nft insert rule {chain} \
             iifname \"{br}\" accept; nft insert rule {chain} oifname \"{br}\" accept",
            br = b.bridge
        );
    } else {
        let fixes: Vec<String> = owners.iter().map(|k| fix(*k, &b.bridge)).collect();
        m += &format!("; fix: {}", fixes.join("; "));
    }
    m
}

/// The rules of other tables that drop netnat's traffic now, with their fix (read from the
/// kernel; nothing is changed). Empty when they cannot be read: `netnat audit` reports that.
pub fn warnings(state: &State, t: &mut dyn Tables) -> Vec<String> {
    if state.networks.is_empty() {
        return vec![];
    }
    // Only another table's forward chain can drop container traffic: without one (a host with no
    // firewall), the rules need not be read (this runs after every publish).
    let foreign_forward = |c: &LiveChain| {
        c.table != crate::ruleset::TABLE && c.base.as_ref().is_some_and(|b| b.hook == crate::nft::family::HOOK_FORWARD)
    };
    let Ok(chains) = t.read_chains() else { return vec![] };
    if !chains.iter().any(foreign_forward) {
        return vec![];
    }
    // The chains just read serve again: only the rules are dumped.
    t.read_rules().map(|rules| blocking_warnings(state, &Kernel { chains, rules })).unwrap_or_default()
}

fn blocking_warnings(state: &State, k: &Kernel) -> Vec<String> {
    let found = blockers(state, &k.chains, &k.rules);
    let mut out = vec![];
    for b in found.iter().filter(|b| !b.partial) {
        let mut m = blocker_message(b, &owner(b, &k.chains));
        let off = state.networks.get(&b.network).is_some_and(|n| n.host_firewall == HostFirewallMode::Off);
        if off {
            m += &format!(" (network {} has host_firewall = off: netnat leaves that firewall to you)", b.network);
        }
        out.push(m);
    }
    out
}

/// The state of netnat's openings for `netnat audit`: per firewall running, the bridges opened as
/// recorded (complete or damaged), and bridges the record says are open that are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// (firewall, bridge, network, what it is, complete).
    pub held: Vec<(HostFirewallKind, String, String, String, bool)>,
    /// Firewalls running now.
    pub running: Vec<HostFirewallKind>,
    /// Firewalls that run but cannot be asked, and why.
    pub unreachable: Vec<(HostFirewallKind, String)>,
}

/// What the running firewalls hold for netnat (for the audit).
pub fn observe(k: &Kernel, t: &mut dyn Tables) -> Observed {
    let mut o = Observed::default();
    for d in detect(k) {
        match d {
            Ok(mut d) => {
                o.running.push(d.kind());
                match d.opened(t) {
                    Ok(h) => {
                        for (b, held) in h {
                            o.held.push((d.kind(), b.clone(), held.network, d.describe(&b), held.complete));
                        }
                    }
                    Err(e) => o.unreachable.push((d.kind(), format!("{e:#}"))),
                }
            }
            Err(u) => o.unreachable.push(u),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A firewall in memory: bridge -> (network, complete), and what was done to it.
    #[derive(Default)]
    struct Fake {
        held: BTreeMap<String, Held>,
        log: RefCell<Vec<String>>,
    }

    impl Driver for Fake {
        fn kind(&self) -> HostFirewallKind {
            HostFirewallKind::Ufw
        }
        fn opened(&mut self, _: &mut dyn Tables) -> Result<BTreeMap<String, Held>> {
            Ok(self.held.clone())
        }
        fn open(&mut self, _: &mut dyn Tables, net: &Network) -> Result<()> {
            self.log.borrow_mut().push(format!("open {}", net.bridge));
            self.held.insert(net.bridge.clone(), Held { network: net.name.clone(), complete: true });
            Ok(())
        }
        fn close(&mut self, _: &mut dyn Tables, bridge: &str) -> Result<()> {
            self.log.borrow_mut().push(format!("close {bridge}"));
            self.held.remove(bridge);
            Ok(())
        }
        fn tidy(&mut self) -> Result<()> {
            self.log.borrow_mut().push("tidy".into());
            Ok(())
        }
        fn describe(&self, bridge: &str) -> String {
            format!("rules for {bridge}")
        }
    }

    fn net(name: &str) -> Network {
        crate::model::fixtures::net(name, &["10.9.0.0/24"], &["10.9.0.1"])
    }

    /// No other table: the fake driver keeps its entries itself.
    struct NoTables;

    impl Tables for NoTables {
        fn read_all(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)> {
            Ok((vec![], vec![]))
        }
        fn change_foreign(&mut self, _: &[ForeignOp]) -> Result<()> {
            anyhow::bail!("the fake driver changes no table")
        }
    }

    #[test]
    fn sync_opens_what_is_missing_closes_what_is_not_wanted_and_records_it() {
        let (a, b) = (net("a"), net("b"));
        let mut d = Fake::default();
        d.held.insert("a".into(), Held { network: "a".into(), complete: true });
        d.held.insert("old".into(), Held { network: "old".into(), complete: true });
        d.held.insert("b".into(), Held { network: "b".into(), complete: false });
        let want: BTreeMap<&str, &Network> = [("a", &a), ("b", &b)].into();
        let mut steps = vec![];
        let rec = sync_one(&mut d, &mut NoTables, &want, &mut steps).unwrap();
        assert_eq!(*d.log.borrow(), ["open b", "close old"], "a complete opening is left alone");
        assert_eq!(rec.iter().map(|o| o.bridge.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(steps.len(), 2);
        // Nothing wanted: everything closed, then what held it (firewalld's zone).
        let rec = sync_one(&mut d, &mut NoTables, &BTreeMap::new(), &mut steps).unwrap();
        assert!(rec.is_empty());
        assert_eq!(d.log.borrow()[2..], ["close a", "close b", "tidy"]);
    }

    #[test]
    fn marks_name_netnat_and_the_network() {
        assert_eq!(mark("web"), "netnat network web");
        assert_eq!(marked_network("netnat network web"), Some("web"));
        assert_eq!(marked_network("netnat network "), None);
        assert_eq!(marked_network("mine"), None);
    }
}
