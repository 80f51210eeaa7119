//! The `aws` cloud: objects in S3, the event log in DynamoDB, through the
//! official SDK. Credentials and region come from the standard AWS chain;
//! endpoints from `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` /
//! `AWS_ENDPOINT_URL_DYNAMODB` (read by the SDK itself), so any
//! S3-compatible store and DynamoDB-compatible table works.
//!
//! The event table: partition key `volume` (S, the volume id), sort key
//! `mivui` (N). Every item with `mivui > 0` is a record with `originator`
//! (S, a node id) and `payload` (B, sealed). Nothing else is stored: no
//! metadata, tags or content types that could carry information.
//!
//! Appending keeps the numbers dense. An appender asks for the highest
//! number (a consistent Query, newest first, one item) and writes
//! `highest+1` on condition that it is free (`attribute_not_exists`); a
//! batch writes `highest+1..=highest+n` in one TransactWriteItems, all or
//! nothing. When another node took a number first, it asks again and
//! retries (at most `MAX_CLAIMS` times, with a jittered pause). So a number
//! is written only after every lower one was. A Query is only
//! read-committed against a transaction (it may see some of its items and
//! not yet the others), so `read_after` stops before the first missing
//! number: it is being written, and the next read gets it.
//!
//! A write whose answer was lost (timeout, cut connection) is sent again;
//! if the number is then taken, the record there is read (consistently):
//! our originator and payload mean our earlier attempt landed. A
//! transaction also carries a ClientRequestToken, with which DynamoDB
//! itself answers a resent transaction that landed with success.
//!
//! Stores that do not take TransactWriteItems (dynalite, ScyllaDB
//! Alternator) refuse the first batch; from then on each record of a batch
//! is written alone with the same conditional put, at the number after the
//! one just written (asking for the highest only when that one is taken).
//! The numbers stay dense; a batch cut short by a failure is partly in the
//! log, which the uploader reads back before it appends again, as for any
//! append whose answer was lost.
//!
//! Logs written by earlier versions have an item `mivui = 0`: a counter
//! (attribute `next`, the last number it handed out) under which numbers
//! could be skipped for good. It is only read now: new numbers go above
//! it, and `read_after` steps over missing numbers at or below it. (Nodes
//! of an earlier version must not append to a log that this one appends
//! to: they take numbers from the counter.)
//!
//! Retries: the SDK's own retries are off; every call goes through
//! `retrying`, which retries the errors `CloudError::is_retryable` names
//! (up to `MAX_ATTEMPTS`, exponential backoff with jitter, capped), so the
//! caller sees the same classification that decided the retries, and a
//! download cut mid-body is retried too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::error::TransactionCanceledException;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TableStatus, TransactWriteItem,
};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{Blob, ByteStream};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, GlacierJobParameters, MetadataDirective,
    RestoreRequest, StorageClass, Tier as S3Tier,
};
use tokio::runtime::Runtime;
use uuid::Uuid;

use super::{
    CloudError, CloudErrorKind, CloudResult, CloudUrlError, ColdSettings, EventLog, LogRecord,
    ObjectStat, ObjectStore, Tier,
};

/// Tries per call, the first included.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// No new attempt starts after a call has taken this long: a server that
/// stopped answering is reported (and the pass retried later), not waited
/// for attempt after attempt.
const RETRY_BUDGET: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of one S3 call, transfer included (objects are chunks of a
/// few MiB).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
/// One attempt of one DynamoDB call: small requests, so a server that
/// stopped answering is given up on soon (and retried), not after minutes.
const DB_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte for this long: the connection stopped answering (a half-open
/// connection, a stuck proxy) and is abandoned, whatever the transfer.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `init` waits for a new table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Records per transaction: DynamoDB's limit on its actions.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Bytes of items per transaction: DynamoDB allows 4 MB; room is left for
/// its way of counting.
const MAX_TRANSACTION_BYTES: usize = 3_500_000;
/// DynamoDB's limit on one item (its attribute names and values).
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// What an item holds besides its payload, counted generously: attribute
/// names, volume id, number, originator.
const ITEM_OVERHEAD: usize = 128;
/// Times an append takes the next number and finds it taken by another
/// writer before it gives up (a retryable error).
const MAX_CLAIMS: u32 = 40;
const FIRST_CLAIM_PAUSE: Duration = Duration::from_millis(5);
const MAX_CLAIM_PAUSE: Duration = Duration::from_millis(250);

/// Where a volume lives: `aws://BUCKET?table=TABLE[&prefix=P][&region=R]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsTarget {
    pub bucket: String,
    pub table: String,
    /// Prepended to every object key; a non-empty prefix ends with `/`.
    pub prefix: String,
    /// Overrides the region of the standard chain.
    pub region: Option<String>,
}

impl AwsTarget {
    /// Parses what follows `aws://` in `url`.
    pub fn parse(url: &str, rest: &str) -> Result<Self, CloudUrlError> {
        let invalid = |reason: String| CloudUrlError::Invalid {
            url: url.to_string(),
            reason,
        };
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        if bucket.is_empty() || bucket.contains('/') {
            return Err(CloudUrlError::Malformed(url.to_string()));
        }
        let (mut table, mut prefix, mut region) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "table" => &mut table,
                "prefix" => &mut prefix,
                "region" => &mut region,
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {key:?} (known: table, prefix, region)"
                    )));
                }
            };
            if value.is_empty() {
                return Err(invalid(format!("{key}= needs a value")));
            }
            if slot.replace(value.to_string()).is_some() {
                return Err(invalid(format!("{key}= is given twice")));
            }
        }
        let table = table.ok_or_else(|| {
            invalid("table= is required (the DynamoDB table of the event log)".into())
        })?;
        let mut prefix = prefix.unwrap_or_default();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            bucket: bucket.to_string(),
            table,
            prefix,
            region,
        })
    }
}

/// What both halves need: a runtime to block on and the loaded SDK config.
struct Setup {
    rt: Runtime,
    sdk: SdkConfig,
}

impl Setup {
    /// `endpoint` overrides the environment's (tests only).
    fn load(target: &AwsTarget, endpoint: Option<&str>) -> CloudResult<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("latus-aws")
            .enable_all()
            .build()
            .map_err(|e| {
                CloudError::new(
                    CloudErrorKind::Rejected,
                    "open",
                    &target.bucket,
                    format!("cannot start a runtime: {e}"),
                )
            })?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &target.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = rt.block_on(loader.load());
        if sdk.region().is_none() {
            return Err(CloudError::new(
                CloudErrorKind::Rejected,
                "open",
                &target.bucket,
                "no AWS region: set AWS_REGION, a region in ~/.aws/config, or region= in the cloud URL",
            ));
        }
        Ok(Self { rt, sdk })
    }

    /// Whether S3 is reached through a custom endpoint, which then gets
    /// path-style addressing (most S3-compatible servers need it).
    fn custom_s3_endpoint(&self) -> bool {
        self.sdk.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty())
    }
}

/// At `open` without `create`: a definite answer (missing, refused) is an
/// error; an unreachable cloud is not, so a node can start offline.
fn tolerate_offline(result: CloudResult<()>) -> CloudResult<()> {
    match result {
        Err(e) if e.is_retryable() => {
            tracing::warn!("cannot check the cloud now, going on: {e}");
            Ok(())
        }
        other => other,
    }
}

pub struct AwsObjectStore {
    rt: Runtime,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// `max-keys` of each listing page; the server's default when `None`.
    list_page: Option<i32>,
    /// The cold tier's storage class and restores.
    cold: ColdSettings,
}

impl AwsObjectStore {
    /// Opens the bucket; with `create`, makes it when missing.
    pub fn open(target: &AwsTarget, create: bool, created: &mut Vec<String>) -> CloudResult<Self> {
        Self::open_at(target, create, created, None)
    }

    fn open_at(
        target: &AwsTarget,
        create: bool,
        created: &mut Vec<String>,
        endpoint: Option<&str>,
    ) -> CloudResult<Self> {
        let setup = Setup::load(target, endpoint)?;
        let config = aws_sdk_s3::config::Builder::from(&setup.sdk)
            .force_path_style(setup.custom_s3_endpoint())
            .interceptor(super::requests::CountRequests)
            .build();
        let store = Self {
            s3: aws_sdk_s3::Client::from_conf(config),
            rt: setup.rt,
            bucket: target.bucket.clone(),
            prefix: target.prefix.clone(),
            list_page: None,
            cold: ColdSettings::default(),
        };
        if create {
            store
                .rt
                .block_on(store.create_bucket(setup.sdk.region(), created))?;
        } else {
            tolerate_offline(store.rt.block_on(store.head_bucket()))?;
        }
        Ok(store)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Sets the cold tier's storage class and restore settings.
    pub fn with_cold(mut self, cold: &ColdSettings) -> Self {
        self.cold = cold.clone();
        self
    }

    /// Copies the object onto itself with storage class `class` (S3 keeps
    /// the old object until the copy is complete).
    async fn copy_to_class(
        &self,
        op: &'static str,
        name: &str,
        class: StorageClass,
    ) -> CloudResult<()> {
        let source = format!("{}/{}", self.bucket, percent_encode_key(&self.key(name)));
        self.s3
            .copy_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .copy_source(source)
            .storage_class(class)
            .metadata_directive(MetadataDirective::Copy)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error(e, op, self.what(name)))
    }

    async fn head(&self, name: &str) -> CloudResult<Option<ObjectStat>> {
        let head = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(|e| sdk_error(e, "size", self.what(name)));
        let h = match head {
            Ok(h) => h,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = h
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| malformed("size", self.what(name), "an object of no stated length"))?;
        let tier = tier_of(h.storage_class(), h.restore());
        Ok(Some(ObjectStat { size, tier }))
    }

    async fn restore(&self, name: &str) -> CloudResult<()> {
        let job = GlacierJobParameters::builder()
            .tier(S3Tier::from(self.cold.tier().as_str()))
            .build()
            .map_err(|e| malformed("thaw", self.what(name), e.to_string()))?;
        let request = RestoreRequest::builder()
            .days(self.cold.days() as i32)
            .glacier_job_parameters(job)
            .build();
        match self
            .s3
            .restore_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("RestoreAlreadyInProgress") => Ok(()),
            Err(e) => Err(sdk_error(e, "thaw", self.what(name))),
        }
    }

    fn what(&self, name: &str) -> String {
        format!("s3://{}/{}{name}", self.bucket, self.prefix)
    }

    /// One try: at `open`, an offline node must not wait for retries.
    async fn head_bucket(&self) -> CloudResult<()> {
        self.s3
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error(e, "open", format!("bucket {}", self.bucket)))
    }

    async fn create_bucket(
        &self,
        region: Option<&Region>,
        created: &mut Vec<String>,
    ) -> CloudResult<()> {
        match retrying(|| self.head_bucket()).await {
            Err(e) if e.is_not_found() => {}
            other => return other,
        }
        let mut request = self.s3.create_bucket().bucket(&self.bucket);
        // us-east-1 is the default location and must not be named.
        if let Some(region) = region.map(Region::as_ref).filter(|r| *r != "us-east-1") {
            let location = CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build();
            request = request.create_bucket_configuration(location);
        }
        match retrying(|| async {
            request
                .clone()
                .send()
                .await
                .map(drop)
                .map_err(|e| sdk_error(e, "create", format!("bucket {}", self.bucket)))
        })
        .await
        {
            Ok(()) => {
                created.push(format!("created bucket {}", self.bucket));
                Ok(())
            }
            // Another node made it meanwhile.
            Err(e) if e.message.starts_with("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn get_once(&self, name: &str) -> CloudResult<Vec<u8>> {
        let response = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(|e| sdk_error(e, "get", self.what(name)))?;
        // Refused before the body is read: a provider cannot exhaust the
        // daemon's memory (the daemon is the filesystem).
        let length = response.content_length().unwrap_or(-1);
        if length < 0 || length as u64 > super::MAX_OBJECT {
            return Err(CloudError::new(
                CloudErrorKind::Rejected,
                "get",
                self.what(name),
                format!(
                    "the object is {length} bytes, larger than any latus object (or of no stated length)"
                ),
            ));
        }
        let body = response.body.collect().await.map_err(|e| {
            CloudError::new(
                CloudErrorKind::Unreachable,
                "get",
                self.what(name),
                format!("download cut short: {}", DisplayErrorContext(&e)),
            )
        })?;
        Ok(body.into_bytes().to_vec())
    }

    async fn list_all(&self) -> CloudResult<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_max_keys(self.list_page)
                .set_continuation_token(token.clone());
            let page = retrying(|| async {
                request.clone().send().await.map_err(|e| {
                    sdk_error(e, "list", format!("s3://{}/{}", self.bucket, self.prefix))
                })
            })
            .await?;
            let keys = page.contents().iter().filter_map(|o| o.key());
            names.extend(
                keys.filter_map(|k| k.strip_prefix(self.prefix.as_str()))
                    .map(str::to_string),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(names),
            }
        }
    }
}

impl ObjectStore for AwsObjectStore {
    fn put(&self, name: &str, data: &[u8]) -> CloudResult<()> {
        self.rt.block_on(retrying(|| async {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .body(ByteStream::from(data.to_vec()))
                .send()
                .await
                .map(drop)
                .map_err(|e| sdk_error(e, "put", self.what(name)))
        }))
    }

    fn get(&self, name: &str) -> CloudResult<Vec<u8>> {
        self.rt.block_on(retrying(|| self.get_once(name)))
    }

    fn size(&self, name: &str) -> CloudResult<Option<u64>> {
        Ok(self.stat(name)?.map(|s| s.size))
    }

    fn delete(&self, name: &str) -> CloudResult<()> {
        self.rt.block_on(retrying(|| async {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .send()
                .await
                .map(drop)
                .map_err(|e| sdk_error(e, "delete", self.what(name)))
        }))
    }

    fn list(&self) -> CloudResult<Vec<String>> {
        self.rt.block_on(self.list_all())
    }

    fn stat(&self, name: &str) -> CloudResult<Option<ObjectStat>> {
        self.rt.block_on(retrying(|| self.head(name)))
    }

    fn to_cold(&self, name: &str) -> CloudResult<()> {
        let class = StorageClass::from(self.cold.class().as_str());
        match self.stat(name)? {
            None => Err(CloudError::new(
                CloudErrorKind::NotFound,
                "to_cold",
                self.what(name),
                "no such object",
            )),
            Some(s) if s.tier.is_cold() => Ok(()),
            Some(_) => self.rt.block_on(retrying(|| {
                self.copy_to_class("to_cold", name, class.clone())
            })),
        }
    }

    /// An archived object is copied back only once restored: until then
    /// this requests the restore and fails with `Frozen`.
    fn to_hot(&self, name: &str) -> CloudResult<()> {
        match self.stat(name)? {
            None => Err(CloudError::new(
                CloudErrorKind::NotFound,
                "to_hot",
                self.what(name),
                "no such object",
            )),
            Some(s) if s.tier == Tier::Hot => Ok(()),
            Some(s) if s.tier.readable() => self.rt.block_on(retrying(|| {
                self.copy_to_class("to_hot", name, StorageClass::Standard)
            })),
            Some(_) => {
                self.thaw(name)?;
                Err(CloudError::new(
                    CloudErrorKind::Frozen,
                    "to_hot",
                    self.what(name),
                    format!(
                        "being restored from cold storage (ready in about {})",
                        self.thaw_wait()
                    ),
                ))
            }
        }
    }

    fn thaw(&self, name: &str) -> CloudResult<Tier> {
        match self.stat(name)? {
            Some(s) if s.tier == Tier::Frozen => {
                self.rt.block_on(retrying(|| self.restore(name)))?;
                Ok(self.stat(name)?.map_or(Tier::Thawing, |s| s.tier))
            }
            Some(s) => Ok(s.tier),
            None => Err(CloudError::new(
                CloudErrorKind::NotFound,
                "thaw",
                self.what(name),
                "no such object",
            )),
        }
    }

    fn thaw_wait(&self) -> &'static str {
        self.cold.tier().typical_wait(self.cold.class())
    }
}

/// The tier of an object from HeadObject's storage class and restore
/// status (`x-amz-restore: ongoing-request="true"` while it runs, `"false"`
/// with an expiry date once the restored copy is readable).
fn tier_of(class: Option<&StorageClass>, restore: Option<&str>) -> Tier {
    match class.map(StorageClass::as_str) {
        None | Some("STANDARD") => Tier::Hot,
        Some("GLACIER") | Some("DEEP_ARCHIVE") => match restore {
            Some(r) if r.contains("ongoing-request=\"true\"") => Tier::Thawing,
            Some(r) if r.contains("ongoing-request=\"false\"") => Tier::Ready,
            _ => Tier::Frozen,
        },
        // GLACIER_IR and the infrequent-access classes read at once.
        Some(_) => Tier::Cold,
    }
}

/// `x-amz-copy-source` names the key URL-encoded (`/` kept).
fn percent_encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

type Item = HashMap<String, AttributeValue>;

pub struct AwsEventLog {
    rt: Runtime,
    db: aws_sdk_dynamodb::Client,
    table: String,
    volume: String,
    /// `Limit` of each Query page; the server's 1 MB pages when `None`.
    query_page: Option<usize>,
    /// The legacy counter item's value (0 when there is none), once read.
    legacy_counter: OnceLock<u64>,
    /// Whether the store takes TransactWriteItems (until it refuses one).
    transactions: AtomicBool,
    /// Tests: the next this many writes take effect but lose their answer.
    #[cfg(test)]
    lose_replies: std::sync::atomic::AtomicU32,
    /// Tests: the next this many writes fail before they are sent.
    #[cfg(test)]
    fail_sends: std::sync::atomic::AtomicU32,
}

impl AwsEventLog {
    /// Opens the volume's log; with `create`, makes the table when missing.
    pub fn open(
        target: &AwsTarget,
        volume_id: Uuid,
        create: bool,
        created: &mut Vec<String>,
    ) -> CloudResult<Self> {
        Self::open_at(target, volume_id, create, created, None)
    }

    fn open_at(
        target: &AwsTarget,
        volume_id: Uuid,
        create: bool,
        created: &mut Vec<String>,
        endpoint: Option<&str>,
    ) -> CloudResult<Self> {
        let setup = Setup::load(target, endpoint)?;
        let log = Self {
            db: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&setup.sdk)
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(CONNECT_TIMEOUT)
                            .read_timeout(READ_TIMEOUT)
                            .operation_attempt_timeout(DB_ATTEMPT_TIMEOUT)
                            .build(),
                    )
                    .interceptor(super::requests::CountRequests)
                    .build(),
            ),
            rt: setup.rt,
            table: target.table.clone(),
            volume: volume_id.to_string(),
            query_page: None,
            legacy_counter: OnceLock::new(),
            transactions: AtomicBool::new(true),
            #[cfg(test)]
            lose_replies: Default::default(),
            #[cfg(test)]
            fail_sends: Default::default(),
        };
        if create {
            log.rt.block_on(log.create_table(created))?;
        } else {
            tolerate_offline(log.rt.block_on(log.check_table()).map(drop))?;
        }
        Ok(log)
    }

    fn what(&self) -> String {
        format!("table {} volume {}", self.table, self.volume)
    }

    fn volume_key(&self, mivui: u64) -> Item {
        HashMap::from([
            ("volume".to_string(), AttributeValue::S(self.volume.clone())),
            ("mivui".to_string(), AttributeValue::N(mivui.to_string())),
        ])
    }

    /// The table's status, after checking its key schema. One try, like
    /// `AwsObjectStore::head_bucket`.
    async fn check_table(&self) -> CloudResult<Option<TableStatus>> {
        let described = self
            .db
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error(e, "open", format!("table {}", self.table)))?;
        let Some(table) = described.table() else {
            return Ok(None);
        };
        let keys: Vec<_> = table
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().clone()))
            .collect();
        if keys != [("volume", KeyType::Hash), ("mivui", KeyType::Range)] {
            return Err(CloudError::new(
                CloudErrorKind::Rejected,
                "open",
                format!("table {}", self.table),
                format!(
                    "the table's keys are {keys:?}; latus needs partition key volume (S) and sort key mivui (N)"
                ),
            ));
        }
        Ok(table.table_status().cloned())
    }

    async fn create_table(&self, created: &mut Vec<String>) -> CloudResult<()> {
        match retrying(|| self.check_table()).await {
            Ok(Some(TableStatus::Active)) => return Ok(()),
            Ok(_) => return self.wait_active().await,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let request = self
            .db
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute("volume", ScalarAttributeType::S)?)
            .attribute_definitions(attribute("mivui", ScalarAttributeType::N)?)
            .key_schema(key_element("volume", KeyType::Hash)?)
            .key_schema(key_element("mivui", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest);
        let made = retrying(|| async {
            request
                .clone()
                .send()
                .await
                .map(drop)
                .map_err(|e| sdk_error(e, "create", format!("table {}", self.table)))
        })
        .await;
        match made {
            Ok(()) => created.push(format!("created table {}", self.table)),
            // Another node is making it.
            Err(e) if e.message.starts_with("ResourceInUseException") => {}
            Err(e) => return Err(e),
        }
        self.wait_active().await
    }

    async fn wait_active(&self) -> CloudResult<()> {
        let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
        loop {
            if retrying(|| self.check_table()).await? == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CloudError::new(
                    CloudErrorKind::Server,
                    "create",
                    format!("table {}", self.table),
                    format!("not active after {} s", TABLE_ACTIVE_TIMEOUT.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The legacy counter item's value; 0 when there is none.
    async fn read_legacy_counter(&self, op: &'static str) -> CloudResult<u64> {
        let got = retrying(|| async {
            self.db
                .get_item()
                .table_name(&self.table)
                .set_key(Some(self.volume_key(0)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error(e, op, self.what()))
        })
        .await?;
        let counter = match got.item() {
            None => 0,
            Some(item) => item
                .get("next")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    malformed(op, self.what(), "item 0 (the old counter) holds no number")
                })?,
        };
        Ok(*self.legacy_counter.get_or_init(|| counter))
    }

    /// The number that new records go above: the legacy counter's, read
    /// once (nothing moves it any more).
    async fn legacy_floor(&self) -> CloudResult<u64> {
        match self.legacy_counter.get() {
            Some(&counter) => Ok(counter),
            None => self.read_legacy_counter("append").await,
        }
    }

    /// The highest record number; 0 when there is none.
    async fn highest(&self) -> CloudResult<u64> {
        let request = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("#volume = :volume AND #mivui > :zero")
            .expression_attribute_names("#volume", "volume")
            .expression_attribute_names("#mivui", "mivui")
            .expression_attribute_values(":volume", AttributeValue::S(self.volume.clone()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .projection_expression("#mivui")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true);
        let page = retrying(|| async {
            #[cfg(test)]
            let _shared = moto_isolation().read().await;
            request
                .clone()
                .send()
                .await
                .map_err(|e| sdk_error(e, "append", self.what()))
        })
        .await?;
        let Some(item) = page.items().first() else {
            return Ok(0);
        };
        item.get("mivui")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed("append", self.what(), "an item without a mivui"))
    }

    fn record_item(&self, mivui: u64, originator: Uuid, payload: &[u8]) -> Item {
        let mut item = self.volume_key(mivui);
        item.insert(
            "originator".into(),
            AttributeValue::S(originator.to_string()),
        );
        item.insert("payload".into(), AttributeValue::B(Blob::new(payload)));
        item
    }

    /// Writes record `mivui`; false if an item with that number exists (or
    /// is being written by a transaction).
    async fn put_record(&self, mivui: u64, originator: Uuid, payload: &[u8]) -> CloudResult<bool> {
        let put = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.record_item(mivui, originator, payload)))
            .condition_expression("attribute_not_exists(#mivui)")
            .expression_attribute_names("#mivui", "mivui")
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_conditional_check_failed_exception()
                        || e.is_transaction_conflict_exception()
                }) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(e, "append", self.what())),
        }
    }

    /// Writes records `first, first+1, ...` in one transaction; false if
    /// one of those numbers is taken (or being written). `token` makes a
    /// resent transaction that landed succeed again.
    async fn transact_records(
        &self,
        first: u64,
        originator: Uuid,
        payloads: &[&[u8]],
        token: &str,
    ) -> CloudResult<bool> {
        let items = payloads
            .iter()
            .zip(first..)
            .map(|(payload, mivui)| {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(self.record_item(mivui, originator, payload)))
                    .condition_expression("attribute_not_exists(#mivui)")
                    .expression_attribute_names("#mivui", "mivui")
                    .build()
                    .map_err(|e| malformed("append", self.what(), e.to_string()))?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect::<CloudResult<Vec<_>>>()?;
        let sent = self
            .db
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    self.cancelled(cancelled)
                }
                // Our earlier attempt (same token) is still under way.
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                    Err(CloudError::new(
                        CloudErrorKind::Server,
                        "append",
                        self.what(),
                        "an earlier attempt of this transaction is still in progress",
                    ))
                }
                _ if transactions_unsupported(e.code(), e.message()) => {
                    if self.transactions.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            table = %self.table,
                            "the DynamoDB-compatible store does not take TransactWriteItems: \
                             appending records one at a time"
                        );
                    }
                    Err(CloudError::new(
                        CloudErrorKind::Rejected,
                        "append",
                        self.what(),
                        "the store does not take TransactWriteItems",
                    ))
                }
                _ => Err(sdk_error(e, "append", self.what())),
            },
        }
    }

    /// What a cancelled transaction means: false when a number was taken
    /// (or is being written by another transaction), else an error.
    fn cancelled(&self, cancelled: &TransactionCanceledException) -> CloudResult<bool> {
        let codes: Vec<&str> = cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|r| r.code())
            .filter(|code| *code != "None")
            .collect();
        let any = |wanted: &[&str]| codes.iter().any(|code| wanted.contains(code));
        if any(&["ConditionalCheckFailed", "TransactionConflict"]) {
            return Ok(false);
        }
        let kind = if any(&[
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
            "RequestLimitExceeded",
        ]) {
            CloudErrorKind::Throttled
        } else {
            CloudErrorKind::Rejected
        };
        Err(CloudError::new(
            kind,
            "append",
            self.what(),
            format!(
                "transaction cancelled ({}): {}",
                codes.join(", "),
                cancelled.message().unwrap_or_default()
            ),
        ))
    }

    /// One attempt to write `payloads` at `first, first+1, ...`: one
    /// conditional put for a single record, a transaction for more.
    async fn write_once(
        &self,
        first: u64,
        originator: Uuid,
        payloads: &[&[u8]],
        token: &str,
    ) -> CloudResult<bool> {
        #[cfg(test)]
        let _alone = moto_isolation().write().await;
        #[cfg(test)]
        if take_one(&self.fail_sends) {
            return Err(CloudError::new(
                CloudErrorKind::Unreachable,
                "append",
                self.what(),
                "not sent (test)",
            ));
        }
        let written = match payloads {
            [payload] => self.put_record(first, originator, payload).await?,
            _ => {
                self.transact_records(first, originator, payloads, token)
                    .await?
            }
        };
        #[cfg(test)]
        if written && take_one(&self.lose_replies) {
            return Err(CloudError::new(
                CloudErrorKind::Unreachable,
                "append",
                self.what(),
                "the answer was lost (test)",
            ));
        }
        Ok(written)
    }

    /// Writes `payloads` (one transaction's worth at most) at `first, first+1,
    /// ...`, retrying failures that can pass. True when they are there,
    /// written now or by an attempt whose answer was lost; false when
    /// another record holds one of those numbers.
    async fn claim(&self, first: u64, originator: Uuid, payloads: &[&[u8]]) -> CloudResult<bool> {
        let token = Uuid::new_v4().to_string();
        let unsure = AtomicBool::new(false);
        let written = retrying(|| async {
            let result = self.write_once(first, originator, payloads, &token).await;
            if result.as_ref().is_err_and(CloudError::is_retryable) {
                unsure.store(true, Ordering::Relaxed);
            }
            result
        })
        .await?;
        if written || !unsure.load(Ordering::Relaxed) {
            return Ok(written);
        }
        // An attempt that failed may have landed: then the number is ours.
        // The records went in together, so the first one tells.
        Ok(matches!(
            self.get_record(first).await?,
            Some(r) if r.originator == originator && r.payload == payloads[0]
        ))
    }

    async fn get_record(&self, mivui: u64) -> CloudResult<Option<LogRecord>> {
        let got = retrying(|| async {
            #[cfg(test)]
            let _shared = moto_isolation().read().await;
            self.db
                .get_item()
                .table_name(&self.table)
                .set_key(Some(self.volume_key(mivui)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_error(e, "append", self.what()))
        })
        .await?;
        got.item()
            .map(|item| decode(item).map_err(|m| malformed("append", self.what(), m)))
            .transpose()
    }

    /// Appends one transaction's worth of records at the next free
    /// numbers; returns the first.
    async fn append_run(&self, originator: Uuid, payloads: &[&[u8]]) -> CloudResult<u64> {
        let floor = self.legacy_floor().await?;
        for claim in 1..=MAX_CLAIMS {
            if claim > 1 {
                tokio::time::sleep(claim_pause(claim - 1)).await;
            }
            // A log at the end of the numbers (a hostile server) takes no more.
            let first = self
                .highest()
                .await?
                .max(floor)
                .checked_add(1)
                .ok_or_else(|| {
                    malformed("append", self.what(), "the log's numbers are exhausted")
                })?;
            if self.claim(first, originator, payloads).await? {
                return Ok(first);
            }
            #[cfg(test)]
            TAKEN_FIRST.fetch_add(1, Ordering::Relaxed);
        }
        Err(CloudError::new(
            CloudErrorKind::Throttled,
            "append",
            self.what(),
            format!("other writers took the next number first {MAX_CLAIMS} times in a row"),
        ))
    }

    async fn append_async(&self, originator: Uuid, payloads: &[&[u8]]) -> CloudResult<Vec<u64>> {
        if let Some(big) = payloads
            .iter()
            .find(|p| p.len() + ITEM_OVERHEAD > MAX_ITEM_BYTES)
        {
            return Err(CloudError::new(
                CloudErrorKind::Rejected,
                "append",
                self.what(),
                format!(
                    "a record of {} bytes does not fit in a DynamoDB item ({MAX_ITEM_BYTES} bytes at most)",
                    big.len()
                ),
            ));
        }
        let mut numbers = Vec::with_capacity(payloads.len());
        for run in runs(payloads) {
            if run.len() > 1 && !self.transactions.load(Ordering::Relaxed) {
                numbers.extend(self.append_singly(originator, run).await?);
                continue;
            }
            match self.append_run(originator, run).await {
                Ok(first) => numbers.extend((first..).take(run.len())),
                // Refused as unsupported: nothing of the run was written.
                Err(_) if run.len() > 1 && !self.transactions.load(Ordering::Relaxed) => {
                    numbers.extend(self.append_singly(originator, run).await?);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(numbers)
    }

    /// Appends each record alone (for stores without transactions), at
    /// the number after the one just written while it is free.
    async fn append_singly(&self, originator: Uuid, payloads: &[&[u8]]) -> CloudResult<Vec<u64>> {
        let mut numbers = Vec::with_capacity(payloads.len());
        let mut next: Option<u64> = None;
        for payload in payloads {
            let mivui = match next {
                Some(n) if self.claim(n, originator, &[payload]).await? => n,
                _ => self.append_run(originator, &[payload]).await?,
            };
            numbers.push(mivui);
            next = mivui.checked_add(1);
        }
        Ok(numbers)
    }

    /// Records after `after`, up to the first missing number (it is being
    /// written), except missing numbers at or below the legacy counter.
    async fn read_after_async(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        let mut last = after;
        while records.len() < limit {
            let want = (limit - records.len()).min(self.query_page.unwrap_or(usize::MAX));
            let request = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("#volume = :volume AND #mivui > :after")
                .expression_attribute_names("#volume", "volume")
                .expression_attribute_names("#mivui", "mivui")
                .expression_attribute_values(":volume", AttributeValue::S(self.volume.clone()))
                .expression_attribute_values(":after", AttributeValue::N(after.to_string()))
                .consistent_read(true)
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            let page = retrying(|| async {
                #[cfg(test)]
                let _shared = moto_isolation().read().await;
                request
                    .clone()
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "read", self.what()))
            })
            .await?;
            for item in page.items() {
                let record = match decode(item) {
                    Ok(r) if r.payload.len() <= super::MAX_RECORD => r,
                    Ok(r) => {
                        if super::UNUSABLE_RECORDS.allow() {
                            tracing::error!(
                                mivui = r.mivui,
                                bytes = r.payload.len(),
                                "a log record is larger than any latus record; skipped"
                            );
                        }
                        LogRecord::unusable(r.mivui)
                    }
                    Err(m) => match item_mivui(item) {
                        Some(mivui) => {
                            if super::UNUSABLE_RECORDS.allow() {
                                tracing::error!(mivui, error = %m, "a malformed log record; skipped");
                            }
                            LogRecord::unusable(mivui)
                        }
                        // Cannot be placed in the log: not a record.
                        None => {
                            if super::UNUSABLE_RECORDS.allow() {
                                tracing::error!(error = %m, "an item without a number in the log's table; ignored");
                            }
                            continue;
                        }
                    },
                };
                // Numbers last+1 ..= record.mivui-1 are missing.
                if record.mivui > last.saturating_add(1)
                    && record.mivui - 1 > self.legacy_gaps_end().await?
                {
                    return Ok(records);
                }
                last = record.mivui;
                records.push(record);
            }
            // Servers differ on whether the last page is empty: only the
            // absence of a LastEvaluatedKey ends the query.
            match page.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        records.truncate(limit);
        Ok(records)
    }

    /// The number up to which missing numbers are old holes, not records
    /// being written: the legacy counter's (0 without one). Read only when
    /// a reader meets a gap, and once.
    async fn legacy_gaps_end(&self) -> CloudResult<u64> {
        match self.legacy_counter.get() {
            Some(&counter) => Ok(counter),
            None => self.read_legacy_counter("read").await,
        }
    }
}

impl EventLog for AwsEventLog {
    fn append(&self, originator: Uuid, payload: &[u8]) -> CloudResult<u64> {
        let numbers = self
            .rt
            .block_on(self.append_async(originator, &[payload]))?;
        Ok(numbers[0])
    }

    /// Runs of up to 100 records (and 3.5 MB), one transaction each; see
    /// `EventLog::append_batch` for what a failure after the first means.
    fn append_batch(&self, originator: Uuid, payloads: &[Vec<u8>]) -> CloudResult<Vec<u64>> {
        let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.rt.block_on(self.append_async(originator, &payloads))
    }

    fn read_after(&self, after: u64, limit: usize) -> CloudResult<Vec<LogRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.rt.block_on(self.read_after_async(after, limit))
    }
}

/// Tests: moto applies a transaction's items one by one, where concurrent
/// requests see them, and undoes a cancelled one by restoring a copy of the
/// whole table, which also erases other requests' writes made meanwhile.
/// DynamoDB isolates transactions (reads see committed items only; writes
/// to an item are serialised), so the tests run each write alone. Only
/// single requests are serialised: writers still race between asking for
/// the highest number and writing the next.
/// Tests: claims that found their number taken.
#[cfg(test)]
static TAKEN_FIRST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
fn moto_isolation() -> &'static tokio::sync::RwLock<()> {
    static LOCK: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(Default::default)
}

/// Tests: whether a test hook's count was above 0 (and then decrements it).
#[cfg(test)]
fn take_one(count: &std::sync::atomic::AtomicU32) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Splits a batch into runs that each fit in one transaction.
fn runs<'a, 'p>(payloads: &'a [&'p [u8]]) -> Vec<&'a [&'p [u8]]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, payload) in payloads.iter().enumerate() {
        let size = payload.len() + ITEM_OVERHEAD;
        if i > start && (i - start == MAX_TRANSACTION_ITEMS || bytes + size > MAX_TRANSACTION_BYTES)
        {
            runs.push(&payloads[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < payloads.len() {
        runs.push(&payloads[start..]);
    }
    runs
}

/// The pause before claiming a number again after claim `claim` (1-based)
/// found it taken: random up to a bound that doubles from
/// `FIRST_CLAIM_PAUSE` to `MAX_CLAIM_PAUSE`, so writers that collided do
/// not collide again.
fn claim_pause(claim: u32) -> Duration {
    let bound = FIRST_CLAIM_PAUSE
        .saturating_mul(1 << claim.saturating_sub(1).min(16))
        .min(MAX_CLAIM_PAUSE);
    bound.mul_f64(getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64)
}

fn attribute(name: &str, kind: ScalarAttributeType) -> CloudResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|e| CloudError::new(CloudErrorKind::Rejected, "create", name, e.to_string()))
}

fn key_element(name: &str, kind: KeyType) -> CloudResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| CloudError::new(CloudErrorKind::Rejected, "create", name, e.to_string()))
}

fn item_mivui(item: &Item) -> Option<u64> {
    item.get("mivui")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

/// A record item; the counter item (no payload) is not one.
fn decode(item: &Item) -> Result<LogRecord, String> {
    let mivui = item_mivui(item).ok_or("an item without a mivui")?;
    let originator = item
        .get("originator")
        .and_then(|v| v.as_s().ok())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| format!("item {mivui} has no originator"))?;
    let payload = item
        .get("payload")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| format!("item {mivui} has no payload"))?;
    Ok(LogRecord {
        mivui,
        originator,
        payload: payload.as_ref().to_vec(),
    })
}

fn malformed(op: &'static str, what: String, message: impl Into<String>) -> CloudError {
    CloudError::new(CloudErrorKind::Rejected, op, what, message)
}

/// Runs `call` until it succeeds, fails for good, or has been tried
/// `MAX_ATTEMPTS` times.
async fn retrying<T, F, Fut>(mut call: F) -> CloudResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CloudResult<T>>,
{
    let mut attempt = 1;
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Err(e)
                if e.is_retryable()
                    && attempt < MAX_ATTEMPTS
                    && started.elapsed() < RETRY_BUDGET =>
            {
                let delay = backoff(attempt);
                tracing::debug!("retrying in {delay:?} (attempt {attempt} of {MAX_ATTEMPTS}): {e}");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The pause after failed attempt `attempt` (1-based): doubling from
/// `FIRST_BACKOFF`, capped at `MAX_BACKOFF`, then jittered down by up to
/// half so nodes that failed together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter = getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64;
    full.mul_f64(1.0 - jitter / 2.0)
}

/// Turns an SDK error into a cloud error that says what failed and whether
/// a retry can help.
fn sdk_error<E>(
    err: SdkError<E, HttpResponse>,
    op: &'static str,
    what: impl Into<String>,
) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let kind = match &err {
        SdkError::ConstructionFailure(_) => CloudErrorKind::Rejected,
        SdkError::DispatchFailure(d) if d.is_user() => CloudErrorKind::Rejected,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => CloudErrorKind::Unreachable,
        // An answer that could not be read: a proxy's page, a cut connection.
        SdkError::ResponseError(_) => match status {
            Some(status) => classify(None, status),
            None => CloudErrorKind::Unreachable,
        },
        _ => classify(err.code(), status.unwrap_or(0)),
    };
    let message = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => format!("{code} (HTTP {})", status.unwrap_or(0)),
        _ => match status {
            Some(status)
                if !matches!(
                    err,
                    SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
                ) =>
            {
                format!("HTTP {status}: {}", DisplayErrorContext(&err))
            }
            _ => DisplayErrorContext(&err).to_string(),
        },
    };
    CloudError::new(kind, op, what, message)
}

/// Whether an error answers TransactWriteItems as an operation the store
/// does not have (dynalite: UnknownOperationException; others say so in a
/// validation error).
fn transactions_unsupported(code: Option<&str>, message: Option<&str>) -> bool {
    let message = message.unwrap_or_default().to_ascii_lowercase();
    match code {
        Some("UnknownOperationException") => true,
        Some("ValidationException") => {
            message.contains("transactwriteitems")
                && (message.contains("not supported") || message.contains("unsupported"))
        }
        _ => false,
    }
}

/// Which kind of failure a service error is, from its code and HTTP status.
fn classify(code: Option<&str>, status: u16) -> CloudErrorKind {
    const THROTTLED: &[&str] = &[
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    ];
    const TIMED_OUT: &[&str] = &["RequestTimeout", "RequestTimeoutException"];
    const DENIED: &[&str] = &[
        "AccessDenied",
        "AccessDeniedException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestTimeTooSkewed",
    ];
    const NOT_FOUND: &[&str] = &[
        "NoSuchKey",
        "NoSuchBucket",
        "NotFound",
        "ResourceNotFoundException",
    ];
    // A GET (or copy) of an archived object that is not restored.
    const FROZEN: &[&str] = &["InvalidObjectState", "ObjectNotInActiveTierError"];
    let is = |codes: &[&str]| code.is_some_and(|c| codes.contains(&c));
    if is(FROZEN) {
        CloudErrorKind::Frozen
    } else if is(THROTTLED) || status == 429 || status == 503 {
        CloudErrorKind::Throttled
    } else if is(TIMED_OUT) {
        CloudErrorKind::Unreachable
    } else if status >= 500 {
        CloudErrorKind::Server
    } else if is(DENIED) || status == 403 {
        CloudErrorKind::Denied
    } else if is(NOT_FOUND) || status == 404 {
        CloudErrorKind::NotFound
    } else {
        CloudErrorKind::Rejected
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::cloud::faulty::conformance;

    #[test]
    fn storage_class_and_restore_status_say_the_tier() {
        let c = |s: &str| StorageClass::from(s);
        assert_eq!(tier_of(None, None), Tier::Hot);
        assert_eq!(tier_of(Some(&c("STANDARD")), None), Tier::Hot);
        assert_eq!(tier_of(Some(&c("GLACIER_IR")), None), Tier::Cold);
        assert_eq!(tier_of(Some(&c("GLACIER")), None), Tier::Frozen);
        assert_eq!(
            tier_of(Some(&c("DEEP_ARCHIVE")), Some("ongoing-request=\"true\"")),
            Tier::Thawing
        );
        assert_eq!(
            tier_of(
                Some(&c("GLACIER")),
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 23 Dec 2012 00:00:00 GMT\"")
            ),
            Tier::Ready
        );
        assert_eq!(
            classify(Some("InvalidObjectState"), 403),
            CloudErrorKind::Frozen
        );
        assert_eq!(percent_encode_key("p/a b+c"), "p/a%20b%2Bc");
    }

    /// Whether a local S3 + DynamoDB server is there to test against. Its
    /// absence fails the test: a skip must not hide a missing server in CI.
    fn local_server() -> bool {
        if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
            return true;
        }
        if std::env::var("LATUS_SKIP_AWS").as_deref() == Ok("1") {
            eprintln!("LATUS_SKIP_AWS=1: skipping a test of the aws backend");
            return false;
        }
        panic!(
            "AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh, which starts a local \
             S3 + DynamoDB server (or set LATUS_SKIP_AWS=1 to skip the aws backend's tests)"
        );
    }

    fn unique(what: &str) -> String {
        format!(
            "latus-test-{what}-{}",
            &Uuid::new_v4().simple().to_string()[..12]
        )
    }

    fn new_target() -> AwsTarget {
        AwsTarget {
            bucket: unique("bucket"),
            table: unique("table"),
            prefix: String::new(),
            region: None,
        }
    }

    fn open_log(target: &AwsTarget, volume: Uuid) -> AwsEventLog {
        let mut log = AwsEventLog::open(target, volume, false, &mut Vec::new()).unwrap();
        log.query_page = Some(40);
        log
    }

    #[test]
    fn conforms() {
        if !local_server() {
            return;
        }
        let target = new_target();
        let mut created = Vec::new();
        let mut store = AwsObjectStore::open(&target, true, &mut created).unwrap();
        store.list_page = Some(2);
        conformance::object_store(&store);
        let volume = Uuid::new_v4();
        AwsEventLog::open(&target, volume, true, &mut created).unwrap();
        conformance::event_log(&|| Arc::new(open_log(&target, volume)));
        assert!(
            TAKEN_FIRST.load(Ordering::Relaxed) > 0,
            "the writers raced for numbers"
        );
        assert_eq!(
            created,
            [
                format!("created bucket {}", target.bucket),
                format!("created table {}", target.table)
            ]
        );
        let mut again = Vec::new();
        AwsObjectStore::open(&target, true, &mut again).unwrap();
        AwsEventLog::open(&target, volume, true, &mut again).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    /// A store without TransactWriteItems (dynalite, which scripts/test.sh
    /// starts beside moto): batches go one conditional put per record, the
    /// numbers stay dense, and the log conforms.
    #[test]
    fn conforms_without_transactions() {
        if !local_server() {
            return;
        }
        let url = std::env::var("LATUS_TEST_DYNALITE_URL").expect(
            "LATUS_TEST_DYNALITE_URL is not set: run the tests with scripts/test.sh, which starts dynalite",
        );
        let target = new_target();
        let volume = Uuid::new_v4();
        let open = || {
            let mut log =
                AwsEventLog::open_at(&target, volume, true, &mut Vec::new(), Some(&url)).unwrap();
            log.query_page = Some(40);
            log
        };
        let log = open();
        let me = Uuid::new_v4();
        let batch: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        assert_eq!(log.append_batch(me, &batch).unwrap(), [1, 2, 3, 4, 5]);
        assert!(
            !log.transactions.load(Ordering::Relaxed),
            "dynalite took a transaction"
        );
        let read = log.read_after(0, 10).unwrap();
        assert_eq!(
            read.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
            batch
        );
        let volume = Uuid::new_v4();
        let target = AwsTarget {
            table: target.table.clone(),
            ..new_target()
        };
        conformance::event_log_without_transactions(&|| {
            let mut log =
                AwsEventLog::open_at(&target, volume, false, &mut Vec::new(), Some(&url)).unwrap();
            log.query_page = Some(40);
            Arc::new(log)
        });
    }

    /// A server that says an object is larger than any latus object is
    /// refused from its headers alone: the body is never read, so a
    /// provider cannot fill the daemon's memory.
    #[test]
    fn an_oversized_body_is_refused_before_it_is_read() {
        use std::io::{BufRead, BufReader, Write};
        // The credentials scripts/test.sh sets (no server of its is used).
        if !local_server() {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            // Answers requests until the client hangs up; every answer
            // claims a 1 TB body and sends none of it.
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n";
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            }
        });
        let target = AwsTarget {
            region: Some("us-east-1".into()),
            ..new_target()
        };
        let store = AwsObjectStore::open_at(&target, false, &mut Vec::new(), Some(&url)).unwrap();
        let started = Instant::now();
        let e = store.get("ab").unwrap_err();
        assert!(e.message.contains("larger than any latus object"), "{e}");
        assert!(!e.is_retryable(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(store);
        server.join().unwrap();
    }

    #[test]
    fn volumes_and_prefixes_are_apart() {
        if !local_server() {
            return;
        }
        let mut target = new_target();
        let mut created = Vec::new();
        let plain = AwsObjectStore::open(&target, true, &mut created).unwrap();
        target.prefix = "vol/".into();
        let prefixed = AwsObjectStore::open(&target, false, &mut created).unwrap();
        prefixed.put("ab", b"x").unwrap();
        assert_eq!(prefixed.list().unwrap(), ["ab"]);
        assert!(plain.size("vol/ab").unwrap().is_some() && plain.size("ab").unwrap().is_none());

        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        AwsEventLog::open(&target, one, true, &mut created).unwrap();
        let (one, two) = (open_log(&target, one), open_log(&target, two));
        assert_eq!(one.append(Uuid::new_v4(), b"1").unwrap(), 1);
        assert_eq!(
            two.append(Uuid::new_v4(), b"2").unwrap(),
            1,
            "each volume counts from 1"
        );
        assert_eq!(one.read_after(0, 10).unwrap()[0].payload, b"1");
    }

    #[test]
    fn a_missing_bucket_or_table_is_made_only_when_asked() {
        if !local_server() {
            return;
        }
        let target = new_target();
        let e = AwsObjectStore::open(&target, false, &mut Vec::new())
            .err()
            .unwrap();
        assert!(e.is_not_found() && e.what.contains(&target.bucket), "{e}");
        let e = AwsEventLog::open(&target, Uuid::new_v4(), false, &mut Vec::new())
            .err()
            .unwrap();
        assert!(e.is_not_found() && e.what.contains(&target.table), "{e}");
    }

    #[test]
    fn a_table_with_other_keys_is_refused() {
        if !local_server() {
            return;
        }
        let target = new_target();
        let log = AwsEventLog::open(&new_target(), Uuid::new_v4(), true, &mut Vec::new()).unwrap();
        log.rt
            .block_on(
                log.db
                    .create_table()
                    .table_name(&target.table)
                    .attribute_definitions(attribute("id", ScalarAttributeType::S).unwrap())
                    .key_schema(key_element("id", KeyType::Hash).unwrap())
                    .billing_mode(BillingMode::PayPerRequest)
                    .send(),
            )
            .unwrap();
        let e = AwsEventLog::open(&target, Uuid::new_v4(), true, &mut Vec::new())
            .err()
            .unwrap();
        assert!(
            e.kind == CloudErrorKind::Rejected && e.message.contains("sort key mivui"),
            "{e}"
        );
    }

    /// A write whose answer was lost is sent again and then finds its own
    /// record: the number is returned, and nothing is written twice.
    #[test]
    fn a_lost_reply_is_recognised_not_repeated() {
        if !local_server() {
            return;
        }
        let log = AwsEventLog::open(&new_target(), Uuid::new_v4(), true, &mut Vec::new()).unwrap();
        let me = Uuid::new_v4();
        log.lose_replies.store(1, Ordering::SeqCst);
        assert_eq!(log.append(me, b"one").unwrap(), 1);
        log.lose_replies.store(1, Ordering::SeqCst);
        let three: Vec<Vec<u8>> = vec![b"two".to_vec(), b"three".to_vec(), b"four".to_vec()];
        assert_eq!(log.append_batch(me, &three).unwrap(), [2, 3, 4]);
        // Three runs (100, 100, 50); the answers of the first two are lost.
        log.lose_replies.store(2, Ordering::SeqCst);
        let many: Vec<Vec<u8>> = (0..250u32).map(|i| i.to_le_bytes().to_vec()).collect();
        assert_eq!(
            log.append_batch(me, &many).unwrap(),
            (5..255).collect::<Vec<_>>()
        );
        assert_eq!(log.lose_replies.load(Ordering::SeqCst), 0);
        let records = log.read_after(0, 1000).unwrap();
        assert_eq!(
            records.iter().map(|r| r.mivui).collect::<Vec<_>>(),
            (1..255).collect::<Vec<_>>()
        );
        assert_eq!(records[3].payload, b"four");
        assert_eq!(records[253].payload, 249u32.to_le_bytes());
    }

    /// After a failed attempt, a number found holding someone else's record
    /// is not taken for ours.
    #[test]
    fn someone_elses_record_is_not_ours() {
        if !local_server() {
            return;
        }
        let log = AwsEventLog::open(&new_target(), Uuid::new_v4(), true, &mut Vec::new()).unwrap();
        let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(log.rt.block_on(log.put_record(1, other, b"x")).unwrap());
        for payloads in [&[&b"x"[..]][..], &[b"x", b"y"]] {
            // Taken, plainly.
            assert!(!log.rt.block_on(log.claim(1, me, payloads)).unwrap());
            // A first attempt that failed (it might have landed), then taken.
            log.fail_sends.store(1, Ordering::SeqCst);
            assert!(!log.rt.block_on(log.claim(1, me, payloads)).unwrap());
            assert_eq!(log.fail_sends.load(Ordering::SeqCst), 0);
        }
        assert_eq!(log.append(me, b"x").unwrap(), 2);
        assert_eq!(log.read_after(0, 10).unwrap()[0].originator, other);
    }

    /// A log of an earlier version: a counter item, numbers skipped under
    /// it. Its holes are stepped over; new numbers go above the counter;
    /// a hole above it is a record being written, and stops the reader.
    #[test]
    fn a_legacy_counter_and_its_holes() {
        if !local_server() {
            return;
        }
        let target = new_target();
        let volume = Uuid::new_v4();
        let old = AwsEventLog::open(&target, volume, true, &mut Vec::new()).unwrap();
        let me = Uuid::new_v4();
        let mut counter = old.volume_key(0);
        counter.insert("next".into(), AttributeValue::N("5".into()));
        old.rt
            .block_on(
                old.db
                    .put_item()
                    .table_name(&target.table)
                    .set_item(Some(counter))
                    .send(),
            )
            .unwrap();
        for n in [1, 2, 4] {
            assert!(old.rt.block_on(old.put_record(n, me, b"old")).unwrap());
        }
        let log = open_log(&target, volume);
        let numbers = |after| {
            log.read_after(after, 100)
                .unwrap()
                .iter()
                .map(|r| r.mivui)
                .collect::<Vec<_>>()
        };
        assert_eq!(numbers(0), [1, 2, 4]);
        assert_eq!(log.append(me, b"new").unwrap(), 6, "above the counter");
        assert_eq!(numbers(0), [1, 2, 4, 6]);
        assert_eq!(numbers(4), [6]);
        // 7 "being written" while 8 is there already.
        assert!(log.rt.block_on(log.put_record(8, me, b"new")).unwrap());
        assert_eq!(numbers(0), [1, 2, 4, 6]);
        assert!(numbers(6).is_empty());
        assert!(log.rt.block_on(log.put_record(7, me, b"new")).unwrap());
        assert_eq!(numbers(6), [7, 8]);
    }

    #[test]
    fn batches_split_into_transactions_that_fit() {
        let small = [0u8; 10];
        let payloads = vec![&small[..]; 250];
        let sizes: Vec<usize> = runs(&payloads).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let big = vec![0u8; 300_000];
        let payloads = vec![&big[..]; 25];
        let sizes: Vec<usize> = runs(&payloads).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [11, 11, 3]);
        assert!(runs(&[]).is_empty());
        for run in runs(&payloads) {
            let bytes: usize = run.iter().map(|p| p.len() + ITEM_OVERHEAD).sum();
            assert!(bytes <= MAX_TRANSACTION_BYTES);
        }
    }

    #[test]
    fn a_record_too_big_for_an_item_is_refused_whole() {
        if !local_server() {
            return;
        }
        let log = AwsEventLog::open(&new_target(), Uuid::new_v4(), true, &mut Vec::new()).unwrap();
        let me = Uuid::new_v4();
        let e = log
            .append_batch(me, &[b"fits".to_vec(), vec![0; MAX_ITEM_BYTES]])
            .unwrap_err();
        assert!(
            e.kind == CloudErrorKind::Rejected && e.message.contains("does not fit"),
            "{e}"
        );
        assert!(log.read_after(0, 10).unwrap().is_empty(), "nothing written");
        // Not right at the limit: moto counts a binary value by its base64
        // text (DynamoDB by its bytes).
        let fits = vec![7; 250_000];
        assert_eq!(log.append(me, &fits).unwrap(), 1);
        assert_eq!(log.read_after(0, 10).unwrap()[0].payload, fits);
    }

    /// Prints what appends cost against the server: one record at a time,
    /// and a batch of 100 (one transaction). `cargo test --lib
    /// measure_append -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn measure_append_costs() {
        if !local_server() {
            return;
        }
        let log = AwsEventLog::open(&new_target(), Uuid::new_v4(), true, &mut Vec::new()).unwrap();
        let me = Uuid::new_v4();
        let payload = vec![7u8; 300];
        let started = Instant::now();
        for _ in 0..100 {
            log.append(me, &payload).unwrap();
        }
        let single = started.elapsed() / 100;
        let batch = vec![payload; 100];
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let started = Instant::now();
                log.append_batch(me, &batch).unwrap();
                started.elapsed()
            })
            .collect();
        times.sort();
        eprintln!(
            "aws: one append {:.2} ms (mean of 100); a batch of 100: {:.1} ms (median of 7)",
            single.as_secs_f64() * 1e3,
            times[3].as_secs_f64() * 1e3
        );
    }

    #[test]
    fn an_unreachable_cloud_is_retried_then_reported() {
        if !local_server() {
            return;
        }
        let target = new_target();
        let dead = "http://127.0.0.1:1";
        let started = Instant::now();
        let store = AwsObjectStore::open_at(&target, false, &mut Vec::new(), Some(dead)).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "an offline open does not retry"
        );
        let started = Instant::now();
        let e = store.put("ab", b"x").unwrap_err();
        assert!(
            e.kind == CloudErrorKind::Unreachable && e.is_retryable(),
            "{e}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "retried with backoff"
        );
        let log = AwsEventLog::open_at(&target, Uuid::new_v4(), false, &mut Vec::new(), Some(dead))
            .unwrap();
        assert_eq!(
            log.read_after(0, 1).unwrap_err().kind,
            CloudErrorKind::Unreachable
        );
        let e = AwsObjectStore::open_at(&target, true, &mut Vec::new(), Some(dead))
            .err()
            .unwrap();
        assert_eq!(e.kind, CloudErrorKind::Unreachable, "init needs the cloud");
    }

    #[test]
    fn service_errors_are_classified() {
        use CloudErrorKind::*;
        let cases = [
            (Some("SlowDown"), 503, Throttled),
            (
                Some("ProvisionedThroughputExceededException"),
                400,
                Throttled,
            ),
            (Some("ThrottlingException"), 400, Throttled),
            (None, 429, Throttled),
            (Some("InternalError"), 500, Server),
            (None, 502, Server),
            (Some("RequestTimeout"), 400, Unreachable),
            (Some("AccessDenied"), 403, Denied),
            (Some("InvalidAccessKeyId"), 403, Denied),
            (Some("SignatureDoesNotMatch"), 403, Denied),
            (Some("UnrecognizedClientException"), 400, Denied),
            (Some("NoSuchKey"), 404, NotFound),
            (Some("NoSuchBucket"), 404, NotFound),
            (Some("ResourceNotFoundException"), 400, NotFound),
            (None, 404, NotFound),
            (Some("ValidationException"), 400, Rejected),
            (Some("ConditionalCheckFailedException"), 400, Rejected),
        ];
        for (code, status, kind) in cases {
            assert_eq!(classify(code, status), kind, "{code:?} {status}");
        }
    }

    #[test]
    fn retries_only_what_can_succeed_later() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);
        let fail_twice = || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(CloudError::new(
                    CloudErrorKind::Throttled,
                    "put",
                    "x",
                    "slow down",
                )),
                _ => Ok(7),
            }
        };
        assert_eq!(rt.block_on(retrying(fail_twice)).unwrap(), 7);
        assert_eq!(calls.swap(0, Ordering::SeqCst), 3);

        let refused = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CloudError::new(CloudErrorKind::Denied, "put", "x", "no"))
        };
        assert_eq!(
            rt.block_on(retrying(refused)).unwrap_err().kind,
            CloudErrorKind::Denied
        );
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

        let down = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CloudError::new(
                CloudErrorKind::Unreachable,
                "put",
                "x",
                "down",
            ))
        };
        assert!(rt.block_on(retrying(down)).unwrap_err().is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_with_jitter() {
        for attempt in 1..=20 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_BACKOFF);
            let delay = backoff(attempt);
            assert!(delay <= full && delay >= full / 2, "{attempt}: {delay:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    proptest::proptest! {
        /// Items come from the cloud: any shape decodes or is refused, and
        /// only a complete record decodes.
        #[test]
        fn any_item_decodes_or_is_refused(
            mivui in proptest::option::of("[0-9]{1,22}|-?[0-9a-z.]{0,5}"),
            originator in proptest::option::of(proptest::prelude::any::<u128>()),
            garbled in proptest::prelude::any::<bool>(),
            payload in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
        ) {
            let mut item = Item::new();
            if let Some(n) = &mivui {
                item.insert("mivui".into(), AttributeValue::N(n.clone()));
            }
            if let Some(o) = originator {
                let text = Uuid::from_u128(o).to_string();
                let text = if garbled { text[1..].to_string() } else { text };
                item.insert("originator".into(), AttributeValue::S(text));
            }
            if let Some(p) = &payload {
                item.insert("payload".into(), AttributeValue::B(Blob::new(p.clone())));
            }
            let whole = mivui.as_deref().and_then(|n| n.parse::<u64>().ok()).is_some()
                && originator.is_some()
                && !garbled
                && payload.is_some();
            match decode(&item) {
                Ok(record) => {
                    proptest::prop_assert!(whole);
                    proptest::prop_assert_eq!(Some(record.payload), payload);
                }
                Err(_) => proptest::prop_assert!(!whole),
            }
        }
    }

    #[test]
    fn targets_parse() {
        let parse = |rest: &str| AwsTarget::parse(&format!("aws://{rest}"), rest);
        let t = parse("b?table=t&prefix=p&region=r").unwrap();
        assert_eq!(
            (t.bucket.as_str(), t.table.as_str(), t.prefix.as_str()),
            ("b", "t", "p/")
        );
        assert_eq!(t.region.as_deref(), Some("r"));
        let t = parse("b?table=t").unwrap();
        assert_eq!((t.prefix.as_str(), t.region), ("", None));
        for (rest, says) in [
            ("b", "table= is required"),
            ("b?prefix=p", "table= is required"),
            ("b?table=", "needs a value"),
            ("b?table=t&table=u", "twice"),
            ("b?table=t&colour=red", "unknown parameter"),
            ("?table=t", "expected"),
            ("b/c?table=t", "expected"),
        ] {
            let e = parse(rest).unwrap_err().to_string();
            assert!(e.contains(says), "{rest}: {e}");
        }
    }
}
