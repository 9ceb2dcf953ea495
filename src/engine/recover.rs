//! A lost, emptied or damaged store is noticed, never silently restarted, and
//! `pipeline recover` rebuilds it from the step folders: each folder's
//! `job.json` holds the step's row as the head recorded it, and its
//! `result.json` the outputs' hashes, which are checked against the disk.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ingest::ingest;
use super::workspace::Workspace;
use crate::exec::job::{self, JobAction};
use crate::hash;
use crate::store::{ArtifactVersion, NewRun, NewStep, RunStatus, StepId, StepStatus, Store};

/// The ids of the step folders under `.pipeline/steps`.
pub fn step_folders(state: &Path) -> BTreeSet<i64> {
    std::fs::read_dir(state.join("steps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .collect()
}

/// Fails, saying what to do, when step folders exist that the store does not
/// know (it was deleted, emptied, or replaced by an older copy).
pub async fn check_store_knows_folders(state: &Path, db: &Path, store: &Store) -> Result<()> {
    let folders = step_folders(state);
    if folders.is_empty() {
        return Ok(());
    }
    let known = store.step_ids().await?;
    let unknown = folders.difference(&known).count();
    if unknown == 0 {
        return Ok(());
    }
    let what = if known.is_empty() {
        "holds no steps (it was deleted or emptied)".to_string()
    } else {
        format!("lacks {unknown} of them (it is older than they are)")
    };
    anyhow::bail!(
        "the store {} {what}, but {} holds {} step folders; nothing was changed. \
         Run `pipeline recover` to rebuild the store from the step folders",
        db.display(),
        state.join("steps").display(),
        folders.len()
    )
}

/// Why a store file could not be used, when it could not.
pub async fn unusable(db: &Path) -> Option<String> {
    if !db.exists() {
        return None;
    }
    match Store::open(db).await {
        Err(e) => Some(format!("{e:#}")),
        Ok(s) => {
            let check = s.integrity_check().await;
            s.close().await;
            match check {
                Ok(r) if r == "ok" => None,
                Ok(r) => Some(r),
                Err(e) => Some(format!("{e:#}")),
            }
        }
    }
}

/// What `recover` did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub succeeded: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Folders without a readable `job.json`: their ids are reserved.
    pub unreadable: Vec<i64>,
    /// Steps whose folder predates `job.json`'s record: rebuilt, but stale.
    pub without_record: Vec<i64>,
    pub outputs_checked: usize,
    /// Outputs whose bytes are no longer those the step wrote.
    pub outputs_changed: Vec<String>,
}

/// Moves a damaged store (and its WAL files) aside as `state.db.damaged-<ms>`.
pub fn keep_aside(db: &Path) -> Result<PathBuf> {
    let stamp = crate::util::now_ms();
    let aside = db.with_file_name(format!("state.db.damaged-{stamp}"));
    std::fs::rename(db, &aside)
        .with_context(|| format!("moving the damaged store {} aside", db.display()))?;
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", db.display()));
        if side.exists() {
            let to = PathBuf::from(format!("{}{ext}", aside.display()));
            std::fs::rename(&side, &to)
                .with_context(|| format!("moving {} aside", side.display()))?;
        }
    }
    Ok(aside)
}

/// Rebuilds every step the store lacks from its folder, under the folder's
/// id, so new steps never reuse an old folder.
pub async fn recover(ws: &Workspace) -> Result<Recovered> {
    let mut out = Recovered::default();
    let known = ws.store.step_ids().await?;
    let missing: Vec<i64> = step_folders(&ws.state_dir())
        .into_iter()
        .filter(|i| !known.contains(i))
        .collect();
    if missing.is_empty() {
        return Ok(out);
    }
    let run = ws
        .store
        .begin_run(&NewRun {
            command: "pipeline recover",
            profile: "",
            executor: "local",
        })
        .await?;
    for id in missing {
        let dir = ws.step_dir(StepId(id));
        let spec = match job::read_job(&dir) {
            Ok(j) => j,
            Err(_) => {
                reserve(ws, run, id).await?;
                out.unreadable.push(id);
                continue;
            }
        };
        let fallback_kind = match &spec.action {
            JobAction::Builtin { kind } => kind.clone(),
            JobAction::Command { .. } => "cmd".to_string(),
        };
        let command = match &spec.action {
            JobAction::Command { cmd, .. } => Some(cmd.clone()),
            JobAction::Builtin { .. } => None,
        };
        let rec = spec.record.clone();
        if rec.is_none() {
            out.without_record.push(id);
        }
        // An input is found by the hash the head recorded; a source the
        // store does not know is described by the disk when it still holds
        // those bytes. Through the stat cache: an input many steps read is
        // read once.
        let mut current = Vec::new();
        for (name, path) in &spec.inputs {
            let Some(hex) = spec.input_hashes.get(name) else {
                continue;
            };
            let now = ws.hash(path).await?;
            let now = now.filter(|(h, _)| h.hash.to_hex().as_str() == hex.as_str());
            current.push((name.clone(), path.clone(), hex.clone(), now));
        }
        let inputs: Vec<(String, ArtifactVersion)> = current
            .iter()
            .map(|(name, path, hex, now)| {
                (
                    name.clone(),
                    ArtifactVersion {
                        path,
                        hash: hex,
                        size: now.as_ref().map_or(0, |(h, _)| h.size),
                        is_dir: now.as_ref().is_some_and(|(h, _)| h.is_dir),
                        entries: now.as_ref().map_or(&[], |(h, _)| &h.entries),
                    },
                )
            })
            .collect();
        let unknown = "(recovered without its record)".to_string();
        let new = NewStep {
            run,
            stage: &spec.stage,
            kind: rec
                .as_ref()
                .map_or(fallback_kind.as_str(), |r| r.kind.as_str()),
            // A step without its record cannot be matched to a stage's
            // current key: it is kept for lineage and reruns when needed.
            fingerprint: rec
                .as_ref()
                .map_or(unknown.as_str(), |r| r.fingerprint.as_str()),
            code_version: rec
                .as_ref()
                .map_or(unknown.as_str(), |r| r.code_version.as_str()),
            command: rec
                .as_ref()
                .map_or(command.as_deref(), |r| r.command.as_deref()),
            params_json: &rec
                .as_ref()
                .map_or_else(|| spec.params.to_string(), |r| r.params_json.clone()),
            env_json: rec.as_ref().map_or("{}", |r| r.env_json.as_str()),
            outs_json: rec.as_ref().map_or("{}", |r| r.outs_json.as_str()),
            reason: rec.as_ref().map_or("", |r| r.reason.as_str()),
            executor: rec.as_ref().map_or("local", |r| r.executor.as_str()),
        };
        ws.store
            .insert_step_as(Some(StepId(id)), &new, &inputs)
            .await?;
        match job::read_result(&dir)? {
            Some(r) => {
                match ingest(ws, StepId(id), None).await? {
                    StepStatus::Succeeded => out.succeeded += 1,
                    _ => out.failed += 1,
                }
                if r.succeeded {
                    for o in &r.outputs {
                        out.outputs_checked += 1;
                        let abs = ws.root.join(&o.path);
                        let now = tokio::task::spawn_blocking(move || hash::hash_path(&abs, None))
                            .await??;
                        if now.map(|(h, _)| h.hash.to_hex().to_string()).as_deref()
                            != Some(o.hash.as_str())
                        {
                            out.outputs_changed.push(o.path.to_string());
                        }
                    }
                }
            }
            None => {
                ws.store
                    .mark_step(
                        StepId(id),
                        StepStatus::Interrupted,
                        "recovered from its folder: it never wrote its result",
                    )
                    .await?;
                out.interrupted += 1;
            }
        }
    }
    ws.store.finish_run(run, RunStatus::Succeeded).await?;
    Ok(out)
}

/// Records a folder that cannot be read as an interrupted step, so its id is
/// never given to a new step.
async fn reserve(ws: &Workspace, run: crate::store::RunId, id: i64) -> Result<()> {
    let new = NewStep {
        run,
        stage: "(unreadable step folder)",
        kind: "unknown",
        fingerprint: "",
        code_version: "",
        command: None,
        params_json: "{}",
        env_json: "{}",
        outs_json: "{}",
        reason: "",
        executor: "local",
    };
    ws.store.insert_step_as(Some(StepId(id)), &new, &[]).await?;
    ws.store
        .mark_step(
            StepId(id),
            StepStatus::Interrupted,
            "recovered: its folder holds no readable job.json",
        )
        .await
}
