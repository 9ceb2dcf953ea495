//! Element loading: the manifest and safetensors shards written by the
//! elements stage (`mel f32 [N,128,768]`, `frames u8 [N,16,S,S,3]`), batches
//! read by background prefetch threads, ImageNet normalisation at load time,
//! and train-only augmentation (random grayscale and horizontal flip, one draw
//! per clip applied to all its frames; MODELS.md defect 2: evaluation sees
//! clean frames). Clips are read one at a time with positioned reads, never a
//! whole shard.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::category::Category;
use super::rng::Rng;

pub use pipeline::stages::model_params::{AudioInput, Augment};

/// Which part of the identity-disjoint split a clip is in: training,
/// validation (model selection, early stopping), test (the reported metrics)
/// or fusion (training identities held out for stage 2's fusion refit, which
/// no other training reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    Fusion,
}

/// One line of `manifest.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipMeta {
    pub key: String,
    pub identity: String,
    pub category: Category,
    pub split: Split,
    pub shard: String,
    pub index: u64,
    /// The sampled frames' times, seconds from the window start (written by
    /// elements version 4 and later).
    #[serde(default)]
    pub frame_times: Option<Vec<f32>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Where one tensor of a shard lives.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u64,
    per_clip: u64,
}

#[derive(Debug)]
struct Shard {
    file: File,
    path: PathBuf,
    n: u64,
    mel: Slot,
    frames: Slot,
}

/// The mel size of an element: `[128, 768]`.
pub const MEL_BINS: i64 = 128;
pub const MEL_FRAMES: i64 = 768;
/// Frames per element.
pub const N_FRAMES: i64 = 16;
/// Seconds between mel frames (hop 64 at 16 kHz).
pub const MEL_HOP_SECONDS: f64 = 64.0 / 16_000.0;

/// An opened element folder.
#[derive(Debug)]
pub struct ElementSet {
    pub clips: Vec<ClipMeta>,
    shards: HashMap<String, Shard>,
    /// Side of the square frames, `S`.
    pub frame_size: i64,
}

/// Reads the header of a safetensors file: tensor name -> (dtype, shape, [begin, end)).
fn read_header(
    file: &mut File,
    path: &Path,
) -> Result<(u64, serde_json::Map<String, serde_json::Value>)> {
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    ensure!(
        n < 100 << 20,
        "{}: header of {n} bytes is implausible",
        path.display()
    );
    let mut buf = vec![0u8; n as usize];
    file.read_exact(&mut buf)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&buf)
        .with_context(|| format!("{}: header is not JSON", path.display()))?;
    Ok((8 + n, map))
}

fn slot(
    header: &serde_json::Map<String, serde_json::Value>,
    data_start: u64,
    name: &str,
    dtype: &str,
    tail: &[Option<i64>],
    path: &Path,
) -> Result<(Slot, u64, Vec<i64>)> {
    #[derive(Deserialize)]
    struct Info {
        dtype: String,
        shape: Vec<i64>,
        data_offsets: [u64; 2],
    }
    let v = header
        .get(name)
        .with_context(|| format!("{}: no tensor '{name}'", path.display()))?;
    let info: Info = serde_json::from_value(v.clone())
        .with_context(|| format!("{}: bad entry for '{name}'", path.display()))?;
    ensure!(
        info.dtype == dtype,
        "{}: '{name}' is {}, expected {dtype}",
        path.display(),
        info.dtype
    );
    let ok = info.shape.len() == tail.len() + 1
        && tail
            .iter()
            .zip(&info.shape[1..])
            .all(|(want, got)| want.is_none_or(|w| w == *got));
    ensure!(
        ok,
        "{}: '{name}' has shape {:?}",
        path.display(),
        info.shape
    );
    let n = info.shape[0] as u64;
    let bytes = info.data_offsets[1] - info.data_offsets[0];
    let per_clip = bytes.checked_div(n).unwrap_or(0);
    Ok((
        Slot {
            start: data_start + info.data_offsets[0],
            per_clip,
        },
        n,
        info.shape,
    ))
}

impl ElementSet {
    /// Opens `dir/manifest.jsonl` and every shard it names.
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join("manifest.jsonl");
        let f = File::open(&mpath).with_context(|| format!("opening {}", mpath.display()))?;
        let mut clips = Vec::new();
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", mpath.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let c: ClipMeta = serde_json::from_str(&line).with_context(|| {
                format!("{} line {}: invalid clip record", mpath.display(), i + 1)
            })?;
            clips.push(c);
        }
        let mut shards = HashMap::new();
        let mut frame_size = None;
        for c in &clips {
            if shards.contains_key(&c.shard) {
                continue;
            }
            let path = dir.join(&c.shard);
            let mut file =
                File::open(&path).with_context(|| format!("opening shard {}", path.display()))?;
            let (data_start, header) = read_header(&mut file, &path)?;
            let (mel, n, _) = slot(
                &header,
                data_start,
                "mel",
                "F32",
                &[Some(MEL_BINS), Some(MEL_FRAMES)],
                &path,
            )?;
            let (frames, nf, shape) = slot(
                &header,
                data_start,
                "frames",
                "U8",
                &[Some(N_FRAMES), None, None, Some(3)],
                &path,
            )?;
            ensure!(
                n == nf,
                "{}: {n} mels but {nf} frame stacks",
                path.display()
            );
            let s = shape[2];
            ensure!(shape[3] == s, "{}: frames are not square", path.display());
            if *frame_size.get_or_insert(s) != s {
                bail!(
                    "{}: frame size {s} differs from the other shards",
                    path.display()
                );
            }
            shards.insert(
                c.shard.clone(),
                Shard {
                    file,
                    path,
                    n,
                    mel,
                    frames,
                },
            );
        }
        for c in &clips {
            let s = &shards[&c.shard];
            ensure!(
                c.index < s.n,
                "{}: clip {} has index {} but the shard holds {}",
                mpath.display(),
                c.key,
                c.index,
                s.n
            );
        }
        Ok(Self {
            clips,
            shards,
            frame_size: frame_size.unwrap_or(0),
        })
    }

    fn read(&self, clip: usize, which: fn(&Shard) -> Slot) -> Result<Vec<u8>> {
        let c = &self.clips[clip];
        let s = &self.shards[&c.shard];
        let slot = which(s);
        let mut buf = vec![0u8; slot.per_clip as usize];
        s.file
            .read_exact_at(&mut buf, slot.start + c.index * slot.per_clip)
            .with_context(|| format!("reading clip {} from {}", c.key, s.path.display()))?;
        Ok(buf)
    }

    /// The clip's log-mel, `128 * 768` values.
    pub fn mel(&self, clip: usize) -> Result<Vec<f32>> {
        let raw = self.read(clip, |s| s.mel)?;
        Ok(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The clip's frames, `16 * S * S * 3` bytes (RGB).
    pub fn frames(&self, clip: usize) -> Result<Vec<u8>> {
        self.read(clip, |s| s.frames)
    }

    /// Indices of the clips on one side of the split.
    pub fn split(&self, split: Split) -> Vec<usize> {
        (0..self.clips.len())
            .filter(|&i| self.clips[i].split == split)
            .collect()
    }
}

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
    let s = set.frame_size as usize;
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
        .map(|&c| set.clips[c].frame_times.clone())
        .collect::<Option<Vec<Vec<f32>>>>()
        .map(|v| v.concat());
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
