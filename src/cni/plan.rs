//! What a CNI request changes in netnat's record (pure): the mappings an ADD asks for, who owns
//! what, and what DEL, GC and CHECK find. Every function here takes the record as a value and
//! returns the element changes for the adapter to send; nothing here touches the kernel.

use super::spec::{code, CniError, PortMapping};
use crate::model::{ip_text, Attachment, AttachmentId, Mapping, Proto, State};
use crate::nft::LiveTable;
use crate::ruleset;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The mappings a change adds to and removes from `State.mappings` (the adapter sends exactly
/// these elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub added: Vec<Mapping>,
    pub removed: Vec<Mapping>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

fn invalid(msg: &str, details: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg, details)
}

/// The mappings of `runtimeConfig.portMappings` for a container at `ips` (one per family):
/// each entry goes to every family the container has, or, with a `hostIP`, to that address's
/// family only. Each becomes a netnat `Mapping` through the CLI's own parser, so it gets the
/// same checks (ports, addresses) as `netnat publish`.
pub fn wanted_mappings(entries: &[PortMapping], ips: &[IpAddr]) -> Result<Vec<Mapping>, CniError> {
    let mut out: Vec<Mapping> = vec![];
    for e in entries {
        let port = |p: i64, what: &str| -> Result<u16, CniError> {
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                invalid("invalid port mapping", format!("{what} {p} in port mapping {e} is not a port (1-65535)"))
            })
        };
        let (hp, cp) = (port(e.host_port, "hostPort")?, port(e.container_port, "containerPort")?);
        let proto: Proto =
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
            let host = host_ip.map(|h| format!("{}:", ip_text(h))).unwrap_or_default();
            let spec = format!("{host}{hp}:{}:{cp}/{proto}", ip_text(c));
            let m: Mapping = spec.parse().map_err(|err: crate::model::InputError| {
                invalid("invalid port mapping", format!("{err} (port mapping {e})"))
            })?;
            if out.contains(&m) {
                continue;
            }
            if let Some(o) = out.iter().find(|o| o.conflicts_with(&m)) {
                return Err(invalid(
                    "conflicting port mappings",
                    format!("{m} and {o} publish the same host port in one request"),
                ));
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// Who holds a mapping, for an error message.
fn holder(state: &State, m: &Mapping) -> String {
    match state.owner_of(m) {
        Some(a) => a.id().to_string(),
        None => "`netnat publish` (a mapping of the netnat command line)".into(),
    }
}

/// ADD: the attachment owns `wanted`. A host port held by another attachment or by the CLI is
/// refused, naming the holder. An ADD for an attachment that is already recorded (a runtime
/// retrying an ADD) replaces what it owned.
pub fn plan_add(state: &mut State, id: &AttachmentId, wanted: Vec<Mapping>) -> Result<Change, CniError> {
    let key = id.key();
    let old: Vec<Mapping> = state.attachments.get(&key).map(|a| a.mappings.clone()).unwrap_or_default();
    for m in &wanted {
        if let Some(o) = state.mappings.iter().find(|o| o.conflicts_with(m) && !old.contains(o)) {
            return Err(CniError::new(
                code::PORT_TAKEN,
                format!("host port {} is already published", m.host_spec()),
                format!(
                    "{id} asks for {m}, but host port {} is already published as {o} for {}",
                    m.host_spec(),
                    holder(state, o)
                ),
            ));
        }
    }
    let change = Change {
        added: wanted.iter().filter(|m| !old.contains(m)).copied().collect(),
        removed: old.iter().filter(|m| !wanted.contains(m) && state.mappings.contains(m)).copied().collect(),
    };
    state.mappings.retain(|m| !change.removed.contains(m));
    state.mappings.extend(change.added.iter().copied());
    if wanted.is_empty() {
        state.attachments.remove(&key);
    } else {
        state.attachments.insert(
            key,
            Attachment {
                network: id.network.clone(),
                container_id: id.container_id.clone(),
                ifname: id.ifname.clone(),
                mappings: wanted,
            },
        );
    }
    Ok(change)
}

/// DEL: the attachment's mappings go, and nothing else. Nothing recorded: nothing to do.
pub fn plan_del(state: &mut State, id: &AttachmentId) -> Change {
    let Some(a) = state.attachments.remove(&id.key()) else {
        return Change::default();
    };
    // Only what is still published: `netnat unpublish` may have taken one away meanwhile.
    let removed: Vec<Mapping> = a.mappings.into_iter().filter(|m| state.mappings.contains(m)).collect();
    state.mappings.retain(|m| !removed.contains(m));
    Change { added: vec![], removed }
}

/// GC: every attachment of `network` that the runtime does not list as valid is deleted.
/// Returns the change and the attachments it removed.
pub fn plan_gc(state: &mut State, network: &str, valid: &[(String, String)]) -> (Change, Vec<AttachmentId>) {
    let valid: BTreeSet<(&str, &str)> = valid.iter().map(|(c, i)| (c.as_str(), i.as_str())).collect();
    let stale: Vec<AttachmentId> = state
        .attachments
        .values()
        .filter(|a| a.network == network && !valid.contains(&(a.container_id.as_str(), a.ifname.as_str())))
        .map(Attachment::id)
        .collect();
    let mut change = Change::default();
    for id in &stale {
        change.removed.extend(plan_del(state, id).removed);
    }
    (change, stale)
}

/// CHECK against the record: the attachment owns exactly what this request asks for, and all
/// of it is still published.
pub fn check_record(state: &State, id: &AttachmentId, wanted: &[Mapping]) -> Result<(), CniError> {
    let fail = |details: String| {
        CniError::new(code::FAILED, "the container's port mappings are not as ADD made them", details)
    };
    let owned = state.attachments.get(&id.key()).map(|a| a.mappings.as_slice()).unwrap_or_default();
    if let Some(m) = wanted.iter().find(|m| !owned.contains(m)) {
        return Err(fail(format!("{id}: {m} is not recorded as published for it")));
    }
    if let Some(m) = owned.iter().find(|m| !wanted.contains(m)) {
        return Err(fail(format!("{id}: {m} is recorded for it but not asked for by this configuration")));
    }
    if let Some(m) = owned.iter().find(|m| !state.mappings.contains(m)) {
        return Err(fail(format!("{id}: {m} was unpublished (by `netnat unpublish`?)")));
    }
    Ok(())
}

/// CHECK against the kernel: netnat's rules are in place and every element of the mappings is
/// in the live table with its target.
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
    let rules_only = ruleset::Desired { rules: ruleset::desired_rules(state), elems: Default::default() };
    if !ruleset::plan(&rules_only, Some(live)).is_empty() {
        return Err(fail(format!("table inet {}'s rules differ from netnat's (run `netnat reload`)", ruleset::TABLE)));
    }
    for m in wanted {
        for (set, key, data) in ruleset::mapping_elems(m, state.is_routed(m), state.allow_of(m)) {
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
        let e = wanted_mappings(&[pm(80, 80, "tcp", None), pm(80, 81, "tcp", None)], &v4).unwrap_err();
        assert!(e.details.contains("same host port"), "{e}");
        assert_eq!(e.code, code::INVALID_CONFIG);
        // Identical entries are one mapping; no address at all is an error that says so.
        assert_eq!(wanted_mappings(&[pm(80, 80, "tcp", None), pm(80, 80, "tcp", None)], &v4).unwrap().len(), 1);
        assert!(wanted_mappings(&[pm(80, 80, "tcp", None)], &[]).unwrap_err().details.contains("no address"));
    }

    #[test]
    fn add_del_own_exactly_their_mappings() {
        let mut st = State::default();
        let cli = m("7000:10.0.0.9:70");
        st.mappings.push(cli);
        let a = vec![m("8080:10.88.0.2:80"), m("5353:10.88.0.2:53/udp")];
        let ch = plan_add(&mut st, &id("a"), a.clone()).unwrap();
        assert_eq!(ch, Change { added: a.clone(), removed: vec![] });
        let b = vec![m("8081:10.88.0.3:80")];
        plan_add(&mut st, &id("b"), b.clone()).unwrap();
        assert_eq!(st.mappings.len(), 4);
        assert_eq!(st.owner_of(&a[0]).unwrap().container_id, "a");
        // DEL of a removes a's two mappings, and neither b's nor the CLI's.
        assert_eq!(plan_del(&mut st, &id("a")), Change { added: vec![], removed: a });
        assert_eq!(st.mappings, vec![cli, b[0]]);
        // DEL again: nothing.
        assert_eq!(plan_del(&mut st, &id("a")), Change::default());
        assert_eq!(st.attachments.len(), 1);
    }

    #[test]
    fn a_taken_host_port_names_its_holder() {
        let mut st = State::default();
        plan_add(&mut st, &id("first"), vec![m("8080:10.88.0.2:80")]).unwrap();
        let before = st.clone();
        let e = plan_add(&mut st, &id("second"), vec![m("8080:10.88.0.3:80")]).unwrap_err();
        assert_eq!(e.code, code::PORT_TAKEN);
        assert!(e.details.contains("container first") && e.details.contains("container second"), "{e}");
        assert_eq!(st, before, "a refused ADD changes nothing");
        // The same mapping published by the CLI: the CLI holds it.
        st.mappings.push(m("9090:10.88.0.3:80"));
        let e = plan_add(&mut st, &id("second"), vec![m("9090:10.88.0.3:80")]).unwrap_err();
        assert!(e.details.contains("netnat publish"), "{e}");
        // Another protocol, host address or family is not a conflict.
        plan_add(&mut st, &id("third"), vec![m("8080:10.88.0.4:80/udp"), m("8080:[fd00::4]:80")]).unwrap();
    }

    #[test]
    fn a_repeated_add_replaces_what_the_attachment_owned() {
        let mut st = State::default();
        plan_add(&mut st, &id("a"), vec![m("8080:10.88.0.2:80"), m("8081:10.88.0.2:81")]).unwrap();
        let ch = plan_add(&mut st, &id("a"), vec![m("8081:10.88.0.2:81"), m("8082:10.88.0.2:82")]).unwrap();
        assert_eq!(texts(&ch.added), ["8082:10.88.0.2:82/tcp"]);
        assert_eq!(texts(&ch.removed), ["8080:10.88.0.2:80/tcp"]);
        assert_eq!(texts(&st.mappings), ["8081:10.88.0.2:81/tcp", "8082:10.88.0.2:82/tcp"]);
        // An ADD without mappings of a recorded attachment drops its record.
        plan_add(&mut st, &id("a"), vec![]).unwrap();
        assert!(st.mappings.is_empty() && st.attachments.is_empty());
    }

    #[test]
    fn gc_removes_unlisted_attachments_of_its_network_only() {
        let mut st = State::default();
        plan_add(&mut st, &id("keep"), vec![m("8080:10.88.0.2:80")]).unwrap();
        plan_add(&mut st, &id("stale"), vec![m("8081:10.88.0.3:80")]).unwrap();
        let other = AttachmentId { network: "other".into(), container_id: "x".into(), ifname: "eth0".into() };
        plan_add(&mut st, &other, vec![m("8082:10.89.0.3:80")]).unwrap();
        let (ch, gone) = plan_gc(&mut st, "podman", &[("keep".into(), "eth0".into())]);
        assert_eq!(gone, vec![id("stale")]);
        assert_eq!(texts(&ch.removed), ["8081:10.88.0.3:80/tcp"]);
        assert_eq!(st.attachments.len(), 2);
        // Once clean, GC finds nothing.
        assert_eq!(plan_gc(&mut st, "podman", &[("keep".into(), "eth0".into())]).0, Change::default());
        // An attachment is its container AND interface.
        let (_, gone) = plan_gc(&mut st, "podman", &[("keep".into(), "eth1".into())]);
        assert_eq!(gone, vec![id("keep")]);
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
}
