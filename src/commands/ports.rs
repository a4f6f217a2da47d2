//! `publish`, `unpublish`, `ls` and `show`.

use super::read_state;
use crate::audit::{mapping_views, MappingView};
use crate::conntrack;
use crate::engine::mapping::{self, Change};
use crate::engine::ports::Selector;
use crate::engine::{read_live_table, require_net_admin, Engine};
use crate::model::{ip_text, Cidr, Family, InputError, PublishSpec, State};
use crate::ruleset::render_table;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

pub fn publish(dir: &Path, specs: &[String], allow: &[String], replace: bool) -> Result<()> {
    let specs: Vec<PublishSpec> = specs.iter().map(|s| s.parse()).collect::<Result<_, InputError>>()?;
    let allow: Vec<Cidr> = allow.iter().map(|c| c.parse()).collect::<Result<_, InputError>>()?;
    let mut e = Engine::open_for_mappings(dir)?;
    let allow = (!allow.is_empty()).then_some(allow);
    let done = mapping::change(&mut e, &Change::Publish { specs, allow: allow.clone(), replace })?;
    super::note(&done.notes);
    for m in &done.already {
        println!("already published: {m}");
    }
    for s in &done.switched {
        println!(
            "switched host port {} from {} to {} (established connections stay on the old target until they end)",
            s.to.host_spec(),
            s.from,
            s.to
        );
    }
    for m in &done.allow_replaced {
        println!("allow list of {m} replaced: now {}", allow_text(e.state.allow_of(m)));
    }
    for m in &done.added {
        match e.state.network_of(m.container_ip) {
            Some(n) if e.state.is_routed(m) => println!(
                "published {m} (network {}, IPv6 routed: reachable at {}:{} itself; host port {} is not used)",
                n.name,
                ip_text(m.container_ip),
                range(m.container_port, m.container_port_end),
                range(m.host_port, m.host_port_end)
            ),
            Some(n) if !e.state.allow_of(m).is_empty() => {
                println!("published {m} (network {}; only from {})", n.name, allow_text(e.state.allow_of(m)))
            }
            Some(n) => println!("published {m} (network {})", n.name),
            None => println!(
                "published {m} (note: {} is in no netnat network; it must be routable from this host)",
                m.container_ip
            ),
        }
    }
    super::warn(&done.warnings);
    Ok(())
}

pub fn unpublish(dir: &Path, specs: &[String]) -> Result<()> {
    let sels: Vec<Selector> = specs.iter().map(|s| s.parse()).collect::<Result<_, InputError>>()?;
    let done = mapping::change(&mut Engine::open_for_mappings(dir)?, &Change::Unpublish(sels))?;
    for i in &done.not_found {
        println!("not published: {}", specs[*i]);
    }
    for m in &done.removed {
        println!("unpublished {m}");
    }
    super::warn(&done.warnings);
    Ok(())
}

pub fn ls(dir: &Path, json: bool) -> Result<()> {
    require_net_admin()?;
    let state = read_state(dir)?;
    let live = read_live_table()?;
    let mut views = mapping_views(&state, live.as_ref());
    views.extend(standby_views(&state));
    views.sort_by_key(|v| {
        let m = &v.mapping;
        (m.protocol, m.host_port, m.family(), m.host_ip.unwrap_or(m.family().unspecified()), v.standby)
    });
    let entries = match views.is_empty() {
        true => vec![],
        false => conntrack::entries().context("reading the conntrack table for draining connections")?,
    };
    let rows: Vec<Row> = views
        .iter()
        .map(|v| Row {
            draining: match v.standby || state.is_routed(&v.mapping) {
                true => vec![],
                false => mapping::draining(&v.mapping, &entries),
            },
            view: v,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<22} {:<26} {:<12} {:>8} {:>10} {:>12}  ALLOW (DENIED)",
        "PROTO", "HOST", "CONTAINER", "NETWORK", "CONNS", "PACKETS", "BYTES"
    );
    for Row { view: v, draining } in rows {
        let m = v.mapping;
        let any = if m.family() == Family::V6 { "[*]" } else { "*" };
        let host_part = match (m.host_if, m.host_ip) {
            (Some(i), _) => i.to_string(),
            (None, Some(ip)) => ip_text(ip),
            (None, None) => any.into(),
        };
        let host = format!("{host_part}:{}", range(m.host_port, m.host_port_end));
        let ctr = format!("{}:{}", ip_text(m.container_ip), range(m.container_port, m.container_port_end));
        let net = match (&v.network, &v.container_id) {
            (Some(n), Some(c)) => {
                let by = state.networks.get(n).and_then(|x| x.owner.as_ref()).map_or("CNI", |o| o.by.as_str());
                let standby = if v.standby { ", standby" } else { "" };
                format!("{n} ({by} {}{standby})", &c[..c.len().min(12)])
            }
            (Some(n), None) => n.clone(),
            (None, _) => "-".into(),
        };
        let allow = match v.allow.as_slice() {
            [] => "any".to_string(),
            list => format!("{} ({})", allow_text(list), v.denied_packets),
        };
        // Packets and bytes are counted only with `counting = packets`.
        let count = |c: Option<u64>| c.map_or("-".to_string(), |c| c.to_string());
        println!(
            "{:<5} {host:<22} {ctr:<26} {net:<12} {:>8} {:>10} {:>12}  {allow}",
            m.protocol.to_string(),
            v.connections_total,
            count(v.packets),
            count(v.bytes)
        );
        for d in draining {
            println!(
                "      draining: {} connection(s) still on {}:{} (established before the target changed)",
                d.connections,
                ip_text(d.container_ip),
                d.container_port
            );
        }
    }
    Ok(())
}

/// A row of `ls`: the mapping, and the connections still on an earlier target.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    view: &'a MappingView,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    draining: Vec<mapping::Draining>,
}

/// The standby mappings of CNI attachments (not in the kernel: no counters).
fn standby_views(state: &State) -> Vec<MappingView> {
    let standby = state.attachments.values().flat_map(|a| a.standby.iter().map(move |m| (a, m)));
    standby
        .map(|(a, m)| MappingView {
            mapping: *m,
            network: Some(a.network.clone()),
            connections_total: 0,
            packets: None,
            bytes: None,
            allow: vec![],
            denied_packets: 0,
            container_id: Some(a.container_id.clone()),
            standby: true,
        })
        .collect()
}

fn allow_text(list: &[Cidr]) -> String {
    list.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
}

fn range(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

pub fn show(dir: &Path, counters: bool) -> Result<()> {
    require_net_admin()?;
    // The table is read from the kernel anyway; the record is only checked, to say it is damaged.
    let _ = read_state(dir)?;
    match read_live_table()? {
        Some(t) => print!("{}", render_table(&t, counters)),
        None => println!("# table inet netnat does not exist (no network or port yet)"),
    }
    Ok(())
}
