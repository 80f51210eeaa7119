//! Brings published content back from the cloud: only the chunks a read
//! covers (plus readahead when reads are sequential), into a sparse local
//! copy that becomes the version's object once every chunk is there.
//!
//! Every chunk is authenticated (its sealed object is bound to its name)
//! and its plaintext must hash to its name before any byte of it is
//! served; a complete copy must also match the version's SHA-512 before it
//! is put in place. Readers of the same chunk share one download.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use super::volume::{Volume, VolumeHandle};
use crate::event::ChunkRef;
use crate::locks::{Condvar, Mutex, lock};
use crate::meta::Meta;
use crate::store::ContentStore;
use crate::vfs::{ContentSource, FetchError, sha512_of};

const FETCH_WORKERS: usize = 4;
/// Chunks fetched ahead of a sequential reader (about 8 MiB at the
/// average chunk size).
const READAHEAD_CHUNKS: usize = 8;
/// How far from the furthest read a read may start and still count as
/// sequential.
const SEQUENTIAL_SLACK: u64 = 2 << 20;

/// A version being brought back piece by piece.
struct Partial {
    /// The temporary store object the chunks are written into.
    temp: String,
    file: Arc<File>,
    chunks: Vec<ChunkRef>,
    offsets: Vec<u64>,
    present: Vec<bool>,
    loading: Vec<bool>,
    missing: usize,
    /// The furthest a read has reached: reads near it are sequential (the
    /// kernel's reads arrive slightly out of order across FUSE threads).
    next_offset: u64,
    /// Complete: being checked and put in place (reads still served here).
    finishing: bool,
    size: u64,
    hash: Option<String>,
}

impl Partial {
    /// Chunk indices covering `offset..offset + len`.
    fn covering(&self, offset: u64, len: u64) -> std::ops::Range<usize> {
        let end = offset + len.max(1);
        let first = self
            .offsets
            .partition_point(|&o| o <= offset)
            .saturating_sub(1);
        let last = self.offsets.partition_point(|&o| o < end);
        first..last.max(first + 1).min(self.chunks.len())
    }
}

pub struct Fetcher {
    meta: Arc<Meta>,
    store: Arc<ContentStore>,
    volume: Arc<VolumeHandle>,
    partials: Mutex<HashMap<String, Partial>>,
    changed: Condvar,
    me: Weak<Fetcher>,
    /// Told of every copy put in place (the core evicts it again where an
    /// online-only rule says so).
    installed: Mutex<Option<InstalledHook>>,
}

type InstalledHook = Box<dyn Fn(&str) + Send + Sync>;

impl Fetcher {
    pub fn new(meta: Arc<Meta>, store: Arc<ContentStore>, volume: Arc<VolumeHandle>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            meta,
            store,
            volume,
            partials: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            me: me.clone(),
            installed: Mutex::new(None),
        })
    }

    fn chunks_of(&self, object: &str, size: u64) -> Result<Vec<ChunkRef>, FetchError> {
        let local = |e: crate::meta::MetaError| FetchError::local(&e, e.raw_os_error());
        let mut chunks = self.meta.version_chunks(object).map_err(local)?;
        if chunks.is_none() {
            // Brought by the log moments ago: still in the journal only.
            self.meta.commit_pending().map_err(local)?;
            chunks = self.meta.version_chunks(object).map_err(local)?;
        }
        let chunks = chunks.ok_or_else(|| {
            FetchError::Unavailable(
                "its local copy is missing and this version was never published to the cloud"
                    .to_string(),
            )
        })?;
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        if total != size {
            return Err(FetchError::Corrupt(format!(
                "the version's chunks add up to {total} bytes, it has {size}"
            )));
        }
        Ok(chunks)
    }

    /// The partial copy of `object`, made when missing.
    fn partial<'a>(
        &self,
        map: &'a mut HashMap<String, Partial>,
        object: &str,
        size: u64,
        hash: Option<&str>,
    ) -> Result<&'a mut Partial, FetchError> {
        if !map.contains_key(object) {
            let chunks = self.chunks_of(object, size)?;
            let (temp, file) = self
                .store
                .create_partial(object, size)
                .map_err(|e| FetchError::local(&e, e.raw_os_error()))?;
            let offsets: Vec<u64> = chunks
                .iter()
                .scan(0u64, |off, c| {
                    let at = *off;
                    *off += c.size;
                    Some(at)
                })
                .collect();
            let n = chunks.len();
            map.insert(
                object.to_string(),
                Partial {
                    temp,
                    file: Arc::new(file),
                    chunks,
                    offsets,
                    present: vec![false; n],
                    loading: vec![false; n],
                    missing: n,
                    next_offset: 0,
                    finishing: false,
                    size,
                    hash: hash.map(str::to_string),
                },
            );
        }
        Ok(map.get_mut(object).expect("inserted"))
    }

    /// Makes chunks `want` of `object` present, fetching those nobody is
    /// fetching and waiting for the others. Starts `ahead` in the
    /// background. Returns the partial's file.
    fn ensure(
        &self,
        object: &str,
        size: u64,
        hash: Option<&str>,
        want: impl Fn(&Partial) -> (std::ops::Range<usize>, std::ops::Range<usize>),
    ) -> Result<Option<Arc<File>>, FetchError> {
        let mut map = lock(&self.partials);
        loop {
            if !map.contains_key(object) && self.store.open_object(object).is_ok() {
                return Ok(None); // complete and in place
            }
            let p = self.partial(&mut map, object, size, hash)?;
            let (need, ahead) = want(p);
            let mine: Vec<usize> = need
                .clone()
                .filter(|&i| !p.present[i] && !p.loading[i])
                .collect();
            let waiting = need.clone().any(|i| !p.present[i] && p.loading[i]);
            // Readahead starts once this reader fetches nothing itself: on
            // two cores it would otherwise share the link and the CPU with
            // the chunk the reader waits for.
            let background: Vec<usize> = if mine.is_empty() {
                ahead.filter(|&i| !p.present[i] && !p.loading[i]).collect()
            } else {
                Vec::new()
            };
            for &i in mine.iter().chain(&background) {
                p.loading[i] = true;
            }
            if !background.is_empty()
                && let Some(me) = self.me.upgrade()
            {
                let object = object.to_string();
                std::thread::spawn(move || {
                    if let Err(e) = me.load(&object, &background) {
                        tracing::debug!(error = %e, "readahead failed");
                    }
                });
            }
            if mine.is_empty() && !waiting {
                let file = p.file.clone();
                if p.missing == 0 && !p.finishing {
                    p.finishing = true;
                    // Checked and installed off the read path and the lock.
                    if let Some(me) = self.me.upgrade() {
                        let object = object.to_string();
                        std::thread::spawn(move || me.finish(&object));
                    }
                }
                return Ok(Some(file));
            }
            if !mine.is_empty() {
                drop(map);
                self.load(object, &mine)?;
                map = lock(&self.partials);
                continue;
            }
            map = self.changed.wait(map).expect("lock poisoned");
        }
    }

    /// Fetches chunks `idx` of `object` (marked loading by the caller).
    fn load(&self, object: &str, idx: &[usize]) -> Result<(), FetchError> {
        let (file, jobs) = {
            let map = lock(&self.partials);
            let p = map.get(object).ok_or_else(|| {
                FetchError::local(&"the partial copy went away (evicted meanwhile)", None)
            })?;
            let jobs: Vec<(usize, ChunkRef, u64)> = idx
                .iter()
                .map(|&i| (i, p.chunks[i].clone(), p.offsets[i]))
                .collect();
            (p.file.clone(), jobs)
        };
        let thawing = jobs
            .iter()
            .any(|(_, c, _)| self.volume.thawing().waiting(&c.name));
        let result = match self.volume.get() {
            // Being restored: fail fast, the cloud is asked again later.
            _ if thawing => Downloaded {
                done: Vec::new(),
                error: Some(FetchError::Thawing(format!(
                    "in cold storage and being restored: reads fail with EAGAIN until it is ready \
                     (latus thaw PATH --wait waits for it); checked again within {} s",
                    super::cold::RECHECK.as_secs()
                ))),
            },
            Ok(volume) => download(&volume, &jobs, &file),
            Err(e) => Downloaded {
                done: Vec::new(),
                error: Some(match e {
                    super::VolumeError::Cloud(e) => e.into(),
                    e => FetchError::Unavailable(e.to_string()),
                }),
            },
        };
        let result = match result.error {
            Some(FetchError::Frozen(_)) => Downloaded {
                error: Some(self.thaw_version(object)),
                ..result
            },
            _ => result,
        };
        let mut map = lock(&self.partials);
        if let Some(p) = map.get_mut(object) {
            self.store.note_usage(&p.temp);
            for (i, ok) in &result.done {
                p.loading[*i] = false;
                if *ok && !p.present[*i] {
                    p.present[*i] = true;
                    p.missing -= 1;
                }
            }
            for (i, _, _) in &jobs {
                p.loading[*i] = false;
            }
        }
        drop(map);
        self.changed.notify_all();
        match result.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A chunk of `object` must be restored before it can be read: asks
    /// for every chunk of the version not here yet, so one wait covers the
    /// whole file. Returns the error the reader gets.
    fn thaw_version(&self, object: &str) -> FetchError {
        let missing: Vec<String> = {
            let map = lock(&self.partials);
            map.get(object).map_or_else(Vec::new, |p| {
                p.chunks
                    .iter()
                    .zip(&p.present)
                    .filter(|(_, here)| !**here)
                    .map(|(c, _)| c.name.clone())
                    .collect()
            })
        };
        let volume = match self.volume.get() {
            Ok(v) => v,
            Err(e) => return FetchError::Unavailable(e.to_string()),
        };
        let mut asked = 0;
        for name in &missing {
            match volume.cloud.objects.thaw(name) {
                Ok(_) => asked += 1,
                Err(e) => return e.into(),
            }
        }
        self.volume.thawing().mark(missing);
        FetchError::Frozen(format!(
            "in cold storage: a restore of its {asked} chunks was requested, ready in about {}; \
             reads fail with EAGAIN until then (latus thaw PATH --wait waits for it)",
            volume.cloud.objects.thaw_wait()
        ))
    }

    /// Every chunk is there: the whole must match the version's hash
    /// before it becomes the version's object. Readers keep being served
    /// from the partial copy meanwhile.
    fn finish(&self, object: &str) {
        let (file, temp, size, hash) = {
            let map = lock(&self.partials);
            let Some(p) = map.get(object) else { return };
            (p.file.clone(), p.temp.clone(), p.size, p.hash.clone())
        };
        let result = (|| {
            if let Some(want) = &hash {
                let got = sha512_of(&file, size).map_err(|e| e.to_string())?;
                if &got != want {
                    return Err(
                        "the fetched content does not match the version's SHA-512".to_string()
                    );
                }
            }
            file.sync_data().map_err(|e| e.to_string())?;
            self.store.install(&temp, object).map_err(|e| e.to_string())
        })();
        if let Err(e) = &result {
            tracing::error!(object, error = %e, "a fetched version was not put in place");
            let _ = self.store.remove(&temp);
        }
        lock(&self.partials).remove(object);
        self.changed.notify_all();
        if result.is_ok()
            && let Some(hook) = lock(&self.installed).as_ref()
        {
            hook(object);
        }
    }

    /// Calls `hook` with the name of every copy put in place.
    pub fn on_installed(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *lock(&self.installed) = Some(Box::new(hook));
    }
}

struct Downloaded {
    /// (chunk index, verified and written)
    done: Vec<(usize, bool)>,
    error: Option<FetchError>,
}

/// The chunks, fetched in parallel, verified, written at their offsets.
fn download(volume: &Volume, jobs: &[(usize, ChunkRef, u64)], file: &File) -> Downloaded {
    let next = AtomicUsize::new(0);
    let out: Mutex<Downloaded> = Mutex::new(Downloaded {
        done: Vec::new(),
        error: None,
    });
    std::thread::scope(|s| {
        for _ in 0..FETCH_WORKERS.min(jobs.len()) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= jobs.len() {
                        return;
                    }
                    let (i, c, offset) = &jobs[k];
                    let r = fetch_chunk(volume, c, file, *offset);
                    let mut o = lock(&out);
                    o.done.push((*i, r.is_ok()));
                    if let Err(e) = r {
                        o.error.get_or_insert(e);
                    }
                }
            });
        }
    });
    out.into_inner().expect("lock poisoned")
}

fn fetch_chunk(volume: &Volume, c: &ChunkRef, file: &File, offset: u64) -> Result<(), FetchError> {
    let started = std::time::Instant::now();
    let sealed = volume.cloud.objects.get(&c.name)?;
    let got = started.elapsed();
    let plain = volume.keys.open_chunk(&c.name, &sealed).map_err(|e| {
        tracing::error!(object = %c.name, error = %e, "a cloud object failed authentication");
        FetchError::Corrupt(format!(
            "cloud object {} failed authentication: {e}",
            c.name
        ))
    })?;
    // (`open_chunk` checked that the plaintext is what the name says.)
    if plain.len() as u64 != c.size {
        tracing::error!(object = %c.name, "a cloud object does not hold the content its name promises");
        return Err(FetchError::Corrupt(format!(
            "cloud object {} does not hold the content its name promises",
            c.name
        )));
    }
    file.write_all_at(&plain, offset)?;
    tracing::debug!(
        offset,
        bytes = c.size,
        get_us = got.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "chunk fetched"
    );
    Ok(())
}

impl ContentSource for Fetcher {
    fn settle(&self, object: &str) {
        let mut map = lock(&self.partials);
        while map.get(object).is_some_and(|p| p.finishing) {
            map = self.changed.wait(map).expect("lock poisoned");
        }
    }

    fn drop_partial(&self, object: &str) -> u64 {
        let mut map = lock(&self.partials);
        let Some(p) = map.get(object) else {
            return 0;
        };
        if p.finishing || p.loading.iter().any(|&l| l) {
            return 0; // a reader is waiting for it, or it is being put in place
        }
        let p = map.remove(object).expect("present");
        drop(map);
        let bytes = {
            use std::os::unix::fs::MetadataExt;
            p.file.metadata().map_or(0, |m| m.blocks() * 512)
        };
        let _ = self.store.remove(&p.temp);
        bytes
    }

    fn fetch(&self, object: &str, size: u64, hash: Option<&str>) -> Result<(), FetchError> {
        if size == 0 {
            return Ok(());
        }
        self.ensure(object, size, hash, |p| (0..p.chunks.len(), 0..0))?;
        // Whole means installed: wait for the check and the move in place.
        let mut map = lock(&self.partials);
        while map.contains_key(object) {
            map = self.changed.wait(map).expect("lock poisoned");
        }
        drop(map);
        self.store.open_object(object).map(|_| ()).map_err(|_| {
            FetchError::Corrupt("the fetched content did not pass its final check".to_string())
        })
    }

    fn read_range(
        &self,
        object: &str,
        size: u64,
        hash: Option<&str>,
        offset: u64,
        len: usize,
        limit: Option<u64>,
    ) -> Result<Vec<u8>, FetchError> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Ok(buf);
        }
        let file = self.ensure(object, size, hash, |p| {
            let need = p.covering(offset, len as u64);
            let sequential = offset.abs_diff(p.next_offset) <= SEQUENTIAL_SLACK;
            let mut ahead = if sequential {
                need.end..(need.end + READAHEAD_CHUNKS).min(p.chunks.len())
            } else {
                0..0
            };
            if let Some(limit) = limit {
                // A range-limited reader never gets more than its range.
                let below = p.offsets.partition_point(|&o| o < limit);
                ahead.end = ahead.end.min(below.max(ahead.start));
            }
            (need, ahead)
        })?;
        if let Some(p) = lock(&self.partials).get_mut(object) {
            let end = offset + len as u64;
            // Near the frontier: it moves forward only (reads arrive a little
            // out of order); elsewhere: a reader starting a new stream.
            p.next_offset = if offset.abs_diff(p.next_offset) <= SEQUENTIAL_SLACK {
                p.next_offset.max(end)
            } else {
                end
            };
        }
        let file = match file {
            Some(f) => f,
            None => Arc::new(
                self.store
                    .open_object(object)
                    .map_err(|e| FetchError::local(&e, e.raw_os_error()))?,
            ),
        };
        let mut done = 0;
        while done < len {
            let n = file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(buf)
    }
}
