//! A built-in speaker embedding for choosing voice-conversion references:
//! mean and standard deviation of 20 MFCCs over the voiced frames of 16 kHz
//! audio, compared by cosine similarity. (The reference uses speechbrain's
//! ECAPA; a site can bring its own by pointing the seedvc stage elsewhere.)

use super::mel::{MelSpectrogram, N_MELS};

const N_MFCC: usize = 20;

/// The embedding of 16 kHz mono audio (`2 * 20` values).
pub fn speaker_embedding(mel: &MelSpectrogram, wav16k: &[f32]) -> Vec<f32> {
    let power = mel.power_mel(wav16k);
    let t = power.len() / N_MELS;
    if t == 0 {
        return vec![0.0; 2 * N_MFCC];
    }
    let energy: Vec<f64> = (0..t)
        .map(|f| (0..N_MELS).map(|m| f64::from(power[m * t + f])).sum())
        .collect();
    let loud = energy.iter().cloned().fold(0.0, f64::max) * 0.05;
    let mut sum = [0f64; N_MFCC];
    let mut sq = [0f64; N_MFCC];
    let mut n = 0f64;
    let mut logmel = [0f64; N_MELS];
    for f in (0..t).filter(|&f| energy[f] > loud) {
        for (m, l) in logmel.iter_mut().enumerate() {
            *l = (f64::from(power[m * t + f]) + 1e-10).ln();
        }
        for k in 0..N_MFCC {
            let c: f64 = logmel
                .iter()
                .enumerate()
                .map(|(m, l)| {
                    l * (std::f64::consts::PI * k as f64 * (m as f64 + 0.5) / N_MELS as f64).cos()
                })
                .sum();
            sum[k] += c;
            sq[k] += c * c;
        }
        n += 1.0;
    }
    if n == 0.0 {
        return vec![0.0; 2 * N_MFCC];
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std: Vec<f64> = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
        .collect();
    // Skip c0 (loudness) so the level of a recording does not decide.
    let mut out: Vec<f32> = mean[1..].iter().map(|&x| x as f32).collect();
    out.push(0.0);
    out.extend(std.iter().map(|&x| x as f32));
    out
}

/// Cosine similarity of two embeddings (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
