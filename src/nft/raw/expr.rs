//! Expressions: encoded into libnftnl objects with chosen registers, and decoded from a dumped
//! rule's.

use super::{bytes_at, c_string, set_status, string_at, DATA_VALUE_MAXLEN};
use crate::nft::expr::{CmpOp, Verdict};
use crate::nft::Expr;
use anyhow::{anyhow, bail, ensure, Result};
use nftnl_sys as sys;
use std::cell::Cell;
use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::ptr::NonNull;

/// An expression being built, owned until it is handed to a rule or a set.
pub(super) struct OwnedExpr(NonNull<sys::nftnl_expr>);

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
    pub(super) fn into_raw(self) -> NonNull<sys::nftnl_expr> {
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

pub(super) fn encode(e: &Expr) -> Result<OwnedExpr> {
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
        // An xt match, for a rule in another program's chain in iptables-nft's own form (`hook`).
        Expr::Xt { target: false, name, info } => xt_match(name, info)?,
        Expr::Xt { name, .. } | Expr::Other { name } => bail!("netnat does not encode foreign expressions ({name})"),
    };
    Ok(b)
}

/// An expression owned by something else (a rule or set element being read), for `'a`.
#[derive(Clone, Copy)]
pub(super) struct ExprView<'a>(NonNull<sys::nftnl_expr>, PhantomData<&'a sys::nftnl_expr>);

impl<'a> ExprView<'a> {
    /// # Safety
    /// `p` is null or points to an expression that stays alive and unchanged for `'a`.
    pub(super) unsafe fn new(p: *const sys::nftnl_expr) -> Option<ExprView<'a>> {
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
    pub(super) fn u64(&self, attr: u32) -> u64 {
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
    pub(super) fn str(&self, attr: u32) -> String {
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
///
/// # Safety
/// `e` is null or an expression of the rule being walked, alive during the call; `data` is the
/// `*mut Vec<Expr>` given to nftnl_expr_foreach, valid and not otherwise borrowed during the walk.
/// libnftnl calls it on the caller's thread only.
pub(super) unsafe extern "C" fn collect_expr(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
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

/// An xt match (iptables-nft's `-m NAME`), revision 0, with its info blob.
fn xt_match(name: &str, info: &[u8]) -> Result<OwnedExpr> {
    ensure!(!info.is_empty() && info.len() <= 4096, "xt match {name}: {} bytes of info", info.len());
    let x = OwnedExpr::new(c"match")?.str(sys::NFTNL_EXPR_MT_NAME, name)?.u32(sys::NFTNL_EXPR_MT_REV, 0);
    // libnftnl keeps (and later frees) the info pointer it is given instead of copying it, so it
    // gets a malloc'd copy of its own.
    // SAFETY: malloc of a non-zero size returns null or `info.len()` writable bytes.
    let p = unsafe { libc::malloc(info.len()) };
    ensure!(!p.is_null(), "out of memory for xt match {name}");
    // SAFETY: `p` has `info.len()` writable bytes and does not overlap `info`.
    unsafe { std::ptr::copy_nonoverlapping(info.as_ptr(), p.cast::<u8>(), info.len()) };
    // SAFETY: the expression is live; libnftnl takes over `p` (freed with the expression).
    let rc = unsafe { sys::nftnl_expr_set(x.0.as_ptr(), sys::NFTNL_EXPR_MT_INFO as u16, p, info.len() as u32) };
    if rc < 0 {
        // SAFETY: libnftnl did not take `p` over when it failed.
        unsafe { libc::free(p) };
    }
    set_status(rc, "an xt match", sys::NFTNL_EXPR_MT_INFO)?;
    Ok(x)
}
