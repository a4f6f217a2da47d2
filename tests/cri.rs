//! netnat as the portMappings plugin of containerd's CRI (issue 23): the path a kubelet takes for
//! a pod with a `hostPort`, without a kubelet. Debian's containerd (its built-in CRI plugin) runs
//! in the test's throwaway namespace with a private config, crun as the runtime, images made
//! from busybox-static, and the conflist bridge + host-local + netnat. tests/cri/client.py makes
//! the kubelet's gRPC calls over containerd's socket (Debian's python3-grpcio and
//! python3-grpc-tools, the CRI messages in tests/cri/api.proto).

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything of the test's node lives here (a tmpfs: the harness mounts one on /run).
const T: &str = "/run/t";
const SOCK: &str = "/run/t/ctd/containerd.sock";
const NET: &str = "k8s-pod-network";
const IPAM_DIR: &str = "/run/t/ipam";

/// The node: containerd in its own PID namespace (so its shims and containers end with it) and
/// one CRI client connection, as a kubelet keeps one.
struct Node {
    containerd: Child,
    client: Child,
    to_client: ChildStdin,
    from_client: BufReader<ChildStdout>,
}

/// containerd's config: state and root on the tmpfs, no cgroups (none are mounted for crun
/// here), no AppArmor, no lowering of oom_score_adj (refused in this sandbox), the local pause
/// image, crun with `--cgroup-manager=disabled` through the runc shim, the test's CNI dirs.
fn containerd_config() -> String {
    format!(
        r#"version = 2
root = "{T}/ctd/root"
state = "{T}/ctd/state"
[grpc]
  address = "{SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  sandbox_image = "localhost/pause:1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "crun"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "{T}/crun-nocg"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{T}/cni/bin"
    conf_dir = "{T}/cni/conf"
"#
    )
}

/// The node's network: the bridge plugin with host-local addresses and a default route, netnat
/// chained after it with the portMappings capability, as docs/cni.md shows.
fn conflist() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET,
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": IPAM_DIR}},
            {"type": "netnat", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The CNI plugin directory: the reference plugins, and netnat behind a wrapper that keeps a
/// copy of each request containerd sends and netnat's exit status (VERB.CONTAINERID.PID, .rc).
fn plugin_dir() {
    sh(&format!(
        "mkdir -p {T}/cni/bin {T}/cni/conf {T}/requests && for p in bridge host-local loopback; do ln -s /usr/lib/cni/$p {T}/cni/bin/; done"
    ));
    let wrapper = format!(
        "#!/bin/sh\nf={T}/requests/$CNI_COMMAND.$CNI_CONTAINERID.$$\ncat > $f\n{NETNAT} < $f\nrc=$?\necho $rc > $f.rc\nexit $rc\n"
    );
    std::fs::write(format!("{T}/cni/bin/netnat"), wrapper).unwrap();
    std::fs::write(format!("{T}/cni/conf/10-{NET}.conflist"), conflist().to_string()).unwrap();
    std::fs::write(format!("{T}/crun-nocg"), "#!/bin/sh\nexec /usr/bin/crun --cgroup-manager=disabled \"$@\"\n")
        .unwrap();
    sh(&format!("chmod +x {T}/cni/bin/netnat {T}/crun-nocg"));
}

/// No registry: two images (the pause image and a busybox one) as docker-archive tars, one layer
/// made of busybox-static, imported into the CRI's namespace.
fn images() {
    sh(&format!(
        "R={T}/img/rootfs && mkdir -p $R/bin $R/tmp && cp /bin/busybox $R/bin/ \
         && for a in sh httpd sleep; do ln -s busybox $R/bin/$a; done && tar -C $R -cf {T}/img/layer.tar ."
    ));
    let diff_id = sh(&format!("sha256sum {T}/img/layer.tar")).split_whitespace().next().unwrap().to_string();
    for (name, cmd) in [("pause", json!(["/bin/sleep", "86400"])), ("bb", json!(["/bin/sh"]))] {
        let dir = format!("{T}/img/{name}");
        std::fs::create_dir_all(&dir).unwrap();
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]}
        });
        let manifest =
            json!([{"Config": "config.json", "RepoTags": [format!("localhost/{name}:1")], "Layers": ["layer.tar"]}]);
        std::fs::write(format!("{dir}/config.json"), config.to_string()).unwrap();
        std::fs::write(format!("{dir}/manifest.json"), manifest.to_string()).unwrap();
        sh(&format!(
            "cp {T}/img/layer.tar {dir}/ && tar -C {dir} -cf {dir}.tar manifest.json config.json layer.tar \
             && ctr -a {SOCK} -n k8s.io images import {dir}.tar >/dev/null"
        ));
    }
}

/// Kills `child`'s process when this test's thread ends, whatever ends it.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

impl Node {
    fn start() -> Node {
        // libcni caches results under /var/lib/cni; containerd's default dirs must not be the machine's.
        sh(&format!(
            "umount /sys/fs/cgroup/unified 2>/dev/null || true; mount --make-shared /run; \
             for d in /var/lib/cni /var/lib/containerd; do mkdir -p $d && mount -t tmpfs tmpfs $d; done; \
             mkdir -p {T}/ctd {T}/img {T}/pods; ip link set lo up"
        ));
        plugin_dir();
        std::fs::write(format!("{T}/containerd.toml"), containerd_config()).unwrap();
        // A PID namespace of its own (its /run mounts, netns pins included, propagate back to
        // the test's): killing unshare kills containerd, its shims and every container.
        let log = std::fs::File::create(format!("{T}/containerd.log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "unchanged"])
            .args(["containerd", "--config", &format!("{T}/containerd.toml")])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd);
        let containerd = cmd.spawn().expect("starting containerd");
        let end = Instant::now() + Duration::from_secs(20);
        while !Path::new(SOCK).exists() {
            assert!(Instant::now() < end, "containerd did not start in 20 s:\n{}", containerd_log());
            std::thread::sleep(Duration::from_millis(100));
        }
        images();
        let client_py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cri/client.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args([client_py, SOCK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(format!("{T}/client.log")).unwrap());
        die_with_parent(&mut cmd);
        let mut client = cmd.spawn().expect("starting the CRI client (python3-grpcio, python3-grpc-tools)");
        let to_client = client.stdin.take().unwrap();
        let from_client = BufReader::new(client.stdout.take().unwrap());
        let mut node = Node { containerd, client, to_client, from_client };
        let v = node.call("Version", json!({"version": "v1"})).unwrap();
        assert_eq!((v["runtime_name"].as_str(), v["runtime_api_version"].as_str()), (Some("containerd"), Some("v1")));
        node
    }

    /// One CRI call (the client bounds it to 60 s): the response, or the gRPC error.
    fn call(&mut self, call: &str, request: Value) -> Result<Value, String> {
        writeln!(self.to_client, "{}", json!({"call": call, "request": request})).unwrap();
        let mut line = String::new();
        self.from_client.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "CRI client answered {line:?} ({e}): {}",
                std::fs::read_to_string(format!("{T}/client.log")).unwrap()
            )
        });
        match answer.get("error") {
            Some(e) => Err(e.as_str().unwrap().to_string()),
            None => Ok(answer["response"].clone()),
        }
    }

    /// What a kubelet does for a pod with one container: RunPodSandbox with the pod's port
    /// mappings (PodSandboxStatus for its address), CreateContainer, StartContainer. The
    /// container serves `name` over HTTP on port 8080.
    fn run_pod(&mut self, name: &str, ports: Value) -> Result<Pod, String> {
        let uid = format!("uid-{name}");
        let ns_opts = json!({"network": "POD", "pid": "CONTAINER", "ipc": "POD"});
        let sandbox = json!({
            "metadata": {"name": name, "uid": uid, "namespace": "default", "attempt": 0},
            "hostname": name,
            "log_directory": format!("{T}/pods/default_{name}_{uid}"),
            "dns_config": {},
            "port_mappings": ports,
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "default",
                       "io.kubernetes.pod.uid": uid},
            "linux": {"cgroup_parent": format!("/kubepods/besteffort/pod{uid}"),
                      "security_context": {"namespace_options": ns_opts}}
        });
        let id =
            self.call("RunPodSandbox", json!({"config": sandbox}))?["pod_sandbox_id"].as_str().unwrap().to_string();
        let status = self.call("PodSandboxStatus", json!({"pod_sandbox_id": id, "verbose": true}))?;
        let ip = status["status"]["network"]["ip"].as_str().unwrap().to_string();
        let info: Value = serde_json::from_str(status["info"]["info"].as_str().unwrap()).unwrap();
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .unwrap()
            .to_string();
        let script = format!("echo {name} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp");
        let container = json!({
            "metadata": {"name": "web", "attempt": 0},
            "image": {"image": "localhost/bb:1"},
            "command": ["/bin/sh", "-c", script],
            "labels": {"io.kubernetes.container.name": "web"},
            "log_path": "web/0.log",
            "linux": {"security_context": {"namespace_options": ns_opts}}
        });
        let created = self
            .call("CreateContainer", json!({"pod_sandbox_id": id, "config": container, "sandbox_config": sandbox}))?;
        let ctr = created["container_id"].as_str().unwrap().to_string();
        self.call("StartContainer", json!({"container_id": ctr}))?;
        // Ready when httpd answers on the pod's own address.
        let pod = Pod { id, ctr, ip, netns: PathBuf::from(netns) };
        let end = Instant::now() + Duration::from_secs(10);
        while http(None, &format!("{}:8080", pod.ip)).as_deref() != Ok(name) {
            assert!(Instant::now() < end, "pod {name}'s httpd did not answer in 10 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(pod)
    }

    /// A kubelet deleting a pod: StopContainer, StopPodSandbox, RemovePodSandbox.
    fn remove_pod(&mut self, pod: &Pod) {
        self.call("StopContainer", json!({"container_id": pod.ctr, "timeout": 0})).unwrap();
        self.call("StopPodSandbox", json!({"pod_sandbox_id": pod.id})).unwrap();
        self.call("RemovePodSandbox", json!({"pod_sandbox_id": pod.id})).unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.client.kill();
        let _ = self.client.wait();
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
    }
}

fn containerd_log() -> String {
    std::fs::read_to_string(format!("{T}/containerd.log")).unwrap_or_default()
}

struct Pod {
    id: String,
    ctr: String,
    ip: String,
    netns: PathBuf,
}

/// An HTTP GET of `addr` from namespace `netns` (None: the node itself): the body, or curl's
/// error (3 s at most).
fn http(netns: Option<&str>, addr: &str) -> Result<String, String> {
    let url = format!("http://{addr}/");
    let out = match netns {
        Some(n) => run("ip", &["netns", "exec", n, "curl", "-sS", "-m", "3", &url]),
        None => run("curl", &["-sS", "-m", "3", &url]),
    };
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// A kubelet's PortMapping for a container port with a hostPort.
fn port(protocol: &str, container_port: u16, host_port: u16, host_ip: &str) -> Value {
    json!({"protocol": protocol, "container_port": container_port, "host_port": host_port, "host_ip": host_ip})
}

/// What a pod leaves on the node: netnat's elements and attachments, host-local's leases, veths,
/// network namespaces.
#[derive(Debug, PartialEq)]
struct Leftovers {
    elements: Vec<String>,
    attachments: Vec<String>,
    leases: Vec<String>,
    veths: usize,
    netns: Vec<String>,
}

fn leftovers() -> Leftovers {
    let table = nft_list("table inet netnat");
    let elements = table
        .split(['{', '}', ',', '\n'])
        .map(|l| l.trim().trim_start_matches("elements = ").to_string())
        .filter(|l| (l.starts_with("tcp . ") || l.starts_with("udp . ")) && l.contains(" : "))
        .collect();
    let record: Value = record();
    let attachments = record["attachments"].as_object().map(|a| a.keys().cloned().collect()).unwrap_or_default();
    let list = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let leases =
        list(&format!("{IPAM_DIR}/{NET}")).into_iter().filter(|f| f.parse::<std::net::IpAddr>().is_ok()).collect();
    let veths = sh("ip -o link show type veth").lines().count();
    Leftovers { elements, attachments, leases, veths, netns: list("/run/netns") }
}

/// The requests containerd sent netnat for `verb`, with netnat's exit status, oldest first.
fn requests(verb: &str) -> Vec<(Value, i32)> {
    requests_named(&format!("{verb}."))
}

/// The requests for `verb` and the sandbox (CNI_CONTAINERID) `id`.
fn requests_of(verb: &str, id: &str) -> Vec<(Value, i32)> {
    requests_named(&format!("{verb}.{id}."))
}

fn requests_named(prefix: &str) -> Vec<(Value, i32)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("{T}/requests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(prefix) && !n.ends_with(".rc")
        })
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap());
    files
        .iter()
        .map(|p| {
            let req = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let rc =
                std::fs::read_to_string(format!("{}.rc", p.display())).map(|s| s.trim().parse().unwrap()).unwrap_or(-1);
            (req, rc)
        })
        .collect()
}

isolated!(cri_pods_with_host_ports, inner_cri_pods_with_host_ports, timeout = 240, {
    make_external_host();
    let mut node = Node::start();
    let empty = leftovers();
    let ext = |port: u16| http(Some("ext"), &format!("{HOST_EXT_IP}:{port}"));

    // A pod with a TCP hostPort: containerd hands netnat Go's field names, and the port answers
    // from the external host and from the node's 127.0.0.1.
    let web = node.run_pod("web", json!([port("TCP", 8080, 9090, "")])).unwrap_or_else(|e| panic!("web: {e}"));
    let adds = requests("ADD");
    assert_eq!(adds.len(), 1);
    assert_eq!(
        adds[0].0["runtimeConfig"],
        json!({"portMappings": [{"HostPort": 9090, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""}]}),
        "what containerd sent"
    );
    assert_eq!(ext(9090).unwrap(), "web");
    assert_eq!(http(None, "127.0.0.1:9090").unwrap(), "web");
    assert!(leftovers().elements.contains(&format!("tcp . 9090 : {} . 8080", web.ip)), "{:?}", leftovers());

    // A second pod on its own ports, TCP and UDP: both pods answer on theirs. (busybox has no
    // UDP server: the test serves UDP in the pod's network namespace, which containerd made.)
    let api = node
        .run_pod("api", json!([port("TCP", 8080, 9191, ""), port("UDP", 53, 5353, "")]))
        .unwrap_or_else(|e| panic!("api: {e}"));
    let _dns = udp_server(Some(&api.netns), &format!("{}:53", api.ip), "api-udp");
    assert_eq!(ext(9191).unwrap(), "api");
    assert_eq!(ext(9090).unwrap(), "web");
    assert_eq!(
        udp_get(Some(&ns("ext")), "0.0.0.0:0", &format!("{HOST_EXT_IP}:5353")).unwrap(),
        "api-udp saw 198.51.100.2"
    );
    // From a pod: another pod's hostPort and its own (hairpin) through the node's address.
    let api_ns = api.netns.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(http(Some(&api_ns), &format!("{HOST_EXT_IP}:9090")).unwrap(), "web");
    assert_eq!(http(Some(&api_ns), &format!("{HOST_EXT_IP}:9191")).unwrap(), "api");

    // hostIP 127.0.0.1: the node reaches it, the external host does not.
    let local =
        node.run_pod("local", json!([port("TCP", 8080, 9292, "127.0.0.1")])).unwrap_or_else(|e| panic!("local: {e}"));
    assert_eq!(http(None, "127.0.0.1:9292").unwrap(), "local");
    assert!(ext(9292).is_err(), "a hostIP 127.0.0.1 port answered the external host");
    assert_eq!(requests("ADD").last().unwrap().0["runtimeConfig"]["portMappings"][0]["HostIP"], "127.0.0.1");

    // A pod without a hostPort: containerd sends netnat no runtimeConfig, and nothing changes.
    let before = leftovers();
    let plain = node.run_pod("plain", json!([])).unwrap_or_else(|e| panic!("plain: {e}"));
    let (add, rc) = requests("ADD").pop().unwrap();
    assert!(add.get("runtimeConfig").is_none() && rc == 0, "{add}");
    assert_eq!(leftovers().elements, before.elements);
    node.remove_pod(&plain);
    assert_eq!(leftovers(), before);

    // A pod asking for a host port another pod holds: RunPodSandbox fails with netnat's error
    // naming the holder, containerd's DEL after the failed ADD succeeds and reaches bridge and
    // host-local, so nothing of the refused pod stays; the holder still answers.
    let before = leftovers();
    let dels = requests("DEL").len();
    // A kubelet retries: each try is refused the same way.
    for _ in 0..2 {
        let e =
            node.run_pod("dup", json!([port("TCP", 8080, 9090, "")])).err().expect("a second pod got host port 9090");
        assert!(e.contains("already published") && e.contains(&web.id), "{e}");
    }
    let new_dels = requests("DEL").split_off(dels);
    assert!(!new_dels.is_empty() && new_dels.iter().all(|(_, rc)| *rc == 0), "DEL after the failed ADD: {new_dels:?}");
    assert_eq!(leftovers(), before, "the refused pod's tries left something");
    assert_eq!(ext(9090).unwrap(), "web");

    // The kubelet deletes the pods: each port stops answering, and at the end nothing is left
    // (no element, attachment, lease, veth or network namespace). Every DEL exited 0.
    node.remove_pod(&web);
    assert!(ext(9090).is_err(), "9090 answers after RemovePodSandbox");
    // containerd's DELs for it: at StopPodSandbox with prevResult, at RemovePodSandbox without;
    // both with the mappings in Go's field names, both exit 0.
    let dels = requests_of("DEL", &web.id);
    let shape: Vec<(bool, Value, i32)> = dels
        .iter()
        .map(|(r, rc)| (r.get("prevResult").is_some(), r["runtimeConfig"]["portMappings"][0].clone(), *rc))
        .collect();
    let m = json!({"HostPort": 9090, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""});
    assert_eq!(shape, vec![(true, m.clone(), 0), (false, m, 0)], "{dels:?}");
    assert_eq!(ext(9191).unwrap(), "api");
    node.remove_pod(&api);
    node.remove_pod(&local);
    assert!(udp_get(Some(&ns("ext")), "0.0.0.0:0", &format!("{HOST_EXT_IP}:5353")).is_err());
    assert!(http(None, "127.0.0.1:9292").is_err());
    assert_eq!(leftovers(), empty, "pods left something after RemovePodSandbox");
    assert!(requests("DEL").iter().all(|(_, rc)| *rc == 0), "{:?}", requests("DEL"));
    drop(node);
});
