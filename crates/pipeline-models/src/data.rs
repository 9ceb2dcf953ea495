//! Element loading: batches of the element sets the elements stage writes
//! (read through the one format module, [`pipeline_core::elementset`]), read by
//! background prefetch threads, ImageNet normalisation at load time, and
//! train-only augmentation (random grayscale and horizontal flip, one draw
//! per clip applied to all its frames; MODELS.md defect 2: evaluation sees
//! clean frames).

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::category::Category;
use super::rng::Rng;

pub use pipeline_core::elementset::{ClipRecord, ElementSet, Split, MEL_HOP_SECONDS};
pub use pipeline_core::stages::model_params::{AudioInput, Augment};

/// The mel size of an element: `[128, 768]` (the element-set format's, as
/// tensor sizes).
pub const MEL_BINS: i64 = pipeline_core::elementset::MEL_BINS as i64;
pub const MEL_FRAMES: i64 = pipeline_core::elementset::MEL_FRAMES as i64;
/// Frames per element.
pub const N_FRAMES: i64 = pipeline_core::elementset::N_FRAMES as i64;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `u8 [16, S, S, 3]` -> normalised `f32 [16, 3, S, S]`, optionally grayscale
/// (ITU-R 601 luma, as torchvision) and mirrored, the same for every frame.
pub fn normalise_frames(raw: &[u8], s: usize, gray: bool, flip: bool) -> Vec<f32> {
    let t = raw.len() / (s * s * 3);
    let mut out = vec![0f32; raw.len()];
    for f in 0..t {
        for y in 0..s {
            for x in 0..s {
                let sx = if flip { s - 1 - x } else { x };
                let i = ((f * s + y) * s + sx) * 3;
                let mut rgb = [raw[i], raw[i + 1], raw[i + 2]].map(|v| v as f32 / 255.0);
                if gray {
                    let l = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
                    rgb = [l; 3];
                }
                for (c, v) in rgb.iter().enumerate() {
                    out[((f * 3 + c) * s + y) * s + x] = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                }
            }
        }
    }
    out
}

/// What to load for one batch.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// Clip indices into the element set, in batch order.
    pub clips: Vec<usize>,
    /// Load the frames too (stage 1 needs only the mel).
    pub frames: bool,
    /// `Some((seed, augment))` to augment (training only).
    pub augment: Option<(u64, Augment)>,
}

/// A loaded batch, on the CPU.
pub struct Batch {
    pub clips: Vec<usize>,
    /// `[B, 128, 768]`.
    pub mel: Tensor,
    /// `[B, 16, 3, S, S]`, ImageNet-normalised, when requested.
    pub frames: Option<Tensor>,
    /// `[B, 16]` seconds from the window start, when every clip of the batch
    /// has them and frames were requested.
    pub frame_times: Option<Tensor>,
}

/// Loads one batch (called on a prefetch thread).
pub fn load_batch(set: &ElementSet, spec: &BatchSpec) -> Result<Batch> {
    let b = spec.clips.len() as i64;
    let mut mel = Vec::with_capacity((b * MEL_BINS * MEL_FRAMES) as usize);
    let mut frames = Vec::new();
    let s = set.frame_size;
    for &c in &spec.clips {
        mel.extend(set.mel(c)?);
        if spec.frames {
            let (gray, flip) = match spec.augment {
                Some((seed, aug)) => {
                    let mut r = Rng::from_keys(&[seed, c as u64]);
                    (r.next_f64() < aug.grayscale_p, r.next_f64() < aug.hflip_p)
                }
                None => (false, false),
            };
            frames.extend(normalise_frames(&set.frames(c)?, s, gray, flip));
        }
    }
    let mel = Tensor::from_slice(&mel).view([b, MEL_BINS, MEL_FRAMES]);
    let frames = spec.frames.then(|| {
        Tensor::from_slice(&frames)
            .view([b, N_FRAMES, 3, s as i64, s as i64])
            .to_kind(Kind::Float)
    });
    let times: Option<Vec<f32>> = spec
        .clips
        .iter()
        .map(|&c| set.clips[c].frame_times.as_deref())
        .collect::<Option<Vec<&[f64]>>>()
        .map(|v| v.concat().into_iter().map(|t| t as f32).collect());
    let frame_times = match times {
        Some(t) if spec.frames && t.len() == (b * N_FRAMES) as usize => {
            Some(Tensor::from_slice(&t).view([b, N_FRAMES]))
        }
        _ => None,
    };
    Ok(Batch {
        clips: spec.clips.clone(),
        mel,
        frames,
        frame_times,
    })
}

/// Batches loaded ahead by background threads, yielded in order.
pub struct Prefetcher {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
}

impl Prefetcher {
    /// Starts `workers` threads; worker `w` loads batches `w, w + workers, ...`
    /// and keeps at most `depth` of them waiting.
    pub fn start(
        set: Arc<ElementSet>,
        specs: Vec<BatchSpec>,
        workers: usize,
        depth: usize,
    ) -> Self {
        let workers = workers.max(1);
        let total = specs.len();
        let specs = Arc::new(specs);
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(depth.max(1));
            let (set, specs) = (set.clone(), specs.clone());
            handles.push(std::thread::spawn(move || {
                for spec in specs.iter().skip(w).step_by(workers) {
                    // The receiver is gone when training stops early: stop too.
                    if tx.send(load_batch(&set, spec)).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        Self {
            receivers,
            handles,
            next: 0,
            total,
        }
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        Some(
            rx.recv()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a prefetch thread died"))),
        )
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Stage 1's batches for one epoch: every fake of `fakes` on `split`, shuffled,
/// each paired with a random real clip of the same identity (fakes whose
/// identity has no real clip are left out), `pairs` pairs per batch as
/// `[fake, real, fake, real, ...]`. A pure function of `(seed, epoch)`.
pub fn stage1_pairs(
    set: &ElementSet,
    split: Split,
    fakes: &[Category],
    pairs: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    let mut reals: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for i in set.split(split) {
        if set.clips[i].category == Category::Rvra {
            reals.entry(&set.clips[i].identity).or_default().push(i);
        }
    }
    let mut fake_idx: Vec<usize> = set
        .split(split)
        .into_iter()
        .filter(|&i| fakes.contains(&set.clips[i].category))
        .filter(|&i| reals.contains_key(set.clips[i].identity.as_str()))
        .collect();
    let mut rng = Rng::from_keys(&[seed, epoch, 1]);
    if shuffle {
        rng.shuffle(&mut fake_idx);
    }
    let flat: Vec<usize> = fake_idx
        .into_iter()
        .flat_map(|f| {
            let r = &reals[set.clips[f].identity.as_str()];
            [f, r[rng.below(r.len())]]
        })
        .collect();
    flat.chunks(2 * pairs.max(1)).map(|c| c.to_vec()).collect()
}

/// Plain batches of `clips`, shuffled by `(seed, epoch)` when asked.
pub fn batches(
    clips: &[usize],
    batch: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    let mut v = clips.to_vec();
    if shuffle {
        Rng::from_keys(&[seed, epoch, 2]).shuffle(&mut v);
    }
    v.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
}
