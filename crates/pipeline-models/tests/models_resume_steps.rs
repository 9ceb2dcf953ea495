//! Training resumes across steps: `pipeline run` and its training worker
//! killed together with SIGKILL mid-training; the next run's new step (same
//! key) continues from the killed step's last checkpoint and ends with the
//! bytes an uninterrupted run writes.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_models::category::Category;
use pipeline_models::synthetic::{write_elements, SyntheticSpec};

#[path = "../../../tests/common/mod.rs"]
mod common;
use common::Ws;

const EPOCHS: usize = 40;

fn workspace() -> Ws {
    let ws = workspace_only();
    ws.write(
        "cluster.yaml",
        "poll_min_s: 0.5\npoll_max_s: 2\nresult_wait_s: 10\nmax_gpus: 0\nmax_mem: 2G\n",
    );
    ws
}

fn workspace_only() -> Ws {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let ws = Ws::new(&format!(
        "config: cfg\nstages:\n  stage1: {{manifest: \"{}\"}}\n",
        root.join("stages/stage1.yaml").display()
    ));
    let params = serde_json::json!({
        "model": {"d_model": 32, "proj_dim": 16, "layers": 1, "nhead": 2, "dim_feedforward": 64},
        "recipe": {"epochs": EPOCHS, "lr": 1e-3, "batch_size": 4, "seed": 3, "workers": 1,
                   "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}}
    });
    ws.write("cfg/tiny/stage1.json", &params.to_string());
    write_elements(
        &ws.path("data/elements"),
        &SyntheticSpec {
            identities: 8,
            val_identities: 2,
            test_identities: 0,
            categories: vec![Category::Rvra, Category::Rvfa, Category::RvfaVc],
            clips_each: 2,
            frame_size: 32,
            clips_per_shard: 20,
            seed: 5,
        },
    )
    .unwrap();
    ws
}

/// An uninterrupted local run, whose training showed its progress: the
/// last write is the last epoch's.
fn uninterrupted() -> Ws {
    let whole = workspace();
    whole.ok(&["--profile", "tiny", "run", "--device", "cpu"]);
    let p: serde_json::Value =
        serde_json::from_str(&whole.read(".pipeline/steps/1/progress.json")).unwrap();
    let t = &p["training"];
    assert_eq!(
        (t["epoch"].as_u64(), t["epochs"].as_u64()),
        (Some(EPOCHS as u64), Some(EPOCHS as u64)),
        "{p}"
    );
    assert_eq!(t["step"], t["steps"], "{p}");
    assert!(t["val_metric"].as_f64().is_some(), "{p}");
    assert_eq!(p["done"], p["total"], "{p}");
    whole
}

fn hash(ws: &Ws, rel: &str) -> String {
    let (h, _) = pipeline_core::hash::hash_path(&ws.path(rel), None)
        .unwrap()
        .unwrap();
    h.hash.to_hex().to_string()
}

/// Waits for step 1's checkpoint of epoch 3 while `head` still runs.
fn until_epoch_3(ws: &Ws, head: &mut std::process::Child, secs: u64) {
    let ckpt = ws.path(".pipeline/steps/1/checkpoints/epoch-0003/state.json");
    let t = Instant::now();
    while !ckpt.is_file() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "no checkpoint of epoch 3"
        );
        assert!(
            head.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigkill(pid: i32) {
    // SAFETY: kill(2) with a pid this test read from the step's pid file.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn a_killed_training_continues_from_its_last_checkpoint_in_the_next_step() {
    let whole = uninterrupted();

    let ws = workspace();
    let mut head = ws
        .cmd()
        .args(["--profile", "tiny", "run", "--device", "cpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_epoch_3(&ws, &mut head, 120);
    // `status` beside the live run shows where the training is.
    let st: serde_json::Value =
        serde_json::from_str(&ws.ok(&["--profile", "tiny", "status", "--json"])).unwrap();
    let t = &st["stages"][0]["running"]["progress"]["training"];
    assert!(t["epoch"].as_u64().is_some_and(|e| e >= 3), "{st}");
    assert_eq!(t["epochs"], EPOCHS as u64, "{st}");
    let worker: i32 = ws
        .read(".pipeline/steps/1/pid")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    sigkill(head.id() as i32);
    sigkill(worker);
    head.wait().unwrap();
    // The worker is gone before the next run looks (it is not our child).
    let t = Instant::now();
    while Path::new(&format!("/proc/{worker}")).exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !ws.path("models/stage1").exists(),
        "killed before it finished"
    );

    let out = ws.ok(&["--profile", "tiny", "run", "--device", "cpu"]);
    assert!(out.contains("stage1 (step 2)"), "{out}");
    let from: serde_json::Value =
        serde_json::from_str(&ws.read(".pipeline/steps/2/resumed_from.json")).unwrap();
    assert_eq!(from["step"], 1, "{from}");
    let epoch = from["epoch"].as_u64().unwrap();
    assert!((3..EPOCHS as u64).contains(&epoch), "{from}");
    let log = Command::new(common::pipeline_exe())
        .args(["-f"])
        .arg(ws.path("pipeline.yaml"))
        .arg("-w")
        .arg(ws.root())
        .args(["--profile", "tiny", "log", "stage1"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains(&format!("resuming after epoch {epoch}")),
        "{log}"
    );
    assert_eq!(
        hash(&ws, "models/stage1"),
        hash(&whole, "models/stage1"),
        "the resumed training wrote other bytes than an uninterrupted one"
    );
}

/// The same on Slurm: the head SIGKILLed and the job cancelled after epoch
/// 3; the next run (on Slurm again) starts a new step that resumes from the
/// cancelled step's checkpoint and writes an uninterrupted run's bytes.
#[test]
fn a_cancelled_slurm_training_continues_from_its_last_checkpoint_in_the_next_step() {
    if !common::slurm_cluster() {
        return;
    }
    let whole = uninterrupted();

    let ws = workspace();
    let cluster = ws.path("cluster.yaml");
    let slurm_run = |ws: &Ws| {
        let mut c = ws.cmd();
        c.args([
            "--profile",
            "tiny",
            "run",
            "--device",
            "cpu",
            "--executor",
            "slurm",
        ])
        .arg("--cluster")
        .arg(&cluster);
        c
    };
    let mut head = slurm_run(&ws)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_epoch_3(&ws, &mut head, 300);
    sigkill(head.id() as i32);
    head.wait().unwrap();
    let job = ws
        .read(".pipeline/steps/1/starts")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_ne!(job, "-", "the step ran outside Slurm");
    assert!(Command::new("scancel")
        .arg(&job)
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "job {job} never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !ws.path("models/stage1").exists(),
        "cancelled before it finished"
    );

    let out = slurm_run(&ws).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("stage1 (step 2)"), "{text}");
    let from: serde_json::Value =
        serde_json::from_str(&ws.read(".pipeline/steps/2/resumed_from.json")).unwrap();
    assert_eq!(from["step"], 1, "{from}");
    let epoch = from["epoch"].as_u64().unwrap();
    assert!((3..EPOCHS as u64).contains(&epoch), "{from}");
    assert_eq!(
        hash(&ws, "models/stage1"),
        hash(&whole, "models/stage1"),
        "the resumed Slurm training wrote other bytes than an uninterrupted one"
    );
}
