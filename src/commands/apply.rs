//! `apply` and `save`: the declarative side.

use super::read_state;
use crate::config;
use crate::engine::apply::{self as op, ApplyOptions};
use crate::engine::{missing_links, Engine, Kernel};
use anyhow::{bail, Result};
use std::path::Path;

pub fn apply(dir: &Path, file: &Path, check: bool, o: ApplyOptions) -> Result<()> {
    let parsed = config::load_file(file)?;
    if check {
        println!("ok");
        return Ok(());
    }
    let mut e = if o.dry_run { Engine::open_unreserved(dir)? } else { Engine::open(dir)? };
    let done = op::apply(&mut e, &parsed, o)?;
    for x in &done.kept {
        println!("kept (not in {}; --prune removes it): {x}", file.display());
    }
    for s in &done.steps {
        println!("{s}");
    }
    for f in &done.failures {
        eprintln!("netnat: apply: {f}");
    }
    for w in &done.warnings {
        eprintln!("netnat: warning: {w}");
    }
    if done.steps.is_empty() && done.failures.is_empty() {
        println!("no changes");
    }
    if done.dry_run {
        println!("dry run: nothing was changed");
    }
    if !done.failures.is_empty() {
        bail!(
            "apply of {} did not finish; run it again once the cause is fixed:\n  - {}",
            file.display(),
            done.failures.join("\n  - ")
        );
    }
    Ok(())
}

/// `save`: the record as a file `apply` accepts; what the kernel lacks is warned about.
pub fn save(dir: &Path) -> Result<()> {
    let state = read_state(dir)?;
    let notes = missing_links(Kernel::netlink()?.links.as_mut(), &state)?;
    for n in &notes {
        eprintln!("netnat: save: warning: {n} (apply recreates it)");
    }
    print!("{}", config::to_toml(&state, &notes));
    Ok(())
}
