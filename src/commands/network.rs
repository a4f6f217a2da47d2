//! `network`, `sandbox`, `connect` and `disconnect`: the bridged namespace network (CNM).

use super::{refuse, Ctx};
use crate::cli::{ConnectArgs, NetworkCreateArgs, SandboxCreateArgs};
use crate::link::{self, netns, sysctl, EndpointSpec, Links};
use crate::linkplan::{accept_ra_key, bridge_addrs, forwarding_keys, IP6_FORWARD};
use crate::model::{
    check_ifname, check_name, host_ifname, parse_ip, Endpoint, InputError, Ipv6Mode, Network, Sandbox, State, Subnet,
};
use anyhow::{Context, Result};
use std::net::IpAddr;
use std::path::Path;

pub fn network_create(dir: &Path, a: &NetworkCreateArgs) -> Result<()> {
    let subnets: Vec<Subnet> = a.subnet.iter().map(|s| s.parse()).collect::<Result<_, InputError>>()?;
    let gateways: Vec<IpAddr> = a.gateway.iter().map(|g| parse_ip(g, "gateway")).collect::<Result<_, InputError>>()?;
    let mut net = Network::new(&a.name, &subnets, &gateways, a.bridge.as_deref())?;
    net.masquerade = !a.no_masquerade;
    net.internal = a.internal;
    net.ipv6_mode = a.ipv6_mode.parse()?;
    if net.ipv6_mode == Ipv6Mode::Routed && !net.has_v6() {
        return refuse(format!("--ipv6-mode routed: network {} has no IPv6 subnet", net.name));
    }

    let mut ctx = Ctx::open(dir)?;
    if net.has_v6() {
        link::ipv6_available("this host's network namespace")?;
    }
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
    let gws: Vec<String> = bridge_addrs(&net).iter().map(|(g, p)| format!("{g}/{p}")).collect();
    let routed = if net.routed_v6() { " (IPv6 routed, no NAT)" } else { "" };
    println!(
        "network {} created: bridge {} {} subnet {}{routed}",
        net.name,
        net.bridge,
        gws.join(" "),
        net.subnets_text()
    );
    super::warn_forward_blockers(&ctx.state);
    Ok(())
}

fn differences(old: &Network, new: &Network) -> String {
    let mut d = vec![];
    if old.pools.iter().map(|p| p.subnet).ne(new.pools.iter().map(|p| p.subnet)) {
        d.push(format!("subnet {} (asked {})", old.subnets_text(), new.subnets_text()));
    } else if old.pools != new.pools {
        d.push(format!("gateway {} (asked {})", old.gateways_text(), new.gateways_text()));
    }
    if old.ipv6_mode != new.ipv6_mode {
        d.push(format!("ipv6-mode {} (asked {})", old.ipv6_mode, new.ipv6_mode));
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

/// Bridge with its gateway addresses, up, and route_localnet so the host's own 127.0.0.1
/// connections to a published port can be DNAT'd onto it (only this interface gets it).
pub fn bring_up_bridge(links: &Links, net: &Network) -> Result<()> {
    links.ensure_bridge(&net.bridge, &bridge_addrs(net))?;
    links.set_alias(&net.bridge, &crate::recover::network_alias(&net.name))?;
    sysctl::write(&crate::linkplan::route_localnet_key(&net.bridge), "1")
}

/// Forwarding on while netnat has networks (IPv6's while one has an IPv6 subnet); the old
/// values are kept to restore them.
pub fn enable_forwarding(state: &mut State) -> Result<()> {
    for key in forwarding_keys(state) {
        let old = sysctl::read(key)?;
        if old == "1" {
            continue;
        }
        if key == IP6_FORWARD {
            keep_router_advertisements(state)?;
        }
        state.sysctls.entry(key.into()).or_insert(old);
        sysctl::write(key, "1")?;
    }
    Ok(())
}

/// With IPv6 forwarding on, the kernel ignores router advertisements on interfaces with
/// accept_ra=1, so a host that learns its IPv6 routes from RAs would lose them when they
/// expire. Such interfaces get accept_ra=2 (take RAs even when forwarding), recorded and
/// restored by `reset`.
fn keep_router_advertisements(state: &mut State) -> Result<()> {
    for ifname in Links::open()?.ra_route_links()? {
        let key = accept_ra_key(&ifname);
        let Ok(old) = sysctl::read(&key) else { continue };
        if old == "1" {
            state.sysctls.entry(key.clone()).or_insert(old);
            sysctl::write(&key, "2")?;
            eprintln!(
                "netnat: note: {ifname} learns IPv6 routes from router advertisements; set its accept_ra to 2 so it keeps them with forwarding on (restored by `netnat reset`)"
            );
        }
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
        if n.routed_v6() {
            flags.push("ipv6-routed");
        }
        // One line per family; the name and flags on the first.
        for (i, p) in n.pools.iter().enumerate() {
            let (name, bridge, flags) =
                if i == 0 { (n.name.as_str(), n.bridge.as_str(), flags.join(",")) } else { ("", "", String::new()) };
            println!("{name:<16} {bridge:<16} {:<18} {:<16} {flags}", p.subnet.to_string(), p.gateway.to_string());
        }
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
        if let Err(e) = connect_in(&mut ctx.state, &links, net, &a.name, &a.ip, a.ifname.as_deref()) {
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
    sb.endpoints.iter().map(|e| format!("; {} {} on {}", e.ifname, e.ips_text(), e.network)).collect()
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
                e.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
                e.host_ifname
            );
        }
    }
    Ok(())
}

pub fn connect(dir: &Path, a: &ConnectArgs) -> Result<()> {
    let mut ctx = Ctx::open(dir)?;
    let links = Links::open()?;
    let msg = connect_in(&mut ctx.state, &links, &a.network, &a.sandbox, &a.ip, a.ifname.as_deref())?;
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
    ips: &[String],
    ifname: Option<&str>,
) -> Result<String> {
    let Some(net) = state.networks.get(network).cloned() else {
        return refuse(format!("no network named {network}"));
    };
    let Some(sb) = state.sandboxes.get(sandbox).cloned() else {
        return refuse(format!("no sandbox named {sandbox}; create it with `netnat sandbox create {sandbox}`"));
    };
    let asked: Vec<IpAddr> = ips.iter().map(|i| parse_ip(i, "address")).collect::<Result<_, InputError>>()?;
    if let Some(i) = ifname {
        check_ifname(i, "interface name")?;
    }
    if let Some(ep) = sb.endpoints.iter().find(|e| e.network == network) {
        // Name what differs: the recorded value and the one asked for.
        let mut differ: Vec<String> = asked.iter().filter(|i| !ep.has(**i)).map(|i| format!("--ip {i}")).collect();
        if let Some(i) = ifname.filter(|i| *i != ep.ifname) {
            differ.push(format!("--ifname {i}"));
        }
        if !differ.is_empty() {
            return refuse(format!(
                "sandbox {sandbox} is already connected to {network} as {} {} (asked {})",
                ep.ifname,
                ep.ips_text(),
                differ.join(" ")
            ));
        }
        return Ok(format!("sandbox {sandbox} is already connected to {network} as {} {}", ep.ifname, ep.ips_text()));
    }
    let ips = state.endpoint_ips(&net, &asked, sandbox)?;
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
    let ep = Endpoint { network: network.into(), ips, ifname, host_ifname: host_ifname(sandbox, network) };
    super::add_endpoint(links, &endpoint_spec(&net, sandbox, &ep, sb.endpoints.is_empty()), network, sandbox)?;
    let msg = format!(
        "sandbox {sandbox} connected to {network} as {} {} (host side {})",
        ep.ifname,
        ep.ips_text(),
        ep.host_ifname
    );
    state.sandboxes.get_mut(sandbox).expect("checked above").endpoints.push(ep);
    Ok(msg)
}

/// What the link adapter needs to wire `ep` of `sandbox` into `net`.
pub fn endpoint_spec<'a>(net: &'a Network, sandbox: &str, ep: &'a Endpoint, default_route: bool) -> EndpointSpec<'a> {
    let prefix = |ip: &IpAddr| net.pools.iter().find(|p| p.subnet.contains(*ip)).map(|p| p.subnet.prefix);
    EndpointSpec {
        bridge: &net.bridge,
        host_ifname: &ep.host_ifname,
        netns_path: netns::path(sandbox),
        ifname: &ep.ifname,
        addrs: ep.ips.iter().filter_map(|ip| Some((*ip, prefix(ip)?))).collect(),
        gateways: net.pools.iter().map(|p| p.gateway).collect(),
        default_route,
    }
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
