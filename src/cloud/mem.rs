//! The `mem` cloud: an object store and an event log in this process's
//! memory, for tests and the deterministic simulation. Clones of one
//! instance (`Arc`s) are one cloud shared by every node of the process.
//!
//! It keeps the consistency contract of `cloud` exactly: a completed `put`
//! is visible to every later call; log numbers are dense from 1 and a batch
//! is appended whole under one lock, so `read_after` never shows a gap.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{
    CloudError, CloudErrorKind, CloudResult, EventLog, LogRecord, ObjectStat, ObjectStore, Tier,
};
use crate::locks::{Mutex, lock};

/// Objects with a tier each. With `restore_first`, cold objects behave as
/// S3's archive classes: a `get` fails `Frozen` until `thaw`, which (here)
/// completes at once.
#[derive(Debug, Default)]
pub struct MemObjectStore {
    objects: Mutex<BTreeMap<String, (Vec<u8>, Tier)>>,
    restore_first: bool,
}

impl MemObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose cold tier must be restored before a read.
    pub fn restore_first() -> Self {
        Self {
            restore_first: true,
            ..Self::default()
        }
    }
}

impl ObjectStore for MemObjectStore {
    fn put(&self, name: &str, data: &[u8]) -> CloudResult<()> {
        lock(&self.objects).insert(name.to_string(), (data.to_vec(), Tier::Hot));
        Ok(())
    }

    fn get(&self, name: &str) -> CloudResult<Vec<u8>> {
        match lock(&self.objects).get(name) {
            Some((data, tier)) if tier.readable() => Ok(data.clone()),
            Some(_) => Err(CloudError::new(
                CloudErrorKind::Frozen,
                "get",
                name,
                "must be restored first",
            )),
            None => Err(CloudError::new(
                CloudErrorKind::NotFound,
                "get",
                name,
                "no such object",
            )),
        }
    }

    fn size(&self, name: &str) -> CloudResult<Option<u64>> {
        Ok(lock(&self.objects).get(name).map(|o| o.0.len() as u64))
    }

    fn stat(&self, name: &str) -> CloudResult<Option<ObjectStat>> {
        Ok(lock(&self.objects).get(name).map(|(d, tier)| ObjectStat {
            size: d.len() as u64,
            tier: *tier,
        }))
    }

    fn to_cold(&self, name: &str) -> CloudResult<()> {
        let cold = if self.restore_first {
            Tier::Frozen
        } else {
            Tier::Cold
        };
        self.set_tier(name, "to_cold", |t| if t.is_cold() { t } else { cold })
    }

    fn to_hot(&self, name: &str) -> CloudResult<()> {
        self.set_tier(name, "to_hot", |t| if t.readable() { Tier::Hot } else { t })?;
        match self.stat(name)? {
            Some(s) if s.tier != Tier::Hot => Err(CloudError::new(
                CloudErrorKind::Frozen,
                "to_hot",
                name,
                "must be restored first",
            )),
            _ => Ok(()),
        }
    }

    fn thaw(&self, name: &str) -> CloudResult<Tier> {
        self.set_tier(name, "thaw", |t| {
            if t == Tier::Frozen { Tier::Ready } else { t }
        })?;
        Ok(self.stat(name)?.map_or(Tier::Hot, |s| s.tier))
    }

    fn delete(&self, name: &str) -> CloudResult<()> {
        lock(&self.objects).remove(name);
        Ok(())
    }

    fn list(&self) -> CloudResult<Vec<String>> {
        Ok(lock(&self.objects).keys().cloned().collect())
    }
}

impl MemObjectStore {
    fn set_tier(&self, name: &str, op: &'static str, f: impl Fn(Tier) -> Tier) -> CloudResult<()> {
        let mut objects = lock(&self.objects);
        let (_, tier) = objects
            .get_mut(name)
            .ok_or_else(|| CloudError::new(CloudErrorKind::NotFound, op, name, "no such object"))?;
        *tier = f(*tier);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_first_cold_tier_reads_only_after_a_thaw() {
        let s = MemObjectStore::restore_first();
        s.put("c", b"x").unwrap();
        s.to_cold("c").unwrap();
        assert_eq!(s.get("c").unwrap_err().kind, CloudErrorKind::Frozen);
        assert_eq!(s.to_hot("c").unwrap_err().kind, CloudErrorKind::Frozen);
        assert_eq!(s.thaw("c").unwrap(), Tier::Ready);
        assert_eq!(s.get("c").unwrap(), b"x");
        s.to_hot("c").unwrap();
        assert_eq!(s.stat("c").unwrap().unwrap().tier, Tier::Hot);
        let instant = MemObjectStore::new();
        instant.put("c", b"y").unwrap();
        instant.to_cold("c").unwrap();
        assert_eq!(instant.get("c").unwrap(), b"y");
        // A put stores it hot again (the uploader's answer to a cold chunk
        // a new version needs).
        instant.put("c", b"y").unwrap();
        assert_eq!(instant.stat("c").unwrap().unwrap().tier, Tier::Hot);
    }
}
