//! syncbench: how long a change on one latus node takes to show on another,
//! what an idle node costs the cloud, and how fast a node applies a large
//! batch of other nodes' events.
//!
//!     cargo build --release --benches
//!     eval "$(scripts/local-cloud.sh start target/moto)"   # for the aws figures
//!     cargo bench --bench syncbench -- [--cloud dir] [--cloud aws] [--rounds 10]
//!         [--rewrite-rounds 5] [--poll-ms 3000 --poll-ms 500] [--idle-secs 30]
//!         [--idle-dir] [--files 10000] [--aws-files 1000] [--files-per-dir 1000]
//!     scripts/local-cloud.sh stop target/moto
//!
//! Nodes are separate homes on this machine that share one cloud: `dir` (a
//! folder in the work dir) and `aws` (S3 + DynamoDB at AWS_ENDPOINT_URL,
//! e.g. moto; a fresh bucket and table per run, left in place). Default:
//! `dir`, and `aws` too when AWS_ENDPOINT_URL is set. Node A is made with
//! `latus init --cloud URL --name a`, the others join it with its exported
//! key (`init --key-file`). The poll interval (`poll_ms` in config.json) is
//! set before each mount. On `aws`, every node reaches the cloud through
//! its own counting HTTP proxy in this process (AWS_ENDPOINT_URL of its
//! commands and daemon points at the proxy), which counts requests by kind,
//! their waits for a response, and bytes.
//!
//! For each backend, and each `--poll-ms` (the first is the default, 3000,
//! measured last so that the apply figures run with it):
//!
//! 1. Propagation: A writes a small new file (`--size` bytes, unique
//!    content) and closes it; the time from `close` returning until B reads
//!    the same bytes through its mount (B retries every 5 ms), `--rounds`
//!    times after a warm-up round; each round first waits a random part of
//!    a poll interval, so the close falls anywhere in B's poll cycle. Also
//!    when A had published the event (A's `queue.published_events`). Then
//!    the same, `--rewrite-rounds` times, with one file rewritten each round
//!    (alternately `--size` and half as many bytes) that B has read before
//!    (its kernel caches it): B may read the previous version meanwhile,
//!    never anything else.
//! 2. Idle cost (`aws`; `dir` with `--idle-dir`): after B's mount settled
//!    (`sync --wait`, then 2 s), B is watched for `--idle-secs`: requests
//!    and bytes through its proxy (HTTP bytes, without TCP/TLS overhead;
//!    moto closes every connection after one request, so connections =
//!    requests there) and its daemon's CPU time, scaled to a minute.
//! 3. Apply: A creates `--files` files (`--aws-files` on aws) of `--size`
//!    bytes in folders of `--files-per-dir`, then `latus sync --wait`. Then,
//!    one after the other:
//!    - B, mounted all along (it applies A's batches as they arrive): from
//!      A's sync returning until B's `queue.log_seen` reaches A's and every
//!      file is listed through B's mount; also how many of A's records B
//!      had applied by then, and when (from A's first create) B's
//!      `log_seen` reached A's last record;
//!    - D, a node that was unmounted while A wrote and uploaded: from
//!      `latus mount` until the same;
//!    - C, a new node: from `latus init --key-file` until the same.
//!
//!    The events a node applied are the log records it had not seen.
//!
//! Prints a report per backend, then one JSON line. Every mount is
//! unmounted on every path (a guard per node; a daemon that does not stop
//! is killed by the PID it reported). ^C stops the bench cleanly.
//!
//! Results on the development machine (2 vCPUs, busy with other test runs;
//! release build; a fresh moto from scripts/local-cloud.sh; default options,
//! 4 min 9 s):
//!
//! | figure                                         | dir            | aws (moto)     |
//! |------------------------------------------------|----------------|----------------|
//! | close -> readable, poll 3000: median/p90/max   | 1.97/2.68/2.94 | 1.55/3.04/3.20 |
//! | same, file rewritten (5 rounds): median/max    | 1.57/3.19      | 2.13/2.89      |
//! | close -> readable, poll 500: median/p90/max    | 0.55/0.79/0.80 | 0.60/0.78/0.78 |
//! | close -> A published (median)                  | 0.31           | 0.33-0.38      |
//! | idle, poll 3000: requests/min, sent, received  | -              | 20, 20 kB, 7 kB |
//! | idle, poll 500: requests/min, sent, received   | -              | 118, 120 kB, 43 kB |
//! | apply: files (A's create / sync --wait, s)     | 10000 (5.9/5.4)| 1000 (0.2/15.5)|
//! | B mounted: A's sync -> all listed              | 2.08 s (2075 left) | 2.43 s (134 left) |
//! | D remounted: mount -> all listed, events/s     | 1.22 s, 8178/s | 0.45 s, 2238/s |
//! | C new: init -> all listed, events/s            | 1.24 s, 8084/s | 0.67 s, 1555/s |
//!
//! Idle requests are one DynamoDB Query per poll (the next poll is
//! `poll_ms` after a pass ends: 118, not 120, a minute at 500). Every
//! propagation is A's 300 ms upload debounce (A published after 0.31 s),
//! then B's poll wait (uniform over 0..poll_ms), then tens of ms; ten
//! rounds leave the medians about +-0.5 s noisy at 3000. On moto, A's
//! upload time is mostly TransactWriteItems (0.8 s each here), which moto
//! slows down as the table grows.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use clap::{Parser, ValueEnum};
use latus::control::{self, Request};
use latus::home::Home;
use serde_json::{Value, json};
use uuid::Uuid;

// The report has its own layout, so the table helpers go unused here.
#[allow(dead_code)]
mod common;
use common::{
    Node, WorkDir, check_interrupted, close, install_interrupt_handler, interrupted,
    kernel_release, latus_binary, pause, run,
};

/// `poll_ms` when config.json does not say (src/home.rs).
const DEFAULT_POLL_MS: u64 = 3000;
/// How often a reader retries while waiting for a file to appear.
const RETRY: Duration = Duration::from_millis(5);
/// How often a node's status is asked while waiting for it.
const STATUS_EVERY: Duration = Duration::from_millis(20);
/// Longest wait for one propagation round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(about = "Latency and cost of syncing between latus nodes")]
struct Options {
    /// The latus binary [default: target/release/latus]
    #[arg(long)]
    latus: Option<PathBuf>,
    /// Work directory, must be empty or absent; kept afterwards
    /// [default: a fresh temporary directory under target/syncbench/, removed afterwards]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Backend to measure; repeat for several
    /// [default: dir, and aws too when AWS_ENDPOINT_URL is set]
    #[arg(long, value_enum)]
    cloud: Vec<Backend>,
    /// Cloud URL for `--cloud aws` [default: aws://latus-syncbench-RUN?table=latus-syncbench-RUN]
    #[arg(long)]
    aws_url: Option<String>,
    /// Timed propagation rounds per poll interval
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Poll interval (poll_ms) to measure; repeat for several; the first is
    /// used for the apply figures [default: 3000 and 500]
    #[arg(long)]
    poll_ms: Vec<u64>,
    /// Timed rounds per poll interval of a file rewritten on A (0: skip)
    #[arg(long, default_value_t = 5)]
    rewrite_rounds: usize,
    /// Size of the small files, in bytes
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Seconds an idle node is watched, per poll interval (0: skip)
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Watch an idle node on `dir` too (once, at the first --poll-ms): its
    /// daemon's CPU time only, requests are not counted there
    #[arg(long)]
    idle_dir: bool,
    /// Files node A creates for the apply figures on `dir` (0: skip)
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// The same on `aws` (moto's TransactWriteItems, with which latus
    /// appends to the log, slows with the table's size: about 0.5 s per
    /// transaction at 500 items, 3 s at 1,100; real DynamoDB does not)
    #[arg(long, default_value_t = 1_000)]
    aws_files: usize,
    /// Files per folder for the apply figures
    #[arg(long, default_value_t = 1_000)]
    files_per_dir: usize,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Dir,
    Aws,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::Aws => "aws",
        }
    }
}

fn main() -> Result<()> {
    let mut options = Options::parse();
    if options.poll_ms.is_empty() {
        options.poll_ms = vec![DEFAULT_POLL_MS, 500];
    }
    options.poll_ms.dedup();
    ensure!(options.size > 0, "--size must be at least 1");
    ensure!(
        options.files_per_dir > 0,
        "--files-per-dir must be at least 1"
    );
    let latus = latus_binary(options.latus.clone())?;
    let backends = backends(&options)?;
    let work = WorkDir::create(options.dir.as_deref())?;
    install_interrupt_handler();

    println!("latus:    {}", latus.display());
    println!("work dir: {}", work.path().display());
    println!("kernel:   {}", kernel_release());
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!(
            "note: AWS_ENDPOINT_URL is not set: no aws figures, so no request counts for an idle \
             node (start a local server with `eval \"$(scripts/local-cloud.sh start DIR)\"`)"
        );
    }
    println!();

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for backend in backends {
        let url = match backend {
            Backend::Dir => format!("dir:{}", work.path().join("cloud").display()),
            Backend::Aws => options.aws_url.clone().unwrap_or_else(default_aws_url),
        };
        eprintln!("{}: {url}", backend.name());
        let dir = work.path().join(backend.name());
        let mut report = Report::new(backend, url);
        let result = measure_backend(&latus, &dir, &options, &mut report);
        if let Err(error) = result {
            eprintln!("{}: failed: {error:#}", backend.name());
            failures.push(format!("{}: {error:#}", backend.name()));
        }
        reports.push(report);
        if interrupted() {
            break;
        }
    }

    for report in &reports {
        report.print(&options);
    }
    for failure in &failures {
        println!("failed: {failure}");
    }
    print_json(&options, &reports, &failures);
    ensure!(failures.is_empty(), "{} backend(s) failed", failures.len());
    Ok(())
}

fn backends(options: &Options) -> Result<Vec<Backend>> {
    let aws_env = std::env::var_os("AWS_ENDPOINT_URL").is_some();
    if !options.cloud.is_empty() {
        let mut list = options.cloud.clone();
        list.dedup();
        ensure!(
            !list.contains(&Backend::Aws) || aws_env,
            "--cloud aws needs AWS_ENDPOINT_URL (the counting proxy forwards to it): \
             start a local server with `eval \"$(scripts/local-cloud.sh start DIR)\"`"
        );
        return Ok(list);
    }
    let mut list = vec![Backend::Dir];
    if aws_env {
        list.push(Backend::Aws);
    }
    Ok(list)
}

fn default_aws_url() -> String {
    let run = &Uuid::new_v4().simple().to_string()[..8];
    format!("aws://latus-syncbench-{run}?table=latus-syncbench-{run}")
}

/// The three figures on one backend, in `report` as they are measured.
fn measure_backend(latus: &Path, dir: &Path, options: &Options, report: &mut Report) -> Result<()> {
    fs::create_dir_all(dir)?;
    let backend = report.backend;
    let url = report.url.clone();
    let upstream = match backend {
        Backend::Dir => None,
        Backend::Aws => Some(aws_upstream()?),
    };
    let b_name = backend.name();
    let key_file = dir.join("volume.key");
    let mut a = Peer::new(latus, dir, "a", upstream)?;
    a.init(&url, None)?;
    run(a.node.command().args(["key", "export"]).arg(&key_file))?;
    let mut b = Peer::new(latus, dir, "b", upstream)?;
    b.init(&url, Some(&key_file))?;

    // The default interval last, so that the apply figures use it.
    for &poll_ms in options.poll_ms.iter().rev() {
        for peer in [&mut a, &mut b] {
            peer.unmount()?;
            peer.node.set_config("poll_ms", json!(poll_ms))?;
            peer.mount()?;
        }
        if options.rounds > 0 {
            eprintln!("{b_name}: poll {poll_ms} ms: propagation ...");
            let propagation = propagation(&a, &b, poll_ms, options)?;
            eprintln!(
                "{b_name}: poll {poll_ms} ms: close -> readable median {:.2} s, max {:.2} s",
                quantile(&propagation.readable, 0.5),
                quantile(&propagation.readable, 1.0)
            );
            report.propagation.insert(0, propagation);
        }
        if options.rewrite_rounds > 0 {
            eprintln!("{b_name}: poll {poll_ms} ms: rewrites ...");
            let rewrites = rewrites(&a, &b, poll_ms, options)?;
            eprintln!(
                "{b_name}: poll {poll_ms} ms: rewrite -> new bytes read median {:.2} s, max {:.2} s",
                quantile(&rewrites.readable, 0.5),
                quantile(&rewrites.readable, 1.0)
            );
            let at = usize::from(options.rounds > 0);
            report.propagation.insert(at, rewrites);
        }
        // The dir backend shows only CPU time: once is enough, if asked.
        let idle_here = options.idle_secs > 0
            && match backend {
                Backend::Aws => true,
                Backend::Dir => options.idle_dir && poll_ms == options.poll_ms[0],
            };
        if idle_here {
            eprintln!(
                "{b_name}: poll {poll_ms} ms: idle node, {} s ...",
                options.idle_secs
            );
            let idle = idle(&b, poll_ms, options.idle_secs)?;
            if let Some(traffic) = &idle.traffic {
                eprintln!(
                    "{b_name}: poll {poll_ms} ms: {:.1} requests/min",
                    traffic.total() as f64 * 60.0 / idle.secs
                );
            }
            report.idle.insert(0, idle);
        }
    }

    let files = match backend {
        Backend::Dir => options.files,
        Backend::Aws => options.aws_files,
    };
    if files > 0 {
        eprintln!("{b_name}: apply {files} files ...");
        report.apply = Some(apply(
            latus, dir, &url, &key_file, upstream, &a, &b, files, options,
        )?);
    }
    b.unmount()?;
    a.unmount()?;
    Ok(())
}

// ---------------------------------------------------------------- 1. propagation

struct Propagation {
    poll_ms: u64,
    /// A new file each round, or the same file rewritten.
    rewrite: bool,
    /// Seconds from `close` on A to the content read on B, per round.
    readable: Vec<f64>,
    /// Seconds from `close` on A to A's event in the log, per round.
    published: Vec<f64>,
    /// Reads on B that found neither the content written nor (rewrite) the
    /// previous version, or that failed other than with ENOENT.
    early_reads: u64,
    last_early: Option<String>,
}

fn propagation(a: &Peer, b: &Peer, poll_ms: u64, options: &Options) -> Result<Propagation> {
    let folder = format!("propagation-{poll_ms}");
    if !a.node.mountpoint.join(&folder).is_dir() {
        fs::create_dir(a.node.mountpoint.join(&folder))?;
    }
    let mut result = Propagation {
        poll_ms,
        rewrite: false,
        readable: Vec::new(),
        published: Vec::new(),
        early_reads: 0,
        last_early: None,
    };
    // Round 0 warms up (the folder reaches B with it) and is not counted.
    for round in 0..=options.rounds {
        let rel = format!("{folder}/f{round:03}");
        let content = small_content(poll_ms, round as u64, options.size);
        let (readable, published) = one_round(a, b, &rel, &content, None, poll_ms, &mut result)
            .with_context(|| format!("propagation round {round} at poll {poll_ms} ms"))?;
        if round > 0 {
            result.readable.push(readable.as_secs_f64());
            result.published.push(published.as_secs_f64());
        }
    }
    Ok(result)
}

/// The same file rewritten on A each round (`File::create`: truncated,
/// then written), alternately `size` and half as many bytes, and read on
/// B, whose kernel has the previous version cached.
fn rewrites(a: &Peer, b: &Peer, poll_ms: u64, options: &Options) -> Result<Propagation> {
    let rel = format!("propagation-{poll_ms}/rewritten");
    let mut result = Propagation {
        poll_ms,
        rewrite: true,
        readable: Vec::new(),
        published: Vec::new(),
        early_reads: 0,
        last_early: None,
    };
    let mut previous: Option<Vec<u8>> = None;
    // Round 0 creates the file.
    for round in 0..=options.rewrite_rounds {
        let size = if round % 2 == 1 {
            options.size.div_ceil(2)
        } else {
            options.size
        };
        let content = small_content(poll_ms + 1, round as u64, size);
        let (readable, published) = one_round(
            a,
            b,
            &rel,
            &content,
            previous.as_deref(),
            poll_ms,
            &mut result,
        )
        .with_context(|| format!("rewrite round {round} at poll {poll_ms} ms"))?;
        if round > 0 {
            result.readable.push(readable.as_secs_f64());
            result.published.push(published.as_secs_f64());
        }
        previous = Some(content);
    }
    Ok(result)
}

/// Writes `rel` on A and waits until B reads `content` there (reading
/// `previous` meanwhile is expected); returns the times from `close` to
/// that, and to A having published the event.
fn one_round(
    a: &Peer,
    b: &Peer,
    rel: &str,
    content: &[u8],
    previous: Option<&[u8]>,
    poll_ms: u64,
    result: &mut Propagation,
) -> Result<(Duration, Duration)> {
    pause(Duration::from_millis(random_below(poll_ms)))?;
    let published_before = a.queue_number("published_events")?;
    let mut file = File::create(a.node.mountpoint.join(rel))?;
    file.write_all(content)?;
    close(file)?;
    let start = Instant::now();
    let target = b.node.mountpoint.join(rel);
    let mut published = None;
    let mut next_status = start;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if published.is_none() && now >= next_status {
            let queue = &a.status()?["queue"];
            if number(queue, "published_events") > published_before
                && number(queue, "pending_events") == 0
            {
                published = Some(start.elapsed());
            }
            next_status = now + STATUS_EVERY;
        }
        match fs::read(&target) {
            Ok(data) if data == content => {
                let readable = start.elapsed();
                if published.is_none() {
                    // Published between the last look and the read.
                    published = Some(start.elapsed());
                }
                return Ok((readable, published.unwrap_or_default()));
            }
            Ok(data) if previous.is_some_and(|previous| data == previous) => {}
            Ok(data) => {
                result.early_reads += 1;
                result.last_early = Some(format!(
                    "{} bytes, neither the {} written nor the previous version",
                    data.len(),
                    content.len()
                ));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                result.early_reads += 1;
                result.last_early = Some(error.to_string());
            }
        }
        ensure!(
            start.elapsed() < ROUND_TIMEOUT,
            "{} not readable on B after {} s (A published: {}); {}",
            rel,
            ROUND_TIMEOUT.as_secs(),
            published.is_some(),
            b.node.log_tail()
        );
        thread::sleep(RETRY);
    }
}

// ---------------------------------------------------------------- 2. idle

struct Idle {
    poll_ms: u64,
    secs: f64,
    /// What went through the node's proxy (`aws` only).
    traffic: Option<Traffic>,
    daemon_cpu: f64,
}

fn idle(node: &Peer, poll_ms: u64, secs: u64) -> Result<Idle> {
    node.sync_wait()?;
    pause(Duration::from_secs(2))?;
    let before = node.proxy.as_ref().map(Proxy::traffic);
    let cpu = node.daemon_cpu();
    let start = Instant::now();
    pause(Duration::from_secs(secs))?;
    let secs = start.elapsed().as_secs_f64();
    let traffic = node
        .proxy
        .as_ref()
        .zip(before)
        .map(|(proxy, before)| proxy.traffic().minus(&before));
    Ok(Idle {
        poll_ms,
        secs,
        traffic,
        daemon_cpu: node.daemon_cpu() - cpu,
    })
}

// ---------------------------------------------------------------- 3. apply

struct Apply {
    files: usize,
    folders: usize,
    create_s: f64,
    sync_s: f64,
    /// A's requests during the creation and the sync (`aws`).
    a_traffic: Option<Traffic>,
    /// Events A published during the creation and the sync.
    published: u64,
    receivers: Vec<Receiver>,
}

/// One node catching up with A's files.
struct Receiver {
    node: &'static str,
    /// What starts the clock.
    from: &'static str,
    /// Log records the node had not seen.
    events: u64,
    /// Records it had applied before the clock started (B only).
    applied_before: Option<u64>,
    /// From A's first create to the node having read A's last record (B only).
    since_create_s: Option<f64>,
    /// From the start to the first record applied, to `log_seen` reaching
    /// A's, and to every file listed.
    first_s: Option<f64>,
    log_s: f64,
    listed_s: f64,
    /// `init` + `mount` (C), or `mount` (D).
    setup_s: Option<f64>,
    daemon_cpu: f64,
    traffic: Option<Traffic>,
    /// Latency of `stat` of an unrelated file of the node's own, sent to
    /// the daemon (not the kernel's cache) while it applies (D only).
    stat: Option<Latencies>,
}

/// Sorted samples, in milliseconds.
struct Latencies(Vec<f64>);

impl Latencies {
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0.get(i).copied().unwrap_or(f64::NAN)
    }

    fn summary(&self) -> String {
        format!(
            "{} stats: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.0.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        )
    }
}

/// `statx` of `path` with `AT_STATX_FORCE_SYNC` (FUSE asks the daemon
/// instead of answering from its attribute cache) every millisecond until
/// `stop`.
fn stat_latencies(path: &Path, stop: &AtomicBool) -> Latencies {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    let mut samples = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: statx is plain data, for which all zeroes is valid.
        let mut buf: libc::statx = unsafe { std::mem::zeroed() };
        let t = Instant::now();
        // SAFETY: statx only writes into `buf`; `c` is NUL-terminated.
        let rc = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::AT_STATX_FORCE_SYNC,
                libc::STATX_BASIC_STATS,
                &mut buf,
            )
        };
        if rc == 0 {
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        thread::sleep(Duration::from_millis(1));
    }
    samples.sort_by(f64::total_cmp);
    Latencies(samples)
}

impl Receiver {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.listed_s
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    latus: &Path,
    dir: &Path,
    url: &str,
    key_file: &Path,
    upstream: Option<SocketAddr>,
    a: &Peer,
    b: &Peer,
    files: usize,
    options: &Options,
) -> Result<Apply> {
    let per_dir = options.files_per_dir;
    let folders = files.div_ceil(per_dir);
    let timeout = Duration::from_secs(120 + files as u64 / 20);

    // D joins now and goes away while A writes.
    let mut d = Peer::new(latus, dir, "d", upstream)?;
    d.init(url, Some(key_file))?;
    d.node.set_config("poll_ms", json!(options.poll_ms[0]))?;
    d.mount()?;
    d.sync_wait()?;
    // A file of D's own, stat'ed while D applies A's records.
    let probe = d.node.mountpoint.join("d-probe.txt");
    fs::write(&probe, b"probe")?;
    d.sync_wait()?;
    let d_seen = d.queue_number("log_seen")?;
    d.unmount()?;

    // B's progress is watched all along: it applies A's batches as they
    // come, possibly all of them before A's sync returns.
    let b_socket = Home::new(&b.node.home).socket_path();
    let stop = AtomicBool::new(false);
    let (bulk, timeline) = thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_log_seen(&b_socket, &stop));
        let _stop = StopOnDrop(&stop);
        let bulk = write_and_wait(a, b, files, options, timeout);
        stop.store(true, Ordering::SeqCst);
        let timeline = watcher.join().expect("the watcher thread panicked");
        bulk.map(|bulk| (bulk, timeline))
    })?;
    // When B's log_seen reached A's last record: seen by the watcher, or
    // by the wait after A's sync.
    let b_done = timeline
        .iter()
        .find(|(_, seen)| *seen >= bulk.target)
        .map(|(when, _)| when.duration_since(bulk.created).as_secs_f64())
        .unwrap_or(bulk.create_s + bulk.sync_s + bulk.b_catch.log_s);
    let mut receivers = vec![Receiver {
        node: "B",
        from: "A's sync returned",
        events: bulk.target - bulk.b_seen,
        applied_before: Some(bulk.b_seen.saturating_sub(d_seen)),
        since_create_s: Some(b_done),
        first_s: bulk.b_catch.first_s,
        log_s: bulk.b_catch.log_s,
        listed_s: bulk.b_catch.listed_s,
        setup_s: None,
        stat: None,
        daemon_cpu: bulk.b_cpu,
        traffic: bulk.b_traffic,
    }];
    let (target, create_s, sync_s, published, a_traffic) = (
        bulk.target,
        bulk.create_s,
        bulk.sync_s,
        bulk.published,
        bulk.a_traffic,
    );
    check_content(b, files, per_dir, options.size)?;

    eprintln!("  D (was unmounted) ...");
    let d_traffic = d.proxy.as_ref().map(Proxy::traffic);
    let start = Instant::now();
    d.mount()?;
    let setup_s = start.elapsed().as_secs_f64();
    let stop_probe = AtomicBool::new(false);
    let (catch, stat) = thread::scope(|scope| {
        let prober = scope.spawn(|| stat_latencies(&probe, &stop_probe));
        let _stop = StopOnDrop(&stop_probe);
        let catch = catch_up(&d, target, d_seen, files, per_dir, start, timeout);
        stop_probe.store(true, Ordering::SeqCst);
        let stat = prober.join().expect("the stat prober panicked");
        catch.map(|c| (c, stat))
    })?;
    receivers.push(Receiver {
        stat: Some(stat),
        node: "D",
        from: "latus mount",
        events: target - d_seen,
        applied_before: None,
        since_create_s: None,
        first_s: catch.first_s,
        log_s: catch.log_s,
        listed_s: catch.listed_s,
        setup_s: Some(setup_s),
        daemon_cpu: d.daemon_cpu(),
        traffic: d
            .proxy
            .as_ref()
            .zip(d_traffic)
            .map(|(proxy, before)| proxy.traffic().minus(&before)),
    });
    check_content(&d, files, per_dir, options.size)?;
    d.unmount()?;

    eprintln!("  C (new node) ...");
    let mut c = Peer::new(latus, dir, "c", upstream)?;
    let start = Instant::now();
    c.init(url, Some(key_file))?;
    c.node.set_config("poll_ms", json!(options.poll_ms[0]))?;
    c.mount()?;
    let setup_s = start.elapsed().as_secs_f64();
    let catch = catch_up(&c, target, 0, files, per_dir, start, timeout)?;
    receivers.push(Receiver {
        stat: None,
        node: "C",
        from: "latus init --key-file",
        events: target,
        applied_before: None,
        since_create_s: None,
        first_s: catch.first_s,
        log_s: catch.log_s,
        listed_s: catch.listed_s,
        setup_s: Some(setup_s),
        daemon_cpu: c.daemon_cpu(),
        traffic: c.proxy.as_ref().map(Proxy::traffic),
    });
    check_content(&c, files, per_dir, options.size)?;
    c.unmount()?;

    Ok(Apply {
        files,
        folders,
        create_s,
        sync_s,
        a_traffic,
        published,
        receivers,
    })
}

/// What A's writing and uploading, and B's catching up, measured.
struct Bulk {
    /// When A started creating the files.
    created: Instant,
    create_s: f64,
    sync_s: f64,
    /// A's requests during the creation and the sync (`aws`).
    a_traffic: Option<Traffic>,
    /// A's `log_seen` after its sync: its last record.
    target: u64,
    published: u64,
    /// B's `log_seen` when A's sync returned.
    b_seen: u64,
    b_catch: CatchUp,
    b_cpu: f64,
    b_traffic: Option<Traffic>,
}

/// A creates the files and syncs; then B is waited for.
fn write_and_wait(
    a: &Peer,
    b: &Peer,
    files: usize,
    options: &Options,
    timeout: Duration,
) -> Result<Bulk> {
    let per_dir = options.files_per_dir;
    let published_before = a.queue_number("published_events")?;
    let a_traffic = a.proxy.as_ref().map(Proxy::traffic);
    let root = &a.node.mountpoint;
    let created = Instant::now();
    fs::create_dir(root.join("bulk"))?;
    for index in 0..files {
        if index % per_dir == 0 {
            fs::create_dir(root.join(bulk_dir(index / per_dir)))?;
        }
        let mut file = File::create(root.join(bulk_file(index, per_dir)))?;
        file.write_all(&small_content(1, index as u64, options.size))?;
        close(file)?;
        if index % 1000 == 0 {
            check_interrupted()?;
        }
    }
    let create_s = created.elapsed().as_secs_f64();
    eprintln!("  A created {files} files in {create_s:.2} s; sync --wait ...");
    let start = Instant::now();
    a.sync_wait()?;
    let sync_s = start.elapsed().as_secs_f64();
    let synced = Instant::now();
    let a_traffic = a
        .proxy
        .as_ref()
        .zip(a_traffic)
        .map(|(proxy, before)| proxy.traffic().minus(&before));
    let b_cpu = b.daemon_cpu();
    let b_traffic = b.proxy.as_ref().map(Proxy::traffic);
    let b_seen = b.queue_number("log_seen")?;
    let target = a.queue_number("log_seen")?;
    let published = a.queue_number("published_events")? - published_before;
    eprintln!("  A synced in {sync_s:.2} s (log up to {target}); B ...");
    let b_seen = b_seen.min(target);
    let b_catch = catch_up(b, target, b_seen, files, per_dir, synced, timeout)?;
    Ok(Bulk {
        created,
        create_s,
        sync_s,
        a_traffic,
        target,
        published,
        b_seen,
        b_catch,
        b_cpu: b.daemon_cpu() - b_cpu,
        b_traffic: b
            .proxy
            .as_ref()
            .zip(b_traffic)
            .map(|(proxy, before)| proxy.traffic().minus(&before)),
    })
}

/// `log_seen` of the daemon at `socket`, every 50 ms until `stop`.
fn watch_log_seen(socket: &Path, stop: &AtomicBool) -> Vec<(Instant, u64)> {
    let mut timeline = Vec::new();
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        if let Ok(status) = control::call(socket, &Request::Status, CONTROL_TIMEOUT) {
            timeline.push((Instant::now(), number(&status["queue"], "log_seen")));
        }
        thread::sleep(Duration::from_millis(50));
    }
    timeline
}

/// Sets the flag when dropped (also when unwinding), so a watcher thread
/// in a scope always ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct CatchUp {
    first_s: Option<f64>,
    log_s: f64,
    listed_s: f64,
}

/// Waits until `node` has read the log up to `target` and lists all the
/// files; times are from `start`.
fn catch_up(
    node: &Peer,
    target: u64,
    seen_before: u64,
    files: usize,
    per_dir: usize,
    start: Instant,
    timeout: Duration,
) -> Result<CatchUp> {
    let mut first_s = None;
    let mut log_s = None;
    loop {
        check_interrupted()?;
        let seen = node.queue_number("log_seen")?;
        let elapsed = start.elapsed().as_secs_f64();
        if seen > seen_before && first_s.is_none() {
            first_s = Some(elapsed);
        }
        let mut listed = 0;
        if seen >= target {
            let log_s = *log_s.get_or_insert(elapsed);
            listed = count_listed(&node.node.mountpoint, files, per_dir);
            if listed == files {
                return Ok(CatchUp {
                    first_s,
                    log_s,
                    listed_s: start.elapsed().as_secs_f64(),
                });
            }
        }
        ensure!(
            start.elapsed() < timeout,
            "node {} still behind after {} s: log read up to {seen} of {target}, \
             {listed} of {files} files listed; {}",
            node.name,
            timeout.as_secs(),
            node.node.log_tail()
        );
        thread::sleep(STATUS_EVERY);
    }
}

fn count_listed(root: &Path, files: usize, per_dir: usize) -> usize {
    (0..files.div_ceil(per_dir))
        .map(|folder| {
            fs::read_dir(root.join(bulk_dir(folder)))
                .map(|entries| entries.filter(|entry| entry.is_ok()).count())
                .unwrap_or(0)
        })
        .sum()
}

/// Reads a few of the files (fetched from the cloud) and compares them.
fn check_content(node: &Peer, files: usize, per_dir: usize, size: usize) -> Result<()> {
    for index in [0, files / 2, files - 1] {
        let path = node.node.mountpoint.join(bulk_file(index, per_dir));
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        ensure!(
            data == small_content(1, index as u64, size),
            "{} on node {} does not hold what A wrote",
            path.display(),
            node.name
        );
    }
    Ok(())
}

fn bulk_dir(folder: usize) -> PathBuf {
    Path::new("bulk").join(format!("d{folder:03}"))
}

fn bulk_file(index: usize, per_dir: usize) -> PathBuf {
    bulk_dir(index / per_dir).join(format!("f{index:06}"))
}

/// `size` bytes of xorshift noise, unique per (`seed`, `index`).
fn small_content(seed: u64, index: u64, size: usize) -> Vec<u8> {
    // splitmix64 of (seed, index): distinct, never zero in practice.
    let mut state = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index.wrapping_mul(0xd1b5_4a32_d192_ed03));
    state = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    state ^= state >> 31;
    state = state.max(1);
    let mut data = Vec::with_capacity(size + 8);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    data
}

// ---------------------------------------------------------------- nodes

/// A node of the bench: dropping it unmounts it and makes sure the daemon
/// it started is gone (killed by its PID if it outlives the unmount).
struct Peer {
    name: &'static str,
    node: Node,
    /// The daemon's PID while mounted.
    daemon: Option<u32>,
    /// Counts what the daemon sends to the cloud (`aws`); dropped after
    /// the node.
    proxy: Option<Proxy>,
}

impl Peer {
    /// Node `name` in `dir` (home-NAME, mnt-NAME); through a counting proxy
    /// to `upstream` if given.
    fn new(
        latus: &Path,
        dir: &Path,
        name: &'static str,
        upstream: Option<SocketAddr>,
    ) -> Result<Self> {
        let mut node = Node::new(
            latus,
            &dir.join(format!("home-{name}")),
            &dir.join(format!("mnt-{name}")),
        );
        let proxy = upstream.map(Proxy::start).transpose()?;
        if let Some(proxy) = &proxy {
            node.env.push((
                "AWS_ENDPOINT_URL".into(),
                Some(format!("http://{}", proxy.addr).into()),
            ));
            // These would bypass the proxy (`aws_upstream` checked that
            // they name the same server).
            node.env.push(("AWS_ENDPOINT_URL_S3".into(), None));
            node.env.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), None));
        }
        Ok(Self {
            name,
            node,
            daemon: None,
            proxy,
        })
    }

    /// `latus init --cloud URL --name NAME [--key-file KEY]`.
    fn init(&self, url: &str, key_file: Option<&Path>) -> Result<()> {
        let mut command = self.node.command();
        command
            .args(["init", "--cloud", url, "--name", self.name])
            .args(
                key_file
                    .iter()
                    .flat_map(|key| [Path::new("--key-file"), key]),
            );
        run(&mut command)
    }

    fn mount(&mut self) -> Result<()> {
        self.node.mount(false)?;
        let pid = self.status()?["pid"]
            .as_u64()
            .context("the daemon's status has no pid")?;
        self.daemon = Some(u32::try_from(pid)?);
        Ok(())
    }

    /// Unmounts if mounted; `latus unmount` returns once the daemon is gone.
    fn unmount(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            self.node.unmount()?;
            self.daemon = None;
        }
        Ok(())
    }

    /// The daemon's status, over its control socket.
    fn status(&self) -> Result<Value> {
        let socket = Home::new(&self.node.home).socket_path();
        control::call(&socket, &Request::Status, CONTROL_TIMEOUT)
            .map_err(|error| anyhow!("status of node {}: {error}", self.name))
    }

    fn queue_number(&self, key: &str) -> Result<u64> {
        Ok(number(&self.status()?["queue"], key))
    }

    fn sync_wait(&self) -> Result<()> {
        run(self.node.command().args(["sync", "--wait"])).with_context(|| {
            format!(
                "latus sync --wait on node {}; {}",
                self.name,
                self.node.log_tail()
            )
        })
    }

    /// CPU seconds the daemon has used (0 when not mounted).
    fn daemon_cpu(&self) -> f64 {
        self.daemon.map_or(0.0, process_cpu_seconds)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let Some(pid) = self.daemon.take() else {
            return;
        };
        if let Err(error) = self.node.unmount() {
            eprintln!("syncbench: node {}: {error:#}", self.name);
        }
        // Only the process this node's mount started: the PID it reported,
        // if that process still serves this home.
        let ours = || {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let home = self.node.home.as_os_str().as_encoded_bytes();
                cmdline.windows(home.len()).any(|window| window == home)
            })
        };
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            if !ours() {
                return;
            }
            eprintln!(
                "syncbench: the daemon of node {} (pid {pid}) is still running; sending signal {signal}",
                self.name
            );
            // SAFETY: kill(2) on a PID checked just above to be our daemon.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while ours() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
        // `Node`'s own drop then unmounts what is left (a stale mount).
    }
}

fn number(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_default()
}

fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields 14 and 15 of stat(5) (utime, stime) follow the name in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

// ---------------------------------------------------------------- counting proxy

/// The server behind AWS_ENDPOINT_URL (plain HTTP), which the proxies
/// forward to.
fn aws_upstream() -> Result<SocketAddr> {
    let url = std::env::var("AWS_ENDPOINT_URL").context("AWS_ENDPOINT_URL is not set")?;
    for key in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"] {
        if let Ok(other) = std::env::var(key) {
            ensure!(
                other.is_empty() || other.trim_end_matches('/') == url.trim_end_matches('/'),
                "{key}={other} differs from AWS_ENDPOINT_URL={url}: the counting proxy \
                 forwards to one server"
            );
        }
    }
    let rest = url.strip_prefix("http://").with_context(|| {
        format!(
            "AWS_ENDPOINT_URL={url} is not http://HOST:PORT (the counting proxy speaks plain HTTP)"
        )
    })?;
    let host = rest.split('/').next().unwrap_or(rest);
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    host.to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// A TCP proxy on 127.0.0.1 that forwards to the cloud endpoint and counts
/// the HTTP/1.x requests it carries (by request line, framed by
/// Content-Length or chunked encoding), how long each waited for its
/// response (from the end of the request to the end of the response), and
/// the bytes both ways. Bytes are forwarded as they arrive; parsing never
/// delays them.
struct Proxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyStats {
    /// By kind (`dynamodb Query`, `s3 GET object`, ...): requests, and
    /// seconds spent waiting for their responses.
    requests: Mutex<BTreeMap<String, KindStats>>,
    /// Bytes from the node to the cloud, and back.
    sent: AtomicU64,
    received: AtomicU64,
    connections: AtomicU64,
    /// Connections whose requests or responses could not be parsed (still
    /// forwarded).
    unparsed: AtomicU64,
}

impl ProxyStats {
    fn kind(&self, kind: &str, update: impl FnOnce(&mut KindStats)) {
        let mut requests = self.requests.lock().expect("proxy counts");
        update(requests.entry(kind.to_owned()).or_default());
    }
}

#[derive(Clone, Copy, Default)]
struct KindStats {
    count: u64,
    /// Responses seen complete, and the seconds they took.
    answered: u64,
    wait: f64,
}

/// What went through a proxy up to a moment, or between two.
#[derive(Clone, Default)]
struct Traffic {
    requests: BTreeMap<String, KindStats>,
    sent: u64,
    received: u64,
    connections: u64,
    unparsed: u64,
}

impl Traffic {
    fn total(&self) -> u64 {
        self.requests.values().map(|kind| kind.count).sum()
    }

    fn minus(&self, before: &Traffic) -> Traffic {
        let mut requests = self.requests.clone();
        for (kind, earlier) in &before.requests {
            if let Some(now) = requests.get_mut(kind) {
                now.count -= earlier.count;
                now.answered -= earlier.answered;
                now.wait -= earlier.wait;
            }
        }
        requests.retain(|_, kind| kind.count > 0);
        Traffic {
            requests,
            sent: self.sent - before.sent,
            received: self.received - before.received,
            connections: self.connections - before.connections,
            unparsed: self.unparsed - before.unparsed,
        }
    }

    /// `3 dynamodb Query, 1 s3 HEAD object`, each count scaled by `scale`,
    /// most frequent first; with each kind's mean wait if `waits`.
    fn breakdown(&self, scale: f64, waits: bool) -> String {
        let mut kinds: Vec<(&String, &KindStats)> = self.requests.iter().collect();
        kinds.sort_by_key(|(_, kind)| std::cmp::Reverse(kind.count));
        let parts: Vec<String> = kinds
            .iter()
            .map(|(name, kind)| {
                let mut part = format!("{} {name}", compact(kind.count as f64 * scale));
                if waits && kind.answered > 0 {
                    part += &format!(" ({:.1} ms)", kind.wait * 1e3 / kind.answered as f64);
                }
                part
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn to_json(&self) -> Value {
        let kinds: serde_json::Map<String, Value> = self
            .requests
            .iter()
            .map(|(name, kind)| {
                let mean = (kind.answered > 0).then(|| kind.wait / kind.answered as f64);
                (
                    name.clone(),
                    json!({ "requests": kind.count, "wait_s": kind.wait, "mean_wait_s": mean }),
                )
            })
            .collect();
        json!({
            "requests": self.total(),
            "by_kind": kinds,
            "sent_bytes": self.sent,
            "received_bytes": self.received,
            "connections": self.connections,
            "unparsed_connections": self.unparsed,
        })
    }
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the counting proxy")?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (stats, stop) = (stats.clone(), stop.clone());
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || {
                    for client in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(client) = client else { continue };
                        let stats = stats.clone();
                        // Connections end when the daemon or the server
                        // closes them.
                        let spawned = thread::Builder::new()
                            .name("proxy-conn".into())
                            .spawn(move || relay(client, upstream, &stats));
                        if let Err(error) = spawned {
                            eprintln!("syncbench: proxy: cannot start a thread: {error}");
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            stats,
            stop,
            acceptor: Some(acceptor),
        })
    }

    fn traffic(&self) -> Traffic {
        let stats = &self.stats;
        Traffic {
            requests: stats.requests.lock().expect("proxy counts").clone(),
            sent: stats.sent.load(Ordering::SeqCst),
            received: stats.received.load(Ordering::SeqCst),
            connections: stats.connections.load(Ordering::SeqCst),
            unparsed: stats.unparsed.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A request sent, waiting for its response.
struct Sent {
    kind: String,
    head: bool,
    at: Instant,
}

/// Carries one connection both ways until both sides are done.
fn relay(client: TcpStream, upstream: SocketAddr, stats: &Arc<ProxyStats>) {
    let server = match TcpStream::connect(upstream) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("syncbench: proxy: cannot reach {upstream}: {error}");
            return;
        }
    };
    stats.connections.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_out), Ok(server_in), Ok(server_out)) =
        (client.try_clone(), server.try_clone(), server.try_clone())
    else {
        return;
    };
    let (sent, answers) = std::sync::mpsc::channel::<Sent>();
    let down = {
        let stats = stats.clone();
        thread::spawn(move || {
            let mut reader = BufReader::with_capacity(
                64 * 1024,
                Tee {
                    from: server_in,
                    to: client_out,
                    stats: stats.clone(),
                    upstream: false,
                },
            );
            if read_responses(&mut reader, &answers, &stats).is_err() {
                stats.unparsed.fetch_add(1, Ordering::SeqCst);
                let _ = io::copy(&mut reader, &mut io::sink());
            }
            let _ = reader.get_ref().to.shutdown(Shutdown::Write);
        })
    };
    let mut reader = BufReader::with_capacity(
        64 * 1024,
        Tee {
            from: client,
            to: server_out,
            stats: stats.clone(),
            upstream: true,
        },
    );
    if read_requests(&mut reader, &sent, stats).is_err() {
        stats.unparsed.fetch_add(1, Ordering::SeqCst);
        let _ = io::copy(&mut reader, &mut io::sink());
    }
    drop(sent);
    let _ = server.shutdown(Shutdown::Write);
    let _ = down.join();
}

/// Reads one side of a connection, forwarding every byte to the other
/// side as soon as it arrives, and counting it.
struct Tee {
    from: TcpStream,
    to: TcpStream,
    stats: Arc<ProxyStats>,
    /// From the node to the cloud.
    upstream: bool,
}

impl Read for Tee {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = self.from.read(buffer)?;
        self.to.write_all(&buffer[..n])?;
        let counter = if self.upstream {
            &self.stats.sent
        } else {
            &self.stats.received
        };
        counter.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A message's header lines, up to the blank line.
struct Headers {
    length: Option<u64>,
    chunked: bool,
    amz_target: Option<String>,
}

fn read_headers(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Headers> {
    let mut headers = Headers {
        length: None,
        chunked: false,
        amz_target: None,
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', line)? == 0 {
            return Err(invalid("the stream ended in the headers"));
        }
        if is_blank(line) {
            return Ok(headers);
        }
        let header = String::from_utf8_lossy(line);
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                headers.length = Some(value.parse().map_err(|_| invalid("bad Content-Length"))?);
            }
            "transfer-encoding" => {
                headers.chunked = value.to_ascii_lowercase().contains("chunked");
            }
            "x-amz-target" => headers.amz_target = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// Skips a body framed by the headers (`None`: no framing, so none).
fn skip_body(reader: &mut impl BufRead, headers: &Headers, line: &mut Vec<u8>) -> io::Result<()> {
    if headers.chunked {
        return skip_chunked_body(reader, line);
    }
    let length = headers.length.unwrap_or(0);
    let copied = io::copy(&mut reader.by_ref().take(length), &mut io::sink())?;
    if copied < length {
        return Err(invalid("the stream ended in a body"));
    }
    Ok(())
}

/// Parses requests until the end of the stream, counting each and
/// telling the response side when it was sent.
fn read_requests(
    reader: &mut impl BufRead,
    sent: &std::sync::mpsc::Sender<Sent>,
    stats: &ProxyStats,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if is_blank(&line) {
            continue;
        }
        let request_line = String::from_utf8_lossy(&line).into_owned();
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a request line"));
        };
        if !version.starts_with("HTTP/1.") {
            return Err(invalid("not HTTP/1.x"));
        }
        let headers = read_headers(reader, &mut line)?;
        let kind = request_kind(method, target, headers.amz_target.as_deref());
        stats.kind(&kind, |k| k.count += 1);
        skip_body(reader, &headers, &mut line)?;
        let _ = sent.send(Sent {
            kind,
            head: method == "HEAD",
            at: Instant::now(),
        });
    }
}

/// Parses responses until the end of the stream; each final response
/// ends the wait of the oldest request sent.
fn read_responses(
    reader: &mut impl BufRead,
    sent: &std::sync::mpsc::Receiver<Sent>,
    stats: &ProxyStats,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if is_blank(&line) {
            continue;
        }
        let status_line = String::from_utf8_lossy(&line).into_owned();
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("not a status line"))?;
        let headers = read_headers(reader, &mut line)?;
        if (100..200).contains(&code) {
            continue; // 100 Continue: the final response follows
        }
        // The request is sent in full before its response ends (a server
        // answering early is rare; the wait then counts from the end of
        // the request).
        let request = sent
            .recv()
            .map_err(|_| invalid("a response without a request"))?;
        if request.head || code == 204 || code == 304 {
            // No body.
        } else if headers.chunked || headers.length.is_some() {
            skip_body(reader, &headers, &mut line)?;
        } else {
            // Until the server closes the connection.
            io::copy(reader, &mut io::sink())?;
        }
        let wait = request.at.elapsed().as_secs_f64();
        stats.kind(&request.kind, |k| {
            k.answered += 1;
            k.wait += wait;
        });
    }
}

fn skip_chunked_body(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    loop {
        line.clear();
        if reader.read_until(b'\n', line)? == 0 {
            return Err(invalid("the stream ended in a chunked body"));
        }
        let text = String::from_utf8_lossy(line);
        let size = text.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                line.clear();
                if reader.read_until(b'\n', line)? == 0 || is_blank(line) {
                    return Ok(());
                }
            }
        }
        // The data and its CRLF.
        io::copy(&mut reader.by_ref().take(size + 2), &mut io::sink())?;
    }
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

/// `dynamodb OPERATION` (from X-Amz-Target), or `s3 METHOD object|bucket|list`.
fn request_kind(method: &str, target: &str, amz_target: Option<&str>) -> String {
    if let Some(operation) = amz_target {
        return format!(
            "dynamodb {}",
            operation.rsplit('.').next().unwrap_or(operation)
        );
    }
    let path = target.split('?').next().unwrap_or(target);
    let path = path.split_once("://").map_or(path, |(_, rest)| {
        rest.find('/').map_or("/", |slash| &rest[slash..])
    });
    let segments = path.split('/').filter(|s| !s.is_empty()).count();
    let what = if segments >= 2 {
        "object"
    } else if target.contains("list-type") {
        "list"
    } else {
        "bucket"
    };
    format!("s3 {method} {what}")
}

fn random_below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    (Uuid::new_v4().as_u128() % u128::from(bound)) as u64
}

// ---------------------------------------------------------------- report

/// The `q` quantile by nearest rank (0.5: median, 1.0: max); NaN if empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A count with one decimal below 100, none above.
fn compact(value: f64) -> String {
    if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn bytes(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.1} MB", v / 1e6),
        v if v >= 1e3 => format!("{:.1} kB", v / 1e3),
        v => format!("{v:.0} B"),
    }
}

struct Report {
    backend: Backend,
    url: String,
    propagation: Vec<Propagation>,
    idle: Vec<Idle>,
    apply: Option<Apply>,
}

impl Report {
    fn new(backend: Backend, url: String) -> Self {
        Self {
            backend,
            url,
            propagation: Vec::new(),
            idle: Vec::new(),
            apply: None,
        }
    }

    fn print(&self, options: &Options) {
        println!("== {}: {}", self.backend.name(), self.url);
        if !self.propagation.is_empty() {
            println!(
                "1. close on A -> same bytes read on B ({} rounds, {}-byte files; rewrite: \
                 {} rounds of one file rewritten, {} and {} bytes), seconds",
                options.rounds,
                options.size,
                options.rewrite_rounds,
                options.size,
                options.size.div_ceil(2)
            );
            println!(
                "   {:>7}  {:<8}  {:>6} {:>6} {:>6}   {:>20}",
                "poll_ms", "file", "median", "p90", "max", "A published: median"
            );
            for p in &self.propagation {
                println!(
                    "   {:>7}  {:<8}  {:>6.2} {:>6.2} {:>6.2}   {:>20.2}",
                    p.poll_ms,
                    if p.rewrite { "rewrite" } else { "new" },
                    quantile(&p.readable, 0.5),
                    quantile(&p.readable, 0.9),
                    quantile(&p.readable, 1.0),
                    quantile(&p.published, 0.5),
                );
                if p.early_reads > 0 {
                    println!(
                        "   note: {} reads on B found the file without A's content (last: {})",
                        p.early_reads,
                        p.last_early.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        if !self.idle.is_empty() {
            println!("2. idle node B, per minute (watched after its mount settled)");
            println!(
                "   {:>7}  {:>8}  {:>9}  {:>9}  {:>11}  {:>10}  requests by kind",
                "poll_ms", "requests", "sent", "received", "connections", "daemon CPU"
            );
            for idle in &self.idle {
                let scale = 60.0 / idle.secs;
                if idle.traffic.as_ref().is_some_and(|t| t.unparsed > 0) {
                    println!("   note: the proxy could not parse some connections' requests");
                }
                let cpu = format!("{:.2} s", idle.daemon_cpu * scale);
                match &idle.traffic {
                    Some(t) => println!(
                        "   {:>7}  {:>8}  {:>9}  {:>9}  {:>11}  {:>10}  {}",
                        idle.poll_ms,
                        compact(t.total() as f64 * scale),
                        bytes(t.sent as f64 * scale),
                        bytes(t.received as f64 * scale),
                        compact(t.connections as f64 * scale),
                        cpu,
                        t.breakdown(scale, true)
                    ),
                    None => println!(
                        "   {:>7}  {:>8}  {:>9}  {:>9}  {:>11}  {:>10}  (not counted on dir: \
                         one read of the next record's file per poll)",
                        idle.poll_ms, "-", "-", "-", "-", cpu
                    ),
                }
            }
        }
        if let Some(apply) = &self.apply {
            apply.print(options);
        }
        println!();
    }
}

impl Apply {
    fn print(&self, options: &Options) {
        println!(
            "3. apply: A creates {} files of {} bytes in {} folders, then `latus sync --wait` \
             (poll {} ms)",
            self.files, options.size, self.folders, options.poll_ms[0]
        );
        println!(
            "   A: create through the mount   {:>7.2} s  {:>7.0} files/s",
            self.create_s,
            self.files as f64 / self.create_s
        );
        println!(
            "   A: sync --wait after that     {:>7.2} s  ({} events published in all)",
            self.sync_s, self.published
        );
        if let Some(t) = &self.a_traffic {
            println!(
                "   A: {} requests during create + sync, by kind (mean wait for the response): {}; \
                 {} sent, {} received",
                t.total(),
                t.breakdown(1.0, true),
                bytes(t.sent as f64),
                bytes(t.received as f64)
            );
        }
        println!(
            "   {:<4} {:<24} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:>8}",
            "node",
            "clock starts at",
            "events",
            "setup",
            "first",
            "log",
            "listed",
            "events/s",
            "CPU"
        );
        let seconds = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.2}"));
        for r in &self.receivers {
            let rate = if r.events > 0 {
                format!("{:.0}", r.events_per_second())
            } else {
                "-".into()
            };
            println!(
                "   {:<4} {:<24} {:>7} {:>7} {:>8} {:>8.2} {:>9.2} {:>8} {:>8.2}",
                r.node,
                r.from,
                r.events,
                seconds(r.setup_s),
                seconds(r.first_s),
                r.log_s,
                r.listed_s,
                rate,
                r.daemon_cpu
            );
        }
        println!(
            "   (seconds from the clock's start: setup = init/mount, first = first record \
             applied, log = log_seen reached A's, listed = every file listed; CPU = the \
             daemon's CPU seconds)"
        );
        for r in &self.receivers {
            if let Some(before) = r.applied_before {
                println!(
                    "   {}: had applied {before} of A's records before A's sync returned; \
                     read A's last record {} s after A's first create (A: create + sync {:.2} s)",
                    r.node,
                    r.since_create_s.map_or("?".into(), |s| format!("{s:.2}")),
                    self.create_s + self.sync_s
                );
            }
            if let Some(l) = &r.stat {
                println!(
                    "   {}: while applying, {} (an unrelated file)",
                    r.node,
                    l.summary()
                );
            }
            if let Some(t) = &r.traffic {
                println!(
                    "   {}: {} requests ({}), {} sent, {} received",
                    r.node,
                    t.total(),
                    t.breakdown(1.0, true),
                    bytes(t.sent as f64),
                    bytes(t.received as f64)
                );
            }
        }
    }

    fn to_json(&self) -> Value {
        let receivers: Vec<Value> = self
            .receivers
            .iter()
            .map(|r| {
                json!({
                    "node": r.node,
                    "from": r.from,
                    "events": r.events,
                    "applied_before": r.applied_before,
                    "since_create_s": r.since_create_s,
                    "setup_s": r.setup_s,
                    "first_s": r.first_s,
                    "log_s": r.log_s,
                    "listed_s": r.listed_s,
                    "events_per_s": r.events_per_second(),
                    "daemon_cpu_s": r.daemon_cpu,
                    "stat_ms": r.stat.as_ref().map(|l| json!({
                        "samples": l.0.len(),
                        "p50": l.quantile(0.5),
                        "p99": l.quantile(0.99),
                        "max": l.quantile(1.0),
                    })),
                    "traffic": r.traffic.as_ref().map(Traffic::to_json),
                })
            })
            .collect();
        json!({
            "files": self.files,
            "folders": self.folders,
            "create_s": self.create_s,
            "sync_s": self.sync_s,
            "published_events": self.published,
            "a_traffic": self.a_traffic.as_ref().map(Traffic::to_json),
            "receivers": receivers,
        })
    }
}

fn print_json(options: &Options, reports: &[Report], failures: &[String]) {
    let number = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let backends: Vec<Value> = reports
        .iter()
        .map(|report| {
            let propagation: Vec<Value> = report
                .propagation
                .iter()
                .map(|p| {
                    json!({
                        "poll_ms": p.poll_ms,
                        "file": if p.rewrite { "rewrite" } else { "new" },
                        "median_s": number(quantile(&p.readable, 0.5)),
                        "p90_s": number(quantile(&p.readable, 0.9)),
                        "max_s": number(quantile(&p.readable, 1.0)),
                        "published_median_s": number(quantile(&p.published, 0.5)),
                        "samples_s": p.readable,
                        "early_reads": p.early_reads,
                    })
                })
                .collect();
            let idle: Vec<Value> = report
                .idle
                .iter()
                .map(|i| {
                    let scale = 60.0 / i.secs;
                    json!({
                        "poll_ms": i.poll_ms,
                        "watched_s": i.secs,
                        "requests_per_min": i.traffic.as_ref().map(|t| t.total() as f64 * scale),
                        "sent_bytes_per_min": i.traffic.as_ref().map(|t| t.sent as f64 * scale),
                        "received_bytes_per_min": i.traffic.as_ref().map(|t| t.received as f64 * scale),
                        "daemon_cpu_s_per_min": i.daemon_cpu * scale,
                        "traffic": i.traffic.as_ref().map(Traffic::to_json),
                    })
                })
                .collect();
            json!({
                "backend": report.backend.name(),
                "url": report.url,
                "propagation": propagation,
                "idle": idle,
                "apply": report.apply.as_ref().map(Apply::to_json),
            })
        })
        .collect();
    let summary = json!({
        "bench": "syncbench",
        "rounds": options.rounds,
        "rewrite_rounds": options.rewrite_rounds,
        "size": options.size,
        "poll_ms": options.poll_ms,
        "idle_secs": options.idle_secs,
        "backends": backends,
        "failures": failures,
    });
    println!("{summary}");
}
