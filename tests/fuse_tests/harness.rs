//! A latus node mounted in a temporary folder for one test.
//!
//! `Mounted` owns a temp dir holding `home/` (the node) and `mnt/` (the
//! mountpoint). Dropping it (also while unwinding from a panic) unmounts with
//! `latus unmount`, falls back to `fusermount3 -u -z`, and kills the daemon by
//! its recorded pid, so no test leaves a mount or a daemon behind.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use tempfile::TempDir;

pub const LATUS: &str = env!("CARGO_BIN_EXE_latus");

/// Generous: a debug build flushing a large file on unmount can be slow.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// Result of one finished (or timed out) child process.
pub struct CmdOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub what: String,
}

impl CmdOut {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// Panics with the command, its exit code and both streams unless it succeeded.
    pub fn expect_ok(self) -> CmdOut {
        assert!(self.ok(), "command failed: {self}");
        self
    }
}

impl fmt::Display for CmdOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` -> code {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.code,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// The kernel sends FUSE FLUSH whenever *any* descriptor of an open file is
/// closed, including the copies a spawned child closes at exec (O_CLOEXEC).
/// So a process spawned by one test thread "closes" every file the other
/// test threads have open at that moment. Sections that must see only their
/// own closes hold `no_spawns()`; `run_cmd` waits for them before spawning.
/// The spawn case itself is tested explicitly (events.rs, durability.rs).
static SPAWN_GATE: RwLock<()> = RwLock::new(());

/// Holds off process spawns (by `run_cmd`) from all test threads while alive.
/// Never call `run_cmd` (or a `Mounted` helper that runs `latus`) while holding it.
pub fn no_spawns() -> RwLockReadGuard<'static, ()> {
    SPAWN_GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Runs a command to completion with a timeout. Output goes to anonymous temp
/// files rather than pipes: a daemon that inherits them must not make us wait.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> CmdOut {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut err = tempfile::tempfile().expect("tempfile");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"));
    let gate = SPAWN_GATE.write().unwrap_or_else(|e| e.into_inner());
    let spawned = cmd.spawn();
    drop(gate);
    let mut child = spawned.unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            None => thread::sleep(Duration::from_millis(5)),
        }
    };
    let read_all = |f: &mut File| {
        let mut s = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut s).expect("read output");
        String::from_utf8_lossy(&s).into_owned()
    };
    CmdOut {
        code: status.code(),
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
        timed_out,
        what,
    }
}

/// One journal line of `latus log --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: u64,
    pub originator: String,
    pub mivui: Value,
    pub detection: String,
    pub event_type: String,
    pub file_hash: Option<String>,
    pub file_path: String,
    pub mtime: Value,
    pub size: Option<u64>,
    pub src_path: Option<String>,
}

pub fn parse_events(stdout: &str) -> Vec<Event> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Event>(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
        })
        .collect()
}

pub struct Mounted {
    pub home: PathBuf,
    pub mnt: PathBuf,
    pid: Mutex<Option<u32>>,
    // Last, so the folder is removed after the unmount in Drop.
    dir: TempDir,
}

impl Mounted {
    /// A fresh node (`init`), mounted.
    pub fn new() -> Mounted {
        let m = Mounted::bare();
        m.latus(&["init"]).expect_ok();
        m.mount();
        m
    }

    /// A fresh node on the cloud at `url` (`init --cloud URL`), mounted.
    pub fn with_cloud(url: &str) -> Mounted {
        let m = Mounted::bare();
        m.latus(&["init", "--cloud", url]).expect_ok();
        m.mount();
        m
    }

    /// Only the folders: `home/` does not exist yet, `mnt/` is an empty folder.
    pub fn bare() -> Mounted {
        let dir = tempfile::Builder::new()
            .prefix("latus-fuse-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().canonicalize().expect("canonicalize");
        let mnt = root.join("mnt");
        fs::create_dir(&mnt).expect("mkdir mnt");
        Mounted {
            home: root.join("home"),
            mnt,
            pid: Mutex::new(None),
            dir,
        }
    }

    /// The temp folder holding `home/` and `mnt/`; free for scratch files.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `latus --home HOME ARGS...`
    pub fn latus(&self, args: &[&str]) -> CmdOut {
        let mut cmd = Command::new(LATUS);
        cmd.arg("--home").arg(&self.home).args(args);
        run_cmd(&mut cmd, CMD_TIMEOUT)
    }

    /// `latus --home HOME ARGS...` with extra environment variables (the
    /// daemon `mount` starts inherits them).
    pub fn latus_env(&self, args: &[&str], envs: &[(&str, &str)]) -> CmdOut {
        let mut cmd = Command::new(LATUS);
        cmd.arg("--home")
            .arg(&self.home)
            .args(args)
            .envs(envs.iter().copied());
        run_cmd(&mut cmd, CMD_TIMEOUT)
    }

    /// Like `mount`, with extra environment variables for the daemon.
    pub fn mount_env(&self, envs: &[(&str, &str)]) -> CmdOut {
        let mnt = self.mnt.to_str().expect("utf-8 path");
        let out = self.latus_env(&["mount", mnt], envs).expect_ok();
        self.record_pid();
        assert!(
            is_mounted(&self.mnt),
            "`latus mount` returned but {} is not mounted",
            self.mnt.display()
        );
        fs::read_dir(&self.mnt).expect("mounted folder answers readdir");
        out
    }

    pub fn try_mount(&self) -> CmdOut {
        let mnt = self.mnt.to_str().expect("utf-8 path");
        let out = self.latus(&["mount", mnt]);
        if out.ok() {
            self.record_pid();
        }
        out
    }

    /// Mounts and checks that the mount is listed and answering.
    pub fn mount(&self) -> CmdOut {
        let out = self.try_mount().expect_ok();
        assert!(
            is_mounted(&self.mnt),
            "`latus mount` returned but {} is not mounted",
            self.mnt.display()
        );
        fs::read_dir(&self.mnt).expect("mounted folder answers readdir");
        out
    }

    pub fn unmount(&self) -> CmdOut {
        let out = self
            .latus(&["unmount", self.mnt.to_str().unwrap()])
            .expect_ok();
        assert!(
            !is_mounted(&self.mnt),
            "`latus unmount` returned but {} is still mounted",
            self.mnt.display()
        );
        *self.pid.lock().unwrap() = None;
        out
    }

    pub fn remount(&self) {
        self.unmount();
        self.mount();
    }

    /// Kills the daemon with SIGKILL and waits until it is gone. The kernel
    /// mount stays behind, dead ("transport endpoint is not connected").
    pub fn kill9(&self) {
        // No `latus status` here: callers may hold `no_spawns()`.
        let cached = *self.pid.lock().unwrap();
        let pid = cached
            .or_else(|| self.pid_file())
            .expect("daemon pid unknown (no status pid at mount, no HOME/daemon.pid)");
        // SAFETY: plain syscall on a pid we recorded for this test's daemon.
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 {pid}: {}", io::Error::last_os_error());
        assert!(
            wait_until(Duration::from_secs(10), || !pid_alive(pid)),
            "daemon {pid} still alive 10 s after SIGKILL"
        );
        *self.pid.lock().unwrap() = None;
    }

    /// kill -9 of the daemon, then `latus mount` again, which must clean up the
    /// stale mount by itself. Returns the output of that mount.
    pub fn kill9_and_remount(&self) -> CmdOut {
        self.kill9();
        self.mount()
    }

    /// The daemon's pid, from `status --json` at mount time (or `HOME/daemon.pid`).
    pub fn daemon_pid(&self) -> u32 {
        if let Some(pid) = *self.pid.lock().unwrap() {
            return pid;
        }
        self.record_pid();
        self.pid
            .lock()
            .unwrap()
            .expect("daemon pid known neither from status --json nor from HOME/daemon.pid")
    }

    fn record_pid(&self) {
        let from_status = || -> Option<u32> {
            let out = self.latus(&["status", "--json"]);
            if !out.ok() {
                return None;
            }
            let v: Value = serde_json::from_str(out.stdout.trim()).ok()?;
            v.get("pid")?.as_u64().map(|p| p as u32)
        };
        let pid = from_status().or_else(|| self.pid_file());
        *self.pid.lock().unwrap() = pid;
    }

    fn pid_file(&self) -> Option<u32> {
        fs::read_to_string(self.home.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `status --json` as JSON.
    pub fn status(&self) -> Value {
        let out = self.latus(&["status", "--json"]).expect_ok();
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json is not one JSON object ({e}): {out}"))
    }

    /// `status PATH --json` as JSON.
    pub fn path_status(&self, path: &str) -> Value {
        let out = self.latus(&["status", path, "--json"]).expect_ok();
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status PATH --json is not one JSON object ({e}): {out}"))
    }

    pub fn log_events(&self) -> Vec<Event> {
        parse_events(&self.latus(&["log", "--json"]).expect_ok().stdout)
    }

    pub fn events_since(&self, since: u64) -> Vec<Event> {
        let n = since.to_string();
        parse_events(
            &self
                .latus(&["log", "--json", "--since", &n])
                .expect_ok()
                .stdout,
        )
    }

    /// Highest event id so far (0 when the journal is empty).
    pub fn last_id(&self) -> u64 {
        self.log_events().last().map_or(0, |e| e.id)
    }

    /// Polls `log --json --since` until `done` holds (or the timeout passes)
    /// and returns the last list seen.
    pub fn wait_events(
        &self,
        since: u64,
        timeout: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let evs = self.events_since(since);
            if done(&evs) || Instant::now() > deadline {
                return evs;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn cleanup(&self) {
        if is_mounted(&self.mnt) {
            let out = self.latus(&["unmount", self.mnt.to_str().unwrap_or_default()]);
            if !out.ok() {
                eprintln!("cleanup: latus unmount failed: {out}");
            }
        }
        if is_mounted(&self.mnt) {
            eprintln!(
                "cleanup: {} still mounted, fusermount3 -u -z",
                self.mnt.display()
            );
            let out = run_cmd(
                Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mnt),
                Duration::from_secs(30),
            );
            if !out.ok() {
                eprintln!("cleanup: {out}");
            }
        }
        let pids = [
            *self.pid.lock().unwrap_or_else(|e| e.into_inner()),
            self.pid_file(),
        ];
        for pid in pids.into_iter().flatten() {
            if !is_latus_process(pid) {
                continue;
            }
            if !wait_until(Duration::from_secs(5), || !pid_alive(pid)) {
                eprintln!("cleanup: daemon {pid} still running, SIGKILL");
                // SAFETY: plain syscall on the pid this test's daemon reported.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                wait_until(Duration::from_secs(5), || !pid_alive(pid));
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Is `path` a mount point in this mount namespace?
pub fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp).as_bytes() == path.as_os_str().as_bytes())
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Some thread of the process is still running. A zombie thread-group leader
/// (PID 1 here may not reap orphaned daemons) can have live threads that
/// still hold the process's files, so every task is checked.
pub fn pid_alive(pid: u32) -> bool {
    live_threads(pid) > 0
}

/// Threads of `pid` that are neither zombie nor dead.
pub fn live_threads(pid: u32) -> usize {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X')
        })
        .count()
}

/// Guards against pid reuse: only ever signal a process running our binary.
fn is_latus_process(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"latus"))
        })
        .unwrap_or(false)
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic pseudo-random bytes (splitmix64), distinct per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha512_hex(data: &[u8]) -> String {
    hex(&Sha512::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The errno of a failed call; panics if the call succeeded.
pub fn errno<T: fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("error without errno: {e}")),
    }
}

/// Result of a libc call returning -1 on error.
pub fn check(r: libc::c_int) -> io::Result<()> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// What a tree entry is, compared between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        size: u64,
        sha256: String,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
    Other {
        mode: u32,
    },
}

/// Ownership and mtime, compared only where a test asks for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}

pub type Tree = BTreeMap<String, Node>;

/// Every entry below `root` (root excluded), keyed by `/`-separated relative path.
pub fn tree(root: &Path) -> Tree {
    tree_meta(root)
        .into_iter()
        .map(|(k, (n, _))| (k, n))
        .collect()
}

pub fn tree_meta(root: &Path) -> BTreeMap<String, (Node, Meta)> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (Node, Meta)>) {
    let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for ent in rd {
        let ent = ent.unwrap_or_else(|e| panic!("read_dir entry in {}: {e}", dir.display()));
        let name = ent.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = ent.path();
        let md =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = md.file_type();
        let readdir_type = ent
            .file_type()
            .unwrap_or_else(|e| panic!("d_type of {}: {e}", path.display()));
        assert_eq!(
            (
                readdir_type.is_dir(),
                readdir_type.is_file(),
                readdir_type.is_symlink()
            ),
            (ft.is_dir(), ft.is_file(), ft.is_symlink()),
            "readdir type and lstat type disagree for {}",
            path.display()
        );
        let meta = Meta {
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
        };
        let mode = md.mode() & 0o7777;
        let node = if ft.is_dir() {
            walk(&path, &rel, out);
            Node::Dir { mode }
        } else if ft.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display())),
            }
        } else if ft.is_file() {
            let (size, sha256) = file_digest(&path);
            assert_eq!(
                size,
                md.len(),
                "bytes read from {} differ from its st_size",
                path.display()
            );
            Node::File { size, sha256, mode }
        } else {
            assert!(
                !ft.is_block_device() && !ft.is_char_device(),
                "device node in a test tree"
            );
            Node::Other { mode }
        };
        out.insert(rel, (node, meta));
    }
}

/// (length, SHA-256 hex) of a file's bytes, streamed.
pub fn file_digest(path: &Path) -> (u64, String) {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * KIB];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    (n, hex(&h.finalize()))
}

/// Asserts two trees are equal, listing every difference.
pub fn assert_trees_eq<N: PartialEq + fmt::Debug>(
    expected: &BTreeMap<String, N>,
    actual: &BTreeMap<String, N>,
    ctx: &str,
) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("  missing {k:?} (expected {v:?})")),
            Some(a) if a != v => diffs.push(format!("  {k:?}: expected {v:?}, found {a:?}")),
            Some(_) => {}
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            diffs.push(format!("  unexpected {k:?}: {v:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{ctx}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// Starts a command that keeps running (a foreground daemon), under the
/// same spawn gate as `run_cmd`. Its output goes to `log`.
pub fn spawn_cmd(cmd: &mut Command, log: &Path) -> std::process::Child {
    let out = File::create(log).expect("create the child's log");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let gate = SPAWN_GATE.write().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn();
    drop(gate);
    child.unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"))
}
