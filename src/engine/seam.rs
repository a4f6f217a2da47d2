//! The engine's seam to the kernel: what an operation asks of netnat's firewall table and of the
//! host's links, as two traits. The real adapters (`Nft` over nf_tables netlink, `NetlinkLinks`
//! over rtnetlink) implement them; so do the in-memory fakes of `engine::fake`, with which the
//! engine's order (reserve, change the kernel, save, put the kernel back) is unit-tested without
//! root or a namespace.
//!
//! This is netnat's own table and links only. A host firewall's hooks (firewalld, ufw, Docker's
//! DOCKER-USER) are another trait, the host-firewall driver's; the rules a driver keeps in other
//! nftables tables go through `hostfw::Tables`, which `Firewall::foreign` hands out.

use super::kernel;
use crate::hostfw::Tables;
use crate::link::{Addr, LinkInfo, Links};
use crate::linkplan::{LinkOp, Observed};
use crate::model::State;
use crate::nft::spec::{NftOp, TABLE};
use crate::nft::{LiveChain, LiveRule, LiveTable, Nft};
use crate::state::Store;
use anyhow::Result;

/// netnat's nftables table, and a read of the others.
pub trait Firewall {
    /// Sends `ops` as one transaction: the kernel applies all of them or none.
    fn apply(&mut self, ops: &[NftOp]) -> Result<()>;
    /// netnat's table with its elements, or None when there is none.
    fn read_table(&mut self) -> Result<Option<LiveTable>>;
    /// netnat's table without elements (chains, rules, sets): what a change of a few elements
    /// needs to know, at a cost that does not grow with the elements.
    fn read_layout(&mut self) -> Result<Option<LiveTable>>;
    /// The chains and rules of every table, other programs' included.
    fn read_others(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)>;
    /// Other programs' tables as the host-firewall drivers read and change them (Docker's
    /// DOCKER-USER): the same kernel, through the drivers' own trait.
    fn foreign(&mut self) -> &mut dyn Tables;
}

/// The host's links, namespaces and the sysctls netnat sets.
pub trait LinkKernel {
    /// Every link of the host namespace.
    fn links(&mut self) -> Result<Vec<LinkInfo>>;
    /// Every address of the host namespace.
    fn addrs(&mut self) -> Result<Vec<Addr>>;
    /// What the kernel has of the networks and sandboxes of `a` and `b`, for `linkplan`.
    fn observe(&mut self, a: &State, b: &State) -> Result<Observed>;
    /// Does one link step (`linkplan::plan_links`) and records its effect in `rec`; returns notes
    /// on host settings changed on the side.
    fn execute(&mut self, op: &LinkOp, store: &Store, rec: &mut State) -> Result<Vec<String>>;
    /// Writes (or removes) the sysctl drop-in that puts netnat's sysctls back at boot.
    fn write_conf(&mut self, state: &State) -> Result<()>;
    /// Deletes a link (and a veth's peer with it); false when there was none.
    fn delete_link(&mut self, name: &str) -> Result<bool>;
    /// Every link with an alias, and the alias (netnat's marks, for `recover` and `reset`).
    fn aliased_links(&mut self) -> Result<Vec<(LinkInfo, String)>>;
    /// A veth pair for an endpoint another program owns (Docker's Join): `host_ifname` on
    /// `bridge` marked with `alias`, `peer` left in this namespace for the owner to take. A
    /// failure leaves no pair behind.
    fn add_handoff_veth(
        &mut self,
        bridge: &str,
        host_ifname: &str,
        peer: &str,
        mac: Option<[u8; 6]>,
        alias: &str,
    ) -> Result<()>;
    /// The interfaces with IPv6 routes learned from router advertisements.
    fn ra_route_links(&mut self) -> Result<Vec<String>>;
    /// The links inside sandbox `name`'s namespace (the audit and `recover` look at the sandbox
    /// ends of veths and at netnat's mark on its lo).
    fn in_sandbox(&mut self, name: &str) -> Result<Box<dyn LinkKernel>>;
}

/// Both halves, as an operation holds them.
pub struct Kernel {
    pub firewall: Box<dyn Firewall>,
    pub links: Box<dyn LinkKernel>,
}

impl Kernel {
    /// This network namespace's kernel, over netlink.
    pub fn netlink() -> Result<Kernel> {
        Ok(Kernel { firewall: Box::new(Nft::open()?), links: Box::new(NetlinkLinks::lazy()) })
    }
}

impl Firewall for Nft {
    fn apply(&mut self, ops: &[NftOp]) -> Result<()> {
        Nft::apply(self, ops)
    }
    fn read_table(&mut self) -> Result<Option<LiveTable>> {
        Nft::read_table(self, TABLE)
    }
    fn read_layout(&mut self) -> Result<Option<LiveTable>> {
        Nft::read_layout(self, TABLE)
    }
    fn read_others(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)> {
        Nft::read_all(self)
    }
    fn foreign(&mut self) -> &mut dyn Tables {
        self
    }
}

/// The host namespace's links over rtnetlink (and, for a sandbox's side, inside its namespace).
/// The connection (a socket and a runtime) is opened at first use: most commands that only
/// change the firewall (publish, unpublish, CNI ADD and DEL) never need it.
pub struct NetlinkLinks(Option<Links>);

impl NetlinkLinks {
    pub fn new(links: Links) -> NetlinkLinks {
        NetlinkLinks(Some(links))
    }

    /// Opened when first used.
    pub fn lazy() -> NetlinkLinks {
        NetlinkLinks(None)
    }

    fn get(&mut self) -> Result<&Links> {
        if self.0.is_none() {
            self.0 = Some(Links::open()?);
        }
        Ok(self.0.as_ref().expect("opened above"))
    }
}

impl LinkKernel for NetlinkLinks {
    fn links(&mut self) -> Result<Vec<LinkInfo>> {
        self.get()?.links()
    }
    fn addrs(&mut self) -> Result<Vec<Addr>> {
        self.get()?.addrs()
    }
    fn observe(&mut self, a: &State, b: &State) -> Result<Observed> {
        kernel::observe_links(self.get()?, a, b)
    }
    fn execute(&mut self, op: &LinkOp, store: &Store, rec: &mut State) -> Result<Vec<String>> {
        kernel::execute(op, self.get()?, store, rec)
    }
    fn write_conf(&mut self, state: &State) -> Result<()> {
        crate::host::write_conf(state)
    }
    fn delete_link(&mut self, name: &str) -> Result<bool> {
        self.get()?.delete_link(name)
    }
    fn aliased_links(&mut self) -> Result<Vec<(LinkInfo, String)>> {
        self.get()?.aliased_links()
    }
    fn ra_route_links(&mut self) -> Result<Vec<String>> {
        self.get()?.ra_route_links()
    }
    fn add_handoff_veth(
        &mut self,
        bridge: &str,
        host_ifname: &str,
        peer: &str,
        mac: Option<[u8; 6]>,
        alias: &str,
    ) -> Result<()> {
        let links = self.get()?;
        links.add_handoff_veth(bridge, host_ifname, peer, mac)?;
        if let Err(err) = links.set_alias(host_ifname, alias) {
            let _ = links.delete_link(host_ifname);
            return Err(err);
        }
        Ok(())
    }
    fn in_sandbox(&mut self, name: &str) -> Result<Box<dyn LinkKernel>> {
        // A handle inside another namespace is its own socket: opened here, as the host's is
        // in `Kernel::netlink`.
        Ok(Box::new(NetlinkLinks::new(Links::open_in(&crate::link::netns::path(name))?)))
    }
}
