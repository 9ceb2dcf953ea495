//! The parameters of the `seedvc` kind and the Seed-VC command lines it
//! knows: here and not in `pipeline-media` so that `pipeline` checks them at
//! plan time (a `--compile` flag is refused before anything runs). This
//! module owns the shape of the two shipped Seed-VC commands (v1's
//! `inference.py`, v2's `inference_v2.py`), their output naming and rate,
//! and the Hugging Face models each loads; it knows nothing of running them.
//!
//! A profile either names a built-in template (`"seed_vc": "v2"`), optionally
//! run through a site's environment (`"launcher": ["conda", "run",
//! "--no-capture-output", "-n", "seedvc", "python"]` in place of `python`),
//! or gives the whole argv as `command` (the demo's stand-in, a site's own
//! wrapper). Both may be given: `seed_vc` then only says which Seed-VC the
//! command runs, for the models checked before an offline run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::parse_params;

/// What Seed-VC writes, v1 and v2 alike (its 22.05 kHz mel and vocoder).
pub const SEEDVC_OUTPUT_RATE: u32 = 22_050;

/// Which Seed-VC inference script a built-in template runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedVcVersion {
    V1,
    V2,
}

impl SeedVcVersion {
    /// The script, run from the Seed-VC checkout.
    pub fn script(self) -> &'static str {
        match self {
            Self::V1 => "inference.py",
            Self::V2 => "inference_v2.py",
        }
    }

    /// The flags after `--source {source} --target {target} --output
    /// {output}`, as the paper's reference runs them. Never `--compile`:
    /// see [`refuse_compile`].
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Self::V1 => &[
                "--diffusion-steps",
                "30",
                "--length-adjust",
                "1.0",
                "--inference-cfg-rate",
                "0.7",
                "--fp16",
                "true",
            ],
            Self::V2 => &[
                "--diffusion-steps",
                "25",
                "--length-adjust",
                "1.0",
                "--intelligibility-cfg-rate",
                "0.7",
                "--similarity-cfg-rate",
                "0.7",
                "--top-p",
                "0.9",
                "--temperature",
                "1.0",
                "--repetition-penalty",
                "1.0",
                "--convert-style",
                "false",
                "--anonymization-only",
                "false",
            ],
        }
    }

    /// How its output file name starts, before `<src>_<ref>_...wav`.
    pub fn output_prefix(self) -> &'static str {
        match self {
            Self::V1 => "vc_",
            Self::V2 => "vc_v2_",
        }
    }

    /// The Hugging Face repositories it loads (read from its source): its
    /// own checkpoints, the CAM++ style encoder and (v2) the ASTRAL content
    /// quantizers through `hf_utils.load_custom_model_from_hf` into the
    /// checkout's `checkpoints/`; the BigVGAN vocoder and Whisper through
    /// `from_pretrained` into the HF cache (v1 points `HF_HUB_CACHE` at
    /// `checkpoints/hf_cache`), and (v2) HuBERT for the content features.
    pub fn default_models(self) -> Vec<String> {
        let common = [
            "Plachta/Seed-VC",
            "funasr/campplus",
            "nvidia/bigvgan_v2_22khz_80band_256x",
            "openai/whisper-small",
        ];
        let extra: &[&str] = match self {
            Self::V1 => &[],
            Self::V2 => &["Plachta/ASTRAL-quantization", "facebook/hubert-large-ll60k"],
        };
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    }
}

impl std::fmt::Display for SeedVcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// `seedvc`: the voice converter run per clip.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedVcParams {
    /// A built-in Seed-VC template (`v1` or `v2`), run with `launcher`.
    #[serde(default)]
    pub seed_vc: Option<SeedVcVersion>,
    /// The converter's whole argv with placeholders; replaces the built-in
    /// template when both are given.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// What runs the built-in template's script (default `["python"]`), for
    /// a site's environment: `["conda", "run", "--no-capture-output", "-n",
    /// "seedvc", "python"]`.
    #[serde(default)]
    pub launcher: Option<Vec<String>>,
    /// Working directory of the converter, relative to the workspace or
    /// absolute (Seed-VC reads `configs/` and `checkpoints/` relative to its
    /// checkout).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables for the converter.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_max_failed")]
    pub max_failed_fraction: f64,
    /// The sample rate every converted file must have (Seed-VC's and the
    /// stand-in's: 22.05 kHz).
    #[serde(default = "default_rate")]
    pub expect_sample_rate: u32,
    /// How far a converted file's duration may be from its source's. Seed-VC
    /// with `--length-adjust 1.0` (and v2 without style conversion) keeps
    /// the length within a few 11.6 ms frames.
    #[serde(default = "default_duration_tolerance")]
    pub duration_tolerance_seconds: f64,
    /// A converted file whose RMS level is below this (dB re full scale) is
    /// silent and fails its item.
    #[serde(default = "default_min_rms")]
    pub min_rms_dbfs: f64,
    /// Hugging Face repositories (`org/name`) that must be on disk before an
    /// offline run (`HF_HUB_OFFLINE` set) converts anything; default: those
    /// of `seed_vc`, none without it.
    #[serde(default)]
    pub required_models: Option<Vec<String>>,
}

fn default_timeout() -> u64 {
    1800
}
fn default_max_failed() -> f64 {
    0.05
}
fn default_rate() -> u32 {
    SEEDVC_OUTPUT_RATE
}
fn default_duration_tolerance() -> f64 {
    0.2
}
fn default_min_rms() -> f64 {
    -50.0
}

impl SeedVcParams {
    /// The step's parameters, checked: what the step runs with, and what
    /// `pipeline` checks when it plans the step.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let p: Self = parse_params(v)?;
        match (&p.seed_vc, &p.command, &p.launcher) {
            (None, None, _) => bail!(
                "give `seed_vc` (\"v1\" or \"v2\", Seed-VC's shipped command) or `command` \
                 (the converter's argv)"
            ),
            (_, Some(c), _) if c.is_empty() => {
                bail!("`command` is empty; give the converter's argv")
            }
            (_, Some(_), Some(_)) => bail!(
                "`launcher` runs the built-in `seed_vc` template; with `command`, write the \
                 launcher into the command's argv instead"
            ),
            (_, _, Some(l)) if l.is_empty() => {
                bail!("`launcher` is empty; give what runs Python, e.g. [\"python\"]")
            }
            _ => {}
        }
        refuse_compile(&p.argv())?;
        if p.timeout_seconds == 0 || p.expect_sample_rate == 0 {
            bail!("timeout_seconds and expect_sample_rate must be positive");
        }
        if !(p.duration_tolerance_seconds.is_finite() && p.duration_tolerance_seconds >= 0.0) {
            bail!(
                "duration_tolerance_seconds ({}) must be a number of seconds, 0 or more",
                p.duration_tolerance_seconds
            );
        }
        if !(p.min_rms_dbfs.is_finite() && p.min_rms_dbfs <= 0.0) {
            bail!(
                "min_rms_dbfs ({}) must be a level in dB re full scale, 0 or below",
                p.min_rms_dbfs
            );
        }
        for m in p.required_models.iter().flatten() {
            let ok = m
                .split_once('/')
                .is_some_and(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'));
            if !ok {
                bail!("required_models: {m:?} is not a Hugging Face repository id like \"openai/whisper-small\"");
            }
        }
        Ok(p)
    }

    /// The converter's argv with its placeholders (`{pipeline}`, `{source}`,
    /// `{target}`, `{output}`) still in: `command`, else the built-in
    /// template of `seed_vc` behind `launcher`.
    pub fn argv(&self) -> Vec<String> {
        if let Some(c) = &self.command {
            return c.clone();
        }
        let Some(v) = self.seed_vc else {
            return Vec::new();
        };
        let launcher = self
            .launcher
            .clone()
            .unwrap_or_else(|| vec!["python".to_string()]);
        let io = [
            "--source", "{source}", "--target", "{target}", "--output", "{output}",
        ];
        launcher
            .into_iter()
            .chain(
                std::iter::once(v.script())
                    .chain(io)
                    .chain(v.flags().iter().copied())
                    .map(str::to_string),
            )
            .collect()
    }

    /// The repositories an offline run needs on disk.
    pub fn required_models(&self) -> Vec<String> {
        match (&self.required_models, self.seed_vc) {
            (Some(m), _) => m.clone(),
            (None, Some(v)) => v.default_models(),
            (None, None) => Vec::new(),
        }
    }
}

/// Seed-VC v2 declares `--compile` with `type=bool`, so argparse turns any
/// non-empty string into True: `--compile False` compiles. Compiling is a
/// long, GPU-specific warm-up per process that this stage would pay per
/// conversion, so the flag (or an abbreviation argparse accepts) is refused.
pub fn refuse_compile(argv: &[String]) -> Result<()> {
    for a in argv {
        let flag = a.split('=').next().unwrap_or_default();
        if flag.len() >= "--com".len() && "--compile".starts_with(flag) {
            bail!(
                "the converter command passes `{a}`: Seed-VC parses `--compile` as a Python bool \
                 from a string, so any value (even `False`) turns compilation on; remove the flag"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_built_in_templates_are_the_shipped_commands() {
        let v2 = SeedVcParams::from_json(&json!({"seed_vc": "v2"})).unwrap();
        assert_eq!(
            v2.argv(),
            words(
                "python inference_v2.py --source {source} --target {target} --output {output} \
                 --diffusion-steps 25 --length-adjust 1.0 --intelligibility-cfg-rate 0.7 \
                 --similarity-cfg-rate 0.7 --top-p 0.9 --temperature 1.0 \
                 --repetition-penalty 1.0 --convert-style false --anonymization-only false"
            )
        );
        let v1 = SeedVcParams::from_json(&json!({"seed_vc": "v1"})).unwrap();
        assert_eq!(
            v1.argv(),
            words(
                "python inference.py --source {source} --target {target} --output {output} \
                 --diffusion-steps 30 --length-adjust 1.0 --inference-cfg-rate 0.7 --fp16 true"
            )
        );
        assert_eq!(v1.expect_sample_rate, 22_050);
        let conda = SeedVcParams::from_json(&json!({
            "seed_vc": "v2",
            "launcher": ["conda", "run", "--no-capture-output", "-n", "seedvc", "python"]
        }))
        .unwrap();
        assert_eq!(
            conda.argv()[..8],
            words("conda run --no-capture-output -n seedvc python inference_v2.py --source")[..]
        );
        assert_eq!(conda.argv()[6..], v2.argv()[1..]);
    }

    #[test]
    fn each_version_requires_the_models_its_source_loads() {
        let v1 = SeedVcParams::from_json(&json!({"seed_vc": "v1"})).unwrap();
        assert_eq!(
            v1.required_models(),
            words("Plachta/Seed-VC funasr/campplus nvidia/bigvgan_v2_22khz_80band_256x openai/whisper-small")
        );
        let v2 = SeedVcParams::from_json(&json!({"seed_vc": "v2"})).unwrap();
        assert!(v2
            .required_models()
            .contains(&"Plachta/ASTRAL-quantization".to_string()));
        let own = SeedVcParams::from_json(&json!({"command": ["x"]})).unwrap();
        assert!(own.required_models().is_empty());
        let site =
            SeedVcParams::from_json(&json!({"seed_vc": "v2", "required_models": ["a/b"]})).unwrap();
        assert_eq!(site.required_models(), ["a/b"]);
        let e = SeedVcParams::from_json(&json!({"seed_vc": "v2", "required_models": ["whisper"]}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"whisper\" is not a Hugging Face repository id"),
            "{e}"
        );
    }

    #[test]
    fn compile_and_contradictions_are_refused_with_the_reason() {
        for flag in ["--compile", "--compile=False", "--comp"] {
            let mut argv = words("python inference_v2.py --source {source}");
            argv.extend([flag.to_string(), "False".to_string()]);
            let e = SeedVcParams::from_json(&json!({"command": argv}))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("passes `{flag}`")) && e.contains("even `False`"),
                "{e}"
            );
        }
        // `--convert-style` is not an abbreviation of `--compile`.
        SeedVcParams::from_json(&json!({"seed_vc": "v2"})).unwrap();
        let e = SeedVcParams::from_json(&json!({})).unwrap_err().to_string();
        assert!(e.contains("give `seed_vc`"), "{e}");
        let e = SeedVcParams::from_json(&json!({"seed_vc": "v3"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter 'seed_vc'") && e.contains("v3"), "{e}");
        let e = SeedVcParams::from_json(&json!({"command": ["x"], "launcher": ["conda"]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`launcher` runs the built-in"), "{e}");
        let e = SeedVcParams::from_json(&json!({"seed_vc": "v1", "min_rms_dbfs": 3}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_rms_dbfs (3)"), "{e}");
    }

    /// Every shipped Seed-VC profile file passes the check.
    #[test]
    fn the_shipped_seedvc_configs_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut seen = 0;
        for profile in ["demo", "paper"] {
            for e in std::fs::read_dir(root.join(profile)).unwrap() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("seedvc") {
                    continue;
                }
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let p = SeedVcParams::from_json(&v)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                assert!(!p.argv().is_empty());
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen} seedvc configs");
    }
}
