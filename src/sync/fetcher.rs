//! Brings a published version back from the cloud into the local store
//! when its local copy is gone. Chunks download in parallel; each is
//! authenticated (its sealed object is bound to its name), its plaintext
//! must hash to its name, and the whole must match the version's SHA-512,
//! before the object is put in place: a reader never gets wrong bytes.
//! Readers of the same version share one download.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::volume::{Volume, VolumeHandle};
use crate::event::ChunkRef;
use crate::locks::{Condvar, Mutex, lock};
use crate::meta::Meta;
use crate::store::ContentStore;
use crate::vfs::{ContentSource, sha512_of};

const FETCH_WORKERS: usize = 4;

pub struct Fetcher {
    meta: Arc<Meta>,
    store: Arc<ContentStore>,
    volume: Arc<VolumeHandle>,
    in_flight: Mutex<HashSet<String>>,
    finished: Condvar,
}

impl Fetcher {
    pub fn new(meta: Arc<Meta>, store: Arc<ContentStore>, volume: Arc<VolumeHandle>) -> Self {
        Self {
            meta,
            store,
            volume,
            in_flight: Mutex::new(HashSet::new()),
            finished: Condvar::new(),
        }
    }

    fn fetch_now(&self, object: &str, size: u64, hash: Option<&str>) -> Result<(), String> {
        let mut chunks = self
            .meta
            .version_chunks(object)
            .map_err(|e| e.to_string())?;
        if chunks.is_none() {
            // Brought by the log moments ago: still in the journal only.
            self.meta.commit_pending().map_err(|e| e.to_string())?;
            chunks = self
                .meta
                .version_chunks(object)
                .map_err(|e| e.to_string())?;
        }
        let chunks = chunks.ok_or_else(|| {
            "its local copy is missing and this version was never published to the cloud"
                .to_string()
        })?;
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        if total != size {
            return Err(format!(
                "the version's chunks add up to {total} bytes, it has {size}"
            ));
        }
        let volume = self.volume.get().map_err(|e| e.to_string())?;
        let (temp, file) = self.store.create().map_err(|e| e.to_string())?;
        let result = download(&volume, &chunks, &file).and_then(|()| {
            if let Some(want) = hash {
                let got = sha512_of(&file, size).map_err(|e| e.to_string())?;
                if got != want {
                    return Err(
                        "the fetched content does not match the version's SHA-512".to_string()
                    );
                }
            }
            file.sync_data().map_err(|e| e.to_string())?;
            self.store.install(&temp, object).map_err(|e| e.to_string())
        });
        if result.is_err() {
            let _ = self.store.remove(&temp);
        }
        result
    }
}

/// Every chunk, fetched and verified, written at its offset.
fn download(volume: &Volume, chunks: &[ChunkRef], file: &File) -> Result<(), String> {
    let offsets: Vec<u64> = chunks
        .iter()
        .scan(0u64, |off, c| {
            let at = *off;
            *off += c.size;
            Some(at)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..FETCH_WORKERS.min(chunks.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() || lock(&failure).is_some() {
                        return;
                    }
                    if let Err(e) = fetch_chunk(volume, &chunks[i], file, offsets[i]) {
                        lock(&failure).get_or_insert(e);
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("lock poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn fetch_chunk(volume: &Volume, c: &ChunkRef, file: &File, offset: u64) -> Result<(), String> {
    let sealed = volume
        .cloud
        .objects
        .get(&c.name)
        .map_err(|e| e.to_string())?;
    let plain = volume.keys.open_chunk(&c.name, &sealed).map_err(|e| {
        tracing::error!(object = %c.name, error = %e, "a cloud object failed authentication");
        format!("cloud object {} failed authentication: {e}", c.name)
    })?;
    if plain.len() as u64 != c.size || volume.keys.chunk_name(&plain) != c.name {
        tracing::error!(object = %c.name, "a cloud object does not hold the content its name promises");
        return Err(format!(
            "cloud object {} does not hold the content its name promises",
            c.name
        ));
    }
    file.write_all_at(&plain, offset).map_err(|e| e.to_string())
}

impl ContentSource for Fetcher {
    fn fetch(&self, object: &str, size: u64, hash: Option<&str>) -> Result<(), String> {
        {
            let mut f = lock(&self.in_flight);
            while f.contains(object) {
                f = self.finished.wait(f).expect("lock poisoned");
            }
            if self.store.open_object(object).is_ok() {
                return Ok(()); // another reader brought it back
            }
            f.insert(object.to_string());
        }
        let result = self.fetch_now(object, size, hash);
        lock(&self.in_flight).remove(object);
        self.finished.notify_all();
        result
    }
}
