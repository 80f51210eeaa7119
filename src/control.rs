//! The control socket: how the CLI talks to a running daemon (the daemon
//! owns redb; nobody else opens it while it runs). One JSON request per
//! connection, one JSON response.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    PathStatus {
        path: String,
    },
    Log {
        since: u64,
        limit: usize,
    },
    /// The log's head as this node read it (`sync::chain`).
    LogHead,
    /// Makes a checkpoint of the log now (`sync::checkpoint`).
    Checkpoint,
    SyncWait {
        timeout_secs: u64,
    },
    Unmount,
    Versions {
        path: String,
    },
    Restore {
        path: String,
        version: Option<u64>,
        /// Nanoseconds since the epoch.
        at: Option<i64>,
        to: Option<String>,
        /// Only report what would change.
        #[serde(default)]
        dry_run: bool,
    },
    Nodes,
    ForgetNode {
        id: String,
    },
    Prune {
        dry_run: bool,
    },
    /// The volume against its log (`sync::check`).
    Check {
        read_data: bool,
    },
    /// Sets a placement rule (`auto` clears it).
    Placement {
        path: String,
        rule: String,
    },
    /// Requests restores of the cold content below a path (`thaw`).
    Thaw {
        path: String,
    },
    /// Files below a path whose content is only in the cloud.
    CloudOnly {
        path: String,
    },
    /// Downloads one file's whole content.
    Hydrate {
        ino: u64,
    },
    SetCacheCap {
        bytes: u64,
    },
    /// Conflict copies in the tree (`conflicts`).
    Conflicts,
    /// Keeps one version of a conflict (`mine`, `theirs`, `both`).
    ResolveConflict {
        path: String,
        keep: String,
    },
    /// The volume's newest records and this node's waiting changes
    /// (`status::activity`).
    Activity {
        limit: usize,
    },
    /// A folder's entries with their states (the web app's browser).
    ListDir {
        path: String,
    },
    /// Deleted files that can be restored.
    Deleted {
        limit: usize,
    },
    /// The web app's address with this session's token.
    UiUrl,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Self {
        Self {
            ok: true,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
            error: None,
        }
    }
    pub fn err(e: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            data: serde_json::Value::Null,
            error: Some(e.to_string()),
        }
    }
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("no daemon is answering on {path}: {source}")]
    NotRunning {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad control message: {0}")]
    Protocol(#[from] serde_json::Error),
    #[error(
        "the daemon stopped before it answered (unmounted, or it crashed: see daemon.log in the home)"
    )]
    Stopped,
    #[error("{0}")]
    Daemon(String),
}

/// Sends one request and waits for the answer.
pub fn call(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let mut s = UnixStream::connect(socket).map_err(|source| ControlError::NotRunning {
        path: socket.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.trim().is_empty() {
        return Err(ControlError::Stopped);
    }
    let resp: Response = serde_json::from_str(&answer)?;
    if resp.ok {
        Ok(resp.data)
    } else {
        Err(ControlError::Daemon(resp.error.unwrap_or_default()))
    }
}

/// Connections being answered (one daemon per process).
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits (at most `timeout`) until every connection being answered has its
/// answer: a daemon that stops (an `unmount` request ends the session)
/// answers before it exits, so no caller sees a cut connection.
pub fn wait_answered(timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while IN_FLIGHT.load(std::sync::atomic::Ordering::Acquire) > 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Serves requests until the listener is closed; each connection gets a thread.
pub fn serve<H>(listener: UnixListener, handler: H)
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let handler = std::sync::Arc::new(handler);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // Only this user (or root) steers the daemon, whatever the
        // socket's mode.
        if !peer_allowed(&conn) {
            tracing::warn!("a control connection from another user was refused");
            continue;
        }
        let handler = handler.clone();
        IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name("latus-control".into())
            .spawn(move || {
                if let Err(e) = serve_one(conn, &*handler) {
                    tracing::debug!(error = %e, "control connection ended with an error");
                }
                IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            });
        if spawned.is_err() {
            IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// The peer runs as the daemon's user, or as root (`SO_PEERCRED`).
fn peer_allowed(conn: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    rc == 0 && (cred.uid == me || cred.uid == 0)
}

fn serve_one(conn: UnixStream, handler: &dyn Fn(Request) -> Response) -> Result<(), ControlError> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handler(req),
        Err(e) => Response::err(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp)?;
    out.push(b'\n');
    let mut w = conn;
    w.write_all(&out)?;
    Ok(())
}
