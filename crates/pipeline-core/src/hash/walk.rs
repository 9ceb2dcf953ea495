//! A parallel walk of a folder that stats every file once.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::StatKey;

/// Files with their stats, by relative path.
pub type Files = Vec<(String, StatKey)>;

/// Every file under `root` with its stat, sorted by relative path ('/'-joined,
/// compared as strings, which is the order the Merkle hash uses too).
pub fn walk(root: &Path) -> Result<Files> {
    let mut out = walk_dir(root, "")?;
    out.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Files listed before their stats are handed to the thread pool: the
/// listing of a large folder and the stats of what it listed so far overlap.
const BATCH: usize = 2048;

fn walk_dir(dir: &Path, prefix: &str) -> Result<Files> {
    // One pass lists the folder (names and types come with the listing); each
    // batch of files it lists is stat'ed on the pool while the listing goes
    // on, so a single folder of many files is not stat'ed by one thread, nor
    // after the whole listing.
    let stated: Mutex<Vec<Result<Files>>> = Mutex::new(Vec::new());
    let mut subdirs = Vec::new();
    rayon::scope(|s| -> Result<()> {
        let mut batch = Vec::with_capacity(BATCH);
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
                batch.push((ent, rel, ft.is_symlink()));
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    let stated = &stated;
                    s.spawn(move |_| push(stated, stat_all(full)));
                }
            } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
            {
                bail!(
                    "{}: a special file; artifacts may hold only files and folders",
                    ent.path().display()
                );
            }
        }
        push(&stated, stat_all(batch));
        Ok(())
    })?;
    let mut out = Vec::new();
    for part in stated.into_inner().unwrap_or_else(|e| e.into_inner()) {
        out.extend(part?);
    }
    let nested: Vec<Files> = subdirs
        .par_iter()
        .map(|(p, rel)| walk_dir(p, rel))
        .collect::<Result<_>>()?;
    for n in nested {
        out.extend(n);
    }
    Ok(out)
}

fn push<T>(v: &Mutex<Vec<T>>, item: T) {
    v.lock().unwrap_or_else(|e| e.into_inner()).push(item);
}

/// The stats of listed files; a link is followed, and must lead to a file.
fn stat_all(files: Vec<(fs::DirEntry, String, bool)>) -> Result<Files> {
    files
        .into_iter()
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More files than one batch, and a subfolder: every file once, in path
    /// order, with its own size; a link to a folder is refused from inside
    /// a batch, not lost.
    #[test]
    fn a_large_folder_is_listed_whole_and_in_order() {
        let d = tempfile::tempdir().unwrap();
        let n = BATCH * 2 + 7;
        for i in 0..n {
            fs::write(d.path().join(format!("f{i:05}")), vec![0u8; i % 5]).unwrap();
        }
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/x"), b"xyz").unwrap();
        let files = walk(d.path()).unwrap();
        assert_eq!(files.len(), n + 1);
        assert!(files.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(files[3].0, "f00003");
        assert_eq!(files[3].1.size, 3);
        assert_eq!(files[n].0, "sub/x");
        std::os::unix::fs::symlink(d.path().join("sub"), d.path().join("f99999")).unwrap();
        let e = walk(d.path()).unwrap_err().to_string();
        assert!(e.contains("a link to something other than a file"), "{e}");
    }
}
