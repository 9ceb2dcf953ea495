//! The synth stage: a FakeAVCeleb-shaped tree of real MP4 files that decode,
//! deterministic from the seed, whose RVRA mouths follow the speech and whose
//! FVRA mouths do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pipeline_media::media::decode::{decode_audio_mono, decode_frames, probe};
use pipeline_media::stages::corpus::scan;
use serde_json::json;

mod media_common;

fn run_synth(ws: &Path, params: &serde_json::Value, threads: usize) -> (PathBuf, PathBuf) {
    let (fake, vox) = (ws.join("FakeAVCeleb"), ws.join("vox2"));
    let outputs = [("fakeavceleb", fake.as_path()), ("vox2", vox.as_path())];
    let dirs = (ws.join("step"), ws.join("items"));
    media_common::run_stage(
        "synth",
        ws,
        params,
        &[],
        &outputs,
        (&dirs.0, &dirs.1),
        threads,
    )
    .unwrap();
    (fake, vox)
}

fn params() -> serde_json::Value {
    json!({"seed": 3, "identities": 6, "frame_size": 64, "min_seconds": 3.0, "max_seconds": 3.6, "vox2_utterances": 2})
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Pixels of the open mouth's interior colour, per frame.
fn mouth_opening(path: &Path) -> Vec<f64> {
    let n = probe(path).unwrap().video.unwrap().frames as usize;
    let idx: Vec<usize> = (0..n).collect();
    let frames = decode_frames(path, &idx, None).unwrap();
    let [r, g, b] = [48.0, 14.0, 22.0];
    frames
        .images
        .iter()
        .map(|img| {
            img.data
                .chunks_exact(3)
                .filter(|p| {
                    (f64::from(p[0]) - r).abs() < 30.0
                        && (f64::from(p[1]) - g).abs() < 30.0
                        && (f64::from(p[2]) - b).abs() < 30.0
                })
                .count() as f64
        })
        .collect()
}

/// RMS of the audio over each video frame's span.
fn audio_envelope(path: &Path, frames: usize, fps: f64) -> Vec<f64> {
    let audio = decode_audio_mono(path, 16_000).unwrap();
    let hop = 16_000.0 / fps;
    (0..frames)
        .map(|f| {
            let a = (f as f64 * hop) as usize;
            let b = (((f + 1) as f64 * hop) as usize).min(audio.len());
            if a >= b {
                return 0.0;
            }
            (audio[a..b]
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                / (b - a) as f64)
                .sqrt()
        })
        .collect()
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma).powi(2);
        bb += (y - mb).powi(2);
    }
    ab / (aa * bb).sqrt().max(1e-12)
}

/// The correlation of the mouth opening with the audio envelope one frame
/// later (the mouth leads the sound by 40 ms, one frame at 25 fps).
fn sync(path: &Path) -> f64 {
    let mouth = mouth_opening(path);
    let env = audio_envelope(path, mouth.len(), 25.0);
    corr(&mouth[..mouth.len() - 1], &env[1..])
}

#[test]
fn the_corpus_is_fakeavceleb_shaped_decodes_and_is_deterministic() {
    let ws = tempfile::tempdir().unwrap();
    let (fake, vox) = run_synth(ws.path(), &params(), 2);
    let videos = scan(&fake).unwrap();
    assert_eq!(videos.len(), 24);
    assert!(videos.iter().any(
        |v| v.race == "Asian (East)" && v.key.starts_with("FakeVideo-FakeAudio/Asian (East)/")
    ));
    let csv = std::fs::read_to_string(fake.join("meta_data.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "source,target1,target2,method,category,type,race,gender,path,"
    );
    assert_eq!(lines.count(), 24);
    for v in &videos {
        let p = probe(&v.path).unwrap();
        let vi = p.video.expect("a video stream");
        assert_eq!((vi.width, vi.height), (64, 64));
        assert!((vi.fps - 25.0).abs() < 1e-9, "{}: {} fps", v.key, vi.fps);
        assert!(vi.duration_sec >= 2.9, "{}: {} s", v.key, vi.duration_sec);
        assert_eq!(p.audio.expect("an audio stream").sample_rate, 16_000);
        assert!(decode_audio_mono(&v.path, 16_000).unwrap().len() > 40_000);
    }
    let refs = tree(&vox);
    assert_eq!(refs.len(), 12);
    assert!(refs
        .keys()
        .all(|k| k.starts_with("id00") && k.ends_with(".wav") && k.split('/').count() == 3));
    // The same seed gives the same bytes.
    let again = tempfile::tempdir().unwrap();
    let (fake2, vox2) = run_synth(again.path(), &params(), 2);
    assert!(tree(&fake) == tree(&fake2), "synth is not deterministic");
    assert!(refs == tree(&vox2));
}

/// The same bytes whatever the number of threads: a step gets as many as its
/// executor grants (-j locally, the cpus of a Slurm job). With the demo's
/// seed and sizes, libx264 once wrote one video differently on 1 thread than
/// on 2, when a worker thread encoded several videos in turn.
#[test]
fn the_corpus_does_not_depend_on_the_thread_count() {
    let mut p: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("config/demo/synth.json"),
        )
        .unwrap(),
    )
    .unwrap();
    p["identities"] = 4.into();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let (a, _) = run_synth(one.path(), &p, 1);
    let (b, _) = run_synth(two.path(), &p, 2);
    let (a, b) = (tree(&a), tree(&b));
    assert_eq!(a.len(), 17, "16 videos and meta_data.csv");
    let differ: Vec<&String> = a.keys().filter(|k| a.get(*k) != b.get(*k)).collect();
    assert!(
        differ.is_empty(),
        "synth on 1 thread differs from 2 threads: {differ:?}"
    );
}

#[test]
fn rvra_mouths_follow_the_speech_and_fvra_mouths_do_not() {
    let ws = tempfile::tempdir().unwrap();
    let (fake, _) = run_synth(ws.path(), &params(), 2);
    let videos = scan(&fake).unwrap();
    let mut real = Vec::new();
    let mut reenacted = Vec::new();
    for v in &videos {
        match v.category.folder() {
            "RealVideo-RealAudio" => real.push(sync(&v.path)),
            "FakeVideo-RealAudio" => reenacted.push(sync(&v.path)),
            _ => {}
        }
    }
    println!("RVRA mouth/envelope correlations: {real:.2?}");
    println!("FVRA mouth/envelope correlations: {reenacted:.2?}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&real) > 0.6 && real.iter().all(|&r| r > 0.45),
        "RVRA: {real:?}"
    );
    assert!(
        mean(&reenacted).abs() < 0.2 && reenacted.iter().all(|&r| r.abs() < 0.35),
        "FVRA: {reenacted:?}"
    );
}
