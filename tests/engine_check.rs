//! `pipeline check` and the check `run` makes before it submits to Slurm, on
//! real element sets (a manifest and safetensors shards written by the
//! format's own writer) and the real `pipeline` binary: a validation split of
//! one class, a missing shard, a missing input and a missing absolute path
//! are refused, in seconds and before any `sbatch`; a sound set passes.
//! (The corpus probe and the computed split need FFmpeg: the media crate's
//! `media_check` tests them.)

mod common;

use std::time::Instant;

use common::Ws;
use pipeline::elementset::{shard_name, write_manifest, ClipRecord, ShardWriter, Split};
use pipeline::stages::category::Category;

/// Frames of the test set: 8x8, the smallest the format takes.
const SIDE: usize = 8;

/// Writes an element set at `data/elements`: per (identity, split), one
/// clip of each category given, in one shard.
fn element_set(ws: &Ws, clips: &[(&str, Split, &[Category])]) {
    let dir = ws.path("data/elements");
    std::fs::create_dir_all(&dir).unwrap();
    let mut shard = ShardWriter::new(SIDE);
    let mut records = Vec::new();
    let mel = vec![0f32; pipeline::elementset::MEL_BINS * pipeline::elementset::MEL_FRAMES];
    let frames = vec![0u8; pipeline::elementset::frames_bytes(SIDE)];
    for (identity, split, categories) in clips {
        for &category in *categories {
            records.push(ClipRecord {
                audio_fake: category.audio_fake(),
                category,
                frame_times: None,
                gender: "men".into(),
                identity: identity.to_string(),
                index: shard.len() as u64,
                key: format!("{category}/African/men/{identity}/00001.mp4"),
                race: "African".into(),
                shard: shard_name(0),
                source_blake3: "0".repeat(64),
                split: *split,
                start_frame: 0,
                video_fake: category.y_video(),
                window_start_sec: 0.0,
            });
            shard.push(&mel, &frames).unwrap();
        }
    }
    shard.write(&dir.join(shard_name(0)), None).unwrap();
    write_manifest(&dir, &records).unwrap();
}

const ALL4: &[Category] = &[
    Category::Rvra,
    Category::Rvfa,
    Category::Fvra,
    Category::Fvfa,
];

/// A stage-1 and a baseline stage training on a set no stage makes.
fn ws() -> Ws {
    Ws::new(
        "stages:\n  stage1:\n    kind: stage1\n    deps: {elements: data/elements}\n    \
         outs: {model: models/stage1}\n    params: {val_fakes: [RealVideo-FakeAudio], \
         train_fakes: [RealVideo-FakeAudio]}\n    resources: {cpus: 1, mem: 1G, gpus: 0}\n  \
         baseline:\n    kind: baseline\n    deps: {elements: data/elements}\n    \
         outs: {model: models/baseline}\n    params: {}\n    resources: {cpus: 1, mem: 1G, gpus: 0}\n",
    )
}

/// Runs `check` (its lines and exit code), saying how long it took.
fn check(ws: &Ws, args: &[&str]) -> (i32, String) {
    let t = Instant::now();
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let (code, out, err) = ws.run(&all);
    eprintln!("pipeline check took {:.2} s", t.elapsed().as_secs_f64());
    (code, format!("{out}{err}"))
}

fn fail_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("FAIL")).collect()
}

#[test]
fn a_sound_element_set_passes() {
    let ws = ws();
    element_set(
        &ws,
        &[
            ("id00001", Split::Train, ALL4),
            ("id00002", Split::Val, ALL4),
            ("id00003", Split::Test, ALL4),
        ],
    );
    let (code, out) = check(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(fail_lines(&out).is_empty(), "{out}");
    assert!(
        out.contains("ok   stage1 (split): the validation split holds 1 real and 1 fake clips"),
        "{out}"
    );
    assert!(
        out.contains("ok   baseline (split): the validation split holds 1 real and 3 fake clips"),
        "{out}"
    );
    assert!(
        out.contains("data/elements: 12 clips in 1 shards, every shard present"),
        "{out}"
    );
    // --json says the same.
    let (code, json) = check(&ws, &["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["passed"], true);
    assert!(v["findings"].as_array().unwrap().len() >= 6, "{v}");
}

#[test]
fn a_one_class_validation_split_is_refused_naming_stage_and_part() {
    let ws = ws();
    // The validation identity has real clips only.
    element_set(
        &ws,
        &[
            ("id00001", Split::Train, ALL4),
            ("id00002", Split::Val, &[Category::Rvra]),
            ("id00003", Split::Test, ALL4),
        ],
    );
    let (code, out) = check(&ws, &[]);
    assert_eq!(code, 1, "{out}");
    let fails = fail_lines(&out);
    assert!(
        fails.iter().any(|l| l.contains("stage1 (split)")
            && l.contains("the validation split holds only real clips (0 fake of 1")
            && l.contains("AUC is undefined")),
        "{out}"
    );
    assert!(
        fails.iter().any(|l| l.contains("baseline (split)")
            && l.contains("the validation split holds only real clips (0 fake of 1)")),
        "{out}"
    );
    // Stage 1's own parameter names a category validation lacks.
    assert!(
        fails
            .iter()
            .any(|l| l.contains("'val_fakes' names RealVideo-FakeAudio")),
        "{out}"
    );
    assert!(out.contains("check failed"), "{out}");
    // --until limits the check to what that run would run.
    let (code, out) = check(&ws, &["--until", "baseline"]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("stage1"), "{out}");
}

#[test]
fn a_run_through_slurm_is_refused_before_any_sbatch() {
    let ws = ws();
    element_set(
        &ws,
        &[
            ("id00001", Split::Train, ALL4),
            ("id00002", Split::Val, &[Category::Rvfa]),
        ],
    );
    ws.write(
        "cluster.yaml",
        "poll_min_s: 0.3\npoll_max_s: 1.5\nresult_wait_s: 5\n",
    );
    let cluster = ws.path("cluster.yaml");
    let t = Instant::now();
    let (code, out, err) = ws.run(&[
        "run",
        "--executor",
        "slurm",
        "--cluster",
        cluster.to_str().unwrap(),
    ]);
    eprintln!("the refused run took {:.2} s", t.elapsed().as_secs_f64());
    let text = format!("{out}{err}");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not submitted to Slurm"), "{text}");
    assert!(
        text.contains("the validation split holds only fake clips (0 real of 1"),
        "{text}"
    );
    assert!(text.contains("run --no-check"), "{text}");
    // No Slurm command ran, no step was recorded for either stage.
    let v = ws.status_json();
    assert_eq!(v["last_run"]["slurm_calls"], 0, "{v}");
    for s in v["stages"].as_array().unwrap() {
        assert!(s["last_step"].is_null(), "a step was recorded: {s}");
    }
    assert!(
        !ws.path(".pipeline/steps/1").exists(),
        "a step folder was made"
    );
    // Where a cluster answers, it never saw a job of this workspace.
    if common::slurm_cluster() {
        let o = std::process::Command::new("squeue")
            .args(["--noheader", "--states=all", "--format=%j|%Z"])
            .output()
            .unwrap();
        let root = std::fs::canonicalize(ws.root()).unwrap();
        let listed = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            !listed.lines().any(
                |l| l
                    .rsplit('|')
                    .next()
                    .is_some_and(|d| std::fs::canonicalize(d.trim()).ok() == Some(root.clone()))
            ),
            "Slurm lists a job of this workspace: {listed}"
        );
    }
}

#[test]
fn a_missing_shard_is_named() {
    let ws = ws();
    element_set(
        &ws,
        &[
            ("id00001", Split::Train, ALL4),
            ("id00002", Split::Val, ALL4),
        ],
    );
    std::fs::remove_file(ws.path("data/elements").join(shard_name(0))).unwrap();
    let (code, out) = check(&ws, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        fail_lines(&out).iter().any(|l| l.contains("(manifest)")
            && l.contains("names 1 shard(s) that do not exist: shard-00000.safetensors")),
        "{out}"
    );
}

#[test]
fn a_missing_input_and_a_missing_absolute_path_are_named() {
    let ws = Ws::new(
        "stages:\n  prep:\n    cmd: cat raw/list.txt > list.txt\n    deps: [raw/list.txt]\n    \
         outs: [list.txt]\n  seedvc:\n    kind: seedvc\n    deps: {fakeavceleb: data/FakeAVCeleb, \
         vox2: data/vox2}\n    outs: {voiceclone: data/voiceclone}\n    params: {command: \
         [/nonexistent/seed-vc/python, inference_v2.py], cwd: external/seed-vc}\n",
    );
    std::fs::create_dir_all(ws.path("data/vox2")).unwrap();
    let (code, out) = check(&ws, &[]);
    assert_eq!(code, 1, "{out}");
    let fails = fail_lines(&out);
    assert!(
        fails.iter().any(|l| l.contains("prep (inputs)")
            && l.contains(
                "input 'raw/list.txt' (raw/list.txt) does not exist and no stage makes it"
            )),
        "{out}"
    );
    assert!(
        fails.iter().any(|l| l.contains("seedvc (inputs)")
            && l.contains("input 'fakeavceleb' (data/FakeAVCeleb) does not exist")),
        "{out}"
    );
    assert!(
        fails.iter().any(|l| l.contains("seedvc (params)")
            && l.contains("'command[0]' names the absolute path /nonexistent/seed-vc/python")),
        "{out}"
    );
    assert!(
        fails.iter().any(|l| l.contains("seedvc (params)")
            && l.contains("parameter 'cwd' names")
            && l.contains("external/seed-vc, which does not exist")),
        "{out}"
    );
    // vox2 is there: not named.
    assert!(!out.contains("'vox2'"), "{out}");
}
