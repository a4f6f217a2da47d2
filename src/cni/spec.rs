//! The CNI protocol as plain data (pure): versions, verbs, the environment, the network
//! configuration netnat reads, prevResult, the result and error objects.
//!
//! Own serde types rather than the `cni-plugin` crate (0.2.1, 2021): that crate models spec
//! 1.0.0 only, so it can neither answer a 0.4.0 conflist (what Debian 12's Podman 4.3 writes)
//! nor the 1.1.0 verbs GC and STATUS; and its typed result would drop the fields of prevResult
//! it does not know, where a chained plugin must hand prevResult on unchanged. What netnat needs
//! of the protocol is small (a few env variables, five keys of the config, two of prevResult),
//! so prevResult stays a `serde_json::Value` and only the keys netnat reads get types.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt;
use std::net::IpAddr;

/// Spec versions netnat speaks, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.3.0 and 0.3.1: the result format of 0.4.0, without CHECK (Flannel's stock conflist
    /// still says 0.3.1, so a node moving from portmap needs no other edit).
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const ALL: [Version; 5] = [Version::V0_3_0, Version::V0_3_1, Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];
    pub const LATEST: Version = Version::V1_1_0;

    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CNI_COMMAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
    /// The verbs added by spec 1.1.0, refused for an older config (as the reference library does).
    fn needs_1_1(self) -> bool {
        matches!(self, Command::Gc | Command::Status)
    }
}

/// The spec's well-known error codes, and netnat's own (100 and up, as the spec allows).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// A host port the ADD asks for is published already (by another container, or by the CLI).
    pub const PORT_TAKEN: u32 = 100;
    /// netnat could not change the kernel or its record.
    pub const FAILED: u32 = 101;
}

/// A CNI error result: printed as JSON on stdout, with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }
    /// The error object of the spec, in `version` (the request's, when it could be read).
    pub fn to_json(&self, version: Version) -> String {
        let v = json!({"cniVersion": version.as_str(), "code": self.code, "msg": self.msg, "details": self.details});
        serde_json::to_string(&v).expect("a JSON value always serialises")
    }
    /// 2 for a request netnat refused as invalid (nothing was changed), 1 for a failure: the
    /// exit statuses of the CLI. A runtime only looks at "non-zero".
    pub fn exit_status(&self) -> i32 {
        use code::*;
        match self.code {
            INCOMPATIBLE_VERSION | UNSUPPORTED_FIELD | INVALID_ENV | DECODE | INVALID_CONFIG => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (CNI error {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (CNI error {})", self.msg, self.details, self.code)
        }
    }
}

fn invalid_env(var: &str, why: impl fmt::Display) -> CniError {
    CniError::new(code::INVALID_ENV, format!("invalid environment variable {var}"), format!("{var} {why}"))
}

/// The `allowFrom` CIDRs (empty: every source), or the invalid-config error naming the value.
pub fn allow_from(conf: &NetConf) -> Result<Vec<crate::model::Cidr>, CniError> {
    let Some(v) = conf.allow_from.as_ref().filter(|v| !v.is_null()) else { return Ok(vec![]) };
    let bad = |why: String| invalid_config("invalid allowFrom", format!("allowFrom = {v}: {why}"));
    let list = v.as_array().ok_or_else(|| bad("expected an array of CIDRs, e.g. [\"10.0.0.0/8\"]".into()))?;
    list.iter()
        .map(|c| {
            c.as_str()
                .ok_or_else(|| bad(format!("{c} is not a string")))
                .and_then(|c| c.parse().map_err(|e: crate::model::InputError| bad(e.0)))
        })
        .collect()
}

fn invalid_config(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg, details)
}

/// The CNI_* environment of one invocation; what each verb requires is checked by `attachment`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    /// Reads the variables through `get` (the process environment, or a test's map). An empty
    /// value counts as missing, as in the reference library.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Env {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    pub fn command(&self) -> Result<Command, CniError> {
        let Some(c) = &self.command else {
            return Err(invalid_env("CNI_COMMAND", "is not set"));
        };
        Command::parse(c).ok_or_else(|| {
            invalid_env("CNI_COMMAND", format!("'{c}' is not one of ADD, DEL, CHECK, VERSION, GC, STATUS"))
        })
    }

    /// CNI_CONTAINERID and CNI_IFNAME (all attachment verbs), CNI_NETNS (ADD and CHECK; DEL
    /// works without it), each checked as the spec describes it.
    pub fn attachment(&self, cmd: Command) -> Result<(String, String, Option<String>), CniError> {
        let container = self.container_id.clone().ok_or_else(|| invalid_env("CNI_CONTAINERID", "is not set"))?;
        check_id(&container).map_err(|why| invalid_env("CNI_CONTAINERID", format!("'{container}' {why}")))?;
        let ifname = self.ifname.clone().ok_or_else(|| invalid_env("CNI_IFNAME", "is not set"))?;
        crate::model::check_ifname(&ifname, "CNI_IFNAME").map_err(|e| invalid_env("CNI_IFNAME", e.0))?;
        if cmd != Command::Del && self.netns.is_none() {
            return Err(invalid_env(
                "CNI_NETNS",
                format!("is not set (the container's network namespace is needed for {})", cmd.name()),
            ));
        }
        Ok((container, ifname, self.netns.clone()))
    }
}

/// The spec's rule for container IDs and network names: an alphanumeric first character, then
/// alphanumerics, '_', '.' and '-'.
pub fn check_id(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("is empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => return Err(format!("starts with {c:?}, not a letter or digit")),
        _ => {}
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        Some(c) => Err(format!("contains {c:?}; only letters, digits, '_', '.' and '-' are allowed")),
        None => Ok(()),
    }
}

/// One entry of `runtimeConfig.portMappings` (the `portMappings` capability). Numbers are
/// read wide, so an out-of-range port is refused naming its value.
///
/// Keys are matched as Go's encoding/json matches them (portmap's decoder): an exact match
/// first, then any ASCII case, and unknown keys are ignored. containerd's CRI writes Go field
/// names (`{"HostPort":9090,"ContainerPort":8080,"Protocol":"tcp","HostIP":""}`), CRI-O and
/// Podman the tagged ones (`hostPort`, `hostIP`); `null` is the field's zero value, as in Go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: i64,
    pub container_port: i64,
    pub protocol: Option<String>,
    pub host_ip: Option<String>,
}

/// The value of `key` in `obj`, matched as Go's decoder does: exact first, then case-insensitively.
fn go_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key)
        .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

fn go_int<E: serde::de::Error>(obj: &Map<String, Value>, key: &str) -> Result<i64, E> {
    match go_field(obj, key) {
        None => Err(E::custom(format!("missing field {key}"))),
        Some(v) => v.as_i64().ok_or_else(|| E::custom(format!("{key} is {v}, not an integer"))),
    }
}

fn go_string<E: serde::de::Error>(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, E> {
    match go_field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(E::custom(format!("{key} is {v}, not a string"))),
    }
}

impl<'de> Deserialize<'de> for PortMapping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let obj = Map::<String, Value>::deserialize(d)?;
        Ok(PortMapping {
            host_port: go_int(&obj, "hostPort")?,
            container_port: go_int(&obj, "containerPort")?,
            protocol: go_string(&obj, "protocol")?,
            host_ip: go_string(&obj, "hostIP")?,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ip = self.host_ip.as_deref().filter(|s| !s.is_empty()).map(|s| format!("{s}:")).unwrap_or_default();
        let proto = self.protocol.as_deref().unwrap_or("tcp");
        write!(f, "{ip}{}->{}/{proto}", self.host_port, self.container_port)
    }
}

/// `runtimeConfig`, its one key matched as Go's decoder does (see `PortMapping`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub port_mappings: Option<Vec<PortMapping>>,
}

impl<'de> Deserialize<'de> for RuntimeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let obj = Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default();
        let port_mappings = match go_field(&obj, "portMappings") {
            None => None,
            Some(v) => Some(Vec::<PortMapping>::deserialize(v).map_err(serde::de::Error::custom)?),
        };
        Ok(RuntimeConfig { port_mappings })
    }
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The keys of the request configuration netnat reads; every other key is left alone.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
    /// Hairpin and localhost masquerade (portmap's option; netnat always does both, see `Plugin`).
    #[serde(default)]
    pub snat: Option<bool>,
    #[serde(default, rename = "conditionsV4")]
    pub conditions_v4: Option<Value>,
    #[serde(default, rename = "conditionsV6")]
    pub conditions_v6: Option<Value>,
    /// Source networks allowed to reach the container's published ports (`netnat publish
    /// --allow`): an array of CIDRs, each applying to the mappings of its family.
    #[serde(default, rename = "allowFrom")]
    pub allow_from: Option<Value>,
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// The name an earlier draft of 1.1.0 used; the reference library sends both.
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments_legacy: Option<Vec<GcAttachment>>,
}

/// A request's configuration, decoded and checked for what netnat cannot do.
#[derive(Debug, Clone)]
pub struct Request {
    pub version: Version,
    pub conf: NetConf,
}

/// The cniVersion of a request, when stdin holds one netnat speaks: the version its error
/// must be written in. None for anything else (the error then uses the latest version).
pub fn reply_version(stdin: &[u8]) -> Option<Version> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        v: String,
    }
    serde_json::from_slice::<V>(stdin).ok().and_then(|v| Version::parse(&v.v))
}

/// Keys that DEL and GC do not read: they are dropped before decoding, so garbage in them
/// cannot fail a removal.
const UNUSED_BY_REMOVAL: &[&str] =
    &["runtimeConfig", "prevResult", "allowFrom", "conditionsV4", "conditionsV6", "snat", "capabilities"];

/// Decodes stdin: malformed JSON is error 6, a version netnat does not speak error 1, a 1.1.0
/// verb with an older config error 1, options netnat cannot honour error 2.
pub fn decode(stdin: &[u8], cmd: Command) -> Result<Request, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(code::DECODE, "failed to decode the network configuration on stdin", format!("{e}"))
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            code::DECODE,
            "failed to decode the network configuration on stdin",
            "it is not a JSON object",
        ));
    }
    let version_text = match value.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid_config("invalid cniVersion", format!("cniVersion {other} is not a string"))),
        None => return Err(invalid_config("missing cniVersion", "the network configuration has no cniVersion")),
    };
    let version = Version::parse(&version_text).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!("cniVersion '{version_text}' is not supported; netnat supports {}", supported_text()),
        )
    })?;
    if cmd == Command::Check && version < Version::V0_4_0 {
        // As the reference library: CHECK came with 0.4.0.
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "config version does not allow CHECK",
            format!("CHECK is a CNI 0.4.0 verb and the configuration has cniVersion {version}"),
        ));
    }
    if cmd.needs_1_1() && version < Version::V1_1_0 {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version does not allow {}", cmd.name()),
            format!("{} is a CNI 1.1.0 verb and the configuration has cniVersion {version}", cmd.name()),
        ));
    }
    let mut value = value;
    if matches!(cmd, Command::Del | Command::Gc) {
        // DEL and GC remove by attachment (network, container, interface): input they do not
        // need must not fail them, or the plugins before netnat in the chain never get their
        // DEL (a runtime tears down in reverse order) and leak a veth, a lease and a namespace.
        let obj = value.as_object_mut().expect("checked to be an object above");
        for key in UNUSED_BY_REMOVAL {
            obj.remove(*key);
        }
    }
    let conf: NetConf =
        serde_json::from_value(value).map_err(|e| invalid_config("invalid network configuration", format!("{e}")))?;
    for (key, v) in [("conditionsV4", &conf.conditions_v4), ("conditionsV6", &conf.conditions_v6)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("unsupported field {key}"),
                format!(
                    "{key} = {v}: these are iptables match strings (portmap's), which netnat cannot honour: it \
                     programs nftables maps, not iptables rules. Remove {key} from the netnat entry of the conflist"
                ),
            ));
        }
    }
    allow_from(&conf)?;
    if cmd != Command::Version && cmd != Command::Status {
        let name = conf
            .name
            .as_deref()
            .ok_or_else(|| invalid_config("missing network name", "the network configuration has no name"))?;
        check_id(name).map_err(|why| invalid_config("invalid network name", format!("network name '{name}' {why}")))?;
    }
    Ok(Request { version, conf })
}

pub fn supported_text() -> String {
    Version::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
}

/// VERSION's answer, in the version asked for (the latest when that is not one netnat speaks:
/// a runtime asks before it knows).
pub fn version_reply(stdin: &[u8]) -> String {
    let v = reply_version(stdin).unwrap_or(Version::LATEST);
    let supported: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
    serde_json::to_string(&json!({"cniVersion": v.as_str(), "supportedVersions": supported})).expect("serialises")
}

/// The container's addresses in prevResult: those of the interface named `ifname` in sandbox
/// `netns`, at most one per family (the first), as `[address]`. prevResult's `ips` point at
/// their interface by index; an address without an index is taken only when none has one that
/// matches (portmap's rule, for results that do not fill `interfaces`).
pub fn container_ips(prev: &Value, ifname: &str, netns: &str) -> Result<Vec<IpAddr>, CniError> {
    let bad = |what: String| invalid_config("invalid prevResult", what);
    let ifaces = match prev.get("interfaces") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(other) => return Err(bad(format!("prevResult.interfaces is {other}, not a list"))),
    };
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(other) => return Err(bad(format!("prevResult.ips is {other}, not a list"))),
    };
    let is_ours = |i: usize| {
        ifaces.get(i).is_some_and(|f| {
            f.get("name").and_then(Value::as_str) == Some(ifname)
                && f.get("sandbox").and_then(Value::as_str) == Some(netns)
        })
    };
    let mut matched = vec![];
    let mut unindexed = vec![];
    for (n, ip) in ips.iter().enumerate() {
        let Some(addr) = ip.get("address").and_then(Value::as_str) else {
            return Err(bad(format!("prevResult.ips[{n}] has no address")));
        };
        let bare = addr.split_once('/').map(|(a, _)| a).unwrap_or(addr);
        let Ok(parsed) = bare.parse::<IpAddr>() else {
            return Err(bad(format!("prevResult.ips[{n}].address '{addr}' is not an address in CIDR form")));
        };
        match ip.get("interface") {
            None | Some(Value::Null) => unindexed.push(parsed),
            Some(i) => match i.as_u64() {
                Some(i) if is_ours(i as usize) => matched.push(parsed),
                Some(_) => {}
                None => return Err(bad(format!("prevResult.ips[{n}].interface {i} is not an index"))),
            },
        }
    }
    let chosen = if matched.is_empty() { unindexed } else { matched };
    let mut out: Vec<IpAddr> = vec![];
    for ip in chosen {
        if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// ADD's result: prevResult handed on, as the spec asks of a plugin that changes nothing in it,
/// in the request's version. 0.4.0 results carry `version` ("4"/"6") in each IP; 1.x removed it.
pub fn result_of(prev: &Value, version: Version) -> Value {
    let mut out = prev.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                if version >= Version::V1_0_0 {
                    ip.remove("version");
                } else if !ip.contains_key("version") {
                    let v6 = ip.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':'));
                    ip.insert("version".into(), Value::String(if v6 { "6" } else { "4" }.into()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::read(|k| map.get(k).cloned())
    }

    #[test]
    fn environment_is_checked_per_verb() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(e.command(), Ok(Command::Add));
        let err = e.attachment(Command::Add).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.details.contains("CNI_NETNS"), "{err}");
        // DEL works without a namespace.
        assert_eq!(e.attachment(Command::Del).unwrap(), ("abc".into(), "eth0".into(), None));
        let err = env(&[("CNI_COMMAND", "FROB")]).command().unwrap_err();
        assert!(err.details.contains("'FROB'"), "{err}");
        assert!(env(&[]).command().unwrap_err().details.contains("CNI_COMMAND is not set"));
        let bad_id = env(&[("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/n")]);
        assert!(bad_id.attachment(Command::Add).unwrap_err().details.contains("'-x'"));
        let bad_if = env(&[("CNI_CONTAINERID", "a"), ("CNI_IFNAME", "a/b"), ("CNI_NETNS", "/n")]);
        assert!(bad_if.attachment(Command::Add).unwrap_err().details.contains("CNI_IFNAME"));
        // Empty is missing.
        assert_eq!(env(&[("CNI_NETNS", "")]).netns, None);
    }

    #[test]
    fn decode_gives_the_spec_codes() {
        let d = |s: &str, c| decode(s.as_bytes(), c).map(|_| ()).map_err(|e| (e.code, e.to_string()));
        assert_eq!(d("not json", Command::Add).unwrap_err().0, code::DECODE);
        assert_eq!(d("[1]", Command::Add).unwrap_err().0, code::DECODE);
        let e = d(r#"{"cniVersion":"9.9.9","name":"n"}"#, Command::Add).unwrap_err();
        assert_eq!(e.0, code::INCOMPATIBLE_VERSION);
        assert!(e.1.contains("'9.9.9'") && e.1.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{}", e.1);
        assert_eq!(d(r#"{"name":"n"}"#, Command::Add).unwrap_err().0, code::INVALID_CONFIG);
        assert_eq!(d(r#"{"cniVersion":"1.0.0","name":"n"}"#, Command::Gc).unwrap_err().0, code::INCOMPATIBLE_VERSION);
        assert_eq!(d(r#"{"cniVersion":"1.1.0","name":"n"}"#, Command::Gc), Ok(()));
        // 0.3.x (Flannel's conflist) for ADD and DEL; CHECK came with 0.4.0.
        assert_eq!(d(r#"{"cniVersion":"0.3.1","name":"n"}"#, Command::Add), Ok(()));
        assert_eq!(d(r#"{"cniVersion":"0.3.0","name":"n"}"#, Command::Del), Ok(()));
        let e = d(r#"{"cniVersion":"0.3.1","name":"n"}"#, Command::Check).unwrap_err();
        assert_eq!(e.0, code::INCOMPATIBLE_VERSION);
        assert!(e.1.contains("CHECK") && e.1.contains("0.3.1"), "{}", e.1);
        assert_eq!(d(r#"{"cniVersion":"0.4.0"}"#, Command::Add).unwrap_err().0, code::INVALID_CONFIG);
        assert_eq!(d(r#"{"cniVersion":"1.0.0","name":"a/b"}"#, Command::Add).unwrap_err().0, code::INVALID_CONFIG);
        // A port of the wrong type is a config error that names it.
        let e = d(r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"hostPort":"x","containerPort":1}]}}"#, Command::Add).unwrap_err();
        assert_eq!(e.0, code::INVALID_CONFIG);
        assert!(e.1.contains("\"x\""), "{}", e.1);
    }

    #[test]
    fn iptables_conditions_are_refused_by_name_and_allow_from_checked() {
        let e =
            decode(br#"{"cniVersion":"0.4.0","name":"n","conditionsV4":["-s","1.2.3.4"]}"#, Command::Add).unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(
            e.msg.contains("conditionsV4") && e.details.contains("iptables") && e.details.contains("1.2.3.4"),
            "{e}"
        );
        let e =
            decode(br#"{"cniVersion":"0.4.0","name":"n","conditionsV6":["-s","::1"]}"#, Command::Check).unwrap_err();
        assert!(e.msg.contains("conditionsV6"), "{e}");
        // DEL does not read them: it removes by attachment whatever the request carries.
        assert!(decode(br#"{"cniVersion":"0.4.0","name":"n","conditionsV6":["-s","::1"]}"#, Command::Del).is_ok());
        let r = decode(br#"{"cniVersion":"1.1.0","name":"n","allowFrom":["10.0.0.0/8","fd00::/8"]}"#, Command::Add);
        assert_eq!(allow_from(&r.unwrap().conf).unwrap().len(), 2);
        for bad in [r#"["10.0.0.1/8"]"#, r#""10.0.0.0/8""#, r#"[8]"#] {
            let text = format!(r#"{{"cniVersion":"1.1.0","name":"n","allowFrom":{bad}}}"#);
            let e = decode(text.as_bytes(), Command::Add).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad}: {e}");
            assert!(e.details.contains("allowFrom"), "{e}");
        }
        assert!(decode(br#"{"cniVersion":"1.1.0","name":"n","conditionsV4":null}"#, Command::Add).is_ok());
    }

    #[test]
    fn port_mappings_are_read_as_go_reads_them() {
        let conf = |pm: &str| {
            let text = format!(r#"{{"cniVersion":"1.0.0","name":"n","runtimeConfig":{{"portMappings":[{pm}]}}}}"#);
            decode(text.as_bytes(), Command::Add).map(|r| r.conf.runtime_config.port_mappings.unwrap().remove(0))
        };
        let want = PortMapping { host_port: 9090, container_port: 8080, protocol: Some("tcp".into()), host_ip: None };
        // containerd 1.6's CRI: Go field names, no JSON tags, an empty HostIP.
        let containerd = conf(r#"{"HostPort":9090,"ContainerPort":8080,"Protocol":"tcp","HostIP":""}"#).unwrap();
        assert_eq!(containerd, PortMapping { host_ip: Some(String::new()), ..want.clone() });
        // CRI-O (ocicni's PortMapping tags) and Podman: the tagged names.
        let crio = conf(r#"{"hostPort":9090,"containerPort":8080,"protocol":"tcp","hostIP":""}"#).unwrap();
        assert_eq!(crio, containerd);
        let lower = conf(r#"{"hostport":9090,"containerport":8080,"protocol":"tcp","hostip":null,"extra":1}"#).unwrap();
        assert_eq!(lower, want);
        // An exact match wins over another casing, as in Go.
        let both = conf(r#"{"HostPort":1,"hostPort":9090,"containerPort":8080,"protocol":"tcp"}"#).unwrap();
        assert_eq!(both.host_port, 9090);
        let e = conf(r#"{"ContainerPort":8080}"#).unwrap_err();
        assert!(e.details.contains("missing field hostPort"), "{e}");
        let e = conf(r#"{"HostPort":"9090","ContainerPort":8080}"#).unwrap_err();
        assert!(e.details.contains("hostPort is \"9090\""), "{e}");
        // The capability key itself is matched the same way.
        let text =
            br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"PortMappings":[{"HostPort":1,"ContainerPort":2}]}}"#;
        let r = decode(text, Command::Add).unwrap();
        assert_eq!(r.conf.runtime_config.port_mappings.unwrap()[0].host_port, 1);
    }

    #[test]
    fn del_and_gc_ignore_what_they_do_not_read() {
        let garbage = br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"portMappings":[{"HostPort":"x"}]},
            "prevResult":"not a result","allowFrom":"10.0.0.1/8","snat":"maybe"}"#;
        assert_eq!(decode(garbage, Command::Add).unwrap_err().code, code::INVALID_CONFIG);
        let r = decode(garbage, Command::Del).unwrap();
        assert_eq!(r.conf.name.as_deref(), Some("n"));
        assert!(r.conf.runtime_config.port_mappings.is_none() && r.conf.prev_result.is_none());
        assert!(decode(garbage, Command::Gc).is_ok());
        // What DEL does need is still checked.
        assert_eq!(decode(br#"{"cniVersion":"1.1.0"}"#, Command::Del).unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn gc_reads_both_attachment_keys() {
        let r = decode(
            br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
            Command::Gc,
        )
        .unwrap();
        assert_eq!(
            r.conf.valid_attachments.unwrap(),
            vec![GcAttachment { container_id: "a".into(), ifname: "eth0".into() }]
        );
        let r = decode(br#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[]}"#, Command::Gc).unwrap();
        assert_eq!(r.conf.attachments_legacy, Some(vec![]));
    }

    #[test]
    fn version_answers_in_the_asked_version() {
        let v: Value = serde_json::from_str(&version_reply(br#"{"cniVersion":"0.4.0"}"#)).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
        let v: Value = serde_json::from_str(&version_reply(b"")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_are_the_spec_object() {
        let e = CniError::new(code::PORT_TAKEN, "m", "d");
        let v: Value = serde_json::from_str(&e.to_json(Version::V0_4_0)).unwrap();
        assert_eq!(v, json!({"cniVersion": "0.4.0", "code": 100, "msg": "m", "details": "d"}));
        assert_eq!(e.exit_status(), 1);
        assert_eq!(CniError::new(code::DECODE, "", "").exit_status(), 2);
    }

    /// The bridge plugin's result: the bridge, the host veth, the container's eth0.
    fn bridge_result(version: &str) -> Value {
        let v = |s: &str| if version == "0.4.0" { json!(s) } else { Value::Null };
        let mut r = json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/c1"}
            ],
            "ips": [
                {"version": v("4"), "address": "10.88.0.2/16", "gateway": "10.88.0.1", "interface": 2},
                {"version": v("6"), "address": "fd00:88::2/64", "gateway": "fd00:88::1", "interface": 2},
                {"version": v("4"), "address": "10.88.0.99/16", "interface": 2}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        for ip in r["ips"].as_array_mut().unwrap() {
            if ip["version"].is_null() {
                ip.as_object_mut().unwrap().remove("version");
            }
        }
        r
    }

    #[test]
    fn container_ips_come_from_the_named_interface_in_the_sandbox() {
        for v in ["0.4.0", "1.0.0"] {
            let r = bridge_result(v);
            let ips = container_ips(&r, "eth0", "/run/netns/c1").unwrap();
            assert_eq!(ips, ["10.88.0.2".parse::<IpAddr>().unwrap(), "fd00:88::2".parse().unwrap()], "{v}");
            assert!(container_ips(&r, "eth1", "/run/netns/c1").unwrap().is_empty());
            assert!(container_ips(&r, "eth0", "/run/netns/other").unwrap().is_empty());
        }
        // An address on the host side (the bridge's) is never the container's.
        let mut r = bridge_result("1.0.0");
        r["ips"] = json!([{"address": "10.88.0.1/16", "interface": 0}, {"address": "10.88.0.5/16", "interface": 2}]);
        assert_eq!(container_ips(&r, "eth0", "/run/netns/c1").unwrap(), ["10.88.0.5".parse::<IpAddr>().unwrap()]);
        // No indexes at all: the addresses are taken as they are.
        let r = json!({"ips": [{"address": "10.1.0.7/24"}]});
        assert_eq!(container_ips(&r, "eth0", "/n").unwrap(), ["10.1.0.7".parse::<IpAddr>().unwrap()]);
        let bad = json!({"ips": [{"address": "ten/8", "interface": 0}]});
        assert!(container_ips(&bad, "eth0", "/n").unwrap_err().details.contains("'ten/8'"));
        assert!(container_ips(&json!({}), "eth0", "/n").unwrap().is_empty());
    }

    #[test]
    fn result_is_prev_result_in_the_requested_version() {
        let old = bridge_result("0.4.0");
        let new = result_of(&old, Version::V1_0_0);
        assert_eq!(new["cniVersion"], "1.0.0");
        assert!(new["ips"].as_array().unwrap().iter().all(|ip| ip.get("version").is_none()));
        assert_eq!(new["interfaces"], old["interfaces"]);
        assert_eq!(new["routes"], old["routes"]);
        let back = result_of(&new, Version::V0_4_0);
        assert_eq!(back, old);
        // 0.3.x results have 0.4.0's shape.
        let flannel = result_of(&new, Version::V0_3_1);
        assert_eq!((flannel["cniVersion"].clone(), flannel["ips"][0]["version"].clone()), (json!("0.3.1"), json!("4")));
        // Unknown keys are handed on.
        let mut x = bridge_result("1.1.0");
        x["somethingNew"] = json!({"k": 1});
        assert_eq!(result_of(&x, Version::V1_1_0), x);
    }
}
