//! `reset`: remove everything netnat made, and nothing else.

use super::network::restore_sysctls;
use super::{delete_netns, read_live_table, Ctx};
use crate::link::Links;
use crate::model::State;
use crate::nft::Nft;
use crate::ruleset::{NftOp, TABLE};
use anyhow::Result;
use std::path::Path;

pub fn reset(dir: &Path) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let links = Links::open()?;
    // Keep going on failure and report everything at the end: a half-done reset is worse than
    // one that says exactly what it could not remove.
    let mut failures: Vec<String> = vec![];
    let mut note = |r: Result<bool>, what: String| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e:#}"));
        }
    };
    // Firewall first, while the links it names still exist.
    let had_table = read_live_table()?.is_some();
    if had_table {
        note(
            Nft::open().and_then(|mut n| n.apply(&[NftOp::DelTable])).map(|_| true),
            format!("deleting table inet {TABLE}"),
        );
    }
    for sb in ctx.state.sandboxes.values() {
        for ep in &sb.endpoints {
            note(links.delete_link(&ep.host_ifname), format!("deleting veth {}", ep.host_ifname));
        }
        if sb.created {
            note(delete_netns(ctx.store(), &sb.name), format!("deleting namespace {}", sb.name));
        }
    }
    // Namespaces netnat made but never recorded (a command killed half-way).
    for name in ctx.store().owned_netns() {
        if !ctx.state.sandboxes.contains_key(&name) {
            note(delete_netns(ctx.store(), &name), format!("deleting namespace {name}"));
        }
    }
    for net in ctx.state.networks.values() {
        note(links.delete_link(&net.bridge), format!("deleting bridge {}", net.bridge));
    }
    note(restore_sysctls(&mut ctx.state).map(|_| true), "restoring sysctls".into());
    note(super::reload::remove_sysctl_conf().map(|_| true), "removing the sysctl.d drop-in".into());
    let (n, s, m) = (ctx.state.networks.len(), ctx.state.sandboxes.len(), ctx.state.mappings.len());
    if !failures.is_empty() {
        anyhow::bail!("reset left things behind:\n  - {}", failures.join("\n  - "));
    }
    ctx.state = State::default();
    ctx.save()?;
    let table = if had_table { format!(" and table inet {TABLE}") } else { String::new() };
    println!("reset: removed {n} network(s), {s} sandbox(es), {m} mapping(s){table}");
    Ok(())
}
