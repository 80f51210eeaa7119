//! The `mem` cloud: an object store and an event log in this process's
//! memory, for tests and the deterministic simulation. Clones of one
//! instance (`Arc`s) are one cloud shared by every node of the process.
//!
//! It keeps the consistency contract of `cloud` exactly: a completed `put`
//! is visible to every later call; log numbers are dense from 1 and a batch
//! is appended whole under one lock, so `read_after` never shows a gap.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{CloudError, CloudErrorKind, CloudResult, EventLog, LogRecord, ObjectStore};
use crate::locks::{Mutex, lock};

#[derive(Debug, Default)]
pub struct MemObjectStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemObjectStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ObjectStore for MemObjectStore {
    fn put(&self, name: &str, data: &[u8]) -> CloudResult<()> {
        lock(&self.objects).insert(name.to_string(), data.to_vec());
        Ok(())
    }

    fn get(&self, name: &str) -> CloudResult<Vec<u8>> {
        lock(&self.objects)
            .get(name)
            .cloned()
            .ok_or_else(|| CloudError::new(CloudErrorKind::NotFound, "get", name, "no such object"))
    }

    fn size(&self, name: &str) -> CloudResult<Option<u64>> {
        Ok(lock(&self.objects).get(name).map(|o| o.len() as u64))
    }

    fn delete(&self, name: &str) -> CloudResult<()> {
        lock(&self.objects).remove(name);
        Ok(())
    }

    fn list(&self) -> CloudResult<Vec<String>> {
        Ok(lock(&self.objects).keys().cloned().collect())
    }
}

/// Records in a vector: record `n` is at index `n - 1`.
#[derive(Debug, Default)]
pub struct MemEventLog {
    records: Mutex<Vec<LogRecord>>,
}

impl MemEventLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, oldest first (what a test inspects after a run).
    pub fn all(&self) -> Vec<LogRecord> {
        lock(&self.records).clone()
    }
}

impl EventLog for MemEventLog {
    fn append(&self, originator: Uuid, payload: &[u8]) -> CloudResult<u64> {
        Ok(self.append_batch(originator, &[payload.to_vec()])?[0])
    }

    fn append_batch(&self, originator: Uuid, payloads: &[Vec<u8>]) -> CloudResult<Vec<u64>> {
        let mut records = lock(&self.records);
        let mut numbers = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let mivui = records.len() as u64 + 1;
            records.push(LogRecord {
                mivui,
                originator,
                payload: payload.clone(),
            });
            numbers.push(mivui);
        }
        Ok(numbers)
    }

    fn read_after(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>> {
        let records = lock(&self.records);
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(records.len());
        Ok(records[start..].iter().take(limit).cloned().collect())
    }
}
