//! Sets (maps) and their elements: own messages, since nftnl's Set fixes the key type.

use super::expr::{encode, OwnedExpr};
use super::{c_string, set_status, string_at, OwnedElem, OwnedSet, DATA_VALUE_MAXLEN};
use crate::nft::Expr;
use anyhow::{ensure, Result};
use nftnl::{MsgType, NlMsg};
use nftnl_sys as sys;
use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

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
pub(super) const MAX_ELEMS_BYTES: usize = 60 * 1024;

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
    pub(super) fn set_str(&self, attr: u32, v: &CStr) -> Result<()> {
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
    pub(super) fn is_set(&self, attr: u32) -> bool {
        // SAFETY: self.0 is a live set; reading does not change it.
        unsafe { sys::nftnl_set_is_set(self.ptr(), attr as u16) }
    }
    pub(super) fn u32(&self, attr: u32) -> u32 {
        // SAFETY: as in `is_set`; an unset attribute reads as 0.
        unsafe { sys::nftnl_set_get_u32(self.ptr(), attr as u16) }
    }
    pub(super) fn str(&self, attr: u32) -> String {
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
