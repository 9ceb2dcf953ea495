//! `pipeline bench models`: time per training step (forward, backward,
//! clipping, AdamW) and the process's peak resident memory, on random inputs
//! of a configuration's shapes, for each network stage: stage 1's audio
//! encoder, stage 2's detector and the OpenAVFF baseline. The port can so be
//! compared with the reference PyTorch code at the same configuration on the
//! same machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::amp::autocast_bf16;
use super::baseline::VideoCavMaeFt;
use super::device::DeviceChoice;
use super::forward::ConfigFile;
use super::losses;
use super::optim::AdamW;
use super::recipes::{
    BaselineParams, BaselineTask, Stage1Params, Stage1Task, Stage2Params, Stage2Task,
};
use super::stage1::AudioPretrainNet;
use super::stage2::AvDetector;
use super::train::Recipe;

/// Which network a configuration file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetKind {
    Stage1,
    Stage2,
    Baseline,
}

impl NetKind {
    /// From the file's name as the profiles write it: `stage1.json`,
    /// `stage2.json` (and `stage2_*.json`), `baseline.json`.
    pub fn of_file(path: &Path) -> Result<Self> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (prefix, kind) in [
            ("stage1", NetKind::Stage1),
            ("stage2", NetKind::Stage2),
            ("baseline", NetKind::Baseline),
        ] {
            if stem.starts_with(prefix) {
                return Ok(kind);
            }
        }
        bail!(
            "{}: cannot tell the network from the file name (stage1*, stage2* or baseline*); \
             name it with --kind stage1|stage2|baseline",
            path.display()
        )
    }
}

/// Arguments of `pipeline bench models`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Configurations to time (JSON, as `config/<profile>/stage1.json`,
    /// `stage2.json` or `baseline.json`).
    #[arg(long, num_args = 1.., default_values = ["config/demo/stage2.json", "config/paper/stage2.json"])]
    pub config: Vec<PathBuf>,
    /// The network of every configuration (default: from each file's name).
    #[arg(long, value_enum)]
    pub kind: Option<NetKind>,
    /// Batch size (default: 2 clips, the paper-scale comparison point).
    #[arg(long, default_value_t = 2)]
    pub batch: i64,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// cpu, cuda or auto (default: PIPELINE_DEVICE, else auto).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
}

/// Peak resident set size of this process so far, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark and prints one line per configuration.
pub fn run(args: BenchArgs) -> Result<()> {
    let device = match args.device {
        Some(d) => d,
        None => DeviceChoice::from_env()?,
    }
    .resolve()?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    println!(
        "training step on {device:?}, {} threads, batch {}, {} timed steps",
        tch::get_num_threads(),
        args.batch,
        args.steps
    );
    for path in &args.config {
        let kind = match args.kind {
            Some(k) => k,
            None => NetKind::of_file(path)?,
        };
        let json = ConfigFile::read(path)?.json;
        let invalid = || format!("{}: invalid {kind:?} parameters", path.display());
        tch::manual_seed(0);
        let b = args.batch;
        let ms = match kind {
            NetKind::Stage1 => {
                let p: Stage1Params = serde_json::from_value(json).with_context(invalid)?;
                stage1_step_ms(&p, device, b, args.steps)
            }
            NetKind::Stage2 => {
                let p: Stage2Params = serde_json::from_value(json).with_context(invalid)?;
                stage2_step_ms(&p, device, b, args.steps)
            }
            NetKind::Baseline => {
                let p: BaselineParams = serde_json::from_value(json).with_context(invalid)?;
                baseline_step_ms(&p, device, b, args.steps)
            }
        };
        println!(
            "{} ({kind:?}): {ms:.1} ms/step, peak RSS {:.0} MiB",
            path.display(),
            peak_rss_mib().unwrap_or(f64::NAN)
        )
    }
    Ok(())
}

/// Labels 0, 1, 0, 1, ... for a batch of `b`.
fn alternating(b: i64, device: Device) -> Tensor {
    Tensor::from_slice(&[0f32, 1.0])
        .repeat([b / 2 + 1])
        .narrow(0, 0, b)
        .to_device(device)
}

/// One warm-up step, then the mean of `steps` timed ones, in ms. `loss`
/// builds the loss of one step; the optimiser steps at the recipe's rate.
fn time_steps(
    recipe: &Recipe,
    device: Device,
    opt: &mut AdamW,
    steps: usize,
    loss: impl Fn() -> Tensor,
) -> f64 {
    let use_amp = recipe.amp && device.is_cuda();
    let mut step = || {
        opt.zero_grad();
        let l = autocast_bf16(use_amp, &loss);
        l.backward();
        if let Some(c) = recipe.clip_norm {
            opt.clip_grad_norm(c);
        }
        opt.step(recipe.lr);
    };
    step();
    let start = Instant::now();
    for _ in 0..steps {
        step();
    }
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    start.elapsed().as_secs_f64() * 1000.0 / steps.max(1) as f64
}

fn stage1_step_ms(p: &Stage1Params, device: Device, b: i64, steps: usize) -> f64 {
    let vs = VarStore::new(device);
    let net = AudioPretrainNet::new(vs.root(), &p.model);
    let mut opt = AdamW::new(Stage1Task::groups(&vs), p.recipe.weight_decay);
    let mel = Tensor::randn([b, 128, p.model.t_pad], (Kind::Float, device));
    let y = alternating(b, device);
    let ordinal: Vec<i64> = (0..b).map(|i| i % 2).collect();
    let labels = Tensor::from_slice(&ordinal).to_device(device);
    time_steps(&p.recipe, device, &mut opt, steps, || {
        let o = net.forward(&mel, true);
        let z = o.z.to_kind(Kind::Float);
        losses::supcon(&z, &labels, p.supcon_temperature)
            + losses::bce_with_logits(&o.logit.to_kind(Kind::Float), &y)
            + losses::ordinal_ring(&z, &net.proto_real, &ordinal, p.ordinal_margin)
    })
}

fn stage2_step_ms(p: &Stage2Params, device: Device, b: i64, steps: usize) -> f64 {
    let vs = VarStore::new(device);
    let net = AvDetector::new(vs.root(), &p.model);
    let mut opt = AdamW::new(
        Stage2Task::groups(&vs, p.backbone_lr_scale),
        p.recipe.weight_decay,
    );
    let v = &p.model.visual_backbone;
    let mel = Tensor::randn([b, 128, p.model.audio.t_pad], (Kind::Float, device));
    let clip = Tensor::randn(
        [b, v.n_frames, 3, v.img_size, v.img_size],
        (Kind::Float, device),
    );
    // Evenly spaced frames over the 3.2 s window (the time-aligned A2V mode
    // reads them; their values do not change the step's cost).
    let times = (Tensor::arange(v.n_frames, (Kind::Float, device)) * (3.2 / v.n_frames as f64))
        .unsqueeze(0)
        .repeat([b, 1]);
    let y = alternating(b, device);
    time_steps(&p.recipe, device, &mut opt, steps, || {
        let o = net.forward(&mel, &clip, Some(&times), true, false);
        losses::bce_with_logits(&o.logit_final.to_kind(Kind::Float), &y)
            + losses::align_repel(&o.mismatch_mse.to_kind(Kind::Float), &y, p.margin_align)
                * p.lambda_align
    })
}

fn baseline_step_ms(p: &BaselineParams, device: Device, b: i64, steps: usize) -> f64 {
    let vs = VarStore::new(device);
    let net = VideoCavMaeFt::new(vs.root(), &p.model);
    let mut opt = AdamW::new(
        BaselineTask::groups(&vs, p.head_lr_scale),
        p.recipe.weight_decay,
    );
    let m = &p.model;
    let audio = Tensor::randn([b, m.audio_length, m.mel_bins], (Kind::Float, device));
    let video = Tensor::randn(
        [b, 3, m.n_frames, m.img_size, m.img_size],
        (Kind::Float, device),
    );
    let classes =
        Tensor::from_slice(&(0..b).map(|i| i % 2).collect::<Vec<i64>>()).to_device(device);
    time_steps(&p.recipe, device, &mut opt, steps, || {
        losses::cross_entropy(
            &net.forward(&audio, &video, true).to_kind(Kind::Float),
            &classes,
        )
    })
}
