//! Events into packets: every table and chain each packet met, the rules that matched, NAT and
//! the verdict.

use super::{is_trace_chain, verdict_text, Catalog, Direction, Event, EventKind, Headers};
use crate::nft::family::{family_name, hook_name, FAMILY_INET};
use crate::nft::trace::terminal;
use serde::Serialize;
use std::collections::HashMap;

/// Events per packet, in the order the packets were marked.
#[derive(Debug, Default)]
pub struct Collector {
    limit: usize,
    packets: Vec<Building>,
    /// The packet each trace id is being collected for.
    current: HashMap<u32, usize>,
    /// Events of packets netnat did not mark (another tracer's) or beyond `limit`.
    pub ignored: u64,
    /// Ids of packets marked beyond `limit`, whose events are left out.
    beyond: std::collections::HashSet<u32>,
}

#[derive(Debug)]
struct Building {
    events: Vec<Event>,
    direction: Direction,
    last_ms: u64,
    done: bool,
    /// The connection's conntrack id, once an event said it.
    ct_id: Option<u32>,
    /// Where the packet was last seen: (hook rank, priority) of its latest base chain.
    at: Option<(u8, i32)>,
}

impl Building {
    fn add(&mut self, ev: Event, cat: &Catalog) {
        if let Some(id) = ev.ct.and_then(|c| c.id) {
            self.ct_id = Some(id);
        }
        if ev.network.is_some() {
            self.at = place(&ev, cat).or(self.at);
        }
        self.events.push(ev);
    }
}

/// Where an event's base chain runs: the order of its hook on a packet's way (prerouting and
/// output first, then input or forward, then postrouting) and its priority.
fn place(ev: &Event, cat: &Catalog) -> Option<(u8, i32)> {
    let b = cat.chain(ev.family, &ev.table, &ev.chain)?.base.as_ref()?;
    let rank = match (ev.family, b.hook) {
        (5, _) => 0, // netdev: ingress, before everything
        (_, 0 | 3) => 1,
        (_, 1 | 2) => 2,
        _ => 3,
    };
    Some((rank, b.priority))
}

impl Collector {
    pub fn new(limit: usize) -> Collector {
        Collector { limit, ..Collector::default() }
    }

    /// netnat's marking rule matched: every traced packet's first event.
    fn is_mark(ev: &Event) -> bool {
        ev.kind == EventKind::Rule
            && ev.handle.is_some()
            && is_trace_chain(&ev.chain)
            && ev.table == crate::ruleset::TABLE
            && ev.family as u32 == FAMILY_INET
            && ev.verdict.as_ref().is_some_and(|(c, _)| *c == -1)
    }

    /// Takes one event that arrived at `now_ms`.
    pub fn push(&mut self, ev: Event, now_ms: u64, cat: &Catalog) {
        if Self::is_mark(&ev) {
            if self.packets.len() >= self.limit {
                // A later packet can reuse an earlier one's id: none of its events go to that one.
                self.current.remove(&ev.id);
                self.beyond.insert(ev.id);
                self.ignored += 1;
                return;
            }
            self.beyond.remove(&ev.id);
            self.current.insert(ev.id, self.packets.len());
            let direction = Direction::of_chain(&ev.chain);
            let mut p = Building { events: vec![], direction, last_ms: now_ms, done: false, ct_id: None, at: None };
            p.add(ev, cat);
            self.packets.push(p);
            return;
        }
        let known = self.current.get(&ev.id).copied();
        let found = match known {
            Some(i) => Some(i),
            None if self.beyond.contains(&ev.id) => None,
            None => self.adopt(&ev, now_ms, cat),
        };
        match found {
            Some(i) => {
                self.current.insert(ev.id, i);
                let p = &mut self.packets[i];
                p.add(ev, cat);
                p.last_ms = now_ms;
            }
            None => self.ignored += 1,
        }
    }

    /// The packet an event with an unknown id continues, if any. The kernel's id hashes the
    /// skb's input interface, which a bridged packet changes between its bridge port and the
    /// bridge (br_netfilter): the same packet then shows with a new id from one hook to the
    /// next. It is the open packet, most recent first, of the same connection and direction
    /// (when the kernel says), the same protocol, source and TCP flags (nothing changes those
    /// before postrouting), that has not reached this hook yet.
    fn adopt(&self, ev: &Event, now_ms: u64, cat: &Catalog) -> Option<usize> {
        let h = Headers::decode(ev.network.as_deref()?, ev.transport.as_deref())?;
        let at = place(ev, cat)?;
        self.packets.iter().enumerate().rev().find_map(|(i, p)| {
            let last = p.events.iter().rev().find_map(|e| e.network.as_deref().map(|n| (n, e.transport.as_deref())));
            let seen = last.and_then(|(n, t)| Headers::decode(n, t))?;
            let ct = ev.ct.unwrap_or_default();
            let fits = !p.done
                && now_ms.saturating_sub(p.last_ms) < 1000
                && ct.id.is_none_or(|id| p.ct_id.is_none_or(|x| x == id))
                && ct.direction.is_none_or(|d| d == (p.direction == Direction::Reply) as u8)
                && (seen.protocol, seen.src, seen.sport, seen.tcp_flags, seen.icmp)
                    == (h.protocol, h.src, h.sport, h.tcp_flags, h.icmp)
                && p.at.is_none_or(|before| at > before);
            fits.then_some(i)
        })
    }

    /// Packets that saw no event for `quiet_ms` are complete: their indexes, in order.
    pub fn settle(&mut self, now_ms: u64, quiet_ms: u64) -> Vec<usize> {
        let mut out = vec![];
        for (i, p) in self.packets.iter_mut().enumerate() {
            if !p.done && now_ms.saturating_sub(p.last_ms) >= quiet_ms {
                p.done = true;
                out.push(i);
            }
        }
        out
    }

    /// Every packet not reported yet.
    pub fn finish(&mut self) -> Vec<usize> {
        self.settle(u64::MAX, 0)
    }

    /// `limit` packets were marked and all of them are complete.
    pub fn full(&self) -> bool {
        self.packets.len() >= self.limit && self.packets.iter().all(|p| p.done)
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Whether any event so far carried conntrack information (Linux 6.14 and later).
    pub fn has_conntrack_info(&self) -> bool {
        self.packets.iter().flat_map(|p| &p.events).any(|e| e.ct.is_some())
    }

    /// Packet `i`, decoded against the catalog.
    pub fn report(&self, i: usize, cat: &Catalog) -> PacketReport {
        packet_report(i + 1, &self.packets[i].events, self.packets[i].direction, cat)
    }
}

/// One rule a packet matched (or the end of a regular chain it returned from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    pub chain: String,
    pub handle: Option<u64>,
    /// The rule in nft syntax, when netnat could read it.
    pub rule: Option<String>,
    pub comment: Option<String>,
    pub verdict: String,
}

/// One base chain a packet went through, with what happened there (rules of the regular
/// chains it jumped to included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Visit {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: Option<String>,
    pub priority: Option<i32>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// The packet as this chain saw it (after any NAT before it).
    pub headers: Option<Headers>,
    pub rules: Vec<RuleHit>,
    /// How the chain ended: `policy accept`, `policy drop`, `accept`, `drop`, ...; None when
    /// the events stop before the chain's end.
    pub end: Option<String>,
    /// One of netnat trace's own marking chains.
    pub trace_chain: bool,
    /// Where the chain ended with a terminal verdict: the rule's chain and handle.
    #[serde(skip)]
    ended_by: Option<(String, Option<u64>, Option<String>)>,
}

/// An address or port change between two chains: NAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatStep {
    /// `dnat`, `snat`; for a reply, `dnat reversed` (the reply's source goes back to the
    /// address the client used) or `snat reversed`.
    pub kind: String,
    pub from: String,
    pub to: String,
    /// The rule that did it (`inet netnat prerouting rule 7`), or conntrack for the later
    /// packets of a translated connection (NAT chains see only a connection's first packet).
    pub by: Option<String>,
    /// Index of the first visit that saw the new address.
    pub visit: usize,
}

/// What became of a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fate {
    /// `accepted`, `dropped`, `queued`, `stolen` or `unknown`.
    pub verdict: String,
    /// For a drop: `table ip filter chain FORWARD: policy drop` or `...: rule handle 7 (text)`.
    pub by: Option<String>,
    /// One sentence: `dropped by table ip filter chain FORWARD: policy drop`, `accepted,
    /// forwarded out MyDocker0`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketReport {
    pub number: usize,
    pub trace_id: u32,
    pub direction: Direction,
    /// The packet when netnat marked it.
    pub headers: Option<Headers>,
    pub iif: Option<String>,
    pub visits: Vec<Visit>,
    pub nat: Vec<NatStep>,
    pub fate: Fate,
    /// The kernel's conntrack id of its connection, when the kernel reports it.
    pub conntrack_id: Option<u32>,
}

fn packet_report(number: usize, events: &[Event], direction: Direction, cat: &Catalog) -> PacketReport {
    let mut visits: Vec<Visit> = vec![];
    let mut conntrack_id = None;
    for ev in events {
        if let Some(id) = ev.ct.and_then(|c| c.id) {
            conntrack_id = Some(id);
        }
        // A packet's first event in each base chain carries its headers and devices.
        if ev.network.is_some() || visits.is_empty() {
            let base = cat.chain(ev.family, &ev.table, &ev.chain).and_then(|c| c.base.clone());
            visits.push(Visit {
                family: family_name(u32::from(ev.family)).into(),
                table: ev.table.clone(),
                chain: ev.chain.clone(),
                hook: base.as_ref().map(|b| hook_name(u32::from(ev.family), b.hook)),
                priority: base.as_ref().map(|b| b.priority),
                iif: ev.iif.map(|i| cat.ifname(i)),
                oif: ev.oif.map(|i| cat.ifname(i)),
                headers: ev.network.as_deref().and_then(|n| Headers::decode(n, ev.transport.as_deref())),
                rules: vec![],
                end: None,
                trace_chain: is_trace_chain(&ev.chain) && ev.table == crate::ruleset::TABLE,
                ended_by: None,
            });
        }
        let v = visits.last_mut().expect("pushed above");
        let (code, target) = match &ev.verdict {
            Some((c, t)) => (*c, t.as_deref()),
            None => (-1, None),
        };
        match ev.kind {
            EventKind::Policy => {
                let p = if ev.policy.unwrap_or(1) == 0 { "drop" } else { "accept" };
                v.end = Some(format!("policy {p}"));
                v.ended_by = Some((ev.chain.clone(), None, None));
            }
            // The end of a base chain's rules (no handle), just before its policy event.
            EventKind::Rule if ev.handle.is_none() && code == -1 => {}
            EventKind::Rule | EventKind::Return => {
                let (rule, comment) = match ev.handle {
                    Some(h) => cat.rule_text(ev.family, &ev.table, &ev.chain, h),
                    None => (None, None),
                };
                let verdict = verdict_text(code, target);
                if terminal(code) {
                    v.end = Some(verdict.clone());
                    v.ended_by = Some((ev.chain.clone(), ev.handle, rule.clone()));
                }
                v.rules.push(RuleHit { chain: ev.chain.clone(), handle: ev.handle, rule, comment, verdict });
            }
            EventKind::Other(_) => {}
        }
    }
    let nat = nat_steps(&visits, events, direction, cat);
    let fate = fate_of(&visits);
    let first = visits.first();
    PacketReport {
        number,
        trace_id: events.first().map(|e| e.id).unwrap_or(0),
        direction,
        headers: first.and_then(|v| v.headers),
        iif: first.and_then(|v| v.iif.clone()),
        visits,
        nat,
        fate,
        conntrack_id,
    }
}

/// Address and port changes from one chain to the next, with the translating rule seen between.
fn nat_steps(visits: &[Visit], events: &[Event], dir: Direction, cat: &Catalog) -> Vec<NatStep> {
    // The NAT rules each visit matched, as `FAMILY TABLE CHAIN rule HANDLE`.
    let mut nat_rules: Vec<Vec<String>> = vec![vec![]; visits.len()];
    let mut at = 0usize;
    for (k, ev) in events.iter().enumerate() {
        if k > 0 && ev.network.is_some() {
            at += 1;
        }
        if let (Some(h), EventKind::Rule) = (ev.handle, ev.kind) {
            if cat.is_nat_rule(ev.family, &ev.table, &ev.chain, h) {
                if let Some(list) = nat_rules.get_mut(at) {
                    list.push(format!("{} {} {} rule {h}", family_name(u32::from(ev.family)), ev.table, ev.chain));
                }
            }
        }
    }
    let mut out = vec![];
    let mut prev: Option<(usize, Headers)> = None;
    for (i, v) in visits.iter().enumerate() {
        let Some(h) = v.headers else { continue };
        if let Some((j, p)) = prev {
            // No rule translated it here: conntrack did, as it did the connection's first packet.
            let by = || {
                let rule = nat_rules[j..i].iter().flatten().next_back().cloned();
                Some(rule.unwrap_or("conntrack, as for the connection's first packet".into()))
            };
            if (p.dst, p.dport) != (h.dst, h.dport) {
                let kind = if dir == Direction::Original { "dnat" } else { "snat reversed" };
                out.push(NatStep { kind: kind.into(), from: p.destination(), to: h.destination(), by: by(), visit: i });
            }
            if (p.src, p.sport) != (h.src, h.sport) {
                let kind = if dir == Direction::Original { "snat" } else { "dnat reversed" };
                out.push(NatStep { kind: kind.into(), from: p.source(), to: h.source(), by: by(), visit: i });
            }
        }
        prev = Some((i, h));
    }
    out
}

fn fate_of(visits: &[Visit]) -> Fate {
    for v in visits {
        let Some(end) = v.end.as_deref() else { continue };
        let (chain, handle, rule) = v.ended_by.clone().unwrap_or((v.chain.clone(), None, None));
        let place = format!("table {} {} chain {chain}", v.family, v.table);
        let how = match (handle, &rule) {
            (Some(h), Some(r)) => format!("rule handle {h} ({r})"),
            (Some(h), None) => format!("rule handle {h}"),
            (None, _) => end.to_string(),
        };
        let by = format!("{place}: {how}");
        let verdict = match end {
            "drop" | "policy drop" => "dropped",
            "queue" => "queued",
            "stolen" => "stolen",
            _ => continue,
        };
        let text = match verdict {
            "dropped" => format!("dropped by {by}"),
            "queued" => format!("queued to user space by {by}"),
            _ => format!("taken over (stolen) by {by}"),
        };
        return Fate { verdict: verdict.into(), by: Some(by), text };
    }
    let Some(last) = visits.iter().rev().find(|v| v.end.is_some() || !v.rules.is_empty()) else {
        return Fate { verdict: "unknown".into(), by: None, text: "no chain reported a verdict".into() };
    };
    let out = visits.iter().rev().find_map(|v| v.oif.clone());
    let text = match last.hook.as_deref() {
        Some("forward" | "postrouting") => match out {
            Some(o) => format!("accepted, forwarded out {o}"),
            None => "accepted, forwarded".into(),
        },
        Some("input") => "accepted, delivered to this host".into(),
        Some("output") => match out {
            Some(o) => format!("accepted, sent by this host out {o}"),
            None => "accepted, sent by this host".into(),
        },
        Some("prerouting") => "accepted at prerouting; no chain of a later hook saw it (no table has one there, or \
                               routing dropped it: no route, rp_filter, a martian address)"
            .into(),
        _ => "accepted".into(),
    };
    Fate { verdict: "accepted".into(), by: None, text }
}
