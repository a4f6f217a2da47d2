//! Host firewalls started inside the test's own namespaces (recipes:
//! ../shared/notes/machine-facts.md): firewalld on a private system bus, ufw with private copies
//! of its files, dockerd with tmpfs data roots. Nothing of the machine's is touched: every file
//! they write is a private copy or a tmpfs in the test's mount namespace, and every process they
//! run is killed when its guard is dropped (and, should the test binary die first, by
//! PR_SET_PDEATHSIG).

use super::sh;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon killed (SIGTERM, then SIGKILL after 10 s) when dropped.
pub struct Daemon {
    pub name: &'static str,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `cmd args`, output to /run/NAME.log; killed with the test thread that started it.
    pub fn start(name: &'static str, cmd: &str, args: &[&str]) -> Daemon {
        let log = std::fs::File::create(format!("/run/{name}.log")).expect("daemon log");
        let mut c = Command::new(cmd);
        c.args(args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c.spawn().unwrap_or_else(|e| panic!("starting {cmd}: {e}"));
        Daemon { name, child: Some(child) }
    }

    /// SIGTERM, and waits (at most 10 s, then SIGKILL) until it has exited.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while c.try_wait().ok().flatten().is_none() {
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(format!("/run/{}.log", self.name)).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `ok` holds (every 100 ms, at most `secs`), else panics with `what`.
pub fn wait_until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < end, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn succeeds(script: &str) -> bool {
    Command::new("sh").args(["-c", script]).output().is_ok_and(|o| o.status.success())
}

/// A private copy of `path` (a directory, or a file) mounted over it.
pub fn private_copy(path: &str) {
    sh(&format!(
        "d=$(mktemp -d /run/copy.XXXXXX) && if [ -d {path} ]; then cp -a {path}/. $d/ && mount --bind $d {path}; \
         else cp -a {path} $d/f && mount --bind $d/f {path}; fi"
    ));
}

/// firewalld with its distribution defaults, on a private system bus.
pub struct Firewalld {
    bus: Daemon,
    pub daemon: Daemon,
}

impl Firewalld {
    pub fn start() -> Firewalld {
        private_copy("/etc/firewalld");
        sh("mount -t tmpfs tmpfs /var/log && mkdir -p /run/dbus");
        let bus = Daemon::start("dbus", "dbus-daemon", &["--system", "--nofork", "--nopidfile"]);
        wait_until(10, "the private system bus", || std::path::Path::new("/run/dbus/system_bus_socket").exists());
        let daemon = Firewalld::run();
        Firewalld { bus, daemon }
    }

    fn run() -> Daemon {
        let d = Daemon::start("firewalld", "firewalld", &["--nofork", "--nopid"]);
        wait_until(30, "firewalld running", || succeeds("firewall-cmd --state"));
        d
    }

    /// Stopped and started again: only its permanent configuration is left.
    pub fn restart(&mut self) {
        self.daemon.stop();
        self.daemon = Firewalld::run();
    }

    /// Runtime and permanent zones and policies.
    pub fn config() -> String {
        sh("firewall-cmd --list-all-zones; echo PERMANENT; firewall-cmd --permanent --list-all-zones; \
            firewall-cmd --list-all-policies; echo PERMANENT; firewall-cmd --permanent --list-all-policies")
    }

    pub fn bus(&self) -> &Daemon {
        &self.bus
    }
}

/// ufw enabled with the distribution's defaults (forward policy DROP), on private copies of its
/// files, setting no sysctl.
pub fn ufw_enable() {
    private_copy("/etc/ufw");
    private_copy("/lib/ufw");
    sh("f=$(mktemp /run/ufw-default.XXXXXX) && sed 's/^IPT_SYSCTL=.*/IPT_SYSCTL=\\/dev\\/null/' /etc/default/ufw > $f \
        && mount --bind $f /etc/default/ufw && grep -q ^IPT_SYSCTL=/dev/null /etc/default/ufw && ufw --force enable");
    // The first enable in a new namespace leaves ip6 ufw6-user-limit without its REJECT rule; its
    // own reload completes it. The state to compare with is ufw as it reloads itself.
    sh("ufw reload");
}

pub fn ufw_config() -> String {
    sh("ufw status verbose; ufw show added")
}

/// dockerd (and its containerd) with tmpfs data roots: its firewall layout, no containers.
pub struct Dockerd {
    containerd: Daemon,
    pub daemon: Option<Daemon>,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        sh("for d in /var/lib/docker /var/lib/containerd /etc/docker; do mount -t tmpfs tmpfs $d; done; ip link set lo up");
        let containerd = Daemon::start("containerd", "/usr/bin/containerd", &[]);
        wait_until(20, "containerd's socket", || std::path::Path::new("/run/containerd/containerd.sock").exists());
        let mut d = Dockerd { containerd, daemon: None };
        d.run();
        d
    }

    pub fn run(&mut self) {
        let _ = std::fs::remove_file("/run/docker.sock");
        self.daemon = Some(Daemon::start(
            "dockerd",
            // Debian's docker.io (another docker may be earlier on PATH on a developer's machine).
            "/usr/sbin/dockerd",
            &["--containerd=/run/containerd/containerd.sock", "--exec-opt", "native.cgroupdriver=cgroupfs"],
        ));
        wait_until(60, "dockerd ready", || succeeds("[ -S /run/docker.sock ] && iptables -S DOCKER-USER"));
        // It goes on arranging its chains (the FORWARD policy, DOCKER-USER's jump) a moment
        // longer: wait until two looks half a second apart agree.
        let mut last = String::new();
        wait_until(20, "dockerd's rules settling", || {
            std::thread::sleep(Duration::from_millis(500));
            let now = iptables_config();
            std::mem::replace(&mut last, now) == last
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    pub fn containerd(&self) -> &Daemon {
        &self.containerd
    }
}

/// `iptables-save` and `ip6tables-save` without counters and comments (what Docker and ufw hold).
pub fn iptables_config() -> String {
    sh("(iptables-save; ip6tables-save) | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'")
}
