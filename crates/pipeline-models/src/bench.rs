//! `pipeline bench models`: time per stage-2 training step (forward, backward,
//! clipping, AdamW) and the process's peak resident memory, on random inputs
//! of a configuration's shapes, so the port can be compared with the
//! reference PyTorch code at the same configuration on the same machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{nn::VarStore, Kind, Tensor};

use super::amp::autocast_bf16;
use super::device::DeviceChoice;
use super::forward::ConfigFile;
use super::losses;
use super::optim::AdamW;
use super::recipes::{Stage2Params, Stage2Task};
use super::stage2::AvDetector;

/// Arguments of `pipeline bench models`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Stage-2 configurations to time (JSON, as `config/<profile>/stage2.json`).
    #[arg(long, num_args = 1.., default_values = ["config/demo/stage2.json", "config/paper/stage2.json"])]
    pub config: Vec<PathBuf>,
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
        "stage-2 training step on {device:?}, {} threads, batch {}, {} timed steps",
        tch::get_num_threads(),
        args.batch,
        args.steps
    );
    for path in &args.config {
        let cfg = ConfigFile::read(path)?;
        let params: Stage2Params = serde_json::from_value(cfg.json.clone())
            .with_context(|| format!("{}: invalid stage-2 parameters", path.display()))?;
        tch::manual_seed(0);
        let vs = VarStore::new(device);
        let net = AvDetector::new(vs.root(), &params.model);
        let mut opt = AdamW::new(
            Stage2Task::groups(&vs, params.backbone_lr_scale),
            params.recipe.weight_decay,
        );
        let v = &params.model.visual_backbone;
        let b = args.batch;
        let mel = Tensor::randn([b, 128, params.model.audio.t_pad], (Kind::Float, device));
        let clip = Tensor::randn(
            [b, v.n_frames, 3, v.img_size, v.img_size],
            (Kind::Float, device),
        );
        // Evenly spaced frames over the 3.2 s window (the time-aligned
        // A2V mode reads them; their values do not change the step's cost).
        let times = (Tensor::arange(v.n_frames, (Kind::Float, device)) * (3.2 / v.n_frames as f64))
            .unsqueeze(0)
            .repeat([b, 1]);
        let y = Tensor::from_slice(&[0f32, 1.0])
            .repeat([b / 2 + 1])
            .narrow(0, 0, b)
            .to_device(device);
        let use_amp = params.recipe.amp && device.is_cuda();
        let mut step = || {
            opt.zero_grad();
            let loss = autocast_bf16(use_amp, || {
                let o = net.forward(&mel, &clip, Some(&times), true, false);
                losses::bce_with_logits(&o.logit_final.to_kind(Kind::Float), &y)
                    + losses::align_repel(
                        &o.mismatch_mse.to_kind(Kind::Float),
                        &y,
                        params.margin_align,
                    ) * params.lambda_align
            });
            loss.backward();
            if let Some(c) = params.recipe.clip_norm {
                opt.clip_grad_norm(c);
            }
            opt.step(params.recipe.lr);
            loss.double_value(&[])
        };
        step();
        let start = Instant::now();
        for _ in 0..args.steps {
            step();
        }
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / args.steps.max(1) as f64;
        println!(
            "{}: {ms:.1} ms/step, peak RSS {:.0} MiB",
            path.display(),
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
