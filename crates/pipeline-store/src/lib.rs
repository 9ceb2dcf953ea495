//! The SQLite lineage store of a workspace (`.pipeline/state.db`), through sqlx.
//!
//! Owns the schema (`migrations/`, documented in `docs/STORE.md`) and every
//! query; knows nothing of YAML, plans or executors. The head process is the
//! only writer: compute nodes write result files that the head ingests.
//! WAL mode, a busy timeout, and the workspace lock ([`lock`]) keep one
//! `pipeline run` writing at a time.

pub mod lock;
pub mod netfs;
pub mod records;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use records::*;

/// Every store this process opened, so [`close_all`] can close them.
static OPENED: std::sync::Mutex<Vec<SqlitePool>> = std::sync::Mutex::new(Vec::new());

/// Closes every store this process opened: SQLite then checkpoints the
/// write-ahead log into the database file and removes it, so a finished
/// command leaves one self-contained `state.db` (one that a `-wal` file left
/// beside it does not complete, nor mask the damage of). Commands call it
/// before they exit; a crash leaves the log, which SQLite replays on open.
pub async fn close_all() {
    let pools = std::mem::take(&mut *OPENED.lock().unwrap_or_else(|e| e.into_inner()));
    for p in pools {
        p.close().await;
    }
}

/// An open store.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    /// The file system under the store, when it is shared between hosts.
    pub network_fs: Option<&'static str>,
    /// The store's folder (`.pipeline/`), where the lock file goes.
    pub(crate) dir: std::path::PathBuf,
}

/// Every SQLite database file begins with these 16 bytes.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// A store file that is there and not empty must be an SQLite database. Told
/// from its header, not by opening it: a write-ahead log left beside a file
/// damaged since can hold every page, the first included, and SQLite would
/// read the old database out of it as if nothing had happened.
fn check_header(db: &Path) -> Result<()> {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(db) else {
        return Ok(());
    };
    let mut head = Vec::with_capacity(16);
    f.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", db.display()))?;
    if head.is_empty() || head == SQLITE_MAGIC {
        return Ok(());
    }
    anyhow::bail!(
        "{} is not an SQLite database: its first bytes are not SQLite's header",
        db.display()
    )
}

impl Store {
    /// Opens (creating if needed) the store at `db` and applies pending migrations.
    pub async fn open(db: &Path) -> Result<Store> {
        if let Some(dir) = db.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the store folder {}", dir.display()))?;
        }
        check_header(db)?;
        // By file name, never as a URL: a workspace path may hold `%41`, `?`
        // or `#`, which a URL would decode or cut.
        let dir = db.parent().unwrap_or(Path::new(".")).to_path_buf();
        let network_fs = match netfs::kind_of(&dir) {
            netfs::FsKind::Network(name) => Some(name),
            netfs::FsKind::Local => None,
        };
        // WAL needs shared memory that hosts sharing a network file system do
        // not share: there, a rollback journal with full syncs.
        let (journal, sync) = match network_fs {
            Some(_) => (SqliteJournalMode::Delete, SqliteSynchronous::Full),
            None => (SqliteJournalMode::Wal, SqliteSynchronous::Normal),
        };
        let opts = SqliteConnectOptions::new()
            .filename(db)
            .create_if_missing(true)
            .journal_mode(journal)
            .synchronous(sync)
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
        sqlx::migrate!("../../migrations")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the store {}", db.display()))?;
        OPENED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pool.clone());
        Ok(Store {
            pool,
            network_fs,
            dir,
        })
    }

    /// SQLite's journal mode as the store runs it (`wal`, `delete`).
    pub async fn journal_mode(&self) -> Result<String> {
        let r: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_file_is_told_by_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        assert!(check_header(&db).is_ok(), "missing: created on open");
        std::fs::write(&db, b"").unwrap();
        assert!(check_header(&db).is_ok(), "empty: worded by the caller");
        std::fs::write(&db, b"this is no database ".repeat(300)).unwrap();
        let e = check_header(&db).unwrap_err().to_string();
        assert!(e.contains("is not an SQLite database"), "{e}");
        std::fs::write(&db, b"SQLite").unwrap();
        assert!(check_header(&db).is_err(), "a cut header");
        let mut real = SQLITE_MAGIC.to_vec();
        real.extend_from_slice(&[0; 100]);
        std::fs::write(&db, real).unwrap();
        assert!(check_header(&db).is_ok());
    }
}
