//! netnat as a CNI plugin (issue 13), driven the way a runtime drives it: CNI_* environment and
//! the network configuration on stdin, behind Debian's reference bridge plugin with host-local
//! IPAM (/usr/lib/cni, package containernetworking-plugins). Each test runs in its own
//! throwaway network + mount namespace; traffic comes from an "external host" namespace.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

const CNI_DIR: &str = "/usr/lib/cni";
const NET: &str = "testnet";

fn ext() -> Option<std::path::PathBuf> {
    Some(ns("ext"))
}

/// What a plugin answered: exit status, stdout, stderr.
struct Answer {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
    /// A success that printed nothing (DEL, CHECK, GC, STATUS).
    fn quiet_success(&self, what: &str) {
        assert_eq!((self.code, self.stdout.as_str()), (0, ""), "{what}: stderr {}", self.stderr);
    }
    /// A CNI error object with `code` on stdout, non-zero exit. Returns the object.
    fn cni_error(&self, code: u64, what: &str) -> Value {
        assert_ne!(self.code, 0, "{what}: succeeded: {}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"], code, "{what}: {v}");
        for key in ["cniVersion", "msg", "details"] {
            assert!(v[key].is_string(), "{what}: no {key} in {v}");
        }
        v
    }
}

/// Runs a plugin like a runtime: only the CNI_* variables given (plus PATH), config on stdin.
fn plugin(bin: &str, env: &[(&str, &str)], stdin: &str) -> Answer {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("CNI_PATH", CNI_DIR);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running the plugin");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Answer {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn env<'a>(verb: &'a str, ctr: &'a str, netns: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("CNI_COMMAND", verb), ("CNI_CONTAINERID", ctr), ("CNI_NETNS", netns), ("CNI_IFNAME", "eth0")]
}

/// The bridge plugin's configuration: bridge cni0 (a bridge netnat did not make), its own
/// masquerade, host-local addresses from 10.88.0.0/16 with a default route, leases under /run.
fn bridge_conf(version: &str) -> Value {
    json!({
        "cniVersion": version, "name": NET, "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/cni-ipam"}
    })
}

/// A container: namespace `name`, bridge ADD; returns the bridge's result and the address.
fn container(name: &str, version: &str) -> (Value, String) {
    sh(&format!("ip netns add {name}"));
    let netns = format!("/run/netns/{name}");
    let a = plugin(&format!("{CNI_DIR}/bridge"), &env("ADD", name, &netns), &bridge_conf(version).to_string());
    assert_eq!(a.code, 0, "bridge ADD: {}{}", a.stdout, a.stderr);
    let result = a.json();
    let addr = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    (result, addr)
}

/// netnat's entry of the conflist as the runtime derives it for one invocation.
fn netnat_conf(version: &str, mappings: Value, prev: Option<&Value>) -> String {
    let mut c =
        json!({"cniVersion": version, "name": NET, "type": "netnat", "runtimeConfig": {"portMappings": mappings}});
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c.to_string()
}

fn table() -> String {
    sh("nft list table inet netnat 2>/dev/null || true")
}

isolated!(cni_spec_level_behind_the_bridge_plugin, inner_cni_spec_level_behind_the_bridge_plugin, {
    make_external_host();
    let (r1, ip1) = container("ctr1", "1.0.0");
    let _tcp = tcp_server(Some(&ns("ctr1")), &format!("{ip1}:8080"), "ctr1");
    let _udp = udp_server(Some(&ns("ctr1")), &format!("{ip1}:53"), "ctr1");
    let maps = json!([
        {"hostPort": 9090, "containerPort": 8080, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
    ]);
    let conf1 = netnat_conf("1.0.0", maps.clone(), Some(&r1));
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "nothing published yet");

    // ADD: prevResult comes back (same version), the ports answer from outside, with the
    // client's own address (DNAT, no proxy).
    let add = plugin(NETNAT, &env("ADD", "ctr1", "/run/netns/ctr1"), &conf1);
    assert_eq!(add.code, 0, "ADD: {}{}", add.stdout, add.stderr);
    assert_eq!(add.json(), r1, "ADD hands prevResult on unchanged");
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ctr1 saw 198.51.100.2");
    assert_eq!(udp_get(ext().as_deref(), "0.0.0.0:0", "198.51.100.1:5353").unwrap(), "ctr1 saw 198.51.100.2");
    assert!(table().contains(&format!("tcp . 9090 : {ip1} . 8080")), "{}", table());
    plugin(NETNAT, &env("CHECK", "ctr1", "/run/netns/ctr1"), &conf1).quiet_success("CHECK");

    // A second container asking for host port 9090: refused, naming the container that has
    // it; nothing changes. A 0.4.0 request gets a 0.4.0 error.
    let (r2, ip2) = container("ctr2", "0.4.0");
    let before = table();
    let taken = netnat_conf("0.4.0", json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}]), Some(&r2));
    let e = plugin(NETNAT, &env("ADD", "ctr2", "/run/netns/ctr2"), &taken).cni_error(100, "taken port");
    assert_eq!(e["cniVersion"], "0.4.0");
    assert!(e["details"].as_str().unwrap().contains("container ctr1"), "{e}");
    assert_eq!(table(), before);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ctr1 saw 198.51.100.2");
    // The same container on a free port: a 0.4.0 result (IPs carry their version).
    let _tcp2 = tcp_server(Some(&ns("ctr2")), &format!("{ip2}:80"), "ctr2");
    let free = netnat_conf("0.4.0", json!([{"hostPort": 9191, "containerPort": 80, "protocol": "tcp"}]), Some(&r2));
    let add2 = plugin(NETNAT, &env("ADD", "ctr2", "/run/netns/ctr2"), &free);
    assert_eq!(add2.code, 0, "{}", add2.stderr);
    assert_eq!(
        (add2.json()["cniVersion"].clone(), add2.json()["ips"][0]["version"].clone()),
        (json!("0.4.0"), json!("4"))
    );
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9191").unwrap(), "ctr2 saw 198.51.100.2");

    // DEL removes exactly ctr1's elements: its ports are refused, ctr2's still answers. A DEL
    // without namespace or prevResult, and a repeated one, succeed.
    plugin(NETNAT, &env("DEL", "ctr1", "/run/netns/ctr1"), &conf1).quiet_success("DEL");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "9090 still published after DEL");
    assert!(udp_get(ext().as_deref(), "0.0.0.0:0", "198.51.100.1:5353").is_err(), "5353 still published after DEL");
    let t = table();
    assert!(!t.contains(". 9090") && !t.contains(". 5353"), "{t}");
    assert!(t.contains("tcp . 9191"), "{t}");
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9191").unwrap(), "ctr2 saw 198.51.100.2");
    let bare_del = netnat_conf("1.0.0", json!([]), None);
    plugin(NETNAT, &[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "ctr1"), ("CNI_IFNAME", "eth0")], &bare_del)
        .quiet_success("DEL again, no netns, no prevResult");
    plugin(NETNAT, &env("DEL", "ctr1", "/run/netns/ctr1"), &conf1).quiet_success("DEL again");
    // CHECK of a deleted attachment fails.
    assert_ne!(plugin(NETNAT, &env("CHECK", "ctr1", "/run/netns/ctr1"), &conf1).code, 0);

    // GC: ctr2 is a leftover (its DEL never came). Listing it keeps it; an empty list removes it.
    let gc = |valid: Value, name: &str| {
        json!({"cniVersion": "1.1.0", "name": name, "type": "netnat", "cni.dev/valid-attachments": valid}).to_string()
    };
    let gc_env = [("CNI_COMMAND", "GC")];
    plugin(NETNAT, &gc_env, &gc(json!([{"containerID": "ctr2", "ifname": "eth0"}]), NET)).quiet_success("GC, listed");
    plugin(NETNAT, &gc_env, &gc(json!([]), "othernet")).quiet_success("GC of another network");
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9191").unwrap(), "ctr2 saw 198.51.100.2");
    plugin(NETNAT, &gc_env, &gc(json!([]), NET)).quiet_success("GC, empty list");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9191").is_err(), "GC left the leftover's port");
    assert!(!table().contains(". 9191"), "{}", table());
    let record = sh("cat /run/netnat/state.json");
    assert!(!record.contains("attachments"), "{record}");

    // STATUS: ready as root; "not available" (50) without CAP_NET_ADMIN.
    let status = json!({"cniVersion": "1.1.0", "name": NET, "type": "netnat"}).to_string();
    plugin(NETNAT, &[("CNI_COMMAND", "STATUS")], &status).quiet_success("STATUS");
    let unprivileged = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", NETNAT])
        .env_clear()
        .env("CNI_COMMAND", "STATUS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(status.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let a = Answer {
        code: unprivileged.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&unprivileged.stdout).trim().into(),
        stderr: String::from_utf8_lossy(&unprivileged.stderr).into(),
    };
    assert!(a.cni_error(50, "STATUS unprivileged")["details"].as_str().unwrap().contains("CAP_NET_ADMIN"));
    // VERSION lists what netnat speaks.
    let v = plugin(NETNAT, &[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(v.json(), json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}));

    // Bad requests: the spec's error object on stdout, non-zero exit, the table unchanged.
    let before = table();
    let add1 = env("ADD", "ctr1", "/run/netns/ctr1");
    plugin(NETNAT, &add1, "{not json").cni_error(6, "malformed stdin");
    plugin(NETNAT, &add1, &netnat_conf("0.2.0", maps.clone(), Some(&r1))).cni_error(1, "unknown cniVersion");
    let no_netns = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "ctr1"), ("CNI_IFNAME", "eth0")];
    let e = plugin(NETNAT, &no_netns, &conf1).cni_error(4, "missing CNI_NETNS");
    assert!(e["details"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    let mut cond: Value = serde_json::from_str(&conf1).unwrap();
    cond["conditionsV4"] = json!(["--source", "192.0.2.0/24"]);
    let e = plugin(NETNAT, &add1, &cond.to_string()).cni_error(2, "conditionsV4");
    assert!(e["details"].as_str().unwrap().contains("iptables"), "{e}");
    let bad_port =
        netnat_conf("1.0.0", json!([{"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}]), Some(&r1));
    plugin(NETNAT, &add1, &bad_port).cni_error(7, "port out of range");
    assert_eq!(table(), before, "a refused request changed the table");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err());

    // No port mappings: prevResult passes through and netnat does nothing else.
    let none = plugin(NETNAT, &add1, &netnat_conf("1.0.0", json!([]), Some(&r1)));
    assert_eq!((none.code, none.json()), (0, r1.clone()));
    let no_rc = json!({"cniVersion": "1.0.0", "name": NET, "type": "netnat", "prevResult": r1}).to_string();
    assert_eq!(plugin(NETNAT, &add1, &no_rc).json(), r1);
    assert_eq!(table(), before);
});
