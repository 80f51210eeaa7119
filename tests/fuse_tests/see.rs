//! Seeing and steering sync through the kernel mount: `status` in words,
//! counters that agree with per-path states, and conflicts told and
//! resolved (`latus conflicts`), on two nodes sharing a `dir:` cloud.

use std::fs;

use crate::cloud::{Backend, sync_wait, unique};
use crate::harness::*;
use crate::sync::{
    conflict_copies, converge, go_offline, go_online_in_order, mounted_on, read, rewrite,
};

fn dir_backend(scratch: &tempfile::TempDir) -> Backend {
    Backend::Dir(scratch.path().join(unique("cloud")))
}

/// Two nodes edit two files offline; alpha publishes first, so beta's
/// versions keep the names and alpha's become conflict copies. Both nodes
/// say so (once), `latus conflicts` lists them, and resolving one on alpha
/// (keep mine) and the other (keep both) reaches beta; nothing is lost
/// from history.
#[test]
fn a_conflict_is_told_once_and_resolved_on_every_node() {
    let scratch = tempfile::tempdir().unwrap();
    let n = mounted_on(&dir_backend(&scratch), &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("report.txt"), b"the original report").unwrap();
    fs::write(a.p("notes.md"), b"original notes").unwrap();
    converge(&[a, bb], None, "setup");
    go_offline(&[a, bb]);
    rewrite(&a.p("report.txt"), b"alpha's report");
    rewrite(&bb.p("report.txt"), b"beta's report");
    rewrite(&a.p("notes.md"), b"alpha's notes");
    rewrite(&bb.p("notes.md"), b"beta's notes");
    go_online_in_order(&[a, bb]);
    converge(&[a, bb], None, "conflicts");
    let report_copy = conflict_copies(&a.mnt, "report.txt").pop().unwrap();
    let notes_copy = conflict_copies(&a.mnt, "notes.md").pop().unwrap();

    // Told: in status (json and words), once per conflict, on both nodes.
    for m in [a, bb] {
        let s = m.status();
        let copies = s["conflict_copies"].as_array().unwrap();
        assert_eq!(copies.len(), 2, "{s:#}");
        let c = copies
            .iter()
            .find(|c| c["path"] == report_copy.as_str())
            .unwrap();
        assert_eq!(c["original"], "report.txt");
        assert_eq!(c["node"], "alpha");
        assert_eq!(c["mine"], std::ptr::eq(m, a), "{c:#}");
        assert_eq!(s["queue"]["conflicts"], 2, "counted once each: {s:#}");
        let words = m.latus(&["status"]).expect_ok().stdout;
        assert!(words.contains("conflicts: 2"), "{words}");
        assert!(words.contains(&report_copy), "{words}");
        let list = m.latus(&["conflicts"]).expect_ok().stdout;
        assert!(
            list.contains(&report_copy) && list.contains(&notes_copy),
            "{list}"
        );
        let log = fs::read_to_string(m.home.join("daemon.log")).unwrap();
        let warned = log
            .lines()
            .filter(|l| l.contains("conflict: concurrent changes"))
            .count();
        assert_eq!(warned, 2, "one log line per conflict:\n{log}");
    }

    // Resolved on alpha: keep mine (alpha's report), keep both (notes).
    let out = a
        .latus(&[
            "conflicts",
            a.p(&report_copy).to_str().unwrap(),
            "--keep",
            "mine",
        ])
        .expect_ok()
        .stdout;
    assert!(out.contains("report.txt"), "{out}");
    let out = a
        .latus(&["conflicts", "notes.md", "--keep", "both"])
        .expect_ok()
        .stdout;
    assert!(out.contains("notes (from alpha).md"), "{out}");
    let bad = a.latus(&["conflicts", "notes.md", "--keep", "copy"]);
    assert!(!bad.ok() && bad.stderr.contains("--keep mine"), "{bad}");
    sync_wait(a);
    sync_wait(bb);
    converge(&[a, bb], None, "resolved");
    for m in [a, bb] {
        assert_eq!(read(&m.p("report.txt")), b"alpha's report");
        assert_eq!(read(&m.p("notes.md")), b"beta's notes");
        assert_eq!(read(&m.p("notes (from alpha).md")), b"alpha's notes");
        assert!(conflict_copies(&m.mnt, "report.txt").is_empty());
        assert!(conflict_copies(&m.mnt, "notes.md").is_empty());
        assert!(wait_until(std::time::Duration::from_secs(10), || m
            .status()["conflict_copies"]
            .as_array()
            .is_some_and(|c| c.is_empty())));
        let words = m.latus(&["status"]).expect_ok().stdout;
        assert!(words.starts_with("latus: in sync"), "{words}");
    }
    // Beta's report stays in history.
    let versions = bb
        .latus(&["versions", "report.txt", "--json"])
        .expect_ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&versions).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|e| e["node"] == "beta"),
        "{v:#}"
    );
}

/// Right after a large write, the counters say what the path says.
#[test]
fn pending_counters_agree_with_the_path_state() {
    let m = Mounted::bare();
    m.latus(&["init"]).expect_ok();
    m.latus(&["mount", m.mnt.to_str().unwrap(), "--offline"])
        .expect_ok();
    let data = pattern(7, 8 << 20);
    fs::write(m.p("big.bin"), &data).unwrap();
    // Nothing is published while offline: the file stays pending, and says so.
    let p = m.path_status("big.bin");
    assert_eq!(p["state"], "pending", "{p:#}");
    let s = m.status();
    assert_eq!(s["queue"]["pending_files"], 1, "{s:#}");
    assert_eq!(s["queue"]["pending_bytes"], data.len() as u64, "{s:#}");
    let words = m.latus(&["status"]).expect_ok().stdout;
    assert!(words.contains("offline by choice"), "{words}");
    assert!(
        words.contains("1 file (8.4 MB) waiting to upload"),
        "{words}"
    );
    let path = m
        .latus(&["status", m.p("big.bin").to_str().unwrap()])
        .expect_ok()
        .stdout;
    assert!(path.contains("big.bin: waiting to upload"), "{path}");
    assert!(path.contains("by this node"), "{path}");
}

/// `getfattr -d -m -` (listxattr) shows latus's attributes, and a file
/// freed to the cloud takes no blocks, so `du` tells local from cloud.
#[test]
fn attributes_and_blocks_tell_what_is_here() {
    use std::os::unix::fs::MetadataExt;
    let m = Mounted::new();
    let data = pattern(3, 2 << 20);
    fs::write(m.p("f.bin"), &data).unwrap();
    sync_wait(&m);
    let mut buf = vec![0u8; 4096];
    let p = cpath(&m.p("f.bin"));
    // SAFETY: buf is a live buffer of its length; p is NUL-terminated.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0, "listxattr: {}", std::io::Error::last_os_error());
    let names = String::from_utf8_lossy(&buf[..n as usize]).to_string();
    assert!(names.contains("user.latus.state\0"), "{names:?}");
    assert!(names.contains("user.latus.placement\0"), "{names:?}");
    assert!(fs::metadata(m.p("f.bin")).unwrap().blocks() * 512 >= data.len() as u64);
    // Freed: listed with its size, no blocks on this disk (the kernel's
    // cached attributes are dropped).
    m.latus(&["free", m.p("f.bin").to_str().unwrap()])
        .expect_ok();
    let md = fs::metadata(m.p("f.bin")).unwrap();
    assert_eq!(md.len(), data.len() as u64);
    assert_eq!(md.blocks(), 0, "a cloud-only file reports blocks");
}

/// After kill -9 the folder is still mounted with nothing behind it:
/// `status` says so and how to recover, and the next mount does.
#[test]
fn status_after_kill9_says_the_daemon_stopped() {
    let m = Mounted::new();
    fs::write(m.p("kept.txt"), b"closed before the crash").unwrap();
    m.kill9();
    let out = m.latus(&["status"]).expect_ok().stdout;
    assert!(out.contains("its daemon stopped"), "{out}");
    assert!(
        out.contains(&format!("latus mount {}", m.mnt.display())),
        "{out}"
    );
    m.mount();
    assert_eq!(read(&m.p("kept.txt")), b"closed before the crash");
}

/// `restore --at` checks its time, takes compound ages, and `--dry-run`
/// lists the changes without making them.
#[test]
fn restore_at_checks_times_and_previews() {
    let m = Mounted::new();
    fs::create_dir(m.p("d")).unwrap();
    fs::write(m.p("d/a.txt"), b"first").unwrap();
    sync_wait(&m);
    let d = m.p("d");
    let d = d.to_str().unwrap();
    for (at, says) in [
        ("2026-13-45T00:00:00", "month 13 is out of range"),
        ("2026-02-30", "day 30 is out of range"),
        ("2099-01-01", "is in the future"),
        ("yesterday", "is not a time"),
    ] {
        let out = m.latus(&["restore", d, "--at", at]);
        assert!(!out.ok() && out.stderr.contains(says), "{at}: {out}");
    }
    // A whole second after the first version, then a change.
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let t = secs() + 1;
    while secs() <= t {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fs::write(m.p("d/b.txt"), b"later").unwrap();
    sync_wait(&m);
    let out = m
        .latus(&["restore", d, "--at", &t.to_string(), "--dry-run"])
        .expect_ok()
        .stdout;
    assert!(out.starts_with("would restore"), "{out}");
    assert!(out.contains("remove   d/b.txt"), "{out}");
    assert!(m.p("d/b.txt").exists(), "a dry run changed the folder");
}
