//! The engine's order through the fake kernel (no root, no namespace): a kernel failure changes
//! nothing in the record; a record failure puts the kernel back; a failure while putting back is
//! reported. The operation under test is the one mapping operation (`mapping::change`), which
//! publish, unpublish and CNI ADD/DEL/GC go through.

use super::fake::{self, FakeFirewall};
use super::mapping::{self, Change};
use super::Engine;
use crate::model::fixtures::seed_state;
use crate::model::{PublishSpec, State};
use crate::nft::LiveElem;
use crate::state::{Record, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A fresh state directory holding `state` as the record.
fn state_dir(name: &str, state: &State) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netnat-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Store::lock(&dir).unwrap().save(state).unwrap();
    dir
}

/// The record file's content (the engine holding the lock must be dropped first).
fn record(dir: &std::path::Path) -> State {
    match Store::open_existing(dir).unwrap().unwrap().read() {
        Record::Read(s) => s,
        _ => panic!("the record cannot be read"),
    }
}

fn elems(fw: &FakeFirewall) -> BTreeMap<String, Vec<LiveElem>> {
    fw.0.borrow().table.as_ref().unwrap().elems.clone()
}

fn publish(spec: &str) -> Change {
    let specs: Vec<PublishSpec> = vec![spec.parse().unwrap()];
    Change::Publish { specs, allow: None, replace: false }
}

/// Makes the next save fail even for root: the record's name becomes a directory that is not
/// empty, which a file cannot be renamed over.
fn break_record(dir: &std::path::Path) {
    let file = dir.join(crate::state::FILE);
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("in-the-way"), "").unwrap();
}

#[test]
fn a_change_goes_kernel_then_record() {
    let before = seed_state("nnveth0");
    let dir = state_dir("ok", &before);
    let (kernel, fw, _links) = fake::kernel(&before);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    let out = mapping::change(&mut e, &publish("9090:172.16.1.1:8080")).unwrap();
    assert_eq!(out.added.len(), 1);
    // One batch, of elements only, and the kernel now holds what netnat would program.
    assert_eq!(fw.0.borrow().batches.len(), 1);
    drop(e); // the lock
    let after = record(&dir);
    assert_eq!(after.mappings.len(), 1);
    let want = crate::ruleset::fake::live_after(&crate::ruleset::desired(&after), 0, 0);
    assert_eq!(elems(&fw), want.elems);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_kernel_failure_changes_nothing_in_the_record() {
    let before = seed_state("nnveth0");
    let dir = state_dir("kernel", &before);
    let (kernel, fw, _links) = fake::kernel(&before);
    let table_before = elems(&fw);
    fw.0.borrow_mut().fail_apply.push_back(Some(libc::ENOMEM));
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    let err = mapping::change(&mut e, &publish("9090:172.16.1.1:8080")).unwrap_err();
    assert!(format!("{err:#}").contains("refused the batch"), "{err:#}");
    drop(e);
    assert_eq!(record(&dir), before, "the record is as it was");
    assert_eq!(elems(&fw), table_before, "the kernel is as it was");
    assert!(fw.0.borrow().batches.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_failure_puts_the_kernel_back() {
    let before = seed_state("nnveth0");
    let dir = state_dir("record", &before);
    let (kernel, fw, links) = fake::kernel(&before);
    let table_before = elems(&fw);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    break_record(&dir);
    let err = mapping::change(&mut e, &publish("9090:172.16.1.1:8080")).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("the kernel was put back as it was before this command"), "{text}");
    // The change, then the batch that undoes it; no link step (only the firewall changed).
    let fw_state = fw.0.borrow();
    assert_eq!(fw_state.batches.len(), 2, "{:?}", fw_state.batches);
    drop(fw_state);
    assert_eq!(elems(&fw), table_before, "the kernel is as the old record says");
    assert!(links.0.borrow().executed.is_empty());
    drop(e);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failure_while_putting_back_is_reported() {
    let before = seed_state("nnveth0");
    let dir = state_dir("undo", &before);
    let (kernel, fw, _links) = fake::kernel(&before);
    // The change's batch goes through; the one that would undo it is refused.
    fw.0.borrow_mut().fail_apply.extend([None, Some(libc::EIO)]);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    break_record(&dir);
    let err = mapping::change(&mut e, &publish("9090:172.16.1.1:8080")).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("putting the kernel back also failed"), "{text}");
    assert!(text.contains("table inet netnat"), "names what could not be put back: {text}");
    assert!(text.contains("netnat audit"), "says how to see the difference: {text}");
    drop(e);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refused_change_touches_neither_kernel_nor_record() {
    let before = seed_state("nnveth0");
    let dir = state_dir("refused", &before);
    let (kernel, fw, _links) = fake::kernel(&before);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    mapping::change(&mut e, &publish("9090:172.16.1.1:8080")).unwrap();
    let published = e.state.clone();
    // The same host port to another container: refused before anything is touched.
    let err = mapping::change(&mut e, &publish("9090:172.16.1.2:8080")).unwrap_err();
    assert!(format!("{err:#}").contains("9090"), "names the taken port: {err:#}");
    assert_eq!(fw.0.borrow().batches.len(), 1);
    drop(e);
    assert_eq!(record(&dir), published);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn disconnect_goes_through_the_link_planner() {
    let before = seed_state("nnveth0");
    let dir = state_dir("disconnect", &before);
    let (kernel, _fw, links) = fake::kernel(&before);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    assert!(super::network::disconnect(&mut e, "MyDocker0", "ns1").unwrap());
    assert!(!super::network::disconnect(&mut e, "MyDocker0", "ns1").unwrap(), "a second disconnect has nothing to do");
    drop(e);
    let executed = links.0.borrow().executed.clone();
    assert_eq!(executed.len(), 1, "{executed:?}");
    assert!(executed[0].starts_with("disconnect ns1 from MyDocker0"), "{executed:?}");
    assert!(record(&dir).sandboxes["ns1"].endpoints.is_empty());
}

#[test]
fn a_failed_link_step_changes_nothing_in_the_record() {
    let before = seed_state("nnveth0");
    let dir = state_dir("disconnect-fails", &before);
    let (kernel, _fw, links) = fake::kernel(&before);
    links.0.borrow_mut().fail_execute = true;
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    let err = super::network::disconnect(&mut e, "MyDocker0", "ns1").unwrap_err();
    assert!(format!("{err:#}").contains("disconnect ns1 from MyDocker0"), "{err:#}");
    assert_eq!(e.state, before, "the engine's state changed");
    drop(e);
    assert_eq!(record(&dir), before);
}

#[test]
fn reset_removes_what_the_record_names_through_the_fakes() {
    let before = seed_state("nnveth0");
    let dir = state_dir("reset", &before);
    let (kernel, fw, links) = fake::kernel(&before);
    let (e, damage) = Engine::open_any_with(&dir, kernel).unwrap();
    assert!(damage.is_none());
    let done = super::reset::reset(e, damage).unwrap();
    assert_eq!((done.networks, done.sandboxes, done.had_table), (1, 1, true));
    // The table in one batch, the veth and the bridge, the namespace netnat made, its sysctls and
    // the drop-in: all through the seam.
    assert!(fw.0.borrow().table.is_none(), "table inet netnat is gone");
    let l = links.0.borrow();
    assert_eq!(l.deleted, ["nnveth0", "MyDocker0"].map(String::from).to_vec());
    assert!(l.executed.iter().any(|s| s.contains("ns1")), "{:?}", l.executed);
    assert_eq!(l.conf_writes, 1);
    assert_eq!(record(&dir), State::default());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reset_that_leaves_things_behind_says_what_and_keeps_the_record() {
    let before = seed_state("nnveth0");
    let dir = state_dir("reset-fails", &before);
    let (kernel, _fw, links) = fake::kernel(&before);
    links.0.borrow_mut().fail_execute = true;
    let (e, damage) = Engine::open_any_with(&dir, kernel).unwrap();
    let err = super::reset::reset(e, damage).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("reset left things behind") && text.contains("deleting veth nnveth0"), "{text}");
    assert_eq!(record(&dir), before, "the record still names what is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metrics_are_read_through_the_seam() {
    let before = seed_state("nnveth0");
    let dir = state_dir("metrics", &before);
    let (mut kernel, fw, _links) = fake::kernel(&before);
    let text = super::metrics::collect_from(&dir, &mut kernel).unwrap();
    assert!(text.contains("netnat_networks 1"), "{text}");
    assert!(text.contains("netnat_sandboxes 1"), "{text}");
    // The table gone from the (fake) kernel is what the audit's error count says.
    fw.0.borrow_mut().table = None;
    let text = super::metrics::collect_from(&dir, &mut kernel).unwrap();
    assert!(!text.contains("netnat_audit_errors 0"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The file `netnat save` would write for `st`, as `apply` reads it.
fn file_of(st: &State) -> crate::config::Parsed {
    crate::config::load(&crate::config::to_toml(st, &[])).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn apply_goes_through_the_one_mapping_operation() {
    // The veth named as netnat names it, so the file's endpoint is the record's.
    let before = seed_state(&crate::model::host_ifname("ns1", "MyDocker0"));
    let dir = state_dir("apply", &before);
    let (kernel, fw, links) = fake::kernel(&before);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    let mut wanted = before.clone();
    wanted.mappings.push("9090:172.16.1.1:8080".parse().unwrap());
    let done = super::apply::apply(&mut e, &file_of(&wanted), Default::default()).unwrap();
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    // No link step (all in place), the mapping's elements in one batch, then the record.
    assert!(links.0.borrow().executed.is_empty(), "{:?}", links.0.borrow().executed);
    assert_eq!(fw.0.borrow().batches.len(), 1);
    drop(e);
    assert_eq!(record(&dir).mappings, wanted.mappings);
    let want = crate::ruleset::fake::live_after(&crate::ruleset::desired(&wanted), 0, 0);
    assert_eq!(elems(&fw), want.elems);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn apply_is_refused_as_publish_is_with_the_same_message() {
    let before = seed_state("nnveth0");
    let dir = state_dir("apply-refused", &before);
    // A host address this host does not have: the one mapping operation's check, word for word.
    let spec = "10.1.2.3:80:172.16.1.1:80";
    let (kernel, fw, links) = fake::kernel(&before);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    let mut wanted = before.clone();
    wanted.mappings.push(spec.parse().unwrap());
    let by_apply = super::apply::apply(&mut e, &file_of(&wanted), Default::default()).unwrap_err();
    let by_publish = mapping::change(&mut e, &publish(spec)).unwrap_err();
    assert!(
        format!("{by_apply:#}").contains("10.1.2.3 in 10.1.2.3:80:172.16.1.1:80/tcp is not an address"),
        "{by_apply:#}"
    );
    assert_eq!(format!("{by_apply:#}"), format!("{by_publish:#}"));
    assert!(fw.0.borrow().batches.is_empty() && links.0.borrow().executed.is_empty());
    drop(e);
    assert_eq!(record(&dir), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_docker_driver_keeps_docker_user_through_the_seam() {
    use super::seam::Firewall;
    let mut st = seed_state("nnveth0");
    st.networks.get_mut("MyDocker0").unwrap().host_firewall = crate::model::HostFirewallMode::Auto;
    let (_kernel, mut fw, _links) = fake::kernel(&st);
    // Docker runs: its table filter has DOCKER-USER (IPv4 only here).
    let chain = crate::nft::LiveChain { table: "filter".into(), family: 2, name: "DOCKER-USER".into(), base: None };
    fw.0.borrow_mut().others.0.push(chain);
    let synced = crate::hostfw::sync(&mut st, fw.foreign());
    assert_eq!(synced.steps.len(), 1, "{synced:?}");
    assert_eq!(st.host_firewall.len(), 1);
    assert_eq!(st.host_firewall[0].firewall, crate::model::HostFirewallKind::Docker);
    // -i and -o MyDocker0's bridge, marked as netnat's, in one transaction.
    assert_eq!(fw.0.borrow().foreign.len(), 1);
    assert_eq!(fw.0.borrow().others.1.len(), 2);
    // In place: a second sync changes nothing; reset's removal takes exactly those two away.
    assert!(crate::hostfw::sync(&mut st, fw.foreign()).steps.is_empty());
    assert_eq!(fw.0.borrow().foreign.len(), 1);
    assert!(crate::hostfw::remove_all(&mut st, fw.foreign()).is_empty());
    assert!(fw.0.borrow().others.1.is_empty() && st.host_firewall.is_empty());
}

#[test]
fn a_handoffs_veth_pair_comes_and_goes_through_the_seam() {
    use super::handoff::{add_handoff, join_handoff, leave_handoff, new_handoff};
    let before = seed_state("nnveth0");
    let dir = state_dir("handoff", &before);
    let (kernel, _fw, links) = fake::kernel(&before);
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    let owner = crate::model::Owner { by: "docker".into(), id: "0123456789abcdef".into(), options: Default::default() };
    let h = new_handoff(owner, "MyDocker0", vec!["172.16.1.7".parse().unwrap()], None);
    let key = h.owner.key();
    add_handoff(&mut e, h.clone()).unwrap();
    assert!(links.0.borrow().executed.is_empty(), "recorded only: nothing in the kernel yet");
    let (joined, _) = join_handoff(&mut e, &key, "box").unwrap();
    assert_eq!(joined.sandbox.as_deref(), Some("box"));
    let l = links.0.borrow();
    assert_eq!(l.deleted, std::slice::from_ref(&h.host_ifname), "a pair left from an earlier join goes first");
    assert_eq!(l.executed, [format!("add veth {} (peer {}) on MyDocker0", h.host_ifname, h.peer_ifname)]);
    drop(l);
    assert!(leave_handoff(&mut e, &key).unwrap());
    assert_eq!(links.0.borrow().deleted.len(), 2);
    drop(e);
    assert_eq!(record(&dir).handoffs[&key].sandbox, None);
    // A pair the kernel refuses: nothing recorded as joined.
    let (kernel, _fw, links) = fake::kernel(&before);
    links.0.borrow_mut().fail_execute = true;
    let mut e = Engine::open_with(&dir, kernel).unwrap();
    assert!(join_handoff(&mut e, &key, "box").is_err());
    drop(e);
    assert_eq!(record(&dir).handoffs[&key].sandbox, None);
    std::fs::remove_dir_all(&dir).unwrap();
}
