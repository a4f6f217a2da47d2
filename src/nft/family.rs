//! Netfilter families (NFPROTO_*) and hooks: their numbers, once, and their names as nft prints
//! them.

use crate::model::Family;

// NFPROTO_* (linux/netfilter.h): the family of a table, as netlink carries it.
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_ARP: u8 = 3;
pub const NFPROTO_NETDEV: u8 = 5;
pub const NFPROTO_BRIDGE: u8 = 7;
pub const NFPROTO_IPV6: u8 = 10;

/// The same numbers as the 32-bit family field of a dumped chain, rule or set holds them.
pub const FAMILY_INET: u32 = NFPROTO_INET as u32;
pub const FAMILY_IPV4: u32 = NFPROTO_IPV4 as u32;
pub const FAMILY_IPV6: u32 = NFPROTO_IPV6 as u32;

// enum nf_inet_hooks (linux/netfilter.h).
pub const HOOK_PREROUTING: u32 = 0;
pub const HOOK_INPUT: u32 = 1;
pub const HOOK_FORWARD: u32 = 2;
pub const HOOK_OUTPUT: u32 = 3;

/// A table family as nft names it.
pub fn family_name(f: u32) -> &'static str {
    match u8::try_from(f) {
        Ok(NFPROTO_INET) => "inet",
        Ok(NFPROTO_IPV4) => "ip",
        Ok(NFPROTO_ARP) => "arp",
        Ok(NFPROTO_NETDEV) => "netdev",
        Ok(NFPROTO_BRIDGE) => "bridge",
        Ok(NFPROTO_IPV6) => "ip6",
        _ => "family?",
    }
}

/// A base chain's hook as nft names it: netdev chains have one hook, ingress (0) or egress (1);
/// the others the five IP hooks.
pub fn hook_name(family: u32, h: u32) -> String {
    let names: &[&str] = if family == u32::from(NFPROTO_NETDEV) {
        &["ingress", "egress"]
    } else {
        &["prerouting", "input", "forward", "output", "postrouting"]
    };
    names.get(h as usize).map(|s| s.to_string()).unwrap_or(format!("hook {h}"))
}

/// The address family of netfilter family `nfproto`, if it is one of IPv4, IPv6.
pub fn nfproto_family(nfproto: u32) -> Option<Family> {
    match nfproto {
        FAMILY_IPV4 => Some(Family::V4),
        FAMILY_IPV6 => Some(Family::V6),
        _ => None,
    }
}

/// The address families whose routed packets the chains of netfilter family `nfproto` see:
/// ip → IPv4, ip6 → IPv6, inet → both; arp, bridge and netdev chains neither.
pub fn families_of(nfproto: u32) -> &'static [Family] {
    match nfproto {
        FAMILY_INET => &Family::ALL,
        FAMILY_IPV4 => &[Family::V4],
        FAMILY_IPV6 => &[Family::V6],
        _ => &[],
    }
}
