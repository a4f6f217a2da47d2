//! Typed nf_tables expressions: the kernel's own vocabulary (meta, payload, cmp, lookup, nat, ...).
//!
//! One enum serves three purposes, so they can never disagree:
//! - netnat builds its rules from it (`crate::ruleset`),
//! - the netlink adapter encodes it to, and decodes it from, libnftnl expressions (`super::raw`),
//! - `render` prints a rule in nft syntax, for `netnat show`, dry runs and audits.
//!
//! Live rules are compared with desired rules as `Vec<Expr>` values, not as text.

pub use super::family::{NFPROTO_IPV4, NFPROTO_IPV6};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// Registers. The kernel dumps registers in a canonical form (a 32-bit register at a 16-byte
// boundary is reported as the 128-bit one), so netnat only ever uses canonical numbers:
// `REG_1` is NFT_REG_1 (== NFT_REG32_00) and `REG32_01`/`REG32_02` follow it.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;
pub const REG32_01: u32 = 9;
pub const REG32_02: u32 = 10;

/// The canonical register for 32-bit slot `slot` (0..16): the 128-bit register when the slot
/// starts one (what the kernel dumps), else NFT_REG32_xx.
pub const fn reg_at(slot: u32) -> u32 {
    if slot % 4 == 0 {
        slot / 4 + REG_1
    } else {
        REG32_00 + slot
    }
}
const REG32_00: u32 = 8;

// linux/netfilter/nf_tables.h
pub const META_MARK: u32 = 3;
pub const META_IIFNAME: u32 = 6;
pub const META_OIFNAME: u32 = 7;
pub const META_NFPROTO: u32 = 15;
pub const META_NFTRACE: u32 = 12;
pub const META_L4PROTO: u32 = 16;
pub const PAYLOAD_NETWORK: u32 = 1;
pub const PAYLOAD_TRANSPORT: u32 = 2;
pub const CT_STATE: u32 = 0;
pub const CT_DIRECTION: u32 = 1;
pub const CT_STATUS: u32 = 2;
pub const CT_MARK: u32 = 3;
pub const CT_PROTOCOL: u32 = 10;
pub const CT_PROTO_DST: u32 = 12;
pub const CT_SRC_IP: u32 = 19;
pub const CT_DST_IP: u32 = 20;
pub const CT_SRC_IP6: u32 = 21;
pub const CT_DST_IP6: u32 = 22;
pub const CT_DIR_ORIGINAL: u8 = 0;
pub const CT_DIR_REPLY: u8 = 1;
pub const NAT_SNAT: u32 = 0;
pub const NAT_DNAT: u32 = 1;
pub const FIB_F_DADDR: u32 = 1 << 1;
pub const FIB_RESULT_ADDRTYPE: u32 = 3;
pub const RTN_LOCAL: u32 = 2;
pub const CT_STATE_ESTABLISHED: u32 = 1 << 1;
pub const CT_STATE_RELATED: u32 = 1 << 2;
pub const CT_STATUS_DNAT: u32 = 1 << 5;
pub const LOOKUP_F_INV: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    pub fn from_raw(v: u32) -> Option<CmpOp> {
        use CmpOp::*;
        [Eq, Neq, Lt, Lte, Gt, Gte].get(v as usize).copied()
    }
    pub fn raw(self) -> u32 {
        self as u32
    }
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "",
            CmpOp::Neq => "!= ",
            CmpOp::Lt => "< ",
            CmpOp::Lte => "<= ",
            CmpOp::Gt => "> ",
            CmpOp::Gte => ">= ",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    Other(i32),
}

impl Verdict {
    pub fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
            Verdict::Other(c) => *c,
        }
    }
    pub fn from_code(code: i32, chain: Option<String>) -> Verdict {
        match (code, chain) {
            (0, _) => Verdict::Drop,
            (1, _) => Verdict::Accept,
            (-1, _) => Verdict::Continue,
            (-3, Some(c)) => Verdict::Jump(c),
            (-4, Some(c)) => Verdict::Goto(c),
            (-5, _) => Verdict::Return,
            (c, _) => Verdict::Other(c),
        }
    }
}

/// One nf_tables expression. Counter values are not part of the value: two rules that differ
/// only in how much traffic they saw are the same rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    /// `meta KEY set REG`: writes a packet's meta field (netnat: `meta nftrace set 1`).
    MetaSet {
        key: u32,
        sreg: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Lookup {
        sreg: u32,
        set: String,
        dreg: Option<u32>,
        flags: u32,
    },
    Fib {
        flags: u32,
        result: u32,
        dreg: u32,
    },
    /// `ct KEY set REG`: writes a connection's field (netnat: `ct mark`, at DNAT time).
    CtSet {
        key: u32,
        sreg: u32,
    },
    /// `dir`: Some(0) for `ct original ...`, Some(1) for `ct reply ...`.
    Ct {
        key: u32,
        dreg: u32,
        dir: Option<u8>,
    },
    Nat {
        kind: u32,
        family: u32,
        addr: Option<u32>,
        proto: Option<u32>,
    },
    Masquerade,
    Counter,
    Verdict(Verdict),
    /// Data loaded into a register (used by NAT to a fixed address, and by foreign rules).
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// An iptables-nft target or match (xt), with its name and raw info blob.
    Xt {
        target: bool,
        name: String,
        info: Vec<u8>,
    },
    /// Anything else, kept by name so a rule is never silently misread.
    Other {
        name: String,
    },
}

// ---- builders: small helpers named by what they match (mullvad's check_* style) ----

pub fn load_meta(key: u32, dreg: u32) -> Expr {
    Expr::Meta { key, dreg }
}
pub fn cmp(sreg: u32, op: CmpOp, data: impl Into<Vec<u8>>) -> Expr {
    Expr::Cmp { sreg, op, data: data.into() }
}
/// `meta nfproto ipv4|ipv6`: must precede any network header load in an inet table.
pub fn match_nfproto(nfproto: u8) -> Vec<Expr> {
    vec![load_meta(META_NFPROTO, REG_1), cmp(REG_1, CmpOp::Eq, [nfproto])]
}
/// `meta nfproto ipv4`.
pub fn match_ipv4() -> Vec<Expr> {
    match_nfproto(NFPROTO_IPV4)
}
/// (offset of the source address, of the destination address, address length) in the network
/// header of `nfproto`.
fn addr_layout(nfproto: u8) -> (u32, u32, u32) {
    if nfproto == NFPROTO_IPV6 {
        (8, 24, 16)
    } else {
        (12, 16, 4)
    }
}
/// `ip saddr` / `ip6 saddr`.
pub fn load_saddr(nfproto: u8, dreg: u32) -> Expr {
    let (src, _, len) = addr_layout(nfproto);
    Expr::Payload { base: PAYLOAD_NETWORK, offset: src, len, dreg }
}
/// `ip daddr` / `ip6 daddr`.
pub fn load_daddr(nfproto: u8, dreg: u32) -> Expr {
    let (_, dst, len) = addr_layout(nfproto);
    Expr::Payload { base: PAYLOAD_NETWORK, offset: dst, len, dreg }
}
pub fn load_ip_saddr(dreg: u32) -> Expr {
    load_saddr(NFPROTO_IPV4, dreg)
}
pub fn load_ip_daddr(dreg: u32) -> Expr {
    load_daddr(NFPROTO_IPV4, dreg)
}
pub fn load_th_dport(dreg: u32) -> Expr {
    Expr::Payload { base: PAYLOAD_TRANSPORT, offset: 2, len: 2, dreg }
}
/// `ct original ip daddr` / `ct original ip6 daddr`: the destination before DNAT.
pub fn load_ct_original_daddr(nfproto: u8, dreg: u32) -> Expr {
    load_ct_original(if nfproto == NFPROTO_IPV6 { CT_DST_IP6 } else { CT_DST_IP }, dreg)
}
/// Address bytes, 4 or 16.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
/// `ip[6] saddr|daddr ADDR/PREFIX` (a full-length prefix needs no mask).
pub fn match_prefix(load: Expr, net: IpAddr, prefix: u8) -> Vec<Expr> {
    let addr = ip_bytes(net);
    let mut v = vec![load];
    if (prefix as usize) < addr.len() * 8 {
        let mask = prefix_mask_bytes(prefix, addr.len());
        v.push(Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask: mask.clone(), xor: vec![0; addr.len()] });
        let net: Vec<u8> = addr.iter().zip(&mask).map(|(a, m)| a & m).collect();
        v.push(cmp(REG_1, CmpOp::Eq, net));
    } else {
        v.push(cmp(REG_1, CmpOp::Eq, addr));
    }
    v
}
/// `ip saddr|daddr ADDR/PREFIX` for IPv4.
pub fn match_ip_prefix(load: Expr, net: Ipv4Addr, prefix: u8) -> Vec<Expr> {
    match_prefix(load, IpAddr::V4(net), prefix)
}
/// `iifname|oifname [!=] NAME`: compared on the whole 16-byte IFNAMSIZ field, so it is exact.
pub fn match_ifname(key: u32, op: CmpOp, name: &str) -> Vec<Expr> {
    vec![load_meta(key, REG_1), cmp(REG_1, op, ifname_bytes(name))]
}
/// `ct state|status` has any of `bits` set.
pub fn match_ct_bits(key: u32, bits: u32) -> Vec<Expr> {
    vec![
        Expr::Ct { key, dreg: REG_1, dir: None },
        Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask: bits.to_ne_bytes().to_vec(), xor: vec![0; 4] },
        cmp(REG_1, CmpOp::Neq, [0u8; 4]),
    ]
}
/// `ct KEY & BITS == 0`: none of `bits` set.
pub fn match_ct_bits_clear(key: u32, bits: u32) -> Vec<Expr> {
    let mut v = match_ct_bits(key, bits);
    v[2] = cmp(REG_1, CmpOp::Eq, [0u8; 4]);
    v
}

/// `ct original KEY`: a field of the connection as first seen (before DNAT).
pub fn load_ct_original(key: u32, dreg: u32) -> Expr {
    Expr::Ct { key, dreg, dir: Some(CT_DIR_ORIGINAL) }
}

/// `ct original ip[6] saddr` / `ct original ip[6] daddr` of family `nfproto`.
pub fn load_ct_original_addr(nfproto: u8, daddr: bool, dreg: u32) -> Expr {
    let key = match (nfproto == NFPROTO_IPV6, daddr) {
        (false, false) => CT_SRC_IP,
        (false, true) => CT_DST_IP,
        (true, false) => CT_SRC_IP6,
        (true, true) => CT_DST_IP6,
    };
    load_ct_original(key, dreg)
}

/// `meta nftrace set 1`: the kernel reports this packet's way through every chain from here on.
pub fn set_nftrace() -> Vec<Expr> {
    vec![Expr::Immediate { dreg: REG_1, data: vec![1] }, Expr::MetaSet { key: META_NFTRACE, sreg: REG_1 }]
}

/// `fib daddr type local`: the packet is addressed to this host (any local address).
pub fn match_daddr_local() -> Vec<Expr> {
    vec![
        Expr::Fib { flags: FIB_F_DADDR, result: FIB_RESULT_ADDRTYPE, dreg: REG_1 },
        cmp(REG_1, CmpOp::Eq, RTN_LOCAL.to_ne_bytes()),
    ]
}

/// `fib daddr type != local`.
pub fn match_daddr_not_local() -> Vec<Expr> {
    let mut v = match_daddr_local();
    v[1] = cmp(REG_1, CmpOp::Neq, RTN_LOCAL.to_ne_bytes());
    v
}

pub fn prefix_mask(prefix: u8) -> [u8; 4] {
    prefix_mask_bytes(prefix, 4).try_into().expect("4 bytes")
}

/// A network mask of `len` bytes with `prefix` leading ones.
pub fn prefix_mask_bytes(prefix: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let ones = (prefix as usize).saturating_sub(i * 8).min(8);
            (0xff00u16 >> ones) as u8
        })
        .collect()
}

pub fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.resize(16, 0);
    b
}

// ---- rendering to nft syntax ----

/// What a register holds, for rendering: the nft words that loaded it and how to print values.
#[derive(Clone, Debug)]
struct Sym {
    text: String,
    kind: Kind,
    /// 32-bit register slots this value spans.
    slots: usize,
    /// A folded `& mask`: a prefix length for addresses, the bits for ct state/status.
    mask: Option<Mask>,
}

#[derive(Clone, Copy, Debug)]
enum Mask {
    Prefix(u8),
    Bits(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Ipv4,
    Ipv6,
    Port,
    Proto,
    NfProto,
    Ifname,
    FibType,
    CtState,
    CtStatus,
    CtDirection,
    Raw,
    /// The result of a map lookup: an address then a port (NAT data).
    MapResult,
    /// Data loaded by an immediate (printed as hex, or as an address/port when NAT uses it).
    Imm,
}

fn slot(reg: u32) -> i64 {
    // 128-bit registers 1..4 start at 32-bit slots 0,4,8,12; 32-bit registers 8..23 are slots 0..15.
    if (1..=4).contains(&reg) {
        (reg as i64 - 1) * 4
    } else {
        reg as i64 - 8
    }
}

/// Renders one rule's expressions in nft syntax. `set_key_len` gives a named set's key length,
/// so a concatenated lookup can list every component (`ip daddr . meta l4proto . th dport`).
pub fn render(exprs: &[Expr], set_key_len: &dyn Fn(&str) -> Option<u32>) -> String {
    let mut regs: BTreeMap<i64, Sym> = Default::default();
    let mut words: Vec<String> = Vec::new();
    let mut pending_counter = false;
    for e in exprs {
        match e {
            Expr::Meta { dreg, .. } | Expr::Payload { dreg, .. } | Expr::Ct { dreg, .. } | Expr::Fib { dreg, .. } => {
                regs.insert(slot(*dreg), load_sym(e));
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                let src = regs.get(&slot(*sreg)).cloned().unwrap_or(raw_sym(*sreg));
                let flag_kind = matches!(src.kind, Kind::CtState | Kind::CtStatus);
                let sym = match (src.kind, prefix_len(mask), xor.iter().all(|b| *b == 0)) {
                    // prefix matches and ct bit tests are folded into the following cmp
                    (Kind::Ipv4 | Kind::Ipv6, Some(p), true) => Sym { mask: Some(Mask::Prefix(p)), ..src },
                    (_, _, true) if flag_kind && mask.len() == 4 => {
                        let bits = u32::from_ne_bytes(mask[..4].try_into().unwrap());
                        Sym { mask: Some(Mask::Bits(bits)), ..src }
                    }
                    _ => Sym {
                        text: format!("{} & {} ^ {}", src.text, hex(mask), hex(xor)),
                        kind: Kind::Raw,
                        slots: src.slots,
                        mask: None,
                    },
                };
                regs.insert(slot(*dreg), sym);
            }
            Expr::Cmp { sreg, op, data } => {
                let src = regs.get(&slot(*sreg)).cloned().unwrap_or(raw_sym(*sreg));
                words.push(render_cmp(&src, *op, data));
            }
            Expr::Lookup { sreg, set, dreg, flags } => {
                let key_len = set_key_len(set).unwrap_or(4);
                let key = concat_at(&regs, slot(*sreg), key_len);
                match dreg {
                    Some(d) => {
                        let text = format!("{key} map @{set}");
                        regs.insert(slot(*d), Sym { text, kind: Kind::MapResult, slots: 2, mask: None });
                    }
                    None => {
                        let neg = if flags & LOOKUP_F_INV != 0 { "!= " } else { "" };
                        words.push(format!("{key} {neg}@{set}"));
                    }
                }
            }
            Expr::Immediate { dreg, data } => {
                let sym = Sym { text: hex(data), kind: Kind::Imm, slots: data.len().div_ceil(4), mask: None };
                regs.insert(slot(*dreg), sym);
            }
            Expr::MetaSet { key, sreg } => {
                let value = regs.get(&slot(*sreg)).map(imm_int).unwrap_or(format!("reg {sreg}"));
                words.push(format!("meta {} set {value}", meta_key_name(*key)));
            }
            Expr::CtSet { key, sreg } => {
                let value = regs.get(&slot(*sreg)).map(imm_int).unwrap_or(format!("reg {sreg}"));
                let name = if *key == CT_MARK { "mark".to_string() } else { format!("key{key}") };
                words.push(format!("ct {name} set {value}"));
            }
            Expr::Nat { kind, family, addr, proto } => words.push(nat_text(&regs, *kind, *family, *addr, *proto)),
            Expr::Masquerade => words.push("masquerade".into()),
            Expr::Counter => pending_counter = true,
            Expr::Verdict(v) => words.push(verdict_text(v)),
            Expr::Xt { target, name, .. } => {
                words.push(format!("xt {} {name}", if *target { "target" } else { "match" }))
            }
            Expr::Other { name } => words.push(format!("# {name}")),
        }
        if pending_counter && !matches!(e, Expr::Counter) {
            // nft prints the counter where it sits; netnat rules put it just before the verdict.
            let last = words.pop();
            words.push("counter".into());
            words.extend(last);
            pending_counter = false;
        }
    }
    if pending_counter {
        words.push("counter".into());
    }
    words.join(" ")
}

/// An immediate value as a number (host byte order, as meta and ct keys take it), else its text.
fn imm_int(s: &Sym) -> String {
    let bytes = s.text.strip_prefix("0x").filter(|h| s.kind == Kind::Imm && h.len() <= 8 && h.len() % 2 == 0);
    let Some(h) = bytes else { return s.text.clone() };
    let mut b = [0u8; 4];
    for i in 0..h.len() / 2 {
        b[i] = u8::from_str_radix(&h[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    u32::from_ne_bytes(b).to_string()
}

fn meta_key_name(key: u32) -> String {
    match key {
        META_MARK => "mark".into(),
        META_NFTRACE => "nftrace".into(),
        k => format!("key{k}"),
    }
}

/// What a load into a register holds (meta, payload, ct and fib expressions).
fn load_sym(e: &Expr) -> Sym {
    match e {
        Expr::Meta { key, .. } => {
            let (text, kind) = match *key {
                META_IIFNAME => ("iifname".into(), Kind::Ifname),
                META_OIFNAME => ("oifname".into(), Kind::Ifname),
                META_NFPROTO => ("meta nfproto".into(), Kind::NfProto),
                META_L4PROTO => ("meta l4proto".into(), Kind::Proto),
                k => (format!("meta key{k}"), Kind::Raw),
            };
            // An interface name is 16 bytes: four 32-bit slots of a concatenation.
            let slots = if kind == Kind::Ifname { 4 } else { 1 };
            Sym { text, kind, slots, mask: None }
        }
        Expr::Payload { base, offset, len, .. } => {
            let (text, kind) = match (*base, *offset, *len) {
                (PAYLOAD_NETWORK, 12, 4) => ("ip saddr".into(), Kind::Ipv4),
                (PAYLOAD_NETWORK, 16, 4) => ("ip daddr".into(), Kind::Ipv4),
                (PAYLOAD_NETWORK, 8, 16) => ("ip6 saddr".into(), Kind::Ipv6),
                (PAYLOAD_NETWORK, 24, 16) => ("ip6 daddr".into(), Kind::Ipv6),
                (PAYLOAD_TRANSPORT, 0, 2) => ("th sport".into(), Kind::Port),
                (PAYLOAD_TRANSPORT, 2, 2) => ("th dport".into(), Kind::Port),
                (b, o, l) => {
                    let base = ["ll", "nh", "th", "ih"].get(b as usize).unwrap_or(&"?");
                    (format!("@{base},{},{}", o * 8, l * 8), Kind::Raw)
                }
            };
            Sym { text, kind, slots: (*len as usize).div_ceil(4), mask: None }
        }
        Expr::Ct { key, dir, .. } => {
            let d = match dir {
                Some(0) => "original ",
                Some(_) => "reply ",
                None => "",
            };
            let (text, kind) = match *key {
                CT_STATE => ("ct state".into(), Kind::CtState),
                CT_DIRECTION => ("ct direction".into(), Kind::CtDirection),
                CT_STATUS => ("ct status".into(), Kind::CtStatus),
                CT_MARK => ("ct mark".into(), Kind::Raw),
                CT_PROTOCOL => (format!("ct {d}protocol"), Kind::Proto),
                CT_PROTO_DST => (format!("ct {d}proto-dst"), Kind::Port),
                CT_SRC_IP => (format!("ct {d}ip saddr"), Kind::Ipv4),
                CT_DST_IP => (format!("ct {d}ip daddr"), Kind::Ipv4),
                CT_SRC_IP6 => (format!("ct {d}ip6 saddr"), Kind::Ipv6),
                CT_DST_IP6 => (format!("ct {d}ip6 daddr"), Kind::Ipv6),
                k => (format!("ct {d}key{k}"), Kind::Raw),
            };
            let slots = if kind == Kind::Ipv6 { 4 } else { 1 };
            Sym { text, kind, slots, mask: None }
        }
        Expr::Fib { flags, result, .. } => {
            let mut parts = vec![];
            for (bit, name) in [(1, "saddr"), (2, "daddr"), (4, "mark"), (8, "iif"), (16, "oif")] {
                if flags & bit != 0 {
                    parts.push(name);
                }
            }
            let res = ["unspec", "oif", "oifname", "type"].get(*result as usize).unwrap_or(&"?");
            let kind = if *result == FIB_RESULT_ADDRTYPE { Kind::FibType } else { Kind::Raw };
            Sym { text: format!("fib {} {res}", parts.join(" . ")), kind, slots: 1, mask: None }
        }
        other => Sym { text: format!("{other:?}"), kind: Kind::Raw, slots: 1, mask: None },
    }
}

/// `dnat ip to ADDR:PORT`, `snat ip6 to ...`, from the registers the NAT expression reads.
fn nat_text(regs: &BTreeMap<i64, Sym>, kind: u32, family: u32, addr: Option<u32>, proto: Option<u32>) -> String {
    let mut regs = regs.clone();
    for (r, is_addr) in [(addr, true), (proto, false)] {
        if let Some(s) = r.and_then(|r| regs.get_mut(&slot(r))) {
            s.text = nat_imm_text(s, is_addr).unwrap_or(std::mem::take(&mut s.text));
        }
    }
    let verb = if kind == NAT_DNAT { "dnat" } else { "snat" };
    let fam = match family as u8 {
        NFPROTO_IPV4 => " ip",
        NFPROTO_IPV6 => " ip6",
        _ => "",
    };
    let target = match (addr, proto) {
        (Some(a), Some(_)) if regs.get(&slot(a)).is_some_and(|s| s.kind == Kind::MapResult) => {
            regs[&slot(a)].text.clone()
        }
        (Some(a), Some(p)) => format!("{}:{}", reg_text(&regs, a), reg_text(&regs, p)),
        (Some(a), None) => reg_text(&regs, a),
        (None, Some(p)) => format!(":{}", reg_text(&regs, p)),
        (None, None) => String::new(),
    };
    format!("{verb}{fam} to {target}").trim_end().to_string()
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Continue => "continue".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Other(c) => format!("verdict {c}"),
    }
}

/// An immediate NAT address or port as nft prints it (`10.9.9.9`, `8080`).
fn nat_imm_text(s: &Sym, is_addr: bool) -> Option<String> {
    let h = s.text.strip_prefix("0x").filter(|_| s.kind == Kind::Imm)?;
    let b: Vec<u8> =
        (0..h.len() / 2).map(|i| u8::from_str_radix(&h[i * 2..i * 2 + 2], 16)).collect::<Result<_, _>>().ok()?;
    match (is_addr, b.len()) {
        (true, 4) => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
        (true, 16) => Some(format!("[{}]", Ipv6Addr::from(<[u8; 16]>::try_from(b.as_slice()).ok()?))),
        (false, 2) => Some(u16::from_be_bytes([b[0], b[1]]).to_string()),
        _ => None,
    }
}

fn raw_sym(reg: u32) -> Sym {
    Sym { text: format!("reg {reg}"), kind: Kind::Raw, slots: 1, mask: None }
}

fn reg_text(regs: &std::collections::BTreeMap<i64, Sym>, reg: u32) -> String {
    regs.get(&slot(reg)).map(|s| s.text.clone()).unwrap_or(format!("reg {reg}"))
}

/// The components of a concatenated key starting at `start`, as `a . b . c`.
fn concat_at(regs: &std::collections::BTreeMap<i64, Sym>, start: i64, key_len: u32) -> String {
    let want = (key_len as i64 + 3) / 4;
    let mut parts = vec![];
    let mut s = start;
    while s < start + want {
        match regs.get(&s) {
            Some(sym) => {
                parts.push(sym.text.clone());
                s += sym.slots.max(1) as i64;
            }
            None => {
                parts.push(format!("slot{s}"));
                s += 1;
            }
        }
    }
    parts.join(" . ")
}

fn render_cmp(src: &Sym, op: CmpOp, data: &[u8]) -> String {
    let value = match src.kind {
        Kind::Ipv4 if data.len() == 4 => Ipv4Addr::new(data[0], data[1], data[2], data[3]).to_string(),
        Kind::Ipv6 if data.len() == 16 => Ipv6Addr::from(<[u8; 16]>::try_from(data).expect("16 bytes")).to_string(),
        Kind::Port if data.len() == 2 => u16::from_be_bytes([data[0], data[1]]).to_string(),
        Kind::Proto if data.len() == 1 => proto_name(data[0]),
        Kind::NfProto if data.len() == 1 => match data[0] {
            2 => "ipv4".into(),
            10 => "ipv6".into(),
            v => v.to_string(),
        },
        Kind::CtDirection if data.len() == 1 => match data[0] {
            CT_DIR_ORIGINAL => "original".into(),
            CT_DIR_REPLY => "reply".into(),
            v => v.to_string(),
        },
        Kind::Ifname => {
            let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
            format!("\"{}\"", String::from_utf8_lossy(&data[..end]))
        }
        Kind::FibType if data.len() == 4 => match u32::from_ne_bytes(data.try_into().unwrap()) {
            1 => "unicast".into(),
            RTN_LOCAL => "local".into(),
            3 => "broadcast".into(),
            5 => "multicast".into(),
            v => v.to_string(),
        },
        _ => hex(data),
    };
    match src.mask {
        // `ct state & MASK != 0` is how nft encodes `ct state a,b`: print it the nft way.
        Some(Mask::Bits(bits)) if op == CmpOp::Neq && data.iter().all(|b| *b == 0) => {
            format!("{} {}", src.text, ct_bits(src.kind, bits))
        }
        // None of the bits set: nft prints `ct status & dnat == 0`.
        Some(Mask::Bits(bits)) if op == CmpOp::Eq && data.iter().all(|b| *b == 0) => {
            format!("{} & {} == 0", src.text, ct_bits(src.kind, bits))
        }
        Some(Mask::Prefix(p)) => format!("{} {}{value}/{p}", src.text, op.symbol()),
        _ => format!("{} {}{value}", src.text, op.symbol()),
    }
}

fn ct_bits(kind: Kind, bits: u32) -> String {
    let names: &[(u32, &str)] = if kind == Kind::CtState {
        &[(1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked")]
    } else {
        &[(1, "expected"), (2, "seen-reply"), (4, "assured"), (8, "confirmed"), (16, "snat"), (32, "dnat")]
    };
    let mut out: Vec<String> = names.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| n.to_string()).collect();
    let known: u32 = names.iter().map(|(b, _)| b).sum();
    if bits & !known != 0 {
        out.push(format!("0x{:x}", bits & !known));
    }
    out.join(",")
}

pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        1 => "icmp".into(),
        v => v.to_string(),
    }
}

/// Contiguous network mask (4 or 16 bytes) → prefix length.
fn prefix_len(mask: &[u8]) -> Option<u8> {
    let m = match mask.len() {
        4 => (u32::from_be_bytes(mask.try_into().ok()?) as u128) << 96,
        16 => u128::from_be_bytes(mask.try_into().ok()?),
        _ => return None,
    };
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// Bytes as nft prints raw data: `0x` and the bytes in memory order.
pub fn hex(data: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(exprs: &[Expr]) -> String {
        render(exprs, &|name| match name {
            "pub_any4" => Some(8),
            "pub_addr4" => Some(12),
            _ => None,
        })
    }

    #[test]
    fn renders_prefix_and_ifname_matches() {
        let mut e = match_ipv4();
        e.extend(match_ip_prefix(load_ip_saddr(REG_1), "172.16.0.0".parse().unwrap(), 16));
        e.extend(match_ifname(META_OIFNAME, CmpOp::Neq, "MyDocker0"));
        e.push(Expr::Masquerade);
        assert_eq!(r(&e), r#"meta nfproto ipv4 ip saddr 172.16.0.0/16 oifname != "MyDocker0" masquerade"#);
    }

    #[test]
    fn renders_concatenated_dnat_map() {
        let mut e = match_ipv4();
        e.push(load_ip_daddr(REG_1));
        e.push(load_meta(META_L4PROTO, REG32_01));
        e.push(load_th_dport(REG32_02));
        e.push(Expr::Lookup { sreg: REG_1, set: "pub_addr4".into(), dreg: Some(REG_1), flags: 0 });
        e.push(Expr::Nat { kind: NAT_DNAT, family: 2, addr: Some(REG_1), proto: Some(REG32_01) });
        assert_eq!(r(&e), "meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @pub_addr4");
    }

    #[test]
    fn renders_fib_ct_and_counter() {
        let mut e = match_daddr_local();
        e.extend(match_ct_bits(CT_STATE, CT_STATE_ESTABLISHED | CT_STATE_RELATED));
        e.extend(match_ct_bits(CT_STATUS, CT_STATUS_DNAT));
        e.push(Expr::Counter);
        e.push(Expr::Verdict(Verdict::Accept));
        assert_eq!(r(&e), "fib daddr type local ct state established,related ct status dnat counter accept");
    }

    #[test]
    fn renders_trace_marks() {
        let mut e = match_daddr_local();
        e.push(load_meta(META_L4PROTO, REG_1));
        e.push(cmp(REG_1, CmpOp::Eq, [6]));
        e.push(load_th_dport(REG_1));
        e.push(cmp(REG_1, CmpOp::Eq, 9090u16.to_be_bytes()));
        e.extend(set_nftrace());
        assert_eq!(r(&e), "fib daddr type local meta l4proto tcp th dport 9090 meta nftrace set 1");
        let mut e = vec![Expr::Ct { key: CT_DIRECTION, dreg: REG_1, dir: None }, cmp(REG_1, CmpOp::Eq, [CT_DIR_REPLY])];
        e.extend(match_prefix(load_ct_original_addr(NFPROTO_IPV4, false, REG_1), "198.51.100.0".parse().unwrap(), 24));
        e.push(load_ct_original(CT_PROTOCOL, REG_1));
        e.push(cmp(REG_1, CmpOp::Eq, [17]));
        e.extend(set_nftrace());
        assert_eq!(
            r(&e),
            "ct direction reply ct original ip saddr 198.51.100.0/24 ct original protocol udp meta nftrace set 1"
        );
    }

    #[test]
    fn renders_loopback_guard() {
        let mut e = match_ipv4();
        e.extend(match_ip_prefix(load_ip_daddr(REG_1), Ipv4Addr::new(127, 0, 0, 0), 8));
        e.extend(match_ifname(META_IIFNAME, CmpOp::Neq, "lo"));
        e.push(Expr::Verdict(Verdict::Drop));
        assert_eq!(r(&e), r#"meta nfproto ipv4 ip daddr 127.0.0.0/8 iifname != "lo" drop"#);
    }

    #[test]
    fn renders_dnat_to_a_fixed_address() {
        let e = vec![
            Expr::Immediate { dreg: REG_1, data: vec![10, 9, 9, 9] },
            Expr::Immediate { dreg: REG32_01, data: 80u16.to_be_bytes().to_vec() },
            Expr::Nat { kind: NAT_DNAT, family: 2, addr: Some(REG_1), proto: Some(REG32_01) },
        ];
        assert_eq!(r(&e), "dnat ip to 10.9.9.9:80");
        assert_eq!(r(&e[..1]), "");
    }

    #[test]
    fn renders_ipv6_dnat_map_and_counting() {
        let mut e = match_nfproto(NFPROTO_IPV6);
        e.push(load_daddr(NFPROTO_IPV6, REG_1));
        e.push(load_meta(META_L4PROTO, reg_at(4)));
        e.push(load_th_dport(reg_at(5)));
        e.push(Expr::Lookup { sreg: REG_1, set: "pub_addr6".into(), dreg: Some(REG_1), flags: 0 });
        e.push(Expr::Nat { kind: NAT_DNAT, family: 10, addr: Some(REG_1), proto: Some(reg_at(4)) });
        let t = render(&e, &|n| (n == "pub_addr6").then_some(24));
        assert_eq!(t, "meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub_addr6");
        let mut g = match_nfproto(NFPROTO_IPV6);
        g.extend(match_prefix(load_saddr(NFPROTO_IPV6, REG_1), "fd00:16::".parse().unwrap(), 64));
        g.push(load_ct_original_daddr(NFPROTO_IPV6, REG_1));
        assert_eq!(render(&g, &|_| None), "meta nfproto ipv6 ip6 saddr fd00:16::/64");
        assert_eq!((reg_at(0), reg_at(1), reg_at(4), reg_at(5)), (REG_1, REG32_01, REG_2, 13));
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len(&prefix_mask_bytes(64, 16)), Some(64));
        assert_eq!(prefix_len(&prefix_mask_bytes(0, 16)), Some(0));
        assert_eq!(prefix_mask_bytes(12, 4), vec![255, 240, 0, 0]);
        assert_eq!(prefix_len(&prefix_mask(16)), Some(16));
        assert_eq!(prefix_len(&prefix_mask(0)), Some(0));
        assert_eq!(prefix_len(&[255, 0, 255, 0]), None);
    }
}
