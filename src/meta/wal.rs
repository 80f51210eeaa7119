//! The write-ahead journal: every metadata change is appended here (a plain
//! `write`, no fsync) before it becomes visible, so it survives kill -9 of
//! the daemon at the cost of one syscall. The committer moves records into
//! redb in batches with durable commits; `fsync` from a user syncs this file.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` where payload is
//! the JSON of a `WalEntry`. Replay stops at the first torn or corrupt frame
//! (only a power cut can leave one, and nothing after it was fsynced).
//!
//! Version changes: 1 — first format (its version is `FORMAT`; the file
//! has no header: a journal is read only by the latus that can read its
//! home, see `home`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::Record;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalEntry {
    pub seq: u64,
    pub rec: Record,
}

pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// What reading the journal found.
pub struct WalContents {
    pub entries: Vec<WalEntry>,
    /// Bytes after the last good frame (a torn write).
    pub torn_bytes: u64,
}

const MAX_FRAME: usize = 64 << 20;

/// The frame format's version.
pub const FORMAT: u32 = 1;

impl Wal {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub fn read_all(&self) -> io::Result<WalContents> {
        let mut bytes = Vec::new();
        File::open(&self.path)?.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let mut pos = 0usize;
        while let Some((entry, next)) = decode_frame(&bytes, pos) {
            entries.push(entry);
            pos = next;
        }
        Ok(WalContents {
            entries,
            torn_bytes: (bytes.len() - pos) as u64,
        })
    }

    /// Appends entries in one write.
    pub fn append(&mut self, entries: &[WalEntry]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(256 * entries.len());
        for e in entries {
            encode_frame(e, &mut buf);
        }
        if let Err(e) = self.file.write_all(&buf) {
            // Cut a partial frame (a full disk): replay stops at the first
            // bad frame, and later records must not sit behind one.
            self.file.set_len(self.len)?;
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Empties the journal; only call when every entry is durably in redb.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }
}

fn encode_frame(e: &WalEntry, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(e).expect("journal records serialise");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn decode_frame(bytes: &[u8], pos: usize) -> Option<(WalEntry, usize)> {
    let header = bytes.get(pos..pos + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(pos + 8..pos + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let entry = serde_json::from_slice(payload).ok()?;
    Some((entry, pos + 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> WalEntry {
        WalEntry {
            seq,
            rec: Record::DelInode(seq),
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.wal");
        let mut w = Wal::open(&p).unwrap();
        w.append(&[entry(1), entry(2)]).unwrap();
        w.append(&[entry(3)]).unwrap();
        // A torn frame: header promising more bytes than exist.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        let c = Wal::open(&p).unwrap().read_all().unwrap();
        assert_eq!(
            c.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(c.torn_bytes, 9);
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.wal");
        let mut w = Wal::open(&p).unwrap();
        w.append(&[entry(1), entry(2)]).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        let c = Wal::open(&p).unwrap().read_all().unwrap();
        assert_eq!(c.entries.len(), 1);
        assert!(c.torn_bytes > 0);
    }
}
