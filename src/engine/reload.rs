//! `reload`: put netnat's firewall and sysctls back from the record, e.g. after
//! `nft flush ruleset` (an nftables.service restart, a firewalld reload) or a systemd-sysctl run.

use super::Engine;
use crate::host;
use crate::model::Counting;
use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// Operations of the firewall transaction (0: the table was in place).
    pub operations: usize,
    /// Bridges the record names that the kernel lacks (`apply` recreates them).
    pub missing: Vec<String>,
    /// Host settings changed on the side (accept_ra of interfaces that learn routes from RAs).
    pub notes: Vec<String>,
    /// Rules of other firewalls that still drop container traffic, with their fix.
    pub warnings: Vec<String>,
}

pub fn reload(e: &mut Engine) -> Result<Reloaded> {
    let plan = e.sync_firewall()?;
    let mut missing = vec![];
    let mut notes = vec![];
    if !e.state.networks.is_empty() {
        notes.extend(host::enable_forwarding(&mut e.state, &mut || e.kernel.links.ra_route_links())?);
        let links = e.kernel.links.links()?;
        for n in e.state.networks.values() {
            match links.iter().find(|l| l.name == n.bridge) {
                Some(l) if l.kind.as_deref() == Some("bridge") => host::enable_route_localnet(&n.bridge)?,
                _ => missing.push(format!("bridge {} of network {}", n.bridge, n.name)),
            }
        }
    }
    e.kernel.links.write_conf(&e.state)?;
    // A host firewall that started (or reloaded) since: opened again through its hook.
    let fw = crate::hostfw::sync(&mut e.state, e.kernel.firewall.foreign());
    notes.extend(fw.steps);
    e.save()?;
    Ok(Reloaded { operations: plan.ops().len(), missing, notes, warnings: fw.warnings })
}

/// What `counting` changed.
#[derive(Debug, Serialize)]
pub struct CountingSet {
    pub counting: Counting,
    pub was: Counting,
    /// Operations of the firewall transaction (0: nothing to change).
    pub operations: usize,
}

/// `counting MODE`: what the per-mapping counters count. The table's rules and counting
/// elements change in one transaction; the connection counters (the NAT maps' elements) keep
/// counting across the change, packet and byte counters start at zero when turned on.
pub fn set_counting(e: &mut Engine, mode: Counting) -> Result<CountingSet> {
    let was = e.state.counting;
    e.state.counting = mode;
    let plan = e.sync_firewall()?;
    e.save()?;
    Ok(CountingSet { counting: mode, was, operations: plan.ops().len() })
}
