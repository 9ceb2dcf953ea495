//! A tiny synthetic element set in the elements stage's format (manifest plus
//! safetensors shards), for tests and benchmarks that must not wait for the
//! real corpus. Fake audio carries a spectral ripple and fake video a bright
//! patch, so a model that learns anything separates them.

use std::path::Path;

use anyhow::{Context, Result};
use pipeline_core::elementset::{shard_name, write_manifest, ClipRecord, ShardWriter, Split};
use tch::{Device, Kind, Tensor};

use super::category::Category;
use super::data::{MEL_BINS, MEL_FRAMES, N_FRAMES};
use super::rng::Rng;

/// A manifest row for a clip that no video was cut from.
fn record(key: String, identity: String, category: Category, split: Split) -> ClipRecord {
    ClipRecord {
        audio_fake: category.audio_fake(),
        category,
        frame_times: None,
        gender: "none".into(),
        identity,
        index: 0,
        key,
        race: "Synthetic".into(),
        shard: shard_name(0),
        source_blake3: String::new(),
        split,
        start_frame: 0,
        video_fake: category.y_video(),
        window_start_sec: 0.0,
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub identities: usize,
    /// Identities `0..val_identities` go to validation, the next
    /// `test_identities` to test, the rest to training.
    pub val_identities: usize,
    pub test_identities: usize,
    pub categories: Vec<Category>,
    /// Clips per (identity, category).
    pub clips_each: usize,
    pub frame_size: i64,
    pub clips_per_shard: usize,
    pub seed: i64,
}

/// `n` draws of a standard normal (Box-Muller) from `rng`.
fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u = 1.0 - rng.next_f64();
            let v = rng.next_f64();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// `n` uniform draws in [0, 1) from `rng`.
fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f64() as f32).collect()
}

/// Writes the element folder `dir`. The data are a pure function of the
/// spec: drawn from a generator of their own, never from libtorch's global
/// one, so tests writing element sets on several threads at once each get
/// exactly their own data.
pub fn write_elements(dir: &Path, spec: &SyntheticSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = Rng::from_keys(&[spec.seed as u64, 0x5e1e_4e47]);
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
    let mut manifest = Vec::new();
    for (shard_no, chunk) in records.chunks(spec.clips_per_shard.max(1)).enumerate() {
        let mut shard = ShardWriter::new(s as usize);
        for (key, id, cat) in chunk {
            let opts = (Kind::Float, Device::Cpu);
            let mel = Tensor::from_slice(&normal(&mut rng, (MEL_BINS * MEL_FRAMES) as usize))
                .view([MEL_BINS, MEL_FRAMES]);
            let video = Tensor::from_slice(&uniform(&mut rng, (N_FRAMES * s * s * 3) as usize))
                .view([N_FRAMES, s, s, 3])
                * 0.3
                + 0.2
                + (*id as f64 * 0.03);
            let mel = if cat.audio_fake() {
                let bins = Tensor::arange(MEL_BINS, opts).view([MEL_BINS, 1]);
                mel + (bins * 0.5).sin() * 0.3
            } else {
                mel
            };
            if matches!(cat, Category::Fvra | Category::Fvfa) {
                let h = s / 2;
                let _ = video.narrow(1, h / 2, h).narrow(2, h / 2, h).fill_(0.95);
            }
            let frames = (video.clamp(0.0, 1.0) * 255.0).to_kind(Kind::Uint8);
            let split = if *id < spec.val_identities {
                Split::Val
            } else if *id < spec.val_identities + spec.test_identities {
                Split::Test
            } else {
                Split::Train
            };
            manifest.push(ClipRecord {
                shard: shard_name(shard_no),
                index: shard.len() as u64,
                ..record(key.clone(), format!("id{id:05}"), *cat, split)
            });
            shard.push(
                &Vec::<f32>::try_from(mel.flatten(0, -1))?,
                &Vec::<u8>::try_from(frames.flatten(0, -1))?,
            )?;
        }
        shard
            .write(&dir.join(shard_name(shard_no)), None)
            .with_context(|| format!("writing {}", shard_name(shard_no)))?;
    }
    write_manifest(dir, &manifest)
}

/// What [`write_sync_elements`] generates.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    /// Identities per split part: (train, val, test).
    pub identities: (usize, usize, usize),
    pub frame_size: i64,
    /// How far the mouth leads the sound (seconds).
    pub lead_seconds: f64,
    pub seed: u64,
}

/// The quartile sampler's frame times in a 3.2 s window at 25 fps (80
/// frames, slices of 10, frames 2 and 7 of each), seconds from its start.
pub fn nominal_frame_times() -> Vec<f32> {
    (0..N_FRAMES as usize)
        .map(|k| (10 * (k / 2) + if k % 2 == 0 { 2 } else { 7 }) as f32 / 25.0)
        .collect()
}

/// A syllable envelope: (start, duration, peak) triples over 3.2 s.
fn syllables(rng: &mut Rng) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    let mut t = 0.05 + 0.2 * rng.next_f64();
    while t < 3.1 {
        let dur = 0.12 + 0.13 * rng.next_f64();
        out.push((t, dur, 0.55 + 0.45 * rng.next_f64()));
        t += dur + 0.05 + 0.2 * rng.next_f64();
    }
    out
}

fn envelope(syl: &[(f64, f64, f64)], t: f64) -> f64 {
    syl.iter()
        .find(|s| t >= s.0 && t < s.0 + s.1)
        .map_or(0.0, |s| {
            s.2 * (std::f64::consts::PI * (t - s.0) / s.1).sin()
        })
}

/// Writes an element set that holds lip sync and nothing else: every clip's
/// mel is a voice whose loudness follows a syllable envelope, and its frames
/// show a face whose mouth opens with an envelope (at the sampled frames'
/// times plus the lead), with head jitter and pixel noise. RVRA clips use
/// the sound's own envelope; FVRA clips another one of the same identity,
/// with no other difference, so only an audio-visual comparison tells them
/// apart. The manifest holds the frame times.
pub fn write_sync_elements(dir: &Path, spec: &SyncSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (n_train, n_val, n_test) = spec.identities;
    let s = spec.frame_size as usize;
    let times = nominal_frame_times();
    let mut manifest = Vec::new();
    let mut shard = ShardWriter::new(s);
    for id in 0..n_train + n_val + n_test {
        let split = if id < n_train {
            Split::Train
        } else if id < n_train + n_val {
            Split::Val
        } else {
            Split::Test
        };
        let mut rng = Rng::from_keys(&[spec.seed, 0x5_1c, id as u64]);
        let pitch = 2.0 + 6.0 * rng.next_f64();
        let skin = 0.45 + 0.3 * rng.next_f64();
        for cat in [Category::Rvra, Category::Fvra] {
            let sound = syllables(&mut rng);
            let other = syllables(&mut rng);
            let mouth = if cat == Category::Rvra {
                &sound
            } else {
                &other
            };
            let noise = normal(&mut rng, (MEL_BINS * MEL_FRAMES) as usize);
            let mut mel = vec![0f32; (MEL_BINS * MEL_FRAMES) as usize];
            for f in 0..MEL_FRAMES as usize {
                let e = envelope(&sound, f as f64 * super::data::MEL_HOP_SECONDS);
                for b in 0..MEL_BINS as usize {
                    let timbre = 0.5 + 0.5 * (b as f64 / pitch).cos();
                    let i = b * MEL_FRAMES as usize + f;
                    mel[i] = ((e * timbre + 1e-3).ln() + 0.3 * noise[i] as f64) as f32;
                }
            }
            let m = mel.iter().map(|&v| v as f64).sum::<f64>() / mel.len() as f64;
            let sd = (mel.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>()
                / (mel.len() - 1) as f64)
                .sqrt();
            let mel: Vec<f32> = mel
                .iter()
                .map(|&v| ((v as f64 - m) / (sd + 1e-6)) as f32)
                .collect();
            let mut frames = Vec::with_capacity(N_FRAMES as usize * s * s * 3);
            let pixel_noise = uniform(&mut rng, N_FRAMES as usize * s * s);
            for (k, &t) in times.iter().enumerate() {
                let open = envelope(mouth, t as f64 + spec.lead_seconds);
                let (jx, jy) = (rng.next_f64() * 2.0 - 1.0, rng.next_f64() * 2.0 - 1.0);
                let (cx, cy) = (s as f64 * 0.5 + jx, s as f64 * 0.7 + jy);
                let (rx, ry) = (s as f64 * 0.2, s as f64 * (0.03 + 0.12 * open));
                for y in 0..s {
                    for x in 0..s {
                        let (dx, dy) = ((x as f64 + 0.5 - cx) / rx, (y as f64 + 0.5 - cy) / ry);
                        let inside = dx * dx + dy * dy < 1.0;
                        let v = if inside { 0.1 } else { skin }
                            + 0.1 * (pixel_noise[(k * s + y) * s + x] as f64 - 0.5);
                        let px = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                        frames.extend_from_slice(&[px, px, px]);
                    }
                }
            }
            manifest.push(ClipRecord {
                index: shard.len() as u64,
                frame_times: Some(times.iter().map(|&t| t as f64).collect()),
                ..record(
                    format!("id{id:05}/{}", cat.folder()),
                    format!("id{id:05}"),
                    cat,
                    split,
                )
            });
            shard.push(&mel, &frames)?;
        }
    }
    shard
        .write(&dir.join(shard_name(0)), None)
        .context("writing the sync element set")?;
    write_manifest(dir, &manifest).context("writing its manifest")
}
