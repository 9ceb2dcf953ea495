//! `pipeline check` on a real FakeAVCeleb-shaped corpus of videos made by the
//! `ffmpeg` CLI, through the real `pipeline` binary and the
//! `pipeline-media check-corpus` it calls: a sound corpus passes (its split
//! computed with the voice clones seedvc will make, before any element
//! exists), a second check answers from the probe memo without probing
//! again, a cut video, one without audio and one `meta_data.csv` lists but
//! that is missing are named, and a validation split with one class is
//! refused naming the stage and the part.

mod media_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use media_common::{ffmpeg, pipeline_exe, require_ffmpeg};

const CATEGORIES: [&str; 4] = [
    "RealVideo-RealAudio",
    "RealVideo-FakeAudio",
    "FakeVideo-RealAudio",
    "FakeVideo-FakeAudio",
];

/// seedvc -> elements (split by split.json) -> stage 1, whose validation
/// names the voice clones seedvc makes.
const PIPELINE: &str = r#"stages:
  seedvc:
    kind: seedvc
    deps: {fakeavceleb: data/FakeAVCeleb, vox2: data/vox2}
    outs: {voiceclone: data/voiceclone}
    params: {command: ["{pipeline}", vc-standin, --source, "{source}", --target, "{target}", --output, "{output}"]}
  elements:
    kind: elements
    deps: {fakeavceleb: data/FakeAVCeleb, voiceclone: data/voiceclone}
    outs: {elements: data/elements}
    params: {seed: 7, split: {file: split.json}}
  stage1:
    kind: stage1
    deps: {elements: data/elements}
    outs: {model: models/stage1}
    params: {train_fakes: [RealVideo-FakeAudio], val_fakes: [RealVideo-FakeAudio, RealVideo-FakeAudio-VoiceClone]}
"#;

/// Writes an H.264/AAC MP4 of `seconds` with both streams (a test pattern
/// and a tone of `freq` Hz), as FakeAVCeleb's videos are.
fn av_clip(path: &Path, seconds: f64, freq: u32) {
    let video = format!("testsrc2=size=64x64:rate=25:duration={seconds}");
    let audio = format!("sine=f={freq}:sample_rate=16000:duration={seconds}");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &video,
        "-f",
        "lavfi",
        "-i",
        &audio,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ]);
}

struct Corpus {
    ws: tempfile::TempDir,
    /// A sound 1.5 s clip with both streams.
    good: PathBuf,
}

impl Corpus {
    /// Three identities (train, validation, test), each with one video of
    /// every category, listed in meta_data.csv as FakeAVCeleb lists them.
    fn new() -> Corpus {
        let ws = tempfile::tempdir().unwrap();
        let good = ws.path().join("good.mp4");
        av_clip(&good, 1.5, 440);
        let c = Corpus { ws, good };
        std::fs::write(c.path("pipeline.yaml"), PIPELINE).unwrap();
        std::fs::create_dir_all(c.path("data/vox2")).unwrap();
        let mut csv =
            String::from("source,target1,target2,method,category,type,race,gender,path,\n");
        for id in ["id00001", "id00002", "id00003"] {
            for cat in CATEGORIES {
                std::fs::create_dir_all(c.dir(cat, id)).unwrap();
                std::fs::copy(&c.good, c.video(cat, id)).unwrap();
                csv.push_str(&format!(
                    "{id},-,-,real,A,{cat},African,men,00001.mp4,FakeAVCeleb/{cat}/African/men/{id}\n"
                ));
            }
        }
        std::fs::write(c.path("data/FakeAVCeleb/meta_data.csv"), csv).unwrap();
        std::fs::write(
            c.path("split.json"),
            r#"{"train": ["id00001"], "val": ["id00002"], "test": ["id00003"]}"#,
        )
        .unwrap();
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.ws.path().join(rel)
    }

    fn dir(&self, cat: &str, id: &str) -> PathBuf {
        self.path(&format!("data/FakeAVCeleb/{cat}/African/men/{id}"))
    }

    fn video(&self, cat: &str, id: &str) -> PathBuf {
        self.dir(cat, id).join("00001.mp4")
    }

    /// `pipeline check`: exit code and output.
    fn check(&self) -> (i32, String) {
        let o = Command::new(pipeline_exe())
            .arg("-f")
            .arg(self.path("pipeline.yaml"))
            .arg("-w")
            .arg(self.ws.path())
            .arg("check")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code().unwrap_or(-1), text)
    }

    fn memo(&self) -> PathBuf {
        self.path(".pipeline/check/probe-memo.json")
    }

    /// The memo's probe count per content (BLAKE3).
    fn probes(&self) -> Vec<(String, u64)> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.memo()).unwrap()).unwrap();
        v["probes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, e)| (k.clone(), e["probes"].as_u64().unwrap()))
            .collect()
    }
}

fn fails(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("FAIL")).collect()
}

#[test]
fn a_sound_corpus_passes_and_a_second_check_answers_from_the_memo() {
    if !require_ffmpeg() {
        return;
    }
    let c = Corpus::new();
    let (code, out) = c.check();
    assert_eq!(code, 0, "{out}");
    // seedvc reads the RVRA videos, elements all of them. Every video is a
    // copy of one file, and the memo is keyed by content: its bytes are
    // probed once, for seedvc, and elements finds them in the memo.
    assert!(
        out.contains("seedvc (corpus): data/FakeAVCeleb: 3 videos open with a video and an audio stream (1 probed, 0 from the memo)"),
        "{out}"
    );
    assert!(
        out.contains("elements (corpus): data/FakeAVCeleb: 12 videos open with a video and an audio stream (0 probed, 12 from the memo)"),
        "{out}"
    );
    // The split, computed before any element exists, holds the voice clone
    // seedvc will make of id00002's RVRA video.
    assert!(
        out.contains("ok   stage1 (split): the validation split holds 1 real and 2 fake clips"),
        "{out}"
    );
    assert!(
        out.contains("ok   elements (params): every file the parameters name exists"),
        "{out}"
    );
    let first = c.probes();
    assert_eq!(first.len(), 1, "{first:?}");
    // The engine handed over the hashes its stat cache holds: the probe
    // hashed no file itself (it keeps its own hashes only for those).
    let memo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.memo()).unwrap()).unwrap();
    assert_eq!(memo["files"], serde_json::json!({}), "{memo}");
    assert!(first.iter().all(|(_, n)| *n == 1), "{first:?}");
    let modified = std::fs::metadata(c.memo()).unwrap().modified().unwrap();

    // Nothing changed: every answer comes from the memo, which is not rewritten.
    let (code, out) = c.check();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(0 probed, 3 from the memo)"), "{out}");
    assert!(out.contains("(0 probed, 12 from the memo)"), "{out}");
    assert_eq!(c.probes(), first);
    assert_eq!(
        std::fs::metadata(c.memo()).unwrap().modified().unwrap(),
        modified,
        "a check that probed nothing rewrote the memo"
    );

    // A file written again with the same bytes is not probed again; other
    // bytes are, once, and only they.
    let again = c.video("FakeVideo-FakeAudio", "id00003");
    std::fs::remove_file(&again).unwrap();
    std::fs::copy(&c.good, &again).unwrap();
    let (code, out) = c.check();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(0 probed, 12 from the memo)"), "{out}");
    let other = c.path("other.mp4");
    av_clip(&other, 1.2, 330);
    std::fs::copy(&other, &again).unwrap();
    let (code, out) = c.check();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(1 probed, 11 from the memo)"), "{out}");
    let probes = c.probes();
    assert_eq!(probes.len(), 2, "{probes:?}");
    assert!(probes.iter().all(|(_, n)| *n == 1), "{probes:?}");

    // The memo is only a cache: a damaged one is started afresh.
    std::fs::write(c.memo(), b"{not json").unwrap();
    let (code, out) = c.check();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(1 probed, 0 from the memo)"), "{out}");
    assert!(out.contains("(1 probed, 11 from the memo)"), "{out}");
}

#[test]
fn a_cut_video_one_without_audio_and_a_listed_missing_one_are_named() {
    if !require_ffmpeg() {
        return;
    }
    let c = Corpus::new();
    // The MP4 muxer writes its index at the end: the first half opens as nothing.
    let cut = c.video("FakeVideo-FakeAudio", "id00003");
    let bytes = std::fs::read(&c.good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let silent = c.video("FakeVideo-RealAudio", "id00003");
    ffmpeg(&[
        "-i",
        c.good.to_str().unwrap(),
        "-an",
        "-c:v",
        "copy",
        silent.to_str().unwrap(),
    ]);
    let listed = c.video("RealVideo-FakeAudio", "id00001");
    std::fs::remove_file(&listed).unwrap();
    let (code, out) = c.check();
    assert_eq!(code, 1, "{out}");
    let fails = fails(&out);
    let named = |path: &Path, why: &str| {
        fails.iter().any(|l| {
            l.contains("elements (corpus)")
                && l.contains(&path.display().to_string())
                && l.contains(why)
        })
    };
    assert!(named(&cut, "does not open as media"), "{out}");
    assert!(named(&silent, "has no audio stream"), "{out}");
    assert!(named(&listed, "meta_data.csv line 3 but missing"), "{out}");
    assert!(
        fails
            .iter()
            .any(|l| l.contains("3 of 12 videos cannot be used")
                && l.contains("more than its max_failed_fraction (0.05)")),
        "{out}"
    );
    // seedvc reads RVRA only: none of these is its business.
    assert!(
        !fails.iter().any(|l| l.contains("seedvc (corpus)")),
        "{out}"
    );
}

#[test]
fn a_one_class_validation_split_is_refused_before_any_element_exists() {
    if !require_ffmpeg() {
        return;
    }
    let c = Corpus::new();
    // The validation identity has no real video (and so no voice clone).
    std::fs::remove_dir_all(c.dir("RealVideo-RealAudio", "id00002")).unwrap();
    let csv = std::fs::read_to_string(c.path("data/FakeAVCeleb/meta_data.csv")).unwrap();
    let kept: Vec<&str> = csv
        .lines()
        .filter(|l| !(l.starts_with("id00002") && l.contains("RealVideo-RealAudio")))
        .collect();
    std::fs::write(
        c.path("data/FakeAVCeleb/meta_data.csv"),
        kept.join("\n") + "\n",
    )
    .unwrap();
    let (code, out) = c.check();
    assert_eq!(code, 1, "{out}");
    let fails = fails(&out);
    assert!(
        fails.iter().any(|l| l.contains("stage1 (split)")
            && l.contains("the validation split holds only fake clips (0 real of 1")
            && l.contains("AUC is undefined")
            && l.contains("change the split (split.*")),
        "{out}"
    );
    assert!(
        fails.iter().any(|l| l.contains("stage1 (split)")
            && l.contains("'val_fakes' names RealVideo-FakeAudio-VoiceClone")),
        "{out}"
    );
    // A split file that misses an identity is the elements stage's own error.
    std::fs::write(
        c.path("split.json"),
        r#"{"train": ["id00001"], "val": ["id00002"]}"#,
    )
    .unwrap();
    let (code, out) = c.check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("identity id00003 of the corpus is in none of train, val and test"),
        "{out}"
    );
}
