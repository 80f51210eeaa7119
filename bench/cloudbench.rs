//! cloudbench: throughput of latus's cloud pipeline against the raw
//! throughput of the same object store, and against the CPU's hash+seal limit.
//!
//!     cargo build --release
//!     cargo bench --bench cloudbench -- [--size-mib 512] [--cloud dir] [--cloud aws]
//!
//! For each backend (`dir`: a folder on the work dir's disk; `aws`: the S3 and
//! DynamoDB endpoints of the environment, e.g. from `scripts/local-cloud.sh start`):
//!
//! 1. CPU (once, in-process, no cloud): the uploader's work on a file of
//!    `--size-mib` MiB (read + FastCDC + SHA-512, HMAC chunk names,
//!    XChaCha20-Poly1305 seal) on one thread, in the uploader's layout (one
//!    chunker thread feeding sealers) and on every core; the fetcher's work
//!    (open, check the name, SHA-512); each stage alone for reference.
//! 2. Raw: PUT, then GET after dropping the page cache, of objects of the
//!    sizes the pipeline stores (the sealed chunks of that same file), with
//!    the uploader's 16 parallel requests, through latus's own backend code.
//! 3. Upload: a fresh latus node on that cloud; the file is written into the
//!    mount (not timed), then `latus sync --wait` is timed.
//! 4. Download: unmount, delete the node's local copies, drop the page cache,
//!    mount again and read the file through the mount (fetched, verified,
//!    then served): throughput and time to first byte.
//! 5. Small files: `--small-files` new 4 KiB files written into the mount
//!    (not timed), then `latus sync --wait` timed, beside a raw PUT of as
//!    many objects of that size on 16 threads.
//!
//! `--s3-latency-ms N` puts a proxy adding N ms each way in front of S3, for
//! the figures of a store that is not on this machine.
//!
//! Prints a table, then one JSON line. Goal (issue 3): each direction of the
//! pipeline reaches 80% of min(raw, CPU limit). With `aws`, the objects this
//! run created are deleted afterwards; the event log's items stay in the table.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use clap::{Parser, ValueEnum};
use latus::cloud::{CloudUrl, ObjectStore, connect_objects};
use latus::crypto::{Keys, SEAL_OVERHEAD};
use latus::sync::{CHUNK_AVG, CHUNK_MAX, for_each_chunk};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use uuid::Uuid;

// Each bench uses its own part of the shared helpers.
#[allow(dead_code)]
mod common;
mod delay_proxy;
use common::{
    Line, MIB, Node, Sample, Unit, WorkDir, can_drop_caches, close, drop_caches, kernel_release,
    latus_binary, print_lines, ratio_cell, read_full, run, same_content,
};
use delay_proxy::DelayProxy;

/// Parallel uploads of the uploader (`UPLOAD_WORKERS` in src/sync/uploader.rs).
const UPLOAD_WORKERS: usize = 16;
/// Threads for the raw PUT of small objects (the best a client does here).
const SMALL_WORKERS: usize = 16;
/// Chunks in flight between its chunker and its workers (`CHUNK_QUEUE` there).
const CHUNK_QUEUE: usize = 8;
/// Sealed chunks kept in memory for the in-memory CPU figures.
const SAMPLE_BYTES: usize = 64 * MIB;
/// The pipeline's goal: this share of min(raw, CPU limit).
const GOAL: f64 = 0.8;

#[derive(Parser)]
#[command(about = "Throughput of latus's cloud pipeline beside the raw store and the CPU limit")]
struct Options {
    /// The latus binary [default: target/release/latus]
    #[arg(long)]
    latus: Option<PathBuf>,
    /// Work directory, must be empty or absent; kept afterwards
    /// [default: a fresh temporary directory under target/cloudbench/, removed afterwards]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the file uploaded and downloaded, in MiB
    #[arg(long, default_value_t = 512)]
    size_mib: usize,
    /// Backend to measure; repeat for several
    /// [default: dir, and aws too when AWS_ENDPOINT_URL is set]
    #[arg(long, value_enum)]
    cloud: Vec<Backend>,
    /// New 4 KiB files written at once, then made durable (`sync --wait`)
    #[arg(long, default_value_t = 1000)]
    small_files: usize,
    /// Puts a proxy adding this many milliseconds each way in front of
    /// the S3 endpoint (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`),
    /// for the figures of a store that is not on this machine
    #[arg(long, default_value_t = 0)]
    s3_latency_ms: u64,
    /// Cloud URL for `--cloud aws`
    /// [default: aws://latus-cloudbench?table=latus-cloudbench&prefix=cloudbench-RUN/]
    #[arg(long)]
    aws_url: Option<String>,
    /// Threads for the parallel CPU figures [default: the number of cores]
    #[arg(long)]
    threads: Option<usize>,
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
    let options = Options::parse();
    if options.s3_latency_ms > 0 {
        delay_s3(Duration::from_millis(options.s3_latency_ms))?;
    }
    ensure!(options.size_mib > 0, "--size-mib must be at least 1");
    let latus = latus_binary(options.latus.clone())?;
    let threads = options
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let backends = backends(&options);
    let work = WorkDir::create(options.dir.as_deref())?;
    let cold_cache = can_drop_caches();
    let size = (options.size_mib * MIB) as u64;

    println!("latus:    {}", latus.display());
    println!("work dir: {}", work.path().display());
    println!("kernel:   {}", kernel_release());
    println!(
        "file:     {} MiB; chunks of {}-{} MiB (average {} MiB); {threads} CPU threads",
        options.size_mib,
        latus::sync::CHUNK_MIN as f64 / MIB as f64,
        CHUNK_MAX as usize / MIB,
        CHUNK_AVG as usize / MIB,
    );
    if !cold_cache {
        println!("note: cannot drop the page cache (needs root): warm reads only");
    }
    println!();

    let data = work.path().join("data");
    write_data_file(&data, size)?;
    let meter = CpuMeter::start(None);
    let cpu = measure_cpu(&data, size, threads)?;
    let cpu_use = meter.stop();
    let mut table = Table {
        cold_cache,
        ..Table::default()
    };
    cpu.add_rows(&mut table, threads);
    table.add_cpu_use("cpu figures", &cpu_use);
    if cpu_use.others / cpu_use.wall > 0.2 {
        table.cpu_contended = true;
        table.notes.push(format!(
            "warning: other processes kept {:.1} cores busy during the CPU figures; \
             they understate the machine, the parallel ones most",
            cpu_use.others / cpu_use.wall
        ));
    }

    for backend in backends {
        let url = match backend {
            Backend::Dir => format!("dir:{}", work.path().join("cloud").display()),
            Backend::Aws => options.aws_url.clone().unwrap_or_else(default_aws_url),
        };
        eprintln!("{}: {url}", backend.name());
        let result = measure_backend(
            &latus,
            work.path(),
            backend,
            &url,
            &data,
            &cpu,
            Steps {
                cold_cache,
                small_files: options.small_files,
            },
        );
        match result {
            Ok(figures) => figures.add_rows(&mut table, backend, &cpu),
            Err(error) => {
                eprintln!("{}: failed: {error:#}", backend.name());
                table
                    .failures
                    .push(format!("{}: {error:#}", backend.name()));
            }
        }
    }

    table.print();
    table.print_json(&options, threads, cold_cache);
    ensure!(
        table.failures.is_empty(),
        "{} backend(s) failed",
        table.failures.len()
    );
    Ok(())
}

/// Sends this process's S3 requests, and its nodes', through a proxy
/// that delays them. Runs before any other thread exists.
fn delay_s3(delay: Duration) -> Result<()> {
    let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .into_iter()
        .find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
        .context("--s3-latency-ms needs AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL")?;
    let host = endpoint
        .strip_prefix("http://")
        .context("--s3-latency-ms needs an http:// endpoint")?;
    let host = host.split('/').next().unwrap_or(host);
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(host)
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let proxy = DelayProxy::bind(upstream, delay)?;
    let url = format!("http://{}", proxy.addr()?);
    // SAFETY: called first thing in main, while this is the only thread.
    unsafe { std::env::set_var("AWS_ENDPOINT_URL_S3", &url) };
    eprintln!("S3 through {url}, {} ms each way", delay.as_millis());
    proxy.serve();
    Ok(())
}

fn backends(options: &Options) -> Vec<Backend> {
    if !options.cloud.is_empty() {
        let mut list = options.cloud.clone();
        list.dedup();
        return list;
    }
    let mut list = vec![Backend::Dir];
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        list.push(Backend::Aws);
    }
    list
}

fn default_aws_url() -> String {
    let run = &Uuid::new_v4().simple().to_string()[..8];
    format!("aws://latus-cloudbench?table=latus-cloudbench&prefix=cloudbench-{run}/")
}

// ---------------------------------------------------------------- data

/// A xorshift64* stream: incompressible, without repeats, the same for a
/// given length every time (so the CPU figures, the raw object sizes and
/// the pipeline all see the same chunks).
struct Noise(u64);

impl Noise {
    fn new() -> Self {
        Self(0x9e37_79b9_7f4a_7c15)
    }

    fn fill(&mut self, buffer: &mut [u8]) {
        for word in buffer.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
    }
}

fn write_data_file(path: &Path, size: u64) -> Result<()> {
    let mut noise = Noise::new();
    let mut block = vec![0; MIB];
    let mut file = File::create(path)?;
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        noise.fill(&mut block[..n]);
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Copies `from` to `to` in 1 MiB writes and reports the error of `close`
/// (a FUSE filesystem reports write-back failures there).
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let mut reader = BufReader::with_capacity(MIB, File::open(from)?);
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

// ---------------------------------------------------------------- CPU

/// A chunk as the uploader makes it.
struct SealedChunk {
    name: String,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

struct CpuFigures {
    /// Plaintext sizes of the file's chunks, in order.
    chunk_sizes: Vec<usize>,
    chunking: Sample,
    sha512: Sample,
    hmac: Sample,
    seal: Sample,
    open: Sample,
    hash_seal: Sample,
    hash_seal_uploader: Sample,
    hash_seal_parallel: Sample,
    open_verify: Sample,
    open_verify_parallel: Sample,
}

impl CpuFigures {
    fn upload_limit(&self) -> f64 {
        [
            self.hash_seal,
            self.hash_seal_uploader,
            self.hash_seal_parallel,
        ]
        .map(Sample::megabytes_per_second)
        .into_iter()
        .fold(0.0, f64::max)
    }

    fn download_limit(&self) -> f64 {
        self.open_verify
            .megabytes_per_second()
            .max(self.open_verify_parallel.megabytes_per_second())
    }

    fn add_rows(&self, table: &mut Table, threads: usize) {
        let layout = format!("1 chunker + {UPLOAD_WORKERS} sealers");
        let rows = [
            ("read + FastCDC + SHA-512 (for_each_chunk)", self.chunking),
            ("SHA-512", self.sha512),
            ("HMAC-SHA256 (chunk name)", self.hmac),
            ("seal XChaCha20-Poly1305", self.seal),
            ("open XChaCha20-Poly1305", self.open),
            ("hash+seal, 1 thread", self.hash_seal),
            (
                &format!("hash+seal, uploader layout ({layout})"),
                self.hash_seal_uploader,
            ),
            (
                &format!("hash+seal, {threads} threads"),
                self.hash_seal_parallel,
            ),
            ("open+verify, 1 thread", self.open_verify),
            (
                &format!("open+verify, {threads} threads"),
                self.open_verify_parallel,
            ),
        ];
        for (name, sample) in rows {
            table.rows.push(Row {
                name: format!("cpu: {name}"),
                unit: Unit::MegabytesPerSecond,
                reference: Some(sample.megabytes_per_second()),
                latus: None,
            });
        }
    }
}

fn measure_cpu(data: &Path, size: u64, threads: usize) -> Result<CpuFigures> {
    let keys = Keys::derive(&[7; 32]);
    let file = File::open(data)?;
    // Warm the page cache, so every pass reads from memory.
    for_each_chunk::<io::Error>(&file, size, 0, |_, _| Ok(()))?;

    eprint!("cpu: chunking ... ");
    let start = Instant::now();
    for_each_chunk::<io::Error>(&file, size, 0, |_, _| Ok(()))?;
    let chunking = Sample::since(start, size);
    eprintln!("{:.0} MB/s", chunking.megabytes_per_second());

    eprint!("cpu: hash+seal, 1 thread ... ");
    let mut chunk_sizes = Vec::new();
    let mut sample = Vec::new();
    let mut kept = 0;
    let start = Instant::now();
    for_each_chunk::<io::Error>(&file, size, keys.chunker_seed(), |_, plain| {
        let name = keys.chunk_name(&plain);
        let sealed = keys.seal_chunk(&name, &plain);
        chunk_sizes.push(plain.len());
        if kept < SAMPLE_BYTES {
            kept += plain.len();
            sample.push(SealedChunk {
                name,
                plain,
                sealed,
            });
        }
        Ok(())
    })?;
    let hash_seal = Sample::since(start, size);
    eprintln!("{:.0} MB/s", hash_seal.megabytes_per_second());

    eprint!("cpu: hash+seal, uploader layout ... ");
    let hash_seal_uploader = hash_seal_uploader_layout(&keys, &file, size)?;
    eprintln!("{:.0} MB/s", hash_seal_uploader.megabytes_per_second());

    eprint!("cpu: hash+seal, {threads} threads ... ");
    let start = Instant::now();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    for_each_chunk::<io::Error>(&file, size, keys.chunker_seed(), |_, plain| {
                        let name = keys.chunk_name(&plain);
                        std::hint::black_box(keys.seal_chunk(&name, &plain));
                        Ok(())
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("hash+seal thread panicked").map(drop))
    })?;
    let hash_seal_parallel = Sample::since(start, size * threads as u64);
    eprintln!("{:.0} MB/s", hash_seal_parallel.megabytes_per_second());

    // The in-memory figures go over the sample as often as it takes to
    // process about `size` bytes.
    let sample_bytes = kept as u64;
    let passes = size.div_ceil(sample_bytes.max(1)).max(1);
    let over_sample = |f: &dyn Fn(&SealedChunk)| {
        let start = Instant::now();
        for _ in 0..passes {
            sample.iter().for_each(f);
        }
        Sample::since(start, sample_bytes * passes)
    };
    let sha512 = over_sample(&|c| {
        std::hint::black_box(Sha512::digest(&c.plain));
    });
    let hmac = over_sample(&|c| {
        std::hint::black_box(keys.chunk_name(&c.plain));
    });
    let seal = over_sample(&|c| {
        std::hint::black_box(keys.seal_chunk(&c.name, &c.plain));
    });
    let open = over_sample(&|c| {
        std::hint::black_box(keys.open_chunk(&c.name, &c.sealed).expect("opens"));
    });

    eprint!("cpu: open+verify ... ");
    let open_verify_parallel = open_and_verify(&keys, &sample, passes, threads)?;
    let open_verify = open_and_verify(&keys, &sample, passes, 1)?;
    eprintln!(
        "{:.0} MB/s, {:.0} MB/s on {threads} threads",
        open_verify.megabytes_per_second(),
        open_verify_parallel.megabytes_per_second()
    );

    Ok(CpuFigures {
        chunk_sizes,
        chunking,
        sha512,
        hmac,
        seal,
        open,
        hash_seal,
        hash_seal_uploader,
        hash_seal_parallel,
        open_verify,
        open_verify_parallel,
    })
}

/// The uploader's arrangement: one thread chunks, hashes and names, and
/// hands chunks over a bounded queue to workers that seal them.
fn hash_seal_uploader_layout(keys: &Keys, file: &File, size: u64) -> Result<Sample> {
    let (sender, receiver) = sync_channel::<(String, Vec<u8>)>(CHUNK_QUEUE);
    let receiver = Mutex::new(receiver);
    let start = Instant::now();
    thread::scope(|scope| {
        for _ in 0..UPLOAD_WORKERS {
            scope.spawn(|| {
                loop {
                    let job = receiver.lock().expect("queue lock").recv();
                    let Ok((name, plain)) = job else { return };
                    std::hint::black_box(keys.seal_chunk(&name, &plain));
                }
            });
        }
        let result = for_each_chunk::<io::Error>(file, size, keys.chunker_seed(), |_, plain| {
            let name = keys.chunk_name(&plain);
            sender
                .send((name, plain))
                .map_err(|_| io::Error::other("the sealers stopped"))
        });
        drop(sender);
        result
    })?;
    Ok(Sample::since(start, size))
}

/// The fetcher's work per chunk: open, check the name, add to the SHA-512
/// of the whole. Each of `threads` threads does all of it.
fn open_and_verify(
    keys: &Keys,
    sample: &[SealedChunk],
    passes: u64,
    threads: usize,
) -> Result<Sample> {
    let bytes: u64 = sample.iter().map(|c| c.plain.len() as u64).sum();
    let start = Instant::now();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> Result<()> {
                    for _ in 0..passes {
                        let mut whole = Sha512::new();
                        for chunk in sample {
                            let plain = keys.open_chunk(&chunk.name, &chunk.sealed)?;
                            ensure!(keys.chunk_name(&plain) == chunk.name, "name mismatch");
                            whole.update(&plain);
                        }
                        std::hint::black_box(whole.finalize());
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("open+verify thread panicked"))
    })?;
    Ok(Sample::since(start, bytes * passes * threads as u64))
}

// ---------------------------------------------------------------- backends

struct BackendFigures {
    put: Sample,
    exists: Sample,
    /// exists, then PUT: the uploader's requests for a new chunk.
    exists_put: Sample,
    get: Sample,
    /// GET one object at a time, as the fetcher does.
    get_serial: Sample,
    objects: usize,
    upload: Sample,
    uploaded_chunks: u64,
    uploaded_bytes: u64,
    deduplicated_chunks: u64,
    download: Sample,
    first_byte: Duration,
    small_files: usize,
    /// PUT of as many sealed 4 KiB objects as there are small files.
    small_put: Sample,
    /// The small files written, until `sync --wait` returns.
    small_durable: Duration,
    cpu_use: Vec<(&'static str, CpuUse)>,
}

impl BackendFigures {
    fn add_rows(&self, table: &mut Table, backend: Backend, cpu: &CpuFigures) {
        let b = backend.name();
        let n = self.objects;
        let w = UPLOAD_WORKERS;
        let mbs = Unit::MegabytesPerSecond;
        let upload = self.upload.megabytes_per_second();
        let download = self.download.megabytes_per_second();
        let put = self.put.megabytes_per_second();
        let get = self.get.megabytes_per_second();
        let cold = if table.cold_cache { ", cold" } else { "" };
        let mut row = |name: String, unit, reference, latus| {
            table.rows.push(Row {
                name: format!("{b}: {name}"),
                unit,
                reference,
                latus,
            })
        };
        row(
            format!("raw PUT {n} objects, {w} threads"),
            mbs,
            Some(put),
            None,
        );
        row(
            format!("raw exists (missing), {w} threads"),
            Unit::OpsPerSecond,
            Some(self.exists.per_second()),
            None,
        );
        row(
            format!("raw exists + PUT {n} objects, {w} threads"),
            mbs,
            Some(self.exists_put.megabytes_per_second()),
            None,
        );
        row(
            format!("raw GET {n} objects, {w} threads{cold}"),
            mbs,
            Some(get),
            None,
        );
        row(
            format!("raw GET {n} objects, 1 thread{cold}"),
            mbs,
            Some(self.get_serial.megabytes_per_second()),
            None,
        );
        row("upload vs raw PUT".into(), mbs, Some(put), Some(upload));
        row(
            "upload vs hash+seal limit".into(),
            mbs,
            Some(cpu.upload_limit()),
            Some(upload),
        );
        row(
            format!("download{cold} vs raw GET"),
            mbs,
            Some(get),
            Some(download),
        );
        row(
            format!("download{cold} vs open+verify limit"),
            mbs,
            Some(cpu.download_limit()),
            Some(download),
        );
        row(
            "download, time to first byte".into(),
            Unit::Seconds,
            None,
            Some(self.first_byte.as_secs_f64()),
        );
        let small = self.small_files;
        row(
            format!("raw PUT {small} objects of 4 KiB, {SMALL_WORKERS} threads"),
            Unit::Seconds,
            Some(self.small_put.seconds()),
            None,
        );
        row(
            format!("{small} new 4 KiB files durable (sync --wait)"),
            Unit::Seconds,
            Some(self.small_put.seconds()),
            Some(self.small_durable.as_secs_f64()),
        );
        table.notes.push(format!(
            "{b}: {small} new 4 KiB files durable in {:.2} s (goal for 1,000: 4 s)",
            self.small_durable.as_secs_f64()
        ));
        table
            .goals
            .push(Goal::new(b, "upload", upload, put, cpu.upload_limit()));
        table.goals.push(Goal::new(
            b,
            "download",
            download,
            get,
            cpu.download_limit(),
        ));
        table.notes.push(format!(
            "{b}: the upload stored {} chunks ({:.1} MB sealed), {} deduplicated",
            self.uploaded_chunks,
            self.uploaded_bytes as f64 / 1e6,
            self.deduplicated_chunks
        ));
        for (stage, cpu_use) in &self.cpu_use {
            table.add_cpu_use(&format!("{b} {stage}"), cpu_use);
        }
    }
}

/// How a backend's steps run.
#[derive(Clone, Copy)]
struct Steps {
    /// The page cache can be dropped before reads.
    cold_cache: bool,
    /// New 4 KiB files made durable at once.
    small_files: usize,
}

fn measure_backend(
    latus: &Path,
    work: &Path,
    backend: Backend,
    url: &str,
    data: &Path,
    cpu: &CpuFigures,
    steps: Steps,
) -> Result<BackendFigures> {
    let Steps {
        cold_cache,
        small_files,
    } = steps;
    let b = backend.name();
    let parsed = CloudUrl::parse(url)?;
    let store = connect_objects(&parsed, true, &mut Vec::new(), &Default::default())
        .map_err(|error| anyhow!("{error}"))
        .with_context(|| format!("connecting to {url}"))?;
    let before: Vec<String> = store.list().map_err(|error| anyhow!("{error}"))?;
    // Deletes what this run stored, even when it fails half-way (a `dir`
    // cloud goes with the work dir).
    let _cleanup = (backend == Backend::Aws).then(|| StoreCleanup {
        store: store.clone(),
        before,
    });

    let sizes: Vec<usize> = cpu.chunk_sizes.iter().map(|s| s + SEAL_OVERHEAD).collect();
    let names: Vec<String> = sizes.iter().map(|_| random_name()).collect();
    let mut cpu_use = Vec::new();
    eprint!("{b}: raw PUT ... ");
    let meter = CpuMeter::start(None);
    let put = parallel(UPLOAD_WORKERS, names.len(), |index, buffer| {
        buffer[..8].copy_from_slice(&(index as u64).to_le_bytes());
        let object = &buffer[..sizes[index]];
        store
            .put(&names[index], object)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(object.len() as u64)
    })?;
    cpu_use.push(("raw PUT", meter.stop()));
    eprintln!("{:.0} MB/s", put.megabytes_per_second());

    eprint!("{b}: raw exists ... ");
    let missing: Vec<String> = names.iter().map(|_| random_name()).collect();
    let exists = parallel(UPLOAD_WORKERS, missing.len(), |index, _| {
        let found = store.size(&missing[index]).map_err(|e| anyhow!("{e}"))?;
        ensure!(
            found.is_none(),
            "object {} should not exist",
            missing[index]
        );
        Ok(1)
    })?;
    eprint!("{:.0} ops/s; exists + PUT ... ", exists.per_second());
    // The uploader's requests for a chunk the store does not hold.
    let exists_put = parallel(UPLOAD_WORKERS, missing.len(), |index, buffer| {
        let found = store.size(&missing[index]).map_err(|e| anyhow!("{e}"))?;
        ensure!(
            found.is_none(),
            "object {} should not exist",
            missing[index]
        );
        buffer[..8].copy_from_slice(&(index as u64).to_le_bytes());
        let object = &buffer[..sizes[index]];
        store
            .put(&missing[index], object)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(object.len() as u64)
    })?;
    eprintln!("{:.0} MB/s", exists_put.megabytes_per_second());

    let get_all = |workers| {
        if cold_cache {
            drop_caches()?;
        }
        parallel(workers, names.len(), |index, _| {
            let object = store.get(&names[index]).map_err(|e| anyhow!("{e}"))?;
            ensure!(
                object.len() == sizes[index],
                "object {} has {} bytes, put {}",
                names[index],
                object.len(),
                sizes[index]
            );
            Ok(object.len() as u64)
        })
    };
    eprint!("{b}: raw GET ... ");
    let meter = CpuMeter::start(None);
    let get = get_all(UPLOAD_WORKERS)?;
    cpu_use.push(("raw GET", meter.stop()));
    eprint!("{:.0} MB/s; 1 thread ... ", get.megabytes_per_second());
    let get_serial = get_all(1)?;
    eprintln!("{:.0} MB/s", get_serial.megabytes_per_second());
    parallel(UPLOAD_WORKERS, names.len(), |index, _| {
        store.delete(&names[index]).map_err(|e| anyhow!("{e}"))?;
        store.delete(&missing[index]).map_err(|e| anyhow!("{e}"))?;
        Ok(0)
    })?;

    let node = Node::new(
        latus,
        &work.join(format!("home-{b}")),
        &work.join(format!("mnt-{b}")),
    );
    node.init(Some(url))?;
    node.mount(false)?;
    let file = node.mountpoint.join("big");
    eprint!("{b}: writing the file into the mount (not timed) ... ");
    let start = Instant::now();
    copy_file(data, &file)?;
    eprintln!("{:.1} s", start.elapsed().as_secs_f64());

    eprint!("{b}: upload (latus sync --wait) ... ");
    let size = fs::metadata(data)?.len();
    let meter = CpuMeter::start(Some(node.pid()?));
    let start = Instant::now();
    node.sync_wait()?;
    let upload = Sample::since(start, size);
    cpu_use.push(("upload", meter.stop()));
    eprintln!("{:.0} MB/s", upload.megabytes_per_second());
    let queue = node.status()?["queue"].clone();
    let count = |key: &str| queue[key].as_u64().unwrap_or_default();

    node.unmount()?;
    let removed = remove_local_copies(&node.home.join("store/objects"))?;
    ensure!(
        removed >= size,
        "removed only {removed} bytes of local copies, the file has {size}"
    );
    node.mount(false)?;
    if cold_cache {
        drop_caches()?;
    }
    eprint!("{b}: download (read through the mount) ... ");
    let meter = CpuMeter::start(Some(node.pid()?));
    let (download, first_byte) = read_file(&file, size)?;
    cpu_use.push(("download", meter.stop()));
    eprintln!(
        "{:.0} MB/s, first byte after {:.2} s",
        download.megabytes_per_second(),
        first_byte.as_secs_f64()
    );
    ensure!(
        same_content(data, &file)?,
        "the file read back through the mount differs from the file written"
    );

    eprint!("{b}: raw PUT of {small_files} small objects ... ");
    let small_size = 4096 + SEAL_OVERHEAD;
    let small_names: Vec<String> = (0..small_files).map(|_| random_name()).collect();
    let small_put = parallel(SMALL_WORKERS, small_files, |index, buffer| {
        buffer[..8].copy_from_slice(&(index as u64).to_le_bytes());
        store
            .put(&small_names[index], &buffer[..small_size])
            .map_err(|e| anyhow!("{e}"))?;
        Ok(small_size as u64)
    })?;
    eprintln!("{:.2} s", small_put.seconds());
    eprint!("{b}: {small_files} new 4 KiB files, until sync --wait returns ... ");
    let folder = node.mountpoint.join("small");
    fs::create_dir(&folder)?;
    let mut noise = Noise::new();
    let mut block = vec![0; 4096];
    for index in 0..small_files {
        noise.fill(&mut block);
        fs::write(folder.join(format!("f{index:05}")), &block)?;
    }
    let start = Instant::now();
    node.sync_wait()?;
    let small_durable = start.elapsed();
    eprintln!("{:.2} s", small_durable.as_secs_f64());
    parallel(SMALL_WORKERS, small_files, |index, _| {
        store
            .delete(&small_names[index])
            .map_err(|e| anyhow!("{e}"))?;
        Ok(0)
    })?;
    node.unmount()?;

    Ok(BackendFigures {
        put,
        exists,
        exists_put,
        get,
        get_serial,
        objects: names.len(),
        upload,
        uploaded_chunks: count("uploaded_chunks"),
        uploaded_bytes: count("uploaded_bytes"),
        deduplicated_chunks: count("deduplicated_chunks"),
        download,
        first_byte,
        small_files,
        small_put,
        small_durable,
        cpu_use,
    })
}

/// 64 lowercase hex digits, like a chunk name.
fn random_name() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// Runs `job(index, buffer)` for every index below `count` on `workers`
/// threads and adds up what the jobs return. Each thread has a buffer of
/// the largest sealed chunk, filled with noise.
fn parallel(
    workers: usize,
    count: usize,
    job: impl Fn(usize, &mut [u8]) -> Result<u64> + Sync,
) -> Result<Sample> {
    let next = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let start = Instant::now();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let (next, total, job) = (&next, &total, &job);
                scope.spawn(move || -> Result<()> {
                    let mut buffer = vec![0; CHUNK_MAX as usize + SEAL_OVERHEAD];
                    Noise(worker as u64 + 1).fill(&mut buffer);
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            return Ok(());
                        }
                        let done = job(index, &mut buffer).inspect_err(|_| {
                            // Stop the other workers early.
                            next.store(count, Ordering::Relaxed);
                        })?;
                        total.fetch_add(done as usize, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|handle| handle.join().expect("worker panicked"))
    })?;
    Ok(Sample::since(start, total.into_inner() as u64))
}

/// Deletes the objects the store holds now and did not hold before.
struct StoreCleanup {
    store: Arc<dyn ObjectStore>,
    before: Vec<String>,
}

impl Drop for StoreCleanup {
    fn drop(&mut self) {
        let before: HashSet<&String> = self.before.iter().collect();
        let now = match self.store.list() {
            Ok(now) => now,
            Err(error) => {
                eprintln!("cloudbench: cannot list the objects to delete: {error}");
                return;
            }
        };
        for name in now.iter().filter(|name| !before.contains(name)) {
            if let Err(error) = self.store.delete(name) {
                eprintln!("cloudbench: cannot delete object {name}: {error}");
            }
        }
    }
}

/// Removes every file in the shard folders of a node's local store; returns
/// how many bytes they held.
fn remove_local_copies(objects: &Path) -> Result<u64> {
    let mut removed = 0;
    for shard in fs::read_dir(objects).with_context(|| format!("reading {}", objects.display()))? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                removed += entry.metadata()?.len();
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(removed)
}

/// Reads the whole file in 1 MiB reads; returns the throughput from `open`
/// to the end, and the time from `open` to the first byte.
fn read_file(path: &Path, size: u64) -> Result<(Sample, Duration)> {
    let mut buffer = vec![0; MIB];
    let start = Instant::now();
    let mut file = File::open(path)?;
    let mut first_byte = None;
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        first_byte.get_or_insert_with(|| start.elapsed());
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    drop(file);
    let sample = Sample::since(start, total);
    ensure!(total == size, "read {total} bytes, the file has {size}");
    Ok((sample, first_byte.unwrap_or_default()))
}

// ---------------------------------------------------------------- the node

/// What cloudbench asks a node beyond what common.rs does.
impl Node {
    fn sync_wait(&self) -> Result<()> {
        run(self.command().args(["sync", "--wait"]))
            .with_context(|| format!("latus sync --wait; {}", self.log_tail()))
    }

    /// The daemon's process id.
    fn pid(&self) -> Result<u32> {
        let status = self.status()?;
        let pid = status["pid"]
            .as_u64()
            .context("latus status --json has no pid")?;
        Ok(u32::try_from(pid)?)
    }

    fn status(&self) -> Result<Value> {
        let output = self
            .command()
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            output.status.success(),
            "latus status --json failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

// ---------------------------------------------------------------- CPU use

/// Where the machine's CPU time went during a stage: the bench itself, a
/// latus daemon (by thread name), and everything else ("others": other
/// processes, the local S3 server, kernel threads such as write-back, the
/// hypervisor's steal).
struct CpuMeter {
    start: Instant,
    machine: u64,
    ours: u64,
    daemon: Option<(u32, u64, ThreadTicks)>,
}

/// CPU ticks by thread id, with the thread's name.
type ThreadTicks = HashMap<u32, (String, u64)>;

/// CPU time in seconds by consumer, over `wall` seconds.
struct CpuUse {
    wall: f64,
    ours: f64,
    daemon: f64,
    /// The daemon's threads alive at the end, by name, then `(exited threads)`.
    daemon_threads: Vec<(String, f64)>,
    others: f64,
}

impl CpuMeter {
    fn start(daemon: Option<u32>) -> Self {
        Self {
            start: Instant::now(),
            machine: machine_ticks(),
            ours: process_ticks("self"),
            daemon: daemon.map(|pid| (pid, process_ticks(&pid.to_string()), thread_ticks(pid))),
        }
    }

    fn stop(self) -> CpuUse {
        let tick = clock_tick();
        let wall = self.start.elapsed().as_secs_f64();
        let machine = machine_ticks().saturating_sub(self.machine) as f64 * tick;
        let ours = process_ticks("self").saturating_sub(self.ours) as f64 * tick;
        let (mut daemon, mut daemon_threads) = (0.0, Vec::new());
        if let Some((pid, before, threads_before)) = self.daemon {
            daemon = process_ticks(&pid.to_string()).saturating_sub(before) as f64 * tick;
            let mut by_name: Vec<(String, f64)> = Vec::new();
            for (tid, (name, ticks)) in thread_ticks(pid) {
                let earlier = threads_before.get(&tid).map_or(0, |(_, ticks)| *ticks);
                let seconds = ticks.saturating_sub(earlier) as f64 * tick;
                match by_name.iter_mut().find(|(known, _)| *known == name) {
                    Some((_, total)) => *total += seconds,
                    None => by_name.push((name, seconds)),
                }
            }
            let live: f64 = by_name.iter().map(|(_, seconds)| seconds).sum();
            by_name.push(("(exited threads)".into(), (daemon - live).max(0.0)));
            by_name.retain(|(_, seconds)| *seconds >= 0.01);
            by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
            daemon_threads = by_name;
        }
        CpuUse {
            wall,
            ours,
            daemon,
            daemon_threads,
            others: (machine - ours - daemon).max(0.0),
        }
    }
}

impl CpuUse {
    fn describe(&self) -> String {
        let cores = |seconds: f64| seconds / self.wall;
        let mut text = format!(
            "{:.2} s wall; cores busy: bench {:.2}",
            self.wall,
            cores(self.ours)
        );
        if self.daemon > 0.0 {
            let threads: Vec<String> = self
                .daemon_threads
                .iter()
                .map(|(name, seconds)| format!("{name} {:.2}", cores(*seconds)))
                .collect();
            text += &format!(
                ", daemon {:.2} ({})",
                cores(self.daemon),
                threads.join(", ")
            );
        }
        text + &format!(", others {:.2}", cores(self.others))
    }

    fn to_json(&self) -> Value {
        let threads: serde_json::Map<String, Value> = self
            .daemon_threads
            .iter()
            .map(|(name, seconds)| (name.clone(), json!(seconds)))
            .collect();
        json!({
            "wall_s": self.wall,
            "bench_cpu_s": self.ours,
            "daemon_cpu_s": self.daemon,
            "daemon_threads_cpu_s": threads,
            "others_cpu_s": self.others,
        })
    }
}

fn clock_tick() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy ticks of all CPUs (everything but idle and iowait; steal counts as
/// busy: the core was not ours).
fn machine_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    fields.iter().take(8).sum::<u64>() - fields.get(3).unwrap_or(&0) - fields.get(4).unwrap_or(&0)
}

/// utime + stime of a process (exited threads included) or thread, from
/// its `stat` file; 0 if it is gone.
fn stat_ticks(path: &Path) -> Option<(String, u64)> {
    let stat = fs::read_to_string(path).ok()?;
    // The name is in parentheses and may hold spaces; the fields follow it.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn process_ticks(pid: &str) -> u64 {
    stat_ticks(&Path::new("/proc").join(pid).join("stat")).map_or(0, |(_, ticks)| ticks)
}

fn thread_ticks(pid: u32) -> ThreadTicks {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let Ok(entries) = fs::read_dir(&dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let tid = entry.file_name().to_str()?.parse().ok()?;
            Some((tid, stat_ticks(&entry.path().join("stat"))?))
        })
        .collect()
}

// ---------------------------------------------------------------- report

/// One line of the table: a reference figure (raw store or CPU limit),
/// latus's figure, or both.
struct Row {
    name: String,
    unit: Unit,
    reference: Option<f64>,
    latus: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.reference, self.latus) {
            (Some(reference), Some(latus)) if reference > 0.0 => Some(latus / reference),
            _ => None,
        }
    }

    /// The table's line: reference, latus, ratio (`-` where there is none).
    fn line(&self) -> Line {
        let cell = |value: Option<f64>| value.map_or("-".into(), |v| self.unit.format(v));
        Line {
            name: self.name.clone(),
            unit: self.unit,
            cells: vec![
                cell(self.reference),
                cell(self.latus),
                ratio_cell(self.ratio()),
            ],
        }
    }
}

/// The goal for one direction on one backend.
struct Goal {
    backend: &'static str,
    direction: &'static str,
    latus: f64,
    raw: f64,
    limit: f64,
}

impl Goal {
    fn new(
        backend: &'static str,
        direction: &'static str,
        latus: f64,
        raw: f64,
        limit: f64,
    ) -> Self {
        Self {
            backend,
            direction,
            latus,
            raw,
            limit,
        }
    }

    fn target(&self) -> f64 {
        self.raw.min(self.limit)
    }

    fn ratio(&self) -> f64 {
        self.latus / self.target()
    }

    fn met(&self) -> bool {
        self.ratio() >= GOAL
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    goals: Vec<Goal>,
    notes: Vec<String>,
    cpu_use: Vec<(String, Value)>,
    failures: Vec<String>,
    cold_cache: bool,
    /// Other processes were busy while the CPU figures were measured.
    cpu_contended: bool,
}

impl Table {
    fn add_cpu_use(&mut self, stage: &str, cpu_use: &CpuUse) {
        self.notes
            .push(format!("cpu use, {stage}: {}", cpu_use.describe()));
        self.cpu_use.push((stage.to_owned(), cpu_use.to_json()));
    }

    fn print(&self) {
        let columns = [("raw/limit", 10), ("latus", 10), ("ratio", 6)];
        let columns = columns.map(|(title, width)| (title.to_owned(), width));
        let lines: Vec<Line> = self.rows.iter().map(Row::line).collect();
        println!();
        print_lines(&columns, &lines);
        println!();
        for note in &self.notes {
            println!("{note}");
        }
        for goal in &self.goals {
            println!(
                "goal {}: {} {:.0} MB/s = {:.0}% of min(raw {:.0}, CPU {:.0}) MB/s: {} (goal {:.0}%)",
                goal.backend,
                goal.direction,
                goal.latus,
                goal.ratio() * 100.0,
                goal.raw,
                goal.limit,
                if goal.met() { "met" } else { "MISSED" },
                GOAL * 100.0
            );
            if self.cpu_contended && goal.limit < goal.raw {
                println!(
                    "  (the CPU limit was measured while other processes ran: rerun on a quiet machine)"
                );
            }
        }
        for failure in &self.failures {
            println!("failed: {failure}");
        }
    }

    fn print_json(&self, options: &Options, threads: usize, cold_cache: bool) {
        let results: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                json!({
                    "workload": row.name,
                    "unit": row.unit.label(),
                    "reference": row.reference,
                    "latus": row.latus,
                    "ratio": row.ratio(),
                })
            })
            .collect();
        let goals: Vec<Value> = self
            .goals
            .iter()
            .map(|goal| {
                json!({
                    "backend": goal.backend,
                    "direction": goal.direction,
                    "latus": goal.latus,
                    "raw": goal.raw,
                    "cpu_limit": goal.limit,
                    "ratio": goal.ratio(),
                    "met": goal.met(),
                })
            })
            .collect();
        let summary = json!({
            "bench": "cloudbench",
            "size_mib": options.size_mib,
            "threads": threads,
            "upload_workers": UPLOAD_WORKERS,
            "cold_cache": cold_cache,
            "cpu_contended": self.cpu_contended,
            "results": results,
            "goals": goals,
            "cpu_use": self.cpu_use.iter().cloned().collect::<serde_json::Map<String, Value>>(),
            "failures": self.failures,
        });
        println!("{summary}");
    }
}
