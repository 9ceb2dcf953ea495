//! The three programs agree on the kinds: every kind the engine's table
//! sends to `pipeline-worker` or `pipeline-media` is implemented there with
//! the same code version (a version bumped in one program only would record
//! outputs of one code under the other's fingerprint), and `pipeline` itself
//! links neither libtorch nor FFmpeg.

use std::collections::BTreeMap;
use std::process::Command;

#[path = "../../../tests/common/mod.rs"]
mod common;

fn kinds(exe: &std::path::Path) -> Vec<serde_json::Value> {
    let o = Command::new(exe).arg("kinds").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `pipeline-media`, built beside `pipeline` (`cargo test --workspace`).
fn media_exe() -> std::path::PathBuf {
    let exe = common::pipeline_exe().with_file_name("pipeline-media");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo test --workspace`",
        exe.display()
    );
    exe
}

fn table(rows: &[serde_json::Value], home: Option<&str>) -> BTreeMap<String, u64> {
    rows.iter()
        .filter(|k| home.is_none_or(|h| k["home"] == h))
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_string(),
                k["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn each_program_implements_exactly_the_engines_kinds_for_it_at_their_versions() {
    let engine = kinds(&common::pipeline_exe());
    let worker = std::path::PathBuf::from(env!("CARGO_BIN_EXE_pipeline-worker"));
    for (home, exe, names) in [
        (
            "worker",
            worker,
            &["baseline", "stage1", "stage2", "stage2_sweep"][..],
        ),
        (
            "media",
            media_exe(),
            &[
                "elements",
                "seedvc",
                "shortcut_audit",
                "synth",
                "voxceleb_subset",
            ][..],
        ),
    ] {
        let want = table(&engine, Some(home));
        assert_eq!(
            want.keys().map(String::as_str).collect::<Vec<_>>(),
            names,
            "{engine:?}"
        );
        let have = table(&kinds(&exe), None);
        assert_eq!(
            have,
            want,
            "{}'s kinds against the engine's table",
            exe.display()
        );
    }
}

#[test]
fn only_the_worker_links_libtorch_and_only_the_media_program_ffmpeg() {
    let needed = |exe: &std::path::Path| {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(exe)
            .output()
            .expect("readelf (binutils)");
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let torch = |l: &String| l.contains("torch") || l.contains("c10");
    let ffmpeg = |l: &String| l.contains("libav") || l.contains("libsw");
    let engine = needed(&common::pipeline_exe());
    assert!(
        !engine.iter().any(|l| torch(l) || ffmpeg(l)),
        "pipeline links libtorch or FFmpeg: {engine:?}"
    );
    let worker = needed(std::path::Path::new(env!("CARGO_BIN_EXE_pipeline-worker")));
    assert!(
        worker.iter().any(|l| l.contains("libtorch")),
        "pipeline-worker does not link libtorch: {worker:?}"
    );
    assert!(!worker.iter().any(ffmpeg), "{worker:?}");
    let media = needed(&media_exe());
    assert!(
        media.iter().any(|l| l.contains("libavcodec")),
        "pipeline-media does not link FFmpeg: {media:?}"
    );
    assert!(!media.iter().any(torch), "{media:?}");
}

/// `pipeline bench models` (forwarded to the worker) times every network
/// stage's configuration: stage 1 and the baseline as well as stage 2, the
/// network told from the file's name or by `--kind`.
#[test]
fn bench_models_takes_every_network_stages_config() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let o = Command::new(common::pipeline_exe())
        .current_dir(root)
        .args([
            "bench",
            "models",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--threads",
            "2",
        ])
        .args([
            "--config",
            "config/demo/stage1.json",
            "config/demo/baseline.json",
        ])
        .arg("config/demo/stage2.json")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for (file, kind) in [
        ("stage1.json", "Stage1"),
        ("baseline.json", "Baseline"),
        ("stage2.json", "Stage2"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no line for {file}: {out}"));
        assert!(line.contains(&format!("({kind})")), "{line}");
        let ms: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|r| r.split(" ms/step").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no time in {line}"));
        assert!(ms > 0.0 && ms.is_finite(), "{line}");
    }
    // A name that says nothing about the network asks for --kind.
    let o = Command::new(common::pipeline_exe())
        .current_dir(root)
        .args(["bench", "models", "--steps", "1", "--device", "cpu"])
        .args(["--config", "config/demo/elements.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--kind stage1|stage2|baseline"), "{err}");
}
