//! The one place that calls libnftnl (nftnl-sys) directly, for what the safe `nftnl` crate lacks:
//! expressions with chosen registers (concatenated map keys), `fib`, maps with data, set element
//! data and counters, and parsing of dumps. Everything here is wrapped in safe functions that take
//! and return plain Rust values; no raw pointer leaves this module.

use super::expr::{CmpOp, Expr, Verdict};
use super::{LiveChain, LiveElem, LiveRule, LiveSet};
use anyhow::{bail, Result};
use nftnl::{MsgType, NlMsg};
use nftnl_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

// ---- expressions ----

/// Lets a typed `Expr` go into an `nftnl::Rule`.
pub struct Encoded<'a>(pub &'a Expr);

impl nftnl::expr::Expression for Encoded<'_> {
    fn to_expr(&self, _rule: &nftnl::Rule) -> NonNull<sys::nftnl_expr> {
        encode(self.0)
    }
}

struct ExprBuf(NonNull<sys::nftnl_expr>);

impl ExprBuf {
    fn new(name: &CStr) -> ExprBuf {
        let p = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
        ExprBuf(NonNull::new(p).expect("nftnl_expr_alloc: out of memory"))
    }
    fn u32(self, attr: u32, v: u32) -> Self {
        unsafe { sys::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn u8(self, attr: u32, v: u8) -> Self {
        unsafe { sys::nftnl_expr_set_u8(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn data(self, attr: u32, d: &[u8]) -> Self {
        unsafe { sys::nftnl_expr_set(self.0.as_ptr(), attr as u16, d.as_ptr().cast(), d.len() as u32) };
        self
    }
    fn str(self, attr: u32, s: &str) -> Self {
        let c = CString::new(s).expect("names never contain NUL");
        unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, c.as_ptr()) };
        self
    }
}

fn encode(e: &Expr) -> NonNull<sys::nftnl_expr> {
    let b = match e {
        Expr::Meta { key, dreg } => {
            ExprBuf::new(c"meta").u32(sys::NFTNL_EXPR_META_KEY, *key).u32(sys::NFTNL_EXPR_META_DREG, *dreg)
        }
        Expr::Payload { base, offset, len, dreg } => ExprBuf::new(c"payload")
            .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, *base)
            .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset)
            .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, *len)
            .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, *dreg),
        Expr::Cmp { sreg, op, data } => ExprBuf::new(c"cmp")
            .u32(sys::NFTNL_EXPR_CMP_SREG, *sreg)
            .u32(sys::NFTNL_EXPR_CMP_OP, op.raw())
            .data(sys::NFTNL_EXPR_CMP_DATA, data),
        Expr::Bitwise { sreg, dreg, mask, xor } => ExprBuf::new(c"bitwise")
            .u32(sys::NFTNL_EXPR_BITWISE_SREG, *sreg)
            .u32(sys::NFTNL_EXPR_BITWISE_DREG, *dreg)
            .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
            .data(sys::NFTNL_EXPR_BITWISE_MASK, mask)
            .data(sys::NFTNL_EXPR_BITWISE_XOR, xor),
        Expr::Lookup { sreg, set, dreg, flags } => {
            let mut b =
                ExprBuf::new(c"lookup").u32(sys::NFTNL_EXPR_LOOKUP_SREG, *sreg).str(sys::NFTNL_EXPR_LOOKUP_SET, set);
            if let Some(d) = dreg {
                b = b.u32(sys::NFTNL_EXPR_LOOKUP_DREG, *d);
            }
            if *flags != 0 {
                b = b.u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, *flags);
            }
            b
        }
        Expr::Fib { flags, result, dreg } => ExprBuf::new(c"fib")
            .u32(sys::NFTNL_EXPR_FIB_FLAGS, *flags)
            .u32(sys::NFTNL_EXPR_FIB_RESULT, *result)
            .u32(sys::NFTNL_EXPR_FIB_DREG, *dreg),
        Expr::Ct { key, dreg, dir } => {
            let b = ExprBuf::new(c"ct").u32(sys::NFTNL_EXPR_CT_KEY, *key).u32(sys::NFTNL_EXPR_CT_DREG, *dreg);
            match dir {
                Some(d) => b.u8(sys::NFTNL_EXPR_CT_DIR, *d),
                None => b,
            }
        }
        Expr::Nat { kind, family, addr, proto } => {
            let mut b =
                ExprBuf::new(c"nat").u32(sys::NFTNL_EXPR_NAT_TYPE, *kind).u32(sys::NFTNL_EXPR_NAT_FAMILY, *family);
            if let Some(r) = addr {
                b = b.u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, *r);
            }
            if let Some(r) = proto {
                b = b.u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, *r);
            }
            b
        }
        Expr::Masquerade => ExprBuf::new(c"masq"),
        Expr::Counter => ExprBuf::new(c"counter"),
        Expr::Verdict(v) => {
            let b = ExprBuf::new(c"immediate")
                .u32(sys::NFTNL_EXPR_IMM_DREG, 0)
                .u32(sys::NFTNL_EXPR_IMM_VERDICT, v.code() as u32);
            match v {
                Verdict::Jump(c) | Verdict::Goto(c) => b.str(sys::NFTNL_EXPR_IMM_CHAIN, c),
                _ => b,
            }
        }
        Expr::Immediate { dreg, data } => {
            ExprBuf::new(c"immediate").u32(sys::NFTNL_EXPR_IMM_DREG, *dreg).data(sys::NFTNL_EXPR_IMM_DATA, data)
        }
        Expr::Xt { .. } | Expr::Other { .. } => {
            // netnat never writes these; they only come from reading other tables.
            unreachable!("netnat does not encode foreign expressions")
        }
    };
    b.0
}

struct ExprView(*const sys::nftnl_expr);

impl ExprView {
    fn has(&self, attr: u32) -> bool {
        unsafe { sys::nftnl_expr_is_set(self.0, attr as u16) }
    }
    fn u32(&self, attr: u32) -> u32 {
        unsafe { sys::nftnl_expr_get_u32(self.0, attr as u16) }
    }
    fn u8(&self, attr: u32) -> u8 {
        unsafe { sys::nftnl_expr_get_u8(self.0, attr as u16) }
    }
    fn opt_u32(&self, attr: u32) -> Option<u32> {
        self.has(attr).then(|| self.u32(attr))
    }
    fn data(&self, attr: u32) -> Vec<u8> {
        let mut len = 0u32;
        let p = unsafe { sys::nftnl_expr_get(self.0, attr as u16, &mut len) };
        if p.is_null() {
            return vec![];
        }
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec()
    }
    fn str(&self, attr: u32) -> String {
        let p = unsafe { sys::nftnl_expr_get_str(self.0, attr as u16) };
        cstr_lossy(p)
    }
}

fn cstr_lossy(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn decode(p: *const sys::nftnl_expr) -> Expr {
    let v = ExprView(p);
    let name = v.str(sys::NFTNL_EXPR_NAME);
    match name.as_str() {
        "meta" if v.has(sys::NFTNL_EXPR_META_DREG) => {
            Expr::Meta { key: v.u32(sys::NFTNL_EXPR_META_KEY), dreg: v.u32(sys::NFTNL_EXPR_META_DREG) }
        }
        "payload" if v.has(sys::NFTNL_EXPR_PAYLOAD_DREG) => Expr::Payload {
            base: v.u32(sys::NFTNL_EXPR_PAYLOAD_BASE),
            offset: v.u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
            len: v.u32(sys::NFTNL_EXPR_PAYLOAD_LEN),
            dreg: v.u32(sys::NFTNL_EXPR_PAYLOAD_DREG),
        },
        "cmp" => match CmpOp::from_raw(v.u32(sys::NFTNL_EXPR_CMP_OP)) {
            Some(op) => Expr::Cmp { sreg: v.u32(sys::NFTNL_EXPR_CMP_SREG), op, data: v.data(sys::NFTNL_EXPR_CMP_DATA) },
            None => Expr::Other { name },
        },
        // Only the plain mask-and-xor form (NFT_BITWISE_BOOL); shifts are shown by name.
        "bitwise" if v.opt_u32(sys::NFTNL_EXPR_BITWISE_OP).unwrap_or(0) == 0 => Expr::Bitwise {
            sreg: v.u32(sys::NFTNL_EXPR_BITWISE_SREG),
            dreg: v.u32(sys::NFTNL_EXPR_BITWISE_DREG),
            mask: v.data(sys::NFTNL_EXPR_BITWISE_MASK),
            xor: v.data(sys::NFTNL_EXPR_BITWISE_XOR),
        },
        "lookup" => Expr::Lookup {
            sreg: v.u32(sys::NFTNL_EXPR_LOOKUP_SREG),
            set: v.str(sys::NFTNL_EXPR_LOOKUP_SET),
            dreg: v.opt_u32(sys::NFTNL_EXPR_LOOKUP_DREG),
            flags: v.opt_u32(sys::NFTNL_EXPR_LOOKUP_FLAGS).unwrap_or(0),
        },
        "fib" => Expr::Fib {
            flags: v.u32(sys::NFTNL_EXPR_FIB_FLAGS),
            result: v.u32(sys::NFTNL_EXPR_FIB_RESULT),
            dreg: v.u32(sys::NFTNL_EXPR_FIB_DREG),
        },
        "ct" if v.has(sys::NFTNL_EXPR_CT_DREG) => Expr::Ct {
            key: v.u32(sys::NFTNL_EXPR_CT_KEY),
            dreg: v.u32(sys::NFTNL_EXPR_CT_DREG),
            dir: v.has(sys::NFTNL_EXPR_CT_DIR).then(|| v.u8(sys::NFTNL_EXPR_CT_DIR)),
        },
        "nat" => Expr::Nat {
            kind: v.u32(sys::NFTNL_EXPR_NAT_TYPE),
            family: v.u32(sys::NFTNL_EXPR_NAT_FAMILY),
            addr: v.opt_u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN),
            proto: v.opt_u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN),
        },
        "masq" if !v.has(sys::NFTNL_EXPR_MASQ_REG_PROTO_MIN) => Expr::Masquerade,
        "counter" => Expr::Counter,
        "immediate" if v.u32(sys::NFTNL_EXPR_IMM_DREG) == 0 => {
            let chain = v.has(sys::NFTNL_EXPR_IMM_CHAIN).then(|| v.str(sys::NFTNL_EXPR_IMM_CHAIN));
            Expr::Verdict(Verdict::from_code(v.u32(sys::NFTNL_EXPR_IMM_VERDICT) as i32, chain))
        }
        "immediate" => {
            Expr::Immediate { dreg: v.u32(sys::NFTNL_EXPR_IMM_DREG), data: v.data(sys::NFTNL_EXPR_IMM_DATA) }
        }
        "target" => {
            Expr::Xt { target: true, name: v.str(sys::NFTNL_EXPR_TG_NAME), info: v.data(sys::NFTNL_EXPR_TG_INFO) }
        }
        "match" => {
            Expr::Xt { target: false, name: v.str(sys::NFTNL_EXPR_MT_NAME), info: v.data(sys::NFTNL_EXPR_MT_INFO) }
        }
        _ => Expr::Other { name },
    }
}

unsafe extern "C" fn collect_expr(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
    let out = unsafe { &mut *data.cast::<Vec<Expr>>() };
    out.push(decode(e));
    0
}

// ---- sets (maps) and their elements: own messages, since nftnl's Set fixes the key type ----

/// A set or map description, as sent to or read from the kernel.
pub struct SetDesc<'a> {
    pub name: &'a str,
    /// Unique within a transaction.
    pub id: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// For maps: (data type, data length).
    pub data: Option<(u32, u32)>,
    /// Give every element its own counter (`counter` in the set's definition).
    pub counter: bool,
}

struct SetBuf(NonNull<sys::nftnl_set>);

impl SetBuf {
    fn new(table: &CStr, family: u16, name: &str) -> SetBuf {
        let p = NonNull::new(unsafe { sys::nftnl_set_alloc() }).expect("nftnl_set_alloc: out of memory");
        let name = CString::new(name).expect("set names never contain NUL");
        unsafe {
            sys::nftnl_set_set_u32(p.as_ptr(), sys::NFTNL_SET_FAMILY as u16, family as u32);
            sys::nftnl_set_set_str(p.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(p.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
        }
        SetBuf(p)
    }
    fn set_u32(&self, attr: u32, v: u32) {
        unsafe { sys::nftnl_set_set_u32(self.0.as_ptr(), attr as u16, v) };
    }
    fn add_elem(&self, key: &[u8], data: Option<&[u8]>) {
        unsafe {
            let e = sys::nftnl_set_elem_alloc();
            assert!(!e.is_null(), "nftnl_set_elem_alloc: out of memory");
            let k = sys::NFTNL_SET_ELEM_KEY as u16;
            sys::nftnl_set_elem_set(e, k, key.as_ptr().cast(), key.len() as u32);
            if let Some(d) = data {
                let a = sys::NFTNL_SET_ELEM_DATA as u16;
                sys::nftnl_set_elem_set(e, a, d.as_ptr().cast(), d.len() as u32);
            }
            sys::nftnl_set_elem_add(self.0.as_ptr(), e);
        }
    }
}

impl Drop for SetBuf {
    fn drop(&mut self) {
        unsafe { sys::nftnl_set_free(self.0.as_ptr()) };
    }
}

/// NEWSET/DELSET.
pub struct SetMsg(SetBuf);

impl SetMsg {
    pub fn new(table: &CStr, family: u16, d: &SetDesc) -> SetMsg {
        let s = SetBuf::new(table, family, d.name);
        // The kernel requires an id on NEWSET (it lets rules in the same batch refer to the set).
        s.set_u32(sys::NFTNL_SET_ID, d.id);
        let mut flags = 0;
        s.set_u32(sys::NFTNL_SET_KEY_TYPE, d.key_type);
        s.set_u32(sys::NFTNL_SET_KEY_LEN, d.key_len);
        if let Some((t, l)) = d.data {
            flags |= libc::NFT_SET_MAP as u32;
            s.set_u32(sys::NFTNL_SET_DATA_TYPE, t);
            s.set_u32(sys::NFTNL_SET_DATA_LEN, l);
        }
        s.set_u32(sys::NFTNL_SET_FLAGS, flags);
        if d.counter {
            let ctr = encode(&Expr::Counter);
            unsafe { sys::nftnl_set_add_expr(s.0.as_ptr(), ctr.as_ptr()) };
        }
        SetMsg(s)
    }
    pub fn named(table: &CStr, family: u16, name: &str) -> SetMsg {
        SetMsg(SetBuf::new(table, family, name))
    }
}

unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (t, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
        };
        let family = unsafe { sys::nftnl_set_get_u32(self.0 .0.as_ptr(), sys::NFTNL_SET_FAMILY as u16) };
        unsafe {
            let h = sys::nftnl_nlmsg_build_hdr(buf.cast(), t as u16, family as u16, flags as u16, seq);
            sys::nftnl_set_nlmsg_build_payload(h, self.0 .0.as_ptr());
        }
    }
}

/// NEWSETELEM (create-exclusive: re-adding a key fails with EEXIST) / DELSETELEM.
/// A DELSETELEM with no elements flushes the set.
pub struct ElemsMsg(SetBuf);

impl ElemsMsg {
    pub fn new(table: &CStr, family: u16, set: &str, elems: &[(&[u8], Option<&[u8]>)]) -> ElemsMsg {
        let s = SetBuf::new(table, family, set);
        for (k, d) in elems {
            s.add_elem(k, *d);
        }
        ElemsMsg(s)
    }
}

unsafe impl NlMsg for ElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (t, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        let family = unsafe { sys::nftnl_set_get_u32(self.0 .0.as_ptr(), sys::NFTNL_SET_FAMILY as u16) };
        unsafe {
            let h = sys::nftnl_nlmsg_build_hdr(buf.cast(), t as u16, family as u16, flags as u16, seq);
            sys::nftnl_set_elems_nlmsg_build_payload(h, self.0 .0.as_ptr());
        }
    }
}

// ---- dump requests and parsing ----

/// What to dump: the request message type and the reply type it produces.
#[derive(Clone, Copy)]
pub enum DumpKind {
    Chains,
    Rules,
    Sets,
    Elems,
}

impl DumpKind {
    pub fn request_type(self) -> u16 {
        (match self {
            DumpKind::Chains => libc::NFT_MSG_GETCHAIN,
            DumpKind::Rules => libc::NFT_MSG_GETRULE,
            DumpKind::Sets => libc::NFT_MSG_GETSET,
            DumpKind::Elems => libc::NFT_MSG_GETSETELEM,
        }) as u16
    }
}

/// Builds a dump request, optionally limited to one table (and for elements, one set).
pub fn dump_request(kind: DumpKind, seq: u32, table: Option<&CStr>, set: Option<&str>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let flags = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    // Set dumps look the table up by name AND family, so a named table needs its family;
    // without a table every family is dumped.
    let family = if table.is_some() { libc::NFPROTO_INET as u16 } else { libc::NFPROTO_UNSPEC as u16 };
    unsafe {
        let h = sys::nftnl_nlmsg_build_hdr(buf.as_mut_ptr().cast(), kind.request_type(), family, flags, seq);
        match kind {
            DumpKind::Rules => {
                let r = sys::nftnl_rule_alloc();
                if let Some(t) = table {
                    sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, t.as_ptr());
                }
                sys::nftnl_rule_nlmsg_build_payload(h, r);
                sys::nftnl_rule_free(r);
            }
            DumpKind::Chains => {
                let c = sys::nftnl_chain_alloc();
                if let Some(t) = table {
                    sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TABLE as u16, t.as_ptr());
                }
                sys::nftnl_chain_nlmsg_build_payload(h, c);
                sys::nftnl_chain_free(c);
            }
            DumpKind::Sets | DumpKind::Elems => {
                let s = sys::nftnl_set_alloc();
                if let Some(t) = table {
                    sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, t.as_ptr());
                }
                if let Some(name) = set {
                    let n = CString::new(name).expect("set names never contain NUL");
                    sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, n.as_ptr());
                }
                if matches!(kind, DumpKind::Elems) {
                    sys::nftnl_set_elems_nlmsg_build_payload(h, s);
                } else {
                    sys::nftnl_set_nlmsg_build_payload(h, s);
                }
                sys::nftnl_set_free(s);
            }
        }
        buf.truncate((*h).nlmsg_len as usize);
    }
    buf
}

/// Parses one NEWCHAIN message of a dump.
pub fn parse_chain(msg: &[u8]) -> Result<LiveChain> {
    unsafe {
        let c = sys::nftnl_chain_alloc();
        if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), c) < 0 {
            sys::nftnl_chain_free(c);
            bail!("cannot parse a chain from the kernel's dump");
        }
        let get = |a: u32| cstr_lossy(sys::nftnl_chain_get_str(c, a as u16));
        let is_base = sys::nftnl_chain_is_set(c, sys::NFTNL_CHAIN_HOOKNUM as u16);
        let out = LiveChain {
            table: get(sys::NFTNL_CHAIN_TABLE),
            family: sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_FAMILY as u16),
            name: get(sys::NFTNL_CHAIN_NAME),
            base: is_base.then(|| super::BaseChain {
                hook: sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16),
                priority: sys::nftnl_chain_get_s32(c, sys::NFTNL_CHAIN_PRIO as u16),
                kind: get(sys::NFTNL_CHAIN_TYPE),
                policy: sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_POLICY as u16),
            }),
        };
        sys::nftnl_chain_free(c);
        Ok(out)
    }
}

/// Parses one NEWRULE message of a dump: its place, handle, expressions and comment.
pub fn parse_rule(msg: &[u8]) -> Result<LiveRule> {
    unsafe {
        let r = sys::nftnl_rule_alloc();
        if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), r) < 0 {
            sys::nftnl_rule_free(r);
            bail!("cannot parse a rule from the kernel's dump");
        }
        let get = |a: u32| cstr_lossy(sys::nftnl_rule_get_str(r, a as u16));
        let mut exprs: Vec<Expr> = Vec::new();
        sys::nftnl_expr_foreach(r, Some(collect_expr), (&mut exprs as *mut Vec<Expr>).cast());
        let mut len = 0u32;
        let ud = sys::nftnl_rule_get_data(r, sys::NFTNL_RULE_USERDATA as u16, &mut len);
        let comment =
            if ud.is_null() { None } else { udata_comment(std::slice::from_raw_parts(ud.cast::<u8>(), len as usize)) };
        let out = LiveRule {
            table: get(sys::NFTNL_RULE_TABLE),
            family: sys::nftnl_rule_get_u32(r, sys::NFTNL_RULE_FAMILY as u16),
            chain: get(sys::NFTNL_RULE_CHAIN),
            handle: sys::nftnl_rule_get_u64(r, sys::NFTNL_RULE_HANDLE as u16),
            exprs,
            comment,
        };
        sys::nftnl_rule_free(r);
        Ok(out)
    }
}

/// The comment in a rule's user data (TLVs: type byte, length byte, value).
fn udata_comment(mut ud: &[u8]) -> Option<String> {
    while ud.len() >= 2 {
        let (t, l) = (ud[0], ud[1] as usize);
        let v = ud.get(2..2 + l)?;
        if t == sys::NFTNL_UDATA_RULE_COMMENT as u8 {
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
        ud = &ud[2 + l..];
    }
    None
}

pub fn parse_set(msg: &[u8]) -> Result<LiveSet> {
    unsafe {
        let s = sys::nftnl_set_alloc();
        if sys::nftnl_set_nlmsg_parse(msg.as_ptr().cast(), s) < 0 {
            sys::nftnl_set_free(s);
            bail!("cannot parse a set from the kernel's dump");
        }
        let u = |a: u32| sys::nftnl_set_get_u32(s, a as u16);
        let is = |a: u32| sys::nftnl_set_is_set(s, a as u16);
        let out = LiveSet {
            table: cstr_lossy(sys::nftnl_set_get_str(s, sys::NFTNL_SET_TABLE as u16)),
            family: u(sys::NFTNL_SET_FAMILY),
            name: cstr_lossy(sys::nftnl_set_get_str(s, sys::NFTNL_SET_NAME as u16)),
            flags: if is(sys::NFTNL_SET_FLAGS) { u(sys::NFTNL_SET_FLAGS) } else { 0 },
            key_type: u(sys::NFTNL_SET_KEY_TYPE),
            key_len: u(sys::NFTNL_SET_KEY_LEN),
            data: is(sys::NFTNL_SET_DATA_TYPE).then(|| (u(sys::NFTNL_SET_DATA_TYPE), u(sys::NFTNL_SET_DATA_LEN))),
            counter: is(sys::NFTNL_SET_EXPR),
        };
        sys::nftnl_set_free(s);
        Ok(out)
    }
}

unsafe extern "C" fn collect_elem(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
    let out = unsafe { &mut *data.cast::<Vec<LiveElem>>() };
    let get = |attr: u32| -> Vec<u8> {
        let mut len = 0u32;
        let p = unsafe { sys::nftnl_set_elem_get(e, attr as u16, &mut len) };
        if p.is_null() {
            vec![]
        } else {
            unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec()
        }
    };
    let mut counter: Option<(u64, u64)> = None;
    unsafe {
        sys::nftnl_set_elem_expr_foreach(e, Some(collect_counter), (&mut counter as *mut Option<(u64, u64)>).cast())
    };
    out.push(LiveElem {
        key: get(sys::NFTNL_SET_ELEM_KEY),
        data: get(sys::NFTNL_SET_ELEM_DATA),
        packets: counter.map(|c| c.0),
        bytes: counter.map(|c| c.1),
    });
    0
}

unsafe extern "C" fn collect_counter(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
    let out = unsafe { &mut *data.cast::<Option<(u64, u64)>>() };
    let v = ExprView(e);
    if v.str(sys::NFTNL_EXPR_NAME) == "counter" {
        let get = |a: u32| unsafe { sys::nftnl_expr_get_u64(e, a as u16) };
        *out = Some((get(sys::NFTNL_EXPR_CTR_PACKETS), get(sys::NFTNL_EXPR_CTR_BYTES)));
    }
    0
}

/// Parses one NEWSETELEM message of a dump into its elements.
pub fn parse_elems(msg: &[u8], out: &mut Vec<LiveElem>) -> Result<()> {
    unsafe {
        let s = sys::nftnl_set_alloc();
        if sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), s) < 0 {
            sys::nftnl_set_free(s);
            bail!("cannot parse set elements from the kernel's dump");
        }
        sys::nftnl_set_elem_foreach(s, Some(collect_elem), (out as *mut Vec<LiveElem>).cast());
        sys::nftnl_set_free(s);
    }
    Ok(())
}
