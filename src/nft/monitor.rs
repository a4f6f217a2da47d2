//! Listening to nf_tables trace events: a netlink socket subscribed to nfnetlink's
//! NFNLGRP_NFTRACE group in the current network namespace. The events are decoded by
//! `super::trace` (plain bytes; nothing here calls libnftnl).

use super::netlink::{messages, RecvBuf};
use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What one wait for events gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Messages were handed over (possibly none, when the wait timed out).
    Messages(usize),
    /// The socket's buffer overflowed: the kernel dropped events since the last read.
    Overrun,
    /// A signal interrupted the wait.
    Interrupted,
}

/// A socket that receives every trace event of this network namespace.
pub struct TraceListener {
    fd: OwnedFd,
    buf: RecvBuf,
}

/// Receive buffer: trace events are a few hundred bytes each and come in bursts per packet.
const RCVBUF: libc::c_int = 8 << 20;

impl TraceListener {
    /// Opens the socket and joins the trace group; events sent from then on are queued for it.
    pub fn open() -> Result<TraceListener> {
        // SAFETY: plain syscall with constant arguments; the result is checked below.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a netfilter netlink socket for trace events");
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid (the kernel picks the port id).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes, alive during the call.
        if unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_nl).cast(), len) } < 0 {
            return Err(std::io::Error::last_os_error()).context("binding the trace event socket");
        }
        let group = libc::NFNLGRP_NFTRACE;
        setsockopt(&fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group)
            .context("joining nfnetlink's trace group (NFNLGRP_NFTRACE): netnat needs CAP_NET_ADMIN")?;
        // FORCE: beyond rmem_max, which CAP_NET_ADMIN allows; a smaller buffer only loses
        // events sooner (reported as an overrun).
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF);
        }
        Ok(TraceListener { fd, buf: RecvBuf::new(1 << 17) })
    }

    /// Waits up to `ms` milliseconds for events and hands each whole netlink message to `each`.
    pub fn receive(&mut self, ms: i32, each: &mut dyn FnMut(&[u8])) -> Result<Received> {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `p` is one valid pollfd, alive during the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Received::Interrupted);
            }
            return Err(e).context("waiting for trace events");
        }
        let mut count = 0;
        // At most this many reads per call, so a flood of events still lets the caller check
        // its limits between calls.
        for _ in 0..256 {
            let buf = self.buf.as_mut_bytes();
            // SAFETY: `buf` is `buf.len()` bytes of writable memory this listener owns, borrowed
            // mutably for the call.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(Received::Messages(count)),
                    Some(libc::ENOBUFS) => Ok(Received::Overrun),
                    Some(libc::EINTR) => Ok(Received::Interrupted),
                    _ => Err(e).context("reading trace events"),
                };
            }
            // A message that does not fit ends the datagram (the kernel never sends one).
            for msg in messages(self.buf.filled(n as usize)).map_while(Result::ok) {
                each(msg.whole);
                count += 1;
            }
        }
        Ok(Received::Messages(count))
    }
}

fn setsockopt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: `value` is a c_int alive during the call, `len` its size.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&value as *const libc::c_int).cast(), len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
