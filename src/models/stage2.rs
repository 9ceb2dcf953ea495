//! Stage 2: `AVDetector`, the directionality-aware detector. A frozen stage-1
//! audio encoder and head, a MARLIN video backbone, an audio-to-visual
//! predictor, the discrepancy features and the confidence-aware fusion.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::layers::{interpolate_linear, linear, TransformerEncoder};
use super::marlin::{MarlinConfig, MarlinEncoder};
use super::stage1::{MelPatchEncoder, SequentialHead, Stage1Config};

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
        }
    }
}

/// `vis_enc`: the MARLIN backbone and a projection to the detector's width.
#[derive(Debug)]
pub struct VisualEncoder {
    pub backbone: MarlinEncoder,
    proj: nn::Linear,
}

impl VisualEncoder {
    fn new(vs: nn::Path, cfg: &MarlinConfig, d_model: i64) -> Self {
        Self {
            backbone: MarlinEncoder::new(&vs / "backbone" / "encoder", cfg),
            proj: linear(&vs / "proj", cfg.embed_dim, d_model),
        }
    }

    /// `[B, 3, T, H, W]` -> (`v_seq [B, N, d]`, `g_vis [B, d]`). One backbone
    /// pass gives both (the reference runs it twice, MODELS.md defect 3).
    fn forward(&self, video: &Tensor) -> (Tensor, Tensor) {
        let x = self.backbone.blocks_output(video);
        let seq = self.backbone.norm.forward(&x);
        let global = self
            .backbone
            .norm
            .forward(&x.mean_dim(1, false, None::<Kind>));
        (self.proj.forward(&seq), self.proj.forward(&global))
    }
}

/// `predictor`: the audio-to-visual predictor.
#[derive(Debug)]
pub struct Predictor {
    encoder: TransformerEncoder,
    to_frame_feat: nn::Linear,
}

/// Everything the detector computes for a batch; names follow the golden files.
pub struct Stage2Output {
    pub audio_feat: Tensor,
    pub logit_audio: Tensor,
    pub logit_a2v: Tensor,
    pub logit_final: Tensor,
    pub w_audio: Tensor,
    pub w_a2v: Tensor,
    pub mismatch_mse: Tensor,
    pub v_seq: Tensor,
    pub g_vis: Tensor,
}

/// `AVDetector`.
#[derive(Debug)]
pub struct AvDetector {
    pub audio_enc: MelPatchEncoder,
    pub vis_enc: VisualEncoder,
    predictor: Predictor,
    pub audio_head: SequentialHead,
    a2v_head: SequentialHead,
    conf_net: SequentialHead,
}

impl AvDetector {
    pub fn new(vs: nn::Path, cfg: &Stage2Config) -> Self {
        let d = cfg.audio.d_model;
        let p = cfg.dropout;
        Self {
            audio_enc: MelPatchEncoder::new(&vs / "audio_enc", &cfg.audio),
            vis_enc: VisualEncoder::new(&vs / "vis_enc", &cfg.visual_backbone, d),
            predictor: Predictor {
                encoder: TransformerEncoder::new(
                    &vs / "predictor" / "encoder",
                    cfg.a2v_layers,
                    d,
                    cfg.a2v_nhead,
                    cfg.predictor_dim_feedforward,
                    p,
                ),
                to_frame_feat: linear(&vs / "predictor" / "to_frame_feat", d, d),
            },
            audio_head: SequentialHead::new(&vs / "audio_head", d, d, 1, p),
            a2v_head: SequentialHead::new(&vs / "a2v_head", 2 * d, d, 1, p),
            conf_net: SequentialHead::new(&vs / "conf_net", 3 * d + 2, d, 2, p),
        }
    }

    /// `mel [B, n_mels, T]`, `v_clip [B, T, 3, H, W]` (the element layout).
    /// The frozen audio branch always runs in eval mode without gradients.
    pub fn forward(&self, mel: &Tensor, v_clip: &Tensor, train: bool) -> Stage2Output {
        let (audio, logit_audio) = tch::no_grad(|| {
            let a = self.audio_enc.forward(mel, false);
            let l = self.audio_head.forward(&a.feat, false).squeeze_dim(-1);
            (a, l)
        });
        let video = v_clip.permute([0, 2, 1, 3, 4]);
        let (v_seq, g_vis) = self.vis_enc.forward(&video);
        let n = v_seq.size()[1];
        let aligned = interpolate_linear(&audio.tok.transpose(1, 2), n).transpose(1, 2);
        let seq = Tensor::cat(&[g_vis.unsqueeze(1), aligned], 1);
        let pred_v = self
            .predictor
            .encoder
            .forward(&seq, train)
            .narrow(1, 1, n)
            .apply(&self.predictor.to_frame_feat);
        let delta = &pred_v - &v_seq;
        let diff = delta.abs().amax([1i64].as_slice(), false);
        let fused = Tensor::cat(&[&diff, &g_vis], 1);
        let mismatch_mse = delta
            .square()
            .mean_dim([1i64, 2].as_slice(), false, None::<Kind>);
        let logit_a2v = self.a2v_head.forward(&fused, train).squeeze_dim(-1);
        let conf_in = Tensor::cat(
            &[
                audio.feat.shallow_clone(),
                fused,
                logit_audio.unsqueeze(1),
                logit_a2v.unsqueeze(1),
            ],
            1,
        );
        let w = self
            .conf_net
            .forward(&conf_in, train)
            .softmax(-1, Kind::Float);
        let (w_audio, w_a2v) = (w.select(1, 0), w.select(1, 1));
        let p = (&w_audio * logit_audio.sigmoid() + &w_a2v * logit_a2v.sigmoid())
            .clamp(1e-6, 1.0 - 1e-6);
        let logit_final = (&p / (-&p + 1.0)).log();
        Stage2Output {
            audio_feat: audio.feat,
            logit_audio,
            logit_a2v,
            logit_final,
            w_audio,
            w_a2v,
            mismatch_mse,
            v_seq,
            g_vis,
        }
    }
}
