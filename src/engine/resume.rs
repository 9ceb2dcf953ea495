//! A step that starts with the key of an earlier step that never finished
//! (killed with its head, interrupted, failed: a time limit, a lost node)
//! continues from that step's checkpoints instead of from nothing: the
//! training loop resumes from the newest complete `checkpoints/epoch-N/` in
//! its own step folder, and the head puts the earlier step's there first.
//! Epoch folders are hard-linked (the loop never rewrites a file in one: it
//! writes a new folder and renames it), loose files are copied.

use std::path::Path;

use anyhow::{Context, Result};

const DIR: &str = "checkpoints";

/// Puts the checkpoints of the step folder `from` into the step folder `to`.
/// Returns the newest complete epoch it found, `None` when `from` has none.
pub fn inherit_checkpoints(from: &Path, to: &Path) -> Result<Option<usize>> {
    let src = from.join(DIR);
    let Ok(entries) = std::fs::read_dir(&src) else {
        return Ok(None);
    };
    let dst = to.join(DIR);
    let mut newest = None;
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let path = e.path();
        if name.starts_with('.') {
            continue; // a half-written checkpoint
        }
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        if path.is_dir() {
            let Some(n) = name
                .strip_prefix("epoch-")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if !path.join("state.json").is_file() {
                continue;
            }
            let target = dst.join(&*name);
            std::fs::create_dir_all(&target)?;
            for f in std::fs::read_dir(&path)? {
                let f = f?.path();
                let t = target.join(f.file_name().unwrap_or_default());
                if std::fs::hard_link(&f, &t).is_err() {
                    std::fs::copy(&f, &t)
                        .with_context(|| format!("copying {} to {}", f.display(), t.display()))?;
                }
            }
            newest = newest.max(Some(n));
        } else {
            std::fs::copy(&path, dst.join(&*name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_epochs_are_linked_loose_files_copied_half_written_ones_left() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for (dir, complete) in [
            ("epoch-0003", true),
            ("epoch-0004", true),
            ("epoch-0005", false),
        ] {
            let d = a.join(DIR).join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("model.safetensors"), dir).unwrap();
            if complete {
                std::fs::write(d.join("state.json"), "{}").unwrap();
            }
        }
        std::fs::create_dir_all(a.join(DIR).join(".tmp-epoch-0006")).unwrap();
        std::fs::write(a.join(DIR).join("best.safetensors"), "best").unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(inherit_checkpoints(&a, &b).unwrap(), Some(4));
        let got = |p: &str| std::fs::read_to_string(b.join(DIR).join(p)).ok();
        assert_eq!(
            got("epoch-0004/model.safetensors").as_deref(),
            Some("epoch-0004")
        );
        assert_eq!(got("epoch-0003/state.json").as_deref(), Some("{}"));
        assert_eq!(got("epoch-0005/model.safetensors"), None);
        assert!(!b.join(DIR).join(".tmp-epoch-0006").exists());
        // The copy of a loose file is the new step's own.
        std::fs::write(b.join(DIR).join("best.safetensors"), "new").unwrap();
        assert_eq!(
            std::fs::read_to_string(a.join(DIR).join("best.safetensors")).unwrap(),
            "best"
        );
        assert_eq!(
            inherit_checkpoints(&tmp.path().join("none"), &b).unwrap(),
            None
        );
    }
}
