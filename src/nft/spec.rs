//! The nftables vocabulary netnat plans in: chains, sets, rules and the operations on them. Plain
//! data, no I/O; `crate::ruleset` fills it with netnat's layout, the adapter (`super`) sends it.

use super::expr::{self, Expr};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const TABLE: &str = "netnat";
pub const FAMILY_NAME: &str = "inet";

// Hook priorities from the nftables wiki ("Netfilter hooks"): NF_IP_PRI_RAW, _NAT_DST, _FILTER, _NAT_SRC.
pub const PRIO_RAW: i32 = -300;
pub const PRIO_DSTNAT: i32 = -100;
pub const PRIO_FILTER: i32 = 0;
pub const PRIO_SRCNAT: i32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const ALL: [Hook; 5] = [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting];
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }
    pub fn name(self) -> &'static str {
        ["prerouting", "input", "forward", "output", "postrouting"][self.number() as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

impl ChainKind {
    pub fn name(self) -> &'static str {
        match self {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    pub name: &'static str,
    /// None for a regular chain, reached only by a jump.
    pub base: Option<BaseSpec>,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    pub hook: Hook,
    pub kind: ChainKind,
    pub priority: i32,
}

/// One component of a set key or map value, as nft names its data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    /// An interface name (16 bytes, NUL-padded).
    Ifname,
    /// A connection mark (host byte order, as the kernel keeps it).
    Mark,
}

impl Field {
    const ALL: [Field; 6] =
        [Field::Ipv4Addr, Field::Ipv6Addr, Field::InetProto, Field::InetService, Field::Ifname, Field::Mark];
    fn type_id(self) -> u32 {
        match self {
            Field::Ipv4Addr => 7,
            Field::Ipv6Addr => 8,
            Field::InetProto => 12,
            Field::InetService => 13,
            Field::Ifname => 41,
            Field::Mark => 19,
        }
    }
    fn from_type_id(t: u32) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.type_id() == t)
    }
    pub fn name(self) -> &'static str {
        match self {
            Field::Ipv4Addr => "ipv4_addr",
            Field::Ipv6Addr => "ipv6_addr",
            Field::InetProto => "inet_proto",
            Field::InetService => "inet_service",
            Field::Ifname => "ifname",
            Field::Mark => "mark",
        }
    }
    /// Bytes of the value itself.
    fn len(self) -> usize {
        match self {
            Field::Ipv4Addr => 4,
            Field::Ipv6Addr => 16,
            Field::InetProto => 1,
            Field::InetService => 2,
            Field::Ifname => 16,
            Field::Mark => 4,
        }
    }
    /// Bytes in registers: every component of a concatenation is padded to a multiple of 4.
    fn padded(self) -> usize {
        self.len().div_ceil(4) * 4
    }
    /// Writes the value `b` (this field's bytes) as nft prints it, without allocating: `apply`
    /// prints every element it sends, 20,000 of them for 10,000 ports.
    fn write(self, out: &mut dyn fmt::Write, b: &[u8]) -> fmt::Result {
        match self {
            Field::Ipv4Addr => write!(out, "{}", Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            Field::Ipv6Addr => write!(out, "{}", Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))),
            Field::InetProto => match b[0] {
                6 => out.write_str("tcp"),
                17 => out.write_str("udp"),
                p => out.write_str(&expr::proto_name(p)),
            },
            Field::InetService => write!(out, "{}", u16::from_be_bytes([b[0], b[1]])),
            Field::Ifname => {
                let n = b.iter().position(|c| *c == 0).unwrap_or(b.len());
                write!(out, "\"{}\"", String::from_utf8_lossy(&b[..n]))
            }
            Field::Mark => write!(out, "0x{:08x}", u32::from_ne_bytes(b.try_into().expect("4 bytes"))),
        }
    }
}

/// Concatenated type id, as nft builds it: 6 bits per component.
pub fn concat_type(fields: &[Field]) -> u32 {
    fields.iter().fold(0, |acc, f| (acc << 6) | f.type_id())
}
pub fn concat_len(fields: &[Field]) -> u32 {
    fields.iter().map(|f| f.padded() as u32).sum()
}
/// Splits a concatenated type id back into fields (None if a component is not one of ours or
/// the length does not fit).
pub fn fields_of(type_id: u32, len: u32) -> Option<Vec<Field>> {
    let mut out = vec![];
    let mut t = type_id;
    while t != 0 {
        out.push(Field::from_type_id(t & 63)?);
        t >>= 6;
    }
    out.reverse();
    (!out.is_empty() && concat_len(&out) == len).then_some(out)
}

/// Renders concatenated bytes as `a . b . c`.
pub fn render_concat(fields: &[Field], bytes: &[u8]) -> String {
    let mut out = String::new();
    write_concat(&mut out, fields, bytes).expect("a String takes any text");
    out
}

/// `render_concat` into `out`.
pub fn write_concat(out: &mut dyn fmt::Write, fields: &[Field], bytes: &[u8]) -> fmt::Result {
    let mut at = 0;
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.write_str(" . ")?;
        }
        match bytes.get(at..at + f.len()) {
            Some(b) => f.write(out, b)?,
            None => out.write_str("?")?,
        }
        at += f.padded();
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: &'static str,
    pub key: &'static [Field],
    /// Empty for a plain set.
    pub data: &'static [Field],
    /// A counter on every element.
    pub counter: bool,
    /// Elements are ranges (`flags interval`): each has a key and a key end, and the last field
    /// of a key may span a range of values (an address prefix). Their `Elems` data is the key end.
    pub interval: bool,
    /// For a NAT map: the set whose element counters count its ports' traffic (a NAT map only
    /// sees a connection's first packet, so it does not count).
    pub counted_in: Option<&'static str>,
}

impl SetSpec {
    /// (data type, data length) for a map, None for a plain set.
    pub fn data_desc(&self) -> Option<(u32, u32)> {
        (!self.data.is_empty()).then(|| (self.data_type(), self.data_len()))
    }
    pub fn key_type(&self) -> u32 {
        concat_type(self.key)
    }
    pub fn key_len(&self) -> u32 {
        concat_len(self.key)
    }
    pub fn data_type(&self) -> u32 {
        concat_type(self.data)
    }
    pub fn data_len(&self) -> u32 {
        concat_len(self.data)
    }
    /// Byte length of each key field, unpadded, as the kernel wants it for a concatenation
    /// of ranges (NFTA_SET_DESC_CONCAT); None unless `interval`.
    pub fn concat_field_lens(&self) -> Option<Vec<u8>> {
        self.interval.then(|| self.key.iter().map(|f| f.len() as u8).collect())
    }
    pub fn type_text(fields: &[Field]) -> String {
        fields.iter().map(|f| f.name()).collect::<Vec<_>>().join(" . ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub chain: &'static str,
    pub exprs: Vec<Expr>,
    pub comment: String,
}

/// One change to table `inet netnat`. A list of them goes to the kernel as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftOp {
    AddTable,
    DelTable,
    AddChain(ChainSpec),
    DelChain(String),
    FlushChain(String),
    AddRule(RuleSpec),
    AddSet(SetSpec),
    DelSet(String),
    FlushSet(String),
    AddElems {
        set: String,
        elems: Vec<(Vec<u8>, Vec<u8>)>,
    },
    DelElems {
        set: String,
        keys: Vec<Vec<u8>>,
    },
    /// Elements of an interval set: (key, key end).
    AddRanges {
        set: String,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
    },
    DelRanges {
        set: String,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_types_round_trip() {
        let v6 = [Field::Ipv6Addr, Field::InetProto, Field::InetService];
        assert_eq!(concat_len(&v6), 24);
        assert_eq!(fields_of(concat_type(&v6), 24).unwrap(), v6.to_vec());
        assert_eq!(concat_type(&[Field::InetProto, Field::InetService]), 781); // as nft computes it
        assert_eq!(fields_of(781, 12), None);
        let mut b = vec![0u8; 24];
        b[15] = 1;
        b[16] = 6;
        b[20..22].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(render_concat(&v6, &b), "::1 . tcp . 80");
    }
}
