//! ondemandbench: reading a file whose content is only in the cloud (files
//! on demand), against the same file once it is local, a plain folder on the
//! same disk, and rclone's encrypted VFS mount of the same S3 server.
//!
//!     cargo build --release --benches
//!     eval "$(scripts/local-cloud.sh start target/moto)"   # S3 + DynamoDB (moto)
//!     cargo bench --bench ondemandbench -- [--size-mib 1024] [--rounds 3]
//!     scripts/local-cloud.sh stop target/moto
//!
//! Needs AWS_ENDPOINT_URL (and dummy credentials, as the script exports),
//! root (to drop the page cache and mount), `fusermount3`, and `rclone` for
//! the rclone figures (`apt-get install -y rclone`; without it the bench
//! says so and measures latus and the plain folder only).
//!
//! Setup (not timed): a file of `--size-mib` MiB of pseudo-random
//! (incompressible) bytes in a plain folder of the work dir. Node A (`latus
//! init --cloud aws://B?table=T --name a`, a fresh bucket and table per run)
//! gets it written into its mount and `latus sync --wait`s; node B joins with
//! A's exported key (`init --key-file`) and mounts (`poll_ms` 200 on both);
//! A is then unmounted. rclone: an `s3` remote (provider Other, endpoint
//! AWS_ENDPOINT_URL, a fresh bucket) under a `crypt` remote; `rclone copy`
//! uploads the same file into the crypt remote.
//!
//! Each of `--rounds` rounds measures latus (B), rclone and the plain folder,
//! one after the other, in an order that rotates every round. The page cache
//! is dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every timed read.
//!
//! - first byte: `open` + `pread` of the first 4 KiB of the cloud-only file,
//!   then (after `--settle-ms`, so readahead is done) `open` + `pread` of
//!   4 KiB in the middle. latus: `latus free` + `latus unpin` make the file
//!   cloud-only and B is remounted (forgetting any partial copy); rclone: a
//!   fresh mount (`rclone mount crypt: DIR --vfs-cache-mode full`) with an
//!   empty cache dir. The file is stat'ed once after each mount (both keep
//!   the listing locally), so the time is the content's.
//! - sequential, cloud-only: the whole file in 1 MiB `read`s (as `dd bs=1M`),
//!   from `open` to EOF, cloud-only again and freshly mounted as above.
//! - sequential, once local: the same read again (latus: the file is now
//!   local on B; rclone: it is in rclone's VFS cache).
//! - plain: the same reads of the file in the plain folder.
//! - raw GET (once, before the rounds): the volume's sealed chunks fetched
//!   from the server with 1, 4 and 16 parallel requests through latus's own
//!   backend code: the ceiling a fetcher could reach. Also a 4 KiB ranged
//!   GET of one chunk and of rclone's object: moto reads a whole object to
//!   serve any range of it, so on moto rclone (one object per file) pays
//!   in proportion to the file's size on every request, where real S3
//!   does not; compare rclone's figures with that in mind.
//!
//! The table shows medians over the rounds and the median of each round's
//! latus/plain and latus/rclone ratios (of times for the first-byte lines:
//! lower is better; of throughputs for the sequential lines: higher is
//! better), then one JSON line with every sample. The contents read are
//! checked against the source in the first round (not timed). Below the
//! table: the longest single `read` of each cloud-only sequential read
//! (latus checks the whole file's SHA-512 and syncs it inside the read
//! that completes it) and the cores the serving process kept busy.
//!
//! Every mount is unmounted on every path (a guard per mount: `latus
//! unmount`, `fusermount3 -u`; a latus daemon or rclone process that
//! outlives it is stopped by the PID this bench started or was told); ^C
//! stops the bench cleanly. Both buckets are emptied at the end (rclone's
//! goes too; with `--aws-url`, only the objects latus added go); latus's
//! empty bucket and its DynamoDB table stay.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use latus::cloud::{CloudUrl, ObjectStore, connect_objects};
use serde_json::{Value, json};
use uuid::Uuid;

// The report has its own layout (milliseconds and paired ratios), so some
// of the shared helpers go unused here.
#[allow(dead_code)]
mod common;
use common::{
    MIB, Node, Sample, WorkDir, can_drop_caches, check_interrupted, close,
    install_interrupt_handler, interrupted, kernel_release, latus_binary, pause, read_full, run,
    same_content,
};

/// Bytes of each first-byte read.
const PROBE: usize = 4096;
/// `poll_ms` of both nodes.
const POLL_MS: u64 = 200;
/// Longest wait for a mount to appear or for node B to list the file.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Parallel requests of the raw GET reference.
const RAW_GET_THREADS: [usize; 3] = [1, 4, 16];

#[derive(Parser)]
#[command(about = "Reading cloud-only files through latus, beside a plain folder and rclone")]
struct Options {
    /// The latus binary [default: target/release/latus]
    #[arg(long)]
    latus: Option<PathBuf>,
    /// Work directory, must be empty or absent; kept afterwards
    /// [default: a fresh temporary directory under target/ondemandbench/, removed afterwards]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the file, in MiB
    #[arg(long, default_value_t = 1024)]
    size_mib: usize,
    /// Rounds (each: latus, rclone, plain, in an order that rotates)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Cloud URL of the latus volume (its bucket should be fresh: every
    /// object it gains is deleted at the end)
    /// [default: aws://latus-ondemand-RUN?table=latus-ondemand-RUN]
    #[arg(long)]
    aws_url: Option<String>,
    /// The rclone binary [default: `rclone` on PATH]
    #[arg(long)]
    rclone: Option<PathBuf>,
    /// Skip the rclone figures
    #[arg(long)]
    no_rclone: bool,
    /// Skip the raw GET references (whole chunks, and 4 KiB ranges)
    #[arg(long)]
    no_raw_get: bool,
    /// Pause between the first-byte read and the middle one, so that the
    /// readahead the first started is over
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let options = Options::parse();
    ensure!(options.size_mib > 0, "--size-mib must be at least 1");
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    let Some(endpoint) = std::env::var_os("AWS_ENDPOINT_URL") else {
        bail!(
            "AWS_ENDPOINT_URL is not set: this bench reads from a local S3 + DynamoDB server. \
             Start one with `eval \"$(scripts/local-cloud.sh start target/moto)\"` (it installs \
             moto when missing and exports the endpoint and dummy credentials), and stop it \
             afterwards with `scripts/local-cloud.sh stop target/moto`"
        );
    };
    let endpoint = endpoint
        .into_string()
        .map_err(|_| anyhow!("AWS_ENDPOINT_URL is not UTF-8"))?;
    let latus = latus_binary(options.latus.clone())?;
    let rclone = if options.no_rclone {
        None
    } else {
        find_rclone(options.rclone.as_deref())?
    };
    let work = WorkDir::create(options.dir.as_deref())?;
    install_interrupt_handler();
    let cold_cache = can_drop_caches();
    let size = (options.size_mib * MIB) as u64;
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let url = options
        .aws_url
        .clone()
        .unwrap_or_else(|| format!("aws://latus-ondemand-{run_id}?table=latus-ondemand-{run_id}"));

    println!("latus:    {}", latus.display());
    println!("work dir: {}", work.path().display());
    println!("kernel:   {}", kernel_release());
    println!("cloud:    {url} at {endpoint}");
    println!("load:     {}", load_average());
    match &rclone {
        Some(path) => println!("rclone:   {} ({})", path.display(), rclone_version(path)),
        None if options.no_rclone => println!("rclone:   skipped (--no-rclone)"),
        None => println!(
            "rclone:   not found (install it with `apt-get install -y rclone`, or pass \
             --rclone PATH): no rclone figures"
        ),
    }
    println!(
        "file:     {} MiB, {} rounds",
        options.size_mib, options.rounds
    );
    if !cold_cache {
        println!(
            "note: cannot drop the page cache (needs root): the local and plain reads come \
             from memory"
        );
    }
    println!();

    let mut bench = Bench::setup(&options, &latus, work.path(), &url, &endpoint, rclone, size)?;
    let (raw_get, range_gets) = if options.no_raw_get {
        (Vec::new(), Vec::new())
    } else {
        (bench.raw_get()?, bench.range_gets()?)
    };
    let mut rounds = Vec::new();
    for round in 0..options.rounds {
        rounds.push(bench.round(round, cold_cache)?);
    }
    let report = Report {
        rounds,
        raw_get,
        range_gets,
        rclone: bench.rclone.is_some(),
        rclone_missing: bench.rclone.is_none() && !options.no_rclone,
        cold_cache,
        size,
        upload: bench.upload,
        rclone_upload: bench.rclone_upload,
    };
    report.print();
    report.print_json(&options, &url);
    bench.finish()?;
    ensure!(
        !interrupted(),
        "interrupted; every mount was unmounted and the objects deleted"
    );
    Ok(())
}

// ---------------------------------------------------------------- the bench

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Latus,
    Rclone,
    Plain,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Latus => "latus",
            Self::Rclone => "rclone",
            Self::Plain => "plain",
        }
    }
}

/// One system's figures in one round.
#[derive(Clone, Copy)]
struct Figures {
    first: Duration,
    middle: Duration,
    cloud: Sample,
    local: Sample,
    /// CPU seconds of the serving process (latus daemon, rclone) during
    /// the cloud and the local sequential read.
    cloud_cpu: f64,
    local_cpu: f64,
    /// The longest single 1 MiB `read` of the cloud-only sequential read.
    cloud_stall: Duration,
}

struct Round {
    order: Vec<System>,
    latus: Figures,
    rclone: Option<Figures>,
    plain: Figures,
}

struct Bench {
    work: PathBuf,
    size: u64,
    settle: Duration,
    /// The file in the plain folder (the source of both uploads).
    plain: PathBuf,
    b: Peer,
    rclone: Option<Rclone>,
    /// Deletes the latus objects at the end; after the nodes (fields drop
    /// in order).
    cleanup: Option<StoreCleanup>,
    /// `latus sync --wait` on A, and `rclone copy` (not part of the figures).
    upload: Sample,
    rclone_upload: Option<Sample>,
    /// Rounds of rclone mounts so far, for fresh cache folders.
    mounts: usize,
}

impl Bench {
    fn setup(
        options: &Options,
        latus: &Path,
        work: &Path,
        url: &str,
        endpoint: &str,
        rclone: Option<PathBuf>,
        size: u64,
    ) -> Result<Self> {
        let plain_dir = work.join("plain");
        fs::create_dir(&plain_dir)?;
        let plain = plain_dir.join("big");
        eprint!(
            "writing {} MiB of noise to the plain folder ... ",
            size >> 20
        );
        write_noise(&plain, size)?;
        eprintln!("done");

        let mut a = Peer::new(latus, work, "a");
        a.init(url, None)?;
        let parsed = CloudUrl::parse(url)?;
        let store = connect_objects(&parsed, false, &mut Vec::new(), &Default::default())
            .map_err(|error| anyhow!("{error}"))
            .with_context(|| format!("connecting to {url}"))?;
        // What `init` stored (the volume's descriptor): not a chunk of the file.
        let existing = store.list().map_err(|error| anyhow!("{error}"))?;
        // A bucket of this run goes empty; one passed with --aws-url keeps
        // what it held.
        let keep = if options.aws_url.is_some() {
            existing.clone()
        } else {
            Vec::new()
        };
        let CloudUrl::Aws(target) = &parsed else {
            bail!("{url} is not an aws:// URL");
        };
        let cleanup = StoreCleanup {
            store,
            bucket: target.bucket.clone(),
            prefix: target.prefix.clone(),
            existing,
            keep,
            done: false,
        };
        let key = work.join("volume.key");
        let upload = (|| -> Result<Sample> {
            run(a.node.command().args(["key", "export"]).arg(&key))?;
            a.node.set_config("poll_ms", json!(POLL_MS))?;
            a.mount()?;
            let in_a = a.node.mountpoint.join("big");
            eprint!("a: writing the file into the mount ... ");
            let start = Instant::now();
            copy_file(&plain, &in_a)?;
            eprint!(
                "{:.1} s; latus sync --wait ... ",
                start.elapsed().as_secs_f64()
            );
            let start = Instant::now();
            a.sync_wait()?;
            let upload = Sample::since(start, size);
            eprintln!(
                "{:.1} s ({:.0} MB/s)",
                upload.elapsed.as_secs_f64(),
                upload.megabytes_per_second()
            );
            a.unmount().map(|()| upload)
        })();
        // A is unmounted before the objects may be deleted (on failure).
        drop(a);
        let upload = upload?;
        check_interrupted()?;

        let mut b = Peer::new(latus, work, "b");
        b.init(url, Some(&key))?;
        b.node.set_config("poll_ms", json!(POLL_MS))?;
        b.mount()?;
        b.sync_wait()?;
        let in_b = b.node.mountpoint.join("big");
        wait_for_file(&in_b, size)?;
        let state = b.state(&in_b)?;
        ensure!(state == "cloud", "b: the file is {state:?}, not \"cloud\"");
        eprintln!("b: lists the file, cloud-only");

        let mut bench = Self {
            work: work.to_owned(),
            size,
            settle: Duration::from_millis(options.settle_ms),
            plain,
            b,
            rclone: None,
            cleanup: Some(cleanup),
            upload,
            rclone_upload: None,
            mounts: 0,
        };
        if let Some(binary) = rclone {
            let rclone = Rclone::setup(binary, work, endpoint)?;
            eprint!("rclone: rclone copy into the crypt remote ... ");
            let start = Instant::now();
            rclone.upload(&bench.plain)?;
            let sample = Sample::since(start, size);
            eprintln!(
                "{:.1} s ({:.0} MB/s)",
                sample.elapsed.as_secs_f64(),
                sample.megabytes_per_second()
            );
            bench.rclone = Some(rclone);
            bench.rclone_upload = Some(sample);
        }
        Ok(bench)
    }

    /// GETs every object of the volume with 1, 4 and 16 parallel requests.
    fn raw_get(&self) -> Result<Vec<(usize, Sample)>> {
        let cleanup = self.cleanup.as_ref().expect("set up");
        let store = &cleanup.store;
        let existing: HashSet<&String> = cleanup.existing.iter().collect();
        let names: Vec<String> = store
            .list()
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .filter(|name| !existing.contains(name))
            .collect();
        let mut samples = Vec::new();
        for threads in RAW_GET_THREADS {
            eprint!(
                "raw GET of {} objects, {threads} parallel ... ",
                names.len()
            );
            let sample = parallel(threads, names.len(), |index| {
                let object = store.get(&names[index]).map_err(|e| anyhow!("{e}"))?;
                Ok(object.len() as u64)
            })?;
            eprintln!("{:.0} MB/s", sample.megabytes_per_second());
            samples.push((threads, sample));
            check_interrupted()?;
        }
        Ok(samples)
    }

    /// How long a 4 KiB ranged GET takes of one of latus's chunks and of
    /// rclone's object (the whole file): moto reads a whole object to serve
    /// any range of it, which real S3 does not.
    fn range_gets(&self) -> Result<Vec<(String, Duration)>> {
        let cleanup = self.cleanup.as_ref().expect("set up");
        let existing: HashSet<&String> = cleanup.existing.iter().collect();
        let chunk = cleanup
            .store
            .list()
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .find(|name| !existing.contains(name))
            .context("the latus bucket holds no chunk")?;
        let mut objects = vec![(
            "one of latus's chunks".to_owned(),
            cleanup.bucket.clone(),
            format!("{}{chunk}", cleanup.prefix),
        )];
        if let Some(rclone) = &self.rclone {
            let key = rclone.object_key()?;
            objects.push((
                format!("rclone's object ({} MiB)", self.size >> 20),
                rclone.bucket.clone(),
                key,
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            let config = aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build();
            let s3 = aws_sdk_s3::Client::from_conf(config);
            let mut result = Vec::new();
            for (what, bucket, key) in objects {
                let mut times = Vec::new();
                for _ in 0..3 {
                    let start = Instant::now();
                    let object = s3
                        .get_object()
                        .bucket(&bucket)
                        .key(&key)
                        .range(format!("bytes=0-{}", PROBE - 1))
                        .send()
                        .await
                        .with_context(|| format!("ranged GET of s3://{bucket}/{key}"))?;
                    let body = object.body.collect().await?.into_bytes();
                    ensure!(
                        body.len() == PROBE,
                        "a ranged GET returned {} bytes",
                        body.len()
                    );
                    times.push(start.elapsed().as_secs_f64());
                }
                let median = median(times).unwrap_or_default();
                eprintln!("4 KiB ranged GET of {what}: {:.1} ms", median * 1e3);
                result.push((what, Duration::from_secs_f64(median)));
            }
            Ok(result)
        })
    }

    fn round(&mut self, round: usize, cold: bool) -> Result<Round> {
        let mut order = vec![System::Latus, System::Plain];
        if self.rclone.is_some() {
            order.insert(1, System::Rclone);
        }
        let turn = round % order.len();
        order.rotate_left(turn);
        let names: Vec<&str> = order.iter().map(|s| s.name()).collect();
        eprintln!("round {}: {}", round + 1, names.join(", "));
        let verify = round == 0;
        let (mut latus, mut rclone, mut plain) = (None, None, None);
        for &system in &order {
            let figures = match system {
                System::Latus => self.measure_latus(cold, verify),
                System::Rclone => self.measure_rclone(cold, verify),
                System::Plain => self.measure_plain(cold),
            }
            .with_context(|| format!("round {}: {}", round + 1, system.name()))?;
            eprintln!(
                "  {:<6} first 4 KiB {:7.1} ms, middle {:7.1} ms, cloud-only {:5.0} MB/s, \
                 local {:5.0} MB/s",
                system.name(),
                ms(figures.first),
                ms(figures.middle),
                figures.cloud.megabytes_per_second(),
                figures.local.megabytes_per_second()
            );
            match system {
                System::Latus => latus = Some(figures),
                System::Rclone => rclone = Some(figures),
                System::Plain => plain = Some(figures),
            }
        }
        Ok(Round {
            order,
            latus: latus.expect("measured"),
            rclone,
            plain: plain.expect("measured"),
        })
    }

    fn measure_latus(&mut self, cold: bool, verify: bool) -> Result<Figures> {
        let file = self.b.node.mountpoint.join("big");
        self.b.make_cloud_only(&file)?;
        let (first, middle) = self.first_bytes(&file, cold)?;
        // Forget the partial copy the probes left (remount).
        self.b.make_cloud_only(&file)?;
        let pid = self.b.daemon.context("b is not mounted")?;
        let (cloud, cloud_cpu, cloud_stall) = timed_read(&file, self.size, cold, pid)?;
        // The complete copy is checked and put in place just after the read.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut state = self.b.state(&file)?;
        while state != "local" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            state = self.b.state(&file)?;
        }
        ensure!(
            state == "local",
            "after a whole read the file is {state:?} on b, not \"local\""
        );
        let (local, local_cpu, _) = timed_read(&file, self.size, cold, pid)?;
        if verify {
            ensure!(
                same_content(&self.plain, &file)?,
                "the file read through latus differs from the source"
            );
        }
        Ok(Figures {
            first,
            middle,
            cloud,
            local,
            cloud_cpu,
            local_cpu,
            cloud_stall,
        })
    }

    fn measure_rclone(&mut self, cold: bool, verify: bool) -> Result<Figures> {
        let mountpoint = self.work.join("mnt-rclone");
        let file = mountpoint.join("big");
        let caches =
            [self.mounts + 1, self.mounts + 2].map(|n| self.work.join(format!("rclone-cache-{n}")));
        self.mounts += 2;
        let rclone = self.rclone.as_ref().expect("rclone set up");
        let cache = &caches[0];
        let mount = rclone.mount(&mountpoint, cache, self.size)?;
        let (first, middle) = self.first_bytes(&file, cold)?;
        mount.unmount()?;
        fs::remove_dir_all(cache)?;

        let cache = &caches[1];
        let mount = rclone.mount(&mountpoint, cache, self.size)?;
        let pid = mount.child.id();
        let (cloud, cloud_cpu, cloud_stall) = timed_read(&file, self.size, cold, pid)?;
        let (local, local_cpu, _) = timed_read(&file, self.size, cold, pid)?;
        if verify {
            ensure!(
                same_content(&self.plain, &file)?,
                "the file read through rclone differs from the source"
            );
        }
        mount.unmount()?;
        fs::remove_dir_all(cache)?;
        Ok(Figures {
            first,
            middle,
            cloud,
            local,
            cloud_cpu,
            local_cpu,
            cloud_stall,
        })
    }

    fn measure_plain(&mut self, cold: bool) -> Result<Figures> {
        let (first, middle) = self.first_bytes(&self.plain, cold)?;
        let pid = std::process::id();
        let (sample, _, stall) = timed_read(&self.plain, self.size, cold, pid)?;
        Ok(Figures {
            first,
            middle,
            cloud: sample,
            local: sample,
            cloud_cpu: 0.0,
            local_cpu: 0.0,
            cloud_stall: stall,
        })
    }

    /// `open` + `pread` of 4 KiB at the start, then (after the pause) in the
    /// middle; each after dropping the page cache, each checked against the
    /// plain file.
    fn first_bytes(&self, file: &Path, cold: bool) -> Result<(Duration, Duration)> {
        let middle_offset = (self.size / 2) & !(PROBE as u64 - 1);
        let mut times = [Duration::ZERO; 2];
        for (index, offset) in [0, middle_offset].into_iter().enumerate() {
            if index > 0 {
                pause(self.settle)?;
            }
            if cold {
                drop_caches()?;
            }
            let start = Instant::now();
            let got = pread(file, offset, PROBE)?;
            times[index] = start.elapsed();
            let want = pread(&self.plain, offset, PROBE)?;
            ensure!(
                got == want,
                "{}: the 4 KiB at {offset} differ from the source",
                file.display()
            );
        }
        Ok((times[0], times[1]))
    }

    /// Unmounts B, stops rclone, deletes both buckets' objects.
    fn finish(mut self) -> Result<()> {
        self.b.unmount()?;
        if let Some(rclone) = self.rclone.take() {
            rclone.purge()?;
        }
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.delete()?;
        }
        Ok(())
    }
}

/// Whole-file read in 1 MiB `read`s after dropping the page cache; the
/// sample runs from `open` to EOF. Also the CPU seconds process `pid` used
/// meanwhile, and the longest single `read`.
fn timed_read(path: &Path, size: u64, cold: bool, pid: u32) -> Result<(Sample, f64, Duration)> {
    if cold {
        drop_caches()?;
    }
    check_interrupted()?;
    let cpu = process_cpu_seconds(pid);
    let mut buffer = vec![0; MIB];
    let start = Instant::now();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut total = 0u64;
    let mut longest = Duration::ZERO;
    loop {
        let before = Instant::now();
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        longest = longest.max(before.elapsed());
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    drop(file);
    let sample = Sample::since(start, total);
    let cpu = process_cpu_seconds(pid) - cpu;
    ensure!(
        total == size,
        "read {total} bytes of {}, it has {size}",
        path.display()
    );
    Ok((sample, cpu, longest))
}

/// `open` + `pread` of `len` bytes at `offset` (until `len` or EOF).
fn pread(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buffer = vec![0; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buffer[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buffer.truncate(done);
    Ok(buffer)
}

/// Writes back dirty pages, then empties the page, dentry and inode caches
/// (common.rs's, with ^C checked first: it can take a while).
fn drop_caches() -> Result<()> {
    check_interrupted()?;
    common::drop_caches()
}

// ---------------------------------------------------------------- data

/// A xorshift64* stream: incompressible, without repeats.
fn write_noise(path: &Path, size: u64) -> Result<()> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; MIB];
    let mut file = File::create(path)?;
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        for word in block[..n].chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

/// Copies `from` to `to` in 1 MiB writes and reports the error of `close`.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let mut reader = File::open(from)?;
    let mut file = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut block = vec![0; MIB];
    loop {
        let n = read_full(&mut reader, &mut block)?;
        if n == 0 {
            break;
        }
        file.write_all(&block[..n])?;
    }
    close(file).with_context(|| format!("closing {}", to.display()))
}

/// Waits until `path` exists with `size` bytes.
fn wait_for_file(path: &Path, size: u64) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match fs::metadata(path) {
            Ok(meta) if meta.len() == size => return Ok(()),
            _ if Instant::now() > deadline => bail!(
                "{} did not appear with {size} bytes within {} s",
                path.display(),
                READY_TIMEOUT.as_secs()
            ),
            _ => pause(Duration::from_millis(100))?,
        }
    }
}

/// Runs `job(index)` for every index below `count` on `workers` threads and
/// adds up the bytes the jobs return.
fn parallel(
    workers: usize,
    count: usize,
    job: impl Fn(usize) -> Result<u64> + Sync,
) -> Result<Sample> {
    let next = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let start = Instant::now();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count || interrupted() {
                            return Ok(());
                        }
                        let bytes =
                            job(index).inspect_err(|_| next.store(count, Ordering::Relaxed))?;
                        total.fetch_add(bytes as usize, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|handle| handle.join().expect("worker panicked"))
    })?;
    check_interrupted()?;
    Ok(Sample::since(start, total.into_inner() as u64))
}

// ---------------------------------------------------------------- latus nodes

/// A latus node of this bench: dropping it unmounts it and stops the daemon
/// it started (by the PID the daemon reported) if that outlives the unmount.
struct Peer {
    name: &'static str,
    node: Node,
    daemon: Option<u32>,
}

impl Peer {
    fn new(latus: &Path, work: &Path, name: &'static str) -> Self {
        let node = Node::new(
            latus,
            &work.join(format!("home-{name}")),
            &work.join(format!("mnt-{name}")),
        );
        Self {
            name,
            node,
            daemon: None,
        }
    }

    fn init(&self, url: &str, key_file: Option<&Path>) -> Result<()> {
        let mut command = self.node.command();
        command.args(["init", "--cloud", url, "--name", self.name]);
        if let Some(key) = key_file {
            command.arg("--key-file").arg(key);
        }
        run(&mut command)
    }

    fn mount(&mut self) -> Result<()> {
        check_interrupted()?;
        self.node.mount(false)?;
        let pid = self.status(None)?["pid"]
            .as_u64()
            .context("latus status --json has no pid")?;
        self.daemon = Some(u32::try_from(pid)?);
        Ok(())
    }

    /// `latus unmount` returns once the daemon is gone.
    fn unmount(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            self.node.unmount()?;
            self.daemon = None;
        }
        Ok(())
    }

    /// `latus status [PATH] --json`.
    fn status(&self, path: Option<&Path>) -> Result<Value> {
        let output = self
            .node
            .command()
            .arg("status")
            .args(path)
            .arg("--json")
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            output.status.success(),
            "latus status on node {} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    fn state(&self, path: &Path) -> Result<String> {
        let status = self.status(Some(path))?;
        Ok(status["state"].as_str().unwrap_or("?").to_owned())
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

    /// Evicts the file's local copy (`latus free`, then `latus unpin` so
    /// that reading it keeps it) and remounts, so the daemon has no partial
    /// copy of it either; then stats it once (as rclone's is).
    fn make_cloud_only(&mut self, file: &Path) -> Result<()> {
        run(self.node.command().arg("free").arg(file))?;
        run(self.node.command().arg("unpin").arg(file))?;
        self.unmount()?;
        self.mount()?;
        let state = self.state(file)?;
        ensure!(
            state == "cloud",
            "after latus free and a remount the file is {state:?} on node {}",
            self.name
        );
        fs::metadata(file)?;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let Some(pid) = self.daemon.take() else {
            return;
        };
        if let Err(error) = self.node.unmount() {
            eprintln!("ondemandbench: node {}: {error:#}", self.name);
        }
        // Only the daemon this node's mount started, if it still serves this home.
        let home = self.node.home.as_os_str().as_encoded_bytes().to_vec();
        stop_process(pid, |cmdline| {
            cmdline.windows(home.len()).any(|window| window == home)
        });
        // `Node`'s own drop then unmounts what is left (a stale mount).
    }
}

/// SIGTERM, then SIGKILL, to `pid` while `/proc/PID/cmdline` satisfies `ours`.
fn stop_process(pid: u32, ours: impl Fn(&[u8]) -> bool) {
    let alive = || fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| ours(&cmdline));
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        if !alive() {
            return;
        }
        eprintln!("ondemandbench: process {pid} is still running; sending signal {signal}");
        // SAFETY: kill(2) on a PID checked just above to be the process we started.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Deletes the objects of the latus bucket but those in `keep`.
struct StoreCleanup {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    /// Of every object key.
    prefix: String,
    /// The objects right after `init`.
    existing: Vec<String>,
    keep: Vec<String>,
    /// Deleted already (`delete`).
    done: bool,
}

impl StoreCleanup {
    fn delete(mut self) -> Result<()> {
        self.done = true;
        self.delete_new()
    }

    fn delete_new(&self) -> Result<()> {
        let keep: HashSet<&String> = self.keep.iter().collect();
        let names: Vec<String> = self
            .store
            .list()
            .map_err(|e| anyhow!("listing the objects to delete: {e}"))?
            .into_iter()
            .filter(|name| !keep.contains(name))
            .collect();
        let failed = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(name) = names.get(index) else { return };
                        if let Err(error) = self.store.delete(name) {
                            eprintln!("ondemandbench: cannot delete object {name}: {error}");
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        ensure!(
            !failed.into_inner(),
            "some objects of the latus bucket were not deleted"
        );
        Ok(())
    }
}

impl Drop for StoreCleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(error) = self.delete_new() {
            eprintln!("ondemandbench: {error:#}");
        }
    }
}

// ---------------------------------------------------------------- rclone

fn find_rclone(option: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(path) = option {
        ensure!(path.is_file(), "--rclone {} not found", path.display());
        return Ok(Some(path.to_owned()));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    Ok(std::env::split_paths(&path)
        .map(|dir| dir.join("rclone"))
        .find(|candidate| candidate.is_file()))
}

fn rclone_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "version unknown".into())
}

/// rclone with its own config: remote `s3` (the server at AWS_ENDPOINT_URL,
/// a fresh bucket) and `crypt` over it. Dropping it deletes the bucket.
struct Rclone {
    binary: PathBuf,
    config: PathBuf,
    bucket: String,
    purged: bool,
}

impl Rclone {
    fn setup(binary: PathBuf, work: &Path, endpoint: &str) -> Result<Self> {
        let mut rclone = Self {
            binary,
            config: work.join("rclone.conf"),
            bucket: format!(
                "rclone-ondemand-{}",
                &Uuid::new_v4().simple().to_string()[..8]
            ),
            purged: true,
        };
        let password = rclone.obscure(&Uuid::new_v4().simple().to_string())?;
        let salt = rclone.obscure(&Uuid::new_v4().simple().to_string())?;
        let config = format!(
            "[s3]\n\
             type = s3\n\
             provider = Other\n\
             endpoint = {endpoint}\n\
             access_key_id = test\n\
             secret_access_key = test\n\
             region = us-east-1\n\
             \n\
             [crypt]\n\
             type = crypt\n\
             remote = s3:{bucket}\n\
             password = {password}\n\
             password2 = {salt}\n",
            bucket = rclone.bucket
        );
        fs::write(&rclone.config, config)?;
        run(rclone
            .command()
            .arg("mkdir")
            .arg(format!("s3:{}", rclone.bucket)))
        .context("rclone mkdir (creating the bucket)")?;
        rclone.purged = false;
        Ok(rclone)
    }

    /// `rclone` with this config; without AWS_CA_BUNDLE, which rclone 1.60's
    /// S3 client cannot use ("unsupported transport") and the plain-HTTP
    /// endpoint does not need.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env("RCLONE_CONFIG", &self.config)
            .env_remove("AWS_CA_BUNDLE");
        command
    }

    fn obscure(&self, password: &str) -> Result<String> {
        let output = self
            .command()
            .args(["obscure", password])
            .stdin(Stdio::null())
            .output()?;
        ensure!(output.status.success(), "rclone obscure failed");
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// The S3 key of the one object the crypt remote holds.
    fn object_key(&self) -> Result<String> {
        let output = self
            .command()
            .arg("lsf")
            .arg(format!("s3:{}", self.bucket))
            .stdin(Stdio::null())
            .output()?;
        ensure!(output.status.success(), "rclone lsf failed");
        let text = String::from_utf8(output.stdout)?;
        let key = text.lines().next().context("rclone's bucket is empty")?;
        Ok(key.to_owned())
    }

    fn upload(&self, file: &Path) -> Result<()> {
        run(self.command().arg("copy").arg(file).arg("crypt:")).context("rclone copy")
    }

    /// `rclone mount crypt: MOUNTPOINT --vfs-cache-mode full --cache-dir
    /// CACHE`, once the mount is there and lists a file of `size` bytes.
    fn mount(&self, mountpoint: &Path, cache: &Path, size: u64) -> Result<RcloneMount> {
        check_interrupted()?;
        fs::create_dir_all(mountpoint)?;
        fs::create_dir_all(cache)?;
        let log = cache.with_extension("log");
        let child = self
            .command()
            .args(["mount", "crypt:"])
            .arg(mountpoint)
            .args(["--vfs-cache-mode", "full", "--cache-dir"])
            .arg(cache)
            .arg("--log-file")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting rclone mount")?;
        let mut mount = RcloneMount {
            child,
            mountpoint: mountpoint.to_owned(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !mount.is_mounted() {
            if let Some(status) = mount.child.try_wait()? {
                let log = fs::read_to_string(&log).unwrap_or_default();
                bail!("rclone mount exited ({status}):\n{log}");
            }
            ensure!(
                Instant::now() < deadline,
                "rclone mount did not mount {} within {} s",
                mountpoint.display(),
                READY_TIMEOUT.as_secs()
            );
            pause(Duration::from_millis(50))?;
        }
        wait_for_file(&mountpoint.join("big"), size)?;
        Ok(mount)
    }

    /// Deletes the bucket and what it holds.
    fn purge(mut self) -> Result<()> {
        self.purged = true;
        run(self
            .command()
            .arg("purge")
            .arg(format!("s3:{}", self.bucket)))
        .context("rclone purge (deleting the bucket)")
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        if self.purged {
            return;
        }
        let bucket = format!("s3:{}", self.bucket);
        if let Err(error) = run(self.command().arg("purge").arg(bucket)) {
            eprintln!("ondemandbench: {error:#}");
        }
    }
}

/// A running `rclone mount`; dropping it unmounts it and stops the process.
struct RcloneMount {
    child: Child,
    mountpoint: PathBuf,
}

impl RcloneMount {
    /// Whether the mount point is on another device than its parent.
    fn is_mounted(&self) -> bool {
        let parent = self.mountpoint.parent().unwrap_or(Path::new("/"));
        match (fs::metadata(&self.mountpoint), fs::metadata(parent)) {
            (Ok(point), Ok(parent)) => point.dev() != parent.dev(),
            _ => false,
        }
    }

    fn unmount(mut self) -> Result<()> {
        self.stop()
    }

    /// `fusermount3 -u` (lazily if that fails), then waits for the process
    /// to exit; kills it (by its PID, through `Child`) after 10 s.
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let mut result = Ok(());
        if self.is_mounted() {
            let unmounted = run(Command::new("fusermount3").arg("-u").arg(&self.mountpoint));
            if let Err(error) = unmounted {
                eprintln!("ondemandbench: {error:#}; falling back to fusermount3 -u -z");
                result = run(Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&self.mountpoint));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "ondemandbench: rclone mount (pid {}) did not exit; killing it",
                    self.child.id()
                );
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        result
    }
}

impl Drop for RcloneMount {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("ondemandbench: stopping rclone mount: {error:#}");
        }
    }
}

// ---------------------------------------------------------------- /proc

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

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
        + &format!(
            " on {} cores",
            thread::available_parallelism().map_or(1, |n| n.get())
        )
}

// ---------------------------------------------------------------- report

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// One figure of a system's `Figures`.
#[derive(Clone, Copy)]
enum Metric {
    First,
    Middle,
    Cloud,
    Local,
}

impl Metric {
    const ALL: [Self; 4] = [Self::First, Self::Middle, Self::Cloud, Self::Local];

    fn name(self) -> &'static str {
        match self {
            Self::First => "first 4 KiB (open + pread), cloud-only",
            Self::Middle => "4 KiB in the middle (open + pread), cloud-only",
            Self::Cloud => "sequential read (1 MiB reads), cloud-only",
            Self::Local => "sequential read, once local",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::First => "first_4k_ms",
            Self::Middle => "middle_4k_ms",
            Self::Cloud => "sequential_cloud_mb_s",
            Self::Local => "sequential_local_mb_s",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::First | Self::Middle => "ms",
            Self::Cloud | Self::Local => "MB/s",
        }
    }

    fn of(self, figures: &Figures) -> f64 {
        match self {
            Self::First => ms(figures.first),
            Self::Middle => ms(figures.middle),
            Self::Cloud => figures.cloud.megabytes_per_second(),
            Self::Local => figures.local.megabytes_per_second(),
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Self::First | Self::Middle if value < 10.0 => format!("{value:.2}"),
            Self::First | Self::Middle => format!("{value:.1}"),
            Self::Cloud | Self::Local => format!("{value:.0}"),
        }
    }
}

struct Report {
    rounds: Vec<Round>,
    raw_get: Vec<(usize, Sample)>,
    /// 4 KiB ranged GETs of one object, median.
    range_gets: Vec<(String, Duration)>,
    rclone: bool,
    rclone_missing: bool,
    cold_cache: bool,
    size: u64,
    upload: Sample,
    rclone_upload: Option<Sample>,
}

impl Report {
    fn values(&self, metric: Metric, system: System) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|round| {
                let figures = match system {
                    System::Latus => Some(&round.latus),
                    System::Rclone => round.rclone.as_ref(),
                    System::Plain => Some(&round.plain),
                };
                figures.map(|figures| metric.of(figures))
            })
            .collect()
    }

    /// latus / `other`, per round.
    fn ratios(&self, metric: Metric, other: System) -> Vec<f64> {
        let latus = self.values(metric, System::Latus);
        let other = self.values(metric, other);
        latus.iter().zip(&other).map(|(l, o)| l / o).collect()
    }

    fn print(&self) {
        let cell =
            |metric: Metric, value: Option<f64>| value.map_or("-".into(), |v| metric.format(v));
        let ratio = |value: Option<f64>| value.map_or("-".into(), |v| format!("{v:.2}"));
        let name_width = Metric::ALL
            .iter()
            .map(|m| m.name().len())
            .max()
            .unwrap_or(8);
        println!();
        println!(
            "{:<name_width$}  {:>4}  {:>8}  {:>8}  {:>8}  {:>11}  {:>12}",
            "workload (medians)", "unit", "plain", "latus", "rclone", "latus/plain", "latus/rclone"
        );
        for metric in Metric::ALL {
            let rclone_ratio = self
                .rclone
                .then(|| median(self.ratios(metric, System::Rclone)));
            println!(
                "{:<name_width$}  {:>4}  {:>8}  {:>8}  {:>8}  {:>11}  {:>12}",
                metric.name(),
                metric.unit(),
                cell(metric, median(self.values(metric, System::Plain))),
                cell(metric, median(self.values(metric, System::Latus))),
                cell(metric, median(self.values(metric, System::Rclone))),
                ratio(median(self.ratios(metric, System::Plain))),
                ratio(rclone_ratio.flatten()),
            );
        }
        println!();
        println!(
            "ratios: medians of each round's latus/other; for ms lower is better, for MB/s \
             higher. plain: the file in a plain folder on the same disk (cloud-only = local)."
        );
        if !self.cold_cache {
            println!("page cache NOT dropped (not root): local and plain reads are from memory");
        }
        for (threads, sample) in &self.raw_get {
            println!(
                "raw GET of the volume's sealed chunks, {threads:>2} parallel: {:.0} MB/s",
                sample.megabytes_per_second()
            );
        }
        for (what, time) in &self.range_gets {
            println!("4 KiB ranged GET of {what}: {:.1} ms", ms(*time));
        }
        if self.range_gets.len() > 1 {
            println!(
                "  (moto reads a whole object to serve any range of it, so rclone's reads of \
                 its one large object pay that on every request; real S3 does not)"
            );
        }
        let cores = |system: System, local: bool| {
            let values: Vec<f64> = self
                .rounds
                .iter()
                .filter_map(|round| {
                    let figures = match system {
                        System::Latus => Some(&round.latus),
                        _ => round.rclone.as_ref(),
                    }?;
                    let (cpu, sample) = if local {
                        (figures.local_cpu, figures.local)
                    } else {
                        (figures.cloud_cpu, figures.cloud)
                    };
                    Some(cpu / sample.elapsed.as_secs_f64())
                })
                .collect();
            median(values).map_or("-".into(), |v| format!("{v:.2}"))
        };
        println!(
            "cores busy during the sequential reads (median): latus daemon {} cloud-only, {} \
             local; rclone {} cloud-only, {} local",
            cores(System::Latus, false),
            cores(System::Latus, true),
            if self.rclone {
                cores(System::Rclone, false)
            } else {
                "-".into()
            },
            if self.rclone {
                cores(System::Rclone, true)
            } else {
                "-".into()
            },
        );
        let stall = |system: System| {
            let values: Vec<f64> = self
                .rounds
                .iter()
                .filter_map(|round| match system {
                    System::Latus => Some(ms(round.latus.cloud_stall)),
                    System::Rclone => round.rclone.as_ref().map(|f| ms(f.cloud_stall)),
                    System::Plain => Some(ms(round.plain.cloud_stall)),
                })
                .collect();
            median(values).map_or("-".into(), |v| format!("{v:.0} ms"))
        };
        println!(
            "longest single 1 MiB read of the cloud-only sequential read (median): latus {}, \
             rclone {}, plain {}",
            stall(System::Latus),
            stall(System::Rclone),
            stall(System::Plain)
        );
        print!(
            "upload (not part of the figures): latus sync --wait {:.0} MB/s",
            self.upload.megabytes_per_second()
        );
        match self.rclone_upload {
            Some(sample) => println!(", rclone copy {:.0} MB/s", sample.megabytes_per_second()),
            None => println!(),
        }
        if self.rclone_missing {
            println!(
                "rclone is not installed: no rclone figures (`apt-get install -y rclone`, then rerun)"
            );
        }
        let orders: Vec<String> = self
            .rounds
            .iter()
            .map(|round| {
                let names: Vec<&str> = round.order.iter().map(|s| s.name()).collect();
                names.join(">")
            })
            .collect();
        println!("round orders: {}", orders.join(", "));
        println!("file: {} MiB", self.size >> 20);
    }

    fn print_json(&self, options: &Options, url: &str) {
        let figures_json = |figures: &Figures| {
            let mut object = serde_json::Map::new();
            for metric in Metric::ALL {
                object.insert(metric.key().into(), json!(metric.of(figures)));
            }
            object.insert("cloud_cpu_s".into(), json!(figures.cloud_cpu));
            object.insert("local_cpu_s".into(), json!(figures.local_cpu));
            object.insert(
                "cloud_longest_read_ms".into(),
                json!(ms(figures.cloud_stall)),
            );
            Value::Object(object)
        };
        let rounds: Vec<Value> = self
            .rounds
            .iter()
            .map(|round| {
                json!({
                    "order": round.order.iter().map(|s| s.name()).collect::<Vec<_>>(),
                    "latus": figures_json(&round.latus),
                    "rclone": round.rclone.as_ref().map(figures_json),
                    "plain": figures_json(&round.plain),
                })
            })
            .collect();
        let mut medians = serde_json::Map::new();
        for metric in Metric::ALL {
            medians.insert(
                metric.key().into(),
                json!({
                    "plain": median(self.values(metric, System::Plain)),
                    "latus": median(self.values(metric, System::Latus)),
                    "rclone": median(self.values(metric, System::Rclone)),
                    "latus_over_plain": median(self.ratios(metric, System::Plain)),
                    "latus_over_rclone": median(self.ratios(metric, System::Rclone)),
                }),
            );
        }
        let summary = json!({
            "bench": "ondemandbench",
            "size_mib": options.size_mib,
            "rounds": options.rounds,
            "cloud": url,
            "cold_cache": self.cold_cache,
            "rclone": self.rclone,
            "medians": medians,
            "raw_get_mb_s": self
                .raw_get
                .iter()
                .map(|(threads, sample)| (threads.to_string(), json!(sample.megabytes_per_second())))
                .collect::<serde_json::Map<String, Value>>(),
            "range_get_4k_ms": self
                .range_gets
                .iter()
                .map(|(what, time)| (what.clone(), json!(ms(*time))))
                .collect::<serde_json::Map<String, Value>>(),
            "upload_mb_s": self.upload.megabytes_per_second(),
            "rclone_upload_mb_s": self.rclone_upload.map(Sample::megabytes_per_second),
            "samples": rounds,
        });
        println!("{summary}");
    }
}
