//! One function per subcommand. Each: check the input (InputError → exit 2), take the lock, load
//! the record, change the kernel (links through `link`, firewall through `nft` as one
//! transaction planned by `ruleset`), then save the record. Nothing here builds a netlink message.

pub mod apply;
pub mod audit;
pub mod network;
pub mod ports;
pub mod reload;
pub mod reset;

use crate::link::netns;
use crate::model::{InputError, Mapping, State};
use crate::nft::{LiveTable, Nft};
use crate::ruleset::{self, NftOp, TABLE};
use crate::state::Store;
use anyhow::{bail, Result};
use std::path::Path;

/// A running command: the lock, the record and the place it writes to.
pub struct Ctx {
    store: Store,
    pub state: State,
}

impl Ctx {
    /// For commands that change the kernel: needs CAP_NET_ADMIN, then takes the lock.
    pub fn open(dir: &Path) -> Result<Ctx> {
        require_net_admin()?;
        let store = Store::lock(dir)?;
        let state = store.load()?;
        Ok(Ctx { store, state })
    }

    pub fn save(&self) -> Result<()> {
        self.store.save(&self.state)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// After only mappings changed: sends just their elements, without reading the others, so a
    /// publish costs the same with 10 or 10,000 ports published. Falls back to a full
    /// `sync_firewall` when the table's layout or rules are not netnat's, or when the kernel
    /// says an element is not as the record says (EEXIST on add, ENOENT on delete: drift).
    pub fn sync_mappings(&self, added: &[Mapping], removed: &[Mapping]) -> Result<Vec<NftOp>> {
        let mut nft = Nft::open()?;
        if let Some(layout) = nft.read_layout(TABLE)? {
            let rules_only = ruleset::Desired { rules: ruleset::desired_rules(&self.state), elems: Default::default() };
            if ruleset::plan(&rules_only, Some(&layout)).is_empty() {
                let ops = ruleset::plan_mapping_changes(&self.state, added, removed);
                match nft.apply(&ops) {
                    Ok(()) => return Ok(ops),
                    Err(e) if is_errno(&e, &[libc::EEXIST, libc::ENOENT]) => {} // drift: full sync below
                    Err(e) => return Err(e),
                }
            }
        }
        self.sync_firewall()
    }

    /// Brings table `inet netnat` in line with the record: one transaction with only the difference.
    pub fn sync_firewall(&self) -> Result<Vec<NftOp>> {
        let mut nft = Nft::open()?;
        let live = nft.read_table(TABLE)?;
        let ops = ruleset::plan(&ruleset::desired(&self.state), live.as_ref());
        nft.apply(&ops)?;
        Ok(ops)
    }
}

/// Creates the sandbox namespace `name`, or takes the existing one. Returns whether it is
/// netnat's own (made now, or made earlier by a netnat command that was killed before saving).
pub fn create_netns(store: &Store, name: &str) -> Result<bool> {
    if netns::exists(name) {
        return Ok(store.owns_netns(name));
    }
    store.mark_netns(name)?;
    netns::create(name)?;
    Ok(true)
}

/// Removes a namespace netnat made, and its ownership mark.
pub fn delete_netns(store: &Store, name: &str) -> Result<bool> {
    let existed = netns::delete(name)?;
    store.unmark_netns(name)?;
    Ok(existed)
}

/// Says on stderr when a forward chain of another table will drop container traffic (Docker's
/// iptables FORWARD policy DROP, a firewalld or ufw zone, a hand-written rule). netnat never edits
/// another table, so it names the chain and the rule that would let the traffic through. A
/// failure to read the other tables is not an error here: `netnat audit` reports it.
pub fn warn_forward_blockers(state: &State) {
    if state.networks.is_empty() {
        return;
    }
    let Ok((chains, rules)) = Nft::open().and_then(|mut n| n.read_all()) else {
        return;
    };
    let docker = chains.iter().any(|c| c.name == "DOCKER-USER" && c.table == "filter");
    let found = crate::audit::forward_blockers(state, chains, rules);
    if found.is_empty() {
        return;
    }
    for f in &found {
        eprintln!("netnat: warning: {}", f.message);
    }
    eprintln!("netnat: netnat does not edit other tables; let container traffic through there, e.g.:");
    for n in state.networks.values() {
        let b = &n.bridge;
        if docker {
            eprintln!("netnat:   iptables -I DOCKER-USER -o {b} -j ACCEPT && iptables -I DOCKER-USER -i {b} -j ACCEPT");
        } else {
            let chain = found[0].objects.first().map(String::as_str).unwrap_or("FAMILY TABLE CHAIN");
            eprintln!("netnat:   nft insert rule {chain} oifname \"{b}\" accept; nft insert rule {chain} iifname \"{b}\" accept");
        }
    }
}

fn is_errno(e: &anyhow::Error, codes: &[i32]) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()).is_some_and(|n| codes.contains(&n))
    })
}

/// Reads netnat's table as it is in the kernel.
pub fn read_live_table() -> Result<Option<LiveTable>> {
    Nft::open()?.read_table(TABLE)
}

/// Fails with one clear line, before anything is touched, when the process cannot change the
/// network (e.g. not root, or capabilities dropped).
pub fn require_net_admin() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if eff & (1 << CAP_NET_ADMIN) == 0 {
        bail!("netnat needs CAP_NET_ADMIN to change the network: run it as root");
    }
    Ok(())
}

/// Shorthand for refusing input: the error is an `InputError`, so the exit status is 2.
pub fn refuse<T>(msg: impl Into<String>) -> Result<T> {
    Err(InputError(msg.into()).into())
}
