//! What a CNI request means for netnat's record (pure): the mappings an ADD asks for, the
//! attachments a GC finds stale, and what CHECK compares. Changing the record and the kernel is
//! the engine's one mapping operation (`engine::mapping`): ADD, DEL and GC only say what they
//! want there, in its terms.

use super::spec::{code, CniError, PortMapping};
use crate::model::{AttachmentId, Mapping, Proto, PublishSpec, State, Target};
use crate::nft::LiveTable;
use crate::ruleset;
use std::collections::BTreeSet;
use std::net::IpAddr;

fn invalid(msg: &str, details: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg, details)
}

/// The mappings of `runtimeConfig.portMappings` for a container at `ips` (one per family):
/// each entry goes to every family the container has, or, with a `hostIP`, to that address's
/// family only. Each becomes a netnat `Mapping` through the publish spec's own checks (ports,
/// addresses), as `netnat publish` makes them; conflicts are the engine's to find.
/// The claim tokens of the host ports a DEL's configuration names (`tcp-8080`), read best effort
/// from the raw request (DEL's decoding leaves runtimeConfig out: it must succeed whatever that
/// holds). With them a DEL finds a claim whose attachment file was lost, and refuses.
pub fn port_tokens(stdin: &[u8]) -> Vec<String> {
    fn field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
        v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(stdin) else { return vec![] };
    let entries = field(&v, "runtimeConfig").and_then(|r| field(r, "portMappings")).and_then(|p| p.as_array());
    entries
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let port = field(e, "hostPort")?.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0)?;
            let proto = field(e, "protocol").and_then(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("tcp");
            Some(crate::state::port_token(proto.to_ascii_lowercase().parse().ok()?, port))
        })
        .collect()
}

pub fn wanted_mappings(entries: &[PortMapping], ips: &[IpAddr]) -> Result<Vec<Mapping>, CniError> {
    let mut out: Vec<Mapping> = vec![];
    for e in entries {
        let port = |p: i64, what: &str| -> Result<u16, CniError> {
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                invalid("invalid port mapping", format!("{what} {p} in port mapping {e} is not a port (1-65535)"))
            })
        };
        let (hp, cp) = (port(e.host_port, "hostPort")?, port(e.container_port, "containerPort")?);
        let protocol: Proto =
            e.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("tcp").to_ascii_lowercase().parse().map_err(
                |err: crate::model::InputError| invalid("invalid port mapping", format!("{err} (in port mapping {e})")),
            )?;
        let host_ip = match e.host_ip.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(crate::model::parse_ip(s, "hostIP").map_err(|err| invalid("invalid port mapping", err.0))?),
        };
        let targets: Vec<IpAddr> = match host_ip {
            None => ips.to_vec(),
            Some(h) => ips.iter().copied().filter(|c| c.is_ipv4() == h.is_ipv4()).collect(),
        };
        if targets.is_empty() {
            let fam = if host_ip.is_some_and(|h| h.is_ipv6()) {
                "IPv6 "
            } else if host_ip.is_some() {
                "IPv4 "
            } else {
                ""
            };
            return Err(invalid(
                "no container address for a port mapping",
                format!("port mapping {e}: prevResult gives the container no {fam}address on its interface"),
            ));
        }
        for c in targets {
            let spec = PublishSpec {
                text: e.to_string(),
                protocol,
                host_ip,
                host_if: None,
                host_ports: (hp, hp),
                target: Target::Addr(c),
                container_ports: (cp, cp),
            };
            let m = spec
                .resolve(&State::default())
                .map_err(|err| invalid("invalid port mapping", format!("{} (port mapping {e})", err.0)))?;
            for m in m {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}

/// GC: the attachments of `network` that the runtime does not list as valid.
pub fn stale(state: &State, network: &str, valid: &[(String, String)]) -> Vec<AttachmentId> {
    let valid: BTreeSet<(&str, &str)> = valid.iter().map(|(c, i)| (c.as_str(), i.as_str())).collect();
    state
        .attachments
        .values()
        .filter(|a| a.network == network && !valid.contains(&(a.container_id.as_str(), a.ifname.as_str())))
        .map(crate::model::Attachment::id)
        .collect()
}

/// CHECK against the record: the attachment owns exactly what this request asks for, and all
/// of it is still published.
pub fn check_record(state: &State, id: &AttachmentId, wanted: &[Mapping]) -> Result<(), CniError> {
    let fail = |details: String| {
        CniError::new(code::FAILED, "the container's port mappings are not as ADD made them", details)
    };
    let a = state.attachments.get(&id.key());
    let owned: Vec<Mapping> = a.map(|a| [&a.mappings[..], &a.standby[..]].concat()).unwrap_or_default();
    if let Some(m) = wanted.iter().find(|m| !owned.contains(m)) {
        return Err(fail(format!(
            "{id}: {m} is not recorded as published for it (not added, or taken away by `netnat unpublish`)"
        )));
    }
    if let Some(m) = owned.iter().find(|m| !wanted.contains(m)) {
        return Err(fail(format!("{id}: {m} is recorded for it but not asked for by this configuration")));
    }
    if let Some(m) = a.into_iter().flat_map(|a| &a.mappings).find(|m| !state.mappings.contains(m)) {
        return Err(fail(format!("{id}: {m} was unpublished (by `netnat unpublish`?)")));
    }
    Ok(())
}

/// CHECK against the kernel: netnat's rules are in place and every element of the attachment's
/// active mappings is in the live table with its target (standby ones are not in the kernel).
pub fn check_kernel(
    state: &State,
    id: &AttachmentId,
    wanted: &[Mapping],
    live: Option<&LiveTable>,
) -> Result<(), CniError> {
    let fail =
        |details: String| CniError::new(code::FAILED, "the container's port mappings are not in the kernel", details);
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(live) = live else {
        return Err(fail(format!("{id}: table inet {} does not exist (run `netnat reload`)", ruleset::TABLE)));
    };
    let rules_only = ruleset::Desired::rules_only(state);
    if !ruleset::plan(&rules_only, Some(live)).is_empty() {
        return Err(fail(format!("table inet {}'s rules differ from netnat's (run `netnat reload`)", ruleset::TABLE)));
    }
    let active = state.attachments.get(&id.key()).map(|a| a.mappings.as_slice()).unwrap_or_default();
    for m in wanted.iter().filter(|m| active.contains(m)) {
        for (set, key, data) in ruleset::mapping_elems(m, state.is_routed(m), state.allow_of(m), state.counting) {
            let present = live.elems.get(set).is_some_and(|es| es.iter().any(|e| e.key == key && e.data == data));
            if !present {
                return Err(fail(format!("{id}: the element of {m} in {set} is missing (run `netnat reload`)")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str) -> AttachmentId {
        AttachmentId { network: "podman".into(), container_id: c.into(), ifname: "eth0".into() }
    }
    fn pm(h: i64, c: i64, proto: &str, host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port: h,
            container_port: c,
            protocol: Some(proto.into()),
            host_ip: host_ip.map(String::from),
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn m(s: &str) -> Mapping {
        s.parse().unwrap()
    }
    fn texts(v: &[Mapping]) -> Vec<String> {
        v.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn port_mappings_follow_the_container_families() {
        let dual = [ip("10.88.0.2"), ip("fd00:88::2")];
        let got = wanted_mappings(&[pm(8080, 80, "tcp", None), pm(5353, 53, "UDP", None)], &dual).unwrap();
        assert_eq!(
            texts(&got),
            ["8080:10.88.0.2:80/tcp", "8080:[fd00:88::2]:80/tcp", "5353:10.88.0.2:53/udp", "5353:[fd00:88::2]:53/udp"]
        );
        let got = wanted_mappings(&[pm(8080, 80, "tcp", Some("127.0.0.1"))], &dual).unwrap();
        assert_eq!(texts(&got), ["127.0.0.1:8080:10.88.0.2:80/tcp"]);
        // "every address" written out is the same as none.
        let got =
            wanted_mappings(&[pm(8080, 80, "tcp", Some("0.0.0.0")), pm(8080, 80, "tcp", Some("::"))], &dual).unwrap();
        assert_eq!(texts(&got), ["8080:10.88.0.2:80/tcp", "8080:[fd00:88::2]:80/tcp"]);
        let none = PortMapping { host_port: 1, container_port: 2, protocol: None, host_ip: Some(String::new()) };
        assert_eq!(texts(&wanted_mappings(&[none], &dual[..1]).unwrap()), ["1:10.88.0.2:2/tcp"]);
    }

    #[test]
    fn bad_port_mappings_are_refused_naming_the_value() {
        let v4 = [ip("10.88.0.2")];
        let e = |p: PortMapping| wanted_mappings(&[p], &v4).unwrap_err();
        assert!(e(pm(70000, 80, "tcp", None)).details.contains("hostPort 70000"));
        assert!(e(pm(80, 0, "tcp", None)).details.contains("containerPort 0"));
        assert!(e(pm(80, 80, "icmp", None)).details.contains("'icmp'"));
        assert!(e(pm(80, 80, "tcp", Some("1.2.3.x"))).details.contains("'1.2.3.x'"));
        assert!(e(pm(80, 80, "tcp", Some("2001:db8::1"))).details.contains("no IPv6 address"));
        // Identical entries are one mapping; no address at all is an error that says so.
        assert_eq!(wanted_mappings(&[pm(80, 80, "tcp", None), pm(80, 80, "tcp", None)], &v4).unwrap().len(), 1);
        assert!(wanted_mappings(&[pm(80, 80, "tcp", None)], &[]).unwrap_err().details.contains("no address"));
    }

    /// An ADD as the engine plans it.
    fn plan_add(st: &mut State, id: &AttachmentId, maps: Vec<Mapping>) -> anyhow::Result<()> {
        use crate::engine::mapping::{plan, Change};
        *st = plan(st, &Change::Attach { id: id.clone(), maps, allow: vec![] })?.0;
        Ok(())
    }

    #[test]
    fn gc_finds_unlisted_attachments_of_its_network_only() {
        let mut st = State::default();
        plan_add(&mut st, &id("keep"), vec![m("8080:10.88.0.2:80")]).unwrap();
        plan_add(&mut st, &id("stale"), vec![m("8081:10.88.0.3:80")]).unwrap();
        let other = AttachmentId { network: "other".into(), container_id: "x".into(), ifname: "eth0".into() };
        plan_add(&mut st, &other, vec![m("8082:10.89.0.3:80")]).unwrap();
        assert_eq!(stale(&st, "podman", &[("keep".into(), "eth0".into())]), vec![id("stale")]);
        // An attachment is its container AND interface.
        assert_eq!(stale(&st, "podman", &[("keep".into(), "eth1".into())]), vec![id("keep"), id("stale")]);
        assert!(stale(&st, "other", &[("x".into(), "eth0".into())]).is_empty());
    }

    #[test]
    fn check_compares_record_and_kernel() {
        let mut st = State::default();
        let want = vec![m("8080:10.88.0.2:80")];
        assert!(check_record(&st, &id("a"), &want).is_err());
        plan_add(&mut st, &id("a"), want.clone()).unwrap();
        assert_eq!(check_record(&st, &id("a"), &want), Ok(()));
        assert!(check_record(&st, &id("a"), &[]).unwrap_err().details.contains("not asked for"));
        let live = ruleset::fake::live_after(&ruleset::desired(&st), 0, 0);
        assert_eq!(check_kernel(&st, &id("a"), &want, Some(&live)), Ok(()));
        assert!(check_kernel(&st, &id("a"), &want, None).is_err());
        let mut gone = live.clone();
        gone.elems.values_mut().for_each(Vec::clear);
        assert!(check_kernel(&st, &id("a"), &want, Some(&gone)).unwrap_err().details.contains("missing"));
        st.mappings.clear();
        assert!(check_record(&st, &id("a"), &want).unwrap_err().details.contains("unpublished"));
    }

    #[test]
    fn a_del_names_its_host_ports_best_effort() {
        let text = br#"{"name":"n","RuntimeConfig":{"PortMappings":[{"HostPort":8080,"ContainerPort":80},
            {"hostPort":53,"protocol":"UDP"},{"hostPort":"x"},{"hostPort":0},{"hostPort":1,"protocol":"icmp"}]}}"#;
        assert_eq!(port_tokens(text), ["tcp-8080", "udp-53"]);
        assert!(port_tokens(b"garbage").is_empty() && port_tokens(br#"{"runtimeConfig":5}"#).is_empty());
    }
}
