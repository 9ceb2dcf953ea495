//! `pipeline model forward`: one eval-mode forward pass of a network from a
//! config file, a weights file and an inputs file, writing every named output
//! the golden files hold, so anyone can check parity at any size.
//!
//! Inputs (safetensors): stage 1 `mel` and optionally `labels` (ordinal);
//! stage 2 `mel`, `v_clip [B,T,3,H,W]`, optionally `y_video`, and `frame_times
//! [B,T]` (seconds from the window start) when `a2v_mode` is `time_aligned`; the baseline
//! `audio [B,time,mel]` and `video [B,3,T,H,W]`. Losses are written when their
//! labels are given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::de::DeserializeOwned;
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::baseline::{BaselineConfig, VideoCavMaeFt};
use super::checkpoint::{load_strict, read_tensors, write_tensors};
use super::device::DeviceChoice;
use super::losses;
use super::stage1::{AudioPretrainNet, Stage1Config};
use super::stage2::{A2vMode, AvDetector, Stage2Config};

/// Which network a command addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    Stage1,
    Stage2,
    Baseline,
}

/// Arguments of `pipeline model forward`.
#[derive(Debug, Clone, clap::Args)]
pub struct ForwardArgs {
    /// The network: stage1, stage2 or baseline.
    #[arg(long, value_enum)]
    pub model: ModelKind,
    /// A stage configuration (JSON); its `model` object gives the shapes.
    #[arg(long)]
    pub config: PathBuf,
    /// Weights (safetensors, reference state-dict names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Input tensors (safetensors).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// cpu, cuda or auto (default: PIPELINE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
}

/// The `model` object of a stage configuration file (or the whole file when it
/// has none), and the loss settings found next to it.
pub struct ConfigFile {
    pub json: serde_json::Value,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let json = serde_json::from_str(&text)
            .with_context(|| format!("parsing config {} as JSON", path.display()))?;
        Ok(Self { json })
    }

    /// The network shapes, from `model`.
    pub fn model<T: DeserializeOwned>(&self) -> Result<T> {
        let m = self
            .json
            .get("model")
            .cloned()
            .unwrap_or(serde_json::json!({}));
        serde_json::from_value(m).context("config: invalid `model` object")
    }

    /// A numeric setting outside `model` (e.g. `ordinal_margin`), or `default`.
    pub fn f64_or(&self, key: &str, default: f64) -> f64 {
        self.json
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or(default)
    }
}

/// The input `name`, as float, checked against `shape` (`None` = any size),
/// so that a wrong file gets a message instead of a libtorch panic.
fn input(
    inputs: &BTreeMap<String, Tensor>,
    name: &str,
    shape: &[Option<i64>],
    file: &Path,
) -> Result<Tensor> {
    let t = inputs
        .get(name)
        .with_context(|| format!("{}: no input tensor named '{name}'", file.display()))?;
    let size = t.size();
    let fits = size.len() == shape.len()
        && size
            .iter()
            .zip(shape)
            .all(|(s, want)| want.is_none_or(|w| w == *s));
    ensure!(
        fits,
        "{}: input '{name}' has shape {size:?}, the model expects {}",
        file.display(),
        shape
            .iter()
            .map(|d| d.map_or("B".to_string(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join("x")
    );
    Ok(t.to_kind(Kind::Float))
}

/// Runs `pipeline model forward`.
pub fn run(args: ForwardArgs) -> Result<()> {
    let device = match args.device {
        Some(d) => d,
        None => DeviceChoice::from_env()?,
    }
    .resolve()?;
    let cfg = ConfigFile::read(&args.config)?;
    let inputs: BTreeMap<String, Tensor> = read_tensors(&args.inputs)?
        .into_iter()
        .map(|(k, v)| (k, v.to_device(device)))
        .collect();
    let outputs = forward(
        args.model,
        &cfg,
        &args.weights,
        &inputs,
        &args.inputs,
        device,
    )?;
    write_tensors(&outputs, &args.out)?;
    eprintln!(
        "wrote {} outputs ({}) to {}",
        outputs.len(),
        outputs.keys().cloned().collect::<Vec<_>>().join(", "),
        args.out.display()
    );
    Ok(())
}

/// One eval-mode forward pass; returns the named outputs.
pub fn forward(
    model: ModelKind,
    cfg: &ConfigFile,
    weights: &Path,
    inputs: &BTreeMap<String, Tensor>,
    inputs_path: &Path,
    device: Device,
) -> Result<BTreeMap<String, Tensor>> {
    let vs = VarStore::new(device);
    let mut out = BTreeMap::new();
    let _guard = tch::no_grad_guard();
    match model {
        ModelKind::Stage1 => {
            let c: Stage1Config = cfg.model()?;
            let net = AudioPretrainNet::new(vs.root(), &c);
            load_strict(&vs, weights)?;
            let mel = input(
                inputs,
                "mel",
                &[None, Some(c.n_mels), Some(c.t_pad)],
                inputs_path,
            )?;
            let o = net.forward(&mel, false);
            if let Some(labels) = inputs.get("labels") {
                let tau = cfg.f64_or("supcon_temperature", 0.07);
                let margin = cfg.f64_or("ordinal_margin", 0.2);
                let l: Vec<i64> = Vec::<i64>::try_from(labels.to_kind(Kind::Int64).flatten(0, -1))?;
                out.insert(
                    "supcon_loss".into(),
                    losses::supcon(&o.z, labels, tau).reshape([1]),
                );
                out.insert(
                    "ordinal_ring_loss".into(),
                    losses::ordinal_ring(&o.z, &net.proto_real, &l, margin).reshape([1]),
                );
            }
            out.insert("feat".into(), o.feat);
            out.insert("tok".into(), o.tok);
            out.insert("z".into(), o.z);
            out.insert("logit".into(), o.logit);
        }
        ModelKind::Stage2 => {
            let c: Stage2Config = cfg.model()?;
            let net = AvDetector::new(vs.root(), &c);
            load_strict(&vs, weights)?;
            let a = &c.audio;
            let v = &c.visual_backbone;
            let mel = input(
                inputs,
                "mel",
                &[None, Some(a.n_mels), Some(a.t_pad)],
                inputs_path,
            )?;
            let clip_shape = [
                None,
                Some(v.n_frames),
                Some(3),
                Some(v.img_size),
                Some(v.img_size),
            ];
            let clip = input(inputs, "v_clip", &clip_shape, inputs_path)?;
            let times = inputs.get("frame_times");
            ensure!(
                c.a2v_mode == A2vMode::Reference || times.is_some(),
                "{}: a2v_mode time_aligned needs a `frame_times [B,{}]` input (seconds from the window start)",
                inputs_path.display(),
                v.n_frames
            );
            let o = net.forward(&mel, &clip, times, false, false);
            if let Some(y) = inputs.get("y_video") {
                let margin = cfg.f64_or("margin_align", 0.5);
                out.insert(
                    "align_repel_loss".into(),
                    losses::align_repel(&o.mismatch_mse, y, margin).reshape([1]),
                );
                out.insert(
                    "bce_loss".into(),
                    losses::bce_with_logits(&o.logit_final, &y.to_kind(Kind::Float)).reshape([1]),
                );
            }
            out.insert("logit_audio".into(), o.logit_audio);
            out.insert("logit_final".into(), o.logit_final);
            out.insert("logit_a2v".into(), o.logit_a2v);
            out.insert("w_audio".into(), o.w_audio);
            out.insert("w_a2v".into(), o.w_a2v);
            out.insert("mismatch_mse".into(), o.mismatch_mse);
            out.insert("v_seq".into(), o.v_seq);
            out.insert("g_vis".into(), o.g_vis);
        }
        ModelKind::Baseline => {
            let c: BaselineConfig = cfg.model()?;
            let net = VideoCavMaeFt::new(vs.root(), &c);
            load_strict(&vs, weights)?;
            let audio_shape = [None, Some(c.audio_length), Some(c.mel_bins)];
            let audio = input(inputs, "audio", &audio_shape, inputs_path)?;
            let video_shape = [
                None,
                Some(3),
                Some(c.n_frames),
                Some(c.img_size),
                Some(c.img_size),
            ];
            let video = input(inputs, "video", &video_shape, inputs_path)?;
            out.insert("logits".into(), net.forward(&audio, &video, false));
        }
    }
    Ok(out)
}
