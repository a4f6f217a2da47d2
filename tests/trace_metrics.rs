//! `netnat trace` and `netnat metrics` (issue 15) against a real kernel, with real traffic from
//! the external-host namespace. Each test runs in its own throwaway network + mount namespace.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `netnat trace` running in the background, its output collected by a thread.
struct Trace {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

fn trace_chains() -> bool {
    run("nft", &["list", "table", "inet", "netnat"]).stdout.windows(12).any(|w| w == b"chain trace-")
}

/// Starts `netnat trace ARGS` and returns once its chains are in place (at most 10 s).
fn start_trace(args: &[&str]) -> Trace {
    let mut child = Command::new(NETNAT)
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting netnat trace");
    let mut o = child.stdout.take().unwrap();
    let mut e = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = o.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(10);
    while !trace_chains() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("netnat trace {args:?} ended ({status}) before its chains were seen: {}", err.join().unwrap());
        }
        assert!(Instant::now() < end, "netnat trace {args:?}: no trace chain after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Trace { child, out, err }
}

impl Trace {
    /// Waits for the trace to end by itself (at most `secs`): exit status, stdout, stderr.
    fn wait(mut self, secs: u64) -> (i32, String, String) {
        let end = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("netnat trace did not end within {secs} s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code().unwrap_or(-1), self.out.join().unwrap(), self.err.join().unwrap())
    }
}

/// The lines of the packet numbered `n` in a text trace.
fn packet(out: &str, n: usize) -> String {
    let head = format!("packet {n} ");
    let mut lines = out.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines.next().unwrap_or_else(|| panic!("no packet {n} in:\n{out}"));
    let rest: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    format!("{first}\n{}\n", rest.join("\n"))
}

/// The `connections:` lines of a text trace.
fn connection_lines(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| *l != "connections:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn audit_ids() -> (i32, Vec<String>) {
    let out = netnat(&["audit", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit --json");
    let ids = v["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
    (out.status.code().unwrap(), ids)
}

/// Packets counted for the mapping on host port `port` (`ls --json`).
fn ls_counter(port: u16, what: &str) -> u64 {
    let v: Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let m = v.as_array().unwrap().iter().find(|m| m["host_port"] == port).expect("mapping in ls --json");
    m[what].as_u64().unwrap()
}

isolated!(trace_through_a_working_published_port, inner_trace_working_port, {
    let _servers = seed_with_published_ports();
    // From the external host only (`--from`): requests by their source, replies by their connection's.
    let t = start_trace(&["9090", "--from", "198.51.100.0/24", "--count", "6", "--timeout", "20"]);
    assert_published(9090, "ns1");
    let (code, out, err) = t.wait(30);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("tracing tcp port 9090 on every local IPv4 address from 198.51.100.0/24, "), "{out}");
    assert!(out.contains("published there by netnat: 9090:172.16.1.1:8080/tcp (network MyDocker0)\n"), "{out}");
    // The request: netnat's prerouting rule with its DNAT target, then its forward accept.
    let p1 = packet(&out, 1);
    assert!(p1.starts_with("packet 1 (original): tcp 198.51.100.2:"), "{p1}");
    assert!(p1.contains(" > 198.51.100.1:9090 [SYN] in veth-ext\n"), "{p1}");
    let pre = p1.lines().find(|l| l.contains("inet netnat prerouting: rule ")).expect(&p1);
    assert!(pre.contains("dnat ip to meta l4proto . th dport map @pub_any4") && pre.ends_with("-> accept"), "{p1}");
    assert!(p1.contains("dnat: 198.51.100.1:9090 -> 172.16.1.1:8080 (by inet netnat prerouting rule "), "{p1}");
    // After DNAT no rule of netnat's meets it: netnat has no forward chain by default.
    assert!(!p1.contains("inet netnat forward"), "{p1}");
    assert!(p1.contains("  => accepted, forwarded out MyDocker0\n"), "{p1}");
    // The other direction: the container's answer.
    assert!(packet(&out, 2).starts_with("packet 2 (reply): tcp 172.16.1.1:8080 > 198.51.100.2:"), "{out}");
    let conns = connection_lines(&out);
    assert_eq!(conns.len(), 1, "{out}");
    assert!(conns[0].starts_with("tcp 198.51.100.2:"), "{out}");
    assert!(conns[0].contains("DNAT to 172.16.1.1:8080; arrived at 172.16.1.1:8080 and was answered"), "{out}");
    assert!(out.contains("stopped: 6 packets (--count)"), "{out}");
    assert!(!trace_chains(), "the trace's chains are removed");

    // A port nothing publishes, answered by a process on the host: nothing DNATs it.
    let _host = tcp_server(None, "198.51.100.1:7777", "host");
    let t = start_trace(&["7777", "--count", "2", "--timeout", "20"]);
    assert_eq!(tcp_get(Some(&ns("ext")), "198.51.100.1:7777").unwrap(), "host saw 198.51.100.2");
    let (code, out, _) = t.wait(30);
    assert_eq!(code, 0);
    assert!(out.contains("published there by netnat: nothing\n"), "{out}");
    let conns = connection_lines(&out);
    assert!(
        conns[0].contains("198.51.100.1:7777: not translated (no table DNATs it); arrived at 198.51.100.1:7777"),
        "{out}"
    );
});

isolated!(trace_names_a_docker_style_forward_policy_drop, inner_trace_docker_drop, {
    make_external_host();
    sh("iptables-nft -P FORWARD DROP && iptables-nft -N DOCKER && iptables-nft -N DOCKER-USER \
        && iptables-nft -A DOCKER-USER -j RETURN && iptables-nft -A FORWARD -j DOCKER-USER \
        && iptables-nft -A FORWARD -o docker0 -j DOCKER");
    // Integration off: netnat leaves DOCKER-USER alone, so Docker's policy drops the port.
    seed_topology_with(&["--host-firewall", "off"]);
    ok(&["publish", "9090:172.16.1.1:8080"]);
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    let t = start_trace(&["9090", "--count", "1", "--timeout", "20"]);
    assert!(tcp_get(Some(&ns("ext")), "198.51.100.1:9090").is_err(), "Docker's policy lets it through");
    let (code, out, err) = t.wait(30);
    assert_eq!(code, 0, "{out}\n{err}");
    let p1 = packet(&out, 1);
    // netnat translated and accepted it; Docker's chain, which also sees it, dropped it.
    assert!(p1.contains("dnat: 198.51.100.1:9090 -> 172.16.1.1:8080"), "{p1}");
    let jump = p1.lines().find(|l| l.contains("ip filter FORWARD: rule ")).expect(&p1);
    assert!(jump.ends_with("jump DOCKER-USER"), "{p1}");
    let back = p1.lines().find(|l| l.contains("ip filter DOCKER-USER: rule ")).expect(&p1);
    assert!(back.ends_with(" return"), "{p1}");
    assert!(p1.contains("ip filter FORWARD: policy drop\n"), "{p1}");
    assert!(p1.contains("  => dropped by table ip filter chain FORWARD: policy drop\n"), "{p1}");
    let conns = connection_lines(&out);
    assert!(
        conns[0].contains("DNAT to 172.16.1.1:8080; dropped by table ip filter chain FORWARD: policy drop"),
        "{out}"
    );
});

isolated!(trace_shows_the_guard_dropping_a_crafted_loopback_syn, inner_trace_guard, {
    make_external_host();
    seed_topology();
    ok(&["publish", "127.0.0.1:6060:172.16.1.1:8080"]);
    let _s = tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1");
    let t = start_trace(&["127.0.0.1:6060", "--count", "1", "--timeout", "20"]);
    let host_mac = raw::mac_of("ip -o link show veth-ext");
    assert!(!raw::syn_gets_synack(&ns("ext"), &host_mac, EXT_IP, "127.0.0.1", 6060), "the crafted SYN was answered");
    let (code, out, err) = t.wait(30);
    assert_eq!(code, 0, "{out}\n{err}");
    let p1 = packet(&out, 1);
    assert!(p1.starts_with("packet 1 (original): tcp 198.51.100.2:45678 > 127.0.0.1:6060 [SYN] in veth-ext"), "{p1}");
    let guard = p1.lines().find(|l| l.contains("inet netnat guard: rule ")).expect(&p1);
    assert!(guard.contains("ip daddr 127.0.0.0/8 iifname != \"lo\"") && guard.ends_with("-> drop"), "{p1}");
    assert!(!p1.contains("dnat:"), "nothing after the guard translated it: {p1}");
    let conns = connection_lines(&out);
    assert!(
        conns[0].contains("not translated (no table DNATs it); dropped by table inet netnat chain guard: rule handle ")
    );
    assert!(conns[0].contains("ip daddr 127.0.0.0/8"), "{out}");
});

isolated!(trace_is_bounded_and_leaves_nothing_behind, inner_trace_bounds, {
    // No netnat table yet: the trace makes one for itself, and removes it again at its timeout.
    sh("ip link set lo up");
    let started = Instant::now();
    let v: Value = serde_json::from_str(&ok(&["trace", "9191", "--timeout", "1", "--json"])).unwrap();
    assert_eq!(v["stopped_by"], "timeout", "{v:#}");
    assert!(v["packets"].as_array().unwrap().is_empty() && v["connections"].as_array().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(!sh("nft list tables").contains("netnat"), "the table the trace made is left");

    let _servers = seed_with_published_ports();
    // --count 3: three packets, and JSON with the same facts as the text.
    let t = start_trace(&["9090", "--count", "3", "--timeout", "60", "--json"]);
    assert_published(9090, "ns1");
    let (code, out, err) = t.wait(30);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("trace --json is JSON");
    assert_eq!(v["stopped_by"], "count", "{v:#}");
    let packets = v["packets"].as_array().unwrap();
    assert_eq!(packets.len(), 3, "{v:#}");
    let dirs: Vec<&str> = packets.iter().map(|p| p["direction"].as_str().unwrap()).collect();
    assert_eq!(dirs, ["original", "reply", "original"], "SYN, SYN-ACK, ACK");
    let p1 = &packets[0];
    assert_eq!(p1["headers"]["dst"], "198.51.100.1");
    assert_eq!(p1["headers"]["dport"], 9090);
    let pre = p1["visits"].as_array().unwrap().iter().find(|x| x["table"] == "netnat" && x["chain"] == "prerouting");
    let hit = &pre.expect("netnat's prerouting chain")["rules"][0];
    assert!(hit["rule"].as_str().unwrap().contains("dnat ip to") && hit["verdict"] == "accept", "{hit}");
    assert_eq!(p1["nat"][0]["kind"], "dnat");
    assert_eq!(p1["nat"][0]["to"], "172.16.1.1:8080");
    assert_eq!(p1["fate"]["text"], "accepted, forwarded out MyDocker0");
    let c = &v["connections"][0];
    assert_eq!(
        (c["outcome"].as_str(), c["answered"].as_bool(), c["packets"].as_u64()),
        (Some("arrived"), Some(true), Some(3))
    );
    assert_eq!(c["dnat_to"], "172.16.1.1:8080");
    assert!(!trace_chains());

    // kill -9 of a running trace: its chains stay; the audit reports them once it is dead; the
    // next netnat command removes them, without rebuilding the table (the counters survive).
    let t = start_trace(&["9090", "--timeout", "60"]);
    assert!(!audit_ids().1.contains(&"trace.leftover".to_string()), "a running trace is no leftover");
    let mut child = t.child;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(trace_chains(), "SIGKILL left nothing to clean up: this test cannot fail");
    let (code, ids) = audit_ids();
    assert!(ids.contains(&"trace.leftover".to_string()), "{ids:?}");
    assert_eq!(code, 1, "trace.leftover is a warning");
    let packets_before = ls_counter(9090, "connections_total");
    assert!(packets_before > 0);
    ok(&["publish", "9191:172.16.1.2:80"]);
    assert!(!trace_chains(), "the next netnat command left the trace chains");
    assert!(!audit_ids().1.contains(&"trace.leftover".to_string()));
    assert_published(9090, "ns1");
    assert!(ls_counter(9090, "connections_total") > packets_before, "the counters were reset");
});

/// node_exporter in this namespace, killed when dropped.
struct NodeExporter(Child);

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP GET of node_exporter's /metrics (retried until it answers, at most 10 s).
fn scrape() -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let got = (|| -> std::io::Result<String> {
            let mut c =
                std::net::TcpStream::connect_timeout(&"127.0.0.1:9100".parse().unwrap(), Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })();
        match got {
            Ok(s) if s.starts_with("HTTP/1.0 200") => return s,
            _ if Instant::now() > end => panic!("node_exporter did not answer: {got:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `name{labels} value` lines of a metric, as (labels, value).
fn series(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .map(|l| {
            let (labels, value) = l.rsplit_once("} ").unwrap();
            (labels.to_string(), value.trim().parse::<f64>().unwrap())
        })
        .collect()
}

isolated!(metrics_through_node_exporter_and_promtool, inner_metrics, {
    let _servers = seed_with_published_ports();
    // Packets and bytes as well as connections.
    ok(&["counting", "packets"]);
    for _ in 0..3 {
        assert_published(9090, "ns1");
    }
    assert_published(20005, "ns2");
    // A connection held open: a live one for the gauge.
    let held = std::thread::spawn(|| {
        in_netns(&ns("ext"), || {
            let c = std::net::TcpStream::connect("198.51.100.1:9090").unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(c);
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir_all("/run/textfile").unwrap();
    ok(&["metrics", "--textfile", "/run/textfile"]);
    let files: Vec<String> =
        std::fs::read_dir("/run/textfile").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files, ["netnat.prom"], "a temporary file is left");
    let _ne = NodeExporter(
        Command::new("prometheus-node-exporter")
            .args([
                "--web.listen-address=127.0.0.1:9100",
                "--collector.disable-defaults",
                "--collector.textfile",
                "--collector.textfile.directory=/run/textfile",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus-node-exporter (Debian's prometheus-node-exporter, make deps)"),
    );
    let scraped = scrape();
    assert!(
        scraped.contains("\nnode_textfile_scrape_error 0\n"),
        "node_exporter could not read netnat.prom:\n{scraped}"
    );
    // Byte counters as node_exporter serves them equal netnat ls --json's.
    let bytes = series(&scraped, "netnat_mapping_bytes_total");
    assert_eq!(bytes.len(), 2, "{scraped}");
    for port in [9090u16, 20000] {
        let label = if port == 9090 { "host_port=\"9090\"".to_string() } else { "host_port=\"20000-20999\"".into() };
        let (_, v) = bytes.iter().find(|(l, _)| l.contains(&label)).unwrap_or_else(|| panic!("{label}: {scraped}"));
        let want = ls_counter(port, "bytes");
        assert!(want > 0);
        assert_eq!(*v as u64, want, "{label}");
    }
    let total = series(&scraped, "netnat_mapping_connections_total");
    let (_, opened) = total.iter().find(|(l, _)| l.contains("host_port=\"9090\"")).unwrap();
    assert_eq!(*opened as u64, ls_counter(9090, "connections_total"), "{scraped}");
    assert!(*opened >= 4.0, "{scraped}");
    let conns = series(&scraped, "netnat_mapping_connections");
    let (_, live) = conns.iter().find(|(l, _)| l.contains("host_port=\"9090\"")).unwrap();
    assert!(*live >= 1.0, "{scraped}");
    assert!(scraped.contains("\nnetnat_mappings 2\n") && scraped.contains("\nnetnat_networks 1\n"), "{scraped}");
    assert!(scraped.contains("\nnetnat_sandboxes 2\n") && scraped.contains("\nnetnat_audit_errors 0\n"), "{scraped}");
    held.join().unwrap();
    // promtool accepts the exposition (HELP, TYPE, names, counters ending in _total).
    let text = ok(&["metrics"]);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (Debian's prometheus, make deps)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // 10,000 more published ports: one mapping, four more series.
    ok(&["publish", "30000-39999:172.16.1.2:30000-39999"]);
    ok(&["metrics", "--textfile", "/run/textfile"]);
    let scraped = scrape();
    let netnat_series = scraped.lines().filter(|l| l.starts_with("netnat_")).count();
    assert_eq!(netnat_series, 4 * 3 + 4, "{scraped}");
    assert_eq!(series(&scraped, "netnat_mapping_packets_total").len(), 3);
});
