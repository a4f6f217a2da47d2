//! Published ports and egress through in-kernel NAT, shown with real traffic from an "external
//! host" namespace (issue 3). Each test runs in its own throwaway network + mount namespace.

mod common;
use common::*;

fn setup() {
    make_external_host();
    seed_topology();
}

isolated!(tcp_published_port_reaches_container, inner_tcp_published_port_reaches_container, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "nothing published yet");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    // The container sees the real client address: DNAT only, no proxy in between.
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
    // Any local address of the host works (here the bridge's gateway address, routed by ext).
    sh("ip -n ext route add 172.16.1.254/32 via 198.51.100.1");
    assert_eq!(tcp_get(ext().as_deref(), "172.16.1.254:9090").unwrap(), "ns1 saw 198.51.100.2");
    // No process holds the port: the kernel does the forwarding.
    let listeners = sh("ss -Hltnup");
    assert!(!listeners.contains(":9090"), "something listens on 9090: {listeners}");
    // Second check: the map element is there.
    assert!(sh("nft list map inet netnat pub_any4").contains("tcp . 9090"));
});

isolated!(udp_published_port, inner_udp_published_port, {
    setup();
    let _s = udp_server(ns2().as_deref(), "172.16.1.2:53", "ns2");
    ok(&["publish", "5353:172.16.1.2:53/udp"]);
    assert_eq!(udp_get(ext().as_deref(), "0.0.0.0:0", "198.51.100.1:5353").unwrap(), "ns2 saw 198.51.100.2");
});

isolated!(port_range_maps_each_port, inner_port_range_maps_each_port, {
    setup();
    let servers: Vec<_> =
        (8000..=8002).map(|p| tcp_server(ns1().as_deref(), &format!("172.16.1.1:{p}"), &format!("p{p}"))).collect();
    ok(&["publish", "7000-7002:172.16.1.1:8000-8002"]);
    for (i, p) in (7000..=7002).enumerate() {
        let got = tcp_get(ext().as_deref(), &format!("198.51.100.1:{p}")).unwrap();
        assert_eq!(got, format!("p{} saw 198.51.100.2", 8000 + i));
    }
    drop(servers);
});

isolated!(host_ip_bound_mapping, inner_host_ip_bound_mapping, {
    setup();
    sh("ip addr add 198.51.100.3/24 dev veth-ext");
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "198.51.100.3:7070:172.16.1.1:8080"]);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.3:7070").unwrap(), "ns1 saw 198.51.100.2");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:7070").is_err(), "reachable through another host address");
    // A host address the host does not have is refused up front.
    let err = fails(&["publish", "203.0.113.9:7071:172.16.1.1:8080"], 2);
    assert!(err.contains("203.0.113.9"), "{err}");
});

isolated!(localhost_reaches_published_port, inner_localhost_reaches_published_port, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080", "127.0.0.1:6060:172.16.1.1:8080"]);
    // From the host itself, through loopback and through its own address (output hook).
    assert_eq!(tcp_get(None, "127.0.0.1:9090").unwrap(), "ns1 saw 172.16.1.254");
    assert_eq!(tcp_get(None, "127.0.0.1:6060").unwrap(), "ns1 saw 172.16.1.254");
    assert!(tcp_get(None, "198.51.100.1:9090").unwrap().starts_with("ns1 saw"));
    // A loopback-only mapping is not reachable from another host.
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:6060").is_err());
    // route_localnet is on for the bridge only.
    assert_eq!(sh("cat /proc/sys/net/ipv4/conf/MyDocker0/route_localnet").trim(), "1");
    assert_eq!(sh("cat /proc/sys/net/ipv4/conf/veth-ext/route_localnet").trim(), "0");
});

isolated!(loopback_guard_drops_crafted_syn, inner_loopback_guard_drops_crafted_syn, {
    // CVE-2020-8558 class: a neighbour sends a SYN for 127.0.0.1:6060 to the host's MAC. Without
    // the guard, DNAT (which runs before routing) would forward it into the container.
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080", "127.0.0.1:6060:172.16.1.1:8080"]);
    let host_mac = raw::mac_of("ip -o link show veth-ext");
    let syn = |dst: &str, port: u16| raw::syn_gets_synack(&ns("ext"), &host_mac, EXT_IP, dst, port);
    assert!(syn("198.51.100.1", 9090), "control: a SYN to the host's address must be answered");
    assert!(!syn("127.0.0.1", 6060), "a SYN for 127.0.0.1 from outside was answered");
    let dropped = sh("nft list chain inet netnat guard");
    assert!(!dropped.contains("packets 0 "), "the guard did not count the drop: {dropped}");
    // The guard is what protects: without it, the crafted packet gets through.
    sh("nft flush chain inet netnat guard");
    assert!(syn("127.0.0.1", 6060), "test cannot fail: the crafted SYN is not answered even without the guard");
});

isolated!(direct_routing_to_sandbox_is_dropped, inner_direct_routing_to_sandbox_is_dropped, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    // A neighbour that routes the container subnet via the host.
    sh("ip -n ext route add 172.16.0.0/16 via 198.51.100.1");
    assert!(tcp_get(ext().as_deref(), "172.16.1.1:8080").is_err(), "sandbox reachable by direct routing");
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
});

isolated!(hairpin_to_own_and_sibling_port, inner_hairpin_to_own_and_sibling_port, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    for from in [ns1(), ns2()] {
        for dst in ["198.51.100.1:9090", "172.16.1.254:9090"] {
            let got = tcp_get(from.as_deref(), dst).unwrap_or_else(|e| panic!("{from:?} -> {dst}: {e}"));
            // Masqueraded to the gateway, so the reply comes back through the host.
            assert_eq!(got, "ns1 saw 172.16.1.254", "{from:?} -> {dst}");
        }
    }
});

isolated!(egress_is_masqueraded, inner_egress_is_masqueraded, {
    setup();
    let _s = tcp_server(ext().as_deref(), "198.51.100.2:8000", "ext");
    assert_eq!(tcp_get(ns1().as_deref(), "198.51.100.2:8000").unwrap(), "ext saw 198.51.100.1");
    assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    // reset puts back what netnat changed, and removes only its own table.
    sh("nft add table inet other");
    ok(&["reset"]);
    assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "0");
    assert_eq!(sh("nft list tables").trim(), "table inet other");
});

isolated!(no_masquerade_and_internal_networks, inner_no_masquerade_and_internal_networks, {
    make_external_host();
    ok(&["network", "create", "plain", "--subnet", "10.30.0.0/24", "--no-masquerade"]);
    ok(&["network", "create", "closed", "--subnet", "10.31.0.0/24", "--internal"]);
    ok(&["sandbox", "create", "a", "--network", "plain"]);
    ok(&["sandbox", "create", "b", "--network", "closed"]);
    sh("ip -n ext route add 10.30.0.0/16 via 198.51.100.1");
    let _s = tcp_server(ext().as_deref(), "198.51.100.2:8000", "ext");
    // No SNAT: the outside sees the sandbox's own address.
    assert_eq!(tcp_get(Some(&ns("a")), "198.51.100.2:8000").unwrap(), "ext saw 10.30.0.2");
    // Internal: nothing leaves the bridge, and nothing comes in, not even through a published port.
    assert!(tcp_get(Some(&ns("b")), "198.51.100.2:8000").is_err());
    let _b = tcp_server(Some(&ns("b")), "10.31.0.2:80", "b");
    ok(&["publish", "8081:10.31.0.2:80"]);
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:8081").is_err(), "internal network reachable from outside");
    assert_eq!(tcp_get(Some(&ns("b")), "10.31.0.2:80").unwrap(), "b saw 10.31.0.2");
});

isolated!(networks_are_isolated_from_each_other, inner_networks_are_isolated_from_each_other, {
    ok(&["network", "create", "A", "--subnet", "10.40.0.0/24"]);
    ok(&["network", "create", "B", "--subnet", "10.41.0.0/24"]);
    ok(&["sandbox", "create", "a", "--network", "A"]);
    ok(&["sandbox", "create", "b", "--network", "B"]);
    ok(&["sandbox", "create", "ab", "--network", "A"]);
    ok(&["connect", "B", "ab"]);
    let _sb = tcp_server(Some(&ns("b")), "10.41.0.2:80", "b");
    let _sa = tcp_server(Some(&ns("a")), "10.40.0.2:80", "a");
    assert!(tcp_get(Some(&ns("a")), "10.41.0.2:80").is_err(), "network A reached network B");
    assert_eq!(tcp_get(Some(&ns("ab")), "10.41.0.2:80").unwrap(), "b saw 10.41.0.3");
    assert_eq!(tcp_get(Some(&ns("ab")), "10.40.0.2:80").unwrap(), "a saw 10.40.0.3");
});

isolated!(unpublish_stops_new_connections, inner_unpublish_stops_new_connections, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_ok());
    ok(&["unpublish", "9090"]);
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err());
    assert!(ok(&["unpublish", "9090"]).contains("not published"), "unpublish is idempotent");
    assert_eq!(ok(&["ls", "--json"]).trim(), "[]");
});

isolated!(udp_client_follows_republish, inner_udp_client_follows_republish, {
    // A UDP client that keeps sending from one source port: before the publish, across an
    // unpublish, and across a re-publish to another container. Conntrack entries are flushed by
    // HOST port, so every publish takes effect for it at once.
    setup();
    let _a = udp_server(ns1().as_deref(), "172.16.1.1:53", "ns1");
    let _b = udp_server(ns2().as_deref(), "172.16.1.2:53", "ns2");
    let send = || udp_get(ext().as_deref(), "198.51.100.2:40000", "198.51.100.1:5353");
    assert!(send().is_err());
    ok(&["publish", "5353:172.16.1.1:53/udp"]);
    assert_eq!(send().unwrap(), "ns1 saw 198.51.100.2");
    ok(&["unpublish", "5353/udp"]);
    ok(&["publish", "5353:172.16.1.2:53/udp"]);
    assert_eq!(send().unwrap(), "ns2 saw 198.51.100.2");
});

isolated!(duplicate_publish_is_refused, inner_duplicate_publish_is_refused, {
    setup();
    ok(&["publish", "9090:172.16.1.1:8080"]);
    let before = kernel_snapshot();
    assert!(ok(&["publish", "9090:172.16.1.1:8080"]).contains("already published"));
    let err = fails(&["publish", "9090:172.16.1.2:8080"], 1);
    assert!(err.contains("9090:172.16.1.1:8080"), "the existing mapping is not named: {err}");
    let err = fails(&["publish", "9000-9100:172.16.1.2:9000-9100"], 1);
    assert!(err.contains("9090:172.16.1.1:8080"), "{err}");
    assert_eq!(before, kernel_snapshot());
    let note = ok(&["publish", "9191:10.99.0.5:80"]);
    assert!(note.contains("in no netnat network"), "{note}");
});

isolated!(rules_stay_constant_with_many_ports, inner_rules_stay_constant_with_many_ports, {
    setup();
    let rules = || sh("nft -a list table inet netnat").matches("# handle").count();
    ok(&["publish", "9090:172.16.1.1:8080"]);
    let one = rules();
    ok(&["publish", "20000-20999:172.16.1.2:20000-20999"]);
    assert_eq!(rules(), one, "rules grew with the number of ports");
    let elems = sh("nft list map inet netnat pub_any4");
    assert_eq!(elems.matches(" : 172.16.1.").count(), 1001, "one map element per port");
    // `show` reads it back deterministically.
    assert_eq!(ok(&["show"]), ok(&["show"]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&ok(&["ls", "--json"])).unwrap().as_array().unwrap().len(), 2);
});

isolated!(counters_rise_with_traffic, inner_counters_rise_with_traffic, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    for _ in 0..3 {
        tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap();
    }
    // Connections, once each (the NAT element counts); no packets or bytes by default.
    let v: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert_eq!(v[0]["connections_total"].as_u64(), Some(3), "{v}");
    assert!(v[0]["packets"].is_null(), "{v}");
    assert!(ok(&["ls"]).lines().nth(1).unwrap().contains("        3          -            -  any"), "{}", ok(&["ls"]));
    // `counting packets`: every packet of every connection, both ways: a TCP exchange is well
    // over 3 packets, so counting only first packets (what a NAT chain sees) would fail this.
    assert!(ok(&["counting", "packets"]).contains("counting: packets (was connections;"));
    assert_eq!(ok(&["counting"]).trim(), "counting: packets");
    for _ in 0..3 {
        tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap();
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert!(v[0]["packets"].as_u64().unwrap() >= 3 * 6, "{v}");
    assert!(v[0]["bytes"].as_u64().unwrap() >= 3 * 300, "{v}");
    assert_eq!(v[0]["connections_total"].as_u64(), Some(6), "{v}");
    assert!(ok(&["save"]).contains("counting = \"packets\""));
    // And back, in place: the forward chain goes, the connection counters keep their counts.
    assert!(sh("nft list table inet netnat").contains("chain forward"));
    ok(&["counting", "connections"]);
    assert!(!sh("nft list table inet netnat").contains("chain forward"));
    let v: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert_eq!(v[0]["connections_total"].as_u64(), Some(6), "{v}");
    // A mode that does not exist: exit 2, named, nothing changed.
    let before = kernel_snapshot();
    let (code, _, err) = netnat_out(&["counting", "bytes"]);
    assert_eq!(code, 2);
    assert!(err.contains("bytes"), "{err}");
    assert_eq!(kernel_snapshot(), before);
});

/// Starts `n` netnat commands at once and waits for all of them.
fn concurrently(args: Vec<Vec<String>>) -> Vec<std::process::Output> {
    let children: Vec<_> = args
        .iter()
        .map(|a| {
            std::process::Command::new(NETNAT)
                .args(a)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

isolated!(concurrent_publishes_never_lose_or_double, inner_concurrent_publishes_never_lose_or_double, {
    setup();
    // 20 distinct ports of each family at once: all present.
    let both = (0..20).flat_map(|i| {
        [format!("{}:172.16.1.1:80", 10000 + i), format!("{}:[fd00:16::2]:80", 10000 + i)]
            .map(|spec| vec!["publish".to_string(), spec])
    });
    let outs = concurrently(both.collect());
    assert!(outs.iter().all(|o| o.status.success()));
    let v: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 40);
    assert_eq!(sh("nft list map inet netnat pub_any4").matches(" : 172.16.1.1 . 80").count(), 20);
    assert_eq!(sh("nft list map inet netnat pub_any6").matches(" : fd00:16::2 . 80").count(), 20);
    // 10 publishes of one host port to different targets: exactly one wins, the others name it.
    let outs = concurrently((0..10).map(|i| vec!["publish".into(), format!("7777:172.16.1.{}:80", 10 + i)]).collect());
    let winners: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(winners.len(), 1);
    let won = String::from_utf8_lossy(&winners[0].stdout).to_string();
    let target = won.split_whitespace().nth(1).unwrap().to_string(); // "published SPEC ..."
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains(&target), "loser does not name {target}");
    }
});

isolated!(publish_needs_net_admin, inner_publish_needs_net_admin, {
    setup();
    let before = kernel_snapshot();
    for spec in ["9090:172.16.1.1:8080", "9090:[fd00:16::2]:8080"] {
        let out = std::process::Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-net_admin", NETNAT, "publish", spec])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("CAP_NET_ADMIN") && err.trim().lines().count() == 1, "{err}");
        assert_eq!(before, kernel_snapshot());
    }
});

isolated!(publish_and_unpublish_survive_hand_edited_elements, inner_publish_survives_drift, {
    // publish/unpublish send only their own elements; when the kernel disagrees with the record
    // (an element deleted or added by hand), they fall back to a full sync instead of failing.
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    sh("nft delete element inet netnat pub_any4 '{ tcp . 9090 }'");
    ok(&["unpublish", "9090"]);
    sh("nft add element inet netnat pub_any4 '{ tcp . 9191 : 172.16.1.2 . 80 }'");
    ok(&["publish", "9191:172.16.1.1:8080"]);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9191").unwrap(), "ns1 saw 198.51.100.2");
    let map = nft_list("map inet netnat pub_any4");
    assert!(map.contains("tcp . 9191 : 172.16.1.1 . 8080") && !map.contains("9090"), "{map}");
});
