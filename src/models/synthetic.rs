//! A tiny synthetic element set in the elements stage's format (manifest plus
//! safetensors shards), for tests and benchmarks that must not wait for the
//! real corpus. Fake audio carries a spectral ripple and fake video a bright
//! patch, so a model that learns anything separates them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::category::Category;
use super::data::{MEL_BINS, MEL_FRAMES, N_FRAMES};
use super::rng::SplitMix64;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub identities: usize,
    /// Identities `0..val_identities` go to validation, the rest to training.
    pub val_identities: usize,
    pub categories: Vec<Category>,
    /// Clips per (identity, category).
    pub clips_each: usize,
    pub frame_size: i64,
    pub clips_per_shard: usize,
    pub seed: i64,
}

/// `n` draws of a standard normal (Box-Muller) from `rng`.
fn normal(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u = 1.0 - rng.next_f64();
            let v = rng.next_f64();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// `n` uniform draws in [0, 1) from `rng`.
fn uniform(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f64() as f32).collect()
}

/// Writes the element folder `dir`. The data are a pure function of the
/// spec: drawn from a generator of their own, never from libtorch's global
/// one, so tests writing element sets on several threads at once each get
/// exactly their own data.
pub fn write_elements(dir: &Path, spec: &SyntheticSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = SplitMix64::new(&[spec.seed as u64, 0x5e1e_4e47]);
    let mut records = Vec::new();
    for id in 0..spec.identities {
        for &cat in &spec.categories {
            for k in 0..spec.clips_each {
                records.push((format!("id{id:05}/{}/{k}", cat.folder()), id, cat));
            }
        }
    }
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let s = spec.frame_size;
    let mut manifest = std::fs::File::create(dir.join("manifest.jsonl"))?;
    for (shard_no, chunk) in records.chunks(spec.clips_per_shard.max(1)).enumerate() {
        let shard = format!("shard-{shard_no:05}.safetensors");
        let mut mels = Vec::new();
        let mut frames = Vec::new();
        for (index, (key, id, cat)) in chunk.iter().enumerate() {
            let opts = (Kind::Float, Device::Cpu);
            let mel = Tensor::from_slice(&normal(&mut rng, (MEL_BINS * MEL_FRAMES) as usize))
                .view([MEL_BINS, MEL_FRAMES]);
            let video = Tensor::from_slice(&uniform(&mut rng, (N_FRAMES * s * s * 3) as usize))
                .view([N_FRAMES, s, s, 3])
                * 0.3
                + 0.2
                + (*id as f64 * 0.03);
            let audio_fake = matches!(
                cat,
                Category::Rvfa | Category::Fvfa | Category::RvfaVc | Category::RvfaSvc
            );
            let mel = if audio_fake {
                let bins = Tensor::arange(MEL_BINS, opts).view([MEL_BINS, 1]);
                mel + (bins * 0.5).sin() * 0.3
            } else {
                mel
            };
            if matches!(cat, Category::Fvra | Category::Fvfa) {
                let h = s / 2;
                let _ = video.narrow(1, h / 2, h).narrow(2, h / 2, h).fill_(0.95);
            }
            mels.push(mel);
            frames.push((video.clamp(0.0, 1.0) * 255.0).to_kind(Kind::Uint8));
            let rec = serde_json::json!({
                "key": key,
                "identity": format!("id{id:05}"),
                "race": "Synthetic",
                "gender": "none",
                "category": cat.folder(),
                "audio_fake": audio_fake,
                "video_fake": matches!(cat, Category::Fvra | Category::Fvfa),
                "source_blake3": "",
                "window_start_sec": 0.0,
                "start_frame": 0,
                "split": if *id < spec.val_identities { "val" } else { "train" },
                "shard": shard,
                "index": index,
            });
            writeln!(manifest, "{rec}")?;
        }
        let tensors = [
            ("frames", Tensor::stack(&frames, 0)),
            ("mel", Tensor::stack(&mels, 0)),
        ];
        Tensor::write_safetensors(&tensors, dir.join(&shard))
            .with_context(|| format!("writing {shard}"))?;
    }
    Ok(())
}
