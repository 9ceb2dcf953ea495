//! A workspace: the folder every data path is relative to, with its store
//! in `.pipeline/` (`state.db`, one folder per step, per-stage item memos).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::envkey::EnvKey;
use crate::hash::{self, HashStats, Hashed};
use crate::relpath::RelPath;
use crate::store::{StepId, Store};

pub struct Workspace {
    pub root: PathBuf,
    pub store: Store,
    /// Keys the hashes of declared environment values ([`EnvKey`]).
    pub env_key: EnvKey,
    /// Set by [`Workspace::look_only`]: hashing updates no stat cache.
    look_only: bool,
}

impl Workspace {
    /// Opens the workspace at `root` (created if needed) and its store. A
    /// store that cannot be read, or that lacks step folders it should know,
    /// is an error that points to `pipeline recover`.
    pub async fn open(root: &Path) -> Result<Workspace> {
        Self::open_as(root, true).await
    }

    /// Opens the workspace without comparing its store with its step folders
    /// (`pipeline recover`).
    pub async fn open_unchecked(root: &Path) -> Result<Workspace> {
        Self::open_as(root, false).await
    }

    async fn open_as(root: &Path, check: bool) -> Result<Workspace> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the workspace {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving the workspace {}", root.display()))?;
        let state = root.join(".pipeline");
        let db = state.join("state.db");
        let store = match Store::open(&db).await {
            Ok(s) => s,
            Err(e) if check && !super::recover::step_folders(&state).is_empty() => {
                anyhow::bail!(
                    "the store {} cannot be read ({}); nothing was changed. Run `pipeline \
                     recover` to keep it aside and rebuild it from the step folders",
                    db.display(),
                    e.root_cause()
                )
            }
            Err(e) => return Err(e),
        };
        if check {
            super::recover::check_store_knows_folders(&state, &db, &store).await?;
        }
        if let Some(fs) = store.network_fs {
            // Said once per workspace, not on every command.
            let noted = state.join("network-fs");
            if std::fs::read_to_string(&noted).ok().as_deref() != Some(fs) {
                eprintln!(
                    "note: this workspace's store is on a network file system ({fs}): it runs \
                     without WAL, with full syncs, and `pipeline run` also takes the lock file \
                     .pipeline/run.lock (README, \"The store, crash safety, lineage\")"
                );
                let _ = std::fs::write(&noted, fs);
            }
        }
        let env_key = EnvKey::load_or_create(&state)?;
        store.hash_recorded_env(|v| env_key.as_digest(v)).await?;
        Ok(Workspace {
            root,
            store,
            env_key,
            look_only: false,
        })
    }

    /// From now on this process only reads the store: what it hashes updates
    /// no stat cache (a dry run beside a live run writes nothing there).
    pub fn look_only(&mut self) {
        self.look_only = true;
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".pipeline")
    }

    pub fn step_dir(&self, id: StepId) -> PathBuf {
        step_dir(&self.root, id)
    }

    pub fn items_dir(&self, stage: &str) -> PathBuf {
        self.state_dir().join("items").join(stage)
    }

    /// Hashes the artifact at `path` through the stat cache, updating the cache
    /// when anything had to be read. `None` when nothing is there.
    pub async fn hash(&self, path: &RelPath) -> Result<Option<(Hashed, HashStats)>> {
        let t = std::time::Instant::now();
        // The files are stat'ed while the cache is read from the store.
        let abs = path.under(&self.root);
        let stat = tokio::task::spawn_blocking(move || hash::Seen::stat(&abs));
        let cached = self
            .store
            .stat_get(path.as_str())
            .await?
            .and_then(|(hash, entries)| {
                blake3::Hash::from_hex(&hash)
                    .ok()
                    .map(|hash| hash::Cached { hash, entries })
            });
        let Some(seen) = stat.await.context("the stat task stopped")?? else {
            return Ok(None);
        };
        let (result, seen) = tokio::task::spawn_blocking(move || {
            let r = seen.hash(cached.as_ref());
            (r, cached.map(|c| (c.hash, c.entries.len())))
        })
        .await
        .context("the hashing task stopped")?;
        let result = Some(result?);
        tracing::debug!(
            path = path.as_str(),
            elapsed_ms = t.elapsed().as_secs_f64() * 1000.0,
            reused = result.as_ref().map(|r| r.1.reused),
            rehashed = result.as_ref().map(|r| r.1.rehashed),
            "hashed"
        );
        if let Some((h, stats)) = &result {
            let same = seen.is_some_and(|(hash, n)| hash == h.hash && n == h.entries.len());
            if (stats.rehashed > 0 || !same) && !self.look_only {
                self.store
                    .stat_put(path.as_str(), h.hash.to_hex().as_str(), &h.entries)
                    .await?;
            }
        }
        Ok(result)
    }
}

pub use crate::exec::job::step_dir;
