//! Published ports: `publish` and `unpublish` as nftables map elements, and the mappings with
//! their traffic counters.

use super::{forward_warnings, refuse, Engine};
use crate::conntrack;
use crate::link::Links;
use crate::model::{allow_for, spec_parts, Cidr, Family, HostPorts, InputError, Mapping, Proto, PublishSpec, State};
use crate::validate;
use anyhow::{bail, Result};
use serde::Serialize;

/// What `publish` did.
#[derive(Debug, Default, Serialize)]
pub struct Published {
    /// New mappings, now in the kernel and the record.
    pub added: Vec<Mapping>,
    /// Asked for and already published as asked (allow list included).
    pub already: Vec<Mapping>,
    /// Already published, with their allow list replaced by the one asked for.
    pub replaced: Vec<Mapping>,
    /// Things the user should know (an interface that does not exist yet).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// Publishes ports: one transaction adds their map elements. `allow`, when given, is the list of
/// sources allowed to reach them (each mapping takes the sources of its family); publishing a
/// mapping again with another list replaces its list in the same way. A mapping already
/// published as asked is left alone; a host port published to another target fails the whole
/// request (exit 1: a conflict with the live state, as a concurrent command would meet it).
pub fn publish(e: &mut Engine, specs: &[PublishSpec], allow: Option<&[Cidr]>) -> Result<Published> {
    let (want, mut out) = plan_publish(&e.state, specs, allow)?;
    let asked: Vec<Mapping> = out.added.iter().chain(&out.replaced).chain(&out.already).copied().collect();
    check_host_addresses(&asked)?;
    if asked.iter().any(|m| m.family() == Family::V6) {
        crate::link::ipv6_available("this host's network namespace")?;
    }
    out.notes.extend(missing_interfaces(&asked)?);
    // Even with nothing to add, the sync below repairs rules that drifted (as every command does).
    e.reserve_for_mappings(&out.added)?;
    let before = std::mem::replace(&mut e.state, want);
    let touched: Vec<Mapping> = out.added.iter().chain(&out.replaced).copied().collect();
    e.sync_mappings(&before, &touched)?;
    e.save()?;
    // Entries made before this publish (e.g. a UDP client already sending to the host port)
    // would bypass the new DNAT for their whole life: drop them, keyed by the HOST port.
    out.warnings.extend(flush_conntrack_or_warn(&touched));
    if !out.added.is_empty() {
        out.warnings.extend(forward_warnings(&e.state));
    }
    Ok(out)
}

/// The state a publish leads to from `state`, and what it does: the part of `publish` that needs
/// no kernel (name targets, allow lists, conflicts with the record, the whole-state validation).
pub fn plan_publish(state: &State, specs: &[PublishSpec], allow: Option<&[Cidr]>) -> Result<(State, Published)> {
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
            return refuse(format!(
                "--allow: {m} is bound to an interface; allow lists apply to ports published on addresses"
            ));
        }
        if let Some(m) = maps.iter().find(|m| state.is_routed(m)) {
            return refuse(format!(
                "--allow: {m} goes to an IPv6-routed network, where the container's own address is published \
                 without DNAT; allow lists apply to translated ports only"
            ));
        }
    }
    validate::ensure(&State { mappings: maps.clone(), ..State::default() }, "")?;
    let mut out = Published::default();
    let mut want = state.clone();
    for (m, list) in maps.into_iter().zip(lists) {
        if state.mappings.contains(&m) {
            match list {
                Some(l) if l != state.allow_of(&m) => {
                    want.set_allow(&m, l);
                    out.replaced.push(m);
                }
                _ => out.already.push(m),
            }
            continue;
        }
        if let Some(o) = state.mappings.iter().find(|o| o.conflicts_with(&m)) {
            bail!("cannot publish {m}: host port {} is already published as {o}", m.host_spec());
        }
        want.mappings.push(m);
        want.set_allow(&m, list.unwrap_or_default());
        out.added.push(m);
    }
    validate::ensure(&want, "")?;
    Ok((want, out))
}

/// Which published mappings an `unpublish` argument names.
#[derive(Debug, Clone)]
pub enum Selector {
    /// A whole mapping (HOSTPORT:CONTAINER:PORT), as `publish` took it.
    Exact(PublishSpec),
    /// A host side (`[HOSTIP:]HOSTPORT[/PROTO]`): every mapping on it, of each family a bare
    /// port names.
    Host(HostPorts),
}

impl std::str::FromStr for Selector {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Selector, InputError> {
        // A full mapping has 3 or 4 parts (HOSTPORT:CONTAINER:PORT); a host side 1 or 2.
        if spec_parts(s) >= 3 {
            s.parse().map(Selector::Exact)
        } else {
            s.parse().map(Selector::Host)
        }
    }
}

/// What `unpublish` did.
#[derive(Debug, Default, Serialize)]
pub struct Unpublished {
    pub removed: Vec<Mapping>,
    /// Positions of the selectors that named nothing published.
    pub not_found: Vec<usize>,
    pub warnings: Vec<String>,
}

/// Removes the mappings the selectors name, in one transaction.
pub fn unpublish(e: &mut Engine, sels: &[Selector]) -> Result<Unpublished> {
    let (want, mut out) = plan_unpublish(&e.state, sels)?;
    if out.removed.is_empty() {
        return Ok(out);
    }
    let before = std::mem::replace(&mut e.state, want);
    e.sync_mappings(&before, &out.removed)?;
    e.save()?;
    out.warnings.extend(flush_conntrack_or_warn(&out.removed));
    Ok(out)
}

/// The state an unpublish leads to, and what it removes (no kernel needed).
pub fn plan_unpublish(state: &State, sels: &[Selector]) -> Result<(State, Unpublished)> {
    let mut out = Unpublished::default();
    let mut want = state.clone();
    for (i, sel) in sels.iter().enumerate() {
        let exact = match sel {
            Selector::Exact(p) => p.resolve(&want)?,
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
    want.allow.retain(|a| want.mappings.contains(&a.mapping));
    Ok((want, out))
}

/// An interface a mapping is bound to may appear later (a VPN, a USB link): accepted, with a note.
fn missing_interfaces(maps: &[Mapping]) -> Result<Vec<String>> {
    if maps.iter().all(|m| m.host_if.is_none()) {
        return Ok(vec![]);
    }
    let links = Links::open()?;
    let mut notes = vec![];
    for m in maps {
        if let Some(i) = m.host_if {
            if links.link(i.as_str())?.is_none() {
                notes.push(format!("interface {i} of {m} does not exist (yet); the port answers once it appears"));
            }
        }
    }
    Ok(notes)
}

/// A HOSTIP must be an address this host has, or the mapping could never match.
pub(crate) fn check_host_addresses(maps: &[Mapping]) -> Result<()> {
    if maps.iter().all(|m| m.host_ip.is_none()) {
        return Ok(());
    }
    let addrs = Links::open()?.addrs()?;
    for m in maps {
        if let Some(ip) = m.host_ip {
            if !ip.is_loopback() && !addrs.iter().any(|a| a.addr == ip) {
                return refuse(format!("host address {ip} in {m} is not an address of this host"));
            }
        }
    }
    Ok(())
}

/// Drops conntrack entries keyed by the HOST port of each mapping (not the container port), so
/// a datagram flow that kept its 5-tuple across a publish, unpublish or re-publish follows the
/// new rules at once. TCP is left alone: a new connection always starts with a SYN that gets a
/// fresh entry (and sees the new rules), and flushing would cost a walk of the kernel's whole
/// conntrack table per publish and cut established connections.
pub(crate) fn flush_conntrack(maps: &[Mapping]) -> Result<()> {
    for m in maps.iter().filter(|m| m.protocol != Proto::Tcp) {
        conntrack::flush(&conntrack::Filter {
            proto: m.protocol.number(),
            dport_min: m.host_port,
            dport_max: m.host_port_end,
            daddr: m.host_ip,
            ipv6: m.family() == Family::V6,
        })?;
    }
    Ok(())
}

/// Step 4 of the engine's order: the kernel and the record agree already, so a failed flush is
/// a warning (the old entries expire on their own).
fn flush_conntrack_or_warn(maps: &[Mapping]) -> Option<String> {
    flush_conntrack(maps).err().map(|e| {
        format!("could not flush the conntrack entries of the changed UDP/SCTP ports (they expire on their own): {e:#}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;
    use crate::ruleset::{desired, fake, plan_mapping_changes};

    /// What the kernel holds after `before`'s table took the incremental plan to `after` must be
    /// `after`'s whole table: the element-only path of `publish` and `unpublish` never drifts.
    fn incremental_equals_full(before: &State, after: &State, touched: &[Mapping]) {
        let mut live = fake::live_after(&desired(before), 0, 0);
        fake::apply_elems(&mut live, &plan_mapping_changes(before, after, touched).ops());
        let want = fake::live_after(&desired(after), 0, 0);
        let sorted = |t: &crate::nft::LiveTable| {
            let mut e: Vec<(String, Vec<u8>, Vec<u8>)> = t
                .elems
                .iter()
                .flat_map(|(s, es)| es.iter().map(move |x| (s.clone(), x.key.clone(), x.data.clone())))
                .collect();
            e.sort();
            e
        };
        assert_eq!(sorted(&live), sorted(&want));
    }

    #[test]
    fn publish_replace_and_unpublish_plan_against_the_fake_table() {
        let st = fixtures::seed_state("v");
        let specs = |s: &[&str]| s.iter().map(|x| x.parse().unwrap()).collect::<Vec<PublishSpec>>();
        let cidrs = |s: &[&str]| s.iter().map(|x| x.parse().unwrap()).collect::<Vec<Cidr>>();
        // Publish two ports, one with an allow list.
        let (a, out) =
            plan_publish(&st, &specs(&["9090:172.16.1.1:8080", "7000-7002:172.16.1.1:7000-7002/udp"]), None).unwrap();
        assert_eq!(out.added.len(), 2);
        incremental_equals_full(&st, &a, &out.added);
        let (b, out) =
            plan_publish(&a, &specs(&["9090:172.16.1.1:8080"]), Some(&cidrs(&["10.0.0.0/8", "fd00::/8"]))).unwrap();
        assert_eq!((out.added.len(), out.replaced.len()), (0, 1));
        assert_eq!(b.allow_of(&out.replaced[0]), cidrs(&["10.0.0.0/8"]).as_slice());
        incremental_equals_full(&a, &b, &out.replaced);
        // The same list again: nothing to do.
        let (c, out) = plan_publish(&b, &specs(&["9090:172.16.1.1:8080"]), Some(&cidrs(&["10.0.0.0/8"]))).unwrap();
        assert_eq!((out.already.len(), c == b), (1, true));
        // A conflict with the record is refused; one inside the request too, before anything.
        assert!(plan_publish(&b, &specs(&["9090:172.16.1.2:80"]), None).is_err());
        assert!(plan_publish(&b, &specs(&["9191:172.16.1.1:80", "9191:172.16.1.2:80"]), None).is_err());
        // Unpublish by host port: the mapping and its list go, elements included.
        let sels: Vec<Selector> = vec!["9090".parse().unwrap(), "1234".parse().unwrap()];
        let (d, out) = plan_unpublish(&b, &sels).unwrap();
        assert_eq!((out.removed.len(), out.not_found.clone()), (1, vec![1]));
        assert!(d.allow.is_empty());
        incremental_equals_full(&b, &d, &out.removed);
    }
}
