//! netnat as Docker's remote network driver (`netnat docker-plugin`): Docker finds the plugin
//! as a unix socket in /run/docker/plugins/ and sends it JSON over HTTP for every network and
//! endpoint operation of the networks made with `docker network create -d netnat`, and only
//! the driver publishes their ports.
//!
//! A front door, not a second netnat: `http` is the wire, `api` the protocol's types, `driver`
//! turns each request into the engine's operations (the CLI's lock, record and nftables batch).
//! The process keeps nothing between requests, so it may stop and start at any time (socket
//! activation by systemd included).

pub mod api;
pub mod driver;
pub mod http;

use anyhow::{bail, Context, Result};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Where Docker looks for the driver named `netnat`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netnat.sock";

/// Serves the driver API until killed: on the socket systemd passed (socket activation), else
/// on a socket made at `socket`. Each connection gets a thread; the engine's lock orders the
/// requests that change something.
pub fn serve(socket: &Path, dir: &Path) -> Result<()> {
    crate::engine::require_net_admin()?;
    let listener = match activated()? {
        Some(l) => l,
        None => bind(socket)?,
    };
    eprintln!("netnat: Docker network driver `netnat` listening on {}", socket.display());
    let dir: PathBuf = dir.to_path_buf();
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("netnat: accepting a connection on {}: {e}", socket.display());
                continue;
            }
        };
        let dir = dir.clone();
        std::thread::spawn(move || {
            let served = http::serve_connection(stream, |req| {
                if req.method != "POST" {
                    return (405, api::error(&format!("{} {}: the driver API is POST only", req.method, req.path)));
                }
                driver::handle(&dir, &req.path, &req.body)
            });
            if let Err(e) = served {
                eprintln!("netnat: a connection from Docker failed: {e}");
            }
        });
    }
    Ok(())
}

/// The listening socket systemd passed (LISTEN_PID is this process, LISTEN_FDS 1: fd 3).
fn activated() -> Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok());
    let fds = std::env::var("LISTEN_FDS").ok().and_then(|p| p.parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return Ok(None);
    }
    if fds != Some(1) {
        bail!("systemd passed {} sockets; netnat's Docker driver takes exactly one", fds.unwrap_or(0));
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    use std::os::fd::FromRawFd;
    // SAFETY: systemd's protocol: fd 3 is an open listening socket handed to this process (the
    // PID check above), and nothing else in the process owns or closes it.
    let l = unsafe { UnixListener::from_raw_fd(3) };
    Ok(Some(l))
}

/// Binds `path`, replacing a socket file nobody answers on (a plugin that was killed); one that
/// answers is another running plugin, and is refused.
fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("{} is served by another process already (another netnat docker-plugin?)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}
