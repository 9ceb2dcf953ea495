//! The Merkle hash of a folder from its sorted file entries.
//!
//! Each folder hashes, in name order, one record per child:
//! a kind byte (`f` file, `d` folder), the name's length (u64 LE), the name,
//! and the child's 32-byte hash. The domain tag keeps a folder hash from ever
//! equalling a file hash.

use super::Entry;

const DOMAIN: &[u8] = b"pipeline-tree-v1\0";

/// The root hash of the folder whose files are `entries` (sorted by path).
pub fn root(entries: &[Entry]) -> blake3::Hash {
    let paths: Vec<(Vec<&str>, &blake3::Hash)> = entries
        .iter()
        .map(|e| (e.rel.split('/').collect(), &e.hash))
        .collect();
    let mut sorted: Vec<&(Vec<&str>, &blake3::Hash)> = paths.iter().collect();
    // Component order differs from string order ("a/b" vs "a.b"): sort by components.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    folder(&sorted, 0)
}

fn folder(items: &[&(Vec<&str>, &blake3::Hash)], depth: usize) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    let mut i = 0;
    while i < items.len() {
        let name = items[i].0[depth];
        if items[i].0.len() == depth + 1 {
            record(&mut h, b'f', name, items[i].1);
            i += 1;
        } else {
            let mut j = i;
            while j < items.len() && items[j].0.len() > depth + 1 && items[j].0[depth] == name {
                j += 1;
            }
            let child = folder(&items[i..j], depth + 1);
            record(&mut h, b'd', name, &child);
            i = j;
        }
    }
    h.finalize()
}

fn record(h: &mut blake3::Hasher, kind: u8, name: &str, hash: &blake3::Hash) {
    h.update(&[kind]);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(hash.as_bytes());
}
