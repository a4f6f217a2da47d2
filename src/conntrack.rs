//! The kernel's conntrack table over ctnetlink (`NETLINK_NETFILTER`,
//! subsystem `NFNL_SUBSYS_CTNETLINK`), with plain libc sockets.
//!
//! Used to flush entries for a host port when it is (un)published, keyed by
//! the *original* tuple's destination port and protocol, and to count live
//! connections per published mapping.
//!
//! IPv4 and IPv6 entries alike. Dumps are full table dumps filtered in user
//! space; deletion sends one `IPCTNL_MSG_CT_DELETE` per entry.

use crate::nft::netlink::{
    self as nl, be16, find, Msg, MsgBuilder, NFGENMSG_LEN, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_MULTI, NLM_F_REQUEST,
};
use anyhow::{Context, Result};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// --- nfnetlink (linux/netfilter/nfnetlink.h) ---
const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;

// --- ctnetlink (linux/netfilter/nfnetlink_conntrack.h) ---
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_ZONE: u16 = 18;

// enum ctattr_protoinfo, ctattr_protoinfo_tcp
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// enum tcp_conntrack: TIME_WAIT and CLOSE mean the connection has ended.
const TCP_CONNTRACK_TIME_WAIT: u8 = 7;

// enum ctattr_tuple
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;

// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;

// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// Dump restarts allowed when the kernel reports an interrupted/busy dump.
const DUMP_ATTEMPTS: usize = 5;

/// Which entries to match: original-direction tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_SCTP`, ...
    pub proto: u8,
    /// Inclusive range of original destination (host) ports.
    pub dport_min: u16,
    pub dport_max: u16,
    /// Original destination address, if it must match.
    pub daddr: Option<IpAddr>,
    /// Only entries of this family (IPv6 when true, IPv4 when false).
    pub ipv6: bool,
}

impl Filter {
    /// True if `e`'s original tuple matches this filter.
    pub fn matches(&self, e: &Entry) -> bool {
        e.proto == self.proto
            && e.dst.is_ipv6() == self.ipv6
            && (self.dport_min..=self.dport_max).contains(&e.dport)
            && self.daddr.is_none_or(|a| a == e.dst)
    }
}

/// One conntrack entry (original tuple, and the reply tuple's source which
/// shows a DNAT target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub reply_src: IpAddr,
    pub reply_sport: u16,
    /// TCP only: the conntrack state (`enum tcp_conntrack`).
    pub tcp_state: Option<u8>,
}

impl Entry {
    /// Still carrying traffic: not a TCP connection that has ended (TIME_WAIT, CLOSE).
    pub fn is_open(&self) -> bool {
        self.tcp_state.is_none_or(|s| s < TCP_CONNTRACK_TIME_WAIT)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{} -> {}:{}", proto_name(self.proto), self.src, self.sport, self.dst, self.dport)
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => format!("proto {n}"),
    }
}

/// An entry as dumped, with the zone needed to address it for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dumped {
    entry: Entry,
    zone: Option<u16>,
}

/// Dumps the entries matching the filter.
///
/// Returns an empty list if conntrack is not available in the kernel.
pub fn list(filter: &Filter) -> Result<Vec<Entry>> {
    Ok(dump()?.into_iter().map(|d| d.entry).filter(|e| filter.matches(e)).collect())
}

/// Every entry, in one dump.
pub fn entries() -> Result<Vec<Entry>> {
    Ok(dump()?.into_iter().map(|d| d.entry).collect())
}

/// Reads several filters in one dump: counts per filter, same order.
pub fn count_many(filters: &[Filter]) -> Result<Vec<usize>> {
    let entries = dump()?;
    Ok(filters.iter().map(|f| entries.iter().filter(|d| f.matches(&d.entry)).count()).collect())
}

/// Deletes every entry matching the filter, one `IPCTNL_MSG_CT_DELETE` with
/// the original tuple each. An entry already gone is not an error.
/// Returns how many were deleted.
pub fn flush(filter: &Filter) -> Result<usize> {
    let victims: Vec<Dumped> = dump()?.into_iter().filter(|d| filter.matches(&d.entry)).collect();
    if victims.is_empty() {
        return Ok(0);
    }
    let sock = Socket::open().context("opening ctnetlink socket")?;
    let mut deleted = 0;
    for (i, d) in victims.iter().enumerate() {
        let seq = i as u32 + 1;
        let msg = delete_request(seq, &d.entry, d.zone);
        let res = sock.send(&msg).and_then(|()| sock.wait_ack(seq));
        match res {
            Ok(()) => deleted += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("deleting conntrack entry {}", d.entry)),
        }
    }
    Ok(deleted)
}

/// Full dump of IPv4 and IPv6 entries. Each attempt uses a fresh socket, so an
/// aborted dump leaves nothing stale behind; interrupted or busy dumps are
/// retried a few times.
fn dump() -> Result<Vec<Dumped>> {
    let mut last_err = None;
    for _ in 0..DUMP_ATTEMPTS {
        match Socket::open().and_then(|s| s.dump_once(1)) {
            Ok(DumpResult::Done(v)) => return Ok(v),
            Ok(DumpResult::Interrupted) => last_err = Some(io::Error::other("dump interrupted (NLM_F_DUMP_INTR)")),
            Err(e) if unavailable(&e) => return Ok(Vec::new()),
            Err(e) if retryable(&e) => last_err = Some(e),
            Err(e) => return Err(e).context("dumping conntrack table"),
        }
    }
    let e = last_err.expect("at least one attempt");
    Err(e).context(format!("dumping conntrack table (gave up after {DUMP_ATTEMPTS} attempts)"))
}

/// Conntrack (or nfnetlink) is not in the kernel: treat as an empty table.
fn unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT))
}

/// Transient dump failures worth restarting for. ENOBUFS: our receive
/// buffer overflowed and messages were lost.
fn retryable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::ENOBUFS))
}

enum DumpResult {
    Done(Vec<Dumped>),
    /// `NLM_F_DUMP_INTR` seen: the table changed under the dump.
    Interrupted,
}

struct Socket {
    fd: OwnedFd,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain syscalls on values we own; fd ownership moves to OwnedFd.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let sock = Socket { fd: OwnedFd::from_raw_fd(fd) };
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            if libc::bind(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // Big tables: a larger buffer makes ENOBUFS unlikely. Best effort.
            let rcvbuf: libc::c_int = 4 << 20;
            for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
                let r = libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    &rcvbuf as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                if r == 0 {
                    break;
                }
            }
            // Never hang on a kernel that does not answer.
            let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(sock)
        }
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg and addr are valid for the duration of the call.
        let n = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram (possibly several netlink messages).
    fn recv<'a>(&self, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
        loop {
            // SAFETY: buf is valid and writable for buf.len() bytes.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_TRUNC)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from kernel"));
                }
                return Err(e);
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(io::Error::other("netlink message truncated"));
            }
            return Ok(&buf[..n]);
        }
    }

    fn dump_once(&self, seq: u32) -> io::Result<DumpResult> {
        self.send(&dump_request(seq))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let data = self.recv(&mut buf)?;
            for msg in messages(data)? {
                if msg.seq != seq {
                    continue; // stale answer to an earlier request
                }
                if msg.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.kind {
                    NLMSG_DONE => {
                        return Ok(if interrupted { DumpResult::Interrupted } else { DumpResult::Done(out) });
                    }
                    NLMSG_ERROR => {
                        let errno = error_code(msg.payload)?;
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(errno));
                        }
                        if msg.flags & NLM_F_MULTI == 0 {
                            // Plain ack: nothing more will follow.
                            return Ok(DumpResult::Done(out));
                        }
                    }
                    t if t == ct_type(IPCTNL_MSG_CT_NEW) || t == ct_type(IPCTNL_MSG_CT_GET) => {
                        if let Some(d) = parse_ct(msg.payload) {
                            out.push(d);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Waits for the ack (`NLMSG_ERROR` with error 0) of request `seq`.
    fn wait_ack(&self, seq: u32) -> io::Result<()> {
        let mut buf = vec![0u8; 8192];
        loop {
            let data = self.recv(&mut buf)?;
            for msg in messages(data)? {
                if msg.seq == seq && msg.kind == NLMSG_ERROR {
                    return match error_code(msg.payload)? {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pure encoding and parsing.

fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// The messages of one datagram; one that does not fit is an error.
fn messages(data: &[u8]) -> io::Result<Vec<Msg<'_>>> {
    nl::messages(data).collect::<Result<_, _>>().map_err(io::Error::other)
}

/// The positive errno of an `NLMSG_ERROR` payload (0 for an ack).
fn error_code(payload: &[u8]) -> io::Result<i32> {
    nl::error_code(payload).ok_or_else(|| io::Error::other("short NLMSG_ERROR message"))
}

/// A ctnetlink message: the netlink header, then nfgenmsg for `family`.
fn builder(kind: u16, flags: u16, seq: u32, family: u8) -> MsgBuilder {
    MsgBuilder::new(kind, flags, seq, &[family, NFNETLINK_V0, 0, 0])
}

fn ipv4(v: &[u8]) -> Option<IpAddr> {
    let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(b)))
}

fn ipv6(v: &[u8]) -> Option<IpAddr> {
    let b: [u8; 16] = v.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

/// A parsed tuple: proto, src, dst, sport, dport. Ports are 0 for protocols
/// without them.
fn parse_tuple(t: &[u8]) -> Option<(u8, IpAddr, IpAddr, u16, u16)> {
    let ip = find(t, CTA_TUPLE_IP)?;
    let (src, dst) = match find(ip, CTA_IP_V4_SRC) {
        Some(s) => (ipv4(s)?, ipv4(find(ip, CTA_IP_V4_DST)?)?),
        None => (ipv6(find(ip, CTA_IP_V6_SRC)?)?, ipv6(find(ip, CTA_IP_V6_DST)?)?),
    };
    let p = find(t, CTA_TUPLE_PROTO)?;
    let proto = *find(p, CTA_PROTO_NUM)?.first()?;
    let sport = find(p, CTA_PROTO_SRC_PORT).and_then(be16).unwrap_or(0);
    let dport = find(p, CTA_PROTO_DST_PORT).and_then(be16).unwrap_or(0);
    Some((proto, src, dst, sport, dport))
}

/// Parses a ctnetlink message payload (nfgenmsg + attributes). None for
/// other families or incomplete entries.
fn parse_ct(payload: &[u8]) -> Option<Dumped> {
    if payload.len() < NFGENMSG_LEN || (payload[0] != AF_INET && payload[0] != AF_INET6) {
        return None;
    }
    let body = &payload[NFGENMSG_LEN..];
    let (proto, src, dst, sport, dport) = parse_tuple(find(body, CTA_TUPLE_ORIG)?)?;
    let (_, reply_src, _, reply_sport, _) = parse_tuple(find(body, CTA_TUPLE_REPLY)?)?;
    let zone = find(body, CTA_ZONE).and_then(be16);
    let tcp_state = find(body, CTA_PROTOINFO)
        .and_then(|p| find(p, CTA_PROTOINFO_TCP))
        .and_then(|t| find(t, CTA_PROTOINFO_TCP_STATE))
        .and_then(|s| s.first().copied());
    Some(Dumped { entry: Entry { proto, src, dst, sport, dport, reply_src, reply_sport, tcp_state }, zone })
}

/// AF_UNSPEC: the entries of every family.
fn dump_request(seq: u32) -> Vec<u8> {
    builder(ct_type(IPCTNL_MSG_CT_GET), NLM_F_REQUEST | NLM_F_DUMP, seq, libc::AF_UNSPEC as u8).finish()
}

fn delete_request(seq: u32, e: &Entry, zone: Option<u16>) -> Vec<u8> {
    let (family, src_attr, dst_attr, src, dst) = match (e.src, e.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            (AF_INET, CTA_IP_V4_SRC, CTA_IP_V4_DST, s.octets().to_vec(), d.octets().to_vec())
        }
        (s, d) => (AF_INET6, CTA_IP_V6_SRC, CTA_IP_V6_DST, v6_octets(s), v6_octets(d)),
    };
    let mut b = builder(ct_type(IPCTNL_MSG_CT_DELETE), NLM_F_REQUEST | NLM_F_ACK, seq, family);
    b.begin(CTA_TUPLE_ORIG)
        .begin(CTA_TUPLE_IP)
        .attr(src_attr, &src)
        .attr(dst_attr, &dst)
        .end()
        .begin(CTA_TUPLE_PROTO)
        .attr(CTA_PROTO_NUM, &[e.proto]);
    if e.sport != 0 || e.dport != 0 {
        b.attr(CTA_PROTO_SRC_PORT, &e.sport.to_be_bytes()).attr(CTA_PROTO_DST_PORT, &e.dport.to_be_bytes());
    }
    b.end().end();
    if let Some(z) = zone {
        b.attr(CTA_ZONE, &z.to_be_bytes());
    }
    b.finish()
}

fn v6_octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V6(a) => a.octets().to_vec(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::netlink::{NLA_F_NESTED, NLMSG_HDRLEN};

    /// A hand-written IPCTNL_MSG_CT_NEW dump message: udp
    /// 10.0.0.1:40000 -> 192.168.1.5:8080, DNATed to 172.17.0.2:80.
    /// Native-endian lengths/types (little-endian test host assumed).
    #[rustfmt::skip]
    fn sample_msg() -> Vec<u8> {
        let mut m = vec![
            0, 0, 0, 0,             // nlmsg_len (patched below)
            0x00, 0x01,             // type: CTNETLINK << 8 | CT_NEW
            0x02, 0x00,             // flags: NLM_F_MULTI
            7, 0, 0, 0,             // seq 7
            0, 0, 0, 0,             // pid
            2, 0, 0, 0,             // nfgenmsg: AF_INET, v0, res_id
            // CTA_TUPLE_ORIG (nested)
            52, 0, 0x01, 0x80,
              20, 0, 0x01, 0x80,    // CTA_TUPLE_IP
                8, 0, 1, 0, 10, 0, 0, 1,       // V4_SRC
                8, 0, 2, 0, 192, 168, 1, 5,    // V4_DST
              28, 0, 0x02, 0x80,    // CTA_TUPLE_PROTO
                5, 0, 1, 0, 17, 0, 0, 0,       // PROTO_NUM udp (+pad)
                6, 0, 2, 0, 0x9c, 0x40, 0, 0,  // SRC_PORT 40000
                6, 0, 3, 0, 0x1f, 0x90, 0, 0,  // DST_PORT 8080
            // CTA_STATUS (ignored)
            8, 0, 3, 0, 0, 0, 0, 0x0e,
            // CTA_TUPLE_REPLY (nested)
            52, 0, 0x02, 0x80,
              20, 0, 0x01, 0x80,
                8, 0, 1, 0, 172, 17, 0, 2,
                8, 0, 2, 0, 10, 0, 0, 1,
              28, 0, 0x02, 0x80,
                5, 0, 1, 0, 17, 0, 0, 0,
                6, 0, 2, 0, 0, 80, 0, 0,
                6, 0, 3, 0, 0x9c, 0x40, 0, 0,
        ];
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    fn sample_entry() -> Entry {
        Entry {
            proto: 17,
            src: Ipv4Addr::new(10, 0, 0, 1).into(),
            dst: Ipv4Addr::new(192, 168, 1, 5).into(),
            sport: 40000,
            dport: 8080,
            reply_src: Ipv4Addr::new(172, 17, 0, 2).into(),
            reply_sport: 80,
            tcp_state: None,
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_hand_made_message() {
        let buf = sample_msg();
        let msgs = messages(&buf).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].kind, ct_type(IPCTNL_MSG_CT_NEW));
        assert_eq!(msgs[0].flags, NLM_F_MULTI);
        assert_eq!(msgs[0].seq, 7);
        let d = parse_ct(msgs[0].payload).unwrap();
        assert_eq!(d.entry, sample_entry());
        assert_eq!(d.zone, None);
        assert_eq!(d.entry.to_string(), "udp 10.0.0.1:40000 -> 192.168.1.5:8080");
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn splits_multipart_datagram_with_done() {
        let mut buf = sample_msg();
        buf.extend(sample_msg());
        // NLMSG_DONE with error 0.
        buf.extend([20, 0, 0, 0, 3, 0, 2, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let msgs = messages(&buf).unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[2].kind, NLMSG_DONE);
        assert!(parse_ct(msgs[1].payload).is_some());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_nlmsg_error() {
        // NLMSG_ERROR, error -ENOENT (-2), followed by the echoed header.
        let mut buf = vec![36, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        buf.extend((-2i32).to_ne_bytes());
        buf.extend([0u8; 16]);
        let msgs = messages(&buf).unwrap();
        assert_eq!(msgs[0].kind, NLMSG_ERROR);
        assert_eq!(error_code(msgs[0].payload).unwrap(), libc::ENOENT);
        assert!(error_code(&[1, 2]).is_err());
    }

    #[test]
    fn rejects_malformed() {
        // Length beyond the buffer.
        let buf = [200, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(messages(&buf).is_err());
        // Truncated attribute inside a payload: parse gives None, no panic.
        let payload = [2, 0, 0, 0, 52, 0, 1, 0x80, 20, 0];
        assert_eq!(parse_ct(&payload), None);
        // Another family is skipped.
        let mut other = sample_msg()[NLMSG_HDRLEN..].to_vec();
        other[0] = libc::AF_BRIDGE as u8;
        assert_eq!(parse_ct(&other), None);
    }

    #[test]
    fn delete_request_round_trips() {
        let e = sample_entry();
        let buf = delete_request(3, &e, Some(5));
        let msgs = messages(&buf).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].kind, ct_type(IPCTNL_MSG_CT_DELETE));
        assert_eq!(msgs[0].flags, NLM_F_REQUEST | NLM_F_ACK);
        let body = &msgs[0].payload[NFGENMSG_LEN..];
        let orig = find(body, CTA_TUPLE_ORIG).unwrap();
        assert_eq!(parse_tuple(orig), Some((17, e.src, e.dst, e.sport, e.dport)));
        assert_eq!(find(body, CTA_ZONE).and_then(be16), Some(5));
        // Raw nested flag is set on the wire.
        let raw_type = u16::from_ne_bytes([body[2], body[3]]);
        assert_eq!(raw_type, CTA_TUPLE_ORIG | NLA_F_NESTED);
        assert_eq!(find(body, CTA_TUPLE_REPLY), None);
    }

    #[test]
    fn dump_request_shape() {
        let buf = dump_request(1);
        assert_eq!(buf.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        let m = &messages(&buf).unwrap()[0];
        assert_eq!(m.kind, 0x0101);
        assert_eq!(m.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(m.payload, &[0, 0, 0, 0]);
    }

    #[test]
    fn ipv6_delete_request_round_trips() {
        let e = Entry {
            proto: 17,
            src: "2001:db8:1::3".parse().unwrap(),
            dst: "2001:db8:1::1".parse().unwrap(),
            sport: 40000,
            dport: 8080,
            reply_src: "fd00:16::2".parse().unwrap(),
            reply_sport: 80,
            tcp_state: None,
        };
        let buf = delete_request(3, &e, None);
        let m = &messages(&buf).unwrap()[0];
        assert_eq!(m.payload[0], AF_INET6);
        let orig = find(&m.payload[NFGENMSG_LEN..], CTA_TUPLE_ORIG).unwrap();
        assert_eq!(parse_tuple(orig), Some((17, e.src, e.dst, e.sport, e.dport)));
    }

    #[test]
    fn filter_matching() {
        let e = sample_entry();
        let f = |proto, lo, hi, daddr| Filter { proto, dport_min: lo, dport_max: hi, daddr, ipv6: false };
        assert!(f(17, 8080, 8080, None).matches(&e));
        assert!(f(17, 8000, 9000, Some(e.dst)).matches(&e));
        assert!(!f(6, 8080, 8080, None).matches(&e));
        assert!(!f(17, 8081, 9000, None).matches(&e));
        // The container port (reply source) is not what is matched.
        assert!(!f(17, 80, 80, None).matches(&e));
        assert!(!f(17, 8080, 8080, Some(Ipv4Addr::LOCALHOST.into())).matches(&e));
        assert!(!Filter { ipv6: true, ..f(17, 8080, 8080, None) }.matches(&e));
    }
}
