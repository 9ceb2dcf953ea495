//! The parameters of the media kinds (synth, seedvc, elements,
//! shortcut_audit, voxceleb_subset), here and not in `pipeline-media` so
//! that `pipeline` checks them at plan time without linking FFmpeg; the
//! kinds parse theirs with the same `from_json`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::category::Category;
use super::parse_params;

/// `synth`: the demo's synthetic corpus.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthParams {
    pub seed: u64,
    pub identities: usize,
    #[serde(default = "default_fps")]
    pub fps: u32,
    #[serde(default = "default_synth_frame_size")]
    pub frame_size: u32,
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    #[serde(default = "default_synth_min_seconds")]
    pub min_seconds: f64,
    #[serde(default = "default_synth_max_seconds")]
    pub max_seconds: f64,
    /// Videos per identity in each of the four categories.
    #[serde(default = "default_one")]
    pub videos_per_category: usize,
    /// VoxCeleb2-shaped reference utterances per identity.
    #[serde(default = "default_vox2")]
    pub vox2_utterances: usize,
    /// How far the mouth leads the sound (seconds).
    #[serde(default = "default_lead")]
    pub lead_seconds: f64,
}

impl SynthParams {
    /// The step's parameters, checked: what the step runs with, and what
    /// `pipeline` checks when it plans the step.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let p: Self = parse_params(v)?;
        if p.identities == 0 || p.fps == 0 || p.frame_size < 16 || p.min_seconds <= 0.0 {
            bail!(
                "identities and fps must be positive, frame_size at least 16, min_seconds positive"
            );
        }
        Ok(p)
    }
}

/// `seedvc`: its parameters and the Seed-VC commands it knows have their own module.
pub use super::seedvc_params::SeedVcParams;

/// `elements`: log-mel and sampled frames per clip, and the split.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementsParams {
    /// Seeds the window starts and the split.
    pub seed: u64,
    #[serde(default = "default_clip_seconds")]
    pub clip_seconds: f64,
    #[serde(default = "default_elements_frame_size")]
    pub frame_size: u32,
    /// Videos shorter than this fail as unusable.
    #[serde(default = "default_elements_min_seconds")]
    pub min_seconds: f64,
    /// The least share of a window's video time its audio must cover.
    #[serde(default = "default_min_audio_coverage")]
    pub min_audio_coverage: f64,
    #[serde(default = "default_clips_per_shard")]
    pub clips_per_shard: usize,
    /// Clips (windows) per video; keys get a `#j` suffix when above 1.
    #[serde(default = "default_one")]
    pub clips_per_video: usize,
    #[serde(default = "default_max_failed")]
    pub max_failed_fraction: f64,
    #[serde(default)]
    pub split: SplitParams,
}

impl ElementsParams {
    /// The step's parameters, checked (see [`SynthParams::from_json`]).
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let p: Self = parse_params(v)?;
        if p.frame_size == 0
            || p.clip_seconds <= 0.0
            || p.clips_per_shard == 0
            || p.clips_per_video == 0
        {
            bail!("frame_size, clip_seconds, clips_per_shard and clips_per_video must be positive");
        }
        let sp = &p.split;
        if !(0.0..=sp.train_fraction).contains(&sp.fusion_fraction) {
            bail!(
                "parameter 'split.fusion_fraction' ({}) is taken from the training identities, \
                 so it must lie in [0, split.train_fraction ({})]",
                sp.fusion_fraction,
                sp.train_fraction
            );
        }
        Ok(p)
    }
}

/// The identity-disjoint split, stratified by (race, gender): within each
/// stratum of `n` identities, `round(train_fraction n)` train,
/// `round(test_fraction n)` are held out for the reported metrics, and the
/// rest validate (model selection, early stopping). Of the training
/// identities, `round(fusion_fraction n)` form the `fusion` split instead:
/// held out from every training but stage 2's fusion refit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    #[serde(default)]
    pub fusion_fraction: f64,
    /// A JSON file `{"train": [ids], "val": [ids], "test": [ids], "fusion":
    /// [ids]}` (relative to the workspace; `test` and `fusion` may be left
    /// out) that replaces the seeded split.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl Default for SplitParams {
    fn default() -> Self {
        SplitParams {
            train_fraction: default_train_fraction(),
            test_fraction: default_test_fraction(),
            fusion_fraction: 0.0,
            file: None,
        }
    }
}

/// The shortcut audit's silence rule by default: a frame is silent
/// [`SILENCE_RELATIVE_DB`] below the clip's loudest frame or below
/// [`SILENCE_FLOOR_DBFS`].
pub const SILENCE_RELATIVE_DB: f64 = 35.0;
pub const SILENCE_FLOOR_DBFS: f64 = -60.0;

/// `shortcut_audit`: per-category statistics and their AUCs alone.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// A frame is silent this many dB below the clip's loudest frame...
    #[serde(default = "default_relative_db")]
    pub silence_relative_db: f64,
    /// ... or below this level (dBFS) in any case.
    #[serde(default = "default_floor_dbfs")]
    pub silence_floor_dbfs: f64,
    /// A statistic whose AUC is above this (or below `1 - flag_auc`) is flagged.
    #[serde(default = "default_flag_auc")]
    pub flag_auc: f64,
    #[serde(default)]
    pub fail_on_shortcut: bool,
    #[serde(default = "default_max_failed")]
    pub max_failed_fraction: f64,
}

impl AuditParams {
    /// The step's parameters, checked (see [`SynthParams::from_json`]).
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let p: Self = parse_params(v)?;
        if !(0.5..=1.0).contains(&p.flag_auc) {
            bail!("flag_auc must lie in [0.5, 1], not {}", p.flag_auc);
        }
        Ok(p)
    }
}

/// `voxceleb_subset`: the VoxCeleb2 utterances of the corpus's real
/// identities, fetched from a Hugging Face dataset of WebDataset tar shards.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoxcelebSubsetParams {
    /// The dataset repository (`gaunernst/voxceleb2-dev-wds`).
    pub repo: String,
    /// A branch, tag or commit of it; a commit pins the data.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Which of its files are shards: a glob over their paths (`*`, `?`).
    pub pattern: String,
    /// The rate of the written wav files (mono).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// The category of the input corpus whose identity folders are kept.
    #[serde(default = "default_identities_from")]
    pub identities_from: Category,
    /// The hub's address; the environment variable `HF_ENDPOINT`, when set,
    /// wins (a mirror, as `huggingface_hub` reads it).
    #[serde(default = "default_hf_endpoint")]
    pub endpoint: String,
    /// Shards downloaded and converted at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Retries of a failed request before its shard fails.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The share of kept utterances that may fail to decode.
    #[serde(default = "default_max_failed")]
    pub max_failed_fraction: f64,
}

impl VoxcelebSubsetParams {
    /// The step's parameters, checked (see [`SynthParams::from_json`]).
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let p: Self = parse_params(v)?;
        if p.repo.split('/').filter(|s| !s.is_empty()).count() != 2 {
            bail!(
                "parameter 'repo' ({:?}) must name a dataset as OWNER/NAME",
                p.repo
            );
        }
        if p.revision.is_empty() || p.pattern.is_empty() {
            bail!("parameters 'revision' and 'pattern' must not be empty");
        }
        if p.sample_rate < 8000 || p.concurrency == 0 {
            bail!("sample_rate must be at least 8000 and concurrency positive");
        }
        if !(p.endpoint.starts_with("http://") || p.endpoint.starts_with("https://")) {
            bail!(
                "parameter 'endpoint' ({:?}) must be an http:// or https:// address",
                p.endpoint
            );
        }
        Ok(p)
    }
}

fn default_fps() -> u32 {
    25
}
fn default_synth_frame_size() -> u32 {
    96
}
fn default_sample_rate() -> u32 {
    16_000
}
fn default_synth_min_seconds() -> f64 {
    3.5
}
fn default_synth_max_seconds() -> f64 {
    5.0
}
fn default_one() -> usize {
    1
}
fn default_vox2() -> usize {
    3
}
fn default_lead() -> f64 {
    0.04
}
fn default_max_failed() -> f64 {
    0.05
}
fn default_clip_seconds() -> f64 {
    3.2
}
fn default_elements_frame_size() -> u32 {
    224
}
fn default_elements_min_seconds() -> f64 {
    1.0
}
fn default_min_audio_coverage() -> f64 {
    0.9
}
fn default_clips_per_shard() -> usize {
    256
}
fn default_train_fraction() -> f64 {
    0.7
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_relative_db() -> f64 {
    SILENCE_RELATIVE_DB
}
fn default_floor_dbfs() -> f64 {
    SILENCE_FLOOR_DBFS
}
fn default_flag_auc() -> f64 {
    0.7
}
fn default_revision() -> String {
    "main".to_string()
}
fn default_identities_from() -> Category {
    Category::Rvra
}
fn default_hf_endpoint() -> String {
    "https://huggingface.co".to_string()
}
fn default_concurrency() -> usize {
    4
}
fn default_retries() -> u32 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_the_bad_key_and_checks_its_ranges() {
        let e = SynthParams::from_json(&serde_json::json!({"seed": 1, "identities": "sixty"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter 'identities'"), "{e}");
        assert!(e.contains("invalid type: string \"sixty\""), "{e}");
        let e = SeedVcParams::from_json(&serde_json::json!({"command": []}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`command` is empty"), "{e}");
        let e = ElementsParams::from_json(&serde_json::json!({"seed": 1, "split": {"trian": 1}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `trian`"), "{e}");
        let e = ElementsParams::from_json(&serde_json::json!({
            "seed": 1, "split": {"train_fraction": 0.5, "fusion_fraction": 0.6}
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("'split.fusion_fraction' (0.6)"), "{e}");
        let e = AuditParams::from_json(&serde_json::json!({"flag_auc": 0.2}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("flag_auc must lie in [0.5, 1]"), "{e}");
        let p = ElementsParams::from_json(&serde_json::json!({"seed": 3})).unwrap();
        assert_eq!((p.frame_size, p.clips_per_shard), (224, 256));
        assert_eq!(p.split.train_fraction, 0.7);
    }

    #[test]
    fn voxceleb_subset_takes_the_paper_profile_and_names_a_bad_category() {
        let paper = serde_json::json!({
            "repo": "gaunernst/voxceleb2-dev-wds", "revision": "main",
            "pattern": "voxceleb2-dev-*.tar", "sample_rate": 16000,
            "identities_from": "RealVideo-RealAudio"
        });
        let p = VoxcelebSubsetParams::from_json(&paper).unwrap();
        assert_eq!(p.identities_from, Category::Rvra);
        assert_eq!(
            (p.endpoint.as_str(), p.concurrency),
            ("https://huggingface.co", 4)
        );
        let mut bad = paper.clone();
        bad["identities_from"] = "RealVideo".into();
        let e = VoxcelebSubsetParams::from_json(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter 'identities_from'"), "{e}");
        assert!(e.contains("RealVideo-RealAudio"), "{e}");
        let mut bad = paper.clone();
        bad["repo"] = "voxceleb2".into();
        let e = VoxcelebSubsetParams::from_json(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OWNER/NAME"), "{e}");
        let mut bad = paper;
        bad["hf_token"] = "x".into();
        let e = VoxcelebSubsetParams::from_json(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `hf_token`"), "{e}");
    }
}
