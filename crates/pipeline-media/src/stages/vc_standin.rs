//! `pipeline vc-standin`: the demo's stand-in for Seed-VC. It takes Seed-VC
//! v2's command line and writes its output the way Seed-VC does
//! (`vc_v2_<src>_<ref>_<length>_<steps>_<cfg>.wav` at 22.05 kHz, names cut at
//! the first dot), so the seedvc stage exercises the same subprocess path as
//! with the real converter.
//!
//! The conversion keeps the source's timing (its frame-by-frame loudness and
//! articulation, so lips stay in sync) and takes the reference's voice (its
//! median pitch), with the subtle artifacts of a re-synthesis: a
//! harmonic-plus-noise model of the source, analysed every 10 ms, whose
//! partials are re-synthesised at the new pitch with their amplitudes
//! smoothed over 30 ms and their pitch median-filtered (no jitter), and whose
//! noise is drawn afresh every 20 ms.

use std::f64::consts::TAU;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::media::decode::decode_audio_mono;
use crate::media::wav::write_pcm16;

/// Seed-VC's output rate.
pub const OUTPUT_RATE: u32 = 22_050;
const HOP: usize = 220;
const WIN: usize = 882;

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
    /// Seed-VC's diffusion steps (part of the output's name; the stand-in does not diffuse).
    #[arg(long, default_value_t = 25)]
    pub diffusion_steps: u32,
    /// Seed-VC's length factor, positive (part of the output's name; the stand-in keeps the length).
    #[arg(long, default_value_t = 1.0)]
    pub length_adjust: f64,
    /// Seed-VC v2's intelligibility guidance (accepted and unused by the stand-in).
    #[arg(long, default_value_t = 0.7)]
    pub intelligibility_cfg_rate: f64,
    /// Seed-VC v2's similarity guidance (part of the output's name).
    #[arg(long, default_value_t = 0.7)]
    pub similarity_cfg_rate: f64,
    /// Seed-VC v2's sampling top-p (accepted and unused by the stand-in).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Seed-VC v2's sampling temperature (accepted and unused by the stand-in).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Seed-VC v2's repetition penalty (accepted and unused by the stand-in).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Seed-VC v2's style conversion, true or false (accepted and unused by the stand-in).
    #[arg(long, default_value = "false")]
    pub convert_style: String,
    /// Seed-VC v2's anonymisation, true or false (accepted and unused by the stand-in).
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

/// A three-tap smoothing over frames, `[1, 2, 1] / 4`, ends held.
fn smooth3(v: &[f64]) -> Vec<f64> {
    (0..v.len())
        .map(|i| {
            let a = v[i.saturating_sub(1)];
            let c = v[(i + 1).min(v.len() - 1)];
            0.25 * a + 0.5 * v[i] + 0.25 * c
        })
        .collect()
}

/// The most harmonics synthesised.
const MAX_HARMONICS: usize = 60;
/// The analysis FFT's length (the 40 ms frame, zero-padded).
const NFFT: usize = 2048;
/// A partial counts as one when its peak stands this far (10 dB) above the
/// noise between partials; weaker peaks are the noise's own fluctuations.
const PARTIAL_TEST: f64 = 10.0;

/// The power spectrum of a Hann-windowed frame, `NFFT / 2 + 1` bins.
fn power_spectrum(frame: &[f32], fft: &dyn Fft<f64>) -> Vec<f64> {
    let n = frame.len();
    let mut buf: Vec<Complex<f64>> = (0..NFFT)
        .map(|i| {
            let x = if i < n {
                f64::from(frame[i]) * (0.5 - 0.5 * (TAU * i as f64 / n as f64).cos())
            } else {
                0.0
            };
            Complex::new(x, 0.0)
        })
        .collect();
    fft.process(&mut buf);
    buf[..=NFFT / 2].iter().map(|c| c.norm_sqr()).collect()
}

/// The spectrum at `hz`, linearly between bins.
fn at_hz(spec: &[f64], hz: f64) -> f64 {
    let x = (hz / f64::from(OUTPUT_RATE) * NFFT as f64).clamp(0.0, (spec.len() - 1) as f64);
    let (k, t) = (x.floor() as usize, x.fract());
    let j = (k + 1).min(spec.len() - 1);
    spec[k] + (spec[j] - spec[k]) * t
}

/// A curve of `(hz, value)` points read at `hz`: linear, ends held.
fn curve_at(curve: &[(f64, f64)], hz: f64) -> f64 {
    match curve.iter().position(|&(f, _)| f >= hz) {
        None => curve.last().map_or(0.0, |c| c.1),
        Some(0) => curve[0].1,
        Some(i) => {
            let ((f1, v1), (f2, v2)) = (curve[i - 1], curve[i]);
            v1 + (v2 - v1) * (hz - f1) / (f2 - f1)
        }
    }
}

/// One analysed frame: the power of each partial and the noise's power
/// density, both as curves over frequency.
struct Frame {
    /// `(hz, partial power above the noise)`; empty when unvoiced.
    partials: Vec<(f64, f64)>,
    /// `(hz, noise power per FFT bin)`.
    noise: Vec<(f64, f64)>,
}

/// A harmonic-plus-noise analysis of one frame's power spectrum at pitch
/// `f0` (None: unvoiced). A partial's power is its peak above the valleys
/// halfway to its neighbours, and the valleys are the noise. Speech is
/// harmonic at low frequencies and noisy above; a converter that makes every
/// band harmonic costs an AAC encoder more bits than real speech does (it
/// codes noise as noise), and the shortcut audit's bit rate found it out.
fn analyse(spec: &[f64], f0: Option<f64>) -> Frame {
    let nyquist = 0.5 * f64::from(OUTPUT_RATE);
    let Some(f0) = f0 else {
        // Unvoiced: the spectrum itself, averaged over 200 Hz bands.
        let noise = (0..)
            .map(|b| 100.0 + 200.0 * f64::from(b))
            .take_while(|hz| *hz < nyquist)
            .map(|hz| {
                let pts: Vec<f64> = (-4..=4)
                    .map(|d| at_hz(spec, hz + 25.0 * f64::from(d)))
                    .collect();
                (hz, pts.iter().sum::<f64>() / pts.len() as f64)
            })
            .collect();
        return Frame {
            partials: Vec::new(),
            noise,
        };
    };
    let (mut partials, mut noise) = (Vec::new(), Vec::new());
    let mut h = 1.0;
    while (h + 0.5) * f0 < nyquist {
        let peak = at_hz(spec, h * f0);
        let valley = 0.5 * (at_hz(spec, (h - 0.5) * f0) + at_hz(spec, (h + 0.5) * f0));
        if peak < PARTIAL_TEST * valley {
            partials.push((h * f0, 0.0));
            noise.push((h * f0, (peak + 2.0 * valley) / 3.0));
            h += 1.0;
            continue;
        }
        partials.push((h * f0, (peak - valley).max(0.0)));
        noise.push((h * f0, valley.min(peak)));
        h += 1.0;
    }
    Frame { partials, noise }
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
    // The source's pitch per frame (Hz), median-filtered over five frames.
    let src_f0: Vec<Option<f64>> = (0..frames)
        .map(|f| {
            src_pitch[f]?;
            let (lo, hi) = (f.saturating_sub(2), (f + 3).min(frames));
            median(src_pitch[lo..hi].iter().flatten().map(|p| sr / p).collect())
        })
        .collect();
    // The new pitch: the source's intonation relative to its own median,
    // carried at the reference's median; unvoiced frames hold the nearest
    // voiced value, so the phase runs on smoothly.
    let shift = src_median.map_or(1.0, |m| m / ref_median);
    let mut f0 = vec![sr / ref_median; frames];
    let mut last = sr / ref_median;
    for (v, s) in f0.iter_mut().zip(&src_f0) {
        if let Some(s) = s {
            last = s * shift;
        }
        *v = last;
    }
    let mut planner = FftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(NFFT);
    let analysed: Vec<Frame> = (0..frames)
        .map(|f| {
            let spec = power_spectrum(&frame_at(source, f * HOP + HOP / 2), fft.as_ref());
            analyse(&spec, src_f0[f])
        })
        .collect();
    // A partial of amplitude A peaks at (A WIN / 4)^2 under the Hann window;
    // white noise of variance s^2 gives s^2 * 3 WIN / 8 per bin.
    let partial_amp = 4.0 / WIN as f64;
    let noise_var = 8.0 / (3.0 * WIN as f64);
    // Each partial of the new voice takes the source's partial power at its
    // frequency (the formants stay where the source has them).
    let mut amps: Vec<Vec<f64>> = (0..frames)
        .map(|f| {
            let n = ((0.45 * sr / f0[f]) as usize).clamp(1, MAX_HARMONICS);
            (1..=MAX_HARMONICS)
                .map(|h| {
                    let p = &analysed[f].partials;
                    if h > n || p.is_empty() {
                        0.0
                    } else {
                        partial_amp * curve_at(p, f0[f] * h as f64 * shift.recip()).sqrt()
                    }
                })
                .collect()
        })
        .collect();
    // Smooth each partial's amplitude over frames.
    for h in 0..MAX_HARMONICS {
        let track: Vec<f64> = amps.iter().map(|a| a[h]).collect();
        for (a, v) in amps.iter_mut().zip(smooth3(&track)) {
            a[h] = v;
        }
    }
    let mut out = vec![0f64; source.len()];
    let mut phase = 0.0f64;
    for (i, o) in out.iter_mut().enumerate() {
        let u = ((i as f64 - (HOP / 2) as f64) / HOP as f64).clamp(0.0, (frames - 1) as f64);
        let (f, t) = (u.floor() as usize, u.fract());
        let g = (f + 1).min(frames - 1);
        phase = (phase + (f0[f] + (f0[g] - f0[f]) * t) / sr).fract();
        let mut y = 0.0;
        for (h, (a0, a1)) in amps[f].iter().zip(&amps[g]).enumerate() {
            let a = a0 + (a1 - a0) * t;
            if a > 0.0 {
                y += a * (TAU * (h + 1) as f64 * phase).sin();
            }
        }
        *o = y;
    }
    // The noise: white noise shaped, 20 ms at a time, to the source's noise
    // density, overlap-added under a sine window (whose squares sum to one,
    // so the noise keeps its power).
    let seg = 2 * HOP;
    let fwd = planner.plan_fft_forward(seg);
    let inv = planner.plan_fft_inverse(seg);
    let window: Vec<f64> = (0..seg)
        .map(|i| (std::f64::consts::PI * (i as f64 + 0.5) / seg as f64).sin())
        .collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut white = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Uniform on [-0.5, 0.5): variance 1/12.
        ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 12f64.sqrt()
    };
    for (f, frame) in analysed.iter().enumerate() {
        let mut buf: Vec<Complex<f64>> = (0..seg).map(|_| Complex::new(white(), 0.0)).collect();
        fwd.process(&mut buf);
        for (k, c) in buf.iter_mut().enumerate() {
            let hz = sr * k.min(seg - k) as f64 / seg as f64;
            *c *= (noise_var * curve_at(&frame.noise, hz)).sqrt() / seg as f64;
        }
        inv.process(&mut buf);
        let start = (f * HOP + HOP / 2) as isize - HOP as isize;
        for (i, c) in buf.iter().enumerate() {
            let j = start + i as isize;
            if j >= 0 && (j as usize) < out.len() {
                out[j as usize] += c.re * window[i];
            }
        }
    }
    let mut out: Vec<f32> = out.into_iter().map(|v| v as f32).collect();
    let peak = out.iter().fold(0f32, |m, v| m.max(v.abs()));
    if peak > 0.99 {
        out.iter_mut().for_each(|v| *v *= 0.99 / peak);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(f0: f64, seconds: f64, amp: f64, noise: f64) -> Vec<f32> {
        let sr = f64::from(OUTPUT_RATE);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..(seconds * sr) as usize)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let n = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let t = i as f64 / sr;
                let y: f64 = (1..=20)
                    .map(|h| (TAU * f0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (amp * y + noise * n) as f32
            })
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn spectrum_of(x: &[f32]) -> Vec<f64> {
        let fft = FftPlanner::<f64>::new().plan_fft_forward(NFFT);
        power_spectrum(&frame_at(x, x.len() / 2), fft.as_ref())
    }

    #[test]
    fn partials_are_told_from_noise() {
        let clean = analyse(&spectrum_of(&tone(150.0, 0.2, 0.1, 0.0)), Some(150.0));
        assert!(
            clean.partials[..10].iter().all(|p| p.1 > 0.0),
            "the first ten partials of a clean tone: {:?}",
            &clean.partials[..10]
        );
        // Noise alone, read as if voiced: its own peaks rarely pass.
        let noise = analyse(&spectrum_of(&tone(150.0, 0.2, 0.0, 1.0)), Some(150.0));
        let passed = noise.partials.iter().filter(|p| p.1 > 0.0).count();
        assert!(
            passed <= 3,
            "{passed} of {} partials passed in noise",
            noise.partials.len()
        );
    }

    #[test]
    fn the_conversion_keeps_the_level_and_takes_the_reference_pitch() {
        let source = tone(120.0, 1.0, 0.1, 0.01);
        let reference = tone(200.0, 1.0, 0.1, 0.01);
        let out = convert(&source, &reference);
        assert_eq!(out.len(), source.len());
        let db = 20.0 * (rms(&out) / rms(&source)).log10();
        assert!(db.abs() < 1.0, "level changed by {db:.2} dB");
        let periods: Vec<f64> = (10..80)
            .filter_map(|f| pitch(&frame_at(&out, f * HOP)))
            .collect();
        let hz = f64::from(OUTPUT_RATE) / median(periods).expect("voiced output");
        assert!((hz - 200.0).abs() < 10.0, "output pitch {hz:.1} Hz");
    }
}
