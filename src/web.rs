//! The local web app (like Syncthing's GUI): served by the daemon on
//! 127.0.0.1 only, opened with `latus ui`. Every page and action goes
//! through the daemon's control requests (`control::Request`), the same
//! the CLI sends, so nothing here decides about sync. Who may use it:
//! `auth`. Pages are rendered on the server (`pages`), with a little
//! JavaScript that refreshes the live parts.

mod auth;
mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

pub use auth::{Keys, Seen, Verdict, judge};

use crate::control::{self, Request};
use crate::home::Home;

/// Answers a control request (the daemon's handler).
pub type Handler = Arc<dyn Fn(Request) -> control::Response + Send + Sync>;

/// A running web app.
pub struct WebServer {
    pub addr: SocketAddr,
    /// The address with the session token: what `latus ui` opens.
    pub url: String,
}

struct App {
    handler: Handler,
    home: Home,
    keys: Keys,
}

type St = State<Arc<App>>;
type Params = HashMap<String, String>;

/// Binds 127.0.0.1 on a free port and serves on a thread of its own.
pub fn start(handler: Handler, home: Home) -> std::io::Result<WebServer> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let keys = Keys::new(addr.to_string());
    let url = format!("http://{addr}/?token={}", keys.session);
    let app = Arc::new(App {
        handler,
        home,
        keys,
    });
    std::thread::Builder::new()
        .name("latus-web".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "the web app could not start");
                    return;
                }
            };
            rt.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => axum::serve(l, router(app)).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "the web app stopped");
                }
            });
        })?;
    Ok(WebServer { addr, url })
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/frag/overview", get(overview_frag))
        .route("/activity", get(activity_page))
        .route("/frag/activity", get(activity_frag))
        .route("/conflicts", get(conflicts_page))
        .route("/conflicts/resolve", post(resolve))
        .route("/files", get(files_page))
        .route("/frag/files", get(files_frag))
        .route("/files/placement", post(placement))
        .route("/history", get(history_page))
        .route("/history/restore", post(restore_at))
        .route("/versions/restore", post(restore_version))
        .route("/deleted", get(deleted_page))
        .route("/deleted/restore", post(undelete))
        .route("/nodes", get(nodes_page))
        .route("/nodes/remove", post(remove_node))
        .route("/settings", get(settings_page).post(set_setting))
        .route("/key", get(key_page))
        .route("/key/export", post(key_export))
        .route("/api/status", get(api_status))
        .route("/app.js", get(app_js))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The rules of `auth`, before any handler runs; and headers that keep
/// the pages out of frames and other sites' scripts.
async fn guard(State(app): St, req: axum::extract::Request, next: Next) -> Response {
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let query: Params = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let seen = Seen {
        post: req.method() == axum::http::Method::POST,
        host: text(header::HOST),
        origin: text(header::ORIGIN),
        cookie: text(header::COOKIE).and_then(auth::cookie_value),
        url_token: query.get("token").map(String::as_str),
        csrf: h
            .get("x-latus-csrf")
            .and_then(|v| v.to_str().ok())
            .or(query.get("csrf").map(String::as_str)),
    };
    let mut resp = match judge(&app.keys, &seen) {
        Verdict::Pass => next.run(req).await,
        Verdict::SetCookie => {
            let mut r = Redirect::to(req.uri().path()).into_response();
            let cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/",
                auth::COOKIE,
                app.keys.session
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Verdict::Deny(code, why) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN),
            why,
        )
            .into_response(),
    };
    let hs = resp.headers_mut();
    hs.insert("x-frame-options", HeaderValue::from_static("DENY"));
    hs.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    hs.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    hs.insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

/// Sends a control request on the blocking pool.
async fn call(app: &App, req: Request) -> Result<Value, String> {
    let h = app.handler.clone();
    match tokio::task::spawn_blocking(move || h(req)).await {
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => Err(r.error.unwrap_or_else(|| "failed".into())),
        Err(e) => Err(e.to_string()),
    }
}

fn now() -> i64 {
    crate::vfs::now_nanos()
}

fn page(here: &str, title: &str, q: &Params, body: &str) -> Html<String> {
    Html(pages::layout(
        here,
        title,
        q.get("msg").map(String::as_str),
        body,
    ))
}

/// After a change: back to `to`, with what happened.
fn back(to: &str, result: Result<String, String>) -> Redirect {
    let msg = match result {
        Ok(m) => m,
        Err(e) => format!("error: {e}"),
    };
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}msg={}", pages::enc(&msg)))
}

fn live(url: &str, inner: &str) -> String {
    format!("<div data-refresh=\"{}\">{inner}</div>", pages::esc(url))
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::APP_JS,
    )
}

async fn api_status(State(app): St) -> Response {
    match call(&app, Request::Status).await {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn overview_html(app: &App) -> String {
    let status = call(app, Request::Status).await.unwrap_or_default();
    let nodes = call(app, Request::Nodes).await.unwrap_or_default();
    pages::overview(&status, &nodes, now())
}

async fn overview_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let inner = overview_html(&app).await;
    page("/", "Overview", &q, &live("/frag/overview", &inner))
}

async fn overview_frag(State(app): St) -> Html<String> {
    Html(overview_html(&app).await)
}

async fn activity_html(app: &App) -> String {
    let items = call(app, Request::Activity { limit: 200 })
        .await
        .unwrap_or_default();
    pages::activity(&items)
}

async fn activity_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let inner = activity_html(&app).await;
    page(
        "/activity",
        "Activity",
        &q,
        &format!("<h1>Activity</h1>{}", live("/frag/activity", &inner)),
    )
}

async fn activity_frag(State(app): St) -> Html<String> {
    Html(activity_html(&app).await)
}

async fn conflicts_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let list = call(&app, Request::Conflicts).await.unwrap_or_default();
    page(
        "/conflicts",
        "Conflicts",
        &q,
        &format!(
            "<h1>Conflicts</h1>{}",
            pages::conflicts(&list, &app.keys.csrf)
        ),
    )
}

async fn resolve(State(app): St, Form(f): Form<Params>) -> Redirect {
    let path = f.get("path").cloned().unwrap_or_default();
    let keep = f.get("keep").cloned().unwrap_or_default();
    let r = call(
        &app,
        Request::ResolveConflict {
            path: path.clone(),
            keep: keep.clone(),
        },
    )
    .await
    .map(|v| match v["moved_to"].as_str() {
        Some(to) => format!("Kept both: {} and {to}", v["path"].as_str().unwrap_or("")),
        None => format!("Resolved {}: kept {keep}", v["path"].as_str().unwrap_or("")),
    });
    back("/conflicts", r)
}

async fn files_html(app: &App, path: &str) -> String {
    let placement = call(
        app,
        Request::PathStatus {
            path: path.to_string(),
        },
    )
    .await;
    let entries = call(
        app,
        Request::ListDir {
            path: path.to_string(),
        },
    )
    .await;
    let left = call(
        app,
        Request::CloudOnly {
            path: path.to_string(),
        },
    )
    .await
    .unwrap_or_default();
    match (placement, entries) {
        (Ok(p), Ok(e)) => pages::files(path, &p, &left, &e, &app.keys.csrf),
        (Err(e), _) | (_, Err(e)) => format!("<p class=err>{}</p>", pages::esc(&e)),
    }
}

fn path_param(q: &Params) -> String {
    q.get("path")
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_default()
}

async fn files_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let path = path_param(&q);
    let inner = files_html(&app, &path).await;
    page(
        "/files",
        "Files",
        &q,
        &live(&format!("/frag/files?path={}", pages::enc(&path)), &inner),
    )
}

async fn files_frag(State(app): St, Query(q): Query<Params>) -> Html<String> {
    Html(files_html(&app, &path_param(&q)).await)
}

async fn placement(State(app): St, Form(f): Form<Params>) -> Redirect {
    let path = path_param(&f);
    let rule = f.get("rule").cloned().unwrap_or_default();
    // Pinned content downloads in the background (the daemon's pinner);
    // the page shows the progress.
    let r = call(
        &app,
        Request::Placement {
            path: path.clone(),
            rule: rule.clone(),
        },
    )
    .await
    .map(|v| match rule.as_str() {
        "online-only" => format!(
            "Freed {} in {} files ({} kept: not yet uploaded or open)",
            crate::when::bytes(v["bytes"].as_u64().unwrap_or(0)),
            v["files"],
            v["kept"]
        ),
        "pinned" => "Kept offline: downloading what is in the cloud".into(),
        "cold" => format!(
            "Cold storage: {} chunks moved to the cold tier, freed {} in {} files",
            v["cold"]["chunks_cooled"],
            crate::when::bytes(v["bytes"].as_u64().unwrap_or(0)),
            v["files"]
        ),
        other => format!("Placement: {other}"),
    });
    let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
    let to = match f.get("back").map(String::as_str) {
        Some("parent") => parent.to_string(),
        _ => path.clone(),
    };
    back(&format!("/files?path={}", pages::enc(&to)), r)
}

async fn history_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let path = path_param(&q);
    let at_input = q.get("at").cloned().unwrap_or_default();
    let mut err = None;
    let mut preview = None;
    if !at_input.trim().is_empty() {
        match crate::when::parse_time(&at_input, now()) {
            Ok(at) => match call(
                &app,
                Request::Restore {
                    path: path.clone(),
                    version: None,
                    at: Some(at),
                    to: None,
                    dry_run: true,
                },
            )
            .await
            {
                Ok(plan) => preview = Some((plan, at)),
                Err(e) => err = Some(e),
            },
            Err(e) => err = Some(e.to_string()),
        }
    }
    let kind = call(&app, Request::PathStatus { path: path.clone() })
        .await
        .map(|v| v["kind"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let versions = if kind == "dir" {
        None
    } else {
        call(&app, Request::Versions { path: path.clone() })
            .await
            .ok()
    };
    let body = pages::history(
        &path,
        &at_input,
        preview.as_ref().map(|(p, at)| (p, *at)),
        versions.as_ref(),
        &app.keys.csrf,
    );
    let msg = err.map(|e| format!("error: {e}"));
    let mut q = q.clone();
    if let Some(m) = msg {
        q.insert("msg".into(), m);
    }
    page("/files", "History", &q, &body)
}

async fn restore_at(State(app): St, Form(f): Form<Params>) -> Redirect {
    let path = path_param(&f);
    let Some(at) = f.get("at").and_then(|a| a.parse::<i64>().ok()) else {
        return back("/files", Err("no time given".into()));
    };
    let r = call(
        &app,
        Request::Restore {
            path: path.clone(),
            version: None,
            at: Some(at),
            to: None,
            dry_run: false,
        },
    )
    .await
    .map(|v| {
        format!(
            "Restored {path} as it was at {}: {} files brought back, {} removed (they stay in history)",
            crate::when::local(at),
            v["files_restored"],
            v["removed"]
        )
    });
    back(&format!("/files?path={}", pages::enc(&path)), r)
}

async fn restore_version(State(app): St, Form(f): Form<Params>) -> Redirect {
    let path = path_param(&f);
    let version = f.get("version").and_then(|v| v.parse().ok());
    let r = call(
        &app,
        Request::Restore {
            path: path.clone(),
            version,
            at: None,
            to: None,
            dry_run: false,
        },
    )
    .await
    .map(|_| format!("Restored {path}"));
    back(&format!("/history?path={}", pages::enc(&path)), r)
}

async fn deleted_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let list = call(&app, Request::Deleted { limit: 500 })
        .await
        .unwrap_or_default();
    page(
        "/deleted",
        "Deleted files",
        &q,
        &format!(
            "<h1>Deleted files</h1>{}",
            pages::deleted(&list, &app.keys.csrf)
        ),
    )
}

async fn undelete(State(app): St, Form(f): Form<Params>) -> Redirect {
    let path = path_param(&f);
    let r = call(
        &app,
        Request::Restore {
            path: path.clone(),
            version: None,
            at: None,
            to: None,
            dry_run: false,
        },
    )
    .await
    .map(|_| format!("Restored {path}"));
    back("/deleted", r)
}

async fn nodes_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let list = call(&app, Request::Nodes).await.unwrap_or_default();
    page(
        "/nodes",
        "Nodes",
        &q,
        &format!(
            "<h1>Nodes</h1>{}",
            pages::nodes(&list, &app.keys.csrf, now())
        ),
    )
}

async fn remove_node(State(app): St, Form(f): Form<Params>) -> Redirect {
    let id = f.get("id").cloned().unwrap_or_default();
    let r = call(&app, Request::ForgetNode { id })
        .await
        .map(|_| "Forgot the node (its files stay)".to_string());
    back("/nodes", r)
}

async fn settings_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    let body = match app.home.load_config() {
        Ok(cfg) => pages::settings(&crate::settings::current(&cfg), &app.keys.csrf),
        Err(e) => format!("<p class=err>{}</p>", pages::esc(&e.to_string())),
    };
    page(
        "/settings",
        "Settings",
        &q,
        &format!("<h1>Settings</h1>{body}"),
    )
}

async fn set_setting(State(app): St, headers: HeaderMap, Form(f): Form<Params>) -> Redirect {
    let key = f.get("key").cloned().unwrap_or_default();
    let value = f.get("value").cloned().unwrap_or_default();
    let home = app.home.clone();
    let changed = tokio::task::spawn_blocking(move || crate::settings::set(&home, &key, &value))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let r = match changed {
        Ok(c) => match c.cache_bytes {
            Some(bytes) => call(&app, Request::SetCacheCap { bytes })
                .await
                .map(|_| format!("{} set to {} (in force now)", c.key, c.value)),
            None => Ok(format!(
                "{} set to {} (takes effect at the next mount)",
                c.key, c.value
            )),
        },
        Err(e) => Err(e),
    };
    // Back to the page the form was on (renaming is on the nodes page).
    let from_nodes = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|r| r.contains("/nodes"));
    back(if from_nodes { "/nodes" } else { "/settings" }, r)
}

async fn key_page(State(app): St, Query(q): Query<Params>) -> Html<String> {
    page("/key", "Key", &q, &pages::key_page(&app.keys.csrf))
}

async fn key_export(State(app): St, Form(f): Form<Params>) -> Response {
    if f.get("confirm").map(String::as_str) != Some("yes") {
        return back(
            "/key",
            Err("tick the box first: the key opens every file".into()),
        )
        .into_response();
    }
    let home = app.home.clone();
    let json = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let cfg = home.load_config().map_err(|e| e.to_string())?;
        let key = crate::home::load_key(&home).map_err(|e| e.to_string())?;
        let kf = crate::crypto::KeyFile::new(&key, cfg.created);
        serde_json::to_string_pretty(&kf).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match json {
        Ok(j) => Html(pages::layout("/key", "Key", None, &pages::key_shown(&j))).into_response(),
        Err(e) => back("/key", Err(e)).into_response(),
    }
}
