//! Networks, sandboxes and their endpoints (the CNM side): create, remove, connect, disconnect.

use super::kernel::{add_endpoint, bring_up_bridge, create_netns, delete_netns, endpoint_spec};
use super::{refuse, Engine};
use crate::host;
use crate::link::{self, netns, Links};
use crate::model::{check_ifname, check_name, host_ifname, Endpoint, Network, Sandbox, State};
use crate::validate;
use anyhow::{bail, Result};
use serde::Serialize;
use std::net::IpAddr;

/// What `create_network` did.
#[derive(Debug, Serialize)]
pub struct NetworkCreated {
    pub network: Network,
    /// It was already there with the same settings (the kernel side was checked and repaired).
    pub existed: bool,
    /// Host settings changed on the side (accept_ra of interfaces that learn routes from RAs).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// Creates a network: its bridge with the gateway addresses, forwarding, its firewall rules.
/// Creating it again with the same settings repairs what the kernel lost; other settings are
/// refused, naming the differences.
pub fn create_network(e: &mut Engine, net: Network) -> Result<NetworkCreated> {
    if net.has_v6() {
        link::ipv6_available("this host's network namespace")?;
    }
    let links = Links::open()?;
    let mut notes = vec![];
    match e.state.networks.get(&net.name) {
        Some(old) if *old == net => {
            // Same settings: make sure the kernel still has it all (repairs a deleted bridge).
            bring_up_bridge(&links, &net)?;
            notes.extend(host::enable_forwarding(&mut e.state)?);
            e.sync_firewall()?;
            let fw = crate::hostfw::sync(&mut e.state);
            notes.extend(fw.steps);
            e.save()?;
            return Ok(NetworkCreated { network: net, existed: true, notes, warnings: fw.warnings });
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
    let mut want = e.state.clone();
    want.networks.insert(net.name.clone(), net.clone());
    validate::ensure(&want, "")?;
    if links.link(&net.bridge)?.is_some() {
        return refuse(format!(
            "interface {} already exists on this host and is not netnat's; choose another name with --bridge",
            net.bridge
        ));
    }
    bring_up_bridge(&links, &net)?;
    e.state.networks.insert(net.name.clone(), net.clone());
    let result = host::enable_forwarding(&mut e.state).and_then(|n| {
        notes.extend(n);
        e.sync_firewall()
    });
    if let Err(err) = result {
        // Leave nothing half-made: the bridge goes, the record is not saved.
        let _ = links.delete_link(&net.bridge);
        return Err(err);
    }
    let fw = crate::hostfw::sync(&mut e.state);
    notes.extend(fw.steps);
    e.save()?;
    let mut warnings: Vec<String> = drop_in_warning(&e.state).into_iter().collect();
    warnings.extend(fw.warnings);
    Ok(NetworkCreated { network: net, existed: false, notes, warnings })
}

/// The drop-in is a convenience for the imperative operations: a failure is a warning.
fn drop_in_warning(state: &State) -> Option<String> {
    host::write_conf(state).err().map(|e| format!("{e:#}"))
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
    if old.host_firewall != new.host_firewall {
        d.push(format!("host-firewall {} (asked {})", old.host_firewall, new.host_firewall));
    }
    d.join(", ")
}

/// What `remove_network` did: None when there was no such network.
#[derive(Debug, Serialize)]
pub struct NetworkRemoved {
    pub network: Option<Network>,
    pub warnings: Vec<String>,
}

/// Removes a network with no endpoints left: its rules, its bridge, and (with the last network)
/// the sysctls netnat set.
pub fn remove_network(e: &mut Engine, name: &str) -> Result<NetworkRemoved> {
    if let Some(o) = e.state.networks.get(name).and_then(|n| n.owner.as_ref()) {
        return refuse(format!(
            "network {name} is {by}'s network {id}; remove it through {by} (e.g. `{by} network rm {short}`)",
            by = o.by,
            id = o.id,
            short = o.short()
        ));
    }
    remove_network_in(e, name)
}

/// `remove_network` for the owner of the network too (see `handoff::remove_owned_network`).
pub(super) fn remove_network_in(e: &mut Engine, name: &str) -> Result<NetworkRemoved> {
    let Some(net) = e.state.networks.get(name).cloned() else {
        return Ok(NetworkRemoved { network: None, warnings: vec![] });
    };
    let users: Vec<String> = e
        .state
        .endpoints_on(name)
        .map(|(s, _)| s.name.clone())
        .chain(e.state.handoffs_on(name).map(|h| h.owner.to_string()))
        .collect();
    if !users.is_empty() {
        return refuse(format!("network {name} still has endpoints in {}; disconnect them first", users.join(", ")));
    }
    e.state.networks.remove(name);
    e.sync_firewall()?;
    // Closed in the host firewalls while the bridge still exists (firewalld unbinds it).
    let fw = crate::hostfw::sync(&mut e.state);
    Links::open()?.delete_link(&net.bridge)?;
    if e.state.networks.is_empty() {
        host::restore(&mut e.state)?;
    }
    e.save()?;
    let mut warnings: Vec<String> = drop_in_warning(&e.state).into_iter().collect();
    warnings.extend(fw.steps.into_iter().chain(fw.warnings));
    Ok(NetworkRemoved { network: Some(net), warnings })
}

/// How `create_sandbox` found the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Made {
    /// netnat made its namespace now.
    Created,
    /// Its namespace existed (made by someone else, e.g. `ip netns add`): taken as it is, and
    /// left in place by `sandbox rm`.
    Adopted,
    /// netnat already had it.
    Existed,
}

/// An endpoint asked for: the network, and what is not allocated.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub network: String,
    /// At most one per family; the others are allocated.
    pub ips: Vec<IpAddr>,
    pub ifname: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SandboxCreated {
    pub sandbox: Sandbox,
    pub made: Made,
}

/// Creates (or adopts) a sandbox's namespace, and connects it when `attach` says where. A failed
/// connection leaves nothing of a sandbox made now.
pub fn create_sandbox(e: &mut Engine, name: &str, attach: Option<&Attachment>) -> Result<SandboxCreated> {
    check_name(name, "sandbox")?;
    if let Some(a) = attach {
        // Check the connection before making anything, so bad input leaves nothing behind.
        if !e.state.networks.contains_key(&a.network) {
            return refuse(format!("no network named {}", a.network));
        }
    }
    let made = if e.state.sandboxes.contains_key(name) {
        if !netns::exists(name) {
            bail!(
                "sandbox {name} is recorded but its namespace {} is gone; run `netnat sandbox rm {name}` and create it \
                 again",
                netns::path(name).display()
            );
        }
        Made::Existed
    } else {
        let created = create_netns(e.store(), name)?;
        e.state.sandboxes.insert(name.into(), Sandbox { name: name.into(), created, endpoints: vec![] });
        if created {
            Made::Created
        } else {
            Made::Adopted
        }
    };
    if let Some(a) = attach {
        if let Err(err) = connect_in(&mut e.state, a, name) {
            if made != Made::Existed {
                let sb = e.state.sandboxes.remove(name).expect("just inserted");
                if sb.created {
                    let _ = delete_netns(e.store(), name);
                }
            }
            return Err(err);
        }
    }
    e.save()?;
    Ok(SandboxCreated { sandbox: e.state.sandboxes[name].clone(), made })
}

/// Removes a sandbox: its endpoints, and its namespace if netnat made it. None: no such sandbox.
pub fn remove_sandbox(e: &mut Engine, name: &str) -> Result<Option<Sandbox>> {
    let Some(sb) = e.state.sandboxes.get(name).cloned() else {
        return Ok(None);
    };
    let links = Links::open()?;
    for ep in &sb.endpoints {
        links.delete_link(&ep.host_ifname)?;
    }
    if sb.created {
        delete_netns(e.store(), name)?;
    }
    e.state.sandboxes.remove(name);
    e.save()?;
    Ok(Some(sb))
}

#[derive(Debug, Serialize)]
pub struct Connected {
    pub sandbox: String,
    pub endpoint: Endpoint,
    /// It was already connected, as asked.
    pub existed: bool,
    /// Its namespace was not netnat's sandbox yet: it was adopted.
    pub adopted: bool,
}

/// Attaches a sandbox to a recorded network, allocating what was not given. A namespace that
/// exists at /run/netns/SANDBOX but is not recorded (made by `ip netns add`, say) is adopted
/// first, as `create_sandbox` does: netnat leaves it in place when the sandbox is removed.
pub fn connect(e: &mut Engine, sandbox: &str, a: &Attachment) -> Result<Connected> {
    let adopt = !e.state.sandboxes.contains_key(sandbox) && e.state.networks.contains_key(&a.network);
    if adopt && netns::exists(sandbox) {
        check_name(sandbox, "sandbox")?;
        let created = create_netns(e.store(), sandbox)?;
        e.state.sandboxes.insert(sandbox.into(), Sandbox { name: sandbox.into(), created, endpoints: vec![] });
    }
    let c = match connect_in(&mut e.state, a, sandbox) {
        Ok(c) => c,
        Err(err) => {
            if adopt {
                e.state.sandboxes.remove(sandbox);
            }
            return Err(err);
        }
    };
    let c = Connected { adopted: adopt && e.state.sandboxes.contains_key(sandbox), ..c };
    if !c.existed {
        e.save()?;
    }
    Ok(c)
}

fn connect_in(state: &mut State, a: &Attachment, sandbox: &str) -> Result<Connected> {
    let network = a.network.as_str();
    let Some(net) = state.networks.get(network).cloned() else {
        return refuse(format!("no network named {network}"));
    };
    let Some(sb) = state.sandboxes.get(sandbox).cloned() else {
        return refuse(format!("no sandbox named {sandbox}; create it with `netnat sandbox create {sandbox}`"));
    };
    if let Some(i) = &a.ifname {
        check_ifname(i, "interface name")?;
    }
    if let Some(ep) = sb.endpoints.iter().find(|e| e.network == network) {
        // Name what differs: the recorded value and the one asked for.
        let mut differ: Vec<String> = a.ips.iter().filter(|i| !ep.has(**i)).map(|i| format!("--ip {i}")).collect();
        if let Some(i) = a.ifname.as_ref().filter(|i| **i != ep.ifname) {
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
        return Ok(Connected { sandbox: sandbox.into(), endpoint: ep.clone(), existed: true, adopted: false });
    }
    let ips = state.endpoint_ips(&net, &a.ips, sandbox)?;
    let ifname = match &a.ifname {
        Some(i) => i.clone(),
        None => {
            (0..).map(|n| format!("eth{n}")).find(|n| sb.endpoints.iter().all(|e| &e.ifname != n)).expect("unbounded")
        }
    };
    let ep = Endpoint { network: network.into(), ips, ifname, host_ifname: host_ifname(sandbox, network) };
    let mut want = state.clone();
    want.sandboxes.get_mut(sandbox).expect("checked above").endpoints.push(ep.clone());
    validate::ensure(&want, "")?;
    if !netns::exists(sandbox) {
        bail!("the namespace of sandbox {sandbox} ({}) is gone", netns::path(sandbox).display());
    }
    add_endpoint(&Links::open()?, &endpoint_spec(&net, sandbox, &ep, sb.endpoints.is_empty()), network, sandbox)?;
    *state = want;
    Ok(Connected { sandbox: sandbox.into(), endpoint: ep, existed: false, adopted: false })
}

/// Removes a sandbox's endpoint on a network. Ok(false): it was not connected.
pub fn disconnect(e: &mut Engine, network: &str, sandbox: &str) -> Result<bool> {
    let Some(sb) = e.state.sandboxes.get_mut(sandbox) else {
        return refuse(format!("no sandbox named {sandbox}"));
    };
    let Some(pos) = sb.endpoints.iter().position(|x| x.network == network) else {
        return Ok(false);
    };
    // Deleting the host end removes the pair, the peer inside the sandbox with it.
    Links::open()?.delete_link(&sb.endpoints[pos].host_ifname)?;
    sb.endpoints.remove(pos);
    e.save()?;
    Ok(true)
}
