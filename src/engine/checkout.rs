//! `pipeline checkout PATH --step N`: puts back the version of an artifact
//! that step N wrote (or read), when its bytes are still somewhere in the
//! workspace, or says which files are gone.
//!
//! The pipeline keeps no copy of every version (no DVC-style cache): the bytes
//! of an older version survive only where something kept them. Checkout looks
//! for every file of the recorded version, by size and then BLAKE3, in
//!
//! - the artifact as it is now (files that did not change between versions),
//! - the step folders (`.pipeline/steps/*`: checkpoints, staged outputs),
//! - the per-item memos (`.pipeline/items/*`),
//! - the versions checkout itself set aside (`.pipeline/checkout/*`).
//!
//! It assembles the version beside the target, checks that its hash is the
//! recorded one, and only then swaps it in. The version it replaces is moved
//! to `.pipeline/checkout/<hash>` (nothing recorded is lost), so a checkout of
//! the newer step brings it back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::workspace::Workspace;
use crate::hash;
use crate::relpath::RelPath;
use crate::store::StepId;

/// Where checkout keeps the versions it replaced.
pub const KEPT: &str = "checkout";

/// What a checkout did.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub path: String,
    pub step: i64,
    pub hash: String,
    /// Already on disk: nothing was done.
    pub already: bool,
    pub files: usize,
    /// Where the replaced version now is (workspace-relative), if one was there.
    pub kept: Option<String>,
}

/// Restores the version of `path` that step `step` wrote or read.
pub async fn checkout(ws: &Workspace, path: &str, step: StepId) -> Result<Outcome> {
    let rel = RelPath::parse(path.trim_end_matches('/')).map_err(|e| anyhow::anyhow!(e))?;
    let s = ws
        .store
        .step(step)
        .await
        .with_context(|| format!("no step {step} is recorded in this workspace"))?;
    let outs = ws.store.step_outputs(step).await?;
    let ins = ws.store.step_inputs(step).await?;
    let Some(port) = outs
        .iter()
        .chain(&ins)
        .find(|p| p.artifact.path.as_str() == rel.as_str())
    else {
        let known: Vec<String> = outs
            .iter()
            .chain(&ins)
            .map(|p| p.artifact.path.to_string())
            .collect();
        bail!(
            "step {step} ({}) recorded no version of {rel}; it read and wrote: {}",
            s.stage,
            if known.is_empty() {
                "nothing".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let want = port.artifact.hash.clone();
    let target = rel.under(&ws.root);
    let now = ws
        .hash(&rel)
        .await?
        .map(|(h, _)| h.hash.to_hex().to_string());
    let mut outcome = Outcome {
        path: rel.to_string(),
        step: step.0,
        hash: want.clone(),
        already: now.as_deref() == Some(want.as_str()),
        files: port.artifact.file_count as usize,
        kept: None,
    };
    if outcome.already {
        return Ok(outcome);
    }
    // Every file of the recorded version: (relative path, size, hash).
    let files: Vec<(String, u64, blake3::Hash)> = if port.artifact.is_dir {
        match ws.store.tree(&want).await? {
            Some(t) => t.into_iter().map(|f| (f.rel, f.size, f.hash)).collect(),
            None => bail!("the store holds no listing of {rel} at {}", &want[..16]),
        }
    } else {
        let h = blake3::Hash::from_hex(&want).context("a recorded hash is not hex")?;
        vec![(String::new(), port.artifact.size as u64, h)]
    };
    let root = ws.root.clone();
    let target2 = target.clone();
    let found = tokio::task::spawn_blocking(move || find_bytes(&root, &target2, &files)).await??;
    let missing: Vec<&String> = found
        .iter()
        .filter(|(_, src)| src.is_none())
        .map(|(rel, _)| rel)
        .collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing
            .iter()
            .take(5)
            .map(|r| {
                if r.is_empty() {
                    rel.to_string()
                } else {
                    r.to_string()
                }
            })
            .collect();
        bail!(
            "the bytes of {rel} as step {step} ({}) recorded it ({}) are no longer in the \
             workspace: {} of {} files are nowhere (the step folders, memos and set-aside \
             versions were searched): {}{}. Rerun the stage with that step's parameters \
             instead (`pipeline params diff` shows them)",
            s.stage,
            &want[..16],
            missing.len(),
            found.len(),
            shown.join(", "),
            if missing.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    let kept_dir = ws.root.join(".pipeline").join(KEPT);
    let want2 = want.clone();
    let is_dir = port.artifact.is_dir;
    let kept = tokio::task::spawn_blocking(move || {
        swap_in(&target, &kept_dir, &found, is_dir, &want2, now.as_deref())
    })
    .await??;
    outcome.kept = kept.map(|k| {
        k.strip_prefix(&ws.root)
            .unwrap_or(&k)
            .to_string_lossy()
            .into_owned()
    });
    Ok(outcome)
}

/// For each needed file, a file on disk with its bytes, if any.
type Found = Vec<(String, Option<PathBuf>)>;

fn find_bytes(root: &Path, target: &Path, files: &[(String, u64, blake3::Hash)]) -> Result<Found> {
    let sizes: std::collections::HashSet<u64> = files.iter().map(|f| f.1).collect();
    let mut by_hash: HashMap<blake3::Hash, PathBuf> = HashMap::new();
    let places = [
        target.to_path_buf(),
        root.join(".pipeline").join(KEPT),
        root.join(".pipeline").join("steps"),
        root.join(".pipeline").join("items"),
    ];
    for place in &places {
        if files.iter().all(|f| by_hash.contains_key(&f.2)) {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(place) else {
            continue;
        };
        let listed = if meta.is_file() {
            vec![(place.clone(), meta.len())]
        } else {
            hash::walk::walk(place)?
                .into_iter()
                .map(|(rel, st)| (place.join(rel), st.size))
                .collect()
        };
        for (p, size) in listed {
            if !sizes.contains(&size) {
                continue;
            }
            let Ok(h) = hash::hash_file(&p, size) else {
                continue; // unreadable: not a source
            };
            by_hash.entry(h).or_insert(p);
        }
    }
    Ok(files
        .iter()
        .map(|(rel, _, h)| (rel.clone(), by_hash.get(h).cloned()))
        .collect())
}

/// Assembles the version beside `target`, checks its hash, sets the current
/// version aside under `kept_dir` and moves the assembled one into place.
fn swap_in(
    target: &Path,
    kept_dir: &Path,
    found: &Found,
    is_dir: bool,
    want: &str,
    now: Option<&str>,
) -> Result<Option<PathBuf>> {
    let parent = target
        .parent()
        .context("an artifact path has a parent folder")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staged = parent.join(format!(".{name}.checkout-{}", std::process::id()));
    remove(&staged)?;
    let assemble = || -> Result<()> {
        for (rel, src) in found {
            let src = src.as_ref().context("every file was found")?;
            let dst = if is_dir {
                staged.join(rel)
            } else {
                staged.clone()
            };
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
            }
            std::fs::copy(src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
        if is_dir && found.is_empty() {
            std::fs::create_dir_all(&staged)?;
        }
        let got = hash::hash_path(&staged, None)?
            .map(|(h, _)| h.hash.to_hex().to_string())
            .unwrap_or_default();
        if got != want {
            bail!(
                "the assembled version hashes to {} instead of the recorded {}",
                &got[..16.min(got.len())],
                &want[..16]
            );
        }
        Ok(())
    };
    if let Err(e) = assemble() {
        let _ = remove(&staged);
        return Err(e);
    }
    let kept = match now {
        Some(h) => {
            std::fs::create_dir_all(kept_dir)
                .with_context(|| format!("creating {}", kept_dir.display()))?;
            let k = kept_dir.join(h);
            if k.exists() {
                // That version is set aside already: the copy here is spare.
                remove(target)?;
            } else {
                std::fs::rename(target, &k).with_context(|| {
                    format!("setting {} aside in {}", target.display(), k.display())
                })?;
            }
            Some(k)
        }
        None => None,
    };
    std::fs::rename(&staged, target)
        .with_context(|| format!("moving the restored version into {}", target.display()))?;
    Ok(kept)
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(_) => Ok(()),
    }
}
