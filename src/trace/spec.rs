//! What to trace: the marking rules of `netnat trace` for one target (and optional source),
//! requests by their headers and replies by their connection.

use super::TRACE_CHAINS;
use crate::model::{ip_bits, ip_from_bits, range_text, Family, HostPorts, InputError, Mapping, Proto, Subnet};
use crate::nft::expr::{
    cmp, load_ct_original, load_ct_original_addr, load_daddr, load_meta, load_saddr, load_th_dport, match_ct_bits,
    match_daddr_local, match_nfproto, match_prefix, set_nftrace, CmpOp, Expr, CT_DIRECTION, CT_DIR_REPLY, CT_PROTOCOL,
    CT_PROTO_DST, CT_STATUS, CT_STATUS_DNAT, META_L4PROTO, REG_1,
};
use crate::nft::family::{NFPROTO_IPV4, NFPROTO_IPV6};
use crate::ruleset::RuleSpec;
use serde::Serialize;
use std::net::IpAddr;

/// Which way a packet goes in its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the client to the port (the request).
    Original,
    /// From the server back to the client.
    Reply,
}

impl Direction {
    /// The direction a trace chain marks.
    pub(super) fn of_chain(name: &str) -> Direction {
        if name.ends_with("-reply") {
            Direction::Reply
        } else {
            Direction::Original
        }
    }
}

/// What `netnat trace [HOSTIP:]HOSTPORT[-END][/PROTO] [--from CIDR]` marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSpec {
    pub protocol: Proto,
    /// One destination address; None: every local address.
    pub host_ip: Option<IpAddr>,
    /// The one family traced (from the address, `0.0.0.0`/`[::]`, or `--from`); None: both.
    pub family: Option<Family>,
    pub port: u16,
    pub port_end: u16,
    pub from: Option<Subnet>,
}

impl TraceSpec {
    /// Parses the target and `--from`; bad input is an `InputError` naming the value.
    pub fn parse(target: &str, from: Option<&str>) -> Result<TraceSpec, InputError> {
        let h: HostPorts = target.parse()?;
        let from = from.map(parse_source).transpose()?;
        let mut family = h.host_ip.map(Family::of);
        let host_ip = h.host_ip.filter(|ip| !ip.is_unspecified());
        if let Some(s) = &from {
            if family.is_some_and(|f| f != s.family()) {
                return Err(InputError(format!(
                    "--from {s} is {} but {target} is {}: a connection has one address family",
                    s.family(),
                    family.map(Family::name).unwrap_or_default()
                )));
            }
            family = Some(s.family());
        }
        Ok(TraceSpec { protocol: h.protocol, host_ip, family, port: h.host_port, port_end: h.host_port_end, from })
    }

    /// `tcp port 9090 on every local address`, `udp ports 5000-5010 on 198.51.100.1 from 10.0.0.0/8`.
    pub fn describe(&self) -> String {
        let ports = if self.port == self.port_end { "port" } else { "ports" };
        let on = match (self.host_ip, self.family) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(f)) => format!("every local {f} address"),
            (None, None) => "every local address".into(),
        };
        let from = self.from.map(|s| format!(" from {s}")).unwrap_or_default();
        format!("{} {ports} {} on {on}{from}", self.protocol, range_text(self.port, self.port_end))
    }

    /// Whether a published mapping is on the traced port (for saying what is published there).
    pub fn covers(&self, m: &Mapping) -> bool {
        m.protocol == self.protocol
            && m.host_port <= self.port_end
            && self.port <= m.host_port_end
            && self.family.is_none_or(|f| f == m.family())
            && match (self.host_ip, m.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    fn nfprotos(&self) -> Option<u8> {
        self.family.map(|f| if f == Family::V6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 })
    }

    /// `th dport P` or `th dport >= A th dport <= B` (big-endian bytes compare as numbers).
    fn match_ports(&self, load: Expr) -> Vec<Expr> {
        let (a, b) = (self.port.to_be_bytes(), self.port_end.to_be_bytes());
        if self.port == self.port_end {
            vec![load, cmp(REG_1, CmpOp::Eq, a)]
        } else {
            vec![load, cmp(REG_1, CmpOp::Gte, a), cmp(REG_1, CmpOp::Lte, b)]
        }
    }

    /// Requests, by their headers: `[meta nfproto F] (ip daddr A | fib daddr type local)
    /// [ip saddr S] meta l4proto P th dport N meta nftrace set 1`.
    fn request_rule(&self, chain: &'static str) -> RuleSpec {
        let mut v = vec![];
        let nf = self.nfprotos();
        if let Some(n) = nf {
            v.extend(match_nfproto(n));
        }
        match self.host_ip {
            Some(ip) => v.extend(match_prefix(load_daddr(nfproto_of(ip), REG_1), ip, full_prefix(ip))),
            None => v.extend(match_daddr_local()),
        }
        if let Some(s) = self.from {
            v.extend(match_prefix(load_saddr(nfproto_of(s.addr), REG_1), s.addr, s.prefix));
        }
        v.extend([load_meta(META_L4PROTO, REG_1), cmp(REG_1, CmpOp::Eq, [self.protocol.number()])]);
        v.extend(self.match_ports(load_th_dport(REG_1)));
        v.extend(set_nftrace());
        RuleSpec { chain, exprs: v, comment: format!("netnat trace: {}", self.describe()) }
    }

    /// Replies, by their connection: `ct direction reply (ct original ip daddr A | ct status
    /// dnat) [ct original ip saddr S] ct original protocol P ct original proto-dst N meta nftrace
    /// set 1`. Without an address, a reply arriving from outside (prerouting) belongs to a DNAT'd
    /// connection (the host's own connections out to port N are left alone); one sent by the
    /// host (output) answers a connection to a local port.
    fn reply_rule(&self, chain: &'static str, from_outside: bool) -> RuleSpec {
        let mut v = vec![Expr::Ct { key: CT_DIRECTION, dreg: REG_1, dir: None }, cmp(REG_1, CmpOp::Eq, [CT_DIR_REPLY])];
        match self.host_ip {
            Some(ip) => v.extend(match_prefix(load_ct_original_addr(nfproto_of(ip), true, REG_1), ip, full_prefix(ip))),
            None if from_outside => v.extend(match_ct_bits(CT_STATUS, CT_STATUS_DNAT)),
            None => {}
        }
        if let Some(s) = self.from {
            v.extend(match_prefix(load_ct_original_addr(nfproto_of(s.addr), false, REG_1), s.addr, s.prefix));
        }
        v.extend([load_ct_original(CT_PROTOCOL, REG_1), cmp(REG_1, CmpOp::Eq, [self.protocol.number()])]);
        v.extend(self.match_ports(load_ct_original(CT_PROTO_DST, REG_1)));
        v.extend(set_nftrace());
        RuleSpec { chain, exprs: v, comment: format!("netnat trace: replies, {}", self.describe()) }
    }

    /// One rule per trace chain, in `TRACE_CHAINS` order.
    pub fn rules(&self) -> Vec<RuleSpec> {
        let [pre, out, pre_reply, out_reply] = TRACE_CHAINS.map(|c| c.name);
        vec![
            self.request_rule(pre),
            self.request_rule(out),
            self.reply_rule(pre_reply, true),
            self.reply_rule(out_reply, false),
        ]
    }
}

fn nfproto_of(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        NFPROTO_IPV6
    } else {
        NFPROTO_IPV4
    }
}

fn full_prefix(ip: IpAddr) -> u8 {
    Family::of(ip).bits() as u8
}

/// `--from`: an address or ADDRESS/PREFIX of any length (a whole network, or one host).
fn parse_source(s: &str) -> Result<Subnet, InputError> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let Ok(addr) = a.parse::<IpAddr>() else {
        return Err(InputError(format!("--from '{s}': '{a}' is not an IPv4 or IPv6 address (CIDR: ADDRESS/PREFIX)")));
    };
    let bits = Family::of(addr).bits();
    let prefix = match p {
        "" => bits,
        p => match p.parse::<u32>() {
            Ok(v) if v <= bits => v,
            _ => {
                return Err(InputError(format!("--from '{s}': prefix length '{p}' must be a number from 0 to {bits}")))
            }
        },
    };
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) >> (128 - bits) };
    let masked = ip_from_bits(Family::of(addr), ip_bits(addr) & mask);
    if masked != addr {
        return Err(InputError(format!("--from '{s}' has host bits set: did you mean {masked}/{prefix}?")));
    }
    Ok(Subnet { addr, prefix: prefix as u8 })
}
