//! The one mapping-change operation: every front door that publishes or removes ports (`netnat
//! publish` and `unpublish`, CNI ADD, DEL and GC, and the Docker driver) translates its input
//! into a `Change` and calls `change`; `apply` translates its file's ports into
//! `Change::Declare` and runs the same operation's halves within its own run.
//!
//! `plan` is pure: the record before + the change -> the record after and what it does (one
//! validation, one conflict check, with the same rules and messages for every front door).
//! `stage` is the planning half: `plan`, then the checks that need the host (host addresses,
//! IPv6, interfaces not there yet as notes). `change` runs the rest in the engine's order:
//! reserve room in the record, send exactly the element changes as one netlink batch, save the
//! record, then `flush_changed` drops the conntrack entries of changed datagram ports. `apply`
//! calls `stage` and `flush_changed` too; between them its one batch is the whole table's
//! difference (the links' table changes and the mappings' together), and it records what its
//! steps did even when one failed. Nothing here prints: notes and warnings come back in the
//! `Outcome`.
//!
//! Who holds a host port: the command line (a mapping no attachment owns) or one CNI attachment.
//! The same container asking for a held port from another attachment (Podman gives every network
//! of a container the same port mappings) gets a standby mapping: recorded, not in the kernel,
//! promoted in the same transaction when the active one's attachment goes.

use super::ports::{check_host_addresses, flush_conntrack, missing_interfaces, Selector};
use super::{forward_warnings, Engine, LinkKernel};
use crate::model::{allow_for, Attachment, AttachmentId, Cidr, Family, InputError, Mapping, PublishSpec, State};
use crate::validate;
use anyhow::Result;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;

/// A change to the published mappings, as a front door asks for it.
#[derive(Debug, Clone)]
pub enum Change {
    /// Mappings of the command line. `allow`: their allow list (None: unchanged for a mapping
    /// already published, none for a new one). `replace`: a host port the command line published
    /// to another target is switched to this one (otherwise refused).
    Publish { specs: Vec<PublishSpec>, allow: Option<Vec<Cidr>>, replace: bool },
    /// The command line's `unpublish`: the mappings the selectors name.
    Unpublish(Vec<Selector>),
    /// An attachment (CNI ADD) owns exactly `maps` from now on (a repeated ADD replaces what it
    /// owned), new ones with the sources of `allow` (empty: every source).
    Attach { id: AttachmentId, maps: Vec<Mapping>, allow: Vec<Cidr> },
    /// These attachments go (CNI DEL, GC) with their mappings; standby mappings take over.
    Detach(Vec<AttachmentId>),
    /// `apply`: the command line's mappings become exactly `maps`, each with its allow list
    /// (a host port the file gives another target is switched, as `--replace` does); the
    /// attachments' mappings stay.
    Declare { maps: Vec<(Mapping, Vec<Cidr>)> },
}

/// A host port switched to a new target (`publish --replace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Switched {
    pub from: Mapping,
    pub to: Mapping,
}

/// What a change did (or, from `plan`, will do).
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// New mappings, now in the kernel and the record.
    pub added: Vec<Mapping>,
    /// Asked for and already published as asked (allow list included).
    pub already: Vec<Mapping>,
    /// Already published, with their allow list replaced by the one asked for.
    pub allow_replaced: Vec<Mapping>,
    /// Host ports switched to a new target in the same transaction.
    pub switched: Vec<Switched>,
    /// Mappings taken out of the kernel and the record.
    pub removed: Vec<Mapping>,
    /// Recorded as standby (the same container holds the host port from another attachment).
    pub standby: Vec<Mapping>,
    /// Standby mappings made active because the active one went.
    pub promoted: Vec<Mapping>,
    /// Positions of `Unpublish` selectors that named nothing published.
    pub not_found: Vec<usize>,
    /// Attachments removed (`Detach`).
    #[serde(skip)]
    pub detached: Vec<AttachmentId>,
    /// Things the user should know (an interface that does not exist yet).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    /// The mappings whose elements change (the batch sends exactly these).
    pub fn touched(&self) -> Vec<Mapping> {
        let sw = self.switched.iter().flat_map(|s| [s.from, s.to]);
        self.added
            .iter()
            .chain(&self.removed)
            .chain(&self.allow_replaced)
            .chain(&self.promoted)
            .copied()
            .chain(sw)
            .collect()
    }

    /// The mappings that are active after the change and were asked for or promoted.
    fn active_asked(&self) -> Vec<Mapping> {
        let to = self.switched.iter().map(|s| s.to);
        self.added
            .iter()
            .chain(&self.already)
            .chain(&self.allow_replaced)
            .chain(&self.promoted)
            .copied()
            .chain(to)
            .collect()
    }
}

/// A host port asked for that someone else holds. Exit 1 on the command line (a conflict with
/// the live state, as a concurrent command would meet it); CNI's "port taken" (code 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTaken {
    pub wanted: Mapping,
    pub held: Mapping,
    /// The attachment that holds it; None: the command line.
    pub holder: Option<AttachmentId>,
    /// The attachment that asked; None: the command line.
    pub asker: Option<AttachmentId>,
}

impl fmt::Display for PortTaken {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (m, o, port) = (self.wanted, self.held, self.wanted.host_spec());
        match (&self.asker, &self.holder) {
            (Some(a), Some(h)) => {
                write!(f, "{a} asks for {m}, but host port {port} is already published as {o} for {h}")
            }
            (Some(a), None) => write!(
                f,
                "{a} asks for {m}, but host port {port} is already published as {o} for `netnat publish` (a mapping of \
                 the netnat command line)"
            ),
            (None, Some(h)) => write!(
                f,
                "cannot publish {m}: host port {port} is already published as {o} for {h}; its container runtime \
                 owns it (--replace switches only ports the command line published)"
            ),
            (None, None) => write!(
                f,
                "cannot publish {m}: host port {port} is already published as {o}; `netnat publish --replace` \
                 switches it to the new target in one transaction"
            ),
        }
    }
}

impl std::error::Error for PortTaken {}

/// Runs a change in the engine's order (see the module's doc). A refused change touches nothing.
pub fn change(e: &mut Engine, change: &Change) -> Result<Outcome> {
    let (want, mut out) = stage(&e.state, e.kernel.links.as_mut(), change)?;
    let new: Vec<Mapping> = out.added.iter().chain(&out.standby).chain(&out.promoted).copied().collect();
    e.reserve_for_mappings(&new)?;
    let before = std::mem::replace(&mut e.state, want);
    // Containers of a runtime's own bridges (CNI) answer the host's 127.0.0.1 only with
    // route_localnet on that bridge, as portmap does it.
    let owned: Vec<Mapping> =
        out.added.iter().chain(&out.promoted).filter(|m| e.state.owner_of(m).is_some()).copied().collect();
    crate::host::localhost_to_foreign_bridges(&mut e.state, &owned, || e.kernel.links.addrs())?;
    let touched = out.touched();
    // A publish syncs even with nothing to add: it repairs rules that drifted (as every command
    // does); other changes that change nothing write nothing.
    if !touched.is_empty() || matches!(change, Change::Publish { .. }) {
        e.sync_mappings(&before, &touched)?;
    } else if e.state == before {
        return Ok(out);
    }
    e.save()?;
    if let Err(err) = flush_changed(&out) {
        out.warnings.push(format!(
            "could not flush the conntrack entries of the changed UDP/SCTP ports (they expire on their own): {err:#}"
        ));
    }
    if !out.added.is_empty() || !out.switched.is_empty() {
        out.warnings.extend(forward_warnings(&e.state, e.kernel.firewall.as_mut()));
    }
    Ok(out)
}

/// The planning half of `change`, which `apply` runs for its mappings too: `plan` on `base`,
/// then the checks that need the host (each host address asked for is one of its addresses,
/// IPv6 is there when asked for; interfaces that do not exist yet come back as notes). Changes
/// nothing.
pub fn stage(base: &State, links: &mut dyn LinkKernel, change: &Change) -> Result<(State, Outcome)> {
    let (want, mut out) = plan(base, change)?;
    let asked = out.active_asked();
    check_host_addresses(links, &asked)?;
    if asked.iter().any(|m| m.family() == Family::V6) {
        crate::link::ipv6_available("this host's network namespace")?;
    }
    out.notes.extend(missing_interfaces(links, &asked)?);
    Ok((want, out))
}

/// The commit half's follow-up once the record is saved (for `change` and `apply`): conntrack
/// entries made before (a UDP client already sending to the host port) would keep their old
/// translation, so those of the changed datagram ports are dropped, keyed by the HOST port. TCP
/// is left alone: established connections drain on the target they have, new ones see the new
/// rules. The error is the front door's to word (a warning: the kernel and record agree).
pub fn flush_changed(out: &Outcome) -> Result<()> {
    flush_conntrack(&out.touched())
}

/// The record a change leads to from `state`, and what it does; nothing here needs the kernel.
pub fn plan(state: &State, change: &Change) -> Result<(State, Outcome)> {
    let mut want = state.clone();
    let mut out = Outcome::default();
    match change {
        Change::Publish { specs, allow, replace } => {
            publish(state, &mut want, &mut out, specs, allow.as_deref(), *replace)?
        }
        Change::Unpublish(sels) => unpublish(&mut want, &mut out, sels)?,
        Change::Attach { id, maps, allow } => attach(state, &mut want, &mut out, id, maps, allow)?,
        Change::Detach(ids) => detach(state, &mut want, &mut out, ids),
        Change::Declare { maps } => declare(state, &mut want, &mut out, maps)?,
    }
    // Allow lists go with their mappings.
    let active: HashSet<&Mapping> = want.mappings.iter().collect();
    want.allow.retain(|a| active.contains(&a.mapping));
    validate::ensure(&want, "")?;
    Ok((want, out))
}

/// The mappings of a request alone must not compete for a host port among themselves.
fn check_request(maps: &[Mapping]) -> Result<(), InputError> {
    validate::ensure(&State { mappings: maps.to_vec(), ..State::default() }, "")
}

fn publish(
    state: &State,
    want: &mut State,
    out: &mut Outcome,
    specs: &[PublishSpec],
    allow: Option<&[Cidr]>,
    replace: bool,
) -> Result<()> {
    // Name targets need the record; so does nothing else of the checks.
    let mut maps: Vec<Mapping> = vec![];
    for s in specs {
        for m in s.resolve(state)? {
            if !maps.contains(&m) {
                maps.push(m);
            }
        }
    }
    let lists: Vec<Option<Vec<Cidr>>> =
        maps.iter().map(|m| allow.map(|a| allow_for(m, a)).transpose()).collect::<Result<_, InputError>>()?;
    if allow.is_some() {
        if let Some(m) = maps.iter().find(|m| m.host_if.is_some()) {
            return super::refuse(format!(
                "--allow: {m} is bound to an interface; allow lists apply to ports published on addresses"
            ));
        }
        if let Some(m) = maps.iter().find(|m| state.is_routed(m)) {
            return super::refuse(format!(
                "--allow: {m} goes to an IPv6-routed network, where the container's own address is published \
                 without DNAT; allow lists apply to translated ports only"
            ));
        }
    }
    check_request(&maps)?;
    for (m, list) in maps.into_iter().zip(lists) {
        if state.mappings.contains(&m) {
            match list {
                Some(l) if l != state.allow_of(&m) => {
                    want.set_allow(&m, l);
                    out.allow_replaced.push(m);
                }
                _ => out.already.push(m),
            }
            continue;
        }
        let held: Vec<Mapping> = want.mappings.iter().filter(|o| o.conflicts_with(&m)).copied().collect();
        if let Some(o) = held.first() {
            let holder = state.owner_of(o).map(Attachment::id);
            if !replace || holder.is_some() {
                return Err(PortTaken { wanted: m, held: *o, holder, asker: None }.into());
            }
        }
        // Switching one mapping keeps its allow list unless another is given.
        let kept = match held.as_slice() {
            [o] => state.allow_of(o).to_vec(),
            _ => vec![],
        };
        for o in &held {
            want.mappings.retain(|x| x != o);
            out.switched.push(Switched { from: *o, to: m });
        }
        want.mappings.push(m);
        want.set_allow(&m, list.unwrap_or(kept));
        if held.is_empty() {
            out.added.push(m);
        }
    }
    Ok(())
}

fn declare(state: &State, want: &mut State, out: &mut Outcome, maps: &[(Mapping, Vec<Cidr>)]) -> Result<()> {
    let owned: HashSet<&Mapping> = state.attachments.values().flat_map(|a| &a.mappings).collect();
    let (cni, cli): (Vec<Mapping>, Vec<Mapping>) = state.mappings.iter().partition(|m| owned.contains(m));
    let asked: Vec<Mapping> = maps.iter().map(|(m, _)| *m).collect();
    check_request(&asked)?;
    // Sets: `apply` may declare 10,000 mappings.
    let (cli_set, asked_set): (HashSet<&Mapping>, HashSet<&Mapping>) = (cli.iter().collect(), asked.iter().collect());
    let old_allow: std::collections::HashMap<&Mapping, &[Cidr]> =
        state.allow.iter().map(|a| (&a.mapping, a.from.as_slice())).collect();
    want.mappings = asked.clone();
    want.mappings.extend(cni.iter().copied());
    want.allow.retain(|a| owned.contains(&a.mapping));
    for (m, list) in maps {
        if let Some(o) = cni.iter().find(|o| o.conflicts_with(m)) {
            let holder = state.owner_of(o).map(Attachment::id);
            return Err(PortTaken { wanted: *m, held: *o, holder, asker: None }.into());
        }
        if !list.is_empty() {
            want.allow.push(crate::model::AllowList { mapping: *m, from: list.clone() });
        }
        if cli_set.contains(m) {
            if old_allow.get(m).copied().unwrap_or_default() != list.as_slice() {
                out.allow_replaced.push(*m);
            } else {
                out.already.push(*m);
            }
            continue;
        }
        let held: Vec<Mapping> =
            cli.iter().filter(|o| o.conflicts_with(m) && !asked_set.contains(o)).copied().collect();
        out.switched.extend(held.iter().map(|o| Switched { from: *o, to: *m }));
        if held.is_empty() {
            out.added.push(*m);
        }
    }
    let switched: HashSet<Mapping> = out.switched.iter().map(|s| s.from).collect();
    out.removed.extend(cli.iter().filter(|o| !asked_set.contains(o) && !switched.contains(o)));
    Ok(())
}

fn unpublish(want: &mut State, out: &mut Outcome, sels: &[Selector]) -> Result<()> {
    for (i, sel) in sels.iter().enumerate() {
        let exact = match sel {
            Selector::Exact(p) => p.resolve(want)?,
            Selector::Host(_) => vec![],
        };
        let hit = |m: &Mapping| match sel {
            Selector::Exact(_) => exact.contains(m),
            Selector::Host(h) => h.matches(m),
        };
        let before = out.removed.len();
        out.removed.extend(want.mappings.iter().filter(|m| hit(m)).copied());
        want.mappings.retain(|m| !hit(m));
        if out.removed.len() == before {
            out.not_found.push(i);
        }
    }
    // A port of a container is closed as asked: its attachment no longer holds it, and no
    // standby takes over.
    let removed = &out.removed;
    for a in want.attachments.values_mut() {
        a.mappings.retain(|m| !removed.contains(m));
        a.standby.retain(|s| !removed.iter().any(|r| r.conflicts_with(s)));
    }
    Ok(())
}

fn attach(
    state: &State,
    want: &mut State,
    out: &mut Outcome,
    id: &AttachmentId,
    maps: &[Mapping],
    allow: &[Cidr],
) -> Result<()> {
    check_request(maps)?;
    let key = id.key();
    let (old_active, old_standby) =
        state.attachments.get(&key).map(|a| (a.mappings.clone(), a.standby.clone())).unwrap_or_default();
    let mut att = Attachment {
        network: id.network.clone(),
        container_id: id.container_id.clone(),
        ifname: id.ifname.clone(),
        mappings: vec![],
        standby: vec![],
    };
    for m in maps {
        if old_active.contains(m) {
            att.mappings.push(*m);
            continue;
        }
        let Some(o) = state.mappings.iter().find(|o| o.conflicts_with(m) && !old_active.contains(o)) else {
            if !allow.is_empty() {
                want.set_allow(m, allow_for(m, allow)?);
            }
            want.mappings.push(*m);
            att.mappings.push(*m);
            out.added.push(*m);
            continue;
        };
        match state.owner_of(o) {
            Some(h) if h.container_id == id.container_id && h.id().key() != key => {
                att.standby.push(*m);
                if !old_standby.contains(m) {
                    out.standby.push(*m);
                }
            }
            h => {
                let holder = h.map(Attachment::id);
                return Err(PortTaken { wanted: *m, held: *o, holder, asker: Some(id.clone()) }.into());
            }
        }
    }
    let gone: Vec<Mapping> = old_active.iter().filter(|m| !maps.contains(m)).copied().collect();
    want.mappings.retain(|m| !gone.contains(m));
    out.removed.extend(gone.iter().copied());
    if maps.is_empty() {
        want.attachments.remove(&key);
    } else {
        want.attachments.insert(key, att);
    }
    promote(state, want, out, &gone);
    Ok(())
}

fn detach(state: &State, want: &mut State, out: &mut Outcome, ids: &[AttachmentId]) {
    let mut gone = vec![];
    for id in ids {
        if let Some(a) = want.attachments.remove(&id.key()) {
            gone.extend(a.mappings);
            out.detached.push(id.clone());
        }
    }
    let set: HashSet<&Mapping> = gone.iter().collect();
    want.mappings.retain(|m| !set.contains(m));
    out.removed.extend(gone.iter().copied());
    promote(state, want, out, &gone);
}

/// For each mapping that left the kernel, a standby mapping of the same container whose host
/// port is now free becomes active (the first attachment by key), with the allow list the gone
/// one had: the port keeps answering.
fn promote(state: &State, want: &mut State, out: &mut Outcome, gone: &[Mapping]) {
    for r in gone {
        let pick = want.attachments.iter().find_map(|(k, a)| {
            let s =
                a.standby.iter().find(|s| s.conflicts_with(r) && !want.mappings.iter().any(|o| o.conflicts_with(s)))?;
            Some((k.clone(), *s))
        });
        let Some((key, s)) = pick else { continue };
        let a = want.attachments.get_mut(&key).expect("found above");
        a.standby.retain(|x| *x != s);
        a.mappings.push(s);
        want.mappings.push(s);
        want.set_allow(&s, state.allow_of(r).to_vec());
        out.promoted.push(s);
    }
}

/// Connections on a host port that still go to an earlier target: TCP connections established
/// before the port was switched (`publish --replace`, a changed target in `apply`) keep their
/// translation in conntrack until they end. Counted per old target; connections that have
/// ended (TIME_WAIT) and untranslated ones (a host service on the port) are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Draining {
    pub container_ip: std::net::IpAddr,
    pub container_port: u16,
    pub connections: usize,
}

/// The draining connections of `m` among the conntrack `entries`.
pub fn draining(m: &Mapping, entries: &[crate::conntrack::Entry]) -> Vec<Draining> {
    let filter = crate::conntrack::Filter {
        proto: m.protocol.number(),
        dport_min: m.host_port,
        dport_max: m.host_port_end,
        daddr: m.host_ip,
        ipv6: m.family() == Family::V6,
    };
    let mut out: Vec<Draining> = vec![];
    for e in entries.iter().filter(|e| filter.matches(e) && e.is_open() && e.reply_src != e.dst) {
        let port = m.container_port + (e.dport - m.host_port);
        if e.reply_src == m.container_ip && e.reply_sport == port {
            continue;
        }
        match out.iter_mut().find(|d| d.container_ip == e.reply_src && d.container_port == e.reply_sport) {
            Some(d) => d.connections += 1,
            None => out.push(Draining { container_ip: e.reply_src, container_port: e.reply_sport, connections: 1 }),
        }
    }
    out
}

#[cfg(test)]
mod tests;
