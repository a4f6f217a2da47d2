//! What the mapping operation (`engine::mapping`) needs around published ports: `unpublish`'s
//! selectors, the host-side checks that need the kernel, and the conntrack flush.

use super::refuse;
use crate::conntrack;
use crate::link::Links;
use crate::model::{spec_parts, Family, HostPorts, InputError, Mapping, Proto, PublishSpec};
use anyhow::Result;

/// Which published mappings an `unpublish` argument names.
#[derive(Debug, Clone)]
pub enum Selector {
    /// A whole mapping (HOSTPORT:CONTAINER:PORT), as `publish` took it.
    Exact(PublishSpec),
    /// A host side (`[HOSTIP:]HOSTPORT[/PROTO]`): every mapping on it, of each family a bare
    /// port names.
    Host(HostPorts),
}

impl std::str::FromStr for Selector {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Selector, InputError> {
        // A full mapping has 3 or 4 parts (HOSTPORT:CONTAINER:PORT); a host side 1 or 2.
        if spec_parts(s) >= 3 {
            s.parse().map(Selector::Exact)
        } else {
            s.parse().map(Selector::Host)
        }
    }
}

/// An interface a mapping is bound to may appear later (a VPN, a USB link): accepted, with a note.
pub(crate) fn missing_interfaces(maps: &[Mapping]) -> Result<Vec<String>> {
    if maps.iter().all(|m| m.host_if.is_none()) {
        return Ok(vec![]);
    }
    let links = Links::open()?;
    let mut notes = vec![];
    for m in maps {
        if let Some(i) = m.host_if {
            if links.link(i.as_str())?.is_none() {
                notes.push(format!("interface {i} of {m} does not exist (yet); the port answers once it appears"));
            }
        }
    }
    Ok(notes)
}

/// A HOSTIP must be an address this host has, or the mapping could never match.
pub(crate) fn check_host_addresses(maps: &[Mapping]) -> Result<()> {
    if maps.iter().all(|m| m.host_ip.is_none()) {
        return Ok(());
    }
    let addrs = Links::open()?.addrs()?;
    for m in maps {
        if let Some(ip) = m.host_ip {
            if !ip.is_loopback() && !addrs.iter().any(|a| a.addr == ip) {
                return refuse(format!("host address {ip} in {m} is not an address of this host"));
            }
        }
    }
    Ok(())
}

/// Drops conntrack entries keyed by the HOST port of each mapping (not the container port), so
/// a datagram flow that kept its 5-tuple across a publish, unpublish or re-publish follows the
/// new rules at once. TCP is left alone: a new connection always starts with a SYN that gets a
/// fresh entry (and sees the new rules), and flushing would cost a walk of the kernel's whole
/// conntrack table per publish and cut established connections.
pub(crate) fn flush_conntrack(maps: &[Mapping]) -> Result<()> {
    for m in maps.iter().filter(|m| m.protocol != Proto::Tcp) {
        conntrack::flush(&conntrack::Filter {
            proto: m.protocol.number(),
            dport_min: m.host_port,
            dport_max: m.host_port_end,
            daddr: m.host_ip,
            ipv6: m.family() == Family::V6,
        })?;
    }
    Ok(())
}
