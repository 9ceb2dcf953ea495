//! The stage-2 sweep (`stage2_sweep`): one training per grid point, memoized
//! per point, and through Slurm one array job with a task per point; and a
//! training job that Slurm requeues mid-run resumes from its last epoch.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Ws;
use pipeline_models::category::ALL;
use pipeline_models::synthetic::{write_elements, SyntheticSpec};
use serde_json::{json, Value};

/// The Slurm tests hold the test cluster's CPUs: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn stage1_params(epochs: usize) -> Value {
    json!({
        "model": {"d_model": 32, "proj_dim": 16, "layers": 1, "nhead": 2, "dim_feedforward": 64},
        "recipe": {"epochs": epochs, "lr": 1e-3, "batch_size": 4, "seed": 5, "workers": 1,
                   "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}}
    })
}

fn stage2_base() -> Value {
    json!({
        "model": {
            "audio": {"d_model": 32, "proj_dim": 16, "layers": 1, "nhead": 2, "dim_feedforward": 64},
            "visual_backbone": {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
            "a2v_nhead": 2, "a2v_layers": 1, "predictor_dim_feedforward": 64
        },
        "recipe": {"epochs": 2, "lr": 1e-3, "batch_size": 4, "seed": 7, "workers": 1,
                   "schedule": {"kind": "warmup_cosine", "warmup": 1, "final_factor": 0.1}},
        "backbone_lr_scale": 0.1
    })
}

/// A pipeline of stage 1 and a sweep over `grid`, both on one CPU.
fn pipeline_yaml(stage1_epochs: usize, grid: Value) -> String {
    let sweep = json!({"base": stage2_base(), "grid": grid});
    format!(
        "stages:\n  stage1:\n    kind: stage1\n    deps: {{elements: data/elements}}\n    outs: {{model: models/stage1}}\n    resources: {{cpus: 1, gpus: 0, time: \"00:10:00\"}}\n    params: {}\n  sweep:\n    kind: stage2_sweep\n    deps: {{elements: data/elements, stage1: models/stage1}}\n    outs: {{sweep: models/sweep}}\n    resources: {{cpus: 1, gpus: 0, time: \"00:10:00\"}}\n    params: {}\n",
        stage1_params(stage1_epochs),
        sweep
    )
}

fn workspace(stage1_epochs: usize, grid: Value) -> Ws {
    let ws = Ws::new(&pipeline_yaml(stage1_epochs, grid));
    write_elements(
        &ws.path("data/elements"),
        &SyntheticSpec {
            identities: 8,
            val_identities: 3,
            test_identities: 0,
            categories: ALL.to_vec(),
            clips_each: 1,
            frame_size: 32,
            clips_per_shard: 64,
            seed: 2,
        },
    )
    .unwrap();
    ws.write(
        "cluster.yaml",
        "poll_min_s: 0.3\npoll_max_s: 1.5\nresult_wait_s: 5\nmax_retries: 1\n",
    );
    ws
}

fn summary(ws: &Ws) -> Value {
    serde_json::from_str(&ws.read("models/sweep/summary.json")).unwrap()
}

fn file_hash(ws: &Ws, rel: &str) -> String {
    blake3::hash(&std::fs::read(ws.path(rel)).unwrap())
        .to_hex()
        .to_string()
}

fn slurm_args(ws: &Ws) -> Vec<String> {
    vec![
        "run".into(),
        "--executor".into(),
        "slurm".into(),
        "--cluster".into(),
        ws.path("cluster.yaml").to_string_lossy().into_owned(),
    ]
}

#[test]
fn a_sweep_trains_every_point_once_and_keeps_the_best() {
    let ws = workspace(2, json!({"lambda_align": [0.1, 0.5], "recipe.lr": [1e-3]}));
    let out = ws.ok(&["run", "-j", "1"]);
    assert_eq!(Ws::ran(&out), ["stage1", "sweep"], "{out}");
    let s = summary(&ws);
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{s}");
    for p in points {
        assert_eq!(p["status"], "ok", "{p}");
        let ap = p["val_ap"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ap), "{p}");
    }
    // The best is the point with the highest validation AP, and its weights
    // and configuration are in `best/`.
    let best = s["best"]["index"].as_u64().unwrap() as usize;
    let top = points
        .iter()
        .map(|p| p["val_ap"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(points[best]["val_ap"].as_f64().unwrap(), top);
    let params: Value = serde_json::from_str(&ws.read("models/sweep/best/params.json")).unwrap();
    assert_eq!(
        params["lambda_align"],
        points[best]["values"]["lambda_align"]
    );
    assert!(ws.path("models/sweep/best/model.safetensors").is_file());
    for i in 0..2 {
        assert!(ws
            .path(&format!("models/sweep/points/{i:03}/history.jsonl"))
            .is_file());
    }

    // A third value on the grid: the sweep is stale for its parameters, and
    // the rerun trains only the new point.
    ws.write(
        "pipeline.yaml",
        &pipeline_yaml(
            2,
            json!({"lambda_align": [0.1, 0.5, 1.0], "recipe.lr": [1e-3]}),
        ),
    );
    let st = ws.status();
    assert_eq!(st[1].1, "stale", "{st:?}");
    assert!(
        st[1].2.iter().any(|w| w.contains("grid.lambda_align")),
        "{st:?}"
    );
    let out = ws.ok(&["run", "-j", "1"]);
    assert_eq!(Ws::ran(&out), ["sweep"], "{out}");
    let log = ws.ok(&["log", "sweep"]);
    assert_eq!(log.matches("is done already").count(), 2, "{log}");
    assert_eq!(log.matches("training point").count(), 1, "{log}");
    let s2 = summary(&ws);
    assert_eq!(s2["points"].as_array().unwrap().len(), 3);
    for i in 0..2 {
        assert_eq!(s2["points"][i]["val_ap"], s["points"][i]["val_ap"]);
    }
}

#[test]
fn a_bad_grid_is_refused_before_anything_runs() {
    let ws = workspace(2, json!({"lambda_align": []}));
    let (code, _, err) = ws.run(&["run"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("stage 'sweep'") && err.contains("lambda_align"),
        "{err}"
    );
    assert!(!ws.path(".pipeline/steps/1").exists(), "nothing ran: {err}");
    let ws = workspace(2, json!({"recipe.epochs": ["many"]}));
    let (code, _, err) = ws.run(&["run"]);
    assert_ne!(code, 0);
    assert!(err.contains("grid point 0"), "{err}");
}

#[test]
fn the_sweep_is_one_slurm_array_and_matches_a_local_run() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let grid = json!({"lambda_align": [0.1, 0.5, 1.0]});
    let local = workspace(2, grid.clone());
    local.ok(&["run", "-j", "1"]);
    let slurm = workspace(2, grid);
    let args = slurm_args(&slurm);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = slurm.ok(&args);
    assert!(
        out.contains("sweep: every shard finished; gathering here"),
        "{out}"
    );
    let v = slurm.status_json();
    let step = &v["stages"][1]["last_step"];
    assert_eq!(step["executor"], "slurm", "{step}");
    let id = step["step"].as_i64().unwrap();
    let job = step["slurm_job_id"].as_str().unwrap().to_string();
    // One array job: a task (and a result) per grid point, all in the job the
    // step records.
    for i in 0..3 {
        let res = slurm.read(&format!(".pipeline/steps/{id}/result.shard-{i}.json"));
        assert!(res.contains("\"succeeded\": true"), "{res}");
    }
    assert!(!slurm
        .path(&format!(".pipeline/steps/{id}/result.shard-3.json"))
        .exists());
    let o = Command::new("scontrol")
        .args(["show", "job", &job])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    if o.status.success() && !text.trim().is_empty() {
        assert!(text.contains(&format!("ArrayJobId={job}")), "{text}");
    }
    // The gathering on the head trained nothing itself.
    let log = slurm.read(&format!(".pipeline/steps/{id}/log"));
    assert_eq!(log.matches("training point").count(), 0, "{log}");
    assert_eq!(log.matches("is done already").count(), 3, "{log}");
    // CPU training is deterministic: the same points, the same metrics and
    // the same best weights as the local run.
    let (a, b) = (summary(&local), summary(&slurm));
    for i in 0..3 {
        assert_eq!(
            a["points"][i]["val_ap"], b["points"][i]["val_ap"],
            "point {i}"
        );
        assert_eq!(a["points"][i]["values"], b["points"][i]["values"]);
    }
    assert_eq!(
        file_hash(&local, "models/sweep/best/model.safetensors"),
        file_hash(&slurm, "models/sweep/best/model.safetensors")
    );
}

#[test]
fn a_requeued_training_job_resumes_from_its_last_epoch() {
    if !common::slurm_cluster() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const EPOCHS: usize = 12;
    let grid = json!({"lambda_align": [0.5]});
    let local = workspace(EPOCHS, grid.clone());
    local.ok(&["run", "--until", "stage1", "-j", "1"]);
    let slurm = workspace(EPOCHS, grid);
    let mut head = slurm
        .cmd()
        .args(slurm_args(&slurm))
        .args(["--until", "stage1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Requeue the job (as a preemption with requeue does) once it has
    // written its second epoch checkpoint.
    let ckpt = slurm.path(".pipeline/steps/1/checkpoints/epoch-0002");
    let t = Instant::now();
    while !ckpt.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "stage 1 never reached its second epoch on Slurm"
        );
        if let Some(st) = head.try_wait().unwrap() {
            panic!("the run ended ({st}) before the second epoch's checkpoint appeared");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = slurm.status_json();
    let job = v["stages"][0]["last_step"]["slurm_job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = Command::new("scontrol")
        .args(["requeue", &job])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(head.wait().unwrap().success());
    let log = slurm.read(".pipeline/steps/1/log");
    assert!(log.contains("resuming after epoch"), "{log}");
    let v = slurm.status_json();
    assert_eq!(v["stages"][0]["last_step"]["status"], "succeeded");
    assert_eq!(v["stages"][0]["last_step"]["slurm_job_id"], job.as_str());
    // Bit for bit the weights of the uninterrupted local run.
    assert_eq!(
        file_hash(&local, "models/stage1/model.safetensors"),
        file_hash(&slurm, "models/stage1/model.safetensors")
    );
}
