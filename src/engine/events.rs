//! What a run tells its watcher: the typed step lifecycle (`Event`), the
//! `Reporter` that shows it, and the run's `Summary`.

use std::time::Duration;

use serde::Serialize;

use super::plan::Reason;
use crate::exec::job;
use crate::store::{StepId, StepStatus};

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
