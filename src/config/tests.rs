use super::*;

const DEMO: &str = r#"
[[network]]
name = "MyDocker0"
subnet = "172.16.0.0/16"
gateway = "172.16.1.254"

[[sandbox]]
name = "Container_ns1"
[[sandbox.endpoint]]
network = "MyDocker0"
ip = "172.16.1.1"
publish = ["9090:172.16.1.1:8080"]

[[sandbox]]
name = "Container_ns2"
[[sandbox.endpoint]]
network = "MyDocker0"
ip = "172.16.1.2"
"#;

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => vec![],
        Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn demo_becomes_the_seed_state() {
    let p = load(DEMO).unwrap();
    let st = to_state(&p, &State::default()).unwrap();
    let n = &st.networks["MyDocker0"];
    assert_eq!(
        (n.pools[0].gateway.to_string(), n.bridge.as_str(), n.masquerade, n.internal),
        ("172.16.1.254".into(), "MyDocker0", true, false)
    );
    let e = &st.sandboxes["Container_ns1"].endpoints[0];
    assert_eq!((e.ips_text(), e.ifname.as_str()), ("172.16.1.1".into(), "eth0"));
    assert_eq!(e.host_ifname, host_ifname("Container_ns1", "MyDocker0"));
    assert_eq!(st.mappings, vec!["9090:172.16.1.1:8080".parse::<Mapping>().unwrap()]);
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = "[[network]]\nname = \"n\"\nsubnet = \"10.0.0.0/24\"\nbrige = \"x\"\n";
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].starts_with("line 4: unknown field `brige`"), "{ps:?}");
}

#[test]
fn every_problem_is_listed_with_its_line() {
    let text = r#"[[network]]
name = "a"
subnet = "10.0.0.0/16"
[[network]]
name = "b"
subnet = "10.0.5.0/24"
gateway = "192.168.0.1"
[[network]]
name = "a"
subnet = "10.9.0.0/24"
[[network]]
name = "this-bridge-name-is-too-long"
subnet = "10.8.0.0/24"
[[sandbox]]
name = "s1"
[[sandbox.endpoint]]
network = "a"
ip = "10.0.0.5"
publish = ["80:10.0.0.5:80", "90-91:10.0.0.5:90"]
[[sandbox]]
name = "s2"
[[sandbox.endpoint]]
network = "a"
ip = "10.0.0.5"
publish = ["80:10.0.0.5:8080"]
[[sandbox.endpoint]]
network = "nope"
"#;
    let ps = problems(text);
    let want = [
        ("line 7:", "gateway 192.168.0.1 is not a host address"),
        ("line 9:", "network a is defined twice (first at line 2)"),
        ("line 12:", "bridge name 'this-bridge-name-is-too-long'"),
        ("line 19:", "host range 90-91 has 2 ports but container range 90 has 1"),
        ("line 24:", "address 10.0.0.5 on network a is held by both sandbox s1 and sandbox s2 (line 18)"),
        ("line 25:", "host port 80/tcp of 80:10.0.0.5:8080/tcp is already published"),
        ("line 27:", "no network named nope"),
    ];
    for (line, msg) in want {
        assert!(ps.iter().any(|p| p.starts_with(line) && p.contains(msg)), "missing {line} {msg} in {ps:#?}");
    }
    // Overlap: b's subnet is inside a's (b's gateway problem stops b before the overlap check).
    let ov = problems(
        "[[network]]\nname = \"a\"\nsubnet = \"10.0.0.0/16\"\n[[network]]\nname = \"b\"\nsubnet = \"10.0.5.0/24\"\n",
    );
    assert_eq!(ov, vec!["line 6: subnet 10.0.5.0/24 of network b overlaps subnet 10.0.0.0/16 of network a (line 3)"]);
}

#[test]
fn missing_addresses_are_allocated_in_file_order_after_fixed_ones() {
    let text = r#"[[network]]
name = "n"
subnet = "10.9.0.0/29"
[[sandbox]]
name = "a"
[[sandbox.endpoint]]
network = "n"
[[sandbox]]
name = "b"
[[sandbox.endpoint]]
network = "n"
ip = "10.9.0.2"
[[sandbox]]
name = "c"
[[sandbox.endpoint]]
network = "n"
"#;
    let p = load(text).unwrap();
    let st = to_state(&p, &State::default()).unwrap();
    let ip = |s: &str| st.sandboxes[s].endpoints[0].ips_text();
    assert_eq!((ip("a"), ip("b"), ip("c")), ("10.9.0.3".into(), "10.9.0.2".into(), "10.9.0.4".into()));
    // A previous address is kept when still free.
    let mut prev = st.clone();
    prev.sandboxes.get_mut("c").unwrap().endpoints[0].ips = vec!["10.9.0.6".parse().unwrap()];
    let again = to_state(&p, &prev).unwrap();
    assert_eq!(again.sandboxes["c"].endpoints[0].ips_text(), "10.9.0.6");
    // Full network: one problem.
    let full = text.replace("10.9.0.0/29", "10.9.0.0/30");
    assert!(problems(&full).iter().any(|p| p.contains("no free address")), "{:?}", problems(&full));
}

#[test]
fn short_publish_form_uses_the_endpoint_address() {
    let text = "[[network]]\nname = \"n\"\nsubnet = \"10.9.0.0/24\"\n[[sandbox]]\nname = \"a\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\nip = \"10.9.0.7\"\npublish = [\"8080:80\", \"127.0.0.1:5353:53/udp\"]\n";
    let st = to_state(&load(text).unwrap(), &State::default()).unwrap();
    let got: Vec<String> = st.mappings.iter().map(|m| m.to_string()).collect();
    assert_eq!(got, vec!["8080:10.9.0.7:80/tcp", "127.0.0.1:5353:10.9.0.7:53/udp"]);
    let wrong = text.replace("8080:80", "8080:10.9.0.8:80");
    assert!(problems(&wrong)[0].contains("forwards to 10.9.0.8"), "{:?}", problems(&wrong));
}

const DUAL: &str = r#"
[[network]]
name = "d"
subnet = ["172.16.0.0/16", "fd00:16::/64"]
gateway = ["172.16.1.254", "fd00:16::fe"]
ipv6_mode = "nat"

[[sandbox]]
name = "c1"
[[sandbox.endpoint]]
network = "d"
ip = ["172.16.1.1", "fd00:16::2"]
publish = ["9090:80", "[2001:db8:1::1]:9091:81", "9092:c1:82/udp"]

[[sandbox]]
name = "c2"
[[sandbox.endpoint]]
network = "d"

publish = ["7070:c2:80"]
"#;

#[test]
fn dual_stack_file_allocates_and_resolves_per_family() {
    // The top-level publish list goes first in a TOML file (before any table).
    let text = DUAL.replace("\npublish = [\"7070:c2:80\"]\n", "\n");
    let top = format!("publish = [\"7070:c2:80\"]\n{text}");
    let st = to_state(&load(&top).unwrap_or_else(|e| panic!("{e:?}")), &State::default()).unwrap();
    assert_eq!(st.networks["d"].gateways_text(), "172.16.1.254, fd00:16::fe");
    assert_eq!(st.sandboxes["c2"].endpoints[0].ips_text(), "172.16.0.1 fd00:16::1");
    let got: Vec<String> = st.mappings.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        got,
        [
            "9090:172.16.1.1:80/tcp",
            "9090:[fd00:16::2]:80/tcp",
            "[2001:db8:1::1]:9091:[fd00:16::2]:81/tcp",
            "9092:172.16.1.1:82/udp",
            "9092:[fd00:16::2]:82/udp",
            "7070:172.16.0.1:80/tcp",
            "7070:[fd00:16::1]:80/tcp",
        ]
    );
    // save writes the resolved addresses, and apply reads them back as they were.
    let back = to_state(&load(&to_toml(&st, &[])).unwrap(), &State::default()).unwrap();
    assert_eq!(back.networks, st.networks);
    assert_eq!(back.sandboxes, st.sandboxes);
}

#[test]
fn ipv6_problems_have_their_lines() {
    let ps = |t: &str| problems(t);
    let one = |t: &str, want: &str| {
        let got = ps(t);
        assert!(got.iter().any(|p| p.contains(want)), "want {want} in {got:?}");
    };
    one(
        "[[network]]\nname = \"n\"\nsubnet = [\"fd00::/64\", \"fd01::/64\"]\n",
        "line 3: network n: subnets fd00::/64 and fd01::/64",
    );
    one(
        "[[network]]\nname = \"n\"\nsubnet = \"fe80::/64\"\n",
        "line 3: network n: subnet 'fe80::/64' overlaps the link-local",
    );
    one("[[network]]\nname = \"n\"\nsubnet = \"fd00::/121\"\n", "line 3: network n: subnet 'fd00::/121'");
    one(
        "[[network]]\nname = \"n\"\nsubnet = \"fd00::/64\"\ngateway = \"fd01::1\"\n",
        "line 4: network n: gateway fd01::1",
    );
    one(
        "[[network]]\nname = \"n\"\nsubnet = \"fd00::/64\"\n[[network]]\nname = \"m\"\nsubnet = \"fd00::/48\"\n",
        "line 3: subnet fd00::/64 of network n overlaps subnet fd00::/48 of network m (line 6)",
    );
    one("[[network]]\nname = \"n\"\nsubnet = 7\n", "line 3: network n: `subnet` must be a string or an array");
    one(
        "[[network]]\nname = \"n\"\nsubnet = \"10.0.0.0/24\"\nipv6_mode = \"routed\"\n",
        "line 2: network n: ipv6_mode",
    );
    let ep = "[[network]]\nname = \"n\"\nsubnet = [\"10.0.0.0/24\", \"fd00::/64\"]\n[[sandbox]]\nname = \"s\"\n[[sandbox.endpoint]]\nnetwork = \"n\"\n";
    one(&format!("{ep}ip = \"fd01::2\"\n"), "line 8: sandbox s: address fd01::2 is not a free host address");
    one(&format!("{ep}ip = [\"fd00::2\", \"fd00::3\"]\n"), "line 8: sandbox s: two IPv6 addresses");
    one(
        &format!("{ep}ip = \"fd00::2\"\npublish = [\"[::1]:80:81\"]\n"),
        "line 9: host address [::1] in '[::1]:80:81' cannot be published",
    );
    one(&format!("{ep}publish = [\"80:nobody:81\"]\n"), "line 8: '80:nobody:81': no sandbox named nobody");
}

#[test]
fn save_output_round_trips() {
    let mut st = to_state(&load(DEMO).unwrap(), &State::default()).unwrap();
    st.mappings.push("127.0.0.1:5353:172.16.1.2:53/udp".parse().unwrap());
    st.mappings.push("8443:10.1.2.3:443".parse().unwrap());
    st.networks.get_mut("MyDocker0").unwrap().internal = true;
    let text = to_toml(&st, &["bridge X is missing".into()]);
    let back = to_state(&load(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}")), &State::default()).unwrap();
    let sorted = |mut v: Vec<Mapping>| {
        v.sort();
        v
    };
    assert_eq!(back.networks, st.networks);
    assert_eq!(back.sandboxes, st.sandboxes);
    assert_eq!(sorted(back.mappings), sorted(st.mappings));
}
