//! Declarative configuration (pure): the TOML file `netnat apply` reads and `netnat save` writes.
//!
//! ```toml
//! publish = ["8443:10.1.2.3:443"]   # optional: ports to addresses outside any sandbox below
//!
//! [[network]]
//! name = "MyDocker0"
//! subnet = "172.16.0.0/16"
//! gateway = "172.16.1.254"   # optional: the subnet's first host address
//! bridge = "MyDocker0"       # optional: the network name
//! masquerade = true          # optional
//! internal = false           # optional
//!
//! [[sandbox]]
//! name = "Container_ns1"
//! [[sandbox.endpoint]]
//! network = "MyDocker0"
//! ip = "172.16.1.1"          # optional: allocated
//! ifname = "eth0"            # optional: eth0, eth1, ...
//! publish = ["9090:172.16.1.1:8080", "127.0.0.1:5353:172.16.1.1:53/udp", "8081:80"]
//! ```
//!
//! An endpoint's `publish` entries may leave out the container address (`HOSTPORT:PORT`,
//! `HOSTIP:HOSTPORT:PORT`): it is then the endpoint's own. Parsing reports an unknown key or a
//! wrong type with its line; [`validate`] lists every other problem, each with its line; and
//! [`to_state`] turns a valid file into the `State` netnat should have.

use crate::model::{
    check_ifname, check_name, host_ifname, parse_ipv4, Endpoint, InputError, Mapping, Network, Sandbox, State, Subnet,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use toml::Spanned;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Published ports whose container address is not one of the endpoints below.
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConf>,
    #[serde(default, rename = "sandbox")]
    pub sandboxes: Vec<SandboxConf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConf {
    pub name: Spanned<String>,
    pub subnet: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
    pub bridge: Option<Spanned<String>>,
    pub masquerade: Option<bool>,
    pub internal: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConf {
    pub name: Spanned<String>,
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointConf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConf {
    pub network: Spanned<String>,
    pub ip: Option<Spanned<String>>,
    pub ifname: Option<Spanned<String>>,
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
}

/// One thing wrong with a file, at a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Every problem of a file as one input error (exit 2): `FILE:LINE: message`, one per line.
pub fn problems_error(file: &str, problems: &[Problem]) -> InputError {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}:{}: {}", p.line, p.message)).collect();
    InputError(format!("{} problem(s) in {file}:\n{}", problems.len(), lines.join("\n")))
}

/// A parsed file: the configuration and the text it came from (to turn spans into lines).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub config: Config,
    text: String,
}

impl Parsed {
    pub fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(&self.text, s.span().start)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// Parses TOML; an unknown key, a missing key or a wrong type is one problem with its line.
pub fn parse(text: &str) -> Result<Parsed, Problem> {
    match toml::from_str::<Config>(text) {
        Ok(config) => Ok(Parsed { config, text: text.to_string() }),
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let message = e.message().trim().replace('\n', " ");
            Err(Problem { line, message })
        }
    }
}

/// Parses and validates: the problems of either step, all of them.
pub fn load(text: &str) -> Result<Parsed, Vec<Problem>> {
    let parsed = parse(text).map_err(|p| vec![p])?;
    let problems = validate(&parsed);
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// A network as checked: the model's Network and the line of its `name`.
struct NetAt<'a> {
    net: Network,
    conf: &'a NetworkConf,
}

/// Splits a publish entry into the mapping it means; `own` is the endpoint's address (if known),
/// used when the entry leaves the container address out.
pub fn parse_publish(spec: &str, own: Option<Ipv4Addr>) -> Result<Mapping, InputError> {
    let full = spec.parse::<Mapping>();
    if full.is_ok() {
        return full;
    }
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, format!("/{p}")),
        None => (spec, String::new()),
    };
    let parts: Vec<&str> = body.split(':').collect();
    // Short forms: HOSTPORT:PORT and HOSTIP:HOSTPORT:PORT (the last part is not an address).
    let short = match parts.as_slice() {
        [hp, cp] => Some((None, *hp, *cp)),
        [hip, hp, cp] if hip.parse::<Ipv4Addr>().is_ok() && hp.parse::<Ipv4Addr>().is_err() => {
            Some((Some(*hip), *hp, *cp))
        }
        _ => None,
    };
    match (short, own) {
        (Some((hip, hp, cp)), Some(ip)) => {
            let hip = hip.map(|h| format!("{h}:")).unwrap_or_default();
            format!("{hip}{hp}:{ip}:{cp}{proto}")
                .parse::<Mapping>()
                .map_err(|e| InputError(e.0.replace(&format!("{hip}{hp}:{ip}:{cp}{proto}"), spec)))
        }
        (Some(_), None) => Err(InputError(format!(
            "'{spec}' leaves out the container address; that is only allowed in an endpoint's publish list"
        ))),
        (None, _) => full,
    }
}

/// Lists every problem of a parsed file, each with its line, in file order.
pub fn validate(p: &Parsed) -> Vec<Problem> {
    let c = &p.config;
    let mut out: Vec<Problem> = vec![];
    let mut bad = |line: usize, message: String| out.push(Problem { line, message });

    // Networks.
    let mut nets: Vec<NetAt> = vec![];
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &c.networks {
        let line = p.line(&n.name);
        let name = n.name.get_ref().as_str();
        if let Err(e) = check_name(name, "network") {
            bad(line, e.0);
        }
        if let Some(first) = names.insert(name, line) {
            bad(line, format!("network {name} is defined twice (first at line {first})"));
            continue;
        }
        let subnet: Subnet = match n.subnet.get_ref().parse() {
            Ok(s) => s,
            Err(e) => {
                bad(p.line(&n.subnet), format!("network {name}: {}", e.0));
                continue;
            }
        };
        let gateway = match &n.gateway {
            Some(g) => match parse_ipv4(g.get_ref(), "gateway") {
                Ok(ip) if subnet.is_host(ip) => ip,
                Ok(ip) => {
                    bad(p.line(g), format!("network {name}: gateway {ip} is not a host address of subnet {subnet}"));
                    continue;
                }
                Err(e) => {
                    bad(p.line(g), format!("network {name}: {}", e.0));
                    continue;
                }
            },
            None => subnet.first_host(),
        };
        let bridge = n.bridge.as_ref().map(|b| b.get_ref().as_str()).unwrap_or(name);
        let bridge_line = n.bridge.as_ref().map(|b| p.line(b)).unwrap_or(line);
        if let Err(e) = check_ifname(bridge, "bridge name") {
            bad(bridge_line, format!("network {name}: {}", e.0));
            continue;
        }
        let mut net = Network {
            name: name.to_string(),
            subnet,
            gateway,
            bridge: bridge.to_string(),
            masquerade: true,
            internal: false,
        };
        net.masquerade = n.masquerade.unwrap_or(true);
        net.internal = n.internal.unwrap_or(false);
        for o in &nets {
            if o.net.subnet.overlaps(&net.subnet) {
                bad(
                    p.line(&n.subnet),
                    format!(
                        "subnet {} of network {name} overlaps subnet {} of network {} (line {})",
                        net.subnet,
                        o.net.subnet,
                        o.net.name,
                        p.line(&o.conf.subnet)
                    ),
                );
            }
            if o.net.bridge == net.bridge {
                bad(
                    bridge_line,
                    format!("bridge {} of network {name} is also the bridge of network {}", net.bridge, o.net.name),
                );
            }
        }
        nets.push(NetAt { net, conf: n });
    }
    let net_named = |n: &str| nets.iter().find(|x| x.net.name == n).map(|x| &x.net);

    // Sandboxes and endpoints.
    let mut sb_names: BTreeMap<&str, usize> = BTreeMap::new();
    // (network, address) -> (sandbox, line)
    let mut taken: BTreeMap<(String, Ipv4Addr), (String, usize)> = BTreeMap::new();
    let mut maps: Vec<(Mapping, usize)> = vec![];
    for s in &c.sandboxes {
        let line = p.line(&s.name);
        let sname = s.name.get_ref().as_str();
        if let Err(e) = check_name(sname, "sandbox") {
            bad(line, e.0);
        }
        if let Some(first) = sb_names.insert(sname, line) {
            bad(line, format!("sandbox {sname} is defined twice (first at line {first})"));
        }
        let mut on: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ifnames: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &s.endpoints {
            let nline = p.line(&e.network);
            let nname = e.network.get_ref().as_str();
            if let Some(first) = on.insert(nname, nline) {
                bad(nline, format!("sandbox {sname} is connected to network {nname} twice (first at line {first})"));
            }
            if let Some(i) = &e.ifname {
                let iline = p.line(i);
                if let Err(err) = check_ifname(i.get_ref(), "interface name") {
                    bad(iline, format!("sandbox {sname}: {}", err.0));
                } else if let Some(first) = ifnames.insert(i.get_ref(), iline) {
                    bad(
                        iline,
                        format!("sandbox {sname} has two interfaces named {} (first at line {first})", i.get_ref()),
                    );
                }
            }
            let net = net_named(nname);
            if net.is_none() && !names.contains_key(nname) {
                bad(nline, format!("sandbox {sname}: no network named {nname} in this file"));
            }
            let ip = match &e.ip {
                None => None,
                Some(i) => {
                    let iline = p.line(i);
                    match parse_ipv4(i.get_ref(), "address") {
                        Err(err) => {
                            bad(iline, format!("sandbox {sname}: {}", err.0));
                            None
                        }
                        Ok(ip) => {
                            if let Some(n) = net {
                                if !n.subnet.is_host(ip) || ip == n.gateway {
                                    bad(
                                        iline,
                                        format!(
                                            "sandbox {sname}: address {ip} is not a free host address of network {} ({}, gateway {})",
                                            n.name, n.subnet, n.gateway
                                        ),
                                    );
                                } else if let Some((other, oline)) =
                                    taken.insert((n.name.clone(), ip), (sname.to_string(), iline))
                                {
                                    bad(
                                        iline,
                                        format!(
                                            "address {ip} on network {} is given to both sandbox {other} (line {oline}) and sandbox {sname}",
                                            n.name
                                        ),
                                    );
                                }
                            }
                            Some(ip)
                        }
                    }
                }
            };
            for spec in &e.publish {
                match parse_publish(spec.get_ref(), ip) {
                    Err(err) if e.ip.is_none() && err.0.contains("leaves out the container address") => bad(
                        p.line(spec),
                        format!("'{}': the short form needs the endpoint's `ip` to be set", spec.get_ref()),
                    ),
                    Err(err) => bad(p.line(spec), err.0),
                    Ok(m) => {
                        if let Some(own) = ip {
                            if m.container_ip != own {
                                bad(
                                    p.line(spec),
                                    format!(
                                        "'{}' forwards to {} but this endpoint's address is {own}; publish it under that endpoint or at the top level",
                                        spec.get_ref(),
                                        m.container_ip
                                    ),
                                );
                                continue;
                            }
                        } else if e.ip.is_none() {
                            bad(
                                p.line(spec),
                                format!(
                                    "'{}' is published on an endpoint without a fixed `ip`; set `ip` so the address cannot change",
                                    spec.get_ref()
                                ),
                            );
                            continue;
                        }
                        maps.push((m, p.line(spec)));
                    }
                }
            }
        }
    }
    for spec in &c.publish {
        match parse_publish(spec.get_ref(), None) {
            Err(err) => bad(p.line(spec), err.0),
            Ok(m) => maps.push((m, p.line(spec))),
        }
    }
    for (i, (a, line)) in maps.iter().enumerate() {
        if let Some((b, bline)) = maps[..i].iter().find(|(b, _)| b.conflicts_with(a)) {
            bad(*line, format!("host port {} of {a} is already published by {b} (line {bline})", a.host_spec()));
        }
    }

    // Room for the endpoints without an address (only when everything else is fine).
    if out.is_empty() {
        if let Err(e) = to_state(p, &State::default()) {
            out.push(Problem { line: 1, message: e.0 });
        }
    }
    out.sort_by_key(|p| p.line);
    out
}

/// The State a valid file describes. Missing addresses are allocated like `State::allocate_ip`
/// (lowest free host address), after every fixed address is placed, in file order; an endpoint
/// that `previous` already has (same sandbox and network) keeps its address when it is still free,
/// so removing one sandbox from a file does not renumber the others.
pub fn to_state(p: &Parsed, previous: &State) -> Result<State, InputError> {
    let c = &p.config;
    let mut st = State::default();
    for n in &c.networks {
        let subnet: Subnet = n.subnet.get_ref().parse()?;
        let gateway = n.gateway.as_ref().map(|g| parse_ipv4(g.get_ref(), "gateway")).transpose()?;
        let mut net = Network::new(n.name.get_ref(), subnet, gateway, n.bridge.as_ref().map(|b| b.get_ref().as_str()))?;
        net.masquerade = n.masquerade.unwrap_or(true);
        net.internal = n.internal.unwrap_or(false);
        st.networks.insert(net.name.clone(), net);
    }
    // Pass 1: sandboxes with their fixed addresses; placeholders for the others.
    let mut pending: Vec<(String, usize)> = vec![];
    for s in &c.sandboxes {
        let name = s.name.get_ref().clone();
        let mut used_ifnames: HashSet<String> =
            s.endpoints.iter().filter_map(|e| e.ifname.as_ref().map(|i| i.get_ref().clone())).collect();
        let mut endpoints = vec![];
        for (i, e) in s.endpoints.iter().enumerate() {
            let network = e.network.get_ref().clone();
            let ip = e.ip.as_ref().map(|i| parse_ipv4(i.get_ref(), "address")).transpose()?;
            let ifname = match &e.ifname {
                Some(i) => i.get_ref().clone(),
                None => {
                    let n = (0..).map(|n| format!("eth{n}")).find(|n| !used_ifnames.contains(n)).expect("unbounded");
                    used_ifnames.insert(n.clone());
                    n
                }
            };
            if ip.is_none() {
                pending.push((name.clone(), i));
            }
            endpoints.push(Endpoint {
                host_ifname: host_ifname(&name, &network),
                network,
                ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                ifname,
            });
        }
        st.sandboxes.insert(name.clone(), Sandbox { name, created: true, endpoints });
    }
    // Pass 2: addresses for the others, keeping a previous one when it is still free.
    for (sb, i) in pending {
        let network = st.sandboxes[&sb].endpoints[i].network.clone();
        let Some(net) = st.networks.get(&network).cloned() else {
            return Err(InputError(format!("sandbox {sb}: no network named {network}")));
        };
        let busy = |st: &State, ip: Ipv4Addr| st.endpoints_on(&network).any(|(_, e)| e.ip == ip);
        let kept = previous
            .sandboxes
            .get(&sb)
            .and_then(|s| s.endpoints.iter().find(|e| e.network == network))
            .map(|e| e.ip)
            .filter(|ip| net.subnet.is_host(*ip) && *ip != net.gateway && !busy(&st, *ip));
        let ip = match kept {
            Some(ip) => ip,
            None => st.allocate_ip(&net)?,
        };
        st.sandboxes.get_mut(&sb).expect("inserted above").endpoints[i].ip = ip;
    }
    // Published ports, in file order.
    for s in &c.sandboxes {
        for (i, e) in s.endpoints.iter().enumerate() {
            let own = st.sandboxes[s.name.get_ref()].endpoints[i].ip;
            for spec in &e.publish {
                st.mappings.push(parse_publish(spec.get_ref(), Some(own))?);
            }
        }
    }
    for spec in &c.publish {
        st.mappings.push(parse_publish(spec.get_ref(), None)?);
    }
    Ok(st)
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", v.join(", "))
}

/// A file that `to_state` turns back into `state` (every value written out, nothing allocated).
/// `notes` become comments at the top (e.g. what the kernel is missing).
pub fn to_toml(state: &State, notes: &[String]) -> String {
    let mut out =
        String::from("# netnat configuration, written by `netnat save`; apply with `netnat apply -f FILE`.\n");
    for n in notes {
        out += &format!("# warning: {n}\n");
    }
    // Each mapping goes under the endpoint that has its container address, else at the top level.
    let owner = |m: &Mapping| -> Option<(&str, &str)> {
        let net = state.network_of(m.container_ip)?;
        state
            .endpoints_on(&net.name)
            .find(|(_, e)| e.ip == m.container_ip)
            .map(|(s, _)| (s.name.as_str(), net.name.as_str()))
    };
    let top: Vec<String> = state.mappings.iter().filter(|m| owner(m).is_none()).map(|m| m.to_string()).collect();
    if !top.is_empty() {
        out += &format!("\npublish = {}\n", list(&top));
    }
    for n in state.networks.values() {
        out += &format!(
            "\n[[network]]\nname = {}\nsubnet = {}\ngateway = {}\nbridge = {}\nmasquerade = {}\ninternal = {}\n",
            q(&n.name),
            q(&n.subnet.to_string()),
            q(&n.gateway.to_string()),
            q(&n.bridge),
            n.masquerade,
            n.internal
        );
    }
    for s in state.sandboxes.values() {
        out += &format!("\n[[sandbox]]\nname = {}\n", q(&s.name));
        for e in &s.endpoints {
            out += &format!(
                "\n[[sandbox.endpoint]]\nnetwork = {}\nip = {}\nifname = {}\n",
                q(&e.network),
                q(&e.ip.to_string()),
                q(&e.ifname)
            );
            let mine: Vec<String> = state
                .mappings
                .iter()
                .filter(|m| owner(m) == Some((s.name.as_str(), e.network.as_str())))
                .map(|m| m.to_string())
                .collect();
            if !mine.is_empty() {
                out += &format!("publish = {}\n", list(&mine));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
[[network]]
name = "MyDocker0"
subnet = "172.16.0.0/16"
gateway = "172.16.1.254"

[[sandbox]]
name = "Container_ns1"
[[sandbox.endpoint]]
network = "MyDocker0"
ip = "172.16.1.1"
publish = ["9090:172.16.1.1:8080"]

[[sandbox]]
name = "Container_ns2"
[[sandbox.endpoint]]
network = "MyDocker0"
ip = "172.16.1.2"
"#;

    fn problems(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => vec![],
            Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn demo_becomes_the_seed_state() {
        let p = load(DEMO).unwrap();
        let st = to_state(&p, &State::default()).unwrap();
        let n = &st.networks["MyDocker0"];
        assert_eq!(
            (n.gateway.to_string(), n.bridge.as_str(), n.masquerade, n.internal),
            ("172.16.1.254".into(), "MyDocker0", true, false)
        );
        let e = &st.sandboxes["Container_ns1"].endpoints[0];
        assert_eq!((e.ip.to_string(), e.ifname.as_str()), ("172.16.1.1".into(), "eth0"));
        assert_eq!(e.host_ifname, host_ifname("Container_ns1", "MyDocker0"));
        assert_eq!(st.mappings, vec!["9090:172.16.1.1:8080".parse::<Mapping>().unwrap()]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[[network]]\nname = \"n\"\nsubnet = \"10.0.0.0/24\"\nbrige = \"x\"\n";
        let ps = problems(text);
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(ps[0].starts_with("line 4: unknown field `brige`"), "{ps:?}");
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = r#"[[network]]
name = "a"
subnet = "10.0.0.0/16"
[[network]]
name = "b"
subnet = "10.0.5.0/24"
gateway = "192.168.0.1"
[[network]]
name = "a"
subnet = "10.9.0.0/24"
[[network]]
name = "this-bridge-name-is-too-long"
subnet = "10.8.0.0/24"
[[sandbox]]
name = "s1"
[[sandbox.endpoint]]
network = "a"
ip = "10.0.0.5"
publish = ["80:10.0.0.5:80", "90-91:10.0.0.5:90"]
[[sandbox]]
name = "s2"
[[sandbox.endpoint]]
network = "a"
ip = "10.0.0.5"
publish = ["80:10.0.0.5:8080"]
[[sandbox.endpoint]]
network = "nope"
"#;
        let ps = problems(text);
        let want = [
            ("line 7:", "gateway 192.168.0.1 is not a host address"),
            ("line 9:", "network a is defined twice (first at line 2)"),
            ("line 12:", "bridge name 'this-bridge-name-is-too-long'"),
            ("line 19:", "host range 90-91 has 2 ports but container range 90 has 1"),
            ("line 24:", "address 10.0.0.5 on network a is given to both sandbox s1"),
            ("line 25:", "host port 80/tcp of 80:10.0.0.5:8080/tcp is already published"),
            ("line 27:", "no network named nope"),
        ];
        for (line, msg) in want {
            assert!(ps.iter().any(|p| p.starts_with(line) && p.contains(msg)), "missing {line} {msg} in {ps:#?}");
        }
        // Overlap: b's subnet is inside a's (b's gateway problem stops b before the overlap check).
        let ov = problems("[[network]]\nname = \"a\"\nsubnet = \"10.0.0.0/16\"\n[[network]]\nname = \"b\"\nsubnet = \"10.0.5.0/24\"\n");
        assert_eq!(
            ov,
            vec!["line 6: subnet 10.0.5.0/24 of network b overlaps subnet 10.0.0.0/16 of network a (line 3)"]
        );
    }

    #[test]
    fn missing_addresses_are_allocated_in_file_order_after_fixed_ones() {
        let text = r#"[[network]]
name = "n"
subnet = "10.9.0.0/29"
[[sandbox]]
name = "a"
[[sandbox.endpoint]]
network = "n"
[[sandbox]]
name = "b"
[[sandbox.endpoint]]
network = "n"
ip = "10.9.0.2"
[[sandbox]]
name = "c"
[[sandbox.endpoint]]
network = "n"
"#;
        let p = load(text).unwrap();
        let st = to_state(&p, &State::default()).unwrap();
        let ip = |s: &str| st.sandboxes[s].endpoints[0].ip.to_string();
        assert_eq!((ip("a"), ip("b"), ip("c")), ("10.9.0.3".into(), "10.9.0.2".into(), "10.9.0.4".into()));
        // A previous address is kept when still free.
        let mut prev = st.clone();
        prev.sandboxes.get_mut("c").unwrap().endpoints[0].ip = "10.9.0.6".parse().unwrap();
        let again = to_state(&p, &prev).unwrap();
        assert_eq!(again.sandboxes["c"].endpoints[0].ip.to_string(), "10.9.0.6");
        // Full network: one problem.
        let full = text.replace("10.9.0.0/29", "10.9.0.0/30");
        assert!(problems(&full).iter().any(|p| p.contains("no free address")), "{:?}", problems(&full));
    }

    #[test]
    fn short_publish_form_uses_the_endpoint_address() {
        let text = "[[network]]\nname = \"n\"\nsubnet = \"10.9.0.0/24\"\n[[sandbox]]\nname = \"a\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.9.0.7\"\npublish = [\"8080:80\", \"127.0.0.1:5353:53/udp\"]\n";
        let st = to_state(&load(text).unwrap(), &State::default()).unwrap();
        let got: Vec<String> = st.mappings.iter().map(|m| m.to_string()).collect();
        assert_eq!(got, vec!["8080:10.9.0.7:80/tcp", "127.0.0.1:5353:10.9.0.7:53/udp"]);
        let wrong = text.replace("8080:80", "8080:10.9.0.8:80");
        assert!(problems(&wrong)[0].contains("forwards to 10.9.0.8"), "{:?}", problems(&wrong));
    }

    #[test]
    fn save_output_round_trips() {
        let mut st = to_state(&load(DEMO).unwrap(), &State::default()).unwrap();
        st.mappings.push("127.0.0.1:5353:172.16.1.2:53/udp".parse().unwrap());
        st.mappings.push("8443:10.1.2.3:443".parse().unwrap());
        st.networks.get_mut("MyDocker0").unwrap().internal = true;
        let text = to_toml(&st, &["bridge X is missing".into()]);
        let back = to_state(&load(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}")), &State::default()).unwrap();
        let sorted = |mut v: Vec<Mapping>| {
            v.sort();
            v
        };
        assert_eq!(back.networks, st.networks);
        assert_eq!(back.sandboxes, st.sandboxes);
        assert_eq!(sorted(back.mappings), sorted(st.mappings));
    }
}
