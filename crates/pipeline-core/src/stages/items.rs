//! Per-item bookkeeping shared by the sharded stages (seedvc, elements): which
//! items a shard owns, the item log `items.jsonl` and the failure summary.
//! Their memo files are written with `util::write_atomic`, their seeded draws
//! come from `rng` (per item, never depending on the order or the shard).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::progress::Progress;

/// How often the item log rewrites the step's progress file (the head shows
/// it) and prints a progress line to the step's log.
const PROGRESS_FILE_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(30);

/// Whether item number `i` (in key order) belongs to this run: every item for
/// the gathering run, one in `n` for shard `(k, n)`.
pub fn owns(shard: Option<(u32, u32)>, i: usize) -> bool {
    match shard {
        None => true,
        Some((k, n)) => i % n.max(1) as usize == k as usize,
    }
}

/// BLAKE3 of a file's content, hex.
pub fn file_blake3(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(h.finalize().to_hex().to_string())
}

/// An item's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(String),
}

/// One line of `items.jsonl`.
#[derive(Debug, Serialize)]
pub struct ItemRow<'a> {
    pub item: &'a str,
    pub status: ItemStatus,
    /// Why the item failed; `null` for one that succeeded.
    pub reason: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Ok,
    Failed,
}

/// Appends `{"item","status","reason"}` lines to `step_dir/items.jsonl` from
/// any thread, and keeps `step_dir/progress.json` and the log's progress
/// lines up to date.
pub struct ItemLog {
    file: Mutex<std::fs::File>,
    path: PathBuf,
    stage: String,
    dir: PathBuf,
    start: Instant,
    /// Counts, and when the progress file and line were last written.
    progress: Mutex<(Progress, Instant, Instant)>,
}

impl ItemLog {
    /// The log of `stage`'s `total` items in `step_dir`.
    pub fn open(step_dir: &Path, stage: &str, total: usize) -> Result<ItemLog> {
        std::fs::create_dir_all(step_dir)
            .with_context(|| format!("cannot create {}", step_dir.display()))?;
        let path = step_dir.join("items.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let start = Instant::now();
        let progress = Progress {
            total: total as u64,
            ..Progress::default()
        };
        // Written at once, so the head shows the total before the first item ends.
        let _ = progress.write(step_dir);
        Ok(ItemLog {
            file: Mutex::new(file),
            path,
            stage: stage.to_string(),
            dir: step_dir.to_path_buf(),
            start,
            progress: Mutex::new((progress, start, start)),
        })
    }

    /// Counts one item; rewrites the progress file at most every second (and
    /// after the last item) and prints a line at most every 30 s.
    fn count(&self, failed: bool) {
        let now = Instant::now();
        let mut g = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let (p, file_at, line_at) = &mut *g;
        p.done += 1;
        p.failed += u64::from(failed);
        p.elapsed_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now.duration_since(*file_at) >= PROGRESS_FILE_EVERY || p.done >= p.total {
            // A display only: a failed write must not fail the item.
            let _ = p.write(&self.dir);
            *file_at = now;
        }
        if now.duration_since(*line_at) >= PROGRESS_LINE_EVERY && p.done < p.total {
            eprintln!("{}: {}", self.stage, p.text());
            *line_at = now;
        }
    }

    pub fn record(&self, item: &str, outcome: &Outcome) -> Result<()> {
        let row = match outcome {
            Outcome::Ok => ItemRow {
                item,
                status: ItemStatus::Ok,
                reason: None,
            },
            Outcome::Failed(r) => ItemRow {
                item,
                status: ItemStatus::Failed,
                reason: Some(r),
            },
        };
        let line = serde_json::to_string(&row)?;
        {
            let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
            writeln!(f, "{line}")
                .with_context(|| format!("cannot append to {}", self.path.display()))?;
        }
        self.count(matches!(outcome, Outcome::Failed(_)));
        Ok(())
    }
}

/// Says how many items failed and why, and fails when more than
/// `max_failed_fraction` of them did.
pub fn summarize(
    stage: &str,
    outcomes: &[(String, Outcome)],
    max_failed_fraction: f64,
) -> Result<()> {
    let failed: Vec<(&String, &String)> = outcomes
        .iter()
        .filter_map(|(k, o)| match o {
            Outcome::Failed(r) => Some((k, r)),
            Outcome::Ok => None,
        })
        .collect();
    let total = outcomes.len();
    let fraction = if total == 0 {
        0.0
    } else {
        failed.len() as f64 / total as f64
    };
    eprintln!(
        "{stage}: {} items, {} ok, {} failed ({:.1}%)",
        total,
        total - failed.len(),
        failed.len(),
        100.0 * fraction
    );
    for (k, r) in failed.iter().take(20) {
        eprintln!("  failed {k}: {r}");
    }
    if failed.len() > 20 {
        eprintln!("  ... and {} more (see items.jsonl)", failed.len() - 20);
    }
    if fraction > max_failed_fraction {
        bail!(
            "{stage}: {} of {total} items failed ({:.1}%), more than max_failed_fraction {}; \
             first: {}: {}",
            failed.len(),
            100.0 * fraction,
            max_failed_fraction,
            failed[0].0,
            failed[0].1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_log_keeps_the_progress_file_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let log = ItemLog::open(dir.path(), "elements", 3).unwrap();
        let read = || Progress::of_step(dir.path()).unwrap();
        assert_eq!((read().done, read().total), (0, 3));
        log.record("a", &Outcome::Ok).unwrap();
        log.record("b", &Outcome::Failed("bad".into())).unwrap();
        log.record("c", &Outcome::Ok).unwrap();
        // The last item is always written, however soon it comes.
        let p = read();
        assert_eq!((p.done, p.failed, p.total), (3, 1, 3));
        let lines = std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap();
        let rows: Vec<&str> = lines.lines().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], r#"{"item":"a","status":"ok","reason":null}"#);
        assert_eq!(rows[1], r#"{"item":"b","status":"failed","reason":"bad"}"#);
    }
}
