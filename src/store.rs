//! Local content: one file per version ("object"), named by a random id.
//!
//! Invariants: an object named in a committed inode row is never written
//! again (writes go to a fresh staging object, which becomes the committed
//! version at close); objects no committed row names are garbage and are
//! removed at mount.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::mpsc::{Receiver, sync_channel};

use thiserror::Error;

use crate::locks::{Mutex, lock};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("content store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the disk holding the home is full: {available} bytes free, {reserve} kept for the journal and the database"
    )]
    Full { available: u64, reserve: u64 },
}

/// Content writes stop while the disk holding the store has less than this
/// free, so the journal, the database and the log keep room to record the
/// deletes that free space: a hundredth of the disk, within 8–256 MiB.
pub fn reserve_for(total: u64) -> u64 {
    (total / 100).clamp(8 << 20, 256 << 20)
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        self.raw_os_error() == Some(libc::ENOENT)
    }

    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error(),
            StoreError::Full { .. } => None,
        }
    }
}

pub type ObjectId = String;

/// How many empty objects the spare maker keeps ready.
const SPARES: usize = 128;
/// Suffix of a spare object: made ahead of time, not yet a version.
const SPARE_SUFFIX: &str = ".spare";
/// Suffix of a partial copy of a version being fetched chunk by chunk.
const PARTIAL_SUFFIX: &str = ".part";

/// Creating a file costs an inode allocation and a directory update; a
/// background thread does that ahead of time, off the request path, as
/// `XX/ID.spare` in the object's own shard (renamed to `XX/ID` when used,
/// a rename within one folder; leftovers are removed at open).
#[derive(Debug)]
pub struct ContentStore {
    dir: PathBuf,
    spares: Mutex<Option<Receiver<(ObjectId, File)>>>,
    /// Disk taken by each object, and when it was last used.
    usage: Mutex<crate::cache::Usage>,
}

impl ContentStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        for shard in 0..=255u8 {
            let d = dir.join(format!("{shard:02x}"));
            fs::create_dir_all(&d).map_err(|source| StoreError::Io { path: d, source })?;
        }
        let _ = fs::remove_dir_all(dir.join("spare")); // layout of an earlier version
        let store = Self {
            dir,
            spares: Mutex::new(None),
            usage: Mutex::new(Default::default()),
        };
        store.scan_usage();
        Ok(store)
    }

    /// Disk used by every object (blocks, so sparse copies count what they hold).
    fn scan_usage(&self) {
        use std::os::unix::fs::MetadataExt;
        let mut usage = lock(&self.usage);
        for shard in 0..=255u8 {
            let Ok(rd) = fs::read_dir(self.dir.join(format!("{shard:02x}"))) else {
                continue;
            };
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(SPARE_SUFFIX) {
                    continue;
                }
                if let Ok(m) = entry.metadata() {
                    usage.set(&name, m.blocks() * 512);
                }
            }
        }
    }

    /// The disk an object takes (0 when only in the cloud), as indexed.
    pub fn local_bytes(&self, id: &str) -> u64 {
        lock(&self.usage).bytes(id).unwrap_or(0)
    }

    /// Records the disk an object takes now (after it was written or filled).
    pub fn note_usage(&self, id: &str) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = fs::metadata(self.path(id)) {
            lock(&self.usage).set(id, m.blocks() * 512);
        }
    }

    pub fn touch(&self, id: &str) {
        lock(&self.usage).touch(id);
    }

    /// Bytes of disk all objects take.
    pub fn used_bytes(&self) -> u64 {
        lock(&self.usage).total()
    }

    /// Objects, least recently used first, with the disk each takes.
    pub fn least_recent(&self) -> Vec<(ObjectId, u64)> {
        lock(&self.usage).least_recent()
    }

    /// Starts the background maker of spare objects (for the daemon; tests
    /// and one-shot commands create objects on demand).
    pub fn start_spare_maker(self: &std::sync::Arc<Self>) {
        let (tx, rx) = sync_channel(SPARES);
        let store = std::sync::Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("latus-spares".into())
            .spawn(move || {
                loop {
                    let Some(store) = store.upgrade() else { return };
                    let id = new_object_id();
                    let mut path = store.path(&id).into_os_string();
                    path.push(SPARE_SUFFIX);
                    drop(store);
                    let made = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path);
                    match made {
                        Ok(f) => {
                            if tx.send((id, f)).is_err() {
                                let _ = fs::remove_file(&path);
                                return; // the store is gone
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not make a spare object; creating on demand");
                            return;
                        }
                    }
                }
            });
        if spawned.is_ok() {
            *lock(&self.spares) = Some(rx);
        }
    }

    fn take_spare(&self) -> Option<(ObjectId, File)> {
        let (id, file) = lock(&self.spares).as_ref()?.try_recv().ok()?;
        let to = self.path(&id);
        let mut from = to.clone().into_os_string();
        from.push(SPARE_SUFFIX);
        match fs::rename(&from, &to) {
            Ok(()) => Some((id, file)),
            Err(_) => None,
        }
    }

    /// Ok while a content write may take more disk (see `reserve_for`).
    pub fn check_room(&self) -> Result<(), StoreError> {
        let Ok(d) = crate::platform::disk_space(&self.dir) else {
            return Ok(());
        };
        let reserve = reserve_for(d.total);
        if d.available >= reserve {
            Ok(())
        } else {
            Err(StoreError::Full {
                available: d.available,
                reserve,
            })
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Objects are spread over 256 subfolders by the first byte of their
    /// id: ext4 places each folder's inodes near it, and one huge folder
    /// makes inode allocation scan the same crowded block group.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id.get(..2).unwrap_or("00")).join(id)
    }

    fn err(&self, id: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
        let path = self.path(id);
        move |source| StoreError::Io { path, source }
    }

    /// A fresh, empty object for a version being written.
    pub fn create(&self) -> Result<(ObjectId, File), StoreError> {
        if let Some(spare) = self.take_spare() {
            return Ok(spare);
        }
        let id = new_object_id();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.path(&id))
            .map_err(self.err(&id))?;
        Ok((id, file))
    }

    /// The partial copy of object `id` being fetched (named after it, so
    /// the cache can tell whose it is; removed as garbage at mount).
    pub fn partial_id(id: &str) -> ObjectId {
        format!("{id}{PARTIAL_SUFFIX}")
    }

    /// The object a partial copy belongs to.
    pub fn partial_owner(id: &str) -> Option<&str> {
        id.strip_suffix(PARTIAL_SUFFIX)
    }

    /// Creates (or truncates) the partial copy of `id`, sparse, `len` long.
    pub fn create_partial(&self, id: &str, len: u64) -> Result<(ObjectId, File), StoreError> {
        let pid = Self::partial_id(id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.path(&pid))
            .map_err(self.err(&pid))?;
        file.set_len(len).map_err(self.err(&pid))?;
        Ok((pid, file))
    }

    /// A fresh object holding the first `len` bytes of `src` (copy-on-write
    /// of a committed version before its first modification).
    pub fn create_copy(&self, src: &File, len: u64) -> Result<(ObjectId, File), StoreError> {
        let (id, dst) = self.create()?;
        copy_range(src, &dst, len).map_err(self.err(&id))?;
        dst.set_len(len).map_err(self.err(&id))?;
        Ok((id, dst))
    }

    /// Puts object `temp_id` (made with `create`, complete and verified)
    /// in place as object `id`.
    pub fn install(&self, temp_id: &str, id: &str) -> Result<(), StoreError> {
        fs::rename(self.path(temp_id), self.path(id)).map_err(self.err(id))?;
        lock(&self.usage).remove(temp_id);
        self.note_usage(id);
        Ok(())
    }

    pub fn open_object(&self, id: &str) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .open(self.path(id))
            .map_err(self.err(id))
    }

    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        lock(&self.usage).remove(id);
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(id)(e)),
            _ => Ok(()),
        }
    }

    /// Removes every object not in `keep`; returns how many were removed.
    pub fn collect_garbage(&self, keep: &HashSet<ObjectId>) -> Result<usize, StoreError> {
        let mut removed = 0;
        for shard in 0..=255u8 {
            let d = self.dir.join(format!("{shard:02x}"));
            let rd = fs::read_dir(&d).map_err(|source| StoreError::Io { path: d, source })?;
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(SPARE_SUFFIX) {
                    let _ = fs::remove_file(entry.path()); // made ahead, never used
                    continue;
                }
                if !keep.contains(&name) {
                    self.remove(&name)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Moves every object `keep` does not name into `aside` (made when
    /// needed); partial copies and spares go. Returns how many were moved.
    pub fn set_aside_garbage(
        &self,
        keep: &HashSet<ObjectId>,
        aside: &Path,
    ) -> Result<usize, StoreError> {
        let mut moved = 0;
        for shard in 0..=255u8 {
            let d = self.dir.join(format!("{shard:02x}"));
            let rd = fs::read_dir(&d).map_err(|source| StoreError::Io { path: d, source })?;
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(SPARE_SUFFIX) || Self::partial_owner(&name).is_some() {
                    let _ = fs::remove_file(entry.path());
                    continue;
                }
                if !keep.contains(&name) {
                    fs::create_dir_all(aside).map_err(|source| StoreError::Io {
                        path: aside.to_path_buf(),
                        source,
                    })?;
                    fs::rename(entry.path(), aside.join(&name)).map_err(self.err(&name))?;
                    lock(&self.usage).remove(&name);
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }

    /// Flushes every written object of this filesystem to stable storage.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
        let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        if rc != 0 {
            return Err(StoreError::Io {
                path: self.dir.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Makes an object's content and directory entry durable. A missing
    /// object (removed since) needs nothing.
    pub fn sync_object(&self, id: &str) -> Result<(), StoreError> {
        match File::open(self.path(id)) {
            Ok(f) => f.sync_data().map_err(self.err(id))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(id)(e)),
        }
        self.sync_dir_of(id)
    }

    /// Makes the directory entry of an object durable.
    pub fn sync_dir_of(&self, id: &str) -> Result<(), StoreError> {
        let shard = self
            .path(id)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        File::open(&shard)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Io {
                path: shard,
                source,
            })
    }
}

/// Copies in the kernel where it can (copy_file_range), else through a buffer.
fn copy_range(src: &File, dst: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut off_in: i64 = 0;
    let mut off_out: i64 = 0;
    while (off_in as u64) < len {
        let want = (len - off_in as u64).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call and
        // the offset pointers point to live locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV)
                    | Some(libc::ENOSYS)
                    | Some(libc::EOPNOTSUPP)
                    | Some(libc::EINVAL)
            ) {
                return copy_buffered(src, dst, off_in as u64, len);
            }
            return Err(e);
        }
        if n == 0 {
            break; // source shorter than len: the rest stays a hole
        }
    }
    Ok(())
}

fn copy_buffered(src: &File, dst: &File, mut off: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while off < len {
        let want = ((len - off) as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

pub fn new_object_id() -> ObjectId {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_exact_and_gc_keeps_only_named_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let (a, fa) = store.create().unwrap();
        fa.write_all_at(b"hello world", 0).unwrap();
        let (b, fb) = store.create_copy(&fa, 5).unwrap();
        let mut out = vec![0; 16];
        let n = fb.read_at(&mut out, 0).unwrap();
        assert_eq!(&out[..n], b"hello");
        let keep: HashSet<_> = [b.clone()].into();
        assert_eq!(store.collect_garbage(&keep).unwrap(), 1);
        assert!(!store.path(&a).exists());
        assert!(store.path(&b).exists());
    }
}
