//! The scheduler of one run: launches each selected stage once its upstream
//! has settled (re-evaluating it then, for early cut-off), hands it to its
//! executor, settles what the executors report, and on a signal or an error
//! stops every step it started and closes the run row.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::check::Preflight;
use super::dag::Dag;
use super::events::{Event, Reporter, Summary};
use super::executor::{Ctx, Executor, Launch, Settled};
use super::ingest::fail_step;
use super::local_steps::LocalSteps;
use super::pipeline::{Action, StageSpec};
use super::plan::{Evaluation, Planner, Reason, Verdict};
use super::reattach::Reattach;
use super::run::{ExecutorKind, RunOptions};
use super::slurm_steps::SlurmSteps;
use super::workspace::Workspace;
use crate::exec::job::{self, JobAction, JobOutput, JobSpec};
use crate::exec::slurm::Slurm;
use crate::store::{ArtifactVersion, NewRun, NewStep, RunId, RunStatus, StepId, StepStatus};

/// How often the head reads its running steps' progress files.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Blocked,
}

/// A step the run follows, through either executor.
struct Running {
    /// `None`: a re-attached step whose stage is no longer in the pipeline.
    stage: Option<usize>,
    name: String,
    started: Instant,
}

pub struct Scheduler<'a> {
    ws: &'a Workspace,
    dag: &'a Dag,
    opts: &'a RunOptions,
    rep: &'a dyn Reporter,
    planner: Planner<'a>,
    sel: Vec<usize>,
    force: BTreeSet<usize>,
    run_id: RunId,
    state: BTreeMap<usize, State>,
    running: BTreeMap<StepId, Running>,
    local: LocalSteps,
    slurm: SlurmSteps,
    summary: Summary,
    /// After a failure without `--keep-going`: nothing new starts.
    stop_launching: bool,
    progress_seen: HashMap<StepId, job::Progress>,
    /// The checks before a submission to Slurm.
    preflight: Preflight,
}

/// What a run was asked to do: its planner, the selected stages in
/// topological order and those forced to run.
pub struct Plan<'a> {
    pub planner: Planner<'a>,
    pub sel: Vec<usize>,
    pub force: BTreeSet<usize>,
}

impl<'a> Scheduler<'a> {
    /// Opens the run's row and takes over the Slurm jobs `reattach` lists.
    pub async fn new(
        ws: &'a Workspace,
        dag: &'a Dag,
        opts: &'a RunOptions,
        rep: &'a dyn Reporter,
        Plan {
            planner,
            sel,
            force,
        }: Plan<'a>,
        slurm: Slurm,
        reattach: Vec<Reattach>,
    ) -> Result<Scheduler<'a>> {
        let local = LocalSteps::new(&ws.root, opts.jobs)?;
        let run_id = ws
            .store
            .begin_run(&NewRun {
                command: &opts.command_line,
                profile: &opts.profile,
                executor: opts.executor.as_str(),
            })
            .await?;
        let preflight = Preflight::new(opts, &sel, &force);
        let mut s = Scheduler {
            ws,
            dag,
            opts,
            rep,
            planner,
            state: sel.iter().map(|&i| (i, State::Waiting)).collect(),
            sel,
            force,
            run_id,
            running: BTreeMap::new(),
            local,
            slurm: SlurmSteps::new(slurm),
            summary: Summary::default(),
            stop_launching: false,
            progress_seen: HashMap::new(),
            preflight,
        };
        let cx = s.cx();
        for r in reattach {
            let stage = dag.index(&r.stage);
            if let Some(i) = stage.filter(|i| s.state.contains_key(i)) {
                s.state.insert(i, State::Running);
            }
            let resources = stage.map(|i| dag.stages()[i].resources.clone());
            s.slurm.adopt(&cx, &r, resources);
            s.running.insert(
                r.step,
                Running {
                    stage,
                    name: r.stage,
                    started: Instant::now(),
                },
            );
        }
        Ok(s)
    }

    fn cx(&self) -> Ctx<'a> {
        Ctx {
            ws: self.ws,
            rep: self.rep,
        }
    }

    /// Runs until every selected stage settled, a signal stops the run or an
    /// error does; the run row is closed either way.
    pub async fn execute(mut self) -> Result<Summary> {
        let stopped = match self.drive().await {
            Ok(Some((sig, name))) => {
                let why = format!("interrupted by {name}");
                self.rep.event(Event::Stopping { why: why.clone() });
                if self.opts.detach {
                    let kept = self.slurm.detach();
                    for (step, _) in &kept {
                        self.running.remove(step);
                    }
                    if !kept.is_empty() {
                        self.rep.event(Event::Detached {
                            slurm_jobs: kept.into_iter().map(|(_, job)| job).collect(),
                        });
                    }
                }
                self.summary.interrupted = Some(sig);
                match self.stop(&why).await {
                    Ok(()) => {
                        self.close(RunStatus::Interrupted).await?;
                        return Ok(self.summary);
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = stopped {
            if !self.running.is_empty() {
                self.rep.event(Event::Stopping {
                    why: format!("after an error: {e:#}"),
                });
            }
            let why = format!("stopped: the run failed ({e:#})");
            if let Err(stop) = self.stop(&why).await {
                tracing::warn!("stopping the steps after an error: {stop:#}");
            }
            if let Err(close) = self.close(RunStatus::Failed).await {
                tracing::warn!("closing the run after an error: {close:#}");
            }
            return Err(e);
        }
        self.block_the_rest();
        let status = if self.summary.failed.is_empty() && self.summary.blocked.is_empty() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        self.close(status).await?;
        Ok(self.summary)
    }

    /// The main loop. Returns the signal that stopped it, if one did.
    async fn drive(&mut self) -> Result<Option<(i32, &'static str)>> {
        let mut next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
        let stop = stop_signal();
        tokio::pin!(stop);
        loop {
            if !self.stop_launching {
                self.launch_ready().await?;
            }
            if self.running.is_empty() {
                return Ok(None);
            }
            let cx = self.cx();
            let settled = tokio::select! {
                _ = tokio::time::sleep_until(next_progress) => {
                    next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
                    self.report_progress();
                    Vec::new()
                }
                _ = self.local.ready(), if self.local.busy() => self.local.poll(&cx).await?,
                _ = self.slurm.ready(), if self.slurm.busy() => self.slurm.poll(&cx).await?,
                sig = &mut stop => return Ok(Some(sig)),
            };
            for (step, s) in settled {
                match s {
                    Settled::Finished(status) => self.finished(step, status).await?,
                    Settled::Resubmitted => {}
                    Settled::Gather => {
                        let name = &self
                            .running
                            .get(&step)
                            .context("an unknown step gathered")?
                            .name;
                        self.local.gather(&cx, step)?;
                        self.rep.event(Event::Note {
                            text: format!("{name}: every shard finished; gathering here"),
                        });
                    }
                }
            }
        }
    }

    /// Starts every waiting stage whose upstream is settled, while slots last.
    async fn launch_ready(&mut self) -> Result<()> {
        for idx in 0..self.sel.len() {
            let i = self.sel[idx];
            if self.state[&i] != State::Waiting {
                continue;
            }
            let dag = self.dag;
            let ups: Vec<usize> = dag
                .upstream(i)
                .into_iter()
                .filter(|u| self.state.contains_key(u))
                .collect();
            let spec = &dag.stages()[i];
            if let Some(&bad) = ups
                .iter()
                .find(|u| matches!(self.state[u], State::Failed | State::Blocked))
            {
                let because = format!("upstream {} did not succeed", dag.stages()[bad].name);
                self.block(i, because);
                continue;
            }
            if ups.iter().any(|u| self.state[u] != State::Done) {
                continue;
            }
            let kind = executor_of(spec, self.opts);
            let room = match kind {
                ExecutorKind::Local => self.local.has_room(&spec.resources),
                ExecutorKind::Slurm => self.slurm.has_room(&spec.resources),
            };
            if !room {
                continue;
            }
            let ev = self
                .planner
                .evaluate(i, &[], self.force.contains(&i))
                .await?;
            let reasons = match &ev.verdict {
                // Only `evaluate_all` words a stage invalid or blocked; here
                // a stage that cannot be evaluated is an error (`?`).
                Verdict::Invalid { .. } | Verdict::Blocked { .. } => {
                    unreachable!("Planner::evaluate returns up to date, frozen or stale")
                }
                Verdict::UpToDate { .. } | Verdict::Frozen => {
                    self.state.insert(i, State::Done);
                    self.summary.up_to_date.push(spec.name.clone());
                    self.rep.event(Event::UpToDate {
                        stage: spec.name.clone(),
                    });
                    continue;
                }
                Verdict::Stale { reasons } => reasons.clone(),
            };
            if let Some(missing) = reasons
                .iter()
                .find(|r| matches!(r, Reason::InputMissing { .. }))
            {
                self.state.insert(i, State::Failed);
                self.summary.failed.push(spec.name.clone());
                self.rep.event(Event::Blocked {
                    stage: spec.name.clone(),
                    because: missing.to_string(),
                });
                self.after_failure();
                continue;
            }
            if let Some(refused) = self
                .preflight
                .before_launch(self.ws, dag, &mut self.planner, i, kind)
                .await?
            {
                self.state.insert(i, State::Failed);
                self.summary.failed.push(spec.name.clone());
                self.rep.event(Event::Blocked {
                    stage: spec.name.clone(),
                    because: refused,
                });
                self.after_failure();
                continue;
            }
            let threads = match kind {
                ExecutorKind::Local => self.local.threads(&spec.resources),
                ExecutorKind::Slurm => self.slurm.threads(&spec.resources),
            };
            let (step, shards) = self.queue_step(spec, &ev, &reasons, threads, kind).await?;
            let launch = Launch {
                step,
                stage: &spec.name,
                resources: &spec.resources,
                shards,
                threads,
            };
            let cx = self.cx();
            let launched = match kind {
                ExecutorKind::Local => self.local.spawn(&cx, &launch).await,
                ExecutorKind::Slurm => self.slurm.spawn(&cx, &launch).await,
            };
            let launched = match launched {
                Ok(l) => l,
                Err(e) => {
                    let why = format!("{e:#}");
                    fail_step(self.ws, step, &why).await?;
                    self.state.insert(i, State::Failed);
                    self.summary.failed.push(spec.name.clone());
                    self.rep.event(Event::Finished {
                        stage: spec.name.clone(),
                        step,
                        status: StepStatus::Failed,
                        elapsed: Duration::ZERO,
                        error: Some(why),
                        exit_code: None,
                        slurm_state: None,
                    });
                    self.after_failure();
                    continue;
                }
            };
            self.running.insert(
                step,
                Running {
                    stage: Some(i),
                    name: spec.name.clone(),
                    started: Instant::now(),
                },
            );
            self.state.insert(i, State::Running);
            self.rep.event(Event::Started {
                stage: spec.name.clone(),
                step,
                reasons,
                pid: launched.pid,
                slurm_job: launched.slurm_job,
            });
        }
        Ok(())
    }

    fn block(&mut self, i: usize, because: String) {
        let stage = self.dag.stages()[i].name.clone();
        self.state.insert(i, State::Blocked);
        self.summary.blocked.push(stage.clone());
        self.rep.event(Event::Blocked { stage, because });
    }

    fn after_failure(&mut self) {
        if !self.opts.keep_going {
            self.stop_launching = true;
        }
    }

    /// A step ended and is recorded: frees its stage's outputs from the
    /// planner's cache and settles the stage.
    async fn finished(&mut self, step: StepId, status: StepStatus) -> Result<()> {
        let r = self
            .running
            .remove(&step)
            .context("an unknown step finished")?;
        tracing::info!(step = step.0, status = status.as_str(), "step ingested");
        let dag = self.dag;
        if let Some(spec) = r.stage.map(|i| &dag.stages()[i]) {
            for o in &spec.outs {
                self.planner.invalidate(&o.path);
            }
        }
        let rec = self.ws.store.step(step).await?;
        let failed = status != StepStatus::Succeeded;
        self.rep.event(Event::Finished {
            stage: r.name.clone(),
            step,
            status,
            elapsed: r.started.elapsed(),
            error: rec.error,
            exit_code: rec.exit_code.filter(|_| failed),
            slurm_state: rec.slurm_state.filter(|_| failed),
        });
        let Some(i) = r.stage.filter(|i| self.state.contains_key(i)) else {
            return Ok(());
        };
        if failed {
            self.state.insert(i, State::Failed);
            self.summary.failed.push(r.name);
            self.after_failure();
        } else {
            self.state.insert(i, State::Done);
            self.summary.ran.push(r.name);
        }
        Ok(())
    }

    /// Stops every step still followed (one `scancel` for the Slurm jobs,
    /// SIGTERM then SIGKILL for local processes) and records each interrupted.
    async fn stop(&mut self, why: &str) -> Result<()> {
        let mut stopped = self.slurm.cancel().await;
        stopped.extend(self.local.cancel().await);
        for step in stopped {
            let Some(r) = self.running.remove(&step) else {
                continue;
            };
            self.ws
                .store
                .mark_step(step, StepStatus::Interrupted, why)
                .await?;
            self.rep.event(Event::Interrupted {
                stage: r.name,
                step,
                why: why.to_string(),
            });
        }
        Ok(())
    }

    async fn close(&mut self, status: RunStatus) -> Result<()> {
        let calls = self.slurm.slurm.calls();
        self.ws.store.set_slurm_calls(self.run_id, calls).await?;
        self.ws.store.finish_run(self.run_id, status).await
    }

    /// After the loop: every stage still waiting says why it never ran.
    fn block_the_rest(&mut self) {
        for idx in 0..self.sel.len() {
            let i = self.sel[idx];
            if self.state[&i] != State::Waiting {
                continue;
            }
            let failed_up = self
                .dag
                .with_ancestors(i)
                .into_iter()
                .find(|u| matches!(self.state.get(u), Some(State::Failed)));
            let because = match failed_up {
                Some(u) => format!("upstream {} did not succeed", self.dag.stages()[u].name),
                None => {
                    "the run stopped after a failure (--keep-going runs independent stages)".into()
                }
            };
            self.block(i, because);
        }
    }

    /// Reports each running step whose progress changed since it was last read.
    fn report_progress(&mut self) {
        let running = &self.running;
        self.progress_seen
            .retain(|step, _| running.contains_key(step));
        for (&step, r) in running {
            let Some(p) = job::Progress::of_step(&self.ws.step_dir(step)) else {
                continue;
            };
            if self.progress_seen.insert(step, p) != Some(p) {
                self.rep.event(Event::Progress {
                    stage: r.name.clone(),
                    step,
                    progress: p,
                });
            }
        }
    }

    /// Records a step of `spec` and writes its job file.
    async fn queue_step(
        &mut self,
        spec: &StageSpec,
        ev: &Evaluation,
        reasons: &[Reason],
        threads: usize,
        executor: ExecutorKind,
    ) -> Result<(StepId, Option<u32>)> {
        let ws = self.ws;
        let fp = ev
            .fingerprint
            .as_ref()
            .context("a stage with missing inputs cannot run")?;
        let key = fp.key();
        let params_json = serde_json::to_string(&fp.params)?;
        let env_json = serde_json::to_string(&fp.env)?;
        let outs_json = serde_json::to_string(&fp.outs)?;
        let reason_text: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
        let hexes: Vec<String> = ev
            .inputs
            .iter()
            .map(|(_, _, h)| h.hash.to_hex().to_string())
            .collect();
        let inputs: Vec<(String, ArtifactVersion)> = ev
            .inputs
            .iter()
            .zip(&hexes)
            .map(|((name, path, h), hex)| {
                (
                    name.clone(),
                    ArtifactVersion {
                        path,
                        hash: hex,
                        size: h.size,
                        is_dir: h.is_dir,
                        entries: &h.entries,
                    },
                )
            })
            .collect();
        let step = ws
            .store
            .insert_step(
                &NewStep {
                    run: self.run_id,
                    stage: &spec.name,
                    kind: spec.kind_name(),
                    fingerprint: &key,
                    code_version: &fp.code_version,
                    command: fp.command.as_deref(),
                    params_json: &params_json,
                    env_json: &env_json,
                    outs_json: &outs_json,
                    reason: &reason_text.join("; "),
                    executor: executor.as_str(),
                },
                &inputs,
            )
            .await?;
        let dir = ws.step_dir(step);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The same work, left unfinished by an earlier step: go on from there.
        for twin in ws.store.unfinished_twins(&spec.name, &key, step).await? {
            if let Some(epoch) = super::resume::inherit_checkpoints(&ws.step_dir(twin), &dir)? {
                let note = serde_json::json!({"step": twin.0, "epoch": epoch});
                std::fs::write(dir.join("resumed_from.json"), note.to_string())
                    .with_context(|| format!("writing {}", dir.display()))?;
                break;
            }
        }
        let action = match &spec.action {
            Action::Builtin { kind } => JobAction::Builtin { kind: kind.clone() },
            Action::Command { cmd, wdir } => JobAction::Command {
                cmd: cmd.clone(),
                wdir: wdir.as_ref().map(|w| w.to_string()),
            },
        };
        let params = self.planner.params(ev.stage)?;
        let shards = shards_of(spec, &params)?;
        let provenance = match &spec.action {
            Action::Builtin { kind } if crate::stages::provenance::wanted_by(kind) => {
                let versions: Vec<(&str, &str)> = ev
                    .inputs
                    .iter()
                    .zip(&hexes)
                    .map(|((_, path, _), hex)| (path.as_str(), hex.as_str()))
                    .collect();
                super::lineage::provenance(ws, &versions).await?
            }
            _ => Vec::new(),
        };
        let job = JobSpec {
            step,
            stage: spec.name.clone(),
            action,
            params,
            inputs: spec
                .deps
                .iter()
                .map(|d| (d.name.clone(), d.path.clone()))
                .collect(),
            input_hashes: ev
                .inputs
                .iter()
                .zip(&hexes)
                .map(|((name, ..), hex)| (name.clone(), hex.clone()))
                .collect(),
            outputs: spec
                .outs
                .iter()
                .map(|o| JobOutput {
                    name: o.name.clone(),
                    path: o.path.clone(),
                    persist: o.persist,
                })
                .collect(),
            threads,
            shard: None,
            shards,
            record: Some(job::JobRecord {
                kind: spec.kind_name().to_string(),
                fingerprint: key.clone(),
                code_version: fp.code_version.clone(),
                command: fp.command.clone(),
                params_json,
                env_json,
                outs_json,
                reason: reason_text.join("; "),
                executor: executor.as_str().to_string(),
            }),
            keep_memo: Some(spec.keep_memo),
            provenance,
        };
        job::write_job(&dir, &job)?;
        Ok((step, shards))
    }
}

/// Where `spec` runs under these options.
fn executor_of(spec: &StageSpec, opts: &RunOptions) -> ExecutorKind {
    match spec.executor.as_deref() {
        Some("slurm") => ExecutorKind::Slurm,
        Some(_) => ExecutorKind::Local,
        None if opts.cluster.local_stages.contains(&spec.name) => ExecutorKind::Local,
        None => opts.executor,
    }
}

/// Waits for the first of SIGINT (Ctrl-C), SIGTERM (`kill`, `timeout`, Slurm
/// ending the head's own job) and SIGHUP (a closed terminal); each stops the
/// run the same way. Returns the signal's number and name.
async fn stop_signal() -> (i32, &'static str) {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    async fn next(s: &mut Option<Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    tokio::select! {
        _ = next(&mut int) => (libc::SIGINT, "SIGINT"),
        _ = next(&mut term) => (libc::SIGTERM, "SIGTERM"),
        _ = next(&mut hup) => (libc::SIGHUP, "SIGHUP"),
    }
}

/// How many shards a step of `spec` runs as: the manifest's `shards:`, or
/// what its built-in kind derives from the parameters (one per grid point of
/// a sweep).
pub fn shards_of(spec: &StageSpec, params: &serde_json::Value) -> Result<Option<u32>> {
    if spec.shards.is_some() {
        return Ok(spec.shards);
    }
    let Action::Builtin { kind } = &spec.action else {
        return Ok(None);
    };
    Ok(crate::stages::shards_from_params(kind, params)
        .with_context(|| format!("stage {}: invalid parameters", spec.name))?
        .filter(|&n| n > 1))
}
