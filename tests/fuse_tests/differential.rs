//! Differential test: the same random operations on the mount and on a plain
//! folder, comparing each result (Ok or the exact errno) and the whole trees
//! (names, kinds, sizes, contents, modes, symlink targets) after every step.
//!
//! Operations name entries by indexes that wrap around the entries existing
//! at that moment (plus one that does not exist), over a small name space, so
//! collisions, renames over things and errors are common. One mount serves
//! all cases; the trees are emptied between cases. Every shrunk failure is
//! kept below as a `regression_*` test.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::harness::{MIB, Mounted, Node, Tree, check, cpath, pattern, tree};

/// Small on purpose; "e~" matches an ignore pattern and must still behave normally.
const NAMES: [&str; 5] = ["a", "b", "c.txt", "d", "e~"];
const TARGETS: [&str; 4] = ["a", "b/c.txt", "nowhere", "d/../a"];
const MODES: [u32; 5] = [0o644, 0o600, 0o755, 0o700, 0o444];
const MAX_DEPTH: usize = 3;
const MISSING: &str = "no_such_entry";

#[derive(Debug, Clone)]
pub enum Op {
    Create {
        parent: usize,
        name: usize,
        len: usize,
        seed: u8,
    },
    Write {
        file: usize,
        offset: u64,
        len: usize,
        seed: u8,
    },
    Append {
        file: usize,
        len: usize,
        seed: u8,
    },
    Truncate {
        file: usize,
        size: u64,
        via_fd: bool,
    },
    Rename {
        from: usize,
        parent: usize,
        name: usize,
        noreplace: bool,
    },
    Unlink {
        entry: usize,
    },
    Mkdir {
        parent: usize,
        name: usize,
    },
    Rmdir {
        entry: usize,
    },
    Symlink {
        parent: usize,
        name: usize,
        target: usize,
    },
    Chmod {
        entry: usize,
        mode: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Case {
    pub ops: Vec<Op>,
    /// Unmount and mount at the end, then compare again.
    pub remount: bool,
}

/// An operation with concrete paths relative to the tree root.
#[derive(Debug, Clone)]
enum Action {
    Create {
        path: String,
        len: usize,
        seed: u8,
    },
    Write {
        path: String,
        offset: u64,
        len: usize,
        seed: u8,
    },
    Append {
        path: String,
        len: usize,
        seed: u8,
    },
    Truncate {
        path: String,
        size: u64,
        via_fd: bool,
    },
    Rename {
        from: String,
        to: String,
        noreplace: bool,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Symlink {
        path: String,
        target: &'static str,
    },
    Chmod {
        path: String,
        mode: u32,
    },
}

fn index() -> impl Strategy<Value = usize> {
    0usize..1000
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        9 => 0u64..70_000,
        // Around the boundaries a chunked store is likely to have.
        1 => (prop::sample::select(vec![MIB as i64, 4 * MIB as i64]), -300i64..300).prop_map(|(b, d)| (b + d) as u64),
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 6 => 1usize..5000, 2 => 5000usize..70_000]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (index(), index(), length(), any::<u8>()).prop_map(|(parent, name, len, seed)| Op::Create { parent, name, len, seed }),
        3 => (index(), offset(), length(), any::<u8>()).prop_map(|(file, offset, len, seed)| Op::Write { file, offset, len, seed }),
        1 => (index(), 1usize..3000, any::<u8>()).prop_map(|(file, len, seed)| Op::Append { file, len, seed }),
        2 => (index(), offset(), any::<bool>()).prop_map(|(file, size, via_fd)| Op::Truncate { file, size, via_fd }),
        3 => (index(), index(), index(), any::<bool>()).prop_map(|(from, parent, name, noreplace)| Op::Rename { from, parent, name, noreplace }),
        1 => index().prop_map(|entry| Op::Unlink { entry }),
        2 => (index(), index()).prop_map(|(parent, name)| Op::Mkdir { parent, name }),
        1 => index().prop_map(|entry| Op::Rmdir { entry }),
        1 => (index(), index(), index()).prop_map(|(parent, name, target)| Op::Symlink { parent, name, target }),
        1 => (index(), index()).prop_map(|(entry, mode)| Op::Chmod { entry, mode }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(op(), 1..40),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(ops, remount)| Case { ops, remount })
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Resolves wrapping indexes against the entries of `t` (the reference tree).
fn resolve(op: &Op, t: &Tree) -> Action {
    let mut entries: Vec<&str> = t.keys().map(String::as_str).collect();
    entries.push(MISSING);
    let dirs: Vec<&str> = std::iter::once("")
        .chain(
            t.iter()
                .filter(|(_, n)| matches!(n, Node::Dir { .. }))
                .map(|(k, _)| k.as_str()),
        )
        .collect();
    let entry = |i: usize| entries[i % entries.len()].to_string();
    let parent = |i: usize| {
        let p = dirs[i % dirs.len()];
        let depth = if p.is_empty() {
            0
        } else {
            p.matches('/').count() + 1
        };
        if depth >= MAX_DEPTH { "" } else { p }
    };
    let name = |i: usize| NAMES[i % NAMES.len()];
    match *op {
        Op::Create {
            parent: p,
            name: n,
            len,
            seed,
        } => Action::Create {
            path: join(parent(p), name(n)),
            len,
            seed,
        },
        Op::Write {
            file,
            offset,
            len,
            seed,
        } => Action::Write {
            path: entry(file),
            offset,
            len,
            seed,
        },
        Op::Append { file, len, seed } => Action::Append {
            path: entry(file),
            len,
            seed,
        },
        Op::Truncate { file, size, via_fd } => Action::Truncate {
            path: entry(file),
            size,
            via_fd,
        },
        Op::Rename {
            from,
            parent: p,
            name: n,
            noreplace,
        } => Action::Rename {
            from: entry(from),
            to: join(parent(p), name(n)),
            noreplace,
        },
        Op::Unlink { entry: e } => Action::Unlink { path: entry(e) },
        Op::Mkdir { parent: p, name: n } => Action::Mkdir {
            path: join(parent(p), name(n)),
        },
        Op::Rmdir { entry: e } => Action::Rmdir { path: entry(e) },
        Op::Symlink {
            parent: p,
            name: n,
            target,
        } => Action::Symlink {
            path: join(parent(p), name(n)),
            target: TARGETS[target % TARGETS.len()],
        },
        Op::Chmod { entry: e, mode } => Action::Chmod {
            path: entry(e),
            mode: MODES[mode % MODES.len()],
        },
    }
}

/// Closes a file and reports close()'s own result (a `File` drop ignores it).
fn close(f: fs::File) -> io::Result<()> {
    // SAFETY: we own the descriptor and close it exactly once.
    check(unsafe { libc::close(f.into_raw_fd()) })
}

/// Applies an action under `root`; Err carries the errno.
fn apply(root: &Path, a: &Action) -> Result<(), i32> {
    let p = |rel: &str| root.join(rel);
    let r: io::Result<()> = (|| match a {
        Action::Create { path, len, seed } => {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(p(path))?;
            f.write_all(&pattern(*seed as u64, *len))?;
            close(f)
        }
        Action::Write {
            path,
            offset,
            len,
            seed,
        } => {
            let f = OpenOptions::new().write(true).open(p(path))?;
            f.write_all_at(&pattern(*seed as u64 + 1000, *len), *offset)?;
            close(f)
        }
        Action::Append { path, len, seed } => {
            let mut f = OpenOptions::new().append(true).open(p(path))?;
            f.write_all(&pattern(*seed as u64 + 2000, *len))?;
            close(f)
        }
        Action::Truncate {
            path,
            size,
            via_fd: true,
        } => {
            let f = OpenOptions::new().write(true).open(p(path))?;
            f.set_len(*size)?;
            close(f)
        }
        Action::Truncate {
            path,
            size,
            via_fd: false,
        } => {
            // SAFETY: valid NUL-terminated path.
            check(unsafe { libc::truncate(cpath(&p(path)).as_ptr(), *size as libc::off_t) })
        }
        Action::Rename {
            from,
            to,
            noreplace,
        } => {
            let flags = if *noreplace {
                libc::RENAME_NOREPLACE
            } else {
                0
            };
            let (from, to) = (cpath(&p(from)), cpath(&p(to)));
            // SAFETY: valid NUL-terminated paths.
            check(unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    flags,
                )
            })
        }
        Action::Unlink { path } => fs::remove_file(p(path)),
        Action::Mkdir { path } => fs::create_dir(p(path)),
        Action::Rmdir { path } => fs::remove_dir(p(path)),
        Action::Symlink { path, target } => symlink(target, p(path)),
        Action::Chmod { path, mode } => {
            fs::set_permissions(p(path), fs::Permissions::from_mode(*mode))
        }
    })();
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn show_result(r: &Result<(), i32>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => format!("Err({e}: {})", io::Error::from_raw_os_error(*e)),
    }
}

fn tree_diff(expected: &Tree, actual: &Tree) -> Option<String> {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("  missing in mount: {k:?} {v:?}")),
            Some(a) if a != v => diffs.push(format!("  {k:?}: plain folder {v:?}, mount {a:?}")),
            Some(_) => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            diffs.push(format!("  only in mount: {k:?} {v:?}"));
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("\n"))
}

fn clear(root: &Path) {
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let r = if e.file_type().unwrap().is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        r.unwrap_or_else(|err| panic!("clearing {}: {err}", path.display()));
    }
    assert_eq!(
        fs::read_dir(root).unwrap().count(),
        0,
        "{} not empty after clearing",
        root.display()
    );
}

/// Runs one case on the mount and on `reference`, both emptied first.
/// Outcomes seen per action kind and result, to show what a run covered.
type Stats = RefCell<BTreeMap<String, u32>>;

fn outcome_key(a: &Action, r: &Result<(), i32>) -> String {
    let kind = format!("{a:?}");
    let kind = kind.split([' ', '{']).next().unwrap_or("?").to_string();
    match r {
        Ok(()) => format!("{kind} Ok"),
        Err(e) => format!("{kind} {}", io::Error::from_raw_os_error(*e)),
    }
}

fn run_case(
    m: &Mounted,
    reference: &Path,
    case: &Case,
    stats: &Stats,
) -> Result<(), TestCaseError> {
    clear(&m.mnt);
    clear(reference);
    let seed_ops = [
        Action::Mkdir { path: "a".into() },
        Action::Create {
            path: "b".into(),
            len: 1000,
            seed: 1,
        },
        Action::Create {
            path: "a/c.txt".into(),
            len: 5000,
            seed: 2,
        },
    ];
    let resolved: Vec<Option<Op>> = std::iter::repeat_n(None, seed_ops.len())
        .chain(case.ops.iter().cloned().map(Some))
        .collect();
    let mut history: Vec<String> = Vec::new();
    for (i, op) in resolved.iter().enumerate() {
        let action = match op {
            None => seed_ops[i].clone(),
            Some(op) => resolve(op, &tree(reference)),
        };
        let expected = apply(reference, &action);
        *stats
            .borrow_mut()
            .entry(outcome_key(&action, &expected))
            .or_default() += 1;
        let actual = apply(&m.mnt, &action);
        history.push(format!("  {i}: {action:?} -> {}", show_result(&expected)));
        prop_assert_eq!(
            show_result(&expected),
            show_result(&actual),
            "step {} {:?}: plain folder and mount disagree\nhistory:\n{}",
            i,
            action,
            history.join("\n")
        );
        if let Some(d) = tree_diff(&tree(reference), &tree(&m.mnt)) {
            return Err(TestCaseError::fail(format!(
                "trees differ after step {i} {action:?}:\n{d}\nhistory:\n{}",
                history.join("\n")
            )));
        }
    }
    if case.remount {
        m.remount();
        if let Some(d) = tree_diff(&tree(reference), &tree(&m.mnt)) {
            return Err(TestCaseError::fail(format!(
                "trees differ after remount:\n{d}\nhistory:\n{}",
                history.join("\n")
            )));
        }
    }
    Ok(())
}

struct Reference {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

/// A plain folder whose parent holds nothing else, so relative symlinks that
/// climb out resolve the same way (to nothing) as from the mount.
fn reference() -> Reference {
    let dir = tempfile::Builder::new()
        .prefix("latus-ref-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("ref");
    fs::create_dir(&root).unwrap();
    Reference { _dir: dir, root }
}

fn run_fixed(case: Case) {
    let m = Mounted::new();
    let r = reference();
    if let Err(e) = run_case(&m, &r.root, &case, &Stats::default()) {
        panic!("{e}");
    }
}

#[test]
fn differential_against_plain_folder() {
    let m = Mounted::new();
    let r = reference();
    let mut config = Config::with_cases(48);
    config.failure_persistence = None;
    config.max_shrink_iters = 300;
    config.max_shrink_time = 120_000;
    let mut runner = TestRunner::new(config);
    let stats = Stats::default();
    let result = runner.run(&case(), |c| run_case(&m, &r.root, &c, &stats));
    let covered: Vec<String> = stats
        .borrow()
        .iter()
        .map(|(k, n)| format!("  {k}: {n}"))
        .collect();
    eprintln!(
        "differential outcomes (plain folder side):\n{}",
        covered.join("\n")
    );
    if let Err(e) = result {
        panic!("differential test failed; keep the minimal case as a regression_* test:\n{e}");
    }
}

/// Hand-written sequence covering the trickiest paths once, deterministically.
#[test]
fn differential_fixed_sequence() {
    run_fixed(Case {
        ops: vec![
            Op::Truncate {
                file: 1,
                size: 10,
                via_fd: false,
            },
            Op::Truncate {
                file: 1,
                size: 4 * MIB as u64 + 7,
                via_fd: true,
            },
            Op::Write {
                file: 1,
                offset: MIB as u64 - 5,
                len: 100,
                seed: 3,
            },
            Op::Mkdir { parent: 0, name: 3 },
            Op::Rename {
                from: 0,
                parent: 0,
                name: 3,
                noreplace: false,
            },
            Op::Rename {
                from: 0,
                parent: 0,
                name: 3,
                noreplace: true,
            },
            Op::Symlink {
                parent: 0,
                name: 4,
                target: 0,
            },
            Op::Chmod { entry: 0, mode: 4 },
            Op::Rmdir { entry: 0 },
            Op::Unlink { entry: 2 },
        ],
        remount: true,
    });
}
