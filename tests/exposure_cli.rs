//! Exposure controls (issue 14): allow lists on published ports, shown with traffic from two
//! client namespaces of different source networks; `connect` adopting an `ip netns add`
//! namespace; bad input. Each test runs in its own throwaway network + mount namespace.

mod common;
use common::*;
use serde_json::Value;

/// A second external host, 203.0.113.2, on its own link to the host (203.0.113.1).
const EXT2_IP: &str = "203.0.113.2";
fn make_second_external_host() {
    sh("ip netns add ext2 && ip link add veth-ext2 type veth peer name eth0 netns ext2 \
        && ip addr add 203.0.113.1/24 dev veth-ext2 && ip link set veth-ext2 up \
        && ip -n ext2 addr add 203.0.113.2/24 dev eth0 && ip -n ext2 link set eth0 up && ip -n ext2 link set lo up \
        && ip -n ext2 route add default via 203.0.113.1");
}

fn get(from: &str, port: u16) -> Result<String, String> {
    tcp_get(Some(&ns(from)), &format!("{HOST_EXT_IP}:{port}"))
}

fn ls_json() -> Vec<Value> {
    serde_json::from_str(&ok(&["ls", "--json"])).expect("ls --json is JSON")
}

fn denied(port: u16) -> u64 {
    let all = ls_json();
    let m = all.iter().find(|m| m["host_port"] == port).unwrap_or_else(|| panic!("port {port} in {all:?}"));
    m["denied_packets"].as_u64().unwrap()
}

isolated!(allow_list_admits_only_listed_sources, inner_allow_list, {
    make_external_host();
    make_second_external_host();
    seed_topology();
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    assert_eq!(get("ext", 9090).unwrap(), format!("ns1 saw {EXT_IP}"));
    assert_eq!(get("ext2", 9090).unwrap(), format!("ns1 saw {EXT2_IP}"), "open to all without --allow");

    // Only ext's network: ext2's connection is dropped before DNAT and counted.
    let out = ok(&["publish", "9090:172.16.1.1:8080", "--allow", "198.51.100.0/24"]);
    assert!(out.contains("allow list of 9090:172.16.1.1:8080/tcp replaced: now 198.51.100.0/24"), "{out}");
    assert_eq!(get("ext", 9090).unwrap(), format!("ns1 saw {EXT_IP}"));
    assert!(get("ext2", 9090).is_err(), "ext2 is not on the list");
    let d = denied(9090);
    assert!(d > 0, "the dropped SYNs were not counted");
    let json = ls_json();
    assert_eq!(json[0]["allow"], serde_json::json!(["198.51.100.0/24"]));
    assert!(ok(&["ls"]).contains(&format!("198.51.100.0/24 ({d})")));
    // The host itself is a source like any other (127.0.0.1 is not on the list).
    assert!(tcp_get(None, "127.0.0.1:9090").is_err(), "localhost is subject to the list");

    // Replacing the list swaps who gets in, in one command.
    ok(&["publish", "9090:172.16.1.1:8080", "--allow", "203.0.113.0/24", "--allow", "127.0.0.1/32"]);
    assert!(get("ext", 9090).is_err(), "ext is no longer on the list");
    assert_eq!(get("ext2", 9090).unwrap(), format!("ns1 saw {EXT2_IP}"));
    assert!(tcp_get(None, "127.0.0.1:9090").is_ok(), "127.0.0.1 is on the list now");
    assert!(denied(9090) > d, "ext's dropped SYNs were counted");

    // The record and the kernel agree; the list is in `save`'s file.
    let (code, out, _) = netnat_out(&["audit", "--fail-on", "error"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        ok(&["save"]).contains(r#"{ spec = "9090:172.16.1.1:8080/tcp", allow = ["203.0.113.0/24", "127.0.0.1/32"] }"#)
    );

    // Each prefix length is checked with its own mask: 198.0.0.0/16 does not admit ext
    // (198.51.100.2), even though another port's /8 list makes the /8 check run too.
    ok(&["publish", "9092:172.16.1.1:8080", "--allow", "198.0.0.0/16"]);
    ok(&["publish", "9093:172.16.1.1:8080", "--allow", "10.0.0.0/8"]);
    assert!(get("ext", 9092).is_err(), "198.0.0.0/16 admitted 198.51.100.2");
    ok(&["publish", "9093:172.16.1.1:8080", "--allow", "198.0.0.0/8"]);
    assert_eq!(get("ext", 9093).unwrap(), format!("ns1 saw {EXT_IP}"), "198.0.0.0/8 admits 198.51.100.2");
    ok(&["unpublish", "9092", "9093"]);

    // Unpublishing takes the list's elements with the mapping.
    ok(&["unpublish", "9090"]);
    let sets = sh("nft list set inet netnat allow_any4; nft list set inet netnat deny_any4; \
                   nft list set inet netnat listed_any4");
    assert!(!sets.contains("elements"), "elements left behind:\n{sets}");
    // Published again without a list: open to all.
    ok(&["publish", "9090:172.16.1.1:8080"]);
    assert!(get("ext", 9090).is_ok() && get("ext2", 9090).is_ok());
});

isolated!(allow_lists_keep_the_rule_count, inner_allow_rule_count, {
    seed_topology();
    let rules = || sh("nft -a list table inet netnat | grep -c 'handle' ").trim().parse::<usize>().unwrap();
    ok(&["publish", "9090:172.16.1.1:8080", "--allow", "10.0.0.0/8"]);
    let one = rules();
    // 1,000 mappings, each with its own list, through one apply.
    let mut file = String::from("publish = [\n");
    for i in 0..1000u32 {
        file += &format!(
            "  {{ spec = \"{}:172.16.1.2:80\", allow = [\"10.{}.{}.0/24\", \"192.0.2.{}/32\"] }},\n",
            30000 + i,
            i / 256,
            i % 256,
            i % 250
        );
    }
    file += "]\n";
    let path = std::env::temp_dir().join("netnat-allow-1000.toml");
    // The file names the mappings of Container_ns2's address at the top level; the sandboxes
    // and network come from the record (apply without --prune keeps them).
    std::fs::write(&path, file).unwrap();
    ok(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(ls_json().len(), 1001);
    // Two prefix lengths the first list did not use (/24, /32): one check rule each, whatever
    // the number of lists.
    assert_eq!(rules(), one + 2, "1,000 allow lists added more than a rule per new prefix length");
    let set = sh("nft list set inet netnat allow_any4");
    assert_eq!(set.matches(". 255.255.255.0 . ").count(), 1000, "one element per allowed network");
    assert!(set.contains("tcp . 9090 . 255.0.0.0 . 10.0.0.0"), "the first list is still there");
});

isolated!(connect_adopts_an_ip_netns_namespace, inner_connect_adopts, {
    make_external_host();
    ok(&["network", "create", "MyDocker0", "--subnet", "172.16.0.0/16", "--gateway", "172.16.1.254"]);
    sh("ip netns add byhand");
    let out = ok(&["connect", "MyDocker0", "byhand", "--ip", "172.16.1.9"]);
    assert!(out.contains("sandbox byhand adopted (existing namespace)"), "{out}");
    let _s = tcp_server(Some(&ns("byhand")), "172.16.1.9:80", "byhand");
    ok(&["publish", "9099:172.16.1.9:80"]);
    assert_eq!(get("ext", 9099).unwrap(), format!("byhand saw {EXT_IP}"));
    assert!(ok(&["sandbox", "ls"]).contains("adopted"));
    ok(&["reset"]);
    assert!(ns("byhand").exists(), "reset removed a namespace netnat did not make");
    // A name with no namespace is still refused, naming it.
    let err = fails(&["connect", "MyDocker0", "nosuch"], 2);
    assert!(err.contains("no network named MyDocker0") || err.contains("no sandbox named nosuch"), "{err}");
});

isolated!(bad_exposure_input_changes_nothing, inner_bad_exposure_input, {
    seed_topology();
    ok(&["publish", "9090:172.16.1.1:8080", "--allow", "10.0.0.0/8"]);
    let before = kernel_snapshot();
    let rows: &[(&[&str], &str)] = &[
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0.1/8"], "host bits set"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0.0/33"], "'10.0.0.0/33'"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0.0/-1"], "'10.0.0.0/-1'"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0.0/x"], "'10.0.0.0/x'"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0/8"], "'10.0.0/8'"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "example.com"], "'example.com'"),
        (&["publish", "9091:172.16.1.1:80", "--allow", ""], "''"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "fd00::/64"], "no IPv4 source"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "fd00::1/64"], "host bits set"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "fd00::/129"], "'fd00::/129'"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "::ffff:10.0.0.0/104"], "IPv4-mapped"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0.0/8", "--allow", "10.1.0.0/16"], "overlap"),
        (&["publish", "9091:172.16.1.1:80", "--allow", "10.0.0.0/8", "--allow", "10.0.0.0/8"], "overlap"),
        (&["publish", "9090:172.16.1.1:8080", "--allow", "10.0.0.0/8/8"], "'10.0.0.0/8/8'"),
        (&["unpublish", "9090", "--allow", "10.0.0.0/8"], "--allow"),
        (&["publish", "--allow", "10.0.0.0/8"], "SPEC"),
    ];
    for (args, want) in rows {
        let err = fails(args, 2);
        assert!(err.contains(want), "netnat {args:?}: {want:?} not in: {err}");
        assert_eq!(kernel_snapshot(), before, "netnat {args:?} changed the kernel");
    }
    // A file with a bad allow list is refused with its line.
    let path = std::env::temp_dir().join("netnat-bad-allow.toml");
    std::fs::write(&path, "publish = [{ spec = \"9092:172.16.1.1:80\", allow = [\"10.0.0.1/8\"] }]\n").unwrap();
    let err = fails(&["apply", "--check", "-f", path.to_str().unwrap()], 2);
    assert!(err.contains(":1:") && err.contains("host bits set"), "{err}");
    std::fs::write(&path, "publish = [{ spec = \"9092:172.16.1.1:80\", allow = [] }]\n").unwrap();
    let err = fails(&["apply", "--check", "-f", path.to_str().unwrap()], 2);
    assert!(err.contains("`allow` is empty"), "{err}");
    assert_eq!(kernel_snapshot(), before);
});

/// The audit's exposure finding for the port, if any (exit code, findings of that id).
fn exposure() -> (i32, Vec<Value>) {
    let (code, out, err) = netnat_out(&["audit", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("audit --json: {e}\n{out}\n{err}"));
    let f = v["findings"].as_array().unwrap();
    (code, f.iter().filter(|f| f["id"] == "exposure.bypasses-input-firewall").cloned().collect())
}

/// With an input firewall that drops, a published port is still reachable (forwarded packets
/// never meet input rules); the audit says so, naming the chain, until --allow restricts it.
fn input_firewall_is_bypassed(chain: &str) {
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    ok(&["publish", "9090:172.16.1.1:8080"]);
    assert_eq!(get("ext", 9090).unwrap(), format!("ns1 saw {EXT_IP}"), "the input firewall does not stop it");
    let (code, found) = exposure();
    assert_eq!(code, 1, "a warning fails the audit");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0]["message"].as_str().unwrap().contains(&format!("chain {chain} (input hook)")), "{found:?}");
    assert!(found[0]["objects"].as_array().unwrap().iter().any(|o| o == "9090:172.16.1.1:8080/tcp"));
    ok(&["publish", "9090:172.16.1.1:8080", "--allow", "198.51.100.0/24"]);
    let (code, found) = exposure();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(code, 0, "{}", ok(&["audit"]));
    let (_, out, _) = netnat_out(&["audit", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mappings"][0]["reach"], "sources in 198.51.100.0/24");
    assert_eq!(get("ext", 9090).unwrap(), format!("ns1 saw {EXT_IP}"));
}

isolated!(ufw_style_input_drop_is_bypassed, inner_ufw_style, {
    make_external_host();
    seed_topology();
    // ufw's layout through iptables-nft: INPUT policy DROP, jumps into ufw's chains.
    sh("iptables-nft -N ufw-before-input && iptables-nft -N ufw-user-input && iptables-nft -N ufw-after-input \
        && iptables-nft -A INPUT -j ufw-before-input && iptables-nft -A INPUT -j ufw-user-input \
        && iptables-nft -A INPUT -j ufw-after-input && iptables-nft -A ufw-user-input -p tcp --dport 22 -j ACCEPT \
        && iptables-nft -P INPUT DROP");
    input_firewall_is_bypassed("ip filter INPUT");
});

isolated!(nft_input_drop_is_bypassed, inner_nft_input, {
    make_external_host();
    seed_topology();
    sh("nft add table inet filter && nft add chain inet filter input '{ type filter hook input priority 0; policy drop; }' \
        && nft add rule inet filter input ct state established,related accept");
    input_firewall_is_bypassed("inet filter input");
});

isolated!(port_bound_to_an_interface, inner_port_bound_to_an_interface, {
    make_external_host();
    make_second_external_host();
    seed_topology();
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    let out = ok(&["publish", "veth-ext:9095:172.16.1.1:8080"]);
    assert!(out.contains("published veth-ext:9095:172.16.1.1:8080/tcp"), "{out}");
    // Through the bound interface: yes, and the container sees the client.
    assert_eq!(get("ext", 9095).unwrap(), format!("ns1 saw {EXT_IP}"));
    // Through the other interface: no, not even to the bound interface's address.
    assert!(tcp_get(Some(&ns("ext2")), "203.0.113.1:9095").is_err(), "answered on the other interface");
    assert!(tcp_get(Some(&ns("ext2")), &format!("{HOST_EXT_IP}:9095")).is_err(), "answered via the other interface");
    // An address the interface gets later works at once.
    sh("ip addr add 198.51.100.10/24 dev veth-ext");
    assert_eq!(tcp_get(Some(&ns("ext")), "198.51.100.10:9095").unwrap(), format!("ns1 saw {EXT_IP}"));
    // The host's own connections arrive on no interface: not through this mapping.
    assert!(tcp_get(None, &format!("{HOST_EXT_IP}:9095")).is_err());
    // Counted (its connections), listed with its interface, in the audit.
    let m = ls_json().into_iter().find(|m| m["host_port"] == 9095).unwrap();
    assert_eq!(m["host_if"], "veth-ext");
    assert!(m["connections_total"].as_u64().unwrap() >= 2, "{m}");
    assert!(ok(&["ls"]).contains("veth-ext:9095"));
    let (code, out, _) = netnat_out(&["audit", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("any source whose packets arrive on veth-ext"), "{out}");
    // Another interface may bind the same port; an every-address mapping may not.
    ok(&["publish", "veth-ext2:9095:172.16.1.2:8080"]);
    let err = fails(&["publish", "9095:172.16.1.2:8081"], 1);
    assert!(err.contains("already published as"), "{err}");
    // An interface that does not exist yet is accepted, with a note.
    let (code, _, err) = netnat_out(&["publish", "wg0:9096:172.16.1.1:8080"]);
    assert_eq!(code, 0);
    assert!(err.contains("interface wg0 of wg0:9096:172.16.1.1:8080/tcp does not exist (yet)"), "{err}");
    // unpublish by interface and port; save and apply give it back.
    let saved = ok(&["save"]);
    assert!(saved.contains("veth-ext:9095:172.16.1.1:8080/tcp"), "{saved}");
    ok(&["unpublish", "veth-ext:9095"]);
    assert!(get("ext", 9095).is_err());
    let path = std::env::temp_dir().join("netnat-if.toml");
    std::fs::write(&path, saved).unwrap();
    ok(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(get("ext", 9095).unwrap(), format!("ns1 saw {EXT_IP}"));
    // Bad interface names: exit 2, nothing changed.
    let before = kernel_snapshot();
    for (spec, want) in [
        ("this-name-is-too-long:9097:172.16.1.1:80", "is 21 bytes long"),
        ("a/b:9097:172.16.1.1:80", "an interface name cannot contain '/'"),
        ("veth-ext:9097:172.16.1.1:80", ""),
    ] {
        if want.is_empty() {
            let err = fails(&["publish", spec, "--allow", "10.0.0.0/8"], 2);
            assert!(err.contains("bound to an interface"), "{err}");
        } else {
            let err = fails(&["publish", spec], 2);
            assert!(err.contains(want), "{spec}: {err}");
        }
        assert_eq!(kernel_snapshot(), before, "{spec} changed the kernel");
    }
});

isolated!(allow_list_over_ipv6, inner_allow_list_over_ipv6, {
    make_external_host_v6();
    seed_topology_v6();
    let _s4 = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:80", "ns1");
    let _s6 = tcp_server(Some(&ns("Container_ns1")), "[fd00:16::2]:80", "ns1v6");
    // One list for a name target: each family's mapping takes the sources of its family.
    let out = ok(&["publish", "8080:Container_ns1:80", "--allow", "198.51.100.0/24", "--allow", "2001:db8:1::/64"]);
    assert!(out.contains("only from 2001:db8:1::/64") && out.contains("only from 198.51.100.0/24"), "{out}");
    assert_eq!(tcp_get_settled(Some(&ns("ext")), "[2001:db8:1::1]:8080").unwrap(), "ns1v6 saw 2001:db8:1::2");
    assert_eq!(tcp_get_settled(Some(&ns("ext")), "198.51.100.1:8080").unwrap(), "ns1 saw 198.51.100.2");
    // Another IPv6 source network: the IPv6 client is dropped and counted; IPv4 is unchanged.
    ok(&["publish", "[::]:8080:Container_ns1:80", "--allow", "2001:db8:9::/64"]);
    assert!(tcp_get(Some(&ns("ext")), "[2001:db8:1::1]:8080").is_err(), "the IPv6 client is not on the list");
    assert_eq!(tcp_get(Some(&ns("ext")), "198.51.100.1:8080").unwrap(), "ns1 saw 198.51.100.2");
    let v6 = ls_json().into_iter().find(|m| m["container_ip"] == "fd00:16::2").unwrap();
    assert_eq!(v6["allow"], serde_json::json!(["2001:db8:9::/64"]));
    assert!(v6["denied_packets"].as_u64().unwrap() > 0, "{v6}");
    // The source network, keyed with its mask (one hash element per port and network).
    assert!(sh("nft list set inet netnat allow_any6").contains("ffff:ffff:ffff:ffff:: . 2001:db8:9::"));
});
