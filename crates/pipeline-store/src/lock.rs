//! The workspace lock: one `pipeline run` writes to a workspace at a time.
//!
//! The lock is a row holding the holder's pid, process start time, host and
//! command. A lock whose holder is dead (same host, the pid gone or reused)
//! is taken over with a message; a lock held from another host is never
//! taken silently: `pipeline unlock` clears it once a person has checked.

use anyhow::{bail, Result};

use super::Store;
use pipeline_core::util::{hostname, now_ms, process_alive, process_start};

/// The lock's row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct LockRow {
    pid: i64,
    pid_start: Option<i64>,
    host: String,
    started_at: i64,
    command: String,
}

const LOCK_ROW: &str = "SELECT pid, pid_start, host, started_at, command FROM lock WHERE id = 1";

impl LockRow {
    /// Whether the holder is a live process on this host.
    fn alive_here(&self) -> bool {
        self.host == hostname() && process_alive(self.pid as u32, self.pid_start)
    }

    fn stale(self) -> Stale {
        Stale {
            pid: self.pid,
            host: self.host,
            started_at: self.started_at,
            command: self.command,
        }
    }
}

/// The holder of a lock that was taken over.
#[derive(Debug, Clone)]
pub struct Stale {
    pub pid: i64,
    pub host: String,
    pub started_at: i64,
    pub command: String,
}

impl Store {
    /// Takes the workspace lock for this process. Returns the dead holder it
    /// replaced, if any, so the caller can say so.
    pub async fn lock(&self, command: &str) -> Result<Option<Stale>> {
        if self.network_fs.is_some() {
            super::netfs::take_lock_file(&self.dir, command)?;
        }
        let taken = self.lock_row(command).await;
        if taken.is_err() && self.network_fs.is_some() {
            super::netfs::release_lock_file(&self.dir, false);
        }
        taken
    }

    async fn lock_row(&self, command: &str) -> Result<Option<Stale>> {
        let me = std::process::id();
        let host = hostname();
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let row: Option<LockRow> = sqlx::query_as(LOCK_ROW).fetch_optional(&mut *conn).await?;
            let mut stale = None;
            if let Some(r) = row {
                let (pid, started_at) = (r.pid, r.started_at);
                let (holder_host, cmd) = (&r.host, &r.command);
                if *holder_host != host {
                    bail!(
                        "the workspace is locked by pid {pid} on host {holder_host} ({cmd}), \
                         started {}; if that process is gone, run `pipeline unlock`",
                        pipeline_core::util::human_ms(now_ms() - started_at) + " ago"
                    );
                }
                if pid as u32 != me && process_alive(pid as u32, r.pid_start) {
                    bail!(
                        "the workspace is locked by a running `{cmd}` (pid {pid}, started {} ago); \
                         wait for it to finish or stop it",
                        pipeline_core::util::human_ms(now_ms() - started_at)
                    );
                }
                if pid as u32 != me {
                    stale = Some(r.stale());
                }
            }
            sqlx::query(
                "INSERT OR REPLACE INTO lock (id, pid, pid_start, host, started_at, command) \
                 VALUES (1, ?, ?, ?, ?, ?)",
            )
            .bind(me as i64)
            .bind(process_start(me))
            .bind(&host)
            .bind(now_ms())
            .bind(command)
            .execute(&mut *conn)
            .await?;
            Ok(stale)
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(end).execute(&mut *conn).await?;
        result
    }

    /// Whether the lock is held by a live process on this host.
    pub async fn lock_holder_alive_here(&self) -> Result<bool> {
        let row: Option<LockRow> = sqlx::query_as(LOCK_ROW).fetch_optional(&self.pool).await?;
        Ok(row.is_some_and(|r| r.alive_here()))
    }

    /// Whether any process holds the lock (on this host or another).
    pub async fn is_locked(&self) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM lock WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Releases the lock if this process holds it.
    pub async fn unlock_mine(&self) -> Result<()> {
        if self.network_fs.is_some() {
            super::netfs::release_lock_file(&self.dir, false);
        }
        sqlx::query("DELETE FROM lock WHERE id = 1 AND pid = ? AND host = ?")
            .bind(std::process::id() as i64)
            .bind(hostname())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Clears the lock (`pipeline unlock`) and returns its holder, unless the
    /// holder is a live process on this host: that one is refused, since a
    /// second run beside it would take its steps. A holder on another host
    /// cannot be checked from here; the caller says so.
    pub async fn unlock_any(&self) -> Result<Option<Stale>> {
        let row: Option<LockRow> = sqlx::query_as(LOCK_ROW).fetch_optional(&self.pool).await?;
        let Some(r) = row else {
            return Ok(None);
        };
        if r.alive_here() {
            bail!(
                "the workspace is locked by a running `{}` (pid {} on this host, started {} ago); \
                 stop that process instead (`pipeline unlock` is for a holder on another host, \
                 which this machine cannot check)",
                r.command,
                r.pid,
                pipeline_core::util::human_ms(now_ms() - r.started_at)
            );
        }
        let holder = r.stale();
        sqlx::query("DELETE FROM lock WHERE id = 1 AND pid = ? AND host = ?")
            .bind(holder.pid)
            .bind(&holder.host)
            .execute(&self.pool)
            .await?;
        if self.network_fs.is_some() {
            super::netfs::release_lock_file(&self.dir, true);
        }
        Ok(Some(holder))
    }
}
