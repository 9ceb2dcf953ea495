//! The seedvc stage with small scripts standing in for Seed-VC (one that
//! writes Seed-VC's output names with the real `ffmpeg` CLI, one that fails,
//! one that writes nothing, ones whose output fails a check, one that
//! cannot find its models offline), and the built-in stand-in converter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pipeline_media::media::decode::{decode_audio_mono, decode_frames, probe};
use pipeline_media::stages::corpus::scan;
use pipeline_media::stages::seedvc::extract_source_wav;
use pipeline_media::stages::vc_standin::{run as vc_standin, VcStandinArgs};
use serde_json::{json, Value};

mod media_common;

struct Ws {
    dir: tempfile::TempDir,
    fake: PathBuf,
    vox: PathBuf,
}

fn corpus() -> Ws {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("FakeAVCeleb");
    let vox = dir.path().join("vox2");
    let params = json!({"seed": 5, "identities": 3, "frame_size": 48, "min_seconds": 3.0, "max_seconds": 3.2, "vox2_utterances": 2});
    let (step, items) = (
        dir.path().join("synth-step"),
        dir.path().join("synth-items"),
    );
    media_common::run_stage(
        "synth",
        dir.path(),
        &params,
        &[],
        &[("fakeavceleb", &fake), ("vox2", &vox)],
        (&step, &items),
        2,
    )
    .unwrap();
    Ws { dir, fake, vox }
}

fn script(ws: &Ws, name: &str, body: &str) -> PathBuf {
    let p = ws.dir.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Parses Seed-VC's `--source S --target R --output D` into $S $R $D.
const PARSE: &str = r#"while [ $# -gt 0 ]; do case "$1" in --source) S="$2"; shift;; --target) R="$2"; shift;; --output) D="$2"; shift;; esac; shift; done
s=$(basename "$S"); s=${s%%.*}; r=$(basename "$R"); r=${r%%.*}"#;

/// Writes the source as Seed-VC v2 would name its conversion, with `ffmpeg`
/// options `$1` (Seed-VC's 22.05 kHz unless they say otherwise).
fn v2_output(opts: &str) -> String {
    format!(
        "{PARSE}\nffmpeg -hide_banner -loglevel error -y -i \"$S\" {opts} \"$D/vc_v2_${{s}}_${{r}}_1.0_25_0.7.wav\""
    )
}

fn run_seedvc(ws: &Ws, command: Vec<String>, tag: &str) -> (anyhow::Result<()>, PathBuf, PathBuf) {
    run_seedvc_with_items(ws, command, tag, tag)
}

/// Runs the stage with `params`; returns its result, output and step folder.
fn run_seedvc_params(ws: &Ws, params: &Value, tag: &str) -> (anyhow::Result<()>, PathBuf, PathBuf) {
    let out = ws.dir.path().join(format!("voiceclone-{tag}"));
    let step = ws.dir.path().join(format!("step-{tag}"));
    let items = ws.dir.path().join(format!("items-{tag}"));
    let inputs = [
        ("fakeavceleb", ws.fake.as_path()),
        ("vox2", ws.vox.as_path()),
    ];
    let r = media_common::run_stage(
        "seedvc",
        ws.dir.path(),
        params,
        &inputs,
        &[("voiceclone", &out)],
        (&step, &items),
        2,
    );
    (r, out, step)
}

/// As [`run_seedvc`], with the conversions' memo folder named by `items_tag`.
fn run_seedvc_with_items(
    ws: &Ws,
    command: Vec<String>,
    tag: &str,
    items_tag: &str,
) -> (anyhow::Result<()>, PathBuf, PathBuf) {
    let out = ws.dir.path().join(format!("voiceclone-{tag}"));
    let step = ws.dir.path().join(format!("step-{tag}"));
    let items = ws.dir.path().join(format!("items-{items_tag}"));
    let inputs = [
        ("fakeavceleb", ws.fake.as_path()),
        ("vox2", ws.vox.as_path()),
    ];
    let params = json!({"command": command, "timeout_seconds": 60});
    let r = media_common::run_stage(
        "seedvc",
        ws.dir.path(),
        &params,
        &inputs,
        &[("voiceclone", &out)],
        (&step, &items),
        2,
    );
    (r, out, step)
}

fn log_lines(step: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(step.join(file))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn argv(script: &Path) -> Vec<String> {
    vec![
        script.to_string_lossy().into_owned(),
        "--source".into(),
        "{source}".into(),
        "--target".into(),
        "{target}".into(),
        "--output".into(),
        "{output}".into(),
        "--diffusion-steps".into(),
        "25".into(),
    ]
}

#[test]
fn a_seedvc_v2_script_gives_both_trees_muxed_on_the_original_video() {
    let ws = corpus();
    // A VoxCeleb2 candidate byte-identical to one source's audio must never be chosen.
    let rvra = scan(&ws.fake)
        .unwrap()
        .into_iter()
        .filter(|v| v.category.folder() == "RealVideo-RealAudio")
        .collect::<Vec<_>>();
    let dupe_dir = ws.vox.join(&rvra[0].identity).join("dupe");
    let dupe = extract_source_wav(&rvra[0].path, &dupe_dir).unwrap();
    let s = script(&ws, "seedvc-v2.sh", &v2_output("-ar 22050"));
    let (r, out, step) = run_seedvc(&ws, argv(&s), "v2");
    r.unwrap();
    let made = scan(&out).unwrap();
    assert_eq!(made.len(), 6);
    assert_eq!(
        made.iter()
            .filter(|v| v.category.folder() == "RealVideo-FakeAudio-SelfVoiceClone")
            .count(),
        3
    );
    assert_eq!(
        made.iter()
            .filter(|v| v.category.folder() == "RealVideo-FakeAudio-VoiceClone")
            .count(),
        3
    );
    for v in &made {
        let src = rvra
            .iter()
            .find(|s| s.identity == v.identity && s.name == v.name)
            .unwrap();
        let p = probe(&v.path).unwrap();
        assert!(p.audio.is_some() && p.video.is_some(), "{}", v.key);
        // The video stream is copied: the same pictures.
        let idx = [0usize, 10, 40];
        let a = decode_frames(&v.path, &idx, None).unwrap();
        let b = decode_frames(&src.path, &idx, None).unwrap();
        assert_eq!(a.images, b.images, "{}", v.key);
        assert!(decode_audio_mono(&v.path, 16_000).unwrap().len() > 40_000);
    }
    let plan = log_lines(&step, "plan.jsonl");
    assert_eq!(plan.len(), 6);
    for row in plan.iter().filter(|r| {
        r["item"]
            .as_str()
            .unwrap()
            .starts_with("RealVideo-FakeAudio-VoiceClone/")
    }) {
        let item = row["item"].as_str().unwrap();
        let reference = row["reference"].as_str().unwrap();
        let id = item.split('/').nth(3).unwrap();
        assert!(
            reference.starts_with(&format!("{id}/")),
            "{item} took {reference}"
        );
        assert!(
            !reference.contains("dupe"),
            "{item} took the byte-identical {}",
            dupe.display()
        );
    }
    assert!(log_lines(&step, "items.jsonl")
        .iter()
        .all(|l| l["status"] == "ok"));
}

#[test]
fn seedvc_v1_names_are_found_too_and_the_hugging_face_cache_is_passed() {
    let ws = corpus();
    // The converter sees the caller's Hugging Face cache variables.
    let hf = ws.dir.path().join("hf");
    std::env::set_var("HF_HOME", &hf);
    let s = script(
        &ws,
        "seedvc-v1.sh",
        &format!(
            "[ \"$HF_HOME\" = \"{}\" ] || exit 9\n{PARSE}\nffmpeg -loglevel error -i \"$S\" -ar 22050 \"$D/vc_${{s}}_${{r}}_1.0_30_0.7.wav\"",
            hf.display()
        ),
    );
    let (r, out, _) = run_seedvc(&ws, argv(&s), "v1");
    r.unwrap();
    assert_eq!(scan(&out).unwrap().len(), 6);
}

/// A rerun checks every source again (a source cut since fails its items)
/// but reuses the conversions of sound ones: the converter is not called.
#[test]
fn a_rerun_checks_the_sources_again_and_reuses_their_conversions() {
    let ws = corpus();
    let calls = ws.dir.path().join("calls");
    let s = script(
        &ws,
        "counting.sh",
        &format!(
            "echo \"$*\" >> '{}'\n{}",
            calls.display(),
            v2_output("-ar 22050")
        ),
    );
    let count = || std::fs::read_to_string(&calls).map_or(0, |t| t.lines().count());
    let (r, _, _) = run_seedvc_with_items(&ws, argv(&s), "first", "memo");
    r.unwrap();
    assert_eq!(count(), 6);
    let (r, again, _) = run_seedvc_with_items(&ws, argv(&s), "second", "memo");
    r.unwrap();
    assert_eq!(count(), 6, "conversions were redone");
    assert_eq!(scan(&again).unwrap().len(), 6);
    // One source cut short since: its two items fail, the rest are reused.
    let rvra = scan(&ws.fake)
        .unwrap()
        .into_iter()
        .find(|v| v.category.folder() == "RealVideo-RealAudio")
        .unwrap();
    let mut bytes = std::fs::read(&rvra.path).unwrap();
    bytes.truncate(bytes.len() * 6 / 10);
    std::fs::write(&rvra.path, bytes).unwrap();
    let (_, _, step) = run_seedvc_with_items(&ws, argv(&s), "third", "memo");
    assert_eq!(count(), 6, "conversions were redone");
    let log = log_lines(&step, "items.jsonl");
    let failed: Vec<&str> = log
        .iter()
        .filter(|l| l["status"] == "failed")
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 2, "{log:?}");
    assert!(failed.iter().all(|r| r.contains("truncated")), "{failed:?}");
    assert_eq!(log.iter().filter(|l| l["status"] == "ok").count(), 4);
}

#[test]
fn a_failing_converter_fails_its_items_and_nothing_is_labelled_fake() {
    let ws = corpus();
    let s = script(&ws, "fails.sh", "echo 'CUDA out of memory' >&2\nexit 3");
    let (r, out, step) = run_seedvc(&ws, argv(&s), "fail");
    let err = format!("{:#}", r.unwrap_err());
    assert!(err.contains("6 of 6 items failed"), "{err}");
    assert!(!out.exists() || scan(&out).unwrap().is_empty());
    let log = log_lines(&step, "items.jsonl");
    assert_eq!(log.len(), 6);
    for l in &log {
        let reason = l["reason"].as_str().unwrap();
        assert!(
            l["status"] == "failed"
                && reason.contains("exited")
                && reason.contains("CUDA out of memory"),
            "{reason}"
        );
    }
}

#[test]
fn a_converter_that_writes_nothing_fails_its_items() {
    let ws = corpus();
    let s = script(&ws, "silent.sh", "exit 0");
    let (r, _, step) = run_seedvc(&ws, argv(&s), "silent");
    assert!(r.is_err());
    for l in log_lines(&step, "items.jsonl") {
        assert!(
            l["reason"].as_str().unwrap().contains("wrote no output"),
            "{l}"
        );
    }
}

fn envelope(x: &[f32], hop: usize) -> Vec<f64> {
    x.chunks(hop)
        .map(|c| (c.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
        .collect()
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let ab: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let aa: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let bb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    ab / (aa * bb).sqrt()
}

#[test]
fn the_stand_in_keeps_the_timing_changes_the_waveform_and_names_like_seedvc() {
    let ws = corpus();
    let v = scan(&ws.fake)
        .unwrap()
        .into_iter()
        .find(|v| v.category.folder() == "RealVideo-RealAudio")
        .unwrap();
    let src = extract_source_wav(&v.path, &ws.dir.path().join("in")).unwrap();
    let yt = std::fs::read_dir(ws.vox.join(&v.identity))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let reference = std::fs::read_dir(yt)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ref_stem = reference
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = ws.dir.path().join("out");
    vc_standin(VcStandinArgs {
        source: src.clone(),
        target: reference.clone(),
        output: out.clone(),
        diffusion_steps: 25,
        length_adjust: 1.0,
        intelligibility_cfg_rate: 0.7,
        similarity_cfg_rate: 0.7,
        top_p: 0.9,
        temperature: 1.0,
        repetition_penalty: 1.0,
        convert_style: "false".into(),
        anonymization_only: "false".into(),
    })
    .unwrap();
    let name = format!(
        "vc_v2_{}_{ref_stem}_1.0_25_0.7.wav",
        v.name.split('.').next().unwrap()
    );
    let wav = out.join(&name);
    assert!(wav.is_file(), "expected {name}");
    assert_eq!(probe(&wav).unwrap().audio.unwrap().sample_rate, 22_050);
    let a = decode_audio_mono(&src, 16_000).unwrap();
    let b = decode_audio_mono(&wav, 16_000).unwrap();
    let env = corr(&envelope(&a, 160), &envelope(&b, 160));
    let n = a.len().min(b.len());
    let wave = corr(
        &a[..n].iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
        &b[..n].iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
    );
    println!("stand-in: envelope correlation {env:.3}, waveform correlation {wave:.3}");
    assert!(env > 0.9, "timing not kept: {env}");
    assert!(wave.abs() < 0.5, "waveform barely changed: {wave}");
}

/// The failed items' reasons, after checking that every item failed and
/// that nothing was muxed or labelled fake.
fn all_failed(r: anyhow::Result<()>, out: &Path, step: &Path, tag: &str) -> Vec<String> {
    let err = format!("{:#}", r.unwrap_err());
    assert!(err.contains("6 of 6 items failed"), "{tag}: {err}");
    assert!(!out.exists() || scan(out).unwrap().is_empty(), "{tag}");
    let log = log_lines(step, "items.jsonl");
    assert_eq!(log.len(), 6, "{tag}");
    assert!(
        log.iter().all(|l| l["status"] == "failed"),
        "{tag}: {log:?}"
    );
    log.iter()
        .map(|l| l["reason"].as_str().unwrap().to_string())
        .collect()
}

fn no_memo(ws: &Ws, tag: &str) {
    let items = ws.dir.path().join(format!("items-{tag}"));
    let memos = std::fs::read_dir(&items).map_or(0, |d| d.count());
    assert_eq!(memos, 0, "{tag}: a failed conversion was kept");
}

#[test]
fn each_converted_file_is_checked_before_it_is_muxed() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let ws = corpus();
    // The synthetic sources last 3.0 to 3.2 s.
    let cases = [
        (
            "silent",
            "-af volume=0 -ar 22050",
            "is silent: its RMS level is -inf dBFS, below min_rms_dbfs (-50)",
        ),
        (
            "short",
            "-t 1.8 -ar 22050",
            "lasts 1.800 s and its source 3.",
        ),
        (
            "16k",
            "-ar 16000",
            "is at 16000 Hz, not the expected 22050 Hz (expect_sample_rate)",
        ),
    ];
    for (tag, opts, reason) in cases {
        let s = script(&ws, &format!("{tag}.sh"), &v2_output(opts));
        let (r, out, step) = run_seedvc_params(&ws, &json!({"command": argv(&s)}), tag);
        for got in all_failed(r, &out, &step, tag) {
            assert!(
                got.starts_with("the converted file vc_v2_") && got.contains(reason),
                "{tag}: {got}"
            );
        }
        no_memo(&ws, tag);
    }
    // A converter that keeps the 16 kHz of its source passes when the
    // profile expects that rate.
    let s = script(&ws, "good-16k.sh", &v2_output("-ar 16000"));
    let params = json!({"command": argv(&s), "expect_sample_rate": 16000});
    let (r, out, _) = run_seedvc_params(&ws, &params, "good-16k");
    r.unwrap();
    assert_eq!(scan(&out).unwrap().len(), 6);
}

/// Names the models of Seed-VC v2 in a hub cache folder, as a download
/// leaves them.
fn cache_models(cache: &Path, repos: &[&str]) {
    for repo in repos {
        let snap = cache
            .join(format!("models--{}", repo.replace('/', "--")))
            .join("snapshots/0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
    }
}

#[test]
fn an_offline_run_without_its_models_stops_before_converting_anything() {
    if !media_common::require_ffmpeg() {
        return;
    }
    let ws = corpus();
    let checkout = ws.dir.path().join("seed-vc");
    std::fs::create_dir_all(&checkout).unwrap();
    let cache = ws.dir.path().join("hf-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let marker = ws.dir.path().join("converter-ran");
    let s = script(
        &ws,
        "offline.sh",
        &format!("touch '{}'\n{}", marker.display(), v2_output("-ar 22050")),
    );
    let params = json!({
        "seed_vc": "v2",
        "command": argv(&s),
        "cwd": "seed-vc",
        "env": {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": cache},
    });
    let (r, out, step) = run_seedvc_params(&ws, &params, "offline");
    let err = format!("{:#}", r.unwrap_err());
    for want in [
        "HF_HUB_OFFLINE=1, so Seed-VC v2 cannot download its models",
        "Plachta/Seed-VC, funasr/campplus, nvidia/bigvgan_v2_22khz_80band_256x, openai/whisper-small, Plachta/ASTRAL-quantization, facebook/hubert-large-ll60k",
        &format!("{} (Seed-VC's checkpoints/)", checkout.join("checkpoints").display()),
        &format!("{} (the HF cache", cache.display()),
        &format!(
            "huggingface-cli download Plachta/Seed-VC --cache-dir {}",
            checkout.join("checkpoints").display()
        ),
        &format!(
            "huggingface-cli download openai/whisper-small --cache-dir {}",
            cache.display()
        ),
        "required_models",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    assert!(!marker.exists(), "the converter ran");
    assert!(!step.join("items.jsonl").exists() && !out.exists());

    // One missing model is named alone.
    cache_models(
        &checkout.join("checkpoints"),
        &[
            "Plachta/Seed-VC",
            "Plachta/ASTRAL-quantization",
            "funasr/campplus",
        ],
    );
    cache_models(
        &cache,
        &[
            "nvidia/bigvgan_v2_22khz_80band_256x",
            "openai/whisper-small",
        ],
    );
    let (r, _, _) = run_seedvc_params(&ws, &params, "offline-one");
    let err = format!("{:#}", r.unwrap_err());
    assert!(
        err.contains("these are not on disk: facebook/hubert-large-ll60k."),
        "{err}"
    );
    assert!(!marker.exists(), "the converter ran");

    // With every model in place, the run converts.
    cache_models(&cache, &["facebook/hubert-large-ll60k"]);
    let (r, out, _) = run_seedvc_params(&ws, &params, "offline-ready");
    r.unwrap();
    assert!(marker.exists());
    assert_eq!(scan(&out).unwrap().len(), 6);
}

#[test]
fn the_hubs_offline_error_reads_as_missing_models() {
    let ws = corpus();
    let s = script(
        &ws,
        "no-model.sh",
        "echo 'Traceback (most recent call last):' >&2\n\
         echo 'huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder for the specified revision on the local disk and outgoing traffic has been disabled.' >&2\n\
         echo '  raised while loading' >&2\nexit 1",
    );
    let (r, out, step) = run_seedvc_params(&ws, &json!({"command": argv(&s)}), "no-model");
    for got in all_failed(r, &out, &step, "no-model") {
        assert!(
            got.starts_with("the converter's models are missing")
                && got.contains("LocalEntryNotFoundError")
                && !got.contains("Traceback"),
            "{got}"
        );
    }
}

#[test]
fn a_compile_flag_is_refused_when_the_parameters_are_checked() {
    let argv = |flag: &str| json!({"command": ["python", "inference_v2.py", "--source", "{source}", flag, "False"]});
    for flag in ["--compile", "--compile=False"] {
        let e = format!(
            "{:#}",
            pipeline_core::stages::check_params("seedvc", &argv(flag)).unwrap_err()
        );
        assert!(
            e.contains("Python bool from a string") && e.contains("remove the flag"),
            "{e}"
        );
    }
    pipeline_core::stages::check_params("seedvc", &json!({"seed_vc": "v1"})).unwrap();
}
