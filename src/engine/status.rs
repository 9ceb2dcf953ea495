//! What `pipeline status` shows, typed: one row per stage (its verdict, the
//! step running it or gone, the last step recorded) and the last run. The
//! terminal table and `status --json` are both made from these rows.

use anyhow::Result;
use serde::Serialize;

use super::dag::Dag;
use super::plan::{Planner, Reason, Verdict};
use super::reattach::local_step_alive;
use super::run::{evaluate_all, selection};
use super::workspace::Workspace;
use crate::exec::job::{self, Progress};
use crate::store::{StepId, StepRecord, StepStatus};

/// One stage as `status` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct StageRow {
    pub stage: String,
    pub kind: String,
    /// `up_to_date`, `frozen`, `stale`, `may_run`, `invalid` or `blocked`.
    pub state: String,
    /// Why a stale stage runs, typed.
    pub reasons: Vec<Reason>,
    /// The same, or why it cannot run, as sentences.
    pub why: Vec<String>,
    /// The stages above that cannot run, for a blocked stage.
    pub blocked_by: Option<Vec<String>>,
    /// A step recorded running whose processes are all gone.
    pub gone: Option<GoneStep>,
    pub running: Option<RunningStep>,
    pub last_step: Option<LastStep>,
}

/// How a step recorded running, with no live process left, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoneAs {
    /// Its result file waits for the next run to record it.
    Finished,
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct GoneStep {
    pub step: StepId,
    #[serde(rename = "as")]
    pub gone_as: GoneAs,
    pub pid: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunningStep {
    pub step: StepId,
    pub status: StepStatus,
    pub pid: Option<i64>,
    pub slurm_job_id: Option<String>,
    pub slurm_state: Option<String>,
    /// Items done so far, from its progress file.
    pub progress: Option<Progress>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastStep {
    pub step: StepId,
    pub status: StepStatus,
    pub executor: String,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub slurm_job_id: Option<String>,
    pub slurm_state: Option<String>,
    pub attempts: i64,
}

/// The workspace's last run.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub run: i64,
    pub executor: String,
    pub status: String,
    pub slurm_calls: i64,
}

impl StageRow {
    /// Whether the stage cannot run (an invalid parameter, a stage above it
    /// that cannot run): an error to fix, not a state to wait out.
    pub fn cannot_run(&self) -> bool {
        matches!(self.state.as_str(), "invalid" | "blocked")
    }
}

/// Every stage's row, in topological order.
pub async fn stage_rows(ws: &Workspace, dag: &Dag, profile: &str) -> Result<Vec<StageRow>> {
    let sel = selection(dag, None, &[])?;
    let mut planner = Planner::new(ws, dag, profile);
    let evs = evaluate_all(&mut planner, &sel, &Default::default()).await?;
    let mut rows = Vec::with_capacity(evs.len());
    for ev in evs {
        let spec = &dag.stages()[ev.stage];
        let latest = ws.store.latest_step(&spec.name).await?;
        let running = latest.as_ref().filter(|s| !s.status.is_finished());
        // A step recorded running whose processes are all gone is not shown
        // as running: it finished (its result file waits for the next run to
        // record it) or it was interrupted.
        let gone = match running {
            Some(s) if local_step_alive(ws, s).await? == Some(false) => {
                let finished = job::read_result(&ws.step_dir(s.id))
                    .ok()
                    .flatten()
                    .is_some();
                Some(GoneStep {
                    step: s.id,
                    gone_as: if finished {
                        GoneAs::Finished
                    } else {
                        GoneAs::Interrupted
                    },
                    pid: s.pid,
                })
            }
            _ => None,
        };
        let running = running.filter(|_| gone.is_none()).map(|s| RunningStep {
            step: s.id,
            status: s.status,
            pid: s.pid,
            slurm_job_id: s.slurm_job_id.clone(),
            slurm_state: s.slurm_state.clone(),
            progress: Progress::of_step(&ws.step_dir(s.id)),
        });
        rows.push(StageRow {
            stage: spec.name.clone(),
            kind: spec.kind_name().to_string(),
            state: ev.verdict.state().to_string(),
            reasons: match &ev.verdict {
                Verdict::Stale { reasons } => reasons.clone(),
                _ => Vec::new(),
            },
            why: ev.verdict.why(),
            blocked_by: match ev.verdict {
                Verdict::Blocked { by } => Some(by),
                _ => None,
            },
            gone,
            running,
            last_step: latest.as_ref().map(LastStep::of),
        });
    }
    Ok(rows)
}

impl LastStep {
    fn of(s: &StepRecord) -> LastStep {
        LastStep {
            step: s.id,
            status: s.status,
            executor: s.executor.clone(),
            finished_at: s.finished_at,
            error: s.error.clone(),
            slurm_job_id: s.slurm_job_id.clone(),
            slurm_state: s.slurm_state.clone(),
            attempts: s.attempts,
        }
    }
}

/// The workspace's last run, if any.
pub async fn last_run(ws: &Workspace) -> Result<Option<LastRun>> {
    Ok(ws
        .store
        .latest_run()
        .await?
        .map(|(run, executor, status, slurm_calls)| LastRun {
            run,
            executor,
            status,
            slurm_calls,
        }))
}
