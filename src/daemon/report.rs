//! The daemon's status answer: the counters, plus what the words of
//! `latus status` need (files waiting by the per-path rule, an ETA from
//! the upload rate, conflict copies, the one-line summary).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DaemonStatus, StatusContext, disk_report};
use crate::home::Home;
use crate::locks::lock;

/// The file in the home that names the last mountpoint: after a crash,
/// `status` can say the folder is still mounted with no daemon behind it.
pub fn mountpoint_file(home: &Home) -> std::path::PathBuf {
    home.root().join("mountpoint")
}

pub(super) fn remember_mountpoint(home: &Home, mountpoint: &Path) {
    let _ = std::fs::write(
        mountpoint_file(home),
        mountpoint.as_os_str().as_encoded_bytes(),
    );
}

/// Samples the uploader's byte counter every second, for the ETA.
pub(super) fn start_rate_sampler(ctx: &Arc<StatusContext>) {
    let Some(up) = ctx.uploader.as_ref().map(Arc::downgrade) else {
        return;
    };
    let ctx = Arc::downgrade(ctx);
    let _ = std::thread::Builder::new()
        .name("latus-rate".into())
        .spawn(move || {
            while let (Some(u), Some(c)) = (up.upgrade(), ctx.upgrade()) {
                let bytes = u.status().uploaded_bytes;
                lock(&c.rate).sample(Instant::now(), bytes);
                drop((u, c));
                std::thread::sleep(Duration::from_secs(1));
            }
        });
}

pub(super) fn status(ctx: &StatusContext) -> serde_json::Value {
    let mut queue = ctx
        .uploader
        .as_ref()
        .map(|u| u.status())
        .unwrap_or_default();
    // The per-path rule (`status PATH` says `pending`), so the two agree;
    // the uploader's own count only changes at the start of a pass.
    let waiting = ctx.vfs.waiting();
    queue.pending_files = waiting.files;
    queue.pending_bytes = waiting.bytes;
    let rate = lock(&ctx.rate).rate();
    let eta_secs = (waiting.bytes > 0)
        .then(|| lock(&ctx.rate).eta_secs(waiting.bytes))
        .flatten();
    let st = DaemonStatus {
        pid: std::process::id(),
        mountpoint: ctx.mountpoint.display().to_string(),
        node_id: ctx.config.node_id.to_string(),
        node_name: ctx.config.node_name.clone(),
        cloud: ctx.config.cloud.clone(),
        counts: ctx.vfs.counts(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        recovered: ctx.recovery.clone(),
        queue,
        offline: ctx.uploader.is_none(),
        cache: ctx.vfs.cache_status(),
        disk: disk_report(ctx),
        hydration: ctx.vfs.hydration_counts(),
        waiting,
        upload_rate: rate.map(|r| r as u64),
        eta_secs,
        conflict_copies: crate::conflicts::list(&ctx.vfs, &ctx.config.node_name),
        cloud_requests: crate::cloud::requests::snapshot(),
        tiers: ctx.uploader.as_ref().map(|u| u.cooler().tier_bytes()),
    };
    let mut v = serde_json::to_value(st).unwrap_or_default();
    let summary = crate::status::summary(&v, ctx.vfs.now());
    v["summary"] = serde_json::to_value(summary).unwrap_or_default();
    v
}

/// Starts the web app with the control requests as its only way in (it
/// cannot unmount, nor hand out its own address).
pub(super) fn start_web(
    home: &Home,
    ctx: &Arc<StatusContext>,
    unmounter: &Arc<crate::locks::Mutex<fuser::SessionUnmounter>>,
) {
    use crate::control::{Request, Response};
    let handler: crate::web::Handler = {
        let (ctx, unmounter) = (ctx.clone(), unmounter.clone());
        Arc::new(move |req| match req {
            Request::Unmount | Request::UiUrl => Response::err("not from the web app"),
            req => super::handle(&ctx, &unmounter, req),
        })
    };
    match crate::web::start(handler, home.clone()) {
        Ok(w) => {
            tracing::info!(address = %w.addr, "web app listening (open it with `latus ui`)");
            let _ = ctx.web_url.set(w.url);
        }
        Err(e) => tracing::warn!(error = %e, "the web app could not start"),
    }
}

/// Watches for what needs the user (`notify`), every 2 s. Cheap: the
/// uploader's counters and the cache; the tree is walked for conflict
/// copies only when the conflict counter moved.
pub(super) fn start_notices(ctx: &Arc<StatusContext>) {
    let weak = Arc::downgrade(ctx);
    let _ = std::thread::Builder::new()
        .name("latus-notices".into())
        .spawn(move || {
            let mut before: Option<serde_json::Value> = None;
            let mut seen_conflicts = 0;
            let mut copies = serde_json::Value::Array(Vec::new());
            while let Some(ctx) = weak.upgrade() {
                let queue = ctx
                    .uploader
                    .as_ref()
                    .map(|u| u.status())
                    .unwrap_or_default();
                if before.is_none() || queue.conflicts != seen_conflicts {
                    seen_conflicts = queue.conflicts;
                    copies = serde_json::to_value(crate::conflicts::list(
                        &ctx.vfs,
                        &ctx.config.node_name,
                    ))
                    .unwrap_or_default();
                }
                let now = serde_json::json!({
                    "queue": queue,
                    "cache": ctx.vfs.cache_status(),
                    "conflict_copies": copies,
                });
                drop(ctx);
                // What was there at mount is not news.
                if let Some(b) = &before {
                    for n in crate::notify::notices(b, &now) {
                        crate::notify::show(&n);
                    }
                }
                before = Some(now);
                std::thread::sleep(Duration::from_secs(2));
            }
        });
}
