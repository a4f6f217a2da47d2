//! `trace` and `metrics`: what happens to the packets of a port, and netnat's counters for
//! Prometheus.

use crate::cli::{MetricsArgs, TraceArgs};
use crate::engine::metrics as m;
use crate::engine::require_net_admin;
use crate::engine::trace::{self as t, Observer, Started, Stop, TraceOptions};
use crate::trace::{render_packet, PacketReport, TraceSpec};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub fn trace(dir: &Path, a: &TraceArgs) -> Result<()> {
    let spec = TraceSpec::parse(&a.target, a.from.as_deref())?;
    let o = TraceOptions { spec, count: a.count, timeout: Duration::from_secs(a.timeout) };
    if a.json {
        let done = t::trace(dir, &o, &mut Quiet)?;
        println!("{}", serde_json::to_string_pretty(&done).context("printing the trace as JSON")?);
        return Ok(());
    }
    let mut out = Text { count: a.count, timeout: a.timeout };
    let done = t::trace(dir, &o, &mut out)?;
    let mut w = std::io::stdout().lock();
    let _ = writeln!(w, "connections:");
    if done.connections.is_empty() {
        let _ = writeln!(w, "  none: no packet matched");
    }
    for c in &done.connections {
        let _ = writeln!(w, "  {}", c.summary);
    }
    let why = match done.stopped_by {
        Stop::Count => format!("{} packets (--count)", done.packets.len()),
        Stop::Timeout => format!("{} s passed (--timeout), {} packet(s) seen", a.timeout, done.packets.len()),
        Stop::Signal => format!("interrupted, {} packet(s) seen", done.packets.len()),
        Stop::Output => "the output was closed".into(),
    };
    let _ = writeln!(w, "stopped: {why}; netnat trace's chains are removed");
    if done.overruns > 0 {
        eprintln!(
            "netnat: warning: the kernel dropped trace events {} time(s): packets above may be incomplete",
            done.overruns
        );
    }
    for e in &done.undecodable {
        eprintln!("netnat: warning: a trace event could not be decoded: {e}");
    }
    Ok(())
}

/// Prints as the trace goes; a closed output ends the trace.
struct Text {
    count: usize,
    timeout: u64,
}

impl Observer for Text {
    fn started(&mut self, s: &Started) -> bool {
        let mut w = std::io::stdout().lock();
        let mut text = format!(
            "tracing {}, both directions, until {} packets or {} s (Ctrl-C stops)\n",
            s.target, self.count, self.timeout
        );
        if let Some(why) = &s.record_unreadable {
            text += &format!("netnat's record cannot be read ({why}); what is published is not known\n");
        } else if s.published.is_empty() {
            text += "published there by netnat: nothing\n";
        } else {
            text += &format!("published there by netnat: {}\n", s.published.join(", "));
        }
        w.write_all(text.as_bytes()).and_then(|()| w.flush()).is_ok()
    }
    fn packet(&mut self, p: &PacketReport) -> bool {
        let mut w = std::io::stdout().lock();
        w.write_all(render_packet(p).as_bytes()).and_then(|()| w.flush()).is_ok()
    }
}

/// `--json`: everything at the end.
struct Quiet;

impl Observer for Quiet {
    fn started(&mut self, _: &Started) -> bool {
        true
    }
    fn packet(&mut self, _: &PacketReport) -> bool {
        true
    }
}

pub fn metrics(dir: &Path, a: &MetricsArgs) -> Result<()> {
    require_net_admin().context("netnat metrics reads nftables counters and conntrack over netlink")?;
    let text = m::collect(dir)?;
    match &a.textfile {
        Some(d) => {
            m::write_textfile(d, &text)?;
        }
        None => print!("{text}"),
    }
    Ok(())
}
