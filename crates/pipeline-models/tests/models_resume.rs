//! A training step killed with SIGKILL mid-run resumes from its last
//! per-epoch checkpoint and ends with exactly the weights (bit for bit) of an
//! uninterrupted run. Training runs in a child process: this test binary
//! re-executes itself to run the ignored `child_train` with
//! `MODELS_RESUME_CHILD` set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pipeline_models::category::Category;
use pipeline_models::checkpoint::{read_tensors, save_vars};
use pipeline_models::recipes::Stage2Params;
use pipeline_models::stage1::{AudioPretrainNet, Stage1Config};
use pipeline_models::stage_run::{parse_params, run_stage2, StagePaths};
use pipeline_models::synthetic::{write_elements, SyntheticSpec};
use serde_json::json;

const EPOCHS: usize = 6;

fn params() -> Stage2Params {
    let audio =
        json!({"d_model": 32, "proj_dim": 16, "layers": 1, "nhead": 2, "dim_feedforward": 64});
    parse_params(
        "stage2",
        &json!({
            "model": {
                "audio": audio,
                "visual_backbone": {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2},
                "a2v_nhead": 2, "a2v_layers": 1, "predictor_dim_feedforward": 64
            },
            "recipe": {"epochs": EPOCHS, "lr": 1e-3, "batch_size": 4, "seed": 11, "workers": 2,
                       "schedule": {"kind": "warmup_cosine", "warmup": 2, "final_factor": 0.02}},
            "backbone_lr_scale": 0.1
        }),
    )
    .unwrap()
}

/// The training child, launched by the test below (ignored on its own).
#[test]
#[ignore]
fn child_train() {
    let dir = PathBuf::from(
        std::env::var("MODELS_RESUME_CHILD")
            .expect("run by killed_training_resumes_to_identical_weights"),
    );
    let shared = dir.parent().unwrap();
    run_stage2(
        &params(),
        &StagePaths {
            elements: &shared.join("elements"),
            stage1: Some(&shared.join("stage1")),
            pretrained: None,
            out: &dir.join("out"),
            work: &dir.join("work"),
            threads: 1,
            verbose: true,
        },
    )
    .unwrap();
}

fn spawn(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_train",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MODELS_RESUME_CHILD", dir)
        .spawn()
        .unwrap()
}

fn epoch_done(dir: &Path, epoch: usize) -> bool {
    dir.join(format!("work/checkpoints/epoch-{epoch:04}/state.json"))
        .is_file()
}

fn assert_same(a: &Path, b: &Path) {
    let (ta, tb) = (read_tensors(a).unwrap(), read_tensors(b).unwrap());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (name, x) in &ta {
        assert!(
            x.equal(&tb[name]),
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn killed_training_resumes_to_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    write_elements(
        &tmp.path().join("elements"),
        &SyntheticSpec {
            identities: 6,
            val_identities: 2,
            test_identities: 0,
            categories: vec![
                Category::Rvra,
                Category::Rvfa,
                Category::Fvra,
                Category::Fvfa,
            ],
            clips_each: 2,
            frame_size: 32,
            clips_per_shard: 16,
            seed: 5,
        },
    )
    .unwrap();
    // A stage-1 network with seeded random weights stands in for a trained one.
    std::fs::create_dir_all(tmp.path().join("stage1")).unwrap();
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg: Stage1Config = params().model.audio;
    let _net = AudioPretrainNet::new(vs.root(), &cfg);
    save_vars(&vs, &tmp.path().join("stage1/model.safetensors")).unwrap();

    let whole = tmp.path().join("whole");
    assert!(spawn(&whole).wait().unwrap().success());

    let killed = tmp.path().join("killed");
    let mut child = spawn(&killed);
    let start = Instant::now();
    while !epoch_done(&killed, 2) {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !epoch_done(&killed, EPOCHS),
        "the child finished before the kill: the test proves nothing"
    );
    eprintln!("killed after epoch 2 of {EPOCHS}; resuming");
    assert!(spawn(&killed).wait().unwrap().success());

    let last = format!("work/checkpoints/epoch-{EPOCHS:04}");
    for file in ["model.safetensors", "optim.safetensors"] {
        assert_same(
            &whole.join(&last).join(file),
            &killed.join(&last).join(file),
        );
    }
    assert_same(
        &whole.join("out/model.safetensors"),
        &killed.join("out/model.safetensors"),
    );
}
