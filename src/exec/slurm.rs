//! The Slurm executor's client: batch scripts, `sbatch`, batched `squeue`
//! (and `sacct` where accounting answers), `scancel`. It drives a real Slurm
//! through its own commands, never through a shell: every value is an argv
//! element, and the one line of shell in a batch script quotes each value.
//!
//! The truth about a job's outcome is the result file it writes; the
//! scheduler's state only says when to look and, when there is no result,
//! what went wrong (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, CANCELLED).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tokio::process::Command;

use super::resources::Resources;

/// How GPUs are asked for.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GpuStyle {
    /// `--gres=gpu:N`
    #[default]
    Gres,
    /// `--gpus=N`
    Gpus,
}

/// `config/cluster.yaml`: where and how jobs are submitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Extra sbatch arguments, one argv element each (e.g. `--constraint=a100`).
    pub extra: Vec<String>,
    pub gpu_style: GpuStyle,
    /// First poll after this many seconds; the interval doubles up to `poll_max_s`.
    pub poll_min_s: f64,
    pub poll_max_s: f64,
    /// How long a missing result file is waited for once the job left the queue
    /// (shared file systems show files late).
    pub result_wait_s: f64,
    /// Resubmissions after PREEMPTED or NODE_FAIL.
    pub max_retries: u32,
    /// At most this many array tasks run at once (`%limit`).
    pub array_limit: u32,
    /// Stages that stay local even with `--executor slurm` (cheap or CPU-only).
    pub local_stages: Vec<String>,
    /// At most this many GPUs per job; 0 on a cluster without GPUs, where
    /// stages that ask for one run on CPUs.
    pub max_gpus: Option<u32>,
    /// At most this much memory per job (`16G`, or MB): a small cluster runs
    /// stages whose manifests ask for more (sized for the paper) within it.
    pub max_mem: Option<serde_yaml::Value>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            partition: None,
            account: None,
            qos: None,
            extra: Vec::new(),
            gpu_style: GpuStyle::Gres,
            poll_min_s: 3.0,
            poll_max_s: 120.0,
            result_wait_s: 60.0,
            max_retries: 2,
            array_limit: 32,
            local_stages: Vec::new(),
            max_gpus: None,
            max_mem: None,
        }
    }
}

impl ClusterConfig {
    /// `max_mem` in MB, if set.
    pub fn max_mem_mb(&self) -> Result<Option<u64>> {
        self.max_mem
            .as_ref()
            .map(super::resources::parse_mem)
            .transpose()
    }

    /// Reads `file`; a missing file means the defaults.
    pub fn load(file: &Path) -> Result<ClusterConfig> {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let cfg: ClusterConfig = serde_yaml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                cfg.max_mem_mb()
                    .with_context(|| format!("{}: max_mem", file.display()))?;
                Ok(cfg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }
}

/// A job's state as Slurm names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Completing,
    Requeued,
    Suspended,
    Completed,
    Failed,
    Timeout,
    OutOfMemory,
    NodeFail,
    Preempted,
    Cancelled,
    /// Anything else, UNKNOWN included: never taken as success.
    Other(String),
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        // sacct writes "CANCELLED by 0"; squeue writes the bare state.
        match s.split_whitespace().next().unwrap_or("") {
            "PENDING" | "CONFIGURING" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
                JobState::Pending
            }
            "RUNNING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => JobState::Running,
            "COMPLETING" => JobState::Completing,
            "REQUEUED" => JobState::Requeued,
            "SUSPENDED" | "STOPPED" => JobState::Suspended,
            "COMPLETED" => JobState::Completed,
            "FAILED" | "BOOT_FAIL" | "DEADLINE" | "SPECIAL_EXIT" => JobState::Failed,
            "TIMEOUT" => JobState::Timeout,
            "OUT_OF_MEMORY" | "OUT_OF_ME+" => JobState::OutOfMemory,
            "NODE_FAIL" => JobState::NodeFail,
            "PREEMPTED" => JobState::Preempted,
            "CANCELLED" | "REVOKED" => JobState::Cancelled,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Still in the scheduler's hands: keep following.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            JobState::Pending
                | JobState::Running
                | JobState::Completing
                | JobState::Requeued
                | JobState::Suspended
        )
    }

    /// Slurm's own name, for the store and for people.
    pub fn name(&self) -> String {
        match self {
            JobState::Pending => "PENDING".into(),
            JobState::Running => "RUNNING".into(),
            JobState::Completing => "COMPLETING".into(),
            JobState::Requeued => "REQUEUED".into(),
            JobState::Suspended => "SUSPENDED".into(),
            JobState::Completed => "COMPLETED".into(),
            JobState::Failed => "FAILED".into(),
            JobState::Timeout => "TIMEOUT".into(),
            JobState::OutOfMemory => "OUT_OF_MEMORY".into(),
            JobState::NodeFail => "NODE_FAIL".into(),
            JobState::Preempted => "PREEMPTED".into(),
            JobState::Cancelled => "CANCELLED".into(),
            JobState::Other(s) => s.clone(),
        }
    }
}

/// Quotes `s` for a POSIX shell: one single-quoted word, whatever it holds.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What to submit for one step.
pub struct Submission<'a> {
    pub job_name: &'a str,
    pub step_dir: &'a Path,
    pub workspace: &'a Path,
    pub exe: &'a Path,
    pub step: i64,
    pub resources: &'a Resources,
    /// `Some(n)`: an array of n tasks, task i running shard i.
    pub array: Option<u32>,
}

/// A Slurm client that counts its calls.
pub struct Slurm {
    pub cfg: ClusterConfig,
    calls: AtomicU64,
}

impl Slurm {
    pub fn new(cfg: ClusterConfig) -> Slurm {
        Slurm {
            cfg,
            calls: AtomicU64::new(0),
        }
    }

    /// Slurm client commands run so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn call(&self, program: &str, args: &[String]) -> Result<std::process::Output> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(program, ?args, "slurm call");
        Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {program}: is Slurm installed and SLURM_CONF set?"))
    }

    /// Writes the batch script of a step into its folder.
    pub fn write_script(&self, s: &Submission<'_>) -> Result<PathBuf> {
        let mut body = String::from("#!/bin/sh\n");
        body.push_str(&format!(
            "# Generated by pipeline for step {} ({}).\n",
            s.step, s.job_name
        ));
        let shard = if s.array.is_some() {
            " --shard \"$SLURM_ARRAY_TASK_ID\""
        } else {
            ""
        };
        body.push_str(&format!(
            "exec {} exec-step {} {}{shard}\n",
            shell_quote(&s.exe.to_string_lossy()),
            shell_quote(&s.workspace.to_string_lossy()),
            shell_quote(&s.step.to_string()),
        ));
        let path = s.step_dir.join("job.sbatch");
        crate::util::write_atomic(&path, body.as_bytes())?;
        Ok(path)
    }

    /// The sbatch arguments of a submission (options only; the script comes last).
    pub fn sbatch_args(&self, s: &Submission<'_>, script: &Path) -> Vec<String> {
        let r = s.resources;
        // `load` has refused an unreadable `max_mem` already.
        let mem_mb = match self.cfg.max_mem_mb().ok().flatten() {
            Some(m) => r.mem_mb.min(m),
            None => r.mem_mb,
        };
        let log = match s.array {
            Some(_) => s.step_dir.join("log.%a"),
            None => s.step_dir.join("log"),
        };
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={}", s.job_name),
            format!("--output={}", log.display()),
            "--open-mode=append".into(),
            format!("--chdir={}", s.workspace.display()),
            format!("--time={}", r.time_min.max(1)),
            format!("--mem={}M", mem_mb.max(1)),
            format!("--cpus-per-task={}", r.cpus.max(1)),
            "--requeue".into(),
            "--signal=B:USR1@90".into(),
        ];
        let gpus = self.cfg.max_gpus.map_or(r.gpus, |m| r.gpus.min(m));
        if gpus > 0 {
            a.push(match self.cfg.gpu_style {
                GpuStyle::Gres => format!("--gres=gpu:{gpus}"),
                GpuStyle::Gpus => format!("--gpus={gpus}"),
            });
        }
        if let Some(n) = s.array {
            a.push(format!(
                "--array=0-{}%{}",
                n.saturating_sub(1),
                self.cfg.array_limit.max(1)
            ));
        }
        for (flag, v) in [
            ("partition", &self.cfg.partition),
            ("account", &self.cfg.account),
            ("qos", &self.cfg.qos),
        ] {
            if let Some(v) = v {
                a.push(format!("--{flag}={v}"));
            }
        }
        a.extend(self.cfg.extra.iter().cloned());
        a.push(script.display().to_string());
        a
    }

    /// Submits; returns the job id.
    pub async fn submit(&self, s: &Submission<'_>) -> Result<String> {
        let script = self.write_script(s)?;
        let args = self.sbatch_args(s, &script);
        let out = self.call("sbatch", &args).await?;
        if !out.status.success() {
            bail!(
                "sbatch refused {}: {}",
                s.job_name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // `--parsable` answers "jobid" or "jobid;cluster".
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch gave no job id for {}: {:?}", s.job_name, text);
        }
        Ok(id)
    }

    /// One batched query for all `ids`: their states (an array job's state is
    /// its worst task's). Jobs Slurm no longer knows are absent from the map.
    pub async fn query(&self, ids: &[String]) -> Result<HashMap<String, JobState>> {
        let mut states: HashMap<String, Vec<JobState>> = HashMap::new();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let out = self
            .call(
                "squeue",
                &[
                    "--noheader".into(),
                    "--states=all".into(),
                    "--format=%i|%T".into(),
                    format!("--jobs={}", ids.join(",")),
                ],
            )
            .await?;
        // squeue fails with "Invalid job id" once every listed job was purged.
        if out.status.success() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((id, st)) = line.trim().split_once('|') {
                    let base = id.split('_').next().unwrap_or(id).to_string();
                    states.entry(base).or_default().push(JobState::parse(st));
                }
            }
        }
        let missing: Vec<&String> = ids.iter().filter(|i| !states.contains_key(*i)).collect();
        if !missing.is_empty() {
            // Accounting, where it answers, remembers jobs squeue has forgotten.
            let jobs: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            let out = self
                .call(
                    "sacct",
                    &[
                        "--parsable2".into(),
                        "--noheader".into(),
                        "--format=JobID,State".into(),
                        format!("--jobs={}", jobs.join(",")),
                    ],
                )
                .await;
            if let Ok(out) = out {
                if out.status.success() {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        if let Some((id, st)) = line.trim().split_once('|') {
                            if id.contains('.') {
                                continue; // job steps (.batch, .extern)
                            }
                            let base = id.split('_').next().unwrap_or(id).to_string();
                            states.entry(base).or_default().push(JobState::parse(st));
                        }
                    }
                }
            }
        }
        Ok(states.into_iter().map(|(id, v)| (id, worst(v))).collect())
    }

    /// Cancels every listed job in one call.
    pub async fn cancel(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let out = self.call("scancel", ids).await?;
        if !out.status.success() {
            bail!(
                "scancel failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The next poll interval after `last`.
    pub fn backoff(&self, last: Option<Duration>) -> Duration {
        let min = Duration::from_secs_f64(self.cfg.poll_min_s.max(0.05));
        let max = Duration::from_secs_f64(self.cfg.poll_max_s.max(self.cfg.poll_min_s).max(0.05));
        match last {
            None => min,
            Some(d) => (d * 2).min(max),
        }
    }
}

/// The state that decides for a set of array tasks: any still active keeps
/// the job active; otherwise the first failure, else COMPLETED.
fn worst(v: Vec<JobState>) -> JobState {
    if let Some(a) = v.iter().find(|s| s.is_active()) {
        return a.clone();
    }
    v.iter()
        .find(|s| **s != JobState::Completed)
        .cloned()
        .unwrap_or(JobState::Completed)
}

/// The line in a job's log (`log`, or `log.N` of an array's tasks, in
/// `step_dir`) where Slurm says it killed job `job` for its memory: sites that
/// enforce `--mem` by polling (`JobAcctGatherParams=OverMemoryKill`) end such a
/// job FAILED or CANCELLED, not OUT_OF_MEMORY, and say so only there. Lines of
/// other jobs (earlier attempts append to the same log) do not count.
pub fn memory_kill_line(step_dir: &Path, job: &str) -> Option<String> {
    let logs = std::fs::read_dir(step_dir).ok()?.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        (name == "log" || name.starts_with("log.")).then(|| e.path())
    });
    let ours = [format!("StepId={job}."), format!("StepId={job}_")];
    for log in logs {
        let Ok(text) = std::fs::read(&log) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let hit = text.lines().find(|l| {
            let l_low = l.to_ascii_lowercase();
            (l_low.contains("exceeded memory limit")
                || l_low.contains("oom_kill event")
                || l_low.contains("oom-kill event"))
                && ours.iter().any(|o| l.contains(o.as_str()))
        });
        if let Some(l) = hit {
            return Some(l.trim().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_memory_kill_is_found_in_the_jobs_own_log_lines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("log"),
            "slurmstepd-n1: error: StepId=41.batch exceeded memory limit (434532352 > 104857600), being killed\n\
             training...\n",
        )
        .unwrap();
        // An earlier attempt's kill does not make job 42 an OOM.
        assert_eq!(memory_kill_line(d.path(), "42"), None);
        assert!(memory_kill_line(d.path(), "41")
            .unwrap()
            .contains("exceeded memory limit"));
        // cgroup enforcement's wording, in an array task's log.
        std::fs::write(
            d.path().join("log.3"),
            "slurmstepd: error: Detected 1 oom_kill event in StepId=77_3.batch. \
             Some of the step tasks have been OOM Killed.\n",
        )
        .unwrap();
        assert!(memory_kill_line(d.path(), "77").is_some());
        assert_eq!(memory_kill_line(d.path(), "7"), None);
        // Slurm 22.05's cgroup v1 wording, as its test cluster writes it.
        std::fs::write(
            d.path().join("log.4"),
            "slurmstepd-localhost: error: Detected 1 oom-kill event(s) in StepId=88_4.batch. \
             Some of your processes may have been killed by the cgroup out-of-memory handler.\n",
        )
        .unwrap();
        assert!(memory_kill_line(d.path(), "88").is_some());
    }
    use super::*;

    #[test]
    fn quoting_keeps_every_value_one_word() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /); `x`"), "'$(rm -rf /); `x`'");
    }

    #[test]
    fn max_mem_and_max_gpus_cap_the_request() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cluster.yaml");
        std::fs::write(&f, "max_mem: 2G\nmax_gpus: 0\n").unwrap();
        let slurm = Slurm::new(ClusterConfig::load(&f).unwrap());
        let resources = Resources {
            cpus: 2,
            mem_mb: 32 * 1024,
            gpus: 1,
            time_min: 60,
        };
        let sub = Submission {
            job_name: "j",
            step_dir: d.path(),
            workspace: d.path(),
            exe: Path::new("pipeline"),
            step: 1,
            resources: &resources,
            array: None,
        };
        let args = slurm.sbatch_args(&sub, Path::new("job.sbatch"));
        assert!(args.contains(&"--mem=2048M".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a.contains("gpu")), "{args:?}");
        let small = Resources {
            mem_mb: 512,
            ..resources
        };
        let args = slurm.sbatch_args(
            &Submission {
                resources: &small,
                ..sub
            },
            Path::new("job.sbatch"),
        );
        assert!(args.contains(&"--mem=512M".to_string()), "{args:?}");
        std::fs::write(&f, "max_mem: lots\n").unwrap();
        let e = format!("{:#}", ClusterConfig::load(&f).unwrap_err());
        assert!(e.contains("max_mem"), "{e}");
    }

    #[test]
    fn states_parse_and_unknown_is_not_success() {
        assert_eq!(JobState::parse("CANCELLED by 0"), JobState::Cancelled);
        assert_eq!(
            JobState::parse("UNKNOWN"),
            JobState::Other("UNKNOWN".into())
        );
        assert!(!JobState::parse("").is_active());
        assert_eq!(
            worst(vec![JobState::Completed, JobState::Timeout]),
            JobState::Timeout
        );
        assert_eq!(
            worst(vec![JobState::Completed, JobState::Running]),
            JobState::Running
        );
    }
}
