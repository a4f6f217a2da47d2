//! Addresses and prefixes of both families: `Family`, `Subnet`, `Cidr` and the parsing of addresses.

use super::{InputError, Valid};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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
