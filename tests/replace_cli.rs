//! A published host port switched to another container in one transaction (issue 23):
//! `netnat publish --replace`, and a changed target in an `apply` file. Connections established
//! before keep talking to the old container until they end; new ones reach the new container;
//! UDP flows move at once. Real connections from an "external host" namespace.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP server in namespace `netns` that keeps every connection open and answers each line with
/// its `name`, until dropped (60 s at most).
struct LineServer {
    stop: Arc<AtomicBool>,
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn line_server(netns: &str, addr: &str, name: &str) -> LineServer {
    let addr: SocketAddr = addr.parse().unwrap();
    let l = in_netns(&ns(netns), move || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (s, name) = (stop.clone(), name.to_string());
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while !s.load(Ordering::SeqCst) && Instant::now() < end {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let name = name.clone();
            std::thread::spawn(move || {
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut w = c.try_clone().unwrap();
                for line in BufReader::new(c).lines() {
                    if line.is_err() || writeln!(w, "{name}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    LineServer { stop }
}

/// A connection from the external host to host port `port`.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

fn connect(port: u16) -> Client {
    let dst: SocketAddr = format!("{HOST_EXT_IP}:{port}").parse().unwrap();
    let stream = in_netns(&ns("ext"), move || TcpStream::connect_timeout(&dst, Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    Client { reader: BufReader::new(stream.try_clone().unwrap()), stream }
}

impl Client {
    /// Who answers on this connection.
    fn ask(&mut self) -> String {
        writeln!(self.stream, "who").unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap_or_else(|e| panic!("no answer on the held connection: {e}"));
        line.trim().to_string()
    }
}

/// `ls --json`'s row of host port `port` (TCP).
fn ls_row(port: u16) -> Value {
    let ls: Vec<Value> = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    ls.into_iter().find(|r| r["host_port"] == port && r["protocol"] == "tcp").expect("the port is listed")
}

/// Waits (5 s at most) until `ls` shows no connection draining on host port `port`.
fn wait_drained(port: u16) {
    let end = Instant::now() + Duration::from_secs(5);
    while ls_row(port).get("draining").is_some() {
        assert!(Instant::now() < end, "still draining 5 s after the connection closed: {}", ls_row(port));
        std::thread::sleep(Duration::from_millis(100));
    }
}

isolated!(publish_replace_switches_a_port_and_drains_the_old_target, inner_publish_replace, {
    make_external_host();
    seed_topology();
    let _a = line_server("Container_ns1", "172.16.1.1:8080", "ns1");
    let _b = line_server("Container_ns2", "172.16.1.2:8080", "ns2");
    let _ua = udp_server(Some(&ns("Container_ns1")), "172.16.1.1:53", "ns1");
    let _ub = udp_server(Some(&ns("Container_ns2")), "172.16.1.2:53", "ns2");
    ok(&["publish", "9090:172.16.1.1:8080", "5353:172.16.1.1:53/udp"]);
    let mut held = connect(9090);
    assert_eq!(held.ask(), "ns1");
    // A UDP client that keeps its source port, as a flow.
    let udp = || udp_get(Some(&ns("ext")), "198.51.100.2:40000", "198.51.100.1:5353");
    assert_eq!(udp().unwrap(), "ns1 saw 198.51.100.2");

    // Without --replace the taken port is refused, naming --replace; nothing changes.
    let before = kernel_snapshot();
    let err = fails(&["publish", "9090:172.16.1.2:8080"], 1);
    assert!(err.contains("--replace") && err.contains("9090:172.16.1.1:8080"), "{err}");
    assert_eq!(kernel_snapshot(), before);

    // With it: one transaction switches both ports.
    let out = ok(&["publish", "--replace", "9090:172.16.1.2:8080", "5353:172.16.1.2:53/udp"]);
    assert!(
        out.contains("switched host port 9090/tcp from 9090:172.16.1.1:8080/tcp to 9090:172.16.1.2:8080/tcp"),
        "{out}"
    );
    // The held connection still talks to the old container; a new one reaches the new one; the
    // UDP flow moved at once (its conntrack entry was dropped).
    assert_eq!(held.ask(), "ns1");
    assert_eq!(connect(9090).ask(), "ns2");
    assert_eq!(udp().unwrap(), "ns2 saw 198.51.100.2");
    assert_eq!(held.ask(), "ns1", "the held connection moved");
    // ls shows the connection draining on the old target.
    let row = ls_row(9090);
    assert_eq!(row["container_ip"], "172.16.1.2");
    assert_eq!(
        row["draining"],
        serde_json::json!([{"container_ip": "172.16.1.1", "container_port": 8080, "connections": 1}])
    );
    let ls = ok(&["ls"]);
    assert!(ls.contains("draining: 1 connection(s) still on 172.16.1.1:8080"), "{ls}");
    // Once it ends, nothing drains.
    drop(held);
    wait_drained(9090);
    assert!(!ok(&["ls"]).contains("draining"));

    // apply: a file that gives host port 9191 another target switches it the same way.
    let file = |ns1_ports: &str, ns2_ports: &str| {
        let text = format!(
            "[[network]]\nname = \"MyDocker0\"\nsubnet = \"172.16.0.0/16\"\ngateway = \"172.16.1.254\"\n\
             [[sandbox]]\nname = \"Container_ns1\"\n[[sandbox.endpoint]]\nnetwork = \"MyDocker0\"\nip = \"172.16.1.1\"\npublish = [{ns1_ports}]\n\
             [[sandbox]]\nname = \"Container_ns2\"\n[[sandbox.endpoint]]\nnetwork = \"MyDocker0\"\nip = \"172.16.1.2\"\npublish = [{ns2_ports}]\n"
        );
        let path = std::env::temp_dir().join("netnat-replace.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    ok(&["apply", "--prune", "-f", &file("\"9191:172.16.1.1:8080\"", "")]);
    let mut held = connect(9191);
    assert_eq!(held.ask(), "ns1");
    ok(&["apply", "--prune", "-f", &file("", "\"9191:172.16.1.2:8080\"")]);
    assert_eq!(held.ask(), "ns1", "apply cut the established connection");
    assert_eq!(connect(9191).ask(), "ns2");
    assert_eq!(ls_row(9191)["draining"][0]["container_ip"], "172.16.1.1");
    drop(held);
    wait_drained(9191);
});
