//! The Slurm executor of a run: each step a batch job (an array job for a
//! sharded step), followed with one batched query per poll on a backoff, and
//! Slurm's follow-up policy: a requeued job counts an attempt, a preempted or
//! node-failed job is submitted again (up to `max_retries`), a memory kill is
//! named as one, and a job that ended without a result waits a bounded time
//! for a lagging shared file system.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::events::Event;
use super::executor::{Ctx, Executor, Launch, Launched, Settled};
use super::ingest::{fail_step, ingest};
use super::reattach::{count_requeues, Reattach};
use crate::exec::job;
use crate::exec::resources::Resources;
use crate::exec::slurm::{memory_kill_line, JobState, Slurm, Submission};
use crate::store::{StepId, StepStatus};

/// One step's job, as followed.
struct Job {
    stage: String,
    /// What it asks for: `None` for a job re-attached to whose stage is no
    /// longer in the pipeline (it is followed, never resubmitted).
    resources: Option<Resources>,
    job: String,
    /// `Some(n)`: an array job of n shards, gathered on this machine after.
    array: Option<u32>,
    state: Option<JobState>,
    attempts: u32,
    ended_at: Option<Instant>,
    /// Restarts of `job` already counted in `attempts`.
    requeues: u32,
    /// Starts of `job` seen at the previous poll, and after how many it was
    /// reported back in the queue.
    starts_seen: u32,
    told_queued: u32,
}

pub struct SlurmSteps {
    pub slurm: Slurm,
    jobs: BTreeMap<StepId, Job>,
    poll_every: Option<Duration>,
    next_poll: tokio::time::Instant,
}

impl SlurmSteps {
    pub fn new(slurm: Slurm) -> SlurmSteps {
        SlurmSteps {
            slurm,
            jobs: BTreeMap::new(),
            poll_every: None,
            next_poll: tokio::time::Instant::now(),
        }
    }

    /// Follows a job an earlier head submitted.
    pub fn adopt(&mut self, cx: &Ctx<'_>, r: &Reattach, resources: Option<Resources>) {
        let job = Job {
            stage: r.stage.clone(),
            resources,
            job: r.job.clone(),
            // The shard count is the step's own (a sweep's comes from its
            // grid), as its job file says.
            array: job::read_job(&cx.ws.step_dir(r.step))
                .ok()
                .and_then(|j| j.shards),
            state: None,
            attempts: r.attempts,
            ended_at: None,
            requeues: r.requeues,
            starts_seen: 0,
            told_queued: 0,
        };
        self.jobs.insert(r.step, job);
    }

    /// Stops following every job without cancelling it (`--detach`): returns
    /// the steps and their job ids, which stay recorded as running for the
    /// next run to re-attach to.
    pub fn detach(&mut self) -> Vec<(StepId, String)> {
        std::mem::take(&mut self.jobs)
            .into_iter()
            .map(|(step, j)| (step, j.job))
            .collect()
    }

    /// Submits `step` of `stage`; its job id is in the store before this returns.
    async fn submit(
        &self,
        cx: &Ctx<'_>,
        step: StepId,
        stage: &str,
        resources: &Resources,
        array: Option<u32>,
    ) -> Result<String> {
        let exe = std::env::current_exe().context("finding the pipeline binary")?;
        let dir = cx.ws.step_dir(step);
        let name = format!("pipeline.{stage}.{}", step.0);
        let job = self
            .slurm
            .submit(&Submission {
                job_name: &name,
                step_dir: &dir,
                workspace: &cx.ws.root,
                exe: &exe,
                step: step.0,
                resources,
                array,
            })
            .await
            .with_context(|| format!("submitting stage {stage}"))?;
        cx.ws.store.step_submitted(step, &job).await?;
        Ok(job)
    }

    /// What one poll learnt of `j` (the state `now` just queried).
    async fn follow(
        &self,
        cx: &Ctx<'_>,
        step: StepId,
        j: &mut Job,
        now: Option<JobState>,
    ) -> Result<Option<Settled>> {
        let ws = cx.ws;
        if now != j.state {
            if let Some(st) = &now {
                ws.store.set_slurm_state(step, &st.name()).await?;
            }
            j.state = now.clone();
        }
        // Array tasks start in shard folders of their own: not counted.
        if j.array.is_none() {
            let starts = count_requeues(
                ws,
                step,
                &j.stage,
                &j.job,
                &mut j.attempts,
                &mut j.requeues,
                cx.rep,
            )
            .await?;
            // Queued again after it started: said now, counted when it
            // restarts. The start must predate this poll's query, or a job
            // starting between the query and the read would look requeued.
            let queued = matches!(now, Some(JobState::Pending | JobState::Requeued));
            let before = std::mem::replace(&mut j.starts_seen, starts);
            if queued && starts > j.requeues && starts == before && starts > j.told_queued {
                j.told_queued = starts;
                cx.rep.event(Event::Requeued {
                    stage: j.stage.clone(),
                    step,
                    slurm_job: j.job.clone(),
                    restarted: false,
                    attempt: j.attempts,
                });
            }
        }
        if now.as_ref().is_some_and(JobState::is_active) {
            j.ended_at = None;
            return Ok(None);
        }
        let wait = Duration::from_secs_f64(self.slurm.cfg.result_wait_s.max(0.0));
        let dir = ws.step_dir(step);
        let job = &j.job;
        if let Some(n) = j.array {
            let mut failed = Vec::new();
            let mut missing = 0;
            for i in 0..n {
                match job::read_result_of(&dir, Some(i))? {
                    Some(res) if res.succeeded => {}
                    Some(res) => {
                        failed.push(format!("shard {i}: {}", res.error.unwrap_or_default()))
                    }
                    None => missing += 1,
                }
            }
            if failed.is_empty() && missing == 0 {
                return Ok(Some(Settled::Gather));
            }
            if failed.is_empty() && j.ended_at.get_or_insert_with(Instant::now).elapsed() < wait {
                return Ok(None);
            }
            let shown = now
                .as_ref()
                .map(JobState::name)
                .unwrap_or_else(|| "gone from the queue".into());
            let oom = memory_kill_line(&dir, job);
            if oom.is_some() {
                ws.store
                    .set_slurm_state(step, &JobState::OutOfMemory.name())
                    .await?;
            }
            let why = format!(
                "Slurm array job {job} ended {shown}: {} of {n} shards failed, {missing} wrote no result{}{}",
                failed.len(),
                if failed.is_empty() { String::new() } else { format!(" ({})", failed.join("; ")) },
                oom.map(|l| format!(
                    "; a task ran out of memory (OUT_OF_MEMORY; raise the stage's `resources: mem`): {l}"
                ))
                .unwrap_or_default()
            );
            fail_step(ws, step, &why).await?;
            return Ok(Some(Settled::Finished(StepStatus::Failed)));
        }
        if let Some(res) = job::read_result(&dir)? {
            let st = ingest(ws, step, None).await?;
            // The memory cgroup killed the command, not the job: the job's
            // own word is only "killed by signal 9".
            if st == StepStatus::Failed && now == Some(JobState::OutOfMemory) {
                let why = format!(
                    "Slurm job {job} ran out of memory (OUT_OF_MEMORY; raise the stage's \
                     `resources: mem`): {}",
                    res.error.unwrap_or_default()
                );
                ws.store.set_error(step, &why).await?;
            }
            return Ok(Some(Settled::Finished(st)));
        }
        let shown = now
            .as_ref()
            .map(JobState::name)
            .unwrap_or_else(|| "gone from the queue".into());
        let retryable = matches!(now, Some(JobState::Preempted) | Some(JobState::NodeFail));
        if retryable && j.attempts <= self.slurm.cfg.max_retries {
            let resources = j
                .resources
                .as_ref()
                .context("a resubmitted step's stage is no longer in the pipeline")?;
            let new_job = self.submit(cx, step, &j.stage, resources, j.array).await?;
            cx.rep.event(Event::Resubmitted {
                stage: j.stage.clone(),
                step,
                slurm_job: j.job.clone(),
                ended: shown,
                new_job: new_job.clone(),
                attempt: j.attempts + 1,
                max_attempts: self.slurm.cfg.max_retries + 1,
            });
            j.attempts += 1;
            // The new job has not started yet.
            j.requeues = 0;
            j.starts_seen = 0;
            j.told_queued = 0;
            ws.store.set_attempts(step, j.attempts, 0).await?;
            j.job = new_job;
            j.state = None;
            return Ok(Some(Settled::Resubmitted));
        }
        // COMPLETED (or gone) without a result file: wait a bounded time for a
        // lagging shared file system before calling it a failure.
        let waited = j.ended_at.get_or_insert_with(Instant::now).elapsed();
        let failed_state = matches!(
            now,
            Some(
                JobState::Failed
                    | JobState::Timeout
                    | JobState::OutOfMemory
                    | JobState::Cancelled
                    | JobState::NodeFail
                    | JobState::Preempted
            )
        );
        if !failed_state && waited < wait {
            return Ok(None);
        }
        let oom_line = match now {
            Some(JobState::Failed | JobState::Cancelled) => memory_kill_line(&dir, job),
            _ => None,
        };
        if oom_line.is_some() {
            ws.store
                .set_slurm_state(step, &JobState::OutOfMemory.name())
                .await?;
        }
        let why = match (now, oom_line) {
            (_, Some(line)) => format!(
                "Slurm job {job} ran out of memory (OUT_OF_MEMORY: Slurm killed it for \
                 exceeding its memory request; raise the stage's `resources: mem`): {line}"
            ),
            (Some(JobState::Timeout), _) => {
                format!("Slurm job {job} hit its time limit (TIMEOUT)")
            }
            (Some(JobState::OutOfMemory), _) => format!(
                "Slurm job {job} ran out of memory (OUT_OF_MEMORY; raise the stage's \
                 `resources: mem`)"
            ),
            (Some(JobState::Completed), _) => format!(
                "Slurm job {job} COMPLETED but wrote no result file within {:.0} s",
                wait.as_secs_f64()
            ),
            (None, _) => {
                format!("Slurm job {job} left the queue without a result file (state unknown)")
            }
            (Some(st), _) => format!("Slurm job {job} ended {}", st.name()),
        };
        fail_step(ws, step, &why).await?;
        Ok(Some(Settled::Finished(StepStatus::Failed)))
    }
}

impl Executor for SlurmSteps {
    /// A job's threads are its own node's: all it asks for.
    fn threads(&self, r: &Resources) -> usize {
        r.cpus as usize
    }

    /// The cluster queues what it cannot run yet.
    fn has_room(&self, _: &Resources) -> bool {
        true
    }

    async fn spawn(&mut self, cx: &Ctx<'_>, l: &Launch<'_>) -> Result<Launched> {
        let job = self
            .submit(cx, l.step, l.stage, l.resources, l.shards)
            .await?;
        // A new job: poll soon, then back off again.
        self.poll_every = None;
        self.next_poll = tokio::time::Instant::now() + self.slurm.backoff(None);
        self.jobs.insert(
            l.step,
            Job {
                stage: l.stage.to_string(),
                resources: Some(l.resources.clone()),
                job: job.clone(),
                array: l.shards,
                state: None,
                attempts: 1,
                ended_at: None,
                requeues: 0,
                starts_seen: 0,
                told_queued: 0,
            },
        );
        Ok(Launched {
            pid: None,
            slurm_job: Some(job),
        })
    }

    fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    async fn ready(&mut self) {
        tokio::time::sleep_until(self.next_poll).await;
    }

    /// One batched query for every job; settles those that ended.
    async fn poll(&mut self, cx: &Ctx<'_>) -> Result<Vec<(StepId, Settled)>> {
        let every = self.slurm.backoff(self.poll_every);
        self.poll_every = Some(every);
        self.next_poll = tokio::time::Instant::now() + every;
        let ids: Vec<String> = self.jobs.values().map(|j| j.job.clone()).collect();
        let states = self.slurm.query(&ids).await?;
        let mut jobs = std::mem::take(&mut self.jobs);
        let mut out = Vec::new();
        let mut result = Ok(());
        for (&step, j) in jobs.iter_mut() {
            let now = states.get(j.job.as_str()).cloned();
            match self.follow(cx, step, j, now).await {
                Ok(Some(settled)) => out.push((step, settled)),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // A job no longer followed here: ended, or handed to the gathering step.
        jobs.retain(|step, _| {
            !out.iter()
                .any(|(s, settled)| s == step && *settled != Settled::Resubmitted)
        });
        self.jobs = jobs;
        result.map(|()| out)
    }

    /// One `scancel` for every job followed.
    async fn cancel(&mut self) -> Vec<StepId> {
        let ids: Vec<String> = self.jobs.values().map(|j| j.job.clone()).collect();
        if let Err(e) = self.slurm.cancel(&ids).await {
            tracing::warn!("cancelling the run's Slurm jobs: {e:#}");
        }
        std::mem::take(&mut self.jobs).into_keys().collect()
    }
}
