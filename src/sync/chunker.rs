//! Content-defined chunking (FastCDC 2020): chunk boundaries follow the
//! content, so inserting or changing a byte moves at most the chunks around
//! it and a 1 GiB file with a one-byte change re-uploads about one chunk.
//! The gear table comes from a seed derived from the volume key
//! (`Keys::chunker_seed`): without the key, nobody can compute where a
//! known file's chunks end, so their sealed sizes do not identify it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;

use fastcdc::v2020::{Error as CdcError, Normalization, StreamCDC};
use sha2::{Digest, Sha512};

pub const CHUNK_MIN: u32 = 256 << 10;
pub const CHUNK_AVG: u32 = 1 << 20;
pub const CHUNK_MAX: u32 = 4 << 20;

/// Calls `f(offset, data)` for each chunk of the first `size` bytes of
/// `file`, cut with the chunker seeded by `seed`, in order, and returns the
/// SHA-512 hex of the whole content. Memory is bounded by one chunk.
pub fn for_each_chunk<E: From<std::io::Error>>(
    file: &File,
    size: u64,
    seed: u64,
    mut f: impl FnMut(u64, Vec<u8>) -> Result<(), E>,
) -> Result<String, E> {
    let reader = BufReader::with_capacity(1 << 20, Positional { file, offset: 0 }.take(size));
    let mut whole = Sha512::new();
    let chunks = StreamCDC::with_level_and_seed(
        reader,
        CHUNK_MIN,
        CHUNK_AVG,
        CHUNK_MAX,
        Normalization::Level1,
        seed,
    );
    for chunk in chunks {
        let chunk = chunk.map_err(|e| match e {
            CdcError::IoError(io) => E::from(io),
            other => E::from(std::io::Error::other(other.to_string())),
        })?;
        whole.update(&chunk.data);
        f(chunk.offset, chunk.data)?;
    }
    Ok(crate::crypto::hex(&whole.finalize()))
}

/// Reads a file from its start with `pread`, whatever its cursor.
struct Positional<'f> {
    file: &'f File,
    offset: u64,
}

impl Read for Positional<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn chunk_list(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        let mut out = Vec::new();
        for_each_chunk::<std::io::Error>(&f, data.len() as u64, 0, |o, d| {
            out.push((o, d));
            Ok(())
        })
        .unwrap();
        out
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_content_and_hash_it() {
        let data = pseudo_random(9 << 20, 1);
        let chunks = chunk_list(&data);
        let joined: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(joined, data);
        assert!(chunks.iter().all(|(_, d)| d.len() <= CHUNK_MAX as usize));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let h = for_each_chunk::<std::io::Error>(&f, data.len() as u64, 0, |_, _| Ok(())).unwrap();
        assert_eq!(h, crate::crypto::hex(&Sha512::digest(&data)));
    }

    #[test]
    fn one_changed_byte_changes_few_chunks() {
        let data = pseudo_random(24 << 20, 2);
        let mut changed = data.clone();
        changed[12 << 20] ^= 1;
        let a: std::collections::HashSet<Vec<u8>> =
            chunk_list(&data).into_iter().map(|(_, d)| d).collect();
        let b = chunk_list(&changed);
        let new = b.iter().filter(|(_, d)| !a.contains(d)).count();
        assert!(new <= 2, "{new} of {} chunks changed", b.len());
    }
}
