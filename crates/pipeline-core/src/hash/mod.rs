//! Content hashes of artifacts: BLAKE3 of files (multi-threaded on large ones)
//! and of folders (a Merkle hash over sorted entries), with a stat cache so an
//! up-to-date check never re-reads a file whose stat did not change.
//!
//! This module owns the hashing rules and the packed stat-cache format; where
//! the cache rows live (the store) is the caller's business.
//!
//! - A file's hash is plain BLAKE3 of its bytes, so `b3sum FILE` agrees with
//!   `pipeline lineage`.
//! - A folder's hash is [`merkle`]'s: every folder hashes the sorted list of its
//!   children (kind, name, child hash). Empty folders contribute nothing, and
//!   file metadata (mode, times) never enters a hash.
//! - A symbolic link inside a folder is hashed as what it points to when that
//!   is a file; a link to a folder is refused (cycles, escapes).

pub mod merkle;
pub mod statcache;
pub mod walk;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;

pub use statcache::{Entry, StatKey};

/// Files at least this large are hashed with BLAKE3's multi-threaded mode
/// over a memory map; smaller ones are read with one buffer, and a folder's
/// small files are spread over threads instead.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// The content hash of an artifact, with what was seen on disk.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub hash: blake3::Hash,
    pub size: u64,
    pub is_dir: bool,
    /// Every file, sorted by relative path ("" for a single-file artifact).
    pub entries: Vec<Entry>,
}

impl Hashed {
    pub fn file_count(&self) -> u64 {
        self.entries.len() as u64
    }
}

/// How a hash was obtained, so callers can tell the user (and tests can tell
/// that nothing was re-read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files whose stat matched the cache: not read.
    pub reused: u64,
    /// Files read and hashed.
    pub rehashed: u64,
}

/// BLAKE3 of one file's bytes.
pub fn hash_file(path: &Path, size: u64) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        hasher
            .update_mmap_rayon(path)
            .with_context(|| format!("hashing {}", path.display()))?;
    } else {
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher.finalize())
}

/// What the stat cache remembers of one artifact.
pub struct Cached {
    pub hash: blake3::Hash,
    pub entries: Vec<Entry>,
}

/// Hashes the file or folder at `path`, reusing `cached` entries whose stat
/// still matches. Returns `Ok(None)` when nothing exists at `path`.
pub fn hash_path(path: &Path, cached: Option<&Cached>) -> Result<Option<(Hashed, HashStats)>> {
    match Seen::stat(path)? {
        Some(seen) => seen.hash(cached).map(Some),
        None => Ok(None),
    }
}

/// What is at a path, stat'ed: every file with its stat, nothing read yet.
/// Stat'ing needs no cache, so a caller can load the cache meanwhile.
pub struct Seen {
    path: std::path::PathBuf,
    is_dir: bool,
    files: walk::Files,
}

impl Seen {
    /// Stats the file or every file of the folder at `path`; `None` when
    /// nothing is there.
    pub fn stat(path: &Path) -> Result<Option<Seen>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let is_dir = meta.is_dir();
        let files = if is_dir {
            walk::walk(path)?
        } else {
            vec![(String::new(), StatKey::of(&meta))]
        };
        Ok(Some(Seen {
            path: path.to_path_buf(),
            is_dir,
            files,
        }))
    }

    /// The content hash: `cached` entries whose stat still matches are
    /// trusted, every other file is read.
    pub fn hash(self, cached: Option<&Cached>) -> Result<(Hashed, HashStats)> {
        let Seen {
            path,
            is_dir,
            files: seen,
        } = self;
        let path = path.as_path();
        let cached_root = cached.map(|c| c.hash);
        let cached = cached.map(|c| c.entries.as_slice()).unwrap_or(&[]);
        // Both lists are sorted by path: a merge finds the reusable entries.
        let mut reuse: Vec<Option<blake3::Hash>> = Vec::with_capacity(seen.len());
        let mut j = 0;
        for (rel, key) in &seen {
            while j < cached.len() && cached[j].rel.as_str() < rel.as_str() {
                j += 1;
            }
            let hit = cached
                .get(j)
                .filter(|c| c.rel == *rel && c.stat == *key)
                .map(|c| c.hash);
            reuse.push(hit);
        }
        let entries: Vec<Entry> = seen
            .into_par_iter()
            .zip(reuse.into_par_iter())
            .map(|((rel, stat), hit)| {
                let hash = match hit {
                    Some(h) => h,
                    None if rel.is_empty() => hash_file(path, stat.size)?,
                    None => hash_file(&path.join(&rel), stat.size)?,
                };
                Ok(Entry {
                    rel,
                    stat,
                    hash,
                    reused: hit.is_some(),
                })
            })
            .collect::<Result<_>>()?;
        let reused = entries.iter().filter(|e| e.reused).count() as u64;
        let stats = HashStats {
            reused,
            rehashed: entries.len() as u64 - reused,
        };
        let size = entries.iter().map(|e| e.stat.size).sum();
        // When every entry matched the cache one for one, the root cannot have changed.
        let unchanged = stats.rehashed == 0 && entries.len() == cached.len();
        let hash = match (is_dir, cached_root) {
            (true, Some(root)) if unchanged => root,
            (true, _) => merkle::root(&entries),
            (false, _) => entries[0].hash,
        };
        Ok((
            Hashed {
                hash,
                size,
                is_dir,
                entries,
            },
            stats,
        ))
    }
}
