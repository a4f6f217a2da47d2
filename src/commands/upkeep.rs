//! `reload`, `reset` and `recover`: keeping the kernel and the record in step.

use crate::engine::{recover as rec, reload as rel, reset as res, Engine};
use crate::ruleset::TABLE;
use anyhow::{bail, Result};
use std::path::Path;

pub fn reload(dir: &Path) -> Result<()> {
    let done = rel::reload(&mut Engine::open(dir)?)?;
    super::note(&done.notes);
    super::warn(&done.warnings);
    if done.operations == 0 {
        println!("reload: table inet {TABLE} was already in place; sysctls set");
    } else {
        println!("reload: table inet {TABLE} re-programmed ({} operation(s)); sysctls set", done.operations);
    }
    if !done.missing.is_empty() {
        bail!("reload: missing in the kernel (run `netnat apply` to recreate): {}", done.missing.join(", "));
    }
    Ok(())
}

pub fn reset(dir: &Path) -> Result<()> {
    let (e, damage) = Engine::open_any(dir)?;
    let r = res::reset(e, damage)?;
    let table = if r.had_table { format!(" and table inet {TABLE}") } else { String::new() };
    println!("reset: removed {} network(s), {} sandbox(es), {} mapping(s){table}", r.networks, r.sandboxes, r.mappings);
    if let Some(why) = &r.damaged {
        println!("reset: the record could not be used ({why}); what netnat made was found by its marks in the kernel");
        if let Some(k) = &r.kept {
            println!("reset: the damaged record is kept as {}", k.display());
        }
        if r.networks > 0 {
            println!(
                "reset: net.ipv4.ip_forward is left as it is: the value it had before netnat is not in the kernel"
            );
        }
    }
    Ok(())
}

pub fn recover(dir: &Path) -> Result<()> {
    let (e, damage) = Engine::open_any(dir)?;
    let file = e.store().file();
    let Some(r) = rec::recover(e, damage)? else {
        println!(
            "recover: the record {} is readable; nothing to recover (`netnat audit` compares it with the kernel)",
            file.display()
        );
        return Ok(());
    };
    let st = &r.state;
    let endpoints: usize = st.sandboxes.values().map(|s| s.endpoints.len()).sum();
    println!("recover: the record {} could not be used: {}", file.display(), r.why);
    println!(
        "recover: rebuilt it from the kernel: {} network(s), {} sandbox(es), {endpoints} endpoint(s), {} published \
         mapping(s)",
        st.networks.len(),
        st.sandboxes.len(),
        st.mappings.len()
    );
    if let Some(k) = &r.kept {
        println!("recover: the damaged record is kept as {}", k.display());
    }
    if r.lost.is_empty() {
        println!("recover: nothing was lost");
    } else {
        println!("recover: what the kernel could not tell:");
        for l in &r.lost {
            println!("  - {l}");
        }
    }
    Ok(())
}

/// `counting [MODE]`: prints the mode, or sets it.
pub fn counting(dir: &Path, mode: Option<&str>, json: bool) -> Result<()> {
    let Some(mode) = mode else {
        let st = super::read_state(dir)?;
        match json {
            true => println!("{}", serde_json::json!({ "counting": st.counting })),
            false => println!("counting: {}", st.counting),
        }
        return Ok(());
    };
    let mode: crate::model::Counting = mode.parse()?;
    let done = rel::set_counting(&mut Engine::open(dir)?, mode)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else if done.was == done.counting {
        println!("counting: already {} (table checked: {} operation(s))", done.counting, done.operations);
    } else {
        println!("counting: {} (was {}; {} operation(s) in one transaction)", done.counting, done.was, done.operations);
    }
    Ok(())
}
