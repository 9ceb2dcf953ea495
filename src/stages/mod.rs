//! Built-in stage kinds and the [`Stage`] trait they implement.
//!
//! A built-in stage runs inside `pipeline exec-step` (on this machine or on a
//! compute node): it reads its declared inputs, writes its declared outputs into
//! staging paths the engine hands it, and never touches the store. The engine
//! moves the staged outputs into place and records them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

#[cfg(feature = "media")]
pub mod audit;
#[cfg(feature = "torch")]
pub mod baseline;
#[cfg(feature = "media")]
pub mod corpus;
#[cfg(feature = "media")]
pub mod elements;
#[cfg(feature = "media")]
pub mod elements_bench;
#[cfg(feature = "media")]
pub mod elements_inspect;
#[cfg(any(feature = "media", feature = "torch"))]
pub mod items;
#[cfg(feature = "media")]
pub mod seedvc;
#[cfg(feature = "torch")]
pub mod stage1;
#[cfg(feature = "torch")]
pub mod stage2;
#[cfg(feature = "torch")]
pub mod sweep;
#[cfg(feature = "media")]
pub mod synth;
#[cfg(feature = "media")]
mod synth_face;
#[cfg(feature = "media")]
mod synth_voice;
#[cfg(feature = "media")]
pub mod vc_standin;

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
    /// `step_dir/items.jsonl`; the head ingests those lines into the store.
    pub items_dir: &'a Path,
    /// `Some((index, count))` when the stage runs as one shard of a sharded
    /// stage: then it fills `items_dir` with its share of the items and writes
    /// no outputs. `None` for the gathering run, which writes the outputs from
    /// `items_dir` (computing any item still missing itself).
    pub shard: Option<(u32, u32)>,
    /// CPU threads the step may use.
    pub threads: usize,
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
    /// Bumped whenever the stage's output for the same inputs and params would
    /// change; it enters the step fingerprint.
    fn version(&self) -> u32;
    /// Runs the stage to completion.
    fn run(&self, ctx: &StageContext<'_>) -> Result<()>;
    /// How many shards the stage runs as, decided by its parameters (a sweep:
    /// one per grid point). `None` leaves it to the manifest's `shards:`.
    fn shards(&self, _params: &serde_json::Value) -> Result<Option<u32>> {
        Ok(None)
    }
}

/// Every kind the pipeline knows of, implemented in this build or not. A
/// manifest naming a kind outside this list is rejected at validation.
pub const KNOWN_KINDS: &[&str] = &[
    "download",
    "voxceleb_subset",
    "synth",
    "seedvc",
    "elements",
    "baseline",
    "stage1",
    "stage2",
    "stage2_sweep",
    "shortcut_audit",
    "report",
];

/// The built-in kinds implemented in this build.
pub fn registry() -> Vec<Box<dyn Stage>> {
    // Each feature module appends its kinds here.
    #[allow(unused_mut)]
    let mut v: Vec<Box<dyn Stage>> = Vec::new();
    #[cfg(feature = "media")]
    {
        v.push(Box::new(elements::Elements));
        v.push(Box::new(synth::Synth));
        v.push(Box::new(seedvc::SeedVc));
        v.push(Box::new(audit::ShortcutAudit));
    }
    #[cfg(feature = "torch")]
    {
        v.push(Box::new(stage1::Stage1));
        v.push(Box::new(stage2::Stage2));
        v.push(Box::new(baseline::Baseline));
        v.push(Box::new(sweep::Stage2Sweep));
    }
    v
}

/// Finds the implementation of `kind`, or says why there is none.
pub fn lookup(kind: &str) -> Result<Box<dyn Stage>> {
    if let Some(s) = registry().into_iter().find(|s| s.kind() == kind) {
        return Ok(s);
    }
    if KNOWN_KINDS.contains(&kind) {
        bail!("stage kind {kind} is not implemented yet in this build");
    }
    bail!(
        "unknown stage kind '{kind}' (known kinds: {})",
        KNOWN_KINDS.join(", ")
    )
}
