use super::fixtures::net;
use super::*;
use std::net::IpAddr;

fn m(s: &str) -> Mapping {
    s.parse().unwrap()
}
fn err<T: fmt::Debug>(r: Valid<T>) -> String {
    r.unwrap_err().0
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn parses_port_specs() {
    let a = m("9090:172.16.1.1:8080");
    assert_eq!((a.protocol, a.host_ip, a.host_port, a.container_port), (Proto::Tcp, None, 9090, 8080));
    let b = m("127.0.0.1:5353:172.16.1.2:53/udp");
    assert_eq!(b.host_ip, Some(ip("127.0.0.1")));
    assert_eq!(b.protocol, Proto::Udp);
    let c = m("8000-8099:172.16.1.1:8000-8099");
    assert_eq!(c.len(), 100);
    assert_eq!(c.ports().last(), Some((8099, 8099)));
    assert_eq!(c.to_string(), "8000-8099:172.16.1.1:8000-8099/tcp");
    assert_eq!(m("0.0.0.0:80:10.0.0.2:80").host_ip, None);
}

#[test]
fn parses_ipv6_port_specs() {
    let a = m("[2001:db8::1]:8080:[fd00:16::2]:80");
    assert_eq!((a.host_ip, a.container_ip, a.family()), (Some(ip("2001:db8::1")), ip("fd00:16::2"), Family::V6));
    assert_eq!(a.to_string(), "[2001:db8::1]:8080:[fd00:16::2]:80/tcp");
    assert_eq!(a.to_string().parse::<Mapping>().unwrap(), a);
    assert_eq!(m("[::]:8080:[fd00:16::2]:80").host_ip, None);
    assert_eq!(m("[::]:8080:[fd00:16::2]:80"), m("8080:[fd00:16::2]:80"));
    let r = m("7000-7009:[fd00:16::2]:7000-7009/udp");
    assert_eq!((r.len(), r.protocol), (10, Proto::Udp));
    assert_eq!(r.host_spec(), "[::]:7000-7009/udp");
}

#[test]
fn refuses_bad_port_specs_naming_the_value() {
    assert!(err("0:172.16.1.1:80".parse::<Mapping>()).contains("port 0"));
    assert!(err("65536:172.16.1.1:80".parse::<Mapping>()).contains("65536"));
    assert!(err("90-80:172.16.1.1:80-90".parse::<Mapping>()).contains("reversed"));
    assert!(err("80-81:172.16.1.1:80".parse::<Mapping>()).contains("2 ports"));
    assert!(err("80:172.16.1.300:80".parse::<Mapping>()).contains("172.16.1.300"));
    assert!(err("80:172.16.1.1:80/icmp".parse::<Mapping>()).contains("icmp"));
    assert!(err("80".parse::<Mapping>()).contains("not a port mapping"));
}

#[test]
fn refuses_bad_ipv6_specs_naming_the_value() {
    let e = |s: &str| err(s.parse::<PublishSpec>());
    assert!(e("8080:fd00:16::2:80").contains("brackets"));
    assert!(e("[::1]:8080:[fd00:16::2]:80").contains("route_localnet"));
    assert!(e("[2001:db8::1]:8080:172.16.1.1:80").contains("cannot NAT between families"));
    assert!(e("10.0.0.1:8080:[fd00:16::2]:80").contains("cannot NAT between families"));
    assert!(e("0.0.0.0:8080:[fd00:16::2]:80").contains("cannot NAT between families"));
    assert!(e("8080:[fe80::2]:80").contains("link-local"));
    assert!(e("[fe80::1]:8080:[fd00::2]:80").contains("link-local"));
    assert!(e("8080:[ff02::1]:80").contains("[ff02::1]"));
    assert!(e("8080:[::]:80").contains("cannot receive"));
    assert!(e("8080:[fd00::zz]:80").contains("[fd00::zz]"));
    assert!(e("8080:[fd00::2:80").contains("without its ']'"));
    assert!(e("8080:[172.16.1.1]:80").contains("[172.16.1.1]"));
    assert!(e("[fd00::1]8080:[fd00::2]:80").contains("after ']'"));
    assert!(e("8080:fd[00::2]:80").contains("whole IPv6 address"));
    assert!(e("8080-8081:Container_ns1:80").contains("2 ports"));
    assert!(e("8080:Con$tainer:80").contains("'$'"));
}

#[test]
fn name_targets_resolve_per_family() {
    let mut st = State::default();
    let n = net("n", &["172.16.0.0/16", "fd00:16::/64"], &[]);
    let n2 = net("m", &["10.9.0.0/24"], &[]);
    st.networks.insert("n".into(), n.clone());
    st.networks.insert("m".into(), n2);
    let ep = |network: &str, ips: &[&str]| Endpoint {
        network: network.into(),
        ips: ips.iter().map(|i| ip(i)).collect(),
        ifname: "eth0".into(),
        host_ifname: "x".into(),
    };
    st.sandboxes.insert(
        "c1".into(),
        Sandbox { name: "c1".into(), created: true, endpoints: vec![ep("n", &["172.16.0.2", "fd00:16::2"])] },
    );
    let r = |s: &str, st: &State| s.parse::<PublishSpec>().unwrap().resolve(st);
    let both = r("8080:c1:80", &st).unwrap();
    assert_eq!(
        both.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        ["8080:172.16.0.2:80/tcp", "8080:[fd00:16::2]:80/tcp"]
    );
    assert_eq!(r("[::]:8080:c1:80", &st).unwrap().len(), 1);
    assert_eq!(r("0.0.0.0:8080:c1:80", &st).unwrap()[0].family(), Family::V4);
    assert!(err(r("8080:nope:80", &st)).contains("no sandbox named nope"));
    st.sandboxes.get_mut("c1").unwrap().endpoints.push(ep("m", &["10.9.0.2"]));
    let amb = err(r("8080:c1:80", &st));
    assert!(amb.contains("n, m") || amb.contains("m, n"), "{amb}");
    assert!(amb.contains("c1@NETWORK"), "{amb}");
    assert_eq!(r("8080:c1@m:80", &st).unwrap()[0].container_ip, ip("10.9.0.2"));
    assert!(err(r("[::]:8080:c1@m:80", &st)).contains("no IPv6 address"));
    assert!(err("8080:c1:80".parse::<Mapping>()).contains("sandbox name"));
}

#[test]
fn host_ports_name_families() {
    let v4 = m("8080:10.0.0.2:80");
    let v6 = m("8080:[fd00::2]:80");
    let h = |s: &str| s.parse::<HostPorts>().unwrap();
    assert!(h("8080").matches(&v4) && h("8080").matches(&v6));
    assert!(h("0.0.0.0:8080").matches(&v4) && !h("0.0.0.0:8080").matches(&v6));
    assert!(!h("[::]:8080").matches(&v4) && h("[::]:8080").matches(&v6));
    assert!(h("[2001:db8::1]:8080").matches(&m("[2001:db8::1]:8080:[fd00::2]:80")));
    assert_eq!(spec_parts("[2001:db8::1]:8080:[fd00::2]:80/udp"), 4);
    assert_eq!(spec_parts("[::]:8080/udp"), 2);
}

#[test]
fn subnets_and_gateways() {
    let s: Subnet = "172.16.0.0/16".parse().unwrap();
    assert!(s.contains(ip("172.16.1.254")));
    assert!(err("172.16.1.0/8".parse::<Subnet>()).contains("did you mean 172.0.0.0/8"));
    assert!(err("172.16.0.0".parse::<Subnet>()).contains("CIDR"));
    let n = Network::new("MyDocker0", &[s], &[ip("172.16.1.254")], None).unwrap();
    assert_eq!(n.bridge, "MyDocker0");
    assert_eq!(Network::new("n", &[s], &[], None).unwrap().pools[0].gateway, ip("172.16.0.1"));
    assert!(err(Network::new("n", &[s], &[ip("10.0.0.1")], None)).contains("gateway 10.0.0.1"));
    assert!(err(Network::new("n", &[s], &[ip("172.16.255.255")], None)).contains("not a host"));
}

#[test]
fn ipv6_subnets_and_gateways() {
    let v6: Subnet = "fd00:16::/64".parse().unwrap();
    let v4: Subnet = "172.16.0.0/16".parse().unwrap();
    let n = Network::new("n", &[v6, v4], &[], None).unwrap();
    assert_eq!(n.pools.iter().map(|p| p.gateway.to_string()).collect::<Vec<_>>(), ["172.16.0.1", "fd00:16::1"]);
    assert_eq!(Network::new("n", &[v6], &[], None).unwrap().pools.len(), 1); // IPv6-only is fine
    let e = |s: &str| err(s.parse::<Subnet>());
    assert!(e("fe80::/64").contains("link-local"));
    assert!(e("ff00::/64").contains("multicast"));
    assert!(e("::/64").contains("loopback"));
    assert!(e("::1/120").contains("host bits") || e("::1/120").contains("loopback"));
    assert!(e("::ffff:0:0/96").contains("IPv4-mapped"));
    assert!(e("fd00::/121").contains("longer than /120"));
    assert!(e("fd00::1/64").contains("did you mean fd00::/64"));
    assert!(e("[fd00::]/64").contains("brackets"));
    let two = "fd00:17::/64".parse().unwrap();
    assert!(err(Network::new("n", &[v6, two], &[], None)).contains("at most one subnet per family"));
    assert!(err(Network::new("n", &[v6], &[ip("fd00:17::1")], None)).contains("not a host address"));
    assert!(err(Network::new("n", &[v4], &[ip("fd00:16::1")], None)).contains("no IPv6 subnet"));
    let mut st = State::default();
    st.networks.insert("a".into(), Network::new("a", &[v6], &[], None).unwrap());
    let over = Network::new("b", &["fd00:16::/48".parse().unwrap()], &[], None).unwrap();
    assert!(err(st.check_new_network(&over)).contains("overlaps"));
}

#[test]
fn network_record_keeps_the_single_family_format() {
    let old =
        r#"{"name":"n","subnet":"10.9.0.0/24","gateway":"10.9.0.1","bridge":"n","masquerade":true,"internal":false}"#;
    let n: Network = serde_json::from_str(old).unwrap();
    assert_eq!(serde_json::to_string(&n).unwrap(), old);
    let dual = net("d", &["10.9.0.0/24", "fd00:9::/64"], &[]);
    let text = serde_json::to_string(&dual).unwrap();
    assert!(text.contains(r#""subnet":["10.9.0.0/24","fd00:9::/64"]"#), "{text}");
    assert_eq!(serde_json::from_str::<Network>(&text).unwrap(), dual);
    let ep = r#"{"network":"n","ip":"10.9.0.2","ifname":"eth0","host_ifname":"x"}"#;
    let e: Endpoint = serde_json::from_str(ep).unwrap();
    assert_eq!(serde_json::to_string(&e).unwrap(), ep);
}

#[test]
fn interface_names() {
    assert!(check_ifname("MyDocker0", "bridge").is_ok());
    assert!(err(check_ifname("a-very-long-bridge", "bridge")).contains("15 bytes"));
    assert!(err(check_ifname("a/b", "bridge")).contains("'/'"));
    assert!(err(check_ifname("a b", "bridge")).contains("' '"));
    assert!(err(check_ifname("", "bridge")).contains("empty"));
    assert!(host_ifname("Container_ns1", "MyDocker0").len() <= 15);
    assert_ne!(host_ifname("a", "bc"), host_ifname("ab", "c"));
}

#[test]
fn conflicts() {
    let a = m("8000-8010:10.0.0.2:8000-8010");
    assert!(a.conflicts_with(&m("8010:10.0.0.3:80")));
    assert!(!a.conflicts_with(&m("8011:10.0.0.3:80")));
    assert!(!a.conflicts_with(&m("8005:10.0.0.3:80/udp")));
    assert!(a.conflicts_with(&m("127.0.0.1:8005:10.0.0.3:80")));
    assert!(!m("127.0.0.1:80:10.0.0.3:80").conflicts_with(&m("127.0.0.2:80:10.0.0.3:80")));
    // The same host port on both families is two mappings, not a conflict.
    assert!(!a.conflicts_with(&m("8005:[fd00::3]:80")));
    assert!(m("8005:[fd00::3]:80").conflicts_with(&m("[2001:db8::1]:8005:[fd00::4]:80")));
}

/// Parsers return errors, never panic, on any input: random strings biased toward the
/// characters of real specs (a deterministic xorshift, so failures reproduce).
#[test]
fn parsers_never_panic() {
    let alphabet: Vec<char> = "0123456789.:/-abcdeftcpudsx[]@ \u{0}\u{ff}é65535".chars().collect();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200_000 {
        let len = (next() % 40) as usize;
        let s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let _ = s.parse::<Mapping>();
        let _ = s.parse::<PublishSpec>();
        let _ = s.parse::<HostPorts>();
        let _ = s.parse::<Subnet>();
        let _ = spec_parts(&s);
        let _ = check_ifname(&s, "x");
        let _ = check_name(&s, "x");
    }
}

#[test]
fn allocation_skips_gateway_and_used() {
    let mut st = State::default();
    let n = net("n", &["10.9.0.0/29", "fd00:9::/120"], &[]);
    st.networks.insert("n".into(), n.clone());
    assert_eq!(st.allocate_ip(&n, Family::V4).unwrap(), ip("10.9.0.2"));
    assert_eq!(st.allocate_ip(&n, Family::V6).unwrap(), ip("fd00:9::2"));
    let ep = |ips: &[&str]| Endpoint {
        network: "n".into(),
        ips: ips.iter().map(|i| ip(i)).collect(),
        ifname: "eth0".into(),
        host_ifname: "x".into(),
    };
    st.sandboxes.insert(
        "s".into(),
        Sandbox { name: "s".into(), created: true, endpoints: vec![ep(&["10.9.0.2", "fd00:9::2"]), ep(&["10.9.0.3"])] },
    );
    assert_eq!(st.allocate_ip(&n, Family::V4).unwrap(), ip("10.9.0.4"));
    assert_eq!(st.endpoint_ips(&n, &[ip("fd00:9::7")], "t").unwrap(), [ip("10.9.0.4"), ip("fd00:9::7")]);
    assert!(err(st.endpoint_ips(&n, &[ip("fd00:9::2")], "t")).contains("held by both"));
    assert!(err(st.endpoint_ips(&n, &[ip("fd00:9::1")], "t")).contains("not a free host address"));
    assert!(err(st.endpoint_ips(&n, &[ip("fd00:9::7"), ip("fd00:9::8")], "t")).contains("once per family"));
    assert!(err(st.endpoint_ips(&n, &[ip("fd00:8::7")], "t")).contains("not a free host address"));
}
