//! Rules of other tables read back: what a rule matches (a small symbolic reading of its
//! expressions), the rule in nft syntax, and iptables-nft's xt NAT targets decoded.

use super::expr::{
    self, CmpOp, Expr, Verdict, META_IIFNAME, META_L4PROTO, META_NFPROTO, META_OIFNAME, NAT_DNAT, PAYLOAD_NETWORK,
    PAYLOAD_TRANSPORT,
};
use super::family::{families_of, nfproto_family};
use super::LiveRule;
use crate::model::{Family, Subnet};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq)]
enum Src {
    Meta(u32),
    Payload(u32, u32, u32),
    Masked(Box<Src>, u8),
    Other,
}

/// The simple matches of one rule (only those the checks below need).
#[derive(Debug, Default)]
pub(crate) struct RuleMatches {
    /// (iifname/oifname key, op, name, is a prefix `name*`).
    pub(crate) ifnames: Vec<(u32, CmpOp, String, bool)>,
    /// (is daddr, op, subnet).
    pub(crate) prefixes: Vec<(bool, CmpOp, Subnet)>,
    pub(crate) l4proto: Option<u8>,
    /// Inclusive port bounds from `th dport` comparisons.
    pub(crate) dport_lo: Option<u16>,
    pub(crate) dport_hi: Option<u16>,
    pub(crate) drop: bool,
    pub(crate) dnat: bool,
    /// The one address family the rule's own expressions restrict it to: `meta nfproto`, or the
    /// family of its nat statement (`dnat ip6 to ...` acts on IPv6 packets only, even in inet).
    pub(crate) family: Option<Family>,
}

pub(crate) fn read_matches(exprs: &[Expr]) -> RuleMatches {
    let mut regs: BTreeMap<u32, Src> = BTreeMap::new();
    let mut m = RuleMatches::default();
    for e in exprs {
        match e {
            Expr::Meta { key, dreg } => {
                regs.insert(*dreg, Src::Meta(*key));
            }
            Expr::Payload { base, offset, len, dreg } => {
                regs.insert(*dreg, Src::Payload(*base, *offset, *len));
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                let src = regs.get(sreg).cloned().unwrap_or(Src::Other);
                // A contiguous network mask of an IPv4 or IPv6 address: its prefix length.
                let wide = match mask.len() {
                    4 => Some((u32::from_be_bytes(mask[..4].try_into().unwrap()) as u128) << 96),
                    16 => Some(u128::from_be_bytes(mask[..16].try_into().unwrap())),
                    _ => None,
                };
                let prefix = wide
                    .filter(|_| xor.iter().all(|b| *b == 0))
                    .filter(|m| m.checked_shl(m.leading_ones()).unwrap_or(0) == 0)
                    .map(|m| m.leading_ones() as u8);
                let s = match prefix {
                    Some(p) => Src::Masked(Box::new(src), p),
                    None => Src::Other,
                };
                regs.insert(*dreg, s);
            }
            Expr::Cmp { sreg, op, data } => {
                let src = regs.get(sreg).cloned().unwrap_or(Src::Other);
                read_cmp(&mut m, &src, *op, data);
            }
            Expr::Verdict(Verdict::Drop) => m.drop = true,
            Expr::Nat { kind, family, .. } => {
                m.dnat |= *kind == NAT_DNAT;
                m.family = m.family.or(nfproto_family(*family));
            }
            Expr::Xt { target: true, name, .. } => match name.as_str() {
                "DNAT" | "REDIRECT" => m.dnat = true,
                "DROP" | "REJECT" => m.drop = true,
                _ => {}
            },
            Expr::Lookup { dreg: Some(d), .. } | Expr::Immediate { dreg: d, .. } => {
                regs.insert(*d, Src::Other);
            }
            Expr::Ct { dreg, .. } | Expr::Fib { dreg, .. } => {
                regs.insert(*dreg, Src::Other);
            }
            _ => {}
        }
    }
    m
}

fn read_cmp(m: &mut RuleMatches, src: &Src, op: CmpOp, data: &[u8]) {
    let ip_of = |d: &[u8]| match d.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(d).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(d).ok()?)),
        _ => None,
    };
    // IPv4 saddr/daddr at 12/16, IPv6 at 8/24: (is daddr).
    let addr_field = |off: u32, len: u32| match (off, len) {
        (12, 4) | (8, 16) => Some(false),
        (16, 4) | (24, 16) => Some(true),
        _ => None,
    };
    match src {
        Src::Meta(k) if *k == META_IIFNAME || *k == META_OIFNAME => {
            let end = data.iter().position(|b| *b == 0);
            let name = String::from_utf8_lossy(&data[..end.unwrap_or(data.len())]).into_owned();
            m.ifnames.push((*k, op, name, end.is_none() && data.len() < 16));
        }
        Src::Meta(k) if *k == META_L4PROTO && data.len() == 1 && op == CmpOp::Eq => m.l4proto = Some(data[0]),
        Src::Meta(k) if *k == META_NFPROTO && data.len() == 1 && op == CmpOp::Eq => {
            m.family = nfproto_family(data[0] as u32)
        }
        Src::Payload(PAYLOAD_NETWORK, 9, 1) if data.len() == 1 && op == CmpOp::Eq => m.l4proto = Some(data[0]),
        Src::Payload(PAYLOAD_NETWORK, off, len) if addr_field(*off, *len).is_some() => {
            if let Some(ip) = ip_of(data) {
                let full = if ip.is_ipv6() { 128 } else { 32 };
                m.prefixes.push((addr_field(*off, *len) == Some(true), op, Subnet { addr: ip, prefix: full }));
            }
        }
        Src::Masked(inner, p) => {
            if let (Src::Payload(PAYLOAD_NETWORK, off, len), Some(ip)) = (inner.as_ref(), ip_of(data)) {
                if let Some(daddr) = addr_field(*off, *len) {
                    m.prefixes.push((daddr, op, Subnet { addr: ip, prefix: *p }));
                }
            }
        }
        Src::Payload(PAYLOAD_TRANSPORT, 2, 2) if data.len() == 2 => {
            let p = u16::from_be_bytes([data[0], data[1]]);
            match op {
                CmpOp::Eq => {
                    m.dport_lo = Some(p);
                    m.dport_hi = Some(p);
                }
                CmpOp::Gte => m.dport_lo = Some(p),
                CmpOp::Gt => m.dport_lo = Some(p.saturating_add(1)),
                CmpOp::Lte => m.dport_hi = Some(p),
                CmpOp::Lt => m.dport_hi = Some(p.saturating_sub(1)),
                CmpOp::Neq => {}
            }
        }
        _ => {}
    }
}

/// The one address family rule `r` acts on, if its table's family or its own matches fix it.
fn rule_family(r: &LiveRule, m: &RuleMatches) -> Option<Family> {
    let mut fams = families_of(r.family).iter().filter(|f| m.family.is_none_or(|x| x == **f));
    match (fams.next(), fams.next()) {
        (Some(f), None) => Some(*f),
        _ => None,
    }
}

/// A rule of another table in nft syntax, iptables-nft NAT targets decoded.
pub fn render_foreign(r: &LiveRule) -> String {
    // Set key lengths of foreign tables are unknown here: lookups print their first component.
    let mut text = expr::render(&without_nat_targets(&r.exprs), &|_| None);
    // An xt NAT target's address width follows the family of the rule (ip or ip6 table).
    let family = rule_family(r, &read_matches(&r.exprs));
    for e in &r.exprs {
        if let Expr::Xt { target: true, name, info } = e {
            if is_xt_nat(name) {
                if !text.is_empty() {
                    text.push(' ');
                }
                text += &xt_nat_text(name, info, family);
            }
        }
    }
    text
}

pub(crate) fn is_xt_nat(name: &str) -> bool {
    matches!(name, "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP")
}

fn without_nat_targets(exprs: &[Expr]) -> Vec<Expr> {
    exprs.iter().filter(|e| !matches!(e, Expr::Xt { target: true, name, .. } if is_xt_nat(name))).cloned().collect()
}

// NF_NAT_RANGE_* flags (linux/netfilter/nf_nat.h).
const NAT_RANGE_MAP_IPS: u32 = 1;
const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const NAT_RANGE_PROTO_RANDOM: u32 = 4;
const NAT_RANGE_PERSISTENT: u32 = 8;
const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 16;

/// An iptables NAT target's range, decoded from its info blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XtRange {
    pub flags: u32,
    pub min_ip: IpAddr,
    pub max_ip: IpAddr,
    pub min_port: u16,
    pub max_port: u16,
}

/// Decodes the info blob of an iptables-nft or ip6tables-nft DNAT/SNAT/MASQUERADE/REDIRECT
/// target of a rule of address family `family`, told apart by size (the kernel dumps it padded to
/// 8 bytes, XT_ALIGN):
/// - 24: revision 0 in IPv4, `struct nf_nat_ipv4_multi_range_compat` (rangesize u32, then flags
///   u32, min_ip, max_ip be32, min/max port be16);
/// - 40: `struct nf_nat_range` (flags u32, min/max `union nf_inet_addr` of 16 bytes, min/max port
///   be16): revision 1 of DNAT/SNAT, and MASQUERADE/REDIRECT in IPv6; 48: revision 2,
///   `struct nf_nat_range2` (the same, plus a base port). An IPv4 address fills the first 4
///   bytes of a `nf_inet_addr`, an IPv6 address all 16.
///
/// None for anything else (an unknown layout, or the compat layout in IPv6, where it does not exist).
pub fn decode_xt_nat(info: &[u8], family: Family) -> Option<XtRange> {
    let u32_at = |o: usize| info.get(o..o + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
    let ip_at = |o: usize| match family {
        Family::V4 => info.get(o..o + 4).map(|b| IpAddr::from(<[u8; 4]>::try_from(b).unwrap())),
        Family::V6 => info.get(o..o + 16).map(|b| IpAddr::from(<[u8; 16]>::try_from(b).unwrap())),
    };
    let port_at = |o: usize| info.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match info.len() {
        20 | 24 if family == Family::V4 => {
            if u32_at(0)? != 1 {
                return None; // rangesize: iptables always writes exactly one range
            }
            Some(XtRange {
                flags: u32_at(4)?,
                min_ip: ip_at(8)?,
                max_ip: ip_at(12)?,
                min_port: port_at(16)?,
                max_port: port_at(18)?,
            })
        }
        40 | 48 => Some(XtRange {
            flags: u32_at(0)?,
            min_ip: ip_at(4)?,
            max_ip: ip_at(20)?,
            min_port: port_at(36)?,
            max_port: port_at(38)?,
        }),
        _ => None,
    }
}

/// `dnat to 10.1.2.3:80`, `dnat to [fd00::2]:80` and the like, as iptables-save would put it,
/// or a note that the blob could not be decoded. `family`: the rule's address family, None when
/// it cannot be told (then the address width is unknown).
pub fn xt_nat_text(name: &str, info: &[u8], family: Option<Family>) -> String {
    let verb = match name {
        "DNAT" => "dnat to",
        "SNAT" => "snat to",
        "MASQUERADE" => "masquerade to",
        "REDIRECT" => "redirect to",
        other => return format!("xt target {other} (not decoded: {} bytes of target data)", info.len()),
    };
    let Some(r) = family.and_then(|f| decode_xt_nat(info, f)) else {
        return format!("xt target {name} (not decoded: {} bytes of target data)", info.len());
    };
    let ports = r.flags & NAT_RANGE_PROTO_SPECIFIED != 0;
    // An IPv6 address followed by a port goes in brackets, as iptables and nft print it.
    let addr = |ip: IpAddr| if ports && ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let mut s = String::new();
    if r.flags & NAT_RANGE_MAP_IPS != 0 {
        s += &addr(r.min_ip);
        if r.max_ip != r.min_ip {
            s += &format!("-{}", addr(r.max_ip));
        }
    }
    if ports {
        s += &format!(":{}", r.min_port);
        if r.max_port != r.min_port {
            s += &format!("-{}", r.max_port);
        }
    }
    let mut words = if s.is_empty() { verb.split(' ').next().unwrap().to_string() } else { format!("{verb} {s}") };
    for (bit, w) in [
        (NAT_RANGE_PROTO_RANDOM, "random"),
        (NAT_RANGE_PROTO_RANDOM_FULLY, "fully-random"),
        (NAT_RANGE_PERSISTENT, "persistent"),
    ] {
        if r.flags & bit != 0 {
            words += &format!(" {w}");
        }
    }
    let tool = if family == Some(Family::V6) { "ip6tables" } else { "iptables" };
    format!("{words} ({tool} {name})")
}
