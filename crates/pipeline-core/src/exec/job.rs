//! The job files of a step: `job.json` (what to run, written by the head) and
//! `result.json` (how it went, written atomically by the job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::relpath::RelPath;
pub use crate::stages::progress::{Progress, PROGRESS_FILE};

/// The folder of step `id` under the workspace `root` (job file, log, result).
pub fn step_dir(root: &Path, id: StepId) -> PathBuf {
    root.join(".pipeline").join("steps").join(id.0.to_string())
}

/// One execution of a stage: its row in the store, its folder's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StepId(pub i64);

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i64> for StepId {
    fn from(id: i64) -> StepId {
        StepId(id)
    }
}

/// What a job runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    Builtin { kind: String },
    Command { cmd: String, wdir: Option<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobOutput {
    pub name: String,
    pub path: RelPath,
    pub persist: bool,
}

/// `job.json`: everything a job needs, so a compute node never reads the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub step: StepId,
    pub stage: String,
    pub action: JobAction,
    pub params: serde_json::Value,
    /// name -> workspace-relative path.
    pub inputs: BTreeMap<String, RelPath>,
    /// name -> the BLAKE3 the head recorded for that input when it queued
    /// the step, so a stage can key its per-item memo on its inputs without
    /// hashing them again on a compute node.
    #[serde(default)]
    pub input_hashes: BTreeMap<String, String>,
    pub outputs: Vec<JobOutput>,
    pub threads: usize,
    /// Set when this job runs one shard; filled in by `exec-step --shard`.
    pub shard: Option<(u32, u32)>,
    /// The stage's shard count: on Slurm it runs as an array of this many
    /// tasks before the gathering run; locally the gathering run does it all.
    #[serde(default)]
    pub shards: Option<u32>,
    /// The step's row as the head recorded it, so `pipeline recover` can
    /// rebuild a lost store from the step folders.
    #[serde(default)]
    pub record: Option<JobRecord>,
    /// Keep the stage's per-item memo once the step's output is recorded;
    /// `None` in a `job.json` written before this existed.
    #[serde(default)]
    pub keep_memo: Option<bool>,
    /// What made the inputs, for the kinds that show it
    /// ([`crate::stages::provenance::wanted_by`]); empty for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<crate::stages::provenance::ProvStep>,
}

/// The columns of a step's row that only the head knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub kind: String,
    pub fingerprint: String,
    pub code_version: String,
    pub command: Option<String>,
    pub params_json: String,
    pub env_json: String,
    pub outs_json: String,
    pub reason: String,
    pub executor: String,
}

/// One output as the job hashed it; its file entries (with stat) are in
/// `entries_file`, packed as the stat cache packs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputResult {
    pub name: String,
    pub path: RelPath,
    pub hash: String,
    pub size: u64,
    pub is_dir: bool,
    pub file_count: u64,
    pub entries_file: String,
}

/// `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub succeeded: bool,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: i64,
    pub peak_rss_kb: Option<i64>,
    pub host: String,
    pub outputs: Vec<OutputResult>,
}

pub const JOB_FILE: &str = "job.json";
pub const RESULT_FILE: &str = "result.json";
pub const LOG_FILE: &str = "log";
pub const PID_FILE: &str = "pid";
/// One line per start of the step's job, appended by the job itself: the
/// Slurm job id (`-` outside Slurm), pid, process start time and host. A job
/// that Slurm requeues starts again under the same id.
pub const STARTS_FILE: &str = "starts";

/// Appends this start of the job to the step's starts file.
pub fn record_start(dir: &Path, pid: u32, start: i64, host: &str) -> Result<()> {
    use std::io::Write;
    let job = std::env::var("SLURM_JOB_ID").unwrap_or_else(|_| "-".into());
    let path = dir.join(STARTS_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{job} {pid} {start} {host}\n").as_bytes()))
        .with_context(|| format!("recording the job's start in {}", path.display()))
}

/// How many times Slurm job `job` started in `step_dir`.
pub fn starts_of(step_dir: &Path, job: &str) -> u32 {
    let Ok(text) = std::fs::read_to_string(step_dir.join(STARTS_FILE)) else {
        return 0;
    };
    let starts = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(job))
        .count();
    u32::try_from(starts).unwrap_or(u32::MAX)
}

/// The job's own record of its process: (pid, start time, host).
pub fn read_pid(step_dir: &Path) -> Option<(u32, i64, String)> {
    let text = std::fs::read_to_string(step_dir.join(PID_FILE)).ok()?;
    let mut it = text.split_whitespace();
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.to_string(),
    ))
}

pub fn write_job(step_dir: &Path, job: &JobSpec) -> Result<()> {
    crate::util::write_atomic(&step_dir.join(JOB_FILE), &serde_json::to_vec_pretty(job)?)
}

pub fn read_job(step_dir: &Path) -> Result<JobSpec> {
    let f = step_dir.join(JOB_FILE);
    let text =
        std::fs::read(&f).with_context(|| format!("reading the job file {}", f.display()))?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a valid job file", f.display()))
}

/// The result file's name: the step's own, or one shard's.
pub fn result_name(shard: Option<u32>) -> String {
    match shard {
        None => RESULT_FILE.to_string(),
        Some(i) => format!("result.shard-{i}.json"),
    }
}

/// The result file of a step, if the job wrote one.
pub fn read_result(step_dir: &Path) -> Result<Option<JobResult>> {
    read_result_of(step_dir, None)
}

/// The result file of a step or of one of its shards, if written.
pub fn read_result_of(step_dir: &Path, shard: Option<u32>) -> Result<Option<JobResult>> {
    let f: PathBuf = step_dir.join(result_name(shard));
    match std::fs::read(&f) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("{} is not a valid result file", f.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", f.display())),
    }
}
