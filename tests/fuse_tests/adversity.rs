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
    fn fill(&self) -> PathBuf {
        let p = self.path.join("filler");
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
    assert_eq!(write_errno(&m.p("small"), 1000), libc::ENOSPC);
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep);
    fs::rename(m.p("keep"), m.p("kept")).unwrap();
    fs::create_dir(m.p("folder")).unwrap();
    assert!(names(&m.mnt).contains(&"kept".to_string()));
    let st = m.status();
    let disk_st = &st["disk"];
    assert_eq!(disk_st["full"], true, "status: {disk_st}");
    assert!(disk_st["refused_writes"].as_u64().unwrap() > 0, "{disk_st}");
    assert!(
        disk_st["latus_bytes"].as_u64().unwrap() > 32 << 20,
        "{disk_st}"
    );
    // A person frees space through the mount; it comes back once the
    // version is safely in the cloud.
    fs::remove_file(m.p("big")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || write_errno(&m.p("small"), 1000)
            == 0),
        "writes did not resume after space was freed: {}",
        m.status()["disk"]
    );
    assert_eq!(fs::read(m.p("small")).unwrap(), pattern(1000, 1000));

    // Another program takes every byte; the database and the journal get
    // no room either.
    let filler = disk.fill();
    assert!(disk.available() < 1 << 20);
    assert_eq!(write_errno(&m.p("small2"), 1000), libc::ENOSPC);
    let _ = fs::create_dir(m.p("folder2"));
    assert_eq!(fs::read(m.p("kept")).unwrap(), keep);
    assert_eq!(m.status()["disk"]["full"], true);
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

    let db = m.home.join("latus.redb");
    let mut bytes = fs::read(&db).unwrap();
    for off in (0..bytes.len()).step_by(3 * 4096) {
        let end = (off + 512).min(bytes.len());
        bytes[off..end].copy_from_slice(&pattern(off as u64, end - off));
    }
    fs::write(&db, bytes).unwrap();

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
