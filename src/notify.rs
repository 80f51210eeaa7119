//! Desktop notices for what needs the user: a new conflict copy, a cloud
//! that stopped answering (and came back), refused records, a full cache,
//! a log that cannot be trusted. Found by comparing two status answers
//! (pure, tested); shown through `notify-send` (freedesktop notifications
//! over the session bus) when there is a session bus and the tool, and
//! always written to the daemon's log.

use std::collections::BTreeSet;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub title: String,
    pub body: String,
    /// Worth the user's attention now (shown as critical).
    pub urgent: bool,
}

fn notice(title: &str, body: String, urgent: bool) -> Notice {
    Notice {
        title: title.to_string(),
        body,
        urgent,
    }
}

/// What changed between two status answers that the user should hear of.
pub fn notices(before: &Value, now: &Value) -> Vec<Notice> {
    let mut out = Vec::new();
    let copies = |v: &Value| -> BTreeSet<String> {
        v["conflict_copies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["path"].as_str().map(str::to_string))
            .collect()
    };
    let old = copies(before);
    for c in now["conflict_copies"].as_array().into_iter().flatten() {
        let path = c["path"].as_str().unwrap_or("");
        if !old.contains(path) {
            out.push(notice(
                "latus: conflict",
                format!(
                    "{} was changed on two nodes at once; {}'s version is kept as \"{path}\". Resolve it with `latus conflicts` or in `latus ui`.",
                    c["original"].as_str().unwrap_or("?"),
                    c["node"].as_str().unwrap_or("?")
                ),
                true,
            ));
        }
    }
    let (q0, q1) = (&before["queue"], &now["queue"]);
    if q0["unreachable_since"].is_null() && !q1["unreachable_since"].is_null() {
        out.push(notice(
            "latus: the cloud stopped answering",
            format!(
                "{}. Your files keep working; changes wait and are uploaded when it answers.",
                q1["last_error"].as_str().unwrap_or("no answer")
            ),
            false,
        ));
    }
    if !q0["unreachable_since"].is_null() && q1["unreachable_since"].is_null() {
        out.push(notice(
            "latus: the cloud answers again",
            "Sync resumed.".into(),
            false,
        ));
    }
    let refused = |q: &Value| q["refused_events"].as_u64().unwrap_or(0);
    if refused(q1) > refused(q0) {
        out.push(notice(
            "latus: records refused",
            format!(
                "{} record(s) from the cloud were refused (unsafe paths, or records that do not open); content is kept under latus-refused/. See daemon.log.",
                refused(q1) - refused(q0)
            ),
            true,
        ));
    }
    if before["cache"]["over_cap"] != true && now["cache"]["over_cap"] == true {
        out.push(notice(
            "latus: the cache is full",
            "What must stay on this disk (pinned, local-only, open or not yet uploaded) exceeds the cache cap. Raise it with `latus set cache-size SIZE`.".into(),
            true,
        ));
    }
    if q0["log_breach"].is_null()
        && let Some(b) = q1["log_breach"].as_str()
    {
        out.push(notice(
            "latus: sync stopped",
            format!("The volume's log cannot be trusted: {b}. Local files keep working."),
            true,
        ));
    }
    out
}

/// Whether a desktop session bus is there to show notices on.
fn session_bus() -> bool {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|d| std::path::Path::new(&d).join("bus").exists())
}

/// Logs the notice and shows it on the desktop when it can.
pub fn show(n: &Notice) {
    tracing::warn!(title = %n.title, "{}", n.body);
    if !session_bus() {
        return;
    }
    let spawned = std::process::Command::new("notify-send")
        .args(["--app-name=latus", "--icon=folder-sync"])
        .arg(if n.urgent {
            "--urgency=critical"
        } else {
            "--urgency=normal"
        })
        .arg(&n.title)
        .arg(&n.body)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped off this thread: notify-send returns at once.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => tracing::debug!(error = %e, "notify-send is not available"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(copies: &[&str], unreachable: Option<i64>, refused: u64, full: bool) -> Value {
        json!({
            "conflict_copies": copies.iter().map(|p| json!({"path": p, "original": "a.txt", "node": "desk"})).collect::<Vec<_>>(),
            "queue": {"unreachable_since": unreachable, "last_error": "refused", "refused_events": refused, "log_breach": null},
            "cache": {"over_cap": full},
        })
    }

    #[test]
    fn each_event_is_told_once() {
        let a = st(&[], None, 0, false);
        assert!(notices(&a, &a).is_empty());
        let b = st(
            &["a (conflict from desk 2026-01-01 000000).txt"],
            Some(5),
            1,
            true,
        );
        let n = notices(&a, &b);
        let titles: Vec<&str> = n.iter().map(|n| n.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "latus: conflict",
                "latus: the cloud stopped answering",
                "latus: records refused",
                "latus: the cache is full"
            ]
        );
        assert!(n[0].body.contains("desk's version"));
        // Nothing new: nothing told again; back online is told.
        assert!(notices(&b, &b).is_empty());
        let c = st(
            &["a (conflict from desk 2026-01-01 000000).txt"],
            None,
            1,
            true,
        );
        let n = notices(&b, &c);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].title, "latus: the cloud answers again");
    }
}
