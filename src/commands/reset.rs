//! `reset`: remove everything netnat made, and nothing else.

use super::network::restore_sysctls;
use super::{read_live_table, Ctx};
use crate::link::{netns, Links};
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
    if read_live_table()?.is_some() {
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
            note(netns::delete(&sb.name), format!("deleting namespace {}", sb.name));
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
    println!("reset: removed {n} network(s), {s} sandbox(es), {m} mapping(s) and table inet {TABLE}");
    Ok(())
}
