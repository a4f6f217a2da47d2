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
/// masquerade, hairpin mode (as Podman configures it: with br_netfilter, a DNAT back into the
/// bridge is bridged out of the port it came in), host-local addresses from 10.88.0.0/16 with a
/// default route, leases under /run.
fn bridge_conf(version: &str) -> Value {
    json!({
        "cniVersion": version, "name": NET, "type": "bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": true, "hairpinMode": true,
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
    nft_list("table inet netnat")
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
    // snat (portmap's default): the host's own 127.0.0.1 connection reaches the container on a
    // bridge netnat did not make (route_localnet on cni0, recorded for reset), and so does the
    // container itself through the host's address (hairpin, masqueraded).
    let local = tcp_get(None, "127.0.0.1:9090").expect("localhost to a CNI container's port");
    assert!(local.starts_with("ctr1 saw "), "{local}");
    assert_eq!(sh("cat /proc/sys/net/ipv4/conf/cni0/route_localnet").trim(), "1");
    let own = tcp_get(Some(&ns("ctr1")), "198.51.100.1:9090")
        .unwrap_or_else(|e| panic!("ctr1 to its own published port: {e}\n{}", sh("nft list chain inet netnat postrouting; nft list set inet netnat hairpin4; ip -n ctr1 route; ip -n ctr1 addr")));
    assert!(own.starts_with("ctr1 saw ") && !own.ends_with(&ip1), "hairpin not masqueraded: {own}");
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

    // The CLI sees them as CNI's: `ls` labels them with network and container, the audit counts
    // them as netnat's (no leftover), `save` leaves them to the runtime, and an `apply --prune`
    // of a file keeps them with their owners (a later DEL still finds them).
    let ls: Vec<Value> = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let m9090 = ls.iter().find(|m| m["host_port"] == 9090).unwrap();
    assert_eq!((m9090["network"].clone(), m9090["container_id"].clone()), (json!(NET), json!("ctr1")));
    assert!(ok(&["ls"]).contains(&format!("{NET} (CNI ctr1)")));
    let (code, out, _) = netnat_out(&["audit"]);
    assert!(!out.contains("leftover.mapping-target"), "{out}");
    assert_eq!(code, 0, "{out}");
    let saved = ok(&["save"]);
    assert!(saved.contains("3 port(s) published through CNI are left out") && !saved.contains("9090"), "{saved}");
    let file = std::env::temp_dir().join("netnat-cni-empty.toml");
    std::fs::write(&file, "").unwrap();
    ok(&["apply", "--prune", "-f", file.to_str().unwrap()]);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "ctr1 saw 198.51.100.2");
    assert!(record_text().contains(&format!("\"{NET}/ctr1/eth0\"")));

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
    let record = record_text();
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
    assert_eq!(
        v.json(),
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );

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

// ---- a real runtime: Podman 4.3 with its CNI backend ----

/// Podman in this throwaway namespace (what it needs here, found by trying): no hybrid cgroup
/// tree for crun, storage, libcni's cache and host-local's leases on tmpfs, a plugin directory
/// with the reference plugins and netnat, and Podman's own conflist `podman` with netnat in
/// place of portmap. Containers are removed when this is dropped (conmon would outlive the test).
struct Podman {
    conf: String,
}

impl Podman {
    fn new() -> Podman {
        sh("umount /sys/fs/cgroup/unified 2>/dev/null || true; \
            for d in /var/lib/containers /var/lib/cni /var/tmp; do mkdir -p $d && mount -t tmpfs tmpfs $d; done; \
            mkdir -p /run/t/plugins /run/t/conf /run/t/rootfs/bin /run/t/rootfs/tmp");
        sh(&format!("for p in {CNI_DIR}/*; do ln -s $p /run/t/plugins/; done; ln -s {NETNAT} /run/t/plugins/netnat"));
        std::fs::write(
            "/run/t/containers.conf",
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"/run/t/plugins\"]\nnetwork_config_dir = \"/run/t/conf\"\n",
        )
        .unwrap();
        let conflist = json!({
            "cniVersion": "0.4.0", "name": "podman",
            "plugins": [
                {"type": "bridge", "bridge": "cni-podman0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                 "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]}},
                {"type": "netnat", "capabilities": {"portMappings": true}},
                {"type": "firewall"},
                {"type": "tuning"}
            ]
        });
        std::fs::write("/run/t/conf/podman.conflist", conflist.to_string()).unwrap();
        // No registry: an image made of busybox-static alone.
        sh("cp /bin/busybox /run/t/rootfs/bin/ && ln -s busybox /run/t/rootfs/bin/sh && ln -s busybox /run/t/rootfs/bin/httpd \
            && tar -C /run/t/rootfs -cf /run/t/rootfs.tar .");
        let p = Podman { conf: "/run/t/containers.conf".into() };
        let out = p.cmd(&["import", "/run/t/rootfs.tar", "localhost/bb:1"]);
        assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
        p
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman").args(args).env("CONTAINERS_CONF", &self.conf).output().expect("running podman")
    }

    /// `podman run -d` of a web server that answers `name` on container port 8080, published
    /// as host port `port`, started (the container ID comes on its stdout).
    fn spawn_web(&self, name: &str, port: u16) -> std::process::Child {
        self.spawn_web_on(name, port, None)
    }

    /// `spawn_web` on the given networks (`--network a,b`; None: Podman's default network).
    fn spawn_web_on(&self, name: &str, port: u16, networks: Option<&str>) -> std::process::Child {
        let script = format!("echo {name} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp");
        let networks = networks.map(|n| vec!["--network", n]).unwrap_or_default();
        Command::new("podman")
            .args(["run", "-d", "--cgroups=disabled", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])
            .args(networks)
            .args(["--name", name, "-p", &format!("{port}:8080"), "localhost/bb:1", "/bin/sh", "-c", &script])
            .env("CONTAINERS_CONF", &self.conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running podman run")
    }

    fn run_web(&self, name: &str, port: u16) -> std::process::Output {
        self.spawn_web(name, port).wait_with_output().unwrap()
    }

    /// Another network as Podman's `network create` would make it (bridge cni-NAME, host-local
    /// 10.89.N.0/24 with a default route), netnat in place of portmap.
    fn network(&self, name: &str, n: u8) {
        let conflist = json!({
            "cniVersion": "0.4.0", "name": name,
            "plugins": [
                {"type": "bridge", "bridge": format!("cni-{name}"), "isGateway": true, "ipMasq": true, "hairpinMode": true,
                 "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": format!("10.89.{n}.0/24"), "gateway": format!("10.89.{n}.1")}]]}},
                {"type": "netnat", "capabilities": {"portMappings": true}},
                {"type": "firewall"},
                {"type": "tuning"}
            ]
        });
        std::fs::write(format!("/run/t/conf/{name}.conflist"), conflist.to_string()).unwrap();
    }

    /// Runs podman, asserting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-t", "0", "-a"]);
    }
}

/// An HTTP GET from the external host: the body, or curl's error (3 s at most).
fn http_get(port: u16) -> Result<String, String> {
    let out = run("ip", &["netns", "exec", "ext", "curl", "-sS", "-m", "3", &format!("http://{HOST_EXT_IP}:{port}/")]);
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// `http_get` once the container's server listens: `podman run -d` returns when the container
/// has started, before its httpd may be listening. Retries for up to 5 s.
fn http_get_started(port: u16) -> Result<String, String> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match http_get(port) {
            Err(_) if std::time::Instant::now() < end => std::thread::sleep(std::time::Duration::from_millis(100)),
            r => return r,
        }
    }
}

fn elements() -> String {
    nft_list("map inet netnat pub_any4")
}

isolated!(cni_behind_real_podman, inner_cni_behind_real_podman, {
    make_external_host();
    let podman = Podman::new();

    // podman run -p 9090:8080 answers from outside, through netnat's element.
    let web = podman.run_web("web", 9090);
    assert!(web.status.success(), "podman run: {}", String::from_utf8_lossy(&web.stderr));
    let web_id = String::from_utf8_lossy(&web.stdout).trim().to_string();
    assert_eq!(http_get_started(9090).unwrap(), "web");
    assert!(elements().contains("tcp . 9090 : 10.88."), "{}", elements());
    let record = record_text();
    assert!(record.contains(&format!("\"podman/{web_id}/eth0\"")), "{record}");

    // A second container asking for the taken host port does not start; netnat's error names
    // the container that has it, and the first one still answers.
    let dup = podman.run_web("dup", 9090);
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(!dup.status.success(), "a second container got host port 9090");
    assert!(err.contains("already published") && err.contains(&web_id), "{err}");
    assert_eq!(http_get(9090).unwrap(), "web");

    // 20 containers started in parallel, each on its own host port: every one answers itself.
    let runs: Vec<_> = (1..=20u16).map(|i| podman.spawn_web(&format!("w{i}"), 10000 + i)).collect();
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "podman run w{}: {}", i + 1, String::from_utf8_lossy(&out.stderr));
    }
    for i in 1..=20u16 {
        assert_eq!(http_get_started(10000 + i).unwrap(), format!("w{i}"));
    }
    assert_eq!(elements().matches("tcp . ").count(), 21, "{}", elements());
    // conmon holds each published host port open as a reservation: the audit tells that from a
    // real local server, and finds nothing wrong while the containers run.
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "{out}");

    // podman rm -f: the container's element goes, the port is refused, the others stay.
    let rm = podman.cmd(&["rm", "-f", "-t", "0", "web"]);
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    assert!(!elements().contains(". 9090 "), "{}", elements());
    assert!(http_get(9090).is_err(), "9090 answers after podman rm");
    assert_eq!(http_get(10007).unwrap(), "w7");
    let rm = podman.cmd(&["rm", "-f", "-t", "0", "-a"]);
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    assert!(!elements().contains("tcp . "), "elements left after podman rm -a: {}", elements());
    assert!(!record_text().contains("attachments"));
});

isolated!(cni_podman_container_on_two_networks, inner_cni_podman_container_on_two_networks, {
    make_external_host();
    let podman = Podman::new();
    podman.network("a", 1);
    podman.network("b", 2);
    let ip_on = |ctr: &str, net: &str| {
        podman.ok(&["inspect", ctr, "--format", &format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}")])
    };
    // `ls --json`'s view of a host port: (network, container address, standby), sorted.
    let views = |port: u16| {
        let ls: Vec<Value> = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
        let mut v: Vec<(String, String, bool)> = ls
            .iter()
            .filter(|m| m["host_port"] == port)
            .map(|m| {
                (
                    m["network"].as_str().unwrap().into(),
                    m["container_ip"].as_str().unwrap().into(),
                    m["standby"] == true,
                )
            })
            .collect();
        v.sort();
        v
    };
    let leases = || sh("ls /var/lib/cni/networks/a /var/lib/cni/networks/b 2>/dev/null | grep -c '^10\\.' || true");

    // `podman run --network a,b -p 9090:8080`: Podman asks each network's netnat for host port
    // 9090. The container starts and answers through the attachment asked first; Podman 4.3 sets
    // its networks up in Go map order (random), so which one that is comes from the kernel.
    let web = podman.spawn_web_on("web", 9090, Some("a,b")).wait_with_output().unwrap();
    assert!(web.status.success(), "podman run on two networks: {}", String::from_utf8_lossy(&web.stderr));
    assert_eq!(http_get_started(9090).unwrap(), "web");
    let (on_a, on_b) = (ip_on("web", "a"), ip_on("web", "b"));
    let active_a = elements().contains(&format!("tcp . 9090 : {on_a} . 8080"));
    let ((active, on_active), (standby, on_standby)) =
        if active_a { (("a", on_a), ("b", on_b)) } else { (("b", on_b), ("a", on_a)) };
    assert!(elements().contains(&format!("tcp . 9090 : {on_active} . 8080")), "{}", elements());
    assert!(!elements().contains(&format!(": {on_standby} . 8080")), "{}", elements());
    // The other request is on standby: in the record and `ls`, not in the kernel.
    let mut want =
        vec![(active.to_string(), on_active.clone(), false), (standby.to_string(), on_standby.clone(), true)];
    want.sort();
    assert_eq!(views(9090), want);
    assert!(ok(&["ls"]).contains(&format!("{standby} (CNI ")), "{}", ok(&["ls"]));

    // `podman network disconnect` of the active network: the port keeps answering, through the other.
    podman.ok(&["network", "disconnect", active, "web"]);
    assert_eq!(http_get(9090).unwrap(), "web");
    assert!(elements().contains(&format!("tcp . 9090 : {on_standby} . 8080")), "{}", elements());
    assert_eq!(views(9090), vec![(standby.to_string(), on_standby.clone(), false)]);

    // `podman network connect b` of a running container that publishes a port on a: succeeds,
    // and the port still answers.
    let web2 = podman.spawn_web_on("web2", 9191, Some("a")).wait_with_output().unwrap();
    assert!(web2.status.success(), "{}", String::from_utf8_lossy(&web2.stderr));
    assert_eq!(http_get_started(9191).unwrap(), "web2");
    podman.ok(&["network", "connect", "b", "web2"]);
    assert_eq!(http_get(9191).unwrap(), "web2");
    let (web2_a, web2_b) = (ip_on("web2", "a"), ip_on("web2", "b"));
    assert!(elements().contains(&format!("tcp . 9191 : {web2_a} . 8080")), "{}", elements());
    assert_eq!(views(9191), vec![("a".into(), web2_a, false), ("b".into(), web2_b, true)]);
    assert_eq!(leases().trim(), "3", "host-local's leases: web on one network (the other given back), web2 on a and b");

    // podman rm: nothing left (elements, attachments, leases, veths).
    podman.ok(&["rm", "-f", "-t", "0", "-a"]);
    assert!(http_get(9090).is_err() && http_get(9191).is_err());
    assert!(!elements().contains("tcp . "), "elements left after podman rm: {}", elements());
    assert!(!record_text().contains("attachments"));
    assert_eq!(sh("ip -o link show type veth | grep -v veth-ext || true"), "");
    assert_eq!(leases().trim(), "0", "host-local leases left after podman rm");
});

// ---- churn: many attachments added and deleted in parallel ----

/// Synthetic attachment `i` of the churn: container `churn<i>`, one mapping, host port
/// 20000+i to 10.99.x.y:80 (TCP for even i, UDP for odd), so any lost, leaked or mixed element
/// shows in the table. Its prevResult is what the bridge plugin would return for it.
fn churn_mapping(i: u32) -> (String, String) {
    let proto = if i % 2 == 0 { "tcp" } else { "udp" };
    (proto.to_string(), format!("{proto} . {} : 10.99.{}.{} . 80", 20000 + i, i / 250, i % 250 + 2))
}

fn churn_request(verb: &str, i: u32) -> Answer {
    let (proto, _) = churn_mapping(i);
    let ctr = format!("churn{i}");
    let netns = format!("/run/netns/{ctr}");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": netns}],
        "ips": [{"address": format!("10.99.{}.{}/16", i / 250, i % 250 + 2), "interface": 0}]
    });
    let conf =
        netnat_conf("1.0.0", json!([{"hostPort": 20000 + i, "containerPort": 80, "protocol": proto}]), Some(&prev));
    plugin(NETNAT, &env(verb, &ctr, &netns), &conf)
}

/// The elements of both port maps, one line each, sorted.
fn map_elements() -> Vec<String> {
    let text = nft_list("map inet netnat pub_any4");
    let mut v: Vec<String> = text
        .split(['{', '}', ',', '\n'])
        .map(str::trim)
        .filter(|l| l.starts_with("tcp .") || l.starts_with("udp ."))
        .map(|l| l.trim_start_matches("elements = ").to_string())
        .collect();
    v.sort();
    v
}

/// Rules of netnat's table: every one has a comment, elements never do.
fn rule_count() -> usize {
    sh("nft list table inet netnat").lines().filter(|l| l.contains(" comment \"")).count()
}

isolated!(cni_churn_in_parallel, inner_cni_churn_in_parallel, timeout = 400, {
    const N: u32 = 1000;
    const WORKERS: u32 = 8;
    make_external_host();
    // Two real containers behind the bridge plugin, for traffic: one stays, one goes.
    let (r1, ip1) = container("real1", "1.0.0");
    let (r2, ip2) = container("real2", "1.0.0");
    let web = json!([{"hostPort": 30001, "containerPort": 8080, "protocol": "tcp"}]);
    let conf1 = netnat_conf("1.0.0", web, Some(&r1));
    let conf2 = netnat_conf("1.0.0", json!([{"hostPort": 30002, "containerPort": 8080, "protocol": "tcp"}]), Some(&r2));
    assert_eq!(plugin(NETNAT, &env("ADD", "real1", "/run/netns/real1"), &conf1).code, 0);
    assert_eq!(plugin(NETNAT, &env("ADD", "real2", "/run/netns/real2"), &conf2).code, 0);
    let rules_with_one = rule_count();

    // 1,000 attachments added by 8 workers at once (worker w adds i = w, w+8, ...).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            std::thread::spawn(move || {
                for i in (w..N).step_by(WORKERS as usize) {
                    assert!(std::time::Instant::now() < deadline, "churn ADDs did not finish in 300 s");
                    let a = churn_request("ADD", i);
                    assert_eq!(a.code, 0, "ADD churn{i}: {}{}", a.stdout, a.stderr);
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().expect("an ADD worker failed"));
    let mut live: std::collections::BTreeSet<u32> = (0..N).collect();
    assert_eq!(map_elements().len(), N as usize + 2);

    // Random ADD and DEL by 8 workers, each on its own containers (a runtime never runs two
    // verbs for one container at once), 20 s and 60 requests per worker at most. Ids past N
    // are new containers.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mine: Vec<u32> = (w..N + 200).step_by(WORKERS as usize).collect();
            let mut up: std::collections::BTreeSet<u32> = mine.iter().copied().filter(|i| *i < N).collect();
            std::thread::spawn(move || {
                let mut x: u64 = 0x9e3779b97f4a7c15 ^ (w as u64 + 1);
                for _ in 0..60 {
                    if std::time::Instant::now() >= until {
                        break;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = mine[(x % mine.len() as u64) as usize];
                    let verb = if up.contains(&i) { "DEL" } else { "ADD" };
                    let a = churn_request(verb, i);
                    assert_eq!(a.code, 0, "{verb} churn{i}: {}{}", a.stdout, a.stderr);
                    if verb == "DEL" {
                        up.remove(&i);
                    } else {
                        up.insert(i);
                    }
                }
                (mine, up)
            })
        })
        .collect();
    for w in workers {
        let (mine, up) = w.join().expect("a churn worker failed");
        live.retain(|i| !mine.contains(i));
        live.extend(up);
    }
    assert_eq!(plugin(NETNAT, &env("DEL", "real2", "/run/netns/real2"), &conf2).code, 0);

    // Exactly the live attachments' elements: none lost, none leaked, none pointing elsewhere.
    let mut want: Vec<String> = live.iter().map(|i| churn_mapping(*i).1).collect();
    want.push(format!("tcp . 30001 : {ip1} . 8080"));
    want.sort();
    assert_eq!(map_elements(), want);
    // Each element counts its connections.
    assert_eq!(sh("nft list map inet netnat pub_any4").matches("counter packets").count(), want.len());
    let record: Value = record();
    let mut keys: Vec<String> = record["attachments"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut want_keys: Vec<String> = live.iter().map(|i| format!("{NET}/churn{i}/eth0")).collect();
    want_keys.push(format!("{NET}/real1/eth0"));
    want_keys.sort();
    assert_eq!(keys, want_keys);
    // Each mapping once: under its attachment, not also in `mappings`.
    assert_eq!(record["mappings"].as_array().unwrap().len(), 0);
    let stored: usize =
        record["attachments"].as_object().unwrap().values().map(|a| a["mappings"].as_array().unwrap().len()).sum();
    assert_eq!(stored, want.len());
    assert_eq!(rule_count(), rules_with_one, "rules grew with the mappings");
    // Traffic: the container that stayed answers; the deleted one is refused. (The servers start
    // only now: a test server lives at most 120 s, and the churn may take longer under load.)
    let _s1 = tcp_server(Some(&ns("real1")), &format!("{ip1}:8080"), "real1");
    let _s2 = tcp_server(Some(&ns("real2")), &format!("{ip2}:8080"), "real2");
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:30001").unwrap(), "real1 saw 198.51.100.2");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:30002").is_err());

    // One more GC, listing every live attachment: nothing changes, not even the record.
    let valid: Vec<Value> = live
        .iter()
        .map(|i| json!({"containerID": format!("churn{i}"), "ifname": "eth0"}))
        .chain([json!({"containerID": "real1", "ifname": "eth0"})])
        .collect();
    let gc = json!({"cniVersion": "1.1.0", "name": NET, "type": "netnat", "cni.dev/valid-attachments": valid});
    let (table_before, record_before) = (table(), record_text());
    plugin(NETNAT, &[("CNI_COMMAND", "GC")], &gc.to_string()).quiet_success("GC");
    assert_eq!(table(), table_before);
    assert_eq!(record_text(), record_before);
});

isolated!(cni_allow_from_restricts_sources, inner_cni_allow_from, {
    make_external_host();
    let conf = |name: &str, port: u16, prev: &Value, allow: Value| {
        let mut c: Value = serde_json::from_str(&netnat_conf(
            "1.0.0",
            json!([{"hostPort": port, "containerPort": 8080, "protocol": "tcp"}]),
            Some(prev),
        ))
        .unwrap();
        c["allowFrom"] = allow;
        let _ = name;
        c.to_string()
    };
    let (ra, ipa) = container("ctra", "1.0.0");
    let (rb, ipb) = container("ctrb", "1.0.0");
    let _a = tcp_server(Some(&ns("ctra")), &format!("{ipa}:8080"), "ctra");
    let _b = tcp_server(Some(&ns("ctrb")), &format!("{ipb}:8080"), "ctrb");
    // ctra only from 203.0.113.0/24: the external host (198.51.100.2) gets nothing.
    let ca = conf("ctra", 9393, &ra, json!(["203.0.113.0/24"]));
    let add = plugin(NETNAT, &env("ADD", "ctra", "/run/netns/ctra"), &ca);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9393").is_err(), "a source outside allowFrom got in");
    // ctrb from the external host's network: it answers.
    let cb = conf("ctrb", 9494, &rb, json!(["198.51.100.0/24", "fd00::/8"]));
    let add = plugin(NETNAT, &env("ADD", "ctrb", "/run/netns/ctrb"), &cb);
    assert_eq!(add.code, 0, "{}{}", add.stdout, add.stderr);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9494").unwrap(), "ctrb saw 198.51.100.2");
    let ls: Vec<Value> = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let a = ls.iter().find(|m| m["host_port"] == 9393).unwrap();
    assert_eq!(a["allow"], json!(["203.0.113.0/24"]));
    assert!(a["denied_packets"].as_u64().unwrap() > 0, "{a}");
    // An allowFrom without a source of the container's family is invalid config; nothing changes.
    let before = table();
    let (rc, _) = container("ctrc", "1.0.0");
    let cc = conf("ctrc", 9595, &rc, json!(["fd00::/8"]));
    plugin(NETNAT, &env("ADD", "ctrc", "/run/netns/ctrc"), &cc).cni_error(7, "allowFrom of another family");
    assert_eq!(table(), before);
    // DEL takes the list's elements with the mappings.
    plugin(NETNAT, &env("DEL", "ctra", "/run/netns/ctra"), &ca).quiet_success("DEL ctra");
    plugin(NETNAT, &env("DEL", "ctrb", "/run/netns/ctrb"), &cb).quiet_success("DEL ctrb");
    let t = table();
    assert!(!t.contains("203.0.113.0/24") && !t.contains("198.51.100.0/24"), "{t}");
    assert!(!record_text().contains("\"allow\""));
});

/// A bridge ADD for container `ctr` (namespace of the same name, made if missing) on network
/// `net` (bridge `bridge`, subnet 10.`octet`.0.0/16) as interface `ifname`: the result and the
/// address. Only the first network gives the container its default route.
fn attach_bridge(ctr: &str, net: &str, bridge: &str, octet: u8, ifname: &str) -> (Value, String) {
    sh(&format!("[ -e /run/netns/{ctr} ] || ip netns add {ctr}"));
    let mut conf = bridge_conf("1.0.0");
    conf["name"] = json!(net);
    conf["bridge"] = json!(bridge);
    conf["ipam"]["ranges"] = json!([[{"subnet": format!("10.{octet}.0.0/16")}]]);
    if ifname != "eth0" {
        conf["ipam"]["routes"] = json!([]);
    }
    let netns = format!("/run/netns/{ctr}");
    let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", ctr), ("CNI_NETNS", &netns), ("CNI_IFNAME", ifname)];
    let a = plugin(&format!("{CNI_DIR}/bridge"), &env, &conf.to_string());
    assert_eq!(a.code, 0, "bridge ADD: {}{}", a.stdout, a.stderr);
    let result = a.json();
    let addr = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    (result, addr)
}

/// netnat's request for `ctr` on network `net` as interface `ifname`.
fn netnat_on(verb: &str, ctr: &str, net: &str, ifname: &str, maps: &Value, prev: &Value) -> Answer {
    let mut c: Value = serde_json::from_str(&netnat_conf("1.0.0", maps.clone(), Some(prev))).unwrap();
    c["name"] = json!(net);
    let netns = format!("/run/netns/{ctr}");
    let env = [("CNI_COMMAND", verb), ("CNI_CONTAINERID", ctr), ("CNI_NETNS", &netns), ("CNI_IFNAME", ifname)];
    plugin(NETNAT, &env, &c.to_string())
}

/// `ls --json` rows of one host port.
fn ls_port(port: u16) -> Vec<Value> {
    let ls: Vec<Value> = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    ls.into_iter().filter(|m| m["host_port"] == port).collect()
}

// Issue 23: Podman hands every network of a container the same port mappings. The second is
// accepted as standby and takes over, in the same transaction, when the first is deleted.
isolated!(cni_one_container_on_two_networks, inner_cni_two_networks, {
    make_external_host();
    let (ra, ipa) = attach_bridge("dual", NET, "cni0", 88, "eth0");
    let (rb, ipb) = attach_bridge("dual", "net2", "cni1", 89, "eth1");
    let _web = tcp_server(Some(&ns("dual")), "0.0.0.0:8080", "dual");
    let maps = json!([{"HostPort": 9090, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""}]);
    let add = netnat_on("ADD", "dual", NET, "eth0", &maps, &ra);
    assert_eq!(add.code, 0, "ADD eth0: {}{}", add.stdout, add.stderr);
    let add = netnat_on("ADD", "dual", "net2", "eth1", &maps, &rb);
    assert_eq!(add.code, 0, "ADD eth1 (same container, same port): {}{}", add.stdout, add.stderr);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "dual saw 198.51.100.2");
    let t = table();
    assert!(t.contains(&format!("tcp . 9090 : {ipa} . 8080")) && !t.contains(&ipb), "{t}");
    // ls shows both: the active one and the standby one.
    let rows = ls_port(9090);
    let standby: Vec<bool> = rows.iter().map(|r| r["standby"].as_bool().unwrap()).collect();
    assert_eq!(standby, [false, true], "{rows:?}");
    assert_eq!((rows[1]["network"].clone(), rows[1]["container_ip"].clone()), (json!("net2"), json!(ipb)));
    assert!(ok(&["ls"]).contains("net2 (CNI dual, standby)"));
    // CHECK of either attachment passes.
    netnat_on("CHECK", "dual", NET, "eth0", &maps, &ra).quiet_success("CHECK active");
    netnat_on("CHECK", "dual", "net2", "eth1", &maps, &rb).quiet_success("CHECK standby");

    // Another container asking for the port: refused (100), naming the owner; nothing changes.
    let (ro, _) = attach_bridge("other", NET, "cni0", 88, "eth0");
    let before = table();
    let e = netnat_on("ADD", "other", NET, "eth0", &maps, &ro).cni_error(100, "another container");
    assert!(e["details"].as_str().unwrap().contains("container dual"), "{e}");
    assert_eq!(table(), before);

    // The runtime disconnects the active network: netnat's DEL, then the bridge's (the chain in
    // reverse). The standby takes over in the same transaction: the port keeps answering, from
    // outside, from the host's 127.0.0.1 and from the container itself (hairpin).
    netnat_on("DEL", "dual", NET, "eth0", &maps, &ra).quiet_success("DEL of the active attachment");
    let t = table();
    assert!(t.contains(&format!("tcp . 9090 : {ipb} . 8080")) && !t.contains(&format!(": {ipa} . 8080")), "{t}");
    let del_env =
        [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "dual"), ("CNI_NETNS", "/run/netns/dual"), ("CNI_IFNAME", "eth0")];
    let d = plugin(&format!("{CNI_DIR}/bridge"), &del_env, &bridge_conf("1.0.0").to_string());
    assert_eq!(d.code, 0, "bridge DEL: {}", d.stderr);
    sh("ip -n dual route replace default via 10.89.0.1 dev eth1");
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "dual saw 198.51.100.2");
    let local = tcp_get(None, "127.0.0.1:9090").expect("localhost through the promoted mapping");
    assert!(local.starts_with("dual saw "), "{local}");
    let own = tcp_get(Some(&ns("dual")), "198.51.100.1:9090").expect("hairpin through the promoted mapping");
    assert!(own.starts_with("dual saw ") && !own.ends_with(&ipb), "hairpin not masqueraded: {own}");
    let rows = ls_port(9090);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["standby"].clone(), rows[0]["network"].clone()), (json!(false), json!("net2")));
    // The other container still cannot have it; DEL of the last attachment closes the port.
    netnat_on("ADD", "other", NET, "eth0", &maps, &ro).cni_error(100, "another container, after the takeover");
    netnat_on("DEL", "dual", "net2", "eth1", &maps, &rb).quiet_success("DEL of the last attachment");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "9090 still answers after both DELs");
    assert!(ls_port(9090).is_empty());
});

// ---- the requests exactly as the runtimes write them ----

/// CNI_ARGS as containerd's go-cni and CRI-O's ocicni set them for a pod.
fn k8s_args(pod: &str, id: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=uid-{pod}")
}

isolated!(cni_requests_as_containerd_and_crio_write_them, inner_cni_requests_as_runtimes_write_them, {
    make_external_host();
    // containerd 1.6's CRI (copied from what it sent in tests/cri.rs): the capabilities entry,
    // prevResult, and runtimeConfig.portMappings with Go's field names and an empty HostIP.
    let (r1, ip1) = container("pod1", "1.0.0");
    let _tcp = tcp_server(Some(&ns("pod1")), &format!("{ip1}:8080"), "pod1");
    let _udp = udp_server(Some(&ns("pod1")), &format!("{ip1}:53"), "pod1");
    let containerd_add = |prev: Option<&Value>| {
        let mut c = json!({
            "capabilities": {"portMappings": true}, "cniVersion": "1.0.0", "name": NET, "type": "netnat",
            "runtimeConfig": {"portMappings": [
                {"HostPort": 9090, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""},
                {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""}
            ]}
        });
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c.to_string()
    };
    let args1 = k8s_args("pod1", "pod1");
    let mut env1 = env("ADD", "pod1", "/run/netns/pod1");
    env1.push(("CNI_ARGS", &args1));
    let add = plugin(NETNAT, &env1, &containerd_add(Some(&r1)));
    assert_eq!(add.code, 0, "containerd's ADD: {}{}", add.stdout, add.stderr);
    assert_eq!(add.json(), r1);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "pod1 saw 198.51.100.2");
    assert_eq!(udp_get(ext().as_deref(), "0.0.0.0:0", "198.51.100.1:5353").unwrap(), "pod1 saw 198.51.100.2");
    // "HostIP": "" is no host address: the element is in the any-address map.
    assert!(table().contains(&format!("tcp . 9090 : {ip1} . 8080")), "{}", table());
    let ls: Vec<Value> = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    assert!(ls.len() == 2 && ls.iter().all(|m| m.get("host_ip") == Some(&Value::Null)), "{ls:?}");
    // containerd's DEL at RemovePodSandbox: the same keys, no prevResult.
    env1[0].1 = "DEL";
    plugin(NETNAT, &env1, &containerd_add(None)).quiet_success("containerd's DEL");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "9090 answers after DEL");
    assert!(udp_get(ext().as_deref(), "0.0.0.0:0", "198.51.100.1:5353").is_err(), "5353 answers after DEL");
    assert!(!record_text().contains("attachments"));

    // A DEL whose runtimeConfig and prevResult are garbage (a runtime's cache gone wrong, a
    // future format) exits 0 and still removes the attachment, so the plugins before netnat in
    // the chain get their DEL.
    let add = plugin(NETNAT, &env("ADD", "pod1", "/run/netns/pod1"), &containerd_add(Some(&r1)));
    assert_eq!(add.code, 0, "{}", add.stderr);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9090").unwrap(), "pod1 saw 198.51.100.2");
    let garbage = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "netnat",
        "runtimeConfig": {"portMappings": [{"HostPort": "not a port", "Protocol": 7}], "bandwidth": "x"},
        "prevResult": "not a result"
    });
    plugin(NETNAT, &env("DEL", "pod1", "/run/netns/pod1"), &garbage.to_string()).quiet_success("DEL with garbage");
    let rc_string = json!({"cniVersion": "1.0.0", "name": NET, "type": "netnat", "runtimeConfig": "garbage"});
    plugin(NETNAT, &env("DEL", "pod1", "/run/netns/pod1"), &rc_string.to_string()).quiet_success("DEL, string");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9090").is_err(), "9090 answers after the garbage DEL");
    assert!(!table().contains(". 9090"), "{}", table());
    assert!(!record_text().contains("attachments"));
    // The bridge plugin's own DEL then runs (as the runtime sends it in reverse order).
    let del =
        plugin(&format!("{CNI_DIR}/bridge"), &env("DEL", "pod1", "/run/netns/pod1"), &bridge_conf("1.0.0").to_string());
    assert_eq!(del.code, 0, "{}", del.stderr);

    // CRI-O: its ocicni would write ocicni's JSON tags (hostPort, containerPort, protocol,
    // hostIP, the empty host address included); CRI-O itself publishes hostPorts with its own
    // hostport manager and sends no portMappings (docs/cni.md), so a netnat with the
    // portMappings capability gets only CNI_ARGS: prevResult passes through, nothing published.
    let (r2, ip2) = container("pod2", "1.0.0");
    let _tcp2 = tcp_server(Some(&ns("pod2")), &format!("{ip2}:8080"), "pod2");
    let args2 = k8s_args("pod2", "pod2");
    let mut env2 = env("ADD", "pod2", "/run/netns/pod2");
    env2.push(("CNI_ARGS", &args2));
    let crio_none = json!({"capabilities": {"portMappings": true}, "cniVersion": "1.0.0", "name": NET,
                           "type": "netnat", "prevResult": r2});
    let before = table();
    let add = plugin(NETNAT, &env2, &crio_none.to_string());
    assert_eq!((add.code, add.json()), (0, r2.clone()), "{}", add.stderr);
    assert_eq!(table(), before);
    let mut ocicni = crio_none.clone();
    ocicni["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 9191, "containerPort": 8080, "protocol": "tcp", "hostIP": ""}]});
    let add = plugin(NETNAT, &env2, &ocicni.to_string());
    assert_eq!(add.code, 0, "ocicni's ADD: {}{}", add.stdout, add.stderr);
    assert_eq!(tcp_get(ext().as_deref(), "198.51.100.1:9191").unwrap(), "pod2 saw 198.51.100.2");
    env2[0].1 = "DEL";
    plugin(NETNAT, &env2, &ocicni.to_string()).quiet_success("ocicni's DEL");
    assert!(tcp_get(ext().as_deref(), "198.51.100.1:9191").is_err());
});
