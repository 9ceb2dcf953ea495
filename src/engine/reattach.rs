//! What an earlier head process left behind: its local steps (still running,
//! finished with a result file waiting, or gone) and its Slurm jobs, which a
//! new run follows instead of submitting again.

use std::time::Duration;

use anyhow::Result;

use super::events::{Event, Reporter};
use super::ingest::ingest;
use super::workspace::Workspace;
use crate::exec::job;
use crate::exec::slurm::{ClusterConfig, Slurm};
use crate::store::{StepId, StepStatus};
use crate::util::process_alive;

/// A Slurm job of an earlier head process, still to be followed.
pub struct Reattach {
    pub step: StepId,
    pub stage: String,
    pub job: String,
    /// Attempts recorded so far (resubmissions and requeues).
    pub attempts: u32,
    /// Restarts of `job` already counted in `attempts`.
    pub requeues: u32,
}

/// The process of a local step on this host: the job's own pid file (which
/// covers a head that died before recording the pid), else the recorded pid.
/// `None` for a step on another host or one that never started.
pub fn local_process(ws: &Workspace, s: &crate::store::StepRecord) -> Option<(u32, Option<i64>)> {
    let here = crate::util::hostname();
    job::read_pid(&ws.step_dir(s.id))
        .filter(|(_, _, host)| *host == here)
        .map(|(pid, start, _)| (pid, Some(start)))
        .or_else(|| {
            (s.host.as_deref() == Some(here.as_str()))
                .then_some(s.pid.map(|p| (p as u32, s.pid_start)))
                .flatten()
        })
}

/// Whether an unfinished local step still has a live process here: its job,
/// or the head that started it (which may not have launched the job yet).
/// `None` when this host cannot tell (a Slurm job, a step on another host).
pub async fn local_step_alive(
    ws: &Workspace,
    s: &crate::store::StepRecord,
) -> Result<Option<bool>> {
    if s.slurm_job_id.is_some() {
        return Ok(None);
    }
    if s.host
        .as_deref()
        .is_some_and(|h| h != crate::util::hostname())
    {
        return Ok(None);
    }
    let job = local_process(ws, s).is_some_and(|(p, st)| process_alive(p, st));
    Ok(Some(job || ws.store.lock_holder_alive_here().await?))
}

/// Finishes what a previous head process left: ingests result files of jobs
/// that ended, waits for local jobs still running, marks the rest
/// interrupted, and returns the Slurm jobs still queued or running so the run
/// follows them instead of submitting them again.
pub async fn recover(
    ws: &Workspace,
    slurm: Option<&Slurm>,
    rep: &dyn Reporter,
) -> Result<Vec<Reattach>> {
    let mut follow = Vec::new();
    let unfinished = ws.store.unfinished_steps().await?;
    let jobs: Vec<String> = unfinished
        .iter()
        .filter_map(|s| s.slurm_job_id.clone())
        .collect();
    let states = match (slurm, jobs.is_empty()) {
        (Some(sl), false) => sl.query(&jobs).await?,
        (None, false) => Slurm::new(ClusterConfig::default())
            .query(&jobs)
            .await
            .unwrap_or_default(),
        _ => Default::default(),
    };
    for s in unfinished {
        let dir = ws.step_dir(s.id);
        if let Some(job) = &s.slurm_job_id {
            if states.get(job).is_some_and(|st| st.is_active()) {
                rep.event(Event::Reattached {
                    stage: s.stage.clone(),
                    step: s.id,
                    slurm_job: Some(job.clone()),
                    slurm_state: Some(states[job].name()),
                    pid: None,
                });
                follow.push(Reattach {
                    step: s.id,
                    stage: s.stage.clone(),
                    job: job.clone(),
                    attempts: u32::try_from(s.attempts).unwrap_or(1).max(1),
                    requeues: u32::try_from(s.slurm_requeues).unwrap_or(0),
                });
                continue;
            }
        } else {
            if let Some((pid, start)) =
                local_process(ws, &s).filter(|(p, st)| process_alive(*p, *st))
            {
                rep.event(Event::Reattached {
                    stage: s.stage.clone(),
                    step: s.id,
                    slurm_job: None,
                    slurm_state: None,
                    pid: Some(pid),
                });
                while process_alive(pid, start) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Some(job) = &s.slurm_job_id {
            // Requeues that ran while no head watched count as attempts too.
            let mut attempts = u32::try_from(s.attempts).unwrap_or(1).max(1);
            let mut requeues = u32::try_from(s.slurm_requeues).unwrap_or(0);
            let name = &s.stage;
            count_requeues(ws, s.id, name, job, &mut attempts, &mut requeues, rep).await?;
        }
        if job::read_result(&dir)?.is_some() {
            let st = ingest(ws, s.id, None).await?;
            rep.event(Event::RecordedLate {
                stage: s.stage.clone(),
                step: s.id,
                status: st,
            });
        } else {
            ws.store
                .mark_step(
                    s.id,
                    StepStatus::Interrupted,
                    "the head process stopped before the step finished",
                )
                .await?;
            rep.event(Event::Interrupted {
                stage: s.stage.clone(),
                step: s.id,
                why: "interrupted when its head process stopped; it runs again if still needed"
                    .into(),
            });
        }
    }
    Ok(follow)
}

/// A job Slurm puts back in the queue after it started (scontrol requeue, a
/// node failure or preemption with requeue) starts again under the same id,
/// and each start appends to the step's starts file: every restart not yet
/// counted in `requeues` is an attempt, also one that happened while no head
/// process was watching. Returns how many times the job has started.
pub(crate) async fn count_requeues(
    ws: &Workspace,
    step: StepId,
    name: &str,
    job: &str,
    attempts: &mut u32,
    requeues: &mut u32,
    rep: &dyn Reporter,
) -> Result<u32> {
    let starts = job::starts_of(&ws.step_dir(step), job);
    let seen = starts.saturating_sub(1);
    if seen > *requeues {
        *attempts += seen - *requeues;
        *requeues = seen;
        ws.store.set_attempts(step, *attempts, *requeues).await?;
        rep.event(Event::Requeued {
            stage: name.to_string(),
            step,
            slurm_job: job.to_string(),
            restarted: true,
            attempt: *attempts,
        });
    }
    Ok(starts)
}
