//! `netnat audit` (pure): what the kernel has, compared with what netnat recorded and would
//! program, and with everything else on the host that can change what happens to its packets.
//!
//! [`Observed`] is plain data gathered elsewhere (`engine::observe_audit`); [`audit`] turns it
//! into [`Finding`]s with stable ids, so every check is unit-tested with hand-built values.
//! The text parsers for /proc files live here too, for the same reason.

mod drift;
mod exposure;
mod foreign;
mod host;

use crate::model::{Cidr, Mapping, State};
use crate::nft::family::family_name;
use crate::nft::family::FAMILY_INET;
use crate::nft::{LiveChain, LiveRule, LiveTable};
use crate::ruleset::TABLE;
use drift::{drift, drift_config};
use exposure::{bypassed_input_firewalls, inventory, mapping_reports};
pub use exposure::{mapping_views, MappingView};
use foreign::{conflicts, foreign_nat};
use host::{host, host_firewalls, leftovers};
pub use host::{is_netnat_veth_name, parse_proc_net, parse_table_names};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

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
    pub host_firewall: Option<crate::hostfw::Observed>,
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
    /// Connections translated (counted once each, at DNAT).
    pub connections_total: u64,
    /// Packets and bytes, both directions (with `counting = packets`; null otherwise).
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// Live connections (conntrack entries) now.
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

fn chain_label(family: u32, table: &str, chain: &str) -> String {
    format!("{} {table} {chain}", family_name(family))
}

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

/// Whether a chain, rule or set of `table` in netfilter family `family` is netnat's own.
fn own_table(table: &str, family: u32) -> bool {
    table == TABLE && family == FAMILY_INET
}

#[cfg(test)]
mod tests;
