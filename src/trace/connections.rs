//! One line per connection, from the packets of both directions.

use super::{Direction, PacketReport};
use crate::nft::expr;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionReport {
    pub protocol: String,
    /// The client, as it sent the first packet seen.
    pub client: String,
    /// The address and port the client asked for.
    pub server: String,
    /// Where DNAT sent it, if anywhere.
    pub dnat_to: Option<String>,
    /// `arrived` (answered, or forwarded/delivered with no answer seen), `dropped`, `unknown`.
    pub outcome: String,
    pub answered: bool,
    pub dropped_by: Option<String>,
    pub packets: usize,
    pub original: usize,
    pub reply: usize,
    pub conntrack_id: Option<u32>,
    /// Numbers of its packets.
    pub packet_numbers: Vec<usize>,
    /// The whole line, as printed.
    pub summary: String,
}

/// The connection a packet belongs to: the kernel's conntrack id when any of its events had
/// one, else its 5-tuple as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ConnKey {
    Ct(u32),
    Tuple(u8, String, String),
}

fn tuple_key(p: &PacketReport) -> Option<ConnKey> {
    let h = p.headers?;
    Some(match p.direction {
        Direction::Original => ConnKey::Tuple(h.protocol, h.source(), h.destination()),
        Direction::Reply => ConnKey::Tuple(h.protocol, h.destination(), h.source()),
    })
}

/// Groups packets into connections, in order of their first packet.
pub fn connections(packets: &[PacketReport]) -> Vec<ConnectionReport> {
    let mut order: Vec<ConnKey> = vec![];
    let mut groups: HashMap<ConnKey, Vec<&PacketReport>> = HashMap::new();
    // A packet dropped before conntrack has no id: it joins the connection with its tuple.
    let mut ct_of_tuple: HashMap<ConnKey, ConnKey> = HashMap::new();
    for p in packets {
        if let (Some(id), Some(t)) = (p.conntrack_id, tuple_key(p)) {
            ct_of_tuple.entry(t).or_insert(ConnKey::Ct(id));
        }
    }
    for p in packets {
        let key = match (p.conntrack_id, tuple_key(p)) {
            (Some(id), _) => ConnKey::Ct(id),
            (None, Some(t)) => ct_of_tuple.get(&t).cloned().unwrap_or(t),
            (None, None) => ConnKey::Tuple(0, format!("packet {}", p.number), String::new()),
        };
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(p);
    }
    order.iter().map(|k| connection_report(&groups[k])).collect()
}

fn connection_report(ps: &[&PacketReport]) -> ConnectionReport {
    let first_orig = ps.iter().find(|p| p.direction == Direction::Original && p.headers.is_some());
    let (protocol, client, server) = match (first_orig, ps.iter().find_map(|p| p.headers)) {
        (Some(p), _) => {
            let h = p.headers.expect("filtered");
            (expr::proto_name(h.protocol), h.source(), h.destination())
        }
        // Only replies were seen: the reply's destination is the client.
        (None, Some(h)) => (expr::proto_name(h.protocol), h.destination(), h.source()),
        (None, None) => ("?".into(), "?".into(), "?".into()),
    };
    let dnat_to =
        ps.iter().filter(|p| p.direction == Direction::Original).flat_map(|p| &p.nat).find(|n| n.kind == "dnat");
    let dnat_to = dnat_to.map(|n| n.to.clone());
    let original = ps.iter().filter(|p| p.direction == Direction::Original).count();
    let reply = ps.len() - original;
    let dropped = ps.iter().find(|p| p.fate.verdict == "dropped");
    let delivered = ps.iter().any(|p| p.direction == Direction::Original && p.fate.verdict == "accepted");
    let answered = ps.iter().any(|p| p.direction == Direction::Reply && p.fate.verdict == "accepted");
    let target = dnat_to.clone().unwrap_or(server.clone());
    let (outcome, what) = match (dropped, answered, delivered) {
        (Some(p), _, _) => ("dropped", p.fate.text.clone()),
        (None, true, _) => ("arrived", format!("arrived at {target} and was answered")),
        (None, false, true) => ("arrived", format!("arrived at {target}; no answer seen")),
        (None, false, false) => ("unknown", "no verdict seen".into()),
    };
    let nat = match (&dnat_to, first_orig) {
        (Some(to), _) => format!("DNAT to {to}"),
        (None, Some(_)) => "not translated (no table DNATs it)".into(),
        (None, None) => "translation not seen".into(),
    };
    let summary = format!(
        "{protocol} {client} > {server}: {nat}; {what} ({} packet{}: {original} original, {reply} reply)",
        ps.len(),
        if ps.len() == 1 { "" } else { "s" }
    );
    ConnectionReport {
        protocol,
        client,
        server,
        dnat_to,
        outcome: outcome.into(),
        answered,
        dropped_by: dropped.and_then(|p| p.fate.by.clone()),
        packets: ps.len(),
        original,
        reply,
        conntrack_id: ps.iter().find_map(|p| p.conntrack_id),
        packet_numbers: ps.iter().map(|p| p.number).collect(),
        summary,
    }
}
