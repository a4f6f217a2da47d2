//! Each request of Docker's remote network driver protocol, translated into the engine's
//! operations (`engine::network`, `engine::handoff`): the same lock, record and nftables batch
//! as the CLI. Nothing is kept in this process between requests.

use super::api::{self, CreateEndpoint, CreateNetwork, Join, PortBinding, ProgramExternalConnectivity, Target};
use crate::engine::handoff::{self, ports_owner};
use crate::engine::hostports::PortRequest;
use crate::engine::Engine;
use crate::model::{Cidr, Family, InputError, Network, Owner, Proto, State, Subnet};
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The owner name netnat records for Docker's networks and endpoints.
pub const DOCKER: &str = "docker";

/// The `-o` options `docker network create -d netnat` takes.
pub const OPTIONS: &[&str] =
    &["netnat.allow", "netnat.internal", "netnat.masquerade", "netnat.host_firewall", "netnat.bridge"];

/// Answers one request: HTTP status and JSON body. Failures are `{"Err": ...}`, which Docker
/// shows in the failing command's message.
pub fn handle(dir: &Path, path: &str, body: &[u8]) -> (u16, String) {
    match serve(dir, path, body) {
        Ok(Some(v)) => (200, v.to_string()),
        Ok(None) => (404, api::error(&format!("netnat's Docker driver has no endpoint {path}"))),
        Err(e) => {
            eprintln!("netnat: docker {}: {e:#}", path.trim_start_matches('/'));
            (500, api::error(&format!("netnat: {e:#}")))
        }
    }
}

fn serve(dir: &Path, path: &str, body: &[u8]) -> Result<Option<Value>> {
    let v = match path {
        "/Plugin.Activate" => json!({ "Implements": ["NetworkDriver"] }),
        // "local": a "global" driver is refused outside swarm.
        "/NetworkDriver.GetCapabilities" => json!({ "Scope": "local", "ConnectivityScope": "local" }),
        "/NetworkDriver.CreateNetwork" => create_network(dir, &decode(body)?)?,
        "/NetworkDriver.DeleteNetwork" => delete_network(dir, &decode(body)?)?,
        "/NetworkDriver.CreateEndpoint" => create_endpoint(dir, &decode(body)?)?,
        "/NetworkDriver.DeleteEndpoint" => delete_endpoint(dir, &decode(body)?)?,
        "/NetworkDriver.Join" => join(dir, &decode(body)?)?,
        "/NetworkDriver.Leave" => leave(dir, &decode(body)?)?,
        "/NetworkDriver.ProgramExternalConnectivity" => program(dir, &decode(body)?)?,
        "/NetworkDriver.RevokeExternalConnectivity" => revoke(dir, &decode(body)?)?,
        "/NetworkDriver.EndpointOperInfo" => json!({ "Value": {} }),
        // Node discovery and swarm's network allocation: nothing to do for a local driver.
        "/NetworkDriver.DiscoverNew"
        | "/NetworkDriver.DiscoverDelete"
        | "/NetworkDriver.AllocateNetwork"
        | "/NetworkDriver.FreeNetwork" => json!({}),
        _ => return Ok(None),
    };
    Ok(Some(v))
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(body).map_err(|e| InputError(format!("the request is not what Docker sends: {e}")))?)
}

/// netnat's name for Docker's network `id`, and its default bridge (at most 15 bytes).
pub fn network_name(id: &str) -> String {
    format!("{DOCKER}-{}", &id[..id.len().min(12)])
}

fn default_bridge(id: &str) -> String {
    format!("nd-{}", &id[..id.len().min(12)])
}

fn create_network(dir: &Path, r: &CreateNetwork) -> Result<Value> {
    let net = network_from(r)?;
    let made = handoff::create_owned_network(&mut Engine::open(dir)?, net)?;
    // Docker shows no warnings from a driver: they go to the plugin's log (the journal).
    for w in made.warnings.iter().chain(&made.notes) {
        eprintln!("netnat: network {} (Docker network {}): {w}", made.network.name, r.network_id);
    }
    Ok(json!({}))
}

/// The netnat network a CreateNetwork asks for, its options checked.
pub fn network_from(r: &CreateNetwork) -> Result<Network, InputError> {
    if r.network_id.is_empty() || !r.network_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InputError(format!("network ID {:?} is not an ID", r.network_id)));
    }
    let opts = generic_options(&r.options)?;
    let mut subnets = vec![];
    let mut gateways = vec![];
    for d in r.ipv4.iter().chain(&r.ipv6) {
        subnets.push(d.pool.parse::<Subnet>()?);
        if !d.gateway.is_empty() {
            let ip = d.gateway.split('/').next().unwrap_or_default();
            gateways.push(crate::model::parse_ip(ip, "gateway")?);
        }
    }
    if r.ipv4.len() > 1 || r.ipv6.len() > 1 {
        return Err(InputError("netnat networks have one subnet per family; give one --subnet of each".into()));
    }
    let bridge = opts.get("netnat.bridge").cloned().unwrap_or_else(|| default_bridge(&r.network_id));
    let mut net = Network::new(&network_name(&r.network_id), &subnets, &gateways, Some(&bridge))?;
    net.internal = flag(&opts, "netnat.internal", false)? || r.options.get(api::INTERNAL) == Some(&Value::Bool(true));
    net.masquerade = flag(&opts, "netnat.masquerade", true)?;
    allow_list(&opts)?;
    if let Some(v) = opts.get("netnat.host_firewall") {
        net.host_firewall =
            v.parse().map_err(|e: InputError| InputError(format!("-o netnat.host_firewall={v}: {}", e.0)))?;
    }
    net.owner = Some(Owner { options: opts, ..Owner::new(DOCKER, &r.network_id) });
    Ok(net)
}

/// `-o` options: only netnat's, each a string.
fn generic_options(options: &Map<String, Value>) -> Result<BTreeMap<String, String>, InputError> {
    let mut out = BTreeMap::new();
    let Some(g) = options.get(api::GENERIC) else { return Ok(out) };
    let Some(g) = g.as_object() else { return Err(InputError(format!("{} is not an object", api::GENERIC))) };
    for (k, v) in g {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(InputError(format!("unknown option -o {k}; netnat's options are {}", OPTIONS.join(", "))));
        }
        let Some(v) = v.as_str() else { return Err(InputError(format!("option -o {k}: {v} is not a string"))) };
        out.insert(k.clone(), v.to_string());
    }
    Ok(out)
}

fn flag(opts: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool, InputError> {
    match opts.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(InputError(format!("-o {key}={v}: give true or false"))),
    }
}

/// `netnat.allow=CIDR[,CIDR...]`: the sources allowed to reach the network's published ports.
pub fn allow_list(opts: &BTreeMap<String, String>) -> Result<Vec<Cidr>, InputError> {
    let Some(v) = opts.get("netnat.allow") else { return Ok(vec![]) };
    v.split(',')
        .map(|c| c.trim().parse::<Cidr>().map_err(|e| InputError(format!("-o netnat.allow={v}: {}", e.0))))
        .collect()
}

fn delete_network(dir: &Path, r: &Target) -> Result<Value> {
    handoff::remove_owned_network(&mut Engine::open(dir)?, DOCKER, &r.network_id)?;
    Ok(json!({}))
}

/// The netnat network of Docker's network `id`, or a clear error.
fn network_of<'a>(st: &'a State, id: &str) -> Result<&'a Network> {
    st.network_owned_by(DOCKER, id).ok_or_else(|| {
        InputError(format!(
            "netnat has no network for Docker network {id}: it was not created through netnat's driver, or \
             netnat's record was reset since; remove it (`docker network rm`) and create it again"
        ))
        .into()
    })
}

fn endpoint_key(id: &str) -> String {
    Owner::new(DOCKER, id).key()
}

fn create_endpoint(dir: &Path, r: &CreateEndpoint) -> Result<Value> {
    let mut e = Engine::open(dir)?;
    let net = network_of(&e.state, &r.network_id)?.name.clone();
    let i = r.interface.clone().unwrap_or_default();
    let mut ips = vec![];
    for a in [&i.address, &i.address_v6].into_iter().filter(|a| !a.is_empty()) {
        ips.push(crate::model::parse_ip(a.split('/').next().unwrap_or_default(), "endpoint address")?);
    }
    let mac = (!i.mac.is_empty()).then(|| i.mac.clone());
    handoff::add_handoff(&mut e, handoff::new_handoff(Owner::new(DOCKER, &r.endpoint_id), &net, ips, mac))?;
    Ok(json!({}))
}

fn delete_endpoint(dir: &Path, r: &Target) -> Result<Value> {
    handoff::remove_handoff(&mut Engine::open(dir)?, &endpoint_key(&r.endpoint_id))?;
    Ok(json!({}))
}

fn join(dir: &Path, r: &Join) -> Result<Value> {
    let mut e = Engine::open(dir)?;
    network_of(&e.state, &r.network_id)?;
    let (h, net) = handoff::join_handoff(&mut e, &endpoint_key(&r.endpoint_id), &r.sandbox_key)?;
    let gw = |f: Family| net.pool(f).map(|p| p.gateway.to_string()).unwrap_or_default();
    let answer = api::JoinResponse {
        interface_name: api::InterfaceName { src_name: h.peer_ifname, dst_prefix: "eth".into() },
        gateway: gw(Family::V4),
        gateway_v6: gw(Family::V6),
        disable_gateway_service: true,
    };
    serde_json::to_value(answer).context("encoding the Join answer")
}

fn leave(dir: &Path, r: &Target) -> Result<Value> {
    let mut e = Engine::open(dir)?;
    if e.state.handoffs.contains_key(&endpoint_key(&r.endpoint_id)) {
        handoff::leave_handoff(&mut e, &endpoint_key(&r.endpoint_id))?;
    }
    Ok(json!({}))
}

fn program(dir: &Path, r: &ProgramExternalConnectivity) -> Result<Value> {
    let bindings: Vec<PortBinding> = match r.options.get(api::PORTMAP) {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|err| InputError(format!("{} is not a list of port bindings: {err}", api::PORTMAP)))?,
    };
    let mut e = Engine::open(dir)?;
    let net = network_of(&e.state, &r.network_id)?.clone();
    let key = endpoint_key(&r.endpoint_id);
    let Some(h) = e.state.handoffs.get(&key).cloned() else {
        return Err(InputError(format!("netnat has no Docker endpoint {}", r.endpoint_id)).into());
    };
    let reqs = bindings.iter().map(|b| port_request(b, &h.ips)).collect::<Result<Vec<_>, _>>()?;
    let allow = allow_list(&net.owner.map(|o| o.options).unwrap_or_default())?;
    handoff::publish_owned(&mut e, &key, &reqs, &allow)?;
    Ok(json!({}))
}

/// One `-p` as netnat publishes it: to each of the container's addresses (both families when
/// the network has both and HostIP is ""), on the host port or the first free one of the range,
/// or any free one of the ephemeral range for HostPort 0.
pub fn port_request(b: &PortBinding, ips: &[IpAddr]) -> Result<PortRequest, InputError> {
    let protocol = Proto::from_number(b.proto)
        .ok_or_else(|| InputError(format!("IP protocol {} of port {} is not TCP, UDP or SCTP", b.proto, b.port)))?;
    let host_ip = match b.host_ip.as_str() {
        "" => None,
        a => Some(crate::model::parse_ip(a, "host address")?),
    };
    // "0.0.0.0" and "::" are Docker's spelling of every address of one family.
    let (host_ip, targets): (Option<IpAddr>, Vec<IpAddr>) = match host_ip {
        Some(a) if a.is_unspecified() => (None, ips.iter().copied().filter(|i| i.is_ipv4() == a.is_ipv4()).collect()),
        other => (other, ips.to_vec()),
    };
    let host_ports = match (b.host_port, b.host_port_end) {
        (0, _) => None,
        (a, z) if z <= a => Some((a, a)),
        (a, z) => Some((a, z)),
    };
    Ok(PortRequest { protocol, host_ip, host_ports, container_port: b.port, targets })
}

fn revoke(dir: &Path, r: &Target) -> Result<Value> {
    let mut e = Engine::open(dir)?;
    if let Some(h) = e.state.handoffs.get(&endpoint_key(&r.endpoint_id)).cloned() {
        handoff::unpublish_owned(&mut e, &ports_owner(&h))?;
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(generic: Value) -> CreateNetwork {
        serde_json::from_value(json!({
            "NetworkID": "4eccb740e675e33662aa52cd40f636e9c2d96a2ecad3183c7f444571c2c83305",
            "Options": { "com.docker.network.enable_ipv6": true, "com.docker.network.generic": generic },
            "IPv4Data": [{ "AddressSpace": "LocalDefault", "Gateway": "10.77.0.1/24", "Pool": "10.77.0.0/24" }],
            "IPv6Data": [{ "AddressSpace": "LocalDefault", "Gateway": "fd00:77::1/64", "Pool": "fd00:77::/64" }]
        }))
        .unwrap()
    }

    #[test]
    fn a_docker_network_and_its_options() {
        let n = network_from(&create(
            json!({ "netnat.allow": "192.0.2.0/24,2001:db8::/32", "netnat.masquerade": "false" }),
        ))
        .unwrap();
        assert_eq!((n.name.as_str(), n.bridge.as_str()), ("docker-4eccb740e675", "nd-4eccb740e675"));
        assert_eq!(
            (n.subnets_text().as_str(), n.gateways_text().as_str()),
            ("10.77.0.0/24, fd00:77::/64", "10.77.0.1, fd00:77::1")
        );
        assert!(!n.masquerade && !n.internal);
        assert_eq!(allow_list(&n.owner.unwrap().options).unwrap().len(), 2);
        let n = network_from(&create(
            json!({ "netnat.internal": "true", "netnat.bridge": "dock1", "netnat.host_firewall": "off" }),
        ))
        .unwrap();
        assert!(n.internal && n.bridge == "dock1" && n.host_firewall == crate::model::HostFirewallMode::Off);
        for (k, v, named) in [
            ("netnat.internal", "yes", "netnat.internal=yes"),
            ("netnat.allow", "10.0.0.0/33", "netnat.allow=10.0.0.0/33"),
            ("netnat.bridge", "much-too-long-name", "much-too-long-name"),
            ("netnat.host_firewall", "no", "netnat.host_firewall=no"),
            ("netnat.colour", "blue", "netnat.colour"),
        ] {
            let e = network_from(&create(json!({ k: v }))).unwrap_err();
            assert!(e.0.contains(named), "{k}={v}: {e}");
        }
    }

    #[test]
    fn port_bindings_as_docker_run_sends_them() {
        let ips: Vec<IpAddr> = vec!["10.77.0.2".parse().unwrap(), "fd00:77::2".parse().unwrap()];
        let b = |proto, host_ip: &str, host_port, end| PortBinding {
            proto,
            port: 80,
            host_ip: host_ip.into(),
            host_port,
            host_port_end: end,
        };
        let r = port_request(&b(6, "", 9090, 9090), &ips).unwrap();
        assert_eq!((r.protocol, r.host_ip, r.host_ports, r.targets.len()), (Proto::Tcp, None, Some((9090, 9090)), 2));
        let r = port_request(&b(17, "127.0.0.1", 9095, 9095), &ips).unwrap();
        assert_eq!((r.protocol, r.host_ip.map(|i| i.to_string())), (Proto::Udp, Some("127.0.0.1".into())));
        assert_eq!(port_request(&b(132, "", 0, 0), &ips).unwrap().host_ports, None);
        assert_eq!(port_request(&b(6, "", 9200, 9210), &ips).unwrap().host_ports, Some((9200, 9210)));
        let r = port_request(&b(6, "0.0.0.0", 80, 80), &ips).unwrap();
        assert_eq!((r.host_ip, r.targets.len()), (None, 1));
        assert!(port_request(&b(1, "", 80, 80), &ips).unwrap_err().0.contains("IP protocol 1"));
    }
}
