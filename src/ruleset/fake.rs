//! Test support shared by the planner's and the audit's unit tests.

use super::{Desired, SETS};
use crate::nft::spec::{NftOp, TABLE};
use crate::nft::{BaseChain, LiveChain, LiveElem, LiveRule, LiveSet, LiveTable};

/// The element operations of `ops` done on `live`, as the kernel would (rules are not
/// touched: the callers plan elements only).
pub(crate) fn apply_elems(live: &mut LiveTable, ops: &[NftOp]) {
    let elem = |key: &Vec<u8>, data: &Vec<u8>| LiveElem {
        key: key.clone(),
        data: data.clone(),
        packets: Some(0),
        bytes: Some(0),
    };
    for op in ops {
        match op {
            NftOp::DelElems { set, keys } => {
                live.elems.entry(set.clone()).or_default().retain(|e| !keys.contains(&e.key))
            }
            NftOp::DelRanges { set, ranges } => {
                live.elems.entry(set.clone()).or_default().retain(|e| !ranges.iter().any(|(k, _)| *k == e.key))
            }
            NftOp::AddElems { set, elems } | NftOp::AddRanges { set, ranges: elems } => {
                let v = live.elems.entry(set.clone()).or_default();
                for (k, d) in elems {
                    assert!(!v.iter().any(|e| e.key == *k), "{set}: an element added twice (EEXIST)");
                    v.push(elem(k, d));
                }
            }
            other => panic!("not an element operation: {other}"),
        }
    }
}

/// What the kernel would report after applying `want` (the fake backend: knftables style),
/// every element having seen `packets` and `bytes`.
pub(crate) fn live_after(want: &Desired, packets: u64, bytes: u64) -> LiveTable {
    let chains = want
        .chains
        .iter()
        .map(|c| LiveChain {
            table: TABLE.into(),
            family: 1,
            name: c.name.into(),
            base: c.base.as_ref().map(|b| BaseChain {
                hook: b.hook.number(),
                priority: b.priority,
                kind: b.kind.name().into(),
                policy: 1,
            }),
        })
        .collect();
    let rules = want
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| LiveRule {
            table: TABLE.into(),
            family: 1,
            chain: r.chain.into(),
            handle: i as u64,
            exprs: r.exprs.clone(),
            comment: Some(r.comment.clone()),
        })
        .collect();
    let sets = SETS
        .iter()
        .map(|s| LiveSet {
            table: TABLE.into(),
            family: 1,
            name: s.name.into(),
            flags: 8,
            key_type: s.key_type(),
            key_len: s.key_len(),
            data: s.data_desc(),
            counter: s.counter,
        })
        .collect();
    let elems = want
        .elems
        .iter()
        .map(|(s, e)| {
            let v = e
                .iter()
                .map(|(k, d)| LiveElem { key: k.clone(), data: d.clone(), packets: Some(packets), bytes: Some(bytes) })
                .collect();
            (s.to_string(), v)
        })
        .collect();
    LiveTable { chains, rules, sets, elems }
}
