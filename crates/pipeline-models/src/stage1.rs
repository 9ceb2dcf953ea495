//! Stage 1: `AudioPretrainNet`, the audio representation learner. Its
//! `audio_enc` (`MelErrPatchTransformer`) is reused frozen by stage 2, and its
//! `aux_head` becomes stage 2's `audio_head` (MODELS.md, defect 1).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::layers::{linear, linear_normal, TransformerEncoder};

pub use pipeline_core::stages::model_params::Stage1Config;

/// `MelErrPatchTransformer`: time cut into patches of `patch_len` frames, each
/// flattened mel-major, projected, plus a learned position embedding, then a
/// post-norm Transformer encoder.
#[derive(Debug)]
pub struct MelPatchEncoder {
    patch_proj: nn::Linear,
    pos_emb: Tensor,
    encoder: TransformerEncoder,
    n_mels: i64,
    patch_len: i64,
}

/// The audio encoder's outputs.
pub struct AudioEncoding {
    /// `[B, n_patches, D]`.
    pub tok: Tensor,
    /// Mean over tokens, `[B, D]`.
    pub feat: Tensor,
}

impl MelPatchEncoder {
    pub fn new(vs: nn::Path, cfg: &Stage1Config) -> Self {
        let n = cfg.n_patches();
        Self {
            patch_proj: linear_normal(
                &vs / "patch_proj",
                cfg.n_mels * cfg.patch_len,
                cfg.d_model,
                0.02,
            ),
            pos_emb: vs.randn("pos_emb", &[1, n, cfg.d_model], 0.0, 0.02),
            encoder: TransformerEncoder::new(
                &vs / "encoder",
                cfg.layers,
                cfg.d_model,
                cfg.nhead,
                cfg.dim_feedforward,
                cfg.dropout,
            ),
            n_mels: cfg.n_mels,
            patch_len: cfg.patch_len,
        }
    }

    /// `mel [B, n_mels, T]` -> tokens and their mean.
    pub fn forward(&self, mel: &Tensor, train: bool) -> AudioEncoding {
        let (b, _, t) = mel.size3().expect("mel is [B, n_mels, T]");
        let n = t / self.patch_len;
        let x = mel
            .view([b, self.n_mels, n, self.patch_len])
            .permute([0, 2, 1, 3])
            .reshape([b, n, self.n_mels * self.patch_len]);
        let x = self.patch_proj.forward(&x) + &self.pos_emb;
        let tok = self.encoder.forward(&x, train);
        let feat = tok.mean_dim(1, false, None::<Kind>);
        AudioEncoding { tok, feat }
    }
}

/// `Linear, ReLU, Dropout, Linear` as an `nn.Sequential` (`.0` and `.3`): the
/// shape of every scalar head of stages 1 and 2.
#[derive(Debug)]
pub struct SequentialHead {
    fc0: nn::Linear,
    fc3: nn::Linear,
    dropout: f64,
}

impl SequentialHead {
    pub fn new(vs: nn::Path, in_dim: i64, hidden: i64, out_dim: i64, dropout: f64) -> Self {
        Self {
            fc0: linear(&vs / 0, in_dim, hidden),
            fc3: linear(&vs / 3, hidden, out_dim),
            dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.fc0
            .forward(x)
            .relu()
            .dropout(self.dropout, train)
            .apply(&self.fc3)
    }
}

/// Everything stage 1 computes for a batch.
pub struct Stage1Output {
    pub tok: Tensor,
    pub feat: Tensor,
    /// L2-normalised projection `[B, proj_dim]`.
    pub z: Tensor,
    /// Auxiliary real/fake logit `[B]`.
    pub logit: Tensor,
}

/// `AudioPretrainNet`: `audio_enc`, `proj` (`.0`, `.2`), `aux_head`, `proto_real`.
#[derive(Debug)]
pub struct AudioPretrainNet {
    pub audio_enc: MelPatchEncoder,
    proj0: nn::Linear,
    proj2: nn::Linear,
    pub aux_head: SequentialHead,
    pub proto_real: Tensor,
}

impl AudioPretrainNet {
    pub fn new(vs: nn::Path, cfg: &Stage1Config) -> Self {
        let d = cfg.d_model;
        Self {
            audio_enc: MelPatchEncoder::new(&vs / "audio_enc", cfg),
            proj0: linear(&vs / "proj" / 0, d, d),
            proj2: linear(&vs / "proj" / 2, d, cfg.proj_dim),
            aux_head: SequentialHead::new(&vs / "aux_head", d, d, 1, cfg.dropout),
            proto_real: vs.randn("proto_real", &[cfg.proj_dim], 0.0, 0.02),
        }
    }

    pub fn forward(&self, mel: &Tensor, train: bool) -> Stage1Output {
        let AudioEncoding { tok, feat } = self.audio_enc.forward(mel, train);
        let z = self.proj2.forward(&self.proj0.forward(&feat).relu());
        let z = l2_normalize(&z);
        let logit = self.aux_head.forward(&feat, train).squeeze_dim(-1);
        Stage1Output {
            tok,
            feat,
            z,
            logit,
        }
    }
}

/// `F.normalize(x, dim=-1)`: `x / max(||x||, 1e-12)`.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}
