//! Reliability under faults and bad input (issue 7): SIGKILL during apply, malformed input.
//! Each test runs in its own throwaway network + mount namespace.

mod common;
use common::*;
use std::time::Instant;

fn write(name: &str, text: &str) -> String {
    let path = format!("/run/{name}");
    std::fs::write(&path, text).unwrap();
    path
}

const STATE_A: &str = r#"
[[network]]
name = "netA"
subnet = "10.60.0.0/24"
[[network]]
name = "netB"
subnet = ["10.61.0.0/24", "fd00:61::/64"]
[[sandbox]]
name = "s1"
[[sandbox.endpoint]]
network = "netA"
ip = "10.60.0.2"
publish = ["20000-29999:10.60.0.2:20000-29999"]
[[sandbox]]
name = "s2"
[[sandbox.endpoint]]
network = "netA"
ip = "10.60.0.3"
[[sandbox]]
name = "s3"
[[sandbox.endpoint]]
network = "netB"
ip = ["10.61.0.2", "fd00:61::2"]
publish = ["[::]:40000-44999:[fd00:61::2]:40000-44999"]
"#;

const STATE_B: &str = r#"
[[network]]
name = "netA"
subnet = "10.60.0.0/24"
[[network]]
name = "netC"
subnet = ["10.62.0.0/24", "fd00:62::/64"]
[[sandbox]]
name = "s1"
[[sandbox.endpoint]]
network = "netA"
ip = "10.60.0.2"
[[sandbox]]
name = "s4"
[[sandbox.endpoint]]
network = "netC"
ip = ["10.62.0.2", "fd00:62::2"]
publish = ["20000-29999:10.62.0.2:30000-39999", "8080:10.62.0.2:80/udp", "[::]:40000-44999:[fd00:62::2]:50000-54999"]
[[sandbox]]
name = "s5"
[[sandbox.endpoint]]
network = "netC"
ip = "10.62.0.3"
"#;

/// Links (names) and namespaces: what "no stray veth, bridge or namespace" is checked against.
fn topology() -> String {
    sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort; echo --; ls /run/netns | sort")
}

isolated!(sigkill_during_apply_never_leaves_a_mix, inner_sigkill_during_apply, {
    let (a, b) = (write("a.toml", STATE_A), write("b.toml", STATE_B));
    ok(&["apply", "--prune", "-f", &a]);
    let (show_a, topo_a) = (ok(&["show"]), topology());
    ok(&["apply", "--prune", "-f", &b]);
    let (show_b, topo_b) = (ok(&["show"]), topology());
    assert_ne!(show_a, show_b);
    // How long an apply from A to B takes here: the longest of three (the machine may be busy).
    let mut full = std::time::Duration::ZERO;
    for _ in 0..3 {
        ok(&["apply", "--prune", "-f", &a]);
        let t0 = Instant::now();
        ok(&["apply", "--prune", "-f", &b]);
        full = full.max(t0.elapsed());
    }
    let kills = 32;
    let mut seen = (0, 0);
    // Kill moments spread over the whole run of an apply (and a little past it); when a busy
    // machine made every kill land before the end, up to 32 more rounds reach further out.
    for i in 0..2 * kills {
        if i >= kills && seen.0 > 0 && seen.1 > 0 {
            break;
        }
        ok(&["apply", "--prune", "-f", &a]);
        assert_eq!(ok(&["show"]), show_a, "round {i}: could not get back to state A");
        let delay = full.mul_f64((i as f64 + 0.5) / kills as f64 * 1.1);
        let mut child = std::process::Command::new(NETNAT)
            .args(["apply", "--prune", "-f", &b])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let now = ok(&["show"]);
        assert!(
            now == show_a || now == show_b,
            "round {i} ({delay:?}): the table is neither the old nor the new one:\n{now}"
        );
        if now == show_a {
            seen.0 += 1;
        } else {
            seen.1 += 1;
        }
        // One more apply converges, leaving nothing stray.
        ok(&["apply", "--prune", "-f", &b]);
        assert_eq!(ok(&["show"]), show_b, "round {i}: apply did not converge");
        assert_eq!(topology(), topo_b, "round {i}: stray links or namespaces after converging");
    }
    eprintln!("kills that left the old table: {}, the new one: {}", seen.0, seen.1);
    assert!(seen.0 > 0 && seen.1 > 0, "kills were not spread over the apply: {seen:?}");
    ok(&["apply", "--prune", "-f", &a]);
    assert_eq!(topology(), topo_a, "back to A:\n{}", sh("ip -o link; ls -la /run/netns; cat /run/netnat/state.json"));
});

// Commands and files that must be refused: exit 2, the bad value named, nothing changed.
isolated!(bad_input_is_refused_with_the_value_named, inner_bad_input, {
    make_external_host();
    seed_topology();
    ok(&["publish", "9090:172.16.1.1:8080"]);
    let rows: &[(&[&str], &str)] = &[
        (&["publish", "0:172.16.1.1:80"], "port 0"),
        (&["publish", "65536:172.16.1.1:80"], "65536"),
        (&["publish", "80:172.16.1.1:0"], "port 0"),
        (&["publish", "80:172.16.1.1:65536"], "65536"),
        (&["publish", "90-80:172.16.1.1:90-80"], "90-80"),
        (&["publish", "80-90:172.16.1.1:80-85"], "80-90"),
        (&["publish", "80:172.16.1.300:80"], "172.16.1.300"),
        (&["publish", "80:fe80::1:80"], "IPv6"),
        (&["publish", "[::1]:80:172.16.1.1:80"], "IPv6"),
        (&["publish", "80:172.16.1.1:80/icmp"], "icmp"),
        (&["publish", "80:172.16.1.1"], "80:172.16.1.1"),
        (&["publish", "abc:172.16.1.1:80"], "abc"),
        (&["publish", "203.0.113.7:80:172.16.1.1:80"], "203.0.113.7"),
        (&["publish", "1.2.3:80:172.16.1.1:80"], "1.2.3"),
        (&["publish", "80:0.0.0.0:80"], "0.0.0.0"),
        (&["publish", "80:172.16.1.1:80", "80:172.16.1.2:80"], "80:172.16.1.2:80"),
        (&["unpublish", "99999"], "99999"),
        (&["unpublish", "80/gre"], "gre"),
        (&["unpublish", "1.2:80"], "1.2"),
        (&["unpublish", "an-interface-too-long:80"], "an-interface-too-long"),
        (&["publish"], "SPEC"),
    ];
    let files: &[(&str, &str)] = &[
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\ncolour = \"red\"\n", "colour"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\n", "bad1.toml:3"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/33\"\n", "10.1.0.0/33"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.1/16\"\n", "10.1.0.1/16"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\ngateway = \"10.2.0.1\"\n", "10.2.0.1"),
        ("[[network]]\nname = \"a-very-long-bridge-name\"\nsubnet = \"10.1.0.0/16\"\n", "a-very-long-bridge-name"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\n[[network]]\nname = \"m\"\nsubnet = \"10.1.2.0/24\"\n", "10.1.2.0/24"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\n[[network]]\nname = \"n\"\nsubnet = \"10.2.0.0/16\"\n", "n"),
        ("[[network]]\nname = \"n\"\nsubnet = \"fe80::/64\"\n", "fe80::/64"),
        ("[[sandbox]]\nname = \"s\"\n[[sandbox.endpoint]]\nnetwork = \"nope\"\n", "nope"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\n[[sandbox]]\nname = \"s\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.1.0.5\"\n[[sandbox]]\nname = \"t\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.1.0.5\"\n", "10.1.0.5"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\n[[sandbox]]\nname = \"s\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.1.0.5\"\npublish = [\"70000:10.1.0.5:80\"]\n", "70000"),
        ("[[network]]\nname = \"n\"\nsubnet = \"10.1.0.0/16\"\n[[sandbox]]\nname = \"s\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.1.0.5\"\npublish = [\"80:10.1.0.5:80\", \"80:10.1.0.5:81\"]\n", "80"),
        ("[[network]]\nname = \"n/x\"\nsubnet = \"10.1.0.0/16\"\n", "n/x"),
        ("[[sandbox]]\nname = \"has space\"\n", "has space"),
        ("this is not toml", "bad15.toml:1"),
    ];
    let before = settled_snapshot();
    let mut count = 0;
    for (args, needle) in rows {
        let err = fails(args, 2);
        assert!(err.contains(needle), "{args:?}: message does not name {needle:?}: {err}");
        assert_eq!(before, kernel_snapshot(), "{args:?} changed the kernel");
        count += 1;
    }
    for (i, (text, needle)) in files.iter().enumerate() {
        let f = write(&format!("bad{i}.toml"), text);
        for mode in [&["apply", "--check", "-f"][..], &["apply", "-f"][..]] {
            let mut args = mode.to_vec();
            args.push(&f);
            let err = fails(&args, 2);
            assert!(err.contains(needle), "file {i} ({mode:?}): message does not name {needle:?}: {err}");
            assert_eq!(before, kernel_snapshot(), "file {i} changed the kernel");
        }
        count += 1;
    }
    assert!(count >= 36);
    // The published port still works: nothing was disturbed.
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    assert_eq!(tcp_get(Some(&ns("ext")), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
});

// Docker's iptables layout (FORWARD policy DROP, DOCKER and DOCKER-USER chains) drops forwarded
// traffic that it does not accept itself. With the host firewall integration off (the operator
// manages DOCKER-USER: tests/host_firewall.rs has it on, with dockerd), netnat does not touch
// Docker's chain: it says at publish time what blocks the port and how to let it through, and
// that fix works.
isolated!(docker_style_forward_drop_is_reported_with_its_fix, inner_docker_forward_drop, {
    make_external_host();
    sh("iptables-nft -P FORWARD DROP && iptables-nft -N DOCKER && iptables-nft -N DOCKER-USER \
        && iptables-nft -A DOCKER-USER -j RETURN && iptables-nft -A FORWARD -j DOCKER-USER \
        && iptables-nft -A FORWARD -o docker0 -j DOCKER");
    seed_topology_with(&["--host-firewall", "off"]);
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    let _e = tcp_server(Some(&ns("ext")), "198.51.100.2:8000", "ext");
    let out = netnat(&["publish", "9090:172.16.1.1:8080"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ip filter FORWARD") && err.contains("policy drop"), "no warning naming the chain: {err}");
    let fix = "iptables -I DOCKER-USER -i MyDocker0 -j ACCEPT && iptables -I DOCKER-USER -o MyDocker0 -j ACCEPT";
    assert!(err.contains(fix), "no fix given: {err}");
    // As warned: the published port and egress are blocked by Docker's chain.
    assert!(tcp_get(Some(&ns("ext")), "198.51.100.1:9090").is_err());
    assert!(tcp_get(Some(&ns("Container_ns1")), "198.51.100.2:8000").is_err());
    // The documented fix (with iptables-nft, the same rules Docker's own iptables makes).
    sh(&fix.replace("iptables", "iptables-nft"));
    assert_eq!(tcp_get(Some(&ns("ext")), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
    assert_eq!(tcp_get(Some(&ns("Container_ns1")), "198.51.100.2:8000").unwrap(), "ext saw 198.51.100.1");
});
