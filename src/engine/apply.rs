//! `apply`: the declarative side. It reconciles the kernel to a desired state (a file's): the
//! link steps come from `linkplan::plan_links` (record + what the kernel has), the mappings from
//! the one mapping operation (`mapping::stage`, its planning half, with `Change::Declare`; after
//! the save `mapping::flush_changed`, its follow-up), the firewall from `ruleset::plan` as one
//! transaction that carries the links' table changes and the mappings' together. A failed step
//! is reported and the rest still done.

use super::mapping::{self, Change, Outcome};
use super::{Engine, LinkKernel};
use crate::config;
use crate::linkplan;
use crate::model::{Cidr, Mapping, State};
use crate::ruleset;

/// Element operations larger than this are printed as their first element and a count.
const SUMMARY_OVER: usize = 20;
use crate::validate;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Plan only: the engine must have been opened with `Engine::open_unreserved`.
    pub dry_run: bool,
    /// Remove what the record has and the file does not name.
    pub prune: bool,
}

/// What `apply` did (or, dry, would do).
#[derive(Debug, Default, Serialize)]
pub struct Applied {
    /// What the record has and the file does not name, kept (without `prune`).
    pub kept: Vec<String>,
    /// The link steps and firewall operations done (or planned), in order.
    pub steps: Vec<String>,
    /// Steps that failed; the others were still done. Non-empty: the apply did not finish.
    pub failures: Vec<String>,
    /// Rules of other firewalls that still drop container traffic, with their fix.
    pub warnings: Vec<String>,
    pub dry_run: bool,
}

/// Makes the kernel and the record what `parsed` describes (plus, without `prune`, what the
/// record has that it does not name). Link steps go one by one; the firewall is one transaction.
pub fn apply(e: &mut Engine, parsed: &config::Parsed, o: ApplyOptions) -> Result<Applied> {
    let wanted = config::to_state(parsed, &e.state)?;
    let (target, kept) = with_extras(wanted, &e.state, o.prune)?;
    let (target, mapped) = stage_mappings(&e.state, target, e.kernel.links.as_mut())?;
    if !o.dry_run {
        e.reserve_for(&target)?;
    }
    let obs = e.kernel.links.observe(&target, &e.state)?;
    let ops = linkplan::plan_links(&target, &e.state, &obs);
    let mut out = Applied { kept, dry_run: o.dry_run, ..Applied::default() };
    if o.dry_run {
        let live = e.kernel.firewall.read_table()?;
        let plan = ruleset::plan(&ruleset::desired(&target), live.as_ref());
        out.steps.extend(ops.iter().map(|op| op.to_string()));
        out.steps.extend(plan.ops().iter().map(|op| op.to_string()));
        return Ok(out);
    }
    let mut rec = e.state.clone();
    for op in &ops {
        match e.kernel.links.execute(op, &e.store, &mut rec) {
            Ok(_) => out.steps.push(op.to_string()),
            Err(err) => out.failures.push(format!("could not {op}: {err:#}")),
        }
    }
    take_firewall_settings(&mut rec, &target);
    rec.mappings = target.mappings.clone();
    rec.allow = target.allow.clone();
    e.state = rec;
    match e.sync_firewall_ops() {
        // A large element operation as its first element and a count (`--dry-run` lists them all).
        Ok(ops) => out.steps.extend(ops.iter().map(|op| ruleset::op_summary(op, SUMMARY_OVER))),
        Err(err) => out.failures.push(format!("could not update table inet {}: {err:#}", ruleset::TABLE)),
    }
    let fw = crate::hostfw::sync(&mut e.state, e.kernel.firewall.foreign());
    out.steps.extend(fw.steps);
    out.warnings = fw.warnings;
    e.save()?;
    // Step 4 of the engine's order: connections tracked before a port changed would keep their
    // old translation; the drop-in keeps systemd-sysctl from reverting the sysctls.
    // TCP is not flushed: a port the file gives a new target keeps its established connections
    // on the old one until they end (as `publish --replace`).
    if let Err(err) = mapping::flush_changed(&mapped) {
        out.failures.push(format!("could not flush conntrack entries of changed ports: {err:#}"));
    }
    if let Err(err) = e.kernel.links.write_conf(&e.state) {
        out.failures.push(format!("{err:#}"));
    }
    Ok(out)
}

/// The file's mappings through the one mapping operation's planning half (`mapping::stage`):
/// the command line's mappings become the file's (a host port with a new target is switched),
/// the attachments' stay; the same conflict check, validation and host checks as `publish`.
fn stage_mappings(rec: &State, target: State, links: &mut dyn LinkKernel) -> Result<(State, Outcome)> {
    let owned: HashSet<&Mapping> = target.attachments.values().flat_map(|a| &a.mappings).collect();
    let lists: HashMap<&Mapping, &[Cidr]> = target.allow.iter().map(|a| (&a.mapping, a.from.as_slice())).collect();
    let maps: Vec<(Mapping, Vec<Cidr>)> = target
        .mappings
        .iter()
        .filter(|m| !owned.contains(m))
        .map(|m| (*m, lists.get(m).map(|l| l.to_vec()).unwrap_or_default()))
        .collect();
    let base = State { mappings: rec.mappings.clone(), allow: rec.allow.clone(), ..target };
    // Notes on interfaces that do not exist yet are `publish`'s; `apply` reports its steps.
    let (want, out) = mapping::stage(&base, links, &Change::Declare { maps })?;
    Ok((want, Outcome { notes: vec![], ..out }))
}

/// Firewall-only settings of networks whose links are in place; the endpoints in file order.
fn take_firewall_settings(rec: &mut State, target: &State) {
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
}

/// The file's state plus, unless pruning, what the record has that the file does not name
/// (listed as `extras`). Clashes between the two are input errors.
fn with_extras(mut t: State, rec: &State, prune: bool) -> Result<(State, Vec<String>)> {
    t.sysctls = rec.sysctls.clone();
    // Ports of CNI containers belong to the container runtime: kept whatever the file says
    // (--prune included), with their owners.
    t.attachments = rec.attachments.clone();
    // Networks and endpoints another program owns (Docker's) are its own in the same way.
    t.handoffs = rec.handoffs.clone();
    for (name, n) in rec.networks.iter().filter(|(_, n)| n.owner.is_some()) {
        t.networks.entry(name.clone()).or_insert_with(|| n.clone());
    }
    for m in rec.mappings.iter().filter(|m| rec.owner_of(m).is_some()) {
        if !t.mappings.contains(m) {
            t.mappings.push(*m);
            t.set_allow(m, rec.allow_of(m).to_vec());
        }
    }
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
            t.set_allow(m, rec.allow_of(m).to_vec());
        }
    }
    // What is kept must still fit with what the file asks for.
    validate::ensure(&t, "remove it with --prune, or add it to the file")?;
    Ok((t, extras))
}
