//! Unpacking zip and tar archives without ever writing outside the
//! destination: an entry whose name escapes it (`..`, an absolute path, a
//! Windows drive prefix) is refused, and so is any link entry (symbolic or
//! hard), since a link is how a later entry would escape. Files are written
//! with default permissions; the archive's modes and owners are ignored.
//!
//! A zip is checked whole before anything is written, so a bad one leaves
//! the destination as it was. A tar is a stream: its entries are checked one
//! by one, and a bad entry stops the extraction with what came before it
//! written inside the destination only.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where entry `entry_name` of an archive goes under `dest`, or why it may
/// not: a `..`, an absolute path or a prefix component is refused (`.`
/// components are dropped).
pub fn safe_entry_path(dest: &Path, entry_name: &Path) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in entry_name.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir => bail!(
                "archive entry {} climbs out of the destination ('..'); refused, nothing \
                 was written outside {}",
                entry_name.display(),
                dest.display()
            ),
            Component::RootDir | Component::Prefix(_) => bail!(
                "archive entry {} is an absolute path; refused, nothing was written outside {}",
                entry_name.display(),
                dest.display()
            ),
        }
    }
    if rel.as_os_str().is_empty() {
        bail!("archive entry '{}' has an empty name", entry_name.display());
    }
    Ok(dest.join(rel))
}

/// Refuses a path under `dest` that passes through an existing link (which
/// could lead anywhere).
fn no_links_on_the_way(dest: &Path, path: &Path) -> Result<()> {
    let rel = path.strip_prefix(dest).unwrap_or(path);
    let mut p = dest.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                bail!("{} is a link; refusing to extract through it", p.display())
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn write_file(dest: &Path, path: &Path, mut from: impl Read) -> Result<()> {
    no_links_on_the_way(dest, path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::copy(&mut from, &mut f).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn make_dir(dest: &Path, path: &Path) -> Result<()> {
    no_links_on_the_way(dest, path)?;
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

/// Unpacks the zip at `archive` into `dest` (created if missing); returns
/// the number of files written.
pub fn extract_zip(archive: &Path, dest: &Path) -> Result<u64> {
    let f = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .with_context(|| format!("{}: not a readable zip archive", archive.display()))?;
    // Every entry is checked before the first is written.
    let mut plan = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let e = zip
            .by_index_raw(i)
            .with_context(|| format!("{}: reading entry {i}", archive.display()))?;
        let name = e
            .name()
            .with_context(|| format!("{}: entry {i} has an unreadable name", archive.display()))?
            .into_owned();
        if e.is_symlink() {
            bail!(
                "{}: entry {name} is a link; links are refused (they could lead outside the \
                 destination)",
                archive.display()
            );
        }
        let path = safe_entry_path(dest, Path::new(&name))
            .with_context(|| format!("{}", archive.display()))?;
        plan.push((path, e.is_dir()));
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut files = 0;
    for (i, (path, is_dir)) in plan.into_iter().enumerate() {
        if is_dir {
            make_dir(dest, &path)?;
            continue;
        }
        let e = zip
            .by_index(i)
            .with_context(|| format!("{}: reading entry {i}", archive.display()))?;
        write_file(dest, &path, e).with_context(|| format!("extracting {}", archive.display()))?;
        files += 1;
    }
    Ok(files)
}

/// Unpacks the tar stream `reader` into `dest` (created if missing); returns
/// the number of files written.
pub fn extract_tar<R: Read>(reader: R, dest: &Path) -> Result<u64> {
    use tar::EntryType;
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut ar = tar::Archive::new(reader);
    let mut files = 0;
    for entry in ar.entries().context("reading the tar archive")? {
        let entry = entry.context("reading the tar archive")?;
        let name = entry
            .path()
            .context("reading a tar entry's name")?
            .into_owned();
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Symlink | EntryType::Link => bail!(
                "tar entry {} is a link; links are refused (they could lead outside the \
                 destination)",
                name.display()
            ),
            // Metadata for the whole archive, nothing to write.
            EntryType::XGlobalHeader => continue,
            _ => {}
        }
        let path = safe_entry_path(dest, &name)?;
        match kind {
            EntryType::Directory => make_dir(dest, &path)?,
            EntryType::Regular | EntryType::Continuous => {
                write_file(dest, &path, entry)?;
                files += 1;
            }
            other => bail!(
                "tar entry {} is a {other:?}; only files and folders are extracted",
                name.display()
            ),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_that_escape_are_refused() {
        let d = Path::new("/dest");
        assert_eq!(
            safe_entry_path(d, Path::new("a/./b.txt")).unwrap(),
            Path::new("/dest/a/b.txt")
        );
        for bad in ["../evil", "a/../../evil", "/abs", "a/../b", ""] {
            assert!(safe_entry_path(d, Path::new(bad)).is_err(), "{bad}");
        }
    }
}
