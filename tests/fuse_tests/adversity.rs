//! What disks and crashes do to a mounted node, through the kernel mount:
//! programs that keep writing through a kill -9 and the next mount, a full
//! disk, a damaged database.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Mounted, check, cpath, is_mounted, pattern, wait_until};

/// open(O_CREAT|O_TRUNC) + write + close, the close's result checked.
fn write_and_close(p: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)?;
    f.write_all(data)?;
    // SAFETY: we own the descriptor and close it exactly once.
    check(unsafe { libc::close(f.into_raw_fd()) })
}

fn content(k: usize) -> Vec<u8> {
    let mut v = format!("file {k}\n").into_bytes();
    v.extend(pattern(k as u64, 512 + (k * 97) % 8192));
    v
}

/// A program writing a new small file every few milliseconds, whatever
/// happens to the mount; it remembers which closes succeeded.
struct Writer {
    stop: Arc<AtomicBool>,
    closed: Arc<Mutex<Vec<usize>>>,
    attempts: Arc<AtomicUsize>,
    errors: Arc<Mutex<BTreeMap<i32, usize>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let thread = {
            let (stop, closed, attempts, errors) = (
                stop.clone(),
                closed.clone(),
                attempts.clone(),
                errors.clone(),
            );
            thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    match write_and_close(&dir.join(format!("w{k:06}")), &content(k)) {
                        Ok(()) => closed.lock().unwrap().push(k),
                        Err(e) => {
                            *errors
                                .lock()
                                .unwrap()
                                .entry(e.raw_os_error().unwrap_or(0))
                                .or_default() += 1;
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    k += 1;
                    thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Writer {
            stop,
            closed,
            attempts,
            errors,
            thread: Some(thread),
        }
    }

    fn closes(&self) -> usize {
        self.closed.lock().unwrap().len()
    }

    fn errors_of(&self, errno: i32) -> usize {
        self.errors
            .lock()
            .unwrap()
            .get(&errno)
            .copied()
            .unwrap_or(0)
    }

    fn wait_closes(&self, more: usize, what: &str) {
        let want = self.closes() + more;
        assert!(
            wait_until(Duration::from_secs(20), || self.closes() >= want),
            "{what}: the writer closed {} files, waiting for {want}; errors {:?}",
            self.closes(),
            self.errors.lock().unwrap()
        );
    }

    /// Stops the writer: the closes that succeeded, and a summary.
    fn finish(mut self) -> (Vec<usize>, String) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        let summary = format!(
            "{} attempts, errors by errno {:?}",
            self.attempts.load(Ordering::SeqCst),
            self.errors.lock().unwrap()
        );
        (self.closed.lock().unwrap().clone(), summary)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every name under the folder `dir` refers to (read through `/proc`, so
/// also the covered folder under a mount).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A program writes continuously while the daemon is killed -9, the dead
/// mount is cleaned (as the systemd unit's `ExecStopPost` or `latus mount`
/// do) and the folder is mounted again: every file whose close succeeded
/// is in the volume afterwards, and nothing is left hidden under the mount.
#[test]
fn writer_through_kill9_and_mount_loses_nothing() {
    let m = Mounted::new();
    let started = Instant::now();
    let writer = Writer::start(m.mnt.clone());
    writer.wait_closes(40, "before the crash");

    m.kill9();
    assert!(
        wait_until(Duration::from_secs(10), || writer.errors_of(libc::ENOTCONN)
            > 0),
        "the writer never saw the dead mount"
    );
    let before_gap = writer.closes();
    // The dead mount goes (lazily: the writer may hold files in it); the
    // writer now writes into the plain folder. Root ignores its mode 0, so
    // this is what a root program, or any program before the protection,
    // does.
    let c = cpath(&m.mnt);
    // SAFETY: a NUL-terminated path we own.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }).expect("lazy unmount");
    assert!(!is_mounted(&m.mnt));
    assert_eq!(
        fs::metadata(&m.mnt).unwrap().permissions().mode() & 0o777,
        0,
        "the plain folder is not protected while latus is not mounted"
    );
    // Read through a descriptor: the same folder once covered by the mount.
    let plain = File::open(&m.mnt).unwrap();
    let plain_path = PathBuf::from(format!("/proc/self/fd/{}", plain.as_raw_fd()));
    writer.wait_closes(20, "into the plain folder");
    let in_gap = writer.closes() - before_gap;

    let out = m.mount();
    assert!(
        out.stdout.contains("recovered: adopted"),
        "mount did not report the adoption: {}",
        out.stdout
    );
    writer.wait_closes(20, "after the mount");
    let (closed, summary) = writer.finish();

    let hidden = names(&plain_path);
    assert!(hidden.is_empty(), "left hidden under the mount: {hidden:?}");
    let mut missing = Vec::new();
    for &k in &closed {
        let p = m.p(&format!("w{k:06}"));
        match fs::read(&p) {
            Ok(data) if data == content(k) => {}
            Ok(data) => missing.push(format!("w{k:06}: {} bytes, wrong content", data.len())),
            Err(e) => missing.push(format!("w{k:06}: {e}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} closed files are not in the volume: {missing:?}",
        missing.len(),
        closed.len()
    );
    // After a remount too (the adopted files are journaled).
    m.remount();
    for &k in &closed {
        assert_eq!(fs::read(m.p(&format!("w{k:06}"))).unwrap(), content(k));
    }
    eprintln!(
        "writer: {} closes ({in_gap} into the plain folder), {summary}, {:.1}s",
        closed.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A small tmpfs for a test's home, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(bytes: usize) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("latus-small-disk-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("fs");
        fs::create_dir(&path).unwrap();
        let (src, fstype) = (cpath(Path::new("tmpfs")), cpath(Path::new("tmpfs")));
        let opts = std::ffi::CString::new(format!("size={bytes}")).unwrap();
        // SAFETY: NUL-terminated strings we own.
        check(unsafe {
            libc::mount(
                src.as_ptr(),
                cpath(&path).as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        })
        .expect("mount a tmpfs for the home");
        SmallDisk { path, _dir: dir }
    }

    fn available(&self) -> u64 {
        // SAFETY: statvfs fills a struct we own.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        check(unsafe { libc::statvfs(cpath(&self.path).as_ptr(), &mut s) }).unwrap();
        s.f_bavail * s.f_frsize
    }

    /// Another program takes every free byte: returns its file.
    fn fill(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        let f = File::create(&p).unwrap();
        let mut len = 0i64;
        let mut step = 1i64 << 20;
        while step >= 4096 {
            // SAFETY: fallocate on a descriptor we own.
            if unsafe { libc::fallocate(f.as_raw_fd(), 0, len, step) } == 0 {
                len += step;
            } else {
                step /= 2;
            }
        }
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a daemon that outlived its test may still hold files there.
        // SAFETY: a NUL-terminated path we own.
        unsafe { libc::umount2(cpath(&self.path).as_ptr(), libc::MNT_DETACH) };
    }
}

/// The errno of writing `len` bytes to a new file and closing it (0: it worked).
fn write_errno(p: &Path, len: usize) -> i32 {
    let r = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)?;
        let chunk = pattern(len as u64, 1 << 20);
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n])?;
            left -= n;
        }
        // SAFETY: we own the descriptor and close it exactly once.
        check(unsafe { libc::close(f.into_raw_fd()) })
    })();
    r.map_or_else(|e| e.raw_os_error().unwrap_or(-1), |()| 0)
}

/// A home on a 64 MiB disk: writing more than fits fails with ENOSPC (not
/// EIO) while the mount keeps answering (reads, renames, folders, deletes,
/// status), and writes work again once space is freed, without a remount —
/// both when the mount filled the disk and when another program did.
#[test]
fn full_home_refuses_writes_with_enospc_and_recovers() {
    let started = Instant::now();
    let disk = SmallDisk::new(64 << 20);
    let m = Mounted::bare();
    fs::create_dir(disk.path.join("home")).unwrap();
    std::os::unix::fs::symlink(disk.path.join("home"), &m.home).unwrap();
    // The cloud is elsewhere, as it would be.
    let cloud = format!("dir:{}", m.scratch().join("cloud").display());
    m.latus(&["init", "--cloud", &cloud, "--cache-size", "1G"])
        .expect_ok();
    m.mount();
    let pid = m.daemon_pid();
    let keep = pattern(7, 4096);
    fs::write(m.p("keep"), &keep).unwrap();

    // The mount fills the disk.
    assert_eq!(
        write_errno(&m.p("big"), 100 << 20),
        libc::ENOSPC,
        "writing past a full home"
    );
    // What fit of the refused version is not published as if complete: the
    // file keeps its last closed version (empty, for a new file), and the
    // space is free again at once. (The kernel keeps the size it saw being
    // written while it caches the inode: with writeback caching it trusts
    // its own size over ours.)
    assert_eq!(m.path_status("big")["size"], 0);
    let st = m.status();
    assert!(st["disk"]["refused_writes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(write_errno(&m.p("small"), 1000), 0);
    assert_eq!(fs::read(m.p("small")).unwrap(), pattern(1000, 1000));
    fs::remove_file(m.p("big")).unwrap();

    // Another program takes all but 2 MiB, below the reserve: content
    // writes are refused, and the journal still has room, so reads,
    // renames and new folders work through the mount.
    let filler = disk.fill("filler");
    let held = OpenOptions::new().write(true).open(&filler).unwrap();
    let len = held.metadata().unwrap().len();
    held.set_len(len - (2 << 20)).unwrap();
    drop(held);
    assert_eq!(write_errno(&m.p("small2"), 1000), libc::ENOSPC);
    // A refused overwrite leaves the last closed version in place.
    assert_eq!(write_errno(&m.p("keep"), 50_000), libc::ENOSPC);
    let seen = fs::read(m.p("keep")).unwrap();
    eprintln!(
        "after a refused overwrite the kernel shows {} bytes ({} zero)",
        seen.len(),
        seen.iter().filter(|&&b| b == 0).count()
    );
    fs::rename(m.p("keep"), m.p("kept")).unwrap();
    fs::create_dir(m.p("folder")).unwrap();
    assert!(names(&m.mnt).contains(&"kept".to_string()));
    let st = m.status();
    let disk_st = &st["disk"];
    assert_eq!(disk_st["full"], true, "status: {disk_st}");
    assert!(disk_st["latus_bytes"].as_u64().unwrap() > 0, "{disk_st}");

    // Then every byte: the database and the journal get no room either.
    let last = disk.fill("last-bytes");
    assert!(disk.available() < 1 << 20);
    assert_eq!(write_errno(&m.p("small2"), 1000), libc::ENOSPC);
    let _ = fs::create_dir(m.p("folder2"));
    assert_eq!(m.status()["disk"]["full"], true);
    fs::remove_file(last).unwrap();
    fs::remove_file(filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || write_errno(
            &m.p("small2"),
            2000
        ) == 0),
        "writes did not resume after the other program's file went"
    );
    // The journal reaches the database again (`log` commits first).
    let log = m.latus(&["log", "--json"]).expect_ok().stdout;
    assert!(log.contains("\"small2\""), "{log}");
    assert_eq!(m.daemon_pid(), pid, "the daemon restarted");
    assert!(crate::harness::pid_alive(pid));
    m.unmount();
    m.mount();
    assert_eq!(fs::read(m.p("small2")).unwrap(), pattern(2000, 2000));
    assert_eq!(
        fs::read(m.p("kept")).unwrap(),
        keep,
        "a refused overwrite replaced the last closed version"
    );
    eprintln!("full disk test: {:.1}s", started.elapsed().as_secs_f64());
}

/// A database with overwritten blocks is set aside and rebuilt at mount:
/// every published version (from the volume's log) and every closed
/// version not yet published (from the journal) is back.
#[test]
fn damaged_database_is_rebuilt_at_mount() {
    let m = Mounted::new();
    fs::create_dir(m.p("docs")).unwrap();
    let published = pattern(11, 300_000);
    fs::write(m.p("docs/published"), &published).unwrap();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    m.unmount();
    // Offline: these versions are closed but in no cloud.
    let mnt = m.mnt.to_str().unwrap();
    m.latus(&["mount", mnt, "--offline"]).expect_ok();
    let unpublished = pattern(12, 50_000);
    fs::write(m.p("docs/unpublished"), &unpublished).unwrap();
    fs::rename(m.p("docs/published"), m.p("docs/renamed")).unwrap();
    m.unmount();

    overwrite_blocks(&m.home.join("latus.redb"));

    let out = m.mount();
    assert!(
        out.stdout.contains("the database was damaged")
            && out.stdout.contains("nothing unpublished was lost"),
        "{}",
        out.stdout
    );
    assert_eq!(fs::read(m.p("docs/renamed")).unwrap(), published);
    assert_eq!(fs::read(m.p("docs/unpublished")).unwrap(), unpublished);
    assert!(!m.p("docs/published").exists());
    let aside = names(&m.home)
        .into_iter()
        .filter(|n| n.starts_with("latus.redb.damaged-"))
        .count();
    assert_eq!(aside, 1, "the damaged file is kept aside");
    // The rebuilt node publishes what was waiting, and its history is whole.
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    let versions = m.latus(&["versions", "docs/renamed", "--json"]).expect_ok();
    assert!(
        versions.stdout.contains("\"move\"") || versions.stdout.contains("create"),
        "{}",
        versions.stdout
    );
    m.remount();
    assert_eq!(fs::read(m.p("docs/unpublished")).unwrap(), unpublished);
}

/// Bit rot: the start of every third 4 KiB block overwritten.
fn overwrite_blocks(db: &Path) {
    let mut bytes = fs::read(db).unwrap();
    for off in (0..bytes.len()).step_by(3 * 4096) {
        let end = (off + 512).min(bytes.len());
        bytes[off..end].copy_from_slice(&pattern(off as u64, end - off));
    }
    fs::write(db, bytes).unwrap();
}

/// The journal as an earlier format left it after emptying itself: its
/// first record gone (frames are `len u32 | crc u32 | payload`).
fn drop_first_journal_record(wal: &Path) {
    let bytes = fs::read(wal).unwrap();
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert!(
        bytes.len() > 8 + len,
        "the journal holds more than one record"
    );
    fs::write(wal, &bytes[8 + len..]).unwrap();
}

/// Publishes `docs/published`, then (offline) writes `docs/unpublished`
/// and renames the published file to `docs/renamed`; leaves it unmounted.
fn published_and_unpublished(m: &Mounted) -> (Vec<u8>, Vec<u8>) {
    fs::create_dir(m.p("docs")).unwrap();
    let published = pattern(21, 300_000);
    fs::write(m.p("docs/published"), &published).unwrap();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    m.unmount();
    let mnt = m.mnt.to_str().unwrap();
    m.latus(&["mount", mnt, "--offline"]).expect_ok();
    let unpublished = pattern(22, 50_000);
    fs::write(m.p("docs/unpublished"), &unpublished).unwrap();
    fs::rename(m.p("docs/published"), m.p("docs/renamed")).unwrap();
    m.unmount();
    (published, unpublished)
}

/// Neither side of a catch-up saw a conflict or a breach, and the log's
/// chains verify.
fn no_conflict_no_breach(m: &Mounted) {
    let st = m.status();
    let up = &st["queue"];
    assert_eq!(up["conflicts"], 0, "{st}");
    assert!(up["log_breach"].is_null(), "{st}");
    let conflicted: Vec<String> = crate::harness::tree(&m.mnt)
        .into_keys()
        .filter(|p| p.contains("conflict"))
        .collect();
    assert!(conflicted.is_empty(), "{conflicted:?}");
}

/// `latus repair` on a damaged database, while not mounted: the old file
/// is kept aside, the database is rebuilt from the journal, and the next
/// mount serves every published and every unpublished closed version
/// with nothing more to repair.
#[test]
fn repair_rebuilds_a_damaged_database() {
    let m = Mounted::new();
    let (published, unpublished) = published_and_unpublished(&m);
    overwrite_blocks(&m.home.join("latus.redb"));

    let out = m.latus(&["repair"]).expect_ok();
    for want in [
        "rebuilt the database from the journal",
        "the old one was damaged",
        "the old database is kept as",
        "nothing unpublished was lost",
        "changes of this node are still to publish",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in:\n{}", out.stdout);
    }
    let aside = names(&m.home)
        .into_iter()
        .filter(|n| n.starts_with("latus.redb.before-repair-"))
        .count();
    assert_eq!(aside, 1, "the old database is kept aside");

    let out = m.mount();
    assert!(!out.stdout.contains("damaged"), "{}", out.stdout);
    assert_eq!(fs::read(m.p("docs/renamed")).unwrap(), published);
    assert_eq!(fs::read(m.p("docs/unpublished")).unwrap(), unpublished);
    assert!(!m.p("docs/published").exists());
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    no_conflict_no_breach(&m);
    m.latus(&["check"]).expect_ok();
}

/// A damaged database whose journal no longer starts at record 1 (an
/// earlier format emptied it) is rebuilt from the volume's log at mount:
/// every published version is back at its path, and content no rebuilt
/// row names (the unpublished version) is moved to `store/unplaced-TIME/`,
/// not deleted.
#[test]
fn damaged_database_with_partial_journal_is_rebuilt_from_the_log() {
    let m = Mounted::new();
    let (published, unpublished) = published_and_unpublished(&m);
    drop_first_journal_record(&m.home.join("journal.wal"));
    overwrite_blocks(&m.home.join("latus.redb"));

    let out = m.mount();
    for want in [
        "the database was damaged",
        "the volume's log (published versions only)",
        "could not be put back at a path",
    ] {
        assert!(out.stdout.contains(want), "{want:?} in:\n{}", out.stdout);
    }
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    // The log has the published version at its first name (the rename was
    // never published).
    assert_eq!(fs::read(m.p("docs/published")).unwrap(), published);
    assert!(!m.p("docs/unpublished").exists());
    let store = m.home.join("store");
    let unplaced: Vec<String> = names(&store)
        .into_iter()
        .filter(|n| n.starts_with("unplaced-"))
        .collect();
    assert_eq!(unplaced.len(), 1, "{:?}", names(&store));
    let kept: Vec<Vec<u8>> = names(&store.join(&unplaced[0]))
        .into_iter()
        .map(|n| fs::read(store.join(&unplaced[0]).join(n)).unwrap())
        .collect();
    assert!(
        kept.contains(&unpublished),
        "the unpublished version is among the {} unplaced contents",
        kept.len()
    );
    no_conflict_no_breach(&m);
    // The rebuilt node keeps publishing on its chain.
    fs::write(m.p("docs/after"), b"after the rebuild").unwrap();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    no_conflict_no_breach(&m);
    m.latus(&["check"]).expect_ok();
}

/// A home restored from an old copy (database, journal and store older
/// than the volume's log), brought back by `latus repair` (`repair`) or
/// by a plain mount: the node catches up from the log with every version
/// published since the copy, publishes nothing stale again (its old
/// unpublished change is in the log already), continues its own chain,
/// and sees no conflict or breach.
fn restored_home_catches_up(repair: bool) {
    let m = Mounted::bare();
    let cloud = m.scratch().join("cloud");
    let url = format!("dir:{}", cloud.display());
    m.latus(&["init", "--cloud", &url]).expect_ok();
    m.mount();
    fs::write(m.p("kept"), b"version 1").unwrap();
    fs::write(m.p("gone"), b"deleted after the copy").unwrap();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    m.unmount();
    let mnt = m.mnt.to_str().unwrap();
    m.latus(&["mount", mnt, "--offline"]).expect_ok();
    fs::write(m.p("pending"), b"unpublished when copied").unwrap();
    m.unmount();
    let copy = m.scratch().join("home-copy");
    let cp = |from: &Path, to: &Path| {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    cp(&m.home, &copy);

    // After the copy: the pending change goes out, and more changes.
    m.mount();
    fs::write(m.p("kept"), b"version 2, after the copy").unwrap();
    fs::write(m.p("new"), b"made after the copy").unwrap();
    fs::remove_file(m.p("gone")).unwrap();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    m.unmount();
    let count_pending = |m: &Mounted| {
        let out = m.latus(&["versions", "pending", "--json"]).expect_ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v.as_array().map_or(0, |a| a.len())
    };

    fs::remove_dir_all(&m.home).unwrap();
    cp(&copy, &m.home);
    // Changes before the node has read the log: their journal ids are ids
    // its records after the copy already carry.
    m.latus(&["mount", mnt, "--offline"]).expect_ok();
    fs::write(m.p("early"), b"written before the catch-up").unwrap();
    m.unmount();
    if repair {
        let out = m.latus(&["repair"]).expect_ok();
        assert!(
            out.stdout.contains("read the volume's log up to record"),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("cannot be trusted"), "{}", out.stdout);
    }
    m.mount();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    assert_eq!(fs::read(m.p("kept")).unwrap(), b"version 2, after the copy");
    assert_eq!(
        fs::read(m.p("early")).unwrap(),
        b"written before the catch-up"
    );
    assert_eq!(fs::read(m.p("new")).unwrap(), b"made after the copy");
    let early = m.latus(&["versions", "early", "--json"]).expect_ok();
    assert!(
        early.stdout.contains("create"),
        "published: {}",
        early.stdout
    );
    assert_eq!(
        fs::read(m.p("pending")).unwrap(),
        b"unpublished when copied"
    );
    assert!(!m.p("gone").exists());
    no_conflict_no_breach(&m);
    assert_eq!(
        count_pending(&m),
        1,
        "the old pending change is published once"
    );
    // New changes continue this node's chain, under ids the log has not seen.
    fs::write(m.p("kept"), b"version 3, after the restore").unwrap();
    fs::write(m.p("newer"), b"made after the restore").unwrap();
    m.latus(&["sync", "--wait", "--timeout", "60"]).expect_ok();
    no_conflict_no_breach(&m);
    m.latus(&["check"]).expect_ok();
    m.remount();
    assert_eq!(
        fs::read(m.p("kept")).unwrap(),
        b"version 3, after the restore"
    );
    assert_eq!(fs::read(m.p("newer")).unwrap(), b"made after the restore");
    let versions = m.latus(&["versions", "kept", "--json"]).expect_ok();
    let v: serde_json::Value = serde_json::from_str(&versions.stdout).unwrap();
    assert_eq!(v.as_array().map_or(0, |a| a.len()), 3, "{v}");
}

#[test]
fn restored_home_is_caught_up_by_repair() {
    restored_home_catches_up(true);
}

#[test]
fn restored_home_is_caught_up_by_mount() {
    restored_home_catches_up(false);
}

/// An unmount the kernel refuses (a file is open in the folder) is refused
/// again when asked again, never reported as under way while the mount
/// stays; once the file is closed it works.
#[test]
fn busy_unmount_is_refused_every_time_until_the_folder_is_free() {
    let m = Mounted::new();
    fs::write(m.p("open"), b"held open").unwrap();
    let held = File::open(m.p("open")).unwrap();
    let mnt = m.mnt.to_str().unwrap();
    for attempt in 1..=2 {
        let out = m.latus(&["unmount", mnt]);
        assert!(!out.ok(), "attempt {attempt}: {out}");
        assert!(
            out.stderr.to_lowercase().contains("busy"),
            "attempt {attempt}: {out}"
        );
        assert!(is_mounted(&m.mnt), "attempt {attempt}");
    }
    assert_eq!(fs::read(m.p("open")).unwrap(), b"held open");
    drop(held);
    m.unmount();
}
