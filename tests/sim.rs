//! Deterministic simulation of several nodes over one in-memory cloud (see
//! `sim/model.rs` for what is checked). A seed names a run: the same seed
//! gives the same scenario, the same interleaving, the same faults.
//!
//! - `cargo test --test sim`: a fixed set of seeds (and each regression).
//! - `LATUS_SIM_SEED=1234 [LATUS_SIM_STEPS=200] cargo test --test sim one_seed
//!   -- --nocapture`: one seed, with its trace on failure; `LATUS_SIM_SHRINK=1`
//!   also shrinks it to a short list of operations.
//! - `LATUS_SIM_SWEEP=10000 cargo test --release --test sim sweep -- --nocapture`:
//!   many seeds, with scenarios and steps per minute.

mod sim {
    pub mod model;
    pub mod ops;
    pub mod rng;
    pub mod world;
}

use std::time::Instant;

use sim::model::{Failure, Outcome, Sim};
use sim::ops::{At, Op, Scenario, Trouble};

const STEPS: usize = 120;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run(s: &Scenario, seed: u64) -> Result<Outcome, Failure> {
    Sim::new(s, seed).run(s)
}

/// The failure, how to replay it, and the last `tail` steps of its trace.
fn report(seed: u64, steps: usize, f: &Failure, tail: usize) -> String {
    let tail: Vec<&String> = f.trace.iter().rev().take(tail).collect();
    let mut out = format!(
        "simulation failed: seed {seed}, {steps} steps, broken at step {}: {}\n\
         replay: LATUS_SIM_SEED={seed} LATUS_SIM_STEPS={steps} cargo test --test sim one_seed -- --nocapture\n\
         last steps:\n",
        f.step, f.message
    );
    for l in tail.into_iter().rev() {
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn check_seed(seed: u64, steps: usize) -> Outcome {
    let s = Scenario::generate(seed, steps);
    match run(&s, seed) {
        Ok(o) => o,
        Err(f) => panic!("{}", report(seed, steps, &f, 60)),
    }
}

/// The default set: small enough for every `cargo test`.
#[test]
fn fixed_seeds() {
    for seed in 0..40 {
        check_seed(seed, STEPS);
    }
}

/// An explicit list of operations on three nodes with one clock.
fn check_ops(name: &str, ops: Vec<Op>) -> Outcome {
    let s = Scenario {
        nodes: 3,
        skew_ms: vec![0; 3],
        ops,
    };
    match run(&s, 0) {
        Ok(o) => o,
        Err(f) => panic!("{}", report_ops(name, &f)),
    }
}

fn report_ops(name: &str, f: &Failure) -> String {
    format!(
        "{name} failed at step {}: {}\n  {}",
        f.step,
        f.message,
        f.trace.join("\n  ")
    )
}

// Paths by index in `sim::ops::PATHS`.
const F: u8 = 2;
const G_TXT: u8 = 3;

/// truncate(2) by path while another descriptor writes commits what was
/// written: the model first called that a version nobody closed (seed 3).
#[test]
fn regression_truncate_by_path_commits_what_writers_wrote() {
    use Op::*;
    check_ops(
        "truncate",
        vec![
            Hold {
                node: 0,
                path: G_TXT,
                fill: 182,
                len: 134,
            },
            Truncate {
                node: 0,
                path: G_TXT,
                len: 98,
            },
            Sync { node: 0 },
            Sync { node: 1 },
            Read {
                node: 1,
                path: G_TXT,
            },
            WriteHeld {
                node: 0,
                handle: 0,
                at: At::Append,
                fill: 9,
                len: 20,
            },
            Read {
                node: 0,
                path: G_TXT,
            },
        ],
    );
}

/// An append whose answer is lost, then kill -9 before the node learns it
/// was published: after restart it finds its record, never appends twice.
#[test]
fn a_lost_append_then_a_crash_publishes_once() {
    use Op::*;
    let o = check_ops(
        "lost append",
        vec![
            Write {
                node: 0,
                path: F,
                at: At::Replace,
                fill: 1,
                len: 10,
            },
            Fault {
                node: 0,
                trouble: Trouble::LoseAppend,
            },
            Sync { node: 0 },
            Crash { node: 0, down: 0 },
            Sync { node: 0 },
            Sync { node: 1 },
            Read { node: 1, path: F },
        ],
    );
    assert!(
        o.trace.iter().any(|l| l.contains("failed: append")),
        "{:#?}",
        o.trace
    );
}

/// A hung append, retried, then landing late: it lands only on the numbers
/// it would have had, so never twice; landing before the retry, the node
/// finds it on its next pull.
#[test]
fn a_hung_append_lands_at_most_once() {
    use Op::*;
    for land_first in [false, true] {
        let mut ops = vec![
            Write {
                node: 0,
                path: F,
                at: At::Replace,
                fill: 1,
                len: 10,
            },
            Fault {
                node: 0,
                trouble: Trouble::HangAppend,
            },
            Sync { node: 0 },
        ];
        let land = Fault {
            node: 0,
            trouble: Trouble::Land,
        };
        if land_first {
            ops.push(land.clone());
        }
        ops.extend([Sync { node: 0 }, Sync { node: 1 }]);
        if !land_first {
            ops.push(land);
        }
        ops.extend([Sync { node: 2 }, Read { node: 2, path: F }]);
        check_ops("hung append", ops);
    }
}

/// Two nodes change one file concurrently while a third holds it open:
/// every version survives as the file, a conflict copy or history.
#[test]
fn concurrent_changes_under_an_open_writer_keep_every_version() {
    use Op::*;
    check_ops(
        "concurrent",
        vec![
            Write {
                node: 0,
                path: G_TXT,
                at: At::Replace,
                fill: 1,
                len: 10,
            },
            Sync { node: 0 },
            Sync { node: 1 },
            Sync { node: 2 },
            Hold {
                node: 2,
                path: G_TXT,
                fill: 2,
                len: 5,
            },
            Write {
                node: 0,
                path: G_TXT,
                at: At::Append,
                fill: 3,
                len: 7,
            },
            Write {
                node: 1,
                path: G_TXT,
                at: At::Offset(2),
                fill: 4,
                len: 9,
            },
            Advance { ms: 1_000 },
            Sync { node: 1 },
            Sync { node: 0 },
            Sync { node: 2 },
            Read {
                node: 2,
                path: G_TXT,
            },
            Close { node: 2, handle: 0 },
            Sync { node: 2 },
        ],
    );
}

/// The same seed twice gives the same run, step by step.
#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 1001] {
        let a = check_seed(seed, STEPS);
        let b = check_seed(seed, STEPS);
        assert_eq!(a, b, "seed {seed} did not replay the same way");
    }
}

/// One seed from the environment (does nothing without `LATUS_SIM_SEED`).
#[test]
fn one_seed() {
    let Some(seed) = env("LATUS_SIM_SEED") else {
        return;
    };
    let steps = env("LATUS_SIM_STEPS").map_or(STEPS, |s| s as usize);
    let s = Scenario::generate(seed, steps);
    let f = match run(&s, seed) {
        Ok(o) => {
            if env("LATUS_SIM_TRACE").is_some() {
                println!("{}", o.trace.join("\n"));
            }
            println!("seed {seed}: ok, {} log records", o.records);
            return;
        }
        Err(f) => f,
    };
    let mut msg = report(seed, steps, &f, usize::MAX);
    if env("LATUS_SIM_SHRINK").is_some() {
        let ops = shrink(&s, seed, &f.message);
        msg.push_str(&format!(
            "shrunk to {} operations (same failure):\n  {ops:#?}\n",
            ops.len()
        ));
    }
    panic!("{msg}");
}

/// Removes operations while the run still fails the same way.
fn shrink(s: &Scenario, seed: u64, message: &str) -> Vec<sim::ops::Op> {
    let kind = |m: &str| m.split(':').next().unwrap_or("").to_string();
    let want = kind(message);
    let fails = |ops: &[sim::ops::Op]| {
        let t = Scenario {
            ops: ops.to_vec(),
            ..s.clone()
        };
        matches!(run(&t, seed), Err(f) if kind(&f.message) == want)
    };
    let mut ops = s.ops.clone();
    let mut chunk = ops.len() / 2;
    while chunk > 0 {
        let mut i = 0;
        while i < ops.len() {
            let mut fewer = ops.clone();
            fewer.drain(i..(i + chunk).min(ops.len()));
            if fails(&fewer) {
                ops = fewer;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    ops
}

/// Many seeds: `LATUS_SIM_SWEEP=N` (from `LATUS_SIM_FIRST`, default 1000000).
#[test]
fn sweep() {
    let Some(count) = env("LATUS_SIM_SWEEP") else {
        return;
    };
    let first = env("LATUS_SIM_FIRST").unwrap_or(1_000_000);
    let steps = env("LATUS_SIM_STEPS").map_or(STEPS, |s| s as usize);
    let start = Instant::now();
    let (mut total_steps, mut failures) = (0usize, Vec::new());
    for seed in first..first + count {
        let s = Scenario::generate(seed, steps);
        match run(&s, seed) {
            Ok(o) => {
                total_steps += o.steps;
                // Now and then, the same seed again: it must replay exactly.
                if seed % 100 == 0 {
                    let again = run(&s, seed).map(|a| a.digest);
                    if !matches!(again, Ok(ref d) if *d == o.digest) {
                        eprintln!("seed {seed} did not replay the same way");
                        failures.push(seed);
                    }
                }
            }
            Err(f) => {
                total_steps += f.step;
                eprintln!("{}", report(seed, steps, &f, 60));
                failures.push(seed);
            }
        }
        let done = seed - first + 1;
        if done.is_multiple_of(500) {
            let min = start.elapsed().as_secs_f64() / 60.0;
            eprintln!(
                "{done} scenarios, {} failed, {:.0} scenarios/min, {:.0} steps/min",
                failures.len(),
                done as f64 / min,
                total_steps as f64 / min
            );
        }
    }
    let min = start.elapsed().as_secs_f64() / 60.0;
    println!(
        "sweep: {count} scenarios of {steps} steps from seed {first} in {:.1} min: \
         {:.0} scenarios/min, {:.0} steps/min; failed seeds: {failures:?}",
        min,
        count as f64 / min,
        total_steps as f64 / min
    );
    assert!(failures.is_empty(), "failed seeds: {failures:?}");
}

/// A node joining after a checkpoint starts from it: it reads only the
/// records after it, and shows the same tree as the nodes that read the
/// whole log (including a rename and a delete made after the checkpoint).
#[test]
fn a_node_joining_after_a_checkpoint_starts_from_it() {
    use Op::*;
    let write = |node, path, fill| Write {
        node,
        path,
        at: At::Replace,
        fill,
        len: 100,
    };
    let o = check_ops(
        "checkpoint",
        vec![
            Mkdir { node: 0, path: 0 },
            write(0, 5, 1),
            write(1, F, 2),
            write(2, G_TXT, 3),
            Sync { node: 0 },
            Sync { node: 1 },
            Sync { node: 2 },
            Sync { node: 0 },
            Checkpoint { node: 0 },
            Rename {
                node: 1,
                from: F,
                to: 1,
            },
            Unlink {
                node: 2,
                path: G_TXT,
            },
            write(0, 6, 4),
            Sync { node: 1 },
            Sync { node: 2 },
            Sync { node: 0 },
        ],
    );
    let joined = o
        .trace
        .iter()
        .find_map(|l| l.strip_prefix("joined from checkpoint "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the joining node's line");
    let made = o
        .trace
        .iter()
        .find_map(|l| l.split("Checkpoint { node: 0 } -> at ").nth(1))
        .and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .expect("the checkpoint was made");
    assert!(
        made > 0 && joined == made,
        "made at {made}, joined from {joined}"
    );
}
