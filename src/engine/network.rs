//! Networks, sandboxes and their endpoints (the CNM side): create, remove, connect, disconnect.

use super::kernel::{create_netns, delete_netns};
use super::{refuse, Engine};
use crate::link::{self, netns};
use crate::linkplan::{self, LinkOp};
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
    let existed = match e.state.networks.get(&net.name) {
        Some(old) if *old == net => true,
        Some(old) => {
            return refuse(format!(
                "network {} already exists with different settings: {}",
                net.name,
                differences(old, &net)
            ))
        }
        None => false,
    };
    let mut want = e.state.clone();
    if !existed {
        want.networks.insert(net.name.clone(), net.clone());
        validate::ensure(&want, "")?;
        if e.kernel.links.links()?.iter().any(|l| l.name == net.bridge) {
            return refuse(format!(
                "interface {} already exists on this host and is not netnat's; choose another name with --bridge",
                net.bridge
            ));
        }
    }
    // Same settings: the planner repairs what the kernel lost (a deleted bridge, say).
    let from = e.state.clone();
    let keep = |op: &LinkOp| match op {
        LinkOp::CreateBridge { network } | LinkOp::RepairBridge { network } | LinkOp::RemoveNetwork { network } => {
            network.name == net.name
        }
        LinkOp::EnableForwarding { .. } | LinkOp::RestoreSysctls => true,
        _ => false,
    };
    let mut notes = change_links(e, &from, &want, &keep)?;
    if let Err(err) = e.sync_firewall() {
        if !existed {
            // Leave nothing half-made: the bridge goes, the record is not saved.
            let done = e.state.clone();
            undo_links(e, &done, &from, &keep);
            e.state = from;
        }
        return Err(err);
    }
    let fw = crate::hostfw::sync(&mut e.state, e.kernel.firewall.foreign());
    notes.extend(fw.steps);
    e.save()?;
    let mut warnings: Vec<String> = if existed { None } else { drop_in_warning(e) }.into_iter().collect();
    warnings.extend(fw.warnings);
    Ok(NetworkCreated { network: net, existed, notes, warnings })
}

/// Does the link steps from `from` to `target` that `keep` selects, as `apply` does (planner, then
/// the executor through the link seam), and makes the result the engine's state. On a failure the
/// steps done are undone and the state is left as it was.
fn change_links(e: &mut Engine, from: &State, target: &State, keep: &dyn Fn(&LinkOp) -> bool) -> Result<Vec<String>> {
    let obs = e.kernel.links.observe(target, from)?;
    let mut rec = from.clone();
    let mut notes = vec![];
    for op in linkplan::plan_links(target, from, &obs).iter().filter(|op| keep(op)) {
        match e.kernel.links.execute(op, &e.store, &mut rec) {
            Ok(n) => notes.extend(n),
            Err(err) => {
                undo_links(e, &rec, from, keep);
                return Err(err);
            }
        }
    }
    e.state = rec;
    Ok(notes)
}

/// Best effort: the link steps (those `keep` selects) from `done` back to `from`. A namespace is
/// only forgotten, never deleted: these operations adopt namespaces, they do not make them.
fn undo_links(e: &mut Engine, done: &State, from: &State, keep: &dyn Fn(&LinkOp) -> bool) {
    let Ok(obs) = e.kernel.links.observe(from, done) else { return };
    let mut rec = done.clone();
    for op in linkplan::plan_links(from, done, &obs).into_iter().filter(|op| keep(op)) {
        let op = match op {
            LinkOp::RemoveSandbox { name, .. } => LinkOp::RemoveSandbox { name, created: false },
            op => op,
        };
        let _ = e.kernel.links.execute(&op, &e.store, &mut rec);
    }
}

/// The drop-in is a convenience for the imperative operations: a failure is a warning.
fn drop_in_warning(e: &mut Engine) -> Option<String> {
    e.kernel.links.write_conf(&e.state).err().map(|e| format!("{e:#}"))
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
    let fw = crate::hostfw::sync(&mut e.state, e.kernel.firewall.foreign());
    let mut from = e.state.clone();
    from.networks.insert(name.into(), net.clone());
    let target = e.state.clone();
    let keep = |op: &LinkOp| match op {
        LinkOp::RemoveNetwork { network } => network.name == name,
        LinkOp::RestoreSysctls => true,
        _ => false,
    };
    change_links(e, &from, &target, &keep)?;
    e.save()?;
    let mut warnings: Vec<String> = drop_in_warning(e).into_iter().collect();
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
        if let Err(err) = connect_in(e, a, name, false) {
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
    for ep in &sb.endpoints {
        e.kernel.links.delete_link(&ep.host_ifname)?;
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
    let adopt = adopt && netns::exists(sandbox);
    if adopt {
        check_name(sandbox, "sandbox")?;
    }
    let c = connect_in(e, a, sandbox, adopt)?;
    let c = Connected { adopted: adopt, ..c };
    if !c.existed {
        e.save()?;
    }
    Ok(c)
}

/// Connects `sandbox` (adopting its namespace first when `adopt`) through the link planner; a
/// failure leaves the state and the kernel as they were.
fn connect_in(e: &mut Engine, a: &Attachment, sandbox: &str, adopt: bool) -> Result<Connected> {
    let mut base = e.state.clone();
    if adopt {
        base.sandboxes.insert(sandbox.into(), Sandbox { name: sandbox.into(), created: false, endpoints: vec![] });
    }
    let (want, ep) = match wanted_endpoint(&base, a, sandbox)? {
        Ok(wanted) => wanted,
        Err(ep) => return Ok(Connected { sandbox: sandbox.into(), endpoint: ep, existed: true, adopted: false }),
    };
    validate::ensure(&want, "")?;
    if !netns::exists(sandbox) {
        bail!("the namespace of sandbox {sandbox} ({}) is gone", netns::path(sandbox).display());
    }
    let from = e.state.clone();
    let network = a.network.as_str();
    let keep = |op: &LinkOp| match op {
        LinkOp::Connect { sandbox: s, network: n, .. } => s == sandbox && n.name == network,
        // A link with the endpoint's host name is not netnat's to delete here: the connect fails
        // naming it (`apply` takes such a leftover over; these commands leave it).
        LinkOp::AdoptNamespace { sandbox: s } | LinkOp::RemoveSandbox { name: s, .. } => s == sandbox,
        _ => false,
    };
    change_links(e, &from, &want, &keep)?;
    Ok(Connected { sandbox: sandbox.into(), endpoint: ep, existed: false, adopted: false })
}

/// The state with `sandbox`'s new endpoint on `a.network` and that endpoint, allocating what was
/// not given; Err(endpoint): it is already connected as asked.
fn wanted_endpoint(state: &State, a: &Attachment, sandbox: &str) -> Result<Result<(State, Endpoint), Endpoint>> {
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
        return Ok(Err(ep.clone()));
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
    Ok(Ok((want, ep)))
}

/// Removes a sandbox's endpoint on a network. Ok(false): it was not connected.
pub fn disconnect(e: &mut Engine, network: &str, sandbox: &str) -> Result<bool> {
    let Some(sb) = e.state.sandboxes.get(sandbox) else {
        return refuse(format!("no sandbox named {sandbox}"));
    };
    if !sb.endpoints.iter().any(|x| x.network == network) {
        return Ok(false);
    }
    let from = e.state.clone();
    let mut target = from.clone();
    target.sandboxes.get_mut(sandbox).expect("checked above").endpoints.retain(|x| x.network != network);
    // Deleting the host end removes the pair, the peer inside the sandbox with it.
    let keep = |op: &LinkOp| matches!(op, LinkOp::Disconnect { sandbox: s, endpoint: x } if s == sandbox && x.network == network);
    change_links(e, &from, &target, &keep)?;
    e.save()?;
    Ok(true)
}
