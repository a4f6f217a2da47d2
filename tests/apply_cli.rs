//! `netnat apply`, `save` and `reload` against a real kernel, each test in its own throwaway
//! network and mount namespace (common::run_isolated). Traffic first, kernel listings second.

mod common;

use common::{fails, kernel_snapshot, netnat, ns, ok, sh, tcp_get, tcp_server, EXT_IP, HOST_EXT_IP};
use std::path::Path;

fn demo() -> String {
    format!("{}/rules/demo.toml", env!("CARGO_MANIFEST_DIR"))
}

/// Writes a config file under the test's private /run and returns its path.
fn file(name: &str, text: &str) -> String {
    std::fs::create_dir_all("/run/t").unwrap();
    let p = format!("/run/t/{name}");
    std::fs::write(&p, text).unwrap();
    p
}

fn published(port: u16) -> String {
    format!("{HOST_EXT_IP}:{port}")
}

/// A request from the external host to a published port reaches the server in Container_ns1,
/// which sees the external address (DNAT only, no SNAT on the way in).
fn assert_reaches_ns1(port: u16) {
    let got = tcp_get(Some(&ns("ext")), &published(port)).unwrap_or_else(|e| panic!("port {port}: {e}"));
    assert_eq!(got, format!("ns1 saw {EXT_IP}"));
}

fn nft_table() -> String {
    sh("nft list table inet netnat")
}

/// The counting element of a TCP port published on every IPv4 address: the connection mark its
/// DNAT rule sets (the port, then 0x4e and the family) and the protocol, as `nft` prints it.
/// Connection counter of the NAT element of a TCP host port, from `netnat show --counters`.
fn packets_of(port: u16) -> u64 {
    let show = ok(&["show", "--counters"]);
    let key = format!("tcp . {port} counter packets ");
    let at = show.find(&key).unwrap_or_else(|| panic!("no element for port {port} in:\n{show}")) + key.len();
    show[at..].split_whitespace().next().unwrap().parse().unwrap()
}

isolated!(demo_file_publishes_port_and_second_apply_changes_nothing, inner_demo_apply, {
    common::make_external_host();
    let out = ok(&["apply", "-f", &demo()]);
    assert!(out.contains("create bridge MyDocker0 172.16.1.254/16"), "{out}");
    assert!(out.contains("connect Container_ns1 to MyDocker0 as eth0 172.16.1.1"), "{out}");
    let _srv = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    assert_reaches_ns1(9090);

    let table = nft_table();
    let links = sh("ip -o link show | sed -e 's/ qlen.*//' -e 's/ state [A-Z]*//'");
    let again = ok(&["apply", "-f", &demo()]);
    assert_eq!(again.trim(), "no changes");
    assert_eq!(nft_table(), table, "second apply changed the table");
    assert_eq!(sh("ip -o link show | sed -e 's/ qlen.*//' -e 's/ state [A-Z]*//'"), links);
    assert_reaches_ns1(9090);
    // The sysctls it set are written down for systemd-sysctl.
    let conf = std::fs::read_to_string("/run/sysctl.d/50-netnat.conf").unwrap();
    assert!(conf.contains("net/ipv4/ip_forward = 1") && conf.contains("net/ipv4/conf/MyDocker0/route_localnet = 1"));
    ok(&["reset"]);
    assert!(!Path::new("/run/sysctl.d/50-netnat.conf").exists(), "reset left the sysctl.d drop-in");
});

const TWO_PORTS: &str = r#"
[[network]]
name = "MyDocker0"
subnet = "172.16.0.0/16"
gateway = "172.16.1.254"

[[sandbox]]
name = "Container_ns1"
[[sandbox.endpoint]]
network = "MyDocker0"
ip = "172.16.1.1"
publish = ["9090:172.16.1.1:8080", "9091:172.16.1.1:8080"]
"#;

isolated!(changing_one_port_sends_only_that_change, inner_one_port_change, {
    common::make_external_host();
    let f = file("two.toml", TWO_PORTS);
    ok(&["apply", "-f", &f]);
    let _srv = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    assert_reaches_ns1(9090);
    assert_reaches_ns1(9091);
    let before = packets_of(9090);
    assert!(before > 0, "the element of 9090 counted nothing");

    let f = file("two.toml", &TWO_PORTS.replace("9091:", "9092:"));
    let out = ok(&["apply", "-f", &f]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "delete element inet netnat pub_any4 { tcp . 9091 }",
            "add element inet netnat pub_any4 { tcp . 9092 : 172.16.1.1 . 8080 }"
        ],
        "apply sent more than the one change (its NAT element, which counts its connections)"
    );
    // The unchanged element was not re-created: its counter kept its packets.
    assert_eq!(packets_of(9090), before);
    assert_reaches_ns1(9092);
    assert!(tcp_get(Some(&ns("ext")), &published(9091)).is_err(), "9091 still forwarded");
    assert_reaches_ns1(9090);
});

isolated!(dry_run_changes_nothing, inner_dry_run, {
    sh("ip link set lo up");
    let empty = kernel_snapshot();
    let out = ok(&["apply", "--dry-run", "-f", &demo()]);
    assert!(out.contains("create namespace Container_ns1"), "{out}");
    assert!(out.contains("add element inet netnat pub_any4 { tcp . 9090 : 172.16.1.1 . 8080 }"), "{out}");
    assert!(out.contains("dry run: nothing was changed"));
    assert_eq!(kernel_snapshot(), empty, "dry run changed the kernel");

    ok(&["apply", "-f", &demo()]);
    let applied = kernel_snapshot();
    let changed = std::fs::read_to_string(demo())
        .unwrap()
        .replace("\"172.16.1.2\", \"fd00:16::3\"", "\"172.16.1.3\", \"fd00:16::3\"");
    let out = ok(&["apply", "--dry-run", "--prune", "-f", &file("changed.toml", &changed)]);
    assert!(out.contains("connect Container_ns2 to MyDocker0 as eth0 172.16.1.3 fd00:16::3"), "{out}");
    assert!(out.contains("disconnect Container_ns2 from MyDocker0 (eth0 172.16.1.2"), "{out}");
    assert_eq!(kernel_snapshot(), applied, "dry run changed the kernel");
    assert!(ok(&["apply", "--dry-run", "-f", &demo()]).contains("no changes"));
});

const ALL: &str = r#"
publish = ["8443:10.200.0.10:443"]

[[network]]
name = "front"
subnet = "172.20.0.0/16"
gateway = "172.20.0.1"
bridge = "br-front"

[[network]]
name = "back"
subnet = "172.21.0.0/24"
internal = true

[[network]]
name = "quiet"
subnet = "172.22.0.0/24"
masquerade = false

[[sandbox]]
name = "web"
[[sandbox.endpoint]]
network = "front"
ip = "172.20.0.10"
publish = ["80:172.20.0.10:8080", "127.0.0.1:5353:172.20.0.10:53/udp", "8000-8009:8000-8009"]
[[sandbox.endpoint]]
network = "back"
ifname = "eth1"

[[sandbox]]
name = "db"
[[sandbox.endpoint]]
network = "back"
[[sandbox.endpoint]]
network = "quiet"

[[sandbox]]
name = "lonely"
"#;

isolated!(save_reset_apply_round_trip, inner_round_trip, {
    sh("ip link set lo up");
    ok(&["apply", "-f", &file("all.toml", ALL)]);
    // Something made imperatively is saved too.
    ok(&["network", "create", "extra", "--subnet", "10.77.0.0/24"]);
    ok(&["sandbox", "create", "side", "--network", "extra"]);
    ok(&["publish", "7000:10.77.0.2:7000/sctp"]);
    let views =
        || [ok(&["network", "ls", "--json"]), ok(&["sandbox", "ls", "--json"]), ok(&["ls", "--json"]), ok(&["show"])];
    let before = views();
    let saved = ok(&["save"]);
    let f = file("saved.toml", &saved);
    assert_eq!(ok(&["apply", "--check", "-f", &f]).trim(), "ok");
    ok(&["reset"]);
    assert!(!Path::new("/run/netns/web").exists());
    let out = ok(&["apply", "-f", &f]);
    assert!(out.contains("create namespace web"), "{out}");
    let after = views();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a, b, "differs after save → reset → apply; saved file:\n{saved}");
    }
    assert_eq!(ok(&["apply", "-f", &f]).trim(), "no changes");
    assert_eq!(ok(&["save"]), saved);
});

isolated!(prune_removes_dropped_sandbox_and_otherwise_it_stays, inner_prune, {
    common::make_external_host();
    ok(&["apply", "-f", &demo()]);
    let text = std::fs::read_to_string(demo()).unwrap();
    let cut = text.find("[[sandbox]]\nname = \"Container_ns2\"").unwrap();
    let f = file("one.toml", &text[..cut]);

    let out = ok(&["apply", "-f", &f]);
    assert!(out.contains("kept (not in /run/t/one.toml; --prune removes it): sandbox Container_ns2"), "{out}");
    assert!(out.contains("no changes"), "{out}");
    assert!(ns("Container_ns2").exists());
    assert!(ok(&["sandbox", "ls"]).contains("Container_ns2"));

    let out = ok(&["apply", "--prune", "-f", &f]);
    assert!(out.contains("remove namespace Container_ns2"), "{out}");
    assert!(!out.contains("Container_ns1"), "{out}");
    assert!(!ns("Container_ns2").exists(), "namespace still there");
    assert!(!ok(&["sandbox", "ls"]).contains("Container_ns2"));
    assert!(!sh("ip -o link show").contains(&netnat::model::host_ifname("Container_ns2", "MyDocker0")));
    let _srv = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    assert_reaches_ns1(9090);
    assert_eq!(ok(&["apply", "--prune", "-f", &f]).trim(), "no changes");
});

isolated!(check_lists_every_problem_with_its_line, inner_check, {
    sh("ip link set lo up");
    let snap = kernel_snapshot();
    assert_eq!(ok(&["apply", "--check", "-f", &demo()]).trim(), "ok");
    let example = format!("{}/rules/example-all-options.toml", env!("CARGO_MANIFEST_DIR"));
    assert_eq!(ok(&["apply", "--check", "-f", &example]).trim(), "ok");
    let net = "[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/24\"\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("unknown.toml", format!("{net}colour = \"red\"\n"), vec![":4: unknown field `colour`"]),
        (
            "overlap.toml",
            format!("{net}[[network]]\nname = \"m\"\nsubnet = \"10.1.0.128/25\"\n"),
            vec![":3: subnet 10.1.0.0/24 of network n overlaps subnet 10.1.0.128/25 of network m (line 6)"],
        ),
        (
            "gateway.toml",
            format!("{net}gateway = \"10.2.0.1\"\n"),
            vec![":4: network n: gateway 10.2.0.1 is not a host address of subnet 10.1.0.0/24"],
        ),
        (
            "many.toml",
            format!(
                "{net}[[sandbox]]\nname = \"a\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.1.0.5\"\n\
                 publish = [\"80:10.1.0.5:80\", \"81-82:10.1.0.5:81\"]\n\
                 [[sandbox]]\nname = \"b\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.1.0.5\"\n\
                 publish = [\"80:10.1.0.5:8080\"]\n[[sandbox.endpoint]]\nnetwork = \"zzz\"\nifname = \"a/b\"\n\
                 [[sandbox]]\nname = \"a\"\n"
            ),
            vec![
                ":9: '81-82:10.1.0.5:81': host range 81-82 has 2 ports but container range 81 has 1",
                ":14: address 10.1.0.5 on network n is held by both sandbox a and sandbox b (line 8)",
                ":15: host port 80/tcp of 80:10.1.0.5:8080/tcp is already published by 80:10.1.0.5:80/tcp (line 9)",
                ":17: sandbox b: no network named zzz in this file",
                ":18: sandbox b: interface name 'a/b' contains '/'",
                ":20: sandbox a is defined twice (first at line 5)",
            ],
        ),
        (
            "bridge.toml",
            format!("{net}bridge = \"much-too-long-name\"\n"),
            vec![":4: network n: bridge name 'much-too-long-name' is 18 bytes long"],
        ),
        ("syntax.toml", format!("{net}[[network]\n"), vec![":4: "]),
    ];
    for (name, text, want) in cases {
        let f = file(name, &text);
        let err = fails(&["apply", "--check", "-f", &f], 2);
        for w in &want {
            let line = format!("{f}{w}");
            assert!(err.lines().any(|l| l.contains(&line)), "{name}: missing `{line}` in:\n{err}");
        }
        assert!(err.contains(&format!("{} problem(s) in {f}", want.len())), "{name}: wrong count in:\n{err}");
        // A full apply refuses the same way, before touching anything.
        fails(&["apply", "-f", &f], 2);
    }
    assert_eq!(kernel_snapshot(), snap, "checking changed the kernel");
});

isolated!(reload_after_ruleset_flush_restores_traffic, inner_reload, {
    common::make_external_host();
    ok(&["apply", "-f", &demo()]);
    let _srv = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    assert_reaches_ns1(9090);
    // Without counters (-s): the connections counted before the flush are gone with it, and one
    // request's packet count varies (a late ACK).
    let table = sh("nft -s list table inet netnat");

    // What an nftables.service restart or a systemd-sysctl run does.
    sh("nft flush ruleset");
    sh("echo 0 > /proc/sys/net/ipv4/ip_forward; echo 0 > /proc/sys/net/ipv4/conf/MyDocker0/route_localnet");
    assert!(tcp_get(Some(&ns("ext")), &published(9090)).is_err(), "traffic passed without the table");

    let out = ok(&["reload"]);
    assert!(out.contains("re-programmed"), "{out}");
    assert_reaches_ns1(9090);
    assert_eq!(sh("nft -s list table inet netnat"), table);
    assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
    assert_eq!(sh("cat /proc/sys/net/ipv4/conf/MyDocker0/route_localnet").trim(), "1");
    assert!(ok(&["reload"]).contains("already in place"));
});

isolated!(partial_failure_reports_continues_and_second_apply_completes, inner_partial, {
    common::make_external_host();
    // Something that is not netnat's holds the bridge name of one network.
    sh("ip link add nnblock type veth peer name nnblock-peer");
    let text = format!(
        "{}\n[[network]]\nname = \"blocked\"\nsubnet = \"10.66.0.0/24\"\nbridge = \"nnblock\"\n\
         [[sandbox]]\nname = \"victim\"\n[[sandbox.endpoint]]\nnetwork = \"blocked\"\n",
        std::fs::read_to_string(demo()).unwrap()
    );
    let f = file("partial.toml", &text);
    let out = netnat(&["apply", "-f", &f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not create bridge nnblock 10.66.0.1/24"), "{stderr}");
    assert!(stderr.contains("link nnblock exists but is a veth, not a bridge"), "{stderr}");
    assert!(stderr.contains("could not connect victim to blocked"), "{stderr}");
    // The rest was done: the other network carries traffic.
    let _srv = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    assert_reaches_ns1(9090);
    assert!(sh("ip -d link show nnblock").contains("veth"), "the obstacle was touched");

    sh("ip link del nnblock");
    let out = ok(&["apply", "-f", &f]);
    assert!(out.contains("create bridge nnblock 10.66.0.1/24"), "{out}");
    assert!(out.contains("connect victim to blocked as eth0 10.66.0.2"), "{out}");
    assert!(!out.contains("Container_ns1"), "{out}");
    assert!(sh("ip -d link show nnblock").contains("bridge"));
    assert!(sh("ip netns exec victim ip -o addr show eth0").contains("10.66.0.2/24"));
    assert_eq!(ok(&["apply", "-f", &f]).trim(), "no changes");
    assert_reaches_ns1(9090);
});

/// The units are valid for this machine's systemd (when it has systemd-analyze).
#[test]
fn systemd_units_verify() {
    let have = std::process::Command::new("systemd-analyze").arg("--version").output();
    if !have.is_ok_and(|o| o.status.success()) {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("netnat-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = vec![];
    for unit in [
        "netnat.service",
        "netnat-reload.service",
        "netnat-metrics.service",
        "netnat-metrics.timer",
        "netnat-docker.socket",
        "netnat-docker.service",
    ] {
        let text = std::fs::read_to_string(format!("{root}/systemd/{unit}")).unwrap();
        let runs = unit.ends_with(".service");
        assert!(!runs || text.contains("/usr/sbin/netnat "), "{unit} does not run /usr/sbin/netnat");
        // verify checks that ExecStart= exists: point it at the binary under test.
        let p = dir.join(unit);
        std::fs::write(&p, text.replace("/usr/sbin/netnat", common::NETNAT)).unwrap();
        paths.push(p);
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .expect("running systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("netnat"), "systemd-analyze verify: {stderr}");
    let main = std::fs::read_to_string(format!("{root}/systemd/netnat.service")).unwrap();
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "Before=network-pre.target",
        "Wants=network-pre.target",
        "ExecStart=/usr/sbin/netnat apply -f /etc/netnat/netnat.toml",
        "ExecReload=/usr/sbin/netnat reload",
    ] {
        assert!(main.lines().any(|l| l == line), "netnat.service lacks {line}");
    }
    let reload = std::fs::read_to_string(format!("{root}/systemd/netnat-reload.service")).unwrap();
    for line in ["PartOf=nftables.service", "WantedBy=nftables.service", "ExecStart=/usr/sbin/netnat reload"] {
        assert!(reload.lines().any(|l| l == line), "netnat-reload.service lacks {line}");
    }
    assert!(reload.lines().any(|l| l.starts_with("After=") && l.contains("nftables.service")));
    // Host firewalls (docs/host-firewalls.md): netnat.service after firewalld and ufw (both before
    // network-pre.target, as netnat is); `netnat reload` after each of them and dockerd starts.
    let after = |unit: &str, what: &str| unit.lines().any(|l| l.starts_with("After=") && l.contains(what));
    for fw in ["firewalld.service", "ufw.service"] {
        assert!(after(&main, fw), "netnat.service is not ordered after {fw}");
    }
    for fw in ["docker.service", "firewalld.service", "ufw.service"] {
        assert!(after(&reload, fw), "netnat-reload.service is not ordered after {fw}");
        assert!(
            reload.lines().any(|l| l.starts_with("WantedBy=") && l.contains(fw)),
            "{fw} does not pull in netnat-reload"
        );
        assert!(reload.lines().any(|l| l.starts_with("PartOf=") && l.contains(fw)), "{fw} restarts do not rerun it");
    }
    // Every 15 s into Debian's node-exporter textfile directory.
    let metrics = std::fs::read_to_string(format!("{root}/systemd/netnat-metrics.service")).unwrap();
    assert!(metrics
        .lines()
        .any(|l| l == "ExecStart=/usr/sbin/netnat metrics --textfile /var/lib/prometheus/node-exporter"));
    // Docker's driver: a socket on the path Docker looks up, activating the plugin.
    let socket = std::fs::read_to_string(format!("{root}/systemd/netnat-docker.socket")).unwrap();
    for line in ["ListenStream=/run/docker/plugins/netnat.sock", "Before=docker.service", "WantedBy=sockets.target"] {
        assert!(socket.lines().any(|l| l == line), "netnat-docker.socket lacks {line}");
    }
    let plugin = std::fs::read_to_string(format!("{root}/systemd/netnat-docker.service")).unwrap();
    for line in [
        "ExecStart=/usr/sbin/netnat docker-plugin --socket /run/docker/plugins/netnat.sock",
        "Also=netnat-docker.socket",
    ] {
        assert!(plugin.lines().any(|l| l == line), "netnat-docker.service lacks {line}");
    }
    let timer = std::fs::read_to_string(format!("{root}/systemd/netnat-metrics.timer")).unwrap();
    for line in ["OnUnitActiveSec=15s", "WantedBy=timers.target"] {
        assert!(timer.lines().any(|l| l == line), "netnat-metrics.timer lacks {line}");
    }
}
