//! Running a training stage end to end from its parameters: device and
//! threads, seeded initialisation, [`super::train::fit`] with checkpoints in
//! the step folder, then the outputs: the best weights as `model.safetensors`,
//! `metrics.json` (the best epoch's full validation report) and
//! `history.jsonl`. The built-in stage kinds are thin wrappers over these.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{nn::VarStore, Device};

use super::baseline::{VideoCavMaeFt, HEAD_PREFIXES};
use super::checkpoint::{load_mapped, load_matching, load_strict, save_vars};
use super::data::{ElementSet, Prefetcher, Split};
use super::device::DeviceChoice;
use super::metrics::{self, Bootstrap, ScoredClip};
use super::recipes::{
    AudioNorm, BaselineParams, BaselineTask, Schedule, Stage1Params, Stage1Task, Stage2Params,
    Stage2Phase, Stage2Task,
};
use super::stage1::AudioPretrainNet;
use super::stage2::AvDetector;
use super::train::{fit, CheckpointDir, FitOptions, Recipe, Task, TrainState};

/// Where a training stage reads and writes.
pub struct StagePaths<'a> {
    pub elements: &'a Path,
    /// Stage 2 only: the stage-1 output folder.
    pub stage1: Option<&'a Path>,
    /// Optional pretrained weights: for stage 2 the MARLIN model's state dict
    /// (names under `encoder.`), for the baseline the OpenAVFF pre-training
    /// checkpoint (same names as `VideoCAVMAEFT`; the new head stays fresh).
    pub pretrained: Option<&'a Path>,
    /// The output folder (created).
    pub out: &'a Path,
    /// Survives a retry: per-epoch checkpoints live here.
    pub work: &'a Path,
    pub threads: usize,
    pub verbose: bool,
}

/// Parses stage parameters over the kind's defaults (a partial `recipe`
/// keeps the stage's other recipe values), as `pipeline` checked them when it
/// planned the step; the error names the stage and the key.
pub fn parse_params<T: Default + Serialize + DeserializeOwned>(
    stage: &str,
    params: &serde_json::Value,
) -> Result<T> {
    pipeline_core::stages::parse_over_defaults(params)
        .with_context(|| format!("{stage}: invalid parameters"))
}

fn setup(paths: &StagePaths<'_>, seed: u64) -> Result<(Device, Arc<ElementSet>)> {
    let device = DeviceChoice::from_env()?.resolve()?;
    if paths.threads > 0 {
        tch::set_num_threads(paths.threads as i32);
    }
    let set = ElementSet::open(paths.elements)
        .with_context(|| format!("opening elements {}", paths.elements.display()))?;
    // Initial weights depend on the seed only.
    tch::manual_seed(seed as i64);
    Ok((device, Arc::new(set)))
}

/// The video encoder sees the element frames as they are: their size must be
/// the configured `img_size`.
pub(crate) fn check_frame_size(set: &ElementSet, img_size: i64, stage: &str) -> Result<()> {
    ensure!(
        set.frame_size as i64 == img_size,
        "{stage}: the elements have {s}x{s} frames but the model's img_size is {img_size}; \
         set img_size to {s} in the stage's configuration (or extract elements at {img_size})",
        s = set.frame_size
    );
    Ok(())
}

/// A split's clips in the order `task` scores them, and their scores.
pub(crate) fn score_split(
    task: &dyn Task,
    set: &Arc<ElementSet>,
    recipe: &Recipe,
    device: Device,
    split: Split,
) -> Result<(Vec<usize>, Vec<ScoredClip>)> {
    let specs = task.eval_batches(split);
    let order = specs.iter().flat_map(|b| b.clips.clone()).collect();
    let mut batches = Prefetcher::start(set.clone(), specs, recipe.workers, 2);
    Ok((order, tch::no_grad(|| task.score(&mut batches, device))?))
}

/// After training: reload the best weights (chosen on validation), score
/// the validation and the test clips once more, write the outputs. The test
/// report carries the bootstrap intervals; the validation report is the one
/// the model was selected on, so it is optimistic and says so by its name.
fn finish(
    task: &dyn Task,
    set: &Arc<ElementSet>,
    vs: &mut VarStore,
    (state, checkpoints): (&TrainState, &Path),
    paths: &StagePaths<'_>,
    recipe: &Recipe,
    extra: serde_json::Value,
) -> Result<()> {
    load_strict(vs, &CheckpointDir(checkpoints.to_path_buf()).best())?;
    let device = vs.device();
    let score = |split: Split| score_split(task, set, recipe, device, split);
    let (val_order, val_clips) = score(Split::Val)?;
    let val = metrics::report(&val_clips);
    let (test_order, test_clips) = score(Split::Test)?;
    let boot = Bootstrap {
        replicates: recipe.bootstrap_replicates,
        seed: recipe.seed,
    };
    let test = (!test_clips.is_empty()).then(|| metrics::report_with_intervals(&test_clips, boot));
    let mut per_clip = vec![
        ("validation", val_order, val_clips),
        ("test", test_order, test_clips),
    ];
    let train = if recipe.report_train {
        let (order, clips) = score(Split::Train)?;
        let report = metrics::report(&clips);
        per_clip.push(("train_in_sample", order, clips));
        Some(report)
    } else {
        None
    };
    std::fs::create_dir_all(paths.out)?;
    save_vars(vs, &paths.out.join("model.safetensors"))?;
    let mut metrics = serde_json::json!({
        "stage": task.name(),
        "best_epoch": state.best_epoch,
        "selection_metric": task.selection().with(recipe.select_on).of(&val),
        "epochs_run": state.epochs_done,
        "stopped_early": state.stopped_early,
        "validation": val,
        "test": test,
        "bootstrap": boot,
        "extra": extra,
    });
    if let Some(train) = train {
        metrics["train_in_sample"] = serde_json::to_value(train)?;
    }
    std::fs::write(
        paths.out.join("metrics.json"),
        serde_json::to_vec_pretty(&metrics)?,
    )?;
    write_scores(&paths.out.join("scores.jsonl"), set, &per_clip)?;
    let mut h = std::fs::File::create(paths.out.join("history.jsonl"))?;
    for rec in &state.history {
        writeln!(h, "{}", serde_json::to_string(rec)?)?;
    }
    // The epochs' wall-clock seconds go to the step folder, not the output.
    std::fs::create_dir_all(paths.work)?;
    let mut t = std::fs::File::create(paths.work.join("timings.jsonl"))?;
    // Epochs a resumed run read back from a checkpoint have no time here.
    for rec in state.history.iter().filter(|r| r.seconds > 0.0) {
        let line = serde_json::json!({"epoch": rec.epoch, "seconds": rec.seconds});
        writeln!(t, "{line}")?;
    }
    Ok(())
}

/// `scores.jsonl`: one line per scored clip (split, key, identity,
/// category, label, every score and stage 2's fusion weights), the data
/// behind each reported metric, for ROC curves and for fusions or
/// calibrations fitted afterwards.
fn write_scores(
    path: &Path,
    set: &ElementSet,
    splits: &[(&str, Vec<usize>, Vec<ScoredClip>)],
) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (split, order, clips) in splits {
        ensure!(
            order.len() == clips.len(),
            "{split}: {} clips scored for {} loaded",
            clips.len(),
            order.len()
        );
        for (&i, c) in order.iter().zip(clips) {
            let meta = &set.clips[i];
            let line = serde_json::json!({
                "split": split,
                "key": meta.key,
                "identity": meta.identity,
                "category": c.category.folder(),
                "label": c.label,
                "scores": c.scores,
                "weights": c.weights,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Stage 1: trains `AudioPretrainNet`; the output holds the whole network
/// (encoder, projection, `aux_head`, prototype).
pub fn run_stage1(params: &Stage1Params, paths: &StagePaths<'_>) -> Result<TrainState> {
    let (device, set) = setup(paths, params.recipe.seed)?;
    let mut vs = VarStore::new(device);
    let net = AudioPretrainNet::new(vs.root(), &params.model);
    let task = Stage1Task {
        net: &net,
        set: &set,
        params,
    };
    let opts = FitOptions {
        device,
        checkpoints: &paths.work.join("checkpoints"),
        verbose: paths.verbose,
        progress: Some(paths.work),
    };
    let state = fit(
        &task,
        &set,
        &vs,
        Stage1Task::groups(&vs),
        &params.recipe,
        &opts,
    )?;
    let checkpoints = paths.work.join("checkpoints");
    finish(
        &task,
        &set,
        &mut vs,
        (&state, &checkpoints),
        paths,
        &params.recipe,
        serde_json::Value::Null,
    )?;
    Ok(state)
}

/// Stage 2: loads the stage-1 encoder into `audio_enc` and its `aux_head` into
/// `audio_head` (MODELS.md defect 1), both frozen, and trains the rest.
pub fn run_stage2(params: &Stage2Params, paths: &StagePaths<'_>) -> Result<TrainState> {
    let (device, set) = setup(paths, params.recipe.seed)?;
    check_frame_size(&set, params.model.visual_backbone.img_size, "stage2")?;
    let mut vs = VarStore::new(device);
    let net = AvDetector::new(vs.root(), &params.model);
    let stage1 = paths
        .stage1
        .context("stage2 needs the stage-1 output as input 'stage1'")?
        .join("model.safetensors");
    load_mapped(
        &vs,
        &stage1,
        &[("audio_enc.", "audio_enc."), ("aux_head.", "audio_head.")],
    )
    .with_context(|| {
        format!(
            "loading the stage-1 encoder and head from {}",
            stage1.display()
        )
    })?;
    if let Some(marlin) = paths.pretrained {
        load_mapped(&vs, marlin, &[("encoder.", "vis_enc.backbone.encoder.")])
            .with_context(|| format!("loading MARLIN weights from {}", marlin.display()))?;
    }
    let held_out = set.split(Split::Fusion).len();
    ensure!(
        held_out > 0 || params.fusion_refit.is_none(),
        "stage2: fusion_refit fits the fusion on the elements' fusion split, and this element \
         set has none; set split.fusion_fraction in the elements stage's configuration (or \
         drop fusion_refit)"
    );
    let groups = Stage2Task::groups(&vs, params.backbone_lr_scale);
    let task = Stage2Task {
        net: &net,
        set: &set,
        params,
        phase: Stage2Phase::Joint,
    };
    let checkpoints = paths.work.join("checkpoints");
    let opts = FitOptions {
        device,
        checkpoints: &checkpoints,
        verbose: paths.verbose,
        progress: Some(paths.work),
    };
    let state = fit(&task, &set, &vs, groups, &params.recipe, &opts)?;
    let Some(refit) = &params.fusion_refit else {
        finish(
            &task,
            &set,
            &mut vs,
            (&state, &checkpoints),
            paths,
            &params.recipe,
            serde_json::Value::Null,
        )?;
        return Ok(state);
    };
    // The fusion refit starts from the joint training's kept epoch.
    load_strict(&vs, &CheckpointDir(checkpoints.clone()).best())?;
    // What the jointly fitted gate scores, for the refit's gain.
    let joint_val =
        metrics::report(&score_split(&task, &set, &params.recipe, device, Split::Val)?.1);
    let joint_test =
        metrics::report(&score_split(&task, &set, &params.recipe, device, Split::Test)?.1);
    if paths.verbose {
        eprintln!(
            "stage2: joint training kept epoch {}; refitting the fusion on {held_out} held-out clips",
            state.best_epoch.map_or("none".into(), |e| e.to_string())
        );
    }
    let recipe = Recipe {
        epochs: refit.epochs,
        lr: refit.lr,
        weight_decay: refit.weight_decay,
        patience: refit.patience,
        schedule: Schedule::WarmupCosine {
            warmup: 0,
            final_factor: 0.02,
        },
        ..params.recipe.clone()
    };
    let refit_task = Stage2Task {
        phase: Stage2Phase::FusionRefit,
        ..task
    };
    let refit_checkpoints = paths.work.join("fusion_checkpoints");
    let refit_state = fit(
        &refit_task,
        &set,
        &vs,
        Stage2Task::fusion_groups(&vs),
        &recipe,
        &FitOptions {
            device,
            checkpoints: &refit_checkpoints,
            verbose: paths.verbose,
            progress: Some(paths.work),
        },
    )?;
    let extra = serde_json::json!({
        "fusion_refit": {
            "held_out_clips": held_out,
            "joint_best_epoch": state.best_epoch,
            "joint_epochs_run": state.epochs_done,
            "joint_history": state.history,
            "joint_validation": joint_val,
            "joint_test": joint_test,
        }
    });
    finish(
        &refit_task,
        &set,
        &mut vs,
        (&refit_state, &refit_checkpoints),
        paths,
        &recipe,
        extra,
    )?;
    Ok(refit_state)
}

/// The OpenAVFF baseline.
pub fn run_baseline(params: &BaselineParams, paths: &StagePaths<'_>) -> Result<TrainState> {
    let (device, set) = setup(paths, params.recipe.seed)?;
    check_frame_size(&set, params.model.img_size, "baseline")?;
    let mut vs = VarStore::new(device);
    let net = VideoCavMaeFt::new(vs.root(), &params.model);
    if let Some(pre) = paths.pretrained {
        let n = load_matching(&vs, pre, HEAD_PREFIXES)
            .with_context(|| format!("loading pretrained weights from {}", pre.display()))?;
        if paths.verbose {
            eprintln!("baseline: {n} tensors from {}", pre.display());
        }
    }
    let norm = AudioNorm::from_training_set(&set)?;
    let task = BaselineTask {
        net: &net,
        set: &set,
        params,
        norm,
    };
    let opts = FitOptions {
        device,
        checkpoints: &paths.work.join("checkpoints"),
        verbose: paths.verbose,
        progress: Some(paths.work),
    };
    let groups = BaselineTask::groups(&vs, params.head_lr_scale);
    let state = fit(&task, &set, &vs, groups, &params.recipe, &opts)?;
    let extra = serde_json::json!({ "audio_norm": norm });
    let checkpoints = paths.work.join("checkpoints");
    finish(
        &task,
        &set,
        &mut vs,
        (&state, &checkpoints),
        paths,
        &params.recipe,
        extra,
    )?;
    Ok(state)
}
