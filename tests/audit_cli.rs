//! `netnat audit` and `netnat graph` against a real kernel: each condition is planted by hand
//! (nft, ip, sysctl, a socket), the finding must appear, and disappear once the condition is
//! removed. Each test runs in its own throwaway network + mount namespace.

mod common;
use common::*;
use serde_json::Value;

fn setup() {
    make_external_host();
    seed_topology();
    ok(&["publish", "9090:172.16.1.1:8080"]);
}

/// Runs `netnat audit --json [extra]`: exit status and parsed output.
fn audit(extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["audit", "--json"];
    args.extend(extra);
    let out = netnat(&args);
    let code = out.status.code().expect("audit exited normally");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("audit --json is not JSON ({e}):\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (code, v)
}

fn findings(v: &Value) -> Vec<&Value> {
    v["findings"].as_array().expect("findings array").iter().collect()
}

/// The findings with this id (asserting their severity).
fn with_id<'a>(v: &'a Value, id: &str, severity: &str) -> Vec<&'a Value> {
    let f: Vec<&Value> = findings(v).into_iter().filter(|f| f["id"] == id).collect();
    for x in &f {
        assert_eq!(x["severity"], severity, "{id}: {x}");
    }
    f
}

fn assert_finding(id: &str, severity: &str) -> Value {
    let (code, v) = audit(&[]);
    let f = with_id(&v, id, severity);
    assert!(!f.is_empty(), "no {id} ({severity}) in:\n{v:#}");
    if severity != "info" {
        assert_eq!(code, 1, "a {severity} finding fails the audit at the default --fail-on warning");
    }
    f[0].clone()
}

fn assert_no_finding(id: &str) {
    let (_, v) = audit(&[]);
    assert!(findings(&v).iter().all(|f| f["id"] != id), "{id} still reported:\n{v:#}");
}

/// Only info findings, exit 0.
fn assert_clean() {
    let (code, v) = audit(&[]);
    let bad: Vec<&Value> = findings(&v).into_iter().filter(|f| f["severity"] != "info").collect();
    assert!(bad.is_empty(), "not clean: {bad:#?}");
    assert_eq!(code, 0);
}

isolated!(clean_setup_audits_clean, inner_clean_setup_audits_clean, {
    setup();
    ok(&["publish", "127.0.0.1:5353:172.16.1.2:53/udp"]);
    assert_clean();
    let (_, v) = audit(&[]);
    assert_eq!(with_id(&v, "inventory.mapping", "info").len(), 2);
    let maps = v["mappings"].as_array().unwrap();
    let scopes: Vec<(&str, &str)> =
        maps.iter().map(|m| (m["protocol"].as_str().unwrap(), m["scope"].as_str().unwrap())).collect();
    assert_eq!(scopes, vec![("tcp", "any"), ("udp", "loopback")]);
    // Info findings fail only when asked to.
    assert_eq!(audit(&["--fail-on", "info"]).0, 1);
    // The human form: grouped, with a summary line.
    let text = ok(&["audit"]);
    assert!(text.contains("INFO (") && text.contains("0 error(s), 0 warning(s)"), "{text}");
    // The graph names every part of the topology.
    let dot = ok(&["graph"]);
    for want in
        ["digraph netnat", "subnet 172.16.0.0/16", "gateway 172.16.1.254", "sandbox Container_ns2", "loopback only"]
    {
        assert!(dot.contains(want), "graph lacks {want}:\n{dot}");
    }
    assert_eq!(ok(&["graph"]), dot, "deterministic");
});

isolated!(hand_added_rule_is_drift, inner_hand_added_rule_is_drift, {
    setup();
    sh("nft add rule inet netnat postrouting counter");
    let f = assert_finding("drift.rule", "error");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("inet netnat postrouting") && msg.contains("counter"), "{msg}");
    assert_eq!(f["objects"][0], "inet netnat postrouting");
    let handle = sh("nft -a list chain inet netnat postrouting | awk '/^\\t\\tcounter packets [0-9]+ bytes [0-9]+ # handle/ {print $NF}'");
    sh(&format!("nft delete rule inet netnat postrouting handle {}", handle.trim()));
    assert_no_finding("drift.rule");
    assert_clean();
});

isolated!(deleted_element_is_drift, inner_deleted_element_is_drift, {
    setup();
    sh("nft delete element inet netnat pub_any4 '{ tcp . 9090 }'");
    let f = assert_finding("drift.element-missing", "error");
    assert!(f["message"].as_str().unwrap().contains("tcp . 9090 : 172.16.1.1 . 8080"), "{f}");
    sh("nft add element inet netnat pub_any4 '{ tcp . 7777 : 172.16.1.9 . 80 }'");
    assert_finding("drift.element-extra", "error");
    sh("nft delete element inet netnat pub_any4 '{ tcp . 7777 }'");
    sh("nft add element inet netnat pub_any4 '{ tcp . 9090 : 172.16.1.2 . 8080 }'");
    assert_finding("drift.element-changed", "error");
    sh("nft delete element inet netnat pub_any4 '{ tcp . 9090 }'");
    sh("nft add element inet netnat pub_any4 '{ tcp . 9090 : 172.16.1.1 . 8080 }'");
    assert_clean();
});

isolated!(foreign_forward_drop, inner_foreign_forward_drop, {
    setup();
    sh("nft add table ip other; nft add chain ip other fw '{ type filter hook forward priority 0; policy drop; }'");
    let f = assert_finding("conflict.forward-drop", "warning");
    assert!(f["message"].as_str().unwrap().contains("ip other fw"), "{f}");
    sh("nft delete table ip other");
    assert_no_finding("conflict.forward-drop");
    // A drop rule that can hit the bridge's traffic counts too; one for another interface does not.
    sh("nft add table inet fw; nft add chain inet fw f '{ type filter hook forward priority 10; }'; \
        nft add rule inet fw f iifname \"eth9\" drop");
    assert_no_finding("conflict.forward-drop");
    sh("nft add rule inet fw f tcp dport 22 drop");
    assert!(assert_finding("conflict.forward-drop", "warning")["message"].as_str().unwrap().contains("dport 22 drop"));
    sh("nft delete table inet fw");
    assert_clean();
});

isolated!(foreign_dnat_on_published_port, inner_foreign_dnat_on_published_port, {
    setup();
    sh("nft add table ip other; nft add chain ip other pre '{ type nat hook prerouting priority -150; }'; \
        nft add rule ip other pre tcp dport 9090 dnat to 10.9.9.9");
    let f = assert_finding("conflict.dnat", "warning");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("ip other pre") && msg.contains("the foreign DNAT wins"), "{msg}");
    assert!(msg.contains("dnat ip to 10.9.9.9"), "{msg}");
    // Listed with the foreign NAT rules, and nothing worse than a warning.
    let (code, v) = audit(&["--fail-on", "error"]);
    assert_eq!(code, 0);
    assert!(with_id(&v, "foreign.nat", "info").iter().any(|f| f["message"].as_str().unwrap().contains("ip other pre")));
    sh("nft delete table ip other");
    assert_no_finding("conflict.dnat");
    assert_no_finding("foreign.nat");
    assert_clean();
});

isolated!(foreign_ipv6_dnat_on_published_port, inner_foreign_ipv6_dnat_on_published_port, {
    make_external_host_v6();
    seed_topology_v6();
    ok(&["publish", "9090:Container_ns1:8080"]);
    let _s4 = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    let _s6 = tcp_server(ns1().as_deref(), "[fd00:16::2]:8080", "ns1v6");
    let _other = tcp_server(Some(ns("Container_ns2")).as_deref(), "[fd00:16::3]:8080", "ns2v6");
    assert_eq!(tcp_get_settled(ext().as_deref(), "[2001:db8:1::1]:9090").unwrap(), "ns1v6 saw 2001:db8:1::2");
    for (table, rule) in [
        ("ip6 other", "tcp dport 9090 dnat to [fd00:16::3]:8080"),
        ("inet other", "meta nfproto ipv6 tcp dport 9090 dnat ip6 to [fd00:16::3]:8080"),
    ] {
        sh(&format!(
            "nft add table {table}; nft add chain {table} pre '{{ type nat hook prerouting priority -150; }}'; \
             nft add rule {table} pre {rule}"
        ));
        let (_, v) = audit(&[]);
        let f = with_id(&v, "conflict.dnat", "warning");
        // The IPv6 mapping of 9090 only: the rule never sees IPv4 packets.
        assert_eq!(f.len(), 1, "{table}: {v:#}");
        assert_eq!(f[0]["objects"][0], "9090:[fd00:16::2]:8080/tcp");
        let msg = f[0]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{table} pre")) && msg.contains("the foreign DNAT wins"), "{msg}");
        assert!(msg.contains("dnat ip6 to [fd00:16::3]:8080"), "{msg}");
        assert!(with_id(&v, "foreign.nat", "info").iter().any(|f| f["message"].as_str().unwrap().contains(table)));
        // What the finding says is what happens: IPv6 clients reach the foreign target, IPv4
        // clients still the published container.
        assert_eq!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:9090").unwrap(), "ns2v6 saw 2001:db8:1::2");
        assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
        sh(&format!("nft delete table {table}"));
        assert_no_finding("conflict.dnat");
        assert_no_finding("foreign.nat");
        assert_eq!(tcp_get(ext().as_deref(), "[2001:db8:1::1]:9090").unwrap(), "ns1v6 saw 2001:db8:1::2");
    }
    assert_clean();
});

/// A DNAT added with `tool` (iptables-nft, or ip6tables-nft), whose rules go in table `family`
/// nat, to `to`: listed in foreign.nat as `shown`, and a conflict.dnat with exactly the mapping
/// `own`, the one of 9090 in the rule's family. Dual stack, 9090 published over both families,
/// 9191 over the other family only (`other_only`).
fn xt_dnat_is_decoded(tool: &str, family: &str, to: &str, shown: &str, own: &str, other_only: &str) {
    let found = run("sh", &["-c", &format!("command -v {tool}")]);
    assert!(!found.stdout.is_empty(), "{tool} is not installed (`make deps` installs Debian's iptables)");
    make_external_host_v6();
    seed_topology_v6();
    ok(&["publish", "9090:Container_ns1:8080", other_only]);
    sh(&format!("{tool} -t nat -A PREROUTING -p tcp --dport 9191 -j DNAT --to-destination {to}"));
    assert_finding("foreign.nat", "info");
    let (_, v) = audit(&[]);
    let msgs: Vec<&str> = with_id(&v, "foreign.nat", "info").iter().map(|f| f["message"].as_str().unwrap()).collect();
    let label = format!("{family} nat PREROUTING");
    assert!(msgs.iter().any(|m| m.contains(&label) && m.contains(shown)), "{msgs:#?}");
    // 9191 is published in the other family only: no conflict. 9090: a conflict with the
    // mapping of the rule's family, at the same priority as netnat.
    assert_no_finding("conflict.dnat");
    sh(&format!("{tool} -t nat -A PREROUTING -p tcp --dport 9090 -j DNAT --to-destination {to}"));
    assert_finding("conflict.dnat", "warning");
    let (_, v) = audit(&[]);
    let c = with_id(&v, "conflict.dnat", "warning");
    assert_eq!(c.len(), 1, "{v:#}");
    assert_eq!(c[0]["objects"][0], own);
    let msg = c[0]["message"].as_str().unwrap();
    assert!(msg.contains(&label) && msg.contains(shown) && msg.contains("registered first"), "{msg}");
    sh(&format!("{tool} -t nat -F PREROUTING"));
    assert_no_finding("conflict.dnat");
}

isolated!(iptables_nft_dnat_is_decoded, inner_iptables_nft_dnat_is_decoded, {
    xt_dnat_is_decoded(
        "iptables-nft",
        "ip",
        "10.1.2.3:80",
        "dnat to 10.1.2.3:80 (iptables DNAT)",
        "9090:172.16.1.1:8080/tcp",
        "9191:[fd00:16::2]:8080",
    );
});

isolated!(ip6tables_nft_dnat_is_decoded, inner_ip6tables_nft_dnat_is_decoded, {
    xt_dnat_is_decoded(
        "ip6tables-nft",
        "ip6",
        "[fd00:16::9]:80",
        "dnat to [fd00:16::9]:80 (ip6tables DNAT)",
        "9090:[fd00:16::2]:8080/tcp",
        "9191:172.16.1.1:8080",
    );
});

isolated!(route_localnet_without_guard, inner_route_localnet_without_guard, {
    setup();
    sh("sysctl -qw net.ipv4.conf.veth-ext.route_localnet=1");
    assert_no_finding("host.route-localnet-unguarded"); // the guard is there
    sh("nft flush chain inet netnat guard");
    let f = assert_finding("host.route-localnet-unguarded", "error");
    assert!(f["objects"].as_array().unwrap().iter().any(|o| o == "veth-ext"), "{f}");
    assert_finding("drift.rule", "error");
    // Any command that syncs the table puts the guard back.
    ok(&["publish", "9090:172.16.1.1:8080"]);
    assert_no_finding("host.route-localnet-unguarded");
    assert_clean();
});

isolated!(forwarding_off, inner_forwarding_off, {
    setup();
    sh("sysctl -qw net.ipv4.ip_forward=0"); // this test's namespace only
    assert_finding("host.forwarding-off", "error");
    sh("sysctl -qw net.ipv4.ip_forward=1");
    assert_no_finding("host.forwarding-off");
    assert_clean();
});

isolated!(local_listener_on_published_port, inner_local_listener_on_published_port, {
    setup();
    let l = std::net::TcpListener::bind("0.0.0.0:9090").expect("binding 0.0.0.0:9090 in the test namespace");
    let f = assert_finding("conflict.local-listener", "warning");
    assert!(f["message"].as_str().unwrap().contains("0.0.0.0:9090/tcp"), "{f}");
    drop(l);
    assert_no_finding("conflict.local-listener");
    assert_clean();
});

isolated!(stale_veth, inner_stale_veth, {
    setup();
    sh("ip link add nn12345678 type veth peer name x");
    let f = assert_finding("leftover.veth", "warning");
    assert_eq!(f["objects"][0], "nn12345678");
    sh("ip link del nn12345678");
    assert_no_finding("leftover.veth");
    assert_clean();
});

isolated!(leftover_netns_and_target, inner_leftover_netns_and_target, {
    setup();
    ok(&["sandbox", "create", "lonely"]);
    assert_eq!(assert_finding("leftover.netns", "warning")["objects"][0], "lonely");
    ok(&["sandbox", "rm", "lonely"]);
    assert_no_finding("leftover.netns");
    ok(&["publish", "8443:10.200.0.5:443"]);
    assert_finding("leftover.mapping-target", "warning");
    ok(&["unpublish", "8443"]);
    assert_clean();
});

isolated!(counters_rise_with_traffic, inner_counters_rise_with_traffic, {
    setup();
    let _s = tcp_server(ns1().as_deref(), "172.16.1.1:8080", "ns1");
    let mapping =
        |v: &Value| v["mappings"].as_array().unwrap().iter().find(|m| m["host_port"] == 9090).unwrap().clone();
    let before = mapping(&audit(&[]).1);
    // By default connections are counted, packets and bytes are not (null).
    assert_eq!(before["connections_total"].as_u64(), Some(0));
    assert!(before["packets"].is_null() && before["bytes"].is_null(), "{before}");
    for _ in 0..3 {
        assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
    }
    let after = mapping(&audit(&[]).1);
    assert_eq!(after["connections_total"].as_u64(), Some(3), "{after}");
    assert!(after["connections"].as_u64().unwrap() >= 1, "conntrack keeps closed connections a while: {after}");
    assert_eq!(after["scope"], "any");
    // With packet counting: every packet of the next three connections, both directions (not
    // just the first packet the NAT chain sees): a TCP request/response is at least 6 packets.
    ok(&["counting", "packets"]);
    for _ in 0..3 {
        assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ns1 saw 198.51.100.2");
    }
    let counted = mapping(&audit(&[]).1);
    assert!(counted["packets"].as_u64().unwrap() >= 3 * 6, "{counted}");
    assert!(counted["bytes"].as_u64().unwrap() >= 3 * 300, "{counted}");
    assert_eq!(counted["connections_total"].as_u64(), Some(6), "connection counters kept counting: {counted}");
});

isolated!(audit_that_cannot_run_exits_2, inner_audit_that_cannot_run_exits_2, {
    let err = fails(&["audit", "--config", "/run/no-such.toml"], 2);
    assert!(err.contains("audit could not run") && err.contains("/run/no-such.toml"), "{err}");
    // A damaged record does not stop the audit: it is a finding (tests/record_faults.rs).
    std::fs::create_dir_all("/run/netnat").unwrap();
    std::fs::write("/run/netnat/state.json", "not json").unwrap();
    let out = String::from_utf8_lossy(&netnat(&["audit"]).stdout).into_owned();
    assert!(out.contains("state.unreadable") && out.contains("state.json"), "{out}");
});

// ---- the JSON output against docs/audit-schema.json ----

/// A small JSON Schema checker for the keywords the schema uses: type, required, properties,
/// additionalProperties (false), items, enum, minimum, maximum.
fn validate(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => panic!("bad type in schema at {path}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("unsupported type {other}"),
        });
        if !ok {
            errors.push(format!("{path}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum") {
        if !e.as_array().unwrap().contains(v) {
            errors.push(format!("{path}: {v} is not one of {e}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{path}: {n} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if n > max {
            errors.push(format!("{path}: {n} > {max}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap()) {
                errors.push(format!("{path}: missing {r}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, x, &format!("{path}.{k}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{path}: undocumented field {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, x, &format!("{path}[{i}]"), errors);
        }
    }
}

fn schema() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audit-schema.json"))
        .expect("reading docs/audit-schema.json");
    serde_json::from_str(&text).expect("docs/audit-schema.json is JSON")
}

#[test]
fn schema_checker_rejects_bad_shapes() {
    let s = schema();
    let mut errors = vec![];
    validate(
        &s,
        &serde_json::json!({"findings": [{"id": "made.up", "severity": "fatal", "message": 1}], "extra": 1}),
        "$",
        &mut errors,
    );
    let text = errors.join("\n");
    for want in
        ["made.up", "fatal", "message", "missing \"objects\"", "missing \"mappings\"", "undocumented field extra"]
    {
        assert!(text.contains(want), "{want} not reported:\n{text}");
    }
}

isolated!(json_matches_documented_schema, inner_json_matches_documented_schema, {
    setup();
    ok(&["publish", "127.0.0.1:5353:172.16.1.2:53/udp", "198.51.100.1:7000-7001:172.16.1.2:7000-7001"]);
    // Plenty of different findings, so their shapes are checked too.
    sh("nft add rule inet netnat postrouting counter; nft delete element inet netnat pub_any4 '{ tcp . 9090 }'; \
        nft add table ip other; nft add chain ip other pre '{ type nat hook prerouting priority -150; }'; \
        nft add rule ip other pre tcp dport 9090 dnat to 10.9.9.9; \
        ip link add nn12345678 type veth peer name x; sysctl -qw net.ipv4.ip_forward=0");
    let (code, v) = audit(&[]);
    assert_eq!(code, 1);
    let mut errors = vec![];
    validate(&schema(), &v, "$", &mut errors);
    assert!(errors.is_empty(), "audit --json does not match docs/audit-schema.json:\n{}\n{v:#}", errors.join("\n"));
    let ids: Vec<&str> = findings(&v).iter().map(|f| f["id"].as_str().unwrap()).collect();
    for want in ["drift.rule", "drift.element-missing", "conflict.dnat", "leftover.veth", "host.forwarding-off"] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert_eq!(v["mappings"].as_array().unwrap().len(), 3);
    // Worst first.
    let rank = |s: &Value| ["error", "warning", "info"].iter().position(|x| s == x).unwrap();
    let ranks: Vec<usize> = findings(&v).iter().map(|f| rank(&f["severity"])).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
});

isolated!(config_drift, inner_config_drift, {
    // What rules/demo.toml describes: the seed, dual stack, 9090 published on both families.
    make_external_host_v6();
    seed_topology_v6();
    ok(&["publish", "9090:Container_ns1:8080"]);
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/demo.toml");
    let (code, v) = audit(&["--config", demo]);
    assert!(with_id(&v, "drift.config", "warning").is_empty(), "{v:#}");
    assert_eq!(code, 0);
    ok(&["publish", "7777:172.16.1.2:80"]);
    let (code, v) = audit(&["--config", demo]);
    let f = with_id(&v, "drift.config", "warning");
    assert_eq!(f.len(), 1, "{v:#}");
    assert!(f[0]["message"]
        .as_str()
        .unwrap()
        .contains("7777:172.16.1.2:80/tcp is published but not in the configuration"));
    assert_eq!(code, 1);
    ok(&["unpublish", "7777"]);
    assert_eq!(audit(&["--config", demo]).0, 0);
    // A file that cannot be read: the audit cannot run.
    let err = fails(&["audit", "--config", "/nonexistent.toml"], 2);
    assert!(err.contains("/nonexistent.toml"), "{err}");
});
