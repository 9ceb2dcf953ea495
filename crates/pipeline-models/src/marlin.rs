//! The MARLIN / VideoMAE video encoder: 3-D patch embedding, the fixed sin-cos
//! table, pre-norm ViT blocks and a final `norm`. Stage 2 holds it as
//! `vis_enc.backbone.encoder` (qkv biases on); the OpenAVFF baseline holds the
//! same structure as `visual_encoder` (no qkv bias).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::layers::{fixed_sincos, layer_norm, PatchEmbedding3d, VitBlock, VitFlavour};

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

/// The encoder: `patch_embedding`, `pos_embedding.emb`, `blocks.N`, `norm`.
#[derive(Debug)]
pub struct MarlinEncoder {
    patch_embedding: PatchEmbedding3d,
    pos_embedding: Tensor,
    blocks: Vec<VitBlock>,
    pub norm: nn::LayerNorm,
}

impl MarlinEncoder {
    pub fn new(vs: nn::Path, cfg: &MarlinConfig) -> Self {
        let d = cfg.embed_dim;
        let flavour = VitFlavour::Marlin {
            qkv_bias: cfg.qkv_bias,
        };
        Self {
            patch_embedding: PatchEmbedding3d::new(
                &vs / "patch_embedding",
                d,
                cfg.tubelet_size,
                cfg.patch_size,
            ),
            pos_embedding: fixed_sincos(&(&vs / "pos_embedding"), "emb", cfg.tokens(), d),
            blocks: (0..cfg.depth)
                .map(|i| {
                    VitBlock::new(&vs / "blocks" / i, d, cfg.num_heads, cfg.mlp_ratio, flavour)
                })
                .collect(),
            norm: layer_norm(&vs / "norm", d),
        }
    }

    /// `x [B, 3, T, H, W]` -> the block output before the final norm, `[B, N, D]`.
    pub fn blocks_output(&self, x: &Tensor) -> Tensor {
        let mut x = self.patch_embedding.forward(x) + &self.pos_embedding;
        for block in &self.blocks {
            x = block.forward(&x);
        }
        x
    }
}

impl MarlinEncoder {
    /// `x [B, 3, T, H, W]` -> `norm(blocks(x))`, `[B, N, D]`.
    pub fn forward_normed(&self, x: &Tensor) -> Tensor {
        self.norm.forward(&self.blocks_output(x))
    }
}
