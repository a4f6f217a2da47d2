//! `publish`, `unpublish`, `ls` and `show`: published ports as nftables map elements.

use super::{read_live_table, refuse, Ctx};
use crate::conntrack;
use crate::link::Links;
use crate::model::{ip_text, spec_parts, Family, HostPorts, InputError, Mapping, Proto, PublishSpec, State};
use crate::nft::LiveTable;
use crate::ruleset::{counted_elems, render_table};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

pub fn publish(dir: &Path, specs: &[String]) -> Result<()> {
    let specs: Vec<PublishSpec> = specs.iter().map(|s| s.parse()).collect::<Result<_, InputError>>()?;
    let mut ctx = Ctx::open(dir)?;
    // Name targets need the record; so does nothing else of the checks.
    let mut maps: Vec<Mapping> = vec![];
    for s in &specs {
        maps.extend(s.resolve(&ctx.state)?);
    }
    for (i, a) in maps.iter().enumerate() {
        if let Some(b) = maps[..i].iter().find(|b| *b != a && b.conflicts_with(a)) {
            return refuse(format!("{a} and {b} publish the same host port"));
        }
    }
    check_host_addresses(&maps)?;
    if maps.iter().any(|m| m.family() == Family::V6) {
        crate::link::ipv6_available("this host's network namespace")?;
    }
    let mut added = vec![];
    for m in maps {
        if ctx.state.mappings.contains(&m) || added.contains(&m) {
            println!("already published: {m}");
            continue;
        }
        if let Some(o) = ctx.state.mappings.iter().find(|o| o.conflicts_with(&m)) {
            bail!("cannot publish {m}: host port {} is already published as {o}", m.host_spec());
        }
        added.push(m);
    }
    ctx.reserve_for_mappings(&added)?;
    ctx.state.mappings.extend(added.iter().copied());
    ctx.sync_mappings(&added, &[])?;
    // Entries made before this publish (e.g. a UDP client already sending to the host port)
    // would bypass the new DNAT for their whole life: drop them, keyed by the HOST port.
    flush_conntrack(&added)?;
    ctx.save()?;
    if !added.is_empty() {
        super::warn_forward_blockers(&ctx.state);
    }
    for m in &added {
        match ctx.state.network_of(m.container_ip) {
            Some(n) if ctx.state.is_routed(m) => println!(
                "published {m} (network {}, IPv6 routed: reachable at {}:{} itself; host port {} is not used)",
                n.name,
                ip_text(m.container_ip),
                range(m.container_port, m.container_port_end),
                range(m.host_port, m.host_port_end)
            ),
            Some(n) => println!("published {m} (network {})", n.name),
            None => println!(
                "published {m} (note: {} is in no netnat network; it must be routable from this host)",
                m.container_ip
            ),
        }
    }
    Ok(())
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

pub fn unpublish(dir: &Path, specs: &[String]) -> Result<()> {
    // A full mapping has 3 or 4 parts (HOSTPORT:CONTAINER:PORT); a host side 1 or 2.
    enum Sel {
        Exact(PublishSpec),
        Host(HostPorts),
    }
    let sels: Vec<Sel> = specs
        .iter()
        .map(|s| if spec_parts(s) >= 3 { s.parse().map(Sel::Exact) } else { s.parse().map(Sel::Host) })
        .collect::<Result<_, InputError>>()?;
    let mut ctx = Ctx::open(dir)?;
    let mut removed = vec![];
    for (sel, spec) in sels.iter().zip(specs) {
        let exact = match sel {
            Sel::Exact(p) => p.resolve(&ctx.state)?,
            Sel::Host(_) => vec![],
        };
        // A bare HOSTPORT names a mapping of each family: every one that matches goes.
        let before = ctx.state.mappings.len();
        let mut kept = vec![];
        for m in std::mem::take(&mut ctx.state.mappings) {
            let hit = match sel {
                Sel::Exact(_) => exact.contains(&m),
                Sel::Host(h) => h.matches(&m),
            };
            if hit {
                removed.push(m);
            } else {
                kept.push(m);
            }
        }
        ctx.state.mappings = kept;
        if ctx.state.mappings.len() == before {
            println!("not published: {spec}");
        }
    }
    if removed.is_empty() {
        return Ok(());
    }
    ctx.sync_mappings(&[], &removed)?;
    flush_conntrack(&removed)?;
    ctx.save()?;
    for m in &removed {
        println!("unpublished {m}");
    }
    Ok(())
}

/// One published mapping with its traffic, as `ls --json` prints it.
#[derive(Serialize)]
pub struct MappingView {
    #[serde(flatten)]
    pub mapping: Mapping,
    pub network: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// Mappings with the traffic counted for them in the forward chain (summed over a range):
/// packets and bytes in both directions of every connection through the mapping.
pub fn mapping_views(state: &State, live: Option<&LiveTable>) -> Vec<MappingView> {
    let counters: std::collections::HashMap<(&str, &[u8]), (u64, u64)> = live
        .map(|l| {
            l.elems
                .iter()
                .flat_map(|(set, es)| {
                    es.iter().map(move |e| {
                        ((set.as_str(), e.key.as_slice()), (e.packets.unwrap_or(0), e.bytes.unwrap_or(0)))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut views: Vec<MappingView> = state
        .mappings
        .iter()
        .map(|m| {
            let (packets, bytes) = counted_elems(m, state.is_routed(m))
                .filter_map(|(set, k, _)| counters.get(&(set, k.as_slice())).copied())
                .fold((0, 0), |(p, b), (p2, b2)| (p + p2, b + b2));
            MappingView {
                mapping: *m,
                network: state.network_of(m.container_ip).map(|n| n.name.clone()),
                packets,
                bytes,
            }
        })
        .collect();
    views.sort_by_key(|v| {
        let m = &v.mapping;
        (m.protocol, m.host_port, m.family(), m.host_ip.unwrap_or(m.family().unspecified()))
    });
    views
}

pub fn ls(dir: &Path, json: bool) -> Result<()> {
    super::require_net_admin()?;
    let state = super::read_state(dir)?;
    let live = read_live_table()?;
    let views = mapping_views(&state, live.as_ref());
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!("{:<5} {:<22} {:<26} {:<12} {:>10} {:>12}", "PROTO", "HOST", "CONTAINER", "NETWORK", "PACKETS", "BYTES");
    for v in views {
        let m = v.mapping;
        let any = if m.family() == Family::V6 { "[*]" } else { "*" };
        let host = format!("{}:{}", m.host_ip.map(ip_text).unwrap_or(any.into()), range(m.host_port, m.host_port_end));
        let ctr = format!("{}:{}", ip_text(m.container_ip), range(m.container_port, m.container_port_end));
        let net = v.network.unwrap_or("-".into());
        println!("{:<5} {host:<22} {ctr:<26} {net:<12} {:>10} {:>12}", m.protocol.to_string(), v.packets, v.bytes);
    }
    Ok(())
}

fn range(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

pub fn show(dir: &Path, counters: bool) -> Result<()> {
    super::require_net_admin()?;
    // The table is read from the kernel anyway; the record is only checked, to say it is damaged.
    let _ = super::read_state(dir)?;
    match read_live_table()? {
        Some(t) => print!("{}", render_table(&t, counters)),
        None => println!("# table inet netnat does not exist (no network or port yet)"),
    }
    Ok(())
}
