use super::*;
use crate::model::fixtures;
use crate::ruleset::{desired, fake, plan_mapping_changes};

fn m(s: &str) -> Mapping {
    s.parse().unwrap()
}
fn texts(v: &[Mapping]) -> Vec<String> {
    v.iter().map(|m| m.to_string()).collect()
}
fn att(net: &str, c: &str) -> AttachmentId {
    AttachmentId { network: net.into(), container_id: c.into(), ifname: "eth0".into() }
}
fn specs(s: &[&str]) -> Vec<PublishSpec> {
    s.iter().map(|x| x.parse().unwrap()).collect()
}
fn cidrs(s: &[&str]) -> Vec<Cidr> {
    s.iter().map(|x| x.parse().unwrap()).collect()
}
fn publish(st: &State, s: &[&str], allow: Option<&[&str]>, replace: bool) -> Result<(State, Outcome)> {
    plan(st, &Change::Publish { specs: specs(s), allow: allow.map(cidrs), replace })
}
fn attach(st: &State, id: &AttachmentId, maps: &[&str]) -> Result<(State, Outcome)> {
    plan(st, &Change::Attach { id: id.clone(), maps: maps.iter().map(|s| m(s)).collect(), allow: vec![] })
}
fn detach(st: &State, ids: &[AttachmentId]) -> (State, Outcome) {
    plan(st, &Change::Detach(ids.to_vec())).unwrap()
}
fn taken(r: Result<(State, Outcome)>) -> PortTaken {
    r.unwrap_err().downcast::<PortTaken>().expect("a PortTaken")
}

/// What the kernel holds after `before`'s table took the incremental plan to `after` must be
/// `after`'s whole table: the element-only path of every change never drifts.
fn incremental_equals_full(before: &State, after: &State, out: &Outcome) {
    let mut live = fake::live_after(&desired(before), 0, 0);
    fake::apply_elems(&mut live, &plan_mapping_changes(before, after, &out.touched()).ops());
    let want = fake::live_after(&desired(after), 0, 0);
    let sorted = |t: &crate::nft::LiveTable| {
        let mut e: Vec<(String, Vec<u8>, Vec<u8>)> = t
            .elems
            .iter()
            .flat_map(|(s, es)| es.iter().map(move |x| (s.clone(), x.key.clone(), x.data.clone())))
            .collect();
        e.sort();
        e
    };
    assert_eq!(sorted(&live), sorted(&want));
}

#[test]
fn publish_allow_lists_and_unpublish_plan_against_the_fake_table() {
    let st = fixtures::seed_state("v");
    // Publish two ports, one with an allow list.
    let (a, out) = publish(&st, &["9090:172.16.1.1:8080", "7000-7002:172.16.1.1:7000-7002/udp"], None, false).unwrap();
    assert_eq!(out.added.len(), 2);
    incremental_equals_full(&st, &a, &out);
    let (b, out) = publish(&a, &["9090:172.16.1.1:8080"], Some(&["10.0.0.0/8", "fd00::/8"]), false).unwrap();
    assert_eq!((out.added.len(), out.allow_replaced.len()), (0, 1));
    assert_eq!(b.allow_of(&out.allow_replaced[0]), cidrs(&["10.0.0.0/8"]).as_slice());
    incremental_equals_full(&a, &b, &out);
    // The same list again: nothing to do.
    let (c, out) = publish(&b, &["9090:172.16.1.1:8080"], Some(&["10.0.0.0/8"]), false).unwrap();
    assert_eq!((out.already.len(), c == b), (1, true));
    // A conflict with the record is refused, naming --replace; one inside the request too, as
    // bad input, before anything.
    let t = taken(publish(&b, &["9090:172.16.1.2:80"], None, false));
    assert!(t.to_string().contains("--replace") && t.holder.is_none(), "{t}");
    let e = publish(&b, &["9191:172.16.1.1:80", "9191:172.16.1.2:80"], None, false).unwrap_err();
    assert!(e.downcast_ref::<InputError>().is_some(), "{e}");
    // Unpublish by host port: the mapping and its list go, elements included.
    let sels: Vec<Selector> = vec!["9090".parse().unwrap(), "1234".parse().unwrap()];
    let (d, out) = plan(&b, &Change::Unpublish(sels)).unwrap();
    assert_eq!((out.removed.len(), out.not_found.clone()), (1, vec![1]));
    assert!(d.allow.is_empty());
    incremental_equals_full(&b, &d, &out);
}

#[test]
fn replace_switches_a_host_port_in_one_plan_keeping_its_allow_list() {
    let st = fixtures::seed_state("v");
    let (a, _) =
        publish(&st, &["9090:172.16.1.1:8080", "5353:172.16.1.1:53/udp"], Some(&["10.0.0.0/8"]), false).unwrap();
    let (b, out) = publish(&a, &["9090:172.16.1.2:80", "5353:172.16.1.2:53/udp"], None, true).unwrap();
    let pairs: Vec<(String, String)> = out.switched.iter().map(|s| (s.from.to_string(), s.to.to_string())).collect();
    assert_eq!(
        pairs,
        [
            ("9090:172.16.1.1:8080/tcp".into(), "9090:172.16.1.2:80/tcp".into()),
            ("5353:172.16.1.1:53/udp".into(), "5353:172.16.1.2:53/udp".into())
        ]
    );
    assert!(out.added.is_empty() && out.removed.is_empty());
    assert_eq!(texts(&b.mappings), ["9090:172.16.1.2:80/tcp", "5353:172.16.1.2:53/udp"]);
    assert_eq!(b.allow_of(&m("9090:172.16.1.2:80")), cidrs(&["10.0.0.0/8"]).as_slice());
    assert_eq!(b.allow.len(), 2);
    incremental_equals_full(&a, &b, &out);
    // The same target again with --replace: already published, nothing switched.
    let (c, out) = publish(&b, &["9090:172.16.1.2:80"], None, true).unwrap();
    assert_eq!((out.already.len(), out.switched.len(), c == b), (1, 0, true));
    // A port a container runtime holds is not taken over.
    let (d, _) = attach(&b, &att("podman", "ctr"), &["8080:10.88.0.2:80"]).unwrap();
    let t = taken(publish(&d, &["8080:172.16.1.2:80"], None, true));
    assert!(t.to_string().contains("container ctr") && t.to_string().contains("runtime"), "{t}");
}

#[test]
fn attachments_own_exactly_their_mappings() {
    let mut st = State::default();
    st.mappings.push(m("7000:10.0.0.9:70"));
    let (st, out) = attach(&st, &att("podman", "a"), &["8080:10.88.0.2:80", "5353:10.88.0.2:53/udp"]).unwrap();
    assert_eq!(texts(&out.added), ["8080:10.88.0.2:80/tcp", "5353:10.88.0.2:53/udp"]);
    let (st, _) = attach(&st, &att("podman", "b"), &["8081:10.88.0.3:80"]).unwrap();
    assert_eq!(st.mappings.len(), 4);
    assert_eq!(st.owner_of(&m("8080:10.88.0.2:80")).unwrap().container_id, "a");
    // DEL of a removes a's two mappings, and neither b's nor the CLI's.
    let (st2, out) = detach(&st, &[att("podman", "a")]);
    assert_eq!(out.removed.len(), 2);
    assert_eq!(texts(&st2.mappings), ["7000:10.0.0.9:70/tcp", "8081:10.88.0.3:80/tcp"]);
    incremental_equals_full(&st, &st2, &out);
    // DEL again: nothing.
    let (st3, out) = detach(&st2, &[att("podman", "a")]);
    assert!(out.removed.is_empty() && out.detached.is_empty() && st3 == st2);
    // A repeated ADD replaces what the attachment owned; one without mappings drops it.
    let (st4, out) = attach(&st3, &att("podman", "b"), &["8081:10.88.0.3:80", "8082:10.88.0.3:82"]).unwrap();
    assert_eq!((texts(&out.added), out.removed.len()), (vec!["8082:10.88.0.3:82/tcp".to_string()], 0));
    let (st5, out) = attach(&st4, &att("podman", "b"), &[]).unwrap();
    assert_eq!((out.removed.len(), st5.attachments.len(), st5.mappings.len()), (2, 0, 1));
    // `unpublish` of a container's port takes it from its attachment too (the record holds it
    // only there).
    let (st6, _) = plan(&st4, &Change::Unpublish(vec!["8082".parse().unwrap()])).unwrap();
    assert_eq!(texts(&st6.attachments["podman/b/eth0"].mappings), ["8081:10.88.0.3:80/tcp"]);
}

#[test]
fn a_taken_host_port_names_its_holder() {
    let (st, _) = attach(&State::default(), &att("podman", "first"), &["8080:10.88.0.2:80"]).unwrap();
    let t = taken(attach(&st, &att("podman", "second"), &["8080:10.88.0.3:80"]));
    let text = t.to_string();
    assert!(text.contains("container first") && text.contains("container second"), "{text}");
    // Held by the command line.
    let mut st = st;
    st.mappings.push(m("9090:10.88.0.3:80"));
    let t = taken(attach(&st, &att("podman", "second"), &["9090:10.88.0.3:80"]));
    assert!(t.to_string().contains("netnat publish"), "{t}");
    // Another protocol, host address or family is not a conflict.
    attach(&st, &att("podman", "third"), &["8080:10.88.0.4:80/udp", "8080:[fd00::4]:80"]).unwrap();
}

#[test]
fn one_container_on_two_networks_gets_a_standby_that_takes_over() {
    let (a, b, c) = (att("net-a", "ctr"), att("net-b", "ctr"), att("net-b", "other"));
    let (s1, out) = attach(&State::default(), &a, &["8080:10.88.0.2:80", "5353:10.88.0.2:53/udp"]).unwrap();
    assert_eq!(out.added.len(), 2);
    // The same container from its second network: accepted, standby, nothing in the kernel.
    let (s2, out) = attach(&s1, &b, &["8080:10.89.0.2:80", "5353:10.89.0.2:53/udp"]).unwrap();
    assert_eq!((out.added.len(), texts(&out.standby).len()), (0, 2));
    assert_eq!(s2.mappings, s1.mappings);
    assert_eq!(s2.attachments["net-b/ctr/eth0"].standby.len(), 2);
    incremental_equals_full(&s1, &s2, &out);
    // The record stores the standby ones and reads them back.
    assert_eq!(crate::state::parse(&crate::state::render(&s2)), Ok(s2.clone()));
    // A repeated ADD of the standby attachment changes nothing.
    let (again, out) = attach(&s2, &b, &["8080:10.89.0.2:80", "5353:10.89.0.2:53/udp"]).unwrap();
    assert!(again == s2 && out.standby.is_empty() && out.added.is_empty());
    // Another container: refused, naming the owner.
    let t = taken(attach(&s2, &c, &["8080:10.89.0.3:80"]));
    assert!(t.to_string().contains("container ctr (interface eth0, network net-a)"), "{t}");
    // DEL of the active attachment promotes the standby in the same plan.
    let (s3, out) = detach(&s2, std::slice::from_ref(&a));
    assert_eq!(texts(&out.promoted), ["8080:10.89.0.2:80/tcp", "5353:10.89.0.2:53/udp"]);
    assert_eq!(texts(&s3.mappings), ["8080:10.89.0.2:80/tcp", "5353:10.89.0.2:53/udp"]);
    assert!(s3.attachments["net-b/ctr/eth0"].standby.is_empty());
    incremental_equals_full(&s2, &s3, &out);
    // DEL of the standby attachment instead: the active one stays.
    let (s4, out) = detach(&s2, std::slice::from_ref(&b));
    assert!(out.removed.is_empty() && out.promoted.is_empty() && s4.mappings == s1.mappings);
    // GC of both at once: nothing left.
    let (s5, out) = detach(&s2, &[a, b]);
    assert!(s5.mappings.is_empty() && s5.attachments.is_empty() && out.promoted.is_empty(), "{out:?}");
    incremental_equals_full(&s2, &s5, &out);
}

#[test]
fn draining_counts_open_connections_on_an_earlier_target() {
    let e = |dport: u16, reply: &str, rport: u16, state: Option<u8>| crate::conntrack::Entry {
        proto: 6,
        src: "198.51.100.2".parse().unwrap(),
        dst: "198.51.100.1".parse().unwrap(),
        sport: 40000,
        dport,
        reply_src: reply.parse().unwrap(),
        reply_sport: rport,
        tcp_state: state,
    };
    let now = m("9090:172.16.1.2:80");
    let entries = [
        e(9090, "172.16.1.1", 8080, Some(3)),   // established on the old target
        e(9090, "172.16.1.1", 8080, Some(4)),   // closing, still on it
        e(9090, "172.16.1.1", 8080, Some(7)),   // ended (TIME_WAIT)
        e(9090, "172.16.1.2", 80, Some(3)),     // on the current target
        e(9090, "198.51.100.1", 9090, Some(3)), // not translated
        e(9191, "172.16.1.1", 8080, Some(3)),   // another port
    ];
    let d = draining(&now, &entries);
    assert_eq!(d, [Draining { container_ip: "172.16.1.1".parse().unwrap(), container_port: 8080, connections: 2 }]);
    // A range: the container port follows the host port.
    let range = m("7000-7001:172.16.1.2:8000-8001");
    assert!(draining(&range, &[e(7001, "172.16.1.2", 8001, Some(3))]).is_empty());
    assert_eq!(draining(&range, &[e(7001, "172.16.1.2", 8000, Some(3))]).len(), 1);
}
