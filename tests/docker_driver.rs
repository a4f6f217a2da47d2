//! netnat as Docker's remote network driver (issue 25), driven by a real dockerd (Debian's
//! docker.io) inside the test's own user, network, mount and PID namespaces
//! (`common::docker`). One dockerd serves every case, in order; traffic comes from an
//! "external host" namespace and from the host itself.

mod common;
use common::docker::{docker_fails, docker_ok, run_in_userns, sandbox_of, Dockerd, IMAGE};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const SOCKET: &str = "/run/docker/plugins/netnat.sock";
const BRIDGE: &str = "nnd0";

/// `netnat docker-plugin`, killed when dropped.
struct Plugin(Child);

impl Plugin {
    /// The plugin as a foreground process.
    fn start() -> Plugin {
        Plugin::spawn(Command::new(NETNAT).args(["docker-plugin", "--socket", SOCKET]))
    }

    /// The plugin started on Docker's first connection by socket activation, as
    /// netnat-docker.socket does it (systemd's own tool: LISTEN_FDS, fd 3).
    fn activated() -> Plugin {
        let _ = std::fs::remove_file(SOCKET); // systemd unlinks a stale socket file before binding too
        Plugin::spawn(Command::new("systemd-socket-activate").args([
            "-l",
            SOCKET,
            NETNAT,
            "docker-plugin",
            "--socket",
            SOCKET,
        ]))
    }

    fn spawn(cmd: &mut Command) -> Plugin {
        let log = std::fs::OpenOptions::new().create(true).append(true).open("/var/log/netnat-plugin.log").unwrap();
        let child = cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("starting netnat docker-plugin");
        let end = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
            assert!(Instant::now() < end, "the plugin did not listen on {SOCKET} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Plugin(child)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ls() -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(&["ls", "--json"])).unwrap().as_array().unwrap().clone()
}

/// The mappings `netnat ls --json` lists on host port `port`: (protocol, host_ip, container ip:port, owner).
fn listed(port: u16) -> Vec<(String, String, String, String)> {
    ls().iter()
        .filter(|v| v["host_port"] == port)
        .map(|v| {
            let m = v;
            (
                m["protocol"].as_str().unwrap().to_string(),
                m["host_ip"].as_str().unwrap_or("*").to_string(),
                format!("{}:{}", m["container_ip"].as_str().unwrap(), m["container_port"]),
                v["container_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn endpoint_of(container: &str) -> String {
    docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.EndpointID}}{{end}}", container])
}

fn ip_of(container: &str) -> String {
    docker_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container])
}

/// An HTTP GET of / from `netns` (None: the host) to `addr` (`IP:PORT`, `[IPv6]:PORT`): the
/// page, or None. Bounded: 2 s to connect, 2 s to read.
fn http_get(netns: Option<&Path>, addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let (netns, dst) = (netns.map(Path::to_path_buf), addr.parse::<std::net::SocketAddr>().unwrap());
    let get = move || -> std::io::Result<String> {
        let mut c = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    };
    let page = match netns {
        Some(p) => in_netns(&p, get),
        None => get(),
    };
    let page = page.ok()?;
    page.starts_with("HTTP/1.").then(|| page.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()))?
}

/// `wget` retried for up to 5 s (a container's httpd starting, a bridge port learning).
fn http_get_settled(netns: Option<&Path>, url: &str) -> Option<String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match http_get(netns, url) {
            Some(s) => return Some(s),
            None if Instant::now() >= end => {
                eprintln!("GET {url} from {netns:?} failed; the kernel and the logs:\n{}", diagnostics());
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Exactly one endpoint (handoff) and one veth per running container on dnet: nothing left of
/// stopped, removed or restarted ones, nothing doubled.
fn assert_one_endpoint_per_container() {
    let running = docker_ok(&["ps", "-q", "--filter", "network=dnet"]).lines().count();
    let rec: Value = serde_json::from_str(&std::fs::read_to_string("/run/netnat/state.json").unwrap()).unwrap();
    let handoffs = rec.get("handoffs").and_then(Value::as_object).map_or(0, |h| h.len());
    let veths = sh("ip -o link show type veth").lines().filter(|l| l.contains(": nn")).count();
    assert_eq!((handoffs, veths), (running, running), "endpoints and veths for {running} containers:\n{rec}");
}

/// What a failed request needs looked at.
fn diagnostics() -> String {
    sh("nft list ruleset 2>&1; iptables-save 2>&1; ip -br addr; ip route; ip -n ext route; \
        cat /var/log/netnat-plugin.log; cat /run/netnat/state.json")
}

/// A container on the netnat network serving `name` over HTTP on port 80 (busybox httpd).
fn run_web(name: &str, ports: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", "dnet"];
    for p in ports {
        args.extend(["-p", p]);
    }
    let script = format!("echo {name} > /index.html && exec httpd -f -p 80 -h /");
    args.extend([IMAGE, "sh", "-c", &script]);
    docker_ok(&args);
}

/// Nothing of netnat's is left: no network, handoff, mapping or attachment in the record, no
/// element in table inet netnat, no netnat veth.
fn assert_nothing_left() {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string("/run/netnat/state.json").unwrap()).unwrap();
    for k in ["networks", "handoffs", "mappings", "attachments", "sandboxes"] {
        let empty = match rec.get(k) {
            None => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        };
        assert!(empty, "{k} left: {rec}");
    }
    let links = sh("ip -o link show");
    assert!(!links.contains(" nn"), "netnat links left:\n{links}");
}

#[test]
fn docker_driver() {
    run_in_userns("docker_driver_inner", 420);
}

#[test]
#[ignore = "runs through its outer test, inside throwaway namespaces"]
fn docker_driver_inner() {
    if !inner() {
        return;
    }
    // dockerd turns forwarding on and iptables' FORWARD policy to DROP; netnat's networks get
    // through by Docker's own hook (issue 22: two rules at the top of DOCKER-USER).
    let mut dockerd = Dockerd::start();
    let plugin = Plugin::start();
    make_external_host_v6();
    refuses_bad_options();
    let id = creates_networks();
    refuses_taken_ports();
    let (ep1, ip1, sb1) = publishes_ports();
    beside_others_and_in_the_records(&id, &ep1, &ip1, &sb1);
    // `docker rm` closes web1's ports, exactly those.
    closes_ports_on_rm(&ep1);
    survives_a_dockerd_restart(&mut dockerd);
    let plugin = survives_a_plugin_restart(plugin);
    parallel_runs_get_their_own_ports();
    leaves_nothing_behind();
    drop(plugin);
}

fn refuses_bad_options() {
    // A bad option or value is refused, naming it, and nothing is left behind.
    for (opt, named) in
        [("netnat.masquerade=maybe", "netnat.masquerade=maybe"), ("netnat.colour=blue", "netnat.colour")]
    {
        let err = docker_fails(&["network", "create", "-d", "netnat", "--subnet", "10.78.0.0/24", "-o", opt, "bad"]);
        assert!(err.contains(named), "{err}");
    }
    let err = docker_fails(&[
        "network",
        "create",
        "-d",
        "netnat",
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "netnat.host_firewall=no",
        "bad",
    ]);
    assert!(err.contains("netnat.host_firewall=no") && err.contains("auto, off"), "{err}");
    assert!(!docker_ok(&["network", "ls"]).contains("bad"));
    assert_eq!(ok(&["network", "ls", "--json"]).trim(), "[]");
}

fn creates_networks() -> String {
    // The network: Docker's IPAM hands out the subnets, netnat makes bridge, gateways and rules.
    docker_ok(&[
        "network",
        "create",
        "-d",
        "netnat",
        "--subnet",
        "10.77.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:77::/64",
        "-o",
        &format!("netnat.bridge={BRIDGE}"),
        "dnet",
    ]);
    let id = docker_ok(&["network", "inspect", "-f", "{{.Id}}", "dnet"]);
    let nets: Value = serde_json::from_str(&ok(&["network", "ls", "--json"])).unwrap();
    assert_eq!(nets[0]["owner"]["id"], id.as_str(), "{nets}");
    assert_eq!(nets[0]["bridge"], BRIDGE);
    assert!(sh(&format!("ip -br addr show {BRIDGE}")).contains("10.77.0.1/24"));
    assert!(sh("iptables -S DOCKER-USER").contains(&format!("-i {BRIDGE}")), "DOCKER-USER is not opened");
    // `-o netnat.host_firewall=off`: the operator opens the host firewall, netnat does not.
    docker_ok(&[
        "network",
        "create",
        "-d",
        "netnat",
        "--subnet",
        "10.80.0.0/24",
        "-o",
        "netnat.host_firewall=off",
        "-o",
        "netnat.bridge=nnd9",
        "dnet9",
    ]);
    let nets = ok(&["network", "ls", "--json"]);
    assert!(nets.contains("\"host_firewall\": \"off\""), "{nets}");
    assert!(!sh("iptables -S DOCKER-USER").contains("nnd9"));
    docker_ok(&["network", "rm", "dnet9"]);
    id
}

fn refuses_taken_ports() {
    // A port held by a listening socket fails `docker run`, naming the holder.
    let held = std::net::TcpListener::bind("0.0.0.0:9400").unwrap();
    let err =
        docker_fails(&["run", "-d", "--name", "clash", "--network", "dnet", "-p", "9400:80", IMAGE, "sleep", "60"]);
    assert!(err.contains("9400") && err.contains("listens on 0.0.0.0:9400"), "{err}");
    docker_ok(&["rm", "-f", "clash"]);
    // So does a port netnat publishes for someone else.
    ok(&["publish", "9401:192.0.2.7:80"]);
    let err =
        docker_fails(&["run", "-d", "--name", "clash", "--network", "dnet", "-p", "9401:80", IMAGE, "sleep", "60"]);
    assert!(err.contains("netnat mapping 9401:192.0.2.7:80/tcp of `netnat publish`"), "{err}");
    docker_ok(&["rm", "-f", "clash"]);
    ok(&["unpublish", "9401"]);
    drop(held);
}

/// web1 with every kind of `-p`: Docker's endpoint ID, address and namespace.
fn publishes_ports() -> (String, String, PathBuf) {
    // The first port of a range is held too: the range takes the next one.
    let held_range = std::net::TcpListener::bind("0.0.0.0:9200").unwrap();

    run_web("web1", &["9090:80", "127.0.0.1:9095:81/udp", "9200-9210:82", "8081", "9300:83/sctp"]);
    drop(held_range);
    let ep1 = endpoint_of("web1");
    let ip1 = ip_of("web1");
    let sb1 = sandbox_of("web1");
    // Published from outside and from the host itself, by the kernel: no docker-proxy, no
    // Docker DNAT rule for netnat's ports.
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9090")).as_deref(), Some("web1"));
    assert_eq!(http_get(None, "127.0.0.1:9090").as_deref(), Some("web1"));
    assert_eq!(http_get_settled(ext().as_deref(), &format!("[{HOST_EXT_IP6}]:9090")).as_deref(), Some("web1"));
    // Listed with Docker's endpoint ID: both families on 9090, the loopback UDP port, the range's
    // first free port (9200 was held), an ephemeral port for `-p 8081`, SCTP.
    let l = listed(9090);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l.iter().all(|(p, h, _, o)| p == "tcp" && h == "*" && *o == ep1), "{l:?}");
    assert!(l.iter().any(|(_, _, c, _)| *c == format!("{ip1}:80")), "{l:?}");
    assert_eq!(listed(9095), vec![("udp".into(), "127.0.0.1".into(), format!("{ip1}:81"), ep1.clone())]);
    assert!(listed(9200).is_empty());
    assert_eq!(listed(9201).len(), 2);
    let eph: Vec<Value> = ls().into_iter().filter(|v| v["container_port"] == 8081).collect();
    let range: Vec<u64> =
        sh("cat /proc/sys/net/ipv4/ip_local_port_range").split_whitespace().map(|p| p.parse().unwrap()).collect();
    let eport = eph[0]["host_port"].as_u64().unwrap();
    assert!(eph.len() == 2 && (range[0]..=range[1]).contains(&eport), "{eph:?}");
    assert_eq!(listed(9300)[0].0, "sctp");
    let text = ok(&["ls"]);
    assert!(text.contains(&format!("(docker {})", &ep1[..12])), "{text}");
    let servers = [
        udp_server(Some(&sb1), &format!("{ip1}:81"), "web1-udp"),
        tcp_server(Some(&sb1), &format!("{ip1}:82"), "web1-82"),
        tcp_server(Some(&sb1), &format!("{ip1}:8081"), "web1-8081"),
    ];
    assert_eq!(
        udp_get(None, "127.0.0.1:0", "127.0.0.1:9095").unwrap(),
        "web1-udp saw 10.77.0.1",
        "localhost is masqueraded to the gateway"
    );
    assert_eq!(
        tcp_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9201")).unwrap(),
        format!("web1-82 saw {EXT_IP}")
    );
    assert_eq!(
        tcp_get(ext().as_deref(), &format!("{HOST_EXT_IP}:{eport}")).unwrap(),
        format!("web1-8081 saw {EXT_IP}")
    );
    drop(servers);
    let proxies = sh("ps -eo args | grep [d]ocker-proxy || true");
    assert!(proxies.is_empty(), "docker-proxy runs for netnat's ports: {proxies}");
    let docker_nat = sh("iptables-save -t nat");
    for p in ["9090", "9095", "9201", "8081"] {
        assert!(!docker_nat.contains(&format!("--dport {p}")), "Docker DNATs port {p}:\n{docker_nat}");
    }
    (ep1, ip1, sb1)
}

fn beside_others_and_in_the_records(id: &str, ep1: &str, ip1: &str, sb1: &Path) {
    // A second container; container to container on the bridge (no NAT), egress masqueraded.
    run_web("web2", &["9091:80"]);
    let sb2 = sandbox_of("web2");
    let ip2 = ip_of("web2");
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9091")).as_deref(), Some("web2"));
    let seen = tcp_probe(sb1, Some(&sb2), ip2.parse().unwrap()).unwrap();
    assert_eq!(seen.ip().to_string(), ip1, "container to container");
    let seen = tcp_probe(sb1, ext().as_deref(), EXT_IP.parse().unwrap()).unwrap();
    assert_eq!(seen.ip().to_string(), HOST_EXT_IP, "egress is masqueraded");

    // Docker's own bridge publishes its way beside netnat's network.
    docker_ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "-p",
        "8080:80",
        IMAGE,
        "sh",
        "-c",
        "echo plain > /index.html && exec httpd -f -p 80 -h /",
    ]);
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:8080")).as_deref(), Some("plain"));
    assert_eq!(http_get(ext().as_deref(), &format!("{HOST_EXT_IP}:9090")).as_deref(), Some("web1"));

    let (code, out, err) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "netnat audit:\n{out}{err}");
    let metrics = ok(&["metrics"]);
    assert!(metrics.contains(ep1), "metrics do not name Docker's endpoint:\n{metrics}");
    // `save` leaves Docker's network and ports to Docker; `apply --prune` keeps them.
    let saved = ok(&["save"]);
    assert!(saved.contains(&format!("is docker's network {id}")) && !saved.contains("[[network]]"), "{saved}");
    std::fs::write("/run/empty.toml", "").unwrap();
    ok(&["apply", "--prune", "-f", "/run/empty.toml"]);
    assert_eq!(http_get(ext().as_deref(), &format!("{HOST_EXT_IP}:9091")).as_deref(), Some("web2"));
}

fn closes_ports_on_rm(ep1: &str) {
    docker_ok(&["rm", "-f", "web1"]);
    assert!(http_get(ext().as_deref(), &format!("{HOST_EXT_IP}:9090")).is_none());
    assert!(ls().iter().all(|v| v["container_id"] != ep1), "{:?}", ls());
    assert_eq!(listed(9091).len(), 2);
}

fn survives_a_dockerd_restart(dockerd: &mut Dockerd) {
    // dockerd restarts (its containers stop and start again): one mapping per port, no leftover.
    dockerd.restart();
    assert!(listed(9091).is_empty(), "a stopped container keeps its ports: {:?}", listed(9091));
    docker_ok(&["start", "web2"]);
    assert_eq!(listed(9091).len(), 2, "{:?}", listed(9091));
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9091")).as_deref(), Some("web2"));
    run_web("web3", &["9092:80"]);
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9092")).as_deref(), Some("web3"));
    assert_one_endpoint_per_container();
}

fn survives_a_plugin_restart(plugin: Plugin) -> Plugin {
    // The plugin restarts, now started by socket activation: its state is the record; requests
    // go on as before.
    drop(plugin);
    let plugin = Plugin::activated();
    docker_ok(&["stop", "-t", "1", "web2"]);
    assert!(listed(9091).is_empty());
    docker_ok(&["start", "web2"]);
    assert_eq!(listed(9091).len(), 2, "{:?}", listed(9091));
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9091")).as_deref(), Some("web2"));
    run_web("web4", &["9093:80"]);
    assert_eq!(http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:9093")).as_deref(), Some("web4"));
    assert_eq!(listed(9092).len(), 2);
    plugin
}

fn parallel_runs_get_their_own_ports() {
    // Four `docker run -p 80` at once: the requests queue on netnat's lock, and each container
    // gets its own ephemeral port.
    let runs: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let (name, script) =
                    (format!("par{i}"), format!("echo par{i} > /index.html && exec httpd -f -p 80 -h /"));
                docker_ok(&["run", "-d", "--name", &name, "--network", "dnet", "-p", "80", IMAGE, "sh", "-c", &script]);
            })
        })
        .collect();
    runs.into_iter().for_each(|t| t.join().unwrap());
    let mut ports = vec![];
    for i in 0..4 {
        let ep = endpoint_of(&format!("par{i}"));
        let mine: Vec<u64> = ls()
            .iter()
            .filter(|v| v["container_id"] == ep.as_str())
            .map(|v| v["host_port"].as_u64().unwrap())
            .collect();
        assert!(mine.len() == 2 && mine[0] == mine[1], "par{i}: {mine:?}");
        let got = http_get_settled(ext().as_deref(), &format!("{HOST_EXT_IP}:{}", mine[0]));
        assert_eq!(got, Some(format!("par{i}")));
        ports.push(mine[0]);
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "{ports:?}");
    assert_one_endpoint_per_container();
    let (code, out, err) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "netnat audit:\n{out}{err}");
}

fn leaves_nothing_behind() {
    // `docker network rm` leaves nothing of netnat's.
    docker_ok(&["rm", "-f", "web2", "web3", "web4", "plain", "par0", "par1", "par2", "par3"]);
    docker_ok(&["network", "rm", "dnet"]);
    assert_nothing_left();
    assert!(!sh("ip -o link show").contains(BRIDGE));
    let user = sh("iptables -S DOCKER-USER");
    assert!(!user.contains(BRIDGE) && !user.contains("netnat"), "DOCKER-USER keeps netnat's rules:\n{user}");

    // A network netnat does not know (its record was reset meanwhile) gets a clear error; Docker
    // can still remove it.
    docker_ok(&["network", "create", "-d", "netnat", "--subnet", "10.79.0.0/24", "dnet2"]);
    ok(&["reset"]);
    let err = docker_fails(&["run", "--rm", "--network", "dnet2", IMAGE, "true"]);
    assert!(err.contains("netnat has no network for Docker network"), "{err}");
    docker_ok(&["network", "rm", "dnet2"]);
    assert_nothing_left();
}
