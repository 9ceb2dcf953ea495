//! Layers shared by the three networks, written once with PyTorch's semantics:
//! `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` (post-norm, ReLU),
//! the MARLIN/VideoMAE and timm ViT blocks (pre-norm, exact GELU), the 3-D
//! patch embedding and the fixed sin-cos table. Parameter names are the
//! PyTorch state-dict names, so a converted reference checkpoint loads as is.
//! Knows nothing about the networks built from these layers.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// LayerNorm with PyTorch's default eps (the references all pass `nn.LayerNorm`
/// without an eps, including MARLIN, whose upstream default would be 1e-6).
pub fn layer_norm(vs: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![dim], Default::default())
}

/// `nn.Linear` with PyTorch's default initialisation.
pub fn linear(vs: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    nn::linear(vs, in_dim, out_dim, Default::default())
}

/// `nn.Linear` whose weight is drawn from N(0, std) and whose bias is zero.
pub fn linear_normal(vs: nn::Path, in_dim: i64, out_dim: i64, std: f64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(vs, in_dim, out_dim, cfg)
}

/// Scaled dot-product attention over `[B, L, 3D]` packed q/k/v projections;
/// returns `[B, L, D]` with heads merged. The scale is `1/sqrt(D/heads)`.
fn attend(qkv: &Tensor, heads: i64, dropout: f64, train: bool) -> Tensor {
    let (b, l, three_d) = qkv.size3().expect("qkv is [B, L, 3D]");
    let d = three_d / 3;
    let qkv = qkv
        .view([b, l, 3, heads, d / heads])
        .permute([2, 0, 3, 1, 4]);
    let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
    let p = if train { dropout } else { 0.0 };
    Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, false, None::<f64>, false)
        .transpose(1, 2)
        .reshape([b, l, d])
}

/// PyTorch `nn.MultiheadAttention` (self-attention, batch-first input):
/// `in_proj_weight [3D, D]` stacks q, k, v; dropout acts on the attention
/// probabilities while training.
#[derive(Debug)]
pub struct MultiheadAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl MultiheadAttention {
    pub fn new(vs: nn::Path, dim: i64, heads: i64, dropout: f64) -> Self {
        // PyTorch: xavier_uniform on the stacked projection, zero biases.
        let bound = (6.0 / (dim + 3 * dim) as f64).sqrt();
        let in_proj_weight = vs.var(
            "in_proj_weight",
            &[3 * dim, dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let in_proj_bias = vs.zeros("in_proj_bias", &[3 * dim]);
        let out_proj = nn::linear(
            &vs / "out_proj",
            dim,
            dim,
            nn::LinearConfig {
                bs_init: Some(nn::Init::Const(0.0)),
                ..Default::default()
            },
        );
        Self {
            in_proj_weight,
            in_proj_bias,
            out_proj,
            heads,
            dropout,
        }
    }

    /// `x [B, L, D]` -> `[B, L, D]`, attending along `L`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let qkv = x.linear(&self.in_proj_weight, Some(&self.in_proj_bias));
        self.out_proj
            .forward(&attend(&qkv, self.heads, self.dropout, train))
    }
}

/// PyTorch `nn.TransformerEncoderLayer(batch_first=True)`: post-norm, ReLU.
#[derive(Debug)]
pub struct TransformerEncoderLayer {
    self_attn: MultiheadAttention,
    linear1: nn::Linear,
    linear2: nn::Linear,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    dropout: f64,
}

impl TransformerEncoderLayer {
    pub fn new(vs: nn::Path, dim: i64, heads: i64, dim_feedforward: i64, dropout: f64) -> Self {
        Self {
            self_attn: MultiheadAttention::new(&vs / "self_attn", dim, heads, dropout),
            linear1: linear(&vs / "linear1", dim, dim_feedforward),
            linear2: linear(&vs / "linear2", dim_feedforward, dim),
            norm1: layer_norm(&vs / "norm1", dim),
            norm2: layer_norm(&vs / "norm2", dim),
            dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self
            .self_attn
            .forward(x, train)
            .dropout(self.dropout, train);
        let x = self.norm1.forward(&(x + a));
        let f = self
            .linear1
            .forward(&x)
            .relu()
            .dropout(self.dropout, train)
            .apply(&self.linear2)
            .dropout(self.dropout, train);
        self.norm2.forward(&(x + f))
    }
}

/// PyTorch `nn.TransformerEncoder` without a final norm: `layers.N.*`.
#[derive(Debug)]
pub struct TransformerEncoder {
    layers: Vec<TransformerEncoderLayer>,
}

impl TransformerEncoder {
    pub fn new(
        vs: nn::Path,
        n_layers: usize,
        dim: i64,
        heads: i64,
        dim_feedforward: i64,
        dropout: f64,
    ) -> Self {
        let layers = (0..n_layers)
            .map(|i| {
                TransformerEncoderLayer::new(
                    &vs / "layers" / i,
                    dim,
                    heads,
                    dim_feedforward,
                    dropout,
                )
            })
            .collect();
        Self { layers }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            x = layer.forward(&x, train);
        }
        x
    }
}

/// How a ViT block names its MLP and whether its qkv projection has a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitFlavour {
    /// MARLIN/VideoMAE: `mlp.layers.{0,1}.linear`, biases as `attn.q_bias` and
    /// `attn.v_bias` when `qkv_bias` is on (the key bias is fixed at zero).
    Marlin { qkv_bias: bool },
    /// timm `Block` with `qkv_bias=False`: `mlp.fc1`, `mlp.fc2`.
    Timm,
}

/// Pre-norm ViT block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, GELU (erf).
#[derive(Debug)]
pub struct VitBlock {
    norm1: nn::LayerNorm,
    qkv_weight: Tensor,
    q_bias: Option<Tensor>,
    v_bias: Option<Tensor>,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

impl VitBlock {
    pub fn new(vs: nn::Path, dim: i64, heads: i64, mlp_ratio: f64, flavour: VitFlavour) -> Self {
        let attn = &vs / "attn";
        let bound = (6.0 / (dim + 3 * dim) as f64).sqrt();
        let qkv_weight = (&attn / "qkv").var(
            "weight",
            &[3 * dim, dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let (q_bias, v_bias) = match flavour {
            VitFlavour::Marlin { qkv_bias: true } => (
                Some(attn.zeros("q_bias", &[dim])),
                Some(attn.zeros("v_bias", &[dim])),
            ),
            _ => (None, None),
        };
        let hidden = (dim as f64 * mlp_ratio) as i64;
        let (fc1, fc2) = match flavour {
            VitFlavour::Marlin { .. } => {
                let mlp = &vs / "mlp" / "layers";
                (
                    linear(&mlp / 0 / "linear", dim, hidden),
                    linear(&mlp / 1 / "linear", hidden, dim),
                )
            }
            VitFlavour::Timm => (
                linear(&vs / "mlp" / "fc1", dim, hidden),
                linear(&vs / "mlp" / "fc2", hidden, dim),
            ),
        };
        Self {
            norm1: layer_norm(&vs / "norm1", dim),
            qkv_weight,
            q_bias,
            v_bias,
            proj: linear(&attn / "proj", dim, dim),
            norm2: layer_norm(&vs / "norm2", dim),
            fc1,
            fc2,
            heads,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.norm1.forward(x);
        let bias = match (&self.q_bias, &self.v_bias) {
            (Some(q), Some(v)) => Some(Tensor::cat(&[q, &v.zeros_like(), v], 0)),
            _ => None,
        };
        let qkv = h.linear(&self.qkv_weight, bias.as_ref());
        let x = x + self.proj.forward(&attend(&qkv, self.heads, 0.0, false));
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)).gelu("none"));
        x + m
    }
}

/// `Conv3d(3, D, kernel = stride = (tubelet, patch, patch))` under
/// `patch_embedding.projection`, flattened time-major to `[B, N, D]`.
#[derive(Debug)]
pub struct PatchEmbedding3d {
    projection: nn::Conv3D,
}

impl PatchEmbedding3d {
    pub fn new(vs: nn::Path, dim: i64, tubelet: i64, patch: i64) -> Self {
        let cfg = nn::ConvConfigND::<[i64; 3]> {
            stride: [tubelet, patch, patch],
            padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
            bias: true,
            ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
            bs_init: nn::Init::Const(0.0),
            padding_mode: nn::PaddingMode::Zeros,
        };
        let projection = nn::conv(&vs / "projection", 3, dim, [tubelet, patch, patch], cfg);
        Self { projection }
    }

    /// `x [B, 3, T, H, W]` -> `[B, T/t * H/p * W/p, D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.projection.forward(x).flatten(2, -1).transpose(1, 2)
    }
}

/// The fixed sin-cos table `[1, n, dim]`: angle(pos, i) = pos / 10000^(2*floor(i/2)/dim),
/// sin on even i, cos on odd i. Computed in f64, stored as f32.
pub fn sincos_table(n: i64, dim: i64) -> Tensor {
    let mut data = Vec::with_capacity((n * dim) as usize);
    for pos in 0..n {
        for i in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (i / 2)) as f64 / dim as f64);
            data.push(if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Tensor::from_slice(&data).view([1, n, dim])
}

/// A fixed (never trained) sin-cos table stored under `name`, like MARLIN's
/// `pos_embedding.emb` buffer.
pub fn fixed_sincos(vs: &nn::Path, name: &str, n: i64, dim: i64) -> Tensor {
    let t = sincos_table(n, dim)
        .to_kind(Kind::Float)
        .to_device(vs.device());
    vs.add(name, t, false)
}

/// PyTorch `F.interpolate(x [B, C, L], size=n, mode="linear", align_corners=False)`.
pub fn interpolate_linear(x: &Tensor, n: i64) -> Tensor {
    x.upsample_linear1d([n], false, None::<f64>)
}
