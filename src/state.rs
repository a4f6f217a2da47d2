//! netnat's record of what it made: one JSON file under the state directory (default /run/netnat,
//! which lives exactly as long as the kernel state it describes), read and written under an
//! exclusive lock held for the whole command, so concurrent commands never lose an update or
//! hand out one address twice. Writes are atomic (temp file + fsync + rename).

use crate::model::State;
use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/run/netnat";

/// The state directory with its lock held; dropping it releases the lock.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the state directory and takes the lock, waiting for another
    /// netnat command to finish if one holds it.
    pub fn lock(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).with_context(|| format!("creating state directory {}", dir.display()))?;
        let path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        loop {
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(Store { dir: dir.to_path_buf(), _lock: lock })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load(&self) -> Result<State> {
        let path = self.file();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading netnat state {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading netnat state {}", path.display())),
        }
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.file();
        let tmp = self.dir.join(format!(".state.json.{}", std::process::id()));
        let text = serde_json::to_string_pretty(state).expect("state always serialises");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("writing netnat state {}", path.display()))
    }
}

impl Store {
    fn owned_netns_dir(&self) -> PathBuf {
        self.dir.join("owned-netns")
    }

    /// Marks a namespace as netnat's BEFORE it is created: a command killed between creating it
    /// and saving the record still leaves proof that the namespace is netnat's to remove.
    pub fn mark_netns(&self, name: &str) -> Result<()> {
        let dir = self.owned_netns_dir();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        File::create(&path).and_then(|f| f.sync_all()).with_context(|| format!("writing {}", path.display()))
    }

    pub fn owns_netns(&self, name: &str) -> bool {
        self.owned_netns_dir().join(name).exists()
    }

    pub fn unmark_netns(&self, name: &str) -> Result<()> {
        let path = self.owned_netns_dir().join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Every namespace marked as netnat's, recorded or not.
    pub fn owned_netns(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.owned_netns_dir()) else {
            return vec![];
        };
        let mut v: Vec<String> = rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        v.sort();
        v
    }
}

/// The state directory: `--state-dir`, else $NETNAT_STATE_DIR, else /run/netnat (clap fills the
/// first two; this is the fallback).
pub fn dir_or_default(dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}
