//! Docker: rules in `DOCKER-USER`, the chain Docker documents for other tools' rules and never
//! flushes (dockerd only makes sure its own `return` ends it). Two rules per bridge and family,
//! `-i BR -j ACCEPT` and `-o BR -j ACCEPT`, each with `-m comment --comment "netnat network
//! NAME"`, sent over netlink in the exact expressions iptables-nft writes, so `iptables -S
//! DOCKER-USER` lists them as ordinary rules. They survive a dockerd restart.

use super::{mark, marked_network, Driver, Held, Tables};
use crate::model::{HostFirewallKind, Network};
use crate::nft::expr::{CmpOp, Expr, META_IIFNAME, META_OIFNAME};
use crate::nft::hook::{comment_of, iptables_accept, ForeignOp};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

const TABLE: &str = "filter";
const CHAIN: &str = "DOCKER-USER";

pub struct Docker {
    /// The netfilter families (2: ip, 10: ip6) whose table filter has DOCKER-USER.
    families: Vec<u32>,
}

/// One of netnat's rules in DOCKER-USER.
struct Entry {
    family: u32,
    handle: u64,
    network: String,
    bridge: String,
    iif: bool,
}

impl Docker {
    pub fn new(families: Vec<u32>) -> Docker {
        Docker { families }
    }

    fn entries(&self, t: &mut dyn Tables) -> Result<Vec<Entry>> {
        let (_, rules) = t.read_all().context("reading DOCKER-USER")?;
        let mut out = vec![];
        for r in rules.iter().filter(|r| r.table == TABLE && r.chain == CHAIN && self.families.contains(&r.family)) {
            let Some(network) = r.exprs.iter().find_map(comment_of).and_then(|c| marked_network(&c).map(String::from))
            else {
                continue;
            };
            if let Some((iif, bridge)) = ifname_match(&r.exprs) {
                out.push(Entry { family: r.family, handle: r.handle, network, bridge, iif });
            }
        }
        Ok(out)
    }
}

/// The `-i NAME` / `-o NAME` of a rule: (is -i, name).
fn ifname_match(exprs: &[Expr]) -> Option<(bool, String)> {
    let key = exprs.iter().find_map(|e| match e {
        Expr::Meta { key, .. } if *key == META_IIFNAME || *key == META_OIFNAME => Some(*key),
        _ => None,
    })?;
    let data = exprs.iter().find_map(|e| match e {
        Expr::Cmp { op: CmpOp::Eq, data, .. } => Some(data),
        _ => None,
    })?;
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    Some((key == META_IIFNAME, String::from_utf8_lossy(&data[..end]).into_owned()))
}

impl Driver for Docker {
    fn kind(&self) -> HostFirewallKind {
        HostFirewallKind::Docker
    }

    fn opened(&mut self, t: &mut dyn Tables) -> Result<BTreeMap<String, Held>> {
        let entries = self.entries(t)?;
        let mut out: BTreeMap<String, Held> = BTreeMap::new();
        for e in &entries {
            let has = |fam: u32, iif: bool| {
                entries
                    .iter()
                    .any(|x| x.bridge == e.bridge && x.network == e.network && x.family == fam && x.iif == iif)
            };
            let complete = self.families.iter().all(|f| has(*f, true) && has(*f, false));
            out.insert(e.bridge.clone(), Held { network: e.network.clone(), complete });
        }
        Ok(out)
    }

    fn open(&mut self, t: &mut dyn Tables, net: &Network) -> Result<()> {
        let entries = self.entries(t)?;
        let mut ops = vec![];
        for fam in &self.families {
            // `-o` first, then `-i` on top: `iptables -S` lists -i before -o, as a person would add them.
            for iif in [false, true] {
                let here = |e: &&Entry| e.family == *fam && e.bridge == net.bridge && e.iif == iif;
                if entries.iter().filter(here).any(|e| e.network == net.name) {
                    continue;
                }
                let exprs = iptables_accept(iif, &net.bridge, &mark(&net.name))?;
                ops.push(ForeignOp::Insert { family: *fam, table: TABLE.into(), chain: CHAIN.into(), exprs });
            }
        }
        t.change_foreign(&ops).context("adding netnat's rules to Docker's DOCKER-USER chain")
    }

    fn close(&mut self, t: &mut dyn Tables, bridge: &str) -> Result<()> {
        let ops: Vec<ForeignOp> = self
            .entries(t)?
            .into_iter()
            .filter(|e| e.bridge == bridge)
            .map(|e| ForeignOp::Delete { family: e.family, table: TABLE.into(), chain: CHAIN.into(), handle: e.handle })
            .collect();
        t.change_foreign(&ops).context("removing netnat's rules from Docker's DOCKER-USER chain")
    }

    fn describe(&self, bridge: &str) -> String {
        format!("DOCKER-USER rules -i {bridge} -j ACCEPT and -o {bridge} -j ACCEPT")
    }
}
