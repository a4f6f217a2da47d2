//! `apply` and `save`: the declarative side. `apply` reconciles the kernel to a file: the link
//! steps come from `linkplan::plan_links` (record + what the kernel has), the firewall from
//! `ruleset::plan` as one transaction. A failed step is reported and the rest still done.

use super::network::{bring_up_bridge, enable_forwarding, endpoint_spec, restore_sysctls};
use super::ports::{check_host_addresses, flush_conntrack};
use super::reload::write_sysctl_conf;
use super::{read_live_table, Ctx};
use crate::config::{self, problems_error};
use crate::link::{netns, sysctl, Links};
use crate::linkplan::{self, route_localnet_key, LinkOp, Observed, ObservedLink, IP6_FORWARD, IP_FORWARD};
use crate::model::{InputError, Mapping, Sandbox, State};
use crate::ruleset;
use crate::state::Store;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub struct ApplyOptions {
    pub check: bool,
    pub dry_run: bool,
    pub prune: bool,
}

/// Reads, parses and validates a file; every problem is one line of an InputError (exit 2).
pub fn load_file(file: &Path) -> Result<config::Parsed> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| InputError(format!("cannot read {name}: {e}")))?;
    Ok(config::load(&text).map_err(|ps| problems_error(&name, &ps))?)
}

pub fn apply(dir: &Path, file: &Path, o: &ApplyOptions) -> Result<()> {
    let parsed = load_file(file)?;
    if o.check {
        println!("ok");
        return Ok(());
    }
    let mut ctx = if o.dry_run { Ctx::open_unreserved(dir)? } else { Ctx::open(dir)? };
    let wanted = config::to_state(&parsed, &ctx.state)?;
    let (target, extras) = with_extras(wanted, &ctx.state, o.prune)?;
    check_host_addresses(&target.mappings)?;
    if !o.dry_run {
        ctx.reserve_for(&target)?;
    }
    let links = Links::open()?;
    let obs = observe(&links, &target, &ctx.state)?;
    let ops = linkplan::plan_links(&target, &ctx.state, &obs);
    for x in &extras {
        println!("kept (not in {}; --prune removes it): {x}", file.display());
    }

    if o.dry_run {
        let live = read_live_table()?;
        let nft_ops = ruleset::plan(&ruleset::desired(&target), live.as_ref());
        for op in &ops {
            println!("{op}");
        }
        for op in &nft_ops {
            println!("{op}");
        }
        if ops.is_empty() && nft_ops.is_empty() {
            println!("no changes");
        }
        println!("dry run: nothing was changed");
        return Ok(());
    }

    let mut failures: Vec<String> = vec![];
    let mut rec = ctx.state.clone();
    for op in &ops {
        match execute(op, &links, ctx.store(), &mut rec) {
            Ok(()) => println!("{op}"),
            Err(e) => {
                let msg = format!("could not {op}: {e:#}");
                eprintln!("netnat: apply: {msg}");
                failures.push(msg);
            }
        }
    }
    // Firewall-only settings of networks whose links are in place; the endpoints in file order.
    for (name, n) in rec.networks.iter_mut() {
        if let Some(t) = target.networks.get(name).filter(|t| t.bridge == n.bridge && t.pools == n.pools) {
            *n = t.clone();
        }
    }
    for (name, sb) in rec.sandboxes.iter_mut() {
        if let Some(t) = target.sandboxes.get(name) {
            let pos = |net: &str| t.endpoints.iter().position(|e| e.network == net).unwrap_or(usize::MAX);
            sb.endpoints.sort_by_key(|e| pos(&e.network));
        }
    }
    let old_maps = std::mem::replace(&mut rec.mappings, target.mappings.clone());
    ctx.state = rec;
    let nft_ops = match ctx.sync_firewall() {
        Ok(nft_ops) => nft_ops,
        Err(e) => {
            let msg = format!("could not update table inet {}: {e:#}", ruleset::TABLE);
            eprintln!("netnat: apply: {msg}");
            failures.push(msg);
            vec![]
        }
    };
    for op in &nft_ops {
        println!("{op}");
    }
    // Connections tracked before a port changed would keep their old translation.
    let changed: Vec<Mapping> = old_maps
        .iter()
        .filter(|m| !ctx.state.mappings.contains(m))
        .chain(ctx.state.mappings.iter().filter(|m| !old_maps.contains(m)))
        .copied()
        .collect();
    if let Err(e) = flush_conntrack(&changed) {
        failures.push(format!("could not flush conntrack entries of changed ports: {e:#}"));
    }
    if let Err(e) = write_sysctl_conf(&ctx.state) {
        failures.push(format!("{e:#}"));
    }
    ctx.save()?;
    if ops.is_empty() && nft_ops.is_empty() && failures.is_empty() {
        println!("no changes");
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "apply of {} did not finish; run it again once the cause is fixed:\n  - {}",
            file.display(),
            failures.join("\n  - ")
        );
    }
    Ok(())
}

/// The file's state plus, unless pruning, what the record has that the file does not name
/// (listed as `extras`). Clashes between the two are input errors.
fn with_extras(mut t: State, rec: &State, prune: bool) -> Result<(State, Vec<String>)> {
    t.sysctls = rec.sysctls.clone();
    let mut extras = vec![];
    for (name, s) in &rec.sandboxes {
        if let Some(sb) = t.sandboxes.get_mut(name) {
            sb.created = s.created;
        }
    }
    if prune {
        return Ok((t, extras));
    }
    let file_endpoint_ips: BTreeSet<std::net::IpAddr> =
        t.sandboxes.values().flat_map(|s| s.endpoints.iter().flat_map(|e| e.ips.iter().copied())).collect();
    for (name, n) in &rec.networks {
        if !t.networks.contains_key(name) {
            extras.push(format!("network {name}"));
            t.networks.insert(name.clone(), n.clone());
        }
    }
    for (name, s) in &rec.sandboxes {
        match t.sandboxes.get_mut(name) {
            None => {
                extras.push(format!("sandbox {name}"));
                t.sandboxes.insert(name.clone(), s.clone());
            }
            Some(sb) => {
                for e in &s.endpoints {
                    if !sb.endpoints.iter().any(|x| x.network == e.network) {
                        extras.push(format!("endpoint of {name} on {} ({} {})", e.network, e.ifname, e.ips_text()));
                        sb.endpoints.push(e.clone());
                    }
                }
            }
        }
    }
    // A port to an endpoint the file defines belongs to that endpoint's publish list: the file
    // names it, so a port dropped from the list goes. Other ports are kept.
    let file_maps = t.mappings.clone();
    for m in &rec.mappings {
        if !file_endpoint_ips.contains(&m.container_ip) && !file_maps.iter().any(|f| f == m || f.conflicts_with(m)) {
            extras.push(format!("published port {m}"));
            t.mappings.push(*m);
        }
    }
    // What is kept must still fit with what the file asks for.
    let hint = "remove it with --prune, or add it to the file";
    let nets: Vec<_> = t.networks.values().cloned().collect();
    for n in &nets {
        t.check_new_network(n).map_err(|e| InputError(format!("{}; {hint}", e.0)))?;
    }
    for n in &nets {
        let mut seen: BTreeMap<std::net::IpAddr, &str> = BTreeMap::new();
        for (s, e) in t.endpoints_on(&n.name) {
            for ip in &e.ips {
                if let Some(other) = seen.insert(*ip, &s.name) {
                    return Err(InputError(format!(
                        "address {ip} on network {} would be held by both sandbox {other} and sandbox {}; {hint}",
                        n.name, s.name
                    ))
                    .into());
                }
            }
        }
    }
    for s in t.sandboxes.values() {
        let mut names = BTreeSet::new();
        for e in &s.endpoints {
            if !names.insert(&e.ifname) {
                return Err(InputError(format!(
                    "sandbox {} would have two interfaces named {}; {hint}",
                    s.name, e.ifname
                ))
                .into());
            }
        }
    }
    Ok((t, extras))
}

/// What the kernel has of the host namespace, for the objects of `a` and `b`.
pub(super) fn observe(links: &Links, a: &State, b: &State) -> Result<Observed> {
    let all = links.links()?;
    let addrs = links.addrs()?;
    let names: BTreeMap<u32, String> = all.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut obs = Observed::default();
    for l in &all {
        obs.links.insert(
            l.name.clone(),
            ObservedLink {
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

/// Does one step and records its effect in `rec`.
pub(super) fn execute(op: &LinkOp, links: &Links, store: &Store, rec: &mut State) -> Result<()> {
    match op {
        LinkOp::Disconnect { sandbox, endpoint } => {
            links.delete_link(&endpoint.host_ifname)?;
            if let Some(sb) = rec.sandboxes.get_mut(sandbox) {
                sb.endpoints.retain(|e| e.host_ifname != endpoint.host_ifname);
            }
        }
        LinkOp::RemoveSandbox { name, created } => {
            if *created {
                super::delete_netns(store, name)?;
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
            super::create_netns(store, sandbox)?;
            let sb = rec.sandboxes.entry(sandbox.clone()).or_insert_with(|| Sandbox {
                name: sandbox.clone(),
                created: true,
                endpoints: vec![],
            });
            sb.created = true;
        }
        LinkOp::AdoptNamespace { sandbox } => {
            // Made by netnat (a run killed before it saved its record) or by someone else.
            let created = store.owns_netns(sandbox) || super::has_sandbox_alias(sandbox);
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
            super::add_endpoint(
                links,
                &endpoint_spec(network, sandbox, endpoint, default_route),
                &network.name,
                sandbox,
            )?;
            rec.sandboxes.get_mut(sandbox).expect("checked above").endpoints.push(endpoint.clone());
        }
        LinkOp::EnableForwarding { .. } => enable_forwarding(rec)?,
        LinkOp::RestoreSysctls => restore_sysctls(rec)?,
    }
    Ok(())
}

/// `save`: the record as a file `apply` accepts; what the kernel lacks is warned about.
pub fn save(dir: &Path) -> Result<()> {
    let state = super::read_state(dir)?;
    let links = Links::open()?;
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
    for n in &notes {
        eprintln!("netnat: save: warning: {n} (apply recreates it)");
    }
    print!("{}", config::to_toml(&state, &notes));
    Ok(())
}
