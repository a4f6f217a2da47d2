//! A hand-made TCP SYN on the wire (AF_PACKET), to send what no socket API would: a packet for
//! a loopback address (127.0.0.1, ::1) addressed to another host's MAC. Either family.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The MAC address in `ip -o link show` output (sysfs shows the machine's namespace here).
pub fn mac_of(cmd: &str) -> String {
    let out = super::sh(cmd);
    out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).expect("a link/ether address").to_string()
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The IP header and the TCP pseudo-header for a 20-byte TCP segment from `src` to `dst`.
fn headers(src: IpAddr, dst: IpAddr) -> (Vec<u8>, Vec<u8>, u16) {
    let (s, d) = (octets(src), octets(dst));
    if src.is_ipv6() {
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend(20u16.to_be_bytes());
        ip.extend([6, 64]); // next header TCP, hop limit
        ip.extend(&s);
        ip.extend(&d);
        let pseudo = [&s[..], &d[..], &20u32.to_be_bytes()[..], &[0, 0, 0, 6]].concat();
        (ip, pseudo, 0x86dd)
    } else {
        let mut ip = vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
        ip.extend(&s);
        ip.extend(&d);
        let c = csum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let pseudo = [&s[..], &d[..], &[0, 6], &20u16.to_be_bytes()[..]].concat();
        (ip, pseudo, 0x0800)
    }
}

/// Sends one SYN from `netns`'s eth0 (`src`:45678) to `dst:port` at `dst_mac`; true when a
/// SYN-ACK from that port comes back within 1.5 s.
pub fn syn_gets_synack(netns: &Path, dst_mac: &str, src: &str, dst: &str, port: u16) -> bool {
    let (netns, dst_mac) = (netns.to_path_buf(), mac(dst_mac));
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).unwrap();
        // SAFETY (here and below): plain syscalls on fds and buffers this thread owns.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let src_mac = mac(&mac_of("ip -o link show eth0"));
        let (ip, mut pseudo, ethertype) = headers(src, dst);
        let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
        let proto = ethertype.to_be();
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        let sll_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        assert_eq!(unsafe { libc::bind(fd.as_raw_fd(), &sll as *const _ as *const libc::sockaddr, sll_len) }, 0);

        let sport: u16 = 45678;
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&port.to_be_bytes());
        tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x02; // SYN
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        pseudo.extend(&tcp);
        let c = csum(&pseudo);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let frame = [&dst_mac[..], &src_mac[..], &ethertype.to_be_bytes()[..], &ip, &tcp].concat();
        let mut to = sll;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst_mac);
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                sll_len,
            )
        };
        assert_eq!(n as usize, frame.len(), "sendto: {}", std::io::Error::last_os_error());

        let end = Instant::now() + Duration::from_millis(1500);
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        let tv_len = std::mem::size_of::<libc::timeval>() as u32;
        unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const _, tv_len)
        };
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 14 + 20 + 20 {
                continue;
            }
            let ip = &buf[14..n as usize];
            // (transport protocol, header length) of IPv4 or IPv6.
            let (l4, hlen) = if ip[0] >> 4 == 6 { (ip[6], 40) } else { (ip[9], ((ip[0] & 0x0f) as usize) * 4) };
            let Some(t) = ip.get(hlen..hlen + 14) else { continue };
            let from_port = u16::from_be_bytes([t[0], t[1]]);
            let to_port = u16::from_be_bytes([t[2], t[3]]);
            if l4 == 6 && from_port == port && to_port == sport && t[13] & 0x12 == 0x12 {
                return true;
            }
        }
        false
    })
    .join()
    .unwrap()
}
