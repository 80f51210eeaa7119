//! Real programs working inside the mount: git, tar, cp, mv, rsync, sqlite3, sh.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use crate::harness::{
    CmdOut, MIB, Meta, Mounted, Node, assert_trees_eq, pattern, run_cmd, tree_meta,
};

const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `program args` in `cwd` with a private HOME and no system git config.
fn run_in(m: &Mounted, cwd: &Path, program: &str, args: &[&str]) -> CmdOut {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env("HOME", m.scratch())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("LC_ALL", "C");
    run_cmd(&mut cmd, PROGRAM_TIMEOUT)
}

fn ok(m: &Mounted, cwd: &Path, program: &str, args: &[&str]) -> String {
    run_in(m, cwd, program, args).expect_ok().stdout
}

fn installed(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()));
    found && run_cmd(Command::new(program).arg("--version"), PROGRAM_TIMEOUT).ok()
}

/// Entries with their metadata; mtimes kept for files and folders only
/// (not every tool restores a symlink's own mtime).
fn comparable(root: &Path) -> BTreeMap<String, (Node, Meta)> {
    tree_meta(root)
        .into_iter()
        .map(|(k, (n, mut meta))| {
            if matches!(n, Node::Symlink { .. }) {
                meta.mtime = (0, 0);
            }
            (k, (n, meta))
        })
        .collect()
}

/// A varied source tree outside the mount.
fn build_source_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    for d in 0..8 {
        let dir = root.join(format!("dir{d}/sub{}", d % 3));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..20u64 {
            fs::write(
                dir.join(format!("file{f}.txt")),
                pattern(d * 100 + f, (f as usize * 997) % 9000),
            )
            .unwrap();
        }
    }
    for (i, size) in [0usize, 1, 4095, 4096, 100_000, 3 * MIB + 7]
        .into_iter()
        .enumerate()
    {
        fs::write(
            root.join(format!("sized_{size}")),
            pattern(1000 + i as u64, size),
        )
        .unwrap();
    }
    fs::write(root.join("run.sh"), b"#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("secret"), b"s").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("ünïcödé ☃.txt"), b"snow").unwrap();
    fs::write(root.join("n".repeat(250)), b"long name").unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    symlink("dir0/sub0/file1.txt", root.join("link")).unwrap();
    symlink("../nowhere", root.join("dir1/dangling")).unwrap();
    fs::set_permissions(root.join("dir2"), fs::Permissions::from_mode(0o750)).unwrap();
    // Distinct, sub-second mtimes on everything but symlinks, folders last.
    let mut paths: Vec<_> = tree_meta(root).into_keys().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for (i, rel) in paths.iter().enumerate() {
        let p = root.join(rel);
        if fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
            continue;
        }
        let t = UNIX_EPOCH + Duration::new(1_600_000_000 + i as u64 * 3601, 123_456_789 + i as u32);
        fs::File::open(&p)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }
}

#[test]
fn git_init_add_commit_status() {
    let m = Mounted::new();
    let repo = m.p("repo");
    fs::create_dir(&repo).unwrap();
    ok(&m, &repo, "git", &["init", "-q", "-b", "main"]);
    fs::create_dir(repo.join("src")).unwrap();
    fs::write(repo.join("README.md"), "# Project\n").unwrap();
    fs::write(repo.join("src/main.c"), "int main(void) { return 0; }\n").unwrap();
    fs::write(repo.join("blob.bin"), pattern(1, 300_000)).unwrap();
    fs::write(repo.join("remove_me"), "bye\n").unwrap();
    ok(&m, &repo, "git", &["add", "-A"]);
    ok(&m, &repo, "git", &["commit", "-q", "-m", "first"]);
    assert_eq!(
        ok(&m, &repo, "git", &["status", "--porcelain"]),
        "",
        "clean after the first commit"
    );

    fs::write(repo.join("README.md"), "# Project\n\nMore.\n").unwrap();
    fs::write(repo.join("new.txt"), "new\n").unwrap();
    fs::remove_file(repo.join("remove_me")).unwrap();
    let status = ok(&m, &repo, "git", &["status", "--porcelain"]);
    let mut lines: Vec<&str> = status.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![" D remove_me", " M README.md", "?? new.txt"],
        "git status"
    );
    ok(&m, &repo, "git", &["add", "-A"]);
    ok(&m, &repo, "git", &["commit", "-q", "-m", "second"]);

    ok(&m, &repo, "git", &["checkout", "-q", "-b", "feature"]);
    fs::write(repo.join("src/main.c"), "int main(void) { return 1; }\n").unwrap();
    ok(&m, &repo, "git", &["commit", "-q", "-am", "feature change"]);
    ok(&m, &repo, "git", &["checkout", "-q", "main"]);
    assert_eq!(
        fs::read_to_string(repo.join("src/main.c")).unwrap(),
        "int main(void) { return 0; }\n",
        "checkout restores main's version"
    );
    assert_eq!(
        ok(&m, &repo, "git", &["log", "--oneline"]).lines().count(),
        2
    );
    ok(&m, &repo, "git", &["gc", "-q"]);
    ok(&m, &repo, "git", &["fsck", "--full", "--strict"]);
    assert_eq!(
        ok(&m, &repo, "git", &["status", "--porcelain"]),
        "",
        "clean after gc"
    );

    m.remount();
    assert_eq!(
        ok(&m, &repo, "git", &["status", "--porcelain"]),
        "",
        "clean after remount"
    );
    assert_eq!(
        ok(&m, &repo, "git", &["log", "--oneline", "feature"])
            .lines()
            .count(),
        3
    );
    ok(&m, &repo, "git", &["fsck", "--full", "--strict"]);
}

#[test]
fn tar_extract_into_and_archive_from_the_mount() {
    let m = Mounted::new();
    let src = m.scratch().join("tar_src");
    build_source_tree(&src);
    let ball = m.scratch().join("src.tar");
    let ball_s = ball.to_str().unwrap();
    ok(
        &m,
        &m.scratch(),
        "tar",
        &[
            "--format=posix",
            "-cf",
            ball_s,
            "-C",
            src.to_str().unwrap(),
            ".",
        ],
    );

    let dst = m.p("extracted");
    fs::create_dir(&dst).unwrap();
    ok(
        &m,
        &m.scratch(),
        "tar",
        &["-xpf", ball_s, "-C", dst.to_str().unwrap()],
    );
    let expected = comparable(&src);
    assert!(
        expected.len() > 180,
        "source tree too small: {}",
        expected.len()
    );
    assert_trees_eq(&expected, &comparable(&dst), "tar x into the mount");

    // And back out: archive the mounted copy, extract it elsewhere.
    let back_ball = m.scratch().join("back.tar");
    let back = m.scratch().join("back");
    fs::create_dir(&back).unwrap();
    ok(
        &m,
        &m.scratch(),
        "tar",
        &[
            "--format=posix",
            "-cf",
            back_ball.to_str().unwrap(),
            "-C",
            dst.to_str().unwrap(),
            ".",
        ],
    );
    ok(
        &m,
        &m.scratch(),
        "tar",
        &[
            "-xpf",
            back_ball.to_str().unwrap(),
            "-C",
            back.to_str().unwrap(),
        ],
    );
    assert_trees_eq(&expected, &comparable(&back), "tar c from the mount");

    m.remount();
    assert_trees_eq(&expected, &comparable(&dst), "extracted tree after remount");
}

#[test]
fn cp_a_and_mv_into_the_mount() {
    let m = Mounted::new();
    let src = m.scratch().join("cp_src");
    build_source_tree(&src);
    let expected = comparable(&src);
    ok(
        &m,
        &m.scratch(),
        "cp",
        &["-a", src.to_str().unwrap(), m.p("copied").to_str().unwrap()],
    );
    assert_trees_eq(
        &expected,
        &comparable(&m.p("copied")),
        "cp -a into the mount",
    );

    // mv across filesystems is copy + delete.
    ok(
        &m,
        &m.scratch(),
        "mv",
        &[src.to_str().unwrap(), m.p("moved").to_str().unwrap()],
    );
    assert!(!src.exists());
    assert_trees_eq(&expected, &comparable(&m.p("moved")), "mv into the mount");

    // cp -a within the mount, then diff -r between the copies.
    ok(&m, &m.mnt, "cp", &["-a", "moved", "copied_again"]);
    ok(
        &m,
        &m.mnt,
        "diff",
        &["-r", "--no-dereference", "moved", "copied_again"],
    );
    assert_trees_eq(
        &expected,
        &comparable(&m.p("copied_again")),
        "cp -a inside the mount",
    );
}

#[test]
fn rsync_a_into_the_mount() {
    if !installed("rsync") {
        eprintln!("SKIPPED rsync_a_into_the_mount: rsync is not installed");
        return;
    }
    let m = Mounted::new();
    let src = m.scratch().join("rsync_src");
    build_source_tree(&src);
    let expected = comparable(&src);
    let from = format!("{}/", src.display());
    let to = format!("{}/", m.p("synced").display());
    ok(&m, &m.scratch(), "rsync", &["-a", &from, &to]);
    assert_trees_eq(
        &expected,
        &comparable(&m.p("synced")),
        "rsync -a into the mount",
    );
    // A second run changes nothing and succeeds; a changed source file is updated in place.
    ok(&m, &m.scratch(), "rsync", &["-a", &from, &to]);
    fs::write(src.join("sized_4096"), pattern(77, 5000)).unwrap();
    ok(&m, &m.scratch(), "rsync", &["-a", "--inplace", &from, &to]);
    assert_eq!(
        fs::read(m.p("synced/sized_4096")).unwrap(),
        pattern(77, 5000)
    );
}

#[test]
fn sqlite_rollback_journal_and_wal() {
    if !installed("sqlite3") {
        eprintln!("SKIPPED sqlite_rollback_journal_and_wal: sqlite3 is not installed");
        return;
    }
    let m = Mounted::new();
    let fill = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); BEGIN; \
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000) \
        INSERT INTO t(v) SELECT hex(randomblob(100)) FROM c; COMMIT; \
        UPDATE t SET v = 'changed' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0; \
        SELECT count(*) FROM t; PRAGMA integrity_check;";
    let expected_count = (1..=3000).filter(|i| i % 11 != 0).count().to_string();
    for (db, mode) in [("rollback.db", "DELETE"), ("wal.db", "WAL")] {
        let out = ok(
            &m,
            &m.mnt,
            "sqlite3",
            &[db, &format!("PRAGMA journal_mode={mode}; {fill}")],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![mode.to_lowercase().as_str(), expected_count.as_str(), "ok"],
            "sqlite3 {db}"
        );
    }
    m.remount();
    for db in ["rollback.db", "wal.db"] {
        let out = ok(
            &m,
            &m.mnt,
            "sqlite3",
            &[
                db,
                "SELECT count(*) FROM t WHERE v = 'changed'; SELECT count(*) FROM t; PRAGMA integrity_check;",
            ],
        );
        let changed = (1..=3000)
            .filter(|i| i % 7 == 0 && i % 11 != 0)
            .count()
            .to_string();
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            vec![changed.as_str(), expected_count.as_str(), "ok"],
            "sqlite3 {db} after remount"
        );
    }
}

#[test]
fn shell_redirections_and_tools() {
    let m = Mounted::new();
    let script = "set -e; for i in $(seq 1 100); do echo \"line $i\" >> out.txt; done; \
        sort -r out.txt > sorted.txt; mkdir -p a/b/c; touch a/b/c/t; \
        find . -type f | sort > ../listing.txt; wc -l < out.txt; \
        sed -i 's/line 50$/LINE FIFTY/' out.txt; grep -c LINE out.txt; \
        ln -s out.txt ln_out; cat ln_out | tail -n 1; du -s . > /dev/null";
    let out = ok(&m, &m.mnt, "sh", &["-c", script]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["100", "1", "line 100"],
        "script output"
    );
    let listing = fs::read_to_string(m.scratch().join("listing.txt")).unwrap();
    assert_eq!(listing, "./a/b/c/t\n./out.txt\n./sorted.txt\n");
    assert_eq!(
        fs::read_to_string(m.p("sorted.txt"))
            .unwrap()
            .lines()
            .next(),
        Some("line 99")
    );
    // sed -i replaced the file by rename, keeping its mode.
    assert_eq!(
        fs::metadata(m.p("out.txt")).unwrap().permissions().mode() & 0o777,
        0o644
    );
}
