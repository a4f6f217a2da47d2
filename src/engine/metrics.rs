//! `netnat metrics`: the audit's observation (counters, conntrack, findings) as the Prometheus
//! text format (`crate::metrics`), printed or written for node_exporter's textfile collector.

use super::{observe_metrics, Kernel};
use crate::model::InputError;
use crate::{audit, metrics};
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file `--textfile DIR` writes; node_exporter reads every `*.prom` of its directory.
pub const TEXTFILE: &str = "netnat.prom";

/// The metrics, read from the record `dir` and the kernel. The audit runs for its error count,
/// which needs everything but the listening sockets (they only make warnings).
pub fn collect(dir: &Path) -> Result<String> {
    collect_from(dir, &mut Kernel::netlink()?)
}

/// As `collect`, from the kernel given (the unit tests' fakes).
pub fn collect_from(dir: &Path, kernel: &mut Kernel) -> Result<String> {
    let o = observe_metrics(dir, kernel)?;
    let report = audit::audit(&o);
    Ok(metrics::render(&metrics::families(&o, &report)))
}

/// Writes `text` to DIR/netnat.prom atomically: a temporary file in DIR (its name does not end
/// in `.prom`, so node_exporter never reads it half-written), fsync, rename over the old one,
/// fsync of DIR. Returns the file's path.
pub fn write_textfile(dir: &Path, text: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(InputError(format!("--textfile {}: no such directory", dir.display())).into());
    }
    let path = dir.join(TEXTFILE);
    let tmp = dir.join(format!(".{TEXTFILE}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}
