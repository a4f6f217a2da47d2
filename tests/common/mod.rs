//! Helpers for tests that need root and a real kernel, run in a throwaway network namespace.
#![allow(dead_code)] // each test file uses a different subset

pub mod docker;
pub mod hostfw;
pub mod raw;

use std::process::{Command, Output};

/// Defines a test pair: the outer `#[test]` re-executes this test binary to run `$inner` inside a
/// throwaway network + mount namespace (`run_isolated`); `$inner` does the work there, and
/// nothing anywhere else.
#[macro_export]
macro_rules! isolated {
    ($outer:ident, $inner:ident, $body:block) => {
        $crate::isolated!($outer, $inner, timeout = $crate::common::TIMEOUT_SECS, $body);
    };
    // A longer bound, for a test whose load is bounded in count and needs more than the default.
    ($outer:ident, $inner:ident, timeout = $secs:expr, $body:block) => {
        #[test]
        fn $outer() {
            $crate::common::run_isolated_for(stringify!($inner), $secs);
        }

        #[test]
        #[ignore = "runs through its outer test, inside a throwaway namespace"]
        fn $inner() {
            if !$crate::common::inner() {
                return;
            }
            $body
        }
    };
}

/// Set in the re-executed child to the parent's network namespace (e.g. "net:[4026531840]");
/// inner tests do nothing without it.
pub const INNER_ENV: &str = "NETNAT_INNER";

/// Upper bound for one isolated inner test, so a hang fails instead of blocking the run.
pub const TIMEOUT_SECS: u32 = 120;

/// Runs the `#[ignore]`d test `inner_test_name` of this test binary inside a fresh
/// `unshare --net --mount` with a private tmpfs on /run, and fails if it fails.
/// unshare(CLONE_NEWNS) is refused in a multi-threaded process, hence the re-exec.
pub fn run_isolated(inner_test_name: &str) {
    run_isolated_for(inner_test_name, TIMEOUT_SECS)
}

/// `run_isolated` with its own bound in seconds.
pub fn run_isolated_for(inner_test_name: &str, timeout_secs: u32) {
    let exe = std::env::current_exe().expect("path of the test binary");
    let out = Command::new("timeout")
        .arg(timeout_secs.to_string())
        .args(["unshare", "--net", "--mount", "--propagation", "private"])
        .args(["sh", "-c", r#"mount -t tmpfs tmpfs /run && exec "$0" "$@""#])
        .arg(&exe)
        .args(["--exact", inner_test_name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, own_netns())
        .output()
        .expect("running unshare (needs root and util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "isolated test {inner_test_name} failed ({}):\n{stdout}\n{stderr}", out.status);
    // Guard against a typo in the name: libtest exits 0 when no test matches.
    assert!(stdout.contains("1 passed"), "isolated test {inner_test_name} did not run:\n{stdout}\n{stderr}");
}

/// True in the isolated child. Also checks that it really is in another network namespace
/// than the test runner that started it.
pub fn inner() -> bool {
    let Some(parent) = std::env::var_os(INNER_ENV) else {
        return false;
    };
    assert_ne!(parent.to_string_lossy(), own_netns(), "refusing to run: still in the test runner's network namespace");
    true
}

fn own_netns() -> String {
    let link = std::fs::read_link("/proc/thread-self/ns/net").expect("reading own netns link");
    link.to_string_lossy().into_owned()
}

/// Runs a command (bounded by its own options, e.g. ping -W) and returns its output.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
pub fn stdout(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a fresh thread that has joined the network namespace at `path`, so the caller's
/// thread never changes namespace. Sockets created in `f` stay in that namespace.
pub fn in_netns<T: Send + 'static>(path: &std::path::Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {path:?}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: plain syscall on a valid fd; only this short-lived thread moves.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread inside the namespace panicked")
}

/// Opens a TCP connection from namespace `from` to a listener bound in namespace `to` at `dst`
/// (`to == None`: the current namespace). Returns the source address the listener saw.
/// Bounded: 2 s connect timeout; the accept finds the connection already queued.
pub fn tcp_probe(
    from: &std::path::Path,
    to: Option<&std::path::Path>,
    dst: std::net::Ipv4Addr,
) -> std::io::Result<std::net::SocketAddr> {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    let bind = move || TcpListener::bind((dst, 0));
    let listener = match to {
        Some(p) => in_netns(p, bind)?,
        None => bind()?,
    };
    let target: SocketAddr = listener.local_addr()?;
    let stream = in_netns(from, move || TcpStream::connect_timeout(&target, std::time::Duration::from_secs(2)))?;
    let (_conn, seen) = listener.accept()?;
    drop(stream);
    Ok(seen)
}

// ---- the netnat binary and traffic between namespaces (used by the CLI tests) ----

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NETNAT: &str = env!("CARGO_BIN_EXE_netnat");

/// Runs netnat with `args` (its state under the test's private /run).
pub fn netnat(args: &[&str]) -> Output {
    Command::new(NETNAT).args(args).output().expect("running netnat")
}

/// Runs netnat, asserts exit 0, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = netnat(args);
    assert!(
        out.status.success(),
        "netnat {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs netnat, asserts the exit status, returns stderr.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = netnat(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "netnat {args:?}: expected exit {code}; stderr: {stderr}");
    stderr
}

pub fn ns(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// The "external host" namespace (`make_external_host`), as the `netns` argument of the probes.
pub fn ext() -> Option<PathBuf> {
    Some(ns("ext"))
}

/// The seed's first container (`seed_topology`).
pub fn ns1() -> Option<PathBuf> {
    Some(ns("Container_ns1"))
}

/// The seed's second container.
pub fn ns2() -> Option<PathBuf> {
    Some(ns("Container_ns2"))
}

/// The repository's root (the crate's manifest directory).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `sh -c script` and asserts it succeeds (test set-up with ip/nft, never product code).
pub fn sh(script: &str) -> String {
    let out = run("sh", &["-c", script]);
    assert!(out.status.success(), "`{script}` failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft list SCRIPT` with the per-element counters left out (`tcp . 9090 counter packets 1 bytes
/// 60 : ...` reads `tcp . 9090 : ...`): what a test compares is the element, not its traffic.
/// Empty when there is no such object.
pub fn nft_list(what: &str) -> String {
    let text = sh(&format!("nft list {what} 2>/dev/null || true"));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(" counter packets ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " counter packets ".len()..];
        // "N bytes M": skip the two numbers and the word between them.
        let mut words = after.splitn(4, ' ');
        let (_, _, _) = (words.next(), words.next(), words.next());
        rest = words.next().map_or("", |r| r);
        out.push(' ');
    }
    out.push_str(rest);
    out
}

/// The kernel state a test may compare before/after: nft ruleset, links (names, kinds, masters,
/// admin state), IPv4 and global IPv6 addresses, routes of both families, namespaces.
/// Carrier/operational state and IPv6 link-local addresses and routes are left out: the kernel
/// changes them on its own after a link comes up.
pub fn kernel_snapshot() -> String {
    sh("nft list ruleset; ip -o link show | sed -E 's/ state [A-Z]+//; s/,?(LOWER_UP|NO-CARRIER|M-DOWN)//g; s/ qlen.*//'; \
        ip -o -4 addr show; ip -o -6 addr show scope global | sed -E 's/valid_lft.*//'; ip route show; \
        ip -6 route show | grep -v '^fe80\\|^multicast\\|^ff00' | sed -E 's/ expires [0-9]+sec//'; \
        ls /run/netns 2>/dev/null || true")
}

/// An "external host": namespace `ext` linked to the test's host namespace by a veth,
/// host side 198.51.100.1/24 (veth-ext), external side 198.51.100.2/24.
pub const HOST_EXT_IP: &str = "198.51.100.1";
pub const EXT_IP: &str = "198.51.100.2";
pub fn make_external_host() {
    sh("ip link set lo up; ip netns add ext && ip link add veth-ext type veth peer name eth0 netns ext \
        && ip addr add 198.51.100.1/24 dev veth-ext && ip link set veth-ext up \
        && ip -n ext addr add 198.51.100.2/24 dev eth0 && ip -n ext link set eth0 up && ip -n ext link set lo up");
}

/// A TCP or UDP server on a thread inside a namespace (None: the current one). Each request gets
/// `"<name> saw <peer address>"`. Stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter(netns: Option<&Path>) {
    use std::os::fd::AsRawFd;
    if let Some(p) = netns {
        let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("opening {p:?}: {e}"));
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {p:?}: {}", std::io::Error::last_os_error());
    }
}

/// Serves TCP at `addr` in `netns` until dropped (at most 120 s).
pub fn tcp_server(netns: Option<&Path>, addr: &str, name: &str) -> Server {
    let (netns, addr, name) = (netns.map(Path::to_path_buf), addr.parse::<SocketAddr>().unwrap(), name.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        enter(netns.as_deref());
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            match l.accept() {
                Ok((mut c, peer)) => {
                    use std::io::Write;
                    let _ = c.set_nonblocking(false);
                    let _ = c.write_all(format!("{name} saw {}", peer.ip()).as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
    Server { stop, thread: Some(thread) }
}

/// Serves UDP at `addr` in `netns` until dropped (at most 120 s).
pub fn udp_server(netns: Option<&Path>, addr: &str, name: &str) -> Server {
    let (netns, addr, name) = (netns.map(Path::to_path_buf), addr.parse::<SocketAddr>().unwrap(), name.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        enter(netns.as_deref());
        let u = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("binding udp {addr}: {e}"));
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 1500];
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            if let Ok((_, peer)) = u.recv_from(&mut buf) {
                let _ = u.send_to(format!("{name} saw {}", peer.ip()).as_bytes(), peer);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
    Server { stop, thread: Some(thread) }
}

/// One TCP request from `netns` to `dst`: the server's answer, or the error (2 s timeouts).
pub fn tcp_get(netns: Option<&Path>, dst: &str) -> Result<String, String> {
    let (netns, dst) = (netns.map(Path::to_path_buf), dst.parse::<SocketAddr>().unwrap());
    std::thread::spawn(move || {
        use std::io::Read;
        enter(netns.as_deref());
        let mut c =
            TcpStream::connect_timeout(&dst, Duration::from_secs(2)).map_err(|e| format!("connect {dst}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).map_err(|e| format!("read from {dst}: {e}"))?;
        Ok(s)
    })
    .join()
    .unwrap()
}

/// One UDP request from `netns` (from `src`, e.g. "0.0.0.0:0") to `dst`; 1 s timeout.
pub fn udp_get(netns: Option<&Path>, src: &str, dst: &str) -> Result<String, String> {
    let (netns, src, dst) = (netns.map(Path::to_path_buf), src.to_string(), dst.parse::<SocketAddr>().unwrap());
    std::thread::spawn(move || {
        enter(netns.as_deref());
        let u = UdpSocket::bind(&src).map_err(|e| format!("bind {src}: {e}"))?;
        u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        u.send_to(b"ping", dst).map_err(|e| format!("send to {dst}: {e}"))?;
        let mut buf = [0u8; 1500];
        let (n, _) = u.recv_from(&mut buf).map_err(|e| format!("recv from {dst}: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .join()
    .unwrap()
}

/// The seed's topology: MyDocker0 172.16.0.0/16 gw 172.16.1.254, Container_ns1 172.16.1.1,
/// Container_ns2 172.16.1.2.
pub fn seed_topology() {
    seed_topology_with(&[]);
}

/// `seed_topology` with more options for `network create` (e.g. `--host-firewall off`).
pub fn seed_topology_with(options: &[&str]) {
    let mut create = vec!["network", "create", "MyDocker0", "--subnet", "172.16.0.0/16", "--gateway", "172.16.1.254"];
    create.extend_from_slice(options);
    ok(&create);
    ok(&["sandbox", "create", "Container_ns1", "--network", "MyDocker0", "--ip", "172.16.1.1"]);
    ok(&["sandbox", "create", "Container_ns2", "--network", "MyDocker0", "--ip", "172.16.1.2"]);
}

/// `kernel_snapshot()` once the kernel has stopped changing on its own (IPv6 duplicate address
/// detection and carrier states settle within seconds of links coming up). At most 20 s.
pub fn settled_snapshot() -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let a = kernel_snapshot();
        if !a.contains("tentative") {
            std::thread::sleep(Duration::from_millis(300));
            if a == kernel_snapshot() {
                return a;
            }
        }
        assert!(Instant::now() < end, "kernel state did not settle within 20 s:\n{a}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- IPv6 (documentation prefix between host and "external host", ULA for networks) ----

/// The external host over IPv6 too: host side 2001:db8:1::1/64, `ext` side 2001:db8:1::2/64
/// (nodad: usable at once), and `ext`'s default IPv6 route via the host.
pub const HOST_EXT_IP6: &str = "2001:db8:1::1";
pub const EXT_IP6: &str = "2001:db8:1::2";
pub fn make_external_host_v6() {
    make_external_host();
    sh("ip addr add 2001:db8:1::1/64 dev veth-ext nodad && ip -n ext addr add 2001:db8:1::2/64 dev eth0 nodad \
        && ip -n ext -6 route add default via 2001:db8:1::1");
}

/// The seed's topology, dual stack: MyDocker0 also has fd00:16::/64 (gateway fd00:16::1),
/// Container_ns1 fd00:16::2, Container_ns2 fd00:16::3.
pub fn seed_topology_v6() {
    ok(&[
        "network",
        "create",
        "MyDocker0",
        "--subnet",
        "172.16.0.0/16",
        "--gateway",
        "172.16.1.254",
        "--subnet",
        "fd00:16::/64",
    ]);
    ok(&["sandbox", "create", "Container_ns1", "--network", "MyDocker0", "--ip", "172.16.1.1", "--ip", "fd00:16::2"]);
    ok(&["sandbox", "create", "Container_ns2", "--network", "MyDocker0", "--ip", "172.16.1.2", "--ip", "fd00:16::3"]);
}

/// `tcp_get` that retries for up to 3 s: the first packets through a link that has just come up
/// can be refused (IPv6 neighbour discovery, bridge ports learning), later ones go through.
pub fn tcp_get_settled(netns: Option<&Path>, dst: &str) -> Result<String, String> {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        match tcp_get(netns, dst) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The seed topology with ports published and answering: the external host, MyDocker0 with
/// Container_ns1 (server "ns1" on 172.16.1.1:8080, published as host port 9090) and
/// Container_ns2 (server "ns2" on 172.16.1.2:20005, in the published range 20000-20999).
/// Keep the servers alive for as long as the ports should answer. Makes the external host
/// unless it exists.
pub fn seed_with_published_ports() -> Vec<Server> {
    if !ns("ext").exists() {
        make_external_host();
    }
    seed_topology();
    ok(&["publish", "9090:172.16.1.1:8080", "20000-20999:172.16.1.2:20000-20999"]);
    let servers = vec![
        tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1"),
        tcp_server(Some(&ns("Container_ns2")), "172.16.1.2:20005", "ns2"),
    ];
    assert_published(9090, "ns1");
    assert_published(20005, "ns2");
    servers
}

/// A request from the external host to host port `port` gets the answer of server `name`,
/// which sees the external host's own address.
pub fn assert_published(port: u16, name: &str) {
    let got =
        tcp_get(Some(&ns("ext")), &format!("{HOST_EXT_IP}:{port}")).unwrap_or_else(|e| panic!("port {port}: {e}"));
    assert_eq!(got, format!("{name} saw {EXT_IP}"), "port {port}");
}

/// Runs netnat and returns (exit code, stdout, stderr), asserting nothing.
pub fn netnat_out(args: &[&str]) -> (i32, String, String) {
    let out = netnat(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// netnat's record (under /run/netnat) as one JSON value: state.json, and from format 3 on each
/// attachment file under `attachments/` joined in as `attachments` by key (as format 2 held
/// them inside state.json). `{}` when there is no record.
pub fn record() -> serde_json::Value {
    let dir = Path::new("/run/netnat");
    let mut v: serde_json::Value = std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    let mut atts = serde_json::Map::new();
    for e in std::fs::read_dir(dir.join("attachments")).into_iter().flatten().flatten() {
        let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        let key = format!(
            "{}/{}/{}",
            a["network"].as_str().unwrap(),
            a["container_id"].as_str().unwrap(),
            a["ifname"].as_str().unwrap()
        );
        atts.insert(key, a);
    }
    if !atts.is_empty() {
        v["attachments"] = serde_json::Value::Object(atts);
    }
    v
}

/// `record()` as pretty text (what `cat state.json` gave before the record was split in files).
pub fn record_text() -> String {
    serde_json::to_string_pretty(&record()).unwrap()
}
