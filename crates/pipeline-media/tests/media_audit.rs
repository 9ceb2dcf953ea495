//! The shortcut audit on real files: a synthetic corpus, then the same corpus
//! with FakeAVCeleb's known shortcut planted (0.3 s of silence at the start of
//! every FakeVideo-RealAudio clip). The audit must find it, score it, and fail
//! the stage when told to.

use std::path::{Path, PathBuf};

use pipeline_media::media::decode::{decode_audio_mono, probe};
use pipeline_media::media::mux::mux_audio;
use serde_json::{json, Value};

mod media_common;
use media_common::run_stage;

fn audit(ws: &Path, fake: &Path, params: Value) -> anyhow::Result<Value> {
    let report = ws.join("audit");
    // Each audit starts from fresh step and item folders, as a new step would.
    let (step, items) = (ws.join("step-audit"), ws.join("items-audit"));
    let _ = std::fs::remove_dir_all(&step);
    let _ = std::fs::remove_dir_all(&items);
    run_stage(
        "shortcut_audit",
        ws,
        &params,
        &[("fakeavceleb", fake)],
        &[("report", &report)],
        (&step, &items),
        2,
    )?;
    assert!(
        report.join("audit.md").is_file(),
        "the audit writes its markdown report"
    );
    Ok(serde_json::from_slice(&std::fs::read(
        report.join("audit.json"),
    )?)?)
}

fn mp4s(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            mp4s(&p, out);
        } else if p.extension().is_some_and(|x| x == "mp4") {
            out.push(p);
        }
    }
}

/// Shift every clip's audio 0.3 s later (silence first, the end cut), as
/// FakeAVCeleb's fake clips begin.
fn plant_leading_silence(category_dir: &Path) -> usize {
    let mut files = Vec::new();
    mp4s(category_dir, &mut files);
    for f in &files {
        let rate = probe(f).unwrap().audio.unwrap().sample_rate;
        let audio = decode_audio_mono(f, rate).unwrap();
        let pad = (0.3 * f64::from(rate)) as usize;
        let mut shifted = vec![0.0f32; pad];
        shifted.extend_from_slice(&audio[..audio.len() - pad]);
        let tmp = f.with_extension("tmp.mp4");
        mux_audio(f, &shifted, rate, &tmp).unwrap();
        std::fs::rename(&tmp, f).unwrap();
    }
    files.len()
}

fn leading_silence_auc(a: &Value) -> f64 {
    a["auc_vs_real"]["FakeVideo-RealAudio"]["leading_silence_s"]
        .as_f64()
        .expect("FVRA's leading-silence AUC is defined")
}

#[test]
fn the_audit_finds_a_planted_leading_silence_and_fails_the_stage_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let fake = ws.join("FakeAVCeleb");
    let vox = ws.join("vox2");
    let synth = json!({"seed": 5, "identities": 6, "frame_size": 48, "min_seconds": 3.0, "max_seconds": 3.6, "vox2_utterances": 1});
    run_stage(
        "synth",
        ws,
        &synth,
        &[],
        &[("fakeavceleb", &fake), ("vox2", &vox)],
        (&ws.join("step-synth"), &ws.join("items-synth")),
        2,
    )
    .unwrap();

    let before = audit(ws, &fake, json!({})).unwrap();
    assert_eq!(
        before["counts"]["RealVideo-RealAudio"], 6,
        "{}",
        before["counts"]
    );
    assert_eq!(before["failed"], 0);
    let clean = leading_silence_auc(&before);

    let planted = plant_leading_silence(&fake.join("FakeVideo-RealAudio"));
    assert!(planted >= 6, "{planted} FVRA clips");
    let after = audit(ws, &fake, json!({})).unwrap();
    let shifted = leading_silence_auc(&after);
    assert!(
        shifted > 0.95,
        "planted silence scores {shifted} (clean corpus {clean})"
    );
    assert!(shifted > clean + 0.2, "planted {shifted}, clean {clean}");
    let flagged: Vec<(&str, &str)> = after["shortcuts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["category"].as_str().unwrap(),
                s["statistic"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        flagged.contains(&("FakeVideo-RealAudio", "leading_silence_s")),
        "{flagged:?}"
    );

    let err = audit(ws, &fake, json!({"fail_on_shortcut": true})).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("shortcut") && msg.contains("audit.md"),
        "{msg}"
    );
    let bad = audit(ws, &fake, json!({"flag_auc": 0.2})).unwrap_err();
    assert!(format!("{bad:#}").contains("flag_auc"), "{bad:#}");
}
