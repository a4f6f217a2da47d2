//! The CNM vocabulary as plain data: Network, Sandbox, Endpoint, Mapping, and their validation.
//! No I/O here: every check that needs only the values lives in this module, so bad input is
//! refused before anything touches the kernel.
//!
//! Both address families go through the same types: an address is an `IpAddr`, a `Subnet` knows
//! its `Family`, a network has one `Pool` (subnet + gateway) per family, an endpoint one address
//! per pool, and a mapping's family is its container address's.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Invalid user input: the CLI exits with status 2 for these (runtime failures exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputError {}

macro_rules! invalid {
    ($($t:tt)*) => { return Err(InputError(format!($($t)*))) };
}

pub type Valid<T> = Result<T, InputError>;

/// An address family. Everything family-specific below the model (nft types, payload offsets,
/// map names, sysctl paths) hangs off this enum, so code above it never branches on addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    /// Address width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
    /// The "every address" of the family (0.0.0.0, ::).
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An address as a number in its family's width (IPv4 in the low 32 bits).
pub fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn ip_from_bits(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// An address as a user writes it in a spec: IPv6 in brackets.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A network in CIDR form, with no host bits set, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }
    fn mask(&self) -> u128 {
        let bits = self.family().bits();
        let full = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        if self.prefix == 0 {
            0
        } else {
            full & (full << (bits - self.prefix as u32))
        }
    }
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && ip_bits(ip) & self.mask() == ip_bits(self.addr)
    }
    /// The last address of the subnet (IPv4's broadcast address).
    pub fn last(&self) -> IpAddr {
        let bits = self.family().bits();
        let full = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        ip_from_bits(self.family(), ip_bits(self.addr) | (full & !self.mask()))
    }
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
    /// The first address that can be given to a host (network address + 1).
    pub fn first_host(&self) -> IpAddr {
        ip_from_bits(self.family(), ip_bits(self.addr) + 1)
    }
    /// Whether `ip` may be given to a host or gateway: inside, and neither the network address
    /// (IPv6's subnet-router anycast) nor IPv4's broadcast address.
    pub fn is_host(&self, ip: IpAddr) -> bool {
        self.contains(ip) && ip != self.addr && (self.family() == Family::V6 || ip != self.last())
    }
    /// Host addresses in order, lowest first (lazily: an IPv6 subnet is large).
    pub fn hosts(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let first = ip_bits(self.first_host());
        let last = ip_bits(self.last());
        let last = if self.family() == Family::V4 { last - 1 } else { last };
        (first..=last).map(move |v| ip_from_bits(self.family(), v))
    }
}

/// IPv6 ranges that cannot be a container network: (range, what it is).
fn reserved_v6() -> [(Subnet, &'static str); 4] {
    let s = |a: &str, p| Subnet { addr: a.parse().unwrap(), prefix: p };
    [
        // ::/96 holds :: and ::1 (loopback), and the deprecated IPv4-compatible addresses.
        (s("::", 96), "loopback/unspecified"),
        (s("fe80::", 10), "link-local"),
        (s("ff00::", 8), "multicast"),
        (s("::ffff:0:0", 96), "IPv4-mapped"),
    ]
}

impl FromStr for Subnet {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<Subnet> {
        let Some((a, p)) = s.split_once('/') else {
            invalid!("subnet '{s}' is not in CIDR form ADDRESS/PREFIX (e.g. 172.16.0.0/16 or fd00:16::/64)");
        };
        let addr: IpAddr = match a.parse() {
            Ok(ip) => ip,
            Err(_) if a.starts_with('[') => invalid!("subnet '{s}': write an IPv6 subnet without brackets"),
            Err(_) => invalid!("subnet '{s}': '{a}' is not an IPv4 or IPv6 address"),
        };
        let family = Family::of(addr);
        let (lo, hi) = match family {
            Family::V4 => (8, 30),
            Family::V6 => (16, 120),
        };
        let prefix: u8 = match p.parse::<u32>() {
            Ok(v) if v <= family.bits() => v as u8,
            _ => invalid!("subnet '{s}': prefix length '{p}' must be a number from {lo} to {hi}"),
        };
        if prefix > hi {
            invalid!("subnet '{s}': prefix length {prefix} is longer than /{hi}: no room for a gateway and hosts");
        }
        if prefix < lo {
            invalid!("subnet '{s}': prefix length {prefix} is shorter than /{lo}; a container network is smaller");
        }
        let net = Subnet { addr, prefix };
        let masked = ip_from_bits(family, ip_bits(addr) & net.mask());
        if masked != addr {
            invalid!("subnet '{s}' has host bits set: did you mean {masked}/{prefix}?");
        }
        if family == Family::V6 {
            if let Some((r, what)) = reserved_v6().into_iter().find(|(r, _)| r.overlaps(&net)) {
                invalid!(
                    "subnet '{s}' overlaps the {what} range {}/{}: use a global or ULA subnet (e.g. fd00:16::/64)",
                    r.addr,
                    r.prefix
                );
            }
        }
        Ok(net)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A source network of an allow list: any prefix length (a /32 is one host, /0 everyone), host
/// bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub Subnet);

impl Cidr {
    pub fn family(&self) -> Family {
        self.0.family()
    }
    /// First and last address of the range.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        (self.0.addr, self.0.last())
    }
}

impl FromStr for Cidr {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let Ok(addr) = a.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
            invalid!("allowed source '{s}': '{a}' is not an IPv4 or IPv6 address");
        };
        if matches!(addr, IpAddr::V6(v) if v.to_ipv4_mapped().is_some()) {
            invalid!("allowed source '{s}' is IPv4-mapped; write the IPv4 network itself");
        }
        let family = Family::of(addr);
        let prefix = match p {
            None => family.bits() as u8,
            Some(p) => match p.parse::<u32>() {
                Ok(v) if v <= family.bits() => v as u8,
                _ => invalid!("allowed source '{s}': prefix length '{p}' must be a number from 0 to {}", family.bits()),
            },
        };
        let net = Subnet { addr, prefix };
        let masked = ip_from_bits(family, ip_bits(addr) & net.mask());
        if masked != addr {
            invalid!("allowed source '{s}' has host bits set: did you mean {}/{prefix}?", ip_text(masked));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The sources allowed to reach a published mapping (`publish --allow`); others are dropped
/// before DNAT. A mapping without one is open to every source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    pub mapping: Mapping,
    pub from: Vec<Cidr>,
}

/// Checks an allow list for a mapping: at least one source of the mapping's family, none of
/// the other family, none inside another. `from` may hold both families (a name target
/// publishes both): the mapping's own are returned, in order.
pub fn allow_for(m: &Mapping, from: &[Cidr]) -> Valid<Vec<Cidr>> {
    let mine: Vec<Cidr> = from.iter().copied().filter(|c| c.family() == m.family()).collect();
    if mine.is_empty() {
        invalid!("--allow has no {} source for {m}; add one, or publish the families separately", m.family());
    }
    for (i, a) in mine.iter().enumerate() {
        if let Some(b) = mine[..i].iter().find(|b| b.0.overlaps(&a.0)) {
            invalid!("allowed sources {b} and {a} overlap; list each address once");
        }
    }
    Ok(mine)
}

/// Parses an address of either family, with a message that says what the address was for.
/// Brackets around an IPv6 address are accepted.
pub fn parse_ip(s: &str, what: &str) -> Valid<IpAddr> {
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    match bare.unwrap_or(s).parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) if bare.is_some() => invalid!("{what} '{s}': only IPv6 addresses go in brackets"),
        Ok(a) => Ok(a),
        Err(_) => invalid!("{what} '{s}' is not an IPv4 or IPv6 address"),
    }
}

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

/// Interface names as the kernel accepts them (dev_valid_name): 1-15 bytes, no '/', ':' or
/// white space, not "." or "..".
pub fn check_ifname(name: &str, what: &str) -> Valid<()> {
    if name.is_empty() {
        invalid!("{what} must not be empty");
    }
    if name.len() > 15 {
        invalid!("{what} '{name}' is {} bytes long; Linux interface names are at most 15 bytes", name.len());
    }
    if name == "." || name == ".." {
        invalid!("{what} '{name}' is not a valid interface name");
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control()) {
        invalid!("{what} '{name}' contains {c:?}, which Linux interface names cannot contain");
    }
    Ok(())
}

/// Names of networks and sandboxes: they become file names (/run/netns/NAME) and defaults for
/// interface names, so keep them to a safe alphabet.
pub fn check_name(name: &str, what: &str) -> Valid<()> {
    if name.is_empty() {
        invalid!("{what} name must not be empty");
    }
    if name.len() > 64 {
        invalid!("{what} name '{name}' is longer than 64 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        invalid!("{what} name '{name}' must not start with '.' or '-'");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        invalid!("{what} name '{name}' contains {c:?}; use letters, digits, '_', '.' and '-'");
    }
    Ok(())
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

/// Whether netnat lets a network's traffic through the host's firewall by that firewall's own
/// hook (`network create --host-firewall`, TOML `host_firewall`); see `crate::hostfw`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFirewallMode {
    /// Through firewalld, ufw and Docker, whichever runs.
    #[default]
    Auto,
    /// Never: the operator manages the host firewall (netnat only warns, with the fix).
    Off,
}

impl FromStr for HostFirewallMode {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<HostFirewallMode> {
        match s {
            "auto" => Ok(HostFirewallMode::Auto),
            "off" => Ok(HostFirewallMode::Off),
            _ => invalid!("host firewall mode '{s}' is not one of auto, off"),
        }
    }
}

impl fmt::Display for HostFirewallMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            HostFirewallMode::Auto => "auto",
            HostFirewallMode::Off => "off",
        })
    }
}

/// A host firewall netnat can open through its own hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFirewallKind {
    Firewalld,
    Ufw,
    Docker,
}

impl fmt::Display for HostFirewallKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            HostFirewallKind::Firewalld => "firewalld",
            HostFirewallKind::Ufw => "ufw",
            HostFirewallKind::Docker => "docker",
        })
    }
}

/// In the record: host firewall `firewall` lets the traffic of network `network` (bridge
/// `bridge`) through, by entries netnat added and marked as its own (`crate::hostfw` says which).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostOpening {
    pub firewall: HostFirewallKind,
    pub network: String,
    pub bridge: String,
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

/// The host end of a veth: deterministic, at most 15 bytes, and unlikely to clash with anything
/// (`nn` + 8 hex digits of a hash of sandbox and network).
pub fn host_ifname(sandbox: &str, network: &str) -> String {
    // FNV-1a: tiny, stable across releases (std's hasher is not).
    let mut h: u32 = 0x811c9dc5;
    for b in sandbox.bytes().chain([0]).chain(network.bytes()) {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("nn{h:08x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
    pub fn from_number(n: u8) -> Option<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Sctp].into_iter().find(|p| p.number() == n)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

impl FromStr for Proto {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<Proto> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => invalid!("protocol '{s}' is not one of tcp, udp, sctp"),
        }
    }
}

/// An interface name as the kernel and nftables' `ifname` type hold it: NUL-padded to 16 bytes
/// (IFNAMSIZ), so a mapping stays a small copyable value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName([u8; 16]);

impl IfName {
    pub fn new(name: &str) -> Valid<IfName> {
        check_ifname(name, "interface name")?;
        let mut b = [0u8; 16];
        b[..name.len()].copy_from_slice(name.as_bytes());
        Ok(IfName(b))
    }
    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|c| *c == 0).unwrap_or(16);
        std::str::from_utf8(&self.0[..n]).unwrap_or("?")
    }
    /// The 16 bytes a `meta iifname` load puts in registers.
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for IfName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IfName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A published port range: host `[host_ip:]host_port..=host_port_end` to
/// `container_ip:container_port..` (same length), for one protocol. Host and container address
/// are of one family (nftables cannot NAT between families).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub protocol: Proto,
    /// None: every local address of the host, of the container address's family (unless
    /// `host_if` binds the mapping to an interface).
    pub host_ip: Option<IpAddr>,
    /// Bound to an interface: packets arriving on it, to any local address (never with `host_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_if: Option<IfName>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub container_port_end: u16,
}

impl Mapping {
    pub fn family(&self) -> Family {
        Family::of(self.container_ip)
    }
    pub fn len(&self) -> u16 {
        self.host_port_end - self.host_port + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Each (host port, container port) pair of the range.
    pub fn ports(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (0..self.len()).map(|i| (self.host_port + i, self.container_port + i))
    }
    /// Two mappings compete for the same packets: same family and protocol, overlapping host
    /// ports, and host addresses that overlap (equal, or either one is "any address").
    /// An interface-bound mapping competes with every other host side but another interface's.
    pub fn conflicts_with(&self, o: &Mapping) -> bool {
        let hosts_overlap = match (self.host_if, o.host_if) {
            (Some(a), Some(b)) => a == b,
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => self.host_ip.is_none() || o.host_ip.is_none() || self.host_ip == o.host_ip,
        };
        self.family() == o.family()
            && self.protocol == o.protocol
            && self.host_port <= o.host_port_end
            && o.host_port <= self.host_port_end
            && hosts_overlap
    }
    /// The host side only, as `unpublish` accepts it (`[::]:` names IPv6's "any address").
    pub fn host_spec(&self) -> String {
        let ip = match (self.host_ip, self.family()) {
            _ if self.host_if.is_some() => format!("{}:", self.host_if.expect("checked")),
            (Some(i), _) => format!("{}:", ip_text(i)),
            (None, Family::V6) => "[::]:".into(),
            (None, Family::V4) => String::new(),
        };
        format!("{ip}{}/{}", range_text(self.host_port, self.host_port_end), self.protocol)
    }

    /// Checks the parts of a mapping; `spec` is the text they came from, for messages.
    fn new(
        spec: &str,
        protocol: Proto,
        (host_ip, host_if): (Option<IpAddr>, Option<IfName>),
        (host_port, host_port_end): (u16, u16),
        container_ip: IpAddr,
        (container_port, container_port_end): (u16, u16),
    ) -> Valid<Mapping> {
        if host_port_end - host_port != container_port_end - container_port {
            invalid!(
                "'{spec}': host range {} has {} ports but container range {} has {}",
                range_text(host_port, host_port_end),
                host_port_end - host_port + 1,
                range_text(container_port, container_port_end),
                container_port_end - container_port + 1
            );
        }
        check_container_ip(container_ip, spec)?;
        if let Some(h) = host_ip {
            check_host_ip(h, spec)?;
            if Family::of(h) != Family::of(container_ip) {
                invalid!(
                    "'{spec}': host address {} is {} but container address {} is {}; nftables cannot NAT between families",
                    ip_text(h),
                    Family::of(h),
                    ip_text(container_ip),
                    Family::of(container_ip)
                );
            }
        }
        // 0.0.0.0 and :: mean "every address", as with Docker's -p 0.0.0.0:80:80.
        let host_ip = host_ip.filter(|h| !h.is_unspecified());
        Ok(Mapping {
            protocol,
            host_ip,
            host_if,
            host_port,
            host_port_end,
            container_ip,
            container_port,
            container_port_end,
        })
    }
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

fn check_container_ip(ip: IpAddr, spec: &str) -> Valid<()> {
    let t = ip_text(ip);
    match ip {
        IpAddr::V4(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
            invalid!("container address {t} in '{spec}' cannot receive a connection")
        }
        IpAddr::V6(a) if a.is_unspecified() || a.is_multicast() || a.is_loopback() => {
            invalid!("container address {t} in '{spec}' cannot receive a connection")
        }
        _ if is_link_local_v6(ip) => invalid!(
            "container address {t} in '{spec}' is link-local: it means something on one link only and cannot be a DNAT target; use the container's global or ULA address"
        ),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            invalid!("container address {t} in '{spec}' is IPv4-mapped; write the IPv4 address itself")
        }
        _ => Ok(()),
    }
}

fn check_host_ip(ip: IpAddr, spec: &str) -> Valid<()> {
    let t = ip_text(ip);
    match ip {
        IpAddr::V4(a) if a.is_multicast() || a.is_broadcast() => {
            invalid!("host address {t} in '{spec}' is not a unicast address")
        }
        IpAddr::V6(a) if a.is_multicast() => invalid!("host address {t} in '{spec}' is not a unicast address"),
        IpAddr::V6(a) if a.is_loopback() => invalid!(
            "host address [::1] in '{spec}' cannot be published: Linux has no route_localnet for IPv6, so packets to ::1 can never be DNAT'd to a container; publish on 127.0.0.1 (IPv4) or on a global address"
        ),
        _ if is_link_local_v6(ip) => invalid!(
            "host address {t} in '{spec}' is link-local; publish on a global or ULA address, or on [::] (every address)"
        ),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            invalid!("host address {t} in '{spec}' is IPv4-mapped; write the IPv4 address itself")
        }
        _ => Ok(()),
    }
}

pub fn range_text(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(i) = self.host_if {
            write!(f, "{i}:")?;
        }
        if let Some(ip) = self.host_ip {
            write!(f, "{}:", ip_text(ip))?;
        }
        write!(
            f,
            "{}:{}:{}/{}",
            range_text(self.host_port, self.host_port_end),
            ip_text(self.container_ip),
            range_text(self.container_port, self.container_port_end),
            self.protocol
        )
    }
}

fn parse_port(s: &str, spec: &str) -> Valid<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => invalid!("port {p} in '{spec}' is out of range: ports are 1-65535"),
        Err(_) => invalid!("'{s}' in '{spec}' is not a port number"),
    }
}

fn parse_range(s: &str, spec: &str) -> Valid<(u16, u16)> {
    match s.split_once('-') {
        None => {
            let p = parse_port(s, spec)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (parse_port(a, spec)?, parse_port(b, spec)?);
            if b < a {
                invalid!("port range {a}-{b} in '{spec}' is reversed: write {b}-{a}");
            }
            Ok((a, b))
        }
    }
}

fn split_proto(spec: &str) -> Valid<(&str, Proto)> {
    if let Some((_, after)) = spec.split_once('/').filter(|(_, a)| a.contains(':')) {
        invalid!("'{spec}': '/' goes only before the protocol at the end (an interface name cannot contain '/'; found '/{after}')");
    }
    match spec.rsplit_once('/') {
        Some((rest, p)) => Ok((rest, p.parse().map_err(|e: InputError| InputError(format!("{e} (in '{spec}')")))?)),
        None => Ok((spec, Proto::Tcp)),
    }
}

/// One ':'-separated part of a spec; `bracketed` for `[...]` (an IPv6 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part<'a> {
    text: &'a str,
    bracketed: bool,
}

/// Splits `a:[b:c]:d` into `a`, `b:c` (bracketed), `d`.
fn split_parts<'a>(s: &'a str, spec: &str) -> Valid<Vec<Part<'a>>> {
    let mut parts = vec![];
    let mut rest = s;
    loop {
        if let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else {
                invalid!("'{spec}': '[' without its ']'");
            };
            parts.push(Part { text: &inner[..end], bracketed: true });
            rest = &inner[end + 1..];
            if rest.is_empty() {
                break;
            }
            let Some(r) = rest.strip_prefix(':') else {
                invalid!("'{spec}': expected ':' after ']'");
            };
            rest = r;
        } else {
            match rest.split_once(':') {
                Some((a, b)) => {
                    if a.contains(['[', ']']) {
                        invalid!("'{spec}': '[' and ']' go around a whole IPv6 address");
                    }
                    parts.push(Part { text: a, bracketed: false });
                    rest = b;
                }
                None => {
                    if rest.contains(['[', ']']) {
                        invalid!("'{spec}': '[' and ']' go around a whole IPv6 address");
                    }
                    parts.push(Part { text: rest, bracketed: false });
                    break;
                }
            }
        }
    }
    Ok(parts)
}

/// An address part of a spec: IPv6 in brackets, IPv4 without.
fn parse_addr_part(p: Part, what: &str, spec: &str) -> Valid<IpAddr> {
    if p.bracketed {
        match p.text.parse::<Ipv6Addr>() {
            Ok(a) => Ok(IpAddr::V6(a)),
            Err(_) => invalid!("{what} '[{}]' in '{spec}' is not an IPv6 address", p.text),
        }
    } else {
        match p.text.parse::<Ipv4Addr>() {
            Ok(a) => Ok(IpAddr::V4(a)),
            Err(_) => {
                invalid!("{what} '{}' in '{spec}' is not an IPv4 address (IPv6 goes in brackets: [fd00::2])", p.text)
            }
        }
    }
}

/// The host side of a spec: an address, or an interface name (anything but digits and dots
/// that is not in brackets).
enum Host {
    Addr(IpAddr),
    If(IfName),
}

fn host_part(p: Part, spec: &str) -> Valid<Host> {
    if p.bracketed || p.text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Ok(Host::Addr(parse_addr_part(p, "host address", spec)?));
    }
    IfName::new(p.text).map(Host::If).map_err(|e| InputError(format!("'{spec}': {e}")))
}

/// The container side of a publish spec: an address, or a sandbox by name (every address of
/// its endpoint, one mapping per family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(IpAddr),
    /// `NAME` or `NAME@NETWORK` (which endpoint, when the sandbox has several).
    Sandbox {
        name: String,
        network: Option<String>,
    },
}

/// A publish spec as written: `[HOSTIP:]HOSTPORT[-END]:TARGET:CONTAINERPORT[-END][/PROTO]`,
/// with IPv6 addresses in brackets and TARGET an address or a sandbox name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    pub text: String,
    pub protocol: Proto,
    /// As written: `0.0.0.0`/`[::]` are kept (they pick a family for a name target).
    pub host_ip: Option<IpAddr>,
    /// An interface name instead of a host address.
    pub host_if: Option<IfName>,
    pub host_ports: (u16, u16),
    pub target: Target,
    pub container_ports: (u16, u16),
}

impl FromStr for PublishSpec {
    type Err = InputError;
    fn from_str(spec: &str) -> Valid<PublishSpec> {
        let (rest, protocol) = split_proto(spec)?;
        let parts = split_parts(rest, spec)?;
        let (host, hp, target, cp) = match parts.as_slice() {
            [hp, t, cp] => (None, *hp, *t, *cp),
            [h, hp, t, cp] => (Some(*h), *hp, *t, *cp),
            p if p.len() > 4 && !rest.contains('[') => invalid!(
                "'{spec}': IPv6 addresses in a port mapping go in brackets, e.g. [2001:db8::1]:8080:[fd00:16::2]:80"
            ),
            _ => invalid!(
                "'{spec}' is not a port mapping: expected [HOSTIP:]HOSTPORT[-END]:CONTAINER:CONTAINERPORT[-END][/tcp|/udp|/sctp]"
            ),
        };
        let (host_ip, host_if) = match host {
            None => (None, None),
            Some(h) => match host_part(h, spec)? {
                Host::Addr(ip) => (Some(ip), None),
                Host::If(i) => (None, Some(i)),
            },
        };
        let host_ports = parse_range(hp.text, spec)?;
        // A target of digits and dots is an (IPv4) address, anything else a sandbox name.
        let target = if target.bracketed || target.text.chars().all(|c| c.is_ascii_digit() || c == '.') {
            Target::Addr(parse_addr_part(target, "container address", spec)?)
        } else {
            let (name, network) = match target.text.split_once('@') {
                Some((n, net)) => (n, Some(net)),
                None => (target.text, None),
            };
            check_name(name, "sandbox").map_err(|e| InputError(format!("'{spec}': {e}")))?;
            if let Some(n) = network {
                check_name(n, "network").map_err(|e| InputError(format!("'{spec}': {e}")))?;
            }
            Target::Sandbox { name: name.into(), network: network.map(Into::into) }
        };
        let container_ports = parse_range(cp.text, spec)?;
        let ps = PublishSpec { text: spec.into(), protocol, host_ip, host_if, host_ports, target, container_ports };
        if let Target::Addr(ip) = ps.target {
            ps.mapping_to(ip)?; // every check that needs no state, now
        } else if ps.host_ports.1 - ps.host_ports.0 != ps.container_ports.1 - ps.container_ports.0 {
            ps.mapping_to(Family::V4.unspecified())?; // the range-length message
        }
        Ok(ps)
    }
}

impl PublishSpec {
    fn mapping_to(&self, ip: IpAddr) -> Valid<Mapping> {
        Mapping::new(&self.text, self.protocol, (self.host_ip, self.host_if), self.host_ports, ip, self.container_ports)
    }

    /// The mappings this spec means in `state`: one for an address; one per family of the named
    /// sandbox's endpoint (only the host address's family when one is given).
    pub fn resolve(&self, state: &State) -> Valid<Vec<Mapping>> {
        let (name, network) = match &self.target {
            Target::Addr(ip) => return Ok(vec![self.mapping_to(*ip)?]),
            Target::Sandbox { name, network } => (name, network),
        };
        let spec = &self.text;
        let Some(sb) = state.sandboxes.get(name) else {
            invalid!("'{spec}': no sandbox named {name} (a container is named by an address or a sandbox name)");
        };
        let eps: Vec<&Endpoint> =
            sb.endpoints.iter().filter(|e| network.as_ref().is_none_or(|n| &e.network == n)).collect();
        let ep = match (eps.as_slice(), network) {
            ([one], _) => *one,
            ([], Some(n)) => invalid!("'{spec}': sandbox {name} has no endpoint on network {n}"),
            ([], None) => invalid!("'{spec}': sandbox {name} is connected to no network"),
            (many, _) => {
                let nets: Vec<&str> = many.iter().map(|e| e.network.as_str()).collect();
                invalid!(
                    "'{spec}': sandbox {name} has endpoints on {}; pick one with {name}@NETWORK (e.g. {name}@{})",
                    nets.join(", "),
                    nets[0]
                )
            }
        };
        let ips: Vec<IpAddr> =
            ep.ips.iter().copied().filter(|ip| self.host_ip.is_none_or(|h| Family::of(h) == Family::of(*ip))).collect();
        if ips.is_empty() {
            let fam = Family::of(self.host_ip.expect("filtered by it"));
            invalid!("'{spec}': sandbox {name} has no {fam} address on network {}", ep.network);
        }
        ips.into_iter().map(|ip| self.mapping_to(ip)).collect()
    }
}

impl FromStr for Mapping {
    type Err = InputError;
    /// `[HOSTIP:]HOSTPORT[-END]:CONTAINERIP:CONTAINERPORT[-END][/tcp|/udp|/sctp]`
    fn from_str(spec: &str) -> Valid<Mapping> {
        let ps: PublishSpec = spec.parse()?;
        match ps.target {
            Target::Addr(ip) => ps.mapping_to(ip),
            Target::Sandbox { name, .. } => {
                invalid!("'{spec}': '{name}' is a sandbox name; an address is needed here")
            }
        }
    }
}

/// The host side of a mapping, as `unpublish HOSTIP:HOSTPORT/PROTO` names it. A bare HOSTPORT
/// names the "every address" mappings of both families; `0.0.0.0:` or `[::]:` one family's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPorts {
    pub protocol: Proto,
    pub host_ip: Option<IpAddr>,
    pub host_if: Option<IfName>,
    pub host_port: u16,
    pub host_port_end: u16,
}

impl FromStr for HostPorts {
    type Err = InputError;
    fn from_str(spec: &str) -> Valid<HostPorts> {
        let (rest, protocol) = split_proto(spec)?;
        let parts = split_parts(rest, spec)?;
        let (host, ports) = match parts.as_slice() {
            [ports] => (None, *ports),
            [h, ports] => (Some(host_part(*h, spec)?), *ports),
            _ => invalid!("'{spec}' is not a host port: expected [HOSTIP|INTERFACE:]HOSTPORT[-END][/PROTO]"),
        };
        let (host_ip, host_if) = match host {
            None => (None, None),
            Some(Host::Addr(ip)) => (Some(ip), None),
            Some(Host::If(i)) => (None, Some(i)),
        };
        let (host_port, host_port_end) = parse_range(ports.text, spec)?;
        Ok(HostPorts { protocol, host_ip, host_if, host_port, host_port_end })
    }
}

impl HostPorts {
    pub fn matches(&self, m: &Mapping) -> bool {
        if self.host_if.is_some() || m.host_if.is_some() {
            return self.host_if == m.host_if
                && m.protocol == self.protocol
                && m.host_port == self.host_port
                && m.host_port_end == self.host_port_end;
        }
        let host = match (self.host_ip, m.host_ip) {
            (None, None) => true,
            (Some(h), None) => h.is_unspecified() && Family::of(h) == m.family(),
            (Some(h), Some(mh)) => h == mh,
            (None, Some(_)) => false,
        };
        host && m.protocol == self.protocol && m.host_port == self.host_port && m.host_port_end == self.host_port_end
    }
}

/// How many ':'-separated parts a spec has (brackets count as one), to tell a full mapping
/// (3 or 4) from a host side (1 or 2).
pub fn spec_parts(spec: &str) -> usize {
    let body = spec.rsplit_once('/').map(|(b, _)| b).unwrap_or(spec);
    split_parts(body, spec).map(|p| p.len()).unwrap_or(0)
}

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
    /// What netnat opened in host firewalls (left out when empty: older records load as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_firewall: Vec<HostOpening>,
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
        let used: std::collections::HashSet<IpAddr> =
            self.endpoints_on(&network.name).flat_map(|(_, e)| e.ips.iter().copied()).collect();
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

/// Test fixtures shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn net(name: &str, subnets: &[&str], gateways: &[&str]) -> Network {
        let s: Vec<Subnet> = subnets.iter().map(|s| s.parse().unwrap()).collect();
        let g: Vec<IpAddr> = gateways.iter().map(|g| g.parse().unwrap()).collect();
        Network::new(name, &s, &g, None).unwrap()
    }

    /// The seed's network MyDocker0 (172.16.0.0/16, gateway 172.16.1.254) with sandbox ns1 at
    /// 172.16.1.1, its host-side veth named `host_ifname`; no mappings.
    pub(crate) fn seed_state(host_ifname: &str) -> State {
        let mut st = State::default();
        let n = net("MyDocker0", &["172.16.0.0/16"], &["172.16.1.254"]);
        st.networks.insert(n.name.clone(), n);
        let ep = Endpoint {
            network: "MyDocker0".into(),
            ips: vec!["172.16.1.1".parse().unwrap()],
            ifname: "eth0".into(),
            host_ifname: host_ifname.into(),
        };
        st.sandboxes.insert("ns1".into(), Sandbox { name: "ns1".into(), created: true, endpoints: vec![ep] });
        st
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::net;
    use super::*;

    fn m(s: &str) -> Mapping {
        s.parse().unwrap()
    }
    fn err<T: fmt::Debug>(r: Valid<T>) -> String {
        r.unwrap_err().0
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_port_specs() {
        let a = m("9090:172.16.1.1:8080");
        assert_eq!((a.protocol, a.host_ip, a.host_port, a.container_port), (Proto::Tcp, None, 9090, 8080));
        let b = m("127.0.0.1:5353:172.16.1.2:53/udp");
        assert_eq!(b.host_ip, Some(ip("127.0.0.1")));
        assert_eq!(b.protocol, Proto::Udp);
        let c = m("8000-8099:172.16.1.1:8000-8099");
        assert_eq!(c.len(), 100);
        assert_eq!(c.ports().last(), Some((8099, 8099)));
        assert_eq!(c.to_string(), "8000-8099:172.16.1.1:8000-8099/tcp");
        assert_eq!(m("0.0.0.0:80:10.0.0.2:80").host_ip, None);
    }

    #[test]
    fn parses_ipv6_port_specs() {
        let a = m("[2001:db8::1]:8080:[fd00:16::2]:80");
        assert_eq!((a.host_ip, a.container_ip, a.family()), (Some(ip("2001:db8::1")), ip("fd00:16::2"), Family::V6));
        assert_eq!(a.to_string(), "[2001:db8::1]:8080:[fd00:16::2]:80/tcp");
        assert_eq!(a.to_string().parse::<Mapping>().unwrap(), a);
        assert_eq!(m("[::]:8080:[fd00:16::2]:80").host_ip, None);
        assert_eq!(m("[::]:8080:[fd00:16::2]:80"), m("8080:[fd00:16::2]:80"));
        let r = m("7000-7009:[fd00:16::2]:7000-7009/udp");
        assert_eq!((r.len(), r.protocol), (10, Proto::Udp));
        assert_eq!(r.host_spec(), "[::]:7000-7009/udp");
    }

    #[test]
    fn refuses_bad_port_specs_naming_the_value() {
        assert!(err("0:172.16.1.1:80".parse::<Mapping>()).contains("port 0"));
        assert!(err("65536:172.16.1.1:80".parse::<Mapping>()).contains("65536"));
        assert!(err("90-80:172.16.1.1:80-90".parse::<Mapping>()).contains("reversed"));
        assert!(err("80-81:172.16.1.1:80".parse::<Mapping>()).contains("2 ports"));
        assert!(err("80:172.16.1.300:80".parse::<Mapping>()).contains("172.16.1.300"));
        assert!(err("80:172.16.1.1:80/icmp".parse::<Mapping>()).contains("icmp"));
        assert!(err("80".parse::<Mapping>()).contains("not a port mapping"));
    }

    #[test]
    fn refuses_bad_ipv6_specs_naming_the_value() {
        let e = |s: &str| err(s.parse::<PublishSpec>());
        assert!(e("8080:fd00:16::2:80").contains("brackets"));
        assert!(e("[::1]:8080:[fd00:16::2]:80").contains("route_localnet"));
        assert!(e("[2001:db8::1]:8080:172.16.1.1:80").contains("cannot NAT between families"));
        assert!(e("10.0.0.1:8080:[fd00:16::2]:80").contains("cannot NAT between families"));
        assert!(e("0.0.0.0:8080:[fd00:16::2]:80").contains("cannot NAT between families"));
        assert!(e("8080:[fe80::2]:80").contains("link-local"));
        assert!(e("[fe80::1]:8080:[fd00::2]:80").contains("link-local"));
        assert!(e("8080:[ff02::1]:80").contains("[ff02::1]"));
        assert!(e("8080:[::]:80").contains("cannot receive"));
        assert!(e("8080:[fd00::zz]:80").contains("[fd00::zz]"));
        assert!(e("8080:[fd00::2:80").contains("without its ']'"));
        assert!(e("8080:[172.16.1.1]:80").contains("[172.16.1.1]"));
        assert!(e("[fd00::1]8080:[fd00::2]:80").contains("after ']'"));
        assert!(e("8080:fd[00::2]:80").contains("whole IPv6 address"));
        assert!(e("8080-8081:Container_ns1:80").contains("2 ports"));
        assert!(e("8080:Con$tainer:80").contains("'$'"));
    }

    #[test]
    fn name_targets_resolve_per_family() {
        let mut st = State::default();
        let n = net("n", &["172.16.0.0/16", "fd00:16::/64"], &[]);
        let n2 = net("m", &["10.9.0.0/24"], &[]);
        st.networks.insert("n".into(), n.clone());
        st.networks.insert("m".into(), n2);
        let ep = |network: &str, ips: &[&str]| Endpoint {
            network: network.into(),
            ips: ips.iter().map(|i| ip(i)).collect(),
            ifname: "eth0".into(),
            host_ifname: "x".into(),
        };
        st.sandboxes.insert(
            "c1".into(),
            Sandbox { name: "c1".into(), created: true, endpoints: vec![ep("n", &["172.16.0.2", "fd00:16::2"])] },
        );
        let r = |s: &str, st: &State| s.parse::<PublishSpec>().unwrap().resolve(st);
        let both = r("8080:c1:80", &st).unwrap();
        assert_eq!(
            both.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            ["8080:172.16.0.2:80/tcp", "8080:[fd00:16::2]:80/tcp"]
        );
        assert_eq!(r("[::]:8080:c1:80", &st).unwrap().len(), 1);
        assert_eq!(r("0.0.0.0:8080:c1:80", &st).unwrap()[0].family(), Family::V4);
        assert!(err(r("8080:nope:80", &st)).contains("no sandbox named nope"));
        st.sandboxes.get_mut("c1").unwrap().endpoints.push(ep("m", &["10.9.0.2"]));
        let amb = err(r("8080:c1:80", &st));
        assert!(amb.contains("n, m") || amb.contains("m, n"), "{amb}");
        assert!(amb.contains("c1@NETWORK"), "{amb}");
        assert_eq!(r("8080:c1@m:80", &st).unwrap()[0].container_ip, ip("10.9.0.2"));
        assert!(err(r("[::]:8080:c1@m:80", &st)).contains("no IPv6 address"));
        assert!(err("8080:c1:80".parse::<Mapping>()).contains("sandbox name"));
    }

    #[test]
    fn host_ports_name_families() {
        let v4 = m("8080:10.0.0.2:80");
        let v6 = m("8080:[fd00::2]:80");
        let h = |s: &str| s.parse::<HostPorts>().unwrap();
        assert!(h("8080").matches(&v4) && h("8080").matches(&v6));
        assert!(h("0.0.0.0:8080").matches(&v4) && !h("0.0.0.0:8080").matches(&v6));
        assert!(!h("[::]:8080").matches(&v4) && h("[::]:8080").matches(&v6));
        assert!(h("[2001:db8::1]:8080").matches(&m("[2001:db8::1]:8080:[fd00::2]:80")));
        assert_eq!(spec_parts("[2001:db8::1]:8080:[fd00::2]:80/udp"), 4);
        assert_eq!(spec_parts("[::]:8080/udp"), 2);
    }

    #[test]
    fn subnets_and_gateways() {
        let s: Subnet = "172.16.0.0/16".parse().unwrap();
        assert!(s.contains(ip("172.16.1.254")));
        assert!(err("172.16.1.0/8".parse::<Subnet>()).contains("did you mean 172.0.0.0/8"));
        assert!(err("172.16.0.0".parse::<Subnet>()).contains("CIDR"));
        let n = Network::new("MyDocker0", &[s], &[ip("172.16.1.254")], None).unwrap();
        assert_eq!(n.bridge, "MyDocker0");
        assert_eq!(Network::new("n", &[s], &[], None).unwrap().pools[0].gateway, ip("172.16.0.1"));
        assert!(err(Network::new("n", &[s], &[ip("10.0.0.1")], None)).contains("gateway 10.0.0.1"));
        assert!(err(Network::new("n", &[s], &[ip("172.16.255.255")], None)).contains("not a host"));
    }

    #[test]
    fn ipv6_subnets_and_gateways() {
        let v6: Subnet = "fd00:16::/64".parse().unwrap();
        let v4: Subnet = "172.16.0.0/16".parse().unwrap();
        let n = Network::new("n", &[v6, v4], &[], None).unwrap();
        assert_eq!(n.pools.iter().map(|p| p.gateway.to_string()).collect::<Vec<_>>(), ["172.16.0.1", "fd00:16::1"]);
        assert_eq!(Network::new("n", &[v6], &[], None).unwrap().pools.len(), 1); // IPv6-only is fine
        let e = |s: &str| err(s.parse::<Subnet>());
        assert!(e("fe80::/64").contains("link-local"));
        assert!(e("ff00::/64").contains("multicast"));
        assert!(e("::/64").contains("loopback"));
        assert!(e("::1/120").contains("host bits") || e("::1/120").contains("loopback"));
        assert!(e("::ffff:0:0/96").contains("IPv4-mapped"));
        assert!(e("fd00::/121").contains("longer than /120"));
        assert!(e("fd00::1/64").contains("did you mean fd00::/64"));
        assert!(e("[fd00::]/64").contains("brackets"));
        let two = "fd00:17::/64".parse().unwrap();
        assert!(err(Network::new("n", &[v6, two], &[], None)).contains("at most one subnet per family"));
        assert!(err(Network::new("n", &[v6], &[ip("fd00:17::1")], None)).contains("not a host address"));
        assert!(err(Network::new("n", &[v4], &[ip("fd00:16::1")], None)).contains("no IPv6 subnet"));
        let mut st = State::default();
        st.networks.insert("a".into(), Network::new("a", &[v6], &[], None).unwrap());
        let over = Network::new("b", &["fd00:16::/48".parse().unwrap()], &[], None).unwrap();
        assert!(err(st.check_new_network(&over)).contains("overlaps"));
    }

    #[test]
    fn network_record_keeps_the_single_family_format() {
        let old = r#"{"name":"n","subnet":"10.9.0.0/24","gateway":"10.9.0.1","bridge":"n","masquerade":true,"internal":false}"#;
        let n: Network = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), old);
        let dual = net("d", &["10.9.0.0/24", "fd00:9::/64"], &[]);
        let text = serde_json::to_string(&dual).unwrap();
        assert!(text.contains(r#""subnet":["10.9.0.0/24","fd00:9::/64"]"#), "{text}");
        assert_eq!(serde_json::from_str::<Network>(&text).unwrap(), dual);
        let ep = r#"{"network":"n","ip":"10.9.0.2","ifname":"eth0","host_ifname":"x"}"#;
        let e: Endpoint = serde_json::from_str(ep).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), ep);
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("MyDocker0", "bridge").is_ok());
        assert!(err(check_ifname("a-very-long-bridge", "bridge")).contains("15 bytes"));
        assert!(err(check_ifname("a/b", "bridge")).contains("'/'"));
        assert!(err(check_ifname("a b", "bridge")).contains("' '"));
        assert!(err(check_ifname("", "bridge")).contains("empty"));
        assert!(host_ifname("Container_ns1", "MyDocker0").len() <= 15);
        assert_ne!(host_ifname("a", "bc"), host_ifname("ab", "c"));
    }

    #[test]
    fn conflicts() {
        let a = m("8000-8010:10.0.0.2:8000-8010");
        assert!(a.conflicts_with(&m("8010:10.0.0.3:80")));
        assert!(!a.conflicts_with(&m("8011:10.0.0.3:80")));
        assert!(!a.conflicts_with(&m("8005:10.0.0.3:80/udp")));
        assert!(a.conflicts_with(&m("127.0.0.1:8005:10.0.0.3:80")));
        assert!(!m("127.0.0.1:80:10.0.0.3:80").conflicts_with(&m("127.0.0.2:80:10.0.0.3:80")));
        // The same host port on both families is two mappings, not a conflict.
        assert!(!a.conflicts_with(&m("8005:[fd00::3]:80")));
        assert!(m("8005:[fd00::3]:80").conflicts_with(&m("[2001:db8::1]:8005:[fd00::4]:80")));
    }

    /// Parsers return errors, never panic, on any input: random strings biased toward the
    /// characters of real specs (a deterministic xorshift, so failures reproduce).
    #[test]
    fn parsers_never_panic() {
        let alphabet: Vec<char> = "0123456789.:/-abcdeftcpudsx[]@ \u{0}\u{ff}é65535".chars().collect();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            let s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let _ = s.parse::<Mapping>();
            let _ = s.parse::<PublishSpec>();
            let _ = s.parse::<HostPorts>();
            let _ = s.parse::<Subnet>();
            let _ = spec_parts(&s);
            let _ = check_ifname(&s, "x");
            let _ = check_name(&s, "x");
        }
    }

    #[test]
    fn allocation_skips_gateway_and_used() {
        let mut st = State::default();
        let n = net("n", &["10.9.0.0/29", "fd00:9::/120"], &[]);
        st.networks.insert("n".into(), n.clone());
        assert_eq!(st.allocate_ip(&n, Family::V4).unwrap(), ip("10.9.0.2"));
        assert_eq!(st.allocate_ip(&n, Family::V6).unwrap(), ip("fd00:9::2"));
        let ep = |ips: &[&str]| Endpoint {
            network: "n".into(),
            ips: ips.iter().map(|i| ip(i)).collect(),
            ifname: "eth0".into(),
            host_ifname: "x".into(),
        };
        st.sandboxes.insert(
            "s".into(),
            Sandbox {
                name: "s".into(),
                created: true,
                endpoints: vec![ep(&["10.9.0.2", "fd00:9::2"]), ep(&["10.9.0.3"])],
            },
        );
        assert_eq!(st.allocate_ip(&n, Family::V4).unwrap(), ip("10.9.0.4"));
        assert_eq!(st.endpoint_ips(&n, &[ip("fd00:9::7")], "t").unwrap(), [ip("10.9.0.4"), ip("fd00:9::7")]);
        assert!(err(st.endpoint_ips(&n, &[ip("fd00:9::2")], "t")).contains("held by both"));
        assert!(err(st.endpoint_ips(&n, &[ip("fd00:9::1")], "t")).contains("not a free host address"));
        assert!(err(st.endpoint_ips(&n, &[ip("fd00:9::7"), ip("fd00:9::8")], "t")).contains("once per family"));
        assert!(err(st.endpoint_ips(&n, &[ip("fd00:8::7")], "t")).contains("not a free host address"));
    }
}
