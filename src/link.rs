//! Links, addresses, routes and network namespaces over rtnetlink.
//!
//! This is the only module of netnat that talks rtnetlink. Its API is synchronous: each
//! [`Links`] owns a current-thread tokio runtime and blocks on it. A connection belongs to the
//! network namespace it was opened in, so acting inside a sandbox means opening a second
//! [`Links`] there with [`Links::open_in`].

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{self as nl, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use tokio::runtime::Runtime;

pub const NETNS_DIR: &str = "/run/netns";

/// What netnat needs to know about a live link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// "bridge", "veth", ...; None for links without a kind (lo, physical NICs).
    pub kind: Option<String>,
    pub up: bool,
    pub master: Option<u32>,
    /// Namespace id of the veth peer when it lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// IFLA_LINK: the peer's index (in `link_netnsid`'s namespace if set).
    pub peer_index: Option<u32>,
}

/// One address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub ifname: String,
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Everything needed to wire one sandbox into one bridge.
pub struct EndpointSpec<'a> {
    /// Bridge in the current (host) namespace.
    pub bridge: &'a str,
    /// Host end of the veth, at most 15 bytes.
    pub host_ifname: &'a str,
    /// The sandbox namespace, e.g. /run/netns/Container_ns1.
    pub netns_path: PathBuf,
    /// Name inside the sandbox, e.g. eth0.
    pub ifname: &'a str,
    /// One address with its prefix length per family of the network.
    pub addrs: Vec<(IpAddr, u8)>,
    /// The gateway of each family, for the default routes.
    pub gateways: Vec<IpAddr>,
    /// False when the sandbox already has its default routes (second network).
    pub default_route: bool,
}

/// A netlink connection to one network namespace (the current one for [`Links::open`]).
pub struct Links {
    rt: Runtime,
    handle: Handle,
}

impl Links {
    pub fn open() -> Result<Links> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("creating tokio runtime for rtnetlink")?;
        // The socket registers with the runtime's reactor, so it must be created inside it.
        let (conn, handle, _) = {
            let _inside = rt.enter();
            rtnetlink::new_connection().context("opening rtnetlink socket")?
        };
        // On a current-thread runtime this task only runs while we block_on a request.
        rt.spawn(conn);
        Ok(Links { rt, handle })
    }

    /// Opens a connection inside the namespace at `path` (setns, connect, setns back).
    pub fn open_in(path: &Path) -> Result<Links> {
        let target = File::open(path).with_context(|| format!("opening network namespace {}", path.display()))?;
        let _back =
            NetnsGuard::enter(&target).with_context(|| format!("entering network namespace {}", path.display()))?;
        // The socket keeps the namespace it was created in after we switch back.
        Links::open().with_context(|| format!("connecting inside {}", path.display()))
    }

    pub fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> =
            self.rt.block_on(self.handle.link().get().execute().try_collect()).context("listing links")?;
        Ok(msgs.iter().map(link_info).collect())
    }

    pub fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        // A full dump instead of a by-name get: a missing link is then None, not an errno to decode.
        Ok(self.links().with_context(|| format!("looking up link {name}"))?.into_iter().find(|l| l.name == name))
    }

    /// All addresses in this namespace, of both families.
    pub fn addrs(&self) -> Result<Vec<Addr>> {
        let names: Vec<(u32, String)> = self.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        let mut req = self.handle.address().get();
        req.message_mut().header.family = AddressFamily::Unspec;
        let msgs: Vec<AddressMessage> = self.rt.block_on(req.execute().try_collect()).context("listing addresses")?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let ifname = names.iter().find(|(i, _)| *i == m.header.index)?.1.clone();
                Some(Addr { ifname, index: m.header.index, addr: ip_of(m)?, prefix: m.header.prefix_len })
            })
            .collect())
    }

    /// Names of the links that have an IPv6 route learned from a router advertisement.
    pub fn ra_route_links(&self) -> Result<Vec<String>> {
        use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
        let names: Vec<(u32, String)> = self.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        let req = self.handle.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build());
        let msgs: Vec<RouteMessage> = self.rt.block_on(req.execute().try_collect()).context("listing IPv6 routes")?;
        let mut out: Vec<String> = msgs
            .iter()
            .filter(|m| m.header.protocol == RouteProtocol::Ra)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => names.iter().find(|(n, _)| n == i).map(|(_, name)| name.clone()),
                    _ => None,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Creates the bridge if missing, puts each gateway/prefix on it if missing, sets it up.
    /// Idempotent. Error if a link of that name exists and is not a bridge.
    pub fn ensure_bridge(&self, name: &str, gateways: &[(IpAddr, u8)]) -> Result<()> {
        let index = match self.link(name)? {
            Some(l) if l.kind.as_deref() == Some("bridge") => l.index,
            Some(l) => bail!(
                "link {name} exists but is a {}, not a bridge",
                l.kind.as_deref().unwrap_or("device without a kind")
            ),
            None => self.create_bridge(name)?,
        };
        let have = self.addrs()?;
        for &(gw, prefix) in gateways {
            if !have.iter().any(|a| a.index == index && a.addr == gw && a.prefix == prefix) {
                self.add_addr(index, name, gw, prefix)?;
            }
        }
        self.set_up(name)
    }

    /// Deletes a link by name; Ok(false) if it did not exist.
    pub fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(l) = self.link(name)? else {
            return Ok(false);
        };
        match self.rt.block_on(self.handle.link().del(l.index).execute()) {
            Ok(()) => Ok(true),
            // Gone between the lookup and the delete (e.g. its veth peer's namespace died).
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("deleting link {name}")),
        }
    }

    /// Wires a sandbox into a bridge; see [`EndpointSpec`]. On failure after the veth pair was
    /// created, the host end is deleted (which removes the pair) before the error is returned.
    pub fn add_endpoint(&self, ep: &EndpointSpec) -> Result<()> {
        let what = || format!("connecting {} ({}) to bridge {}", ep.netns_path.display(), ep.ifname, ep.bridge);
        let bridge = self.require_bridge(ep.bridge).with_context(what)?;
        self.create_veth(ep).with_context(what)?;
        if let Err(e) = self.wire_endpoint(ep, bridge) {
            // Best effort: the original error is what the caller needs to see.
            let _ = self.delete_link(ep.host_ifname);
            return Err(e).with_context(what);
        }
        Ok(())
    }

    /// A veth pair for a sandbox another program owns (a Docker container): the host end on
    /// `bridge` and up (hairpin on, as for every endpoint), the peer left down in this namespace
    /// for the owner to move, rename and address. On failure the pair is deleted.
    pub fn add_handoff_veth(&self, bridge: &str, host_ifname: &str, peer: &str, mac: Option<[u8; 6]>) -> Result<()> {
        let what = || format!("creating veth {host_ifname} (peer {peer}) on bridge {bridge}");
        let bridge_index = self.require_bridge(bridge).with_context(what)?;
        let mut p = LinkUnspec::new_with_name(peer);
        if let Some(m) = mac {
            p = p.address(m.to_vec());
        }
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host_ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
            .build();
        self.rt.block_on(self.handle.link().add(msg).execute()).with_context(what)?;
        let wired = self.index_of(host_ifname).and_then(|host| {
            self.change(LinkUnspec::new_with_index(host).controller(bridge_index).up().build())?;
            let hairpin = LinkBridgePort::new(host).hairpin(true).build();
            Ok(self.rt.block_on(self.handle.link().set_port(hairpin).execute())?)
        });
        if let Err(e) = wired {
            let _ = self.delete_link(host_ifname);
            return Err(e).with_context(what);
        }
        Ok(())
    }

    /// Sets the interface alias (IFLA_IFALIAS, `ip link set NAME alias TEXT`): netnat's mark on
    /// what it made, kept by the kernel itself so it survives a lost record (see `recover`).
    /// The kernel ignores an alias in the message that creates a link, hence a change after it.
    pub fn set_alias(&self, name: &str, alias: &str) -> Result<()> {
        let index = self.index_of(name)?;
        self.change(LinkUnspec::new_with_index(index).alias(alias).build())
            .with_context(|| format!("setting alias {alias:?} on {name}"))
    }

    /// Every link that has an alias, with it.
    pub fn aliased_links(&self) -> Result<Vec<(LinkInfo, String)>> {
        let msgs: Vec<LinkMessage> =
            self.rt.block_on(self.handle.link().get().execute().try_collect()).context("listing links")?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let alias = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfAlias(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                })?;
                Some((link_info(m), alias))
            })
            .collect())
    }

    pub fn set_up(&self, name: &str) -> Result<()> {
        let index = self.index_of(name)?;
        self.change(LinkUnspec::new_with_index(index).up().build()).with_context(|| format!("setting {name} up"))
    }

    fn create_bridge(&self, name: &str) -> Result<u32> {
        self.rt
            .block_on(self.handle.link().add(LinkBridge::new(name).build()).execute())
            .with_context(|| format!("creating bridge {name}"))?;
        self.index_of(name)
    }

    fn require_bridge(&self, name: &str) -> Result<u32> {
        match self.link(name)? {
            Some(l) if l.kind.as_deref() == Some("bridge") => Ok(l.index),
            Some(_) => bail!("link {name} is not a bridge"),
            None => bail!("bridge {name} does not exist"),
        }
    }

    /// Creates the pair with the peer born inside the sandbox (IFLA_NET_NS_FD on the peer), so
    /// its name cannot clash with a host link and a failure leaves nothing in either namespace.
    fn create_veth(&self, ep: &EndpointSpec) -> Result<()> {
        let ns = File::open(&ep.netns_path)
            .with_context(|| format!("opening network namespace {}", ep.netns_path.display()))?;
        let peer = LinkUnspec::new_with_name(ep.ifname).setns_by_fd(ns.as_raw_fd()).build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(ep.host_ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        // `ns` must stay open until the kernel has read the fd number in the message.
        self.rt.block_on(self.handle.link().add(msg).execute()).with_context(|| {
            format!("creating veth {} with peer {} in {}", ep.host_ifname, ep.ifname, ep.netns_path.display())
        })
    }

    fn wire_endpoint(&self, ep: &EndpointSpec, bridge: u32) -> Result<()> {
        let host = self.index_of(ep.host_ifname)?;
        self.change(LinkUnspec::new_with_index(host).controller(bridge).up().build())
            .with_context(|| format!("enslaving {} to bridge {}", ep.host_ifname, ep.bridge))?;
        // Slave data is only accepted once the port has a master, hence a second message.
        let hairpin = LinkBridgePort::new(host).hairpin(true).build();
        self.rt
            .block_on(self.handle.link().set_port(hairpin).execute())
            .with_context(|| format!("setting hairpin mode on {}", ep.host_ifname))?;
        Links::open_in(&ep.netns_path)?.configure_sandbox(ep)
    }

    /// Runs on a connection inside the sandbox.
    fn configure_sandbox(&self, ep: &EndpointSpec) -> Result<()> {
        self.set_up("lo")?;
        let index = self.index_of(ep.ifname)?;
        if ep.addrs.iter().any(|(a, _)| a.is_ipv6()) {
            // A container takes no router advertisements: its routes are the ones netnat sets.
            in_netns(&ep.netns_path, || {
                ipv6_available(&format!("sandbox {}", ep.netns_path.display()))?;
                sysctl::write(&format!("net/ipv6/conf/{}/accept_ra", ep.ifname), "0")
            })?;
        }
        for &(addr, prefix) in &ep.addrs {
            self.add_addr(index, ep.ifname, addr, prefix)?;
        }
        self.set_up(ep.ifname)?;
        if ep.default_route {
            for gw in &ep.gateways {
                let route = match gw {
                    IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(*g).build(),
                    IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(*g).build(),
                };
                self.rt
                    .block_on(self.handle.route().add(route).execute())
                    .with_context(|| format!("adding default route via {gw} in {}", ep.netns_path.display()))?;
            }
        }
        Ok(())
    }

    /// IPv6 addresses are added with NODAD: netnat hands out every address itself, so there is
    /// nothing to detect, and without it the address is unusable (tentative) for a second.
    fn add_addr(&self, index: u32, name: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut req = self.handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.rt.block_on(req.execute()).with_context(|| format!("adding address {addr}/{prefix} to {name}"))
    }

    fn index_of(&self, name: &str) -> Result<u32> {
        self.link(name)?.map(|l| l.index).ok_or_else(|| anyhow!("link {name} does not exist"))
    }

    /// RTM_NEWLINK without CREATE|EXCL: changes an existing link, like `ip link set`.
    fn change(&self, msg: LinkMessage) -> Result<()> {
        Ok(self.rt.block_on(self.handle.link().change(msg).execute())?)
    }
}

fn link_info(m: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: m.header.index,
        name: String::new(),
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        master: None,
        link_netnsid: None,
        peer_index: None,
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Controller(i) => info.master = Some(*i),
            LinkAttribute::LinkNetNsId(id) => info.link_netnsid = Some(*id),
            LinkAttribute::Link(i) => info.peer_index = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    nl::LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    info
}

/// IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on point-to-point
/// links (and IPv6 addresses have only IFA_ADDRESS).
fn ip_of(m: &AddressMessage) -> Option<IpAddr> {
    let pick = |want_local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if want_local => Some(*ip),
            AddressAttribute::Address(ip) if !want_local => Some(*ip),
            _ => None,
        })
    };
    pick(true).or_else(|| pick(false))
}

/// Runs `f` with the current thread in the network namespace at `path` (e.g. to read or write
/// that namespace's net.* sysctls), and back.
pub fn in_netns<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let target = File::open(path).with_context(|| format!("opening network namespace {}", path.display()))?;
    let _back = NetnsGuard::enter(&target).with_context(|| format!("entering network namespace {}", path.display()))?;
    f()
}

/// Fails with one clear line when IPv6 is off in the current namespace (`where` names it):
/// no IPv6 stack, or net.ipv6.conf.all.disable_ipv6=1.
pub fn ipv6_available(place: &str) -> Result<()> {
    match sysctl::read("net/ipv6/conf/all/disable_ipv6").as_deref() {
        Ok("0") => Ok(()),
        Ok(_) => bail!(
            "IPv6 is disabled in {place} (net.ipv6.conf.all.disable_ipv6=1); enable it or use an IPv4-only network"
        ),
        Err(_) => bail!("{place} has no IPv6 stack (no /proc/sys/net/ipv6); use an IPv4-only network"),
    }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// Moves the current thread into a network namespace and back again on drop, even on error.
struct NetnsGuard {
    original: File,
}

impl NetnsGuard {
    fn enter(target: &File) -> Result<NetnsGuard> {
        let original = File::open("/proc/thread-self/ns/net").context("opening current network namespace")?;
        setns(target)?;
        Ok(NetnsGuard { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // Staying in the wrong namespace would silently misdirect every later call on this thread.
        if let Err(e) = setns(&self.original) {
            panic!("cannot return to the original network namespace: {e:#}");
        }
    }
}

fn setns(ns: &File) -> Result<()> {
    // SAFETY: plain syscall on a valid open fd.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    Ok(())
}

/// Named network namespaces, the way iproute2 keeps them: a bind mount of the namespace at
/// /run/netns/NAME.
pub mod netns {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use anyhow::{bail, Context, Result};

    use super::NETNS_DIR;

    pub fn path(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    /// A mounted namespace file is there (not just a leftover empty file).
    pub fn exists(name: &str) -> bool {
        valid_name(name).is_ok() && is_nsfs(&path(name))
    }

    pub fn list() -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(NETNS_DIR) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {NETNS_DIR}")),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {NETNS_DIR}"))?;
            if let Some(name) = entry.file_name().to_str() {
                if exists(name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates a new namespace bind-mounted at /run/netns/NAME, without forking.
    /// Returns Ok(false) when it already exists.
    pub fn create(name: &str) -> Result<bool> {
        valid_name(name)?;
        if exists(name) {
            return Ok(false);
        }
        let target = path(name);
        let ctx = || format!("creating network namespace {name}");
        make_dir_shared().with_context(ctx)?;
        // Mount point for the bind mount; a leftover empty file from a failed attempt is reused.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
            .with_context(|| format!("creating {}", target.display()))
            .with_context(ctx)?;
        if let Err(e) = mount_fresh_netns(&target) {
            let _ = std::fs::remove_file(&target);
            return Err(e).with_context(ctx);
        }
        Ok(true)
    }

    /// umount2(MNT_DETACH) + unlink. Ok(false) when it did not exist.
    pub fn delete(name: &str) -> Result<bool> {
        valid_name(name)?;
        let target = path(name);
        if !target.exists() {
            return Ok(false);
        }
        let c = cpath(&target)?;
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: a leftover file that is not mounted; removing it is still right.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e).with_context(|| format!("unmounting {}", target.display()));
            }
        }
        std::fs::remove_file(&target).with_context(|| format!("removing {}", target.display()))?;
        Ok(true)
    }

    fn valid_name(name: &str) -> Result<()> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            bail!("invalid network namespace name {name:?}");
        }
        Ok(())
    }

    fn is_nsfs(p: &Path) -> bool {
        let Ok(c) = cpath(p) else { return false };
        // SAFETY: statfs is plain integers; all zero is a valid value, filled in by the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs, both alive during the
        // call; a failure (-1) is treated as "not nsfs".
        let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
        // The types of f_type and NSFS_MAGIC differ between architectures.
        #[allow(clippy::unnecessary_cast)]
        let nsfs = libc::NSFS_MAGIC as i64;
        ok && st.f_type as i64 == nsfs
    }

    /// Like `ip netns add`: make /run/netns a shared mount point so that mounts under it
    /// propagate to other mount namespaces (e.g. the one `ip netns exec` creates).
    fn make_dir_shared() -> Result<()> {
        std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
        let dir = cpath(Path::new(NETNS_DIR))?;
        let share = || mount(None, &dir, libc::MS_SHARED | libc::MS_REC);
        match share() {
            Ok(()) => Ok(()),
            // EINVAL: not a mount point yet; bind it onto itself, then share it.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                mount(Some(&dir), &dir, libc::MS_BIND | libc::MS_REC)
                    .with_context(|| format!("bind-mounting {NETNS_DIR} on itself"))?;
                share().with_context(|| format!("making {NETNS_DIR} a shared mount"))
            }
            Err(e) => Err(e).with_context(|| format!("making {NETNS_DIR} a shared mount")),
        }
    }

    /// A short-lived thread unshares its network namespace and bind-mounts it at `target`;
    /// the mount keeps the namespace alive after the thread exits. No fork, so it is safe in a
    /// multi-threaded process.
    fn mount_fresh_netns(target: &Path) -> Result<()> {
        let target = cpath(target)?;
        std::thread::spawn(move || -> Result<()> {
            // SAFETY: affects only this thread, which exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
            }
            let own = cpath(Path::new("/proc/thread-self/ns/net"))?;
            mount(Some(&own), &target, libc::MS_BIND)
                .with_context(|| format!("bind-mounting the new namespace on {target:?}"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace creation thread panicked"))?
    }

    fn mount(src: Option<&CString>, target: &CString, flags: libc::c_ulong) -> io::Result<()> {
        let none = c"none";
        let src = src.map_or(none.as_ptr(), |s| s.as_ptr());
        // SAFETY: all pointers are valid NUL-terminated strings or null data.
        let rc = unsafe { libc::mount(src, target.as_ptr(), none.as_ptr(), flags, std::ptr::null()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn cpath(p: &Path) -> Result<CString> {
        CString::new(p.as_os_str().as_bytes()).with_context(|| format!("path {} contains a NUL byte", p.display()))
    }
}

/// Reads and writes /proc/sys values, e.g. "net/ipv4/ip_forward". net.* values belong to the
/// network namespace of the calling thread.
pub mod sysctl {
    use std::path::PathBuf;

    use anyhow::{bail, Context, Result};

    fn path(key: &str) -> Result<PathBuf> {
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p == "..") {
            bail!("invalid sysctl key {key:?} (expected e.g. net/ipv4/ip_forward)");
        }
        Ok(PathBuf::from("/proc/sys").join(key))
    }

    pub fn read(key: &str) -> Result<String> {
        let p = path(key)?;
        let v = std::fs::read_to_string(&p).with_context(|| format!("reading sysctl {key}"))?;
        Ok(v.trim_end().to_string())
    }

    pub fn write(key: &str, value: &str) -> Result<()> {
        let p = path(key)?;
        std::fs::write(&p, value).with_context(|| format!("writing {value:?} to sysctl {key}"))
    }
}
