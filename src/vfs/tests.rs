//! Core tests without a kernel mount: semantics, events, and crash recovery
//! (a `Vfs` dropped without shutdown stands for kill -9: the journal holds
//! what the database does not).

use std::ffi::OsStr;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::home::Home;
use crate::meta::Meta;

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

struct Node {
    _dir: tempfile::TempDir,
    home: Home,
    vfs: Arc<Vfs>,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        home.init(Some("t".into()), None, None).unwrap();
        let vfs = open(&home).0;
        Self {
            _dir: dir,
            home,
            vfs,
        }
    }

    /// kill -9: nothing is flushed, the process state is gone.
    fn crash(&mut self) -> RecoveryReport {
        let home = self.home.clone();
        let (vfs, report) = {
            // Drop every handle to the old instance first.
            let old = std::mem::replace(&mut self.vfs, open_blank());
            drop(old);
            open(&home)
        };
        self.vfs = vfs;
        report
    }

    fn events(&self) -> Vec<Event> {
        self.vfs.meta().commit_pending().unwrap();
        self.vfs.meta().events_since(0, usize::MAX).unwrap()
    }

    fn write_file(&self, parent: Ino, name: &str, data: &[u8]) -> Ino {
        let (a, o) = self
            .vfs
            .create(parent, OsStr::new(name), 0o644, OpenMode::WRITE, ME)
            .unwrap();
        self.vfs.write(a.ino, o.fh, 0, data).unwrap();
        self.vfs.flush(a.ino, o.fh, ME.pid).unwrap();
        self.vfs.release(a.ino, o.fh).unwrap();
        a.ino
    }

    fn read_all(&self, ino: Ino) -> Vec<u8> {
        let o = self.vfs.open(ino, OpenMode::READ, ME).unwrap();
        let d = self.vfs.read(ino, o.fh, 0, u32::MAX).unwrap();
        self.vfs.release(ino, o.fh).unwrap();
        d
    }
}

fn open(home: &Home) -> (Arc<Vfs>, RecoveryReport) {
    let cfg = home.load_config().unwrap();
    let store = Arc::new(ContentStore::open(home.objects_dir()).unwrap());
    let (meta, loaded) = Meta::open(&home.db_path(), &home.wal_path(), store.clone()).unwrap();
    Vfs::new(
        Arc::new(meta),
        store,
        loaded,
        cfg.node_id,
        cfg.ignore,
        (0, 0),
    )
    .unwrap()
}

/// A placeholder while the real instance is swapped out.
fn open_blank() -> Arc<Vfs> {
    let dir = tempfile::tempdir().unwrap().keep();
    let home = Home::new(dir.join("blank"));
    home.init(None, None, None).unwrap();
    open(&home).0
}

fn types(evs: &[Event]) -> Vec<(EventType, String)> {
    evs.iter()
        .map(|e| (e.event_type, e.file_path.clone()))
        .collect()
}

#[test]
fn one_create_per_close_with_the_content_hash() {
    let n = Node::new();
    let (a, o) = n
        .vfs
        .create(ROOT_INO, OsStr::new("a.txt"), 0o644, OpenMode::WRITE, ME)
        .unwrap();
    for i in 0..10u64 {
        n.vfs.write(a.ino, o.fh, i * 3, b"abc").unwrap();
    }
    n.vfs.flush(a.ino, o.fh, ME.pid).unwrap();
    n.vfs.release(a.ino, o.fh).unwrap();
    let evs = n.events();
    assert_eq!(types(&evs), [(EventType::Create, "a.txt".to_string())]);
    assert_eq!(evs[0].size, 30);
    assert_eq!(
        evs[0].file_hash.as_deref(),
        Some(sha2_hex(&b"abc".repeat(10)).as_str())
    );
}

fn sha2_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hasher::hex(&sha2::Sha512::digest(b))
}

#[test]
fn a_close_that_wrote_nothing_adds_no_empty_version() {
    let n = Node::new();
    let (a, o) = n
        .vfs
        .create(ROOT_INO, OsStr::new("f"), 0o644, OpenMode::WRITE, ME)
        .unwrap();
    n.vfs.flush(a.ino, o.fh, ME.pid).unwrap(); // a dup'ed descriptor closing
    n.vfs.write(a.ino, o.fh, 0, b"x").unwrap();
    n.vfs.flush(a.ino, o.fh, ME.pid).unwrap();
    n.vfs.release(a.ino, o.fh).unwrap();
    assert_eq!(types(&n.events()), [(EventType::Create, "f".to_string())]);
}

#[test]
fn editor_save_over_an_ignored_temp_is_a_modify() {
    let n = Node::new();
    n.write_file(ROOT_INO, "doc.txt", b"v1");
    n.write_file(ROOT_INO, ".doc.txt.swp", b"v2");
    n.vfs
        .rename(
            ROOT_INO,
            OsStr::new(".doc.txt.swp"),
            ROOT_INO,
            OsStr::new("doc.txt"),
            RenameFlags::default(),
        )
        .unwrap();
    let evs = n.events();
    assert_eq!(
        types(&evs),
        [
            (EventType::Create, "doc.txt".into()),
            (EventType::Modify, "doc.txt".into())
        ]
    );
    let ino = n.vfs.lookup(ROOT_INO, OsStr::new("doc.txt")).unwrap().ino;
    assert_eq!(n.read_all(ino), b"v2");
}

#[test]
fn folder_rename_is_one_move() {
    let n = Node::new();
    let d = n
        .vfs
        .mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME)
        .unwrap()
        .ino;
    for i in 0..50 {
        n.write_file(d, &format!("f{i}"), b"x");
    }
    let before = n.events().len();
    n.vfs
        .rename(
            ROOT_INO,
            OsStr::new("d"),
            ROOT_INO,
            OsStr::new("e"),
            RenameFlags::default(),
        )
        .unwrap();
    let evs = n.events();
    assert_eq!(evs.len(), before + 1);
    let mv = evs.last().unwrap();
    assert_eq!(
        (mv.event_type, mv.file_path.as_str(), mv.src_path.as_deref()),
        (EventType::Move, "e", Some("d"))
    );
    assert_eq!(n.vfs.path_status("e/f7").unwrap().size, 1);
}

#[test]
fn unlinked_open_file_stays_readable_until_release() {
    let n = Node::new();
    let ino = n.write_file(ROOT_INO, "f", b"keep me");
    let o = n.vfs.open(ino, OpenMode::READ, ME).unwrap();
    n.vfs.unlink(ROOT_INO, OsStr::new("f")).unwrap();
    assert!(matches!(
        n.vfs.lookup(ROOT_INO, OsStr::new("f")),
        Err(VfsError::NotFound)
    ));
    assert_eq!(n.vfs.read(ino, o.fh, 0, 100).unwrap(), b"keep me");
    n.vfs.release(ino, o.fh).unwrap();
    assert!(n.vfs.getattr(ino).is_err());
}

#[test]
fn posix_errors() {
    let n = Node::new();
    let d = n
        .vfs
        .mkdir(ROOT_INO, OsStr::new("d"), 0o755, ME)
        .unwrap()
        .ino;
    n.write_file(d, "f", b"x");
    let e = |r: Result<()>| r.unwrap_err().errno();
    assert_eq!(e(n.vfs.rmdir(ROOT_INO, OsStr::new("d"))), libc::ENOTEMPTY);
    assert_eq!(e(n.vfs.unlink(ROOT_INO, OsStr::new("d"))), libc::EISDIR);
    assert_eq!(e(n.vfs.rmdir(d, OsStr::new("f"))), libc::ENOTDIR);
    assert_eq!(
        e(n.vfs.rename(
            ROOT_INO,
            OsStr::new("d"),
            d,
            OsStr::new("x"),
            RenameFlags::default()
        )),
        libc::EINVAL
    );
    n.write_file(ROOT_INO, "g", b"y");
    assert_eq!(
        e(n.vfs.rename(
            ROOT_INO,
            OsStr::new("g"),
            d,
            OsStr::new("f"),
            RenameFlags {
                no_replace: true,
                ..Default::default()
            }
        )),
        libc::EEXIST
    );
    assert_eq!(
        n.vfs
            .link(d, ROOT_INO, OsStr::new("dir-link"))
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    let long = "x".repeat(256);
    assert_eq!(
        n.vfs
            .mkdir(ROOT_INO, OsStr::new(&long), 0o755, ME)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
}

#[test]
fn crash_keeps_closed_versions_and_drops_unclosed_ones() {
    let mut n = Node::new();
    let ino = n.write_file(ROOT_INO, "f", b"closed");
    let o = n.vfs.open(ino, OpenMode::WRITE, ME).unwrap();
    n.vfs.write(ino, o.fh, 0, b"NOT CLOSED, LONGER").unwrap();
    let report = n.crash();
    assert!(report.replayed_records > 0, "{report:?}");
    assert_eq!(report.discarded_unclosed_versions, 1);
    let ino = n.vfs.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    assert_eq!(n.read_all(ino), b"closed");
    // The journal is consistent: one create, nothing for the unclosed write.
    assert_eq!(types(&n.events()), [(EventType::Create, "f".to_string())]);
}

#[test]
fn crash_during_an_o_trunc_rewrite_keeps_the_last_closed_version() {
    let mut n = Node::new();
    let ino = n.write_file(ROOT_INO, "f", b"the closed version");
    let o = n.vfs.open(ino, OpenMode::TRUNCATE, ME).unwrap();
    assert_eq!(n.vfs.getattr(ino).unwrap().size, 0);
    n.vfs.write(ino, o.fh, 0, b"half").unwrap();
    n.crash();
    let ino = n.vfs.lookup(ROOT_INO, OsStr::new("f")).unwrap().ino;
    assert_eq!(n.read_all(ino), b"the closed version");
}

#[test]
fn a_forked_child_closing_its_copy_commits_nothing() {
    let n = Node::new();
    let me = Caller {
        pid: std::process::id(),
        ..ME
    };
    let (a, o) = n
        .vfs
        .create(ROOT_INO, OsStr::new("f"), 0o644, OpenMode::WRITE, me)
        .unwrap();
    n.vfs.write(a.ino, o.fh, 0, b"first half, ").unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    n.vfs.flush(a.ino, o.fh, child.id()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        n.events().is_empty(),
        "a child's close committed a half-written version"
    );
    n.vfs.write(a.ino, o.fh, 12, b"second half").unwrap();
    n.vfs.flush(a.ino, o.fh, me.pid).unwrap();
    n.vfs.release(a.ino, o.fh).unwrap();
    let evs = n.events();
    assert_eq!(types(&evs), [(EventType::Create, "f".to_string())]);
    assert_eq!(evs[0].size, 23);
}

#[test]
fn crash_before_close_of_a_new_file_journals_its_creation() {
    let mut n = Node::new();
    n.vfs
        .create(ROOT_INO, OsStr::new("new"), 0o600, OpenMode::WRITE, ME)
        .unwrap();
    let report = n.crash();
    assert_eq!(report.announced_files, 1);
    assert_eq!(types(&n.events()), [(EventType::Create, "new".to_string())]);
    assert_eq!(n.vfs.path_status("new").unwrap().size, 0);
}

#[test]
fn large_versions_are_hashed_in_the_background() {
    let n = Node::new();
    let data = vec![7u8; (INLINE_HASH_LIMIT + 1) as usize];
    n.write_file(ROOT_INO, "big", &data);
    let want = sha2_hex(&data);
    for _ in 0..200 {
        if n.events()[0].file_hash.as_deref() == Some(want.as_str()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("hash never arrived");
}

/// Operations of the reference test; indexes wrap around the name space.
#[derive(Debug, Clone)]
enum Op {
    Write {
        file: u8,
        offset: u16,
        len: u16,
        byte: u8,
    },
    WriteNoClose {
        file: u8,
        byte: u8,
    },
    Truncate {
        file: u8,
        len: u16,
    },
    Rename {
        from: u8,
        to: u8,
    },
    Unlink {
        file: u8,
    },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u8, 0..3000u16, 1..2000u16, any::<u8>()).prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        1 => (0..4u8, any::<u8>()).prop_map(|(file, byte)| Op::WriteNoClose { file, byte }),
        1 => (0..4u8, 0..4000u16).prop_map(|(file, len)| Op::Truncate { file, len }),
        1 => (0..4u8, 0..4u8).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (0..4u8).prop_map(|file| Op::Unlink { file }),
        1 => Just(Op::Crash),
    ]
}

fn name(i: u8) -> String {
    format!("f{i}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After every operation the mount shows the live content (all writes,
    /// closed or not, as POSIX shares one file between descriptors); after
    /// every crash it shows exactly the last committed version (the model),
    /// and the journal's events replay to the same set of paths.
    #[test]
    fn reference_model_with_crashes(ops in proptest::collection::vec(op(), 1..40)) {
        #[derive(Default, Clone)]
        struct File { live: Vec<u8>, committed: Vec<u8> }
        fn put(v: &mut Vec<u8>, offset: usize, len: usize, byte: u8) {
            if v.len() < offset + len { v.resize(offset + len, 0); }
            v[offset..offset + len].fill(byte);
        }
        let mut n = Node::new();
        let mut model: std::collections::BTreeMap<String, File> = Default::default();
        let mut open: Vec<(Ino, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Write { file, offset, len, byte } => {
                    let nm = name(file);
                    let ino = match n.vfs.lookup(ROOT_INO, OsStr::new(&nm)) {
                        Ok(a) => a.ino,
                        Err(_) => n.vfs.create(ROOT_INO, OsStr::new(&nm), 0o644, OpenMode::WRITE, ME).map(|(a, o)| { n.vfs.release(a.ino, o.fh).unwrap(); a.ino }).unwrap(),
                    };
                    let o = n.vfs.open(ino, OpenMode::WRITE, ME).unwrap();
                    n.vfs.write(ino, o.fh, offset as u64, &vec![byte; len as usize]).unwrap();
                    n.vfs.flush(ino, o.fh, ME.pid).unwrap();
                    n.vfs.release(ino, o.fh).unwrap();
                    let m = model.entry(nm).or_default();
                    put(&mut m.live, offset as usize, len as usize, byte);
                    m.committed = m.live.clone();
                }
                Op::WriteNoClose { file, byte } => {
                    if let Ok(a) = n.vfs.lookup(ROOT_INO, OsStr::new(&name(file))) {
                        let o = n.vfs.open(a.ino, OpenMode::WRITE, ME).unwrap();
                        n.vfs.write(a.ino, o.fh, 0, &[byte; 10]).unwrap();
                        open.push((a.ino, o.fh));
                        put(&mut model.get_mut(&name(file)).unwrap().live, 0, 10, byte);
                    }
                }
                Op::Truncate { file, len } => {
                    if let Ok(a) = n.vfs.lookup(ROOT_INO, OsStr::new(&name(file))) {
                        n.vfs.setattr(a.ino, SetAttr { size: Some(len as u64), ..Default::default() }, None).unwrap();
                        let m = model.get_mut(&name(file)).unwrap();
                        m.live.resize(len as usize, 0);
                        m.committed = m.live.clone();
                    }
                }
                Op::Rename { from, to } => {
                    let r = n.vfs.rename(ROOT_INO, OsStr::new(&name(from)), ROOT_INO, OsStr::new(&name(to)), RenameFlags::default());
                    if let Some(v) = model.remove(&name(from)) {
                        r.unwrap();
                        model.insert(name(to), v);
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Unlink { file } => {
                    let r = n.vfs.unlink(ROOT_INO, OsStr::new(&name(file)));
                    prop_assert_eq!(r.is_ok(), model.remove(&name(file)).is_some());
                }
                Op::Crash => {
                    open.clear();
                    n.crash();
                    for m in model.values_mut() {
                        m.live = m.committed.clone();
                    }
                }
            }
            for (nm, want) in &model {
                let a = n.vfs.lookup(ROOT_INO, OsStr::new(nm)).unwrap();
                prop_assert_eq!(&n.read_all(a.ino), &want.live, "{}", nm);
            }
        }
        // Close everything, then the journal must describe the tree.
        for (ino, fh) in open.drain(..) {
            n.vfs.release(ino, fh).unwrap();
        }
        let mut paths: std::collections::BTreeSet<String> = Default::default();
        for e in n.events() {
            match e.event_type {
                EventType::Create => { paths.insert(e.file_path); }
                EventType::Delete => { paths.remove(&e.file_path); }
                EventType::Move => { paths.remove(e.src_path.as_deref().unwrap()); paths.insert(e.file_path); }
                _ => {}
            }
        }
        let tree: std::collections::BTreeSet<String> = model.keys().cloned().collect();
        prop_assert_eq!(paths, tree);
    }
}

#[test]
fn large_versions_are_copied_on_write_outside_the_lock_and_stay_atomic() {
    let mut n = Node::new();
    let data: Vec<u8> = (0..(LARGE_COPY as usize + 4096))
        .map(|i| (i % 251) as u8)
        .collect();
    let ino = n.write_file(ROOT_INO, "big", &data);
    let o = n.vfs.open(ino, OpenMode::WRITE, ME).unwrap();
    n.vfs.write(ino, o.fh, 5_000_000, b"CHANGED").unwrap();
    let mut want = data.clone();
    want[5_000_000..5_000_007].copy_from_slice(b"CHANGED");
    assert!(n.vfs.read(ino, o.fh, 0, u32::MAX).unwrap() == want);
    // Unclosed: a crash shows the old version whole.
    n.crash();
    let ino = n.vfs.lookup(ROOT_INO, OsStr::new("big")).unwrap().ino;
    assert!(n.read_all(ino) == data);
    // Truncating a large file without a handle commits the shorter version.
    n.vfs
        .setattr(
            ino,
            SetAttr {
                size: Some(LARGE_COPY + 10),
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert!(n.read_all(ino) == data[..(LARGE_COPY + 10) as usize]);
}

#[test]
fn a_deleted_open_file_never_comes_back() {
    let mut n = Node::new();
    let ino = n.write_file(ROOT_INO, "gone", b"x");
    let o = n.vfs.open(ino, OpenMode::WRITE, ME).unwrap();
    n.vfs.unlink(ROOT_INO, OsStr::new("gone")).unwrap();
    // fchmod / fsetxattr on the open descriptor of the deleted file.
    n.vfs
        .setattr(
            ino,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
            Some(o.fh),
        )
        .unwrap();
    n.vfs
        .setxattr(ino, OsStr::new("user.k"), b"v", XattrSet::Any)
        .unwrap();
    n.crash();
    assert!(matches!(
        n.vfs.lookup(ROOT_INO, OsStr::new("gone")),
        Err(VfsError::NotFound)
    ));
    assert_eq!(n.vfs.counts().files, 0);
}

#[test]
fn renaming_an_ignored_folder_keeps_ignored_names_unannounced() {
    let n = Node::new();
    let d = n
        .vfs
        .mkdir(ROOT_INO, OsStr::new("x.tmp"), 0o755, ME)
        .unwrap()
        .ino;
    n.write_file(d, "a.swp", b"swap");
    n.write_file(d, "real.txt", b"real");
    n.vfs
        .rename(
            ROOT_INO,
            OsStr::new("x.tmp"),
            ROOT_INO,
            OsStr::new("x"),
            RenameFlags::default(),
        )
        .unwrap();
    let paths: Vec<String> = n.events().into_iter().map(|e| e.file_path).collect();
    assert_eq!(
        paths,
        ["x", "x/real.txt"],
        "ignored names leaked into events"
    );
}

/// Regression (CI, `a_renamed_folder_of_1000_files_arrives_as_one_rename`):
/// the kernel dropped the old name's entry before the new name's cached
/// miss, and a reader in between found the folder under neither name.
#[test]
fn a_remote_rename_invalidates_the_new_name_before_the_old_one() {
    use crate::sync::planner::{Action, Plan};
    let n = Node::new();
    let dir = n
        .vfs
        .mkdir(ROOT_INO, OsStr::new("big"), 0o755, ME)
        .unwrap()
        .ino;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    n.vfs.set_invalidator(move |i| lock(&sink).push(i));
    n.vfs
        .carry_out(|_| Plan {
            actions: vec![Action::Rename {
                ino: dir,
                path: "renamed".into(),
            }],
            waits: false,
            again: false,
        })
        .unwrap();
    assert_eq!(
        lock(&seen).clone(),
        vec![
            Invalidation::Entry {
                parent: ROOT_INO,
                name: "renamed".into()
            },
            Invalidation::Entry {
                parent: ROOT_INO,
                name: "big".into()
            },
        ]
    );
}
