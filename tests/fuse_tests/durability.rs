//! What survives an unmount, and what survives kill -9 of the daemon.
//!
//! The rule under test: once close() or fsync() returns, that version
//! survives kill -9 and a remount; a crash never shows a half-written
//! version, only the last closed one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    Event, KIB, MIB, Meta, Mounted, Node, assert_trees_eq, check, cpath, no_spawns, pattern,
    sha512_hex, tree, tree_meta,
};

/// Version `version` of crash-test file `file`: a header naming both, then
/// bytes derived from them, so any file can be identified and checked whole.
fn versioned(file: &str, version: u32) -> Vec<u8> {
    let h = file.bytes().fold(version as u64, |a, b| {
        a.wrapping_mul(131).wrapping_add(b as u64)
    });
    let len = if (h % 5) == 0 {
        2 * MIB + (h % 700_000) as usize
    } else {
        64 + (h % (300 * KIB as u64)) as usize
    };
    let mut v = format!("{file} v{version} len={len}\n").into_bytes();
    let rest = len - v.len();
    v.extend(pattern(h, rest));
    v
}

/// The (file, version) a content is a complete copy of, if any.
fn identify(data: &[u8]) -> Option<(String, u32)> {
    let nl = data.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&data[..nl]).ok()?;
    let mut parts = header.split(' ');
    let file = parts.next()?.to_string();
    let version: u32 = parts.next()?.strip_prefix('v')?.parse().ok()?;
    (versioned(&file, version) == data).then_some((file, version))
}

/// open(O_CREAT|O_TRUNC) + write + close, with the close result checked
/// (dropping a `File` would ignore it).
fn write_and_close(p: &Path, data: &[u8]) -> io::Result<()> {
    let _quiet = no_spawns();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)?;
    f.write_all(data)?;
    // SAFETY: we own the descriptor and close it exactly once.
    check(unsafe { libc::close(f.into_raw_fd()) })
}

/// How `got` differs from `want`, briefly.
fn describe(got: &[u8], want: &[u8]) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let last = got.iter().zip(want).rposition(|(a, b)| a != b);
    format!(
        "found {} bytes, expected {}; differing bytes within the common length: {}",
        got.len(),
        want.len(),
        match (first, last) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "none".into(),
        }
    )
}

#[derive(Default)]
struct Ledger {
    /// Last version whose close returned, per file.
    closed: BTreeMap<String, u32>,
    /// Version being written when the writer stopped, per file.
    inflight: BTreeMap<String, u32>,
}

#[test]
fn crash_under_load_keeps_every_closed_version() {
    let m = Arc::new(Mounted::new());
    const OLD: usize = 24;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for i in 0..OLD {
        let name = format!("old{i:02}");
        write_and_close(&m.p(&name), &versioned(&name, 0)).unwrap();
        ledger.lock().unwrap().closed.insert(name, 0);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let closes = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for t in 0..2usize {
        let (m, ledger, stop, closes) = (
            Arc::clone(&m),
            Arc::clone(&ledger),
            Arc::clone(&stop),
            Arc::clone(&closes),
        );
        writers.push(thread::spawn(move || {
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                // Alternate: overwrite one of this writer's old files, create a new file.
                let (name, version) = if k.is_multiple_of(2) {
                    let name = format!("old{:02}", (t + 2 * (k / 2)) % OLD);
                    let v = ledger.lock().unwrap().closed[&name] + 1;
                    (name, v)
                } else {
                    (format!("new{t}_{k:04}"), 0)
                };
                ledger
                    .lock()
                    .unwrap()
                    .inflight
                    .insert(name.clone(), version);
                let data = versioned(&name, version);
                if let Err(e) = write_and_close(&m.p(&name), &data) {
                    eprintln!("writer {t} stopped at {name} v{version}: {e}");
                    return;
                }
                let mut l = ledger.lock().unwrap();
                l.inflight.remove(&name);
                l.closed.insert(name, version);
                closes.fetch_add(1, Ordering::SeqCst);
                k += 1;
            }
        }));
    }

    let start = Instant::now();
    while closes.load(Ordering::SeqCst) < 60 && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(5));
    }
    m.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer panicked");
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "crash test: {} closes before kill -9 after {:?}; in flight: {:?}",
        closes.load(Ordering::SeqCst),
        start.elapsed(),
        ledger.inflight
    );
    assert!(
        closes.load(Ordering::SeqCst) >= 10,
        "too few closes before the kill to mean anything"
    );

    m.mount();

    let mut problems = Vec::new();
    let present: BTreeSet<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let all: BTreeSet<&String> = ledger.closed.keys().chain(ledger.inflight.keys()).collect();
    for name in &present {
        if !all.contains(name) {
            problems.push(format!("{name}: unexpected entry after recovery"));
        }
    }
    for name in all {
        let closed = ledger.closed.get(name).copied();
        let inflight = ledger.inflight.get(name).copied();
        let data = match fs::read(m.p(name)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(v) = closed {
                    problems.push(format!("{name}: missing, but v{v} was closed"));
                }
                continue;
            }
            Err(e) => {
                problems.push(format!("{name}: read failed: {e}"));
                continue;
            }
        };
        if data.is_empty() && closed.is_none() {
            continue; // created, never closed: the empty file of the create is fine
        }
        match identify(&data) {
            None => problems.push(format!(
                "{name}: {} bytes that are no complete version (closed {closed:?}, in flight {inflight:?}); starts {:?}",
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(40)])
            )),
            Some((file, v)) if file != *name => problems.push(format!("{name}: holds the content of {file} v{v}")),
            Some((_, v)) if Some(v) == closed || Some(v) == inflight => {}
            Some((_, v)) => problems.push(format!("{name}: shows v{v}, expected closed {closed:?} (or in flight {inflight:?})")),
        }
    }
    assert!(
        problems.is_empty(),
        "after kill -9 under load:\n{}",
        problems.join("\n")
    );

    // The journal has a create for each new file whose close returned, and an
    // event carrying the hash of each file's surviving content.
    let tree_now: BTreeMap<String, Vec<u8>> = present
        .iter()
        .map(|n| (n.clone(), fs::read(m.p(n)).unwrap()))
        .collect();
    let events = m.wait_events(0, Duration::from_secs(15), |evs| {
        tree_now
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .all(|(name, data)| {
                evs.iter().any(|e| {
                    e.file_path == *name && e.file_hash.as_deref() == Some(&sha512_hex(data))
                })
            })
    });
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids not increasing: {ids:?}"
    );
    let mut missing = Vec::new();
    for (name, _) in ledger.closed.iter().filter(|(n, _)| n.starts_with("new")) {
        if !events
            .iter()
            .any(|e| e.event_type == "create" && e.file_path == *name)
        {
            missing.push(format!("{name}: no create event"));
        }
    }
    for (name, data) in &tree_now {
        if data.is_empty() {
            continue;
        }
        let h = sha512_hex(data);
        if !events
            .iter()
            .any(|e| e.file_path == *name && e.file_hash.as_deref() == Some(&h))
        {
            missing.push(format!(
                "{name}: no event with the hash of its content ({} bytes)",
                data.len()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "journal after kill -9:\n{}",
        missing.join("\n")
    );
}

#[test]
fn fsync_without_close_survives_kill9() {
    let m = Mounted::new();
    let existing = pattern(1, 100_000);
    fs::write(m.p("existing"), &existing).unwrap();

    let new_data = pattern(2, 3 * MIB + 17);
    let quiet = no_spawns();
    let mut f = File::create(m.p("synced_new")).unwrap();
    f.write_all(&new_data).unwrap();
    f.sync_all().unwrap();

    let g = OpenOptions::new()
        .write(true)
        .open(m.p("existing"))
        .unwrap();
    g.write_all_at(b"PATCHED", 50_000).unwrap();
    g.sync_all().unwrap();
    let mut expected = existing.clone();
    expected[50_000..50_007].copy_from_slice(b"PATCHED");

    m.kill9();
    drop(quiet);
    drop((f, g));
    m.mount();
    assert_eq!(
        fs::read(m.p("synced_new")).unwrap(),
        new_data,
        "fsync'd new file after kill -9"
    );
    assert_eq!(
        fs::read(m.p("existing")).unwrap(),
        expected,
        "fsync'd patch after kill -9"
    );
}

#[test]
fn closed_file_survives_immediate_kill9() {
    let m = Mounted::new();
    let data = pattern(3, 5 * MIB + 3);
    fs::write(m.p("just_closed"), &data).unwrap();
    fs::write(m.p("small"), b"tiny").unwrap();
    m.kill9_and_remount();
    assert_eq!(fs::read(m.p("just_closed")).unwrap(), data);
    assert_eq!(fs::read(m.p("small")).unwrap(), b"tiny");
}

#[test]
fn unclosed_in_place_writes_show_last_closed_version_after_kill9() {
    let m = Mounted::new();
    let v1 = pattern(10, 200_000);
    fs::write(m.p("patched"), &v1).unwrap();

    let quiet = no_spawns();
    // In place over part of the file, never closed nor synced.
    let a = OpenOptions::new().write(true).open(m.p("patched")).unwrap();
    a.write_all_at(&pattern(12, 120_000), 30_000).unwrap();
    // A new file, never closed.
    let mut c = File::create(m.p("never_closed")).unwrap();
    c.write_all(&pattern(14, 70_000)).unwrap();
    thread::sleep(Duration::from_millis(300));
    m.kill9();
    drop(quiet);
    drop((a, c));

    m.mount();
    let got = fs::read(m.p("patched")).unwrap();
    assert!(
        got == v1,
        "patched-but-unclosed file must show its last closed version; {}",
        describe(&got, &v1)
    );
    match fs::read(m.p("never_closed")) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        Ok(d) => assert!(
            d.is_empty(),
            "a never-closed new file is absent or empty, not {} partial bytes",
            d.len()
        ),
    }
}

#[test]
fn unclosed_o_trunc_rewrite_shows_last_closed_version_after_kill9() {
    let m = Mounted::new();
    let v1 = pattern(11, 150_000);
    fs::write(m.p("rewritten"), &v1).unwrap();

    let quiet = no_spawns();
    // open(O_TRUNC) and a new, longer content, never closed nor synced.
    let mut b = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("rewritten"))
        .unwrap();
    b.write_all(&pattern(13, 400_000)).unwrap();
    thread::sleep(Duration::from_millis(300));
    m.kill9();
    drop(quiet);
    drop(b);

    m.mount();
    let got = fs::read(m.p("rewritten")).unwrap();
    assert!(
        got == v1,
        "truncated-and-rewritten-but-unclosed file must show its last closed version; {}",
        describe(&got, &v1)
    );
}

/// A spawned process closes its inherited copy of the writer's descriptor
/// (FUSE FLUSH); that must not make the half-written content a version.
#[test]
fn spawn_while_writing_then_kill9_shows_last_closed_version() {
    let m = Mounted::new();
    let v1 = pattern(15, 100_000);
    fs::write(m.p("doc"), &v1).unwrap();
    let f = OpenOptions::new().write(true).open(m.p("doc")).unwrap();
    f.write_all_at(b"HALF-WRITTEN", 1000).unwrap();
    crate::harness::run_cmd(
        &mut std::process::Command::new("true"),
        Duration::from_secs(10),
    )
    .expect_ok();
    m.kill9();
    drop(f);
    m.mount();
    let got = fs::read(m.p("doc")).unwrap();
    assert!(
        got == v1,
        "after a spawn while writing and kill -9, the file must show its last closed version; {}",
        describe(&got, &v1)
    );
}

#[test]
fn namespace_and_attribute_changes_survive_kill9() {
    let m = Mounted::new();
    fs::create_dir_all(m.p("a/b")).unwrap();
    fs::write(m.p("a/b/f"), b"f").unwrap();
    fs::write(m.p("g"), b"g").unwrap();
    fs::write(m.p("h"), b"hhhhhhhhhh").unwrap();
    fs::write(m.p("gone"), b"gone").unwrap();
    fs::create_dir(m.p("gonedir")).unwrap();

    fs::create_dir(m.p("newdir")).unwrap();
    fs::rename(m.p("g"), m.p("newdir/g2")).unwrap();
    fs::rename(m.p("a"), m.p("a_renamed")).unwrap();
    fs::remove_file(m.p("gone")).unwrap();
    fs::remove_dir(m.p("gonedir")).unwrap();
    symlink("a_renamed/b/f", m.p("link")).unwrap();
    fs::set_permissions(m.p("h"), fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::chown(m.p("h"), Some(1000), Some(1001)).unwrap();
    // SAFETY: valid path.
    check(unsafe { libc::truncate(cpath(&m.p("h")).as_ptr(), 4) }).unwrap();

    let before = tree_meta(&m.mnt);
    m.kill9_and_remount();
    let after = tree_meta(&m.mnt);
    let strip = |t: &BTreeMap<String, (Node, Meta)>| -> BTreeMap<String, (Node, u32, u32)> {
        t.iter()
            .map(|(k, (n, meta))| (k.clone(), (n.clone(), meta.uid, meta.gid)))
            .collect()
    };
    assert_trees_eq(
        &strip(&before),
        &strip(&after),
        "tree after kill -9 (content, kinds, modes, owners)",
    );
    for (k, (n, meta)) in &before {
        if matches!(n, Node::File { .. }) {
            assert_eq!(meta.mtime, after[k].1.mtime, "mtime of {k} after kill -9");
        }
    }
}

#[test]
fn content_and_metadata_survive_remount() {
    let m = Mounted::new();
    fs::create_dir_all(m.p("docs/deep/deeper")).unwrap();
    fs::create_dir(m.p("empty_dir")).unwrap();
    fs::write(m.p("docs/a.txt"), b"alpha").unwrap();
    fs::write(m.p("docs/deep/big.bin"), pattern(20, 6 * MIB + 1)).unwrap();
    fs::write(m.p("docs/deep/deeper/empty"), b"").unwrap();
    fs::write(m.p("exec.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(m.p("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(m.p("docs/deep"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(m.p("docs/a.txt"), Some(501), Some(20)).unwrap();
    symlink("docs/a.txt", m.p("link_rel")).unwrap();
    symlink("/nonexistent/target", m.p("link_dangling")).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(m.p("docs/a.txt"))
        .unwrap();
    f.set_times(
        fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + Duration::new(1_234_567_890, 987_654_321)),
    )
    .unwrap();
    drop(f);

    let before = tree_meta(&m.mnt);
    assert_eq!(before.len(), 10, "{before:#?}");
    m.unmount();
    assert_eq!(
        fs::read_dir(&m.mnt).unwrap().count(),
        0,
        "the bare mountpoint is empty after unmount"
    );
    m.mount();
    assert_trees_eq(&before, &tree_meta(&m.mnt), "tree after unmount + mount");
    m.remount();
    assert_trees_eq(&before, &tree_meta(&m.mnt), "tree after a second remount");
}

#[test]
fn journal_survives_kill9_and_ids_keep_increasing() {
    let m = Mounted::new();
    for i in 0..5 {
        fs::write(m.p(&format!("f{i}")), format!("{i}")).unwrap();
    }
    fs::create_dir(m.p("d")).unwrap();
    let before = m.wait_events(0, Duration::from_secs(10), |evs| {
        evs.iter().filter(|e| e.file_path.starts_with('f')).count() >= 5
    });
    m.kill9_and_remount();
    let after = m.log_events();
    let key = |e: &Event| (e.id, e.event_type.clone(), e.file_path.clone());
    let before_keys: Vec<_> = before.iter().map(key).collect();
    let after_keys: Vec<_> = after.iter().map(key).take(before.len()).collect();
    assert_eq!(
        before_keys, after_keys,
        "journal before the crash is a prefix of the journal after"
    );
    let max = after.last().map_or(0, |e| e.id);
    fs::write(m.p("later"), b"later").unwrap();
    let new = m.wait_events(max, Duration::from_secs(10), |evs| {
        evs.iter().any(|e| e.file_path == "later")
    });
    let ev = new
        .iter()
        .find(|e| e.file_path == "later")
        .expect("event for a file written after recovery");
    assert!(
        ev.id > max,
        "new id {} not above pre-crash ids (max {max})",
        ev.id
    );
}

#[test]
fn mount_after_kill9_cleans_stale_mount_with_open_files() {
    let m = Mounted::new();
    fs::create_dir(m.p("d")).unwrap();
    fs::write(m.p("d/f"), b"kept").unwrap();
    // Descriptors left open on the old mount, as a crashed session's programs would.
    let file = File::open(m.p("d/f")).unwrap();
    let dir = File::open(m.p("d")).unwrap();
    m.kill9();
    let out = m.mount();
    assert_eq!(fs::read(m.p("d/f")).unwrap(), b"kept");
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        said.contains("recover"),
        "after kill -9, `latus mount` should print what it recovered; it printed: {out}"
    );
    drop((file, dir));
    // And it is an ordinary mount again.
    fs::write(m.p("after"), b"x").unwrap();
    m.remount();
    assert_eq!(tree(&m.mnt).len(), 3);
}
