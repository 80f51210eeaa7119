//! What `latus status` says in words: one line on whether the node is in
//! sync (or what waits, what stopped it and since when), then the
//! conflicts, refused events, errors and nodes. Built from the same JSON
//! `status --json` prints, so the words and the counters never disagree;
//! the web app shows the same lines.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::when;

mod activity;

pub use activity::{Activity, Deleted, activity, deleted};

/// The node's sync state, in one word and one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// `in_sync`, `syncing`, `offline` (the cloud does not answer),
    /// `offline_mode` (mounted `--offline`), `stopped` (the log cannot be
    /// trusted), `damaged` (`latus check` found the cloud missing
    /// content), `not_mounted`.
    pub state: &'static str,
    pub line: String,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The headline from a status (`DaemonStatus` as JSON, or the offline one).
pub fn summary(v: &Value, now_ns: i64) -> Summary {
    let q = &v["queue"];
    let files = u(&q["pending_files"]);
    let bytes = u(&q["pending_bytes"]);
    let events = u(&q["pending_events"]);
    let waiting = if files > 0 {
        format!(
            "{files} file{} ({}) waiting to upload",
            plural(files),
            when::bytes(bytes)
        )
    } else if events > 0 {
        format!("{events} change{} waiting to upload", plural(events))
    } else {
        String::new()
    };
    if v["mountpoint"].is_null() {
        let line = if waiting.is_empty() {
            "not mounted (nothing waits to upload)".to_string()
        } else {
            format!("not mounted: {waiting} at the next mount")
        };
        return Summary {
            state: "not_mounted",
            line,
        };
    }
    if let Some(b) = q["log_breach"].as_str() {
        return Summary {
            state: "stopped",
            line: format!(
                "sync STOPPED: the volume's log cannot be trusted ({b}); local files keep working and changes wait here"
            ),
        };
    }
    if let Some(d) = q["cloud_damage"].as_str() {
        return Summary {
            state: "damaged",
            line: format!(
                "the cloud is DAMAGED ({d}): what is there is not all safe; see `latus check`"
            ),
        };
    }
    if v["offline"] == true {
        return Summary {
            state: "offline_mode",
            line: if waiting.is_empty() {
                "offline by choice (mounted --offline); nothing waits".into()
            } else {
                format!(
                    "offline by choice (mounted --offline): {waiting} at a mount without --offline"
                )
            },
        };
    }
    if let Some(since) = q["unreachable_since"].as_i64() {
        let since_ns = since.saturating_mul(1_000_000_000);
        let why = q["last_error"].as_str().unwrap_or("no answer");
        let tail = if waiting.is_empty() {
            String::new()
        } else {
            format!("; {waiting}")
        };
        return Summary {
            state: "offline",
            line: format!(
                "offline: the cloud stopped answering at {} ({}): {why}{tail}; retrying",
                when::local(since_ns),
                when::ago(since_ns, now_ns)
            ),
        };
    }
    if !waiting.is_empty() {
        let eta = v["eta_secs"]
            .as_u64()
            .map(|s| format!(", about {} left", when::duration(s)))
            .unwrap_or_default();
        return Summary {
            state: "syncing",
            line: format!("syncing: {waiting}{eta}"),
        };
    }
    Summary {
        state: "in_sync",
        line: "in sync".into(),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Every line of the plain `latus status`. `nodes` is the `nodes` answer
/// (omitted when unknown).
pub fn lines(v: &Value, nodes: Option<&Value>, now_ns: i64) -> Vec<String> {
    let mut out = vec![format!("latus: {}", summary(v, now_ns).line)];
    match v["mountpoint"].as_str() {
        Some(m) => out.push(format!("folder: {m} (daemon pid {})", v["pid"])),
        None => {
            if let Some(m) = v["stale_mount"].as_str() {
                out.push(format!(
                    "folder: {m} is still mounted but its daemon stopped (crashed or killed), so programs there get \"Transport endpoint is not connected\"; run `latus mount {m}` to bring it back (nothing closed is lost)"
                ));
            }
        }
    }
    out.push(format!(
        "node: {} ({}), cloud {}",
        v["node_name"].as_str().unwrap_or("?"),
        v["node_id"].as_str().unwrap_or("?"),
        v["cloud"].as_str().unwrap_or("?")
    ));
    out.push(format!(
        "files: {}  folders: {}  symlinks: {}",
        u(&v["files"]),
        u(&v["directories"]),
        u(&v["symlinks"])
    ));
    if u(&v["special_files"]) > 0 {
        out.push(format!(
            "FIFOs, sockets and device nodes: {} (work on this node only; never synced)",
            u(&v["special_files"])
        ));
    }
    let t = &v["tiers"];
    if u(&t["cold_bytes"]) > 0 {
        out.push(format!(
            "cold storage: {} in {} chunks ({}), {} hot",
            when::bytes(u(&t["cold_bytes"])),
            u(&t["cold_chunks"]),
            t["cold_tier"].as_str().unwrap_or("?"),
            when::bytes(u(&t["hot_bytes"]))
        ));
    }
    if let Some(list) = v["conflict_copies"].as_array()
        && !list.is_empty()
    {
        out.push(format!(
            "conflicts: {} (resolve with `latus conflicts`)",
            list.len()
        ));
        for c in list.iter().take(10) {
            out.push(format!(
                "  {}  (version from {}, lost the name {})",
                c["path"].as_str().unwrap_or("?"),
                c["node"].as_str().unwrap_or("?"),
                c["original"].as_str().unwrap_or("?"),
            ));
        }
        if list.len() > 10 {
            out.push(format!("  ... and {} more", list.len() - 10));
        }
    }
    if let Some(d) = v["queue"]["cloud_damage"].as_str() {
        out.push(format!("cloud: DAMAGED: {d} (see `latus check`)"));
    }
    let refused = u(&v["queue"]["refused_events"]);
    if refused > 0 {
        out.push(format!(
            "refused: {refused} record{} from the cloud (unsafe paths, or records that do not open); content kept under latus-refused/, details in daemon.log",
            plural(refused)
        ));
    }
    if v["cache"]["over_cap"] == true {
        out.push(format!(
            "cache: FULL: {} used of a {} cap, and nothing more can be evicted (pinned, local-only, open or not yet uploaded); raise it with `latus set cache-size SIZE`",
            when::bytes(u(&v["cache"]["used_bytes"])),
            when::bytes(u(&v["cache"]["cap_bytes"]))
        ));
    }
    if v["disk"]["full"] == true {
        out.push(format!(
            "disk: FULL: writes are refused until {} are free on the disk holding the home",
            when::bytes(u(&v["disk"]["reserve_bytes"]))
        ));
    }
    if let Some(e) = v["last_error"].as_str() {
        out.push(format!("last error (local database): {e}"));
    }
    if let Some(e) = v["queue"]["last_error"].as_str()
        && v["queue"]["unreachable_since"].is_null()
    {
        out.push(format!("last error (cloud): {e}"));
    }
    if let Some(nodes) = nodes.and_then(Value::as_array).filter(|n| !n.is_empty()) {
        out.push("nodes:".into());
        for n in nodes {
            out.push(format!("  {}", node_line(n, now_ns)));
        }
    }
    out
}

/// Whether a node is in contact: it said so (an event or its heartbeat)
/// within two heartbeats.
pub fn online(last_seen_ns: i64, now_ns: i64) -> bool {
    let window = 2 * crate::sync::HEARTBEAT.as_nanos() as i64 + 60_000_000_000;
    now_ns.saturating_sub(last_seen_ns) <= window
}

/// `laptop  online (last in contact 2 min ago)` / `desk  last in contact ...`.
pub fn node_line(n: &Value, now_ns: i64) -> String {
    let name = n["name"].as_str().unwrap_or("?");
    let seen = n["last_seen"].as_i64().unwrap_or(0);
    let contact = if n["this_node"] == true {
        "this node".to_string()
    } else if seen == 0 {
        "never in contact".to_string()
    } else if online(seen, now_ns) {
        format!("online (last in contact {})", when::ago(seen, now_ns))
    } else {
        format!(
            "last in contact {} ({})",
            when::ago(seen, now_ns),
            when::local(seen)
        )
    };
    format!(
        "{name:<20} {contact}  [{} events, id {}]",
        u(&n["events_published"]),
        n["id"].as_str().unwrap_or("?")
    )
}

/// `status PATH` in words; `nodes` (the `nodes` answer) names the node
/// that made the last change.
pub fn path_lines(v: &Value, nodes: Option<&Value>, this_node: &str) -> Vec<String> {
    let path = v["path"].as_str().unwrap_or("?");
    let shown = if path.is_empty() {
        "(the folder)"
    } else {
        path
    };
    let state = match v["state"].as_str().unwrap_or("?") {
        "local" => "here and in the cloud",
        "pending" => "waiting to upload (changed here, not yet in the cloud)",
        "cloud" => "in the cloud only (downloads when opened)",
        "local-only" => "on this node only (never uploaded)",
        "cold" => "in cold storage only (read from there; see `tier`)",
        other => other,
    };
    let mut out = vec![format!("{shown}: {state}")];
    if let Some(tier) = v["tier"].as_str() {
        out.push(format!(
            "tier: {}",
            match tier {
                "hot" => "hot (reads at once)",
                "cold" => "cold",
                "thawing" =>
                    "thawing (a restore is under way: reads fail with EAGAIN until it is done)",
                "ready" => "ready (restored from cold storage: reads at once for a while)",
                other => other,
            }
        ));
    }
    let kind = v["kind"].as_str().unwrap_or("file");
    if kind == "file" {
        out.push(format!("size: {}", when::bytes(u(&v["size"]))));
    } else {
        out.push(format!("kind: {kind}"));
    }
    let p = &v["placement"];
    let rule = p["rule"].as_str().unwrap_or("auto");
    out.push(match p["from"].as_str() {
        Some(from) if from != path => format!("placement: {rule} (set on {from})"),
        Some(_) => format!("placement: {rule}"),
        None => format!("placement: {rule} (the cache decides)"),
    });
    let e = &v["last_event"];
    if !e.is_null() {
        let t = e["time"]
            .as_i64()
            .filter(|&t| t != 0)
            .or(e["mtime"].as_i64());
        let node = nodes
            .and_then(Value::as_array)
            .and_then(|ns| ns.iter().find(|n| n["id"] == e["originator"]));
        let by = match node {
            Some(n) if n["this_node"] == true => {
                format!("by this node ({})", n["name"].as_str().unwrap_or("?"))
            }
            Some(n) => format!("by {}", n["name"].as_str().unwrap_or("?")),
            None if e["originator"] == this_node => "by this node".to_string(),
            None => format!(
                "by node {}",
                e["originator"]
                    .as_str()
                    .map_or("?", |s| &s[..s.len().min(8)])
            ),
        };
        let whereabouts = if e["mivui"].is_null() {
            "not yet in the cloud".to_string()
        } else {
            format!("record {} of the volume", e["mivui"])
        };
        out.push(format!(
            "last change: {} at {} {by}, {whereabouts}",
            e["event_type"].as_str().unwrap_or("?"),
            t.map(when::local).unwrap_or_default()
        ));
    }
    if let Some(h) = v["file_hash"].as_str() {
        out.push(format!("content: sha512 {}…", &h[..h.len().min(16)]));
    }
    out
}

/// Upload rate over the last `WINDOW`, from periodic samples of the
/// uploader's byte counter: what the ETA divides by.
pub struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

const WINDOW: Duration = Duration::from_secs(20);

impl Default for RateMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateMeter {
    pub fn new() -> Self {
        Self {
            samples: VecDeque::new(),
        }
    }

    pub fn sample(&mut self, at: Instant, uploaded_bytes: u64) {
        self.samples.push_back((at, uploaded_bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second, once there is something to measure.
    pub fn rate(&self) -> Option<f64> {
        let (t0, b0) = *self.samples.front()?;
        let (t1, b1) = *self.samples.back()?;
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs >= 1.0 && b1 > b0).then(|| (b1 - b0) as f64 / secs)
    }

    pub fn eta_secs(&self, pending_bytes: u64) -> Option<u64> {
        let r = self.rate()?;
        Some((pending_bytes as f64 / r).ceil() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn base() -> Value {
        json!({
            "pid": 7, "mountpoint": "/m", "node_id": "x", "node_name": "n", "cloud": "dir:/c",
            "files": 3, "directories": 1, "symlinks": 0, "offline": false,
            "queue": {"pending_files": 0, "pending_bytes": 0, "pending_events": 0,
                      "refused_events": 0, "log_breach": null, "unreachable_since": null,
                      "last_error": null},
        })
    }

    #[test]
    fn each_state_reads_plainly() {
        let mut v = base();
        assert_eq!(summary(&v, NOW).line, "in sync");
        v["queue"]["pending_files"] = json!(2);
        v["queue"]["pending_bytes"] = json!(100_000_000);
        v["eta_secs"] = json!(90);
        let s = summary(&v, NOW);
        assert_eq!(s.state, "syncing");
        assert_eq!(
            s.line,
            "syncing: 2 files (100 MB) waiting to upload, about 2 min left"
        );
        v["queue"]["unreachable_since"] = json!(NOW / 1_000_000_000 - 300);
        v["queue"]["last_error"] = json!("connection refused");
        let s = summary(&v, NOW);
        assert_eq!(s.state, "offline");
        assert!(s.line.contains("5 min ago"), "{}", s.line);
        assert!(s.line.contains("connection refused"), "{}", s.line);
        v["queue"]["log_breach"] = json!("a replayed record");
        assert_eq!(summary(&v, NOW).state, "stopped");
        v["mountpoint"] = Value::Null;
        assert_eq!(summary(&v, NOW).state, "not_mounted");
    }

    #[test]
    fn conflicts_and_nodes_are_listed() {
        let mut v = base();
        v["conflict_copies"] = json!([{"path": "a (conflict from d 2026-01-01 000000).txt",
            "original": "a.txt", "node": "d"}]);
        v["queue"]["refused_events"] = json!(1);
        let nodes = json!([
            {"id": "1", "name": "n", "last_seen": NOW, "events_published": 3, "this_node": true},
            {"id": "2", "name": "d", "last_seen": NOW - 60_000_000_000, "events_published": 1, "this_node": false},
            {"id": "3", "name": "old", "last_seen": NOW - 86_400_000_000_000 * 3, "events_published": 1, "this_node": false},
        ]);
        let text = lines(&v, Some(&nodes), NOW).join("\n");
        assert!(text.contains("conflicts: 1"), "{text}");
        assert!(text.contains("a (conflict from d"), "{text}");
        assert!(text.contains("refused: 1 record"), "{text}");
        assert!(
            text.contains("online (last in contact 1 min ago)"),
            "{text}"
        );
        assert!(text.contains("last in contact 3 days ago"), "{text}");
    }

    #[test]
    fn eta_from_samples() {
        let mut m = RateMeter::new();
        let t = Instant::now();
        assert_eq!(m.eta_secs(100), None);
        m.sample(t, 0);
        m.sample(t + Duration::from_secs(2), 2_000_000);
        assert_eq!(m.eta_secs(10_000_000), Some(10));
    }
}
