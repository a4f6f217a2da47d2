//! IPv6 and dual stack (issue 10), each point shown with real traffic from an "external host"
//! namespace over documentation (2001:db8::/32) and ULA (fd00::/8) prefixes. Each test runs in
//! its own throwaway network + mount namespace.

mod common;
use common::*;

fn setup() {
    make_external_host_v6();
    seed_topology_v6();
}

fn sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap().trim().to_string()
}

isolated!(one_command_publishes_both_families, inner_one_command_publishes_both_families, {
    setup();
    // The sandbox has both addresses, and a default route per family.
    let addrs = sh("ip -n Container_ns1 -o addr show dev eth0");
    assert!(addrs.contains("172.16.1.1/16") && addrs.contains("fd00:16::2/64"), "{addrs}");
    let global = addrs.lines().find(|l| l.contains("fd00:16::2")).unwrap();
    assert!(!global.contains("tentative"), "address not usable at once: {addrs}");
    assert!(sh("ip -n Container_ns1 -6 route show default").contains("via fd00:16::1"));
    assert_eq!(sh("ip netns exec Container_ns1 sysctl -n net.ipv6.conf.eth0.accept_ra").trim(), "0");
    let _s4 = tcp_server(ns1().as_deref(), "172.16.1.1:80", "ns1");
    let _s6 = tcp_server(ns1().as_deref(), "[fd00:16::2]:80", "ns1v6");
    let out = ok(&["publish", "8080:Container_ns1:80"]);
    assert!(out.contains("8080:172.16.1.1:80/tcp") && out.contains("8080:[fd00:16::2]:80/tcp"), "{out}");
    assert_eq!(tcp_get_settled(ext().as_deref(), "198.51.100.1:8080").unwrap(), "ns1 saw 198.51.100.2");
    assert_eq!(tcp_get_settled(ext().as_deref(), "[2001:db8:1::1]:8080").unwrap(), "ns1v6 saw 2001:db8:1::2");
    // Any local IPv6 address of the host: here the bridge's, routed by ext through the host.
    sh("ip -n ext -6 route add fd00:16::1/128 via 2001:db8:1::1");
    assert_eq!(tcp_get_settled(ext().as_deref(), "[fd00:16::1]:8080").unwrap(), "ns1v6 saw 2001:db8:1::2");
    // From the host itself, through its own global address (output hook).
    assert!(tcp_get_settled(None, "[2001:db8:1::1]:8080").unwrap().starts_with("ns1v6 saw "));
    // ls and save show the resolved addresses.
    let ls: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let ips: Vec<&str> = ls.as_array().unwrap().iter().map(|m| m["container_ip"].as_str().unwrap()).collect();
    assert_eq!(ips, ["172.16.1.1", "fd00:16::2"]);
    assert!(ls.as_array().unwrap().iter().all(|m| m["connections_total"].as_u64().unwrap() > 0), "{ls}");
    let saved = ok(&["save"]);
    assert!(saved.contains(r#""8080:[fd00:16::2]:80/tcp""#), "{saved}");
    assert!(saved.contains(r#"subnet = ["172.16.0.0/16", "fd00:16::/64"]"#), "{saved}");
    // The map elements are there (second check).
    assert!(nft_list("map inet netnat pub_any6").contains("tcp . 8080 : fd00:16::2 . 80"));
    // A bare host port removes the every-address mappings of both families.
    assert_eq!(ok(&["unpublish", "8080"]).matches("unpublished").count(), 2);
    assert!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:8080").is_err());
});

isolated!(ipv6_mapping_on_one_host_address_and_ranges, inner_ipv6_mapping_on_one_host_address_and_ranges, {
    setup();
    sh("ip addr add 2001:db8:1::3/64 dev veth-ext nodad");
    let _s = tcp_server(ns1().as_deref(), "[fd00:16::2]:80", "ns1v6");
    ok(&["publish", "[2001:db8:1::3]:7070:[fd00:16::2]:80"]);
    assert_eq!(tcp_get_settled(ext().as_deref(), "[2001:db8:1::3]:7070").unwrap(), "ns1v6 saw 2001:db8:1::2");
    assert!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:7070").is_err(), "reachable through another host address");
    // `[::]` is every local IPv6 address; ranges and UDP as in IPv4.
    let servers: Vec<_> =
        (9000..=9001).map(|p| tcp_server(ns2().as_deref(), &format!("[fd00:16::3]:{p}"), &format!("p{p}"))).collect();
    ok(&["publish", "[::]:7000-7001:[fd00:16::3]:9000-9001"]);
    for (i, p) in (7000..=7001).enumerate() {
        let got = tcp_get_settled(ext().as_deref(), &format!("[2001:db8:1::1]:{p}")).unwrap();
        assert_eq!(got, format!("p{} saw 2001:db8:1::2", 9000 + i));
    }
    drop(servers);
    let _u = udp_server(ns2().as_deref(), "[fd00:16::3]:53", "ns2");
    ok(&["publish", "5353:[fd00:16::3]:53/udp"]);
    assert_eq!(udp_get(ext().as_deref(), "[::]:0", "[2001:db8:1::1]:5353").unwrap(), "ns2 saw 2001:db8:1::2");
    // `[::]:PORT` unpublishes only the IPv6 every-address mapping.
    ok(&["publish", "7000:172.16.1.2:9000"]);
    let out = ok(&["unpublish", "[::]:7000-7001"]);
    assert_eq!(out.matches("unpublished").count(), 1, "{out}");
    assert!(ok(&["ls"]).contains("7000"), "the IPv4 mapping of 7000 stays");
});

isolated!(ipv6_direct_routing_isolation_and_internal, inner_ipv6_direct_routing_isolation_and_internal, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "[fd00:16::2]:80", "ns1v6");
    ok(&["publish", "8080:[fd00:16::2]:80"]);
    assert!(tcp_get_settled(ext().as_deref(), "[2001:db8:1::1]:8080").is_ok());
    // A neighbour that routes the ULA subnet through the host cannot reach the container directly,
    // even on the published container port.
    sh("ip -n ext -6 route add fd00:16::/64 via 2001:db8:1::1");
    assert!(tcp_get(ext().as_deref(), "[fd00:16::2]:80").is_err(), "direct routing to a container over IPv6");
    // Isolation between networks, and an internal network, hold for IPv6.
    ok(&["network", "create", "other", "--subnet", "fd00:17::/64"]);
    ok(&["sandbox", "create", "o1", "--network", "other"]);
    ok(&["network", "create", "sealed", "--subnet", "fd00:18::/64", "--internal"]);
    ok(&["sandbox", "create", "i1", "--network", "sealed"]);
    assert!(sh("ip -n o1 -o addr show dev eth0").contains("fd00:17::2/64"), "lowest free address");
    let o1 = Some(ns("o1"));
    let i1 = Some(ns("i1"));
    assert!(tcp_get(o1.as_deref(), "[fd00:16::2]:80").is_err(), "crossed from network other into MyDocker0");
    let _e = tcp_server(ext().as_deref(), "[2001:db8:1::2]:9999", "ext");
    assert!(tcp_get_settled(o1.as_deref(), "[2001:db8:1::2]:9999").is_ok(), "control: other has egress");
    assert!(tcp_get(i1.as_deref(), "[2001:db8:1::2]:9999").is_err(), "internal network reached the outside");
});

isolated!(ipv6_hairpin_and_masqueraded_egress, inner_ipv6_hairpin_and_masqueraded_egress, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "[fd00:16::2]:80", "ns1v6");
    ok(&["publish", "8080:[fd00:16::2]:80"]);
    // Hairpin: a container reaches a sibling through the host's published port.
    assert_eq!(tcp_get_settled(ns2().as_deref(), "[2001:db8:1::1]:8080").unwrap(), "ns1v6 saw fd00:16::1");
    // Egress (nat mode, the default): the external server sees the host's address.
    let _e = tcp_server(ext().as_deref(), "[2001:db8:1::2]:9999", "ext");
    assert_eq!(tcp_get_settled(ns1().as_deref(), "[2001:db8:1::2]:9999").unwrap(), "ext saw 2001:db8:1::1");
});

isolated!(ipv6_routed_mode, inner_ipv6_routed_mode, {
    make_external_host_v6();
    ok(&[
        "network",
        "create",
        "r",
        "--subnet",
        "10.77.0.0/24",
        "--subnet",
        "2001:db8:77::/64",
        "--ipv6-mode",
        "routed",
    ]);
    ok(&["sandbox", "create", "c", "--network", "r"]);
    let c = Some(ns("c"));
    // The outside routes the subnet to this host.
    sh("ip -n ext -6 route add 2001:db8:77::/64 via 2001:db8:1::1");
    let _s80 = tcp_server(c.as_deref(), "[2001:db8:77::2]:80", "c80");
    let _s81 = tcp_server(c.as_deref(), "[2001:db8:77::2]:81", "c81");
    assert!(tcp_get_settled(ext().as_deref(), "[2001:db8:77::2]:80").is_err(), "reachable before publishing");
    let out = ok(&["publish", "8080:[2001:db8:77::2]:80"]);
    assert!(out.contains("host port 8080 is not used"), "{out}");
    // Published container port: reached at the container's own address, the client's address kept.
    assert_eq!(tcp_get_settled(ext().as_deref(), "[2001:db8:77::2]:80").unwrap(), "c80 saw 2001:db8:1::2");
    // Every other port is refused; the host port means nothing in routed mode (as in Docker).
    assert!(tcp_get(ext().as_deref(), "[2001:db8:77::2]:81").is_err(), "an unpublished port is reachable");
    assert!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:8080").is_err(), "routed mode DNATs the host port");
    // Egress keeps the container's address: no masquerade.
    let _e = tcp_server(ext().as_deref(), "[2001:db8:1::2]:9999", "ext");
    assert_eq!(tcp_get_settled(c.as_deref(), "[2001:db8:1::2]:9999").unwrap(), "ext saw 2001:db8:77::2");
    // IPv4 of the same network is masqueraded as usual.
    let _e4 = tcp_server(ext().as_deref(), "198.51.100.2:9998", "ext4");
    assert_eq!(tcp_get_settled(c.as_deref(), "198.51.100.2:9998").unwrap(), "ext4 saw 198.51.100.1");
    let ls: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert!(ls[0]["connections_total"].as_u64().unwrap() > 0, "routed traffic is counted: {ls}");
    assert!(sh("nft list set inet netnat routed6").contains("2001:db8:77::2 . tcp . 80"));
});

isolated!(ipv6_udp_flow_follows_a_republish, inner_ipv6_udp_flow_follows_a_republish, {
    setup();
    let _a = udp_server(ns1().as_deref(), "[fd00:16::2]:53", "ns1");
    let _b = udp_server(ns2().as_deref(), "[fd00:16::3]:53", "ns2");
    ok(&["publish", "5353:[fd00:16::2]:53/udp"]);
    // The same client 5-tuple before and after: only a conntrack flush lets it see the change.
    let src = "[2001:db8:1::2]:40053";
    let first = (0..10).find_map(|_| udp_get(ext().as_deref(), src, "[2001:db8:1::1]:5353").ok());
    assert_eq!(first.as_deref(), Some("ns1 saw 2001:db8:1::2"));
    // Another target for a published host port is refused (exit 1) until it is unpublished.
    fails(&["publish", "5353:[fd00:16::3]:53/udp"], 1);
    ok(&["unpublish", "5353/udp"]);
    ok(&["publish", "5353:[fd00:16::3]:53/udp"]);
    assert_eq!(udp_get(ext().as_deref(), src, "[2001:db8:1::1]:5353").unwrap(), "ns2 saw 2001:db8:1::2");
});

isolated!(crafted_syn_to_ipv6_loopback_gets_no_answer, inner_crafted_syn_to_ipv6_loopback_gets_no_answer, {
    setup();
    let _s = tcp_server(None, "[::1]:6060", "host-loopback");
    let _p = tcp_server(None, "[2001:db8:1::1]:6061", "host");
    let host_mac = raw::mac_of("ip -o link show veth-ext");
    assert!(raw::syn_gets_synack(&ns("ext"), &host_mac, EXT_IP6, "2001:db8:1::1", 6061), "control: must be answered");
    assert!(
        !raw::syn_gets_synack(&ns("ext"), &host_mac, EXT_IP6, "::1", 6060),
        "a SYN for [::1] from outside was answered"
    );
    // Publishing on [::1] is refused, so nothing can open that path.
    assert!(fails(&["publish", "[::1]:6060:[fd00:16::2]:80"], 2).contains("route_localnet"));
});

isolated!(forwarding_and_router_advertisements, inner_forwarding_and_router_advertisements, {
    make_external_host_v6();
    // veth-ext learns a route from router advertisements (as a host on a SLAAC network does).
    sh("sysctl -qw net.ipv6.conf.veth-ext.accept_ra=1 && ip -6 route add 2001:db8:99::/64 via fe80::1 dev veth-ext proto ra");
    assert_eq!(sysctl("net/ipv6/conf/all/forwarding"), "0");
    let out = netnat(&["network", "create", "n", "--subnet", "fd00:16::/64"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("veth-ext") && err.contains("accept_ra to 2"), "{err}");
    assert_eq!(sysctl("net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(sysctl("net/ipv6/conf/veth-ext/accept_ra"), "2");
    let conf = std::fs::read_to_string("/run/sysctl.d/50-netnat.conf").unwrap();
    assert!(conf.contains("net/ipv6/conf/all/forwarding = 1") && conf.contains("net/ipv6/conf/veth-ext/accept_ra = 2"));
    ok(&["audit"]);
    // Put accept_ra back behind netnat's back: the audit names the interface.
    sh("sysctl -qw net.ipv6.conf.veth-ext.accept_ra=1");
    let audit = netnat(&["audit", "--json"]);
    let out = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(1), "{out}");
    assert!(out.contains("host.ra-ignored") && out.contains("veth-ext"), "{out}");
    sh("sysctl -qw net.ipv6.conf.veth-ext.accept_ra=2 && sysctl -qw net.ipv6.conf.all.forwarding=0");
    let audit = netnat(&["audit"]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("net.ipv6.conf.all.forwarding is 0"));
    // reset restores both.
    sh("sysctl -qw net.ipv6.conf.all.forwarding=1");
    ok(&["reset"]);
    assert_eq!(sysctl("net/ipv6/conf/all/forwarding"), "0");
    assert_eq!(sysctl("net/ipv6/conf/veth-ext/accept_ra"), "1");
});

isolated!(ipv6_disabled_host_keeps_ipv4_working, inner_ipv6_disabled_host_keeps_ipv4_working, {
    make_external_host();
    sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 && sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
    seed_topology();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
    let before = settled_snapshot();
    for args in [
        &["network", "create", "v6", "--subnet", "fd00:16::/64"][..],
        &["network", "create", "v6", "--subnet", "10.9.0.0/24", "--subnet", "fd00:16::/64"][..],
        &["publish", "9091:[fd00:16::2]:80"][..],
    ] {
        let err = fails(args, 1);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("IPv6 is disabled"), "{err}");
        assert_eq!(before, kernel_snapshot(), "netnat {args:?} changed the kernel");
    }
    ok(&["reset"]);
});

isolated!(save_reset_apply_and_reload_round_trip_ipv6, inner_save_reset_apply_and_reload_round_trip_ipv6, {
    setup();
    ok(&["publish", "8080:Container_ns1:80", "[2001:db8:1::1]:8081:[fd00:16::2]:80"]);
    let saved = ok(&["save"]);
    std::fs::write("/run/netnat-saved.toml", &saved).unwrap();
    ok(&["apply", "--check", "-f", "/run/netnat-saved.toml"]);
    ok(&["reset"]);
    assert!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:8081").is_err());
    ok(&["apply", "-f", "/run/netnat-saved.toml"]);
    assert_eq!(ok(&["save"]), saved);
    // The sandbox namespace is a new one: its server starts now.
    let _s = tcp_server(ns1().as_deref(), "[fd00:16::2]:80", "ns1v6");
    assert_eq!(tcp_get_settled(ext().as_deref(), "[2001:db8:1::1]:8081").unwrap(), "ns1v6 saw 2001:db8:1::2");
    // reload after someone flushed the whole ruleset.
    sh("nft flush ruleset");
    assert!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:8080").is_err());
    ok(&["reload"]);
    assert_eq!(tcp_get_settled(ext().as_deref(), "[2001:db8:1::1]:8080").unwrap(), "ns1v6 saw 2001:db8:1::2");
    // The audit sees drift of an IPv6 element, and the graph shows the IPv6 addresses.
    ok(&["audit"]);
    sh("nft delete element inet netnat pub_any6 '{ tcp . 8080 }'");
    let audit = netnat(&["audit"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("drift.element-missing") && text.contains("pub_any6"), "{text}");
    assert!(ok(&["graph"]).contains("fd00:16::2"));
});

isolated!(bad_ipv6_input_is_refused_and_changes_nothing, inner_bad_ipv6_input_is_refused_and_changes_nothing, {
    make_external_host_v6();
    ok(&["network", "create", "n", "--subnet", "10.50.0.0/24", "--subnet", "fd00:50::/64"]);
    ok(&["sandbox", "create", "s", "--network", "n", "--ip", "fd00:50::2"]);
    ok(&["sandbox", "create", "t"]);
    ok(&["network", "create", "m", "--subnet", "10.51.0.0/24"]);
    ok(&["connect", "m", "s"]);
    let before = settled_snapshot();
    let rows: &[(&[&str], &str)] = &[
        (&["network", "create", "x", "--subnet", "fe80::/64"], "fe80::/64"),
        (&["network", "create", "x", "--subnet", "ff02::/64"], "ff02::/64"),
        (&["network", "create", "x", "--subnet", "::/96"], "::/96"),
        (&["network", "create", "x", "--subnet", "::ffff:10.0.0.0/120"], "::ffff:10.0.0.0/120"),
        (&["network", "create", "x", "--subnet", "fd00:60::/121"], "fd00:60::/121"),
        (&["network", "create", "x", "--subnet", "fd00:60::1/64"], "fd00:60::1/64"),
        (&["network", "create", "x", "--subnet", "[fd00:60::]/64"], "[fd00:60::]/64"),
        (&["network", "create", "x", "--subnet", "fd00:60::/64", "--subnet", "fd00:61::/64"], "fd00:61::/64"),
        (&["network", "create", "x", "--subnet", "fd00:50:0:0:1::/80"], "fd00:50::/64"),
        (&["network", "create", "x", "--subnet", "fd00::/16"], "fd00:50::/64"),
        (&["network", "create", "x", "--subnet", "fd00:60::/64", "--gateway", "fd00:61::1"], "fd00:61::1"),
        (&["network", "create", "x", "--subnet", "fd00:60::/64", "--gateway", "fd00:60::"], "fd00:60::"),
        (&["network", "create", "x", "--subnet", "10.60.0.0/24", "--ipv6-mode", "routed"], "routed"),
        (&["network", "create", "x", "--subnet", "fd00:60::/64", "--ipv6-mode", "bridged"], "bridged"),
        (&["connect", "n", "t", "--ip", "fd00:51::5"], "fd00:51::5"),
        (&["connect", "n", "t", "--ip", "fd00:50::1"], "fd00:50::1"),
        (&["connect", "n", "t", "--ip", "fd00:50::2"], "fd00:50::2"),
        (&["connect", "n", "t", "--ip", "fd00:50::5", "--ip", "fd00:50::6"], "once per family"),
        (&["connect", "m", "t", "--ip", "fd00:51::5"], "fd00:51::5"),
        (&["publish", "8080:fd00:50::2:80"], "brackets"),
        (&["publish", "[::1]:8080:[fd00:50::2]:80"], "route_localnet"),
        (&["publish", "[2001:db8:1::1]:8080:10.50.0.2:80"], "cannot NAT between families"),
        (&["publish", "198.51.100.1:8080:[fd00:50::2]:80"], "cannot NAT between families"),
        (&["publish", "8080:[fe80::2]:80"], "fe80::2"),
        (&["publish", "8080:[fd00:50::2:80"], "']'"),
        (&["publish", "8080:[10.50.0.2]:80"], "[10.50.0.2]"),
        (&["publish", "[2001:db8:9::9]:8080:[fd00:50::2]:80"], "2001:db8:9::9"),
        (&["publish", "8080:nobody:80"], "nobody"),
        (&["publish", "8080:s:80"], "s@NETWORK"),
        (&["publish", "8080:s@nonet:80"], "nonet"),
        (&["publish", "[::]:8080:s@m:80"], "no IPv6 address"),
        (&["publish", "8080-8081:[fd00:50::2]:80"], "2 ports"),
        (&["unpublish", "[fd00:50::zz]:80"], "[fd00:50::zz]"),
    ];
    assert!(rows.len() >= 25);
    for (args, needle) in rows {
        let out = netnat(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "netnat {args:?}: expected exit 2, stderr: {err}");
        assert!(err.contains(needle), "netnat {args:?}: message does not name {needle:?}: {err}");
        assert!(out.stdout.is_empty(), "netnat {args:?} printed to stdout on failure");
        assert_eq!(before, kernel_snapshot(), "netnat {args:?} changed the kernel");
    }
});
