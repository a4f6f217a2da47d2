//! Faults of netnat's own record (issue 12): a damaged or lost record bricks nothing, and a
//! command that cannot write its record (full, read-only, immutable) changes nothing in the
//! kernel. Each test runs in its own throwaway network + mount namespace, with real traffic.

mod common;
use common::*;
use std::path::Path;

const DIR: &str = "/run/netnat";
const RECORD: &str = "/run/netnat/state.json";

#[derive(Clone, Copy, Debug)]
enum Damage {
    Garbage,
    Truncated,
    Empty,
    FutureFormat,
    DeletedDir,
}

/// Damages the record; returns the bytes left in state.json (None: the directory is gone).
fn damage(d: Damage) -> Option<Vec<u8>> {
    let good = std::fs::read(RECORD).expect("a record to damage");
    let bad = match d {
        Damage::Garbage => b"\x00\x01{ this is not a record \xff\xfe".to_vec(),
        Damage::Truncated => good[..good.len() / 2].to_vec(),
        Damage::Empty => vec![],
        Damage::FutureFormat => {
            let text = String::from_utf8(good).unwrap();
            assert!(text.contains("\"format\": 1,"), "{text}");
            text.replace("\"format\": 1,", "\"format\": 99,").into_bytes()
        }
        Damage::DeletedDir => {
            std::fs::remove_dir_all(DIR).unwrap();
            return None;
        }
    };
    std::fs::write(RECORD, &bad).unwrap();
    Some(bad)
}

/// The files netnat kept the damaged record as.
fn kept_records() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(DIR) else { return vec![] };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.damaged-"))
        .collect();
    v.sort();
    v
}

/// With a network, two sandboxes and published ports live, a damaged record: the ports keep
/// answering, `ls --json` lists them (one warning line), `audit` says `state.unreadable`,
/// `publish` refuses naming `netnat recover` and changes nothing; `recover` rebuilds the record
/// and keeps the damaged file; then everything works again, down to a save → reset → apply.
fn damaged_record_is_survived(d: Damage) {
    let servers = seed_with_published_ports();
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "audit before the damage:\n{out}");
    let bad = damage(d);

    assert_published(9090, "ns1");
    assert_published(20005, "ns2");

    let (code, out, err) = netnat_out(&["ls", "--json"]);
    assert_eq!(code, 0, "{err}");
    let maps: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ports: Vec<(u64, u64, String)> = maps
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = |k: &str| m[k].as_u64().unwrap();
            (p("host_port"), p("host_port_end"), m["container_ip"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(ports, vec![(9090, 9090, "172.16.1.1".into()), (20000, 20999, "172.16.1.2".into())]);
    assert_eq!(err.lines().count(), 1, "one warning line: {err}");
    assert!(err.contains("warning") && err.contains(RECORD) && err.contains("netnat recover"), "{err}");

    // The other commands that only read answer too, each with the one warning line.
    for (args, want) in [
        (&["show"][..], "table inet netnat"),
        (&["save"], "20000-20999:172.16.1.2:20000-20999"),
        (&["graph"], "Container_ns2"),
        (&["network", "ls"], "172.16.0.0/16"),
        (&["sandbox", "ls"], "172.16.1.2"),
    ] {
        let (code, out, err) = netnat_out(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains(want), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one warning line: {err}");
    }

    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("state.unreadable") && out.contains(RECORD), "{out}");
    assert!(!out.contains("drift.") && !out.contains("leftover."), "the kernel matches itself:\n{out}");

    let before = settled_snapshot();
    let err = fails(&["publish", "9091:172.16.1.1:8080"], 1);
    assert!(err.contains(RECORD) && err.contains("netnat recover"), "{err}");
    assert_eq!(settled_snapshot(), before, "a refused publish changed the kernel");

    let out = ok(&["recover"]);
    assert!(out.contains("1 network(s), 2 sandbox(es), 2 endpoint(s), 2 published mapping(s)"), "{out}");
    match &bad {
        Some(bytes) => {
            let kept = kept_records();
            assert_eq!(kept.len(), 1, "{kept:?}");
            assert_eq!(&std::fs::read(format!("{DIR}/{}", kept[0])).unwrap(), bytes, "the damaged file was changed");
            assert!(out.contains(&kept[0]), "{out}");
        }
        None => assert!(kept_records().is_empty()),
    }

    ok(&["publish", "9091:172.16.1.1:8080"]);
    assert_published(9091, "ns1");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "audit after recover:\n{out}");

    let saved = ok(&["save"]);
    std::fs::write("/run/saved.toml", &saved).unwrap();
    drop(servers);
    ok(&["reset"]);
    ok(&["apply", "-f", "/run/saved.toml"]);
    let _servers = [
        tcp_server(Some(&ns("Container_ns1")), "172.16.1.1:8080", "ns1"),
        tcp_server(Some(&ns("Container_ns2")), "172.16.1.2:20005", "ns2"),
    ];
    for (port, name) in [(9090, "ns1"), (9091, "ns1"), (20005, "ns2")] {
        assert_published(port, name);
    }
    assert_eq!(ok(&["save"]), saved, "save → reset → apply did not round-trip");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "audit after the round trip:\n{out}");
}

/// On a damaged record, `reset` removes everything netnat made and nothing else: the kernel is
/// byte-identical to what it was before netnat ran, a namespace made with `ip netns add` and a
/// foreign table included.
fn reset_on_damaged_record_removes_only_netnats(d: Damage) {
    make_external_host();
    sh("ip netns add foreign && nft add table ip foreign && nft add chain ip foreign c '{ type filter hook forward priority 0; }' \
        && nft add rule ip foreign c accept");
    let baseline = settled_snapshot();
    let _servers = seed_with_published_ports();
    let bad = damage(d);
    let out = ok(&["reset"]);
    assert!(out.contains("found by its marks in the kernel"), "{out}");
    assert_eq!(settled_snapshot(), baseline, "reset on a damaged record left or removed something");
    // The damaged file is kept; the record is usable again.
    assert_eq!(kept_records().len(), usize::from(bad.is_some()));
    let (code, out, err) = netnat_out(&["ls"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
}

isolated!(garbage_record_is_survived, inner_garbage, { damaged_record_is_survived(Damage::Garbage) });
isolated!(truncated_record_is_survived, inner_truncated, { damaged_record_is_survived(Damage::Truncated) });
isolated!(empty_record_is_survived, inner_empty, { damaged_record_is_survived(Damage::Empty) });
isolated!(future_format_record_is_survived, inner_future, { damaged_record_is_survived(Damage::FutureFormat) });
isolated!(deleted_state_dir_is_survived, inner_deleted, { damaged_record_is_survived(Damage::DeletedDir) });

isolated!(reset_on_garbage_record, inner_reset_garbage, {
    reset_on_damaged_record_removes_only_netnats(Damage::Garbage)
});
isolated!(reset_on_truncated_record, inner_reset_truncated, {
    reset_on_damaged_record_removes_only_netnats(Damage::Truncated)
});
isolated!(reset_on_empty_record, inner_reset_empty, { reset_on_damaged_record_removes_only_netnats(Damage::Empty) });
isolated!(reset_on_future_format_record, inner_reset_future, {
    reset_on_damaged_record_removes_only_netnats(Damage::FutureFormat)
});
isolated!(reset_on_deleted_state_dir, inner_reset_deleted, {
    reset_on_damaged_record_removes_only_netnats(Damage::DeletedDir)
});

// ---- a record that cannot be written ----

const APPLY_FILE: &str = r#"
[[network]]
name = "netA"
subnet = "10.60.0.0/24"
[[sandbox]]
name = "s1"
[[sandbox.endpoint]]
network = "netA"
ip = "10.60.0.2"
publish = ["8080:10.60.0.2:80"]
"#;

/// The four commands of the issue, each against an empty record in `dir`.
fn commands(dir: &str) -> Vec<Vec<String>> {
    std::fs::write("/run/apply.toml", APPLY_FILE).unwrap();
    let rows: [&[&str]; 4] = [
        &["publish", "20000-20999:172.16.1.1:20000-20999"],
        &["network", "create", "n1", "--subnet", "10.50.0.0/24"],
        &["sandbox", "create", "s1"],
        &["apply", "-f", "/run/apply.toml"],
    ];
    rows.iter().map(|r| ["--state-dir", dir].iter().chain(r.iter()).map(|s| s.to_string()).collect()).collect()
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
}

/// `block` makes `dir` unwritable and `unblock` undoes it. Each command then exits 1 naming the
/// reason and leaves the kernel byte-identical; once unblocked, it succeeds. Between commands,
/// `reset` brings the kernel back to the baseline.
fn unwritable_dir_changes_nothing(dir: &str, reason: &str, block: &dyn Fn(), unblock: &dyn Fn()) {
    make_external_host();
    let baseline = settled_snapshot();
    for cmd in commands(dir) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        block();
        let forward = ip_forward();
        let err = fails(&args, 1);
        assert!(err.contains(reason) && err.contains(dir), "{args:?}: {err}");
        assert_eq!(settled_snapshot(), baseline, "{args:?} changed the kernel");
        assert_eq!(ip_forward(), forward, "{args:?} changed ip_forward");
        unblock();
        let out = ok(&args);
        assert_ne!(settled_snapshot(), baseline, "{args:?} succeeded without changing anything:\n{out}");
        ok(&["--state-dir", dir, "reset"]);
        assert_eq!(settled_snapshot(), baseline, "reset after {args:?}");
    }
}

isolated!(full_state_dir_changes_nothing, inner_full_state_dir, {
    const FULL: &str = "/run/full";
    std::fs::create_dir_all(FULL).unwrap();
    // 4 KiB: one page, so the filler takes it all; each command starts with a fresh tmpfs
    // (an existing record and its replacement would need two pages).
    let block = || {
        sh(&format!("mount -t tmpfs -o size=4k tmpfs {FULL} && ! head -c 8192 /dev/zero > {FULL}/filler 2>/dev/null"));
    };
    let unblock = || std::fs::remove_file(format!("{FULL}/filler")).unwrap();
    // The reset between commands needs room for its own record: it runs after the unmount,
    // on the lost record (it finds what netnat made by its marks in the kernel).
    make_external_host();
    let baseline = settled_snapshot();
    for cmd in commands(FULL) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        block();
        let forward = ip_forward();
        let err = fails(&args, 1);
        assert!(err.contains("No space left on device") && err.contains(FULL), "{args:?}: {err}");
        assert_eq!(settled_snapshot(), baseline, "{args:?} changed the kernel");
        assert_eq!(ip_forward(), forward, "{args:?} changed ip_forward");
        unblock();
        ok(&args);
        assert_ne!(settled_snapshot(), baseline, "{args:?} succeeded without changing anything");
        sh(&format!("umount {FULL}"));
        ok(&["--state-dir", FULL, "reset"]);
        assert_eq!(settled_snapshot(), baseline, "reset after {args:?}");
    }
});

isolated!(read_only_state_dir_changes_nothing, inner_read_only_state_dir, {
    const RO: &str = "/run/ro";
    std::fs::create_dir_all(RO).unwrap();
    // A record and lock file exist, as on a machine where netnat ran before.
    ok(&["--state-dir", RO, "reset"]);
    let block = || {
        sh(&format!("mount --bind {RO} {RO} && mount -o remount,bind,ro {RO}"));
    };
    let unblock = || {
        sh(&format!("umount {RO}"));
    };
    unwritable_dir_changes_nothing(RO, "Read-only file system", &block, &unblock);
});

isolated!(missing_state_dir_that_cannot_be_created_changes_nothing, inner_uncreatable_state_dir, {
    // Its parent is a read-only mount: the directory cannot be made.
    std::fs::create_dir_all("/run/parent").unwrap();
    let dir = "/run/parent/netnat";
    let block = || {
        sh(&format!("rm -rf {dir} && mount --bind /run/parent /run/parent && mount -o remount,bind,ro /run/parent"));
    };
    let unblock = || {
        sh("umount /run/parent");
    };
    unwritable_dir_changes_nothing(dir, "creating state directory", &block, &unblock);
});

// The record can be prepared but not replaced (an immutable state.json: the rename fails after
// the kernel changed): the command puts the kernel back and says so. (Commands that remove
// things are put back too, but what they removed comes back new: counters at zero, an empty
// namespace; see docs/record-faults.md.)
isolated!(record_that_cannot_be_replaced_rolls_the_kernel_back, inner_rollback, {
    let _servers = seed_with_published_ports();
    let before = settled_snapshot();
    sh(&format!("chattr +i {RECORD}"));
    for args in [
        &["publish", "9091:172.16.1.1:8080"][..],
        &["network", "create", "n2", "--subnet", "10.70.0.0/24"],
        &["sandbox", "create", "s3", "--network", "MyDocker0"],
    ] {
        let err = fails(args, 1);
        assert!(err.contains("put back") && err.contains(RECORD), "{args:?}: {err}");
        assert_eq!(settled_snapshot(), before, "{args:?} left the kernel changed");
    }
    sh(&format!("chattr -i {RECORD}"));
    assert_published(9090, "ns1");
    let (code, out, _) = netnat_out(&["audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(Path::new(RECORD).exists());
});
