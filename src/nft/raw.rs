//! The one place that calls libnftnl (nftnl-sys) directly, for what the safe `nftnl` crate lacks:
//! expressions with chosen registers (concatenated map keys), `fib`, maps with data, set element
//! data and counters, and parsing of dumps. Everything here is wrapped in safe functions that take
//! and return plain Rust values; no raw pointer leaves this module.
//!
//! Ownership: every libnftnl object made here is held by an owning wrapper (`Owned*`) that frees
//! it on drop, so no path (early return, `?`, panic) leaks or double-frees it. An object handed to
//! libnftnl (an expression added to a rule or set, an element added to a set) leaves its wrapper
//! through `into_raw`. Objects that libnftnl owns (a rule's expressions, a set's elements) are
//! read through views (`ExprView<'a>`, `ElemView<'a>`) that cannot outlive their owner, and bytes
//! read from any object borrow that object. An allocation that fails is an error, not an abort.

// Every unsafe block says what it relies on.
#![deny(clippy::undocumented_unsafe_blocks)]

use super::expr::{CmpOp, Expr, Verdict};
use super::{LiveChain, LiveElem, LiveRule, LiveSet};
use anyhow::{anyhow, bail, ensure, Context, Result};
use nftnl::{MsgType, NlMsg};
use nftnl_sys as sys;
use std::cell::Cell;
use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

mod foreign;
pub use foreign::{ForeignRuleMsg, XT_COMMENT_LEN};

/// The largest key or data value of a set element or expression (NFT_DATA_VALUE_MAXLEN).
const DATA_VALUE_MAXLEN: usize = 64;

// ---- owning wrappers ----

/// Defines `$name`, the owner of one libnftnl object made by `$alloc` and freed by `$free`.
macro_rules! owned {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $alloc:ident, $free:ident) => {
        $(#[$doc])*
        struct $name(NonNull<sys::$ty>);

        impl $name {
            /// A new, empty object; an error when libnftnl cannot allocate it.
            fn new() -> Result<Self> {
                // SAFETY: the allocator takes no arguments and returns null or a fresh object
                // nothing else points to; null becomes an error below.
                let p = unsafe { sys::$alloc() };
                NonNull::new(p)
                    .map(Self)
                    .ok_or_else(|| anyhow!(concat!("libnftnl could not allocate memory (", stringify!($alloc), ")")))
            }

            fn ptr(&self) -> *mut sys::$ty {
                self.0.as_ptr()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the pointer came from the allocator and this wrapper is its only owner
                // (`into_raw`, where there is one, forgets the wrapper when libnftnl takes the
                // object over), so it is freed exactly once, here.
                unsafe { sys::$free(self.0.as_ptr()) }
            }
        }
    };
}

owned!(
    /// A chain, to ask for a dump or to parse one into.
    OwnedChain,
    nftnl_chain,
    nftnl_chain_alloc,
    nftnl_chain_free
);
owned!(
    /// A rule, to ask for a dump or to parse one into.
    OwnedRule,
    nftnl_rule,
    nftnl_rule_alloc,
    nftnl_rule_free
);
owned!(
    /// A set: a NEWSET/DELSET or NEWSETELEM/DELSETELEM message's content, or a parsed dump.
    OwnedSet,
    nftnl_set,
    nftnl_set_alloc,
    nftnl_set_free
);
owned!(
    /// A set element, until `OwnedSet::add_elem` hands it to its set.
    OwnedElem,
    nftnl_set_elem,
    nftnl_set_elem_alloc,
    nftnl_set_elem_free
);

/// A libnftnl setter's status as a result: they fail when they cannot copy the value (out of
/// memory, or a value longer than the attribute holds).
fn set_status(rc: c_int, what: &str, attr: u32) -> Result<()> {
    ensure!(rc >= 0, "libnftnl could not set attribute {attr} of {what} (out of memory, or the value is too long)");
    Ok(())
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("the nftables name {s:?} contains a NUL byte"))
}

/// A string attribute as libnftnl returned it (null: unset).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays alive until this returns.
unsafe fn string_at(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: not null, and NUL-terminated and alive by this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The bytes of a data attribute as a libnftnl getter returned them (null: unset).
///
/// # Safety
/// `p` is null or points to `len` readable bytes that stay alive and unchanged for `'a`.
unsafe fn bytes_at<'a>(p: *const c_void, len: u32) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    // Values come from netlink attributes, whose length field is 16 bits wide.
    debug_assert!(len <= u32::from(u16::MAX), "an attribute of {len} bytes");
    // SAFETY: not null, and `len` bytes alive for 'a by this function's contract.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }
}

// ---- expressions ----

/// An expression being built, owned until it is handed to a rule or a set.
struct OwnedExpr(NonNull<sys::nftnl_expr>);

impl OwnedExpr {
    fn new(name: &CStr) -> Result<OwnedExpr> {
        // SAFETY: `name` is a valid C string for the call; the result is null or a fresh expression.
        let p = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
        NonNull::new(p).map(OwnedExpr).ok_or_else(|| {
            anyhow!(
                "libnftnl could not allocate a {} expression (out of memory, or unknown to this libnftnl)",
                name.to_string_lossy()
            )
        })
    }
    fn u32(self, attr: u32, v: u32) -> Self {
        // SAFETY: self.0 is a live expression this wrapper owns; the value is copied.
        unsafe { sys::nftnl_expr_set_u32(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn u8(self, attr: u32, v: u8) -> Self {
        // SAFETY: as in `u32`.
        unsafe { sys::nftnl_expr_set_u8(self.0.as_ptr(), attr as u16, v) };
        self
    }
    fn data(self, attr: u32, d: &[u8]) -> Result<Self> {
        ensure!(d.len() <= DATA_VALUE_MAXLEN, "an nftables value of {} bytes (at most {DATA_VALUE_MAXLEN})", d.len());
        // SAFETY: self.0 is a live expression this wrapper owns; `d` is readable for `d.len()`
        // bytes during the call, and libnftnl copies them.
        let rc = unsafe { sys::nftnl_expr_set(self.0.as_ptr(), attr as u16, d.as_ptr().cast(), d.len() as u32) };
        set_status(rc, "an expression", attr)?;
        Ok(self)
    }
    fn str(self, attr: u32, s: &str) -> Result<Self> {
        let c = c_string(s)?;
        // SAFETY: self.0 is a live expression this wrapper owns; `c` is a C string alive during
        // the call, and libnftnl copies it.
        let rc = unsafe { sys::nftnl_expr_set_str(self.0.as_ptr(), attr as u16, c.as_ptr()) };
        set_status(rc, "an expression", attr)?;
        Ok(self)
    }
    /// Hands the expression to libnftnl (a rule or set), which frees it from then on.
    fn into_raw(self) -> NonNull<sys::nftnl_expr> {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for OwnedExpr {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_expr_alloc and owned by this wrapper alone (`into_raw`
        // forgets it), so freed once, here.
        unsafe { sys::nftnl_expr_free(self.0.as_ptr()) }
    }
}

/// A typed `Expr`, encoded before it is added to an `nftnl::Rule`: the crate's
/// `Expression::to_expr` cannot fail, so the allocation is done (and can fail) beforehand.
struct Encoded(Cell<Option<OwnedExpr>>);

impl nftnl::expr::Expression for Encoded {
    fn to_expr(&self, _rule: &nftnl::Rule) -> NonNull<sys::nftnl_expr> {
        // `add_expr` below is the only user: one `Encoded` per call of `Rule::add_expr`, which
        // calls this once and takes the expression over.
        self.0.take().expect("an encoded expression is added to one rule, once").into_raw()
    }
}

/// Appends `e` to `rule`.
pub fn add_expr(rule: &mut nftnl::Rule, e: &Expr) -> Result<()> {
    let enc = Encoded(Cell::new(Some(encode(e)?)));
    rule.add_expr(&enc);
    Ok(())
}

fn encode(e: &Expr) -> Result<OwnedExpr> {
    let b = match e {
        Expr::Meta { key, dreg } => {
            OwnedExpr::new(c"meta")?.u32(sys::NFTNL_EXPR_META_KEY, *key).u32(sys::NFTNL_EXPR_META_DREG, *dreg)
        }
        Expr::MetaSet { key, sreg } => {
            OwnedExpr::new(c"meta")?.u32(sys::NFTNL_EXPR_META_KEY, *key).u32(sys::NFTNL_EXPR_META_SREG, *sreg)
        }
        Expr::Payload { base, offset, len, dreg } => OwnedExpr::new(c"payload")?
            .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, *base)
            .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset)
            .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, *len)
            .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, *dreg),
        Expr::Cmp { sreg, op, data } => OwnedExpr::new(c"cmp")?
            .u32(sys::NFTNL_EXPR_CMP_SREG, *sreg)
            .u32(sys::NFTNL_EXPR_CMP_OP, op.raw())
            .data(sys::NFTNL_EXPR_CMP_DATA, data)?,
        Expr::Bitwise { sreg, dreg, mask, xor } => OwnedExpr::new(c"bitwise")?
            .u32(sys::NFTNL_EXPR_BITWISE_SREG, *sreg)
            .u32(sys::NFTNL_EXPR_BITWISE_DREG, *dreg)
            .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
            .data(sys::NFTNL_EXPR_BITWISE_MASK, mask)?
            .data(sys::NFTNL_EXPR_BITWISE_XOR, xor)?,
        Expr::Lookup { sreg, set, dreg, flags } => {
            let mut b = OwnedExpr::new(c"lookup")?
                .u32(sys::NFTNL_EXPR_LOOKUP_SREG, *sreg)
                .str(sys::NFTNL_EXPR_LOOKUP_SET, set)?;
            if let Some(d) = dreg {
                b = b.u32(sys::NFTNL_EXPR_LOOKUP_DREG, *d);
            }
            if *flags != 0 {
                b = b.u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, *flags);
            }
            b
        }
        Expr::Fib { flags, result, dreg } => OwnedExpr::new(c"fib")?
            .u32(sys::NFTNL_EXPR_FIB_FLAGS, *flags)
            .u32(sys::NFTNL_EXPR_FIB_RESULT, *result)
            .u32(sys::NFTNL_EXPR_FIB_DREG, *dreg),
        Expr::CtSet { key, sreg } => {
            OwnedExpr::new(c"ct")?.u32(sys::NFTNL_EXPR_CT_KEY, *key).u32(sys::NFTNL_EXPR_CT_SREG, *sreg)
        }
        Expr::Ct { key, dreg, dir } => {
            let b = OwnedExpr::new(c"ct")?.u32(sys::NFTNL_EXPR_CT_KEY, *key).u32(sys::NFTNL_EXPR_CT_DREG, *dreg);
            match dir {
                Some(d) => b.u8(sys::NFTNL_EXPR_CT_DIR, *d),
                None => b,
            }
        }
        Expr::Nat { kind, family, addr, proto } => {
            let mut b =
                OwnedExpr::new(c"nat")?.u32(sys::NFTNL_EXPR_NAT_TYPE, *kind).u32(sys::NFTNL_EXPR_NAT_FAMILY, *family);
            if let Some(r) = addr {
                b = b.u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, *r);
            }
            if let Some(r) = proto {
                b = b.u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, *r);
            }
            b
        }
        Expr::Masquerade => OwnedExpr::new(c"masq")?,
        Expr::Counter => OwnedExpr::new(c"counter")?,
        Expr::Verdict(v) => {
            let b = OwnedExpr::new(c"immediate")?
                .u32(sys::NFTNL_EXPR_IMM_DREG, 0)
                .u32(sys::NFTNL_EXPR_IMM_VERDICT, v.code() as u32);
            match v {
                Verdict::Jump(c) | Verdict::Goto(c) => b.str(sys::NFTNL_EXPR_IMM_CHAIN, c)?,
                _ => b,
            }
        }
        Expr::Immediate { dreg, data } => {
            OwnedExpr::new(c"immediate")?.u32(sys::NFTNL_EXPR_IMM_DREG, *dreg).data(sys::NFTNL_EXPR_IMM_DATA, data)?
        }
        // These only come from reading other tables; netnat never writes them.
        Expr::Xt { name, .. } | Expr::Other { name } => bail!("netnat does not encode foreign expressions ({name})"),
    };
    Ok(b)
}

/// An expression owned by something else (a rule or set element being read), for `'a`.
#[derive(Clone, Copy)]
struct ExprView<'a>(NonNull<sys::nftnl_expr>, PhantomData<&'a sys::nftnl_expr>);

impl<'a> ExprView<'a> {
    /// # Safety
    /// `p` is null or points to an expression that stays alive and unchanged for `'a`.
    unsafe fn new(p: *const sys::nftnl_expr) -> Option<ExprView<'a>> {
        NonNull::new(p.cast_mut()).map(|p| ExprView(p, PhantomData))
    }
    fn ptr(&self) -> *const sys::nftnl_expr {
        self.0.as_ptr()
    }
    fn has(&self, attr: u32) -> bool {
        // SAFETY: the expression is alive for 'a (`new`'s contract); reading does not change it.
        unsafe { sys::nftnl_expr_is_set(self.ptr(), attr as u16) }
    }
    fn u32(&self, attr: u32) -> u32 {
        // SAFETY: as in `has`; an unset or other-sized attribute reads as 0.
        unsafe { sys::nftnl_expr_get_u32(self.ptr(), attr as u16) }
    }
    fn u8(&self, attr: u32) -> u8 {
        // SAFETY: as in `u32`.
        unsafe { sys::nftnl_expr_get_u8(self.ptr(), attr as u16) }
    }
    fn u64(&self, attr: u32) -> u64 {
        // SAFETY: as in `u32`.
        unsafe { sys::nftnl_expr_get_u64(self.ptr(), attr as u16) }
    }
    fn opt_u32(&self, attr: u32) -> Option<u32> {
        self.has(attr).then(|| self.u32(attr))
    }
    fn data(&self, attr: u32) -> &'a [u8] {
        let mut len = 0u32;
        // SAFETY: as in `has`; `len` is a valid place for the length.
        let p = unsafe { sys::nftnl_expr_get(self.ptr(), attr as u16, &mut len) };
        // SAFETY: libnftnl returns null or `len` bytes inside the expression, alive for 'a.
        unsafe { bytes_at(p, len) }
    }
    fn str(&self, attr: u32) -> String {
        // SAFETY: as in `has`; the result is null or a C string inside the expression.
        unsafe { string_at(sys::nftnl_expr_get_str(self.ptr(), attr as u16)) }
    }
}

fn decode(v: ExprView) -> Expr {
    let name = v.str(sys::NFTNL_EXPR_NAME);
    match name.as_str() {
        "meta" if v.has(sys::NFTNL_EXPR_META_DREG) => {
            Expr::Meta { key: v.u32(sys::NFTNL_EXPR_META_KEY), dreg: v.u32(sys::NFTNL_EXPR_META_DREG) }
        }
        "meta" if v.has(sys::NFTNL_EXPR_META_SREG) => {
            Expr::MetaSet { key: v.u32(sys::NFTNL_EXPR_META_KEY), sreg: v.u32(sys::NFTNL_EXPR_META_SREG) }
        }
        "payload" if v.has(sys::NFTNL_EXPR_PAYLOAD_DREG) => Expr::Payload {
            base: v.u32(sys::NFTNL_EXPR_PAYLOAD_BASE),
            offset: v.u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
            len: v.u32(sys::NFTNL_EXPR_PAYLOAD_LEN),
            dreg: v.u32(sys::NFTNL_EXPR_PAYLOAD_DREG),
        },
        "cmp" => match CmpOp::from_raw(v.u32(sys::NFTNL_EXPR_CMP_OP)) {
            Some(op) => {
                Expr::Cmp { sreg: v.u32(sys::NFTNL_EXPR_CMP_SREG), op, data: value(v.data(sys::NFTNL_EXPR_CMP_DATA)) }
            }
            None => Expr::Other { name },
        },
        // Only the plain mask-and-xor form (NFT_BITWISE_BOOL); shifts are shown by name.
        "bitwise" if v.opt_u32(sys::NFTNL_EXPR_BITWISE_OP).unwrap_or(0) == 0 => Expr::Bitwise {
            sreg: v.u32(sys::NFTNL_EXPR_BITWISE_SREG),
            dreg: v.u32(sys::NFTNL_EXPR_BITWISE_DREG),
            mask: value(v.data(sys::NFTNL_EXPR_BITWISE_MASK)),
            xor: value(v.data(sys::NFTNL_EXPR_BITWISE_XOR)),
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
        "ct" if v.has(sys::NFTNL_EXPR_CT_SREG) => {
            Expr::CtSet { key: v.u32(sys::NFTNL_EXPR_CT_KEY), sreg: v.u32(sys::NFTNL_EXPR_CT_SREG) }
        }
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
            Expr::Immediate { dreg: v.u32(sys::NFTNL_EXPR_IMM_DREG), data: value(v.data(sys::NFTNL_EXPR_IMM_DATA)) }
        }
        // xt info blobs are the iptables extension's struct, not an nftables value: any size.
        "target" => Expr::Xt {
            target: true,
            name: v.str(sys::NFTNL_EXPR_TG_NAME),
            info: v.data(sys::NFTNL_EXPR_TG_INFO).to_vec(),
        },
        "match" => Expr::Xt {
            target: false,
            name: v.str(sys::NFTNL_EXPR_MT_NAME),
            info: v.data(sys::NFTNL_EXPR_MT_INFO).to_vec(),
        },
        _ => Expr::Other { name },
    }
}

/// An nftables value (register data, set key or data) read from the kernel.
fn value(b: &[u8]) -> Vec<u8> {
    debug_assert!(b.len() <= DATA_VALUE_MAXLEN, "an nftables value of {} bytes from the kernel", b.len());
    b.to_vec()
}

/// nftnl_expr_foreach callback: decodes each expression of a rule into the `Vec<Expr>` at `data`.
unsafe extern "C" fn collect_expr(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `&mut Vec<Expr>` that `OwnedRule::exprs` passed to
    // nftnl_expr_foreach, exclusively borrowed for that call, which calls back on this thread.
    let out = unsafe { &mut *data.cast::<Vec<Expr>>() };
    // SAFETY: libnftnl passes an expression of the rule being walked, alive during this callback.
    if let Some(v) = unsafe { ExprView::new(e) } {
        out.push(decode(v));
    }
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
    /// For a set of ranges over a concatenation (`flags interval`): each key field's byte length.
    pub concat: Option<Vec<u8>>,
}

/// Element bytes (keys, data and their attribute headers) in one NEWSETELEM/DELSETELEM: the
/// element list is one netlink attribute, whose length field is 16 bits wide, and the batch
/// leaves room for one message of about 64 KiB.
const MAX_ELEMS_BYTES: usize = 60 * 1024;

impl OwnedSet {
    /// A set naming its table, family and name: what every set message starts from.
    fn named(table: &CStr, family: u16, name: &str) -> Result<OwnedSet> {
        let s = OwnedSet::new()?;
        s.set_u32(sys::NFTNL_SET_FAMILY, family as u32);
        s.set_str(sys::NFTNL_SET_TABLE, table)?;
        s.set_str(sys::NFTNL_SET_NAME, &c_string(name)?)?;
        Ok(s)
    }
    fn set_u32(&self, attr: u32, v: u32) {
        // SAFETY: self.0 is a live set this wrapper owns; the value is copied.
        unsafe { sys::nftnl_set_set_u32(self.ptr(), attr as u16, v) };
    }
    fn set_str(&self, attr: u32, v: &CStr) -> Result<()> {
        // SAFETY: self.0 is a live set this wrapper owns; `v` is a C string alive during the
        // call, and libnftnl copies it.
        let rc = unsafe { sys::nftnl_set_set_str(self.ptr(), attr as u16, v.as_ptr()) };
        set_status(rc, "a set", attr)
    }
    fn add_elem(&self, key: &[u8], data: ElemData) -> Result<()> {
        let e = OwnedElem::new()?;
        e.set(sys::NFTNL_SET_ELEM_KEY, key)?;
        match data {
            ElemData::None => {}
            ElemData::Data(d) => e.set(sys::NFTNL_SET_ELEM_DATA, d)?,
            ElemData::KeyEnd(k) => e.set(sys::NFTNL_SET_ELEM_KEY_END, k)?,
        }
        // SAFETY: both are live; the set takes the element over (and frees it with itself),
        // which `into_raw` records by forgetting the wrapper.
        unsafe { sys::nftnl_set_elem_add(self.ptr(), e.into_raw().as_ptr()) };
        Ok(())
    }
    fn add_expr(&self, e: OwnedExpr) {
        // SAFETY: both are live; the set takes the expression over (`into_raw`).
        unsafe { sys::nftnl_set_add_expr(self.ptr(), e.into_raw().as_ptr()) };
    }
    fn is_set(&self, attr: u32) -> bool {
        // SAFETY: self.0 is a live set; reading does not change it.
        unsafe { sys::nftnl_set_is_set(self.ptr(), attr as u16) }
    }
    fn u32(&self, attr: u32) -> u32 {
        // SAFETY: as in `is_set`; an unset attribute reads as 0.
        unsafe { sys::nftnl_set_get_u32(self.ptr(), attr as u16) }
    }
    fn str(&self, attr: u32) -> String {
        // SAFETY: as in `is_set`; the result is null or a C string inside the set.
        unsafe { string_at(sys::nftnl_set_get_str(self.ptr(), attr as u16)) }
    }
    /// Builds this set's message into a batch buffer, as NEWSET/DELSET (`elems` false) or
    /// NEWSETELEM/DELSETELEM (`elems` true).
    ///
    /// # Safety
    /// `buf` has room for one message of this set (nftnl's batch leaves nft_nlmsg_maxsize()).
    unsafe fn write(&self, buf: *mut c_void, seq: u32, t: i32, flags: i32, elems: bool) {
        let family = self.u32(sys::NFTNL_SET_FAMILY);
        // SAFETY: `buf` has room by this function's contract; the set is live.
        unsafe {
            let h = sys::nftnl_nlmsg_build_hdr(buf.cast(), t as u16, family as u16, flags as u16, seq);
            if elems {
                sys::nftnl_set_elems_nlmsg_build_payload(h, self.ptr());
            } else {
                sys::nftnl_set_nlmsg_build_payload(h, self.ptr());
            }
        }
    }
}

impl OwnedElem {
    fn set(&self, attr: u32, v: &[u8]) -> Result<()> {
        ensure!(v.len() <= DATA_VALUE_MAXLEN, "a set element value of {} bytes (at most {DATA_VALUE_MAXLEN})", v.len());
        // SAFETY: self.0 is a live element this wrapper owns; `v` is readable for its length
        // during the call, and libnftnl copies it.
        let rc = unsafe { sys::nftnl_set_elem_set(self.ptr(), attr as u16, v.as_ptr().cast(), v.len() as u32) };
        set_status(rc, "a set element", attr)
    }
    /// Hands the element to a set, which frees it from then on.
    fn into_raw(self) -> NonNull<sys::nftnl_set_elem> {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

/// NEWSET/DELSET.
pub struct SetMsg(OwnedSet);

impl SetMsg {
    pub fn new(table: &CStr, family: u16, d: &SetDesc) -> Result<SetMsg> {
        let s = OwnedSet::named(table, family, d.name)?;
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
        if let Some(lens) = &d.concat {
            // A concatenation of ranges (the kernel's pipapo set): interval + concat flags and
            // the byte length of each field, zero-terminated as libnftnl counts them.
            flags |= (libc::NFT_SET_INTERVAL | NFT_SET_CONCAT) as u32;
            let mut fields = [0u8; 16];
            ensure!(lens.len() < fields.len(), "set {}: {} key fields, at most 15", d.name, lens.len());
            fields[..lens.len()].copy_from_slice(lens);
            // SAFETY: the set is live; libnftnl copies `fields` (16 bytes, its field_len array's
            // size) before returning.
            let rc = unsafe {
                sys::nftnl_set_set_data(s.ptr(), sys::NFTNL_SET_DESC_CONCAT as u16, fields.as_ptr().cast(), 16)
            };
            set_status(rc, "a set", sys::NFTNL_SET_DESC_CONCAT)?;
        }
        s.set_u32(sys::NFTNL_SET_FLAGS, flags);
        if d.counter {
            s.add_expr(encode(&Expr::Counter)?);
        }
        Ok(SetMsg(s))
    }
    pub fn named(table: &CStr, family: u16, name: &str) -> Result<SetMsg> {
        Ok(SetMsg(OwnedSet::named(table, family, name)?))
    }
}

// SAFETY: `write` builds exactly one message of a live set into the batch buffer it is given.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (t, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
        };
        // SAFETY: nftnl's batch hands a buffer with room for one message (NlMsg's contract); a
        // set message without elements is far smaller.
        unsafe { self.0.write(buf, seq, t, flags, false) }
    }
}

/// NFT_SET_CONCAT (linux/netfilter/nf_tables.h, 5.6+), not in the libc crate.
const NFT_SET_CONCAT: i32 = 0x80;

/// What an element carries besides its key.
#[derive(Clone, Copy)]
pub enum ElemData<'a> {
    None,
    /// A map's value.
    Data(&'a [u8]),
    /// The end of an interval set element's range.
    KeyEnd(&'a [u8]),
}

/// NEWSETELEM (create-exclusive: re-adding a key fails with EEXIST) / DELSETELEM.
/// A DELSETELEM with no elements flushes the set.
pub struct ElemsMsg(OwnedSet);

impl ElemsMsg {
    /// An error when the elements would not fit in one message (callers send at most
    /// `ELEMS_PER_MSG` small elements per message).
    pub fn new(table: &CStr, family: u16, set: &str, elems: &[(&[u8], ElemData)]) -> Result<ElemsMsg> {
        // Per element: list, key and data nests and value attributes (4-byte headers), values padded to 4.
        let pad = |n: usize| n.div_ceil(4) * 4;
        let extra = |d: &ElemData| match d {
            ElemData::None => 0,
            ElemData::Data(v) | ElemData::KeyEnd(v) => pad(v.len()),
        };
        let bytes: usize = elems.iter().map(|(k, d)| 20 + pad(k.len()) + extra(d)).sum();
        ensure!(
            bytes <= MAX_ELEMS_BYTES,
            "{} elements of set {set} take {bytes} bytes, more than one nftables message holds ({MAX_ELEMS_BYTES})",
            elems.len()
        );
        let s = OwnedSet::named(table, family, set)?;
        for (k, d) in elems {
            s.add_elem(k, *d)?;
        }
        Ok(ElemsMsg(s))
    }
}

// SAFETY: `write` builds exactly one message of a live set into the batch buffer it is given.
unsafe impl NlMsg for ElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (t, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: nftnl's batch hands a buffer with room for one message of nft_nlmsg_maxsize()
        // (NlMsg's contract), and `ElemsMsg::new` refused elements beyond MAX_ELEMS_BYTES.
        unsafe { self.0.write(buf, seq, t, flags, true) }
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

impl OwnedRule {
    fn set_str(&self, attr: u32, v: &CStr) -> Result<()> {
        // SAFETY: self.0 is a live rule this wrapper owns; `v` is a C string alive during the
        // call, and libnftnl copies it.
        let rc = unsafe { sys::nftnl_rule_set_str(self.ptr(), attr as u16, v.as_ptr()) };
        set_status(rc, "a rule", attr)
    }
    fn str(&self, attr: u32) -> String {
        // SAFETY: self.0 is a live rule; the result is null or a C string inside it.
        unsafe { string_at(sys::nftnl_rule_get_str(self.ptr(), attr as u16)) }
    }
    fn u32(&self, attr: u32) -> u32 {
        // SAFETY: self.0 is a live rule; an unset attribute reads as 0.
        unsafe { sys::nftnl_rule_get_u32(self.ptr(), attr as u16) }
    }
    fn u64(&self, attr: u32) -> u64 {
        // SAFETY: as in `u32`.
        unsafe { sys::nftnl_rule_get_u64(self.ptr(), attr as u16) }
    }
    /// A data attribute's bytes, borrowed from the rule.
    fn data(&self, attr: u32) -> &[u8] {
        let mut len = 0u32;
        // SAFETY: self.0 is a live rule; `len` is a valid place for the length.
        let p = unsafe { sys::nftnl_rule_get_data(self.ptr(), attr as u16, &mut len) };
        // SAFETY: null or `len` bytes inside the rule, which `&self` keeps alive and unchanged.
        unsafe { bytes_at(p, len) }
    }
    fn exprs(&self) -> Vec<Expr> {
        let mut out: Vec<Expr> = Vec::new();
        // SAFETY: the rule is live and not changed by the walk; `collect_expr` gets `out`, a
        // `Vec<Expr>` exclusively borrowed for the call.
        unsafe { sys::nftnl_expr_foreach(self.ptr(), Some(collect_expr), (&mut out as *mut Vec<Expr>).cast()) };
        out
    }
}

impl OwnedChain {
    fn set_str(&self, attr: u32, v: &CStr) -> Result<()> {
        // SAFETY: self.0 is a live chain this wrapper owns; `v` is a C string alive during the
        // call, and libnftnl copies it.
        let rc = unsafe { sys::nftnl_chain_set_str(self.ptr(), attr as u16, v.as_ptr()) };
        set_status(rc, "a chain", attr)
    }
    fn is_set(&self, attr: u32) -> bool {
        // SAFETY: self.0 is a live chain; reading does not change it.
        unsafe { sys::nftnl_chain_is_set(self.ptr(), attr as u16) }
    }
    fn str(&self, attr: u32) -> String {
        // SAFETY: as in `is_set`; the result is null or a C string inside the chain.
        unsafe { string_at(sys::nftnl_chain_get_str(self.ptr(), attr as u16)) }
    }
    fn u32(&self, attr: u32) -> u32 {
        // SAFETY: as in `is_set`; an unset attribute reads as 0.
        unsafe { sys::nftnl_chain_get_u32(self.ptr(), attr as u16) }
    }
    fn s32(&self, attr: u32) -> i32 {
        // SAFETY: as in `u32`.
        unsafe { sys::nftnl_chain_get_s32(self.ptr(), attr as u16) }
    }
}

/// Builds a dump request, optionally limited to one table (and for elements, one set).
pub fn dump_request(kind: DumpKind, seq: u32, table: Option<&CStr>, set: Option<&str>) -> Result<Vec<u8>> {
    let set = set.map(c_string).transpose()?;
    // Header (16), nfgenmsg (4), and at most two name attributes (4 + name + NUL, padded).
    let names = table.map_or(0, |t| t.to_bytes().len()) + set.as_ref().map_or(0, |s| s.as_bytes().len());
    let mut buf = vec![0u32; (128 + names).div_ceil(4)]; // u32s: the header is 4-byte aligned
    let flags = (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16;
    // Set dumps look the table up by name AND family, so a named table needs its family;
    // without a table every family is dumped.
    let family = if table.is_some() { libc::NFPROTO_INET as u16 } else { libc::NFPROTO_UNSPEC as u16 };
    // SAFETY: `buf` is 4-byte aligned and has room for the header and payload (sized above).
    let h = unsafe { sys::nftnl_nlmsg_build_hdr(buf.as_mut_ptr().cast(), kind.request_type(), family, flags, seq) };
    match kind {
        DumpKind::Rules => {
            let r = OwnedRule::new()?;
            if let Some(t) = table {
                r.set_str(sys::NFTNL_RULE_TABLE, t)?;
            }
            // SAFETY: `h` is the header just built in `buf`, which has room for the payload.
            unsafe { sys::nftnl_rule_nlmsg_build_payload(h, r.ptr()) };
        }
        DumpKind::Chains => {
            let c = OwnedChain::new()?;
            if let Some(t) = table {
                c.set_str(sys::NFTNL_CHAIN_TABLE, t)?;
            }
            // SAFETY: as for rules.
            unsafe { sys::nftnl_chain_nlmsg_build_payload(h, c.ptr()) };
        }
        DumpKind::Sets | DumpKind::Elems => {
            let s = OwnedSet::new()?;
            if let Some(t) = table {
                s.set_str(sys::NFTNL_SET_TABLE, t)?;
            }
            if let Some(n) = &set {
                s.set_str(sys::NFTNL_SET_NAME, n)?;
            }
            // SAFETY: as for rules.
            unsafe {
                if matches!(kind, DumpKind::Elems) {
                    sys::nftnl_set_elems_nlmsg_build_payload(h, s.ptr());
                } else {
                    sys::nftnl_set_nlmsg_build_payload(h, s.ptr());
                }
            }
        }
    }
    // SAFETY: `h` points into `buf`, alive and not otherwise borrowed here.
    let len = unsafe { (*h).nlmsg_len } as usize;
    debug_assert!(len <= buf.len() * 4, "a dump request of {len} bytes overran its {}-byte buffer", buf.len() * 4);
    Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect())
}

/// `msg` as the netlink message libnftnl's parsers take. They trust the header's length, so it
/// must be one whole message: checked, since the bytes come from the kernel.
fn message(msg: &[u8]) -> Result<*const libc::nlmsghdr> {
    let hdr = std::mem::size_of::<libc::nlmsghdr>();
    ensure!(msg.len() >= hdr, "a netlink message of {} bytes, shorter than its header", msg.len());
    let len = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes")) as usize;
    ensure!((hdr..=msg.len()).contains(&len), "a netlink message that says it has {len} bytes in {}", msg.len());
    // Netlink messages start 4-byte aligned in a receive buffer (NLMSG_ALIGN).
    debug_assert_eq!(msg.as_ptr() as usize % std::mem::align_of::<libc::nlmsghdr>(), 0);
    Ok(msg.as_ptr().cast())
}

/// Parses one NEWCHAIN message of a dump.
pub fn parse_chain(msg: &[u8]) -> Result<LiveChain> {
    let nlh = message(msg)?;
    let c = OwnedChain::new()?;
    // SAFETY: `nlh` is one whole message inside `msg` (checked by `message`), alive for the
    // call; the chain is live and libnftnl copies what it keeps.
    if unsafe { sys::nftnl_chain_nlmsg_parse(nlh, c.ptr()) } < 0 {
        bail!("cannot parse a chain from the kernel's dump");
    }
    let is_base = c.is_set(sys::NFTNL_CHAIN_HOOKNUM);
    Ok(LiveChain {
        table: c.str(sys::NFTNL_CHAIN_TABLE),
        family: c.u32(sys::NFTNL_CHAIN_FAMILY),
        name: c.str(sys::NFTNL_CHAIN_NAME),
        base: is_base.then(|| super::BaseChain {
            hook: c.u32(sys::NFTNL_CHAIN_HOOKNUM),
            priority: c.s32(sys::NFTNL_CHAIN_PRIO),
            kind: c.str(sys::NFTNL_CHAIN_TYPE),
            policy: c.u32(sys::NFTNL_CHAIN_POLICY),
        }),
    })
}

/// Parses one NEWRULE message of a dump: its place, handle, expressions and comment.
pub fn parse_rule(msg: &[u8]) -> Result<LiveRule> {
    let nlh = message(msg)?;
    let r = OwnedRule::new()?;
    // SAFETY: as in `parse_chain`.
    if unsafe { sys::nftnl_rule_nlmsg_parse(nlh, r.ptr()) } < 0 {
        bail!("cannot parse a rule from the kernel's dump");
    }
    Ok(LiveRule {
        table: r.str(sys::NFTNL_RULE_TABLE),
        family: r.u32(sys::NFTNL_RULE_FAMILY),
        chain: r.str(sys::NFTNL_RULE_CHAIN),
        handle: r.u64(sys::NFTNL_RULE_HANDLE),
        exprs: r.exprs(),
        comment: udata_comment(r.data(sys::NFTNL_RULE_USERDATA)),
    })
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
    let nlh = message(msg)?;
    let s = OwnedSet::new()?;
    // SAFETY: as in `parse_chain`.
    if unsafe { sys::nftnl_set_nlmsg_parse(nlh, s.ptr()) } < 0 {
        bail!("cannot parse a set from the kernel's dump");
    }
    let u = |a: u32| s.u32(a);
    Ok(LiveSet {
        table: s.str(sys::NFTNL_SET_TABLE),
        family: u(sys::NFTNL_SET_FAMILY),
        name: s.str(sys::NFTNL_SET_NAME),
        flags: if s.is_set(sys::NFTNL_SET_FLAGS) { u(sys::NFTNL_SET_FLAGS) } else { 0 },
        key_type: u(sys::NFTNL_SET_KEY_TYPE),
        key_len: u(sys::NFTNL_SET_KEY_LEN),
        data: s.is_set(sys::NFTNL_SET_DATA_TYPE).then(|| (u(sys::NFTNL_SET_DATA_TYPE), u(sys::NFTNL_SET_DATA_LEN))),
        counter: s.is_set(sys::NFTNL_SET_EXPR),
    })
}

/// A set element owned by a set being read, for `'a`.
struct ElemView<'a>(NonNull<sys::nftnl_set_elem>, PhantomData<&'a sys::nftnl_set_elem>);

impl<'a> ElemView<'a> {
    /// # Safety
    /// `p` is null or points to an element that stays alive and unchanged for `'a`.
    unsafe fn new(p: *mut sys::nftnl_set_elem) -> Option<ElemView<'a>> {
        NonNull::new(p).map(|p| ElemView(p, PhantomData))
    }
    /// A key or data value, borrowed from the element.
    fn value(&self, attr: u32) -> &'a [u8] {
        let mut len = 0u32;
        // SAFETY: the element is alive for 'a (`new`'s contract); libnftnl's getter takes a
        // mutable pointer but only reads; `len` is a valid place for the length.
        let p = unsafe { sys::nftnl_set_elem_get(self.0.as_ptr(), attr as u16, &mut len) };
        debug_assert!(len as usize <= DATA_VALUE_MAXLEN, "a set element value of {len} bytes from the kernel");
        // SAFETY: null or `len` bytes inside the element, alive for 'a.
        unsafe { bytes_at(p, len) }
    }
    /// (packets, bytes) of the element's counter, if it has one.
    fn counter(&self) -> Option<(u64, u64)> {
        let mut counter: Option<(u64, u64)> = None;
        // SAFETY: the element is alive and not changed by the walk; `collect_counter` gets
        // `counter`, exclusively borrowed for the call.
        unsafe {
            let out = (&mut counter as *mut Option<(u64, u64)>).cast();
            sys::nftnl_set_elem_expr_foreach(self.0.as_ptr(), Some(collect_counter), out)
        };
        counter
    }
}

/// nftnl_set_elem_foreach callback: each element of a set into the `Vec<LiveElem>` at `data`.
unsafe extern "C" fn collect_elem(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `&mut Vec<LiveElem>` that `parse_elems` passed to
    // nftnl_set_elem_foreach, exclusively borrowed for that call, which calls back on this thread.
    let out = unsafe { &mut *data.cast::<Vec<LiveElem>>() };
    // SAFETY: libnftnl passes an element of the set being walked, alive during this callback.
    let Some(v) = (unsafe { ElemView::new(e) }) else { return 0 };
    let counter = v.counter();
    // An interval set's element has a key end and no data: netnat keeps the end as its data.
    let data = match v.value(sys::NFTNL_SET_ELEM_DATA) {
        [] => v.value(sys::NFTNL_SET_ELEM_KEY_END),
        d => d,
    };
    out.push(LiveElem {
        key: v.value(sys::NFTNL_SET_ELEM_KEY).to_vec(),
        data: data.to_vec(),
        packets: counter.map(|c| c.0),
        bytes: counter.map(|c| c.1),
    });
    0
}

/// nftnl_set_elem_expr_foreach callback: the element's counter into the `Option<(u64, u64)>` at `data`.
unsafe extern "C" fn collect_counter(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `&mut Option<(u64, u64)>` that `ElemView::counter` passed,
    // exclusively borrowed for that call.
    let out = unsafe { &mut *data.cast::<Option<(u64, u64)>>() };
    // SAFETY: libnftnl passes an expression of the element being walked, alive during this callback.
    if let Some(v) = unsafe { ExprView::new(e) } {
        if v.str(sys::NFTNL_EXPR_NAME) == "counter" {
            *out = Some((v.u64(sys::NFTNL_EXPR_CTR_PACKETS), v.u64(sys::NFTNL_EXPR_CTR_BYTES)));
        }
    }
    0
}

/// Parses one NEWSETELEM message of a dump into its elements.
pub fn parse_elems(msg: &[u8], out: &mut Vec<LiveElem>) -> Result<()> {
    let nlh = message(msg)?;
    let s = OwnedSet::new()?;
    // SAFETY: as in `parse_chain`.
    if unsafe { sys::nftnl_set_elems_nlmsg_parse(nlh, s.ptr()) } < 0 {
        bail!("cannot parse set elements from the kernel's dump");
    }
    // SAFETY: the set is live and not changed by the walk; `collect_elem` gets `out`, a
    // `Vec<LiveElem>` exclusively borrowed for the call.
    unsafe { sys::nftnl_set_elem_foreach(s.ptr(), Some(collect_elem), (out as *mut Vec<LiveElem>).cast()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::expr::*;
    use super::*;

    /// One netlink message of `len` bytes written at the start of `buf`, as bytes.
    fn bytes_of(buf: &[u32]) -> Vec<u8> {
        let len = buf[0] as usize; // nlmsg_len
        buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect()
    }

    /// A NEWRULE message as the kernel would dump it: table, chain, handle, `exprs`, `comment`.
    fn rule_message(exprs: &[Expr], comment: &str) -> Vec<u8> {
        let r = OwnedRule::new().unwrap();
        r.set_str(sys::NFTNL_RULE_TABLE, c"netnat").unwrap();
        r.set_str(sys::NFTNL_RULE_CHAIN, c"prerouting").unwrap();
        // SAFETY: the rule is live and owned here; the values are copied.
        unsafe {
            sys::nftnl_rule_set_u32(r.ptr(), sys::NFTNL_RULE_FAMILY as u16, libc::NFPROTO_INET as u32);
            sys::nftnl_rule_set_u64(r.ptr(), sys::NFTNL_RULE_HANDLE as u16, 42);
        }
        for e in exprs {
            let e = encode(e).unwrap();
            // SAFETY: both are live; the rule takes the expression over (`into_raw`).
            unsafe { sys::nftnl_rule_add_expr(r.ptr(), e.into_raw().as_ptr()) };
        }
        let mut ud = vec![sys::NFTNL_UDATA_RULE_COMMENT as u8, comment.len() as u8 + 1];
        ud.extend(comment.as_bytes());
        ud.push(0);
        let mut buf = vec![0u32; 1024];
        // SAFETY: the rule is live; `ud` is readable for its length and copied; `buf` is 4-byte
        // aligned and far larger than this message.
        unsafe {
            let rc =
                sys::nftnl_rule_set_data(r.ptr(), sys::NFTNL_RULE_USERDATA as u16, ud.as_ptr().cast(), ud.len() as u32);
            assert!(rc >= 0);
            let t = libc::NFT_MSG_NEWRULE as u16;
            let h = sys::nftnl_nlmsg_build_hdr(buf.as_mut_ptr().cast(), t, libc::NFPROTO_INET as u16, 0, 1);
            sys::nftnl_rule_nlmsg_build_payload(h, r.ptr());
        }
        bytes_of(&buf)
    }

    /// The message `msg` writes into a batch, as bytes.
    fn written(msg: &impl NlMsg, t: MsgType) -> Vec<u8> {
        let mut buf = vec![0u32; 80 * 1024 / 4];
        // SAFETY: `buf` has room for one message of nft_nlmsg_maxsize() (about 64 KiB), as a batch does.
        unsafe { msg.write(buf.as_mut_ptr().cast(), 1, t) };
        bytes_of(&buf)
    }

    #[test]
    fn every_expression_netnat_writes_reads_back_the_same() {
        let mut exprs = match_nfproto(NFPROTO_IPV6);
        exprs.extend(match_prefix(load_saddr(NFPROTO_IPV6, REG_1), "fd00:16::".parse().unwrap(), 64));
        exprs.extend(match_ifname(META_OIFNAME, CmpOp::Neq, "MyDocker0"));
        exprs.extend(match_ct_bits(CT_STATUS, CT_STATUS_DNAT));
        exprs.extend(match_daddr_local());
        exprs.push(load_ct_original_daddr(NFPROTO_IPV4, REG_1));
        exprs.push(load_th_dport(REG32_01));
        exprs.push(Expr::Lookup { sreg: REG_1, set: "pub_addr4".into(), dreg: Some(REG_1), flags: 0 });
        exprs.push(Expr::Lookup { sreg: REG_1, set: "routed6".into(), dreg: None, flags: LOOKUP_F_INV });
        exprs.push(Expr::Immediate { dreg: REG32_02, data: 8080u16.to_be_bytes().to_vec() });
        exprs.push(Expr::Nat { kind: NAT_DNAT, family: 10, addr: Some(REG_1), proto: Some(REG32_01) });
        exprs.push(Expr::Masquerade);
        exprs.push(load_ct_original_addr(NFPROTO_IPV6, false, REG_1));
        exprs.push(Expr::Ct { key: CT_DIRECTION, dreg: REG_1, dir: None });
        exprs.push(Expr::CtSet { key: CT_MARK, sreg: REG32_01 });
        exprs.extend(set_nftrace());
        exprs.push(Expr::Counter);
        exprs.push(Expr::Verdict(Verdict::Jump("guard".into())));
        exprs.push(Expr::Verdict(Verdict::Accept));
        let live = parse_rule(&rule_message(&exprs, "netnat: dnat")).unwrap();
        assert_eq!(live.exprs, exprs);
        assert_eq!((live.table.as_str(), live.chain.as_str(), live.handle), ("netnat", "prerouting", 42));
        assert_eq!(live.family, libc::NFPROTO_INET as u32);
        assert_eq!(live.comment.as_deref(), Some("netnat: dnat"));
    }

    #[test]
    fn a_map_and_its_elements_read_back_the_same() {
        let desc = SetDesc {
            name: "pub_any6",
            id: 7,
            key_type: 781,
            key_len: 8,
            data: Some((0x1cd, 20)),
            counter: true,
            concat: None,
        };
        let set = parse_set(&written(&SetMsg::new(c"netnat", libc::NFPROTO_INET as u16, &desc).unwrap(), MsgType::Add))
            .unwrap();
        assert_eq!((set.table.as_str(), set.name.as_str(), set.family), ("netnat", "pub_any6", 1));
        assert_eq!((set.key_type, set.key_len, set.data, set.counter), (781, 8, Some((0x1cd, 20)), true));
        assert_eq!(set.flags, libc::NFT_SET_MAP as u32);
        // Elements one message each: libnftnl numbers the elements of a message it builds 1, 2, ...
        // while the kernel's dumps (and libnftnl's parser) number every one 1.
        let data = [0xfdu8, 0, 0, 0x16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 80, 0, 0];
        let keys: Vec<[u8; 8]> =
            [80u16, 443, 65535].iter().map(|p| [6, 0, 0, 0, (p >> 8) as u8, *p as u8, 0, 0]).collect();
        let mut live = vec![];
        for k in &keys {
            let msg =
                ElemsMsg::new(c"netnat", libc::NFPROTO_INET as u16, "pub_any6", &[(k, ElemData::Data(&data))]).unwrap();
            parse_elems(&written(&msg, MsgType::Add), &mut live).unwrap();
        }
        assert_eq!(live.len(), 3);
        assert!(live.iter().zip(&keys).all(|(l, k)| l.key == k && l.data == data && l.packets.is_none()), "{live:?}");
        // A full message (ELEMS_PER_MSG IPv6 elements) fits in what a batch gives one message.
        let elems: Vec<(&[u8], ElemData)> = (0..512).map(|_| (&keys[0][..], ElemData::Data(&data[..]))).collect();
        let full = written(&ElemsMsg::new(c"netnat", 1, "pub_any6", &elems).unwrap(), MsgType::Add);
        assert!(full.len() > 512 * 28 && full.len() < MAX_ELEMS_BYTES, "{} bytes", full.len());
    }

    #[test]
    fn what_cannot_be_built_or_read_is_an_error() {
        let msg = rule_message(&[Expr::Counter], "c");
        for cut in [0, 3, 15, msg.len() - 1] {
            assert!(parse_rule(&msg[..cut]).is_err(), "a message cut at {cut} bytes was parsed");
        }
        assert!(parse_chain(&msg[..10]).is_err() && parse_set(&msg[..10]).is_err());
        assert!(parse_elems(&msg[..10], &mut vec![]).is_err());
        assert!(encode(&Expr::Other { name: "quota".into() }).err().unwrap().to_string().contains("quota"));
        assert!(encode(&cmp(REG_1, CmpOp::Eq, vec![0; 65])).is_err());
        let big = [0u8; 64];
        let elems: Vec<(&[u8], ElemData)> = (0..512).map(|_| (&big[..], ElemData::Data(&big[..]))).collect();
        let err = ElemsMsg::new(c"netnat", 1, "s", &elems).err().unwrap().to_string();
        assert!(err.contains("512 elements of set s"), "{err}");
        assert!(dump_request(DumpKind::Elems, 1, Some(c"netnat"), Some("a\0b")).is_err());
        assert!(dump_request(DumpKind::Elems, 1, Some(c"netnat"), Some("pub_any4")).is_ok());
        // A comment TLV that claims more bytes than there are.
        assert_eq!(udata_comment(&[sys::NFTNL_UDATA_RULE_COMMENT as u8, 9, b'a']), None);
    }
}
