//! Hashes large committed versions off the request path. Small ones are
//! hashed inline at commit, so most events are complete when journaled.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha512};

use crate::meta::Ino;

pub struct HashJob {
    pub ino: Ino,
    pub object: String,
    pub file: Arc<File>,
    pub size: u64,
    /// The event whose `file_hash` this fills in.
    pub event: Option<u64>,
}

pub struct HashDone {
    pub job: HashJob,
    pub hash: std::io::Result<String>,
}

pub fn spawn(done: impl Fn(HashDone) + Send + 'static) -> (Sender<HashJob>, JoinHandle<()>) {
    let (tx, rx): (Sender<HashJob>, Receiver<HashJob>) = channel();
    let handle = std::thread::Builder::new()
        .name("latus-hasher".into())
        .spawn(move || {
            for job in rx {
                let hash = sha512_of(&job.file, job.size);
                done(HashDone { job, hash });
            }
        })
        .expect("spawn hasher thread");
    (tx, handle)
}

/// SHA-512 hex of the first `size` bytes of `file`.
pub fn sha512_of(file: &File, size: u64) -> std::io::Result<String> {
    let mut h = Sha512::new();
    let mut buf = vec![0u8; (1 << 20).min(size.max(1) as usize)];
    let mut off = 0u64;
    while off < size {
        let want = ((size - off) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            // Shorter than its recorded size: hash the hole as zeros, as a
            // reader would see it.
            buf[..want].fill(0);
            h.update(&buf[..want]);
            off += want as u64;
            continue;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex(&h.finalize()))
}

pub fn sha512_empty() -> String {
    hex(&Sha512::digest(b""))
}

pub use crate::crypto::hex;
