//! Stage 2: `AVDetector`, the directionality-aware detector. A frozen stage-1
//! audio encoder and head, a MARLIN video backbone, an audio-to-visual
//! predictor, the discrepancy features and the confidence-aware fusion.
//!
//! The A2V discrepancy comes in two forms, chosen by [`A2vMode`]; neither adds
//! a parameter, so a reference checkpoint loads into both.
//! - `reference`: what the reference computes. The stage-1 audio tokens are
//!   linearly interpolated along the token axis to the number of *patch*
//!   tokens (`T' * H' * W'`, time-major), the predictor predicts every patch
//!   token, and the discrepancy is taken on the raw features.
//! - `time_aligned` (our deviation, README "Why the A2V branch did not
//!   learn"): one visual representation per time step (the mean of each
//!   tubelet's patch tokens), the audio tokens sampled at the sampled frames'
//!   own times (plus the lead of the picture over the sound), averaged over
//!   each tubelet's frames, and prediction and actual standardised over time
//!   per channel before they are compared, so the discrepancy measures how
//!   well the two move together rather than the clip's static appearance.
//!   With the reference's form the audio a mouth token sees is up to 150 ms
//!   off its frames (uncorrelated with the mouth at that distance) and the
//!   error is dominated by what audio cannot predict; the branch stays at
//!   chance on out-of-sync clips.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::data::MEL_HOP_SECONDS;
use super::layers::{interpolate_linear, linear, TransformerEncoder};
use super::marlin::{MarlinConfig, MarlinEncoder};
use super::stage1::{MelPatchEncoder, SequentialHead};

pub use pipeline_core::stages::model_params::{A2vMode, Stage2Config};

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
    pub fn forward(&self, video: &Tensor) -> (Tensor, Tensor) {
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
    mode: A2vMode,
    audio_lead_seconds: f64,
    /// Mel frames per audio token, and frames per tubelet.
    audio_patch_len: i64,
    tubelet: i64,
}

/// Per-channel standardisation over the time axis (1) of `[B, T, C]`.
fn standardise_over_time(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(1, true, None::<Kind>);
    let std = x.std_dim(1, true, true);
    (x - mean) / (std + 1e-4)
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
            mode: cfg.a2v_mode,
            audio_lead_seconds: cfg.audio_lead_seconds,
            audio_patch_len: cfg.audio.patch_len,
            tubelet: cfg.visual_backbone.tubelet_size,
        }
    }

    /// `time_aligned`: the audio tokens `[B, n, d]` sampled at each frame's
    /// time (`frame_times [B, T]`, seconds from the window start, plus the
    /// lead), averaged over each tubelet's frames: `[B, T / tubelet, d]`.
    fn audio_at_frames(&self, tok: &Tensor, frame_times: &Tensor) -> Tensor {
        let (b, n, d) = tok.size3().expect("audio tokens are [B, n, d]");
        let t = frame_times.size()[1];
        // Mel frame k is centred at k hops (center=True); token j holds
        // frames [j*P, (j+1)*P), so its centre is at j*P + (P-1)/2 hops.
        let p = self.audio_patch_len as f64;
        let coord = (((frame_times + self.audio_lead_seconds) / MEL_HOP_SECONDS - (p - 1.0) / 2.0)
            / p)
            .clamp(0.0, (n - 1) as f64);
        let lo = coord.floor().to_kind(Kind::Int64);
        let hi = (&lo + 1).clamp_max(n - 1);
        let frac = (&coord - lo.to_kind(coord.kind())).unsqueeze(-1);
        let pick = |idx: &Tensor| tok.gather(1, &idx.unsqueeze(-1).expand([b, t, d], false), false);
        let at = pick(&lo) * (-&frac + 1.0) + pick(&hi) * &frac;
        at.view([b, t / self.tubelet, self.tubelet, d])
            .mean_dim(2, false, None::<Kind>)
    }

    /// `mel [B, n_mels, T]`, `v_clip [B, T, 3, H, W]` (the element layout),
    /// `frame_times [B, T]` (seconds from the window start; `time_aligned`
    /// needs them). The frozen audio branch never gets gradients; it runs
    /// with its dropout on only when `audio_train` (the reference's
    /// `model.train()` on the whole detector; see `Stage2Params`).
    pub fn forward(
        &self,
        mel: &Tensor,
        v_clip: &Tensor,
        frame_times: Option<&Tensor>,
        train: bool,
        audio_train: bool,
    ) -> Stage2Output {
        let b = self.branches(mel, v_clip, frame_times, train, audio_train);
        let f = self.fuse(&b, train);
        Stage2Output {
            audio_feat: b.audio_feat,
            logit_audio: b.logit_audio,
            logit_a2v: b.logit_a2v,
            logit_final: f.logit_final,
            w_audio: f.w_audio,
            w_a2v: f.w_a2v,
            mismatch_mse: b.mismatch_mse,
            v_seq: b.v_seq,
            g_vis: b.g_vis,
        }
    }

    /// Everything before the fusion: the two branches' scores and what the
    /// fusion's gate reads (`forward` = `branches` then [`Self::fuse`]).
    pub fn branches(
        &self,
        mel: &Tensor,
        v_clip: &Tensor,
        frame_times: Option<&Tensor>,
        train: bool,
        audio_train: bool,
    ) -> Branches {
        let (audio, logit_audio) = tch::no_grad(|| {
            let a = self.audio_enc.forward(mel, audio_train);
            let l = self
                .audio_head
                .forward(&a.feat, audio_train)
                .squeeze_dim(-1);
            (a, l)
        });
        let video = v_clip.permute([0, 2, 1, 3, 4]);
        let (v_seq, g_vis) = self.vis_enc.forward(&video);
        let (v_seq, aligned) = match self.mode {
            A2vMode::Reference => {
                let n = v_seq.size()[1];
                let aligned = interpolate_linear(&audio.tok.transpose(1, 2), n).transpose(1, 2);
                (v_seq, aligned)
            }
            A2vMode::TimeAligned => {
                let times = frame_times
                    .expect("time_aligned needs frame times (the batch loader supplies them)");
                let aligned = self.audio_at_frames(&audio.tok, times);
                let (b, n, d) = v_seq.size3().expect("v_seq is [B, N, d]");
                let steps = aligned.size()[1];
                let per_step =
                    v_seq
                        .view([b, steps, n / steps, d])
                        .mean_dim(2, false, None::<Kind>);
                (per_step, aligned)
            }
        };
        let n = v_seq.size()[1];
        let seq = Tensor::cat(&[g_vis.unsqueeze(1), aligned], 1);
        let pred_v = self
            .predictor
            .encoder
            .forward(&seq, train)
            .narrow(1, 1, n)
            .apply(&self.predictor.to_frame_feat);
        let (pred_c, v_c) = match self.mode {
            A2vMode::Reference => (pred_v.shallow_clone(), v_seq.shallow_clone()),
            A2vMode::TimeAligned => (
                standardise_over_time(&pred_v),
                standardise_over_time(&v_seq),
            ),
        };
        let delta = &pred_c - &v_c;
        let diff = delta.abs().amax([1i64].as_slice(), false);
        let fused = Tensor::cat(&[&diff, &g_vis], 1);
        let mismatch_mse = delta
            .square()
            .mean_dim([1i64, 2].as_slice(), false, None::<Kind>);
        let logit_a2v = self.a2v_head.forward(&fused, train).squeeze_dim(-1);
        Branches {
            audio_feat: audio.feat,
            fused,
            logit_audio,
            logit_a2v,
            mismatch_mse,
            v_seq,
            g_vis,
        }
    }

    /// The confidence-aware fusion: `conf_net` over `[audio_feat ; fused ;
    /// logit_audio ; logit_a2v]`, softmax weights, the weighted mean of the
    /// two branches' probabilities as the final logit.
    pub fn fuse(&self, b: &Branches, train: bool) -> Fusion {
        let conf_in = Tensor::cat(
            &[
                b.audio_feat.shallow_clone(),
                b.fused.shallow_clone(),
                b.logit_audio.unsqueeze(1),
                b.logit_a2v.unsqueeze(1),
            ],
            1,
        );
        let w = self
            .conf_net
            .forward(&conf_in, train)
            .softmax(-1, Kind::Float);
        let (w_audio, w_a2v) = (w.select(1, 0), w.select(1, 1));
        let p = (&w_audio * b.logit_audio.sigmoid() + &w_a2v * b.logit_a2v.sigmoid())
            .clamp(1e-6, 1.0 - 1e-6);
        let logit_final = (&p / (-&p + 1.0)).log();
        Fusion {
            logit_final,
            w_audio,
            w_a2v,
        }
    }
}

/// The two branches' outputs for a batch ([`AvDetector::branches`]).
pub struct Branches {
    pub audio_feat: Tensor,
    /// `[diff ; g_vis]`, what the A2V head reads.
    pub fused: Tensor,
    pub logit_audio: Tensor,
    pub logit_a2v: Tensor,
    pub mismatch_mse: Tensor,
    pub v_seq: Tensor,
    pub g_vis: Tensor,
}

/// The fusion's output ([`AvDetector::fuse`]).
pub struct Fusion {
    pub logit_final: Tensor,
    pub w_audio: Tensor,
    pub w_a2v: Tensor,
}
