//! `pipeline gc`: removes what no recorded artifact, live step or resume
//! needs: staging folders of finished steps, the folders of steps superseded
//! by a newer step of their stage that made no current artifact, and item
//! memos whose output is recorded (or whose stage the store does not know).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::recover::step_folders;
use super::workspace::Workspace;
use crate::exec::job;
use crate::store::{StepId, StepStatus};

/// One thing `gc` would remove.
#[derive(Debug)]
pub struct Garbage {
    pub path: PathBuf,
    pub bytes: u64,
    pub why: String,
}

/// What can go, with sizes; removes nothing.
pub async fn find(ws: &Workspace) -> Result<Vec<Garbage>> {
    let mut out = Vec::new();
    let current: BTreeSet<i64> = ws
        .store
        .produced_artifacts()
        .await?
        .iter()
        .filter_map(|a| a.step_id)
        .collect();
    let mut newest: HashMap<String, Option<i64>> = HashMap::new();
    let known = ws.store.step_ids().await?;
    for id in step_folders(&ws.state_dir()) {
        if !known.contains(&id) {
            continue; // `pipeline recover` owns those.
        }
        let s = ws.store.step(StepId(id)).await?;
        if !s.status.is_finished() {
            continue;
        }
        let dir = ws.step_dir(s.id);
        if !newest.contains_key(&s.stage) {
            let n = ws.store.latest_step(&s.stage).await?.map(|l| l.id.0);
            newest.insert(s.stage.clone(), n);
        }
        let is_newest = newest[&s.stage] == Some(id);
        // An unfinished training's checkpoints stay until its work succeeded.
        let resumable = matches!(s.status, StepStatus::Failed | StepStatus::Interrupted)
            && dir.join("checkpoints").exists()
            && !ws
                .store
                .succeeded_with_key(&s.stage, &s.fingerprint)
                .await?;
        if !is_newest && !current.contains(&id) && !resumable {
            out.push(Garbage {
                bytes: crate::util::bytes_under(&dir),
                path: dir,
                why: format!(
                    "step {id} ({}, {}): a newer step of its stage ran, and no current \
                     artifact is its output",
                    s.stage,
                    s.status.as_str()
                ),
            });
            continue;
        }
        let staging = dir.join("staging");
        if staging.exists() {
            out.push(Garbage {
                bytes: crate::util::bytes_under(&staging),
                path: staging,
                why: format!("the staging folder of finished step {id} ({})", s.stage),
            });
        }
    }
    let items = ws.state_dir().join("items");
    for e in std::fs::read_dir(&items).into_iter().flatten().flatten() {
        let stage = e.file_name().to_string_lossy().into_owned();
        let why = match ws.store.latest_step(&stage).await? {
            None => Some(format!("the memo of stage {stage}, which never ran here")),
            Some(s) if s.status == StepStatus::Succeeded => {
                // A step written before `keep_memo` existed: its kind's default.
                let keep = match job::read_job(&ws.step_dir(s.id)) {
                    Ok(j) => j
                        .keep_memo
                        .unwrap_or_else(|| super::pipeline::keeps_memo_by_default(&s.kind)),
                    Err(_) => true,
                };
                (!keep).then(|| {
                    format!(
                        "the memo of stage {stage}, whose output step {} recorded",
                        s.id
                    )
                })
            }
            // Live, or left unfinished: its items let the next step go on.
            Some(_) => None,
        };
        if let Some(why) = why {
            out.push(Garbage {
                bytes: crate::util::bytes_under(&e.path()),
                path: e.path(),
                why,
            });
        }
    }
    Ok(out)
}

/// Removes what `find` listed.
pub fn remove(garbage: &[Garbage]) -> Result<()> {
    for g in garbage {
        let r = if g.path.is_dir() {
            std::fs::remove_dir_all(&g.path)
        } else {
            std::fs::remove_file(&g.path)
        };
        r.with_context(|| format!("removing {}", g.path.display()))?;
    }
    Ok(())
}
