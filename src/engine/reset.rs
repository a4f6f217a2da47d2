//! `reset`: remove everything netnat made, and nothing else. What netnat made is the union of its
//! record and of what carries netnat's marks in the kernel (see `recover`), so a reset also works
//! when the record is damaged or lost, and finds what a killed command made but never recorded.

use super::observe::observe_kernel;
use super::{Damage, Engine};
use crate::linkplan::LinkOp;
use crate::model::State;
use crate::ruleset::{NftOp, TABLE};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(Debug, Serialize)]
pub struct Reset {
    pub networks: usize,
    pub sandboxes: usize,
    pub mappings: usize,
    pub had_table: bool,
    /// Why the record could not be used (what was removed was found by its marks in the kernel).
    pub damaged: Option<String>,
    /// Where the damaged record was kept.
    pub kept: Option<PathBuf>,
}

/// Removes everything netnat made; the engine must come from `Engine::open_any` (with `damage`).
pub fn reset(mut ctx: Engine, damage: Option<Damage>) -> Result<Reset> {
    let marked = observe_kernel(&mut ctx.kernel, Some(&ctx.store), false)?;
    let st = &ctx.state;
    let veths: BTreeSet<String> = st
        .sandboxes
        .values()
        .flat_map(|s| s.endpoints.iter().map(|e| e.host_ifname.clone()))
        .chain(marked.veths.iter().map(|v| v.name.clone()))
        .collect();
    // Namespaces netnat made: recorded as made, marked in the kernel, or marked before creation
    // (a command killed half-way).
    let namespaces: BTreeSet<String> = st
        .sandboxes
        .values()
        .filter(|s| s.created)
        .map(|s| s.name.clone())
        .chain(marked.made_namespaces.iter().cloned())
        .chain(ctx.store().owned_netns())
        .collect();
    let bridges: BTreeSet<String> =
        st.networks.values().map(|n| n.bridge.clone()).chain(marked.bridges.iter().map(|b| b.name.clone())).collect();
    // Keep going on failure and report everything at the end: a half-done reset is worse than
    // one that says exactly what it could not remove.
    let mut failures: Vec<String> = vec![];
    // Host firewalls first (firewalld unbinds bridges that still exist), then netnat's table.
    failures.extend(crate::hostfw::remove_all(&mut ctx.state, ctx.kernel.firewall.foreign()));
    let mut note = |r: Result<bool>, what: String| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e:#}"));
        }
    };
    // Firewall first, while the links it names still exist.
    let (fw, links) = (ctx.kernel.firewall.as_mut(), ctx.kernel.links.as_mut());
    let had_table = fw.read_table()?.is_some();
    if had_table {
        note(fw.apply(&[NftOp::DelTable]).map(|_| true), format!("deleting table inet {TABLE}"));
    }
    for v in &veths {
        note(links.delete_link(v), format!("deleting veth {v}"));
    }
    for name in &namespaces {
        let op = LinkOp::RemoveSandbox { name: name.clone(), created: true };
        note(links.execute(&op, &ctx.store, &mut State::default()).map(|_| true), format!("deleting namespace {name}"));
    }
    for b in &bridges {
        note(links.delete_link(b), format!("deleting bridge {b}"));
    }
    note(links.execute(&LinkOp::RestoreSysctls, &ctx.store, &mut ctx.state).map(|_| true), "restoring sysctls".into());
    note(links.write_conf(&State::default()).map(|_| true), "removing the sysctl.d drop-in".into());
    let (n, s, m) = (ctx.state.networks.len(), ctx.state.sandboxes.len(), ctx.state.mappings.len());
    if !failures.is_empty() {
        anyhow::bail!("reset left things behind:\n  - {}", failures.join("\n  - "));
    }
    let kept = match &damage {
        Some(_) => ctx.store().keep_damaged()?,
        None => None,
    };
    ctx.state = State::default();
    ctx.save()?;
    Ok(Reset { networks: n, sandboxes: s, mappings: m, had_table, damaged: damage.map(|d| d.why), kept })
}
