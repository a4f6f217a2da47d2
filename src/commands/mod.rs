//! The CLI's side of each subcommand: turn clap's values into model values (bad input is an
//! `InputError`, exit 2), open the engine, call one operation, print its outcome. The work is in
//! `engine`; no command file imports another.

pub mod apply;
pub mod audit;
pub mod network;
pub mod ports;
pub mod upkeep;

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
