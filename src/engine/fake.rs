//! In-memory kernels for the engine's unit tests: no root, no namespace, no netlink. The test
//! keeps a handle (`Rc`) on what the engine's kernel holds, so it can look at the table after
//! an operation and make the next step fail.

use super::seam::{Firewall, Kernel, LinkKernel};
use crate::hostfw::Tables;
use crate::link::{Addr, LinkInfo};
use crate::linkplan::{bridge_addrs, LinkOp, Observed, ObservedLink};
use crate::model::State;
use crate::nft::hook::ForeignOp;
use crate::nft::spec::NftOp;
use crate::nft::{LiveChain, LiveRule, LiveTable};
use crate::ruleset::{self, fake::apply_elems};
use anyhow::{anyhow, bail, Result};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// netnat's table as a fake kernel holds it. Element changes are applied as the kernel would;
/// so are deleting chains and the whole table; a batch that adds to the layout (chains, rules, sets) is refused, so a test that expects
/// only element changes notices when it gets others.
#[derive(Debug, Default)]
pub struct FirewallState {
    pub table: Option<LiveTable>,
    /// Every batch the kernel took, in order.
    pub batches: Vec<Vec<NftOp>>,
    /// What the next `apply` calls do, one entry each: None goes through, Some(errno) fails
    /// with it, changing nothing. Empty: every call goes through.
    pub fail_apply: VecDeque<Option<i32>>,
    /// `read_table` fails (for the put-back failure).
    pub fail_read: bool,
    /// Other programs' chains and rules (`read_others`, the host-firewall drivers' view).
    pub others: (Vec<LiveChain>, Vec<LiveRule>),
    /// Every change to other tables (a driver's), in order.
    pub foreign: Vec<Vec<ForeignOp>>,
}

#[derive(Clone, Default)]
pub struct FakeFirewall(pub Rc<RefCell<FirewallState>>);

impl FakeFirewall {
    /// A kernel whose table is what netnat would program for `state`.
    pub fn programmed(state: &State) -> FakeFirewall {
        let table = ruleset::fake::live_after(&ruleset::desired(state), 0, 0);
        FakeFirewall(Rc::new(RefCell::new(FirewallState { table: Some(table), ..Default::default() })))
    }
}

impl Firewall for FakeFirewall {
    fn apply(&mut self, ops: &[NftOp]) -> Result<()> {
        let mut s = self.0.borrow_mut();
        if let Some(Some(errno)) = s.fail_apply.pop_front() {
            return Err(anyhow!(std::io::Error::from_raw_os_error(errno)).context("the fake kernel refused the batch"));
        }
        if ops.is_empty() {
            return Ok(());
        }
        if ops.iter().all(|op| matches!(op, NftOp::DelChain(_))) {
            // Chains of their own (netnat trace's) going: they and their rules.
            let Some(table) = s.table.as_mut() else { bail!("no table inet netnat (ENOENT)") };
            for op in ops {
                let NftOp::DelChain(name) = op else { unreachable!("checked above") };
                table.chains.retain(|c| &c.name != name);
                table.rules.retain(|r| &r.chain != name);
            }
            s.batches.push(ops.to_vec());
            return Ok(());
        }
        if let [NftOp::DelTable] = ops {
            if s.table.take().is_none() {
                bail!("no table inet netnat (ENOENT)");
            }
            s.batches.push(ops.to_vec());
            return Ok(());
        }
        let elements_only = ops.iter().all(|op| {
            matches!(
                op,
                NftOp::AddElems { .. } | NftOp::DelElems { .. } | NftOp::AddRanges { .. } | NftOp::DelRanges { .. }
            )
        });
        if !elements_only {
            bail!("the fake firewall models element changes only, got: {}", ops[0]);
        }
        let Some(table) = s.table.as_mut() else { bail!("no table inet netnat (ENOENT)") };
        apply_elems(table, ops);
        s.batches.push(ops.to_vec());
        Ok(())
    }
    fn read_table(&mut self) -> Result<Option<LiveTable>> {
        let s = self.0.borrow();
        if s.fail_read {
            bail!("the fake kernel could not be read");
        }
        Ok(s.table.clone())
    }
    fn read_layout(&mut self) -> Result<Option<LiveTable>> {
        Ok(self.read_table()?.map(|mut t| {
            t.elems.clear();
            t
        }))
    }
    fn read_others(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)> {
        Ok(self.0.borrow().others.clone())
    }
    fn foreign(&mut self) -> &mut dyn Tables {
        self
    }
}

impl Tables for FakeFirewall {
    fn read_all(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)> {
        self.read_others()
    }
    fn change_foreign(&mut self, ops: &[ForeignOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut s = self.0.borrow_mut();
        for op in ops {
            match op {
                ForeignOp::Insert { family, table, chain, exprs } => {
                    let handle = s.others.1.iter().map(|r| r.handle).max().unwrap_or(0) + 1;
                    let (table, chain, exprs) = (table.clone(), chain.clone(), exprs.clone());
                    let rule = LiveRule { table, family: *family, chain, handle, exprs, comment: None };
                    s.others.1.insert(0, rule);
                }
                ForeignOp::Delete { handle, .. } => s.others.1.retain(|r| r.handle != *handle),
            }
        }
        s.foreign.push(ops.to_vec());
        Ok(())
    }
}

/// Links as a fake kernel holds them: every network and endpoint of the states it is asked about
/// is in place, so the link planner has nothing to do unless a test says otherwise.
#[derive(Debug, Default)]
pub struct LinkState {
    pub links: Vec<LinkInfo>,
    /// Links with an alias (netnat's marks), and the alias.
    pub aliased: Vec<(LinkInfo, String)>,
    pub addrs: Vec<Addr>,
    /// Every link deleted, by name.
    pub deleted: Vec<String>,
    /// Every link step executed, as text.
    pub executed: Vec<String>,
    /// `execute` fails.
    pub fail_execute: bool,
    pub conf_writes: usize,
}

#[derive(Clone, Default)]
pub struct FakeLinks(pub Rc<RefCell<LinkState>>);

impl LinkKernel for FakeLinks {
    fn links(&mut self) -> Result<Vec<LinkInfo>> {
        Ok(self.0.borrow().links.clone())
    }
    fn addrs(&mut self) -> Result<Vec<Addr>> {
        Ok(self.0.borrow().addrs.clone())
    }
    fn observe(&mut self, a: &State, b: &State) -> Result<Observed> {
        let mut obs = Observed::default();
        for st in [a, b] {
            for n in st.networks.values() {
                let link = ObservedLink { kind: Some("bridge".into()), up: true, master: None, addrs: bridge_addrs(n) };
                obs.links.insert(n.bridge.clone(), link);
                obs.sysctls.insert(crate::host::route_localnet_key(&n.bridge), "1".into());
            }
            for s in st.sandboxes.values() {
                obs.namespaces.insert(s.name.clone());
                for e in &s.endpoints {
                    let master = st.networks.get(&e.network).map(|n| n.bridge.clone());
                    let link = ObservedLink { kind: Some("veth".into()), up: true, master, addrs: vec![] };
                    obs.links.insert(e.host_ifname.clone(), link);
                }
            }
            for k in crate::host::forwarding_keys(st) {
                obs.sysctls.insert(k.to_string(), "1".into());
            }
        }
        Ok(obs)
    }
    fn execute(&mut self, op: &LinkOp, _store: &crate::state::Store, rec: &mut State) -> Result<Vec<String>> {
        let mut s = self.0.borrow_mut();
        if s.fail_execute {
            bail!("the fake kernel refused: {op}");
        }
        s.executed.push(op.to_string());
        // The record's side of the step, as the real executor does it.
        match op {
            LinkOp::Disconnect { sandbox, endpoint } => {
                if let Some(sb) = rec.sandboxes.get_mut(sandbox) {
                    sb.endpoints.retain(|e| e.host_ifname != endpoint.host_ifname);
                }
            }
            LinkOp::Connect { sandbox, endpoint, .. } => {
                if let Some(sb) = rec.sandboxes.get_mut(sandbox) {
                    sb.endpoints.push(endpoint.clone());
                }
            }
            LinkOp::RemoveSandbox { name, .. } => {
                rec.sandboxes.remove(name);
            }
            LinkOp::RestoreSysctls => rec.sysctls.clear(),
            LinkOp::RemoveNetwork { network } => {
                rec.networks.remove(&network.name);
            }
            LinkOp::CreateBridge { network } | LinkOp::RepairBridge { network } => {
                rec.networks.insert(network.name.clone(), network.clone());
            }
            _ => {}
        }
        Ok(vec![])
    }
    fn write_conf(&mut self, _state: &State) -> Result<()> {
        self.0.borrow_mut().conf_writes += 1;
        Ok(())
    }
    fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut s = self.0.borrow_mut();
        if s.fail_execute {
            bail!("the fake kernel refused to delete {name}");
        }
        s.deleted.push(name.into());
        let had = s.links.iter().any(|l| l.name == name);
        s.links.retain(|l| l.name != name);
        s.aliased.retain(|(l, _)| l.name != name);
        Ok(had)
    }
    fn aliased_links(&mut self) -> Result<Vec<(LinkInfo, String)>> {
        Ok(self.0.borrow().aliased.clone())
    }
    fn ra_route_links(&mut self) -> Result<Vec<String>> {
        Ok(vec![])
    }
    fn add_handoff_veth(&mut self, bridge: &str, host: &str, peer: &str, _: Option<[u8; 6]>, _: &str) -> Result<()> {
        let mut s = self.0.borrow_mut();
        if s.fail_execute {
            bail!("the fake kernel refused the veth pair {host}");
        }
        s.executed.push(format!("add veth {host} (peer {peer}) on {bridge}"));
        Ok(())
    }
    fn in_sandbox(&mut self, _name: &str) -> Result<Box<dyn LinkKernel>> {
        // A sandbox's namespace, as the fake holds it: empty (no netnat mark on its lo).
        Ok(Box::new(FakeLinks::default()))
    }
}

/// A fake kernel for `Engine::open_with`, and the handles to look into it.
pub fn kernel(state: &State) -> (Kernel, FakeFirewall, FakeLinks) {
    let fw = FakeFirewall::programmed(state);
    let links = FakeLinks::default();
    (Kernel { firewall: Box::new(fw.clone()), links: Box::new(links.clone()) }, fw, links)
}
