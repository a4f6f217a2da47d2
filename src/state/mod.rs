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
//!
//! With CNI attachments the record is split in files (format 3, `split`): a CNI ADD or DEL reads
//! and writes only the attachments it can meet, and a save that changes several files is one
//! journal, committed by a rename and applied after (again by the next command if this one was
//! killed).

mod split;

pub use split::port_token;

use crate::model::{Mapping, State};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use split::{Op, Stored};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/run/netnat";
pub const FILE: &str = "state.json";
/// The record format this netnat writes: 3 when CNI attachments are recorded (each in its own
/// file under `attachments/`, indexed by `claims/`: see `split`), else 1 (the layout is then the
/// same as before formats 2 and 3 existed, so such a record reads in older versions too). Format
/// 2 (attachments inside state.json, each mapping once, under its attachment) is read, and
/// written as format 3 by the next save. A record without a `format` key was written before
/// formats were numbered: format 1.
pub const FORMAT: u64 = 3;
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
    render_as(state, None)
}

/// `render`, or with `split` the main record of format 3 (its attachments are in their files).
fn render_as(state: &State, split: Option<u64>) -> String {
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
        #[serde(skip_serializing_if = "crate::model::Counting::is_default")]
        counting: crate::model::Counting,
    }
    let owned: HashSet<&Mapping> = state.attachments.values().flat_map(|a| &a.mappings).collect();
    let v = Versioned {
        // Handoffs and owners (Docker's driver) are unknown to format 1 readers too.
        format: if let Some(f) = split {
            f
        } else if !state.attachments.is_empty() {
            2
        } else if state.handoffs.is_empty()
            && state.networks.values().all(|n| n.owner.is_none())
            && state.counting.is_default()
        {
            // Format 1 readers refuse what they do not know (owners, handoffs, counting).
            1
        } else {
            2
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
    parse_main(text).map(|(st, _)| st)
}

/// `parse`, and the record's format (3: the attachments are in their files).
fn parse_main(text: &str) -> Result<(State, u64), String> {
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
        return Ok((st, format));
    }
    let owned: Vec<Mapping> = st.attachments.values().flat_map(|a| a.mappings.iter().copied()).collect();
    for m in owned {
        if have.insert(m) {
            st.mappings.push(m);
        }
    }
    Ok((st, format))
}

/// The state directory with its lock held; dropping it releases the lock and removes a
/// reservation that was not used.
pub struct Store {
    dir: PathBuf,
    _lock: Option<File>,
    /// The temporary file `reserve` wrote: file, path, bytes it holds.
    spare: Option<(File, PathBuf, usize)>,
    /// What was read of the record: what `save` compares with to write only what changed.
    disk: RefCell<Disk>,
}

/// The record's files as this command read them.
#[derive(Debug, Default)]
struct Disk {
    /// The record was read whole or in part (else a save makes the files exactly the state's,
    /// whatever is there: after `recover` or `reset` of a damaged record).
    read: bool,
    /// state.json as read (None: none).
    main: Option<String>,
    /// It is format 3: the attachments are in their files.
    split: bool,
    /// The attachment files read, by key (all of them unless `partial`).
    atts: BTreeMap<String, Stored>,
    partial: bool,
    /// Bytes read.
    bytes: usize,
}

impl Store {
    /// For commands that change things: opens (creating if needed) the state directory and takes
    /// the lock, waiting for another netnat command to finish if one holds it. Temporary files
    /// of commands that were killed are removed, and the write of one killed after it committed
    /// is finished.
    pub fn lock(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).with_context(|| format!("creating state directory {}", dir.display()))?;
        let store = Store::new(dir, Some(take_lock(dir)?));
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        store.finish_journal()?;
        Ok(store)
    }

    fn new(dir: &Path, lock: Option<File>) -> Store {
        Store { dir: dir.to_path_buf(), _lock: lock, spare: None, disk: RefCell::default() }
    }

    /// For commands that only read: None when the directory does not exist (nothing is created);
    /// in a read-only directory without a lock file, no lock (the record is replaced atomically,
    /// so a read still sees one whole record).
    pub fn open_existing(dir: &Path) -> Result<Option<Store>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        let lock = take_lock(dir).ok();
        let store = Store::new(dir, lock);
        if store._lock.is_some() {
            // Best effort: `read` says so when an interrupted write is still there.
            let _ = store.finish_journal();
        }
        Ok(Some(store))
    }

    /// Applies the journal of a command killed after its commit, then removes it; removes the
    /// temporary files of one killed before.
    fn finish_journal(&self) -> Result<()> {
        let path = self.dir.join(split::JOURNAL);
        let finish = || -> Result<()> {
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let ops = split::parse_journal(&text).map_err(anyhow::Error::msg)?;
                    split::apply(&self.dir, &ops, None)?;
                    fs::remove_file(&path)?;
                    File::open(&self.dir)?.sync_all()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            if let Ok(rd) = fs::read_dir(self.dir.join(split::TMP)) {
                for e in rd.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
            Ok(())
        };
        finish().with_context(|| format!("finishing the interrupted write of netnat's record ({})", path.display()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The whole record: state.json and every attachment file.
    pub fn read(&self) -> Record {
        self.read_with(None)
    }

    /// For a CNI request: state.json and only the attachments it can meet: the one named `key`
    /// and those claimed under a token of its mappings, of `maps` (what ADD asks for) or in
    /// `tokens` (the host ports a DEL names: a claim without its file is then found).
    pub fn read_for(&self, key: &str, maps: &[Mapping], tokens: &[String]) -> Record {
        self.read_with(Some((key, maps, tokens)))
    }

    fn read_with(&self, only: Option<(&str, &[Mapping], &[String])>) -> Record {
        *self.disk.borrow_mut() = Disk::default();
        if self.dir.join(split::JOURNAL).exists() {
            return Record::Unreadable(format!(
                "an interrupted write left {} that could not be finished here (a command that changes things \
                 finishes it)",
                self.dir.join(split::JOURNAL).display()
            ));
        }
        let text = match fs::read_to_string(self.file()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self.disk.borrow_mut() = Disk { read: true, ..Disk::default() };
                return Record::Missing;
            }
            Err(e) => return Record::Unreadable(format!("it cannot be read ({e})")),
        };
        let (mut st, format) = match parse_main(&text) {
            Ok(r) => r,
            Err(why) => return Record::Unreadable(why),
        };
        let mut disk = Disk { read: true, bytes: text.len(), main: Some(text), split: format == 3, ..Disk::default() };
        if disk.split {
            let read = match only {
                None => self.read_all(&mut disk),
                Some((key, maps, tokens)) => self.read_some(&mut disk, key, maps, tokens),
            };
            if let Err(why) = read {
                return Record::Unreadable(why);
            }
            split::merge(&mut st, disk.atts.iter().map(|(k, s)| (k.clone(), s.clone())));
        }
        *self.disk.borrow_mut() = disk;
        Record::Read(st)
    }

    /// One attachment file (None: there is none).
    fn read_attachment(&self, key: &str, disk: &mut Disk) -> Result<Option<Stored>, String> {
        let path = self.dir.join(split::ATTACHMENTS).join(split::file_name(key));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("attachment file {} cannot be read ({e})", path.display())),
        };
        disk.bytes += text.len();
        let s = Stored::parse(&text).map_err(|why| format!("attachment file {}: {why}", path.display()))?;
        if s.attachment.id().key() != key {
            return Err(format!("attachment file {} holds attachment {}", path.display(), s.attachment.id().key()));
        }
        Ok(Some(s))
    }

    fn read_all(&self, disk: &mut Disk) -> Result<(), String> {
        let files =
            split::attachment_files(&self.dir).map_err(|e| format!("its attachments cannot be listed ({e})"))?;
        for key in files.keys() {
            if let Some(s) = self.read_attachment(key, disk)? {
                disk.atts.insert(key.clone(), s);
            }
        }
        let claims = split::all_claims(&self.dir).map_err(|e| format!("its claims cannot be listed ({e})"))?;
        for (token, key) in claims {
            if !disk.atts.contains_key(&key) {
                return Err(lost(&self.dir, &key, &token));
            }
        }
        Ok(())
    }

    fn read_some(&self, disk: &mut Disk, key: &str, maps: &[Mapping], more: &[String]) -> Result<(), String> {
        disk.partial = true;
        let mut tokens: BTreeSet<String> = maps.iter().flat_map(split::mapping_tokens).collect();
        tokens.extend(more.iter().cloned());
        if let Some(s) = self.read_attachment(key, disk)? {
            tokens.extend(split::tokens(&s.attachment));
            disk.atts.insert(key.to_string(), s);
        }
        for token in tokens {
            let keys = split::claimed(&self.dir, &token).map_err(|e| format!("claims/{token} cannot be read ({e})"))?;
            for k in keys {
                if disk.atts.contains_key(&k) {
                    continue;
                }
                match self.read_attachment(&k, disk)? {
                    Some(s) => disk.atts.insert(k, s),
                    None => return Err(lost(&self.dir, &k, &token)),
                };
            }
        }
        Ok(())
    }

    /// For a record rebuilt from the kernel: the attachments the claims name take back the
    /// mappings they held (`split::adopt`). Returns how many.
    pub fn adopt_attachments(&self, state: &mut State) -> usize {
        split::all_claims(&self.dir).map(|c| split::adopt(state, &c)).unwrap_or(0)
    }

    /// After a partial read (`read_for`): whether attachment files exist that were not read. One
    /// entry of the directory is enough to say yes.
    pub fn unread_attachments(&self) -> bool {
        let d = self.disk.borrow();
        let Ok(rd) = fs::read_dir(self.dir.join(split::ATTACHMENTS)) else { return false };
        rd.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").and_then(split::unescape).is_some_and(|k| !d.atts.contains_key(&k))
        })
    }

    /// The size of what was read of the record (the record file's when nothing was read; 0 when
    /// there is none).
    pub fn record_len(&self) -> usize {
        let d = self.disk.borrow();
        if d.read {
            return d.bytes;
        }
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

    /// Writes the record: only the files that differ from what was read. state.json alone is
    /// written into the reserved file, fsynced and renamed over the record; several files are
    /// one journal (see `split`).
    pub fn save(&mut self, state: &State) -> Result<()> {
        let (main, atts) = split::split(state);
        let disk = std::mem::take(&mut *self.disk.borrow_mut());
        // Format 3 while attachments exist; a partial read cannot know that none are left.
        let layout_split = !atts.is_empty() || (disk.split && disk.partial);
        let text = render_as(&main, layout_split.then_some(FORMAT));
        let mut ops = vec![];
        if disk.main.as_deref() != Some(text.as_str()) {
            ops.push(Op::Write { path: FILE.into(), text: text.clone() });
        }
        for key in disk.atts.keys().chain(atts.keys()).collect::<BTreeSet<_>>() {
            let (old, new) = (disk.atts.get(key), atts.get(key));
            if old != new {
                ops.extend(split::attachment_ops(key, old, new));
            }
        }
        if !disk.read {
            ops.extend(self.resync_ops(&atts)?);
        }
        let r = match ops.as_slice() {
            [] => Ok(()),
            [Op::Write { path, text }] if path == FILE => self.save_main(text),
            _ => self.save_journal(&ops),
        };
        match r {
            Ok(()) => {
                // For the next reservation: an estimate from above is enough.
                let written: usize =
                    ops.iter().map(|o| if let Op::Write { text, .. } = o { text.len() } else { 0 }).sum();
                let bytes = disk.bytes + written;
                let partial = disk.partial;
                *self.disk.borrow_mut() =
                    Disk { read: true, main: Some(text), split: layout_split, atts, partial, bytes };
                Ok(())
            }
            Err(e) => {
                *self.disk.borrow_mut() = disk;
                Err(e)
            }
        }
    }

    /// After a record that could not be read: every attachment file and claim that the state
    /// does not have goes (the damaged files were kept by `keep_damaged`), every claim it needs
    /// is made.
    fn resync_ops(&self, atts: &BTreeMap<String, Stored>) -> Result<Vec<Op>> {
        let ctx = || format!("listing the attachments of netnat's record in {}", self.dir.display());
        let mut ops = vec![];
        for key in split::attachment_files(&self.dir).with_context(ctx)?.into_keys() {
            if !atts.contains_key(&key) {
                ops.push(Op::Remove { path: format!("{}/{}", split::ATTACHMENTS, split::file_name(&key)) });
            }
        }
        let want: BTreeSet<(String, String)> = atts
            .iter()
            .flat_map(|(k, s)| split::tokens(&s.attachment).into_iter().map(move |t| (t, k.clone())))
            .collect();
        for (token, key) in split::all_claims(&self.dir).with_context(ctx)? {
            if !want.contains(&(token.clone(), key.clone())) {
                ops.push(Op::Unclaim { token, key });
            }
        }
        ops.extend(want.into_iter().map(|(token, key)| Op::Claim { token, key }));
        Ok(ops)
    }

    /// state.json alone: into the reserved file when there is one, then fsync, rename over the
    /// record, fsync of the directory.
    fn save_main(&mut self, text: &str) -> Result<()> {
        let path = self.file();
        let (mut f, tmp) = self.spare_file().with_context(|| format!("writing netnat's record {}", path.display()))?;
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

    /// The reserved file, or a new temporary file when nothing was reserved.
    fn spare_file(&mut self) -> std::io::Result<(File, PathBuf)> {
        match self.spare.take() {
            Some((f, tmp, _)) => Ok((f, tmp)),
            None => {
                let tmp = self.dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
                Ok((File::create(&tmp)?, tmp))
            }
        }
    }

    /// Several files as one: the new contents are written first (what lacks space or a writable
    /// directory fails here, nothing committed), then the journal is written into the reserved
    /// file and renamed to `journal` (the commit), then applied and removed. Once committed the
    /// save has happened: if applying fails, the journal stays and the next command finishes it.
    fn save_journal(&mut self, ops: &[Op]) -> Result<()> {
        let shown = self.dir.display().to_string();
        let ctx = || format!("writing netnat's record in {shown}");
        for op in ops {
            if let Op::Write { path, .. } | Op::Remove { path } = op {
                let p = self.dir.join(path);
                if immutable(&p) || immutable(p.parent().expect("under the directory")) {
                    bail!("{}: {} is immutable or append-only", ctx(), p.display());
                }
            }
        }
        let temps = split::prepare(&self.dir, ops);
        let clean = |temps: &[PathBuf]| temps.iter().for_each(|t| drop(fs::remove_file(t)));
        let temps = match temps {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir_all(self.dir.join(split::TMP));
                return Err(e).with_context(ctx);
            }
        };
        let (dir, journal) = (self.dir.clone(), self.dir.join(split::JOURNAL));
        let text = split::render_journal(ops);
        let commit = |f: &mut File, tmp: &Path| -> std::io::Result<()> {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(text.as_bytes())?;
            f.set_len(text.len() as u64)?;
            f.sync_all()?;
            fs::rename(tmp, &journal)?;
            File::open(&dir)?.sync_all()
        };
        let committed = self
            .spare_file()
            .and_then(|(mut f, tmp)| commit(&mut f, &tmp).inspect_err(|_| drop(fs::remove_file(&tmp))));
        if let Err(e) = committed {
            clean(&temps);
            return Err(e).with_context(ctx);
        }
        // Committed. What fails from here is finished by the next command (`finish_journal`).
        if split::apply(&self.dir, ops, Some(temps)).is_ok() && fs::remove_file(&journal).is_ok() {
            let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Keeps a damaged record under a new name beside it (`state.json.damaged-SECONDS`), so
    /// replacing the record never deletes it, and each attachment file that cannot be read as
    /// `attachment.NAME.damaged-SECONDS`. A hard link: no space needed, the content stays.
    /// Returns where state.json was kept (or the first attachment file, when it is missing).
    pub fn keep_damaged(&self) -> Result<Option<PathBuf>> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut kept = vec![];
        let path = self.file();
        if path.exists() {
            kept.push(self.keep(&path, &format!("{FILE}.damaged-{secs}"))?);
        }
        for (key, p) in split::attachment_files(&self.dir).unwrap_or_default() {
            let ok = fs::read_to_string(&p).ok().and_then(|t| Stored::parse(&t).ok());
            if ok.is_none_or(|s| s.attachment.id().key() != key) {
                let name = p.file_name().expect("a file").to_string_lossy().into_owned();
                kept.push(self.keep(&p, &format!("attachment.{name}.damaged-{secs}"))?);
            }
        }
        Ok(kept.into_iter().next())
    }

    fn keep(&self, path: &Path, name: &str) -> Result<PathBuf> {
        let mut kept = self.dir.join(name);
        let mut n = 1;
        while kept.exists() {
            kept = self.dir.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::hard_link(path, &kept)
            .or_else(|_| fs::copy(path, &kept).map(|_| ()))
            .with_context(|| format!("keeping the damaged record {} as {}", path.display(), kept.display()))?;
        Ok(kept)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((_, tmp, _)) = self.spare.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Why a record whose claims name an attachment without its file cannot be used.
fn lost(dir: &Path, key: &str, token: &str) -> String {
    format!(
        "attachment file {} is missing, while claims/{token} names it",
        dir.join(split::ATTACHMENTS).join(split::file_name(key)).display()
    )
}

/// A file or directory marked immutable or append-only (`chattr +i`/`+a`): it cannot be replaced.
fn immutable(path: &Path) -> bool {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    const FS_APPEND_FL: libc::c_long = 0x20;
    let Ok(f) = File::open(path) else { return false };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes at most a long into `flags`, which outlives the call; `f`
    // is an open descriptor this function owns.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags as *mut libc::c_long) };
    r == 0 && flags & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0
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
    fn packet_counting_is_recorded_and_connections_left_out() {
        let mut st = seed_state("nn12345678");
        let plain = render(&st);
        assert!(!plain.contains("counting") && plain.contains("\"format\": 1"), "{plain}");
        st.counting = crate::model::Counting::Packets;
        let text = render(&st);
        // A format 1 reader would refuse the unknown key: the format says so.
        assert!(text.contains("\"counting\": \"packets\"") && !text.contains("\"format\": 1"), "{text}");
        assert_eq!(parse(&text).unwrap(), st);
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
            ("{\"format\": 4, \"networks\": {}}", "record format 4"),
            ("{\"format\": \"one\"}", "record format \"one\""),
            ("{\"networks\": 5}", "not a netnat record"),
            ("{\"surprise\": {}}", "not a netnat record"),
        ];
        for (text, want) in cases {
            let why = parse(text).unwrap_err();
            assert!(why.contains(want), "{text:?}: {why}");
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netnat-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn with_attachments() -> (State, Vec<Mapping>) {
        let mut st = seed_state("nn12345678");
        let mut maps = vec![];
        for (i, ctr) in ["c1", "c2"].iter().enumerate() {
            let m: Mapping = format!("{}:10.88.0.{}:80", 8080 + i, 2 + i).parse().unwrap();
            let a = crate::model::Attachment {
                network: "podman".into(),
                container_id: ctr.to_string(),
                ifname: "eth0".into(),
                mappings: vec![m],
                standby: vec![],
            };
            st.mappings.push(m);
            st.attachments.insert(a.id().key(), a);
            maps.push(m);
        }
        (st, maps)
    }

    #[test]
    fn a_split_record_is_read_whole_or_in_part_and_written_only_where_it_changed() {
        let dir = temp_dir("split");
        let (st, maps) = with_attachments();
        Store::lock(&dir).unwrap().save(&st).unwrap();
        let main = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(main.contains("\"format\": 3") && !main.contains("podman/c1"), "{main}");
        let store = Store::lock(&dir).unwrap();
        assert_eq!(store.read(), Record::Read(st.clone()));
        // In part: c1 and what its port and address meet (not c2).
        let Record::Read(part) = store.read_for("podman/c1/eth0", &[], &[]) else { panic!() };
        assert_eq!(part.attachments.keys().collect::<Vec<_>>(), ["podman/c1/eth0"]);
        assert!(part.mappings.contains(&maps[0]) && !part.mappings.contains(&maps[1]));
        // Another container asking for c2's port meets c2.
        let Record::Read(part) = store.read_for("podman/c3/eth0", &[maps[1]], &[]) else { panic!() };
        assert_eq!(part.attachments.keys().collect::<Vec<_>>(), ["podman/c2/eth0"]);
        // A partial save of c1 gone leaves c2's file as it was, and the record whole.
        let c2 = dir.join(split::ATTACHMENTS).join(split::file_name("podman/c2/eth0"));
        let c2_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&c2).unwrap());
        drop(store);
        let mut store = Store::lock(&dir).unwrap();
        let Record::Read(mut part) = store.read_for("podman/c1/eth0", &[], &[]) else { panic!() };
        part.attachments.clear();
        part.mappings.retain(|m| *m != maps[0]);
        store.save(&part).unwrap();
        drop(store);
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&c2).unwrap()), c2_inode);
        let mut want = st.clone();
        want.attachments.remove("podman/c1/eth0");
        want.mappings.retain(|m| *m != maps[0]);
        assert_eq!(Store::lock(&dir).unwrap().read(), Record::Read(want));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_committed_journal_is_finished_by_the_next_lock_and_a_lost_file_is_named() {
        let dir = temp_dir("journal");
        let (st, _) = with_attachments();
        fs::create_dir_all(&dir).unwrap();
        // As a command killed right after its commit leaves it: nothing applied yet.
        let (main, atts) = split::split(&st);
        let mut ops = vec![Op::Write { path: FILE.into(), text: render_as(&main, Some(FORMAT)) }];
        for (k, s) in &atts {
            ops.extend(split::attachment_ops(k, None, Some(s)));
        }
        fs::write(dir.join(split::JOURNAL), split::render_journal(&ops)).unwrap();
        assert!(matches!(Store::new(&dir, None).read(), Record::Unreadable(w) if w.contains("interrupted write")));
        let store = Store::lock(&dir).unwrap();
        assert!(!dir.join(split::JOURNAL).exists());
        assert_eq!(store.read(), Record::Read(st));
        drop(store);
        // An attachment file gone while its claims remain: the record cannot be used.
        fs::remove_file(dir.join(split::ATTACHMENTS).join(split::file_name("podman/c2/eth0"))).unwrap();
        let store = Store::lock(&dir).unwrap();
        assert!(matches!(store.read(), Record::Unreadable(w) if w.contains("is missing")));
        let tokens = [port_token(crate::model::Proto::Tcp, 8081)];
        assert!(
            matches!(store.read_for("podman/c2/eth0", &[], &tokens), Record::Unreadable(w) if w.contains("is missing"))
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
