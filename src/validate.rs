//! One validation of a whole desired state (pure): what must hold across networks, endpoints
//! and published ports, whichever front door built the state. `apply --check` and `apply` run it
//! on the file's state (the file reader puts line numbers on what it finds), `connect` and
//! `publish` on the state they are about to make. Each object is checked alone where it is
//! parsed (`model`); this is the part that needs the others.

use crate::model::{allow_for, held_by_both, Family, InputError, State};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What a violation is about, so a reader of a file can point at the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A network's subnets.
    Network(String),
    /// A network's bridge name.
    Bridge(String),
    /// The endpoint at this position in the sandbox's list.
    Endpoint { sandbox: String, index: usize },
    /// The endpoint's interface name.
    Interface { sandbox: String, index: usize },
    /// The mapping at this position in `State::mappings`.
    Mapping(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub subject: Subject,
    /// The object it clashes with (defined earlier), if any.
    pub other: Option<Subject>,
    pub message: String,
}

/// Every violation, in the order of the objects (networks, sandboxes, mappings).
pub fn check(state: &State) -> Vec<Violation> {
    let mut out = vec![];
    networks(state, &mut out);
    endpoints(state, &mut out);
    mappings(state, &mut out);
    out
}

/// The first violation as an input error (exit 2), `hint` appended.
pub fn ensure(state: &State, hint: &str) -> Result<(), InputError> {
    match check(state).into_iter().next() {
        None => Ok(()),
        Some(v) if hint.is_empty() => Err(InputError(v.message)),
        Some(v) => Err(InputError(format!("{}; {hint}", v.message))),
    }
}

fn networks(state: &State, out: &mut Vec<Violation>) {
    let nets: Vec<_> = state.networks.values().collect();
    for (i, n) in nets.iter().enumerate() {
        for o in &nets[..i] {
            for (a, b) in n.pools.iter().flat_map(|a| o.pools.iter().map(move |b| (a, b))) {
                if a.subnet.overlaps(&b.subnet) {
                    out.push(Violation {
                        subject: Subject::Network(n.name.clone()),
                        other: Some(Subject::Network(o.name.clone())),
                        message: format!(
                            "subnet {} of network {} overlaps subnet {} of network {}",
                            a.subnet, n.name, b.subnet, o.name
                        ),
                    });
                }
            }
            if o.bridge == n.bridge {
                out.push(Violation {
                    subject: Subject::Bridge(n.name.clone()),
                    other: Some(Subject::Bridge(o.name.clone())),
                    message: format!(
                        "bridge {} of network {} is also the bridge of network {}",
                        n.bridge, n.name, o.name
                    ),
                });
            }
        }
    }
}

fn endpoints(state: &State, out: &mut Vec<Violation>) {
    // (network, address) -> the endpoint that holds it first.
    let mut held: BTreeMap<(&str, IpAddr), (&str, usize)> = BTreeMap::new();
    for s in state.sandboxes.values() {
        let sb = s.name.as_str();
        let at = |index: usize| Subject::Endpoint { sandbox: sb.into(), index };
        for (i, e) in s.endpoints.iter().enumerate() {
            if let Some(first) = s.endpoints[..i].iter().position(|x| x.ifname == e.ifname) {
                out.push(Violation {
                    subject: Subject::Interface { sandbox: sb.into(), index: i },
                    other: Some(Subject::Interface { sandbox: sb.into(), index: first }),
                    message: format!("sandbox {sb} has two interfaces named {}", e.ifname),
                });
            }
            let mut bad =
                |message: String, other: Option<Subject>| out.push(Violation { subject: at(i), other, message });
            if let Some(first) = s.endpoints[..i].iter().position(|x| x.network == e.network) {
                bad(format!("sandbox {sb} is connected to network {} twice", e.network), Some(at(first)));
            }
            let Some(net) = state.networks.get(&e.network) else {
                bad(format!("sandbox {sb}: no network named {}", e.network), None);
                continue;
            };
            for (k, ip) in e.ips.iter().enumerate() {
                let fam = Family::of(*ip);
                if e.ips[..k].iter().any(|o| Family::of(*o) == fam) {
                    bad(format!("sandbox {sb}: two {fam} addresses for one endpoint"), None);
                    continue;
                }
                // Alone (no other endpoint): the address must fit the network.
                if let Err(err) = State::default().check_endpoint_ip(net, *ip, sb) {
                    bad(format!("sandbox {sb}: {}", err.0), None);
                    continue;
                }
                if let Some((other, oi)) = held.insert((e.network.as_str(), *ip), (sb, i)) {
                    bad(
                        held_by_both(*ip, &e.network, other, sb),
                        Some(Subject::Endpoint { sandbox: other.into(), index: oi }),
                    );
                }
            }
        }
    }
}

/// For each mapping, the first one before it (in record order) that competes for its host port.
/// A sweep over the mappings sorted by host port: only neighbours whose ranges overlap are
/// compared, so 10,000 mappings cost a sort, not 50 million comparisons.
fn first_conflicts(ms: &[crate::model::Mapping]) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by_key(|&i| (ms[i].family(), ms[i].protocol, ms[i].host_port));
    let mut first: Vec<Option<usize>> = vec![None; ms.len()];
    let mut open: Vec<usize> = vec![];
    for &i in &order {
        let a = &ms[i];
        let same_group = |b: &crate::model::Mapping| b.family() == a.family() && b.protocol == a.protocol;
        open.retain(|&j| same_group(&ms[j]) && ms[j].host_port_end >= a.host_port);
        for &j in &open {
            if a.conflicts_with(&ms[j]) {
                let (late, early) = if i > j { (i, j) } else { (j, i) };
                first[late] = Some(first[late].map_or(early, |f| f.min(early)));
            }
        }
        open.push(i);
    }
    first
}

fn mappings(state: &State, out: &mut Vec<Violation>) {
    let ms = &state.mappings;
    for (i, j) in first_conflicts(ms).into_iter().enumerate() {
        if let Some(j) = j {
            out.push(Violation {
                subject: Subject::Mapping(i),
                other: Some(Subject::Mapping(j)),
                message: port_taken(&ms[i], &ms[j]),
            });
        }
    }
    let mut index: std::collections::HashMap<&crate::model::Mapping, usize> = std::collections::HashMap::new();
    for (i, m) in ms.iter().enumerate() {
        index.entry(m).or_insert(i);
    }
    let mut listed = std::collections::HashSet::new();
    for a in &state.allow {
        let Some(&i) = index.get(&a.mapping) else {
            out.push(Violation {
                subject: Subject::Mapping(usize::MAX),
                other: None,
                message: format!("the allow list of {} names no published mapping", a.mapping),
            });
            continue;
        };
        let bad = |message: String| Violation { subject: Subject::Mapping(i), other: None, message };
        if !listed.insert(a.mapping) {
            out.push(bad(format!("{} has two allow lists", a.mapping)));
        }
        if a.mapping.host_if.is_some() {
            out.push(bad(format!(
                "{} is bound to an interface: allow lists apply to ports published on addresses",
                a.mapping
            )));
            continue;
        }
        match allow_for(&a.mapping, &a.from) {
            Err(e) => out.push(bad(e.0)),
            Ok(mine) if mine.len() != a.from.len() => {
                out.push(bad(format!("the allow list of {} has sources of another family", a.mapping)))
            }
            Ok(_) if state.is_routed(&a.mapping) => out.push(bad(format!(
                "{} goes to an IPv6-routed network: allow lists apply to translated ports only",
                a.mapping
            ))),
            Ok(_) => {}
        }
    }
}

/// The message for a host port two mappings claim (`b` the one that has it).
pub fn port_taken(a: &crate::model::Mapping, b: &crate::model::Mapping) -> String {
    if a == b {
        format!("{a} is listed twice")
    } else {
        format!("host port {} of {a} is already published by {b}", a.host_spec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fixtures, Endpoint, Sandbox};

    fn ep(network: &str, ip: &str, ifname: &str) -> Endpoint {
        Endpoint {
            network: network.into(),
            ips: vec![ip.parse().unwrap()],
            ifname: ifname.into(),
            host_ifname: "v".into(),
        }
    }

    #[test]
    fn finds_clashes_across_objects() {
        let mut st = State::default();
        st.networks.insert("a".into(), fixtures::net("a", &["10.1.0.0/24"], &[]));
        st.networks.insert("b".into(), fixtures::net("b", &["10.1.0.128/25"], &[]));
        let sb = |name: &str, eps| Sandbox { name: name.into(), created: true, endpoints: eps };
        st.sandboxes.insert("s1".into(), sb("s1", vec![ep("a", "10.1.0.5", "eth0")]));
        st.sandboxes.insert("s2".into(), sb("s2", vec![ep("a", "10.1.0.5", "eth0"), ep("x", "10.1.0.6", "eth0")]));
        st.mappings = vec!["80:10.1.0.5:80".parse().unwrap(), "80:10.1.0.5:8080".parse().unwrap()];
        let msgs: Vec<String> = check(&st).into_iter().map(|v| v.message).collect();
        assert_eq!(
            msgs,
            [
                "subnet 10.1.0.128/25 of network b overlaps subnet 10.1.0.0/24 of network a",
                "address 10.1.0.5 on network a is held by both sandbox s1 and sandbox s2",
                "sandbox s2 has two interfaces named eth0",
                "sandbox s2: no network named x",
                "host port 80/tcp of 80:10.1.0.5:8080/tcp is already published by 80:10.1.0.5:80/tcp",
            ]
        );
        assert_eq!(check(&State::default()), vec![]);
    }

    #[test]
    fn the_sweep_finds_the_same_first_conflict_as_comparing_every_pair() {
        let mut ms: Vec<crate::model::Mapping> = vec![];
        for i in 0..300u32 {
            let port = 1000 + (i * 7919 % 97) as u16;
            let end = port + (i % 5) as u16;
            let host = ["", "127.0.0.1:", "10.0.0.1:"][(i % 3) as usize];
            let proto = ["tcp", "udp"][(i % 2) as usize];
            let target = if i % 11 == 0 && host.is_empty() { "[fd00::5]" } else { "10.1.0.5" };
            let c = 2000 + (i % 13) as u16;
            let spec = format!("{host}{port}-{end}:{target}:{c}-{}/{proto}", c + (end - port));
            ms.push(spec.parse().unwrap());
        }
        let brute: Vec<Option<usize>> =
            ms.iter().enumerate().map(|(i, a)| ms[..i].iter().position(|b| b.conflicts_with(a))).collect();
        assert!(brute.iter().filter(|c| c.is_some()).count() > 50);
        assert_eq!(first_conflicts(&ms), brute);
    }
}
