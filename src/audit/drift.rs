//! Drift: the kernel's table, links and configuration compared with what netnat recorded and
//! would program.

use super::{finding, Finding, Observed, Severity};
use crate::model::State;
use crate::ruleset;
use crate::ruleset::{render_concat, render_rule, set_spec, TableAction, TABLE};
use std::collections::BTreeSet;

pub(super) fn drift(o: &Observed, out: &mut Vec<Finding>) {
    let st = &o.state;
    let plan = ruleset::plan(&ruleset::desired(st), o.table.as_ref());
    match (plan.table, &o.table) {
        (TableAction::Create, _) => {
            if !st.networks.is_empty() || !st.mappings.is_empty() {
                out.push(finding(
                    "drift.table-missing",
                    Severity::Error,
                    format!(
                        "table inet {TABLE} does not exist, but netnat records {} network(s) and {} mapping(s): \
                         no published port works and no network is isolated",
                        st.networks.len(),
                        st.mappings.len()
                    ),
                    vec![format!("inet {TABLE}")],
                ));
            }
        }
        (TableAction::Rebuild, Some(live)) => {
            let chains: Vec<String> = live.chains.iter().map(|c| c.name.clone()).collect();
            let sets: Vec<String> = live.sets.iter().map(|s| s.name.clone()).collect();
            out.push(finding(
                "drift.layout",
                Severity::Error,
                format!(
                    "table inet {TABLE} has chains or maps of another shape than netnat makes \
                     (chains: {}; maps: {}); netnat would rebuild it",
                    chains.join(", "),
                    sets.join(", ")
                ),
                vec![format!("inet {TABLE}")],
            ));
        }
        _ => {
            drift_rules(&plan.chains, out);
            drift_elems(&plan.elems, out);
        }
    }
    drift_links(st, o, out);
}

/// Chains whose rules differ from what netnat would program.
fn drift_rules(chains: &[ruleset::ChainChange], out: &mut Vec<Finding>) {
    for c in chains {
        let mut lines = vec![];
        for l in &c.extra {
            lines.push(format!("foreign rule (handle {}): {}", l.handle, render_rule(&l.exprs, l.comment.as_deref())));
        }
        for n in &c.missing {
            lines.push(format!("missing rule: {}", render_rule(&n.exprs, Some(&n.comment))));
        }
        if lines.is_empty() {
            lines.push("the rules are in another order than netnat programs them".into());
        }
        out.push(finding(
            "drift.rule",
            Severity::Error,
            format!("chain inet {TABLE} {} differs from what netnat would program:\n{}", c.chain, lines.join("\n")),
            vec![format!("inet {TABLE} {}", c.chain)],
        ));
    }
}

/// Map and set elements that are missing, extra or point elsewhere.
fn drift_elems(elems: &[ruleset::ElemChange], out: &mut Vec<Finding>) {
    for e in elems {
        let Some(spec) = set_spec(e.set) else { continue };
        let set = e.set;
        let key = render_concat(spec.key, &e.key);
        let data = |d: &[u8]| render_concat(spec.data, d);
        let objects = vec![format!("inet {TABLE} {set}"), key.clone()];
        let (id, message) = match (&e.have, &e.want) {
            (None, Some(d)) => {
                ("drift.element-missing", format!("map inet {TABLE} {set} lacks element {key} : {}", data(d)))
            }
            (Some(h), Some(d)) => (
                "drift.element-changed",
                format!("map inet {TABLE} {set} element {key} points to {}, netnat records {}", data(h), data(d)),
            ),
            (Some(h), None) => (
                "drift.element-extra",
                format!("map inet {TABLE} {set} has element {key} : {} that netnat does not record", data(h)),
            ),
            (None, None) => continue,
        };
        out.push(finding(id, Severity::Error, message, objects));
    }
}

/// Links netnat records but the kernel no longer has.
fn drift_links(st: &State, o: &Observed, out: &mut Vec<Finding>) {
    let links: BTreeSet<&str> = o.links.iter().map(|l| l.name.as_str()).collect();
    for n in st.networks.values() {
        if !links.contains(n.bridge.as_str()) {
            out.push(finding(
                "drift.link-missing",
                Severity::Error,
                format!("bridge {} of network {} does not exist", n.bridge, n.name),
                vec![n.bridge.clone()],
            ));
        }
    }
    for h in st.handoffs.values().filter(|h| h.sandbox.is_some() && !links.contains(h.host_ifname.as_str())) {
        out.push(finding(
            "drift.link-missing",
            Severity::Error,
            format!("veth {} of {} on network {} does not exist", h.host_ifname, h.owner, h.network),
            vec![h.host_ifname.clone(), h.owner.key()],
        ));
    }
    for s in st.sandboxes.values() {
        for e in &s.endpoints {
            if !links.contains(e.host_ifname.as_str()) {
                out.push(finding(
                    "drift.link-missing",
                    Severity::Error,
                    format!("veth {} of sandbox {} on network {} does not exist", e.host_ifname, s.name, e.network),
                    vec![e.host_ifname.clone(), s.name.clone()],
                ));
            }
        }
    }
}

/// The record against the state a configuration file describes.
pub(super) fn drift_config(o: &Observed, out: &mut Vec<Finding>) {
    let Some(cfg) = &o.config else { return };
    let st = &o.state;
    let mut diff = |what: String, obj: String| {
        out.push(finding("drift.config", Severity::Warning, what, vec![obj]));
    };
    for (name, n) in &cfg.networks {
        match st.networks.get(name) {
            None => diff(format!("network {name} is in the configuration but not set up"), name.clone()),
            Some(have) if have != n => diff(format!("network {name} differs from the configuration"), name.clone()),
            Some(_) => {}
        }
    }
    for name in st.networks.keys().filter(|k| !cfg.networks.contains_key(*k)) {
        diff(format!("network {name} is set up but not in the configuration"), name.clone());
    }
    for (name, s) in &cfg.sandboxes {
        match st.sandboxes.get(name) {
            None => diff(format!("sandbox {name} is in the configuration but not set up"), name.clone()),
            Some(have) if have.endpoints != s.endpoints => {
                diff(format!("sandbox {name} has other endpoints than the configuration"), name.clone())
            }
            Some(_) => {}
        }
    }
    for name in st.sandboxes.keys().filter(|k| !cfg.sandboxes.contains_key(*k)) {
        diff(format!("sandbox {name} is set up but not in the configuration"), name.clone());
    }
    for m in cfg.mappings.iter().filter(|m| !st.mappings.contains(m)) {
        diff(format!("port {m} is in the configuration but not published"), m.to_string());
    }
    for m in st.mappings.iter().filter(|m| !cfg.mappings.contains(m)) {
        diff(format!("port {m} is published but not in the configuration"), m.to_string());
    }
}
