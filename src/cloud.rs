//! The remote seam: an object store and an event log, behind traits so the
//! real backend (`aws`: S3 + DynamoDB), the embedded one (`dir`: a plain
//! folder), an in-memory one (`mem`, for tests and the simulation) and a
//! failure-injecting wrapper for tests are interchangeable.
//! Only sealed bytes cross this boundary (see `crypto`); names are keyed
//! hashes. Calls block; backends that are async inside run their own
//! runtime.
//!
//! Consistency assumed of the cloud: a completed `put` is visible to every
//! later `get`/`exists` (S3 has been strongly consistent since 2020; the
//! `dir` backend renames into place); the event log assigns strictly
//! increasing, dense sequence numbers (`mivui`): a number becomes visible
//! only when every lower one is (aws: a consistent read of the highest
//! number, then a conditional write of the next; dir: records renamed into
//! place in order under a lock), so a reader's cursor never skips a record
//! that appears later.

mod aws;
mod dir;
mod faulty;
mod mem;
pub mod requests;
mod tier;

use std::sync::Arc;

use thiserror::Error;
use uuid::Uuid;

pub use aws::{AwsEventLog, AwsObjectStore, AwsTarget};
pub use dir::{DirEventLog, DirObjectStore};
pub use faulty::{CallKind, Fault, FaultControl, FaultyEventLog, FaultyObjectStore};
pub use mem::{MemEventLog, MemObjectStore};
pub use tier::{ColdClass, ColdSettings, ObjectStat, RestoreTier, Tier};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudErrorKind {
    /// The object or item does not exist.
    NotFound,
    /// No answer: network down, server stopped, timeout.
    Unreachable,
    /// The service asked us to slow down (HTTP 429/503 SlowDown, DynamoDB
    /// ProvisionedThroughputExceeded).
    Throttled,
    /// The service failed (5xx).
    Server,
    /// Credentials or permissions refused.
    Denied,
    /// Anything else the service refused (4xx): retrying will not help.
    Rejected,
    /// The object is in a cold tier that must restore it before it can be
    /// read (`thaw`); retrying helps once the restore is done.
    Frozen,
    /// The object is in a cold folder that is not connected now.
    ColdOffline,
    /// This store has no cold tier (none configured).
    NoColdTier,
}

#[derive(Debug, Error)]
#[error("{op} {what}: {kind:?}: {message}")]
pub struct CloudError {
    pub kind: CloudErrorKind,
    /// The operation (`put`, `get`, `append`, ...).
    pub op: &'static str,
    /// The object name or table it was about.
    pub what: String,
    pub message: String,
}

impl CloudError {
    pub fn new(
        kind: CloudErrorKind,
        op: &'static str,
        what: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            op,
            what: what.into(),
            message: message.into(),
        }
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            CloudErrorKind::Unreachable | CloudErrorKind::Throttled | CloudErrorKind::Server
        )
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == CloudErrorKind::NotFound
    }

    fn no_cold_tier(op: &'static str, name: &str) -> Self {
        Self::new(
            CloudErrorKind::NoColdTier,
            op,
            name,
            "this cloud has no cold tier (set cold-class for aws, cold-dir for dir)",
        )
    }
}

pub type CloudResult<T> = Result<T, CloudError>;

/// The largest object latus reads from the cloud (a chunk is at most
/// 4 MiB; a chunk list stored apart, for files of up to about 2.5 TiB, at
/// most this). A larger body is refused before it is read.
pub const MAX_OBJECT: u64 = 256 << 20;
/// Lines about unusable records a cloud sends (see `log_budget`).
pub(crate) static UNUSABLE_RECORDS: crate::log_budget::LogBudget =
    crate::log_budget::LogBudget::new("unusable log records", 10);

/// The largest log record latus reads (DynamoDB items are at most 400 KB).
/// A larger or malformed record is returned with an empty payload, which
/// no reader opens: it is skipped with a log line, never a halt.
pub const MAX_RECORD: usize = 512 << 10;

impl LogRecord {
    /// Record `mivui` as the log holds it, but unusable (malformed, too
    /// large): readers skip it.
    pub fn unusable(mivui: u64) -> Self {
        Self {
            mivui,
            originator: Uuid::nil(),
            payload: Vec::new(),
        }
    }
}

/// Sealed objects by name. Names are lowercase hex or `volume`; backends
/// may add a prefix.
pub trait ObjectStore: Send + Sync {
    /// Stores `data` under `name`, replacing any object of that name.
    fn put(&self, name: &str, data: &[u8]) -> CloudResult<()>;
    /// The whole object; `NotFound` if there is none.
    fn get(&self, name: &str) -> CloudResult<Vec<u8>>;
    /// The stored length of the object, `None` if there is none: a
    /// presence confirmed with its length (a provider that keeps a
    /// truncated object under the name is not taken as having it).
    fn size(&self, name: &str) -> CloudResult<Option<u64>>;
    /// Removes the object; removing a missing object is not an error.
    fn delete(&self, name: &str) -> CloudResult<()>;
    /// Every object name (without the backend's prefix).
    fn list(&self) -> CloudResult<Vec<String>>;

    /// The stored length and the tier of the object, `None` if there is
    /// none. A store without a cold tier has every object hot.
    fn stat(&self, name: &str) -> CloudResult<Option<ObjectStat>> {
        Ok(self.size(name)?.map(|size| ObjectStat {
            size,
            tier: Tier::Hot,
        }))
    }

    /// Moves the object to the cold tier (no-op if it is there). Only
    /// returns once the cold copy is the one stored.
    fn to_cold(&self, name: &str) -> CloudResult<()> {
        Err(CloudError::no_cold_tier("to_cold", name))
    }

    /// Moves the object back to the hot tier (no-op if it is there). An
    /// object that must be restored first fails with `Frozen` (and a
    /// restore is requested).
    fn to_hot(&self, name: &str) -> CloudResult<()> {
        match self.stat(name)? {
            Some(ObjectStat {
                tier: Tier::Hot, ..
            }) => Ok(()),
            Some(_) => Err(CloudError::no_cold_tier("to_hot", name)),
            None => Err(CloudError::new(
                CloudErrorKind::NotFound,
                "to_hot",
                name,
                "no such object",
            )),
        }
    }

    /// Asks for a cold object to become readable; returns its tier after
    /// the request (`Thawing` while a restore runs, else readable).
    fn thaw(&self, name: &str) -> CloudResult<Tier> {
        Ok(self.stat(name)?.map_or(Tier::Hot, |s| s.tier))
    }

    /// Roughly how long a restore takes here, for people.
    fn thaw_wait(&self) -> &'static str {
        "at once"
    }
}

/// One record of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub mivui: u64,
    pub originator: Uuid,
    /// Sealed event payload.
    pub payload: Vec<u8>,
}

/// The volume's event log: one ordered sequence shared by every node.
///
/// Numbers are dense: the log assigns `highest + 1`, so a number is only
/// ever written once every lower one is. `read_after` never shows a number
/// while a lower one can still appear: it returns a gapless run starting at
/// `after + 1` and stops before a number that is not there (yet), so a
/// reader may advance its cursor to the last record it got and never miss
/// one. (Exception: the `aws` backend's logs written before numbers became
/// dense may have permanent holes, all at or below their old counter item;
/// `read_after` steps over those.)
pub trait EventLog: Send + Sync {
    /// Appends a record and returns the `mivui` the log assigned, strictly
    /// greater than every earlier one (across all nodes and processes).
    fn append(&self, originator: Uuid, payload: &[u8]) -> CloudResult<u64>;

    /// Appends `payloads` in order under consecutive numbers, which it
    /// returns (none for an empty slice). Backends make the batch atomic:
    /// - `aws` writes each run of up to 100 records (and 3.5 MB) in one
    ///   transaction: all or nothing visible. A longer batch is several
    ///   runs, each consecutive, with increasing numbers but possibly other
    ///   nodes' records between them; an error after the first run does not
    ///   mean that nothing was appended (the caller finds its records by
    ///   reading them back).
    /// - `dir` writes the records in order under one lock: a reader may see
    ///   a prefix of a batch in progress, and a crash midway leaves a prefix
    ///   in the log.
    ///
    /// This default appends one by one: not atomic, and other nodes'
    /// records may come in between. Wrappers must forward it.
    fn append_batch(&self, originator: Uuid, payloads: &[Vec<u8>]) -> CloudResult<Vec<u64>> {
        payloads
            .iter()
            .map(|payload| self.append(originator, payload))
            .collect()
    }

    /// Records with `mivui > after`, oldest first, at most `limit`.
    fn read_after(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>>;
}

/// A volume's two remote halves.
#[derive(Clone)]
pub struct Cloud {
    pub objects: Arc<dyn ObjectStore>,
    pub log: Arc<dyn EventLog>,
}

#[derive(Debug, Error)]
pub enum CloudUrlError {
    #[error("cloud URL {0:?}: expected dir:PATH or aws://BUCKET?table=TABLE[&prefix=P][&region=R]")]
    Malformed(String),
    #[error("cloud URL {url:?}: {reason}")]
    Invalid { url: String, reason: String },
}

/// A parsed cloud URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudUrl {
    Dir(std::path::PathBuf),
    Aws(AwsTarget),
}

impl CloudUrl {
    pub fn parse(url: &str) -> Result<Self, CloudUrlError> {
        if let Some(path) = url.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(CloudUrlError::Malformed(url.to_string()));
            }
            return Ok(CloudUrl::Dir(path.into()));
        }
        if let Some(rest) = url.strip_prefix("aws://") {
            return AwsTarget::parse(url, rest).map(CloudUrl::Aws);
        }
        Err(CloudUrlError::Malformed(url.to_string()))
    }
}

/// Opens the object store a URL names. `create` makes the bucket or the
/// folder when missing (at `init`) and adds a line to `created` saying so.
/// `cold` configures the store's cold tier.
pub fn connect_objects(
    url: &CloudUrl,
    create: bool,
    created: &mut Vec<String>,
    cold: &ColdSettings,
) -> CloudResult<Arc<dyn ObjectStore>> {
    Ok(match url {
        CloudUrl::Dir(path) => Arc::new(
            DirObjectStore::open(path, create, created)?.with_cold_dir(cold.cold_dir.clone()),
        ),
        CloudUrl::Aws(target) => {
            Arc::new(AwsObjectStore::open(target, create, created)?.with_cold(cold))
        }
    })
}

/// Opens the event log of volume `volume_id` (one DynamoDB partition, or
/// one folder of the `dir` cloud). `create` makes the table when missing.
pub fn connect_log(
    url: &CloudUrl,
    volume_id: Uuid,
    create: bool,
    created: &mut Vec<String>,
) -> CloudResult<Arc<dyn EventLog>> {
    Ok(match url {
        CloudUrl::Dir(path) => Arc::new(DirEventLog::open(path, volume_id, create, created)?),
        CloudUrl::Aws(target) => Arc::new(AwsEventLog::open(target, volume_id, create, created)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_what_is_expected() {
        assert_eq!(
            CloudUrl::parse("dir:/x/y").unwrap(),
            CloudUrl::Dir("/x/y".into())
        );
        let CloudUrl::Aws(t) =
            CloudUrl::parse("aws://b?table=t&prefix=p/&region=eu-west-1").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (t.bucket.as_str(), t.table.as_str(), t.prefix.as_str()),
            ("b", "t", "p/")
        );
        assert_eq!(t.region.as_deref(), Some("eu-west-1"));
        assert!(CloudUrl::parse("aws://b").is_err());
        assert!(
            CloudUrl::parse("s3://b")
                .unwrap_err()
                .to_string()
                .contains("expected")
        );
    }
}
