//! netnat's record of what it made: one JSON file under the state directory (default /run/netnat,
//! which lives exactly as long as the kernel state it describes), read and written under an
//! exclusive lock held for the whole command, so concurrent commands never lose an update or
//! hand out one address twice.
//!
//! Writing is split in two so a command can prove the record is writable before it touches the
//! kernel (the order is described once, at `engine::Engine`): `reserve` writes a temporary file
//! beside the record, as large as the record will become, and fsyncs it; `save` overwrites that
//! file in place (no new space needed), fsyncs it and renames it over the record (same directory:
//! no new space either). A crash leaves the old record or the new one, never half of one.

use crate::model::{Mapping, State};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/run/netnat";
pub const FILE: &str = "state.json";
/// The record format this netnat writes: 2 when CNI attachments are recorded (their mappings
/// are stored once, under the attachment, and no longer also in `mappings`), else 1 (the layout
/// is then the same as before formats 2 existed, so such a record reads in older versions too).
/// A record without a `format` key was written before formats were numbered: format 1.
pub const FORMAT: u64 = 2;
const TMP_PREFIX: &str = ".state.json.";

/// What reading the record gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Read(State),
    /// No record file (a fresh machine, or a deleted one: the caller asks the kernel which).
    Missing,
    /// The file is there but is not a record this netnat can read; the reason, for humans.
    Unreadable(String),
}

/// The record as text: its format number first, then the state, each mapping once: the
/// mappings of CNI attachments only under their attachment.
pub fn render(state: &State) -> String {
    #[derive(Serialize)]
    struct Versioned<'a> {
        format: u64,
        networks: &'a std::collections::BTreeMap<String, crate::model::Network>,
        sandboxes: &'a std::collections::BTreeMap<String, crate::model::Sandbox>,
        mappings: Vec<&'a Mapping>,
        sysctls: &'a std::collections::BTreeMap<String, String>,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        attachments: &'a std::collections::BTreeMap<String, crate::model::Attachment>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        allow: &'a [crate::model::AllowList],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        host_firewall: &'a [crate::model::HostOpening],
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        handoffs: &'a std::collections::BTreeMap<String, crate::model::Handoff>,
        #[serde(skip_serializing_if = "is_default_counting")]
        counting: crate::model::Counting,
    }
    fn is_default_counting(c: &crate::model::Counting) -> bool {
        *c == crate::model::Counting::default()
    }
    let owned: HashSet<&Mapping> = state.attachments.values().flat_map(|a| &a.mappings).collect();
    let v = Versioned {
        // Handoffs and owners (Docker's driver) are unknown to format 1 readers too.
        format: if state.attachments.is_empty()
            && state.handoffs.is_empty()
            && state.networks.values().all(|n| n.owner.is_none())
            && is_default_counting(&state.counting)
        {
            1
        } else {
            FORMAT
        },
        networks: &state.networks,
        sandboxes: &state.sandboxes,
        mappings: state.mappings.iter().filter(|m| !owned.contains(m)).collect(),
        sysctls: &state.sysctls,
        attachments: &state.attachments,
        allow: &state.allow,
        host_firewall: &state.host_firewall,
        handoffs: &state.handoffs,
        counting: state.counting,
    };
    let mut text = serde_json::to_string_pretty(&v).expect("state always serialises");
    text.push('\n');
    text
}

/// Parses a record; the error says what is wrong with it (empty, not JSON, a format from a
/// newer netnat, not netnat's layout). The active mappings of attachments join `mappings`
/// (format 1 had them in both places: once each).
pub fn parse(text: &str) -> Result<State, String> {
    if text.trim().is_empty() {
        return Err("the file is empty".into());
    }
    let mut v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("it is not valid JSON ({e}), e.g. truncated or overwritten"))?;
    let obj = v.as_object_mut().ok_or("it is not a JSON object")?;
    let format = match obj.remove("format") {
        None => 1,
        Some(f) if f.as_u64().is_some_and(|f| (1..=FORMAT).contains(&f)) => f.as_u64().expect("checked"),
        Some(f) => {
            return Err(format!(
                "it has record format {f}, and this netnat ({}) reads formats 1 to {FORMAT} only",
                env!("CARGO_PKG_VERSION")
            ))
        }
    };
    let mut st: State = serde_json::from_value(v).map_err(|e| format!("it is JSON but not a netnat record ({e})"))?;
    let mut have: HashSet<Mapping> = st.mappings.iter().copied().collect();
    if format == 1 {
        // Format 1 listed an attachment's mappings in `mappings` too; one that was not there
        // had been taken away by `netnat unpublish`.
        for a in st.attachments.values_mut() {
            a.mappings.retain(|m| have.contains(m));
        }
        return Ok(st);
    }
    let owned: Vec<Mapping> = st.attachments.values().flat_map(|a| a.mappings.iter().copied()).collect();
    for m in owned {
        if have.insert(m) {
            st.mappings.push(m);
        }
    }
    Ok(st)
}

/// The state directory with its lock held; dropping it releases the lock and removes a
/// reservation that was not used.
pub struct Store {
    dir: PathBuf,
    _lock: Option<File>,
    /// The temporary file `reserve` wrote: file, path, bytes it holds.
    spare: Option<(File, PathBuf, usize)>,
}

impl Store {
    /// For commands that change things: opens (creating if needed) the state directory and takes
    /// the lock, waiting for another netnat command to finish if one holds it. Temporary files
    /// of commands that were killed are removed.
    pub fn lock(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).with_context(|| format!("creating state directory {}", dir.display()))?;
        let store = Store { dir: dir.to_path_buf(), _lock: Some(take_lock(dir)?), spare: None };
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(store)
    }

    /// For commands that only read: None when the directory does not exist (nothing is created);
    /// in a read-only directory without a lock file, no lock (the record is replaced atomically,
    /// so a read still sees one whole record).
    pub fn open_existing(dir: &Path) -> Result<Option<Store>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        let lock = take_lock(dir).ok();
        Ok(Some(Store { dir: dir.to_path_buf(), _lock: lock, spare: None }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    pub fn read(&self) -> Record {
        match fs::read_to_string(self.file()) {
            Ok(text) => match parse(&text) {
                Ok(s) => Record::Read(s),
                Err(why) => Record::Unreadable(why),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::Missing,
            Err(e) => Record::Unreadable(format!("it cannot be read ({e})")),
        }
    }

    /// The size of the record file now (0 when there is none).
    pub fn record_len(&self) -> usize {
        fs::metadata(self.file()).map(|m| m.len() as usize).unwrap_or(0)
    }

    /// Proves a record of up to `len` bytes can be written: writes that many bytes (spaces:
    /// real bytes, so the space is allocated on any filesystem) to a temporary file beside the
    /// record and fsyncs it. A second call only grows the reservation.
    pub fn reserve(&mut self, len: usize) -> Result<()> {
        if self.spare.as_ref().is_some_and(|(_, _, have)| *have >= len) {
            return Ok(());
        }
        self.spare = None;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&tmp)?;
            f.write_all(&vec![b' '; len])?;
            f.sync_all()?;
            Ok(f)
        };
        match write() {
            Ok(f) => {
                self.spare = Some((f, tmp, len));
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e).with_context(|| {
                    format!(
                        "netnat cannot write its record in {} (it must be able to before it changes anything)",
                        self.dir.display()
                    )
                })
            }
        }
    }

    /// Writes the record: into the reserved file when there is one, then fsync, rename over the
    /// record, fsync of the directory.
    pub fn save(&mut self, state: &State) -> Result<()> {
        let path = self.file();
        let text = render(state);
        let (mut f, tmp) = match self.spare.take() {
            Some((f, tmp, _)) => (f, tmp),
            None => {
                let tmp = self.dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
                let f = File::create(&tmp).with_context(|| format!("writing netnat's record {}", path.display()))?;
                (f, tmp)
            }
        };
        let mut write = || -> std::io::Result<()> {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(text.as_bytes())?;
            f.set_len(text.len() as u64)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        let r = write();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r.with_context(|| format!("writing netnat's record {}", path.display()))
    }

    /// Keeps a damaged record under a new name beside it (`state.json.damaged-SECONDS`), so
    /// replacing the record never deletes it. A hard link: no space needed, the content stays.
    pub fn keep_damaged(&self) -> Result<Option<PathBuf>> {
        let path = self.file();
        if !path.exists() {
            return Ok(None);
        }
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut kept = self.dir.join(format!("{FILE}.damaged-{secs}"));
        let mut n = 1;
        while kept.exists() {
            kept = self.dir.join(format!("{FILE}.damaged-{secs}.{n}"));
            n += 1;
        }
        fs::hard_link(&path, &kept)
            .or_else(|_| fs::copy(&path, &kept).map(|_| ()))
            .with_context(|| format!("keeping the damaged record {} as {}", path.display(), kept.display()))?;
        Ok(Some(kept))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((_, tmp, _)) = self.spare.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Opens the lock file (read-write, creating it; or read-only when it exists in a read-only
/// directory: flock works on either) and takes the exclusive lock.
fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .or_else(|e| File::open(&path).map_err(|_| e))
        .with_context(|| format!("opening lock file {}", path.display()))?;
    loop {
        // SAFETY: flock on a descriptor `lock` owns and keeps open; no memory is passed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(lock);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::seed_state;

    #[test]
    fn a_record_round_trips_with_its_format() {
        let st = seed_state("nn12345678");
        let text = render(&st);
        assert!(text.contains("\"format\": 1"), "{text}");
        assert_eq!(parse(&text), Ok(st.clone()));
        // Records written before formats were numbered are format 1.
        let old = serde_json::to_string(&st).unwrap();
        assert_eq!(parse(&old), Ok(st));
    }

    #[test]
    fn host_firewall_openings_and_modes_round_trip() {
        use crate::model::{HostFirewallKind, HostFirewallMode, HostOpening};
        let mut st = seed_state("nn12345678");
        let plain = render(&st);
        assert!(!plain.contains("host_firewall"), "left out while empty and auto: {plain}");
        st.host_firewall.push(HostOpening {
            firewall: HostFirewallKind::Firewalld,
            network: "MyDocker0".into(),
            bridge: "MyDocker0".into(),
        });
        st.networks.get_mut("MyDocker0").unwrap().host_firewall = HostFirewallMode::Off;
        let text = render(&st);
        assert!(text.contains("\"firewall\": \"firewalld\"") && text.contains("\"host_firewall\": \"off\""), "{text}");
        assert_eq!(parse(&text), Ok(st));
    }

    #[test]
    fn cni_attachments_round_trip_and_leave_older_records_as_they_were() {
        // A record from before CNI: read, and written again byte for byte (no `attachments` key).
        let st = seed_state("nn12345678");
        let text = render(&st);
        assert!(!text.contains("attachments"), "{text}");
        assert_eq!(render(&parse(&text).unwrap()), text);
        // With an attachment: its mapping is in both places and comes back whole.
        let mut cni = st.clone();
        let m: crate::model::Mapping = "8080:10.88.0.2:80".parse().unwrap();
        let a = crate::model::Attachment {
            network: "podman".into(),
            container_id: "abc123".into(),
            ifname: "eth0".into(),
            mappings: vec![m],
            standby: vec![],
        };
        cni.mappings.push(m);
        cni.attachments.insert(a.id().key(), a);
        let text = render(&cni);
        assert!(text.contains("\"podman/abc123/eth0\""), "{text}");
        assert!(text.contains("\"format\": 2"), "{text}");
        // Stored once: under its attachment, not also in `mappings`.
        assert!(text.contains("\"8080:10.88.0.2:80/tcp\""), "{text}");
        assert!(!text.contains("\"host_port\": 8080"), "{text}");
        assert_eq!(parse(&text), Ok(cni.clone()));
        // A record written before (format 1: the mapping in both places) reads the same.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["format"] = 1.into();
        v["mappings"].as_array_mut().unwrap().push(serde_json::to_value(m).unwrap());
        let old = v.to_string();
        let back = parse(&old).unwrap();
        assert_eq!(back.mappings.iter().filter(|x| **x == m).count(), 1, "{old}");
        assert_eq!(back.attachments, cni.attachments);
        assert_eq!(cni.owner_of(&m).map(|a| a.container_id.as_str()), Some("abc123"));
        assert_eq!(st.owner_of(&m), None);
    }

    #[test]
    fn damaged_records_say_what_is_wrong() {
        let text = render(&seed_state("nn12345678"));
        let cases = [
            ("", "empty"),
            ("  \n", "empty"),
            ("{\"x\u{1}garbage", "not valid JSON"),
            (&text[..text.len() / 2], "not valid JSON"),
            ("[1, 2]", "not a JSON object"),
            ("{\"format\": 3, \"networks\": {}}", "record format 3"),
            ("{\"format\": \"one\"}", "record format \"one\""),
            ("{\"networks\": 5}", "not a netnat record"),
            ("{\"surprise\": {}}", "not a netnat record"),
        ];
        for (text, want) in cases {
            let why = parse(text).unwrap_err();
            assert!(why.contains(want), "{text:?}: {why}");
        }
    }
}
