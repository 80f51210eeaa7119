//! The `dir` cloud: a plain folder (local disk, NAS, USB stick) that several
//! latus processes may use at once.
//!
//! Layout of the folder `PATH`:
//! - `objects/XX/NAME`: one file per object, `XX` the first two characters
//!   of the name (`00` for shorter names). Written to a temporary file
//!   (`.tmp-*`, ignored by `list`) in the same folder, synced, then renamed
//!   into place, so a reader sees the old object or the new one, never part.
//! - `events/VOLUME/counter`: the last `mivui` assigned, 20 decimal digits
//!   and a newline. Its `flock` serialises appenders across processes. It
//!   is only a hint (see below), so it is not synced.
//! - `events/VOLUME/NNNNNNNNNNNNNNNNNNNN`: the record numbered `N` (20 digits):
//!   the originator's 16 uuid bytes, then the sealed payload.
//!
//! An append (of one record or a batch), holding the lock: writes each
//! record to a temporary file, syncs them all (in parallel: the
//! filesystem's journal commits them together), renames them into place in
//! increasing order, syncs the folder once, then updates the counter. So a
//! record is durable before anyone can see it, and costs two syncs per
//! batch, not per record.
//!
//! Invariant: record numbers are dense (1, 2, 3, ...). An appender that dies
//! before renaming leaves no number behind; one that dies midway through a
//! batch's renames, or before updating the counter, leaves records
//! `last+1..=k` that the next appender finds by probing upwards (and a
//! counter lost or ahead of the records is rebuilt from them). So a reader
//! walks `after+1, after+2, ...` and stops at the first missing file: it may
//! see a prefix of a batch being written, never a record without its
//! predecessor. (Dense up to what the folder's filesystem keeps of the
//! renames after a power cut: journaling filesystems keep them in order.)
//!
//! Whoever can write the folder (a NAS, another user) is not trusted with
//! this node's files: nothing below `PATH` is opened through a symlink
//! (folders must be real folders, files are opened `O_NOFOLLOW`), only
//! regular files are read (opened non-blocking, so a FIFO cannot hang the
//! daemon), and sizes are checked before reading (`MAX_OBJECT`,
//! `MAX_RECORD`). `PATH` itself may be a symlink: the user chose it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use std::os::unix::fs::OpenOptionsExt;

use super::{
    CloudError, CloudErrorKind, CloudResult, EventLog, LogRecord, MAX_OBJECT, MAX_RECORD,
    ObjectStat, ObjectStore, Tier,
};
use crate::locks::{Mutex, lock};

const TEMP_PREFIX: &str = ".tmp-";
/// Digits of a record file name and of the counter.
const MIVUI_DIGITS: usize = 20;
const ORIGINATOR_LEN: usize = 16;

pub struct DirObjectStore {
    /// `PATH/objects`.
    root: PathBuf,
    /// The cold folder (`cold_dir`), laid out like `PATH`: objects in
    /// `COLD/objects/XX/NAME`. Connected when `COLD` is a folder; it is
    /// never created here, so a disk that is not mounted is never written
    /// into its empty mount point.
    cold: Option<PathBuf>,
}

impl DirObjectStore {
    pub fn open(path: &Path, create: bool, created: &mut Vec<String>) -> CloudResult<Self> {
        open_cloud_folder(path, create, created)?;
        let root = path.join("objects");
        ensure_dir(&root)
            .and_then(|()| real_dir(&root))
            .map_err(|e| io_error("open", &root, e))?;
        Ok(Self { root, cold: None })
    }

    /// Gives the store a cold folder.
    pub fn with_cold_dir(mut self, cold: Option<PathBuf>) -> Self {
        self.cold = cold;
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(shard(name)).join(name)
    }

    /// An I/O error about object `name`. A missing file only means a missing
    /// object while the folder itself is there: a NAS or USB stick that went
    /// away is `Unreachable`.
    fn error(&self, op: &'static str, name: &str, e: io::Error) -> CloudError {
        if e.kind() == io::ErrorKind::NotFound && !self.root.is_dir() {
            return folder_gone(op, &self.root);
        }
        CloudError::new(io_kind(&e), op, name, e.to_string())
    }
}

impl DirObjectStore {
    fn put_hot(&self, name: &str, data: &[u8]) -> CloudResult<()> {
        check_name("put", name)?;
        let shard_dir = self.root.join(shard(name));
        // `create_dir`, not `create_dir_all`: if the cloud folder is gone
        // (an unmounted NAS), recreating it would write into the mount point.
        match fs::create_dir(&shard_dir) {
            Ok(()) => sync_dir(&self.root).map_err(|e| self.error("put", name, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.error("put", name, e)),
        }
        real_dir(&shard_dir).map_err(|e| self.error("put", name, e))?;
        write_atomically(&shard_dir, name, &[data]).map_err(|e| self.error("put", name, e))
    }

    fn get_hot(&self, name: &str) -> CloudResult<Vec<u8>> {
        check_name("get", name)?;
        real_dir(&self.root.join(shard(name)))
            .and_then(|()| read_regular(&self.path(name), MAX_OBJECT))
            .map_err(|e| self.error("get", name, e))
    }

    fn size_hot(&self, name: &str) -> CloudResult<Option<u64>> {
        check_name("size", name)?;
        match fs::symlink_metadata(self.path(name)) {
            // Only a regular file is an object (`get` reads nothing else).
            Ok(m) if m.file_type().is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) => match self.error("size", name, e) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    fn delete_hot(&self, name: &str) -> CloudResult<()> {
        check_name("delete", name)?;
        match fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) => match self.error("delete", name, e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    fn list_hot(&self) -> CloudResult<Vec<String>> {
        let mut names = Vec::new();
        for shard in visible_entries(&self.root).map_err(|e| self.error("list", "", e))? {
            let shard_dir = self.root.join(shard);
            if real_dir(&shard_dir).is_err() {
                continue; // not ours (a file, or a symlink out of the folder)
            }
            match visible_entries(&shard_dir) {
                Ok(found) => names.extend(found),
                // A shard that is not a folder is not ours; skip it.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => return Err(self.error("list", "", e)),
            }
        }
        names.sort();
        Ok(names)
    }
}

impl ObjectStore for DirObjectStore {
    fn put(&self, name: &str, data: &[u8]) -> CloudResult<()> {
        self.put_hot(name, data)
    }

    /// Hot first, then the cold folder.
    fn get(&self, name: &str) -> CloudResult<Vec<u8>> {
        match self.get_hot(name) {
            Err(e) if e.is_not_found() => match self.cold_store("get", name)? {
                Some(cold) => cold.get_hot(name),
                None => Err(e),
            },
            other => other,
        }
    }

    fn size(&self, name: &str) -> CloudResult<Option<u64>> {
        match self.stat(name)? {
            Some(ObjectStat {
                tier: Tier::Offline,
                ..
            }) => Err(cold_offline("size", name, self.cold.as_deref())),
            s => Ok(s.map(|s| s.size)),
        }
    }

    fn delete(&self, name: &str) -> CloudResult<()> {
        self.delete_hot(name)?;
        // A cold folder not connected keeps its copy (`check` lists it).
        if let Ok(Some(cold)) = self.cold_store("delete", name) {
            cold.delete_hot(name)?;
        }
        Ok(())
    }

    fn list(&self) -> CloudResult<Vec<String>> {
        let mut names = self.list_hot()?;
        if let Ok(Some(cold)) = self.cold_store("list", "") {
            names.extend(cold.list_hot()?);
            names.sort();
            names.dedup();
        }
        Ok(names)
    }

    /// Size 0 and `Offline` for an object that is not hot while the cold
    /// folder is not connected (it may be there).
    fn stat(&self, name: &str) -> CloudResult<Option<ObjectStat>> {
        if let Some(size) = self.size_hot(name)? {
            return Ok(Some(ObjectStat {
                size,
                tier: Tier::Hot,
            }));
        }
        match self.cold_store("stat", name) {
            Ok(Some(cold)) => Ok(cold.size_hot(name)?.map(|size| ObjectStat {
                size,
                tier: Tier::Cold,
            })),
            Ok(None) => Ok(None),
            Err(e) if e.kind == CloudErrorKind::ColdOffline => Ok(Some(ObjectStat {
                size: 0,
                tier: Tier::Offline,
            })),
            Err(e) => Err(e),
        }
    }

    /// Copied into the cold folder (synced), then removed here.
    fn to_cold(&self, name: &str) -> CloudResult<()> {
        let cold = self
            .cold_store("to_cold", name)?
            .ok_or_else(|| no_cold_dir("to_cold", name))?;
        let data = match self.get_hot(name) {
            Ok(d) => d,
            Err(e) if e.is_not_found() && cold.size_hot(name)?.is_some() => return Ok(()),
            Err(e) => return Err(e),
        };
        cold.put_hot(name, &data)?;
        self.delete_hot(name)
    }

    /// Copied back here (synced), then removed from the cold folder.
    fn to_hot(&self, name: &str) -> CloudResult<()> {
        if self.size_hot(name)?.is_some() {
            if let Ok(Some(cold)) = self.cold_store("to_hot", name) {
                cold.delete_hot(name)?;
            }
            return Ok(());
        }
        let cold = self
            .cold_store("to_hot", name)?
            .ok_or_else(|| no_cold_dir("to_hot", name))?;
        let data = cold.get_hot(name)?;
        self.put_hot(name, &data)?;
        cold.delete_hot(name)
    }
}

impl DirObjectStore {
    /// The cold folder as a store of its own; `None` when there is none
    /// configured, `ColdOffline` when it is not connected.
    fn cold_store(&self, op: &'static str, name: &str) -> CloudResult<Option<DirObjectStore>> {
        let Some(cold) = &self.cold else {
            return Ok(None);
        };
        if !cold.is_dir() {
            return Err(cold_offline(op, name, Some(cold)));
        }
        let store = DirObjectStore {
            root: cold.join("objects"),
            cold: None,
        };
        store.ensure_root()?;
        Ok(Some(store))
    }

    /// Makes `COLD/objects` (only inside a cold folder that is there).
    fn ensure_root(&self) -> CloudResult<()> {
        ensure_dir(&self.root)
            .and_then(|()| real_dir(&self.root))
            .map_err(|e| io_error("to_cold", &self.root, e))
    }
}

fn cold_offline(op: &'static str, name: &str, cold: Option<&Path>) -> CloudError {
    CloudError::new(
        CloudErrorKind::ColdOffline,
        op,
        name,
        format!(
            "the cold folder {} is not connected: connect the disk that holds it",
            cold.map_or_else(String::new, |c| c.display().to_string())
        ),
    )
}

fn no_cold_dir(op: &'static str, name: &str) -> CloudError {
    CloudError::new(
        CloudErrorKind::NoColdTier,
        op,
        name,
        "this dir: cloud has no cold folder (latus set cold-dir PATH)",
    )
}

pub struct DirEventLog {
    /// `PATH/events/VOLUME`.
    dir: PathBuf,
    /// The counter file, open for the life of the log. Its `flock` excludes
    /// other processes (and other instances) while one appends.
    counter: File,
    /// Excludes this instance's own threads: they share one open file
    /// description, and `flock` does not exclude holders of the same one.
    appending: Mutex<()>,
}

impl DirEventLog {
    pub fn open(
        path: &Path,
        volume_id: Uuid,
        create: bool,
        created: &mut Vec<String>,
    ) -> CloudResult<Self> {
        open_cloud_folder(path, create, created)?;
        let dir = path.join("events").join(volume_id.to_string());
        // `create_dir`, never `create_dir_all`: a cloud folder that
        // vanished meanwhile is not re-created (`open_cloud_folder` made it
        // when asked).
        let events = path.join("events");
        ensure_dir(&events)
            .and_then(|()| real_dir(&events))
            .and_then(|()| ensure_dir(&dir))
            .and_then(|()| real_dir(&dir))
            .map_err(|e| io_error("open", &dir, e))?;
        let counter_path = dir.join("counter");
        let counter = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&counter_path)
            .and_then(|f| {
                if f.metadata()?.is_file() {
                    Ok(f)
                } else {
                    Err(not_regular())
                }
            })
            .map_err(|e| io_error("open", &counter_path, e))?;
        Ok(Self {
            dir,
            counter,
            appending: Mutex::new(()),
        })
    }

    fn record_path(&self, mivui: u64) -> PathBuf {
        self.dir.join(format!("{mivui:0MIVUI_DIGITS$}"))
    }

    fn error(&self, op: &'static str, e: io::Error) -> CloudError {
        if e.kind() == io::ErrorKind::NotFound && !self.dir.is_dir() {
            return folder_gone(op, &self.dir);
        }
        io_error(op, &self.dir, e)
    }

    /// Appends `payloads` (at least one) under consecutive numbers; returns
    /// the first.
    fn append_all(&self, originator: Uuid, payloads: &[&[u8]]) -> CloudResult<u64> {
        let _thread = lock(&self.appending);
        let flocked = Flocked::new(&self.counter).map_err(|e| self.error("append", e))?;
        let result = self.append_locked(originator, payloads);
        drop(flocked);
        result.map_err(|e| self.error("append", e))
    }

    /// Appends `payloads` under consecutive numbers while holding both
    /// locks; returns the first.
    fn append_locked(&self, originator: Uuid, payloads: &[&[u8]]) -> io::Result<u64> {
        let first = self.next_number()?;
        let mut next = first;
        let placed = self.place(originator, payloads, &mut next);
        if next > first {
            // Also after a failure midway: what is in place stays, durably.
            sync_dir(&self.dir)?;
            // Not synced: a counter lost or behind after a crash is rebuilt.
            let last = next - 1;
            self.counter
                .write_all_at(format!("{last:0MIVUI_DIGITS$}\n").as_bytes(), 0)?;
        }
        placed.map(|()| first)
    }

    /// Writes `payloads` to temporary files, syncs them, and renames them
    /// into place as records `*next, *next + 1, ...` in that order,
    /// advancing `*next` past each record in place.
    fn place(&self, originator: Uuid, payloads: &[&[u8]], next: &mut u64) -> io::Result<()> {
        let mut temps = TempFiles::new(&self.dir);
        for chunk in payloads.chunks(OPEN_TEMPS) {
            let files = chunk
                .iter()
                .map(|payload| temps.create(&[originator.as_bytes(), payload]))
                .collect::<io::Result<Vec<File>>>()?;
            sync_files(&files)?;
            drop(files);
            for temp in &temps.paths {
                fs::rename(temp, self.record_path(*next))?;
                *next += 1;
            }
            temps.paths.clear();
        }
        Ok(())
    }

    /// The number after the highest record. The counter says where to
    /// look; a counter that is missing, unreadable or ahead of the records
    /// (a crash on a folder that reordered writes) is rebuilt from them,
    /// and records past it (a crash before it was updated) are skipped.
    fn next_number(&self) -> io::Result<u64> {
        let mut last = read_counter(&self.counter)?.unwrap_or(0);
        if last == 0 || !exists(&self.record_path(last))? {
            last = self.highest_record()?;
        }
        // Numbers at the end of the range (a counter or records planted by
        // whoever writes the folder) take no more appends.
        let exhausted = || io::Error::other("the log's numbers are exhausted");
        let mut mivui = last.checked_add(1).ok_or_else(exhausted)?;
        while exists(&self.record_path(mivui))? {
            mivui = mivui.checked_add(1).ok_or_else(exhausted)?;
        }
        Ok(mivui)
    }

    fn highest_record(&self) -> io::Result<u64> {
        let mut highest = 0;
        for name in visible_entries(&self.dir)? {
            if let Some(n) = parse_mivui(&name) {
                highest = highest.max(n);
            }
        }
        Ok(highest)
    }

    /// The record `mivui`, or `None` if there is no such file.
    /// The record `mivui`, `None` if there is none yet. One that is not a
    /// regular file, too large or truncated is returned unusable (readers
    /// skip it with a log line; it never stops the log).
    fn read_record(&self, mivui: u64) -> CloudResult<Option<LogRecord>> {
        let path = self.record_path(mivui);
        let bytes = match read_regular(&path, (ORIGINATOR_LEN + MAX_RECORD) as u64) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.dir.is_dir() => return Ok(None),
            Err(e)
                if e.kind() == io::ErrorKind::InvalidData
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                if super::UNUSABLE_RECORDS.allow() {
                    tracing::error!(mivui, error = %e, "a log record of the cloud folder is unusable; skipped");
                }
                return Ok(Some(LogRecord::unusable(mivui)));
            }
            Err(e) => return Err(self.error("read", e)),
        };
        if bytes.len() < ORIGINATOR_LEN {
            if super::UNUSABLE_RECORDS.allow() {
                tracing::error!(
                    mivui,
                    bytes = bytes.len(),
                    "a log record of the cloud folder is truncated; skipped"
                );
            }
            return Ok(Some(LogRecord::unusable(mivui)));
        }
        let (originator, payload) = bytes.split_at(ORIGINATOR_LEN);
        let originator = Uuid::from_slice(originator).expect("16 bytes");
        Ok(Some(LogRecord {
            mivui,
            originator,
            payload: payload.to_vec(),
        }))
    }
}

impl EventLog for DirEventLog {
    fn append(&self, originator: Uuid, payload: &[u8]) -> CloudResult<u64> {
        self.append_all(originator, &[payload])
    }

    fn append_batch(&self, originator: Uuid, payloads: &[Vec<u8>]) -> CloudResult<Vec<u64>> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let first = self.append_all(originator, &payloads)?;
        Ok((first..).take(payloads.len()).collect())
    }

    fn read_after(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>> {
        let mut records = Vec::new();
        let mut next = after.checked_add(1);
        while let Some(mivui) = next.filter(|_| records.len() < limit) {
            match self.read_record(mivui)? {
                Some(record) => records.push(record),
                None => break,
            }
            next = mivui.checked_add(1);
        }
        Ok(records)
    }
}

/// An exclusive `flock`, released when dropped.
struct Flocked<'a>(&'a File);

impl<'a> Flocked<'a> {
    fn new(file: &'a File) -> io::Result<Self> {
        file.lock()?;
        Ok(Self(file))
    }
}

impl Drop for Flocked<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.unlock() {
            tracing::error!("cannot unlock the event log counter: {e}");
        }
    }
}

/// Checks that the cloud folder exists, making it when `create` is set.
fn open_cloud_folder(path: &Path, create: bool, created: &mut Vec<String>) -> CloudResult<()> {
    if path.is_dir() {
        return Ok(());
    }
    if !create {
        // Unreachable, not gone: a disk that is not mounted yet comes back.
        return Err(CloudError::new(
            CloudErrorKind::Unreachable,
            "open",
            path.display().to_string(),
            "the cloud folder is missing (is the disk mounted?)",
        ));
    }
    fs::create_dir_all(path).map_err(|e| io_error("open", path, e))?;
    created.push(format!("created cloud folder {}", path.display()));
    Ok(())
}

fn ensure_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Object names become file names: only characters that cannot escape the
/// shard folder or look like a temporary file.
fn check_name(op: &'static str, name: &str) -> CloudResult<()> {
    let fine = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if fine {
        Ok(())
    } else {
        Err(CloudError::new(
            CloudErrorKind::Rejected,
            op,
            name,
            "invalid object name",
        ))
    }
}

fn shard(name: &str) -> &str {
    name.get(..2).unwrap_or("00")
}

/// Writes `parts` to `dir/name` through a synced temporary file renamed into
/// place, then syncs the folder so the rename is durable.
fn write_atomically(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    let temp = dir.join(format!("{TEMP_PREFIX}{}", Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create(&temp)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        fs::rename(&temp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Temporary files an append holds open at once (file descriptors are
/// limited); a longer batch is written in runs of this many.
const OPEN_TEMPS: usize = 128;
/// Threads that sync a batch's files at once.
const SYNC_THREADS: usize = 8;

/// Syncs `files` from a few threads at once: each `fsync` waits for a
/// journal commit, and the filesystem makes one commit serve all that wait.
/// Cheaper than `syncfs` when the filesystem holds other dirty data, and
/// about as cheap otherwise (measured on ext4 with 256 small records).
fn sync_files(files: &[File]) -> io::Result<()> {
    if files.len() <= 1 {
        return files.iter().try_for_each(File::sync_all);
    }
    let per_thread = files.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|scope| {
        let threads: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(File::sync_all)))
            .collect();
        // The scope joins every thread; the first failure is the answer.
        threads.into_iter().try_for_each(|t| {
            t.join()
                .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked")))
        })
    })
}

/// Temporary files written in one folder, removed when dropped unless the
/// caller took them from `paths` (renamed them into place).
struct TempFiles<'a> {
    dir: &'a Path,
    paths: Vec<PathBuf>,
}

impl<'a> TempFiles<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            paths: Vec::new(),
        }
    }

    /// A new temporary file holding `parts`, not synced, still open.
    fn create(&mut self, parts: &[&[u8]]) -> io::Result<File> {
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}", Uuid::new_v4().simple()));
        let mut file = File::create_new(&path)?;
        self.paths.push(path);
        for part in parts {
            file.write_all(part)?;
        }
        Ok(file)
    }
}

impl Drop for TempFiles<'_> {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = fs::remove_file(path);
        }
    }
}

/// Names in `dir`, without temporary files.
fn visible_entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        match name.to_str() {
            Some(name) if !name.starts_with('.') => names.push(name.to_string()),
            _ => {}
        }
    }
    Ok(names)
}

/// `path` is a folder itself, not a symlink to one.
fn real_dir(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.file_type().is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a folder (a symlink, or a file)", path.display()),
        ))
    }
}

fn not_regular() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "not a regular file (a symlink, FIFO or device placed in the cloud folder?)",
    )
}

/// The content of a regular file of at most `max` bytes, opened without
/// following a symlink and without blocking on a FIFO.
fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} bytes, larger than any latus object or record",
                meta.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "grew while read",
        ));
    }
    Ok(out)
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn parse_mivui(name: &str) -> Option<u64> {
    if name.len() == MIVUI_DIGITS && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// The counter's value; `None` when it is empty or unreadable.
fn read_counter(file: &File) -> io::Result<Option<u64>> {
    let mut buf = [0u8; MIVUI_DIGITS + 1];
    let n = file.read_at(&mut buf, 0)?;
    Ok(std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| parse_mivui(s.trim_end())))
}

fn io_error(op: &'static str, path: &Path, e: io::Error) -> CloudError {
    CloudError::new(io_kind(&e), op, path.display().to_string(), e.to_string())
}

fn folder_gone(op: &'static str, path: &Path) -> CloudError {
    CloudError::new(
        CloudErrorKind::Unreachable,
        op,
        path.display().to_string(),
        "the cloud folder is gone (was the disk unmounted?)",
    )
}

/// Which kind of cloud failure a local I/O error is. A full disk may be
/// freed, and an absent NAS or stick may come back: both are retryable.
fn io_kind(e: &io::Error) -> CloudErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOENT) => CloudErrorKind::NotFound,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => CloudErrorKind::Denied,
        Some(libc::ENOSPC | libc::EDQUOT) => CloudErrorKind::Server,
        Some(
            libc::EIO
            | libc::ENOTCONN
            | libc::ETIMEDOUT
            | libc::ESTALE
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ENODEV
            | libc::ENXIO,
        ) => CloudErrorKind::Unreachable,
        _ => CloudErrorKind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    /// The cold folder: objects move there and back whole, read from
    /// either place, and a folder that is not there fails `ColdOffline`
    /// (and is never made, so an unmounted disk's mount point stays empty).
    #[test]
    fn the_cold_folder_holds_moved_objects_and_reads_only_when_connected() {
        let tmp = tempfile::tempdir().unwrap();
        let cold = tmp.path().join("cold");
        fs::create_dir(&cold).unwrap();
        let store = DirObjectStore::open(&tmp.path().join("cloud"), true, &mut Vec::new())
            .unwrap()
            .with_cold_dir(Some(cold.clone()));
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        store.put(&a, b"cold one").unwrap();
        store.put(&b, b"hot one").unwrap();
        store.to_cold(&a).unwrap();
        store.to_cold(&a).unwrap(); // again: a no-op
        assert_eq!(store.stat(&a).unwrap().unwrap().tier, Tier::Cold);
        assert_eq!(store.stat(&b).unwrap().unwrap().tier, Tier::Hot);
        assert!(!tmp.path().join("cloud/objects/ab").join(&a).exists());
        assert!(cold.join("objects/ab").join(&a).exists());
        assert_eq!(store.get(&a).unwrap(), b"cold one");
        assert_eq!(store.list().unwrap(), vec![a.clone(), b.clone()]);

        let away = tmp.path().join("unplugged");
        fs::rename(&cold, &away).unwrap();
        let e = store.get(&a).unwrap_err();
        assert_eq!(e.kind, CloudErrorKind::ColdOffline, "{e}");
        assert!(e.message.contains("not connected"), "{e}");
        assert_eq!(store.stat(&a).unwrap().unwrap().tier, Tier::Offline);
        assert_eq!(store.get(&b).unwrap(), b"hot one", "hot objects still read");
        assert_eq!(
            store.to_cold(&b).unwrap_err().kind,
            CloudErrorKind::ColdOffline
        );
        assert!(!cold.exists(), "the cold folder is never made");

        fs::rename(&away, &cold).unwrap();
        store.to_hot(&a).unwrap();
        assert_eq!(store.stat(&a).unwrap().unwrap().tier, Tier::Hot);
        assert!(!cold.join("objects/ab").join(&a).exists());
        store.to_cold(&a).unwrap();
        store.delete(&a).unwrap();
        assert!(store.stat(&a).unwrap().is_none(), "deleted from both tiers");
        let plain =
            DirObjectStore::open(&tmp.path().join("cloud"), false, &mut Vec::new()).unwrap();
        assert_eq!(
            plain.to_cold(&b).unwrap_err().kind,
            CloudErrorKind::NoColdTier
        );
    }

    /// Whoever can write the cloud folder cannot make this node read or
    /// write outside it, hang it, or make it read without bound.
    #[test]
    fn the_cloud_folder_cannot_point_elsewhere_or_hang_the_reader() {
        let tmp = tempfile::tempdir().unwrap();
        let cloud = tmp.path().join("cloud");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"not the cloud's").unwrap();
        let store = DirObjectStore::open(&cloud, true, &mut Vec::new()).unwrap();
        // An object that is a symlink out of the folder is not read.
        let name = "ab".repeat(32);
        store.put(&name, b"x").unwrap();
        let path = cloud.join("objects").join("ab").join(&name);
        fs::remove_file(&path).unwrap();
        symlink(outside.join("secret"), &path).unwrap();
        assert!(store.get(&name).is_err());
        // A FIFO is refused at once (no reader blocks on it).
        fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(store.get(&name).is_err());
        // A shard folder that is a symlink out of the folder: nothing is
        // written through it.
        let shard = cloud.join("objects").join("cd");
        symlink(&outside, &shard).unwrap();
        assert!(store.put(&"cd".repeat(32), b"y").is_err());
        assert!(!outside.join("cd".repeat(32)).exists());
        assert!(store.list().unwrap().iter().all(|n| !n.starts_with("cd")));
    }

    /// An object larger than any latus object is refused from its size,
    /// not read (a sparse file costs the test nothing).
    #[test]
    fn an_oversized_object_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let cloud = tmp.path().join("cloud");
        let store = DirObjectStore::open(&cloud, true, &mut Vec::new()).unwrap();
        let name = "ef".repeat(32);
        store.put(&name, b"x").unwrap();
        let path = cloud.join("objects").join("ef").join(&name);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(MAX_OBJECT + 1)
            .unwrap();
        let e = store.get(&name).unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("bytes"), "{e}");
    }

    #[test]
    fn an_unusable_record_is_skipped_not_a_halt() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = Uuid::new_v4();
        let log = DirEventLog::open(tmp.path(), volume, true, &mut Vec::new()).unwrap();
        let me = Uuid::new_v4();
        for i in 0..4u8 {
            log.append(me, &[i; 32]).unwrap();
        }
        // Record 2 truncated, record 3 a symlink to a large file.
        fs::write(log.record_path(2), b"short").unwrap();
        let big = tmp.path().join("big");
        fs::write(&big, vec![0u8; MAX_RECORD + 100]).unwrap();
        fs::remove_file(log.record_path(3)).unwrap();
        symlink(&big, log.record_path(3)).unwrap();
        let got = log.read_after(0, 10).unwrap();
        let numbers: Vec<u64> = got.iter().map(|r| r.mivui).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
        assert!(got[1].payload.is_empty() && got[2].payload.is_empty());
        assert_eq!(got[3].payload, vec![3u8; 32]);
    }

    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use super::*;
    use crate::cloud::faulty::conformance;

    const CHILD_DIR: &str = "LATUS_TEST_APPENDER_DIR";
    const CHILD_VOLUME: &str = "LATUS_TEST_APPENDER_VOLUME";
    /// Records each appender writes: per round, some one by one, then a
    /// batch.
    const CHILD_APPENDS: usize = 40;
    const CHILD_BATCHES: [usize; 4] = [1, 4, 7, 8];

    fn open_log(path: &Path, volume: Uuid) -> DirEventLog {
        DirEventLog::open(path, volume, false, &mut Vec::new()).unwrap()
    }

    #[test]
    fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        let mut created = Vec::new();
        let store = DirObjectStore::open(dir.path(), true, &mut created).unwrap();
        conformance::object_store(&store);
        let volume = Uuid::new_v4();
        conformance::event_log(&|| {
            Arc::new(DirEventLog::open(dir.path(), volume, true, &mut Vec::new()).unwrap())
        });
        assert!(created.is_empty(), "the folder was there: {created:?}");
        assert!(dir.path().join("objects/vo/volume").is_file());
        assert!(dir.path().join("objects/00/7").is_file());
    }

    #[test]
    fn a_missing_folder_is_made_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud");
        let e = DirObjectStore::open(&path, false, &mut Vec::new())
            .err()
            .unwrap();
        // Unreachable (retried), never made: a disk not mounted yet.
        assert!(
            e.is_retryable() && e.to_string().contains("cloud folder is missing"),
            "{e}"
        );
        let e = DirEventLog::open(&path, Uuid::new_v4(), false, &mut Vec::new())
            .err()
            .unwrap();
        assert!(e.is_retryable(), "{e}");
        assert!(!path.exists(), "opening without create made the folder");

        let mut created = Vec::new();
        DirObjectStore::open(&path, true, &mut created).unwrap();
        DirEventLog::open(&path, Uuid::new_v4(), true, &mut created).unwrap();
        assert_eq!(
            created,
            [format!("created cloud folder {}", path.display())]
        );
    }

    #[test]
    fn a_vanished_folder_is_unreachable_not_a_missing_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud");
        let store = DirObjectStore::open(&path, true, &mut Vec::new()).unwrap();
        let log = DirEventLog::open(&path, Uuid::new_v4(), true, &mut Vec::new()).unwrap();
        store.put("ab", b"x").unwrap();
        fs::remove_dir_all(&path).unwrap();
        for e in [
            store.get("ab").unwrap_err(),
            store.size("ab").unwrap_err(),
            store.put("ab", b"x").unwrap_err(),
            log.read_after(0, 10).unwrap_err(),
            log.append(Uuid::new_v4(), b"x").unwrap_err(),
        ] {
            assert_eq!(e.kind, CloudErrorKind::Unreachable, "{e}");
        }
        assert!(!path.exists(), "nothing recreated the folder");
    }

    #[test]
    fn names_cannot_leave_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirObjectStore::open(dir.path(), true, &mut Vec::new()).unwrap();
        for name in ["", "../x", "a/b", ".tmp-x", "a b"] {
            assert_eq!(
                store.put(name, b"x").unwrap_err().kind,
                CloudErrorKind::Rejected,
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_lost_or_stale_counter_is_rebuilt_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let volume = Uuid::new_v4();
        let log = open_log_created(dir.path(), volume);
        let me = Uuid::new_v4();
        for _ in 0..3 {
            log.append(me, b"x").unwrap();
        }
        let counter = dir
            .path()
            .join("events")
            .join(volume.to_string())
            .join("counter");
        fs::write(&counter, "").unwrap();
        assert_eq!(open_log(dir.path(), volume).append(me, b"x").unwrap(), 4);
        // Died after writing record 5 but before the counter: still says 4.
        let stale = fs::read(&counter).unwrap();
        assert_eq!(log.append(me, b"x").unwrap(), 5);
        fs::write(&counter, stale).unwrap();
        assert_eq!(log.append(me, b"x").unwrap(), 6);
        // Counter ahead of the records (a folder that reordered writes).
        fs::write(&counter, format!("{:020}\n", 100)).unwrap();
        assert_eq!(log.append(me, b"x").unwrap(), 7);
        // Died midway through a batch: 8..=10 renamed into place, the rest
        // still temporary files, the counter not updated.
        let stale = fs::read(&counter).unwrap();
        let batch = vec![b"x".to_vec(); 3];
        assert_eq!(log.append_batch(me, &batch).unwrap(), [8, 9, 10]);
        fs::write(&counter, stale).unwrap();
        let events = counter.parent().unwrap();
        fs::write(events.join(".tmp-left-by-a-crash"), b"x").unwrap();
        assert_eq!(log.read_after(7, 100).unwrap().len(), 3);
        assert_eq!(log.append_batch(me, &batch).unwrap(), [11, 12, 13]);
        let numbers: Vec<u64> = log
            .read_after(0, 100)
            .unwrap()
            .iter()
            .map(|r| r.mivui)
            .collect();
        assert_eq!(numbers, (1..=13).collect::<Vec<_>>());
        let temps = fs::read_dir(events)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(TEMP_PREFIX)
            })
            .count();
        assert_eq!(temps, 1, "appends leave no temporary files of their own");
    }

    #[test]
    #[ignore = "a measurement"]
    fn measure_append_costs() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log_created(dir.path(), Uuid::new_v4());
        let me = Uuid::new_v4();
        let payload = vec![7u8; 300];
        let started = std::time::Instant::now();
        for _ in 0..100 {
            log.append(me, &payload).unwrap();
        }
        let single = started.elapsed() / 100;
        let batch = vec![payload; 256];
        let mut times: Vec<_> = (0..7)
            .map(|_| {
                let started = std::time::Instant::now();
                log.append_batch(me, &batch).unwrap();
                started.elapsed()
            })
            .collect();
        times.sort();
        eprintln!(
            "dir: one append {:.2} ms (mean of 100); a batch of 256: {:.1} ms (median of 7)",
            single.as_secs_f64() * 1e3,
            times[3].as_secs_f64() * 1e3
        );
    }

    fn open_log_created(path: &Path, volume: Uuid) -> DirEventLog {
        DirEventLog::open(path, volume, true, &mut Vec::new()).unwrap()
    }

    /// Several processes (this test binary, re-run as `appender_child`) and
    /// this one's threads append records and batches to one folder at once,
    /// while a thread reads.
    #[test]
    fn processes_appending_at_once_get_dense_increasing_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let volume = Uuid::new_v4();
        open_log_created(dir.path(), volume);
        let total = 5 * CHILD_APPENDS as u64;
        let reader = {
            let log = open_log(dir.path(), volume);
            std::thread::spawn(move || {
                let mut cursor = 0;
                while cursor < total {
                    let page = log.read_after(cursor, 7).unwrap();
                    for (r, n) in page.iter().zip(cursor + 1..) {
                        assert_eq!(r.mivui, n, "a reader at {cursor} got a gap");
                    }
                    match page.last() {
                        Some(r) => cursor = r.mivui,
                        None => std::thread::sleep(std::time::Duration::from_millis(1)),
                    }
                }
                cursor
            })
        };
        let test_name = format!(
            "{}::appender_child",
            module_path!().split_once("::").unwrap().1
        );
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..3)
            .map(|_| {
                Command::new(&exe)
                    .args([&test_name, "--exact", "--test-threads=1"])
                    .env(CHILD_DIR, dir.path())
                    .env(CHILD_VOLUME, volume.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || append_and_check(&open_log(&path, volume)))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            let says = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && says.contains("1 passed"),
                "an appender failed: {says}"
            );
        }
        assert_eq!(reader.join().unwrap(), total);
        let records = open_log(dir.path(), volume)
            .read_after(0, usize::MAX)
            .unwrap();
        let numbers: Vec<u64> = records.iter().map(|r| r.mivui).collect();
        assert_eq!(numbers, (1..=total).collect::<Vec<_>>());
        let originators: std::collections::HashSet<_> =
            records.iter().map(|r| r.originator).collect();
        assert_eq!(originators.len(), 5);
    }

    /// Does nothing unless run by the test above.
    #[test]
    fn appender_child() {
        let (Ok(path), Ok(volume)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_VOLUME)) else {
            return;
        };
        append_and_check(&open_log(Path::new(&path), volume.parse().unwrap()));
    }

    fn append_and_check(log: &DirEventLog) {
        let me = Uuid::new_v4();
        let singles = (CHILD_APPENDS - CHILD_BATCHES.iter().sum::<usize>()) / CHILD_BATCHES.len();
        let mut numbers = Vec::new();
        for size in CHILD_BATCHES {
            for _ in 0..singles {
                numbers.push(log.append(me, &[numbers.len() as u8]).unwrap());
            }
            let batch: Vec<Vec<u8>> = (0..size).map(|i| vec![i as u8; 100]).collect();
            let got = log.append_batch(me, &batch).unwrap();
            assert_eq!(
                got,
                (got[0]..got[0] + size as u64).collect::<Vec<_>>(),
                "consecutive"
            );
            numbers.extend(got);
        }
        assert_eq!(numbers.len(), CHILD_APPENDS);
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    }
}
