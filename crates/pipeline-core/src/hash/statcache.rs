//! Stat-cache entries and their packed encodings.
//!
//! A cache row holds every file of one artifact: its path relative to the
//! artifact root, what `stat` said (device, inode, size, mtime_ns, ctime_ns)
//! and the BLAKE3 of its bytes at that time. A file whose stat still matches
//! is trusted without reading it; ctime cannot be set by a user, so a content
//! change always shows.
//!
//! Packing (little endian) is one blob per artifact rather than one row per
//! file: a 100,000-file folder loads in one read.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Result};

/// What `stat` says of a file, as far as staleness goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl StatKey {
    pub fn of(m: &Metadata) -> Self {
        StatKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// One file of an artifact.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the artifact root, '/'-separated; "" when the artifact
    /// is this one file.
    pub rel: String,
    pub stat: StatKey,
    pub hash: blake3::Hash,
    /// Whether the hash came from the cache (not persisted).
    pub reused: bool,
}

const STAT_MAGIC: u32 = 0x5354_4331; // "STC1"
const TREE_MAGIC: u32 = 0x5452_4531; // "TRE1"

/// Packs full entries (stat and hash) for the stat cache.
pub fn encode_stat(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + entries.len() * 96);
    out.extend_from_slice(&STAT_MAGIC.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        put_str(&mut out, &e.rel);
        out.extend_from_slice(&e.stat.dev.to_le_bytes());
        out.extend_from_slice(&e.stat.ino.to_le_bytes());
        out.extend_from_slice(&e.stat.size.to_le_bytes());
        out.extend_from_slice(&e.stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(e.hash.as_bytes());
    }
    out
}

pub fn decode_stat(blob: &[u8]) -> Result<Vec<Entry>> {
    let mut r = Reader { b: blob, at: 0 };
    if r.u32()? != STAT_MAGIC {
        bail!("stat cache entry has an unknown format");
    }
    let n = r.u64()? as usize;
    let mut v = Vec::with_capacity(n.min(blob.len() / 72));
    for _ in 0..n {
        let rel = r.str()?;
        let stat = StatKey {
            dev: r.u64()?,
            ino: r.u64()?,
            size: r.u64()?,
            mtime_ns: r.u64()? as i64,
            ctime_ns: r.u64()? as i64,
        };
        v.push(Entry {
            rel,
            stat,
            hash: r.hash()?,
            reused: false,
        });
    }
    Ok(v)
}

/// One file of a recorded folder version: path, size, hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    pub rel: String,
    pub size: u64,
    pub hash: blake3::Hash,
}

/// Packs a folder listing (content only, no stat) for the `trees` table.
pub fn encode_tree(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + entries.len() * 64);
    out.extend_from_slice(&TREE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        put_str(&mut out, &e.rel);
        out.extend_from_slice(&e.stat.size.to_le_bytes());
        out.extend_from_slice(e.hash.as_bytes());
    }
    out
}

pub fn decode_tree(blob: &[u8]) -> Result<Vec<TreeFile>> {
    let mut r = Reader { b: blob, at: 0 };
    if r.u32()? != TREE_MAGIC {
        bail!("tree listing has an unknown format");
    }
    let n = r.u64()? as usize;
    let mut v = Vec::with_capacity(n.min(blob.len() / 44));
    for _ in 0..n {
        let rel = r.str()?;
        let size = r.u64()?;
        v.push(TreeFile {
            rel,
            size,
            hash: r.hash()?,
        });
    }
    Ok(v)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.at + n > self.b.len() {
            bail!("packed entry list is truncated");
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        Ok(String::from_utf8(self.take(n)?.to_vec())?)
    }
    fn hash(&mut self) -> Result<blake3::Hash> {
        let b: [u8; 32] = self.take(32)?.try_into()?;
        Ok(blake3::Hash::from(b))
    }
}
