//! The OpenAVFF baseline, `VideoCAVMAEFT`: a CAV-MAE style audio ViT, a
//! MARLIN-style video ViT, the `a2v` / `v2a` cross-modal mappings and the
//! classification head.
//!
//! Fidelity note: the reference's fusion blocks use `nn.MultiheadAttention`
//! with `batch_first=False` but feed it `[B, L, C]`, so attention runs across
//! the *batch* axis (each token position attends over the clips of the batch).
//! We keep that quirk so the baseline reproduces the reference's numbers; it
//! makes a clip's score depend on the other clips in its batch.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::layers::{layer_norm, linear, MultiheadAttention, VitBlock, VitFlavour};
use super::marlin::MarlinEncoder;

pub use pipeline_core::stages::model_params::BaselineConfig;

/// `audio_encoder`: `Conv2d(1, D, 16, 16)` over `[B, 1, mel, time]` (tokens
/// frequency-band-major), `pos_embed`, `modality`, timm blocks, `norm`.
#[derive(Debug)]
pub struct AudioEncoder {
    patch_embed: nn::Conv2D,
    pos_embed: Tensor,
    modality: Tensor,
    transformer: Vec<VitBlock>,
    norm: nn::LayerNorm,
}

impl AudioEncoder {
    fn new(vs: nn::Path, cfg: &BaselineConfig) -> Self {
        let d = cfg.encoder_embed_dim;
        let p = cfg.patch_size;
        let conv = nn::ConvConfig {
            stride: p,
            ..Default::default()
        };
        Self {
            patch_embed: nn::conv2d(&vs / "patch_embed" / "proj", 1, d, p, conv),
            pos_embed: vs.zeros("pos_embed", &[1, cfg.audio_tokens(), d]),
            modality: vs.randn("modality", &[1, 1, d], 0.0, 0.02),
            transformer: (0..cfg.encoder_depth)
                .map(|i| {
                    VitBlock::new(
                        &vs / "transformer" / i,
                        d,
                        cfg.encoder_num_heads,
                        cfg.mlp_ratio,
                        VitFlavour::Timm,
                    )
                })
                .collect(),
            norm: layer_norm(&vs / "norm", d),
        }
    }

    /// `audio [B, time, mel]` -> `[B, tokens, D]`.
    fn forward(&self, audio: &Tensor) -> Tensor {
        let x = audio.unsqueeze(1).transpose(2, 3);
        let mut x = self.patch_embed.forward(&x).flatten(2, -1).transpose(1, 2)
            + &self.pos_embed
            + &self.modality;
        for block in &self.transformer {
            x = block.forward(&x);
        }
        self.norm.forward(&x)
    }
}

/// `SimpleTransformerBlock`: attention (across the batch axis, see the module
/// doc), `norm1(x + attn)`, `norm2(x + fc2(relu(fc1(x))))`.
#[derive(Debug)]
struct FusionBlock {
    attention: MultiheadAttention,
    fc1: nn::Linear,
    fc2: nn::Linear,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
}

impl FusionBlock {
    fn new(vs: nn::Path, d: i64, heads: i64) -> Self {
        Self {
            attention: MultiheadAttention::new(&vs / "attention", d, heads, 0.0),
            fc1: linear(&vs / "fc1", d, d),
            fc2: linear(&vs / "fc2", d, d),
            norm1: layer_norm(&vs / "norm1", d),
            norm2: layer_norm(&vs / "norm2", d),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        // Sequence-first semantics on a batch-first tensor: swap so that the
        // batch axis is the one attended over.
        let a = self
            .attention
            .forward(&x.transpose(0, 1), false)
            .transpose(0, 1);
        let x = self.norm1.forward(&(x + a));
        let f = self.fc2.forward(&self.fc1.forward(&x).relu());
        self.norm2.forward(&(x + f))
    }
}

/// `a2v` / `v2a`: a token-axis linear map from one modality's token count to
/// the other's, then a fusion block.
#[derive(Debug)]
struct CrossModal {
    mlp: nn::Linear,
    transformer: FusionBlock,
}

impl CrossModal {
    fn new(vs: nn::Path, from_tokens: i64, to_tokens: i64, d: i64, heads: i64) -> Self {
        Self {
            mlp: linear(&vs / "mlp" / "linear", from_tokens, to_tokens),
            transformer: FusionBlock::new(&vs / "transformer", d, heads),
        }
    }

    /// `[B, from, D]` -> `[B, to, D]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.mlp.forward(&x.transpose(1, 2)).transpose(1, 2);
        self.transformer.forward(&y)
    }
}

/// `mlp_head`: fc1, Dropout, ReLU, fc2, Dropout, ReLU, fc3.
#[derive(Debug)]
struct ClassifierHead {
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
    dropout: f64,
}

/// `VideoCAVMAEFT`.
#[derive(Debug)]
pub struct VideoCavMaeFt {
    audio_encoder: AudioEncoder,
    visual_encoder: MarlinEncoder,
    a2v: CrossModal,
    v2a: CrossModal,
    mlp_vision: nn::Linear,
    mlp_audio: nn::Linear,
    mlp_head: ClassifierHead,
}

/// Top-level names of the parameters the recipe treats as the new head (x50 lr).
pub const HEAD_PREFIXES: &[&str] = &["mlp_vision.", "mlp_audio.", "mlp_head."];

impl VideoCavMaeFt {
    pub fn new(vs: nn::Path, cfg: &BaselineConfig) -> Self {
        let d = cfg.encoder_embed_dim;
        let h = cfg.hidden_dim;
        let vt = cfg.video().tokens();
        let at = cfg.audio_tokens();
        Self {
            audio_encoder: AudioEncoder::new(&vs / "audio_encoder", cfg),
            visual_encoder: MarlinEncoder::new(&vs / "visual_encoder", &cfg.video()),
            a2v: CrossModal::new(&vs / "a2v", at, vt, d, cfg.encoder_num_heads),
            v2a: CrossModal::new(&vs / "v2a", vt, at, d, cfg.encoder_num_heads),
            mlp_vision: linear(&vs / "mlp_vision", vt, h),
            mlp_audio: linear(&vs / "mlp_audio", at, h),
            mlp_head: ClassifierHead {
                fc1: linear(&vs / "mlp_head" / "fc1", 2 * h, h),
                fc2: linear(&vs / "mlp_head" / "fc2", h, h),
                fc3: linear(&vs / "mlp_head" / "fc3", h, cfg.n_classes),
                dropout: cfg.head_dropout,
            },
        }
    }

    /// `audio [B, time, mel]`, `video [B, 3, T, H, W]` -> class logits `[B, n_classes]`.
    pub fn forward(&self, audio: &Tensor, video: &Tensor, train: bool) -> Tensor {
        let a = self.audio_encoder.forward(audio);
        let v = self.visual_encoder.forward_normed(video);
        let video_fusion = Tensor::cat(&[self.a2v.forward(&a), v.shallow_clone()], 2).mean_dim(
            2,
            false,
            None::<Kind>,
        );
        let audio_fusion =
            Tensor::cat(&[self.v2a.forward(&v), a], 2).mean_dim(2, false, None::<Kind>);
        let x = Tensor::cat(
            &[
                self.mlp_vision.forward(&video_fusion),
                self.mlp_audio.forward(&audio_fusion),
            ],
            1,
        );
        let head = &self.mlp_head;
        head.fc1
            .forward(&x)
            .dropout(head.dropout, train)
            .relu()
            .apply(&head.fc2)
            .dropout(head.dropout, train)
            .relu()
            .apply(&head.fc3)
    }
}
