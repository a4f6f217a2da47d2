//! Host settings and leftovers: the sysctls netnat relies on, conntrack's fill, links and
//! namespaces netnat no longer records, and the /proc parsers that feed them.

use super::{finding, Finding, Listener, Observed, Severity};
use crate::host::{BR_NF_CALL_IPTABLES, CT_COUNT, CT_MAX, IP_FORWARD};
use crate::hostfw;
use crate::model::State;
use crate::ruleset::TABLE;
use crate::{host, ruleset};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub(super) fn host(o: &Observed, out: &mut Vec<Finding>) {
    let get = |k: &str| o.sysctls.get(k).map(|v| v.trim());
    let v6_forward = host::IP6_FORWARD;
    if o.state.has_v6() && get(v6_forward) == Some("0") {
        out.push(finding(
            "host.forwarding-off",
            Severity::Error,
            "net.ipv6.conf.all.forwarding is 0 while a network has an IPv6 subnet: no IPv6 traffic is routed between containers and the outside",
            vec![v6_forward.replace('/', ".")],
        ));
    }
    if get(v6_forward) == Some("1") {
        for l in &o.ra_links {
            let key = host::accept_ra_key(l);
            if get(&key) == Some("1") {
                out.push(finding(
                    "host.ra-ignored",
                    Severity::Warning,
                    format!(
                        "{l} learns IPv6 routes from router advertisements (accept_ra=1), but IPv6 forwarding is on, so the kernel ignores them and the routes will expire; set net.ipv6.conf.{l}.accept_ra=2"
                    ),
                    vec![key.replace('/', ".")],
                ));
            }
        }
    }
    if !o.state.networks.is_empty() && get(IP_FORWARD) == Some("0") {
        out.push(finding(
            "host.forwarding-off",
            Severity::Error,
            "net.ipv4.ip_forward is 0: nothing is routed between containers and the outside, published ports included",
            vec![IP_FORWARD.replace('/', ".")],
        ));
    }
    let guard = ruleset::desired(&State::default()).rules.into_iter().find(|r| r.chain == "guard");
    let guarded = match (&o.table, &guard) {
        (Some(t), Some(g)) => t.rules.iter().any(|r| r.chain == "guard" && r.exprs == g.exprs),
        _ => false,
    };
    if !guarded {
        let on: Vec<String> = o
            .sysctls
            .iter()
            .filter(|(k, v)| v.trim() == "1" && k.starts_with("net/ipv4/conf/") && k.ends_with("/route_localnet"))
            .map(|(k, _)| k.trim_start_matches("net/ipv4/conf/").trim_end_matches("/route_localnet").to_string())
            .filter(|i| i != "default")
            .collect();
        if !on.is_empty() {
            out.push(finding(
                "host.route-localnet-unguarded",
                Severity::Error,
                format!(
                    "route_localnet is 1 on {} but netnat's guard rule (drop 127.0.0.0/8 from outside) is absent: \
                     hosts on that link can reach services bound to 127.0.0.1 (CVE-2020-8558)",
                    on.join(", ")
                ),
                on,
            ));
        }
    }
    if get(BR_NF_CALL_IPTABLES) == Some("1") {
        out.push(finding(
            "host.br-netfilter",
            Severity::Info,
            "br_netfilter is loaded and bridge-nf-call-iptables is 1: traffic between containers on one bridge \
             also passes the IPv4 forward hooks (netnat's rules allow it)",
            vec![BR_NF_CALL_IPTABLES.replace('/', ".")],
        ));
    }
    if let (Some(Ok(count)), Some(Ok(max))) = (get(CT_COUNT).map(str::parse::<u64>), get(CT_MAX).map(str::parse::<u64>))
    {
        if max > 0 && count * 10 > max * 8 {
            out.push(finding(
                "host.conntrack-full",
                Severity::Warning,
                format!("the conntrack table holds {count} of at most {max} entries (over 80%): new connections may be dropped"),
                vec![CT_COUNT.replace('/', ".")],
            ));
        }
    }
}

/// `nn` + 8 lowercase hex digits: the shape of netnat's host-side veth names.
pub fn is_netnat_veth_name(name: &str) -> bool {
    name.len() == 10
        && name.starts_with("nn")
        && name[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn leftovers(o: &Observed, out: &mut Vec<Finding>) {
    let st = &o.state;
    let mut recorded: BTreeMap<&str, &str> = st
        .sandboxes
        .values()
        .flat_map(|s| s.endpoints.iter().map(move |e| (e.host_ifname.as_str(), s.name.as_str())))
        .collect();
    // A handoff's veth exists while its owner has it joined (its peer then in the owner's sandbox).
    recorded.extend(st.handoffs.values().filter(|h| h.sandbox.is_some()).map(|h| (h.host_ifname.as_str(), "")));
    for l in o.links.iter().filter(|l| l.kind.as_deref() == Some("veth") && is_netnat_veth_name(&l.name)) {
        let why = match recorded.get(l.name.as_str()) {
            None => Some("is named like netnat's veths but is not in its record".to_string()),
            Some(_) if !l.has_peer => Some("is in netnat's record but its peer is gone".to_string()),
            Some(sb) if !o.netns.iter().any(|n| n == sb) && st.sandboxes.get(*sb).is_some_and(|s| s.created) => {
                Some(format!("belongs to sandbox {sb}, whose namespace /run/netns/{sb} is gone"))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            out.push(finding(
                "leftover.veth",
                Severity::Warning,
                format!("veth {} {why}", l.name),
                vec![l.name.clone()],
            ));
        }
    }
    for s in st.sandboxes.values().filter(|s| s.created && s.endpoints.is_empty()) {
        let what = if o.netns.contains(&s.name) { "exists" } else { "is recorded" };
        out.push(finding(
            "leftover.netns",
            Severity::Warning,
            format!(
                "namespace {} was created by netnat and {what} but has no endpoint (connect it, or remove it with \
                 `netnat sandbox rm {}`)",
                s.name, s.name
            ),
            vec![s.name.clone()],
        ));
    }
    if !o.trace_leftover.is_empty() {
        out.push(finding(
            "trace.leftover",
            Severity::Warning,
            format!(
                "table inet {TABLE} still has the chains of a `netnat trace` that did not end (killed): {}; they \
                 mark matching packets for tracing, which costs on every packet; the next netnat command that \
                 changes something removes them (e.g. `netnat reload`)",
                o.trace_leftover.join(", ")
            ),
            o.trace_leftover.iter().map(|c| format!("inet {TABLE} {c}")).collect(),
        ));
    }
    // A CNI container's address is on the runtime's bridge, not in a netnat network.
    for m in st.mappings.iter().filter(|m| st.network_of(m.container_ip).is_none() && st.owner_of(m).is_none()) {
        out.push(finding(
            "leftover.mapping-target",
            Severity::Warning,
            format!("mapping {m} points to {}, which is in no netnat network", m.container_ip),
            vec![m.to_string()],
        ));
    }
}

/// Parses /proc/net/{tcp,udp,tcp6,udp6}: TCP sockets in LISTEN (state 0A), unconnected UDP
/// sockets (remote address zero). IPv6 sockets count when bound to `::` (every address, also
/// IPv4 unless v6only) or to an IPv4-mapped address.
pub fn parse_proc_net(text: &str, protocol: crate::model::Proto) -> Vec<Listener> {
    let mut out = vec![];
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (local, remote, state) = (f[1], f[2], f[3]);
        let wanted = match protocol {
            crate::model::Proto::Tcp => state == "0A",
            _ => remote.split(':').next().is_some_and(|a| a.bytes().all(|b| b == b'0')),
        };
        if !wanted {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(port, 16) else { continue };
        let addr = match addr.len() {
            8 => u32::from_str_radix(addr, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes())),
            32 => {
                // Four 32-bit words, each printed as a host-order number.
                let words: Option<Vec<[u8; 4]>> = (0..4)
                    .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok().map(|v| v.to_ne_bytes()))
                    .collect();
                words.and_then(|w| {
                    let b: Vec<u8> = w.concat();
                    if b.iter().all(|x| *x == 0) {
                        Some(Ipv4Addr::UNSPECIFIED)
                    } else if b[..10].iter().all(|x| *x == 0) && b[10] == 0xff && b[11] == 0xff {
                        Some(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
                    } else {
                        None
                    }
                })
            }
            _ => None,
        };
        let inode = f.get(9).and_then(|i| i.parse().ok()).unwrap_or(0);
        if let Some(addr) = addr {
            out.push(Listener { protocol, addr, port, inode, process: None });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Parses /proc/net/ip_tables_names: one table name per line.
pub fn parse_table_names(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// netnat's openings in host firewalls: each one (info), the record's that are missing or
/// incomplete (warning, with the fix), and a firewall that runs but cannot be asked.
pub(super) fn host_firewalls(o: &Observed, out: &mut Vec<Finding>) {
    let Some(h) = &o.host_firewall else { return };
    for (kind, bridge, network, what, complete) in &h.held {
        let (id, sev, msg) = if *complete {
            (
                "host.firewall-open",
                Severity::Info,
                format!("{kind} lets network {network} (bridge {bridge}) through: {what}"),
            )
        } else {
            (
                "host.firewall-damaged",
                Severity::Warning,
                format!("{kind}: netnat's opening for network {network} (bridge {bridge}) is incomplete ({what} expected); `netnat reload` adds it again"),
            )
        };
        out.push(finding(id, sev, msg, vec![kind.to_string(), bridge.clone()]));
    }
    for n in o.state.networks.values().filter(|n| n.host_firewall == crate::model::HostFirewallMode::Auto) {
        for kind in &h.running {
            if h.held.iter().any(|(k, b, ..)| k == kind && *b == n.bridge) {
                continue;
            }
            out.push(finding(
                "host.firewall-missing",
                Severity::Warning,
                format!(
                    "{kind} runs, and netnat's opening for network {} (bridge {}) is not there (removed, or {kind} \
                     started after the network was made): `netnat reload` adds it, or by hand: {}",
                    n.name,
                    n.bridge,
                    hostfw::fix(*kind, &n.bridge)
                ),
                vec![kind.to_string(), n.bridge.clone()],
            ));
        }
    }
    for (kind, why) in &h.unreachable {
        out.push(finding(
            "host.firewall-unreachable",
            Severity::Warning,
            format!("{kind}: {why}"),
            vec![kind.to_string()],
        ));
    }
}
