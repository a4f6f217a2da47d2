//! Helpers for tests that need root and a real kernel, run in a throwaway network namespace.
#![allow(dead_code)] // each test file uses a different subset

use std::process::{Command, Output};

/// Set in the re-executed child to the parent's network namespace (e.g. "net:[4026531840]");
/// inner tests do nothing without it.
pub const INNER_ENV: &str = "NETNAT_INNER";

/// Upper bound for one isolated inner test, so a hang fails instead of blocking the run.
const TIMEOUT_SECS: &str = "120";

/// Runs the `#[ignore]`d test `inner_test_name` of this test binary inside a fresh
/// `unshare --net --mount` with a private tmpfs on /run, and fails if it fails.
/// unshare(CLONE_NEWNS) is refused in a multi-threaded process, hence the re-exec.
pub fn run_isolated(inner_test_name: &str) {
    let exe = std::env::current_exe().expect("path of the test binary");
    let out = Command::new("timeout")
        .args([TIMEOUT_SECS, "unshare", "--net", "--mount", "--propagation", "private"])
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
