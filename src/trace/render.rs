//! A packet's way through the tables as text.

use super::{Direction, PacketReport};

/// A packet as `netnat trace` prints it: a header line, one line per chain (netnat trace's own
/// marking chains left out), NAT where it shows, and the fate.
pub fn render_packet(p: &PacketReport) -> String {
    let what = p.headers.map(|h| h.to_string()).unwrap_or("(headers not reported)".into());
    let dir = match p.direction {
        Direction::Original => "original",
        Direction::Reply => "reply",
    };
    let iif = p.iif.as_ref().map(|i| format!(" in {i}")).unwrap_or_default();
    let mut out = format!("packet {} ({dir}): {what}{iif}\n", p.number);
    for (i, v) in p.visits.iter().enumerate() {
        for n in p.nat.iter().filter(|n| n.visit == i) {
            let by = n.by.as_ref().map(|b| format!(" (by {b})")).unwrap_or_default();
            out += &format!("  {:<16} {}: {} -> {}{by}\n", "", n.kind, n.from, n.to);
        }
        if v.trace_chain {
            continue;
        }
        let place = match (&v.hook, v.priority) {
            (Some(h), Some(p)) => format!("{h} {p}"),
            (Some(h), None) => h.clone(),
            _ => String::new(),
        };
        let chain = format!("{} {} {}", v.family, v.table, v.chain);
        let mut first = true;
        let mut line = |text: String, out: &mut String| {
            let lead = if first { place.as_str() } else { "" };
            first = false;
            *out += &format!("  {lead:<16} {text}\n");
        };
        for r in &v.rules {
            let rc = if r.chain == v.chain { chain.clone() } else { format!("{} {} {}", v.family, v.table, r.chain) };
            let body = match (r.handle, &r.rule) {
                (Some(h), Some(t)) => format!("rule {h}: {t}"),
                (Some(h), None) => format!("rule {h}"),
                (None, _) => "end of chain".into(),
            };
            let comment = r.comment.as_ref().map(|c| format!(" \"{c}\"")).unwrap_or_default();
            // `rule 4: return`, not `rule 4: return -> return`.
            let verdict = if body.ends_with(&r.verdict) && comment.is_empty() {
                String::new()
            } else {
                format!(" -> {}", r.verdict)
            };
            line(format!("{rc}: {body}{comment}{verdict}"), &mut out);
        }
        if let Some(end) = v.end.as_deref().filter(|e| e.starts_with("policy")) {
            line(format!("{chain}: {end}"), &mut out);
        } else if v.end.is_none() && v.rules.is_empty() {
            line(format!("{chain}: (no verdict reported)"), &mut out);
        }
    }
    out += &format!("  => {}\n", p.fate.text);
    out
}
