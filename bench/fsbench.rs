//! fsbench: runs the same filesystem workloads on a plain folder and on a
//! latus mount backed by the same disk, and reports latus/plain ratios.
//!
//!     cargo build --release
//!     cargo bench --bench fsbench -- [--size-mib 1024] [--files 10000] [--tree DIR]
//!
//! Prints a table, then one JSON line with the same numbers. All workloads run
//! on the plain folder first, then on the mount, so latus's background work
//! (hashing, sealing, uploading) never slows down the plain numbers.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::{Map, Value, json};

// Each bench uses its own part of the shared helpers.
#[allow(dead_code)]
mod common;
use common::{
    Line, MIB, Node, Sample, Unit, WorkDir, can_drop_caches, close, drop_caches, kernel_release,
    latus_binary, print_lines, ratio_cell, run,
};

const PAGE: usize = 4096;
const SMALL_FILE_SIZE: usize = 4096;
const FILES_PER_DIR: usize = 100;

#[derive(Parser)]
#[command(about = "Runs the same workloads on a plain folder and on a latus mount")]
struct Options {
    /// The latus binary [default: target/release/latus]
    #[arg(long)]
    latus: Option<PathBuf>,
    /// Work directory, must be empty or absent; kept afterwards
    /// [default: a fresh temporary directory under target/fsbench/, removed afterwards]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Size of the sequentially written and read file, in MiB
    #[arg(long, default_value_t = 1024)]
    size_mib: usize,
    /// Number of small files to create, stat and delete
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Source tree for the tar workload [default: crates in ~/.cargo/registry/src]
    #[arg(long)]
    tree: Option<PathBuf>,
    /// Take the tree's top-level entries, in name order, until they add up to this many MiB
    #[arg(long, default_value_t = 60)]
    tree_mib: u64,
    /// Rounds of the whole sequence, alternating which root goes first;
    /// the table shows each workload's median
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let options = Options::parse();
    let latus = latus_binary(options.latus.clone())?;
    let work = WorkDir::create(options.dir.as_deref())?;
    let tarball = Tarball::build(&options, &work.path().join("tree.tar"))?;
    let cold_cache = can_drop_caches();

    let plain = work.path().join("plain");
    fs::create_dir(&plain)?;
    // The filesystem alone (offline: changes queue, nothing uploads), and
    // the product as used (uploading to the embedded cloud meanwhile).
    let offline = start_node(
        &latus,
        &work.path().join("home-offline"),
        &work.path().join("mnt-offline"),
        true,
    )?;
    let mount = start_node(
        &latus,
        &work.path().join("home"),
        &work.path().join("mnt"),
        false,
    )?;
    let roots = [
        Root::new("plain", plain),
        Root::new("offline", offline.mountpoint.clone()),
        Root::new("latus", mount.mountpoint.clone()),
    ];

    println!("latus:    {}", latus.display());
    println!("work dir: {}", work.path().display());
    println!("kernel:   {}", kernel_release());
    if !cold_cache {
        println!("note: cannot drop the page cache (needs root): warm reads only");
    }
    println!();

    let workloads = workloads(&options, &tarball, cold_cache);
    let rows = run_all(&workloads, &roots, options.rounds);
    drop(mount);
    drop(offline);

    print_table(&roots, &rows);
    print_json(&options, &tarball, cold_cache, &roots, &rows);
    Ok(())
}

/// A latus node without a cloud, initialised and mounted.
fn start_node(latus: &Path, home: &Path, mountpoint: &Path, offline: bool) -> Result<Node> {
    let node = Node::new(latus, home, mountpoint);
    node.init(None)?;
    node.mount(offline)?;
    Ok(node)
}

/// A tarball of a real source tree, built once and extracted into each root.
struct Tarball {
    path: PathBuf,
    source: String,
    bytes: u64,
}

impl Tarball {
    fn build(options: &Options, path: &Path) -> Result<Self> {
        let (source, bases) = match &options.tree {
            Some(tree) => (tree.display().to_string(), vec![tree.clone()]),
            None => ("cargo registry sources".to_owned(), registry_source_dirs()?),
        };
        let limit = options.tree_mib * MIB as u64;
        let mut tar = Command::new("tar");
        tar.arg("-cf").arg(path);
        let mut total = 0;
        'bases: for base in &bases {
            tar.arg("-C").arg(base);
            for entry in sorted_entries(base)? {
                total += disk_usage(&base.join(&entry))?;
                // `./` keeps a name that starts with `-` from reading as an option.
                tar.arg(Path::new(".").join(entry));
                if total >= limit {
                    break 'bases;
                }
            }
        }
        ensure!(
            total > 0,
            "no files found for the tar workload in {source}; pass --tree DIR"
        );
        run(&mut tar)?;
        let bytes = fs::metadata(path)?.len();
        Ok(Self {
            path: path.to_owned(),
            source,
            bytes,
        })
    }
}

fn registry_source_dirs() -> Result<Vec<PathBuf>> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set; pass --tree DIR")?;
    let registry = cargo_home.join("registry/src");
    let dirs = sorted_entries(&registry)
        .with_context(|| format!("reading {}; pass --tree DIR", registry.display()))?;
    Ok(dirs.into_iter().map(|dir| registry.join(dir)).collect())
}

fn sorted_entries(dir: &Path) -> Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Bytes of the regular files under `path` (symbolic links not followed).
fn disk_usage(path: &Path) -> Result<u64> {
    let metadata = fs::symlink_metadata(path)?;
    if !metadata.is_dir() {
        return Ok(if metadata.is_file() {
            metadata.len()
        } else {
            0
        });
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += disk_usage(&entry?.path())?;
    }
    Ok(total)
}

/// A folder the workloads run in: the baseline first, then the contenders.
struct Root {
    name: &'static str,
    path: PathBuf,
}

impl Root {
    fn new(name: &'static str, path: PathBuf) -> Self {
        Self { name, path }
    }
}

impl Unit {
    fn value(self, sample: &Sample) -> f64 {
        match self {
            Self::MegabytesPerSecond => sample.megabytes_per_second(),
            Self::OpsPerSecond => sample.per_second(),
            Self::Seconds => sample.elapsed.as_secs_f64(),
        }
    }
}

type RunFn = Box<dyn Fn(&Path) -> Result<Sample>>;

/// The same closure runs in every root. Workloads run in order and may use
/// what earlier ones left in the root (a read needs the written file).
struct Workload {
    name: String,
    unit: Unit,
    run: RunFn,
}

impl Workload {
    fn new(
        name: impl Into<String>,
        unit: Unit,
        run: impl Fn(&Path) -> Result<Sample> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            unit,
            run: Box::new(run),
        }
    }

    fn measure(&self, root: &Root) -> Result<f64, String> {
        eprint!("{:<7} {} ... ", root.name, self.name);
        let result = (self.run)(&root.path)
            .map(|sample| self.unit.value(&sample))
            .map_err(|error| format!("{error:#}"));
        match &result {
            Ok(value) => eprintln!("{} {}", self.unit.format(*value), self.unit.label()),
            Err(error) => eprintln!("failed: {error}"),
        }
        result
    }
}

fn workloads(options: &Options, tarball: &Tarball, cold_cache: bool) -> Vec<Workload> {
    let size = options.size_mib;
    let files = options.files;
    let mut list = vec![
        Workload::new(
            format!("write {size} MiB"),
            Unit::MegabytesPerSecond,
            move |root| write_big_file(&root.join("big"), size, 1, false),
        ),
        Workload::new(
            format!("write {size} MiB + fsync"),
            Unit::MegabytesPerSecond,
            move |root| write_big_file(&root.join("big-fsync"), size, 2, true),
        ),
    ];
    if cold_cache {
        list.push(Workload::new(
            "read, cold cache",
            Unit::MegabytesPerSecond,
            move |root| {
                drop_caches()?;
                read_big_file(&root.join("big"), size)
            },
        ));
    }
    list.extend([
        Workload::new("read, warm cache", Unit::MegabytesPerSecond, move |root| {
            read_big_file(&root.join("big"), size)
        }),
        Workload::new(
            format!("create {files} x 4 KiB"),
            Unit::OpsPerSecond,
            move |root| create_small_files(root, files),
        ),
        Workload::new(format!("stat {files}"), Unit::OpsPerSecond, move |root| {
            stat_small_files(root, files)
        }),
        Workload::new(format!("delete {files}"), Unit::OpsPerSecond, move |root| {
            delete_small_files(root, files)
        }),
    ]);
    let name = format!(
        "tar x {:.0} MB of {}",
        tarball.bytes as f64 / 1e6,
        tarball.source
    );
    let tar = tarball.path.clone();
    list.push(Workload::new(name, Unit::Seconds, move |root| {
        extract(&tar, &root.join("tree"))
    }));
    list
}

/// Writes `size_mib` MiB in 1 MiB writes, then closes (after fsync if asked).
/// Every 4 KiB page is unique, so content deduplication cannot skip work.
fn write_big_file(path: &Path, size_mib: usize, seed: u64, fsync: bool) -> Result<Sample> {
    let mut block = random_block(seed);
    let start = Instant::now();
    let mut file = File::create(path)?;
    for index in 0..size_mib {
        stamp_pages(&mut block, seed, index as u64);
        file.write_all(&block)?;
    }
    if fsync {
        file.sync_all()?;
    }
    close(file)?;
    Ok(Sample::since(start, (size_mib * MIB) as u64))
}

fn read_big_file(path: &Path, size_mib: usize) -> Result<Sample> {
    let mut buffer = vec![0; MIB];
    let start = Instant::now();
    let mut file = File::open(path)?;
    let mut total = 0;
    loop {
        match file.read(&mut buffer)? {
            0 => break,
            read => total += read,
        }
    }
    drop(file);
    let sample = Sample::since(start, total as u64);
    ensure!(
        total == size_mib * MIB,
        "read {total} bytes, wrote {}",
        size_mib * MIB
    );
    Ok(sample)
}

/// `files` files of 4 KiB in directories of FILES_PER_DIR, each with unique content.
fn create_small_files(root: &Path, files: usize) -> Result<Sample> {
    let mut content = random_block(3);
    content.truncate(SMALL_FILE_SIZE);
    let start = Instant::now();
    fs::create_dir(root.join("small"))?;
    for index in 0..files {
        let path = small_file(root, index);
        if index % FILES_PER_DIR == 0 {
            fs::create_dir(path.parent().expect("small files live in a directory"))?;
        }
        stamp_pages(&mut content, 3, index as u64);
        let mut file = File::create(&path)?;
        file.write_all(&content)?;
        close(file)?;
    }
    Ok(Sample::since(start, files as u64))
}

fn stat_small_files(root: &Path, files: usize) -> Result<Sample> {
    let start = Instant::now();
    for index in 0..files {
        let path = small_file(root, index);
        let len = fs::metadata(&path)?.len();
        ensure!(
            len == SMALL_FILE_SIZE as u64,
            "{} has {len} bytes",
            path.display()
        );
    }
    Ok(Sample::since(start, files as u64))
}

fn delete_small_files(root: &Path, files: usize) -> Result<Sample> {
    let start = Instant::now();
    for index in 0..files {
        fs::remove_file(small_file(root, index))?;
    }
    for dir in 0..files.div_ceil(FILES_PER_DIR) {
        fs::remove_dir(small_dir(root, dir))?;
    }
    fs::remove_dir(root.join("small"))?;
    Ok(Sample::since(start, files as u64))
}

fn small_dir(root: &Path, dir: usize) -> PathBuf {
    root.join("small").join(format!("d{dir:04}"))
}

fn small_file(root: &Path, index: usize) -> PathBuf {
    small_dir(root, index / FILES_PER_DIR).join(format!("f{:03}", index % FILES_PER_DIR))
}

fn extract(tarball: &Path, dest: &Path) -> Result<Sample> {
    if dest.exists() {
        fs::remove_dir_all(dest)?; // an earlier round's
    }
    fs::create_dir(dest)?;
    let start = Instant::now();
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(dest)
        .arg("--no-same-owner");
    run(&mut tar)?;
    Ok(Sample::since(start, 1))
}

/// 1 MiB of xorshift noise: incompressible, cheap to make.
fn random_block(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut block = Vec::with_capacity(MIB);
    while block.len() < MIB {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        block.extend_from_slice(&state.to_le_bytes());
    }
    block
}

/// Marks each 4 KiB page of `block` with (seed, index, page) so no two pages
/// written by a run are equal.
fn stamp_pages(block: &mut [u8], seed: u64, index: u64) {
    for (page, chunk) in block.chunks_mut(PAGE).enumerate() {
        chunk[..8].copy_from_slice(&seed.to_le_bytes());
        chunk[8..16].copy_from_slice(&index.to_le_bytes());
        chunk[16..24].copy_from_slice(&(page as u64).to_le_bytes());
    }
}

/// Runs every workload in every root, `rounds` times, alternating the
/// order of the roots between rounds (a noisy machine favours neither), and
/// keeps each workload's median per root.
fn run_all(workloads: &[Workload], roots: &[Root], rounds: usize) -> Vec<Row> {
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); roots.len()]; workloads.len()];
    let mut failures: Vec<Vec<Option<String>>> = vec![vec![None; roots.len()]; workloads.len()];
    for round in 0..rounds.max(1) {
        let mut order: Vec<usize> = (0..roots.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for r in order {
            for (w, workload) in workloads.iter().enumerate() {
                match workload.measure(&roots[r]) {
                    Ok(v) => samples[w][r].push(v),
                    Err(e) => failures[w][r] = Some(e),
                }
            }
        }
    }
    workloads
        .iter()
        .enumerate()
        .map(|(w, workload)| Row {
            name: workload.name.clone(),
            unit: workload.unit,
            values: (0..roots.len())
                .map(|r| {
                    median(&mut samples[w][r])
                        .ok_or_else(|| failures[w][r].clone().unwrap_or_default())
                })
                .collect(),
        })
        .collect()
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[values.len() / 2])
}

/// One workload's results, one value per root in the order of the roots.
struct Row {
    name: String,
    unit: Unit,
    values: Vec<Result<f64, String>>,
}

impl Row {
    /// Value in root `index` divided by the baseline's (root 0).
    fn ratio(&self, index: usize) -> Option<f64> {
        match (&self.values[0], &self.values[index]) {
            (Ok(base), Ok(value)) if *base > 0.0 => Some(value / base),
            _ => None,
        }
    }

    /// The table's line: each root's value, then each contender's ratio.
    fn line(&self, roots: usize) -> Line {
        let values = self.values.iter().map(|value| match value {
            Ok(value) => self.unit.format(*value),
            Err(_) => "failed".to_owned(),
        });
        let ratios = (1..roots).map(|index| ratio_cell(self.ratio(index)));
        Line {
            name: self.name.clone(),
            unit: self.unit,
            cells: values.chain(ratios).collect(),
        }
    }
}

fn print_table(roots: &[Root], rows: &[Row]) {
    let baseline = roots[0].name;
    let values = roots.iter().map(|root| (root.name.to_owned(), 10));
    let ratios = roots[1..]
        .iter()
        .map(|root| (format!("{}/{baseline}", root.name), 12));
    let columns: Vec<(String, usize)> = values.chain(ratios).collect();
    let lines: Vec<Line> = rows.iter().map(|row| row.line(roots.len())).collect();
    print_lines(&columns, &lines);
    println!("ratio: higher is better for MB/s and ops/s, lower is better for s");
    for row in rows {
        for (root, value) in roots.iter().zip(&row.values) {
            if let Err(error) = value {
                println!("failed: {} on {}: {error}", row.name, root.name);
            }
        }
    }
}

fn print_json(
    options: &Options,
    tarball: &Tarball,
    cold_cache: bool,
    roots: &[Root],
    rows: &[Row],
) {
    let results: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut result = Map::new();
            result.insert("workload".into(), json!(row.name));
            result.insert("unit".into(), json!(row.unit.label()));
            for (root, value) in roots.iter().zip(&row.values) {
                result.insert(root.name.into(), json!(value.as_ref().ok()));
            }
            for (index, root) in roots.iter().enumerate().skip(1) {
                result.insert(format!("ratio_{}", root.name), json!(row.ratio(index)));
            }
            Value::Object(result)
        })
        .collect();
    let summary = json!({
        "bench": "fsbench",
        "size_mib": options.size_mib,
        "files": options.files,
        "tar_bytes": tarball.bytes,
        "cold_cache": cold_cache,
        "results": results,
    });
    println!("{summary}");
}
