//! The host's settings netnat changes and gives back: the sysctl keys it needs (forwarding,
//! route_localnet on its bridges, accept_ra on interfaces that learn routes from router
//! advertisements), the values they had before (kept in the record's `sysctls`), and the
//! /run/sysctl.d drop-in that keeps systemd-sysctl from reverting them. Every key is spelled
//! here and nowhere else.

use crate::link::{sysctl, Addr};
use crate::model::State;
use anyhow::{Context, Result};
use std::path::Path;

pub const IP_FORWARD: &str = "net/ipv4/ip_forward";
pub const IP6_FORWARD: &str = "net/ipv6/conf/all/forwarding";
/// Read by the audit only: settings netnat does not change but that change what its rules see.
pub const BR_NF_CALL_IPTABLES: &str = "net/bridge/bridge-nf-call-iptables";
pub const CT_COUNT: &str = "net/netfilter/nf_conntrack_count";
pub const CT_MAX: &str = "net/netfilter/nf_conntrack_max";

pub const SYSCTL_CONF: &str = "/run/sysctl.d/50-netnat.conf";

/// The forwarding sysctls a state needs on: IPv4's while any network exists, IPv6's while one
/// has an IPv6 subnet.
pub fn forwarding_keys(state: &State) -> Vec<&'static str> {
    match (state.networks.is_empty(), state.has_v6()) {
        (true, _) => vec![],
        (false, false) => vec![IP_FORWARD],
        (false, true) => vec![IP_FORWARD, IP6_FORWARD],
    }
}

/// accept_ra of an interface: 1 takes router advertisements unless forwarding is on, 2 always.
pub fn accept_ra_key(ifname: &str) -> String {
    format!("net/ipv6/conf/{ifname}/accept_ra")
}

/// route_localnet of an interface (netnat sets it on its bridges, so the host's own 127.0.0.1
/// connections to a published port can be DNAT'd onto them).
pub fn route_localnet_key(ifname: &str) -> String {
    format!("net/ipv4/conf/{ifname}/route_localnet")
}

/// Forwarding on while netnat has networks (IPv6's while one has an IPv6 subnet); the old
/// values are kept in `state.sysctls` to restore them. `ra_route_links` lists the interfaces
/// that learn IPv6 routes from router advertisements (asked only when IPv6 forwarding goes on).
/// Returns notes for the user.
pub fn enable_forwarding(
    state: &mut State,
    ra_route_links: &mut dyn FnMut() -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let mut notes = vec![];
    for key in forwarding_keys(state) {
        let old = sysctl::read(key)?;
        if old == "1" {
            continue;
        }
        if key == IP6_FORWARD {
            notes.extend(keep_router_advertisements(state, ra_route_links()?)?);
        }
        state.sysctls.entry(key.into()).or_insert(old);
        sysctl::write(key, "1")?;
    }
    Ok(notes)
}

/// With IPv6 forwarding on, the kernel ignores router advertisements on interfaces with
/// accept_ra=1, so a host that learns its IPv6 routes from RAs would lose them when they
/// expire. Such interfaces get accept_ra=2 (take RAs even when forwarding), recorded and
/// restored by `reset`.
fn keep_router_advertisements(state: &mut State, ra_route_links: Vec<String>) -> Result<Vec<String>> {
    let mut notes = vec![];
    for ifname in ra_route_links {
        let key = accept_ra_key(&ifname);
        let Ok(old) = sysctl::read(&key) else { continue };
        if old == "1" {
            state.sysctls.entry(key.clone()).or_insert(old);
            sysctl::write(&key, "2")?;
            notes.push(format!(
                "{ifname} learns IPv6 routes from router advertisements; set its accept_ra to 2 so it keeps them \
                 with forwarding on (restored by `netnat reset`)"
            ));
        }
    }
    Ok(notes)
}

/// route_localnet on a bridge of netnat's (only that interface gets it).
pub fn enable_route_localnet(bridge: &str) -> Result<()> {
    sysctl::write(&route_localnet_key(bridge), "1")
}

/// Puts back every sysctl netnat changed.
pub fn restore(state: &mut State) -> Result<()> {
    for (key, value) in std::mem::take(&mut state.sysctls) {
        // An interface's key is gone with the interface (a container runtime's bridge): nothing
        // is left to restore.
        let iface = key.starts_with("net/ipv4/conf/") || key.starts_with("net/ipv6/conf/");
        if iface && !std::path::Path::new("/proc/sys").join(&key).exists() {
            continue;
        }
        sysctl::write(&key, &value).with_context(|| format!("restoring {key} to {value}"))?;
    }
    Ok(())
}

/// route_localnet on a bridge netnat did not make (a CNI bridge holding published containers),
/// so the host's own 127.0.0.1 connections to their ports can be DNAT'd onto it, as on netnat's
/// bridges; the old value is kept in `state.sysctls` for `reset`. netnat's guard drops 127.0.0.0/8
/// arriving from outside on every interface.
pub fn enable_route_localnet_recorded(state: &mut State, ifname: &str) -> Result<()> {
    let key = route_localnet_key(ifname);
    let old = sysctl::read(&key)?;
    if old != "1" {
        state.sysctls.entry(key.clone()).or_insert(old);
        sysctl::write(&key, "1")?;
    }
    Ok(())
}

/// The host's own 127.0.0.1 connections to a container on a bridge netnat did not make reach it
/// only with route_localnet on that bridge (portmap sets it too): the bridge is the host link
/// with an address whose subnet holds the container's address (`addrs`: the host's addresses,
/// asked only when a container is on such a bridge).
pub fn localhost_to_foreign_bridges(
    state: &mut State,
    added: &[crate::model::Mapping],
    addrs: impl FnOnce() -> Result<Vec<Addr>>,
) -> Result<()> {
    let targets: Vec<std::net::IpAddr> = added
        .iter()
        .filter(|m| m.family() == crate::model::Family::V4 && state.network_of(m.container_ip).is_none())
        .map(|m| m.container_ip)
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    // The same /prefix network: the top `prefix` bits agree.
    let same_net = |a: std::net::IpAddr, b: std::net::IpAddr, prefix: u8| {
        let shift = 32 - u32::from(prefix.clamp(1, 32));
        crate::model::ip_bits(a) >> shift == crate::model::ip_bits(b) >> shift
    };
    for a in addrs()? {
        if a.addr.is_ipv4() && a.prefix < 32 && targets.iter().any(|t| same_net(*t, a.addr, a.prefix)) {
            crate::host::enable_route_localnet_recorded(state, &a.ifname)?;
        }
    }
    Ok(())
}

/// The drop-in for a state: None when netnat has no network (then there is nothing to keep).
/// Keys use '/' separators so a bridge name with a '.' stays one path component (sysctl.d(5)).
pub fn conf_text(state: &State) -> Option<String> {
    if state.networks.is_empty() {
        return None;
    }
    let mut out = String::from(
        "# Written by netnat: sysctls it set, so systemd-sysctl does not revert them.\n\
         # Removed by `netnat reset`; do not edit.\n",
    );
    for key in forwarding_keys(state) {
        out += &format!("{key} = 1\n");
    }
    for n in state.networks.values() {
        out += &format!("{} = 1\n", route_localnet_key(&n.bridge));
    }
    // Interfaces that keep taking router advertisements while IPv6 forwarding is on.
    for key in state.sysctls.keys().filter(|k| k.ends_with("/accept_ra")) {
        out += &format!("{key} = 2\n");
    }
    Some(out)
}

/// Writes (or removes, with no network left) /run/sysctl.d/50-netnat.conf.
pub fn write_conf(state: &State) -> Result<()> {
    let path = Path::new(SYSCTL_CONF);
    match conf_text(state) {
        None => remove_conf(),
        Some(text) => {
            if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
                return Ok(());
            }
            let dir = path.parent().expect("has a parent");
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let tmp = dir.join(format!(".50-netnat.conf.{}", std::process::id()));
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing {SYSCTL_CONF}"))
        }
    }
}

pub fn remove_conf() -> Result<()> {
    match std::fs::remove_file(SYSCTL_CONF) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {SYSCTL_CONF}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn drop_in_lists_what_netnat_set() {
        assert_eq!(conf_text(&State::default()), None);
        let mut st = State::default();
        st.networks.insert("d".into(), fixtures::net("d", &["10.9.0.0/24", "fd00:9::/64"], &[]));
        st.sysctls.insert(accept_ra_key("eth0"), "1".into());
        let text = conf_text(&st).unwrap();
        let bridge = &st.networks["d"].bridge;
        for line in [
            "net/ipv4/ip_forward = 1".to_string(),
            "net/ipv6/conf/all/forwarding = 1".into(),
            format!("net/ipv4/conf/{bridge}/route_localnet = 1"),
            "net/ipv6/conf/eth0/accept_ra = 2".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }
}
