//! The one place the CNI front door reaches the record and the kernel. It goes through the
//! engine (`Engine`: the same lock, record, reservation and element sync as `netnat publish`
//! and `unpublish`), so there is no second writer of table `inet netnat`; the rest of `cni` is
//! pure.

use super::spec::{code, CniError};
use crate::engine::mapping::{self, Change, Outcome, PortTaken};
use crate::engine::{self, Engine, Kernel, NeedsWhole};
use crate::model::{InputError, Mapping, State};
use crate::nft::LiveTable;
use crate::state::Store;
use std::path::Path;

/// Turns a failure of the CLI's machinery into a CNI error: refused input (an InputError,
/// e.g. a hostIP this host does not have) is invalid config, a transient kernel refusal is
/// "try again later", anything else a failure with the whole cause chain.
fn cni_error(e: anyhow::Error, doing: &str) -> CniError {
    if let Some(t) = e.chain().find_map(|c| c.downcast_ref::<PortTaken>()) {
        return CniError::new(
            code::PORT_TAKEN,
            format!("host port {} is already published", t.wanted.host_spec()),
            t.to_string(),
        );
    }
    if let Some(i) = e.chain().find_map(|c| c.downcast_ref::<InputError>()) {
        if i.0.contains("--allow") {
            return CniError::new(code::INVALID_CONFIG, "invalid allowFrom", i.0.replace("--allow", "allowFrom"));
        }
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

/// For DEL and GC: the record is read once, under the lock, and `make` says from it what to
/// change. Nothing to change (a repeated DEL, an ADD that published nothing, a GC that finds
/// nothing stale): success, nothing written or reserved, no state directory created. Otherwise
/// the change runs as in `change` (the engine reserves room in the record before it touches the
/// kernel).
pub fn change_if(
    dir: &Path,
    doing: &str,
    make: impl FnOnce(&State) -> Option<Change>,
) -> Result<Option<Outcome>, CniError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut e = Engine::open_unreserved(dir).map_err(|e| cni_error(e, doing))?;
    let Some(change) = make(&e.state) else {
        return Ok(None);
    };
    let out = mapping::change(&mut e, &change).map_err(|e| cni_error(e, doing))?;
    for n in out.notes.iter().chain(&out.warnings) {
        eprintln!("netnat: warning: {n}");
    }
    Ok(Some(out))
}

/// For ADD (`create`) and DEL of one attachment: as `change` and `change_if`, but the engine
/// reads of the record only the attachment `key` and those the request can meet (`maps` are the
/// mappings ADD asks for), so a request costs the same beside 10 or 10,000 mappings
/// (`Engine::open_for`). A change that needs the whole record runs again on all of it.
pub fn change_for(
    dir: &Path,
    doing: &str,
    (key, maps): (&str, &[Mapping]),
    create: bool,
    make: impl Fn(&State) -> Option<Change>,
) -> Result<Option<Outcome>, CniError> {
    if !create && !dir.is_dir() {
        return Ok(None);
    }
    let run = |mut e: Engine| -> anyhow::Result<Option<Outcome>> {
        let Some(change) = make(&e.state) else { return Ok(None) };
        mapping::change(&mut e, &change).map(Some)
    };
    let out = match Engine::open_for(dir, key, maps, create).and_then(run) {
        // The partial engine is gone (and its lock with it): nothing was changed.
        Err(e) if e.downcast_ref::<NeedsWhole>().is_some() => {
            if create { Engine::open(dir) } else { Engine::open_unreserved(dir) }.and_then(run)
        }
        r => r,
    }
    .map_err(|e| cni_error(e, doing))?;
    for n in out.iter().flat_map(|o| o.notes.iter().chain(&o.warnings)) {
        eprintln!("netnat: warning: {n}");
    }
    Ok(out)
}

/// The record as it is now (None: netnat has no record and nothing in the kernel), read under
/// the lock; a damaged record is an error that says so.
pub fn read(dir: &Path) -> Result<Option<State>, CniError> {
    let Some(store) = Store::open_existing(dir).map_err(|e| cni_error(e, "read its record"))? else {
        return Ok(None);
    };
    let mut kernel = Kernel::netlink().map_err(|e| cni_error(e, "read its record"))?;
    match engine::load(&store, &mut kernel).map_err(|e| cni_error(e, "read its record"))? {
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
    engine::require_net_admin().map_err(unavailable)?;
    status_of(dir, &mut Kernel::netlink().map_err(unavailable)?)
}

fn unavailable(e: anyhow::Error) -> CniError {
    CniError::new(code::NOT_AVAILABLE, "netnat cannot program nftables", format!("{e:#}"))
}

/// STATUS on the kernel given (the unit tests' fakes): its table answers, the record is usable.
fn status_of(dir: &Path, kernel: &mut Kernel) -> Result<(), CniError> {
    kernel.firewall.read_layout().map_err(unavailable)?;
    if let Some(store) = Store::open_existing(dir).map_err(unavailable)? {
        if let Err(why) = engine::load(&store, kernel).map_err(unavailable)? {
            return Err(damaged(&store, &why, code::NOT_AVAILABLE));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake;
    use crate::model::fixtures::seed_state;

    #[test]
    fn status_asks_the_kernel_seam_and_the_record() {
        let st = seed_state("nnveth0");
        let dir = std::env::temp_dir().join(format!("netnat-cni-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::lock(&dir).unwrap().save(&st).unwrap();
        let (mut kernel, fw, _links) = fake::kernel(&st);
        assert!(status_of(&dir, &mut kernel).is_ok());
        // nf_tables does not answer: not available, saying why.
        fw.0.borrow_mut().fail_read = true;
        let err = status_of(&dir, &mut kernel).unwrap_err();
        assert_eq!(err.code, code::NOT_AVAILABLE);
        assert!(format!("{err:?}").contains("could not be read"), "{err:?}");
        // A damaged record: not available, pointing at `netnat recover`.
        fw.0.borrow_mut().fail_read = false;
        std::fs::write(dir.join(crate::state::FILE), "{ not json").unwrap();
        let err = status_of(&dir, &mut kernel).unwrap_err();
        assert_eq!(err.code, code::NOT_AVAILABLE);
        assert!(format!("{err:?}").contains("netnat recover"), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
