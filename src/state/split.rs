//! The record split in files (format 3, issue 24): `state.json` keeps the networks, sandboxes,
//! the command line's mappings and everything else; each CNI attachment is its own small file
//! under `attachments/`, with its mappings and their allow lists; `claims/TOKEN/KEY` (empty
//! files) index which attachments hold a host port (`tcp-8080`) or a container address
//! (`ip-10.88.0.2`), so a CNI ADD or DEL reads only the attachments it can meet, never all.
//!
//! A save that changes more than the main record is one journal: every file's new content and
//! every claim in one file, written and fsynced, then renamed to `journal` (the commit), then
//! applied and removed. A command killed after the commit leaves the journal, which the next
//! command that takes the lock applies again (every step can be repeated); one killed before it
//! leaves the old files. So the record, all its files together, is always the old one or the new
//! one, and the claims always index exactly the attachment files.
//!
//! Here: the pure parts (names, tokens, the split of a `State` and its merge, the operations of
//! a save) and `apply`, which performs operations on the directory.

use crate::model::{AllowList, Attachment, Mapping, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

pub const ATTACHMENTS: &str = "attachments";
pub const CLAIMS: &str = "claims";
pub const JOURNAL: &str = "journal";
/// New files' contents before they are renamed into place (cleaned when no journal names them).
pub const TMP: &str = "tmp";

/// An attachment's file name: its key (`network/container/ifname`) with every byte outside
/// `[A-Za-z0-9._-]` as `%XX` ('/' included), and `.json`.
pub fn file_name(key: &str) -> String {
    let mut s = escape(key);
    s.push_str(".json");
    s
}

/// A key as a claim's file name (escaped as in `file_name`).
pub fn escape(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The key an escaped name stands for (None: not one `escape` made).
pub fn unescape(name: &str) -> Option<String> {
    let mut out = vec![];
    let mut bytes = name.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// What a mapping can meet in another attachment: its host ports (a conflict, a standby to
/// promote) and its container address (the hairpin element its container shares).
pub fn mapping_tokens(m: &Mapping) -> impl Iterator<Item = String> + '_ {
    (m.host_port..=m.host_port_end)
        .map(move |p| format!("{}-{p}", m.protocol))
        .chain(std::iter::once(format!("ip-{}", m.container_ip)))
}

/// Every token an attachment is claimed under: its active and standby mappings'.
pub fn tokens(a: &Attachment) -> BTreeSet<String> {
    a.mappings.iter().chain(&a.standby).flat_map(mapping_tokens).collect()
}

/// An attachment file: the attachment (its mappings as publish specs, as in format 2) and the
/// allow lists of its mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentFile {
    network: String,
    container_id: String,
    ifname: String,
    mappings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    standby: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow: Vec<AllowList>,
}

/// An attachment with its allow lists, as stored in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub attachment: Attachment,
    pub allow: Vec<AllowList>,
}

impl Stored {
    pub fn render(&self) -> String {
        let a = &self.attachment;
        let specs = |v: &[Mapping]| v.iter().map(|m| m.to_string()).collect();
        let f = AttachmentFile {
            network: a.network.clone(),
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            mappings: specs(&a.mappings),
            standby: specs(&a.standby),
            allow: self.allow.clone(),
        };
        let mut text = serde_json::to_string_pretty(&f).expect("an attachment always serialises");
        text.push('\n');
        text
    }

    /// Parses an attachment file; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Stored, String> {
        if text.trim().is_empty() {
            return Err("the file is empty".into());
        }
        let f: AttachmentFile = serde_json::from_str(text)
            .map_err(|e| format!("it is not an attachment netnat wrote ({e}), e.g. truncated or overwritten"))?;
        let maps = |v: &[String]| -> Result<Vec<Mapping>, String> {
            v.iter().map(|t| t.parse::<Mapping>().map_err(|e| format!("mapping {t:?}: {e}"))).collect()
        };
        let attachment = Attachment {
            mappings: maps(&f.mappings)?,
            standby: maps(&f.standby)?,
            network: f.network,
            container_id: f.container_id,
            ifname: f.ifname,
        };
        Ok(Stored { attachment, allow: f.allow })
    }
}

/// A state's main record (its attachments and their mappings and allow lists taken out) and
/// its attachments as stored, by key.
pub fn split(state: &State) -> (State, BTreeMap<String, Stored>) {
    let owned: HashSet<&Mapping> = state.attachments.values().flat_map(|a| &a.mappings).collect();
    let mut main = state.clone();
    main.attachments.clear();
    main.mappings.retain(|m| !owned.contains(m));
    main.allow.retain(|l| !owned.contains(&l.mapping));
    let atts = state
        .attachments
        .iter()
        .map(|(k, a)| {
            let allow = a.mappings.iter().filter_map(|m| state.allow.iter().find(|l| l.mapping == *m)).cloned();
            (k.clone(), Stored { attachment: a.clone(), allow: allow.collect() })
        })
        .collect();
    (main, atts)
}

/// The inverse of `split`: the attachments join the main record with their mappings (after the
/// command line's) and allow lists.
pub fn merge(main: &mut State, atts: impl IntoIterator<Item = (String, Stored)>) {
    let mut have: HashSet<Mapping> = main.mappings.iter().copied().collect();
    for (k, s) in atts {
        for m in &s.attachment.mappings {
            if have.insert(*m) {
                main.mappings.push(*m);
            }
        }
        main.allow.extend(s.allow);
        main.attachments.insert(k, s.attachment);
    }
}

/// One step of a save, repeatable (a replayed journal does it again). Paths are relative to the
/// state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Write { path: String, text: String },
    Remove { path: String },
    Claim { token: String, key: String },
    Unclaim { token: String, key: String },
}

/// What a save does to the attachments: `old` as on disk, `new` as they will be (None: gone).
pub fn attachment_ops(key: &str, old: Option<&Stored>, new: Option<&Stored>) -> Vec<Op> {
    let path = format!("{ATTACHMENTS}/{}", file_name(key));
    let none = BTreeSet::new;
    let (was, will) = (old.map(|s| tokens(&s.attachment)).unwrap_or_else(none), new.map(|s| tokens(&s.attachment)));
    let will = will.unwrap_or_else(none);
    let mut ops: Vec<Op> =
        will.difference(&was).map(|t| Op::Claim { token: t.clone(), key: key.to_string() }).collect();
    ops.push(match new {
        Some(s) => Op::Write { path, text: s.render() },
        None => Op::Remove { path },
    });
    ops.extend(was.difference(&will).map(|t| Op::Unclaim { token: t.clone(), key: key.to_string() }));
    ops
}

/// The journal's text.
pub fn render_journal(ops: &[Op]) -> String {
    serde_json::to_string(ops).expect("operations always serialise")
}

pub fn parse_journal(text: &str) -> Result<Vec<Op>, String> {
    serde_json::from_str(text).map_err(|e| format!("it is not a journal netnat wrote ({e})"))
}

fn claim_path(dir: &Path, token: &str, key: &str) -> PathBuf {
    dir.join(CLAIMS).join(token).join(escape(key))
}

/// Writes each new content to a temporary file under `tmp/` and fsyncs it: what can fail for
/// want of space or a writable directory fails here, before the commit. Returns the temporary
/// file of each `Write`, in order.
pub fn prepare(dir: &Path, ops: &[Op]) -> std::io::Result<Vec<PathBuf>> {
    let tmp = dir.join(TMP);
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(dir.join(ATTACHMENTS))?;
    fs::create_dir_all(dir.join(CLAIMS))?;
    let mut out = vec![];
    for (i, op) in ops.iter().enumerate() {
        if let Op::Write { text, .. } = op {
            let p = tmp.join(format!("{}-{i}", std::process::id()));
            let mut f = fs::File::create(&p)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            out.push(p);
        }
    }
    Ok(out)
}

/// Performs the operations (after `prepare`; `temps` are its files, or None when a journal is
/// replayed and the contents are written again) and makes them durable. Every step can be
/// repeated: a file already renamed, a claim already made or gone is no error.
pub fn apply(dir: &Path, ops: &[Op], temps: Option<Vec<PathBuf>>) -> std::io::Result<()> {
    let temps = match temps {
        Some(t) => t,
        None => prepare(dir, ops)?,
    };
    let mut temps = temps.into_iter();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for op in ops {
        match op {
            Op::Write { path, .. } => {
                let to = dir.join(path);
                fs::rename(temps.next().expect("one temporary file per write"), &to)?;
                dirs.insert(to.parent().expect("under the directory").to_path_buf());
            }
            Op::Remove { path } => {
                let p = dir.join(path);
                ignore_missing(fs::remove_file(&p))?;
                dirs.insert(p.parent().expect("under the directory").to_path_buf());
            }
            Op::Claim { token, key } => {
                let p = claim_path(dir, token, key);
                let d = p.parent().expect("under claims");
                fs::create_dir_all(d)?;
                fs::File::create(&p)?;
                dirs.insert(d.to_path_buf());
                dirs.insert(dir.join(CLAIMS));
            }
            Op::Unclaim { token, key } => {
                let p = claim_path(dir, token, key);
                ignore_missing(fs::remove_file(&p))?;
                // The token's directory goes with its last claim.
                match fs::remove_dir(p.parent().expect("under claims")) {
                    Err(e) if e.kind() != ErrorKind::NotFound && e.kind() != ErrorKind::DirectoryNotEmpty => {
                        return Err(e)
                    }
                    _ => {}
                }
                dirs.insert(dir.join(CLAIMS));
            }
        }
    }
    durable(dir, &dirs)
}

/// fsync of each changed directory (a few), or of the whole filesystem when there are many (an
/// ADD of thousands of mappings): one call instead of thousands.
fn durable(dir: &Path, dirs: &BTreeSet<PathBuf>) -> std::io::Result<()> {
    if dirs.len() > 16 {
        let d = fs::File::open(dir)?;
        // SAFETY: syncfs on a descriptor `d` owns and keeps open; no memory is passed.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    for d in dirs {
        match fs::File::open(d) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The keys claimed under a token (none when nothing is).
pub fn claimed(dir: &Path, token: &str) -> std::io::Result<Vec<String>> {
    let rd = match fs::read_dir(dir.join(CLAIMS).join(token)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut keys = vec![];
    for e in rd {
        let name = e?.file_name();
        keys.extend(unescape(&name.to_string_lossy()));
    }
    Ok(keys)
}

/// Every claim: (token, key).
pub fn all_claims(dir: &Path) -> std::io::Result<BTreeSet<(String, String)>> {
    let rd = match fs::read_dir(dir.join(CLAIMS)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut out = BTreeSet::new();
    for e in rd {
        let token = e?.file_name().to_string_lossy().into_owned();
        out.extend(claimed(dir, &token)?.into_iter().map(|k| (token.clone(), k)));
    }
    Ok(out)
}

/// The attachment files in the directory, by key (names that are not an escaped key's are
/// left out).
pub fn attachment_files(dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let rd = match fs::read_dir(dir.join(ATTACHMENTS)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut out = BTreeMap::new();
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".json").and_then(unescape) {
            out.insert(key, e.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::seed_state;

    fn attachment(ctr: &str, maps: &[&str], standby: &[&str]) -> Attachment {
        let p = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect();
        Attachment {
            network: "podman".into(),
            container_id: ctr.into(),
            ifname: "eth0".into(),
            mappings: p(maps),
            standby: p(standby),
        }
    }

    #[test]
    fn names_escape_and_come_back() {
        for key in ["podman/abc123/eth0", "a%b/c d/é", "net.work_1/x-y/eth0"] {
            let name = file_name(key);
            assert!(!name.contains('/') && name.ends_with(".json"), "{name}");
            assert_eq!(unescape(name.strip_suffix(".json").unwrap()).as_deref(), Some(key));
        }
        assert_eq!(file_name("podman/abc/eth0"), "podman%2Fabc%2Feth0.json");
        assert_eq!(unescape("bad%4"), None);
    }

    #[test]
    fn tokens_are_host_ports_and_container_addresses() {
        let a = attachment("c1", &["8080:10.88.0.2:80/tcp", "53:10.88.0.2:53/udp"], &["9090:10.88.0.2:90/tcp"]);
        let t: Vec<String> = tokens(&a).into_iter().collect();
        assert_eq!(t, vec!["ip-10.88.0.2", "tcp-8080", "tcp-9090", "udp-53"]);
    }

    #[test]
    fn an_attachment_file_round_trips_and_damage_is_named() {
        let m: Mapping = "8080:10.88.0.2:80/tcp".parse().unwrap();
        let s = Stored {
            attachment: attachment("c1", &["8080:10.88.0.2:80/tcp"], &["9090:10.88.0.2:90/tcp"]),
            allow: vec![AllowList { mapping: m, from: vec!["192.0.2.0/24".parse().unwrap()] }],
        };
        let text = s.render();
        assert!(text.contains("\"8080:10.88.0.2:80/tcp\""), "{text}");
        assert_eq!(Stored::parse(&text), Ok(s));
        assert!(Stored::parse("").unwrap_err().contains("empty"));
        assert!(Stored::parse(&text[..text.len() / 2]).unwrap_err().contains("truncated"));
        assert!(Stored::parse("{\"network\":\"n\",\"container_id\":\"c\",\"ifname\":\"e\",\"mappings\":[\"x\"]}")
            .unwrap_err()
            .contains("mapping \"x\""));
    }

    #[test]
    fn split_and_merge_are_inverse() {
        let mut st = seed_state("nn12345678");
        let a = attachment("c1", &["8080:10.88.0.2:80/tcp"], &[]);
        let m = a.mappings[0];
        st.mappings.push(m);
        st.allow.push(AllowList { mapping: m, from: vec!["192.0.2.0/24".parse().unwrap()] });
        st.attachments.insert("podman/c1/eth0".into(), a);
        let (main, atts) = split(&st);
        assert!(main.attachments.is_empty() && !main.mappings.contains(&m) && main.allow.is_empty());
        assert_eq!(atts["podman/c1/eth0"].allow.len(), 1);
        let mut back = main;
        merge(&mut back, atts);
        assert_eq!(back, st);
    }

    #[test]
    fn ops_claim_before_and_unclaim_after_the_file() {
        let old = Stored { attachment: attachment("c1", &["8080:10.88.0.2:80/tcp"], &[]), allow: vec![] };
        let new = Stored { attachment: attachment("c1", &["8081:10.88.0.2:80/tcp"], &[]), allow: vec![] };
        let ops = attachment_ops("podman/c1/eth0", Some(&old), Some(&new));
        let kinds: Vec<String> = ops
            .iter()
            .map(|o| match o {
                Op::Claim { token, .. } => format!("claim {token}"),
                Op::Unclaim { token, .. } => format!("unclaim {token}"),
                Op::Write { path, .. } => format!("write {path}"),
                Op::Remove { path } => format!("remove {path}"),
            })
            .collect();
        assert_eq!(kinds, ["claim tcp-8081", "write attachments/podman%2Fc1%2Feth0.json", "unclaim tcp-8080"]);
        let gone = attachment_ops("podman/c1/eth0", Some(&old), None);
        assert!(matches!(gone[0], Op::Remove { .. }) && gone.len() == 3, "{gone:?}");
        assert_eq!(parse_journal(&render_journal(&ops)), Ok(ops));
    }

    #[test]
    fn apply_is_repeatable_and_claims_index_the_files() {
        let dir = std::env::temp_dir().join(format!("netnat-split-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let s = Stored { attachment: attachment("c1", &["8080:10.88.0.2:80/tcp"], &[]), allow: vec![] };
        let ops = attachment_ops("podman/c1/eth0", None, Some(&s));
        apply(&dir, &ops, None).unwrap();
        apply(&dir, &ops, None).unwrap();
        assert_eq!(claimed(&dir, "tcp-8080").unwrap(), vec!["podman/c1/eth0".to_string()]);
        let files = attachment_files(&dir).unwrap();
        assert_eq!(Stored::parse(&fs::read_to_string(&files["podman/c1/eth0"]).unwrap()), Ok(s.clone()));
        let gone = attachment_ops("podman/c1/eth0", Some(&s), None);
        apply(&dir, &gone, None).unwrap();
        apply(&dir, &gone, None).unwrap();
        assert!(all_claims(&dir).unwrap().is_empty() && attachment_files(&dir).unwrap().is_empty());
        assert!(!dir.join(CLAIMS).join("tcp-8080").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
