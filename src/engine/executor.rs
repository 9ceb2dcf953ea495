//! Where the scheduler's steps run: the `Executor` trait, implemented by the
//! local executor (`local_steps`: child processes in CPU and GPU slots) and
//! the Slurm executor (`slurm_steps`: batch jobs, with Slurm's follow-up
//! policy of requeues, preemption, memory kills, resubmission and arrays).

use anyhow::Result;

use super::events::Reporter;
use super::workspace::Workspace;
use crate::exec::resources::Resources;
use crate::store::StepId;

/// What an executor needs of the run: the workspace (its store and step
/// folders) and the watcher.
pub struct Ctx<'a> {
    pub ws: &'a Workspace,
    pub rep: &'a dyn Reporter,
}

/// One queued step to start: its job file is written.
pub struct Launch<'a> {
    pub step: StepId,
    pub stage: &'a str,
    pub resources: &'a Resources,
    /// `Some(n)`: the step runs as n shards.
    pub shards: Option<u32>,
    /// What `Executor::threads` gave it.
    pub threads: usize,
}

/// How a step was started.
#[derive(Debug, Clone, Default)]
pub struct Launched {
    pub pid: Option<u32>,
    pub slurm_job: Option<String>,
}

/// What an executor learnt about one of its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The step ended and its result (or failure) is in the store.
    Finished(crate::store::StepStatus),
    /// The step's job ended in a state worth another try and was submitted
    /// again: still running.
    Resubmitted,
    /// Every shard succeeded: the gathering step runs on this machine next.
    Gather,
}

/// A place steps run. `ready` is cancel-safe (the scheduler waits on every
/// executor, the signals and its progress timer at once); the work of
/// settling happens in `poll`, which is not raced.
pub trait Executor {
    /// The threads a step asking for `r` is given.
    fn threads(&self, r: &Resources) -> usize;
    /// Whether this executor has room now for a step asking for `r`.
    fn has_room(&self, r: &Resources) -> bool;
    /// Starts `l`; its pid or job id is in the store before this returns.
    async fn spawn(&mut self, cx: &Ctx<'_>, l: &Launch<'_>) -> Result<Launched>;
    /// Whether any step of this executor is still being followed.
    fn busy(&self) -> bool;
    /// Returns when `poll` may have news (a child exited, a poll is due).
    async fn ready(&mut self);
    /// The steps that settled since the last call, each recorded.
    async fn poll(&mut self, cx: &Ctx<'_>) -> Result<Vec<(StepId, Settled)>>;
    /// Stops every step it follows; returns them (to be recorded as
    /// interrupted by the caller).
    async fn cancel(&mut self) -> Vec<StepId>;
}
