//! The log-mel element and the 16-frame sampler against the reference: the
//! golden files of `../shared/golden/` where they exist, and an independent
//! torch oracle (`tests/oracles/mel_reference.py`) run in the torch venv.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline_media::media::frames::{choose_window, sample_16_quartile};
use pipeline_media::media::mel::{window_samples, MelSpectrogram, N_FRAMES, N_MELS};
use safetensors::SafeTensors;

fn golden(name: &str) -> Option<PathBuf> {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("../shared/golden")
        .join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: golden file {} is not present", p.display());
        None
    }
}

/// The known 4 s signal of `mel_and_frames.json`, computed in f64 then f32.
fn signal() -> Vec<f32> {
    (0..64_000)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let pi2 = 2.0 * std::f64::consts::PI;
            (0.5 * (pi2 * (200.0 * t + 350.0 * t * t)).sin() * (0.6 + 0.4 * (pi2 * 4.0 * t).sin())
                + 0.1 * (pi2 * 440.0 * t).sin()) as f32
        })
        .collect()
}

fn element(wav: &[f32], start_sec: f64) -> Vec<f32> {
    let w = window_samples(wav, (start_sec * 16_000.0) as usize, 51_200);
    MelSpectrogram::new().log_mel_element(&w)
}

fn tensors(bytes: &[u8]) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let st = SafeTensors::deserialize(bytes).expect("a safetensors file");
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Max of |a-b| / |b| over the elements whose |b| is at least `floor` times
/// the peak, and max |a-b| / peak over all. The reference's float32 STFT
/// carries rounding noise of a few 1e-6 of the peak in every bin (the torch
/// oracle shows the same against its own float64 result), so bins with almost
/// no energy are held to the peak-relative bound only.
fn max_rel_diff(a: &[f32], b: &[f32], floor: f64) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let peak = b.iter().fold(0f32, |m, &x| m.max(x.abs())) as f64;
    let (mut rel, mut abs) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = (f64::from(x) - f64::from(y)).abs();
        abs = abs.max(d / peak);
        if f64::from(y).abs() >= floor * peak {
            rel = rel.max(d / f64::from(y).abs());
        }
    }
    (rel, abs)
}

fn check_against(refs: &HashMap<String, (Vec<usize>, Vec<f32>)>, source: &str) {
    let wav = signal();
    let mel = MelSpectrogram::new();
    let mut checked = 0;
    if let Some((shape, power_ref)) = refs.get("power_mel_raw") {
        let ours = mel.power_mel(&wav[8000..59_200]);
        assert_eq!(
            shape,
            &vec![N_MELS, ours.len() / N_MELS],
            "{source}: power mel shape"
        );
        let (rel, of_peak) = max_rel_diff(&ours, power_ref, 1e-3);
        println!(
            "{source}: power mel max relative difference {rel:.3e} (bins above 1e-3 of the peak), \
             max difference {of_peak:.3e} of the peak"
        );
        assert!(
            rel < 1e-4 && of_peak < 1e-4,
            "{source}: power mel off by {rel} relative, {of_peak} of the peak"
        );
        checked += 1;
    }
    for (name, input) in [
        ("mel_start0p5", &wav[..]),
        ("mel_short_input", &wav[..32_000]),
    ] {
        if let Some((shape, r)) = refs.get(name) {
            assert_eq!(shape, &vec![N_MELS, N_FRAMES], "{source}: {name} shape");
            let d = max_abs_diff(&element(input, 0.5), r);
            println!("{source}: {name} max abs difference {d:.3e}");
            assert!(d < 1e-3, "{source}: {name} off by {d}");
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        3,
        "{source}: expected power_mel_raw, mel_start0p5, mel_short_input; found {:?}",
        refs.keys().collect::<Vec<_>>()
    );
}

#[test]
fn mel_matches_the_golden_reference() {
    let Some(path) = golden("mel_io.safetensors") else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    check_against(&tensors(&bytes), "golden");
}

/// The torch venv `scripts/setup.sh` makes, or `PIPELINE_TORCH_VENV`.
fn torch_python() -> Option<PathBuf> {
    let venv = std::env::var_os("PIPELINE_TORCH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("PIPELINE_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                        .map(|c| c.join("avdfd-pipeline"))
                })?;
            Some(cache.join("torch-2.11.0"))
        })?;
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

#[test]
fn mel_matches_the_torch_oracle() {
    let Some(py) = torch_python() else {
        eprintln!(
            "SKIPPED: no python with torch (set PIPELINE_TORCH_VENV or run scripts/setup.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mel_oracle.safetensors");
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/oracles/mel_reference.py");
    let run = Command::new(&py).arg(&script).arg(&out).output().unwrap();
    assert!(
        run.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let refs = tensors(&bytes);
    // The oracle's signal is the same formula; a mismatch here means the two
    // sides test different inputs, not a wrong mel.
    let d = max_abs_diff(&signal(), &refs["signal"].1);
    assert!(d < 1e-6, "signal differs by {d}");
    check_against(&refs, "torch oracle");
    // Against the float64 reference the port is exact to float32 output rounding.
    let ours = MelSpectrogram::new().power_mel(&signal()[8000..59_200]);
    let (rel, _) = max_rel_diff(&ours, &refs["power_mel_raw_f64"].1, 1e-6);
    println!("torch oracle (float64): power mel max relative difference {rel:.3e} (bins above 1e-6 of the peak)");
    assert!(
        rel < 1e-5,
        "power mel off the float64 reference by {rel} relative"
    );
}

#[test]
fn frame_indices_match_the_golden_reference_exactly() {
    let Some(path) = golden("mel_and_frames.json") else {
        return;
    };
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let examples = json["frame_index_examples"]["L_to_indices"]
        .as_object()
        .unwrap();
    assert!(examples.len() >= 5);
    for (len, want) in examples {
        let len: usize = len.parse().unwrap();
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        // The golden windows lie inside a long video: no clamping applies.
        let got = sample_16_quartile(10, len, usize::MAX);
        assert_eq!(got.to_vec(), want, "L = {len}");
    }
}

#[test]
fn short_videos_clamp_indices_to_their_last_frame() {
    // A 5-frame video: the reference would read frames 5..7 that do not exist.
    let w = choose_window(5, 25.0, 3.2, 0.7);
    assert_eq!((w.start_frame, w.len), (0, 5));
    let idx = sample_16_quartile(w.start_frame, w.len, 4);
    assert_eq!(idx, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4]);
}

#[test]
fn windows_start_uniformly_and_stay_inside_the_video() {
    let first = choose_window(250, 25.0, 3.2, 0.0);
    assert_eq!((first.start_frame, first.len), (0, 80));
    let last = choose_window(250, 25.0, 3.2, 0.999_999);
    assert_eq!((last.start_frame, last.len), (170, 80));
    assert!((last.start_sec - 6.8).abs() < 1e-9);
}

#[test]
fn a_silent_short_window_is_zero_padded_and_finite() {
    let m = element(&[0.0; 100], 0.0);
    assert_eq!(m.len(), N_MELS * N_FRAMES);
    assert!(m.iter().all(|v| v.is_finite()));
}
