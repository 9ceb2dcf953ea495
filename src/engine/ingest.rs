//! Reading a finished step's result file into the store: its outputs with
//! their hashes and stat entries, its end (status, error, exit code, times,
//! peak memory), and its memo dropped once recorded unless the stage keeps it.

use anyhow::{Context, Result};

use super::workspace::Workspace;
use crate::exec::job;
use crate::hash::statcache;
use crate::store::{ArtifactVersion, StepEnd, StepId, StepStatus};
use crate::util::now_ms;

/// Reads a step's result file into the store. Returns the step's final status.
pub async fn ingest(
    ws: &Workspace,
    id: StepId,
    exit: Option<std::process::ExitStatus>,
) -> Result<StepStatus> {
    let dir = ws.step_dir(id);
    let stage = ws.store.step(id).await?.stage;
    let Some(r) = job::read_result(&dir)? else {
        let why = match exit {
            Some(e) => format!(
                "the job ended ({e}) without writing its result; see `pipeline log {stage}`"
            ),
            None => "the job ended without writing its result".to_string(),
        };
        let end = StepEnd {
            status: StepStatus::Failed,
            exit_code: exit.and_then(|e| e.code()),
            error: Some(&why),
            started_at: None,
            finished_at: now_ms(),
            peak_rss_kb: None,
            host: None,
        };
        ws.store.finish_step(id, &end, &[]).await?;
        return Ok(StepStatus::Failed);
    };
    let mut entries = Vec::new();
    if r.succeeded {
        for o in &r.outputs {
            let blob = std::fs::read(dir.join(&o.entries_file))
                .with_context(|| format!("reading the output listing of step {id}"))?;
            entries.push(statcache::decode_stat(&blob)?);
        }
    }
    let outputs: Vec<(String, ArtifactVersion)> = r
        .outputs
        .iter()
        .zip(entries.iter())
        .map(|(o, e)| {
            (
                o.name.clone(),
                ArtifactVersion {
                    path: &o.path,
                    hash: &o.hash,
                    size: o.size,
                    is_dir: o.is_dir,
                    entries: e,
                },
            )
        })
        .collect();
    let status = if r.succeeded {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    let end = StepEnd {
        status,
        exit_code: r.exit_code,
        error: r.error.as_deref(),
        started_at: Some(r.started_at),
        finished_at: r.finished_at,
        peak_rss_kb: r.peak_rss_kb,
        host: Some(&r.host),
    };
    ws.store.finish_step(id, &end, &outputs).await?;
    if status == StepStatus::Succeeded {
        keep_metrics(ws, id, &r.outputs).await?;
    }
    if status == StepStatus::Succeeded
        && !job::read_job(&dir).is_ok_and(|j| j.keep_memo != Some(false))
    {
        // The output now holds what the memo held.
        let memo = ws.items_dir(&stage);
        if memo.exists() {
            std::fs::remove_dir_all(&memo)
                .with_context(|| format!("removing the memo {}", memo.display()))?;
        }
    }
    Ok(status)
}

/// Records a step that ended without a result of its own.
pub async fn fail_step(ws: &Workspace, step: StepId, why: &str) -> Result<()> {
    let end = StepEnd {
        status: StepStatus::Failed,
        exit_code: None,
        error: Some(why),
        started_at: None,
        finished_at: now_ms(),
        peak_rss_kb: None,
        host: None,
    };
    ws.store.finish_step(step, &end, &[]).await
}

/// The name of the file whose numbers `pipeline metrics diff` compares.
pub const METRICS_FILE: &str = "metrics.json";
/// A metrics file larger than this is not kept (it is not a summary).
const METRICS_MAX_BYTES: u64 = 4 << 20;

/// Keeps each `metrics.json` among a step's outputs (an output of that name,
/// or one at the top of an output folder) in the store.
async fn keep_metrics(ws: &Workspace, id: StepId, outputs: &[job::OutputResult]) -> Result<()> {
    for o in outputs {
        let rel = if o.is_dir {
            format!("{}/{METRICS_FILE}", o.path.as_str())
        } else if o.path.as_str().rsplit('/').next() == Some(METRICS_FILE) {
            o.path.as_str().to_string()
        } else {
            continue;
        };
        let file = ws.root.join(&rel);
        if !std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() <= METRICS_MAX_BYTES) {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        if serde_json::from_str::<serde_json::Value>(&text).is_err() {
            tracing::warn!("{rel} is not JSON: not kept as metrics");
            continue;
        }
        ws.store.put_metrics(id, &rel, &text).await?;
    }
    Ok(())
}
