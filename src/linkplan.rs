//! The link-level side of `netnat apply` (pure): what to do to bridges, namespaces and veth
//! endpoints so the kernel matches a target `State`, given the record and what the kernel has.
//! The nftables side is `ruleset::plan`; together they are the whole reconcile.

use crate::model::{Endpoint, Network, State};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use crate::host::{forwarding_keys, route_localnet_key};

/// One link of the host namespace, as far as the plan cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    pub kind: Option<String>,
    pub up: bool,
    /// Name of the bridge it is enslaved to.
    pub master: Option<String>,
    /// Addresses with prefix length.
    pub addrs: Vec<(IpAddr, u8)>,
}

/// What the kernel has (host namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: BTreeMap<String, ObservedLink>,
    /// Named network namespaces (/run/netns/NAME) that exist.
    pub namespaces: BTreeSet<String>,
    /// Current values of the sysctls the plan looks at (missing: unreadable).
    pub sysctls: BTreeMap<String, String>,
}

/// One link-level step. Executed in the order `plan_links` returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    /// Delete the veth of an endpoint (the record's, or a leftover with the same host name).
    Disconnect {
        sandbox: String,
        endpoint: Endpoint,
    },
    /// Remove a sandbox: its namespace if netnat made it, else only the record.
    RemoveSandbox {
        name: String,
        created: bool,
    },
    /// Delete a network's bridge.
    RemoveNetwork {
        network: Network,
    },
    /// Create (or take over an existing) bridge with the gateway address, up, route_localnet.
    CreateBridge {
        network: Network,
    },
    /// The bridge exists but lacks its address, is down or lacks route_localnet.
    RepairBridge {
        network: Network,
    },
    CreateNamespace {
        sandbox: String,
    },
    /// The namespace exists and netnat did not make it: record it, leave it in place.
    AdoptNamespace {
        sandbox: String,
    },
    Connect {
        sandbox: String,
        network: Network,
        endpoint: Endpoint,
        default_route: bool,
    },
    /// Forwarding on for these keys (the old values are kept in the record for `reset`).
    EnableForwarding {
        keys: Vec<&'static str>,
    },
    /// No network left: put back the sysctls netnat changed.
    RestoreSysctls,
}

impl fmt::Display for LinkOp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LinkOp::Disconnect { sandbox, endpoint: e } => {
                write!(
                    f,
                    "disconnect {sandbox} from {} ({} {}, host side {})",
                    e.network,
                    e.ifname,
                    e.ips_text(),
                    e.host_ifname
                )
            }
            LinkOp::RemoveSandbox { name, created: true } => write!(f, "remove namespace {name}"),
            LinkOp::RemoveSandbox { name, created: false } => {
                write!(f, "forget sandbox {name} (its namespace is not netnat's and stays)")
            }
            LinkOp::RemoveNetwork { network: n } => write!(f, "remove bridge {} (network {})", n.bridge, n.name),
            LinkOp::CreateBridge { network: n } => {
                write!(f, "create bridge {} {}", n.bridge, gateways_text(n))?;
                if n.bridge != n.name {
                    write!(f, " (network {})", n.name)?;
                }
                Ok(())
            }
            LinkOp::RepairBridge { network: n } => {
                write!(f, "repair bridge {} {}", n.bridge, gateways_text(n))
            }
            LinkOp::CreateNamespace { sandbox } => write!(f, "create namespace {sandbox}"),
            LinkOp::AdoptNamespace { sandbox } => write!(f, "adopt namespace {sandbox}"),
            LinkOp::Connect { sandbox, network, endpoint: e, .. } => {
                write!(f, "connect {sandbox} to {} as {} {}", network.name, e.ifname, e.ips_text())
            }
            LinkOp::EnableForwarding { keys } => {
                let sets: Vec<String> = keys.iter().map(|k| format!("set sysctl {k} = 1")).collect();
                f.write_str(&sets.join(", "))
            }
            LinkOp::RestoreSysctls => write!(f, "restore sysctls netnat changed (no network left)"),
        }
    }
}

/// `172.16.1.254/16 fd00:16::1/64`: the bridge's addresses.
fn gateways_text(n: &Network) -> String {
    n.pools.iter().map(|p| format!("{}/{}", p.gateway, p.subnet.prefix)).collect::<Vec<_>>().join(" ")
}

/// The addresses a network's bridge carries: each gateway with its subnet's prefix length.
pub fn bridge_addrs(n: &Network) -> Vec<(IpAddr, u8)> {
    n.pools.iter().map(|p| (p.gateway, p.subnet.prefix)).collect()
}

/// Same bridge, subnets and gateways: the bridge and the endpoints on it can stay.
/// (masquerade, internal and the IPv6 mode are firewall-only.)
fn same_links(a: &Network, b: &Network) -> bool {
    a.bridge == b.bridge && a.pools == b.pools
}

/// Whether network `name`'s bridge goes away (dropped, or recreated with other settings).
fn replaced_net(target: &State, record: &State, name: &str) -> bool {
    match (record.networks.get(name), target.networks.get(name)) {
        (Some(old), Some(new)) => !same_links(old, new),
        (Some(_), None) => true,
        _ => false,
    }
}

/// Whether network `n`'s bridge is in place and stays.
fn bridge_ok(target: &State, record: &State, obs: &Observed, n: &Network) -> bool {
    obs.links.get(&n.bridge).is_some_and(|l| l.kind.as_deref() == Some("bridge"))
        && !replaced_net(target, record, &n.name)
        && record.networks.contains_key(&n.name)
}

/// The target's endpoints that are already in place, as (sandbox, network): kept as they are.
fn kept_endpoints(target: &State, record: &State, obs: &Observed) -> BTreeSet<(String, String)> {
    let veth_ok = |e: &Endpoint, net: &Network| {
        obs.links
            .get(&e.host_ifname)
            .is_some_and(|l| l.kind.as_deref() == Some("veth") && l.master.as_deref() == Some(net.bridge.as_str()))
    };
    let mut kept = BTreeSet::new();
    for (sname, sb) in &target.sandboxes {
        let Some(old) = record.sandboxes.get(sname) else { continue };
        for e in &sb.endpoints {
            let Some(net) = target.networks.get(&e.network) else { continue };
            let was = old.endpoints.iter().find(|o| o.network == e.network);
            if was == Some(e)
                && bridge_ok(target, record, obs, net)
                && obs.namespaces.contains(sname)
                && veth_ok(e, net)
            {
                kept.insert((sname.clone(), e.network.clone()));
            }
        }
    }
    kept
}

/// The link-level steps from `record` (what netnat made) to `target`, given what the kernel has.
/// Order: disconnects, sandbox removals, bridge removals, bridges, namespaces, connects, sysctls.
pub fn plan_links(target: &State, record: &State, obs: &Observed) -> Vec<LinkOp> {
    let kept = kept_endpoints(target, record, obs);
    let mut ops = disconnects(target, record, obs, &kept);
    // 2. Sandboxes the target no longer has.
    for (sname, sb) in &record.sandboxes {
        if !target.sandboxes.contains_key(sname) {
            ops.push(LinkOp::RemoveSandbox { name: sname.clone(), created: sb.created });
        }
    }
    // 3. Bridges of dropped or changed networks.
    for (name, n) in &record.networks {
        if replaced_net(target, record, name) {
            ops.push(LinkOp::RemoveNetwork { network: n.clone() });
        }
    }
    // 4. Bridges.
    for n in target.networks.values() {
        if !bridge_ok(target, record, obs, n) {
            ops.push(LinkOp::CreateBridge { network: n.clone() });
        } else {
            let l = &obs.links[&n.bridge];
            let localnet = obs.sysctls.get(&route_localnet_key(&n.bridge)).map(String::as_str);
            if !l.up || !bridge_addrs(n).iter().all(|a| l.addrs.contains(a)) || localnet != Some("1") {
                ops.push(LinkOp::RepairBridge { network: n.clone() });
            }
        }
    }
    // 5. Namespaces.
    for sname in target.sandboxes.keys() {
        if !obs.namespaces.contains(sname) {
            ops.push(LinkOp::CreateNamespace { sandbox: sname.clone() });
        } else if !record.sandboxes.contains_key(sname) {
            ops.push(LinkOp::AdoptNamespace { sandbox: sname.clone() });
        }
    }
    ops.extend(connects(target, &kept));
    // 7. Sysctls.
    let keys: Vec<&'static str> =
        forwarding_keys(target).into_iter().filter(|k| obs.sysctls.get(*k).map(String::as_str) != Some("1")).collect();
    if !keys.is_empty() {
        ops.push(LinkOp::EnableForwarding { keys });
    }
    if target.networks.is_empty() && !record.sysctls.is_empty() {
        ops.push(LinkOp::RestoreSysctls);
    }
    ops
}

/// Step 1: recorded endpoints that are not kept; and leftovers in the way of new ones.
fn disconnects(target: &State, record: &State, obs: &Observed, kept: &BTreeSet<(String, String)>) -> Vec<LinkOp> {
    let mut ops = vec![];
    for (sname, sb) in &record.sandboxes {
        for e in &sb.endpoints {
            // Also when its veth is gone already (e.g. the namespace was deleted): the record changes.
            if !kept.contains(&(sname.clone(), e.network.clone())) {
                ops.push(LinkOp::Disconnect { sandbox: sname.clone(), endpoint: e.clone() });
            }
        }
    }
    for (sname, sb) in &target.sandboxes {
        for e in &sb.endpoints {
            let recorded =
                record.sandboxes.get(sname).is_some_and(|o| o.endpoints.iter().any(|x| x.host_ifname == e.host_ifname));
            if !recorded && obs.links.contains_key(&e.host_ifname) {
                ops.push(LinkOp::Disconnect { sandbox: sname.clone(), endpoint: e.clone() });
            }
        }
    }
    ops
}

/// Step 6: endpoints. The first endpoint of a sandbox carries its default route, unless one of
/// its endpoints stays (and with it the route it has).
fn connects(target: &State, kept: &BTreeSet<(String, String)>) -> Vec<LinkOp> {
    let mut ops = vec![];
    for (sname, sb) in &target.sandboxes {
        let any_kept = sb.endpoints.iter().any(|e| kept.contains(&(sname.clone(), e.network.clone())));
        for (i, e) in sb.endpoints.iter().enumerate() {
            if kept.contains(&(sname.clone(), e.network.clone())) {
                continue;
            }
            let Some(net) = target.networks.get(&e.network) else { continue };
            ops.push(LinkOp::Connect {
                sandbox: sname.clone(),
                network: net.clone(),
                endpoint: e.clone(),
                default_route: i == 0 && !any_kept,
            });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{IP6_FORWARD, IP_FORWARD};
    use crate::model::{host_ifname, Sandbox};

    fn net(name: &str, subnet: &str, gw: &str) -> Network {
        crate::model::fixtures::net(name, &[subnet], &[gw])
    }
    fn ep(sb: &str, network: &str, ip: &str) -> Endpoint {
        Endpoint {
            network: network.into(),
            ips: vec![ip.parse().unwrap()],
            ifname: "eth0".into(),
            host_ifname: host_ifname(sb, network),
        }
    }
    fn demo() -> State {
        let mut s = State::default();
        s.networks.insert("MyDocker0".into(), net("MyDocker0", "172.16.0.0/16", "172.16.1.254"));
        for (n, ip) in [("Container_ns1", "172.16.1.1"), ("Container_ns2", "172.16.1.2")] {
            s.sandboxes
                .insert(n.into(), Sandbox { name: n.into(), created: true, endpoints: vec![ep(n, "MyDocker0", ip)] });
        }
        s
    }
    /// What the kernel has once `st` is fully applied.
    fn observed(st: &State) -> Observed {
        let mut o = Observed::default();
        for n in st.networks.values() {
            o.links.insert(
                n.bridge.clone(),
                ObservedLink { kind: Some("bridge".into()), up: true, master: None, addrs: bridge_addrs(n) },
            );
            o.sysctls.insert(route_localnet_key(&n.bridge), "1".into());
        }
        for s in st.sandboxes.values() {
            o.namespaces.insert(s.name.clone());
            for e in &s.endpoints {
                let master = Some(st.networks[&e.network].bridge.clone());
                o.links.insert(
                    e.host_ifname.clone(),
                    ObservedLink { kind: Some("veth".into()), up: true, master, addrs: vec![] },
                );
            }
        }
        o.sysctls.insert(IP_FORWARD.into(), "1".into());
        o.sysctls.insert(IP6_FORWARD.into(), "1".into());
        o
    }
    fn text(ops: &[LinkOp]) -> Vec<String> {
        ops.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn empty_kernel_gets_everything_in_order() {
        let mut o = Observed::default();
        o.sysctls.insert(IP_FORWARD.into(), "0".into());
        assert_eq!(
            text(&plan_links(&demo(), &State::default(), &o)),
            vec![
                "create bridge MyDocker0 172.16.1.254/16",
                "create namespace Container_ns1",
                "create namespace Container_ns2",
                "connect Container_ns1 to MyDocker0 as eth0 172.16.1.1",
                "connect Container_ns2 to MyDocker0 as eth0 172.16.1.2",
                "set sysctl net/ipv4/ip_forward = 1",
            ]
        );
    }

    #[test]
    fn applied_state_plans_nothing() {
        let st = demo();
        assert_eq!(plan_links(&st, &st, &observed(&st)), vec![]);
    }

    #[test]
    fn changed_address_replaces_only_that_endpoint() {
        let rec = demo();
        let mut want = demo();
        want.sandboxes.get_mut("Container_ns2").unwrap().endpoints[0].ips = vec!["172.16.1.9".parse().unwrap()];
        let ops = plan_links(&want, &rec, &observed(&rec));
        let t = text(&ops);
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t[0].starts_with("disconnect Container_ns2 from MyDocker0 (eth0 172.16.1.2"));
        assert_eq!(t[1], "connect Container_ns2 to MyDocker0 as eth0 172.16.1.9");
        assert!(matches!(ops[1], LinkOp::Connect { default_route: true, .. }));
    }

    #[test]
    fn dropped_sandbox_and_network_are_removed() {
        let rec = demo();
        let mut want = demo();
        want.sandboxes.remove("Container_ns2");
        assert_eq!(
            text(&plan_links(&want, &rec, &observed(&rec)))[1..],
            ["remove namespace Container_ns2".to_string()]
        );
        let empty = State { sysctls: [(IP_FORWARD.to_string(), "0".to_string())].into(), ..State::default() };
        let mut rec2 = rec.clone();
        rec2.sysctls = empty.sysctls.clone();
        let t = text(&plan_links(&State::default(), &rec2, &observed(&rec)));
        assert_eq!(t.last().unwrap(), "restore sysctls netnat changed (no network left)");
        assert!(t.contains(&"remove bridge MyDocker0 (network MyDocker0)".to_string()));
    }

    #[test]
    fn kernel_drift_is_repaired() {
        let st = demo();
        let mut o = observed(&st);
        // Bridge lost its address, a veth vanished, a namespace vanished.
        o.links.get_mut("MyDocker0").unwrap().addrs.clear();
        o.links.remove(&host_ifname("Container_ns1", "MyDocker0"));
        o.namespaces.remove("Container_ns2");
        o.links.remove(&host_ifname("Container_ns2", "MyDocker0"));
        let t = text(&plan_links(&st, &st, &o));
        assert_eq!(t.len(), 6, "{t:?}");
        assert!(t[0].starts_with("disconnect Container_ns1") && t[1].starts_with("disconnect Container_ns2"));
        assert_eq!(t[2], "repair bridge MyDocker0 172.16.1.254/16");
        assert_eq!(t[3], "create namespace Container_ns2");
        assert_eq!(t[4], "connect Container_ns1 to MyDocker0 as eth0 172.16.1.1");
    }

    #[test]
    fn changed_subnet_recreates_bridge_and_endpoints_and_existing_namespace_is_adopted() {
        let rec = demo();
        let mut want = demo();
        want.networks.get_mut("MyDocker0").unwrap().pools[0].gateway = "172.16.0.1".parse().unwrap();
        want.sandboxes.insert("Other".into(), Sandbox { name: "Other".into(), created: true, endpoints: vec![] });
        let mut o = observed(&rec);
        o.namespaces.insert("Other".into());
        let t = text(&plan_links(&want, &rec, &o));
        assert_eq!(t.iter().filter(|l| l.starts_with("disconnect")).count(), 2, "{t:?}");
        assert!(t.contains(&"remove bridge MyDocker0 (network MyDocker0)".into()));
        assert!(t.contains(&"create bridge MyDocker0 172.16.0.1/16".into()));
        assert!(t.contains(&"adopt namespace Other".into()));
        assert_eq!(t.iter().filter(|l| l.starts_with("connect")).count(), 2);
        // masquerade is firewall-only: no link change.
        let mut m = demo();
        m.networks.get_mut("MyDocker0").unwrap().masquerade = false;
        assert_eq!(plan_links(&m, &rec, &observed(&rec)), vec![]);
    }

    #[test]
    fn ipv6_subnet_goes_on_the_bridge_and_turns_ipv6_forwarding_on() {
        let rec = demo();
        let mut want = demo();
        want.networks.insert("v6".into(), crate::model::fixtures::net("v6", &["172.17.0.0/16", "fd00:17::/64"], &[]));
        let mut o = observed(&rec);
        o.sysctls.insert(IP6_FORWARD.into(), "0".into());
        let t = text(&plan_links(&want, &rec, &o));
        assert_eq!(t, ["create bridge v6 172.17.0.1/16 fd00:17::1/64", "set sysctl net/ipv6/conf/all/forwarding = 1"]);
    }
}
