//! The parameter types of the model kinds (stage1, stage2, baseline and the
//! sweep's stage-2 runs): plain serde types, so that `pipeline` checks a
//! model stage's parameters when it plans the step, without linking the
//! networks, and `pipeline-worker` trains from the very same types.

use serde::{Deserialize, Serialize};

use super::category::Category;

/// A per-epoch learning-rate factor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Linear warm-up `(ep+1)/warmup` for `warmup` epochs, then cosine from 1
    /// down to `final_factor` at the last epoch (stages 1 and 2).
    WarmupCosine { warmup: usize, final_factor: f64 },
    /// Constant until `from_epoch`, then multiplied by `gamma` every epoch
    /// (the baseline: x0.5 every epoch from epoch 2).
    StepDecay { from_epoch: usize, gamma: f64 },
}

impl Schedule {
    /// The factor for 0-based `epoch` of `epochs`.
    pub fn factor(&self, epoch: usize, epochs: usize) -> f64 {
        match *self {
            Self::WarmupCosine {
                warmup,
                final_factor,
            } => {
                if epoch < warmup {
                    (epoch + 1) as f64 / warmup as f64
                } else {
                    let span = epochs.saturating_sub(warmup + 1).max(1) as f64;
                    let progress = ((epoch - warmup) as f64 / span).min(1.0);
                    final_factor
                        + (1.0 - final_factor)
                            * 0.5
                            * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            Self::StepDecay { from_epoch, gamma } => {
                gamma.powi((epoch + 1).saturating_sub(from_epoch) as i32)
            }
        }
    }
}

/// The recipe shared by all stages (each stage's config embeds it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Global gradient-norm limit; none when absent.
    pub clip_norm: Option<f64>,
    /// Stop after this many epochs without a better validation metric.
    pub patience: Option<usize>,
    pub seed: u64,
    /// Clips per batch (stage 1: pairs per batch).
    pub batch_size: usize,
    /// Prefetch threads and batches kept ready per thread.
    pub workers: usize,
    pub prefetch: usize,
    /// Mixed precision (bf16 autocast) when training on CUDA.
    pub amp: bool,
    /// Bootstrap replicates of each reported AUC's 95 % interval (drawn
    /// from `seed`); 0 reports no intervals.
    pub bootstrap_replicates: usize,
    /// The validation metric that selects the kept epoch and drives early
    /// stopping, when not the stage's own (stage 1 and 2: AP, as the
    /// reference; the baseline: AUC). AP's floor is the share of fakes, so on
    /// a validation set of five fakes per real it moves little and noisily.
    pub select_on: Option<SelectionMetric>,
    /// Also score the training clips with the kept weights and write them to
    /// `metrics.json` as `train_in_sample`: in-sample, so optimistic by
    /// design, for telling overfitting (a branch far better on the clips it
    /// trained on than on held-out ones) from a weak model. Off by default:
    /// it costs one more pass over the training set.
    pub report_train: bool,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            epochs: 80,
            lr: 3e-5,
            weight_decay: 0.01,
            schedule: Schedule::WarmupCosine {
                warmup: 5,
                final_factor: 1.0 / 50.0,
            },
            clip_norm: Some(1.0),
            patience: None,
            seed: 0,
            batch_size: 32,
            workers: 2,
            prefetch: 2,
            amp: true,
            bootstrap_replicates: 1000,
            select_on: None,
            report_train: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectionMetric {
    Ap,
    Auc,
}

/// What the audio encoder reads from an element. The reference's training
/// code can ask for `mel_err` inputs that its preprocessing never writes
/// (MODELS.md defect 6); ours reads the log-mel element, and the kind is a
/// named parameter so that another input can be added later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioInput {
    #[default]
    LogMel,
}

/// Train-time augmentation probabilities (torchvision's defaults).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    pub grayscale_p: f64,
    pub hflip_p: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            grayscale_p: 0.1,
            hflip_p: 0.5,
        }
    }
}

/// Geometry of the video encoder; the defaults are `marlin_vit_base_ytf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MarlinConfig {
    pub img_size: i64,
    pub patch_size: i64,
    pub n_frames: i64,
    pub tubelet_size: i64,
    pub embed_dim: i64,
    pub depth: usize,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
}

impl Default for MarlinConfig {
    fn default() -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            n_frames: 16,
            tubelet_size: 2,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4.0,
            qkv_bias: true,
        }
    }
}

impl MarlinConfig {
    /// Number of tokens: `(T/t) * (H/p) * (W/p)`.
    pub fn tokens(&self) -> i64 {
        let side = self.img_size / self.patch_size;
        side * side * (self.n_frames / self.tubelet_size)
    }
}

/// Shapes of the audio encoder and the stage-1 heads; the defaults are the
/// reference's full size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stage1Config {
    pub d_model: i64,
    pub proj_dim: i64,
    pub patch_len: i64,
    pub n_mels: i64,
    pub t_pad: i64,
    pub layers: usize,
    pub nhead: i64,
    pub dim_feedforward: i64,
    pub dropout: f64,
}

impl Default for Stage1Config {
    fn default() -> Self {
        Self {
            d_model: 512,
            proj_dim: 256,
            patch_len: 64,
            n_mels: 128,
            t_pad: 768,
            layers: 4,
            nhead: 4,
            dim_feedforward: 1024,
            dropout: 0.1,
        }
    }
}

impl Stage1Config {
    pub fn n_patches(&self) -> i64 {
        self.t_pad / self.patch_len
    }
}

/// Shapes of the detector; the defaults are the reference's full size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stage2Config {
    /// The stage-1 encoder it reuses (its `d_model` is the detector's width).
    pub audio: Stage1Config,
    pub visual_backbone: MarlinConfig,
    pub a2v_nhead: i64,
    pub a2v_layers: usize,
    pub predictor_dim_feedforward: i64,
    pub dropout: f64,
    /// How the A2V discrepancy is computed (see the module doc).
    pub a2v_mode: A2vMode,
    /// `time_aligned` only: how far the picture leads the sound (seconds);
    /// a frame at time `t` is paired with the audio at `t + lead`.
    pub audio_lead_seconds: f64,
}

/// The A2V discrepancy's form (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum A2vMode {
    #[default]
    Reference,
    TimeAligned,
}

impl Default for Stage2Config {
    fn default() -> Self {
        Self {
            audio: Stage1Config::default(),
            visual_backbone: MarlinConfig::default(),
            a2v_nhead: 4,
            a2v_layers: 2,
            predictor_dim_feedforward: 1024,
            dropout: 0.1,
            a2v_mode: A2vMode::Reference,
            audio_lead_seconds: 0.04,
        }
    }
}

/// Geometry of the baseline; the defaults are the reference's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    pub img_size: i64,
    pub patch_size: i64,
    pub n_frames: i64,
    pub audio_length: i64,
    pub mel_bins: i64,
    pub encoder_embed_dim: i64,
    pub encoder_depth: usize,
    pub encoder_num_heads: i64,
    pub tubelet_size: i64,
    pub mlp_ratio: f64,
    pub hidden_dim: i64,
    pub n_classes: i64,
    /// Dropout of the classification head (the reference's MLP uses 0.5).
    pub head_dropout: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            n_frames: 16,
            audio_length: 1024,
            mel_bins: 128,
            encoder_embed_dim: 768,
            encoder_depth: 12,
            encoder_num_heads: 12,
            tubelet_size: 2,
            mlp_ratio: 4.0,
            hidden_dim: 1024,
            n_classes: 2,
            head_dropout: 0.5,
        }
    }
}

impl BaselineConfig {
    pub fn video(&self) -> MarlinConfig {
        MarlinConfig {
            img_size: self.img_size,
            patch_size: self.patch_size,
            n_frames: self.n_frames,
            tubelet_size: self.tubelet_size,
            embed_dim: self.encoder_embed_dim,
            depth: self.encoder_depth,
            num_heads: self.encoder_num_heads,
            mlp_ratio: self.mlp_ratio,
            qkv_bias: false,
        }
    }

    pub fn audio_tokens(&self) -> i64 {
        (self.audio_length / self.patch_size) * (self.mel_bins / self.patch_size)
    }
}

/// Stage 1 parameters (`config/<profile>/stage1.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage1Params {
    pub input: AudioInput,
    pub model: Stage1Config,
    pub recipe: Recipe,
    /// Fake categories paired with reals for training.
    pub train_fakes: Vec<Category>,
    /// Fake categories validated against the real clips.
    pub val_fakes: Vec<Category>,
    pub supcon_temperature: f64,
    pub ordinal_margin: f64,
}

impl Default for Stage1Params {
    fn default() -> Self {
        Self {
            input: AudioInput::LogMel,
            model: Stage1Config::default(),
            recipe: Recipe::default(),
            train_fakes: vec![Category::Rvfa],
            val_fakes: vec![Category::Rvfa, Category::RvfaVc],
            supcon_temperature: 0.07,
            ordinal_margin: 0.2,
        }
    }
}

/// Stage 2 parameters (`config/<profile>/stage2.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage2Params {
    pub model: Stage2Config,
    pub recipe: Recipe,
    /// MARLIN's learning rate relative to `lr`; 0 freezes the backbone.
    pub backbone_lr_scale: f64,
    pub lambda_align: f64,
    pub margin_align: f64,
    pub augment: Augment,
    /// Run the frozen stage-1 encoder and audio head with their dropout on
    /// while training, as the reference does (its `model.train()` reaches
    /// them; `requires_grad=False` does not switch dropout off). Off by
    /// default: a frozen branch whose scores jitter between steps feeds the
    /// fusion noise it cannot learn from, and at evaluation it runs without
    /// dropout anyway (README: "The frozen audio branch's dropout").
    pub frozen_audio_dropout: bool,
    /// After the joint training, fit the fusion (`conf_net`) again, alone,
    /// on the elements' `fusion` split: identities that neither stage 1 nor
    /// the branches trained on, so the gate learns how far each branch is to
    /// be trusted from scores like a new clip's rather than from in-sample
    /// ones. A deviation from the reference (which fits the gate jointly on
    /// the training clips), off unless given. README: "The fusion".
    pub fusion_refit: Option<FusionRefit>,
}

/// The fusion's refit on held-out identities ([`Stage2Params::fusion_refit`]):
/// AdamW on `conf_net` only, cosine from `lr` down to `lr / 50`, the epoch
/// kept by the stage's validation metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FusionRefit {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Stop after this many epochs without a better validation metric.
    pub patience: Option<usize>,
}

impl Default for FusionRefit {
    fn default() -> Self {
        Self {
            epochs: 20,
            lr: 1e-3,
            weight_decay: 0.01,
            patience: Some(8),
        }
    }
}

impl Default for Stage2Params {
    fn default() -> Self {
        Self {
            model: Stage2Config::default(),
            recipe: Recipe {
                lr: 1e-5,
                patience: Some(10),
                ..Recipe::default()
            },
            backbone_lr_scale: 0.1,
            lambda_align: 0.5,
            margin_align: 0.5,
            augment: Augment::default(),
            frozen_audio_dropout: false,
            fusion_refit: None,
        }
    }
}

/// Baseline parameters (`config/<profile>/baseline.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineParams {
    pub model: BaselineConfig,
    pub recipe: Recipe,
    /// Learning-rate multiplier of the new head (`mlp_vision`, `mlp_audio`, `mlp_head`).
    pub head_lr_scale: f64,
    /// Audio noise and time-roll augmentation while training (MODELS.md defect 5:
    /// a real boolean here).
    pub noise: bool,
    pub augment: Augment,
}

impl Default for BaselineParams {
    fn default() -> Self {
        Self {
            model: BaselineConfig::default(),
            recipe: Recipe {
                epochs: 50,
                lr: 1e-5,
                batch_size: 16,
                schedule: Schedule::StepDecay {
                    from_epoch: 2,
                    gamma: 0.5,
                },
                clip_norm: None,
                ..Recipe::default()
            },
            head_lr_scale: 50.0,
            noise: false,
            augment: Augment::default(),
        }
    }
}
