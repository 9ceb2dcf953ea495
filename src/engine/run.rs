//! Running a plan: stages in dependency order, independent ones in parallel
//! within CPU and GPU slots, each stale stage re-evaluated once its upstream
//! has finished (early cut-off), every result ingested into the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::task::JoinSet;

use super::dag::Dag;
pub use super::ingest::ingest;
use super::pipeline::{Action, StageSpec};
use super::plan::{Evaluation, Planner, Reason, Verdict};
use super::reattach::count_requeues;
pub use super::reattach::{local_process, local_step_alive, recover, Reattach};
use super::workspace::Workspace;
use crate::exec::job::{self, JobAction, JobOutput, JobSpec};
use crate::exec::local::{local_gpus, signal_group, LocalExecutor, Slots};
use crate::exec::slurm::{memory_kill_line, ClusterConfig, JobState, Slurm, Submission};
use crate::store::{ArtifactVersion, NewRun, NewStep, RunStatus, StepEnd, StepId, StepStatus};
use crate::util::{now_ms, process_start};

/// What the user asked of `pipeline run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub profile: String,
    pub until: Option<String>,
    pub only: Vec<String>,
    pub force: Vec<String>,
    pub dry_run: bool,
    pub jobs: usize,
    pub keep_going: bool,
    pub command_line: String,
    pub executor: ExecutorKind,
    /// `config/cluster.yaml` (defaults when absent).
    pub cluster: ClusterConfig,
    /// On SIGINT, SIGTERM or SIGHUP, leave the run's Slurm jobs running
    /// (recorded as running, for the next run to re-attach to) instead of
    /// cancelling them; local steps stop either way.
    pub detach: bool,
}

/// Where steps run unless a stage says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
}

/// The step lifecycle and the run's other news, typed: the terminal display
/// words each event for a person, and `run --json` writes each as one JSON
/// line (`{"event": "started", ...}`), so scripts and tests read states, not
/// sentences.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A note for the person watching that no script needs to act on.
    Note {
        text: String,
    },
    UpToDate {
        stage: String,
    },
    WouldRun {
        stage: String,
        reasons: Vec<Reason>,
    },
    /// A dry run's stage that runs only if a stage above it, which runs
    /// first, changes its output (early cutoff).
    MayRun {
        stage: String,
        why: String,
    },
    /// The step was queued and handed to its executor: a local process
    /// (`pid`) or a Slurm job (`slurm_job`, submitted).
    Started {
        stage: String,
        step: StepId,
        reasons: Vec<Reason>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        slurm_job: Option<String>,
    },
    /// Slurm put a started job back in the queue (`restarted: false`: it
    /// waits again) or it started again (`restarted: true`, one more attempt).
    Requeued {
        stage: String,
        step: StepId,
        slurm_job: String,
        restarted: bool,
        attempt: u32,
    },
    /// The Slurm job ended in a state worth another try (preempted, node
    /// failure) and the step was submitted again.
    Resubmitted {
        stage: String,
        step: StepId,
        slurm_job: String,
        ended: String,
        new_job: String,
        attempt: u32,
        max_attempts: u32,
    },
    /// A step an earlier head started is followed again: its Slurm job, or
    /// its process on this host.
    Reattached {
        stage: String,
        step: StepId,
        #[serde(skip_serializing_if = "Option::is_none")]
        slurm_job: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        slurm_state: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// A step that finished after its head process stopped, now recorded.
    RecordedLate {
        stage: String,
        step: StepId,
        status: StepStatus,
    },
    Finished {
        stage: String,
        step: StepId,
        status: StepStatus,
        #[serde(rename = "elapsed_ms", serialize_with = "millis")]
        elapsed: Duration,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// How a failed step ended: its exit code, or its Slurm state.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        slurm_state: Option<String>,
    },
    /// A step stopped without finishing (its head stopped, or this run was
    /// interrupted); it runs again when still needed.
    Interrupted {
        stage: String,
        step: StepId,
        why: String,
    },
    /// The run stops its running steps: after a signal or an error.
    Stopping {
        why: String,
    },
    /// `--detach`: these Slurm jobs were left running.
    Detached {
        slurm_jobs: Vec<String>,
    },
    Blocked {
        stage: String,
        because: String,
    },
    /// A running step's items: how many are done (its item log's
    /// `progress.json`, summed over its shards), when that changed.
    Progress {
        stage: String,
        step: StepId,
        progress: job::Progress,
    },
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// How often the head reads its running steps' progress files.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Reports each running step whose progress changed since `last`.
fn report_progress(
    ws: &Workspace,
    running: &BTreeMap<StepId, Running>,
    last: &mut HashMap<StepId, job::Progress>,
    rep: &dyn Reporter,
) {
    last.retain(|step, _| running.contains_key(step));
    for r in running.values() {
        let Some(p) = job::Progress::of_step(&ws.step_dir(r.step)) else {
            continue;
        };
        if last.insert(r.step, p) != Some(p) {
            rep.event(Event::Progress {
                stage: r.name.clone(),
                step: r.step,
                progress: p,
            });
        }
    }
}

pub trait Reporter: Send + Sync {
    fn event(&self, e: Event);
}

/// How the run ended.
#[derive(Debug, Default)]
pub struct Summary {
    pub ran: Vec<String>,
    pub up_to_date: Vec<String>,
    pub failed: Vec<String>,
    pub blocked: Vec<String>,
    /// The signal that stopped the run (SIGINT, SIGTERM or SIGHUP), if one did.
    pub interrupted: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Blocked,
}

/// The stages a selection runs, in topological order.
pub fn selection(dag: &Dag, until: Option<&str>, only: &[String]) -> Result<Vec<usize>> {
    let set: BTreeSet<usize> = if !only.is_empty() {
        only.iter()
            .map(|s| dag.lookup(s, "--only"))
            .collect::<Result<_>>()?
    } else if let Some(u) = until {
        dag.with_ancestors(dag.lookup(u, "--until")?)
    } else {
        (0..dag.stages().len()).collect()
    };
    Ok(dag
        .order
        .iter()
        .copied()
        .filter(|i| set.contains(i))
        .collect())
}

/// Evaluates every selected stage as `status` and `--dry-run` show it: a stage
/// whose upstream will run is reported with that reason.
pub async fn evaluate_all(
    planner: &mut Planner<'_>,
    sel: &[usize],
    force: &BTreeSet<usize>,
) -> Result<Vec<Evaluation>> {
    let mut stale: BTreeSet<usize> = BTreeSet::new();
    // Per stage that cannot run or sits below one: the invalid stages above.
    let mut cannot: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for &i in sel {
        let by: BTreeSet<String> = planner
            .dag
            .upstream(i)
            .into_iter()
            .filter_map(|u| cannot.get(&u))
            .flatten()
            .cloned()
            .collect();
        if !by.is_empty() {
            let by: Vec<String> = by.into_iter().collect();
            cannot.insert(i, by.clone());
            out.push(Evaluation {
                stage: i,
                verdict: Verdict::Blocked { by },
                fingerprint: None,
                key: None,
                inputs: Vec::new(),
            });
            continue;
        }
        let pending: Vec<String> = planner
            .dag
            .upstream(i)
            .into_iter()
            .filter(|u| stale.contains(u))
            .map(|u| planner.dag.stages()[u].name.clone())
            .collect();
        let ev = match planner.evaluate(i, &pending, force.contains(&i)).await {
            Ok(ev) => ev,
            Err(e) => Evaluation {
                stage: i,
                verdict: Verdict::Invalid {
                    message: format!("{e:#}"),
                },
                fingerprint: None,
                key: None,
                inputs: Vec::new(),
            },
        };
        if let Verdict::Invalid { .. } = ev.verdict {
            cannot.insert(i, vec![planner.dag.stages()[i].name.clone()]);
        }
        if matches!(ev.verdict, Verdict::Stale { .. }) {
            stale.insert(i);
        }
        out.push(ev);
    }
    Ok(out)
}

/// How a running step is being watched.
enum How {
    Local {
        pid: u32,
    },
    Slurm {
        job: String,
        /// `Some(n)`: an array job of n shards, gathered on this machine after.
        array: Option<u32>,
        state: Option<JobState>,
        attempts: u32,
        ended_at: Option<Instant>,
        /// Restarts of `job` already counted in `attempts`.
        requeues: u32,
        /// Starts of `job` seen at the previous poll, and after how many it
        /// was reported back in the queue.
        starts_seen: u32,
        told_queued: u32,
    },
}

struct Running {
    stage: Option<usize>,
    name: String,
    step: StepId,
    how: How,
    started: Instant,
    cpus: usize,
    gpus: Vec<u32>,
}

/// What the main loop learnt about one step.
enum Settled {
    Finished(StepStatus),
    Resubmitted,
    /// Every shard succeeded: run the gathering step here.
    Gather,
}

/// Runs the selected stale stages. The caller holds the workspace lock.
pub async fn run(
    ws: &Workspace,
    dag: &Dag,
    opts: &RunOptions,
    rep: &dyn Reporter,
) -> Result<Summary> {
    let slurm = Slurm::new(opts.cluster.clone());
    let uses_slurm = opts.executor == ExecutorKind::Slurm
        || dag
            .stages()
            .iter()
            .any(|s| s.executor.as_deref() == Some("slurm"));
    // A dry run only looks: it neither takes over what an earlier head left
    // nor waits for it (it holds no lock, and a live run may own those steps).
    let reattach = if opts.dry_run {
        Vec::new()
    } else {
        recover(ws, uses_slurm.then_some(&slurm), rep).await?
    };
    let sel = selection(dag, opts.until.as_deref(), &opts.only)?;
    let force: BTreeSet<usize> = opts
        .force
        .iter()
        .map(|s| dag.lookup(s, "--force"))
        .collect::<Result<_>>()?;
    let mut planner = Planner::new(ws, dag, &opts.profile);
    let mut summary = Summary::default();
    if opts.dry_run {
        for ev in evaluate_all(&mut planner, &sel, &force).await? {
            let stage = dag.stages()[ev.stage].name.clone();
            match ev.verdict {
                Verdict::Stale { .. } if ev.verdict.may_run() => rep.event(Event::MayRun {
                    stage,
                    why: ev.verdict.why().join("; "),
                }),
                Verdict::Stale { reasons } => rep.event(Event::WouldRun { stage, reasons }),
                Verdict::Invalid { .. } | Verdict::Blocked { .. } => {
                    summary.blocked.push(stage.clone());
                    rep.event(Event::Blocked {
                        stage,
                        because: ev.verdict.why().join("; "),
                    })
                }
                _ => rep.event(Event::UpToDate { stage }),
            }
        }
        return Ok(summary);
    }
    // Every selected stage's parameters resolve (and a built-in kind accepts
    // them for its sharding, e.g. a sweep's grid) before anything runs.
    for &i in &sel {
        let params = planner.params(i)?;
        shards_of(&dag.stages()[i], &params)?;
    }
    let exec = LocalExecutor::new(&ws.root)?;
    let run_id = ws
        .store
        .begin_run(&NewRun {
            command: &opts.command_line,
            profile: &opts.profile,
            executor: opts.executor.as_str(),
        })
        .await?;
    let total_cpus = opts.jobs.max(1);
    let mut free_cpus = total_cpus;
    let mut free_gpus: Vec<u32> = local_gpus();
    let total_gpus = free_gpus.len();
    let have_gpus = total_gpus > 0;
    let mut state: BTreeMap<usize, State> = sel.iter().map(|&i| (i, State::Waiting)).collect();
    let mut running: BTreeMap<StepId, Running> = BTreeMap::new();
    for r in reattach {
        let stage = dag.index(&r.stage);
        if let Some(i) = stage.filter(|i| state.contains_key(i)) {
            state.insert(i, State::Running);
        }
        running.insert(
            r.step,
            Running {
                stage,
                name: r.stage,
                step: r.step,
                how: How::Slurm {
                    job: r.job,
                    // The shard count is the step's own (a sweep's comes
                    // from its grid), as its job file says.
                    array: job::read_job(&ws.step_dir(r.step))
                        .ok()
                        .and_then(|j| j.shards),
                    state: None,
                    attempts: r.attempts,
                    ended_at: None,
                    requeues: r.requeues,
                    starts_seen: 0,
                    told_queued: 0,
                },
                started: Instant::now(),
                cpus: 0,
                gpus: Vec::new(),
            },
        );
    }
    let mut tasks: JoinSet<(StepId, std::io::Result<std::process::ExitStatus>)> = JoinSet::new();
    let mut stop_launching = false;
    let mut poll_every: Option<Duration> = None;
    let mut next_poll = tokio::time::Instant::now();
    let mut next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
    let mut progress_seen = HashMap::new();
    let stop = stop_signal();
    tokio::pin!(stop);
    // The loop runs in a block of its own so that an error inside it, which
    // returns from the block, still stops every step this run started and
    // closes the run row before the error reaches the caller.
    let looped: Result<bool> = async {
    loop {
        // Launch every waiting stage whose upstream is settled, while slots last.
        if !stop_launching {
            for &i in &sel {
                if state[&i] != State::Waiting {
                    continue;
                }
                let ups: Vec<usize> = dag
                    .upstream(i)
                    .into_iter()
                    .filter(|u| state.contains_key(u))
                    .collect();
                if let Some(&bad) = ups
                    .iter()
                    .find(|u| matches!(state[u], State::Failed | State::Blocked))
                {
                    state.insert(i, State::Blocked);
                    summary.blocked.push(dag.stages()[i].name.clone());
                    rep.event(Event::Blocked {
                        stage: dag.stages()[i].name.clone(),
                        because: format!("upstream {} did not succeed", dag.stages()[bad].name),
                    });
                    continue;
                }
                if ups.iter().any(|u| state[u] != State::Done) {
                    continue;
                }
                let spec = &dag.stages()[i];
                let on_slurm = executor_of(spec, opts) == ExecutorKind::Slurm;
                let cpus = if on_slurm {
                    0
                } else {
                    (spec.resources.cpus as usize).min(total_cpus)
                };
                let want_gpus = if on_slurm {
                    0
                } else {
                    spec.resources.gpus as usize
                };
                if cpus > free_cpus || want_gpus.min(total_gpus) > free_gpus.len() {
                    continue;
                }
                let ev = planner.evaluate(i, &[], force.contains(&i)).await?;
                let reasons = match &ev.verdict {
                    // Only `evaluate_all` words a stage invalid or blocked;
                    // here a stage that cannot be evaluated is an error (`?`).
                    Verdict::Invalid { .. } | Verdict::Blocked { .. } => {
                        unreachable!("Planner::evaluate returns up to date, frozen or stale")
                    }
                    Verdict::UpToDate { .. } | Verdict::Frozen => {
                        state.insert(i, State::Done);
                        summary.up_to_date.push(spec.name.clone());
                        rep.event(Event::UpToDate {
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
                    state.insert(i, State::Failed);
                    summary.failed.push(spec.name.clone());
                    rep.event(Event::Blocked {
                        stage: spec.name.clone(),
                        because: missing.to_string(),
                    });
                    if !opts.keep_going {
                        stop_launching = true;
                    }
                    continue;
                }
                let executor = if on_slurm {
                    ExecutorKind::Slurm
                } else {
                    ExecutorKind::Local
                };
                let threads = if on_slurm {
                    spec.resources.cpus as usize
                } else {
                    cpus
                };
                let (step, shards) = queue_step(
                    ws,
                    run_id,
                    spec,
                    &ev,
                    &reasons,
                    &mut planner,
                    (threads, executor),
                )
                .await?;
                let how = if on_slurm {
                    let job = match submit(ws, &slurm, spec, step, shards).await {
                        Ok(job) => job,
                        Err(e) => {
                            let why = format!("{e:#}");
                            fail_step(ws, step, &why).await?;
                            state.insert(i, State::Failed);
                            summary.failed.push(spec.name.clone());
                            rep.event(Event::Finished {
                                stage: spec.name.clone(),
                                step,
                                status: StepStatus::Failed,
                                elapsed: Duration::ZERO,
                                error: Some(why),
                                exit_code: None,
                                slurm_state: None,
                            });
                            if !opts.keep_going {
                                stop_launching = true;
                            }
                            continue;
                        }
                    };
                    poll_every = None;
                    next_poll = tokio::time::Instant::now() + slurm.backoff(None);
                    How::Slurm {
                        job,
                        array: shards,
                        state: None,
                        attempts: 1,
                        ended_at: None,
                        requeues: 0,
                        starts_seen: 0,
                        told_queued: 0,
                    }
                } else {
                    let gpus: Vec<u32> = if have_gpus {
                        let n = want_gpus.min(free_gpus.len());
                        free_gpus.drain(..n).collect()
                    } else {
                        if want_gpus > 0 {
                            rep.event(Event::Note {
                                text: format!(
                                    "{} asks for {want_gpus} GPU(s) and this machine has none: it runs on the CPU",
                                    spec.name
                                ),
                            });
                        }
                        Vec::new()
                    };
                    let slots = Slots {
                        threads: cpus,
                        gpus: have_gpus.then(|| gpus.clone()),
                    };
                    let mut child = exec.spawn(step, &ws.step_dir(step), &slots)?;
                    let pid = child.id().context("the step's process has no pid")?;
                    ws.store
                        .step_started(step, Some(pid), process_start(pid))
                        .await?;
                    free_cpus -= cpus;
                    free_gpus.retain(|g| !gpus.contains(g));
                    tasks.spawn(async move { (step, child.wait().await) });
                    tracing::info!(
                        stage = spec.name.as_str(),
                        step = step.0,
                        pid,
                        cpus,
                        "step started"
                    );
                    let held = gpus;
                    running.insert(
                        step,
                        Running {
                            stage: Some(i),
                            name: spec.name.clone(),
                            step,
                            how: How::Local { pid },
                            started: Instant::now(),
                            cpus,
                            gpus: held,
                        },
                    );
                    state.insert(i, State::Running);
                    rep.event(Event::Started {
                        stage: spec.name.clone(),
                        step,
                        reasons,
                        pid: Some(pid),
                        slurm_job: None,
                    });
                    continue;
                };
                let slurm_job = match &how {
                    How::Slurm { job, .. } => Some(job.clone()),
                    How::Local { .. } => None,
                };
                running.insert(
                    step,
                    Running {
                        stage: Some(i),
                        name: spec.name.clone(),
                        step,
                        how,
                        started: Instant::now(),
                        cpus: 0,
                        gpus: Vec::new(),
                    },
                );
                state.insert(i, State::Running);
                rep.event(Event::Started {
                    stage: spec.name.clone(),
                    step,
                    reasons,
                    pid: None,
                    slurm_job,
                });
            }
        }
        if running.is_empty() {
            break;
        }
        let any_slurm = running.values().any(|r| matches!(r.how, How::Slurm { .. }));
        let finished: Vec<(StepId, StepStatus)> = tokio::select! {
            _ = tokio::time::sleep_until(next_progress) => {
                next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
                report_progress(ws, &running, &mut progress_seen, rep);
                Vec::new()
            }
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let (step, exit) = joined.context("a step task vanished")?.context("a step task panicked")?;
                let status = ingest(ws, step, exit.ok()).await?;
                vec![(step, status)]
            }
            _ = tokio::time::sleep_until(next_poll), if any_slurm => {
                let every = slurm.backoff(poll_every);
                poll_every = Some(every);
                next_poll = tokio::time::Instant::now() + every;
                let mut done = Vec::new();
                for (step, settled) in poll_slurm(ws, dag, &slurm, &mut running, rep).await? {
                    match settled {
                        Settled::Finished(st) => done.push((step, st)),
                        Settled::Resubmitted => {}
                        Settled::Gather => {
                            let r = running.get_mut(&step).context("an unknown step gathered")?;
                            let slots = Slots { threads: total_cpus, gpus: None };
                            let mut child = exec.spawn(step, &ws.step_dir(step), &slots)?;
                            let pid = child.id().context("the gathering process has no pid")?;
                            r.how = How::Local { pid };
                            rep.event(Event::Note { text: format!("{}: every shard finished; gathering here", r.name) });
                            tasks.spawn(async move { (step, child.wait().await) });
                        }
                    }
                }
                done
            }
            (sig, name) = &mut stop => {
                rep.event(Event::Stopping { why: format!("interrupted by {name}") });
                if opts.detach {
                    let kept = detach_slurm(&mut running);
                    if !kept.is_empty() {
                        rep.event(Event::Detached { slurm_jobs: kept });
                    }
                }
                interrupt(ws, &slurm, &mut running, &mut tasks, &format!("interrupted by {name}"), rep).await?;
                summary.interrupted = Some(sig);
                ws.store.set_slurm_calls(run_id, slurm.calls()).await?;
                ws.store.finish_run(run_id, RunStatus::Interrupted).await?;
                return Ok(true);
            }
        };
        for (step, status) in finished {
            let r = running.remove(&step).context("an unknown step finished")?;
            free_cpus += r.cpus;
            free_gpus.extend(r.gpus);
            free_gpus.sort();
            tracing::info!(step = step.0, status = status.as_str(), "step ingested");
            if let Some(spec) = r.stage.map(|i| &dag.stages()[i]) {
                for o in &spec.outs {
                    planner.invalidate(&o.path);
                }
            }
            let rec = ws.store.step(step).await?;
            let failed = status != StepStatus::Succeeded;
            rep.event(Event::Finished {
                stage: r.name.clone(),
                step: r.step,
                status,
                elapsed: r.started.elapsed(),
                error: rec.error,
                exit_code: rec.exit_code.filter(|_| failed),
                slurm_state: rec.slurm_state.filter(|_| failed),
            });
            let Some(i) = r.stage.filter(|i| state.contains_key(i)) else {
                continue;
            };
            if status == StepStatus::Succeeded {
                state.insert(i, State::Done);
                summary.ran.push(r.name);
            } else {
                state.insert(i, State::Failed);
                summary.failed.push(r.name);
                if !opts.keep_going {
                    stop_launching = true;
                }
            }
        }
    }
    Ok(false)
    }
    .await;
    match looped {
        Ok(true) => return Ok(summary),
        Ok(false) => {}
        Err(e) => {
            if !running.is_empty() {
                rep.event(Event::Stopping {
                    why: format!("after an error: {e:#}"),
                });
            }
            let why = format!("stopped: the run failed ({e:#})");
            if let Err(stop) = interrupt(ws, &slurm, &mut running, &mut tasks, &why, rep).await {
                tracing::warn!("stopping the steps after an error: {stop:#}");
            }
            let _ = ws.store.set_slurm_calls(run_id, slurm.calls()).await;
            let _ = ws.store.finish_run(run_id, RunStatus::Failed).await;
            return Err(e);
        }
    }
    for &i in &sel {
        if state[&i] != State::Waiting {
            continue;
        }
        let failed_up = dag
            .with_ancestors(i)
            .into_iter()
            .find(|u| matches!(state.get(u), Some(State::Failed)));
        let because = match failed_up {
            Some(u) => format!("upstream {} did not succeed", dag.stages()[u].name),
            None => "the run stopped after a failure (--keep-going runs independent stages)".into(),
        };
        summary.blocked.push(dag.stages()[i].name.clone());
        rep.event(Event::Blocked {
            stage: dag.stages()[i].name.clone(),
            because,
        });
    }
    let status = if summary.failed.is_empty() && summary.blocked.is_empty() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    ws.store.set_slurm_calls(run_id, slurm.calls()).await?;
    ws.store.finish_run(run_id, status).await?;
    Ok(summary)
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

/// Submits step `step` of `spec`; its job id is in the store before this returns.
async fn submit(
    ws: &Workspace,
    slurm: &Slurm,
    spec: &StageSpec,
    step: StepId,
    array: Option<u32>,
) -> Result<String> {
    let exe = std::env::current_exe().context("finding the pipeline binary")?;
    let dir = ws.step_dir(step);
    let name = format!("pipeline.{}.{}", spec.name, step.0);
    let job = slurm
        .submit(&Submission {
            job_name: &name,
            step_dir: &dir,
            workspace: &ws.root,
            exe: &exe,
            step: step.0,
            resources: &spec.resources,
            array,
        })
        .await
        .with_context(|| format!("submitting stage {}", spec.name))?;
    ws.store.step_submitted(step, &job).await?;
    Ok(job)
}

/// The Slurm job ids of the running steps.
fn slurm_jobs(running: &BTreeMap<StepId, Running>) -> Vec<String> {
    running
        .values()
        .filter_map(|r| match &r.how {
            How::Slurm { job, .. } => Some(job.clone()),
            How::Local { .. } => None,
        })
        .collect()
}

/// Takes the Slurm steps out of `running` (so that no cancel or interrupted
/// mark reaches them) and returns their job ids.
fn detach_slurm(running: &mut BTreeMap<StepId, Running>) -> Vec<String> {
    let jobs = slurm_jobs(running);
    running.retain(|_, r| matches!(r.how, How::Local { .. }));
    jobs
}

/// One batched query for every Slurm job of the run; settles those that ended.
async fn poll_slurm(
    ws: &Workspace,
    dag: &Dag,
    slurm: &Slurm,
    running: &mut BTreeMap<StepId, Running>,
    rep: &dyn Reporter,
) -> Result<Vec<(StepId, Settled)>> {
    let jobs = slurm_jobs(running);
    let states = slurm.query(&jobs).await?;
    let wait = Duration::from_secs_f64(slurm.cfg.result_wait_s.max(0.0));
    let mut out = Vec::new();
    for r in running.values_mut() {
        let How::Slurm {
            job,
            array,
            state,
            attempts,
            ended_at,
            requeues,
            starts_seen,
            told_queued,
        } = &mut r.how
        else {
            continue;
        };
        let now = states.get(job.as_str()).cloned();
        if now != *state {
            if let Some(st) = &now {
                ws.store.set_slurm_state(r.step, &st.name()).await?;
            }
            *state = now.clone();
        }
        // Array tasks start in shard folders of their own: not counted.
        if array.is_none() {
            let starts = count_requeues(ws, r.step, &r.name, job, attempts, requeues, rep).await?;
            // Queued again after it started: said now, counted when it
            // restarts. The start must predate this poll's query, or a job
            // starting between the query and the read would look requeued.
            let queued = matches!(now, Some(JobState::Pending | JobState::Requeued));
            let before = std::mem::replace(starts_seen, starts);
            if queued && starts > *requeues && starts == before && starts > *told_queued {
                *told_queued = starts;
                rep.event(Event::Requeued {
                    stage: r.name.clone(),
                    step: r.step,
                    slurm_job: job.clone(),
                    restarted: false,
                    attempt: *attempts,
                });
            }
        }
        if now.as_ref().is_some_and(JobState::is_active) {
            *ended_at = None;
            continue;
        }
        let dir = ws.step_dir(r.step);
        if let Some(n) = *array {
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
                out.push((r.step, Settled::Gather));
                continue;
            }
            if failed.is_empty() && ended_at.get_or_insert_with(Instant::now).elapsed() < wait {
                continue;
            }
            let shown = now
                .as_ref()
                .map(JobState::name)
                .unwrap_or_else(|| "gone from the queue".into());
            let oom = memory_kill_line(&dir, job);
            if oom.is_some() {
                ws.store
                    .set_slurm_state(r.step, &JobState::OutOfMemory.name())
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
            fail_step(ws, r.step, &why).await?;
            out.push((r.step, Settled::Finished(StepStatus::Failed)));
            continue;
        }
        if let Some(res) = job::read_result(&dir)? {
            let st = ingest(ws, r.step, None).await?;
            // The memory cgroup killed the command, not the job: the job's
            // own word is only "killed by signal 9".
            if st == StepStatus::Failed && now == Some(JobState::OutOfMemory) {
                let why = format!(
                    "Slurm job {job} ran out of memory (OUT_OF_MEMORY; raise the stage's \
                     `resources: mem`): {}",
                    res.error.unwrap_or_default()
                );
                ws.store.set_error(r.step, &why).await?;
            }
            out.push((r.step, Settled::Finished(st)));
            continue;
        }
        let shown = now
            .as_ref()
            .map(JobState::name)
            .unwrap_or_else(|| "gone from the queue".into());
        let retryable = matches!(now, Some(JobState::Preempted) | Some(JobState::NodeFail));
        if retryable && *attempts <= slurm.cfg.max_retries {
            let spec = r
                .stage
                .map(|i| &dag.stages()[i])
                .context("a resubmitted step has no stage")?;
            let new_job = submit(ws, slurm, spec, r.step, *array).await?;
            rep.event(Event::Resubmitted {
                stage: r.name.clone(),
                step: r.step,
                slurm_job: job.clone(),
                ended: shown.clone(),
                new_job: new_job.clone(),
                attempt: *attempts + 1,
                max_attempts: slurm.cfg.max_retries + 1,
            });
            *attempts += 1;
            // The new job has not started yet.
            *requeues = 0;
            *starts_seen = 0;
            *told_queued = 0;
            ws.store.set_attempts(r.step, *attempts, 0).await?;
            *job = new_job;
            *state = None;
            out.push((r.step, Settled::Resubmitted));
            continue;
        }
        // COMPLETED (or gone) without a result file: wait a bounded time for a
        // lagging shared file system before calling it a failure.
        let waited = ended_at.get_or_insert_with(Instant::now).elapsed();
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
            continue;
        }
        let oom_line = match now {
            Some(JobState::Failed | JobState::Cancelled) => memory_kill_line(&dir, job),
            _ => None,
        };
        if oom_line.is_some() {
            ws.store
                .set_slurm_state(r.step, &JobState::OutOfMemory.name())
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
        fail_step(ws, r.step, &why).await?;
        out.push((r.step, Settled::Finished(StepStatus::Failed)));
    }
    Ok(out)
}

/// Records a step that ended without a result of its own.
async fn fail_step(ws: &Workspace, step: StepId, why: &str) -> Result<()> {
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

async fn interrupt(
    ws: &Workspace,
    slurm: &Slurm,
    running: &mut BTreeMap<StepId, Running>,
    tasks: &mut JoinSet<(StepId, std::io::Result<std::process::ExitStatus>)>,
    why: &str,
    rep: &dyn Reporter,
) -> Result<()> {
    let jobs = slurm_jobs(running);
    if let Err(e) = slurm.cancel(&jobs).await {
        tracing::warn!("cancelling the run's Slurm jobs: {e:#}");
    }
    for r in running.values() {
        if let How::Local { pid } = r.how {
            signal_group(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tasks.is_empty() && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), tasks.join_next()).await;
    }
    for r in running.values() {
        if let How::Local { pid } = r.how {
            signal_group(pid, libc::SIGKILL);
        }
    }
    for (id, r) in std::mem::take(running) {
        ws.store.mark_step(id, StepStatus::Interrupted, why).await?;
        rep.event(Event::Interrupted {
            stage: r.name,
            step: id,
            why: why.to_string(),
        });
    }
    Ok(())
}

async fn queue_step(
    ws: &Workspace,
    run: crate::store::RunId,
    spec: &StageSpec,
    ev: &Evaluation,
    reasons: &[Reason],
    planner: &mut Planner<'_>,
    (threads, executor): (usize, ExecutorKind),
) -> Result<(StepId, Option<u32>)> {
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
                run,
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
    let params = planner.params(ev.stage)?;
    let shards = shards_of(spec, &params)?;
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
    };
    job::write_job(&dir, &job)?;
    Ok((step, shards))
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
fn shards_of(spec: &StageSpec, params: &serde_json::Value) -> Result<Option<u32>> {
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
