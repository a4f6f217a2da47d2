//! `network`, `sandbox`, `connect` and `disconnect`: the bridged namespace network (CNM).

use super::{refuse, Ctx};
use crate::cli::{ConnectArgs, NetworkCreateArgs, SandboxCreateArgs};
use crate::link::{netns, sysctl, EndpointSpec, Links};
use crate::model::{check_ifname, check_name, host_ifname, parse_ipv4, Endpoint, Network, Sandbox, State, Subnet};
use anyhow::{Context, Result};
use std::path::Path;

const IP_FORWARD: &str = "net/ipv4/ip_forward";

pub fn network_create(dir: &Path, a: &NetworkCreateArgs) -> Result<()> {
    let subnet: Subnet = a.subnet.parse()?;
    let gateway = a.gateway.as_deref().map(|g| parse_ipv4(g, "gateway")).transpose()?;
    let mut net = Network::new(&a.name, subnet, gateway, a.bridge.as_deref())?;
    net.masquerade = !a.no_masquerade;
    net.internal = a.internal;

    let mut ctx = Ctx::open(dir)?;
    let links = Links::open()?;
    match ctx.state.networks.get(&net.name) {
        Some(old) if *old == net => {
            // Same settings: make sure the kernel still has it all (repairs a deleted bridge).
            bring_up_bridge(&links, &net)?;
            enable_forwarding(&mut ctx.state)?;
            ctx.sync_firewall()?;
            ctx.save()?;
            println!("network {} already exists", net.name);
            return Ok(());
        }
        Some(old) => {
            return refuse(format!(
                "network {} already exists with different settings: {}",
                net.name,
                differences(old, &net)
            ))
        }
        None => {}
    }
    ctx.state.check_new_network(&net)?;
    if links.link(&net.bridge)?.is_some() {
        return refuse(format!(
            "interface {} already exists on this host and is not netnat's; choose another name with --bridge",
            net.bridge
        ));
    }
    bring_up_bridge(&links, &net)?;
    ctx.state.networks.insert(net.name.clone(), net.clone());
    let result = enable_forwarding(&mut ctx.state).and_then(|_| ctx.sync_firewall());
    if let Err(e) = result {
        // Leave nothing half-made: the bridge goes, the record is not saved.
        let _ = links.delete_link(&net.bridge);
        return Err(e);
    }
    ctx.save()?;
    super::reload::sync_sysctl_conf_or_warn(&ctx.state);
    println!(
        "network {} created: bridge {} {}/{} subnet {}",
        net.name, net.bridge, net.gateway, net.subnet.prefix, net.subnet
    );
    super::warn_forward_blockers(&ctx.state);
    Ok(())
}

fn differences(old: &Network, new: &Network) -> String {
    let mut d = vec![];
    if old.subnet != new.subnet {
        d.push(format!("subnet {} (asked {})", old.subnet, new.subnet));
    }
    if old.gateway != new.gateway {
        d.push(format!("gateway {} (asked {})", old.gateway, new.gateway));
    }
    if old.bridge != new.bridge {
        d.push(format!("bridge {} (asked {})", old.bridge, new.bridge));
    }
    if old.masquerade != new.masquerade {
        d.push(format!("masquerade {} (asked {})", old.masquerade, new.masquerade));
    }
    if old.internal != new.internal {
        d.push(format!("internal {} (asked {})", old.internal, new.internal));
    }
    d.join(", ")
}

/// Bridge with its gateway address, up, and route_localnet so the host's own 127.0.0.1
/// connections to a published port can be DNAT'd onto it (only this interface gets it).
pub fn bring_up_bridge(links: &Links, net: &Network) -> Result<()> {
    links.ensure_bridge(&net.bridge, net.gateway, net.subnet.prefix)?;
    links.set_alias(&net.bridge, &crate::recover::network_alias(&net.name))?;
    sysctl::write(&format!("net/ipv4/conf/{}/route_localnet", net.bridge), "1")
}

/// IPv4 forwarding on while netnat has networks; the old value is kept to restore it.
pub fn enable_forwarding(state: &mut State) -> Result<()> {
    let old = sysctl::read(IP_FORWARD)?;
    if old != "1" {
        state.sysctls.entry(IP_FORWARD.into()).or_insert(old);
        sysctl::write(IP_FORWARD, "1")?;
    }
    Ok(())
}

/// Puts back every sysctl netnat changed.
pub fn restore_sysctls(state: &mut State) -> Result<()> {
    for (key, value) in std::mem::take(&mut state.sysctls) {
        sysctl::write(&key, &value).with_context(|| format!("restoring {key} to {value}"))?;
    }
    Ok(())
}

pub fn network_rm(dir: &Path, name: &str) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let Some(net) = ctx.state.networks.get(name).cloned() else {
        println!("network {name} does not exist; nothing to do");
        return Ok(());
    };
    let users: Vec<&str> = ctx.state.endpoints_on(name).map(|(s, _)| s.name.as_str()).collect();
    if !users.is_empty() {
        return refuse(format!("network {name} still has endpoints in {}; disconnect them first", users.join(", ")));
    }
    ctx.state.networks.remove(name);
    ctx.sync_firewall()?;
    Links::open()?.delete_link(&net.bridge)?;
    if ctx.state.networks.is_empty() {
        restore_sysctls(&mut ctx.state)?;
    }
    ctx.save()?;
    super::reload::sync_sysctl_conf_or_warn(&ctx.state);
    println!("network {name} removed");
    Ok(())
}

pub fn network_ls(dir: &Path, json: bool) -> Result<()> {
    let state = super::read_state(dir)?;
    let nets: Vec<&Network> = state.networks.values().collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&nets)?);
        return Ok(());
    }
    println!("{:<16} {:<16} {:<18} {:<16} FLAGS", "NAME", "BRIDGE", "SUBNET", "GATEWAY");
    for n in nets {
        let mut flags = vec![];
        if n.internal {
            flags.push("internal");
        } else if !n.masquerade {
            flags.push("no-masquerade");
        }
        println!(
            "{:<16} {:<16} {:<18} {:<16} {}",
            n.name,
            n.bridge,
            n.subnet.to_string(),
            n.gateway.to_string(),
            flags.join(",")
        );
    }
    Ok(())
}

pub fn sandbox_create(dir: &Path, a: &SandboxCreateArgs) -> Result<()> {
    check_name(&a.name, "sandbox")?;
    let mut ctx = Ctx::open(dir)?;
    if let Some(net) = &a.network {
        // Check the connection before making anything, so bad input leaves nothing behind.
        if !ctx.state.networks.contains_key(net) {
            return refuse(format!("no network named {net}"));
        }
    }
    let made = if ctx.state.sandboxes.contains_key(&a.name) {
        if !netns::exists(&a.name) {
            anyhow::bail!(
                "sandbox {} is recorded but its namespace {} is gone; run `netnat sandbox rm {}` and create it again",
                a.name,
                netns::path(&a.name).display(),
                a.name
            );
        }
        false
    } else {
        let created = super::create_netns(ctx.store(), &a.name)?;
        ctx.state.sandboxes.insert(a.name.clone(), Sandbox { name: a.name.clone(), created, endpoints: vec![] });
        true
    };
    if let Some(net) = &a.network {
        let links = Links::open()?;
        if let Err(e) = connect_in(&mut ctx.state, &links, net, &a.name, a.ip.as_deref(), a.ifname.as_deref()) {
            if made {
                let sb = ctx.state.sandboxes.remove(&a.name).expect("just inserted");
                if sb.created {
                    let _ = super::delete_netns(ctx.store(), &a.name);
                }
            }
            return Err(e);
        }
    }
    ctx.save()?;
    let sb = &ctx.state.sandboxes[&a.name];
    let how = if !made {
        "already exists"
    } else if sb.created {
        "created"
    } else {
        "adopted (existing namespace)"
    };
    println!("sandbox {} {how}{}", a.name, endpoints_text(sb));
    Ok(())
}

fn endpoints_text(sb: &Sandbox) -> String {
    sb.endpoints.iter().map(|e| format!("; {} {} on {}", e.ifname, e.ip, e.network)).collect()
}

pub fn sandbox_rm(dir: &Path, name: &str) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let Some(sb) = ctx.state.sandboxes.get(name).cloned() else {
        println!("sandbox {name} does not exist; nothing to do");
        return Ok(());
    };
    let links = Links::open()?;
    for ep in &sb.endpoints {
        links.delete_link(&ep.host_ifname)?;
    }
    if sb.created {
        super::delete_netns(ctx.store(), name)?;
    }
    ctx.state.sandboxes.remove(name);
    ctx.save()?;
    println!("sandbox {name} removed");
    Ok(())
}

pub fn sandbox_ls(dir: &Path, json: bool) -> Result<()> {
    let state = super::read_state(dir)?;
    let sbs: Vec<&Sandbox> = state.sandboxes.values().collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&sbs)?);
        return Ok(());
    }
    println!("{:<20} {:<8} {:<16} {:<10} {:<16} HOST-IF", "NAME", "OWNED", "NETWORK", "IFNAME", "ADDRESS");
    for s in sbs {
        let owned = if s.created { "yes" } else { "adopted" };
        if s.endpoints.is_empty() {
            println!("{:<20} {owned:<8} -", s.name);
        }
        for e in &s.endpoints {
            println!(
                "{:<20} {owned:<8} {:<16} {:<10} {:<16} {}",
                s.name,
                e.network,
                e.ifname,
                e.ip.to_string(),
                e.host_ifname
            );
        }
    }
    Ok(())
}

pub fn connect(dir: &Path, a: &ConnectArgs) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let links = Links::open()?;
    let msg = connect_in(&mut ctx.state, &links, &a.network, &a.sandbox, a.ip.as_deref(), a.ifname.as_deref())?;
    ctx.save()?;
    println!("{msg}");
    Ok(())
}

/// Attaches a recorded sandbox to a recorded network, allocating what was not given.
fn connect_in(
    state: &mut State,
    links: &Links,
    network: &str,
    sandbox: &str,
    ip: Option<&str>,
    ifname: Option<&str>,
) -> Result<String> {
    let Some(net) = state.networks.get(network).cloned() else {
        return refuse(format!("no network named {network}"));
    };
    let Some(sb) = state.sandboxes.get(sandbox).cloned() else {
        return refuse(format!("no sandbox named {sandbox}; create it with `netnat sandbox create {sandbox}`"));
    };
    let ip = ip.map(|i| parse_ipv4(i, "address")).transpose()?;
    if let Some(i) = ifname {
        check_ifname(i, "interface name")?;
    }
    if let Some(ep) = sb.endpoints.iter().find(|e| e.network == network) {
        // Name what differs: the recorded value and the one asked for.
        let mut asked = vec![];
        if let Some(i) = ip.filter(|i| *i != ep.ip) {
            asked.push(format!("--ip {i}"));
        }
        if let Some(i) = ifname.filter(|i| *i != ep.ifname) {
            asked.push(format!("--ifname {i}"));
        }
        if !asked.is_empty() {
            return refuse(format!(
                "sandbox {sandbox} is already connected to {network} as {} {} (asked {})",
                ep.ifname,
                ep.ip,
                asked.join(" ")
            ));
        }
        return Ok(format!("sandbox {sandbox} is already connected to {network} as {} {}", ep.ifname, ep.ip));
    }
    let ip = match ip {
        Some(i) => {
            if !net.subnet.is_host(i) || i == net.gateway {
                return refuse(format!(
                    "address {i} is not a free host address of network {network} ({}, gateway {})",
                    net.subnet, net.gateway
                ));
            }
            if let Some((owner, _)) = state.endpoints_on(network).find(|(_, e)| e.ip == i) {
                return refuse(format!("address {i} is already used on network {network} by sandbox {}", owner.name));
            }
            i
        }
        None => state.allocate_ip(&net)?,
    };
    let ifname = match ifname {
        Some(i) if sb.endpoints.iter().any(|e| e.ifname == i) => {
            return refuse(format!("sandbox {sandbox} already has an interface named {i}"));
        }
        Some(i) => i.to_string(),
        None => {
            (0..).map(|n| format!("eth{n}")).find(|n| sb.endpoints.iter().all(|e| &e.ifname != n)).expect("unbounded")
        }
    };
    if !netns::exists(sandbox) {
        anyhow::bail!("the namespace of sandbox {sandbox} ({}) is gone", netns::path(sandbox).display());
    }
    let ep = Endpoint { network: network.into(), ip, ifname, host_ifname: host_ifname(sandbox, network) };
    let spec = EndpointSpec {
        bridge: &net.bridge,
        host_ifname: &ep.host_ifname,
        netns_path: &netns::path(sandbox),
        ifname: &ep.ifname,
        addr: ep.ip,
        prefix: net.subnet.prefix,
        gateway: net.gateway,
        default_route: sb.endpoints.is_empty(),
    };
    super::add_endpoint(links, &spec, network, sandbox)?;
    let msg =
        format!("sandbox {sandbox} connected to {network} as {} {} (host side {})", ep.ifname, ep.ip, ep.host_ifname);
    state.sandboxes.get_mut(sandbox).expect("checked above").endpoints.push(ep);
    Ok(msg)
}

pub fn disconnect(dir: &Path, network: &str, sandbox: &str) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let Some(sb) = ctx.state.sandboxes.get_mut(sandbox) else {
        return refuse(format!("no sandbox named {sandbox}"));
    };
    let Some(pos) = sb.endpoints.iter().position(|e| e.network == network) else {
        println!("sandbox {sandbox} is not connected to {network}; nothing to do");
        return Ok(());
    };
    // Deleting the host end removes the pair, the peer inside the sandbox with it.
    Links::open()?.delete_link(&sb.endpoints[pos].host_ifname)?;
    sb.endpoints.remove(pos);
    ctx.save()?;
    println!("sandbox {sandbox} disconnected from {network}");
    Ok(())
}
