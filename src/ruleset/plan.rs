//! The difference between the table the kernel has and the one netnat wants (`plan`), and
//! the element changes of a few mappings (`plan_mapping_changes`).

use super::{hairpin_elems, mapping_elems, set_spec, Desired, ElemList, CHAINS, SETS};
use crate::model::{Mapping, State};
use crate::nft::spec::ChainSpec;
use crate::nft::spec::{NftOp, RuleSpec};
use crate::nft::trace;
use crate::nft::{LiveElem, LiveRule, LiveTable};
use std::collections::BTreeMap;

/// What happens to the table as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableAction {
    /// The table has netnat's layout: only the chains and elements listed change.
    Keep,
    /// There is no table: it is made from scratch.
    Create,
    /// The table has chains or maps of another shape: it is deleted and made again.
    Rebuild,
}

/// What happens to a chain whose rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainAction {
    /// It is flushed and refilled with `want` (or filled, in a new table).
    Fill,
    /// It is added (a chain the layout has only when needed, e.g. `forward`), then filled.
    Create,
    /// It is flushed and deleted: the state no longer needs it.
    Delete,
}

/// A chain whose rules differ: it is flushed and refilled with `want`, added or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainChange {
    pub chain: &'static str,
    pub action: ChainAction,
    pub want: Vec<RuleSpec>,
    /// Live rules netnat would not program (for the audit).
    pub extra: Vec<LiveRule>,
    /// Rules netnat would program that are not live (for the audit).
    pub missing: Vec<RuleSpec>,
}

/// One element that changes: missing (`have` None), extra (`want` None) or pointing elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElemChange {
    pub set: &'static str,
    pub key: Vec<u8>,
    pub have: Option<Vec<u8>>,
    pub want: Option<Vec<u8>>,
}

/// The difference between what table `inet netnat` holds and what it should hold. `apply` turns
/// it into one transaction (`ops`); the audit reports the same value as drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub table: TableAction,
    /// With `Create` or `Rebuild`: every chain, filled.
    pub chains: Vec<ChainChange>,
    /// With `Create` or `Rebuild`: every desired element, as missing.
    pub elems: Vec<ElemChange>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.table == TableAction::Keep && self.chains.is_empty() && self.elems.is_empty()
    }

    /// Whether the rules (or the layout) change, not only elements.
    pub fn changes_rules(&self) -> bool {
        self.table != TableAction::Keep || !self.chains.is_empty()
    }

    /// The plan as one transaction's operations: the table and its layout first, then the
    /// chains' rules, then element deletes before adds (a changed element is delete + add).
    pub fn ops(&self) -> Vec<NftOp> {
        self.clone().into_ops()
    }

    /// `ops`, moving the elements' bytes instead of copying them (20,000 elements for 10,000 ports).
    pub fn into_ops(self) -> Vec<NftOp> {
        let mut ops = vec![];
        if self.table == TableAction::Rebuild {
            // Add first so the delete cannot fail on a table removed meanwhile.
            ops.extend([NftOp::AddTable, NftOp::DelTable]);
        }
        if self.table != TableAction::Keep {
            ops.push(NftOp::AddTable);
            // Every chain of the new table, filled or not, comes with a `Create` change.
            ops.extend(SETS.iter().cloned().map(NftOp::AddSet));
        }
        // Chains are added first (a rule may jump to a later one) and deleted last.
        let created = self.chains.iter().filter(|c| c.action == ChainAction::Create);
        ops.extend(created.map(|c| NftOp::AddChain(chain_spec(c.chain))));
        let mut deletes = vec![];
        for c in self.chains {
            if c.action != ChainAction::Create {
                ops.push(NftOp::FlushChain(c.chain.into()));
            }
            if c.action == ChainAction::Delete {
                deletes.push(NftOp::DelChain(c.chain.into()));
            }
            ops.extend(c.want.into_iter().map(NftOp::AddRule));
        }
        ops.extend(deletes);
        // Per set, in name order: its deletes, then its adds.
        let mut per_set: BTreeMap<&'static str, (ElemList, ElemList)> = BTreeMap::new();
        for e in self.elems {
            let (dels, adds) = per_set.entry(e.set).or_default();
            match (e.have, e.want) {
                (Some(h), Some(w)) => {
                    dels.push((e.key.clone(), h));
                    adds.push((e.key, w));
                }
                (Some(h), None) => dels.push((e.key, h)),
                (None, Some(w)) => adds.push((e.key, w)),
                (None, None) => {}
            }
        }
        for (set, (dels, adds)) in per_set {
            let interval = set_spec(set).is_some_and(|s| s.interval);
            if !dels.is_empty() {
                ops.push(match interval {
                    // A range is deleted by its key and its end.
                    true => NftOp::DelRanges { set: set.into(), ranges: dels },
                    false => NftOp::DelElems { set: set.into(), keys: dels.into_iter().map(|(k, _)| k).collect() },
                });
            }
            if !adds.is_empty() {
                ops.push(match interval {
                    true => NftOp::AddRanges { set: set.into(), ranges: adds },
                    false => NftOp::AddElems { set: set.into(), elems: adds },
                });
            }
        }
        ops
    }
}

/// The element changes of the mappings `touched` (published, unpublished, or with a new allow
/// list) from state `before` to `after`, planned without reading the live elements: the caller
/// knows the table has netnat's layout and rules. An element both states have stays, so its
/// counter keeps counting.
pub fn plan_mapping_changes(before: &State, after: &State, touched: &[Mapping]) -> Plan {
    let elems_in = |st: &State| -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
        touched
            .iter()
            .filter(|m| st.mappings.contains(m))
            .flat_map(|m| mapping_elems(m, st.is_routed(m), st.allow_of(m), st.counting))
            .map(|(set, k, d)| ((set, k), d))
            .collect()
    };
    // Hairpin elements are per container, shared by its mappings: compared whole (a few).
    let with_hairpin = |st: &State| {
        let mut e = elems_in(st);
        e.extend(hairpin_elems(st));
        e
    };
    let (old, new) = (with_hairpin(before), with_hairpin(after));
    let mut elems = vec![];
    for ((set, key), d) in &old {
        match new.get(&(*set, key.clone())) {
            Some(n) if n == d => {}
            n => elems.push(ElemChange { set, key: key.clone(), have: Some(d.clone()), want: n.cloned() }),
        }
    }
    for ((set, key), d) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
        elems.push(ElemChange { set, key: key.clone(), have: None, want: Some(d.clone()) });
    }
    Plan { table: TableAction::Keep, chains: vec![], elems }
}

/// The changes that turn `live` (None: no table) into `want`.
/// Rules are compared chain by chain; a chain that differs is flushed and refilled in the same
/// transaction. Elements are compared one by one, so an unchanged mapping keeps its counters.
pub fn plan(want: &Desired, live: Option<&LiveTable>) -> Plan {
    // The chains of a running (or killed) `netnat trace` are not netnat's layout: never planned
    // (the engine removes a killed trace's; see crate::nft::trace).
    let stripped = live.filter(|l| !trace::trace_chains_in(l).is_empty()).map(trace::without_trace);
    let live = match &stripped {
        Some(s) => s.as_ref(),
        None => live,
    };
    let Some(live) = live.filter(|l| layout_matches(l)) else {
        // No table, or chains/maps of another shape: build the whole table from scratch.
        let table = if live.is_some() { TableAction::Rebuild } else { TableAction::Create };
        let chains = want
            .chains
            .iter()
            .map(|c| ChainChange {
                chain: c.name,
                action: ChainAction::Create,
                want: rules_of(want, c.name),
                extra: vec![],
                missing: vec![],
            })
            .collect();
        let elems = want
            .elems
            .iter()
            .flat_map(|(set, es)| {
                es.iter().map(|(k, d)| ElemChange { set, key: k.clone(), have: None, want: Some(d.clone()) })
            })
            .collect();
        return Plan { table, chains, elems };
    };
    Plan { table: TableAction::Keep, chains: plan_chains(want, live), elems: plan_elems(want, live) }
}

fn rules_of(want: &Desired, chain: &str) -> Vec<RuleSpec> {
    want.rules.iter().filter(|r| r.chain == chain).cloned().collect()
}

fn chain_spec(name: &str) -> ChainSpec {
    CHAINS.iter().find(|c| c.name == name).cloned().expect("a chain of netnat's layout")
}

fn plan_chains(want: &Desired, live: &LiveTable) -> Vec<ChainChange> {
    let same = |l: &LiveRule, n: &RuleSpec| l.exprs == n.exprs && l.comment.as_deref() == Some(n.comment.as_str());
    let mut out = vec![];
    for c in &CHAINS {
        let wanted = want.chains.iter().any(|w| w.name == c.name);
        let is_live = live.chains.iter().any(|l| l.name == c.name);
        let have: Vec<&LiveRule> = live.rules.iter().filter(|r| r.chain == c.name).collect();
        let need = rules_of(want, c.name);
        let action = match (wanted, is_live) {
            (false, false) => continue,
            (true, false) => ChainAction::Create,
            (false, true) => ChainAction::Delete,
            (true, true) if have.len() == need.len() && have.iter().zip(&need).all(|(l, n)| same(l, n)) => continue,
            (true, true) => ChainAction::Fill,
        };
        let extra = have.iter().filter(|l| !need.iter().any(|n| same(l, n))).map(|l| (*l).clone()).collect();
        let missing = need.iter().filter(|n| !have.iter().any(|l| same(l, n))).cloned().collect();
        out.push(ChainChange { chain: c.name, action, want: need, extra, missing });
    }
    out
}

fn plan_elems(want: &Desired, live: &LiveTable) -> Vec<ElemChange> {
    let mut out = vec![];
    for (set, need) in &want.elems {
        let have: BTreeMap<&[u8], &[u8]> = live
            .elems
            .get(*set)
            .map(|v| v.iter().map(|e: &LiveElem| (e.key.as_slice(), e.data.as_slice())).collect())
            .unwrap_or_default();
        for (k, d) in &have {
            match need.get(*k) {
                Some(n) if n.as_slice() == *d => {}
                n => out.push(ElemChange { set, key: k.to_vec(), have: Some(d.to_vec()), want: n.cloned() }),
            }
        }
        for (k, d) in need.iter().filter(|(k, _)| !have.contains_key(k.as_slice())) {
            out.push(ElemChange { set, key: k.clone(), have: None, want: Some(d.clone()) });
        }
    }
    out
}

/// The live table has netnat's chains (same hooks; `forward` may be there or not, see
/// `ruleset::chains`) and maps (same types).
fn layout_matches(live: &LiveTable) -> bool {
    let optional = |name: &str| name == "forward";
    let chains_ok = live.chains.iter().all(|l| CHAINS.iter().any(|c| c.name == l.name))
        && CHAINS.iter().all(|c| {
            optional(c.name) && !live.chains.iter().any(|l| l.name == c.name)
                || live.chains.iter().any(|l| {
                    l.name == c.name
                        && match (&l.base, &c.base) {
                            (Some(l), Some(c)) => {
                                l.hook == c.hook.number() && l.priority == c.priority && l.kind == c.kind.name()
                            }
                            (None, None) => true,
                            _ => false,
                        }
                })
        });
    let sets_ok = live.sets.len() == SETS.len()
        && SETS.iter().all(|s| {
            live.sets.iter().any(|l| {
                l.name == s.name && l.key_type == s.key_type() && l.data == s.data_desc() && l.counter == s.counter
            })
        });
    chains_ok && sets_ok
}
