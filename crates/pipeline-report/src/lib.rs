//! The `report` stage kind: one self-contained HTML page (`index.html`) and
//! the same content as Markdown (`report.md`, with its figures in `plots/`)
//! from the trained models' metrics, per-clip scores and training histories,
//! the shortcut audit and the lineage the engine hands over.
//!
//! The page holds: the metrics table (AUC with its bootstrap interval, AP,
//! accuracy, EER; overall and per fake category; every model's scores side by
//! side), ROC curves overall and per category, training and validation curves
//! per epoch for every trained stage, the mean fusion weights per category,
//! the shortcut audit, and a lineage summary of every step behind the inputs
//! back to the corpus. It runs in `pipeline` itself (no FFmpeg, no libtorch).
//! Its bytes depend on its inputs alone, so the same DAG gives the same
//! report on every executor.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use pipeline_core::stages::category::Category;
use pipeline_core::stages::provenance::ProvStep;
use pipeline_core::stages::report_params::ReportParams;
use pipeline_core::stages::{versions, Stage, StageContext};
use serde_json::Value;

mod doc;
pub mod plot;
pub mod read;

use doc::{Block, Cell};
use read::{Inputs, Model};

/// The kinds `pipeline` implements itself.
pub fn registry() -> Vec<Box<dyn Stage>> {
    vec![Box::new(Report)]
}

pub struct Report;

impl Stage for Report {
    fn kind(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        versions::REPORT
    }

    fn check_params(&self, params: &Value) -> Result<()> {
        ReportParams::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let p = ReportParams::from_json(ctx.params)
            .with_context(|| format!("stage {}: invalid parameters", ctx.stage))?;
        let inputs = read::read(ctx.inputs).with_context(|| format!("stage {}", ctx.stage))?;
        let blocks = build(&p, &inputs, ctx.provenance)?;
        let dir = ctx.output("report")?;
        write(dir, &p.title, &blocks)
    }
}

/// Writes `index.html`, `report.md` and `plots/*.png` into `dir`.
pub fn write(dir: &std::path::Path, title: &str, blocks: &[Block]) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    for b in blocks {
        if let Block::Figure { file, png, .. } = b {
            std::fs::write(plots.join(file), png)
                .with_context(|| format!("writing {}", plots.display()))?;
        }
    }
    std::fs::write(dir.join("index.html"), doc::html(title, blocks))
        .with_context(|| format!("writing {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), doc::markdown(title, blocks))
        .with_context(|| format!("writing {}", dir.display()))
}

/// One model's score shown as a column, a row and a curve.
struct Series<'a> {
    model: &'a Model,
    score: String,
    label: String,
}

fn label(stage: &str, score: &str) -> String {
    match (stage, score) {
        ("stage2", "final") => "stage 2 fused".into(),
        ("stage2", "audio") => "stage 2 audio-only".into(),
        ("stage2", "a2v") => "stage 2 A2V-only".into(),
        ("baseline", "final") => "baseline (OpenAVFF)".into(),
        ("stage1", "audio") => "stage 1 audio".into(),
        _ => format!("{stage} {score}"),
    }
}

fn series(inputs: &Inputs) -> Vec<Series<'_>> {
    inputs
        .models
        .iter()
        .flat_map(|m| {
            m.score_names().into_iter().map(move |s| Series {
                model: m,
                label: label(&m.stage, &s),
                score: s,
            })
        })
        .collect()
}

/// A category's name as the paper's tables write it.
fn short(folder: &str) -> String {
    Category::from_folder(folder).map_or_else(|| folder.to_string(), |c| c.short().to_string())
}

fn num(v: Option<&Value>, key: &str) -> Option<f64> {
    v?.get(key)?.as_f64()
}

fn f3(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |x| format!("{x:.3}"))
}

fn ci(v: Option<&Value>) -> String {
    match v.and_then(|m| m.get("auc_ci95")).and_then(Value::as_array) {
        Some(a) if a.len() == 2 => format!("[{}, {}]", f3(a[0].as_f64()), f3(a[1].as_f64())),
        _ => "—".into(),
    }
}

/// Builds the report's content.
pub fn build(p: &ReportParams, inputs: &Inputs, provenance: &[ProvStep]) -> Result<Vec<Block>> {
    let all = series(inputs);
    let mut b = Vec::new();
    let boot = inputs
        .models
        .iter()
        .find_map(|m| m.metrics.get("bootstrap"));
    b.push(Block::Para(format!(
        "Test-split metrics of every trained model, read from each model's metrics.json; \
         AUC with its 95 % bootstrap interval{}. ROC curves from the per-clip scores of the \
         {} split (scores.jsonl). Every step behind these numbers is listed under Lineage.",
        boot.map_or(String::new(), |bt| format!(
            " ({} replicates, seed {})",
            bt.get("replicates").unwrap_or(&Value::Null),
            bt.get("seed").unwrap_or(&Value::Null)
        )),
        p.split
    )));
    metrics_tables(&mut b, &all, &inputs.models);
    roc_figures(&mut b, &all, &p.split)?;
    training_figures(&mut b, inputs)?;
    fusion_weights(&mut b, inputs)?;
    if let Some(a) = &inputs.audit {
        audit_table(&mut b, a);
    }
    lineage(&mut b, provenance);
    Ok(b)
}

fn metrics_tables(b: &mut Vec<Block>, all: &[Series], models: &[Model]) {
    b.push(Block::Heading(2, "Metrics".into()));
    let rows = all
        .iter()
        .map(|s| {
            let m = s.model.test_metrics(&s.score, None);
            let n = |k| num(m, k).map_or_else(|| "—".into(), |x| format!("{x:.0}"));
            vec![
                Cell::from(s.label.clone()),
                f3(num(m, "auc")).into(),
                ci(m).into(),
                f3(num(m, "ap")).into(),
                f3(num(m, "acc")).into(),
                f3(num(m, "eer")).into(),
                format!("{} / {}", n("n_real"), n("n_fake")).into(),
            ]
        })
        .collect();
    b.push(Block::Table {
        head: [
            "model",
            "AUC",
            "AUC 95 % CI",
            "AP",
            "accuracy",
            "EER",
            "real / fake clips",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    b.push(Block::Heading(
        3,
        "AUC per fake category (each against the real clips)".into(),
    ));
    let cats = categories(all);
    let mut head = vec!["category".to_string()];
    head.extend(all.iter().map(|s| s.label.clone()));
    let rows = cats
        .iter()
        .map(|c| {
            let mut r = vec![Cell::from(short(c))];
            r.extend(all.iter().map(|s| {
                let m = s.model.test_metrics(&s.score, Some(c));
                Cell::from(match m {
                    Some(_) => format!("{} {}", f3(num(m, "auc")), ci(m)),
                    None => "—".into(),
                })
            }));
            r
        })
        .collect();
    b.push(Block::Table { head, rows });
    for m in models {
        let g = |k: &str| m.metrics.get(k).cloned().unwrap_or(Value::Null);
        b.push(Block::Para(format!(
            "{}: epoch {} of {} selected on the validation metric (best {}){}.",
            m.stage,
            g("best_epoch"),
            g("epochs_run"),
            f3(g("selection_metric").as_f64()),
            if g("stopped_early") == Value::Bool(true) {
                ", stopped early"
            } else {
                ""
            }
        )));
    }
}

/// The fake categories any model reports on, in name order.
fn categories(all: &[Series]) -> Vec<String> {
    let mut cats = BTreeSet::new();
    for s in all {
        if let Some(o) = s
            .model
            .metrics
            .pointer(&format!("/test/per_category/{}", s.score))
            .and_then(Value::as_object)
        {
            cats.extend(o.keys().cloned());
        }
    }
    cats.into_iter().collect()
}

fn roc_figures(b: &mut Vec<Block>, all: &[Series], split: &str) -> Result<()> {
    b.push(Block::Heading(2, "ROC curves".into()));
    let cats = categories(all);
    let groups = std::iter::once(None).chain(cats.iter().map(Some));
    for cat in groups {
        let mut lines = Vec::new();
        for (i, s) in all.iter().enumerate() {
            let (scores, labels): (Vec<f64>, Vec<bool>) = s
                .model
                .clips
                .iter()
                .filter(|c| c.split == split)
                .filter(|c| cat.is_none_or(|cat| !c.label || &c.category == cat))
                .filter_map(|c| c.scores.get(&s.score).map(|&x| (x, c.label)))
                .unzip();
            // A model that never saw this category's fakes has no curve here.
            let Some(points) = plot::roc_points(&scores, &labels) else {
                continue;
            };
            let auc = pipeline_core::auc::roc_auc(&scores, &labels);
            lines.push(plot::Line {
                label: format!("{} (AUC {})", s.label, f3(auc)),
                points,
                colour: plot::colour(i),
            });
        }
        if lines.is_empty() {
            continue;
        }
        let (name, file) = match cat {
            None => ("every category".to_string(), "roc-overall.png".to_string()),
            Some(c) => (
                format!("{} vs RVRA", short(c)),
                format!("roc-{}.png", short(c)),
            ),
        };
        b.push(Block::Figure {
            caption: format!("ROC, {name} ({split} split)"),
            png: plot::roc(&format!("ROC: {name}"), &lines)?,
            file,
        });
    }
    Ok(())
}

fn training_figures(b: &mut Vec<Block>, inputs: &Inputs) -> Result<()> {
    b.push(Block::Heading(2, "Training".into()));
    for m in inputs.models.iter().filter(|m| !m.history.is_empty()) {
        let loss: Vec<(f64, f64)> = m
            .history
            .iter()
            .map(|e| (e.epoch as f64, e.train_loss))
            .collect();
        let val: Vec<(f64, f64)> = m
            .history
            .iter()
            .map(|e| (e.epoch as f64, e.val_metric))
            .collect();
        let metric = "metric";
        let best = m.metrics.get("best_epoch").and_then(Value::as_f64);
        b.push(Block::Figure {
            file: format!("training-{}.png", m.input),
            caption: format!(
                "{}: training loss and validation {metric} per epoch (the line marks the selected epoch)",
                m.stage
            ),
            png: plot::training(
                &format!("{} training", m.stage),
                &loss,
                &val,
                &format!("validation {metric}"),
                best,
            )?,
        });
    }
    Ok(())
}

fn fusion_weights(b: &mut Vec<Block>, inputs: &Inputs) -> Result<()> {
    for m in &inputs.models {
        let Some(w) = m
            .metrics
            .pointer("/test/mean_fusion_weights")
            .and_then(Value::as_object)
            .filter(|w| !w.is_empty())
        else {
            continue;
        };
        b.push(Block::Heading(2, format!("Fusion weights ({})", m.stage)));
        let pair = |v: &Value, i: usize| v.get(i).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let groups: Vec<String> = w.keys().map(|c| short(c)).collect();
        let audio: Vec<f64> = w.values().map(|v| pair(v, 0)).collect();
        let a2v: Vec<f64> = w.values().map(|v| pair(v, 1)).collect();
        b.push(Block::Figure {
            file: format!("fusion-weights-{}.png", m.input),
            caption: "mean fusion weights per category on the test split".into(),
            png: plot::bars(
                &format!("{}: mean fusion weights per category", m.stage),
                &groups,
                &[
                    ("audio branch (w_audio)".into(), audio.clone()),
                    ("A2V branch (w_a2v)".into(), a2v.clone()),
                ],
            )?,
        });
        b.push(Block::Table {
            head: ["category", "w_audio", "w_a2v"].map(String::from).to_vec(),
            rows: groups
                .iter()
                .zip(audio.iter().zip(&a2v))
                .map(|(g, (a, v))| {
                    vec![g.as_str().into(), f3(Some(*a)).into(), f3(Some(*v)).into()]
                })
                .collect(),
        });
    }
    Ok(())
}

fn audit_table(b: &mut Vec<Block>, a: &Value) {
    b.push(Block::Heading(2, "Shortcut audit".into()));
    let flag = a.get("flag_auc").and_then(Value::as_f64).unwrap_or(0.7);
    let shortcuts = a
        .get("shortcuts")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    b.push(Block::Para(format!(
        "The AUC of each trivial file statistic alone as a detector of each fake category \
         against the real clips ({} videos, {} unreadable); a value outside [{:.2}, {:.2}] \
         is a shortcut a detector could read instead of the manipulation: {}.",
        a.get("videos").unwrap_or(&Value::Null),
        a.get("failed").unwrap_or(&Value::Null),
        1.0 - flag,
        flag,
        if shortcuts == 0 {
            "none found".to_string()
        } else {
            format!("{shortcuts} found, marked")
        }
    )));
    let Some(per) = a.get("auc_vs_real").and_then(Value::as_object) else {
        return;
    };
    let stats: BTreeSet<&String> = per
        .values()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys())
        .collect();
    let mut head = vec!["statistic".to_string()];
    head.extend(per.keys().map(|c| short(c)));
    let rows = stats
        .iter()
        .map(|s| {
            let mut r = vec![Cell::from(s.as_str())];
            r.extend(per.values().map(|o| {
                let v = o.get(s.as_str()).and_then(Value::as_f64);
                Cell {
                    text: f3(v),
                    flag: v.is_some_and(|v| v > flag || v < 1.0 - flag),
                }
            }));
            r
        })
        .collect();
    b.push(Block::Table { head, rows });
}

fn short_hash(h: &str) -> &str {
    &h[..h.len().min(12)]
}

fn lineage(b: &mut Vec<Block>, steps: &[ProvStep]) {
    b.push(Block::Heading(2, "Lineage".into()));
    if steps.is_empty() {
        b.push(Block::Para(
            "The engine handed over no lineage (the report was made outside a recorded run)."
                .into(),
        ));
        return;
    }
    b.push(Block::Para(
        "Every recorded step behind the report's inputs, sources first: its code version, \
         the BLAKE3 of its parameters (canonical JSON) and the BLAKE3 of every artifact it \
         read and wrote (the first 12 hex digits; `pipeline lineage PATH` shows them whole)."
            .into(),
    ));
    let arts = |a: &[pipeline_core::stages::provenance::ProvArtifact]| {
        a.iter()
            .map(|x| format!("{} @{}", x.path, short_hash(&x.hash)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = steps
        .iter()
        .map(|s| {
            let params = serde_json::to_vec(&s.params).unwrap_or_default();
            vec![
                Cell::from(s.stage.clone()),
                Cell::from(s.code_version.clone()),
                Cell::from(short_hash(&blake3::hash(&params).to_hex()).to_string()),
                Cell::from(if s.inputs.is_empty() {
                    "—".to_string()
                } else {
                    arts(&s.inputs)
                }),
                Cell::from(arts(&s.outputs)),
            ]
        })
        .collect();
    b.push(Block::Table {
        head: ["stage", "code", "params", "inputs", "outputs"]
            .map(String::from)
            .to_vec(),
        rows,
    });
    for s in steps {
        b.push(Block::Code {
            summary: format!("{}: parameters", s.stage),
            text: serde_json::to_string_pretty(&s.params).unwrap_or_default(),
        });
    }
}
