//! netnat's record as the CNI plugin keeps it (record format 3, issue 24): each attachment in its
//! own file under attachments/, indexed by claims/. A damaged, lost or immutable attachment file
//! bricks nothing and changes nothing in the kernel; a record of format 2 (attachments inside
//! state.json) is read and written as format 3; a CNI ADD killed at any moment leaves record and
//! kernel agreeing, or the kernel ahead by exactly that ADD (which the runtime's retry
//! converges). Each test runs in its own throwaway network + mount namespace, with real traffic
//! to containers behind Debian's bridge plugin.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CNI_DIR: &str = "/usr/lib/cni";
const NET: &str = "recnet";
const ATTS: &str = "/run/netnat/attachments";

/// Runs netnat (or another plugin) as a runtime does: CNI_* environment, config on stdin.
/// Returns the exit status and stdout + stderr.
fn plugin(bin: &str, verb: &str, ctr: &str, stdin: &str) -> (i32, String) {
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", CNI_DIR)
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", ctr)
        .env("CNI_NETNS", format!("/run/netns/{ctr}"))
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the plugin");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A real container behind the bridge plugin (cni0, 10.88.0.0/16): its prevResult and address.
fn container(name: &str) -> (Value, String) {
    sh(&format!("ip netns add {name}"));
    let conf = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
        "hairpinMode": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/cni-ipam"}
    });
    let (code, out) = plugin(&format!("{CNI_DIR}/bridge"), "ADD", name, &conf.to_string());
    assert_eq!(code, 0, "bridge ADD: {out}");
    let prev: Value = serde_json::from_str(&out).unwrap();
    let ip = prev["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    (prev, ip)
}

/// netnat's configuration for one request: host ports `first..first+n` to 8080 and up.
fn conf(prev: &Value, first: u16, n: u16) -> String {
    let maps: Vec<Value> =
        (0..n).map(|j| json!({"hostPort": first + j, "containerPort": 8080 + j, "protocol": "tcp"})).collect();
    json!({"cniVersion": "1.0.0", "name": NET, "type": "netnat", "runtimeConfig": {"portMappings": maps},
           "prevResult": prev})
    .to_string()
}

/// A container that is only a prevResult (no namespace): what the record and the table hold is
/// the same as for a real one.
fn synthetic(ctr: &str, ip: &str) -> Value {
    json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": format!("/run/netns/{ctr}")}],
           "ips": [{"address": format!("{ip}/16"), "interface": 0}]})
}

fn add(ctr: &str, prev: &Value, port: u16) {
    let (code, out) = plugin(NETNAT, "ADD", ctr, &conf(prev, port, 1));
    assert_eq!(code, 0, "ADD {ctr}: {out}");
}

fn attachment_file(ctr: &str) -> String {
    format!("{ATTS}/{NET}%2F{ctr}%2Feth0.json")
}

/// `settled_snapshot` without the counters' values: a mapping put back after a failed DEL comes
/// back new, its counters at zero (docs/record-faults.md).
fn snapshot() -> String {
    let s = settled_snapshot();
    let mut out = String::new();
    let mut words = s.split(' ').peekable();
    while let Some(w) = words.next() {
        out.push_str(w);
        out.push(' ');
        if w == "packets" || w == "bytes" {
            words.next();
        }
    }
    out
}

fn elements() -> String {
    sh("nft list map inet netnat pub_any4 2>/dev/null || true")
}

/// Two real containers with a published port each (9090 -> ctr1, 9191 -> ctr2), serving.
fn two_containers() -> [Server; 2] {
    make_external_host();
    let (p1, ip1) = container("ctr1");
    let (p2, ip2) = container("ctr2");
    add("ctr1", &p1, 9090);
    add("ctr2", &p2, 9191);
    let servers = [
        tcp_server(Some(&ns("ctr1")), &format!("{ip1}:8080"), "ctr1"),
        tcp_server(Some(&ns("ctr2")), &format!("{ip2}:8080"), "ctr2"),
    ];
    for (port, name) in [(9090, "ctr1"), (9191, "ctr2")] {
        assert_eq!(
            tcp_get_settled(ext().as_deref(), &format!("198.51.100.1:{port}")).unwrap(),
            format!("{name} saw 198.51.100.2")
        );
    }
    assert!(std::path::Path::new(&attachment_file("ctr2")).exists(), "{}", sh("ls -R /run/netnat"));
    servers
}

/// What a damaged or lost attachment file leaves working, and `recover`: both ports keep
/// answering, `ls` answers from the kernel with one warning naming the file, `audit` reports
/// `state.unreadable`; a DEL that needs the file is refused naming `netnat recover` with the
/// kernel unchanged; `recover` rebuilds the record (the claims say which container held each
/// port) and keeps a damaged file.
fn attachment_file_fault(damage: &str, reason: &str) {
    let _servers = two_containers();
    sh(damage);
    for port in [9090, 9191] {
        assert!(tcp_get(ext().as_deref(), &format!("198.51.100.1:{port}")).is_ok(), "{port} stopped answering");
    }
    let (code, out, err) = netnat_out(&["ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(":9090") && out.contains(":9191"), "{out}");
    assert!(err.contains("warning") && err.contains(reason) && err.contains("netnat recover"), "{err}");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("state.unreadable") && out.contains("ctr2"), "{out}");

    let before = settled_snapshot();
    let (code, out) = plugin(NETNAT, "DEL", "ctr2", &conf(&synthetic("ctr2", "10.88.0.9"), 9191, 1));
    assert_ne!(code, 0, "DEL on a damaged attachment succeeded: {out}");
    assert!(out.contains(reason) && out.contains("netnat recover"), "{out}");
    // Another container's port, claimed by ctr2's file: refused, nothing changed either.
    let (code, out) = plugin(NETNAT, "ADD", "ctr3", &conf(&synthetic("ctr3", "10.88.0.9"), 9191, 1));
    assert_ne!(code, 0, "ADD of ctr2's port succeeded: {out}");
    assert_eq!(settled_snapshot(), before, "a refused request changed the kernel");

    let out = ok(&["recover"]);
    assert!(out.contains("published mapping"), "{out}");
    // The claims name who held each port: both containers own their ports again.
    let out = ok(&["ls"]);
    assert!(out.contains(&format!("{NET} (CNI ctr1)")) && out.contains(&format!("{NET} (CNI ctr2)")), "{out}");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "audit after recover:\n{out}");
    for port in [9090, 9191] {
        assert!(tcp_get(ext().as_deref(), &format!("198.51.100.1:{port}")).is_ok(), "{port} lost by recover");
    }
    // The record works again: a new container's port.
    let (p3, ip3) = container("ctr3");
    add("ctr3", &p3, 9292);
    let _s3 = tcp_server(Some(&ns("ctr3")), &format!("{ip3}:8080"), "ctr3");
    assert_eq!(tcp_get_settled(ext().as_deref(), "198.51.100.1:9292").unwrap(), "ctr3 saw 198.51.100.2");
}

isolated!(damaged_attachment_file_is_survived, inner_damaged_attachment_file, {
    attachment_file_fault(&format!("printf '{{\"network\": garbage' > '{}'", attachment_file("ctr2")), "truncated");
    let kept = sh("ls /run/netnat | grep '^attachment\\..*\\.damaged-' || true");
    assert_eq!(kept.lines().count(), 1, "the damaged attachment file was not kept: {kept}");
    assert_eq!(sh(&format!("cat '/run/netnat/{}'", kept.trim())), "{\"network\": garbage");
});

isolated!(lost_attachment_file_is_survived, inner_lost_attachment_file, {
    attachment_file_fault(&format!("rm '{}'", attachment_file("ctr2")), "is missing");
});

// An immutable attachment file (or directory): the DEL or ADD that would replace it fails before
// its commit, the kernel is as it was, and once writable the same request succeeds.
isolated!(immutable_attachment_file_changes_nothing, inner_immutable_attachment_file, {
    let _servers = two_containers();
    let before = snapshot();
    sh(&format!("chattr +i '{}'", attachment_file("ctr1")));
    let (code, out) = plugin(NETNAT, "DEL", "ctr1", &conf(&synthetic("ctr1", "10.88.0.9"), 9090, 1));
    assert_ne!(code, 0, "DEL succeeded: {out}");
    assert!(out.contains("immutable") && out.contains("ctr1"), "{out}");
    assert_eq!(snapshot(), before, "a failed DEL changed the kernel");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_ok());
    sh(&format!("chattr -i '{}' && chattr +i {ATTS}", attachment_file("ctr1")));
    let (code, out) = plugin(NETNAT, "ADD", "ctr3", &conf(&synthetic("ctr3", "10.88.0.9"), 9292, 1));
    assert_ne!(code, 0, "ADD into an immutable directory succeeded: {out}");
    assert_eq!(snapshot(), before, "a failed ADD changed the kernel");
    sh(&format!("chattr -i {ATTS}"));
    let (code, out) = plugin(NETNAT, "DEL", "ctr1", &conf(&synthetic("ctr1", "10.88.0.9"), 9090, 1));
    assert_eq!(code, 0, "{out}");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "9090 still published after DEL");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9191").is_ok());
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "{out}");
});

// A record netnat wrote before format 3 (its attachments inside state.json, format 2) is read
// as it was: `ls` names the containers, a DEL removes exactly its container's port; the next
// save writes format 3.
isolated!(format_2_record_with_attachments_is_read_and_migrated, inner_format_2_record, {
    let _servers = two_containers();
    let mut old = record();
    let owned: Vec<String> = old["attachments"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|a| a["mappings"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(owned.len(), 2, "{old}");
    old["format"] = 2.into();
    std::fs::write("/run/netnat/state.json", serde_json::to_string_pretty(&old).unwrap()).unwrap();
    sh("rm -r /run/netnat/attachments /run/netnat/claims");
    let out = ok(&["ls"]);
    assert!(out.contains(&format!("{NET} (CNI ctr1)")) && out.contains(&format!("{NET} (CNI ctr2)")), "{out}");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "{out}");

    // DEL of ctr1: the record is migrated by this save.
    let (code, out) = plugin(NETNAT, "DEL", "ctr1", &conf(&synthetic("ctr1", "10.88.0.9"), 9090, 1));
    assert_eq!(code, 0, "{out}");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "9090 still published after DEL");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9191").is_ok());
    let main: Value = serde_json::from_str(&sh("cat /run/netnat/state.json")).unwrap();
    assert_eq!(main["format"], 3, "{main}");
    assert!(main.get("attachments").is_none(), "{main}");
    assert_eq!(sh(&format!("ls {ATTS}")).trim(), format!("{NET}%2Fctr2%2Feth0.json"));
    assert_eq!(sh("ls /run/netnat/claims | sort").split_whitespace().collect::<Vec<_>>(), ["ip-10.88.0.3", "tcp-9191"]);
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "{out}");
});

/// (elements of the killed container in the table, its mappings in the record).
fn killed_state(ip: &str) -> (usize, usize) {
    let in_table = elements().matches(&format!(": {ip} . ")).count();
    let rec = record();
    let in_record = rec["attachments"][format!("{NET}/victim/eth0")]["mappings"].as_array().map_or(0, |v| v.len());
    (in_table, in_record)
}

// A CNI ADD of many ports killed (SIGKILL) at moments spread over its run: the table is the old
// or the new one (one batch), the record too (one journal, finished by the next command), and
// never does the record claim what the kernel lacks; the runtime's retry of the ADD converges,
// and its DEL leaves nothing, with a published neighbour answering throughout.
isolated!(cni_add_killed_at_any_moment, inner_cni_add_killed, timeout = 400, {
    make_external_host();
    let (p1, ip1) = container("ctr1");
    add("ctr1", &p1, 9090);
    let _s1 = tcp_server(Some(&ns("ctr1")), &format!("{ip1}:8080"), "ctr1");
    let (n, ip) = (1500, "10.88.200.2");
    let victim = conf(&synthetic("victim", ip), 20000, n);
    let mut full = Duration::ZERO;
    for _ in 0..2 {
        let t0 = Instant::now();
        assert_eq!(plugin(NETNAT, "ADD", "victim", &victim).0, 0);
        full = full.max(t0.elapsed());
        assert_eq!(plugin(NETNAT, "DEL", "victim", &victim).0, 0);
    }
    let (kills, mut seen) = (16, [0; 3]);
    for i in 0..kills {
        let delay = full.mul_f64((i as f64 + 0.5) / kills as f64 * 1.1);
        let mut child = Command::new(NETNAT)
            .env_clear()
            .envs([("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "victim"), ("CNI_NETNS", "/run/netns/victim")])
            .envs([("CNI_IFNAME", "eth0"), ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(victim.as_bytes()).unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // The next command finishes a committed journal: every file whole, no journal left.
        let (code, _, err) = netnat_out(&["ls"]);
        assert_eq!((code, err.as_str()), (0, ""), "round {i} ({delay:?}): the record is not whole");
        assert!(!std::path::Path::new("/run/netnat/journal").exists(), "round {i}: journal left");
        let got = killed_state(ip);
        let k = match got {
            (0, 0) => 0,
            (t, 0) if t == n as usize => 1,
            (t, r) if t == n as usize && r == n as usize => 2,
            other => panic!("round {i} ({delay:?}): table and record are a mix: {other:?} of {n}"),
        };
        seen[k] += 1;
        assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_ok(), "round {i}: the neighbour stopped");
        // The runtime's retry converges; its DEL removes everything the ADD made.
        let (code, out) = plugin(NETNAT, "ADD", "victim", &victim);
        assert_eq!(code, 0, "round {i}: retry: {out}");
        assert_eq!(killed_state(ip), (n as usize, n as usize), "round {i}: the retry did not converge");
        assert_eq!(plugin(NETNAT, "DEL", "victim", &victim).0, 0);
        assert_eq!(killed_state(ip), (0, 0), "round {i}: DEL left something");
        let claims = sh("ls /run/netnat/claims");
        assert_eq!(claims.split_whitespace().count(), 2, "round {i}: claims left: {claims}");
    }
    eprintln!("kills that left nothing: {}, the kernel ahead: {}, both new: {}", seen[0], seen[1], seen[2]);
    assert!(seen[0] > 0 && seen[2] > 0, "kills were not spread over the ADD: {seen:?}");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "{out}");
});
