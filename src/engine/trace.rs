//! `netnat trace`: marks the packets of one port for nftables tracing with four chains in
//! netnat's own table (`crate::trace`), listens to the kernel's trace events, and removes the
//! chains when it ends: after `count` packets, at the timeout, on SIGINT, SIGTERM or SIGHUP, or
//! when the output goes away.
//!
//! Chains left behind by a trace that was killed (SIGKILL, a crash) are found by the trace lock:
//! a running trace holds an open-file-description lock on `trace.lock` in the state directory,
//! which the kernel releases when the process dies. The next netnat command that saves the
//! record (`Engine::save`) removes the chains of a trace whose lock is free, and `netnat audit`
//! reports them meanwhile (`trace.leftover`). Adding the chains and removing them happen under
//! netnat's main lock, so a command never removes the chains of a trace that is starting.

use super::require_net_admin;
use super::seam::{Firewall, Kernel};
use crate::model::InputError;
use crate::nft::monitor::{Received, TraceListener};
use crate::ruleset::{render_rule, NftOp, FAMILY_NAME, TABLE};
use crate::state::{Record, Store};
use crate::trace::{self, Catalog, Collector, ConnectionReport, PacketReport, TraceSpec, TRACE_CHAINS};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The trace lock's file in the state directory.
pub const LOCK_FILE: &str = "trace.lock";
/// A packet is complete when no event of it came for this long (its events come in one burst,
/// hook after hook, within microseconds).
const QUIET: Duration = Duration::from_millis(150);
/// The catalog of chains and rules is read again at most this often, when an event names a
/// rule or interface made after it was read.
const REFRESH: Duration = Duration::from_millis(500);
/// A day: a trace is a diagnosis, not a monitor.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub spec: TraceSpec,
    /// Stop after this many packets (both directions counted).
    pub count: usize,
    pub timeout: Duration,
}

/// Why the trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// `count` packets were traced.
    Count,
    Timeout,
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
    /// The output could not be written any more (e.g. a closed pipe).
    Output,
}

/// What the trace marks, told before the first packet.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// `tcp port 9090 on every local address`.
    pub target: String,
    /// The marking rules, in nft syntax.
    pub rules: Vec<String>,
    /// What netnat's record publishes on the traced port (`9090:172.16.1.1:8080/tcp (network MyDocker0)`).
    pub published: Vec<String>,
    /// Set when the record could not be read (the trace runs anyway).
    pub record_unreadable: Option<String>,
}

/// What the trace saw.
#[derive(Debug, Clone, Serialize)]
pub struct Traced {
    #[serde(flatten)]
    pub started: Started,
    pub stopped_by: Stop,
    pub packets: Vec<PacketReport>,
    /// One per connection, in order of its first packet.
    pub connections: Vec<ConnectionReport>,
    /// Whether the kernel reported conntrack ids (Linux 6.14 and later): connections are then
    /// grouped by them, else by address and port.
    pub conntrack_info: bool,
    /// Events of packets netnat did not mark (another tracer's) or beyond `count`.
    pub ignored_events: u64,
    /// Times the kernel dropped events because they came faster than they were read.
    pub overruns: u64,
    /// Messages that were trace events but could not be decoded.
    pub undecodable: Vec<String>,
}

/// Gets the trace's progress as it happens; `false` ends the trace (the output went away).
pub trait Observer {
    fn started(&mut self, s: &Started) -> bool;
    fn packet(&mut self, p: &PacketReport) -> bool;
}

/// Runs one trace from start to end; the chains are removed however it ends.
pub fn trace(dir: &Path, o: &TraceOptions, obs: &mut dyn Observer) -> Result<Traced> {
    if o.count == 0 {
        return Err(InputError("--count 0: trace at least one packet".into()).into());
    }
    if o.timeout.is_zero() || o.timeout > MAX_TIMEOUT {
        return Err(InputError(format!(
            "--timeout {}: trace for 1 to {} seconds",
            o.timeout.as_secs(),
            MAX_TIMEOUT.as_secs()
        ))
        .into());
    }
    require_net_admin()?;
    // Subscribed before anything is marked: no event is missed.
    let mut listener = TraceListener::open()?;
    let signals = Signals::catch();
    let (mut active, started) = Active::start(dir, &o.spec, Kernel::netlink()?)?;
    let result = watch(&mut listener, o, &started, obs, &mut active.kernel);
    drop(signals);
    let stopped = active.stop();
    let mut traced = result?;
    stopped.context("removing netnat trace's chains (the next netnat command that saves its record retries)")?;
    traced.started = started;
    Ok(traced)
}

fn watch(
    listener: &mut TraceListener,
    o: &TraceOptions,
    started: &Started,
    obs: &mut dyn Observer,
    kernel: &mut Kernel,
) -> Result<Traced> {
    let mut catalog = read_catalog(kernel)?;
    let mut refreshed = Instant::now();
    let mut out = Traced {
        started: started.clone(),
        stopped_by: Stop::Timeout,
        packets: vec![],
        connections: vec![],
        conntrack_info: false,
        ignored_events: 0,
        overruns: 0,
        undecodable: vec![],
    };
    let mut collector = Collector::new(o.count);
    if !obs.started(started) {
        out.stopped_by = Stop::Output;
        return Ok(out);
    }
    let begin = Instant::now();
    let deadline = begin + o.timeout;
    let ms = |t: Instant| t.duration_since(begin).as_millis() as u64;
    loop {
        if STOP.load(Ordering::SeqCst) {
            out.stopped_by = Stop::Signal;
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            out.stopped_by = Stop::Timeout;
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(50)).as_millis().max(1) as i32;
        let mut events = vec![];
        match listener.receive(wait, &mut |m| match trace::parse_event(m) {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => {}
            Err(e) => out.undecodable.push(e),
        })? {
            Received::Overrun => out.overruns += 1,
            Received::Interrupted | Received::Messages(_) => {}
        }
        let at = ms(Instant::now());
        for ev in events {
            if catalog.is_stale_for(&ev) && refreshed.elapsed() >= REFRESH {
                catalog = read_catalog(kernel)?;
                refreshed = Instant::now();
            }
            collector.push(ev, at, &catalog);
        }
        for i in collector.settle(ms(Instant::now()), QUIET.as_millis() as u64) {
            let p = collector.report(i, &catalog);
            let keep_going = obs.packet(&p);
            out.packets.push(p);
            if !keep_going {
                out.stopped_by = Stop::Output;
                return Ok(finish(out, collector));
            }
        }
        if collector.full() {
            out.stopped_by = Stop::Count;
            break;
        }
    }
    for i in collector.finish() {
        let p = collector.report(i, &catalog);
        let keep_going = obs.packet(&p);
        out.packets.push(p);
        if !keep_going {
            out.stopped_by = Stop::Output;
            break;
        }
    }
    Ok(finish(out, collector))
}

fn finish(mut out: Traced, collector: Collector) -> Traced {
    out.packets.sort_by_key(|p| p.number);
    out.connections = trace::connections(&out.packets);
    out.conntrack_info = collector.has_conntrack_info();
    out.ignored_events = collector.ignored;
    out
}

/// Every chain and rule of every table, and the interface names.
fn read_catalog(kernel: &mut Kernel) -> Result<Catalog> {
    let (chains, rules) = kernel.firewall.read_others()?;
    let ifnames = kernel.links.links()?.into_iter().map(|l| (l.index, l.name)).collect();
    Ok(Catalog { chains, rules, ifnames })
}

// ---- the chains in the kernel, and the lock that says a trace is running ----

/// A running trace's chains and lock; removed on `stop`, or on drop (a panic).
struct Active {
    dir: PathBuf,
    lock: Option<File>,
    /// The kernel the chains were added to, and are removed from.
    kernel: Kernel,
}

impl Active {
    /// Under netnat's main lock: takes the trace lock, then adds the chains and marking rules
    /// in one transaction (with table `inet netnat` itself when it does not exist yet).
    fn start(dir: &Path, spec: &TraceSpec, mut kernel: Kernel) -> Result<(Active, Started)> {
        let store = Store::lock(dir)?;
        let path = store.dir().join(LOCK_FILE);
        let lock = take_lock(&path)?;
        match add_chains(&store, spec, kernel.firewall.as_mut()) {
            Ok(started) => Ok((Active { dir: store.dir().to_path_buf(), lock: Some(lock), kernel }, started)),
            Err(e) => {
                // One transaction: nothing was added. The lock file goes while the main lock is held.
                let _ = std::fs::remove_file(&path);
                drop(lock);
                Err(e)
            }
        }
    }

    /// Under netnat's main lock: removes the trace chains (and the table, when nothing else is
    /// in it), then the lock file, then releases the lock.
    fn stop(&mut self) -> Result<()> {
        let Some(lock) = self.lock.take() else { return Ok(()) };
        let store = Store::lock(&self.dir)?;
        remove_chains(self.kernel.firewall.as_mut())?;
        let _ = std::fs::remove_file(store.dir().join(LOCK_FILE));
        drop(lock);
        Ok(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What the record publishes on the traced port, then the chains and marking rules in one
/// transaction (with table `inet netnat` itself when it does not exist yet).
fn add_chains(store: &Store, spec: &TraceSpec, nft: &mut dyn Firewall) -> Result<Started> {
    let (published, record_unreadable) = match store.read() {
        Record::Read(st) => {
            let on_port = st.mappings.iter().filter(|m| spec.covers(m));
            let published = on_port
                .map(|m| match st.network_of(m.container_ip) {
                    Some(n) => format!("{m} (network {})", n.name),
                    None => m.to_string(),
                })
                .collect();
            (published, None)
        }
        Record::Missing => (vec![], None),
        Record::Unreadable(why) => (vec![], Some(format!("{}: {why}", store.file().display()))),
    };
    let live = nft.read_layout()?;
    let mut ops = vec![];
    if live.is_none() {
        ops.push(NftOp::AddTable);
    }
    for c in &TRACE_CHAINS {
        // A chain a killed trace left keeps its place: emptied and refilled.
        ops.push(NftOp::AddChain(c.clone()));
        ops.push(NftOp::FlushChain(c.name.into()));
    }
    let rules = spec.rules();
    ops.extend(rules.iter().cloned().map(NftOp::AddRule));
    nft.apply(&ops).context("adding netnat trace's chains")?;
    let rules =
        rules.iter().map(|r| format!("{FAMILY_NAME} {TABLE} {} {}", r.chain, render_rule(&r.exprs, None))).collect();
    Ok(Started { target: spec.describe(), rules, published, record_unreadable })
}

/// Removes the trace chains of table `inet netnat` in one transaction: the whole table when it
/// holds nothing else (a trace made it). Returns their names.
fn remove_chains(nft: &mut dyn Firewall) -> Result<Vec<String>> {
    let Some(live) = nft.read_layout()? else { return Ok(vec![]) };
    let names = trace::trace_chains_in(&live);
    if names.is_empty() {
        return Ok(names);
    }
    let ops = match trace::without_trace(&live) {
        None => vec![NftOp::DelTable],
        Some(_) => names.iter().map(|n| NftOp::DelChain(n.clone())).collect(),
    };
    nft.apply(&ops).with_context(|| format!("removing chains {} of table inet {TABLE}", names.join(", ")))?;
    Ok(names)
}

/// For `Engine::save` (under the main lock): removes the chains of a trace that was killed,
/// when there was one. Costs one file lookup when no trace ran since.
pub fn remove_leftover(store: &Store, nft: &mut dyn Firewall) -> Result<Vec<String>> {
    let path = store.dir().join(LOCK_FILE);
    if !path.exists() || lock_held(&path) {
        return Ok(vec![]);
    }
    let removed = remove_chains(nft)?;
    let _ = std::fs::remove_file(&path);
    Ok(removed)
}

/// Whether a `netnat trace` is running with this state directory.
pub fn running(dir: &Path) -> bool {
    lock_held(&dir.join(LOCK_FILE))
}

fn ofd_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value, the fields set below.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// Takes the trace lock: an open-file-description lock, which the kernel drops when the
/// process ends however it ends, and which another process can test without taking it.
fn take_lock(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let l = ofd_lock(libc::F_WRLCK);
    // SAFETY: `l` is a valid flock alive during the call; the fd is open.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &l) } < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            bail!("another `netnat trace` is running (it holds {}): one trace at a time", path.display());
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    Ok(f)
}

/// Whether some process holds the trace lock at `path`.
fn lock_held(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().read(true).write(true).open(path) else { return false };
    let mut l = ofd_lock(libc::F_WRLCK);
    // SAFETY: `l` is a valid flock the kernel fills in; the fd is open.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
    r == 0 && l.l_type != libc::F_UNLCK as libc::c_short
}

// ---- signals: end the trace cleanly ----

static STOP: AtomicBool = AtomicBool::new(false);

/// SIGINT/SIGTERM handler: only stores to an atomic, which is async-signal-safe.
///
/// # Safety
/// Not an `unsafe fn`: it dereferences nothing and is sound whenever the kernel calls it.
extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const CAUGHT: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// SIGINT, SIGTERM and SIGHUP end the trace (its chains are removed) instead of the process;
/// the previous handlers are put back on drop.
struct Signals {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Signals {
    fn catch() -> Signals {
        STOP.store(false, Ordering::SeqCst);
        let mut old = vec![];
        for sig in CAUGHT {
            // SAFETY: sigaction is plain data; the handler only stores to an atomic, which is
            // async-signal-safe; `prev` receives the old action.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                let mut prev: libc::sigaction = std::mem::zeroed();
                // A signal whose action cannot be set keeps its old one (the trace's chains are
                // then removed by the next netnat command, as after a kill -9).
                if libc::sigemptyset(&mut act.sa_mask) == 0 && libc::sigaction(sig, &act, &mut prev) == 0 {
                    old.push((sig, prev));
                }
            }
        }
        Signals { old }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: puts back the action saved in `catch`, a valid sigaction for a signal that
            // accepted one.
            let r = unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
            // It cannot fail for a signal and action the kernel accepted before; if it did, the
            // handler left in place only sets a flag nothing reads any more.
            debug_assert_eq!(r, 0, "restoring the action of signal {sig}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Observer for Nothing {
        fn started(&mut self, _: &Started) -> bool {
            true
        }
        fn packet(&mut self, _: &PacketReport) -> bool {
            true
        }
    }

    #[test]
    fn bounds_are_checked_before_anything_is_touched() {
        let spec = TraceSpec::parse("9090", None).unwrap();
        let dir = Path::new("/nonexistent/netnat-state");
        for (count, secs, needle) in [(0, 30, "--count 0"), (10, 0, "--timeout 0"), (10, 86_401, "--timeout 86401")] {
            let o = TraceOptions { spec: spec.clone(), count, timeout: Duration::from_secs(secs) };
            let e = trace(dir, &o, &mut Nothing).unwrap_err();
            assert!(e.is::<InputError>() && e.to_string().contains(needle), "{e}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn a_killed_traces_chains_are_swept_through_the_seam() {
        let st = crate::model::fixtures::seed_state("nnveth0");
        let dir = std::env::temp_dir().join(format!("netnat-trace-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::lock(&dir).unwrap();
        store.save(&st).unwrap();
        let (_kernel, mut fw, _links) = crate::engine::fake::kernel(&st);
        let netnat_chains = fw.0.borrow().table.as_ref().unwrap().chains.len();
        for c in &TRACE_CHAINS {
            let chain = crate::nft::LiveChain { table: TABLE.into(), family: 1, name: c.name.into(), base: None };
            fw.0.borrow_mut().table.as_mut().unwrap().chains.push(chain);
        }
        // No lock file: no trace ran since, nothing is read.
        assert!(remove_leftover(&store, &mut fw).unwrap().is_empty());
        assert_eq!(trace::trace_chains_in(fw.0.borrow().table.as_ref().unwrap()).len(), 4);
        // A killed trace: its lock file is there, its lock free. One batch takes its chains only.
        std::fs::write(dir.join(LOCK_FILE), "").unwrap();
        assert_eq!(remove_leftover(&store, &mut fw).unwrap().len(), 4);
        let fw_state = fw.0.borrow();
        let table = fw_state.table.as_ref().unwrap();
        assert!(trace::trace_chains_in(table).is_empty());
        assert_eq!((table.chains.len(), fw_state.batches.len()), (netnat_chains, 1));
        assert!(!dir.join(LOCK_FILE).exists());
        drop(fw_state);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
