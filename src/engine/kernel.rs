//! The kernel side of the engine: what netnat owns in the kernel (namespaces, bridges, veth
//! endpoints and their marks), the link steps of a plan, and what the audit and `recover` read.

use crate::audit::{self, Listener, Observed, ObservedLink};
use crate::conntrack;
use crate::host::{self, route_localnet_key, IP6_FORWARD, IP_FORWARD};
use crate::link::{netns, sysctl, EndpointSpec, Links};
use crate::linkplan::{self, bridge_addrs, LinkOp};
use crate::model::{Endpoint, Network, Proto, Sandbox, State};
use crate::nft::Nft;
use crate::recover::{self as rebuild, KernelView, Mark};
use crate::ruleset::TABLE;
use crate::state::Store;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The record and what the kernel holds, for the audit: when the record cannot be used, the
/// state rebuilt from the kernel (so the kernel is audited as usual) and why
/// (`record_unreadable`, the `state.unreadable` finding).
pub fn observe_audit(dir: &Path) -> Result<Observed> {
    observe_in(dir, Sockets::Read)
}

/// As `observe_audit`, for `netnat metrics`, without the listening sockets: only warnings
/// (`conflict.local-listener`) need them, and /proc/net walks every socket of the machine.
pub fn observe_metrics(dir: &Path) -> Result<Observed> {
    observe_in(dir, Sockets::Skip)
}

/// Whether the listening sockets are read (from /proc/net).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sockets {
    Read,
    Skip,
}

fn observe_in(dir: &Path, sockets: Sockets) -> Result<Observed> {
    let (state, unreadable) = load_state(dir)?;
    let mut o = observe(state, sockets)?;
    o.record_unreadable = unreadable;
    if !super::trace::running(dir) {
        o.trace_leftover = o.table.as_ref().map(crate::trace::trace_chains_in).unwrap_or_default();
    }
    Ok(o)
}

/// Bridge with its gateway addresses, up, and route_localnet so the host's own 127.0.0.1
/// connections to a published port can be DNAT'd onto it (only this interface gets it).
pub fn bring_up_bridge(links: &Links, net: &Network) -> Result<()> {
    links.ensure_bridge(&net.bridge, &bridge_addrs(net))?;
    links.set_alias(&net.bridge, &crate::recover::network_alias(&net.name))?;
    host::enable_route_localnet(&net.bridge)
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
pub fn missing_links(state: &State) -> Result<Vec<String>> {
    let all = Links::open()?.links()?;
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

/// What the link adapter needs to wire `ep` of `sandbox` into `net`.
pub(super) fn endpoint_spec<'a>(
    net: &'a Network,
    sandbox: &str,
    ep: &'a Endpoint,
    default_route: bool,
) -> EndpointSpec<'a> {
    let prefix = |ip: &IpAddr| net.pools.iter().find(|p| p.subnet.contains(*ip)).map(|p| p.subnet.prefix);
    EndpointSpec {
        bridge: &net.bridge,
        host_ifname: &ep.host_ifname,
        netns_path: netns::path(sandbox),
        ifname: &ep.ifname,
        addrs: ep.ips.iter().filter_map(|ip| Some((*ip, prefix(ip)?))).collect(),
        gateways: net.pools.iter().map(|p| p.gateway).collect(),
        default_route,
    }
}

/// Creates the sandbox namespace `name`, or takes the existing one. Returns whether it is
/// netnat's own (made now, or made earlier by a netnat command that was killed before saving).
pub fn create_netns(store: &Store, name: &str) -> Result<bool> {
    if netns::exists(name) {
        return Ok(store.owns_netns(name) || has_sandbox_alias(name));
    }
    store.mark_netns(name)?;
    netns::create(name)?;
    // The kernel's own mark, for when the state directory is lost (see `recover`).
    let alias = Links::open_in(&netns::path(name)).and_then(|l| l.set_alias("lo", &rebuild::sandbox_alias(name)));
    if let Err(e) = alias {
        let _ = delete_netns(store, name);
        return Err(e);
    }
    Ok(true)
}

/// The namespace's lo carries netnat's sandbox alias: netnat created it.
pub fn has_sandbox_alias(name: &str) -> bool {
    let want = Mark::Sandbox(name.into());
    Links::open_in(&netns::path(name))
        .and_then(|l| l.aliased_links())
        .is_ok_and(|v| v.iter().any(|(l, a)| l.name == "lo" && rebuild::parse_alias(a) == Some(want.clone())))
}

/// Wires an endpoint (see `Links::add_endpoint`) and marks its host end as netnat's, for
/// `recover` and `reset`; a failure leaves nothing behind.
pub fn add_endpoint(links: &Links, spec: &EndpointSpec, network: &str, sandbox: &str) -> Result<()> {
    links.add_endpoint(spec)?;
    if let Err(e) = links.set_alias(spec.host_ifname, &rebuild::endpoint_alias(network, sandbox)) {
        let _ = links.delete_link(spec.host_ifname);
        return Err(e);
    }
    Ok(())
}

/// Removes a namespace netnat made, and its ownership mark.
pub fn delete_netns(store: &Store, name: &str) -> Result<bool> {
    let existed = netns::delete(name)?;
    store.unmark_netns(name)?;
    Ok(existed)
}

/// What the kernel has of the host namespace, for the objects of `a` and `b`.
pub(super) fn observe_links(links: &Links, a: &State, b: &State) -> Result<linkplan::Observed> {
    let all = links.links()?;
    let addrs = links.addrs()?;
    let names: BTreeMap<u32, String> = all.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut obs = linkplan::Observed::default();
    for l in &all {
        obs.links.insert(
            l.name.clone(),
            linkplan::ObservedLink {
                kind: l.kind.clone(),
                up: l.up,
                master: l.master.and_then(|i| names.get(&i).cloned()),
                addrs: addrs.iter().filter(|x| x.index == l.index).map(|x| (x.addr, x.prefix)).collect(),
            },
        );
    }
    for name in a.sandboxes.keys().chain(b.sandboxes.keys()) {
        if netns::exists(name) {
            obs.namespaces.insert(name.clone());
        }
    }
    let mut keys: Vec<String> = [IP_FORWARD, IP6_FORWARD].map(String::from).to_vec();
    keys.extend(
        a.networks.values().filter(|n| obs.links.contains_key(&n.bridge)).map(|n| route_localnet_key(&n.bridge)),
    );
    for k in keys {
        if let Ok(v) = sysctl::read(&k) {
            obs.sysctls.insert(k, v);
        }
    }
    Ok(obs)
}

/// Does one step and records its effect in `rec`. Returns notes on host settings changed on the
/// side (accept_ra of interfaces that learn routes from RAs, when forwarding goes on).
pub(super) fn execute(op: &LinkOp, links: &Links, store: &Store, rec: &mut State) -> Result<Vec<String>> {
    match op {
        LinkOp::Disconnect { sandbox, endpoint } => {
            links.delete_link(&endpoint.host_ifname)?;
            if let Some(sb) = rec.sandboxes.get_mut(sandbox) {
                sb.endpoints.retain(|e| e.host_ifname != endpoint.host_ifname);
            }
        }
        LinkOp::RemoveSandbox { name, created } => {
            if *created {
                delete_netns(store, name)?;
            }
            rec.sandboxes.remove(name);
        }
        LinkOp::RemoveNetwork { network } => {
            links.delete_link(&network.bridge)?;
            rec.networks.remove(&network.name);
        }
        LinkOp::CreateBridge { network } | LinkOp::RepairBridge { network } => {
            bring_up_bridge(links, network)
                .with_context(|| format!("setting up bridge {} of network {}", network.bridge, network.name))?;
            rec.networks.insert(network.name.clone(), network.clone());
        }
        LinkOp::CreateNamespace { sandbox } => {
            create_netns(store, sandbox)?;
            let sb = rec.sandboxes.entry(sandbox.clone()).or_insert_with(|| Sandbox {
                name: sandbox.clone(),
                created: true,
                endpoints: vec![],
            });
            sb.created = true;
        }
        LinkOp::AdoptNamespace { sandbox } => {
            // Made by netnat (a run killed before it saved its record) or by someone else.
            let created = store.owns_netns(sandbox) || has_sandbox_alias(sandbox);
            rec.sandboxes.entry(sandbox.clone()).or_insert_with(|| Sandbox {
                name: sandbox.clone(),
                created,
                endpoints: vec![],
            });
        }
        LinkOp::Connect { sandbox, network, endpoint, default_route } => {
            if rec.networks.get(&network.name) != Some(network) {
                anyhow::bail!("skipped: network {} is not in place (see above)", network.name);
            }
            let Some(sb) = rec.sandboxes.get(sandbox) else {
                anyhow::bail!("skipped: sandbox {sandbox} is not in place (see above)");
            };
            // Another endpoint of the sandbox may already carry the default route.
            let default_route = *default_route && sb.endpoints.is_empty();
            add_endpoint(links, &endpoint_spec(network, sandbox, endpoint, default_route), &network.name, sandbox)?;
            rec.sandboxes.get_mut(sandbox).expect("checked above").endpoints.push(endpoint.clone());
        }
        LinkOp::EnableForwarding { .. } => return host::enable_forwarding(rec),
        LinkOp::RestoreSysctls => host::restore(rec)?,
    }
    Ok(vec![])
}

/// What the kernel holds of netnat's (see `recover`): marked bridges and veths, the veths'
/// peers, namespaces netnat created, and table `inet netnat` (with its elements if `elements`).
pub fn observe_kernel(store: Option<&Store>, elements: bool) -> Result<KernelView> {
    let links = Links::open()?;
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
                let peer = if elements { find_peer(&sandbox, l.index) } else { None };
                k.veths.push(rebuild::VethSeen { name: l.name.clone(), network, sandbox, peer });
            }
            _ => {}
        }
    }
    for name in netns::list()? {
        if store.is_some_and(|s| s.owns_netns(&name)) || has_sandbox_alias(&name) {
            k.made_namespaces.push(name);
        }
    }
    let mut nft = Nft::open()?;
    let table = if elements { nft.read_table(TABLE)? } else { nft.read_layout(TABLE)? };
    // A table `netnat trace` made for itself holds nothing of netnat's.
    k.table = table.and_then(|t| crate::trace::without_trace(&t));
    k.ip_forward = sysctl::read(host::IP_FORWARD).ok();
    Ok(k)
}

/// The sandbox end of the veth whose host end has index `host_index`: its name and addresses.
fn find_peer(sandbox: &str, host_index: u32) -> Option<rebuild::PeerSeen> {
    if !netns::exists(sandbox) {
        return None;
    }
    let inside = Links::open_in(&netns::path(sandbox)).ok()?;
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
fn load_state(dir: &Path) -> Result<(State, Option<String>)> {
    let store = Store::open_existing(dir)?;
    let why = match &store {
        Some(s) => match super::load(s)? {
            Ok(st) => return Ok((st, None)),
            Err(why) => why,
        },
        None if observe_kernel(None, false)?.is_empty() => return Ok((State::default(), None)),
        None => format!("its directory {} is missing, while netnat's table, links or namespaces exist", dir.display()),
    };
    let rebuilt = crate::recover::rebuild(&observe_kernel(store.as_ref(), true)?).state;
    Ok((rebuilt, Some(format!("{}: {why}", dir.join(crate::state::FILE).display()))))
}

/// Reads everything the audit looks at. Fails only when netnat's own view cannot be read.
fn observe(state: State, sockets: Sockets) -> Result<Observed> {
    let mut nft = Nft::open()?;
    let table = nft.read_table(TABLE).with_context(|| format!("reading table inet {TABLE}"))?;
    let (chains, rules) = nft.read_all()?;
    // Asking firewalld and ufw takes a D-Bus round trip and a ufw run: the audit only.
    let host_firewall = (sockets == Sockets::Read)
        .then(|| crate::hostfw::observe(&crate::hostfw::Kernel { chains: chains.clone(), rules: rules.clone() }));
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
        trace_leftover: vec![],
        host_firewall,
    })
}
