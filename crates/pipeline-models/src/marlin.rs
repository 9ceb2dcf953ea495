//! The MARLIN / VideoMAE video encoder: 3-D patch embedding, the fixed sin-cos
//! table, pre-norm ViT blocks and a final `norm`. Stage 2 holds it as
//! `vis_enc.backbone.encoder` (qkv biases on); the OpenAVFF baseline holds the
//! same structure as `visual_encoder` (no qkv bias).

use tch::nn::{self, Module};
use tch::Tensor;

use super::layers::{fixed_sincos, layer_norm, PatchEmbedding3d, VitBlock, VitFlavour};

pub use pipeline_core::stages::model_params::MarlinConfig;

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
