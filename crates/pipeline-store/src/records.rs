//! Typed records of the store and the queries that read and write them.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::Store;
use pipeline_core::hash::statcache::{self, Entry, TreeFile};
use pipeline_core::relpath::RelPath;
use pipeline_core::util::now_ms;

/// A `pipeline run` invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunId(pub i64);

pub use pipeline_core::exec::job::StepId;

/// The life of a step: queued -> running -> one of the three ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Queued => "queued",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => StepStatus::Queued,
            "running" => StepStatus::Running,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "interrupted" => StepStatus::Interrupted,
            other => bail!("the store holds an unknown step status '{other}'"),
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Interrupted
        )
    }
}

impl TryFrom<String> for StepStatus {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        StepStatus::parse(&s).map_err(|e| e.to_string())
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

pub struct NewRun<'a> {
    pub command: &'a str,
    pub profile: &'a str,
    pub executor: &'a str,
}

/// What the engine knows of a step when it queues it.
pub struct NewStep<'a> {
    pub run: RunId,
    pub stage: &'a str,
    pub kind: &'a str,
    pub fingerprint: &'a str,
    pub code_version: &'a str,
    pub command: Option<&'a str>,
    pub params_json: &'a str,
    pub env_json: &'a str,
    pub outs_json: &'a str,
    pub reason: &'a str,
    pub executor: &'a str,
}

/// A step as recorded (a row of `steps`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRecord {
    #[sqlx(try_from = "i64")]
    pub id: StepId,
    pub run_id: i64,
    pub stage: String,
    pub kind: String,
    pub fingerprint: String,
    pub code_version: String,
    pub command: Option<String>,
    pub params_json: String,
    pub env_json: String,
    pub outs_json: String,
    #[sqlx(try_from = "String")]
    pub status: StepStatus,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub executor: String,
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub pid_start: Option<i64>,
    pub slurm_job_id: Option<String>,
    pub slurm_state: Option<String>,
    pub attempts: i64,
    /// Restarts of the current Slurm job counted in `attempts`.
    pub slurm_requeues: i64,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub peak_rss_kb: Option<i64>,
}

/// One `pipeline run` (a row of `runs`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub id: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: String,
    pub command: String,
    pub host: String,
    /// `None` for a run recorded before users were.
    pub user: Option<String>,
    pub pid: i64,
    pub profile: String,
    pub executor: String,
}

/// One recorded version of an artifact (a row of `artifacts`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Artifact {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub path: RelPath,
    pub hash: String,
    pub size: i64,
    pub file_count: i64,
    pub is_dir: bool,
    pub recorded_at: i64,
    pub step_id: Option<i64>,
}

/// An input or output of a step: its declared name and the artifact version.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Port {
    pub name: String,
    #[sqlx(flatten)]
    pub artifact: Artifact,
}

/// An artifact version to record: what hashing produced.
pub struct ArtifactVersion<'a> {
    pub path: &'a RelPath,
    pub hash: &'a str,
    pub size: u64,
    pub is_dir: bool,
    pub entries: &'a [Entry],
}

/// How a finished step ended, as ingested from its result file.
pub struct StepEnd<'a> {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub error: Option<&'a str>,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub peak_rss_kb: Option<i64>,
    pub host: Option<&'a str>,
}

const STEP_COLUMNS: &str = "id, run_id, stage, kind, fingerprint, code_version, command, \
    params_json, env_json, outs_json, status, reason, error, exit_code, executor, host, pid, \
    pid_start, slurm_job_id, slurm_state, attempts, slurm_requeues, queued_at, started_at, finished_at, \
    peak_rss_kb";

const ARTIFACT_COLUMNS: &str = "id, path, hash, size, file_count, is_dir, recorded_at, step_id";

impl Store {
    pub async fn begin_run(&self, run: &NewRun<'_>) -> Result<RunId> {
        let id = sqlx::query(
            "INSERT INTO runs (started_at, status, command, host, user, pid, profile, executor) \
             VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(run.command)
        .bind(pipeline_core::util::hostname())
        .bind(pipeline_core::util::user_name())
        .bind(std::process::id() as i64)
        .bind(run.profile)
        .bind(run.executor)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        Ok(RunId(id))
    }

    pub async fn finish_run(&self, run: RunId, status: RunStatus) -> Result<()> {
        sqlx::query("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(now_ms())
            .bind(run.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Queues a step and records its inputs, in one transaction.
    pub async fn insert_step(
        &self,
        s: &NewStep<'_>,
        inputs: &[(String, ArtifactVersion<'_>)],
    ) -> Result<StepId> {
        self.insert_step_as(None, s, inputs).await
    }

    /// Inserts a step under `id` (`None`: the next free one); `pipeline
    /// recover` gives a rebuilt step the id of its folder.
    pub async fn insert_step_as(
        &self,
        id: Option<StepId>,
        s: &NewStep<'_>,
        inputs: &[(String, ArtifactVersion<'_>)],
    ) -> Result<StepId> {
        let mut tx = self.pool.begin().await?;
        let id = sqlx::query(
            "INSERT INTO steps (id, run_id, stage, kind, fingerprint, code_version, command, \
             params_json, env_json, outs_json, status, reason, executor, queued_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
        )
        .bind(id.map(|i| i.0))
        .bind(s.run.0)
        .bind(s.stage)
        .bind(s.kind)
        .bind(s.fingerprint)
        .bind(s.code_version)
        .bind(s.command)
        .bind(s.params_json)
        .bind(s.env_json)
        .bind(s.outs_json)
        .bind(s.reason)
        .bind(s.executor)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .last_insert_rowid();
        for (name, v) in inputs {
            let aid = artifact_id(&mut tx, v, None).await?;
            sqlx::query("INSERT INTO step_inputs (step_id, name, artifact_id) VALUES (?, ?, ?)")
                .bind(id)
                .bind(name)
                .bind(aid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(StepId(id))
    }

    pub async fn step_started(
        &self,
        id: StepId,
        pid: Option<u32>,
        pid_start: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE steps SET status = 'running', started_at = ?, host = ?, pid = ?, pid_start = ? \
             WHERE id = ?",
        )
        .bind(now_ms())
        .bind(pipeline_core::util::hostname())
        .bind(pid.map(i64::from))
        .bind(pid_start)
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how a step ended and, for a success, its outputs, in one
    /// transaction: either all of it is recorded or none.
    pub async fn finish_step(
        &self,
        id: StepId,
        end: &StepEnd<'_>,
        outputs: &[(String, ArtifactVersion<'_>)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE steps SET status = ?, exit_code = ?, error = ?, started_at = COALESCE(?, started_at), \
             finished_at = ?, peak_rss_kb = ?, host = COALESCE(?, host) WHERE id = ?",
        )
        .bind(end.status.as_str())
        .bind(end.exit_code)
        .bind(end.error)
        .bind(end.started_at)
        .bind(end.finished_at)
        .bind(end.peak_rss_kb)
        .bind(end.host)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        for (name, v) in outputs {
            let aid = artifact_id(&mut tx, v, Some(id)).await?;
            sqlx::query(
                "INSERT OR REPLACE INTO step_outputs (step_id, name, artifact_id) VALUES (?, ?, ?)",
            )
            .bind(id.0)
            .bind(name)
            .bind(aid)
            .execute(&mut *tx)
            .await?;
            put_stat(&mut tx, v.path.as_str(), v.hash, v.entries).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the Slurm job of a step the moment sbatch answers.
    pub async fn step_submitted(&self, id: StepId, job: &str) -> Result<()> {
        sqlx::query("UPDATE steps SET status = 'running', slurm_job_id = ?, slurm_state = 'SUBMITTED', started_at = COALESCE(started_at, ?) WHERE id = ?")
            .bind(job)
            .bind(now_ms())
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_slurm_state(&self, id: StepId, state: &str) -> Result<()> {
        sqlx::query("UPDATE steps SET slurm_state = ? WHERE id = ?")
            .bind(state)
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the error of a finished step (the head knows more than the
    /// job did: Slurm's word for why it ended).
    pub async fn set_error(&self, id: StepId, error: &str) -> Result<()> {
        sqlx::query("UPDATE steps SET error = ? WHERE id = ?")
            .bind(error)
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The step's attempts, and how many of them are restarts of its current
    /// Slurm job (0 for a job just submitted).
    pub async fn set_attempts(&self, id: StepId, attempts: u32, requeues: u32) -> Result<()> {
        sqlx::query("UPDATE steps SET attempts = ?, slurm_requeues = ? WHERE id = ?")
            .bind(attempts)
            .bind(requeues)
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_slurm_calls(&self, run: RunId, calls: u64) -> Result<()> {
        sqlx::query("UPDATE runs SET slurm_calls = ? WHERE id = ?")
            .bind(calls as i64)
            .bind(run.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rewrites every step's recorded environment values through `digest`
    /// where that changes them: stores written before values were hashed
    /// held the values themselves. Writes nothing when none needs it.
    pub async fn hash_recorded_env(&self, digest: impl Fn(&str) -> String) -> Result<usize> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, env_json FROM steps WHERE env_json <> '{}'")
                .fetch_all(&self.pool)
                .await?;
        let mut changed = 0;
        for (id, json) in rows {
            let env: BTreeMap<String, Option<String>> = serde_json::from_str(&json)
                .with_context(|| format!("step {id}: unreadable env_json in the store"))?;
            let hashed: BTreeMap<String, Option<String>> = env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_deref().map(&digest)))
                .collect();
            if hashed != env {
                sqlx::query("UPDATE steps SET env_json = ? WHERE id = ?")
                    .bind(serde_json::to_string(&hashed)?)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                changed += 1;
            }
        }
        if changed > 0 {
            // The old pages (values in the clear) are overwritten in the
            // database file now, and the log that held the new ones emptied,
            // rather than whenever the last connection closes.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(changed)
    }

    /// The newest run: (id, executor, status, Slurm client calls).
    pub async fn latest_run(&self) -> Result<Option<(i64, String, String, i64)>> {
        let r: Option<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, executor, status, slurm_calls FROM runs ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(r)
    }

    /// Whether a step of `stage` with key `fingerprint` succeeded.
    pub async fn succeeded_with_key(&self, stage: &str, fingerprint: &str) -> Result<bool> {
        let r: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM steps WHERE stage = ? AND fingerprint = ? AND status = 'succeeded' \
             LIMIT 1",
        )
        .bind(stage)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.is_some())
    }

    /// The ids of every recorded step.
    pub async fn step_ids(&self) -> Result<std::collections::BTreeSet<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT id FROM steps")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub async fn step(&self, id: StepId) -> Result<StepRecord> {
        sqlx::query_as(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = ?"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .with_context(|| format!("no step {id} in the store"))
    }

    /// The newest successful step of `stage`.
    pub async fn latest_success(&self, stage: &str) -> Result<Option<StepRecord>> {
        let r = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE stage = ? AND status = 'succeeded' \
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(stage)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r)
    }

    /// The newest step of `stage`, whatever its status.
    /// The step recorded last, of any stage.
    pub async fn newest_step(&self) -> Result<Option<StepRecord>> {
        let r = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(r)
    }

    pub async fn latest_step(&self, stage: &str) -> Result<Option<StepRecord>> {
        let r = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE stage = ? ORDER BY id DESC LIMIT 1"
        ))
        .bind(stage)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r)
    }

    /// Earlier steps of `stage` with this fingerprint that did not succeed
    /// (killed, interrupted, failed), newest first: a new step with the same
    /// key may continue from their checkpoints.
    pub async fn unfinished_twins(
        &self,
        stage: &str,
        fingerprint: &str,
        before: StepId,
    ) -> Result<Vec<StepId>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM steps WHERE stage = ? AND fingerprint = ? AND id < ? \
             AND status IN ('failed', 'interrupted') ORDER BY id DESC",
        )
        .bind(stage)
        .bind(fingerprint)
        .bind(before.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| StepId(id)).collect())
    }

    /// Steps that were queued or running when their head process stopped.
    pub async fn unfinished_steps(&self) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE status IN ('queued', 'running') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Every recorded step, oldest first.
    pub async fn all_steps(&self) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query_as(&format!("SELECT {STEP_COLUMNS} FROM steps ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Every recorded run, oldest first.
    pub async fn all_runs(&self) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query_as(
            "SELECT id, started_at, finished_at, status, command, host, user, pid, profile, executor \
             FROM runs ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Keeps the metrics file `path` that step `id` wrote.
    pub async fn put_metrics(&self, id: StepId, path: &str, json: &str) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO step_metrics (step_id, path, json) VALUES (?, ?, ?)")
            .bind(id.0)
            .bind(path)
            .bind(json)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The metrics files step `id` wrote: (path, JSON text), by path.
    pub async fn metrics_of(&self, id: StepId) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query_as("SELECT path, json FROM step_metrics WHERE step_id = ? ORDER BY path")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows)
    }

    /// The succeeded steps that kept metrics, newest first; of `stage` only
    /// when given.
    pub async fn steps_with_metrics(&self, stage: Option<&str>) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE status = 'succeeded' \
             AND id IN (SELECT step_id FROM step_metrics) AND (? IS NULL OR stage = ?) \
             ORDER BY id DESC"
        ))
        .bind(stage)
        .bind(stage)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The steps of `stage`, newest first.
    pub async fn steps_of(&self, stage: &str) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE stage = ? ORDER BY id DESC"
        ))
        .bind(stage)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Marks a step that will not finish, with the reason.
    pub async fn mark_step(&self, id: StepId, status: StepStatus, error: &str) -> Result<()> {
        sqlx::query("UPDATE steps SET status = ?, error = ?, finished_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(error)
            .bind(now_ms())
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn step_inputs(&self, id: StepId) -> Result<Vec<Port>> {
        self.ports("step_inputs", id).await
    }

    pub async fn step_outputs(&self, id: StepId) -> Result<Vec<Port>> {
        self.ports("step_outputs", id).await
    }

    async fn ports(&self, table: &str, id: StepId) -> Result<Vec<Port>> {
        let rows = sqlx::query_as(&format!(
            "SELECT p.name AS name, a.id AS id, a.path AS path, a.hash AS hash, a.size AS size, \
             a.file_count AS file_count, a.is_dir AS is_dir, a.recorded_at AS recorded_at, \
             a.step_id AS step_id FROM {table} p JOIN artifacts a ON a.id = p.artifact_id \
             WHERE p.step_id = ? ORDER BY p.name"
        ))
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The newest recorded version of the artifact at `path`.
    pub async fn latest_artifact(&self, path: &str) -> Result<Option<Artifact>> {
        let r = sqlx::query_as(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE path = ? ORDER BY id DESC LIMIT 1"
        ))
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r)
    }

    /// The version of `path` with content `hash` that a step produced, else
    /// the first version recorded with that content.
    pub async fn artifact_version(&self, path: &str, hash: &str) -> Result<Option<Artifact>> {
        let r = sqlx::query_as(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE path = ? AND hash = ? \
             ORDER BY step_id IS NULL, id DESC LIMIT 1"
        ))
        .bind(path)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r)
    }

    /// The newest version of every artifact a step produced.
    /// The newest recorded version of every artifact path, sources included.
    pub async fn recorded_artifacts(&self) -> Result<Vec<Artifact>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id IN \
             (SELECT MAX(id) FROM artifacts GROUP BY path) ORDER BY path"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn produced_artifacts(&self) -> Result<Vec<Artifact>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id IN \
             (SELECT MAX(id) FROM artifacts WHERE step_id IS NOT NULL GROUP BY path) ORDER BY path"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Steps that read the artifact at `path` with content `hash`.
    pub async fn consumers(&self, path: &str, hash: &str) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query_as(&format!(
            "SELECT {} FROM steps s WHERE s.id IN (SELECT i.step_id FROM step_inputs i \
             JOIN artifacts a ON a.id = i.artifact_id WHERE a.path = ? AND a.hash = ?) \
             AND s.status = 'succeeded' ORDER BY s.id",
            STEP_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(path)
        .bind(hash)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The stat-cache row of `path`: the hash and the entries it was computed from.
    pub async fn stat_get(&self, path: &str) -> Result<Option<(String, Vec<Entry>)>> {
        let r = sqlx::query("SELECT hash, entries FROM stat_cache WHERE path = ?")
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        match r {
            None => Ok(None),
            Some(r) => {
                let blob: Vec<u8> = r.try_get("entries")?;
                Ok(Some((r.try_get("hash")?, statcache::decode_stat(&blob)?)))
            }
        }
    }

    pub async fn stat_put(&self, path: &str, hash: &str, entries: &[Entry]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        put_stat(&mut tx, path, hash, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The file listing of a recorded folder version.
    pub async fn tree(&self, hash: &str) -> Result<Option<Vec<TreeFile>>> {
        let r = sqlx::query("SELECT listing FROM trees WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| statcache::decode_tree(&r.get::<Vec<u8>, _>("listing")))
            .transpose()
    }
}

/// The id of the artifact version `v` (inserting it when new). A version a
/// step produced is always a new row owned by that step.
async fn artifact_id(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    v: &ArtifactVersion<'_>,
    producer: Option<StepId>,
) -> Result<i64> {
    if producer.is_none() {
        let existing: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM artifacts WHERE path = ? AND hash = ? \
             ORDER BY step_id IS NULL, id DESC LIMIT 1",
        )
        .bind(v.path.as_str())
        .bind(v.hash)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((id,)) = existing {
            return Ok(id);
        }
    }
    if v.is_dir {
        sqlx::query("INSERT OR IGNORE INTO trees (hash, listing) VALUES (?, ?)")
            .bind(v.hash)
            .bind(statcache::encode_tree(v.entries))
            .execute(&mut **tx)
            .await?;
    }
    let id = sqlx::query(
        "INSERT INTO artifacts (path, hash, size, file_count, is_dir, recorded_at, step_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(v.path.as_str())
    .bind(v.hash)
    .bind(v.size as i64)
    .bind(v.entries.len() as i64)
    .bind(v.is_dir as i64)
    .bind(now_ms())
    .bind(producer.map(|s| s.0))
    .execute(&mut **tx)
    .await?
    .last_insert_rowid();
    Ok(id)
}

async fn put_stat(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    path: &str,
    hash: &str,
    entries: &[Entry],
) -> Result<()> {
    sqlx::query("INSERT OR REPLACE INTO stat_cache (path, hash, entries) VALUES (?, ?, ?)")
        .bind(path)
        .bind(hash)
        .bind(statcache::encode_stat(entries))
        .execute(&mut **tx)
        .await?;
    Ok(())
}
