//! The record's content: everything netnat made (`State`) and the attachments of sandboxes to
//! networks.

use super::{AllowList, Cidr, Endpoint, Family, Handoff, HostOpening, InputError, Mapping, Network, Sandbox, Valid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Everything netnat made, as recorded under the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    #[serde(default)]
    pub sandboxes: BTreeMap<String, Sandbox>,
    #[serde(default)]
    pub mappings: Vec<Mapping>,
    /// sysctl key -> the value it had before netnat changed it (restored by `reset`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// CNI attachments (see `Attachment`) by `AttachmentId::key`. In memory their active
    /// mappings are also in `mappings`, so the ruleset, conflicts and counters treat them like
    /// any other; the record file stores each of them once, under its attachment (`state::render`
    /// leaves them out of `mappings`, `state::parse` puts them back). Left out of the record when
    /// empty: a record without CNI reads and writes exactly as before.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<String, Attachment>,
    /// Allow lists of published mappings (each names one of `mappings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowList>,
    /// Endpoints whose sandbox another program owns (see `Handoff`), by `Owner::key`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handoffs: BTreeMap<String, Handoff>,
    /// What netnat opened in host firewalls (left out when empty: older records load as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_firewall: Vec<HostOpening>,
    /// What the per-mapping counters count (left out when the default: older records load as before).
    #[serde(default, skip_serializing_if = "Counting::is_default")]
    pub counting: Counting,
}

/// What netnat counts per published mapping. Connections are always counted, where only a
/// connection's first packet goes (the DNAT map's element, free); `Packets` also counts every
/// packet and byte of each connection, at the cost of a forward-chain rule every packet meets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counting {
    #[default]
    Connections,
    Packets,
}

impl Counting {
    pub fn is_default(&self) -> bool {
        *self == Counting::Connections
    }
}

impl std::str::FromStr for Counting {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<Counting> {
        match s {
            "connections" => Ok(Counting::Connections),
            "packets" => Ok(Counting::Packets),
            _ => invalid!("counting '{s}' is not one of connections, packets"),
        }
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Counting::Connections => "connections",
            Counting::Packets => "packets",
        })
    }
}

/// What names a CNI attachment: the network's name, CNI_CONTAINERID and CNI_IFNAME (the key
/// the CNI spec gives plugins for the state they keep).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttachmentId {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentId {
    /// `network/container/ifname`: none of the three may contain '/' (CNI's rules for names
    /// and container IDs, Linux's for interface names), so the key is unambiguous.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "container {} (interface {}, network {})", self.container_id, self.ifname, self.network)
    }
}

/// A container's interface on a CNI network and the mappings its CNI ADD published: DEL
/// removes exactly these, GC removes attachments the runtime no longer lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// The attachment's active mappings (also in `State.mappings` in memory). Written as publish
    /// specs (`8080:10.88.0.2:80/tcp`): a tenth of the size of the objects in `State.mappings`,
    /// which matters as the whole record is read and written per request.
    #[serde(with = "mapping_specs")]
    pub mappings: Vec<Mapping>,
    /// Mappings asked for whose host port another attachment of the same container holds
    /// (Podman hands every network of a container the same port mappings): not in the kernel;
    /// one takes over when the active one's attachment is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "mapping_specs")]
    pub standby: Vec<Mapping>,
}

/// Serde for a list of mappings as their spec strings (`Display`, read back by `FromStr`, which
/// checks them again).
mod mapping_specs {
    use super::Mapping;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Mapping], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|m| m.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Mapping>, D::Error> {
        Vec::<String>::deserialize(d)?.iter().map(|t| t.parse().map_err(serde::de::Error::custom)).collect()
    }
}

impl Attachment {
    pub fn id(&self) -> AttachmentId {
        AttachmentId {
            network: self.network.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

impl State {
    pub fn endpoints_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = (&'a Sandbox, &'a Endpoint)> + 'a {
        self.sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().map(move |e| (s, e)))
            .filter(move |(_, e)| e.network == network)
    }

    /// The CNI attachment that owns a published mapping; None for a mapping of the CLI.
    pub fn owner_of(&self, m: &Mapping) -> Option<&Attachment> {
        self.attachments.values().find(|a| a.mappings.contains(m))
    }

    /// The network whose subnet holds `ip`, if any.
    pub fn network_of(&self, ip: IpAddr) -> Option<&Network> {
        self.networks.values().find(|n| n.contains(ip))
    }

    /// Whether `m` goes to a network whose IPv6 is routed: no DNAT, the container port is
    /// reachable at the container's own address instead.
    pub fn is_routed(&self, m: &Mapping) -> bool {
        m.family() == Family::V6 && self.network_of(m.container_ip).is_some_and(|n| n.routed_v6())
    }

    /// The sources allowed to reach `m`; empty: every source.
    pub fn allow_of(&self, m: &Mapping) -> &[Cidr] {
        self.allow.iter().find(|a| a.mapping == *m).map(|a| a.from.as_slice()).unwrap_or(&[])
    }

    /// Sets (or, with an empty list, removes) the allow list of `m`.
    pub fn set_allow(&mut self, m: &Mapping, from: Vec<Cidr>) {
        self.allow.retain(|a| a.mapping != *m);
        if !from.is_empty() {
            self.allow.push(AllowList { mapping: *m, from });
        }
    }

    /// Whether any network has an IPv6 subnet.
    pub fn has_v6(&self) -> bool {
        self.networks.values().any(|n| n.has_v6())
    }

    /// The lowest free host address of a network's subnet of `family`: not the network,
    /// broadcast or gateway address, and not held by any endpoint.
    pub fn allocate_ip(&self, network: &Network, family: Family) -> Valid<IpAddr> {
        let Some(pool) = network.pool(family) else {
            invalid!("network {} has no {family} subnet", network.name);
        };
        let used: std::collections::HashSet<IpAddr> = self
            .endpoints_on(&network.name)
            .flat_map(|(_, e)| e.ips.iter().copied())
            .chain(self.handoffs_on(&network.name).flat_map(|h| h.ips.iter().copied()))
            .collect();
        pool.subnet
            .hosts()
            .find(|ip| *ip != pool.gateway && !used.contains(ip))
            .ok_or_else(|| InputError(format!("network {} has no free address left in {}", network.name, pool.subnet)))
    }

    /// Checks a new network against the existing ones (other than one of the same name).
    pub fn check_new_network(&self, n: &Network) -> Valid<()> {
        for o in self.networks.values().filter(|o| o.name != n.name) {
            for (a, b) in n.pools.iter().flat_map(|a| o.pools.iter().map(move |b| (a, b))) {
                if a.subnet.overlaps(&b.subnet) {
                    invalid!(
                        "subnet {} of network {} overlaps subnet {} of network {}",
                        a.subnet,
                        n.name,
                        b.subnet,
                        o.name
                    );
                }
            }
            if o.bridge == n.bridge {
                invalid!("bridge {} is already used by network {}", n.bridge, o.name);
            }
        }
        Ok(())
    }

    /// Checks `ip` as a sandbox's address on `network` (of its family's pool): a host address,
    /// not the gateway, not used by another endpoint.
    pub fn check_endpoint_ip(&self, network: &Network, ip: IpAddr, sandbox: &str) -> Valid<()> {
        let fam = Family::of(ip);
        let Some(pool) = network.pool(fam) else {
            invalid!(
                "address {ip} is {fam} but network {} has no {fam} subnet ({})",
                network.name,
                network.subnets_text()
            );
        };
        if !pool.subnet.is_host(ip) || ip == pool.gateway {
            invalid!(
                "address {ip} is not a free host address of network {} ({}, gateway {})",
                network.name,
                pool.subnet,
                pool.gateway
            );
        }
        if let Some((owner, _)) = self.endpoints_on(&network.name).find(|(s, e)| s.name != sandbox && e.has(ip)) {
            invalid!("{}", held_by_both(ip, &network.name, &owner.name, sandbox));
        }
        if let Some(h) = self.handoffs_on(&network.name).find(|h| h.ips.contains(&ip)) {
            invalid!("address {ip} on network {} is held by {}", network.name, h.owner);
        }
        Ok(())
    }

    /// An endpoint's addresses on `network`: the ones asked for (at most one per family), and
    /// the lowest free address of every other family the network has.
    pub fn endpoint_ips(&self, network: &Network, asked: &[IpAddr], sandbox: &str) -> Valid<Vec<IpAddr>> {
        let mut out = vec![];
        for (i, ip) in asked.iter().enumerate() {
            if asked[..i].iter().any(|o| Family::of(*o) == Family::of(*ip)) {
                invalid!("two {} addresses given for one endpoint; give --ip once per family", Family::of(*ip));
            }
            self.check_endpoint_ip(network, *ip, sandbox)?;
        }
        for fam in network.families() {
            match asked.iter().find(|ip| Family::of(**ip) == fam) {
                Some(ip) => out.push(*ip),
                None => out.push(self.allocate_ip(network, fam)?),
            }
        }
        Ok(out)
    }
}

/// The message for an address two sandboxes claim on one network (`validate` says the same).
pub fn held_by_both(ip: IpAddr, network: &str, first: &str, second: &str) -> String {
    format!("address {ip} on network {network} is held by both sandbox {first} and sandbox {second}")
}
