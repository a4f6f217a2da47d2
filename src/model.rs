//! The CNM vocabulary as plain data: Network, Sandbox, Endpoint, Mapping, and their validation.
//! No I/O here: every check that needs only the values lives in this module, so bad input is
//! refused before anything touches the kernel.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
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

/// An IPv4 network in CIDR form, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix as u32)
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
    /// The first address that can be given to a host (network address + 1).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
    /// Whether `ip` may be given to a host or gateway: inside, and neither network nor broadcast.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.addr && ip != self.broadcast()
    }
}

impl FromStr for Subnet {
    type Err = InputError;
    fn from_str(s: &str) -> Valid<Subnet> {
        let Some((a, p)) = s.split_once('/') else {
            invalid!("subnet '{s}' is not in CIDR form ADDRESS/PREFIX (e.g. 172.16.0.0/16)");
        };
        let addr: Ipv4Addr = parse_ipv4(a, "subnet address")?;
        let prefix: u8 = match p.parse() {
            Ok(v) if v <= 32 => v,
            _ => invalid!("subnet '{s}': prefix length '{p}' must be a number from 8 to 30"),
        };
        if !(8..=30).contains(&prefix) {
            invalid!("subnet '{s}': prefix length {prefix} must be from 8 to 30 (room for a gateway and hosts)");
        }
        let net = Subnet { addr, prefix };
        let masked = Ipv4Addr::from(u32::from(addr) & net.mask());
        if masked != addr {
            invalid!("subnet '{s}' has host bits set: did you mean {masked}/{prefix}?");
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

/// Parses an IPv4 address, with a message that says what the address was for.
pub fn parse_ipv4(s: &str, what: &str) -> Valid<Ipv4Addr> {
    match s.parse::<Ipv4Addr>() {
        Ok(a) => Ok(a),
        Err(_) if s.contains(':') || s.starts_with('[') => {
            invalid!("{what} '{s}' is an IPv6 address; netnat supports IPv4 only for now")
        }
        Err(_) => invalid!("{what} '{s}' is not an IPv4 address"),
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// Masquerade traffic that leaves through a non-bridge interface (egress).
    pub masquerade: bool,
    /// No traffic to or from outside the bridge at all.
    pub internal: bool,
}

impl Network {
    /// Builds and checks a network from user input; `gateway` defaults to the first host address.
    pub fn new(name: &str, subnet: Subnet, gateway: Option<Ipv4Addr>, bridge: Option<&str>) -> Valid<Network> {
        check_name(name, "network")?;
        let bridge = bridge.unwrap_or(name);
        check_ifname(bridge, "bridge name")?;
        let gateway = gateway.unwrap_or(subnet.first_host());
        if !subnet.is_host(gateway) {
            invalid!("gateway {gateway} is not a host address of subnet {subnet}");
        }
        Ok(Network { name: name.into(), subnet, gateway, bridge: bridge.into(), masquerade: true, internal: false })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    /// Name inside the sandbox (eth0, eth1, ...).
    pub ifname: String,
    /// Name of the host end, derived from sandbox and network (see `host_ifname`).
    pub host_ifname: String,
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

/// A published port range: host `[host_ip:]host_port..=host_port_end` to
/// `container_ip:container_port..` (same length), for one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub protocol: Proto,
    /// None: every local address of the host.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    pub container_port_end: u16,
}

impl Mapping {
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
    /// Two mappings compete for the same packets: same protocol, overlapping host ports, and
    /// host addresses that overlap (equal, or either one is "any address").
    pub fn conflicts_with(&self, o: &Mapping) -> bool {
        self.protocol == o.protocol
            && self.host_port <= o.host_port_end
            && o.host_port <= self.host_port_end
            && (self.host_ip.is_none() || o.host_ip.is_none() || self.host_ip == o.host_ip)
    }
    /// The host side only, as `unpublish` accepts it.
    pub fn host_spec(&self) -> String {
        let ip = self.host_ip.map(|i| format!("{i}:")).unwrap_or_default();
        format!("{ip}{}/{}", range_text(self.host_port, self.host_port_end), self.protocol)
    }
}

fn range_text(a: u16, b: u16) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}:{}/{}",
            range_text(self.host_port, self.host_port_end),
            self.container_ip,
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
    match spec.rsplit_once('/') {
        Some((rest, p)) => Ok((rest, p.parse().map_err(|e: InputError| InputError(format!("{e} (in '{spec}')")))?)),
        None => Ok((spec, Proto::Tcp)),
    }
}

impl FromStr for Mapping {
    type Err = InputError;
    /// `[HOSTIP:]HOSTPORT[-END]:CONTAINERIP:CONTAINERPORT[-END][/tcp|/udp|/sctp]`
    fn from_str(spec: &str) -> Valid<Mapping> {
        let (rest, protocol) = split_proto(spec)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_ip, hp, cip, cp) = match parts.as_slice() {
            [hp, cip, cp] => (None, *hp, *cip, *cp),
            [hip, hp, cip, cp] => (Some(parse_ipv4(hip, "host address")?), *hp, *cip, *cp),
            _ if rest.contains('[') || parts.len() > 4 => {
                invalid!("'{spec}': IPv6 addresses are not supported yet; use IPv4")
            }
            _ => invalid!(
                "'{spec}' is not a port mapping: expected [HOSTIP:]HOSTPORT[-END]:CONTAINERIP:CONTAINERPORT[-END][/tcp|/udp|/sctp]"
            ),
        };
        let (host_port, host_port_end) = parse_range(hp, spec)?;
        let container_ip = parse_ipv4(cip, "container address")?;
        let (container_port, container_port_end) = parse_range(cp, spec)?;
        if host_port_end - host_port != container_port_end - container_port {
            invalid!(
                "'{spec}': host range {} has {} ports but container range {} has {}",
                range_text(host_port, host_port_end),
                host_port_end - host_port + 1,
                range_text(container_port, container_port_end),
                container_port_end - container_port + 1
            );
        }
        if container_ip.is_unspecified() || container_ip.is_broadcast() || container_ip.is_multicast() {
            invalid!("container address {container_ip} in '{spec}' cannot receive a connection");
        }
        if let Some(h) = host_ip {
            if h.is_multicast() || h.is_broadcast() {
                invalid!("host address {h} in '{spec}' is not a unicast address");
            }
        }
        // 0.0.0.0 means "every address", as with Docker's -p 0.0.0.0:80:80.
        let host_ip = host_ip.filter(|h| !h.is_unspecified());
        Ok(Mapping { protocol, host_ip, host_port, host_port_end, container_ip, container_port, container_port_end })
    }
}

/// The host side of a mapping, as `unpublish HOSTIP:HOSTPORT/PROTO` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPorts {
    pub protocol: Proto,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub host_port_end: u16,
}

impl FromStr for HostPorts {
    type Err = InputError;
    fn from_str(spec: &str) -> Valid<HostPorts> {
        let (rest, protocol) = split_proto(spec)?;
        let (host_ip, ports) = match rest.split_once(':') {
            Some((ip, ports)) => (Some(parse_ipv4(ip, "host address")?), ports),
            None => (None, rest),
        };
        let (host_port, host_port_end) = parse_range(ports, spec)?;
        Ok(HostPorts { protocol, host_ip: host_ip.filter(|h| !h.is_unspecified()), host_port, host_port_end })
    }
}

impl HostPorts {
    pub fn matches(&self, m: &Mapping) -> bool {
        m.protocol == self.protocol
            && m.host_ip == self.host_ip
            && m.host_port == self.host_port
            && m.host_port_end == self.host_port_end
    }
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
}

impl State {
    pub fn endpoints_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = (&'a Sandbox, &'a Endpoint)> + 'a {
        self.sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().map(move |e| (s, e)))
            .filter(move |(_, e)| e.network == network)
    }

    /// The network whose subnet holds `ip`, if any.
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<&Network> {
        self.networks.values().find(|n| n.subnet.contains(ip))
    }

    /// The lowest free host address of a network: not the network, broadcast or gateway address,
    /// and not held by any endpoint.
    pub fn allocate_ip(&self, network: &Network) -> Valid<Ipv4Addr> {
        let used: std::collections::HashSet<Ipv4Addr> = self.endpoints_on(&network.name).map(|(_, e)| e.ip).collect();
        let first = u32::from(network.subnet.first_host());
        let last = u32::from(network.subnet.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from).find(|ip| *ip != network.gateway && !used.contains(ip)).ok_or_else(|| {
            InputError(format!("network {} has no free address left in {}", network.name, network.subnet))
        })
    }

    /// Checks a new network against the existing ones (other than one of the same name).
    pub fn check_new_network(&self, n: &Network) -> Valid<()> {
        for o in self.networks.values().filter(|o| o.name != n.name) {
            if o.subnet.overlaps(&n.subnet) {
                invalid!(
                    "subnet {} of network {} overlaps subnet {} of network {}",
                    n.subnet,
                    n.name,
                    o.subnet,
                    o.name
                );
            }
            if o.bridge == n.bridge {
                invalid!("bridge {} is already used by network {}", n.bridge, o.name);
            }
        }
        Ok(())
    }
}

/// Test fixtures shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The seed's network MyDocker0 (172.16.0.0/16, gateway 172.16.1.254) with sandbox ns1 at
    /// 172.16.1.1, its host-side veth named `host_ifname`; no mappings.
    pub(crate) fn seed_state(host_ifname: &str) -> State {
        let mut st = State::default();
        let n =
            Network::new("MyDocker0", "172.16.0.0/16".parse().unwrap(), Some("172.16.1.254".parse().unwrap()), None)
                .unwrap();
        st.networks.insert(n.name.clone(), n);
        let ep = Endpoint {
            network: "MyDocker0".into(),
            ip: "172.16.1.1".parse().unwrap(),
            ifname: "eth0".into(),
            host_ifname: host_ifname.into(),
        };
        st.sandboxes.insert("ns1".into(), Sandbox { name: "ns1".into(), created: true, endpoints: vec![ep] });
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Mapping {
        s.parse().unwrap()
    }
    fn err<T: fmt::Debug>(r: Valid<T>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn parses_port_specs() {
        let a = m("9090:172.16.1.1:8080");
        assert_eq!((a.protocol, a.host_ip, a.host_port, a.container_port), (Proto::Tcp, None, 9090, 8080));
        let b = m("127.0.0.1:5353:172.16.1.2:53/udp");
        assert_eq!(b.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(b.protocol, Proto::Udp);
        let c = m("8000-8099:172.16.1.1:8000-8099");
        assert_eq!(c.len(), 100);
        assert_eq!(c.ports().last(), Some((8099, 8099)));
        assert_eq!(c.to_string(), "8000-8099:172.16.1.1:8000-8099/tcp");
        assert_eq!(m("0.0.0.0:80:10.0.0.2:80").host_ip, None);
    }

    #[test]
    fn refuses_bad_port_specs_naming_the_value() {
        assert!(err("0:172.16.1.1:80".parse::<Mapping>()).contains("port 0"));
        assert!(err("65536:172.16.1.1:80".parse::<Mapping>()).contains("65536"));
        assert!(err("90-80:172.16.1.1:80-90".parse::<Mapping>()).contains("reversed"));
        assert!(err("80-81:172.16.1.1:80".parse::<Mapping>()).contains("2 ports"));
        assert!(err("80:172.16.1.300:80".parse::<Mapping>()).contains("172.16.1.300"));
        assert!(err("80:172.16.1.1:80/icmp".parse::<Mapping>()).contains("icmp"));
        assert!(err("80:fe80::1:80".parse::<Mapping>()).contains("IPv6"));
        assert!(err("80".parse::<Mapping>()).contains("not a port mapping"));
    }

    #[test]
    fn subnets_and_gateways() {
        let s: Subnet = "172.16.0.0/16".parse().unwrap();
        assert!(s.contains("172.16.1.254".parse().unwrap()));
        assert!(err("172.16.1.0/8".parse::<Subnet>()).contains("did you mean 172.0.0.0/8"));
        assert!(err("172.16.0.0".parse::<Subnet>()).contains("CIDR"));
        let n = Network::new("MyDocker0", s, Some("172.16.1.254".parse().unwrap()), None).unwrap();
        assert_eq!(n.bridge, "MyDocker0");
        assert_eq!(Network::new("n", s, None, None).unwrap().gateway, Ipv4Addr::new(172, 16, 0, 1));
        assert!(err(Network::new("n", s, Some("10.0.0.1".parse().unwrap()), None)).contains("gateway 10.0.0.1"));
        assert!(err(Network::new("n", s, Some("172.16.255.255".parse().unwrap()), None)).contains("not a host"));
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
    }

    /// Parsers return errors, never panic, on any input: random strings biased toward the
    /// characters of real specs (a deterministic xorshift, so failures reproduce).
    #[test]
    fn parsers_never_panic() {
        let alphabet: Vec<char> = "0123456789.:/-abcdeftcpudsx[] \u{0}\u{ff}é65535".chars().collect();
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
            let _ = s.parse::<HostPorts>();
            let _ = s.parse::<Subnet>();
            let _ = check_ifname(&s, "x");
            let _ = check_name(&s, "x");
        }
    }

    #[test]
    fn allocation_skips_gateway_and_used() {
        let mut st = State::default();
        let n = Network::new("n", "10.9.0.0/29".parse().unwrap(), None, None).unwrap();
        st.networks.insert("n".into(), n.clone());
        assert_eq!(st.allocate_ip(&n).unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        let ep = |ip: &str| Endpoint {
            network: "n".into(),
            ip: ip.parse().unwrap(),
            ifname: "eth0".into(),
            host_ifname: "x".into(),
        };
        st.sandboxes.insert(
            "s".into(),
            Sandbox { name: "s".into(), created: true, endpoints: vec![ep("10.9.0.2"), ep("10.9.0.3")] },
        );
        assert_eq!(st.allocate_ip(&n).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
    }
}
