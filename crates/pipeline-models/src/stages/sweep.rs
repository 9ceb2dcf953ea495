//! The `stage2_sweep` kind: one stage-2 training per point of a parameter
//! grid (the reference's 72-run sweep), best point chosen by validation AP.
//!
//! Each grid point is an item: through Slurm the stage runs as one array job,
//! one task per point, and every finished point is memoized under the stage's
//! items folder, keyed by the stage's version, the input hashes and the
//! point's full configuration. A point's epoch checkpoints live beside its
//! memo, so a preempted or requeued task resumes from its last epoch, and a
//! rerun (after a failure, or with points added to the grid) trains only the
//! points without a memo. The gathering run writes the output folder:
//!
//! - `summary.json`: every point (its grid values, status, best epoch,
//!   validation AP and the fused score's validation metrics) and the best;
//! - `points/NNN/`: each point's `point.json`, `metrics.json`, `history.jsonl`;
//! - `best/`: the best point's `model.safetensors`, `metrics.json`,
//!   `history.jsonl` and its whole configuration as `params.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::recipes::Stage2Params;
use crate::stage_run::{parse_params, run_stage2, StagePaths};
use pipeline_core::stages::grid::GridFile;
use pipeline_core::stages::items::{owns, summarize, ItemLog, Outcome};
use pipeline_core::stages::{Stage, StageContext};
use pipeline_core::util::write_atomic;

pub struct Stage2Sweep;

/// 1: first version. 2: a `recipe` given in part merges with the
/// stage's own defaults (it fell back to the generic recipe's). 3: each
/// point's model writes its per-clip scores, and stage 2 may refit its fusion.
const VERSION: u32 = 3;

impl Stage for Stage2Sweep {
    fn kind(&self) -> &'static str {
        "stage2_sweep"
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        pipeline_core::stages::check_params(self.kind(), params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let grid = grid(ctx.stage, ctx.params)?;
        let points = points(ctx.stage, ctx.params)?;
        let inputs = input_key(ctx)?;
        let mine = (0..points.len()).filter(|&i| owns(ctx.shard, i)).count();
        let log = ItemLog::open(ctx.step_dir, ctx.stage, mine)?;
        std::fs::create_dir_all(ctx.items_dir)
            .with_context(|| format!("cannot create {}", ctx.items_dir.display()))?;
        // The step's own folder: a shard works in `<step>/shard-i`.
        let step = match ctx.shard {
            Some(_) => ctx.step_dir.parent().unwrap_or(ctx.step_dir),
            None => ctx.step_dir,
        };
        let mut outcomes = Vec::new();
        for (i, p) in points.iter().enumerate() {
            if !owns(ctx.shard, i) {
                continue;
            }
            let key = p.key(&inputs);
            let memo = ctx.items_dir.join(&key);
            let outcome = if memo.join("out/metrics.json").is_file() {
                eprintln!("{}: point {i} ({}) is done already", ctx.stage, p.label());
                Outcome::Ok
            } else if let Some(reason) = failed_in(&memo, step).filter(|_| ctx.shard.is_none()) {
                // A shard of this step tried and failed: not again here, on
                // the head; the next run of the stage tries it again.
                Outcome::Failed(reason)
            } else {
                eprintln!(
                    "{}: training point {i} of {} ({})",
                    ctx.stage,
                    points.len(),
                    p.label()
                );
                train(ctx, p, &memo, step)?
            };
            log.record(&format!("{i:03} {}", p.label()), &outcome)?;
            outcomes.push((i, key, outcome));
        }
        if ctx.shard.is_some() {
            return Ok(());
        }
        let named: Vec<(String, Outcome)> = outcomes
            .iter()
            .map(|(i, _, o)| (format!("point {i} ({})", points[*i].label()), o.clone()))
            .collect();
        summarize(ctx.stage, &named, grid.max_failed_fraction)?;
        write_output(ctx, &points, &outcomes)
    }
}

/// One grid point: its values on the grid keys and its whole configuration.
struct Point {
    values: BTreeMap<String, Value>,
    config: Value,
}

impl Point {
    /// `lambda_align=0.1 recipe.lr=3e-5`.
    fn label(&self) -> String {
        if self.values.is_empty() {
            return "the base configuration".into();
        }
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The memo key: stage version, inputs and the full configuration.
    fn key(&self, inputs: &str) -> String {
        let h = blake3::Hasher::new()
            .update(format!("stage2_sweep v{VERSION}\0{inputs}\0").as_bytes())
            .update(self.config.to_string().as_bytes())
            .finalize();
        h.to_hex()[..24].to_string()
    }
}

fn grid(stage: &str, params: &Value) -> Result<GridFile> {
    GridFile::parse(params).with_context(|| format!("stage {stage}"))
}

fn points(stage: &str, params: &Value) -> Result<Vec<Point>> {
    let runs = grid(stage, params)?
        .runs()
        .with_context(|| format!("stage {stage}: expanding the grid"))?;
    runs.into_iter()
        .enumerate()
        .map(|(i, (values, config))| {
            parse_params::<Stage2Params>(stage, &config)
                .with_context(|| format!("grid point {i}"))?;
            Ok(Point { values, config })
        })
        .collect()
}

/// The inputs' hashes as the engine recorded them (hashed here only when the
/// stage runs outside the engine).
fn input_key(ctx: &StageContext<'_>) -> Result<String> {
    let mut parts = Vec::new();
    for (name, path) in ctx.inputs {
        let hash = match ctx.input_hashes.get(name) {
            Some(h) => h.clone(),
            None => match pipeline_core::hash::hash_path(path, None)? {
                Some((h, _)) => h.hash.to_hex().to_string(),
                None => bail!(
                    "stage {}: input {name} ({}) does not exist",
                    ctx.stage,
                    path.display()
                ),
            },
        };
        parts.push(format!("{name}={hash}"));
    }
    Ok(parts.join(" "))
}

/// The reason a point failed in a shard of step folder `step`, if it did.
fn failed_in(memo: &Path, step: &Path) -> Option<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(memo.join("failed.json")).ok()?).ok()?;
    (v["step_dir"].as_str()? == step.to_string_lossy())
        .then(|| v["reason"].as_str().unwrap_or("").to_string())
}

/// Trains one point into its memo folder. A training error is the point's
/// failure (recorded, the other points go on); an error writing the memo
/// stops the stage.
fn train(ctx: &StageContext<'_>, p: &Point, memo: &Path, step: &Path) -> Result<Outcome> {
    std::fs::create_dir_all(memo).with_context(|| format!("cannot create {}", memo.display()))?;
    let _ = std::fs::remove_file(memo.join("failed.json"));
    let point = json!({"values": p.values, "params": p.config});
    write_atomic(
        &memo.join("point.json"),
        &serde_json::to_vec_pretty(&point)?,
    )?;
    let params: Stage2Params = parse_params(ctx.stage, &p.config)?;
    let partial = memo.join("out.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let work = memo.join("work");
    let trained = run_stage2(
        &params,
        &StagePaths {
            elements: ctx.input("elements")?,
            stage1: Some(ctx.input("stage1")?),
            pretrained: ctx.inputs.get("marlin").map(PathBuf::as_path),
            out: &partial,
            work: &work,
            threads: ctx.threads,
            verbose: true,
        },
    );
    match trained {
        Ok(_) => {
            std::fs::rename(&partial, memo.join("out"))
                .with_context(|| format!("cannot move {} into place", partial.display()))?;
            // The epoch checkpoints (weights and optimizer state) are only
            // for resuming; the finished point keeps its outputs.
            let _ = std::fs::remove_dir_all(&work);
            Ok(Outcome::Ok)
        }
        Err(e) => {
            let reason = format!("{e:#}");
            eprintln!("{}: point {} failed: {reason}", ctx.stage, p.label());
            let failed = json!({"reason": reason, "step_dir": step.to_string_lossy()});
            write_atomic(
                &memo.join("failed.json"),
                &serde_json::to_vec_pretty(&failed)?,
            )?;
            Ok(Outcome::Failed(reason))
        }
    }
}

/// The output folder from the memo of every point.
fn write_output(
    ctx: &StageContext<'_>,
    points: &[Point],
    outcomes: &[(usize, String, Outcome)],
) -> Result<()> {
    let out = ctx.output("sweep")?;
    std::fs::create_dir_all(out.join("points"))?;
    let mut rows = Vec::new();
    let mut best: Option<(f64, usize, &str)> = None;
    for (i, key, outcome) in outcomes {
        let p = &points[*i];
        let memo = ctx.items_dir.join(key);
        let dir = out.join("points").join(format!("{i:03}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(memo.join("point.json"), dir.join("point.json"))
            .with_context(|| format!("copying the memo of point {i} from {}", memo.display()))?;
        // No memo key here: it holds the inputs' hashes, and a model folder's
        // hash changes with the seconds its epochs took, while the summary
        // should compare equal across runs that trained the same weights.
        let mut row = json!({"index": i, "values": p.values});
        match outcome {
            Outcome::Failed(reason) => {
                row["status"] = json!("failed");
                row["reason"] = json!(reason);
            }
            Outcome::Ok => {
                for f in ["metrics.json", "history.jsonl"] {
                    std::fs::copy(memo.join("out").join(f), dir.join(f))
                        .with_context(|| format!("copying {f} of point {i}"))?;
                }
                let m: Value = serde_json::from_slice(&std::fs::read(dir.join("metrics.json"))?)?;
                let ap = m["selection_metric"].as_f64().unwrap_or(f64::NAN);
                row["status"] = json!("ok");
                row["best_epoch"] = m["best_epoch"].clone();
                row["val_ap"] = json!(ap);
                row["val_final"] = m["validation"]["overall"]["final"].clone();
                if !ap.is_nan() && best.is_none_or(|(b, ..)| ap > b) {
                    best = Some((ap, *i, key));
                }
            }
        }
        rows.push(row);
    }
    let Some((ap, bi, bkey)) = best else {
        bail!(
            "stage {}: no grid point finished training, so there is no best point",
            ctx.stage
        );
    };
    let best_dir = out.join("best");
    std::fs::create_dir_all(&best_dir)?;
    for f in ["model.safetensors", "metrics.json", "history.jsonl"] {
        std::fs::copy(
            ctx.items_dir.join(bkey).join("out").join(f),
            best_dir.join(f),
        )
        .with_context(|| format!("copying {f} of the best point"))?;
    }
    std::fs::write(
        best_dir.join("params.json"),
        serde_json::to_vec_pretty(&points[bi].config)?,
    )?;
    let summary = json!({
        "selection": "validation AP of the fused score (the early-stopping metric), best epoch of each point",
        "best": {"index": bi, "values": points[bi].values, "val_ap": ap},
        "points": rows,
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    eprintln!(
        "{}: best of {} points is point {bi} ({}), validation AP {ap:.4}",
        ctx.stage,
        points.len(),
        points[bi].label()
    );
    Ok(())
}
