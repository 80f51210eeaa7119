//! A volume of many files (issue 12's "a million files"): makes it through
//! the mount on the embedded `dir` cloud and reports, each next to the
//! plain folder where there is one:
//!
//! - creation rate, and how long publishing takes (`sync --wait`);
//! - mount time (`latus mount` returning on a home that holds the volume)
//!   and the daemon's memory per entry (VmRSS after mount and after a full
//!   listing);
//! - a cold `ls -lR` (caches dropped) against the same tree on the plain
//!   disk;
//! - a new node joining without a checkpoint (it reads the whole log:
//!   apply rate) and, after `latus log checkpoint`, one joining from it;
//!   both until the whole tree is listed.
//!
//! `cargo build --release && cargo bench --bench scalebench -- --files 1000000`
//! (default 100,000 files, 10 per folder, then four rounds of edits of
//! every file, so the log holds about five records per file).

#[allow(dead_code)]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::Value;

use common::{
    Node, WorkDir, can_drop_caches, drop_caches, install_interrupt_handler, kernel_release,
    latus_binary,
};

#[derive(Parser)]
struct Options {
    /// Files in the volume (1 byte each).
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// Files per folder (the million files have 100,000 folders).
    #[arg(long, default_value_t = 10)]
    per_dir: usize,
    /// Rounds of edits of every file after creating them (the issue's
    /// log holds five records per file: four rounds).
    #[arg(long, default_value_t = 4)]
    edits: usize,
    /// Folders per top-level folder (so no folder holds them all).
    #[arg(long, default_value_t = 1000)]
    fan_out: usize,
    /// The latus binary (default target/release/latus).
    #[arg(long)]
    latus: Option<PathBuf>,
    /// Work directory (default a temporary one under target/scalebench).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How long a node may take to catch up, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    /// Bench-time tracing for the daemons (LATUS_LOG).
    #[arg(long)]
    log: Option<String>,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(options.files > 0 && options.per_dir > 0 && options.fan_out > 0);
    let latus = latus_binary(options.latus.clone())?;
    let work = WorkDir::create(options.dir.as_deref())?;
    install_interrupt_handler();
    let folders = options.files.div_ceil(options.per_dir);
    let entries = options.files + folders + folders.div_ceil(options.fan_out);
    println!("latus:    {}", latus.display());
    println!("work dir: {}", work.path().display());
    println!("kernel:   {}", kernel_release());
    println!(
        "volume:   {} files of 1 byte in {} folders ({} entries)\n",
        options.files, folders, entries
    );
    let cloud = format!("dir:{}", work.path().join("cloud").display());
    let node = |name: &str| {
        let mut n = Node::new(
            &latus,
            &work.path().join(format!("{name}-home")),
            &work.path().join(format!("{name}-mnt")),
        );
        if let Some(l) = &options.log {
            n.env.push(("LATUS_LOG".into(), Some(l.into())));
        }
        n
    };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut say = |what: &str, latus: String, plain: String| {
        println!("{what:<48} {latus:>22} {plain:>16}");
        rows.push((what.into(), latus, plain));
    };

    // The plain disk first: the same tree, for the ratios.
    let plain = work.path().join("plain");
    let plain_create = write_tree(&plain, &options, 0)?;
    let a = node("a");
    a.init(Some(&cloud))?;
    a.set_config("poll_ms", 500.into())?;
    // No checkpoint until the bench asks for one: node c reads the whole log.
    a.set_config("checkpoint_every", 0.into())?;
    a.mount(false)?;
    let latus_create = write_tree(&a.mountpoint, &options, 0)?;
    say(
        "create (files/s)",
        format!("{:.0}", options.files as f64 / latus_create),
        format!("{:.0}", options.files as f64 / plain_create),
    );
    let t = Instant::now();
    sync_wait(&a)?;
    say(
        "publish: sync --wait after the last create (s)",
        format!("{:.1}", t.elapsed().as_secs_f64()),
        "-".into(),
    );
    if options.edits > 0 {
        let t = Instant::now();
        for round in 1..=options.edits {
            write_tree(&a.mountpoint, &options, round as u8)?;
        }
        sync_wait(&a)?;
        say(
            &format!("{} rounds of edits, published (edits/s)", options.edits),
            format!(
                "{:.0}",
                (options.edits * options.files) as f64 / t.elapsed().as_secs_f64()
            ),
            "-".into(),
        );
    }
    let log_end = queue(&a, "log_seen")?;
    println!("(the log holds {log_end} records)");

    a.unmount()?;
    let t = Instant::now();
    a.mount(false)?;
    let mount_s = t.elapsed().as_secs_f64();
    let rss_mounted = rss(&a)?;
    say("mount (s)", format!("{mount_s:.2}"), "-".into());
    let cold = |root: &Path| -> Result<f64> {
        if can_drop_caches() {
            drop_caches()?;
        }
        let t = Instant::now();
        let status = Command::new("ls")
            .arg("-lR")
            .arg(root)
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "ls -lR {} failed", root.display());
        Ok(t.elapsed().as_secs_f64())
    };
    let (latus_ls, plain_ls) = (cold(&a.mountpoint)?, cold(&plain)?);
    say(
        "cold ls -lR (s; ratio to the plain disk)",
        format!("{latus_ls:.2} ({:.2}x)", latus_ls / plain_ls),
        format!("{plain_ls:.2}"),
    );
    let rss_listed = rss(&a)?;
    say(
        "daemon memory after mount / after ls -lR (MB)",
        format!("{:.0} / {:.0}", rss_mounted / 1e6, rss_listed / 1e6),
        "-".into(),
    );
    say(
        "daemon memory per entry after ls -lR (bytes)",
        format!("{:.0}", rss_listed / entries as f64),
        "-".into(),
    );

    // A node joining with the whole log to read.
    let key = work.path().join("volume-key.json");
    common::run(a.command().args(["key", "export"]).arg(&key))?;
    let c = node("c");
    let (c_log, c_listed) = join(&c, &cloud, &key, log_end, &options)?;
    say(
        "join without a checkpoint: log applied / listed (s)",
        format!("{c_log:.1} / {c_listed:.1}"),
        "-".into(),
    );
    say(
        "apply of remote records (records/s)",
        format!("{:.0}", log_end as f64 / c_log),
        "-".into(),
    );
    c.unmount()?;

    let t = Instant::now();
    let out = Command::new(&latus)
        .arg("--home")
        .arg(&a.home)
        .args(["log", "checkpoint", "--json"])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "latus log checkpoint failed");
    let made: Value = serde_json::from_slice(&out.stdout)?;
    say(
        "make a checkpoint (s; MB sealed)",
        format!(
            "{:.1} ({:.1} MB)",
            t.elapsed().as_secs_f64(),
            made["bytes"].as_f64().unwrap_or(0.0) / 1e6
        ),
        "-".into(),
    );
    let log_end = queue(&a, "log_seen")?;
    let b = node("b");
    let (b_log, b_listed) = join(&b, &cloud, &key, log_end, &options)?;
    say(
        "join from the checkpoint: log applied / listed (s)",
        format!("{b_log:.1} / {b_listed:.1}"),
        "-".into(),
    );
    ensure!(
        queue(&b, "history_from")? > 0,
        "node b did not start from the checkpoint; {}",
        b.log_tail()
    );
    b.unmount()?;
    a.unmount()?;
    println!(
        "\n(goals, issue 12: mount <= 2 s and <= 200 bytes per entry at 1M files; cold ls -lR \
         within 3x; a new node lists 1M files <= 60 s; apply >= 20,000 records/s)"
    );
    Ok(())
}

fn folder(root: &Path, d: usize, options: &Options) -> PathBuf {
    root.join(format!("t{:03}", d / options.fan_out))
        .join(format!("d{d:06}"))
}

/// Writes every file of the tree under `root` with two writers; returns
/// seconds. `round` 0 makes the tree (folders and 1-byte files); a later
/// round writes each file again (one new version each).
fn write_tree(root: &Path, options: &Options, round: u8) -> Result<f64> {
    fs::create_dir_all(root)?;
    let folders = options.files.div_ceil(options.per_dir);
    let t = Instant::now();
    thread::scope(|s| -> Result<()> {
        let writers: Vec<_> = (0..2)
            .map(|w| {
                s.spawn(move || -> Result<()> {
                    for d in (w..folders).step_by(2) {
                        common::check_interrupted()?;
                        let dir = folder(root, d, options);
                        if round == 0 {
                            fs::create_dir_all(&dir)
                                .with_context(|| format!("creating {}", dir.display()))?;
                        }
                        for f in d * options.per_dir..((d + 1) * options.per_dir).min(options.files)
                        {
                            let content: &[u8] = if round == 0 {
                                &[f as u8]
                            } else {
                                &[f as u8, round]
                            };
                            fs::write(dir.join(format!("f{f:07}")), content)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread")?;
        }
        Ok(())
    })?;
    Ok(t.elapsed().as_secs_f64())
}

fn status(node: &Node) -> Result<Value> {
    let out = node
        .command()
        .args(["status", "--json"])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "latus status failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn queue(node: &Node, key: &str) -> Result<u64> {
    status(node)?["queue"][key]
        .as_u64()
        .with_context(|| format!("status has no queue.{key}"))
}

fn sync_wait(node: &Node) -> Result<()> {
    common::run(node.command().args(["sync", "--wait", "--timeout", "7200"]))
}

/// The daemon's resident memory in bytes.
fn rss(node: &Node) -> Result<f64> {
    let pid = status(node)?["pid"].as_u64().context("no pid in status")?;
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024.0)
}

/// A new node joins with the key and mounts; returns the seconds until it
/// has read the log to `log_end`, and until it lists every file.
fn join(
    node: &Node,
    cloud: &str,
    key: &Path,
    log_end: u64,
    options: &Options,
) -> Result<(f64, f64)> {
    common::run(
        node.command()
            .args(["init", "--cloud", cloud, "--key-file"])
            .arg(key),
    )?;
    let t = Instant::now();
    node.mount(false)?;
    let deadline = Duration::from_secs(options.timeout_secs);
    let log_s = loop {
        common::check_interrupted()?;
        if queue(node, "log_seen")? >= log_end {
            break t.elapsed().as_secs_f64();
        }
        ensure!(
            t.elapsed() < deadline,
            "still reading the log; {}",
            node.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    };
    loop {
        let listed = count_files(&node.mountpoint, options);
        if listed == options.files {
            break;
        }
        ensure!(
            t.elapsed() < deadline,
            "{listed} of {} files listed; {}",
            options.files,
            node.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
    Ok((log_s, t.elapsed().as_secs_f64()))
}

fn count_files(root: &Path, options: &Options) -> usize {
    let folders = options.files.div_ceil(options.per_dir);
    (0..folders)
        .map(|d| {
            fs::read_dir(folder(root, d, options))
                .map(|e| e.filter(|x| x.is_ok()).count())
                .unwrap_or(0)
        })
        .sum()
}
