//! A real dockerd inside a test's own namespaces (see ../shared/notes/machine-facts.md, "Docker
//! running containers"): dockerd refuses to start without a devices cgroup unless it believes
//! it runs in a user namespace, so the test runs in one whose maps are `0 0 65536` (root inside
//! is the machine's root, but the map is not the identity map), with its own network, mount and
//! PID namespaces; dockerd's data roots are tmpfs, containers run under crun without cgroups,
//! and the image is busybox-static imported as `localhost/bb:1`. Nothing of the machine's is
//! touched, and killing the test's PID namespace ends dockerd, containerd and the containers.
//!
//! Use: an outer `#[test]` calls `run_in_userns("inner_name", secs)`; the `#[ignore]`d inner test
//! checks `common::inner()`, then `Dockerd::start()`.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Docker CLI of Debian's docker.io (another `docker` may come first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// The image every container runs: busybox-static with its applet links, `CMD ["/bin/sh"]`.
pub const IMAGE: &str = "localhost/bb:1";

/// Runs the `#[ignore]`d test `inner` of this test binary in a new user namespace (uid and gid
/// maps `0 0 65536`) with new network, mount and PID namespaces and a tmpfs on /run, bounded by
/// `timeout_secs`; fails if it fails. A forked child unshares the user namespace (the parent,
/// multi-threaded, cannot) and waits until the parent has written its maps, then execs
/// `unshare` for the rest.
pub fn run_in_userns(inner: &str, timeout_secs: u32) {
    let exe = std::env::current_exe().expect("path of the test binary");
    let log = tempfile_path(inner);
    let args: Vec<String> = [
        "timeout",
        &timeout_secs.to_string(),
        "unshare",
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount -t tmpfs tmpfs /run && exec "$0" "$@""#,
        exe.to_str().expect("a UTF-8 path"),
        "--exact",
        inner,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let own = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns").to_string_lossy().into_owned();
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("{}={own}", super::INNER_ENV));
    let status = fork_in_userns(&args, &env, &log);
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status == 0, "isolated test {inner} failed (status {status}):\n{out}");
    assert!(out.contains("1 passed"), "isolated test {inner} did not run:\n{out}");
}

fn tempfile_path(inner: &str) -> PathBuf {
    std::env::temp_dir().join(format!("netnat-{inner}-{}.log", std::process::id()))
}

/// fork; the child: unshare(CLONE_NEWUSER), tell the parent, wait for its maps, exec `args`
/// with `env`, output to `log`. The parent writes the maps and waits for the child's status.
fn fork_in_userns(args: &[String], env: &[String], log: &Path) -> i32 {
    use std::os::fd::AsRawFd;
    let cargs: Vec<CString> = args.iter().map(|a| CString::new(a.as_str()).unwrap()).collect();
    let cenv: Vec<CString> = env.iter().filter_map(|e| CString::new(e.as_str()).ok()).collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let prog = CString::new("/usr/bin/timeout").unwrap();
    let out = std::fs::File::create(log).expect("creating the test's log");
    let (mut ready, mut go) = ([0i32; 2], [0i32; 2]);
    // SAFETY: plain pipe(2) calls on arrays of two ints.
    assert!(unsafe { libc::pipe(ready.as_mut_ptr()) == 0 && libc::pipe(go.as_mut_ptr()) == 0 });
    // SAFETY: after fork the child only makes async-signal-safe system calls (unshare, write,
    // read, dup2, execve, _exit) on values prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: see above; the child never returns from this block.
        unsafe {
            let mut b = [0u8; 1];
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(90);
            }
            libc::write(ready[1], b.as_ptr().cast(), 1);
            if libc::read(go[0], b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(91);
            }
            libc::dup2(out.as_raw_fd(), 1);
            libc::dup2(out.as_raw_fd(), 2);
            libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(92);
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into a valid buffer from the pipe made above.
    let n = unsafe { libc::read(ready[0], b.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 1, "the child did not make its user namespace");
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), "0 0 65536\n").unwrap_or_else(|e| panic!("writing {f}: {e}"));
    }
    // SAFETY: writes one byte from a valid buffer to the pipe made above; waitpid on our child.
    unsafe {
        libc::write(go[1], b.as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        for fd in ready.into_iter().chain(go) {
            libc::close(fd);
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }
}

/// The test's scratch directory for dockerd (its runtime wrapper, the image's files, TMPDIR).
pub const DOCKER_SCRATCH: &str = "/run/docker-scratch";

/// A dockerd of the test's own, with its containerd; killed when dropped.
pub struct Dockerd {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Dockerd {
    /// Mounts dockerd's private places, starts it, waits until it answers (at most 30 s) and
    /// imports the busybox image. Only inside `run_in_userns`.
    pub fn start() -> Dockerd {
        super::sh(
            // Not /tmp: the checkout (and the netnat under test) may live there. The test's scratch
            // files go to DOCKER_SCRATCH, under the test's own tmpfs /run.
            &format!(
                "set -e; for d in /var/lib/docker /var/lib/containerd /etc/docker /var/log; do \
                   mkdir -p $d; mount -t tmpfs tmpfs $d; done; mkdir -p {DOCKER_SCRATCH}; \
                 mount -t sysfs sysfs /sys; mount -t tmpfs tmpfs /sys/fs/cgroup; ip link set lo up; \
                 printf '#!/bin/sh\\nexec /usr/bin/crun --cgroup-manager=disabled \"$@\"\\n' > {DOCKER_SCRATCH}/crun-nocg; \
                 chmod +x {DOCKER_SCRATCH}/crun-nocg"
            ),
        );
        let mut d = Dockerd { child: None, log: PathBuf::from("/var/log/dockerd.log") };
        d.launch();
        super::sh(&format!(
            "set -e; b={DOCKER_SCRATCH}/bb; mkdir -p $b/bin; cp /usr/bin/busybox $b/bin/; \
             for a in $($b/bin/busybox --list); do [ -e $b/bin/$a ] || ln -s busybox $b/bin/$a; done; \
             tar -C $b -c . | {DOCKER} import -c 'CMD [\"/bin/sh\"]' - {IMAGE} >/dev/null"
        ));
        d
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("dockerd's log");
        let child = Command::new("dockerd")
            .args(["--storage-driver", "vfs", "--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--default-cgroupns-mode", "host", "--add-runtime"])
            .arg(format!("crun-nocg={DOCKER_SCRATCH}/crun-nocg"))
            .env("TMPDIR", DOCKER_SCRATCH)
            .args(["--default-runtime", "crun-nocg"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        while !docker(&["info"]).status.success() {
            assert!(Instant::now() < end, "dockerd did not answer within 30 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops dockerd as `systemctl stop docker` does (SIGTERM: it stops the containers) and
    /// starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > end {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the Docker CLI.
pub fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER).args(args).stdin(Stdio::null()).output().expect("running docker")
}

/// Runs the Docker CLI, asserts success, returns stdout trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the Docker CLI, asserts failure, returns stderr.
pub fn docker_fails(args: &[&str]) -> String {
    let out = docker(args);
    assert!(!out.status.success(), "docker {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A container's network namespace (Docker's SandboxKey), to run servers and clients in.
pub fn sandbox_of(container: &str) -> PathBuf {
    PathBuf::from(docker_ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", container]))
}
