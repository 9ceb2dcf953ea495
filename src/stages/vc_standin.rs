//! `pipeline vc-standin`: the demo's stand-in for Seed-VC. It takes Seed-VC
//! v2's command line and writes its output the way Seed-VC does
//! (`vc_v2_<src>_<ref>_<length>_<steps>_<cfg>.wav` at 22.05 kHz, names cut at
//! the first dot), so the seedvc stage exercises the same subprocess path as
//! with the real converter.
//!
//! The conversion keeps the source's timing (its frame-by-frame loudness and
//! articulation, so lips stay in sync) and takes the reference's voice (its
//! median pitch), with the subtle artifacts of a re-synthesis: each 10 ms
//! frame is an all-pole (LPC) filter of the source excited by a fresh
//! harmonic source at the new pitch, switched at frame boundaries, its gain
//! gliding from frame to frame.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::media::decode::decode_audio_mono;
use crate::media::wav::write_pcm16;

/// Seed-VC's output rate.
pub const OUTPUT_RATE: u32 = 22_050;
const HOP: usize = 220;
const WIN: usize = 882;
const ORDER: usize = 18;

/// The arguments of Seed-VC v2's `inference_v2.py` (the ones after
/// `--output` only shape the output name, as in Seed-VC).
#[derive(clap::Args, Debug, Clone)]
pub struct VcStandinArgs {
    /// Source speech (its timing and content are kept).
    #[arg(long)]
    pub source: PathBuf,
    /// Reference speech (its voice is taken).
    #[arg(long)]
    pub target: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 25)]
    pub diffusion_steps: u32,
    #[arg(long, default_value_t = 1.0)]
    pub length_adjust: f64,
    #[arg(long, default_value_t = 0.7)]
    pub intelligibility_cfg_rate: f64,
    #[arg(long, default_value_t = 0.7)]
    pub similarity_cfg_rate: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    #[arg(long, default_value = "false")]
    pub convert_style: String,
    #[arg(long, default_value = "false")]
    pub anonymization_only: String,
}

/// A float as Python's `str()` writes it (`1.0`, `0.7`), for Seed-VC's names.
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// The file name before its first dot, as Seed-VC cuts it.
pub fn seedvc_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_string()
}

/// Runs the stand-in converter; prints the output path.
pub fn run(args: VcStandinArgs) -> Result<()> {
    let source = decode_audio_mono(&args.source, OUTPUT_RATE).with_context(|| {
        format!(
            "vc-standin: cannot read the source {}",
            args.source.display()
        )
    })?;
    let target = decode_audio_mono(&args.target, OUTPUT_RATE).with_context(|| {
        format!(
            "vc-standin: cannot read the reference {}",
            args.target.display()
        )
    })?;
    if args.length_adjust <= 0.0 {
        bail!("vc-standin: --length-adjust must be positive");
    }
    let out = convert(&source, &target);
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let path = args.output.join(format!(
        "vc_v2_{}_{}_{}_{}_{}.wav",
        seedvc_stem(&args.source),
        seedvc_stem(&args.target),
        py_float(args.length_adjust),
        args.diffusion_steps,
        py_float(args.similarity_cfg_rate)
    ));
    write_pcm16(&path, &out, OUTPUT_RATE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

/// The pitch period of a frame (samples at 22.05 kHz) when it is voiced.
fn pitch(frame: &[f32]) -> Option<f64> {
    // Work at half rate: a pitch of 60..400 Hz needs no more.
    let x: Vec<f64> = frame
        .chunks_exact(2)
        .map(|c| f64::from(c[0] + c[1]) * 0.5)
        .collect();
    let sr = f64::from(OUTPUT_RATE) / 2.0;
    let (lo, hi) = ((sr / 400.0) as usize, (sr / 60.0) as usize);
    let e0: f64 = x.iter().map(|v| v * v).sum();
    if e0 <= 1e-8 || hi >= x.len() {
        return None;
    }
    let (mut best, mut lag) = (0.0, 0);
    for l in lo..=hi {
        let r: f64 = x[..x.len() - l]
            .iter()
            .zip(&x[l..])
            .map(|(a, b)| a * b)
            .sum();
        if r > best {
            best = r;
            lag = l;
        }
    }
    (best / e0 > 0.35).then_some(2.0 * lag as f64)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// LPC coefficients of a windowed frame (Levinson-Durbin).
fn lpc(frame: &[f32]) -> [f64; ORDER + 1] {
    let n = frame.len();
    let w: Vec<f64> = frame
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            f64::from(x) * (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
        })
        .collect();
    let mut r = [0f64; ORDER + 1];
    for (k, rk) in r.iter_mut().enumerate() {
        *rk = w[..n - k].iter().zip(&w[k..]).map(|(a, b)| a * b).sum();
    }
    r[0] *= 1.0 + 1e-6;
    let mut a = [0f64; ORDER + 1];
    a[0] = 1.0;
    let mut err = r[0];
    if err <= 1e-12 {
        return a;
    }
    for i in 1..=ORDER {
        let acc: f64 = (1..i).map(|j| a[j] * r[i - j]).sum::<f64>() + r[i];
        let k = -acc / err;
        let prev = a;
        for j in 1..i {
            a[j] = prev[j] + k * prev[i - j];
        }
        a[i] = k;
        err *= 1.0 - k * k;
        if err <= 1e-12 {
            break;
        }
    }
    a
}

fn frame_at(x: &[f32], centre: usize) -> Vec<f32> {
    (0..WIN)
        .map(|i| {
            let j = centre as isize + i as isize - (WIN / 2) as isize;
            if j >= 0 && (j as usize) < x.len() {
                x[j as usize]
            } else {
                0.0
            }
        })
        .collect()
}

fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Re-synthesises `source` with the voice (median pitch) of `reference`.
pub fn convert(source: &[f32], reference: &[f32]) -> Vec<f32> {
    let frames = source.len().div_ceil(HOP);
    let src_pitch: Vec<Option<f64>> = (0..frames)
        .map(|f| pitch(&frame_at(source, f * HOP + HOP / 2)))
        .collect();
    let ref_periods: Vec<f64> = (0..reference.len().div_ceil(HOP))
        .step_by(3)
        .filter_map(|f| pitch(&frame_at(reference, f * HOP + HOP / 2)))
        .collect();
    let src_median = median(src_pitch.iter().flatten().copied().collect());
    // Pitch periods in samples; 150 Hz when neither side is voiced anywhere.
    let ref_median = median(ref_periods)
        .or(src_median)
        .unwrap_or(f64::from(OUTPUT_RATE) / 150.0);
    let sr = f64::from(OUTPUT_RATE);
    let mut out = vec![0f32; source.len()];
    let mut mem = [0f64; ORDER];
    let mut phase = 0.0f64;
    let mut noise = 0x2545_F491_4F6C_DD1Du64;
    let mut last_gain: Option<f64> = None;
    for (f, &period) in src_pitch.iter().enumerate() {
        let a = lpc(&frame_at(source, f * HOP + HOP / 2));
        // Keep the source's intonation relative to its own median.
        let f0 = match (period, src_median) {
            (Some(p), Some(m)) => sr / (ref_median * p / m),
            _ => sr / ref_median,
        };
        let voiced = period.is_some();
        let start = f * HOP;
        let end = (start + HOP).min(source.len());
        let mut seg = vec![0f64; end - start];
        for s in seg.iter_mut() {
            phase = (phase + f0 / sr).fract();
            let harmonics = ((0.45 * sr / f0) as usize).clamp(1, 60);
            let mut e = 0.0;
            if voiced {
                for h in 1..=harmonics {
                    e += (2.0 * std::f64::consts::PI * h as f64 * phase).sin();
                }
                e /= (harmonics as f64).sqrt();
            }
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            e +=
                ((noise >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * if voiced { 0.1 } else { 1.0 };
            let y = e - (0..ORDER).map(|j| a[j + 1] * mem[j]).sum::<f64>();
            mem.rotate_right(1);
            mem[0] = y.clamp(-1e3, 1e3);
            *s = mem[0];
        }
        // Match the source's loudness frame by frame: the timing is the
        // source's. The gain glides from the last frame's, so the frame
        // boundaries do not click (clicks made the files' AAC bit rate alone
        // tell them apart: the shortcut audit's finding).
        let seg32: Vec<f32> = seg.iter().map(|&v| v as f32).collect();
        let gain = rms(&source[start..end]) / rms(&seg32).max(1e-9);
        let from = last_gain.unwrap_or(gain);
        let len = seg.len().max(1) as f64;
        for (i, (o, v)) in out[start..end].iter_mut().zip(&seg).enumerate() {
            let g = from + (gain - from) * (i as f64 + 1.0) / len;
            *o = (v * g) as f32;
        }
        last_gain = Some(gain);
    }
    let peak = out.iter().fold(0f32, |m, v| m.max(v.abs()));
    if peak > 0.99 {
        out.iter_mut().for_each(|v| *v *= 0.99 / peak);
    }
    out
}
