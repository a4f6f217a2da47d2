//! The one place the CNI front door reaches the record and the kernel. It goes through the
//! engine (`Engine`: the same lock, record, reservation and element sync as `netnat publish`
//! and `unpublish`), so there is no second writer of table `inet netnat`; the rest of `cni` is
//! pure.

use super::plan::Change;
use super::spec::{code, CniError};
use crate::engine::{self, ports, Engine};
use crate::model::{Family, InputError, Mapping, State};
use crate::nft::{LiveTable, Nft};
use crate::ruleset::TABLE;
use crate::state::Store;
use std::path::Path;

/// Turns a failure of the CLI's machinery into a CNI error: refused input (an InputError,
/// e.g. a hostIP this host does not have) is invalid config, a transient kernel refusal is
/// "try again later", anything else a failure with the whole cause chain.
fn cni_error(e: anyhow::Error, doing: &str) -> CniError {
    if let Some(i) = e.chain().find_map(|c| c.downcast_ref::<InputError>()) {
        return CniError::new(code::INVALID_CONFIG, "invalid port mapping", i.0.clone());
    }
    let transient = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|n| [libc::EAGAIN, libc::EBUSY, libc::EINTR, libc::ENOBUFS].contains(&n))
    });
    let code = if transient { code::TRY_AGAIN_LATER } else { code::FAILED };
    CniError::new(code, format!("netnat could not {doing}"), format!("{e:#}"))
}

/// Runs `plan` on the record under netnat's lock, then in the engine's order (as `publish`):
/// checks host addresses, reserves room in the record, sends exactly the element changes the
/// plan returns (one batch), saves the record, then drops conntrack entries of the datagram host
/// ports it touched (a failure there is a warning on stderr: the kernel and the record agree
/// already). A plan that fails changes nothing.
pub fn change<T>(
    dir: &Path,
    doing: &str,
    plan: impl FnOnce(&mut State) -> Result<(Change, T), CniError>,
) -> Result<T, CniError> {
    let mut e = Engine::open(dir).map_err(|e| cni_error(e, doing))?;
    let before = e.state.clone();
    let (change, out) = plan(&mut e.state)?;
    // Allow lists go with their mappings (DEL, GC).
    let st = &mut e.state;
    st.allow.retain(|a| st.mappings.contains(&a.mapping));
    apply(&mut e, &before, &change).map_err(|e| cni_error(e, doing))?;
    Ok(out)
}

fn apply(e: &mut Engine, before: &State, change: &Change) -> anyhow::Result<()> {
    ports::check_host_addresses(&change.added)?;
    if change.added.iter().any(|m| m.family() == Family::V6) {
        crate::link::ipv6_available("this host's network namespace")?;
    }
    // Each mapping is written twice (in `mappings` and in its attachment), more deeply
    // indented than `reserve_for_mappings` assumes for one copy: three times is enough.
    e.reserve_for_mappings(&[&change.added[..], &change.added[..], &change.added[..]].concat())?;
    localhost_to_foreign_bridges(&mut e.state, &change.added)?;
    let touched: Vec<Mapping> = [&change.added[..], &change.removed[..]].concat();
    if !change.is_empty() {
        e.sync_mappings(before, &touched)?;
    }
    e.save()?;
    if let Err(err) = ports::flush_conntrack(&touched) {
        eprintln!("netnat: warning: could not flush the conntrack entries of the changed ports: {err:#}");
    }
    Ok(())
}

/// The host's own 127.0.0.1 connections to a container on a bridge netnat did not make reach it
/// only with route_localnet on that bridge (portmap sets it too): the bridge is the host link
/// with an address whose subnet holds the container's address.
fn localhost_to_foreign_bridges(state: &mut State, added: &[Mapping]) -> anyhow::Result<()> {
    let targets: Vec<std::net::IpAddr> = added
        .iter()
        .filter(|m| m.family() == Family::V4 && state.network_of(m.container_ip).is_none())
        .map(|m| m.container_ip)
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    // The same /prefix network: the top `prefix` bits agree.
    let same_net = |a: std::net::IpAddr, b: std::net::IpAddr, prefix: u8| {
        let shift = 32 - u32::from(prefix.clamp(1, 32));
        crate::model::ip_bits(a) >> shift == crate::model::ip_bits(b) >> shift
    };
    for a in crate::link::Links::open()?.addrs()? {
        if a.addr.is_ipv4() && a.prefix < 32 && targets.iter().any(|t| same_net(*t, a.addr, a.prefix)) {
            crate::host::enable_route_localnet_recorded(state, &a.ifname)?;
        }
    }
    Ok(())
}

/// The record as it is now (None: netnat has no record and nothing in the kernel), read under
/// the lock; a damaged record is an error that says so.
pub fn read(dir: &Path) -> Result<Option<State>, CniError> {
    let Some(store) = Store::open_existing(dir).map_err(|e| cni_error(e, "read its record"))? else {
        return Ok(None);
    };
    match engine::load(&store).map_err(|e| cni_error(e, "read its record"))? {
        Ok(st) => Ok(Some(st)),
        Err(why) => Err(damaged(&store, &why, code::FAILED)),
    }
}

fn damaged(store: &Store, why: &str, code: u32) -> CniError {
    CniError::new(
        code,
        "netnat's record cannot be used",
        format!("{}: {why}; `netnat recover` rebuilds it from the kernel", store.file().display()),
    )
}

/// Table `inet netnat` as the kernel has it.
pub fn live_table() -> Result<Option<LiveTable>, CniError> {
    engine::read_live_table().map_err(|e| cni_error(e, "read table inet netnat"))
}

/// STATUS: netnat can serve an ADD when it may change the network, nf_tables answers over
/// netlink, and its record is usable. Otherwise the spec's "plugin not available" with why.
pub fn status(dir: &Path) -> Result<(), CniError> {
    let unavailable =
        |e: anyhow::Error| CniError::new(code::NOT_AVAILABLE, "netnat cannot program nftables", format!("{e:#}"));
    engine::require_net_admin().map_err(unavailable)?;
    Nft::open().and_then(|mut n| n.read_layout(TABLE)).map_err(unavailable)?;
    if let Some(store) = Store::open_existing(dir).map_err(unavailable)? {
        if let Err(why) = engine::load(&store).map_err(unavailable)? {
            return Err(damaged(&store, &why, code::NOT_AVAILABLE));
        }
    }
    Ok(())
}
