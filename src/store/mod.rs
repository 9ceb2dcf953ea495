//! The SQLite lineage store of a workspace (`.pipeline/state.db`), through sqlx.
//!
//! Owns the schema (`migrations/`, documented in `docs/STORE.md`) and every
//! query; knows nothing of YAML, plans or executors. The head process is the
//! only writer: compute nodes write result files that the head ingests.
//! WAL mode, a busy timeout, and the workspace lock ([`lock`]) keep one
//! `pipeline run` writing at a time.

pub mod lock;
pub mod records;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use records::*;

/// An open store.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the store at `db` and applies pending migrations.
    pub async fn open(db: &Path) -> Result<Store> {
        if let Some(dir) = db.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the store folder {}", dir.display()))?;
        }
        // By file name, never as a URL: a workspace path may hold `%41`, `?`
        // or `#`, which a URL would decode or cut.
        let opts = SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // Deleted and rewritten rows are zeroed on disk: an environment
            // value an older version recorded does not linger in free pages.
            .pragma("secure_delete", "on");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening the store {}", db.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the store {}", db.display()))?;
        Ok(Store { pool })
    }

    /// Runs SQLite's own consistency check; the crash tests use it.
    pub async fn integrity_check(&self) -> Result<String> {
        let r: (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.0)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}
