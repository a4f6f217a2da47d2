//! The engine: netnat's operations on typed values, below every front door (the CLI in
//! `commands`, the CNI plugin). Each operation takes the lock, reads the record, checks the whole
//! desired state (`validate`), changes the kernel through the seam the `Engine` holds
//! (`seam::Kernel`: links through `LinkKernel`, the firewall through `Firewall` as one
//! transaction planned by `ruleset`), saves the record, and returns what it did as a typed
//! outcome; it prints nothing. Nothing here builds a netlink message, and only
//! `Kernel::netlink` opens the real handles (a sandbox's own namespace aside, in `kernel`).
//!
//! One order for every operation (see `Engine` for the record's side of it):
//! 1. Check the input and the state it leads to; a problem is an `InputError` (exit 2) and
//!    nothing is touched.
//! 2. Change the kernel. A step that fails undoes the operation's own earlier steps where it can
//!    and fails the operation; the record is not written.
//! 3. Save the record. If that fails, the kernel is put back to the old record (`Engine::save`).
//! 4. Follow-ups that do not change what netnat owns (the conntrack flush of changed UDP ports,
//!    the sysctl.d drop-in, warnings about other tables) run after the save; their failures are
//!    warnings in the outcome: the kernel and the record already agree.

pub mod apply;
#[cfg(test)]
pub(crate) mod fake;
pub mod handoff;
pub mod hostports;
mod kernel;
pub mod mapping;
pub mod metrics;
pub mod network;
mod observe;
pub mod ports;
pub mod recover;
pub mod reload;
pub mod reset;
pub mod seam;
#[cfg(test)]
mod tests;
pub mod trace;

pub use observe::{listeners, missing_links, observe_audit, observe_kernel, observe_metrics};
pub use seam::{Firewall, Kernel, LinkKernel};

use crate::model::{InputError, Mapping, State};
use crate::nft::LiveTable;
use crate::recover as rebuild;
use crate::ruleset::{self, Plan, TABLE};
use crate::state::{Record, Store};
use anyhow::{bail, Result};
use std::path::Path;

/// Room reserved beyond the current record for what one command adds (a network, a sandbox with
/// an endpoint, a few ports: each a few hundred bytes). `publish` and `apply`, which can add
/// more, reserve for the record they will write (`Engine::reserve_for`).
const ROOM: usize = 2048;

/// A running operation that changes the kernel: the lock, the record and the place it writes to.
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
///    record (same directory: no new space), fsync the directory. A save of several files (CNI
///    attachments, record format 3) writes them first and commits them as one journal renamed
///    into place the same way (`crate::state`).
/// 5. If step 4 still fails (an I/O error, the directory made read-only meanwhile, an immutable
///    record file): `save` puts the kernel back to what the old record says (firewall in one
///    batch, links through the apply planner) and the command exits 1 saying so.
///
/// The record is never written before the kernel change: it would then claim what a failed or
/// killed command never made.
pub struct Engine {
    store: Store,
    pub state: State,
    /// The record as it was read (the kernel state `save` goes back to when it cannot write).
    before: State,
    /// `save` also removes the chains of a `netnat trace` that was killed (not for `recover`,
    /// which changes nothing in the kernel, nor dry runs).
    sweep_trace: bool,
    /// The firewall table and the links every step of the operation goes through.
    pub kernel: Kernel,
    /// Only part of the record was read (`open_for`: a CNI request's attachment and those it
    /// can meet): the firewall is changed element by element only, and put back the same way.
    partial: bool,
    /// The mappings whose elements `sync_mappings` sent (what a partial engine puts back).
    touched: Vec<Mapping>,
}

/// A change a partial engine (`Engine::open_for`) cannot make from the part of the record it
/// read (the table's rules would change, or the kernel's elements are not as recorded): nothing
/// was changed; the caller runs it again on the whole record.
#[derive(Debug)]
pub struct NeedsWhole;

impl std::fmt::Display for NeedsWhole {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "this change needs netnat's whole record")
    }
}

impl std::error::Error for NeedsWhole {}

impl Engine {
    /// For commands that change the kernel: needs CAP_NET_ADMIN, takes the lock, reads the
    /// record (refusing a damaged one) and reserves room for writing it back (steps 1 and 2).
    pub fn open(dir: &Path) -> Result<Engine> {
        require_net_admin()?;
        let kernel = Kernel::netlink()?;
        let mut e = Engine::open_with(dir, kernel)?;
        e.sweep_trace = true;
        Ok(e)
    }

    /// For `mapping::change` (publish, unpublish): as `open`, but the room is reserved by the
    /// change itself, for the mappings it adds, before it touches the kernel: one reservation, not
    /// two.
    pub fn open_for_mappings(dir: &Path) -> Result<Engine> {
        let mut e = Engine::open_unreserved(dir)?;
        e.sweep_trace = true;
        Ok(e)
    }

    /// As `open`, on the kernel given (the unit tests' fakes): the lock, the record (refused
    /// when damaged) and its room reserved.
    pub fn open_with(dir: &Path, mut kernel: Kernel) -> Result<Engine> {
        let mut store = Store::lock(dir)?;
        let state = match load(&store, &mut kernel)? {
            Ok(s) => s,
            Err(why) => bail!("{}", refusal(&store, &why)),
        };
        store.reserve(store.record_len() + ROOM)?;
        Ok(Engine::new(store, state, kernel))
    }

    fn new(store: Store, state: State, kernel: Kernel) -> Engine {
        Engine { store, before: state.clone(), state, sweep_trace: false, kernel, partial: false, touched: vec![] }
    }

    /// For a CNI request of attachment `key` asking for `maps` (ADD; for DEL none, and the
    /// `tokens` of the host ports its request names, see `Store::read_for`): as `open`
    /// (or, with `reserve` false, `open_unreserved`), but of the record only the main file and
    /// the attachments the request can meet are read (`Store::read_for`), so the request costs
    /// the same beside 10 or 10,000 mappings. A change it cannot make so fails with `NeedsWhole`
    /// before anything is touched.
    pub fn open_for(dir: &Path, key: &str, (maps, tokens): (&[Mapping], &[String]), reserve: bool) -> Result<Engine> {
        require_net_admin()?;
        let mut kernel = Kernel::netlink()?;
        let mut store = Store::lock(dir)?;
        let state = match load_with(&store, store.read_for(key, maps, tokens), &mut kernel)? {
            Ok(s) => s,
            Err(why) => bail!("{}", refusal(&store, &why)),
        };
        if reserve {
            store.reserve(store.record_len() + ROOM)?;
        }
        let mut e = Engine::new(store, state, kernel);
        e.partial = true;
        Ok(e)
    }

    /// For `apply --dry-run`, and CNI DEL and GC, which often find nothing to do: the record,
    /// refused when damaged, but nothing reserved yet: a change reserves room before it touches
    /// the kernel (`mapping::change` does), a dry run writes nothing (and works in a read-only
    /// state directory).
    pub fn open_unreserved(dir: &Path) -> Result<Engine> {
        require_net_admin()?;
        Engine::open_unreserved_with(dir, Kernel::netlink()?)
    }

    /// As `open_unreserved`, on the kernel given.
    pub fn open_unreserved_with(dir: &Path, mut kernel: Kernel) -> Result<Engine> {
        let store = Store::lock(dir)?;
        let state = match load(&store, &mut kernel)? {
            Ok(s) => s,
            Err(why) => bail!("{}", refusal(&store, &why)),
        };
        Ok(Engine::new(store, state, kernel))
    }

    /// For `reset` and `recover`, which must work on a damaged record: as `open`, but a record
    /// that cannot be used is replaced (in memory) by what the kernel holds, and why is returned
    /// with what the kernel could not tell.
    pub fn open_any(dir: &Path) -> Result<(Engine, Option<Damage>)> {
        require_net_admin()?;
        Engine::open_any_with(dir, Kernel::netlink()?)
    }

    /// As `open_any`, on the kernel given.
    pub fn open_any_with(dir: &Path, mut kernel: Kernel) -> Result<(Engine, Option<Damage>)> {
        let mut store = Store::lock(dir)?;
        let (state, damage) = match load(&store, &mut kernel)? {
            Ok(s) => (s, None),
            Err(why) => {
                let mut r = rebuild::rebuild(&observe_kernel(&mut kernel, Some(&store), true)?);
                // The claims of the CNI attachments outlive a damaged file: their owners come back.
                if store.adopt_attachments(&mut r.state) > 0 {
                    r.lost.push("the standby mappings of CNI attachments (not in the kernel)".into());
                }
                (r.state, Some(Damage { why, lost: r.lost }))
            }
        };
        // A rebuilt record can be larger than the damaged file (an empty one, say).
        let len = store.record_len().max(crate::state::render(&state).len());
        store.reserve(len + ROOM)?;
        Ok((Engine::new(store, state, kernel), damage))
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
            if self.sweep_trace {
                // Best effort: the command's own work is done and recorded. What cannot be removed
                // now is left for the next command, and `netnat audit` reports it meanwhile.
                let _ = trace::remove_leftover(&self.store, self.kernel.firewall.as_mut());
            }
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
        let mut failures = vec![];
        let fw = &mut self.kernel.firewall;
        if self.partial {
            // Only the elements it sent: the others are not in what this engine read.
            let plan = ruleset::plan_mapping_changes(&self.state, &self.before, &self.touched);
            return fw.apply(&plan.ops()).map_err(|e| anyhow::anyhow!("table inet {TABLE}: {e:#}"));
        }
        match fw.read_table() {
            Ok(live) => {
                if let Err(e) = fw.apply(&ruleset::plan(&ruleset::desired(&self.before), live.as_ref()).ops()) {
                    failures.push(format!("table inet {TABLE}: {e:#}"));
                }
            }
            Err(e) => failures.push(format!("reading table inet {TABLE}: {e:#}")),
        }
        let links = &mut self.kernel.links;
        let obs = links.observe(&self.before, &self.state)?;
        let mut rec = self.state.clone();
        for op in crate::linkplan::plan_links(&self.before, &self.state, &obs) {
            if let Err(e) = links.execute(&op, &self.store, &mut rec) {
                failures.push(format!("{op}: {e:#}"));
            }
        }
        // Best effort: the drop-in only matters at the next boot, and `reload` rewrites it.
        let _ = links.write_conf(&self.before);
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// After only mappings changed (published, unpublished, or their allow lists): sends just
    /// the elements of the mappings `touched` between the state `before` and `self.state`,
    /// without reading the others, so a publish costs the same with 10 or 10,000 ports
    /// published. Falls back to a full `sync_firewall` when the table's layout or rules are not
    /// what the new state needs (the first allow list adds rules, say), or when the kernel says an
    /// element is not as the record says (EEXIST on add, ENOENT on delete: drift).
    /// A partial engine (`open_for`) fails with `NeedsWhole` instead of the full sync: it does not
    /// know every mapping.
    pub fn sync_mappings(&mut self, before: &State, touched: &[Mapping]) -> Result<Plan> {
        let rules_only = ruleset::Desired::rules_only(&self.rules_shape());
        let nft = &mut self.kernel.firewall;
        if let Some(layout) = nft.read_layout()? {
            if !ruleset::plan(&rules_only, Some(&layout)).changes_rules() {
                let plan = ruleset::plan_mapping_changes(before, &self.state, touched);
                match nft.apply(&plan.ops()) {
                    Ok(()) => {
                        self.touched = touched.to_vec();
                        return Ok(plan);
                    }
                    Err(e) if is_errno(&e, &[libc::EEXIST, libc::ENOENT]) => {} // drift: full sync below
                    Err(e) => return Err(e),
                }
            }
        }
        if self.partial {
            return Err(NeedsWhole.into());
        }
        self.sync_firewall()
    }

    /// The state the table's rules are planned from: the state, and for a partial engine whose
    /// attachments are all gone while others it did not read remain, one more (the CNI rules
    /// stay while any attachment does).
    fn rules_shape(&self) -> std::borrow::Cow<'_, State> {
        if !self.partial || !self.state.attachments.is_empty() || !self.store.unread_attachments() {
            return std::borrow::Cow::Borrowed(&self.state);
        }
        let mut s = self.state.clone();
        let unread = crate::model::Attachment {
            network: String::new(),
            container_id: String::new(),
            ifname: String::new(),
            mappings: vec![],
            standby: vec![],
        };
        s.attachments.insert(String::new(), unread);
        std::borrow::Cow::Owned(s)
    }

    /// Brings table `inet netnat` in line with the record: one transaction with only the difference.
    pub fn sync_firewall(&mut self) -> Result<Plan> {
        let nft = &mut self.kernel.firewall;
        let live = nft.read_table()?;
        let plan = ruleset::plan(&ruleset::desired(&self.state), live.as_ref());
        nft.apply(&plan.ops())?;
        Ok(plan)
    }

    /// `sync_firewall` for a caller that wants the operations sent, not the plan (`apply`): the
    /// plan's elements move into the operations instead of being copied.
    pub fn sync_firewall_ops(&mut self) -> Result<Vec<ruleset::NftOp>> {
        let nft = &mut self.kernel.firewall;
        let live = nft.read_table()?;
        let ops = ruleset::plan(&ruleset::desired(&self.state), live.as_ref()).into_ops();
        nft.apply(&ops)?;
        Ok(ops)
    }
}

/// Warnings about forward chains of other tables that drop container traffic (Docker's
/// iptables FORWARD policy DROP, firewalld's final reject, ufw's policy, a hand-written rule),
/// each naming the rule that drops and that firewall's own fix (see `crate::hostfw`).
pub fn forward_warnings(state: &State, fw: &mut dyn Firewall) -> Vec<String> {
    crate::hostfw::warnings(state, fw.foreign())
}

fn is_errno(e: &anyhow::Error, codes: &[i32]) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()).is_some_and(|n| codes.contains(&n))
    })
}

/// Reads netnat's table as it is in the kernel (for the commands that only read).
pub fn read_live_table() -> Result<Option<LiveTable>> {
    Kernel::netlink()?.firewall.read_table()
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
pub fn load(store: &Store, kernel: &mut Kernel) -> Result<Result<State, String>> {
    load_with(store, store.read(), kernel)
}

/// `load` of what `store` gave (all of the record or part of it).
fn load_with(store: &Store, record: Record, kernel: &mut Kernel) -> Result<Result<State, String>> {
    Ok(match record {
        Record::Read(s) => Ok(s),
        Record::Unreadable(why) => Err(why),
        Record::Missing if observe_kernel(kernel, Some(store), false)?.is_empty() => Ok(State::default()),
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
/// record, or when it cannot be used, what the kernel holds with the one warning the command
/// prints (the engine prints nothing).
pub fn read_state(dir: &Path) -> Result<(State, Option<String>)> {
    let store = Store::open_existing(dir)?;
    let kernel = &mut Kernel::netlink()?;
    let why = match &store {
        Some(s) => match load(s, kernel)? {
            Ok(st) => return Ok((st, None)),
            Err(why) => why,
        },
        None if observe_kernel(kernel, None, false)?.is_empty() => return Ok((State::default(), None)),
        None => format!("its directory {} is missing, while netnat's table, links or namespaces exist", dir.display()),
    };
    let state = rebuild::rebuild(&observe_kernel(kernel, store.as_ref(), true)?).state;
    Ok((state, Some(damaged_warning(dir, &why))))
}

/// The one warning line of a read-only command on a damaged record.
pub fn damaged_warning(dir: &Path, why: &str) -> String {
    format!(
        "the record {} cannot be used ({why}); this answer is read from the kernel; `netnat recover` repairs the \
         record",
        dir.join(crate::state::FILE).display()
    )
}
