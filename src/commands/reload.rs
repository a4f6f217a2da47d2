//! `reload`: put netnat's firewall and sysctls back from the record, e.g. after
//! `nft flush ruleset` (an nftables.service restart, a firewalld reload) or a systemd-sysctl run.
//! Also the sysctl.d drop-in that keeps systemd-sysctl from reverting what netnat set.

use super::network::enable_forwarding;
use super::Ctx;
use crate::link::{sysctl, Links};
use crate::linkplan::{forwarding_keys, route_localnet_key};
use crate::model::State;
use crate::ruleset::TABLE;
use anyhow::{Context, Result};
use std::path::Path;

pub const SYSCTL_CONF: &str = "/run/sysctl.d/50-netnat.conf";

/// The drop-in for a state: None when netnat has no network (then there is nothing to keep).
/// Keys use '/' separators so a bridge name with a '.' stays one path component (sysctl.d(5)).
pub fn sysctl_conf_text(state: &State) -> Option<String> {
    if state.networks.is_empty() {
        return None;
    }
    let mut out = String::from(
        "# Written by netnat: sysctls it set, so systemd-sysctl does not revert them.\n\
         # Removed by `netnat reset`; do not edit.\n",
    );
    for key in forwarding_keys(state) {
        out += &format!("{key} = 1\n");
    }
    for n in state.networks.values() {
        out += &format!("{} = 1\n", route_localnet_key(&n.bridge));
    }
    // Interfaces that keep taking router advertisements while IPv6 forwarding is on.
    for key in state.sysctls.keys().filter(|k| k.ends_with("/accept_ra")) {
        out += &format!("{key} = 2\n");
    }
    Some(out)
}

/// Writes (or removes, with no network left) /run/sysctl.d/50-netnat.conf.
pub fn write_sysctl_conf(state: &State) -> Result<()> {
    let path = Path::new(SYSCTL_CONF);
    match sysctl_conf_text(state) {
        None => remove_sysctl_conf(),
        Some(text) => {
            if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
                return Ok(());
            }
            let dir = path.parent().expect("has a parent");
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let tmp = dir.join(format!(".50-netnat.conf.{}", std::process::id()));
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing {SYSCTL_CONF}"))
        }
    }
}

pub fn remove_sysctl_conf() -> Result<()> {
    match std::fs::remove_file(SYSCTL_CONF) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {SYSCTL_CONF}")),
        _ => Ok(()),
    }
}

/// For the imperative commands: the drop-in is a convenience, so a failure is a warning.
pub fn sync_sysctl_conf_or_warn(state: &State) {
    if let Err(e) = write_sysctl_conf(state) {
        eprintln!("netnat: warning: {e:#}");
    }
}

pub fn reload(dir: &Path) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let ops = ctx.sync_firewall()?;
    let mut missing = vec![];
    if !ctx.state.networks.is_empty() {
        enable_forwarding(&mut ctx.state)?;
        let links = Links::open()?;
        for n in ctx.state.networks.values() {
            match links.link(&n.bridge)? {
                Some(l) if l.kind.as_deref() == Some("bridge") => sysctl::write(&route_localnet_key(&n.bridge), "1")?,
                _ => missing.push(format!("bridge {} of network {}", n.bridge, n.name)),
            }
        }
    }
    write_sysctl_conf(&ctx.state)?;
    ctx.save()?;
    if ops.is_empty() {
        println!("reload: table inet {TABLE} was already in place; sysctls set");
    } else {
        println!("reload: table inet {TABLE} re-programmed ({} operation(s)); sysctls set", ops.len());
    }
    if !missing.is_empty() {
        anyhow::bail!("reload: missing in the kernel (run `netnat apply` to recreate): {}", missing.join(", "));
    }
    Ok(())
}
