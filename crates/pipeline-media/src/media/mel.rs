//! The reference log-mel element: torchaudio's `MelSpectrogram` semantics
//! (n_fft 512, a 256-sample periodic Hamming window centred in the frame, hop
//! 64, centre padding by reflection, power 2, 128 HTK-scale bands from 0 to
//! 8 kHz with Slaney area normalisation), then `log(x + 1e-6)`, padding or
//! cropping to 768 frames and a z-score over the whole clip.
//!
//! Spectra are computed in `f64`; the reference runs in `f32`, so the two agree
//! to float32 rounding (the golden tests pin the tolerance).

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// Audio sample rate of every element.
pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 512;
pub const WIN_LENGTH: usize = 256;
pub const HOP: usize = 64;
pub const N_MELS: usize = 128;
/// Mel frames kept per element (3.072 s of the 3.2 s window).
pub const N_FRAMES: usize = 768;
const F_MIN: f64 = 0.0;
const F_MAX: f64 = 8000.0;
const LOG_EPS: f32 = 1e-6;
const STD_EPS: f32 = 1e-6;

/// A reusable mel-spectrogram computer (window, filter bank, FFT plan).
pub struct MelSpectrogram {
    window: Vec<f64>,
    /// Per band: the first FFT bin with a non-zero weight and the weights.
    bands: Vec<(usize, Vec<f64>)>,
    fft: Arc<dyn Fft<f64>>,
}

impl Default for MelSpectrogram {
    fn default() -> Self {
        Self::new()
    }
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

impl MelSpectrogram {
    pub fn new() -> Self {
        // torch.hamming_window(256, periodic=True), zero-padded to n_fft with
        // the window centred (torch.stft's left offset (n_fft - win) / 2).
        let mut window = vec![0.0; N_FFT];
        let left = (N_FFT - WIN_LENGTH) / 2;
        for i in 0..WIN_LENGTH {
            window[left + i] =
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / WIN_LENGTH as f64).cos();
        }
        // torchaudio.functional.melscale_fbanks(norm="slaney", mel_scale="htk").
        let n_freqs = N_FFT / 2 + 1;
        let nyquist = f64::from(SAMPLE_RATE / 2);
        let freqs: Vec<f64> = (0..n_freqs)
            .map(|i| nyquist * i as f64 / (n_freqs - 1) as f64)
            .collect();
        let (m_min, m_max) = (hz_to_mel(F_MIN), hz_to_mel(F_MAX));
        let f_pts: Vec<f64> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(m_min + (m_max - m_min) * i as f64 / (N_MELS + 1) as f64))
            .collect();
        let bands = (0..N_MELS)
            .map(|m| {
                let (lo, mid, hi) = (f_pts[m], f_pts[m + 1], f_pts[m + 2]);
                let enorm = 2.0 / (hi - lo);
                let w: Vec<f64> = freqs
                    .iter()
                    .map(|&f| {
                        let down = (f - lo) / (mid - lo);
                        let up = (hi - f) / (hi - mid);
                        down.min(up).max(0.0) * enorm
                    })
                    .collect();
                let first = w.iter().position(|&x| x > 0.0).unwrap_or(0);
                let last = w.iter().rposition(|&x| x > 0.0).map_or(first, |l| l + 1);
                (first, w[first..last].to_vec())
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(N_FFT);
        MelSpectrogram { window, bands, fft }
    }

    /// Frames of a centred STFT over `n` samples.
    pub fn frames_for(n: usize) -> usize {
        1 + n / HOP
    }

    /// The power mel spectrogram `[N_MELS, T]` (row-major), `T = 1 + len/HOP`.
    pub fn power_mel(&self, wav: &[f32]) -> Vec<f32> {
        let t = Self::frames_for(wav.len());
        let pad = N_FFT / 2;
        let n = wav.len() as isize;
        // Reflection without repeating the edge sample (torch's "reflect").
        let sample = |i: isize| -> f64 {
            if n == 1 {
                return f64::from(wav[0]);
            }
            let period = 2 * (n - 1);
            let mut j = i.rem_euclid(period);
            if j >= n {
                j = period - j;
            }
            f64::from(wav[j as usize])
        };
        let n_freqs = N_FFT / 2 + 1;
        let mut out = vec![0f32; N_MELS * t];
        let mut buf = vec![Complex::new(0.0, 0.0); N_FFT];
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0f64; n_freqs];
        for f in 0..t {
            let start = (f * HOP) as isize - pad as isize;
            for (k, b) in buf.iter_mut().enumerate() {
                let w = self.window[k];
                *b = Complex::new(
                    if w == 0.0 {
                        0.0
                    } else {
                        sample(start + k as isize) * w
                    },
                    0.0,
                );
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, c) in power.iter_mut().zip(&buf) {
                *p = c.norm_sqr();
            }
            for (m, (first, w)) in self.bands.iter().enumerate() {
                let v: f64 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                out[m * t + f] = v as f32;
            }
        }
        out
    }

    /// The element `[N_MELS, N_FRAMES]`: log power mel, zero-padded or cropped
    /// to `N_FRAMES` frames, z-scored over the whole clip.
    pub fn log_mel_element(&self, wav: &[f32]) -> Vec<f32> {
        let t = Self::frames_for(wav.len());
        let power = self.power_mel(wav);
        let mut out = vec![0f32; N_MELS * N_FRAMES];
        let keep = t.min(N_FRAMES);
        for m in 0..N_MELS {
            for f in 0..keep {
                out[m * N_FRAMES + f] = (power[m * t + f] + LOG_EPS).ln();
            }
        }
        zscore(&mut out);
        out
    }
}

/// `(x - mean) / (std + 1e-6)` with Bessel's correction, accumulated in f64.
pub fn zscore(x: &mut [f32]) {
    let n = x.len() as f64;
    if x.len() < 2 {
        return;
    }
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    let denom = var.sqrt() as f32 + STD_EPS;
    let mean = mean as f32;
    for v in x.iter_mut() {
        *v = (*v - mean) / denom;
    }
}

/// The 3.2 s audio window of an element: `[start_sample, +51200)`, zero-padded
/// at the end when the audio is shorter.
pub fn window_samples(audio: &[f32], start_sample: usize, len: usize) -> Vec<f32> {
    let mut w = vec![0f32; len];
    if start_sample < audio.len() {
        let n = (audio.len() - start_sample).min(len);
        w[..n].copy_from_slice(&audio[start_sample..start_sample + n]);
    }
    w
}
