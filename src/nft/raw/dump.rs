//! Dumps: the request messages, and chains, rules, sets and elements parsed from the replies.

use super::expr::{collect_expr, ExprView};
use super::{bytes_at, c_string, set_status, string_at, OwnedChain, OwnedRule, OwnedSet, DATA_VALUE_MAXLEN};
use crate::nft::{BaseChain, Expr, LiveChain, LiveElem, LiveRule, LiveSet};
use anyhow::{bail, ensure, Result};
use nftnl_sys as sys;
use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::ptr::NonNull;

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
    pub(super) fn set_str(&self, attr: u32, v: &CStr) -> Result<()> {
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
        base: is_base.then(|| BaseChain {
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
pub(super) fn udata_comment(mut ud: &[u8]) -> Option<String> {
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
///
/// # Safety
/// `e` is null or an element of the set being walked, alive during the call; `data` is the
/// `*mut Vec<LiveElem>` given to nftnl_set_elem_foreach, valid and not otherwise borrowed during
/// the walk. libnftnl calls it on the caller's thread only.
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
///
/// # Safety
/// `e` is null or an expression of the element being walked, alive during the call; `data` is
/// the `*mut Option<(u64, u64)>` given to nftnl_set_elem_expr_foreach, valid and not otherwise
/// borrowed during the walk.
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
