//! The kernel side of the engine over rtnetlink, behind `seam::NetlinkLinks`: what netnat owns
//! in the kernel (namespaces, bridges, veth endpoints and their marks) and the link steps of a
//! plan. What the engine only reads is in `observe`.
//!
//! A sandbox's namespace is reached with its own handle (`Links::open_in`), opened here where a
//! step needs it (its mark on lo): a trait for it would only pass the path through.

use crate::host::{self, route_localnet_key, IP6_FORWARD, IP_FORWARD};
use crate::link::{netns, sysctl, EndpointSpec, Links};
use crate::linkplan::{self, bridge_addrs, LinkOp};
use crate::model::{Endpoint, Network, Sandbox, State};
use crate::recover::{self as rebuild, Mark};
use crate::state::Store;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Bridge with its gateway addresses, up, and route_localnet so the host's own 127.0.0.1
/// connections to a published port can be DNAT'd onto it (only this interface gets it).
pub fn bring_up_bridge(links: &Links, net: &Network) -> Result<()> {
    links.ensure_bridge(&net.bridge, &bridge_addrs(net))?;
    links.set_alias(&net.bridge, &crate::recover::network_alias(&net.name))?;
    host::enable_route_localnet(&net.bridge)
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
        LinkOp::EnableForwarding { .. } => return host::enable_forwarding(rec, &mut || links.ra_route_links()),
        LinkOp::RestoreSysctls => host::restore(rec)?,
    }
    Ok(vec![])
}
