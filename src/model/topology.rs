//! Networks, their address pools, sandboxes and endpoints.

use super::{check_ifname, check_name, Family, HostFirewallMode, InputError, Owner, Subnet, Valid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Serde for a list that is written as one value when it has one item (the record and the file
/// of a single-family network look as they did before IPv6), and read from either form.
pub mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany<T> {
            One(T),
            Many(Vec<T>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        })
    }
}

/// One address family of a network (an IPAM pool in CNM words): its subnet and the bridge's
/// gateway address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Subnet,
    pub gateway: IpAddr,
}

impl Pool {
    pub fn family(&self) -> Family {
        self.subnet.family()
    }
}

/// What a network does with IPv6 traffic that leaves or enters it (Docker's gateway_mode_ipv6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Mode {
    /// Masquerade egress, DNAT published host ports (as for IPv4).
    #[default]
    Nat,
    /// The subnet is routed to the host: no NAT; outside clients reach published container ports
    /// at the container's own address, and nothing else.
    Routed,
}

impl FromStr for Ipv6Mode {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<Ipv6Mode> {
        match s {
            "nat" => Ok(Ipv6Mode::Nat),
            "routed" => Ok(Ipv6Mode::Routed),
            _ => invalid!("IPv6 mode '{s}' is not one of nat, routed"),
        }
    }
}

impl fmt::Display for Ipv6Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Ipv6Mode::Nat => "nat",
            Ipv6Mode::Routed => "routed",
        })
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NetworkRecord", into = "NetworkRecord")]
pub struct Network {
    pub name: String,
    /// One per family, IPv4 first.
    pub pools: Vec<Pool>,
    pub bridge: String,
    /// Masquerade traffic that leaves through a non-bridge interface (egress).
    pub masquerade: bool,
    /// No traffic to or from outside the bridge at all.
    pub internal: bool,
    pub ipv6_mode: Ipv6Mode,
    /// Whether netnat opens the host's firewall (firewalld, ufw, Docker) for this bridge.
    pub host_firewall: HostFirewallMode,
    /// Made through a driver API (a Docker network): who asked and its ID there.
    pub owner: Option<Owner>,
}

/// How a network is written in the record and in `--json`: `subnet` and `gateway` hold one
/// value per family, a plain string for a single-family network (the pre-IPv6 format).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkRecord {
    name: String,
    #[serde(with = "one_or_many")]
    subnet: Vec<Subnet>,
    #[serde(with = "one_or_many")]
    gateway: Vec<IpAddr>,
    bridge: String,
    masquerade: bool,
    internal: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    ipv6_mode: Ipv6Mode,
    #[serde(default, skip_serializing_if = "is_default")]
    host_firewall: HostFirewallMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
}

impl TryFrom<NetworkRecord> for Network {
    type Error = InputError;
    fn try_from(r: NetworkRecord) -> Valid<Network> {
        if r.subnet.len() != r.gateway.len() {
            invalid!("network {}: {} subnet(s) but {} gateway(s)", r.name, r.subnet.len(), r.gateway.len());
        }
        let pools = r.subnet.into_iter().zip(r.gateway).map(|(subnet, gateway)| Pool { subnet, gateway }).collect();
        Ok(Network {
            name: r.name,
            pools,
            bridge: r.bridge,
            masquerade: r.masquerade,
            internal: r.internal,
            ipv6_mode: r.ipv6_mode,
            host_firewall: r.host_firewall,
            owner: r.owner,
        })
    }
}

impl From<Network> for NetworkRecord {
    fn from(n: Network) -> NetworkRecord {
        NetworkRecord {
            name: n.name,
            subnet: n.pools.iter().map(|p| p.subnet).collect(),
            gateway: n.pools.iter().map(|p| p.gateway).collect(),
            bridge: n.bridge,
            masquerade: n.masquerade,
            internal: n.internal,
            ipv6_mode: n.ipv6_mode,
            host_firewall: n.host_firewall,
            owner: n.owner,
        }
    }
}

impl Network {
    /// Builds and checks a network from user input: at most one subnet per family; each gateway
    /// goes with the subnet of its family and defaults to that subnet's first host address.
    pub fn new(name: &str, subnets: &[Subnet], gateways: &[IpAddr], bridge: Option<&str>) -> Valid<Network> {
        check_name(name, "network")?;
        let bridge = bridge.unwrap_or(name);
        check_ifname(bridge, "bridge name")?;
        let pools = pools_of(subnets, gateways)?;
        Ok(Network {
            name: name.into(),
            pools,
            bridge: bridge.into(),
            masquerade: true,
            internal: false,
            ipv6_mode: Ipv6Mode::Nat,
            host_firewall: HostFirewallMode::Auto,
            owner: None,
        })
    }

    pub fn pool(&self, family: Family) -> Option<&Pool> {
        self.pools.iter().find(|p| p.family() == family)
    }

    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.pools.iter().map(|p| p.family())
    }

    pub fn has_v6(&self) -> bool {
        self.pool(Family::V6).is_some()
    }

    /// IPv6 of this network is routed (no NAT).
    pub fn routed_v6(&self) -> bool {
        self.has_v6() && self.ipv6_mode == Ipv6Mode::Routed
    }

    /// Whether the network's subnet of `ip`'s family holds it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.pools.iter().any(|p| p.subnet.contains(ip))
    }

    /// `172.16.0.0/16, fd00:16::/64`
    pub fn subnets_text(&self) -> String {
        self.pools.iter().map(|p| p.subnet.to_string()).collect::<Vec<_>>().join(", ")
    }

    pub fn gateways_text(&self) -> String {
        self.pools.iter().map(|p| p.gateway.to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// Pairs subnets with gateways by family (see `Network::new`).
pub fn pools_of(subnets: &[Subnet], gateways: &[IpAddr]) -> Valid<Vec<Pool>> {
    if subnets.is_empty() {
        invalid!("a network needs a subnet (--subnet CIDR)");
    }
    let mut pools: Vec<Pool> = vec![];
    for s in subnets {
        if let Some(o) = pools.iter().find(|p| p.family() == s.family()) {
            invalid!(
                "subnets {} and {s} are both {}: a network has at most one subnet per family",
                o.subnet,
                s.family()
            );
        }
        pools.push(Pool { subnet: *s, gateway: s.first_host() });
    }
    let mut seen: Vec<Family> = vec![];
    for g in gateways {
        let fam = Family::of(*g);
        if seen.contains(&fam) {
            invalid!("two {fam} gateways given; a network has one gateway per family");
        }
        seen.push(fam);
        let Some(p) = pools.iter_mut().find(|p| p.family() == fam) else {
            invalid!("gateway {g} is {fam} but the network has no {fam} subnet");
        };
        if !p.subnet.is_host(*g) {
            invalid!("gateway {g} is not a host address of subnet {}", p.subnet);
        }
        p.gateway = *g;
    }
    pools.sort_by_key(|p| p.family());
    Ok(pools)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub network: String,
    /// One address per family of the network, IPv4 first (written as one string when single).
    #[serde(rename = "ip", with = "one_or_many")]
    pub ips: Vec<IpAddr>,
    /// Name inside the sandbox (eth0, eth1, ...).
    pub ifname: String,
    /// Name of the host end, derived from sandbox and network (see `host_ifname`).
    pub host_ifname: String,
}

impl Endpoint {
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|i| Family::of(*i) == family)
    }
    pub fn has(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip)
    }
    /// `172.16.1.1 fd00:16::2`
    pub fn ips_text(&self) -> String {
        self.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandbox {
    pub name: String,
    /// netnat made the namespace (and removes it); false for an adopted existing namespace.
    pub created: bool,
    pub endpoints: Vec<Endpoint>,
}
