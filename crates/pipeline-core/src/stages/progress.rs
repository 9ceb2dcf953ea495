//! A running step's progress through its items, or a training stage's
//! through its epochs and steps: what the item log or the training loop
//! writes (`progress.json` in the step's folder, or each shard's), what the
//! head sums over the shards and shows, and its wording.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A step's progress through its items, as its item log writes it (in the
/// step's folder, or each shard's) while it runs.
pub const PROGRESS_FILE: &str = "progress.json";

/// Items done (failed ones included) out of `total`, after `elapsed_ms`. A
/// training stage counts optimizer steps as its items (`total`: every epoch's
/// steps) and says where it is in `training`; a download counts bytes
/// (`bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub failed: u64,
    pub total: u64,
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// `done` and `total` count bytes, not items.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bytes: bool,
}

/// Where a training loop is: epoch `epoch` (from 1) of `epochs`, step
/// `step` of its `steps`, the running mean of the epoch's loss, and the
/// validation metric after the last finished epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub epoch: u64,
    pub epochs: u64,
    pub step: u64,
    pub steps: u64,
    pub loss: f64,
    pub val_metric: Option<f64>,
}

impl Progress {
    /// Writes `dir/progress.json` (replaced whole).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        crate::util::write_atomic(&dir.join(PROGRESS_FILE), &serde_json::to_vec(self)?)
    }

    /// The progress of a running step: its own file (a whole run, or the
    /// gathering after its shards), else its shards' files (`shard-N/`)
    /// summed, or `None` when there is none.
    pub fn of_step(step_dir: &Path) -> Option<Progress> {
        let read = |d: &Path| -> Option<Progress> {
            serde_json::from_slice(&std::fs::read(d.join(PROGRESS_FILE)).ok()?).ok()
        };
        if let Some(own) = read(step_dir) {
            return Some(own);
        }
        let shards = std::fs::read_dir(step_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("shard-"))
            .filter_map(|e| read(&e.path()));
        let mut sum: Option<Progress> = None;
        for p in shards {
            let s = sum.get_or_insert_with(Progress::default);
            s.done += p.done;
            s.failed += p.failed;
            s.total += p.total;
            s.elapsed_ms = s.elapsed_ms.max(p.elapsed_ms);
        }
        sum
    }

    /// "120 of 2100 items (5.7%), 3 failed, 85.1 items/s, about 23 s left".
    pub fn text(&self) -> String {
        if let Some(t) = &self.training {
            let mut s = format!(
                "epoch {} of {}, step {} of {}, loss {:.4}",
                t.epoch, t.epochs, t.step, t.steps, t.loss
            );
            if let Some(v) = t.val_metric {
                s += &format!(", val {v:.4}");
            }
            if self.done > 0 && self.done < self.total && self.elapsed_ms > 0 {
                let left =
                    (self.total - self.done) as f64 * self.elapsed_ms as f64 / self.done as f64;
                s += &format!(", about {} left", crate::util::human_ms(left as i64));
            }
            return s;
        }
        if self.bytes {
            return self.bytes_text();
        }
        let mut s = format!("{} of {} items", self.done, self.total);
        if self.total > 0 {
            s += &format!(" ({:.1}%)", 100.0 * self.done as f64 / self.total as f64);
        }
        if self.failed > 0 {
            s += &format!(", {} failed", self.failed);
        }
        if self.done > 0 && self.elapsed_ms > 0 {
            let rate = self.done as f64 * 1000.0 / self.elapsed_ms as f64;
            s += &format!(", {rate:.1} items/s");
            if self.done < self.total {
                let left = (self.total - self.done) as f64 / rate * 1000.0;
                s += &format!(", about {} left", crate::util::human_ms(left as i64));
            }
        }
        s
    }

    /// "1.5 MiB of 3.0 MiB (50.0%), 1.5 MiB/s, about 1.0 s left".
    fn bytes_text(&self) -> String {
        use crate::util::human_bytes;
        let mut s = format!("{} of {}", human_bytes(self.done), human_bytes(self.total));
        if self.total > 0 {
            s += &format!(" ({:.1}%)", 100.0 * self.done as f64 / self.total as f64);
        }
        if self.done > 0 && self.elapsed_ms > 0 {
            let rate = self.done as f64 * 1000.0 / self.elapsed_ms as f64;
            s += &format!(", {}/s", human_bytes(rate as u64));
            if self.done < self.total {
                let left = (self.total - self.done) as f64 / rate * 1000.0;
                s += &format!(", about {} left", crate::util::human_ms(left as i64));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steps_progress_sums_its_shards_and_reads_as_text() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Progress::of_step(dir.path()), None);
        for (i, done) in [(0, 4u64), (1, 6)] {
            let d = dir.path().join(format!("shard-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            Progress {
                done,
                failed: 1,
                total: 10,
                elapsed_ms: 1000 * (i + 1),
                ..Progress::default()
            }
            .write(&d)
            .unwrap();
        }
        let p = Progress::of_step(dir.path()).unwrap();
        assert_eq!(
            p,
            Progress {
                done: 10,
                failed: 2,
                total: 20,
                elapsed_ms: 2000,
                ..Progress::default()
            }
        );
        assert_eq!(
            p.text(),
            "10 of 20 items (50.0%), 2 failed, 5.0 items/s, about 2.0 s left"
        );
        let nothing_yet = Progress {
            total: 7,
            ..Progress::default()
        };
        assert_eq!(nothing_yet.text(), "0 of 7 items (0.0%)");
        let training = Progress {
            done: 250,
            total: 1000,
            elapsed_ms: 10_000,
            training: Some(Training {
                epoch: 3,
                epochs: 10,
                step: 50,
                steps: 100,
                loss: 0.41234,
                val_metric: Some(0.9),
            }),
            ..Progress::default()
        };
        assert_eq!(
            training.text(),
            "epoch 3 of 10, step 50 of 100, loss 0.4123, val 0.9000, about 30.0 s left"
        );
        let download = Progress {
            done: 3 << 20,
            total: 6 << 20,
            elapsed_ms: 2000,
            bytes: true,
            ..Progress::default()
        };
        assert_eq!(
            download.text(),
            "3.0 MiB of 6.0 MiB (50.0%), 1.5 MiB/s, about 2.0 s left"
        );
        // The gathering run's own file, once there, is the step's progress.
        nothing_yet.write(dir.path()).unwrap();
        assert_eq!(Progress::of_step(dir.path()), Some(nothing_yet));
    }
}
