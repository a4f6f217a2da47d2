//! `recover`: rebuild netnat's record from the kernel when it cannot be read (see
//! `crate::recover` for what the kernel holds). The damaged file is kept beside the new one.

use super::{Damage, Engine};
use crate::model::State;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Serialize)]
pub struct Recovered {
    /// Why the record could not be used.
    pub why: String,
    /// The record as rebuilt from the kernel.
    pub state: State,
    /// Where the damaged record was kept.
    pub kept: Option<PathBuf>,
    /// What the kernel could not tell.
    pub lost: Vec<String>,
}

/// Writes the record rebuilt by `Engine::open_any`. None: the record was readable, nothing to do.
pub fn recover(mut e: Engine, damage: Option<Damage>) -> Result<Option<Recovered>> {
    let Some(d) = damage else { return Ok(None) };
    // The namespaces' marks under the state directory, lost with it when it was deleted.
    for sb in e.state.sandboxes.values().filter(|s| s.created) {
        e.store().mark_netns(&sb.name)?;
    }
    let kept = e.store().keep_damaged()?;
    e.save()?;
    Ok(Some(Recovered { why: d.why, state: e.state.clone(), kept, lost: d.lost }))
}
