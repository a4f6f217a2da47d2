//! Rules netnat adds to another program's chain through the hook that program documents for it
//! (Docker's `DOCKER-USER`), in the exact form iptables-nft writes, and their removal. Never a
//! table, chain or rule of theirs that is not netnat's own.

use super::raw::{ForeignRuleMsg, XT_COMMENT_LEN};
use super::Nft;
use crate::nft::expr::{self, CmpOp, Expr, Verdict};
use anyhow::{ensure, Context, Result};
use nftnl::{Batch, MsgType};

/// One change to another program's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignOp {
    /// A rule at the start of the chain.
    Insert {
        family: u32,
        table: String,
        chain: String,
        exprs: Vec<Expr>,
    },
    Delete {
        family: u32,
        table: String,
        chain: String,
        handle: u64,
    },
}

impl std::fmt::Display for ForeignOp {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ForeignOp::Insert { table, chain, exprs, .. } => {
                write!(f, "insert into {table} {chain}: {}", expr::render(exprs, &|_| None))
            }
            ForeignOp::Delete { table, chain, handle, .. } => write!(f, "delete rule {handle} of {table} {chain}"),
        }
    }
}

/// iptables-nft's `-i NAME` (`iif: true`) or `-o NAME`: the name with its NUL, no padding.
pub fn iptables_ifname(iif: bool, name: &str) -> Vec<Expr> {
    let key = if iif { expr::META_IIFNAME } else { expr::META_OIFNAME };
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    vec![expr::load_meta(key, expr::REG_1), expr::cmp(expr::REG_1, CmpOp::Eq, data)]
}

/// iptables' `-m comment --comment TEXT`.
pub fn iptables_comment(text: &str) -> Result<Expr> {
    ensure!(text.len() < XT_COMMENT_LEN, "an iptables comment of {} bytes", text.len());
    let mut info = text.as_bytes().to_vec();
    info.resize(XT_COMMENT_LEN, 0);
    Ok(Expr::Xt { target: false, name: "comment".into(), info })
}

/// The text of an iptables comment match, if `e` is one.
pub fn comment_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Xt { target: false, name, info } if name == "comment" => {
            let end = info.iter().position(|b| *b == 0).unwrap_or(info.len());
            Some(String::from_utf8_lossy(&info[..end]).into_owned())
        }
        _ => None,
    }
}

/// `iptables -I CHAIN -i|-o NAME -m comment --comment TEXT -j ACCEPT`, as iptables-nft encodes it.
pub fn iptables_accept(iif: bool, name: &str, comment: &str) -> Result<Vec<Expr>> {
    let mut e = iptables_ifname(iif, name);
    e.push(iptables_comment(comment)?);
    e.push(Expr::Counter);
    e.push(Expr::Verdict(Verdict::Accept));
    Ok(e)
}

impl Nft {
    /// Sends `ops` as one transaction (all or nothing).
    pub fn change_foreign(&mut self, ops: &[ForeignOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for op in ops {
            let msg = match op {
                ForeignOp::Insert { family, table, chain, exprs } => {
                    ForeignRuleMsg::insert(*family, table, chain, exprs)
                }
                ForeignOp::Delete { family, table, chain, handle } => {
                    ForeignRuleMsg::delete(*family, table, chain, *handle)
                }
            }
            .with_context(|| format!("building the nftables message for: {op}"))?;
            let kind = if matches!(op, ForeignOp::Insert { .. }) { MsgType::Add } else { MsgType::Del };
            batch.add(&msg, kind);
        }
        let batch = batch.finalize();
        let seqs = batch.sequence_numbers();
        let pages: Vec<&[u8]> = batch.iter().collect();
        self.sendmsg(&pages).context("sending the nftables transaction")?;
        self.read_acks(seqs.start, seqs.end, &|idx| ops.get(idx).map(|o| o.to_string()))
    }
}
