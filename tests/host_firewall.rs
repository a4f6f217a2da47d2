//! netnat next to the host's firewall (issue 22): firewalld, ufw and dockerd, each real and started
//! inside the test's namespaces, let netnat's traffic through by their own hooks. Each test
//! starts its firewall once and checks, with traffic: a published port from the external host,
//! masqueraded egress, container to container, the host to 127.0.0.1:PORT, a sandbox added
//! later, direct routing to an unpublished container port still refused; again after the
//! firewall's reload and after a full restart; `--host-firewall off` changing nothing of theirs
//! and printing their own fix; `netnat reset` leaving their configuration exactly as before.

mod common;

use common::hostfw::{iptables_config, ufw_config, ufw_enable, Dockerd, Firewalld};
use common::*;

const TIMEOUT: u32 = 200;

/// Every kind of traffic a network needs, through whatever firewall runs.
fn assert_all_traffic(when: &str) {
    let ns1 = ns("Container_ns1");
    // Published port from the external host (the server sees the client's own address).
    let got = tcp_get(Some(&ns("ext")), "198.51.100.1:9090").unwrap_or_else(|e| panic!("{when}: published: {e}"));
    assert_eq!(got, "ns1 saw 198.51.100.2", "{when}: published port");
    // Egress, masqueraded to the host's address.
    let _ext = tcp_server(Some(&ns("ext")), "198.51.100.2:8000", "ext");
    let got = tcp_get(Some(&ns1), "198.51.100.2:8000").unwrap_or_else(|e| panic!("{when}: egress: {e}"));
    assert_eq!(got, "ext saw 198.51.100.1", "{when}: egress");
    // Container to container on the bridge.
    let got = tcp_get(Some(&ns1), "172.16.1.2:20005").unwrap_or_else(|e| panic!("{when}: container to container: {e}"));
    assert_eq!(got, "ns2 saw 172.16.1.1", "{when}: container to container");
    // The host itself, to 127.0.0.1:PORT.
    let got = tcp_get(None, "127.0.0.1:9090").unwrap_or_else(|e| panic!("{when}: host to 127.0.0.1:9090: {e}"));
    assert!(got.starts_with("ns1 saw "), "{when}: host to 127.0.0.1:9090: {got}");
    // Direct routing to a container port that is not published is still refused.
    let _hidden = tcp_server(Some(&ns1), "172.16.1.1:7000", "hidden");
    assert!(tcp_get(Some(&ns("ext")), "172.16.1.1:7000").is_err(), "{when}: unpublished port reachable by routing");
}

/// An allow list still applies with the firewall opened, and a second network is opened by
/// `network create` and closed by `network rm` (`opened` tells whether the firewall has it).
fn assert_allow_list_and_second_network(opened: &dyn Fn(&str) -> bool) {
    ok(&["publish", "9091:172.16.1.1:8080", "--allow", "10.0.0.0/8"]);
    assert!(tcp_get(Some(&ns("ext")), "198.51.100.1:9091").is_err(), "the allow list let the external host in");
    ok(&["unpublish", "9091"]);
    // The loopback guard still drops 127.0.0.0/8 from outside (a crafted SYN to the host's MAC).
    ok(&["publish", "127.0.0.1:6060:172.16.1.1:8080"]);
    let host_mac = raw::mac_of("ip -o link show veth-ext");
    let syn = |dst: &str, port: u16| raw::syn_gets_synack(&ns("ext"), &host_mac, EXT_IP, dst, port);
    assert!(syn("198.51.100.1", 9090), "control: a SYN to the host's address must be answered");
    assert!(!syn("127.0.0.1", 6060), "a SYN for 127.0.0.1 from outside was answered");
    ok(&["unpublish", "127.0.0.1:6060"]);
    assert!(!opened("extra"));
    ok(&["network", "create", "extra", "--subnet", "10.78.0.0/24"]);
    assert!(opened("extra"), "network create did not open the firewall for its bridge");
    assert!(ok(&["network", "ls"]).contains("open-in:"));
    ok(&["network", "rm", "extra"]);
    assert!(!opened("extra"), "network rm left the bridge open");
}

/// A sandbox made after the firewall was opened gets egress and reaches its neighbours.
fn assert_later_sandbox() {
    ok(&["sandbox", "create", "Container_ns3", "--network", "MyDocker0", "--ip", "172.16.1.3"]);
    let ns3 = ns("Container_ns3");
    let _ext = tcp_server(Some(&ns("ext")), "198.51.100.2:8001", "ext");
    assert_eq!(
        tcp_get_settled(Some(&ns3), "198.51.100.2:8001").unwrap(),
        "ext saw 198.51.100.1",
        "later sandbox egress"
    );
    assert_eq!(tcp_get(Some(&ns3), "172.16.1.2:20005").unwrap(), "ns2 saw 172.16.1.3", "later sandbox to ns2");
}

/// `--host-firewall off`: the firewall's configuration is untouched, traffic stays blocked, and
/// the warning gives that firewall's own fix. Returns to the state before.
fn assert_off_changes_nothing(config: &dyn Fn() -> String, fix: &str, rule: &str) {
    let before = config();
    let (code, _, err) =
        netnat_out(&["network", "create", "offnet", "--subnet", "10.77.0.0/24", "--host-firewall", "off"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(fix), "the advice names the firewall's own fix `{fix}`:\n{err}");
    assert!(err.contains("drops container egress"), "the warning names the traffic dropped:\n{err}");
    assert!(err.contains(rule), "the warning names the rule that really drops, `{rule}`:\n{err}");
    assert!(!err.contains("ct state invalid"), "`ct state invalid drop` never drops a valid connection:\n{err}");
    assert_same(&config(), &before, "--host-firewall off changed the firewall's configuration");
    assert!(ok(&["network", "ls"]).contains("host-firewall=off"));
    let saved = ok(&["save"]);
    assert!(saved.contains("host_firewall = \"off\""), "{saved}");
    ok(&["sandbox", "create", "offbox", "--network", "offnet", "--ip", "10.77.0.2"]);
    let _ext = tcp_server(Some(&ns("ext")), "198.51.100.2:8002", "ext");
    assert!(tcp_get(Some(&ns("offbox")), "198.51.100.2:8002").is_err(), "egress passed a blocking firewall");
    ok(&["sandbox", "rm", "offbox"]);
    ok(&["network", "rm", "offnet"]);
    assert_same(&config(), &before, "network rm of a host_firewall = off network");
}

/// `after` is `before`, line for line; the message lists the lines that differ.
fn assert_same(after: &str, before: &str, what: &str) {
    let a: Vec<&str> = after.lines().collect();
    let b: Vec<&str> = before.lines().collect();
    let gone: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
    let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    assert!(a == b, "{what}:\n  lines gone: {gone:#?}\n  lines new: {new:#?}\n(or their order changed)");
}

fn audit_ids() -> String {
    let (_, out, _) = netnat_out(&["audit", "--json"]);
    out
}

isolated!(firewalld_coexistence, inner_firewalld_coexistence, timeout = TIMEOUT, {
    let mut fw = Firewalld::start();
    let before = Firewalld::config();
    make_external_host();
    assert_off_changes_nothing(
        &Firewalld::config,
        "firewall-cmd --permanent --zone=trusted --add-interface=offnet && firewall-cmd --zone=trusted --add-interface=offnet",
        // firewalld 1.3 rejects in the default zone's forward chain, before its last rule.
        ": reject",
    );
    let _servers = seed_with_published_ports();
    assert!(ok(&["network", "ls"]).contains("open-in:firewalld"));
    assert!(sh("firewall-cmd --permanent --info-zone=netnat").contains("interfaces: MyDocker0"));
    let desc = sh("firewall-cmd --permanent --zone=netnat --get-description");
    assert!(desc.contains("netnat network MyDocker0: bridge MyDocker0"), "marked as netnat's: {desc}");
    assert_all_traffic("firewalld");
    let audit = audit_ids();
    assert!(audit.contains("host.firewall-open") && !audit.contains("conflict.forward-drop"), "{audit}");
    // firewalld's input chain still does not see DNAT'd packets: the audit still says so.
    assert!(audit.contains("exposure.bypasses-input-firewall"), "{audit}");
    assert_allow_list_and_second_network(&|b| {
        sh("firewall-cmd --permanent --info-zone=netnat; firewall-cmd --info-zone=netnat").matches(b).count() == 2
    });
    sh("firewall-cmd --reload");
    assert_all_traffic("after firewall-cmd --reload");
    fw.restart();
    assert_all_traffic("after a firewalld restart");
    assert_later_sandbox();
    // Removed by hand: the audit says so, and reload puts it back.
    sh("firewall-cmd --zone=netnat --remove-interface=MyDocker0");
    assert!(audit_ids().contains("host.firewall-damaged"));
    ok(&["reload"]);
    assert_all_traffic("after netnat reload");
    ok(&["reset"]);
    assert_same(&Firewalld::config(), &before, "reset left firewalld's configuration changed");
    // firewalld started after the network was made: `netnat reload` (the boot unit) opens it.
    fw.daemon.stop();
    seed_topology();
    fw.restart();
    assert!(!sh("firewall-cmd --get-zones").contains("netnat"));
    ok(&["reload"]);
    assert!(sh("firewall-cmd --info-zone=netnat").contains("interfaces: MyDocker0"), "reload did not open firewalld");
    let _ext = tcp_server(Some(&ns("ext")), "198.51.100.2:8003", "ext");
    let got = tcp_get_settled(Some(&ns("Container_ns1")), "198.51.100.2:8003");
    assert_eq!(got.unwrap(), "ext saw 198.51.100.1", "egress after firewalld started later");
    ok(&["reset"]);
    assert_same(&Firewalld::config(), &before, "the second reset left firewalld's configuration changed");
    drop(fw);
});

isolated!(ufw_coexistence, inner_ufw_coexistence, timeout = TIMEOUT, {
    ufw_enable();
    let before = ufw_config() + &iptables_config();
    make_external_host();
    // `ufw status` says "disabled (routed)" while IP forwarding is off, which a network turns on:
    // its rules and rule files are what must not change.
    let rules = || sh("ufw show added; cat /etc/ufw/user.rules /etc/ufw/user6.rules") + &iptables_config();
    assert_off_changes_nothing(
        &rules,
        "ufw route allow in on offnet && ufw route allow out on offnet",
        "ip filter FORWARD: policy drop",
    );
    let _servers = seed_with_published_ports();
    assert!(sh("ufw show added").contains("ufw route allow in on MyDocker0 comment 'netnat network MyDocker0'"));
    assert_all_traffic("ufw");
    assert!(audit_ids().contains("host.firewall-open"));
    assert_allow_list_and_second_network(&|b| sh("ufw show added").contains(&format!("route allow out on {b} ")));
    // Removed by hand: the audit says so, and `apply` (like `reload`) puts it back.
    let file = "/run/saved.toml";
    std::fs::write(file, ok(&["save"])).unwrap();
    sh("ufw route delete allow in on MyDocker0 && ufw route delete allow out on MyDocker0");
    assert!(audit_ids().contains("host.firewall-missing"));
    ok(&["apply", "-f", file]);
    assert!(sh("ufw show added").contains("ufw route allow in on MyDocker0"), "apply did not re-establish it");
    sh("ufw reload");
    assert_all_traffic("after ufw reload");
    sh("ufw disable && ufw --force enable");
    assert_all_traffic("after ufw disable and enable");
    assert_later_sandbox();
    ok(&["reset"]);
    assert_same(&(ufw_config() + &iptables_config()), &before, "reset left ufw's configuration changed");
});

isolated!(docker_coexistence, inner_docker_coexistence, timeout = TIMEOUT, {
    let mut docker = Dockerd::start();
    make_external_host();
    assert_off_changes_nothing(
        &iptables_config,
        "iptables -I DOCKER-USER -i offnet -j ACCEPT && iptables -I DOCKER-USER -o offnet -j ACCEPT",
        "ip filter FORWARD: policy drop",
    );
    let _servers = seed_with_published_ports();
    // Ordinary iptables rules, marked as netnat's.
    let rules = sh("iptables -S DOCKER-USER");
    assert!(
        rules.contains("-A DOCKER-USER -i MyDocker0 -m comment --comment \"netnat network MyDocker0\" -j ACCEPT"),
        "{rules}"
    );
    assert!(rules.contains("-A DOCKER-USER -o MyDocker0 -m comment --comment \"netnat network MyDocker0\" -j ACCEPT"));
    assert_all_traffic("dockerd");
    assert_allow_list_and_second_network(&|b| sh("iptables -S DOCKER-USER").contains(&format!("-o {b} ")));
    docker.stop();
    docker.run();
    assert_all_traffic("after a dockerd restart");
    // A full restart: the kernel's rules are gone (as after a boot), dockerd starts again, and
    // netnat's boot unit (`netnat reload`) opens DOCKER-USER again.
    docker.stop();
    sh("nft flush ruleset");
    docker.run();
    // Docker's layout as it makes it from scratch (its FORWARD jumps are ordered differently from
    // a first start on this namespace): what `reset` must leave.
    let before = iptables_config();
    assert!(!before.contains("netnat"));
    ok(&["reload"]);
    assert_all_traffic("after a full restart");
    assert_later_sandbox();
    ok(&["reset"]);
    assert_same(&iptables_config(), &before, "reset left Docker's rules changed");
    drop(docker);
});
