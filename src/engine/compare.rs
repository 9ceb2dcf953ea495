//! Comparing two recorded steps of a stage, as DVC users do with `dvc
//! metrics diff` and `dvc params diff`: the numbers of their metrics files
//! (kept in the store when each step was recorded), or their parameters.
//!
//! Nested values are compared by dotted key (`test.overall.fused.auc`); a
//! short list of plain values counts as one value per index (`auc_ci.0`); a
//! long list, or one of objects (a training history), is left out.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::Value;

use super::workspace::Workspace;
use crate::store::{StepId, StepRecord};

/// Lists longer than this are histories, not values.
const MAX_LIST: usize = 8;

/// One compared key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub key: String,
    /// `None`: the key is absent on that side.
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// `new - old`, for two numbers.
    pub change: Option<f64>,
}

/// Two steps of a stage compared.
#[derive(Debug, Serialize)]
pub struct Diff {
    pub stage: String,
    pub old_step: StepId,
    pub new_step: StepId,
    /// The rows that differ (every row with `all`), by key.
    pub rows: Vec<Row>,
}

/// Every plain value under `v`, by dotted key (see the module's rules).
pub fn flatten(v: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(&key(k), v, out);
                }
            }
            Value::Array(a) => {
                if a.len() <= MAX_LIST && a.iter().all(|x| !x.is_object() && !x.is_array()) {
                    for (i, x) in a.iter().enumerate() {
                        out.insert(key(&i.to_string()), x.clone());
                    }
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}

/// The rows of two flattened documents: those that differ, or all.
pub fn rows(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>, all: bool) -> Vec<Row> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let (o, n) = (old.get(k).cloned(), new.get(k).cloned());
            let change = match (
                o.as_ref().and_then(Value::as_f64),
                n.as_ref().and_then(Value::as_f64),
            ) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            Row {
                key: k.clone(),
                old: o,
                new: n,
                change,
            }
        })
        .filter(|r| all || r.old != r.new)
        .collect()
}

/// The two steps to compare: the ones named (`[A, B]`), or the newest two
/// of `candidates` (newest first).
fn pick(named: &[i64], candidates: &[StepRecord], what: &str) -> Result<(StepId, StepId)> {
    match named {
        [a, b] => Ok((StepId(*a), StepId(*b))),
        [] => match candidates {
            [new, old, ..] => Ok((old.id, new.id)),
            _ => bail!(
                "{what}: fewer than two recorded steps to compare; run the stage again after a \
                 change, or name two steps (`pipeline status --json` shows each stage's last)"
            ),
        },
        _ => bail!("{what}: name two steps (OLD NEW), or none for the stage's last two"),
    }
}

/// Every metrics file of a step, flattened; keys prefixed by the file's
/// path when the step kept more than one.
async fn metrics_of(ws: &Workspace, step: StepId) -> Result<BTreeMap<String, Value>> {
    let files = ws.store.metrics_of(step).await?;
    if files.is_empty() {
        bail!(
            "step {step} kept no metrics: it wrote no {} among its outputs, or it was recorded \
             before metrics were kept",
            super::ingest::METRICS_FILE
        );
    }
    let many = files.len() > 1;
    let mut out = BTreeMap::new();
    for (path, text) in files {
        let v: Value = serde_json::from_str(&text)?;
        for (k, x) in flatten(&v) {
            out.insert(if many { format!("{path}:{k}") } else { k }, x);
        }
    }
    Ok(out)
}

/// `pipeline metrics diff`: two steps' metrics (by default the last two of
/// `stage`, or of the stage that kept metrics last).
pub async fn metrics_diff(
    ws: &Workspace,
    named: &[i64],
    stage: Option<&str>,
    all: bool,
) -> Result<Diff> {
    let (old_step, new_step) = if named.is_empty() {
        let candidates = ws.store.steps_with_metrics(stage).await?;
        let stage = match (stage, candidates.first()) {
            (Some(s), _) => s.to_string(),
            (None, Some(s)) => s.stage.clone(),
            (None, None) => bail!("metrics diff: no recorded step kept metrics"),
        };
        let same: Vec<StepRecord> = candidates
            .into_iter()
            .filter(|s| s.stage == stage)
            .collect();
        pick(named, &same, &format!("metrics of {stage}"))?
    } else {
        pick(named, &[], "metrics diff")?
    };
    let (old, new) = (
        metrics_of(ws, old_step).await?,
        metrics_of(ws, new_step).await?,
    );
    Ok(Diff {
        stage: ws.store.step(new_step).await?.stage,
        old_step,
        new_step,
        rows: rows(&old, &new, all),
    })
}

/// `pipeline params diff`: two steps' resolved parameters (by default the
/// last two steps of `stage`, or of the stage that ran last).
pub async fn params_diff(
    ws: &Workspace,
    named: &[i64],
    stage: Option<&str>,
    all: bool,
) -> Result<Diff> {
    let stage = match stage {
        Some(s) => s.to_string(),
        None => match ws.store.newest_step().await? {
            Some(s) => s.stage,
            None => bail!("params diff: no step is recorded yet"),
        },
    };
    let candidates = ws.store.steps_of(&stage).await?;
    let (old_step, new_step) = pick(named, &candidates, &format!("params of {stage}"))?;
    let params = |s: StepRecord| -> Result<BTreeMap<String, Value>> {
        Ok(flatten(&serde_json::from_str(&s.params_json)?))
    };
    let old = params(ws.store.step(old_step).await?)?;
    let new_rec = ws.store.step(new_step).await?;
    let stage = new_rec.stage.clone();
    Ok(Diff {
        stage,
        old_step,
        new_step,
        rows: rows(&old, &params(new_rec)?, all),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_compare_by_dotted_key_and_histories_are_left_out() {
        let old = flatten(&json!({
            "test": {"auc": 0.9, "ci": [0.85, 0.95], "n": 10},
            "history": [{"epoch": 0}],
            "stage": "stage2",
        }));
        let new = flatten(&json!({
            "test": {"auc": 0.95, "ci": [0.9, 0.97], "n": 10},
            "history": [{"epoch": 0}, {"epoch": 1}],
            "stage": "stage2",
            "extra": true,
        }));
        assert!(!old.contains_key("history"));
        let changed = rows(&old, &new, false);
        let keys: Vec<&str> = changed.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["extra", "test.auc", "test.ci.0", "test.ci.1"]);
        assert!((changed[1].change.unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(changed[0].old, None);
        assert_eq!(rows(&old, &new, true).len(), 6);
    }
}
