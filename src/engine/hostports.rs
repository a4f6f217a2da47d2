//! Host ports for a front door that leaves their choice to netnat (Docker's `-p 8081` asks for
//! any free port, `-p 9200-9210:82` for the first free one of a range), and who holds a port
//! already: a netnat mapping (with its owner) or a socket of some process.

use crate::audit::Listener;
use crate::link::sysctl;
use crate::model::{Family, InputError, Mapping, Proto, State};
use anyhow::{Context, Result};
use std::net::IpAddr;

/// One container port to publish on a host port netnat picks among `host_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub protocol: Proto,
    /// None: every local address (of each target's family).
    pub host_ip: Option<IpAddr>,
    /// The host ports allowed, first to last; None: any port of the host's ephemeral range.
    pub host_ports: Option<(u16, u16)>,
    pub container_port: u16,
    /// The container's addresses: one mapping each, all on the same host port.
    pub targets: Vec<IpAddr>,
}

/// The host's ephemeral port range (net.ipv4.ip_local_port_range, which IPv6 shares).
pub fn ephemeral_range() -> Result<(u16, u16)> {
    let text = sysctl::read("net/ipv4/ip_local_port_range")?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => Ok((a, b)),
        _ => anyhow::bail!("net.ipv4.ip_local_port_range reads {text:?}, not two ports"),
    }
}

/// SCTP ports need the kernel's SCTP connection tracking (nf_conntrack's SCTP support), which
/// a kernel may be built without: then they are refused, saying so.
pub fn check_protocol(p: Proto) -> Result<()> {
    check_protocol_in(p, std::path::Path::new("/proc/sys/net/netfilter"))
}

/// `check_protocol` with the netfilter sysctl directory given (tests).
fn check_protocol_in(p: Proto, sysctls: &std::path::Path) -> Result<()> {
    if p == Proto::Sctp && !sysctls.join("nf_conntrack_sctp_timeout_established").exists() {
        return Err(InputError(
            "SCTP: this kernel's connection tracking has no SCTP support (no net.netfilter.nf_conntrack_sctp_* \
             settings), so it cannot translate SCTP ports; publish TCP or UDP ports instead"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// Who holds the host side of `m` already, in words; None when it is free.
pub fn holder(state: &State, listeners: &[Listener], m: &Mapping) -> Option<String> {
    if let Some(o) = state.mappings.iter().find(|o| o.conflicts_with(m)) {
        let who = match state.owner_of(o) {
            Some(a) => match state.networks.get(&a.network).and_then(|n| n.owner.as_ref()) {
                Some(owner) => format!("{} {}", owner.by, short(&a.container_id)),
                None => format!("CNI container {}", short(&a.container_id)),
            },
            None => "`netnat publish`".into(),
        };
        return Some(format!("netnat mapping {o} of {who}"));
    }
    listeners.iter().find(|l| listener_holds(l, m)).map(|l| {
        let process = l.process.as_deref().map(|p| format!("process {p}")).unwrap_or_else(|| "a process".into());
        format!("{process}, which listens on {}:{}/{}", l.addr, l.port, l.protocol)
    })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A socket on the port holds it for every address when either side is a wildcard (an IPv6
/// wildcard socket is listed as 0.0.0.0 and holds both families).
fn listener_holds(l: &Listener, m: &Mapping) -> bool {
    if l.protocol != m.protocol || l.port < m.host_port || l.port > m.host_port_end {
        return false;
    }
    match m.host_ip {
        _ if l.addr.is_unspecified() => true,
        None => m.family() == Family::V4,
        Some(ip) => ip == IpAddr::V4(l.addr),
    }
}

/// The mappings for `reqs`, each on the first host port of its choice that nobody holds (nor an
/// earlier request of the same call). A request whose ports are all held fails the whole call,
/// naming who holds the port (the first of a range).
pub fn choose(
    state: &State,
    listeners: &[Listener],
    reqs: &[PortRequest],
    ephemeral: (u16, u16),
) -> Result<Vec<Mapping>, InputError> {
    let mut taken = state.clone();
    let mut out = vec![];
    for r in reqs {
        let (first, last) = r.host_ports.unwrap_or(ephemeral);
        let on = |port: u16| -> Vec<Mapping> {
            r.targets
                .iter()
                .filter(|t| r.host_ip.is_none_or(|h| Family::of(h) == Family::of(**t)))
                .map(|t| Mapping {
                    protocol: r.protocol,
                    host_ip: r.host_ip,
                    host_if: None,
                    host_port: port,
                    host_port_end: port,
                    container_ip: *t,
                    container_port: r.container_port,
                    container_port_end: r.container_port,
                })
                .collect()
        };
        if on(first).is_empty() {
            let fam = r.host_ip.map(Family::of).unwrap_or(Family::V4);
            return Err(InputError(format!(
                "host address {} is {fam}, but the container has no {fam} address on this network",
                r.host_ip.map(|i| i.to_string()).unwrap_or_default()
            )));
        }
        let free = |port: u16| on(port).iter().all(|m| holder(&taken, listeners, m).is_none());
        let Some(port) = (first..=last).find(|p| *p != 0 && free(*p)) else {
            let m = on(first)[0];
            let why = holder(&taken, listeners, &m).unwrap_or_else(|| "nobody".into());
            let ports = if first == last { format!("host port {first}") } else { format!("host ports {first}-{last}") };
            return Err(InputError(format!(
                "cannot publish {}/{} to port {}: {ports} {} taken; port {first} is held by {why}",
                r.host_ip.map(|i| crate::model::ip_text(i) + ":").unwrap_or_default() + &first.to_string(),
                r.protocol,
                r.container_port,
                if first == last { "is" } else { "are all" },
            )));
        };
        for m in on(port) {
            taken.mappings.push(m);
            out.push(m);
        }
    }
    Ok(out)
}

/// `choose` with the host's sockets and ephemeral range read now.
pub fn choose_now(state: &State, reqs: &[PortRequest]) -> Result<Vec<Mapping>> {
    for r in reqs {
        check_protocol(r.protocol)?;
    }
    let listeners = super::observe::listeners().context("reading the host's listening sockets")?;
    Ok(choose(state, &listeners, reqs, ephemeral_range()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn req(host: Option<(u16, u16)>, port: u16) -> PortRequest {
        PortRequest {
            protocol: Proto::Tcp,
            host_ip: None,
            host_ports: host,
            container_port: port,
            targets: vec!["172.18.0.2".parse().unwrap(), "fd00:18::2".parse().unwrap()],
        }
    }

    #[test]
    fn sctp_is_refused_without_sctp_connection_tracking() {
        let none = std::env::temp_dir().join(format!("netnat-no-sctp-{}", std::process::id()));
        let e = check_protocol_in(Proto::Sctp, &none).unwrap_err();
        assert!(e.downcast_ref::<InputError>().is_some_and(|i| i.0.starts_with("SCTP: this kernel")), "{e}");
        assert!(check_protocol_in(Proto::Tcp, &none).is_ok() && check_protocol_in(Proto::Udp, &none).is_ok());
    }

    #[test]
    fn first_free_port_of_a_range_or_the_ephemeral_range() {
        let mut st = State::default();
        st.mappings.push("9200:172.18.0.9:80".parse().unwrap());
        let l = Listener {
            protocol: Proto::Tcp,
            addr: Ipv4Addr::UNSPECIFIED,
            port: 9201,
            inode: 1,
            process: Some("nginx".into()),
        };
        let got =
            choose(&st, std::slice::from_ref(&l), &[req(Some((9200, 9210)), 82), req(None, 8081)], (40000, 40010))
                .unwrap();
        let ports: Vec<u16> = got.iter().map(|m| m.host_port).collect();
        // Both families on one port: 9200 is netnat's, 9201 nginx's.
        assert_eq!(ports, vec![9202, 9202, 40000, 40000]);
        // A single port held: the holder is named.
        let e = choose(&st, &[l], &[req(Some((9201, 9201)), 82)], (40000, 40010)).unwrap_err();
        assert!(e.0.contains("process nginx, which listens on 0.0.0.0:9201/tcp"), "{e}");
        let e = choose(&st, &[], &[req(Some((9200, 9200)), 82)], (40000, 40010)).unwrap_err();
        assert!(e.0.contains("netnat mapping") && e.0.contains("`netnat publish`"), "{e}");
        // A CNI container's port names the container.
        let cni: Mapping = "9500:10.88.0.5:80".parse().unwrap();
        st.mappings.push(cni);
        let a = crate::model::Attachment {
            network: "podman".into(),
            container_id: "0123456789abcdef".into(),
            ifname: "eth0".into(),
            mappings: vec![cni],
            standby: vec![],
        };
        st.attachments.insert(a.id().key(), a);
        let e = choose(&st, &[], &[req(Some((9500, 9500)), 82)], (40000, 40010)).unwrap_err();
        assert!(e.0.contains("of CNI container 0123456789ab"), "{e}");
        // Two requests of one call do not take the same port.
        let got = choose(&State::default(), &[], &[req(None, 1), req(None, 2)], (40000, 40010)).unwrap();
        assert_eq!((got[0].host_port, got[2].host_port), (40000, 40001));
        // A host address keeps only its family.
        let mut r = req(Some((9300, 9300)), 81);
        r.host_ip = Some("127.0.0.1".parse().unwrap());
        assert_eq!(choose(&State::default(), &[], &[r], (1, 2)).unwrap().len(), 1);
    }
}
