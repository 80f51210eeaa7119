//! What the scheduler can do in one step, as plain data: a run is a list of
//! these, so a failing run replays (and shrinks) without its seed. Indexes
//! (node, path, handle) wrap around what exists when the step runs.

use super::rng::Rng;

/// The namespace: few names, two folder levels, so nodes collide. Any path
/// may become a file, a folder or a link.
pub const PATHS: &[&str] = &[
    "a", "b", "f", "g.txt", "a/c", "a/f", "a/g.txt", "b/c", "b/f", "a/c/f",
];

pub fn path(i: u8) -> &'static str {
    PATHS[i as usize % PATHS.len()]
}

/// Content of a write: `len` bytes of a pattern starting at `fill`, so
/// different writes give different versions.
pub fn bytes(fill: u8, len: u16) -> Vec<u8> {
    (0..len as usize)
        .map(|i| fill.wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

/// Where a write goes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// `O_TRUNC`, then from 0.
    Replace,
    /// At the end.
    Append,
    /// At this offset (clamped to the end).
    Offset(u16),
}

/// A fault on one node's connection to the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The next append fails (5xx).
    FailAppend,
    /// The next append is carried out, its answer lost.
    LoseAppend,
    /// The next append hangs: it fails now, may land later (`Land`).
    HangAppend,
    /// The next log read fails.
    FailRead,
    /// Every object call fails for this many steps.
    StoreDown(u8),
    /// Every call fails for this many steps.
    Offline(u8),
    /// Faults in force end (held calls stay held).
    Heal,
    /// The oldest held call lands now (if its numbers are still free).
    Land,
    /// Held calls never land.
    Forget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// open (or create), write, close.
    Write {
        node: u8,
        path: u8,
        at: At,
        fill: u8,
        len: u16,
    },
    /// open (or create) and write, kept open across later steps.
    Hold {
        node: u8,
        path: u8,
        fill: u8,
        len: u16,
    },
    /// One more write through a held descriptor.
    WriteHeld {
        node: u8,
        handle: u8,
        at: At,
        fill: u8,
        len: u16,
    },
    /// Closes a held descriptor.
    Close {
        node: u8,
        handle: u8,
    },
    Truncate {
        node: u8,
        path: u8,
        len: u16,
    },
    Rename {
        node: u8,
        from: u8,
        to: u8,
    },
    Unlink {
        node: u8,
        path: u8,
    },
    Mkdir {
        node: u8,
        path: u8,
    },
    Rmdir {
        node: u8,
        path: u8,
    },
    Symlink {
        node: u8,
        path: u8,
        target: u8,
    },
    Chmod {
        node: u8,
        path: u8,
        mode: u16,
    },
    Read {
        node: u8,
        path: u8,
    },
    /// One uploader pass: pull, push, pull.
    Sync {
        node: u8,
    },
    /// The shared clock moves (milliseconds).
    Advance {
        ms: u32,
    },
    /// kill -9: the process is gone, its home stays; it starts again
    /// after `down` steps.
    Crash {
        node: u8,
        down: u8,
    },
    Fault {
        node: u8,
        trouble: Trouble,
    },
    /// The node makes a checkpoint of the log (`latus log checkpoint`).
    Checkpoint {
        node: u8,
    },
}

/// How a run is drawn: a few scenario-wide choices, then the steps.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub nodes: usize,
    /// Per node, its clock's offset from the shared one (ms).
    pub skew_ms: Vec<i64>,
    pub ops: Vec<Op>,
}

impl Scenario {
    pub fn generate(seed: u64, steps: usize) -> Self {
        let mut rng = Rng::new(seed);
        let nodes = 3 + rng.below(2) as usize;
        let skew_ms = (0..nodes)
            .map(|_| {
                if rng.chance(30) {
                    rng.below(10_000) as i64 - 5_000
                } else {
                    0
                }
            })
            .collect();
        // How often the scheduler picks each node: a slow one gets few steps.
        let mut weight: Vec<u64> = vec![6; nodes];
        if rng.chance(40) {
            weight[rng.below(nodes as u64) as usize] = 1;
        }
        let ops = (0..steps).map(|_| draw(&mut rng, &weight)).collect();
        Self {
            nodes,
            skew_ms,
            ops,
        }
    }
}

fn draw(rng: &mut Rng, weight: &[u64]) -> Op {
    let node = rng.weighted(weight) as u8;
    // Top-level names more often: deeper ones need their folders first.
    let mut pick = || {
        if rng.chance(55) {
            rng.below(4) as u8
        } else {
            rng.below(PATHS.len() as u64) as u8
        }
    };
    let p = pick();
    let to = pick();
    let fill = rng.byte();
    let len = rng.below(300) as u16;
    let at = match rng.below(4) {
        0 | 1 => At::Replace,
        2 => At::Append,
        _ => At::Offset(rng.below(300) as u16),
    };
    let handle = rng.below(4) as u8;
    // Weights: local operations most, then syncs, then time and trouble.
    match rng.weighted(&[14, 4, 4, 4, 3, 5, 3, 5, 2, 1, 2, 6, 16, 4, 1, 6, 1]) {
        0 => Op::Write {
            node,
            path: p,
            at,
            fill,
            len,
        },
        1 => Op::Hold {
            node,
            path: p,
            fill,
            len,
        },
        2 => Op::WriteHeld {
            node,
            handle,
            at,
            fill,
            len,
        },
        3 => Op::Close { node, handle },
        4 => Op::Truncate {
            node,
            path: p,
            len: rng.below(200) as u16,
        },
        5 => Op::Rename { node, from: p, to },
        6 => Op::Unlink { node, path: p },
        7 => Op::Mkdir { node, path: p },
        8 => Op::Rmdir { node, path: p },
        9 => Op::Symlink {
            node,
            path: p,
            target: rng.below(3) as u8,
        },
        10 => Op::Chmod {
            node,
            path: p,
            mode: [0o644, 0o600, 0o755][rng.below(3) as usize],
        },
        11 => Op::Read { node, path: p },
        12 => Op::Sync { node },
        13 => Op::Advance {
            ms: [1, 10, 400, 1_000, 2_500, 60_000][rng.below(6) as usize],
        },
        14 => Op::Crash {
            node,
            down: rng.below(12) as u8,
        },
        16 => Op::Checkpoint { node },
        _ => Op::Fault {
            node,
            trouble: match rng.below(16) {
                0..=2 => Trouble::FailAppend,
                3..=5 => Trouble::LoseAppend,
                6..=7 => Trouble::HangAppend,
                8 => Trouble::FailRead,
                9 => Trouble::StoreDown(rng.below(15) as u8),
                10 => Trouble::Offline(rng.below(30) as u8),
                11..=12 => Trouble::Heal,
                13..=14 => Trouble::Land,
                _ => Trouble::Forget,
            },
        },
    }
}
