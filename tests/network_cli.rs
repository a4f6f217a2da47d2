//! Integration tests of the network CLI (`network`, `sandbox`, `connect`, `disconnect`, `reset`)
//! against the real kernel. Each test runs the netnat binary inside its own throwaway network and
//! mount namespace with a private /run (see common::run_isolated); nothing touches the machine's
//! own namespace. Real traffic is checked first (TCP between namespaces), kernel state second.

mod common;

use common::{fails, kernel_snapshot, netnat, ns, ok, seed_topology, sh, tcp_get, tcp_server};
use netnat::model::host_ifname;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---- traffic ----

/// One TCP request from sandbox `from` (None: the test's host namespace) to a server listening
/// on `addr` in sandbox `to` (None: host namespace). Ok(the source address the server saw).
fn talk(from: Option<&str>, to: Option<&str>, addr: &str) -> Result<String, String> {
    talk_via(from, to, addr, addr)
}

/// Like `talk`, with the server bound to `bind` (e.g. 0.0.0.0:PORT) and the client sent to `dst`.
fn talk_via(from: Option<&str>, to: Option<&str>, bind: &str, dst: &str) -> Result<String, String> {
    let _srv = tcp_server(to.map(ns).as_deref(), bind, "srv");
    let answer = tcp_get(from.map(ns).as_deref(), dst)?;
    Ok(answer.strip_prefix("srv saw ").unwrap_or_else(|| panic!("odd answer {answer:?}")).to_string())
}

/// The request succeeds and the server sees `src`, the sender's own address (nothing rewrites it).
#[track_caller]
fn assert_talk(from: Option<&str>, to: Option<&str>, addr: &str, src: &str) {
    match talk(from, to, addr) {
        Ok(seen) => assert_eq!(seen, src, "{from:?} -> {to:?} {addr}: server saw the wrong source"),
        Err(e) => panic!("{from:?} -> {to:?} {addr}: {e}"),
    }
}

#[track_caller]
fn assert_no_talk(from: Option<&str>, to: Option<&str>, addr: &str) {
    if let Ok(seen) = talk(from, to, addr) {
        panic!("{from:?} -> {to:?} {addr} got through (server saw {seen}), expected no connectivity");
    }
}

// ---- kernel and record state ----

fn json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("netnat {args:?} printed invalid JSON ({e}):\n{out}"))
}

fn sandboxes() -> Value {
    json(&["sandbox", "ls", "--json"])
}

fn networks() -> Value {
    json(&["network", "ls", "--json"])
}

/// The recorded endpoint of `sandbox` on `network`.
fn endpoint(sandbox: &str, network: &str) -> Value {
    let sbs = sandboxes();
    let sb = sbs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sandbox)
        .unwrap_or_else(|| panic!("sandbox {sandbox} not recorded: {sbs:#}"));
    sb["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["network"] == network)
        .unwrap_or_else(|| panic!("{sandbox} has no endpoint on {network}: {sb:#}"))
        .clone()
}

fn ip_of(sandbox: &str, network: &str) -> String {
    endpoint(sandbox, network)["ip"].as_str().unwrap().to_string()
}

/// `ip -n NS ARGS` (or plain `ip ARGS` for None), which must succeed.
fn ip(netns: Option<&str>, args: &str) -> String {
    match netns {
        Some(n) => sh(&format!("ip -n {n} {args}")),
        None => sh(&format!("ip {args}")),
    }
}

/// Names of the links in a namespace, sorted.
fn link_names(netns: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = ip(netns, "-o link show")
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap().split('@').next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn netns_list() -> Vec<String> {
    let mut v: Vec<String> =
        sh("ip netns list").lines().map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    v.sort();
    v
}

/// kernel_snapshot() plus the inside of the given sandboxes and netnat's record.
fn snapshot(sandboxes: &[&str]) -> String {
    let mut s = kernel_snapshot();
    for sb in sandboxes {
        s += &sh(&format!(
            "echo '== {sb}'; ip -n {sb} -o link show | sed 's/ qlen.*//'; ip -n {sb} -o addr show; ip -n {sb} route show"
        ));
    }
    s += &ok(&["network", "ls", "--json"]);
    s += &ok(&["sandbox", "ls", "--json"]);
    s
}

/// A snapshot once the kernel has stopped changing on its own (IPv6 duplicate address detection,
/// carrier and bridge port states settle within a few seconds of links coming up).
fn settled(sandboxes: &[&str]) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let a = snapshot(sandboxes);
        if !a.contains("tentative") {
            std::thread::sleep(Duration::from_millis(500));
            let b = snapshot(sandboxes);
            if a == b {
                return b;
            }
        }
        assert!(Instant::now() < end, "kernel state did not settle within 20 s:\n{a}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[track_caller]
fn assert_same(before: &str, after: &str, what: &str) {
    if before != after {
        let b: Vec<&str> = before.lines().collect();
        let a: Vec<&str> = after.lines().collect();
        let gone: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
        let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
        panic!("{what} changed the kernel or the record:\n  gone: {gone:#?}\n  new: {new:#?}\n--- after:\n{after}");
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---- 1. the seed topology ----

isolated!(seed_topology_talks_and_is_wired, inner_seed_topology_talks_and_is_wired, {
    seed_topology();
    let (ns1, ns2) = (Some("Container_ns1"), Some("Container_ns2"));

    // Traffic first: both ways between the sandboxes, each sandbox to the gateway.
    assert_talk(ns1, ns2, "172.16.1.2:8080", "172.16.1.1");
    assert_talk(ns2, ns1, "172.16.1.1:8080", "172.16.1.2");
    assert_talk(ns1, None, "172.16.1.254:8081", "172.16.1.1");
    assert_talk(ns2, None, "172.16.1.254:8082", "172.16.1.2");

    // Kernel state.
    assert_eq!(netns_list(), ["Container_ns1", "Container_ns2"]);
    let bridge = ip(None, "-d -o link show dev MyDocker0");
    assert!(bridge.contains("bridge") && bridge.contains(",UP"), "{bridge}");
    assert!(ip(None, "-o addr show dev MyDocker0").contains("inet 172.16.1.254/16"));
    for (sb, addr) in [("Container_ns1", "172.16.1.1"), ("Container_ns2", "172.16.1.2")] {
        let lo = ip(Some(sb), "-o link show dev lo");
        assert!(lo.contains("<LOOPBACK,UP"), "{sb}: lo not up: {lo}");
        let eth0 = ip(Some(sb), "-o addr show dev eth0");
        assert!(eth0.contains(&format!("inet {addr}/16 ")), "{sb}: {eth0}");
        assert!(ip(Some(sb), "-o link show dev eth0").contains(",UP"));
        let default = ip(Some(sb), "route show default");
        assert_eq!(default.trim().lines().count(), 1, "{sb}: {default}");
        assert!(default.starts_with("default via 172.16.1.254 dev eth0"), "{sb}: {default}");
        assert_eq!(link_names(Some(sb)), ["eth0", "lo"], "{sb}");

        let host = host_ifname(sb, "MyDocker0");
        assert_eq!(endpoint(sb, "MyDocker0")["host_ifname"], host.as_str());
        let l = ip(None, &format!("-d -o link show dev {host}"));
        assert!(l.contains("master MyDocker0") && l.contains("veth") && l.contains(",UP"), "{l}");
    }
    let ports = ip(None, "-o link show master MyDocker0");
    assert_eq!(ports.lines().count(), 2, "{ports}");
    assert!(ip(None, "-o link show type veth").lines().count() == 2);
});

// ---- 2. reset ----

isolated!(reset_removes_all_and_only_netnat_things, inner_reset_removes_all_and_only_netnat_things, {
    let (links0, netns0, nft0) = (ip(None, "-o link show"), netns_list(), sh("nft list ruleset"));
    let forward0 = sh("cat /proc/sys/net/ipv4/ip_forward");

    sh("ip netns add other");
    seed_topology();
    ok(&["sandbox", "create", "other", "--network", "MyDocker0"]);
    assert_eq!(sandboxes().as_array().unwrap().iter().find(|s| s["name"] == "other").unwrap()["created"], false);
    ok(&["network", "create", "second", "--subnet", "10.77.0.0/24"]);
    ok(&["connect", "second", "Container_ns1"]);
    let other_ip = ip_of("other", "MyDocker0");
    assert_talk(Some("other"), None, "172.16.1.254:7000", &other_ip);
    assert_talk(Some("Container_ns1"), Some("other"), &format!("{other_ip}:7001"), "172.16.1.1");
    assert!(sh("nft list tables").contains("inet netnat"));

    ok(&["reset"]);

    // The adopted namespace survives, cut off: only its loopback is left.
    assert_eq!(netns_list(), ["other"]);
    assert_eq!(link_names(Some("other")), ["lo"]);
    assert!(talk_via(Some("other"), None, "0.0.0.0:7002", "172.16.1.254:7002").is_err());
    // Everything else is as before the test made anything.
    assert_eq!(ip(None, "-o link show"), links0, "links after reset differ from before");
    assert_eq!(netns_list().into_iter().filter(|n| n != "other").collect::<Vec<_>>(), netns0);
    assert_eq!(sh("nft list ruleset"), nft0);
    assert!(!sh("nft list tables").contains("netnat"));
    assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward"), forward0, "ip_forward not restored");
    assert_eq!(networks(), serde_json::json!([]));
    assert_eq!(sandboxes(), serde_json::json!([]));

    // A second reset has nothing to do and still succeeds.
    ok(&["reset"]);
    assert_eq!(netns_list(), ["other"]);
});

// ---- 3. defaults ----

isolated!(defaults_are_docker_like, inner_defaults_are_docker_like, {
    ok(&["network", "create", "n2", "--subnet", "10.20.0.0/24"]);
    let nets = networks();
    assert_eq!(nets[0]["bridge"], "n2");
    assert_eq!(nets[0]["gateway"], "10.20.0.1");
    assert!(ip(None, "-o addr show dev n2").contains("inet 10.20.0.1/24"));

    ok(&["sandbox", "create", "a", "--network", "n2"]);
    ok(&["sandbox", "create", "b"]);
    ok(&["connect", "n2", "b"]);
    ok(&["sandbox", "create", "c", "--network", "n2", "--ifname", "web0"]);
    assert_eq!(ip_of("a", "n2"), "10.20.0.2");
    assert_eq!(ip_of("b", "n2"), "10.20.0.3");
    assert_eq!(ip_of("c", "n2"), "10.20.0.4");
    assert_talk(Some("a"), Some("b"), "10.20.0.3:9000", "10.20.0.2");
    assert_talk(Some("b"), None, "10.20.0.1:9001", "10.20.0.3");
    assert_talk(Some("a"), Some("c"), "10.20.0.4:9002", "10.20.0.2");
    assert_eq!(endpoint("c", "n2")["ifname"], "web0");
    assert_eq!(link_names(Some("c")), ["lo", "web0"]);
    assert!(ip(Some("c"), "-o addr show dev web0").contains("inet 10.20.0.4/24"));
    assert!(ip(Some("c"), "route show default").starts_with("default via 10.20.0.1 dev web0"));

    // A second network: eth1, reachable, and still a single default route through the first.
    ok(&["network", "create", "n3", "--subnet", "10.21.0.0/24"]);
    ok(&["connect", "n3", "a"]);
    assert_eq!(endpoint("a", "n3")["ifname"], "eth1");
    assert_eq!(ip_of("a", "n3"), "10.21.0.2");
    assert_talk(Some("a"), None, "10.21.0.1:9003", "10.21.0.2");
    assert_talk(Some("a"), None, "10.20.0.1:9004", "10.20.0.2");
    let default = ip(Some("a"), "route show default");
    assert_eq!(default.trim().lines().count(), 1, "{default}");
    assert!(default.starts_with("default via 10.20.0.1 dev eth0"), "{default}");
    assert!(ip(Some("a"), "-o addr show dev eth1").contains("inet 10.21.0.2/24"));

    // Allocation never hands out the network, gateway or broadcast address: in a /29 with the
    // gateway in the middle, exactly .1 .2 .4 .5 .6 are given out, then the network is full.
    ok(&["network", "create", "small", "--subnet", "10.22.0.0/29", "--gateway", "10.22.0.3"]);
    let mut got = vec![];
    for i in 0..5 {
        let sb = format!("s{i}");
        ok(&["sandbox", "create", &sb, "--network", "small"]);
        got.push(ip_of(&sb, "small"));
    }
    assert_eq!(got, ["10.22.0.1", "10.22.0.2", "10.22.0.4", "10.22.0.5", "10.22.0.6"]);
    ok(&["sandbox", "create", "full"]);
    let err = fails(&["connect", "small", "full"], 2);
    assert!(err.contains("no free address") && err.contains("10.22.0.0/29"), "{err}");
    assert_eq!(link_names(Some("full")), ["lo"]);
    assert_talk(Some("s4"), Some("s0"), "10.22.0.1:9005", "10.22.0.6");
    assert_talk(Some("s2"), None, "10.22.0.3:9006", "10.22.0.4");
    // A freed address is handed out again.
    ok(&["disconnect", "small", "s1"]);
    ok(&["connect", "small", "full"]);
    assert_eq!(ip_of("full", "small"), "10.22.0.2");
    assert_talk(Some("full"), None, "10.22.0.3:9007", "10.22.0.2");
});

// ---- 4. idempotence ----

isolated!(repeated_commands_are_idempotent, inner_repeated_commands_are_idempotent, {
    ok(&["network", "create", "n", "--subnet", "10.40.0.0/24", "--gateway", "10.40.0.1"]);
    ok(&["sandbox", "create", "s", "--network", "n", "--ip", "10.40.0.10"]);
    ok(&["sandbox", "create", "t"]);
    ok(&["connect", "n", "t", "--ip", "10.40.0.11", "--ifname", "eth0"]);
    assert_talk(Some("s"), Some("t"), "10.40.0.11:5000", "10.40.0.10");
    let before = settled(&["s", "t"]);

    let same: &[&[&str]] = &[
        &["network", "create", "n", "--subnet", "10.40.0.0/24", "--gateway", "10.40.0.1"],
        &["network", "create", "n", "--subnet", "10.40.0.0/24"],
        &["sandbox", "create", "s", "--network", "n", "--ip", "10.40.0.10"],
        &["sandbox", "create", "s", "--network", "n"],
        &["sandbox", "create", "s"],
        &["sandbox", "create", "t"],
        &["connect", "n", "t", "--ip", "10.40.0.11", "--ifname", "eth0"],
        &["connect", "n", "t", "--ip", "10.40.0.11"],
        &["connect", "n", "t"],
        &["connect", "n", "s", "--ifname", "eth0"],
    ];
    for args in same {
        ok(args);
        assert_same(&before, &snapshot(&["s", "t"]), &format!("repeating {args:?}"));
    }

    // Different settings: exit 2, the message names the recorded and the asked value.
    let differ: &[(&[&str], &[&str])] = &[
        (&["network", "create", "n", "--subnet", "10.41.0.0/24"], &["subnet", "10.40.0.0/24", "10.41.0.0/24"]),
        (
            &["network", "create", "n", "--subnet", "10.40.0.0/24", "--gateway", "10.40.0.254"],
            &["10.40.0.1 ", "10.40.0.254"],
        ),
        (&["network", "create", "n", "--subnet", "10.40.0.0/24", "--bridge", "br-n"], &["bridge", "br-n"]),
        (&["network", "create", "n", "--subnet", "10.40.0.0/24", "--no-masquerade"], &["masquerade"]),
        (&["network", "create", "n", "--subnet", "10.40.0.0/24", "--internal"], &["internal"]),
        (&["connect", "n", "t", "--ip", "10.40.0.12"], &["10.40.0.11", "10.40.0.12"]),
        (&["connect", "n", "t", "--ifname", "eth7"], &["eth0", "eth7"]),
        (&["sandbox", "create", "s", "--network", "n", "--ip", "10.40.0.20"], &["10.40.0.10", "10.40.0.20"]),
    ];
    for (args, needles) in differ {
        let err = fails(args, 2);
        for n in *needles {
            assert!(err.contains(n), "netnat {args:?}: message does not name {n:?}: {err}");
        }
        assert_same(&before, &snapshot(&["s", "t"]), &format!("{args:?} (refused)"));
    }

    // Removing what is not there is not an error, and changes nothing.
    ok(&["sandbox", "create", "u"]);
    let before = settled(&["s", "t", "u"]);
    for args in [
        &["network", "rm", "absent"][..],
        &["sandbox", "rm", "absent"],
        &["disconnect", "n", "u"],
        &["disconnect", "absent", "s"],
    ] {
        ok(args);
        assert_same(&before, &snapshot(&["s", "t", "u"]), &format!("{args:?}"));
    }
    ok(&["sandbox", "rm", "u"]);
    ok(&["sandbox", "rm", "u"]);
    ok(&["disconnect", "n", "t"]);
    ok(&["disconnect", "n", "t"]);
    assert_eq!(link_names(Some("t")), ["lo"]);
    assert_talk(Some("s"), None, "10.40.0.1:5001", "10.40.0.10");
});

// ---- 5. bad input ----

isolated!(bad_input_is_refused_and_changes_nothing, inner_bad_input_is_refused_and_changes_nothing, {
    ok(&["network", "create", "n", "--subnet", "10.50.0.0/24"]);
    ok(&["sandbox", "create", "s", "--network", "n", "--ip", "10.50.0.2"]);
    ok(&["sandbox", "create", "t"]);
    let before = settled(&["s", "t"]);

    // (arguments, what the message must name)
    let rows: &[(&[&str], &str)] = &[
        (&["network", "create", "aaaaaaaaaaaaaaaa", "--subnet", "10.1.0.0/24"], "aaaaaaaaaaaaaaaa"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--bridge", "bbbbbbbbbbbbbbbb"], "bbbbbbbbbbbbbbbb"),
        (&["network", "create", "a/b", "--subnet", "10.1.0.0/24"], "a/b"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--bridge", "c/d"], "c/d"),
        (&["network", "create", "a b", "--subnet", "10.1.0.0/24"], "a b"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--bridge", "c d"], "c d"),
        (&["network", "create", "", "--subnet", "10.1.0.0/24"], "empty"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--bridge", ""], "empty"),
        (&["network", "create", "..", "--subnet", "10.1.0.0/24"], "'..'"),
        (&["network", "create", "x", "--subnet", "10.1.0.5/24"], "10.1.0.5/24"),
        (&["network", "create", "x", "--subnet", "10.1.0.0"], "10.1.0.0"),
        (&["network", "create", "x", "--subnet", "banana"], "banana"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/33"], "10.1.0.0/33"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/31"], "10.1.0.0/31"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--gateway", "10.2.0.1"], "10.2.0.1"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--gateway", "10.1.0.255"], "10.1.0.255"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--gateway", "10.1.0.0"], "10.1.0.0"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--gateway", "gw"], "'gw'"),
        (&["network", "create", "x", "--subnet", "fe80::/64"], "fe80::/64"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--gateway", "fd00::1"], "fd00::1"),
        (&["network", "create", "x", "--subnet", "10.50.0.128/25"], "10.50.0.0/24"),
        (&["network", "create", "x", "--subnet", "10.0.0.0/8"], "10.50.0.0/24"),
        (&["network", "create", "x", "--subnet", "10.60.0.0/24", "--bridge", "n"], "bridge n"),
        (&["network", "create", "x", "--subnet", "10.60.0.0/24", "--bridge", "lo"], "lo"),
        (&["connect", "n", "t", "--ip", "10.99.0.5"], "10.99.0.5"),
        (&["connect", "n", "t", "--ip", "10.50.0.1"], "10.50.0.1"),
        (&["connect", "n", "t", "--ip", "10.50.0.2"], "10.50.0.2"),
        (&["connect", "n", "t", "--ip", "10.50.0.0"], "10.50.0.0"),
        (&["connect", "n", "t", "--ip", "10.50.0.255"], "10.50.0.255"),
        (&["connect", "n", "t", "--ip", "ten"], "'ten'"),
        (&["connect", "n", "t", "--ip", "fd00::5"], "fd00::5"),
        (&["connect", "n", "t", "--ifname", "e/0"], "e/0"),
        (&["connect", "n", "t", "--ifname", "eeeeeeeeeeeeeeee"], "eeeeeeeeeeeeeeee"),
        (&["connect", "nope", "t"], "nope"),
        (&["connect", "n", "nope"], "nope"),
        (&["sandbox", "create", "u", "--network", "nope"], "nope"),
        (&["sandbox", "create", "u", "--network", "n", "--ip", "10.50.0.1"], "10.50.0.1"),
        (&["sandbox", "create", "u", "--network", "n", "--ip", "10.50.0.2"], "10.50.0.2"),
        (&["sandbox", "create", "a/b"], "a/b"),
        (&["sandbox", "create", "u", "--ip", "10.50.0.9"], "--network"),
        (&["network", "frobnicate"], "frobnicate"),
        (&["network", "create", "x", "--subnet", "10.1.0.0/24", "--frob"], "--frob"),
        (&["network", "create", "x"], "--subnet"),
        (&["connect", "n"], "SANDBOX"),
        (&["frobnicate"], "frobnicate"),
    ];
    assert!(rows.len() >= 20);
    for (args, needle) in rows {
        let out = netnat(args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "netnat {args:?}: expected exit 2, stderr: {err}");
        assert!(err.contains(needle), "netnat {args:?}: message does not name {needle:?}: {err}");
        assert!(out.stdout.is_empty(), "netnat {args:?} printed to stdout on failure");
        assert_same(&before, &snapshot(&["s", "t"]), &format!("netnat {args:?}"));
    }
    // The extra sandbox of the refused `sandbox create u --network ...` rows was never made.
    assert_eq!(netns_list(), ["s", "t"]);
    assert_talk(Some("s"), None, "10.50.0.1:6000", "10.50.0.2");
});

// ---- 6. nothing half-made ----

isolated!(failed_connect_leaves_nothing, inner_failed_connect_leaves_nothing, {
    ok(&["network", "create", "n", "--subnet", "10.60.0.0/24"]);
    ok(&["sandbox", "create", "s", "--network", "n"]);
    ok(&["sandbox", "create", "t"]);

    // The host end's derived name is taken by someone else's link.
    let host = host_ifname("t", "n");
    sh(&format!("ip link add {host} type bridge"));
    let links0 = link_names(None);
    let record0 = sandboxes();
    let err = fails(&["connect", "n", "t"], 1);
    assert!(err.contains(&host), "message does not name {host}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(link_names(None), links0, "stray link on the host");
    assert!(ip(None, &format!("-d -o link show dev {host}")).contains("bridge"), "the colliding link was touched");
    assert_eq!(link_names(Some("t")), ["lo"], "stray link in the sandbox");
    assert_eq!(sandboxes(), record0, "record changed");
    assert_eq!(ip(None, "-o link show type veth").lines().count(), 1);
    // Same through `sandbox create --network`: nothing is made, the adopted/new namespace is not kept.
    let host_u = host_ifname("u", "n");
    sh(&format!("ip link add {host_u} type bridge"));
    let links0 = link_names(None);
    fails(&["sandbox", "create", "u", "--network", "n"], 1);
    assert_eq!(link_names(None), links0);
    assert_eq!(netns_list(), ["s", "t"], "namespace u left behind");
    assert_eq!(sandboxes(), record0, "record changed");

    // With the name free again, the same connect works.
    sh(&format!("ip link del {host}"));
    ok(&["connect", "n", "t"]);
    assert_talk(Some("t"), Some("s"), &format!("{}:4000", ip_of("s", "n")), &ip_of("t", "n"));

    // A failure after the pair exists: the sandbox already has a default route, so adding the
    // endpoint's route fails. The pair must be rolled back and the record left as it was.
    sh("ip netns add v && ip -n v route add blackhole default");
    ok(&["sandbox", "create", "v"]);
    let links0 = link_names(None);
    let record0 = sandboxes();
    let err = fails(&["connect", "n", "v"], 1);
    assert!(err.contains("default route"), "{err}");
    assert_eq!(link_names(None), links0, "stray veth on the host");
    assert_eq!(link_names(Some("v")), ["lo"], "stray link in the sandbox");
    assert_eq!(sandboxes(), record0, "record changed");
    assert!(ip(Some("v"), "route show default").contains("blackhole default"));
});

// ---- 7. concurrency ----

isolated!(concurrent_connects_get_distinct_addresses, inner_concurrent_connects_get_distinct_addresses, {
    ok(&["network", "create", "n", "--subnet", "10.70.0.0/24"]);
    let names: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        ok(&["sandbox", "create", n]);
    }
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            Command::new(common::NETNAT)
                .args(["connect", "n", n])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning netnat")
        })
        .collect();
    for (n, c) in names.iter().zip(children) {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "connect n {n} failed: {}", stderr_of(&out));
    }
    let mut ips: Vec<String> = names.iter().map(|n| ip_of(n, "n")).collect();
    for (n, addr) in names.iter().zip(&ips) {
        assert_talk(Some(n), None, "10.70.0.1:3000", addr);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "addresses handed out twice: {ips:?}");
    assert!(!ips.iter().any(|i| i == "10.70.0.1" || i == "10.70.0.0" || i == "10.70.0.255"), "{ips:?}");
    assert_eq!(ip(None, "-o link show master n").lines().count(), 20);
});

// ---- 8. network rm and disconnect ----

isolated!(network_rm_and_disconnect, inner_network_rm_and_disconnect, {
    ok(&["network", "create", "n", "--subnet", "10.80.0.0/24"]);
    ok(&["sandbox", "create", "s", "--network", "n"]);
    ok(&["sandbox", "create", "t", "--network", "n"]);
    let host = host_ifname("s", "n");

    let err = fails(&["network", "rm", "n"], 2);
    assert!(err.contains("s, t") || (err.contains(" s") && err.contains(" t")), "does not name the sandboxes: {err}");
    assert_talk(Some("s"), None, "10.80.0.1:2000", "10.80.0.2");
    assert!(link_names(None).contains(&"n".to_string()));

    ok(&["disconnect", "n", "s"]);
    assert_no_talk(Some("s"), None, "10.80.0.1:2001");
    // Nothing answers at s's old address any more, even with s listening on every address.
    assert!(talk_via(Some("t"), Some("s"), "0.0.0.0:2002", "10.80.0.2:2002").is_err());
    assert!(!link_names(None).contains(&host), "host end {host} of the pair is still there");
    assert_eq!(link_names(Some("s")), ["lo"], "sandbox end of the pair is still there");
    assert!(endpoint_less("s"));
    let err = fails(&["network", "rm", "n"], 2);
    assert!(err.contains(" t") && !err.contains(" s,"), "{err}");
    assert_talk(Some("t"), None, "10.80.0.1:2003", "10.80.0.3");

    ok(&["disconnect", "n", "t"]);
    ok(&["network", "rm", "n"]);
    assert!(!link_names(None).contains(&"n".to_string()), "bridge still there");
    assert_eq!(ip(None, "-o link show type veth"), "");
    assert_eq!(networks(), serde_json::json!([]));
    assert_eq!(netns_list(), ["s", "t"], "sandboxes are not removed with the network");
    // With the network gone, no netnat rule names its bridge any more.
    assert!(!sh("nft list ruleset").contains("\"n\""), "{}", sh("nft list ruleset"));
    ok(&["sandbox", "rm", "s"]);
    ok(&["sandbox", "rm", "t"]);
    assert!(netns_list().is_empty());
});

fn endpoint_less(sandbox: &str) -> bool {
    let sbs = sandboxes();
    let sb = sbs.as_array().unwrap().iter().find(|s| s["name"] == sandbox).unwrap().clone();
    sb["endpoints"] == serde_json::json!([])
}

// ---- 9. JSON listings ----

isolated!(json_listings, inner_json_listings, {
    assert_eq!(networks(), serde_json::json!([]));
    assert_eq!(sandboxes(), serde_json::json!([]));
    seed_topology();
    ok(&["network", "create", "quiet", "--subnet", "10.90.0.0/24", "--bridge", "br-quiet", "--no-masquerade"]);
    ok(&["network", "create", "inner", "--subnet", "10.91.0.0/24", "--internal"]);
    sh("ip netns add adopted");
    ok(&["sandbox", "create", "adopted", "--network", "quiet", "--ifname", "q0"]);
    ok(&["connect", "inner", "Container_ns1"]);
    assert_talk(Some("adopted"), None, "10.90.0.1:1000", "10.90.0.2");

    let nets = networks();
    let nets = nets.as_array().expect("network ls --json is an array");
    assert_eq!(nets.len(), 3);
    let by = |name: &str| nets.iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("{name}: {nets:#?}"));
    assert_eq!(
        *by("MyDocker0"),
        serde_json::json!({"name": "MyDocker0", "subnet": "172.16.0.0/16", "gateway": "172.16.1.254",
                            "bridge": "MyDocker0", "masquerade": true, "internal": false})
    );
    assert_eq!(
        *by("quiet"),
        serde_json::json!({"name": "quiet", "subnet": "10.90.0.0/24", "gateway": "10.90.0.1",
                            "bridge": "br-quiet", "masquerade": false, "internal": false})
    );
    assert_eq!(by("inner")["internal"], true);
    for n in nets {
        assert!(link_names(None).contains(&n["bridge"].as_str().unwrap().to_string()));
    }

    let sbs = sandboxes();
    let sbs = sbs.as_array().expect("sandbox ls --json is an array");
    assert_eq!(sbs.len(), 3);
    let sb = |name: &str| sbs.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {sbs:#?}"));
    assert_eq!(
        *sb("Container_ns1"),
        serde_json::json!({"name": "Container_ns1", "created": true, "endpoints": [
            {"network": "MyDocker0", "ip": "172.16.1.1", "ifname": "eth0",
             "host_ifname": host_ifname("Container_ns1", "MyDocker0")},
            {"network": "inner", "ip": "10.91.0.2", "ifname": "eth1",
             "host_ifname": host_ifname("Container_ns1", "inner")},
        ]})
    );
    assert_eq!(sb("Container_ns2")["endpoints"][0]["ip"], "172.16.1.2");
    assert_eq!(
        *sb("adopted"),
        serde_json::json!({"name": "adopted", "created": false, "endpoints": [
            {"network": "quiet", "ip": "10.90.0.2", "ifname": "q0", "host_ifname": host_ifname("adopted", "quiet")},
        ]})
    );
    // Every recorded endpoint is in the kernel where the record says.
    for s in sbs {
        for e in s["endpoints"].as_array().unwrap() {
            let net = nets.iter().find(|n| n["name"] == e["network"]).unwrap();
            let host = ip(None, &format!("-o link show dev {}", e["host_ifname"].as_str().unwrap()));
            assert!(host.contains(&format!("master {}", net["bridge"].as_str().unwrap())), "{host}");
            let inside =
                ip(Some(s["name"].as_str().unwrap()), &format!("-o addr show dev {}", e["ifname"].as_str().unwrap()));
            assert!(inside.contains(&format!("inet {}/", e["ip"].as_str().unwrap())), "{inside}");
        }
    }
});

// ---- 10. without CAP_NET_ADMIN ----

isolated!(without_cap_net_admin_nothing_changes, inner_without_cap_net_admin_nothing_changes, {
    ok(&["network", "create", "n", "--subnet", "10.95.0.0/24"]);
    ok(&["sandbox", "create", "s", "--network", "n"]);
    let before = settled(&["s"]);

    let unprivileged: &[&[&str]] = &[
        // Root, but with CAP_NET_ADMIN gone from the bounding set: netnat checks the capability.
        &["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin"],
        // An ordinary user.
        &[
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-net_admin",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
    ];
    for wrap in unprivileged {
        for args in [
            &["network", "create", "n2", "--subnet", "10.96.0.0/24"][..],
            &["disconnect", "n", "s"],
            &["network", "rm", "n"],
            &["reset"],
        ] {
            let out = Command::new(wrap[0]).args(&wrap[1..]).arg(common::NETNAT).args(args).output().unwrap();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "{wrap:?} netnat {args:?}: stderr: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
            assert!(err.contains("CAP_NET_ADMIN"), "{err}");
            assert_same(&before, &snapshot(&["s"]), &format!("unprivileged netnat {args:?}"));
        }
    }
    assert_talk(Some("s"), None, "10.95.0.1:1500", "10.95.0.2");
    assert!(!link_names(None).contains(&"n2".to_string()));
});
