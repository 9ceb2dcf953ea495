//! A parallel walk of a folder that stats every file once.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::StatKey;

/// Every file under `root` with its stat, sorted by relative path ('/'-joined,
/// compared as strings, which is the order the Merkle hash uses too).
pub fn walk(root: &Path) -> Result<Vec<(String, StatKey)>> {
    let mut out = walk_dir(root, "")?;
    out.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk_dir(dir: &Path, prefix: &str) -> Result<Vec<(String, StatKey)>> {
    // One pass lists the folder (names and types come with the listing);
    // the stats then run in parallel, so a single folder of many files is
    // not stat'ed by one thread.
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    let rd = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for ent in rd {
        let ent = ent.with_context(|| format!("listing {}", dir.display()))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else {
            bail!(
                "{}: a file name that is not UTF-8 ({:?}); rename it",
                dir.display(),
                name
            );
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let ft = ent
            .file_type()
            .with_context(|| format!("reading {}", ent.path().display()))?;
        if ft.is_dir() {
            subdirs.push((ent.path(), rel));
        } else if ft.is_file() || ft.is_symlink() {
            files.push((ent, rel, ft.is_symlink()));
        } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            bail!(
                "{}: a special file; artifacts may hold only files and folders",
                ent.path().display()
            );
        }
    }
    let mut out: Vec<(String, StatKey)> = files
        .into_par_iter()
        .map(|(ent, rel, link)| {
            let meta = if link {
                let meta = fs::metadata(ent.path())
                    .with_context(|| format!("following link {}", ent.path().display()))?;
                if !meta.is_file() {
                    bail!(
                        "{}: a link to something other than a file; outputs may hold files, folders and links to files",
                        ent.path().display()
                    );
                }
                meta
            } else {
                ent.metadata()
                    .with_context(|| format!("reading {}", ent.path().display()))?
            };
            Ok((rel, StatKey::of(&meta)))
        })
        .collect::<Result<_>>()?;
    let nested: Vec<Vec<(String, StatKey)>> = subdirs
        .par_iter()
        .map(|(p, rel)| walk_dir(p, rel))
        .collect::<Result<_>>()?;
    for n in nested {
        out.extend(n);
    }
    Ok(out)
}
