//! The three training tasks plugged into [`super::train::fit`]: what a batch
//! is, what the loss is, how validation scores the model, and which
//! parameters train at which learning-rate scale.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::baseline::{VideoCavMaeFt, HEAD_PREFIXES};
use super::category::Category;
use super::data::{self, Augment, Batch, BatchSpec, ElementSet, Split};
use super::layers::interpolate_linear;
use super::losses;
use super::metrics::ScoredClip;
use super::optim::ParamGroup;
use super::stage1::AudioPretrainNet;
use super::stage2::{A2vMode, AvDetector};
use super::train::{params_with_prefix, Recipe, Selection, SelectionMetric, Task};

pub use pipeline_core::stages::model_params::{
    BaselineParams, FusionRefit, Schedule, Stage1Params, Stage2Params,
};

fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )?)
}

fn categories(set: &ElementSet, batch: &Batch) -> Vec<Category> {
    batch.clips.iter().map(|&c| set.clips[c].category).collect()
}

fn float_labels(cats: &[Category], device: Device) -> Tensor {
    let v: Vec<f32> = cats
        .iter()
        .map(|c| if c.y_video() { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_slice(&v).to_device(device)
}

/// Stage 1: SupCon + BCE + ordinal ring on pairs of (fake, real of the same identity).
pub struct Stage1Task<'a> {
    pub net: &'a AudioPretrainNet,
    pub set: &'a ElementSet,
    pub params: &'a Stage1Params,
}

impl Stage1Task<'_> {
    /// Everything trains at the base learning rate.
    pub fn groups(vs: &VarStore) -> Vec<ParamGroup> {
        vec![ParamGroup {
            lr_scale: 1.0,
            params: params_with_prefix(vs, &[""], false),
        }]
    }
}

impl Task for Stage1Task<'_> {
    fn name(&self) -> &'static str {
        "stage1"
    }

    fn train_batches(&self, epoch: usize) -> Vec<BatchSpec> {
        let r = &self.params.recipe;
        data::stage1_pairs(
            self.set,
            Split::Train,
            &self.params.train_fakes,
            r.batch_size,
            r.seed,
            epoch as u64,
            true,
        )
        .into_iter()
        .map(|clips| BatchSpec {
            clips,
            frames: false,
            augment: None,
        })
        .collect()
    }

    fn eval_batches(&self, split: Split) -> Vec<BatchSpec> {
        let keep = |c: Category| c == Category::Rvra || self.params.val_fakes.contains(&c);
        let clips: Vec<usize> = self
            .set
            .split(split)
            .into_iter()
            .filter(|&i| keep(self.set.clips[i].category))
            .collect();
        eval_specs(&clips, 2 * self.params.recipe.batch_size, false)
    }

    fn loss(&self, batch: &Batch, device: Device) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        let cats = categories(self.set, batch);
        let ordinal: Vec<i64> = cats.iter().map(|c| c.ordinal().unwrap_or(0)).collect();
        let o = self.net.forward(&batch.mel.to_device(device), true);
        let z = o.z.to_kind(Kind::Float);
        let labels = Tensor::from_slice(&ordinal).to_device(device);
        let supcon = losses::supcon(&z, &labels, self.params.supcon_temperature);
        let bce =
            losses::bce_with_logits(&o.logit.to_kind(Kind::Float), &float_labels(&cats, device));
        let ring = losses::ordinal_ring(
            &z,
            &self.net.proto_real,
            &ordinal,
            self.params.ordinal_margin,
        );
        let parts = vec![
            ("supcon", supcon.double_value(&[])),
            ("bce", bce.double_value(&[])),
            ("ordinal_ring", ring.double_value(&[])),
        ];
        Ok((supcon + bce + ring, parts))
    }

    fn score(
        &self,
        batches: &mut dyn Iterator<Item = Result<Batch>>,
        device: Device,
    ) -> Result<Vec<ScoredClip>> {
        let mut clips = Vec::new();
        for batch in batches {
            let batch = batch?;
            let o = self.net.forward(&batch.mel.to_device(device), false);
            let p = to_f64s(&o.logit.sigmoid())?;
            for (cat, p) in categories(self.set, &batch).into_iter().zip(p) {
                clips.push(scored(cat, [("audio", p)], None));
            }
        }
        Ok(clips)
    }

    fn selection(&self) -> Selection {
        Selection {
            score: "audio",
            metric: SelectionMetric::Ap,
        }
    }
}

fn scored<const N: usize>(
    cat: Category,
    scores: [(&'static str, f64); N],
    w: Option<(f64, f64)>,
) -> ScoredClip {
    ScoredClip {
        category: cat,
        label: cat.y_video(),
        scores: scores.into_iter().collect::<BTreeMap<_, _>>(),
        weights: w,
    }
}

/// Shuffled training batches with frames and this epoch's augmentation draw;
/// `salt` keeps each stage's augmentation stream its own.
fn augmented_train_batches(
    clips: &[usize],
    r: &Recipe,
    augment: Augment,
    salt: u64,
    epoch: usize,
) -> Vec<BatchSpec> {
    let aug_seed = r.seed.wrapping_mul(salt).wrapping_add(epoch as u64);
    data::batches(clips, r.batch_size, r.seed, epoch as u64, true)
        .into_iter()
        .map(|clips| BatchSpec {
            clips,
            frames: true,
            augment: Some((aug_seed, augment)),
        })
        .collect()
}

fn eval_specs(clips: &[usize], batch: usize, frames: bool) -> Vec<BatchSpec> {
    data::batches(clips, batch, 0, 0, false)
        .into_iter()
        .map(|clips| BatchSpec {
            clips,
            frames,
            augment: None,
        })
        .collect()
}

/// Names of stage 2's frozen sub-networks (from stage 1).
pub const STAGE2_FROZEN: &[&str] = &["audio_enc.", "audio_head."];
/// Prefix of the video backbone.
pub const STAGE2_BACKBONE: &str = "vis_enc.backbone.";
/// Prefix of the fusion's gate.
pub const STAGE2_FUSION: &str = "conf_net.";

/// Stage 2: BCE on the fused logit + lambda * AlignRepel.
pub struct Stage2Task<'a> {
    pub net: &'a AvDetector,
    pub set: &'a ElementSet,
    pub params: &'a Stage2Params,
    pub phase: Stage2Phase,
}

/// What a stage-2 training trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage2Phase {
    /// Everything but the frozen stage-1 parts, on the training split, with
    /// the reference's loss (the fused BCE and AlignRepel).
    Joint,
    /// `conf_net` alone on the `fusion` split, the branches in eval mode and
    /// without gradients; the loss is the fused BCE.
    FusionRefit,
}

impl Stage2Task<'_> {
    /// Freezes the stage-1 parts (and the backbone when its scale is 0) and
    /// returns the backbone and the rest as two groups.
    pub fn groups(vs: &VarStore, backbone_lr_scale: f64) -> Vec<ParamGroup> {
        let mut frozen: Vec<&str> = STAGE2_FROZEN.to_vec();
        if backbone_lr_scale == 0.0 {
            frozen.push(STAGE2_BACKBONE);
        }
        for (_, t) in params_with_prefix(vs, &frozen, false) {
            let _ = t.set_requires_grad(false);
        }
        vec![
            ParamGroup {
                lr_scale: backbone_lr_scale,
                params: params_with_prefix(vs, &[STAGE2_BACKBONE], false),
            },
            ParamGroup {
                lr_scale: 1.0,
                params: params_with_prefix(vs, &[STAGE2_BACKBONE], true),
            },
        ]
    }

    /// For the fusion refit: freezes everything but `conf_net` and returns
    /// it as the one group.
    pub fn fusion_groups(vs: &VarStore) -> Vec<ParamGroup> {
        for (_, t) in params_with_prefix(vs, &[STAGE2_FUSION], true) {
            let _ = t.set_requires_grad(false);
        }
        vec![ParamGroup {
            lr_scale: 1.0,
            params: params_with_prefix(vs, &[STAGE2_FUSION], false),
        }]
    }
}

impl Task for Stage2Task<'_> {
    fn name(&self) -> &'static str {
        "stage2"
    }

    fn train_batches(&self, epoch: usize) -> Vec<BatchSpec> {
        let (split, salt) = match self.phase {
            Stage2Phase::Joint => (Split::Train, 31),
            Stage2Phase::FusionRefit => (Split::Fusion, 37),
        };
        augmented_train_batches(
            &self.set.split(split),
            &self.params.recipe,
            self.params.augment,
            salt,
            epoch,
        )
    }

    fn eval_batches(&self, split: Split) -> Vec<BatchSpec> {
        eval_specs(&self.set.split(split), self.params.recipe.batch_size, true)
    }

    fn loss(&self, batch: &Batch, device: Device) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        let cats = categories(self.set, batch);
        let y = float_labels(&cats, device);
        if self.phase == Stage2Phase::FusionRefit {
            let b = tch::no_grad(|| self.branches(batch, device, false))?;
            let f = self.net.fuse(&b, true);
            let bce = losses::bce_with_logits(&f.logit_final.to_kind(Kind::Float), &y);
            let parts = vec![("bce", bce.double_value(&[]))];
            return Ok((bce, parts));
        }
        let o = self.forward(batch, device, true)?;
        let bce = losses::bce_with_logits(&o.logit_final.to_kind(Kind::Float), &y);
        let align = losses::align_repel(
            &o.mismatch_mse.to_kind(Kind::Float),
            &y,
            self.params.margin_align,
        );
        let parts = vec![
            ("bce", bce.double_value(&[])),
            ("align_repel", align.double_value(&[])),
        ];
        Ok((bce + align * self.params.lambda_align, parts))
    }

    fn score(
        &self,
        batches: &mut dyn Iterator<Item = Result<Batch>>,
        device: Device,
    ) -> Result<Vec<ScoredClip>> {
        let mut clips = Vec::new();
        for batch in batches {
            let batch = batch?;
            let o = self.forward(&batch, device, false)?;
            let fin = to_f64s(&o.logit_final.sigmoid())?;
            let aud = to_f64s(&o.logit_audio.sigmoid())?;
            let a2v = to_f64s(&o.logit_a2v.sigmoid())?;
            let wa = to_f64s(&o.w_audio)?;
            let wv = to_f64s(&o.w_a2v)?;
            for (i, cat) in categories(self.set, &batch).into_iter().enumerate() {
                clips.push(scored(
                    cat,
                    [("final", fin[i]), ("audio", aud[i]), ("a2v", a2v[i])],
                    Some((wa[i], wv[i])),
                ));
            }
        }
        Ok(clips)
    }

    fn selection(&self) -> Selection {
        Selection {
            score: "final",
            metric: SelectionMetric::Ap,
        }
    }
}

impl Stage2Task<'_> {
    /// The branches only, in eval mode (the fusion refit's frozen input).
    fn branches(
        &self,
        batch: &Batch,
        device: Device,
        train: bool,
    ) -> Result<super::stage2::Branches> {
        let (mel, frames, times) = self.inputs(batch, device)?;
        Ok(self
            .net
            .branches(&mel, &frames, times.as_ref(), train, false))
    }

    fn inputs(&self, batch: &Batch, device: Device) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let frames = batch.frames.as_ref().expect("stage 2 batches carry frames");
        let times = batch.frame_times.as_ref().map(|t| t.to_device(device));
        if self.params.model.a2v_mode == A2vMode::TimeAligned && times.is_none() {
            anyhow::bail!(
                "stage2: a2v_mode time_aligned needs each clip's frame times, which this \
                 element set's manifest does not hold; extract the elements again (elements \
                 version 4 writes them) or set a2v_mode to reference"
            );
        }
        Ok((batch.mel.to_device(device), frames.to_device(device), times))
    }

    fn forward(
        &self,
        batch: &Batch,
        device: Device,
        train: bool,
    ) -> Result<super::stage2::Stage2Output> {
        let (mel, frames, times) = self.inputs(batch, device)?;
        Ok(self.net.forward(
            &mel,
            &frames,
            times.as_ref(),
            train,
            train && self.params.frozen_audio_dropout,
        ))
    }
}

/// The baseline's audio normalisation, from the training set.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AudioNorm {
    pub mean: f64,
    pub std: f64,
}

impl AudioNorm {
    /// Mean and standard deviation of every training mel value.
    pub fn from_training_set(set: &ElementSet) -> Result<Self> {
        let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0.0f64);
        for i in set.split(Split::Train) {
            for v in set.mel(i)? {
                let v = v as f64;
                s += v;
                s2 += v * v;
                n += 1.0;
            }
        }
        let mean = if n > 0.0 { s / n } else { 0.0 };
        let var = if n > 1.0 {
            (s2 - n * mean * mean) / (n - 1.0)
        } else {
            1.0
        };
        Ok(Self {
            mean,
            std: var.max(1e-12).sqrt(),
        })
    }

    /// Element mel `[B, 128, 768]` -> baseline audio `[B, length, 128]`:
    /// interpolated along time, then normalised.
    pub fn audio(&self, mel: &Tensor, length: i64) -> Tensor {
        (interpolate_linear(mel, length).transpose(1, 2) - self.mean) / self.std
    }
}

/// The baseline: cross-entropy on two classes.
pub struct BaselineTask<'a> {
    pub net: &'a VideoCavMaeFt,
    pub set: &'a ElementSet,
    pub params: &'a BaselineParams,
    pub norm: AudioNorm,
}

impl BaselineTask<'_> {
    /// The head at `head_lr_scale`, the rest at the base rate.
    pub fn groups(vs: &VarStore, head_lr_scale: f64) -> Vec<ParamGroup> {
        vec![
            ParamGroup {
                lr_scale: 1.0,
                params: params_with_prefix(vs, HEAD_PREFIXES, true),
            },
            ParamGroup {
                lr_scale: head_lr_scale,
                params: params_with_prefix(vs, HEAD_PREFIXES, false),
            },
        ]
    }

    fn inputs(&self, batch: &Batch, device: Device, train: bool) -> (Tensor, Tensor) {
        let len = self.params.model.audio_length;
        let mut audio = self.norm.audio(&batch.mel.to_device(device), len);
        if train && self.params.noise {
            // CAV-MAE's augmentation: uniform noise scaled by a random level,
            // then a random roll along time; drawn from libtorch's generator,
            // which the loop reseeds per epoch.
            let level = Tensor::rand([1], (Kind::Float, device)) / 10.0;
            audio = &audio + audio.rand_like() * level;
            let shift =
                Tensor::randint_low(-len, len, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
            audio = audio.roll([shift], [1]);
        }
        let frames = batch
            .frames
            .as_ref()
            .expect("baseline batches carry frames");
        (audio, frames.to_device(device).permute([0, 2, 1, 3, 4]))
    }
}

impl Task for BaselineTask<'_> {
    fn name(&self) -> &'static str {
        "baseline"
    }

    fn train_batches(&self, epoch: usize) -> Vec<BatchSpec> {
        augmented_train_batches(
            &self.set.split(Split::Train),
            &self.params.recipe,
            self.params.augment,
            37,
            epoch,
        )
    }

    fn eval_batches(&self, split: Split) -> Vec<BatchSpec> {
        eval_specs(&self.set.split(split), self.params.recipe.batch_size, true)
    }

    fn loss(&self, batch: &Batch, device: Device) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        let cats = categories(self.set, batch);
        let (audio, video) = self.inputs(batch, device, true);
        let logits = self.net.forward(&audio, &video, true).to_kind(Kind::Float);
        let y: Vec<i64> = cats.iter().map(|c| c.y_video() as i64).collect();
        let ce = losses::cross_entropy(&logits, &Tensor::from_slice(&y).to_device(device));
        let parts = vec![("cross_entropy", ce.double_value(&[]))];
        Ok((ce, parts))
    }

    fn score(
        &self,
        batches: &mut dyn Iterator<Item = Result<Batch>>,
        device: Device,
    ) -> Result<Vec<ScoredClip>> {
        let mut clips = Vec::new();
        for batch in batches {
            let batch = batch?;
            let (audio, video) = self.inputs(&batch, device, false);
            let logits = self.net.forward(&audio, &video, false).to_kind(Kind::Float);
            let p = to_f64s(&logits.softmax(-1, Kind::Float).select(1, 1))?;
            for (cat, p) in categories(self.set, &batch).into_iter().zip(p) {
                clips.push(scored(cat, [("final", p)], None));
            }
        }
        Ok(clips)
    }

    fn selection(&self) -> Selection {
        Selection {
            score: "final",
            metric: SelectionMetric::Auc,
        }
    }
}
