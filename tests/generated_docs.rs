//! Man pages (man/*.1) and shell completions (completions/*) are generated from the clap
//! definitions in src/cli.rs and committed. This test regenerates them in memory and fails when
//! a committed file differs, is missing, or is left over; `make man` (NETNAT_REGENERATE=1) writes
//! them instead.

mod common;

use common::root;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use netnat::cli::Cli;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// Repository-relative path → contents.
type Files = BTreeMap<PathBuf, Vec<u8>>;

/// Every file that should be committed under man/ and completions/.
fn generate() -> Files {
    let mut files = Files::new();
    // Pages for `help` would only repeat the others. The long version names the libnftnl and
    // libmnl of the build machine; the committed pages keep to the crate's version.
    let mut cmd = Cli::command().disable_help_subcommand(true).long_version(None::<&str>);
    cmd.build();
    files.insert(PathBuf::from("man").join("netnat.1"), top_page(&cmd));
    for sub in cmd.get_subcommands() {
        sub_pages(sub, &mut files);
    }
    for (shell, name) in [(Shell::Bash, "netnat.bash"), (Shell::Zsh, "_netnat")] {
        let mut buf = vec![];
        clap_complete::generate(shell, &mut Cli::command(), "netnat", &mut buf);
        files.insert(PathBuf::from("completions").join(name), buf);
    }
    files
}

/// One page per subcommand, recursively: netnat-network.1, netnat-network-create.1, ...
fn sub_pages(cmd: &clap::Command, files: &mut Files) {
    if cmd.is_hide_set() {
        return;
    }
    let man = Man::new(cmd.clone());
    let mut buf = vec![];
    man.render(&mut buf).expect("rendering into memory");
    files.insert(PathBuf::from("man").join(man.get_filename()), buf);
    for sub in cmd.get_subcommands() {
        sub_pages(sub, files);
    }
}

/// netnat.1: the usual sections, then EXIT STATUS, FILES and ENVIRONMENT as real man sections,
/// taken from the `after_long_help` text in src/cli.rs (so `netnat --help` says the same).
fn top_page(cmd: &clap::Command) -> Vec<u8> {
    let man = Man::new(cmd.clone());
    let mut buf = vec![];
    man.render_title(&mut buf).unwrap();
    man.render_name_section(&mut buf).unwrap();
    man.render_synopsis_section(&mut buf).unwrap();
    man.render_description_section(&mut buf).unwrap();
    man.render_options_section(&mut buf).unwrap();
    man.render_subcommands_section(&mut buf).unwrap();
    let extra = cmd.get_after_long_help().expect("src/cli.rs sets after_long_help").to_string();
    buf.extend(sections_roff(&extra).into_bytes());
    man.render_version_section(&mut buf).unwrap();
    buf.extend(see_also(cmd).into_bytes());
    // Each render_* call starts with the same two-line preamble; keep only the first.
    let text = String::from_utf8(buf).expect("roff is UTF-8");
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let mut parts = text.split(preamble);
    let mut out = parts.next().unwrap_or_default().to_string() + preamble;
    out.extend(parts);
    out.into_bytes()
}

/// Turns blocks of "HEADING:\n  TERM  text\n..." into `.SH HEADING` with one `.TP` per line.
fn sections_roff(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines();
        let heading = lines.next().and_then(|h| h.strip_suffix(':')).expect("a block starts with HEADING:");
        assert_eq!(heading, heading.to_uppercase(), "section heading {heading:?} should be upper case");
        out += &format!(".SH \"{heading}\"\n");
        for line in lines {
            let (term, desc) = line.trim().split_once("  ").expect("each line is TERM, two spaces, text");
            out += &format!(".TP\n\\fB{}\\fR\n{}\n", escape(term), escape(desc.trim()));
        }
    }
    out
}

fn see_also(cmd: &clap::Command) -> String {
    let mut pages: Vec<String> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| format!("netnat-{}(1)", s.get_name())).collect();
    pages.extend(["ip-netns(8)", "nft(8)", "conntrack(8)"].map(String::from));
    format!(".SH \"SEE ALSO\"\n{}\n", escape(&pages.join(", ")))
}

/// Escapes text for roff: backslashes, and a leading dot or quote that would read as a request.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Files now under man/ and completions/ (only those two folders belong to this test).
fn committed() -> Files {
    let mut files = Files::new();
    for dir in ["man", "completions"] {
        let Ok(entries) = fs::read_dir(root().join(dir)) else { continue };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let rel = PathBuf::from(dir).join(e.file_name());
                files.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    files
}

#[test]
fn man_pages_and_completions_are_up_to_date() {
    let want = generate();
    let have = committed();
    if std::env::var_os("NETNAT_REGENERATE").is_some_and(|v| v == "1") {
        for path in have.keys().filter(|p| !want.contains_key(*p)) {
            fs::remove_file(root().join(path)).unwrap();
            println!("removed {}", path.display());
        }
        for (path, text) in &want {
            if have.get(path) != Some(text) {
                let full = root().join(path);
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, text).unwrap();
                println!("wrote {}", path.display());
            }
        }
        return;
    }
    let mut problems = vec![];
    for (path, text) in &want {
        match have.get(path) {
            None => problems.push(format!("missing: {}", path.display())),
            Some(t) if t != text => problems.push(format!("differs: {}", path.display())),
            Some(_) => {}
        }
    }
    for path in have.keys().filter(|p| !want.contains_key(*p)) {
        problems.push(format!("left over (no such subcommand): {}", path.display()));
    }
    assert!(
        problems.is_empty(),
        "man pages or completions are stale; run `make man` and commit the result:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_subcommand_has_a_page() {
    let pages: Vec<PathBuf> = generate().into_keys().collect();
    for page in ["netnat.1", "netnat-network.1", "netnat-network-create.1", "netnat-sandbox-ls.1", "netnat-reset.1"] {
        assert!(pages.contains(&PathBuf::from("man").join(page)), "no man/{page} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.to_string_lossy().contains("help")), "a page for `help`: {pages:?}");
}
