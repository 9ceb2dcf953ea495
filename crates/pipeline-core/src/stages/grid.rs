//! Parameter grids: a base configuration and, for some dotted keys, lists of
//! values; the cartesian product gives one configuration per run. The
//! reference's 72-run stage-2 sweep is `config/paper/sweep.json`, run by the
//! `stage2_sweep` stage kind in the worker; the engine reads the same grid to
//! know how many shards (array tasks) the sweep runs as.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// A grid: `{"base": {..} or {"$include": "stage2.json"}, "grid": {"recipe.lr": [..], ..}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFile {
    #[serde(default)]
    pub description: String,
    /// The base configuration (in a profile file, usually included).
    pub base: Value,
    pub grid: BTreeMap<String, Vec<Value>>,
    /// The sweep fails when more than this fraction of its runs failed.
    #[serde(default)]
    pub max_failed_fraction: f64,
}

impl GridFile {
    /// A sweep stage's parameters as a grid.
    pub fn parse(params: &Value) -> Result<GridFile> {
        serde_json::from_value(params.clone()).context(
            "a sweep's parameters must be {\"base\": {stage-2 parameters or \
             {\"$include\": \"stage2.json\"}}, \"grid\": {\"dotted.key\": [values, ..]}}",
        )
    }

    /// Every run's parameters, each with the grid point it came from.
    pub fn runs(&self) -> Result<Vec<(BTreeMap<String, Value>, Value)>> {
        if !self.base.is_object() {
            bail!("the sweep's `base` must be an object of stage parameters");
        }
        expand(&self.base, &self.grid)
    }
}

/// The cartesian product of `grid` applied to `base` (keys in sorted order).
pub fn expand(
    base: &Value,
    grid: &BTreeMap<String, Vec<Value>>,
) -> Result<Vec<(BTreeMap<String, Value>, Value)>> {
    let mut runs = vec![(BTreeMap::new(), base.clone())];
    for (key, values) in grid {
        if values.is_empty() {
            bail!("grid key {key} has no values");
        }
        let mut next = Vec::with_capacity(runs.len() * values.len());
        for (point, cfg) in &runs {
            for v in values {
                let mut cfg = cfg.clone();
                set_dotted(&mut cfg, key, v.clone())?;
                let mut point = point.clone();
                point.insert(key.clone(), v.clone());
                next.push((point, cfg));
            }
        }
        runs = next;
    }
    Ok(runs)
}

fn set_dotted(cfg: &mut Value, key: &str, v: Value) -> Result<()> {
    let mut cur = cfg;
    let parts: Vec<&str> = key.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .with_context(|| format!("grid key {key}: {p} is not inside an object"))?
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    cur.as_object_mut()
        .with_context(|| format!("grid key {key}: parent is not an object"))?
        .insert(parts[parts.len() - 1].to_string(), v);
    Ok(())
}
