//! `audit` and `graph`: the engine gathers what the kernel has (netlink and /proc only, never a
//! tool) into `audit::Observed`, then the pure `audit` module judges it.

use super::read_state;
use crate::audit::{self, Report, Severity};
use crate::cli::{AuditArgs, FailOn};
use crate::engine::{observe_audit, require_net_admin, Kernel};
use crate::model::State;
use crate::{config, graph};
use anyhow::{Context, Result};
use std::path::Path;

/// Runs the audit and prints it. Ok(true) when a finding is at or above `--fail-on`.
pub fn audit(dir: &Path, a: &AuditArgs) -> Result<bool> {
    require_net_admin().context("the audit reads nftables and conntrack over netlink")?;
    let mut o = observe_audit(dir, &mut Kernel::netlink()?)?;
    if let Some(file) = &a.config {
        o.config = Some(config_state(file, &o.state)?);
    }
    let report = audit::audit(&o);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).context("printing the audit as JSON")?);
    } else {
        print!("{}", audit::render_text(&report));
    }
    Ok(fails(&report, a.fail_on))
}

/// Whether the report has a finding at or above the threshold.
pub fn fails(r: &Report, on: FailOn) -> bool {
    let min = match on {
        FailOn::Info => Severity::Info,
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    };
    r.worst().is_some_and(|w| w >= min)
}

/// `--config FILE`: the state the file describes, addresses allocated as `apply` would (keeping
/// the record's where it can), so only real differences show.
fn config_state(file: &Path, record: &State) -> Result<State> {
    let parsed = config::load_file(file)?;
    config::to_state(&parsed, record).with_context(|| format!("reading {}", file.display()))
}

pub fn graph(dir: &Path) -> Result<()> {
    let state = read_state(dir)?;
    print!("{}", graph::dot(&state));
    Ok(())
}
