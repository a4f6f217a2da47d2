//! Kernel tests for `netnat::conntrack`, each run in its own throwaway network and mount
//! namespace (tests/common's `isolated!`); nothing touches the machine's own namespace.

mod common;

use netnat::conntrack::{self, Filter};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;

fn sh(cmd: &str) {
    common::sh(cmd);
}

/// Entry count reported by the `conntrack` tool, as a cross-check.
fn tool_count(args: &str) -> usize {
    let out = Command::new("sh").args(["-c", &format!("timeout 10 conntrack -L -f ipv4 {args}")]).output().unwrap();
    assert!(out.status.success(), "conntrack -L {args}: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn udp(port_lo: u16, port_hi: u16) -> Filter {
    Filter {
        proto: IPPROTO_UDP,
        dport_min: port_lo,
        dport_max: port_hi,
        daddr: Some(Ipv4Addr::LOCALHOST.into()),
        ipv6: false,
    }
}

/// Sets up lo and an nft rule that makes conntrack track locally sent packets.
fn setup_netns() {
    sh("ip link set lo up");
    sh("nft add table inet t && \
        nft add chain inet t c '{ type filter hook output priority 0; }' && \
        nft add rule inet t c ct state new counter");
}

fn listener() -> (UdpSocket, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

isolated!(udp_list_flush_count, inner_udp_list_flush_count, {
    setup_netns();
    // Nothing tracked yet in the fresh namespace.
    assert!(conntrack::list(&udp(1, 65535)).unwrap().is_empty());

    let (la, pa) = listener();
    let (lb, pb) = listener();
    let clients: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let sports: BTreeSet<u16> = clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
    for c in &clients {
        for _ in 0..3 {
            c.send_to(b"ping", ("127.0.0.1", pa)).unwrap();
            c.send_to(b"ping", ("127.0.0.1", pb)).unwrap();
        }
    }
    // Bounded waits: every datagram arrives (so the entries exist).
    let mut buf = [0u8; 16];
    for l in [&la, &lb] {
        for _ in 0..6 {
            l.recv_from(&mut buf).expect("datagram within 2s");
        }
    }

    let a = conntrack::list(&udp(pa, pa)).unwrap();
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a.iter().map(|e| e.sport).collect::<BTreeSet<_>>(), sports);
    for e in &a {
        assert_eq!(e.proto, IPPROTO_UDP);
        assert_eq!((e.src, e.dst, e.dport), (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into(), pa));
        assert_eq!((e.reply_src, e.reply_sport), (Ipv4Addr::LOCALHOST.into(), pa));
    }
    assert_eq!(tool_count(&format!("-p udp --dport {pa}")), 2);

    let absent = if pa.max(pb) < 65535 { pa.max(pb) + 1 } else { pa.min(pb) - 1 };
    let counts = conntrack::count_many(&[
        udp(pa, pa),
        udp(pb, pb),
        udp(pa.min(pb), pa.max(pb)),
        udp(absent, absent),
        Filter { proto: IPPROTO_TCP, ..udp(pa, pa) },
        Filter { daddr: Some(Ipv4Addr::new(127, 0, 0, 2).into()), ..udp(pa, pa) },
        Filter { daddr: None, ..udp(pb, pb) },
    ])
    .unwrap();
    assert_eq!(counts, vec![2, 2, 4, 0, 0, 0, 2]);

    // Flush port A: exactly its two entries go, B's stay.
    assert_eq!(conntrack::flush(&udp(pa, pa)).unwrap(), 2);
    assert!(conntrack::list(&udp(pa, pa)).unwrap().is_empty());
    assert_eq!(conntrack::list(&udp(pb, pb)).unwrap().len(), 2);
    assert_eq!(tool_count(&format!("-p udp --dport {pa}")), 0);
    assert_eq!(tool_count(&format!("-p udp --dport {pb}")), 2);

    // Absent ports flush nothing.
    assert_eq!(conntrack::flush(&udp(absent, absent)).unwrap(), 0);
    assert_eq!(conntrack::flush(&udp(pa, pa)).unwrap(), 0);

    // A new datagram to A after the flush creates a fresh entry.
    clients[0].send_to(b"again", ("127.0.0.1", pa)).unwrap();
    la.recv_from(&mut buf).expect("datagram within 2s");
    assert_eq!(conntrack::count_many(&[udp(pa, pa)]).unwrap(), vec![1]);
});

isolated!(no_conntrack_rule_means_empty, inner_no_conntrack_rule_means_empty, {
    // Fresh namespace, no rules: nothing is tracked, nothing to flush.
    let all = Filter { proto: IPPROTO_UDP, dport_min: 0, dport_max: 65535, daddr: None, ipv6: false };
    assert!(conntrack::list(&all).unwrap().is_empty());
    assert_eq!(conntrack::flush(&all).unwrap(), 0);
    assert_eq!(conntrack::count_many(&[all, all]).unwrap(), vec![0, 0]);
    assert_eq!(conntrack::count_many(&[]).unwrap(), Vec::<usize>::new());
});
