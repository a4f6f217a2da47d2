//! netnat: container networks on Linux with in-kernel NAT.
//!
//! Pure parts (no I/O, unit-tested): `model` (Network, Sandbox, Endpoint, Mapping and their
//! validation), `ruleset` (the nftables layout, the plan from desired vs live, nft syntax),
//! `nft::expr` (typed nf_tables expressions). Kernel parts (namespace-tested): `nft` (nftables
//! over netlink), `link` (links, addresses, routes, namespaces over rtnetlink), `conntrack`.
//! `host` (the sysctls netnat sets and gives back). `validate` checks a whole desired state.
//! `engine` is netnat's operations on typed values, below every front door; `commands` is the
//! CLI's thin side of each subcommand, `cli` its clap definition; `cni` is the same binary as a chained CNI
//! plugin (a front door onto the same engine, record and table); `docker` is Docker's remote network
//! driver (another front door, over HTTP on a unix socket).

// Every unsafe block says what it relies on (`// SAFETY:`), crate-wide.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod audit;
pub mod cli;
pub mod cni;
pub mod commands;
pub mod config;
pub mod conntrack;
pub mod docker;
pub mod engine;
pub mod graph;
pub mod host;
pub mod hostfw;
pub mod link;
pub mod linkplan;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod recover;
pub mod ruleset;
pub mod state;
pub mod trace;
pub mod validate;

/// Exit status for an error: 2 for invalid input, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<model::InputError>()) {
        2
    } else {
        1
    }
}
