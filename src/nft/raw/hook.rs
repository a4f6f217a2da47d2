//! Messages for rules in another program's chain (Docker's `DOCKER-USER`, through its documented
//! hook): a NEWRULE that inserts at the start of the chain (the `nftnl` crate only appends, and
//! Docker's chain ends with its own `return`) and a DELRULE by handle. Expressions are encoded
//! as iptables-nft writes them, including its xt `comment` match, so `iptables -S` lists the rule
//! as an ordinary one of its own.

use super::expr::encode;
use super::{c_string, OwnedRule};
use crate::nft::expr::Expr;
use anyhow::Result;
use nftnl::{MsgType, NlMsg};
use nftnl_sys as sys;
use std::ffi::c_void;

/// The size of iptables' `struct xt_comment_info` (a 256-byte string).
pub const XT_COMMENT_LEN: usize = 256;

/// A rule of table `table` (netfilter family `family`), chain `chain`: inserted at the chain's
/// start when sent as an Add, deleted by its handle when sent as a Del.
pub struct ForeignRuleMsg(OwnedRule);

impl ForeignRuleMsg {
    pub fn insert(family: u32, table: &str, chain: &str, exprs: &[Expr]) -> Result<ForeignRuleMsg> {
        let r = Self::named(family, table, chain)?;
        for e in exprs {
            let x = encode(e)?;
            // SAFETY: the rule is live and owned by `r`; the expression leaves its wrapper and is
            // owned (and freed) by the rule from here on.
            unsafe { sys::nftnl_rule_add_expr(r.0.ptr(), x.into_raw().as_ptr()) };
        }
        Ok(r)
    }

    pub fn delete(family: u32, table: &str, chain: &str, handle: u64) -> Result<ForeignRuleMsg> {
        let r = Self::named(family, table, chain)?;
        // SAFETY: the rule is live and owned by `r`; the value is copied.
        unsafe { sys::nftnl_rule_set_u64(r.0.ptr(), sys::NFTNL_RULE_HANDLE as u16, handle) };
        Ok(r)
    }

    fn named(family: u32, table: &str, chain: &str) -> Result<ForeignRuleMsg> {
        let r = OwnedRule::new()?;
        r.set_str(sys::NFTNL_RULE_TABLE, &c_string(table)?)?;
        r.set_str(sys::NFTNL_RULE_CHAIN, &c_string(chain)?)?;
        // SAFETY: the rule is live and owned by `r`; the value is copied.
        unsafe { sys::nftnl_rule_set_u32(r.ptr(), sys::NFTNL_RULE_FAMILY as u16, family) };
        Ok(ForeignRuleMsg(r))
    }
}

// SAFETY: `write` builds exactly one message of a live rule into the batch buffer it is given.
unsafe impl NlMsg for ForeignRuleMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        // No NLM_F_APPEND and no position: the kernel puts the rule first in its chain.
        let (t, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWRULE, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELRULE, libc::NLM_F_ACK),
        };
        // SAFETY: `buf` has room for one message (NlMsg's contract); the rule is live.
        unsafe {
            let family = sys::nftnl_rule_get_u32(self.0.ptr(), sys::NFTNL_RULE_FAMILY as u16);
            let h = sys::nftnl_nlmsg_build_hdr(buf.cast(), t as u16, family as u16, flags as u16, seq);
            sys::nftnl_rule_nlmsg_build_payload(h, self.0.ptr());
        }
    }
}
