//! Running a plan: what `pipeline run` asks for, the selection of stages,
//! how `status` and `--dry-run` evaluate it, and the run itself: recovery of
//! what an earlier head left, then the scheduler (`scheduler.rs`) over the
//! local and Slurm executors (`local_steps.rs`, `slurm_steps.rs`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::dag::Dag;
pub use super::events::{Event, Reporter, Summary};
pub use super::ingest::ingest;
use super::plan::{Evaluation, Planner, Verdict};
pub use super::reattach::{local_process, local_step_alive, recover, Reattach};
use super::scheduler::{shards_of, Plan, Scheduler};
use super::workspace::Workspace;
use crate::exec::slurm::{ClusterConfig, Slurm};

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
    /// Skip `pipeline check` before submitting to Slurm (`check::Preflight`).
    pub no_check: bool,
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
    if opts.dry_run {
        return dry_run(&mut planner, &sel, &force, rep).await;
    }
    // Every selected stage's parameters resolve (and a built-in kind accepts
    // them for its sharding, e.g. a sweep's grid) before anything runs.
    for &i in &sel {
        let params = planner.params(i)?;
        shards_of(&dag.stages()[i], &params)?;
    }
    let plan = Plan {
        planner,
        sel,
        force,
    };
    Scheduler::new(ws, dag, opts, rep, plan, slurm, reattach)
        .await?
        .execute()
        .await
}

/// `run --dry-run`: what a run would do, as `status` words it.
async fn dry_run(
    planner: &mut Planner<'_>,
    sel: &[usize],
    force: &BTreeSet<usize>,
    rep: &dyn Reporter,
) -> Result<Summary> {
    let mut summary = Summary::default();
    for ev in evaluate_all(planner, sel, force).await? {
        let stage = planner.dag.stages()[ev.stage].name.clone();
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
    Ok(summary)
}
