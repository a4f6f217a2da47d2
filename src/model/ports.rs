//! Published ports: `Proto`, `Mapping`, allow lists, and the parsing of publish specs
//! (`PublishSpec`, `HostPorts`).

use super::{check_name, ip_text, Cidr, Endpoint, Family, IfName, InputError, State, Valid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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
