//! `audit` and `graph`: gather what the kernel has (netlink and /proc only, never a tool) into
//! `audit::Observed`, then let the pure `audit` module judge it.

use crate::audit::{self, Listener, Observed, ObservedLink, Report, Severity};
use crate::cli::{AuditArgs, FailOn};
use crate::link::{netns, sysctl, Links};
use crate::model::{Proto, State};
use crate::nft::Nft;
use crate::ruleset::TABLE;
use crate::state::Store;
use crate::{conntrack, graph};
use anyhow::{Context, Result};
use std::path::Path;

/// Runs the audit and prints it. Ok(true) when a finding is at or above `--fail-on`.
pub fn audit(dir: &Path, a: &AuditArgs) -> Result<bool> {
    super::require_net_admin().context("the audit reads nftables and conntrack over netlink")?;
    let (state, unreadable) = load_state(dir)?;
    let mut o = observe(state)?;
    o.record_unreadable = unreadable;
    if let Some(file) = &a.config {
        o.config = Some(config_state(file, &o.state)?);
    }
    let report = audit::audit(&o);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).context("printing the audit as JSON")?);
    } else {
        print!("{}", audit::render_text(&report));
    }
    Ok(fails(&report, a.fail_on))
}

/// Whether the report has a finding at or above the threshold.
pub fn fails(r: &Report, on: FailOn) -> bool {
    let min = match on {
        FailOn::Info => Severity::Info,
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    };
    r.worst().is_some_and(|w| w >= min)
}

/// `--config FILE`: the state the file describes, addresses allocated as `apply` would (keeping
/// the record's where it can), so only real differences show.
fn config_state(file: &Path, record: &State) -> Result<State> {
    let parsed = super::apply::load_file(file)?;
    crate::config::to_state(&parsed, record).with_context(|| format!("reading {}", file.display()))
}

pub fn graph(dir: &Path) -> Result<()> {
    let state = super::read_state(dir)?;
    print!("{}", graph::dot(&state));
    Ok(())
}

/// The record; when it cannot be used, the state rebuilt from the kernel (so the kernel is
/// audited as usual) and why, for the `state.unreadable` finding.
fn load_state(dir: &Path) -> Result<(State, Option<String>)> {
    let store = Store::open_existing(dir)?;
    let why = match &store {
        Some(s) => match super::load(s)? {
            Ok(st) => return Ok((st, None)),
            Err(why) => why,
        },
        None if super::observe_kernel(None, false)?.is_empty() => return Ok((State::default(), None)),
        None => format!("its directory {} is missing, while netnat's table, links or namespaces exist", dir.display()),
    };
    let rebuilt = crate::recover::rebuild(&super::observe_kernel(store.as_ref(), true)?).state;
    Ok((rebuilt, Some(format!("{}: {why}", dir.join(crate::state::FILE).display()))))
}

/// Reads everything the audit looks at. Fails only when netnat's own view cannot be read.
pub fn observe(state: State) -> Result<Observed> {
    let mut nft = Nft::open()?;
    let table = nft.read_table(TABLE).with_context(|| format!("reading table inet {TABLE}"))?;
    let (chains, rules) = nft.read_all()?;
    let rtnl = Links::open()?;
    let live_links = rtnl.links()?;
    let ra_links = rtnl.ra_route_links().context("listing IPv6 routes learned from router advertisements")?;
    let links: Vec<ObservedLink> = live_links
        .iter()
        .map(|l| ObservedLink {
            name: l.name.clone(),
            kind: l.kind.clone(),
            has_peer: l.peer_index.is_some_and(|i| i != 0) || l.link_netnsid.is_some(),
        })
        .collect();
    let mut sysctls = std::collections::BTreeMap::new();
    let mut keys: Vec<String> = vec![
        audit::SYSCTL_IP_FORWARD.into(),
        audit::SYSCTL_BR_NF.into(),
        audit::SYSCTL_CT_COUNT.into(),
        audit::SYSCTL_CT_MAX.into(),
    ];
    keys.push(crate::linkplan::IP6_FORWARD.into());
    keys.extend(ra_links.iter().map(|l| crate::linkplan::accept_ra_key(l)));
    keys.push(audit::route_localnet_key("all"));
    keys.extend(live_links.iter().map(|l| audit::route_localnet_key(&l.name)));
    for k in keys {
        // A key the kernel does not have (module not loaded) is simply absent.
        if let Ok(v) = sysctl::read(&k) {
            sysctls.insert(k, v);
        }
    }
    let mut listeners: Vec<Listener> = vec![];
    for (file, proto) in [("tcp", Proto::Tcp), ("tcp6", Proto::Tcp), ("udp", Proto::Udp), ("udp6", Proto::Udp)] {
        let path = format!("/proc/net/{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => listeners.extend(audit::parse_proc_net(&text, proto)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        }
    }
    listeners.sort();
    listeners.dedup();
    let legacy_tables = match std::fs::read_to_string("/proc/net/ip_tables_names") {
        Ok(text) => audit::parse_table_names(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e).context("reading /proc/net/ip_tables_names"),
    };
    let filters: Vec<conntrack::Filter> = state
        .mappings
        .iter()
        .map(|m| conntrack::Filter {
            proto: m.protocol.number(),
            dport_min: m.host_port,
            dport_max: m.host_port_end,
            daddr: m.host_ip,
            ipv6: m.family() == crate::model::Family::V6,
        })
        .collect();
    let connections = conntrack::count_many(&filters).context("counting live connections per mapping")?;
    Ok(Observed {
        state,
        table,
        chains,
        rules,
        links,
        sysctls,
        listeners,
        legacy_tables,
        connections,
        ra_links,
        netns: netns::list()?,
        config: None,
        record_unreadable: None,
    })
}
