//! Declarative configuration (pure): the TOML file `netnat apply` reads and `netnat save` writes.
//!
//! ```toml
//! publish = ["8443:10.1.2.3:443"]   # optional: ports to addresses outside any sandbox below
//!
//! [[network]]
//! name = "MyDocker0"
//! subnet = ["172.16.0.0/16", "fd00:16::/64"]   # one per family; a string for one
//! gateway = "172.16.1.254"   # optional, per family: the subnet's first host address
//! bridge = "MyDocker0"       # optional: the network name
//! masquerade = true          # optional
//! internal = false           # optional
//! ipv6_mode = "nat"          # optional: "nat" or "routed"
//! host_firewall = "auto"     # optional: "off" leaves firewalld, ufw and Docker alone
//!
//! [[sandbox]]
//! name = "Container_ns1"
//! [[sandbox.endpoint]]
//! network = "MyDocker0"
//! ip = ["172.16.1.1", "fd00:16::2"]   # optional, per family: allocated
//! ifname = "eth0"            # optional: eth0, eth1, ...
//! publish = ["9090:172.16.1.1:8080", "127.0.0.1:5353:172.16.1.1:53/udp", "8081:80", "8082:Container_ns1:80"]
//! ```
//!
//! An endpoint's `publish` entries may leave out the container address (`HOSTPORT:PORT`,
//! `HOSTIP:HOSTPORT:PORT`): it is then the endpoint's own (each of its families). Any entry may
//! name a sandbox instead of an address. Parsing reports an unknown key or a wrong type with its
//! line; [`validate`] lists every other problem, each with its line; and [`to_state`] turns a
//! valid file into the `State` netnat should have.

use crate::model::{
    allow_for, check_ifname, check_name, host_ifname, ip_text, parse_ip, pools_of, spec_parts, Cidr, Counting,
    Endpoint, Family, HostFirewallMode, InputError, Ipv6Mode, Mapping, Network, PublishSpec, Sandbox, State, Subnet,
    Target,
};
use crate::validate::{self, Subject};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use toml::Spanned;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Published ports whose container address is not one of the endpoints below.
    #[serde(default)]
    pub publish: Vec<Spanned<PublishEntry>>,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConf>,
    #[serde(default, rename = "sandbox")]
    pub sandboxes: Vec<SandboxConf>,
    /// What per-mapping counters count: "connections" (the default) or "packets".
    pub counting: Option<Spanned<String>>,
}

/// `subnet`, `gateway` and `ip` take a string or an array of strings (one per family).
pub type OneOrMany = Spanned<toml::Value>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConf {
    pub name: Spanned<String>,
    pub subnet: OneOrMany,
    pub gateway: Option<OneOrMany>,
    pub bridge: Option<Spanned<String>>,
    pub masquerade: Option<bool>,
    pub internal: Option<bool>,
    pub ipv6_mode: Option<Spanned<String>>,
    pub host_firewall: Option<HostFirewallMode>,
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
    pub ip: Option<OneOrMany>,
    pub ifname: Option<Spanned<String>>,
    #[serde(default)]
    pub publish: Vec<Spanned<PublishEntry>>,
}

/// A `publish` entry: a spec, or a table with the spec and the sources allowed to reach it
/// (`{ spec = "5432:172.16.1.1:5432", allow = ["10.0.0.0/8"] }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PublishEntry {
    Spec(String),
    Table(PublishTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishTable {
    pub spec: String,
    #[serde(default)]
    pub allow: Vec<String>,
}

impl PublishEntry {
    pub fn spec(&self) -> &str {
        match self {
            PublishEntry::Spec(s) => s,
            PublishEntry::Table(t) => &t.spec,
        }
    }
    /// The allow list, parsed; empty when the entry has none.
    pub fn allow(&self) -> Result<Vec<Cidr>, InputError> {
        match self {
            PublishEntry::Spec(_) => Ok(vec![]),
            PublishEntry::Table(t) if t.allow.is_empty() => {
                Err(InputError(format!("'{}': `allow` is empty; leave it out to allow every source", t.spec)))
            }
            PublishEntry::Table(t) => t.allow.iter().map(|c| c.parse()).collect(),
        }
    }
}

/// Sets the allow list of each of `maps` from `list` (each takes the sources of its family).
fn allow_each(st: &mut State, maps: &[Mapping], list: &[Cidr]) -> Result<(), InputError> {
    if list.is_empty() {
        return Ok(());
    }
    for m in maps {
        let mine = allow_for(m, list)?;
        st.set_allow(m, mine);
    }
    Ok(())
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
    /// Byte offsets of the text's newlines, to turn a span into its line in O(log n) (a file
    /// with 10,000 publish entries asks for every entry's line).
    newlines: Vec<usize>,
}

impl Parsed {
    pub fn line<T>(&self, s: &Spanned<T>) -> usize {
        self.newlines.partition_point(|n| *n < s.span().start) + 1
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// Parses TOML; an unknown key, a missing key or a wrong type is one problem with its line.
pub fn parse(text: &str) -> Result<Parsed, Problem> {
    match toml::from_str::<Config>(text) {
        Ok(config) => {
            let newlines = text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect();
            Ok(Parsed { config, newlines })
        }
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let message = e.message().trim().replace('\n', " ");
            Err(Problem { line, message })
        }
    }
}

/// Reads, parses and validates a file; every problem is one line of an InputError (exit 2).
pub fn load_file(file: &std::path::Path) -> Result<Parsed, InputError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| InputError(format!("cannot read {name}: {e}")))?;
    load(&text).map_err(|ps| problems_error(&name, &ps))
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

/// The strings of a `subnet`, `gateway` or `ip` value.
fn strings(v: &OneOrMany, key: &str) -> Result<Vec<String>, InputError> {
    let bad = || InputError(format!("`{key}` must be a string or an array of strings (one per family)"));
    match v.get_ref() {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(String::from).ok_or_else(bad)).collect(),
        _ => Err(bad()),
    }
}

fn addresses(v: &OneOrMany, key: &str, what: &str) -> Result<Vec<IpAddr>, InputError> {
    strings(v, key)?.iter().map(|s| parse_ip(s, what)).collect()
}

/// A network entry as the model's Network.
fn network_of(n: &NetworkConf) -> Result<Network, (Option<usize>, InputError)> {
    // Which field a problem is about: None for `subnet`, Some(1) gateway, Some(2) ipv6_mode.
    let subnets: Vec<Subnet> =
        strings(&n.subnet, "subnet").and_then(|v| v.iter().map(|s| s.parse()).collect()).map_err(|e| (None, e))?;
    let gateways = match &n.gateway {
        Some(g) => addresses(g, "gateway", "gateway").map_err(|e| (Some(1), e))?,
        None => vec![],
    };
    let pools = pools_of(&subnets, &gateways).map_err(|e| (if gateways.is_empty() { None } else { Some(1) }, e))?;
    let ipv6_mode: Ipv6Mode = match &n.ipv6_mode {
        Some(m) => m.get_ref().parse().map_err(|e| (Some(2), e))?,
        None => Ipv6Mode::Nat,
    };
    let name = n.name.get_ref().clone();
    Ok(Network {
        bridge: n.bridge.as_ref().map(|b| b.get_ref().clone()).unwrap_or(name.clone()),
        name,
        pools,
        masquerade: n.masquerade.unwrap_or(true),
        internal: n.internal.unwrap_or(false),
        ipv6_mode,
        host_firewall: n.host_firewall.unwrap_or_default(),
        owner: None,
    })
}

/// Splits a publish entry into the specs it means; `own` holds the endpoint's addresses (if
/// known), used when the entry leaves the container address out: one spec per address (only
/// those of the host address's family when one is given).
pub fn parse_publish(spec: &str, own: Option<&[IpAddr]>) -> Result<Vec<PublishSpec>, InputError> {
    let full = spec.parse::<PublishSpec>();
    if full.is_ok() || spec_parts(spec) > 3 {
        return full.map(|s| vec![s]);
    }
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, format!("/{p}")),
        None => (spec, String::new()),
    };
    // Short forms: HOSTPORT:PORT and HOSTIP:HOSTPORT:PORT (ports are plain numbers, so the host
    // address is what stands before the last two ':').
    let parts: Vec<&str> = body.rsplitn(3, ':').collect();
    let (hip, hp, cp) = match parts.as_slice() {
        [cp, hp] => (None, *hp, *cp),
        [cp, hp, hip] if parse_ip(hip, "host address").is_ok() => (Some(*hip), *hp, *cp),
        _ => return full.map(|s| vec![s]),
    };
    let Some(own) = own else {
        return Err(InputError(format!(
            "'{spec}' leaves out the container address; that is only allowed in an endpoint's publish list"
        )));
    };
    let host_family = hip.and_then(|h| parse_ip(h, "host address").ok()).map(Family::of);
    let mine: Vec<&IpAddr> = own.iter().filter(|ip| host_family.is_none_or(|f| f == Family::of(**ip))).collect();
    if mine.is_empty() {
        return Err(InputError(format!("'{spec}': the endpoint has no address of the host address's family")));
    }
    mine.into_iter()
        .map(|ip| {
            let hip = hip.map(|h| format!("{h}:")).unwrap_or_default();
            let long = format!("{hip}{hp}:{}:{cp}{proto}", ip_text(*ip));
            long.parse::<PublishSpec>().map_err(|e| InputError(e.0.replace(&long, spec)))
        })
        .collect()
}

/// Lists every problem of a parsed file, each with its line, in file order: each entry alone
/// first (names, values), then, on the state the valid entries make, the checks across objects
/// (`validate::check`, the same as `apply`, `connect` and `publish` run).
pub fn validate(p: &Parsed) -> Vec<Problem> {
    let mut out: Vec<Problem> = vec![];
    let mut bad = |line: usize, message: String| out.push(Problem { line, message });
    let mut placed = Placed::default();
    let names = place_networks(p, &mut placed, &mut bad);
    place_sandboxes(p, &names, &mut placed, &mut bad);
    place_top_publish(p, &mut placed, &mut bad);
    placed.check(p, &mut bad);
    // Room for the endpoints without an address, and name targets (when all else is fine).
    if out.is_empty() {
        if let Err(problem) = to_state_at(p, &State::default()) {
            out.push(problem);
        }
    }
    out.sort_by_key(|p| p.line);
    out
}

/// The state the valid entries of a file make, with the lines they came from.
#[derive(Default)]
struct Placed {
    state: State,
    /// (sandbox, endpoint index) -> (line of its address, line of its ifname).
    endpoint_lines: BTreeMap<(String, usize), (usize, usize)>,
    /// Each mapping with its entry's line, in file order.
    maps: Vec<(Mapping, usize)>,
    /// Each mapping with the allow list of its entry, and the entry's line.
    allows: Vec<(Mapping, Vec<Cidr>, usize)>,
}

impl Placed {
    /// The checks across objects, each problem at the line of the object it is about.
    fn check(mut self, p: &Parsed, bad: &mut impl FnMut(usize, String)) {
        let c = &p.config;
        self.state.mappings = self.maps.iter().map(|(m, _)| *m).collect();
        for (m, list, line) in std::mem::take(&mut self.allows) {
            if let Err(e) = allow_each(&mut self.state, &[m], &list) {
                bad(line, e.0);
            }
        }
        let line_of = |s: &Subject| match s {
            Subject::Network(n) => c.networks.iter().find(|x| x.name.get_ref() == n).map(|x| p.line(&x.subnet)),
            Subject::Bridge(n) => c.networks.iter().find(|x| x.name.get_ref() == n).map(|x| match &x.bridge {
                Some(b) => p.line(b),
                None => p.line(&x.name),
            }),
            Subject::Endpoint { sandbox, index } => self.endpoint_lines.get(&(sandbox.clone(), *index)).map(|l| l.0),
            Subject::Interface { sandbox, index } => self.endpoint_lines.get(&(sandbox.clone(), *index)).map(|l| l.1),
            Subject::Mapping(i) => self.maps.get(*i).map(|m| m.1),
        };
        for v in validate::check(&self.state) {
            let at = line_of(&v.subject).unwrap_or(1);
            match v.other.as_ref().and_then(line_of) {
                Some(other) => bad(at, format!("{} (line {other})", v.message)),
                None => bad(at, v.message),
            }
        }
    }
}

/// The networks of a file, each checked alone; returns every name with its line.
fn place_networks<'a>(
    p: &'a Parsed,
    placed: &mut Placed,
    bad: &mut impl FnMut(usize, String),
) -> BTreeMap<&'a str, usize> {
    let c = &p.config;
    let mut nets: Vec<Network> = vec![];
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
        let net = match network_of(n) {
            Ok(net) => net,
            Err((field, e)) => {
                let at = match (field, &n.gateway, &n.ipv6_mode) {
                    (Some(1), Some(g), _) => p.line(g),
                    (Some(2), _, Some(m)) => p.line(m),
                    _ => p.line(&n.subnet),
                };
                bad(at, format!("network {name}: {}", e.0));
                continue;
            }
        };
        let bridge_line = n.bridge.as_ref().map(|b| p.line(b)).unwrap_or(line);
        if let Err(e) = check_ifname(&net.bridge, "bridge name") {
            bad(bridge_line, format!("network {name}: {}", e.0));
            continue;
        }
        if net.ipv6_mode == Ipv6Mode::Routed && !net.has_v6() {
            bad(line, format!("network {name}: ipv6_mode = \"routed\" needs an IPv6 subnet"));
        }
        nets.push(net);
    }
    placed.state.networks = nets.into_iter().map(|n| (n.name.clone(), n)).collect();
    names
}

/// The sandboxes and their endpoints and publish lists, each checked alone.
fn place_sandboxes(
    p: &Parsed,
    names: &BTreeMap<&str, usize>,
    placed: &mut Placed,
    bad: &mut impl FnMut(usize, String),
) {
    let c = &p.config;
    let mut sb_names: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &c.sandboxes {
        let line = p.line(&s.name);
        let sname = s.name.get_ref().as_str();
        if let Err(e) = check_name(sname, "sandbox") {
            bad(line, e.0);
        }
        let first_definition = match sb_names.insert(sname, line) {
            Some(first) => {
                bad(line, format!("sandbox {sname} is defined twice (first at line {first})"));
                false
            }
            None => true,
        };
        let mut endpoints = vec![];
        let mut auto_ifnames = (0..).map(|n| format!("eth{n}"));
        for e in &s.endpoints {
            let nline = p.line(&e.network);
            let nname = e.network.get_ref().as_str();
            let ifname = match &e.ifname {
                Some(i) => match check_ifname(i.get_ref(), "interface name") {
                    Err(err) => {
                        bad(p.line(i), format!("sandbox {sname}: {}", err.0));
                        None
                    }
                    Ok(()) => Some(i.get_ref().clone()),
                },
                None => auto_ifnames
                    .find(|n| s.endpoints.iter().all(|x| x.ifname.as_ref().is_none_or(|i| i.get_ref() != n))),
            };
            let net = placed.state.networks.get(nname);
            if net.is_none() && !names.contains_key(nname) {
                bad(nline, format!("sandbox {sname}: no network named {nname} in this file"));
            }
            let ips: Option<Vec<IpAddr>> = match &e.ip {
                None => None,
                Some(i) => match addresses(i, "ip", "address") {
                    Err(err) => {
                        bad(p.line(i), format!("sandbox {sname}: {}", err.0));
                        None
                    }
                    Ok(ips) => Some(ips),
                },
            };
            if let (Some(_), Some(ifname)) = (net, ifname) {
                let ip_line = e.ip.as_ref().map(|i| p.line(i)).unwrap_or(nline);
                let if_line = e.ifname.as_ref().map(|i| p.line(i)).unwrap_or(nline);
                placed.endpoint_lines.insert((sname.to_string(), endpoints.len()), (ip_line, if_line));
                endpoints.push(Endpoint {
                    network: nname.to_string(),
                    ips: ips.clone().unwrap_or_default(),
                    ifname,
                    host_ifname: host_ifname(sname, nname),
                });
            }
            for spec in &e.publish {
                publish_entry(p, spec, e.ip.is_none(), ips.as_deref(), bad, &mut placed.maps, &mut placed.allows);
            }
        }
        if first_definition {
            placed.state.sandboxes.insert(sname.into(), Sandbox { name: sname.into(), created: true, endpoints });
        }
    }
}

/// The top-level publish list (containers outside the file's sandboxes).
fn place_top_publish(p: &Parsed, placed: &mut Placed, bad: &mut impl FnMut(usize, String)) {
    for spec in &p.config.publish {
        let allow = spec.get_ref().allow().map_err(|e| bad(p.line(spec), e.0)).unwrap_or_default();
        match parse_publish(spec.get_ref().spec(), None) {
            Err(err) => bad(p.line(spec), err.0),
            Ok(specs) => {
                for ps in specs.iter().filter(|ps| matches!(ps.target, Target::Addr(_))) {
                    if let Ok(ms) = ps.resolve(&State::default()) {
                        placed.allows.extend(ms.iter().map(|m| (*m, allow.clone(), p.line(spec))));
                        placed.maps.extend(ms.into_iter().map(|m| (m, p.line(spec))));
                    }
                }
            }
        }
    }
}

/// One `publish` entry of an endpoint (`own`: its addresses, when all parse): problems go to
/// `bad`, the mappings it means (with the entry's line) to `maps`.
fn publish_entry(
    p: &Parsed,
    spec: &Spanned<PublishEntry>,
    no_ip: bool,
    own: Option<&[IpAddr]>,
    bad: &mut impl FnMut(usize, String),
    maps: &mut Vec<(Mapping, usize)>,
    allows: &mut Vec<(Mapping, Vec<Cidr>, usize)>,
) {
    let line = p.line(spec);
    let text = spec.get_ref().spec();
    let allow = spec.get_ref().allow().map_err(|e| bad(line, e.0)).unwrap_or_default();
    let specs = match parse_publish(text, own) {
        Err(err) if no_ip && err.0.contains("leaves out the container address") => {
            return bad(line, format!("'{text}': the short form needs the endpoint's `ip` to be set"))
        }
        Err(err) => return bad(line, err.0),
        Ok(specs) => specs,
    };
    for ps in specs {
        let Target::Addr(ip) = ps.target else { continue }; // resolved with the state later
        let Some(own) = own else {
            bad(
                line,
                format!(
                    "'{text}' is published on an endpoint without a fixed `ip`; set `ip` so the address cannot change"
                ),
            );
            continue;
        };
        if !own.contains(&ip) {
            let own: Vec<String> = own.iter().map(|i| i.to_string()).collect();
            bad(
                line,
                format!(
                    "'{text}' forwards to {ip} but this endpoint's address is {}; publish it under that endpoint or at \
                     the top level",
                    own.join(", ")
                ),
            );
            continue;
        }
        if let Ok(ms) = ps.resolve(&State::default()) {
            allows.extend(ms.iter().map(|m| (*m, allow.clone(), line)));
            maps.extend(ms.into_iter().map(|m| (m, line)));
        }
    }
}

/// The State a valid file describes; see [`to_state_at`].
pub fn to_state(p: &Parsed, previous: &State) -> Result<State, InputError> {
    to_state_at(p, previous).map_err(|pr| InputError(pr.to_string()))
}

/// The State a valid file describes. Missing addresses are allocated like `State::allocate_ip`
/// (lowest free host address of each family), after every fixed address is placed, in file
/// order; an endpoint that `previous` already has (same sandbox and network) keeps its address
/// when it is still free, so removing one sandbox from a file does not renumber the others.
/// Name targets are resolved last, against the finished endpoints.
pub fn to_state_at(p: &Parsed, previous: &State) -> Result<State, Problem> {
    let c = &p.config;
    let at = |line: usize| move |e: InputError| Problem { line, message: e.0 };
    let mut st = State::default();
    if let Some(c) = &c.counting {
        st.counting = c.get_ref().parse::<Counting>().map_err(at(p.line(c)))?;
    }
    for n in &c.networks {
        let net = network_of(n).map_err(|(_, e)| at(p.line(&n.subnet))(e))?;
        st.networks.insert(net.name.clone(), net);
    }
    // Pass 1: sandboxes with their fixed addresses.
    let mut pending: Vec<(String, usize, usize)> = vec![];
    for s in &c.sandboxes {
        let name = s.name.get_ref().clone();
        let mut used_ifnames: HashSet<String> =
            s.endpoints.iter().filter_map(|e| e.ifname.as_ref().map(|i| i.get_ref().clone())).collect();
        let mut endpoints = vec![];
        for (i, e) in s.endpoints.iter().enumerate() {
            let network = e.network.get_ref().clone();
            let ips = match &e.ip {
                Some(v) => addresses(v, "ip", "address").map_err(at(p.line(v)))?,
                None => vec![],
            };
            let ifname = match &e.ifname {
                Some(i) => i.get_ref().clone(),
                None => {
                    let n = (0..).map(|n| format!("eth{n}")).find(|n| !used_ifnames.contains(n)).expect("unbounded");
                    used_ifnames.insert(n.clone());
                    n
                }
            };
            pending.push((name.clone(), i, p.line(&e.network)));
            endpoints.push(Endpoint { host_ifname: host_ifname(&name, &network), network, ips, ifname });
        }
        st.sandboxes.insert(name.clone(), Sandbox { name, created: true, endpoints });
    }
    // Pass 2: an address for every family an endpoint lacks, keeping a previous one when free.
    for (sb, i, line) in pending {
        let network = st.sandboxes[&sb].endpoints[i].network.clone();
        let Some(net) = st.networks.get(&network).cloned() else {
            return Err(at(line)(InputError(format!("sandbox {sb}: no network named {network}"))));
        };
        for fam in net.families().collect::<Vec<_>>() {
            if st.sandboxes[&sb].endpoints[i].ip(fam).is_some() {
                continue;
            }
            let kept = previous
                .sandboxes
                .get(&sb)
                .and_then(|s| s.endpoints.iter().find(|e| e.network == network))
                .and_then(|e| e.ip(fam))
                .filter(|ip| st.check_endpoint_ip(&net, *ip, &sb).is_ok());
            let ip = match kept {
                Some(ip) => ip,
                None => st.allocate_ip(&net, fam).map_err(at(line))?,
            };
            let ips = &mut st.sandboxes.get_mut(&sb).expect("inserted above").endpoints[i].ips;
            ips.push(ip);
            ips.sort_by_key(|ip| Family::of(*ip));
        }
    }
    // Published ports, in file order, and their allow lists.
    let mut mappings = vec![];
    let mut allows: Vec<(Vec<Mapping>, Vec<Cidr>, usize)> = vec![];
    for s in &c.sandboxes {
        for (i, e) in s.endpoints.iter().enumerate() {
            let own = st.sandboxes[s.name.get_ref()].endpoints[i].ips.clone();
            for spec in &e.publish {
                let allow = spec.get_ref().allow().map_err(at(p.line(spec)))?;
                for ps in parse_publish(spec.get_ref().spec(), Some(&own)).map_err(at(p.line(spec)))? {
                    let ms = ps.resolve(&st).map_err(at(p.line(spec)))?;
                    allows.push((ms.clone(), allow.clone(), p.line(spec)));
                    mappings.extend(ms);
                }
            }
        }
    }
    for spec in &c.publish {
        let allow = spec.get_ref().allow().map_err(at(p.line(spec)))?;
        for ps in parse_publish(spec.get_ref().spec(), None).map_err(at(p.line(spec)))? {
            let ms = ps.resolve(&st).map_err(at(p.line(spec)))?;
            allows.push((ms.clone(), allow.clone(), p.line(spec)));
            mappings.extend(ms);
        }
    }
    st.mappings = mappings;
    for (ms, list, line) in allows {
        allow_each(&mut st, &ms, &list).map_err(at(line))?;
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

/// One value as a string, several as an array (the form `apply` reads either way).
fn one_or_many(items: &[String]) -> String {
    match items {
        [one] => q(one),
        many => list(many),
    }
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
            .find(|(_, e)| e.has(m.container_ip))
            .map(|(s, _)| (s.name.as_str(), net.name.as_str()))
    };
    // A mapping with an allow list is written as a table: { spec = "...", allow = [...] }.
    let entry = |m: &Mapping| match state.allow_of(m) {
        [] => q(&m.to_string()),
        list => {
            let cidrs: Vec<String> = list.iter().map(|c| c.to_string()).collect();
            format!("{{ spec = {}, allow = {} }}", q(&m.to_string()), self::list(&cidrs))
        }
    };
    // Ports CNI containers (or Docker's driver) published belong to the container runtime, which
    // publishes them again.
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for a in state.mappings.iter().filter_map(|m| state.owner_of(m)) {
        let owner = state.networks.get(&a.network).and_then(|n| n.owner.as_ref());
        *by.entry(owner.map_or("CNI", |o| o.by.as_str())).or_default() += 1;
    }
    for (who, n) in by {
        out += &format!(
            "# {n} port(s) published through {who} are left out: the container runtime owns them (`netnat ls` lists them).\n"
        );
    }
    // So do the networks made through Docker's driver (with their endpoints).
    for n in state.networks.values() {
        if let Some(o) = &n.owner {
            out += &format!(
                "# network {} is left out: it is {}'s network {} (`netnat network ls` lists it).\n",
                n.name, o.by, o.id
            );
        }
    }
    let top: Vec<String> =
        state.mappings.iter().filter(|m| owner(m).is_none() && state.owner_of(m).is_none()).map(entry).collect();
    if state.counting != Counting::default() {
        out += &format!("counting = {}\n", q(&state.counting.to_string()));
    }
    if !top.is_empty() {
        out += &format!("\npublish = [{}]\n", top.join(", "));
    }
    for n in state.networks.values().filter(|n| n.owner.is_none()) {
        let subnets: Vec<String> = n.pools.iter().map(|p| p.subnet.to_string()).collect();
        let gateways: Vec<String> = n.pools.iter().map(|p| p.gateway.to_string()).collect();
        out += &format!(
            "\n[[network]]\nname = {}\nsubnet = {}\ngateway = {}\nbridge = {}\nmasquerade = {}\ninternal = {}\n",
            q(&n.name),
            one_or_many(&subnets),
            one_or_many(&gateways),
            q(&n.bridge),
            n.masquerade,
            n.internal
        );
        if n.ipv6_mode != Ipv6Mode::Nat {
            out += &format!("ipv6_mode = {}\n", q(&n.ipv6_mode.to_string()));
        }
        if n.host_firewall != HostFirewallMode::Auto {
            out += &format!("host_firewall = {}\n", q(&n.host_firewall.to_string()));
        }
    }
    for s in state.sandboxes.values() {
        out += &format!("\n[[sandbox]]\nname = {}\n", q(&s.name));
        for e in &s.endpoints {
            let ips: Vec<String> = e.ips.iter().map(|i| i.to_string()).collect();
            out += &format!(
                "\n[[sandbox.endpoint]]\nnetwork = {}\nip = {}\nifname = {}\n",
                q(&e.network),
                one_or_many(&ips),
                q(&e.ifname)
            );
            let mine: Vec<String> = state
                .mappings
                .iter()
                .filter(|m| owner(m) == Some((s.name.as_str(), e.network.as_str())))
                .map(entry)
                .collect();
            if !mine.is_empty() {
                out += &format!("publish = [{}]\n", mine.join(", "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
