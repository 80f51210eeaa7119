//! costbench: what latus's operations cost on AWS, in requests and bytes,
//! and in dollars at AWS list prices.
//!
//!     scripts/local-cloud.sh start target/local-cloud > /tmp/cloud.env && . /tmp/cloud.env
//!     cargo build --release && cargo bench --bench costbench -- [--big-mib 1024] [--files 10000]
//!
//! Runs against the S3 and DynamoDB endpoints of the environment (moto from
//! `scripts/local-cloud.sh`, or a real account), a fresh bucket and table.
//! Each daemon counts every request it sends, by operation, retries
//! included (`cloud_requests` in `latus status --json`, from an interceptor
//! on the SDK clients); each row is the difference across one operation,
//! after `latus sync --wait` (and, for the joining node, once it lists the
//! whole tree):
//!
//! - a new 4 KiB file;
//! - a 1-byte edit in the middle of a `--big-mib` MiB file;
//! - a rename of a folder of 100 files;
//! - an idle minute (scaled to an hour);
//! - a new node joining a volume of `--files` files (in 100 folders).
//!
//! Prices (us-east-1, list, on-demand): S3 Standard PUT/COPY/POST/LIST
//! $0.005 per 1,000, GET/HEAD $0.0004 per 1,000, DELETE free; DynamoDB
//! on-demand $0.625 per million write request units (one per KB written),
//! $0.125 per million read request units (one per 4 KB read, halved for
//! eventually consistent reads: counted as strongly consistent here, an
//! upper bound); transfer in is free, out $0.09 per GB.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::{Value, json};
use uuid::Uuid;

#[allow(dead_code)]
mod common;
use common::{Node, WorkDir, install_interrupt_handler, latus_binary, pause, run};

#[derive(Parser)]
struct Args {
    /// Size of the file the 1-byte edit goes into.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// Files in the volume a new node joins.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Length of the idle stretch, scaled to an hour.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// The latus binary (default: target/release/latus, else debug).
    #[arg(long)]
    latus: Option<std::path::PathBuf>,
    /// Keep everything in this (empty) folder instead of a temporary one.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[arg(long, hide = true)]
    bench: bool,
}

/// Requests and bytes of one operation kind (`s3:PutObject`, ...).
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    requests: u64,
    sent: u64,
    received: u64,
}

type Counts = BTreeMap<String, Count>;

fn counts(node: &Node) -> Result<Counts> {
    let output = node.command().args(["status", "--json"]).output()?;
    ensure!(output.status.success(), "latus status --json failed");
    let v: Value = serde_json::from_slice(&output.stdout)?;
    let mut out = Counts::new();
    for (op, c) in v["cloud_requests"]
        .as_object()
        .context("status has no cloud_requests")?
    {
        out.insert(
            op.clone(),
            Count {
                requests: c["requests"].as_u64().unwrap_or(0),
                sent: c["sent_bytes"].as_u64().unwrap_or(0),
                received: c["received_bytes"].as_u64().unwrap_or(0),
            },
        );
    }
    Ok(out)
}

fn minus(after: &Counts, before: &Counts) -> Counts {
    let mut out = Counts::new();
    for (op, a) in after {
        let b = before.get(op).copied().unwrap_or_default();
        let d = Count {
            requests: a.requests - b.requests,
            sent: a.sent - b.sent,
            received: a.received - b.received,
        };
        if d.requests > 0 {
            out.insert(op.clone(), d);
        }
    }
    out
}

fn scaled(c: &Counts, factor: f64) -> Counts {
    c.iter()
        .map(|(op, n)| {
            let s = |x: u64| (x as f64 * factor).round() as u64;
            (
                op.clone(),
                Count {
                    requests: s(n.requests),
                    sent: s(n.sent),
                    received: s(n.received),
                },
            )
        })
        .collect()
}

/// Dollars at AWS list prices (see the module comment).
fn dollars(c: &Counts) -> f64 {
    let mut total = 0.0;
    for (op, n) in c {
        let r = n.requests as f64;
        total += match op.as_str() {
            "s3:GetObject" | "s3:HeadObject" | "s3:HeadBucket" => r * 0.0004 / 1000.0,
            "s3:DeleteObject" | "s3:DeleteObjects" => 0.0,
            o if o.starts_with("s3:") => r * 0.005 / 1000.0,
            // DynamoDB: a write unit per KB of each request, a read unit
            // per 4 KB of each answer.
            "dynamodb:PutItem"
            | "dynamodb:TransactWriteItems"
            | "dynamodb:UpdateItem"
            | "dynamodb:DeleteItem" => {
                let kb = (n.sent as f64 / r.max(1.0) / 1024.0).ceil().max(1.0);
                r * kb * 0.625 / 1e6
            }
            o if o.starts_with("dynamodb:") => {
                let units = (n.received as f64 / r.max(1.0) / 4096.0).ceil().max(1.0);
                r * units * 0.125 / 1e6
            }
            _ => 0.0,
        };
        if op.starts_with("s3:GetObject") {
            total += n.received as f64 / 1e9 * 0.09;
        }
    }
    total
}

fn describe(c: &Counts) -> String {
    c.iter()
        .map(|(op, n)| format!("{op} {}", n.requests))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Row {
    what: String,
    counts: Counts,
}

fn sync_wait(node: &Node) -> Result<()> {
    run(node.command().args(["sync", "--wait"]))
}

fn main() -> Result<()> {
    let args = Args::parse();
    install_interrupt_handler();
    ensure!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_PROFILE").is_some(),
        "no S3/DynamoDB endpoint: start one with scripts/local-cloud.sh and source its exports"
    );
    let latus = latus_binary(args.latus.clone())?;
    let work = WorkDir::create(args.dir.as_deref())?;
    let w = work.path();
    let id = &Uuid::new_v4().simple().to_string()[..12];
    let url = format!("aws://latus-cost-{id}?table=latus-cost-{id}");

    let a = Node::new(&latus, &w.join("a-home"), &w.join("a"));
    a.init(Some(&url))?;
    a.mount(false)?;
    sync_wait(&a)?;
    let mut rows = Vec::new();
    let mut step =
        |what: String, node: &Node, f: &mut dyn FnMut() -> Result<()>| -> Result<Counts> {
            let before = counts(node)?;
            f()?;
            let d = minus(&counts(node)?, &before);
            rows.push(Row {
                what,
                counts: d.clone(),
            });
            Ok(d)
        };

    step("a new 4 KiB file".into(), &a, &mut || {
        fs::write(a.mountpoint.join("new.bin"), pattern(4096, 1))?;
        sync_wait(&a)
    })?;

    // The big file is written unmeasured, then edited.
    let big = a.mountpoint.join("big.bin");
    {
        let mut f = File::create(&big)?;
        let block = pattern(1 << 20, 2);
        for i in 0..args.big_mib {
            let mut b = block.clone();
            b[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&b)?;
        }
        f.sync_all()?;
    }
    sync_wait(&a)?;
    step(
        format!("a 1-byte edit of a {} MiB file", args.big_mib),
        &a,
        &mut || {
            let f = OpenOptions::new().write(true).open(&big)?;
            f.write_all_at(b"!", args.big_mib * (1 << 19))?;
            drop(f);
            sync_wait(&a)
        },
    )?;

    let folder = a.mountpoint.join("folder");
    fs::create_dir(&folder)?;
    for i in 0..100 {
        fs::write(folder.join(format!("f{i}")), pattern(100, i))?;
    }
    sync_wait(&a)?;
    step("a rename of a folder of 100 files".into(), &a, &mut || {
        fs::rename(&folder, a.mountpoint.join("renamed"))?;
        sync_wait(&a)
    })?;

    let idle_before = counts(&a)?;
    pause(Duration::from_secs(args.idle_secs))?;
    let idle = minus(&counts(&a)?, &idle_before);
    rows.push(Row {
        what: format!("an idle hour (from {} s)", args.idle_secs),
        counts: scaled(&idle, 3600.0 / args.idle_secs as f64),
    });

    // The volume a new node joins: --files files in 100 folders.
    let started = Instant::now();
    for d in 0..100 {
        let dir = a.mountpoint.join(format!("tree/d{d}"));
        fs::create_dir_all(&dir)?;
        for i in 0..args.files / 100 {
            fs::write(dir.join(format!("f{i}")), pattern(64, i))?;
        }
    }
    sync_wait(&a)?;
    eprintln!(
        "costbench: {} files written and published in {:.1} s",
        args.files,
        started.elapsed().as_secs_f64()
    );
    let key = w.join("volume.key");
    run(a.command().args(["key", "export"]).arg(&key))?;
    let b = Node::new(&latus, &w.join("b-home"), &w.join("b"));
    run(b
        .command()
        .args(["init", "--cloud", &url, "--key-file"])
        .arg(&key))?;
    b.mount(false)?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let last = b
        .mountpoint
        .join(format!("tree/d99/f{}", args.files / 100 - 1));
    while !last.exists() {
        ensure!(
            Instant::now() < deadline,
            "the new node did not list the tree"
        );
        pause(Duration::from_millis(200))?;
    }
    let joined = counts(&b)?;
    rows.push(Row {
        what: format!(
            "a new node joining a volume of {} files (until it lists them)",
            args.files
        ),
        counts: joined,
    });
    drop(b);
    drop(a);

    println!(
        "| operation | requests | sent | received | dollars | by operation |\n|---|---|---|---|---|---|"
    );
    let mut json_rows = Vec::new();
    for r in &rows {
        let req: u64 = r.counts.values().map(|c| c.requests).sum();
        let sent: u64 = r.counts.values().map(|c| c.sent).sum();
        let recv: u64 = r.counts.values().map(|c| c.received).sum();
        let usd = dollars(&r.counts);
        println!(
            "| {} | {req} | {} | {} | ${usd:.6} | {} |",
            r.what,
            human(sent),
            human(recv),
            describe(&r.counts)
        );
        json_rows.push(json!({
            "operation": r.what, "requests": req, "sent_bytes": sent,
            "received_bytes": recv, "dollars": usd,
            "by_operation": r.counts.iter().map(|(k, c)| (k.clone(), c.requests)).collect::<BTreeMap<_, _>>(),
        }));
    }
    println!("{}", json!({ "bench": "costbench", "rows": json_rows }));
    Ok(())
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Incompressible, distinct per seed (dedup must not hide an upload).
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
