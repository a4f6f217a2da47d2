//! netnat as a chained CNI plugin, in place of portmap: the same binary, run by a container
//! runtime with `CNI_COMMAND` in its environment and the network configuration on stdin.
//!
//! A front door, not a second netnat: a request becomes mappings of the same model (`plan`),
//! owned by their attachment (network name + CNI_CONTAINERID + CNI_IFNAME, recorded in
//! `State.attachments`), and goes through the engine's one mapping operation, as `netnat
//! publish` does (`adapter`, the only file here that reaches the record or the kernel). `spec` is the protocol. Stdout carries only the
//! result or the spec's error object; anything else goes to stderr.
//!
//! Verbs: ADD publishes `runtimeConfig.portMappings` to the container's addresses taken from
//! prevResult and hands prevResult on; DEL removes what the attachment owns (idempotent, needs
//! neither the namespace nor prevResult); CHECK compares record and kernel with the request;
//! GC (1.1.0) deletes the network's attachments the runtime no longer lists; STATUS (1.1.0)
//! says whether netnat can program nftables; VERSION lists 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0.

pub mod adapter;
pub mod plan;
pub mod spec;

use crate::engine::mapping::Change;
use crate::model::AttachmentId;
use spec::{code, CniError, Command, Env, Request, Version};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What the plugin prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stdout: String,
    pub exit: i32,
    /// The error, for a line on stderr (the runtime shows stdout's JSON; a human reads stderr).
    pub error: Option<CniError>,
}

/// The plugin's `main`: reads the environment and stdin, serves the request, prints the
/// result or the error, and returns the exit status.
pub fn run_from_env() -> i32 {
    let env = Env::read(|k| std::env::var(k).ok());
    let dir = std::env::var_os("NETNAT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::state::DEFAULT_DIR));
    let mut stdin = vec![];
    let reply = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => handle(&env, &stdin, &dir),
        Err(e) => {
            let err =
                CniError::new(code::IO_FAILURE, "failed to read the network configuration from stdin", e.to_string());
            Reply { stdout: err.to_json(Version::LATEST), exit: err.exit_status(), error: Some(err) }
        }
    };
    if let Some(e) = &reply.error {
        let verb = env.command.as_deref().unwrap_or("(no CNI_COMMAND)");
        let ctr = env.container_id.as_deref().unwrap_or("-");
        eprintln!("netnat: CNI {verb} for container {ctr}: {e}");
    }
    if !reply.stdout.is_empty() {
        println!("{}", reply.stdout);
    }
    reply.exit
}

/// Serves one request: the reply to print, never a panic on bad input.
pub fn handle(env: &Env, stdin: &[u8], dir: &Path) -> Reply {
    let version = spec::reply_version(stdin).unwrap_or(Version::LATEST);
    match serve(env, stdin, dir) {
        Ok(stdout) => Reply { stdout, exit: 0, error: None },
        Err(e) => Reply { stdout: e.to_json(version), exit: e.exit_status(), error: Some(e) },
    }
}

fn serve(env: &Env, stdin: &[u8], dir: &Path) -> Result<String, CniError> {
    let cmd = env.command()?;
    if cmd == Command::Version {
        return Ok(spec::version_reply(stdin));
    }
    let req = spec::decode(stdin, cmd)?;
    match cmd {
        Command::Add => add(env, &req, dir),
        Command::Del => del(env, &req, dir).map(|_| String::new()),
        Command::Check => check(env, &req, dir).map(|_| String::new()),
        Command::Gc => gc(&req, dir).map(|_| String::new()),
        Command::Status => adapter::status(dir).map(|_| String::new()),
        Command::Version => unreachable!("answered above"),
    }
}

fn attachment_id(req: &Request, container_id: String, ifname: String) -> AttachmentId {
    let network = req.conf.name.clone().expect("decode checks that attachment verbs have a name");
    AttachmentId { network, container_id, ifname }
}

/// portmap's `snat: false` turns hairpin and localhost masquerade off for the container's
/// ports. netnat's masquerade rules are per network and for the whole host, not per port, so
/// it cannot: refused, rather than silently done otherwise.
fn refuse_snat_off(req: &Request) -> Result<(), CniError> {
    if req.conf.snat == Some(false) {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "unsupported field snat",
            "snat = false: netnat masquerades hairpin and localhost connections to published ports for every \
             port alike and cannot turn that off for one container; remove snat (its default is true)",
        ));
    }
    Ok(())
}

fn add(env: &Env, req: &Request, dir: &Path) -> Result<String, CniError> {
    let (container_id, ifname, netns) = env.attachment(Command::Add)?;
    let netns = netns.expect("attachment() requires CNI_NETNS for ADD");
    refuse_snat_off(req)?;
    let Some(prev) = &req.conf.prev_result else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "missing prevResult",
            "netnat is a chained plugin: put it after the plugin that gives the container its interface and \
             addresses (e.g. bridge) in the conflist",
        ));
    };
    let result = serde_json::to_string(&spec::result_of(prev, req.version)).expect("a JSON value serialises");
    let entries = req.conf.runtime_config.port_mappings.clone().unwrap_or_default();
    if entries.is_empty() {
        return Ok(result);
    }
    let ips = spec::container_ips(prev, &ifname, &netns)?;
    let wanted = plan::wanted_mappings(&entries, &ips)?;
    let allow = spec::allow_from(&req.conf)?;
    let id = attachment_id(req, container_id, ifname);
    let key = id.key();
    let change = Change::Attach { id, maps: wanted.clone(), allow };
    adapter::change_for(dir, "publish the container's ports", (&key, &wanted), true, |_| Some(change.clone()))?;
    Ok(result)
}

fn del(env: &Env, req: &Request, dir: &Path) -> Result<(), CniError> {
    let (container_id, ifname, _) = env.attachment(Command::Del)?;
    let id = attachment_id(req, container_id, ifname);
    // Nothing recorded for it (a repeated DEL, or an ADD without ports): success, nothing written.
    let (doing, key) = ("unpublish the container's ports", id.key());
    let detach = |st: &crate::model::State| st.attachments.contains_key(&key).then(|| Change::Detach(vec![id.clone()]));
    adapter::change_for(dir, doing, (&key, &[]), false, detach)?;
    Ok(())
}

fn check(env: &Env, req: &Request, dir: &Path) -> Result<(), CniError> {
    let (container_id, ifname, netns) = env.attachment(Command::Check)?;
    let netns = netns.expect("attachment() requires CNI_NETNS for CHECK");
    refuse_snat_off(req)?;
    let Some(prev) = &req.conf.prev_result else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "missing prevResult",
            "CHECK needs the result of the ADD as prevResult",
        ));
    };
    let entries = req.conf.runtime_config.port_mappings.clone().unwrap_or_default();
    let wanted = match entries.is_empty() {
        true => vec![],
        false => plan::wanted_mappings(&entries, &spec::container_ips(prev, &ifname, &netns)?)?,
    };
    let id = attachment_id(req, container_id, ifname);
    let st = adapter::read(dir)?.unwrap_or_default();
    plan::check_record(&st, &id, &wanted)?;
    if !wanted.is_empty() {
        plan::check_kernel(&st, &id, &wanted, adapter::live_table()?.as_ref())?;
    }
    Ok(())
}

fn gc(req: &Request, dir: &Path) -> Result<(), CniError> {
    let network = req.conf.name.clone().expect("decode checks that GC has a name");
    let Some(valid) = req.conf.valid_attachments.as_ref().or(req.conf.attachments_legacy.as_ref()) else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "missing cni.dev/valid-attachments",
            "GC needs the list of still valid attachments; without it netnat would delete every attachment of the network",
        ));
    };
    let valid: Vec<(String, String)> = valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    // Nothing stale: nothing to write (the usual case, once a runtime GCs regularly).
    let stale = |st: &crate::model::State| Some(plan::stale(st, &network, &valid)).filter(|s| !s.is_empty());
    let Some(out) = adapter::change_if(dir, "remove stale attachments", |st| stale(st).map(Change::Detach))? else {
        return Ok(());
    };
    for id in out.detached {
        eprintln!("netnat: CNI GC removed the port mappings of {id}");
    }
    Ok(())
}
