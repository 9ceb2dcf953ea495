//! Parameter grids: a base configuration and, for some dotted keys, lists of
//! values; the cartesian product gives one configuration per run (the
//! reference's 72-run stage-2 sweep is `config/paper/stage2_sweep.json`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// A grid file: `{"base": "stage2.json", "grid": {"recipe.lr": [..], ..}}`.
#[derive(Debug, Deserialize)]
pub struct GridFile {
    #[serde(default)]
    pub description: String,
    /// The base configuration, relative to the grid file's folder.
    pub base: String,
    pub grid: BTreeMap<String, Vec<Value>>,
}

/// Reads a grid file and its base; returns every run's parameters, each with
/// the grid point it came from.
pub fn expand_file(path: &Path) -> Result<Vec<(BTreeMap<String, Value>, Value)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let grid: GridFile =
        serde_json::from_str(&text).with_context(|| format!("parsing grid {}", path.display()))?;
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&grid.base);
    let base: Value = serde_json::from_slice(
        &std::fs::read(&base_path).with_context(|| format!("reading {}", base_path.display()))?,
    )
    .with_context(|| format!("parsing {}", base_path.display()))?;
    expand(&base, &grid.grid)
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
