//! nftables over netlink: the only module that imports `nftnl`, `mnl` and `nftnl-sys`.
//!
//! It knows tables, chains, rules, sets and elements, never containers or state files.
//! A change is a list of `NftOp`s (`spec`, planned elsewhere: `crate::ruleset`), sent as ONE batch:
//! the kernel applies all of it or none of it.

pub mod expr;
pub mod family;
pub mod foreign;
pub mod hook;
pub mod monitor;
pub mod netlink;
mod raw;
pub mod spec;
pub mod trace;

use anyhow::{anyhow, bail, Context, Result};
use expr::Expr;
use netlink::{error_code, messages, RecvBuf, NLMSG_DONE, NLMSG_ERROR};
use nftnl::{Batch, Chain, MsgType, ProtoFamily, Rule, Table};
use raw::{DumpKind, ElemData, ElemsMsg, SetDesc, SetMsg};
use spec::{ChainKind, ChainSpec, Hook, NftOp, SetSpec, TABLE};
use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::RawFd;

/// A base chain's hook, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: u32,
    pub priority: i32,
    pub kind: String,
    pub policy: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChain {
    pub table: String,
    pub family: u32,
    pub name: String,
    pub base: Option<BaseChain>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRule {
    pub table: String,
    pub family: u32,
    pub chain: String,
    pub handle: u64,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSet {
    pub table: String,
    pub family: u32,
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    pub data: Option<(u32, u32)>,
    pub counter: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveElem {
    pub key: Vec<u8>,
    pub data: Vec<u8>,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

/// Everything in one table, as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    pub chains: Vec<LiveChain>,
    pub rules: Vec<LiveRule>,
    pub sets: Vec<LiveSet>,
    /// Elements per set name.
    pub elems: std::collections::BTreeMap<String, Vec<LiveElem>>,
}

/// A netfilter netlink socket in the current network namespace.
pub struct Nft {
    sock: mnl::Socket,
    seq: u32,
}

const FAMILY: ProtoFamily = ProtoFamily::Inet;
/// Elements per NEWSETELEM message: keeps each message well below the 64 KiB attribute limit.
const ELEMS_PER_MSG: usize = 512;

impl Nft {
    pub fn open() -> Result<Nft> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                anyhow!("opening the nftables netlink socket: permission denied (netnat needs CAP_NET_ADMIN: run it as root)")
            } else {
                anyhow!(e).context("opening the nftables netlink socket")
            }
        })?;
        Ok(Nft { sock, seq: std::process::id().wrapping_shl(8) })
    }

    fn fd(&self) -> RawFd {
        // SAFETY: the socket pointer is the live mnl socket `self.sock` owns; the call only reads
        // its descriptor.
        unsafe { mnl_sys::mnl_socket_get_fd(self.sock.as_raw_socket()) }
    }

    /// Sends `ops` as one transaction. An empty list sends nothing.
    pub fn apply(&mut self, ops: &[NftOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let table = Table::new(c_name(TABLE), FAMILY);
        let mut batch = Batch::new();
        // The operation of each message, to name what failed; rendered only then (rendering
        // every one of 10,000 elements up front cost a large share of an apply's user time).
        let mut what: Vec<usize> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let n =
                write_op(&mut batch, &table, op).with_context(|| format!("building the nftables message for: {op}"))?;
            what.extend(std::iter::repeat_n(i, n));
        }
        let batch = batch.finalize();
        let seqs = batch.sequence_numbers();
        let pages: Vec<&[u8]> = batch.iter().collect();
        self.sendmsg(&pages).context("sending the nftables transaction")?;
        self.read_acks(seqs.start, seqs.end, &|idx| what.get(idx).map(|i| ops[*i].to_string()))
    }

    /// All pages in ONE sendmsg: the kernel must see the whole batch at once, or a batch larger
    /// than the socket buffer fails half-read (ENOBUFS) and nothing is committed.
    fn sendmsg(&self, pages: &[&[u8]]) -> Result<()> {
        let total: usize = pages.iter().map(|p| p.len()).sum();
        let size = libc::c_int::try_from(total).unwrap_or(libc::c_int::MAX).max(1 << 20);
        // FORCE variants need CAP_NET_ADMIN, which netnat has whenever it gets this far; the
        // plain ones (capped by wmem_max/rmem_max) are the fallback.
        set_buffer(self.fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, size).context("sizing the send buffer")?;
        set_buffer(self.fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, size).context("sizing the receive buffer")?;
        let mut iov: Vec<libc::iovec> =
            pages.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() }).collect();
        // SAFETY: sockaddr_nl is plain integers; all zero is a valid value (the kernel's port).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msghdr is plain integers and pointers; all zero (null pointers, zero lengths)
        // is a valid value, filled in below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: `msg` points at `addr` and at `iov`, whose entries point at the pages; all of
        // them are alive and unchanged during the call, which only reads them.
        let n = unsafe { libc::sendmsg(self.fd(), &msg, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if n as usize != total {
            bail!("the kernel took {n} of {total} bytes");
        }
        Ok(())
    }

    /// Reads one answer per message of the batch; the first error names the operation.
    fn read_acks(&mut self, first: u32, end: u32, what: &dyn Fn(usize) -> Option<String>) -> Result<()> {
        // Every message between batch begin and end asked for an ACK. Begin/end themselves are
        // acknowledged only by newer kernels (nftnl decides by kernel version), so they are
        // not waited for; an error on them still fails the transaction.
        let mut pending: HashSet<u32> = (first + 1..end - 1).collect();
        let mut first_error: Option<anyhow::Error> = None;
        let mut buf = RecvBuf::new(1 << 18);
        while !pending.is_empty() {
            if !self.wait_readable(5000)? {
                bail!("the kernel did not answer the nftables transaction within 5 s");
            }
            let n = self.recv(&mut buf)?;
            for msg in messages(buf.filled(n)) {
                let hdr = msg.context("reading the kernel's answer to the nftables transaction")?;
                pending.remove(&hdr.seq);
                if hdr.kind == NLMSG_ERROR {
                    let errno = error_code(hdr.payload).unwrap_or(libc::EPROTO);
                    if errno != 0 && hdr.seq == first {
                        let err = std::io::Error::from_raw_os_error(errno);
                        return Err(anyhow!(err).context("the kernel refused the nftables transaction"));
                    }
                    if errno != 0 && first_error.is_none() {
                        let idx = hdr.seq.wrapping_sub(first + 1) as usize;
                        let op = what(idx).unwrap_or_else(|| "the transaction".into());
                        let err = std::io::Error::from_raw_os_error(errno);
                        first_error = Some(anyhow!(err).context(format!("nftables refused: {op}")));
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e.context("the nftables transaction was rolled back: nothing changed")),
            None => Ok(()),
        }
    }

    fn wait_readable(&self, ms: i32) -> Result<bool> {
        let mut p = libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: `p` is one valid pollfd, alive during the call.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r >= 0 {
                return Ok(r > 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("waiting for the kernel's answer");
            }
        }
    }

    fn recv(&self, buf: &mut RecvBuf) -> Result<usize> {
        self.sock.recv_raw(buf.as_mut_bytes()).context("reading from the nftables netlink socket")
    }

    /// Runs one dump; calls `each` with every reply message's bytes. Ok(false) when the object
    /// asked for does not exist (ENOENT).
    fn dump(
        &mut self,
        kind: DumpKind,
        table: Option<&str>,
        set: Option<&str>,
        each: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let t = table.map(c_name);
        let req = raw::dump_request(kind, self.seq, t.as_deref(), set)?;
        self.sock.send(&req).context("sending an nftables dump request")?;
        let mut buf = RecvBuf::new(1 << 18);
        loop {
            let n = self.recv(&mut buf)?;
            for msg in messages(buf.filled(n)) {
                let hdr = msg.context("reading an nftables dump")?;
                if hdr.seq != self.seq {
                    continue;
                }
                match hdr.kind {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR => match error_code(hdr.payload).unwrap_or(libc::EPROTO) {
                        0 => return Ok(true),
                        libc::ENOENT => return Ok(false),
                        e => return Err(std::io::Error::from_raw_os_error(e).into()),
                    },
                    _ => each(hdr.whole)?,
                }
            }
        }
    }

    /// Reads one table (chains, rules, sets, elements), or None if it does not exist.
    pub fn read_table(&mut self, name: &str) -> Result<Option<LiveTable>> {
        self.read_table_with(name, true)
    }

    /// Reads one table's chains, rules and sets but no elements: what a change of a few elements
    /// needs to know, at a cost that does not grow with the number of elements.
    pub fn read_layout(&mut self, name: &str) -> Result<Option<LiveTable>> {
        self.read_table_with(name, false)
    }

    fn read_table_with(&mut self, name: &str, elements: bool) -> Result<Option<LiveTable>> {
        let mut t = LiveTable::default();
        let found = self
            .dump(DumpKind::Chains, Some(name), None, &mut |m| {
                t.chains.push(raw::parse_chain(m)?);
                Ok(())
            })
            .with_context(|| format!("reading the chains of table {name}"))?;
        if !found {
            return Ok(None);
        }
        // A dump filtered by table name still returns that name in every family.
        t.chains.retain(|c| c.table == name && c.family == FAMILY as u32);
        self.dump(DumpKind::Rules, Some(name), None, &mut |m| {
            t.rules.push(raw::parse_rule(m)?);
            Ok(())
        })
        .with_context(|| format!("reading the rules of table {name}"))?;
        t.rules.retain(|r| r.table == name && r.family == FAMILY as u32);
        self.dump(DumpKind::Sets, Some(name), None, &mut |m| {
            t.sets.push(raw::parse_set(m)?);
            Ok(())
        })
        .with_context(|| format!("reading the sets of table {name}"))?;
        t.sets.retain(|s| s.table == name && s.family == FAMILY as u32);
        for s in t.sets.clone().into_iter().filter(|_| elements) {
            let mut elems = Vec::new();
            self.dump(DumpKind::Elems, Some(name), Some(&s.name), &mut |m| raw::parse_elems(m, &mut elems))
                .with_context(|| format!("reading the elements of set {} in table {name}", s.name))?;
            t.elems.insert(s.name.clone(), elems);
        }
        if t.chains.is_empty() && t.sets.is_empty() && !self.table_exists(name)? {
            return Ok(None);
        }
        Ok(Some(t))
    }

    /// Reads the chains and rules of every table (all families), for audits.
    pub fn read_all(&mut self) -> Result<(Vec<LiveChain>, Vec<LiveRule>)> {
        Ok((self.read_chains()?, self.read_rules()?))
    }

    /// The rules of every table.
    pub fn read_rules(&mut self) -> Result<Vec<LiveRule>> {
        let mut rules = vec![];
        self.dump(DumpKind::Rules, None, None, &mut |m| {
            rules.push(raw::parse_rule(m)?);
            Ok(())
        })
        .context("reading every nftables rule")?;
        Ok(rules)
    }

    /// The chains of every table.
    pub fn read_chains(&mut self) -> Result<Vec<LiveChain>> {
        let mut chains = vec![];
        self.dump(DumpKind::Chains, None, None, &mut |m| {
            chains.push(raw::parse_chain(m)?);
            Ok(())
        })
        .context("reading every nftables chain")?;
        Ok(chains)
    }

    fn table_exists(&mut self, name: &str) -> Result<bool> {
        let mut seen = false;
        self.dump(DumpKind::Sets, Some(name), None, &mut |_| {
            seen = true;
            Ok(())
        })
        .map(|found| found || seen)
    }
}

fn c_name(s: &str) -> CString {
    CString::new(s).expect("nftables object names never contain NUL")
}

/// Adds one operation to the batch; returns how many netlink messages it took.
fn write_op(batch: &mut Batch, table: &Table, op: &NftOp) -> Result<usize> {
    match op {
        NftOp::AddTable => batch.add(table, MsgType::Add),
        NftOp::DelTable => batch.add(table, MsgType::Del),
        NftOp::AddChain(spec) => batch.add(&build_chain(table, spec), MsgType::Add),
        NftOp::DelChain(name) => batch.add(&Chain::new(c_name(name), table), MsgType::Del),
        NftOp::FlushChain(name) => {
            // A DELRULE naming only the chain deletes every rule in it.
            let chain = Chain::new(c_name(name), table);
            let rule = Rule::new(&chain);
            batch.add(&rule, MsgType::Del)
        }
        NftOp::AddRule(spec) => {
            let chain = Chain::new(c_name(spec.chain), table);
            let mut rule = Rule::new(&chain);
            for e in &spec.exprs {
                raw::add_expr(&mut rule, e)?;
            }
            rule.set_comment(c_name(&spec.comment)).map_err(|e| anyhow!("rule comment {:?}: {e}", spec.comment))?;
            batch.add(&rule, MsgType::Add)
        }
        NftOp::AddSet(spec) => batch.add(&build_set(spec)?, MsgType::Add),
        NftOp::DelSet(name) => batch.add(&SetMsg::named(&c_name(TABLE), FAMILY as u16, name)?, MsgType::Del),
        NftOp::AddElems { set, elems } => {
            for chunk in elems.chunks(ELEMS_PER_MSG) {
                // Plain sets have elements without data.
                let e: Vec<_> = chunk
                    .iter()
                    .map(|(k, d)| (k.as_slice(), if d.is_empty() { ElemData::None } else { ElemData::Data(d) }))
                    .collect();
                batch.add(&ElemsMsg::new(&c_name(TABLE), FAMILY as u16, set, &e)?, MsgType::Add);
            }
            return Ok(elems.len().div_ceil(ELEMS_PER_MSG));
        }
        NftOp::DelElems { set, keys } => {
            for chunk in keys.chunks(ELEMS_PER_MSG) {
                let e: Vec<_> = chunk.iter().map(|k| (k.as_slice(), ElemData::None)).collect();
                batch.add(&ElemsMsg::new(&c_name(TABLE), FAMILY as u16, set, &e)?, MsgType::Del);
            }
            return Ok(keys.len().div_ceil(ELEMS_PER_MSG));
        }
        NftOp::AddRanges { set, ranges } | NftOp::DelRanges { set, ranges } => {
            let kind = if matches!(op, NftOp::AddRanges { .. }) { MsgType::Add } else { MsgType::Del };
            for chunk in ranges.chunks(ELEMS_PER_MSG) {
                let e: Vec<_> = chunk.iter().map(|(k, end)| (k.as_slice(), ElemData::KeyEnd(end))).collect();
                batch.add(&ElemsMsg::new(&c_name(TABLE), FAMILY as u16, set, &e)?, kind);
            }
            return Ok(ranges.len().div_ceil(ELEMS_PER_MSG));
        }
        NftOp::FlushSet(set) => batch.add(&ElemsMsg::new(&c_name(TABLE), FAMILY as u16, set, &[])?, MsgType::Del),
    }
    Ok(1)
}

fn build_chain<'a>(table: &'a Table, spec: &ChainSpec) -> Chain<'a> {
    let mut c = Chain::new(c_name(spec.name), table);
    let Some(base) = &spec.base else {
        return c; // a regular chain: no hook, reached by jumps
    };
    let hook = match base.hook {
        Hook::Prerouting => nftnl::Hook::PreRouting,
        Hook::Input => nftnl::Hook::In,
        Hook::Forward => nftnl::Hook::Forward,
        Hook::Output => nftnl::Hook::Out,
        Hook::Postrouting => nftnl::Hook::PostRouting,
    };
    c.set_hook(hook, base.priority);
    c.set_type(match base.kind {
        ChainKind::Filter => nftnl::ChainType::Filter,
        ChainKind::Nat => nftnl::ChainType::Nat,
    });
    c.set_policy(nftnl::Policy::Accept);
    c
}

fn build_set(spec: &SetSpec) -> Result<SetMsg> {
    let desc = SetDesc {
        name: spec.name,
        // Unique within the batch; the kernel uses it only to find a set added in the same batch
        // by id, and netnat refers to its sets by name, so any stable number per name will do.
        id: spec.name.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193)),
        key_type: spec.key_type(),
        key_len: spec.key_len(),
        data: spec.data_desc(),
        counter: spec.counter,
        concat: spec.concat_field_lens(),
    };
    SetMsg::new(&c_name(TABLE), FAMILY as u16, &desc)
}

/// Sets a socket buffer's size: `force` (beyond the system's maximum, with CAP_NET_ADMIN), else
/// `plain` (up to it).
fn set_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, size: libc::c_int) -> std::io::Result<()> {
    let set = |opt| {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `size` is a c_int alive during the call and `len` its size; the kernel only
        // reads it.
        let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&size as *const libc::c_int).cast(), len) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(force).or_else(|_| set(plain))
}
