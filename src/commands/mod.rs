//! The CLI's side of each subcommand: turn clap's values into model values (bad input is an
//! `InputError`, exit 2), open the engine, call one operation, print its outcome. The work is in
//! `engine`; no command file imports another.

pub mod apply;
pub mod audit;
pub mod network;
pub mod observe;
pub mod ports;
pub mod upkeep;

/// The record for a command that only reads; on a damaged one, what the kernel holds, after
/// the one warning line.
fn read_state(dir: &std::path::Path) -> anyhow::Result<crate::model::State> {
    let (state, warning) = crate::engine::read_state(dir)?;
    warn(warning.as_slice());
    Ok(state)
}

/// Warnings of an outcome, on stderr (a warning's further lines without the word).
fn warn(warnings: &[String]) {
    for w in warnings {
        let mut lines = w.lines();
        eprintln!("netnat: warning: {}", lines.next().unwrap_or_default());
        for l in lines {
            eprintln!("netnat: {l}");
        }
    }
}

/// Notes of an outcome (things done on the side that the user should know), on stderr.
fn note(notes: &[String]) {
    for n in notes {
        eprintln!("netnat: note: {n}");
    }
}
