//! Sync between nodes through the kernel mount: several nodes on one
//! volume (two homes on this machine sharing a cloud), each mounted by its
//! own daemon, against both backends (`dir` and S3 + DynamoDB served
//! locally). Other nodes' changes arrive by the daemon's polling alone
//! (`poll_ms` is lowered to 200 ms); offline work is done with
//! `mount --offline` or with the node's cloud made unreachable.
//!
//! Each scenario is one function taking the backend; `on_both_backends!`
//! makes a `dir` and an `aws` test of it, so they run in parallel.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cloud::{Backend, aws_available, chunk_objects, sync_wait, unique};
use crate::harness::*;

/// How long other nodes' changes may take to show up.
const CONVERGE: Duration = Duration::from_secs(30);
const POLL_MS: u64 = 200;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn dir() {
                    super::run_on(false, super::$name);
                }
                #[test]
                fn aws() {
                    super::run_on(true, super::$name);
                }
            }
        )*
    };
}

on_both_backends!(
    changes_on_one_node_appear_on_the_other_by_polling,
    a_file_has_the_same_mtime_on_every_node,
    three_nodes_end_with_the_same_tree,
    a_renamed_folder_of_1000_files_arrives_as_one_rename,
    a_delete_loses_to_an_edit_made_meanwhile,
    concurrent_edits_keep_both_versions_on_every_node,
    three_concurrent_edits_keep_three_versions,
    a_rename_against_an_edit_loses_no_data,
    a_file_and_a_folder_of_the_same_name_both_survive,
    a_file_written_into_a_deleted_folder_is_kept,
    a_file_open_for_writing_is_not_replaced_under_its_writer,
    a_reader_keeps_the_version_it_opened,
    a_node_killed_while_pulling_catches_up,
    hostile_paths_in_the_log_never_leave_the_folder,
    versions_and_restore_across_nodes,
    prune_keeps_every_current_file_readable_from_the_cloud,
    nodes_are_listed_and_forgotten,
    forgetting_a_node_shows_at_once,
    an_offline_node_catches_up,
    the_newest_change_keeps_the_name,
    conflict_policy_first_keeps_the_first_in_the_log,
    a_redirect_over_a_file_publishes_one_version,
    free_right_after_a_read_takes_the_copy,
    a_replayed_record_is_refused_and_nothing_rolls_back,
    a_new_node_starts_from_a_checkpoint,
);

fn run_on(aws: bool, scenario: fn(&Backend)) {
    let scratch = tempfile::tempdir().unwrap();
    let b = if aws {
        if !aws_available() {
            return;
        }
        Backend::Aws {
            bucket: unique("latus-test"),
            table: unique("latus-test"),
        }
    } else {
        Backend::Dir(scratch.path().join(unique("cloud")))
    };
    scenario(&b);
}

// ---------------------------------------------------------------- nodes

fn edit_config(m: &Mounted, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = m.home.join("config.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    f(v.as_object_mut().expect("config.json is an object"));
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A node initialised on `url` (joining with `key` if given), polling the
/// log every 200 ms; not mounted.
pub(crate) fn init_node(url: &str, name: &str, key: Option<&Path>) -> Mounted {
    let m = Mounted::bare();
    let key = key.map(|k| k.to_str().unwrap().to_string());
    let mut args = vec!["init", "--cloud", url, "--name", name];
    if let Some(k) = &key {
        args.extend(["--key-file", k.as_str()]);
    }
    m.latus(&args).expect_ok();
    edit_config(&m, |c| {
        c.insert("poll_ms".into(), POLL_MS.into());
    });
    m
}

/// Exports the volume key of `m` to a file in its scratch folder.
pub(crate) fn export_key(m: &Mounted) -> PathBuf {
    let key = m.scratch().join("volume-key.json");
    if !key.exists() {
        m.latus(&["key", "export", key.to_str().unwrap()])
            .expect_ok();
    }
    key
}

/// Nodes of one volume, initialised but not mounted; the first creates it.
pub(crate) fn nodes_on(b: &Backend, names: &[&str]) -> Vec<Mounted> {
    let first = init_node(&b.url(), names[0], None);
    let key = export_key(&first);
    let mut v = vec![first];
    for n in &names[1..] {
        v.push(init_node(&b.url(), n, Some(&key)));
    }
    v
}

pub(crate) fn mounted_on(b: &Backend, names: &[&str]) -> Vec<Mounted> {
    let v = nodes_on(b, names);
    for m in &v {
        m.mount();
    }
    v
}

fn mount_offline(m: &Mounted) {
    m.latus(&["mount", m.mnt.to_str().unwrap(), "--offline"])
        .expect_ok();
    assert!(is_mounted(&m.mnt), "mount --offline returned, not mounted");
    assert_eq!(m.status()["offline"], true);
}

pub(crate) fn go_offline(nodes: &[&Mounted]) {
    for m in nodes {
        m.unmount();
        mount_offline(m);
    }
}

/// Remounts each node online in turn and lets it publish and pull; then
/// lets every node pull what the later ones published.
pub(crate) fn go_online_in_order(nodes: &[&Mounted]) {
    for m in nodes {
        m.unmount();
        m.mount();
        sync_wait(m);
    }
    for m in nodes {
        sync_wait(m);
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json_cmd(m: &Mounted, args: &[&str]) -> Value {
    let out = m.latus(args).expect_ok();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

// ---------------------------------------------------------------- trees

/// One entry of a snapshot: what `harness::tree` compares, plus the
/// modification time (whole seconds) of files.
///
/// Mtimes compare within a second: a file's mtime differs between nodes
/// by the milliseconds between the writer's write(2) and the daemon's
/// receipt of it (see `a_file_has_the_same_mtime_on_every_node`), which
/// crosses a second boundary now and then. Exact equality is tested there.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    node: Node,
    mtime: Option<i64>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
            && match (self.mtime, other.mtime) {
                (Some(a), Some(b)) => (a - b).abs() <= 1,
                (a, b) => a == b,
            }
    }
}

pub(crate) type Snap = BTreeMap<String, Entry>;

/// Like `harness::tree`, but an error (an entry vanishing while the tree
/// changes) is returned instead of panicking, so it can be polled. A file
/// whose bytes do not match its `st_size` shows both in its digest.
fn snap(root: &Path) -> io::Result<Snap> {
    let mut out = BTreeMap::new();
    snap_walk(root, "", &mut out)?;
    Ok(out)
}

fn snap_walk(dir: &Path, prefix: &str, out: &mut Snap) -> io::Result<()> {
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            continue; // ignored: never synced
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = ent.path();
        let md = fs::symlink_metadata(&path)?;
        let mode = md.mode() & 0o7777;
        let e = if md.is_dir() {
            snap_walk(&path, &rel, out)?;
            Entry {
                node: Node::Dir { mode },
                mtime: None,
            }
        } else if md.file_type().is_symlink() {
            Entry {
                node: Node::Symlink {
                    target: fs::read_link(&path)?,
                },
                mtime: None,
            }
        } else {
            let data = fs::read(&path)?;
            let mut sha256 = hex(&Sha256::digest(&data));
            if data.len() as u64 != md.len() {
                sha256 = format!("{sha256} (read {} bytes)", data.len());
            }
            Entry {
                node: Node::File {
                    size: md.len(),
                    sha256,
                    mode,
                },
                mtime: Some(md.mtime()),
            }
        };
        out.insert(rel, e);
    }
    Ok(())
}

fn digest(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Polls every `interval` until `f` holds; false after `timeout`.
fn poll(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(interval);
    }
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        poll(CONVERGE, Duration::from_millis(50), f),
        "timed out after {CONVERGE:?} waiting for {what}"
    );
}

/// Waits until every node's tree is the same (and, if given, `expect`),
/// then returns it; on timeout, fails listing the differences.
pub(crate) fn converge(nodes: &[&Mounted], expect: Option<&Snap>, ctx: &str) -> Snap {
    let mut last: Vec<io::Result<Snap>> = Vec::new();
    let ok = poll(CONVERGE, Duration::from_millis(250), || {
        last = nodes.iter().map(|m| snap(&m.mnt)).collect();
        let Ok(first) = &last[0] else { return false };
        last.iter().all(|s| s.as_ref().ok() == Some(first)) && expect.is_none_or(|e| e == first)
    });
    if !ok {
        let mut snaps = Vec::new();
        for (i, s) in last.into_iter().enumerate() {
            snaps.push(s.unwrap_or_else(|e| panic!("{ctx}: reading node {i}'s tree: {e}")));
        }
        let reference = expect.unwrap_or(&snaps[0]);
        for (i, s) in snaps.iter().enumerate() {
            assert_trees_eq(
                reference,
                s,
                &format!("{ctx} (node {i}, after {CONVERGE:?})"),
            );
        }
        unreachable!();
    }
    last.remove(0).unwrap()
}

/// Writes `data` as one new version: open without O_TRUNC, truncate
/// through the descriptor, write, close (one event, where `fs::write` on
/// an existing file makes two: truncate, then write).
pub(crate) fn rewrite(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(0).unwrap();
    f.write_all(data).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a valid C path and two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(path).as_ptr(), times.as_ptr(), 0) })
        .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Conflict copies of `name` (`stem (conflict from NODE YYYY-MM-DD HHMMSS).ext`) in `dir`.
pub(crate) fn conflict_copies(dir: &Path, name: &str) -> Vec<String> {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    names_in(dir)
        .into_iter()
        .filter(|n| n.starts_with(&format!("{stem} (conflict from ")) && n.ends_with(ext))
        .collect()
}

/// Checks the pattern of a conflict copy name of `name` from `node`,
/// made by a change between `from` and `to` (Unix seconds).
fn assert_conflict_name(copy: &str, name: &str, node: &str, from: i64, to: i64) {
    let expected: Vec<String> = (from..=to)
        .map(|s| latus::sync::conflict_name(name, node, s * 1_000_000_000))
        .collect();
    assert!(
        expected.iter().any(|e| e == copy),
        "conflict copy {copy:?} is not one of {expected:?}"
    );
    // And spelled out, independently of the library's own function.
    let (stem, ext) = name.rsplit_once('.').unwrap();
    let mid = copy
        .strip_prefix(&format!("{stem} (conflict from {node} "))
        .and_then(|r| r.strip_suffix(&format!(").{ext}")))
        .unwrap_or_else(|| panic!("{copy:?}"));
    let b = mid.as_bytes();
    assert!(
        b.len() == 17
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b' '
            && b.iter()
                .enumerate()
                .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_digit()),
        "{copy:?}: not YYYY-MM-DD HHMMSS"
    );
}

// ---------------------------------------------------------------- 1

fn changes_on_one_node_appear_on_the_other_by_polling(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    let report = pattern(1, 300_000);
    fs::create_dir(a.p("docs")).unwrap();
    fs::create_dir(a.p("docs/sub")).unwrap();
    fs::write(a.p("docs/report.bin"), &report).unwrap();
    fs::write(a.p("docs/sub/deep.txt"), b"deep").unwrap();
    fs::write(a.p("hello.txt"), b"hello from alpha\n").unwrap();
    fs::write(a.p("doomed.txt"), b"short-lived").unwrap();
    fs::write(a.p("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    chmod(&a.p("run.sh"), 0o750);
    symlink("docs/report.bin", a.p("link")).unwrap();
    fs::create_dir(a.p("empty")).unwrap();
    fs::create_dir(a.p("private")).unwrap();
    fs::write(a.p("private/key.txt"), b"k").unwrap();
    fs::write(a.p("over.txt"), b"will be replaced by a rename").unwrap();
    fs::write(a.p("replacement.txt"), b"the replacement").unwrap();
    fs::write(a.p("big.bin"), pattern(5, 5 << 20)).unwrap();
    // Ignored names stay on their node.
    fs::write(a.p("scratch.tmp"), b"ignored").unwrap();

    // Listed on beta before anything reads it: size, mode, mtime right,
    // and `cloud` until read.
    wait_for("docs/report.bin on beta", || {
        fs::metadata(bb.p("docs/report.bin")).is_ok_and(|m| m.len() == report.len() as u64)
    });
    let (ma, mb) = (
        fs::metadata(a.p("docs/report.bin")).unwrap(),
        fs::metadata(bb.p("docs/report.bin")).unwrap(),
    );
    assert_eq!(
        (mb.len(), mb.mode() & 0o7777, mb.mtime()),
        (ma.len(), ma.mode() & 0o7777, ma.mtime())
    );
    let st = bb.path_status(arg(&bb.p("docs/report.bin")));
    assert_eq!(st["state"], "cloud", "{st}");
    let s = converge(&[a, bb], None, "alpha's first changes on beta");
    assert_eq!(
        bb.path_status(arg(&bb.p("docs/report.bin")))["state"],
        "local"
    );
    assert_eq!(
        s["run.sh"].node,
        Node::File {
            size: 18,
            sha256: digest(b"#!/bin/sh\necho hi\n"),
            mode: 0o750
        }
    );
    assert!(s.contains_key("empty") && s.contains_key("link") && s.contains_key("doomed.txt"));
    assert!(!bb.p("scratch.tmp").exists(), "an ignored name was synced");

    // Modify, delete, rmdir, moves (a file, a folder), chmod, symlinks.
    fs::write(a.p("hello.txt"), b"hello again, a longer line\n").unwrap();
    fs::remove_file(a.p("doomed.txt")).unwrap();
    fs::remove_dir(a.p("empty")).unwrap();
    fs::rename(a.p("docs/sub/deep.txt"), a.p("docs/deep.txt")).unwrap();
    fs::rename(a.p("docs/sub"), a.p("sub-moved")).unwrap();
    chmod(&a.p("docs/report.bin"), 0o600);
    fs::remove_file(a.p("link")).unwrap();
    symlink("hello.txt", a.p("link2")).unwrap();
    // Metadata of files and folders beta has read (cached by its kernel);
    // mtimes: see `a_file_has_the_same_mtime_on_every_node`.
    chmod(&a.p("private"), 0o700);
    fs::rename(a.p("replacement.txt"), a.p("over.txt")).unwrap();
    rewrite(&a.p("big.bin"), &pattern(6, 3 << 20));
    let s = converge(&[a, bb], None, "alpha's second changes on beta");
    assert_eq!(s["private"].node, Node::Dir { mode: 0o700 });
    assert_eq!(read(&bb.p("over.txt")), b"the replacement");
    for gone in [
        "doomed.txt",
        "empty",
        "link",
        "docs/sub",
        "docs/sub/deep.txt",
    ] {
        assert!(!s.contains_key(gone), "{gone} still there");
    }
    assert_eq!(read(&bb.p("docs/deep.txt")), b"deep");
    assert_eq!(
        fs::metadata(bb.p("docs/report.bin")).unwrap().mode() & 0o7777,
        0o600
    );

    // And back, from beta to alpha.
    fs::write(bb.p("from-beta.txt"), b"written on beta").unwrap();
    rewrite(&bb.p("docs/report.bin"), &pattern(2, 200_000));
    fs::create_dir(bb.p("beta-dir")).unwrap();
    fs::write(bb.p("beta-dir/x"), b"x").unwrap();
    fs::rename(bb.p("hello.txt"), bb.p("beta-dir/hello.txt")).unwrap();
    chmod(&bb.p("run.sh"), 0o700);
    fs::remove_file(bb.p("link2")).unwrap();
    fs::remove_dir(bb.p("sub-moved")).unwrap();
    let s = converge(&[a, bb], None, "beta's changes on alpha");
    assert_eq!(read(&a.p("docs/report.bin")), pattern(2, 200_000));
    assert_eq!(
        read(&a.p("beta-dir/hello.txt")),
        b"hello again, a longer line\n"
    );
    assert_eq!(read(&a.p("from-beta.txt")), b"written on beta");
    assert!(!s.contains_key("hello.txt") && !s.contains_key("sub-moved"));
    assert_eq!(fs::metadata(a.p("run.sh")).unwrap().mode() & 0o7777, 0o700);
}

/// Every common way of writing a file; the writer's node and the other
/// show the same mtime, to the nanosecond, and the same as the published
/// event's. With writeback caching the kernel keeps its own mtime of a
/// file it caches (set at write(2)); the daemon must publish that one.
fn a_file_has_the_same_mtime_on_every_node(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("written.txt"), b"fs::write of a new file").unwrap();
    fs::write(a.p("truncated.txt"), b"first").unwrap();
    fs::write(a.p("rewritten.txt"), b"first").unwrap();
    fs::write(a.p("appended.txt"), b"first").unwrap();
    sync_wait(a);
    thread::sleep(Duration::from_millis(50));
    fs::write(a.p("truncated.txt"), b"O_TRUNC, then write").unwrap();
    rewrite(&a.p("rewritten.txt"), b"ftruncate, then write");
    OpenOptions::new()
        .append(true)
        .open(a.p("appended.txt"))
        .unwrap()
        .write_all(b", appended")
        .unwrap();
    let files = [
        "written.txt",
        "truncated.txt",
        "rewritten.txt",
        "appended.txt",
    ];
    let ns = |p: PathBuf| {
        let m = fs::metadata(p).unwrap();
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
    };
    converge(&[a, bb], None, "setup");
    sync_wait(a);
    let mut diffs = Vec::new();
    for f in files {
        let (ma, mb) = (ns(a.p(f)), ns(bb.p(f)));
        let ev = &a.path_status(arg(&a.p(f)))["last_event"]["mtime"];
        if ma != mb || Some(ma) != ev.as_i64().map(i128::from) {
            diffs.push(format!(
                "{f}: alpha shows {ma}, beta shows {mb} (published {ev})"
            ));
        }
    }
    // utimes on alpha of files beta has read (its kernel caches them) and
    // of one it has not.
    let t = 1_600_000_000i128 * 1_000_000_000;
    fs::write(a.p("untouched.txt"), b"never read on beta").unwrap();
    wait_for("untouched.txt on beta", || bb.p("untouched.txt").exists());
    for f in ["written.txt", "appended.txt", "untouched.txt"] {
        set_mtime(&a.p(f), 1_600_000_000);
    }
    let arrived = poll(CONVERGE, Duration::from_millis(100), || {
        ["written.txt", "appended.txt", "untouched.txt"]
            .iter()
            .all(|f| ns(bb.p(f)) == t)
    });
    if !arrived {
        for f in ["written.txt", "appended.txt", "untouched.txt"] {
            let mb = ns(bb.p(f));
            if mb != t {
                diffs.push(format!(
                    "{f}: utimes to {t} on alpha; beta shows {mb} after {CONVERGE:?} (status: {})",
                    bb.path_status(arg(&bb.p(f)))["mtime"]
                ));
            }
        }
    }
    assert!(diffs.is_empty(), "mtimes differ:\n{}", diffs.join("\n"));
}

/// `latus unmount` returns promptly whatever `poll_ms` is.
#[test]
fn unmount_does_not_wait_for_the_next_poll() {
    let scratch = tempfile::tempdir().unwrap();
    let m = init_node(
        &format!("dir:{}", scratch.path().join("cloud").display()),
        "alpha",
        None,
    );
    edit_config(&m, |c| {
        c.insert("poll_ms".into(), 15_000.into());
    });
    m.mount();
    fs::write(m.p("f"), b"x").unwrap();
    sync_wait(&m);
    let t = Instant::now();
    m.unmount();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "unmount took {:?} (poll_ms is 15 s)",
        t.elapsed()
    );
}

fn three_nodes_end_with_the_same_tree(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta", "gamma"]);
    let refs: Vec<&Mounted> = n.iter().collect();
    let names = ["alpha", "beta", "gamma"];
    // All at once, each in its own folder and one shared folder.
    for (i, (m, name)) in n.iter().zip(names).enumerate() {
        fs::create_dir(m.p(&format!("from-{name}"))).unwrap();
        for k in 0..5u64 {
            fs::write(
                m.p(&format!("from-{name}/f{k}.bin")),
                pattern(i as u64 * 100 + k, 1000 + k as usize * 3000),
            )
            .unwrap();
        }
        fs::create_dir_all(m.p("shared")).unwrap();
        fs::write(m.p(&format!("shared/{name}.txt")), name).unwrap();
    }
    let s = converge(&refs, None, "three nodes, first round");
    assert_eq!(s.len(), 3 * 6 + 1 + 3, "{:#?}", s.keys());
    // Each changes another's files.
    fs::rename(n[2].p("from-alpha"), n[2].p("by-gamma")).unwrap();
    fs::remove_file(n[1].p("from-gamma/f0.bin")).unwrap();
    rewrite(&n[0].p("from-beta/f1.bin"), b"alpha was here");
    let s = converge(&refs, None, "three nodes, second round");
    assert!(s.contains_key("by-gamma/f4.bin") && !s.contains_key("from-alpha"));
    assert!(!s.contains_key("from-gamma/f0.bin"));
    assert_eq!(read(&n[2].p("from-beta/f1.bin")), b"alpha was here");
}

// ---------------------------------------------------------------- 2

fn a_renamed_folder_of_1000_files_arrives_as_one_rename(b: &Backend) {
    const N: usize = 1000;
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    let content = |i: usize| format!("file {i} of the big folder\n").repeat(1 + i % 7);
    fs::create_dir(a.p("big")).unwrap();
    for i in 0..N {
        fs::write(a.p(&format!("big/f{i:04}")), content(i)).unwrap();
    }
    let count = |p: PathBuf| fs::read_dir(p).ok().map(|d| d.count());
    assert!(
        poll(
            Duration::from_secs(90),
            Duration::from_millis(200),
            || count(bb.p("big")) == Some(N)
        ),
        "beta has {:?} of {N} files",
        count(bb.p("big"))
    );
    fs::rename(a.p("big"), a.p("renamed")).unwrap();
    // Beta shows the old folder whole or the new one whole, never half.
    // (Both at once, for the moment between the daemon's rename and the
    // kernel dropping its cached entry of the old name, is the same folder.)
    let mut seen = Vec::new();
    let done = poll(CONVERGE, Duration::from_millis(10), || {
        let now = (count(bb.p("big")), count(bb.p("renamed")));
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        now == (None, Some(N))
    });
    assert!(done, "beta never showed the renamed folder: {seen:?}");
    assert!(
        seen.iter()
            .all(|s| matches!(s, (Some(N), None) | (None, Some(N)) | (Some(N), Some(N)))),
        "beta showed a half-renamed folder: {seen:?}"
    );
    let moves: Vec<Event> = a
        .log_events()
        .into_iter()
        .filter(|e| e.event_type == "move")
        .collect();
    assert_eq!(moves.len(), 1, "{moves:?}");
    for i in 0..N {
        let p = bb.p(&format!("renamed/f{i:04}"));
        assert_eq!(read(&p), content(i).as_bytes(), "{}", p.display());
    }
}

// ---------------------------------------------------------------- 3

fn a_delete_loses_to_an_edit_made_meanwhile(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("x.txt"), b"x original").unwrap();
    fs::write(a.p("y.txt"), b"y original").unwrap();
    converge(&[a, bb], None, "setup");
    go_offline(&[a, bb]);
    // x: alpha deletes, beta edits; y: beta deletes, alpha edits. Alpha
    // publishes first, so x's delete comes before the edit in the log and
    // y's edit before the delete.
    fs::remove_file(a.p("x.txt")).unwrap();
    rewrite(&bb.p("x.txt"), b"x edited on beta");
    rewrite(&a.p("y.txt"), b"y edited on alpha");
    fs::remove_file(bb.p("y.txt")).unwrap();
    go_online_in_order(&[a, bb]);
    converge(&[a, bb], None, "delete against edit");
    assert_eq!(read(&a.p("x.txt")), b"x edited on beta");
    assert_eq!(read(&bb.p("y.txt")), b"y edited on alpha");
    assert_eq!(names_in(&a.mnt), ["x.txt", "y.txt"]);
}

// ---------------------------------------------------------------- 4

fn concurrent_edits_keep_both_versions_on_every_node(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("report.txt"), b"the original report").unwrap();
    fs::write(a.p("same.txt"), b"the original").unwrap();
    converge(&[a, bb], None, "setup");
    go_offline(&[a, bb]);
    let from = now_secs();
    rewrite(&a.p("report.txt"), b"alpha's version of the report");
    let to = now_secs();
    rewrite(&bb.p("report.txt"), b"beta's version of the report, longer");
    rewrite(&a.p("same.txt"), b"both wrote this");
    rewrite(&bb.p("same.txt"), b"both wrote this");
    // Large (hashed off the request path), equal on both.
    let big = pattern(44, 3 << 20);
    fs::write(a.p("same.bin"), &big).unwrap();
    fs::write(bb.p("same.bin"), &big).unwrap();
    // The same new name on both, different contents; the same new folder.
    let from_new = now_secs();
    fs::write(a.p("new.txt"), b"new on alpha").unwrap();
    let to_new = now_secs();
    fs::write(bb.p("new.txt"), b"new on beta").unwrap();
    fs::create_dir(a.p("both")).unwrap();
    fs::write(a.p("both/a.txt"), b"a").unwrap();
    fs::create_dir(bb.p("both")).unwrap();
    fs::write(bb.p("both/b.txt"), b"b").unwrap();
    // Alpha publishes first: beta's version is the later one in the log
    // and keeps the name; alpha's is kept beside it.
    go_online_in_order(&[a, bb]);
    let s = converge(&[a, bb], None, "concurrent edits");
    assert_eq!(
        read(&a.p("report.txt")),
        b"beta's version of the report, longer"
    );
    let copies = conflict_copies(&a.mnt, "report.txt");
    assert_eq!(copies.len(), 1, "{:#?}", s.keys());
    assert_conflict_name(&copies[0], "report.txt", "alpha", from, to);
    assert_eq!(read(&bb.p(&copies[0])), b"alpha's version of the report");
    assert!(
        conflict_copies(&a.mnt, "same.txt").is_empty(),
        "equal contents made a conflict copy: {:#?}",
        s.keys()
    );
    assert_eq!(read(&bb.p("same.txt")), b"both wrote this");
    assert!(
        conflict_copies(&a.mnt, "same.bin").is_empty(),
        "equal large contents made a conflict copy: {:#?}",
        s.keys()
    );
    let copies = conflict_copies(&a.mnt, "new.txt");
    assert_eq!(copies.len(), 1, "{:#?}", s.keys());
    assert_conflict_name(&copies[0], "new.txt", "alpha", from_new, to_new);
    assert_eq!(read(&bb.p(&copies[0])), b"new on alpha");
    assert_eq!(read(&a.p("new.txt")), b"new on beta");
    assert_eq!(names_in(&a.p("both")), ["a.txt", "b.txt"]);
    // report.txt + copy, same.txt, same.bin, new.txt + copy, both/{,a,b}
    assert_eq!(s.len(), 9, "{:#?}", s.keys());
    assert!(bb.status()["queue"]["conflicts"].as_u64() >= Some(1));
}

/// Three nodes edit one file offline; they come online in turn: the last
/// one's version keeps the name, the two others are conflict copies, the
/// same on every node.
fn three_concurrent_edits_keep_three_versions(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta", "gamma"]);
    let refs: Vec<&Mounted> = n.iter().collect();
    fs::write(n[0].p("plan.md"), b"the plan").unwrap();
    converge(&refs, None, "setup");
    go_offline(&refs);
    let from = now_secs();
    for (m, name) in n.iter().zip(["alpha", "beta", "gamma"]) {
        rewrite(&m.p("plan.md"), format!("{name}'s plan").as_bytes());
    }
    let to = now_secs();
    go_online_in_order(&refs);
    let s = converge(&refs, None, "three concurrent edits");
    assert_eq!(read(&n[0].p("plan.md")), b"gamma's plan");
    let copies = conflict_copies(&n[0].mnt, "plan.md");
    assert_eq!(copies.len(), 2, "{:#?}", s.keys());
    for (copy, name) in copies.iter().zip(["alpha", "beta"]) {
        assert_conflict_name(copy, "plan.md", name, from, to);
        assert_eq!(read(&n[1].p(copy)), format!("{name}'s plan").as_bytes());
    }
    assert_eq!(s.len(), 3, "{:#?}", s.keys());
}

/// A rename on one node and an edit of the same file on another: both
/// changes are somewhere on every node.
fn a_rename_against_an_edit_loses_no_data(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("f.txt"), b"f original").unwrap();
    fs::write(a.p("h.txt"), b"h original").unwrap();
    fs::create_dir(a.p("d")).unwrap();
    fs::write(a.p("d/in.txt"), b"in d").unwrap();
    converge(&[a, bb], None, "setup");
    go_offline(&[a, bb]);
    fs::rename(a.p("f.txt"), a.p("g.txt")).unwrap();
    rewrite(&bb.p("f.txt"), b"f edited on beta");
    fs::rename(bb.p("h.txt"), bb.p("i.txt")).unwrap();
    rewrite(&a.p("h.txt"), b"h edited on alpha");
    // A folder renamed on one node while the other writes into it.
    fs::rename(bb.p("d"), bb.p("e")).unwrap();
    fs::write(a.p("d/new.txt"), b"new in d").unwrap();
    go_online_in_order(&[a, bb]);
    let s = converge(&[a, bb], None, "rename against edit");
    let contents: Vec<Vec<u8>> = s
        .iter()
        .filter(|(_, e)| matches!(e.node, Node::File { .. }))
        .map(|(k, _)| read(&a.p(k)))
        .collect();
    for want in [
        &b"f edited on beta"[..],
        b"h edited on alpha",
        b"new in d",
        b"in d",
    ] {
        assert!(
            contents.iter().any(|c| c == want),
            "{:?} was lost: {:#?}",
            String::from_utf8_lossy(want),
            s.keys()
        );
    }
}

/// A name that is a file on one node and a folder (or a symlink) on the
/// other, made offline: whatever the order, every node ends with the same
/// tree and nothing either node wrote is lost.
fn a_file_and_a_folder_of_the_same_name_both_survive(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("x"), b"x original").unwrap();
    fs::write(a.p("y"), b"y original").unwrap();
    converge(&[a, bb], None, "setup");
    go_offline(&[a, bb]);
    // x: alpha replaces the file by a folder, beta edits the file; y: the
    // other way round; s: a new folder on alpha, a new symlink on beta.
    fs::remove_file(a.p("x")).unwrap();
    fs::create_dir(a.p("x")).unwrap();
    fs::write(a.p("x/in-x"), b"alpha's file in folder x").unwrap();
    rewrite(&bb.p("x"), b"x edited on beta");
    fs::remove_file(bb.p("y")).unwrap();
    fs::create_dir(bb.p("y")).unwrap();
    fs::write(bb.p("y/in-y"), b"beta's file in folder y").unwrap();
    rewrite(&a.p("y"), b"y edited on alpha");
    fs::create_dir(a.p("s")).unwrap();
    fs::write(a.p("s/in-s"), b"alpha's file in folder s").unwrap();
    symlink("/tmp", bb.p("s")).unwrap();
    go_online_in_order(&[a, bb]);
    let s = converge(&[a, bb], None, "file against folder");
    let contents: Vec<Vec<u8>> = s
        .iter()
        .filter(|(_, e)| matches!(e.node, Node::File { .. }))
        .map(|(k, _)| read(&a.p(k)))
        .collect();
    let lost: Vec<&str> = [
        "alpha's file in folder x",
        "x edited on beta",
        "beta's file in folder y",
        "y edited on alpha",
        "alpha's file in folder s",
    ]
    .into_iter()
    .filter(|want| !contents.iter().any(|c| c == want.as_bytes()))
    .collect();
    assert!(lost.is_empty(), "lost {lost:?}; the tree: {:#?}", s.keys());
}

// ---------------------------------------------------------------- 5

fn a_file_written_into_a_deleted_folder_is_kept(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    for d in ["d1", "d2"] {
        fs::create_dir_all(a.p(&format!("{d}/inner"))).unwrap();
        fs::write(a.p(&format!("{d}/old.txt")), b"old").unwrap();
        fs::write(a.p(&format!("{d}/inner/old2.txt")), b"old2").unwrap();
    }
    converge(&[a, bb], None, "setup");
    go_offline(&[a, bb]);
    // d1: alpha deletes it, beta writes into it; d2 the other way round.
    fs::remove_dir_all(a.p("d1")).unwrap();
    fs::write(bb.p("d1/inner/new.txt"), b"written on beta").unwrap();
    fs::remove_dir_all(bb.p("d2")).unwrap();
    fs::write(a.p("d2/new.txt"), b"written on alpha").unwrap();
    go_online_in_order(&[a, bb]);
    let s = converge(&[a, bb], None, "write into a deleted folder");
    assert_eq!(read(&a.p("d1/inner/new.txt")), b"written on beta");
    assert_eq!(read(&bb.p("d2/new.txt")), b"written on alpha");
    for gone in ["d1/old.txt", "d1/inner/old2.txt", "d2/old.txt", "d2/inner"] {
        assert!(!s.contains_key(gone), "{gone} came back: {:#?}", s.keys());
    }
}

// ---------------------------------------------------------------- 6

fn a_file_open_for_writing_is_not_replaced_under_its_writer(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("shared.txt"), b"version zero").unwrap();
    fs::write(a.p("kept.txt"), b"kept: original").unwrap();
    converge(&[a, bb], None, "setup");
    let beta_bytes = b"beta is writing this, and it is longer";
    let alpha_bytes = b"alpha changed it meanwhile";
    {
        // No process may start while beta's file is open: its exec would
        // close (flush) the descriptor.
        let _gate = no_spawns();
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .open(bb.p("shared.txt"))
            .unwrap();
        f.write_all_at(beta_bytes, 0).unwrap();
        rewrite(&a.p("shared.txt"), alpha_bytes);
        // A new file still being written on beta, made on alpha too; a
        // file being written on beta, deleted on alpha.
        let fresh = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(bb.p("fresh.txt"))
            .unwrap();
        fresh.write_all_at(b"fresh on beta", 0).unwrap();
        let kept = OpenOptions::new()
            .write(true)
            .open(bb.p("kept.txt"))
            .unwrap();
        kept.write_all_at(b"kept: beta's edit is longer", 0)
            .unwrap();
        fs::write(a.p("fresh.txt"), b"fresh on alpha").unwrap();
        fs::remove_file(a.p("kept.txt")).unwrap();
        fs::write(a.p("marker"), b"after the others").unwrap();
        assert!(
            poll(CONVERGE, Duration::from_millis(50), || bb
                .p("marker")
                .exists()),
            "alpha's marker never reached beta"
        );
        // Nothing replaced the open files meanwhile; the conflicts are
        // settled once beta's versions are in the log.
        assert!(conflict_copies(&bb.mnt, "shared.txt").is_empty());
        assert_eq!(fresh.metadata().unwrap().len(), 13);
        drop(fresh);
        drop(kept);
        let mut buf = vec![0; beta_bytes.len()];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, beta_bytes, "the writer's file changed under it");
        assert_eq!(
            fs::metadata(bb.p("shared.txt")).unwrap().len(),
            beta_bytes.len() as u64
        );
        f.sync_all().unwrap();
        drop(f);
    }
    let s = converge(&[a, bb], None, "after beta's writer closed");
    // Beta's versions were made (closed) last: they keep the names.
    assert_eq!(read(&a.p("shared.txt")), beta_bytes);
    let copies = conflict_copies(&a.mnt, "shared.txt");
    assert_eq!(copies.len(), 1, "{:#?}", s.keys());
    assert_eq!(read(&a.p(&copies[0])), alpha_bytes);
    assert_eq!(read(&a.p("fresh.txt")), b"fresh on beta");
    let fresh_copy = conflict_copies(&a.mnt, "fresh.txt");
    assert_eq!(fresh_copy.len(), 1, "{:#?}", s.keys());
    assert_eq!(read(&a.p(&fresh_copy[0])), b"fresh on alpha");
    assert_eq!(read(&a.p("kept.txt")), b"kept: beta's edit is longer");
    // shared + copy, fresh + copy, kept, marker
    assert_eq!(s.len(), 6, "{:#?}", s.keys());
}

/// A descriptor opened before a remote change keeps reading the version it
/// opened (fetched or not yet), as after a rename over the file.
fn a_reader_keeps_the_version_it_opened(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    let (old_read, old_cloud) = (pattern(61, 200_000), pattern(62, 150_000));
    fs::write(a.p("read.bin"), &old_read).unwrap();
    fs::write(a.p("cloud.bin"), &old_cloud).unwrap();
    wait_for("both files on beta", || {
        bb.p("read.bin").exists() && bb.p("cloud.bin").exists()
    });
    assert_eq!(read(&bb.p("read.bin")), old_read);
    assert_eq!(bb.path_status(arg(&bb.p("cloud.bin")))["state"], "cloud");
    let r1 = fs::File::open(bb.p("read.bin")).unwrap();
    let r2 = fs::File::open(bb.p("cloud.bin")).unwrap();
    let mut head = vec![0; 1000];
    r1.read_exact_at(&mut head, 0).unwrap();
    rewrite(&a.p("read.bin"), b"new");
    rewrite(&a.p("cloud.bin"), b"newer");
    wait_for("the new versions on beta", || {
        fs::read(bb.p("read.bin")).is_ok_and(|d| d == b"new")
            && fs::read(bb.p("cloud.bin")).is_ok_and(|d| d == b"newer")
    });
    let read_all = |f: &fs::File, len: usize| {
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, 0).map(|()| buf)
    };
    assert!(
        read_all(&r1, old_read.len()).unwrap() == old_read,
        "a reader's fetched version changed under it"
    );
    match read_all(&r2, old_cloud.len()) {
        Ok(d) => assert!(d == old_cloud, "a reader got bytes of another version"),
        Err(e) => panic!("the version opened before the change is unreadable: {e}"),
    }
}

/// kill -9 of a node while it applies the log, then a remount: it catches
/// up, with no duplicates and no spurious conflict copies.
fn a_node_killed_while_pulling_catches_up(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::create_dir(a.p("many")).unwrap();
    for i in 0..300u64 {
        fs::write(a.p(&format!("many/f{i:03}")), pattern(i, 500 + i as usize)).unwrap();
    }
    wait_for("beta to start pulling", || {
        fs::read_dir(bb.p("many")).is_ok_and(|d| d.count() > 0)
    });
    bb.kill9_and_remount();
    for i in 0..50u64 {
        rewrite(&a.p(&format!("many/f{i:03}")), b"changed");
    }
    let s = converge(&[a, bb], None, "after kill -9 and remount");
    assert_eq!(s.len(), 301, "{:#?}", s.keys());
    assert_eq!(read(&bb.p("many/f007")), b"changed");
    assert_eq!(read(&bb.p("many/f299")), pattern(299, 799));
    sync_wait(bb);
    assert!(
        bb.log_events().is_empty(),
        "beta journaled changes of its own: {:?}",
        bb.log_events()
    );
}

// ---------------------------------------------------------------- 7

fn hostile_paths_in_the_log_never_leave_the_folder(b: &Backend) {
    use latus::event::{ChunkRef, Detection, EventType};
    let n = mounted_on(b, &["alpha"]);
    let a = &n[0];
    fs::write(a.p("hello.txt"), b"hello").unwrap();
    sync_wait(a);
    let token = unique("hostile");
    let outside = a.scratch(); // the parent of the mount folder
    let victim = outside.join(format!("victim-{token}"));
    fs::write(&victim, b"must survive").unwrap();

    let key = latus::crypto::KeyFile::parse(&fs::read(export_key(a)).unwrap()).unwrap();
    let (volume, _) = latus::sync::Volume::open(&b.url(), &key, false).unwrap();
    let mallory = uuid::Uuid::new_v4();
    // A key holder writes well-formed records (its own chain, from the
    // empty log's head) with hostile paths.
    let clear = latus::sync::PublishedEvent::clear_originator(&volume.keys, mallory);
    let aad = volume.event_aad(clear);
    let data = format!("hostile content {token}").into_bytes();
    let name = volume.keys.chunk_name(&data);
    volume
        .cloud
        .objects
        .put(&name, &volume.keys.seal_chunk(&name, &data))
        .unwrap();
    let chunks = vec![ChunkRef {
        name,
        size: data.len() as u64,
    }];
    let now = latus::vfs::now_nanos();
    let mut local_id = 0;
    let signer = latus::crypto::NodeSigner::generate().unwrap();
    let mut append = |ty: EventType, path: &str, src: Option<&str>| -> u64 {
        local_id += 1;
        let mut ev = latus::event::Event::node_record(mallory, ty, path.to_string(), now);
        ev.id = local_id;
        ev.detection = Detection::Filesystem;
        ev.mode = 0o644;
        ev.src_path = src.map(str::to_string);
        let content = ty.carries_content();
        if content {
            ev.size = data.len() as u64;
            ev.file_hash = Some(sha512_hex(&data));
        }
        if ty == EventType::Symlink {
            ev.link_target = Some("/tmp".into());
        }
        let p = latus::sync::PublishedEvent::new(ev, "mallory", content.then(|| chunks.clone()))
            .linked(local_id, 0, latus::crypto::hex(&[0; 32]));
        volume
            .cloud
            .log
            .append(clear, &p.seal(&volume.keys, &aad, &signer))
            .unwrap()
    };
    let long = "x".repeat(300);
    let contents = [
        (format!("../escape-{token}"), format!("_escape-{token}")),
        (format!("/tmp/abs-{token}"), format!("_tmp_abs-{token}")),
        (format!("a/../../b-{token}"), format!("a_.._.._b-{token}")),
        (format!("nul\0{token}"), format!("nul_{token}")),
        (format!("a//{token}"), format!("a__{token}")),
        (long.clone(), "x".repeat(200)),
        (format!("ok/{long}"), format!("ok_{}", "x".repeat(197))),
    ];
    let mut kept = Vec::new();
    for (i, (path, refuge)) in contents.iter().enumerate() {
        let ty = if i % 2 == 0 {
            EventType::Create
        } else {
            EventType::Modify
        };
        let m = append(ty, path, None);
        kept.push(format!("{m} {refuge}"));
    }
    let others = [
        (EventType::Mkdir, format!("../dir-{token}"), None),
        (EventType::Symlink, format!("../link-{token}"), None),
        (EventType::Delete, format!("../victim-{token}"), None),
        (
            EventType::Move,
            format!("stolen-{token}"),
            Some(format!("../victim-{token}")),
        ),
        (
            EventType::Move,
            format!("../moved-{token}"),
            Some("hello.txt".to_string()),
        ),
        (EventType::Setattr, "/etc/hostname".to_string(), None),
        (EventType::Rmdir, "..".to_string(), None),
        (
            EventType::Move,
            String::new(),
            Some("hello.txt".to_string()),
        ),
    ];
    for (ty, path, src) in &others {
        append(*ty, path, src.as_deref());
    }
    let refused = (contents.len() + others.len()) as u64;
    // Safe paths, but through a symlink that points outside: the folder
    // is latus's own tree, never the host's paths, so the file lands in a
    // folder that replaces the symlink.
    append(EventType::Symlink, &format!("ln-{token}"), None);
    append(EventType::Create, &format!("ln-{token}/evil-{token}"), None);
    append(EventType::Create, &format!("fine-{token}.txt"), None);

    // The good event after them arrives by polling: the node kept going.
    wait_for("mallory's good file", || {
        a.p(&format!("fine-{token}.txt")).exists()
    });
    assert_eq!(read(&a.p(&format!("fine-{token}.txt"))), data);
    let q = &a.status()["queue"];
    assert_eq!(q["refused_events"].as_u64(), Some(refused), "{q}");
    // Content events with a bad path are kept under a safe name, the rest dropped.
    let mut expect_kept = kept.clone();
    expect_kept.sort();
    assert_eq!(names_in(&a.p("latus-refused")), expect_kept);
    for k in &kept {
        assert_eq!(read(&a.p(&format!("latus-refused/{k}"))), data, "{k}");
    }
    let mut top = names_in(&a.mnt);
    top.sort();
    // The symlink in the way of a folder is kept beside it (a file/folder
    // conflict), and the file lands in a real folder inside the mount.
    let aside: Vec<&String> = top
        .iter()
        .filter(|n| n.starts_with(&format!("ln-{token} (conflict from ")))
        .collect();
    assert_eq!(aside.len(), 1, "{top:?}");
    let aside = aside[0].clone();
    assert!(
        fs::symlink_metadata(a.p(&aside))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(a.p(&format!("ln-{token}")))
            .unwrap()
            .is_dir()
    );
    assert!(a.p(&format!("ln-{token}/evil-{token}")).exists());
    top.retain(|n| n != &aside);
    assert_eq!(
        top,
        [
            format!("fine-{token}.txt"),
            "hello.txt".to_string(),
            "latus-refused".to_string(),
            format!("ln-{token}"),
        ]
    );
    assert!(!Path::new(&format!("/tmp/evil-{token}")).exists());
    assert_eq!(read(&a.p("hello.txt")), b"hello");
    // Nothing outside the folder: its parent, /tmp, the absolute path.
    assert_eq!(read(&victim), b"must survive");
    let mut stray = Vec::new();
    let mut stack = vec![outside.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p == a.mnt {
                continue;
            }
            if e.file_name().to_string_lossy().contains(&token) && p != victim {
                stray.push(p.clone());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    for e in fs::read_dir("/tmp").unwrap().flatten() {
        if e.file_name().to_string_lossy().contains(&token) {
            stray.push(e.path());
        }
    }
    assert!(stray.is_empty(), "written outside the folder: {stray:?}");
    assert!(!Path::new(&format!("/tmp/abs-{token}")).exists());
    let log = fs::read_to_string(a.home.join("daemon.log")).unwrap();
    assert!(log.contains("refused an event"), "{log}");
    // A remount replays the same journal: still nothing outside.
    a.remount();
    assert_eq!(names_in(&a.p("latus-refused")).len(), kept.len());
    assert_eq!(read(&victim), b"must survive");
}

// ---------------------------------------------------------------- 8

fn versions_and_restore_across_nodes(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    let v = |i: u32| format!("version {i} of the document\n").repeat(i as usize);
    fs::write(a.p("doc.txt"), v(1)).unwrap();
    sync_wait(a);
    rewrite(&a.p("doc.txt"), v(2).as_bytes());
    sync_wait(a);
    rewrite(&a.p("doc.txt"), v(3).as_bytes());
    wait_for("v3 on beta", || {
        fs::read(bb.p("doc.txt")).is_ok_and(|d| d == v(3).as_bytes())
    });
    let list = json_cmd(bb, &["versions", arg(&bb.p("doc.txt")), "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:#?}");
    let types: Vec<&str> = list
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["create", "modify", "modify"]);
    for (i, e) in list.iter().enumerate() {
        assert_eq!(e["size"].as_u64(), Some(v(i as u32 + 1).len() as u64));
        assert_eq!(e["node"], "alpha");
        assert_eq!(
            e["hash"].as_str(),
            Some(sha512_hex(v(i as u32 + 1).as_bytes()).as_str())
        );
    }
    let m1 = list[0]["mivui"].as_u64().unwrap().to_string();
    let m2 = list[1]["mivui"].as_u64().unwrap().to_string();
    // v1 back in place, v2 beside it, restored on beta: alpha gets both.
    let r = json_cmd(
        bb,
        &["restore", arg(&bb.p("doc.txt")), "--version", &m1, "--json"],
    );
    assert_eq!(r["files_restored"], 1, "{r}");
    json_cmd(
        bb,
        &[
            "restore",
            arg(&bb.p("doc.txt")),
            "--version",
            &m2,
            "--to",
            arg(&bb.p("old/doc-v2.txt")),
            "--json",
        ],
    );
    assert_eq!(read(&bb.p("doc.txt")), v(1).as_bytes());
    wait_for("v1 back on alpha", || {
        fs::read(a.p("doc.txt")).is_ok_and(|d| d == v(1).as_bytes())
    });
    wait_for("v2 beside it on alpha", || {
        fs::read(a.p("old/doc-v2.txt")).is_ok_and(|d| d == v(2).as_bytes())
    });
    assert_eq!(
        json_cmd(a, &["versions", arg(&a.p("doc.txt")), "--json"])
            .as_array()
            .unwrap()
            .len(),
        4,
        "the restore is a new version"
    );

    // A deleted file comes back.
    fs::write(a.p("gone.txt"), b"deleted by mistake").unwrap();
    wait_for("gone.txt on beta", || bb.p("gone.txt").exists());
    fs::remove_file(a.p("gone.txt")).unwrap();
    wait_for("gone.txt deleted on beta", || !bb.p("gone.txt").exists());
    json_cmd(bb, &["restore", arg(&bb.p("gone.txt")), "--json"]);
    wait_for("gone.txt back on alpha", || {
        fs::read(a.p("gone.txt")).is_ok_and(|d| d == b"deleted by mistake")
    });

    // A folder as it was before a bad day.
    fs::create_dir_all(a.p("proj/sub")).unwrap();
    fs::write(a.p("proj/a.txt"), b"a, good").unwrap();
    fs::write(a.p("proj/b.txt"), b"b, good").unwrap();
    fs::write(a.p("proj/sub/c.txt"), b"c, good").unwrap();
    fs::write(a.p("proj/d.bin"), pattern(8, 50_000)).unwrap();
    let good = converge(&[a, bb], None, "proj on beta");
    let good_proj = snap(&a.p("proj")).unwrap();
    assert!(good.contains_key("proj/sub/c.txt"));
    thread::sleep(Duration::from_millis(1100));
    let before_bad_day = now_secs();
    thread::sleep(Duration::from_millis(1100));
    rewrite(&a.p("proj/a.txt"), b"a, ruined");
    fs::remove_file(a.p("proj/b.txt")).unwrap();
    fs::remove_dir_all(a.p("proj/sub")).unwrap();
    fs::write(a.p("proj/new.txt"), b"made on the bad day").unwrap();
    fs::rename(a.p("proj/d.bin"), a.p("proj/d-renamed.bin")).unwrap();
    converge(&[a, bb], None, "the bad day on beta");
    let r = json_cmd(
        bb,
        &[
            "restore",
            arg(&bb.p("proj")),
            "--at",
            &before_bad_day.to_string(),
            "--json",
        ],
    );
    assert!(r["files_restored"].as_u64() >= Some(3), "{r}");
    assert_eq!(snap(&bb.p("proj")).unwrap(), good_proj, "restored on beta");
    converge(&[a, bb], None, "the restore on alpha");
    let restored = snap(&a.p("proj")).unwrap();
    assert_trees_eq(&good_proj, &restored, "proj restored on alpha");
}

// ---------------------------------------------------------------- 9

fn prune_keeps_every_current_file_readable_from_the_cloud(b: &Backend) {
    let n = nodes_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    edit_config(a, |c| {
        c.insert(
            "retention".into(),
            serde_json::json!({ "keep_versions": 1 }),
        );
    });
    a.mount();
    bb.mount();
    let p = |i: u64| pattern(900 + i, 100_000);
    fs::write(a.p("p.bin"), p(1)).unwrap();
    sync_wait(a);
    rewrite(&a.p("p.bin"), &p(2));
    sync_wait(a);
    rewrite(&a.p("p.bin"), &p(3));
    fs::create_dir(a.p("dir")).unwrap();
    fs::write(a.p("dir/q.bin"), p(4)).unwrap();
    fs::write(a.p("small.txt"), b"small").unwrap();
    // A version that lives on under another name.
    fs::write(a.p("a.bin"), p(5)).unwrap();
    fs::rename(a.p("a.bin"), a.p("b.bin")).unwrap();
    fs::write(a.p("a.bin"), p(6)).unwrap();
    sync_wait(a);
    rewrite(&a.p("a.bin"), &p(7));
    sync_wait(a);
    // Beta learns the names and sizes but reads nothing.
    wait_for("beta's listing", || {
        fs::metadata(bb.p("p.bin")).is_ok_and(|m| m.len() == 100_000)
            && bb.p("dir/q.bin").exists()
            && bb.p("small.txt").exists()
            && fs::metadata(bb.p("a.bin")).is_ok_and(|m| m.len() == 100_000)
            && bb.p("b.bin").exists()
    });
    // a.bin's two versions have one size: wait until beta has read the log
    // as far as alpha wrote it, or it would still name the version pruned.
    let written = a.status()["queue"]["log_seen"].as_u64().unwrap();
    wait_for("beta reads the log to its end", || {
        bb.status()["queue"]["log_seen"].as_u64().unwrap_or(0) >= written
    });
    let old_versions = json_cmd(bb, &["versions", arg(&bb.p("p.bin")), "--json"]);
    for f in ["p.bin", "dir/q.bin", "small.txt", "a.bin", "b.bin"] {
        assert_eq!(bb.path_status(arg(&bb.p(f)))["state"], "cloud", "{f}");
    }
    let before = chunk_objects(b).len();
    // p.bin: v1, v2; a.bin: p(6) (p(5) is b.bin now).
    let dry = json_cmd(a, &["prune", "--dry-run", "--json"]);
    assert_eq!(dry["versions"], 3, "{dry}");
    assert_eq!(chunk_objects(b).len(), before, "a dry run removed objects");
    let r = json_cmd(a, &["prune", "--json"]);
    assert_eq!(
        (r["versions"].as_u64(), r["dry_run"].as_bool()),
        (Some(3), Some(false)),
        "{r}"
    );
    let removed = r["objects"].as_u64().unwrap() as usize;
    assert!(removed >= 3, "{r}");
    let after = chunk_objects(b).len();
    assert_eq!(after, before - removed, "{r}");
    // Every current file reads right on beta, fetched from the cloud.
    assert_eq!(read(&bb.p("p.bin")), p(3));
    assert_eq!(read(&bb.p("dir/q.bin")), p(4));
    assert_eq!(read(&bb.p("small.txt")), b"small");
    assert_eq!(read(&bb.p("a.bin")), p(7));
    assert_eq!(read(&bb.p("b.bin")), p(5));
    assert_eq!(bb.path_status(arg(&bb.p("p.bin")))["state"], "local");
    assert_eq!(
        json_cmd(a, &["versions", arg(&a.p("p.bin")), "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A fresh node joining now gets everything too.
    let c = init_node(&b.url(), "gamma", Some(&export_key(a)));
    c.mount();
    converge(&[a, bb, &c], None, "after prune");
    // A second prune finds nothing more.
    assert_eq!(json_cmd(a, &["prune", "--json"])["objects"], 0);
    // Beta's history may still name a pruned version: restoring it must
    // fail cleanly, never put a name on content that is gone.
    let m1 = old_versions[0]["mivui"].as_u64().unwrap().to_string();
    let out = bb.latus(&["restore", arg(&bb.p("p.bin")), "--version", &m1, "--json"]);
    if out.ok() {
        match fs::read(bb.p("p.bin")) {
            Ok(d) => assert!(d == p(1), "restored a pruned version: wrong bytes"),
            Err(e) => panic!(
                "`restore --version {m1}` of a version alpha pruned succeeded on beta, and p.bin is now unreadable: {e}\n{out}"
            ),
        }
    }
}

// ---------------------------------------------------------------- 10

fn nodes_are_listed_and_forgotten(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("a.txt"), b"from alpha").unwrap();
    fs::write(bb.p("b.txt"), b"from beta").unwrap();
    converge(&[a, bb], None, "setup");
    let (ida, idb) = (
        a.status()["node_id"].as_str().unwrap().to_string(),
        bb.status()["node_id"].as_str().unwrap().to_string(),
    );
    let list = json_cmd(a, &["nodes", "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    for (id, name, me) in [(&ida, "alpha", true), (&idb, "beta", false)] {
        let e = list
            .iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{name} not listed: {list:#?}"));
        assert_eq!(e["name"], name);
        assert_eq!(e["this_node"], me);
        assert!(e["events_published"].as_u64() > Some(0), "{e}");
        assert!(e["last_seen"].as_i64() > Some(0), "{e}");
    }
    assert!(
        !a.latus(&["nodes", "remove", &ida]).ok(),
        "a node forgot itself"
    );
    a.latus(&["nodes", "remove", &idb]).expect_ok();
    // (At once: see `forgetting_a_node_shows_at_once`.)
    let mut list = Value::Null;
    wait_for("beta to leave alpha's list", || {
        list = json_cmd(a, &["nodes", "--json"]);
        list.as_array().unwrap().len() == 1
    });
    assert_eq!(list[0]["id"], ida.as_str());
    // Its files stay, on both nodes, after each has read the log through
    // twice more (`sync --wait` runs a pass that starts after the call;
    // beta's ends at the record removing it).
    for _ in 0..2 {
        a.latus(&["sync", "--wait", "--timeout", "300"]).expect_ok();
        let out = bb.latus(&["sync", "--wait", "--timeout", "300"]);
        assert!(
            !out.ok() && out.stderr.contains("this node was removed"),
            "{out}"
        );
    }
    let s = converge(&[a, bb], None, "after forgetting beta");
    assert!(s.contains_key("b.txt"));
    assert_eq!(read(&a.p("b.txt")), b"from beta");
}

/// `nodes remove ID` then `nodes`: the node is gone from the list right
/// away, not only once the daemon next reads the log back (`poll_ms`).
fn forgetting_a_node_shows_at_once(b: &Backend) {
    let n = nodes_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    edit_config(a, |c| {
        c.insert("poll_ms".into(), 5_000.into());
    });
    a.mount();
    bb.mount();
    fs::write(bb.p("b.txt"), b"from beta").unwrap();
    sync_wait(bb);
    sync_wait(a);
    assert_eq!(
        json_cmd(a, &["nodes", "--json"]).as_array().unwrap().len(),
        2
    );
    let idb = bb.status()["node_id"].as_str().unwrap().to_string();
    let out = a.latus(&["nodes", "remove", &idb]).expect_ok();
    let list = json_cmd(a, &["nodes", "--json"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "`{}` said it forgot beta, yet `nodes` still lists it: {list}",
        out.stdout.trim()
    );
}

// ---------------------------------------------------------------- 11

fn an_offline_node_catches_up(b: &Backend) {
    // dir: beta's cloud is a symlink to the volume's folder, removed to
    // make the cloud unreachable for beta alone (no remount); aws: beta is
    // mounted --offline, then remounted.
    let a = init_node(&b.url(), "alpha", None);
    let key = export_key(&a);
    let link = a.scratch().join("beta-cloud-link");
    let bb = match b {
        Backend::Dir(p) => {
            symlink(p, &link).unwrap();
            init_node(&format!("dir:{}", link.display()), "beta", Some(&key))
        }
        Backend::Aws { .. } => init_node(&b.url(), "beta", Some(&key)),
    };
    a.mount();
    bb.mount();
    fs::write(a.p("common.txt"), b"common").unwrap();
    fs::create_dir(a.p("dir")).unwrap();
    fs::write(a.p("dir/x.txt"), b"x").unwrap();
    converge(&[&a, &bb], None, "setup");
    match b {
        Backend::Dir(_) => fs::remove_file(&link).unwrap(),
        Backend::Aws { .. } => {
            bb.unmount();
            mount_offline(&bb);
        }
    }
    // Both work meanwhile.
    fs::write(bb.p("offline-1.txt"), b"made while offline").unwrap();
    fs::create_dir(bb.p("offline-dir")).unwrap();
    fs::write(bb.p("offline-dir/y.bin"), pattern(3, 70_000)).unwrap();
    fs::rename(bb.p("dir/x.txt"), bb.p("dir/x-moved.txt")).unwrap();
    fs::write(a.p("online-1.txt"), b"made while beta was away").unwrap();
    rewrite(&a.p("common.txt"), b"common, changed by alpha");
    fs::create_dir(a.p("online-dir")).unwrap();
    if matches!(b, Backend::Dir(_)) {
        assert!(!bb.latus(&["sync", "--wait", "--timeout", "3"]).ok());
        assert!(bb.status()["queue"]["pending_events"].as_u64() > Some(0));
    }
    sync_wait(&a);
    // dir: a pass of beta's that started after alpha published has run
    // (and failed: its cloud is gone), so beta had its chance to hear of
    // it. aws: an --offline mount never reads the log.
    if matches!(b, Backend::Dir(_)) {
        assert!(!bb.latus(&["sync", "--wait", "--timeout", "60"]).ok());
    }
    assert!(
        !bb.p("online-1.txt").exists(),
        "beta got news while offline"
    );
    assert!(!a.p("offline-1.txt").exists());
    match b {
        Backend::Dir(p) => symlink(p, &link).unwrap(),
        Backend::Aws { .. } => {
            bb.unmount();
            bb.mount();
        }
    }
    sync_wait(&bb);
    let s = converge(&[&a, &bb], None, "after beta came back");
    for k in [
        "offline-1.txt",
        "offline-dir/y.bin",
        "dir/x-moved.txt",
        "online-1.txt",
        "online-dir",
    ] {
        assert!(s.contains_key(k), "{k} missing: {:#?}", s.keys());
    }
    assert!(!s.contains_key("dir/x.txt"));
    assert_eq!(read(&bb.p("common.txt")), b"common, changed by alpha");
    assert_eq!(read(&a.p("offline-dir/y.bin")), pattern(3, 70_000));
}

// ---------------------------------------------------------------- 20

/// Two conflicts, set up so that the order in the log and the order the
/// changes were made disagree for one of them:
/// - `late.txt`: alpha edits it offline, then beta edits it online; alpha
///   publishes last.
/// - `newer.txt`: both offline, beta edits it, then alpha; beta publishes
///   first.
///
/// Returns the moments between the edits (whole seconds) for the checks.
fn concurrent_edits_in_both_orders(a: &Mounted, bb: &Mounted) -> [(i64, i64); 4] {
    fs::write(a.p("late.txt"), b"late: original").unwrap();
    fs::write(a.p("newer.txt"), b"newer: original").unwrap();
    converge(&[a, bb], None, "setup");
    go_offline(&[a]);
    let t0 = now_secs();
    rewrite(&a.p("late.txt"), b"late: alpha's old offline edit");
    let t1 = now_secs();
    // Every edit is a moment after the one before it, by the clocks of
    // the nodes (one clock here): whole seconds apart, so that the names
    // of the copies tell them apart too.
    thread::sleep(Duration::from_millis(1100));
    let t2 = now_secs();
    rewrite(&bb.p("late.txt"), b"late: beta's newer edit");
    let t3 = now_secs();
    sync_wait(bb);
    go_offline(&[bb]);
    thread::sleep(Duration::from_millis(1100));
    let t4 = now_secs();
    rewrite(&bb.p("newer.txt"), b"newer: beta's older edit");
    let t5 = now_secs();
    thread::sleep(Duration::from_millis(1100));
    let t6 = now_secs();
    rewrite(&a.p("newer.txt"), b"newer: alpha's newest edit");
    let t7 = now_secs();
    go_online_in_order(&[bb, a]);
    [(t0, t1), (t2, t3), (t4, t5), (t6, t7)]
}

/// An old edit arriving late never replaces a newer one every node already
/// shows; a newer edit arriving late takes the name; the other version of
/// each is a conflict copy named after the node that made it and when.
fn the_newest_change_keeps_the_name(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    let [alpha_late, _, beta_newer, _] = concurrent_edits_in_both_orders(a, bb);
    let s = converge(&[a, bb], None, "newest wins");
    for m in [a, bb] {
        assert_eq!(read(&m.p("late.txt")), b"late: beta's newer edit");
        let copies = conflict_copies(&m.mnt, "late.txt");
        assert_eq!(copies.len(), 1, "{:#?}", s.keys());
        assert_conflict_name(&copies[0], "late.txt", "alpha", alpha_late.0, alpha_late.1);
        assert_eq!(read(&m.p(&copies[0])), b"late: alpha's old offline edit");

        assert_eq!(read(&m.p("newer.txt")), b"newer: alpha's newest edit");
        let copies = conflict_copies(&m.mnt, "newer.txt");
        assert_eq!(copies.len(), 1, "{:#?}", s.keys());
        assert_conflict_name(&copies[0], "newer.txt", "beta", beta_newer.0, beta_newer.1);
        assert_eq!(read(&m.p(&copies[0])), b"newer: beta's older edit");
    }
    assert_eq!(s.len(), 4, "{:#?}", s.keys());
    assert!(a.status()["queue"]["conflicts"].as_u64() >= Some(2));
}

/// `conflict_policy: first` (Dropbox's rule) on alpha: its concurrent
/// changes yield to the version first in the log, however new they are.
fn conflict_policy_first_keeps_the_first_in_the_log(b: &Backend) {
    let n = nodes_on(b, &["alpha", "beta"]);
    edit_config(&n[0], |c| {
        c.insert("conflict_policy".into(), "first".into());
    });
    for m in &n {
        m.mount();
    }
    let (a, bb) = (&n[0], &n[1]);
    let [alpha_late, _, _, alpha_newest] = concurrent_edits_in_both_orders(a, bb);
    let s = converge(&[a, bb], None, "first in the log wins");
    for m in [a, bb] {
        assert_eq!(read(&m.p("late.txt")), b"late: beta's newer edit");
        let copies = conflict_copies(&m.mnt, "late.txt");
        assert_eq!(copies.len(), 1, "{:#?}", s.keys());
        assert_conflict_name(&copies[0], "late.txt", "alpha", alpha_late.0, alpha_late.1);

        assert_eq!(read(&m.p("newer.txt")), b"newer: beta's older edit");
        let copies = conflict_copies(&m.mnt, "newer.txt");
        assert_eq!(copies.len(), 1, "{:#?}", s.keys());
        assert_conflict_name(
            &copies[0],
            "newer.txt",
            "alpha",
            alpha_newest.0,
            alpha_newest.1,
        );
        assert_eq!(read(&m.p(&copies[0])), b"newer: alpha's newest edit");
    }
    assert_eq!(s.len(), 4, "{:#?}", s.keys());
}

/// `echo x > file` over an existing file (open with O_TRUNC, the shell
/// closes a duplicate descriptor, then writes) is one new version, not an
/// empty one followed by the written one; `: > file` is one empty version.
fn a_redirect_over_a_file_publishes_one_version(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("notes.txt"), b"the first version\n").unwrap();
    fs::write(a.p("empty-me.txt"), b"soon empty\n").unwrap();
    sync_wait(a);
    let sh = |script: &str| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(script).current_dir(&a.mnt);
        run_cmd(&mut cmd, Duration::from_secs(30)).expect_ok();
    };
    sh("echo 'the second version' > notes.txt");
    sh(": > empty-me.txt");
    wait_for("both redirects on beta", || {
        fs::read(bb.p("notes.txt")).is_ok_and(|d| d == b"the second version\n")
            && fs::metadata(bb.p("empty-me.txt")).is_ok_and(|m| m.len() == 0)
    });
    for (file, sizes) in [("notes.txt", [18, 19]), ("empty-me.txt", [11, 0])] {
        let list = json_cmd(bb, &["versions", arg(&bb.p(file)), "--json"]);
        let got: Vec<u64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["size"].as_u64().unwrap())
            .collect();
        assert_eq!(got, sizes, "versions of {file}: {list:#}");
    }
}

/// Reading a cloud-only file to its end and freeing its folder at once
/// frees the copy (it was still being checked and put in place), and a
/// folder already online-only does not keep copies that finish later.
fn free_right_after_a_read_takes_the_copy(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    let big = pattern(71, 24 << 20);
    fs::create_dir(a.p("docs")).unwrap();
    fs::create_dir(a.p("online")).unwrap();
    fs::write(a.p("docs/big.bin"), &big).unwrap();
    fs::write(a.p("online/big.bin"), &big).unwrap();
    sync_wait(a);
    wait_for("both files listed on beta", || {
        fs::metadata(bb.p("docs/big.bin")).is_ok_and(|m| m.len() == big.len() as u64)
            && fs::metadata(bb.p("online/big.bin")).is_ok_and(|m| m.len() == big.len() as u64)
    });
    let state = |rel: &str| bb.path_status(arg(&bb.p(rel)))["state"].clone();
    assert_eq!(state("docs/big.bin"), "cloud");

    assert_eq!(read(&bb.p("docs/big.bin")), big);
    let out = bb.latus(&["free", arg(&bb.p("docs"))]).expect_ok();
    assert!(
        out.stdout.contains(&format!("freed {} bytes", big.len())),
        "free right after a full read: {out}"
    );
    assert_eq!(state("docs/big.bin"), "cloud");

    bb.latus(&["free", arg(&bb.p("online"))]).expect_ok();
    assert_eq!(read(&bb.p("online/big.bin")), big);
    wait_for("the copy read below an online-only folder goes", || {
        state("online/big.bin") == "cloud"
    });
    assert_eq!(read(&bb.p("docs/big.bin")), big);
}

// ---------------------------------------------------------------- 21

/// The provider copies an old record of node A (the file's first version)
/// to the end of the log, as it can without the key. Every node refuses it
/// (the record is A's second record again), says so in `status`, and the
/// file keeps its current version; local files keep working.
fn a_replayed_record_is_refused_and_nothing_rolls_back(b: &Backend) {
    let n = mounted_on(b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("doc.txt"), b"first version").unwrap();
    sync_wait(a);
    rewrite(&a.p("doc.txt"), b"second version");
    sync_wait(a);
    converge(&[a, bb], None, "before the replay");

    let key = latus::crypto::KeyFile::parse(&fs::read(export_key(a)).unwrap()).unwrap();
    let (volume, _) = latus::sync::Volume::open(&b.url(), &key, false).unwrap();
    let first_hash = sha512_hex(b"first version");
    // The test uses the key only to pick which record to copy; the copy
    // itself is what a provider without the key can do.
    let old = volume
        .cloud
        .log
        .read_after(0, 100_000)
        .unwrap()
        .into_iter()
        .find(|r| {
            let aad = volume.event_aad(r.originator);
            latus::sync::PublishedEvent::open(&volume.keys, &aad, &r.payload)
                .is_ok_and(|p| p.event.file_hash.as_deref() == Some(first_hash.as_str()))
        })
        .expect("the first version's record");
    volume
        .cloud
        .log
        .append(old.originator, &old.payload)
        .unwrap();

    for m in [a, bb] {
        wait_for("the replay is refused", || {
            m.status()["queue"]["log_breach"]
                .as_str()
                .is_some_and(|s| s.contains("replayed"))
        });
        assert_eq!(read(&m.p("doc.txt")), b"second version");
        let log = fs::read_to_string(m.home.join("daemon.log")).unwrap();
        assert!(log.contains("cannot be trusted"), "{log}");
    }
    // Local work goes on (queued, not published into a log that lies).
    fs::write(bb.p("after.txt"), b"written after the replay").unwrap();
    assert_eq!(read(&bb.p("after.txt")), b"written after the replay");
    assert_eq!(read(&bb.p("doc.txt")), b"second version");
}

/// The provider rolls the log back (drops its last records): the next
/// append of each node is numbered at or below what it already read, so
/// each node refuses to go on (`status` says why) and keeps its files.
#[test]
fn a_log_rolled_back_under_the_nodes_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let b = Backend::Dir(cloud.clone());
    let n = mounted_on(&b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("one.txt"), b"one").unwrap();
    fs::write(a.p("two.txt"), b"two").unwrap();
    sync_wait(a);
    converge(&[a, bb], None, "before the rollback");
    sync_wait(bb);
    // Drop the newest records (as a provider restoring an old backup).
    let records = log_records(&cloud);
    for r in &records[records.len() - 3..] {
        fs::remove_file(r).unwrap();
    }
    for (m, name) in [(a, "after-a.txt"), (bb, "after-b.txt")] {
        fs::write(m.p(name), b"written after the rollback").unwrap();
        wait_for("the rollback is refused", || {
            m.status()["queue"]["log_breach"]
                .as_str()
                .is_some_and(|s| s.contains("rolled back"))
        });
        assert_eq!(read(&m.p("one.txt")), b"one");
        assert_eq!(read(&m.p("two.txt")), b"two");
    }
}

/// The record files of the one volume in a `dir` cloud, in log order.
fn log_records(cloud: &Path) -> Vec<PathBuf> {
    let events = fs::read_dir(cloud.join("events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut records: Vec<PathBuf> = fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .bytes()
                .all(|c| c.is_ascii_digit())
        })
        .collect();
    records.sort();
    records
}

/// Puts `bytes` in place of record file `path` (whole, as a provider would).
fn replace_record(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-test");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// While beta is away, alpha publishes `files` one record each; then the
/// provider rearranges those records (`tamper` gets their bytes, returns
/// what the log holds from there on). Beta, back, must refuse the log with
/// a breach naming `why`, and keep its files; alpha keeps its own.
fn tampered_while_away(files: &[&str], tamper: fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>, why: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let b = Backend::Dir(cloud.clone());
    let n = mounted_on(&b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("base.txt"), b"before").unwrap();
    sync_wait(a);
    converge(&[a, bb], None, "before");
    sync_wait(bb);
    bb.unmount();
    let before = log_records(&cloud).len();
    for f in files {
        fs::write(a.p(f), f.as_bytes()).unwrap();
        sync_wait(a);
    }
    let records = log_records(&cloud);
    let new = &records[before..];
    assert_eq!(new.len(), files.len(), "one record per file");
    let originals: Vec<Vec<u8>> = new.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(
        originals.iter().all(|r| r[..16] == originals[0][..16]),
        "the new records are all alpha's"
    );
    let tampered = tamper(originals);
    for (i, path) in new.iter().enumerate() {
        match tampered.get(i) {
            Some(bytes) => replace_record(path, bytes),
            None => fs::remove_file(path).unwrap(),
        }
    }
    bb.mount();
    wait_for(why, || {
        bb.status()["queue"]["log_breach"]
            .as_str()
            .is_some_and(|s| s.contains(why))
    });
    let log = fs::read_to_string(bb.home.join("daemon.log")).unwrap();
    assert!(log.contains("cannot be trusted"), "{log}");
    assert_eq!(read(&bb.p("base.txt")), b"before");
    fs::write(bb.p("local.txt"), b"still works").unwrap();
    assert_eq!(read(&bb.p("local.txt")), b"still works");
    for f in files {
        assert_eq!(read(&a.p(f)), f.as_bytes());
    }
}

/// The provider swaps two of alpha's records: beta refuses the log at the
/// first one out of order.
#[test]
fn records_reordered_by_the_provider_are_refused() {
    tampered_while_away(
        &["one.txt", "two.txt"],
        |mut r| {
            r.swap(0, 1);
            r
        },
        "withheld or reordered",
    );
}

/// The provider drops one of alpha's records and closes the gap (numbers
/// stay dense): beta sees alpha's chain skip and refuses the log.
#[test]
fn a_record_withheld_by_the_provider_is_refused() {
    tampered_while_away(
        &["one.txt", "two.txt", "three.txt"],
        |mut r| {
            r.remove(1);
            r
        },
        "withheld or reordered",
    );
}

/// The provider forks the log: from some point it shows beta a copy that
/// only beta writes to, while alpha goes on in the real one. Each node
/// alone cannot tell; as soon as alpha is shown a record beta wrote after
/// reading the fork, alpha refuses the log ("a fork") and keeps its files.
#[test]
fn a_fork_shows_as_soon_as_a_node_sees_the_other_side() {
    let scratch = tempfile::tempdir().unwrap();
    let real = scratch.path().join(unique("cloud"));
    let link = scratch.path().join(unique("link"));
    let a = init_node(&format!("dir:{}", real.display()), "alpha", None);
    symlink(&real, &link).unwrap();
    let bb = init_node(
        &format!("dir:{}", link.display()),
        "beta",
        Some(&export_key(&a)),
    );
    a.mount();
    bb.mount();
    fs::write(a.p("base.txt"), b"before the fork").unwrap();
    sync_wait(&a);
    converge(&[&a, &bb], None, "before the fork");
    sync_wait(&bb);

    // From here beta is shown a copy of the log.
    let fork = scratch.path().join(unique("fork"));
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&real)
        .arg(&fork)
        .status()
        .unwrap();
    assert!(copied.success());
    let fork_point = log_records(&real).len();
    fs::remove_file(&link).unwrap();
    symlink(&fork, &link).unwrap();

    fs::write(a.p("alpha.txt"), b"alpha, in the real log").unwrap();
    sync_wait(&a);
    fs::write(bb.p("beta-1.txt"), b"beta, in the fork").unwrap();
    sync_wait(&bb);
    // Beta reads its own record back before its next one, so that record
    // says what beta's log looked like after the fork.
    wait_for("beta reads the fork", || {
        bb.status()["queue"]["log_seen"]
            .as_u64()
            .is_some_and(|n| n > fork_point as u64)
    });
    fs::write(bb.p("beta-2.txt"), b"beta again").unwrap();
    sync_wait(&bb);
    assert!(!a.p("beta-1.txt").exists() && !bb.p("alpha.txt").exists());
    assert!(a.status()["queue"]["log_breach"].is_null());

    // The provider now shows alpha beta's records, after alpha's.
    let real_records = log_records(&real);
    let mut next = real_records.len() as u64;
    for r in &log_records(&fork)[fork_point..] {
        next += 1;
        let path = r.parent().unwrap();
        let target = real.join(
            path.strip_prefix(&fork)
                .unwrap()
                .join(format!("{next:020}")),
        );
        replace_record(&target, &fs::read(r).unwrap());
    }
    wait_for("alpha sees the fork", || {
        a.status()["queue"]["log_breach"]
            .as_str()
            .is_some_and(|s| s.contains("fork"))
    });
    assert_eq!(read(&a.p("base.txt")), b"before the fork");
    assert_eq!(read(&a.p("alpha.txt")), b"alpha, in the real log");
}

/// Appends a `mkdir PATH` record claiming `node`, signed by `signer`, as
/// a holder of the volume key can.
fn forge_mkdir(
    b: &Backend,
    key_of: &Mounted,
    node: uuid::Uuid,
    signer: &latus::crypto::NodeSigner,
    path: &str,
) -> u64 {
    use latus::event::{Event, EventType};
    use latus::sync::PublishedEvent;
    let key = latus::crypto::KeyFile::parse(&fs::read(export_key(key_of)).unwrap()).unwrap();
    let (volume, _) = latus::sync::Volume::open(&b.url(), &key, false).unwrap();
    let clear = PublishedEvent::clear_originator(&volume.keys, node);
    let aad = volume.event_aad(clear);
    let mut ev = Event::node_record(node, EventType::Mkdir, path.into(), latus::vfs::now_nanos());
    ev.id = 1_000_000;
    ev.mode = 0o755;
    let p = PublishedEvent::new(ev, "forger", None).linked(1_000_000, 0, String::new());
    volume
        .cloud
        .log
        .append(clear, &p.seal(&volume.keys, &aad, signer))
        .unwrap()
}

fn refused_events(m: &Mounted) -> u64 {
    m.status()["queue"]["refused_events"].as_u64().unwrap_or(0)
}

/// A holder of the volume key publishes as alpha, signed with its own
/// key: every node refuses the record (counted, logged) and applies none
/// of it, and alpha's own later records are still taken.
#[test]
fn a_record_forged_as_another_node_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let b = Backend::Dir(scratch.path().join(unique("cloud")));
    let n = mounted_on(&b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(a.p("doc.txt"), b"alpha's").unwrap();
    sync_wait(a);
    converge(&[a, bb], None, "before the forgery");
    let alpha: uuid::Uuid = a.status()["node_id"].as_str().unwrap().parse().unwrap();
    let forger = latus::crypto::NodeSigner::generate().unwrap();
    forge_mkdir(&b, a, alpha, &forger, "forged");
    for m in [a, bb] {
        wait_for("the forgery is refused", || refused_events(m) >= 1);
        assert!(!m.p("forged").exists());
        let log = fs::read_to_string(m.home.join("daemon.log")).unwrap();
        assert!(log.contains("signed with another key"), "{log}");
        assert!(m.status()["queue"]["log_breach"].is_null());
    }
    fs::write(a.p("after.txt"), b"alpha, later").unwrap();
    sync_wait(a);
    wait_for("alpha's next record arrives", || bb.p("after.txt").exists());
    assert_eq!(read(&bb.p("doc.txt")), b"alpha's");
}

/// `nodes remove` revokes: the removed node learns it from the log, says
/// so and stops publishing; a record made with its key afterwards (a
/// stolen node, or one that ignores its removal) is refused by the others.
#[test]
fn a_removed_node_can_no_longer_publish() {
    let scratch = tempfile::tempdir().unwrap();
    let b = Backend::Dir(scratch.path().join(unique("cloud")));
    let n = mounted_on(&b, &["alpha", "beta"]);
    let (a, bb) = (&n[0], &n[1]);
    fs::write(bb.p("from-beta.txt"), b"beta's").unwrap();
    sync_wait(bb);
    converge(&[a, bb], None, "before the removal");
    let beta: uuid::Uuid = bb.status()["node_id"].as_str().unwrap().parse().unwrap();
    a.latus(&["nodes", "remove", &beta.to_string()]).expect_ok();
    wait_for("beta learns it was removed", || {
        bb.status()["queue"]["log_breach"]
            .as_str()
            .is_some_and(|s| s.contains("removed from the volume"))
    });
    // Beta's files keep working locally; what it writes is not published.
    fs::write(bb.p("late.txt"), b"after the removal").unwrap();
    assert_eq!(read(&bb.p("late.txt")), b"after the removal");
    // A record made with beta's own key after its removal is refused.
    let text = fs::read_to_string(bb.home.join("node.sign")).unwrap();
    let stolen = latus::crypto::NodeSigner::from_text(&text).unwrap();
    let before = refused_events(a);
    forge_mkdir(&b, a, beta, &stolen, "after-removal");
    wait_for("alpha refuses the removed node's record", || {
        refused_events(a) > before
    });
    assert!(!a.p("after-removal").exists());
    assert_eq!(read(&a.p("from-beta.txt")), b"beta's");
    let log = fs::read_to_string(a.home.join("daemon.log")).unwrap();
    assert!(log.contains("which was removed from the volume"), "{log}");
}

/// The keys a node's home holds: the volume key and its later epochs.
fn home_keys(m: &Mounted) -> latus::crypto::Keys {
    let key: [u8; 32] = fs::read(m.home.join("node.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let keys = latus::crypto::Keys::derive(&key);
    for e in latus::sync::read_epochs(&m.home.join("node.epochs")).unwrap() {
        keys.add_epoch(e.epoch, &e.master().unwrap());
    }
    keys
}

/// `nodes remove` starts a new key epoch: what is written afterwards is
/// sealed with a key the removed node was not given (neither its records
/// nor its content open with what the removed node holds), while the
/// remaining nodes, and a node joining later with a key file exported
/// after the removal, read it.
#[test]
fn after_a_removal_new_content_is_sealed_with_a_key_the_removed_node_lacks() {
    let scratch = tempfile::tempdir().unwrap();
    let cloud = scratch.path().join(unique("cloud"));
    let b = Backend::Dir(cloud.clone());
    let n = mounted_on(&b, &["alpha", "beta", "gamma"]);
    let (a, bb, g) = (&n[0], &n[1], &n[2]);
    fs::write(a.p("before.txt"), b"everyone reads this").unwrap();
    sync_wait(a);
    converge(&[a, bb, g], None, "before the removal");
    for m in [bb, g] {
        sync_wait(m);
    }
    let gamma = g.status()["node_id"].as_str().unwrap().to_string();
    let out = a.latus(&["nodes", "remove", &gamma]).expect_ok();
    assert!(!out.stdout.contains("warning"), "{out}");
    let removal = log_records(&cloud).len();
    wait_for("gamma learns it was removed", || {
        g.status()["queue"]["log_breach"]
            .as_str()
            .is_some_and(|s| s.contains("removed from the volume"))
    });
    let chunks_before: Vec<String> = chunk_objects(&b).into_iter().map(|(n, _)| n).collect();
    let secret = pattern(91, 300 << 10);
    fs::write(a.p("secret.bin"), &secret).unwrap();
    sync_wait(a);
    wait_for("beta reads what alpha wrote after the removal", || {
        fs::read(bb.p("secret.bin")).is_ok_and(|d| d == secret)
    });

    // What gamma holds opens nothing sealed since; alpha's keys open all.
    let (alpha_keys, gamma_keys) = (home_keys(a), home_keys(g));
    assert!(alpha_keys.epoch() > 0 && gamma_keys.epoch() == 0);
    let new_chunks: Vec<(String, Vec<u8>)> = chunk_objects(&b)
        .into_iter()
        .filter(|(n, _)| !chunks_before.contains(n))
        .collect();
    assert!(!new_chunks.is_empty());
    for (name, sealed) in &new_chunks {
        let name = name.rsplit('/').next().unwrap();
        assert!(alpha_keys.open_chunk(name, sealed).is_ok(), "{name}");
        assert!(gamma_keys.open_chunk(name, sealed).is_err(), "{name}");
    }
    let key = latus::crypto::KeyFile::parse(&fs::read(export_key(a)).unwrap()).unwrap();
    let (volume, _) = latus::sync::Volume::open(&b.url(), &key, false).unwrap();
    let later: Vec<_> = volume.cloud.log.read_after(removal as u64, 1000).unwrap();
    assert!(!later.is_empty());
    for r in &later {
        let aad = volume.event_aad(r.originator);
        assert!(alpha_keys.open_event(&aad, &r.payload).is_ok());
        assert!(gamma_keys.open_event(&aad, &r.payload).is_err());
    }

    // A node joining with a key file exported now reads everything.
    let fresh = a.scratch().join("key-after-removal.json");
    a.latus(&["key", "export", fresh.to_str().unwrap()])
        .expect_ok();
    let delta = init_node(&b.url(), "delta", Some(&fresh));
    delta.mount();
    wait_for("delta reads what was sealed after the removal", || {
        fs::read(delta.p("secret.bin")).is_ok_and(|d| d == secret)
    });
    assert_eq!(read(&delta.p("before.txt")), b"everyone reads this");
}

/// A node joining after `latus log checkpoint` starts from the checkpoint:
/// it applies only the records after it, and ends with the same tree,
/// including a rename, a delete and an edit made after it.
fn a_new_node_starts_from_a_checkpoint(b: &Backend) {
    let n = mounted_on(b, &["alpha"]);
    let a = &n[0];
    fs::create_dir(a.p("docs")).unwrap();
    for k in 0..20u64 {
        fs::write(a.p(&format!("docs/f{k}.txt")), pattern(k, 500 + k as usize)).unwrap();
    }
    fs::write(a.p("gone.txt"), b"soon deleted").unwrap();
    sync_wait(a);
    let made = json_cmd(a, &["log", "checkpoint", "--json"]);
    let at = made["mivui"].as_u64().unwrap();
    assert!(at > 20 && made["rows"].as_u64() >= Some(23), "{made}");
    fs::rename(a.p("docs/f0.txt"), a.p("docs/renamed.txt")).unwrap();
    fs::remove_file(a.p("gone.txt")).unwrap();
    rewrite(&a.p("docs/f1.txt"), b"edited after the checkpoint");
    sync_wait(a);
    let end = a.status()["queue"]["log_seen"].as_u64().unwrap();

    let key = export_key(a);
    let bb = init_node(&b.url(), "beta", Some(&key));
    bb.mount();
    let s = converge(&[a, &bb], None, "beta joined from the checkpoint");
    assert!(s.contains_key("docs/renamed.txt") && !s.contains_key("docs/f0.txt"));
    assert!(!s.contains_key("gone.txt"));
    assert_eq!(read(&bb.p("docs/f1.txt")), b"edited after the checkpoint");
    assert_eq!(read(&bb.p("docs/f7.txt")), pattern(7, 507));
    let q = &bb.status()["queue"];
    assert_eq!(q["history_from"].as_u64(), Some(at), "{q}");
    // Only what came after the checkpoint (and beta's own hello) was read.
    let applied = q["remote_applied"].as_u64().unwrap();
    assert!(
        applied <= end - at,
        "applied {applied}, records after the checkpoint {}",
        end - at
    );
    // History holds each file's version at the checkpoint, and what came
    // after it.
    let list = json_cmd(&bb, &["versions", arg(&bb.p("docs/f7.txt")), "--json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["node"], "alpha");
    assert_eq!(list[0]["size"].as_u64(), Some(507));
    let list = json_cmd(&bb, &["versions", arg(&bb.p("docs/f1.txt")), "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    // `nodes` knows alpha by name from the checkpoint.
    let list = json_cmd(&bb, &["nodes", "--json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "alpha"),
        "{list:#}"
    );
    // The checkpoint's objects are not orphans; prune on beta, which does
    // not know the history before the checkpoint, is refused.
    let check = json_cmd(a, &["check", "--json"]);
    assert_eq!(check["orphans"], 0, "{check:#}");
    let out = bb.latus(&["prune"]);
    assert!(!out.ok() && out.stderr.contains("checkpoint"), "{out}");
}
