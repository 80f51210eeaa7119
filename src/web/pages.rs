//! The web app's pages, rendered on the server from the daemon's answers
//! (the same JSON the CLI prints). Plain HTML forms change things; a few
//! lines of JavaScript (`APP_JS`) refresh the live parts.

use serde_json::Value;

use crate::when;

pub const APP_JS: &str = r#"
function latusRefresh() {
  document.querySelectorAll('[data-refresh]').forEach(async (el) => {
    try {
      const r = await fetch(el.dataset.refresh, { credentials: 'same-origin' });
      if (r.ok) { el.innerHTML = await r.text(); }
    } catch (e) {}
  });
}
setInterval(latusRefresh, 1000);
document.addEventListener('submit', (e) => {
  const q = e.target.dataset.confirm;
  if (q && !window.confirm(q)) { e.preventDefault(); }
});
"#;

const CSS: &str = r#"
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f6f7f9; }
nav { background: #1f3a5f; padding: .6em 1em; }
nav a { color: #dfe8f5; margin-right: 1.1em; text-decoration: none; }
nav a.here { color: #fff; font-weight: 600; border-bottom: 2px solid #fff; }
main { max-width: 980px; margin: 1.2em auto; padding: 0 1em; }
h1 { font-size: 1.4em; margin: .2em 0 .6em; }
.sync { font-size: 1.25em; padding: .7em 1em; border-radius: 8px; margin: .6em 0 1em; }
.in_sync { background: #dff3e4; color: #14532d; }
.syncing { background: #e0ecfb; color: #1e3a8a; }
.offline, .offline_mode, .not_mounted { background: #fdf2d8; color: #78350f; }
.stopped, .damaged { background: #fde2e1; color: #7f1d1d; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e5e7eb; }
.badge { font-size: .8em; padding: .1em .5em; border-radius: 999px; white-space: nowrap; }
.b-local { background: #dff3e4; } .b-pending { background: #e0ecfb; }
.b-cloud { background: #eceff3; } .b-local-only { background: #f3e8ff; }
form.inline { display: inline; margin: 0; }
button { font: inherit; padding: .2em .7em; margin: .1em; border-radius: 5px; border: 1px solid #9aa5b4; background: #fff; cursor: pointer; }
button.main { background: #1f3a5f; color: #fff; border-color: #1f3a5f; }
.msg { background: #fff7d6; padding: .5em 1em; border-radius: 6px; }
.err { background: #fde2e1; padding: .5em 1em; border-radius: 6px; }
.muted { color: #6b7280; }
.card { background: #fff; padding: .8em 1em; border-radius: 8px; margin-bottom: 1em; }
pre { background: #fff; padding: 1em; overflow: auto; }
"#;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/activity", "Activity"),
    ("/conflicts", "Conflicts"),
    ("/files", "Files"),
    ("/deleted", "Deleted"),
    ("/nodes", "Nodes"),
    ("/settings", "Settings"),
    ("/key", "Key"),
];

/// A whole page.
pub fn layout(here: &str, title: &str, msg: Option<&str>, body: &str) -> String {
    let nav: String = NAV
        .iter()
        .map(|(href, name)| {
            format!(
                "<a href=\"{href}\"{}>{name}</a>",
                if *href == here { " class=\"here\"" } else { "" }
            )
        })
        .collect();
    let msg = msg
        .filter(|m| !m.is_empty())
        .map(|m| {
            let class = if m.starts_with("error:") {
                "err"
            } else {
                "msg"
            };
            format!("<p class=\"{class}\" id=\"msg\">{}</p>", esc(m))
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · latus</title><meta name=\"viewport\" content=\"width=device-width\"><style>{CSS}</style><script src=\"/app.js\" defer></script></head><body><nav>{nav}</nav><main>{msg}{body}</main></body></html>",
        esc(title)
    )
}

/// A form that posts `fields` to `action` (with the CSRF token) behind one button.
pub fn button(
    action: &str,
    csrf: &str,
    fields: &[(&str, &str)],
    label: &str,
    id: &str,
    confirm: Option<&str>,
) -> String {
    let hidden: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    let confirm = confirm
        .map(|c| format!(" data-confirm=\"{}\"", esc(c)))
        .unwrap_or_default();
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{action}?csrf={csrf}\"{confirm}>{hidden}<button id=\"{}\" type=\"submit\">{}</button></form>",
        esc(id),
        esc(label)
    )
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The overview's live part.
pub fn overview(status: &Value, nodes: &Value, now: i64) -> String {
    let s = crate::status::summary(status, now);
    let q = &status["queue"];
    let mut o = format!(
        "<h1 id=\"node\">{}</h1><div class=\"sync {}\" id=\"sync-state\">{}</div>",
        esc(status["node_name"].as_str().unwrap_or("?")),
        s.state,
        esc(&s.line)
    );
    o += "<div class=\"card\"><table>";
    let row = |k: &str, v: String| format!("<tr><th>{k}</th><td>{v}</td></tr>");
    o += &row(
        "Waiting to upload",
        format!(
            "{} files, {}",
            u(&q["pending_files"]),
            when::bytes(u(&q["pending_bytes"]))
        ),
    );
    if let Some(eta) = status["eta_secs"].as_u64() {
        o += &row("Time left", when::duration(eta));
    }
    o += &row(
        "Uploaded this session",
        format!(
            "{} changes, {}",
            u(&q["published_events"]),
            when::bytes(u(&q["uploaded_bytes"]))
        ),
    );
    o += &row(
        "From other nodes",
        format!("{} changes applied", u(&q["remote_applied"])),
    );
    let conflicts = status["conflict_copies"].as_array().map_or(0, Vec::len);
    o += &row(
        "Conflicts",
        format!("<a href=\"/conflicts\">{conflicts}</a>"),
    );
    if u(&q["refused_events"]) > 0 {
        o += &row(
            "Refused records",
            format!("{} (see daemon.log)", u(&q["refused_events"])),
        );
    }
    if status["cache"]["over_cap"] == true {
        o += &row(
            "Cache",
            "FULL: nothing more can be evicted; raise the cap in Settings".into(),
        );
    }
    if let Some(e) = q["last_error"].as_str() {
        o += &row("Last error", esc(e));
    }
    o += &row(
        "Folder",
        esc(status["mountpoint"].as_str().unwrap_or("not mounted")),
    );
    o += "</table></div><h2>Nodes</h2><div class=\"card\"><table>";
    for n in nodes.as_array().into_iter().flatten() {
        let seen = n["last_seen"].as_i64().unwrap_or(0);
        let state = if n["this_node"] == true {
            "this node".to_string()
        } else if crate::status::online(seen, now) {
            format!("online (in contact {})", when::ago(seen, now))
        } else {
            format!("last in contact {}", when::ago(seen, now))
        };
        o += &format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(n["name"].as_str().unwrap_or("?")),
            esc(&state)
        );
    }
    o + "</table></div>"
}

pub fn activity(items: &Value) -> String {
    let mut o = String::from(
        "<table id=\"activity\"><tr><th>When</th><th>Node</th><th>What</th><th>Path</th><th>Size</th></tr>",
    );
    let list = items.as_array().cloned().unwrap_or_default();
    for a in list.iter().rev() {
        let path = match a["src_path"].as_str() {
            Some(src) => format!("{} → {}", esc(src), esc(a["path"].as_str().unwrap_or(""))),
            None => esc(a["path"].as_str().unwrap_or("")),
        };
        let waiting = if a["mivui"].is_null() {
            " <span class=\"badge b-pending\">waiting to upload</span>"
        } else {
            ""
        };
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{path}{waiting}</td><td>{}</td></tr>",
            esc(&when::local(a["time"].as_i64().unwrap_or(0))),
            esc(a["node"].as_str().unwrap_or("?")),
            esc(a["event_type"].as_str().unwrap_or("?")),
            when::bytes(u(&a["size"]))
        );
    }
    if list.is_empty() {
        o += "<tr><td colspan=5 class=muted>Nothing has happened in the volume yet.</td></tr>";
    }
    o + "</table>"
}

pub fn conflicts(list: &Value, csrf: &str) -> String {
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "<p id=\"no-conflicts\">No conflicts: every file has one version.</p>".into();
    }
    let mut o = String::from(
        "<p>When two nodes change a file before seeing each other's change, the newest keeps the name and the other is kept beside it. Choose which one keeps the name; the other stays in history.</p><table id=\"conflicts\"><tr><th>Copy</th><th>Version from</th><th>Keep</th></tr>",
    );
    for (i, c) in list.iter().enumerate() {
        let path = c["path"].as_str().unwrap_or("");
        let mine = c["mine"] == true;
        let f = |keep: &str, label: &str| {
            button(
                "/conflicts/resolve",
                csrf,
                &[("path", path), ("keep", keep)],
                label,
                &format!("keep-{keep}-{i}"),
                None,
            )
        };
        o += &format!(
            "<tr><td>{}<br><span class=muted>beside {}</span></td><td>{} ({} UTC){}</td><td>{}{}{}</td></tr>",
            esc(path),
            esc(c["original"].as_str().unwrap_or("")),
            esc(c["node"].as_str().unwrap_or("?")),
            esc(c["when"].as_str().unwrap_or("")),
            if mine { ", this node" } else { "" },
            f("mine", "Keep mine"),
            f("theirs", "Keep theirs"),
            f("both", "Keep both")
        );
    }
    o + "</table>"
}

fn badge(state: &str) -> String {
    let text = match state {
        "local" => "here",
        "pending" => "uploading",
        "cloud" => "in the cloud",
        "local-only" => "this node only",
        "cold" => "in cold storage",
        s => s,
    };
    format!("<span class=\"badge b-{}\">{text}</span>", esc(state))
}

/// Placement buttons for one folder (or file).
fn placement_buttons(path: &str, csrf: &str, id: &str) -> String {
    [
        ("pinned", "Keep offline"),
        ("online-only", "Free up space"),
        ("local-only", "Local only"),
        ("cold", "Cold storage"),
        ("auto", "Automatic"),
    ]
    .iter()
    .map(|(rule, label)| {
        button(
            "/files/placement",
            csrf,
            &[("path", path), ("rule", rule)],
            label,
            &format!("{rule}-{id}"),
            None,
        )
    })
    .collect()
}

/// The file browser's live part: the folder's placement, its download
/// progress, and its entries.
pub fn files(path: &str, placement: &Value, left: &Value, entries: &Value, csrf: &str) -> String {
    let crumbs = {
        let mut c = String::from("<a href=\"/files\">latus</a>");
        let mut acc = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            c += &format!(" / <a href=\"/files?path={}\">{}</a>", enc(&acc), esc(part));
        }
        c
    };
    let rule = placement["placement"]["rule"].as_str().unwrap_or("auto");
    let items = left.as_array().cloned().unwrap_or_default();
    let left_bytes: u64 = items.iter().map(|i| u(&i["size"])).sum();
    let progress = match (rule, items.len()) {
        ("pinned", 0) => {
            "<span id=\"progress\" data-done=\"1\">Kept offline: everything is here.</span>"
                .to_string()
        }
        ("pinned", n) => format!(
            "<span id=\"progress\" data-done=\"0\">Downloading: {n} files ({}) still in the cloud…</span>",
            when::bytes(left_bytes)
        ),
        (_, 0) => "<span id=\"progress\" data-done=\"1\">Everything below is here.</span>".into(),
        (_, n) => format!(
            "<span id=\"progress\" data-done=\"0\">{n} files ({}) are in the cloud only.</span>",
            when::bytes(left_bytes)
        ),
    };
    let mut o = format!(
        "<p>{crumbs}</p><div class=\"card\">This folder: <b id=\"rule\">{}</b>{} · {progress}<br>{}{}</div>",
        esc(rule),
        placement["placement"]["from"]
            .as_str()
            .filter(|f| *f != path)
            .map(|f| format!(" (set on {})", esc(f)))
            .unwrap_or_default(),
        placement_buttons(path, csrf, "here"),
        if path.is_empty() {
            String::new()
        } else {
            format!(
                " <a id=\"history-link\" href=\"/history?path={}\">History and restore…</a>",
                enc(path)
            )
        }
    );
    o += "<table id=\"files\"><tr><th>Name</th><th>State</th><th>Size</th><th>Placement</th><th></th></tr>";
    for (i, e) in entries.as_array().into_iter().flatten().enumerate() {
        let p = e["path"].as_str().unwrap_or("");
        let name = e["name"].as_str().unwrap_or("");
        let dir = e["kind"] == "dir";
        let link = if dir {
            format!("<a href=\"/files?path={}\">{}/</a>", enc(p), esc(name))
        } else {
            format!(
                "{} <a class=muted href=\"/history?path={}\">versions</a>",
                esc(name),
                enc(p)
            )
        };
        o += &format!(
            "<tr data-path=\"{}\"><td>{link}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p),
            if dir {
                String::new()
            } else {
                badge(e["state"].as_str().unwrap_or("?"))
            },
            if dir {
                String::new()
            } else {
                when::bytes(u(&e["size"]))
            },
            esc(e["placement"].as_str().unwrap_or("auto")),
            if dir {
                placement_buttons(p, csrf, &format!("row{i}"))
            } else {
                String::new()
            }
        );
    }
    o + "</table>"
}

/// History of a folder (restore as it was at a time, with a preview) or a
/// file (its versions).
pub fn history(
    path: &str,
    at_input: &str,
    preview: Option<(&Value, i64)>,
    versions: Option<&Value>,
    csrf: &str,
) -> String {
    let mut o = format!(
        "<h1>History of {}</h1><div class=\"card\"><form method=\"get\" action=\"/history\"><input type=\"hidden\" name=\"path\" value=\"{}\">Restore as it was at <input id=\"at\" name=\"at\" value=\"{}\" placeholder=\"1h30m, 2d, 2026-11-26 14:05\"> <button id=\"preview\" type=\"submit\">Preview</button></form><p class=muted>A time in local time, or how long ago (30m, 2h, 1h30m, 3d). Nothing changes until you restore; what a restore replaces or removes stays in history.</p></div>",
        esc(path),
        esc(path),
        esc(at_input)
    );
    if let Some((plan, at_ns)) = preview {
        let changes = plan["changes"].as_array().cloned().unwrap_or_default();
        o += &format!(
            "<div class=\"card\" id=\"plan\"><p>As it was at <b>{}</b>: {} files to bring back, {} folders to make, {} entries to remove, {} already as they were.</p><ul>",
            esc(&when::local(at_ns)),
            u(&plan["files_restored"]),
            u(&plan["folders_made"]),
            u(&plan["removed"]),
            u(&plan["unchanged"])
        );
        for c in &changes {
            o += &format!(
                "<li>{} <code>{}</code></li>",
                esc(c["action"].as_str().unwrap_or("?")),
                esc(c["path"].as_str().unwrap_or("?"))
            );
        }
        o += "</ul>";
        if changes.is_empty() {
            o += "<p>Nothing to change: it is already as it was then.</p>";
        } else {
            o += &button(
                "/history/restore",
                csrf,
                &[("path", path), ("at", &at_ns.to_string())],
                "Restore",
                "restore",
                None,
            );
        }
        o += "</div>";
    }
    if let Some(v) = versions {
        o += "<h2>Versions</h2><table id=\"versions\"><tr><th>When</th><th>Node</th><th>Change</th><th>Size</th><th></th></tr>";
        for e in v.as_array().into_iter().flatten().rev() {
            let m = e["mivui"].to_string();
            o += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&when::local(e["time"].as_i64().unwrap_or(0))),
                esc(e["node"].as_str().unwrap_or("?")),
                esc(e["event_type"].as_str().unwrap_or("?")),
                when::bytes(u(&e["size"])),
                if e["hash"].is_null() {
                    String::new()
                } else {
                    button(
                        "/versions/restore",
                        csrf,
                        &[("path", path), ("version", &m)],
                        "Restore this version",
                        &format!("restore-{m}"),
                        None,
                    )
                }
            );
        }
        o += "</table>";
    }
    o
}

pub fn deleted(list: &Value, csrf: &str) -> String {
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "<p>No deleted files.</p>".into();
    }
    let mut o = String::from(
        "<table id=\"deleted\"><tr><th>Path</th><th>Deleted</th><th>By</th><th>Size</th><th></th></tr>",
    );
    for (i, d) in list.iter().enumerate() {
        let p = d["path"].as_str().unwrap_or("");
        o += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p),
            esc(&when::local(d["time"].as_i64().unwrap_or(0))),
            esc(d["node"].as_str().unwrap_or("?")),
            when::bytes(u(&d["size"])),
            button(
                "/deleted/restore",
                csrf,
                &[("path", p)],
                "Restore",
                &format!("undelete-{i}"),
                None
            )
        );
    }
    o + "</table>"
}

pub fn nodes(list: &Value, csrf: &str, now: i64) -> String {
    let mut o = String::from(
        "<table id=\"nodes\"><tr><th>Name</th><th>Contact</th><th>Changes</th><th></th></tr>",
    );
    for n in list.as_array().into_iter().flatten() {
        let id = n["id"].as_str().unwrap_or("");
        let this = n["this_node"] == true;
        let seen = n["last_seen"].as_i64().unwrap_or(0);
        let contact = if this {
            "this node".to_string()
        } else if crate::status::online(seen, now) {
            format!("online (in contact {})", when::ago(seen, now))
        } else {
            format!(
                "last in contact {} ({})",
                when::ago(seen, now),
                when::local(seen)
            )
        };
        let action = if this {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/settings?csrf={csrf}\"><input type=\"hidden\" name=\"key\" value=\"name\"><input id=\"rename\" name=\"value\" value=\"{}\"><button id=\"rename-button\" type=\"submit\">Rename</button></form>",
                esc(n["name"].as_str().unwrap_or(""))
            )
        } else {
            button(
                "/nodes/remove",
                csrf,
                &[("id", id)],
                "Remove",
                &format!("remove-{id}"),
                Some(
                    "Forget this node? Its files stay. (It is not locked out: it still holds the key.)",
                ),
            )
        };
        o += &format!(
            "<tr><td>{}<br><span class=muted>{}</span></td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(n["name"].as_str().unwrap_or("?")),
            esc(id),
            esc(&contact),
            u(&n["events_published"])
        );
    }
    o + "</table><p class=muted>A new name is published at the next mount.</p>"
}

pub fn settings(current: &[(&str, String)], csrf: &str) -> String {
    let help = |k: &str| match k {
        "cache-size" => "Cap of the local cache, e.g. 20G (applied now).",
        "poll-ms" => "How often the log is checked for other nodes' changes, in ms.",
        "keep-versions" => "Old versions kept per file by prune (a number, or all).",
        "keep-days" => "Keep every version younger than this many days (or forever).",
        "conflict-policy" => "newest (the newest change keeps the name) or first.",
        "hydration" => "PROGRAM=download|refuse|range:SIZE|default, e.g. baloo_file=refuse.",
        "hydration-default" => "What programs not named get: download, refuse or range:SIZE.",
        "ignore" => "Names never uploaded, comma-separated patterns.",
        "name" => "This node's name (shown in conflict copies).",
        _ => "",
    };
    let mut o =
        String::from("<table id=\"settings\"><tr><th>Setting</th><th>Value</th><th></th></tr>");
    for (k, v) in current {
        let shown = if *k == "hydration" { "" } else { v.as_str() };
        o += &format!(
            "<tr><td><b>{k}</b><br><span class=muted>{}</span>{}</td><td colspan=2><form class=\"inline\" method=\"post\" action=\"/settings?csrf={csrf}\"><input type=\"hidden\" name=\"key\" value=\"{k}\"><input id=\"set-{k}\" name=\"value\" value=\"{}\" size=\"40\"> <button id=\"save-{k}\" type=\"submit\">Save</button></form></td></tr>",
            esc(help(k)),
            if *k == "hydration" {
                format!("<br><code>{}</code>", esc(v))
            } else {
                String::new()
            },
            esc(shown)
        );
    }
    o + "</table><p class=muted>Settings other than the cache cap take effect at the next mount.</p>"
}

pub fn key_page(csrf: &str) -> String {
    format!(
        "<h1>Volume key</h1><div class=\"card\"><p>The key file lets another computer join this volume. <b>Anyone with it can read and change every file.</b> Keep it like a password; move it by a USB stick or a channel you trust.</p><form method=\"post\" action=\"/key/export?csrf={csrf}\"><label><input type=\"checkbox\" id=\"confirm\" name=\"confirm\" value=\"yes\"> I understand: show the key</label> <button id=\"export\" type=\"submit\">Show key file</button></form></div>"
    )
}

pub fn key_shown(json: &str) -> String {
    format!(
        "<h1>Volume key</h1><p>Save this as <code>key.json</code> on the other computer, then run there: <code>latus init --cloud URL --key-file key.json</code>.</p><pre id=\"keyfile\">{}</pre><p><a download=\"latus-key.json\" href=\"data:application/json,{}\">Download key.json</a></p>",
        esc(json),
        enc(json)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_volume_are_escaped() {
        let list = serde_json::json!([{"path": "<script>x</script> (conflict from n 2026-01-01 000000)",
            "original": "<script>x</script>", "node": "n\"><b>", "when": "", "mine": false}]);
        let html = conflicts(&list, "t");
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("\"><b>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn forms_carry_the_csrf_token() {
        let html = button("/x", "tok", &[("path", "a b")], "Go", "go", None);
        assert!(html.contains("action=\"/x?csrf=tok\""), "{html}");
        assert!(html.contains("value=\"a b\""));
        assert_eq!(enc("a b/ü"), "a%20b/%C3%BC");
    }
}
