//! `pipeline detect` on a tiny demo workspace (5 identities, stage 1 and
//! stage 2 at 2 epochs): a real and a fake corpus clip get the very scores
//! stage 2 recorded for them in `scores.jsonl` (the same window,
//! preprocessing and network), a corrupt file gets its own line and does not
//! stop the others; a `--checkpoint` without a model and a workspace without
//! a stage-2 model fail with a message saying what to do.
#[path = "../../../tests/common/mod.rs"]
mod common;
mod tiny_demo;

use common::Ws;
use tiny_demo::tiny_demo;

/// The stages `run --until stage2` needs, by their shipped manifests.
const STAGES: [&str; 5] = ["synth", "seedvc", "elements", "stage1", "stage2"];

/// The toy demo workspace. Its five identities all train (one per
/// stratum): scores.jsonl holds the training clips' scores only when asked.
fn demo_ws() -> Ws {
    tiny_demo(&STAGES, |stage, v| {
        if stage == "stage2" {
            v["recipe"]["report_train"] = true.into();
        }
    })
}

/// The first line of `scores.jsonl` whose category satisfies `want`.
fn scored_clip(scores: &[serde_json::Value], want: impl Fn(&str) -> bool) -> serde_json::Value {
    scores
        .iter()
        .find(|s| want(s["category"].as_str().unwrap()))
        .cloned()
        .expect("scores.jsonl scores such a clip")
}

/// The corpus file of a key (voice clones live in their own tree).
fn corpus_file(ws: &Ws, key: &str) -> String {
    for tree in ["data/FakeAVCeleb", "data/voiceclone"] {
        let p = ws.path(&format!("{tree}/{key}"));
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("no corpus file for {key}");
}

#[test]
fn detect_scores_real_and_fake_clips_as_stage2_did_and_reports_a_corrupt_file() {
    let ws = demo_ws();
    ws.ok(&["--profile", "tiny", "run", "--until", "stage2"]);
    let scores: Vec<serde_json::Value> = ws
        .read("models/stage2/scores.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let real = scored_clip(&scores, |c| c == "RealVideo-RealAudio");
    let fake = scored_clip(&scores, |c| c != "RealVideo-RealAudio");
    let corrupt = ws.path("corrupt.mp4");
    // An MP4 header followed by noise.
    let mut bytes = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&corrupt, bytes).unwrap();
    let files = [
        corpus_file(&ws, real["key"].as_str().unwrap()),
        corrupt.display().to_string(),
        corpus_file(&ws, fake["key"].as_str().unwrap()),
    ];
    let mut args = vec!["--profile", "tiny", "detect", "--json"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = ws.run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "one line per file, in order:\n{out}");
    for (line, file) in lines.iter().zip(&files) {
        assert_eq!(line["file"].as_str(), Some(file.as_str()), "{out}");
    }
    let bad = &lines[1];
    assert!(bad.get("final").is_none(), "{bad}");
    let why = bad["error"].as_str().expect("the corrupt file's error");
    assert!(why.contains("cannot open as media"), "{why}");
    for (line, recorded) in [(&lines[0], &real), (&lines[2], &fake)] {
        assert_eq!(line["key"], recorded["key"], "{line}");
        for name in ["final", "audio", "a2v"] {
            let p = line[name].as_f64().unwrap();
            assert!(
                p.is_finite() && (0.0..=1.0).contains(&p),
                "{name} {p}: {line}"
            );
            let want = recorded["scores"][name].as_f64().unwrap();
            assert!(
                (p - want).abs() < 1e-4,
                "{name}: detect {p}, stage 2 recorded {want} for {}",
                recorded["key"]
            );
        }
        let (wa, wv) = (
            line["w_audio"].as_f64().unwrap(),
            line["w_a2v"].as_f64().unwrap(),
        );
        assert!((wa + wv - 1.0).abs() < 1e-4, "weights {wa} + {wv}: {line}");
        assert!(
            (wa - recorded["weights"][0].as_f64().unwrap()).abs() < 1e-4,
            "{line}"
        );
    }
    // The text form: the same files in the same order.
    let mut args = vec!["--profile", "tiny", "detect"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = ws.run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let text: Vec<&str> = out.lines().collect();
    assert_eq!(text.len(), 3, "{out}");
    assert!(
        text[0].starts_with(&format!("{}: fake probability ", files[0])),
        "{out}"
    );
    assert!(
        text[1].starts_with(&format!("{}: cannot read: ", files[1])),
        "{out}"
    );
    assert!(text[2].contains("fusion weights audio"), "{out}");
    // Nothing readable: exit 1, the reason still printed.
    let (code, out, _) = ws.run(&["--profile", "tiny", "detect", &files[1]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot read"), "{out}");
    assert!(
        !ws.path(".pipeline/tmp").exists()
            || std::fs::read_dir(ws.path(".pipeline/tmp"))
                .unwrap()
                .next()
                .is_none(),
        "detect leaves its scratch folder behind"
    );
}

#[test]
fn detect_without_a_model_says_what_to_do() {
    let ws = demo_ws();
    let empty = ws.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let video = ws.path("some.mp4");
    std::fs::write(&video, b"not read").unwrap();
    let (code, _, err) = ws.run(&[
        "--profile",
        "tiny",
        "detect",
        "--checkpoint",
        empty.to_str().unwrap(),
        video.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{} holds no model.safetensors", empty.display()))
            && err.contains("pipeline run --until stage2"),
        "{err}"
    );
    let (code, _, err) = ws.run(&["--profile", "tiny", "detect", video.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no stage-2 model yet") && err.contains("pipeline run --until stage2"),
        "{err}"
    );
}
