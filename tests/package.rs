//! The Debian package (`make deb`) and `make install`, checked without installing anything on the
//! machine: the package's control fields and file list with modes (`dpkg-deb --info`,
//! `--contents`), lintian, the files' contents against the repository, the binary inside running
//! `--version`; then `make install` into a temporary DESTDIR against the package's file list.
//!
//! The package is built once per run (`make deb`, which reuses the release build), in the same
//! target directory as this test. Needs what `make deps` installs (dpkg-dev, lintian) and
//! cargo-deb (`make deb` installs it when missing).

mod common;

use common::root;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Files only Debian's tools read: in the package, not installed by `make install`.
const DEBIAN_ONLY: [&str; 2] = ["usr/share/doc/netnat/changelog.Debian.gz", "usr/share/lintian/overrides/netnat"];

/// This test's own target directory (…/target/debug/netnat → …/target), so `make` reuses builds.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_netnat")).parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// `make ARGS` in the repository, with this test's target directory. The variables of an outer
/// `make test` (its jobserver) do not belong to this one.
fn make(args: &[&str]) {
    run(Command::new("make")
        .args(args)
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL"));
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("netnat-package-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The .deb, built once for all the tests of this file.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        make(&["deb"]);
        let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
        let deb = target_dir().join("debian").join(format!("netnat_{VERSION}-1_{}.deb", arch.trim()));
        assert!(deb.is_file(), "make deb made no {}", deb.display());
        deb
    })
}

/// The package's files, unpacked once (`dpkg-deb -x`, nothing installed).
fn unpacked() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = TempDir::new("unpacked");
        run(Command::new("dpkg-deb").arg("-x").arg(deb()).arg(&dir.0));
        dir
    })
    .0
}

/// What the package must hold: path (without the leading `/`) → mode.
fn expected_files() -> BTreeMap<String, u32> {
    let mut want = BTreeMap::new();
    want.insert("usr/sbin/netnat".to_string(), 0o755);
    for page in names_in("man", ".1") {
        want.insert(format!("usr/share/man/man1/{page}.gz"), 0o644);
    }
    let units = [".service", ".timer", ".socket"].into_iter().flat_map(|s| names_in("systemd", s));
    for unit in units {
        want.insert(format!("lib/systemd/system/{unit}"), 0o644);
    }
    for path in [
        "usr/share/bash-completion/completions/netnat",
        "usr/share/zsh/vendor-completions/_netnat",
        "etc/netnat/netnat.toml",
        "usr/share/doc/netnat/examples/demo.toml",
        "usr/share/doc/netnat/examples/example-all-options.toml",
        "usr/share/doc/netnat/copyright",
    ]
    .into_iter()
    .chain(DEBIAN_ONLY)
    {
        want.insert(path.to_string(), 0o644);
    }
    want
}

/// File names in a repository folder that end with `suffix`.
fn names_in(dir: &str, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no {dir}/*{suffix}");
    names
}

/// Which repository file each packaged file is (compressed ones are compared uncompressed).
fn source_of(path: &str) -> Option<PathBuf> {
    let name = path.rsplit('/').next().unwrap();
    let rel = match path {
        p if p.starts_with("usr/share/man/man1/") => format!("man/{}", name.trim_end_matches(".gz")),
        p if p.starts_with("lib/systemd/system/") => format!("systemd/{name}"),
        p if p.starts_with("usr/share/doc/netnat/examples/") => format!("rules/{name}"),
        "usr/share/bash-completion/completions/netnat" => "completions/netnat.bash".into(),
        "usr/share/zsh/vendor-completions/_netnat" => "completions/_netnat".into(),
        "etc/netnat/netnat.toml" => "packaging/netnat.toml".into(),
        "usr/share/doc/netnat/copyright" => "packaging/copyright".into(),
        "usr/share/doc/netnat/changelog.Debian.gz" => "packaging/changelog".into(),
        "usr/share/lintian/overrides/netnat" => "packaging/lintian-overrides".into(),
        _ => return None,
    };
    Some(root().join(rel))
}

fn read_maybe_gzipped(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        run(Command::new("gzip").arg("-dc").arg(path)).stdout
    } else {
        fs::read(path).unwrap()
    }
}

fn field(name: &str) -> String {
    stdout(Command::new("dpkg-deb").arg("--field").arg(deb()).arg(name)).trim().to_string()
}

#[test]
fn control_fields_dependencies_and_no_maintainer_scripts() {
    let info = stdout(Command::new("dpkg-deb").arg("--info").arg(deb()));
    println!("{info}");
    assert_eq!(field("Package"), "netnat");
    assert_eq!(field("Version"), format!("{VERSION}-1"));
    // The changelog's latest entry is this version (lintian and apt read it from there).
    let changelog = fs::read_to_string(root().join("packaging/changelog")).unwrap();
    let first = changelog.lines().next().unwrap();
    assert!(first.starts_with(&format!("netnat ({VERSION}-1) ")), "packaging/changelog starts {first:?}");
    assert_eq!(field("Recommends"), "nftables");
    assert_eq!(field("Section"), "net");
    // Depends comes from the libraries the binary links (dpkg-shlibdeps): libnftnl and libmnl.
    let depends = field("Depends");
    for lib in ["libnftnl", "libmnl", "libc6"] {
        assert!(depends.split(", ").any(|d| d.starts_with(lib)), "Depends lacks {lib}: {depends}");
    }
    let control = TempDir::new("control");
    run(Command::new("dpkg-deb").arg("--control").arg(deb()).arg(&control.0));
    assert_eq!(fs::read_to_string(control.0.join("conffiles")).unwrap(), "/etc/netnat/netnat.toml\n");
    // Installing runs no script, so it cannot enable or start a unit.
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(!control.0.join(script).exists(), "the package has a {script}");
    }
}

#[test]
fn contents_are_the_expected_files_with_their_modes() {
    let listing = stdout(Command::new("dpkg-deb").arg("--contents").arg(deb()));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        // drwxr-xr-x 0/0  0 2026-12-02 00:00 ./usr/share/
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "unexpected listing line {line:?}");
        let (perms, owner, path) = (cols[0], cols[1], cols[5].trim_start_matches("./"));
        assert_eq!(owner, "0/0", "{path} is not owned by root: {line}");
        match &perms[..1] {
            "d" => assert_eq!(perms, "drwxr-xr-x", "{line}"),
            "-" => {
                files.insert(path.to_string(), perms.to_string());
            }
            _ => panic!("neither file nor directory: {line}"),
        }
    }
    let want: BTreeMap<String, String> = expected_files()
        .into_iter()
        .map(|(p, mode)| (p, if mode == 0o755 { "-rwxr-xr-x" } else { "-rw-r--r--" }.to_string()))
        .collect();
    assert_same(&files, &want, "the package (left) and the expected files (right)");
}

#[test]
fn lintian_reports_no_error_or_warning() {
    // Warnings that are intended are overridden, with the reason, in packaging/lintian-overrides.
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--info"])
        .arg(deb())
        .output()
        .expect("running lintian (installed by `make deps`)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success() && !text.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn packaged_files_are_the_repository_files_and_the_binary_runs() {
    let dir = unpacked();
    for path in expected_files().keys() {
        let Some(src) = source_of(path) else { continue };
        assert!(
            read_maybe_gzipped(&dir.join(path)) == fs::read(&src).unwrap(),
            "{path} in the package differs from {}",
            src.display()
        );
    }
    // The binary inside: the crate's version, and the libraries it was built against.
    let netnat = dir.join("usr/sbin/netnat");
    let version = stdout(Command::new(&netnat).arg("--version"));
    let modversion = |lib: &str| stdout(Command::new("pkg-config").args(["--modversion", lib])).trim().to_string();
    assert_eq!(
        version,
        format!(
            "netnat {VERSION}\nbuilt against libnftnl {}, libmnl {}\n",
            modversion("libnftnl"),
            modversion("libmnl")
        )
    );
    // The shipped configuration and the examples are valid files (no root, no kernel needed);
    // the conffile describes nothing, so enabling netnat.service with it makes nothing.
    for toml in ["etc/netnat/netnat.toml", "usr/share/doc/netnat/examples/demo.toml"] {
        run(Command::new(&netnat).args(["apply", "--check", "-f"]).arg(dir.join(toml)));
    }
    let conf = fs::read_to_string(dir.join("etc/netnat/netnat.toml")).unwrap();
    assert!(conf.lines().all(|l| l.is_empty() || l.starts_with('#')), "the shipped netnat.toml configures something");
    // The units run the packaged binary on the packaged configuration.
    for unit in names_in("systemd", ".service") {
        let text = fs::read_to_string(dir.join("lib/systemd/system").join(&unit)).unwrap();
        for exec in text.lines().filter(|l| l.starts_with("Exec")) {
            assert!(exec.contains("=/usr/sbin/netnat "), "{unit}: {exec}");
        }
        if unit == "netnat.service" {
            assert!(text.contains("ConditionPathExists=/etc/netnat/netnat.toml\n"), "{unit}");
            assert!(text.contains(" -f /etc/netnat/netnat.toml\n"), "{unit}");
        }
    }
}

#[test]
fn copyright_names_both_licenses() {
    let copyright = fs::read_to_string(unpacked().join("usr/share/doc/netnat/copyright")).unwrap();
    assert!(copyright.contains("\nLicense: MIT or Apache-2.0\n"), "{copyright}");
    // The MIT text in full, as a DEP-5 field (each line indented, empty lines as " .").
    let mit: String = fs::read_to_string(root().join("LICENSE-MIT"))
        .unwrap()
        .lines()
        .map(|l| if l.is_empty() { " .\n".to_string() } else { format!(" {l}\n") })
        .collect();
    assert!(copyright.contains(&format!("\nLicense: MIT\n{mit}")), "the copyright file lacks LICENSE-MIT");
    // Debian policy 12.5: the Apache text is referred to, not copied (lintian errors otherwise);
    // the file referred to is LICENSE-APACHE.
    assert!(copyright.contains("\nLicense: Apache-2.0\n"), "{copyright}");
    assert!(copyright.contains("/usr/share/common-licenses/Apache-2.0"), "{copyright}");
    let apache = fs::read_to_string(root().join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License\n                           Version 2.0, January 2004"));
    if let Ok(debian) = fs::read_to_string("/usr/share/common-licenses/Apache-2.0") {
        assert_eq!(apache, debian, "LICENSE-APACHE is not the text of /usr/share/common-licenses/Apache-2.0");
    }
}

/// Fails with the paths that are only on one side or differ (mode), rather than two long maps.
fn assert_same<V: PartialEq + std::fmt::Debug>(have: &BTreeMap<String, V>, want: &BTreeMap<String, V>, what: &str) {
    let mut diff = vec![];
    for (path, v) in have {
        match want.get(path) {
            None => diff.push(format!("only left: {path} {v:?}")),
            Some(w) if w != v => diff.push(format!("{path}: {v:?} != {w:?}")),
            Some(_) => {}
        }
    }
    diff.extend(want.iter().filter(|(p, _)| !have.contains_key(*p)).map(|(p, w)| format!("only right: {p} {w:?}")));
    assert!(diff.is_empty(), "{what} differ:\n  {}", diff.join("\n  "));
}

/// Files under `dir`, relative, with their permission bits.
fn tree(dir: &Path) -> BTreeMap<String, u32> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, u32>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, meta.permissions().mode() & 0o7777);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn make_install_installs_the_package_files() {
    // With the package's prefixes, the same files with the same modes and contents.
    let dest = TempDir::new("destdir");
    let destdir = format!("DESTDIR={}", dest.0.display());
    make(&["install", &destdir, "PREFIX=/usr", "UNITDIR=/lib/systemd/system"]);
    let installed = tree(&dest.0);
    let mut want = expected_files();
    for path in DEBIAN_ONLY {
        want.remove(path);
    }
    assert_same(&installed, &want, "make install (left) and the package (right)");
    for path in installed.keys().filter(|p| *p != "usr/sbin/netnat") {
        assert!(
            read_maybe_gzipped(&dest.0.join(path)) == read_maybe_gzipped(&unpacked().join(path)),
            "{path}: make install and the package differ"
        );
    }
    let version = |p: &Path| stdout(Command::new(p).arg("--version"));
    assert_eq!(version(&dest.0.join("usr/sbin/netnat")), version(&unpacked().join("usr/sbin/netnat")));

    // The default prefix, /usr/local: the units run the binary installed there.
    let local = TempDir::new("destdir-local");
    let localdir = format!("DESTDIR={}", local.0.display());
    make(&["install", &localdir]);
    assert!(local.0.join("usr/local/sbin/netnat").is_file());
    let unit = fs::read_to_string(local.0.join("usr/local/lib/systemd/system/netnat.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/sbin/netnat apply -f /etc/netnat/netnat.toml\n"), "{unit}");
    // Like a conffile, an edited /etc/netnat/netnat.toml survives a second install; uninstall
    // removes everything else.
    let conf = local.0.join("etc/netnat/netnat.toml");
    fs::write(&conf, "# mine\n").unwrap();
    make(&["install", &localdir]);
    assert_eq!(fs::read_to_string(&conf).unwrap(), "# mine\n");
    make(&["uninstall", &localdir]);
    assert_eq!(tree(&local.0).into_keys().collect::<Vec<_>>(), ["etc/netnat/netnat.toml"]);
}
