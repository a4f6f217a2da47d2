//! What the engine reads of the kernel without changing it: the audit's and the metrics'
//! observation, what netnat's marks say it made (`recover`, `reset`), what the record names that
//! the kernel lacks. Everything goes through the kernel seam (`seam::Kernel`), so the observers
//! run on the fakes in unit tests.

use super::seam::{Kernel, LinkKernel};
use crate::audit::{self, Listener, Observed, ObservedLink};
use crate::conntrack;
use crate::host;
use crate::link::{netns, sysctl};
use crate::model::{Proto, State};
use crate::recover::{self as rebuild, KernelView, Mark};
use crate::ruleset::TABLE;
use crate::state::Store;
use anyhow::{Context, Result};
use std::path::Path;

/// The record and what the kernel holds, for the audit: when the record cannot be used, the
/// state rebuilt from the kernel (so the kernel is audited as usual) and why
/// (`record_unreadable`, the `state.unreadable` finding).
pub fn observe_audit(dir: &Path, kernel: &mut Kernel) -> Result<Observed> {
    observe_in(dir, kernel, Sockets::Read)
}

/// As `observe_audit`, for `netnat metrics`, without the listening sockets: only warnings
/// (`conflict.local-listener`) need them, and /proc/net walks every socket of the machine.
pub fn observe_metrics(dir: &Path, kernel: &mut Kernel) -> Result<Observed> {
    observe_in(dir, kernel, Sockets::Skip)
}

/// Whether the listening sockets are read (from /proc/net).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sockets {
    Read,
    Skip,
}

fn observe_in(dir: &Path, kernel: &mut Kernel, sockets: Sockets) -> Result<Observed> {
    let (state, unreadable) = load_state(dir, kernel)?;
    let mut o = observe(state, kernel, sockets)?;
    o.record_unreadable = unreadable;
    if !super::trace::running(dir) {
        o.trace_leftover = o.table.as_ref().map(crate::trace::trace_chains_in).unwrap_or_default();
    }
    Ok(o)
}

/// Finds the process of each listening socket (by its inode among /proc/PID/fd), so the audit
/// can tell a container runtime's port reservation from a real local server. Processes that
/// cannot be read (gone, or another user's) are skipped.
fn name_listeners(listeners: &mut [Listener]) {
    let wanted: std::collections::HashSet<u64> = listeners.iter().map(|l| l.inode).filter(|i| *i != 0).collect();
    if wanted.is_empty() {
        return;
    }
    let mut names: std::collections::HashMap<u64, String> = Default::default();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|i| i.parse().ok())
            else {
                continue;
            };
            if wanted.contains(&inode) && !names.contains_key(&inode) {
                if let Ok(comm) = std::fs::read_to_string(p.path().join("comm")) {
                    names.insert(inode, comm.trim().to_string());
                }
            }
        }
    }
    for l in listeners.iter_mut() {
        l.process = names.get(&l.inode).cloned();
    }
}

/// The listening TCP sockets and bound UDP sockets of this namespace, with the process that
/// holds each when it can be found.
pub fn listeners() -> Result<Vec<Listener>> {
    let mut listeners: Vec<Listener> = vec![];
    let files = [("tcp", Proto::Tcp), ("tcp6", Proto::Tcp), ("udp", Proto::Udp), ("udp6", Proto::Udp)];
    for (file, proto) in files {
        let path = format!("/proc/net/{file}");
        match std::fs::read_to_string(&path) {
            Ok(text) => listeners.extend(audit::parse_proc_net(&text, proto)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        }
    }
    name_listeners(&mut listeners);
    listeners.sort();
    listeners.dedup();
    Ok(listeners)
}

/// What the record names that the kernel lacks (for `save`, which still writes it: `apply`
/// recreates it).
pub fn missing_links(links: &mut dyn LinkKernel, state: &State) -> Result<Vec<String>> {
    let all = links.links()?;
    let kind = |name: &str| all.iter().find(|l| l.name == name).map(|l| l.kind.clone().unwrap_or_default());
    let mut notes = vec![];
    for n in state.networks.values() {
        match kind(&n.bridge) {
            Some(k) if k == "bridge" => {}
            Some(k) => notes.push(format!("network {}: {} is a {k}, not a bridge", n.name, n.bridge)),
            None => notes.push(format!("network {}: bridge {} is missing in the kernel", n.name, n.bridge)),
        }
    }
    for s in state.sandboxes.values() {
        if !netns::exists(&s.name) {
            notes.push(format!("sandbox {}: namespace {} is missing", s.name, netns::path(&s.name).display()));
        }
        for e in &s.endpoints {
            if kind(&e.host_ifname).is_none() {
                notes.push(format!("sandbox {}: veth {} to {} is missing", s.name, e.host_ifname, e.network));
            }
        }
    }
    Ok(notes)
}

/// What the kernel holds of netnat's (see `recover`): marked bridges and veths, the veths'
/// peers, namespaces netnat created, and table `inet netnat` (with its elements if `elements`).
pub fn observe_kernel(kernel: &mut Kernel, store: Option<&Store>, elements: bool) -> Result<KernelView> {
    let links = kernel.links.as_mut();
    let addrs = links.addrs()?;
    let mut k = KernelView::default();
    let addrs_of =
        |index: u32| -> Vec<_> { addrs.iter().filter(|a| a.index == index).map(|a| (a.addr, a.prefix)).collect() };
    for (l, alias) in links.aliased_links()? {
        match (rebuild::parse_alias(&alias), l.kind.as_deref()) {
            (Some(Mark::Network(network)), Some("bridge")) => {
                k.bridges.push(rebuild::BridgeSeen { network, name: l.name.clone(), addrs: addrs_of(l.index) })
            }
            (Some(Mark::Endpoint { network, sandbox }), Some("veth")) => {
                let peer = if elements { find_peer(links, &sandbox, l.index) } else { None };
                k.veths.push(rebuild::VethSeen { name: l.name.clone(), network, sandbox, peer });
            }
            _ => {}
        }
    }
    for name in netns::list()? {
        if store.is_some_and(|s| s.owns_netns(&name)) || sandbox_marked(links, &name) {
            k.made_namespaces.push(name);
        }
    }
    let fw = kernel.firewall.as_mut();
    let table = if elements { fw.read_table()? } else { fw.read_layout()? };
    // A table `netnat trace` made for itself holds nothing of netnat's.
    k.table = table.and_then(|t| crate::trace::without_trace(&t));
    k.ip_forward = sysctl::read(host::IP_FORWARD).ok();
    Ok(k)
}

/// The sandbox end of the veth whose host end has index `host_index`: its name and addresses.
fn find_peer(links: &mut dyn LinkKernel, sandbox: &str, host_index: u32) -> Option<rebuild::PeerSeen> {
    if !netns::exists(sandbox) {
        return None;
    }
    let mut inside = links.in_sandbox(sandbox).ok()?;
    let peer = inside
        .links()
        .ok()?
        .into_iter()
        .find(|l| l.kind.as_deref() == Some("veth") && l.peer_index == Some(host_index))?;
    let addrs =
        inside.addrs().ok()?.into_iter().filter(|a| a.index == peer.index).map(|a| (a.addr, a.prefix)).collect();
    Some(rebuild::PeerSeen { ifname: peer.name, addrs })
}
/// The record; when it cannot be used, the state rebuilt from the kernel (so the kernel is
/// audited as usual) and why, for the `state.unreadable` finding.
fn load_state(dir: &Path, kernel: &mut Kernel) -> Result<(State, Option<String>)> {
    let store = Store::open_existing(dir)?;
    let why = match &store {
        Some(s) => match super::load(s, kernel)? {
            Ok(st) => return Ok((st, None)),
            Err(why) => why,
        },
        None if observe_kernel(kernel, None, false)?.is_empty() => return Ok((State::default(), None)),
        None => format!("its directory {} is missing, while netnat's table, links or namespaces exist", dir.display()),
    };
    let rebuilt = crate::recover::rebuild(&observe_kernel(kernel, store.as_ref(), true)?).state;
    Ok((rebuilt, Some(format!("{}: {why}", dir.join(crate::state::FILE).display()))))
}

/// Reads everything the audit looks at. Fails only when netnat's own view cannot be read.
fn observe(state: State, kernel: &mut Kernel, sockets: Sockets) -> Result<Observed> {
    let fw = kernel.firewall.as_mut();
    let table = fw.read_table().with_context(|| format!("reading table inet {TABLE}"))?;
    let (chains, rules) = fw.read_others()?;
    // Asking firewalld and ufw takes a D-Bus round trip and a ufw run: the audit only.
    let host_firewall = (sockets == Sockets::Read).then(|| {
        crate::hostfw::observe(&crate::hostfw::Kernel { chains: chains.clone(), rules: rules.clone() }, fw.foreign())
    });
    let rtnl = kernel.links.as_mut();
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
    let mut keys: Vec<String> =
        [host::IP_FORWARD, host::BR_NF_CALL_IPTABLES, host::CT_COUNT, host::CT_MAX, host::IP6_FORWARD]
            .map(String::from)
            .to_vec();
    keys.extend(ra_links.iter().map(|l| host::accept_ra_key(l)));
    keys.push(host::route_localnet_key("all"));
    keys.extend(live_links.iter().map(|l| host::route_localnet_key(&l.name)));
    for k in keys {
        // A key the kernel does not have (module not loaded) is simply absent.
        if let Ok(v) = sysctl::read(&k) {
            sysctls.insert(k, v);
        }
    }
    let listeners = match sockets {
        Sockets::Read => listeners()?,
        Sockets::Skip => vec![],
    };
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
    // No mapping, nothing to count: conntrack is not asked (it needs CAP_NET_ADMIN).
    let connections = match filters.is_empty() {
        true => vec![],
        false => conntrack::count_many(&filters).context("counting live connections per mapping")?,
    };
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
        trace_leftover: vec![],
        host_firewall,
    })
}

/// The namespace's lo carries netnat's sandbox mark: netnat created it.
fn sandbox_marked(links: &mut dyn LinkKernel, name: &str) -> bool {
    let want = Mark::Sandbox(name.into());
    links
        .in_sandbox(name)
        .and_then(|mut inside| inside.aliased_links())
        .is_ok_and(|v| v.iter().any(|(l, a)| l.name == "lo" && rebuild::parse_alias(a) == Some(want.clone())))
}
