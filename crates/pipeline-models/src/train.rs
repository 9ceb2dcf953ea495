//! The training loop shared by the three stages: per-epoch schedule, AdamW
//! groups, gradient clipping, bf16 autocast on CUDA, validation after every
//! epoch with early stopping and best-model selection, and a checkpoint every
//! epoch holding the model, the optimizer, the schedule position and the RNG
//! position, from which a killed run resumes bit for bit on CPU.
//!
//! Determinism: every random draw is a function of `(seed, epoch, ...)`: the
//! data order and augmentation (see [`super::rng`]) and libtorch's generator,
//! reseeded at the start of each epoch for dropout. The RNG state of a
//! checkpoint is therefore the seed and the next epoch, both in `state.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use super::amp::autocast_bf16;
use super::checkpoint::{load_strict, read_tensors, save_vars, write_tensors};
use super::data::{Batch, BatchSpec, ElementSet, Prefetcher, Split};
use super::metrics::{self, Report, ScoredClip};
use super::optim::{AdamW, ParamGroup};

pub use pipeline_core::stages::model_params::{Recipe, SelectionMetric};
use pipeline_core::stages::progress::{Progress, Training};

/// What one stage contributes to the loop.
pub trait Task {
    /// The training batches of `epoch`, in order.
    fn train_batches(&self, epoch: usize) -> Vec<BatchSpec>;
    /// The evaluation batches of `split` (validation selects the model, test
    /// is reported).
    fn eval_batches(&self, split: Split) -> Vec<BatchSpec>;
    /// The loss of one training batch (on `device`), and its named parts.
    fn loss(&self, batch: &Batch, device: Device) -> Result<(Tensor, Vec<(&'static str, f64)>)>;
    /// Scores every clip of the given batches (in eval mode).
    fn score(
        &self,
        batches: &mut dyn Iterator<Item = Result<Batch>>,
        device: Device,
    ) -> Result<Vec<ScoredClip>>;
    /// What model selection maximises.
    fn selection(&self) -> Selection;
    /// The stage's name, for progress lines.
    fn name(&self) -> &'static str;
}

/// The selection metric: one metric of one score, over every clip.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub score: &'static str,
    pub metric: SelectionMetric,
}

impl Selection {
    /// The task's selection with the recipe's metric, when it names one.
    pub fn with(self, metric: Option<SelectionMetric>) -> Self {
        Self {
            metric: metric.unwrap_or(self.metric),
            ..self
        }
    }

    /// The metric's value in `report` (0 when undefined).
    pub fn of(&self, report: &Report) -> f64 {
        let m = report.overall.get(self.score);
        match self.metric {
            SelectionMetric::Ap => m.and_then(|m| m.ap),
            SelectionMetric::Auc => m.and_then(|m| m.auc),
        }
        .unwrap_or(0.0)
    }
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub parts: Vec<(String, f64)>,
    pub steps: u64,
    pub val_metric: f64,
    pub val: serde_json::Value,
    /// Wall-clock seconds: kept out of `history.jsonl` (a declared output,
    /// so identical trainings give identical bytes) and of `state.json`;
    /// the stage writes them to its step folder (`timings.jsonl`).
    #[serde(skip)]
    pub seconds: f64,
}

/// The resumable position, `state.json` of a checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub optimizer_step: i64,
    pub seed: u64,
    pub best_metric: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_since_best: usize,
    pub stopped_early: bool,
    pub history: Vec<EpochRecord>,
}

/// Where the loop keeps its checkpoints: `epoch-NNNN/` folders (model,
/// optimizer, state) and `best.safetensors`.
pub struct CheckpointDir(pub PathBuf);

impl CheckpointDir {
    fn epoch_dir(&self, epoch: usize) -> PathBuf {
        self.0.join(format!("epoch-{epoch:04}"))
    }

    pub fn best(&self) -> PathBuf {
        self.0.join("best.safetensors")
    }

    /// The newest complete epoch checkpoint.
    pub fn latest(&self) -> Option<(usize, PathBuf)> {
        let rd = std::fs::read_dir(&self.0).ok()?;
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: usize = name.strip_prefix("epoch-")?.parse().ok()?;
                e.path().join("state.json").is_file().then(|| (n, e.path()))
            })
            .max_by_key(|(n, _)| *n)
    }

    /// Writes an epoch checkpoint into a temporary folder and renames it into
    /// place, so a kill leaves either no checkpoint or a complete one; keeps
    /// the two newest.
    fn save(&self, vs: &VarStore, opt: &AdamW, state: &TrainState) -> Result<()> {
        std::fs::create_dir_all(&self.0)
            .with_context(|| format!("creating {}", self.0.display()))?;
        let final_dir = self.epoch_dir(state.epochs_done);
        let tmp = self.0.join(format!(".tmp-epoch-{:04}", state.epochs_done));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        save_vars(vs, &tmp.join("model.safetensors"))?;
        write_tensors(&opt.state_tensors(), &tmp.join("optim.safetensors"))?;
        std::fs::write(tmp.join("state.json"), serde_json::to_vec_pretty(state)?)?;
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("moving checkpoint into {}", final_dir.display()))?;
        if state.epochs_done >= 2 {
            let _ = std::fs::remove_dir_all(self.epoch_dir(state.epochs_done - 2));
        }
        Ok(())
    }
}

/// Options of one [`fit`] call that are not part of the recipe.
pub struct FitOptions<'a> {
    pub device: Device,
    pub checkpoints: &'a Path,
    /// Print one line per epoch to stderr.
    pub verbose: bool,
    /// Where to keep `progress.json` (the step's folder; the head and
    /// `status` show it): epoch, step, loss, validation metric, time left.
    pub progress: Option<&'a Path>,
}

/// How often the loop rewrites `progress.json` within an epoch.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the loop's progress; a display only, so a failed write is ignored.
fn show_progress(dir: Option<&Path>, since: Instant, done: u64, total: u64, t: Training) {
    if let Some(d) = dir {
        let p = Progress {
            done,
            total,
            elapsed_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
            training: Some(t),
            ..Progress::default()
        };
        let _ = p.write(d);
    }
}

/// Trains `vs` with `task` until the recipe's epochs are done or early
/// stopping triggers, resuming from the newest checkpoint in
/// `opts.checkpoints`. Returns the final state; the best weights are in
/// `CheckpointDir(checkpoints).best()`.
pub fn fit(
    task: &dyn Task,
    set: &Arc<ElementSet>,
    vs: &VarStore,
    groups: Vec<ParamGroup>,
    recipe: &Recipe,
    opts: &FitOptions<'_>,
) -> Result<TrainState> {
    let dir = CheckpointDir(opts.checkpoints.to_path_buf());
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let mut opt = AdamW::new(groups, recipe.weight_decay);
    let mut state = TrainState {
        seed: recipe.seed,
        ..Default::default()
    };
    if let Some((epoch, path)) = dir.latest() {
        load_strict(vs, &path.join("model.safetensors"))?;
        state = serde_json::from_slice(&std::fs::read(path.join("state.json"))?)
            .with_context(|| format!("reading {}", path.join("state.json").display()))?;
        opt.load_state_tensors(
            &read_tensors(&path.join("optim.safetensors"))?,
            state.optimizer_step,
        )?;
        if opts.verbose {
            eprintln!(
                "{}: resuming after epoch {epoch} from {}",
                task.name(),
                path.display()
            );
        }
    }
    let use_amp = recipe.amp && opts.device.is_cuda();
    // Progress counts the steps of this process (a resumed run's rate is its own).
    let (fit_started, first_epoch) = (Instant::now(), state.epochs_done);
    let mut last_val = state.history.last().map(|r| r.val_metric);
    while state.epochs_done < recipe.epochs && !state.stopped_early {
        let epoch = state.epochs_done;
        let started = Instant::now();
        // Dropout draws from libtorch's generator: reseed per epoch so that a
        // resumed epoch draws the same masks.
        tch::manual_seed((recipe.seed.wrapping_mul(1_000_003) + epoch as u64) as i64);
        let lr = recipe.lr * recipe.schedule.factor(epoch, recipe.epochs);
        let specs = task.train_batches(epoch);
        let per_epoch = specs.len() as u64;
        let total = (recipe.epochs - first_epoch) as u64 * per_epoch;
        let before = (epoch - first_epoch) as u64 * per_epoch;
        let mut shown = Instant::now();
        let (mut sum, mut n, mut steps) = (0.0, 0.0, 0u64);
        let mut parts_sum: Vec<(&'static str, f64)> = Vec::new();
        for batch in Prefetcher::start(set.clone(), specs, recipe.workers, recipe.prefetch) {
            let batch = batch?;
            opt.zero_grad();
            let (loss, parts) = autocast_bf16(use_amp, || task.loss(&batch, opts.device))?;
            loss.backward();
            if let Some(c) = recipe.clip_norm {
                opt.clip_grad_norm(c);
            }
            opt.step(lr);
            sum += loss.double_value(&[]);
            n += 1.0;
            steps += 1;
            if parts_sum.is_empty() {
                parts_sum = parts.iter().map(|(k, _)| (*k, 0.0)).collect();
            }
            for (acc, (_, v)) in parts_sum.iter_mut().zip(&parts) {
                acc.1 += v;
            }
            if shown.elapsed() >= PROGRESS_EVERY || steps == per_epoch {
                shown = Instant::now();
                let t = Training {
                    epoch: epoch as u64 + 1,
                    epochs: recipe.epochs as u64,
                    step: steps,
                    steps: per_epoch,
                    loss: sum / n,
                    val_metric: last_val,
                };
                show_progress(opts.progress, fit_started, before + steps, total, t);
            }
        }
        let val_specs = task.eval_batches(Split::Val);
        let mut val_iter =
            Prefetcher::start(set.clone(), val_specs, recipe.workers, recipe.prefetch);
        let clips =
            tch::no_grad(|| autocast_bf16(use_amp, || task.score(&mut val_iter, opts.device)))?;
        let report = metrics::report(&clips);
        let metric = task.selection().with(recipe.select_on).of(&report);
        let val = serde_json::to_value(&report)?;
        let improved = state.best_metric.is_none_or(|b| metric > b);
        if improved {
            save_vars(vs, &dir.best())?;
            state.best_metric = Some(metric);
            state.best_epoch = Some(epoch);
            state.epochs_since_best = 0;
        } else {
            state.epochs_since_best += 1;
        }
        let record = EpochRecord {
            epoch,
            lr,
            train_loss: if n > 0.0 { sum / n } else { f64::NAN },
            parts: parts_sum
                .iter()
                .map(|(k, v)| (k.to_string(), v / n.max(1.0)))
                .collect(),
            steps,
            val_metric: metric,
            val,
            seconds: started.elapsed().as_secs_f64(),
        };
        if opts.verbose {
            eprintln!(
                "{} epoch {epoch}: lr {lr:.3e} loss {:.4} val {metric:.4}{} ({:.1}s)",
                task.name(),
                record.train_loss,
                if improved { " *" } else { "" },
                record.seconds
            );
        }
        last_val = Some(metric);
        let t = Training {
            epoch: epoch as u64 + 1,
            epochs: recipe.epochs as u64,
            step: steps,
            steps: per_epoch,
            loss: record.train_loss,
            val_metric: last_val,
        };
        show_progress(opts.progress, fit_started, before + steps, total, t);
        state.history.push(record);
        state.epochs_done += 1;
        state.optimizer_step = opt.step;
        if recipe
            .patience
            .is_some_and(|p| state.epochs_since_best >= p)
        {
            state.stopped_early = true;
        }
        dir.save(vs, &opt, &state)?;
    }
    Ok(state)
}

/// Variables of `vs` whose names start with one of `prefixes`, sorted by name
/// (a stable order for the optimizer state).
pub fn params_with_prefix(
    vs: &VarStore,
    prefixes: &[&str],
    exclude: bool,
) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)) != exclude)
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `select_on` replaces the stage's own metric, and only when named: on
    /// these clips AP and AUC differ, so the value read tells which one ran.
    #[test]
    fn the_recipe_names_the_selection_metric() {
        use super::super::category::Category;
        let clip = |category, label, s: f64| ScoredClip {
            category,
            label,
            scores: [("final", s)].into_iter().collect(),
            weights: None,
        };
        let clips = [
            clip(Category::Rvra, false, 0.1),
            clip(Category::Rvra, false, 0.7),
            clip(Category::Fvra, true, 0.6),
            clip(Category::Fvra, true, 0.9),
            clip(Category::Fvra, true, 0.2),
        ];
        let report = metrics::report(&clips);
        let (auc, ap) = (
            report.overall["final"].auc.unwrap(),
            report.overall["final"].ap.unwrap(),
        );
        assert!((auc - ap).abs() > 0.05, "auc {auc} ap {ap}");
        let own = Selection {
            score: "final",
            metric: SelectionMetric::Ap,
        };
        let recipe = |json: &str| serde_json::from_str::<Recipe>(json);
        let named = recipe(r#"{"select_on": "auc"}"#).unwrap().select_on;
        assert_eq!(named, Some(SelectionMetric::Auc));
        assert_eq!(own.with(named).of(&report), auc);
        assert_eq!(own.with(recipe("{}").unwrap().select_on).of(&report), ap);
        let bad = recipe(r#"{"select_on": "f1"}"#).unwrap_err().to_string();
        assert!(bad.contains("ap") && bad.contains("auc"), "{bad}");
    }

    /// A resumed run compares later epochs against the best metric read back
    /// from `state.json`: one ulp off there turns a tie into an improvement
    /// and changes which weights are kept. These values do not survive
    /// serde_json's default (fast, inexact) float parsing.
    #[test]
    fn the_train_state_reads_back_bit_for_bit() {
        let values = [
            0.9883853299755387,
            0.22981246145434542,
            0.018231867957088754,
        ];
        for v in values {
            let state = TrainState {
                best_metric: Some(v),
                ..Default::default()
            };
            let back: TrainState =
                serde_json::from_slice(&serde_json::to_vec_pretty(&state).unwrap()).unwrap();
            assert_eq!(back.best_metric.unwrap().to_bits(), v.to_bits(), "{v}");
        }
    }
}
