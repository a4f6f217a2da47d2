//! `network`, `sandbox`, `connect` and `disconnect`.

use super::read_state;
use crate::cli::{ConnectArgs, NetworkCreateArgs, SandboxCreateArgs};
use crate::engine::network::{self as op, Attachment, Made};
use crate::engine::{refuse, Engine};
use crate::linkplan::bridge_addrs;
use crate::model::{parse_ip, HostFirewallMode, InputError, Ipv6Mode, Network, Sandbox, Subnet};
use anyhow::Result;
use std::net::IpAddr;
use std::path::Path;

pub fn network_create(dir: &Path, a: &NetworkCreateArgs) -> Result<()> {
    let subnets: Vec<Subnet> = a.subnet.iter().map(|s| s.parse()).collect::<Result<_, InputError>>()?;
    let gateways: Vec<IpAddr> = a.gateway.iter().map(|g| parse_ip(g, "gateway")).collect::<Result<_, InputError>>()?;
    let mut net = Network::new(&a.name, &subnets, &gateways, a.bridge.as_deref())?;
    net.masquerade = !a.no_masquerade;
    net.internal = a.internal;
    net.ipv6_mode = a.ipv6_mode.parse()?;
    net.host_firewall = a.host_firewall.parse()?;
    if net.ipv6_mode == Ipv6Mode::Routed && !net.has_v6() {
        return refuse(format!("--ipv6-mode routed: network {} has no IPv6 subnet", net.name));
    }
    let done = op::create_network(&mut Engine::open(dir)?, net)?;
    let net = &done.network;
    super::note(&done.notes);
    if done.existed {
        println!("network {} already exists", net.name);
        return Ok(());
    }
    let gws: Vec<String> = bridge_addrs(net).iter().map(|(g, p)| format!("{g}/{p}")).collect();
    let routed = if net.routed_v6() { " (IPv6 routed, no NAT)" } else { "" };
    println!(
        "network {} created: bridge {} {} subnet {}{routed}",
        net.name,
        net.bridge,
        gws.join(" "),
        net.subnets_text()
    );
    super::warn(&done.warnings);
    Ok(())
}

pub fn network_rm(dir: &Path, name: &str) -> Result<()> {
    let done = op::remove_network(&mut Engine::open(dir)?, name)?;
    match done.network {
        None => println!("network {name} does not exist; nothing to do"),
        Some(_) => println!("network {name} removed"),
    }
    super::warn(&done.warnings);
    Ok(())
}

pub fn network_ls(dir: &Path, json: bool) -> Result<()> {
    let state = read_state(dir)?;
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
        if n.host_firewall == HostFirewallMode::Off {
            flags.push("host-firewall=off");
        }
        let opened: Vec<String> = state
            .host_firewall
            .iter()
            .filter(|o| o.network == n.name)
            .map(|o| format!("open-in:{}", o.firewall))
            .collect();
        flags.extend(opened.iter().map(String::as_str));
        let owner = n.owner.as_ref().map(|o| format!("{}:{}", o.by, o.short()));
        flags.extend(owner.as_deref());
        // One line per family; the name and flags on the first.
        for (i, p) in n.pools.iter().enumerate() {
            let (name, bridge, flags) =
                if i == 0 { (n.name.as_str(), n.bridge.as_str(), flags.join(",")) } else { ("", "", String::new()) };
            println!("{name:<16} {bridge:<16} {:<18} {:<16} {flags}", p.subnet.to_string(), p.gateway.to_string());
        }
    }
    Ok(())
}

/// `--ip` (once per family) and `--ifname` of a connection.
fn attachment(network: &str, ips: &[String], ifname: Option<&str>) -> Result<Attachment, InputError> {
    Ok(Attachment {
        network: network.into(),
        ips: ips.iter().map(|i| parse_ip(i, "address")).collect::<Result<_, InputError>>()?,
        ifname: ifname.map(String::from),
    })
}

pub fn sandbox_create(dir: &Path, a: &SandboxCreateArgs) -> Result<()> {
    let attach = a.network.as_deref().map(|n| attachment(n, &a.ip, a.ifname.as_deref())).transpose()?;
    let done = op::create_sandbox(&mut Engine::open(dir)?, &a.name, attach.as_ref())?;
    let how = match done.made {
        Made::Existed => "already exists",
        Made::Created => "created",
        Made::Adopted => "adopted (existing namespace)",
    };
    println!("sandbox {} {how}{}", a.name, endpoints_text(&done.sandbox));
    Ok(())
}

fn endpoints_text(sb: &Sandbox) -> String {
    sb.endpoints.iter().map(|e| format!("; {} {} on {}", e.ifname, e.ips_text(), e.network)).collect()
}

pub fn sandbox_rm(dir: &Path, name: &str) -> Result<()> {
    match op::remove_sandbox(&mut Engine::open(dir)?, name)? {
        None => println!("sandbox {name} does not exist; nothing to do"),
        Some(_) => println!("sandbox {name} removed"),
    }
    Ok(())
}

pub fn sandbox_ls(dir: &Path, json: bool) -> Result<()> {
    let state = read_state(dir)?;
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
    let attach = attachment(&a.network, &a.ip, a.ifname.as_deref())?;
    let c = op::connect(&mut Engine::open(dir)?, &a.sandbox, &attach)?;
    let ep = &c.endpoint;
    if c.adopted {
        println!("sandbox {} adopted (existing namespace)", c.sandbox);
    }
    if c.existed {
        println!("sandbox {} is already connected to {} as {} {}", c.sandbox, ep.network, ep.ifname, ep.ips_text());
    } else {
        println!(
            "sandbox {} connected to {} as {} {} (host side {})",
            c.sandbox,
            ep.network,
            ep.ifname,
            ep.ips_text(),
            ep.host_ifname
        );
    }
    Ok(())
}

pub fn disconnect(dir: &Path, network: &str, sandbox: &str) -> Result<()> {
    if op::disconnect(&mut Engine::open(dir)?, network, sandbox)? {
        println!("sandbox {sandbox} disconnected from {network}");
    } else {
        println!("sandbox {sandbox} is not connected to {network}; nothing to do");
    }
    Ok(())
}
