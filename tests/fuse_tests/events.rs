//! Which changes become journal events, and what the events say.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::Path;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Event, KIB, MIB, Mounted, no_spawns, pattern, sha512_hex};

const WAIT: Duration = Duration::from_secs(10);

/// `fs::write` with no process spawned meanwhile by another test thread (a
/// spawn flushes every open file; see `harness::no_spawns`).
fn write(p: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let _quiet = no_spawns();
    fs::write(p, data).unwrap();
}

/// Events after `since` once `done` holds, re-read after a short pause so
/// that late duplicates would show up too.
fn settled(m: &Mounted, since: u64, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let first = m.wait_events(since, WAIT, &done);
    assert!(
        done(&first),
        "expected events did not appear within {WAIT:?}; got:\n{}",
        show(&first)
    );
    thread::sleep(Duration::from_millis(300));
    m.events_since(since)
}

fn show(evs: &[Event]) -> String {
    evs.iter()
        .map(|e| {
            format!(
                "  #{} {} {:?} src={:?} size={:?} hash={:?}",
                e.id,
                e.event_type,
                e.file_path,
                e.src_path,
                e.size,
                e.file_hash.as_deref().map(|h| &h[..h.len().min(12)])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn for_path<'a>(evs: &'a [Event], path: &str) -> Vec<&'a Event> {
    evs.iter()
        .filter(|e| e.file_path == path || e.src_path.as_deref() == Some(path))
        .collect()
}

#[test]
fn event_records_have_all_fields() {
    let m = Mounted::new();
    let node_id = m.status()["node_id"]
        .as_str()
        .expect("status node_id")
        .to_string();
    write(m.p("hello.txt"), b"hello");
    fs::create_dir(m.p("dir")).unwrap();
    fs::rename(m.p("hello.txt"), m.p("dir/hello.txt")).unwrap();
    settled(&m, 0, |evs| evs.iter().any(|e| e.event_type == "move"));

    let out = m.latus(&["log", "--json"]).expect_ok();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(lines.len() >= 3, "{out}");
    let mut last_id = 0;
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for key in [
            "id",
            "originator",
            "mivui",
            "detection",
            "event_type",
            "file_hash",
            "file_path",
            "mtime",
            "size",
            "src_path",
        ] {
            assert!(v.get(key).is_some(), "event lacks {key:?}: {line}");
        }
        let id = v["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("id not an integer: {line}"));
        assert!(id > last_id, "ids not increasing, oldest first: {line}");
        last_id = id;
        assert_eq!(
            v["originator"],
            node_id.as_str(),
            "originator is this node: {line}"
        );
        // Null until the cloud's log assigns it; then a positive number.
        assert!(
            v["mivui"].is_null() || v["mivui"].as_u64().is_some_and(|n| n > 0),
            "mivui is null or the cloud's sequence: {line}"
        );
        assert_eq!(v["detection"], "filesystem", "{line}");
        let path = v["file_path"].as_str().unwrap();
        assert!(
            !path.starts_with('/') && !path.is_empty(),
            "file_path relative to the folder: {line}"
        );
        if v["event_type"] != "move" {
            assert!(
                v["src_path"].is_null(),
                "src_path is null except for moves: {line}"
            );
        }
    }
    let evs = m.log_events();
    for e in &evs {
        assert_eq!(
            (
                e.originator.as_str(),
                e.mivui.is_null() || e.mivui.as_u64().is_some(),
                e.detection.as_str()
            ),
            (node_id.as_str(), true, "filesystem"),
            "{e:?}"
        );
    }
    let create = evs
        .iter()
        .find(|e| e.event_type == "create" && e.file_path == "hello.txt")
        .expect("create event");
    assert_eq!(create.size, Some(5));
    assert!(!create.mtime.is_null(), "mtime of a create");
    let mv = evs.iter().find(|e| e.event_type == "move").unwrap();
    assert_eq!(
        (mv.src_path.as_deref(), mv.file_path.as_str()),
        (Some("hello.txt"), "dir/hello.txt")
    );
    assert!(
        evs.iter()
            .any(|e| e.event_type == "mkdir" && e.file_path == "dir"),
        "{}",
        show(&evs)
    );
}

#[test]
fn one_create_per_close_after_many_writes() {
    let m = Mounted::new();
    let base = m.last_id();
    let quiet = no_spawns();
    let mut f = File::create(m.p("many_writes.bin")).unwrap();
    let mut expected = Vec::new();
    for i in 0..200u64 {
        let chunk = pattern(i, 4 * KIB);
        f.write_all(&chunk).unwrap();
        expected.extend_from_slice(&chunk);
    }
    // Overwrite in the middle and extend, still the same open.
    f.seek(SeekFrom::Start(1000)).unwrap();
    f.write_all(b"MIDDLE").unwrap();
    expected[1000..1006].copy_from_slice(b"MIDDLE");
    drop(f);
    drop(quiet);
    let hash = sha512_hex(&expected);

    let evs = settled(&m, base, |evs| {
        evs.iter()
            .any(|e| e.file_path == "many_writes.bin" && e.file_hash.as_deref() == Some(&hash))
    });
    let mine = for_path(&evs, "many_writes.bin");
    assert_eq!(
        mine.len(),
        1,
        "one event for one close, whatever the number of writes:\n{}",
        show(&evs)
    );
    assert_eq!(mine[0].event_type, "create");
    assert_eq!(mine[0].size, Some(expected.len() as u64));

    // An empty new file is one create too, with the hash of nothing.
    let base = m.last_id();
    File::create(m.p("empty")).unwrap();
    let evs = settled(&m, base, |evs| evs.iter().any(|e| e.file_path == "empty"));
    let mine = for_path(&evs, "empty");
    assert_eq!(mine.len(), 1, "{}", show(&evs));
    assert_eq!(mine[0].event_type, "create");
    assert_eq!(mine[0].size, Some(0));
    let empty_hash = sha512_hex(b"");
    let got = m.wait_events(base, WAIT, |evs| {
        evs.iter()
            .any(|e| e.file_hash.as_deref() == Some(&empty_hash))
    });
    assert!(
        got.iter()
            .any(|e| e.file_path == "empty" && e.file_hash.as_deref() == Some(&empty_hash)),
        "hash of the empty file: {}",
        show(&got)
    );
}

#[test]
fn modify_on_rewrite_and_nothing_on_read() {
    let m = Mounted::new();
    write(m.p("f"), b"one");
    let base = settled(&m, 0, |evs| evs.iter().any(|e| e.file_path == "f"))
        .last()
        .unwrap()
        .id;

    // Reading, and opening for write without writing, are no changes.
    let mut s = String::new();
    File::open(m.p("f"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    drop(OpenOptions::new().write(true).open(m.p("f")).unwrap());
    drop(OpenOptions::new().append(true).open(m.p("f")).unwrap());
    thread::sleep(Duration::from_millis(300));
    let evs = m.events_since(base);
    assert!(
        evs.is_empty(),
        "reads and write-opens without writes must not make events:\n{}",
        show(&evs)
    );

    // A rewrite in place: one modify.
    let quiet = no_spawns();
    let f = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    f.write_all_at(b"O", 0).unwrap();
    f.write_all_at(b"N", 1).unwrap();
    drop(f);
    drop(quiet);
    let hash = sha512_hex(b"ONe");
    let evs = settled(&m, base, |evs| {
        evs.iter().any(|e| e.file_hash.as_deref() == Some(&hash))
    });
    assert_eq!(evs.len(), 1, "{}", show(&evs));
    assert_eq!(
        (
            evs[0].event_type.as_str(),
            evs[0].file_path.as_str(),
            evs[0].size
        ),
        ("modify", "f", Some(3))
    );

    // O_TRUNC rewrite of an existing file is a modify, not a create.
    let base = evs[0].id;
    write(m.p("f"), b"completely new");
    let evs = settled(&m, base, |evs| !evs.is_empty());
    assert_eq!(evs.len(), 1, "{}", show(&evs));
    assert_eq!(evs[0].event_type, "modify");
    assert_eq!(evs[0].size, Some(14));
}

#[test]
fn delete_event() {
    let m = Mounted::new();
    fs::create_dir(m.p("sub")).unwrap();
    write(m.p("sub/doomed"), b"x");
    let base = settled(&m, 0, |evs| evs.iter().any(|e| e.file_path == "sub/doomed"))
        .last()
        .unwrap()
        .id;
    fs::remove_file(m.p("sub/doomed")).unwrap();
    let evs = settled(&m, base, |evs| !evs.is_empty());
    assert_eq!(evs.len(), 1, "{}", show(&evs));
    assert_eq!(
        (evs[0].event_type.as_str(), evs[0].file_path.as_str()),
        ("delete", "sub/doomed")
    );
    assert_eq!(evs[0].src_path, None);
}

#[test]
fn move_events_carry_src_path() {
    let m = Mounted::new();
    fs::create_dir(m.p("sub")).unwrap();
    write(m.p("a"), b"aaa");
    write(m.p("target"), b"old target");
    let base = settled(&m, 0, |evs| evs.iter().any(|e| e.file_path == "target"))
        .last()
        .unwrap()
        .id;

    fs::rename(m.p("a"), m.p("sub/b")).unwrap();
    let evs = settled(&m, base, |evs| !evs.is_empty());
    assert_eq!(evs.len(), 1, "{}", show(&evs));
    assert_eq!(evs[0].event_type, "move");
    assert_eq!(evs[0].src_path.as_deref(), Some("a"));
    assert_eq!(evs[0].file_path, "sub/b");

    // Over an existing file: a move onto it, no content events.
    let base = evs[0].id;
    fs::rename(m.p("sub/b"), m.p("target")).unwrap();
    let evs = settled(&m, base, |evs| evs.iter().any(|e| e.event_type == "move"));
    let mv: Vec<_> = evs.iter().filter(|e| e.event_type == "move").collect();
    assert_eq!(mv.len(), 1, "{}", show(&evs));
    assert_eq!(
        (mv[0].src_path.as_deref(), mv[0].file_path.as_str()),
        (Some("sub/b"), "target")
    );
    assert!(
        evs.iter().all(
            |e| e.event_type == "move" || (e.event_type == "delete" && e.file_path == "target")
        ),
        "{}",
        show(&evs)
    );
}

#[test]
fn folder_rename_is_one_move_event() {
    let m = Mounted::new();
    fs::create_dir_all(m.p("photos/2024/summer")).unwrap();
    for i in 0..20 {
        write(
            m.p(&format!("photos/2024/summer/img{i}.jpg")),
            pattern(i, 1000),
        );
    }
    write(m.p("photos/readme"), b"r");
    let base = settled(&m, 0, |evs| {
        evs.iter().any(|e| e.file_path == "photos/readme")
    })
    .last()
    .unwrap()
    .id;

    fs::rename(m.p("photos"), m.p("pictures")).unwrap();
    let evs = settled(&m, base, |evs| !evs.is_empty());
    assert_eq!(
        evs.len(),
        1,
        "a folder rename is ONE move event, whatever it holds:\n{}",
        show(&evs)
    );
    assert_eq!(evs[0].event_type, "move");
    assert_eq!(evs[0].src_path.as_deref(), Some("photos"));
    assert_eq!(evs[0].file_path, "pictures");

    // Later changes inside use the new path.
    let base = evs[0].id;
    {
        // In place (no O_TRUNC), so this checks the path, not truncation.
        let _quiet = no_spawns();
        let f = OpenOptions::new()
            .write(true)
            .open(m.p("pictures/2024/summer/img0.jpg"))
            .unwrap();
        f.write_all_at(b"edited", 0).unwrap();
    }
    let evs = settled(&m, base, |evs| !evs.is_empty());
    assert_eq!(evs.len(), 1, "{}", show(&evs));
    assert_eq!(
        (evs[0].event_type.as_str(), evs[0].file_path.as_str()),
        ("modify", "pictures/2024/summer/img0.jpg")
    );
}

#[test]
fn mkdir_rmdir_symlink_setattr_events() {
    let m = Mounted::new();
    let base = m.last_id();
    fs::create_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("d/e")).unwrap();
    symlink("../x", m.p("d/link")).unwrap();
    write(m.p("file"), b"f");
    fs::set_permissions(m.p("file"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir(m.p("d/e")).unwrap();
    let evs = settled(&m, base, |evs| evs.iter().any(|e| e.event_type == "rmdir"));
    let summary: Vec<(&str, &str)> = evs
        .iter()
        .map(|e| (e.event_type.as_str(), e.file_path.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("mkdir", "d"),
            ("mkdir", "d/e"),
            ("symlink", "d/link"),
            ("create", "file"),
            ("setattr", "file"),
            ("rmdir", "d/e")
        ],
        "events in order:\n{}",
        show(&evs)
    );
}

const IGNORED: [&str; 8] = [
    ".notes.txt.swp",
    "x.swx",
    "backup~",
    ".#lock",
    ".DS_Store",
    "Thumbs.db",
    "scratch.tmp",
    "sub/deep.tmp",
];

fn is_ignored_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || name == ".DS_Store"
        || name == "Thumbs.db"
        || name.ends_with(".tmp")
}

#[test]
fn ignored_names_work_but_make_no_events() {
    let m = Mounted::new();
    fs::create_dir(m.p("sub")).unwrap();
    let base = m.last_id();
    for (i, name) in IGNORED.iter().enumerate() {
        let p = m.p(name);
        let data = pattern(i as u64, 10_000 + i);
        write(&p, &data);
        assert_eq!(fs::read(&p).unwrap(), data, "{name} works normally");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"more").unwrap();
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 10_004 + i as u64);
    }
    fs::rename(m.p("scratch.tmp"), m.p("other.tmp")).unwrap();
    fs::remove_file(m.p("x.swx")).unwrap();
    fs::create_dir(m.p("dir.tmp")).unwrap();
    fs::remove_dir(m.p("dir.tmp")).unwrap();
    // A marker after them: once its event is in, theirs would be too.
    write(m.p("marker"), b"m");
    let evs = settled(&m, base, |evs| evs.iter().any(|e| e.file_path == "marker"));
    let leaked: Vec<_> = evs
        .iter()
        .filter(|e| {
            is_ignored_name(&e.file_path) || e.src_path.as_deref().is_some_and(is_ignored_name)
        })
        .cloned()
        .collect();
    assert!(
        leaked.is_empty(),
        "ignored names made events:\n{}",
        show(&leaked)
    );
    assert_eq!(evs.len(), 1, "{}", show(&evs));

    // They are real files: they survive a remount.
    m.remount();
    assert_eq!(fs::metadata(m.p("other.tmp")).unwrap().len(), 10_010);
    assert_eq!(fs::metadata(m.p(".DS_Store")).unwrap().len(), 10_004 + 4);
    assert!(!m.p("x.swx").exists());
}

#[test]
fn editor_save_through_ignored_temp_is_a_modify_of_the_target() {
    let m = Mounted::new();
    write(m.p("doc.txt"), b"version 1");
    let base = settled(&m, 0, |evs| evs.iter().any(|e| e.file_path == "doc.txt"))
        .last()
        .unwrap()
        .id;

    let mut f = File::create(m.p(".doc.txt.swp")).unwrap();
    f.write_all(b"version 2").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(m.p(".doc.txt.swp"), m.p("doc.txt")).unwrap();

    let hash = sha512_hex(b"version 2");
    let evs = settled(&m, base, |evs| evs.iter().any(|e| e.file_path == "doc.txt"));
    assert!(
        evs.iter().all(|e| e.file_path == "doc.txt"
            && e.src_path.is_none()
            && (e.event_type == "modify" || e.event_type == "create")),
        "saving through an ignored temp file should appear as a change of doc.txt only, never mention the temp name:\n{}",
        show(&evs)
    );
    let evs = m.wait_events(base, WAIT, |evs| {
        evs.last()
            .is_some_and(|e| e.file_hash.as_deref() == Some(&hash))
    });
    assert_eq!(
        evs.last().and_then(|e| e.file_hash.clone()),
        Some(hash),
        "{}",
        show(&evs)
    );
}

#[test]
fn file_hash_is_sha512_of_content() {
    let m = Mounted::new();
    let base = m.last_id();
    let files = [
        ("small", pattern(1, 100)),
        ("one_mib", pattern(2, MIB)),
        ("large", pattern(3, 12 * MIB + 5)),
    ];
    for (name, data) in &files {
        write(m.p(name), data);
    }
    let want: Vec<(String, String)> = files
        .iter()
        .map(|(n, d)| (n.to_string(), sha512_hex(d)))
        .collect();
    let evs = m.wait_events(base, WAIT, |evs| {
        want.iter().all(|(n, h)| {
            evs.iter()
                .any(|e| e.file_path == *n && e.file_hash.as_deref() == Some(h))
        })
    });
    for (n, h) in &want {
        let e = evs
            .iter()
            .find(|e| e.file_path == *n)
            .unwrap_or_else(|| panic!("no event for {n}:\n{}", show(&evs)));
        assert_eq!(
            e.file_hash.as_deref(),
            Some(h.as_str()),
            "file_hash of {n} (after waiting {WAIT:?})"
        );
        assert_eq!(
            e.size,
            Some(files.iter().find(|(x, _)| x == n).unwrap().1.len() as u64)
        );
    }

    // After a modify, the new event carries the new hash.
    let base = evs.last().unwrap().id;
    {
        let _quiet = no_spawns();
        let f = OpenOptions::new().write(true).open(m.p("large")).unwrap();
        f.write_all_at(b"changed", 7 * MIB as u64).unwrap();
    }
    let mut data = files[2].1.clone();
    data[7 * MIB..7 * MIB + 7].copy_from_slice(b"changed");
    let h = sha512_hex(&data);
    let evs = m.wait_events(base, WAIT, |evs| {
        evs.iter().any(|e| e.file_hash.as_deref() == Some(&h))
    });
    assert!(
        evs.iter().any(|e| e.event_type == "modify"
            && e.file_path == "large"
            && e.file_hash.as_deref() == Some(&h)),
        "{}",
        show(&evs)
    );
}

#[test]
fn log_since_returns_later_events_only() {
    let m = Mounted::new();
    for i in 0..3 {
        write(m.p(&format!("f{i}")), b"x");
    }
    let all = settled(&m, 0, |evs| evs.len() >= 3);
    let n = all.last().unwrap().id;
    write(m.p("later1"), b"1");
    write(m.p("later2"), b"2");
    let later = settled(&m, n, |evs| evs.len() >= 2);
    assert!(
        later.iter().all(|e| e.id > n),
        "--since {n} returned an older event:\n{}",
        show(&later)
    );
    let paths: Vec<&str> = later.iter().map(|e| e.file_path.as_str()).collect();
    assert_eq!(paths, vec!["later1", "later2"], "{}", show(&later));
    let everything = m.log_events();
    assert_eq!(everything.len(), all.len() + later.len());
    let mid = all[0].id;
    assert_eq!(
        m.events_since(mid).len(),
        everything.iter().filter(|e| e.id > mid).count()
    );
    assert!(m.events_since(everything.last().unwrap().id).is_empty());
    assert_eq!(m.events_since(0).len(), everything.len());
}

#[test]
fn log_works_while_unmounted() {
    let m = Mounted::new();
    write(m.p("a"), b"a");
    fs::rename(m.p("a"), m.p("b")).unwrap();
    fs::remove_file(m.p("b")).unwrap();
    let mounted = settled(&m, 0, |evs| evs.iter().any(|e| e.event_type == "delete"));
    m.unmount();
    let key = |e: &Event| {
        (
            e.id,
            e.event_type.clone(),
            e.file_path.clone(),
            e.src_path.clone(),
            e.file_hash.clone(),
        )
    };
    let offline = m.log_events();
    assert_eq!(
        offline.iter().map(key).collect::<Vec<_>>(),
        mounted.iter().map(key).collect::<Vec<_>>(),
        "log --json while unmounted"
    );
    let first = mounted[0].id;
    assert_eq!(
        m.events_since(first).len(),
        mounted.len() - 1,
        "log --since while unmounted"
    );
    m.mount();
    assert_eq!(
        m.log_events().iter().map(key).collect::<Vec<_>>(),
        mounted.iter().map(key).collect::<Vec<_>>(),
        "log after remount"
    );
}

/// A process spawned while a file is open for writing closes its inherited
/// copy of the descriptor at exec, which the kernel reports as a FUSE FLUSH.
/// That is not the writer's close: the file still gets one event, with the
/// content of the real close.
#[test]
fn spawning_a_process_while_writing_is_not_a_close() {
    let m = Mounted::new();
    let base = m.last_id();
    let mut f = File::create(m.p("spawned.bin")).unwrap();
    f.write_all(b"first half, ").unwrap();
    crate::harness::run_cmd(&mut std::process::Command::new("true"), WAIT).expect_ok();
    f.write_all(b"second half").unwrap();
    drop(f);
    let hash = sha512_hex(b"first half, second half");
    let evs = settled(&m, base, |evs| {
        evs.iter().any(|e| e.file_hash.as_deref() == Some(&hash))
    });
    let mine = for_path(&evs, "spawned.bin");
    assert_eq!(
        mine.len(),
        1,
        "one close, one event; a spawn meanwhile must not commit a partial version:\n{}",
        show(&evs)
    );
    assert_eq!(mine[0].event_type, "create");
    assert_eq!(mine[0].size, Some(23));
}

/// Regression: a chmod of the folder itself (the mountpoint) made an event
/// with an empty path, which every node refused.
#[test]
fn chmod_of_the_folder_itself_makes_no_event() {
    let m = Mounted::new();
    let since = m.last_id();
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    write(m.p("marker"), b"m");
    let evs = settled(&m, since, |e| e.iter().any(|e| e.file_path == "marker"));
    assert!(
        evs.iter().all(|e| !e.file_path.is_empty()),
        "{}",
        show(&evs)
    );
}
