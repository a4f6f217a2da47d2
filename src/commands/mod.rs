//! One function per subcommand. Each: check the input (InputError → exit 2), take the lock, load
//! the record, change the kernel (links through `link`, firewall through `nft` as one
//! transaction planned by `ruleset`), then save the record. Nothing here builds a netlink message.

pub mod apply;
pub mod audit;
pub mod network;
pub mod ports;
pub mod recover;
pub mod reload;
pub mod reset;

use crate::link::{netns, sysctl, EndpointSpec, Links};
use crate::model::{InputError, Mapping, State};
use crate::nft::{LiveTable, Nft};
use crate::recover::{self as rebuild, KernelView, Mark};
use crate::ruleset::{self, NftOp, TABLE};
use crate::state::{Record, Store};
use anyhow::{bail, Result};
use std::path::Path;

/// Room reserved beyond the current record for what one command adds (a network, a sandbox with
/// an endpoint, a few ports: each a few hundred bytes). `publish` and `apply`, which can add
/// more, reserve for the record they will write (`Ctx::reserve_for`).
const ROOM: usize = 2048;

/// A running command that changes the kernel: the lock, the record and the place it writes to.
///
/// The order that keeps the record and the kernel in step (issue 12), the same for every command:
/// 1. `open`: lock, read the record. An unreadable record (or a missing one while the kernel
///    holds netnat's table, links or namespaces) is refused with exit 1, pointing at `netnat
///    recover`: nothing is touched, since what netnat would change is not known.
/// 2. `open` (and `reserve_for`): prove the record can be written before the kernel is touched,
///    by writing a temporary file beside it as large as the record will become, with fsync. A
///    missing state directory that cannot be created, a read-only or a full one fail here, with
///    the reason, and the kernel is as it was.
/// 3. The command changes the kernel (undoing its own partial work when a step fails, as before).
/// 4. `save`: overwrite the reserved file in place (no new space), fsync, rename it over the
///    record (same directory: no new space), fsync the directory.
/// 5. If step 4 still fails (an I/O error, the directory made read-only meanwhile, an immutable
///    record file): `save` puts the kernel back to what the old record says (firewall in one
///    batch, links through the apply planner) and the command exits 1 saying so.
///
/// The record is never written before the kernel change: it would then claim what a failed or
/// killed command never made.
pub struct Ctx {
    store: Store,
    pub state: State,
    /// The record as it was read (the kernel state `save` goes back to when it cannot write).
    before: State,
}

impl Ctx {
    /// For commands that change the kernel: needs CAP_NET_ADMIN, takes the lock, reads the
    /// record (refusing a damaged one) and reserves room for writing it back (steps 1 and 2).
    pub fn open(dir: &Path) -> Result<Ctx> {
        require_net_admin()?;
        let mut store = Store::lock(dir)?;
        let state = match load(&store)? {
            Ok(s) => s,
            Err(why) => bail!("{}", refusal(&store, &why)),
        };
        store.reserve(store.record_len() + ROOM)?;
        Ok(Ctx { store, before: state.clone(), state })
    }

    /// For `apply --dry-run`: the record, refused when damaged, but nothing reserved: it
    /// writes nothing (and works in a read-only state directory).
    pub fn open_unreserved(dir: &Path) -> Result<Ctx> {
        require_net_admin()?;
        let store = Store::lock(dir)?;
        let state = match load(&store)? {
            Ok(s) => s,
            Err(why) => bail!("{}", refusal(&store, &why)),
        };
        Ok(Ctx { store, before: state.clone(), state })
    }

    /// For `reset` and `recover`, which must work on a damaged record: as `open`, but a record
    /// that cannot be used is replaced (in memory) by what the kernel holds, and why is returned
    /// with what the kernel could not tell.
    pub fn open_any(dir: &Path) -> Result<(Ctx, Option<Damage>)> {
        require_net_admin()?;
        let mut store = Store::lock(dir)?;
        let (state, damage) = match load(&store)? {
            Ok(s) => (s, None),
            Err(why) => {
                let r = rebuild::rebuild(&observe_kernel(Some(&store), true)?);
                (r.state, Some(Damage { why, lost: r.lost }))
            }
        };
        // A rebuilt record can be larger than the damaged file (an empty one, say).
        let len = store.record_len().max(crate::state::render(&state).len());
        store.reserve(len + ROOM)?;
        Ok((Ctx { store, before: state.clone(), state }, damage))
    }

    /// Makes sure the record can grow to `predicted` (plus the usual room) before the kernel is
    /// touched.
    pub fn reserve_for(&mut self, predicted: &State) -> Result<()> {
        self.store.reserve(crate::state::render(predicted).len() + ROOM)
    }

    /// Makes sure the record can grow by these mappings before the kernel is touched, without
    /// rendering the whole record again (a publish stays cheap with 10,000 ports published).
    pub fn reserve_for_mappings(&mut self, added: &[Mapping]) -> Result<()> {
        // Pretty JSON nested in the record is indented deeper than alone: twice is plenty.
        let more = 2 * serde_json::to_string_pretty(added).map(|t| t.len()).unwrap_or(0);
        self.store.reserve(self.store.record_len() + ROOM + more)
    }

    /// Step 4, and step 5 when it fails.
    pub fn save(&mut self) -> Result<()> {
        let Err(e) = self.store.save(&self.state) else {
            self.before = self.state.clone();
            return Ok(());
        };
        if self.before == self.state {
            return Err(e);
        }
        match self.put_kernel_back() {
            Ok(()) => Err(e.context("the kernel was put back as it was before this command")),
            Err(undo) => Err(e.context(format!(
                "putting the kernel back also failed ({undo:#}); run `netnat audit` to see what differs from the record"
            ))),
        }
    }

    /// Makes the kernel match `before` again: the firewall in one transaction, then the link
    /// steps the apply planner gives from the current state to the old one.
    fn put_kernel_back(&mut self) -> Result<()> {
        let mut nft = Nft::open()?;
        let live = nft.read_table(TABLE)?;
        let mut failures = vec![];
        if let Err(e) = nft.apply(&ruleset::plan(&ruleset::desired(&self.before), live.as_ref())) {
            failures.push(format!("table inet {TABLE}: {e:#}"));
        }
        let links = Links::open()?;
        let obs = apply::observe(&links, &self.before, &self.state)?;
        let mut rec = self.state.clone();
        for op in crate::linkplan::plan_links(&self.before, &self.state, &obs) {
            if let Err(e) = apply::execute(&op, &links, &self.store, &mut rec) {
                failures.push(format!("{op}: {e:#}"));
            }
        }
        let _ = reload::write_sysctl_conf(&self.before);
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
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
        return Ok(store.owns_netns(name) || has_sandbox_alias(name));
    }
    store.mark_netns(name)?;
    netns::create(name)?;
    // The kernel's own mark, for when the state directory is lost (see `recover`).
    let alias = Links::open_in(&netns::path(name)).and_then(|l| l.set_alias("lo", &rebuild::sandbox_alias(name)));
    if let Err(e) = alias {
        let _ = delete_netns(store, name);
        return Err(e);
    }
    Ok(true)
}

/// The namespace's lo carries netnat's sandbox alias: netnat created it.
pub(super) fn has_sandbox_alias(name: &str) -> bool {
    let want = Mark::Sandbox(name.into());
    Links::open_in(&netns::path(name))
        .and_then(|l| l.aliased_links())
        .is_ok_and(|v| v.iter().any(|(l, a)| l.name == "lo" && rebuild::parse_alias(a) == Some(want.clone())))
}

/// Wires an endpoint (see `Links::add_endpoint`) and marks its host end as netnat's, for
/// `recover` and `reset`; a failure leaves nothing behind.
pub fn add_endpoint(links: &Links, spec: &EndpointSpec, network: &str, sandbox: &str) -> Result<()> {
    links.add_endpoint(spec)?;
    if let Err(e) = links.set_alias(spec.host_ifname, &rebuild::endpoint_alias(network, sandbox)) {
        let _ = links.delete_link(spec.host_ifname);
        return Err(e);
    }
    Ok(())
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

/// Why the record could not be used, and what the kernel could not tell when it was rebuilt.
pub struct Damage {
    pub why: String,
    pub lost: Vec<String>,
}

/// The record, or why it cannot be used: unreadable, or missing while the kernel holds
/// netnat's table, links or namespaces (then it was lost, not never written).
pub fn load(store: &Store) -> Result<Result<State, String>> {
    Ok(match store.read() {
        Record::Read(s) => Ok(s),
        Record::Unreadable(why) => Err(why),
        Record::Missing if observe_kernel(Some(store), false)?.is_empty() => Ok(State::default()),
        Record::Missing => Err("the file is missing, while netnat's table, links or namespaces exist".into()),
    })
}

/// The refusal of a command that would change things while the record is damaged.
fn refusal(store: &Store, why: &str) -> String {
    format!(
        "netnat's record {} cannot be used: {why}. Nothing was changed: without its record netnat does not know \
         what it made. Run `netnat recover` to rebuild the record from the kernel (the damaged file is kept), or \
         `netnat reset` to remove everything netnat made",
        store.file().display()
    )
}

/// For the commands that only read (`ls`, `network ls`, `sandbox ls`, `save`, `graph`): the
/// record, or when it cannot be used, what the kernel holds, after one warning line.
pub fn read_state(dir: &Path) -> Result<State> {
    let store = Store::open_existing(dir)?;
    let why = match &store {
        Some(s) => match load(s)? {
            Ok(st) => return Ok(st),
            Err(why) => why,
        },
        None if observe_kernel(None, false)?.is_empty() => return Ok(State::default()),
        None => format!("its directory {} is missing, while netnat's table, links or namespaces exist", dir.display()),
    };
    warn_damaged(dir, &why);
    Ok(rebuild::rebuild(&observe_kernel(store.as_ref(), true)?).state)
}

/// The one warning line of a read-only command on a damaged record.
pub fn warn_damaged(dir: &Path, why: &str) {
    eprintln!(
        "netnat: warning: the record {} cannot be used ({why}); this answer is read from the kernel; `netnat recover` \
         repairs the record",
        dir.join(crate::state::FILE).display()
    );
}

/// What the kernel holds of netnat's (see `recover`): marked bridges and veths, the veths'
/// peers, namespaces netnat created, and table `inet netnat` (with its elements if `elements`).
pub fn observe_kernel(store: Option<&Store>, elements: bool) -> Result<KernelView> {
    let links = Links::open()?;
    let addrs = links.addrs()?;
    let mut k = KernelView::default();
    let addrs_of =
        |index: u32| -> Vec<_> { addrs.iter().filter(|a| a.index == index).map(|a| (a.addr, a.prefix)).collect() };
    for (l, alias) in links.aliased_links()? {
        match (rebuild::parse_alias(&alias), l.kind.as_deref()) {
            (Some(Mark::Network(network)), Some("bridge")) => {
                k.bridges.push(rebuild::BridgeSeen { network, name: l.name.clone(), addrs: addrs_of(l.index) })
            }
            (Some(Mark::Endpoint { network, sandbox }), Some("veth")) => {
                let peer = if elements { find_peer(&sandbox, l.index) } else { None };
                k.veths.push(rebuild::VethSeen { name: l.name.clone(), network, sandbox, peer });
            }
            _ => {}
        }
    }
    for name in netns::list()? {
        if store.is_some_and(|s| s.owns_netns(&name)) || has_sandbox_alias(&name) {
            k.made_namespaces.push(name);
        }
    }
    let mut nft = Nft::open()?;
    k.table = if elements { nft.read_table(TABLE)? } else { nft.read_layout(TABLE)? };
    k.ip_forward = sysctl::read(crate::linkplan::IP_FORWARD).ok();
    Ok(k)
}

/// The sandbox end of the veth whose host end has index `host_index`: its name and addresses.
fn find_peer(sandbox: &str, host_index: u32) -> Option<rebuild::PeerSeen> {
    if !netns::exists(sandbox) {
        return None;
    }
    let inside = Links::open_in(&netns::path(sandbox)).ok()?;
    let peer = inside
        .links()
        .ok()?
        .into_iter()
        .find(|l| l.kind.as_deref() == Some("veth") && l.peer_index == Some(host_index))?;
    let addrs =
        inside.addrs().ok()?.into_iter().filter(|a| a.index == peer.index).map(|a| (a.addr, a.prefix)).collect();
    Some(rebuild::PeerSeen { ifname: peer.name, addrs })
}
