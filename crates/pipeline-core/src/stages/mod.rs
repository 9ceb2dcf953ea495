//! Built-in stage kinds and the [`Stage`] trait they implement.
//!
//! A built-in stage runs inside `pipeline exec-step` (on this machine or on a
//! compute node): it reads its declared inputs, writes its declared outputs into
//! staging paths the engine hands it, and never touches the store. The engine
//! moves the staged outputs into place and records them.
//!
//! [`KINDS`] is the one table of every kind, its code version and the program
//! that runs it, compiled into every build. This crate holds the contract
//! ([`Stage`], [`StageContext`]), the kinds' parameter types (checked at plan
//! time) and the item bookkeeping they share; the kinds themselves live in two
//! crates that build on this library: the media kinds (synth, seedvc,
//! elements, shortcut_audit, voxceleb_subset) in `pipeline-media`, whose
//! program links FFmpeg, and the model kinds (stage1, stage2, baseline,
//! stage2_sweep) in `pipeline-models`, whose `pipeline-worker` links
//! libtorch. `pipeline exec-step` hands a step over to the kind's program
//! ([`crate::exec::step`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod category;
pub mod corpus_check;
pub mod download_params;
pub mod grid;
pub mod items;
pub mod media_params;
pub mod model_params;
pub mod progress;
pub mod provenance;
pub mod report_params;
pub mod seedvc_params;

/// Everything a built-in stage may look at while it runs.
pub struct StageContext<'a> {
    /// The workspace root; every data path is relative to it.
    pub workspace: &'a Path,
    /// The stage's name in the pipeline (not its kind).
    pub stage: &'a str,
    /// Resolved parameters (profile file merged with inline params).
    pub params: &'a serde_json::Value,
    /// Declared inputs: name -> absolute path (already produced and hashed).
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// Declared inputs: name -> the BLAKE3 (hex) the engine recorded for them.
    pub input_hashes: &'a BTreeMap<String, String>,
    /// Declared outputs: name -> absolute staging path; write here, the engine
    /// moves each into its declared place after the stage returns `Ok`.
    pub outputs: &'a BTreeMap<String, PathBuf>,
    /// The step's own folder (logs, checkpoints that survive a retry, scratch).
    pub step_dir: &'a Path,
    /// A folder that outlives the step, shared by every step of this stage:
    /// per-item memo (one file per finished item, keyed by the item's own
    /// fingerprint, written atomically) so an interrupted run redoes only the
    /// items that were in flight. Record each item's outcome as a JSON line
    /// `{"item": KEY, "status": "ok"|"failed", "reason": ...}` appended to
    /// `step_dir/items.jsonl` (kept in the step folder: the record of each item).
    pub items_dir: &'a Path,
    /// `Some((index, count))` when the stage runs as one shard of a sharded
    /// stage: then it fills `items_dir` with its share of the items and writes
    /// no outputs. `None` for the gathering run, which writes the outputs from
    /// `items_dir` (computing any item still missing itself).
    pub shard: Option<(u32, u32)>,
    /// CPU threads the step may use.
    pub threads: usize,
    /// The recorded steps upstream of the inputs, ancestors first; filled
    /// for the kinds that show it ([`provenance::wanted_by`]), else empty.
    pub provenance: &'a [provenance::ProvStep],
}

impl StageContext<'_> {
    /// The absolute path of the input declared under `name`.
    pub fn input(&self, name: &str) -> Result<&Path> {
        match self.inputs.get(name) {
            Some(p) => Ok(p),
            None => bail!(
                "stage {}: no input named '{name}' is declared (declared: {})",
                self.stage,
                self.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The staging path of the output declared under `name`.
    pub fn output(&self, name: &str) -> Result<&Path> {
        match self.outputs.get(name) {
            Some(p) => Ok(p),
            None => bail!(
                "stage {}: no output named '{name}' is declared (declared: {})",
                self.stage,
                self.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// A built-in stage kind.
pub trait Stage: Send + Sync {
    /// The name written as `kind: NAME` in a manifest.
    fn kind(&self) -> &'static str;
    /// Its code version; equal to the one in [`KINDS`].
    fn version(&self) -> u32;
    /// Checks a step's parameters without running anything (at plan time).
    fn check_params(&self, params: &serde_json::Value) -> Result<()>;
    /// Runs the stage to completion.
    fn run(&self, ctx: &StageContext<'_>) -> Result<()>;
}

/// Parses a built-in kind's parameters; an error names the key and what it
/// expected ("parameter 'identities': invalid type: string \"sixty\",
/// expected usize").
pub fn parse_params<T: DeserializeOwned>(params: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(params.clone()).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            anyhow!("{}", e.inner())
        } else {
            anyhow!("parameter '{path}': {}", e.inner())
        }
    })
}

/// Parses parameters over the kind's own defaults, as [`parse_params`] does:
/// a value given replaces the default's and an object merges key by key, so
/// that a `recipe` given in part keeps the stage's other recipe values (the
/// baseline's step decay, say) instead of the generic recipe's. An object
/// whose `kind` differs from the default's (a schedule of another kind)
/// replaces it whole.
pub fn parse_over_defaults<T: Default + Serialize + DeserializeOwned>(
    params: &serde_json::Value,
) -> Result<T> {
    let mut merged = serde_json::to_value(T::default()).context("serialising the defaults")?;
    merge(&mut merged, params);
    parse_params(&merged)
}

fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o))
            if b.get("kind").is_none()
                || o.get("kind").is_none()
                || b.get("kind") == o.get("kind") =>
        {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Checks the parameters of a step of built-in `kind` as its program will
/// read them, so that `status` and `run --dry-run` report a bad one before
/// anything runs. The kinds not implemented yet pass.
pub fn check_params(kind: &str, params: &serde_json::Value) -> Result<()> {
    use model_params::{BaselineParams, Stage1Params, Stage2Params};
    match kind {
        "stage1" => parse_over_defaults::<Stage1Params>(params).map(|_| ()),
        "stage2" => parse_over_defaults::<Stage2Params>(params).map(|_| ()),
        "baseline" => parse_over_defaults::<BaselineParams>(params).map(|_| ()),
        "stage2_sweep" => {
            let runs = grid::GridFile::parse(params)?.runs()?;
            for (i, (point, config)) in runs.iter().enumerate() {
                parse_over_defaults::<Stage2Params>(config)
                    .with_context(|| format!("grid point {i} ({})", serde_json::json!(point)))?;
            }
            Ok(())
        }
        "synth" => media_params::SynthParams::from_json(params).map(|_| ()),
        "seedvc" => media_params::SeedVcParams::from_json(params).map(|_| ()),
        "elements" => media_params::ElementsParams::from_json(params).map(|_| ()),
        "shortcut_audit" => media_params::AuditParams::from_json(params).map(|_| ()),
        "voxceleb_subset" => media_params::VoxcelebSubsetParams::from_json(params).map(|_| ()),
        "report" => report_params::ReportParams::from_json(params).map(|_| ()),
        "download" => download_params::DownloadParams::from_json(params).map(|_| ()),
        _ => Ok(()),
    }
}

/// [`check_params`], and what a kind asks of the stage's outputs (named
/// `outputs`): a download's sources must fill them one to one.
pub fn check_stage(kind: &str, params: &serde_json::Value, outputs: &[&str]) -> Result<()> {
    check_params(kind, params)?;
    if kind == "download" {
        download_params::DownloadParams::from_json(params)?.match_outputs(outputs)?;
    }
    Ok(())
}

/// The code version of each kind: bumped whenever the kind's output for the
/// same inputs and params would change; it enters the step fingerprint. The
/// implementing modules read theirs from here (each keeps the history of its
/// bumps); `pipeline-worker` holds its own and refuses a step planned with
/// another, and a test compares the two programs' tables.
pub mod versions {
    pub const SYNTH: u32 = 3;
    pub const SEEDVC: u32 = 5;
    pub const ELEMENTS: u32 = 5;
    pub const SHORTCUT_AUDIT: u32 = 1;
    pub const VOXCELEB_SUBSET: u32 = 1;
    pub const REPORT: u32 = 1;
    pub const DOWNLOAD: u32 = 1;
    // baseline, stage2, stage2_sweep 2: a partial `recipe` merges with the
    // stage's own defaults. baseline 3, stage1 2, stage2 3, stage2_sweep 3:
    // a trained model's output holds its per-clip scores (`scores.jsonl`).
    pub const BASELINE: u32 = 3;
    pub const STAGE1: u32 = 2;
    pub const STAGE2: u32 = 3;
    pub const STAGE2_SWEEP: u32 = 3;
    /// The kinds not implemented yet.
    pub const NONE: u32 = 0;
}

/// Which program runs a kind's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// `pipeline-media`, which links FFmpeg (the media kinds).
    Media,
    /// `pipeline-worker`, which links libtorch (the model kinds).
    Worker,
    /// `pipeline` itself (the report, drawn in Rust).
    Engine,
    /// No program yet: a step of it fails with "not implemented yet".
    Unimplemented,
}

/// One built-in kind.
#[derive(Debug)]
pub struct KindInfo {
    /// The name written as `kind: NAME` in a manifest.
    pub name: &'static str,
    pub version: u32,
    pub home: Home,
}

const fn kind(name: &'static str, version: u32, home: Home) -> KindInfo {
    KindInfo {
        name,
        version,
        home,
    }
}

/// Every kind the pipeline knows of, implemented or not. A manifest naming a
/// kind outside this table is rejected at validation.
pub const KINDS: &[KindInfo] = &[
    kind("download", versions::DOWNLOAD, Home::Engine),
    kind("voxceleb_subset", versions::VOXCELEB_SUBSET, Home::Media),
    kind("synth", versions::SYNTH, Home::Media),
    kind("seedvc", versions::SEEDVC, Home::Media),
    kind("elements", versions::ELEMENTS, Home::Media),
    kind("baseline", versions::BASELINE, Home::Worker),
    kind("stage1", versions::STAGE1, Home::Worker),
    kind("stage2", versions::STAGE2, Home::Worker),
    kind("stage2_sweep", versions::STAGE2_SWEEP, Home::Worker),
    kind("shortcut_audit", versions::SHORTCUT_AUDIT, Home::Media),
    kind("report", versions::REPORT, Home::Engine),
];

/// The table's entry for `name`, if it is a built-in kind.
pub fn kind_info(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.name == name)
}

/// The names of every built-in kind, for messages.
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// How many shards a step of built-in `kind` runs as, decided by its
/// parameters (a sweep: one per grid point); `None` leaves it to the
/// manifest's `shards:`. Known here, not in the worker, because the engine
/// plans the Slurm array.
pub fn shards_from_params(kind: &str, params: &serde_json::Value) -> Result<Option<u32>> {
    if kind != "stage2_sweep" {
        return Ok(None);
    }
    let n = grid::GridFile::parse(params)?.runs()?.len();
    Ok((n > 1).then_some(n as u32))
}

impl Home {
    /// The program's file name, beside `pipeline`; `None` for no program.
    pub fn program(self) -> Option<&'static str> {
        match self {
            Home::Media => Some("pipeline-media"),
            Home::Worker => Some("pipeline-worker"),
            Home::Engine => Some("pipeline"),
            Home::Unimplemented => None,
        }
    }
}

/// Finds the implementation of `kind` among `registry` (a program's own
/// kinds), or says why there is none.
pub fn lookup(registry: Vec<Box<dyn Stage>>, kind: &str) -> Result<Box<dyn Stage>> {
    if let Some(s) = registry.into_iter().find(|s| s.kind() == kind) {
        return Ok(s);
    }
    match kind_info(kind).map(|k| k.home) {
        Some(Home::Unimplemented) => bail!("stage kind {kind} is not implemented yet"),
        Some(home) => bail!(
            "stage kind {kind} runs in {}, not in this program",
            home.program().unwrap_or("no program")
        ),
        None => bail!(
            "unknown stage kind '{kind}' (known kinds: {})",
            kind_names()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_recipe_keeps_the_stages_own_defaults() {
        use model_params::{BaselineParams, Schedule, Stage2Params};
        let b: BaselineParams =
            parse_over_defaults(&serde_json::json!({"recipe": {"epochs": 3}})).unwrap();
        assert_eq!(b.recipe.epochs, 3);
        // The baseline's recipe, not the generic one (warm-up cosine, lr 3e-5, clip 1).
        assert_eq!(b.recipe.lr, 1e-5);
        assert_eq!(b.recipe.clip_norm, None);
        assert_eq!(
            b.recipe.schedule,
            Schedule::StepDecay {
                from_epoch: 2,
                gamma: 0.5
            }
        );
        // A schedule of another kind replaces the default's whole.
        let b: BaselineParams = parse_over_defaults(&serde_json::json!({
            "recipe": {"schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}}
        }))
        .unwrap();
        assert_eq!(
            b.recipe.schedule,
            Schedule::WarmupCosine {
                warmup: 1,
                final_factor: 0.1
            }
        );
        let s: Stage2Params =
            parse_over_defaults(&serde_json::json!({"recipe": {"epochs": 2}})).unwrap();
        assert_eq!((s.recipe.lr, s.recipe.patience), (1e-5, Some(10)));
    }

    #[test]
    fn a_bad_parameter_is_named_by_its_key_and_expected_type() {
        let e = check_params(
            "stage2",
            &serde_json::json!({"recipe": {"epochs": "twenty"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("parameter 'recipe.epochs'"), "{e}");
        assert!(e.contains("expected usize"), "{e}");
        let e = check_params("stage1", &serde_json::json!({"modle": {}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `modle`"), "{e}");
        let e = check_params(
            "stage2_sweep",
            &serde_json::json!({"base": {}, "grid": {"recipe.lr": [1e-4, "fast"]}}),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("\"recipe.lr\":\"fast\""), "{e}");
        assert!(e.contains("parameter 'recipe.lr'"), "{e}");
        // The media kinds are checked in every build, with or without FFmpeg.
        let e = check_params("synth", &serde_json::json!({"identities": "sixty"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter 'identities'"), "{e}");
        assert!(e.contains("invalid type: string \"sixty\""), "{e}");
    }

    #[test]
    fn a_kind_is_refused_here_with_where_it_runs() {
        let e = lookup(Vec::new(), "stage2").err().unwrap().to_string();
        assert!(e.contains("runs in pipeline-worker"), "{e}");
        let e = lookup(Vec::new(), "synth").err().unwrap().to_string();
        assert!(e.contains("runs in pipeline-media"), "{e}");
        let e = lookup(Vec::new(), "report").err().unwrap().to_string();
        assert!(e.contains("runs in pipeline,"), "{e}");
        let e = lookup(Vec::new(), "download").err().unwrap().to_string();
        assert!(e.contains("runs in pipeline,"), "{e}");
        let e = lookup(Vec::new(), "nosuch").err().unwrap().to_string();
        assert!(e.contains("unknown stage kind"), "{e}");
    }
}
