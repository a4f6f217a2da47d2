//! What netnat knows of the tables while it traces: every chain and rule, and interface names.

use super::Event;
use crate::nft::expr::Expr;
use crate::nft::family::FAMILY_INET;
use crate::nft::foreign::render_foreign;
use crate::nft::{LiveChain, LiveRule};
use std::collections::BTreeMap;

/// Every chain and rule of every table (`Nft::read_all`) and the interface names, read when a
/// trace starts (and again when an event names a rule added since), to name each chain's hook
/// and priority and print each rule.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub chains: Vec<LiveChain>,
    pub rules: Vec<LiveRule>,
    pub ifnames: BTreeMap<u32, String>,
}

impl Catalog {
    pub(super) fn chain(&self, family: u8, table: &str, name: &str) -> Option<&LiveChain> {
        self.chains.iter().find(|c| c.family == family as u32 && c.table == table && c.name == name)
    }
    fn rule(&self, family: u8, table: &str, chain: &str, handle: u64) -> Option<&LiveRule> {
        self.rules
            .iter()
            .find(|r| r.family == family as u32 && r.table == table && r.chain == chain && r.handle == handle)
    }
    /// Whether the event names a rule or interface read after the catalog was.
    pub fn is_stale_for(&self, ev: &Event) -> bool {
        let rule = ev.handle.is_some_and(|h| self.rule(ev.family, &ev.table, &ev.chain, h).is_none());
        let link = [ev.iif, ev.oif].into_iter().flatten().any(|i| !self.ifnames.contains_key(&i));
        rule || link
    }
    pub(super) fn ifname(&self, index: u32) -> String {
        self.ifnames.get(&index).cloned().unwrap_or_else(|| format!("if{index}"))
    }
    /// A rule in nft syntax: netnat's own with their map keys in full, others' as the audit
    /// decodes them (iptables-nft NAT targets included).
    pub(super) fn rule_text(
        &self,
        family: u8,
        table: &str,
        chain: &str,
        handle: u64,
    ) -> (Option<String>, Option<String>) {
        let Some(r) = self.rule(family, table, chain, handle) else { return (None, None) };
        let text = if table == crate::ruleset::TABLE && family as u32 == FAMILY_INET {
            crate::ruleset::render_rule(&r.exprs, None)
        } else {
            render_foreign(r)
        };
        (Some(text), r.comment.clone())
    }
    pub(super) fn is_nat_rule(&self, family: u8, table: &str, chain: &str, handle: u64) -> bool {
        self.rule(family, table, chain, handle).is_some_and(|r| {
            r.exprs.iter().any(|e| match e {
                Expr::Nat { .. } | Expr::Masquerade => true,
                Expr::Xt { target: true, name, .. } => {
                    matches!(name.as_str(), "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP")
                }
                Expr::Other { name } => matches!(name.as_str(), "masq" | "redir" | "nat"),
                _ => false,
            })
        })
    }
}
