//! The seedvc stage's checks around the converter: before an offline run,
//! that the models Seed-VC loads are on disk; after a failed conversion,
//! whether the Hugging Face hub's offline error is why; and for every
//! converted file, that it is a plausible voice clone of its source (the
//! expected sample rate, the source's duration, not silent) before it is
//! muxed and labelled fake. This module reads files and the environment; it
//! knows nothing of planning conversions or running the converter.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::media_params::SeedVcParams;
use pipeline_core::stages::seedvc_params::SeedVcVersion;

/// Seed-VC's own checkpoints, fetched by `hf_utils.load_custom_model_from_hf`
/// into the checkout's `checkpoints/` rather than the HF cache.
const CHECKPOINT_REPOS: [&str; 3] = [
    "Plachta/Seed-VC",
    "Plachta/ASTRAL-quantization",
    "funasr/campplus",
];

/// What the Hugging Face hub library says when a model it must fetch is not
/// cached and it may not (or cannot) download it.
const HUB_OFFLINE_SIGNS: [&str; 6] = [
    "localentrynotfounderror",
    "offlinemodeisenabled",
    "offline mode is enabled",
    "we couldn't connect to",
    "cannot find the requested files in the disk cache",
    "outgoing traffic has been disabled",
];

/// The converter's environment: the stage's `env` over the inherited one.
struct ConverterEnv<'a> {
    p: &'a SeedVcParams,
    /// The converter's working directory (relative cache paths resolve there).
    dir: PathBuf,
}

impl ConverterEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.p
            .env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.var(name).map(|v| self.dir.join(v))
    }

    /// The Hugging Face hub cache, as `huggingface_hub` finds it.
    fn hub_cache(&self) -> Option<PathBuf> {
        if let Some(c) = self.path("HF_HUB_CACHE") {
            return Some(c);
        }
        if let Some(h) = self.path("HF_HOME") {
            return Some(h.join("hub"));
        }
        let base = self
            .path("XDG_CACHE_HOME")
            .or_else(|| self.var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("huggingface").join("hub"))
    }

    /// `HF_HUB_OFFLINE`'s value when it is one `huggingface_hub` reads as true.
    fn offline(&self) -> Option<String> {
        self.var("HF_HUB_OFFLINE")
            .filter(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_uppercase().as_str()))
    }
}

/// The converter's working directory: `cwd` under the workspace (or as
/// given, when absolute), else this process's.
pub fn converter_dir(p: &SeedVcParams, workspace: &Path) -> Result<PathBuf> {
    match &p.cwd {
        Some(cwd) => {
            let dir = workspace.join(cwd);
            if !dir.is_dir() {
                bail!(
                    "the converter's working directory `cwd` {} does not exist: clone Seed-VC \
                     there (git clone https://github.com/Plachtaa/seed-vc) or set `cwd` to the \
                     site's Seed-VC checkout",
                    dir.display()
                );
            }
            Ok(dir)
        }
        None => std::env::current_dir()
            .map_err(|e| anyhow::anyhow!("cannot read the current directory: {e}")),
    }
}

/// When `HF_HUB_OFFLINE` is set, that every model of `required_models` has
/// a snapshot in Seed-VC's `checkpoints/` or the HF cache: one error naming
/// what is missing, where it looked and how to fetch it, before any
/// conversion starts (instead of a traceback per item).
pub fn check_offline_models(p: &SeedVcParams, converter_dir: &Path) -> Result<()> {
    let env = ConverterEnv {
        p,
        dir: converter_dir.to_path_buf(),
    };
    let Some(flag) = env.offline() else {
        return Ok(());
    };
    let required = p.required_models();
    if required.is_empty() {
        return Ok(());
    }
    let checkpoints = converter_dir.join("checkpoints");
    let v1_cache = checkpoints.join("hf_cache");
    let hub = env.hub_cache();
    let mut places = vec![
        (checkpoints.clone(), "Seed-VC's checkpoints/"),
        (v1_cache.clone(), "Seed-VC v1's HF cache"),
    ];
    if let Some(h) = &hub {
        places.push((
            h.clone(),
            "the HF cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub",
        ));
    }
    let missing: Vec<&String> = required
        .iter()
        .filter(|repo| !places.iter().any(|(dir, _)| has_snapshot(dir, repo)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let which = p
        .seed_vc
        .map_or("the converter".to_string(), |v| format!("Seed-VC {v}"));
    let looked: Vec<String> = places
        .iter()
        .map(|(d, what)| format!("  {} ({what})", d.display()))
        .collect();
    let fetch: Vec<String> = missing
        .iter()
        .map(|repo| {
            let dir = if CHECKPOINT_REPOS.contains(&repo.as_str()) {
                checkpoints.clone()
            } else if p.seed_vc == Some(SeedVcVersion::V1) {
                v1_cache.clone()
            } else {
                hub.clone().unwrap_or_else(|| v1_cache.clone())
            };
            format!(
                "  huggingface-cli download {repo} --cache-dir {}",
                dir.display()
            )
        })
        .collect();
    bail!(
        "HF_HUB_OFFLINE={flag}, so {which} cannot download its models, and these are not on \
         disk: {}.\nLooked for models--<org>--<name>/snapshots/<revision>/ in:\n{}\nTo fix: run \
         the stage once with network access and HF_HUB_OFFLINE unset (Seed-VC fetches what it \
         needs), or where the network is open run\n{}\nand copy the folders here; then set \
         HF_HUB_OFFLINE=1 again. If this converter loads other models, list them in the seedvc \
         parameter `required_models`.",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        looked.join("\n"),
        fetch.join("\n")
    )
}

/// A hub cache folder holds `repo` when a snapshot of it has a file.
fn has_snapshot(cache: &Path, repo: &str) -> bool {
    let snapshots = cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots");
    std::fs::read_dir(snapshots).is_ok_and(|revs| {
        revs.flatten()
            .any(|rev| std::fs::read_dir(rev.path()).is_ok_and(|mut files| files.next().is_some()))
    })
}

/// The reason a conversion failed when its log shows the hub's offline
/// error: the models are missing, not a traceback to read.
pub fn hub_offline_reason(log: &str) -> Option<String> {
    let line = log.lines().find(|l| {
        let l = l.to_lowercase();
        HUB_OFFLINE_SIGNS.iter().any(|s| l.contains(s))
    })?;
    let line: String = line.trim().chars().take(240).collect();
    Some(format!(
        "the converter's models are missing: the Hugging Face hub is offline or unreachable and \
         a model it loads is not in its cache ({line}); fetch them once with network access \
         (see the seedvc stage's `required_models`), then set HF_HUB_OFFLINE=1"
    ))
}

/// Whether a converted file, decoded mono to `audio` at `rate`, passes the
/// stage's checks against its source of `source_seconds`; its native rate
/// is `native_rate`. The error names the check and the numbers.
pub fn check_output(
    p: &SeedVcParams,
    name: &str,
    native_rate: u32,
    audio: &[f32],
    rate: u32,
    source_seconds: f64,
) -> Result<(), String> {
    if native_rate != p.expect_sample_rate {
        return Err(format!(
            "the converted file {name} is at {native_rate} Hz, not the expected {} Hz \
             (expect_sample_rate)",
            p.expect_sample_rate
        ));
    }
    let seconds = audio.len() as f64 / f64::from(rate);
    if (seconds - source_seconds).abs() > p.duration_tolerance_seconds {
        return Err(format!(
            "the converted file {name} lasts {seconds:.3} s and its source {source_seconds:.3} s, \
             more than duration_tolerance_seconds ({}) apart",
            p.duration_tolerance_seconds
        ));
    }
    let power =
        audio.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / audio.len().max(1) as f64;
    let dbfs = 10.0 * power.log10();
    if dbfs.is_nan() || dbfs < p.min_rms_dbfs {
        return Err(format!(
            "the converted file {name} is silent: its RMS level is {dbfs:.1} dBFS, below \
             min_rms_dbfs ({})",
            p.min_rms_dbfs
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_offline_error_is_told_apart_from_other_failures() {
        let log = "Traceback (most recent call last):\n  File \"inference_v2.py\"\n\
                   huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate \
                   cached snapshot folder for the specified revision on the local disk and \
                   outgoing traffic has been disabled.";
        let r = hub_offline_reason(log).unwrap();
        assert!(r.starts_with("the converter's models are missing"), "{r}");
        assert!(r.contains("LocalEntryNotFoundError"), "{r}");
        assert!(hub_offline_reason("RuntimeError: CUDA out of memory").is_none());
    }
}
