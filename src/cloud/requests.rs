//! Requests this process sent to S3 and DynamoDB, by operation: what a
//! cloud provider bills per request and per byte. Counted by an interceptor
//! on every attempt (retries are billed too), so `status --json` and the
//! cost benchmark show what was really sent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use serde::Serialize;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OperationCount {
    pub requests: u64,
    /// Request bodies.
    pub sent_bytes: u64,
    /// Response bodies (as their Content-Length states).
    pub received_bytes: u64,
}

/// `"s3:PutObject"`, `"dynamodb:Query"`, ... to their counts, since the
/// process started.
static COUNTS: Mutex<BTreeMap<String, OperationCount>> = Mutex::new(BTreeMap::new());

/// The counts so far.
pub fn snapshot() -> BTreeMap<String, OperationCount> {
    COUNTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn operation(cfg: &ConfigBag) -> String {
    match cfg.load::<Metadata>() {
        Some(m) => format!("{}:{}", m.service().to_ascii_lowercase(), m.name()),
        None => "unknown".to_string(),
    }
}

fn add(cfg: &ConfigBag, f: impl FnOnce(&mut OperationCount)) {
    let op = operation(cfg);
    f(COUNTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(op)
        .or_default());
}

/// The interceptor both clients carry.
#[derive(Debug)]
pub struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "latus::CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let sent = context.request().body().content_length().unwrap_or(0);
        add(cfg, |c| {
            c.requests += 1;
            c.sent_bytes += sent;
        });
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let received = context
            .response()
            .headers()
            .get("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        // A HEAD's Content-Length is the object's, not a body sent.
        if !operation(cfg).contains(":Head") {
            add(cfg, |c| c.received_bytes += received);
        }
        Ok(())
    }
}
