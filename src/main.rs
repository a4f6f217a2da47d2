//! The netnat command: parse, dispatch, report. All the work is in the library.

use clap::Parser;
use netnat::cli::{Cli, Command, NetworkCmd, SandboxCmd};
use netnat::commands::{apply, audit, network, observe, ports, upkeep};
use netnat::engine::apply::ApplyOptions;
use netnat::state::dir_or_default;

fn main() {
    // Run by a container runtime as a CNI plugin: the request is in the environment and on
    // stdin, not in the arguments.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(netnat::cni::run_from_env());
    }
    let cli = Cli::parse();
    let dir = dir_or_default(cli.state_dir.as_deref());
    if let Command::Audit(a) = &cli.command {
        // Its own exit statuses: 1 means findings, 2 means the audit itself could not run.
        match audit::audit(&dir, a) {
            Ok(failed) => std::process::exit(if failed { 1 } else { 0 }),
            Err(e) => {
                eprintln!("netnat: error: audit could not run: {e:#}");
                std::process::exit(2);
            }
        }
    }
    let result = match &cli.command {
        Command::Network(NetworkCmd::Create(a)) => network::network_create(&dir, a),
        Command::Network(NetworkCmd::Rm { name }) => network::network_rm(&dir, name),
        Command::Network(NetworkCmd::Ls { json }) => network::network_ls(&dir, *json),
        Command::Sandbox(SandboxCmd::Create(a)) => network::sandbox_create(&dir, a),
        Command::Sandbox(SandboxCmd::Rm { name }) => network::sandbox_rm(&dir, name),
        Command::Sandbox(SandboxCmd::Ls { json }) => network::sandbox_ls(&dir, *json),
        Command::Connect(a) => network::connect(&dir, a),
        Command::Disconnect { network: n, sandbox } => network::disconnect(&dir, n, sandbox),
        Command::Publish { specs, allow, replace } => ports::publish(&dir, specs, allow, *replace),
        Command::Unpublish { specs } => ports::unpublish(&dir, specs),
        Command::Ls { json } => ports::ls(&dir, *json),
        Command::Show { counters } => ports::show(&dir, *counters),
        Command::Apply(a) => apply::apply(&dir, &a.file, a.check, ApplyOptions { dry_run: a.dry_run, prune: a.prune }),
        Command::Save => apply::save(&dir),
        Command::Reload => upkeep::reload(&dir),
        Command::Reset => upkeep::reset(&dir),
        Command::Counting { mode, json } => upkeep::counting(&dir, mode.as_deref(), *json),
        Command::Recover => upkeep::recover(&dir),
        Command::Graph => audit::graph(&dir),
        Command::Trace(a) => observe::trace(&dir, a),
        Command::Metrics(a) => observe::metrics(&dir, a),
        Command::DockerPlugin(a) => netnat::docker::serve(&a.socket, &dir),
        Command::Audit(_) => unreachable!("handled above"),
    };
    if let Err(e) = result {
        eprintln!("netnat: error: {e:#}");
        std::process::exit(netnat::exit_code(&e));
    }
}
