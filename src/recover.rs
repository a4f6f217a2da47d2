//! Rebuilding netnat's record from the kernel alone (pure): for `netnat recover`, for `reset`,
//! and for the read-only commands when the record cannot be read.
//!
//! What the kernel holds of netnat's, and so what can be rebuilt:
//! - bridges carry the alias `netnat:network=NAME`; their global address of each family is that
//!   family's gateway, its prefix the subnet's;
//! - host ends of endpoint veths carry `netnat:endpoint=NETWORK/SANDBOX`; the peer inside the
//!   sandbox gives the interface name and address;
//! - namespaces netnat created carry `netnat:sandbox=NAME` as the alias of their `lo` (and a mark
//!   file under the state directory, while it exists);
//! - table `inet netnat`: its map elements are the published ports, and each network's rules
//!   tell whether it is internal and whether it masquerades.
//!
//! Not in the kernel: the value a sysctl had before netnat changed it, which adopted namespace
//! without an endpoint was a sandbox, and where one published range ended and an adjacent one
//! began. `Recovered::lost` says which of these applied.

use crate::model::{
    check_name, ip_bits, ip_from_bits, Counting, Endpoint, Family, IfName, Ipv6Mode, Mapping, Network, Pool, Proto,
    Sandbox, State, Subnet,
};
use crate::nft::LiveTable;
use crate::ruleset::{desired_rules, mapping_elems, FAMILIES, ROUTED6, TABLE};
use std::net::IpAddr;

const PREFIX: &str = "netnat:";

pub fn network_alias(network: &str) -> String {
    format!("{PREFIX}network={network}")
}
pub fn endpoint_alias(network: &str, sandbox: &str) -> String {
    format!("{PREFIX}endpoint={network}/{sandbox}")
}
pub fn sandbox_alias(sandbox: &str) -> String {
    format!("{PREFIX}sandbox={sandbox}")
}

/// What one of netnat's aliases says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    Network(String),
    Endpoint { network: String, sandbox: String },
    Sandbox(String),
}

/// Reads an alias netnat set; None for any other alias (names are checked: '/' cannot occur).
pub fn parse_alias(alias: &str) -> Option<Mark> {
    let rest = alias.strip_prefix(PREFIX)?;
    let ok = |n: &str| check_name(n, "name").is_ok();
    if let Some(n) = rest.strip_prefix("network=") {
        return ok(n).then(|| Mark::Network(n.into()));
    }
    if let Some(n) = rest.strip_prefix("sandbox=") {
        return ok(n).then(|| Mark::Sandbox(n.into()));
    }
    let (network, sandbox) = rest.strip_prefix("endpoint=")?.split_once('/')?;
    (ok(network) && ok(sandbox)).then(|| Mark::Endpoint { network: network.into(), sandbox: sandbox.into() })
}

/// A bridge with netnat's network alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSeen {
    pub network: String,
    pub name: String,
    pub addrs: Vec<(IpAddr, u8)>,
}

/// A host-side veth with netnat's endpoint alias, and its peer when it was found in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSeen {
    pub name: String,
    pub network: String,
    pub sandbox: String,
    pub peer: Option<PeerSeen>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeen {
    pub ifname: String,
    pub addrs: Vec<(IpAddr, u8)>,
}

/// What the kernel holds of netnat's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    pub bridges: Vec<BridgeSeen>,
    pub veths: Vec<VethSeen>,
    /// Namespaces netnat created (lo alias or mark file).
    pub made_namespaces: Vec<String>,
    /// Table `inet netnat` (with its elements when they were read).
    pub table: Option<LiveTable>,
    /// net/ipv4/ip_forward as it is now.
    pub ip_forward: Option<String>,
}

impl KernelView {
    /// Nothing of netnat's is in the kernel.
    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty() && self.veths.is_empty() && self.made_namespaces.is_empty() && self.table.is_none()
    }
}

/// The rebuilt record, and what of the old one the kernel could not tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub state: State,
    pub lost: Vec<String>,
}

pub fn rebuild(k: &KernelView) -> Recovered {
    let mut st = State::default();
    let mut lost = vec![];
    if k.table.is_none() {
        lost.push(format!(
            "table inet {TABLE} is missing: no published port could be recovered, and every network is taken as \
             masquerading and not internal (`netnat reload` re-creates the table)"
        ));
    }
    for b in &k.bridges {
        if let Some(net) = network_of(b, k.table.as_ref(), &mut lost) {
            st.networks.insert(net.name.clone(), net);
        }
    }
    for name in &k.made_namespaces {
        st.sandboxes.insert(name.clone(), Sandbox { name: name.clone(), created: true, endpoints: vec![] });
    }
    for v in &k.veths {
        let Some(ep) = endpoint_of(v, &st, &mut lost) else { continue };
        // A namespace with netnat's endpoint but without its sandbox mark was adopted.
        st.sandboxes
            .entry(v.sandbox.clone())
            .or_insert_with(|| Sandbox { name: v.sandbox.clone(), created: false, endpoints: vec![] })
            .endpoints
            .push(ep);
    }
    for sb in st.sandboxes.values_mut() {
        // eth0 before eth1 before eth10: the order netnat gives them, first one = default route.
        sb.endpoints.sort_by_key(|e| natural_key(&e.ifname));
    }
    if let Some(t) = &k.table {
        mappings_from_table(t, &mut st, &mut lost);
        st.counting = counting_of(t);
    }
    if !st.networks.is_empty() && k.ip_forward.as_deref() == Some("1") {
        lost.push(
            "the value net.ipv4.ip_forward had before netnat turned it on is not in the kernel: `netnat reset` will \
             leave it on"
                .into(),
        );
    }
    Recovered { state: st, lost }
}

/// Packet counting is on when the forward chain has its counting rule.
fn counting_of(t: &LiveTable) -> Counting {
    let st = State { counting: Counting::Packets, ..State::default() };
    let counts =
        desired_rules(&st).into_iter().find(|r| r.chain == "forward").expect("packet counting has forward rules");
    match t.rules.iter().any(|r| r.chain == "forward" && r.exprs == counts.exprs) {
        true => Counting::Packets,
        false => Counting::Connections,
    }
}

/// A marked bridge as a network: its pools from its addresses, its options from its rules in
/// `table`; None (and why in `lost`) when its addresses do not say its subnet.
fn network_of(b: &BridgeSeen, table: Option<&LiveTable>, lost: &mut Vec<String>) -> Option<Network> {
    let pools: Vec<Pool> = Family::ALL
        .into_iter()
        .filter_map(|fam| b.addrs.iter().find(|(a, _)| Family::of(*a) == fam && !is_link_local(*a)))
        .map(|&(gateway, prefix)| Pool { subnet: subnet_of(gateway, prefix), gateway })
        .collect();
    if pools.is_empty() {
        lost.push(format!(
            "network {}: bridge {} has no address, so its subnet is unknown; not recovered (`netnat reset` \
             removes the bridge)",
            b.network, b.name
        ));
        return None;
    }
    let net = Network {
        name: b.network.clone(),
        pools,
        bridge: b.name.clone(),
        masquerade: true,
        internal: false,
        ipv6_mode: Ipv6Mode::Nat,
        host_firewall: crate::model::HostFirewallMode::Auto,
        owner: None,
    };
    Some(match table.map(|t| with_options(&net, t)) {
        Some(Some(n)) => {
            if n.internal {
                lost.push(format!(
                    "network {}: it is internal, so whether it would masquerade otherwise is not in the kernel; \
                     taken as yes",
                    n.name
                ));
            }
            n
        }
        Some(None) => {
            lost.push(format!(
                "network {}: its rules in table inet {TABLE} are not netnat's; taken as masquerading and not \
                 internal",
                net.name
            ));
            net
        }
        None => net,
    })
}

/// A marked veth as an endpoint of a recovered network; None (and why in `lost`) when its
/// network, its peer or an address per pool is missing.
fn endpoint_of(v: &VethSeen, st: &State, lost: &mut Vec<String>) -> Option<Endpoint> {
    let Some(net) = st.networks.get(&v.network) else {
        lost.push(format!(
            "endpoint of sandbox {} on network {} (veth {}): the network was not recovered",
            v.sandbox, v.network, v.name
        ));
        return None;
    };
    let Some(peer) = &v.peer else {
        lost.push(format!(
            "endpoint of sandbox {} on network {} (veth {}): its peer in /run/netns/{} was not found",
            v.sandbox, v.network, v.name, v.sandbox
        ));
        return None;
    };
    let ips: Vec<IpAddr> =
        net.pools.iter().filter_map(|p| peer.addrs.iter().map(|(a, _)| *a).find(|a| p.subnet.contains(*a))).collect();
    if ips.len() != net.pools.len() {
        lost.push(format!(
            "endpoint of sandbox {} on network {}: {} lacks an address in {}",
            v.sandbox,
            v.network,
            peer.ifname,
            net.subnets_text()
        ));
        return None;
    }
    Some(Endpoint { network: v.network.clone(), ips, ifname: peer.ifname.clone(), host_ifname: v.name.clone() })
}

/// The published ports of table `t` into `st`, with what the kernel cannot tell of them.
fn mappings_from_table(t: &LiveTable, st: &mut State, lost: &mut Vec<String>) {
    let (maps, bad) = mappings(t, st);
    st.mappings = maps;
    if bad > 0 {
        lost.push(format!("{bad} element(s) of table inet {TABLE}'s port maps are not netnat's layout; skipped"));
    }
    let outside = st.mappings.iter().filter(|m| st.network_of(m.container_ip).is_none()).count();
    if outside > 0 {
        lost.push(format!(
            "{outside} published port(s) go to addresses in no netnat network: if CNI containers published them, \
             which container owns each is not in the kernel; they come back as ports of the CLI (unpublish them \
             once their containers are gone)"
        ));
    }
    if st.allow.is_empty() && t.elems.iter().any(|(set, es)| set.starts_with("allow_") && !es.is_empty()) {
        lost.push(
            "allow lists (publish --allow): their ports come back open to every source; publish them again with \
             --allow"
                .into(),
        );
    }
    if st.mappings.windows(2).any(|w| adjacent(&w[0], &w[1])) || st.mappings.iter().any(|m| m.len() > 1) {
        lost.push(
            "published port ranges: adjacent ports to adjacent container ports are recovered as one range \
             (the kernel holds ports, not how they were grouped)"
                .into(),
        );
    }
}

/// The network with the options whose rules are exactly the ones table `t` has for it (the
/// rules whose comment starts with "NAME: "), or None when no combination matches.
fn with_options(n: &Network, t: &LiveTable) -> Option<Network> {
    let prefix = format!("{}: ", n.name);
    let mine = |c: Option<&str>| c.is_some_and(|c| c.starts_with(&prefix));
    let live: Vec<_> =
        t.rules.iter().filter(|r| mine(r.comment.as_deref())).map(|r| (&r.exprs, r.comment.as_deref())).collect();
    let modes: &[Ipv6Mode] = if n.has_v6() { &[Ipv6Mode::Nat, Ipv6Mode::Routed] } else { &[Ipv6Mode::Nat] };
    let options = [(true, false), (false, false), (true, true)];
    let candidates = options.iter().flat_map(|o| modes.iter().map(move |m| (*o, *m)));
    candidates.into_iter().find_map(|((masquerade, internal), ipv6_mode)| {
        let cand = Network { masquerade, internal, ipv6_mode, ..n.clone() };
        let st = State { networks: [(n.name.clone(), cand.clone())].into(), ..State::default() };
        let want: Vec<_> = desired_rules(&st).into_iter().filter(|r| mine(Some(&r.comment))).collect();
        let same = want.len() == live.len()
            && want.iter().all(|w| live.iter().any(|(e, c)| **e == w.exprs && *c == Some(w.comment.as_str())));
        same.then_some(cand)
    })
}

/// Published ports from the NAT maps of both families and the routed set: one mapping per
/// element, checked by rebuilding its bytes, then consecutive ports to consecutive container
/// ports merged into ranges. Also the number of elements that were not netnat's. `st` holds the
/// recovered networks (which are IPv6-routed).
fn mappings(t: &LiveTable, st: &State) -> (Vec<Mapping>, usize) {
    let mut singles = vec![];
    let mut bad = 0;
    for f in &FAMILIES {
        for (map, host) in [(f.map_any, HostKey::Any), (f.map_addr, HostKey::Addr), (f.map_if, HostKey::If)] {
            for e in t.elems.get(map).into_iter().flatten() {
                match single(&e.key, &e.data, host, f.family) {
                    Some(m)
                        if mapping_elems(&m, false, &[], Counting::Connections)
                            .iter()
                            .any(|x| *x == (map, e.key.clone(), e.data.clone())) =>
                    {
                        singles.push(m)
                    }
                    _ => bad += 1,
                }
            }
        }
    }
    // A routed mapping's host port is not used by the kernel: it comes back as the container port.
    for e in t.elems.get(ROUTED6).into_iter().flatten() {
        match routed_single(&e.key) {
            Some(m)
                if st.is_routed(&m)
                    && mapping_elems(&m, true, &[], Counting::Connections)
                        == vec![(ROUTED6, e.key.clone(), vec![])] =>
            {
                singles.push(m)
            }
            _ => bad += 1,
        }
    }
    singles.sort();
    let mut out: Vec<Mapping> = vec![];
    for m in singles {
        match out.last_mut() {
            Some(last) if adjacent(last, &m) => {
                last.host_port_end = m.host_port;
                last.container_port_end = m.container_port;
            }
            _ => out.push(m),
        }
    }
    (out, bad)
}

/// `b` continues `a`: same protocol, host address and container, next host and container port.
fn adjacent(a: &Mapping, b: &Mapping) -> bool {
    a.protocol == b.protocol
        && a.host_ip == b.host_ip
        && a.host_if == b.host_if
        && a.container_ip == b.container_ip
        && a.host_port_end.checked_add(1) == Some(b.host_port)
        && a.container_port_end.checked_add(1) == Some(b.container_port)
}

/// An address of `family` at the start of `b`, and the rest.
fn addr_at(b: &[u8], family: Family) -> Option<(IpAddr, &[u8])> {
    let len = (family.bits() / 8) as usize;
    let bytes = b.get(..len)?;
    let ip = match family {
        Family::V4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        Family::V6 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
    };
    Some((ip, &b[len..]))
}

/// One element's mapping: key `[ip .] proto . port`, data `ip . port`, each padded to 4 bytes.
/// What a NAT map's key starts with.
#[derive(Clone, Copy)]
enum HostKey {
    Any,
    Addr,
    If,
}

fn single(key: &[u8], data: &[u8], host: HostKey, family: Family) -> Option<Mapping> {
    let (host_ip, host_if, rest) = match host {
        HostKey::Any => (None, None, key),
        HostKey::Addr => {
            let (ip, rest) = addr_at(key, family)?;
            (Some(ip), None, rest)
        }
        HostKey::If => {
            let name = key.get(..16)?;
            let n = name.iter().position(|c| *c == 0).unwrap_or(16);
            (None, Some(IfName::new(std::str::from_utf8(&name[..n]).ok()?).ok()?), &key[16..])
        }
    };
    let protocol = Proto::from_number(*rest.first()?)?;
    let host_port = u16::from_be_bytes([*rest.get(4)?, *rest.get(5)?]);
    let (container_ip, port) = addr_at(data, family)?;
    let container_port = u16::from_be_bytes([*port.first()?, *port.get(1)?]);
    Some(Mapping {
        protocol,
        host_ip,
        host_if,
        host_port,
        host_port_end: host_port,
        container_ip,
        container_port,
        container_port_end: container_port,
    })
}

/// A `routed6` element: `ip6 . proto . port` of the container.
fn routed_single(key: &[u8]) -> Option<Mapping> {
    let (container_ip, rest) = addr_at(key, Family::V6)?;
    let protocol = Proto::from_number(*rest.first()?)?;
    let port = u16::from_be_bytes([*rest.get(4)?, *rest.get(5)?]);
    Some(Mapping {
        protocol,
        host_ip: None,
        host_if: None,
        host_port: port,
        host_port_end: port,
        container_ip,
        container_port: port,
        container_port_end: port,
    })
}

fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

/// The subnet of `prefix` bits that holds `ip`.
fn subnet_of(ip: IpAddr, prefix: u8) -> Subnet {
    let fam = Family::of(ip);
    let host_bits = fam.bits() - prefix as u32;
    let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
    Subnet { addr: ip_from_bits(fam, ip_bits(ip) & mask), prefix }
}

/// Sorts names with their trailing number as a number: eth2 before eth10.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem.to_string(), num.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::host_ifname;
    use crate::ruleset::desired;

    /// The table netnat programs for `st`, as the kernel would report it.
    fn table_of(st: &State) -> LiveTable {
        crate::ruleset::fake::live_after(&desired(st), 0, 0)
    }

    /// What the kernel holds once `st` is applied.
    fn view_of(st: &State) -> KernelView {
        KernelView {
            bridges: st
                .networks
                .values()
                .map(|n| BridgeSeen {
                    network: n.name.clone(),
                    name: n.bridge.clone(),
                    // The kernel adds a link-local address of its own to every bridge.
                    addrs: n
                        .pools
                        .iter()
                        .map(|p| (p.gateway, p.subnet.prefix))
                        .chain([("fe80::1".parse().unwrap(), 64)])
                        .collect(),
                })
                .collect(),
            veths: st
                .sandboxes
                .values()
                .flat_map(|s| {
                    s.endpoints.iter().map(|e| VethSeen {
                        name: e.host_ifname.clone(),
                        network: e.network.clone(),
                        sandbox: s.name.clone(),
                        peer: Some(PeerSeen {
                            ifname: e.ifname.clone(),
                            addrs: e.ips.iter().map(|ip| (*ip, 16)).collect(),
                        }),
                    })
                })
                .collect(),
            made_namespaces: st.sandboxes.values().filter(|s| s.created).map(|s| s.name.clone()).collect(),
            table: Some(table_of(st)),
            ip_forward: Some("1".into()),
        }
    }

    fn demo() -> State {
        let mut st = crate::model::fixtures::seed_state(&host_ifname("ns1", "MyDocker0"));
        let mut other = Network::new("iso", &["10.9.0.0/24".parse().unwrap()], &[], Some("br-iso")).unwrap();
        other.internal = true;
        st.networks.insert("iso".into(), other);
        let mut nomasq = Network::new("quiet", &["10.8.0.0/24".parse().unwrap()], &[], None).unwrap();
        nomasq.masquerade = false;
        st.networks.insert("quiet".into(), nomasq);
        let mut routed = crate::model::fixtures::net("r6", &["10.7.0.0/24", "2001:db8:7::/64"], &[]);
        routed.ipv6_mode = Ipv6Mode::Routed;
        st.networks.insert("r6".into(), routed);
        let dual = crate::model::fixtures::net("dual", &["10.6.0.0/24", "fd00:6::/64"], &["10.6.0.9"]);
        st.networks.insert("dual".into(), dual);
        let ep = |net: &str, ip: &str, ifname: &str| Endpoint {
            network: net.into(),
            ips: ip.split(' ').map(|i| i.parse().unwrap()).collect(),
            ifname: ifname.into(),
            host_ifname: host_ifname("adopted", net),
        };
        st.sandboxes.insert(
            "adopted".into(),
            Sandbox {
                name: "adopted".into(),
                created: false,
                endpoints: vec![
                    ep("MyDocker0", "172.16.1.7", "eth0"),
                    ep("quiet", "10.8.0.2", "eth1"),
                    ep("r6", "10.7.0.2 2001:db8:7::2", "eth2"),
                    ep("dual", "10.6.0.2 fd00:6::2", "eth3"),
                ],
            },
        );
        st.sandboxes.insert("empty".into(), Sandbox { name: "empty".into(), created: true, endpoints: vec![] });
        for m in [
            "8080:172.16.1.1:80",
            "20000-20999:172.16.1.1:20000-20999",
            "127.0.0.1:5353:172.16.1.7:53/udp",
            "8080:[fd00:6::2]:80",
            "[2001:db8:1::1]:8081:[fd00:6::2]:81/udp",
            "443:[2001:db8:7::2]:443",
        ] {
            st.mappings.push(m.parse().unwrap());
        }
        st.mappings.sort();
        st
    }

    #[test]
    fn aliases_round_trip_and_others_are_ignored() {
        assert_eq!(parse_alias(&network_alias("MyDocker0")), Some(Mark::Network("MyDocker0".into())));
        assert_eq!(
            parse_alias(&endpoint_alias("n.1", "s-2")),
            Some(Mark::Endpoint { network: "n.1".into(), sandbox: "s-2".into() })
        );
        assert_eq!(parse_alias(&sandbox_alias("ns1")), Some(Mark::Sandbox("ns1".into())));
        for other in ["uplink", "netnat:", "netnat:network=", "netnat:network=a b", "netnat:endpoint=a", "x netnat:"] {
            assert_eq!(parse_alias(other), None, "{other}");
        }
    }

    #[test]
    fn everything_the_kernel_holds_is_rebuilt() {
        let st = demo();
        let r = rebuild(&view_of(&st));
        assert_eq!(r.state.networks, st.networks);
        assert_eq!(r.state.sandboxes, st.sandboxes);
        assert_eq!(r.state.mappings, st.mappings);
        // The rebuilt record programs exactly the same table.
        assert_eq!(desired(&r.state), desired(&st));
        let lost = r.lost.join("\n");
        assert!(lost.contains("network iso: it is internal"), "{lost}");
        assert!(lost.contains("ip_forward"), "{lost}");
        assert!(lost.contains("adjacent ports"), "{lost}");
        assert!(!lost.contains("missing"), "{lost}");
    }

    #[test]
    fn adjacent_single_ports_merge_into_one_range() {
        let mut st = State {
            mappings: vec!["8000:10.0.0.2:80".parse().unwrap(), "8001:10.0.0.2:81".parse().unwrap()],
            ..State::default()
        };
        let got = rebuild(&KernelView { table: Some(table_of(&st)), ..KernelView::default() });
        assert_eq!(got.state.mappings, vec!["8000-8001:10.0.0.2:80-81".parse::<Mapping>().unwrap()]);
        // Not adjacent in the container: two mappings.
        st.mappings = vec!["8000:10.0.0.2:80".parse().unwrap(), "8001:10.0.0.3:81".parse().unwrap()];
        assert_eq!(
            rebuild(&KernelView { table: Some(table_of(&st)), ..KernelView::default() }).state.mappings.len(),
            2
        );
    }

    #[test]
    fn what_is_missing_is_said() {
        let st = demo();
        let mut k = view_of(&st);
        k.table = None;
        k.bridges.retain(|b| b.network != "quiet");
        k.veths[0].peer = None;
        let r = rebuild(&k);
        let lost = r.lost.join("\n");
        assert!(lost.contains("table inet netnat is missing"), "{lost}");
        assert!(lost.contains("on network quiet") && lost.contains("network was not recovered"), "{lost}");
        assert!(lost.contains("its peer in /run/netns/"), "{lost}");
        assert!(r.state.mappings.is_empty());
        // Without the table, options are the defaults.
        assert!(!r.state.networks["iso"].internal);
        // A bridge without an address cannot give its subnet.
        let mut k = view_of(&st);
        k.bridges[0].addrs.clear();
        assert!(rebuild(&k).lost.join("\n").contains("has no address"));
        // Nothing of netnat's: nothing to say but that the table is not there.
        assert!(KernelView::default().is_empty());
    }

    #[test]
    fn natural_order_of_interface_names() {
        let mut v = vec!["eth10", "eth2", "eth0", "a"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["a", "eth0", "eth2", "eth10"]);
    }
}
