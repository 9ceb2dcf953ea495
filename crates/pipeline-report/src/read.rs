//! What the report reads: each input folder that holds a `metrics.json` is a
//! trained model (with its `history.jsonl` and `scores.jsonl` when present),
//! one that holds an `audit.json` is the shortcut audit; other inputs (the
//! element set) only enter the lineage summary.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// One trained model's outputs.
#[derive(Debug)]
pub struct Model {
    /// The stage that trained it, as its `metrics.json` says (`stage2`).
    pub stage: String,
    /// The input name the report stage declared it under.
    pub input: String,
    pub metrics: Value,
    /// One record per epoch (`history.jsonl`), empty when absent.
    pub history: Vec<Epoch>,
    /// Every scored clip (`scores.jsonl`), empty when absent.
    pub clips: Vec<Clip>,
}

/// One line of `history.jsonl`, as far as the report uses it.
#[derive(Debug, Deserialize)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_metric: f64,
}

/// One line of `scores.jsonl`.
#[derive(Debug, Deserialize)]
pub struct Clip {
    pub category: String,
    pub label: bool,
    pub split: String,
    pub scores: BTreeMap<String, f64>,
}

/// Everything the report draws from.
#[derive(Debug, Default)]
pub struct Inputs {
    pub models: Vec<Model>,
    pub audit: Option<Value>,
}

impl Model {
    /// The names of the scores the model reports on its test split, in the
    /// order the report shows them (fused first).
    pub fn score_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .metrics
            .pointer("/test/overall")
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let rank = |n: &str| match n {
            "final" => 0,
            "audio" => 1,
            "a2v" => 2,
            _ => 3,
        };
        names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        names
    }

    /// The test metrics of score `name` overall (`category` `None`) or
    /// against one fake category.
    pub fn test_metrics(&self, name: &str, category: Option<&str>) -> Option<&Value> {
        let t = self.metrics.get("test")?;
        match category {
            None => t.get("overall")?.get(name),
            Some(c) => t.get("per_category")?.get(name)?.get(c),
        }
    }
}

/// Reads the inputs of a report step.
pub fn read(inputs: &BTreeMap<String, std::path::PathBuf>) -> Result<Inputs> {
    let mut out = Inputs::default();
    for (name, dir) in inputs {
        if dir.join("metrics.json").is_file() {
            out.models.push(read_model(name, dir)?);
        } else if dir.join("audit.json").is_file() {
            out.audit = Some(read_json(&dir.join("audit.json"))?);
        }
    }
    if out.models.is_empty() {
        bail!(
            "none of the report's inputs ({}) holds a metrics.json: declare the trained \
             models' output folders (models/stage2, ...) as its deps",
            inputs.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let rank = |s: &str| match s {
        "stage2" => 0,
        "baseline" => 1,
        "stage1" => 2,
        _ => 3,
    };
    out.models.sort_by(|a, b| {
        rank(&a.stage)
            .cmp(&rank(&b.stage))
            .then(a.input.cmp(&b.input))
    });
    Ok(out)
}

fn read_model(input: &str, dir: &Path) -> Result<Model> {
    let metrics = read_json(&dir.join("metrics.json"))?;
    let stage = metrics
        .get("stage")
        .and_then(Value::as_str)
        .unwrap_or(input)
        .to_string();
    Ok(Model {
        stage,
        input: input.to_string(),
        metrics,
        history: read_lines(&dir.join("history.jsonl"))?,
        clips: read_lines(&dir.join("scores.jsonl"))?,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The lines of a JSON-lines file; none when it does not exist.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a valid record", path.display(), i + 1))
        })
        .collect()
}
