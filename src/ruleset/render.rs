//! netnat's table in nft syntax: operations (`NftOp`'s Display), rules and the live table.

use super::{set_spec, CHAINS};
use crate::model::{Cidr, Family};
use crate::nft::expr::{self, Expr};
use crate::nft::spec::{fields_of, render_concat, write_concat, ChainSpec, Hook, NftOp, SetSpec, FAMILY_NAME, TABLE};
use crate::nft::{LiveElem, LiveTable};
use std::fmt;
use std::net::IpAddr;

/// NFT_SET_INTERVAL.
const INTERVAL_FLAG: u32 = 0x4;

fn key_len_of(set: &str) -> Option<u32> {
    set_spec(set).map(|s| s.key_len())
}

pub fn render_rule(exprs: &[Expr], comment: Option<&str>) -> String {
    let body = expr::render(exprs, &key_len_of);
    match comment {
        Some(c) => format!("{body} comment \"{c}\""),
        None => body,
    }
}

fn chain_header(c: &ChainSpec) -> String {
    match &c.base {
        Some(b) => format!(" type {} hook {} priority {}; policy accept; ", b.kind.name(), b.hook.name(), b.priority),
        None => " ".into(),
    }
}

/// A range element as nft prints it: each field whose start and end differ as `a-b`, an
/// address range that is a prefix as `addr/len`.
fn range_elem_text(set: &str, key: &[u8], end: &[u8]) -> String {
    let Some(spec) = set_spec(set) else { return format!("{}-{}", expr::hex(key), expr::hex(end)) };
    let (a, b) = (render_concat(spec.key, key), render_concat(spec.key, end));
    let parts: Vec<String> = a
        .split(" . ")
        .zip(b.split(" . "))
        .map(|(x, y)| match (x.parse::<IpAddr>(), y.parse::<IpAddr>()) {
            _ if x == y => x.to_string(),
            (Ok(lo), Ok(hi)) => prefix_text(lo, hi).unwrap_or(format!("{x}-{y}")),
            _ => format!("{x}-{y}"),
        })
        .collect();
    parts.join(" . ")
}

/// `lo/len` when lo..=hi is exactly one prefix.
fn prefix_text(lo: IpAddr, hi: IpAddr) -> Option<String> {
    let fam = Family::of(lo);
    let span = crate::model::ip_bits(hi) ^ crate::model::ip_bits(lo);
    let host_bits = 128 - span.leading_zeros();
    let len = fam.bits().checked_sub(host_bits)?;
    let net: Cidr = format!("{lo}/{len}").parse().ok()?;
    (net.bounds().1 == hi).then(|| net.to_string())
}

/// The elements of one operation, `a, b, ...`, written as they go (no string per element).
fn write_elems<'a>(
    f: &mut fmt::Formatter,
    set: &str,
    elems: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> fmt::Result {
    let spec = set_spec(set);
    for (i, (key, data)) in elems.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        match spec {
            Some(s) => {
                write_concat(f, s.key, key)?;
                if let Some(d) = data.filter(|d| !d.is_empty()) {
                    f.write_str(" : ")?;
                    write_concat(f, s.data, d)?;
                }
            }
            None => f.write_str(&expr::hex(key))?,
        }
    }
    Ok(())
}

impl fmt::Display for NftOp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let t = format!("{FAMILY_NAME} {TABLE}");
        match self {
            NftOp::AddTable => write!(f, "add table {t}"),
            NftOp::DelTable => write!(f, "delete table {t}"),
            NftOp::AddChain(c) => write!(f, "add chain {t} {} {{{}}}", c.name, chain_header(c)),
            NftOp::DelChain(c) => write!(f, "delete chain {t} {c}"),
            NftOp::FlushChain(c) => write!(f, "flush chain {t} {c}"),
            NftOp::AddRule(r) => write!(f, "add rule {t} {} {}", r.chain, render_rule(&r.exprs, Some(&r.comment))),
            NftOp::AddSet(s) => {
                let counter = if s.counter { " counter;" } else { "" };
                match s.data {
                    [] => write!(f, "add set {t} {} {{ type {};{counter} }}", s.name, SetSpec::type_text(s.key)),
                    data => write!(
                        f,
                        "add map {t} {} {{ type {} : {};{counter} }}",
                        s.name,
                        SetSpec::type_text(s.key),
                        SetSpec::type_text(data)
                    ),
                }
            }
            NftOp::DelSet(s) => write!(f, "delete map {t} {s}"),
            NftOp::FlushSet(s) => write!(f, "flush map {t} {s}"),
            NftOp::AddElems { set, elems } => {
                write!(f, "add element {t} {set} {{ ")?;
                write_elems(f, set, elems.iter().map(|(k, d)| (k.as_slice(), Some(d.as_slice()))))?;
                f.write_str(" }")
            }
            NftOp::DelElems { set, keys } => {
                write!(f, "delete element {t} {set} {{ ")?;
                write_elems(f, set, keys.iter().map(|k| (k.as_slice(), None)))?;
                f.write_str(" }")
            }
            NftOp::AddRanges { set, ranges } | NftOp::DelRanges { set, ranges } => {
                let verb = if matches!(self, NftOp::AddRanges { .. }) { "add" } else { "delete" };
                let items: Vec<String> = ranges.iter().map(|(k, end)| range_elem_text(set, k, end)).collect();
                write!(f, "{verb} element {t} {set} {{ {} }}", items.join(", "))
            }
        }
    }
}

/// An element operation of more than `max` elements as its first element and a count
/// (`add element inet netnat pub_any4 { tcp . 20000 : 172.16.1.1 . 20000, ... } (10000 elements)`);
/// every other operation as `Display` writes it. `apply` prints what it sent this way: writing out
/// 10,000 elements was a quarter of its user-space time.
pub fn op_summary(op: &NftOp, max: usize) -> String {
    let (verb, set, n) = match op {
        NftOp::AddElems { set, elems } => ("add", set, elems.len()),
        NftOp::DelElems { set, keys } => ("delete", set, keys.len()),
        NftOp::AddRanges { set, ranges } => ("add", set, ranges.len()),
        NftOp::DelRanges { set, ranges } => ("delete", set, ranges.len()),
        _ => return op.to_string(),
    };
    if n <= max {
        return op.to_string();
    }
    let first = match op {
        NftOp::AddElems { set, elems } => NftOp::AddElems { set: set.clone(), elems: elems[..1].to_vec() },
        NftOp::DelElems { set, keys } => NftOp::DelElems { set: set.clone(), keys: keys[..1].to_vec() },
        NftOp::AddRanges { set, ranges } => NftOp::AddRanges { set: set.clone(), ranges: ranges[..1].to_vec() },
        NftOp::DelRanges { set, ranges } => NftOp::DelRanges { set: set.clone(), ranges: ranges[..1].to_vec() },
        _ => unreachable!("element operations only"),
    };
    let text = first.to_string();
    let body = text.strip_suffix(" }").unwrap_or(&text);
    debug_assert!(body.starts_with(&format!("{verb} element {FAMILY_NAME} {TABLE} {set}")));
    format!("{body}, ... }} ({n} elements)")
}

/// The live table in nft syntax, deterministic (elements sorted, no handles or counters unless
/// asked), so two outputs can be diffed.
pub fn render_table(live: &LiveTable, counters: bool) -> String {
    let mut out = format!("table {FAMILY_NAME} {TABLE} {{\n");
    let mut sets = live.sets.clone();
    sets.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &sets {
        let key = fields_of(s.key_type, s.key_len);
        let data = s.data.and_then(|(t, l)| fields_of(t, l));
        let kind = if s.data.is_some() { "map" } else { "set" };
        let ty = match (&key, &data) {
            (Some(k), Some(d)) => format!("{} : {}", SetSpec::type_text(k), SetSpec::type_text(d)),
            (Some(k), None) => SetSpec::type_text(k),
            _ => format!("0x{:x}", s.key_type),
        };
        out += &format!("\t{kind} {} {{\n\t\ttype {ty}\n", s.name);
        if s.flags & INTERVAL_FLAG != 0 {
            out += "\t\tflags interval\n";
        }
        if s.counter {
            out += "\t\tcounter\n";
        }
        let mut elems: Vec<&LiveElem> = live.elems.get(&s.name).map(|v| v.iter().collect()).unwrap_or_default();
        elems.sort_by(|a, b| (&a.key, &a.data).cmp(&(&b.key, &b.data)));
        if !elems.is_empty() {
            let items: Vec<String> = elems
                .iter()
                .map(|e| {
                    let k = key.as_ref().map(|k| render_concat(k, &e.key)).unwrap_or(expr::hex(&e.key));
                    let d = data.as_ref().map(|d| render_concat(d, &e.data)).unwrap_or(expr::hex(&e.data));
                    let c = match (counters, e.packets, e.bytes) {
                        (true, Some(p), Some(b)) => format!(" counter packets {p} bytes {b}"),
                        _ => String::new(),
                    };
                    if s.data.is_some() {
                        format!("{k}{c} : {d}")
                    } else if s.flags & INTERVAL_FLAG != 0 {
                        // An interval set's element: its data is the key end.
                        format!("{}{c}", range_elem_text(&s.name, &e.key, &e.data))
                    } else {
                        format!("{k}{c}")
                    }
                })
                .collect();
            out += &format!("\t\telements = {{ {} }}\n", items.join(",\n\t\t\t     "));
        }
        out += "\t}\n\n";
    }
    let mut chains = live.chains.clone();
    let order = |n: &str| CHAINS.iter().position(|c| c.name == n).unwrap_or(usize::MAX);
    chains.sort_by(|a, b| (order(&a.name), &a.name).cmp(&(order(&b.name), &b.name)));
    for (i, c) in chains.iter().enumerate() {
        out += &format!("\tchain {} {{\n", c.name);
        if let Some(b) = &c.base {
            let hook = Hook::ALL
                .into_iter()
                .find(|h| h.number() == b.hook)
                .map(|h| h.name().to_string())
                .unwrap_or(b.hook.to_string());
            let policy = if b.policy == 0 { "drop" } else { "accept" };
            out += &format!("\t\ttype {} hook {hook} priority {}; policy {policy};\n", b.kind, b.priority);
        }
        for r in live.rules.iter().filter(|r| r.chain == c.name) {
            out += &format!("\t\t{}\n", render_rule(&r.exprs, r.comment.as_deref()));
        }
        out += "\t}\n";
        if i + 1 < chains.len() {
            out += "\n";
        }
    }
    out += "}\n";
    out
}
