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

use anyhow::{anyhow, ensure, Context, Result};
use nftnl_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

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

mod dump;
mod expr;
mod hook;
mod set;

pub use dump::{dump_request, parse_chain, parse_elems, parse_rule, parse_set, DumpKind};
pub use expr::add_expr;
pub use hook::{ForeignRuleMsg, XT_COMMENT_LEN};
pub use set::{ElemData, ElemsMsg, SetDesc, SetMsg};

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

#[cfg(test)]
mod tests;
