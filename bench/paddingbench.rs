//! What sealed sizes tell the provider, and what padding costs.
//!
//! Chunks every regular file under a folder (default /usr/share) with a
//! keyed chunker, as latus uploads them, and compares two paddings of the
//! sealed chunks: the old one (multiples of 4 KiB) and size buckets
//! (`crypto::bucket`, eight per doubling). Reports the bytes each adds and
//! how many files a provider could single out by the sequence of sealed
//! sizes alone (a file whose sequence no other file in the corpus shares).
//! Padding adds no requests: one object per chunk either way.
//!
//!   cargo bench --bench paddingbench -- [FOLDER] [--max-files N]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use latus::crypto::bucket;
use latus::sync::for_each_chunk;

const OLD_PAD: usize = 4096;
const LEN_PREFIX: usize = 8;

fn main() -> anyhow::Result<()> {
    let mut root = PathBuf::from("/usr/share");
    let mut max_files = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-files" => max_files = args.next().unwrap_or_default().parse()?,
            "--bench" => {}
            other => root = PathBuf::from(other),
        }
    }
    let mut files = Vec::new();
    walk(&root, &mut files, max_files);
    let seed = u64::from_le_bytes(*b"paddings");
    let (mut plain, mut old_total, mut new_total, mut chunks) = (0u64, 0u64, 0u64, 0u64);
    let mut old_seqs: HashMap<Vec<usize>, u32> = HashMap::new();
    let mut new_seqs: HashMap<Vec<usize>, u32> = HashMap::new();
    let mut per_file = Vec::new();
    for path in &files {
        let Ok(file) = File::open(path) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        let (mut old, mut new) = (Vec::new(), Vec::new());
        let chunked = for_each_chunk::<std::io::Error>(&file, meta.len(), seed, |_, data| {
            let framed = LEN_PREFIX + data.len();
            old.push(framed.div_ceil(OLD_PAD) * OLD_PAD);
            new.push(bucket(framed, OLD_PAD));
            plain += data.len() as u64;
            Ok(())
        });
        if chunked.is_err() || old.is_empty() {
            continue;
        }
        chunks += old.len() as u64;
        old_total += old.iter().sum::<usize>() as u64;
        new_total += new.iter().sum::<usize>() as u64;
        *old_seqs.entry(old.clone()).or_default() += 1;
        *new_seqs.entry(new.clone()).or_default() += 1;
        per_file.push((old, new));
    }
    let old_unique = per_file.iter().filter(|f| old_seqs[&f.0] == 1).count();
    let new_unique = per_file.iter().filter(|f| new_seqs[&f.1] == 1).count();
    let n = per_file.len().max(1);
    let pct = |a: u64| 100.0 * (a as f64 - plain as f64) / plain.max(1) as f64;
    println!(
        "corpus: {} ({} non-empty files, {} chunks, {:.1} MiB)",
        root.display(),
        per_file.len(),
        chunks,
        plain as f64 / 1048576.0
    );
    println!("padding            sealed MiB  overhead  size classes  files singled out by size");
    for (name, total, seqs, singled) in [
        ("4 KiB multiples", old_total, &old_seqs, old_unique),
        ("size buckets", new_total, &new_seqs, new_unique),
    ] {
        println!(
            "{name:<18} {:>10.1}  {:>7.2}%  {:>12}  {:>6} ({:.1}%)",
            total as f64 / 1048576.0,
            pct(total),
            seqs.len(),
            singled,
            100.0 * singled as f64 / n as f64
        );
    }
    Ok(())
}

/// Regular files under `dir`, in name order, at most `max`; links are not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, max: usize) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names.into_iter().rev() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                if out.len() >= max {
                    return;
                }
                out.push(entry.path());
            }
        }
    }
}
