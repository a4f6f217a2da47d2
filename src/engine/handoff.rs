//! Endpoints whose sandbox another program owns (`Handoff`: Docker's containers), and the ports
//! published for them. A front door that speaks a driver API (Docker's remote network driver)
//! translates each request into one of these; each takes the engine's lock and record like any
//! CLI command, and published ports go through `ports::publish` and `ports::unpublish`.

use super::hostports::{self, PortRequest};
use super::mapping::{self, Change};
use super::network::{create_network, remove_network_in, NetworkCreated, NetworkRemoved};
use super::{refuse, Engine};
use crate::model::{host_ifname, AttachmentId, Cidr, Handoff, Mapping, Network, Owner};
use crate::recover::endpoint_alias;
use anyhow::{bail, Context, Result};

/// Creates a network for `owner` (its `owner` field set by the caller): as `create_network`,
/// and the same request again (a restarted owner asking twice) is answered as done.
pub fn create_owned_network(e: &mut Engine, net: Network) -> Result<NetworkCreated> {
    let Some(owner) = net.owner.clone() else { bail!("network {} has no owner", net.name) };
    if let Some(old) = e.state.network_owned_by(&owner.by, &owner.id).filter(|o| o.name != net.name) {
        return refuse(format!("{} network {} is netnat's network {} already", owner.by, owner.id, old.name));
    }
    create_network(e, net)
}

/// Removes `by`'s network `id` and everything of it that is left (handoffs the owner forgot,
/// their ports). None when netnat has no such network.
pub fn remove_owned_network(e: &mut Engine, by: &str, id: &str) -> Result<Option<NetworkRemoved>> {
    let Some(net) = e.state.network_owned_by(by, id).cloned() else { return Ok(None) };
    let left: Vec<String> = e.state.handoffs_on(&net.name).map(|h| h.owner.key()).collect();
    for key in left {
        remove_handoff(e, &key)?;
    }
    remove_network_in(e, &net.name).map(Some)
}

/// Records an endpoint whose addresses the owner chose (Docker's CreateEndpoint): nothing in
/// the kernel yet. The same request again is done; another one for the same ID is refused.
pub fn add_handoff(e: &mut Engine, h: Handoff) -> Result<Handoff> {
    let key = h.owner.key();
    let Some(net) = e.state.networks.get(&h.network).cloned() else {
        return refuse(format!("no network named {}", h.network));
    };
    if let Some(old) = e.state.handoffs.get(&key) {
        if old.network == h.network && old.ips == h.ips && old.mac == h.mac {
            return Ok(old.clone());
        }
        return refuse(format!("{} exists already with other addresses ({})", h.owner, ips_text(&old.ips)));
    }
    if let Some(m) = &h.mac {
        parse_mac(m).map_err(|err| crate::model::InputError(format!("{err:#}")))?;
    }
    if h.ips.is_empty() {
        return refuse(format!("{} has no address on network {}", h.owner, h.network));
    }
    for ip in &h.ips {
        e.state.check_endpoint_ip(&net, *ip, "")?;
    }
    e.state.handoffs.insert(key, h.clone());
    e.save()?;
    Ok(h)
}

/// A handoff with its names filled in from the owner and network: the host end is named like
/// every netnat veth; the peer `nnp` + the same hash, until the owner renames it.
pub fn new_handoff(owner: Owner, network: &str, ips: Vec<std::net::IpAddr>, mac: Option<String>) -> Handoff {
    let host = host_ifname(&owner.key(), network);
    let peer = format!("nnp{}", &host[2..]);
    Handoff { owner, network: network.into(), ips, host_ifname: host, peer_ifname: peer, mac, sandbox: None }
}

/// Makes the veth pair of a recorded handoff (Docker's Join): the host end on the bridge, the
/// peer in this namespace for the owner to take. Joined again, the pair is made again only if
/// it is gone (the owner moved and lost it).
pub fn join_handoff(e: &mut Engine, key: &str, sandbox: &str) -> Result<(Handoff, Network)> {
    let Some(h) = e.state.handoffs.get(key).cloned() else {
        return refuse(format!("netnat has no endpoint {key}"));
    };
    let net = e.state.networks.get(&h.network).cloned().context("a handoff's network is recorded")?;
    let links = e.kernel.links.as_mut();
    links.delete_link(&h.host_ifname)?; // a pair left from an earlier join: its peer is not where the owner expects
    let mac = h.mac.as_deref().map(parse_mac).transpose()?;
    let alias = endpoint_alias(&h.network, &alias_name(&h.owner));
    links.add_handoff_veth(&net.bridge, &h.host_ifname, &h.peer_ifname, mac, &alias)?;
    let joined = Handoff { sandbox: Some(sandbox.into()), ..h };
    e.state.handoffs.insert(key.into(), joined.clone());
    if let Err(err) = e.save() {
        let _ = e.kernel.links.delete_link(&joined.host_ifname);
        return Err(err);
    }
    Ok((joined, net))
}

/// The sandbox name in a handoff's mark (`recover` and `reset` read it): `docker-` + 12 hex.
fn alias_name(o: &Owner) -> String {
    format!("{}-{}", o.by, o.short())
}

/// Deletes the veth pair (Docker's Leave); the record keeps the handoff. Ok(false): it was not
/// joined.
pub fn leave_handoff(e: &mut Engine, key: &str) -> Result<bool> {
    let Some(h) = e.state.handoffs.get(key).cloned() else {
        return refuse(format!("netnat has no endpoint {key}"));
    };
    e.kernel.links.delete_link(&h.host_ifname)?;
    if h.sandbox.is_none() {
        return Ok(false);
    }
    e.state.handoffs.insert(key.into(), Handoff { sandbox: None, ..h });
    e.save()?;
    Ok(true)
}

/// Removes a handoff (Docker's DeleteEndpoint): its ports, its veth pair and its record. None
/// when there was no such handoff.
pub fn remove_handoff(e: &mut Engine, key: &str) -> Result<Option<Handoff>> {
    let Some(h) = e.state.handoffs.get(key).cloned() else { return Ok(None) };
    unpublish_owned(e, &ports_owner(&h))?;
    e.kernel.links.delete_link(&h.host_ifname)?;
    e.state.handoffs.remove(key);
    e.save()?;
    Ok(Some(h))
}

/// The attachment that owns a handoff's published ports: its network, the owner's ID, and the
/// interface-name prefix the owner gives the peer.
pub fn ports_owner(h: &Handoff) -> AttachmentId {
    AttachmentId { network: h.network.clone(), container_id: h.owner.id.clone(), ifname: "eth".into() }
}

/// Publishes a handoff's ports (Docker's ProgramExternalConnectivity): host ports chosen as
/// asked (`hostports::choose`), owned by the handoff's attachment, with the sources of `allow`
/// (empty: every source), through the one mapping-change operation. Asked again while
/// published: the ports it has are returned.
pub fn publish_owned(e: &mut Engine, key: &str, reqs: &[PortRequest], allow: &[Cidr]) -> Result<Vec<Mapping>> {
    let Some(h) = e.state.handoffs.get(key).cloned() else {
        return refuse(format!("netnat has no endpoint {key}"));
    };
    let id = ports_owner(&h);
    if let Some(a) = e.state.attachments.get(&id.key()) {
        return Ok(a.mappings.clone());
    }
    if reqs.is_empty() {
        return Ok(vec![]);
    }
    let maps = hostports::choose_now(&e.state, reqs)?;
    mapping::change(e, &Change::Attach { id, maps: maps.clone(), allow: allow.to_vec() })?;
    Ok(maps)
}

/// Removes the ports an attachment owns, exactly those (Docker's RevokeExternalConnectivity).
pub fn unpublish_owned(e: &mut Engine, id: &AttachmentId) -> Result<Vec<Mapping>> {
    if !e.state.attachments.contains_key(&id.key()) {
        return Ok(vec![]);
    }
    Ok(mapping::change(e, &Change::Detach(vec![id.clone()]))?.removed)
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s.split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    v.try_into().map_err(|_| anyhow::anyhow!("MAC address {s:?} is not six hex bytes"))
}

fn ips_text(ips: &[std::net::IpAddr]) -> String {
    ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, State};

    #[test]
    fn handoffs_and_owned_networks_round_trip_and_hold_their_addresses() {
        let mut st = State::default();
        let subnet = "10.77.0.0/24".parse().unwrap();
        let mut n = Network::new("docker-4eccb740e675", &[subnet], &[], Some("nd-4eccb740e675")).unwrap();
        let options = [("netnat.allow".to_string(), "10.0.0.0/8".to_string())].into();
        n.owner = Some(Owner { options, ..Owner::new("docker", "4eccb740e675e336") });
        st.networks.insert(n.name.clone(), n.clone());
        let h = new_handoff(Owner::new("docker", "ep1"), &n.name, vec!["10.77.0.2".parse().unwrap()], None);
        assert!(h.host_ifname.starts_with("nn") && h.host_ifname.len() == 10 && h.peer_ifname.len() == 11);
        st.handoffs.insert(h.owner.key(), h);
        // Format 2: older netnats refuse it as newer, instead of failing on unknown keys.
        let text = crate::state::render(&st);
        assert!(text.contains("\"format\": 2") && text.contains("\"handoffs\""), "{text}");
        assert_eq!(crate::state::parse(&text).unwrap(), st);
        // Docker's addresses are not handed out again, nor taken by a sandbox.
        assert_eq!(st.allocate_ip(&n, Family::V4).unwrap().to_string(), "10.77.0.3");
        let e = st.check_endpoint_ip(&n, "10.77.0.2".parse().unwrap(), "ns1").unwrap_err();
        assert!(e.0.contains("held by docker endpoint ep1"), "{e}");
        assert_eq!(st.network_owned_by("docker", "4eccb740e675e336").map(|x| x.name.as_str()), Some(n.name.as_str()));
    }
}
